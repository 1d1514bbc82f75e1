"""Training step time and peak memory: HF transformers + peft LoRA vs lorasp, side by side, on the issue's shape.

    python bench/bench_train.py                      # the comparison: peft LoRA vs LoRA-SP, checkpointing off/on
    python bench/bench_train.py --table              # the grid in docs/benchmarks.md: method x quant x checkpointing
    python bench/bench_train.py --configs lorasp-element:none:none peft:none:full --steps 5 --repeats 2
    python bench/bench_train.py --configs peft:none:none lorasp-element:none:none --dtypes fp32 bf16 --measure-gflops
    python bench/bench_train.py --configs peft:none:none lorasp-element:none:none --dtypes fp32 bf16 --compile

A randomly initialised Llama (12 layers, hidden 768, SwiGLU 2048, 12 heads, vocab 32000; ~134M parameters), fp32,
batch 4 x 256 random tokens, AdamW. A config is METHOD:QUANT:CHECKPOINTING:
- METHOD peft: transformers' LlamaForCausalLM + peft LoRA (r=16, alpha=32, no dropout) on all seven projections;
  checkpointing "full" is model.gradient_checkpointing_enable() (the only kind it has); quant none only.
- METHOD full / lora / lorasp-element / lorasp-column: our model.py Llama with lorasp.py layers (keep=1.0 for lora,
  keep=0.5 for LoRA-SP) on the same seven projections, quant none|nf4 (NF4 base linears, the LM head stays fp32),
  checkpointing none|full|selective|selective+N (model.checkpointing; +N: the first N blocks full, train.py's
  --full-blocks N). full + nf4 is refused (4-bit weights cannot train).
Ours runs the step train.py is to run: model(ids, labels=ids) (the chunked LinearCrossEntropy loss), backward, AdamW
step, zero_grad, then train.py's heap rule: checkpoint.trim_if_crept, trim_heap() once the resident size after a step
is 10% past its size after the first step since the last trim, the second step raising that base once (--trim none
never trims, --trim every trims after every step as train.py once did, --trim first is the rule before session 27,
without the second step's raise, --trim all gives peft train.py's rule). --per-step prints each run's steps: wall
and system seconds, resident GiB after it, and a * where the heap was trimmed.
--dtypes fp32 bf16 runs every config at each: bf16 is what train.py's --dtype bf16 (and auto, on a CPU with bf16
units) does: ours with the frozen base stored in bf16, peft with the model in bf16 (its adapters stay fp32, peft's
autocast_adapter_dtype), both under torch.autocast("cpu", bfloat16), adapters and AdamW state fp32.
Each config runs in a fresh subprocess started by this small parent (no torch imported here, so nothing of the
parent's memory is inherited): build, one warm-up step, then the median of --steps steps. Peak memory is VmHWM from
/proc/self/status (the child's own resident high-water mark: model, optimizer, activations, allocator caches).
--repeats R runs the whole config list R times in turn, so drift on a shared machine hits every config alike; time is
the median over repeats, memory the max. "floor" is the useful matmul work at --gflops (the issue's fp32 matmul rate
on its machine; --measure-gflops measures it here, in each dtype, with the shapes of the step's matmuls): 2 FLOPs per multiply-add, forward 2PT, input gradients 2PT,
weight gradients 2PT (full fine-tuning only), attention 4BT^2C per layer forward and twice that backward, P the
matmul parameters (blocks and LM head), T the tokens; recomputation is not useful work, so checkpointing lowers it.
"""
import argparse
import json
import os
import statistics
import sys

from children import GiB, cpus_said, proc_status, run_children

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = dict(vocab_size=32000, n_layer=12, n_embd=768, n_head=12, n_kv_head=12, n_ffn=2048)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
COMPARE = ["peft:none:none", "lorasp-element:none:none", "lorasp-column:none:none",
           "peft:none:full", "lorasp-element:none:full", "lorasp-column:none:full"]
METHODS, QUANTS, CKPTS = ("peft", "full", "lora", "lorasp-element", "lorasp-column"), ("none", "nf4"), (
    "none", "full", "selective")                               # and selective+N (the first N blocks full)
