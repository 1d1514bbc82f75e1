"""Data sets as users have them on disk (red-team pass, session 19): what train.py reads from each, against what
the data set's own reference reads (Stanford Alpaca's train.py for instruction records)."""
import json

import pytest

import data
import tokenizer
from fetch_real import path


@pytest.fixture(scope="module")
def tok():
    return tokenizer.load_tokenizer(path("gpt2", "encoder.json").removesuffix("encoder.json"))


def test_records_with_an_empty_output_are_said_and_all_empty_refused(tok, tmp_path, capsys):
    """An export that lost its responses (a prompts file given as --data, a conversion that wrote "" for a missing
    field) trained every record to answer with EOS alone, without a word. Alpaca's train.py trains such a record
    too, so one among many is said (with its line); a file of nothing else is refused."""
    lines = [{"instruction": "Say a.", "output": "a"}, {"instruction": "Say b.", "input": "", "output": " "},
             {"instruction": "Say c.", "output": "c"}, {"instruction": "Say d.", "output": ""}]
    (tmp_path / "some.jsonl").write_text("\n".join(json.dumps(r) for r in lines[:2]) + "\n\n" +
                                         "\n".join(json.dumps(r) for r in lines[2:]) + "\n")
    train, val, _ = data.load_examples(str(tmp_path / "some.jsonl"), tok, 64, 0.0, seed=0)
    assert len(train) == 4 and val == []                       # (still trained, as the reference trains them)
    assert f"note: {tmp_path / 'some.jsonl'}: 2 of the 4 records have an empty output (the first: record 1, line 2)" \
        in capsys.readouterr().err
    (tmp_path / "none.json").write_text(json.dumps([{"instruction": "Say a.", "input": "", "output": ""}] * 3,
                                                   indent=1))
    with pytest.raises(ValueError, match=r"none\.json: every record's output is empty \(record 0, line 2, \.\.\.\): "
                                         r"nothing to learn"):
        data.load_examples(str(tmp_path / "none.json"), tok, 64, 0.0, seed=0)


def test_a_text_column_in_another_template_is_said(tmp_path, capsys):
    """A JSONL export with instruction/input/output and a "text" column: the Hub's tatsu-lab/alpaca renders Alpaca's
    prompt, a newline and the output into it (nothing to say: lorasp builds the same prompt), but a chat model's
    template there ("[INST] ..."), which the user may have meant to train on, was dropped without a word."""
    hub = {"instruction": "Add.", "input": "2 and 3", "output": "5"}
    hub["text"] = data.alpaca_prompt(hub) + "\n" + hub["output"]
    chat = {"instruction": "Add.", "input": "2 and 3", "output": "5", "text": "<s>[INST] Add. 2 and 3 [/INST] 5</s>"}
    (tmp_path / "hub.jsonl").write_text(json.dumps(hub) + "\n")
    data.read_records(str(tmp_path / "hub.jsonl"))
    assert capsys.readouterr().err == ""
    (tmp_path / "chat.jsonl").write_text(json.dumps(hub) + "\n" + json.dumps(chat) + "\n")
    data.read_records(str(tmp_path / "chat.jsonl"))
    assert capsys.readouterr().err == (
        f"note: {tmp_path / 'chat.jsonl'}: fields lorasp does not use (it reads instruction, input, output): 'text' in "
        "1 records ('text' there is not Alpaca's prompt of the record's fields: lorasp trains on that prompt, not on "
        "'text')\n")


def test_squad_questions_past_max_query_are_cut_and_said(tmp_path, capsys):
    """BERT's run_squad.py keeps a question's first max_query_length (64) tokens; lorasp does too, but said nothing,
    where every other cut (--seq-len) is counted. Now the cut questions are counted, the first named."""
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "why", "w", "answer", "?"]))
    tok = tokenizer.load_tokenizer(str(tmp_path))
    context = "w answer w"
    gold = [{"text": "answer", "answer_start": 2}]
    qas = [{"id": "long", "question": " ".join(["why"] * 70) + " ?", "answers": gold},
           {"id": "short", "question": "why ?", "answers": gold}]
    windows = data.squad_windows([{"paragraphs": [{"context": context, "qas": qas}]}], tok, max_len=128, split="train")
    assert windows[0]["input_ids"] == [2] + [4] * 64 + [3] + [5, 6, 5] + [3] and windows[0]["labels"] == (67, 67)
    assert "squad train: 1 question longer than 64 tokens cut to their first 64 (BERT's run_squad.py " \
           "max_query_length; first: long)" in capsys.readouterr().out


