"""eval.py's benchmarks against their own reference scripts, on inputs in the forms users hold them (the twentieth
session's red-team pass): MMLU against Hendrycks et al.'s evaluate.py, written here again from its definitions
(format_subject, format_example, gen_prompt, the crop loop that drops worked examples, the " A" .. " D" token read
straight off sentencepiece, "Average accuracy" over all questions) on CSV files written byte by byte as the release
has them; WMT16's two file forms and sacreBLEU on the raw texts (no Romanian normalisation either side); GLUE's dev
files as the GLUE zip has them (CRLF, byte-order mark, CoLA without a header) scored by eval.py's command line
against the metrics' definitions written out here; eval.py's SQuAD answers and WMT16 translations against
transformers' own windows, model, generate and decode, scored by the official script, sacreBLEU and rouge-score."""
import json
import math
import os
import statistics

import pytest
import sacrebleu
import sentencepiece as spm
import torch

import data
import eval as E
import tokenizer
from model import EncoderConfig, LlamaConfig, build_model, load_pretrained, save_pretrained

# ----------------------------------------------------------------------------------------------------
# MMLU: Hendrycks et al.'s evaluate.py

# The release's files: no header, a field quoted where it holds a comma, a quote or a newline (doubled quotes inside).
# Every column mixes text and numbers, so the original's pandas.read_csv keeps each value as the string written (a
# column of numbers alone, "None" or an empty field it would turn into 2.0 / nan: lorasp keeps the text, a difference
# jobs.md states; these files leave it out, so that evaluate.py's prompts are these strings exactly).
MMLU_FILES = {
    "dev/college_chemistry_dev.csv":
        '"What is 1,000 + 1?",999,"1,001",1000,"a ""round"" number",B\n'
        'Which gas is inert?,Argon,Oxygen,"Chlorine,\nat room temperature",12,A\n'
        '"Say ""yes""",no,maybe,yes,"2,5",C\n',
    "test/college_chemistry_test.csv":
        '"pH of pure water, at 25 C?",7,1,14,none,A\n'
        'Pick D.,a,b,c,"d, of course",D\n'
        '"A question\nover two lines",first,second,third,fourth,B\n'
        'Is ice solid?,yes,no,"""maybe""",sometimes,A\n',
    "dev/us_foreign_policy_dev.csv": 'Who signs treaties?,The President,Congress,3,Nobody,A\r\n',
    "test/us_foreign_policy_test.csv":
        'Who ratifies treaties?,The President,The Senate,"The House, alone",9,B\r\n'
        '"Quote: ""peace""",war,peace,both,neither,B\r\n',
}
ROWS = {  # the same files' rows, read here by hand (not by a CSV reader): what evaluate.py's DataFrames hold
    "college_chemistry": (
        [["What is 1,000 + 1?", "999", "1,001", "1000", 'a "round" number', "B"],
         ["Which gas is inert?", "Argon", "Oxygen", "Chlorine,\nat room temperature", "12", "A"],
         ['Say "yes"', "no", "maybe", "yes", "2,5", "C"]],
        [["pH of pure water, at 25 C?", "7", "1", "14", "none", "A"],
         ["Pick D.", "a", "b", "c", "d, of course", "D"],
         ["A question\nover two lines", "first", "second", "third", "fourth", "B"],
         ["Is ice solid?", "yes", "no", '"maybe"', "sometimes", "A"]]),
    "us_foreign_policy": (
        [["Who signs treaties?", "The President", "Congress", "3", "Nobody", "A"]],
        [["Who ratifies treaties?", "The President", "The Senate", "The House, alone", "9", "B"],
         ['Quote: "peace"', "war", "peace", "both", "neither", "B"]]),
}


def hendrycks_subject(subject):
    """format_subject: every word of the file name preceded by a space (so the header says "about  college ...")."""
    return "".join(f" {w}" for w in subject.split("_"))


