"""How much NF4 moves the loss, and how much it should: the same batches scored with the dense bf16 base, with the
NF4 base, and with the dense base plus Gaussian noise of each weight's own NF4 error RMS (three draws).

    python bench/nf4_loss.py --model /tmp/b7tiny/model --data /tmp/b7tiny/alpaca.json   # bench_7b's files

If NF4's change of the loss is of the size the matched noise gives, the NF4 path computes what it should (a wrong
dequantization, a scale off by a block, moves the loss by far more). Forward only, no adapter, bf16 autocast, the
first --records records of an Alpaca-format file cut at --seq-len. bench_7b.py writes such a model and file
(`--preset tinyllama-1.1b --dir /tmp/b7tiny --keep`); 2 threads, a few minutes at the 1.1B shape.
"""
import argparse
import json
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data import tokenize_records  # noqa: E402
from model import load_pretrained  # noqa: E402
from quant import quantize_nf4  # noqa: E402
from tokenizer import load_tokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--records", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--draws", type=int, default=3)
    args = ap.parse_args()
    examples, _ = tokenize_records(json.load(open(args.data))[:args.records], load_tokenizer(args.model), args.seq_len)
    batches = [(torch.tensor([e["input_ids"]]), torch.tensor([e["labels"]])) for e in examples]

    def losses(m):
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
            return [m(i, labels=t).item() for i, t in batches]

    model = load_pretrained(args.model, None, torch.bfloat16)
    linears = [m for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in n]
    dense, rows = [w.weight.data for w in linears], {}
    rows["dense bf16"] = losses(model)
    rms = []
    for m, w in zip(linears, dense):
        q = quantize_nf4(w).dequantize(torch.float32)
        rms.append((q - w.float()).pow(2).mean().sqrt())
        m.weight.data = q.to(torch.bfloat16)
    rows["NF4"] = losses(model)
    for d in range(args.draws):
        g = torch.Generator().manual_seed(d)
        for m, w, r in zip(linears, dense, rms):
            m.weight.data = (w.float() + r * torch.randn(w.shape, generator=g)).to(torch.bfloat16)
        rows[f"noise of NF4's RMS, draw {d}"] = losses(model)
    print("| weights | loss per record | change against dense |\n|---|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {' '.join(f'{x:.4f}' for x in v)} | "
              f"{' '.join(f'{a - b:+.4f}' for a, b in zip(v, rows['dense bf16']))} |")


if __name__ == "__main__":
    main()