TABLE = [f"{m}:{q}:{c}" for m in METHODS[1:] for q in QUANTS for c in CKPTS]


def parse_config(config):
    """METHOD, QUANT, CHECKPOINTING of a config; a part that is none of the known ones is refused, naming them (a
    typo, lorasp-elemnt, ran as lorasp-element, and its row was labelled with the typo)."""
    parts = config.split(":")
    if len(parts) != 3:
        raise SystemExit(f"--configs {config}: expected METHOD:QUANT:CHECKPOINTING, e.g. lorasp-element:none:full")
    n = parts[2].partition("selective+")[2]
    for name, part, known in zip(("METHOD", "QUANT", "CHECKPOINTING"), parts, (METHODS, QUANTS, CKPTS)):
        if part not in known and not (name == "CHECKPOINTING" and n.isdigit() and parts[2] == f"selective+{n}"):
            raise SystemExit(f"--configs {config}: unknown {name} {part!r}; known: {', '.join(known)}"
                             + ", selective+N" * (name == "CHECKPOINTING"))
    return parts


def where_time_goes(step, vocab, rank=16):
    """Self CPU seconds of one step(), by kind (torch.profiler with input shapes): matmuls touching the vocabulary
    (LM head), matmuls with the adapter's rank as a dimension, the other matmuls (the frozen block weights), attention
    kernels, and everything else (norms, RoPE, activations, copies, loss, optimizer); plus the step's system time,
    spent inside those ops (page faults: fresh memory, or memory handed back to the kernel, touched again)."""
    import resource

    from torch.profiler import ProfilerActivity, profile
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    kinds = dict.fromkeys(["block matmuls", "LM head", "adapter matmuls", "attention", "other"], 0.0)
    for e in prof.key_averages(group_by_input_shape=True):
        dims = {d for shape in e.input_shapes if isinstance(shape, list) for d in shape}
        if e.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"):
            kind = "LM head" if vocab in dims else "adapter matmuls" if rank in dims else "block matmuls"
        else:
            kind = "attention" if "attention" in e.key else "other"
        kinds[kind] += e.self_cpu_time_total / 1e6
    kinds["of all these: system time"] = resource.getrusage(resource.RUSAGE_SELF).ru_stime - r0.ru_stime
    return kinds


