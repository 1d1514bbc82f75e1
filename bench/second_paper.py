"""The second paper's comparisons as commands (De Castro Lopo, "Efficient Fine-Tuning Strategies for Large Language
Models Using Low-Rank Adaptation Techniques"): full fine-tuning vs LoRA vs LoRA-SP on BERT-base SST-2, and its rank
ablation, through the real train.py (every command printed, one results file per run: a rerun skips what is done).

    python bench/second_paper.py compare --toy --seeds 0 1 2   # FT / LoRA / LoRA-SP side by side, ~2 minutes a seed
    python bench/second_paper.py ranks --toy --seeds 0 1 2     # r = 1 .. 64 for LoRA and LoRA-SP: a table, ranks.svg
    python bench/second_paper.py compare --model bert-base-uncased --download   # the real one: GLUE's SST-2

The paper's setting: batch 16, lr 2e-5, r=8, AdamW, early stopping on dev accuracy (here: --patience 2 evaluations,
one every half epoch, the best weights kept), 3 epochs at most; accuracy and F1 (of label 1) on the dev set, wall
time, peak memory (train.py's: the process's peak RSS on CPU, max allocated on CUDA), trainable parameters.
--toy: bench/toy_glue.py's generated SST-2 (2000 train / 400 dev sentences, one sentiment word decides) and its
tiny RoBERTa (4 layers, width 128, masked-LM pretrained on the toy's four tasks; a tiny BERT pretrained on the SST-2
sentences alone learned nothing past their word frequencies, and LoRA on it stayed at chance); learning rates are
the toy's (full 1e-3, adapters 3e-3; at 1e-2 both collapsed to one class; the paper's 2e-5 is for bert-base on 67k
sentences).
--seeds S ...: one table per seed, then each cell's mean and spread (min-max); seed S is the run's (train.py --seed
S: data order, LoRA-SP masks, dropout) and, with --toy, the toy's (toy_glue.py --seed S: data, initialisation,
masked-LM pretraining, one thread), in OUT/seedS. With --toy every run has one CPU thread (OMP_NUM_THREADS=1,
--threads 1 unless given), so no sum depends on the machine's core count, and on the CPU in fp32 (--device cpu
--dtype fp32: train.py's defaults would pick CUDA on a machine with a GPU, bf16 autocast on a CPU with bf16 units).
"""
import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import data  # noqa: E402
import eval as E  # noqa: E402
import plot  # noqa: E402

RANKS = [1, 2, 4, 8, 16, 32, 64]
TOY_LR = {"full": "1e-3", "lora": "3e-3", "lorasp": "3e-3"}


