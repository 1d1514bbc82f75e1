"""PEFT adapters as users meet them in the wild, against peft itself (a test-only oracle): what save_pretrained
writes with the LoraConfig fields users set, hand-edited ones (an older or a newer PEFT's config, a state_dict saved by
hand), loaded by load_adapter onto our model from the same checkpoint: PEFT's logits, or an error naming the cause."""
import copy
import json
import re
import warnings
from itertools import chain, combinations, product

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import checkpoint as C
import model as M
from lorasp import LoRASPLinear, load_adapter

T = ["q_proj", "v_proj"]


@pytest.fixture
def base(tmp_path):
    """(a tiny random HF Llama of 3 layers, our model loaded from its saved folder)."""
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=2)).eval()
    hf.save_pretrained(tmp_path / "base")
    return hf, M.load_pretrained(tmp_path / "base")


def peft_folder(hf, directory, adapter_name="default", dtype=None, **lora):
    """PEFT's adapter on hf, B (PEFT's init: 0) and modules_to_save's copies made random so they matter, saved; the
    trained PeftModel."""
    from peft import LoraConfig, get_peft_model
    peft = get_peft_model(copy.deepcopy(hf), LoraConfig(**lora), adapter_name=adapter_name)
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n or ".modules_to_save." in n:
                p.add_(torch.randn_like(p))
    peft.to(dtype or torch.float32).save_pretrained(directory)
    return peft.float().eval()


def assert_peft_logits(hf, ours, directory):
    from peft import PeftModel
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    ours = load_adapter(ours, directory, peft=True).eval()
    with torch.no_grad():
        want = PeftModel.from_pretrained(copy.deepcopy(hf), directory).eval()(ids).logits
        torch.testing.assert_close(ours(ids), want, atol=1e-5, rtol=0)
        assert (want - hf(ids).logits).abs().max() > 0.1             # the adapter does something
    return ours


