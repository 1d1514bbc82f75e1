"""A 4-bit checkpoint people download (`*-bnb-4bit`): a tiny random model in the HF layout, quantized and saved by
transformers + bitsandbytes themselves (on CPU), then loaded here. The references: bitsandbytes' own dequantize_4bit
of the stored state (the weights must be its values exactly), transformers' 4-bit model (the logits), our quantizer
on the dense file (the codes, byte for byte), and PEFT on transformers' 4-bit model (a trained adapter)."""
import json
import os
import shutil
import subprocess
import sys

import bitsandbytes.functional as BF
import pytest
import torch
import torch.nn as nn
import transformers

import checkpoint
import data
import plan
from model import GPT2Config, LlamaConfig, build_model, load_pretrained, save_pretrained
from quant import DYNAMIC_CODE, NF4Linear, quantize_nf4

from fixtures import demo_tokenizer, flags, random_params
from lorasp import load_adapter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bnb_save(dense, out, double_quant=True, shard=None, **more):
    """transformers' 4-bit NF4 model of the dense folder, save_pretrained to out (shard: its max_shard_size)."""
    config = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                             bnb_4bit_use_double_quant=double_quant, **more)
    hf = transformers.AutoModelForCausalLM.from_pretrained(dense, quantization_config=config, device_map="cpu")
    hf.save_pretrained(out, **({"max_shard_size": shard} if shard else {}))
    return hf


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """{name: folder} of tiny random models in the HF layout: a Llama, one with a tied lm_head, a GPT-2. Rows of whole
    64-blocks, as real models have: bitsandbytes 0.50's CPU dequantize_4bit misplaces the scales of a (64, 160)
    weight (its flat view dequantizes right: ours, bit for bit)."""
    d, out = tmp_path_factory.mktemp("dense"), {}
    for name, config in [("llama", LlamaConfig(vocab_size=96, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, n_ffn=192)),
                         ("tied", LlamaConfig(vocab_size=96, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, n_ffn=128,
                                              tie_embeddings=True)),
                         ("gpt2", GPT2Config(vocab_size=96, n_positions=32, n_layer=2, n_embd=64, n_head=4))]:
        save_pretrained(random_params(build_model(config), seed=1), d / name)
        out[name] = str(d / name)
    return out


@pytest.fixture(scope="module")
def bnb(dense, tmp_path_factory):
    """{(model, double_quant): (folder, transformers' 4-bit model)} saved by transformers."""
    d = tmp_path_factory.mktemp("bnb")
    return {(m, dq): (str(d / f"{m}-{dq}"), bnb_save(dense[m], d / f"{m}-{dq}", dq))
            for m, dq in [("llama", True), ("llama", False), ("tied", True), ("gpt2", True)]}


def stored_states(folder):
    """{weight name: bitsandbytes QuantState} read from the folder's files by bitsandbytes itself, with the codes."""
    sd = {}
    for f in checkpoint.hf_files(folder):
        sd.update(checkpoint.load_safetensors(f))
    names = [k[: -len(".quant_state.bitsandbytes__nf4")] for k in sd if k.endswith(".quant_state.bitsandbytes__nf4")]
    return {w: (sd[w], BF.QuantState.from_dict({k[len(w) + 1:]: v for k, v in sd.items() if k.startswith(w + ".")},
                                               device=torch.device("cpu"))) for w in names}


def dense_weights(folder):
    return {k: v for f in checkpoint.hf_files(folder) for k, v in checkpoint.load_safetensors(f).items()}


def logits(hf, ids):
    """transformers' 4-bit model's logits, dequantize then matmul in float32: on a CPU with AVX512-BF16, bitsandbytes
    otherwise repacks an eval-mode layer's weight for a bf16 kernel of its own (0.02 off its own dequantized weight)."""
    for m in hf.modules():
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = False
    with torch.no_grad():
        return hf(ids).logits


def nf4_layers(model):
    return {n + ".weight": m for n, m in model.named_modules() if isinstance(m, NF4Linear)}


@pytest.mark.parametrize("double_quant", [True, False])
def test_codes_and_values_are_the_checkpoints(dense, bnb, double_quant, capsys):
    """Every quantized linear loads as an NF4Linear whose weight dequantizes to bitsandbytes' own dequantize_4bit of
    the stored state, bit for bit; its codes are our quantizer's on the dense file, byte for byte, and so are its
    scales (double quantization: where bitsandbytes' CPU kernel did not pick the nearest 8-bit code, ours is nearer)."""
    (folder, hf), W = bnb["llama", double_quant], dense_weights(dense["llama"])
    ours, states = load_pretrained(folder, "nf4", torch.float32), stored_states(folder)
    assert "is a bitsandbytes 4-bit checkpoint: its NF4 linears load as stored, nothing is quantized" in \
        capsys.readouterr().err
    layers = nf4_layers(ours)
    assert sorted(layers) == sorted(states) and len(layers) == 14      # 7 linears a block, 2 blocks
    for name, layer in layers.items():
        codes, state = states[name]
        assert torch.equal(layer.weight.dequantize(torch.float32), BF.dequantize_4bit(codes, state))
        ref = quantize_nf4(W[name], double_quant=double_quant)
        assert torch.equal(layer.weight.codes, ref.codes)
        if not double_quant:
            assert torch.equal(layer.weight.absmax, ref.absmax)
            continue
        assert torch.equal(layer.weight.nested_absmax, ref.nested_absmax) and layer.weight.offset == ref.offset
        off = (layer.weight.absmax != ref.absmax).nonzero().flatten()
        assert len(off) <= 2                                                 # (1 of 350 scales here)
        target = (W[name].reshape(-1, 64).abs().amax(1)[off] - ref.offset) / ref.nested_absmax[0]
        assert ((target - DYNAMIC_CODE[ref.absmax[off].int()]).abs() <
                (target - DYNAMIC_CODE[layer.weight.absmax[off].int()]).abs()).all()
    ids = torch.randint(0, 96, (2, 12), generator=torch.manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), logits(hf, ids), rtol=0, atol=1e-5)