def make_toy(out, seed):
    """bench/toy_glue.py's tasks and tiny RoBERTa, made once in OUT; returns (model dir, glue dir)."""
    if not os.path.exists(os.path.join(out, "roberta", "model.safetensors")):
        argv = [sys.executable, "bench/toy_glue.py", "--out", out, "--seed", str(seed), "--threads", "1"]
        print("$ " + " ".join(shlex.quote(a) for a in argv), flush=True)
        subprocess.run(argv, cwd=ROOT, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return os.path.join(out, "roberta"), os.path.join(out, "glue")


def train_run(out, name, model, glue, method, rank, lr, args):
    """One train.py run (skipped when OUT/runs/NAME/result.json exists): its summary, wall time, dev accuracy and F1."""
    run_dir = os.path.join(out, "runs", name)
    result = os.path.join(run_dir, "result.json")
    if os.path.exists(result):
        with open(result) as f:
            return json.load(f)
    steps = math.ceil(args.train_size / 16)
    argv = [sys.executable, "train.py", "--model", model, "--data", "glue/sst2", "--out", run_dir, "--method", method,
            "--rank", str(rank), "--alpha", str(2 * rank), "--lr", lr, "--batch-size", "16", "--grad-accum", "1",
            "--seq-len", "128", "--epochs", str(args.epochs), "--patience", "2", "--eval-every", str(steps // 2),
            "--log-every", str(steps // 2), "--save-every", "0", *(["--data-dir", glue] if glue else []),
            *(["--download"] if args.download else []), *(["--threads", str(args.threads)] if args.threads else []),
            "--seed", str(args.seed), *(["--device", "cpu", "--dtype", "fp32"] if args.toy else [])]
    print("$ " + " ".join(shlex.quote(a) for a in argv), flush=True)
    t = time.time()
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1") if args.toy else None)
    if p.returncode:
        sys.exit(p.stdout[-3000:] + p.stderr[-3000:])
    s = json.loads(p.stdout.strip().split("\n")[-1])
    s["wall_s"], s["dev_f1"] = time.time() - t, dev_f1(model, glue, run_dir, method)
    with open(result, "w") as f:
        json.dump(s, f)
    return s


def dev_f1(model, glue, run_dir, method):
    """F1 of label 1 on SST-2's dev set, of the weights the run kept (train.py reports accuracy only for SST-2)."""
    adapter = None if method == "full" else os.path.join(run_dir, "adapter")
    base = os.path.join(run_dir, "model") if method == "full" else model
    net, tok = E.load_model(base, adapter, E.base_quant(base, adapter, "auto", "glue/sst2"), num_labels=2)  # as trained
    dev = data.glue_examples("sst2", tok, 128, glue)[1]["dev"]
    pred = {}
    with torch.no_grad():
        for rows, b in data.sorted_batches(dev, 64, net.config.pad_id):
            pred.update(zip(rows, net.classify(b["input_ids"], b["attention_mask"], b["token_type_ids"]).argmax(1)
                            .tolist()))
    return 100 * E.f1([pred[i] for i in range(len(dev))], [e["labels"] for e in dev])


def compare(args, model, glue):
    rows, values = [], {}
    for method in ("full", "lora", "lorasp"):
        lr = TOY_LR[method] if args.toy else "2e-5"
        s = train_run(args.out, f"{method}-r8", model, glue, method, 8, lr, args)
        values[f"{method} | {lr}"] = dict(accuracy=s["dev"]["accuracy"], f1=s["dev_f1"], kept=s["evaluated_step"],
                                          steps=s["steps"], trainable=s["trainable_params"])
        rows.append(f"| {method} | {lr} | {s['dev']['accuracy']:.1f} | {s['dev_f1']:.1f} | {s['evaluated_step']} / "
                    f"{s['steps']} | {s['wall_s']:.0f} s | {s['peak_mem_mib']:,.0f} MiB | {s['trainable_params']:,} |")
    print("\n| method | lr | dev accuracy | dev F1 | kept step / steps run | wall | peak memory | trainable |\n"
          "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |\n" + "\n".join(rows) + "\n", flush=True)
    return values


def ranks(args, model, glue):
    table, values = [], {}
    for method in ("lora", "lorasp"):
        for r in RANKS:
            s = train_run(args.out, f"{method}-r{r}", model, glue, method, r, TOY_LR[method] if args.toy else "2e-5",
                          args)
            values[f"{method} | {r}"] = dict(accuracy=s["dev"]["accuracy"], f1=s["dev_f1"],
                                             trainable=s["trainable_params"])
            table.append(f"| {method} | {r} | {s['dev']['accuracy']:.1f} | {s['dev_f1']:.1f} | "
                         f"{s['trainable_params']:,} | {s['wall_s']:.0f} s |")
    print("\n| method | r | dev accuracy | dev F1 | trainable (adapter + head) | wall |\n| --- | ---: | ---: | ---: | "
          "---: | ---: |\n" + "\n".join(table) + "\n", flush=True)
    return values


def spread(values):
    """'mean (min-max)' over the seeds; the value alone for one seed."""
    mean = sum(values) / len(values)
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ({min(values):.1f}-{max(values):.1f})"


def over_seeds(experiment, per_seed, out):
    """The table over seeds (each cell: mean (min-max)), the per-seed values in OUT/<experiment>-seeds.json, and for
    ranks the SVG of the mean accuracy against r."""
    seeds = sorted(per_seed)
    with open(os.path.join(out, f"{experiment}-seeds.json"), "w") as f:
        json.dump({str(s): per_seed[s] for s in seeds}, f, indent=1)
    first, lines = per_seed[seeds[0]], []
    for row in first:
        acc, f1 = ([per_seed[s][row][k] for s in seeds] for k in ("accuracy", "f1"))
        print(f"  {row.replace(' | ', ' ')}: accuracy " + ", ".join(f"seed {s} {a:.2f}" for s, a in zip(seeds, acc)))
        kept = " / ".join(f"{per_seed[s][row]['kept']}:{per_seed[s][row]['steps']}" for s in seeds) \
            if experiment == "compare" else None
        lines.append(f"| {row} | {spread(acc)} | {spread(f1)} | " + (f"{kept} | " if kept else "")
                     + f"{first[row]['trainable']:,} |")
    head = ("| method | lr | dev accuracy | dev F1 | kept step:steps run, per seed | trainable |"
            if experiment == "compare" else "| method | r | dev accuracy | dev F1 | trainable (adapter + head) |")
    print(f"\n{experiment}, seeds {' '.join(map(str, seeds))}: mean (min-max) of each cell\n{head}\n"
          + "| --- " * head.count(" | ") + "| --- |\n" + "\n".join(lines) + "\n", flush=True)
    if experiment == "ranks":
        curves = {}
        for row in first:
            method, r = row.split(" | ")
            curves.setdefault(method, []).append((int(r), sum(per_seed[s][row]["accuracy"] for s in seeds)
                                                  / len(seeds)))
        svg = os.path.join(out, "ranks.svg")
        with open(svg, "w") as f:
            f.write(rank_svg(curves))
        print(f"wrote {svg} (mean dev accuracy over seeds {' '.join(map(str, seeds))})")


def rank_svg(curves, W=560, H=340, L=60, R=110, T=20, B=45):
    """Dev accuracy against r (log2 axis), one polyline and dots per method, round ticks (plot.ticks), hand-written."""
    xs = sorted({r for pts in curves.values() for r, _ in pts})
    ys = plot.ticks(min(a for p in curves.values() for _, a in p), max(a for p in curves.values() for _, a in p))
    sx = lambda r: L + (math.log2(r) - math.log2(xs[0])) / max(math.log2(xs[-1] / xs[0]), 1) * (W - L - R)  # noqa
    sy = lambda a: H - B - (a - ys[0]) / max(ys[-1] - ys[0], 1e-9) * (H - T - B)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
           f'font-size="12"><rect width="{W}" height="{H}" fill="white"/>']
    out += [f'<line x1="{sx(r):.1f}" y1="{T}" x2="{sx(r):.1f}" y2="{H - B}" stroke="#ddd"/><text x="{sx(r):.1f}" '
            f'y="{H - B + 16}" text-anchor="middle">{r}</text>' for r in xs]
    out += [f'<line x1="{L}" y1="{sy(y):.1f}" x2="{W - R}" y2="{sy(y):.1f}" stroke="#ddd"/><text x="{L - 6}" '
            f'y="{sy(y) + 4:.1f}" text-anchor="end">{y:g}</text>' for y in ys]
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - 8}" text-anchor="middle">rank r</text><text x="{L - 40}" '
               f'y="{T - 6}">dev accuracy</text>')
    for i, (method, pts) in enumerate(curves.items()):
        c = plot.COLORS[i]
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="'
                   + " ".join(f"{sx(r):.1f},{sy(a):.1f}" for r, a in pts) + '"/>')
        out += [f'<circle cx="{sx(r):.1f}" cy="{sy(a):.1f}" r="3" fill="{c}"/>' for r, a in pts]
        out.append(f'<line x1="{W - R + 12}" y1="{T + 10 + 20 * i}" x2="{W - R + 36}" y2="{T + 10 + 20 * i}" '
                   f'stroke="{c}" stroke-width="2"/><text x="{W - R + 42}" y="{T + 14 + 20 * i}">{method}</text>')
    return "\n".join(out + ["</svg>\n"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("experiment", choices=["compare", "ranks"])
    ap.add_argument("--toy", action=argparse.BooleanOptionalAction, default=False, help="generated SST-2, tiny RoBERTa")
    ap.add_argument("--model", default="bert-base-uncased", help="preset or directory (without --toy)")
    ap.add_argument("--data-dir", help="a glue_data/ folder (default: GLUE's SST-2, downloaded into the cache)")
    ap.add_argument("--download", action=argparse.BooleanOptionalAction, default=False, help="fetch preset weights")
    ap.add_argument("--epochs", type=float, default=3, help="at most (early stopping may end sooner)")
    ap.add_argument("--threads", type=int, help="torch threads per run (--toy: 1 unless given)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="a table per seed, then each cell's mean "
                    "and spread (min-max)")
    ap.add_argument("--out", default="second_paper", help="seedS/runs/<method>-r<rank>/ (result.json: done), "
                    "ranks.svg")
    args = ap.parse_args()
    args.train_size = 2000 if args.toy else 67349  # SST-2's training sentences
    args.threads = args.threads or (1 if args.toy else None)
    per_seed, root = {}, args.out
    for seed in args.seeds:
        args.seed, args.out = seed, os.path.join(root, f"seed{seed}")
        model, glue = make_toy(os.path.join(args.out, "toyglue"), seed) if args.toy else (args.model, args.data_dir)
        print(f"seed {seed}:", flush=True)
        per_seed[seed] = (compare if args.experiment == "compare" else ranks)(args, model, glue)
    over_seeds(args.experiment, per_seed, root)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from checks import console  # (lorasp's: line-buffered, UTF-8 where ASCII fails, a reader gone outlived)
    console()
    main()
