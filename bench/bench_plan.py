"""The memory plan (plan.py) beside the measured peak: train.py runs in child processes, one per setting, on a small
Llama written here (random weights, the demo's tokenizer and text); each prints its plan and, last, its peak resident
memory (ru_maxrss = VmHWM). Two children at a time (one thread each).

    python bench/bench_plan.py                                       # width 256, 8 layers, 4 x 512 tokens
    python bench/bench_plan.py --dtype fp32
    python bench/bench_plan.py --width 512 --layers 8 --vocab 32000 --batch-size 8 --seq-len 512
    python bench/bench_plan.py --configs lorasp:none:none lorasp:nf4:full full:none:selective

A setting is METHOD:QUANT:CHECKPOINTING. Prints one row per setting (planned, measured, error) and, last, a JSON line.
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import data  # noqa: E402
from model import LlamaConfig, build_model, save_pretrained  # noqa: E402

GRID = [f"{m}:{q}:{c}" for m in ("lorasp", "lora", "full") for q in ("none", "nf4")
        for c in ("none", "selective", "full") if not (m == "full" and q == "nf4")]


def small_llama(directory, width, layers, vocab):
    """A random Llama of this shape with the demo's tokenizer, and a text corpus; returns the corpus's path."""
    corpus = data.demo_files(directory, 600, 200)
    torch.manual_seed(0)
    save_pretrained(build_model(LlamaConfig(vocab_size=vocab, n_layer=layers, n_embd=width, n_head=width // 64 or 1,
                                            n_kv_head=width // 128 or 1, n_ffn=width * 8 // 3 // 8 * 8)), directory)
    return corpus


def run(setting, model, corpus, flags, out):
    """train.py with one setting for 2 steps: (planned MiB, measured peak MiB), or the error's last line."""
    method, quant, checkpointing = setting.split(":")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--model", model, "--data", corpus, "--method",
                        method, "--quant", quant, "--checkpointing", checkpointing, "--grad-accum", "1", "--max-steps",
                        "2", "--val-fraction", "0", "--save-every", "0", "--threads", "1", "--out", out, *flags],
                       capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if p.returncode:
        return (p.stderr.strip() or p.stdout.strip()).splitlines()[-1]
    s = json.loads(p.stdout.strip().splitlines()[-1])
    return s["planned_mem_mib"], s["peak_mem_mib"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--configs", nargs="+", default=GRID, metavar="M:Q:C")
    ap.add_argument("--parallel", type=int, default=2, help="children at a time")
    ap.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"], help="train.py's --dtype")
    args = ap.parse_args()
    flags = ["--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len), "--dtype", args.dtype]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = small_llama(tmp, args.width, args.layers, args.vocab)
        print(f"Llama width {args.width}, {args.layers} layers, vocab {args.vocab}; {args.batch_size} x {args.seq_len} "
              f"tokens, --dtype {args.dtype} on CPU (auto: bf16 where the CPU has bf16 units)")
        with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
            results = dict(zip(args.configs, pool.map(lambda c: run(c, tmp, corpus, flags, os.path.join(tmp, c)),
                                                      args.configs)))
    print(f"{'setting':24s} {'planned':>9s} {'measured':>9s} {'error':>7s}")
    for c, r in results.items():
        print(f"{c:24s} " + (f"{r[0]:7.0f} M {r[1]:7.0f} M {100 * (r[0] / r[1] - 1):+6.1f}%" if isinstance(r, tuple)
                             else r))
    print(json.dumps({c: r for c, r in results.items()}))


if __name__ == "__main__":
    main()