@pytest.mark.parametrize("options", [
    dict(target_modules=r".*\.(q|k)_proj"), dict(target_modules="all-linear"),
    dict(target_modules="all-linear", exclude_modules=["down_proj", "q_proj"]),
    dict(target_modules=T, exclude_modules=r".*layers\.1\..*"),
    dict(target_modules=T, layers_to_transform=1), dict(target_modules=T, layers_to_transform=[0, 2]),
    dict(target_modules=T, layers_to_transform=[2], layers_pattern="layers"),
    dict(target_modules="all-linear", rank_pattern={r".*_proj": 2, "q_proj": 6}),       # two keys: the first wins
    dict(target_modules=T, rank_pattern={"model.layers.1.self_attn.q_proj": 7},        # full names
         alpha_pattern={"model.layers.2.self_attn.v_proj": 3}),
    dict(target_modules=T, use_rslora=True, rank_pattern={"v_proj": 9}),              # alpha / sqrt(each layer's r)
    dict(target_modules=T, alpha_pattern={"_proj": 32}),     # a key matches a name's end after a ".": none here
    dict(target_modules=T, lora_dropout=0.3),                                         # inference: no effect
    dict(target_modules=T, init_lora_weights="gaussian"), dict(target_modules=T, init_lora_weights="orthogonal"),
    dict(target_modules=T, init_lora_weights=False), dict(target_modules=T, r=40),   # r past the layer's 32
    ], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_peft_config_fields_give_peft_logits(base, tmp_path, options):
    hf, ours = base
    peft_folder(hf, tmp_path / "a", **dict(dict(r=4, lora_alpha=8), **options))
    assert_peft_logits(hf, ours, tmp_path / "a")


@pytest.mark.parametrize("saved", [["norm"], ["layernorm"], ["mlp.down_proj"]])
def test_modules_to_save_matches_name_ends_as_peft_does(base, tmp_path, saved):
    """PEFT saves whole every module whose name ends with a modules_to_save entry, no "." needed: "norm" is model.norm
    and each layer's input_layernorm and post_attention_layernorm (were left over here: refused)."""
    hf, ours = base
    peft_folder(hf, tmp_path / "a", r=4, lora_alpha=8, target_modules=["q_proj"], modules_to_save=saved)
    ours = assert_peft_logits(hf, ours, tmp_path / "a")
    assert sum(p.requires_grad for p in ours.parameters()) > 6          # the saved modules train again


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_adapter_file_on_an_fp32_base_gives_peft_logits(base, tmp_path, dtype):
    hf, ours = base
    peft_folder(hf, tmp_path / "a", dtype=dtype, r=4, lora_alpha=8, target_modules=T)
    assert {t.dtype for t in C.load_safetensors(tmp_path / "a" / "adapter_model.safetensors").values()} == {dtype}
    assert_peft_logits(hf, ours, tmp_path / "a")


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_adapters_load_once_converted_and_are_refused_before(base, tmp_path, init):
    """PiSSA's and OLoRA's A and B are relative to W - B0 A0 (PEFT's load redoes that on the base): refused, naming
    PEFT's conversion on save, which gives a plain LoRA adapter (rank 2r) on the original model: the trained outputs."""
    from peft import LoraConfig, get_peft_model
    hf, ours = base
    trained = get_peft_model(copy.deepcopy(hf), LoraConfig(r=4, lora_alpha=8, target_modules=T, init_lora_weights=init))
    trained.peft_config["default"].init_lora_weights = True     # PEFT's recipe: the initial adapter, saved as plain
    trained.save_pretrained(tmp_path / "init")
    trained.peft_config["default"].init_lora_weights = init
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in trained.named_parameters():
            if "lora_" in n:
                p.add_(0.1 * torch.randn_like(p))
    trained.save_pretrained(tmp_path / "raw")
    with pytest.raises(ValueError, match=rf"init_lora_weights = '{init}'.*path_initial_model_for_weight_conversion"):
        load_adapter(copy.deepcopy(ours), tmp_path / "raw", peft=True)
    trained.save_pretrained(tmp_path / "a", path_initial_model_for_weight_conversion=str(tmp_path / "init"))
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["r"] == 8
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(load_adapter(ours, tmp_path / "a", peft=True)(ids), trained.eval()(ids).logits,
                                   atol=1e-5, rtol=0)


def test_alpha_pattern_keys_that_both_match_a_module_are_refused(base, tmp_path):
    """PEFT trains with the first alpha_pattern key that matches, in the order the user wrote them, and saves the keys
    sorted: written {"v_proj": 40, "layers.N...v_proj": 5}, it trained with 40 and reloads with 5, 0.12 off in the
    logits (and so did load_adapter, without a word). Refused, naming the keys; keys that agree load."""
    from peft import PeftModel
    hf, ours = base
    trained = peft_folder(hf, tmp_path / "a", r=4, lora_alpha=8, target_modules=["v_proj"],
                          alpha_pattern={"v_proj": 40, r"layers\.\d\.self_attn\.v_proj": 5})
    assert list(json.loads((tmp_path / "a" / "adapter_config.json").read_text())["alpha_pattern"].values()) == [5, 40]
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():   # what makes the file ambiguous: PEFT itself reloads another adapter than it trained
        assert (trained(ids).logits - PeftModel.from_pretrained(copy.deepcopy(hf), tmp_path / "a")(ids).logits
                ).abs().max() > 0.01
    with pytest.raises(ValueError, match=r"adapter_config.json: alpha_pattern keys .* all match "
                                         r"model.layers.0.self_attn.v_proj, with alphas \[5, 40\]"):
        load_adapter(ours, tmp_path / "a", peft=True)
    assert not any(isinstance(m, LoRASPLinear) for m in ours.modules())
    peft_folder(hf, tmp_path / "b", r=4, lora_alpha=8, target_modules=["v_proj"],
                alpha_pattern={"v_proj": 5, r"layers\.\d\.self_attn\.v_proj": 5})
    assert_peft_logits(hf, ours, tmp_path / "b")


def test_rank_pattern_keys_that_both_match_a_module_are_named_when_the_shapes_do_not_fit(base, tmp_path):
    hf, ours = base
    peft_folder(hf, tmp_path / "a", r=4, lora_alpha=8, target_modules=T,
                rank_pattern={"q_proj": 2, r"layers\.0\.self_attn\.q_proj": 6})   # trained with 2, reloads with 6
    with pytest.raises(ValueError, match=r"with r=6 \(.*adapter_config.json: rank_pattern keys .* all match it"):
        load_adapter(ours, tmp_path / "a", peft=True)


def edit_config(directory, drop=(), **fields):
    cfg = json.loads((directory / "adapter_config.json").read_text())
    cfg.update(fields)
    for k in drop:
        del cfg[k]
    (directory / "adapter_config.json").write_text(json.dumps(cfg))
    return cfg


@pytest.mark.parametrize("rank_pattern,alpha_pattern", [
    ({"q_proj": 4}, {r"self_attn\.q_proj": 32}),             # before 0.14 the rank key "q_proj" gave alpha too (8)
    ({"q_proj": 4}, {"model.layers.1.self_attn.q_proj": 3}),  # and a whole name matched where no key did (0.14: 3)
    ])
def test_alpha_pattern_that_peft_versions_read_differently_is_refused_in_a_config_without_peft_version(
        base, tmp_path, rank_pattern, alpha_pattern):
    """PEFT 0.13 picked one key for both r and alpha, the first of rank_pattern's then alpha_pattern's keys with
    `re.match(rf".*\\.{key}$", name)`, else the name itself; 0.14 looked alpha up in alpha_pattern alone; 0.15 on as
    0.14 with `(.*\\.)?` (get_pattern_key). peft_version is written since 0.18: without it the alpha the adapter
    trained with is unknown where the versions differ (load_adapter took 0.21's, as PEFT 0.21 does, silently)."""
    hf, ours = base
    peft_folder(hf, tmp_path / "a", r=4, lora_alpha=8, target_modules=T, rank_pattern=rank_pattern,
                alpha_pattern=alpha_pattern)
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["peft_version"].startswith("0.")
    assert_peft_logits(hf, copy.deepcopy(ours), tmp_path / "a")
    edit_config(tmp_path / "a", drop=["peft_version"])
    with pytest.raises(ValueError, match=r"PEFT's versions read alpha_pattern differently for model.layers.\d.self_attn"
                                         r".q_proj: alpha \d+ from PEFT 0.15 on, .* 8 before"):
        load_adapter(copy.deepcopy(ours), tmp_path / "a", peft=True)
    edit_config(tmp_path / "a", peft_version="0.14.0")
    with pytest.raises(ValueError, match="PEFT's versions read alpha_pattern differently"):
        load_adapter(ours, tmp_path / "a", peft=True)


def test_old_alphas_is_peft_0_13_and_0_14_own_lines_on_a_grid():
    """adapter.old_alphas against LoraModel._create_and_replace's lines of PEFT 0.13.2 and get_pattern_key of 0.14.0,
    as they were (pip cannot install them here)."""
    import adapter

    def v0_13(cfg, current_key):
        pattern_keys = list(chain(cfg["rank_pattern"].keys(), cfg["alpha_pattern"].keys()))
        target_name_key = next(filter(lambda key: re.match(rf".*\.{key}$", current_key), pattern_keys), current_key)
        return cfg["alpha_pattern"].get(target_name_key, cfg["lora_alpha"])

    def v0_14(cfg, current_key):
        alpha_key = next(filter(lambda key: re.match(rf".*\.{key}$", current_key), cfg["alpha_pattern"]), current_key)
        return cfg["alpha_pattern"].get(alpha_key, cfg["lora_alpha"])
    names = [f"model.layers.{i}.self_attn.{m}" for i in (0, 1) for m in ("q_proj", "v_proj")]
    keys = ["q_proj", "v_proj", r"self_attn\.q_proj", "model.layers.1.self_attn.q_proj",
            r"layers\.\d\.self_attn\.v_proj"]
    some = [c for n in (1, 2) for c in combinations(keys, n)]
    checked = 0
    for ranks, alphas in product([()] + some, some):
        cfg = dict(r=4, lora_alpha=8, rank_pattern={k: 4 for k in ranks}, alpha_pattern={k: 10 + i for i, k in
                                                                                        enumerate(alphas)})
        for name in names:
            assert adapter.old_alphas(cfg, name) == {"0.14": v0_14(cfg, name), "older": v0_13(cfg, name)}
            checked += 1
    assert checked == 960


def test_alpha_pattern_every_peft_version_reads_alike_loads_without_peft_version(base, tmp_path):
    hf, ours = base
    peft_folder(hf, tmp_path / "a", r=4, lora_alpha=8, target_modules=T, rank_pattern={"q_proj": 2},
                alpha_pattern={"q_proj": 5, r"layers\.1\.self_attn\.v_proj": 7, "model.layers.2.self_attn.v_proj": 9})
    # (rank_pattern's "v_proj": 3 would give v_proj alpha 8 before 0.14: its key came first, and is not alpha_pattern's)
    edit_config(tmp_path / "a", drop=["peft_version"])
    assert_peft_logits(hf, ours, tmp_path / "a")


@pytest.mark.parametrize("field,value", [("use_future_magic", True), ("enable_lora", [True, False, True]),
                                         ("merge_weights", True)])
@pytest.mark.filterwarnings("ignore:Unexpected keyword arguments")
def test_a_config_field_lorasp_does_not_know_is_refused_unless_unset(base, tmp_path, field, value):
    """A newer PEFT's field (or PEFT 0.2's enable_lora, fused q/k/v): PEFT ignores it with a warning, and so did
    load_adapter, silently, whatever it meant; refused now, naming it. Unset (null, false) it loads, as PEFT's 0.2
    and 0.3 field sets do (merge_weights: 0.2's merge on eval(), no effect on the weights)."""
    hf, ours = base
    peft_folder(hf, tmp_path / "a", r=4, lora_alpha=8, target_modules=T)
    edit_config(tmp_path / "a", **{field: value})
    if field == "merge_weights":
        assert_peft_logits(hf, ours, tmp_path / "a")
        return
    from peft import PeftConfig
    with pytest.warns(UserWarning, match=rf"Unexpected keyword arguments \['{field}'\] .* these are ignored"):
        PeftConfig.from_pretrained(tmp_path / "a")                # PEFT: a warning, and the field ignored
    with pytest.raises(ValueError, match=rf"adapter_config.json: {field} = .*, a field lorasp does not know"):
        load_adapter(ours, tmp_path / "a", peft=True)
    edit_config(tmp_path / "a", **{field: None})
    assert_peft_logits(hf, ours, tmp_path / "a")


@pytest.mark.parametrize("target", ["lm_head", "embed_tokens"])
def test_lora_on_a_tied_head_with_ensure_weight_tying_is_refused_naming_it(tmp_path, target):
    """ensure_weight_tying=True, LoRA on a tied lm_head or embed_tokens: PEFT adapts both as one, saves the embedding's
    lora_embedding_A/B and rewrites target_modules to ["model.embed_tokens", ...]; the error was "target_modules ...
    does not name: ['lm_head']; PEFT would leave them out", which PEFT does not."""
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)).eval()
    hf.save_pretrained(tmp_path / "base")
    peft_folder(hf, tmp_path / "a", r=4, lora_alpha=8, target_modules=["q_proj", target], ensure_weight_tying=True)
    with pytest.raises(ValueError, match=r"lora_embedding_A: ensure_weight_tying = True: PEFT adapts a tied lm_head"):
        load_adapter(M.load_pretrained(tmp_path / "base"), tmp_path / "a", peft=True)


