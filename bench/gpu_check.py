"""One-shot GPU check: the CUDA-parametrized tests, NF4 dequantize bandwidth, and a 7B-shaped QLoRA-SP training step
next to transformers + peft, printed as one JSON summary. Under 8 minutes on one H200-class GPU with torch,
transformers and peft installed (no bitsandbytes needed).

    python bench/gpu_check.py              # on the GPU machine
    python bench/gpu_check.py --dry-run    # anywhere: the same code paths on a tiny shape, on CPU

1. tests: `pytest -k cuda` over the device-parametrized tests (NF4 round trip, NF4Linear, LoRASPLinear forward and
   backward, activation checkpointing, generation with the KV cache); their device list is ["cpu"] + ["cuda"] where
   a GPU is, so on a CPU machine the CUDA cases are not generated (--dry-run runs their CPU cases instead).
2. dequantize: a 4096 x 11008 NF4 weight (Llama-7B's MLP) dequantized to bf16, as GB/s of the bytes it must move
   (the 4-bit codes and scales read, the bf16 values written), as a fraction of a device-to-device copy's GB/s
   (bytes read + written) measured in the same run, by the torch path and by quant_triton's kernel (checked equal to
   the torch path bit for bit before the step uses it). The issue's aim: >= 60%.
3. step: a random llama2-7b-shaped model, NF4 base + LoRA-SP (r=16, keep 0.5, the seven projections) + full
   activation checkpointing, bf16 autocast, AdamW, at 1 x 512 and 4 x 512 tokens: tokens/s (median of 3 steps after
   a warm-up) and torch.cuda.max_memory_allocated; beside it transformers' LlamaForCausalLM in bf16 + peft LoRA r=16
   on the same projections with gradient checkpointing (the dense bf16 base: bitsandbytes is not installed there).
4. cli: `python train.py --quant nf4 --checkpointing full` at 4 x 512 for 4 steps on a checkpoint written to disk with
   4 Llama-2-7B blocks and its 32k vocabulary (1.07B parameters): the command a user runs, loading and quantizing on
   the GPU; tokens/s, peak and the memory plan from its summary line. `--cli-preset llama2-7b` writes the whole
   model instead (13.5 GB; its random weights drawn on the GPU, as drawing them on the CPU took minutes there), and
   `--only-cli` runs this part alone:

    python bench/gpu_check.py --only-cli --cli-preset llama2-7b     # the flagship job at full size (13.5 GB written)
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import checkpoint as C  # noqa: E402
import model as M  # noqa: E402
import quant_torch  # noqa: E402
from lorasp import apply_lorasp  # noqa: E402
from quant import quantize_nf4  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEVICE_TESTS = ["tests/test_quant_devices.py", "tests/test_lorasp.py", "tests/test_checkpointing.py",
                "tests/test_model.py"]
CLI_SHAPE = dict(vocab_size=32000, n_layer=4, n_embd=4096, n_head=32, n_kv_head=32, n_ffn=11008)  # 4 7B blocks
TINY = M.LlamaConfig(vocab_size=512, n_layer=2, n_embd=64, n_head=4, n_kv_head=4, n_ffn=176)


def device_cases(ids, device):
    """The test ids parametrized with this device: `[cpu]`, `[cpu-...]`, `[...-cpu]`, `[...-cpu-...]`."""
    return [i for i in ids if "::" in i and re.search(rf"[\[-]{device}[\]-]", i)]


def run_tests(device):
    """pytest over the device-parametrized tests' `device` cases (test ids with a [device], -device- or -device]
    part): {"selected", "passed", "failed", "summary"}."""
    pytest = [sys.executable, "-m", "pytest", "-q", *DEVICE_TESTS]
    ids = device_cases(subprocess.run(pytest + ["--collect-only"], cwd=ROOT, capture_output=True, text=True).stdout
                       .split(), device)
    p = subprocess.run(pytest[:4] + ids, cwd=ROOT, capture_output=True, text=True)
    tail = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else p.stderr[-500:]
    count = lambda word: sum(int(x.split()[0]) for x in re.findall(rf"\d+ {word}", tail))  # noqa: E731
    return dict(selected=len(ids), returncode=p.returncode, passed=count("passed"), failed=count("failed") +
                count("error"), summary=tail)


def timed(fn, device, n=5):
    """Median seconds of fn() over n runs after one warm-up (CUDA: synchronized)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def dequantize_bandwidth(device, shape):
    """The torch path and, where it runs, quant_triton's kernel: ms, GB/s and fraction of a copy's GB/s each, and
    whether the kernel's bf16 values equal the torch path's bit for bit. A kernel that fails or differs is switched
    off (quant_torch.TRITON = False) for the rest of the run, and the summary says so."""
    w = torch.randn(shape, device=device) * 0.02
    q = quantize_nf4(w.to(torch.bfloat16))
    src, dst = torch.empty(shape, dtype=torch.bfloat16, device=device), torch.empty(shape, dtype=torch.bfloat16,
                                                                                    device=device)
    t_copy = timed(lambda: dst.copy_(src), device)
    moved = q.nbytes + w.numel() * 2                      # codes and scales read, bf16 values written
    out = dict(shape=list(shape), copy_gb_s=2 * src.nbytes / t_copy / 1e9)
    for path, on in (("torch", False), ("triton", True)):
        quant_torch.TRITON = on
        try:
            used = quant_torch.triton_kernel(q.device) is not None
            if on and not used:
                out[path] = "not used: no CUDA device, or Triton not installed"
                continue
            t = timed(lambda: q.dequantize(torch.bfloat16), device)          # one call, waited for: its latency
            t20 = timed(lambda: [q.dequantize(torch.bfloat16) for _ in range(20)], device) / 20   # back to back
            out[path] = dict(dequantize_ms=t * 1e3, gb_s=moved / t / 1e9, fraction_of_copy=moved / t / 1e9 /
                             out["copy_gb_s"], streamed_ms=t20 * 1e3, streamed_fraction_of_copy=moved / t20 / 1e9 /
                             out["copy_gb_s"])
        except Exception as e:                            # a kernel that does not build here: say so, carry on
            out[path] = f"failed: {type(e).__name__}: {str(e)[:300]}"
    quant_torch.TRITON = False
    ref = q.dequantize(torch.bfloat16)
    quant_torch.TRITON = isinstance(out["triton"], dict)
    if quant_torch.TRITON:
        out["triton_equals_torch_bf16"] = torch.equal(q.dequantize(torch.bfloat16), ref)
        quant_torch.TRITON = out["triton_equals_torch_bf16"]
    out["step_uses_triton"] = quant_torch.TRITON
    return out


