"""quant.py: 4-bit NormalFloat (NF4) quantization, written by hand (QLoRA, Dettmers et al. 2023, Sec. 3).

LoRA-SP keeps the frozen base weight W in NF4: Q = qN(W), as the paper's algorithm (Sec. 3.4) writes it. Its Eq. 3
quantizes W - (A⊙S)(B⊙S) instead; at initialisation that is the same, since B = 0 makes the product 0. Here:
- NF4_LEVELS: the 16 levels, computed from normal quantiles (QLoRA Eq. 4, asymmetric so that 0 is exact).
- quantize_nf4: blockwise absmax over the flattened weight (64 values a block), each value scaled to
  [-1, 1] and rounded to the nearest level; two 4-bit codes a byte, the first in the high nibble.
- double quantization (QLoRA "Double Quantization"): the fp32 absmax values, minus their mean, are themselves
  quantized in blocks of 256 with the signed dynamic 8-bit code, leaving 8 + 32/256 bits of scale per 64
  weights: 4 + 8/64 + 32/(64*256) = 4.127 bits per parameter.
- NF4Linear: a frozen linear layer that keeps only the NF4 weight; its autograd function saves no full-precision
  copy and dequantizes again in backward for the input gradient (but a full replay's: recompute.replay_slot).
The byte layout and serialized names are bitsandbytes', so codes compare byte for byte with
`bitsandbytes.functional.quantize_4bit(..., quant_type="nf4")` and state dicts load in either direction.
Beside it, not needed to learn NF4: the speed (quant_torch.py: CPU lookup tables, cache-sized steps, kept buffers;
quant_triton.py's CUDA kernel), bitsandbytes' names and the checks on bad input (quant_bnb.py). Left out: FP4, paged
memory, fused 4-bit kernels (we dequantize, then matmul). `python quant.py`: a random matrix's NF4 error, size, speed.
"""
import argparse
import functools
import math
import signal
import timeit

import torch
import torch.nn as nn
import torch.nn.functional as F

import quant_bnb
import quant_torch

# ----------------------------------------------------------------------------------------------------
# The levels

BLOCK_SIZES = tuple(2 ** k for k in range(5, 13))  # 32 ... 4096, the block sizes bitsandbytes accepts
BLOCK_SIZE = 64                                     # weights a block, QLoRA's: quantize_nf4's, from_linear's default
NESTED_BLOCK_SIZE = 256                             # QLoRA's block size for the double-quantized scales


def _nf4_levels(offset=0.9677083):
    """QLoRA's NormalFloat: 8 positive and 7 negative N(0,1) quantiles, plus an exact 0, scaled to [-1, 1]. The
    asymmetry (8 vs 7) gives a true zero; `offset` = (1 - 1/(2*15) + 1 - 1/(2*16)) / 2 trims the tails. QLoRA's
    precisions (fp32 probabilities, fp64 quantiles, fp32 scaling) make the table bit-identical to bitsandbytes'."""
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


@functools.cache
def _tables(device):
    """quant_torch.py's lookup tables, with the levels and the 8-bit code, once per device."""
    return quant_torch.tables(NF4_LEVELS, NF4_MIDPOINTS, DYNAMIC_CODE, device)


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
    padded_numel = lambda self: math.ceil(self.numel() / self.block_size) * self.block_size   # whole blocks

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
        """W ~ level[code] * absmax[block] in fp32, rounded once to `dtype` (as bitsandbytes): quant_triton.py's kernel
        on CUDA, else quant_torch.py. buffer: a flat `dtype` tensor of padded_numel() elements or more to fill."""
        if not isinstance(dtype, torch.dtype):   # (int, "float32", None: an AttributeError in quant_torch.output)
            raise TypeError(f"dequantize: dtype={dtype!r}: give a torch dtype (torch.bfloat16, torch.float32, ...)")
        out = quant_torch.output(buffer, dtype, self.padded_numel(), self.device)    # (padded_numel,)
        quant_torch.dequantize(self, _tables(self.device), out, NESTED_BLOCK_SIZE)
        return out[: self.numel()].view(self.shape)

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
        return quant_bnb.checked(cls(**quant_bnb.read(sd, prefix, NF4_LEVELS, BLOCK_SIZES, NESTED_BLOCK_SIZE, shape)),
                                 prefix)


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