def test_an_old_peft_config_loads_with_peft_logits(base, tmp_path):
    """PEFT 0.3's adapter_config.json: none of the fields added since (layers_to_transform, rank_pattern, use_rslora,
    use_dora, ...)."""
    hf, ours = base
    peft_folder(hf, tmp_path / "a", r=4, lora_alpha=8, target_modules=T)
    old = dict(base_model_name_or_path="x", bias="none", fan_in_fan_out=False, inference_mode=True, lora_alpha=8,
               lora_dropout=0.05, modules_to_save=None, peft_type="LORA", r=4, target_modules=T, task_type="CAUSAL_LM",
               init_lora_weights=True)
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(old))
    assert_peft_logits(hf, ours, tmp_path / "a")


@pytest.mark.parametrize("arch,task", [("Roberta", "SEQ_CLS"), ("Bert", "SEQ_CLS"), ("Roberta", "QUESTION_ANS")])
def test_a_head_adapter_from_before_peft_0_11_loads_its_head_as_peft_does(tmp_path, arch, task):
    """Before PEFT 0.11 a SEQ_CLS (or QUESTION_ANS) adapter's config kept modules_to_save null while its file held the
    head (classifier, score; qa_outputs), which PEFT's PeftModelFor* add to modules_to_save on load whatever the config
    says: was refused here ("tensors lorasp does not load ... classifier.dense.bias")."""
    import transformers
    from peft import PeftModel
    torch.manual_seed(0)
    config = getattr(transformers, f"{arch}Config")(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=4, intermediate_size=48,
                                                    max_position_embeddings=24, pad_token_id=1,
                                                    num_labels=3 if task == "SEQ_CLS" else 2)
    cls = {"SEQ_CLS": "ForSequenceClassification", "QUESTION_ANS": "ForQuestionAnswering"}[task]
    hf = getattr(transformers, arch + cls)(config).eval()
    hf.save_pretrained(tmp_path / "base")
    peft_folder(hf, tmp_path / "a", task_type=task, r=4, lora_alpha=8, target_modules=["query", "value"])
    head = ["qa_outputs"] if task == "QUESTION_ANS" else ["classifier", "score"]
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["modules_to_save"] == head
    edit_config(tmp_path / "a", modules_to_save=None)
    ids = torch.randint(2, 64, (2, 9))
    with torch.no_grad():
        peft = PeftModel.from_pretrained(copy.deepcopy(hf), tmp_path / "a").eval()
        assert peft.peft_config["default"].modules_to_save == head             # put back by PEFT's load
        ours = load_adapter(M.load_pretrained(tmp_path / "base"), tmp_path / "a", peft=True).eval()
        if task == "SEQ_CLS":
            torch.testing.assert_close(ours.classify(ids), peft(input_ids=ids).logits, atol=1e-5, rtol=0)
        else:
            want = peft(input_ids=ids)
            torch.testing.assert_close(torch.stack(ours.span_logits(ids)), torch.stack([want.start_logits,
                                                                                        want.end_logits]))


