"""data.py: instruction data and its prompt templates, the benchmarks' data sets, and the offline demo's generated
data. The tokenizers (load_tokenizer and the readers of every tokenizer file) are tokenizer.py's.

- Instruction data: Stanford Alpaca's records (instruction, input, output) and its two prompt templates word for word;
  loss on the response only (labels IGNORE on the prompt), EOS appended; seeded splits; length-grouped batches
  (padded to few lengths where a run asks: bucket_length).
- The data sets' downloads go through download.py (resumable, size and sha256 checked; `download`, `download_hf`,
  `remote_info`, `KNOWN_FILES`, `cache_dir` and `UserError` are importable from here as before); what arrives is
  checked here: MMLU's tar and GLUE's zips extracted into place whole, Alpaca's JSON read before it is kept.
- The offline demo's generator: counting questions with checkable answers, stated in plain words for pretraining
  ("Question: ... Answer: 3.") and asked as Alpaca records for fine-tuning; its tokenizer.model, trained as Llama 2's
  was (SPM_LLAMA: no normalizer, byte pieces), which transformers and llama.cpp read as sentencepiece does.
- MMLU's CSV files (the original release) and its k-shot prompt, word for word.
- GLUE (the paper's Table 1): the official TSV files of the eight tasks, encoded as classifier pairs ([CLS] A [SEP] B
  [SEP] / <s> A </s></s> B </s>).
- WMT16 English-Romanian (the paper's Table 2): the Hugging Face JSONL export or aligned plain-text files, T5's
  "translate English to Romanian: " prefix, teacher-forcing batches (decoder input = labels shifted right).
- SQuAD v1.1 (the second paper's QA): the official JSON files; contexts cut into overlapping windows for a span head
  (BERT's run_squad.py), or Alpaca records for a causal LM's generated answers.
- `collate` batches all three kinds of examples: causal-LM token labels, a classifier's one label, (source, target).

Sections, in order: instruction data (Alpaca) and batching; the offline demo's data; MMLU; GLUE; WMT16; SQuAD.
No budget of its own: each data set is a few readers that follow its official files.
Run `python -m pytest -q tests/test_data.py` (Alpaca's strings, a local stand-in for the Hub).
"""
import collections
import contextlib
import csv
import hashlib
import io
import itertools
import json
import os
import random
import re
import shutil
import sys
import tarfile
import tempfile
import unicodedata
import zipfile

import sentencepiece
import torch

from checkpoint import atomic_write, head_tail, locked
from download import cache_dir, check_recorded_sha256, download, file_sha256, make_dirs, received
from download import KNOWN_FILES, UserError, download_hf, remote_info  # noqa: F401  (data.UserError etc., as before)
from tokenizer import CJK, BPETokenizer, WordPieceTokenizer, is_punctuation


BINARY = ((b"\x1f\x8b", "gzip-compressed (gunzip it first)"), (b"PK\x03\x04", "a zip archive (unzip it first)"),
          (b"PAR1", "a Parquet file (the Hugging Face Hub's format: write it out as text, e.g. "
                    "pandas.read_parquet(FILE).to_json(OUT, orient='records', lines=True), or .to_csv(OUT, sep='\\t', "
                    "index=False))"))


@contextlib.contextmanager
def text_file(path, encoding="utf-8", newline=None):
    """open(path) for reading text; bytes that are not UTF-8 are an error naming the file and line (Python's own
    UnicodeDecodeError names neither), or what the file is where its first bytes say (BINARY: a gzip, a zip, a
    Parquet file, whose bytes no conversion of text encodings makes text)."""
    try:
        with open(path, encoding=encoding, newline=newline) as f:
            yield f
    except UnicodeDecodeError:
        with open(path, "rb") as f:
            raw = f.read()
        if kind := next((kind for magic, kind in BINARY if raw.startswith(magic)), None):  # (not latin1's either)
            raise ValueError(f"{path}: {kind}, not text") from None
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):          # Notepad's "Unicode", PowerShell 5's > : not latin1
            raise ValueError(f"{path}: UTF-16 text (its byte-order mark {raw[0]:#04x} {raw[1]:#04x}), not UTF-8; "
                             "convert it: iconv -f utf-16 -t utf-8") from None
        try:
            raw.decode(encoding)
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            raise ValueError(f"{path}, line {line}: not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}); "
                             "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
        raise


# ----------------------------------------------------------------------------------------------------
# Instruction data: Stanford Alpaca's records and prompt templates, tokenized for a causal-LM loss

IGNORE = -100  # the label of a token that carries no loss (prompt, padding): cross_entropy's ignore_index
# Stanford Alpaca's templates, word for word (tatsu-lab/stanford_alpaca, train.py, PROMPT_DICT)
PROMPT_DICT = {
    "prompt_input": (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
    ),
    "prompt_no_input": (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response:"
    ),
}
RENDERED = (PROMPT_DICT["prompt_no_input"][:45], "### Instruction:")  # how a prompt rendered by a template begins
ALPACA_URL = "https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/main/alpaca_data.json"


def alpaca_prompt(record):
    """The prompt Alpaca trains on: the template with input when the record's input is not empty."""
    key = "prompt_input" if record.get("input", "") != "" else "prompt_no_input"
    return PROMPT_DICT[key].format_map(record)


NO_VALUE = ("nan", "NaN", "None", "null", "<noinput>")  # a converter's text for a missing input (read_records says it)


def read_records(path, output=True, note=True):
    """Instruction records from a .json list or a .jsonl file. Each needs `instruction` and `output` strings (output:
    False, prompts to answer: no output needed); `input` is optional (Alpaca's empty string). Bad JSON, bytes that are
    not UTF-8 or a malformed record are errors naming the file, the line and (a record) its index; fields lorasp
    does not read, and inputs that are a converter's text for no value (NO_VALUE: pandas' "nan"), are said (where
    `note`: a command reading a file again, to check it, says them once)."""
    twice = {}                                  # id(record): a field it gives twice, with other values (noting_twice)
    with text_file(path, "utf-8-sig") as f:  # -sig: a byte-order mark (Notepad's) is not JSON
        if path.lower().endswith(".jsonl"):
            records, where = [], []
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        records.append(json.loads(line.rstrip("\n"), object_pairs_hook=noting_twice(twice)))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}, line {n}: not valid JSON ({e.msg} at column {e.colno}): "
                                         f"{line.strip()[:100]!r}") from None
                    where.append(f"line {n}")
        else:
            try:
                records = json.load(f, object_pairs_hook=noting_twice(twice))
            except json.JSONDecodeError as e:
                lines = ""
                if e.msg == "Extra data":  # (e.doc: the text read)
                    lines = (" (one JSON object a line is JSON Lines: name the file .jsonl)" if one_a_line(e.doc) else
                             " (JSON values one after another: a .json holds one list of records, [{...}, {...}])")
                raise ValueError(f"{path}, line {e.lineno}: not valid JSON ({e.msg} at column {e.colno}){lines}") \
                    from None
            where = None
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records, found {type(records).__name__}")
    for i, r in enumerate(records):
        if problem := record_problem(r, output) or twice.get(id(r)):  # (a .json list's line: found once there is one)
            line = where[i] if where else f"line {json_list_line(path, i)}"
            raise ValueError(f"{path}, {line}: record {i} {problem}" + (
                " (a list of records on one line: a .jsonl holds one record object a line; name the file .json)"
                if where and isinstance(r, list) and all(isinstance(x, dict) for x in r) else ""))
    unused = {}                     # LLaMA-Factory's system prompt and history, ...: said, not dropped without a word
    for r in records:               # ("text": the Hub's Alpaca export renders the three fields into it: not said)
        for k in set(r) - {"instruction", "input", "output"}:
            unused[k] = unused.get(k, 0) + (r[k] not in (None, "", [], {}) and not (k == "text" and rendered(r)))
    if (unused := {k: n for k, n in unused.items() if n}) and note:
        print(f"note: {path}: fields lorasp does not use (it reads instruction, input, output): " + ", ".join(
            f"{k!r} in {n:,} records" for k, n in sorted(unused.items())) + (
            " ('text' there is not Alpaca's prompt of the record's fields: lorasp trains on that prompt, not on "
            "'text')" if "text" in unused else ""), file=sys.stderr)
    if note and (none := [i for i, r in enumerate(records) if r.get("input") in NO_VALUE]):  # (trained as its text)
        seen = dict.fromkeys(records[i]["input"] for i in none)
        print(f"note: {path}: {len(none):,} of the {len(records):,} records have the input "
              f"{' or '.join(map(repr, seen))} (the first: record {none[0]}, line {record_line(path, none[0])}), text "
              "a converter writes for no value (pandas' nan, Python's None, self-instruct's <noinput>): Alpaca's "
              'template shows it under "### Input:"; a record without input has "input": ""', file=sys.stderr)
    return records


def one_a_line(text):
    """Whether a text's first non-blank line is a JSON value by itself (JSON Lines), not the start of one that spans
    lines (json.dump's indent)."""
    try:
        json.loads(next((line for line in text.splitlines() if line.strip()), ""))
        return True
    except json.JSONDecodeError:
        return False


def noting_twice(twice, read=("instruction", "input", "output")):
    """json's object_pairs_hook: the dict json makes (a key given twice: its last value, without a word, as Python's
    json and JavaScript's JSON.parse keep it), noting in `twice` an object that gives a field lorasp reads (`read`:
    an instruction record's, a translation's languages) twice with other values: which one the file means, no reader
    can tell. Values are compared as JSON writes them, so NaN (which Python's json reads, unequal to itself) given
    once is not taken for two."""
    def same(a, b):
        return a == b or json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)

    def hook(pairs):
        obj, first = dict(pairs), {}
        for k, v in pairs:
            if k in read and not same(first.setdefault(k, v), v) and id(obj) not in twice:
                twice[id(obj)] = (f"gives {k!r} twice ({first[k]!r:.60}, then {v!r:.60}): JSON keeps the last one "
                                  "without a word; keep the one you mean")
        return obj
    return hook


def record_problem(r, output=True):
    """What is wrong with an instruction record, or None: not an object, a field missing or not a string (or text),
    or databricks-dolly's context given without an input (it would be dropped: the instruction asked without it)."""
    if not isinstance(r, dict):
        return f"is a {type(r).__name__}, not an object"
    for field in ("instruction", "input", "output"):
        if field not in r and (field == "input" or field == "output" and not output):
            continue
        if field not in r:
            return f"has no {field!r} field (it has {sorted(r)})" + (
                "; databricks-dolly's context and response are Alpaca's input and output: rename them" if
                {"context", "response"} <= set(r) else
                "; a chat (OpenAI's messages, ShareGPT's conversations) is not an instruction record: lorasp trains "
                "Alpaca's instruction, input, output" if {"messages", "conversations"} & set(r) else "")
        if not isinstance(r[field], str):  # (a null input, a Hub export's missing value: Alpaca's train.py writes None)
            null = ' (JSON\'s null: a record without input has "input": "", or no "input")' * (r[field] is None)
            return f"field {field!r} is a {type(r[field]).__name__}, not a string" + null * (field == "input")
        try:
            r[field].encode("utf-8")
        except UnicodeEncodeError as e:                        # JSON's "\ud800" alone: no character, no token
            return (f"field {field!r} holds an unpaired surrogate ({r[field][e.start]!r} at character {e.start}): "
                    "not text")
        if field != "output" and r[field].lstrip().startswith(RENDERED):  # (a prompt/completion file's prompt)
            return (f"field {field!r} starts with Alpaca's prompt template ({r[field].lstrip()[:45]!r}...), which "
                    "lorasp adds itself: the prompt would hold it twice (eval.py and generate.py ask it once); give "
                    f"the {field} alone")
    if isinstance(r.get("context"), str) and r["context"].strip() and not r.get("input"):  # (dolly, output renamed)
        return (f"has a 'context' ({r['context']!r:.60}) and no input: databricks-dolly's context is Alpaca's input; "
                "rename it 'input' (lorasp reads instruction, input, output: the instruction would be learned without "
                "the text it is about)")
    return None


