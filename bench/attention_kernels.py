"""Causal attention forward + backward on CPU, three ways, at the two shapes the benchmarks train: torch's SDPA
(its flash kernel, what model.py calls), SDPA's math backend, and the plain formula (QK^T, fp32 softmax, PV), in bf16
and fp32. Why attention keeps the 134M bf16 step under 90% of its matmul floor: no torch kernel runs it near the
matmul rate at head size 64.

    python bench/attention_kernels.py --threads 1
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def plain(q, k, v):
    T, D = q.shape[-2:]
    s = (q @ k.transpose(-1, -2)).float() * D ** -0.5
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return s.softmax(-1).to(q.dtype) @ v


def sdpa_math(q, k, v):
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kernels = {"SDPA (flash)": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
               "SDPA math": sdpa_math, "plain": plain}
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats}; GFLOP/s counts the full "
          "T x T products (4BHT^2D forward, twice that backward), as the benchmarks' floor does")
    print("| dtype | B, H, T, D | kernel | forward ms | backward ms | GFLOP/s |\n|---|---|---|---|---|---|")
    for dt in (torch.bfloat16, torch.float32):
        for B, H, T, D in ((4, 12, 256, 64), (1, 32, 512, 128)):  # the 134M Llama at 4 x 256; llama2-7b at 1 x 512
            q, k, v = (torch.randn(B, H, T, D, dtype=dt, requires_grad=True) for _ in range(3))
            g = torch.randn(B, H, T, D, dtype=dt)
            for name, fn in kernels.items():
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    o = fn(q, k, v)
                    t1 = time.perf_counter()
                    o.backward(g)
                    times.append((t1 - t0, time.perf_counter() - t1))
                f, b = (statistics.median(t[i] for t in times) for i in (0, 1))
                print(f"| {str(dt)[6:]} | {B}, {H}, {T}, {D} | {name} | {f * 1e3:.1f} | {b * 1e3:.1f} | "
                      f"{12 * B * H * T * T * D / (f + b) / 1e9:.0f} |")


if __name__ == "__main__":
    main()
