"""data.py: tokenizers, instruction data and its prompt templates, the benchmarks' data sets, and the offline demo's
generated data.

- SentencePiece `tokenizer.model` (LLaMA) through the sentencepiece library (a Llama's or Mistral's tokenizer.json
  alone, sentencepiece's BPE as transformers 5 saves it, becomes such a model: `sentencepiece_json`); the added
  tokens of tokenizer.json or added_tokens.json (a chat fine-tune's <|im_start|>) and the model's control pieces
  (Mistral v0.3's [INST]) are matched whole in text first, as HF's tokenizers does, with their lstrip / rstrip /
  single_word flags (`find_added`; byte-level BPE's too: RoBERTa's <mask> takes the space before it).
- A GGUF file's own tokenizer (its metadata): byte-level BPE from its tokens and merges, sentencepiece (BPE or
  Unigram) from its pieces, scores and types, written as a tokenizer.model by hand (protobuf's wire format), or
  BERT's WordPiece; T5's Unigram tokenizer.json becomes a tokenizer.model the same way.
- Byte-level BPE (GPT-2, Sennrich et al. 2016 applied to bytes; also RoBERTa, SmolLM2) run by tiktoken, built from
  the checkpoint's own files: `tokenizer.json`, `vocab.json` + `merges.txt`, GPT-2's `encoder.json` + `vocab.bpe`, or
  OpenAI's GPT-2 ranks as tiktoken ships them (`gpt2.tiktoken`: `tiktoken_gpt2` derives the merges).
  tiktoken merges the adjacent pair whose *merged token* has the lowest rank, so ranks follow merges.txt: the 256
  single bytes first, then each merge's result in file order; a lookup table maps ranks to the checkpoint's ids.
  Pre-tokenization is GPT-2's regex (optionally after splitting digits one by one, as SmolLM2's tokenizer.json says).
  Bytes the vocabulary has no token for (SmolLM2 lacks 21) are dropped, as HF's tokenizers does.
- Meta's Llama 3 `tokenizer.model` (its own download's layout): tiktoken's file of ranked byte strings, Llama 3's
  pre-tokenizer regex and its 256 special tokens, named as Meta's reference tokenizer.py names them.
- A special token's text written in a text (a record's "<|eot_id|>", "<|pad|>") is that token, as transformers reads
  it (split_special_tokens false, the default every HF tokenizer's model was fine-tuned with), except in Meta's Llama
  3 tokenizer.model, whose reference (Meta's tokenizer.py, disallowed_special=()) reads it as plain text.
- T5's `spiece.model` (sentencepiece) plus its 100 sentinel ids <extra_id_N>; EOS ends every encoded text.
- Special ids (BOS/EOS/pad) come from the tokenizer files and the names in tokenizer_config.json (as transformers'
  tokenizer takes them; a tokenizer-only folder too), overridden by the checkpoint's config.json (the model's own,
  what its generation stops on; a disagreement is reported), except a sentencepiece model's own special pieces (a
  config.json that disagrees is reported, not followed).
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
- BERT's WordPiece by hand; GLUE (the paper's Table 1): the official TSV files of the eight tasks, encoded as
  classifier pairs ([CLS] A [SEP] B [SEP] / <s> A </s></s> B </s>).
- WMT16 English-Romanian (the paper's Table 2): the Hugging Face JSONL export or aligned plain-text files, T5's
  "translate English to Romanian: " prefix, teacher-forcing batches (decoder input = labels shifted right).
- SQuAD v1.1 (the second paper's QA): the official JSON files; contexts cut into overlapping windows for a span head
  (BERT's run_squad.py), or Alpaca records for a causal LM's generated answers.
- `collate` batches all three kinds of examples: causal-LM token labels, a classifier's one label, (source, target).

Leaves out: a byte-level BPE's HF normalizer other than a Unicode normal form (Qwen2's NFC is applied; others
refused), and two corner cases of tiktoken's BPE: a whole pre-token that is itself in the vocabulary is taken as one
token (HF's `ignore_merges`), and a merge whose result an earlier merge already produced keeps the earlier rank.
tiktoken's own GPT-2 encoding makes the same choices.

Sections, in order: tokenizers; instruction data (Alpaca) and batching; the offline demo's data; MMLU; GLUE; WMT16;
SQuAD. No budget of its own: each data set is a few readers that follow its official files.
Run `python -m pytest -q tests/test_tokenizers.py tests/test_data.py` (transformers' tokenizers, Alpaca's strings,
a local stand-in for the Hub).
"""
import base64
import binascii
import collections
import contextlib
import csv
import functools
import hashlib
import io
import itertools
import json
import math
import os
import random
import re
import shutil
import struct
import sys
import tarfile
import tempfile
import unicodedata
import zipfile

import regex  # tiktoken's own dependency: GPT-2's \p{L} classes, which re lacks
import sentencepiece
import tiktoken
import torch

from checkpoint import atomic_write, gguf_file, head_tail, locked, read_gguf, read_json
from download import SMALL_FILES, UserError, cache_dir, check_recorded_sha256, download, file_sha256, make_dirs
from download import received
from download import KNOWN_FILES, download_hf, remote_info  # noqa: F401  (data.download_hf etc., as before the move)

# the files a checkpoint folder's tokenizer is read from (added_tokens.json: transformers' tokens added to a
# sentencepiece vocabulary, a pad token say; encoder.json + vocab.bpe: GPT-2's own names for vocab.json + merges.txt;
# gpt2.tiktoken: OpenAI's GPT-2 ranks as tiktoken ships them);
# COPIED ones, with its chat template, make a saved model's tokenizer
TOKENIZER_FILES = SMALL_FILES[2:] + ("added_tokens.json", "encoder.json", "vocab.bpe", "gpt2.tiktoken")
HASHED_BEFORE = SMALL_FILES[2:]  # what a tokenizer_files record made before it named absent files (null) looked at
COPIED = TOKENIZER_FILES + ("chat_template.jinja", "chat_template.json")


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
# Tokenizers: SentencePiece, a GGUF file's own, byte-level BPE (tiktoken), WordPiece, T5's; load_tokenizer picks one

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Llama 3's pre-tokenizer (its tokenizer.json's Split, llama.cpp's llama-bpe)
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")
TIKTOKEN_LINE = rb"(\xef\xbb\xbf)?[A-Za-z0-9+/=]+ \d+\r?\n"  # tiktoken's first line "base64 rank" (a BOM, CRLF)


@functools.lru_cache(maxsize=32)
def alternation(strings):
    """A regex that finds any of strings whole, in a group (split keeps them), the longest first where one holds
    another; None where there are none."""
    return regex.compile("(" + "|".join(map(regex.escape, sorted(strings, key=len, reverse=True))) + ")") if strings \
        else None


WORD_CHAR = regex.compile(r"[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]")  # Rust regex's \w (tokenizers')
WHITE_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(map(chr, range(0x2000, 0x200B)))
# (Unicode's White_Space, Rust's \s; str.isspace also takes \x1c-\x1f)
FLAGS = ("lstrip", "rstrip", "single_word")  # an added token's flags in tokenizer.json, as find_added takes them


def find_added(text, found, flags):
    """[(start, end, added token or None)] covering text, as HF tokenizers' AddedVocabulary.find_matches: found (an
    alternation) finds the tokens leftmost-longest; flags {token: (lstrip, rstrip, single_word)}, tokenizer.json's: a
    single_word match with a word character just before or after it stays text, lstrip / rstrip take the whitespace
    before / after it into the token (whitespace an earlier token took stays with that one)."""
    out, done = [], 0
    for m in found.finditer(text) if found else ():
        (start, stop), token = m.span(), m.group()
        lstrip, rstrip, single = flags.get(token, (False, False, False))
        if single and (start and WORD_CHAR.match(text[start - 1]) or stop < len(text) and WORD_CHAR.match(text[stop])):
            continue
        if lstrip:
            start = max(len(text[:start].rstrip(WHITE_SPACE)), done)
        if rstrip:
            stop = len(text) - len(text[stop:].lstrip(WHITE_SPACE))
        out += [(done, start, None)] * (done < start) + [(start, stop, token)]
        done = stop
    return out + [(done, len(text), None)] * (done < len(text) or not text)


def strip_flags(added):
    """{content: (lstrip, rstrip, single_word)} of the added tokens (tokenizer.json's entries) that set one."""
    flags = {a["content"]: tuple(bool(a.get(k)) for k in FLAGS) for a in added}
    return {t: f for t, f in flags.items() if any(f)}


def isolate(pattern, text):
    """text cut before and after each match of pattern (HF's Split, behavior Isolated; llama.cpp's regex lists)."""
    out, done = [], 0
    for m in regex.finditer(pattern, text):
        out += [text[done:m.start()]] * (m.start() > done) + [m.group()] * (m.end() > m.start())
        done = max(done, m.end())
    return out + [text[done:]] * (done < len(text))


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
    flags = {}  # added tokens' {text: (lstrip, rstrip, single_word)} where tokenizer.json sets one (find_added)
    stop_ids = ()     # the ids transformers' generate ends on (generation_eos: Llama 3's list); Meta's stop tokens
    add_bos = False
    add_eos = False  # the checkpoint's tokenizer ends every text with EOS: documents scored whole end with it too
    pair_seps, type_b = 1, 1  # BERT: [CLS] A [SEP] B [SEP], B's token type 1 (RoBERTa: </s></s> between, type 0)

    @property
    def stops(self):
        """The ids that end a generated answer: EOS first, then those transformers' generate ends on (stop_ids:
        generation_config.json's eos_token_id, else config.json's; Llama 3 Instruct's <|eot_id|>, <|end_of_text|>).
        EOS ends it where they leave it out: after EOS the model begins another text (generate.py says so)."""
        return [i for i in dict.fromkeys([self.eos_id, *self.stop_ids]) if i is not None] or None

    def encode(self, text, bos=None, eos=False, after=False):
        """after: the text continues another (a response after its prompt), tokenized as inside the joined text:
        sentencepiece adds no "▁" of its own ("### Response:" then "5", not "▁5"), byte-level BPE no prefix
        space."""
        bos = self.add_bos if bos is None else bos
        bos, eos = bos and self.bos_id is not None, eos and self.eos_id is not None
        return [self.bos_id] * bos + self._encode(text, after) + [self.eos_id] * eos

    def encode_pair(self, a, b=None, max_len=512):
        """A classifier's input -> (ids, token_type_ids): [CLS] A [SEP] (B [SEP]) for BERT, types 0 then 1;
        <s> A </s> (</s> B </s>) for RoBERTa, types all 0; GPT-2 as BERT, <|endoftext|> for every mark (one between A
        and B; HF's GPT2Tokenizer joins them with nothing: docs/paper-experiments.md says why not); sentencepiece as
        transformers' LlamaTokenizer, [<s>] A [</s>] [<s>] B [</s>] as add_bos/add_eos say, types 0 then 1 (T5:
        A </s> B </s>, types 0); a tokenizer.json's TemplateProcessing as it says (Llama 3: BOS A BOS B). Too long:
        truncation="longest_first" as HF's tokenizers library (what transformers' BertTokenizer/RobertaTokenizer
        run): the longer text is cut first; if both must be cut they share max_len, the odd token to the longer (B on
        a tie; the old Python tokenizers gave it to A)."""
        # b "" is a second text with no tokens, [CLS] A [SEP] [SEP], as run_glue's batched tokenizer call encodes it
        # (an unbatched tokenizer(a, "") drops it); None: no second text
        A, B = self._encode(a), [] if b is None else self._encode(b)
        steps = self.template[b is not None] if self.template else self.marks_template(b is not None)
        room = max_len - sum(len(part) for part, _ in steps if part not in ("A", "B"))
        if room < 1:                                           # (0: [CLS] [SEP] [SEP], as tokenizers: no text)
            raise ValueError(f"max_len {max_len} leaves no room for the text after the {max_len - room} special "
                             f"tokens: --seq-len {max_len - room + 1} or more")
        if len(A) + len(B) > room:
            short = min(len(A), len(B)) if 2 * min(len(A), len(B)) <= room else room // 2
            A, B = (A[:room - short], B[:short]) if len(A) > len(B) else (A[:short], B[:room - short])
        parts = [(A if part == "A" else B if part == "B" else part, type_id) for part, type_id in steps]
        return [i for ids, _ in parts for i in ids], [t for ids, t in parts for _ in ids]

    template = None  # tokenizer.json's TemplateProcessing (single, pair): [(special ids or "A"/"B", type id)]

    def marks_template(self, pair):
        """encode_pair's steps from pair_marks: head A tail (mid B tail)."""
        head, mid, tail = self.pair_marks()
        return [(head, 0), ("A", 0), (tail, 0)] + [(mid, self.type_b), ("B", self.type_b), (tail, self.type_b)] * pair

    def pair_marks(self):
        """encode_pair's special tokens: (before A, before B, after each text)."""
        return [self.bos_id], [self.eos_id] * (self.pair_seps - 1), [self.eos_id]


