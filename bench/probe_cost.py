"""What adapter.weights_probe costs at a save, at llama2-7b's width: a 2-layer Llama of 7B's shapes (the probe reads
the first and last layer of each kind, so at 32 layers the same tensors), random weights, bf16 or NF4, LoRA-SP r=16 on
the seven projections; three saves' probes timed in a row (CPU and wall seconds), then its parts once each.

    python bench/probe_cost.py --quant nf4 --threads 1           # ~1 minute, 3 GB of memory
    python bench/probe_cost.py --src OTHER_CHECKOUT ...          # another checkout's adapter.py (before/after)
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quant", choices=["none", "nf4"], default="nf4")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--src", default=ROOT, help="the checkout whose adapter.py, model.py, ... run")
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.src))
    import torch

    import adapter
    from lorasp import LINEAR_TYPES, LoRASPLinear, apply_lorasp
    from model import LlamaConfig, build_model
    from quant import NF4Linear
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(LlamaConfig(n_layer=2, n_embd=4096, n_head=32, n_kv_head=32, n_ffn=11008, vocab_size=32000))
    model = model.to(torch.bfloat16)
    targets = "q_proj k_proj v_proj o_proj gate_proj up_proj down_proj".split()
    for m in list(model.modules()) if args.quant == "nf4" else []:
        for k, c in list(m.named_children()):
            if k in targets:
                setattr(m, k, NF4Linear.from_linear(c))
    apply_lorasp(model, targets, 16, 32, 0.5)
    for save in (1, 2, 3):
        cpu, wall = time.process_time(), time.time()
        adapter.weights_probe(model, LoRASPLinear, LINEAR_TYPES)
        print(f"save {save}: weights_probe {time.process_time() - cpu:.2f} s CPU, {time.time() - wall:.2f} s wall "
              f"({args.quant}, {torch.get_num_threads()} thread(s), {os.path.abspath(args.src)})", flush=True)
    adapted, rest = adapter.probed(model, LoRASPLinear, LINEAR_TYPES)
    for part, run in [("the base's W v sums", lambda: adapter._adapted_sums(adapted)),
                      (f"the other {len(rest)} tensors' sums and norms", lambda: [adapter._rest_sums(n, t)
                                                                                 for n, t in rest.items()]),
                      ("the update's sums", lambda: adapter._adapted_sums(adapted, update=True))]:
        cpu = time.process_time()
        run()
        print(f"  {part}: {time.process_time() - cpu:.2f} s CPU")


if __name__ == "__main__":
    main()