def hendrycks_example(row, with_answer=True):
    """format_example: the question, then "\\nA. option" .. "\\nD. option", "\\nAnswer:", then " X\\n\\n" for a worked
    example."""
    text = row[0]
    for letter, option in zip("ABCD", row[1:5]):
        text = text + "\n" + letter + ". " + option
    return text + "\nAnswer:" + (" " + row[5] + "\n\n" if with_answer else "")


def hendrycks_prompt(dev, subject, k, row):
    """gen_prompt(dev, subject, k) + format_example(test row, include_answer=False)."""
    head = "The following are multiple choice questions (with answers) about " + hendrycks_subject(subject) + ".\n\n"
    return head + "".join(hendrycks_example(dev[i]) for i in range(k)) + hendrycks_example(row, with_answer=False)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A tiny random Llama with a SentencePiece tokenizer (LLaMA's ids) trained on these questions."""
    d = tmp_path_factory.mktemp("llama")
    text = [hendrycks_prompt(dev, s, len(dev), row) for s, (dev, test) in ROWS.items() for row in test] * 30
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_prefix=str(d / "tokenizer"), vocab_size=400,
                                   model_type="bpe", character_coverage=1.0, byte_fallback=True, unk_id=0, bos_id=1,
                                   eos_id=2, pad_id=-1, minloglevel=2)
    torch.manual_seed(3)
    save_pretrained(build_model(LlamaConfig(vocab_size=400, max_seq_len=512, n_layer=2, n_embd=32, n_head=4,
                                            n_kv_head=2, n_ffn=64)), d)
    return d


def write_release(root):
    for name, text in MMLU_FILES.items():
        os.makedirs(root / os.path.dirname(name), exist_ok=True)
        with open(root / name, "w", encoding="utf-8", newline="") as f:  # the bytes above, line ends as written
            f.write(text)
    return root


def hendrycks_scores(llama, ntrain, max_len):
    """evaluate.py's loop: k = ntrain worked examples, one fewer while the prompt does not fit (its crop), the " A" ..
    " D" log-probabilities of the next token, cors per subject and "Average accuracy" = the mean of all cors. The
    model's tokens: sentencepiece's own encoding of the whole prompt, LLaMA's <s> first; letters: the pieces "▁A" ..
    "▁D", read off the vocabulary."""
    sp, model = spm.SentencePieceProcessor(model_file=str(llama / "tokenizer.model")), load_pretrained(llama)
    letters = [sp.piece_to_id("▁" + c) for c in "ABCD"]
    assert sp.unk_id() not in letters
    cors, shots = {}, []
    for subject, (dev, test) in sorted(ROWS.items()):
        dev = dev[:ntrain]                                   # pd.read_csv(...)[:args.ntrain]
        cors[subject] = []
        for row in test:
            k = min(ntrain, len(dev))
            while len([sp.bos_id()] + sp.encode(hendrycks_prompt(dev, subject, k, row))) > max_len:
                k -= 1
            ids = [sp.bos_id()] + sp.encode(hendrycks_prompt(dev, subject, k, row))
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids]))[0, -1].double(), -1)[letters]
            cors[subject].append("ABCD"[int(logp.argmax())] == row[5])
            shots.append(k)
    everything = [c for cs in cors.values() for c in cs]
    return {s: sum(c) / len(c) for s, c in cors.items()}, sum(everything) / len(everything), shots


