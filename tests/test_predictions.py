"""eval.py --predictions: each file it writes, recomputed by something that is not eval.py. WMT16's .txt is scored by
sacreBLEU, SQuAD's .json by evaluate-v1.1.py (its definitions, test_squad.official_v11), MMLU's and GLUE's rows by
the metrics' definitions (test_eval_wild.reference), perplexity's windows by a forward pass of each window alone; the
printed JSON line is the file's first line (or FILE.run.json beside the other tools' forms). Tiny random checkpoints
and data in the public formats, as tests/test_eval_wild.py builds them."""
import json
import math
import os
import statistics

import pytest
import sacrebleu
import torch
import torch.nn.functional as F

import data
import eval as E
import tokenizer
from fixtures import random_params, t5_sentencepiece, tiny  # noqa: F401  (tiny: a fixture)
from model import EncoderConfig, T5Config, build_model, load_pretrained, save_pretrained
from test_eval_wild import EN, RO, ROWS, WORDS, glue_dev, llama, reference, write_release  # noqa: F401  (llama)
from test_squad import official_v11


def run(capsys, argv):
    """eval.main(argv): (its printed JSON line, its stdout)."""
    E.main(argv)
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1]), out


def jsonl(path):
    """(the run's line, the example rows) of a --predictions .jsonl file."""
    lines = [json.loads(line) for line in open(path, encoding="utf-8")]
    return lines[0]["run"], lines[1:]


def test_mmlu_rows_give_the_printed_accuracies(llama, tmp_path, capsys):
    """Each question's row names its subject, test row and gold letter as the release's file has them; the prediction
    is the largest of the four log-probabilities; per subject and over all, the rows' share correct is the printed
    accuracy exactly, their mean over subjects the macro."""
    root = write_release(tmp_path / "data")
    argv = ["--task", "mmlu", "--model", str(llama), "--data-dir", str(root), "--dtype", "fp32", "--predictions",
            str(tmp_path / "mmlu.jsonl")]
    printed, _ = run(capsys, argv)
    head, rows = jsonl(tmp_path / "mmlu.jsonl")
    assert head["result"] == printed and head["examples"] == len(rows) == printed["questions"] == 6
    assert head["command"].endswith(" ".join(argv[-4:])) and head["flags"]["task"] == "mmlu"
    for r in rows:
        assert r["gold"] == ROWS[r["subject"]][1][r["index"]][5] and r["correct"] == (r["prediction"] == r["gold"])
        assert "ABCD"[max(range(4), key=r["logprobs"].__getitem__)] == r["prediction"] and max(r["logprobs"]) < 0
    by_subject = {s: [r["correct"] for r in rows if r["subject"] == s] for s in ROWS}
    assert {s: sum(c) / len(c) for s, c in by_subject.items()} == printed["subjects"]
    assert sum(r["correct"] for r in rows) / len(rows) == printed["micro"]
    assert statistics.mean(printed["subjects"].values()) == pytest.approx(printed["macro"], abs=1e-15)
    assert 0 < printed["micro"] < 1                            # neither nothing nor everything right


def glue_model(task, d, files):
    """A random BERT with GLUE's head for `task`, its logits spread from pair to pair (as test_eval_wild's)."""
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", '"', "quoted", *WORDS]))
    tok, labels = tokenizer.load_tokenizer(str(d)), 1 if task == "stsb" else len(data.GLUE[task][4])
    torch.manual_seed(0)
    m = random_params(build_model(EncoderConfig(vocab_size=len(WORDS) + 7, num_labels=labels)), 1)
    with torch.no_grad():
        m.classifier.weight.mul_(50)
        first = [torch.tensor([x]) for a, b, _ in files[data.GLUE[task][5][0]][1] for x in tok.encode_pair(a, b, 32)]
        m.classifier.bias.sub_(torch.cat([m.classify(x, token_type_ids=t) for x, t in zip(first[::2], first[1::2])]
                                         ).mean(0))        # (no class preferred over the first dev set)
    save_pretrained(m, d)


