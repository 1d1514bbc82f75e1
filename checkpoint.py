"""checkpoint.py: the files checkpoints live in, read and written by hand (no safetensors or transformers package).

- safetensors: 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, raw bytes.
  Read one tensor at a time with plain reads (not mmap), the header checked as the reference reader checks it;
  written through `atomic_write` (a temporary sibling, fsync, rename: a crash leaves the old file or the new one,
  never half of one). `replace_dir` does the same for a folder of files (an adapter, a model).
  `locked`: one process at a time (an flock on a lock file or a folder, taken again where its path names another
  file since; `one_writer` (export.py's --out), train.py's --out, the cache's downloads).
- Hugging Face layout: `hf_files` lists model.safetensors, the shards an index names (inside the folder: no '..',
  no symlink out of it), or pytorch_model*.bin; `read_tensors` streams (name, tensor) from any of them (.bin/.pth
  memory-mapped, `weights_only=True`, each tensor's pages handed back once copied); `hf_checkpoint` first holds
  config.json's layer counts against the tensor names (`check_layers`; the headers it reads are not read again; a
  file in torch's pre-1.6 format, which torch.load cannot map, is named from its pickle alone: `pickled_names`);
  `write_checkpoint` writes config.json + shards + index.
- Meta's layout (params.json + consolidated.NN.pth): `meta_checkpoint` merges model-parallel shards through one
  name table and permutes q/k rows from Meta's interleaved RoPE to HF's rotate_half.
- GGUF (llama.cpp's one file: metadata, tokenizer and weights) has a file of its own, ggufread.py; it uses
  this file's dtype table and `rope_halves` (llama.cpp's q/k row order is Meta's).
- `fill`: assigns a stream of tensors to a model built on the `meta` device (under `MetaInit`: no initialiser runs),
  checking that nothing is missing, left over, mis-shaped or NaN/Inf, and quantizing each block linear to NF4 as its
  weight arrives (peak: the quantized model plus one tensor); or, with `spill`, writing each one to a scratch file it
  is memory-mapped from (export.py: a model that need not fit in memory).

Architectures live in model.py (`load_pretrained` joins the two); this file knows files, not models.
Run `python checkpoint.py FILE.safetensors` (or FILE.gguf) to list a file's tensors (and a GGUF's metadata).
"""
import collections
import ctypes
import errno
import fnmatch
import glob
import hashlib
import itertools
import json
import math
import mmap
import os
import pickle
import re
import shutil
import struct
import sys
import tempfile
from contextlib import contextmanager

import torch
import torch.nn as nn

try:
    import fcntl
except ImportError:                                            # (Windows: no locks)
    fcntl = None

import quant_bnb
from quant import NF4Linear, NF4Tensor, quantize_nf4

# ----------------------------------------------------------------------------------------------------
# Checkpoint files: safetensors by hand, atomic writes

SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}
_DTYPE_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}


@contextmanager
def atomic_write(path, mode="wb", sync=True):
    """Open a temporary sibling of `path` for writing (text: UTF-8, JSON's, whatever the locale: LC_ALL=C's ASCII
    refused the demo's tokenizer.json); on success fsync it (unless not `sync`: a scratch file that need not survive
    a power cut) and rename it over `path`."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    if os.path.islink(tmp):  # (a folder copied from elsewhere: open would write through it, to a file outside)
        os.remove(tmp)
    try:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX (Python promises it there)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if sync:
        fsync_dir(path)


def copy_file(src, dst):
    """Copy src to dst as atomic_write writes: whole or not at all, synced, with the umask's mode (shutil.copy2 kept
    the source's: a read-only or world-readable base's tokenizer files under umask 077)."""
    with open(src, "rb") as f, atomic_write(dst) as out:
        shutil.copyfileobj(f, out)


def temporaries(path):
    """The temporary siblings of `path` that atomic_write left (PATH.tmp<pid>: a process killed inside the write);
    files only (a folder of that name is no atomic_write's)."""
    folder, name = os.path.split(os.path.abspath(path))
    found = os.listdir(folder) if os.path.isdir(folder) else []
    return [os.path.join(folder, f) for f in found if re.fullmatch(re.escape(name) + r"\.tmp\d+", f)
            and os.path.isfile(os.path.join(folder, f))]


@contextmanager
def replace_dir(directory, own=()):
    """Write a folder whole: yield an empty sibling DIR.tmp to fill; when the block ends without error the old DIR
    steps aside as DIR.old, DIR.tmp takes its name, and DIR.old is deleted. A crash leaves the old folder or the new
    one (or DIR.old beside a complete DIR.tmp: the next call puts DIR.old back), never old files beside new ones.
    Entries of the old folder not matching the `own` patterns, and not written anew, are carried over (hard links),
    so saving into a folder never loses what else it holds."""
    directory = os.path.normpath(os.fspath(directory))
    tmp, old = directory + ".tmp", directory + ".old"
    if not os.path.exists(directory) and os.path.isdir(old):
        os.replace(old, directory)                 # a save stopped between its two renames: the old folder is whole
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
        if os.path.isdir(directory):
            for name in os.listdir(directory):
                if not any(fnmatch.fnmatch(name, p) for p in own) and not os.path.lexists(os.path.join(tmp, name)):
                    _link(os.path.join(directory, name), os.path.join(tmp, name))
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(directory)
    shutil.rmtree(old, ignore_errors=True)


DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # no space, past the file-size limit, past the quota

@contextmanager
def locked(path, busy, folder=False):
    """An exclusive flock on `path` for the block (a lock file, or with `folder` the folder itself; made if missing),
    yielding whether it is held (not where there are no locks: no fcntl, or a file system that refuses). Another
    process holding it: `busy` is raised (an exception), or printed before waiting for it (a note). The path goes as
    the block ends (a folder only if made here and still empty), before the lock is let go; so a lock taken on what
    the path no longer names (a file removed by the holder after this opened it) is dropped and taken again on what
    it names now: else a third process would hold the removed file while a fourth held the new one."""
    while True:
        made = folder and not os.path.exists(path)
        if folder:
            os.makedirs(path, exist_ok=True)
        if fcntl is None:                                      # no locks (Windows, where a folder cannot be opened, nor
            fd, held = None, False                             # an open file removed): no lock file either
            break
        fd = os.open(path, os.O_RDONLY if folder else os.O_RDWR | os.O_CREAT)
        try:
            held = _take(fd, path, busy)
        except BaseException:                                  # (busy; Ctrl-C while waiting)
            os.close(fd)
            raise
        if held is not None:
            break
        os.close(fd)                                           # path names another file now: lock that one
    try:
        yield held
    finally:
        try:
            if not folder and fd is not None:
                os.remove(path)
            elif made and not os.listdir(path):
                os.rmdir(path)
        finally:
            if fd is not None:
                os.close(fd)


def _take(fd, path, busy):
    """locked's flock of fd, opened from path: True (held), False (no locks here), None (path names another file)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if not same_file(fd, path):                            # its holder removed it: no need to wait for that one
            return None
        if isinstance(busy, BaseException):
            raise busy from None
        print(busy, file=sys.stderr, flush=True)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:                                            # a file system without locks
        return False
    return True if same_file(fd, path) else None


def same_file(fd, path):
    """Whether `path` still names the file open as `fd` (not removed, nor replaced by another of the same name)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    was = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (was.st_dev, was.st_ino)


@contextmanager
def one_writer(directory, what):
    """DIR.lock held (`locked`: a kill releases it, the file goes at the end) while `what` writes DIR through
    replace_dir: a second writer is refused (a ValueError naming the lock), where it would delete the first's DIR.tmp as
    a killed save's, write its own files into it, or replace its result. (Not a lock on DIR itself, as train.py's
    --out: replace_dir renames DIR away, and a lock on it would go with it.)"""
    lock = os.path.abspath(directory) + ".lock"
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    with locked(lock, ValueError(f"{directory}: another {what} is writing it ({lock} is held): wait for it to end, or "
                                 "give another folder")):
        yield


def _link(src, dst):
    """Hard-link a file (a tree: file by file; a symlink: copied as a link), copying where links are not possible."""
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
    elif os.path.isdir(src):
        shutil.copytree(src, dst, symlinks=True, copy_function=_link)
    else:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)


