"""Where a whole training step's time goes at llama2-7b's width, through the path train.py takes: embedding, N NF4 +
LoRA-SP blocks (`full` recomputation), final norm, the LM head + chunked loss at vocabulary 32000, backward, gradient
clipping, AdamW, train.py's heap trim. Each part timed inside the same steps (wall seconds), with the process's user and
system CPU seconds and page faults, then a fit over the layer counts asked: step = fixed + per_block x layers.

    python bench/profile_step.py --layers 2 6 --threads 2 --steps 3      # ~5 minutes on 2 cores
"""
import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build(layers, bf16=True):
    """The 7B-width Llama of `layers` blocks, random bf16 weights quantized as they arrive (checkpoint.fill, as a load),
    LoRA-SP r=16 keep 0.5 on the seven projections, full recomputation, AdamW on the adapters (train.py's setup)."""
    import torch

    import checkpoint as C
    import model as M
    from bench_train import SHAPE, TARGETS
    from gpu_check import random_stream
    from lorasp import apply_lorasp
    cfg = M.LlamaConfig(**dict(SHAPE, n_layer=layers, n_embd=4096, n_head=32, n_kv_head=32, n_ffn=11008))
    with torch.device("meta"):
        net = M.build_model(cfg)
    net = C.fill(net, random_stream(net, "cpu", torch.Generator().manual_seed(0)),
                 torch.bfloat16 if bf16 else torch.float32, quantize="nf4")
    apply_lorasp(net, TARGETS, r=16, alpha=32, keep=0.5)
    net.train()
    net.checkpointing = "full"
    params = [p for p in net.parameters() if p.requires_grad]
    return net, params, torch.optim.AdamW(params, lr=2e-5), cfg


def timed_steps(layers, steps, seq, bf16=True, profile=False):
    """Per step: {part: wall s} and the step's user/system CPU s and minor page faults (after one warm-up step)."""
    import torch

    import checkpoint as C
    import model as M
    net, params, opt, cfg = build(layers, bf16)
    ids = torch.randint(0, cfg.vocab_size, (1, seq), generator=torch.Generator().manual_seed(1))
    marks, lm_loss = {}, M.lm_loss

    def stamp(name):
        marks[name] = time.perf_counter()

    def timed_loss(h, head, labels):                       # the LM head + chunked loss: all its work is in forward
        stamp("blocks_end")
        return lm_loss(h, head, labels)
    M.lm_loss = timed_loss
    net.model.embed_tokens.register_forward_hook(lambda *a: stamp("embed_end"))
    net.model.norm.register_forward_pre_hook(lambda *a: stamp("norm_start"))
    heap, rows = 0, []
    for i in range(steps + 1):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = net(ids, labels=ids)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        heap = C.trim_if_crept(heap)
        t4, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        row = dict(embed=marks["embed_end"] - t0, blocks_fwd=marks["norm_start"] - marks["embed_end"],
                   head_loss=t1 - marks["blocks_end"], backward=t2 - t1, clip_adamw=t3 - t2, trim=t4 - t3, step=t4 - t0,
                   user=r1.ru_utime - r0.ru_utime, sys=r1.ru_stime - r0.ru_stime, faults=r1.ru_minflt - r0.ru_minflt)
        print(f"  {layers} layers, step {i}{' (warm-up)' if not i else ''}: "
              + ", ".join(f"{k} {v:.2f}" if k != "faults" else f"{k} {v}" for k, v in row.items()), flush=True)
        if i:
            rows.append(row)
    if profile:                                             # one more step, under torch.profiler: its op table
        from torch.profiler import ProfilerActivity, profile as prof
        with prof(activities=[ProfilerActivity.CPU]) as p:
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                loss = net(ids, labels=ids)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    M.lm_loss = lm_loss
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 6], help="block counts to time (two or more: a fit)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per model, after a warm-up one")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="then one step under torch.profiler (the last model)")
    ap.add_argument("--fp32", action="store_true", help="fp32 instead of bf16 autocast and a bf16 base")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    flags = sorted({f for f in ("avx512_bf16", "amx_bf16") if f in open("/proc/cpuinfo").read()})
    print(f"7B-width Llama (vocab 32000), NF4 + LoRA-SP r=16, full, 1 x {args.seq}, "
          f"{'fp32' if args.fp32 else 'bf16'}, {args.threads} threads; CPU flags: {' '.join(flags) or 'none'}")
    med = {n: timed_steps(n, args.steps, args.seq, not args.fp32, args.profile and n == args.layers[-1])
           for n in args.layers}
    print(f"\nmedians of {args.steps} steps (wall s; faults: minor page faults a step)")
    keys = list(next(iter(med.values())))
    print("layers  " + "  ".join(f"{k:>10}" for k in keys))
    for n, m in med.items():
        print(f"{n:>6}  " + "  ".join(f"{m[k]:>10.2f}" if k != "faults" else f"{m[k]:>10.0f}" for k in keys))
    if len(med) >= 2:
        (a, ma), (b, mb) = min(med.items()), max(med.items())
        print(f"\nper block (from {a} and {b} layers):  " + "  ".join(f"{k} {(mb[k] - ma[k]) / (b - a):.3f}"
                                                                     for k in keys))
        per = (mb["step"] - ma["step"]) / (b - a)
        fixed = ma["step"] - a * per
        print(f"step = {fixed:.2f} s + {per:.3f} s x layers; at 32 layers: {fixed + 32 * per:.1f} s "
              f"(of it blocks {32 * per:.1f} s)")


if __name__ == "__main__":
    main()
