"""Tokenizers against the references: transformers' GPT2Tokenizer and HF `tokenizers` on byte-level BPE vocabularies
the test trains itself, and the sentencepiece library on a model the test trains itself (all offline)."""
import json
import random
import shutil

import pytest
import sentencepiece as spm
from tokenizers import (AddedToken, ByteLevelBPETokenizer, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)
from transformers import AutoTokenizer, GPT2Tokenizer

from data import UserError, alpaca_prompt, perplexity_docs, tokenize_records
from tokenizer import (BPETokenizer, SentencePieceTokenizer, T5Tokenizer, check_vocab, load_tokenizer, named_id,
                       sentencepiece_model)

CORPUS = ["The quick brown fox jumps over the lazy dog.", "Héllo wörld! Ça va? naïve café", "日本語のテキスト",
          "  leading spaces\tand tabs\n\nnew lines", "I'll don't we're they've HE'S", "pi 3.14159, e 2.71828, 1000000",
          "emoji 🙂🚀 and symbols §±∞", "def f(x):\n    return x ** 2  # comment"] * 25
TEXTS = ["Hello world", " leading space", "trailing space ", "two  spaces   three", "tabs\tand\nnewlines\n\n",
         "Unicode: Ωμέγα, ß, ø, 中文, 🙂👍🏽", "numbers 12345 and 3.14 and ٣٤٥", "I'll we've SHE'D 'q'",
         "special <|endoftext|> inside", "", " ", "\n", "x" * 50, "mixed123abc 4 5 6", "  \n  \t "]


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bpe")
    tk = ByteLevelBPETokenizer()
    tk.train_from_iterator(CORPUS, vocab_size=420, min_frequency=2, special_tokens=["<|endoftext|>"])
    tk.save_model(str(d))
    tk.save(str(d / "tokenizer.json"))
    return d


def test_an_id_past_the_vocabulary_decodes_as_tokenizers_skips_it(bpe_dir):
    """An embedding with rows past the tokenizer's ids (Qwen2.5: 271) can generate such an id: HF's tokenizers skip it
    in decode; ours raised KeyError, mid-generation."""
    ours, ref = load_tokenizer(bpe_dir), Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    ids = ours.encode(TEXTS[0])
    ids = ids[:2] + [ours.vocab_size, ours.vocab_size + 270] + ids[2:]
    assert ours.decode(ids) == ref.decode(ids) == TEXTS[0]


def test_vocab_and_merges_match_gpt2_tokenizer(bpe_dir, tmp_path):
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(bpe_dir / name, tmp_path / name)
    ours, ref = load_tokenizer(tmp_path), GPT2Tokenizer(str(bpe_dir / "vocab.json"), str(bpe_dir / "merges.txt"))
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == ref.encode(text), text
        assert ours.decode(ids) == ref.decode(ids) == text
    assert ours.eos_id == ours.bos_id == ref.convert_tokens_to_ids("<|endoftext|>")
    assert not ours.add_bos and ours.encode("a", eos=True)[-1] == ours.eos_id


def test_tokenizer_json_matches_tokenizers(bpe_dir):
    ours, ref = load_tokenizer(bpe_dir), Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    for text in TEXTS:
        assert ours.encode(text) == ref.encode(text).ids, text


def test_tokenizer_json_normal_forms_are_applied_other_normalizers_refused(bpe_dir, tmp_path):
    """A byte-level BPE tokenizer.json with a normalizer: tokenizers normalizes the text first, so "Cafe\u0301" gave
    other ids than ours (silently). A Unicode normal form (Qwen2's and GPT-NeoX's NFC, NFD, NFKC, NFKD; alone or as a
    one-step Sequence) is applied as tokenizers applies it; anything else (a Lowercase) is refused, naming it. An
    empty Sequence is none."""
    ref = Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    texts = [*TEXTS, "Cafe\u0301 ABC \ufb01 \u2460 \u1e9b\u0323 Å Å \uff21\uff22 한국어 x\u0308\u0301"]
    for norm in (normalizers.NFC(), normalizers.NFD(), normalizers.NFKC(), normalizers.NFKD(),
                 normalizers.Sequence([normalizers.NFC()])):
        ref.normalizer = norm
        ref.save(str(tmp_path / "tokenizer.json"))
        assert ref.encode(texts[-1]).ids != load_tokenizer(bpe_dir).encode(texts[-1])  # it matters
        assert [load_tokenizer(tmp_path).encode(t) for t in texts] == [ref.encode(t).ids for t in texts], norm
    for norm, name in [(normalizers.Lowercase(), "Lowercase"),
                       (normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()]),
                        r"Sequence\['NFC', 'Lowercase'\]")]:
        ref.normalizer = norm
        ref.save(str(tmp_path / "tokenizer.json"))
        with pytest.raises(NotImplementedError, match=f"tokenizer.json: normalizer {name} is not applied by lorasp"):
            load_tokenizer(tmp_path)
    ref.normalizer = normalizers.Sequence([])
    ref.save(str(tmp_path / "tokenizer.json"))
    assert all(load_tokenizer(tmp_path).encode(t) == ref.encode(t).ids for t in TEXTS)


