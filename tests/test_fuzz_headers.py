"""Header and metadata mutations of real files that a seeded fuzzing pass (thirtieth session) found loading silently
wrong, ending in a MemoryError, OverflowError or TypeError naming nothing, or hanging: each replayed here on a copy of
the tiny Q4_K_M GGUF llama.cpp's own quantizer wrote (tests/data/llamacpp/), located with gguf's GGUFReader (an
independent reader) and patched in place, or on T5's real tokenizer.json and MiniLM's config.json (fetched by
tests/fetch_real.py), then loaded as a user loads it. Each must now be an error naming the file and the field."""
import json
import os
import re
import shutil
import struct

import pytest
from gguf import GGUFReader

from fetch_real import path
from model import load_pretrained, load_tokenizer

TINY = os.path.join(os.path.dirname(__file__), "data", "llamacpp", "tiny-Q4_K_M.gguf")


def part_offsets(field):
    """The byte offset of each of a GGUFReader field's parts in the file."""
    at, out = field.offset, []
    for p in field.parts:
        out.append(at)
        at += p.nbytes
    return out


def patch(raw, reader, key=None, tensor=None, part=-1, value=b""):
    """raw with the bytes of part `part` of metadata `key` (or tensor `tensor`'s table entry) replaced by `value`."""
    field = reader.fields[key] if key else next(t for t in reader.tensors if t.name == tensor).field
    at = part_offsets(field)[part]
    return raw[:at] + value + raw[at + len(value):]


U32, I32, F32, U64 = (lambda v, f=f: struct.pack("<" + f, v) for f in "IifQ")
# (loader, mutation, expected message fragment); parts: metadata [key length, key, type, value] (an array: [..., type,
# item type, count, items...]); a tensor [name length, name, n_dims, dims, ggml type, offset]
CASES = [
    ("model", "metadata count +1 (MemoryError)",
     lambda raw, r: raw[:16] + U64(len(r.fields) - 3 + 1) + raw[24:], r"truncated GGUF header, or a corrupt one"),
    ("model", "tensor count + 2^40 (OverflowError)", lambda raw, r: raw[:8] + U64(21 + (1 << 40)) + raw[16:],
     r"the tensor count is 1099511627797, more than"),
    ("model", "general.architecture's length + 2^40 (MemoryError)",
     lambda raw, r: patch(raw, r, "general.architecture", part=3, value=U64(5 + (1 << 40))),
     r"the length of metadata 'general\.architecture' is 1099511627781"),
    ("model", "general.architecture's length + 1 (MemoryError)",
     lambda raw, r: patch(raw, r, "general.architecture", part=3, value=U64(6)), r"GGUF header, or a corrupt one"),
    ("tokenizer", "tokenizer.ggml.tokens' length + 2^40 (MemoryError)",
     lambda raw, r: patch(raw, r, "tokenizer.ggml.tokens", part=4, value=U64(300 + (1 << 40))),
     r"array 'tokenizer\.ggml\.tokens''s length is 1099511628076"),
    ("tokenizer", "tokenizer.ggml.tokens an array of arrays (OverflowError)",
     lambda raw, r: patch(raw, r, "tokenizer.ggml.tokens", part=3, value=U32(9)), r"GGUF header, or a corrupt one"),
    ("model", "n_dims 3 of a 2-d tensor (MemoryError)",
     lambda raw, r: patch(raw, r, tensor="token_embd.weight", part=2, value=U32(3)), r"GGUF header"),
    ("model", "n_dims 5", lambda raw, r: patch(raw, r, tensor="output.weight", part=2, value=U32(5)),
     r"tensor 'output\.weight' has 5 dimensions in the GGUF header \(at most 4\)"),
    ("model", "an F32 norm's type Q8_0 (SILENT: 272 of its bytes read)",
     lambda raw, r: patch(raw, r, tensor="blk.0.attn_norm.weight", part=4, value=U32(8)),
     r"tensor '[\w.]+' has offset \d+ in the GGUF header, expected \d+"),
    ("model", "an F32 norm's offset + 32 (SILENT: the next tensor's bytes)",
     lambda raw, r: patch(raw, r, tensor="blk.0.attn_norm.weight", part=5,
                          value=U64(next(t for t in r.tensors if t.name == "blk.0.attn_norm.weight").data_offset
                                    - r.data_offset + 32)),
     r"tensor 'blk\.0\.attn_norm\.weight' has offset \d+ in the GGUF header, expected \d+"),
    ("model", "a Q4_K matrix at another's offset (SILENT: another matrix's weights)",
     lambda raw, r: patch(raw, r, tensor="blk.0.attn_v.weight", part=5,
                          value=U64(next(t for t in r.tensors if t.name == "blk.0.attn_q.weight").data_offset
                                    - r.data_offset)), r"tensor 'blk\.0\.attn_v\.weight' has offset"),
    ("model", "the last tensor's type -> Q2_K (SILENT: fewer bytes read)",
     lambda raw, r: patch(raw, r, tensor=max(r.tensors, key=lambda t: t.data_offset).name, part=4, value=U32(10)),
     r"\d+ bytes after the last tensor that no tensor covers"),
    ("model", "llama.block_count 2^32 - 1 (a hang: 4 billion layers built)",
     lambda raw, r: patch(raw, r, "llama.block_count", value=U32(0xFFFFFFFF)),
     r"GGUF metadata llama\.block_count = 4294967295, but the tensors are of 2 blocks"),
    ("tokenizer", "eos id 2^32 - 1 (SILENT)", lambda raw, r: patch(raw, r, "tokenizer.ggml.eos_token_id",
                                                                   value=U32(0xFFFFFFFF)),
     r"GGUF metadata tokenizer\.ggml\.eos_token_id = 4294967295; a token id of its 300 tokens is needed"),
    ("tokenizer", "eos id an int32 -1 (SILENT)", lambda raw, r: patch(
        patch(raw, r, "tokenizer.ggml.eos_token_id", value=I32(-1)), r, "tokenizer.ggml.eos_token_id", part=2,
        value=U32(5)), r"tokenizer\.ggml\.eos_token_id = -1; a token id"),
    ("tokenizer", "eos id a float32 (SILENT)", lambda raw, r: patch(
        patch(raw, r, "tokenizer.ggml.eos_token_id", value=F32(2.0)), r, "tokenizer.ggml.eos_token_id", part=2,
        value=U32(6)), r"tokenizer\.ggml\.eos_token_id = 2\.0; a token id"),
    ("tokenizer", "bos id a float32 (TypeError from sentencepiece)", lambda raw, r: patch(
        raw, r, "tokenizer.ggml.bos_token_id", part=2, value=U32(6)), r"tokenizer\.ggml\.bos_token_id = [\d.e-]+; a"),
    ("tokenizer", "token types read as float32 (SILENT: no control token)",
     lambda raw, r: patch(raw, r, "tokenizer.ggml.token_type", part=3, value=U32(6)),
     r"GGUF metadata tokenizer\.ggml\.token_type holds [\d.e-]+, not of type int"),
]


