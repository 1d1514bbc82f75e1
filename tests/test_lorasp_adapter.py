"""Adapters and NF4 bases: PEFT (a test-only oracle) loads what save_adapter writes onto a tiny random Hugging Face
Llama and reproduces our logits; load_adapter restores training exactly; an NF4 base against its dequantized
weight."""
import copy
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn as nn
from transformers import LlamaConfig, LlamaForCausalLM

from lorasp import (EXTRAS_FILE, LoRASPLinear, apply_lorasp, load_adapter, merge_lorasp, save_adapter,
                    saved_activation_bytes)
from quant import NF4Linear

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_llama(hidden=32):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=hidden, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(cfg).eval()


def train_steps(model, ids, steps=2):
    """B starts at 0 (so A's gradient is 0): give B values first, then take real AdamW steps."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRASPLinear):
                m.B_train.normal_(0, 0.1)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    for _ in range(steps):
        opt.zero_grad()
        model(ids).logits.logsumexp(-1).mean().backward()
        opt.step()
    return model


@pytest.mark.parametrize("mode,structure", [("mask", "element"), ("freeze", "column")])
def test_peft_loads_our_adapter_and_reproduces_logits(tmp_path, mode, structure):
    from peft import PeftModel
    base, ids = tiny_llama(), torch.randint(0, 64, (2, 9))
    ours = train_steps(apply_lorasp(copy.deepcopy(base), TARGETS, r=4, alpha=8, mode=mode, structure=structure), ids)
    save_adapter(ours, tmp_path, base_model_name_or_path="tiny-llama")
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 8 and cfg["bias"] == "none"
    assert cfg["target_modules"] == sorted(TARGETS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    assert not [str(w.message) for w in caught if "lora" in str(w.message).lower() or "key" in str(w.message).lower()]
    sd = peft.state_dict()
    for n, m in ours.named_modules():
        if isinstance(m, LoRASPLinear):   # PEFT holds exactly our effective matrices
            assert torch.equal(sd[f"base_model.model.{n}.lora_A.default.weight"], m.lora_A)
            assert torch.equal(sd[f"base_model.model.{n}.lora_B.default.weight"], m.lora_B)
    with torch.no_grad():
        torch.testing.assert_close(peft(ids).logits, ours(ids).logits)
        assert not torch.allclose(base(ids).logits, ours(ids).logits)        # the adapter does something


def peft_adapter(base, directory, save=None, **lora):
    """PEFT's own adapter for `base`, saved to directory: B (PEFT's init: 0) and any bias or magnitude randomized."""
    from peft import LoraConfig, get_peft_model
    peft = get_peft_model(copy.deepcopy(base), LoraConfig(**lora))
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n or p.requires_grad and "bias" in n or "magnitude" in n:
                p.add_(torch.randn_like(p))
    peft.save_pretrained(directory, **(save or {}))
    return peft.eval()


def test_peft_written_adapter_loads_as_plain_lora(tmp_path):
    base, ids = tiny_llama(), torch.randint(0, 64, (2, 9))
    peft = peft_adapter(base, tmp_path, r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    with pytest.raises(FileNotFoundError, match="lorasp_extras.safetensors is missing"):
        load_adapter(copy.deepcopy(base), tmp_path)                 # not asked for: no silent keep=1
    ours = load_adapter(copy.deepcopy(base), tmp_path, peft=True)
    layers = [m for m in ours.modules() if isinstance(m, LoRASPLinear)]
    assert len(layers) == 4 and all(m.keep == 1.0 for m in layers)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, peft(ids).logits)


@pytest.mark.parametrize("options", [dict(use_rslora=True),                   # scale alpha/sqrt(r), not alpha/r
                                     dict(rank_pattern={"v_proj": 2}, alpha_pattern={"layers.1.self_attn.q_proj": 3}),
                                     dict(save=dict(safe_serialization=False))])  # adapter_model.bin, a pickle
def test_peft_options_we_honour_give_peft_logits(tmp_path, options):
    from peft import PeftModel
    base, ids = tiny_llama(), torch.randint(0, 64, (2, 9))
    peft_adapter(base, tmp_path, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], **options)
    ours = load_adapter(copy.deepcopy(base), tmp_path, peft=True)
    with torch.no_grad():
        peft = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
        torch.testing.assert_close(ours(ids).logits, peft(ids).logits)


def test_peft_gpt2_adapter_fan_in_fan_out_loads_onto_our_linear(tmp_path):
    """PEFT sets fan_in_fan_out for HF's transposed Conv1D; its A and B are the usual (r, in), (out, r) all the same."""
    from peft import PeftModel
    from transformers import GPT2Config, GPT2LMHeadModel
    import model as M
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=16, bos_token_id=0,
                                    eos_token_id=0)).eval()
    hf.save_pretrained(tmp_path / "gpt2")
    peft_adapter(hf, tmp_path / "a", r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"])
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    ours = load_adapter(M.load_pretrained(tmp_path / "gpt2"), tmp_path / "a", peft=True)
    ids = torch.randint(0, 64, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), PeftModel.from_pretrained(hf, tmp_path / "a")(ids).logits)