def child(config, steps, threads, batch, seq, lr, trim, profile=False, dtype="fp32", compile_blocks=False):
    """One config in this process; prints one JSON line."""
    import resource
    import time

    import torch
    sys.path.insert(0, ROOT)
    import checkpoint as C
    import model as M
    from lorasp import apply_lorasp

    torch.manual_seed(0)
    if threads:
        torch.set_num_threads(threads)
    method, quant, ckpt = parse_config(config)
    cfg, bf16 = M.LlamaConfig(**SHAPE), dtype == "bf16"
    base_dtype = torch.bfloat16 if bf16 and method != "full" else torch.float32  # full fine-tuning: fp32 masters
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    if method == "peft":
        from peft import LoraConfig, get_peft_model
        from transformers import LlamaConfig, LlamaForCausalLM
        assert quant == "none" and ckpt in ("none", "full"), "peft runs fp32 with checkpointing none|full"
        hf = LlamaForCausalLM(LlamaConfig(**cfg.to_hf(), use_cache=False)).to(base_dtype)
        net = get_peft_model(hf, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS))
        if ckpt == "full":
            net.gradient_checkpointing_enable()  # peft makes the embedding output require grad for it

        def loss_fn():
            return net(input_ids=ids, labels=ids).loss
    else:
        if method == "full" and quant == "nf4":
            raise SystemExit("full fine-tuning of an NF4 base is refused: 4-bit weights cannot take gradient steps")
        if quant == "nf4":  # built on meta, filled one random tensor at a time, quantized as each arrives
            with torch.device("meta"):
                net = M.build_model(cfg)
            gen = torch.Generator().manual_seed(0)
            stream = (("random", n, torch.ones(p.shape) if n.endswith("norm.weight") else
                       torch.randn(p.shape, generator=gen) * 0.02) for n, p in net.state_dict(keep_vars=True).items())
            net = C.fill(net, stream, base_dtype, quantize="nf4")
        else:
            net = M.build_model(cfg).to(base_dtype)
        if method != "full":
            apply_lorasp(net, TARGETS, r=16, alpha=32, keep=1.0 if method == "lora" else 0.5,
                         structure="column" if method == "lorasp-column" else "element")
        n = int(ckpt.partition("+")[2] or 0)  # selective+N: the first N blocks full (train.py --full-blocks N)
        net.checkpointing = ["full"] * n + ["selective"] * (cfg.n_layer - n) if n else ckpt

        def loss_fn():  # TODO(train.py): import train.py's step once it lands on main
            return net(ids, labels=ids)  # next-token loss, chunked (model.LinearCrossEntropy)
    net.train()
    if compile_blocks:  # regional compilation: each block through inductor (one graph for the twelve alike)
        for block in hf.model.layers if method == "peft" else net.model.layers:
            block.compile()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    times, cpu, heap, sys_s, rss, trims, real_trim = [], [], [0], [], [], [], C.trim_heap

    def counted_trim():
        trims.append(len(times))  # the step it follows
        real_trim()
    C.trim_heap = counted_trim  # trim_if_crept calls it by this module-level name

    def first_step_rule(base):  # trim_if_crept before session 27: the base is the first step's size, never raised
        if not base:
            return C.resident()
        if C.resident() <= 1.1 * base:
            return base
        C.trim_heap()
        return 0

    def step():
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = loss_fn()
        loss.backward()
        loss = loss.detach()  # drop the graph, as HF Trainer does: kept into the next step, it fragments the heap
        opt.step()
        opt.zero_grad(set_to_none=True)
        if trim == "every" and method != "peft":
            C.trim_heap()  # what train.py did after every step until its rule below
        elif trim == "all" or trim == "ours" and method != "peft":
            heap[0] = C.trim_if_crept(heap[0])  # train.py's rule: trim once the heap grew 10% from step to step
        elif trim == "first" and method != "peft":
            heap[0] = first_step_rule(heap[0])
        return loss
    for _ in range(steps + 1):  # the first step is the warm-up (allocations, AdamW state)
        t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        loss = step()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        times.append(time.perf_counter() - t0)
        cpu.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
        sys_s.append(r1.ru_stime - r0.ru_stime)
        rss.append(C.resident() / 2 ** 30)
    print(json.dumps(dict(config=config, dtype=dtype, step_s=statistics.median(times[1:]), cpu_s=statistics.median(cpu[1:]),
                          peak_rss=proc_status("VmHWM"), loss=loss.item(), trainable=sum(p.numel() for p in params),
                          threads=torch.get_num_threads(), first_step_s=times[0], steps_s=times, sys_s=sys_s,
                          rss_gib=rss, trims=trims,
                          profile=where_time_goes(step, cfg.vocab_size) if profile else None)))


def measure_gflops(threads, dtype="fp32", batch=4, seq=256, clock=None):
    """GFLOP/s of this CPU's matmuls in dtype at the step's shapes: the block's (tokens, C) x (C, n_ffn) product and
    its input gradient (tokens, n_ffn) x (n_ffn, C), the LM head's (tokens, C) x (C, vocab) and its input gradient;
    each into a kept output (a training step's outputs come back from the heap, not as fresh pages to fault in), two
    warm-up calls, then the median of 7; the rate is the four products' FLOPs over their summed times. clock:
    time.perf_counter (wall) or time.process_time (CPU seconds of this process: on a shared machine, the rate per
    CPU-second actually given)."""
    import time

    import torch
    if threads:
        torch.set_num_threads(threads)
    dt, clock = torch.bfloat16 if dtype == "bf16" else torch.float32, clock or time.perf_counter
    tokens, c, flops, seconds = batch * seq, SHAPE["n_embd"], 0, 0.0
    for n in (SHAPE["n_ffn"], SHAPE["vocab_size"]):
        for k, m in ((c, n), (n, c)):                  # forward, then the input gradient's shape
            a, b, out = torch.randn(tokens, k, dtype=dt), torch.randn(k, m, dtype=dt), torch.empty(tokens, m, dtype=dt)
            times = []
            for i in range(9):
                t0 = clock()
                torch.mm(a, b, out=out)
                times.append(clock() - t0)
            flops, seconds = flops + 2 * tokens * k * m, seconds + statistics.median(times[2:])
    return flops / seconds / 1e9