def test_records_saved_as_txt_are_refused_not_learned_as_text(tok, tmp_path):
    """Windows hides known extensions, so Notepad saves alpaca.json as alpaca.json.txt: train.py learned it as plain
    text, every line a document, brackets, quotes and field names included (and generate took each line for an
    instruction). A .txt that starts as instruction records is refused, naming the line; text that merely starts
    with a bracket or a brace reads as before."""
    records = [{"instruction": "Add.", "input": "2 and 3", "output": "5"}] * 3
    (tmp_path / "alpaca.json.txt").write_text(json.dumps(records, indent=2))
    (tmp_path / "alpaca.jsonl.txt").write_text("\n\n" + "\n".join(map(json.dumps, records)) + "\n")
    for name, line in (("alpaca.json.txt", 1), ("alpaca.jsonl.txt", 3)):
        where = str(tmp_path / name)
        for read in (lambda: data.load_examples(where, tok, 16, 0.0, seed=0), lambda: data.perplexity_docs(where, tok),
                     lambda: data.read_prompts(where)):
            with pytest.raises(ValueError, match=rf"{name}, line {line}: Alpaca-format records, not text: name it "
                                                 r"\.json \(a list\) or \.jsonl"):
                read()
    (tmp_path / "chat.txt").write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"}]}) + "\n")
    with pytest.raises(ValueError, match=r"chat\.txt, line 1: chat records, not text"):
        data.text_ids(str(tmp_path / "chat.txt"), tok)
    (tmp_path / "song.txt").write_text('[Verse 1]\n{"a": 1} is not a record\n[1, 2]\n')
    assert data.text_ids(str(tmp_path / "song.txt"), tok) == [
        t for line in ("[Verse 1]", '{"a": 1} is not a record', "[1, 2]") for t in tok.encode(line, eos=True)]
    assert [r["instruction"] for r in data.read_prompts(str(tmp_path / "song.txt"))][0] == "[Verse 1]"


def test_text_that_json_cannot_hold_reads_as_text(tok, tmp_path):
    """The .txt check for records decodes the first JSON value: a corpus that starts with a number past Python's 4,300
    digits (pi's digits, a line of a big number) or with brackets nested past the recursion limit stopped train.py
    with "Exceeds the limit (4300 digits) for integer string conversion" (or a RecursionError traceback): text."""
    for name, line in (("pi.txt", "3" + "1415926535" * 500), ("brackets.txt", "[" * 5000 + "]" * 5000)):
        (tmp_path / name).write_text(line + "\nmore\n")
        assert data.text_ids(str(tmp_path / name), tok) == [t for x in (line, "more") for t in tok.encode(x, eos=True)]
        assert [r["instruction"] for r in data.read_prompts(str(tmp_path / name))] == [line, "more"]


def test_held_out_check_leaves_out_records_longer_than_the_context(tok, capsys):
    """--exact-match generates on each held-out prompt for as many tokens as the longest expected answer: one record
    longer than GPT-2's positions stopped the run before training ("97 tokens: past the 96 positions of this gpt2"),
    though training cuts such records to --seq-len. The longest are left out and counted; the others are checked
    exactly as alone (their answers equal a check without the long ones)."""
    import argparse
    import contextlib
    import torch
    import tasks
    from model import GPT2Config, build_model
    torch.manual_seed(0)
    model = build_model(GPT2Config(vocab_size=tok.vocab_size, n_positions=96, n_layer=1, n_embd=16, n_head=2))
    short = [{"instruction": f"Say {i}.", "input": "", "output": str(i)} for i in range(4)]
    long = [{"instruction": "Repeat.", "input": "", "output": " ".join(["word"] * 80)},
            {"instruction": "Repeat.", "input": " ".join(["word"] * 120), "output": "x"}]
    args = argparse.Namespace(data="r.json", bleu=0, device="cpu", dtype="fp32", seq_len=64)
    alone, answers = tasks.before_after(model, tok, short, contextlib.nullcontext, args, "before")
    capsys.readouterr()
    found, mixed = tasks.before_after(model, tok, short[:2] + long + short[2:], contextlib.nullcontext, args, "after")
    assert found == {k.replace("before", "after"): v for k, v in alone.items()}
    assert mixed == answers[:2] + ["(not checked: longer than the context)"] * 2 + answers[2:]
    assert "held-out exact match after training (4 records; 2 left out: prompt and answer longer than the model's 96 " \
           "positions)" in capsys.readouterr().out
    assert tasks.before_after(model, tok, long, contextlib.nullcontext, args, "after")[0] == {}