@pytest.mark.parametrize("prefix_space", [False, True])
def test_added_tokens_are_found_as_tokenizers_finds_them(bpe_dir, tmp_path, prefix_space):
    """tokenizers finds an added token marked normalized: false in the raw text, one marked true in the normalized
    text (its own text normalized too), and gives ByteLevel's prefix space to each text between them. Ours normalized
    the whole text first and found every added token in it (NFKC: "＜|endoftext|＞" was <|endoftext|>), and gave one
    prefix space, at the start ("<|endoftext|>hello": " " then it, not it then " hello")."""
    ref = Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    ref.normalizer = normalizers.NFKC()
    ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    ref.add_tokens([AddedToken("\ufb01x", normalized=True), AddedToken("<\uff21>", normalized=True),
                    AddedToken("<\uff22>", normalized=False)])
    ref.save(str(tmp_path / "tokenizer.json"))
    ours = load_tokenizer(tmp_path)
    texts = [*TEXTS, "\uff1c|endoftext|\uff1e x", "fix \ufb01x <A> <\uff21>", "<\uff22> <B> x<|endoftext|>\u0338",
             "<|endoftext|>hello", "a<|endoftext|>the fix", "<|endoftext|> the<|endoftext|>"]
    assert [ours.encode(t) for t in texts] == [ref.encode(t).ids for t in texts]


def flagged_texts(tokens):
    """Texts that put each token at the start, the end, inside a word, beside another, and after and before runs of
    spaces, newlines, tabs, Unicode spaces (U+3000, U+00A0; U+001C: str.isspace, not Unicode's White_Space), word
    characters (a combining accent, "_", a digit) and punctuation."""
    around = ["", " ", "  ", "\n", " \n\t", "\u3000", "\xa0", "\x1c", "x", "a\u0301", "_", "1", ".", "日"]
    return [text for token in tokens for left in around for right in around for text in
            (left + token + right, f"Hi{left}{token}{right}there", f"A {left}{token}{right}{tokens[0]} b")]


@pytest.mark.parametrize("normalizer, prefix_space", [(None, False), (None, True), ("NFKC", False)])
def test_added_token_flags_as_tokenizers(bpe_dir, tmp_path, normalizer, prefix_space):
    """tokenizer.json's lstrip / rstrip / single_word on added tokens (RoBERTa's <mask> lstrip; chat tokenizers'
    markers rstrip): tokenizers takes the whitespace beside the token into it, and leaves a single_word token that
    touches a word character as text. Ours ignored all three ("a <mask>": " " then <mask>, not <mask> alone)."""
    ref = Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    ref.normalizer = normalizer and normalizers.NFKC()
    ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    flagged = [AddedToken("<mask>", lstrip=True, special=True), AddedToken("<|im_end|>", rstrip=True, special=True),
               AddedToken("<|im_start|>", lstrip=True, rstrip=True, normalized=True),
               AddedToken("ony", single_word=True, normalized=True),
               AddedToken("<w>", single_word=True, lstrip=True, rstrip=True, special=True),
               AddedToken("\ufb01x", single_word=True, rstrip=True, normalized=True)]  # (NFKC: found as "fix")
    ref.add_tokens(flagged)
    ref.save(str(tmp_path / "tokenizer.json"))
    ours = load_tokenizer(tmp_path)
    texts = flagged_texts([t.content for t in flagged] + ["<|im_start|><|im_end|>"]) + [
        "Anthony ony, <w>ony <w> fix \ufb01x", "<mask> <mask>  <mask>", "<|im_end|> <mask>", ""]
    expected = [ref.encode(t).ids for t in texts]
    assert [ours.encode(t) for t in texts] == expected and len(texts) == 4120
    ours.flags = {}                                            # (the flags change 2,800 of these texts' ids)
    assert sum(ours.encode(t) != ids for t, ids in zip(texts, expected)) > 2500


def test_added_token_flags_in_tokenizer_config_as_transformers(bpe_dir, tmp_path):
    """A slow tokenizer's save (vocab.json + merges.txt) that transformers builds as a Qwen2Tokenizer: the flags of
    tokenizer_config.json's added_tokens_decoder hold as in a tokenizer.json (ours ignored them)."""
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(bpe_dir / name, tmp_path / name)
    vocab = json.loads((bpe_dir / "vocab.json").read_text())
    entry, n = dict(special=True, normalized=False, single_word=False, lstrip=False, rstrip=False), len(vocab)
    added = {vocab["<|endoftext|>"]: entry | dict(content="<|endoftext|>"),
             n: entry | dict(content="<|im_start|>", rstrip=True),
             n + 1: entry | dict(content="<|im_end|>", lstrip=True, single_word=True)}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(dict(
        tokenizer_class="Qwen2Tokenizer", added_tokens_decoder=added, eos_token="<|endoftext|>")))
    hf, ours = AutoTokenizer.from_pretrained(tmp_path), load_tokenizer(tmp_path)
    texts = flagged_texts(["<|im_start|>", "<|im_end|>"])
    expected = [hf(t).input_ids for t in texts]
    assert n in expected[0] and [ours.encode(t) for t in texts] == expected
    ours.flags = {}
    assert sum(ours.encode(t) != ids for t, ids in zip(texts, expected)) > 800


