"""tokenizer.py: the checkpoint's own tokenizer, read from its own files with its special ids (load_tokenizer
picks one: SentencePiece, a GGUF file's own, byte-level BPE through tiktoken, WordPiece, T5's), and written back
as the files transformers reads.

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
- BERT's WordPiece by hand (HF's BertTokenizer's basic tokenization, then greedy longest match first).
- Written back (a model saved from a .gguf, export.py's merged folder): `save_tokenizer`, `hf_tokenizer`,
  `llama_tokenizer_config`, read by transformers' AutoTokenizer to the same ids. `tokenizer_files`: the sha256s of a
  base's tokenizer files (TOKENIZER_FILES) an adapter keeps and resume compares (`tokenizer_changes`); `check_vocab`:
  ids the model's embedding cannot look up refused before training; `generation_eos`: what generate stops on.

Leaves out: a byte-level BPE's HF normalizer other than a Unicode normal form (Qwen2's NFC is applied; others
refused), and two corner cases of tiktoken's BPE: a whole pre-token that is itself in the vocabulary is taken as one
token (HF's `ignore_merges`), and a merge whose result an earlier merge already produced keeps the earlier rank.
tiktoken's own GPT-2 encoding makes the same choices.

Imports checkpoint.py, download.py and ggufread.py, never data.py (which takes from here what its SQuAD character
offsets need: BPETokenizer, WordPieceTokenizer, is_punctuation, CJK).
Run `python tokenizer.py DIR "text"` (DIR: a checkpoint folder, or a .gguf): the tokenizer load_tokenizer picks, the
files it read, its special ids, then the text's ids, pieces and decoded text (~2 s; no text: an example sentence);
and `python -m pytest -q tests/test_tokenizers.py tests/test_tokenizer_files.py` (transformers' tokenizers, HF
`tokenizers` and the sentencepiece library on vocabularies the tests train; the tokenizer files a run records and
copies).
"""
import argparse
import base64
import binascii
import functools
import hashlib
import itertools
import json
import math
import os
import re
import struct
import sys
import unicodedata

import regex  # tiktoken's own dependency: GPT-2's \p{L} classes, which re lacks
import sentencepiece
import tiktoken

from checkpoint import atomic_write, inside, read_json
from download import SMALL_FILES, UserError
from ggufread import gguf_file, read_gguf

# the files a checkpoint folder's tokenizer is read from (added_tokens.json: transformers' tokens added to a
# sentencepiece vocabulary, a pad token say; encoder.json + vocab.bpe: GPT-2's own names for vocab.json + merges.txt;
# gpt2.tiktoken: OpenAI's GPT-2 ranks as tiktoken ships them);
# COPIED ones, with its chat template, make a saved model's tokenizer
TOKENIZER_FILES = SMALL_FILES[2:] + ("added_tokens.json", "encoder.json", "vocab.bpe", "gpt2.tiktoken")
HASHED_BEFORE = SMALL_FILES[2:]  # what a tokenizer_files record made before it named absent files (null) looked at
COPIED = TOKENIZER_FILES + ("chat_template.jinja", "chat_template.json")


GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Llama 3's pre-tokenizer (its tokenizer.json's Split, llama.cpp's llama-bpe)
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")
TIKTOKEN_LINE = rb"(\xef\xbb\xbf)?[A-Za-z0-9+/=]+ \d+\r?\n"  # tiktoken's first line "base64 rank" (a BOM, CRLF)


