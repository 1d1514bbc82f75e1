"""GLUE: BERT's WordPiece and RoBERTa's BPE against transformers' BertTokenizer / RobertaTokenizer (HF tokenizers
library, what AutoTokenizer gives) and the Python BertTokenizerLegacy, on vocabularies the test writes; the official
TSV layouts of the eight tasks (written here, malformed rows included) and the download path, served offline."""
import csv
import json
import os
import zipfile

import pytest
import torch
import transformers
from tokenizers import ByteLevelBPETokenizer
from transformers import BertTokenizer, BertTokenizerLegacy, RobertaTokenizer

import data
from eval import glue_metrics
from fetch_real import path
from data import load_glue
from tokenizer import BPETokenizer, WordPieceTokenizer, load_tokenizer

TEXTS = ["The quick brown fox jumps over the lazy dog!", "Héllo, WÖRLD... Café naïve résumé Ångström",
         "unaffable jumped 123 4567 3.14", "中文日本語 한국어 テスト", "tabs\tnew\nline\r\x00ctrl\x07 zero\u200bwidth\u00a0nb",
         "a" * 101, "x$y+z<w=v>u^t`s|r~q_p", "«quotes» “smart” — dash … ellipsis ¿qué? ¡sí!", "", "   ",
         "[CLS] inside [SEP] text [MASK]", "ǅ ﬁ Ⅻ ½ e\u0301 combining", "don't stop-believing (1999) [x] {y}",
         "the the the the the the the the the the the the the the the the the the",
         "ascii\x07bell\x1funit\x7fdel\ttab \x00nul, then (some) punctuation: #$%&*@\\_"]  # the ASCII fast path
WORDS = ("the quick brown fox jump over lazy dog un aff able hello world cafe naive resume angstrom ##s ##ed ##ing "
         "##aff ##able ##ume ##mp ##th 12 ##3 3 1 4 中 文 日 本 don t stop believing qu é ##é x y z").split()


@pytest.fixture(scope="module")
def wordpiece_dir(tmp_path_factory):
    """vocab.txt: specials, single characters (ASCII, accented, punctuation), ## continuations and whole words."""
    d = tmp_path_factory.mktemp("wordpiece")
    chars = [chr(c) for c in range(33, 127)] + list("éöåçñ¿¡«»“”—…ÖÉÅ")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *chars, *("##" + c for c in chars if c.isalnum())]
    vocab = list(dict.fromkeys(vocab))
    assert 200 < len(vocab) < 400
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "pad_token_id": 0}))
    return d


