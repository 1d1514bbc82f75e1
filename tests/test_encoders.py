"""RoBERTa and BERT against transformers (a test-only oracle): tiny random checkpoints the test writes with
save_pretrained (bare RobertaModel/BertModel, *ForSequenceClassification, the MLM/NSP pre-training layouts, an old
gamma/beta .bin) load through model.load_pretrained to the same hidden states and logits, with and without padding
and token types; NF4 on load, activation checkpointing and save_pretrained back to transformers."""
import gc
import json

import pytest
import torch
import torch.nn.functional as F
import transformers

from fixtures import random_params
import model as M
from lorasp import apply_lorasp, load_adapter, save_adapter
from quant import NF4Linear

V, T = 96, 11
SIZES = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=40)
HF = {"roberta": (transformers.RobertaConfig, transformers.RobertaModel, transformers.RobertaForSequenceClassification),
      "bert": (transformers.BertConfig, transformers.BertModel, transformers.BertForSequenceClassification)}


def hf_config(kind, **kw):
    extra = dict(type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5) if kind == "roberta" else dict(type_vocab_size=2)
    return HF[kind][0](**SIZES, **extra | kw)


def inputs(kind, seed=0):
    """Two rows, the first right-padded with the pad id (RoBERTa's positions depend on it); BERT gets segments A/B."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(3, V, (2, T), generator=g)
    mask = torch.ones(2, T, dtype=torch.long)
    mask[0, 7:] = 0
    x[0, 7:] = 1 if kind == "roberta" else 0
    types = torch.zeros_like(x)
    if kind == "bert":
        types[:, 4:] = 1
    return x, mask, types


@pytest.mark.parametrize("kind", ["roberta", "bert"])
def test_backbone_hidden_states_match_transformers(kind, tmp_path):
    ref = random_params(HF[kind][1](hf_config(kind)), 0)  # RobertaModel keeps a pooler: dropped on load, deliberately
    ref.save_pretrained(tmp_path)
    ours = M.load_pretrained(tmp_path)
    assert type(ours) is {"roberta": M.Roberta, "bert": M.Bert}[kind] and not ours.training
    x, mask, types = inputs(kind)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x).last_hidden_state, atol=1e-4, rtol=0)
        got, want = ours(x, mask, types), ref(x, attention_mask=mask, token_type_ids=types).last_hidden_state
        torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-4, rtol=0)  # padding rows: don't care
        torch.testing.assert_close(ours(x, torch.ones_like(x)), ours(x), atol=1e-6, rtol=0)  # all-ones mask = none
        torch.testing.assert_close(ours(x, mask, types, first_only=True), got[:, :1], atol=1e-5, rtol=0)
        if kind == "bert":
            assert (ours(x, mask, types) - ours(x, mask)).abs().max() > 0.1  # token types are used
            torch.testing.assert_close(ours.bert.pooler.dense(got[:, 0]).tanh(), ref(x, mask, types).pooler_output,
                                       atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["roberta", "bert"])
@pytest.mark.parametrize("num_labels", [3, 1])
def test_sequence_classification_heads_match_transformers(kind, num_labels, tmp_path):
    """RobertaClassificationHead (dense, tanh, out_proj on <s>) and BERT's pooler + classifier, loaded from a
    *ForSequenceClassification checkpoint; num_labels=1 is STS-B's regression."""
    ref = random_params(HF[kind][2](hf_config(kind, num_labels=num_labels)), 1)
    ref.save_pretrained(tmp_path)
    ours = M.load_pretrained(tmp_path)
    assert ours.config.num_labels == num_labels
    x, mask, types = inputs(kind)
    with torch.no_grad():
        want = ref(x, attention_mask=mask, token_type_ids=types).logits
        torch.testing.assert_close(ours.classify(x, mask, types), want, atol=1e-4, rtol=0)
    assert ours.add_head(num_labels) is ours  # the loaded head is kept
    with pytest.raises(ValueError, match=f"the checkpoint's head has {num_labels} labels, the task 5"):
        ours.add_head(5)