@pytest.mark.parametrize("loader, mutation, expected", [(c[0], c[1], c[3]) for c in CASES], ids=[c[1] for c in CASES])
def test_gguf_header_mutation_is_an_error_naming_the_file_and_field(tmp_path, loader, mutation, expected):
    with open(TINY, "rb") as f:
        raw = f.read()
    mutate = next(c[2] for c in CASES if c[1] == mutation)
    path = tmp_path / "mutated.gguf"
    path.write_bytes(mutate(raw, GGUFReader(TINY)))
    assert path.read_bytes() != raw
    with pytest.raises((ValueError, NotImplementedError), match=re.escape(str(path)) + ": .*" + expected):
        (load_pretrained if loader == "model" else load_tokenizer)(path)


# tokenizer.json parts of another JSON type (T5's Unigram, Llama 3's and Mistral's BPE; fetched by tests/fetch_real.py)
JSON_CASES = [
    ("t5", "a Unigram score a string (float() ValueError)", lambda t: t["model"]["vocab"].__setitem__(9, ["x", "y"]),
     r"model\.vocab\[9\] is \[\"x\", \"y\"\], not a \[piece, score\] pair"),
    ("t5", "a Unigram piece an int (TypeError)", lambda t: t["model"]["vocab"].__setitem__(9, [5, -1.0]),
     r"model\.vocab\[9\] is \[5, -1\.0\], not a \[piece, score\] pair"),
    ("t5", "a Unigram entry of three (unpacking ValueError)", lambda t: t["model"]["vocab"][9].append(1),
     r"model\.vocab\[9\] is .*, not a \[piece, score\] pair"),
    ("t5", "an added token's content an int (SILENT)", lambda t: t["added_tokens"][0].__setitem__("content", 7),
     r"an added_tokens entry is \{\"id\": 0, \"content\": 7, .*, not \{\"id\": an integer >= 0"),
    ("t5", "added_tokens an object (TypeError)", lambda t: t.__setitem__("added_tokens", {"a": 1}),
     r"added_tokens is \{\"a\": 1\}, not a list"),
    ("t5", "the normalizer a string (AttributeError)", lambda t: t.__setitem__("normalizer", "NFKC"),
     r"normalizer is \"NFKC\", not an object \(or null\)"),
    ("t5", "the pre_tokenizer a string (AttributeError)", lambda t: t.__setitem__("pre_tokenizer", "Metaspace"),
     r"pre_tokenizer is \"Metaspace\", not an object \(or null\)"),
    ("llama3", "an added token's id -1 (SILENT)", lambda t: t["added_tokens"][0].__setitem__("id", -1),
     r"an added_tokens entry is \{\"id\": -1, .*, not \{\"id\": an integer >= 0"),
    ("llama3", "a post-processor step of no known type (SILENT: no BOS)",
     lambda t: t.__setitem__("post_processor", {"type": "Sequence", "processors": [{"type": "Foo"}]}),
     r"a post_processor step is \{\"type\": \"Foo\"\}, not one the tokenizers library writes"),
    ("mistral/json", "a BPE id a string (TypeError)", lambda t: t["model"]["vocab"].__setitem__("AY", "7"),
     r"model\.vocab\['AY'\] is \"7\", not an id \(an integer >= 0\)"),
    ("mistral/json", "merges a string (unpacking ValueError)", lambda t: t["model"].__setitem__("merges", "a b"),
     r"model\.merges is \"a b\", not a list"),
    ("mistral/json", "a merge of three pieces (unpacking ValueError)", lambda t: t["model"]["merges"].__setitem__(
        0, "a b c"), r"model\.merges\[0\] is \"a b c\", not \"left right\" or \[left, right\]"),
]