def test_mmlu_is_hendrycks_evaluate_py_on_the_release_files(llama, tmp_path, capsys):
    """The rows, each prompt and the scores of `eval.py --task mmlu` equal evaluate.py's, computed here again, with
    the context wide enough for every worked example and then narrow enough that some prompts drop some; "micro" is
    evaluate.py's "Average accuracy", "macro" the mean of the subjects' accuracies (QLoRA's MMLU callback's score, which
    bench/paper_tables.py compares with the paper), and the printed line says which is which."""
    root, tok = write_release(tmp_path / "data"), tokenizer.load_tokenizer(str(llama))
    for subject, (dev, test) in ROWS.items():
        assert data.read_mmlu_csv(root / "dev" / f"{subject}_dev.csv") == dev
        assert data.read_mmlu_csv(root / "test" / f"{subject}_test.csv") == test
        for k in range(len(dev) + 1):
            for row in test:
                assert data.mmlu_prompt(subject, dev, row, k) == hendrycks_prompt(dev, subject, k, row)
    full = max(len(tok.encode(hendrycks_prompt(dev, s, len(dev), row))) for s, (dev, test) in ROWS.items()
               for row in test)
    for max_len, shortened in ((full, False), (full - 12, True)):
        subjects, average, shots = hendrycks_scores(llama, 5, max_len)
        E.main(["--task", "mmlu", "--model", str(llama), "--data-dir", str(root), "--seq-len", str(max_len),
                "--dtype", "fp32"])
        lines = capsys.readouterr().out.strip().splitlines()
        out = json.loads(lines[-1])
        assert out["subjects"] == subjects and out["micro"] == average and out["questions"] == len(shots)
        assert out["macro"] == pytest.approx(statistics.mean(subjects.values()), abs=1e-15)
        fewer = sum(k < len(ROWS[s][0]) for k, s in zip(shots, ["college_chemistry"] * 4 + ["us_foreign_policy"] * 2))
        assert out["shortened"] == fewer and bool(fewer) == shortened  # (the narrow context does drop some)
        assert f"micro {average:.4f} over {len(shots)} questions (evaluate.py's \"Average accuracy\")" in lines[-2]
        assert f"macro {out['macro']:.4f} over 2 subjects (their mean: QLoRA's MMLU score)" in lines[-2]


def test_mmlu_empty_option_reads_as_evaluate_py_prints_it(tmp_path, capsys):
    """An empty option (`q,1,,3,4,B`): pandas.read_csv, evaluate.py's reader, gives NaN, which its format_example
    writes as "B. nan" ("\\n{}. {}".format); lorasp wrote "B. ", so the prompt (and the score) was not evaluate.py's,
    without a word. Now "nan", as there, with a note naming the file, lines and options (lm-eval-harness, through HF's
    cais/mmlu, shows the option empty). A question with no text, where evaluate.py stops (NaN + str), is refused
    naming its line."""
    path, nan = tmp_path / "x_test.csv", float("nan")
    path.write_text('What is 1 + 1?,1,,3,4,B\n"Pick, D.",a,b,c,,D\nPick A.,a,b,c,d,A\n')
    cells = [["What is 1 + 1?", "1", nan, "3", "4", "B"], ["Pick, D.", "a", "b", "c", nan, "D"],  # pandas' cells
             ["Pick A.", "a", "b", "c", "d", "A"]]

    def format_example(row, include_answer=True):  # evaluate.py's, on pandas' cells
        prompt = row[0]
        for j in range(4):
            prompt += "\n{}. {}".format("ABCD"[j], row[j + 1])
        return prompt + "\nAnswer:" + (" {}\n\n".format(row[5]) if include_answer else "")

    rows = data.read_mmlu_csv(str(path))
    head = "The following are multiple choice questions (with answers) about " + hendrycks_subject("x") + ".\n\n"
    assert data.mmlu_prompt("x", rows[:2], rows[2], k=2) == head + format_example(cells[0]) + format_example(
        cells[1]) + format_example(cells[2], include_answer=False)
    assert "\nB. nan\nC. 3" in data.mmlu_prompt("x", rows, rows[0], k=0)
    note = capsys.readouterr().err
    assert f'note: {path}: empty options (line 1: B; line 2: D) read as "nan", as evaluate.py' in note, note
    for question in ("", "  "):
        path.write_text(f"q,1,2,3,4,A\n{question},1,2,3,4,B\n")
        with pytest.raises(ValueError, match=r"x_test\.csv, line 2: the question has no text"):
            data.read_mmlu_csv(str(path))