def test_an_adapter_saved_under_its_own_name_is_found_in_its_subfolder(base, tmp_path):
    """save_pretrained writes an adapter not named "default" to DIR/NAME/ (and with several adapters, the default one
    at DIR): DIR alone was "no adapter_config.json; not an adapter folder", which says nothing of DIR/NAME."""
    hf, ours = base
    peft_folder(hf, tmp_path / "a", adapter_name="mine", r=4, lora_alpha=8, target_modules=T)
    assert not (tmp_path / "a" / "adapter_config.json").exists()
    with pytest.raises(FileNotFoundError, match=rf"but \['mine'\] hold adapters .* pass {tmp_path / 'a' / 'mine'}"):
        load_adapter(copy.deepcopy(ours), tmp_path / "a", peft=True)
    assert_peft_logits(hf, ours, tmp_path / "a" / "mine")


def test_a_peft_state_dict_saved_by_hand_loads_as_peft_loads_it(base, tmp_path):
    """A PeftModel's own state_dict() saved as adapter_model.safetensors spells lora_A.default.weight: PEFT loads it
    (was refused here, "holds no lora_A weights"); another adapter's name (lora_A.mine.weight) PEFT leaves out, loading
    nothing but a warning, and load_adapter refuses."""
    hf, ours = base
    trained = peft_folder(hf, tmp_path / "a", r=4, lora_alpha=8, target_modules=T)
    path = tmp_path / "a" / "adapter_model.safetensors"
    C.save_safetensors({k: v.contiguous() for k, v in trained.state_dict().items() if ".lora_" in k}, path)
    assert all(".default.weight" in k for k in C.load_safetensors(path))
    assert_peft_logits(hf, copy.deepcopy(ours), tmp_path / "a")
    C.save_safetensors({k.replace(".default.", ".mine."): v for k, v in C.load_safetensors(path).items()}, path)
    with pytest.raises(ValueError, match="holds no lora_A weights"):
        load_adapter(ours, tmp_path / "a", peft=True)


def test_a_classifier_saved_in_a_peft_state_dict_spelling_is_refused_on_one_line_naming_the_file(tmp_path):
    """RoBERTa's classifier in modules_to_save, from a PeftModel's state_dict() saved by hand (classifier.
    modules_to_save.default.dense.weight, classifier.original_module...): PEFT's own load fails (a KeyError); ours
    was torch's several-line load_state_dict error naming no file. And a head of another size, on one line too."""
    import transformers
    torch.manual_seed(0)
    config = transformers.RobertaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=48, max_position_embeddings=24, pad_token_id=1, num_labels=3)
    hf = transformers.RobertaForSequenceClassification(config).eval()
    hf.save_pretrained(tmp_path / "base")
    trained = peft_folder(hf, tmp_path / "a", task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query"])
    ours = load_adapter(M.load_pretrained(tmp_path / "base"), tmp_path / "a", peft=True)   # save_pretrained's: loads
    assert isinstance(ours.roberta.encoder.layer[0].attention.self.query, LoRASPLinear)
    path = tmp_path / "a" / "adapter_model.safetensors"
    hand = {k: v.contiguous() for k, v in trained.state_dict().items() if ".lora_" in k or "classifier" in k}
    C.save_safetensors(hand, path)
    with pytest.raises(RuntimeError, match=r"^[^\n]*adapter_model.safetensors: modules_to_save's classifier does not "
                                           r"load: Missing key\(s\) in state_dict: \"dense.weight\"[^\n]*"
                                           r"a PeftModel's state_dict\(\) saved by hand[^\n]*$"):
        load_adapter(M.load_pretrained(tmp_path / "base"), tmp_path / "a", peft=True)
    config.num_labels = 2
    transformers.RobertaForSequenceClassification(config).save_pretrained(tmp_path / "two")
    peft_folder(hf, tmp_path / "a", task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query"])
    with pytest.raises(RuntimeError, match=r"^[^\n]*adapter_model.safetensors: modules_to_save's classifier does not "
                                           r"load: size mismatch for out_proj.weight[^\n]*$"):
        load_adapter(M.load_pretrained(tmp_path / "two"), tmp_path / "a", peft=True)


# ----------------------------------------------------------------------------------------------------
# The other direction: our adapters (LoRA-SP, keep < 1) read by PEFT on transformers' model of the same checkpoint

def gpt2(cls):
    import transformers
    from fixtures import random_params
    return random_params(getattr(transformers, cls)(transformers.GPT2Config(
        vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=16, pad_token_id=0, num_labels=3)), 3)


def t5():
    import transformers
    from fixtures import random_params
    return random_params(transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, decoder_start_token_id=0)), 4)


