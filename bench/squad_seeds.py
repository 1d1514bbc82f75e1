"""The SQuAD toy of docs/paper-experiments.md over seeds: for each seed, bench/toy_squad.py --seed S writes the data and
the random models, then train.py --seed S runs each row's command of that page; exact match and F1 before and after,
then the mean and the spread (min-max) over the seeds.

    python bench/squad_seeds.py --seeds 0 1 2 --out out/squad_seeds      # ~10 minutes, 1 thread

Rows: BERT (2 layers, width 64) with LoRA-SP and with full fine-tuning on the extractive toy (the span head; 50
steps); GPT-2 (2 layers, width 64) full fine-tuning on the generative toy (300 steps). Each run's summary is kept in
OUT/seedS/ROW.json: a rerun skips it.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ["--data-dir", "{d}/squad", "--grad-accum", "1", "--eval-every", "0", "--save-every", "0", "--threads", "1",
          "--device", "cpu"]
ROWS = {  # name: train.py flags, as on docs/paper-experiments.md
    "bert-lorasp": ["--model", "{d}/bert", "--data", "squad", "--seq-len", "64", "--batch-size", "16", "--lr", "1e-2",
                    "--epochs", "1", "--exact-match", "100", "--log-every", "25"],
    "bert-full": ["--model", "{d}/bert", "--data", "squad", "--method", "full", "--seq-len", "64", "--batch-size", "16",
                  "--lr", "1e-3", "--epochs", "1", "--exact-match", "100", "--log-every", "25"],
    "gpt2-full": ["--model", "{d}/gpt2", "--data", "squad-gen", "--method", "full", "--lr", "3e-3", "--epochs", "6",
                  "--batch-size", "16", "--seq-len", "256", "--exact-match", "50", "--log-every", "100"],
}


def run(cmd, log):
    with open(log, "w") as f:
        p = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
    lines = open(log).read().strip().splitlines()
    if p.returncode or not lines or not lines[-1].startswith("{"):
        sys.exit(f"failed (rc {p.returncode}): {' '.join(cmd)}\n  see {log}:\n" + "\n".join(lines[-10:]))
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="out/squad_seeds", help="OUT/seedS: the toy's data, models, runs and summaries")
    args = ap.parse_args()
    results = {row: [] for row in ROWS}
    for seed in args.seeds:
        d = os.path.abspath(os.path.join(args.out, f"seed{seed}"))
        if not os.path.exists(os.path.join(d, "gpt2")):
            subprocess.run([sys.executable, "bench/toy_squad.py", "--out", d, "--seed", str(seed), "--gpt2"], cwd=ROOT,
                           check=True, stdout=subprocess.DEVNULL)
        for row, flags in ROWS.items():
            done = os.path.join(d, f"{row}.json")
            if not os.path.exists(done):
                cmd = [sys.executable, "train.py", *(x.format(d=d) for x in flags + COMMON), "--seed", str(seed),
                       "--out", os.path.join(d, "runs", row)]
                summary = run(cmd, os.path.join(d, f"{row}.log"))
                with open(done + ".tmp", "w") as f:
                    json.dump(summary, f)
                os.replace(done + ".tmp", done)
            s = json.load(open(done))
            results[row].append(s)
            print(f"seed {seed} {row}: exact match {s['exact_match_before']:.1f} -> {s['exact_match_after']:.1f}, "
                  f"F1 {s['f1_before']:.1f} -> {s['f1_after']:.1f} ({s['steps']} steps)", flush=True)

    def cell(rs, key):
        xs = [r[key] for r in rs]
        return f"{statistics.mean(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"
    print(f"\nseeds {' '.join(map(str, args.seeds))}: mean (min-max)\n")
    print("| run | exact match before | exact match after | F1 after |\n|---|---|---|---|")
    for row, rs in results.items():
        print(f"| {row} | {cell(rs, 'exact_match_before')} | {cell(rs, 'exact_match_after')} | {cell(rs, 'f1_after')} |")


if __name__ == "__main__":
    main()
