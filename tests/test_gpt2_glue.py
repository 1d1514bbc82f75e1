"""GPT-2 as a classifier (the second paper's GPT-2 runs on SST-2 and GLUE): the `score` head on the last real token
against transformers' GPT2ForSequenceClassification on the same random weights (right padding), and
`train.py --model <gpt2> --data glue/sst2` end to end: the head saved beside the adapter (PEFT's modules_to_save),
eval.py reproducing the dev metrics training reported; export.py's folder of it (and a --method full run's model/)
scored by transformers' AutoTokenizer + AutoModelForSequenceClassification as the run scores the dev set."""
import json
import shutil

import pytest
import torch
import transformers
from tokenizers import ByteLevelBPETokenizer

import data
import eval as E
import export
import model as M
import tokenizer
import train
from evalcli import load_model
from fixtures import random_params
from test_train_tasks import FILL, NEG, POS, glue_dir, run  # noqa: F401  (glue_dir: a fixture)


def test_score_head_matches_transformers(tmp_path):
    c = transformers.GPT2Config(vocab_size=90, n_positions=32, n_embd=32, n_layer=2, n_head=4, num_labels=3,
                                pad_token_id=0)
    ref = random_params(transformers.GPT2ForSequenceClassification(c), 0)
    ref.save_pretrained(tmp_path)
    ours = M.load_pretrained(tmp_path)
    assert ours.config.num_labels == 3 and M.GPT2Config.from_hf(ours.config.to_hf()) == ours.config
    ids = torch.randint(1, 90, (3, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 6:], mask[2, 2:] = 0, 0
    ids[mask == 0] = 0  # right padding with pad_token_id: HF's last non-pad token is our last real one
    want = ref(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ours.classify(ids, mask), want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.classify(ids[:1]), want[:1], atol=1e-4, rtol=1e-4)  # no mask: the last token


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """A tiny random GPT-2 whose byte-level BPE (vocab.json + merges.txt, trained here) knows the task's words:
    <|endoftext|> its only special token, no pad."""
    d = tmp_path_factory.mktemp("gpt2")
    tk = ByteLevelBPETokenizer()
    tk.train_from_iterator([" ".join(POS + NEG + FILL)] * 20, vocab_size=300, min_frequency=1,
                           special_tokens=["<|endoftext|>"])
    tk.save_model(str(d))
    vocab = json.loads((d / "vocab.json").read_text())
    torch.manual_seed(0)
    M.save_pretrained(M.build_model(M.GPT2Config(vocab_size=len(vocab), n_positions=48, n_embd=32)), d)
    return d


def sst2(d, glue_dir, out, capsys, *more):  # noqa: F811
    """train.py on glue/sst2 (12 steps, fp32: eval.py computes in fp32; auto would pick bf16 on a CPU with bf16
    units): (its summary, what it printed)."""
    return run(train.main, ["--model", str(d), "--data", "glue/sst2", "--data-dir", str(glue_dir), "--out", str(out),
                            "--batch-size", "8", "--grad-accum", "1", "--seq-len", "32", "--lr", "3e-2", "--rank", "4",
                            "--max-steps", "12", "--eval-every", "6", "--log-every", "6", "--save-every", "0",
                            "--dtype", "fp32", *more], capsys)


def scored_by_transformers(folder, tok, ours, glue_dir):
    """SST-2's dev sentences in one batch of AutoTokenizer on folder (padding=True): the run's ids (tok's
    encode_pair, padded on the right with config.json's pad_token_id), and AutoModelForSequenceClassification's
    logits the run's model's (ours, each sentence alone; fp32: to 1e-5). Returns the predictions."""
    texts = [a for a, _, _ in data.read_glue(glue_dir / "SST-2" / "dev.tsv", "sst2")]
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    batch = transformers.AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")
    rows, pad, n = [tok.encode_pair(a)[0] for a in texts], hf.config.pad_token_id, batch.input_ids.shape[1]
    assert batch.input_ids.tolist() == [r + [pad] * (n - len(r)) for r in rows] and len(set(map(len, rows))) > 1
    with torch.no_grad():
        want = torch.cat([ours.classify(torch.tensor([r])) for r in rows])
        torch.testing.assert_close(hf(**batch).logits, want, atol=1e-5, rtol=0)
    return want.argmax(-1)


def test_gpt2_trains_on_sst2_and_eval_reproduces_dev_metrics(gpt2, glue_dir, tmp_path, capsys):  # noqa: F811
    summary, out = sst2(gpt2, glue_dir, tmp_path / "run", capsys)
    assert summary["head_params"] == 32 * 2 and f"adapter + {32 * 2:,} head" in out  # score: C x 2, no bias
    per_block = 4 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32)) // 2  # c_attn, attn.c_proj, c_fc, mlp.c_proj
    assert summary["trainable_params"] == 64 + 2 * per_block  # 2 blocks, r=4, keep 0.5, + the head
    cfg = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert cfg["modules_to_save"] == ["score"] and cfg["task_type"] == "SEQ_CLS"
    result, _ = run(E.main, ["--task", "glue/sst2", "--model", str(gpt2), "--adapter",
                             str(tmp_path / "run" / "adapter"), "--data-dir", str(glue_dir), "--seq-len", "32",
                             "--batch-size", "8"], capsys)
    assert result["dev"] == pytest.approx(summary["dev"], abs=1e-6, rel=0)