@pytest.mark.parametrize("cased", [False, True])
def test_wordpiece_matches_bert_tokenizers(wordpiece_dir, tmp_path, cased):
    d = wordpiece_dir
    if cased:  # tokenizer_config.json says whether the model is cased
        d = tmp_path
        (d / "vocab.txt").write_text((wordpiece_dir / "vocab.txt").read_text(encoding="utf-8"), encoding="utf-8")
        (d / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    ours = load_tokenizer(d)
    assert isinstance(ours, WordPieceTokenizer) and ours.lower is not cased
    fast, slow = BertTokenizer(vocab=str(d / "vocab.txt"), do_lower_case=not cased), \
        BertTokenizerLegacy(str(d / "vocab.txt"), do_lower_case=not cased)
    assert (ours.bos_id, ours.eos_id, ours.pad_id, ours.unk_id) == (2, 3, 0, 1)
    for text in TEXTS:
        ids = ours.encode(text, eos=True)  # [CLS] text [SEP]
        assert ids == fast.encode(text), (text, fast.convert_ids_to_tokens(fast.encode(text)))
        if not (cased and "\u0301" in text):  # cased: the Python tokenizer composes e + U+0301 to é (NFC), the others not
            assert ids == slow.encode(text), text
        assert ours.decode(ids) == slow.decode(ids, clean_up_tokenization_spaces=False), text
    assert ours.encode("unaffable")[1:] == [fast.convert_tokens_to_ids(t) for t in ("un", "##aff", "##able")]
    assert ours.encode("a" * 101)[1:] == [ours.unk_id]  # over 100 characters: [UNK] without trying


def test_capital_greek_lowers_a_character_at_a_time_as_bert_tokenizer():
    """BertTokenizer (HF's tokenizers library) lower-cases each character alone: "ΛΟΓΟΣ" -> λ ##ο ##γ ##ο ##σ on the
    real MiniLM vocabulary. str.lower() applies Unicode's final-sigma rule to the word (λογος: λ ##ο ##γ ##ος)."""
    d = path("minilm", "vocab.txt").removesuffix("vocab.txt")
    ours, ref = load_tokenizer(d), BertTokenizer(vocab=os.path.join(d, "vocab.txt"))
    for a, b in (("ΟΔΥΣΣΕΥΣ and ΣΟΦΟΣ", "ΛΟΓΟΣ, ΣΣ σς"), ("İstanbul ΆΡΗΣ", None)):
        assert ours.encode_pair(a, b)[0] == ref(a, b)["input_ids"], (a, b)


def test_pairs_and_truncation_match_bert_tokenizer(wordpiece_dir):
    ours, ref = load_tokenizer(wordpiece_dir), BertTokenizer(vocab=str(wordpiece_dir / "vocab.txt"))
    for a in TEXTS:
        for b in TEXTS[:4] + TEXTS[-1:] + [None, ""]:
            for max_len in (5, 8, 13, 20, 64):
                # batched, as run_glue calls it: there an empty b is a second text ([CLS] A [SEP] [SEP])
                want = ref([a], None if b is None else [b], truncation=True, max_length=max_len)
                want = {k: v[0] for k, v in want.items()}
                assert ours.encode_pair(a, b, max_len) == (want["input_ids"], want["token_type_ids"]), (a, b, max_len)
    ids, types = ours.encode_pair("hello world", "the dog")
    assert ids[0] == ours.bos_id and ids.count(ours.eos_id) == 2 and types == [0] * 4 + [1] * 3
    with pytest.raises(ValueError, match="max_len 2 leaves no room"):
        ours.encode_pair("a", "b", 2)


def test_empty_second_text_as_run_glue_encodes_it():
    """run_glue tokenizes a batch of pairs: an empty text_b (a QQP row's blank question) is still a second segment,
    [CLS] A [SEP] [SEP], its [SEP] of type 1 (we encoded [CLS] A [SEP]); all-MiniLM-L6-v2's own tokenizer.json."""
    d = path("minilm", "vocab.txt").removesuffix("vocab.txt")
    ours, ref = load_tokenizer(d), transformers.AutoTokenizer.from_pretrained(d)
    want = ref(["Is it?", "Why?"], ["", "Because."], truncation=True, max_length=128)
    got, _ = data.encode_glue([("Is it?", "", 1), ("Why?", "Because.", 0)], ours)
    assert [e["input_ids"] for e in got] == want["input_ids"] and got[0]["input_ids"][-2:] == [102, 102]
    assert [e["token_type_ids"] for e in got] == want["token_type_ids"]


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory):
    """A tiny byte-level BPE with RoBERTa's specials: <s>=0, <pad>=1, </s>=2, <unk>=3 first, <mask> last."""
    d = tmp_path_factory.mktemp("roberta")
    tk = ByteLevelBPETokenizer()
    tk.train_from_iterator([t for t in TEXTS if t] * 20, vocab_size=330, min_frequency=2,
                           special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    tk.save_model(str(d))
    vocab = json.loads((d / "vocab.json").read_text())
    vocab["<mask>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    return d


def test_roberta_bpe_matches_roberta_tokenizer(roberta_dir):
    ours, ref = load_tokenizer(roberta_dir), RobertaTokenizer(vocab=str(roberta_dir / "vocab.json"),
                                                              merges=str(roberta_dir / "merges.txt"))
    assert isinstance(ours, BPETokenizer)
    assert (ours.bos_id, ours.pad_id, ours.eos_id) == (ref.bos_token_id, ref.pad_token_id, ref.eos_token_id) == (0, 1, 2)
    texts = [t for t in TEXTS if "\x00" not in t] + [" leading space", "a <s> b </s> c"]
    for a in texts:
        assert ours.encode(a, eos=True) == ref.encode(a), a  # <s> A </s>
        assert ours.decode(ours.encode(a)[1:]) == a
        for b in texts[:3] + [None, ""]:
            for max_len in (6, 11, 64):  # batched, as run_glue: "" is a second text, <s> A </s></s></s>
                want = ref([a], None if b is None else [b], truncation=True, max_length=max_len)["input_ids"][0]
                assert ours.encode_pair(a, b, max_len) == (want, [0] * len(want)), (a, b, max_len)


# ----------------------------------------------------------------------------------------------------
# The TSV files, in each task's own layout

HEADERS = {  # what the official files carry (test.tsv aside); CoLA's train/dev have no header
    "sst2": ["sentence", "label"],
    "mrpc": ["\ufeffQuality", "#1 ID", "#2 ID", "#1 String", "#2 String"],  # download_glue_data.py keeps the BOM
    "qqp": ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
    "stsb": ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"],
    "mnli": ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
             "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"],
    "qnli": ["index", "question", "sentence", "label"],
    "rte": ["index", "sentence1", "sentence2", "label"],
}
ROWS = {  # per task: (fields of one row, the example it reads as)
    "cola": (["gj04", "1", "", 'He said "hi.'], ('He said "hi.', None, 1)),  # a lone quote: QUOTE_NONE keeps it
    "sst2": (['it \'s a "charming" journey ', "1"], ('it \'s a "charming" journey ', None, 1)),
    "mrpc": (["0", "702876", "702977", "Amrozi accused his brother .", '"Referring to him'],
             ("Amrozi accused his brother .", '"Referring to him', 0)),
    "qqp": (["1", "2", "3", "How do I?", "What is?", "1"], ("How do I?", "What is?", 1)),
    "stsb": (["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A plane.", "An air plane.", "5.000"],
             ("A plane.", "An air plane.", 5.0)),
    "mnli": (["0", "1", "1e", "gov", "( a )", "( b )", "(ROOT a)", "(ROOT b)", "Conceptually cream", "Product",
              "neutral", "contradiction"], ("Conceptually cream", "Product", 2)),
    "qnli": (["0", "When?", "In 1066.", "not_entailment"], ("When?", "In 1066.", 1)),
    "rte": (["0", "No weapons.", "Weapons found.", "entailment"], ("No weapons.", "Weapons found.", 0)),
}


def write_task(root, task, rows):
    directory = os.path.join(root, data.GLUE[task][0])
    os.makedirs(directory, exist_ok=True)
    for split in ("train", *data.GLUE[task][5]):
        lines = [] if task == "cola" else ["\t".join(HEADERS[task])]
        with open(os.path.join(directory, f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines + ["\t".join(r) for r in rows]) + "\n")


@pytest.mark.parametrize("task", list(ROWS))
def test_each_task_reads_its_own_layout(task, tmp_path):
    fields, example = ROWS[task]
    write_task(tmp_path, task, [fields, fields])
    splits = load_glue(task, str(tmp_path))
    assert list(splits) == ["train", *(["dev_matched", "dev_mismatched"] if task == "mnli" else ["dev"])]
    assert all(rows == [example, example] for rows in splits.values())


def write_stsb(root, scores):
    """An STS-B folder in GLUE's layout: {split: scores}, one row per score."""
    fields = ROWS["stsb"][0]
    os.makedirs(os.path.join(root, "STS-B"), exist_ok=True)
    for split, ys in scores.items():
        with open(os.path.join(root, "STS-B", f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write("\n".join(["\t".join(HEADERS["stsb"])] + ["\t".join(fields[:-1] + [y]) for y in ys]) + "\n")


def test_stsb_scores_off_glues_0_to_5_scale_are_said(tmp_path, capsys):
    """GLUE's STS-B scores similarity 0-5; a common re-export (sentence-transformers' stsb) divides them by 5. Such
    a file was read without a word: Pearson and Spearman do not change with the scale, but the squared-error loss
    does, and a model learns the scale it trains on. A file whose every score is within [0, 1] is now said, and so
    are train and dev files on different scales; the scores are read as written (not rescaled) either way."""
    glue, dev = ["0.000", "1.200", "2.500", "5.000"], ["0.400", "3.800", "4.600", "2.000"]
    normalised = {split: [f"{float(y) / 5:.3f}" for y in ys] for split, ys in (("train", glue), ("dev", dev))}
    write_stsb(tmp_path / "glue", dict(train=glue, dev=dev))
    assert [y for *_, y in load_glue("stsb", str(tmp_path / "glue"))["dev"]] == [0.4, 3.8, 4.6, 2.0]
    assert capsys.readouterr().err == ""                               # GLUE's own scale: nothing to say
    write_stsb(tmp_path / "st", normalised)
    assert [y for *_, y in load_glue("stsb", str(tmp_path / "st"))["train"]] == [0.0, 0.24, 0.5, 1.0]
    note = capsys.readouterr().err
    assert f"note: {tmp_path / 'st' / 'STS-B'}: every STS-B score in train.tsv, dev.tsv is within [0, 1] (the " \
           "largest 1), where GLUE's are 0-5" in note, note
    assert "Pearson and Spearman do not change with the scale" in note
    load_glue("stsb", str(tmp_path / "st"), train=False)              # eval.py: the dev file alone
    assert "every STS-B score in dev.tsv is within [0, 1]" in capsys.readouterr().err
    write_stsb(tmp_path / "mixed", dict(train=glue, dev=normalised["dev"]))
    load_glue("stsb", str(tmp_path / "mixed"))
    note = capsys.readouterr().err
    assert ("every STS-B score in dev.tsv is within [0, 1] (the largest 0.92), where GLUE's are 0-5, as train.tsv's "
            "are (the largest 5): the model learns one scale and is scored on the other") in note, note


@pytest.mark.parametrize("task, edit, message", [
    ("cola", lambda r: r + ["extra"], r"train\.tsv:2: 5 fields, expected 4 \(cola\)"),
    ("rte", lambda r: r[:3] + ["maybe"], r"train\.tsv:3: label 'maybe' is not entailment or not_entailment"),
    ("stsb", lambda r: r[:9] + ["high"], r"train\.tsv:3: label 'high' is not a number"),
    ("mnli", lambda r: r[:4] + ["x\ty"] + r[5:], r"train\.tsv:3: 13 fields, expected 12"),  # a stray tab
])
def test_malformed_rows_name_file_and_line(task, edit, message, tmp_path):
    fields = ROWS[task][0]
    write_task(tmp_path, task, [fields, edit(list(fields))] if task != "cola" else [fields, edit(list(fields))])
    with pytest.raises(ValueError, match=message):
        load_glue(task, str(tmp_path))


@pytest.mark.parametrize("task", ["qqp", "sst2", "mnli"])
def test_rows_with_fields_missing_are_skipped_as_hf_glue_does(task, tmp_path, capsys):
    """HF's glue loader (csv.DictReader, QUOTE_NONE) gives a short row's missing fields as None, an empty class label
    None, and drops such rows: QQP's train.tsv has them. We skip them too (were refused, naming the line), with a note
    that counts them and names their lines."""
    fields, example = ROWS[task]
    short, unlabeled = fields[:-1], fields[:-1] + [""]  # (sst2: the text only)
    write_task(tmp_path, task, [fields, short, fields, unlabeled, [], fields])
    splits = load_glue(task, str(tmp_path))
    assert all(rows == [example] * 3 for rows in splits.values())
    note = capsys.readouterr().err
    assert f"train.tsv: skipped 2 rows with fields missing or no label (lines 3, 5)" in note, note
    assert "as HF's glue loader skips them" in note


@pytest.mark.parametrize("task", ["sst2", "qqp", "cola"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_tsv_written_by_pandas_to_csv_reads_as_pandas_reads_it(task, newline, tmp_path):
    """df.to_csv(path, sep="\\t", index=False) (Python's csv.writer, QUOTE_MINIMAL) quotes a field holding a tab, a
    newline or a quote, doubling its quotes: read back as pandas.read_csv reads it (we read the quotes as text, and a
    quoted tab or newline broke the row). GLUE's own files, with bare quotes, still read as text (ROWS above)."""
    header, (fields, example) = HEADERS.get(task, data.COLA_COLUMNS), ROWS[task]
    texts = ['He said "hi", then left', 'a\ttab and a "quote"', 'two\nlines', '"starts quoted', 'cr\r\nlf', 'plain']
    at = [header.index(c) for c in data.GLUE[task][2]]  # the text columns
    rows = []
    for i, text in enumerate(texts):
        row = list(fields)
        for j in at:
            row[j] = text + "!" * (j != at[0])
        rows.append(row)
    directory = tmp_path / data.GLUE[task][0]
    directory.mkdir()
    for split in ("train", "dev"):
        with open(directory / f"{split}.tsv", "w", encoding="utf-8", newline="") as f:
            csv.writer(f, delimiter="\t", lineterminator=newline).writerows(([] if task == "cola" else [header]) + rows)
    want = [(text, text + "!" if len(at) > 1 else None, example[2]) for text in texts]
    assert all(got == want for got in load_glue(task, str(tmp_path)).values())


def test_missing_columns_files_and_tasks(tmp_path):
    write_task(tmp_path, "qnli", [ROWS["qnli"][0]])
    (tmp_path / "QNLI" / "dev.tsv").write_text("index\tquestion\tsentence\tgold\n")
    with pytest.raises(ValueError, match=r"dev\.tsv: no column 'label' for GLUE qnli"):
        load_glue("qnli", str(tmp_path))
    (tmp_path / "QNLI" / "dev.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"needs train\.tsv, dev\.tsv"):
        load_glue("qnli", str(tmp_path))
    with pytest.raises(ValueError, match="unknown GLUE task 'wnli'; known tasks: cola, sst2"):
        load_glue("wnli")


def test_download_to_the_cache(tmp_path, monkeypatch):
    """Served offline: a zip for RTE, SentEval's file + GLUE's dev ids for MRPC (split as download_glue_data.py
    does); fetched once, then read from the cache; a failed download leaves no folder behind."""
    served = tmp_path / "served"
    write_task(served, "rte", [ROWS["rte"][0]])
    with zipfile.ZipFile(tmp_path / "RTE.zip", "w") as z:
        for name in ("train.tsv", "dev.tsv"):
            z.write(served / "RTE" / name, f"RTE/{name}")
    mrpc = ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String", "1\t1\t2\ttrain a\ttrain b", "0\t3\t4\tdev a\tdev b",
            "1\t5\t6\ttrain c\ttrain d", "0\t7\t8\tform\x0cfeed, NEL\x85and U+2028\u2028inside\ttext"]  # not line ends
    (tmp_path / "msr_paraphrase_train.txt").write_text("\r\n".join(mrpc) + "\r\n", encoding="utf-8")
    (tmp_path / "mrpc_dev_ids.tsv").write_text("3\t4\n", encoding="utf-8")
    fetched = []

    def fake_download(url, path, **_):
        fetched.append(url.rsplit("/", 1)[1])
        with open(tmp_path / fetched[-1], "rb") as src, open(path, "wb") as dst:
            dst.write(src.read())
    monkeypatch.setattr(data, "download", fake_download)
    cache = tmp_path / "cache"
    monkeypatch.setenv("LORASP_CACHE", str(cache))
    assert load_glue("rte")["dev"] == [ROWS["rte"][1]]
    assert load_glue("rte")["train"] == [ROWS["rte"][1]] and fetched == ["RTE.zip"]
    mrpc_splits = load_glue("mrpc")
    assert mrpc_splits == {"train": [("train a", "train b", 1), ("train c", "train d", 1),
                                     ("form\x0cfeed, NEL\x85and U+2028\u2028inside", "text", 0)],
                           "dev": [("dev a", "dev b", 0)]}  # as HF's glue.py and download_glue_data.py read them
    assert sorted(os.listdir(cache / "glue")) == ["MRPC", "RTE"]

    def broken(url, path, **_):
        raise OSError("network is unreachable")
    monkeypatch.setattr(data, "download", broken)
    with pytest.raises(OSError, match="unreachable"):
        load_glue("sst2")
    assert sorted(os.listdir(cache / "glue")) == ["MRPC", "RTE"]


def test_glue_metrics_by_task():
    """Hand-computed: TP 2, FP 1, FN 1, TN 2 -> F1 2/3, accuracy 4/6, MCC (2*2 - 1*1) / sqrt(3*3*3*3) = 1/3."""
    p, y = [1, 1, 0, 0, 1, 0], [1, 0, 1, 0, 1, 0]
    assert glue_metrics("mrpc", p, y) == pytest.approx({"f1": 100 * 2 / 3, "accuracy": 100 * 4 / 6})
    assert list(glue_metrics("qqp", p, y)) == ["f1", "accuracy"]
    assert glue_metrics("cola", p, y) == pytest.approx({"matthews_corrcoef": 100 / 3})
    assert glue_metrics("rte", p, y) == glue_metrics("mnli", p, y) == pytest.approx({"accuracy": 100 * 4 / 6})
    s = glue_metrics("stsb", [0.0, 1.0, 4.0, 2.0], [1.0, 2.0, 5.0, 3.0])
    assert s["spearman"] == pytest.approx(100) and s["pearson"] == pytest.approx(100)  # y = x + 1: exact


def hf_glue_rows(path):
    """HF's glue.py (huggingface/datasets, datasets/glue/glue.py _generate_examples), as the oracle: every GLUE file
    read by csv.DictReader(f, delimiter="\\t", quoting=csv.QUOTE_NONE), rows with a None field dropped."""
    with open(path, encoding="utf8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(r["sentence"], None, int(r["label"])) for r in rows if None not in r.values()]


@pytest.mark.parametrize("rows, quoted, bare", [
    (['"say ""hi"""\t1', 'he said "x"\t0'], 2, 3),                 # a to_csv-looking row, then a bare quote
    (['he said "x"\t0', 'plain\t1', '"""Hello"" in French?"\t1'], 4, 2),  # the other way round (a QQP question)
    (['"""Hi"" there"\t1', '"starts a quote and never ends it\t0', 'then\t1'], 2, 3),  # a lone quote (csv.Error)
])
def test_tsv_quoted_in_some_rows_only_reads_as_hf_glue_reads_it(rows, quoted, bare, tmp_path, capsys):
    """A file some of whose rows look quoted as pandas' to_csv writes them and some not (QQP's user-written
    questions, one written "a ""b"" c"): read as HF's glue loader reads every GLUE file, quotes as text, field for
    field, with a note naming a line of each kind. It was refused, so glue/qqp could not be loaded at all."""
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    got = data.read_glue(str(path), "sst2")
    assert got == hf_glue_rows(path) and len(got) == len(rows)
    assert got[quoted - 2][0] == rows[quoted - 2].split("\t")[0]  # the doubled quotes kept as written
    note = capsys.readouterr().err
    assert f"train.tsv: line {quoted} reads as quoted the way pandas' to_csv writes it, line {bare} has a quote " \
           "that is text: read with quotes as text throughout" in note and note.count("\n") == 1


def test_only_pandas_quoted_or_only_glue_quoted_files_read_without_a_note(tmp_path, capsys):
    """Either kind alone is read one way, without a note: a file written by to_csv is unquoted as pandas reads it, a
    GLUE-style file (quotes as text) is what HF's glue loader reads."""
    path = tmp_path / "train.tsv"
    path.write_text('sentence\tlabel\n"say ""hi"""\t1\nplain\t0\n"a\tb"\t1\n', encoding="utf-8")
    assert data.read_glue(str(path), "sst2") == [('say "hi"', None, 1), ("plain", None, 0), ("a\tb", None, 1)]
    path.write_text('sentence\tlabel\nhe said "x"\t0\n"Referring to him\t1\n', encoding="utf-8")
    assert data.read_glue(str(path), "sst2") == hf_glue_rows(path) == [('he said "x"', None, 0),
                                                                       ('"Referring to him', None, 1)]
    assert capsys.readouterr().err == ""


def test_only_rows_with_a_quote_are_written_back_to_tell_how_a_file_is_quoted(tmp_path, monkeypatch):
    """written_quoted wrote every row back with csv.writer to compare it, though a row without a quote reads the same
    either way (MNLI's 392,702 rows: 6 s of its 11 s reading); now only the rows holding a quote are, with the same
    answers as before (the two tests above)."""
    written, writer = [], csv.writer
    monkeypatch.setattr(data.csv, "writer", lambda *a, **k: written.append(1) or writer(*a, **k))
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\n" + "plain\t1\n" * 50 + '"say ""hi"""\t1\n' + "plain\t0\n" * 50, "utf-8")
    assert data.written_quoted(str(path)) and len(written) == 1
    path.write_text("sentence\tlabel\n" + "plain\t1\n" * 50, "utf-8")
    assert not data.written_quoted(str(path)) and len(written) == 1


def test_trailing_tabs_are_empty_fields_read_as_hf_glue_reads_them(tmp_path):
    """A row ending in a tab has one more, empty, field: HF's glue loader (csv.DictReader) leaves it out and reads the
    row; it was refused as a stray tab. A stray tab inside the text (a field that is not empty) is still refused."""
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\nabc\t1\t\ndef\t0\t\t\n", encoding="utf-8")
    assert data.read_glue(str(path), "sst2") == [("abc", None, 1), ("def", None, 0)]
    path.write_text("sentence\tlabel\nabc\t1\tx\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.tsv:2: 3 fields, expected 2"):
        data.read_glue(str(path), "sst2")


def test_multinli_own_files_no_consensus_pairs_are_skipped_as_glues_files_leave_them_out(tmp_path, capsys):
    """MultiNLI's own multinli_1.0_dev_matched.txt has the columns lorasp reads (sentence1, sentence2, gold_label) and
    185 pairs labelled "-" (no consensus of the five annotators): GLUE's dev_matched.tsv is that file without them
    (9,815 of 10,000). Given as dev_matched.tsv it was refused at the first "-" ("label '-' is not ..."); its pairs
    now read as GLUE's file of the same pairs, with a note."""
    header = "\t".join(["gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
                         "sentence2_parse", "sentence1", "sentence2", "promptID", "pairID", "genre", "label1",
                         "label2", "label3", "label4", "label5"]) + "\n"
    rows = ["\t".join(r) + "\n" for r in (
        ["neutral", "( ( The rights ) )", "( Everyone )", "(ROOT)", "(ROOT)", "The new rights are nice enough",
         "Everyone really likes the newest benefits ", "63735", "63735n", "slate", "neutral", "entailment", "neutral",
         "neutral", "neutral"],
        ["-", "( a )", "( b )", "(ROOT)", "(ROOT)", "yeah i know", "I know that.", "1", "1n", "telephone", "neutral",
         "entailment", "contradiction", "entailment", "neutral"],
        ["contradiction", "( c )", "( d )", "(ROOT)", "(ROOT)", "This site includes a list.", "The Government "
         "Executive articles housed on the website are not able to be searched.", "2", "2c", "slate",
         *["contradiction"] * 5])]
    (tmp_path / "dev_matched.tsv").write_text(header + "".join(rows))
    (tmp_path / "glue.tsv").write_text("index\tsentence1\tsentence2\tgold_label\n" + "".join(
        f"{i}\t{r.split(chr(9))[5]}\t{r.split(chr(9))[6]}\t{r.split(chr(9))[0]}\n" for i, r in enumerate(rows) if
        r[0] != "-"))
    assert data.read_glue(str(tmp_path / "dev_matched.tsv"), "mnli") == data.read_glue(str(tmp_path / "glue.tsv"),
                                                                                         "mnli")
    assert data.read_glue(str(tmp_path / "dev_matched.tsv"), "mnli")[1] == (
        "This site includes a list.", "The Government Executive articles housed on the website are not able to be "
        "searched.", 2)
    assert "dev_matched.tsv: skipped 1 row with fields missing or no label (line 3)" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"x.tsv:2: label '-' is not entailment or not_entailment"):  # (RTE: no "-")
        (tmp_path / "x.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\t-\n")
        data.read_glue(str(tmp_path / "x.tsv"), "rte")


def bert_classifier(directory, id2label, vocab_size):
    """A tiny fine-tuned BertForSequenceClassification naming its classes id2label, saved into directory."""
    cfg = transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=128, id2label=dict(enumerate(id2label)))
    transformers.set_seed(0)
    hf = transformers.BertForSequenceClassification(cfg).eval()
    for p in hf.parameters():
        p.data.normal_(0, 0.5)
    hf.save_pretrained(directory)
    return hf


@pytest.mark.parametrize("task, id2label", [
    ("mnli", ["CONTRADICTION", "NEUTRAL", "ENTAILMENT"]),  # roberta-large-mnli's config.json
    ("sst2", ["POSITIVE", "NEGATIVE"]), ("rte", ["entailment", "not_entailment"]),  # (GLUE's own order)
    ("qnli", ["LABEL_0", "LABEL_1"])])                                                # (no names: GLUE's order)
def test_a_fine_tuned_heads_label_names_are_mapped_as_run_glue_maps_them(task, id2label, tmp_path, capsys):
    """A fine-tuned classifier's head whose config.json names its classes in another order than GLUE's
    (roberta-large-mnli: contradiction, neutral, entailment) was scored in GLUE's order: 3.3% accuracy for a model
    run_glue.py scores at 86.7%. Its outputs are now read by name, as run_glue.py's label_to_id; the oracle is
    transformers' own model, its predictions named by its id2label and its loss on the gold names' ids."""
    import eval as E
    words = "a b c d e f g h the cat dog sat ran".split()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words))
    hf = bert_classifier(tmp_path / "m", id2label, 18)
    ref_tok, names = BertTokenizer(str(tmp_path / "m" / "vocab.txt")), [n.lower() for n in id2label]
    glue_names = {"mnli": ["entailment", "neutral", "contradiction"], "sst2": ["negative", "positive"]}.get(
        task, ["entailment", "not_entailment"])                            # GLUE's class order (unnamed: the head's)
    rng, rows = __import__("random").Random(0), []
    for i in range(40):
        a, b = (" ".join(rng.choice(words) for _ in range(n)) for n in (5, 4))
        b = None if task == "sst2" else b                                   # (one sentence)
        logits = hf(**ref_tok(a, b, return_tensors="pt")).logits[0].detach()
        gold = names[int(logits.argmax())] if i % 5 else rng.choice(names)  # right about 4 times in 5
        rows.append((a, b, gold, float(torch.nn.functional.cross_entropy(logits, torch.tensor(names.index(gold)))),
                     names[int(logits.argmax())] == gold))
    header, fields = HEADERS[task], {"mnli": (8, 9, 11), "rte": (1, 2, 3), "qnli": (1, 2, 3), "sst2": (0, 0, 1)}[task]
    lines = []
    for a, b, gold, _, _ in rows:
        r = ["x"] * len(header)
        r[fields[1]], r[fields[0]] = b, a
        gold = gold if gold in glue_names else glue_names[names.index(gold)]  # (LABEL_1: GLUE's second class)
        r[fields[2]] = str(glue_names.index(gold)) if task == "sst2" else gold
        lines.append("\t".join(r))
    os.makedirs(tmp_path / data.GLUE[task][0])
    for split in data.GLUE[task][5]:
        (tmp_path / data.GLUE[task][0] / f"{split}.tsv").write_text("\n".join(["\t".join(header)] + lines) + "\n")
    E.main(["--task", f"glue/{task}", "--model", str(tmp_path / "m"), "--data-dir", str(tmp_path)])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for split in data.GLUE[task][5]:
        assert out[split]["accuracy"] == pytest.approx(100 * sum(r[4] for r in rows) / len(rows))
        assert out[split]["loss"] == pytest.approx(sum(r[3] for r in rows) / len(rows), rel=1e-5)


def test_head_order_reads_config_names_unless_the_adapter_brings_the_head(tmp_path, capsys):
    """evalcli.head_order: run_glue's label_to_id from config.json's names; an adapter train.py trained with its head
    keeps GLUE's order, a PEFT adapter's head the base's; other tasks' names are warned about, not mapped."""
    from evalcli import head_order
    from lorasp import apply_lorasp, save_adapter
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "CONTRADICTION", "1": "NEUTRAL",
                                                                   "2": "ENTAILMENT"}}))
    assert head_order(str(tmp_path), "mnli") == [2, 1, 0] and head_order(str(tmp_path), "stsb") is None
    (tmp_path / "peft").mkdir()                     # a PEFT adapter's head: run_glue trained it in the base's order
    (tmp_path / "peft" / "adapter_config.json").write_text(json.dumps({"modules_to_save": ["classifier"]}))
    assert head_order(str(tmp_path), "mnli", str(tmp_path / "peft")) == [2, 1, 0]
    m = torch.nn.Sequential()                       # train.py's: trained in GLUE's order
    m.add_module("q_proj", torch.nn.Linear(4, 4))
    m.add_module("classifier", torch.nn.Linear(4, 3))
    save_adapter(apply_lorasp(m, ["q_proj"], r=2), tmp_path / "ours", modules_to_save=["classifier"],
                 base=dict(fingerprint="0" * 64, quant="none", task="glue/mnli"))
    assert head_order(str(tmp_path), "mnli", str(tmp_path / "ours")) is None
    save_adapter(m, tmp_path / "older", modules_to_save=["classifier"])   # (saved before adapters recorded a task)
    assert head_order(str(tmp_path), "mnli", str(tmp_path / "older")) is None
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "negative", "1": "positive"},
                                                      "label2id": {"negative": 0, "positive": 1}}))
    capsys.readouterr()
    assert head_order(str(tmp_path), "rte") is None and head_order(str(tmp_path), "sst2") is None
    assert capsys.readouterr().err.startswith(f"warning: {tmp_path}'s head names its classes negative, positive "
                                              "(config.json's label2id), not glue/rte's entailment, not_entailment")


