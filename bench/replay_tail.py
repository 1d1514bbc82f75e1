"""What skipping the tail's frozen matmul in a full-checkpointing replay saves (recompute.tail), measured in one
process: training steps of the same model alternate between the skip on and off (model.tail replaced by a plain call),
so the machine's drift hits both alike; prints each pair and the median ratio.

    python bench/replay_tail.py                          # 134M Llama (bench_train's shape), 4 x 256, NF4, 1 thread
    python bench/replay_tail.py --quant none --pairs 8 --threads 2
    python bench/replay_tail.py --width 7b --layers 4 --batch 1 --seq 512 --bf16 --threads 2   # llama2-7b's blocks
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quant", choices=["nf4", "none"], default="nf4")
    ap.add_argument("--pairs", type=int, default=6, help="timed (on, off) step pairs, after one warm-up pair")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--width", choices=["134m", "7b"], default="134m", help="the blocks' shape: bench_train's 134M "
                    "Llama, or llama2-7b's (4096 wide, SwiGLU 11008, 32 heads)")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--bf16", action="store_true", help="bf16 base and autocast, as train.py's --dtype bf16")
    args = ap.parse_args()
    import torch

    import checkpoint as C
    import model as M
    from bench_train import SHAPE, TARGETS
    from gpu_check import random_stream
    from lorasp import apply_lorasp
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    shape = SHAPE if args.width == "134m" else dict(SHAPE, n_embd=4096, n_head=32, n_kv_head=32, n_ffn=11008)
    cfg = M.LlamaConfig(**dict(shape, n_layer=args.layers))
    with torch.device("meta"):
        net = M.build_model(cfg)
    stream = random_stream(net, "cpu", torch.Generator().manual_seed(0))  # gpu_check's: N(0, 0.02) in bf16, norms 1
    net = C.fill(net, stream, torch.bfloat16 if args.bf16 else torch.float32,
                 quantize=args.quant if args.quant == "nf4" else None)
    apply_lorasp(net, TARGETS, r=16, alpha=32, keep=0.5)
    net.train()
    net.checkpointing = "full"
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=2e-5)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))
    skip, plain = M.tail, lambda layer, x: layer(x)
    flags = [f for f in ("avx512_bf16", "amx_bf16") if f in open("/proc/cpuinfo").read()]
    dtype = "bf16" if args.bf16 else "fp32"
    print(f"{args.width}-wide Llama, {args.layers} layers, {args.quant} base, LoRA-SP r=16 on 7 projections, full "
          f"checkpointing, {args.batch} x {args.seq}, {dtype}, {args.threads} threads; CPU flags: "
          f"{' '.join(flags) or 'no bf16 units'}")

    def step(tail):
        M.tail = tail
        t0 = time.process_time()
        with torch.autocast("cpu", torch.bfloat16, enabled=args.bf16):
            loss = net(ids, labels=ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        C.trim_heap()  # each step starts from the same heap, whichever ran before it
        return time.process_time() - t0
    ratios = []
    for i in range(args.pairs + 1):
        on, off = (step(skip), step(plain)) if i % 2 else (lambda b, a: (a, b))(step(plain), step(skip))
        if i:
            ratios.append(on / off)
            print(f"pair {i}: skip {on:.2f} CPU s, replayed {off:.2f} CPU s, ratio {on / off:.3f}", flush=True)
    print(f"median ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