@functools.lru_cache(maxsize=32)
def alternation(strings):
    """A regex that finds any of strings whole, in a group (split keeps them), the longest first where one holds
    another; None where there are none. "" is none (a token of no text: matched, it split a text at every character;
    the tokenizers library skips it)."""
    strings = [s for s in strings if s]
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
    read_from = ()  # the files load_tokenizer read it from, in order (the demo names them)
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
        try:                                            # (an empty file loads as nothing, then fails: "unk is
            self.sp = sentencepiece.SentencePieceProcessor(model_proto=proto or b"\0")  # not defined", no file)
        except RuntimeError as e:  # a cut-off download: sentencepiece's own message names no file
            if built:                                   # (was "None: not a sentencepiece model ...; fetch it again")
                raise ValueError(f"{path}: sentencepiece refuses the model its vocabulary makes ({e})") from None
            raise ValueError(f"{path}: not a sentencepiece model (damaged or cut off?); fetch it again") from None
        self.unprefixed = sentencepiece.SentencePieceProcessor(model_proto=proto + NO_DUMMY_PREFIX)
        self.ints = list(range(self.sp.get_piece_size()))  # one int object per id, which every encoded list shares
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

    def ids(self, text, prefixed=True):
        """sentencepiece's ids of text (with its "▁" prefix or without), each id the one int object `ints` holds:
        sentencepiece makes a new 32-byte int per token (Alpaca's 7.8M tokens on Llama 2: 230 of the 366 MiB its
        tokenized examples held)."""
        return list(map(self.ints.__getitem__, (self.sp if prefixed else self.unprefixed).encode(text)))

    def _encode(self, text, after=False):
        if not self.added:
            return self.ids(text, not (after or self.metaspace and text.startswith(" ")))
        ids = []  # after an added token, the "▁" prefix again only in legacy mode and where the text does not start
        for start, end, token in find_added(text, self.split, self.flags):  # with a space already (HF's Metaspace)
            p = text[start:end]
            prefixed = (not after and not (self.metaspace and p.startswith(" ")) if start == 0 else
                        self.prefix_each and (self.prepend or not p.startswith(" ")))
            ids += [self.added[token]] if token else self.ids(p, prefixed)
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
    add_eos = True  # encode's default, as transformers' T5Tokenizer (its tokenizer_config.json's add_eos_token unread)

    def encode(self, text, bos=False, eos=True, after=False):
        return super().encode(text, bos, eos, after)

    def pair_marks(self):
        return [], [], [self.eos_id]

    def _encode(self, text, after=False):
        """Text and special tokens alternate: "a <extra_id_0> b" -> ["a ", "<extra_id_0>", " b"]; </s>, <pad>, <unk>
        written in a text are those tokens too, as in transformers' T5Tokenizer."""
        parts = re.split("(<extra_id_(?:[0-9]|[1-9][0-9])>|" + "|".join(map(re.escape, self.added)) + ")", text)
        special = lambda p: self.added[p] if p in self.added else self.vocab_size - 1 - int(p[10:-1])  # noqa: E731
        return [i for j, p in enumerate(parts) for i in ([special(p)] if j % 2 else self.ids(p, j or not after))]

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
            if odd := [c for c in left + right if c not in byte_of]:  # (a KeyError naming a character, else)
                raise ValueError(f"merge {left!r} {right!r} holds {odd[0]!r}, not one of byte-level BPE's characters")
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
        first = sorted(s for s in self.special_ids if s)  # one a prefix of another ("   " of "    ": NeoX's spaces):
        self.prefix_free = all(not b.startswith(a) for a, b in zip(first, first[1:]))  # tiktoken picks either one
        self.pat = pattern if isinstance(pattern, str) else r"[\s\S]+"  # (a tuple: _bpe has split the text)
        self.allowed = "all" if matched is None else frozenset(s for s in matched if s)
        self.enc = tiktoken.Encoding("bpe", pat_str=self.pat, mergeable_ranks=ranks,  # ("": tiktoken's encode never
                                     special_tokens={s: len(ids) + j for j, s in enumerate(special) if s})  # ends)
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
    tokenizer_json_shapes(t, path)
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
    try:
        tok = BPETokenizer(t["model"]["vocab"], merges, bool(digits), steps[-1].get("add_prefix_space", False), added,
                           pattern, only_specials=True)        # (HF matches its added_tokens, nothing else, whole)
    except ValueError as e:                                    # (a merge making a token the vocabulary lacks)
        raise ValueError(f"{path}: {e}") from None
    tok.normal_form, tok.normalized = forms[0]["type"] if forms else None, soft_tokens(t.get("added_tokens", []))
    tok.flags = strip_flags(t.get("added_tokens", []))
    return post_processor(tok, t)


