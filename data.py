"""data.py: tokenizers (datasets and prompt templates join them here as train.py needs them).

- SentencePiece `tokenizer.model` (LLaMA) through the sentencepiece library.
- Byte-level BPE (GPT-2, Sennrich et al. 2016 applied to bytes; also RoBERTa, SmolLM2) run by tiktoken, built from
  the checkpoint's own files: `tokenizer.json`, `vocab.json` + `merges.txt`, or GPT-2's `encoder.json` + `vocab.bpe`.
  tiktoken merges the adjacent pair whose *merged token* has the lowest rank, so ranks follow merges.txt: the 256
  single bytes first, then each merge's result in file order; a lookup table maps ranks to the checkpoint's ids.
  Pre-tokenization is GPT-2's regex (optionally after splitting digits one by one, as SmolLM2's tokenizer.json says).
- T5's `spiece.model` (sentencepiece) plus its 100 sentinel ids <extra_id_N>; EOS ends every encoded text.
- Special ids (BOS/EOS/pad) come from the tokenizer files, overridden by the checkpoint's config.json.
- WMT16 English-Romanian (the paper's Table 2): the Hugging Face JSONL export or aligned plain-text files, T5's
  "translate English to Romanian: " prefix, teacher-forcing batches (decoder input = labels shifted right).

Leaves out: WordPiece (BERT, a later issue), HF normalizers, and two corner cases of tiktoken's BPE: a whole
pre-token that is itself in the vocabulary is taken as one token (HF's `ignore_merges`), and a merge whose result an
earlier merge already produced keeps the earlier rank. tiktoken's own GPT-2 encoding makes the same choices.

Run `python -m pytest -q tests/test_tokenizers.py` to compare against transformers' tokenizers.
"""
import json
import os
import re
import unicodedata

import sentencepiece
import tiktoken
import torch

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


class T5Tokenizer(SentencePieceTokenizer):
    """T5's spiece.model (pad 0, EOS 1, unk 2, no BOS) plus 100 sentinels <extra_id_0..99> after its pieces,
    <extra_id_0> the highest id. encode() ends with EOS, as T5's inputs and targets do; decode() drops pad, EOS, unk
    and sentinels (HF's skip_special_tokens=True), which is what BLEU is computed on."""

    def __init__(self, path, extra_ids=100):
        super().__init__(path)
        self.n_pieces, self.vocab_size, self.add_bos = self.vocab_size, self.vocab_size + extra_ids, False

    def encode(self, text, bos=False, eos=True):
        return super().encode(text, bos, eos)

    def _encode(self, text):  # text and sentinel numbers alternate: "a <extra_id_0> b" -> ["a ", "0", " b"]
        parts = re.split(r"<extra_id_([0-9]|[1-9][0-9])>", text)
        return [i for j, p in enumerate(parts) for i in ([self.vocab_size - 1 - int(p)] if j % 2 else
                                                           self.sp.encode(p))]

    def decode(self, ids):
        return self.sp.decode([i for i in ids if self.sp.unk_id() < i < self.n_pieces])  # pad 0, EOS 1, unk 2 first


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
    if os.path.exists(f("spiece.model")):  # T5 (its tokenizer.json, a Unigram model, is not read)
        tok = T5Tokenizer(f("spiece.model"))
    elif os.path.exists(f("tokenizer.model")):
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
# WMT16 English-Romanian for T5 (the paper's Table 2)

T5_PREFIX = "translate English to Romanian: "  # T5's task prefix for this pair (Raffel et al. 2020, appendix D)
WMT16_HELP = ("WMT16 En-Ro is the Hugging Face dataset `wmt16`, config `ro-en` (train: 610k pairs, validation: "
              "newsdev2016, test: newstest2016). Export it once where `datasets` is installed: `for s, d in "
              "datasets.load_dataset('wmt16', 'ro-en').items(): d.to_json(f'DIR/{{s}}.jsonl')`; or put aligned "
              "plain-text files {split}.en and {split}.ro (one sentence per line) in the data directory")


def read_translation(directory, split, src="en", tgt="ro"):
    """[(source, target)] from DIR/{split}.jsonl ({"translation": {src: ..., tgt: ...}} per line, the Hugging Face
    export) or from the aligned DIR/{split}.{src} and DIR/{split}.{tgt}."""
    jsonl, a, b = (os.path.join(directory, f"{split}.{x}") for x in ("jsonl", src, tgt))
    if os.path.exists(jsonl):
        pairs = []
        with open(jsonl, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)["translation"]
                    pair = row[src], row[tgt]
                except (json.JSONDecodeError, KeyError, TypeError):
                    pair = None
                if pair is None or not all(isinstance(x, str) for x in pair):
                    raise ValueError(f"{jsonl}, line {n}: expected {{\"translation\": {{\"{src}\": text, \"{tgt}\": "
                                     f"text}}}}, got {line.strip()[:200]!r}")
                pairs.append(pair)
        return pairs
    if not (os.path.exists(a) and os.path.exists(b)):
        raise FileNotFoundError(f"{directory}: no {split}.jsonl, nor {split}.{src} + {split}.{tgt}. "
                                + WMT16_HELP.format(split=split))
    lines = []
    for path in (a, b):
        with open(path, encoding="utf-8", newline="\n") as f:  # only "\n" ends a line (a stray "\r" is text)
            lines.append([line.removesuffix("\n").removesuffix("\r") for line in f])
    if len(lines[0]) != len(lines[1]):
        raise ValueError(f"misaligned: {a} has {len(lines[0])} lines, {b} has {len(lines[1])}")
    return list(zip(*lines))


def translation_examples(pairs, tok, prefix=T5_PREFIX, max_source_len=256, max_target_len=256):
    """-> ([(source ids, target ids)], how many were cut): both end in EOS, longer ones are cut with EOS kept."""
    out, cut = [], 0
    for s, t in pairs:
        s, t = tok.encode(prefix + s), tok.encode(t)
        cut += len(s) > max_source_len or len(t) > max_target_len
        out.append(tuple(x if len(x) <= n else x[:n - 1] + x[-1:]
                         for x, n in ((s, max_source_len), (t, max_target_len))))
    return out, cut


def seq2seq_batch(examples, pad_id=0, ignore_index=-100):
    """Padded tensors for teacher forcing: input_ids and attention_mask (B, S); labels (B, T) with ignore_index on
    padding; decoder_input_ids = labels shifted right behind the start token (pad_id): position i predicts labels[i]
    having seen labels[:i]."""
    S, T = max(len(s) for s, _ in examples), max(len(t) for _, t in examples)
    input_ids = torch.tensor([s + [pad_id] * (S - len(s)) for s, _ in examples])
    attention_mask = torch.tensor([[1] * len(s) + [0] * (S - len(s)) for s, _ in examples])
    labels = torch.tensor([t + [ignore_index] * (T - len(t)) for _, t in examples])
    shifted = torch.cat([torch.full((len(examples), 1), pad_id), labels[:, :-1]], 1)
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                decoder_input_ids=shifted.masked_fill(shifted == ignore_index, pad_id))