@pytest.mark.parametrize("arch", ["Roberta", "Bert"])
def test_peft_classifier_adapter_loads_with_its_head(tmp_path, arch):
    """PEFT's task_type SEQ_CLS adds "classifier" and "score" to modules_to_save whatever the model has (RoBERTa and
    BERT: no score); PEFT passes over the name that matches nothing, and so must we, loading the head it saved."""
    import transformers
    import model as M
    torch.manual_seed(0)
    config = getattr(transformers, f"{arch}Config")(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=4, intermediate_size=48,
                                                    max_position_embeddings=24, pad_token_id=1, num_labels=3)
    hf = getattr(transformers, f"{arch}ForSequenceClassification")(config).eval()
    hf.save_pretrained(tmp_path / "base")
    peft = peft_adapter(hf, tmp_path / "a", task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"])
    assert "score" in json.loads((tmp_path / "a" / "adapter_config.json").read_text())["modules_to_save"]
    ours = load_adapter(M.load_pretrained(tmp_path / "base"), tmp_path / "a", peft=True).eval()
    ids = torch.randint(2, 64, (2, 9))
    with torch.no_grad():   # the head's bias was randomized after the save of the base: only the adapter's head fits
        torch.testing.assert_close(ours.classify(ids), peft(input_ids=ids).logits)


@pytest.mark.parametrize("saved", ["lm_head", "embed_tokens"])
def test_peft_modules_to_save_on_a_tied_embedding_gives_peft_logits(tmp_path, saved):
    """PEFT trains a copy of a modules_to_save module: with tied embeddings the other end keeps the base's weight (our
    load wrote the saved one into both: logits ~40 off)."""
    from peft import LoraConfig, PeftModel, get_peft_model
    import model as M
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)).eval()
    base.save_pretrained(tmp_path / "base")
    peft = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"],
                                                          modules_to_save=[saved]))
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if p.requires_grad:   # lora_A, lora_B and the saved module's copy of the tied weight
                p.add_(torch.randn_like(p))
    peft.save_pretrained(tmp_path / "a")
    ours = load_adapter(M.load_pretrained(tmp_path / "base"), tmp_path / "a", peft=True).eval()
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        want = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "a")(ids).logits
        torch.testing.assert_close(ours(ids), want)
    assert not torch.equal(ours.lm_head.weight, ours.model.embed_tokens.weight)


@pytest.mark.parametrize("saved", ["lm_head", "embed_tokens"])
def test_peft_ensure_weight_tying_is_refused_naming_it(tmp_path, saved):
    """ensure_weight_tying=True: PEFT ties the trained copy of a tied module to its partner and saves both (was
    refused as "tensors lorasp does not load ... ['base_model.model.lm_head.weight']", which names no cause)."""
    from peft import LoraConfig, get_peft_model
    import model as M
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)).eval()
    base.save_pretrained(tmp_path / "base")
    get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], modules_to_save=[saved],
                                    ensure_weight_tying=True)).save_pretrained(tmp_path / "a")
    with pytest.raises(ValueError, match=r"ensure_weight_tying = True: PEFT ties the trained copy .* lorasp does not"):
        load_adapter(M.load_pretrained(tmp_path / "base"), tmp_path / "a", peft=True)


