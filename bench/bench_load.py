"""Loading a checkpoint with NF4 on load: time and peak resident memory (RSS), for Llama shapes.

    python bench/bench_load.py [--presets tinyllama-1.1b llama2-7b] [--dir /tmp] [--layout safetensors|bin]
                               [--device cpu|cuda]

For each preset: write a randomly initialised bf16 checkpoint in the Hugging Face layout (sharded, with an index;
about 2.2 GB for tinyllama-1.1b and 13.5 GB for llama2-7b), then load it with
`load_pretrained(dir, quantize="nf4", dtype=torch.bfloat16)` in a fresh subprocess, and report load time, peak RSS
and the bytes the loaded model holds. The checkpoint is deleted afterwards. The writer runs in a subprocess of its own:
Linux carries a parent's resident size at fork into the child's ru_maxrss even across exec, so a loader forked from
the writer would report the writer's memory. Peak RSS is printed both ways: getrusage's ru_maxrss and VmHWM from
/proc/self/status (the high-water mark of the loader's own address space).
Targets (issue 4): peak RSS <= 1.6 GiB for 1.1B, <= 6 GiB for 7B.
The files were just written, so they are read from the page cache when memory allows: load time is then CPU-bound
(reading, NF4 quantization), not disk-bound. On CUDA it also reports GPU memory after load and bf16 forward tokens/s
at batch 1 x 512.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
import checkpoint as C  # noqa: E402
import model as M  # noqa: E402

GiB = 1 << 30

LOADER = r"""
import json, resource, sys, time, torch
sys.path.insert(0, sys.argv[1])
import checkpoint as C
import model as M
from quant import NF4Linear
path, device = sys.argv[2], sys.argv[3]
rss0 = int(open("/proc/self/statm").read().split()[1]) * 4096
t0 = time.perf_counter()
m = M.load_pretrained(path, quantize="nf4", dtype=torch.bfloat16, device=device)
t_load = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
hwm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
nf4 = [x for x in m.modules() if isinstance(x, NF4Linear)]
held = sum(p.numel() * p.element_size() for p in m.parameters()) + sum(x.weight.nbytes for x in nf4)
out = dict(load_s=t_load, peak_rss=peak, hwm=hwm, rss_before=rss0, held=held, nf4_linears=len(nf4))
if device == "cuda":
    out["gpu_after_load"] = torch.cuda.memory_allocated()
    ids = torch.randint(0, m.config.vocab_size, (1, 512), device=device)
    with torch.no_grad():
        m(ids); torch.cuda.synchronize(); t0 = time.perf_counter()
        for _ in range(5): m(ids)
        torch.cuda.synchronize()
    out["forward_tokens_per_s"] = 5 * 512 / (time.perf_counter() - t0)
    out["gpu_peak_forward"] = torch.cuda.max_memory_allocated()
else:
    t0 = time.perf_counter()
    with torch.no_grad():
        logits = m(torch.randint(0, m.config.vocab_size, (1, 8)))
    out["forward_8_tokens_s"] = time.perf_counter() - t0
    assert torch.isfinite(logits).all()
print(json.dumps(out))
"""


def write_random_checkpoint(directory, preset, layout, shard_size=2 * GiB, device="cpu"):
    """Random N(0, 0.02) bf16 tensors (norm weights 1), generated and written one shard at a time (the writer never
    holds the model). preset: a preset name or a config. device: where the values are drawn (a GPU draws 7B's in
    seconds, 2 CPU cores in ~40 s; the values differ between devices, the distribution does not)."""
    config = M.get_config(preset) if isinstance(preset, str) else preset
    with torch.device("meta"):
        shapes = [(n, p.shape) for n, p in M.build_model(config).state_dict().items()]
    tensors = ((n, torch.ones(s, dtype=torch.bfloat16) if n.endswith("norm.weight") else
                torch.empty(s, dtype=torch.bfloat16, device=device).normal_(0, 0.02).cpu()) for n, s in shapes)
    if layout == "safetensors":
        return C.write_checkpoint(directory, config, tensors, shard_size, sync=False)  # scratch: no fsync
    os.makedirs(directory, exist_ok=True)  # pytorch_model-0000i-of-0000n.bin + index, as older HF repos ship
    shards, shard = [], {}
    for n, t in tensors:
        shard[n] = t
        if sum(x.nbytes for x in shard.values()) > shard_size:
            torch.save(shard, os.path.join(directory, f"part{len(shards)}.bin"))
            shards, shard = shards + [list(shard)], {}
    if shard:
        torch.save(shard, os.path.join(directory, f"part{len(shards)}.bin"))
        shards.append(list(shard))
    weight_map = {}
    for i, keys in enumerate(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        os.replace(os.path.join(directory, f"part{i}.bin"), os.path.join(directory, name))
        weight_map.update({k: name for k in keys})
    with open(os.path.join(directory, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"weight_map": weight_map}, f)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config.to_hf(), f)


def main():
    if sys.argv[1:2] == ["--write"]:  # the writer subprocess
        return write_random_checkpoint(*sys.argv[2:5])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tinyllama-1.1b", "llama2-7b"])
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the temporary checkpoints go")
    ap.add_argument("--layout", choices=["safetensors", "bin"], default="safetensors")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, layout {args.layout}, device {args.device}")
    for preset in args.presets:
        directory = tempfile.mkdtemp(prefix=f"bench-load-{preset}-", dir=args.dir)
        try:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--write", directory, preset, args.layout], check=True)
            size = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))
            print(f"{preset}: wrote {size / 1e9:.2f} GB ({len(os.listdir(directory))} files) in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            r = json.loads(subprocess.run([sys.executable, "-c", LOADER, ROOT, directory, args.device], check=True,
                                          capture_output=True, text=True).stdout.strip().splitlines()[-1])
            print(f"{preset}: load with NF4 {r['load_s']:.1f} s, peak RSS {r['peak_rss'] / GiB:.2f} GiB (ru_maxrss), "
                  f"{r['hwm'] / GiB:.2f} GiB (VmHWM); process before loading {r['rss_before'] / GiB:.2f} GiB; "
                  f"model holds {r['held'] / GiB:.2f} GiB "
                  f"({r['nf4_linears']} NF4 linears)", flush=True)
            if "gpu_after_load" in r:
                print(f"{preset}: GPU memory after load {r['gpu_after_load'] / GiB:.2f} GiB; bf16 forward 1 x 512: "
                      f"{r['forward_tokens_per_s']:.0f} tokens/s, peak {r['gpu_peak_forward'] / GiB:.2f} GiB")
            else:
                print(f"{preset}: sanity forward of 8 tokens on CPU: {r['forward_8_tokens_s']:.1f} s, logits finite")
        finally:
            shutil.rmtree(directory)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from checks import console  # (lorasp's: line-buffered, UTF-8 where ASCII fails, a reader gone outlived)
    console()
    main()