# ----------------------------------------------------------------------------------------------------
# WMT16 En-Ro: the two file forms, and sacreBLEU on the raw texts

PAIRS = [("The cat sits on the mat.", "Pisica stă pe preș."),
         ("Prices rose by 3.5% in 2016.", "Prețurile au crescut cu 3,5% în 2016."),
         ('He said: "no".', "El a spus: „nu”."),
         ("Romania's capital", "Capitala României, Bucureşti")]          # ş with a cedilla, as older texts have it


def test_wmt16_forms_read_alike_and_bleu_is_sacrebleu_without_romanian_normalisation(tmp_path):
    """The Hugging Face export (test.jsonl, {"translation": {"en", "ro"}} a line, as datasets' to_json writes it:
    ASCII escapes) and the aligned test.en / test.ro files (CRLF, a byte-order mark) give the same pairs; eval.bleu on
    them is sacreBLEU's corpus_bleu on the same raw strings, which normalises no Romanian letter: ş (cedilla) and ș
    (comma below) are different characters to both, so a hypothesis differing only there loses n-grams."""
    hf, plain = tmp_path / "hf", tmp_path / "plain"
    hf.mkdir(), plain.mkdir()
    (hf / "test.jsonl").write_text("".join(json.dumps({"translation": {"en": s, "ro": t}}) + "\n" for s, t in PAIRS))
    for i, lang in enumerate(("en", "ro")):
        (plain / f"test.{lang}").write_bytes(b"\xef\xbb\xbf" + "".join(p[i] + "\r\n" for p in PAIRS).encode())
    assert data.read_translation(str(hf), "test") == data.read_translation(str(plain), "test") == PAIRS
    refs = [t for _, t in PAIRS]
    hyps = ["Pisica stă pe preş.", "Preţurile au crescut cu 3,5 % în 2016.", "El a spus: „nu”.",
            "Capitala României, București"]                            # cedilla <-> comma below swapped
    ours = E.bleu(hyps, refs)
    assert ours == sacrebleu.corpus_bleu(hyps, [refs]).score and ours < 100
    assert E.bleu(refs, refs) == sacrebleu.corpus_bleu(refs, [refs]).score  # (100.00000000000004)
    unified = [h.replace("ş", "ș").replace("ţ", "ț") for h in hyps]  # what a normalising recipe would score
    assert E.bleu(unified, [r.replace("ş", "ș") for r in refs]) > ours


# ----------------------------------------------------------------------------------------------------
# GLUE: the dev files as the GLUE zip has them, scored by eval.py's command line

def ranks(xs):
    """Average ranks, 1-based, counted: rank = (values below) + (ties + 1) / 2."""
    return [sum(y < x for y in xs) + (sum(y == x for y in xs) + 1) / 2 for x in xs]


def reference(task, p, y):
    """A task's GLUE metrics x 100 from their definitions: accuracy; F1 of the positive class (label 1) from
    precision and recall; Matthews' phi from the 2x2 table; Pearson (statistics.correlation) and Spearman (Pearson of
    the counted average ranks)."""
    if task == "stsb":
        return {"pearson": 100 * statistics.correlation(p, y),
                "spearman": 100 * statistics.correlation(ranks(p), ranks(y))}
    acc = 100 * sum(a == b for a, b in zip(p, y)) / len(y)
    tp, fp = sum(a == b == 1 for a, b in zip(p, y)), sum(a == 1 != b for a, b in zip(p, y))
    fn, tn = sum(b == 1 != a for a, b in zip(p, y)), sum(a == b == 0 for a, b in zip(p, y))
    if task == "cola":
        den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return {"matthews_corrcoef": 100 * (tp * tn - fp * fn) / den if den else 0.0}
    if task in ("mrpc", "qqp"):
        precision, recall = tp / (tp + fp) if tp + fp else 0.0, tp / (tp + fn) if tp + fn else 0.0
        return {"f1": 100 * (2 * precision * recall / (precision + recall) if precision + recall else 0.0),
                "accuracy": acc}
    return {"accuracy": acc}


