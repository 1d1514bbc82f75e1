"""quant_torch.py: where NF4 runs fast; nothing here is needed to learn NF4 (quant.py). Its two hot loops in torch ops,
made fast on a CPU, each bit for bit the plain form quant.py names:

    nearest_level(scaled)    = torch.bucketize(scaled, NF4_MIDPOINTS)  the nearest of the 16 levels, ties to the lower
    levels_times_absmax(...) : out = NF4_LEVELS[code] * absmax[block]  in fp32, rounded once to out's dtype

How: a lookup by a float's top 16 bits in place of bucketize's branchy binary search (quantize takes 0.2x
bitsandbytes' time), a 2 KiB table of both levels of a code byte gathered 8 bytes at a time, and steps of whole blocks
sized to the cache on CPU (CHUNK values). Also here: the switch to quant_triton.py's CUDA kernel (TRITON; dequantize
picks the kernel or the torch path), and the CPU buffers kept between calls that NF4 matmuls dequantize into (dense).
quant.py passes its levels in; this file imports nothing of the project's but recompute.py (replay_slot: where a full
replay's weights are kept, replay_dense) and quant_triton.py (lazily, on CUDA). Not run on its own: tests/test_quant*.py
check it against bitsandbytes and a brute-force nearest-level search.
"""
import math
import threading
from types import SimpleNamespace

import torch
import torch.nn.functional as F

import recompute

CHUNK = 1 << 18  # values per step on CPU, so each step's fp32 temporaries (1 MiB) stay in cache. 2^20 won on one
# block's weights alone, not in whole models nor in the 7B step (bench/profile_block.py; docs/benchmarks-7b.md)
TRITON = True   # on CUDA, dequantize with quant_triton.py's one kernel where Triton is installed; False: the torch path
_kept = threading.local()  # vars(): (name, dtype) -> a flat CPU buffer of this thread's, kept between calls


def tables(levels, midpoints, dynamic, device):
    """Lookup tables derived from the 16 levels (and their 15 midpoints), on device; quant.py builds them once a device.
    low, mid: for a float32's top 16 bits (sign, exponent, 7 mantissa bits; a "bin"), the nearest level of the
           bin's values, and the one midpoint inside the bin (+inf if none): level = low + (x > mid), two gathers
           and a compare instead of bucketize's binary search (at most one midpoint fits in a bin).
    pairs: the two levels of each code byte (high nibble first), as one int64 per byte: a 2 KiB table that
           stays in L1, gathered 8 bytes at a time (faster than 16 fp32 gathers or a 1 MiB table of 4 levels)."""
    bits = torch.arange(1 << 16, dtype=torch.int64)
    lo = (bits << 16).to(torch.int32).view(torch.float32)               # the bin's float with low bits 0...
    hi = ((bits << 16) | 0xFFFF).to(torch.int32).view(torch.float32)    # ...and with low bits 1
    a, b = torch.bucketize(lo, midpoints), torch.bucketize(hi, midpoints)
    if (crowded := ((a - b).abs() > 1) & lo.isfinite() & hi.isfinite()).any():   # a table of one's own, levels
        x = lo[crowded][0].item()                                                    # too close: wrong codes, silently
        raise ValueError(f"levels {levels.tolist()}: two of their midpoints fall among the floats that share {x}'s "
                         "top 16 bits, where nearest_level's lookup has room for one; keep the levels further apart")
    low = torch.minimum(a, b)   # a finite bin's two ends differ by 0 or 1 level (NaN/Inf bins: inputs that raise)
    mid = torch.where(a == b, torch.tensor(math.inf), midpoints[low.clamp(max=14)])
    byte = torch.arange(256)
    pairs = levels[torch.stack([byte >> 4, byte & 15], dim=1)]                    # (256, 2) fp32
    return SimpleNamespace(levels=levels.to(device), dynamic=dynamic.to(device),
                           low=low.to(torch.uint8).to(device), mid=mid.to(device),
                           pairs=pairs.view(torch.int64).view(-1).to(device))