def test_wmt16_sources_that_carry_t5s_prefix_already_are_refused(tmp_path):
    """Inputs saved by a T5 tutorial's preprocessing start with "translate English to Romanian: "; lorasp adds the
    prefix itself, so they trained (and were scored) as "translate English to Romanian: translate English to
    Romanian: ...", off everything T5 saw. Refused with the line, in the JSONL export and in the plain files."""
    rows = [("The cat.", "Pisica."), (data.T5_PREFIX + "The dog.", "Câinele.")]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"translation": {"en": e, "ro": r}}) + "\n"
                                                  for e, r in rows))
    with pytest.raises(ValueError, match=r"train\.jsonl, line 2: the source starts with T5's prefix 'translate "
                                         r"English to Romanian:', which lorasp adds itself"):
        data.read_translation(str(tmp_path), "train")
    (tmp_path / "train.jsonl").unlink()
    (tmp_path / "train.en").write_text("".join(e + "\n" for e, _ in rows))
    (tmp_path / "train.ro").write_text("".join(r + "\n" for _, r in rows))
    with pytest.raises(ValueError, match=r"train\.en \+ train\.ro, line 2: the source starts with T5's prefix"):
        data.read_translation(str(tmp_path), "train")
    (tmp_path / "train.en").write_text("The cat.\nTranslate this, please.\n")
    assert data.read_translation(str(tmp_path), "train") == [("The cat.", "Pisica."), ("Translate this, please.",
                                                                                      "Câinele.")]


@pytest.mark.parametrize("record, hint", [
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}, "a chat"),
    ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}, "a chat"),
    ({"instruction": "Hi", "context": "", "response": "Hello", "category": "open_qa"}, "databricks-dolly's"),
])
def test_chat_and_dolly_records_are_refused_saying_what_they_are(record, hint, tmp_path):
    """Other instruction formats are refused at their first record, naming what it is (never read with an empty
    instruction or output)."""
    (tmp_path / "d.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=rf"d\.jsonl, line 1: record 0 has no '\w+' field \(it has .*\); {hint}"):
        data.read_records(str(tmp_path / "d.jsonl"))


def test_a_null_input_is_refused_saying_how_to_write_no_input(tmp_path):
    """A Hub export writes a missing value as null; Alpaca's train.py (input != "") would render it as the word
    "None" under "### Input:". Refused, naming the line, saying what no input is (it said only "a NoneType")."""
    (tmp_path / "n.json").write_text('[\n{"instruction": "a", "input": "", "output": "b"},\n'
                                     '{"instruction": "c", "input": null, "output": "d"}\n]')
    with pytest.raises(ValueError, match=r'n\.json, line 3: record 1 field \'input\' is a NoneType, not a string '
                                         r'\(JSON\'s null: a record without input has "input": "", or no "input"\)$'):
        data.read_records(str(tmp_path / "n.json"))


def test_a_nan_given_once_is_not_said_to_be_given_twice(tmp_path):
    """JSON's NaN (Python's json reads it) is not equal to itself, so the check for a field given twice with other
    values took one NaN for two: SQuAD's "answer_start": NaN and WMT16's "en": NaN were refused as "gives
    'answer_start' twice (nan, then nan)", sending the user after a duplicate key the file does not have. Now the
    type is what is wrong, as for any other non-integer answer_start or non-text sentence; a field given twice is
    still refused."""
    qa = '{"id": "q1", "question": "Where?", "answers": [{"text": "Paris", "answer_start": NaN}]}'
    (tmp_path / "dev-v1.1.json").write_text('{"data": [{"paragraphs": [{"context": "Paris.", "qas": [%s]}]}]}' % qa)
    with pytest.raises(ValueError, match=r"dev-v1\.1\.json: question 'q1': expected \{\"id\": str, .*\"answer_start\": "
                                         r"NaN\}\]\}$"):
        data.read_squad("dev", str(tmp_path))
    (tmp_path / "train.jsonl").write_text('{"translation": {"en": "Hi.", "ro": "Salut."}}\n'
                                          '{"translation": {"en": NaN, "ro": "Salut."}}\n')
    with pytest.raises(ValueError, match=r"train\.jsonl, line 2: expected \{\"translation\": \{\"en\": text, \"ro\": "
                                         r"text\}\}, got '\{\"translation\": \{\"en\": NaN"):
        data.read_translation(str(tmp_path), "train")
    (tmp_path / "train.jsonl").write_text('{"translation": {"en": NaN, "ro": "Salut.", "en": "Hi."}}\n')
    with pytest.raises(ValueError, match=r"train\.jsonl, line 1: gives 'en' twice \(nan, then 'Hi\.'\)"):
        data.read_translation(str(tmp_path), "train")
    (tmp_path / "r.jsonl").write_text('{"instruction": "a", "output": "b", "output": "b"}\n')  # the same value twice
    assert data.read_records(str(tmp_path / "r.jsonl")) == [{"instruction": "a", "output": "b"}]


MNLI_HEADER = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
               "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label")


