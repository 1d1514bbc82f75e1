"""The flagship at full size: a llama2-7b-shaped QLoRA-SP training step on a CPU machine, through the real command
line, next to transformers + peft + bitsandbytes 4-bit on the same checkpoint and data.

    python bench/bench_7b.py --keep                                  # ours: lorasp, NF4, full checkpointing
    python bench/bench_7b.py --configs lorasp:nf4:full lora:nf4:full peft-bnb:nf4:full --keep
    python bench/bench_7b.py --configs lorasp:none:full --keep       # the dense-bf16 reference (13.5 GB resident)
    python bench/bench_7b.py --preset llama2-13b --dir DIR --keep    # 26 GB on disk; ours peaks at ~9 GiB with full

Writes a random llama2-7b-shaped checkpoint once (bf16 safetensors shards + index, ~13.5 GB, 26 GB for llama2-13b;
bench_load's writer; norm weights 1, the rest N(0, 0.02)), a sentencepiece tokenizer and an Alpaca-format file of 8
long records (each cut at --seq-len: no padding, no validation split), into --dir; --keep leaves them there for the
next run (and reuses them), else they are deleted at the end. A config is WHO:QUANT:CHECKPOINTING:
- lorasp / lora: `python train.py --model DIR --data FILE --method WHO --quant QUANT --checkpointing C --batch-size 1
  --seq-len 512 --max-steps 2 --dtype auto` in a fresh process (auto: bf16 autocast where the CPU has bf16 units);
- peft-bnb: transformers' LlamaForCausalLM.from_pretrained(DIR, BitsAndBytesConfig(load_in_4bit=True,
  bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=bf16)) + peft LoRA r=16 on the
  seven projections, gradient checkpointing on, bf16 autocast, AdamW, the same batch shape (bench_cli's child).
For each: time until the model and data are ready ("load"), each step's seconds (the first includes AdamW's state
being made), tokens/s of the last step, peak RSS (the child's ru_maxrss), the losses, and for ours the bytes of
gradients and AdamW state train.py reports. Every line a child prints goes, timestamped with its CPU time and VmHWM
so far, to DIR/CONFIG.log. A 7B step on 2 cores takes minutes: run it with nohup and read the logs.
"""
import argparse
import json
import os
import re
import shutil
import sys
import time

from bench_cli import peft, run_timed, step_times, write_fixture
from children import GiB

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def available_gib():
    return [int(x.split()[1]) for x in open("/proc/meminfo") if x.startswith("MemAvailable")][0] / 2**20


