"""quant.py: 4-bit NormalFloat (NF4) quantization, written by hand (QLoRA, Dettmers et al. 2023, Sec. 3).

LoRA-SP keeps the frozen base weight W in NF4: Q = qN(W), as the paper's algorithm (Sec. 3.4) writes it. Its Eq. 3
quantizes W - (A⊙S)(B⊙S) instead; at initialisation that is the same, since B = 0 makes the product 0. Here:
- NF4_LEVELS: the 16 levels, computed from normal quantiles (QLoRA Eq. 4, asymmetric so that 0 is exact).
- quantize_nf4: blockwise absmax over the flattened weight (64 values a block), each value scaled to
  [-1, 1] and rounded to the nearest level; two 4-bit codes a byte, the first in the high nibble.
- double quantization (QLoRA "Double Quantization"): the fp32 absmax values, minus their mean, are themselves
  quantized in blocks of 256 with the signed dynamic 8-bit code, leaving 8 + 32/256 bits of scale per 64
  weights: 4 + 8/64 + 32/(64*256) = 4.127 bits per parameter.
- NF4Linear: a frozen linear layer that keeps only the NF4 weight; its autograd function saves no
  full-precision copy and dequantizes again in backward for the input gradient.
The byte layout and serialized names are bitsandbytes', so codes compare byte for byte with
`bitsandbytes.functional.quantize_4bit(..., quant_type="nf4")` and state dicts load in either direction.
Beside this file: what makes it fast (quant_torch.py: lookup tables and cache-sized steps for the CPU; quant_triton.py:
CUDA's dequantize kernel) and bitsandbytes' serialized names, read and written with their checks (quant_bnb.py).
Left out: FP4, paged memory, fused 4-bit matmul kernels (we dequantize, then call the dense matmul).

Run `python quant.py` to quantize a random matrix and print its error, size and timings.
~340 lines: past the 250-line budget by the last section (the kept CPU buffer, the Triton hook; ~45 lines) and the
checks that refuse bad input (a NaN/Inf weight or scale, a block size bitsandbytes lacks, an integer input or one on
another device; ~30 lines).
"""
import argparse
import functools
import math
import threading
import timeit

import torch
import torch.nn as nn
import torch.nn.functional as F

import quant_bnb
import quant_torch
from quant_bnb import is_int

# ----------------------------------------------------------------------------------------------------
# The levels

BLOCK_SIZES = tuple(2 ** k for k in range(5, 13))  # 32 ... 4096, the block sizes bitsandbytes accepts
NESTED_BLOCK_SIZE = 256                             # QLoRA's block size for the double-quantized scales


def _nf4_levels(offset=0.9677083):
    """QLoRA's NormalFloat: 8 positive and 7 negative N(0,1) quantiles, plus an exact 0, scaled to [-1, 1].
    The asymmetry (8 vs 7) gives a true zero; `offset` = (1 - 1/(2*15) + 1 - 1/(2*16)) / 2 trims the tails.
    The precisions follow QLoRA's recipe (fp32 probabilities, fp64 quantiles, fp32 scaling), which makes the
    table bit-identical to bitsandbytes' constants."""
    p_pos = torch.linspace(offset, 0.5, 9, dtype=torch.float32)[:-1].double()   # 8 probabilities > 0.5
    p_neg = torch.linspace(offset, 0.5, 8, dtype=torch.float32)[:-1].double()   # 7, mirrored below 0
    levels = torch.cat([-torch.special.ndtri(p_neg), torch.zeros(1, dtype=torch.float64),
                        torch.special.ndtri(p_pos)]).float().sort().values
    return levels / levels.max()


def _dynamic_code():
    """bitsandbytes' signed dynamic 8-bit code (Dettmers 2016): exponent 10^-6 ... 10^0 and a linear fraction
    whose resolution doubles with each exponent step; 127 positive, 127 negative values, 0 and 1."""
    values = [0.0, 1.0]
    for i in range(7):
        edges = torch.linspace(0.1, 1, 2 ** i + 1, dtype=torch.float32)
        means = (edges[:-1] + edges[1:]) / 2                      # the fraction values of this exponent
        values += (10.0 ** (i - 6) * means).tolist() + (-(10.0 ** (i - 6)) * means).tolist()
    return torch.tensor(sorted(values), dtype=torch.float32)


