"""checkpoint.py: the files checkpoints live in, read and written by hand (no safetensors or transformers package).

- safetensors: 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, raw bytes.
  Read one tensor at a time with plain reads (not mmap), written through `atomic_write` (a temporary sibling, fsync,
  rename: a crash leaves the old file or the new one, never half of one).
- Hugging Face layout: `hf_files` lists model.safetensors, the shards an index names, or pytorch_model*.bin;
  `read_tensors` streams (name, tensor) from any of them (.bin/.pth memory-mapped, `weights_only=True`, each
  tensor's pages handed back once copied); `write_checkpoint` writes config.json + shards + index.
- Meta's layout (params.json + consolidated.NN.pth): `meta_checkpoint` merges model-parallel shards through one
  name table and permutes q/k rows from Meta's interleaved RoPE to HF's rotate_half.
- `fill`: assigns a stream of tensors to a model built on the `meta` device, checking that nothing is missing, left
  over or mis-shaped, and quantizing each block linear to NF4 as its weight arrives (peak: the quantized model plus
  one tensor).

Architectures live in model.py (`load_pretrained` joins the two); this file knows files, not models.
Run `python checkpoint.py FILE.safetensors` to list a file's tensors.
"""
import ctypes
import glob
import itertools
import json
import mmap
import os
import re
import struct
import sys
from contextlib import contextmanager

import torch
import torch.nn as nn

from quant import NF4Linear, quantize_nf4

# ----------------------------------------------------------------------------------------------------
# Checkpoint files: safetensors by hand, atomic writes

SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}
_DTYPE_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}


@contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary sibling of `path` for writing; on success fsync it and rename it over `path`."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def save_safetensors(tensors, path, metadata=None):
    """Write {name: tensor} as a .safetensors file, atomically. `metadata` is a {str: str} dict."""
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        if t.dtype not in _DTYPE_NAMES:
            raise TypeError(f"{name}: dtype {t.dtype} cannot be stored in safetensors")
        data = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)  # raw little-endian bytes
        header[name] = {"dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + data.numel()]}
        blobs.append(data)
        offset += data.numel()
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the format pads the header to 8-byte alignment with spaces
    with atomic_write(path) as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for data in blobs:
            f.write(data.numpy())  # buffer protocol: no extra copy of the tensor


def read_safetensors_header(path):
    """Return (tensor entries, metadata, offset of the data section); checks the header against the file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > min(size - 8, 100 << 20):
            raise ValueError(f"{path}: corrupt safetensors header (says {n} bytes, file has {size})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    start = 8 + n
    for name, e in header.items():
        try:
            dtype = SAFETENSORS_DTYPES[e["dtype"]]
            begin, end = e["data_offsets"]
            numel = 1
            for d in e["shape"]:
                numel *= d
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: tensor {name!r} has an unsupported or malformed header entry {e}") from None
        if end - begin != numel * dtype.itemsize or begin < 0:
            raise ValueError(f"{path}: tensor {name!r} has {end - begin} bytes for shape {e['shape']} {e['dtype']}")
        if start + end > size:
            raise ValueError(f"{path}: truncated: tensor {name!r} ends at byte {start + end}, file has {size}")
    return header, metadata, start


def iter_safetensors(path, names=None):
    """Yield (name, tensor) in file order, each read into fresh memory: one tensor alive at a time."""
    header, _, start = read_safetensors_header(path)
    wanted = header.keys() if names is None else names
    entries = sorted(((header[k]["data_offsets"][0], k) for k in wanted))
    with open(path, "rb") as f:
        for begin, name in entries:
            e = header[name]
            t = torch.empty(e["shape"], dtype=SAFETENSORS_DTYPES[e["dtype"]])
            f.seek(start + begin)
            if f.readinto(t.reshape(-1).view(torch.uint8).numpy()) != t.numel() * t.element_size():
                raise ValueError(f"{path}: truncated while reading tensor {name!r}")
            yield name, t


def load_safetensors(path):
    """Read a whole (small) safetensors file into {name: tensor}."""
    return dict(iter_safetensors(path))


# ----------------------------------------------------------------------------------------------------
# Checkpoint layouts: HF (safetensors, shards, .bin) and Meta's, streamed into a meta-built model

def fill(model, stream, dtype=None, quantize=None, device="cpu"):
    """Assign (source, name, tensor) items to a meta-built model: checked, cast, moved, NF4-quantized if asked.
    Every architecture loads through here: missing, left-over, duplicate, mis-shaped or non-float tensors are errors
    that name the tensor; tied parameters (listed twice in the state dict) are loaded once and re-tied."""
    expected, tied, first, done = {}, {}, {}, set()
    for name, p in model.state_dict(keep_vars=True).items():
        if id(p) in first:
            tied[name] = first[id(p)]
        else:
            first[id(p)], expected[name] = name, p
    for source, name, t in stream:
        if name in tied:
            continue  # a stored copy of a tied weight (GPT-2's lm_head): the original is loaded
        what = f"{source}: tensor {name!r}"
        if name not in expected or name in done:
            raise ValueError(f"{what} " + ("appears twice" if name in done else
                                           f"is left over: {type(model).__name__} has no such parameter"))
        if tuple(t.shape) != tuple(expected[name].shape):
            raise ValueError(f"{what} has shape {tuple(t.shape)}, expected {tuple(expected[name].shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{what} has unsupported dtype {t.dtype}")
        t = t.to(device, dtype or t.dtype).contiguous()
        done.add(name)
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        # a linear inside a ModuleList of blocks has a numeric path component: model.layers.3.mlp.up_proj
        if quantize and leaf == "weight" and isinstance(owner, nn.Linear) and re.search(r"\.\d+\.", name):
            parent, _, child = owner_name.rpartition(".")
            setattr(model.get_submodule(parent), child, NF4Linear(quantize_nf4(t), owner.bias))  # bias may follow
        else:
            old = getattr(owner, leaf)  # a parameter, or a persistent buffer (assigned as a plain tensor)
            setattr(owner, leaf, t if leaf in owner._buffers else nn.Parameter(t, requires_grad=old.requires_grad))
    missing = [n for n in expected if n not in done]
    if missing:
        raise ValueError(f"{len(missing)} tensors missing from the checkpoint: {', '.join(missing[:8])}"
                         + (" ..." if len(missing) > 8 else ""))
    for name, original in tied.items():
        owner_name, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(owner_name), leaf, model.get_parameter(original))
    return model


def hf_files(path):
    """The weight files of an HF checkpoint: an index's shards, model.safetensors, or pytorch_model*.bin."""
    for index, single in (("model.safetensors.index.json", "model.safetensors"),
                          ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if os.path.exists(os.path.join(path, index)):
            with open(os.path.join(path, index)) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            for s in shards:
                if not os.path.exists(os.path.join(path, s)):
                    raise FileNotFoundError(f"{path}: shard {s} named in {index} is missing")
            return [os.path.join(path, s) for s in shards]
        if os.path.exists(os.path.join(path, single)):
            return [os.path.join(path, single)]
    raise FileNotFoundError(f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model*.bin")


def read_tensors(file):
    """Yield (name, tensor) from a .safetensors (plain reads) or a .bin/.pth (memory-mapped), one at a time."""
    if file.endswith(".safetensors"):
        yield from iter_safetensors(file)
        return
    state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
    for name in list(state):
        t = state.pop(name)
        yield name, t.clone()  # our own copy: the mapping may go away, and its pages are handed back
        release(t)


def release(t):
    """Hand a memory-mapped tensor's pages back to the kernel (they are re-read from the file if touched again),
    so that reading a 13 GB .pth does not leave 13 GB resident."""
    if sys.platform.startswith("linux") and t.numel():
        begin = -(-t.data_ptr() // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages inside the tensor only
        end = (t.data_ptr() + t.numel() * t.element_size()) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > begin:
            ctypes.CDLL(None).madvise(ctypes.c_void_p(begin), ctypes.c_size_t(end - begin), 4)  # MADV_DONTNEED


def trim_heap():
    """Give the C heap's free pages back to the kernel (glibc's malloc_trim; a no-op elsewhere). glibc keeps the holes
    that freed activations leave and reuses them badly: after a few training steps on CPU the resident size can be
    twice what is in use. Called after each optimizer step, it keeps every step's peak at the first step's."""
    libc = ctypes.CDLL(None)
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


META_NAMES = {  # Meta's name -> (HF name, the dim Meta split it along across model-parallel shards; None: replicated)
    "tok_embeddings.weight": ("model.embed_tokens.weight", 1), "norm.weight": ("model.norm.weight", None),
    "output.weight": ("lm_head.weight", 0),
    "attention.wq.weight": ("self_attn.q_proj.weight", 0), "attention.wk.weight": ("self_attn.k_proj.weight", 0),
    "attention.wv.weight": ("self_attn.v_proj.weight", 0), "attention.wo.weight": ("self_attn.o_proj.weight", 1),
    "feed_forward.w1.weight": ("mlp.gate_proj.weight", 0), "feed_forward.w2.weight": ("mlp.down_proj.weight", 1),
    "feed_forward.w3.weight": ("mlp.up_proj.weight", 0),
    "attention_norm.weight": ("input_layernorm.weight", None),
    "ffn_norm.weight": ("post_attention_layernorm.weight", None),
}


def meta_config(p, embedding_rows):
    """LlamaConfig fields from Meta's params.json p; embedding_rows() gives the vocabulary size where params.json says
    -1 (Llama 2's: the embedding knows)."""
    if p.get("use_scaled_rope"):
        raise NotImplementedError("RoPE scaling (use_scaled_rope) is not supported")
    hidden, m = int(2 * 4 * p["dim"] / 3), p["multiple_of"]  # Meta's FFN size rule (llama/model.py)
    hidden = int(p["ffn_dim_multiplier"] * hidden) if p.get("ffn_dim_multiplier") else hidden
    vocab = p.get("vocab_size", -1)
    return dict(vocab_size=vocab if vocab > 0 else embedding_rows(), n_layer=p["n_layers"], n_embd=p["dim"],
                n_head=p["n_heads"], n_kv_head=p.get("n_kv_heads") or p["n_heads"], n_ffn=m * -(-hidden // m),
                norm_eps=p["norm_eps"], rope_theta=p.get("rope_theta", 10000.0), max_seq_len=4096)


def meta_checkpoint(path):
    """Meta's layout -> (LlamaConfig fields as a dict, stream of (file, HF name, tensor)), model-parallel shards
    merged."""
    files = sorted(glob.glob(os.path.join(path, "consolidated.*.pth")))
    if not files:
        raise FileNotFoundError(f"{path}: params.json but no consolidated.NN.pth")
    with open(os.path.join(path, "params.json")) as f:
        p = json.load(f)
    shards = [torch.load(f, map_location="cpu", mmap=True, weights_only=True) for f in files]
    config = meta_config(p, lambda: shards[0]["tok_embeddings.weight"].shape[0])
    hd = config["n_embd"] // config["n_head"]

    def stream():
        for key in list(shards[0]):
            missing = [f for f, s in zip(files, shards) if key not in s]
            if missing:
                raise ValueError(f"{missing[0]}: tensor {key!r} is missing (it is in {files[0]})")
            parts = [s.pop(key) for s in shards]
            layer, rest = re.fullmatch(r"(layers\.\d+\.)?(.*)", key).groups()
            if rest == "rope.freqs":
                continue  # RoPE frequencies: computed, not loaded
            if rest not in META_NAMES:
                yield files[0], key, parts[0]  # not ours: the loader reports it as left over
                continue
            name, dim = META_NAMES[rest]
            t = parts[0].clone() if dim is None else torch.cat(parts, dim)
            if rest in ("attention.wq.weight", "attention.wk.weight") and t.shape[0] % hd == 0:  # else: shape error
                t = t.view(-1, hd // 2, 2, t.shape[1]).transpose(1, 2).reshape(t.shape)  # rows 2i, 2i+1 -> i, i+hd/2
            for x in parts:
                release(x)
            yield files[0], ("model." + layer if layer else "") + name, t
        for f, s in zip(files, shards):
            if s:
                raise ValueError(f"{f}: tensor {next(iter(s))!r} is left over (not in {files[0]})")
    return config, stream()


def write_checkpoint(directory, config, tensors, shard_size=None):
    """config.json + safetensors in the HF layout from (HF name, tensor) pairs, holding one shard in memory at a
    time: model.safetensors, or model-0000i-of-0000n.safetensors (each ≤ shard_size bytes) + the index.
    config: a model config (its to_hf() is written) or the config.json dict itself."""
    os.makedirs(directory, exist_ok=True)
    for old in glob.glob(os.path.join(directory, "model*.safetensors*")):
        os.remove(old)  # a stale index or shard from an earlier save would be read instead
    parts, shard = [], {}
    for name, t in itertools.chain(tensors, [(None, None)]):  # (None, None): flush the last shard
        if shard and (name is None or shard_size and sum(x.nbytes for x in shard.values()) + t.nbytes > shard_size):
            save_safetensors(shard, os.path.join(directory, f"part{len(parts)}.tmp"), metadata={"format": "pt"})
            parts, shard = parts + [{k: x.nbytes for k, x in shard.items()}], {}
        if name is not None:
            shard[name] = t
    n = len(parts)
    names = ["model.safetensors"] if n == 1 else [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    for i, name in enumerate(names):  # final names need the shard count, known only now
        os.replace(os.path.join(directory, f"part{i}.tmp"), os.path.join(directory, name))
    files = {"config.json": config.to_hf() if hasattr(config, "to_hf") else config}
    if n > 1:
        files["model.safetensors.index.json"] = {"metadata": {"total_size": sum(sum(p.values()) for p in parts)},
                                                 "weight_map": {k: name for name, p in zip(names, parts) for k in p}}
    for name, content in files.items():
        with atomic_write(os.path.join(directory, name), "w") as f:
            json.dump(content, f, indent=2)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python checkpoint.py FILE.safetensors")
    header, metadata, start = read_safetensors_header(sys.argv[1])
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        print(f"{name:60s} {e['dtype']:5s} {tuple(e['shape'])}")
    print(f"{len(header)} tensors, data from byte {start}, metadata {metadata}")


if __name__ == "__main__":
    main()
