"""data.py: tokenizers (datasets and prompt templates join them here as train.py needs them).

- SentencePiece `tokenizer.model` (LLaMA) through the sentencepiece library.
- Byte-level BPE (GPT-2, Sennrich et al. 2016 applied to bytes; also RoBERTa, SmolLM2) run by tiktoken, built from
  the checkpoint's own files: `tokenizer.json`, `vocab.json` + `merges.txt`, or GPT-2's `encoder.json` + `vocab.bpe`.
  tiktoken merges the adjacent pair whose *merged token* has the lowest rank, so ranks follow merges.txt: the 256
  single bytes first, then each merge's result in file order; a lookup table maps ranks to the checkpoint's ids.
  Pre-tokenization is GPT-2's regex (optionally after splitting digits one by one, as SmolLM2's tokenizer.json says).
- Special ids (BOS/EOS/pad) come from the tokenizer files, overridden by the checkpoint's config.json.

Leaves out: WordPiece (BERT, a later issue), HF normalizers, and two corner cases of tiktoken's BPE: a whole
pre-token that is itself in the vocabulary is taken as one token (HF's `ignore_merges`), and a merge whose result an
earlier merge already produced keeps the earlier rank. tiktoken's own GPT-2 encoding makes the same choices.

Run `python -m pytest -q tests/test_tokenizers.py` to compare against transformers' tokenizers.
"""
import csv
import json
import os
import tarfile
import unicodedata
import urllib.request

import sentencepiece
import tiktoken

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def bytes_to_unicode():
    """GPT-2's byte -> character table: printable bytes are themselves, the others shift to 256+, so every byte
    string is a visible string in vocab.json (a space is 'Ġ')."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:  # the n-th non-printable byte becomes chr(256 + n)
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


class Tokenizer:
    """encode(text) -> ids (with BOS when the model family expects it), decode(ids) -> text."""
    bos_id = eos_id = pad_id = None
    add_bos = False

    def encode(self, text, bos=None, eos=False):
        bos = self.add_bos if bos is None else bos
        bos, eos = bos and self.bos_id is not None, eos and self.eos_id is not None
        return [self.bos_id] * bos + self._encode(text) + [self.eos_id] * eos


class SentencePieceTokenizer(Tokenizer):
    def __init__(self, path):
        self.sp = sentencepiece.SentencePieceProcessor(model_file=path)
        self.vocab_size = self.sp.get_piece_size()
        self.bos_id, self.eos_id, self.pad_id = (i if i >= 0 else None for i in
                                                 (self.sp.bos_id(), self.sp.eos_id(), self.sp.pad_id()))
        self.add_bos = self.bos_id is not None  # LLaMA prompts start with <s>

    def _encode(self, text):
        return self.sp.encode(text)

    def decode(self, ids):
        return self.sp.decode(list(ids))


class BPETokenizer(Tokenizer):
    def __init__(self, vocab, merges, split_digits=False, add_prefix_space=False, specials=()):
        """vocab {token string: id}; merges [(left, right)] in priority order; specials: extra {string: id} entries."""
        byte_of = {c: b for b, c in bytes_to_unicode().items()}
        ranks, strings = {bytes([b]): b for b in range(256)}, [bytes_to_unicode()[b] for b in range(256)]
        for left, right in merges:
            merged = bytes(byte_of[c] for c in left + right)
            if merged not in ranks:
                ranks[merged] = len(strings)
                strings.append(left + right)
        missing = [s for s in strings if s not in vocab]
        if missing:
            raise ValueError(f"tokens {missing[:5]} are produced by bytes or merges but absent from the vocabulary")
        # everything else in the vocabulary (<|endoftext|>, <s>, <pad>, ...) is matched whole, as HF does
        special = {s: i for s, i in vocab.items() if not set(s) <= byte_of.keys()
                   or bytes(byte_of[c] for c in s) not in ranks}
        special.update(specials)
        self.id_of_rank = [vocab[s] for s in strings] + list(special.values())
        self.rank_of_id = {i: r for r, i in enumerate(self.id_of_rank)}
        self.enc = tiktoken.Encoding("bpe", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                     special_tokens={s: len(strings) + j for j, s in enumerate(special)})
        self.vocab_size = max(self.id_of_rank) + 1
        self.split_digits, self.add_prefix_space = split_digits, add_prefix_space
        self.bos_id = self.eos_id = special.get("<|endoftext|>")  # GPT-2's only special token

    def _encode(self, text):
        if self.add_prefix_space and text and not text.startswith(" "):
            text = " " + text
        pieces = self._digits(text) if self.split_digits else [text]
        return [self.id_of_rank[r] for p in pieces for r in self.enc.encode(p, allowed_special="all")]

    @staticmethod
    def _digits(text):  # HF's Digits(individual_digits=True): every numeric character stands alone
        out, start = [], 0
        for i, ch in enumerate(text):
            if unicodedata.category(ch)[0] == "N":
                out += [text[start:i], ch]
                start = i + 1
        return [p for p in out + [text[start:]] if p]

    def decode(self, ids):
        return self.enc.decode([self.rank_of_id[i] for i in ids])


def read_merges(path):
    with open(path, encoding="utf-8") as f:
        return [tuple(line.split()) for line in f.read().split("\n") if line and not line.startswith("#version")]


def tokenizer_json(path):
    """A byte-level BPE tokenizer.json (HF `tokenizers`); other pre-tokenizers are refused rather than guessed."""
    with open(path, encoding="utf-8") as f:
        t = json.load(f)
    pre = t.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    digits = kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits")
    byte_level = (kinds == ["ByteLevel"] or digits) and steps[-1].get("use_regex", True)
    if t["model"].get("type") != "BPE" or not byte_level:
        raise NotImplementedError(f"{path}: only byte-level BPE with GPT-2's regex is supported (found {kinds})")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in t["model"]["merges"]]
    added = {a["content"]: a["id"] for a in t.get("added_tokens", [])}
    return BPETokenizer(t["model"]["vocab"], merges, bool(digits), steps[-1].get("add_prefix_space", False), added)


def load_tokenizer(path):
    """The tokenizer a checkpoint directory ships, with its special ids (config.json's take precedence)."""
    f = lambda name: os.path.join(path, name)  # noqa: E731
    if os.path.exists(f("tokenizer.model")):
        tok = SentencePieceTokenizer(f("tokenizer.model"))
    elif os.path.exists(f("tokenizer.json")):
        tok = tokenizer_json(f("tokenizer.json"))
    else:
        for vocab, merges in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
            if os.path.exists(f(vocab)) and os.path.exists(f(merges)):
                with open(f(vocab), encoding="utf-8") as fh:
                    tok = BPETokenizer(json.load(fh), read_merges(f(merges)))
                break
        else:
            raise FileNotFoundError(f"{path}: no tokenizer.model, tokenizer.json, vocab.json + merges.txt "
                                    "or encoder.json + vocab.bpe")
    if os.path.exists(f("config.json")):
        with open(f("config.json")) as fh:
            config = json.load(fh)
        for key in ("bos_id", "eos_id", "pad_id"):
            value = config.get(key.replace("_id", "_token_id"))
            if value is not None:
                setattr(tok, key, value[0] if isinstance(value, list) else value)
    return tok


# ----------------------------------------------------------------------------------------------------
# Instruction data: Stanford Alpaca's records and prompt templates (as issue 5's train.py helper writes them)

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
ALPACA_URL = "https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/main/alpaca_data.json"


def alpaca_prompt(record):
    """The prompt Alpaca trains on: the template with input when the record's input is not empty."""
    key = "prompt_input" if record.get("input", "") != "" else "prompt_no_input"
    return PROMPT_DICT[key].format_map(record)


def read_records(path):
    """Instruction records from a .json list or a .jsonl file. Each needs `instruction` and `output` strings;
    `input` is optional (Alpaca's empty string). A malformed record is an error naming its index and field."""
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()] if path.endswith(".jsonl") else json.load(f)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records, found {type(records).__name__}")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise ValueError(f"{path}: record {i} is a {type(r).__name__}, not an object")
        for field in ("instruction", "input", "output"):
            if field == "input" and field not in r:
                continue
            if field not in r:
                raise ValueError(f"{path}: record {i} has no {field!r} field (it has {sorted(r)})")
            if not isinstance(r[field], str):
                raise ValueError(f"{path}: record {i} field {field!r} is a {type(r[field]).__name__}, not a string")
    return records