WORDS = "the a film was good bad very not it is dull great plot actors who where when why did he she said".split()
HEADERS = {  # the GLUE zip's dev headers (MNLI's dev files: five annotators' labels and the gold one)
    "sst2": "sentence\tlabel", "mrpc": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String",
    "stsb": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
    "mnli": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
            "sentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label",
    "rte": "index\tsentence1\tsentence2\tlabel", "qnli": "index\tquestion\tsentence\tlabel",
    "qqp": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"}
MNLI = ("entailment", "neutral", "contradiction")
STSB = ("0.000", "1.200", "2.500", "2.500", "3.800", "5.000")  # ties, as STS-B's scores have them


def glue_dev(task, n, seed):
    """(the dev file's lines as GLUE writes them, [(text a, text b, label)] they hold, read here by hand)."""
    g = torch.Generator().manual_seed(seed)
    pick = lambda k: int(torch.randint(k, (1,), generator=g))  # noqa: E731
    text = lambda: " ".join(WORDS[pick(len(WORDS))] for _ in range(1 + pick(6)))  # noqa: E731
    lines, rows = [HEADERS[task]] if task in HEADERS else [], []
    for i in range(n):
        a, b = text() + ' "quoted' * (i == 1), text()      # a lone quote is text (GLUE's files are not CSV-quoted)
        if task in ("sst2", "cola"):
            y = pick(2)
            lines.append(f"{a}\t{y}" if task == "sst2" else f"gj04\t{y}\t{'' if y else '*'}\t{a}")
            rows.append((a, None, y))
        elif task in ("mrpc", "qqp"):
            y = pick(2)
            lines.append(f"{y}\t{1000 + i}\t{2000 + i}\t{a}\t{b}" if task == "mrpc" else
                         f"{i}\t{1000 + i}\t{2000 + i}\t{a}?\t{b}?\t{y}")
            rows.append((a, b, y) if task == "mrpc" else (a + "?", b + "?", y))
        elif task == "stsb":
            s = STSB[pick(len(STSB))]
            lines.append(f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{a}\t{b}\t{s}")
            rows.append((a, b, float(torch.tensor(float(s)))))  # float32, as HF datasets' stsb label (and ours)
        elif task == "mnli":
            y = pick(3)
            lines.append(f"{i}\t{i}\t{i}e\tfiction\t( {a} )\t( {b} )\t(ROOT {a})\t(ROOT {b})\t{a}\t{b}\t"
                         + "\t".join([MNLI[y]] * 5) + f"\t{MNLI[y]}")
            rows.append((a, b, y))
        else:  # rte, qnli
            y = pick(2)
            lines.append(f"{i}\t{a}\t{b}\t{('entailment', 'not_entailment')[y]}")
            rows.append((a, b, y))
    return lines, rows


@pytest.mark.parametrize("task", ["mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb"])  # Table 1's
def test_glue_dev_files_as_the_zip_has_them_score_as_the_metrics_definitions(task, tmp_path, capsys):
    """`eval.py --task glue/TASK` on the GLUE zip's dev files (SST-2 with CRLF line ends, CoLA without a header, MRPC
    with its byte-order mark, STS-B's scores with ties, MNLI's two dev files, QNLI's and RTE's string labels, QQP)
    prints the metrics' definitions applied to the model's logits for each pair alone, unpadded (reference above):
    reading, batching, sorting by length, padding and the label order change nothing."""
    d, root = tmp_path / "bert", tmp_path / "glue"
    d.mkdir()
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", '"', "quoted", *WORDS]))
    tok, labels = tokenizer.load_tokenizer(str(d)), 1 if task == "stsb" else len(data.GLUE[task][4])
    files = {split: glue_dev(task, 23, seed=10 * i + len(task)) for i, split in enumerate(data.GLUE[task][5])}
    pairs = {split: [torch.tensor([x]) for a, b, _ in rows for x in tok.encode_pair(a, b, 32)]
             for split, (_, rows) in files.items()}  # (ids, types) of each pair, one after the other
    torch.manual_seed(0)
    m = build_model(EncoderConfig(vocab_size=len(WORDS) + 7, num_labels=labels)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # logits that differ from pair to pair: random weights, then a head that spreads [CLS]'s
        for p in m.parameters():  # small differences (a fresh head gives every pair one class) around no preference
            p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5 if p.ndim == 2 else
                    1 + 0.2 * torch.randn(p.shape, generator=g))
        m.classifier.weight.mul_(50)
        m.classifier.bias.zero_()
        first = pairs[data.GLUE[task][5][0]]
        m.classifier.bias.copy_(-torch.cat([m.classify(x, token_type_ids=t) for x, t in zip(first[::2], first[1::2])]
                                           ).mean(0))
    save_pretrained(m, d)
    model, expected = load_pretrained(d).eval(), {}
    os.makedirs(root / data.GLUE[task][0])
    for split, (lines, rows) in files.items():
        end = "\r\n" if task == "sst2" else "\n"
        (root / data.GLUE[task][0] / f"{split}.tsv").write_bytes((end.join(lines) + end).encode())
        with torch.no_grad():
            out = [model.classify(x, token_type_ids=t)[0] for x, t in zip(pairs[split][::2], pairs[split][1::2])]
        p = [float(z[0]) if labels == 1 else int(z.argmax()) for z in out]
        expected[split] = reference(task, p, [y for _, _, y in rows])
        assert len(set(p)) > 1                                # the metrics are not a degenerate case's
    E.main(["--task", f"glue/{task}", "--model", str(d), "--data-dir", str(root), "--seq-len", "32",
            "--batch-size", "5", "--dtype", "fp32"])
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got.pop("task") == f"glue/{task}" and list(got) == list(expected)
    for split, scores in expected.items():
        assert list(got[split])[:-1] == list(scores) and got[split]["loss"] >= 0
        for k, v in scores.items():
            assert got[split][k] == pytest.approx(v, abs=1e-3 if task == "stsb" else 1e-9), (split, k)
    # (STS-B: a batch's padded matmuls round otherwise than one pair's, ~1e-5 in these x50 scores: 1e-4 here)


# ----------------------------------------------------------------------------------------------------
# SQuAD v1.1: eval.py's answers and scores against transformers' windows and model and the official script's scoring

SQUAD_WORDS = "the a an in of to was is by river city built bridge king queen old new north south year stone".split()


def test_squad_answers_and_scores_are_transformers_windows_and_the_official_script(tmp_path, capsys):
    """`eval.py --task squad` on a BertForQuestionAnswering saved by transformers (random weights), contexts several
    windows long: each question's answer is the best span (start + end logit, context tokens, at most 30 tokens) over
    transformers' own overflowing windows (its stride is the overlap: room - ours) and its own model's logits, cut from
    the context by its offsets; EM and F1 are evaluate-v1.1.py's on those answers (several gold answers a question,
    articles and punctuation that normalise away)."""
    from test_squad import official_v11
    import transformers
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", "?",
                                                   *SQUAD_WORDS]))
    config = transformers.BertConfig(vocab_size=len(SQUAD_WORDS) + 8, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    hf = transformers.BertForQuestionAnswering(config).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():                                    # logits that vary from token to token
        for p in hf.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5 if p.ndim == 2 else
                    1 + 0.2 * torch.randn(p.shape, generator=g))
    hf.save_pretrained(tmp_path / "bert")
    (tmp_path / "bert" / "vocab.txt").write_text((tmp_path / "vocab.txt").read_text())
    rng, articles = torch.Generator().manual_seed(3), []
    pick = lambda: SQUAD_WORDS[int(torch.randint(len(SQUAD_WORDS), (1,), generator=rng))]  # noqa: E731
    for i in range(6):
        context = ". ".join(" ".join(pick() for _ in range(7)) + "," for _ in range(5)).capitalize() + "."
        words = context.split()
        golds = [" ".join(words[3 * i + 2:3 * i + 4]), "The " + words[3 * i + 2] + "!", words[-1]]
        articles.append({"title": f"t{i}", "paragraphs": [{"context": context, "qas": [
            {"id": f"q{i}", "question": f"{pick()} {pick()} ?",
             "answers": [{"text": t, "answer_start": max(context.find(t), 0)} for t in golds]}]}]})
    (tmp_path / "dev-v1.1.json").write_text(json.dumps({"version": "1.1", "data": articles}))
    max_len, stride = 24, 5
    tok = transformers.BertTokenizer(vocab=str(tmp_path / "vocab.txt"))
    predictions = {}
    for a in articles:
        p, = a["paragraphs"]
        qa, = p["qas"]
        room = max_len - len(tok(qa["question"])["input_ids"]) - 1
        enc = tok(qa["question"], p["context"], max_length=max_len, truncation="only_second", stride=room - stride,
                  return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length",
                  return_tensors="pt")
        offsets = enc.pop("offset_mapping")
        enc.pop("overflow_to_sample_mapping")
        assert len(offsets) > 2 and tok.unk_token_id not in enc["input_ids"]  # several windows; every word known
        with torch.no_grad():
            out = hf(**enc)
        best = max((float(out.start_logits[w, i] + out.end_logits[w, j]), w, i, j)
                   for w in range(len(offsets)) for i in range(max_len) for j in range(i, min(i + 30, max_len))
                   if enc.sequence_ids(w)[i] == enc.sequence_ids(w)[j] == 1)
        _, w, i, j = best
        predictions[qa["id"]] = p["context"][int(offsets[w, i, 0]):int(offsets[w, j, 1])]
    E.main(["--task", "squad", "--model", str(tmp_path / "bert"), "--data-dir", str(tmp_path), "--seq-len",
            str(max_len), "--stride", str(stride), "--batch-size", "4", "--dtype", "fp32"])
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = official_v11(articles, predictions)
    assert got["exact_match"] == expected["exact_match"] and got["f1"] == pytest.approx(expected["f1"], abs=1e-12)
    assert 0 < expected["f1"] < 100                            # neither nothing nor everything right