@pytest.mark.parametrize("first", ["Digits", "Split"])
def test_a_prefix_space_after_digits_or_a_split_is_refused(bpe_dir, tmp_path, first):
    """ByteLevel's add_prefix_space after a Digits or Split pre-tokenizer: tokenizers gives each of their pieces a
    space ("a1b": " a", " 1", " b"); ours gave the text one, silently other ids. Refused, naming the file (with
    ByteLevel alone it is one space a text, as ours: test_added_tokens_are_found_as_tokenizers_finds_them)."""
    ref = Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    split = pre_tokenizers.Digits(individual_digits=True) if first == "Digits" else pre_tokenizers.Split(
        Regex(r"\p{L}+|\p{N}|[^\s\p{L}\p{N}]+|\s+"), behavior="isolated")
    ref.pre_tokenizer = pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=True,
                                                                                 use_regex=first == "Digits")])
    ref.save(str(tmp_path / "tokenizer.json"))
    assert ref.encode("a1b").ids.count(ref.token_to_id("\u0120")) == 3             # (each piece its own space)
    with pytest.raises(NotImplementedError, match=f"{tmp_path / 'tokenizer.json'}: ByteLevel's add_prefix_space after "
                                                  f"a {first} pre-tokenizer"):
        load_tokenizer(tmp_path)


def test_bpe_add_bos_token_as_transformers(bpe_dir, tmp_path):
    """tokenizer_config.json's add_bos_token true: transformers' GPT2Tokenizer starts a text with <|endoftext|>; ours
    did not (the setting was read for no byte-level BPE)."""
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(bpe_dir / name, tmp_path / name)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer",
                                                                "add_bos_token": True, "bos_token": "<|endoftext|>"}))
    ref, tok = AutoTokenizer.from_pretrained(tmp_path), load_tokenizer(tmp_path)
    for text in TEXTS:
        assert tok.encode(text) == ref.encode(text), text
    assert tok.encode("Hello")[0] == tok.bos_id


def test_tokenizer_json_template_bos_as_tokenizers(bpe_dir, tmp_path):
    """A tokenizer.json whose post-processor puts a BOS before every text (TemplateProcessing "<|endoftext|> $A"):
    tokenizers and transformers start each text with it; ours left it out."""
    ref = Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    bos = ref.token_to_id("<|endoftext|>")
    ref.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A",
                                                       special_tokens=[("<|endoftext|>", bos)])
    ref.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path)
    for text in TEXTS:
        assert tok.encode(text) == ref.encode(text).ids, text
    assert tok.encode("a", bos=False) == ref.encode("a", add_special_tokens=False).ids


@pytest.mark.parametrize("pair", ["$A $B:1", "<|endoftext|> $A $B:1"])
def test_a_pair_template_that_marks_no_boundary_keeps_our_gpt2_marks(bpe_dir, tmp_path, pair):
    """transformers 5 saves GPT-2's tokenizer.json with TemplateProcessing "$A" / "$A $B:1": a pair joined with
    nothing. GLUE's GPT-2 input is <|endoftext|> A <|endoftext|> B <|endoftext|> (docs/paper-experiments.md: without
    a mark the classifier cannot tell where A ends, and its last token would not have read the pair), as the Hub's
    tokenizer.json (a ByteLevel post-processor) and vocab.json + merges.txt give it. Following every template gave
    A B (and A alone, no closing mark): a GLUE adapter scored on other inputs than it trained on."""
    ref = Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    eot = ref.token_to_id("<|endoftext|>")
    ref.post_processor = processors.TemplateProcessing(single=pair.replace(" $B:1", ""), pair=pair,
                                                       special_tokens=[("<|endoftext|>", eot)])
    ref.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(bpe_dir / name, plain / name)
    ours, hub = load_tokenizer(tmp_path), load_tokenizer(plain)
    for a, b in (("Hello world", "two  spaces"), ("numbers 12345", None), ("x" * 50, "Hello"), ("", "")):
        assert ours.encode_pair(a, b, 20) == hub.encode_pair(a, b, 20), (a, b)
    ids, types = ours.encode_pair("Hello", "world")
    assert ids.count(eot) == 3 and ids[-1] == eot and types[-1] == 1


@pytest.mark.parametrize("template, cfg", [
    ("$A", {"add_bos_token": True}), ("$A", {"add_eos_token": True}), (None, {"add_bos_token": True}),
    ("<|endoftext|> $A", {"add_bos_token": False}), ("$A <|endoftext|>", {"add_eos_token": False}),
])
def test_tokenizer_json_decides_over_tokenizer_config_as_transformers(bpe_dir, tmp_path, capsys, template, cfg):
    """Where a tokenizer.json is read, transformers drops tokenizer_config.json's add_bos_token and add_eos_token: the
    post-processor (or its absence) says what a text starts and ends with. Ours followed the config: an <|endoftext|>
    before or after every text that transformers' encoding of the same folder has not, or none where it has one. Now
    tokenizer.json's, with a note where the two disagree. (Without a tokenizer.json the config is read, as
    test_bpe_add_bos_token_as_transformers checks.)"""
    ref = Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    if template:
        ref.post_processor = processors.TemplateProcessing(single=template, pair=f"{template} $B:1", special_tokens=[
            ("<|endoftext|>", ref.token_to_id("<|endoftext|>"))] if "<" in template else [])
    ref.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer", **cfg}))
    hf, tok = AutoTokenizer.from_pretrained(tmp_path), load_tokenizer(tmp_path)
    for text in TEXTS:
        assert tok.encode(text, eos=tok.add_eos) == hf(text).input_ids == ref.encode(text).ids, text
    key, value = next(iter(cfg.items()))
    assert f"tokenizer_config.json: {key} {str(value).lower()} is not what " in capsys.readouterr().out