@pytest.mark.parametrize("options,error", [
    (dict(bias="all"), "bias = 'all'"), (dict(bias="lora_only"), "bias = 'lora_only'"),
    (dict(use_dora=True), "use_dora = True"), (dict(lora_bias=True), "lora_bias = True"),
    (dict(layer_replication=[[0, 2], [1, 2]]), "layer_replication = "),
    (dict(alora_invocation_tokens=[3, 4]), "alora_invocation_tokens = "),
    (dict(trainable_token_indices=[1, 2]), "trainable_token_indices = "),
    (dict(init_lora_weights="pissa"), "init_lora_weights = 'pissa'"),   # PEFT's load subtracts B0 A0 from W
    (dict(init_lora_weights="olora"), "init_lora_weights = 'olora'"),
    (dict(target_modules=["q_proj", "embed_tokens"], save=dict(save_embedding_layers=False)), "lora_embedding_A"),
    (dict(save=dict(save_embedding_layers=True)), "embed_tokens.weight"),
    ])
def test_peft_options_we_do_not_honour_are_refused(tmp_path, options, error):
    base = tiny_llama()
    peft_adapter(base, tmp_path, **dict(dict(r=4, lora_alpha=8, target_modules=["q_proj"]), **options))
    ours = copy.deepcopy(base)
    with pytest.raises(ValueError, match=error):
        load_adapter(ours, tmp_path, peft=True)
    assert not any(isinstance(m, LoRASPLinear) for m in ours.modules())   # refused before any layer is wrapped


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("save", [dict(save_embedding_layers=False), {}])
def test_peft_adapter_on_the_lm_head_gives_peft_logits(tmp_path, tied, save):
    """LoRA on lm_head (tied: the embedding's weight). PEFT's default save_embedding_layers="auto" stores the head's
    base weight beside A and B, and loads it over the model's: taken when it is the model's own, else refused (was:
    refused, "tensors lorasp does not load")."""
    from peft import PeftModel
    import model as M
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)).eval()
    base.save_pretrained(tmp_path / "base")
    peft_adapter(base, tmp_path / "a", save=save, r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"])
    ours = load_adapter(M.load_pretrained(tmp_path / "base"), tmp_path / "a", peft=True).eval()
    assert isinstance(ours.lm_head, LoRASPLinear)
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), PeftModel.from_pretrained(base, tmp_path / "a")(ids).logits)
    other = M.load_pretrained(tmp_path / "base")
    with torch.no_grad():
        other.lm_head.weight.add_(0.01)                      # another base: PEFT would load the adapter's head
    if not save:
        with pytest.raises(ValueError, match=r"lm_head.base_layer.weight \(PEFT's save_embedding_layers\) is not"):
            load_adapter(other, tmp_path / "a", peft=True)


@pytest.mark.parametrize("mode,structure", [("mask", "column"), ("freeze", "element")])
def test_round_trip_restores_training_exactly(tmp_path, mode, structure):
    base, ids = tiny_llama(), torch.randint(0, 64, (2, 9))
    ours = train_steps(apply_lorasp(copy.deepcopy(base), ["q_proj", "down_proj"], r=4, mode=mode,
                                    structure=structure, seed=5), ids)
    save_adapter(ours, tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted(["adapter_config.json", "adapter_model.safetensors", EXTRAS_FILE])
    back = load_adapter(copy.deepcopy(base), tmp_path)
    a, b = ours.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [n for n, p in back.named_parameters() if p.requires_grad] == \
           [n for n, p in ours.named_parameters() if p.requires_grad]
    for m in (ours, back):   # the same next step, bit for bit
        m.zero_grad()
        opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
        m(ids).logits.square().mean().backward()
        opt.step()
    a, b = ours.state_dict(), back.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    load_adapter(back, tmp_path)   # onto already-wrapped layers: replaces them with the saved state
    assert torch.equal(back(ids).logits, load_adapter(copy.deepcopy(base), tmp_path)(ids).logits)


def test_masks_load_as_saved_where_the_seed_would_draw_others(tmp_path, monkeypatch):
    """The extras' masks are the ones that load, not a fresh draw from the saved seed: a torch whose randperm draws
    otherwise still trains the same entries on. (In freeze mode fresh masks would pass every check: A and B are the
    same dense matrices either way, only which entries train would change.)"""
    base, ids = tiny_llama(), torch.randint(0, 64, (2, 9))
    ours = train_steps(apply_lorasp(copy.deepcopy(base), ["q_proj"], r=4, mode="freeze", seed=5), ids)
    save_adapter(ours, tmp_path)
    monkeypatch.setattr(torch, "randperm", lambda n, generator=None: torch.arange(n))   # another RNG's draws
    layer = ours.model.layers[0].self_attn.q_proj
    assert not torch.equal(LoRASPLinear(layer.base, 4, seed=layer.seed, mode="freeze").mask_A, layer.mask_A)
    back = load_adapter(copy.deepcopy(base), tmp_path)
    a, b = ours.state_dict(), back.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)                       # masks, packed and frozen entries


