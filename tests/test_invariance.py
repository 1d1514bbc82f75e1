"""A figure must not move with what it does not depend on (the twenty-eighth session's sweep, through the command lines
as a user runs them): one checkpoint written in each public layout (safetensors, shards + index, pytorch_model.bin,
Meta's consolidated.NN.pth in 1 and 2 shards) scores the same; eval.py's scores stay put at --batch-size 1, 3 and 8
over records of very different lengths and in another order (GLUE on RoBERTa, whose positions count real tokens,
and on GPT-2, whose classifier reads the last one; MMLU, whose prompts reuse the KV cache of the one before;
perplexity's records and text files); export.py writes the same bytes from every layout of the base; train.py's
steps hold the same records at any split of --batch-size x --grad-accum. Where a figure does depend on something the
user may not see (perplexity's window, Meta's missing context length), it is said."""
import json
import os
import random
import signal

import pytest
import torch
import transformers

import data
import eval as E
import export
import train
import checkpoint
from checkpoint import load_safetensors
from evalcli import mmlu_rows
from fixtures import demo_tokenizer, fault_at_loss_call, flags, random_params, tiny  # noqa: F401  (tiny: a fixture)
from lorasp import apply_lorasp, save_adapter
import model as M
import tokenizer
from test_model import write_meta

WORDS = data.DEMO_WORDS


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """{layout: folder} of one tiny Llama (GQA, rope_theta 5000, config.json's context 512) with its sentencepiece
    tokenizer: safetensors (ours), 3 shards + index, pytorch_model.bin (transformers' files), Meta's layout in 1 and
    2 model-parallel shards (tests/test_model.py's writer, independent of checkpoint.py); and a text file."""
    root = tmp_path_factory.mktemp("layouts")
    (root / "hf").mkdir()
    tok = demo_tokenizer(root / "hf", 300)
    cfg = M.LlamaConfig(vocab_size=tok.vocab_size, n_layer=2, n_embd=32, n_head=4, n_kv_head=2, n_ffn=96,
                        rope_theta=5000.0, max_seq_len=512)  # (Meta's FFN rule at dim 32, multiple_of 32: 96)
    M.save_pretrained(random_params(M.build_model(cfg), 0), root / "hf")
    ref = transformers.AutoModelForCausalLM.from_pretrained(root / "hf", dtype=torch.float32)
    tokenizer = (root / "hf" / "tokenizer.model").read_bytes()
    out = {"hf": root / "hf"}
    for name, kw in (("shards", dict(shard_size=20_000)), ("bin", {})):
        out[name] = root / name
        M.save_pretrained(M.load_pretrained(root / "hf"), out[name], **kw)
        if name == "bin":  # pytorch_model.bin, as transformers' legacy save writes it
            from safetensors.torch import load_file
            torch.save(load_file(out[name] / "model.safetensors"), out[name] / "pytorch_model.bin")
            os.remove(out[name] / "model.safetensors")
        (out[name] / "tokenizer.model").write_bytes(tokenizer)
    for n in (1, 2):
        out[f"meta{n}"] = root / f"meta{n}"
        out[f"meta{n}"].mkdir()
        write_meta(ref, out[f"meta{n}"], n_shards=n)
        (out[f"meta{n}"] / "tokenizer.model").write_bytes(tokenizer)
    assert len([f for f in os.listdir(out["shards"]) if f.endswith(".safetensors")]) > 1
    (root / "text.txt").write_text("\n\n".join(data.demo_corpus(12)) + "\n")
    return out, root / "text.txt"


def last_json(capsys):
    out = capsys.readouterr()
    return json.loads(out.out.strip().splitlines()[-1]), out.out + out.err


