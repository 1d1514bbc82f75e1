"""DDP under torchrun: bytes all-reduced per step (measured), and the memory arithmetic of one NF4 replica per GPU.

    python bench/bench_ddp.py                   # both: the table (llama2-7b/13b/70b) and a 2-process gloo run
    python bench/bench_ddp.py --shape llama-tiny --skip-memory

1. Memory per GPU (computed from the presets' shapes, nothing run): the NF4 base (4 bits a weight + one 8-bit absmax
   per 64, one fp32 per 256 blocks: quant.py's layout, 4.127 bits), bf16 embeddings / LM head / norms, the adapter
   (fp32 packed entries + gradients + AdamW's two moments, 16 bytes an entry, plus one bool mask byte per LoRA
   entry), and an activation estimate under full checkpointing: every block's bf16 input kept, one block's working
   set at a time in backward (~10 C + 4 n_ffn bf16 values a token) and one dequantized bf16 weight.
2. Measured: `python -m torch.distributed.run --standalone --nproc_per_node 2 train.py` on CPU (gloo) on a randomly
   initialised Llama of --shape (vocab cut to a small sentencepiece tokenizer), NF4 base, selective checkpointing,
   --method lora then lorasp: train.py's summary reports the bytes DDP's comm hook was handed per step.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import replace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import data  # noqa: E402
from model import build_model, get_config, load_tokenizer, save_pretrained  # noqa: E402
from train import TARGETS  # noqa: E402

GB = 1e9


def nf4_bytes(n, block=64, block2=256):
    """quant.py's NF4 with double quantization: codes, 8-bit absmax per block, fp32 per 256 blocks, fp32 offset."""
    blocks = math.ceil(n / block)
    return math.ceil(n / 2) + blocks + 4 * math.ceil(blocks / block2) + 4


def memory(name, r=16, keep=0.5, batch=4, T=512):
    c = get_config(name)
    with torch.device("meta"):
        m = build_model(c)
    targets = TARGETS["llama"].split(",")
    lin = [mod for n, mod in m.named_modules() if isinstance(mod, nn.Linear) and n.rsplit(".", 1)[-1] in targets]
    quantized = {id(mod.weight) for mod in lin}
    base = sum(nf4_bytes(mod.weight.numel()) for mod in lin)
    dense = 2 * sum(p.numel() for p in m.parameters() if id(p) not in quantized)   # embeddings, head, norms: bf16
    lora = sum(r * (mod.in_features + mod.out_features) for mod in lin)
    sp = sum(round(keep * r * mod.in_features) + round(keep * mod.out_features * r) for mod in lin)
    acts = 2 * batch * T * (c.n_layer * c.n_embd + 10 * c.n_embd + 4 * c.n_ffn) + 2 * max(
        mod.weight.numel() for mod in lin)
    weights = sum(mod.weight.numel() for mod in lin) + dense // 2
    return dict(name=name, params=weights, nf4=base, dense=dense, lorasp=16 * sp + lora, lora=16 * lora, acts=acts,
                bf16=2 * weights, lorasp_allreduce=4 * sp, lora_allreduce=4 * lora)


def measure(shape, steps, tmp):
    """Bytes all-reduced per step by 2 processes (gloo) for lora and lorasp; returns the two summaries."""
    d = os.path.join(tmp, "model")
    os.makedirs(d)
    data.train_sentencepiece(data.demo_corpus(300) + list(data.PROMPT_DICT.values()) * 5,
                             os.path.join(d, "tokenizer.model"), 200, byte_fallback=False)
    torch.manual_seed(0)
    save_pretrained(build_model(replace(get_config(shape), vocab_size=load_tokenizer(d).vocab_size)), d)
    with open(os.path.join(tmp, "task.json"), "w") as f:
        json.dump(data.demo_records(40, seed=1), f)
    out = {}
    for method in ("lora", "lorasp"):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               os.path.join(ROOT, "train.py"), "--model", d, "--data", os.path.join(tmp, "task.json"), "--method",
               method,
               "--quant", "nf4", "--checkpointing", "selective", "--batch-size", "2", "--grad-accum", "2", "--seq-len",
               "128", "--max-steps", str(steps), "--val-fraction", "0", "--log-every", "1", "--out",
               os.path.join(tmp, method)]
        run = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        if run.returncode:
            sys.exit(run.stderr[-3000:])
        print("\n".join(line for line in run.stdout.split("\n") if line.startswith(("DDP", method))))
        out[method] = json.loads(run.stdout.strip().split("\n")[-1])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="smollm2-135m", help="preset whose shape the measured run uses")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--skip-memory", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--skip-measure", action=argparse.BooleanOptionalAction, default=False)
    args = p.parse_args()
    if not args.skip_memory:
        print("per GPU, one NF4 replica (r=16 on the 7 projections, keep=0.5; batch 4 x 512 tokens, full "
              "checkpointing)")
        print(f"{'preset':<11} {'params':>7} {'NF4 base':>9} {'bf16 emb+head':>13} {'LoRA-SP+AdamW':>13} "
              f"{'LoRA+AdamW':>10} {'activations':>11} {'total':>6} {'bf16 base':>9} {'all-reduce/step SP|LoRA':>24}")
        for name in ("llama2-7b", "llama2-13b", "llama2-70b"):
            m = memory(name)
            total = m["nf4"] + m["dense"] + m["lorasp"] + m["acts"]
            print(f"{name:<11} {m['params'] / 1e9:>6.1f}B {m['nf4'] / GB:>7.1f}GB {m['dense'] / GB:>11.2f}GB "
                  f"{m['lorasp'] / GB:>11.2f}GB {m['lora'] / GB:>8.2f}GB {m['acts'] / GB:>9.2f}GB {total / GB:>4.1f}GB "
                  f"{m['bf16'] / GB:>7.1f}GB {m['lorasp_allreduce'] / 2**20:>9.0f} MiB | "
                  f"{m['lora_allreduce'] / 2**20:.0f} MiB")
    if not args.skip_measure:
        with tempfile.TemporaryDirectory() as tmp:
            s = measure(args.shape, args.steps, tmp)
        sp, lora = (s[m]["allreduce_bytes_per_step"] for m in ("lorasp", "lora"))
        print(f"{args.shape} shape, 2 processes (gloo, CPU): all-reduced per step LoRA-SP {sp:,} bytes, LoRA {lora:,} "
              f"bytes; ratio {sp / lora:.4f}; 4 x trainable: {4 * s['lorasp']['trainable_params']:,} / "
              f"{4 * s['lora']['trainable_params']:,}")


if __name__ == "__main__":
    main()
