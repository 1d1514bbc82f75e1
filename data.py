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
import re
import shutil
import tempfile
import unicodedata
import urllib.request
import zipfile

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
    pair_seps, type_b = 1, 1  # BERT: [CLS] A [SEP] B [SEP], B's token type 1 (RoBERTa: </s></s> between, type 0)

    def encode(self, text, bos=None, eos=False):
        bos = self.add_bos if bos is None else bos
        bos, eos = bos and self.bos_id is not None, eos and self.eos_id is not None
        return [self.bos_id] * bos + self._encode(text) + [self.eos_id] * eos

    def encode_pair(self, a, b=None, max_len=512):
        """A classifier's input -> (ids, token_type_ids): [CLS] A [SEP] (B [SEP]) for BERT, types 0 then 1;
        <s> A </s> (</s> B </s>) for RoBERTa, types all 0. Too long: truncation="longest_first" as HF's tokenizers
        library (what transformers' BertTokenizer/RobertaTokenizer run): the longer text is cut first; if both must
        be cut they share max_len, the odd token to the longer (B on a tie; the old Python tokenizers gave it to A)."""
        b = b or None  # an empty second text is no second text, as in HF
        A, B = self._encode(a), [] if b is None else self._encode(b)
        room = max_len - 2 - (0 if b is None else self.pair_seps)
        if room < 0:
            raise ValueError(f"max_len {max_len} leaves no room for the special tokens")
        if len(A) + len(B) > room:
            short = min(len(A), len(B)) if 2 * min(len(A), len(B)) <= room else room // 2
            A, B = (A[:room - short], B[:short]) if len(A) > len(B) else (A[:short], B[:room - short])
        first = [self.bos_id, *A, self.eos_id]
        second = [] if b is None else [self.eos_id] * (self.pair_seps - 1) + [*B, self.eos_id]
        return first + second, [0] * len(first) + [self.type_b] * len(second)


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
        if "<s>" in special and "</s>" in special:  # RoBERTa: <s> A </s>, pairs <s> A </s></s> B </s>
            self.bos_id, self.eos_id, self.pad_id = special["<s>"], special["</s>"], special.get("<pad>")
            self.add_bos, self.pair_seps, self.type_b = True, 2, 0

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


def is_punctuation(ch):  # HF's _is_punctuation: Unicode P* plus the ASCII symbols ($, +, <, =, >, ^, `, |, ~)
    cp = ord(ch)
    return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or unicodedata.category(ch)[0] == "P"


CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
       (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))  # CJK ideographs (Hangul and kana use spaces)


ASCII_BASIC = {c: None for c in [*range(32), 127] if chr(c) not in "\t\n\r"} | {ord(c): " " for c in "\t\n\r"}
ASCII_PUNCT = re.compile("([" + re.escape("".join(chr(c) for c in range(128) if is_punctuation(chr(c)))) + "])")


class WordPieceTokenizer(Tokenizer):
    """BERT's tokenizer, as HF's BertTokenizer. Basic tokenization: drop NUL, U+FFFD and control characters, spaces
    around CJK characters, split on whitespace; per word, lower-case and strip accents (NFD, drop Mn) if uncased,
    split punctuation off. Then WordPiece (Wu et al. 2016): greedy longest match first, continuations prefixed ##;
    a word with an unmatched rest, or over 100 characters, is [UNK]."""
    add_bos = True

    def __init__(self, vocab, lower=True, strip_accents=None, split_cjk=True):
        self.vocab, self.lower, self.split_cjk = vocab, lower, split_cjk
        self.strip_accents = lower if strip_accents is None else strip_accents
        self.token_of = {i: t for t, i in vocab.items()}
        self.vocab_size = max(vocab.values()) + 1
        self.bos_id, self.eos_id, self.pad_id, self.unk_id = map(vocab.get, ("[CLS]", "[SEP]", "[PAD]", "[UNK]"))
        self.specials = [t for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]") if t in vocab]  # matched whole
        self.special_re = re.compile("(" + "|".join(map(re.escape, self.specials)) + ")")

    def _encode(self, text):
        ids = []
        for part in self.special_re.split(text) if self.specials else [text]:
            if part in self.specials:
                ids.append(self.vocab[part])
            else:
                ids += [i for w in self.words(part) for i in self.pieces(w)]
        return ids

    def words(self, text):
        """The basic tokenizer: text -> words and punctuation marks."""
        if text.isascii():  # the common case, fast: control characters go, ASCII punctuation is split off
            words = text.translate(ASCII_BASIC).lower().split() if self.lower else text.translate(ASCII_BASIC).split()
            return [p for w in words for p in ASCII_PUNCT.split(w) if p]
        chars = []
        for ch in text:
            cat = unicodedata.category(ch)
            if ord(ch) in (0, 0xFFFD) or cat[0] == "C" and ch not in "\t\n\r":
                continue  # NUL, the replacement character, control characters
            cjk = self.split_cjk and any(lo <= ord(ch) <= hi for lo, hi in CJK)
            chars.append(" " if cat == "Zs" or ch in "\t\n\r" else f" {ch} " if cjk else ch)
        out = []
        for word in "".join(chars).split():  # no NFC first: as Google's BERT and HF's tokenizers library
            word = word.lower() if self.lower else word
            if self.strip_accents:
                word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
            parts = [""]
            for ch in word:
                if is_punctuation(ch):
                    parts += [ch, ""]  # each punctuation character is a word of its own
                else:
                    parts[-1] += ch
            out += [p for p in parts if p]
        return out

    def pieces(self, word):
        if len(word) > 100:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):  # the longest piece in the vocabulary first
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
            else:
                return [self.unk_id]
            start = end
        return ids

    def decode(self, ids):
        return " ".join(self.token_of[i] for i in ids).replace(" ##", "")


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
    elif os.path.exists(f("vocab.txt")):  # BERT's WordPiece; tokenizer_config.json says if it is cased
        cfg = {}
        if os.path.exists(f("tokenizer_config.json")):
            with open(f("tokenizer_config.json"), encoding="utf-8") as fh:
                cfg = json.load(fh)
        with open(f("vocab.txt"), encoding="utf-8") as fh:
            vocab = {line.rstrip("\n"): i for i, line in enumerate(fh)}
        tok = WordPieceTokenizer(vocab, cfg.get("do_lower_case", True), cfg.get("strip_accents"),
                                 cfg.get("tokenize_chinese_chars", True))
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
COLA_COLUMNS = ("source", "label", "original_label", "sentence")  # CoLA's train/dev files have no header
MRPC_URLS = {"train": "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt",
             "dev_ids": GLUE_URL + "mrpc_dev_ids.tsv"}  # MRPC is not hosted by GLUE: SentEval's copy + GLUE's split