def test_every_layout_scores_alike_and_perplexity_says_its_window(layouts, capsys):
    """Perplexity of one text: the same float from each layout at one window length (64 tokens). Without --seq-len the
    window is the model's context: config.json's 512, but Meta's params.json records none (4096, Llama 2's, is
    taken), so the same weights scored 19939.79 (HF layout) and 23085.92 (Meta's) on a 5,023-token text, each printed
    as "perplexity X over N tokens" alone. The line now names the window and where its length came from."""
    dirs, text = layouts
    figures = {}
    for name, d in dirs.items():
        E.main(["--task", "perplexity", "--model", str(d), "--data", str(text), "--seq-len", "64", "--dtype", "fp32"])
        got, printed = last_json(capsys)
        figures[name] = (got["perplexity"], got["tokens"])
        assert "in windows of 64 tokens (--seq-len)" in printed, printed
    assert len(set(figures.values())) == 1, figures
    E.main(["--task", "perplexity", "--model", str(dirs["hf"]), "--data", str(text), "--dtype", "fp32"])
    hf, printed = last_json(capsys)
    assert f"over {hf['tokens']} tokens in windows of 512 tokens (the model's context)" in printed, printed
    E.main(["--task", "perplexity", "--model", str(dirs["meta2"]), "--data", str(text), "--dtype", "fp32", "--stride",
            "1000"])
    meta, printed = last_json(capsys)
    assert ("in windows of 4096 tokens, one every 1000 (the model's context: Meta's params.json records none, so it is "
            "told by the Llama's version, as transformers' converter does (Llama 2 4096") in printed, printed
    E.main(["--task", "perplexity", "--model", str(dirs["meta2"]), "--data", str(text), "--dtype", "fp32", "--seq-len",
            "512"])
    assert last_json(capsys)[0] == hf                          # the window said, the figure agrees


def test_export_writes_the_same_model_from_every_layout_and_says_metas_context(layouts, tmp_path, capsys):
    """export.py of one adapter onto each layout of its base: the same tensors, bit for bit. From Meta's layout
    config.json gets max_position_embeddings 4096 (Llama 2's: params.json records none) where the HF folder's says
    512: written with no word before; a note says it now (a Llama 3.1 exported so read 4096 for its 131072)."""
    dirs, _ = layouts
    ours = apply_lorasp(M.load_pretrained(dirs["hf"]), ["q_proj", "v_proj"], r=4, alpha=8)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ours.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    save_adapter(ours, tmp_path / "adapter")
    written = {}
    for name in ("hf", "bin", "meta2"):
        export.main(["--model", str(dirs[name]), "--adapter", str(tmp_path / "adapter"), "--out",
                     str(tmp_path / name), "--dtype", "fp32"])
        err = capsys.readouterr().err
        written[name] = M.load_pretrained(tmp_path / name).state_dict()
        context = json.loads((tmp_path / name / "config.json").read_text())["max_position_embeddings"]
        assert context == (4096 if name == "meta2" else 512)
        assert ("params.json records no context length: config.json's max_position_embeddings is 4096, told by the "
                "Llama's version" in err) == (name == "meta2"), err
    for name in ("bin", "meta2"):
        assert all(torch.equal(t, written["hf"][k]) for k, t in written[name].items()) and \
            written[name].keys() == written["hf"].keys()


# ----------------------------------------------------------------------------------------------------
# eval.py's scores at any --batch-size, in any row order

def glue_files(root, rows, task):
    """SST-2's or STS-B's dev.tsv (and a train.tsv) of rows, in GLUE's layout."""
    head = {"sst2": "sentence\tlabel", "stsb": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
            "sentence2\tscore"}[task]
    d = root / {"sst2": "SST-2", "stsb": "STS-B"}[task]
    d.mkdir(parents=True)
    for split in ("train", "dev"):
        (d / f"{split}.tsv").write_text("\n".join([head] + ["\t".join(r) for r in rows]) + "\n")


