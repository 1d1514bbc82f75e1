"""NF4 quantize / dequantize speed: ours vs bitsandbytes, side by side in one run (ratios, since machines are noisy).

    python bench/bench_quant.py [--size 4096] [--repeats 11]

Times a size x size weight (N(0, 0.02^2), block 64, double quantization) on the CPU, as fp32 and bf16,
median of repeats, and prints ours / bitsandbytes. Ours and bitsandbytes' take turns within each repeat, so
a change of load on a shared machine hits both. A dequantized output is a new tensor of 32-64 MiB whose
first touch costs page faults (most of bitsandbytes' time); glibc gives it fresh pages, or reused heap
memory when the process history allows, which would change the ratios from run to run, so the script pins
fresh pages for allocations of 8 MiB or more (glibc's M_MMAP_THRESHOLD). On a CUDA machine it also reports dequantize bandwidth as a
fraction of a device-to-device copy of the same output.
"""
import argparse
import ctypes
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import bitsandbytes.functional as BF  # noqa: E402  (test/bench-only oracle)

from quant import quantize_nf4  # noqa: E402


def fresh_pages_for_large_allocations(threshold=8 << 20):
    """Every allocation of `threshold` bytes or more is its own mmap (as a 64 MiB one always is); glibc only."""
    try:
        return ctypes.CDLL("libc.so.6").mallopt(-3, threshold) == 1     # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def median_ms(fns, repeats, sync=lambda: None):
    """Median ms of each function; every repeat runs each function once in turn."""
    for f in fns:
        f()                                               # warm-up (bitsandbytes compiles some paths once)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for f, ts in zip(fns, times):
            sync()
            t0 = time.perf_counter()
            f()
            sync()
            ts.append(time.perf_counter() - t0)
    return [1e3 * sorted(ts)[repeats // 2] for ts in times]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=11)
    args = ap.parse_args()
    torch.manual_seed(0)
    pinned = fresh_pages_for_large_allocations()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, weight {args.size}x{args.size}, "
          f"block 64, double quant, median of {args.repeats}, fresh pages >= 8 MiB: {pinned}")
    print(f"{'CPU':<26}{'ours ms':>10}{'bnb ms':>10}{'ours/bnb':>10}")
    for dtype in (torch.float32, torch.bfloat16):
        w = (torch.randn(args.size, args.size) * 0.02).to(dtype)
        ours = quantize_nf4(w)
        codes, state = BF.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
        assert torch.equal(ours.codes, codes.view(-1)), "codes differ from bitsandbytes"
        rows = [("quantize", lambda: quantize_nf4(w),
                 lambda: BF.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)),
                ("dequantize", lambda: ours.dequantize(dtype), lambda: BF.dequantize_4bit(codes, state))]
        for name, f_ours, f_bnb in rows:
            a, b = median_ms([f_ours, f_bnb], args.repeats)
            print(f"{name + ' ' + str(dtype)[6:]:<26}{a:>10.1f}{b:>10.1f}{a / b:>10.2f}")
    if torch.cuda.is_available():
        sync = torch.cuda.synchronize
        w = (torch.randn(args.size, args.size, device="cuda") * 0.02).bfloat16()
        q = quantize_nf4(w)
        out = torch.empty_like(w)
        src = torch.empty_like(w)
        t_deq, t_copy = median_ms([lambda: q.dequantize(torch.bfloat16), lambda: out.copy_(src)], args.repeats, sync)
        moved = q.nbytes + w.numel() * 2                  # read the NF4 tensor, write bf16
        print(f"CUDA {torch.cuda.get_device_name()}: dequantize to bf16 {t_deq:.3f} ms = "
              f"{moved / t_deq / 1e6:.0f} GB/s; d2d copy of the bf16 output {t_copy:.3f} ms = "
              f"{2 * w.numel() * 2 / t_copy / 1e6:.0f} GB/s; ratio {(moved / t_deq) / (4 * w.numel() / t_copy):.2f}")
        t_q, t_bq = median_ms([lambda: quantize_nf4(w), lambda: BF.quantize_4bit(
            w, blocksize=64, quant_type="nf4", compress_statistics=True)], args.repeats, sync)
        print(f"CUDA quantize: ours {t_q:.3f} ms, bnb {t_bq:.3f} ms, ratio {t_q / t_bq:.2f}")


if __name__ == "__main__":
    from checks import console  # (lorasp's: line-buffered, UTF-8 where ASCII fails, a reader gone outlived)
    console()
    main()
