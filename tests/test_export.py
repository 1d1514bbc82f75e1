"""export.py: an adapter merged into its base and written as a Hugging Face checkpoint. The oracles: transformers'
from_pretrained(DIR) (a test-only oracle) gives our merged model's logits and PEFT's merge_and_unload() logits on the
same base and adapter (fp32: to 1e-5), with the file in transformers' own layout (names, shapes, GPT-2's Conv1D
transposed, a tied embedding stored once); load_pretrained(DIR) reads it back; shards hold the same tensors; the real
SmolLM2 GGUF exports to a folder transformers loads. Bad input is one line, and nothing half-written is left."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
import transformers
from gguf import GGUFReader
from peft import PeftModel

import data
import export
import train
from checkpoint import load_safetensors, read_safetensors_header
from fetch_real import path
from evalcli import load_model
from fixtures import demo_tokenizer, flags, gpt2_folder, random_params, tiny  # noqa: F401  (tiny: a fixture)
import model as M
import tokenizer
from lorasp import apply_lorasp, merge_lorasp, save_adapter

V, T = 96, 9
LLAMA = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=64, max_position_embeddings=64)
CAUSAL = {  # kind: (transformers' model, its config, the targets)
    "llama": (transformers.LlamaForCausalLM, transformers.LlamaConfig(**LLAMA), ["q_proj", "v_proj", "down_proj"]),
    "tied": (transformers.LlamaForCausalLM, transformers.LlamaConfig(**LLAMA, tie_word_embeddings=True),
             ["q_proj", "k_proj", "gate_proj"]),
    "gpt2": (transformers.GPT2LMHeadModel, transformers.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4,
                                                                   n_positions=32), ["c_attn", "c_proj", "c_fc"])}
ENCODER = {"roberta": (transformers.RobertaConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2,
                                                  num_attention_heads=4, intermediate_size=64,
                                                  max_position_embeddings=40, type_vocab_size=1, pad_token_id=1),
                       transformers.RobertaModel, transformers.RobertaForSequenceClassification),
           "bert": (transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                            intermediate_size=64, max_position_embeddings=40),
                    transformers.BertModel, transformers.BertForSequenceClassification),
           "gpt2": (transformers.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                            eos_token_id=V - 1, bos_token_id=V - 1),
                    transformers.GPT2LMHeadModel, transformers.GPT2ForSequenceClassification)}


def trained(model, targets, seed=1, **kw):
    """model with a LoRA-SP adapter on targets whose trainable entries (and any head) are random, as if trained."""
    model = apply_lorasp(model, targets, r=4, alpha=8, keep=0.5, **kw)
    for name in getattr(type(model), "head", ()) if hasattr(model, "classifier") else ():
        model.get_submodule(name).requires_grad_(True)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def run(*argv):
    """export.py's main on argv; a refusal's message (SystemExit), else None."""
    try:
        export.main([str(a) for a in argv])
    except SystemExit as e:
        return str(e.code)
    return None


@pytest.fixture
def causal(request, tmp_path):
    """(base dir, adapter dir, our merged model, PEFT's merged model) for CAUSAL[kind]."""
    cls, cfg, targets = CAUSAL[request.param]
    random_params(cls(cfg), 0).save_pretrained(tmp_path / "base")
    ours = trained(M.load_pretrained(tmp_path / "base", dtype=torch.float32), targets)
    save_adapter(ours, tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "base"))
    peft = PeftModel.from_pretrained(cls.from_pretrained(tmp_path / "base", dtype=torch.float32),
                                     str(tmp_path / "adapter")).merge_and_unload().eval()
    return tmp_path / "base", tmp_path / "adapter", merge_lorasp(ours), peft


def tensors(directory):
    """Every tensor in a checkpoint folder's safetensors files, by name."""
    return {k: t for f in sorted(os.listdir(directory)) if f.endswith(".safetensors")
            for k, t in load_safetensors(os.path.join(directory, f)).items()}


@pytest.mark.parametrize("causal", list(CAUSAL), indirect=True)
def test_exported_causal_lm_gives_our_and_peft_merged_logits(causal, tmp_path):
    """transformers' AutoModelForCausalLM on DIR = our merged model = PEFT's merge_and_unload (fp32, 1e-5); the file
    holds PEFT's merged state dict key for key in its own layout (GPT-2's Conv1D (in, out); a tied embedding once,
    no lm_head.weight), and load_pretrained reads it back to the same logits."""
    base, adapter, ours, peft = causal
    assert run("--model", base, "--adapter", adapter, "--out", tmp_path / "out", "--dtype", "fp32") is None
    x = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(0))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        want = ours(x)
        assert (want - M.load_pretrained(base, dtype=torch.float32)(x)).abs().max() > 1e-2  # the adapter matters
        torch.testing.assert_close(peft(x).logits, want, atol=1e-5, rtol=0)
        torch.testing.assert_close(hf(x).logits, want, atol=1e-5, rtol=0)
        torch.testing.assert_close(M.load_pretrained(tmp_path / "out")(x), want, atol=1e-6, rtol=0)
    got, ref = tensors(tmp_path / "out"), {k: v for k, v in peft.state_dict().items() if not k.endswith(".attn.bias")}
    if peft.config.tie_word_embeddings:
        ref.pop("lm_head.weight")                                # transformers writes a tied pair once
    assert sorted(got) == sorted(ref)
    for k, t in ref.items():
        torch.testing.assert_close(got[k], t, atol=1e-6, rtol=0, msg=k)  # shape too: Conv1D's (in, out)
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["torch_dtype"] == "float32" and cfg["architectures"] == peft.config.architectures


@pytest.mark.parametrize("causal", ["llama"], indirect=True)
def test_shards_hold_the_same_tensors_as_one_file(causal, tmp_path):
    """--shard-size 20KB: model-0000i-of-0000n.safetensors with transformers' index (total_size, weight_map), the same
    tensors as one model.safetensors, and transformers loads it."""
    base, adapter, ours, _ = causal
    assert run("--model", base, "--adapter", adapter, "--out", tmp_path / "one", "--dtype", "fp32") is None
    assert run("--model", base, "--adapter", adapter, "--out", tmp_path / "many", "--dtype", "fp32",
               "--shard-size", "20KB") is None
    assert sorted(os.listdir(tmp_path / "one")) == ["config.json", "generation_config.json", "lorasp_merged.json",
                                                     "model.safetensors"]
    assert (tmp_path / "one" / "generation_config.json").read_text() == (base / "generation_config.json").read_text()
    index = json.loads((tmp_path / "many" / "model.safetensors.index.json").read_text())
    shards = sorted(f for f in os.listdir(tmp_path / "many") if f.endswith(".safetensors"))
    n = len(shards)
    assert n > 2 and shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    for f in shards:
        header = read_safetensors_header(tmp_path / "many" / f)[0]
        assert sum(e["data_offsets"][1] - e["data_offsets"][0] for e in header.values()) <= 20_000 or len(header) == 1
    one, many = tensors(tmp_path / "one"), tensors(tmp_path / "many")
    assert sorted(index["weight_map"]) == sorted(one) and set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in one.values())
    assert all(torch.equal(many[k], t) for k, t in one.items()) and sorted(many) == sorted(one)
    x = torch.randint(0, V, (1, T))
    with torch.no_grad():
        torch.testing.assert_close(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "many")(x).logits,
                                   ours(x), atol=1e-5, rtol=0)