@pytest.mark.parametrize("kind", ["roberta", "gpt2"])
def test_glue_scores_do_not_move_with_batch_size_or_row_order(kind, tmp_path, capsys):
    """RoBERTa (positions from the real tokens: right padding must not shift them) and a GPT-2 classifier (the last
    real token's logits, a pad id of its own): accuracy on SST-2 and Pearson/Spearman on STS-B over sentences of 1 to
    60 words, at --batch-size 1 (no padding), 3 and 8 and with dev.tsv's rows reversed: the same predictions (the
    loss within float32 rounding)."""
    rng = random.Random(5)
    sentence = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.choice([1, 2, 5, 30, 60, 8])))  # noqa: E731
    rows = {"sst2": [[sentence(), str(rng.randint(0, 1))] for _ in range(24)],
            "stsb": [["0", "g", "f", "y", "0", "n", "n", sentence(), sentence(), f"{rng.uniform(0, 5):.3f}"]
                     for _ in range(24)]}
    for task, rs in rows.items():
        glue_files(tmp_path / "glue", rs, task)
        glue_files(tmp_path / "reversed", rs[::-1], task)
    for task, labels in (("sst2", 2), ("stsb", 1)):
        d = tmp_path / f"{kind}{labels}"
        d.mkdir()
        if kind == "roberta":
            from tokenizers import ByteLevelBPETokenizer
            bpe = ByteLevelBPETokenizer()
            bpe.train_from_iterator([" ".join(WORDS)] * 20, vocab_size=300, min_frequency=1,
                                    special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
            bpe.save_model(str(d))
            vocab = json.loads((d / "vocab.json").read_text())
            (d / "vocab.json").write_text(json.dumps(vocab | {"<mask>": len(vocab)}))
            hf = transformers.RobertaForSequenceClassification(transformers.RobertaConfig(
                vocab_size=len(vocab) + 1, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=260, num_labels=labels, pad_token_id=1))
        else:
            from fixtures import gpt2_folder
            gpt2_folder(d)                                      # pad <pad>, id 300
            hf = transformers.GPT2ForSequenceClassification(transformers.GPT2Config(
                vocab_size=301, n_positions=256, n_embd=32, n_layer=2, n_head=4, num_labels=labels,
                pad_token_id=300, bos_token_id=0, eos_token_id=0))
        random_params(hf, 3)
        with torch.no_grad():                                   # logits that differ from sentence to sentence
            (hf.score if kind == "gpt2" else hf.classifier.out_proj).weight.mul_(10)
        hf.save_pretrained(d)
        seen = {}
        for folder in ("glue", "reversed"):
            for bs in (1, 3, 8):
                E.main(["--task", f"glue/{task}", "--model", str(d), "--data-dir", str(tmp_path / folder),
                        "--batch-size", str(bs), "--dtype", "fp32"])
                seen[folder, bs] = last_json(capsys)[0]["dev"]
        first = dict(seen["glue", 1])
        for key, got in seen.items():
            assert got.pop("loss") == pytest.approx(first["loss"], rel=1e-5), key
            for metric, value in got.items():  # (STS-B's scores move by ~1e-5 with the batch's padded matmuls)
                assert value == (first[metric] if metric == "accuracy" else pytest.approx(first[metric], abs=1e-3)), (
                    key, metric)
        assert 0 < abs(list(first.values())[0]) < 100           # not a degenerate case's score


def test_mmlu_is_the_same_in_any_question_order_and_each_question_alone(layouts, tmp_path):
    """MMLU reuses the previous prompt's KV cache up to where their tokens first differ: each subject's accuracy is the
    same with its test rows reversed (other shared prefixes), in another subject order, and asked one question at a
    time (no cache reused), at the model's context and at --seq-len 160 (worked examples dropped to fit)."""
    import csv
    rng = random.Random(7)
    s = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))  # noqa: E731
    files = {sub: {split: [[s(rng.choice([2, 10, 30])) + "?", s(1), s(2), s(3), s(rng.choice([1, 6])),
                            rng.choice("ABCD")] for _ in range(n)] for split, n in (("dev", 5), ("test", 12))}
             for sub in ("college_biology", "world_religions")}
    for name, flip in (("mmlu", False), ("reversed", True)):
        for sub, splits in files.items():
            for split, rows in splits.items():
                (tmp_path / name / split).mkdir(parents=True, exist_ok=True)
                with open(tmp_path / name / split / f"{sub}_{split}.csv", "w", newline="") as f:
                    csv.writer(f).writerows(rows[::-1] if flip and split == "test" else rows)
    d = tmp_path / "llama"                                     # the layouts' weights, a tokenizer with " A".." D"
    d.mkdir()
    for f in os.listdir(layouts[0]["hf"]):
        if f != "tokenizer.model":
            (d / f).write_bytes((layouts[0]["hf"] / f).read_bytes())
    data.train_sentencepiece(data.demo_corpus(300) + [" ".join("ABCD" * 20)] * 200 + ["Answer: A Answer: B Answer: C "
                             "Answer: D"] * 100, str(d / "tokenizer.model"), M.load_pretrained(d).config.vocab_size)
    model, tok = M.load_pretrained(d), tokenizer.load_tokenizer(str(d))
    quiet = lambda *a: None  # noqa: E731
    for max_len in (None, 160):
        rows = mmlu_rows(str(tmp_path / "mmlu"), None, 5)
        whole = E.mmlu(model, tok, rows, max_len=max_len, log=quiet)
        assert E.mmlu(model, tok, mmlu_rows(str(tmp_path / "reversed"), None, 5), max_len=max_len,
                      log=quiet)["subjects"] == whole["subjects"]
        assert E.mmlu(model, tok, dict(reversed(rows.items())), max_len=max_len, log=quiet)["micro"] == whole["micro"]
        for sub, (dev, test) in rows.items():
            alone = [E.mmlu(model, tok, {sub: (dev, [row])}, max_len=max_len, log=quiet)["micro"] for row in test]
            assert sum(alone) / len(test) == whole["subjects"][sub], (max_len, sub)
        assert whole["shortened"] > 0 or not max_len            # (160: worked examples dropped, so scored)


