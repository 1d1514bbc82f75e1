"""One command per table of the LoRA-SP paper: every train/eval pair a table needs, through the real train.py and
eval.py (each command printed), one results file per cell (a rerun skips what is done), the table printed in the
paper's layout next to its published numbers, and a Figure 2-style bar chart (SVG).

    python bench/paper_tables.py --table 1 --toy      # eight toy GLUE tasks, tiny RoBERTa: ~1 hour on 2 CPU cores
    python bench/paper_tables.py --table 2 --toy      # toy En->Ro, tiny T5 (pretrained here first)
    python bench/paper_tables.py --table 3 --toy      # the offline demo's Llama on its Alpaca-format task, toy MMLU
    python bench/paper_tables.py --table 1 --download [--paper-counts] [--data-dir glue_data]   # the real one

- Table 1: roberta-base and roberta-large x {FT, LoRA, LoRA-SP} x the eight GLUE tasks (batch 64 / 32, sequence
  128), the dev metric of the last evaluation: MNLI matched accuracy, SST-2, MRPC, QNLI, QQP, RTE accuracy, CoLA
  Matthews correlation, STS-B Pearson (the caption's metrics), and their mean, the "average" the paper reports.
- Table 2: t5-base and t5-large on WMT16 En-Ro, BLEU and ROUGE-1/2/L of beam-4 test translations (eval.py).
- Table 3: llama2-7b and llama2-13b on Alpaca, 5-shot MMLU (eval.py: the macro mean over subjects).
- Every run: the paper's AdamW, lr 2e-5, 3 epochs, r=16 (alpha 32: ours; the paper gives none). --paper-counts
  adds the flags that reproduce the paper's #Trainable Parameters instead (bench/paper_counts.py: r=8 for RoBERTa
  and T5, r=64 on all seven projections for Llama-2). Both counts are printed: ours (train.py's) and the paper's.
- --toy: the generated stand-ins (bench/toy_glue.py --tasks all, bench/toy_wmt16.py, a Llama like the offline demo's
  on its instruction task with an MMLU-format file of its counting questions) at toy learning rates (full 1e-3, adapters 3e-3); one model per table.
  They say the pipeline runs and learns, nothing about the paper's numbers.
- --seeds S ...: a table per seed, then every cell's mean and spread (min-max). Seed S is each run's (train.py --seed
  S) and, with --toy, the stand-in's (its data, initialisation and pretraining); seed S lives in OUT/tableN[-toy]/seedS.
  With --toy every command runs on one CPU thread (OMP_NUM_THREADS=1, --threads 1 unless given) in fp32 (--device
  cpu --dtype fp32: train.py's defaults would pick CUDA on a GPU machine, bf16 autocast on a CPU with bf16 units).
"""
import argparse
import csv
import json
import os
import random
import shlex
import subprocess
import sys
from dataclasses import replace

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import data  # noqa: E402
import eval as E  # noqa: E402
import model as M  # noqa: E402
import plot  # noqa: E402
import tokenizer  # noqa: E402
import train  # noqa: E402