def test_shard_size_reads_as_transformers_and_a_lowercase_b_is_refused_with_both_readings(capsys):
    """--shard-size: transformers' convert_file_size_to_int (its max_shard_size) is the reference. "2Gb" was read as
    2 GB, where transformers reads a lowercase b after K/M/G as bits (2 GB / 8): the spelling is refused, both readings
    said. GB/MB/KB (any case of the prefix), KiB/MiB/GiB (any case), spaces and plain bytes read as before."""
    from transformers.utils.hub import convert_file_size_to_int as theirs
    for text in ("2GB", "2gB", "2 GB", "500MB", "5KB", "2GiB", "2gib", "3mib", "7KiB"):
        assert export.shard_size(text) == theirs(text), text
    assert export.shard_size("2000000000") == theirs(2000000000) and export.shard_size("1.5GB") == 1_500_000_000
    assert export.shard_size("2000b") == export.shard_size("2000B") == 2000  # (no prefix: transformers refuses it)
    for text in ("2Gb", "2gb", "2 Gb", "500Mb", "5kb", "5Kb"):
        with pytest.raises(export.argparse.ArgumentTypeError) as e:
            export.shard_size(text)
        bits, nbytes = theirs(text), theirs(text.upper())      # transformers' reading, and the bytes one
        assert f"{bits:,} bytes" in str(e.value) and f"{nbytes:,} bytes" in str(e.value) and bits * 8 == nbytes, e.value
    with pytest.raises(SystemExit):                            # through export.py's own flag parsing
        export.main(["--model", "m", "--adapter", "a", "--out", "o", "--shard-size", "2Gb"])
    assert "--shard-size: '2Gb': a lowercase b is a bit in transformers' max_shard_size (250,000,000 bytes) and a " \
        "byte to many people (2,000,000,000 bytes); write 2GB" in capsys.readouterr().err