NO_DUMMY_PREFIX = b"\x1a\x02\x18\x00"  # normalizer_spec (3) {add_dummy_prefix (3): 0}: protobuf's parser merges it
# into the model's own normalizer_spec, so appended to a tokenizer.model it turns off only the "▁" prefix


class SentencePieceTokenizer(Tokenizer):
    prepend = False  # "▁" before each text after an added token even where it starts with a space (Phi-3's Prepend
                     # normalizer; HF's Metaspace, as transformers reads tokenizer.model, adds none there)
    metaspace = False  # no "▁" prefix for a text that starts with a space, first text included (a tokenizer.json's
                       # Metaspace: its space is the "▁"); sentencepiece adds one ("  x": "▁▁▁x", Metaspace "▁▁x")

    def __init__(self, path=None, proto=None, added=None, prefix_each=True):
        """path: a tokenizer.model file; proto: its bytes (sentencepiece_model writes them for GGUF and JSON files,
        named by path then).
        added: {text: id} matched whole in text, as HF does (a chat fine-tune's <|im_start|>; the model's own <s>,
        </s>, <unk> always); the text between them is encoded part by part, each with sentencepiece's "▁" prefix
        (prefix_each: transformers' legacy) or the first only."""
        built = proto is not None  # (path, then, names the file it was built from, in messages)
        if not built:
            with open(path, "rb") as fh:
                proto = fh.read()
        if re.match(TIKTOKEN_LINE, proto[:200]):  # base64 token, space, rank: a tiktoken BPE file
            raise ValueError(f"{path}: a tiktoken BPE file (Llama 3's tokenizer.model), not sentencepiece; "
                             "load_tokenizer(its folder) reads it")
        try:
            self.sp = sentencepiece.SentencePieceProcessor(model_proto=proto)
        except RuntimeError as e:  # a cut-off download: sentencepiece's own message names no file
            if built:                                   # (was "None: not a sentencepiece model ...; fetch it again")
                raise ValueError(f"{path}: sentencepiece refuses the model its vocabulary makes ({e})") from None
            raise ValueError(f"{path}: not a sentencepiece model (damaged or cut off?); fetch it again") from None
        self.unprefixed = sentencepiece.SentencePieceProcessor(model_proto=proto + NO_DUMMY_PREFIX)
        self.prefix_each = prefix_each
        marks = {self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id(), self.sp.pad_id()}
        specials = {self.sp.id_to_piece(i): i for i in range(self.sp.get_piece_size()) if i in marks or
                    self.sp.is_control(i)}  # "</s>" in text is EOS, as in HF; so is each control piece (Mistral
        # v0.3's [INST]: transformers' converter makes them special tokens, llama.cpp matches a GGUF's)
        self.set_added({**specials, **(added or {})})
        self.bos_id, self.eos_id, self.pad_id = (i if i >= 0 else None for i in
                                                 (self.sp.bos_id(), self.sp.eos_id(), self.sp.pad_id()))
        self.add_bos = self.bos_id is not None  # LLaMA prompts start with <s>

    def pair_marks(self):  # transformers' LlamaTokenizer: [<s>] A [</s>] [<s>] B [</s>], as add_bos/add_eos say
        bos = [self.bos_id] * (self.add_bos and self.bos_id is not None)
        return bos, bos, [self.eos_id] * (self.add_eos and self.eos_id is not None)

    def set_added(self, added):
        """The added tokens {text: id}: matched whole in text; ids past sentencepiece's pieces are decoded here."""
        n, self.added = self.sp.get_piece_size(), added
        self.beyond = {i: t for t, i in added.items() if i >= n}
        self.vocab_size = max([n, *(i + 1 for i in self.beyond)])
        self.split = alternation(tuple(added))

    def _encode(self, text, after=False):
        if not self.added:
            return (self.unprefixed if after or self.metaspace and text.startswith(" ") else self.sp).encode(text)
        ids = []  # after an added token, the "▁" prefix again only in legacy mode and where the text does not start
        for start, end, token in find_added(text, self.split, self.flags):  # with a space already (HF's Metaspace)
            p = text[start:end]
            prefixed = (not after and not (self.metaspace and p.startswith(" ")) if start == 0 else
                        self.prefix_each and (self.prepend or not p.startswith(" ")))
            ids += [self.added[token]] if token else (self.sp if prefixed else self.unprefixed).encode(p)
        return ids

    def decode(self, ids):
        """The text; after an added token a leading "▁" is a space (sentencepiece would drop it as its prefix). An id
        past the pieces and added tokens is skipped, as by HF's tokenizers (sentencepiece: OUT_OF_RANGE)."""
        out, after, n = [], False, self.sp.get_piece_size()
        for added, run in itertools.groupby((i for i in ids if i < n or i in self.beyond), key=lambda i: i in
                                            self.beyond):
            run = list(run)
            text = "".join(self.beyond[i] for i in run) if added else self.sp.decode(run)
            space = after and not added and self.sp.id_to_piece(run[0]).startswith("▁")
            out.append(" " * space + text)
            after = added
        return "".join(out)


class T5Tokenizer(SentencePieceTokenizer):
    """T5's spiece.model (pad 0, EOS 1, unk 2, no BOS) plus 100 sentinels <extra_id_0..99> after its pieces,
    <extra_id_0> the highest id. encode() ends with EOS, as T5's inputs and targets do; decode() drops pad, EOS, unk
    and sentinels (HF's skip_special_tokens=True), which is what BLEU is computed on."""

    def __init__(self, path=None, extra_ids=100, proto=None):
        super().__init__(path, proto)
        self.n_pieces, self.vocab_size, self.add_bos = self.vocab_size, self.vocab_size + extra_ids, False

    type_b = 0  # transformers' T5Tokenizer: A </s> B </s>, types all 0

    def encode(self, text, bos=False, eos=True, after=False):
        return super().encode(text, bos, eos, after)

    def pair_marks(self):
        return [], [], [self.eos_id]

    def _encode(self, text, after=False):
        """Text and special tokens alternate: "a <extra_id_0> b" -> ["a ", "<extra_id_0>", " b"]; </s>, <pad>, <unk>
        written in a text are those tokens too, as in transformers' T5Tokenizer."""
        parts = re.split("(<extra_id_(?:[0-9]|[1-9][0-9])>|" + "|".join(map(re.escape, self.added)) + ")", text)
        special = lambda p: self.added[p] if p in self.added else self.vocab_size - 1 - int(p[10:-1])  # noqa: E731
        first = self.unprefixed if after else self.sp
        return [i for j, p in enumerate(parts) for i in ([special(p)] if j % 2 else
                                                           (self.sp if j else first).encode(p))]

    def decode(self, ids):
        return self.sp.decode([i for i in ids if self.sp.unk_id() < i < self.n_pieces])  # pad 0, EOS 1, unk 2 first


class BPETokenizer(Tokenizer):
    split_digits = add_prefix_space = False
    normal_form = None  # tokenizer.json's normalizer: "NFC" (Qwen2), NFD, NFKC or NFKD, applied before the BPE
    normalized = frozenset()  # added tokens found in the normalized text (tokenizer.json's "normalized": true); the
                              # others in the raw text, so a normal form cannot make or unmake them

    def __init__(self, vocab, merges, split_digits=False, add_prefix_space=False, specials=(), pattern=GPT2_PATTERN,
                 only_specials=False):
        """vocab {token string: id}; merges [(left, right)] in priority order; specials: extra {string: id} entries;
        pattern: the pre-tokenizer's regex (GPT-2's, or a tokenizer.json's Split: Llama 3's), or a tuple of regexes,
        each splitting the pieces of the one before (llama.cpp's lists for Falcon, DeepSeek); only_specials: specials
        are all the added tokens (a GGUF's control and user-defined ones), other entries no merge reaches are never
        matched in text (Command-R's 1,403 emoji and symbols: HF and llama.cpp never produce them), only decoded."""
        byte_of = {c: b for b, c in bytes_to_unicode().items()}
        ranks, strings = {bytes([b]): b for b in range(256)}, [bytes_to_unicode()[b] for b in range(256)]
        for left, right in merges:
            merged = bytes(byte_of[c] for c in left + right)
            if merged not in ranks:
                ranks[merged] = len(strings)
                strings.append(left + right)
        missing = [s for s in strings[256:] if s not in vocab]
        if missing:
            raise ValueError(f"tokens {missing[:5]} are produced by merges but absent from the vocabulary")
        # everything else in the vocabulary (<|endoftext|>, <s>, <pad>, ...) is matched whole, as HF does
        special = {s: i for s, i in vocab.items() if not set(s) <= byte_of.keys()
                   or bytes(byte_of[c] for c in s) not in ranks}
        special.update(specials)
        self.setup(ranks, [vocab.get(s) for s in strings], special, pattern, dict(specials) if only_specials else None)
        self.split_digits, self.add_prefix_space = split_digits, add_prefix_space
        self.vocab, self.merges = vocab, merges               # (save_tokenizer writes them back)
        self.bos_id = self.eos_id = special.get("<|endoftext|>")  # GPT-2's only special token
        if "<s>" in special and "</s>" in special:  # RoBERTa: <s> A </s>, pairs <s> A </s></s> B </s>
            self.bos_id, self.eos_id, self.pad_id = special["<s>"], special["</s>"], special.get("<pad>")
            self.add_bos, self.pair_seps, self.type_b = True, 2, 0

    def setup(self, ranks, ids, special, pattern, matched=None):
        """tiktoken's Encoding: ranks {byte string: rank}, ids[rank] the checkpoint's id of each (None: no token),
        special {string: id} after them, matched whole in text (all, or those in matched); pattern: the
        pre-tokenizer's regex, or a tuple of them applied in turn (tiktoken then takes each piece whole)."""
        # a few single bytes may have no token (SmolLM2 lacks 21 that UTF-8 text rarely or never holds): dropped
        self.pattern, self.ranks, self.absent = pattern, ranks, bytes(b for b in range(256) if ids[b] is None)
        self.id_of_rank = ids + list(special.values())
        self.rank_of_id = {i: r for r, i in enumerate(self.id_of_rank) if i is not None}
        self.special_ids, self.names = special if matched is None else matched, special  # (names: all, by text)
        self.specials = alternation(tuple(self.special_ids))
        first = sorted(self.special_ids)  # one a prefix of another ("   " of "    ": GPT-NeoX's runs of spaces):
        self.prefix_free = all(not b.startswith(a) for a, b in zip(first, first[1:]))  # tiktoken picks either one
        self.pat = pattern if isinstance(pattern, str) else r"[\s\S]+"  # (a tuple: _bpe has split the text)
        self.allowed = "all" if matched is None else frozenset(matched)
        self.enc = tiktoken.Encoding("bpe", pat_str=self.pat, mergeable_ranks=ranks,
                                     special_tokens={s: len(ids) + j for j, s in enumerate(special)})
        self.vocab_size = max(self.rank_of_id) + 1

    def _encode(self, text, after=False):
        """As HF's tokenizers: the added tokens are found in the raw text first (find_added: with their lstrip, rstrip,
        single_word); each text between them is normalized, then split at the added tokens tokenizer.json marks
        "normalized" (normalized too), and each piece gets ByteLevel's prefix space (not the first, after another
        text) and its BPE."""
        if not (self.normal_form or self.add_prefix_space or self.flags) and self.prefix_free and isinstance(
                self.pattern, str):
            return self._bpe(text, True)                       # tiktoken finds the added tokens itself
        norm = functools.partial(unicodedata.normalize, self.normal_form) if self.normal_form else str
        soft = {norm(s): s for s in self.normalized if s in self.special_ids}  # normalized text -> the token
        soft_flags = {n: self.flags[s] for n, s in soft.items() if s in self.flags}
        hard = alternation(tuple(s for s in self.special_ids if s not in self.normalized))
        ids = []
        for a, b, token in find_added(text, hard, self.flags):
            if token is not None:
                ids.append(self.special_ids[token])
                continue
            part = norm(text[a:b])
            for c, d, found in find_added(part, alternation(tuple(soft)), soft_flags):
                if found is not None:
                    ids.append(self.special_ids[soft[found]])
                elif piece := part[c:d]:
                    space = self.add_prefix_space and (a or c or not after) and piece[0] != " "
                    ids += self._bpe(" " * space + piece)
        return ids

    def _bpe(self, text, specials=False):
        """The ids of text, its added tokens matched whole (specials) or read as plain text."""
        pieces = self._digits(text) if self.split_digits else [text]
        for rx in () if isinstance(self.pattern, str) else self.pattern:
            pieces = [p for piece in pieces for p in isolate(rx, piece)]
        return [self.id_of_rank[r] for p in pieces for r in self._ranks(p, specials)]

    def _ranks(self, text, specials=True):
        """tiktoken's ranks; text holding a byte without a token takes the slow path: HF's BPE drops such bytes and
        merges across the gap, so here each pre-token (GPT-2's regex, as tiktoken splits) loses them before a
        merge loop in Python that joins the adjacent pair whose bytes rank lowest, as tiktoken's does."""
        raw = text.encode("utf-8", errors="surrogatepass")
        if len(raw.translate(None, self.absent)) == len(raw):
            return self.enc.encode(text, allowed_special=self.allowed if specials else set(), disallowed_special=())
        ranks = []
        for i, part in enumerate(self.specials.split(text) if self.specials and specials else [text]):
            if i % 2:  # a special token (split keeps them at the odd places)
                ranks.append(self.enc.encode_single_token(part))
                continue
            for piece in regex.findall(self.pat, part):
                parts = [bytes([b]) for b in piece.encode("utf-8", errors="surrogatepass").translate(None, self.absent)]
                while len(parts) > 1:
                    pairs = [(self.ranks.get(a + b, math.inf), j) for j, (a, b) in enumerate(zip(parts, parts[1:]))]
                    rank, j = min(pairs)
                    if rank == math.inf:
                        break
                    parts[j:j + 2] = [parts[j] + parts[j + 1]]
                ranks += [self.ranks[p] for p in parts]
        return ranks

    @staticmethod
    def _digits(text):  # HF's Digits(individual_digits=True): every numeric character stands alone
        out, start = [], 0
        for i, ch in enumerate(text):
            if unicodedata.category(ch)[0] == "N":
                out += [text[start:i], ch]
                start = i + 1
        return [p for p in out + [text[start:]] if p]

    def decode(self, ids):
        """The text; an id the vocabulary lacks is skipped, as by HF's tokenizers (Qwen2.5's embedding has 271 rows
        past its 151,665 tokens: a generated one was a KeyError)."""
        return self.enc.decode([self.rank_of_id[i] for i in ids if i in self.rank_of_id])