def rendered(r):
    """Whether a record's "text" is Alpaca's prompt of its own fields followed by more (the Hub's tatsu-lab/alpaca:
    prompt, newline, output), whitespace aside; another template there (a chat model's) is text lorasp does not read."""
    squeeze = lambda s: "".join(s.split())  # noqa: E731
    return isinstance(r["text"], str) and squeeze(r["text"]).startswith(squeeze(alpaca_prompt(r)))


def record_line(path, index):
    """The line the index-th record of a .json list or .jsonl file starts on (for a message naming it)."""
    if not path.lower().endswith(".jsonl"):
        return json_list_line(path, index)
    with open(path, encoding="utf-8-sig") as f:
        return [n for n, line in enumerate(f, 1) if line.strip()][index]


def json_list_line(path, index):
    """The line a JSON list's index-th element starts on, in a file json.load read (for a message naming it)."""
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    decoder, i, gap = json.JSONDecoder(), text.index("[") + 1, re.compile(r"[\s,]*")
    for _ in range(index):
        i = decoder.raw_decode(text, gap.match(text, i).end())[1]
    return text.count("\n", 0, gap.match(text, i).end()) + 1


def encode_head(tok, text, n, bos=None, eos=False, after=False):
    """tok.encode(text, bos, eos, after), or its first n + 1 or more tokens when the text is longer than that (the
    caller cuts at n and sees that it did) without tokenizing all of it: a prefix of the characters, grown 4x until it
    gives n + 16 tokens (the last few of a cut text may differ from the whole text's), so one 50 MB record costs what
    a few thousand characters do."""
    chars = 8 * n + 1024
    while chars < len(text):
        ids = tok.encode(text[:chars], bos=bos, eos=False, after=after)
        if len(ids) > n + 16:
            return ids[:n + 1]
        chars *= 4
    return tok.encode(text, bos=bos, eos=eos, after=after)


def tokenize_records(records, tok, seq_len):
    """Each record -> {"input_ids", "labels"}: the prompt's tokens, then the response's and EOS; labels are the ids
    with the prompt set to IGNORE, so only the response is learned. Prompt and response are tokenized apart and
    joined (as torchtune does), so the boundary is exact whatever the tokenizer merges; the response as it continues
    the prompt (sentencepiece: no "▁" of its own, as in Alpaca's joined text). Sequences longer than
    seq_len keep their first seq_len tokens; one left with no response token is dropped (nothing to learn).
    Returns (examples, number truncated)."""
    examples, truncated = [], 0
    for r in records:  # a huge record is cut before it is tokenized whole (encode_head)
        prompt = encode_head(tok, alpaca_prompt(r), seq_len)
        response = encode_head(tok, r["output"], max(seq_len - len(prompt), 0), bos=False, eos=True, after=True)
        ids, labels = prompt + response, [IGNORE] * len(prompt) + response
        truncated += len(ids) > seq_len
        if len(prompt) < seq_len:
            examples.append({"input_ids": ids[:seq_len], "labels": labels[:seq_len]})
    return examples, truncated


def perplexity_docs(path, tok):
    """[(token ids, first scored index)] for perplexity: a text file is read as train.py reads it (each non-empty line
    BOS ... EOS, concatenated), every token scored but the first; Alpaca JSON/JSONL records are prompt + output + EOS
    each, only the response scored (prompt and response tokenized apart, as tokenize_records does)."""
    if not path.lower().endswith((".json", ".jsonl")):  # as train.py learns it: each line a document (text_ids)
        return [(text_ids(path, tok), 1)]
    if not (records := read_records(path)):                # (was a ZeroDivisionError, after the model loaded)
        raise ValueError(f"{path}: no record to score (an empty list, or no line)")
    prompts = [(tok.encode(alpaca_prompt(r)), tok.encode(r["output"], bos=False, eos=True, after=True))
               for r in records]
    return [(p + o, len(p)) for p, o in prompts]


def read_prompts(path):
    """Instructions to answer: Alpaca records (.json/.jsonl; no output needed), or one instruction a line; a file with
    none is an error (was an exit 0 with no answer)."""
    if path.lower().endswith((".json", ".jsonl")):
        records = read_records(path, output=False)
    else:
        check_not_records(path)
        with text_file(path, "utf-8-sig") as f:  # -sig: a byte-order mark is not part of the first instruction
            records = [{"instruction": s.strip()} for s in f if s.strip()]
    if not records:
        raise ValueError(f"{path}: no instruction to answer (" + ("an empty list, or no line" if path.lower(
        ).endswith((".json", ".jsonl")) else "an empty file, or blank lines only") + ")")
    return records