# ----------------------------------------------------------------------------------------------------
# Downloads and MMLU's files

MMLU_URL = "https://people.eecs.berkeley.edu/~hendrycks/data.tar"  # MMLU's original release (166 MB)


def cache_dir(*parts):
    """$LORASP_CACHE (default ~/.cache/lorasp) joined with parts: downloaded models and data, the demo's model."""
    root = os.environ.get("LORASP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lorasp")
    return os.path.join(root, *parts)


def mmlu_dir(data_dir=None):
    """A folder holding MMLU's dev/ and test/: data_dir, or the original release, downloaded once into the cache."""
    cached = cache_dir("mmlu", "data")
    if data_dir is None and not os.path.isdir(os.path.join(cached, "test")):
        part = cache_dir("mmlu", "data.tar.part")
        os.makedirs(os.path.dirname(part), exist_ok=True)
        print(f"MMLU is not in {cached}: downloading {MMLU_URL}", flush=True)
        try:
            urllib.request.urlretrieve(MMLU_URL, part)
        except OSError as e:
            raise SystemExit(f"download failed ({e}); fetch {MMLU_URL} by hand, untar it, pass --data-dir data/")
        with tarfile.open(part) as t:
            t.extractall(os.path.dirname(part), filter="data")  # data/{dev,val,test,auxiliary_train}/
        os.remove(part)
    if not os.path.isdir(os.path.join(data_dir or cached, "test")):
        raise SystemExit(f"{data_dir}: no test/ folder (MMLU's data/ folder from {MMLU_URL})")
    return data_dir or cached


def read_mmlu_csv(path):
    """MMLU's rows: question, A, B, C, D, answer; no header. Kept as strings (the original's pandas turns "None" into
    NaN and "2.50" into 2.5)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    for i, row in enumerate(rows):
        if len(row) != 6 or row[5] not in ("A", "B", "C", "D"):
            raise ValueError(f"{path}: row {i + 1} is not question,A,B,C,D,answer(A-D): {row}")
    return rows
