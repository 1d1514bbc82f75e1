"""NF4 dequantize as one Triton kernel, for CUDA only (quant.py imports this file lazily, so the CPU never needs Triton).

    out[j] = round_to(dtype, level[code_j] * absmax[j // block_size])      in fp32, rounded once: bit for bit
                                                                           quant.py's torch path

quant.py's torch path takes five passes over the weight (codes to int32, a gather of level pairs, the scale, the
rounding copy): about 22 bytes moved per value where 2.5 are needed. This kernel reads each code byte and block scale
once and writes each value once. The scales come in as fp32 (double quantization already undone by the caller: a
1/64-size pass), so the one multiply here is the same multiply, and the same rounding, as the torch path's."""
import torch
import triton
import triton.language as tl

VALUES_PER_PROGRAM = 4096


@triton.jit
def _dequantize(codes_ptr, absmax_ptr, levels_ptr, out_ptr, n, BLOCK_SIZE: tl.constexpr, BLOCK: tl.constexpr,
                BF16: tl.constexpr):
    j = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)        # the output values this program writes
    inside = j < n
    byte = tl.load(codes_ptr + j // 2, mask=inside, other=0).to(tl.int32)
    code = (byte >> (4 * (1 - j % 2)).to(tl.int32)) & 15                  # first value in the high nibble
    level = tl.load(levels_ptr + code, mask=inside, other=0.0)
    scale = tl.load(absmax_ptr + j // BLOCK_SIZE, mask=inside, other=0.0)     # a constant: a shift, not a division
    value = level * scale
    if BF16:    # round to nearest even by hand, into the bf16's bits (an int16 view): the same on every Triton backend
        bits = value.to(tl.int32, bitcast=True)
        value = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).to(tl.int16)
    tl.store(out_ptr + j, value.to(out_ptr.dtype.element_ty), mask=inside)


def dequantize(codes, absmax, levels, n, block_size, out):
    """Writes n values into the flat tensor `out` (bf16, fp16 or fp32, on the codes' device) and returns it."""
    grid, bf16 = (triton.cdiv(n, VALUES_PER_PROGRAM),), out.dtype == torch.bfloat16
    _dequantize[grid](codes, absmax, levels, out.view(torch.int16) if bf16 else out, n, BLOCK_SIZE=block_size,
                      BLOCK=VALUES_PER_PROGRAM, BF16=bf16)
    return out
