"""Dequantize speed against the step size quant.py works in: the three weight shapes of a llama2-7b block (4096²,
11008 x 4096, 4096 x 11008), NF4 with double quantization, dequantized to bf16, every size taking turns in each round.

    python bench/dequant_chunks.py --threads 2            # into one kept buffer, as the NF4 matmuls on CPU do
    python bench/dequant_chunks.py --threads 1 --fresh    # a fresh output each time, as other callers get

One block's weights alone favour larger steps than a whole model does (see quant_torch.CHUNK): compare with
`python bench/profile_block.py --layers 4 --log2-chunk N` before changing it.

Prints the median and min milliseconds per pass over the three weights for each step size (values per step).
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import quant as Q  # noqa: E402
import quant_torch  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fresh", action="store_true", help="a new output per dequantize instead of one kept buffer")
    ap.add_argument("--log2-chunks", type=int, nargs="+", default=[17, 18, 19, 20, 21])
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    qs = [Q.quantize_nf4(torch.randn(o, i) * 0.02) for o, i in ((4096, 4096), (11008, 4096), (4096, 11008))]
    buf = None if args.fresh else torch.empty(max(q.padded_numel() for q in qs), dtype=torch.bfloat16)
    times, shipped = {c: [] for c in args.log2_chunks}, quant_torch.CHUNK
    for _ in range(args.rounds):
        for c in args.log2_chunks:
            quant_torch.CHUNK = 1 << c
            t = time.perf_counter()
            for q in qs:
                q.dequantize(torch.bfloat16, buffer=buf)
            times[c].append(time.perf_counter() - t)
    print(f"torch {torch.__version__}, {args.threads} threads, {'fresh outputs' if args.fresh else 'one kept buffer'}, "
          f"ms per pass over the three weights, median (min) of {args.rounds} rounds; "
          f"shipped: 2^{shipped.bit_length() - 1}")
    for c, ts in times.items():
        print(f"step 2^{c} values: {statistics.median(ts) * 1e3:7.1f} ms ({min(ts) * 1e3:.1f})")


if __name__ == "__main__":
    main()
