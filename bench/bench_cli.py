"""The figure a user gets: `python train.py` in its own process against transformers + peft in its own process, on
the same random checkpoint, the same shapes, the same number of steps.

    python bench/bench_cli.py                                   # 134M Llama, 4 x 256, fp32: ours vs peft
    python bench/bench_cli.py --configs ours:fp32:none ours:bf16:none peft:fp32:none peft:bf16:none --steps 4
    python bench/bench_cli.py --configs ours:fp32:none --ours-flags "--checkpointing selective"

A config is WHO:DTYPE:CHECKPOINTING. WHO ours: `python train.py --model DIR --data FILE --dtype DTYPE --checkpointing
C --batch-size B --grad-accum 1 --seq-len T --max-steps N --log-every 1 --eval-every 0` (everything else at its
defaults: LoRA-SP r=16 on the seven projections, AdamW, the validation pass and the adapter save at the end), timed
by this parent from the "step k/N" lines it prints (step 1 is the warm-up; s/step is the median of the others).
WHO peft: transformers' LlamaForCausalLM.from_pretrained(DIR) + peft LoRA (r=16, alpha=32, no dropout) on the same
seven projections, AdamW, the same batch shape (random ids: the cost of a step does not depend on the values), bf16
as autocast over bf16 weights with fp32 adapters (peft's autocast_adapter_dtype), checkpointing full =
gradient_checkpointing_enable(). Peak memory: the child's ru_maxrss from wait4() (this parent imports no torch, so
the child inherits nothing). The checkpoint (bf16 safetensors written by bench_load's writer), a sentencepiece
tokenizer and an Alpaca-format file of long records (every example fills --seq-len) are written once into --dir.
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time

from children import GiB, cpus_said

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = dict(vocab_size=32000, n_layer=12, n_embd=768, n_head=12, n_kv_head=12, n_ffn=2048)  # bench_train's
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def write_fixture(directory, shape, records=64, seed=0, device="cpu"):
    """directory/model (config.json, bf16 safetensors, tokenizer.model) and directory/alpaca.json, unless there.
    shape: a preset name (llama2-7b) or LlamaConfig fields; device: where the random weights are drawn. Runs in a
    subprocess (torch stays out of this one)."""
    if not os.path.exists(os.path.join(directory, "alpaca.json")):
        subprocess.run([sys.executable, os.path.abspath(__file__), "--write", directory, json.dumps(shape),
                        str(records), str(seed), device], check=True)
    return os.path.join(directory, "model"), os.path.join(directory, "alpaca.json")


def _write(directory, shape, records, seed, device="cpu"):
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch

    import data
    from bench_load import write_random_checkpoint
    from model import LlamaConfig, get_config
    torch.manual_seed(seed)
    model_dir, config = os.path.join(directory, "model"), get_config(shape) if isinstance(shape, str) else \
        LlamaConfig(**shape)
    write_random_checkpoint(model_dir, config, "safetensors", device=device)
    corpus = data.demo_corpus(records * 8, seed)       # the demo's generated text: sentencepiece learns it quickly
    data.train_sentencepiece(corpus + list(data.PROMPT_DICT.values()) * 5, os.path.join(model_dir, "tokenizer.model"),
                             min(400, config.vocab_size), byte_fallback=False)  # ids the embedding has (256: tiny)
    long = [{"instruction": "Continue the text.", "input": "", "output": " ".join(corpus[i * 8:(i + 1) * 8])}
            for i in range(records)]                   # ~2,000 tokens each: every example is cut at --seq-len
    with open(os.path.join(directory, "alpaca.json.tmp"), "w") as f:
        json.dump(long, f)
    os.replace(os.path.join(directory, "alpaca.json.tmp"), os.path.join(directory, "alpaca.json"))


def probe(pid):
    """(CPU seconds, user + system, of process pid and its threads; its VmHWM in bytes; its system seconds) from
    /proc."""
    try:
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        hwm = [int(x.split()[1]) * 1024 for x in open(f"/proc/{pid}/status") if x.startswith("VmHWM")][0]
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"), hwm, int(stat[12]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return float("nan"), 0, float("nan")


def run_timed(cmd, env=None, log=None):
    """Run cmd, timestamping each line it prints: {"lines": [(seconds since start, line, CPU seconds so far, VmHWM so
    far, system seconds so far)], "maxrss": bytes (the child's ru_maxrss), "peak_anon": bytes (RssAnon's peak,
    sampled every 0.2 s), "rc"}. A log file, if given, gets every line as it comes."""
    t0, lines, anon, done = time.perf_counter(), [], [0], threading.Event()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)

    def sample():  # the peak of RssAnon: VmHWM also counts a memory-mapped file's pages, which the kernel can drop
        while not done.is_set():                     # (not p.poll(): that could reap the child before wait4)
            try:
                anon[0] = max(anon[0], [int(x.split()[1]) * 1024 for x in open(f"/proc/{p.pid}/status")
                                        if x.startswith("RssAnon")][0])
            except (OSError, IndexError):
                pass
            done.wait(0.2)
    threading.Thread(target=sample, daemon=True).start()
    for line in p.stdout:
        lines.append((time.perf_counter() - t0, line.rstrip("\n"), *probe(p.pid)))
        if log:
            log.write(f"[{lines[-1][0]:8.1f}s, CPU {lines[-1][2]:8.1f}s, VmHWM {lines[-1][3] / GiB:5.2f} GiB] {line}")
            log.flush()
    done.set()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return dict(lines=lines, maxrss=usage.ru_maxrss * 1024, rc=p.returncode, wall_s=time.perf_counter() - t0,
                peak_anon=anon[0])


def step_times(lines, prefix="step "):
    """(wall, CPU, system) seconds since start at each "step k/N" line, and the same between consecutive ones."""
    t = [(s, c, sy) for s, line, c, _, sy in lines if line.startswith(prefix) and "validation" not in line]
    return t, [(b[0] - a[0], b[1] - a[1], b[2] - a[2]) for a, b in zip(t, t[1:])]


def ours(model_dir, data_file, dtype, ckpt, batch, seq, steps, extra=(), env=None, log=None, out="/tmp/bench-cli-out"):
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--model", model_dir, "--data", data_file, "--dtype", dtype,
           "--checkpointing", ckpt, "--batch-size", str(batch), "--grad-accum", "1", "--seq-len", str(seq),
           "--max-steps", str(steps), "--log-every", "1", "--eval-every", "0", "--out", out, *extra]
    r = run_timed(cmd, env, log)
    if r["rc"]:
        raise RuntimeError("train.py failed:\n" + "\n".join(x[1] for x in r["lines"][-15:]))
    t, dts = step_times(r["lines"])
    summary = json.loads(r["lines"][-1][1])
    ready = next(x for x in r["lines"] if "trainable of" in x[1])  # printed once the model and data are ready
    at = lambda word: max([x[3] for x in r["lines"] if word in x[1]] or [0])  # noqa: E731  VmHWM at a line
    return dict(step_s=statistics.median(d[0] for d in dts) if dts else t[0][0] - ready[0],
                cpu_s=statistics.median(d[1] for d in dts) if dts else t[0][1] - ready[2],
                sys_s=statistics.median(d[2] for d in dts) if dts else t[0][2] - ready[4],
                sys_steps=[t[0][2] - ready[4]] + [d[2] for d in dts],  # each step's system seconds, the warm-up first
                first_step_s=t[0][0] - ready[0], ready_s=ready[0], hwm_ready=ready[3], hwm_steps=max(
                    x[3] for x in r["lines"] if x[1].startswith("step ") and "validation" not in x[1]),
                hwm_after=at("{"), peak_rss=r["maxrss"], wall_s=r["wall_s"], cli_peak_mib=summary["peak_mem_mib"],
                final_loss=summary["final_loss"], trainable=summary["trainable_params"], first_line=ready[1], losses=[
                    float(x[1].split("loss")[1].split()[0]) for x in r["lines"] if x[1].startswith("step ") and
                    "validation" not in x[1]])


def peft_child(model_dir, dtype, ckpt, batch, seq, steps, quant="none"):
    """transformers + peft LoRA on model_dir, one line of JSON per step: {"step_s", "loss"}; last: {"peak_rss"}."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM
    sys.path.insert(0, ROOT)
    from plan import pick_threads
    torch.set_num_threads(pick_threads()[0])           # train.py's count (a container's CPU quota read), not torch's
    t0 = time.perf_counter()
    bf16 = dtype == "bf16"
    kw = dict(torch_dtype=torch.bfloat16 if bf16 else torch.float32)
    if quant == "nf4":
        from transformers import BitsAndBytesConfig
        kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                       bnb_4bit_use_double_quant=True,
                                                       bnb_4bit_compute_dtype=kw["torch_dtype"])
    hf = LlamaForCausalLM.from_pretrained(model_dir, use_cache=False, **kw)
    net = get_peft_model(hf, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS))
    if ckpt == "full":
        net.gradient_checkpointing_enable()            # peft makes the embedding output require grad for it
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-5)
    vocab = hf.config.vocab_size
    g = torch.Generator().manual_seed(0)
    trainable = sum(p.numel() for p in params)
    print(json.dumps(dict(load_s=time.perf_counter() - t0, trainable=trainable,
                          grad_and_adam_bytes=sum(3 * p.numel() * p.element_size() for p in params))), flush=True)
    for _ in range(steps):
        ids = torch.randint(0, vocab, (batch, seq), generator=g)
        t = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = net(input_ids=ids, labels=ids).loss
        loss.backward()
        loss = loss.detach()  # drop the graph, as HF Trainer does: kept into the next step, it fragments the heap
        opt.step()
        opt.zero_grad(set_to_none=True)
        print(json.dumps(dict(step_s=time.perf_counter() - t, loss=loss.item())), flush=True)
    print(json.dumps(dict(peak_rss=[int(x.split()[1]) * 1024 for x in open("/proc/self/status")
                                    if x.startswith("VmHWM")][0])), flush=True)