@pytest.mark.parametrize("mode,structure,keep", [("mask", "element", 0.5), ("freeze", "column", 0.3),
                                                ("mask", "element", 1.0)])
def test_the_adapter_file_is_save_safetensors_of_the_dense_matrices_byte_for_byte(tmp_path, mode, structure, keep):
    """save_adapter writes adapter_model.safetensors a tensor at a time (adapter.write_planned): the same bytes as
    checkpoint.save_safetensors of every layer's dense A and B at once (how it was written) and modules_to_save's
    tensors. A made tensor that is not what the header planned is an error, and no file is left."""
    from adapter import PEFT, write_planned
    from checkpoint import save_safetensors
    ours = train_steps(apply_lorasp(tiny_llama(), TARGETS, r=4, alpha=8, keep=keep, mode=mode, structure=structure),
                       torch.randint(0, 64, (2, 9)))
    save_adapter(ours, tmp_path / "a", modules_to_save=["lm_head"])
    dense = {f"{PEFT}{n}.lora_{k}.weight": getattr(m, f"lora_{k}").detach() for n, m in ours.named_modules()
             if isinstance(m, LoRASPLinear) for k in "AB"}
    save_safetensors(dense | {f"{PEFT}lm_head.weight": ours.lm_head.weight}, tmp_path / "b", {"format": "pt"})
    assert (tmp_path / "a" / "adapter_model.safetensors").read_bytes() == (tmp_path / "b").read_bytes()
    like = torch.empty(4, 32, device="meta")
    with pytest.raises(RuntimeError, match=r"x: \[32, 4\] torch.float32 came, \[4, 32\] torch.float32 was planned"):
        write_planned({"x": (like, lambda: torch.zeros(32, 4))}, tmp_path / "c", {})
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


PEAK = """import sys, torch, torch.nn as nn, checkpoint as C
from lorasp import LoRASPLinear, save_adapter
model = nn.ModuleDict({f"l{i}": LoRASPLinear(nn.Linear(256, 256), r=4096, seed=i) for i in range(8)})
save_adapter(model, sys.argv[1] + "-first")                 # first-call costs (imports, arenas): 1-5 MiB, at random
C.trim_heap()
open("/proc/self/clear_refs", "w").write("5")               # VmHWM := VmRSS now
base = C.resident()
save_adapter(model, sys.argv[1])
print(C.resident("VmHWM") - base)"""


def test_saving_makes_one_dense_matrix_at_a_time(tmp_path):
    """Eight layers whose dense A (4096, 256) and B (256, 4096) are 4 MiB each, saved (a second time) in a fresh
    process: the resident peak above the start stays under 16 MiB (4 MiB, one matrix). save_adapter built every layer's
    A and B before writing any (64 MiB here; 239 MiB on llama2-13b, a run's last peak: 242 MiB there, 4.7 streamed).
    Measured on a first save it was 5-9 MiB, 17 once (torch 2.9.1), over the bar: the first call's imports."""
    run = subprocess.run([sys.executable, "-c", PEAK, str(tmp_path / "a")], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "a" / "adapter_model.safetensors").stat().st_size > 64 << 20
    assert int(run.stdout) < 16 << 20, int(run.stdout) >> 20


