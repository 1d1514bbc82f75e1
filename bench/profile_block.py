"""Where a 7B step's time goes: one llama2-7b-shaped block (vocabulary 512), NF4 base + LoRA-SP r=16 on the seven
projections, activation checkpointing MODE, bf16 autocast, one sequence of T tokens. Prints torch.profiler's table of
one training step, then the block's matmul floor: the same bf16 matmuls alone (forward and input gradient; `full`
also replays the forward).

    python bench/profile_block.py --threads 1          # ~1 minute
    python bench/profile_block.py --who peft-bnb       # the same block in transformers + peft + bitsandbytes NF4
                                                       # (double quantization, gradient checkpointing): the peer
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


def block_model(mode, layers=1):
    c = LlamaConfig(vocab_size=512, n_layer=layers, n_embd=4096, n_head=32, n_kv_head=32, n_ffn=11008)
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


def peft_bnb_block():
    """The same block as transformers' LlamaForCausalLM, NF4 by bitsandbytes on load (bench_7b's peft-bnb config),
    peft LoRA r=16 on the seven projections, gradient checkpointing; a step returns the loss."""
    import tempfile

    from peft import LoraConfig, get_peft_model
    from transformers import BitsAndBytesConfig, LlamaConfig as HFConfig, LlamaForCausalLM
    with tempfile.TemporaryDirectory() as d:  # bitsandbytes quantizes in from_pretrained, so write a checkpoint first
        LlamaForCausalLM(HFConfig(vocab_size=512, hidden_size=4096, intermediate_size=11008, num_hidden_layers=1,
                                  num_attention_heads=32, num_key_value_heads=32)).to(torch.bfloat16).save_pretrained(d)
        hf = LlamaForCausalLM.from_pretrained(d, use_cache=False, torch_dtype=torch.bfloat16, quantization_config=(
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)))
    net = get_peft_model(hf, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS))
    net.gradient_checkpointing_enable()
    net.train()
    return lambda ids: net(input_ids=ids, labels=ids).loss


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
    ap.add_argument("--steps", type=int, default=5, help="timed steps after a warm-up one (a 2-core VM's steps vary "
                    "by 20%%: one step is not a figure)")
    ap.add_argument("--layers", type=int, default=1, help="blocks in the model (ours): one block alone flatters "
                    "what competes for the cache (see quant_torch.CHUNK)")
    ap.add_argument("--log2-chunk", type=int, help="quant_torch.CHUNK = 2^N for this run (values per dequantize step)")
    ap.add_argument("--who", default="ours", choices=["ours", "peft-bnb"], help="our block, or the peer's (its "
                    "checkpointing is always full)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ids = torch.randint(0, 512, (1, args.seq))
    if args.log2_chunk:
        import quant_torch
        quant_torch.CHUNK = 1 << args.log2_chunk
    if args.who == "ours":
        m = block_model(args.checkpointing, args.layers)
        loss_of = lambda ids: m(ids, labels=ids)  # noqa: E731
    else:
        loss_of = peft_bnb_block()

    def step():
        with torch.autocast("cpu", torch.bfloat16):
            loss = loss_of(ids)
        loss.backward()
    step()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    print(f"one step: {sorted(times)[len(times) // 2]:.2f} s, the median of {args.steps} ("
          + ", ".join(f"{x:.2f}" for x in times) + f"; {args.threads} threads, {args.who}, {args.layers} block(s))")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print(f"matmul floor: {args.layers * floor_s(args.seq, args.who != 'ours' or args.checkpointing == 'full'):.2f} s")


if __name__ == "__main__":
    main()
