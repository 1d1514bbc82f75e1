"""NF4 dequantize as one Triton kernel, CUDA only (quant_torch.triton_kernel imports it lazily: no CPU needs Triton).

    scale[b] = nested_code[absmax[b]] * nested_absmax[b // 256] + offset    (double quantization; else absmax[b])
    out[j]   = round_to(dtype, level[code_j] * scale[j // block_size])      in fp32, each product rounded once

quant.py's torch path takes about ten kernels (the scales' five, then codes to int32, a gather of level pairs, the
scale, the rounding copy) and moves about 22 bytes per value where 2.5 are needed. This kernel reads each code byte
and scale once and writes each value once. It is bit for bit the torch path: the same fp32 products and sums in the
same order, with fused multiply-add switched off (enable_fp_fusion=False) so that no sum is fused into its product."""
import torch
import triton
import triton.language as tl

BYTES_PER_PROGRAM = 2048   # 4096 values


@triton.jit
def _dequantize(codes_ptr, absmax_ptr, nested_ptr, offset_ptr, nested_code_ptr, levels_ptr, out_ptr, n,
                BLOCK_SIZE: tl.constexpr, NESTED_BLOCK_SIZE: tl.constexpr, DOUBLE: tl.constexpr,
                BYTES: tl.constexpr, BF16: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BYTES + tl.arange(0, BYTES)         # the code bytes this program reads
    inside = 2 * i < n
    byte = tl.load(codes_ptr + i, mask=inside, other=0).to(tl.int32)
    block = 2 * i // BLOCK_SIZE                                            # a byte's two values share a block
    if DOUBLE:
        q = tl.load(absmax_ptr + block, mask=inside, other=0).to(tl.int32)
        scale = tl.load(nested_code_ptr + q) * tl.load(nested_ptr + block // NESTED_BLOCK_SIZE, mask=inside,
                                                       other=0.0) + tl.load(offset_ptr)
    else:
        scale = tl.load(absmax_ptr + block, mask=inside, other=0.0)
    first = tl.load(levels_ptr + (byte >> 4)) * scale                      # first value in the high nibble
    second = tl.load(levels_ptr + (byte & 15)) * scale
    value = tl.interleave(first, second)                                   # (2 * BYTES,): values 2i, 2i + 1
    if BF16:    # round to nearest even by hand, into the bf16's bits (an int16 view): the same on every Triton backend
        bits = value.to(tl.int32, bitcast=True)
        value = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).to(tl.int16)
    j = tl.program_id(0).to(tl.int64) * 2 * BYTES + tl.arange(0, 2 * BYTES)
    tl.store(out_ptr + j, value.to(out_ptr.dtype.element_ty), mask=j < n)


def dequantize(t, levels, out, nested_block_size=256):
    """Writes the NF4Tensor t's values into the flat tensor `out` (bf16, fp16 or fp32, on t's device); returns out.
    (quant.py passes its tables and constants in: this file imports nothing of the project's.)"""
    n, bf16 = t.numel(), out.dtype == torch.bfloat16
    double = t.nested_absmax is not None
    nested, offset = (t.nested_absmax, t.offset) if double else (t.absmax, t.absmax)   # unused when not double
    tensors = [t.codes, t.absmax, nested, offset, t.nested_code, levels]
    if any(x.device != out.device for x in tensors):     # the kernel reads raw pointers: no check would catch it
        raise ValueError(f"NF4 dequantize: codes, scales and tables must all be on {out.device}, found "
                         f"{[str(x.device) for x in tensors]}")
    codes, absmax, nested, offset, nested_code, levels = (x.contiguous() for x in tensors)   # strided views: copied
    grid = (triton.cdiv(n, 2 * BYTES_PER_PROGRAM),)
    _dequantize[grid](codes, absmax, nested, offset, nested_code, levels, out.view(torch.int16) if bf16 else out,
                      n, BLOCK_SIZE=t.block_size, NESTED_BLOCK_SIZE=nested_block_size, DOUBLE=double,
                      BYTES=BYTES_PER_PROGRAM, BF16=bf16, enable_fp_fusion=False)
    return out