def test_adapter_errors_name_the_module(tmp_path):
    base = tiny_llama()
    with pytest.raises(ValueError, match="empty"):
        save_adapter(copy.deepcopy(base), tmp_path / "none")
    assert not (tmp_path / "none").exists()
    save_adapter(apply_lorasp(copy.deepcopy(base), ["v_proj"], r=4), tmp_path / "a")
    with pytest.raises(ValueError, match="model.layers.0.self_attn.v_proj"):
        load_adapter(tiny_llama(hidden=64), tmp_path / "a")
    fewer = copy.deepcopy(base)
    del fewer.model.layers[1]
    with pytest.raises(ValueError, match="model.layers.1.self_attn.v_proj"):
        load_adapter(fewer, tmp_path / "a")
    save_adapter(apply_lorasp(copy.deepcopy(base), ["v_proj"], r=4, seed=1), tmp_path / "b")
    os.replace(tmp_path / "b" / EXTRAS_FILE, tmp_path / "a" / EXTRAS_FILE)   # files of two different saves
    with pytest.raises(ValueError, match="disagree"):
        load_adapter(copy.deepcopy(base), tmp_path / "a")
    assert not [f for f in os.listdir(tmp_path / "b") if "tmp" in f]      # atomic writes leave no temporaries


def test_a_load_or_apply_that_fails_on_a_later_layer_swaps_no_module(tmp_path):
    """Every layer is built and checked before any is put in the model: an adapter whose second layer does not fit,
    and a keep too small for the second of two linears, leave the model's modules as they were (both used to leave
    the first layer wrapped: a half-adapted model for whoever caught the error)."""
    base = tiny_llama()
    save_adapter(apply_lorasp(copy.deepcopy(base), ["v_proj"], r=4), tmp_path / "a")
    other = copy.deepcopy(base)
    other.model.layers[1].self_attn.v_proj = nn.Linear(32, 8, bias=False)   # (out 8): the adapter's B is (16, 4)
    with pytest.raises(ValueError, match="model.layers.1.self_attn.v_proj"):
        load_adapter(other, tmp_path / "a")
    assert not any(isinstance(m, LoRASPLinear) for m in other.modules())
    two = nn.Sequential(nn.Linear(64, 64), nn.Linear(8, 8))
    with pytest.raises(ValueError, match=r"keep=0.01 leaves A \(4, 8\) without a trainable entry"):
        apply_lorasp(two, ["0", "1"], r=4, keep=0.01)
    assert [type(m) for m in two] == [nn.Linear, nn.Linear]


def test_a_load_that_fails_on_a_later_layer_leaves_every_weight_trainable_as_it_was(tmp_path):
    """A failed load swaps no module, and freezes none either: building the first layer's LoRASPLinear froze the
    model's own model.layers.0.self_attn.v_proj.weight, so whoever caught the error and trained the model on (fully,
    or with another adapter) trained it without that weight, silently."""
    base = tiny_llama()
    save_adapter(apply_lorasp(copy.deepcopy(base), ["v_proj"], r=4), tmp_path / "a")
    other = copy.deepcopy(base).requires_grad_(True)
    other.model.layers[1].self_attn.v_proj = nn.Linear(32, 8, bias=False)   # (out 8): the adapter's B is (16, 4)
    with pytest.raises(ValueError, match="model.layers.1.self_attn.v_proj"):
        load_adapter(other, tmp_path / "a")
    assert [n for n, p in other.named_parameters() if not p.requires_grad] == []
    two = nn.Sequential(nn.Linear(64, 64), nn.Linear(8, 8), nn.Linear(3, 3))
    with pytest.raises(ValueError, match="keep=0.01 leaves A"):  # apply_lorasp likewise, and an unmatched target
        apply_lorasp(two, ["0", "1"], r=4, keep=0.01)
    with pytest.raises(ValueError, match="no nn.Linear/NF4Linear matches"):
        apply_lorasp(two, ["q_proj"])
    assert [n for n, p in two.named_parameters() if not p.requires_grad] == []


# ----------------------------------------------------------------------------------------------------
# NF4 base

def nf4_pair(dtype=torch.float32):
    torch.manual_seed(0)
    lin = nn.Linear(64, 48).to(dtype)
    q = NF4Linear.from_linear(lin)
    W = q.weight.dequantize(dtype)                            # what the NF4 layer multiplies by
    ref = nn.Linear(64, 48).to(dtype)
    with torch.no_grad():
        ref.weight.copy_(W), ref.bias.copy_(lin.bias)
    return q, ref