@pytest.mark.parametrize("kind", ["roberta", "bert"])
def test_pretraining_checkpoints_drop_their_heads_and_keep_checking(kind, tmp_path):
    """RobertaForMaskedLM (lm_head.*) and BertForPreTraining (cls.predictions.*, cls.seq_relationship.*) load with
    their pre-training heads dropped, as an old-style .bin (LayerNorm gamma/beta, a position_ids buffer) too; a
    left-over or missing tensor is still an error."""
    cls = transformers.RobertaForMaskedLM if kind == "roberta" else transformers.BertForPreTraining
    ref = random_params(cls(hf_config(kind)), 2)
    ref.save_pretrained(tmp_path)
    base = getattr(ref, kind)
    x, mask, types = inputs(kind)
    want = base(x, attention_mask=mask, token_type_ids=types).last_hidden_state.detach()
    torch.testing.assert_close(M.load_pretrained(tmp_path)(x, mask, types)[mask.bool()], want[mask.bool()],
                               atol=1e-4, rtol=0)
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in ref.state_dict().items()}
    state[f"{kind}.embeddings.position_ids"] = torch.arange(40)[None]
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    torch.testing.assert_close(M.load_pretrained(tmp_path)(x, mask, types)[mask.bool()], want[mask.bool()],
                               atol=1e-4, rtol=0)
    torch.save({**state, f"{kind}.encoder.layer.0.extra.weight": torch.zeros(2)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=rf"tensor '{kind}\.encoder\.layer\.0\.extra\.weight' is left over"):
        M.load_pretrained(tmp_path)
    del state[f"{kind}.encoder.layer.1.output.dense.bias"]
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=rf"1 tensors missing from the checkpoint: {kind}\.encoder\.layer\.1\.output"):
        M.load_pretrained(tmp_path)


@pytest.mark.parametrize("kind", ["roberta", "bert"])
def test_fresh_head_and_save_pretrained_load_in_transformers(kind, tmp_path):
    """A base checkpoint + add_head(n) -> *ForSequenceClassification written back in the HF layout."""
    torch.manual_seed(0)
    HF[kind][1](hf_config(kind)).save_pretrained(tmp_path / "base")
    ours = M.load_pretrained(tmp_path / "base").add_head(2)
    head = ours.classifier if kind == "bert" else ours.classifier.out_proj
    assert ours.config.num_labels == 2 and head.weight.shape == (2, 32) and not head.bias.any()
    assert 0.01 < head.weight.std() < 0.03  # HF's initializer_range 0.02
    random_params(ours, 3)
    M.save_pretrained(ours, tmp_path / "ours")
    ref = HF[kind][2].from_pretrained(tmp_path / "ours").eval()
    x, mask, types = inputs(kind)
    torch.testing.assert_close(ours.classify(x, mask, types), ref(x, attention_mask=mask, token_type_ids=types).logits,
                               atol=1e-4, rtol=0)
    back = M.load_pretrained(tmp_path / "ours")
    assert back.config == ours.config and torch.equal(back.classify(x, mask, types), ours.classify(x, mask, types))


def test_presets_have_the_published_sizes():
    """Parameter counts of the HF base models (RobertaModel without its pooler; BertModel with its pooler)."""
    counts = {"roberta-base": 124_055_040, "roberta-large": 354_310_144, "bert-base-uncased": 109_482_240,
              "bert-large-uncased": 335_141_888, "all-minilm-l6-v2": 22_713_216}
    for name, n in counts.items():
        with torch.device("meta"):
            m = M.build_model(name)
        assert sum(p.numel() for p in m.parameters()) == n, name
    with pytest.raises(ValueError, match="unknown model preset 'roberta'; known presets: .*roberta-base"):
        M.get_config("roberta")


@pytest.mark.parametrize("kind", ["roberta", "bert"])
def test_nf4_quantizes_the_block_linears(kind, tmp_path):
    random_params(HF[kind][2](hf_config(kind, num_labels=2)), 4).save_pretrained(tmp_path)
    q, dense = M.load_pretrained(tmp_path, quantize="nf4"), M.load_pretrained(tmp_path)
    nf4 = {n for n, m in q.named_modules() if isinstance(m, NF4Linear)}
    assert len(nf4) == 2 * 6 and all(".encoder.layer." in n for n in nf4)  # q, k, v, o, up, down per layer
    assert type(q.classifier if kind == "bert" else q.classifier.dense) is torch.nn.Linear
    with torch.no_grad():  # exactly a dense model holding the dequantized weights
        for n in nf4:
            dense.get_submodule(n).weight.copy_(q.get_submodule(n).weight.dequantize(torch.float32))
    x, mask, types = inputs(kind)
    torch.testing.assert_close(q.classify(x, mask, types), dense.classify(x, mask, types), atol=1e-5, rtol=0)