@pytest.mark.parametrize("id2label, order", [(["CONTRADICTION", "NEUTRAL", "ENTAILMENT"], [2, 1, 0]),
                                             (["LABEL_0", "LABEL_1", "LABEL_2"], [0, 1, 2])])
def test_train_starts_from_a_fine_tuned_heads_classes_in_glues_order(id2label, order, tmp_path, capsys):
    """train.py on glue/mnli from a classifier whose config.json names its classes in another order (roberta-large-
    mnli's) trained that head against GLUE's label ids: a shuffled head, and a "before" score eval.py disagreed with.
    Its rows are now put in GLUE's order once (run_glue.py's label_to_id), so its logits are transformers' by name;
    unnamed classes (LABEL_i) keep the head's order."""
    import train
    hf = bert_classifier(tmp_path, id2label, 40)
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                                                  [f"w{i}" for i in range(35)]))
    args = train.parse_args(["--model", str(tmp_path), "--data", "glue/mnli", "--dtype", "fp32",
                             "--checkpointing", "none"])
    model = train.load_model(args, str(tmp_path), None, torch.device("cpu"), False).eval()
    ids = torch.randint(5, 40, (3, 9))
    ids[:, 0] = 2
    with torch.no_grad():
        ours, ref = model.classify(ids, torch.ones_like(ids)), hf(input_ids=ids).logits
    torch.testing.assert_close(ours, ref[:, order], atol=1e-5, rtol=1e-5)
    assert ("label2id" in capsys.readouterr().out) == (order != [0, 1, 2])