def ours(model_dir, data_file, method, quant, ckpt, batch, seq, steps, log, out):
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--model", model_dir, "--data", data_file, "--method",
           method, "--quant", quant, "--checkpointing", ckpt, "--batch-size", str(batch), "--grad-accum", "1",
           "--seq-len", str(seq), "--max-steps", str(steps), "--log-every", "1", "--eval-every", "0", "--out", out]
    r = run_timed(cmd, log=log)
    if r["rc"] or not r["lines"][-1][1].startswith("{"):
        raise RuntimeError(f"train.py failed (rc {r['rc']}):\n" + "\n".join(x[1] for x in r["lines"][-15:]))
    summary, ready = json.loads(r["lines"][-1][1]), next(x for x in r["lines"] if "trainable of" in x[1])
    t, dts = step_times(r["lines"])
    plans = [m for x in r["lines"] if x[1].startswith("memory plan") and (m := re.search(r"([\d.]+) (GiB|MiB) at the "
                                                                                        "peak", x[1]))]
    # the last: "memory plan with the data's N batch lengths: ... 5.28 GiB at the peak" refines "memory plan: 6.19 .."
    plan_gib = float(plans[-1][1]) * (1 if plans[-1][2] == "GiB" else 1 / 1024) if plans else None
    return dict(plan_gib=plan_gib, load_s=ready[0], hwm_ready=ready[3], peak_rss=r["maxrss"], peak_anon=r["peak_anon"],
                steps_s=[t[0][0] - ready[0]] + [d[0] for d in dts], cpu_s=[t[0][1] - ready[2]] + [d[1] for d in dts],
                losses=[
                    float(x[1].split("loss")[1].split()[0]) for x in r["lines"] if x[1].startswith("step ")],
                trainable=summary["trainable_params"], grad_bytes=summary.get("grad_bytes"),
                optimizer_bytes=summary.get("optimizer_state_bytes"), first_line=ready[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["lorasp:nf4:full"], help="WHO:QUANT:CHECKPOINTING, WHO "
                    "lorasp|lora|peft-bnb, QUANT nf4|none, CHECKPOINTING full|selective|none")
    ap.add_argument("--dir", default="/tmp/lorasp-7b", help="where the checkpoint (~13.5 GB; 26 for "
                    "llama2-13b) and data go")
    ap.add_argument("--keep", action="store_true", help="keep (and reuse) the checkpoint in --dir")
    ap.add_argument("--preset", default="llama2-7b", help="the shape (a smaller one: a dry run of this script)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()
    print(f"{available_gib():.1f} GiB available before writing", flush=True)
    t0, there = time.perf_counter(), os.path.exists(os.path.join(args.dir, "alpaca.json"))
    model_dir, data_file = write_fixture(args.dir, args.preset, records=8)
    size = sum(os.path.getsize(os.path.join(model_dir, f)) for f in os.listdir(model_dir))
    print(f"checkpoint: {model_dir}, {size / 1e9:.1f} GB" + (" (kept from an earlier run)" if there else
                                                             f", written in {time.perf_counter() - t0:.0f} s"),
          flush=True)
    results = {}
    try:
        for c in args.configs:
            who, quant, ckpt = c.split(":")
            print(f"{c}: running ({available_gib():.1f} GiB available; log in {args.dir}/{c.replace(':', '-')}.log)",
                  flush=True)
            with open(os.path.join(args.dir, c.replace(":", "-") + ".log"), "w") as log:
                if who == "peft-bnb":
                    r = peft(model_dir, "bf16", ckpt, args.batch, args.seq, args.steps, quant, log=log)
                    r = dict(r, load_s=r["ready_s"], steps_s=r["steps_all"])
                else:
                    r = ours(model_dir, data_file, who, quant, ckpt, args.batch, args.seq, args.steps, log,
                             os.path.join(args.dir, "out-" + c.replace(":", "-")))
            results[c] = r
            print(f"{c}: load {r['load_s']:.0f} s, steps " + ", ".join(f"{s:.0f}" for s in r["steps_s"]) +
                  f" s, {args.batch * args.seq / r['steps_s'][-1]:.1f} tokens/s (last step), peak RSS "
                  f"{r['peak_rss'] / GiB:.2f} GiB (anonymous {r['peak_anon'] / GiB:.2f})" +
                  (f" (memory plan {r['plan_gib']:.2f} GiB, {r['peak_rss'] / GiB / r['plan_gib'] - 1:+.0%})"
                   if r.get("plan_gib") else "") +
                  f", losses {' '.join(f'{x:.4f}' for x in r['losses'])}, trainable "
                  f"{r['trainable']:,}" + (f", gradients {r['grad_bytes'] / 2**20:.0f} MiB, AdamW state "
                                           f"{r['optimizer_bytes'] / 2**20:.0f} MiB" if r.get("grad_bytes") else ""),
                  flush=True)
            if r.get("first_line"):
                print(f"  {r['first_line']}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.dir)
    print(f"\n{args.preset}-shaped, {args.batch} x {args.seq} tokens, {args.steps} steps\n")
    print("| config | load s | s/step (last) | tokens/s | peak RSS GiB | of it anonymous | memory plan GiB | "
          "trainable | gradients + AdamW MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c, r in results.items():
        plan = "" if r.get("plan_gib") is None else f"{r['plan_gib']:.2f}"
        extra = (r["grad_bytes"] + r["optimizer_bytes"]) / 2**20 if r.get("grad_bytes") else None
        print(f"| {c} | {r['load_s']:.0f} | {r['steps_s'][-1]:.0f} | {args.batch * args.seq / r['steps_s'][-1]:.1f} | "
              f"{r['peak_rss'] / GiB:.2f} | {r['peak_anon'] / GiB:.2f} | {plan} | "
              f"{r['trainable']:,} | {'' if extra is None else f'{extra:.0f}'} |")


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from checks import console  # (lorasp's: line-buffered, UTF-8 where ASCII fails, a reader gone outlived)
    console()
    main()