def llama_nf4():
    from fixtures import random_params
    torch.manual_seed(0)
    return random_params(LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96,
                                                      num_hidden_layers=2, num_attention_heads=4,
                                                      num_key_value_heads=2)), 2)


X, DEC = torch.randint(2, 64, (2, 9)), torch.randint(2, 64, (2, 5))
ARCHS = {  # name: (the HF model, our targets, our output, PEFT's output)
    "gpt2": (lambda: gpt2("GPT2LMHeadModel"), ["c_attn", "c_proj", "c_fc"], lambda m: m(X), lambda m: m(X).logits),
    "gpt2-classifier": (lambda: gpt2("GPT2ForSequenceClassification"), ["c_attn", "c_fc"], lambda m: m.classify(X),
                        lambda m: m(input_ids=X).logits),
    "t5": (t5, ["q", "v", "wo"], lambda m: m(X, DEC), lambda m: m(input_ids=X, decoder_input_ids=DEC).logits),
    "llama-nf4": (llama_nf4, ["q_proj", "v_proj", "down_proj"], lambda m: m(X), lambda m: m(X).logits)}


@pytest.mark.parametrize("mode,structure,keep", [("mask", "element", 0.5), ("freeze", "column", 0.25)])
@pytest.mark.parametrize("arch", ARCHS)
def test_peft_reads_our_adapter_to_our_outputs(tmp_path, arch, mode, structure, keep):
    """GPT-2's HF Conv1D (our nn.Linear holds its transpose: PEFT sets fan_in_fan_out itself), its classifier's score
    head saved whole, T5, and an NF4 base (PEFT on its dequantized weights): PEFT gives our outputs."""
    from peft import PeftModel
    from lorasp import apply_lorasp, save_adapter
    from quant import NF4Linear
    make, targets, ours_out, peft_out = ARCHS[arch]
    hf = make().eval()
    hf.save_pretrained(tmp_path / "base")
    ours = M.load_pretrained(tmp_path / "base", quantize="nf4" if "nf4" in arch else None, dtype=torch.float32)
    head = type(ours.add_head(3)).head if "classifier" in arch else ()   # GPT-2's score, saved whole
    apply_lorasp(ours, targets, r=4, alpha=8, keep=keep, mode=mode, structure=structure)
    for name in head:
        ours.get_submodule(name).requires_grad_(True)
    with torch.no_grad():
        for p in ours.parameters():
            if p.requires_grad:
                p.normal_(0, 0.2)
    save_adapter(ours, tmp_path / "a", task_type="SEQ_CLS" if head else "CAUSAL_LM", modules_to_save=head)
    state = hf.state_dict()   # an NF4 base: PEFT's is the weights our NF4 layers multiply by
    state.update({n.removesuffix(".base") + ".weight": m.weight.dequantize(torch.float32)
                  for n, m in ours.named_modules() if isinstance(m, NF4Linear)})
    hf.load_state_dict(state)
    with torch.no_grad():
        want = ours_out(ours.eval())
        with warnings.catch_warnings(record=True) as caught:   # GPT-2's Conv1D: fan_in_fan_out true, as PEFT wants it
            warnings.simplefilter("always")
            got = peft_out(PeftModel.from_pretrained(copy.deepcopy(hf), tmp_path / "a").eval())
        assert not [str(w.message) for w in caught if "fan_in_fan_out" in str(w.message)]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert (peft_out(hf) - want).abs().max() > 0.05
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] is arch.startswith("gpt2")


@pytest.mark.parametrize("fan_in_fan_out", [True, False])
def test_load_adapter_reads_a_gpt2_adapter_either_fan_in_fan_out(tmp_path, fan_in_fan_out):
    """Our GPT-2 adapters say true since session 19 (false before, which PEFT corrected with a warning); ours are
    nn.Linear either way, so both load to the same outputs."""
    from lorasp import apply_lorasp, load_adapter, save_adapter
    gpt2("GPT2LMHeadModel").save_pretrained(tmp_path / "base")
    ours = apply_lorasp(M.load_pretrained(tmp_path / "base"), ["c_attn", "c_proj"], r=4, alpha=8, seed=3)
    with torch.no_grad():
        for p in ours.parameters():
            if p.requires_grad:
                p.normal_(0, 0.2)
    save_adapter(ours, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] is True
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(dict(config, fan_in_fan_out=fan_in_fan_out)))
    again = load_adapter(M.load_pretrained(tmp_path / "base"), tmp_path / "a")
    with torch.no_grad():
        torch.testing.assert_close(again(X), ours(X), atol=0, rtol=0)