# ----------------------------------------------------------------------------------------------------
# WMT16 En-Ro end to end: eval.py against transformers' generate, T5Tokenizer's decode and sacreBLEU / rouge-score

EN = ["The cat sits on the mat.", "Prices rose by 3.5% in 2016.", 'He said: "no".', "A red car and a big tree.",
      "The city has an old bridge.", "We want the report before Monday."]
RO = ["Pisica stă pe preș.", "Prețurile au crescut cu 3,5% în 2016.", "El a spus: „nu”.",
      "O mașină roșie și un copac mare.", "Orașul are un pod vechi.", "Vrem raportul înainte de luni."]


def test_wmt16_eval_is_transformers_generate_decode_and_sacrebleu(tmp_path, capsys):
    """`eval.py --task wmt16-en-ro` on a T5 saved by transformers (random weights, a sentencepiece vocabulary with
    T5's ids): its BLEU, chrF, chrF++ and ROUGE equal sacreBLEU's and rouge-score's F-measures (mean over pairs) on
    transformers' own translations, one sentence at a time: T5Tokenizer's ids of prefix + source,
    generate(num_beams=4, length_penalty=0.6, early_stopping=True), batch_decode(skip_special_tokens=True). The
    references are those translations, some cut short, so that the scores are neither 0 nor 100."""
    from fixtures import t5_sentencepiece, random_params
    import transformers
    from rouge_score import rouge_scorer
    (tmp_path / "t5").mkdir()
    d = t5_sentencepiece(tmp_path / "t5", [data.T5_PREFIX + e for e in EN] * 5 + RO * 5, 80)
    tok = transformers.T5Tokenizer.from_pretrained(d)
    config = transformers.T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                   dropout_rate=0.0, decoder_start_token_id=0, feed_forward_proj="relu")
    hf = random_params(transformers.T5ForConditionalGeneration(config), 1).eval()
    words = [i for i in range(len(tok)) if len(tok.convert_ids_to_tokens(i)) > 2 and
             tok.convert_ids_to_tokens(i).startswith("▁")]   # whole words, likely: translations of several words
    with torch.no_grad():                                    # (random weights repeat one piece, "HHHH": 1 word)
        hf.shared.weight[words] *= 3
    hf.save_pretrained(d)
    hyps = []
    for e in EN:
        with torch.no_grad():
            out = hf.generate(input_ids=torch.tensor([tok(data.T5_PREFIX + e).input_ids]), num_beams=4,
                              length_penalty=0.6, early_stopping=True, do_sample=False, max_new_tokens=12)
        hyps += tok.batch_decode(out, skip_special_tokens=True)
    assert len(set(hyps)) > 3 and all(hyps) and sum(len(h.split()) > 3 for h in hyps) > 3
    refs = [h if i % 2 else " ".join(h.split()[:-1]) or h + " x" for i, h in enumerate(hyps)]
    (tmp_path / "wmt").mkdir()
    (tmp_path / "wmt" / "test.jsonl").write_text("".join(json.dumps({"translation": {"en": e, "ro": r}}) + "\n"
                                                         for e, r in zip(EN, refs)))
    E.main(["--task", "wmt16-en-ro", "--model", str(d), "--data-dir", str(tmp_path / "wmt"), "--num-beams", "4",
            "--max-new-tokens", "12", "--batch-size", "4", "--dtype", "fp32"])
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    scores = [scorer.score(r, h) for h, r in zip(hyps, refs)]
    bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
    assert got["sentences"] == len(EN) and 0 < bleu < 100
    assert got["bleu"] == pytest.approx(bleu, abs=1e-9)
    for k in ("rouge1", "rouge2", "rougeL"):
        assert got[k] == pytest.approx(100 * statistics.mean(s[k].fmeasure for s in scores), abs=1e-9), k
    for k, word_order in (("chrf", 0), ("chrf++", 2)):  # the same translations: the same float
        assert got[k] == sacrebleu.corpus_chrf(hyps, [refs], word_order=word_order).score, k