def mnli_files(root, genres):
    """GLUE's MNLI folder (download_glue_data.py's layout), a row per genre in each file: {split: genres}."""
    (root / "MNLI").mkdir(parents=True, exist_ok=True)
    for split, names in genres.items():
        header = [c for c in MNLI_HEADER if split != "train" or c != "label1"]
        rows = [["0", "1", "1n", g, "( a )", "( b )", "(ROOT a)", "(ROOT b)", f"A {g} story.", "It is long.",
                 "neutral", "neutral"][:len(header)] for g in names]
        (root / "MNLI" / f"{split}.tsv").write_text("".join("\t".join(r) + "\n" for r in [header, *rows]))


def test_mnli_dev_files_swapped_are_refused_and_copied_said(tmp_path, capsys):
    """GLUE's MNLI scores two dev sets: matched (the training genres: fiction, government, slate, telephone, travel)
    and mismatched (five others). The two files swapped, or dev_matched.tsv copied to dev_mismatched.tsv (a user who
    had one), read without a word: the matched accuracy was the mismatched one's, or the mismatched score the matched
    one's again. Swapped files, told by their genre column, are refused; a copy is said (its rows are the other's);
    genres of neither set (another corpus) read as before."""
    train = ("fiction", "government", "slate", "telephone", "travel")
    mnli_files(tmp_path, {"train": train, "dev_matched": ("letters", "oup", "travel"), "dev_mismatched": ("fiction",)})
    with pytest.raises(ValueError, match=r"MNLI/dev_matched\.tsv and dev_mismatched\.tsv are swapped: "
                                         r"dev_matched\.tsv's rows are of MultiNLI's other genres \(line 2: 'letters'; "
                                         r"2 of 3\), dev_mismatched\.tsv's of its training genres \(line 2: 'fiction'; "
                                         r"1 of 1\)"):
        data.load_glue("mnli", str(tmp_path))
    mnli_files(tmp_path, {"dev_matched": ("fiction", "travel"), "dev_mismatched": ("fiction", "travel")})
    splits = data.load_glue("mnli", str(tmp_path))
    assert splits["dev_mismatched"] == splits["dev_matched"] == [("A fiction story.", "It is long.", 1),
                                                                 ("A travel story.", "It is long.", 1)]
    assert capsys.readouterr().err == (
        f"note: {tmp_path / 'MNLI' / 'dev_mismatched.tsv'} holds the same 2 rows as "
        f"{tmp_path / 'MNLI' / 'dev_matched.tsv'} (a copy?): GLUE mnli's mismatched score is the matched one's again, "
        "not measured on MultiNLI's other genres\n")
    mnli_files(tmp_path, {"dev_matched": ("slate", "government"), "dev_mismatched": ("verbatim", "nineeleven")})
    splits = data.load_glue("mnli", str(tmp_path))
    assert [a for a, _, _ in splits["dev_matched"]] == ["A slate story.", "A government story."]
    assert [a for a, _, _ in splits["dev_mismatched"]] == ["A verbatim story.", "A nineeleven story."]
    mnli_files(tmp_path, {"dev_matched": ("wiki",), "dev_mismatched": ("news",)})  # (not MultiNLI's: no check)
    assert data.load_glue("mnli", str(tmp_path), train=False)["dev_mismatched"] == [("A news story.", "It is long.", 1)]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("fields", [{"context": "Alpacas are camelids."},
                                    {"input": "", "context": "Alpacas are camelids."}])