@pytest.mark.parametrize("layout", ["meta", "gguf"])
def test_a_peft_adapter_trained_on_the_hf_checkpoint_gives_peft_logits_on_its_meta_or_gguf_files(tmp_path, layout):
    """Meta's and llama.cpp's files interleave q/k rows for their RoPE; loaded, they are HF's again, so an adapter on
    HF's q_proj and k_proj (B's rows in HF's order) applies as is."""
    import transformers
    from gguf import GGMLQuantizationType
    from fixtures import random_params
    from test_gguf import llama_cpp_layout, llama_meta, write
    from test_model import write_meta
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=5000.0,
                                 max_position_embeddings=256)
    hf = random_params(LlamaForCausalLM(c), 0)
    (tmp_path / "base").mkdir()
    if layout == "meta":
        write_meta(hf, tmp_path / "base")
    else:
        write(tmp_path / "base" / "tiny.gguf", llama_cpp_layout(hf.state_dict(), c, GGMLQuantizationType.F32),
              llama_meta(c))
    peft_folder(hf, tmp_path / "a", r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"])
    assert_peft_logits(hf, M.load_pretrained(tmp_path / "base"), tmp_path / "a")


@pytest.mark.parametrize("targets", [["q", "v"], "all-linear"])
def test_a_peft_t5_adapter_gives_peft_logits(tmp_path, targets):
    from peft import PeftModel
    hf = t5().eval()
    hf.save_pretrained(tmp_path / "base")
    peft_folder(hf, tmp_path / "a", task_type="SEQ_2_SEQ_LM", r=4, lora_alpha=8, target_modules=targets)
    ours = load_adapter(M.load_pretrained(tmp_path / "base"), tmp_path / "a", peft=True).eval()
    with torch.no_grad():
        want = PeftModel.from_pretrained(copy.deepcopy(hf), tmp_path / "a").eval()(input_ids=X, decoder_input_ids=DEC)
        torch.testing.assert_close(ours(X, DEC), want.logits, atol=1e-5, rtol=0)
        assert (want.logits - hf(input_ids=X, decoder_input_ids=DEC).logits).abs().max() > 0.1


def test_eval_scores_a_head_adapter_from_before_peft_0_11_on_a_base_without_a_head(tmp_path):
    """eval.py's check that the adapter brings the head a headless base lacks read modules_to_save alone: an old
    SEQ_CLS adapter (modules_to_save null, its head in the file, as PEFT loads it) was refused ("brings no classifier
    head ... modules_to_save: None") though load_adapter loads it."""
    import transformers
    from peft import PeftModel
    from types import SimpleNamespace
    import evalcli
    torch.manual_seed(0)
    config = transformers.RobertaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=48, max_position_embeddings=24, pad_token_id=1, num_labels=3)
    hf = transformers.RobertaForSequenceClassification(config).eval()
    hf.roberta.save_pretrained(tmp_path / "base")                              # the body alone: no classifier
    peft_folder(hf, tmp_path / "a", task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"])
    edit_config(tmp_path / "a", modules_to_save=None)
    ids = torch.randint(2, 64, (2, 9))
    tok = SimpleNamespace(vocab_size=64, bos_id=None, eos_id=None, pad_id=None)
    ours, _ = evalcli.load_model(str(tmp_path / "base"), str(tmp_path / "a"), num_labels=3, tok=tok)
    with torch.no_grad():
        peft = PeftModel.from_pretrained(copy.deepcopy(hf), tmp_path / "a").eval()
        torch.testing.assert_close(ours.classify(ids), peft(input_ids=ids).logits, atol=1e-5, rtol=0)
    assert evalcli.head_order(str(tmp_path / "base"), "sst2", str(tmp_path / "a")) is None


# ----------------------------------------------------------------------------------------------------
# --targets all-linear: PEFT's shorthand, on every backbone and task head train.py has

def hf_tiny(arch, cls, **more):
    """A tiny random transformers model of arch (Llama, GPT2, Roberta, Bert, T5) and head class (ForCausalLM, ...)."""
    import transformers
    from fixtures import random_params
    sizes = dict(Llama=dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2),
                 GPT2=dict(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=16, pad_token_id=0),
                 T5=dict(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                         decoder_start_token_id=0),
                 Roberta=dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=48, max_position_embeddings=24, pad_token_id=1))
    config = getattr(transformers, f"{arch}Config")(**sizes.get(arch, sizes["Roberta"]), num_labels=2, **more)
    return random_params(getattr(transformers, arch + cls)(config), 5)