def test_gpt2_file_names_and_config_ids(bpe_dir, tmp_path):
    """GPT-2's original names (encoder.json + vocab.bpe); config.json's special ids take precedence."""
    shutil.copy(bpe_dir / "vocab.json", tmp_path / "encoder.json")
    shutil.copy(bpe_dir / "merges.txt", tmp_path / "vocab.bpe")
    (tmp_path / "config.json").write_text(json.dumps({"bos_token_id": 5, "eos_token_id": [7, 8], "pad_token_id": 9}))
    tok = load_tokenizer(tmp_path)
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (5, 7, 9)
    ref = GPT2Tokenizer(str(bpe_dir / "vocab.json"), str(bpe_dir / "merges.txt"))
    assert tok.encode("Hello world") == ref.encode("Hello world")


def test_ids_need_not_follow_merge_order(bpe_dir):
    """RoBERTa-style vocabularies number tokens in their own order: ranks must map to the checkpoint's ids."""
    vocab = json.loads((bpe_dir / "vocab.json").read_text())
    perm = list(range(len(vocab)))
    random.Random(0).shuffle(perm)
    shuffled = {tok: perm[i] for tok, i in vocab.items()}
    merges = (bpe_dir / "merges.txt").read_text().split("\n")
    merges = [tuple(m.split()) for m in merges if m and not m.startswith("#")]
    ref = Tokenizer(models.BPE(shuffled, merges))
    ref.pre_tokenizer, ref.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    ref.add_special_tokens(["<|endoftext|>"])
    ours = BPETokenizer(shuffled, merges)
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == ref.encode(text).ids, text
        assert ours.decode(ids) == text


@pytest.mark.parametrize("digits,prefix", [(True, False), (False, True)])
def test_digit_splitting_and_prefix_space(tmp_path, digits, prefix):
    """SmolLM2's pre-tokenizer: single digits, then GPT-2's regex; and ByteLevel(add_prefix_space=True)."""
    steps = [pre_tokenizers.Digits(individual_digits=True)] if digits else []
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence(steps + [pre_tokenizers.ByteLevel(add_prefix_space=prefix)])
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=420, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tk.save(str(tmp_path / "tokenizer.json"))
    ours = load_tokenizer(tmp_path)
    for text in TEXTS + ["1 22 333 4444", "x1y2", "  7"]:
        assert ours.encode(text) == tk.encode(text).ids, text


def test_unsupported_pre_tokenizer_is_refused(tmp_path):
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300))
    tk.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(NotImplementedError, match="Whitespace"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(UserError, match=r"no tokenizer file \(tokenizer.model"):   # the user's to fix: one line
        load_tokenizer(tmp_path)


def test_damaged_tokenizer_files_are_errors_naming_the_file(bpe_dir, tmp_path):
    """A cut-off download: one line naming the file (train.py prints a ValueError as `error: ...`), not sentencepiece's
    RuntimeError traceback or json's message without a file."""
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=300, model_type="bpe", minloglevel=2)
    model = tmp_path / "tokenizer.model"
    model.write_bytes(model.read_bytes()[:3000])
    with pytest.raises(ValueError, match=f"{model}: not a sentencepiece model"):
        load_tokenizer(tmp_path)
    model.unlink()
    for name in ("tokenizer.json", "vocab.json"):
        (tmp_path / name).write_text((bpe_dir / name).read_text()[:100])
        shutil.copy(bpe_dir / "merges.txt", tmp_path)
        with pytest.raises(ValueError, match=f"{tmp_path / name}, line [0-9]+: not valid JSON"):
            load_tokenizer(tmp_path)
        (tmp_path / name).unlink()
    (tmp_path / "tokenizer.json").write_text(json.dumps({"version": "1.0", "added_tokens": []}))  # valid JSON, no model
    with pytest.raises(ValueError, match=f"{tmp_path / 'tokenizer.json'}: no \"model\" object"):
        load_tokenizer(tmp_path)


def test_llama_tokenizer_json_alone_as_transformers_reads_it(tmp_path):
    """transformers 5 saves a Llama tokenizer as tokenizer.json only (sentencepiece's BPE under a Metaspace
    pre-tokenizer): it was refused ("copy the base model's tokenizer.model"); now read as a sentencepiece model scored
    by merge rank (tokenizer.sentencepiece_json), to transformers' ids (tests/test_real_tokenizers.py: Mistral's and
    LLaMA's)."""
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=400, model_type="bpe", byte_fallback=True, minloglevel=2)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    AutoTokenizer.from_pretrained(tmp_path).save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved" / "tokenizer.model").exists()
    ours, ref = load_tokenizer(tmp_path / "saved"), AutoTokenizer.from_pretrained(tmp_path / "saved")
    for text in [*CORPUS, " two  spaces", "über</s>x <s>", "\tnew\nline"]:
        assert ours.encode(text) == ref(text).input_ids, text