def test_gpt2_sst2_export_is_scored_by_transformers_as_the_run(gpt2, glue_dir, tmp_path, capsys):  # noqa: F811
    """export.py's folder of a GPT-2 SST-2 adapter (a base with vocab.json + merges.txt and no pad): transformers'
    AutoTokenizer gives the dev sentences the run's ids, <|endoftext|> A <|endoftext|> (it added none), padded with
    an id of their own (the EOS was pad_token_id: the token before the closing mark read), and the classifier the
    run's logits and dev accuracy; eval.py on the folder (its tokenizer.json's template, the added pad) the same."""
    summary = sst2(gpt2, glue_dir, tmp_path / "run", capsys)[0]
    export.main(["--model", str(gpt2), "--adapter", str(tmp_path / "run"), "--out", str(tmp_path / "out")])
    ours, tok = load_model(str(gpt2), str(tmp_path / "run" / "adapter"), num_labels=2, dtype=torch.float32)
    predicted = scored_by_transformers(tmp_path / "out", tok, ours, glue_dir)
    gold = torch.tensor([y for _, _, y in data.read_glue(glue_dir / "SST-2" / "dev.tsv", "sst2")])
    assert (predicted == gold).float().mean().item() * 100 == pytest.approx(summary["dev"]["accuracy"], abs=1e-6)
    result, _ = run(E.main, ["--task", "glue/sst2", "--model", str(tmp_path / "out"), "--data-dir", str(glue_dir),
                             "--seq-len", "32", "--batch-size", "8"], capsys)    # lorasp on the folder's own files
    assert result["dev"] == pytest.approx(summary["dev"], abs=1e-6, rel=0)


@pytest.mark.parametrize("pad", [None, "<|endoftext|>"])
def test_gpt2_full_fine_tune_model_folder_is_scored_by_transformers_as_the_run(gpt2, glue_dir, tmp_path,  # noqa: F811
                                                                               capsys, pad):
    """A --method full GPT-2 SST-2 run's OUT/model (the base's vocab.json + merges.txt; no pad, or tokenizer_config.json
    naming <|endoftext|>, the closing mark): transformers' AutoTokenizer could not pad its batches (none) or padded
    with the closing mark, and added none of the run's marks. Now as export.py's folder: the run's ids, logits and
    dev accuracy; the checkpoint --resume reads keeps the embedding's rows."""
    base = shutil.copytree(gpt2, tmp_path / "base")
    if pad:
        (base / "tokenizer_config.json").write_text(json.dumps({"pad_token": pad}))
    summary = sst2(base, glue_dir, tmp_path / "run", capsys, "--method", "full", "--lr", "1e-3", "--save-every", "6")[0]
    model, rows = tmp_path / "run" / "model", json.loads((gpt2 / "config.json").read_text())["vocab_size"]
    assert json.loads((model / "config.json").read_text())["pad_token_id"] == rows        # a row of its own
    assert json.loads((tmp_path / "run" / "checkpoint" / "model" / "config.json").read_text())["vocab_size"] == rows
    ours = M.load_pretrained(model, dtype=torch.float32)
    predicted = scored_by_transformers(model, tokenizer.load_tokenizer(base), ours, glue_dir)
    gold = torch.tensor([y for _, _, y in data.read_glue(glue_dir / "SST-2" / "dev.tsv", "sst2")])
    assert (predicted == gold).float().mean().item() * 100 == pytest.approx(summary["dev"]["accuracy"], abs=1e-6)