@pytest.mark.parametrize("kind", list(ENCODER))
def test_glue_adapter_exports_as_sequence_classification_with_its_labels(kind, tmp_path, capsys):
    """A GLUE adapter (query/value + the head in modules_to_save) on a bare RobertaModel/BertModel (GPT-2: c_attn, on
    GPT2LMHeadModel): DIR is the *ForSequenceClassification checkpoint with MNLI's id2label (GPT-2: and a
    pad_token_id); transformers' AutoModelForSequenceClassification on it gives our merged classifier's logits and
    PEFT's merge_and_unload's; load_pretrained reads it back."""
    cfg, bare, cls = ENCODER[kind]
    random_params(bare(cfg), 0).save_pretrained(tmp_path / "base")
    targets = ["c_attn"] if kind == "gpt2" else ["query", "value"]
    ours = trained(M.load_pretrained(tmp_path / "base").add_head(3), targets)
    save_adapter(ours, tmp_path / "adapter", task_type="SEQ_CLS", modules_to_save=type(ours).head,
                 base=dict(task="glue/mnli"))
    pad = dict(pad_token_id=V - 1) if kind == "gpt2" else {}  # (export.py sets GPT-2's, said in a note)
    peft = PeftModel.from_pretrained(cls.from_pretrained(tmp_path / "base", num_labels=3, **pad),
                                     str(tmp_path / "adapter")).merge_and_unload().eval()
    assert run("--model", tmp_path / "base", "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
    err = capsys.readouterr().err
    assert "warning" not in err and "changes lm_head" not in err, err   # (was: "trained on glue/mnli, not None"; a
    out = json.loads((tmp_path / "out" / "config.json").read_text())   # RoBERTa's or BERT's: "changes lm_head ...")
    assert out.get("tie_word_embeddings", True) is True               # (written false, with that note)
    assert out["architectures"] == [cls.__name__] and out["torch_dtype"] == "float32"
    assert out["id2label"] == {"0": "entailment", "1": "neutral", "2": "contradiction"}
    assert out["label2id"] == {"entailment": 0, "neutral": 1, "contradiction": 2}
    g = torch.Generator().manual_seed(0)
    x, mask = torch.randint(3, V - 1, (2, T), generator=g), torch.ones(2, T, dtype=torch.long)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").eval()
    assert hf.config.id2label == {0: "entailment", 1: "neutral", 2: "contradiction"}
    with torch.no_grad():
        want = merge_lorasp(ours).classify(x, mask)
        torch.testing.assert_close(peft(x, attention_mask=mask).logits, want, atol=1e-5, rtol=0)
        torch.testing.assert_close(hf(x, attention_mask=mask).logits, want, atol=1e-5, rtol=0)
        torch.testing.assert_close(M.load_pretrained(tmp_path / "out").classify(x, mask), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("pad", ["<pad>", "<|endoftext|>"])
def test_a_gpt2_classifier_exports_the_pad_id_its_tokenizer_names(tmp_path, capsys, pad):
    """A GPT-2 whose tokenizer_config.json names pad_token <pad> (added: id 300; <|endoftext|> is 0) and whose
    config.json names none. transformers' GPT2ForSequenceClassification reads each text's last token that is not
    config.json's pad_token_id: export.py wrote the EOS id (0) there, so on a batch transformers' tokenizer padded
    with <pad> it read a pad for the shorter text. Now the tokenizer's pad id: the exported classifier gives ours, on
    AutoTokenizer's batches of the run's ids (it added none of the run's marks). A tokenizer whose pad is
    <|endoftext|>, the run's closing mark (read by transformers as a pad: the token before it scored, said in a
    warning), gets a row of its own instead (301), named in the tokenizer files."""
    base = tmp_path / "base"
    base.mkdir()
    gpt2_folder(base)
    if pad != "<pad>":
        config = json.loads((base / "tokenizer_config.json").read_text())
        (base / "tokenizer_config.json").write_text(json.dumps(config | {"pad_token": pad}))
    random_params(transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=301, n_embd=32, n_layer=2, n_head=4, n_positions=32, eos_token_id=0, bos_token_id=0)), 0
    ).save_pretrained(base)
    ours = trained(M.load_pretrained(base).add_head(3), ["c_attn"])
    save_adapter(ours, tmp_path / "adapter", task_type="SEQ_CLS", modules_to_save=type(ours).head,
                 base=dict(task="glue/mnli"))
    assert run("--model", base, "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
    want = 300 if pad == "<pad>" else 301
    assert json.loads((tmp_path / "out" / "config.json").read_text())["pad_token_id"] == want
    err = capsys.readouterr().err
    assert "pad_token_id = eos_token_id" not in err and "warning" not in err
    scored_as_the_run(tmp_path / "out", tokenizer.load_tokenizer(base), merge_lorasp(ours), want)


PAIRS = [("a fine film", "it is"), ("dull", "no"), (" xé <|endoftext|>y", "z  w!")]  # (texts, pairs: the run's inputs)
SINGLES = ["a fine film, truly", "dull", " déjà vu <|endoftext|>"]


def scored_as_the_run(out, tok, ours, pad):
    """transformers' AutoTokenizer and AutoModelForSequenceClassification on out, against the run: lorasp's ids (tok,
    the base's: data.encode_pair's marks) for single texts and pairs, padded with pad on the right (its default, as
    out says), and our merged classifier's logits of each text alone (fp32: to 1e-5); left padding as well, with the
    position ids of each text from 0 (GPT-2 counts positions from the padding, as transformers' left padding leaves
    them: other logits). Returns the largest difference seen."""
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert hf.config.pad_token_id == pad and hf_tok.pad_token_id == pad and hf_tok.padding_side == "right"
    worst = 0.0
    for texts in (SINGLES, PAIRS):
        a, b = zip(*texts) if texts is PAIRS else (texts, None)
        rows = [tok.encode_pair(x, y)[0] for x, y in zip(a, b or [None] * len(a))]
        assert all(r[-1] == tok.eos_id and r[0] == tok.eos_id for r in rows) and all(pad not in r for r in rows)
        with torch.no_grad():
            want = torch.cat([ours.classify(torch.tensor([r])) for r in rows])
            for side in ("right", "left"):
                hf_tok.padding_side = side
                batch = hf_tok(list(a), list(b) if b else None, padding=True, return_tensors="pt")
                n = batch.input_ids.shape[1]
                assert batch.input_ids.tolist() == [[pad] * (n - len(r)) * (side == "left") + r + [pad] * (
                    n - len(r)) * (side == "right") for r in rows]
                assert batch.attention_mask.tolist() == (batch.input_ids != pad).long().tolist()
                positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
                got = hf(**batch, position_ids=positions).logits if side == "left" else hf(**batch).logits
                torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
                worst = max(worst, (got - want).abs().max().item())
            assert (hf(**batch).logits - want).abs().max() > 1e-3  # left padding, positions counted from the pads
            for r, w in zip(rows, want):                               # one text at a time, no mask
                torch.testing.assert_close(hf(torch.tensor([r])).logits[0], w, atol=1e-5, rtol=0)
    return worst


@pytest.mark.parametrize("layout", ["vocab.json+merges.txt", "encoder.json+vocab.bpe", "tokenizer.json"])
def test_a_gpt2_classifier_export_is_scored_by_transformers_as_the_run(tmp_path, capsys, layout):
    """The real GPT-2 vocabulary (no pad token), as OpenAI's files, their transformers names, or the tokenizer.json
    transformers saves of them: lorasp's classifier reads <|endoftext|> A <|endoftext|> B <|endoftext|> at the closing
    mark. With pad_token_id = eos_token_id, transformers' GPT2ForSequenceClassification read the token before the
    closing mark (0.01+ off here); its tokenizer on the folder added no marks (encoder.json + vocab.bpe: it had no
    files to read at all). Now the export adds an embedding row as pad_token_id, an id no input holds, and writes a
    tokenizer.json whose TemplateProcessing adds the marks, the pad an added token of that id: AutoTokenizer's batch
    (single texts and pairs) holds the run's ids and AutoModelForSequenceClassification gives the run's logits."""
    base = tmp_path / "base"
    base.mkdir()
    random_params(transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=50257, n_embd=32, n_layer=2, n_head=4, n_positions=32)), 0).save_pretrained(base)
    names = ("encoder.json", "vocab.bpe") if layout == "encoder.json+vocab.bpe" else ("vocab.json", "merges.txt")
    shutil.copy(path("gpt2", "encoder.json"), base / names[0])
    shutil.copy(path("gpt2", "vocab.bpe"), base / names[1])
    if layout == "tokenizer.json":                               # (transformers' own save of GPT2Tokenizer)
        transformers.AutoTokenizer.from_pretrained(base).save_pretrained(base)
        assert (base / "tokenizer.json").exists()
    ours = trained(M.load_pretrained(base).add_head(2), ["c_attn"])
    save_adapter(ours, tmp_path / "adapter", task_type="SEQ_CLS", modules_to_save=type(ours).head,
                 base=dict(task="glue/sst2"))
    assert run("--model", base, "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
    assert "warning" not in capsys.readouterr().err
    merged = merge_lorasp(ours)
    worst = scored_as_the_run(tmp_path / "out", tokenizer.load_tokenizer(base), merged, 50257)
    print(f"{layout}: transformers' logits off the run's by at most {worst:.2e}")
    tok = tokenizer.load_tokenizer(tmp_path / "out")              # lorasp's loader of the folder
    run_tok = tokenizer.load_tokenizer(base)
    assert [tok.encode_pair(a, b)[0] for a, b in PAIRS] == [run_tok.encode_pair(a, b)[0] for a, b in PAIRS]
    first = torch.tensor([tok.encode_pair(*PAIRS[0])[0]])
    torch.testing.assert_close(M.load_pretrained(tmp_path / "out").classify(first), merged.classify(first),
                               atol=1e-6, rtol=0)


def test_a_gpt2_classifier_on_a_sentencepiece_tokenizer_says_transformers_adds_no_marks(tmp_path, capsys):
    """A GPT-2 whose tokenizer is a sentencepiece tokenizer.model (no tokenizer.json, and nothing lorasp writes as
    one): the folder's tokenizer cannot add the run's marks (<s> A </s> B </s> here), which a warning says, naming
    eval.py's command; the pad is a row of its own all the same."""
    base = tmp_path / "base"
    base.mkdir()
    tok = demo_tokenizer(base, 300)
    random_params(transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=tok.vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=tok.bos_id,
        eos_token_id=tok.eos_id)), 0).save_pretrained(base)
    ours = trained(M.load_pretrained(base).add_head(2), ["c_attn"])
    save_adapter(ours, tmp_path / "adapter", task_type="SEQ_CLS", modules_to_save=type(ours).head,
                 base=dict(task="glue/sst2"))
    assert run("--model", base, "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
    err = capsys.readouterr().err
    assert "warning: transformers' tokenizer of this folder adds none of the marks lorasp's classifier read" in err
    assert "python eval.py --task glue/TASK --model OUT" in err and not (tmp_path / "out" / "tokenizer.json").exists()
    assert json.loads((tmp_path / "out" / "config.json").read_text())["pad_token_id"] == tok.vocab_size


def test_real_smollm2_gguf_exports_to_a_folder_transformers_loads(tmp_path, capsys):
    """The real SmolLM2-135M GGUF (Q4_1/Q8_0 blocks, GQA, tied) with a LoRA-SP adapter on q/v: DIR in bf16 loads in
    transformers (LlamaForCausalLM, tied, the GGUF's BOS and EOS ids as transformers reads them from it) to our merged
    model's logits, cast to bf16 as written, on the ids AutoTokenizer gives of a chat text: its tokenizer is written
    (there were no tokenizer files, and a note said so), lorasp's ids (tests/test_export_tokenizer.py)."""
    gguf = path("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    ours = trained(M.load_pretrained(gguf, dtype=torch.float32), ["q_proj", "v_proj"], seed=2)
    for m in ours.modules():
        if hasattr(m, "B_train"):
            m.B_train.data *= 0.1                             # an update the size of a trained one
    save_adapter(ours, tmp_path / "adapter", base_model_name_or_path=gguf)
    assert run("--model", gguf, "--adapter", tmp_path / "adapter", "--out", tmp_path / "out", "--dtype",
               "bf16") is None
    assert "no tokenizer files" not in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "out")) == ["chat_template.jinja", "config.json", "lorasp_merged.json",
                                                    "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    own = transformers.AutoConfig.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())  # (written: LlamaConfig's defaults, 1 and 2,
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (own.bos_token_id, own.eos_token_id)  # hold for this one)
    assert hf.config.tie_word_embeddings and hf.lm_head.weight is hf.model.embed_tokens.weight
    text = "<|im_start|>user\nWhat is 2+2? Say it in words.<|im_end|>\n<|im_start|>assistant\nFour.<|im_end|>"
    x = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")(text, return_tensors="pt").input_ids
    assert x[0].tolist() == tokenizer.load_tokenizer(gguf).encode(text)
    with torch.no_grad():
        want = merge_lorasp(ours).to(torch.bfloat16).float()(x)  # the weights as written, computed in fp32
        torch.testing.assert_close(hf(x).logits, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("causal", ["llama"], indirect=True)
def test_bad_input_is_one_line_and_writes_nothing(causal, tmp_path, capsys, monkeypatch):
    """A missing adapter, another base's adapter (a shape mismatch), an existing non-empty --out, an unknown --dtype:
    one line each naming what is wrong; no --out (nor --out.tmp) is left, an existing one is untouched."""
    base, adapter, _, _ = causal
    out = tmp_path / "out"
    other = tmp_path / "other"
    wide = transformers.LlamaConfig(**LLAMA | dict(hidden_size=48, intermediate_size=96))
    random_params(transformers.LlamaForCausalLM(wide), 0).save_pretrained(other)
    cases = [(("--adapter", tmp_path / "nowhere"), "no such folder"),
             (("--adapter", adapter, "--model", other), f"--adapter {adapter} does not fit --model {other}: "
                                                         "model.layers.0.mlp.down_proj"),
             (("--adapter", other), "not an adapter folder")]
    for argv, said in cases:
        msg = run("--model", base, "--out", out, *argv)
        assert msg and msg.startswith("error: ") and said in msg and "\n" not in msg, msg
        assert not os.path.exists(out) and not os.path.exists(f"{out}.tmp")
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    msg = run("--model", base, "--adapter", adapter, "--out", out)
    assert msg.startswith("error: --out") and "--force" in msg and "\n" not in msg
    assert os.listdir(out) == ["keep.txt"]
    assert run("--model", base, "--adapter", adapter, "--out", out, "--dtype", "fp8") == "2"
    err = capsys.readouterr().err.strip().splitlines()
    assert "argument --dtype: invalid choice: 'fp8'" in err[-1]
    assert run("--model", base, "--adapter", adapter, "--out", out, "--shard-size", "5 parsecs") == "2"
    assert "argument --shard-size" in capsys.readouterr().err.strip().splitlines()[-1]
    assert os.listdir(out) == ["keep.txt"]
    monkeypatch.chdir(tmp_path)                                # (where a ./~/merged would land)
    assert run("--model", base, "--adapter", adapter, "--out=~/merged") == "2"   # no shell expands ~ after '='
    assert "the shell did not expand '~'" in capsys.readouterr().err and not os.path.exists("~")
    msg = run("--model", base, "--adapter", adapter, "--out", base, "--force")  # would delete the base it reads
    assert msg.startswith("error: --out") and "--model" in msg and os.path.isfile(base / "config.json")
    assert run("--model", base, "--adapter", adapter, "--out", out, "--force") is None
    assert sorted(os.listdir(out)) == ["config.json", "generation_config.json", "lorasp_merged.json",  # replaced whole
                                       "model.safetensors"]


@pytest.mark.parametrize("causal", ["llama"], indirect=True)
def test_an_interrupted_export_leaves_no_folder_that_loads(causal, tmp_path, monkeypatch):
    """The writer fails on its second shard (a full disk, Ctrl-C): no --out that load_pretrained would take (none at
    all, nor --out.tmp); with --force over an earlier export, that one stays whole."""
    base, adapter, ours, _ = causal
    calls, original = [0], export.safetensors_header                  # (called as each shard is begun)

    def failing(*a, **k):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return original(*a, **k)
    monkeypatch.setattr(export, "safetensors_header", failing)
    with pytest.raises(KeyboardInterrupt):
        run("--model", base, "--adapter", adapter, "--out", tmp_path / "out", "--shard-size", "20KB")
    assert not os.path.exists(tmp_path / "out") and not os.path.exists(tmp_path / "out.tmp")
    with pytest.raises(FileNotFoundError):
        M.load_pretrained(tmp_path / "out")
    monkeypatch.setattr(export, "safetensors_header", original)
    assert run("--model", base, "--adapter", adapter, "--out", tmp_path / "out", "--dtype", "fp32") is None
    monkeypatch.setattr(export, "safetensors_header", failing)
    calls[0] = 0
    with pytest.raises(KeyboardInterrupt):
        run("--model", base, "--adapter", adapter, "--out", tmp_path / "out", "--force", "--shard-size", "20KB")
    x = torch.randint(0, V, (1, T))
    with torch.no_grad():
        torch.testing.assert_close(M.load_pretrained(tmp_path / "out")(x), ours(x), atol=1e-6, rtol=0)


def test_a_train_py_nf4_run_exports_its_eval_model_with_the_tokenizer(tiny, tmp_path, capsys):  # noqa: F811
    """train.py --quant nf4 on the tiny Llama, its run folder given as --adapter: merged into the dequantized NF4
    weights it trained on (said in a note), the layers it did not adapt dequantized too, so DIR's logits are eval.py's
    model's (NF4 base + adapter), not the original base's plus the update; the tokenizer is copied and reads text as
    the base's does."""
    train.main(flags(tiny, tmp_path / "run", "--quant", "nf4", "--targets", "q_proj,v_proj"))  # the others: NF4 too
    assert run("--model", tiny[0], "--adapter", tmp_path / "run", "--out", tmp_path / "out") is None
    err = capsys.readouterr().err
    assert "trained on the NF4-quantized base: merged into those dequantized weights" in err
    assert "tokenizer.model" in os.listdir(tmp_path / "out")
    text = "Below is an instruction that describes a task."
    assert tokenizer.load_tokenizer(str(tmp_path / "out")).encode(text) == tokenizer.load_tokenizer(
        tiny[0]).encode(text)
    nf4, _ = load_model(tiny[0], str(tmp_path / "run" / "adapter"), "nf4", torch.float32)
    x = torch.tensor([tokenizer.load_tokenizer(tiny[0]).encode(text)])
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        want = nf4(x)
        torch.testing.assert_close(hf(x).logits, want, atol=1e-5, rtol=0)
        plain = merge_lorasp(load_model(tiny[0], str(tmp_path / "run" / "adapter"), "none", torch.float32)[0])(x)
        assert (plain - want).abs().max() > 1e-3                # the original weights would be another model


def test_an_adapted_lm_head_of_a_tied_model_is_written_untied(tmp_path, capsys):
    """lm_head in the targets of a tied Llama (SmolLM2-like): merged, lm_head is no longer the embedding; DIR says
    tie_word_embeddings false and holds both, so transformers gives our merged logits (tied, it would read the
    embedding for the head and lose the update)."""
    cls, cfg, _ = CAUSAL["tied"]
    random_params(cls(cfg), 0).save_pretrained(tmp_path / "base")
    ours = trained(M.load_pretrained(tmp_path / "base"), ["q_proj", "lm_head"])
    save_adapter(ours, tmp_path / "adapter")
    assert run("--model", tmp_path / "base", "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
    assert "written untied" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "config.json").read_text())["tie_word_embeddings"] is False
    assert {"lm_head.weight", "model.embed_tokens.weight"} <= set(tensors(tmp_path / "out"))
    x = torch.randint(0, V, (2, T))
    with torch.no_grad():
        want = merge_lorasp(ours)(x)
        torch.testing.assert_close(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")(x).logits,
                                   want, atol=1e-5, rtol=0)
        torch.testing.assert_close(M.load_pretrained(tmp_path / "out")(x), want, atol=1e-6, rtol=0)


def test_t5_adapter_exports_to_t5_for_conditional_generation(tmp_path):
    """A LoRA-SP adapter on T5 v1.0 (tied, q/v and the feed-forward's wo): transformers' T5ForConditionalGeneration on
    DIR gives our merged model's logits and PEFT's merge_and_unload's."""
    cfg = transformers.T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                feed_forward_proj="relu", decoder_start_token_id=0)
    random_params(transformers.T5ForConditionalGeneration(cfg), 0).save_pretrained(tmp_path / "base")
    ours = trained(M.load_pretrained(tmp_path / "base"), ["q", "v", "wo"])
    save_adapter(ours, tmp_path / "adapter", task_type="SEQ_2_SEQ_LM")
    peft = PeftModel.from_pretrained(transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "base"),
                                     str(tmp_path / "adapter")).merge_and_unload().eval()
    assert run("--model", tmp_path / "base", "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out").eval()
    x, y = torch.randint(2, V, (2, T)), torch.randint(2, V, (2, 5))
    with torch.no_grad():
        want = merge_lorasp(ours)(x, y)
        torch.testing.assert_close(peft(input_ids=x, decoder_input_ids=y).logits, want, atol=1e-5, rtol=0)
        torch.testing.assert_close(hf(input_ids=x, decoder_input_ids=y).logits, want, atol=1e-5, rtol=0)