def test_sentencepiece_llama_convention(tmp_path):
    """A tiny sentencepiece BPE trained with LLaMA's settings (unk 0, bos 1, eos 2, no pad, byte fallback)."""
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=400, model_type="bpe", character_coverage=1.0, byte_fallback=True,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    ref, tok = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model")), load_tokenizer(tmp_path)
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.add_bos) == (1, 2, None, True)
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == ref.encode(text, add_bos=True), text
        assert tok.encode(text, bos=False, eos=True) == ref.encode(text, add_eos=True)
        assert tok.decode(ids) == ref.decode(ids)
    assert tok.decode(tok.encode("Unicode: Ωμέγα 🙂")) == "Unicode: Ωμέγα 🙂"  # byte fallback round-trips
    (tmp_path / "config.json").write_text(json.dumps({"pad_token_id": 0}))
    assert load_tokenizer(tmp_path).pad_id == 0


def test_sentencepiece_ids_are_shared_int_objects(tmp_path):
    """sentencepiece makes a new 32-byte int per token: Alpaca's 52,002 records on Llama 2's vocabulary held 366 MiB
    as tokenized examples, 230 MiB of them those ints. Every encode (after a prompt, between added tokens, T5's) now
    gives each id as one shared object, the ids unchanged."""
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=400, model_type="bpe", byte_fallback=True, minloglevel=2)
    ref = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    records = [{"instruction": t, "input": "", "output": t + " </s> " + t} for t in TEXTS]
    for tok in (load_tokenizer(tmp_path), T5Tokenizer(str(tmp_path / "tokenizer.model"))):
        (first, _), (again, _) = (tokenize_records(records, tok, 10_000) for _ in range(2))
        ids = [i for a, b in zip(first, again) for i, j in zip(a["input_ids"], b["input_ids"]) if i is j]
        assert len(ids) == sum(len(e["input_ids"]) for e in first) and max(ids) > 256   # (-5..256: Python's own)
        assert tok.encode(TEXTS[0], bos=False, eos=False) == ref.encode(TEXTS[0])


def test_an_id_past_a_sentencepiece_vocabulary_decodes_as_transformers_skips_it(tmp_path):
    """An embedding with rows past the pieces (resized to a multiple of 64) can generate such an id: transformers'
    LlamaTokenizer skips it in decode; ours raised sentencepiece's OUT_OF_RANGE, mid-generation."""
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=400, model_type="bpe", byte_fallback=True, minloglevel=2)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    ours, ref = load_tokenizer(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    ids = ours.encode(TEXTS[0], bos=False)
    assert ids == ref(TEXTS[0], add_special_tokens=False).input_ids       # (one vocabulary)
    ids = ids[:2] + [400, 447] + ids[2:]
    assert ours.decode(ids) == ref.decode(ids) == TEXTS[0]


@pytest.mark.parametrize("add_bos", [False, True])
def test_sentencepiece_add_bos_token_as_transformers(tmp_path, add_bos):
    """tokenizer_config.json's add_bos_token (Yi's false): transformers' LlamaTokenizer starts a text with <s> or not
    as it says; ours added <s> whatever it said (every prompt and perplexity text began with a token the model never
    saw there)."""
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=400, model_type="bpe", byte_fallback=True, minloglevel=2)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "legacy": True,
                                                                "add_bos_token": add_bos}))
    ref, tok = AutoTokenizer.from_pretrained(tmp_path), load_tokenizer(tmp_path)
    for text in ["Hello world", "The quick brown fox.", "Unicode: Ωμέγα, 中文"]:  # (transformers 5 parts with
        assert tok.encode(text) == ref.encode(text), text                  # sentencepiece on trailing spaces)
    assert tok.encode("a", bos=True)[0] == tok.bos_id == 1                # asked for: still there




def test_sentencepiece_bos_is_never_config_json_s(tmp_path, capsys):
    """transformers' tokenizer never reads config.json: a text starts with the tokenizer's own <s> whatever
    bos_token_id config.json names, and the model was trained on what that tokenizer encodes. Ours started with
    config.json's piece where it named an ordinary one (5 here) or an added token; its eos is still taken (the token
    generation stops at: a chat fine-tune's <|im_end|>)."""
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=400, model_type="bpe", byte_fallback=True, minloglevel=2)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "legacy": True,
                                                                "add_bos_token": True}))
    (tmp_path / "config.json").write_text(json.dumps({"bos_token_id": 5, "eos_token_id": 6}))
    ref, tok = AutoTokenizer.from_pretrained(tmp_path), load_tokenizer(tmp_path)
    assert tok.encode("Hello world") == ref("Hello world").input_ids and (tok.bos_id, tok.eos_id) == (1, 6)
    assert "bos_token_id 5 is not the tokenizer's <s> (1); using 1" in capsys.readouterr().out