def tokenizer_json_shapes(t, path):
    """Refuse, naming the entry, a tokenizer.json part of another JSON type than the tokenizers library writes (each
    was a TypeError, an unpacking ValueError or AttributeError naming nothing, or an added token read silently)."""
    def refuse(what, value, want):
        raise ValueError(f"{path}: {what} is {json.dumps(value)[:80]}, not {want}")
    for part in ("normalizer", "pre_tokenizer", "decoder", "post_processor"):
        if not isinstance(t.get(part) or {}, dict):
            refuse(part, t[part], "an object (or null)")
    post = t.get("post_processor") or {}
    for p in post.get("processors") or [] if post.get("type") == "Sequence" else [post] if post else []:
        if not isinstance(p, dict) or p.get("type") not in ("TemplateProcessing", "ByteLevel", "RobertaProcessing",
                                                            "BertProcessing"):  # (the tokenizers library's; else the
            refuse("a post_processor step", p, "one the tokenizers library writes")  # BOS/EOS were silently lost)
    if not isinstance(added := t.get("added_tokens") or [], list):
        refuse("added_tokens", added, "a list")
    for a in added:
        if not (isinstance(a, dict) and isinstance(a.get("content"), str) and type(a.get("id")) is int and
                a["id"] >= 0):
            refuse("an added_tokens entry", a, "{\"id\": an integer >= 0, \"content\": a string, ...}")
    vocab, kind = t["model"].get("vocab"), t["model"].get("type")
    if kind == "Unigram":
        for i, e in enumerate(vocab if isinstance(vocab, list) else [vocab]):
            if not (isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and type(e[1]) in (int, float)):
                refuse(f"model.vocab[{i}]", e, "a [piece, score] pair")
    elif kind == "BPE":
        if not isinstance(vocab, dict) or (odd := [(k, i) for k, i in vocab.items() if type(i) is not int or i < 0]):
            refuse("model.vocab" + (f"[{odd[0][0]!r}]" if isinstance(vocab, dict) else ""),
                   odd[0][1] if isinstance(vocab, dict) else vocab, "an id (an integer >= 0)")
        if not isinstance(merges := t["model"].get("merges"), list):
            refuse("model.merges", merges, "a list")
        for i, m in enumerate(merges):
            if not (isinstance(m, str) and m.count(" ") == 1 or isinstance(m, list) and len(m) == 2 and all(
                    isinstance(x, str) for x in m)):
                refuse(f"model.merges[{i}]", m, "\"left right\" or [left, right]")


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
        item = dict(tokens=str, merges=str, token_type=int, scores=float)[key]  # (int token types read as floats
        if odd := [x for x in v if type(x) is not item][:1]:                  # matched no control token: silent)
            raise ValueError(f"{path}: GGUF metadata tokenizer.ggml.{key} holds {odd[0]!r}, not of type "
                             f"{item.__name__}")
        return v
    n = len(t) if isinstance(t := meta.get("tokenizer.ggml.tokens"), list) else None  # (else need names it)
    for key in [k for k in meta if n is not None and re.fullmatch(r"tokenizer\.ggml\.\w+_token_id", k)]:
        if type(meta[key]) is not int or not 0 <= meta[key] < n:  # (a bool, a float, an id past the vocabulary: taken)
            raise ValueError(f"{path}: GGUF metadata {key} = {meta[key]!r}; a token id of its {n} tokens is needed")
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
        try:
            tok = BPETokenizer(vocab, [tuple(m.split(" ")) for m in need("merges")], digits, pattern=pattern, specials={
                t: i for i, (t, k) in enumerate(zip(tokens, types)) if k in (3, 4) or i in marks}, only_specials=True)
        except ValueError as e:                                # (a damaged vocabulary: which file)
            raise ValueError(f"{path}: GGUF tokenizer.ggml.tokens / merges: {e}") from None
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


