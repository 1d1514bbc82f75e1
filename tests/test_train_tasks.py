"""train.py and eval.py on the paper's other two tasks, end to end on tiny models, tokenizers and data the test writes:
RoBERTa / BERT on GLUE-format TSV folders (SST-2, MNLI's two dev sets, STS-B's regression) with the head saved beside
the adapter and eval.py reproducing the dev metrics training reported; early stopping keeping the best adapter; T5 on
a WMT16-format JSONL folder (the loss falls; eval.py's BLEU/ROUGE equal eval.bleu/rouge on its own translations);
malformed rows reaching the user through train.py with their line numbers."""
import argparse
import json
import os
import random
import re
import signal

import pytest
import torch
from tokenizers import ByteLevelBPETokenizer

import data
import eval as E
import checkpoint as C
import model as M
import tasks
import tokenizer
import train
from fixtures import t5_sentencepiece
from lorasp import load_adapter

POS, NEG = "good great fine lovely superb".split(), "bad awful poor dull boring".split()
FILL = "the film movie plot actors was is a very quite really story and but music scenes".split()


def sentence(rng, label):
    words = rng.choices(FILL, k=rng.randint(2, 5))
    words.insert(rng.randrange(len(words) + 1), rng.choice(POS if label else NEG))
    return " ".join(words)


