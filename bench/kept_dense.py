"""What keeping a full replay's dequantized NF4 weights for the block's backward saves (recompute.KEEP_DENSE), measured
in one process: training steps of the same model alternate between keeping and dequantizing again, so the machine's
drift hits both alike; prints each pair (wall and CPU seconds) and the median ratios.

    python bench/kept_dense.py --layers 4 --threads 2 --pairs 8      # llama2-7b's width, 4 blocks, 1 x 512, bf16
"""
import argparse
import os
import statistics
import sys
import time

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.path.dirname(os.path.abspath(__file__))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=8, help="timed (kept, again) step pairs, after one warm-up pair")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--fp32", action="store_true", help="fp32 instead of bf16 autocast and a bf16 base")
    args = ap.parse_args()
    import torch

    import checkpoint as C
    import recompute
    from profile_step import build
    torch.set_num_threads(args.threads)
    net, params, opt, cfg = build(args.layers, not args.fp32)
    ids = torch.randint(0, cfg.vocab_size, (1, args.seq), generator=torch.Generator().manual_seed(1))
    flags = sorted({f for f in ("avx512_bf16", "amx_bf16") if f in open("/proc/cpuinfo").read()})
    print(f"7B-width Llama, {args.layers} blocks (vocab 32000), NF4 + LoRA-SP r=16, full, 1 x {args.seq}, "
          f"{'fp32' if args.fp32 else 'bf16'}, {args.threads} threads; CPU flags: {' '.join(flags) or 'none'}")
    heap, losses = 0, {True: [], False: []}

    def step(keep):
        nonlocal heap
        recompute.KEEP_DENSE = keep
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast("cpu", torch.bfloat16, enabled=not args.fp32):
            loss = net(ids, labels=ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        grads = torch.cat([p.grad.flatten() for p in params])
        opt.zero_grad(set_to_none=True)  # no opt.step(): every step sees the same weights, so the gradients compare
        heap = C.trim_if_crept(heap)
        losses[keep].append((loss.item(), grads))
        return time.perf_counter() - t0, time.process_time() - c0
    wall, cpu = [], []
    for i in range(args.pairs + 1):
        order = (True, False) if i % 2 else (False, True)
        t = {k: step(k) for k in order}
        if i:
            wall.append(t[True][0] / t[False][0])
            cpu.append(t[True][1] / t[False][1])
            print(f"pair {i}: kept {t[True][0]:.2f} s ({t[True][1]:.2f} CPU s), again {t[False][0]:.2f} s "
                  f"({t[False][1]:.2f} CPU s), ratio {wall[-1]:.3f} wall, {cpu[-1]:.3f} CPU", flush=True)
    same = all(a[0] == b[0] and torch.equal(a[1], b[1]) for a, b in zip(losses[True], losses[False]))
    print(f"kept / again, median of {args.pairs} pairs: wall {statistics.median(wall):.3f} (min {min(wall):.3f}, "
          f"max {max(wall):.3f}); CPU {statistics.median(cpu):.3f} (min {min(cpu):.3f}, max {max(cpu):.3f}); "
          f"losses and gradients the same bit for bit: {same}")


if __name__ == "__main__":
    main()
