"""ggufread.py: llama.cpp's GGUF file (metadata, tokenizer and weights in one), read by hand (no gguf package).
Start at `read_gguf` (the header and tensor table), then `dequantize_ggml` (ggml's blocks to float32) and
`gguf_checkpoint` (a Llama's, Qwen2's or Qwen3's tensors under HF's names). `python checkpoint.py FILE.gguf` lists one.
"""
import glob
import math
import os
import re
import struct

import torch

from checkpoint import SAFETENSORS_DTYPES, inside, not_lfs_pointer, rope_halves

GGUF_VALUES = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}  # struct
GGML_TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 30: ("BF16", 1, 2),  # type id: (name, values, bytes) per block
              2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34),
              10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
              14: ("Q6_K", 256, 210)}
GGML_OTHERS = {9: "Q8_1", **dict(enumerate("Q8_K IQ2_XXS IQ2_XS IQ3_XXS IQ1_S IQ4_NL IQ3_S IQ2_S IQ4_XS I8 I16 I32 I64 "
                                           "F64 IQ1_M".split(), 15)), 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4"}  # not read
GGUF_NAMES = {  # llama.cpp's tensor names -> HF's (blk.N.attn_q.weight -> model.layers.N.self_attn.q_proj.weight)
    "token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head",
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}  # (Qwen3's)


def gguf_file(path):
    """path itself if it is a .gguf file; the one .gguf in a directory without config.json or params.json (of a split
    GGUF's parts, the first; not a symlink out of the directory, as a safetensors shard: `inside`); else None."""
    if os.path.isfile(path):
        return path if path.endswith(".gguf") else None
    if any(os.path.exists(os.path.join(path, f)) for f in ("config.json", "params.json")):
        return None
    found = sorted(glob.glob(os.path.join(path, "*.gguf")))
    if len(found) > 1 and not all(re.search(r"-\d{5}-of-\d{5}\.gguf$", f) for f in found):
        raise ValueError(f"{path}: {len(found)} .gguf files ({', '.join(map(os.path.basename, found))}): pass one")
    # (split: the first part; gguf_checkpoint reads that it is split, and says how to merge the parts)
    return inside(path, os.path.basename(found[0]), path) if found else None


def read_gguf(path):
    """A GGUF file's header -> (metadata {key: value}, tensors {name: (torch shape, ggml type id, byte offset)}).
    Little-endian: b"GGUF", version u32 (2 or 3), tensor count u64, metadata count u64; each metadata entry a key
    (string: u64 length + UTF-8), a value type u32 and the value (an array: item type u32, count u64, items); each
    tensor a name, n_dims u32, dims u64 (innermost first: the torch shape reversed), type u32 and an offset u64 into
    the data, which starts at the first multiple of general.alignment (32) after the header."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        def room(n, least, what):  # a count the rest of the file cannot hold: named (not a MemoryError)
            if what and n * least > size - f.tell():
                raise ValueError(f"{path}: truncated GGUF header, or a corrupt one: {what} is {n}, more than the "
                                 f"{size - f.tell()} bytes left at byte {f.tell()} hold")

        def read(fmt, n=1, what=None):
            room(n, struct.calcsize(fmt), what)
            raw = f.read(struct.calcsize(fmt) * n)
            if len(raw) < struct.calcsize(fmt) * n:
                raise ValueError(f"{path}: truncated GGUF header")
            return struct.unpack(f"<{n}{fmt}", raw)

        def string(what="a string's length"):
            (n,) = read("Q")
            room(n, 1, what)
            return f.read(n).decode("utf-8", errors="surrogateescape")

        def value(kind, key, depth=0):
            if kind == 8:
                return string(f"the length of metadata {key!r}")
            if kind == 9:  # (an item takes >= 1 byte, a string or an array >= 8)
                (item,), (n,) = read("I"), read("Q")
                if depth == 8:                                 # (12 bytes a level: a RecursionError in a few kB)
                    raise ValueError(f"{path}: metadata {key!r} holds arrays nested more than 8 deep: a corrupt GGUF "
                                     "header")
                room(n, 8 if item in (8, 9) else struct.calcsize(GGUF_VALUES.get(item, "B")), f"array {key!r}'s length")
                return list(read(GGUF_VALUES[item], n)) if item in GGUF_VALUES else [value(item, key, depth + 1)
                                                                                     for _ in range(n)]
            if kind not in GGUF_VALUES:
                raise ValueError(f"{path}: metadata {key!r} has unknown GGUF value type {kind}")
            return read(GGUF_VALUES[kind])[0]

        if f.read(4) != b"GGUF":
            not_lfs_pointer(path)
            raise ValueError(f"{path}: not a GGUF file (no GGUF magic)")
        (version,), (n_tensors, n_meta) = read("I"), read("Q", 2)
        if version not in (2, 3):
            raise ValueError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
        room(n_meta, 12, "the metadata count")  # (an entry takes >= 12 bytes, a tensor >= 24)
        room(n_tensors, 24, "the tensor count")
        def once(name, seen, what):  # a dict would keep the last of two silently; llama.cpp refuses the file
            if name in seen:
                raise ValueError(f"{path}: {what} {name!r} appears twice in the GGUF header")
            return name

        meta, tensors = {}, {}
        for _ in range(n_meta):
            key = once(string(), meta, "metadata key")
            meta[key] = value(read("I")[0], key)
        for _ in range(n_tensors):
            name = once(string(), tensors, "tensor")
            if (n_dims := read("I")[0]) > 4:                # ggml's GGML_MAX_DIMS
                raise ValueError(f"{path}: tensor {name!r} has {n_dims} dimensions in the GGUF header (at most 4)")
            dims = read("Q", n_dims)
            tensors[name] = (tuple(reversed(dims)), read("I")[0], read("Q")[0])
        align = meta.get("general.alignment", 32)
        if type(align) is not int or align < 1:
            raise ValueError(f"{path}: general.alignment = {align!r}; the GGUF format needs a positive integer")
        start = -(-f.tell() // align) * align
    at = 0  # as llama.cpp's gguf.c: each tensor (in table order) starts where the one before ends, padded to align
    for name, (shape, kind, offset) in tensors.items():
        _, per_block, block_bytes = GGML_TYPES.get(kind, (None, 1, 0))
        nbytes = math.prod(shape) // per_block * block_bytes
        if kind not in GGML_TYPES or (shape[-1] if shape else 1) % per_block or start + offset + nbytes > size:
            break                                              # (gguf_tensors names the type, the row, the cut)
        if offset != at:
            raise ValueError(f"{path}: tensor {name!r} has offset {offset} in the GGUF header, expected {at} (where "
                             "the tensor before it ends): a damaged header (its offset, or the type or shape of a "
                             "tensor before it)")
        at += -(-nbytes // align) * align
    else:
        if tensors and size > start + at:
            raise ValueError(f"{path}: {size - start - at} bytes after the last tensor that no tensor covers (a "
                             "damaged header: the last tensor's type or shape)")
    return meta, {name: (shape, kind, start + offset) for name, (shape, kind, offset) in tensors.items()}


def bit_fields(b, bits):
    """uint8 (..., k) -> (..., 8 // bits, k): each byte's bits-wide fields, lowest first. ggml packs value j of a run
    of k in byte j's lowest bits, value j + k in its next ones, and so on."""
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8).view(-1, 1)
    return (b.unsqueeze(-2) >> shifts) & (1 << bits) - 1


def fp16(b):
    """uint8 (n, 2) -> float32 (n, 1): a block's fp16 scale."""
    return b.contiguous().view(torch.float16).float()


def k_scales(s):
    """Q4_K/Q5_K's 12 bytes -> 6-bit scales and mins (n, 8) as llama.cpp's get_scale_min_k4 reads them: sub-blocks
    0-3 in the low 6 bits of bytes 0-3 (scale) and 4-7 (min); 4-7: the low (scale) and high (min) nibble of bytes 8-11,
    topped by the 2 bits left in bytes 0-3 (scale) and 4-7 (min)."""
    a, b, c = s.view(-1, 3, 4).unbind(1)                                           # (n, 4) each
    sc = torch.cat([a & 63, c & 15 | (a >> 6) << 4], 1)
    m = torch.cat([b & 63, c >> 4 | (b >> 6) << 4], 1)
    return sc.float(), m.float()                                                   # (n, 8)


def dequantize_blocks(name, b):
    """One type's blocks (n, block bytes) -> float32 (n, values), each type as ggml-quants.c's dequantize_row_*.
    Blocks of 32: x = d q (Q8_0), d (q - 8) (Q4_0), d (q - 16) (Q5_0), d q + m (Q4_1, Q5_1): fp16 d [, m], for 5 bits
    a u32 of each value's 5th bit, then nibbles. Super-blocks of 256 (K-quants) in sub-blocks of 16 or 32 values, each
    with its own 4-, 6- or 8-bit scale (and min) times the block's fp16 d (and dmin): x = d sc q - dmin m."""
    n = b.shape[0]
    if name == "Q8_0":
        return fp16(b[:, :2]) * b[:, 2:].contiguous().view(torch.int8).float()      # (n, 32)
    if name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1"):
        d, m = fp16(b[:, :2]), fp16(b[:, 2:4]) if name[-1] == "1" else None
        q = bit_fields(b[:, -16:], 4).view(n, 32)                                  # values j, j + 16 in byte j
        if name[1] == "5":                                                         # 5th bit of value i: u32 bit i
            q = q | bit_fields(b[:, -20:-16], 1).transpose(1, 2).reshape(n, 32) << 4
        return d * q.float() + m if m is not None else d * (q.float() - (8 if name == "Q4_0" else 16))
    if name in ("Q4_K", "Q5_K"):                         # d, dmin, 12 bytes scales/mins, [32 bytes high bits,] nibbles
        sc, m = k_scales(b[:, 4:16])
        q = bit_fields(b[:, -128:].view(n, 4, 32), 4).view(n, 8, 32)               # sub-block 2i, 2i+1: byte run i
        if name == "Q5_K":
            q = q | bit_fields(b[:, 16:48], 1) << 4                                # sub-block k's 5th bit: bit k
        x = (fp16(b[:, :2]) * sc).unsqueeze(2) * q.float() - (fp16(b[:, 2:4]) * m).unsqueeze(2)
    elif name == "Q6_K":                                 # 128 bytes low nibbles, 64 of 2-bit highs, 16 int8 scales, d
        # each 128 values in runs of 32: the low nibbles of ql[0:32], of ql[32:64], then their high nibbles
        lo = bit_fields(b[:, :128].view(n, 2, 64), 4).view(n, 2, 4, 32)
        q = lo | bit_fields(b[:, 128:192].view(n, 2, 32), 2) << 4                  # (n, 2, 4, 32)
        sc = b[:, 192:208].contiguous().view(torch.int8).float()                   # (n, 16)
        x = (fp16(b[:, 208:]) * sc).unsqueeze(2) * (q.view(n, 16, 16).float() - 32)
    elif name == "Q3_K":                                 # 32 bytes high bits, 64 of 2-bit lows, 12 of scales, d
        s = b[:, 96:108]
        sc = bit_fields(s[:, :8], 4).view(n, 16) | bit_fields(s[:, 8:], 2).view(n, 16) << 4   # 6 bits, minus 32
        q = bit_fields(b[:, 32:96].view(n, 2, 32), 2).view(n, 8, 32) | bit_fields(b[:, :32], 1) << 2
        x = (fp16(b[:, 108:]) * (sc.float() - 32)).unsqueeze(2) * (q.view(n, 16, 16).float() - 4)  # high bit 0: -4
    elif name == "Q2_K":                                 # 16 bytes of 4-bit scale | min, 64 of 2-bit q, d, dmin
        sc, m = (b[:, :16] & 15).float(), (b[:, :16] >> 4).float()
        q = bit_fields(b[:, 16:80].view(n, 2, 32), 2).view(n, 16, 16).float()
        x = (fp16(b[:, 80:82]) * sc).unsqueeze(2) * q - (fp16(b[:, 82:84]) * m).unsqueeze(2)
    else:                                                # a GGML_TYPES entry without its code here: not a guess
        raise NotImplementedError(f"ggml type {name} has no dequantize_blocks code")
    return x.view(n, 256)


def dequantize_ggml(raw, kind, shape, chunk=1 << 18, dtype=torch.float32):
    """A ggml tensor's bytes -> `dtype` of `shape`: blocks along the innermost dim (dequantize_blocks, in float32),
    about `chunk` values at a time (~1 MiB temporaries) into one allocation. raw: the bytes (uint8), or a file
    positioned at them, read a chunk at a time into one buffer (its bytes are never all held: the peak is the output
    plus a chunk)."""
    name, per_block, block_bytes = GGML_TYPES[kind]
    n, step = math.prod(shape) // per_block, max(1, chunk // per_block)          # blocks, blocks a chunk
    out = torch.empty(n, per_block, dtype=dtype)                                   # (n_blocks, values)
    buf = None if torch.is_tensor(raw) else torch.empty(min(n, step) * block_bytes, dtype=torch.uint8)
    for i in range(0, n, step):
        j = min(n, i + step)
        if buf is None:
            b = raw[i * block_bytes:j * block_bytes]
        elif raw.readinto((b := buf[:(j - i) * block_bytes]).numpy()) != b.numel():
            raise EOFError(f"the file ends inside blocks {i}-{j}")
        b = b.view(-1, block_bytes)                                                # (j - i, block_bytes)
        out[i:j] = b.view(SAFETENSORS_DTYPES[name]) if per_block == 1 else dequantize_blocks(name, b)
    return out.view(shape)


def gguf_tensors(path, tensors, dtype=torch.float32):
    """Yield (name, `dtype` tensor) in file order from read_gguf's tensor table, one tensor in memory at a time (dtype:
    or a function of the name giving each tensor's). Every
    tensor's type, blocks and extent are checked before the first is read: a cut download fails at once, not after
    the gigabytes before the cut."""
    size, table = os.path.getsize(path), sorted(tensors.items(), key=lambda kv: kv[1][2])
    for name, (shape, kind, offset) in table:
        if kind not in GGML_TYPES:
            known = GGML_OTHERS.get(kind, "unknown to this reader")
            raise NotImplementedError(f"{path}: tensor {name!r} has ggml type {kind} ({known}); supported: " +
                                      ", ".join(n for n, _, _ in GGML_TYPES.values()) + " (the i-quants IQ* "
                                      "are not read: take the model's Q4_K_M, Q8_0 or F16 .gguf, or its "
                                      "safetensors)")
        type_name, per_block, block_bytes = GGML_TYPES[kind]
        numel, row = math.prod(shape), shape[-1] if shape else 1
        if row % per_block:                                     # ggml refuses such a file too
            raise ValueError(f"{path}: tensor {name!r} of shape {shape} is not a whole number of {type_name} "
                             f"blocks ({row} values per row, {per_block} per block)")
        if offset + numel // per_block * block_bytes > size:
            raise ValueError(f"{path}: truncated: tensor {name!r} ({type_name}, shape {shape}) ends at byte "
                             f"{offset + numel // per_block * block_bytes}, the file has {size} bytes; download or "
                             "convert it again")
    with open(path, "rb") as f:
        for name, (shape, kind, offset) in table:
            f.seek(offset)
            try:
                t = dequantize_ggml(f, kind, shape, dtype=dtype(name) if callable(dtype) else dtype)
            except EOFError as e:                               # (checked above: the file shrank since)
                raise ValueError(f"{path}: truncated while reading tensor {name!r}: {e}") from None
            yield name, t


def gguf_rope_scaling(path, tensors, hd, theta):
    """Llama 3.1's llama3 RoPE as llama.cpp stores it: rope_freqs.weight, one divisor per frequency (ggml's rope
    divides theta^(-2i/hd) by it). Read back as transformers' rope_scaling with Llama 3.1's constants (low 1, high 4,
    8192 positions; the factor the largest divisor) if that reproduces every divisor, else refused."""
    from model import rope_inv_freq                            # (model.py imports this file: at call time)
    entry = tensors.pop("rope_freqs.weight")                   # (popped: not a weight the stream then yields)
    divisors = next(gguf_tensors(path, {"rope_freqs.weight": entry}))[1]
    s = dict(rope_type="llama3", factor=divisors.max().item(), low_freq_factor=1.0, high_freq_factor=4.0,
             original_max_position_embeddings=8192)
    inv = rope_inv_freq(hd, theta)[0]
    if divisors.shape != inv.shape or not torch.allclose(inv / divisors, rope_inv_freq(hd, theta, s)[0], rtol=1e-5):
        raise NotImplementedError(f"{path}: rope_freqs.weight {tuple(divisors.shape)} is not Llama 3.1's llama3 RoPE "
                                  f"(factor {s['factor']:g}, low 1, high 4, 8192 positions): not supported")
    return s


def gguf_checkpoint(path, dtype=None, quantize=None):
    """A GGUF Llama (or Qwen2, Qwen3) -> (LlamaConfig fields as a dict, stream of (file, HF name, tensor)). The
    architecture and its sizes come from the metadata (head_dim: attention.key_length); a Llama's q/k rows go back from
    llama.cpp's interleaved RoPE order to rotate_half (llama.cpp keeps Qwen's as they are: it rotates them in halves).
    The tensors come in `dtype` where it reaches float32's range (bfloat16: no float32 copy beside it, which tripled
    a bf16 load's peak; float64), else (None, float16) in float32, for fill's cast to refuse values past float16's.
    quantize="nf4": the block linears' weights come in float32 whatever dtype, so fill quantizes the file's values
    (after a bf16 rounding, 0.28% of SmolLM2's NF4 codes differed from an fp32 load's: eval.py's default)."""
    meta, tensors = read_gguf(path)
    if meta.get("split.count", 1) > 1:
        first = re.sub(r"-\d{5}-of-", "-00001-of-", path)
        raise NotImplementedError(f"{path}: part {meta.get('split.no', 0) + 1} of a GGUF split in "
                                  f"{meta['split.count']} files; split GGUFs are not supported: merge them with "
                                  f"llama.cpp's `llama-gguf-split --merge {first} merged.gguf` and pass merged.gguf")
    arch = meta.get("general.architecture")                 # qwen2: a Llama with q/k/v biases, q/k rows as HF's
    if arch not in ("llama", "qwen2", "qwen3"):             # qwen3: with q/k norms instead of biases
        raise NotImplementedError(f"{path}: GGUF architecture {arch!r} is not supported (llama, qwen2, qwen3 are)")

    def need(key, default=None):
        if f"{arch}.{key}" not in meta and default is None:
            raise ValueError(f"{path}: GGUF metadata {arch}.{key} is missing")
        return meta.get(f"{arch}.{key}", default)
    n_embd, n_head, n_layer = need("embedding_length"), need("attention.head_count"), need("block_count")
    kind = meta.get(f"{arch}.rope.scaling.type", "none")
    counts = ("embedding_length", "attention.head_count", "block_count", "attention.head_count_kv",
              "feed_forward_length", "attention.key_length", "context_length")
    for key in counts + ("attention.layer_norm_rms_epsilon", "rope.freq_base") + ("rope.scaling.factor",) * (
            kind == "linear"):                              # named as the file names them (were config.json's keys,
        if (v := meta.get(f"{arch}.{key}")) is None:        # or not at all: a linear factor NaN loaded)
            continue
        if key in counts and (type(v) is not int or v < 1):  # (a list: per-layer head counts, another architecture)
            raise ValueError(f"{path}: GGUF metadata {arch}.{key} = {v!r}; a Llama needs a positive integer")
        if key not in counts and not (type(v) in (int, float) and math.isfinite(v) and v > 0):
            raise ValueError(f"{path}: GGUF metadata {arch}.{key} = {v!r}; a Llama needs a finite number > 0")
    if n_head % (n_kv := need("attention.head_count_kv", n_head)):
        raise ValueError(f"{path}: GGUF metadata {arch}.attention.head_count = {n_head} is not a multiple of "
                         f"{arch}.attention.head_count_kv = {n_kv}")
    hd, theta = need("attention.key_length", n_embd // n_head), need("rope.freq_base", 10000.0)  # (llama.cpp's default)
    if kind not in ("none", "linear"):
        raise NotImplementedError(f"{path}: RoPE scaling {kind!r} is not supported (linear and Llama 3.1's rope_freqs "
                                  "are)")
    for key, what in (("rope.dimension_count", "RoPE on part of a head is"),
                      ("attention.value_length", "values of another width than keys are")):
        if need(key, hd) != hd:  # (each named: one message for all three read 'RoPE scaling 'none' ... not supported')
            raise NotImplementedError(f"{path}: GGUF metadata {arch}.{key} = {need(key)!r} with head_dim (key_length) "
                                      f"{hd}: {what} not supported")
    scaling = None
    if "rope_freqs.weight" in tensors:
        scaling = gguf_rope_scaling(path, tensors, hd, theta)
    elif kind == "linear":                                     # llama.cpp: positions x 1/factor, as HF's linear
        scaling = dict(rope_type="linear", factor=need("rope.scaling.factor"))
    if "token_embd.weight" not in tensors:
        raise ValueError(f"{path}: tensor 'token_embd.weight' is missing")
    config = dict(vocab_size=tensors["token_embd.weight"][0][0], n_layer=n_layer, n_embd=n_embd,
                  n_head=n_head, n_kv_head=need("attention.head_count_kv", n_head), n_ffn=need("feed_forward_length"),
                  norm_eps=need("attention.layer_norm_rms_epsilon"), rope_theta=theta,
                  max_seq_len=need("context_length", 2048), tie_embeddings="output.weight" not in tensors,
                  bias=arch == "llama" and "blk.0.attn_q.bias" in tensors, qkv_bias=arch == "qwen2",
                  qk_norm=arch == "qwen3", head_dim=hd if hd != n_embd // n_head else None,
                  **dict(rope_scaling=scaling) if scaling else {})
    blocks = {int(m[1]) for name in tensors if (m := re.match(r"blk\.(\d+)\.", name))}
    if n_layer != len(blocks):                              # (4294967295 built that many layers: a hang)
        raise ValueError(f"{path}: GGUF metadata {arch}.block_count = {n_layer}, but the tensors are of "
                         f"{len(blocks)} blocks")
    pad, vocab = meta.get("tokenizer.ggml.padding_token_id"), config["vocab_size"]  # transformers' GGUF loader: its
    if type(pad) is int and 0 <= pad < vocab:                  # pad_token_id, embed_tokens' padding_idx (no gradient)
        config["padding_idx"] = pad

    if dtype not in (torch.bfloat16, torch.float64):
        dtype = torch.float32

    linear = re.compile(r"blk\.\d+\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.weight")
    each = (lambda name: torch.float32 if linear.fullmatch(name) else dtype) if quantize else dtype

    def stream():
        for name, t in gguf_tensors(path, tensors, each):
            m = re.fullmatch(r"(blk\.(\d+)\.)?(\w+)\.(weight|bias)", name)
            if not m or m[3] not in GGUF_NAMES:
                yield path, name, t  # not ours: the loader reports it as left over
                continue
            if arch == "llama" and m[3] in ("attn_q", "attn_k") and t.shape[0] % hd == 0:  # (else fill says the shape)
                t = rope_halves(t, hd)
            yield path, (f"model.layers.{m[2]}." if m[1] else "") + f"{GGUF_NAMES[m[3]]}.{m[4]}", t
    return config, stream()