GLUE_COLUMNS = ["mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb"]  # the paper's column order
METRIC = {"mnli": ("dev_matched", "accuracy"), "cola": ("dev", "matthews_corrcoef"), "stsb": ("dev", "pearson")}
METHODS = [("FT", "full"), ("LoRA", "lora"), ("LoRA-SP", "lorasp")]
PAPER = {  # (label, #trainable as printed, numbers in the table's column order)
    1: [("RoBbase", ["121.3M", "0.9M", "0.45M"], [[86.5, 92.1, 91.3, 58.9, 91.2, 90.9, 69.8, 89.9],
                                                  [86.7, 93.4, 90.6, 62.4, 92.3, 88.9, 70.2, 90.3],
                                                  [86.2, 93.6, 91.1, 62.5, 91.4, 90.4, 70.3, 90.2]]),
        ("RoBlarge", ["348.M", "1.8M", "0.9M"], [[89.7, 95.6, 92.2, 65.9, 93.4, 90.2, 82.3, 92.1],
                                                 [90.3, 96.5, 91.2, 65.6, 93.6, 91.3, 82.1, 91.3],
                                                 [90.4, 96.4, 92.3, 66.2, 93.7, 91.3, 82.5, 92.3]])],
    2: [("T5Base", ["218.8M", "0.9M", "0.45M"], [[31.5, 42.6, 28.9, 40.3], [30.9, 43.3, 27.6, 40.6],
                                                 [31.2, 43.7, 27.8, 39.8]]),
        ("T5Large", ["725.4M", "2.29M", "1.15M"], [[33.4, 51.2, 33.2, 47.3], [33.6, 50.9, 32.8, 47.1],
                                                   [33.5, 51.3, 33.6, 47.5]])],
    3: [("LLaMA-7B", ["6624.4M", "157.3M", "78.7M"], [[39.8], [38.9], [39.0]]),
        ("LLaMA-13B", ["12986.8M", "248.6M", "124.3M"], [[47.8], [45.3], [45.4]])],
}
COLUMNS = {1: ["MNLI", "SST-2", "MRPC", "CoLA", "QNLI", "QQP", "RTE", "STS-B"],
           2: ["BLEU", "ROUGE-1", "ROUGE-2", "ROUGE-L"], 3: ["5-shot MMLU"]}
MODELS = {1: ["roberta-base", "roberta-large"], 2: ["t5-base", "t5-large"], 3: ["llama2-7b", "llama2-13b"]}
PAPER_COUNTS = {1: ["--rank", "8"], 2: ["--rank", "8"], 3: ["--rank", "64"]}  # llama: all seven are the default


ENV = dict(os.environ)  # --toy: OMP_NUM_THREADS=1
TOY_PIN = ["--device", "cpu", "--dtype", "fp32"]  # --toy: not train.py's defaults, which depend on the machine


def run(argv):
    """Run a command in the repository, printed first; its last output line as JSON ({} if it is not: a generator)."""
    print("$ " + " ".join(shlex.quote(a) for a in argv), flush=True)
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=ENV)
    if p.returncode:
        sys.exit(p.stdout[-3000:] + p.stderr[-3000:])
    last = p.stdout.strip().split("\n")[-1]
    return json.loads(last) if last.startswith("{") else {}