class Llama3Tokenizer(BPETokenizer):
    """Meta's Llama 3 tokenizer.model (its download, or original/ in the Hub's repositories): tiktoken's file, one
    "base64(bytes) rank" line per token, the rank its id; then 256 special tokens. Texts start with
    <|begin_of_text|>. A special token's text written in a text is plain text, as Meta's reference tokenizer.py
    encodes it (tiktoken with disallowed_special=(), what its generation and chat_format call; the Hub's
    tokenizer.json, read by transformers, matches them instead): Meta trained the model so."""
    add_bos = True
    template = ([([128000], 0), ("A", 0)], [([128000], 0), ("A", 0), ([128000], 1), ("B", 1)])  # the Hub's: BOS A BOS B

    def __init__(self, path, scaled_rope):
        ranks, owner = {}, {}  # token -> rank, rank -> token
        with open(path, "rb") as fh:  # read as tiktoken's load_tiktoken_bpe: CRLF, blank lines, a BOM (b64decode
            for n, line in enumerate(fh, 1):  # drops it there) are all one file
                line = line.removeprefix(b"\xef\xbb\xbf") if n == 1 else line
                if not line.strip():
                    continue
                try:
                    token, rank = line.split()
                    token, rank = base64.b64decode(token, validate=True), int(rank)
                except (ValueError, binascii.Error):
                    raise UserError(f"{path}, line {n}: not a 'base64 rank' line of tiktoken's format (damaged or cut "
                                    "off?); fetch it again") from None
                if ranks.setdefault(token, rank) != rank or owner.setdefault(rank, token) != token:
                    raise UserError(f"{path}, line {n}: " + (f"its token again, ranked {ranks[token]} before" if
                                    ranks[token] != rank else f"rank {rank} again, for another token") + " (a damaged "
                                    "file: every token has one rank of its own); fetch it again")
        if sorted(ranks.values()) != list(range(128000)):
            raise UserError(f"{path}: {len(ranks):,} tokens ranked {min(ranks.values(), default=0)}.."
                            f"{max(ranks.values(), default=0)}: not Llama 3's tokenizer (128,000 tokens ranked "
                            "0..127,999), the only tiktoken file lorasp reads")
        names = self.specials_of(scaled_rope)
        self.setup(ranks, list(range(128000)), {s: 128000 + j for j, s in enumerate(names)}, LLAMA3_PATTERN, {})
        self.bos_id, self.eos_id = 128000, 128001
        self.stop_ids = (128001, 128008, 128009) if scaled_rope else (128001, 128009)  # Meta's stop tokens: the end
        # of the text, of a message (3.1 on), of a turn

    @staticmethod
    def specials_of(scaled_rope):
        """The 256 special tokens' names, as Meta's reference tokenizer.py has them: Llama 3's (meta-llama/llama3),
        or 3.1-3.3's (params.json's use_scaled_rope tells them apart): llama-models' llama3/tokenizer.py, one file for
        3.1, 3.2 and 3.3 since 3.2 put <|image|> at 128011 (3.1's first release had <|reserved_special_token_2|>
        there). The Hub's tokenizer.json names 3.1-3.3's 128005 and 128011 on otherwise (transformers' converter):
        a folder with one is read by it. The ids that matter agree: <|begin_of_text|> 128000, <|end_of_text|> 128001,
        the headers 128006/7, <|eot_id|> 128009."""
        named = (["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                  "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>", "<|image|>"] if scaled_rope else
                 ["<|begin_of_text|>", "<|end_of_text|>", *(f"<|reserved_special_token_{i}|>" for i in range(4)),
                  "<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"])
        first = 2 if scaled_rope else 5  # the next reserved token's number
        return named + [f"<|reserved_special_token_{first + i}|>" for i in range(256 - len(named))]


def is_tiktoken_file(path):
    """Whether a tokenizer.model is tiktoken's BPE file (Llama 3's: "base64 rank" lines), not sentencepiece's."""
    with open(path, "rb") as fh:
        return re.match(TIKTOKEN_LINE, fh.read(200)) is not None


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

    def _encode(self, text, after=False):
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
            word = "".join(c.lower() for c in word) if self.lower else word  # a character at a time, as HF's
            # tokenizers library (str.lower() turns a word's last capital sigma into "ς": other tokens than HF's)
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

    def normalized(self, ch):
        """One character as words() leaves it inside a word: dropped (NUL, U+FFFD, control), lower-cased, accents
        stripped."""
        if ch.isascii():                                       # the common case, fast: printable or a control character
            return (ch.lower() if self.lower else ch) if ch.isprintable() else ""
        if ord(ch) == 0xFFFD or unicodedata.category(ch)[0] == "C":
            return ""
        ch = ch.lower() if self.lower else ch
        return "".join(c for c in unicodedata.normalize("NFD", ch) if unicodedata.category(c) != "Mn") \
            if self.strip_accents else ch

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
    """A byte-level BPE tokenizer.json (HF `tokenizers`; the BOS and EOS its TemplateProcessing puts around a text), or
    T5's Unigram one; other pre-tokenizers, and a BPE's normalizer, are refused rather than guessed."""
    t = read_json(path)
    if not isinstance(t, dict) or not isinstance(t.get("model"), dict):
        raise ValueError(f"{path}: no \"model\" object: not a tokenizer.json of the tokenizers library")
    if t["model"].get("type") == "Unigram":
        return unigram_json(t, path)
    pre = t.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    digits = kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits")
    byte_level = (kinds == ["ByteLevel"] or digits) and steps[-1].get("use_regex", True)
    split = len(kinds) > 1 and kinds == ["Split"] * (len(kinds) - 1) + ["ByteLevel"] and all(
        s.get("behavior") == "Isolated" and not s.get("invert") and "Regex" in (s.get("pattern") or {})
        for s in steps[:-1]) and steps[-1].get("use_regex") is False  # Llama 3's one regex; several: in turn
    regexes = tuple(s["pattern"]["Regex"] for s in steps[:-1]) if split else ()  # (save_tokenizer's Falcon, DeepSeek)
    pattern = (regexes[0] if len(regexes) == 1 else regexes) if split else GPT2_PATTERN
    byte_level = byte_level or split
    if (digits or split) and steps[-1].get("add_prefix_space"):  # (ours: one space a text, as ByteLevel alone gives)
        raise NotImplementedError(f"{path}: ByteLevel's add_prefix_space after a {kinds[0]} pre-tokenizer (tokenizers "
                                  "gives each of its pieces a space) is not supported")
    if t["model"].get("type") == "BPE" and not byte_level and metaspace_bpe(t):
        return post_processor(sentencepiece_json(t, path), t)
    if t["model"].get("type") != "BPE" or not byte_level:
        spm = "Metaspace" in kinds or t["model"].get("byte_fallback")  # Llama's, Mistral's sentencepiece as JSON
        raise NotImplementedError(f"{path}: only byte-level BPE with GPT-2's regex or one Split regex (Llama 3's) "
                                  f"is supported (found {kinds})" + (
            "; a sentencepiece tokenizer saved as tokenizer.json: copy the base model's tokenizer.model into "
            f"{os.path.dirname(path)}" if spm else ""))
    norm = t.get("normalizer") or {}  # HF applies it before the BPE: a Unicode normal form is applied here too
    forms = (norm.get("normalizers") or [] if norm.get("type") == "Sequence" else [norm]) if norm else []
    if len(forms) > 1 or forms and forms[0].get("type") not in ("NFC", "NFD", "NFKC", "NFKD"):
        parts = [s.get("type") for s in norm.get("normalizers", [])] if norm.get("type") == "Sequence" else []
        raise NotImplementedError(f"{path}: normalizer {norm.get('type')}{parts or ''} is not applied by lorasp (the "
                                  "ids of any text it changes would differ from the tokenizers library's)")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in t["model"]["merges"]]
    added = {a["content"]: a["id"] for a in t.get("added_tokens", [])}
    tok = BPETokenizer(t["model"]["vocab"], merges, bool(digits), steps[-1].get("add_prefix_space", False), added,
                       pattern, only_specials=True)            # (HF matches its added_tokens, nothing else, whole)
    tok.normal_form, tok.normalized = forms[0]["type"] if forms else None, soft_tokens(t.get("added_tokens", []))
    tok.flags = strip_flags(t.get("added_tokens", []))
    return post_processor(tok, t)