def quantize_nf4(w, block_size=BLOCK_SIZE, double_quant=True):
    """Quantize w to NF4: W ~ NF4_LEVELS[code] * absmax(block)  (QLoRA Eq. 1 with the NF4 data type)."""
    quant_bnb.check_weight(w, block_size, BLOCK_SIZES, double_quant)   # a block size bnb lacks, an int or empty w
    x, t = _blocks(w.detach().reshape(-1), block_size), _tables(w.device)   # padding: absmax unchanged, code 7 (0.0)
    codes = torch.empty(x.shape[0], block_size // 2, dtype=torch.uint8, device=w.device)
    absmax = torch.empty(x.shape[0], dtype=torch.float32, device=w.device)
    for s in quant_torch.steps(x.shape[0], block_size, w.device):   # cache-sized steps of blocks on CPU
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
    return quant_bnb.checked(q, f"weight of shape {list(w.shape)}", w)  # a NaN/Inf in w: its block's absmax NaN/Inf


# ----------------------------------------------------------------------------------------------------
# NF4Linear: a frozen layer that keeps only the NF4 weight

class _NF4Matmul(torch.autograd.Function):
    """y = x W^T with W in NF4. Saves only the NF4 weight; backward dequantizes again (a full replay's W is kept)."""

    @staticmethod
    def forward(ctx, x, weight):                     # not ctx.save_for_backward: nothing input-dependent kept; a full
        ctx.weight, ctx.W = weight, quant_torch.replay_dense(weight, x.dtype) if ctx.needs_input_grad[0] else None
        return F.linear(x, quant_torch.dense(weight, x.dtype) if ctx.W is None else ctx.W)   # replay's W kept (CPU)

    @staticmethod
    def backward(ctx, grad_out):                     # dL/dx = g W; no dL/dW
        W = ctx.W if ctx.W is not None and ctx.W.dtype == grad_out.dtype else None
        return grad_out @ (quant_torch.dense(ctx.weight, grad_out.dtype) if W is None else W), None


class NF4Linear(nn.Module):
    """A frozen linear layer whose weight lives in NF4: y = x dequant(W)^T + b, computed in x's dtype
    (bf16 on GPU, fp32 on CPU; autocast's dtype when autocast is on)."""

    def __init__(self, weight, bias=None):
        super().__init__()
        if not (isinstance(weight, NF4Tensor) and len(weight.shape) == 2):   # (a tensor: accepted, failed in forward)
            raise TypeError(f"NF4Linear takes a 2-D NF4Tensor, quantize_nf4(w) (an nn.Linear: NF4Linear.from_linear("
                            f"linear)); got a {type(weight).__name__} of shape {list(weight.shape)}")
        self.weight = weight                                                    # NF4Tensor, never a Parameter
        self.out_features, self.in_features = weight.shape
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear, block_size=BLOCK_SIZE, double_quant=True):
        return cls(quantize_nf4(linear.weight, block_size, double_quant), linear.bias)

    def forward(self, x):
        if x.device != self.weight.device:
            raise ValueError(f"NF4Linear: input on {x.device}, weight on {self.weight.device} (model.to moves it)")
        if torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))
        y = _NF4Matmul.apply(x, self.weight)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def grad_input(self, g):
        """dL/dx for dL/dy = g (..., out): g W, as this layer's backward computes it."""
        return g @ quant_torch.dense(self.weight, g.dtype)

    # nn.Module's hooks for a weight that is no tensor (quant_bnb.py): model.to(device) moves it, model.to(dtype) leaves
    # its fp32 scales alone, and its state dict holds it under bitsandbytes' keys, loading in bitsandbytes and back
    _apply, _save_to_state_dict, _load_from_state_dict = quant_bnb.apply, quant_bnb.save_to_state, quant_bnb.load_state

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.weight!r}"


# ----------------------------------------------------------------------------------------------------
# The demo

if __name__ == "__main__":  # no flags: a typed one is refused, not ignored while block 64's figures print
    argparse.ArgumentParser(description="NF4 on a 4096 x 4096 weight: size, error, timings").parse_args()
    if hasattr(signal, "SIGPIPE"):  # a reader that goes (| head -1) ends the demo as it ends cat (Windows has none)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    W = torch.randn(4096, 4096, generator=torch.manual_seed(0)) * 0.02  # a Llama-7B-sized projection, N(0, 0.02^2)
    q = quantize_nf4(W)
    err, bits, rms = q.dequantize(torch.float32) - W, 8 * q.nbytes / W.numel(), lambda t: t.pow(2).mean().sqrt()
    print(f"NF4 levels: {[round(v, 4) for v in NF4_LEVELS.tolist()]}\n4096x4096 fp32 weight -> {q}")
    print(f"  {q.nbytes / 2**20:.2f} MiB = {bits:.3f} bits/param, {16 / bits:.1f}x smaller than bf16")
    print(f"  max |error| {err.abs().max():.2e}, RMS error {rms(err):.2e} (RMS weight {rms(W):.2e})")
    for name, f in [("quantize", lambda: quantize_nf4(W)), ("dequantize to bf16", lambda: q.dequantize())]:
        ms = 1e3 * sorted(timeit.repeat(f, number=1, repeat=7))[3]
        print(f"  {name}: {ms:.1f} ms (median of 7, {torch.get_num_threads()} threads)")
    layer, x = NF4Linear.from_linear(nn.Linear(4096, 4096)), torch.randn(4, 4096, requires_grad=True)
    layer(x).sum().backward()
    print(f"{layer}\n  forward and backward ran: input grad {tuple(x.grad.shape)}; parameters with a gradient: "
          f"{[n for n, p in layer.named_parameters() if p.grad is not None] or 'none'} (W is no Parameter)")
