"""data.py: Stanford Alpaca's templates (against the strings copied from its train.py), response-only labels,
truncation, length-grouped batches, malformed records, the demo generators, and downloads against a local
stand-in for the Hugging Face Hub (tests/fake_hub.py on 127.0.0.1: nothing here reaches the internet)."""
import csv
import hashlib
import io
import json
import os
import random
import re
import zipfile

import pytest
import torch
import transformers

import data
import tokenizer
from fake_hub import serve
from fetch_real import path
from fixtures import demo_tokenizer
from model import build_model, load_pretrained, save_pretrained

# tatsu-lab/stanford_alpaca, train.py, PROMPT_DICT, as published
ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.\n\n"
                   "### Instruction:\n{instruction}\n\n### Response:")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return demo_tokenizer(tmp_path_factory.mktemp("tok"), 200)


def test_alpaca_templates_are_alpacas():
    assert data.PROMPT_DICT == {"prompt_input": ALPACA_INPUT, "prompt_no_input": ALPACA_NO_INPUT}
    r = {"instruction": "Add.", "input": "2 and 3", "output": "5"}
    assert data.alpaca_prompt(r) == ALPACA_INPUT.replace("{instruction}", "Add.").replace("{input}", "2 and 3")
    for empty in ({"instruction": "Hi.", "input": "", "output": "x"}, {"instruction": "Hi.", "output": "x"}):
        assert data.alpaca_prompt(empty) == ALPACA_NO_INPUT.replace("{instruction}", "Hi.")


def test_labels_cover_the_response_and_eos_only(tok):
    records = [{"instruction": "How many words are in cat dog?", "input": "", "output": "2"},
               {"instruction": "Count.", "input": "sun moon star", "output": "3"}]
    examples, truncated = data.tokenize_records(records, tok, 512)
    assert truncated == 0
    for r, e in zip(records, examples):
        prompt, response = tok.encode(data.alpaca_prompt(r)), tok.encode(r["output"], bos=False, after=True)
        assert e["input_ids"] == prompt + response + [tok.eos_id]
        assert e["labels"] == [data.IGNORE] * len(prompt) + response + [tok.eos_id]
        assert e["input_ids"][0] == tok.bos_id and tok.decode(e["input_ids"][len(prompt):-1]) == r["output"]


@pytest.mark.parametrize("vocab", ["llama", "gpt2"])
def test_examples_are_alpacas_recipe_on_real_vocabularies(vocab, tmp_path):
    """Alpaca's train.py on LLaMA's sentencepiece and GPT-2's BPE, run by transformers: prompt + output + EOS
    tokenized as one text, labels IGNORE on the prompt's own tokens. The output tokenized alone once began with
    sentencepiece's "▁" ("### Response:" "▁5"; Alpaca's "5"), a space the recipe never trains; perplexity too."""
    if vocab == "llama":
        ours = tokenizer.load_tokenizer(path("llama.cpp", "ggml-vocab-llama-spm.gguf"))
        ref = transformers.AutoTokenizer.from_pretrained(path("llama.cpp", ""), gguf_file="ggml-vocab-llama-spm.gguf")
    else:
        ours = tokenizer.load_tokenizer(path("gpt2", "encoder.json").removesuffix("encoder.json"))
        ref = transformers.GPT2Tokenizer(path("gpt2", "encoder.json"), path("gpt2", "vocab.bpe"))
    records = [{"instruction": "Add.", "input": "2 and 3", "output": "5"},
               {"instruction": "Say hi.", "input": "", "output": "Hello there!"},
               {"instruction": "  Tabs\tand CRLF\r\n", "input": " x ", "output": " two words"},
               {"instruction": "Emoji?", "output": "\n🙂 ok"}]
    examples, _ = data.tokenize_records(records, ours, 10_000)
    (tmp_path / "r.json").write_text(json.dumps(records))
    for r, e, (ids, first) in zip(records, examples, data.perplexity_docs(str(tmp_path / "r.json"), ours)):
        want, n = ref(data.alpaca_prompt(r) + r["output"] + ref.eos_token)["input_ids"], len(
            ref(data.alpaca_prompt(r))["input_ids"])
        assert e == {"input_ids": want, "labels": [data.IGNORE] * n + want[n:]} and (ids, first) == (want, n), r