START = lambda o: (o.start_logits, o.end_logits)  # noqa: E731
ALL_LINEAR = {  # name: (the HF model, --data, PEFT's task_type, our output, PEFT's output)
    "llama": (lambda: hf_tiny("Llama", "ForCausalLM"), "alpaca", "CAUSAL_LM", lambda m: m(X), lambda o: o.logits),
    "gpt2": (lambda: hf_tiny("GPT2", "LMHeadModel"), "alpaca", "CAUSAL_LM", lambda m: m(X), lambda o: o.logits),
    "gpt2-glue": (lambda: hf_tiny("GPT2", "ForSequenceClassification"), "glue/sst2", "SEQ_CLS",
                  lambda m: m.classify(X), lambda o: o.logits),
    "roberta-glue": (lambda: hf_tiny("Roberta", "ForSequenceClassification"), "glue/sst2", "SEQ_CLS",
                     lambda m: m.classify(X), lambda o: o.logits),
    "bert-glue": (lambda: hf_tiny("Bert", "ForSequenceClassification"), "glue/sst2", "SEQ_CLS",
                  lambda m: m.classify(X), lambda o: o.logits),
    "roberta-squad": (lambda: hf_tiny("Roberta", "ForQuestionAnswering"), "squad", "QUESTION_ANS",
                      lambda m: m.span_logits(X), START),
    "bert-squad": (lambda: hf_tiny("Bert", "ForQuestionAnswering"), "squad", "QUESTION_ANS",
                   lambda m: m.span_logits(X), START),
    "t5": (lambda: hf_tiny("T5", "ForConditionalGeneration"), "wmt16-en-ro", "SEQ_2_SEQ_LM", lambda m: m(X, DEC),
           lambda o: o.logits),
    "t5-v1.1": (lambda: hf_tiny("T5", "ForConditionalGeneration", feed_forward_proj="gated-gelu",
                                tie_word_embeddings=False), "wmt16-en-ro", "SEQ_2_SEQ_LM", lambda m: m(X, DEC),
                lambda o: o.logits)}


@pytest.mark.parametrize("arch", ALL_LINEAR)
def test_all_linear_adapts_what_peft_adapts_and_peft_reads_our_adapter(tmp_path, arch):
    """train.py --targets all-linear (was refused) adapts the modules PEFT's LoraConfig(target_modules="all-linear",
    task_type=...) adapts, by name: every linear (GPT-2's Conv1D) but the output layer and the task's head, which
    trains whole (modules_to_save) as PEFT's does; BERT's GLUE pooler is LoRA-adapted, as PEFT adapts it. SQuAD: PEFT's
    QUESTION_ANS all-linear adapts qa_outputs and then fails to save it whole (a TypeError), so the reference excludes
    it; ours trains it whole. Our saved adapter names modules, not "all-linear" (as PEFT's save does), PEFT reads it to
    our outputs, adapting the same modules, and load_adapter reads it back to the same outputs."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper
    import tasks
    import train
    make, data, task, ours_out, peft_out = ALL_LINEAR[arch]
    hf = make().eval()
    hf.save_pretrained(tmp_path / "base")
    config = dict(task_type=task, r=4, lora_alpha=8, target_modules="all-linear")
    if task == "QUESTION_ANS":
        with pytest.raises(TypeError, match="modules_to_save cannot be applied"):
            get_peft_model(copy.deepcopy(hf), LoraConfig(**config))
        config["exclude_modules"] = ["qa_outputs"]

    def adapted(peft):
        return ({n.removeprefix("base_model.model.") for n, m in peft.named_modules() if isinstance(m, LoraLayer)},
                {n.removeprefix("base_model.model.") for n, m in peft.named_modules()
                 if isinstance(m, ModulesToSaveWrapper)})
    want = adapted(get_peft_model(copy.deepcopy(hf), LoraConfig(**config)))
    args = train.parse_args(["--model", str(tmp_path / "base"), "--data", data, "--rank", "4", "--alpha", "8",
                             "--targets", "all-linear", "--dtype", "fp32", "--quant", "none", "--checkpointing",
                             "none"])
    ours = tasks.load_model(args, str(tmp_path / "base"), None, torch.device("cpu"), False)
    assert ({n for n, m in ours.named_modules() if isinstance(m, LoRASPLinear)}, set(tasks.heads(ours, args))) == want
    with torch.no_grad():
        for p in ours.parameters():
            if p.requires_grad:
                p.normal_(0, 0.2)
    tasks.save_weights(ours, tmp_path / "a", args, str(tmp_path / "base"))
    saved = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert isinstance(saved["target_modules"], list) and "all-linear" not in saved["target_modules"]
    ours.eval()
    with torch.no_grad():
        mine = ours_out(ours)
        peft = PeftModel.from_pretrained(copy.deepcopy(hf), tmp_path / "a").eval()
        assert adapted(peft) == want
        out = peft_out(peft(input_ids=X, decoder_input_ids=DEC) if task == "SEQ_2_SEQ_LM" else peft(input_ids=X))
        torch.testing.assert_close(out, mine, atol=1e-5, rtol=1e-5)
        base = peft_out(hf(input_ids=X, decoder_input_ids=DEC) if task == "SEQ_2_SEQ_LM" else hf(input_ids=X))
        assert max((a - b).abs().max() for a, b in zip(*(((base,), (mine,)) if task != "QUESTION_ANS"
                                                       else (base, mine)))) > 0.05
        again = load_adapter(M.load_pretrained(tmp_path / "base"), tmp_path / "a").eval()
        torch.testing.assert_close(ours_out(again), mine, atol=0, rtol=0)


@pytest.mark.parametrize("spelling", ["all-linear", "ALL-Linear"])
def test_a_hand_written_all_linear_config_over_an_lm_head_adapter_is_refused_as_peft_leaves_it_out(
        base, tmp_path, spelling):
    """PEFT expands a config's "all-linear" (any case) on the model it loads onto, without the output layer: an
    lm_head adapter in the file is then left out (its tensors unexpected keys), so PEFT's logits are the base's there.
    load_adapter took every adapter in the file (every module counted as named): PEFT's logits and ours differed
    without a word; now the file is refused, naming lm_head."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    hf, ours = base
    peft_folder(hf, tmp_path / "a", r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"])
    edit_config(tmp_path / "a", target_modules=spelling)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft = PeftModel.from_pretrained(copy.deepcopy(hf), tmp_path / "a")
    assert not isinstance(peft.base_model.model.lm_head, LoraLayer)
    assert isinstance(peft.base_model.model.model.layers[0].self_attn.q_proj, LoraLayer)
    with pytest.raises(ValueError, match=r"does not name: \['lm_head'\]; PEFT would leave them out"):
        load_adapter(ours, tmp_path / "a", peft=True)


@pytest.mark.parametrize("head_in_file", [True, False])
def test_a_classification_adapter_on_a_causal_lm_is_refused_naming_task_type(base, tmp_path, head_in_file):
    """A SEQ_CLS adapter (LlamaForSequenceClassification's, its score head saved) loaded onto the causal LM: PEFT loads
    it without a word (a PeftModelForSequenceClassification around the LM, the head dropped), and so did lorasp where
    the file held no head (modules_to_save null, the head not saved): the LM's outputs through a body trained for a
    classifier. Now refused, naming adapter_config.json's task_type, the model as it was; with task_type CAUSAL_LM
    written in (the escape the message names), the same file loads to PEFT's logits."""
    import transformers
    from peft import PeftModel
    from safetensors.torch import load_file, save_file
    hf, ours = base
    cls = transformers.LlamaForSequenceClassification(LlamaConfig(**{**hf.config.to_dict(), "num_labels": 2}))
    cls.model.load_state_dict(hf.model.state_dict())                   # the same body
    peft_folder(cls, tmp_path / "a", task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=T)
    tensors = load_file(tmp_path / "a" / "adapter_model.safetensors")
    assert "base_model.model.score.weight" in tensors
    if not head_in_file:
        save_file({k: t for k, t in tensors.items() if ".score." not in k},
                  tmp_path / "a" / "adapter_model.safetensors")
        edit_config(tmp_path / "a", modules_to_save=None)
    peft = PeftModel.from_pretrained(copy.deepcopy(hf), tmp_path / "a")
    assert type(peft).__name__ == "PeftModelForSequenceClassification"  # PEFT: loaded onto the causal LM
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'a' / 'adapter_config.json'}: task_type 'SEQ_CLS': a "
                                                   "sequence classification adapter, trained with a head (classifier "
                                                   "or score) this model does not have")):
        load_adapter(ours, tmp_path / "a", peft=True)
    assert not any(isinstance(m, LoRASPLinear) for m in ours.modules())
    assert ours.state_dict().keys() == before.keys() and all(torch.equal(before[k], v) for k, v in
                                                             ours.state_dict().items())
    if not head_in_file:
        edit_config(tmp_path / "a", task_type="CAUSAL_LM")
        assert_peft_logits(hf, ours, tmp_path / "a")