def test_perplexity_of_records_in_any_order_and_of_text_in_any_line_ending(layouts, tmp_path, capsys):
    """Records of 1 to 120 words (one scoring pass holds several, right-padded): the same perplexity reversed, as
    .json and as .jsonl, with --seq-len 64 (most records scored past it too) and without. A text file with CRLF line
    ends, a byte-order mark, a trailing newline or single newlines between its lines: the same documents, the same
    figure."""
    dirs, text = layouts
    records = [dict(instruction=f"List {n} words.", input="" if i % 3 else "from the list",
                    output=" ".join(WORDS[(i + j) % len(WORDS)] for j in range(n)))
               for i, n in enumerate([1, 40, 3, 120, 7, 2, 60, 15] * 2)]
    (tmp_path / "a.json").write_text(json.dumps(records))
    (tmp_path / "b.json").write_text(json.dumps(records[::-1]))
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    t = text.read_text()
    (tmp_path / "crlf.txt").write_bytes(t.replace("\n", "\r\n").encode())
    (tmp_path / "bom.txt").write_text(t, encoding="utf-8-sig")
    (tmp_path / "single.txt").write_text(t.replace("\n\n", "\n").rstrip("\n"))
    for files in (("a.json", "b.json", "c.jsonl"), (str(text), "crlf.txt", "bom.txt", "single.txt")):
        for more in ([], ["--seq-len", "64"]):
            seen = []
            for f in files:
                E.main(["--task", "perplexity", "--model", str(dirs["hf"]), "--data", str(tmp_path / f), "--dtype",
                        "fp32", *more])
                seen.append(last_json(capsys)[0])
            for got in seen[1:]:
                assert got["tokens"] == seen[0]["tokens"] and got["perplexity"] == pytest.approx(
                    seen[0]["perplexity"], rel=1e-6), (files, more)


# ----------------------------------------------------------------------------------------------------
# train.py: a step's records at any split of --batch-size x --grad-accum