def cell(path, make):
    """A cell's results: read from path if a run finished it, else make() and saved there."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    result = make()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f)
    return result


def train_flags(args, table, model, method, out):
    lr = ("1e-3" if method == "full" else "3e-3") if args.toy else "2e-5"
    py = [sys.executable, "train.py", "--model", model, "--method", method, "--lr", lr, "--out", out,
          "--save-every", "0", *(["--threads", str(args.threads)] if args.threads else []), "--seed", str(args.seed)]
    return py + (PAPER_COUNTS[table] if args.paper_counts and method != "full" else []) + \
        (["--download"] if args.download and not args.toy else []) + (TOY_PIN if args.toy else [])


def table1(args, model, tag, out):
    big = "large" in model
    glue = args.data_dir
    if args.toy:
        toy = os.path.join(out, "toyglue")
        if not os.path.exists(os.path.join(toy, "roberta", "model.safetensors")):
            run([sys.executable, "bench/toy_glue.py", "--out", toy, "--tasks", "all", "--seed", str(args.seed),
                 "--threads", "1"])
        model, glue = os.path.join(toy, "roberta"), os.path.join(toy, "glue")
    rows = []
    for _, method in METHODS:
        cells, count = [], None
        for task in GLUE_COLUMNS:
            d = os.path.join(out, "runs", tag, method, task)
            s = cell(os.path.join(d, "result.json"), lambda: run(train_flags(args, 1, model, method, d) + [
                "--data", f"glue/{task}", "--batch-size", "32" if big or args.toy else "64", "--grad-accum", "1",
                "--seq-len", "128", "--epochs", "3", "--eval-every", "0", "--log-every", "100",
                *(["--data-dir", glue] if glue else [])]))
            split, metric = METRIC.get(task, ("dev", "accuracy"))
            cells.append(s[split][metric])
            count = s["trainable_params"] if task == "sst2" else count  # 2 labels (MNLI 3, STS-B 1)
        rows.append((count, cells))
    return rows


def table2(args, model, tag, out):
    data_dir, base = args.data_dir or data.cache_dir("wmt16-en-ro"), model
    if args.toy:
        toy = os.path.join(out, "toy")
        if not os.path.exists(os.path.join(toy, "t5", "model.safetensors")):
            run([sys.executable, "bench/toy_wmt16.py", "--out", toy, "--seed", str(args.seed)])
        data_dir, base = os.path.join(toy, "data"), os.path.join(toy, "base", "model")
        if not os.path.exists(os.path.join(base, "model.safetensors")):  # the toy's "pretraining" (bench/toy_tables.py)
            run([sys.executable, "train.py", "--model", os.path.join(toy, "t5"), "--data", "wmt16-en-ro", "--data-dir",
                 os.path.join(toy, "pretrain"), "--out", os.path.join(toy, "base"), "--method", "full", "--lr", "3e-3",
                 "--batch-size", "32", "--grad-accum", "1", "--seq-len", "64", "--epochs", "8", "--eval-every", "0",
                 "--log-every", "250", "--save-every", "0", "--seed", str(args.seed), *TOY_PIN,
                 *(["--threads", str(args.threads)] if args.threads else [])])
    rows = []
    for _, method in METHODS:
        d = os.path.join(out, "runs", tag, method)
        s = cell(os.path.join(d, "train.json"), lambda: run(train_flags(args, 2, base, method, d) + [
            "--data", "wmt16-en-ro", "--data-dir", data_dir, "--batch-size", "32", "--grad-accum", "1", "--seq-len",
            "64" if args.toy else "128", "--epochs", "3", "--eval-every", "0", "--log-every", "100"]))
        trained = os.path.join(d, "model") if method == "full" else base
        r = cell(os.path.join(d, "result.json"), lambda: run(
            [sys.executable, "eval.py", "--task", "wmt16-en-ro", "--model", trained, "--data-dir", data_dir,
             *(["--adapter", os.path.join(d, "adapter")] if method != "full" else []), "--num-beams", "4",
             *(["--device", "cpu", "--dtype", "float32"] if args.toy else []),
             "--max-new-tokens", "64" if args.toy else "256"]))
        rows.append((s["trainable_params"], [r["bleu"], r["rouge1"], r["rouge2"], r["rougeL"]]))
    return rows


def toy_mmlu(directory, n_dev=5, n_test=100, seed=0):
    """An MMLU-format folder (dev/, test/: question, A-D, answer) of the demo's counting questions, 4 options."""
    rng = random.Random(seed)
    for split, n in (("dev", n_dev), ("test", n_test)):
        os.makedirs(os.path.join(directory, split), exist_ok=True)
        with open(os.path.join(directory, split, f"counting_{split}.csv"), "w", newline="") as f:
            for _ in range(n):
                r = data.demo_example(rng)[1]
                options = rng.sample([str(i) for i in range(10) if str(i) != r["output"]], 3) + [r["output"]]
                rng.shuffle(options)
                csv.writer(f).writerow([r["instruction"], *options, "ABCD"[options.index(r["output"])]])
    return directory


def toy_llama(out, seed=0, threads=None):
    """A Llama like the offline demo's (train.DEMO_PRETRAIN: 4 layers, width 128), pretrained once by train.py on the
    demo's generated text, with a tokenizer that also saw MMLU-format lines: the demo's own does not tell " C" from
    " D", which MMLU's answer letters need. Returns its directory and the instruction task (demo records)."""
    d, init, task = os.path.join(out, "llama"), os.path.join(out, "llama-init"), os.path.join(out, "demo_tasks.json")
    if not os.path.exists(os.path.join(d, "model", "model.safetensors")):
        cfg = train.DEMO_PRETRAIN
        corpus = data.demo_files(init, cfg["docs"], cfg["vocab"])
        with open(corpus) as f:
            lines = f.read().splitlines()
        mmlu = [data.mmlu_example([q, "1", "2", "3", "4", c]) for q, c in zip(lines[:200], "ABCD" * 50)]
        data.train_sentencepiece(lines[:2000] + list(data.PROMPT_DICT.values()) * 20 + mmlu * 5,
                                 os.path.join(init, "tokenizer.model"), cfg["vocab"])
        config = replace(M.get_config("llama-tiny"), **cfg["config"],
                         vocab_size=tokenizer.load_tokenizer(init).vocab_size)
        torch.manual_seed(seed)
        M.save_pretrained(M.build_model(config), init)
        run([sys.executable, "train.py", "--model", init, "--data", corpus, "--method", "full", "--out", d,
             *cfg["flags"], "--seed", str(seed), *TOY_PIN, *(["--threads", str(threads)] if threads else [])])
        with open(task, "w") as f:
            json.dump(data.demo_records(3000, seed=1), f)
    return os.path.join(d, "model"), task