def test_dollys_context_without_an_input_is_refused(fields, tmp_path):
    """databricks-dolly-15k's instruction, context, response, with response renamed output (what the error for a
    record without output said to do, or a converter that knew Alpaca's output only): the context, the text that a
    closed_qa or summarization instruction is about, was dropped with a note among the unused fields, and the model
    trained to answer "Summarize this." with a summary of text it never saw. Refused: the context is Alpaca's input.
    A context beside an input of its own stays a note."""
    record = {"instruction": "Summarize this.", **fields, "output": "Camelids.", "category": "summarization"}
    (tmp_path / "d.jsonl").write_text(json.dumps({"instruction": "Hi.", "output": "Hello."}) + "\n" +
                                      json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=r"d\.jsonl, line 2: record 1 has a 'context' \('Alpacas are camelids\.'\) and "
                                         r"no input: databricks-dolly's context is Alpaca's input; rename it 'input'"):
        data.read_records(str(tmp_path / "d.jsonl"))
    with pytest.raises(ValueError, match=r"line 2: record 1 has a 'context'"):
        data.read_prompts(str(tmp_path / "d.jsonl"))
    (tmp_path / "d.jsonl").write_text(json.dumps(dict(record, input="Llamas and alpacas.")) + "\n")
    assert data.read_records(str(tmp_path / "d.jsonl"))[0]["input"] == "Llamas and alpacas."


