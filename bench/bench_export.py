"""export.py at full size: time and peak resident memory of merging a llama2-7b-shaped adapter into its base.

    python bench/bench_export.py --dir /tmp/export-7b --dtypes bf16 fp32             # ~13.5 GB written, then deleted
    git show c101d34:export.py > /tmp/old/export.py             # before each shard's header was written first
    python bench/bench_export.py --dir /tmp/export-7b --dtypes bf16 --export /tmp/old/export.py --keep

Writes bench_7b.py's random llama2-7b-shaped bf16 checkpoint (bench_cli.write_fixture: shards + index + a
sentencepiece tokenizer) and a stand-in for a trained adapter: LoRA-SP r=16 on all seven projections (keep 0.5),
built by apply_lorasp on the model built on the meta device (each target linear given a zero-stride CPU weight:
LoRASPLinear keeps its masks where the base weight is, and nothing reads its values), its A and B entries drawn
N(0, 0.02) (B != 0, as after training), written by save_adapter: the files and the merge a train.py run's adapter
gives, without minutes of a 7B training step. Then, per --dtypes, `nice -n 10 python EXPORT --model ... --adapter ...
--out DIR/out --dtype D` in a fresh process: its wall time and peak RSS (os.wait4's ru_maxrss, as /usr/bin/time
reads it); the output is deleted after each. Space: the checkpoint, the output and export.py's scratch (the base in
the dtype it loads in: fp32 for --dtype fp32): ~68 GB for fp32.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

from bench_cli import write_fixture
from children import GiB

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def write_adapter(preset, out):
    """The stand-in adapter (see the docstring), in this process (run as a child: torch stays out of the parent)."""
    sys.path.insert(0, ROOT)
    import torch
    import torch.nn as nn

    from lorasp import apply_lorasp, save_adapter
    from model import build_model, get_config
    with torch.device("meta"):
        model = build_model(get_config(preset))
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear) and n.rpartition(".")[2] in TARGETS:
            m.weight = nn.Parameter(torch.zeros((), dtype=torch.bfloat16).expand(m.out_features, m.in_features), False)
    model = apply_lorasp(model, TARGETS, r=16, alpha=32, keep=0.5)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    save_adapter(model, out, base_model_name_or_path=preset)


def run_export(export_py, model_dir, adapter, out, dtype):
    """(wall seconds, peak RSS bytes, the last line it printed) of one export in a fresh, nice'd process."""
    env = dict(os.environ, PYTHONPATH=ROOT)                   # (a copy of an old export.py imports this tree)
    t0 = time.perf_counter()
    p = subprocess.Popen(["nice", "-n", "10", sys.executable, export_py, "--model", model_dir, "--adapter", adapter,
                          "--out", out, "--dtype", dtype], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    text = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    last = (text.strip().splitlines() or ["(nothing)"])[-1]
    return time.perf_counter() - t0, usage.ru_maxrss * 1024, p.returncode, last[:200]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/tmp/lorasp-export-7b", help="where the checkpoint and the adapter go")
    ap.add_argument("--preset", default="llama2-7b", help="the shape (a smaller one: a dry run of this script)")
    ap.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--export", default=os.path.join(ROOT, "export.py"), help="the export.py to run")
    ap.add_argument("--keep", action="store_true", help="keep (and reuse) the checkpoint and adapter in --dir")
    ap.add_argument("--adapter-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.adapter_child:
        return write_adapter(*args.adapter_child)
    model_dir, _ = write_fixture(args.dir, args.preset, records=8)
    adapter = os.path.join(args.dir, "adapter")
    if not os.path.exists(os.path.join(adapter, "adapter_config.json")):
        subprocess.run([sys.executable, os.path.abspath(__file__), "--adapter-child", args.preset, adapter], check=True)
    size = sum(os.path.getsize(os.path.join(model_dir, f)) for f in os.listdir(model_dir))
    print(f"{args.preset}: {size / 1e9:.1f} GB checkpoint; running {args.export}", flush=True)
    try:
        for dtype in args.dtypes:
            out = os.path.join(args.dir, "out")
            wall, peak, rc, last = run_export(args.export, model_dir, adapter, out, dtype)
            written = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)) if rc == 0 else 0
            print(f"| --dtype {dtype} | {wall:.0f} s | {peak / GiB:.2f} GiB | {written / 1e9:.1f} GB | "
                  f"{'ok' if rc == 0 else f'exit {rc}: {last}'} |", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.dir)


if __name__ == "__main__":
    main()