@pytest.mark.parametrize("mode,structure", [("mask", "element"), ("freeze", "column")])
def test_nf4_base_equals_its_dequantized_weight(mode, structure):
    q, ref = nf4_pair()
    a, b = (LoRASPLinear(base, r=4, mode=mode, structure=structure, seed=2) for base in (q, ref))
    with torch.no_grad():
        a.B_train.normal_(), b.B_train.copy_(a.B_train)
    x = torch.randn(3, 5, 64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = a(xa), b(xb)
    torch.testing.assert_close(ya, yb)
    ya.square().sum().backward(), yb.square().sum().backward()
    for pa, pb in ((a.A_train, b.A_train), (a.B_train, b.B_train), (xa, xb)):
        torch.testing.assert_close(pa.grad, pb.grad)
    W = ref.weight + a.scale * a.lora_B @ a.lora_A
    merged = merge_lorasp(a)
    assert type(merged) is nn.Linear and merged.weight.dtype == torch.float32
    torch.testing.assert_close(merged.weight, W)
    torch.testing.assert_close(merged(x), ya.detach())


def test_nf4_base_bf16_merge_stays_bf16_and_column_saves_activations():
    q, _ = nf4_pair(torch.bfloat16)
    layer = LoRASPLinear(q, r=4, structure="column")
    merged = merge_lorasp(copy.deepcopy(layer))
    assert merged.weight.dtype == torch.bfloat16
    x = torch.randn(4, 256, 64, dtype=torch.bfloat16, requires_grad=True)
    lora, _ = saved_activation_bytes(LoRASPLinear(q, r=4, keep=1.0), x)
    column, y = saved_activation_bytes(layer, x)
    # NF4 keeps nothing input-dependent: x, h, and the bf16 casts of the fp32 A (4, 64) and B (48, 4)
    assert lora == x.nbytes + 1024 * 4 * 2 + (4 * 64 + 48 * 4) * 2
    assert column <= 0.55 * lora
    y.float().sum().backward()
    assert layer.A_train.grad.dtype == torch.float32


def test_nf4_model_adapter_round_trip(tmp_path):
    base, ids = tiny_llama(), torch.randint(0, 64, (2, 9))
    for n, m in list(base.named_modules()):
        if n.endswith(("q_proj", "v_proj")):
            base.get_submodule(n.rsplit(".", 1)[0]).__setattr__(n.rsplit(".", 1)[1], NF4Linear.from_linear(m))
    ours = train_steps(apply_lorasp(copy.deepcopy(base), ["q_proj", "v_proj"], r=4), ids)
    save_adapter(ours, tmp_path)
    back = load_adapter(copy.deepcopy(base), tmp_path)
    with torch.no_grad():
        assert torch.equal(back(ids).logits, ours(ids).logits)


def test_peft_target_is_pefts_own_rule_on_a_grid_of_configs():
    """lorasp.peft_target against peft's check_target_module_exists, name by name: target_modules as names or a regex,
    layers_to_transform (int, list) with and without layers_pattern (a name, a list), exclude_modules (names, regex)."""
    from itertools import product

    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    import lorasp
    names = [f"model.layers.{i}.{m}" for i in (0, 1, 2, 11) for m in ("self_attn.q_proj", "self_attn.v_proj",
                                                                        "mlp.down_proj")]
    names += [f"transformer.h.{i}.attn.c_attn" for i in (0, 1)] + ["lm_head", "model.layers.1.mlp"]
    targets = [["q_proj"], ["q_proj", "down_proj", "c_attn"], ["model.layers.1.self_attn.q_proj"],
               ["proj", "attn"], r".*\.(q|v)_proj", r"model\.layers\.1\..*"]   # "proj": a name's end, not after a "."
    layers = [None, 1, [0, 11], []]
    patterns = [None, "layers", ["layers", "h"], "h"]
    excludes = [None, ["v_proj"], r".*layers\.0\..*"]
    checked = 0
    for tm, lt, lp, ex in product(targets, layers, patterns, excludes):
        if lp is not None and lt in (None, []):
            continue                                       # PEFT refuses layers_pattern without layers_to_transform
        if isinstance(tm, str) and lt is not None:
            continue                                       # and layers_to_transform with a regex
        cfg = dict(target_modules=tm, layers_to_transform=lt, layers_pattern=lp, exclude_modules=ex)
        peft_cfg = LoraConfig(**{k: v for k, v in cfg.items() if v is not None})
        for name in names:
            assert lorasp.peft_target(cfg, name) == bool(check_target_module_exists(peft_cfg, name)), (cfg, name)
            checked += 1
    assert checked > 1000