def post_processor(tok, t):
    """tok with the BOS and EOS that tokenizer.json's TemplateProcessing puts around a text, and its pair template."""
    post = t.get("post_processor") or {}
    template = next((p for p in (post.get("processors") or [] if post.get("type") == "Sequence" else [post])
                     if p.get("type") == "TemplateProcessing"), None)
    if template:  # a BOS the template puts before every text ("<|endoftext|> $A"), an EOS after ("$A </s>")
        marks = {k: v["ids"] for k, v in template.get("special_tokens", {}).items()}
        steps = [[(marks[s["SpecialToken"]["id"]], s["SpecialToken"].get("type_id", 0)) if "SpecialToken" in s else
                  (s["Sequence"]["id"], s["Sequence"].get("type_id", 0)) for s in template.get(k) or []]
                 for k in ("single", "pair")]  # Llama 3's: BOS A (BOS B)
        order = [part if part in ("A", "B") else None for part, _ in steps[1]]
        between = {"A", "B"} <= set(order) and abs(order.index("B") - order.index("A")) > 1
        # a pair joined with nothing (transformers 5 saves GPT-2's "$A $B:1"): our marks, as for the Hub's GPT-2 (a
        # classifier must see where A ends, and its last token read both: docs/paper-experiments.md)
        tok.template = tuple(steps) if all(steps) and between else None
        single = template.get("single") or [{}]
        first, last = (single[i].get("SpecialToken") for i in (0, -1))
        tok.add_bos, tok.add_eos = first is not None, last is not None
        if first:
            tok.bos_id = template["special_tokens"][first["id"]]["ids"][0]
        if last:
            tok.eos_id = template["special_tokens"][last["id"]]["ids"][0]
    return tok


def sentencepiece_model(pieces, scores, types, unigram, byte_fallback=False, add_dummy_prefix=True,
                        remove_extra_whitespaces=False, charsmap=b""):
    """The bytes of a sentencepiece ModelProto (what a tokenizer.model file holds), written by hand in protobuf's wire
    format: each field a key varint (number << 3 | wire type) then a varint (0), length-prefixed bytes (2) or a
    little-endian float (5). ModelProto: pieces 1 (piece 1, score 2, type 3: 1 normal, 2 unknown, 3 control,
    4 user-defined, 6 byte), trainer_spec 2 (model_type 3: 1 unigram, 2 BPE; vocab_size 4; byte_fallback 35),
    normalizer_spec 3 (name 1, precompiled_charsmap 2, add_dummy_prefix 3, remove_extra_whitespaces 4,
    escape_whitespaces 5). A GGUF's metadata keeps what encoding needs of these."""
    def varint(n):
        out = bytearray()
        while n > 0x7F:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        return bytes(out + bytes([n]))

    def field(number, value):
        if isinstance(value, float):
            return varint(number << 3 | 5) + struct.pack("<f", value)
        if isinstance(value, (bytes, str)):
            value = value.encode("utf-8", errors="surrogateescape") if isinstance(value, str) else value
            return varint(number << 3 | 2) + varint(len(value)) + value
        return varint(number << 3) + varint(int(value))
    model = b"".join(field(1, field(1, p) + field(2, float(s)) + field(3, t)) for p, s, t in zip(pieces, scores, types))
    model += field(2, field(3, 1 if unigram else 2) + field(4, len(pieces)) + field(35, byte_fallback))
    return model + field(3, field(1, "gguf" if not charsmap else "precompiled") + field(2, charsmap) + field(
        3, add_dummy_prefix) + field(4, remove_extra_whitespaces) + field(5, True))


def sentencepiece_settings(proto):
    """What a sentencepiece ModelProto's bytes say of how it encodes (read by hand: sentencepiece_model's wire format,
    a field given twice the last one wins, as protobuf merges): model_type (1 unigram, the default; 2 BPE),
    add_dummy_prefix, remove_extra_whitespaces (both default true), the normalizer's precompiled charsmap, and the
    user-defined pieces (type 4, which sentencepiece matches whole in text)."""
    def fields(b):
        i = 0
        while i < len(b):
            key, i = varint(b, i)
            if key & 7 == 0:
                value, i = varint(b, i)
            elif key & 7 == 2:
                n, i = varint(b, i)
                value, i = b[i:i + n], i + n
            else:                                              # 1: 8 bytes, 5: 4 bytes (a score)
                value, i = None, i + (8 if key & 7 == 1 else 4)
            yield key >> 3, value

    def varint(b, i):
        n = shift = 0
        while True:
            n, i, shift = n | (b[i] & 0x7F) << shift, i + 1, shift + 7
            if b[i - 1] < 0x80:
                return n, i
    out = dict(model_type=1, add_dummy_prefix=True, remove_extra_whitespaces=True, charsmap=b"", user_defined=[])
    names = {(2, 3): "model_type", (3, 2): "charsmap", (3, 3): "add_dummy_prefix", (3, 4): "remove_extra_whitespaces"}
    for number, value in fields(proto):
        if number == 1:                                        # a piece: piece 1, score 2, type 3 (1: normal)
            piece = dict(fields(value))
            if piece.get(3) == 4:
                out["user_defined"].append(piece[1].decode("utf-8", errors="surrogateescape"))
        elif number in (2, 3):
            out |= {names[number, k]: v for k, v in fields(value) if (number, k) in names}
    return out | {k: bool(out[k]) for k in ("add_dummy_prefix", "remove_extra_whitespaces")}


def metaspace_bpe(t):
    """Whether a BPE tokenizer.json is sentencepiece's BPE as transformers writes it (Llama's, Mistral's: what
    transformers 5 saves with no tokenizer.model): Metaspace ("▁" for spaces, the prefix once or before each text), or
    the older form, normalizers Prepend("▁") then Replace(" ", "▁"); returns "first", "always" or "prepend" (that
    normalizer: "▁" before each text, even one that starts with a space), or None. sentencepiece_tokenizer_json's
    three Metaspace steps (what lorasp writes beside a tokenizer.model, as transformers saves it again): "prepend"
    (Phi-3's), "spm first" (the "▁" before the first text, even one that starts with a space) or "spm legacy" (that,
    and before each later text that does not)."""
    pre, norm = t.get("pre_tokenizer") or {}, t.get("normalizer") or {}
    if pre.get("type") == "Sequence" and len(pre.get("pretokenizers") or []) == 1:  # (transformers 5's, one step)
        pre = pre["pretokenizers"][0]
    if pre.get("type") == "Metaspace" and pre.get("replacement", "▁") == "▁" and not norm and not pre.get("split"):
        scheme = pre.get("prepend_scheme", "always" if pre.get("add_prefix_space", True) else "never")
        return scheme if scheme in ("first", "always") else None
    if pre.get("type") == "Sequence" and not norm:
        steps = [(s.get("type"), s.get("replacement"), s.get("prepend_scheme"), s.get("split")) for s in
                 pre.get("pretokenizers") or []]
        forms = {("never", "always", "never"): "prepend", ("never", "first", "never"): "spm first",
                 ("never", "first", "always"): "spm legacy"}
        if [s[:2] for s in steps] == [("Metaspace", "▁"), ("Metaspace", " "), ("Metaspace", "▁")] and not any(
                s[3] for s in steps):
            return forms.get(tuple(s[2] for s in steps))
    steps = norm.get("normalizers") or [] if norm.get("type") == "Sequence" else [norm]
    return "prepend" if not pre and [s.get("type") for s in steps] == ["Prepend", "Replace"] and steps[0].get(
        "prepend") == "▁" and steps[1].get("pattern") == {"String": " "} and steps[1].get("content") == "▁" else None


