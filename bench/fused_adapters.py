"""fused.project (q/k/v and gate/up adapters sharing one A matmul) against each layer run on its own, in one process.

    python bench/fused_adapters.py --dtype bf16 --pairs 10 --threads 1

bench_train.py's step (134M Llama, 4 x 256, LoRA-SP on the seven projections, B given random values so that every
gradient is nonzero, forward + backward under bf16 autocast for --dtype bf16), steps alternating between
model.project = fused.project and a plain [layer(x) for layer in layers], the order flipped pair by pair: each
side's CPU seconds a step, their ratio pair by pair (median, min-max), and the largest difference of the two sides'
loss and gradients (relative to each gradient's largest entry), which only the order of fp32 (bf16) sums makes.
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch
    sys.path.insert(0, ROOT)
    import checkpoint as C
    import fused
    import model as M
    from bench_train import SHAPE, TARGETS
    from lorasp import apply_lorasp
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    cfg, bf16 = M.LlamaConfig(**SHAPE), args.dtype == "bf16"
    net = apply_lorasp(M.build_model(cfg).to(torch.bfloat16 if bf16 else torch.float32), TARGETS, r=16, alpha=32)
    with torch.no_grad():
        for m in net.modules():
            if hasattr(m, "B_train"):
                m.B_train.normal_(0, 0.02)
    ids, heap = torch.randint(0, cfg.vocab_size, (4, 256)), [0]
    params = [p for p in net.parameters() if p.requires_grad]
    sides = dict(fused=fused.project, plain=lambda x, *layers: [m(x) for m in layers])

    def step(side):
        M.project = sides[side]
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = net(ids, labels=ids)
        loss.backward()
        grads = [loss.detach()] + [p.grad for p in params]
        for p in params:
            p.grad = None
        heap[0] = C.trim_if_crept(heap[0])  # train.py's heap rule
        return grads
    for side in ("plain", "fused", "plain", "fused"):  # warm-up: allocations settle
        out = step(side)
    diff = max(((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item() for a, b in zip(out, step("plain")))
    cpu = {side: [] for side in sides}
    for i in range(args.pairs):
        for side in ("plain", "fused") if i % 2 == 0 else ("fused", "plain"):
            t0 = time.process_time()
            step(side)
            cpu[side].append(time.process_time() - t0)
    ratios = [f / p for f, p in zip(cpu["fused"], cpu["plain"])]
    print(f"{args.dtype}, {args.threads} thread(s), {args.pairs} pairs: CPU s/step plain "
          f"{statistics.median(cpu['plain']):.3f}, fused {statistics.median(cpu['fused']):.3f}; fused / plain "
          f"{statistics.median(ratios):.3f} "
          f"({min(ratios):.3f}-{max(ratios):.3f}); largest relative difference of loss and gradients {diff:.2g}")


if __name__ == "__main__":
    main()