@pytest.mark.parametrize("mutation", [c[1] for c in JSON_CASES])
def test_tokenizer_json_mutation_is_an_error_naming_the_file_and_entry(tmp_path, mutation):
    folder, _, mutate, expected = next(c for c in JSON_CASES if c[1] == mutation)
    with open(path(*folder.split("/"), "tokenizer.json"), encoding="utf-8") as f:
        t = json.load(f)
    mutate(t)
    (tmp_path / "tokenizer.json").write_text(json.dumps(t), encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "tokenizer.json")) + ": " + expected):
        load_tokenizer(tmp_path)


def test_minilm_config_pad_token_id_past_the_vocabulary_is_named(tmp_path):  # was nn.Embedding's AssertionError
    for name in ("model.safetensors", "vocab.txt"):  # (a symlink out of the folder is refused)
        shutil.copy(path("minilm", name), tmp_path / name)
    with open(path("minilm", "config.json"), encoding="utf-8") as f:
        config = json.load(f) | {"pad_token_id": 1 << 40}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "config.json")) + r": pad_token_id = 1099511627776 "
                       r"is not a row of the 30522-token embedding \(vocab_size\)"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize("model_type", [["bert"], {"bert": 1}])
def test_minilm_config_model_type_not_a_string_is_named(tmp_path, model_type):  # was "unhashable type: 'list'"
    (tmp_path / "config.json").write_text(json.dumps(json.load(open(path("minilm", "config.json"))) | {
        "model_type": model_type}), encoding="utf-8")
    with pytest.raises(NotImplementedError, match=re.escape(f"{tmp_path / 'config.json'}: model_type {model_type!r} "
                                                            "is not supported (")):
        load_pretrained(tmp_path)


def swap(raw, old, new):
    """raw with its one length-prefixed GGUF string `old` replaced by `new` (of as many bytes)."""
    old, new = (struct.pack("<Q", len(s.encode())) + s.encode() for s in (old, new))
    assert raw.count(old) == 1 and len(old) == len(new)
    return raw.replace(old, new)


@pytest.mark.parametrize("old, new, expected", [
    ("Ġ t", "ȕ t", r"merge 'ȕ' 't' holds 'ȕ', not one of byte-level BPE's characters"),   # was KeyError: 'ȕ'
    ("Ġt", "Ġq", r"tokens \['Ġt'\] are produced by merges but absent from the vocabulary")])  # named no file
def test_a_damaged_gguf_byte_level_vocabulary_names_the_file(tmp_path, old, new, expected):
    with open(path("llama.cpp", "ggml-vocab-gpt-2.gguf"), "rb") as f:
        (tmp_path / "v.gguf").write_bytes(swap(f.read(), old, new))
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "v.gguf")) + r": GGUF tokenizer\.ggml\.tokens / "
                       "merges: " + expected):
        load_tokenizer(tmp_path / "v.gguf")