def write_tsv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(map(str, r)) for r in [header, *rows]) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    """SST-2 (sentiment word decides), MNLI (three labels, matched and mismatched dev files), STS-B (a score)."""
    root, rng = tmp_path_factory.mktemp("glue"), random.Random(0)
    for split, n in (("train", 48), ("dev", 24)):
        write_tsv(root / "SST-2" / f"{split}.tsv", ["sentence", "label"],
                  [(sentence(rng, y), y) for y in (rng.randint(0, 1) for _ in range(n))])
        write_tsv(root / "STS-B" / f"{split}.tsv", ["index", "sentence1", "sentence2", "score"],
                  [(i, sentence(rng, 1), sentence(rng, i % 2), round(rng.uniform(0, 5), 2)) for i in range(n)])
    labels = ("entailment", "neutral", "contradiction")
    for split, n in (("train", 36), ("dev_matched", 12), ("dev_mismatched", 10)):
        write_tsv(root / "MNLI" / f"{split}.tsv", ["index", "genre", "sentence1", "sentence2", "gold_label"],
                  [(i, "fiction", sentence(rng, 1), sentence(rng, 0), labels[i % 3]) for i in range(n)])
    return root


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """{kind: checkpoint directory}: tiny random RoBERTa (byte-level BPE trained by HF tokenizers) and BERT (a
    WordPiece vocab.txt of the task's words)."""
    dirs = {}
    d = dirs["roberta"] = tmp_path_factory.mktemp("roberta")
    tk = ByteLevelBPETokenizer()
    tk.train_from_iterator([" ".join(POS + NEG + FILL)] * 20, vocab_size=300, min_frequency=1,
                           special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    tk.save_model(str(d))
    vocab = json.loads((d / "vocab.json").read_text())
    torch.manual_seed(0)
    M.save_pretrained(M.build_model(M.EncoderConfig("roberta", vocab_size=len(vocab), n_positions=48, n_type=1,
                                                    norm_eps=1e-5, pad_id=1, n_embd=32, n_ffn=64)), d)
    d = dirs["bert"] = tmp_path_factory.mktemp("bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POS, *NEG, *FILL]
    (d / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    M.save_pretrained(M.build_model(M.EncoderConfig("bert", vocab_size=len(words), n_positions=48, n_embd=32,
                                                    n_ffn=64)), d)
    return {k: str(v) for k, v in dirs.items()}


def run(main, argv, capsys):
    """main(argv) -> (its last printed line as JSON, everything printed)."""
    main(argv)
    out = capsys.readouterr().out
    return json.loads(out.strip().split("\n")[-1]), out


def glue_flags(model_dir, task, data_dir, out, *more):
    return ["--model", model_dir, "--data", f"glue/{task}", "--data-dir", str(data_dir), "--out", str(out),
            "--batch-size", "8", "--grad-accum", "1", "--seq-len", "32", "--lr", "3e-2", "--rank", "4",
            "--max-steps", "12", "--eval-every", "6", "--log-every", "6", "--save-every", "0", "--dtype", "fp32", *more]


@pytest.mark.parametrize("kind,task", [("roberta", "sst2"), ("bert", "mnli"), ("roberta", "stsb")])
def test_glue_adapter_and_head_reload_with_the_same_dev_metrics(kind, task, encoders, glue_dir, tmp_path, capsys):
    summary, out = run(train.main, glue_flags(encoders[kind], task, glue_dir, tmp_path), capsys)
    devs = {"sst2": ["dev"], "mnli": ["dev_matched", "dev_mismatched"], "stsb": ["dev"]}[task]
    metrics = {"sst2": ["accuracy", "loss"], "mnli": ["accuracy", "loss"], "stsb": ["pearson", "spearman", "loss"]}
    assert [k for k in summary if k.startswith("dev")] == devs and list(summary[devs[0]]) == metrics[task]
    assert summary["evaluated_step"] == 12 and summary["val_loss"] == summary[devs[0]]["loss"]
    base = M.load_pretrained(encoders[kind]).add_head(1 if task == "stsb" else 3 if task == "mnli" else 2)
    head = sum(p.numel() for n in type(base).head for p in base.get_submodule(n).parameters())
    assert summary["head_params"] == head and summary["trainable_params"] > head  # the adapter's entries besides
    assert f"adapter + {head:,} head" in out
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["modules_to_save"] == list(type(base).head) and cfg["task_type"] == "SEQ_CLS"
    assert cfg["target_modules"] == ["query", "value"]
    result, _ = run(E.main, ["--task", f"glue/{task}", "--model", encoders[kind], "--adapter",
                             str(tmp_path / "adapter"), "--data-dir", str(glue_dir), "--seq-len", "32",
                             "--batch-size", "8"], capsys)
    assert result["task"] == f"glue/{task}"
    for split in devs:
        assert result[split] == pytest.approx(summary[split], abs=1e-6, rel=0)
    # the training loss is the head's cross-entropy (STS-B: the squared error of its one output), summed
    model = load_adapter(base, str(tmp_path / "adapter")).eval()
    examples = data.glue_examples(task, tokenizer.load_tokenizer(encoders[kind]), 32, str(glue_dir))[0][:5]
    batch = data.collate(examples, model.config.pad_id)
    with torch.no_grad():
        loss, n = train.classification_loss(model, batch)
        z = model.classify(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    want = ((z[:, 0] - batch["labels"]) ** 2).sum() if task == "stsb" else \
        -z.log_softmax(1).gather(1, batch["labels"][:, None]).sum()
    assert n == 5 and torch.allclose(loss, want, atol=1e-5)
    # a DDP rank's filler batch (every label IGNORE, data.micro_batches) adds no loss and counts no row, STS-B's
    # float scores included; a row of IGNORE among real ones leaves the others' loss as it was
    batch["labels"][0] = data.IGNORE
    loss, n = train.classification_loss(model, batch)
    assert n == 4 and torch.allclose(loss, want - (((z[0, 0] - examples[0]["labels"]) ** 2) if task == "stsb" else
                                                   -z[0].log_softmax(0)[examples[0]["labels"]]), atol=1e-5)
    batch["labels"].fill_(data.IGNORE)
    loss, n = train.classification_loss(model, batch)
    assert n == 0 and loss.item() == 0.0


def test_the_printed_evaluate_command_gives_the_dev_metrics_training_printed(encoders, glue_dir, tmp_path, capsys):
    """train.py's closing evaluate: line, run as printed: it named no --seq-len, so eval.py cut the pairs at its own
    128 where training cut them at --seq-len (6 here; train.py's default is 512): other dev metrics, silently."""
    summary, out = run(train.main, glue_flags(encoders["roberta"], "sst2", glue_dir, tmp_path, "--seq-len", "6"),
                       capsys)
    command = next(line for line in out.splitlines() if line.startswith("evaluate: "))
    result, _ = run(E.main, command.split()[3:], capsys)
    assert result["dev"] == pytest.approx(summary["dev"], abs=1e-6, rel=0)
    assert capsys.readouterr().err == ""
    adapter = str(tmp_path / "adapter")                        # the adapter records its task: on CoLA (2 labels too,
    with pytest.raises(data.UserError, match="trained on glue/sst2, whose head's classes are negative, positive: "
                       "--task glue/cola's are unacceptable, acceptable"):  # its head would load) refused (a warning
        E.base_quant(encoders["roberta"], adapter, "auto", "glue/cola")     # before, then a score meaning nothing)
    for task, labels in (("glue/mnli", "3 labels"), ("glue/stsb", "1 (a score)")):  # (was the warning above, then
        with pytest.raises(SystemExit, match=rf"trained on glue/sst2, whose head has 2 outputs; --task {task} has "  # a
                           rf"{re.escape(labels)}: score it on --task glue/sst2, or train an adapter on {task}"):
            E.main(["--task", task, "--model", encoders["roberta"], "--adapter", adapter])  # size mismatch on load)
    assert capsys.readouterr().err == ""                       # refused before the warning
    with pytest.raises(SystemExit, match=r"trained on glue/sst2, with a classifier head: --task squad does not score "
                       r"it \(--task glue/TASK does\)"):    # (it was refused as "tensors lorasp does not load")
        E.main(["--task", "squad", "--model", encoders["roberta"], "--adapter", adapter, "--data-dir", str(tmp_path)])


def test_early_stopping_keeps_the_best_adapter(encoders, glue_dir, tmp_path, capsys, monkeypatch):
    """Scripted dev accuracies 50, 70, 60, 65: with --patience 2 the run stops at the 4th evaluation and OUT/adapter
    holds the weights of the 2nd (the best), not the last."""
    scores, seen = iter([50.0, 70.0, 60.0, 65.0, 90.0, 95.0]), []

    def evaluate(model, examples, loss_fn, args, autocast, pad_id):
        seen.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        accuracy = next(scores)
        return dict(val_loss=1 - accuracy / 100, dev=dict(accuracy=accuracy, loss=1 - accuracy / 100))
    monkeypatch.setattr(train, "evaluate", evaluate)
    summary, out = run(train.main, glue_flags(encoders["roberta"], "sst2", glue_dir, tmp_path, "--eval-every", "1",
                                              "--patience", "2"), capsys)
    assert summary["steps"] == 4 and summary["evaluated_step"] == 2 and summary["dev"]["accuracy"] == 70.0
    assert "early stop" in out and len(seen) == 4
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["dev"]["accuracy"] for r in logged if "dev" in r] == [50.0, 70.0, 60.0, 65.0]
    model = load_adapter(M.load_pretrained(encoders["roberta"]).add_head(2), str(tmp_path / "adapter"))
    saved = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    assert saved.keys() == seen[1].keys() and len(saved) > 4
    assert all(torch.equal(saved[n], seen[1][n]) for n in saved)
    assert not all(torch.equal(saved[n], seen[3][n]) for n in saved)
    # --resume of the early-stopped run has nothing left to do (it used to train on past the stop, 90.0 and 95.0
    # scripted, and replace OUT/adapter); --patience may not change on --resume
    files = {f: (tmp_path / f).read_bytes() for f in ("metrics.jsonl", "adapter/adapter_model.safetensors")}
    again, _ = run(train.main, glue_flags(encoders["roberta"], "sst2", glue_dir, tmp_path, "--eval-every", "1",
                                          "--patience", "2", "--resume"), capsys)
    assert again["steps"] == 4 and len(seen) == 4 and all((tmp_path / f).read_bytes() == b for f, b in files.items())
    with pytest.raises(train.UserError, match="--patience 2 -> 3"):
        train.train(train.parse_args(glue_flags(encoders["roberta"], "sst2", glue_dir, tmp_path, "--eval-every", "1",
                                                "--patience", "3", "--resume")))


def test_glue_resume_with_early_stopping_state_is_exact(encoders, glue_dir, tmp_path, capsys, monkeypatch):
    """12 steps straight vs Ctrl-C in step 7 then --resume (--patience: the best-so-far is rebuilt from metrics.jsonl):
    the same kept adapter and head, bit for bit, and the same evaluations."""
    more = ["--eval-every", "3", "--patience", "10", "--max-steps", "12"]
    straight = train.train(train.parse_args(glue_flags(encoders["bert"], "mnli", glue_dir, tmp_path / "a", *more)))
    calls, original = [0], train.classification_loss

    def interrupt(model, batch):
        calls[0] += torch.is_grad_enabled()
        if calls[0] == 7 and torch.is_grad_enabled():
            os.kill(os.getpid(), signal.SIGINT)
        return original(model, batch)
    monkeypatch.setattr(train, "classification_loss", interrupt)
    with pytest.raises(SystemExit):
        train.main(glue_flags(encoders["bert"], "mnli", glue_dir, tmp_path / "b", *more))
    monkeypatch.undo()
    resumed = train.train(train.parse_args(glue_flags(encoders["bert"], "mnli", glue_dir, tmp_path / "b", *more,
                                                      "--resume")))
    assert "interrupted at step 7" in capsys.readouterr().out
    for key in ("evaluated_step", "dev_matched", "dev_mismatched", "final_loss", "head_params"):
        assert resumed[key] == straight[key], key
    a, b = (C.load_safetensors(str(tmp_path / r / "adapter" / "adapter_model.safetensors")) for r in "ab")
    assert a.keys() == b.keys() and any("classifier" in k for k in a) and all(torch.equal(a[k], b[k]) for k in a)


WORDS = {"cat": "pisica", "dog": "cainele", "sees": "vede", "has": "are", "red": "rosie", "big": "mare",
         "house": "casa", "today": "azi", "now": "acum", "finds": "gaseste"}


@pytest.fixture(scope="module")
def t5_task(tmp_path_factory):
    """(checkpoint directory, data directory): a tiny random T5 v1.0 with a T5-style sentencepiece model, and
    train/validation/test JSONL files of word-for-word "translations" in the Hugging Face export's format."""
    d, data_dir, rng = tmp_path_factory.mktemp("t5"), tmp_path_factory.mktemp("wmt16"), random.Random(0)
    pairs = []
    for _ in range(120):
        en = rng.choices(list(WORDS), k=rng.randint(2, 5))
        pairs.append((" ".join(en), " ".join(WORDS[w] for w in en)))
    for split, rows in (("train", pairs[:96]), ("validation", pairs[96:108]), ("test", pairs[108:])):
        (data_dir / f"{split}.jsonl").write_text("".join(json.dumps({"translation": {"en": e, "ro": r}}) + "\n"
                                                         for e, r in rows), encoding="utf-8")
    t5_sentencepiece(d, [s for p in pairs for s in p] + [data.T5_PREFIX] * 5, 48)
    torch.manual_seed(0)
    config = M.T5Config(vocab_size=tokenizer.load_tokenizer(str(d)).vocab_size, d_model=32, d_kv=8, d_ff=64,
                        num_heads=4)
    t5 = M.build_model(config)
    with torch.no_grad():
        t5.shared.weight.normal_()  # T5's N(0, 1) embeddings: N(0, 0.02) would leave the rescaled head's logits near 0
    M.save_pretrained(t5, d)
    return str(d), str(data_dir)


def test_t5_trains_on_wmt16_jsonl_and_eval_scores_its_translations(t5_task, tmp_path, capsys):
    model_dir, data_dir = t5_task
    summary, out = run(train.main, ["--model", model_dir, "--data", "wmt16-en-ro", "--data-dir", data_dir, "--out",
                                    str(tmp_path), "--batch-size", "8", "--grad-accum", "1", "--seq-len", "48",
                                    "--lr", "5e-2", "--max-steps", "64", "--eval-every", "32", "--log-every", "8",
                                    "--save-every", "0", "--bleu", "4", "--dtype", "fp32"], capsys)
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses, val = [r["loss"] for r in logged if "loss" in r], [r["val_loss"] for r in logged if "val_loss" in r]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.5 and len(val) == 2 and val[1] < val[0]
    assert summary["head_params"] == 0 and {"bleu_before", "bleu_after", "chrf_after", "chrf++_after"} <= summary.keys()
    assert f"sentences after training: BLEU {summary['bleu_after']:.2f}  chrF {summary['chrf_after']:.2f}  chrF++ " \
        f"{summary['chrf++_after']:.2f}" in out
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["task_type"] == "SEQ_2_SEQ_LM" and cfg["target_modules"] == ["q", "v"] and not cfg["modules_to_save"]
    flags = ["--task", "wmt16-en-ro", "--model", model_dir, "--adapter", str(tmp_path / "adapter"), "--data-dir",
             data_dir, "--limit", "6", "--num-beams", "2", "--max-new-tokens", "16"]
    result, out = run(E.main, flags, capsys)
    model, tok = E.load_model(model_dir, str(tmp_path / "adapter"))
    pairs = data.read_translation(data_dir, "test")[:6]
    hyps = E.translate(model, tok, [s for s, _ in pairs], num_beams=2, max_new_tokens=16)
    refs = [t for _, t in pairs]
    assert result == dict(task="wmt16-en-ro", bleu=E.bleu(hyps, refs), chrf=E.chrf(hyps, refs),
                          **{"chrf++": E.chrf(hyps, refs, word_order=2)}, **E.rouge(hyps, refs), sentences=6)
    assert f"beam 2: BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}  chrF++ {result['chrf++']:.2f}  ROUGE-1 " \
        f"{result['rouge1']:.2f}" in out and any(hyps)


def test_t5_progress_and_summary_say_their_tokens_are_the_sources(t5_task, tmp_path, capsys):
    """tok/s and the summary's `tokens` count a T5 run's source tokens alone (the encoder's attention mask, as
    transformers' Trainer counts num_input_tokens_seen), not the targets the decoder also reads: the progress line
    said "tok/s" and the summary nothing of it. One epoch's count is the train sources' token total, counted here
    from the tokenizer (prefix + sentence + EOS), which the targets' total differs from."""
    model_dir, data_dir = t5_task
    summary, out = run(train.main, ["--model", model_dir, "--data", "wmt16-en-ro", "--data-dir", data_dir, "--out",
                                    str(tmp_path), "--batch-size", "8", "--grad-accum", "1", "--seq-len", "48",
                                    "--epochs", "1", "--log-every", "6", "--save-every", "0", "--dtype", "fp32"],
                       capsys)
    tok, pairs = tokenizer.load_tokenizer(model_dir), data.read_translation(data_dir, "train")
    sources = sum(len(tok.encode(data.T5_PREFIX + s, eos=True)) for s, _ in pairs)
    targets = sum(len(tok.encode(t, eos=True)) for _, t in pairs)
    assert summary["steps"] == 12 and summary["tokens"] == sources != targets
    assert summary["tokens_counted"].startswith("source tokens") and "targets not counted" in summary["tokens_counted"]
    assert len(re.findall(r"step +\d+/12  epoch [\d.]+/1  loss .* source tok/s  ETA", out)) == 2

def test_malformed_rows_and_mismatches_reach_the_user(encoders, glue_dir, t5_task, tmp_path, capsys):
    bad = tmp_path / "glue"
    write_tsv(bad / "SST-2" / "train.tsv", ["sentence", "label"], [("good film", 1), ("a\tstray tab", 0)])
    write_tsv(bad / "SST-2" / "dev.tsv", ["sentence", "label"], [("good film", 1)])
    with pytest.raises(SystemExit, match=r"error: .*train.tsv:3: 3 fields, expected 2"):  # one line, no traceback
        train.main(glue_flags(encoders["bert"], "sst2", bad, tmp_path / "out"))
    wmt = tmp_path / "wmt"
    wmt.mkdir()
    (wmt / "train.jsonl").write_text('{"translation": {"en": "a", "ro": "b"}}\n{"translation": {"en": "a"}}\n')
    with pytest.raises(SystemExit, match=r"error: .*train.jsonl, line 2: expected"):
        train.main(["--model", t5_task[0], "--data", "wmt16-en-ro", "--data-dir", str(wmt), "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        train.main(glue_flags(encoders["bert"], "wnli", glue_dir, tmp_path))
    assert "unknown GLUE task 'glue/wnli'; known: glue/cola, glue/sst2" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="trains roberta or bert or gpt2; .* holds t5"):
        train.main(glue_flags(t5_task[0], "sst2", glue_dir, tmp_path))
    with pytest.raises(SystemExit, match=r"--targets score: no linear layer of .* outside its classifier head is named "
                                          r"so; give --targets from their names' ends: dense, key, query, value$"):
        train.main(glue_flags(encoders["roberta"], "sst2", glue_dir, tmp_path, "--targets", "score"))


def test_glue_resume_names_the_dev_file_that_changed(encoders, glue_dir, tmp_path, capsys):
    """MNLI's dev_mismatched.tsv edited between a checkpoint and its --resume: the file is named, and the training
    examples said to be the checkpoint's (it was 'the training data changed', naming no file); train.tsv edited is
    still the training data."""
    import shutil
    data_dir = tmp_path / "glue"
    shutil.copytree(glue_dir, data_dir)
    argv = glue_flags(encoders["roberta"], "mnli", data_dir, tmp_path / "run", "--max-steps", "2", "--eval-every", "0")
    run(train.main, argv, capsys)
    dev = data_dir / "MNLI" / "dev_mismatched.tsv"
    dev.write_text(dev.read_text().replace("contradiction", "entailment"))
    with pytest.raises(SystemExit) as e:
        train.main(argv + ["--resume"])
    assert f"the validation data changed since the checkpoint (--data glue/mnli: {dev} changed" in str(e.value)
    assert "its training examples are the checkpoint's" in str(e.value)
    train_tsv = data_dir / "MNLI" / "train.tsv"
    train_tsv.write_text(train_tsv.read_text().replace("contradiction", "entailment"))
    with pytest.raises(SystemExit, match=re.escape(f"the training data changed since the checkpoint (--data glue/mnli: "
                                                   f"{train_tsv}, {dev} changed")):
        train.main(argv + ["--resume"])


def test_bert_saved_by_masked_lm_trains_its_fresh_pooler_and_peft_gives_our_logits(encoders, glue_dir, tmp_path,
                                                                                      capsys):
    """train.py on a BertForMaskedLM checkpoint (no bert.pooler.*; was refused, "2 tensors missing"): the pooler is
    drawn fresh, said so, trains with the classifier (its bias leaves 0) and is saved with it; eval.py with the
    adapter reads the adapter's pooler and says nothing of a fresh one; PEFT on transformers'
    BertForSequenceClassification of the same folder gives our logits."""
    import shutil
    import transformers
    from peft import PeftModel
    d = tmp_path / "mlm"
    d.mkdir()
    shutil.copy(os.path.join(encoders["bert"], "vocab.txt"), d)
    n = len((d / "vocab.txt").read_text().split())
    cfg = transformers.BertConfig(vocab_size=n, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=48, pad_token_id=0)
    torch.manual_seed(0)
    transformers.BertForMaskedLM(cfg).save_pretrained(d)
    summary, out = run(train.main, glue_flags(str(d), "sst2", glue_dir, tmp_path / "run"), capsys)
    assert out.count("holds no bert.pooler.dense.weight, bert.pooler.dense.bias") == 1  # the fresh pooler trains
    command = next(line for line in out.splitlines() if line.startswith("evaluate: "))
    result, again = run(E.main, command.split()[3:], capsys)   # the adapter brings its pooler: nothing fresh is read
    assert result["dev"] == pytest.approx(summary["dev"], abs=1e-6, rel=0) and "pooler" not in again  # (was the note)
    assert summary["head_params"] == 32 * 32 + 32 + 32 * 2 + 2  # the pooler and the classifier
    saved = C.load_safetensors(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    bias = next(t for k, t in saved.items() if "pooler.dense" in k and k.endswith("bias"))
    assert bias.abs().max() > 1e-3  # trained from its fresh zeros
    x = torch.randint(5, n, (3, 9), generator=torch.Generator().manual_seed(0))
    x[:, 0], mask = 2, torch.ones_like(x)
    mask[1, 6:] = 0
    ours = load_adapter(M.load_pretrained(d).add_head(2), str(tmp_path / "run" / "adapter")).eval()
    ref = transformers.BertForSequenceClassification.from_pretrained(d, num_labels=2)
    ref = PeftModel.from_pretrained(ref, tmp_path / "run" / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(ours.classify(x, mask), ref(input_ids=x, attention_mask=mask).logits, atol=1e-5,
                                   rtol=1e-5)


def test_no_training_examples_says_what_empties_each_task():
    """check_split's refusal of a run with no training example named --val-fraction for every --data, squad-gen,
    GLUE, WMT16 and SQuAD included, where it splits nothing (data.holds_out): each task now says its own cause."""

    def refusal(name, val_fraction=0.1):
        args = argparse.Namespace(data=name, seq_len=64, val_fraction=val_fraction)
        with pytest.raises(data.UserError) as e:
            tasks.check_split(args, [], [], [])
        return str(e.value)
    for name, cause in [("squad-gen", "every question's prompt (its context and question) is longer than --seq-len 64"),
                        ("squad", "every train question was left out"), ("glue/sst2", "its train split holds none"),
                        ("wmt16-en-ro", "its train split holds none")]:
        said = refusal(name)
        assert said.startswith(f"--data {name}: no training examples ({cause}") and "--val-fraction" not in said, said
    assert data.holds_out("r.jsonl") and "every record's prompt is longer than --seq-len 64, or --val-fraction 0.1 " \
        "held them all out" in refusal("r.jsonl") and "--val-fraction" not in refusal("r.jsonl", 0)
    assert "empty, or shorter than one block of --seq-len 64, or --val-fraction 0.5 held" in refusal("t.txt", 0.5)