def fsync_dir(path):
    """fsync the folder holding `path`: a rename (or a new file) in it survives a power cut. Where a folder cannot be
    opened (Windows: PermissionError) there is none to sync: skipped, as python-atomicwrites syncs folders on POSIX
    only (the file itself was synced before its rename)."""
    try:
        dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except PermissionError:
        return
    try:
        os.fsync(dir_fd)  # make a rename in it durable
    finally:
        os.close(dir_fd)


def save_safetensors(tensors, path, metadata=None, sync=True):
    """Write {name: tensor} as a .safetensors file, atomically. `metadata`: a {str: str} dict; sync: atomic_write's."""
    head = safetensors_header(tensors, metadata)
    with atomic_write(path, sync=sync) as f:
        f.write(head)
        for t in tensors.values():  # raw little-endian bytes; buffer protocol: no extra copy of the tensor
            f.write(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())


def safetensors_header(tensors, metadata=None):
    """The bytes a .safetensors file of {name: tensor} opens with, before the tensors' data (in that order): only
    their dtypes and shapes are read, so a file can be planned from meta tensors and its data written as it comes."""
    header, offset = {}, 0
    for name, t in tensors.items():
        if t.dtype not in _DTYPE_NAMES:
            raise TypeError(f"{name}: dtype {t.dtype} cannot be stored in safetensors")
        header[name] = {"dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the format pads the header to 8-byte alignment with spaces
    return struct.pack("<Q", len(head)) + head


def not_lfs_pointer(path):
    """Refuse a Git LFS pointer (what `git clone` without git-lfs leaves where each weight file should be) with the
    fix: it would otherwise read as a corrupt file of the format asked for."""
    with open(path, "rb") as f:
        head = f.read(23)
    if head == b"version https://git-lfs":
        raise ValueError(f"{path}: a Git LFS pointer ({os.path.getsize(path)} bytes), not the file itself (the "
                         "repository was cloned without git-lfs): run `git lfs install && git lfs pull` in its folder")


def read_safetensors_header(path):
    """Return (tensor entries, metadata, offset of the data section), checked as the reference reader checks them:
    known dtypes, non-negative integer shapes, byte ranges that match the shapes and tile the data section exactly
    (no overlap, no gap, nothing past the end). So the tensors never hold more bytes than the file does."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > min(size - 8, 100 << 20):
            not_lfs_pointer(path)
            raise ValueError(f"{path}: corrupt safetensors header (says {n} bytes, file has {size})")
        try:                                                   # (a tensor named twice: which entry is meant?)
            header = json.loads(f.read(n), object_pairs_hook=once(f"{path}: safetensors header", "fetch it again"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{path}: corrupt safetensors header (__metadata__ must map strings to strings)")
    start, spans = 8 + n, []
    for name, e in header.items():
        try:
            dtype = SAFETENSORS_DTYPES[e["dtype"]]
            begin, end = e["data_offsets"]
            shape = e["shape"]
            if not all(type(x) is int and x >= 0 for x in [*shape, begin, end]):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: tensor {name!r} has an unsupported or malformed header entry {e}") from None
        if end - begin != math.prod(shape) * dtype.itemsize:
            raise ValueError(f"{path}: tensor {name!r} has {end - begin} bytes for shape {e['shape']} {e['dtype']}")
        if start + end > size:
            raise ValueError(f"{path}: truncated: tensor {name!r} ends at byte {start + end}, file has {size}")
        spans.append((begin, end, name))
    at = 0
    for begin, end, name in sorted(spans):  # each tensor starts where the previous one ended
        if begin != at:
            raise ValueError(f"{path}: tensor {name!r} starts at data byte {begin}, expected {at} ("
                             + ("overlaps the tensor before it" if begin < at else "a gap before it") + ")")
        at = end
    if start + at != size:
        raise ValueError(f"{path}: {size - start - at} bytes after the last tensor that no tensor covers")
    return header, metadata, start


def iter_safetensors(path, names=None, by_name=False, head=None):
    """Yield (name, tensor) in file order (by_name: in name order), each read into fresh memory: one tensor alive at a
    time. head: read_safetensors_header(path), where read already."""
    header, _, start = head or read_safetensors_header(path)
    wanted = header.keys() if names is None else names
    with open(path, "rb") as f:
        for name in sorted(wanted, key=None if by_name else lambda k: header[k]["data_offsets"][0]):
            e = header[name]
            t = torch.empty(e["shape"], dtype=SAFETENSORS_DTYPES[e["dtype"]])
            f.seek(start + e["data_offsets"][0])
            if f.readinto(t.reshape(-1).view(torch.uint8).numpy()) != t.numel() * t.element_size():
                raise ValueError(f"{path}: truncated while reading tensor {name!r}")
            yield name, t


def load_safetensors(path):
    """Read a whole (small) safetensors file into {name: tensor}."""
    return dict(iter_safetensors(path))


# ----------------------------------------------------------------------------------------------------
# Checkpoint layouts: HF (safetensors, shards, .bin) and Meta's, streamed into a meta-built model

class MetaInit(torch.overrides.TorchFunctionMode):
    """While modules are built: torch.nn.init's initialisers (and Tensor.normal_) do nothing to a meta tensor, which
    has no values to fill. torch's meta normal_ (nn.Embedding's reset_parameters) runs through torch._refs and
    imports torch._dynamo: ~0.65 s of load_pretrained (eval.py's start; train.py's optimizer imports it anyway).
    Real tensors are initialised as ever, with the same random numbers (a meta tensor draws none)."""
    def __torch_function__(self, func, types, args=(), kwargs=None):
        t = args[0] if args else (kwargs or {}).get("tensor")  # (nn.init passes it by name)
        if isinstance(t, torch.Tensor) and t.is_meta and (func is torch.Tensor.normal_ or
                                                          getattr(func, "__module__", None) == "torch.nn.init"):
            return t
        return func(*args, **(kwargs or {}))


def fill(model, stream, dtype=None, quantize=None, device="cpu", spill=None, stored=False):
    """Assign (source, name, tensor) items to a meta-built model: checked, cast, moved, NF4-quantized if asked.
    stored: the stream is a 4-bit checkpoint's (its NF4 weights arrive as NF4Tensors, gathered by hf_checkpoint):
    quantize keeps those as they are and quantizes nothing else (a linear the file holds dense stays dense, as
    transformers loads llm_int8_skip_modules); quantize=None dequantizes them, as a dense weight anywhere else.
    Every architecture loads through here: missing, left-over, duplicate, mis-shaped, non-float or non-finite tensors
    are errors that name the tensor; tied parameters (listed twice in the state dict) are loaded once (from either
    name) and re-tied, unless the file stores a copy that differs: then that copy is loaded untied, as transformers 5
    does (a config that says tied, wrongly), or refused where one module holds both names (T5's encoder.embed_tokens is
    `shared`). dtype=None: the first tensor's dtype, for all of them (as transformers' "auto", read_tensors' order: a
    checkpoint of bf16 linears and fp32 norms computes in one dtype). A module in the model's may_lack that the
    checkpoint lacks entirely (BERT's pooler: BertForMaskedLM saves none) is drawn fresh by model.initialize, as
    transformers draws it, and said where the model reads it; part of one missing is an error as any other.
    spill: a folder: each dense tensor, once checked and cast, goes to a file there and is memory-mapped back
    (`spilled`): a model bigger than memory, whose weights take memory only while read (export.py)."""
    expected, tied, first, done, copies, trimmed, sources = {}, {}, {}, set(), [], 0, set()
    for name, p in model.state_dict(keep_vars=True).items():
        if id(p) in first:
            tied[name] = first[id(p)]
        else:
            first[id(p)], expected[name] = name, p
    for source, name, t in stream:
        what, want = f"{source}: tensor {name!r}", expected.get(tied.get(name, name))
        sources.add(os.fspath(source))
        if want is None or name in done:
            wrapper = next((p for p in ("module.", "_orig_mod.") if name.startswith(p) and name[len(p):] in
                            {**expected, **tied}), None)  # DistributedDataParallel's, torch.compile's
            raise ValueError(f"{what} " + ("appears twice" if name in done else f"is left over: the keys carry the "
                             f"{wrapper!r} prefix of a wrapped model: save model.{wrapper}state_dict() instead"
                             if wrapper else f"is left over: {type(model).__name__} has no such parameter"))
        if tuple(t.shape) != tuple(want.shape):
            raise ValueError(f"{what} has shape {tuple(t.shape)}, expected {tuple(want.shape)}")
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        # a linear inside a ModuleList of blocks has a numeric path component: model.layers.3.mlp.up_proj
        nf4 = quantize and leaf == "weight" and isinstance(owner, nn.Linear) and re.search(r"\.\d+\.", name)
        if isinstance(t, NF4Tensor) and not (nf4 and name not in tied):  # the file's NF4 where the model is dense:
            t = t.dequantize(t.dtype)  # in the dtype it was quantized from, as bitsandbytes' dequantize_4bit gives it
        held = isinstance(t, NF4Tensor)                                   # kept as the file holds it
        nf4 = nf4 and (held or not stored)                                # (a stored linear held dense stays dense)
        if not (held or t.is_floating_point()):
            raise TypeError(f"{what} has unsupported dtype {t.dtype}")
        dtype = dtype or t.dtype
        if name in tied:  # a stored copy of a tied weight (GPT-2's lm_head in .bin files): compared once all are in
            done.add(name)
            copies.append((what, name, spilled(cast(t, dtype, device, what), spill)))
            continue
        if not nf4:
            check_finite(t, what)  # (quantize_nf4 checks its own, for free, on the block absmax; from_state_dict a
        if nf4 and not held and torch.finfo(dtype).max < torch.finfo(t.dtype).max:  # stored one's, as it was read)
            cast(t, dtype, device, what)           # (its range check only: float16 would dequantize to Inf)
        # NF4 from the file's values, not their cast: quantized after a bf16 cast, 0.28% of SmolLM2's codes differed,
        # so a bf16 run trained on another base than an fp32 load (eval.py's default) scores it on
        t = t.to(device) if held else t.to(device).contiguous() if nf4 else cast(t, dtype, device, what).contiguous()
        done.add(name)
        if nf4:
            parent, _, child = owner_name.rpartition(".")
            try:
                weight = t if held else quantize_nf4(t)
            except ValueError as e:
                raise ValueError(f"{what}: {e}") from None
            weight.dtype = dtype                   # the compute dtype it dequantizes to, as before
            setattr(model.get_submodule(parent), child, NF4Linear(weight, owner.bias))  # bias may follow
            # quantize's freed temporaries stay in whichever malloc arena they were: the peak of a 1.1B load
            # wandered between 1.08 and 1.96 GiB from run to run (bench/bench_load.py); after every tensor: the same
            # 1.08-1.10 GiB, 30% slower
            if torch.device(device).type == "cpu":
                trimmed = trim_if_grown(trimmed)
        else:
            if spill:                              # (the freed copies stay in malloc's arenas as the NF4 ones do)
                t, trimmed = spilled(t, spill), trim_if_grown(trimmed)
            old = getattr(owner, leaf)  # a parameter, or a persistent buffer (assigned as a plain tensor)
            setattr(owner, leaf, t if leaf in owner._buffers else nn.Parameter(t, requires_grad=old.requires_grad))
    kept = []
    for what, name, t in copies:  # a tied weight stored only under its other name (lm_head.weight alone): it is the
        if tied[name] in done:    # weight, as transformers ties it
            kept.append((what, name, t))
            continue
        check_finite(t, what)
        owner_name, _, leaf = tied[name].rpartition(".")
        owner = model.get_submodule(owner_name)
        setattr(owner, leaf, nn.Parameter(t, requires_grad=getattr(owner, leaf).requires_grad))
        done.add(tied[name])
    copies = kept
    missing = [n for n in expected if n not in done]
    where = os.path.commonpath(sources) if sources else "the checkpoint"  # its one file, or its shards' folder
    fresh = [m for m in getattr(model, "may_lack", ()) if (own := {n for n in expected if n.startswith(m + ".")})
             and own <= set(missing)]  # the whole module absent, nothing else may be
    missing = [n for n in missing if not n.startswith(tuple(m + "." for m in fresh))]
    if missing:
        raise ValueError(f"{where}: {len(missing)} tensors missing from the checkpoint: {', '.join(missing[:8])}"
                         + (" ..." if len(missing) > 8 else "") + unindexed(sources, missing))
    for m in fresh:  # drawn as transformers draws a module its checkpoint lacks; said where the model reads it
        module, names = model.get_submodule(m), [n for n in expected if n.startswith(m + ".")]
        for name, p in list(module.named_parameters()):
            owner_name, _, leaf = name.rpartition(".")
            setattr(module.get_submodule(owner_name), leaf, nn.Parameter(
                torch.empty(p.shape, dtype=dtype, device=device), requires_grad=p.requires_grad))
        model.initialize(module)
        model.lacked = (module, f"note: {where} holds no {', '.join(names)} (as BertForMaskedLM saves it): newly "
                        "initialized, as transformers does; a GLUE classifier trains it with its head")
    for what, name, t in copies:
        owner_name, _, leaf = name.rpartition(".")
        original = model.get_parameter(tied[name])
        if torch.equal(t, original):
            continue
        if model.get_submodule(owner_name) is model.get_submodule(tied[name].rpartition(".")[0]):
            raise ValueError(f"{what} differs from {tied[name]!r}, which is the same parameter in "
                             f"{type(model).__name__}")
        check_finite(t, what)
        setattr(model.get_submodule(owner_name), leaf, nn.Parameter(t, requires_grad=original.requires_grad))
        del tied[name]
    for name, original in tied.items():
        owner_name, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(owner_name), leaf, model.get_parameter(original))
    return model


def spilled(t, folder):
    """t written to a file in folder and memory-mapped back, copy-on-write (folder None: t itself). The file is removed
    at once (its pages live as long as the mapping, so nothing is left behind): a tensor that takes memory only while
    read, whose pages release() hands back, re-read from the file if touched again."""
    if folder is None or not t.numel() or t.device.type != "cpu":
        return t
    fd, file = tempfile.mkstemp(dir=folder, suffix=".spill")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy())  # (a full disk: OSError's errno)
        return torch.from_file(file, shared=False, size=t.numel(), dtype=t.dtype).view(t.shape)
    finally:
        os.remove(file)


def cast(t, dtype, device, what):
    """t in the compute dtype on device. A cast to a narrower range (float16's max is 65504) turns larger finite values
    into Inf, which check_finite, run on the file's values, cannot see: that is an error, not a weight of Inf."""
    out = t.to(device, dtype)
    if out.numel() and t.is_floating_point() and torch.finfo(dtype).max < torch.finfo(t.dtype).max:
        lo, hi = torch.aminmax(out)                  # Inf shows in one of the two (NaN too: only from the file)
        if not (lo.isfinite() and hi.isfinite()):
            check_finite(t, what)                    # NaN/Inf in the file itself: say that
            raise ValueError(f"{what} has values up to {t.abs().max().item():.6g}, beyond {dtype}'s range (max "
                             f"{torch.finfo(dtype).max:.6g}): they would load as Inf; compute in float32"
                             + (" or bfloat16" if dtype == torch.float16 else ""))
    return out


def check_finite(t, what):
    """Refuse a tensor holding NaN or Inf (a damaged or badly exported checkpoint), with the count and where. One
    fp32-accumulated sum a chunk: NaN and Inf survive it, so the exact count is taken only when one is there. A
    bf16/fp16 chunk is summed through a float32 copy of it: 2^20 values, 4 MiB (2^24 added 64 MiB to a bf16 load)."""
    flat = t.reshape(-1)
    for i in range(0, flat.numel(), 1 << 20):
        if not torch.isfinite(flat[i:i + (1 << 20)].sum(dtype=torch.float32)):
            bad = ~torch.isfinite(t)
            if bad.any():  # (else a finite sum overflowed: huge, but finite, values)
                where = [tuple(j) for j in bad.nonzero()[:3].tolist()]
                raise ValueError(f"{what} (shape {list(t.shape)}) has {int(torch.isnan(t).sum())} NaN and "
                                 f"{int(torch.isinf(t).sum())} Inf values, first at index {where}: the checkpoint "
                                 "is damaged; fetch or export it again")
            return


def files_fingerprint(path, sample=1 << 20, name=None):
    """sha256 of a checkpoint's files (a folder's, or one .gguf): each name and size, its first and last `sample`
    bytes. Cheap at 7B (a few MiB read); a re-download, a re-conversion or other weights under the same name change it.
    --resume compares it, so an adapter never goes on training over another base."""
    return files_fingerprints(path, sample, name)[""]


def files_fingerprints(path, sample=1 << 20, name=None):
    """files_fingerprint's parts: {file name: sha256 of its name, size, first and last bytes}, and "" for the whole
    (the same value as before the parts were kept), so a --resume that refuses can name the file that changed.
    name: what one file (a .gguf) is called in them, when not its own (the name it was fingerprinted under before:
    a symlink or a renamed copy of that file is the same checkpoint)."""
    h, parts, one_file = hashlib.sha256(), {}, os.path.isfile(path)
    files = [path] if one_file else [os.path.join(path, f) for f in sorted(os.listdir(path))]
    for f in files:
        name = name if one_file and name else os.path.basename(f)  # what load_pretrained reads (not tokenizer files)
        if os.path.isfile(f) and (name.endswith((".safetensors", ".bin", ".pth", ".gguf")) or name in (
                "config.json", "params.json", "model.safetensors.index.json", "pytorch_model.bin.index.json")):
            (size, head, tail), one = head_tail(f, sample), hashlib.sha256()
            for x in (h, one):
                x.update(f"{name}:{size}".encode())
                x.update(head)
                x.update(tail)
            parts[name] = one.hexdigest()
    return {**parts, "": h.hexdigest()}


def head_tail(path, sample=1 << 20):
    """(size, first `sample` bytes, last `sample` bytes) of a file: what a cheap fingerprint of a large file reads
    (files_fingerprints; data.data_fingerprint)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(sample)
        f.seek(max(size - sample, 0))
        return size, head, f.read(sample)


def read_json(path):
    """A JSON object from a config file; anything else (bad JSON, not UTF-8, a list, a key given twice with other
    values, nesting past Python's recursion limit) is an error naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f, object_pairs_hook=once(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason})") from None
    except RecursionError:                                     # ([[[[...: a few bytes a level)
        raise ValueError(f"{path}: JSON nested deeper than {sys.getrecursionlimit()} levels, more than any config "
                         "holds: a damaged or hostile file") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object {{...}}, found a {type(value).__name__}")
    return value


def once(where=None, fix="delete the one not meant"):
    """json's object_pairs_hook refusing a key an object gives twice with other values (json keeps the last without a
    word, transformers' config reader too: `"num_hidden_layers": 7, ..., "num_hidden_layers": 2` built 2 layers;
    which the file means, no reader can tell); `where` begins the message, `fix` ends it. The same value twice is
    harmless: taken. Values are compared as JSON writes them (NaN, unequal to itself, is one value)."""
    def hook(pairs):
        obj = dict(pairs)
        if len(obj) < len(pairs):
            first = {}
            for k, v in pairs:
                if json.dumps(first.setdefault(k, v), sort_keys=True) != json.dumps(v, sort_keys=True):
                    raise ValueError(f"{where + ': ' if where else ''}key {k!r} is given twice in an object, as "
                                     f"{first[k]!r:.60} and then {v!r:.60}: JSON readers keep the last without a "
                                     f"word; {fix}")
        return obj
    return hook


def inside(directory, name, named_in):
    """directory/name, refused unless it stays inside directory: no '..' or absolute path in the name, and not a
    symlink to a file elsewhere (a checkpoint folder should not make us read, or a crafted index point us at, files
    outside it), except the Hub cache's own links from snapshots/HASH/ into the repository's blobs/. Someone who
    means it can copy the file in."""
    path = os.path.join(directory, name)
    real, root = os.path.realpath(path), os.path.realpath(directory)
    if os.path.isabs(name) or ".." in re.split(r"[\\/]", name):
        raise ValueError(f"{named_in} names {name!r}, outside {directory}: refused (weight files must be inside the "
                         "model folder)")
    blobs = os.path.join(os.path.dirname(os.path.dirname(root)), "blobs")  # the Hub cache: snapshots/HASH/ -> blobs/
    if os.path.commonpath([real, root]) != root and not (
            os.path.basename(os.path.dirname(root)) == "snapshots" and os.path.commonpath([real, blobs]) == blobs):
        raise ValueError(f"{path} is a symlink to {real}, outside the model folder: refused; copy the file into "
                         f"{directory} (cp -L) if you mean to load it")
    return path


def hf_files(path):
    """The weight files of an HF checkpoint, in transformers' order: model.safetensors, an index's shards,
    pytorch_model.bin, its index's shards (a folder holding both a file and an index loads the file). Shards the index
    names and the folder lacks are an error naming them, with the tensors it places there (fill's error for tensors
    missing names the shards the folder holds and the index leaves out: `unindexed`)."""
    for index, single in (("model.safetensors.index.json", "model.safetensors"),
                          ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if os.path.exists(os.path.join(path, single)):
            return [inside(path, single, path)]
        if os.path.exists(os.path.join(path, index)):
            weight_map = shard_map(path, index)
            if not weight_map:                                 # (else: every tensor missing, no file named)
                there = sorted(f for f in os.listdir(path) if f.endswith(os.path.splitext(single)[1]))
                raise ValueError(f"{os.path.join(path, index)}: its weight_map is empty, naming no shard to read" + (
                    f" (the folder holds {', '.join(there[:4])}{' ...' * (len(there) > 4)})" if there else ""))
            files = [inside(path, s, os.path.join(path, index)) for s in sorted(set(weight_map.values()))]
            if lacked := [os.path.basename(f) for f in files if not os.path.exists(f)]:  # (a copy not finished)
                held = {s: [k for k, v in weight_map.items() if v == s] for s in lacked[:2]}
                raise FileNotFoundError(
                    f"{path}: shard{'s' * (len(lacked) > 1)} {', '.join(lacked[:4])}" + (
                        f" ... ({len(lacked)} of {len(files)})" if len(lacked) > 4 else "") +
                    f" named in {index} {'are' if len(lacked) > 1 else 'is'} missing (" + "; ".join(
                        f"the index places {len(t)} tensors in {s}: {', '.join(t[:3])}{' ...' * (len(t) > 3)}"
                        for s, t in held.items()) + ")")
            return files
    ggufs = sorted(os.path.basename(f) for f in glob.glob(os.path.join(path, "*.gguf")))
    raise FileNotFoundError(f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model*.bin" + (
        f"; for its GGUF, pass the file itself ({', '.join(ggufs)}): a folder with config.json is read as the "
        "Hugging Face layout" if ggufs else ""))


def tensor_names(files):
    """(the tensor names an HF checkpoint's files hold, {file: what was read to name them, for read_tensors}), known
    before a weight is read: safetensors headers; one .bin memory-mapped (its pickle read, its data not), or in torch's
    pre-1.6 format its pickle alone (pickled_names: its tensors are read once, by read_tensors); .bin shards, their
    index's weight_map."""
    if len(files) == 1 and files[0].endswith(".bin") and (names := pickled_names(files[0])) is not None:
        return names, {}
    read = {f: read_safetensors_header(f) if f.endswith(".safetensors") else load_torch(f)
            for f in files if f.endswith(".safetensors") or len(files) == 1}
    if not read:
        return list(shard_map(os.path.dirname(files[0]), "pytorch_model.bin.index.json")), read
    return [n for f, r in read.items() for n in r[0]], read


def bnb_config(hf, source):
    """config.json's (hf, read from source) bitsandbytes 4-bit settings (quant_bnb.settings), None where it has no
    quantization_config; another method is refused."""
    return quant_bnb.settings(hf["quantization_config"], source) if hf.get("quantization_config") else None


def prequantized(hf, source, quantize=None):
    """bnb_config, and once, where there are any, what the load makes of the NF4 weights: kept as stored
    (quantize="nf4"), or dequantized (None), which costs memory and keeps NF4's rounding."""
    if (settings := bnb_config(hf, source)) is not None:
        print(f"note: {os.path.dirname(source)} is a bitsandbytes 4-bit checkpoint: " + (
            "its NF4 linears load as stored, nothing is quantized" if quantize else
            "its NF4 linears are dequantized (--quant none): 3.9x their memory in bf16, 7.8x in float32, and they "
            "hold NF4's rounding, not the original model's weights (--quant nf4 keeps them as stored)"),
            file=sys.stderr)
    return settings


def stored_nf4(path):
    """(the names of the weights a bitsandbytes 4-bit checkpoint folder holds in NF4, whether double-quantized), from
    config.json and the tensor names (no weight is read); None for any other folder: plan.py counts its base by it."""
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config) or (settings := bnb_config(read_json(config), config)) is None:
        return None
    return set(quant_bnb.stored(tensor_names(hf_files(path))[0], config, settings)), settings["double_quant"]


def hf_checkpoint(path, source, counts, convert, quantized=None):
    """An HF checkpoint folder -> a stream of (file, name, tensor), each (name, tensor) passed through convert (None:
    dropped), once check_layers has held the counts (config.json's, `source`) against the files' tensor names.
    quantized: config.json's bitsandbytes 4-bit settings (quant_bnb.settings; None: it has none), which the tensor
    names must agree with; each NF4 weight's keys come as one NF4Tensor (`gathered`)."""
    files = hf_files(path)
    names, read = tensor_names(files)
    check_layers(source, counts, names, why=lambda: unindexed(files, []))  # (a shard the index leaves out: named)
    nf4 = quant_bnb.stored(names, source, quantized)
    return gathered(((f, *nt) for f in files for nt in read_tensors(f, read.pop(f, None))), nf4, convert)


def gathered(items, nf4, convert):
    """(file, name, tensor) items, each (name, tensor) passed through convert (None: dropped), but the keys of each NF4
    weight (nf4: {weight name: its keys}, quant_bnb.stored) met into one (file, name, NF4Tensor): read in name order,
    they arrive together, unless a shard boundary falls among them. Only its name is converted: GPT-2's Conv1D
    weights were transposed to (out, in) before bitsandbytes quantized them (transformers' Bnb4bitQuantize)."""
    owner, parts = {k: w for w, keys in nf4.items() for k in keys}, {}
    for f, name, t in items:
        if (w := owner.get(name)) is None:
            if item := convert(name, t):
                yield f, *item
            continue
        got = parts.setdefault(w, {})
        got[name] = t
        if len(got) < len(nf4[w]):                 # (its other keys to come)
            continue
        try:
            q = NF4Tensor.from_state_dict(parts.pop(w), w)
        except ValueError as e:
            raise ValueError(f"{f}: {e}") from None
        if item := convert(w, torch.empty(q.shape, device="meta")):
            yield f, item[0], q


def check_layers(source, counts, names, why=lambda: ""):
    """Refuse a layer count other than the checkpoint's; counts: (the key its file names it by, the count, a regex
    catching a block's index in its tensor names[, where the file lacks the key: what count is used instead]). The
    model is built (on the meta device) before a tensor is read: a config.json asking for 2**40 layers built until
    killed. why(): what explains a mismatch, where known."""
    for key, count, pattern, *stand_in in counts:
        held = 1 + max((int(m[1]) for n in names if (m := re.search(pattern, n))), default=-1)
        if count != held:
            fix = f"a config of another model? Set {key} to {held}" if not stand_in else (
                f"add {key} = {held} to" if stand_in[0].startswith("absent") else f"set {key} = {held} in"
            ) + f" {os.path.basename(source)}"
            raise ValueError(f"{source}: {key} " + (f"({stand_in[0]})" if stand_in else f"= {count!r}") +
                             f", but the checkpoint's tensors are of {held} layer" + "s" * (held != 1) +
                             (f" (0 to {held - 1})" if held > 1 else "") + (
                                 why() or f": {fix}, or give the weights it describes"))


def shard_map(path, index):
    """The weight_map {tensor name: shard file name} of the shard index `index` in folder path."""
    file = os.path.join(path, index)
    try:
        with open(file, encoding="utf-8") as f:
            weight_map = json.load(f, object_pairs_hook=once())["weight_map"]  # (a tensor placed twice: named)
        if not all(isinstance(s, str) for s in weight_map.values()):
            raise TypeError("file names must be strings")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise ValueError(f"{file}: not a shard index ({type(e).__name__}: {e}); it "
                         "needs {\"weight_map\": {tensor name: file name}}") from None
    return weight_map


def unindexed(sources, missing):
    """Why tensors are missing from a sharded checkpoint (sources: the files read, an index's shards), where its index
    says: a shard in the folder the index does not name (so not read; a few of its tensors), and the shard the index
    places a missing tensor in, which lacks it; "" where no index named the files read, or it explains nothing."""
    folder = os.path.dirname(next(iter(sources), ""))
    for index, ext in (("model.safetensors.index.json", ".safetensors"), ("pytorch_model.bin.index.json", ".bin")):
        if not os.path.isfile(os.path.join(folder, index)):
            continue
        try:
            weight_map = shard_map(folder, index)
        except ValueError:
            return ""
        named, notes = set(weight_map.values()), []
        if not {os.path.basename(f) for f in sources} <= named:    # (model.safetensors beside an index: not read)
            return ""
        for f in sorted(os.listdir(folder)):
            if f.endswith(ext) and f not in named:
                try:
                    names = sorted(read_safetensors_header(os.path.join(folder, f))[0]) if ext == ".safetensors" else []
                except (ValueError, OSError):                      # (damaged: named, its tensors not)
                    names = []
                notes.append(f"{f} is in the folder but {index} does not name it, so it was not read" + (
                    f" (it holds {len(names)} tensors: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''})"
                    if names else ""))
        placed = {}
        for n in missing:
            if n in weight_map:
                placed.setdefault(weight_map[n], []).append(n)
        for shard, names in placed.items():
            notes.append(f"{index} places {len(names)} of them in {shard}, which does not hold " + (
                "it" if len(names) == 1 else "them") + f": {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}")
        return "; " + "; ".join(notes) if notes else ""
    return ""


LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # torch.save's pre-1.6 files open with this pickled number


def torch_load(file):
    """torch.load of a .bin/.pth, tensors only (weights_only: a pickle's code never runs) -> {name: tensor}."""
    return load_torch(file)[0]


def torch_names(file):
    """The tensor names of a .bin/.pth: its pickle's, as load_torch reads them (a pre-1.6 file: pickled_names)."""
    names = pickled_names(file)
    return list(load_torch(file)[0]) if names is None else names


class NamesOnly(pickle.Unpickler):
    """Unpickles a pre-1.6 torch.save pickle with every tensor a TENSOR mark, running nothing: its only globals are
    OrderedDict, torch's tensor rebuild (a mark instead) and storage types (never built: persistent ids are None)."""
    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):  # (a state_dict(): with its _metadata attribute)
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2") or module == "torch" and name.endswith("Storage"):
            return lambda *args: TENSOR
        raise pickle.UnpicklingError(f"{module}.{name} is not unpickled for names")  # (load_torch says what it is)

    def persistent_load(self, pid):
        return None


TENSOR = object()


def pickled_names(file):
    """The tensor names of a file in torch's pre-1.6 format, from its pickle alone: torch.load cannot memory-map it
    and reads every tensor, and the tensors' bytes follow the pickle. None for any other file, or a pickle holding
    more than a flat dict of tensors (load_torch then reads it, and says what it holds)."""
    with open(file, "rb") as f:
        if f.read(len(LEGACY_MAGIC)) != LEGACY_MAGIC:
            return None
        f.seek(0)
        try:                                                   # magic number, protocol version, sys_info, the object
            state = [NamesOnly(f).load() for _ in range(4)][-1]
        except Exception:                                      # (a payload, a cut file: load_torch's errors name it)
            return None
    return list(state) if isinstance(state, dict) and all(v is TENSOR for v in state.values()) else None


def load_torch(file):
    """torch.load of a .bin/.pth, memory-mapped, tensors only -> ({name: tensor}, whether memory-mapped). A file in
    torch's pre-1.6 format (older Hub repositories' pytorch_model.bin) cannot be mapped: it is read whole, and its
    pages must never be handed back (release would zero them, and a tied weight shares them). What it refuses or
    cannot read, and anything but a flat dict of tensors, is an error naming the file (a training checkpoint's
    {"state_dict": ..., "step": 3} is not unwrapped: the error says how to save the weights)."""
    mapped = True
    try:
        try:
            state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as e:
            if "mmap can only be used" not in str(e):  # (torch's words for a file not in its zip format)
                raise
            state, mapped = torch.load(file, map_location="cpu", weights_only=True), False
    except Exception as e:  # UnpicklingError (code in the pickle), RuntimeError (not a zip archive), EOFError, ...
        with open(file, "rb") as f:  # a zip (torch.save's format) ends with its directory: a cut copy has none
            head, size = f.read(len(LEGACY_MAGIC)), f.seek(0, os.SEEK_END)
            f.seek(max(0, size - (1 << 16) - 22))
            if head[:4] == b"PK\x03\x04" and b"PK\x05\x06" not in f.read():
                raise ValueError(f"{file}: truncated ({size:,} bytes: a zip archive, PyTorch's format, without its "
                                 "end); a partial copy or download? Copy or fetch it again") from None
        not_lfs_pointer(file)
        if head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= size - 8:  # a safetensors header
            raise ValueError(f"{file}: a safetensors file (its header) under another name: lorasp, as transformers, "
                             "reads safetensors files by their .safetensors name; rename it (and its index's "
                             "entries) to end in .safetensors") from None
        if head[:4] != b"PK\x03\x04" and head != LEGACY_MAGIC:  # (else torch's words: "Weights only load failed")
            raise ValueError(f"{file}: not a PyTorch checkpoint ({size:,} bytes starting {head[:8]!r}: neither "
                             "torch.save's zip archive nor its pre-1.6 format)") from None
        if type(e).__name__ == "UnpicklingError" and (call := re.search(r"GLOBAL ([\w.]+)", str(e))):
            # (torch's own words advise weights_only=False, which runs that call: not lorasp's to offer)
            raise ValueError(f"{file}: cannot be read as a PyTorch checkpoint of tensors (UnpicklingError: its pickle "
                             f"calls {call[1]}, which builds no tensor; lorasp reads pickles with torch.load("
                             "weights_only=True), which never runs such a call: it could run any code). From a source "
                             "you trust, save its tensors as safetensors (safetensors.torch.save_file) and give that; "
                             "from another, ask for the safetensors") from None
        first = str(e).strip().split("\n")[0][:300]
        raise ValueError(f"{file}: cannot be read as a PyTorch checkpoint of tensors ({type(e).__name__}: {first})"
                         ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{file}: holds a {type(state).__name__}, not a state dict of tensors")
    for key, v in state.items():
        if not isinstance(v, torch.Tensor):
            hint = f"; to load the weights under it, save them alone: torch.save(ckpt[{key!r}], FILE)"
            raise ValueError(f"{file}: entry {key!r} is {type(v).__name__}, not a tensor (a state dict of tensors "
                             "is expected)" + (hint if isinstance(v, dict) else ""))
    return state, mapped


def read_tensors(file, read=None):
    """Yield (name, tensor) from a .safetensors (plain reads, in name order) or a .bin/.pth (memory-mapped, in its
    order), one at a time. The first floating tensor is the one transformers' get_state_dict_dtype reads a file's
    dtype from (fill's, with config.json silent); the safetensors library stores float32 tensors first.
    read: what tensor_names read of the file (its header, its mapped state dict), not read again."""
    if file.endswith(".safetensors"):
        yield from iter_safetensors(file, by_name=True, head=read)
        return
    state, mapped = read or load_torch(file)
    for name in list(state):
        t = state.pop(name)
        yield name, t.clone()  # our own copy: the mapping may go away, and its pages are handed back
        if mapped:
            release(t)


def release(t):
    """Hand a memory-mapped tensor's pages back to the kernel (they are re-read from the file if touched again),
    so that reading a 13 GB .pth does not leave 13 GB resident."""
    if sys.platform.startswith("linux") and t.numel():
        begin = -(-t.data_ptr() // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages inside the tensor only
        end = (t.data_ptr() + t.numel() * t.element_size()) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > begin:
            ctypes.CDLL(None).madvise(ctypes.c_void_p(begin), ctypes.c_size_t(end - begin), 4)  # MADV_DONTNEED


def resident(field="VmRSS"):
    """This process's resident size now (VmRSS), or its high-water mark (VmHWM), in bytes, from /proc/self/status; 0
    where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration):
        return 0


def trim_if_grown(last):
    """trim_heap() once the resident size is 10% past `last`, its size after the previous trim; returns what to pass
    next time. Trimming every time would refault every page the next allocations touch (~20% of a 134M training
    step); this keeps the same peak for a few trims a run (docs/benchmarks-7b.md, "The allocator")."""
    if resident() <= 1.1 * last:
        return last
    trim_heap()
    return resident()


def trim_if_crept(heap=None):
    """For a loop whose passes all need the same memory (training steps): trim_heap() once the resident size after a
    pass is 10% past the base, its size after the first pass since the last trim. `heap`: what the last call returned,
    (base, second) with second True while the pass to come is the base's second; None (or 0) before the first pass
    and after a trim: the next pass sets a new base. A pass's freed activations stay resident for the next pass to
    reuse; giving them back would refault them every step (~10% of a 134M fp32 step). Only growth is given back. The
    second pass may raise the base once instead: glibc's dynamic mmap threshold makes a process's first large blocks
    fresh mappings, unmapped when freed, and keeps them in the heap from then on, so a steady 134M fp32 run is 22%
    larger after its second step than after its first; trimming that only refaulted it in the third (0.32 s of system
    time; docs/benchmarks-7b.md, session 27)."""
    now = resident()
    base, second = heap or (0, False)
    if not base:                                               # the first pass: its size is the base (none: no /proc)
        return (now, True) if now else None
    if second:                                                 # the second: past 10% more, the new base, once
        return (now if now > 1.1 * base else base, False)
    if now <= 1.1 * base:
        return heap
    trim_heap()
    return None


def trim_heap():
    """Give the C heap's free pages back to the kernel (glibc's malloc_trim; a no-op elsewhere). glibc keeps freed
    memory for reuse, and small long-lived objects left among freed tensors (quantize's temporaries while loading, a
    kept autograd graph) make holes that later, larger tensors cannot use, so the heap grows. Pages given back are
    faulted in again when next touched: train.py and fill call this only once the heap has grown."""
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


def refuse_vision(p, source):
    """Llama 3.2 Vision's params.json (vision_chunk_size, vision_num_cross_attention_layers, ...): an image encoder and
    cross-attention layers that are not ours, refused before a weight is read (was: "tensor ... is left over")."""
    if vision := [k for k in p if k.startswith("vision_")] if isinstance(p, dict) else []:
        raise NotImplementedError(f"{source}: {', '.join(vision)}: a vision model (Llama 3.2 Vision), which lorasp "
                                  "does not support: give a text-only Llama")


# params.json's keys, as Meta's reference code reads them (llama-models 0.3.0: llama_models/llama3/args.py and
# llama4/args.py, ModelArgs): those meta_config reads, those of no effect on the weights' outputs (buffer sizes; Llama
# 4's temperature tuning numbers, used only with attn_temperature_tuning on), and those that change the model, with the
# values under which they change nothing; any other value of these, or another key, is refused (Meta's ModelArgs
# passes a key it does not know over: it may be another reader's, Mistral's sliding_window, which changes the model)
META_READ = {"dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "ffn_dim_multiplier", "norm_eps",
             "rope_theta", "use_scaled_rope", "rope_scaling_factor", "rope_high_freq_factor"}
META_INERT = {"max_batch_size", "max_seq_len", "floor_scale", "attn_scale", "ffn_exp"}  # (ffn_exp: MoE layers' only)
META_UNSET = dict(use_qk_norm=(None, False), nope_layer_interval=(None,), attention_chunk_size=(None,),
                  attn_temperature_tuning=(None, False), moe_args=(None, {}), quantization_args=(None, {}),
                  lora_args=(None, {}), vision_args=(None, {}))


def meta_rope(p):
    """The rope_scaling (transformers' llama3 type) of Meta's params.json p, as Meta's code computes it, or None.
    Llama 3.x (llama3/model.py apply_scaling): use_scaled_rope alone, with the constants factor 8, low_freq_factor 1,
    high_freq_factor 4, 8192 tokens (factor 8 for every 3.x: Meta's code does; transformers' converter writes 32 into a
    Llama 3.2 config.json, so each layout computes as its own reference). Llama 4 (llama4/model.py): rope_scaling_factor
    and rope_high_freq_factor, read from the file, default 16 and 1 (ModelArgs.validate), low 1 and 8192 as before; a
    file naming either is Llama 4's (Llama 3's ModelArgs knows neither)."""
    if not p.get("use_scaled_rope"):
        return None
    four = "rope_scaling_factor" in p or "rope_high_freq_factor" in p
    factor = p.get("rope_scaling_factor") if p.get("rope_scaling_factor") is not None else 16.0 if four else 8.0
    high = p.get("rope_high_freq_factor") if p.get("rope_high_freq_factor") is not None else 1.0 if four else 4.0
    for k, v in (("rope_scaling_factor", factor), ("rope_high_freq_factor", high)):
        if type(v) not in (int, float) or not v > 0:
            raise ValueError(f"{k} = {v!r} must be a number > 0")
    if high < 1.0:  # Meta's wavelength bounds 8192 / low and 8192 / high the wrong way round
        raise ValueError(f"rope_high_freq_factor = {high!r} must be >= 1 (rope's low_freq_factor, Meta's constant)")
    return dict(rope_type="llama3", factor=float(factor), low_freq_factor=1.0, high_freq_factor=float(high),
                original_max_position_embeddings=8192)


def meta_config(p, embedding_rows):
    """LlamaConfig fields from Meta's params.json p; embedding_rows() gives the vocabulary size where params.json says
    -1 (Llama 2's: the embedding knows). A key that would make Meta's model another than this is an error naming it."""
    for k, v in p.items():
        if k in META_UNSET and v not in META_UNSET[k] or k not in {*META_READ, *META_INERT, *META_UNSET, "head_dim"}:
            raise NotImplementedError(f"{k} = {json.dumps(v)[:80]}: " + (
                "Meta's code (llama_models) computes another model with it, which lorasp does not implement" if
                k in META_UNSET else "a key lorasp does not know (not one Meta's reference code reads: another "
                "model's, Mistral's?); it may change the model: if it does not, delete it from the file"))
    for k, v in p.items():  # as config.json's fields are checked (check_config), under params.json's names
        if k in ("dim", "n_layers", "n_heads", "n_kv_heads", "multiple_of", "vocab_size") and not (
                type(v) is int and (v >= 1 or k == "vocab_size" and v == -1) or v is None and k == "n_kv_heads"):
            raise ValueError(f"{k} = {v!r} must be an integer >= 1" + " (or -1: the embedding's rows)" * (
                k == "vocab_size"))  # (true is 1 to Python: multiple_of true built FFNs of multiple 1)
        if k in ("norm_eps", "rope_theta", "ffn_dim_multiplier") and not (type(v) in (int, float) and math.isfinite(
                v) and v > 0 or v is None and k == "ffn_dim_multiplier"):
            raise ValueError(f"{k} = {v!r} must be a finite number > 0")
    dim, heads = p["dim"], p["n_heads"]
    for a, x, b, y in (("dim", dim, "n_heads", heads), ("n_heads", heads, "n_kv_heads", p.get("n_kv_heads") or heads)):
        if x % y:                                              # (check_config's words were config.json's keys)
            raise ValueError(f"{a} = {x} is not a multiple of {b} = {y}")
    if p.get("head_dim") is not None and p["head_dim"] != p["dim"] // p["n_heads"]:  # (Llama 4's: dim / n_heads)
        raise NotImplementedError(f"head_dim = {p['head_dim']!r}: not dim / n_heads ({p['dim'] // p['n_heads']}), "
                                  "which lorasp's Meta layout reads")
    hidden, m = int(2 * 4 * p["dim"] / 3), p["multiple_of"]  # Meta's FFN size rule (llama/model.py)
    if p.get("ffn_dim_multiplier") and not p["ffn_dim_multiplier"] * hidden < 2 ** 63:  # (int(inf): OverflowError)
        raise ValueError(f"ffn_dim_multiplier = {p['ffn_dim_multiplier']!r} makes FFNs of "
                         f"{p['ffn_dim_multiplier'] * hidden:g} rows")
    hidden = int(p["ffn_dim_multiplier"] * hidden) if p.get("ffn_dim_multiplier") else hidden
    vocab = p.get("vocab_size", -1)
    return dict(vocab_size=vocab if vocab > 0 else embedding_rows(), n_layer=p["n_layers"], n_embd=p["dim"],
                n_head=p["n_heads"], n_kv_head=p.get("n_kv_heads") or p["n_heads"], n_ffn=m * -(-hidden // m),
                norm_eps=p["norm_eps"], rope_theta=p.get("rope_theta", 10000.0), max_seq_len=meta_context(p),
                rope_scaling=meta_rope(p))


def meta_context(p):
    """The context Meta's params.json p does not record, told as transformers' converter tells it by the Llama's
    version: 131072 with use_scaled_rope (Llama 3.1 and later), 8192 at rope_theta 500000 (Llama 3), 16384 at another
    rope_theta past 10000 (Code Llama's 1e6), else Llama 2's 4096 (Llama 1's 2048 is not told apart by its file)."""
    theta = p.get("rope_theta", 10000.0)
    return 131072 if p.get("use_scaled_rope") else 8192 if theta == 500000 else 16384 if theta > 10000 else 4096


def rope_halves(t, hd):
    """q/k rows (or biases) of each head from interleaved RoPE pairs (rows 2i, 2i+1: Meta's files, llama.cpp's GGUF)
    to HF's rotate_half halves (rows i, i + hd/2)."""
    return t.view(-1, hd // 2, 2, *t.shape[1:]).transpose(1, 2).reshape(t.shape)


def is_meta(path):
    """Whether a folder is Meta's layout: params.json with consolidated.NN.pth, or without config.json (then
    meta_checkpoint names what is missing). params.json beside an HF checkpoint (Mistral's repos) is not. Both
    layouts with their weights are two checkpoints, maybe of two models: which one is meant, no reader can tell."""
    f = lambda name: os.path.join(path, name)  # noqa: E731
    meta = sorted(glob.glob(f("consolidated.*.pth"))) if os.path.exists(f("params.json")) else []
    hf = [n for n in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                      "pytorch_model.bin.index.json") if os.path.exists(f(n)) and os.path.exists(f("config.json"))]
    if meta and hf:                                       # (was Meta's, silently; transformers reads Hugging Face's)
        raise ValueError(f"{path} holds two checkpoints: Meta's layout (params.json + {os.path.basename(meta[0])}) "
                         f"and Hugging Face's (config.json + {hf[0]}); transformers reads the second, Meta's code the "
                         "first, and they may be two models: move one of them to a folder of its own (Meta's "
                         "Hugging Face repositories keep the original files in original/)")
    return os.path.exists(f("params.json")) and bool(meta or not os.path.exists(f("config.json")))


def consolidated(path):
    """The consolidated.NN.pth files of Meta's layout in folder path, in order (none a symlink out of it: `inside`)."""
    return sorted(inside(path, os.path.basename(f), path) for f in glob.glob(os.path.join(path, "consolidated.*.pth")))


META_LAYERS = r"^layers\.(\d+)\."  # a block's tensors in consolidated.NN.pth: layers.3.attention.wq.weight


def meta_checkpoint(path):
    """Meta's layout -> (LlamaConfig fields as a dict, stream of (file, HF name, tensor)), model-parallel shards
    merged."""
    files = consolidated(path)
    if not files:
        raise FileNotFoundError(f"{path}: params.json but no consolidated.NN.pth")
    p = read_json(inside(path, "params.json", path))            # (not a symlink out of the folder)
    refuse_vision(p, os.path.join(path, "params.json"))
    shards, mapped = zip(*[load_torch(f) for f in files])
    try:
        config = meta_config(p, lambda: shards[0]["tok_embeddings.weight"].shape[0])
        hd = config["n_embd"] // config["n_head"]
    except KeyError as e:
        raise ValueError(f"{os.path.join(path, 'params.json')}: field {e.args[0]!r} is missing") from None
    except NotImplementedError as e:
        raise NotImplementedError(f"{os.path.join(path, 'params.json')}: {e}") from None
    except (TypeError, ValueError, ZeroDivisionError, AttributeError) as e:
        raise ValueError(f"{os.path.join(path, 'params.json')}: its numbers do not describe a model ({e})") from None
    rows = getattr(shards[0].get("layers.0.attention.wq.weight"), "shape", [0])[0]  # dim / (number of files)
    if rows and config["n_embd"] % rows == 0 and (n := config["n_embd"] // rows) != len(files):  # 13B: 2, 70B: 8
        raise ValueError(f"{path}: {len(files)} consolidated.NN.pth file{'s' * (len(files) > 1)} ("
                         f"{', '.join(map(os.path.basename, files))}), each 1/{n} of the model-parallel weights "
                         f"(layers.0.attention.wq.weight: {rows} of params.json's dim {config['n_embd']} rows): "
                         + (f"{n - len(files)} missing" if n > len(files) else f"expected consolidated.00-{n - 1:02d}"))
    check_layers(os.path.join(path, "params.json"), [("n_layers", config["n_layer"], META_LAYERS)], shards[0])

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
            if rest == "tok_embeddings.weight" and len(parts[0]) * len(parts) == config["vocab_size"]:
                dim = 0  # Llama 3 splits the embedding by vocabulary rows (Llama 2: by its columns)
            t = parts[0].clone() if dim is None else torch.cat(parts, dim)
            if rest in ("attention.wq.weight", "attention.wk.weight") and t.shape[0] % hd == 0:  # else: shape error
                t = rope_halves(t, hd)
            for x in parts if all(mapped) else ():
                release(x)
            yield files[0], ("model." + layer if layer else "") + name, t
        for f, s in zip(files, shards):
            if s:
                raise ValueError(f"{f}: tensor {next(iter(s))!r} is left over (not in {files[0]})")
    return config, stream()


def write_checkpoint(directory, config, tensors, shard_size=None, sync=True):
    """config.json + safetensors in the HF layout from (HF name, tensor) pairs, holding one shard in memory at a
    time: model.safetensors, or model-0000i-of-0000n.safetensors (each ≤ shard_size bytes) + the index.
    config: a model config (its to_hf() is written) or the config.json dict itself. sync=False skips the fsyncs (a
    benchmark's scratch checkpoint: 13.5 GB then take seconds, not the disk's minutes)."""
    os.makedirs(directory, exist_ok=True)
    for old in glob.glob(os.path.join(directory, "model*.safetensors*")):
        os.remove(old)  # a stale index or shard from an earlier save would be read instead
    parts, shard = [], {}
    for name, t in itertools.chain(tensors, [(None, None)]):  # (None, None): flush the last shard
        if shard and (name is None or shard_size and sum(x.nbytes for x in shard.values()) + t.nbytes > shard_size):
            save_safetensors(shard, os.path.join(directory, f"part{len(parts)}.tmp"), {"format": "pt"}, sync)
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
        with atomic_write(os.path.join(directory, name), "w", sync) as f:
            json.dump(content, f, indent=2)


def main():
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: python checkpoint.py FILE.safetensors|FILE.gguf")
    try:                                                       # a wrong file: one line, as train.py's
        list_tensors(sys.argv[1])
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")


def shown(text):
    """text with its unprintable characters as repr writes them: a name in a file is the file's to choose, and an
    escape sequence in it ("\x1b[2J") would drive the terminal (a GGUF's undecodable bytes: surrogates, \udcff)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def list_tensors(path):
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder: give one of its .safetensors files (or a .gguf)")
    if not path.endswith((".safetensors", ".gguf")):
        raise ValueError(f"{path}: not a .safetensors or .gguf file (python checkpoint.py lists their tensors)")
    if path.endswith(".gguf"):
        from ggufread import GGML_OTHERS, GGML_TYPES, read_gguf  # (ggufread.py imports this file: at call time)
        meta, tensors = read_gguf(path)
        for name, (shape, kind, offset) in tensors.items():
            print(f"{shown(name):40s} {GGML_TYPES.get(kind, (GGML_OTHERS.get(kind, kind),))[0]:5} {shape}")
        for key, v in meta.items():
            print(f"{shown(key)}: " + (f"[{len(v)} items: {str(v[:4])[1:-1]}, ...]" if isinstance(v, list) else
                                       repr(v)[:100]))
        return
    header, metadata, start = read_safetensors_header(path)
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        print(f"{shown(name):60s} {e['dtype']:5s} {tuple(e['shape'])}")
    print(f"{len(header)} tensors, data from byte {start}, metadata {metadata}")


if __name__ == "__main__":
    from checks import console  # (here, not above: checks imports this file)
    console()                                                  # (line-buffered; UTF-8 where ASCII fails; no reader: on)
    main()