def test_logits_are_those_of_the_dequantized_weights_exactly(bnb):
    """The NF4 model computes what a dense model holding bitsandbytes' dequantized weights computes, exactly; --quant
    none loads that dense model, with a note of what it costs."""
    folder, _ = bnb["llama", True]
    ours, states = load_pretrained(folder, "nf4", torch.float32), stored_states(folder)
    ref = load_pretrained(folder, None, torch.float32)
    assert not nf4_layers(ref)
    for name, (codes, state) in states.items():
        assert torch.equal(ref.get_parameter(name), BF.dequantize_4bit(codes, state))
    ids = torch.randint(0, 96, (2, 12), generator=torch.manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ours(ids), ref(ids))


def test_shards_and_index_load_as_one_file(dense, bnb, tmp_path):
    """max_shard_size splits the NF4 keys of a weight's across shards too: loaded as from one file."""
    bnb_save(dense["llama"], tmp_path, True, shard="30KB")
    assert len(checkpoint.hf_files(str(tmp_path))) > 2 and os.path.exists(tmp_path / "model.safetensors.index.json")
    split = {n: m.weight for n, m in nf4_layers(load_pretrained(tmp_path, "nf4", torch.float32)).items()}
    whole = {n: m.weight for n, m in nf4_layers(load_pretrained(bnb["llama", True][0], "nf4", torch.float32)).items()}
    assert sorted(split) == sorted(whole)
    for n, w in whole.items():
        assert all(torch.equal(getattr(w, f), getattr(split[n], f)) for f in ("codes", "absmax", "nested_absmax"))


def test_codes_packed_in_bf16_storage(dense, bnb, tmp_path):
    """bnb_4bit_quant_storage bfloat16 (FSDP's): the same code bytes in a bf16 tensor, read as they are."""
    bnb_save(dense["llama"], tmp_path, False, bnb_4bit_quant_storage=torch.bfloat16)
    codes = checkpoint.read_safetensors_header(os.path.join(tmp_path, "model.safetensors"))[0][
        "model.layers.0.self_attn.q_proj.weight"]
    assert codes["dtype"] == "BF16"
    ours = nf4_layers(load_pretrained(tmp_path, "nf4", torch.float32))
    for n, m in nf4_layers(load_pretrained(bnb["llama", False][0], "nf4", torch.float32)).items():
        assert torch.equal(m.weight.codes, ours[n].weight.codes) and torch.equal(m.weight.absmax, ours[n].weight.absmax)


def test_an_older_config_without_quant_method(bnb, tmp_path):
    """Older transformers wrote _load_in_4bit (and no quant_method): read as bitsandbytes 4-bit too."""
    shutil.copytree(bnb["llama", True][0], tmp_path / "old")
    c = json.load(open(tmp_path / "old" / "config.json"))
    qc = c["quantization_config"]
    for k in ("quant_method", "load_in_4bit", "load_in_8bit"):
        qc.pop(k)
    json.dump(c, open(tmp_path / "old" / "config.json", "w"))
    assert len(nf4_layers(load_pretrained(tmp_path / "old", "nf4"))) == 14


def test_a_skipped_module_stays_dense(dense, tmp_path):
    """llm_int8_skip_modules (as unsloth's dynamic checkpoints keep some linears dense): stored dense, loaded dense
    with its exact weights even with quantize='nf4'; the others NF4."""
    hf = bnb_save(dense["llama"], tmp_path, True, llm_int8_skip_modules=["down_proj"])
    assert type(hf.model.layers[0].mlp.down_proj) is nn.Linear        # transformers kept it dense
    ours, W = load_pretrained(tmp_path, "nf4", torch.float32), dense_weights(dense["llama"])
    for i in range(2):
        down = ours.model.layers[i].mlp.down_proj
        assert type(down) is nn.Linear and torch.equal(down.weight, W[f"model.layers.{i}.mlp.down_proj.weight"])
        assert isinstance(ours.model.layers[i].mlp.up_proj, NF4Linear)
    ids = torch.randint(0, 96, (2, 12), generator=torch.manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), logits(hf, ids), rtol=0, atol=1e-5)