def test_a_method_full_runs_model_with_a_tokenizer_model_alone_gets_the_tokenizer_config_too(tiny, tmp_path):
    """train.py --method full saves OUT/model, a checkpoint of its own, with the base's tokenizer files: a
    tokenizer.model alone (the tiny base, Meta's layout, the demo's model) got no tokenizer_config.json, so
    transformers' AutoTokenizer on OUT/model added no BOS (ids [149, ...] against ours [1, 149, ...]). It gets the one
    export.py writes (tokenizer.llama_tokenizer_config)."""
    train.main(flags(tiny, tmp_path / "out", "--max-steps", "1", "--method", "full"))
    assert not os.path.exists(os.path.join(tiny[0], "tokenizer_config.json"))  # (the base has none to copy)
    tok, hf = tokenizer.load_tokenizer(tiny[0]), transformers.AutoTokenizer.from_pretrained(tmp_path / "out" / "model")
    for text in ("How many words are in owl fox?", "cat dog 3 7"):
        assert hf(text)["input_ids"] == tok.encode(text) and tok.encode(text)[0] == tok.bos_id, text


def test_a_t5_base_with_a_tokenizer_model_alone_gets_no_llama_tokenizer_config(tmp_path):
    """A T5 base whose sentencepiece model is named tokenizer.model (not spiece.model), nothing else of its tokenizer:
    DIR got a tokenizer_config.json naming LlamaTokenizer (BOS "<s>" added, which T5's vocabulary lacks: transformers
    read a T5's texts with another tokenizer's rules, no error). That file is written for the Llama-family models whose
    transformers tokenizer is LlamaTokenizer only; a T5 gets none."""
    from fixtures import t5_sentencepiece
    (tmp_path / "base").mkdir()
    t5_sentencepiece(tmp_path / "base", ["The quick brown fox jumps over the lazy dog.", "hello world 123"] * 20, 36)
    os.rename(tmp_path / "base" / "spiece.model", tmp_path / "base" / "tokenizer.model")
    cfg = transformers.T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                feed_forward_proj="relu", decoder_start_token_id=0)
    random_params(transformers.T5ForConditionalGeneration(cfg), 0).save_pretrained(tmp_path / "base")
    os.remove(tmp_path / "base" / "generation_config.json")   # (with it, as without: none)
    save_adapter(trained(M.load_pretrained(tmp_path / "base"), ["q", "v"]), tmp_path / "adapter",
                 task_type="SEQ_2_SEQ_LM")
    assert run("--model", tmp_path / "base", "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
    assert "tokenizer.model" in os.listdir(tmp_path / "out")
    assert "tokenizer_config.json" not in os.listdir(tmp_path / "out")


def test_meta_layout_base_gets_a_llama_config_json(tmp_path, capsys):
    """A base in Meta's layout (params.json + two consolidated.NN.pth shards): DIR's config.json is built from the
    config we loaded (LlamaForCausalLM), and transformers on DIR gives our merged model's logits."""
    from test_model import write_meta
    c = transformers.LlamaConfig(vocab_size=V, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=5000.0)
    (tmp_path / "base").mkdir()
    write_meta(random_params(transformers.LlamaForCausalLM(c), 0), tmp_path / "base", llama3=True)  # (vocab_size in
    # params.json: Llama 2's -1 is read from its tokenizer.model, which this folder lacks)
    ours = trained(M.load_pretrained(tmp_path / "base"), ["q_proj", "k_proj", "up_proj"])
    save_adapter(ours, tmp_path / "adapter")
    assert run("--model", tmp_path / "base", "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_key_value_heads"] == 2
    x = torch.randint(0, V, (2, T))
    with torch.no_grad():
        torch.testing.assert_close(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")(x).logits,
                                   merge_lorasp(ours)(x), atol=1e-5, rtol=0)


def test_a_peft_classifier_adapter_keeps_its_base_heads_labels(tmp_path):
    """PEFT's own SEQ_CLS adapter (get_peft_model on a BertForSequenceClassification whose config.json names its
    classes): DIR keeps the base's id2label (PEFT's head keeps the base's rows, as run_glue.py trains it) and gives
    PEFT's merge_and_unload logits in transformers."""
    from peft import LoraConfig, get_peft_model
    cfg = ENCODER["bert"][0].to_dict() | dict(id2label={0: "no", 1: "maybe", 2: "yes"},
                                              label2id={"no": 0, "maybe": 1, "yes": 2})
    cls = transformers.BertForSequenceClassification
    random_params(cls(transformers.BertConfig(**cfg)), 0).save_pretrained(tmp_path / "base")
    peft = get_peft_model(cls.from_pretrained(tmp_path / "base"), LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8,
                                                                             target_modules=["query", "value"]))
    with torch.no_grad():
        for p in peft.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    peft.save_pretrained(tmp_path / "adapter")
    assert run("--model", tmp_path / "base", "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").eval()
    assert hf.config.id2label == {0: "no", 1: "maybe", 2: "yes"}
    x, mask = torch.randint(3, V, (2, T)), torch.ones(2, T, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(hf(x, attention_mask=mask).logits,
                                   peft.merge_and_unload().eval()(x, attention_mask=mask).logits, atol=1e-5, rtol=0)


def test_squad_adapter_exports_as_question_answering(tmp_path):
    """A SQuAD adapter (query/value + qa_outputs in modules_to_save) on a bare BertModel: DIR is a
    BertForQuestionAnswering checkpoint (no pooler) whose start/end logits in transformers are our merged model's."""
    cfg, bare, _ = ENCODER["bert"]
    random_params(bare(cfg), 0).save_pretrained(tmp_path / "base")
    ours = apply_lorasp(M.load_pretrained(tmp_path / "base").add_qa_head(), ["query", "value"], r=4, alpha=8)
    with torch.no_grad():
        for m in ours.modules():
            if hasattr(m, "B_train"):
                m.B_train.normal_(0, 0.3)
        ours.qa_outputs.weight.normal_(0, 0.3)
    save_adapter(ours, tmp_path / "adapter", task_type="QUESTION_ANS", modules_to_save=("qa_outputs",))
    assert run("--model", tmp_path / "base", "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["BertForQuestionAnswering"]
    assert not any(k.startswith("bert.pooler.") for k in tensors(tmp_path / "out"))
    hf = transformers.AutoModelForQuestionAnswering.from_pretrained(tmp_path / "out").eval()
    x, mask = torch.randint(3, V, (2, T)), torch.ones(2, T, dtype=torch.long)
    with torch.no_grad():
        start, end = merge_lorasp(ours.eval()).span_logits(x, mask)
        got = hf(x, attention_mask=mask)
        torch.testing.assert_close(got.start_logits, start, atol=1e-5, rtol=0)
        torch.testing.assert_close(got.end_logits, end, atol=1e-5, rtol=0)


def test_python_export_py_help_runs_on_its_own():
    """`python export.py --help` as a user runs it: the usage with every flag, exit status 0."""
    done = subprocess.run([sys.executable, "export.py", "--help"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    assert all(f in done.stdout for f in ("--model", "--adapter", "--out", "--dtype", "--shard-size", "--force"))


@pytest.mark.parametrize("dtype", [None, "bf16", "fp16"])
@pytest.mark.parametrize("causal", ["llama"], indirect=True)
def test_export_writes_the_bytes_of_the_merged_model_saved_whole(causal, dtype, tmp_path):
    """export.py merges and casts one layer at a time as it writes: its files are byte for byte those of the whole
    model loaded, merged (merge_lorasp), cast with model.to and written by save_pretrained (as export.py did before it
    streamed), shards and index included; its scratch folder beside --out is gone."""
    base, adapter, _, _ = causal
    assert run("--model", base, "--adapter", adapter, "--out", tmp_path / "out", "--shard-size", "20KB",
               *(["--dtype", dtype] if dtype else [])) is None
    model = merge_lorasp(load_model(str(base), str(adapter), tok=export.NoTokenizer())[0])
    model.to(export.DTYPES.get(dtype, torch.float32))                                   # (the base is fp32)
    M.save_pretrained(model, tmp_path / "ref", 20_000)
    written = sorted(f for f in os.listdir(tmp_path / "out") if f.startswith("model"))
    assert len(written) > 3 and written == sorted(f for f in os.listdir(tmp_path / "ref") if f.startswith("model"))
    for f in written:
        assert (tmp_path / "out" / f).read_bytes() == (tmp_path / "ref" / f).read_bytes(), f
    assert sorted(os.listdir(tmp_path)) == ["adapter", "base", "out", "ref"]


def test_export_peak_memory_is_about_the_largest_tensor_not_a_shard(tmp_path):
    """A bf16 base exported as fp32 (320 MiB) in one file (the default --shard-size, 5GB): the process grows by a few
    of its largest tensors (4 MiB each) and what loading keeps, 32-48 MiB, not by the shard (export.py held each shard
    whole until it wrote it: 411-416 MiB; 64 MiB with 16 MB shards). Measured in a fresh process: VmHWM at the end less
    VmRSS once the modules are imported."""
    torch.manual_seed(0)
    model = M.build_model(M.LlamaConfig(vocab_size=2048, n_layer=24, n_embd=512, n_head=8, n_kv_head=8, n_ffn=1536))
    M.save_pretrained(model.to(torch.bfloat16), tmp_path / "base")
    out_bytes = 4 * sum(p.numel() for p in model.parameters())
    save_adapter(apply_lorasp(model, ["q_proj", "v_proj", "down_proj"], r=8, alpha=16), tmp_path / "adapter")
    code = ("import sys, checkpoint, export; before = checkpoint.resident(); export.main(sys.argv[1:]); "
            "print((checkpoint.resident('VmHWM') - before) / 2 ** 20)")
    done = subprocess.run([sys.executable, "-c", code, "--model", tmp_path / "base", "--adapter", tmp_path / "adapter",
                           "--out", tmp_path / "out", "--dtype", "fp32"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    grew = float(done.stdout.split()[-1])
    assert sorted(os.listdir(tmp_path / "out")) == ["config.json", "lorasp_merged.json", "model.safetensors"]
    assert 315 < out_bytes / 2 ** 20 < 325 and grew < out_bytes / 2 ** 20 / 5, (grew, out_bytes / 2 ** 20)


def test_an_nf4_trained_adapters_export_holds_one_dequantized_weight_at_a_time(tmp_path):
    """The peak test's model with an adapter trained on the NF4 base, exported in fp32: each adapted layer's weight is
    dequantized once, merged into and counted from, then dropped (the model keeps its 4-bit weight): the process grows
    by the NF4 codes (~41 MiB) and a few layers (78 MiB measured), not by the dense weights (366 MiB where each
    dequantized weight stayed in the model)."""
    torch.manual_seed(0)
    model = M.build_model(M.LlamaConfig(vocab_size=2048, n_layer=24, n_embd=512, n_head=8, n_kv_head=8, n_ffn=1536))
    M.save_pretrained(model.to(torch.bfloat16), tmp_path / "base")
    out_bytes = 4 * sum(p.numel() for p in model.parameters())
    model = trained(model.float(), ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    save_adapter(model, tmp_path / "adapter", base=dict(quant="nf4"))
    code = ("import sys, checkpoint, export; before = checkpoint.resident(); export.main(sys.argv[1:]); "
            "print((checkpoint.resident('VmHWM') - before) / 2 ** 20)")
    done = subprocess.run([sys.executable, "-c", code, "--model", tmp_path / "base", "--adapter", tmp_path / "adapter",
                           "--out", tmp_path / "out", "--dtype", "fp32"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0 and "trained on the NF4-quantized base" in done.stderr, done.stderr
    grew = float(done.stdout.split()[-1])
    assert 315 < out_bytes / 2 ** 20 < 325 and grew < out_bytes / 2 ** 20 / 2, (grew, out_bytes / 2 ** 20)


@pytest.mark.parametrize("quant", ["none", "nf4"])
def test_an_adapter_that_changes_nothing_is_one_warning_on_a_bf16_base_nf4_too(tmp_path, capsys, quant):
    """An adapter as apply_lorasp makes it (B = 0) on a bf16 base, exported in bf16: one warning, export.py's (with
    evalcli.with_adapter's before it, two). Trained on the NF4 base, the merge (into the weight dequantized to bf16)
    was compared with a second dequantization, in float32: "0 weight entries in bfloat16, 14,932 in float32: --dtype
    fp32 keeps them", which an fp32 export would not; now with the weight the merge was made from."""
    model = M.build_model(M.LlamaConfig(vocab_size=V, n_layer=2, n_embd=64, n_head=4, n_kv_head=4, n_ffn=128))
    M.save_pretrained(random_params(model, 0).to(torch.bfloat16), tmp_path / "base")
    save_adapter(apply_lorasp(model, ["q_proj", "v_proj"], r=4, alpha=8), tmp_path / "adapter", base=dict(quant=quant))
    for dtype in ("bf16", "fp32"):
        assert run("--model", tmp_path / "base", "--adapter", tmp_path / "adapter", "--out", tmp_path / dtype,
                   "--dtype", dtype) is None
        err = capsys.readouterr().err
        said = {"bf16": "bfloat16 or float32", "fp32": "float32"}[dtype]
        assert err.count("warning: ") == 1 and f"warning: {tmp_path / dtype}: --adapter {tmp_path / 'adapter'}'s " \
            f"(alpha/r) B A changes no weight entry in {said} in any of its 4 layers (as an adapter that trained " \
            "nothing does, or PEFT's initial one: B = 0); this export is the base model" in err, err


def test_a_classifier_whose_b_is_0_but_whose_head_trained_is_not_called_the_base(tmp_path, capsys):
    """A GLUE adapter whose lora_B are 0 but whose head (modules_to_save) trained changes the model: no warning, as
    eval.py gives none (export.py said "this export is the base model" of a folder holding the trained head)."""
    cfg, bare, _ = ENCODER["roberta"]
    random_params(bare(cfg), 0).save_pretrained(tmp_path / "base")
    ours = apply_lorasp(M.load_pretrained(tmp_path / "base").add_head(3), ["query", "value"], r=4, alpha=8)
    random_params(ours.classifier, 1)
    save_adapter(ours, tmp_path / "adapter", task_type="SEQ_CLS", modules_to_save=type(ours).head,
                 base=dict(task="glue/mnli"))
    assert run("--model", tmp_path / "base", "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
    assert "warning" not in capsys.readouterr().err
    head = tensors(tmp_path / "out")["classifier.out_proj.weight"]
    torch.testing.assert_close(head, ours.classifier.out_proj.weight, atol=0, rtol=0)   # (the trained head, written)


def convert_hf_to_gguf(folder, gguf):
    """llama.cpp's own converter (tests/fetch_real.py fetches it, with its gguf-py) on an exported folder, as users
    run it: `python convert_hf_to_gguf.py DIR --outtype f32 --outfile FILE`."""
    done = subprocess.run([sys.executable, path("llama.cpp", "convert", "convert_hf_to_gguf.py"), str(folder),
                           "--outtype", "f32", "--outfile", str(gguf)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]


def test_llama_cpp_converts_an_exported_llama_to_a_gguf_our_loader_reads_to_its_logits(tiny, tmp_path):  # noqa: F811
    """A train.py run on the tiny Llama (the demo's sentencepiece tokenizer), exported and converted to GGUF by
    llama.cpp's convert_hf_to_gguf.py: lorasp's GGUF loader (q/k rows un-permuted, the tokenizer inside the file) gives
    transformers' logits on the exported folder (fp32, 1e-5) and reads text as the folder's tokenizer does: the Alpaca
    prompt with its newlines, a tab, runs of spaces, characters the vocabulary lacks; the gguf package's token list at
    those ids spells the text. (The demo's tokenizer.model normalized text, nmt_nfkc: the folder read each newline as
    a space, the .gguf, as llama.cpp does, as <unk>; an unseen character was <unk>.)"""
    train.main(flags(tiny, tmp_path / "run", "--targets", "q_proj,v_proj,down_proj"))
    assert run("--model", tiny[0], "--adapter", tmp_path / "run", "--out", tmp_path / "out", "--dtype", "fp32") is None
    convert_hf_to_gguf(tmp_path / "out", tmp_path / "out.gguf")
    tokens = GGUFReader(tmp_path / "out.gguf").fields["tokenizer.ggml.tokens"]
    tokens = [bytes(tokens.parts[i]).decode() for i in tokens.data]
    spell = lambda ids: b"".join(bytes([int(t[3:5], 16)]) if re.fullmatch("<0x..>", t) else t.replace(  # noqa: E731
        "▁", " ").encode() for t in (tokens[i] for i in ids)).decode()
    for text in ("cat  dog   3\t7\n\nowl é 漢 😀",
                 data.PROMPT_DICT["prompt_input"].format(instruction="How many words are in owl fox?", input="cat")):
        ids = tokenizer.load_tokenizer(str(tmp_path / "out")).encode(text)
        assert tokenizer.load_tokenizer(str(tmp_path / "out.gguf")).encode(text) == ids, text
        assert ids[0] == 1 and spell(ids[1:]) == " " + text  # (sentencepiece's "▁" prefix)
    x = torch.tensor([ids])                                    # (the prompt)
    with torch.no_grad():
        want = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()(x).logits
        torch.testing.assert_close(M.load_pretrained(tmp_path / "out.gguf")(x), want, atol=1e-5, rtol=0)
        assert (M.load_pretrained(tiny[0], dtype=torch.float32)(x) - want).abs().max() > 1e-3  # the adapter matters


def test_llama_cpp_converts_an_exported_gpt2_to_a_gguf_transformers_reads_to_its_logits(tmp_path):
    """A GPT-2 adapter (GPT-2's own BPE files: the converter knows a vocabulary by its pre-tokenizer's hash) exported
    and converted: transformers' GGUF reader (lorasp's reads Llamas only) gives the logits transformers gives on the
    folder (fp32, 1e-5). The converter needs config.json's n_ctx, which transformers 5 no longer writes."""
    cls, cfg, targets = CAUSAL["gpt2"]
    cfg = transformers.GPT2Config(**{**cfg.to_dict(), "vocab_size": 50257, "bos_token_id": 50256,
                                     "eos_token_id": 50256, "n_positions": 1024})  # (transformers' GGUF reader: 1024)
    random_params(cls(cfg), 0).save_pretrained(tmp_path / "base")
    shutil.copy(path("gpt2", "encoder.json"), tmp_path / "base" / "vocab.json")
    shutil.copy(path("gpt2", "vocab.bpe"), tmp_path / "base" / "merges.txt")
    save_adapter(trained(M.load_pretrained(tmp_path / "base", dtype=torch.float32), targets), tmp_path / "adapter")
    assert run("--model", tmp_path / "base", "--adapter", tmp_path / "adapter", "--out", tmp_path / "out",
               "--dtype", "fp32") is None
    convert_hf_to_gguf(tmp_path / "out", tmp_path / "out.gguf")
    x = torch.randint(0, 50257, (2, T), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()(x).logits
        got = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="out.gguf").eval()(x).logits
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        assert (M.load_pretrained(tmp_path / "base", dtype=torch.float32)(x) - want).abs().max() > 1e-3


def test_a_tokenizer_model_alone_gets_a_tokenizer_config_transformers_reads_as_ours(tiny, tmp_path):
    """A base whose tokenizer is a sentencepiece tokenizer.model alone (Meta's layout, the offline demo's model):
    transformers' AutoTokenizer on DIR built a tokenizer without BOS (its ids ours minus the leading <s>: a served
    Llama 2 prompted without the BOS it was trained with, no error). DIR gets a tokenizer_config.json saying what ours
    does (LlamaTokenizer, BOS added, no EOS). The demo's tokenizer.model is trained as Llama 2's (no normalizer, byte
    pieces): the Alpaca prompt's newlines, a tab, runs of spaces and characters its vocabulary lacks read alike. (It
    normalized text, nmt_nfkc, which transformers' conversion leaves out: a newline or a run of spaces was one "▁"
    in ours; a character outside its small vocabulary <unk> in ours, dropped in transformers'.)"""
    ours = trained(M.load_pretrained(tiny[0]), ["q_proj"])
    save_adapter(ours, tmp_path / "adapter")
    assert run("--model", tiny[0], "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
    assert not os.path.exists(os.path.join(tiny[0], "tokenizer_config.json"))  # (the base has none to copy)
    tok, hf = tokenizer.load_tokenizer(tiny[0]), transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    for text in ("How many words are in owl fox?", "cat dog 3 7", "How many numbers are in 8 net oak?",
                 data.PROMPT_DICT["prompt_input"].format(instruction="How many words are in owl fox?", input="cat"),
                 "cat  dog   3\t7\n\nowl  ", "é 漢 😀 café\r\n"):
        assert hf(text)["input_ids"] == tok.encode(text), text


def test_a_tokenizer_model_beside_a_generation_config_gets_a_tokenizer_config_too(tiny, tmp_path):
    """The same tokenizer.model alone, in a folder that also holds a generation_config.json (transformers'
    save_pretrained writes one with every model; generation's settings, none of the tokenizer's): DIR got no
    tokenizer_config.json (the test asked for exactly ["tokenizer.model"] copied), so transformers' AutoTokenizer
    read it without BOS, as above. Now the files of the tokenizer decide."""
    base = tmp_path / "base"
    shutil.copytree(tiny[0], base)
    (base / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    ours = trained(M.load_pretrained(base), ["q_proj"])
    save_adapter(ours, tmp_path / "adapter")
    assert run("--model", base, "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
    assert "generation_config.json" in os.listdir(tmp_path / "out")
    tok, hf = tokenizer.load_tokenizer(base), transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    for text in ("How many words are in owl fox?", "cat dog 3 7"):
        assert hf(text)["input_ids"] == tok.encode(text), text
        assert tok.encode(text)[0] == tok.bos_id


def test_a_gpt2_language_model_on_openai_file_names_gets_a_tokenizer_transformers_reads(tmp_path, capsys):
    """A GPT-2 base whose tokenizer is OpenAI's encoder.json + vocab.bpe (the real vocabulary), exported as a language
    model: the folder got no tokenizer file transformers reads, and the note said the base 'has none to copy'
    (lorasp had read it); AutoTokenizer on the folder then built a GPT2Tokenizer of no vocabulary, encoding text as [].
    Now the folder gets a tokenizer.json: AutoTokenizer gives lorasp's ids, and the note is gone."""
    base = tmp_path / "base"
    base.mkdir()
    random_params(transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=50257, n_embd=32, n_layer=2, n_head=4, n_positions=32)), 0).save_pretrained(base)
    shutil.copy(path("gpt2", "encoder.json"), base / "encoder.json")
    shutil.copy(path("gpt2", "vocab.bpe"), base / "vocab.bpe")
    ours = trained(M.load_pretrained(base), ["c_attn"])
    save_adapter(ours, tmp_path / "adapter")
    assert run("--model", base, "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
    assert "has no tokenizer files" not in capsys.readouterr().err
    texts = ["Hello world", " ţară, şi ăla 123 <|endoftext|> x", "\tindented\n\nlines  "]
    hf_tok, run_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out"), tokenizer.load_tokenizer(base)
    assert [hf_tok(t).input_ids for t in texts] == [run_tok.encode(t) for t in texts]
    assert tokenizer.load_tokenizer(tmp_path / "out").encode(texts[1]) == run_tok.encode(texts[1])
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    ids = torch.tensor([run_tok.encode(texts[1])])
    torch.testing.assert_close(hf(ids).logits, merge_lorasp(ours)(ids), atol=1e-5, rtol=0)


def test_a_second_adapter_stacks_on_an_export_and_neither_applies_twice(tiny, tmp_path, capsys):  # noqa: F811
    """Two train.py runs on the tiny Llama; the first merged (M), the second stacked on M by eval.py (with a note) and
    merged into M2 by export.py: transformers' M2 gives the logits of M with the second adapter applied, and M2's
    lorasp_merged.json holds both, so either adapter onto M2 is refused, naming the base it was merged from."""
    for run_dir, seed in (("one", "1"), ("two", "2")):
        train.main(flags(tiny, tmp_path / run_dir, "--max-steps", "3", "--seed", seed))
    one, two = str(tmp_path / "one" / "adapter"), str(tmp_path / "two" / "adapter")
    assert run("--model", tiny[0], "--adapter", one, "--out", tmp_path / "m") is None
    assert run("--model", tmp_path / "m", "--adapter", two, "--out", tmp_path / "m2") is None
    assert f"note: --model {tmp_path / 'm'} holds {one} merged (export.py); --adapter {two}" in capsys.readouterr().err
    x = torch.tensor([tokenizer.load_tokenizer(tiny[0]).encode("Below is an instruction that describes a task.")])
    stacked, _ = load_model(str(tmp_path / "m"), two, "none", torch.float32)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m2").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, stacked(x), atol=1e-5, rtol=0)
        assert (stacked(x) - load_model(str(tmp_path / "m"), None, "none", torch.float32)[0](x)).abs().max() > 1e-4
    record = json.loads((tmp_path / "m2" / "lorasp_merged.json").read_text())
    assert [(m["adapter"], m["base"]) for m in record["merged"]] == [(one, tiny[0]), (two, str(tmp_path / "m"))]
    for adapter, base in ((one, tiny[0]), (two, str(tmp_path / "m"))):
        assert f"applying it again doubles its update: give --model {base} (the original base)" in run(
            "--model", tmp_path / "m2", "--adapter", adapter, "--out", tmp_path / "m3")


def test_an_export_of_a_base_whose_config_names_no_eos_stops_transformers_generate_there(tiny, tmp_path):  # noqa: F811
    """The tiny base's config.json, as the offline demo's model's, names no bos_token_id or eos_token_id (to_hf writes
    the computation only) and no generation_config.json is beside it: export.py's DIR inherited that, and transformers'
    generate on it ran past </s> to max_new_tokens (the demo's export: '2</s><s> Question: How many numbers are in
    7'), where generate.py stops at the tokenizer's EOS. DIR's config.json now names the tokenizer's ids (no pad: it
    has none), which GenerationConfig.from_model_config reads. Here </s> is the base's first answer token: its lm_head
    row is the merged model's last hidden state on the prompt, scaled."""
    base, tok = tmp_path / "base", tokenizer.load_tokenizer(tiny[0])
    shutil.copytree(tiny[0], base)
    ours = trained(M.load_pretrained(base), ["q_proj"])
    save_adapter(ours, tmp_path / "adapter")
    prompt = tok.encode(data.PROMPT_DICT["prompt_no_input"].format(instruction="How many words are in fox mud?"))
    seen, merged = [], merge_lorasp(ours)
    merged.lm_head.register_forward_hook(lambda m, i, o: seen.append(i[0][0, -1]))
    with torch.no_grad():
        merged(torch.tensor([prompt]))
        plain = M.load_pretrained(base)
        plain.lm_head.weight[tok.eos_id] = 30 * seen[0] / seen[0].norm()
    M.save_pretrained(plain, base)
    assert not {"bos_token_id", "eos_token_id"} & set(json.loads((base / "config.json").read_text()))
    assert run("--model", base, "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config.get("bos_token_id"), config.get("eos_token_id")) == (tok.bos_id, tok.eos_id) == (1, 2)
    assert "pad_token_id" not in config and tok.pad_id is None
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    out = hf.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)
    assert out[0, len(prompt):].tolist() == [tok.eos_id]


def test_a_method_full_runs_model_names_its_tokenizers_eos_for_transformers_generate(tiny, tmp_path):  # noqa: F811
    """train.py --method full's OUT/model of a base whose config.json names no BOS or EOS (the tiny one; the offline
    demo's model is such a folder) had none either: transformers' generate on it did not stop at </s>. It names the
    tokenizer's, as transformers' GenerationConfig reads them."""
    train.main(flags(tiny, tmp_path / "out", "--max-steps", "1", "--method", "full"))
    tok, folder = tokenizer.load_tokenizer(tiny[0]), tmp_path / "out" / "model"
    config = json.loads((folder / "config.json").read_text())
    assert (config.get("bos_token_id"), config.get("eos_token_id"), config.get("pad_token_id")) == (1, 2, None)
    assert transformers.GenerationConfig.from_model_config(transformers.AutoConfig.from_pretrained(folder)) \
        .eos_token_id == tok.eos_id


def test_config_token_ids_keeps_the_ids_a_config_names_and_writes_a_pad_of_its_own_only(tiny):  # noqa: F811
    """tokenizer.config_token_ids: an id config.json names is kept (null is none), a pad that is the EOS named as
    pad is not written (pad_token_id is the embedding's padding_idx too), nor any id for a model that does not
    generate (a classifier)."""
    tok, lm = tokenizer.load_tokenizer(tiny[0]), dict(architectures=["LlamaForCausalLM"], vocab_size=456)
    assert tokenizer.config_token_ids(tok, lm | dict(eos_token_id=7, bos_token_id=None)) == dict(bos_token_id=1)
    assert tokenizer.config_token_ids(tok, dict(lm, architectures=["LlamaForSequenceClassification"])) == {}
    tok.pad_id = tok.eos_id
    assert tokenizer.config_token_ids(tok, lm) == dict(bos_token_id=1, eos_token_id=2)
    tok.pad_id = 455
    assert tokenizer.config_token_ids(tok, lm) == dict(bos_token_id=1, eos_token_id=2, pad_token_id=455)
    assert tokenizer.config_token_ids(tok, dict(lm, vocab_size=455))["eos_token_id"] == 2
    assert "pad_token_id" not in tokenizer.config_token_ids(tok, dict(lm, vocab_size=455))


def test_files_copied_from_a_read_only_base_honour_the_umask(tiny, tmp_path):  # noqa: F811
    """Under umask 077 export.py's and train.py --method full's checkpoints held the base's tokenizer files with the
    base's mode (shutil.copy2 / copy: 0o444 here, readable by all, and read-only) beside 0o600 weights and config. Now
    every file written is the umask's (atomic_write's), whatever the base's mode."""
    base = tmp_path / "base"
    shutil.copytree(tiny[0], base)
    for f in os.listdir(base):
        os.chmod(base / f, 0o444)
    umask = os.umask(0o077)
    try:
        train.main(flags((str(base), tiny[1]), tmp_path / "run", "--max-steps", "1"))
        train.main(flags((str(base), tiny[1]), tmp_path / "full", "--max-steps", "1", "--method", "full"))
        assert run("--model", base, "--adapter", tmp_path / "run" / "adapter", "--out", tmp_path / "export") is None
    finally:
        os.umask(umask)
    for folder in (tmp_path / "export", tmp_path / "full" / "model"):
        modes = {f: oct(os.stat(folder / f).st_mode & 0o777) for f in os.listdir(folder)}
        assert "tokenizer.model" in modes and set(modes.values()) == {"0o600"}, (folder, modes)