NF4_LEVELS = _nf4_levels()                                   # (16,) float32, sorted, [-1, ..., 0, ..., 1]
NF4_MIDPOINTS = (NF4_LEVELS[:-1] + NF4_LEVELS[1:]) / 2       # (15,) nearest level = bucket between midpoints
DYNAMIC_CODE = _dynamic_code()                               # (256,) float32, sorted


# ----------------------------------------------------------------------------------------------------
# NF4Tensor: packed codes and scales; dequantize; bitsandbytes' serialized form (quant_bnb.py)

class NF4Tensor:
    """A weight stored in NF4: packed codes plus the blockwise scales needed to read it back.

    codes    uint8 (ceil(numel/2),)   two 4-bit level indices per byte, first element in the high nibble
    absmax   float32 (n_blocks,)      per-block absmax; or, with double quantization, uint8 codes of
                                      (absmax - offset) in the nested code, with the two fields below
    nested_absmax float32 (ceil(n_blocks/256),), offset float32 scalar   (double quantization only)
    nested_code   (256,) the scales' code table: DYNAMIC_CODE, or whatever table a checkpoint brought
    """

    def __init__(self, codes, absmax, shape, dtype, block_size, nested_absmax=None, offset=None, nested_code=None):
        self.codes, self.absmax, self.shape, self.dtype = codes, absmax, torch.Size(shape), dtype
        self.block_size, self.nested_absmax, self.offset = block_size, nested_absmax, offset
        self.nested_code = _tables(codes.device).dynamic if nested_code is None else nested_code

    double_quant = property(lambda self: self.nested_absmax is not None)
    device = property(lambda self: self.codes.device)
    numel = lambda self: self.shape.numel()

    # every byte of codes and scales (not the shared tables; nor the 1 KiB nested code a checkpoint's tensor brings)
    nbytes = property(lambda self: sum(t.nbytes for t in (self.codes, self.absmax, self.nested_absmax, self.offset)
                                       if t is not None))

    def block_absmax(self):
        """The fp32 absmax of every block; with double quantization, dequantized from its 8-bit codes."""
        if not self.double_quant:
            return self.absmax
        # each nested scale repeated for its 256 blocks, by expand: repeat_interleave(int) waits for the GPU (a sync)
        nested = self.nested_absmax[:, None].expand(-1, NESTED_BLOCK_SIZE).reshape(-1)[: self.absmax.numel()]
        return self.nested_code.index_select(0, self.absmax.int()) * nested + self.offset

    def dequantize(self, dtype=torch.bfloat16, buffer=None):
        """W ~ level[code] * absmax[block], computed in fp32 and rounded once to `dtype` (as bitsandbytes), by
        quant_triton.py's kernel on CUDA, else by quant_torch.py. buffer: a flat tensor of `dtype` with at least
        padded_numel() elements to write into (its first part is the result), else a new one."""
        if not dtype.is_floating_point:  # levels * absmax copied into an integer dtype: every |w| < 1 truncated to 0
            raise TypeError(f"NF4 dequantizes to a floating-point dtype (an NF4Linear's: its input's), got {dtype}")
        t, bs, blocks = _tables(self.device), self.block_size, self.padded_numel() // self.block_size
        out = quant_torch.output(buffer, dtype, blocks * bs, self.device)
        if (kernel := triton_kernel(self.device)) is not None:   # CUDA: one kernel, the scales decoded inside it
            kernel.dequantize(self, t.levels, out, NESTED_BLOCK_SIZE)
        else:                                                     # codes (blocks, bs/2), two a byte, tail padded
            quant_torch.dequantize(_blocks(self.codes, bs // 2), self.block_absmax(), out.view(blocks, bs), t,
                                   quant_torch.steps(blocks, bs, self.device, CHUNK))
        return out[: self.numel()].view(self.shape)

    def padded_numel(self):
        return math.ceil(self.numel() / self.block_size) * self.block_size

    def to(self, device):
        move = lambda x: None if x is None else x.to(device)
        return NF4Tensor(move(self.codes), move(self.absmax), self.shape, self.dtype, self.block_size,
                         move(self.nested_absmax), move(self.offset), move(self.nested_code))

    def __repr__(self):
        return (f"NF4Tensor(shape={tuple(self.shape)}, dtype={self.dtype}, block_size={self.block_size}, "
                f"double_quant={self.double_quant}, {8 * self.nbytes / self.numel():.3f} bits/param)")

    def state_dict(self, prefix="weight"):
        """bitsandbytes' keys: those of a `*-bnb-4bit` checkpoint's Linear4bit weight."""
        return quant_bnb.state_dict(self, prefix, NF4_LEVELS, NESTED_BLOCK_SIZE)

    @classmethod
    def from_state_dict(cls, sd, prefix="weight", shape=None):
        """Read bitsandbytes' keys (ours, or a checkpoint quantized by bitsandbytes); inconsistencies are errors, and so
        is a shape other than `shape` where given."""
        return cls(**quant_bnb.read(sd, prefix, NF4_LEVELS, BLOCK_SIZES, NESTED_BLOCK_SIZE, shape))._checked(prefix)

    def _checked(self, what, w=None):
        """self, if every block's scale is finite; else an error saying why: NaN/Inf values in the weight w it was
        quantized from, or (a NaN/Inf absmax read from a state dict, or double quantization's code * nested scale +
        offset overflowing fp32) how many scales, and where."""
        bad = ~torch.isfinite(self.block_absmax())
        if not bad.any():
            return self
        if w is not None and not (wf := w.detach().float()).isfinite().all():   # float64 beyond fp32's range: Inf
            where = [tuple(i) for i in (~torch.isfinite(wf)).nonzero()[:3].tolist()]
            raise ValueError(f"weight of shape {list(w.shape)} has {int(torch.isnan(wf).sum())} NaN and "
                             f"{int(torch.isinf(wf).sum())} Inf values, first at index {where}")
        too_big = "" if w is None else (f"; its values (up to {float(wf.abs().max()):.3g}) are too large for double "
                                        "quantization's fp32 scales: quantize with double_quant=False")
        raise ValueError(f"{what}: {int(bad.sum())} of {bad.numel()} block scales are NaN or Inf (first block "
                         f"{int(bad.nonzero()[0])}): they would dequantize to NaN/Inf{too_big}")


# ----------------------------------------------------------------------------------------------------
# quantize_nf4 and its helpers

def _blocks(x, size):
    """A flat tensor as (blocks, size) rows; a tail is zero-padded to a whole block (as bitsandbytes pads)."""
    return (x if x.numel() % size == 0 else F.pad(x, (0, -x.numel() % size))).view(-1, size)


def _scale(x):
    """Per-row absmax of (blocks, size) rows, in fp32, and the rows scaled into [-1, 1] by its reciprocal, as
    bitsandbytes does (x * (1/a) and x / a can differ in the last bit)."""
    lo, hi = torch.aminmax(x, dim=1)                  # one pass instead of abs() then max()
    absmax = torch.maximum(hi, -lo).float() + 0.0    # + 0.0: a block of -0.0 has absmax +0.0, as bitsandbytes
    return absmax, x * (1.0 / absmax.clamp(min=1e-38))[:, None]


def quantize_nf4(w, block_size=64, double_quant=True):
    """Quantize w to NF4: W ~ NF4_LEVELS[code] * absmax(block)  (QLoRA Eq. 1 with the NF4 data type)."""
    if not (is_int(block_size) and block_size in BLOCK_SIZES):
        raise ValueError(f"block_size {block_size!r} is not allowed; choose one of the integers {BLOCK_SIZES}")
    if not w.is_floating_point():
        raise TypeError(f"NF4 quantizes floating-point weights, got {w.dtype}")
    if w.numel() == 0 or w.is_meta:
        what = "a meta-device" if w.is_meta else "an empty"
        raise ValueError(f"cannot quantize {what} tensor (shape {list(w.shape)}): it holds no values")
    x, t = _blocks(w.detach().reshape(-1), block_size), _tables(w.device)   # padding: absmax unchanged, code 7 (0.0)
    codes = torch.empty(x.shape[0], block_size // 2, dtype=torch.uint8, device=w.device)
    absmax = torch.empty(x.shape[0], dtype=torch.float32, device=w.device)
    for s in quant_torch.steps(x.shape[0], block_size, w.device, CHUNK):   # cache-sized steps of blocks on CPU
        absmax[s], scaled = _scale(x[s].float())                              # (blocks, bs)
        idx = quant_torch.nearest_level(scaled, t).view(-1, 2)       # torch.bucketize(scaled, NF4_MIDPOINTS)
        torch.bitwise_or(idx[:, 0] << 4, idx[:, 1], out=codes[s].view(-1))     # first element -> high nibble
    codes = codes.view(-1)[: math.ceil(w.numel() / 2)]
    if not double_quant:
        q = NF4Tensor(codes, absmax, w.shape, w.dtype, block_size)
    else:  # double quantization: centre the scales (all positive), then 8-bit blockwise with 256 a block
        offset = absmax.mean()
        if not offset.isfinite():         # fp32's sum overflowed (|w| ~ 1e36 and up): the mean itself is finite
            offset = absmax.double().mean().float()
        absmax2, scaled = _scale(_blocks(absmax - offset, NESTED_BLOCK_SIZE))
        qabsmax = torch.bucketize(scaled, (t.dynamic[:-1] + t.dynamic[1:]) / 2).to(torch.uint8)
        q = NF4Tensor(codes, qabsmax.view(-1)[: absmax.numel()], w.shape, w.dtype, block_size, absmax2, offset)
    return q._checked(f"weight of shape {list(w.shape)}", w)  # a NaN or Inf in w made its block's absmax NaN or Inf


# ----------------------------------------------------------------------------------------------------
# NF4Linear: a frozen layer that keeps only the NF4 weight

class _NF4Matmul(torch.autograd.Function):
    """y = x W^T with W in NF4. Saves only the NF4 weight (input-independent); backward dequantizes again."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.weight = weight                          # not ctx.save_for_backward: nothing input-dependent kept
        return F.linear(x, _dense(weight, x.dtype))

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out @ _dense(ctx.weight, grad_out.dtype), None             # dL/dx = g W; no dL/dW


class NF4Linear(nn.Module):
    """A frozen linear layer whose weight lives in NF4: y = x dequant(W)^T + b, computed in x's dtype
    (bf16 on GPU, fp32 on CPU; autocast's dtype when autocast is on)."""

    def __init__(self, weight, bias=None):
        super().__init__()
        if len(weight.shape) != 2:
            raise ValueError(f"NF4Linear needs a 2-D weight, got shape {list(weight.shape)}")
        self.weight = weight                                                    # NF4Tensor, never a Parameter
        self.out_features, self.in_features = weight.shape
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear, block_size=64, double_quant=True):
        return cls(quantize_nf4(linear.weight, block_size, double_quant), linear.bias)

    def forward(self, x):
        if x.device != self.weight.device:
            raise ValueError(f"NF4Linear: input on {x.device}, weight on {self.weight.device} (model.to(device) moves "
                             "the weight)")
        if torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))
        y = _NF4Matmul.apply(x, self.weight)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def grad_input(self, g):
        """dL/dx for dL/dy = g (..., out): g W, as this layer's backward computes it."""
        return g @ _dense(self.weight, g.dtype)

    def _apply(self, fn, recurse=True):
        # model.to(device) moves the NF4 weight; model.to(dtype) must not cast its fp32 scales: fn's device only
        self.weight = self.weight.to(fn(torch.empty(0, device=self.weight.device)).device)
        return super()._apply(fn, recurse)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)                 # the bias, if any
        destination.update(self.weight.state_dict(prefix + "weight"))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        mine = quant_bnb.own_keys(state_dict, prefix + "weight")
        if not mine:                          # none of its keys: a missing key, an error only if strict, as nn.Module
            missing.append(prefix + "weight")
        else:
            try:
                w = NF4Tensor.from_state_dict(mine, prefix + "weight", self.weight.shape)
                self.weight = w.to(self.weight.device)
            except ValueError as e:
                errors.append(str(e))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)
        unexpected[:] = [k for k in unexpected if k not in mine]      # the NF4 keys were consumed above

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.weight!r}"