def test_truncation_is_counted(tok):
    cats = " ".join(["cat"] * 40)
    records = [{"instruction": "Count the words.", "input": i, "output": o} for i, o in
               (("cat", "1"), (cats, "40"), ("cat cat", "2"), (cats, "40 cats, all of them"))]
    full, _ = data.tokenize_records(records, tok, 10_000)
    limit = len(full[1]["input_ids"]) - 1                                     # record 1 loses its EOS
    examples, truncated = data.tokenize_records(records, tok, limit)
    assert truncated == 2 and [len(e["input_ids"]) for e in examples] == [len(full[0]["input_ids"]), limit,
                                                                          len(full[2]["input_ids"]), limit]
    assert examples[0] == full[0] and examples[3]["labels"] == full[3]["labels"][:limit]
    prompt = len(tok.encode(data.alpaca_prompt(records[1])))
    examples, truncated = data.tokenize_records(records, tok, prompt)        # no response token left: dropped
    assert truncated == 2 and len(examples) == 2


def test_the_log_counts_examples_not_records(tok, tmp_path, capsys):
    """Records whose prompt fills --seq-len are dropped, and the log says so: it once counted records as train
    examples and called the dropped ones truncated."""
    cats = " ".join(["cat"] * 40)
    records = [{"instruction": "Count the words.", "input": i, "output": "n"} for i in ["cat"] * 6 + [cats] * 4]
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(records))
    limit = len(tok.encode(data.alpaca_prompt(records[-1])))
    train, val, held_out = data.load_examples(str(path), tok, limit, 0.2, seed=0)
    dropped = 10 - len(train) - len(val)
    assert dropped == 4 and len(held_out) == 2
    assert f"{len(train)} train / {len(val)} held-out examples of 10 records; 0 longer than --seq-len {limit}, cut; " \
        "4 dropped (the prompt alone fills --seq-len" in capsys.readouterr().out


def test_held_out_records_that_are_also_training_records_are_said(tok, tmp_path, capsys):
    """Instruction data sets hold records twice, word for word (Dolly's, code_alpaca's): a held-out copy of a record
    that trains scored as unseen in the held-out check and heldout.jsonl without a word."""
    records = [{"instruction": f"Say {w}.", "input": "", "output": w} for w in "abcdefghij"] * 2
    (tmp_path / "twice.json").write_text(json.dumps(records))
    train, val, held_out = data.load_examples(str(tmp_path / "twice.json"), tok, 64, 0.2, seed=0)
    twins = sum(r in data.split_records(records, 0.2, 0)[0] for r in held_out)  # (each record's copy trains)
    assert len(held_out) == 4 and twins > 0 and f"note: {tmp_path / 'twice.json'}: {twins} of the 4 held-out records " \
        "are also training records, word for word (the file holds them twice): the held-out check counts them as " \
        "unseen" in capsys.readouterr().out
    (tmp_path / "once.json").write_text(json.dumps(records[:10]))
    data.load_examples(str(tmp_path / "once.json"), tok, 64, 0.2, seed=0)
    assert "word for word" not in capsys.readouterr().out


def test_length_grouped_batches():
    rng = random.Random(0)
    lengths = [rng.randint(5, 300) for _ in range(1000)]
    batches = data.length_grouped_batches(lengths, 8, seed=3)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000)) and len(batches) == 125 and all(len(b) == 8 for b in batches)
    assert batches == data.length_grouped_batches(lengths, 8, seed=3)        # seeded
    assert batches != data.length_grouped_batches(lengths, 8, seed=4)        # a new order each epoch

    def padding(bs):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in bs)
    shuffled = list(range(1000))
    random.Random(3).shuffle(shuffled)
    assert padding(batches) < 0.1 * padding([shuffled[i:i + 8] for i in range(0, 1000, 8)])
    assert sorted(len(b) for b in data.length_grouped_batches(lengths[:21], 8, 0)) == [5, 8, 8]


def test_split_is_seeded_and_disjoint():
    records = [{"instruction": str(i), "output": str(i)} for i in range(100)]
    train, val = data.split_records(records, 0.1, seed=5)
    assert len(val) == 10 and len(train) == 90 and not {r["instruction"] for r in val} & {r["instruction"] for r in train}
    assert (train, val) == data.split_records(records, 0.1, seed=5) and val != data.split_records(records, 0.1, 6)[1]