def sentencepiece_json(t, path):
    """Sentencepiece's BPE saved as tokenizer.json (vocabulary, merges, byte fallback) -> a sentencepiece model over
    the same pieces: sentencepiece merges the adjacent pair whose merged piece scores highest, the tokenizers library
    the pair whose merge comes first, so a piece's score is minus the rank of the first merge that makes it. That is
    the same only where every split of a piece into two pieces is a merge (transformers writes them all); a file whose
    merges leave one out is refused."""
    vocab, merges = t["model"]["vocab"], t["model"]["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
    made = {}
    for rank, (left, right) in enumerate(merges):
        made.setdefault(left + right, rank)
    pairs = set(merges)
    for piece in made:
        if gap := next(((piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in
                        vocab and (piece[:k], piece[k:]) not in pairs), None):
            raise NotImplementedError(f"{path}: the merges make {piece!r} but not from {gap}: not sentencepiece's BPE")
    added = {a["content"]: a for a in t.get("added_tokens", [])}
    unk, fallback = t["model"].get("unk_token") or "<unk>", t["model"].get("byte_fallback", False)
    pieces = sorted(vocab, key=vocab.get)
    if [vocab[p] for p in pieces] != list(range(len(pieces))):
        raise ValueError(f"{path}: the vocabulary's ids are not 0..{len(pieces) - 1}")
    types = [2 if p == unk else (3 if added[p].get("special") else 4) if p in added else
             6 if fallback and re.fullmatch(r"<0x[0-9A-F]{2}>", p) else 1 if p in made or len(p) == 1 else 5
             for p in pieces]  # 5, unused: no merge makes it, so the tokenizers library never gives it
    if 2 not in types:
        raise NotImplementedError(f"{path}: no unknown token {unk!r} in the vocabulary (sentencepiece needs one)")
    scheme = metaspace_bpe(t)
    tok = SentencePieceTokenizer(path, proto=sentencepiece_model(
        pieces, [-float(made.get(p, 0)) if p in made else 0.0 for p in pieces], types, False, fallback),
        added={p: a["id"] for p, a in added.items()}, prefix_each=scheme not in ("first", "spm first"))
    tok.prepend, tok.metaspace, tok.flags = scheme == "prepend", scheme in ("first", "always"), strip_flags(
        t.get("added_tokens", []))
    return tok


def unigram_json(t, path):
    """T5's tokenizer.json (a Unigram model, sentencepiece's normalizer as a precompiled charsmap, Metaspace) -> a
    T5Tokenizer over the same pieces; its trailing <extra_id_N> entries are T5Tokenizer's sentinels. Without them
    (XLM-R's: multilingual-e5, bge-m3) a sentencepiece model of all its pieces, its added tokens (<mask>) matched
    whole, the post-processor's <s> A </s>."""
    norm, pre, vocab = t.get("normalizer") or {}, t.get("pre_tokenizer") or {}, t["model"]["vocab"]
    steps = norm.get("normalizers", []) if norm.get("type") == "Sequence" else [norm]
    kinds = [s.get("type") for s in steps]
    if pre.get("type") != "Metaspace" or not set(kinds) <= {"Precompiled", "Replace"} or any(
            s["type"] == "Replace" and s["pattern"] != {"Regex": " {2,}"} for s in steps):
        raise NotImplementedError(f"{path}: only T5's Unigram tokenizer.json is supported (found {kinds}, {pre})")
    n = len(vocab) - sum(bool(re.fullmatch(r"<extra_id_\d+>", p)) for p, _ in vocab)
    if any(re.fullmatch(r"<extra_id_\d+>", p) for p, _ in vocab[:n]):
        raise NotImplementedError(f"{path}: <extra_id_N> sentinels must come last, as T5's do")
    added = {a["content"]: a for a in t.get("added_tokens", [])}
    types = [2 if i == t["model"].get("unk_id") else (3 if added[p].get("special") else 4) if p in added else 1
             for i, (p, _) in enumerate(vocab[:n])]
    charsmap = next((base64.b64decode(s["precompiled_charsmap"]) for s in steps if s["type"] == "Precompiled"), b"")
    scheme = pre.get("prepend_scheme", "always" if pre.get("add_prefix_space", True) else "never")
    proto = sentencepiece_model([p for p, _ in vocab[:n]], [x for _, x in vocab[:n]], types, True,
                                t["model"].get("byte_fallback", False), scheme != "never", "Replace" in kinds, charsmap)
    if n < len(vocab):
        return T5Tokenizer(path, extra_ids=len(vocab) - n, proto=proto)
    # (Metaspace's "▁" before each text between added tokens: "a <mask> b")
    tok = SentencePieceTokenizer(path, proto=proto, added={p: a["id"] for p, a in added.items()},
                                 prefix_each=scheme == "always")
    tok.prepend, tok.flags = scheme == "always" and "Replace" in kinds, strip_flags(t.get("added_tokens", []))
    tok.metaspace = "Replace" not in kinds     # (spaces kept: a text's own leading space is its "▁")
    return post_processor(tok, t)


DEEPSEEK_LETTERS = (  # DeepSeek LLM's letters (its tokenizer.json's second Split, as llama.cpp copies it)
    "A-Za-z\xb5\xc0-\xd6\xd8-\xf6\xf8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373"
    "\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
    "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-"
    "\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d"
    "\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4"
    "\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec"
    "\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126"
    "\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184"
    "\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-"
    "\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a"
    "\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-"
    "\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943")
CJK_RUN = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
# GGUF's pre-tokenizer name -> (digits split one by one, regex or a tuple of regexes applied in turn, normal form), as
# llama.cpp splits (llama-vocab.cpp) and the model's own tokenizer normalizes (NFC: transformers' CohereTokenizer,
# GPTNeoXTokenizer for MPT, Qwen2's tokenizer.json); each checked against llama.cpp's expected ids
# (tests/test_real_tokenizers.py). "default" (or none named): GPT-2's, as transformers reads such a file
GGUF_PRE = {"default": (False, GPT2_PATTERN, None), "gpt-2": (False, GPT2_PATTERN, None),
            "smollm": (True, GPT2_PATTERN, None), "starcoder": (True, GPT2_PATTERN, None),
            "refact": (True, GPT2_PATTERN, None), "command-r": (True, GPT2_PATTERN, "NFC"),
            "mpt": (False, GPT2_PATTERN, "NFC"), "llama-bpe": (False, LLAMA3_PATTERN, None),
            "qwen2": (False, LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}"), "NFC"),  # one digit a pre-token
            "qwen35": (False, LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}").replace(r"?\p{L}+", r"?[\p{L}\p{M}]+")
                       .replace(r"[^\s\p{L}\p{N}]+[\r\n]*", r"[^\s\p{L}\p{M}\p{N}]+[\r\n]*"), None),
            "falcon": (False, (r"[\p{P}\$\+<=>\^~\|`]+", GPT2_PATTERN, r"[0-9][0-9][0-9]"), None),
            "deepseek-llm": (False, (r"[\r\n]", rf"\s?[{DEEPSEEK_LETTERS}]+", r"\s?[!-/:-~"
                                     "\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+", r"\s+$", CJK_RUN,
                                     r"\p{N}+"), None),
            "deepseek-coder": (False, (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", CJK_RUN, r"\p{N}"), None)}


def gguf_tokenizer(path):
    """The tokenizer in a GGUF file's metadata, with its special ids: byte-level BPE ("gpt2": tokens, merges and the
    pre-tokenizer's name), sentencepiece ("llama": BPE pieces, scores and types, as a tokenizer.model written here;
    "t5": a Unigram model the same way, T5's or XLM-R's) or BERT's WordPiece ("bert")."""
    meta = read_gguf(path)[0]
    kind = meta.get("tokenizer.ggml.model")

    def need(key):  # a list the tokenizer is built from (a KeyError or TypeError from deep inside, else)
        if not isinstance(v := meta.get(f"tokenizer.ggml.{key}"), list):
            raise ValueError(f"{path}: GGUF metadata tokenizer.ggml.{key} is " + ("missing" if v is None else
                             f"a {type(v).__name__}, not a list") + f" (the {kind} tokenizer is built from it)")
        return v
    if kind == "gpt2":
        pre, tokens, types = meta.get("tokenizer.ggml.pre", "default"), need("tokens"), need("token_type")
        if pre not in GGUF_PRE:
            raise NotImplementedError(f"{path}: GGUF pre-tokenizer {pre!r} is not supported ({', '.join(GGUF_PRE)})")
        if pre == "default":
            print(f"{path}: GGUF names no BPE pre-tokenizer (tokenizer.ggml.pre {meta.get('tokenizer.ggml.pre')!r}): "
                  "splitting text as GPT-2 does, as transformers reads it (llama.cpp splits such a file its own way "
                  "and warns that generation degrades: ids can differ from llama.cpp's)")
        vocab = {}
        for i, t in enumerate(tokens):
            vocab.setdefault(t, i)                             # (DeepSeek's added "õ" is also a byte's token)
        digits, pattern, tok_form = GGUF_PRE[pre]
        marks = [meta.get(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "unknown", "padding")]
        tok = BPETokenizer(vocab, [tuple(m.split(" ")) for m in need("merges")], digits, pattern=pattern, specials={
            t: i for i, (t, k) in enumerate(zip(tokens, types)) if k in (3, 4) or i in marks}, only_specials=True)
        # control and user-defined tokens, and BOS/EOS/... whatever their type (Aquila's <|endoftext|> is "normal";
        # llama.cpp and transformers match it too): matched whole in text
        tok.normal_form = tok_form
    elif kind in ("llama", "t5"):  # t5: a Unigram model (T5's, XLM-R's), llama.cpp's UGM
        tokens, g = need("tokens"), lambda key, default: meta.get(f"tokenizer.ggml.{key}", default)  # noqa: E731
        phi3 = meta.get("general.architecture") == "phi3"
        # sentencepiece wants one unknown piece: Phi-3's file marks <unk> control and its 53 pads unknown
        unk = g("unknown_token_id", 0)
        types = [2 if i == unk else 5 if t == 2 else t for i, t in enumerate(need("token_type"))]
        # control and user-defined tokens are matched whole (Phi-3's <|user|>); after one, "▁" again for Phi-3 (its
        # Prepend normalizer, per text between them) and a Unigram model (llama.cpp's UGM normalizes each text
        # between them, as HF's Metaspace "always": XLM-R's "a <mask> b" -> "▁b"); elsewhere none, as transformers
        each = phi3 or kind == "t5"
        tok = SentencePieceTokenizer(path, proto=sentencepiece_model(
            tokens, need("scores"), types, kind == "t5", 6 in types, g("add_space_prefix", True),
            g("remove_extra_whitespaces", False), bytes(b % 256 for b in g("precompiled_charsmap", []))),
            added={t: i for i, (t, k) in enumerate(zip(tokens, types)) if k in (3, 4)}, prefix_each=each)
        tok.prepend = each
        if phi3:  # Phi-3's tokenizer_config.json: rstrip on its chat markers and </s> (llama.cpp sets the same)
            plain = ("<unk>", "<s>", "<|endoftext|>")
            tok.flags = {t: (False, True, False) for t in tok.added if t not in plain}
    elif kind == "bert":
        return bert_gguf(path, meta, need("tokens"), need("token_type"))
    else:
        raise NotImplementedError(f"{path}: GGUF tokenizer model {kind!r} is not supported (gpt2: BPE, llama: SPM, "
                                  "t5: Unigram, bert: WordPiece)")
    tok.add_bos = meta.get("tokenizer.ggml.add_bos_token", tok.add_bos and kind != "t5")
    tok.add_eos = meta.get("tokenizer.ggml.add_eos_token", kind == "t5")  # (llama.cpp's defaults: UGM adds EOS)
    for key, name in (("bos_id", "bos_token_id"), ("eos_id", "eos_token_id"), ("pad_id", "padding_token_id")):
        setattr(tok, key, meta.get(f"tokenizer.ggml.{name}", getattr(tok, key)))
    return eos_note(tok, f"{path}: GGUF's tokenizer.ggml.add_eos_token")


def bert_gguf(path, meta, tokens, types):
    """BERT's WordPiece as llama.cpp's converter writes it: a word's first piece as "▁piece", a continuation bare
    (vocab.txt's "##piece"), control tokens ([CLS]) and, from older converters, every "[...]" ([unused0]) as they
    are; its BertNormalizer's lowercase / strip_accents flags where the file has them (older files do not: llama.cpp
    lower-cases and strips accents then, as here)."""
    vocab = {}
    for i, (t, k) in enumerate(zip(tokens, types)):
        kept = k == 3 or t.startswith("[") and t.endswith("]")
        vocab.setdefault(t if kept else t[1:] if t.startswith("▁") else "##" + t, i)
    lower = meta.get("tokenizer.ggml.normalizer.lowercase", True)
    tok = WordPieceTokenizer(vocab, lower, meta.get("tokenizer.ggml.normalizer.strip_accents", lower))
    g = lambda key: meta.get(f"tokenizer.ggml.{key}_token_id")  # noqa: E731
    tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id = (i if (i := g(k)) is not None else getattr(tok, a) for k, a in (
        ("cls", "bos_id"), ("seperator", "eos_id"), ("padding", "pad_id"), ("unknown", "unk_id")))  # (GGUF's spelling)
    return tok


def token_name(tok):
    """id -> the token's text (None: no token) of a byte-level BPE (vocabulary and added tokens) or a sentencepiece
    model (its pieces, then the added tokens past them): what tokenizer_config.json names BOS/EOS/UNK/PAD by."""
    if type(tok) is BPETokenizer:
        return ({i: s for s, i in tok.special_ids.items()} | {i: s for s, i in tok.vocab.items()}).get
    return lambda i: tok.sp.id_to_piece(i) if i < tok.sp.get_piece_size() else tok.beyond.get(i)


def write_tokenizer_config(directory, tok, tokenizer_class, unk=None, pad=True, **more):
    """tokenizer_config.json, the one writer of it (save_tokenizer's, hf_tokenizer's, llama_tokenizer_config's):
    tokenizer_class, whether texts get BOS/EOS (tok's add_bos/add_eos), BOS, EOS, UNK (the id unk) and PAD (pad)
    by name, no clean-up of spaces in decoding (transformers before 4.45 defaulted to it: "a ." became "a."), and more
    (legacy; None: left out). transformers needs no special_tokens_map.json. Returns the names {"bos": text, ...}."""
    name, ids = token_name(tok), dict(bos=tok.bos_id, eos=tok.eos_id, unk=unk, pad=tok.pad_id if pad else None)
    names = {k: s for k, i in ids.items() if i is not None and (s := name(i)) is not None}
    config = dict(tokenizer_class=tokenizer_class, add_bos_token=tok.add_bos, add_eos_token=tok.add_eos,
                  clean_up_tokenization_spaces=False, **more, **{f"{k}_token": s for k, s in names.items()})
    with atomic_write(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({k: v for k, v in config.items() if v is not None}, f, indent=2, ensure_ascii=False)
    return names


def save_tokenizer(tok, directory, **config):
    """A GGUF's tokenizer as files load_tokenizer and transformers read back to the same ids (a model saved from a
    .gguf is then a checkpoint of its own): sentencepiece's as tokenizer.model and, for transformers, a tokenizer.json
    of the same ids (sentencepiece_tokenizer_json; else a note), byte-level BPE's as tokenizer.json;
    tokenizer_config.json names BOS/EOS/PAD and whether texts get them (config: write_tokenizer_config's arguments
    over these; hf_tokenizer's); config.json (if there) their ids."""
    if type(tok) not in (BPETokenizer, SentencePieceTokenizer):  # (the others: read from files, saved as copies)
        raise NotImplementedError(f"save_tokenizer: a {type(tok).__name__} is not written (its files are copied)")
    token = token_name(tok)
    names = {k: name for k, i in (("bos", tok.bos_id), ("eos", tok.eos_id), ("pad", tok.pad_id))
             if i is not None and (name := token(i)) is not None}
    spm, t = type(tok) is SentencePieceTokenizer, None
    if spm:
        with atomic_write(os.path.join(directory, "tokenizer.model")) as f:
            f.write(tok.sp.serialized_model_proto())
        t = sentencepiece_json_or_note(tok, directory)
    else:
        digits, pattern = tok.split_digits, tok.pattern
        if digits and pattern != GPT2_PATTERN:
            raise NotImplementedError("save_tokenizer: digits split one by one before a regex other than GPT-2's")
        level = dict(type="ByteLevel", add_prefix_space=tok.add_prefix_space, trim_offsets=True,
                     use_regex=pattern == GPT2_PATTERN)
        pre = [dict(type="Digits", individual_digits=True)] * digits + [level] if pattern == GPT2_PATTERN else [
            dict(type="Split", pattern={"Regex": r}, behavior="Isolated", invert=False) for r in (
                (pattern,) if isinstance(pattern, str) else pattern)] + [level]
        mark = lambda k, t: [{"SpecialToken": {"id": names[k], "type_id": t}}] if k in names else []  # noqa: E731
        bos, eos = "bos" if tok.add_bos else None, "eos" if tok.add_eos else None
        t = {"version": "1.0", "truncation": None, "padding": None,
             "added_tokens": [dict(id=i, content=s, **dict(zip(FLAGS, tok.flags.get(s, (False,) * 3))),
                                   normalized=s in tok.normalized, special=True) for s, i in tok.special_ids.items()],
             "normalizer": {"type": tok.normal_form} if tok.normal_form else None,
             "pre_tokenizer": {"type": "Sequence", "pretokenizers": pre} if len(pre) > 1 else pre[0],
             "post_processor": {"type": "TemplateProcessing",
                                "single": mark(bos, 0) + [{"Sequence": {"id": "A", "type_id": 0}}] + mark(eos, 0),
                                "pair": mark(bos, 0) + [{"Sequence": {"id": "A", "type_id": 0}}] + mark(eos, 0)
                                + mark(bos, 1) + [{"Sequence": {"id": "B", "type_id": 1}}] + mark(eos, 1),
                                "special_tokens": {names[k]: dict(id=names[k], ids=[getattr(tok, f"{k}_id")],
                                                                  tokens=[names[k]]) for k in (bos, eos) if k}},
             "decoder": dict(level, use_regex=True),
             "model": dict(type="BPE", dropout=None, unk_token=None, continuing_subword_prefix=None,
                           end_of_word_suffix=None, fuse_unk=False, byte_fallback=False, ignore_merges=True,
                           vocab=tok.vocab, merges=[list(m) for m in tok.merges])}  # (ignore: a pre-token in the
        # vocabulary is one token, as tiktoken takes it here and Llama 3's tokenizer.json says: Llama 3's " Việt")
    if t is not None:                                     # (sentencepiece's: beside the tokenizer.model lorasp and
        with atomic_write(os.path.join(directory, "tokenizer.json"), "w") as f:  # llama.cpp's converter read)
            json.dump(t, f, ensure_ascii=False)
    write_tokenizer_config(directory, tok, **dict(tokenizer_class="LlamaTokenizer" if t is None else
                                                  "PreTrainedTokenizerFast", legacy=tok.prefix_each if t is None else
                                                  None, unk=tok.sp.unk_id() if spm else None) | config)
    # (tokenizer.json decides where there is one: transformers' fast tokenizer; else a GGUF's legacy false: no "▁"
    # after </s>)
    if os.path.exists(path := os.path.join(directory, "config.json")):
        ids = {f"{k}_token_id": getattr(tok, f"{k}_id") for k in names}
        with atomic_write(path, "w") as f:
            json.dump(read_json(path) | ids, f, indent=2)


def llama_tokenizer_config(tok, directory):
    """A checkpoint folder whose tokenizer is a tokenizer.model alone (Meta's layout, the demo's model; a
    generation_config.json, which says nothing of the tokenizer, may be beside it): transformers' AutoTokenizer would
    add no BOS. A Llama's or Mistral's (config.json's model_type: transformers builds a LlamaTokenizer, not a T5's)
    gets a tokenizer_config.json saying what ours does, and a tokenizer.json of sentencepiece's ids (transformers 5's
    LlamaTokenizer on the model alone departs from them). export.py's DIR and train.py --method full's OUT/model."""
    present = [f for f in TOKENIZER_FILES if os.path.isfile(os.path.join(directory, f))]
    config = os.path.join(directory, "config.json")
    kind = read_json(config).get("model_type") if os.path.isfile(config) else None
    if present == ["tokenizer.model"] and type(tok) is SentencePieceTokenizer and kind in ("llama", "mistral"):
        if (t := sentencepiece_json_or_note(tok, directory)) is not None:  # (transformers' LlamaTokenizer on the
            with atomic_write(os.path.join(directory, "tokenizer.json"), "w") as f:  # model alone: other ids for
                json.dump(t, f, ensure_ascii=False)     # " a" and runs of spaces)
        write_tokenizer_config(directory, tok, "LlamaTokenizer" if t is None else "PreTrainedTokenizerFast",
                               unk=tok.sp.unk_id(), pad=False, legacy=tok.prefix_each if t is None else None)
        # (legacy: "▁" after </s> as ours; transformers 5 assumes none)


def sentencepiece_json_or_note(tok, directory):
    """sentencepiece_tokenizer_json(tok), or None with a note that transformers reads directory's tokenizer.model
    alone, to ids that may differ from the run's."""
    try:
        return sentencepiece_tokenizer_json(tok)
    except NotImplementedError as e:
        print(f"note: {directory}: {e}; transformers reads its tokenizer.model alone, and may give other ids than "
              "lorasp and sentencepiece on a text that starts with a space or holds a run of spaces", file=sys.stderr)


def tokenizer_files(path, name=None):
    """{file: sha256} of a base's tokenizer files: TOKENIZER_FILES in its folder (each one looked at: null where
    absent, so a record says which it checked), and a .gguf's tokenizer.* metadata as "NAME's tokenizer"
    (checkpoint.files_fingerprint samples the file's ends, and a vocabulary runs for megabytes; NAME: the one
    files_fingerprints keeps). resume.restore names them when the tokenized examples changed but the records may not
    have; train.py's adapter keeps them, and evalcli.base_quant warns where they differ."""
    out = {}
    for f in TOKENIZER_FILES if os.path.isdir(path) else ():
        out[f] = None
        if os.path.isfile(os.path.join(path, f)):
            with open(os.path.join(path, f), "rb") as fh:
                out[f] = hashlib.sha256(fh.read()).hexdigest()
    try:
        gguf = gguf_file(path)
    except ValueError:                                         # (several: load_pretrained says which to pass)
        gguf = None
    if gguf:
        meta = {k: v for k, v in read_gguf(gguf)[0].items() if k.startswith("tokenizer.")}
        named = name if name and os.path.isfile(path) else os.path.basename(gguf)
        out[f"{named}'s tokenizer"] = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
    return out


def tokenizer_changes(old, now):
    """What differs between two tokenizer_files records, said ("tokenizer.model differs, tokenizer.json is new");
    "" when they are the same. A file the old record did not look at is not checked (tokenizer_unchecked): a record
    made before added_tokens.json (encoder.json, vocab.bpe) was hashed lists the files of HASHED_BEFORE it found."""
    seen = set(old) | set(HASHED_BEFORE) | {f for f in now if f.endswith("'s tokenizer")}  # (a .gguf's: always)
    return ", ".join(f + (" is new" if old.get(f) is None else " is missing" if now.get(f) is None else " differs")
                     for f in sorted(seen) if old.get(f) != now.get(f))


def tokenizer_unchecked(old, now):
    """The files of a tokenizer_files record `now` that the old record did not look at (a record made before they
    were hashed), present now: not checked, neither same nor changed."""
    return sorted(f for f, sha in now.items() if sha is not None and f not in old and f not in HASHED_BEFORE
                  and not f.endswith("'s tokenizer"))


def eos_note(tok, setting):
    """Say where we follow a tokenizer that ends every text with EOS, and where not (transformers' adds it to a
    prompt too: the model would see the text end before its answer)."""
    if tok.add_eos and tok.eos_id is not None:
        print(f"{setting}: every text ends with EOS ({tok.eos_id}) in lorasp too where the model learns or is scored "
              "on it (a record's response, a text line, a perplexity document), as transformers encodes it; not a "
              "prompt it continues (generation, MMLU): there it would end the text before the answer")
    return tok


def added_tokens(directory):
    """A sentencepiece checkpoint's added tokens {text: id} (tokenizer.json's, else added_tokens.json's), whether
    the text after one gets sentencepiece's "▁" prefix again (yes in transformers' legacy mode, no where
    tokenizer.json's Metaspace prepends it once (prepend_scheme "first") or tokenizer_config.json says legacy false),
    and their strip_flags (tokenizer.json's, else tokenizer_config.json's added_tokens_decoder)."""
    f = lambda name: os.path.join(directory, name)  # noqa: E731
    if os.path.exists(f("tokenizer.json")):
        t = read_json(f("tokenizer.json"))
        pre = t.get("pre_tokenizer") or {}
        steps = pre.get("pretokenizers") or [] if pre.get("type") == "Sequence" else [pre]  # (hf_tokenizer's: 3 steps)
        schemes = [s.get("prepend_scheme") for s in steps if s.get("type") == "Metaspace"]
        once = "first" in schemes and "always" not in schemes  # (sentencepiece_tokenizer_json's legacy: both)
        added = t.get("added_tokens", [])
        return {a["content"]: a["id"] for a in added}, not once, strip_flags(added)
    config = read_json(f("tokenizer_config.json")) if os.path.exists(f("tokenizer_config.json")) else {}
    added = read_json(f("added_tokens.json")) if os.path.exists(f("added_tokens.json")) else {}
    flags = strip_flags((config.get("added_tokens_decoder") or {}).values())
    return added, config.get("legacy", True), flags  # transformers' slow LlamaTokenizer: legacy unless told otherwise


def slow_bpe(directory, vocab, merges):
    """vocab.json + merges.txt (a slow tokenizer's save, no tokenizer.json): GPT-2's pre-tokenizer, or where
    transformers builds a Qwen2Tokenizer (tokenizer_config.json's tokenizer_class, else config.json's model_type qwen2
    or qwen3) Qwen2's: its regex (one digit a pre-token), NFC first, and the added tokens tokenizer_config.json
    lists."""
    def read(name):  # {} where absent or not an object (load_tokenizer names a damaged one)
        j = read_json(os.path.join(directory, name)) if os.path.exists(os.path.join(directory, name)) else {}
        return j if isinstance(j, dict) else {}
    cfg = read("tokenizer_config.json")
    if (cfg.get("tokenizer_class") or read("config.json").get("model_type")) not in ("Qwen2Tokenizer",
                                                                                      "Qwen2TokenizerFast", "qwen2",
                                                                                      "qwen3"):
        return BPETokenizer(read_json(vocab), read_merges(merges))
    added = {a["content"]: int(i) for i, a in (cfg.get("added_tokens_decoder") or {}).items()}
    tok = BPETokenizer(read_json(vocab), read_merges(merges), specials=added | read("added_tokens.json"),
                       pattern=GGUF_PRE["qwen2"][1])
    tok.normal_form, tok.normalized = "NFC", soft_tokens((cfg.get("added_tokens_decoder") or {}).values())
    tok.flags = strip_flags((cfg.get("added_tokens_decoder") or {}).values())
    return tok


def soft_tokens(added):
    """The added tokens found in the normalized text: "normalized" true (absent: those not special, as an AddedToken
    defaults)."""
    return frozenset(a["content"] for a in added if a.get("normalized", not a.get("special", False)))


def named_id(tok, token):
    """The id of a special token named by its text (tokenizer_config.json's "eos_token": a string or {"content": ..}),
    if the tokenizer reads that text as one token or has a special token of that name (Llama 3's, which Meta's
    reference reads as plain text in a text); else None."""
    text = token.get("content") if isinstance(token, dict) else token
    if isinstance(text, str) and text in getattr(tok, "names", {}):
        return tok.names[text]
    ids = tok.encode(text, bos=False, eos=False) if isinstance(text, str) and text else []  # the text alone
    return ids[0] if len(ids) == 1 else None


def token_text(tok, i):
    """A tokenizer's text of id i: a sentencepiece piece, or the added token's (past the pieces: an added <pad>); a
    byte-level BPE's token as decoded."""
    if not isinstance(tok, SentencePieceTokenizer):
        return repr(tok.decode([i]))
    return tok.sp.id_to_piece(i) if i < tok.sp.get_piece_size() else tok.beyond[i]


def tokenizer_config_marks(tok, cfg, where):
    """tok's BOS and EOS as tokenizer_config.json's bos_token / eos_token name them (cfg), as transformers' tokenizer
    takes them (its bos_token_id, eos_token_id): over the tokenizer's own (GPT-2's <|endoftext|> guessed for every
    byte-level BPE; none at all from a tokenizer.json: the Hub's Llama 3 Instruct ends with <|eot_id|>), but not over
    a mark the tokenizer puts around every text itself (a tokenizer.json's post-processor, sentencepiece's <s>),
    which transformers' encoding puts there too; that disagreement is said. Returns {"bos_id", "eos_id"} set so."""
    set_here = set()
    for key in ("bos", "eos"):
        own, named = getattr(tok, f"{key}_id"), named_id(tok, cfg.get(f"{key}_token"))
        if named is None or named == own:
            continue
        if getattr(tok, f"add_{key}") and own is not None:
            print(f"{where}: {key}_token {token_text(tok, named)} ({named}) is not the {token_text(tok, own)} "
                  f"({own}) the tokenizer puts {'before' if key == 'bos' else 'after'} every text; using {own}, as "
                  "transformers' encoding does")
            continue
        setattr(tok, f"{key}_id", named)
        set_here.add(f"{key}_id")
    return set_here


def load_tokenizer(path):
    """The tokenizer a checkpoint directory (or .gguf file) ships, with its special ids: config.json's where the
    tokenizer has none or is byte-level BPE or WordPiece (SmolLM2-Instruct's eos is <|im_end|> there); a sentencepiece
    model's own <s> always, its </s> and <pad> over config.json's special pieces, as in transformers. Before
    config.json, tokenizer_config.json's bos_token / eos_token / pad_token names (tokenizer_config_marks), as
    transformers' tokenizer reads them. tokenizer_config.json's add_bos_token says whether a sentencepiece or
    byte-level BPE text starts with BOS (defaults: LLaMA's and RoBERTa's do, GPT-2's not), its add_eos_token whether
    texts end with EOS (eos_note says where we follow it); a tokenizer.json's post-processor ("<s> $A </s>") decides
    instead, as in transformers."""
    path = os.fspath(path)
    if os.path.isfile(path):
        if not path.endswith(".gguf"):
            raise ValueError(f"{path}: a file, but not a .gguf; pass the checkpoint's directory")
        return gguf_tokenizer(path)
    f = lambda name: os.path.join(path, name)  # noqa: E731
    if os.path.exists(f("spiece.model")):  # T5 (without one, its Unigram tokenizer.json is read below)
        tok = T5Tokenizer(f("spiece.model"))
    elif (tiktoken_file := os.path.exists(f("tokenizer.model")) and is_tiktoken_file(f("tokenizer.model"))) and (
            os.path.exists(f("params.json")) or not os.path.exists(f("tokenizer.json"))):  # Meta's Llama 3 layout
        # (an HF folder, no params.json, also holding it: its tokenizer.json wins, as in transformers)
        params = read_json(f("params.json")) if os.path.exists(f("params.json")) else {}
        tok = Llama3Tokenizer(f("tokenizer.model"), isinstance(params, dict) and bool(params.get("use_scaled_rope")))
    elif os.path.exists(f("tokenizer.model")) and not tiktoken_file:
        added, prefix_each, flags = added_tokens(path)
        tok = SentencePieceTokenizer(f("tokenizer.model"), added=added, prefix_each=prefix_each)
        tok.flags = flags
    elif os.path.exists(f("vocab.txt")):  # BERT's WordPiece; tokenizer_config.json says if it is cased
        cfg = read_json(f("tokenizer_config.json")) if os.path.exists(f("tokenizer_config.json")) else {}
        with open(f("vocab.txt"), encoding="utf-8") as fh:
            vocab = {line.rstrip("\n"): i for i, line in enumerate(fh)}
        tok = WordPieceTokenizer(vocab, cfg.get("do_lower_case", True), cfg.get("strip_accents"),
                                 cfg.get("tokenize_chinese_chars", True))
    elif os.path.exists(f("tokenizer.json")):
        tok = tokenizer_json(f("tokenizer.json"))
    else:
        for vocab, merges in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
            if os.path.exists(f(vocab)) and os.path.exists(f(merges)):
                tok = slow_bpe(path, f(vocab), f(merges))
                break
        else:
            if gguf := gguf_file(path):
                return gguf_tokenizer(gguf)
            up = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer.model")
            if os.path.exists(f("params.json")) and os.path.exists(up):  # Llama 2's download.sh puts it there
                raise UserError(f"{path}: no tokenizer.model beside params.json; Meta's download keeps one in the "
                                f"folder above: cp {up} {f('tokenizer.model')}")
            if not os.path.exists(f("gpt2.tiktoken")):         # (else OpenAI's GPT-2 ranks: read below)
                raise UserError(f"{path}: no tokenizer file (tokenizer.model, tokenizer.json, vocab.txt, "
                                "spiece.model, vocab.json + merges.txt, encoder.json + vocab.bpe, gpt2.tiktoken or a "
                                ".gguf); copy the base model's tokenizer files into it")
            tok = tiktoken_gpt2(f("gpt2.tiktoken"))            # GPT-2's ids, <|endoftext|> 50256
    cfg = read_json(f("tokenizer_config.json")) if os.path.exists(f("tokenizer_config.json")) else {}
    setting = f"{f('tokenizer.json')}'s post-processor" if tok.add_eos else None
    if isinstance(tok, BPETokenizer) and os.path.exists(f("tokenizer.json")) and isinstance(cfg, dict):
        for key, own in (("add_bos_token", tok.add_bos), ("add_eos_token", tok.add_eos)):  # transformers drops both
            if isinstance(cfg.get(key), bool) and cfg[key] != own:  # where a tokenizer.json is read: it decides
                print(f"{f('tokenizer_config.json')}: {key} {str(cfg[key]).lower()} is not what "
                      f"{f('tokenizer.json')}'s post-processor does; following tokenizer.json, as transformers does")
    elif isinstance(tok, (SentencePieceTokenizer, BPETokenizer)) and not isinstance(tok, T5Tokenizer) and isinstance(
            cfg, dict):
        if isinstance(cfg.get("add_bos_token"), bool):         # Yi's false: its texts start without <s>; a
            tok.add_bos = cfg["add_bos_token"]                 # GPT-2's true: with <|endoftext|> (as transformers)
        if isinstance(cfg.get("add_eos_token"), bool):         # LlamaTokenizer's: every text ends with </s>
            tok.add_eos = cfg["add_eos_token"]
            setting = f"{f('tokenizer_config.json')}'s add_eos_token"
    if isinstance(cfg, dict) and not isinstance(tok, T5Tokenizer) and (pad := named_id(tok, cfg.get("pad_token"))
                                                                       ) is not None:  # (T5's: its decoder's start)
        tok.pad_id = pad  # transformers' pad_token_id (an added <pad>, or <unk> / </s> named as pad; never the
        # special_tokens_map.json's alone, as transformers 5 reads it); config.json's pad_token_id below, as before
    by_name = tokenizer_config_marks(tok, cfg, f("tokenizer_config.json")) if isinstance(cfg, dict) and not \
        isinstance(tok, T5Tokenizer) else set()
    if os.path.exists(f("config.json")):
        config = read_json(f("config.json"))
        for key in ("bos_id", "eos_id", "pad_id"):
            field = key.replace("_id", "_token_id")
            value, own = config.get(field), getattr(tok, key)
            if value is not None and not all(isinstance(i, int) and not isinstance(i, bool) for i in (
                    value if isinstance(value, list) else [value])):  # (was a TypeError at `value < 0`)
                raise ValueError(f"{f('config.json')}: {field} {value!r} is not a token id or a list of them")
            if isinstance(value, list):                        # Llama 3.1 Instruct's eos: [128001, 128008, 128009]
                # (each ends generation, as in transformers' generate: generation_eos; a record ends with the
                # tokenizer's EOS if listed)
                named = named_id(tok, cfg.get("eos_token") if key == "eos_id" and isinstance(cfg, dict) else None)
                value = next((i for i in (named, own) if i is not None and i in value), value[0] if value else None)
            if value is None or value < 0 or value == own:  # -1: none (the pad of early LLaMA conversions)
                continue
            if isinstance(tok, SentencePieceTokenizer) and own is not None and (key == "bos_id" or value < tok.sp.
                    get_piece_size() and (tok.sp.is_control(value) or tok.sp.is_unknown(value))):  # its own win, as
                # in transformers, whose tokenizer never reads config.json: its BOS always (the model learned texts
                # starting with it), another special piece (early LLaMA conversions say bos 0, eos 1: <unk> and <s>);
                # an added token (a chat fine-tune's <|im_end|> as eos) or a plain piece as eos or pad is taken
                print(f"{f('config.json')}: {field} {value} is not the tokenizer's {token_text(tok, own)} ({own}); "
                      f"using {own}, as transformers does")
                continue
            if key in by_name:                                 # (lorasp's rule before tokenizer_config.json counted)
                print(f"{f('config.json')}: {field} {value} is not the {token_text(tok, own)} ({own}) "
                      f"{f('tokenizer_config.json')} names; using {value}: config.json is the model's own, what "
                      "its generation stops on (transformers' tokenizer reads only tokenizer_config.json)")
            setattr(tok, key, value)
    if (stop := generation_eos(path))[1]:                     # what transformers' generate stops on
        tok.stop_ids = tuple(stop[0])
    return eos_note(tok, setting)


def generation_eos(path):
    """(ids, file, why): the ids transformers' generate ends on, from generation_config.json's eos_token_id where the
    folder has that file (none named there: none, even if config.json names one), else config.json's; the file read,
    and what it names. ([], None, None) without either (a .gguf, Meta's layout: the tokenizer's own stops)."""
    files = [f for f in ("generation_config.json", "config.json") if os.path.isfile(os.path.join(path, f))]
    if not files:
        return [], None, None
    eos = read_json(os.path.join(path, files[0])).get("eos_token_id")
    ids = [eos] if isinstance(eos, int) and not isinstance(eos, bool) else eos if isinstance(eos, list) else None
    if eos is not None and (ids is None or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
        raise ValueError(f"{os.path.join(path, files[0])}: eos_token_id {eos!r} is not a token id or a list of them")
        # (a ValueError: export.py takes a UserError from load_tokenizer for "no tokenizer files", and wrote the base)
    return ids or [], files[0], f"{files[0]} " + (f"names eos_token_id {eos}" if ids else "names no eos_token_id"
                                                   if eos is None else "names eos_token_id []")


def check_vocab(tok, rows, where):
    """Refuse, before training, a tokenizer whose ids the model's embedding (rows) cannot look up: copied from another
    model, or a special id out of range (F.embedding would fail mid-run). More rows than ids is fine: embeddings are
    often padded to a multiple of 64. Added tokens past the rows are left out, with a note (an early Llama-2 upload
    declared <pad> 32000 beside a 32000-row embedding; no text holds it)."""
    if past := sorted(t for t, i in getattr(tok, "added", {}).items() if i >= rows):
        pad = tok.pad_id is not None and tok.pad_id >= rows and tok.pad_id in (tok.added[t] for t in past)
        print(f"{where}: added tokens {past} have ids past the embedding's {rows} rows: left out" + (
            f", the pad id {tok.pad_id} among them (padding then uses 0, behind the attention mask)" if pad else ""))
        tok.set_added({t: i for t, i in tok.added.items() if i < rows})
        tok.pad_id = None if pad else tok.pad_id
    if tok.vocab_size > rows:
        raise UserError(f"{where}: the tokenizer has {tok.vocab_size} ids but the model's embedding {rows} rows; use "
                        "the tokenizer files of the model the weights come from")
    for key in ("bos_id", "eos_id", "pad_id"):
        i = getattr(tok, key)
        if i is not None and not 0 <= i < rows:
            raise UserError(f"{where}: the tokenizer's {key} {i} is outside the model's embedding ({rows} rows)")


def tiktoken_gpt2(path):
    """OpenAI's GPT-2 ranks as tiktoken's file (gpt2.tiktoken: "base64(bytes) rank" lines, ranks 0..50255) -> GPT-2's
    byte-level BPE, ids the ranks, <|endoftext|> 50256 (tiktoken's gpt2 encoding). Each token's merge is the two
    parts tiktoken's BPE leaves of its bytes with the ranks below its own (its last join): vocab.bpe's 50,000."""
    ranks = {}
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            try:
                token, rank = line.split() if line.strip() else (b"", -1)
                if ranks.setdefault(base64.b64decode(token, validate=True), int(rank)) != int(rank):
                    raise ValueError                           # (the same token twice)
            except (ValueError, binascii.Error):
                raise UserError(f"{path}, line {n}: not a 'base64 rank' line of tiktoken's format, or a token ranked "
                                "again (damaged or cut off?); fetch it again") from None
    ranks.pop(b"", None)
    by_rank, merges = sorted(ranks, key=ranks.get), []
    if sorted(ranks.values()) != list(range(50256)) or any(len(t) != 1 for t in by_rank[:256]):
        raise UserError(f"{path}: {len(ranks):,} tokens, not GPT-2's 50,256 (the 256 bytes first, ranked 0..50,255)")
    for r, token in enumerate(by_rank[256:], 256):
        parts = [token[i:i + 1] for i in range(len(token))]
        while len(parts) > 2:                                  # tiktoken's merge loop, ranks below r only
            best, j = min((ranks.get(a + b, math.inf), j) for j, (a, b) in enumerate(zip(parts, parts[1:])))
            if best >= r:
                raise UserError(f"{path}: token {token!r} (rank {r}) is not made by a merge of lower ranks")
            parts[j:j + 2] = [parts[j] + parts[j + 1]]
        merges.append(parts)
    text = bytes_to_unicode()
    show = lambda b: "".join(text[c] for c in b)  # noqa: E731
    return BPETokenizer({show(t): ranks[t] for t in by_rank} | {"<|endoftext|>": 50256},
                        [(show(a), show(b)) for a, b in merges])


def sentencepiece_tokenizer_json(tok):
    """A sentencepiece BPE tokenizer as lorasp reads it (a GGUF's "llama" pieces, scores and types, or a
    tokenizer.model) as the tokenizers library's tokenizer.json: each piece's merges (every split into two pieces)
    ranked by its score, highest first, ties by id (sentencepiece joins the adjacent pair whose piece scores highest),
    byte fallback, the control, unknown and user-defined pieces added tokens. The "▁" prefix as lorasp puts it: before
    the text even where it starts with a space (HF's Metaspace alone adds none there), after an added token where
    prepend (Phi-3), or, in legacy mode (prefix_each), where that text does not start with a space. So Metaspace
    steps: spaces to "▁", a " " before the first text (or each), that " " to "▁" (or, legacy, a "▁" before each
    text that has none). Another sentencepiece model (Unigram, a normalizer, extra whitespace removed, user-defined
    pieces lorasp does not match whole): NotImplementedError, saying which."""
    sp, n = tok.sp, tok.sp.get_piece_size()
    spec = sentencepiece_settings(sp.serialized_model_proto()) if type(tok) is SentencePieceTokenizer else {}
    unlike = [why for why, bad in (
        ("a Unigram model", spec.get("model_type") != 2), ("a normalizer's charsmap", spec.get("charsmap")),
        ("remove_extra_whitespaces", spec.get("remove_extra_whitespaces")), ("a tokenizer.json's Metaspace", getattr(
            tok, "metaspace", False)), ("prepend without legacy", tok.prepend and not tok.prefix_each),
        ("user-defined pieces not matched whole", set(spec.get("user_defined", [])) - set(tok.added))) if bad]
    if type(tok) is not SentencePieceTokenizer or unlike:
        raise NotImplementedError(f"a sentencepiece tokenizer other than sentencepiece's BPE as lorasp reads it ("
                                  f"{', '.join(unlike) or type(tok).__name__}): no tokenizer.json written for it")
    pieces = [sp.id_to_piece(i) for i in range(n)]
    score = {p: sp.get_score(i) for i, p in enumerate(pieces)   # (the pieces a merge may make or join)
             if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i) or sp.is_byte(i) or p in tok.added)}
    merges = sorted((-s, i, p[:k], p[k:]) for i, (p, s) in enumerate(score.items()) for k in range(1, len(p))
                    if p[:k] in score and p[k:] in score)
    step = lambda r, scheme: dict(type="Metaspace", replacement=r, prepend_scheme=scheme, split=False)  # noqa: E731
    pre = [step("▁", "never")] + [step(" ", "always" if tok.prepend else "first"), step(
        "▁", "always" if tok.prefix_each and not tok.prepend else "never")] * spec["add_dummy_prefix"]
    marks = {k: sp.id_to_piece(i) for k, i in (("bos", tok.bos_id), ("eos", tok.eos_id))
             if i is not None and getattr(tok, f"add_{k}")}    # (encode_pair's: [<s>] A [</s>] [<s>] B [</s>])
    mark = lambda k, t: [dict(SpecialToken=dict(id=marks[k], type_id=t))] if k in marks else []  # noqa: E731
    a, b = ([dict(Sequence=dict(id=x, type_id=t))] for x, t in (("A", 0), ("B", 1)))
    return dict(
        version="1.0", truncation=None, padding=None, normalizer=None,
        added_tokens=[dict(id=i, content=s, **dict(zip(FLAGS, tok.flags.get(s, (False,) * 3))), normalized=False,
                           special=True) for s, i in sorted(tok.added.items(), key=lambda x: x[1])],
        pre_tokenizer=dict(type="Sequence", pretokenizers=pre),
        post_processor=dict(type="TemplateProcessing", single=mark("bos", 0) + a + mark("eos", 0), pair=mark(
            "bos", 0) + a + mark("eos", 0) + mark("bos", 1) + b + mark("eos", 1), special_tokens={
            s: dict(id=s, ids=[getattr(tok, f"{k}_id")], tokens=[s]) for k, s in marks.items()}),
        decoder=dict(type="Sequence", decoders=[
            dict(type="Replace", pattern=dict(String="▁"), content=" "), dict(type="ByteFallback"), dict(type="Fuse"),
            dict(type="Strip", content=" ", start=int(len(pre) > 1), stop=0)]),
        model=dict(type="BPE", dropout=None, unk_token=sp.id_to_piece(sp.unk_id()), continuing_subword_prefix=None,
                   end_of_word_suffix=None, fuse_unk=True, byte_fallback=any(map(sp.is_byte, range(n))),
                   ignore_merges=False, vocab={p: i for i, p in enumerate(pieces)},
                   merges=[[left, right] for *_, left, right in merges]))


def hf_tokenizer(tok, directory, gguf=None):
    """tok (a GGUF's, or tiktoken_gpt2's) as the files transformers' AutoTokenizer reads to its ids: tokenizer.json
    (byte-level BPE: save_tokenizer's; a GGUF's sentencepiece BPE: sentencepiece_tokenizer_json's, beside the
    tokenizer.model lorasp and llama.cpp's converter read), tokenizer_config.json (BOS, EOS, UNK, PAD by name, whether
    texts get BOS/EOS), the GGUF's chat template (chat_template.jinja). Other tokenizers: NotImplementedError."""
    meta = read_gguf(gguf)[0] if gguf else {}
    kind = meta.get("tokenizer.ggml.model", "gpt2")
    if not (type(tok) is BPETokenizer and kind == "gpt2" or type(tok) is SentencePieceTokenizer and kind == "llama"):
        raise NotImplementedError(f"a {kind} tokenizer ({type(tok).__name__})")
    if kind == "llama":
        sentencepiece_tokenizer_json(tok)                 # (refused before anything is written)
    unk = tok.sp.unk_id() if kind == "llama" else meta.get("tokenizer.ggml.unknown_token_id")
    save_tokenizer(tok, directory, unk=unk)               # (a sentencepiece BPE's tokenizer.json too)
    if isinstance(template := meta.get("tokenizer.chat_template"), str):
        with atomic_write(os.path.join(directory, "chat_template.jinja"), "w") as f:
            f.write(template)


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


def read_records(path, output=True):
    """Instruction records from a .json list or a .jsonl file. Each needs `instruction` and `output` strings (output:
    False, prompts to answer: no output needed); `input` is optional (Alpaca's empty string). Bad JSON, bytes that are
    not UTF-8 or a malformed record are errors naming the file, the line and (a record) its index; fields lorasp
    does not read, and inputs that are a converter's text for no value (NO_VALUE: pandas' "nan"), are said."""
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
    if unused := {k: n for k, n in unused.items() if n}:
        print(f"note: {path}: fields lorasp does not use (it reads instruction, input, output): " + ", ".join(
            f"{k!r} in {n:,} records" for k, n in sorted(unused.items())) + (
            " ('text' there is not Alpaca's prompt of the record's fields: lorasp trains on that prompt, not on "
            "'text')" if "text" in unused else ""), file=sys.stderr)
    if none := [i for i, r in enumerate(records) if r.get("input") in NO_VALUE]:  # (trained as the input's text)
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
        os.makedirs(os.path.dirname(task), exist_ok=True)
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
                out = io.StringIO()
                csv.writer(out, delimiter=delimiter, lineterminator="\r\n" if text.endswith("\r\n") else "\n"
                           ).writerow(row)
                same = out.getvalue() == text or out.getvalue().rstrip("\r\n") == text  # (the last: no line end)
                if '"' in text and same:               # (a row without a quote reads the same either way)
                    quoted = quoted or start
                elif '"' in text:
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
    os.makedirs(root, exist_ok=True)
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
                "paper's: 128)")


def wmt16_examples(directory, tok, seq_len):
    """(train examples, validation examples, validation pairs) of WMT16 En-Ro in directory (read_translation),
    T5's prefix on the source; sources and targets longer than seq_len are cut (EOS kept) and counted. A seq_len that
    the prefix and EOS fill is refused: every source would be cut to the prefix, no word of its sentence left. A
    validation split holding the train split's pairs is said (same_rows)."""
    if (prefix := len(tok.encode(T5_PREFIX, eos=False))) + 1 >= seq_len:  # (trained to translate nothing, exit 0)
        raise ValueError(f"--seq-len {seq_len}: T5's prefix {T5_PREFIX!r} is {prefix} tokens with this tokenizer: with "
                         f"EOS it fills every source cut to {seq_len} tokens, leaving no word of the English sentence; "
                         f"give a --seq-len past {prefix + 1} that holds the sentences (the paper's: 128)")
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
        alone = is_punctuation(ch) or wordpiece and tok.split_cjk and any(lo <= ord(ch) <= hi for lo, hi in CJK)
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


def squad_windows(dataset, tok, max_len=384, stride=128, max_query=64, split="dev"):
    """Extractive-QA inputs, one per window of a question's context (BERT's run_squad.py): [CLS] question [SEP]
    context tokens [SEP] (RoBERTa: <s> q </s></s> c </s>), at most max_len tokens, windows starting every `stride`
    context tokens (every window length, if that is shorter: BERT's min(length, doc_stride)) until one reaches the
    end. Each window: input_ids, token_type_ids; labels (first, last): the positions of the first gold answer's first
    and last tokens if the window holds all of it, else (0, 0), the [CLS] position (what BERT trains a window without
    the answer to point at); id, offsets (the (first, end) characters of each context token, None elsewhere) and
    context, to map a span back to text. The gold answer is the first whose text is at its answer_start: a question
    with none such is left out of "train" (as BERT's run_squad.py does) and kept, labelled (0, 0), elsewhere (its
    answers' texts are still what it is scored against); counted."""
    out, unfound, long = [], [], []
    for article in dataset:
        for paragraph in article["paragraphs"]:
            ctx = paragraph["context"]
            toks = context_tokens(tok, ctx)
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
                                    id=qa["id"], offsets=[None] * len(head) + [(s, e) for _, s, e in win] + [None],
                                    context=ctx))
                    if start + room >= len(toks):
                        break
                    start += min(stride, room)  # a longer step would skip the tokens in between
    if unfound:
        print(f"squad {split}: {len(unfound):,} questions whose answer texts are not at their answer_start in the "
              f"context (first: {unfound[0]}): " + ("left out" if split == "train" else "labelled as no answer"))
    if long:
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