def steps(n_blocks, block_size, device):
    """Slices of whole blocks, CHUNK values each on CPU (cache-sized); one slice on an accelerator."""
    step = max(1, CHUNK // block_size) if device.type == "cpu" else n_blocks
    return [slice(i, min(i + step, n_blocks)) for i in range(0, n_blocks, step)]


def nearest_level(scaled, t):
    """Index of the nearest NF4 level, ties to the lower: torch.bucketize(scaled, NF4_MIDPOINTS), by bin tables."""
    bins = ((scaled.view(torch.int32) >> 16) & 0xFFFF).view(-1)               # top 16 bits, as an index
    code = t.low.index_select(0, bins)
    return code.add_(scaled.view(-1) > t.mid.index_select(0, bins)).view(scaled.shape)


def output(buffer, dtype, numel, device):
    """Where dequantize writes: a new flat tensor, or the caller's buffer if it has the dtype, device and room."""
    if not dtype.is_floating_point:  # levels * absmax copied into an integer dtype: every |w| < 1 truncated to 0
        raise TypeError(f"NF4 dequantizes to a floating-point dtype (an NF4Linear's: its input's), got {dtype}")
    if buffer is None:
        return torch.empty(numel, dtype=dtype, device=device)
    if (buffer.dtype, buffer.device) == (dtype, device) and buffer.numel() >= numel:
        return buffer[:numel]
    raise ValueError(f"dequantize needs a {dtype} buffer of {numel} elements on {device}, got "
                     f"{buffer.dtype} x {buffer.numel()} on {buffer.device}")


def dequantize(q, t, out, nested_block_size):
    """The NF4Tensor q's values, level[code] * absmax[block], written into the flat tensor out (q.padded_numel() long):
    by quant_triton.py's one kernel on CUDA where it is used (the scales decoded inside it), else by the torch path."""
    if (kernel := triton_kernel(q.device)) is not None:
        return kernel.dequantize(q, t.levels, out, nested_block_size)
    bs = q.block_size
    codes = q.codes if q.codes.numel() % (bs // 2) == 0 else F.pad(q.codes, (0, -q.codes.numel() % (bs // 2)))
    out = out.view(-1, bs)                                                     # (blocks, bs)
    return levels_times_absmax(codes.view(-1, bs // 2), q.block_absmax(), out, t, steps(out.shape[0], bs, q.device))


def levels_times_absmax(codes, absmax, out, t, steps):
    """out (blocks, bs) = level[code] * absmax[block] for codes (blocks, bs/2), two a byte, a step of blocks at a time.
    A step's levels go to an fp32 scratch, then are scaled into out; an fp32 out in one step (as on an accelerator) is
    its own scratch, so no second full-size buffer."""
    own = out.dtype == torch.float32 and len(steps) == 1
    scratch = out if own else torch.empty(steps[0].stop, out.shape[1], device=out.device)
    for s in steps:
        vals = scratch[: s.stop - s.start]                                     # (blocks in step, bs)
        torch.index_select(t.pairs, 0, codes[s].reshape(-1).int(), out=vals.view(torch.int64).view(-1))
        if out.dtype == torch.float32:
            torch.mul(vals, absmax[s, None], out=out[s])
        else:                         # scale in fp32, then round once (mul's out= would add a temporary)
            out[s].copy_(vals.mul_(absmax[s, None]))
    return out


def triton_kernel(device):
    """quant_triton (imported on first use) on a CUDA device where Triton is installed and TRITON is on, else None."""
    if device.type == "cuda" and TRITON:
        try:
            import quant_triton
            return quant_triton
        except ImportError:
            return None


def kept_buffer(name, need, dtype):
    """`need` elements of a CPU buffer kept per name, dtype and thread, grown to the largest asked: a fresh big tensor
    is a new memory mapping (glibc maps blocks over 32 MiB) whose pages fault in on first write. Per thread: two threads
    computing at once wrote over each other's (a wrong result, silently); freed with its thread."""
    kept, key = vars(_kept), (name, dtype)
    if key not in kept or kept[key].numel() < need:
        kept.pop(key, None)                          # free the smaller one first
        kept[key] = torch.empty(need, dtype=dtype)
    return kept[key][:need]


def dense(weight, dtype):
    """The NF4Tensor weight dequantized for one matmul, used at once and dropped. On CPU into one kept buffer, the
    largest weight's size (the memory plan counts it): without, a 7B block's step took 4.40 s, not 3.93 s, faulting in
    pages (docs/benchmarks-7b.md)."""
    if weight.device.type != "cpu":
        return weight.dequantize(dtype)              # the CUDA caching allocator reuses its blocks already
    return weight.dequantize(dtype, buffer=kept_buffer("dequantize", weight.padded_numel(), dtype))


def replay_dense(weight, dtype):
    """Inside a full replay on CPU (recompute.replay_slot): the NF4Tensor weight dequantized into the replay's next
    slot buffer, kept for the block's backward (dL/dx = g W), so that backward does not dequantize it again; else None.
    The slots are kept buffers too, one per weight shape and its n-th use in a block (0.29 GiB at llama2-7b's width:
    q, k, v, o, gate, up), reused block by block."""
    slot = recompute.replay_slot(tuple(weight.shape)) if weight.device.type == "cpu" else None  # (CUDA: dequantizing
    if slot is None:                                                                                # is cheap there)
        return None
    return weight.dequantize(dtype, buffer=kept_buffer(("replay", *slot), weight.padded_numel(), dtype))
