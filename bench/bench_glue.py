"""One GLUE training step on RoBERTa-base's shape: lorasp (model.py + LoRA-SP) vs transformers + peft, side by side.

The paper's Table 1 setting: RoBERTa-base, batch 64 x sequence 128, rank 16 on query and value (as the LoRA paper
adapts RoBERTa), the classification head training fully beside the adapter, AdamW. A step is forward, cross-entropy,
backward, optimizer step. Both sides are built from random weights of the same shape (nothing is downloaded), run in
train mode (dropout 0.1) with PyTorch SDPA attention, each in a fresh subprocess so neither inherits the other's
memory:
- ours: model.build_model("roberta-base") + add_head(2) + lorasp.apply_lorasp(["query", "value"], r=16, keep=0.5),
  with `--checkpointing` (none / selective / full);
- hf: transformers.RobertaForSequenceClassification + peft.get_peft_model(LoraConfig(task_type="SEQ_CLS", r=16,
  lora_alpha=32, target_modules=["query", "value"])) (PEFT's SEQ_CLS keeps the classifier trainable).
Time: the median step after warm-up, wall clock and this process's CPU time (on a CPU shared with other jobs the
second is the steadier; with --threads 1 it is the compute itself). Memory: on CUDA, torch.cuda.max_memory_allocated
over the build and the steps; on CPU, the peak resident size (VmHWM) during the steps minus the resident size before
the model was built (weights, gradients, optimizer state, activations), with glibc told to mmap blocks over 128 KiB
so that freed tensors leave the resident size. `--rounds` runs every side that many times, interleaved (medians).
Targets (issue 6): ours <= 0.85x the time and <= 0.75x the memory of transformers + peft.

    python bench/bench_glue.py                                        # batch 64 x 128 (bf16 autocast on CUDA)
    python bench/bench_glue.py --batch 8 --threads 2 --repeats 3      # a CPU-sized run
    python bench/bench_glue.py --checkpointing none selective full    # one row per mode
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from children import proc_status

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
MiB = 1 << 20


def build(side, checkpointing, device, base_dtype=torch.float32):
    """(a function (ids, mask) -> logits, the model, a description)."""
    if side == "hf":
        from peft import LoraConfig, get_peft_model
        from transformers import RobertaConfig, RobertaForSequenceClassification
        cfg = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                            pad_token_id=1, bos_token_id=0, eos_token_id=2, num_labels=2)
        m = get_peft_model(RobertaForSequenceClassification(cfg), LoraConfig(
            task_type="SEQ_CLS", r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["query", "value"])).to(device)
        return (lambda ids, mask: m(input_ids=ids, attention_mask=mask).logits), m, \
            f"transformers + peft LoRA, attention {cfg._attn_implementation}"
    import model as M
    from lorasp import apply_lorasp
    m = M.build_model("roberta-base").to(device, base_dtype).add_head(2)  # the head (like the adapters) is fp32
    m = apply_lorasp(m, ["query", "value"], r=16, alpha=32, keep=0.5)
    for name in type(m).head:
        m.get_submodule(name).requires_grad_(True)
    m.checkpointing = checkpointing
    return m.classify, m, f"lorasp LoRA-SP, {str(base_dtype)[6:]} base, checkpointing {checkpointing}"


def run(args):
    """One side in this process: build, warm up, time; print one JSON line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    base_rss = proc_status("VmRSS")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    forward, m, what = build(args.side, args.checkpointing[0], dev, getattr(torch, args.base_dtype))
    m.train()
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-5)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 50265, (args.batch, args.seq), generator=g).to(dev)
    mask, labels = torch.ones_like(ids), torch.randint(0, 2, (args.batch,), generator=g).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times, cpu = [], []  # wall time, and this process's CPU time (steadier when other jobs share the cores)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM: the CPU peak counts the steps only (the build's transient peak aside)
    for i in range(args.warmup + args.repeats):
        sync()
        t, c = time.perf_counter(), time.process_time()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = F.cross_entropy(forward(ids, mask).float(), labels)
        loss.backward()
        loss = loss.detach()  # drop the graph, as HF Trainer does: kept into the next step, it fragments the heap
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else proc_status("VmHWM") - base_rss
    print(json.dumps(dict(what=what, step_s=statistics.median(times), cpu_s=statistics.median(cpu), peak=peak,
                          loss=loss.item(), trainable=sum(p.numel() for p in params))))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--checkpointing", nargs="+", default=["none"], choices=["none", "selective", "full"])
    p.add_argument("--base-dtype", choices=["float32", "bfloat16"], default=None,
                   help="ours: the frozen base's storage dtype (default: bfloat16 on CUDA, where autocast computes the "
                        "matmuls in bf16 anyway; float32 on CPU)")
    p.add_argument("--rounds", type=int, default=1, help="run every side this many times, interleaved: medians")
    p.add_argument("--side", choices=["ours", "hf"], help=argparse.SUPPRESS)  # internal: run one side here
    args = p.parse_args()
    args.base_dtype = args.base_dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.side:
        return run(args)
    skip = ("side", "checkpointing", "rounds")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if v is not None and k not in skip]
    sides = [("hf", "none")] + [("ours", c) for c in args.checkpointing]
    runs = {s: [] for s in sides}
    for _ in range(args.rounds):  # interleaved, so that drift on a shared machine hits every side alike
        for side, mode in sides:
            # big blocks mmapped: freed memory leaves the resident size, which then tracks live tensors
            out = subprocess.run([sys.executable, __file__, "--side", side, "--checkpointing", mode, *flags],
                                 capture_output=True, text=True, env=dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072"))
            if out.returncode:
                sys.exit(f"{side} failed:\n{out.stderr}")
            runs[side, mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = [dict(r[0], step_s=statistics.median(x["step_s"] for x in r), cpu_s=statistics.median(x["cpu_s"] for x in r),
                 peak=max(x["peak"] for x in r)) for r in runs.values()]
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"CPU, {args.threads or torch.get_num_threads()} threads"
    print(f"RoBERTa-base training step, batch {args.batch} x {args.seq}, rank 16 on query/value + head, AdamW, "
          f"{'bf16 autocast' if args.device.startswith('cuda') else 'fp32'}; median of {args.repeats} steps "
          f"x {args.rounds} rounds "
          f"({name}, torch {torch.__version__})")
    hf = rows[0]
    print(f"{'':<56}{'trainable':>10}{'step ms':>9}{'vs hf':>6}{'CPU ms':>9}{'vs hf':>6}{'peak MiB':>9}{'vs hf':>6}")
    for r in rows:
        print(f"{r['what']:<56}{r['trainable']:>10,}{1e3 * r['step_s']:>9.0f}{r['step_s'] / hf['step_s']:>6.2f}"
              f"{1e3 * r['cpu_s']:>9.0f}{r['cpu_s'] / hf['cpu_s']:>6.2f}{r['peak'] / MiB:>9.0f}"
              f"{r['peak'] / hf['peak']:>6.2f}")


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from checks import console  # (lorasp's: line-buffered, UTF-8 where ASCII fails, a reader gone outlived)
    console()
    main()