def table3(args, model, tag, out):
    alpaca, mmlu = "alpaca", args.data_dir
    if args.toy:
        (model, alpaca), mmlu = toy_llama(out, args.seed, args.threads), toy_mmlu(os.path.join(out, "toy_mmlu"),
                                                                                     seed=args.seed)
    rows = []
    for _, method in METHODS:
        d = os.path.join(out, "runs", tag, method)
        s = cell(os.path.join(d, "train.json"), lambda: run(train_flags(args, 3, model, method, d) + [
            "--data", alpaca, "--epochs", "3" if not args.toy else "1", "--eval-every", "0", "--log-every", "100",
            *(["--batch-size", "16", "--grad-accum", "1", "--seq-len", "128"] if args.toy else [])]))
        trained = os.path.join(d, "model") if method == "full" else model
        r = cell(os.path.join(d, "result.json"), lambda: run(
            [sys.executable, "eval.py", "--task", "mmlu", "--model", trained, "--shots", "5",
             *(["--device", "cpu", "--dtype", "float32"] if args.toy else []),
             *(["--adapter", os.path.join(d, "adapter")] if method != "full" else []),
             *(["--data-dir", mmlu] if mmlu else [])]))
        rows.append((s["trainable_params"], [100 * r["macro"]]))
    return rows


