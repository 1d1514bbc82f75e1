"""Forward+backward time of one adapted linear layer: LoRA-SP (element, column), our plain LoRA (keep=1) and PEFT's
lora.Linear, on one shared frozen base, side by side in one run.

Each repeat runs every method once, in turn (so drift on a shared machine hits all of them alike); the table shows
medians. x needs a gradient by default (a layer inside a network), so the frozen base's input gradient is part of
every row; the "base only" row is that floor, and "adapter" is each row minus it. Activations are autograd's saved
tensors beyond the layer's own parameters (lorasp.saved_activation_bytes). The frozen base's matmuls are ~97% of
each row, so on a noisy machine --adapter-only (a base that returns zeros) shows the adapters' own cost more clearly.

    python bench/bench_lorasp.py                                  # 8x512x4096, r=16, fp32 on CPU / bf16 on CUDA
    python bench/bench_lorasp.py --adapter-only --repeats 15                 # the adapter paths alone
    python bench/bench_lorasp.py --device cuda --dtype bf16 --repeats 50
    python bench/bench_lorasp.py --adapter-only --reuse-memory       # big buffers from the heap, not fresh pages

Memory on CPU: glibc serves every allocation of 32 MiB or more (here x, its gradient, column's 32 MiB copy) with
fresh pages from the kernel, zeroed on first touch, every time; --reuse-memory raises that threshold to 1 GiB so
freed buffers are reused, as in a training loop whose shapes repeat (and as CUDA's caching allocator always does).
"""
import argparse
import ctypes
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
from peft import LoraConfig
from peft.tuners.lora import Linear as PeftLoraLinear

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lorasp import LoRASPLinear, saved_activation_bytes  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class ZeroLinear(nn.Linear):
    """--adapter-only: a frozen base whose output is zeros, so a row times only the adapter path around it."""

    def forward(self, x):
        return x.new_zeros(*x.shape[:-1], self.out_features)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--dim", type=int, default=4096)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--input-grad", action=argparse.BooleanOptionalAction, default=True,
                   help="x needs a gradient (a layer inside a network)")
    p.add_argument("--reuse-memory", action="store_true", help="CPU: let glibc reuse freed buffers of any size "
                   "(mallopt M_MMAP_THRESHOLD = 1 GiB) instead of fresh pages for each one of 32 MiB or more")
    p.add_argument("--adapter-only", action=argparse.BooleanOptionalAction, default=False,
                   help="replace the base's matmul by zeros to time the adapter paths alone")
    args = p.parse_args()
    if args.reuse_memory and not ctypes.CDLL(None).mallopt(-3, 1 << 30):  # -3: M_MMAP_THRESHOLD (glibc only)
        raise SystemExit("--reuse-memory needs glibc's mallopt")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")]
    dev = torch.device(args.device)
    torch.manual_seed(0)
    base = (ZeroLinear if args.adapter_only else nn.Linear)(args.dim, args.dim, device=dev, dtype=dtype)
    base.requires_grad_(False)
    x = torch.randn(args.batch, args.seq, args.dim, device=dev, dtype=dtype, requires_grad=args.input_grad)
    grad_y = torch.randn_like(x)
    r, alpha = args.rank, 2 * args.rank

    peft = PeftLoraLinear(base, "default", LoraConfig(r=r, lora_alpha=alpha), r=r, lora_alpha=alpha).to(dev)
    methods = {
        "base only (frozen)" if not args.adapter_only else "zeros (no base)": base,
        "PEFT lora.Linear": peft,
        "ours LoRA (keep=1)": LoRASPLinear(base, r, alpha, keep=1.0),
        "LoRA-SP element": LoRASPLinear(base, r, alpha, keep=0.5),
        "LoRA-SP column": LoRASPLinear(base, r, alpha, keep=0.5, structure="column"),
    }
    with torch.no_grad():  # B = 0 at init; give it values so no kernel can skip work
        nn.init.normal_(peft.lora_B["default"].weight, std=0.01)
        for m in methods.values():
            if isinstance(m, LoRASPLinear):
                m.B_train.normal_(0, 0.01)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step(m):
        x.grad = None
        for q in m.parameters():
            q.grad = None
        sync()
        t = time.perf_counter()
        y = m(x)
        if y.requires_grad:                      # the zeros base alone has no backward
            y.backward(grad_y)
        sync()
        return time.perf_counter() - t

    times = {k: [] for k in methods}
    for i in range(args.warmup + args.repeats):
        for k, m in methods.items():
            dt = step(m)
            if i >= args.warmup:
                times[k].append(dt)
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    saved = {}
    for k, m in methods.items():
        saved[k], y = saved_activation_bytes(m, x)
        del y

    trainable = {k: sum(q.numel() for q in m.parameters() if q.requires_grad) for k, m in methods.items()}
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"one {args.dim}x{args.dim} linear, x {args.batch}x{args.seq}x{args.dim} {str(dtype)[6:]}, r={r}, "
          f"forward+backward, input grad {args.input_grad}{', adapter only' if args.adapter_only else ''}"
          f"{', buffers reused' if args.reuse_memory else ''}, "
          f"median of {args.repeats} ({name}, torch {torch.__version__})")
    b, pf, ours = next(iter(med.values())), med["PEFT lora.Linear"], med["ours LoRA (keep=1)"]
    print(f"{'method':<20}{'trainable':>11}{'ms':>10}{'adapter ms':>12}{'vs PEFT':>9}{'vs our LoRA':>13}{'saved MiB':>11}")
    for k in methods:
        print(f"{k:<20}{trainable[k]:>11,}{med[k]:>10.1f}{med[k] - b:>12.1f}{med[k] / pf:>9.3f}{med[k] / ours:>13.3f}"
              f"{saved[k] / 2**20:>11.1f}")


if __name__ == "__main__":
    from checks import console  # (lorasp's: line-buffered, UTF-8 where ASCII fails, a reader gone outlived)
    console()
    main()