def fingerprint(item):
    """A record's (or a .txt block's) identity whatever file or place holds it: its JSON's sha256, 16 hex digits."""
    return hashlib.sha256(json.dumps(item, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def split_records(records, val_fraction, seed, held=None):
    """A seeded held-out split: (train, validation), the validation part round(val_fraction * n) records. With `held`
    (the fingerprints of a checkpoint's held-out records: --resume) the checkpoint's split: the seeded one where it
    holds out those records (the file unchanged, or changed in its training share only), else the records held names
    are held out, each as many times as it names it (a word-for-word twin in the training share trains), and all
    others train: a new split of a changed file would hold out records the checkpoint trained on."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_val = round(val_fraction * len(records))
    train, val = [records[i] for i in sorted(order[n_val:])], [records[i] for i in sorted(order[:n_val])]
    if held is None or collections.Counter(map(fingerprint, val)) == collections.Counter(held):
        return train, val
    left, out = collections.Counter(held), []
    for r in records:                                          # (in file order: the first copies are held out)
        out.append(left[f := fingerprint(r)] > 0)
        left[f] -= 1
    return [r for r, o in zip(records, out) if not o], [r for r, o in zip(records, out) if o]


def length_grouped_batches(lengths, batch_size, seed, group=64):
    """Batches of indices whose sequences have similar lengths (less padding): a seeded shuffle, length-sorted
    within groups of `group` batches, cut into batches, and the batches shuffled. One call = one epoch."""
    rng, order = random.Random(seed), list(range(len(lengths)))
    rng.shuffle(order)
    batches, span = [], batch_size * group
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: -lengths[i])  # stable: ties keep the shuffle
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def epoch_batches(lengths, batch_size, seed, accum=None):
    """One epoch's micro-batches of indices. accum (train.py: --grad-accum) groups whole steps: length_grouped_batches
    of accum x batch_size examples, each cut into accum micro-batches, the one short group last, so that each step
    of the epoch holds the same records at any split of that product (--batch-size 1 --grad-accum 4 as 4 x 1, as
    Trainer's group_by_length groups them). None: length_grouped_batches at batch_size (runs saved before:
    step_groups)."""
    if accum is None:
        return length_grouped_batches(lengths, batch_size, seed)
    groups = length_grouped_batches(lengths, batch_size * accum, seed)
    groups.sort(key=lambda g: len(g) < batch_size * accum)   # stable: the short group last, the rest in order
    return [g[j:j + batch_size] for g in groups for j in range(0, len(g), batch_size)]


def step_groups(args):
    """train.py's accum for epoch_batches: --grad-accum; None where a checkpoint saved before steps were grouped whole
    (its state.json has no group_rule) is resumed: its run goes on in the order it began."""
    return args.grad_accum if getattr(args, "group_rule", "step") == "step" else None


def bucket_length(n, limit):
    """n rounded up to one of few lengths: a multiple of 4 up to 64, of 8 up to 128, of 16 up to 256, ... (1/16 of
    the next power of two: at most 1/8 more tokens from 32 on, ~1/24 on average past 128; below 32, up to 3), not past
    limit (nor below n). On a CPU, oneDNN keeps memory for every bf16 matmul shape it has met (plan.SHAPE_BYTES):
    batches padded to these lengths meet at most 16 up to 64 tokens and 8 more per doubling (40 up to 512), where
    padding to the longest sequence meets up to `limit`."""
    step = max(4, (1 << (n - 1).bit_length()) // 16)
    return max(n, min(-(-n // step) * step, limit))


def collate(examples, pad_id=0, bucket=None):
    """Right-padded (B, T) tensors. The padding's labels are IGNORE, and with causal attention no real token sees
    a later pad, so a causal LM needs no attention mask; `attention_mask` is there for models that do. A classifier's
    examples carry token_type_ids and one label each (a class index, or a score): labels (B,). (source, target)
    pairs are an encoder-decoder's: seq2seq_batch. T is the longest sequence, or with bucket (--seq-len) its
    bucket_length (plan.bucket says when)."""
    if isinstance(examples[0], tuple):
        return seq2seq_batch(examples, pad_id, IGNORE, bucket)
    T = max(len(e["input_ids"]) for e in examples)
    T = bucket_length(T, bucket) if bucket else T
    pad = lambda seq, value: seq + [value] * (T - len(seq))  # noqa: E731
    batch = {"input_ids": torch.tensor([pad(e["input_ids"], pad_id) for e in examples]),
             "labels": torch.tensor([pad(e["labels"], IGNORE) if isinstance(e["labels"], list) else e["labels"]
                                     for e in examples]),  # int64 class indices, float32 scores
             "attention_mask": torch.tensor([pad([1] * len(e["input_ids"]), 0) for e in examples])}
    if "token_type_ids" in examples[0]:
        batch["token_type_ids"] = torch.tensor([pad(e["token_type_ids"], 0) for e in examples])
    return batch


def length(example):
    """Tokens in an example: its input_ids, or both sides of a (source, target) pair."""
    return len(example[0]) + len(example[1]) if isinstance(example, tuple) else len(example["input_ids"])


def sorted_batches(examples, batch_size, pad_id=0, rank=0, world=1, bucket=None):
    """(indices, collated batch) in length order, for evaluation (little padding); under DDP rank takes every
    world-th batch; bucket: as collate's."""
    order = sorted(range(len(examples)), key=lambda i: length(examples[i]))
    for s in range(rank * batch_size, len(order), batch_size * world):
        yield order[s:s + batch_size], collate([examples[i] for i in order[s:s + batch_size]], pad_id, bucket)


def load_examples(path, tok, seq_len, val_fraction, seed, held=None):
    """(train examples, validation examples, validation records) from "alpaca" (Stanford Alpaca's file, fetched into
    the cache once), a .json/.jsonl of records, or a .txt for language modelling (every token learned, no template).
    held: split_records'."""
    if path == "alpaca":
        path = cache_dir("data", "alpaca_data.json")
        if not os.path.exists(path):
            print(f"fetching Stanford Alpaca's alpaca_data.json into {path}")
            download(ALPACA_URL, path, by_hand="or pass --data FILE (Alpaca-format .json or .jsonl)")
            try:
                read_records(path)
            except ValueError as e:  # an HTML error page, say: not kept
                what = received(path)
                os.remove(path)
                raise ValueError(f"{ALPACA_URL} did not give Alpaca's records ({e}); received {what}; it was "
                                 "deleted") from None
        check_recorded_sha256(path)
    ext = check_records_name(path)
    if ext == ".txt":
        train, val = split_records(text_examples(path, tok, seq_len), val_fraction, seed, held)
        print(f"{path}: {len(train):,} train / {len(val):,} held-out blocks of {seq_len} tokens")
        return train, val, []
    records = read_records(path)
    if empty := [i for i, r in enumerate(records) if not r["output"].strip()]:  # (an export that lost the responses)
        first = f"record {empty[0]}, line {record_line(path, empty[0])}"
        if len(empty) == len(records):
            raise ValueError(f"{path}: every record's output is empty ({first}, ...): nothing to learn but an EOS "
                             "right after the prompt (instructions to answer go to eval.py --task generate --prompts)")
        print(f"note: {path}: {len(empty):,} of the {len(records):,} records have an empty output (the first: "
              f"{first}): each trains the response to end at once, with EOS", file=sys.stderr)
    if bare := [i for i, r in enumerate(records) if not (r["instruction"].strip() or r.get("input", "").strip())]:
        first = f"record {bare[0]}, line {record_line(path, bare[0])}"  # (a converter that read the wrong key)
        if len(bare) == len(records):
            raise ValueError(f"{path}: no record has an instruction or an input ({first}, ...): every prompt is "
                             "Alpaca's template alone, so the outputs would be learned with no question to them; give "
                             "each record its instruction")
        print(f"note: {path}: {len(bare):,} of the {len(records):,} records have no instruction and no input (the "
              f"first: {first}): each trains its output after Alpaca's template alone", file=sys.stderr)
    train, val = split_records(records, val_fraction, seed, held)
    seen = {(r["instruction"], r.get("input", ""), r["output"]) for r in train}
    if twins := sum((r["instruction"], r.get("input", ""), r["output"]) in seen for r in val):  # (a duplicate record)
        print(f"note: {path}: {twins:,} of the {len(val):,} held-out records are also training records, word for word "
              "(the file holds them twice): the held-out check counts them as unseen")
    (train_ex, cut), (val_ex, cut_val) = (tokenize_records(r, tok, seq_len) for r in (train, val))
    print(f"{path}: {len(train_ex):,} train / {len(val_ex):,} held-out examples of {len(train) + len(val):,} "
          f"records; " + cut_and_dropped(cut + cut_val, len(train) + len(val) - len(train_ex) - len(val_ex), seq_len))
    return train_ex, val_ex, val


def check_records_name(path):
    """The ending of a --data file (.json, .jsonl or .txt, any case); another is an error (a GLUE or MMLU file: where
    it goes instead)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".json", ".jsonl", ".txt"):
        raise ValueError(f"--data {path}: a .json or .jsonl of instruction records or a .txt corpus, told apart by the "
                         f"name's ending (this one: {ext or 'none'!r})" + (
                             "; a GLUE task's .tsv files train with --data glue/TASK --data-dir GLUE_DIR (the folder "
                             "holding TASK/train.tsv)" if ext == ".tsv" else ""))
    return ext


def cut_and_dropped(cut, dropped, seq_len):
    """The log's count of records longer than --seq-len: cut to fit, or dropped (the prompt alone fills it)."""
    return f"{cut - dropped:,} longer than --seq-len {seq_len}, cut" + (
        f"; {dropped:,} dropped (the prompt alone fills --seq-len: no response token to learn)" if dropped else "")


def micro_batches(examples, batch_size, seed, start=0, pad_id=0, rank=0, world=1, bucket=None, accum=None):
    """Collated micro-batches, epoch after epoch, from the start-th on. The order depends on the seed and the epoch
    only, so a resumed run sees exactly the batches the interrupted one would have. Under DDP the global batches
    are one process's of batch_size x world, and rank takes every world-th example of each: `start` counts global
    batches whatever the rank. A rank left without an example (a short last batch) gets one with every label
    IGNORE: it joins the gradient all-reduce with nothing to add. bucket: as collate's; accum: epoch_batches'."""
    lengths, n = [length(e) for e in examples], -(-len(examples) // (batch_size * world))
    epoch, i = divmod(start, n)
    while True:
        for idx in epoch_batches(lengths, batch_size * world, seed + epoch, accum)[i:]:
            batch = collate([examples[j] for j in idx[rank::world] or idx[:1]], pad_id, bucket)
            if not idx[rank::world]:
                batch["labels"].fill_(IGNORE)
            yield batch
        epoch, i = epoch + 1, 0


NAMED_LM_DATA = ("alpaca", "squad-gen")  # --data names of a causal-LM task that are not files


def task_kind(name):
    """glue/TASK: a classifier (Table 1); wmt16-en-ro: translation with T5 (Table 2); squad: extractive QA with a span
    head (the second paper's BERT runs); anything else (squad-gen: SQuAD as instructions): a causal LM."""
    return "glue" if (name or "").startswith("glue/") else {"wmt16-en-ro": "seq2seq", "squad": "squad"}.get(name, "lm")


def holds_out(name):
    """Whether --val-fraction splits --data's records (a held-out share for validation and the before/after check): a
    causal LM's records or text; not squad-gen, nor the other tasks, whose data sets bring their own dev splits."""
    return task_kind(name) == "lm" and name != "squad-gen"


def data_fingerprint(name):
    """A causal LM's --data file (named data: its cached file) by its contents, whatever its name or folder: the sha256
    of its size and first and last MiB. The adapter keeps it (eval.py: --data the file it trained on is said); None
    for a task whose data set brings its own dev split, or no such file."""
    path = cache_dir("data", "alpaca_data.json") if name == "alpaca" else name
    if not holds_out(name) or not os.path.isfile(path):
        return None
    size, head, tail = head_tail(path)
    return hashlib.sha256(str(size).encode() + head + tail).hexdigest()


def task_examples(name, tok, seq_len, data_dir=None, val_fraction=0.02, seed=0, held=None):
    """train.py's --data, whichever kind of task it names: (train examples, validation examples (GLUE: {dev split:
    examples}), held-out records for a before/after check (wmt16: (source, target) pairs)). held: split_records'."""
    if task_kind(name) == "glue":
        return *glue_examples(name[5:], tok, seq_len, data_dir), []
    if task_kind(name) == "seq2seq":
        return wmt16_examples(data_dir or cache_dir("wmt16-en-ro"), tok, seq_len)
    if name in ("squad", "squad-gen"):
        return squad_examples(tok, seq_len, data_dir, generative=name == "squad-gen")
    return load_examples(name, tok, seq_len, val_fraction, seed, held)


def text_ids(path, tok):
    """A plain-text corpus as token ids: each non-empty line a document (BOS ... EOS), all of them concatenated."""
    check_not_records(path)
    ids = []
    with text_file(path, "utf-8-sig") as f:  # -sig: a byte-order mark (Notepad's) is not text to learn
        for line in f:
            if line.strip():
                ids += tok.encode(line.rstrip("\n"), eos=True)
    return ids


def check_not_records(path):
    """A .txt that starts as instruction (or chat, or prompt/completion) records is an error: a .json or .jsonl that
    Windows' hidden extensions saved as .json.txt would learn every character of its lines, JSON's syntax and field
    names included."""
    with text_file(path, "utf-8-sig") as f:
        text = f.read(1 << 20)                                 # (the first record is in the first MB or no matter)
    at = len(text) - len(text.lstrip())
    try:                                                       # a list's first element, or a JSON Lines line
        record = json.JSONDecoder().raw_decode(text, re.compile(r"\[?\s*").match(text, at).end())[0]
    except (ValueError, RecursionError):  # not JSON, or none a record can be: 4,301 digits, brackets 1,000 deep
        return
    if isinstance(record, dict) and {"prompt", "completion"} <= set(record):  # (OpenAI's fine-tuning format)
        raise ValueError(f"{path}, line {text.count(chr(10), 0, at) + 1}: prompt/completion records (OpenAI's "
                         "fine-tuning format), not text: lorasp trains Alpaca's records: rename prompt to instruction "
                         "and completion to output, and name the file .jsonl")
    if isinstance(record, dict) and {"instruction", "messages", "conversations"} & set(record):  # (or chats)
        raise ValueError(f"{path}, line {text.count(chr(10), 0, at) + 1}: " + ("Alpaca-format records" if "instruction"
                         in record else "chat records") + ", not text: name it .json (a list) or .jsonl (an object "
                         "a line)")


def text_examples(path, tok, seq_len):
    """Plain text for language modelling: text_ids cut into seq_len-token blocks (the last partial block dropped);
    every token is learned."""
    ids = text_ids(path, tok)
    return [{"input_ids": ids[i:i + seq_len], "labels": ids[i:i + seq_len]}
            for i in range(0, len(ids) - seq_len + 1, seq_len)]


# ----------------------------------------------------------------------------------------------------
# The offline demo's data: one generator for the pretraining text and the instruction task

DEMO_WORDS = ("cat dog sun red blue tree fish bird moon star cup hat pen box car bus egg ant bee cow fox owl pig "
              "rat map key bag bed ink jam kit log mud net oak pot rug saw tea van web zip").split()


DEMO_SKILLS = ("words", "numbers", "times")


def demo_example(rng, skill=None):
    """One generated fact: (the question and answer in plain words, as pretraining reads them; an Alpaca record
    asking the same question, as the instruction task does)."""
    skill = skill or rng.choice(DEMO_SKILLS)
    words = rng.sample(DEMO_WORDS, rng.randint(2, 8))
    if skill == "words":
        question, answer = f"How many words are in {' '.join(words)}?", len(words)
    elif skill == "numbers":
        mixed = words + [str(rng.randint(0, 9)) for _ in range(rng.randint(1, 5))]
        rng.shuffle(mixed)
        question, answer = f"How many numbers are in {' '.join(mixed)}?", len(mixed) - len(words)
    elif skill == "times":
        w, few = rng.choice(DEMO_WORDS[:6]), [rng.choice(DEMO_WORDS[:6]) for _ in range(rng.randint(2, 8))]
        few[rng.randrange(len(few))] = w
        question, answer = f"How many times does {w} appear in {' '.join(few)}?", few.count(w)
    else:
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        question, answer = f"What is {a} plus {b}?", a + b
    return f"Question: {question} Answer: {answer}.", dict(instruction=question, input="", output=str(answer))


def demo_corpus(n_docs, seed=0, per_doc=8):
    """Pretraining text: n_docs lines of per_doc generated sentences."""
    rng = random.Random(seed)
    return [" ".join(demo_example(rng)[0] for _ in range(per_doc)) for _ in range(n_docs)]


def demo_records(n, seed=1):
    """n distinct Alpaca-format records (instruction, input, output) with checkable answers."""
    rng, records = random.Random(seed), {}
    for i in range(20 * n):  # the skills in turn; a question drawn again is skipped
        r = demo_example(rng, DEMO_SKILLS[i % len(DEMO_SKILLS)])[1]
        if len(records) == n:
            break
        records.setdefault((r["instruction"], r["input"]), r)
    return list(records.values())


# Llama 2's tokenizer.model was trained so (its trainer_spec and normalizer_spec, read with sentencepiece's
# ModelProto): BPE, digits split, text as it is (the identity normalizer: newlines, tabs and runs of spaces stay, as
# transformers' and llama.cpp's tokenizers, which apply none, read them), a dummy "▁" prefix, a character outside the
# vocabulary as its UTF-8 bytes (<0x00>..<0xFF>, ids 3-258), unk 0, <s> 1, </s> 2, no pad. sentencepiece's defaults
# (nmt_nfkc, extra whitespace removed, unknown characters <unk>) give a tokenizer those other readers disagree with.
SPM_LLAMA = dict(model_type="bpe", split_digits=True, byte_fallback=True, allow_whitespace_only_pieces=True,
                 normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
                 unk_id=0, bos_id=1, eos_id=2, pad_id=-1)


def train_sentencepiece(lines, path, vocab_size, byte_fallback=True):
    """A sentencepiece model trained on lines as Llama 2's was (SPM_LLAMA), saved at path. vocab_size counts the 3
    special and 256 byte pieces: at least 259 + the lines' distinct characters (all kept: character_coverage 1, not
    Llama's 0.99995, which would leave a small corpus's rarest characters to bytes). byte_fallback=False: no byte
    pieces (an unseen character is <unk>), for a benchmark's model whose embedding has fewer rows (llama-tiny's 256)."""
    model, spec = io.BytesIO(), dict(SPM_LLAMA, byte_fallback=byte_fallback)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size, **spec, character_coverage=1.0,
        num_threads=1, minloglevel=2, max_sentence_length=1 << 16)
    with open(path, "wb") as f:
        f.write(model.getvalue())


def demo_files(directory, docs, vocab, seed=0):
    """The demo's pretraining text (corpus.txt, one line of generated questions and answers per document) and a
    sentencepiece tokenizer trained on it and Alpaca's templates (tokenizer.model), in directory. Returns the
    corpus's path."""
    os.makedirs(directory, exist_ok=True)
    lines, corpus = demo_corpus(docs, seed), os.path.join(directory, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    train_sentencepiece(lines[:2000] + list(PROMPT_DICT.values()) * 20, os.path.join(directory, "tokenizer.model"),
                        vocab)
    return corpus


def demo_task():
    """The demo's task file, written once: 3000 Alpaca-format records of generated questions with checkable answers."""
    task = cache_dir("data", "demo_tasks.json")
    if not os.path.exists(task):
        make_dirs(os.path.dirname(task))                       # (an unwritable cache: named)
        with atomic_write(task, "w") as f:
            json.dump(demo_records(3000, seed=1), f, indent=1)
    return task


# ----------------------------------------------------------------------------------------------------
# MMLU (Hendrycks et al. 2021): the original release's CSV files and its k-shot prompt (their evaluate.py)

MMLU_URL = "https://people.eecs.berkeley.edu/~hendrycks/data.tar"  # MMLU's original release (166 MB)
MMLU_DONE = ".lorasp-complete"  # written last into an extracted data/ folder: without it, the folder is a leftover


def mmlu_dir(data_dir=None):
    """A folder holding MMLU's dev/ and test/: data_dir, or the original release, downloaded once into the cache. The
    archive is extracted beside the cache's data/ and renamed into place when complete (marked by MMLU_DONE), so a
    refused member, Ctrl-C or a full disk leaves no half folder that a later call would read; one without the mark
    is fetched again."""
    cached = cache_dir("mmlu", "data")
    if data_dir is None and not os.path.exists(os.path.join(cached, MMLU_DONE)):
        make_dirs(os.path.dirname(cached))
        with locked(cached + ".lock", f"{cached}: another process is fetching MMLU into it; waiting for it to end"):
            if not os.path.exists(os.path.join(cached, MMLU_DONE)):  # (else the process waited for fetched it)
                fetch_mmlu(cached)
    if not os.path.isdir(os.path.join(data_dir or cached, "test")):  # (the cache's: its test/ deleted since)
        where = f"--data-dir {data_dir}" if data_dir else f"{cached} (delete it to fetch MMLU again)"
        raise SystemExit(f"error: {where}: no test/ folder (MMLU's data/ folder from {MMLU_URL})")
    return data_dir or cached


def fetch_mmlu(cached):
    """mmlu_dir's download and extraction into `cached`, its lock held (two processes shared data.extracting: one
    deleted what the other extracted, or the archive it was about to read)."""
    if os.path.exists(cached):
        print(f"{cached} is incomplete (no {MMLU_DONE}: an extraction that stopped part-way): redoing it")
        shutil.rmtree(cached)
    tarball, work = cache_dir("mmlu", "data.tar"), cache_dir("mmlu", "data.extracting")
    print(f"MMLU is not in {cached}: downloading {MMLU_URL}", flush=True)
    try:  # resumable: a second run continues the partial file
        download(MMLU_URL, tarball, by_hand="or untar it and pass --data-dir data/")
    except OSError as e:
        raise SystemExit(f"download failed ({e}); fetch {MMLU_URL} by hand, untar it, pass --data-dir data/")
    shutil.rmtree(work, ignore_errors=True)
    try:
        with tarfile.open(tarball) as t:
            t.extractall(work, filter="data")  # "data": no member may land outside `work`, or be a device
        if not os.path.isdir(os.path.join(work, "data", "test")):
            raise tarfile.TarError("it has no data/test/ folder")
        with open(os.path.join(work, "data", MMLU_DONE), "w") as f:
            f.write(f"extracted from {MMLU_URL}\n")
        os.replace(os.path.join(work, "data"), cached)
    except tarfile.TarError as e:  # not a tar archive (an HTML error page?), or a member refused
        what = received(tarball)
        os.remove(tarball)
        why = "not a tar archive" if isinstance(e, tarfile.ReadError) else (str(e).splitlines() or [""])[0]
        raise SystemExit(f"{MMLU_URL} did not give MMLU's archive ({why}); received {what}. "
                         "It was deleted: run again to fetch it anew, or fetch it by hand, untar it, pass "
                         "--data-dir data/") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.remove(tarball)


def read_mmlu_csv(path):
    """MMLU's rows: question, A, B, C, D, answer; no header. Read as the original's pandas.read_csv reads them (csv
    quoting: doubled quotes, quoted commas and newlines; blank lines skipped), kept as strings (pandas turns "None"
    into NaN and "2.50" into 2.5). An empty option is "nan", as evaluate.py prints pandas' NaN (the prompts of the
    published scores), with a note naming its lines; a question of no text (where evaluate.py stops) is an error."""
    with text_file(path, "utf-8-sig", newline="") as f:  # -sig: as pandas, a byte-order mark (Excel's) is not text
        reader, rows, line, empty = csv.reader(f), [], 1, []
        for row in reader:                               # (a row's first line: quoted newlines span lines)
            if row and (len(row) != 6 or row[5] not in ("A", "B", "C", "D")):
                header = line == 1 and "question" in row  # (HF's cais/mmlu written out: question, subject, ...)
                raise ValueError(f"{path}, line {line}: not question,A,B,C,D,answer(A-D): {row}" + header * (
                    " (a header: MMLU's CSV files have none; HF's cais/mmlu export, question, subject, choices, "
                    "answer 0-3, is another layout)"))
            if row and not row[0].strip():               # (evaluate.py: NaN + "\nA. ...", a TypeError)
                raise ValueError(f"{path}, line {line}: the question has no text: {row}")
            if row and "" in row[1:5]:                   # pandas' NaN, which evaluate.py's format() writes "nan"
                empty.append(f"line {line}: " + ", ".join(c for c, option in zip("ABCD", row[1:5]) if not option))
                row[1:5] = [option or "nan" for option in row[1:5]]
            rows += [row] * bool(row)                    # (skip_blank_lines=True)
            line = reader.line_num + 1
    if not rows:                                         # (pandas: EmptyDataError; a subject of no question)
        raise ValueError(f"{path}: no rows (an empty file); MMLU's rows are question,A,B,C,D,answer(A-D)")
    if empty:
        print(f"note: {path}: empty options ({'; '.join(empty[:5])}{'; ...' * (len(empty) > 5)}) read as \"nan\", "
              "as evaluate.py (pandas.read_csv) prints them, so the prompts are those of MMLU's published scores "
              "(lm-eval-harness, through HF's cais/mmlu, shows them empty)", file=sys.stderr)
    return rows


def mmlu_example(row, answer=True):  # row: question, A, B, C, D, answer
    text = row[0] + "".join(f"\n{c}. {option}" for c, option in zip("ABCD", row[1:5])) + "\nAnswer:"
    return text + f" {row[5]}\n\n" if answer else text


def mmlu_prompt(subject, dev, row, k=5):
    """Header, k worked dev examples, then the question ending "Answer:". The original's format_subject puts a space
    before each word, so "about" is followed by two spaces; we keep it, as the published scores have it."""
    about = "".join(" " + word for word in subject.split("_"))
    return (f"The following are multiple choice questions (with answers) about {about}.\n\n"
            + "".join(mmlu_example(r) for r in dev[:k]) + mmlu_example(row, answer=False))


# ----------------------------------------------------------------------------------------------------
# GLUE (Wang et al. 2019): the official TSV files, as the paper's Table 1 uses them

GLUE_URL = "https://dl.fbaipublicfiles.com/glue/data/"  # the files download_glue_data.py and HF's `glue` fetch
GLUE = {  # task: (folder, zip, text columns, label column, labels in class-index order (None: a score), dev files)
    "cola": ("CoLA", "CoLA.zip", ("sentence",), "label", ("0", "1"), ("dev",)),
    "sst2": ("SST-2", "SST-2.zip", ("sentence",), "label", ("0", "1"), ("dev",)),
    "mrpc": ("MRPC", None, ("#1 String", "#2 String"), "Quality", ("0", "1"), ("dev",)),
    "qqp": ("QQP", "QQP-clean.zip", ("question1", "question2"), "is_duplicate", ("0", "1"), ("dev",)),
    "stsb": ("STS-B", "STS-B.zip", ("sentence1", "sentence2"), "score", None, ("dev",)),
    "mnli": ("MNLI", "MNLI.zip", ("sentence1", "sentence2"), "gold_label", ("entailment", "neutral", "contradiction"),
             ("dev_matched", "dev_mismatched")),
    "qnli": ("QNLI", "QNLIv2.zip", ("question", "sentence"), "label", ("entailment", "not_entailment"), ("dev",)),
    "rte": ("RTE", "RTE.zip", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"), ("dev",)),
}
# MultiNLI's genres: the training set's, which dev_matched holds, and the five others, dev_mismatched's (its "genre")
MNLI_GENRES = (("fiction", "government", "slate", "telephone", "travel"),
               ("facetoface", "letters", "nineeleven", "oup", "verbatim"))
COLA_COLUMNS = ("source", "label", "original_label", "sentence")  # CoLA's train/dev files have no header
MRPC_URLS = {"train": "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt",
             "dev_ids": GLUE_URL + "mrpc_dev_ids.tsv"}  # MRPC is not hosted by GLUE: SentEval's copy + GLUE's split


def written_quoted(path, delimiter="\t"):
    """Whether a TSV/CSV file is quoted as pandas' to_csv (Python's csv.writer, QUOTE_MINIMAL) writes it: every row,
    read with csv's quoting, written back the same, byte for byte (fields holding a tab, newline or quote in doubled
    quotes "", the others bare). GLUE's own files are not: their quotes are text (CoLA's 'He said "hi.', MRPC's
    '"Referring ...'). A file with no quote character reads the same both ways (False). A file with rows of both
    kinds is read as HF's glue loader reads every GLUE file, quotes as text (False), with a note naming a line of
    each. QQP's questions are user-written: one of the form "a ""b"" c" reads as pandas-quoted, and that one row
    must not change how all the others read, nor get the file refused."""
    with text_file(path, "utf-8-sig", newline="") as f:
        raw, quoted, bare, start = [], None, None, 1   # quoted, bare: the first line of a row of each kind

        def lines():                                   # each row's own text, as the reader takes it
            for line in f:
                raw.append(line)
                yield line
        rows = csv.reader(lines(), delimiter=delimiter, strict=True)
        try:
            for row in rows:
                text, raw[:] = "".join(raw), []
                if '"' in text:                        # (a row without a quote reads the same either way: not
                    out = io.StringIO()                # written back, MNLI's 392,702 rows cost 6 s written)
                    csv.writer(out, delimiter=delimiter, lineterminator="\r\n" if text.endswith("\r\n") else "\n"
                               ).writerow(row)
                    same = out.getvalue() == text or out.getvalue().rstrip("\r\n") == text  # (last: no line end)
                    if same:
                        quoted = quoted or start
                    else:
                        bare = bare or start
                    if quoted and bare:
                        break
                start = rows.line_num + 1
        except csv.Error:                              # a lone quote, a field past csv's size limit: quotes as text
            bare = bare or start
    if quoted and bare:
        print(f"note: {path}: line {quoted} reads as quoted the way pandas' to_csv writes it, line {bare} has a quote "
              "that is text: read with quotes as text throughout (csv.QUOTE_NONE, as HF's glue loader reads GLUE), "
              f"so line {quoted}'s quotes are kept as written", file=sys.stderr)
    return bool(quoted) and not bare


def read_glue(path, task, genres=None):
    """One GLUE TSV file -> [(text_a, text_b or None, label)]: label a class index, or STS-B's float score.
    Tab-separated with no quoting (csv.QUOTE_NONE: quotes are text, as GLUE's files and HF's glue loader have them),
    unless the file is quoted as pandas' to_csv(sep="\t") writes it (written_quoted): then read as pandas reads it.
    Rows with fields missing or an empty class label are skipped with a note counting them, as HF's glue loader
    drops them (its "corrupted rows": QQP's), and MultiNLI's own files' "-" (no consensus), as GLUE's MNLI files leave
    it out; empty fields past the header's (trailing tabs) are left out, as HF's loader leaves them out; more fields (a
    stray tab), an unknown label or a missing column is an error naming the file and line; a text column empty in
    every row is an error, in some rows a note. genres: a list that gets (line, genre) of each row read, where the
    file has a "genre" column (MNLI's)."""
    folder, zipname, texts, label, labels, _ = GLUE[task]
    out, skipped, fields, quoted, lines = [], [], 0, written_quoted(path), []
    no_label = ("", "-") if task == "mnli" else ("",)  # "-": MultiNLI's own files' pairs without a consensus label
    with text_file(path, "utf-8-sig", newline="") as f:  # -sig: MRPC's files start with a byte-order mark
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE)
        header = COLA_COLUMNS if task == "cola" else next(rows, [])
        empty = ValueError(f"{path}: an empty file (GLUE {task}'s {os.path.basename(path)} holds " + (
            "a row per example, no header" if task == "cola" else "a header, then a row per example") +
            ", as download_glue_data.py writes it)")
        if not any(header):                                    # (else "no column 'sentence' ... the header has []")
            raise empty
        missing = [c for c in (*texts, label) if c not in header]
        if missing:
            raise ValueError(f"{path}: no column {missing[0]!r} for GLUE {task} (the header has {header})")
        if twice := next((c for c in (*texts, label) if header.count(c) > 1), None):  # (was read as the last)
            where = [i + 1 for i, c in enumerate(header) if c == twice]
            raise ValueError(f"{path}:1: the header names {twice!r} twice (columns {where[0]} and {where[1]}): "
                             "csv.DictReader (HF's glue loader) reads the last, pandas the first; rename the other")
        for row in rows:
            if not any(row):                                   # a blank line: nothing to read
                continue
            while len(row) > len(header) and row[-1] == "":  # a trailing tab: csv.DictReader's rest, left out
                row.pop()
            r = dict(zip(header, row))
            if len(row) < len(header) or labels is not None and r[label] in no_label:
                skipped.append(rows.line_num)                  # (csv.DictReader's None fields: HF skips the row)
                fields = fields or len(row)                    # the first one's, for the error if all are
                continue
            if len(row) > len(header):
                raise ValueError(f"{path}:{rows.line_num}: {len(row)} fields, expected {len(header)} ({task})")
            try:
                y = float(r[label]) if labels is None else labels.index(r[label])
                if labels is None and not 0 <= y <= 5:         # STS-B's similarity scale; also refuses nan, inf
                    raise ValueError
            except ValueError:
                raise ValueError(f"{path}:{rows.line_num}: label {r[label]!r} is not "
                                 f"{'a number in [0, 5]' if labels is None else ' or '.join(labels)}" +
                                 label_hint(r[label], labels)) from None
            out.append((r[texts[0]], r[texts[1]] if len(texts) > 1 else None, y))
            lines.append(rows.line_num)
            if genres is not None and "genre" in r:
                genres.append((rows.line_num, r["genre"]))
    if task == "cola" and not (out or skipped):                # (no header): not a row, blank lines at most
        raise empty
    for k, column in enumerate(texts):                         # (a converter that wrote another column's name)
        if blank := [n for n, row in zip(lines, out) if not row[k].strip()]:
            if len(blank) == len(out):                         # (trained on [CLS] A [SEP] [SEP], exit 0)
                raise ValueError(f"{path}: column {column!r} is empty in every row (line {blank[0]}, ...): the "
                                 f"classifier would learn GLUE {task} from " + (
                                     "the other sentence alone" if len(texts) > 1 else "no text"))
            print(f"note: {path}: column {column!r} is empty in {len(blank):,} of the {len(out):,} rows (line"
                  f"{'s' * (len(blank) > 1)} {', '.join(map(str, blank[:5]))}{', ...' * (len(blank) > 5)})",
                  file=sys.stderr)
    if skipped and not out:                                    # (then "no examples", as if it held none)
        raise ValueError(f"{path}: every row has fields missing or no label (line {skipped[0]}: {fields} fields; GLUE "
                         f"{task}'s are {', '.join(header)}" + (": CoLA's train and dev files have no header)" if
                                                                task == "cola" else ")"))
    if skipped:
        print(f"note: {path}: skipped {len(skipped):,} row{'s' * (len(skipped) > 1)} with fields missing or no label "
              f"(line{'s' * (len(skipped) > 1)} {', '.join(map(str, skipped[:5]))}{', ...' * (len(skipped) > 5)}), "
              "as HF's glue loader skips them", file=sys.stderr)
    return out


def label_hint(value, labels):
    """What a GLUE label that is not one may be (read_glue's error): HF's glue export writes a class index where
    GLUE's files name the class (its ClassLabel's names, in lorasp's order), and -1 for the test split's."""
    if value.strip() == "-1":
        return " (-1: the Hugging Face export's test split, whose labels GLUE keeps secret: train and score on train " \
               "and dev)"
    if labels and labels[0] != "0" and value.strip() in map(str, range(len(labels))):
        return (" (a class index, as the Hugging Face glue export writes it? There " +
                ", ".join(f"{i} is {c}" if i == 0 else f"{i} {c}" for i, c in enumerate(labels)) +
                ": write the class names, as GLUE's files do)")
    return ""


def load_glue(task, root=None, train=True):
    """{split: examples} of a GLUE task: "train" (train=False: left out, as eval.py needs no training file) and "dev"
    (MNLI: "dev_matched", "dev_mismatched"), from root/<task folder>/ (download_glue_data.py's layout:
    glue_data/SST-2/train.tsv), by default the cache, where a missing task is downloaded. MNLI's dev files swapped
    (each of the other's genres) are an error (mnli_genres); a dev file holding the train file's rows (or MNLI's
    dev_matched's) is said (same_rows), as are STS-B's scores off GLUE's 0-5 scale (stsb_scale)."""
    if task not in GLUE:
        raise ValueError(f"unknown GLUE task {task!r}; known tasks: {', '.join(GLUE)}")
    folder, *_, devs = GLUE[task]
    directory, files = os.path.join(root or cache_dir("glue"), folder), ("train",) * train + devs
    if not all(os.path.exists(os.path.join(directory, f"{s}.tsv")) for s in files):
        if root:                                               # what is there instead, where it tells what to give
            above = all(os.path.exists(os.path.join(root, f"{s}.tsv")) for s in files)
            there = sorted(os.listdir(directory)) if os.path.isdir(directory) and not above else []
            raise FileNotFoundError(f"{directory}: needs {', '.join(f'{s}.tsv' for s in files)}" + (
                f"; --data-dir names the folder that holds {folder}/, not {folder}/ itself: --data-dir "
                f"{os.path.normpath(os.path.join(root, os.pardir))}" if above else
                f" (it holds {', '.join(there[:6])}{', ...' * (len(there) > 6)}: lorasp reads GLUE's .tsv files as "
                "download_glue_data.py writes them)" if there else ""))
        make_dirs(os.path.dirname(directory))
        with locked(directory + ".lock", f"{directory}: another process is fetching GLUE's {task} into it; waiting "
                    "for it to end"):               # (two shared FOLDER.download: one deleted the other's archive)
            if not all(os.path.exists(os.path.join(directory, f"{s}.tsv")) for s in files):
                download_glue(task, os.path.dirname(directory))
    genres = {s: [] for s in files}
    splits = {s: read_glue(os.path.join(directory, f"{s}.tsv"), task, genres[s]) for s in files}
    if task == "mnli":
        mnli_genres(directory, genres)
    for split in devs:
        same_rows(splits[split], splits.get("train"), os.path.join(directory, f"{split}.tsv"), os.path.join(
            directory, "train.tsv"), "row", f"GLUE {task}'s {split} score is measured on the examples it trains on, "
            f"not on GLUE's {split} set")
    if task == "mnli":
        same_rows(splits["dev_mismatched"], splits["dev_matched"], os.path.join(directory, "dev_mismatched.tsv"),
                  os.path.join(directory, "dev_matched.tsv"), "row", "GLUE mnli's mismatched score is the matched "
                  "one's again, not measured on MultiNLI's other genres")
    for split, rows in splits.items():
        if not rows and split != "train":                      # (train.py names an empty train split itself)
            raise ValueError(f"{os.path.join(directory, split + '.tsv')}: no examples (a header and no rows)")
    if task == "stsb":
        stsb_scale(splits, directory)
    return splits


def stsb_scale(splits, directory):
    """Say so where STS-B's scores are off GLUE's 0-5 scale: every score of a file within [0, 1] (a re-export divided
    by 5, as sentence-transformers' stsb is), alone or beside a file on GLUE's scale. Pearson and Spearman, STS-B's
    metrics, do not change with the scale; the squared-error loss does, and a model learns the scale it trains on. A
    note, not an error: the metrics GLUE reports stay right. The scores are read as written, not rescaled."""
    top = {s: max(y for *_, y in rows) for s, rows in splits.items() if rows}
    low, high = [s for s in top if top[s] <= 1], [s for s in top if top[s] > 1]
    if not low:
        return
    files, largest = (lambda names: ", ".join(f"{s}.tsv" for s in names)), lambda names: max(top[s] for s in names)
    if high:
        why = (f", as {files(high)}'s are (the largest {largest(high):g}): the model learns one scale and is scored on "
               "the other. Pearson and Spearman do not change with the scale; the dev loss (squared error) compares "
               "the two scales")
    else:
        why = (" (a re-export divided by 5?): Pearson and Spearman do not change with the scale; the squared-error "
               "loss does (1/25 of GLUE's), and a model learns the scale it trains on (one trained on GLUE's predicts "
               "0-5 here)")
    print(f"note: {directory}: every STS-B score in {files(low)} is within [0, 1] (the largest {largest(low):g}), "
          f"where GLUE's are 0-5{why}", file=sys.stderr)


def same_rows(rows, other, path, other_path, unit, what):
    """Say so where a split holds exactly another split's items, in any order (`what`: what that does to a score): a
    copy of the train file given as the dev file (a user who had only that one) reported the score of the very
    examples it trained on as the data set's dev score, without a word. A note, not an error: a smoke test on one
    small file is a use (lorasp's own tests run so). A share of them (a split of one's own) is not said; other None:
    not read (eval.py reads no train file)."""
    if rows and other is not None and collections.Counter(rows) == collections.Counter(other):
        print(f"note: {path} holds the same {len(rows):,} {unit}{'s' * (len(rows) != 1)} as {other_path} (a copy?): "
              f"{what}", file=sys.stderr)


def mnli_genres(directory, genres):
    """Refuse MNLI dev files swapped: dev_matched.tsv of MultiNLI's other genres and dev_mismatched.tsv of the training
    genres (MNLI_GENRES; genres: {split: [(line, genre)]}, read_glue's) gave each score as the other's, without a
    word. Genres of neither set (another corpus's) are not checked; one file copied over the other is said
    (same_rows)."""
    wrong = {split: [(n, g) for n, g in genres.get(split, []) if g in MNLI_GENRES[1 - own]]
             for split, own in (("dev_matched", 0), ("dev_mismatched", 1))}
    if all(wrong.values()):
        (n, g), (m, h) = (w[0] for w in wrong.values())
        raise ValueError(
            f"{os.path.join(directory, 'dev_matched.tsv')} and dev_mismatched.tsv are swapped: dev_matched.tsv's rows "
            f"are of MultiNLI's other genres (line {n}: {g!r}; {len(wrong['dev_matched']):,} of "
            f"{len(genres['dev_matched']):,}), dev_mismatched.tsv's of its training genres (line {m}: {h!r}; "
            f"{len(wrong['dev_mismatched']):,} of {len(genres['dev_mismatched']):,}); GLUE's dev_matched.tsv holds "
            f"{', '.join(MNLI_GENRES[0])} (train.tsv's), dev_mismatched.tsv {', '.join(MNLI_GENRES[1])}: rename them")


def encode_glue(rows, tok, max_len=128):
    """[(text_a, text_b, label)] -> [{"input_ids", "token_type_ids", "labels"}] for a classifier (labels: a class
    index or a score), and how many pairs were truncated to max_len."""
    out, cut = [], 0
    for a, b, y in rows:
        ids, types = tok.encode_pair(a, b, max_len)
        if None in ids:                                        # (else a traceback from torch.tensor in collate)
            raise ValueError(f"the tokenizer has no id for a mark GLUE pairs take (GPT-2's <|endoftext|>, BERT's "
                             f"[CLS] and [SEP], RoBERTa's <s> and </s>): {a!r:.40} encodes to {ids[:8]}; give the "
                             "checkpoint's own tokenizer files")
        cut += len(ids) == max_len and len(tok.encode_pair(a, b, 1 << 30)[0]) > max_len
        out.append({"input_ids": ids, "token_type_ids": types, "labels": y})
    return out, cut


def glue_examples(task, tok, seq_len, root=None, train=True):
    """(train examples ([] with train=False: not read), {dev split: examples}) of a GLUE task (load_glue), encoded
    for a classifier; the pairs longer than seq_len are truncated and counted."""
    encoded = {s: encode_glue(rows, tok, seq_len) for s, rows in load_glue(task, root, train).items()}
    print(f"glue/{task}: " + ", ".join(f"{len(e):,} {s}" for s, (e, _) in encoded.items()) +
          f" examples; {sum(c for _, c in encoded.values()):,} longer than --seq-len {seq_len}, truncated")
    return encoded.pop("train", ([], 0))[0], {s: e for s, (e, _) in encoded.items()}


def download_glue(task, root):
    """Fetch one task into root/<folder>/ (MRPC: split SentEval's train file by GLUE's dev ids, as
    download_glue_data.py does); extracted under a temporary name and renamed, so a broken download leaves no folder.
    The files fetched wait in root/<folder>.download/ until then: an interrupted download resumes (download)."""
    folder, zipname = GLUE[task][:2]
    make_dirs(root)
    fetched = os.path.join(root, folder + ".download")  # not a temporary folder: its .part files outlive a failure
    os.makedirs(fetched, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=root)
    try:
        by_hand = f"or pass --data-dir DIR holding {folder}/train.tsv and dev.tsv (GLUE's glue_data/ folder)"
        if zipname:
            download(GLUE_URL + zipname, archive := os.path.join(fetched, zipname), by_hand=by_hand)
            try:
                with zipfile.ZipFile(archive) as z:
                    z.extractall(tmp)  # zipfile drops '..' and leading '/' from member names: all lands in tmp
                if not os.path.isdir(os.path.join(tmp, folder)):
                    raise zipfile.BadZipFile(f"it has no {folder}/ folder")
            except zipfile.BadZipFile as e:  # not a zip archive (an HTML error page?)
                what = received(archive)
                shutil.rmtree(fetched)
                raise ValueError(f"{GLUE_URL + zipname} did not give GLUE's {task} archive ({e}); received {what}; "
                                 "nothing was kept") from None
        else:
            for name, url in MRPC_URLS.items():
                download(url, os.path.join(fetched, name), by_hand=by_hand)
            with open(os.path.join(fetched, "dev_ids"), encoding="utf-8") as f:
                dev = {tuple(line.strip().split("\t")) for line in f if line.strip()}
            os.makedirs(os.path.join(tmp, folder))
            with open(os.path.join(fetched, "train"), encoding="utf-8-sig") as f:  # lines end at \n, \r\n or \r
                header, *lines = f.read().split("\n")   # only, as csv reads them (splitlines: at \f, \x85, U+2028)
            for split, in_dev in (("train", False), ("dev", True)):
                rows = [line for line in lines if line.strip() and (tuple(line.split("\t")[1:3]) in dev) == in_dev]
                with open(os.path.join(tmp, folder, f"{split}.tsv"), "w", encoding="utf-8") as f:
                    f.write("\n".join([header, *rows]) + "\n")
        os.replace(os.path.join(tmp, folder), os.path.join(root, folder))
        shutil.rmtree(fetched)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.isdir(fetched) and not os.listdir(fetched):  # nothing arrived: nothing to resume
            os.rmdir(fetched)



# ----------------------------------------------------------------------------------------------------
# WMT16 English-Romanian for T5 (the paper's Table 2)

T5_PREFIX = "translate English to Romanian: "  # T5's task prefix for this pair (Raffel et al. 2020, appendix D)
WMT16_HELP = ("WMT16 En-Ro is the Hugging Face dataset `wmt16`, config `ro-en` (train: 610k pairs, validation: "
              "newsdev2016, test: newstest2016). Export it once where `datasets` is installed: `for s, d in "
              "datasets.load_dataset('wmt16', 'ro-en').items(): d.to_json(f'DIR/{{s}}.jsonl')`; or put aligned "
              "plain-text files {split}.en and {split}.ro (one sentence per line) in the data directory")


def read_translation(directory, split, src="en", tgt="ro"):
    """[(source, target)] from DIR/{split}.jsonl ({"translation": {src: ..., tgt: ...}} per line, the Hugging Face
    export) or from the aligned DIR/{split}.{src} and DIR/{split}.{tgt} (lines cut at "\n" only, trailing whitespace
    stripped; blank lines past the other file's end left out). A pair with an empty side is skipped with a note, as
    HF's wmt16 builder skips it (Europarl's plain files have them, its export none): "" -> a sentence teaches
    nothing."""
    jsonl, a, b = (os.path.join(directory, f"{split}.{x}") for x in ("jsonl", src, tgt))
    if os.path.exists(jsonl):
        if os.path.exists(a) and os.path.exists(b):            # two copies, maybe of other data: say which is read
            print(f"note: {directory} holds {split}.jsonl and {split}.{src} + {split}.{tgt}: reading {split}.jsonl",
                  file=sys.stderr)
        pairs = []
        with text_file(jsonl, "utf-8-sig") as f:                 # -sig: a byte-order mark is not text
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line, object_pairs_hook=noting_twice(twice := {}, (src, tgt)))["translation"]
                    pair = row[src], row[tgt]
                except (json.JSONDecodeError, KeyError, TypeError):
                    pair = None
                if pair is not None and id(row) in twice:          # (was trained on the last, the first unsaid)
                    raise ValueError(f"{jsonl}, line {n}: {twice[id(row)]}")
                if pair is None or not all(isinstance(x, str) for x in pair):
                    raise ValueError(f"{jsonl}, line {n}: expected {{\"translation\": {{\"{src}\": text, \"{tgt}\": "
                                     f"text}}}}, got {line.strip()[:200]!r}")
                pairs.append((n, *pair))
        return nonempty(pairs, jsonl)
    if os.path.isfile(directory):                              # (else "DIR/test.jsonl: no test.jsonl, ...")
        raise FileNotFoundError(f"--data-dir {directory} is a file, and names the folder holding {split}.jsonl (or "
                                f"{split}.{src} + {split}.{tgt}): --data-dir {os.path.dirname(directory) or '.'}")
    if not (os.path.exists(a) and os.path.exists(b)):
        raise FileNotFoundError(f"{directory}: no {split}.jsonl, nor {split}.{src} + {split}.{tgt}. "
                                + WMT16_HELP.format(split=split))
    lines = []
    for path in (a, b):
        with text_file(path, "utf-8-sig", newline="\n") as f:  # only "\n" ends a line (a stray "\r" is text)
            lines.append([line.rstrip() for line in f])       # (rstripped, as HF's builder reads each line)
        if lines[-1] and re.match(r"<(src|ref|tst)set\b", lines[-1][0].lstrip()):  # (its tags would be text)
            raise ValueError(f"{path}, line 1: WMT's SGML (newstest's .sgm), not a sentence a line: give the <seg> "
                             f"texts (sacrebleu -t wmt16 -l {src}-{tgt} --echo src > {split}.{src}; --echo ref > "
                             f"{split}.{tgt}), or the Hugging Face export")
    if any(max(lines, key=len)[min(map(len, lines)):]):        # (blank lines past the other's end: no sentence)
        raise ValueError(f"misaligned: {a} has {len(lines[0])} lines, {b} has {len(lines[1])}")
    return nonempty([(n, *p) for n, p in enumerate(zip(*lines), 1)], f"{a} + {split}.{tgt}")


ROMANIAN = re.compile("[ăâîșşțţĂÂÎȘŞȚŢ]")  # letters English text does not have (ş, ţ: the cedilla forms)


def nonempty(pairs, where):
    """[(source, target)] of [(line, source, target)], less the pairs with an empty side, counted in a note. A source
    that starts with T5's task prefix already (a tutorial's preprocessed inputs) is an error: it would read twice; so
    is a file whose every target is its source (one language written twice), or whose English side has Romanian's
    letters in 30% of its sentences or more and three times the Romanian side's share (the two swapped)."""
    if prefixed := next((n for n, s, _ in pairs if s.lstrip().lower().startswith(T5_PREFIX.lower().strip())), None):
        raise ValueError(f"{where}, line {prefixed}: the source starts with T5's prefix {T5_PREFIX.strip()!r}, which "
                         "lorasp adds itself (it would read twice): give the English sentences alone")
    if empty := [n for n, s, t in pairs if not (s.strip() and t.strip())]:
        print(f"note: {where}: skipped {len(empty):,} pair{'s' * (len(empty) > 1)} with an empty side (line"
              f"{'s' * (len(empty) > 1)} {', '.join(map(str, empty[:5]))}{', ...' * (len(empty) > 5)}), as HF's wmt16 "
              "builder skips them", file=sys.stderr)
    pairs = [(n, s, t) for n, s, t in pairs if s.strip() and t.strip()]
    if pairs and all(s.strip() == t.strip() for _, s, t in pairs):  # (trained to copy, exit 0; BLEU 100 by copying)
        raise ValueError(f"{where}: every pair's target is its source, word for word (line {pairs[0][0]}, ...): a pair "
                         "holds an English sentence and its Romanian translation; the file holds one language twice")
    rom = [sum(bool(ROMANIAN.search(x)) for x in side) for side in zip(*[(s, t) for _, s, t in pairs])] or [0, 0]
    if rom[0] >= 0.3 * len(pairs) and rom[1] < rom[0] / 3:     # (was scored, or trained, the wrong way round, exit 0)
        raise ValueError(f"{where}: the English side reads as Romanian: {rom[0]:,} of its {len(pairs):,} sentences "
                         f"hold a letter of Romanian's (ă, â, î, ș, ț), the Romanian side's {rom[1]:,}: the two files "
                         "(or the JSONL's en and ro keys) are swapped; give the English sentences as en, the Romanian "
                         "as ro")
    return [(s, t) for _, s, t in pairs]


def translation_examples(pairs, tok, prefix=T5_PREFIX, max_source_len=256, max_target_len=256):
    """-> ([(source ids, target ids)], how many were cut): both end in EOS, longer ones are cut with EOS kept."""
    out, cut = [], 0
    for s, t in pairs:  # a huge line is cut before it is tokenized whole (encode_head)
        s, t = encode_head(tok, prefix + s, max_source_len, eos=True), encode_head(tok, t, max_target_len, eos=True)
        cut += len(s) > max_source_len or len(t) > max_target_len
        out.append(tuple(x if len(x) <= n else x[:n - 1] + [tok.eos_id]
                         for x, n in ((s, max_source_len), (t, max_target_len))))
    return out, cut


def seq2seq_batch(examples, pad_id=0, ignore_index=-100, bucket=None):
    """Padded tensors for teacher forcing: input_ids and attention_mask (B, S); labels (B, T) with ignore_index on
    padding; decoder_input_ids = labels shifted right behind the start token (pad_id): position i predicts labels[i]
    having seen labels[:i]. bucket: S and T padded to their bucket_length, as collate's."""
    S, T = max(len(s) for s, _ in examples), max(len(t) for _, t in examples)
    S, T = (bucket_length(S, bucket), bucket_length(T, bucket)) if bucket else (S, T)
    input_ids = torch.tensor([s + [pad_id] * (S - len(s)) for s, _ in examples])
    attention_mask = torch.tensor([[1] * len(s) + [0] * (S - len(s)) for s, _ in examples])
    labels = torch.tensor([t + [ignore_index] * (T - len(t)) for _, t in examples])
    shifted = torch.cat([torch.full((len(examples), 1), pad_id), labels[:, :-1]], 1)
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                decoder_input_ids=shifted.masked_fill(shifted == ignore_index, pad_id))


def sentence_room(pairs, tok, prefix, seq_len, sample=1000):
    """Refuse a seq_len that leaves the median train pair less than half of its English sentence (after T5's prefix,
    `prefix` tokens, and EOS) or of its Romanian one (after EOS): it trains on the prefix and a word or two of each
    source, exit 0, where eval.py translates whole sources. The median of up to `sample` pairs spread over the file."""
    picked = pairs[::max(1, len(pairs) // sample)]
    if not picked:
        return
    source = sorted(len(encode_head(tok, T5_PREFIX + s, 4 * seq_len, eos=True)) for s, _ in picked)[len(picked) // 2]
    target = sorted(len(encode_head(tok, t, 4 * seq_len, eos=True)) for _, t in picked)[len(picked) // 2]
    for language, median, room, before in (
            ("English", source - prefix - 1, seq_len - prefix - 1, f"T5's prefix ({prefix} tokens) and EOS"),
            ("Romanian", target - 1, seq_len - 1, "EOS")):
        if room < median / 2:
            raise ValueError(
                f"--seq-len {seq_len} leaves {room} token{'s' * (room != 1)} of each {language} sentence after "
                f"{before}: the median train pair's sentence is {median} tokens (of {len(picked):,} pairs read): half "
                f"the pairs would train on less than half of their sentence; give --seq-len {max(source, target)} or "
                f"more (the median pair, {source} tokens its source with the prefix and EOS, {target} its target; the "
                "README's T5 command: 128)")


def wmt16_examples(directory, tok, seq_len):
    """(train examples, validation examples, validation pairs) of WMT16 En-Ro in directory (read_translation),
    T5's prefix on the source; sources and targets longer than seq_len are cut (EOS kept) and counted. A seq_len that
    the prefix and EOS fill is refused: every source would be cut to the prefix, no word of its sentence left. A
    validation split holding the train split's pairs is said (same_rows)."""
    if (prefix := len(tok.encode(T5_PREFIX, eos=False))) + 1 >= seq_len:  # (trained to translate nothing, exit 0)
        raise ValueError(f"--seq-len {seq_len}: T5's prefix {T5_PREFIX!r} is {prefix} tokens with this tokenizer: with "
                         f"EOS it fills every source cut to {seq_len} tokens, leaving no word of the English sentence; "
                         f"give a --seq-len past {prefix + 1} that holds the sentences (the README's T5 command: 128)")
    train_pairs, val_pairs = read_translation(directory, "train"), read_translation(directory, "validation")
    named = lambda split: f"{split}.jsonl" if os.path.exists(os.path.join(directory, f"{split}.jsonl")) else \
        f"{split}.en + {split}.ro"  # noqa: E731  (read_translation's files)
    same_rows(val_pairs, train_pairs, os.path.join(directory, named("validation")), os.path.join(directory, named(
        "train")), "pair", "each validation score (loss, BLEU) is measured on the pairs it trains on, not on WMT16's "
        "validation set (newsdev2016)")
    sentence_room(train_pairs, tok, prefix, seq_len)
    (train, cut), (val, cut_val) = (translation_examples(p, tok, T5_PREFIX, seq_len, seq_len)
                                    for p in (train_pairs, val_pairs))
    print(f"{directory}: {len(train):,} train / {len(val):,} validation pairs; {cut + cut_val:,} longer than "
          f"--seq-len {seq_len}, cut")
    return train, val, val_pairs


# ----------------------------------------------------------------------------------------------------
# SQuAD v1.1 (Rajpurkar et al. 2016): the official JSON files; long contexts as overlapping windows (extractive QA)

SQUAD_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/"
SQUAD_FILES = {"train": ("train-v1.1.json", "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955"),
               "dev": ("dev-v1.1.json", "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9")}
SQUAD_FIELDS = ("data", "paragraphs", "context", "qas", "id", "question", "answers", "text", "answer_start")  # read


def read_squad(split, root=None):
    """The "data" list of SQuAD v1.1's train or dev file ([{"title", "paragraphs": [{"context", "qas": [{"id",
    "question", "answers": [{"text", "answer_start"}]}]}]}]) from root, by default the cache, where it is downloaded
    once (resumable, sha256 checked). The Hugging Face `squad` export (`datasets`' to_json: a question a line) under
    that name reads as the file it was made from (squad_rows). The official file of the other split under this one's
    name (the train file as dev-v1.1.json: scored on the questions trained on) is an error, told by its sha256."""
    name, sha256 = SQUAD_FILES[split]
    path = os.path.join(root or cache_dir("squad"), name)
    if not os.path.exists(path):
        if root:
            raise FileNotFoundError(f"{path}: SQuAD v1.1's {name} ({SQUAD_URL}{name}; or the Hugging Face `squad`'s "
                                    f"{'validation' if split == 'dev' else split} split saved by datasets' to_json "
                                    "under that name)" + (
                f"; --data-dir {root} is a file, and names the folder holding it: --data-dir "
                f"{os.path.dirname(root) or '.'}" if os.path.isfile(root) else ""))
        print(f"SQuAD v1.1 is not in {os.path.dirname(path)}: downloading {SQUAD_URL}{name}", flush=True)
        download(SQUAD_URL + name, path, sha256=sha256)
    other = next(s for s in SQUAD_FILES if s != split)                # (the official other file, given in its place)
    if root and file_sha256(path) == SQUAD_FILES[other][1]:
        raise ValueError(f"{path}: this is SQuAD v1.1's {SQUAD_FILES[other][0]} (its sha256), not {name}: lorasp "
                         f"would {'score on the questions it trained on' if split == 'dev' else 'train on the dev set'}"
                         f"; give {name} ({SQUAD_URL}{name})")
    twice, made = {}, []                       # made: every object kept alive, so that no id noted in twice is reused
    hook = noting_twice(twice, SQUAD_FIELDS)
    with text_file(path, "utf-8-sig") as f:                  # -sig: a byte-order mark (a Windows editor's) is not JSON
        text = f.read()
    try:
        dataset = json.loads(text, object_pairs_hook=lambda pairs: made.append(obj := hook(pairs)) or obj)
    except json.JSONDecodeError as e:                          # json's own message names no file (a cut-off copy?)
        if e.msg != "Extra data" or (dataset := squad_lines(text, path)) is None:   # (not JSON Lines of questions)
            raise ValueError(f"{path}, line {e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if twice:                                                  # (was read as the last value, the first unsaid)
        raise ValueError(f"{path}: {squad_twice(dataset, twice)}")
    if isinstance(dataset, dict) and "data" not in dataset:   # (the export of one question: one line, one object)
        dataset = squad_rows([dataset], path, [1]) or dataset
    if isinstance(dataset, list) and dataset and all(isinstance(r, dict) for r in dataset):
        dataset = squad_rows(dataset, path, [None] * len(dataset)) or dataset  # (the export written as one list)
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise ValueError(f"{path}: not a SQuAD file (a JSON object whose \"data\" is a list of articles; or the "
                         f"Hugging Face export, a question a line: {', '.join(HF_SQUAD)})")
    for article in dataset["data"]:                            # the fields every reader uses, with their types
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list) or not all(isinstance(p, dict) and isinstance(p.get("context"), str)
                                                       and isinstance(p.get("qas"), list) for p in paragraphs):
            raise ValueError(f"{path}: an article needs \"paragraphs\": [{{\"context\": str, \"qas\": [...]}}], got "
                             f"{json.dumps(article)[:200]}")
        for qa in (qa for p in paragraphs for qa in p["qas"]):
            if not (isinstance(qa, dict) and isinstance(qa.get("id"), str) and isinstance(qa.get("question"), str)
                    and isinstance(qa.get("answers"), list) and all(
                        isinstance(a, dict) and isinstance(a.get("text"), str) and type(a.get("answer_start")) is int
                        for a in qa["answers"])):
                raise ValueError(f"{path}: question {qa.get('id') if isinstance(qa, dict) else qa!r}: expected "
                                 "{\"id\": str, \"question\": str, \"answers\": [{\"text\": str, \"answer_start\": "
                                 "int}]}, "
                                 f"got {json.dumps(qa)[:200]}")
            if not qa["question"].strip():                             # (was trained and scored: [CLS] [SEP] context)
                raise ValueError(f"{path}: question {qa['id']!r}: a question of no text ({qa['question']!r}): nothing "
                                 "is asked of the context; give the question, or leave the entry out")
            if type(qa.get("is_impossible", False)) is not bool:      # ("False", a string, read as true: no answer)
                raise ValueError(f"{path}: question {qa['id']!r}: \"is_impossible\" is "
                                 f"{json.dumps(qa['is_impossible'])}: expected true or false (a JSON boolean)")
            if qa.get("is_impossible") or not qa["answers"]:           # max() over no answers, no span to learn
                raise ValueError(f"{path}: question {qa['id']} has no answer (SQuAD v2.0's unanswerable questions?): "
                                 "lorasp reads SQuAD v1.1, where every question has one")
            if empty := next((a for a in qa["answers"] if not a["text"].strip()), None):  # (was scored against "":
                # exact match without F1; a train window taught "no answer" at the [CLS])
                raise ValueError(f"{path}: question {qa['id']}: an answer of no text ({empty['text']!r}, at "
                                 f"{empty['answer_start']}; SQuAD v2.0's unanswerable question?): lorasp reads SQuAD "
                                 "v1.1, where every answer is a span of the context")
    if not any(p["qas"] for article in dataset["data"] for p in article["paragraphs"]):  # (eval: ZeroDivisionError)
        raise ValueError(f"{path}: no question (its \"data\" holds {len(dataset['data'])} article"
                         f"{'s' * (len(dataset['data']) != 1)}, none with \"qas\")")
    seen = set()
    for qa in (qa for article in dataset["data"] for p in article["paragraphs"] for qa in p["qas"]):
        if split == "dev" and qa["id"] in seen:                # (scored by id: the two would share one answer)
            raise ValueError(f"{path}: question id {qa['id']!r} is given to two questions: predictions are kept by id "
                             "(as the official script reads them), so they would share one answer; give each its own "
                             "id")
        seen.add(qa["id"])
    return dataset["data"]


HF_SQUAD = ("context", "question", "answers")  # a row of the Hugging Face `squad` export (a question each) has these


def squad_lines(text, path):
    """squad_rows of a JSON Lines text (`datasets`' to_json: a question a line), a field given twice an error naming
    its line; the rows as read where they are not the export's (not a SQuAD file), None where a line is not JSON."""
    rows, lines = [], []
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            twice = {}
            try:
                rows.append(json.loads(line, object_pairs_hook=noting_twice(twice, SQUAD_FIELDS)))
            except json.JSONDecodeError:
                return None
            if twice:
                raise ValueError(f"{path}, line {n}: {next(iter(twice.values()))}")
            lines.append(n)
    return (squad_rows(rows, path, lines) if all(isinstance(r, dict) for r in rows) else None) or rows


def squad_rows(rows, path, lines):
    """SQuAD's layout ({"data": [articles]}) of the Hugging Face `squad` export's rows, a question each (id, title,
    context, question, answers {"text": [...], "answer_start": [...]}, as its builder writes them): the rows of one
    title and context in a run make one paragraph, its questions in order; None where the rows are not such (not
    every row has context, question, and answers as an object). lines: each row's line, for an error (or None)."""
    if not all(set(HF_SQUAD) <= set(r) and isinstance(r["answers"], dict) for r in rows):
        return None
    data, last = [], object()
    for r, n in zip(rows, lines):
        texts, starts = r["answers"].get("text"), r["answers"].get("answer_start")
        if not (isinstance(texts, list) and isinstance(starts, list) and len(texts) == len(starts)):
            raise ValueError(f"{path}{f', line {n}' if n else ''}: question {r.get('id')!r}: the Hugging Face "
                             "export's answers are {\"text\": [...], \"answer_start\": [...]} of one length, got "
                             f"{json.dumps(r['answers'])[:200]}")
        if (r.get("title", ""), r["context"]) != last:         # (a new paragraph; a new article where the title is)
            if not data or data[-1]["title"] != r.get("title", ""):
                data.append({"title": r.get("title", ""), "paragraphs": []})
            data[-1]["paragraphs"].append({"context": r["context"], "qas": []})
            last = (r.get("title", ""), r["context"])
        data[-1]["paragraphs"][-1]["qas"].append({**{k: v for k, v in r.items() if k not in ("title", "context")},
                                                  "answers": [{"text": t, "answer_start": s}
                                                              for t, s in zip(texts, starts)]})
    return {"data": data}


def squad_twice(dataset, twice):
    """Which object of a SQuAD file gives a field twice with other values (noting_twice's `twice`), and what it gives:
    the question by its id, an answer by its index, a paragraph by its article and index."""
    def items(obj, key):
        return enumerate(obj.get(key) if isinstance(obj, dict) and isinstance(obj.get(key), list) else [])
    found = [("the file's object", dataset)]
    for i, article in items(dataset, "data"):
        title = article.get("title") if isinstance(article, dict) else None
        found.append((f"article {i} ({title!r})", article))
        for j, p in items(article, "paragraphs"):
            found.append((f"article {i} ({title!r}), paragraph {j}", p))
            for _, qa in items(p, "qas"):
                question = f"question {qa.get('id') if isinstance(qa, dict) else qa}"
                found += [(question, qa)] + [(f"{question}, answer {k}", a) for k, a in items(qa, "answers")]
    where, obj = next(((w, o) for w, o in found if id(o) in twice), ("an object", None))  # (None: in a value that a
    return f"{where} {twice[id(obj)] if obj is not None else next(iter(twice.values()))}"  # field given twice dropped)


def answer_at_start(qa, context):
    """The first of a question's answers whose text is in the context at its answer_start, else None."""
    return next((a for a in qa["answers"] if 0 <= a["answer_start"] and
                 context[a["answer_start"]:a["answer_start"] + len(a["text"])] == a["text"]), None)


def context_tokens(tok, context):
    """[(token id, first char, end char)] of a context: each token's own characters, as transformers' offset_mapping.
    Byte-level BPE: the whole text's tokens (bpe_offsets). WordPiece: the text cut where its basic tokenizer cuts
    (whitespace that is not a dropped control character such as U+0085; around each punctuation mark and each CJK
    ideograph), and every piece tokenized alone (piece_offsets)."""
    if isinstance(tok, BPETokenizer) and (spans := bpe_offsets(tok, context)) is not None:
        return spans
    bpe, pieces, start = isinstance(tok, BPETokenizer), [], None
    wordpiece = isinstance(tok, WordPieceTokenizer)
    for i, ch in enumerate(context + " "):
        gone = wordpiece and ch not in "\t\n\r" and unicodedata.category(ch)[0] == "C"  # words() drops it: no cut
        alone = is_punctuation(ch) or wordpiece and tok.split_cjk and not ch.isascii() and any(  # (ASCII: no
            lo <= ord(ch) <= hi for lo, hi in CJK)     # ideograph; the ranges were tried for every character)
        if ch.isspace() and not gone or alone:
            if start is not None:
                pieces.append((start, i))
            if not ch.isspace():
                pieces.append((i, i + 1))
            start = None
        elif start is None:
            start = i
    space = lambda s: " " if bpe and s > 0 and context[s - 1].isspace() else ""  # noqa: E731
    return [(t, *span) for s, e in pieces for t, span in piece_offsets(tok, space(s), context, s, e)]


def bpe_offsets(tok, context):
    """Byte-level BPE's [(token id, first char, end char)] of the whole context, as RoBERTa's tokenizer gives them
    (run_qa.py: "Ġ's", "ĠĠ" and "Ċ" tokens included): each token's bytes mapped back to the characters they encode,
    spaces trimmed (transformers' trim_offsets: a token of spaces is an empty span where it ends; a newline's "Ċ"
    keeps its character). None where the bytes do not add up to the text's (a vocabulary that drops some bytes)."""
    prefix = " " if tok.add_prefix_space and context and not context.startswith(" ") else ""
    ids = tok._encode(context)
    raw = [tok.enc.decode_single_token_bytes(tok.rank_of_id[t]) for t in ids]
    char_of = [j - len(prefix) for j, ch in enumerate(prefix + context)
               for _ in ch.encode("utf-8", errors="surrogatepass")]  # each byte -> its character (-1: the prefix)
    if sum(map(len, raw)) != len(char_of):
        return None
    out, at = [], 0
    for t, b in zip(ids, raw):
        first, end = char_of[at], char_of[at + len(b) - 1] + 1   # a character split across tokens is in both
        at += len(b)
        while first < end and (first < 0 or context[first] == " "):
            first += 1
        while end > first and context[end - 1] == " ":
            end -= 1
        out.append((t, first, end))
    return out


def piece_offsets(tok, space, context, s, e):
    """[(token id, (first char, end char))] of context[s:e] (after `space`, byte-level BPE's leading space): each
    token's own characters, as transformers' offset_mapping ("70percent" -> 70, ##per, ##cent: (0, 2), (2, 5),
    (5, 9)), so an answer that ends inside a word is labelled, and predicted, as that part of it. WordPiece: the
    token's letters, each character normalized as the basic tokenizer does it (lower-cased, accents stripped,
    control characters dropped). Where they do not add up to the piece ([UNK]), every token gets the piece's kept
    characters, first to last; for a byte-level BPE that drops bytes, the whole piece."""
    ids = tok._encode(space + context[s:e])
    if isinstance(tok, WordPieceTokenizer):                    # [(a normalized character, where it came from)]
        chars = [(n, i) for i in range(s, e) for n in tok.normalized(context[i])]
        parts = [tok.token_of[t].removeprefix("##") for t in ids]
        if "".join(parts) == "".join(n for n, _ in chars):
            ends = list(itertools.accumulate(map(len, parts)))
            return [(t, (chars[j - len(p)][1], chars[j - 1][1] + 1)) for t, p, j in zip(ids, parts, ends)]
        if chars:  # [UNK]: the characters normalization keeps (a dropped control character or accent is not in it)
            return [(t, (chars[0][1], chars[-1][1] + 1)) for t in ids]
    return [(t, (s, e)) for t in ids]


def squad_windows(dataset, tok, max_len=384, stride=128, max_query=64, split="dev", note=True):
    """Extractive-QA inputs, one per window of a question's context (BERT's run_squad.py): [CLS] question [SEP]
    context tokens [SEP] (RoBERTa: <s> q </s></s> c </s>), at most max_len tokens, windows starting every `stride`
    context tokens (every window length, if that is shorter: BERT's min(length, doc_stride)) until one reaches the
    end. Each window: input_ids, token_type_ids; labels (first, last): the positions of the first gold answer's first
    and last tokens if the window holds all of it, else (0, 0), the [CLS] position (what BERT trains a window without
    the answer to point at); id, offsets (the (first, end) characters of each context token, None elsewhere) and
    context, to map a span back to text. The gold answer is the first whose text is at its answer_start: a question
    with none such is left out of "train" (as BERT's run_squad.py does) and kept, labelled (0, 0), elsewhere (its
    answers' texts are still what it is scored against); counted, and said where `note` (once a run: tasks.py)."""
    out, unfound, long = [], [], []
    for article in dataset:
        for paragraph in article["paragraphs"]:
            ctx = paragraph["context"]
            toks = context_tokens(tok, ctx)
            spans = [(s, e) for _, s, e in toks]  # one tuple per token, which every window of the context shares
            for qa in paragraph["qas"]:
                question = tok._encode(qa["question"].lstrip())  # as run_qa.py: SQuAD's leading spaces were BPE tokens
                head = [tok.bos_id, *question[:max_query], *[tok.eos_id] * tok.pair_seps]
                room = max_len - len(head) - 1
                if room < 1:
                    raise ValueError(f"--seq-len {max_len} leaves no room for the context after the question "
                                     f"{qa['id']!r} ({len(head)} tokens with its markers)")
                first = last = None
                if qa["answers"] and (a := answer_at_start(qa, ctx)) is None:
                    unfound.append(qa["id"])
                    if split == "train":
                        continue
                elif qa["answers"]:
                    s, e = a["answer_start"], a["answer_start"] + len(a["text"])
                    inside = [i for i, (_, ts, te) in enumerate(toks) if ts < e and te > s]  # tokens it overlaps
                    first, last = (inside[0], inside[-1]) if inside else (None, None)
                long += [qa["id"]] * (len(question) > max_query)
                start = 0
                while True:
                    win = toks[start:start + room]
                    whole = first is not None and start <= first and last < start + len(win)
                    out.append(dict(input_ids=head + [t for t, _, _ in win] + [tok.eos_id],
                                    token_type_ids=[0] * len(head) + [tok.type_b] * (len(win) + 1),
                                    labels=(len(head) + first - start, len(head) + last - start) if whole else (0, 0),
                                    id=qa["id"], offsets=[None] * len(head) + spans[start:start + room] + [None],
                                    context=ctx))
                    if start + room >= len(toks):
                        break
                    start += min(stride, room)  # a longer step would skip the tokens in between
    if unfound and note:
        print(f"squad {split}: {len(unfound):,} questions whose answer texts are not at their answer_start in the "
              f"context (first: {unfound[0]}): " + ("left out" if split == "train" else "labelled as no answer"))
    if long and note:
        print(f"squad {split}: {len(long):,} question{'s' * (len(long) > 1)} longer than {max_query} tokens cut to "
              f"their first {max_query} (BERT's run_squad.py max_query_length; first: {long[0]})")
    return out


def squad_records(dataset):
    """One Alpaca-format record per question, for a causal LM's generative QA (GPT-2, as the second paper runs
    it): the question as instruction, the context as input (Alpaca's template with input), the first gold answer
    as output; id and all gold answers kept for scoring."""
    return [dict(instruction=qa["question"], input=p["context"], output=qa["answers"][0]["text"] if qa["answers"]
                 else "", id=qa["id"], answers=[a["text"] for a in qa["answers"]])
            for article in dataset for p in article["paragraphs"] for qa in p["qas"]]


def fit_contexts(records, tok, context, answer=32, note=True):
    """squad_records' records with each context cut to its first tokens, so that a prompt and `answer` new tokens fit
    a causal LM's `context`; how many were cut is said where `note` (once a run: tasks.py). A question whose template
    and question alone fill the room is refused (it was asked with no context at all, past the model's context,
    without a word)."""
    room, cut = context - answer, 0
    for r in records:
        if (over := len(tok.encode(alpaca_prompt(r))) - room) > 0:
            ids = tok.encode(r["input"], bos=False)
            if over >= len(ids):
                raise UserError(f"squad question {r['id']!r}: Alpaca's template and the question take "
                                f"{over + room - len(ids)} tokens, and the model's context of {context} leaves "
                                f"{max(room, 0)} beside a {answer}-token answer: no token of its context fits; a "
                                "causal LM of a longer context answers it")
            r["input"], cut = tok.decode(ids[:-over]), cut + 1
    if cut and note:
        print(f"squad: {cut} of {len(records)} contexts cut to their first tokens, to fit the model's context of "
              f"{context} with a {answer}-token answer: an answer in what was cut cannot be given")
    return records


def one_per_question(dataset):
    """The dataset as one single-question article per question (still SQuAD's layout): a slice of it is a subset."""
    return [{"title": a.get("title", ""), "paragraphs": [{"context": p["context"], "qas": [qa]}]}
            for a in dataset for p in a["paragraphs"] for qa in p["qas"]]


def squad_examples(tok, seq_len, root=None, stride=128, generative=False):
    """train.py's --data squad (windows for a span head) or squad-gen (Alpaca records for a causal LM): (train
    examples, dev examples, the dev questions as single-question articles for the before/after check). A dev file
    holding the train file's questions is said (same_rows)."""
    train, dev = read_squad("train", root), read_squad("dev", root)
    if len({sum(len(p["qas"]) for a in d for p in a["paragraphs"]) for d in (dev, train)}) == 1:  # (compared only
        # then: a second for SQuAD's 88k questions)
        same_rows(*([json.dumps(q, sort_keys=True) for q in one_per_question(d)] for d in (dev, train)), *(
            os.path.join(root or cache_dir("squad"), SQUAD_FILES[s][0]) for s in ("dev", "train")), "question",
            "SQuAD's dev score is measured on the questions it trains on, not on SQuAD's dev set")
    if generative:
        (train_ex, cut), (dev_ex, cut_dev) = (tokenize_records(squad_records(d), tok, seq_len) for d in (train, dev))
        n = sum(len(p["qas"]) for d in (train, dev) for a in d for p in a["paragraphs"])
        print(f"squad-gen: {len(train_ex):,} train / {len(dev_ex):,} dev questions; " +
              cut_and_dropped(cut + cut_dev, n - len(train_ex) - len(dev_ex), seq_len))
        return train_ex, dev_ex, one_per_question(dev)
    train_ex, dev_ex = (squad_windows(d, tok, seq_len, stride, split=n) for n, d in (("train", train), ("dev", dev)))
    print(f"squad: {len(train_ex):,} train / {len(dev_ex):,} dev windows of at most {seq_len} tokens (stride {stride})")
    return train_ex, dev_ex, one_per_question(dev)