# ----------------------------------------------------------------------------------------------------
# Not needed to learn NF4: where the work runs fast (quant_torch.py on CPU, quant_triton.py on CUDA), and the CPU
# buffer every NF4 matmul dequantizes into

CHUNK = 1 << 18  # values per step on CPU, so each step's fp32 temporaries (1 MiB) stay in cache. 2^20 won on one
# block's weights alone, not in whole models nor in the 7B step (bench/profile_block.py; docs/benchmarks-7b.md)
TRITON = True   # on CUDA, dequantize with quant_triton.py's one kernel where Triton is installed; False: the torch path
_kept = threading.local()  # vars(): (name, dtype) -> a flat CPU buffer of this thread's, kept between calls


@functools.cache
def _tables(device):
    """quant_torch.py's lookup tables, with the levels and the 8-bit code, once per device."""
    return quant_torch.tables(NF4_LEVELS, NF4_MIDPOINTS, DYNAMIC_CODE, device)


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


def _dense(weight, dtype):
    """weight dequantized for one matmul, used at once and dropped. On CPU into one kept buffer (kept_buffer), the
    largest weight's size (the memory plan counts it): without, a 7B block's step took 4.40 s, not 3.93 s, faulting in
    pages (docs/benchmarks-7b.md)."""
    if weight.device.type != "cpu":
        return weight.dequantize(dtype)              # the CUDA caching allocator reuses its blocks already
    return weight.dequantize(dtype, buffer=kept_buffer("dequantize", weight.padded_numel(), dtype))


