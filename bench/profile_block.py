"""Where a 7B step's time goes: one llama2-7b-shaped block (vocabulary 512), NF4 base + LoRA-SP r=16 on the seven
projections, activation checkpointing MODE, bf16 autocast, one sequence of T tokens. Prints torch.profiler's table of
one training step, then the block's matmul floor: the same bf16 matmuls alone (forward and input gradient; `full`
also replays the forward).

    python bench/profile_block.py --threads 1          # ~1 minute
"""
import argparse
import os
import sys
import time

import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lorasp import apply_lorasp  # noqa: E402
from model import LlamaConfig, build_model  # noqa: E402
from quant import NF4Linear  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def block_model(mode):
    c = LlamaConfig(vocab_size=512, n_layer=1, n_embd=4096, n_head=32, n_kv_head=32, n_ffn=11008)
    m = build_model(c)
    for name, parent in list(m.named_modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and ".layers." in f".{name}.":
                setattr(parent, child_name, NF4Linear.from_linear(child))
    apply_lorasp(m, TARGETS)
    for n, p in m.named_parameters():
        p.requires_grad = "_train" in n          # the adapters only, as train.py
    m.checkpointing = mode
    return m


def floor_s(T, replay):
    """Seconds of the block's seven bf16 matmuls, forward and input gradient (x 1.5 with a replayed forward)."""
    shapes = [(4096, 4096)] * 4 + [(11008, 4096)] * 2 + [(4096, 11008)]
    W = [torch.randn(o, i, dtype=torch.bfloat16) for o, i in shapes]
    x = {n: torch.randn(T, n, dtype=torch.bfloat16) for n in (4096, 11008)}

    def run():
        for w in W:
            (x[w.shape[1]] @ w.T) @ w
    run()
    t = time.perf_counter()
    run()
    return (time.perf_counter() - t) * (1.5 if replay else 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpointing", default="full", choices=["none", "selective", "full"])
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    m, ids = block_model(args.checkpointing), torch.randint(0, 512, (1, args.seq))

    def step():
        with torch.autocast("cpu", torch.bfloat16):
            loss = m(ids, labels=ids)
        loss.backward()
    step()
    t = time.perf_counter()
    step()
    print(f"one step: {time.perf_counter() - t:.2f} s ({args.threads} threads)")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print(f"matmul floor: {floor_s(args.seq, args.checkpointing == 'full'):.2f} s")


if __name__ == "__main__":
    main()
