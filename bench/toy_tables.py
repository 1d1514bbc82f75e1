"""Tables shaped like the paper's Table 1 (GLUE) and Table 2 (WMT16 En-Ro), measured offline on toy stand-ins:
full fine-tuning, LoRA and LoRA-SP through the real command lines (train.py, eval.py), every command printed, over
seeds, with the mean and the spread (min to max) of every cell.

    python bench/toy_tables.py --seeds 0 1 2 --out toy_tables   # --only glue | wmt16; ~25 minutes a seed, 2 cores
    python bench/toy_tables.py --seeds 0 1 2 --only glue --adapter-lrs 3e-3 --tasks sst2 stsb   # a cheaper subset

- Table 1: bench/toy_glue.py's four GLUE-format tasks (SST-2, MRPC, STS-B, MNLI) and its tiny RoBERTa (4 layers,
  width 128, masked-LM pretrained there); each method trains 3 epochs at batch 32, sequence 128, r=16 on query and
  value with the head training whole; the dev metric of the last evaluation.
- Table 2: bench/toy_wmt16.py's toy En->Ro corpus and tiny T5 v1.0 (3+3 layers, width 128), first pretrained
  (full fine-tuning on the corpus without attributive adjectives), then adapted on the full grammar for 3 epochs at
  batch 32, r=16 on q and v; BLEU and ROUGE of beam-4 translations of the 200 test sentences (eval.py).
A seed S is everything's: the toy's (its data, the model's initialisation, its pretraining: toy_glue.py / toy_wmt16.py
--seed S, the T5 base's train.py --seed S) and each run's (train.py --seed S: data order, LoRA-SP masks, dropout);
seed S lives in OUT/seedS. Everything runs on one CPU thread (OMP_NUM_THREADS=1, train.py --threads 1), so no sum
depends on the machine's core count, on the CPU in fp32 (train.py --device cpu --dtype fp32, eval.py --dtype float32):
train.py's defaults would pick CUDA on a machine with a GPU and bf16 autocast on a CPU with bf16 units, and either
moves every figure. Each train.py / eval.py result is kept (result.json / eval.json in its run
folder): a rerun skips what is done and prints the tables again.
Learning rates are the toy's, not the paper's 2e-5 (which is for pretrained models of 10^8-10^9 weights trained on
10^4-10^5 examples): full fine-tuning 1e-3; LoRA and LoRA-SP each at --adapter-lrs (a row per rate).
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
ENV = dict(os.environ, OMP_NUM_THREADS="1")
PIN = ["--device", "cpu", "--dtype", "fp32"]  # not the defaults, which depend on the machine (a GPU, bf16 units)


def run(*argv, keep=None):
    """Run a command in the repository, print it, return its last output line as JSON (and its wall time). With
    keep (a file), that JSON is saved there, and a rerun reads it back instead of running the command again."""
    if keep and os.path.exists(keep):
        with open(keep) as f:
            kept = json.load(f)
        print("$ " + " ".join(shlex.quote(a) for a in argv) + f"   # done before: {keep}", flush=True)
        return kept["result"], kept["wall_s"]
    print("$ " + " ".join(shlex.quote(a) for a in argv), flush=True)
    t = time.time()
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=ENV)
    if out.returncode:
        sys.exit(out.stdout[-3000:] + out.stderr[-3000:])
    last = out.stdout.strip().split("\n")[-1]
    result, dt = (json.loads(last) if last.startswith("{") else {}), time.time() - t
    if keep:
        with open(keep + ".tmp", "w") as f:
            json.dump({"command": argv, "result": result, "wall_s": dt}, f)
        os.replace(keep + ".tmp", keep)
    return result, dt


def methods(adapter_lrs):
    return [("full", FULL_LR)] + [(m, lr) for m in ("lora", "lorasp") for lr in adapter_lrs]


def spread(values, digits=1):
    """'mean (min to max)' of one cell over the seeds; the value alone for one seed."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def glue_seed(out, adapter_lrs, tasks, seed):
    """One seed of the GLUE table: {row name: {metric: value}}, printing the seed's table."""
    d = os.path.join(out, "toyglue")
    if not os.path.exists(os.path.join(d, "roberta", "model.safetensors")):
        run(sys.executable, "bench/toy_glue.py", "--out", d, "--seed", str(seed), "--threads", "1")
    rows, lines = {}, []
    for method, lr in methods(adapter_lrs):
        cells, heads, wall, row = [], [], 0.0, {}
        for task in tasks:
            run_dir = f"{d}/runs/{method}-{lr}-{task}"
            os.makedirs(run_dir, exist_ok=True)
            s, dt = run(sys.executable, "train.py", "--model", f"{d}/roberta", "--data", f"glue/{task}", "--data-dir",
                        f"{d}/glue", "--out", run_dir, "--method", method, "--lr", lr,
                        "--batch-size", "32", "--grad-accum", "1", "--seq-len", "128", "--epochs", "3",
                        "--eval-every", "63", "--log-every", "63", "--save-every", "0", "--threads", "1",
                        "--seed", str(seed), *PIN, keep=f"{run_dir}/result.json")
            m = s.get("dev")
            if task == "mnli":
                row.update({"mnli_m": s["dev_matched"]["accuracy"], "mnli_mm": s["dev_mismatched"]["accuracy"]})
            elif task == "mrpc":
                row.update({"mrpc_f1": m["f1"], "mrpc_acc": m["accuracy"]})
            else:
                row[task] = m["pearson"] if task == "stsb" else m["accuracy"]
            cells.append(" / ".join(f"{row[k]:.1f}" for k in glue_keys(task)))
            heads, wall = heads + [s["head_params"]], wall + dt
        rows[f"tiny RoBERTa ({method}, lr {lr})"] = row
        lines.append(f"| tiny RoBERTa ({method}, lr {lr}) | {s['trainable_params'] - s['head_params']:,} + "
                     f"{min(heads):,}-{max(heads):,} | " + " | ".join(cells) + f" | {wall:.0f} s |")
    print(f"\nseed {seed}:\n| model & method | trainable: adapter (FT: backbone) + head | "
          + " | ".join(GLUE_HEADS[t] for t in tasks) + f" | wall, {len(tasks)} runs |\n"
          + "| --- " * (len(tasks) + 3) + "|\n" + "\n".join(lines) + "\n", flush=True)
    return rows