def test_a_dev_file_that_is_a_copy_of_the_train_file_is_said(tok, tmp_path, monkeypatch, capsys):
    """A user with GLUE's train.tsv only (or SQuAD's train file, WMT16's train split) copied it as the dev file to
    get a run going: train.py trained on it and reported the dev score of the very examples it trained on, as the
    paper's dev metric, without a word (SST-2 here: accuracy on memorized rows). A dev set holding exactly the train
    set's rows, in any order, is said, naming both files (a note: lorasp's own smoke tests run on one file twice);
    SQuAD's official train file given as dev-v1.1.json (or the dev file as train-v1.1.json) is refused by its
    sha256, also where eval.py reads the dev file alone."""
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_text("sentence\tlabel\nit was good\t1\nit was bad\t0\n")
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\nit was bad\t0\nit was good\t1\n")  # (reordered)
    assert data.load_glue("sst2", str(tmp_path))["dev"] == [("it was bad", None, 0), ("it was good", None, 1)]
    assert capsys.readouterr().err == (
        f"note: {tmp_path / 'SST-2' / 'dev.tsv'} holds the same 2 rows as {tmp_path / 'SST-2' / 'train.tsv'} (a "
        "copy?): GLUE sst2's dev score is measured on the examples it trains on, not on GLUE's dev set\n")
    data.load_glue("sst2", str(tmp_path), train=False)                                    # (eval.py: no train file)
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\nit was good\t1\n")       # a share of it
    data.load_glue("sst2", str(tmp_path))
    assert capsys.readouterr().err == ""

    gold = [{"text": "Ann", "answer_start": 0}]
    squad = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Ann came.", "qas": [
        {"id": "q1", "question": "Who came?", "answers": gold}]}]}]}
    for name in ("train-v1.1.json", "dev-v1.1.json"):
        (tmp_path / name).write_text(json.dumps(squad))
    for generative in (False, True):
        data.squad_examples(tok, 64, str(tmp_path), generative=generative)
        assert capsys.readouterr().err == (
            f"note: {tmp_path / 'dev-v1.1.json'} holds the same 1 question as {tmp_path / 'train-v1.1.json'} (a "
            "copy?): SQuAD's dev score is measured on the questions it trains on, not on SQuAD's dev set\n")
    monkeypatch.setitem(data.SQUAD_FILES, "train", ("train-v1.1.json", data.file_sha256(tmp_path / "dev-v1.1.json")))
    with pytest.raises(ValueError, match=r"dev-v1\.1\.json: this is SQuAD v1\.1's train-v1\.1\.json \(its sha256\), "
                                         r"not dev-v1\.1\.json: lorasp would score on the questions it trained on"):
        data.read_squad("dev", str(tmp_path))

    pairs = [{"translation": {"en": "The cat.", "ro": "Pisica."}}, {"translation": {"en": "A dog.", "ro": "Un câine."}}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    data.wmt16_examples(str(tmp_path), tok, 64)
    assert capsys.readouterr().err == (
        f"note: {tmp_path / 'validation.jsonl'} holds the same 2 pairs as {tmp_path / 'train.jsonl'} (a copy?): each "
        "validation score (loss, BLEU) is measured on the pairs it trains on, not on WMT16's validation set "
        "(newsdev2016)\n")
    (tmp_path / "validation.jsonl").write_text(json.dumps(pairs[0]) + "\n")
    assert len(data.wmt16_examples(str(tmp_path), tok, 64)[1]) == 1 and capsys.readouterr().err == ""


@pytest.mark.parametrize("missing", ["nan", "None", "<noinput>"])
def test_an_input_that_is_a_missing_values_text_is_said(missing, tmp_path, capsys):
    """alpaca-cleaned read into pandas and written back after df.astype(str) (or a converter's str(None)) holds
    "input": "nan" (or "None") in every record without input; self-instruct's raw generations say "<noinput>" (which
    Alpaca's generate_instruction.py turns into ""). Each trained under "### Input:\\nnan", the template with input,
    without a word. Said, counted, the first record named by its line; the records are read as written (Alpaca's
    train.py renders them so)."""
    records = [{"instruction": "Add.", "input": "2 and 3", "output": "5"}, {"instruction": "Say hi.", "input": missing,
                                                                           "output": "Hi."}] * 2
    (tmp_path / "d.json").write_text(json.dumps(records, indent=1))
    assert data.read_records(str(tmp_path / "d.json")) == records
    assert capsys.readouterr().err == (
        f"note: {tmp_path / 'd.json'}: 2 of the 4 records have the input {missing!r} (the first: record 1, line 7), "
        "text a converter writes for no value (pandas' nan, Python's None, self-instruct's <noinput>): Alpaca's "
        "template shows it under \"### Input:\"; a record without input has \"input\": \"\"\n")
    records[1]["input"] = "nan and None"
    (tmp_path / "d.json").write_text(json.dumps(records[:2], indent=1))
    data.read_records(str(tmp_path / "d.json"))
    assert capsys.readouterr().err == ""


def hf_squad_rows(dataset):
    """What the Hugging Face `squad` builder makes of SQuAD's file, a row per question (its _generate_examples:
    title, context, question, id, answers {"text": [...], "answer_start": [...]}), written independently here."""
    return [{"id": qa["id"], "title": article["title"], "context": p["context"], "question": qa["question"],
             "answers": {"text": [a["text"] for a in qa["answers"]],
                         "answer_start": [a["answer_start"] for a in qa["answers"]]}}
            for article in dataset["data"] for p in article["paragraphs"] for qa in p["qas"]]


def test_the_hub_squad_export_reads_as_squads_own_file(tmp_path):
    """`datasets.load_dataset("squad")["validation"].to_json("dev-v1.1.json")` writes a question a line, its answers
    as {"text": [...], "answer_start": [...]}: it was refused as "line 1: not valid JSON (Extra data ...)" (or, one
    question, "not a SQuAD file"), saying nothing of what to give. The layout is unambiguous: read as the file it was
    made from (questions in order, a paragraph per run of one title and context). The export of squad_v2 is refused
    as SQuAD v2.0's file is (its unanswerable questions)."""
    squad = {"version": "1.1", "data": [
        {"title": "Paris", "paragraphs": [
            {"context": "Paris is in France.", "qas": [
                {"id": "a1", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12},
                                                                        {"text": "in France", "answer_start": 9}]},
                {"id": "a2", "question": "What is in France?", "answers": [{"text": "Paris", "answer_start": 0}]}]},
            {"context": "It has a tower.", "qas": [
                {"id": "a3", "question": "What does it have?", "answers": [{"text": "a tower", "answer_start": 7}]}]}]},
        {"title": "Rome", "paragraphs": [
            {"context": "Rome is old.", "qas": [
                {"id": "b1", "question": "What is old?", "answers": [{"text": "Rome", "answer_start": 0}]}]}]}]}
    rows = hf_squad_rows(squad)
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(squad))
    official = data.read_squad("dev", str(tmp_path))
    (tmp_path / "dev-v1.1.json").write_text("".join(json.dumps(r) + "\n" for r in rows))     # to_json: JSON Lines
    assert data.read_squad("dev", str(tmp_path)) == official == squad["data"]
    for one in (json.dumps(rows[:1]), json.dumps(rows[0]) + "\n"):    # lines=False: a list; one question, one line
        (tmp_path / "dev-v1.1.json").write_text(one)
        assert data.read_squad("dev", str(tmp_path)) == [{"title": "Paris", "paragraphs": [
            {"context": "Paris is in France.", "qas": [squad["data"][0]["paragraphs"][0]["qas"][0]]}]}]
    v2 = dict(rows[1], id="c1", answers={"text": [], "answer_start": []})                    # squad_v2's unanswerable
    (tmp_path / "dev-v1.1.json").write_text("".join(json.dumps(r) + "\n" for r in (rows[0], v2)))
    with pytest.raises(ValueError, match=r"dev-v1\.1\.json: question c1 has no answer \(SQuAD v2\.0's unanswerable "
                                         r"questions\?\)"):
        data.read_squad("dev", str(tmp_path))
    bad = dict(rows[0], answers={"text": ["France"], "answer_start": [12, 9]})
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(rows[1]) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"dev-v1\.1\.json, line 2: question 'a1': the Hugging Face export's answers "
                                         r"are \{\"text\": \[\.\.\.\], \"answer_start\": \[\.\.\.\]\} of one length"):
        data.read_squad("dev", str(tmp_path))
    (tmp_path / "dev-v1.1.json").write_text('{"id": "x", "text": "not SQuAD"}\n{"id": "y", "text": "at all"}\n')
    with pytest.raises(ValueError, match=r"dev-v1\.1\.json: not a SQuAD file"):
        data.read_squad("dev", str(tmp_path))
    (tmp_path / "dev-v1.1.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"dev-v1\.1\.json: SQuAD v1\.1's dev-v1\.1\.json \(https://\S+; or "
                                                r"the Hugging Face `squad`'s validation split saved by datasets' "
                                                r"to_json under that name\)$"):
        data.read_squad("dev", str(tmp_path))