def test_sentencepiece_add_eos_token_as_transformers(tmp_path, capsys):
    """tokenizer_config.json's add_eos_token true: transformers' LlamaTokenizer ends every text with </s>. Where a
    model learns or is scored on a text, ours does too: a perplexity document ended without it (one token short of
    HF's); a record ends with one EOS (its response's), not two; a prompt the model continues gets none (it would end
    the answer before it starts), and the note says so, naming the setting."""
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=400, model_type="bpe", byte_fallback=True, minloglevel=2)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "legacy": True,
                                                                "add_bos_token": True, "add_eos_token": True}))
    ref, tok = AutoTokenizer.from_pretrained(tmp_path), load_tokenizer(tmp_path)
    assert "tokenizer_config.json's add_eos_token" in capsys.readouterr().out
    doc = tmp_path / "doc.txt"
    doc.write_text("The quick brown fox. Hello world", encoding="utf-8")
    assert perplexity_docs(str(doc), tok) == [(ref(doc.read_text()).input_ids, 1)]
    assert ref("Hello world").input_ids[-1] == tok.eos_id == 2
    record = {"instruction": "Say hello", "input": "", "output": "Hello world"}
    ids = tokenize_records([record], tok, 512)[0][0]["input_ids"]
    assert ids.count(2) == 1 and ids[-1] == 2
    prompt = alpaca_prompt(record)
    assert ref(prompt).input_ids[-1] == 2 and 2 not in tok.encode(prompt)  # no </s> where the model continues


@pytest.mark.parametrize("add_bos", [False, True])
@pytest.mark.parametrize("add_eos", [False, True])
def test_sentencepiece_pairs_as_transformers(tmp_path, add_bos, add_eos):
    """encode_pair on a sentencepiece (LLaMA) tokenizer: transformers' LlamaTokenizer builds [<s>] A [</s>] [<s>] B
    [</s>] as add_bos_token/add_eos_token say, B's part type 1, and truncates longest-first around those marks. Ours
    was BERT's layout whatever they said, <s> A </s> B </s> (a </s> where add_eos_token is false, no <s> before B)."""
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=400, model_type="bpe", byte_fallback=True, minloglevel=2)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "legacy": True,
                                                                "add_bos_token": add_bos, "add_eos_token": add_eos}))
    ref, tok = AutoTokenizer.from_pretrained(tmp_path), load_tokenizer(tmp_path)
    a, b = "The quick brown fox jumps over the lazy dog.", "Hello world, naïve café"
    want = ref(a, b, return_token_type_ids=True)
    assert tok.encode_pair(a, b) == (want.input_ids, want.token_type_ids)
    assert want.input_ids.count(1) == 2 * add_bos and want.input_ids.count(2) == 2 * add_eos  # the marks vary
    assert tok.encode_pair(a)[0] == ref(a).input_ids
    for n in (9, 12, 17):
        want = ref(a, b, return_token_type_ids=True, truncation="longest_first", max_length=n)
        assert tok.encode_pair(a, b, n) == (want.input_ids, want.token_type_ids), n


def test_tokenizer_json_template_eos_as_tokenizers(bpe_dir, tmp_path, capsys):
    """A tokenizer.json whose post-processor ends every text with a special token ("$A <eos>"): that token is the
    EOS (ours took <|endoftext|>: responses ended with a token the tokenizer never ends a text with) and a perplexity
    document ends with it, as tokenizers encodes it (ours did not)."""
    ref = Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    ref.add_special_tokens(["<eos>"])
    eos = ref.token_to_id("<eos>")
    ref.post_processor = processors.TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", eos)])
    ref.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path)
    assert "tokenizer.json's post-processor" in capsys.readouterr().out
    assert (tok.eos_id, tok.add_bos) == (eos, False)
    doc = tmp_path / "doc.txt"
    doc.write_text(TEXTS[0], encoding="utf-8")
    assert perplexity_docs(str(doc), tok) == [(ref.encode(TEXTS[0]).ids, 1)]
    assert tok.encode("a", eos=True) == ref.encode("a").ids