def peft(model_dir, dtype, ckpt, batch, seq, steps, quant="none", log=None):
    r = run_timed([sys.executable, os.path.abspath(__file__), "--peft-child", model_dir, dtype, ckpt, str(batch),
                   str(seq), str(steps), quant], log=log)
    records = [dict(json.loads(x[1]), cpu=x[2]) for x in r["lines"] if x[1].startswith("{")]
    if r["rc"] or not records:
        raise RuntimeError("peft failed:\n" + "\n".join(x[1] for x in r["lines"][-15:]))
    steps_ = [x for x in records if "step_s" in x]
    dts, cpus = [x["step_s"] for x in steps_], [b["cpu"] - a["cpu"] for a, b in zip(steps_, steps_[1:])]
    return dict(step_s=statistics.median(dts[1:] or dts), cpu_s=statistics.median(cpus) if cpus else float("nan"),
                first_step_s=dts[0] if dts else None, steps_all=dts, ready_s=records[0]["load_s"], peak_rss=r["maxrss"],
                peak_anon=r["peak_anon"], wall_s=r["wall_s"],
                losses=[x["loss"] for x in records if "loss" in x], trainable=records[0]["trainable"],
                complete=len(dts) == steps)


def main():
    if sys.argv[1:2] == ["--write"]:
        return _write(sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), *sys.argv[6:7])
    if sys.argv[1:2] == ["--peft-child"]:
        a = sys.argv[2:]
        return peft_child(a[0], a[1], a[2], int(a[3]), int(a[4]), int(a[5]), a[6])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["peft:fp32:none", "ours:fp32:none"],
                    help="WHO:DTYPE:CHECKPOINTING, WHO ours|peft, DTYPE fp32|bf16|auto (auto: ours only)")
    ap.add_argument("--ours-flags", default="", help="more train.py flags for the ours configs")
    ap.add_argument("--env", nargs="*", default=[], metavar="K=V", help="environment for the ours configs (e.g. glibc's "
                    "MALLOC_ARENA_MAX=2)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per run; the first is the warm-up")
    ap.add_argument("--repeats", type=int, default=1, help="run the config list this many times, in turn")
    ap.add_argument("--dir", default="/tmp/lorasp-bench-cli", help="where the checkpoint and data are written once")
    args = ap.parse_args()
    model_dir, data_file = write_fixture(args.dir, SHAPE)
    runs = {c: [] for c in args.configs}
    for _ in range(args.repeats):
        for c in args.configs:
            who, dtype, ckpt = c.split(":")
            env = dict(os.environ, **dict(kv.split("=", 1) for kv in args.env))
            r = (ours(model_dir, data_file, dtype, ckpt, args.batch, args.seq, args.steps, shlex.split(args.ours_flags),
                      env)
                 if who == "ours" else peft(model_dir, dtype, ckpt, args.batch, args.seq, args.steps))
            runs[c].append(r)
            system = f", {r['sys_s']:.2f} system (by step: {' '.join(f'{x:.2f}' for x in r['sys_steps'])})" if (
                "sys_s" in r) else ""
            print(f"  {c}: {r['step_s']:.2f} s/step ({r['cpu_s']:.2f} s CPU{system}), peak RSS {r['peak_rss'] / GiB:.2f} GiB"
                  + (f" (VmHWM when ready {r['hwm_ready'] / GiB:.2f}, after the steps {r['hwm_steps'] / GiB:.2f}, at "
                     f"the end {r['hwm_after'] / GiB:.2f})" if who == "ours" else "") + ", losses "
                  f"{' '.join(f'{x:.3f}' for x in r['losses'])}" + (f"\n    {r['first_line']}" if who == "ours" else ""),
                  flush=True)
    tokens = args.batch * args.seq
    print(f"\n{args.batch} x {args.seq} tokens, {args.steps} steps per run (the first one the warm-up), median s/step "
          f"over steps and repeats, max peak RSS; ours: train.py {args.ours_flags}")
    print(f"{cpus_said()} (ours and peft alike)\n")  # (a container's quota named)
    print("| config | s/step | CPU s/step | tokens/s | peak RSS GiB | trainable |\n|---|---|---|---|---|---|")
    summary = {}
    for c, rs in runs.items():
        s, cpu = (statistics.median(r[k] for r in rs) for k in ("step_s", "cpu_s"))
        summary[c] = s, cpu, max(r["peak_rss"] for r in rs)
        print(f"| {c} | {s:.2f} | {cpu:.2f} | {tokens / s:.0f} | {summary[c][2] / GiB:.2f} | {rs[0]['trainable']:,} |")
    print("\n".join(ratios(summary, {c: rs[0].get("first_line", "") for c, rs in runs.items()})))

def ratios(summary, first_lines):
    """"ours / peft" lines: each ours config against peft in the same dtype (auto: the one train.py's first line says
    it chose) and checkpointing (selective against peft's only kind, full). summary: config -> (s, cpu s, peak)."""
    lines = []
    for c, (s, cpu, mem) in summary.items():
        who, dtype, ckpt = c.split(":")
        if dtype == "auto":  # bf16 autocast on a CPU with bf16 units, else fp32: as train.py says in its first line
            dtype = "bf16" if "bf16" in first_lines.get(c, "") else "fp32"
        peer = f"peft:{dtype}:{'full' if ckpt == 'selective' else ckpt}"
        if who == "ours" and peer in summary:
            ref = summary[peer]
            lines.append(f"{c} / {peer}: time {s / ref[0]:.2f}x (CPU time {cpu / ref[1]:.2f}x), peak RSS "
                         f"{mem / ref[2]:.2f}x")
    return lines


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from checks import console  # (lorasp's: line-buffered, UTF-8 where ASCII fails, a reader gone outlived)
    console()
    main()