@pytest.mark.parametrize("preset", ["roberta-tiny", "bert-tiny"])
def test_checkpointing_gives_the_same_gradients(preset):
    """LoRA-SP on query/value, the head trainable, dropout on: "full" and "selective" equal "none", and nothing
    is held after backward (a graph kept alive by `loss` once pinned every block input until the next step)."""
    torch.manual_seed(0)
    model = apply_lorasp(M.build_model(preset).add_head(3), ["query", "value"], r=4, keep=0.5).train()
    for name in type(model).head:
        model.get_submodule(name).requires_grad_(True)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("B_train"):
                p.normal_()  # B starts at zero: give the adapter a path that matters
    kind = preset.split("-")[0]
    x, mask, types = inputs(kind)
    grads, earlier = {}, [r for r in gc.get_objects() if type(r) is M.Recipe]  # other tests' (a forward alone)
    for model.checkpointing in ("none", "full", "selective"):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same dropout masks
        loss = F.cross_entropy(model.classify(x, mask, types), torch.tensor([0, 2]))
        loss.backward()
        grads[model.checkpointing] = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        # the loss (so the graph) is still referenced, as in any training loop: no recipe may keep its block inputs
        assert not [r for r in gc.get_objects() if type(r) is M.Recipe and r.inputs is not None
                    and not any(r is e for e in earlier)]
    assert any("classifier" in n for n in grads["none"]) and all(g.abs().sum() > 0 for g in grads["none"].values())
    for mode in ("full", "selective"):
        for n, g in grads["none"].items():
            torch.testing.assert_close(grads[mode][n], g, atol=1e-6, rtol=0, msg=f"{mode}: {n}")


@pytest.mark.parametrize("kind", ["roberta", "bert"])
def test_adapter_with_its_head_loads_in_peft(kind, tmp_path):
    """LoRA-SP on query/value + the head (RoBERTa: classifier; BERT: pooler + classifier) saved as PEFT's
    modules_to_save: PEFT on transformers' *ForSequenceClassification and our load_adapter give our logits."""
    from peft import PeftModel
    torch.manual_seed(0)
    random_params(HF[kind][1](hf_config(kind)), 5).save_pretrained(tmp_path / "base")
    ours = apply_lorasp(M.load_pretrained(tmp_path / "base").add_head(3), ["query", "value"], r=4, alpha=8, keep=0.5)
    for name in type(ours).head:
        ours.get_submodule(name).requires_grad_(True)
    with torch.no_grad():
        for p in ours.parameters():
            if p.requires_grad:
                p.normal_(0, 0.3)
    save_adapter(ours, tmp_path / "adapter", task_type="SEQ_CLS", modules_to_save=type(ours).head)
    x, mask, types = inputs(kind)
    want = ours.classify(x, mask, types)
    ref = HF[kind][2].from_pretrained(tmp_path / "base", num_labels=3)
    ref = PeftModel.from_pretrained(ref, tmp_path / "adapter").eval()
    torch.testing.assert_close(ref(x, attention_mask=mask, token_type_ids=types).logits, want, atol=1e-4, rtol=0)
    back = load_adapter(M.load_pretrained(tmp_path / "base").add_head(3), tmp_path / "adapter")
    assert torch.equal(back.classify(x, mask, types), want)
    assert {n for n, p in back.named_parameters() if p.requires_grad} == \
        {n for n, p in ours.named_parameters() if p.requires_grad}  # the head trains again after loading



@pytest.mark.parametrize("targets", [["query", "dense"], "all-linear"])
def test_peft_bert_classifier_adapter_on_the_pooler_gives_peft_logits(targets, tmp_path):
    """PEFT's SEQ_CLS adapter with target_modules "dense" (or all-linear) adapts BERT's bert.pooler.dense too (RoBERTa's
    classifier.dense is in modules_to_save: left whole). Loaded, classify read the pooler's .weight, which a
    LoRASPLinear has not: AttributeError."""
    from peft import LoraConfig, PeftModel, get_peft_model
    hf = random_params(HF["bert"][2](hf_config("bert", num_labels=3)), 5)
    hf.save_pretrained(tmp_path / "base")
    peft = get_peft_model(hf, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=targets))
    with torch.no_grad():
        for p in peft.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    peft.save_pretrained(tmp_path / "adapter")
    ref = PeftModel.from_pretrained(HF["bert"][2].from_pretrained(tmp_path / "base"), tmp_path / "adapter").eval()
    ours = load_adapter(M.load_pretrained(tmp_path / "base").add_head(3), tmp_path / "adapter", peft=True).eval()
    assert type(ours.bert.pooler.dense).__name__ == "LoRASPLinear"
    x, mask, types = inputs("bert")
    with torch.no_grad():
        want = ref(x, attention_mask=mask, token_type_ids=types).logits
        torch.testing.assert_close(ours.classify(x, mask, types), want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["roberta", "bert"])