def random_stream(model, device, gen):
    """(source, name, tensor) for every entry of a meta-built model's state dict: norms 1, the rest N(0, 0.02), bf16,
    made on the device one tensor at a time (fill quantizes each as it arrives)."""
    for name, p in model.state_dict(keep_vars=True).items():
        t = torch.ones(p.shape, device=device) if name.endswith("norm.weight") else \
            torch.randn(p.shape, device=device, generator=gen) * 0.02
        yield "random", name, t.to(torch.bfloat16)


def train_step(loss_fn, opt, ids, device):
    """One bf16-autocast training step on ids, as a function of nothing (for timed and the profiler)."""
    def step():
        with torch.autocast(device, torch.bfloat16):
            loss = loss_fn(ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def step_figures(loss_fn, params, device, batches, vocab, steps):
    """{batch: {tokens_per_s, peak_mem_gib, loss}} for 1 optimizer step per measurement (warm-up first)."""
    opt, out = torch.optim.AdamW(params, lr=2e-5), {}
    for B, T in batches:
        step = train_step(loss_fn, opt, torch.randint(0, vocab, (B, T), device=device), device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        s = timed(step, device, steps)
        out[f"{B}x{T}"] = dict(tokens_per_s=B * T / s, step_s=s, peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30
                               if device == "cuda" else None)
    return out


def build_ours(config, device):
    """The config's Llama with random bf16 weights quantized to NF4 as they arrive (fill), LoRA-SP r=16 keep 0.5 on
    the seven projections, full recomputation, in train mode."""
    with torch.device("meta"):
        net = M.build_model(config)
    net = C.fill(net, random_stream(net, device, torch.Generator(device).manual_seed(0)), torch.bfloat16, "nf4",
                 device)
    apply_lorasp(net, TARGETS, r=16, alpha=32, keep=0.5)
    net.checkpointing = "full"
    return net.train()


def ours(config, device, batches, steps):
    t0 = time.perf_counter()
    net = build_ours(config, device)
    build_s = time.perf_counter() - t0
    params = [p for p in net.parameters() if p.requires_grad]
    figures = step_figures(lambda ids: net(ids, labels=ids), params, device, batches, config.vocab_size, steps)
    return dict(build_s=build_s, trainable=sum(p.numel() for p in params), **figures)


def profile(config, device, batch):
    """torch.profiler over one step of ours (after two warm-ups) on a 2-block model of the config's width: the ops
    that take the CPU's time (a step whose time does not grow with the batch waits on the CPU), and the host-device
    syncs. Printed to stderr; returns the syncs and the top ops."""
    from torch.profiler import ProfilerActivity, profile as torch_profile
    net = build_ours(M.LlamaConfig(**{**config.__dict__, "n_layer": 2}), device)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=2e-5)
    step = train_step(lambda ids: net(ids, labels=ids), opt, torch.randint(0, config.vocab_size, batch, device=device),
                      device)
    step(), step()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch_profile(activities=acts) as prof:
        step()
        if device == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=60), file=sys.stderr)
    syncs = {e.key: e.count for e in events if "Synchronize" in e.key or "Memcpy" in e.key}
    top = [dict(op=e.key, calls=e.count, self_cpu_ms=e.self_cpu_time_total / 1e3)
           for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:15]]
    return dict(blocks=2, cpu_ms=sum(e.self_cpu_time_total for e in events) / 1e3, syncs=syncs, top=top,
                sync_sites=sync_sites(step) if device == "cuda" else None)


