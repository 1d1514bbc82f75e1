"""One T5-base-shaped training step: HF transformers + peft LoRA vs lorasp's T5 with LoRA-SP, side by side.

    python bench/bench_t5.py                                   # the comparison below, 1 thread per child
    python bench/bench_t5.py --configs peft:none lorasp-element:selective --steps 3 --repeats 2 --threads 2

A randomly initialised T5-base shape (12 + 12 blocks, d_model 768, d_ff 3072, 12 heads, vocab 32128, tied head,
~223M parameters), fp32, dropout 0.1 (T5's) in both, batch --batch x --source-len source tokens and --target-len
target tokens (random ids), teacher-forced cross-entropy, AdamW. LoRA r=16, alpha=32 on q and v of every attention
(self and cross) in both. A config is METHOD:CHECKPOINTING:
- peft: transformers' T5ForConditionalGeneration (its default SDPA attention) + peft LoRA (no LoRA dropout);
  checkpointing none | full (model.gradient_checkpointing_enable(), the only kind it has).
- lora / lorasp-element / lorasp-column: model.py's T5 with lorasp.py layers (keep 1.0 / 0.5 / 0.5 column);
  checkpointing none | full | selective.
Each config runs in a fresh subprocess started by this parent (which imports no torch): build, one warm-up step, then
the median of --steps steps; peak memory is the child's VmHWM (resident high-water mark) from /proc/self/status.
--repeats R runs the list R times in turn so drift on a shared machine hits every config alike (time: median over
repeats; memory: max). glibc's malloc keeps freed memory in its heap once its dynamic mmap threshold has grown (after
the first step), so resident memory then exceeds live memory by an amount that depends on allocation order;
--mmap-threshold 131072 (MALLOC_MMAP_THRESHOLD_ in the children) fixes the threshold, so peaks track live tensors.
"""
import argparse
import json
import os
import statistics
import sys

from children import GiB, proc_status, run_children

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPARE = ["peft:none", "lorasp-element:none", "lorasp-column:none", "lorasp-element:selective",
           "peft:full", "lorasp-element:full"]


def child(config, args):
    """One config in this process; prints one JSON line."""
    import time

    import torch
    import torch.nn.functional as F
    sys.path.insert(0, ROOT)
    import model as M
    from data import seq2seq_batch
    from lorasp import apply_lorasp

    torch.manual_seed(0)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    method, ckpt = config.split(":")
    cfg = M.get_config("t5-base")
    g = torch.Generator().manual_seed(0)
    b = seq2seq_batch([(torch.randint(2, cfg.vocab_size, (args.source_len - 1,), generator=g).tolist() + [1],
                        torch.randint(2, cfg.vocab_size, (args.target_len - 1,), generator=g).tolist() + [1])
                       for _ in range(args.batch)])
    if method == "peft":
        from peft import LoraConfig, get_peft_model
        from transformers import T5Config, T5ForConditionalGeneration
        assert ckpt in ("none", "full"), "transformers has only full checkpointing"
        hf = T5ForConditionalGeneration(T5Config(**cfg.to_hf(), use_cache=False))
        net = get_peft_model(hf, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q", "v"]))
        if ckpt == "full":
            net.gradient_checkpointing_enable()

        def loss_fn():
            return net(**b).loss
    else:
        net = M.build_model(cfg)
        apply_lorasp(net, ["q", "v"], r=16, alpha=32, keep=1.0 if method == "lora" else 0.5,
                     structure="column" if method == "lorasp-column" else "element")
        net.checkpointing = ckpt

        def loss_fn():  # teacher forcing: decoder_input_ids are the labels shifted right
            logits = net(b["input_ids"], b["decoder_input_ids"], b["attention_mask"])  # (B, T, vocab)
            return F.cross_entropy(logits.flatten(0, 1), b["labels"].flatten(), ignore_index=-100)
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt, times, cpu = torch.optim.AdamW(params, lr=2e-5), [], []
    for _ in range(args.steps + 1):  # the first step is the warm-up (allocations, AdamW state)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = loss_fn()
        loss.backward()
        loss = loss.detach()  # drop the graph, as HF Trainer does: kept into the next step, it fragments the heap
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(json.dumps(dict(config=config, step_s=statistics.median(times[1:]), cpu_s=statistics.median(cpu[1:]),
                          peak_rss=proc_status("VmHWM"), loss=loss.item(),
                          trainable=sum(p.numel() for p in params), threads=torch.get_num_threads())))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=COMPARE, help="METHOD:CHECKPOINTING ...")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per config, after one warm-up step")
    ap.add_argument("--repeats", type=int, default=1, help="run the config list this many times, in turn")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each child (0: torch's default)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--source-len", type=int, default=128)
    ap.add_argument("--target-len", type=int, default=128)
    ap.add_argument("--mmap-threshold", type=int, default=0, help="MALLOC_MMAP_THRESHOLD_ for the children "
                    "(0: glibc's dynamic default)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("configs", "child")]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(args.mmap_threshold)) if args.mmap_threshold else None
    runs = run_children(__file__, args.configs, args.repeats, flags, env)
    print(f"\nT5-base shape, batch {args.batch} x ({args.source_len} source + {args.target_len} target) tokens, fp32, "
          f"{args.threads or 'default'} threads, medians of {args.steps} steps x {args.repeats} repeats"
          + (f", MALLOC_MMAP_THRESHOLD_={args.mmap_threshold}" if args.mmap_threshold else ""))
    print("CPU s: the step's process time (1 thread: little disturbed by other jobs); vs peft: CPU time and peak "
          "memory as ratios to peft without checkpointing and, for checkpointed configs, with it")
    print(f"{'config':<26}{'s/step':>8}{'CPU s':>7}{'peak GiB':>10}{'trainable':>12}{'vs peft:none':>14}"
          f"{'vs peft:full':>14}")
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    summary = {c: (med(rs, "step_s"), med(rs, "cpu_s"), max(r["peak_rss"] for r in rs), rs[0]["trainable"])
               for c, rs in runs.items() if rs}
    for c, (s, cpu, mem, n) in summary.items():
        vs = [f"{cpu / r[1]:.2f} / {mem / r[2]:.2f}" if r and (k == "peft:none" or not c.endswith(":none")) else ""
              for k, r in (("peft:none", summary.get("peft:none")), ("peft:full", summary.get("peft:full")))]
        print(f"{c:<26}{s:>8.2f}{cpu:>7.2f}{mem / GiB:>10.2f}{n:>12,}{vs[0]:>14}{vs[1]:>14}")

if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from checks import console  # (lorasp's: line-buffered, UTF-8 where ASCII fails, a reader gone outlived)
    console()
    main()