def test_an_adapter_layer_inside_a_saved_head_is_refused_naming_it(kind, tmp_path):
    """--targets dense also matches RoBERTa's classifier.dense (BERT's bert.pooler.dense): a LoRA layer inside a module
    saved whole. Saved as it was, neither PEFT (KeyError) nor load_adapter (load_state_dict's unexpected keys) read the
    folder back; the save is refused naming the layer, and so is such a folder on load."""
    from checkpoint import load_safetensors, save_safetensors
    random_params(HF[kind][2](hf_config(kind, num_labels=3)), 5).save_pretrained(tmp_path / "base")
    inner = {"roberta": "classifier.dense", "bert": "bert.pooler.dense"}[kind]
    ours = apply_lorasp(M.load_pretrained(tmp_path / "base").add_head(3), ["query", "dense"], r=4, alpha=8)
    with pytest.raises(ValueError, match=rf"{inner}: an adapter layer inside modules_to_save's"):
        save_adapter(ours, tmp_path / "adapter", task_type="SEQ_CLS", modules_to_save=type(ours).head)
    assert not (tmp_path / "adapter").exists()
    outside = apply_lorasp(M.load_pretrained(tmp_path / "base").add_head(3), ["query"], r=4, alpha=8)
    save_adapter(outside, tmp_path / "adapter", task_type="SEQ_CLS", modules_to_save=type(outside).head)
    f = tmp_path / "adapter" / "adapter_model.safetensors"   # the same layout written by hand: refused on load too
    tensors = load_safetensors(f) | {f"base_model.model.{inner}.lora_{k}.weight": torch.zeros(s) for k, s in
                                     (("A", (4, 32)), ("B", (32, 4)))}
    save_safetensors(tensors, f)
    with pytest.raises(ValueError, match=rf"{inner}: an adapter layer inside modules_to_save's"):
        load_adapter(M.load_pretrained(tmp_path / "base").add_head(3), tmp_path / "adapter")

@pytest.mark.parametrize("config", [M.EncoderConfig(model_type="roberta", n_positions=16, pad_id=1, n_type=1),
                                    M.EncoderConfig(n_positions=16), M.GPT2Config(vocab_size=V, n_positions=16)],
                         ids=["roberta", "bert", "gpt2"])
def test_positions_is_the_longest_sequence_the_model_takes(config):
    """model.positions, which train.py and eval.py check --seq-len against before anything loads: as many tokens as
    the position embedding takes, and one more fails in the forward (RoBERTa's positions start after its pad_id, so
    it takes 16 - 1 - 1 = 14 of its 16). One more is a ValueError that says so, from every model (the encoders'
    was an IndexError from the embedding lookup: on CUDA a device-side assert that ends the process)."""
    model, room = M.build_model(config).eval(), M.positions(config)
    assert room == (14 if config.model_type == "roberta" else 16)
    with torch.no_grad():
        model(torch.full((1, room), 5))
        key = config.HF["n_positions"]  # config.json's: max_position_embeddings (encoders), n_positions (GPT-2)
        with pytest.raises(ValueError, match=rf"^{room + 1} tokens: past the {room} positions of this "
                                             rf"{config.model_type} \({key} {config.n_positions}\)$"):
            model(torch.full((1, room + 1), 5))
    assert M.positions(M.LlamaConfig()) is None                   # RoPE: no end


@pytest.mark.parametrize("kind", ["roberta", "bert"])
def test_config_without_pad_token_id_reads_transformers_defaults(kind, tmp_path):
    """A config.json with no pad_token_id (hand-written, or an old conversion): transformers' default is 1 for RoBERTa,
    0 for BERT, and RoBERTa's positions start after it (were counted from 0 + 1: hidden states off by 0.35)."""
    ref = random_params(HF[kind][1](hf_config(kind)), 0)
    ref.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "pad_token_id"}))
    ref = HF[kind][1].from_pretrained(tmp_path).eval()
    assert ref.config.pad_token_id == {"roberta": 1, "bert": 0}[kind]
    x, mask, types = inputs(kind)
    with torch.no_grad():
        got, want = M.load_pretrained(tmp_path)(x, mask), ref(x, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["roberta", "bert"])