def test_split_by_a_checkpoints_held_out_records():
    """split_records(held=), the fingerprints of a checkpoint's held-out records (--resume): on the file it split, its
    own split, where a held-out record's word-for-word twin trains; onto the file with records added, the records held
    names held out, each as often as it names it, and every other one trains. The twin was held out too: a record the
    checkpoint trained on, scored as held out."""
    records = [{"instruction": str(i), "output": str(i)} for i in range(20)]
    train, val = data.split_records(records, 0.1, seed=0)
    records[records.index(train[-1])] = val[0]                  # a held-out record's twin, in the training share
    train, val = data.split_records(records, 0.1, seed=0)
    assert val[0] in train and len(val) == 2
    held = [data.fingerprint(r) for r in val]
    assert data.split_records(records, 0.1, 0, held) == (train, val)
    more = [{"instruction": str(i), "output": str(i)} for i in range(20, 40)]
    again, out = data.split_records(more[:10] + records + more[10:], 0.1, 0, held)
    key = lambda part: sorted(json.dumps(r, sort_keys=True) for r in part)  # noqa: E731
    assert key(out) == key(val) and key(again) == key(train + more)


def test_collate_pads_right():
    b = data.collate([{"input_ids": [1, 5, 6], "labels": [-100, 5, 6]}, {"input_ids": [1, 7], "labels": [-100, 7]}],
                     pad_id=0)
    assert b["input_ids"].tolist() == [[1, 5, 6], [1, 7, 0]] and b["labels"].tolist() == [[-100, 5, 6], [-100, 7, -100]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]


@pytest.mark.parametrize("bad,message", [
    ({"instruction": "x"}, "record 2 has no 'output' field"),
    ({"input": "x", "output": "y"}, "record 2 has no 'instruction' field"),
    ({"instruction": "x", "output": 5}, "record 2 field 'output' is a int"),
    ({"instruction": "x", "input": None, "output": "y"}, "record 2 field 'input' is a NoneType"),
    ({"instruction": "x", "context": "", "response": "y", "category": "qa"}, "record 2 has no 'output' field (it has "
     "['category', 'context', 'instruction', 'response']); databricks-dolly's context and response are Alpaca's input "
     "and output: rename them"),
    (["x"], "record 2 is a list"),
])
def test_malformed_records_name_index_and_field(tmp_path, bad, message):
    good = {"instruction": "a", "input": "", "output": "b"}
    for name, text in (("d.json", json.dumps([good, good, bad])),
                       ("d.jsonl", "\n".join(json.dumps(r) for r in [good, good, bad]))):
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=re.escape(message)):
            data.read_records(str(tmp_path / name))
    (tmp_path / "ok.jsonl").write_text(json.dumps(good) + "\n\n" + json.dumps(good) + "\n")
    assert data.read_records(str(tmp_path / "ok.jsonl")) == [good, good]


def test_a_bad_record_of_a_json_list_is_named_by_its_line(tmp_path):
    """alpaca_data.json is a list written with indent=4 (52,002 records over 260,000 lines): a bad record was named
    by its index alone; now by the line it starts on too, as a .jsonl record is (a byte-order mark, CRLF)."""
    records = [{"instruction": f"Say {i}.", "input": "", "output": f"{i}, {{\"a\": [1, 2]}}"} for i in range(40)]
    records[33]["output"] = 33
    text = json.dumps(records, indent=4)
    line = text[:text.index('"Say 33."')].count("\n")               # the line of the record's "{"
    for name, raw in (("a.json", text), ("b.json", "\ufeff" + text.replace("\n", "\r\n"))):
        (tmp_path / name).write_bytes(raw.encode())
        with pytest.raises(ValueError, match=rf"{name}, line {line}: record 33 field 'output' is a int, not a string$"):
            data.read_records(str(tmp_path / name))