def test_a_step_trains_the_same_records_at_any_split_of_its_batch(tiny, tmp_path):
    """--batch-size 4 --grad-accum 1, 2 x 2 and 1 x 4 over one epoch of records of 1 to 120 words (19 trained: a
    short last step of 3): each step's loss is the mean over its tokens, and now over the same records, so the
    logged losses, the validation loss and the adapter agree (to float32 rounding). The micro-batches were
    length-grouped at --batch-size, so each split trained other records each step: first-step losses 10.37 (4 x 1)
    and 10.27 (1 x 4), validation losses 8.51 and 8.01 after the same epoch (README said accumulation equals one
    big batch)."""
    records = [dict(instruction=f"List {n} words.", input="" if i % 3 else "from the list",
                    output=" ".join(WORDS[(i + j) % len(WORDS)] for j in range(n)))
               for i, n in enumerate([1, 40, 3, 120, 7, 2, 60, 15] * 3)]
    (tmp_path / "records.json").write_text(json.dumps(records))
    runs = {}
    for bs, accum in ((4, 1), (2, 2), (1, 4)):
        out = tmp_path / f"{bs}x{accum}"
        argv = flags((tiny[0], str(tmp_path / "records.json")), out, "--batch-size", str(bs), "--grad-accum",
                     str(accum), "--epochs", "1", "--log-every", "1", "--val-fraction", "0.2", "--seq-len", "256",
                     "--warmup", "0")
        del argv[argv.index("--max-steps"):argv.index("--max-steps") + 2]  # (flags' 10: one epoch here)
        summary = train.train(train.parse_args(argv))
        log = [json.loads(line) for line in open(out / "metrics.jsonl")]
        runs[bs, accum] = (summary["tokens"], [m["loss"] for m in log if "loss" in m], summary["val_loss"],
                           load_safetensors(str(out / "adapter" / "adapter_model.safetensors")))
    tokens, losses, val, adapter = runs[4, 1]
    assert len(losses) == 5 and len(set(losses)) == 5
    for key, (t, ls, v, a) in runs.items():
        assert t == tokens and ls == pytest.approx(losses, rel=1e-5) and v == pytest.approx(val, rel=1e-5), key
        for k in adapter:      # (AdamW divides by small |g|: rounding magnified, as test_accumulation_equals_...)
            torch.testing.assert_close(a[k], adapter[k], atol=1e-4, rtol=0)


def test_a_checkpoint_saved_before_steps_were_grouped_whole_goes_on_in_its_order(tiny, tmp_path, monkeypatch):
    """A checkpoint whose state.json has no group_rule (saved before epoch_batches grouped whole steps) resumes in the
    order its run began (micro-batches grouped at --batch-size): its per-step losses equal a straight run's in that
    order (in the new order its steps 5-10 would train other records)."""
    def run(out, *more):
        args = train.parse_args(flags(tiny, out, "--log-every", "1", *more))
        args.group_rule = "micro"                                 # as every run before
        return train.train(args)
    run(tmp_path / "a")
    fault_at_loss_call(monkeypatch, 7, signal.SIGINT)           # step 4's first micro-batch
    assert run(tmp_path / "b")["interrupted"]
    monkeypatch.undo()
    path = tmp_path / "b" / "checkpoint" / "state.json"
    state = json.loads(path.read_text())
    assert state.pop("group_rule") == "micro" and state["step"] == 4
    path.write_text(json.dumps(state))
    train.train(train.parse_args(flags(tiny, tmp_path / "b", "--log-every", "1", "--resume")))
    rows = [[(m["step"], m.get("loss"), m.get("val_loss")) for m in map(json.loads, open(d / "metrics.jsonl"))]
            for d in (tmp_path / "a", tmp_path / "b")]
    assert rows[0] == rows[1] and len(rows[0]) == 11


@pytest.mark.parametrize("keys, context", [({}, 4096), ({"rope_theta": 1000000.0}, 16384),
                                           ({"rope_theta": 500000.0}, 8192),
                                           ({"rope_theta": 500000.0, "use_scaled_rope": True}, 131072)])
def test_a_meta_bases_context_is_told_by_its_llama_version_as_transformers_converter_tells_it(keys, context):
    """Meta's params.json records no context: a Llama 3.1 read in Meta's layout was given Llama 2's 4096 (perplexity's
    windows, export.py's max_position_embeddings: vLLM caps prompts at it) where its Hugging Face folder says 131072.
    Told now by what the file does record, as transformers' converter (convert_llama_weights_to_hf.py) sets it per
    version: Llama 2 4096, Code Llama (rope_theta 1e6) 16384, Llama 3 (rope_theta 500000) 8192, 3.1+ 131072."""
    p = dict(dim=64, n_layers=2, n_heads=4, vocab_size=128, multiple_of=32, norm_eps=1e-5) | keys
    assert checkpoint.meta_config(p, lambda: 128)["max_seq_len"] == context
