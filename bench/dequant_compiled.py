"""Would torch.compile make a faster CPU dequantize? The same math as quant.py (levels of both nibbles, times the block
scale in fp32, rounded once to bf16) compiled by inductor (C++ code generation: needs a C++ compiler), against
quant.py's torch-op path, on one llama2-7b MLP weight (11008 x 4096), 2 threads, median of 7.

    python bench/dequant_compiled.py        # ~15 s, most of it the compile
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import quant  # noqa: E402


def dequantize(codes, absmax, levels, n_blocks):
    pair = torch.stack([levels[(codes >> 4).long()], levels[(codes & 15).long()]], -1).view(n_blocks, -1)
    return (pair * absmax[:, None]).to(torch.bfloat16)


def median_ms(fn, n=7):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[n // 2] * 1e3


if __name__ == "__main__":
    torch.set_num_threads(2)
    w = torch.randn(11008, 4096, generator=torch.Generator().manual_seed(0)) * 0.02
    q = quant.quantize_nf4(w.to(torch.bfloat16))
    absmax, compiled = q.block_absmax(), torch.compile(dequantize, dynamic=False)
    t0 = time.perf_counter()
    out = compiled(q.codes, absmax, quant.NF4_LEVELS, absmax.numel())
    print(f"compile and first call: {time.perf_counter() - t0:.1f} s")
    print("bit for bit quant.py's:", torch.equal(out.view(-1)[: w.numel()].view(w.shape), q.dequantize(torch.bfloat16)))
    print(f"torch.compile: {median_ms(lambda: compiled(q.codes, absmax, quant.NF4_LEVELS, absmax.numel())):.1f} ms  "
          f"quant.py: {median_ms(lambda: q.dequantize(torch.bfloat16)):.1f} ms")