def test_fields_lorasp_does_not_read_are_named(tmp_path, capsys):
    """LLaMA-Factory's Alpaca format adds a system prompt and a chat history; lorasp trains on instruction, input and
    output alone: said, with how many records carry each (empty ones, and the Hub export's rendered "text", are
    not)."""
    records = [{"instruction": "a", "input": "", "output": "b", "system": "You are a pirate.", "history": []},
               {"instruction": "c", "output": "d", "system": "", "history": [["hi", "ho"]],
                "text": data.alpaca_prompt({"instruction": "c"}) + "\nd"},
               {"instruction": "e", "output": "f", "system": "Be brief."}]
    (tmp_path / "lf.json").write_text(json.dumps(records))
    assert data.read_records(str(tmp_path / "lf.json")) == records
    assert capsys.readouterr().err == (f"note: {tmp_path / 'lf.json'}: fields lorasp does not use (it reads "
                                       "instruction, input, output): 'history' in 1 records, 'system' in 2 records\n")
    (tmp_path / "plain.json").write_text(json.dumps([{"instruction": "a", "output": "b",
                                                      "text": data.alpaca_prompt({"instruction": "a"}) + "\nb"}]))
    data.read_records(str(tmp_path / "plain.json"))
    assert capsys.readouterr().err == ""


def test_demo_task_answers_are_right():
    records = data.demo_records(300, seed=1)
    assert len({(r["instruction"], r["input"]) for r in records}) == 300 and records == data.demo_records(300, seed=1)
    for r in records:
        q, items = r["instruction"], r["instruction"].rstrip("?").split(" in ")[-1].split()
        expected = {"words": len(items), "numbers": sum(w.isdigit() for w in items),
                    "times": items.count(q.split()[4])}[q.split()[2]]
        assert r["output"] == str(expected), r
    assert {r["instruction"].split()[2] for r in records} == {"words", "numbers", "times"}
    # pretraining states the same facts in its own words: "Question: ... Answer: N."
    rng = random.Random(0)
    for _ in range(20):
        sentence, r = data.demo_example(rng)
        assert sentence == f"Question: {r['instruction']} Answer: {r['output']}."


def test_text_examples_are_blocks_of_every_token(tmp_path, tok):
    (tmp_path / "c.txt").write_text("\n".join(data.demo_corpus(20)) + "\n\n")
    blocks = data.text_examples(str(tmp_path / "c.txt"), tok, 32)
    ids = [i for line in data.demo_corpus(20) for i in tok.encode(line, eos=True)]
    assert [i for b in blocks for i in b["input_ids"]] == ids[:len(blocks) * 32]
    assert all(b["labels"] == b["input_ids"] and len(b["input_ids"]) == 32 for b in blocks)


def test_a_txt_corpus_saved_with_a_byte_order_mark_trains_on_the_same_blocks(tmp_path, tok):
    """Notepad's UTF-8 .txt starts with a byte-order mark: not text. GPT-2's BPE learned its three bytes' tokens
    first (sentencepiece's normalizer drops it)."""
    text = "\n".join(data.demo_corpus(20)) + "\n"
    (tmp_path / "plain.txt").write_text(text, encoding="utf-8")
    (tmp_path / "notepad.txt").write_text(text, encoding="utf-8-sig")
    for t in (tok, tokenizer.load_tokenizer(path("gpt2", "encoder.json").removesuffix("encoder.json"))):
        plain = data.text_examples(str(tmp_path / "plain.txt"), t, 32)
        assert plain and data.text_examples(str(tmp_path / "notepad.txt"), t, 32) == plain


# ----------------------------------------------------------------------------------------------------
# Downloads

def test_download_resumes_a_partial_file(tmp_path):
    body = os.urandom(3 << 20)
    with serve("org/m", {"model.safetensors": body}, cut={"model.safetensors": (1 << 20) + 12345}) as (url, log):
        src, dest = f"{url}/org/m/resolve/main/model.safetensors", str(tmp_path / "m" / "model.safetensors")
        size, sha = data.remote_info(src)
        assert (size, sha) == (len(body), hashlib.sha256(body).hexdigest())
        with pytest.raises(OSError, match="run the same command again to resume"):
            data.download(src, dest, size=size, sha256=sha)           # the connection drops after 1 MiB + 12345 B
        assert os.path.getsize(dest + ".part") == (1 << 20) + 12345 and not os.path.exists(dest)
        data.download(src, dest, size=size, sha256=sha)               # resumed with a Range request
        assert open(dest, "rb").read() == body and not os.path.exists(dest + ".part")
        assert log[-1][:3] == ("GET", "/cdn/model.safetensors", f"bytes={(1 << 20) + 12345}-")
        n = len(log)
        data.download(src, dest, size=size, sha256=sha)               # already there, the right size: no request
        assert len(log) == n