GLUE_HEADS = {"mnli": "MNLI m / mm", "sst2": "SST-2", "mrpc": "MRPC F1 / acc", "stsb": "STS-B Pearson"}


def glue_keys(task):
    return {"mnli": ["mnli_m", "mnli_mm"], "mrpc": ["mrpc_f1", "mrpc_acc"]}.get(task, [task])


def wmt16_seed(out, adapter_lrs, seed):
    """One seed of the WMT16 table: {row name: {metric: value}}, printing the seed's table."""
    d = os.path.join(out, "toy")
    if not os.path.exists(os.path.join(d, "t5", "spiece.model")):  # toy_wmt16.py's last file
        run(sys.executable, "bench/toy_wmt16.py", "--out", d, "--seed", str(seed))
    base = f"{d}/base/model"
    if not os.path.exists(os.path.join(base, "model.safetensors")):
        run(sys.executable, "train.py", "--model", f"{d}/t5", "--data", "wmt16-en-ro", "--data-dir", f"{d}/pretrain",
            "--out", f"{d}/base", "--method", "full", "--lr", "3e-3", "--batch-size", "32", "--grad-accum", "1",
            "--seq-len", "64", "--epochs", "8", "--eval-every", "250", "--log-every", "250", "--save-every", "0",
            "--threads", "1", "--seed", str(seed), *PIN)
    rows, lines = {}, []
    for method, lr in [("base", None)] + methods(adapter_lrs):
        train_s, s, dt, run_dir = {}, {}, 0.0, f"{d}/runs/{method}-{lr}"
        os.makedirs(run_dir, exist_ok=True)
        if method != "base":
            train_s, dt = run(sys.executable, "train.py", "--model", base, "--data", "wmt16-en-ro", "--data-dir",
                              f"{d}/data", "--out", run_dir, "--method", method, "--lr", lr,
                              "--batch-size", "32", "--grad-accum", "1", "--seq-len", "64", "--epochs", "3",
                              "--eval-every", "125", "--log-every", "125", "--save-every", "0", "--threads", "1",
                              "--seed", str(seed), *PIN, keep=f"{run_dir}/result.json")
        model = f"{run_dir}/model" if method == "full" else base
        adapter = [] if method in ("base", "full") else ["--adapter", f"{run_dir}/adapter"]
        s, _ = run(sys.executable, "eval.py", "--task", "wmt16-en-ro", "--model", model, *adapter, "--data-dir",
                   f"{d}/data", "--num-beams", "4", "--max-new-tokens", "64", "--device", "cpu", "--dtype", "float32",
                   keep=f"{run_dir}/eval.json")
        n = train_s.get("trainable_params", 0)
        name = f"tiny T5 ({method}, lr {lr})" if lr else "tiny T5 (base, no adaptation)"
        rows[name] = {k: s[k] for k in ("bleu", "rouge1", "rouge2", "rougeL")}
        if method != "base":
            rows[name]["val_loss"] = train_s["val_loss"]
        lines.append(f"| {name} | {n:,} | {s['bleu']:.1f} | {s['rouge1']:.1f} | {s['rouge2']:.1f} | "
                     f"{s['rougeL']:.1f} | {train_s.get('val_loss', float('nan')):.3f} | {dt:.0f} s |")
    print(f"\nseed {seed}:\n| model & method | trainable | BLEU | ROUGE-1 | ROUGE-2 | ROUGE-L | val loss | "
          "train wall |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(lines) + "\n", flush=True)
    return rows


def summary(name, per_seed, columns, out):
    """The table over seeds: each cell the mean and (min-max); per-seed values saved as OUT/NAME-seeds.json."""
    seeds = sorted(per_seed)
    with open(os.path.join(out, f"{name}-seeds.json"), "w") as f:
        json.dump({str(s): per_seed[s] for s in seeds}, f, indent=1)
    head = [h for h, _ in columns]
    lines = ["| model & method | " + " | ".join(head) + " |", "| --- " * (len(head) + 1) + "|"]
    for row in per_seed[seeds[0]]:
        cells = []
        for _, keys in columns:
            cells.append(" / ".join(spread([per_seed[s][row][k] for s in seeds], 3 if k == "val_loss" else 1)
                                    if k in per_seed[seeds[0]][row] else "" for k in keys))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
        for k in sorted({k for _, keys in columns for k in keys} & set(per_seed[seeds[0]][row])):
            print(f"  {row} {k}: " + ", ".join(f"seed {s} {per_seed[s][row][k]:.2f}" for s in seeds))
    print(f"\n{name}, seeds {' '.join(map(str, seeds))}: mean (min-max) of each cell\n" + "\n".join(lines) + "\n",
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="toy_tables", help="data, checkpoints and runs go here (OUT/seedS per seed)")
    ap.add_argument("--only", choices=["glue", "wmt16"], help="one of the two tables")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one table per seed, then the mean and "
                    "the spread (min-max) of each cell")
    ap.add_argument("--adapter-lrs", nargs="+", default=["3e-3", "1e-2"], help="LoRA's and LoRA-SP's learning rates")
    ap.add_argument("--tasks", nargs="+", choices=GLUE_TASKS, default=GLUE_TASKS, help="the GLUE table's tasks")
    args = ap.parse_args()
    tasks = [t for t in GLUE_TASKS if t in args.tasks]
    os.makedirs(args.out, exist_ok=True)
    if args.only != "wmt16":
        per_seed = {s: glue_seed(os.path.join(args.out, f"seed{s}"), args.adapter_lrs, tasks, s) for s in args.seeds}
        summary("glue", per_seed, [(GLUE_HEADS[t], glue_keys(t)) for t in tasks], args.out)
    if args.only != "glue":
        per_seed = {s: wmt16_seed(os.path.join(args.out, f"seed{s}"), args.adapter_lrs, s) for s in args.seeds}
        summary("wmt16", per_seed, [("BLEU", ["bleu"]), ("ROUGE-1", ["rouge1"]), ("ROUGE-2", ["rouge2"]),
                                    ("ROUGE-L", ["rougeL"]), ("validation loss", ["val_loss"])], args.out)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from checks import console  # (lorasp's: line-buffered, UTF-8 where ASCII fails, a reader gone outlived)
    console()
    main()