def test_sentencepiece_ids_win_over_a_config_that_disagrees(tmp_path, capsys):
    """Early LLaMA conversions' config.json says bos 0, eos 1, pad -1 while tokenizer.model has <unk> 0, <s> 1,
    </s> 2: transformers' tokenizer keeps <s> and </s> (not <unk> first and <s> last), and so do we, saying so."""
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=300, model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   minloglevel=2)
    (tmp_path / "config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": -1}))
    tok = load_tokenizer(tmp_path)
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, None)
    out = capsys.readouterr().out
    assert "bos_token_id 0 is not the tokenizer's <s> (1); using 1" in out
    assert "eos_token_id 1 is not the tokenizer's </s> (2); using 2" in out
    # a chat fine-tune (ChatML on a sentencepiece base): config.json's eos is the added <|im_end|>, past the pieces;
    # that one is taken (the model ends its answers with it), and an added token past the embedding is left out
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<|im_end|>": 300, "<pad>": 301}))
    (tmp_path / "config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 300}))
    tok = load_tokenizer(tmp_path)
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (1, 300, 302) and tok.encode("a<|im_end|>")[-1] == 300
    check_vocab(tok, 301, "m")                                  # <pad> 301 is past 301 rows: an early Llama-2 upload
    assert tok.vocab_size == 301 and tok.encode("<pad>")[-1] != 301 and "['<pad>'] have ids past" in \
        capsys.readouterr().out
    with pytest.raises(UserError, match="eos_id 300 is outside the model's embedding"):
        check_vocab(tok, 300, "m")


@pytest.mark.parametrize("legacy", [False, True])
def test_sentencepiece_added_tokens_match_tokenizers(tmp_path, legacy):
    """A chat fine-tune's folder: tokenizer.model plus tokenizer.json declaring <|im_start|>, <|im_end|> past its
    pieces (the embedding grown for them), saved by transformers. HF `tokenizers` on that tokenizer.json matches them
    whole in text; the text after one starts with "▁" again only in legacy mode (Metaspace prepend_scheme "always",
    not "first"; transformers 5's own LlamaTokenizer leaves it out in both, so it is the reference for legacy=False)."""
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=400, model_type="bpe", character_coverage=1.0, byte_fallback=True,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "legacy": legacy,
                                                                "add_bos_token": True}))
    hf = AutoTokenizer.from_pretrained(tmp_path)
    hf.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    hf.save_pretrained(tmp_path / "saved")
    shutil.copy(tmp_path / "tokenizer.model", tmp_path / "saved")  # as the Hub's repos keep it beside tokenizer.json
    ref, ours = Tokenizer.from_file(str(tmp_path / "saved" / "tokenizer.json")), load_tokenizer(tmp_path / "saved")
    assert ours.vocab_size == len(hf) == 402
    chat = ["<|im_start|>user\nHow many?<|im_end|>\n<|im_start|>assistant\nTwo.<|im_end|>", "Hello<|im_end|>world",
            "<|im_start|><|im_end|>", "x<|im_start|>", "<|im_end|>", "x<|im_end|> y", "a<|im_end|>  b", "<|im_end|> two"]
    for text in chat + [t for t in TEXTS if not t.startswith(" ")]:  # (" a": "▁▁a" in sentencepiece, "▁a" in HF)
        assert ours.encode(text) == ref.encode(text).ids, text
        if not legacy:
            assert ours.encode(text) == hf(text)["input_ids"], text
    for text in chat:  # legacy: "▁" after a marker reads as a space, in HF's decoding too ("<|im_end|>world" gains one)
        ids = ours.encode(text)
        assert ours.decode(ids) == (ref.decode(ids, skip_special_tokens=False).removeprefix("<s>").removeprefix(" ")
                                    if legacy else text), text


def test_sentencepiece_added_token_flags_in_tokenizer_config_as_transformers(tmp_path):
    """tokenizer.model + added_tokens.json, the flags in tokenizer_config.json's added_tokens_decoder (no
    tokenizer.json): transformers' LlamaTokenizer takes the whitespace beside an lstrip / rstrip token into it and
    leaves a single_word one inside a word as text; ours ignored the flags. (Left out, flags or not: runs of two spaces,
    which transformers' conversion of a tokenizer.model splits its own way, and a leading space: "▁▁a" in
    sentencepiece, "▁a" in HF.)"""
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=400, model_type="bpe", character_coverage=1.0, byte_fallback=True,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<|im_start|>": 400, "<|im_end|>": 401}))
    entry = dict(special=True, normalized=False, single_word=False, lstrip=False, rstrip=False)
    compared = 0
    for start, end in [(dict(rstrip=True), dict(lstrip=True)),
                       (dict(single_word=True), dict(lstrip=True, rstrip=True))]:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(dict(
            tokenizer_class="LlamaTokenizer", legacy=False, add_bos_token=True, added_tokens_decoder={
                400: entry | start | dict(content="<|im_start|>"), 401: entry | end | dict(content="<|im_end|>")})))
        hf, ours = AutoTokenizer.from_pretrained(tmp_path), load_tokenizer(tmp_path)
        texts = [t for t in flagged_texts(["<|im_start|>", "<|im_end|>"]) if "  " not in t and t[:1] != " "]
        expected = [hf(t).input_ids for t in texts]
        assert [ours.encode(t) for t in texts] == expected
        ours.flags = {}
        assert sum(ours.encode(t) != ids for t, ids in zip(texts, expected)) > 100
        compared += len(texts)
    assert compared > 1000


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_sentencepiece_model_written_by_hand_encodes_as_the_trained_one(tmp_path, kind):
    """sentencepiece_model (what GGUF vocabularies and T5's tokenizer.json become) rebuilt from a trained model's
    pieces, scores and types: the same ids as the trained model's own file (its normalizer the identity: a
    precompiled charsmap is not something the sentencepiece library hands back)."""
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "m"), minloglevel=2,
                                   vocab_size=400 if kind == "bpe" else 340, model_type=kind, character_coverage=1.0,
                                   byte_fallback=True, normalization_rule_name="identity",
                                   remove_extra_whitespaces=kind == "unigram")
    ref = spm.SentencePieceProcessor(model_file=str(tmp_path / "m.model"))
    n = ref.get_piece_size()
    types = [2 if ref.is_unknown(i) else 3 if ref.is_control(i) else 6 if ref.is_byte(i) else 1 for i in range(n)]
    ours = SentencePieceTokenizer(proto=sentencepiece_model(
        [ref.id_to_piece(i) for i in range(n)], [ref.get_score(i) for i in range(n)], types, kind == "unigram", True,
        remove_extra_whitespaces=kind == "unigram"))
    for text in TEXTS:
        assert ours.encode(text) == ref.encode(text, add_bos=True), text