def test_a_compressed_or_parquet_file_is_named_as_such_not_as_latin1(tok, tmp_path):
    """A gzip'd JSONL kept under its inner name (a browser that unpacked nothing, `datasets`' to_json(compression=
    "gzip") to a .jsonl), a zip, or the Hub's Parquet file renamed was refused as "not UTF-8 text (byte 0x8b at offset
    1); convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)", which turns the archive into mojibake. Named as
    what it is, with how to get the text out; a Latin-1 text keeps its advice."""
    import gzip
    text = json.dumps({"instruction": "Add.", "input": "", "output": "5"}) + "\n"
    for name, raw, what in (("d.jsonl", gzip.compress(text.encode()), r"gzip-compressed \(gunzip it"),
                            ("train.tsv", b"PK\x03\x04\x14\x00\x00\x00\x08\x00\xa4\x8b", r"a zip archive \(unzip it"),
                            ("d.json", b"PAR1\x15\x04\x15\x80\x01\x15\x8a", r"a Parquet file \(the Hugging Face "
                                                                             r"Hub's format")):
        (tmp_path / name).write_bytes(raw)
        read = (lambda p: data.read_glue(p, "sst2")) if name.endswith(".tsv") else data.read_records
        with pytest.raises(ValueError, match=rf"{name}: {what}.*, not text"):
            read(str(tmp_path / name))
    (tmp_path / "d.jsonl").write_bytes(text.replace("Add.", "Café?").encode("latin-1"))
    with pytest.raises(ValueError, match=r"d\.jsonl, line 1: not UTF-8 text \(byte 0xe9 at offset 20\); convert the "
                                         r"file to UTF-8 \(e\.g\. iconv -f latin1 -t utf-8\)"):
        data.read_records(str(tmp_path / "d.jsonl"))


def test_objects_one_after_another_over_several_lines_are_not_sent_to_json_lines(tmp_path):
    """A .json of records written one json.dump(record, indent=2) after another (no list): refused, rightly, but the
    hint said "one JSON object a line is JSON Lines: name the file .jsonl", and the file renamed so was refused at its
    first line ("{"). The .jsonl hint is kept for one object a line; objects over several lines are told to make a
    list."""
    record = {"instruction": "Add.", "input": "2 and 3", "output": "5"}
    (tmp_path / "d.json").write_text(json.dumps(record, indent=2) + "\n" + json.dumps(record, indent=2) + "\n")
    with pytest.raises(ValueError, match=r"d\.json, line 6: not valid JSON \(Extra data at column 1\) \(JSON values "
                                         r"one after another: a \.json holds one list of records, \[\{\.\.\.\}, "
                                         r"\{\.\.\.\}\]\)$"):
        data.read_records(str(tmp_path / "d.json"))
    (tmp_path / "d.json").write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=r"d\.json, line 2: not valid JSON \(Extra data at column 1\) \(one JSON "
                                         r"object a line is JSON Lines: name the file \.jsonl\)$"):
        data.read_records(str(tmp_path / "d.json"))