def sync_sites(step):
    """{file:line: count} of the Python lines whose op made the host wait for the device in one step (CUDA's sync
    debug mode warns at each). Backward's come back at the line that called backward(): LoRA-SP's masked_select there,
    once per adapted matrix, would show as 14 at train_step's line (7 matrices x 2 blocks). Written without a GPU."""
    import warnings
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step()
            torch.cuda.synchronize()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    sites = {}
    for w in caught:
        where = f"{os.path.basename(w.filename)}:{w.lineno}"
        sites[where] = sites.get(where, 0) + 1
    return sites


def cli(device, shape, batch, seq, steps):
    """train.py as a user runs it (NF4, `full`, --dtype auto) on a checkpoint written to disk in Hugging Face's layout
    (bench_cli's writer: bf16 safetensors, a sentencepiece tokenizer, 8 Alpaca-format records): it loads, quantizes on
    the device and trains. Returns its summary's figures, or its return code and the end of its output."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from bench_cli import write_fixture
    with torch.device("meta"):
        size = 2 * sum(p.numel() for p in M.build_model(M.get_config(shape) if isinstance(shape, str) else
                                                          M.LlamaConfig(**shape)).parameters())    # bf16 bytes
    # /dev/shm where it has room: a disk that writes back at 0.1 GB/s (as the first GPU machine's seemed to) would
    # take minutes over the 7B's 13.5 GB; memory takes seconds
    shm = os.path.isdir("/dev/shm") and shutil.disk_usage("/dev/shm").free > 2 * size
    with tempfile.TemporaryDirectory(dir="/dev/shm" if shm else None) as tmp:
        t0 = time.perf_counter()
        model_dir, data_file = write_fixture(tmp, shape, records=8, device=device)
        written = time.perf_counter() - t0
        p = subprocess.run([sys.executable, "train.py", "--model", model_dir, "--data", data_file, "--quant", "nf4",
                            "--checkpointing", "full", "--batch-size", str(batch), "--grad-accum", "1", "--seq-len",
                            str(seq), "--max-steps", str(steps), "--log-every", "1", "--eval-every", "0", "--device",
                            device, "--out", os.path.join(tmp, "run")], cwd=ROOT, capture_output=True, text=True)
    lines = p.stdout.strip().splitlines()
    if p.returncode or not lines or not lines[-1].startswith("{"):
        return dict(returncode=p.returncode, tail=(p.stdout + p.stderr)[-1500:])
    s = json.loads(lines[-1])
    return dict(shape=shape, tokens=f"{batch}x{seq}", written_to="/dev/shm" if shm else "temp dir", write_s=written,
                wall_s=s["wall_s"], first_line=lines[0],
                **{k: s[k] for k in ("tokens_per_s", "peak_mem_mib", "planned_mem_mib", "final_loss", "steps")})


def peft(config, device, batches, steps):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
    t0 = time.perf_counter()
    with torch.device(device):
        hf = LlamaForCausalLM(LlamaConfig(**config.to_hf(), use_cache=False)).to(torch.bfloat16)
    net = get_peft_model(hf, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS))
    net.gradient_checkpointing_enable()
    net.train()
    build_s = time.perf_counter() - t0
    params = [p for p in net.parameters() if p.requires_grad]
    figures = step_figures(lambda ids: net(input_ids=ids, labels=ids).loss, params, device, batches,
                           config.vocab_size, steps)
    return dict(build_s=build_s, trainable=sum(p.numel() for p in params), **figures)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU: checks this script, measures nothing")
    ap.add_argument("--skip-tests", action="store_true", help="leave out part 1")
    ap.add_argument("--profile", action="store_true", help="also profile one step of ours on 2 blocks (stderr)")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--skip-cli", action="store_true", help="leave out part 4 (train.py on a checkpoint on disk)")
    which.add_argument("--only-cli", action="store_true", help="run part 4 alone")
    ap.add_argument("--cli-preset", choices=sorted(M.PRESETS), help="part 4 on this preset's whole shape (default: 4 "
                    "llama2-7b blocks)")
    args = ap.parse_args()
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA device; run with --dry-run to check the script on CPU")
    config = TINY if args.dry_run else M.get_config("llama2-7b")
    batches = [(1, 32), (2, 32)] if args.dry_run else [(1, 512), (4, 512)]
    steps = 1 if args.dry_run else 3
    t0 = time.perf_counter()
    summary = dict(device=torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run)",
                   torch=torch.__version__, shape="tiny" if args.dry_run else "llama2-7b")

    def part(name, value):                                # each part printed as it ends: a cut-off run keeps them
        summary[name] = value
        print(json.dumps({name: value}), file=sys.stderr, flush=True)
    cli_shape = args.cli_preset or (CLI_SHAPE if not args.dry_run else {**TINY.__dict__, "n_layer": 1})
    if args.only_cli:
        part("cli", cli(device, cli_shape, *((2, 128, 2) if args.dry_run else (4, 512, 4))))
        summary["wall_s"] = time.perf_counter() - t0
        return print(json.dumps(summary))
    part("tests", None if args.skip_tests else run_tests(device))
    part("dequantize", dequantize_bandwidth(device, (64, 176) if args.dry_run else (11008, 4096)))
    part("ours", ours(config, device, batches, steps))
    if args.profile:
        part("profile", profile(config, device, batches[0]))
    if device == "cuda":
        torch.cuda.empty_cache()
    part("peft", peft(config, device, batches, steps))
    if not args.skip_cli:
        part("cli", cli(device, cli_shape, *((2, 128, 2) if args.dry_run else (4, 512, 4))))
    summary["ratio"] = {b: dict(tokens_per_s=summary["ours"][b]["tokens_per_s"] / summary["peft"][b]["tokens_per_s"],
                                peak_mem=summary["ours"][b]["peak_mem_gib"] / summary["peft"][b]["peak_mem_gib"]
                                if device == "cuda" else None) for b in (f"{B}x{T}" for B, T in batches)}
    summary["wall_s"] = time.perf_counter() - t0
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from checks import console  # (lorasp's: line-buffered, UTF-8 where ASCII fails, a reader gone outlived)
    console()
    main()