def test_eos_list_as_llama3_instruct(bpe_dir, tmp_path):
    """Llama 3.1 Instruct: tokenizer_config.json's eos_token <|eot_id|>, config.json's eos_token_id a list [128001,
    128008, 128009]. Ours took the list's first (<|end_of_text|>: records ended with it, generation stopped only on
    it, so an answer ran on past the <|eot_id|> the model emits); now the tokenizer's own EOS, as transformers'
    AutoTokenizer, and generation stops on every listed id (generation_config.json's list over config.json's), as
    transformers' generate."""
    import torch
    from generate import generate
    ref = Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    ref.add_special_tokens(["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"])
    ref.save(str(tmp_path / "tokenizer.json"))
    end, eom, eot = (ref.token_to_id(t) for t in ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                                "eos_token": "<|eot_id|>"}))
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": [end, eom, eot]}))
    tok = load_tokenizer(tmp_path)
    assert tok.eos_id == AutoTokenizer.from_pretrained(tmp_path).eos_token_id == eot
    assert tok.stops == [eot, end, eom]
    assert tok.encode("Hello", eos=True)[-1] == eot

    table = torch.arange(1, 513) % 512         # a causal LM that continues i with i + 1, but 5 with <|eom_id|> and
    table[5], table[9] = eom, end              # 9 with <|end_of_text|>

    class Scripted(torch.nn.Module):
        config = type("C", (), {"n_layer": 1})

        def forward(self, ids, attention_mask=None, cache=None, last_only=False):
            return torch.nn.functional.one_hot(table[ids[:, -1:]], 512).float()
    out = generate(Scripted(), torch.tensor([[4], [7]]), 8, eos_id=tok.stops)[:, 1:].tolist()
    assert out == [[5, eom, eot], [8, 9, end]]  # each row stops at its own stop id; done rows emit EOS; then all stop
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [eom]}))
    assert load_tokenizer(tmp_path).stops == [eot, eom]


LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")  # Llama 3's tokenizer.json Split regex, as published


@pytest.mark.parametrize("ignore_merges", [False, True])
def test_split_regex_pre_tokenizer_as_llama3(tmp_path, ignore_merges):
    """Llama 3's tokenizer.json: Sequence[Split(its regex, Isolated), ByteLevel(use_regex false)] (and the BPE's
    ignore_merges, as Llama 3 sets it). It was refused ("only byte-level BPE with GPT-2's regex"), so no Llama 3.x
    checkpoint could be trained; now its regex is the pre-tokenizer: ids equal the tokenizers library's and
    transformers' on every test text (digits in threes, case-insensitive contractions, newlines kept apart)."""
    ref = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    ref.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    ref.decoder = decoders.ByteLevel()
    ref.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=500, special_tokens=["<|begin_of_text|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    ref.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    tok, hf = load_tokenizer(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    texts = TEXTS + ["I'LL SHE'S they'Re", "1234567 and 12", "a\n\n\nb \n c", "x  \n\ty", "naïve café 🙂🙂"]
    for text in texts:
        assert tok.encode(text) == ref.encode(text).ids == hf(text).input_ids, text
        assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("split", [dict(behavior="removed", invert=False), dict(behavior="isolated", invert=True)])
def test_other_split_pre_tokenizers_are_refused(tmp_path, split):
    """A Split that drops what matches, or keeps what does not, is not a regex's findall (tiktoken's split): refused by
    name, not read as Llama 3's."""
    ref = Tokenizer(models.BPE())
    ref.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_PATTERN), **split),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    ref.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    ref.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(NotImplementedError, match=r"one Split regex \(Llama 3's\) is supported \(found \['Split', "
                                                  r"'ByteLevel'\]\)"):
        load_tokenizer(tmp_path)


def test_named_id_reads_a_token_through_the_public_encode(bpe_dir):
    """tokenizer.named_id (tokenizer_config.json's "eos_token" -> its id) called the tokenizer's private _encode, so a
    tokenizer with only the public encode (what CONTRACT.md promises) raised AttributeError; now it asks encode for
    the text alone (no BOS, no EOS), which for our tokenizers is the same ids."""
    class Public:                                              # encode(text, bos, eos) and nothing private
        def encode(self, text, bos=None, eos=False):
            return {"<|im_end|>": [7], "two words": [3, 4]}[text] + [2] * eos
    assert named_id(Public(), {"content": "<|im_end|>"}) == 7 and named_id(Public(), "two words") is None
    tok = load_tokenizer(bpe_dir)                               # a real one: the id transformers gives the text
    ref = GPT2Tokenizer(str(bpe_dir / "vocab.json"), str(bpe_dir / "merges.txt"))
    assert named_id(tok, {"content": "<|endoftext|>"}) == ref.convert_tokens_to_ids("<|endoftext|>") == 0
