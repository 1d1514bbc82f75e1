"""quant_torch.py: NF4's two hot loops in torch ops, made fast on a CPU (the path wherever quant_triton.py's CUDA kernel
is not used). Each is bit for bit the plain form quant.py names:

    nearest_level(scaled)  = torch.bucketize(scaled, NF4_MIDPOINTS)     the nearest of the 16 levels, ties to the lower
    dequantize(...)        : out = NF4_LEVELS[code] * absmax[block]    in fp32, rounded once to out's dtype

How: a lookup by a float's top 16 bits in place of bucketize's branchy binary search (quantize takes 0.2x
bitsandbytes' time), a 2 KiB table of both levels of a code byte gathered 8 bytes at a time, and steps of whole blocks
sized to the cache on CPU (quant.CHUNK values). quant.py passes its levels and CHUNK in; like quant_triton.py and
quant_bnb.py this file imports nothing of the project's. Not run on its own: tests/test_quant*.py check it against
bitsandbytes and a brute-force nearest-level search.
"""
import math
from types import SimpleNamespace

import torch


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
    low = torch.minimum(a, b)   # a finite bin's two ends differ by 0 or 1 level (NaN/Inf bins: inputs that raise)
    mid = torch.where(a == b, torch.tensor(math.inf), midpoints[low.clamp(max=14)])
    byte = torch.arange(256)
    pairs = levels[torch.stack([byte >> 4, byte & 15], dim=1)]                    # (256, 2) fp32
    return SimpleNamespace(levels=levels.to(device), dynamic=dynamic.to(device),
                           low=low.to(torch.uint8).to(device), mid=mid.to(device),
                           pairs=pairs.view(torch.int64).view(-1).to(device))


def steps(n_blocks, block_size, device, chunk):
    """Slices of whole blocks, `chunk` values each on CPU (cache-sized); one slice on an accelerator."""
    step = max(1, chunk // block_size) if device.type == "cpu" else n_blocks
    return [slice(i, min(i + step, n_blocks)) for i in range(0, n_blocks, step)]


def nearest_level(scaled, t):
    """Index of the nearest NF4 level, ties to the lower: torch.bucketize(scaled, NF4_MIDPOINTS), by bin tables."""
    bins = ((scaled.view(torch.int32) >> 16) & 0xFFFF).view(-1)               # top 16 bits, as an index
    code = t.low.index_select(0, bins)
    return code.add_(scaled.view(-1) > t.mid.index_select(0, bins)).view(scaled.shape)


def output(buffer, dtype, numel, device):
    """Where dequantize writes: a new flat tensor, or the caller's buffer if it has the dtype, device and room."""
    if buffer is None:
        return torch.empty(numel, dtype=dtype, device=device)
    if (buffer.dtype, buffer.device) == (dtype, device) and buffer.numel() >= numel:
        return buffer[:numel]
    raise ValueError(f"dequantize needs a {dtype} buffer of {numel} elements on {device}, got "
                     f"{buffer.dtype} x {buffer.numel()} on {buffer.device}")


def dequantize(codes, absmax, out, t, steps):
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
