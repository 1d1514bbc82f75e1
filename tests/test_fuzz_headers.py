"""Header and metadata mutations of real files that a seeded fuzzing pass (thirtieth session) found loading silently
wrong, ending in a MemoryError, OverflowError or TypeError naming nothing, or hanging: each replayed here on a copy of
the tiny Q4_K_M GGUF llama.cpp's own quantizer wrote (tests/data/llamacpp/), located with gguf's GGUFReader (an
independent reader) and patched in place, then loaded as a user loads it. Each must now be an error naming the file
and the field."""
import os
import re
import struct

import pytest
from gguf import GGUFReader

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
     r"GGUF metadata tokenizer\.ggml\.token_type holds [\d.e-]+, not a int"),
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