def floor_s(config, gflops, batch, seq):
    """Seconds the useful matmul work of one step takes at `gflops` (see the module docstring)."""
    c, tokens = SHAPE, batch * seq
    P = c["n_layer"] * (4 * c["n_embd"] ** 2 + 3 * c["n_embd"] * c["n_ffn"]) + c["n_embd"] * c["vocab_size"]
    dense = (6 if config.startswith("full") else 4) * P * tokens
    attention = 3 * 4 * batch * seq ** 2 * c["n_embd"] * c["n_layer"]
    return (dense + attention) / gflops / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=None, help="METHOD:QUANT:CHECKPOINTING ... (default: the "
                    "peft comparison)")
    ap.add_argument("--table", action="store_true", help="run the grid of docs/benchmarks.md (21 configs) instead")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per config, after one warm-up step")
    ap.add_argument("--repeats", type=int, default=1, help="run the config list this many times, in turn")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in each child (0: torch's default)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=["fp32"], help="run every config in each")
    ap.add_argument("--gflops", type=float, nargs="+", default=[170.0, 425.0], metavar="X", help="fp32 (and bf16) "
                    "matmul rates for the FLOP floor")
    ap.add_argument("--measure-gflops", action="store_true", help="measure the matmul rates here instead")
    ap.add_argument("--trim", choices=["ours", "all", "every", "first", "none"], default="ours", help="trim the C "
                    "heap (checkpoint.trim_heap()) by train.py's rule, once the resident size after a step is 10%% "
                    "past its size after the first step since the last trim (the second step may raise that base "
                    "once): in our runs, in all runs (peft's too, for comparison); or after every step in our runs "
                    "(train.py once); or by the rule before session 27 (no raise); or never")
    ap.add_argument("--per-step", action="store_true", help="print each run's steps (wall s, system s, resident GiB "
                    "after it; * trimmed), the warm-up step first")
    ap.add_argument("--profile", action="store_true", help="after the timed steps, profile one more step and print "
                    "where its CPU time goes (block matmuls, LM head, adapter, attention, other, page faults)")
    ap.add_argument("--compile", action="store_true", help="torch.compile each decoder block (ours and peft's) "
                    "before the steps: inductor's fused kernels; its compile time is the warm-up step's")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # METHOD:QUANT:CHECKPOINTING:DTYPE
        return child(args.child.rsplit(":", 1)[0], args.steps, args.threads, args.batch, args.seq, args.lr, args.trim,
                     args.profile, args.child.rsplit(":", 1)[1], args.compile)
    configs = [f"{c}:{d}" for d in args.dtypes for c in args.configs or (TABLE if args.table else COMPARE)]
    for c in args.configs or ():                               # before any child runs
        parse_config(c)
    import time
    gflops = {d: measure_gflops(args.threads, d, args.batch, args.seq) if args.measure_gflops else args.gflops[i]
              for i, d in enumerate(("fp32", "bf16")) if d in args.dtypes}
    cpu_gflops = {d: measure_gflops(args.threads, d, args.batch, args.seq, time.process_time) if args.measure_gflops
                  else gflops[d] for d in gflops}  # GFLOP per CPU-second: the floor of the CPU s/step column
    runs = run_children(__file__, configs, args.repeats, ["--steps", str(args.steps), "--threads", str(args.threads),
                                                          "--batch", str(args.batch), "--seq", str(args.seq),
                                                          "--lr", str(args.lr), "--trim", args.trim]
                       + ["--profile"] * args.profile + ["--compile"] * args.compile)
    tokens, threads = args.batch * args.seq, next((rs[0]["threads"] for rs in runs.values() if rs), "?")
    print(f"\nbatch {args.batch} x {args.seq} tokens, trim_heap: {args.trim}" + (
          ", torch.compile per block" * args.compile) + f"; {cpus_said(threads)}; medians of "
          f"{args.steps} steps x {args.repeats} repeats; floor: useful matmul work at " + ", ".join(
              f"{g:.0f} GFLOP/s {d} ({cpu_gflops[d]:.0f} per CPU-second)" for d, g in gflops.items()) + (
              " (measured in this run)\n" if args.measure_gflops else "\n"))
    for c, rs in runs.items() if args.per_step else ():
        for r in rs:
            print(f"{c}, trim {args.trim}: " + "  ".join(f"{t:.2f}/{s:.2f}/{g:.2f}{'*' * (i in r['trims'])}" for i, (
                t, s, g) in enumerate(zip(r["steps_s"], r["sys_s"], r["rss_gib"]))) + f"; sum of system time "
                  f"{sum(r['sys_s']):.2f} s, peak RSS {r['peak_rss'] / GiB:.3f} GiB")
    print("| config | s/step | CPU s/step | tokens/s | peak RSS GiB | of FLOP floor | of floor, CPU time | trainable |")
    print("|---|---|---|---|---|---|---|---|")
    summary = {}
    for c, rs in runs.items():
        if not rs:
            print(f"| {c} | {'refused' if c.startswith('full:nf4') else 'failed'} | | | | | | |")
            continue
        s, cpu, mem = (statistics.median(r[k] for r in rs) for k in ("step_s", "cpu_s", "peak_rss"))
        summary[c] = s, cpu, max(r["peak_rss"] for r in rs)
        spread = lambda k, f="{:.2f}": "" if len(rs) < 2 else " ({}-{})".format(  # noqa: E731  min-max over repeats
            *(f.format(g(r[k] for r in rs) / (GiB if k == "peak_rss" else 1)) for g in (min, max)))
        print(f"| {c} | {s:.2f}{spread('step_s')} | {cpu:.2f} | {tokens / s:.0f} | {summary[c][2] / GiB:.2f}"
              f"{spread('peak_rss')} | "
              f"{floor_s(c, gflops[c.rsplit(':', 1)[1]], args.batch, args.seq) / s:.0%} | "
              f"{floor_s(c, cpu_gflops[c.rsplit(':', 1)[1]], args.batch, args.seq) / cpu:.0%} | {rs[0]['trainable']:,} |")
    print()
    for c, (s, cpu, mem) in summary.items():
        ckpt, dtype = c.split(":")[2:]
        ref = summary.get(f"peft:none:{'full' if ckpt.startswith('selective') else ckpt}:{dtype}")
        if ref and not c.startswith("peft"):
            pairs = list(zip(runs[c], runs[f"peft:none:{'full' if ckpt.startswith('selective') else ckpt}:{dtype}"]))
            each = "" if len(pairs) < 2 else "; repeat by repeat: time {:.2f}-{:.2f}x, peak RSS {:.2f}-{:.2f}x".format(
                *(g(a[k] / b[k] for a, b in pairs) for k in ("step_s", "peak_rss") for g in (min, max)))
            print(f"{c} / peft ({'checkpointed' if ckpt != 'none' else 'no checkpointing'}): time {s / ref[0]:.2f}x "
                  f"(CPU time {cpu / ref[1]:.2f}x), peak RSS {mem / ref[2]:.2f}x{each}")
    if args.profile:  # one profiled step per run; the median over repeats of each kind
        kinds = next(rs[0]["profile"] for rs in runs.values() if rs)
        print(f"\nwhere one step's CPU time goes (seconds; torch.profiler's self time, which adds its own overhead)\n")
        print("| config | " + " | ".join(kinds) + " |\n|---|" + "---|" * len(kinds))
        for c, rs in runs.items():
            if rs:
                print(f"| {c} | " + " | ".join(f"{statistics.median(r['profile'][k] for r in rs):.2f}" for k in kinds)
                      + " |")


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from checks import console  # (lorasp's: line-buffered, UTF-8 where ASCII fails, a reader gone outlived)
    console()
    main()