def read_glue(path, task):
    """One GLUE TSV file -> [(text_a, text_b or None, label)]: label a class index, or STS-B's float score.
    Tab-separated with no quoting (csv.QUOTE_NONE: quotes are text); a row with the wrong number of fields, an
    unknown label or a missing column is an error naming the file and line."""
    folder, zipname, texts, label, labels, _ = GLUE[task]
    out = []
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: MRPC's files start with a byte-order mark
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = COLA_COLUMNS if task == "cola" else next(rows, [])
        missing = [c for c in (*texts, label) if c not in header]
        if missing:
            raise ValueError(f"{path}: no column {missing[0]!r} for GLUE {task} (the header has {header})")
        for row in rows:
            if len(row) != len(header):
                raise ValueError(f"{path}:{rows.line_num}: {len(row)} fields, expected {len(header)} ({task})")
            r = dict(zip(header, row))
            try:
                y = float(r[label]) if labels is None else labels.index(r[label])
            except ValueError:
                raise ValueError(f"{path}:{rows.line_num}: label {r[label]!r} is not "
                                 f"{'a number' if labels is None else ' or '.join(labels)}") from None
            out.append((r[texts[0]], r[texts[1]] if len(texts) > 1 else None, y))
    return out


def load_glue(task, root=None, cache=os.path.join(os.path.expanduser("~"), ".cache", "lorasp")):
    """{split: examples} of a GLUE task: "train" and "dev" (MNLI: "dev_matched", "dev_mismatched"), from
    root/<task folder>/ (download_glue_data.py's layout: glue_data/SST-2/train.tsv), by default the cache, where a
    missing task is downloaded."""
    if task not in GLUE:
        raise ValueError(f"unknown GLUE task {task!r}; known tasks: {', '.join(GLUE)}")
    folder, *_, devs = GLUE[task]
    directory, files = os.path.join(root or os.path.join(cache, "glue"), folder), ("train", *devs)
    if not all(os.path.exists(os.path.join(directory, f"{s}.tsv")) for s in files):
        if root:
            raise FileNotFoundError(f"{directory}: needs {', '.join(f'{s}.tsv' for s in files)}")
        download_glue(task, os.path.dirname(directory))
    return {s: read_glue(os.path.join(directory, f"{s}.tsv"), task) for s in files}


def encode_glue(rows, tok, max_len=128):
    """[(text_a, text_b, label)] -> [{"input_ids", "token_type_ids", "labels"}] for a classifier (labels: a class
    index or a score), and how many pairs were truncated to max_len."""
    out, cut = [], 0
    for a, b, y in rows:
        ids, types = tok.encode_pair(a, b, max_len)
        cut += len(ids) == max_len and len(tok.encode_pair(a, b, 1 << 30)[0]) > max_len
        out.append({"input_ids": ids, "token_type_ids": types, "labels": y})
    return out, cut


def download_glue(task, root):
    """Fetch one task into root/<folder>/ (MRPC: split SentEval's train file by GLUE's dev ids, as
    download_glue_data.py does); written under a temporary name and renamed, so a broken download leaves nothing."""
    folder, zipname = GLUE[task][:2]
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=root)
    try:
        if zipname:
            download(GLUE_URL + zipname, os.path.join(tmp, zipname))
            with zipfile.ZipFile(os.path.join(tmp, zipname)) as z:
                z.extractall(tmp)
        else:
            for name, url in MRPC_URLS.items():
                download(url, os.path.join(tmp, name))
            with open(os.path.join(tmp, "dev_ids"), encoding="utf-8") as f:
                dev = {tuple(line.strip().split("\t")) for line in f if line.strip()}
            os.makedirs(os.path.join(tmp, folder))
            with open(os.path.join(tmp, "train"), encoding="utf-8-sig") as f:
                header, *lines = f.read().splitlines()
            for split, in_dev in (("train", False), ("dev", True)):
                rows = [line for line in lines if line.strip() and (tuple(line.split("\t")[1:3]) in dev) == in_dev]
                with open(os.path.join(tmp, folder, f"{split}.tsv"), "w", encoding="utf-8") as f:
                    f.write("\n".join([header, *rows]) + "\n")
        os.replace(os.path.join(tmp, folder), os.path.join(root, folder))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download(url, path):
    """url -> path, whole or not at all."""
    with urllib.request.urlopen(url, timeout=60) as r, open(path + ".part", "wb") as f:
        shutil.copyfileobj(r, f)
    os.replace(path + ".part", path)