@pytest.mark.parametrize("task", ["mnli", "mrpc", "cola", "stsb"])  # accuracy; F1 and accuracy; Matthews; Pearson
def test_glue_rows_give_each_metric_by_its_formula(task, tmp_path, capsys):
    """Each dev example's row: its split, its index in the dev file (the label read there by hand), the prediction
    (STS-B: the score). The task's metrics, from the rows by their definitions (reference: accuracy, F1 of label 1,
    Matthews' phi from the 2x2 table, Pearson and Spearman of counted ranks), are the printed ones."""
    d, root = tmp_path / "bert", tmp_path / "glue"
    d.mkdir()
    files = {split: glue_dev(task, 23, seed=10 * i + len(task)) for i, split in enumerate(data.GLUE[task][5])}
    glue_model(task, d, files)
    os.makedirs(root / data.GLUE[task][0])
    for split, (lines, _) in files.items():
        (root / data.GLUE[task][0] / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    printed, _ = run(capsys, ["--task", f"glue/{task}", "--model", str(d), "--data-dir", str(root), "--seq-len", "32",
                              "--dtype", "fp32", "--predictions", str(tmp_path / "p.jsonl")])
    head, rows = jsonl(tmp_path / "p.jsonl")
    assert head["result"] == printed and len(rows) == sum(len(r) for _, r in files.values())
    for split, (_, read) in files.items():
        mine = [r for r in rows if r["split"] == split]
        assert [r["index"] for r in mine] == list(range(len(read)))
        assert [r["label"] for r in mine] == pytest.approx([y for _, _, y in read], abs=1e-6)  # (STS-B: float32's)
        p, y = [r["prediction"] for r in mine], [r["label"] for r in mine]
        assert len(set(p)) > 1                                 # the metrics are not a degenerate case's
        for k, v in reference(task, p, y).items():
            assert printed[split][k] == pytest.approx(v, abs=1e-9), (split, k)


def tiny_t5(d, lines):
    """A random T5 with a sentencepiece vocabulary (T5's ids) trained on lines; its whole-word pieces scaled up, so
    that a translation is several words (random weights repeat one piece)."""
    tok = tokenizer.load_tokenizer(str(t5_sentencepiece(d, lines, 80)))
    m = random_params(build_model(T5Config(vocab_size=tok.vocab_size, d_model=32, d_kv=8, d_ff=48, num_layers=2,
                                           num_heads=4, relative_attention_num_buckets=8,
                                           relative_attention_max_distance=20)), 1)
    words = [i for i in range(tok.sp.get_piece_size()) if len(p := tok.sp.id_to_piece(i)) > 2 and p.startswith("▁")]
    with torch.no_grad():
        m.shared.weight[words] *= 3
    save_pretrained(m, d)


def test_wmt16_txt_is_sacrebleus_input_and_gives_the_printed_bleu(tmp_path, capsys):
    """--predictions FILE.txt: the hypotheses, one a line in test order, and nothing else: sacreBLEU's corpus_bleu on
    the file's lines against the references is the printed BLEU exactly (and chrF); FILE.txt.run.json holds the printed
    line. The references are a first run's hypotheses, some cut short, so that BLEU is neither 0 nor 100."""
    (d := tmp_path / "t5").mkdir()
    (wmt := tmp_path / "wmt").mkdir()
    tiny_t5(d, [data.T5_PREFIX + e for e in EN] * 5 + RO * 5)
    argv = ["--task", "wmt16-en-ro", "--model", str(d), "--data-dir", str(wmt), "--max-new-tokens", "12", "--dtype",
            "fp32", "--predictions"]
    (wmt / "test.jsonl").write_text("".join(json.dumps({"translation": {"en": e, "ro": "x"}}) + "\n" for e in EN))
    run(capsys, argv + [str(tmp_path / "first.jsonl")])
    hyps = [r["hypothesis"] for r in jsonl(tmp_path / "first.jsonl")[1]]
    assert len(set(hyps)) > 3 and sum(len(h.split()) > 3 for h in hyps) > 3
    refs = [h if i % 2 else " ".join(h.split()[:-1]) or "x" for i, h in enumerate(hyps)]
    (wmt / "test.jsonl").write_text("".join(json.dumps({"translation": {"en": e, "ro": r}}) + "\n"
                                            for e, r in zip(EN, refs)))
    printed, _ = run(capsys, argv + [str(tmp_path / "hyp.txt")])
    with open(tmp_path / "hyp.txt", encoding="utf-8") as f:   # as sacrebleu's command line reads it
        lines = [line.rstrip("\n") for line in f]
    assert lines == hyps and 0 < printed["bleu"] < 100
    assert sacrebleu.corpus_bleu(lines, [refs]).score == printed["bleu"]
    assert sacrebleu.corpus_chrf(lines, [refs]).score == printed["chrf"]
    run_line = json.load(open(tmp_path / "hyp.txt.run.json"))["run"]
    assert run_line["result"] == printed and run_line["examples"] == len(EN)


def test_squad_json_is_the_official_scripts_input_and_gives_the_printed_scores(tmp_path, capsys):
    """--predictions FILE.json: {question id: answer}, evaluate-v1.1.py's predictions file: the script's exact match
    and F1 on it are the printed ones; the .jsonl's rows give each question's, their means the printed. Gold answers
    are added (a first run's answers for some questions, a word of the context for others), so that EM and F1 are
    neither 0 nor 100."""
    from bench.toy_squad import write_toy
    squad, bert = write_toy(tmp_path, n_train=1, n_dev=12)
    torch.manual_seed(0)
    save_pretrained(random_params(build_model(EncoderConfig("bert", vocab_size=len(open(f"{bert}/vocab.txt").read(
    ).split()), n_positions=128, n_layer=2, n_embd=32, n_head=4, n_ffn=64, qa=True)), 2), bert)
    argv = ["--task", "squad", "--model", bert, "--data-dir", squad, "--seq-len", "24", "--stride", "8", "--dtype",
            "fp32", "--predictions"]
    run(capsys, argv + [str(tmp_path / "first.json")])
    first = json.load(open(tmp_path / "first.json"))
    dev = json.load(open(f"{squad}/dev-v1.1.json"))
    for i, p in enumerate(dev["data"][0]["paragraphs"]):
        qa = p["qas"][0]
        extra = first[qa["id"]] if i % 3 == 0 else p["context"].split()[1] if i % 3 == 1 else None
        if extra:
            qa["answers"].append({"text": extra, "answer_start": p["context"].find(extra)})
    json.dump(dev, open(f"{squad}/dev-v1.1.json", "w"))
    printed, _ = run(capsys, argv + [str(tmp_path / "pred.json")])
    pred = json.load(open(tmp_path / "pred.json"))
    assert set(pred) == {p["qas"][0]["id"] for p in dev["data"][0]["paragraphs"]} and all(
        isinstance(a, str) for a in pred.values())
    expected = official_v11(dev["data"], pred)
    assert (printed["exact_match"], printed["f1"]) == (expected["exact_match"], expected["f1"])
    assert 0 < expected["exact_match"] < 100 and 0 < expected["f1"] < 100
    assert json.load(open(tmp_path / "pred.json.run.json"))["run"]["result"] == printed
    run(capsys, argv + [str(tmp_path / "pred.jsonl")])
    head, rows = jsonl(tmp_path / "pred.jsonl")
    assert head["result"] == printed and {r["id"]: r["prediction"] for r in rows} == pred
    for k in ("exact_match", "f1"):
        assert statistics.mean(r[k] for r in rows) == pytest.approx(printed[k], abs=1e-9)


def window_nll(model, ids, begin, tokens, seq_len):
    """A window's summed NLL, by its own forward pass: its last `tokens` targets against their logits."""
    window = torch.tensor([ids[begin:begin + seq_len]])
    with torch.no_grad():
        logp = F.log_softmax(model(window)[0].double(), -1)    # (T, vocab)
    T = window.shape[1]
    return -sum(float(logp[t - 1, window[0, t]]) for t in range(T - tokens, T))


def test_perplexity_windows_give_the_printed_perplexity(tiny, tmp_path, capsys):
    """Each window's row: its document, first token, targets scored and their summed NLL, which a forward pass of the
    window alone gives again; exp(sum NLL / sum tokens) is the printed perplexity, on a text file (windows of one
    document, several a forward pass) and on records cut at --seq-len (the part past it too)."""
    model, tok = load_pretrained(tiny[0]).eval(), tokenizer.load_tokenizer(tiny[0])
    records = [dict(r, output=f"{r['instruction']} {r['output']}") for r in json.load(open(tiny[1]))[:12]]
    (txt := tmp_path / "text.txt").write_text("".join(r["output"] + "\n" for r in records))
    (rec := tmp_path / "records.json").write_text(json.dumps(records))
    for path, seq_len in ((txt, 24), (rec, 108)):             # (the records' prompts: 99 to 110 tokens)
        printed, _ = run(capsys, ["--task", "perplexity", "--model", tiny[0], "--data", str(path), "--seq-len",
                                  str(seq_len), "--dtype", "fp32", "--predictions", str(tmp_path / "p.jsonl")])
        head, rows = jsonl(tmp_path / "p.jsonl")
        docs = data.perplexity_docs(str(path), tok)
        assert head["result"] == printed and sum(r["tokens"] for r in rows) == printed["tokens"]
        nll = sum(r["nll"] for r in rows)
        assert math.exp(nll / printed["tokens"]) == pytest.approx(printed["perplexity"], rel=1e-6)
        for r in rows:
            ids = docs[r["document"]][0][:seq_len] if r.get("part") == "cut" else docs[r["document"]][0]
            assert r["nll"] == pytest.approx(window_nll(model, ids, r["begin"], r["tokens"], seq_len), rel=1e-4)
        parts = {r.get("part") for r in rows}
        assert parts == ({None} if path == txt else {"cut", "past"}), parts  # (records past --seq-len too)
        assert len(rows) > 4 and len({r["document"] for r in rows}) == (1 if path == txt else len(records))


def test_generate_rows_and_an_interrupted_run(tiny, tmp_path, capsys, monkeypatch):
    """--task generate: each record with its answers, as printed. A run stopped by Ctrl-C writes nothing: an earlier
    FILE stays whole, no temporary is left."""
    (prompts := tmp_path / "p.txt").write_text("Name a color.\nCount to three.\n")
    out = tmp_path / "g.jsonl"
    printed, _ = run(capsys, ["--task", "generate", "--model", tiny[0], "--prompts", str(prompts), "--max-new-tokens",
                              "4", "--dtype", "fp32", "--predictions", str(out)])
    head, rows = jsonl(out)
    assert [r["record"] for r in rows] == [{"instruction": "Name a color."}, {"instruction": "Count to three."}]
    assert [{"base": r["base"]} for r in rows] == printed["answers"] and head["result"] == printed
    before = out.read_bytes()

    def stopped(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(E, "generate_answers", stopped)
    with pytest.raises(KeyboardInterrupt):
        E.main(["--task", "generate", "--model", tiny[0], "--prompts", str(prompts), "--predictions", str(out)])
    assert out.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["g.jsonl", "p.txt"]