def test_a_glue_download_resumes_as_a_model_download_does(tmp_path, monkeypatch):
    """A GLUE archive whose connection dropped part-way: the rerun went back to byte 0, because the partial file lived
    in a temporary folder deleted on the way out; now it is kept beside the cache's glue/ folders, and the rerun
    resumes it with a Range request, reads the task and leaves nothing else behind."""
    rows = [("index", "sentence1", "sentence2", "label")] + [
        (str(i), os.urandom(60).hex(), os.urandom(60).hex(), ("entailment", "not_entailment")[i % 2]) for i in range(40)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for split in ("train", "dev"):
            z.writestr(f"RTE/{split}.tsv", "".join("\t".join(r) + "\n" for r in rows))
    archive = buf.getvalue()
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
    with serve("org/m", {"RTE.zip": archive}, cut={"RTE.zip": 5000}) as (url, log):
        monkeypatch.setattr(data, "GLUE_URL", f"{url}/cdn/")
        with pytest.raises(OSError, match="the download stopped at 5,000 of"):
            data.load_glue("rte")
        splits = data.load_glue("rte")
    assert [r[2] for r in log] == [None, "bytes=5000-"]              # the rerun asked for the rest only
    assert len(splits["train"]) == len(splits["dev"]) == 40 and splits["dev"][3][0] == rows[4][1]
    assert os.listdir(tmp_path / "cache" / "glue") == ["RTE"]


def test_download_of_unknown_size_takes_it_from_the_content_range(tmp_path):
    """No size or sha256 known (Alpaca's file): a resumed download answered with a shorter range than asked for
    ('bytes 1000-1499/3000') is not the whole file, though it is all the response held."""
    body = os.urandom(3000)
    with serve("org/m", {"f.json": body}, cut={"f.json": 1000}, cap=500) as (url, log):
        src, dest = f"{url}/cdn/f.json", str(tmp_path / "f.json")
        for n in (1000, 1500, 2000, 2500):                              # the cut, then 500 bytes a run
            with pytest.raises(OSError, match=f"stopped at {n:,} of 3,000 bytes; run the same command again"):
                data.download(src, dest)
        data.download(src, dest)
        assert open(dest, "rb").read() == body and log[-1][2] == "bytes=2500-"


def test_download_checksum_failure_deletes_the_part(tmp_path):
    body = b"x" * 1000
    with serve("org/m", {"model.safetensors": body}, sha256={"model.safetensors": "0" * 64}) as (url, _):
        src, dest = f"{url}/org/m/resolve/main/model.safetensors", str(tmp_path / "model.safetensors")
        with pytest.raises(OSError, match="checksum failed.*expected 1,000 bytes, sha256 0000"):
            data.download(src, dest, None, *data.remote_info(src))
        assert not os.path.exists(dest) and not os.path.exists(dest + ".part")
        with open(dest + ".part", "wb") as f:                          # a stale part longer than the file
            f.write(b"y" * 2000)
        data.download(src, dest, size=1000)
        assert open(dest, "rb").read() == body


def test_a_cached_file_with_a_flipped_bit_is_fetched_again(tmp_path, monkeypatch, capsys):
    """A file already in place at the right size was kept on its size alone: a bit flipped on disk (or a file
    changed on the Hub) went on to load. With a sha256 known (the Hub's X-Linked-Etag) it is hashed again, and one
    that differs is said and fetched again; an intact one is kept without a request."""
    shard = os.urandom(1 << 20)
    files = {"config.json": b"{}", "model.safetensors": shard}
    with serve("org/m", files) as (url, log):
        monkeypatch.setenv("HF_ENDPOINT", url)
        data.download_hf("org/m", str(tmp_path / "m"))
        path = tmp_path / "m" / "model.safetensors"
        n = len(log)
        data.download_hf("org/m", str(tmp_path / "m"))          # intact: HEADs only, no file fetched again
        assert not any(p.startswith("/cdn/") for _, p, *_ in log[n:])
        flipped = bytearray(shard)
        flipped[12345] ^= 0x10
        path.write_bytes(flipped)
        data.download_hf("org/m", str(tmp_path / "m"))
    assert path.read_bytes() == shard and ("GET", "/cdn/model.safetensors", None, None) in log[n:]
    assert f"{path}: sha256 {hashlib.sha256(flipped).hexdigest()}, not the {hashlib.sha256(shard).hexdigest()} " \
           "expected (damaged on disk, or changed at the source): fetching it again" in capsys.readouterr().err


def test_download_hf_repo_with_token(tmp_path, monkeypatch):
    """A tiny Llama checkpoint served as a gated Hub repository: listed, fetched with $HF_TOKEN (never sent to the
    CDN), loadable; without the token a clear message about the licence."""
    src = tmp_path / "src"
    torch.manual_seed(0)
    save_pretrained(build_model("llama-tiny"), src)
    files = {f: (src / f).read_bytes() for f in os.listdir(src)}
    files["README.md"] = b"not fetched"
    with serve("meta-llama/Tiny-hf", files, token="secret") as (url, log):
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        with pytest.raises(data.UserError, match="accept its licence at https://huggingface.co/meta-llama/Tiny-hf"):
            data.download_hf("meta-llama/Tiny-hf", str(tmp_path / "dl"))
        monkeypatch.setenv("HF_TOKEN", "secret")
        data.download_hf("meta-llama/Tiny-hf", str(tmp_path / "dl"))
    assert sorted(os.listdir(tmp_path / "dl")) == ["config.json", "model.safetensors"]
    assert all(auth is None for method, path, _, auth in log if path.startswith("/cdn/"))
    assert any(auth == "Bearer secret" for *_, auth in log)
    x = torch.randint(0, 256, (1, 8))
    assert torch.equal(load_pretrained(tmp_path / "dl")(x), load_pretrained(src)(x))


def test_micro_batches_resume_mid_epoch():
    """The stream from position k is the stream from 0 with k micro-batches skipped, across epochs (new order each)."""
    examples = [{"input_ids": [1] * n, "labels": [1] * n} for n in random.Random(0).choices(range(2, 30), k=23)]
    whole = [b["input_ids"].tolist() for b, _ in zip(data.micro_batches(examples, 4, seed=7), range(15))]
    later = [b["input_ids"].tolist() for b, _ in zip(data.micro_batches(examples, 4, seed=7, start=9), range(6))]
    assert later == whole[9:] and whole[:6] != whole[6:12]           # 6 batches an epoch; epoch 2 is reshuffled


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_mmlu_csv_written_by_pandas_reads_as_pandas_reads_it(newline, tmp_path):
    """MMLU's loader is pandas.read_csv(header=None): a CSV written by to_csv (Python's csv.writer) reads back with its
    doubled quotes, quoted commas and newlines, blank lines skipped (one was refused as a malformed row), strings kept."""
    rows = [['He said "hi", then\nleft?', "a,b", '"quoted"', "tab\there", " None ", "A"],
            ["Q2\r\nline", "2.50", "y", "z", "", "D"]]
    with open(tmp_path / "x_test.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator=newline).writerows(rows[:1] + [[]] + rows[1:])
    read = rows[:1] + [rows[1][:4] + ["nan", "D"]]                 # an empty field: pandas' NaN, which evaluate.py
    assert data.read_mmlu_csv(str(tmp_path / "x_test.csv")) == read  # prints "nan" (test_eval_wild.py)


def test_a_bad_mmlu_row_is_named_by_its_line(tmp_path):
    """Hendrycks' CSVs quote newlines inside questions: a bad row is named by the line it starts on (it was "row 3",
    the fourth line here); HF's cais/mmlu written out as CSV (question, subject, choices, answer 0-3) is named so."""
    (tmp_path / "x_test.csv").write_text('"Which\nline?",a,"b,\nc",d,e,A\n\nq,a,b,c,d,B\nbad,a,b,c,d,1\n')
    with pytest.raises(ValueError, match=r"x_test.csv, line 6: not question,A,B,C,D,answer\(A-D\): \['bad', "):
        data.read_mmlu_csv(str(tmp_path / "x_test.csv"))
    (tmp_path / "x_test.csv").write_text("question,subject,choices,answer\nWhat?,x,\"['1', '2', '3', '4']\",1\n")
    with pytest.raises(ValueError, match=r"line 1: .* \(a header: MMLU's CSV files have none; HF's cais/mmlu export, "
                                         r"question, subject, choices, answer 0-3, is another layout\)"):
        data.read_mmlu_csv(str(tmp_path / "x_test.csv"))