def test_an_adapter_naming_another_base_model_is_noted_and_one_moved_to_another_path_is_not(tmp_path, capsys):
    """adapter_config.json's base_model_name_or_path (what PEFT wrote: the path the base was loaded from) was never
    read: a PEFT adapter of Llama-2-7b-hf loaded onto Llama-2-7b-chat-hf (the same shapes) without a word. Now a note
    names both; the same model in another folder (another machine's path), a Hub id against its snapshot in the Hub's
    cache or a preset's cache folder, says nothing, nor does lorasp's own adapter (its base's files are checked)."""
    import shutil
    import evalcli
    from lorasp import apply_lorasp, save_adapter
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(
        tmp_path / "Llama-2-7b-hf")
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "Llama-2-7b-hf")
    get_peft_model(hf, LoraConfig(r=4, lora_alpha=8, target_modules=T)).save_pretrained(tmp_path / "a")
    named = json.loads((tmp_path / "a" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert named == str(tmp_path / "Llama-2-7b-hf")                          # what PEFT recorded
    for d in (tmp_path / "elsewhere" / "Llama-2-7b-hf", tmp_path / "Llama-2-7b-chat-hf"):
        shutil.copytree(tmp_path / "Llama-2-7b-hf", d)
    for model, noted in ((tmp_path / "Llama-2-7b-hf", False), (tmp_path / "elsewhere" / "Llama-2-7b-hf", False),
                         (tmp_path / "Llama-2-7b-chat-hf", True)):
        assert evalcli.base_quant(str(model), str(tmp_path / "a"), "none") == "none"
        err = capsys.readouterr().err
        assert (f"note: --adapter {tmp_path / 'a'}: its adapter_config.json names its base {named!r}, not --model "
                f"{model}; an adapter that records nothing of its base's files is checked against it by shapes alone"
                in err) == noted, err
    ours = apply_lorasp(M.load_pretrained(tmp_path / "Llama-2-7b-hf"), T, r=4, alpha=8)
    save_adapter(ours, tmp_path / "b", base_model_name_or_path=named, base=dict(fingerprint=C.files_fingerprint(
        str(tmp_path / "Llama-2-7b-hf"))))
    evalcli.base_quant(str(tmp_path / "Llama-2-7b-chat-hf"), str(tmp_path / "b"), "none")   # the same files: silent
    assert capsys.readouterr().err == ""
    hub = "/home/u/.cache/huggingface/hub/models--meta-llama--Llama-2-7b-hf/snapshots/01c7f73d"
    assert evalcli.base_names("meta-llama/Llama-2-7b-hf") & evalcli.base_names(hub) == {"llama-2-7b-hf"}
    preset = evalcli.base_names("/c/models/llama2-7b")                       # (the cache folder of a preset)
    assert evalcli.base_names("meta-llama/Llama-2-7b-hf") & preset == {"llama-2-7b-hf"}
    assert not evalcli.base_names("meta-llama/Llama-2-13b-hf") & preset