@pytest.mark.parametrize("task, header, row, hint", [
    ("rte", "idx\tsentence1\tsentence2\tlabel", "0\tA cat sat.\tA cat is sitting.\t0",
     "0 is entailment, 1 not_entailment"),
    ("qnli", "idx\tquestion\tsentence\tlabel", "0\tWhen?\tIn 1066.\t1", "0 is entailment, 1 not_entailment"),
    ("mnli", "idx\tsentence1\tsentence2\tgold_label", "0\tA cat sat.\tA dog sat.\t2",
     "0 is entailment, 1 neutral, 2 contradiction"),
])
def test_a_class_index_where_glue_names_the_class_says_hfs_order(task, header, row, hint, tmp_path):
    """The Hugging Face glue export (to_csv with sep="\\t") of RTE, QNLI or MNLI (its columns renamed) writes the label
    as a class index; GLUE's files name the class. Refused, as before, but the error now says what the number is and
    which class HF's index means (its ClassLabel names, the order lorasp's heads use), instead of only "label '0' is
    not entailment or not_entailment". -1 (HF's test split, no label) says so."""
    (tmp_path / "x.tsv").write_text(header + "\n" + row + "\n")
    with pytest.raises(ValueError, match=rf"x\.tsv:2: label '\d' is not {' or '.join(data.GLUE[task][4])} \(a class "
                                         rf"index, as the Hugging Face glue export writes it\? There {hint}: write "
                                         r"the class names, as GLUE's files do\)$"):
        data.read_glue(str(tmp_path / "x.tsv"), task)
    (tmp_path / "x.tsv").write_text(header + "\n" + row[:-1] + "-1\n")
    with pytest.raises(ValueError, match=r"x\.tsv:2: label '-1' is not .* \(-1: the Hugging Face export's test split, "
                                         r"whose labels GLUE keeps secret: train and score on train and dev\)$"):
        data.read_glue(str(tmp_path / "x.tsv"), task)
    (tmp_path / "x.tsv").write_text(header + "\n" + row[:-1] + "maybe\n")
    with pytest.raises(ValueError, match=r"x\.tsv:2: label 'maybe' is not [a-z_ ]+$"):
        data.read_glue(str(tmp_path / "x.tsv"), task)


def test_prompt_completion_records_saved_as_txt_are_refused_not_learned_as_text(tok, tmp_path):
    """OpenAI's fine-tuning format ({"prompt": ..., "completion": ...} a line) saved as .txt (Windows' hidden
    extensions: data.jsonl.txt) was learned as plain text, braces, quotes and the words "prompt" and "completion" in
    every line, exit 0: the check for records in a .txt knew Alpaca's and chat records only. Refused, naming the line
    and what to rename; a .jsonl of them is refused by read_records, as before."""
    lines = "".join(json.dumps({"prompt": f"Say {i}.", "completion": f" {i}"}) + "\n" for i in range(3))
    (tmp_path / "data.jsonl.txt").write_text("\n" + lines)
    for read in (lambda p: data.text_ids(p, tok), data.read_prompts, lambda p: data.perplexity_docs(p, tok),
                 lambda p: data.load_examples(p, tok, 16, 0.0, seed=0)):
        with pytest.raises(ValueError, match=r"data\.jsonl\.txt, line 2: prompt/completion records \(OpenAI's "
                                             r"fine-tuning format\), not text: lorasp trains Alpaca's records: rename "
                                             r"prompt to instruction and completion to output, and name the file "
                                             r"\.jsonl"):
            read(str(tmp_path / "data.jsonl.txt"))
    (tmp_path / "notes.txt").write_text('{"prompt": "a"} is how a prompt is written\n')     # (no completion: text)
    assert data.text_ids(str(tmp_path / "notes.txt"), tok) == tok.encode('{"prompt": "a"} is how a prompt is written',
                                                                          eos=True)