# ----------------------------------------------------------------------------------------------------
# The demo

if __name__ == "__main__":  # no flags: a typed one is refused, not ignored while block 64's figures print
    argparse.ArgumentParser(description="NF4 on a 4096 x 4096 weight: size, error, timings").parse_args()
    torch.manual_seed(0)
    W = torch.randn(4096, 4096) * 0.02                      # a Llama-7B-sized projection, N(0, 0.02^2)
    q = quantize_nf4(W)
    err, bits = q.dequantize(torch.float32) - W, 8 * q.nbytes / W.numel()
    print(f"NF4 levels: {[round(v, 4) for v in NF4_LEVELS.tolist()]}\n4096x4096 fp32 weight -> {q}")
    print(f"  {q.nbytes / 2**20:.2f} MiB = {bits:.3f} bits/param, {16 / bits:.1f}x smaller than bf16")
    print(f"  max |error| {err.abs().max():.2e}, RMS error {err.pow(2).mean().sqrt():.2e} (RMS weight 2.00e-02)")
    for name, f in [("quantize", lambda: quantize_nf4(W)), ("dequantize to bf16", lambda: q.dequantize())]:
        ms = 1e3 * sorted(timeit.repeat(f, number=1, repeat=7))[3]
        print(f"  {name}: {ms:.1f} ms (median of 7, {torch.get_num_threads()} threads)")
    layer = NF4Linear.from_linear(nn.Linear(4096, 4096))
    x = torch.randn(4, 4096, requires_grad=True)
    layer(x).sum().backward()
    print(f"{layer}\n  forward and backward ran: input grad {tuple(x.grad.shape)}, no weight gradient")
