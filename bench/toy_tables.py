"""Tables shaped like the paper's Table 1 (GLUE) and Table 2 (WMT16 En-Ro), measured offline on toy stand-ins:
full fine-tuning, LoRA and LoRA-SP through the real command lines (train.py, eval.py), every command printed.

    python bench/toy_tables.py --out toy_tables       # ~25 minutes on a 2-core CPU; --only glue | wmt16

- Table 1: bench/toy_glue.py's four GLUE-format tasks (SST-2, MRPC, STS-B, MNLI) and its tiny RoBERTa (4 layers,
  width 128, masked-LM pretrained there); each method trains 3 epochs at batch 32, sequence 128, r=16 on query and
  value with the head training whole; the dev metric of the last evaluation.
- Table 2: bench/toy_wmt16.py's toy En->Ro corpus and tiny T5 v1.0 (3+3 layers, width 128), first pretrained
  (full fine-tuning on the corpus without attributive adjectives), then adapted on the full grammar for 3 epochs at
  batch 32, r=16 on q and v; BLEU and ROUGE of beam-4 translations of the 200 test sentences (eval.py).
Learning rates are the toy's, not the paper's 2e-5 (which is for pretrained models of 10^8-10^9 weights trained on
10^4-10^5 examples): full fine-tuning 1e-3; LoRA and LoRA-SP each at --adapter-lrs (a row per rate). One seed, one
CPU thread per run.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL_LR = "1e-3"
GLUE_TASKS = ["mnli", "sst2", "mrpc", "stsb"]  # the order of the table's columns


def run(*argv):
    """Run a command in the repository, print it, return its last output line as JSON (and its wall time)."""
    print("$ " + " ".join(shlex.quote(a) for a in argv), flush=True)
    t = time.time()
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stdout[-3000:] + out.stderr[-3000:])
    last = out.stdout.strip().split("\n")[-1]
    return (json.loads(last) if last.startswith("{") else {}), time.time() - t


def methods(adapter_lrs):
    return [("full", FULL_LR)] + [(m, lr) for m in ("lora", "lorasp") for lr in adapter_lrs]


def glue_table(out, adapter_lrs):
    d = os.path.join(out, "toyglue")
    if not os.path.exists(os.path.join(d, "roberta", "model.safetensors")):
        run(sys.executable, "bench/toy_glue.py", "--out", d)
    rows = []
    for method, lr in methods(adapter_lrs):
        cells, heads, wall = [], [], 0.0
        for task in GLUE_TASKS:
            s, dt = run(sys.executable, "train.py", "--model", f"{d}/roberta", "--data", f"glue/{task}", "--data-dir",
                        f"{d}/glue", "--out", f"{d}/runs/{method}-{lr}-{task}", "--method", method, "--lr", lr,
                        "--batch-size", "32", "--grad-accum", "1", "--seq-len", "128", "--epochs", "3",
                        "--eval-every", "63", "--log-every", "63", "--save-every", "0", "--threads", "1")
            m = s.get("dev")
            cells.append(f"{s['dev_matched']['accuracy']:.1f} / {s['dev_mismatched']['accuracy']:.1f}" if task == "mnli"
                         else f"{m['f1']:.1f} / {m['accuracy']:.1f}" if task == "mrpc" else
                         f"{m['pearson']:.1f}" if task == "stsb" else f"{m['accuracy']:.1f}")
            heads, wall = heads + [s["head_params"]], wall + dt
        rows.append(f"| tiny RoBERTa ({method}, lr {lr}) | {s['trainable_params'] - s['head_params']:,} + "
                    f"{min(heads):,}-{max(heads):,} | " + " | ".join(cells) + f" | {wall:.0f} s |")
    print("\n| model & method | trainable: adapter (FT: backbone) + head | MNLI m / mm | SST-2 | MRPC F1 / acc | "
          "STS-B Pearson | wall, 4 runs |\n| --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n",
          flush=True)


def wmt16_table(out, adapter_lrs):
    d = os.path.join(out, "toy")
    if not os.path.exists(os.path.join(d, "t5", "model.safetensors")):
        run(sys.executable, "bench/toy_wmt16.py", "--out", d)
    base = f"{d}/base/model"
    if not os.path.exists(os.path.join(base, "model.safetensors")):
        run(sys.executable, "train.py", "--model", f"{d}/t5", "--data", "wmt16-en-ro", "--data-dir", f"{d}/pretrain",
            "--out", f"{d}/base", "--method", "full", "--lr", "3e-3", "--batch-size", "32", "--grad-accum", "1",
            "--seq-len", "64", "--epochs", "8", "--eval-every", "250", "--log-every", "250", "--save-every", "0",
            "--threads", "1")
    rows = []
    for method, lr in [("base", None)] + methods(adapter_lrs):
        train_s, s, dt, run_dir = {}, {}, 0.0, f"{d}/runs/{method}-{lr}"
        if method != "base":
            train_s, dt = run(sys.executable, "train.py", "--model", base, "--data", "wmt16-en-ro", "--data-dir",
                              f"{d}/data", "--out", run_dir, "--method", method, "--lr", lr,
                              "--batch-size", "32", "--grad-accum", "1", "--seq-len", "64", "--epochs", "3",
                              "--eval-every", "125", "--log-every", "125", "--save-every", "0", "--threads", "1")
        model = f"{run_dir}/model" if method == "full" else base
        adapter = [] if method in ("base", "full") else ["--adapter", f"{run_dir}/adapter"]
        s, _ = run(sys.executable, "eval.py", "--task", "wmt16-en-ro", "--model", model, *adapter, "--data-dir",
                   f"{d}/data", "--num-beams", "4", "--max-new-tokens", "64")
        n = train_s.get("trainable_params", 0)
        name = f"{method}, lr {lr}" if lr else method
        rows.append(f"| tiny T5 ({name}) | {n:,} | {s['bleu']:.1f} | {s['rouge1']:.1f} | {s['rouge2']:.1f} | "
                    f"{s['rougeL']:.1f} | {train_s.get('val_loss', float('nan')):.3f} | {dt:.0f} s |")
    print("\n| model & method | trainable | BLEU | ROUGE-1 | ROUGE-2 | ROUGE-L | val loss | train wall |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="toy_tables", help="data, checkpoints and runs go here")
    ap.add_argument("--only", choices=["glue", "wmt16"], help="one of the two tables")
    ap.add_argument("--adapter-lrs", nargs="+", default=["3e-3", "1e-2"], help="LoRA's and LoRA-SP's learning rates")
    args = ap.parse_args()
    if args.only != "wmt16":
        glue_table(args.out, args.adapter_lrs)
    if args.only != "glue":
        wmt16_table(args.out, args.adapter_lrs)


if __name__ == "__main__":
    main()