def test_mmlu_zero_shot_needs_no_dev_file_and_is_evaluate_py_with_ntrain_0(llama, tmp_path, capsys):
    """--shots 0 without dev/ (the test files alone) was refused ("dev/..._dev.csv: no such file (the worked examples of
    ...'s prompts)") though a zero-shot prompt has no worked example. Now it runs, says that no dev file was read, and
    scores as evaluate.py with --ntrain 0; --shots 1 without them is refused as before."""
    import shutil
    root = write_release(tmp_path / "data")
    shutil.rmtree(root / "dev")
    subjects, average, shots = hendrycks_scores(llama, 0, 512)
    assert set(shots) == {0}
    E.main(["--task", "mmlu", "--model", str(llama), "--data-dir", str(root), "--shots", "0", "--dtype", "fp32"])
    captured = capsys.readouterr()
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert out["subjects"] == subjects and out["micro"] == average and out["questions"] == len(shots), out
    assert "note: --shots 0: zero-shot prompts, no dev file read" in captured.out + captured.err
    with pytest.raises(SystemExit, match=r"college_chemistry_dev\.csv: no such file \(the worked examples of "):
        E.main(["--task", "mmlu", "--model", str(llama), "--data-dir", str(root), "--shots", "1", "--dtype", "fp32"])