def test_tied_lm_head(dense, bnb):
    """Llama 3.2 1B's layout: lm_head tied to the embeddings, neither quantized; loaded tied, the file's values."""
    ours = load_pretrained(bnb["tied", True][0], "nf4", torch.float32)
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    assert torch.equal(ours.lm_head.weight, dense_weights(dense["tied"])["model.embed_tokens.weight"])
    ids = torch.randint(0, 96, (2, 12), generator=torch.manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), logits(bnb["tied", True][1], ids), rtol=0, atol=1e-5)


def test_gpt2_conv1d_weights_load_untransposed(dense, bnb):
    """transformers transposes a Conv1D weight (in, out) to (out, in) before it quantizes it, and saves it so: our
    nn.Linear's layout, loaded as stored (the dense file's Conv1D weights are transposed on load, the NF4 ones not)."""
    folder, hf = bnb["gpt2", True]
    ours, W = load_pretrained(folder, "nf4", torch.float32), dense_weights(dense["gpt2"])
    c_attn = ours.transformer.h[0].attn.c_attn
    assert isinstance(c_attn, NF4Linear) and c_attn.weight.shape == (192, 64)
    assert torch.equal(c_attn.weight.codes, quantize_nf4(W["transformer.h.0.attn.c_attn.weight"].t()).codes)
    ids = torch.randint(0, 96, (2, 12), generator=torch.manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), logits(hf, ids), rtol=0, atol=1e-5)


def test_plan_counts_the_stored_bytes(bnb, tmp_path):
    """plan.estimate's base on a 4-bit checkpoint: the bytes its NF4 weights take once loaded (NF4Tensor.nbytes, as
    stored, double quantization or not) plus its dense block linears, whatever --quant says for a dense file."""
    for key in [("llama", True), ("llama", False)]:
        folder = bnb[key][0]
        model = load_pretrained(folder, "nf4", torch.float32)
        held = sum(m.weight.nbytes for m in nf4_layers(model).values())
        args = plan_args(folder)
        config = plan.model_config(folder, folder)
        assert plan.estimate(config, args, ["q_proj", "v_proj"], 0, 0)["base"] == held, key


def plan_args(folder):
    import argparse
    return argparse.Namespace(model=folder, method="lorasp", rank=4, keep=0.5, mode="mask", structure="element",
                              quant="nf4", checkpointing="none", full_blocks=0, dtype="fp32", device="cpu",
                              batch_size=2, seq_len=16, data="demo")


def test_train_on_it_and_the_adapter_loads_in_peft(tmp_path):
    """train.py --model BNBDIR runs (--quant auto: the stored NF4, said); its adapter, loaded by PEFT onto
    transformers' own 4-bit model of the same files, gives our logits."""
    import peft
    dense, folder = tmp_path / "dense", tmp_path / "bnb"
    dense.mkdir()
    tok = demo_tokenizer(dense, 300)                    # (64 wide: the tiny fixture's 32 is less than a block)
    save_pretrained(build_model(LlamaConfig(vocab_size=tok.vocab_size, n_layer=2, n_embd=64, n_head=4, n_kv_head=2,
                                            n_ffn=128)), dense)
    (tmp_path / "task.json").write_text(json.dumps(data.demo_records(60, seed=1)))
    hf = bnb_save(dense, folder, True)
    shutil.copy(dense / "tokenizer.model", folder)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *flags(
        (str(folder), str(tmp_path / "task.json")), tmp_path / "out", "--max-steps", "2", "--rank", "4")],
        capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "NF4 base with double quantization: the base's files are NF4 already" in r.stdout, r.stdout
    ours = load_pretrained(folder, "nf4", torch.float32)
    load_adapter(ours, tmp_path / "out" / "adapter")
    theirs = peft.PeftModel.from_pretrained(hf, tmp_path / "out" / "adapter").eval()
    ids = torch.randint(0, 100, (2, 12), generator=torch.manual_seed(0))
    with torch.no_grad():
        out, base = ours(ids), load_pretrained(folder, "nf4", torch.float32)(ids)
    torch.testing.assert_close(out, logits(theirs, ids), rtol=0, atol=1e-4)
    assert (out - base).abs().max() > 1e-3                              # (the adapter trained: it moves the logits)
    e = subprocess.run([sys.executable, os.path.join(ROOT, "export.py"), "--model", str(folder), "--adapter",
                        str(tmp_path / "out"), "--out", str(tmp_path / "merged")], capture_output=True, text=True)
    assert e.returncode == 0 and "the merged weights are its NF4 weights dequantized plus the update" in e.stderr
    assert "quantization_config" not in json.load(open(tmp_path / "merged" / "config.json"))  # dense, said so
    merged = load_pretrained(tmp_path / "merged", None, torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(merged(ids), out, rtol=0, atol=1e-4)
    g = subprocess.run([sys.executable, os.path.join(ROOT, "generate.py"), "--model", str(folder), "--prompt", "hello",
                        "--max-new-tokens", "3"], capture_output=True, text=True)   # no adapter's record: as stored
    assert g.returncode == 0 and "its NF4 linears load as stored, nothing is quantized" in g.stderr, g.stderr