@pytest.mark.parametrize("fields", [dict(hidden_act="gelu_new"), dict(hidden_act="relu"), dict(layer_norm_eps=0.3)])
def test_config_fields_as_transformers_reads_them(kind, fields, tmp_path):
    """hidden_act other than erf-GELU (was refused) and layer_norm_eps, as transformers computes them; written back."""
    ref = random_params(HF[kind][1](hf_config(kind, **fields)), 4)
    ref.save_pretrained(tmp_path)
    ours, (x, mask, types) = M.load_pretrained(tmp_path), inputs(kind)
    with torch.no_grad():
        got, want = ours(x, mask, types), ref(x, attention_mask=mask, token_type_ids=types).last_hidden_state
        torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-4, rtol=0)
        M.save_pretrained(ours, tmp_path / "back")
        back = HF[kind][1].from_pretrained(tmp_path / "back").eval()
        torch.testing.assert_close(back(x, mask, types).last_hidden_state[mask.bool()], got[mask.bool()], atol=1e-5,
                                   rtol=0)


def test_bert_saved_by_masked_lm_loads_with_a_fresh_pooler_as_transformers(tmp_path, capsys):
    """BertForMaskedLM saves no bert.pooler.* (many domain BERTs ship so): it was refused ("2 tensors missing");
    transformers' BertForSequenceClassification loads it with the pooler drawn N(0, initializer_range), bias 0, and
    says so. Ours now does the same, in one line where classify first reads that pooler (not at load: an adapter may
    bring its own, a span head drops it); with the pooler copied in, transformers' logits are ours. Half a
    pooler, or the pooler and another tensor missing, stays an error naming what is missing."""
    from safetensors.torch import load_file, save_file
    ref = random_params(transformers.BertForMaskedLM(hf_config("bert", initializer_range=0.05)), 6)
    ref.save_pretrained(tmp_path)
    assert not any(k.startswith("bert.pooler.") for k in load_file(tmp_path / "model.safetensors"))
    M.load_pretrained(tmp_path).add_qa_head().span_logits(*inputs("bert"))  # SQuAD's span head drops the pooler:
    assert capsys.readouterr().out == ""                                    # nothing said (it was, at load)
    torch.manual_seed(0)
    ours = M.load_pretrained(tmp_path).add_head(3)
    assert capsys.readouterr().out == ""                                    # said where the pooler is read, once
    ours.classify(*inputs("bert"))
    ours.classify(*inputs("bert"))
    note = capsys.readouterr().out
    assert note.count("\n") == 1 and note.startswith(f"note: {tmp_path}") and "bert.pooler.dense" in note, note
    dense = ours.bert.pooler.dense
    assert not dense.bias.any() and 0.04 < dense.weight.std() < 0.06 and abs(dense.weight.mean()) < 0.01
    assert dense.weight.dtype == torch.float32 and dense.weight.requires_grad
    assert 0.04 < ours.classifier.weight.std() < 0.06  # transformers' classifier: initializer_range too
    hf = transformers.BertForSequenceClassification.from_pretrained(tmp_path, num_labels=3).eval()
    with torch.no_grad():
        for name in ("bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"):
            hf.get_parameter(name).copy_(ours.get_parameter(name))
    x, mask, types = inputs("bert")
    with torch.no_grad():
        torch.testing.assert_close(ours.classify(x, mask, types),
                                   hf(x, attention_mask=mask, token_type_ids=types).logits, atol=1e-4, rtol=0)
    state = load_file(tmp_path / "model.safetensors")
    save_file({**state, "bert.pooler.dense.weight": torch.zeros(32, 32)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"1 tensors missing from the checkpoint: bert\.pooler\.dense\.bias$"):
        M.load_pretrained(tmp_path)
    del state["bert.encoder.layer.1.output.dense.bias"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"1 tensors missing from the checkpoint: bert\.encoder\.layer\.1\.output\."
                                         r"dense\.bias$"):
        M.load_pretrained(tmp_path)
    assert "note" not in capsys.readouterr().out  # (nothing said about a checkpoint that does not load)


def test_roberta_saved_by_masked_lm_classifies_as_transformers(tmp_path, capsys):
    """RobertaForMaskedLM: lm_head.* left over, no pooler (RoBERTa's classifier reads none): it loads for GLUE
    without a note, and with the fresh head copied in gives RobertaForSequenceClassification's logits."""
    random_params(transformers.RobertaForMaskedLM(hf_config("roberta")), 7).save_pretrained(tmp_path)
    ours = M.load_pretrained(tmp_path).add_head(2)
    assert capsys.readouterr().out == ""
    hf = transformers.RobertaForSequenceClassification.from_pretrained(tmp_path, num_labels=2).eval()
    with torch.no_grad():
        for name, p in ours.classifier.named_parameters():
            hf.classifier.get_parameter(name).copy_(p)
    x, mask, types = inputs("roberta")
    with torch.no_grad():
        torch.testing.assert_close(ours.classify(x, mask), hf(x, attention_mask=mask).logits, atol=1e-4, rtol=0)