def config_token_ids(tok, config):
    """The tokenizer's bos_token_id and eos_token_id that a generating model's config.json (the dict `config`) names
    none of: transformers' generate stops at the EOS GenerationConfig.from_model_config reads there (without one it
    ran past </s> to max_new_tokens). pad_token_id for a pad of its own only (not BOS, EOS or UNK named as pad): it is
    also the embedding's padding_idx, a row transformers and lorasp then do not train. Ids config names are kept."""
    if not any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration"))
               for a in config.get("architectures") or ()):
        return {}                                              # (a classifier or an encoder: nothing generates)
    unk = tok.sp.unk_id() if isinstance(tok, SentencePieceTokenizer) else getattr(tok, "unk_id", None)
    pad = tok.pad_id if tok.pad_id is not None and tok.pad_id not in (tok.bos_id, tok.eos_id, unk) and \
        tok.pad_id < config.get("vocab_size", 0) else None    # (past the vocabulary: transformers builds no model)
    ids = dict(bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=pad)
    return {k: i for k, i in ids.items() if i is not None and config.get(k) is None}


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
    files_fingerprints keeps). resume.check_data names them when the tokenized examples changed but the records may not
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
    prompt too: the model would see the text end before its answer). Not T5's: its encoder's input ends with EOS."""
    if tok.add_eos and tok.eos_id is not None and not isinstance(tok, T5Tokenizer):
        print(f"{setting}: every text ends with EOS ({tok.eos_id}) in lorasp too where the model learns or is scored "
              "on it (a record's response, a text line, a perplexity document), as transformers encodes it; not a "
              "prompt it continues (generation, MMLU): there it would end the text before the answer")
    return tok


def json_there(path, read):
    """read_json(path) where the file exists, noted in the list read (load_tokenizer's read_from); else {}."""
    if not os.path.exists(path):
        return {}
    read.append(path)
    return read_json(path)


def added_tokens(directory, read):
    """A sentencepiece checkpoint's added tokens {text: id} (tokenizer.json's, else added_tokens.json's), whether
    the text after one gets sentencepiece's "▁" prefix again (yes in transformers' legacy mode, no where
    tokenizer.json's Metaspace prepends it once (prepend_scheme "first") or tokenizer_config.json says legacy false),
    and their strip_flags (tokenizer.json's, else tokenizer_config.json's added_tokens_decoder). read: json_there's."""
    f = lambda name: os.path.join(directory, name)  # noqa: E731
    if os.path.exists(f("tokenizer.json")):
        t = json_there(f("tokenizer.json"), read)
        pre = t.get("pre_tokenizer") or {}
        steps = pre.get("pretokenizers") or [] if pre.get("type") == "Sequence" else [pre]  # (hf_tokenizer's: 3 steps)
        schemes = [s.get("prepend_scheme") for s in steps if s.get("type") == "Metaspace"]
        once = "first" in schemes and "always" not in schemes  # (sentencepiece_tokenizer_json's legacy: both)
        added = t.get("added_tokens", [])
        return {a["content"]: a["id"] for a in added}, not once, strip_flags(added)
    config, added = json_there(f("tokenizer_config.json"), read), json_there(f("added_tokens.json"), read)
    flags = strip_flags((config.get("added_tokens_decoder") or {}).values())
    return added, config.get("legacy", True), flags  # transformers' slow LlamaTokenizer: legacy unless told otherwise


def slow_bpe(directory, vocab, merges, read):
    """vocab.json + merges.txt (a slow tokenizer's save, no tokenizer.json): GPT-2's pre-tokenizer, or where
    transformers builds a Qwen2Tokenizer (tokenizer_config.json's tokenizer_class, else config.json's model_type qwen2
    or qwen3) Qwen2's: its regex (one digit a pre-token), NFC first, and the added tokens tokenizer_config.json
    lists. read: json_there's (vocab and merges: the caller's)."""
    def there(name):  # {} where absent or not an object (load_tokenizer names a damaged one)
        j = json_there(os.path.join(directory, name), read)
        return j if isinstance(j, dict) else {}
    cfg = there("tokenizer_config.json")
    if (cfg.get("tokenizer_class") or there("config.json").get("model_type")) not in ("Qwen2Tokenizer",
                                                                                       "Qwen2TokenizerFast", "qwen2",
                                                                                       "qwen3"):
        return BPETokenizer(read_json(vocab), read_merges(merges))
    added = {a["content"]: int(i) for i, a in (cfg.get("added_tokens_decoder") or {}).items()}
    tok = BPETokenizer(read_json(vocab), read_merges(merges), specials=added | there("added_tokens.json"),
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
    """A tokenizer's text of id i: a sentencepiece piece, or the added token's (past the pieces: an added <pad>; T5's
    sentinel <extra_id_N>, counted down from its last id); a byte-level BPE's token as decoded."""
    if not isinstance(tok, SentencePieceTokenizer):
        return repr(tok.decode([i]))
    if isinstance(tok, T5Tokenizer) and i >= tok.n_pieces:
        return f"<extra_id_{tok.vocab_size - 1 - i}>"
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
    instead, as in transformers. tok.read_from: the files read, in order."""
    path = os.fspath(path)
    if not os.path.exists(path):                               # (a typo: not "copy the tokenizer files into it")
        raise FileNotFoundError(f"{path}: no such file or folder")
    if os.path.isfile(path):
        if not path.endswith(".gguf"):
            raise ValueError(f"{path}: a file, but not a .gguf; pass the checkpoint's directory")
        tok = gguf_tokenizer(path)
        tok.read_from = (path,)
        return tok
    f, read = lambda name: os.path.join(path, name), []  # noqa: E731  (read: the files read, tok.read_from)
    for name in dict.fromkeys(SMALL_FILES + COPIED + ("params.json",)):  # what is read here, or copied into every
        if os.path.lexists(f(name)):                                      # model saved from this one: not a symlink
            inside(path, name, path)                                      # to a file elsewhere (~/.ssh/id_rsa)

    def r(name):  # a file of the folder, read
        read.append(f(name))
        return f(name)
    if os.path.exists(f("spiece.model")):  # T5 (without one, its Unigram tokenizer.json is read below)
        tok = T5Tokenizer(r("spiece.model"))
    elif (tiktoken_file := os.path.exists(f("tokenizer.model")) and is_tiktoken_file(f("tokenizer.model"))) and (
            os.path.exists(f("params.json")) or not os.path.exists(f("tokenizer.json"))):  # Meta's Llama 3 layout
        # (an HF folder, no params.json, also holding it: its tokenizer.json wins, as in transformers)
        params = json_there(f("params.json"), read)
        tok = Llama3Tokenizer(r("tokenizer.model"), isinstance(params, dict) and bool(params.get("use_scaled_rope")))
    elif os.path.exists(f("tokenizer.model")) and not tiktoken_file:
        added, prefix_each, flags = added_tokens(path, read)
        tok = SentencePieceTokenizer(r("tokenizer.model"), added=added, prefix_each=prefix_each)
        tok.flags = flags
    elif os.path.exists(f("vocab.txt")):  # BERT's WordPiece; tokenizer_config.json says if it is cased
        cfg = json_there(f("tokenizer_config.json"), read)
        with open(r("vocab.txt"), encoding="utf-8") as fh:
            vocab = {line.rstrip("\n"): i for i, line in enumerate(fh)}
        tok = WordPieceTokenizer(vocab, cfg.get("do_lower_case", True), cfg.get("strip_accents"),
                                 cfg.get("tokenize_chinese_chars", True))
    elif os.path.exists(f("tokenizer.json")):
        tok = tokenizer_json(r("tokenizer.json"))
    else:
        for vocab, merges in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
            if os.path.exists(f(vocab)) and os.path.exists(f(merges)):
                tok = slow_bpe(path, r(vocab), r(merges), read)
                break
        else:
            if gguf := gguf_file(path):
                return load_tokenizer(gguf)
            up = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer.model")
            if os.path.exists(f("params.json")) and os.path.exists(up):  # Llama 2's download.sh puts it there
                raise UserError(f"{path}: no tokenizer.model beside params.json; Meta's download keeps one in the "
                                f"folder above: cp {up} {f('tokenizer.model')}")
            if not os.path.exists(f("gpt2.tiktoken")):         # (else OpenAI's GPT-2 ranks: read below)
                raise UserError(f"{path}: no tokenizer file (tokenizer.model, tokenizer.json, vocab.txt, "
                                "spiece.model, vocab.json + merges.txt, encoder.json + vocab.bpe, gpt2.tiktoken or a "
                                ".gguf); copy the base model's tokenizer files into it")
            tok = tiktoken_gpt2(r("gpt2.tiktoken"))            # GPT-2's ids, <|endoftext|> 50256
    cfg = json_there(f("tokenizer_config.json"), read)
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
        config = read_json(r("config.json"))
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
        read.append(f(stop[1]))                                # (generation_config.json, else config.json)
    tok.read_from = tuple(dict.fromkeys(read))
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


# The demo

EXAMPLE = "Café  au lait: 3 cups."  # a digit, a run of two spaces, a non-ASCII character


def piece(tok, i):
    """Id i's own token: a sentencepiece piece (or an added token's text), a WordPiece, a byte-level BPE token's
    bytes (as text where they are whole UTF-8 characters)."""
    if isinstance(tok, SentencePieceTokenizer):
        return repr(token_text(tok, i))
    if isinstance(tok, WordPieceTokenizer):
        return repr(tok.token_of.get(i))
    raw = tok.enc.decode_single_token_bytes(tok.rank_of_id[i]) if i in tok.rank_of_id else b"?"
    try:
        return repr(raw.decode("utf-8"))
    except UnicodeDecodeError:                                 # part of a character's bytes
        return repr(raw)


def main():
    """`python tokenizer.py PATH [TEXT ...]`: the tokenizer load_tokenizer picks, then each text's ids and pieces."""
    parser = argparse.ArgumentParser(description="The tokenizer load_tokenizer picks for PATH, and how it reads TEXT")
    parser.add_argument("path", metavar="PATH", help="a checkpoint folder (its tokenizer files) or a .gguf")
    parser.add_argument("texts", metavar="TEXT", nargs="*", help=f"default: {EXAMPLE!r}")
    args = parser.parse_args()
    for i, text in enumerate(args.texts):  # the bytes the shell gave (a C locale read them as ASCII): UTF-8, or refused
        try:                                                   # (was a RuntimeError traceback from sentencepiece)
            args.texts[i] = os.fsencode(text).decode("utf-8")
        except UnicodeError as e:
            bad = os.fsencode(text)[e.start:e.end] if isinstance(e, UnicodeDecodeError) else b""
            parser.error(f"TEXT {i + 1} is not UTF-8 text (byte {bad.hex(' ') or '?'} at offset {e.start}): give it "
                         "in UTF-8")
    try:
        tok = load_tokenizer(args.path)
    except (UserError, ValueError, OSError, NotImplementedError) as e:  # a wrong PATH: one line, no traceback
        parser.exit(2, f"tokenizer.py: error: {e}\n")
    source = args.path if os.path.isfile(args.path) else f"{args.path} (" + ", ".join(
        os.path.relpath(f, args.path) for f in tok.read_from) + ")"        # (a .gguf in it: that file's name)
    print(f"{type(tok).__name__} from {source}: {tok.vocab_size:,} ids; add_bos {tok.add_bos}, add_eos {tok.add_eos}")
    print("  " + ", ".join(f"{name.upper()} " + ("none" if (i := getattr(tok, f"{name}_id")) is None else
                                                   f"{i} {piece(tok, i)}") for name in ("bos", "eos", "pad")))
    for text in args.texts or [EXAMPLE]:
        ids, back = tok.encode(text), tok.decode(tok.encode(text, bos=False))  # (decoded: without encode's BOS)
        print(f"{text!r}: {len(ids)} ids\n  ids    {ids}\n  pieces {' '.join(piece(tok, i) for i in ids)}")
        print(f"  decoded {back!r}: " + ("round-trips" if back == text else "does NOT round-trip"))


if __name__ == "__main__":  # a typed flag (--bogus) is refused, not read as PATH
    from checks import console  # (here, not above: checks imports data, which imports this file)
    console()                                                  # (line-buffered; UTF-8 where ASCII fails; no reader: on)
    main()