def bar_svg(columns, rows, title, W=720, H=320, L=50, B=40, T=30):
    """Figure 2's shape: for each column (task) a group of bars, one per method, on round ticks; hand-written SVG."""
    ticks = plot.ticks(0, max(max(v for _, cells in rows for v in cells), 1e-9))
    group, colors = (W - L - 20) / len(columns), ["#1f77b4", "#d62728", "#2ca02c"]
    bar, sy = group / (len(rows) + 1), lambda v: H - B - max(v, 0) / ticks[-1] * (H - B - T)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
           f'font-size="11"><rect width="{W}" height="{H}" fill="white"/><text x="{L}" y="16">{title}</text>']
    out += [f'<line x1="{L}" y1="{sy(y):.1f}" x2="{W - 20}" y2="{sy(y):.1f}" stroke="{"black" if y == 0 else "#ddd"}"/>'
            f'<text x="{L - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:g}</text>' for y in ticks if y >= 0]
    for j, name in enumerate(columns):
        x0 = L + j * group
        out.append(f'<text x="{x0 + group / 2:.1f}" y="{H - B + 14}" text-anchor="middle">{name}</text>')
        for i, ((label, _), (_, cells)) in enumerate(zip(METHODS, rows)):
            out.append(f'<rect x="{x0 + (i + 0.5) * bar:.1f}" y="{sy(cells[j]):.1f}" width="{bar:.1f}" '
                       f'height="{H - B - sy(cells[j]):.1f}" fill="{colors[i]}"><title>{label} {cells[j]:.1f}</title>'
                       '</rect>')
    out += [f'<rect x="{W - 250 + 80 * i}" y="6" width="10" height="10" fill="{c}"/>'
            f'<text x="{W - 236 + 80 * i}" y="15">{m}</text>' for i, ((m, _), c) in enumerate(zip(METHODS, colors))]
    return "\n".join(out + ["</svg>\n"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", type=int, choices=[1, 2, 3], required=True)
    ap.add_argument("--toy", action=argparse.BooleanOptionalAction, default=False, help="the generated stand-ins")
    ap.add_argument("--models", nargs="+", help="presets or directories (default: the paper's two)")
    ap.add_argument("--data-dir", help="glue_data/ (1), WMT16 export (2), MMLU's data/ (3); default: the cache")
    ap.add_argument("--paper-counts", action=argparse.BooleanOptionalAction, default=False,
                    help="the flags that reproduce the paper's #Trainable Parameters (r=8; Llama-2: r=64)")
    ap.add_argument("--download", action=argparse.BooleanOptionalAction, default=False, help="fetch preset weights")
    ap.add_argument("--threads", type=int, help="torch threads per run (--toy: 1 unless given)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="a table per seed, then each cell's mean "
                    "and spread (min-max)")
    ap.add_argument("--out", default="paper_tables", help="tableN[-toy]/seedS/runs/<model>/<method>/... (result "
                    "files), figure SVGs")
    args = ap.parse_args()
    if args.toy:
        ENV["OMP_NUM_THREADS"], args.threads = "1", args.threads or 1
    t, make = args.table, {1: table1, 2: table2, 3: table3}[args.table]
    root = os.path.join(args.out, f"table{t}" + ("-toy" if args.toy else ""))
    models = ["toy"] if args.toy else args.models or MODELS[t]
    per_seed = {}
    for seed in args.seeds:
        args.seed, out = seed, os.path.join(root, f"seed{seed}")
        per_seed[seed] = [make(args, model, os.path.basename(os.path.normpath(model)), out) for model in models]
        print(f"\nseed {seed}:\n" + table(t, models, {seed: per_seed[seed]}), flush=True)
        for model, rows in zip(models, per_seed[seed]):
            svg = os.path.join(out, f"figure-{os.path.basename(os.path.normpath(model))}.svg")
            with open(svg, "w") as f:
                f.write(bar_svg(COLUMNS[t], rows, f"Table {t}: {model}, seed {seed}"))
            print(f"wrote {svg}")
    seeds = sorted(per_seed)
    with open(os.path.join(root, "seeds.json"), "w") as f:
        json.dump({str(s): per_seed[s] for s in seeds}, f)
    for k, model in enumerate(models):  # the figure of the means
        rows = [(per_seed[seeds[0]][k][i][0], [sum(per_seed[s][k][i][1][j] for s in seeds) / len(seeds)
                                              for j in range(len(COLUMNS[t]))]) for i in range(len(METHODS))]
        svg = os.path.join(root, f"figure-{os.path.basename(os.path.normpath(model))}.svg")
        with open(svg, "w") as f:
            f.write(bar_svg(COLUMNS[t], rows, f"Table {t}: {model}, mean of seeds {' '.join(map(str, seeds))}"))
        print(f"wrote {svg}")
    print(f"\nseeds {' '.join(map(str, seeds))}: mean (min-max) of each cell\n" + table(t, models, per_seed))


def table(t, models, per_seed):
    """The table in the paper's layout, our rows over the seeds (mean (min-max), or the value for one seed) each
    followed by the paper's row."""
    seeds = sorted(per_seed)
    head = "| Model&Method | #Trainable ours | paper | " + " | ".join(COLUMNS[t]) + (" | Avg |" if t == 1 else " |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]

    def spread(values):
        mean = sum(values) / len(values)
        return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ({min(values):.1f}-{max(values):.1f})"
    for k, model in enumerate(models):
        label, counts, numbers = PAPER[t][min(k, 1)]
        for i, ((name, _), paper_count, paper) in enumerate(zip(METHODS, counts, numbers)):
            count = per_seed[seeds[0]][k][i][0]
            cells = [[per_seed[s][k][i][1][j] for s in seeds] for j in range(len(COLUMNS[t]))]
            avg = [sum(per_seed[s][k][i][1]) / len(COLUMNS[t]) for s in seeds]
            n = f"{count / 1e6:,.2f}M" if count >= 1e5 else f"{count:,}"
            lines.append(f"| {model} ({name}) | {n} | | " + " | ".join(spread(v) for v in cells)
                         + (f" | {spread(avg)} |" if t == 1 else " |"))
            lines.append(f"| paper: {label}({name}) | | {paper_count} | " + " | ".join(f"{v:.1f}" for v in paper)
                         + (f" | {sum(paper) / len(paper):.1f} |" if t == 1 else " |"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from checks import console  # (lorasp's: line-buffered, UTF-8 where ASCII fails, a reader gone outlived)
    console()
    main()
