"""train.py: fine-tune a causal LM on Alpaca-format instructions with LoRA-SP, LoRA or all weights.

    python train.py                                        # offline demo, ~2 min on a laptop CPU (see below)
    python train.py --model llama2-7b --data alpaca --quant nf4 --checkpointing selective --download

- LoRA-SP (Wu et al. 2024, arXiv 2403.08822): lorasp.apply_lorasp wraps the target projections, y = W x +
  (alpha/r) (B ⊙ S_B)(A ⊙ S_A) x (Eq. 2), with `--keep` of A's and B's entries trainable; `--method lora` is keep=1,
  `--method full` trains every weight. Defaults are the paper's: AdamW, lr 2e-5, 3 epochs, r=16, alpha=32, keep=0.5.
- One plain loop: micro-batches grouped by length, a loss chosen by the kind of task (now a causal-LM loss on the
  response tokens), gradient accumulation normalised by the step's labelled tokens (so accumulation equals one big
  batch), clipping, AdamW with linear warm-up then cosine (or linear) decay, bf16 autocast on CUDA, an NF4 base
  (QLoRA) and activation checkpointing (model.py). Checkpoints hold the adapter, optimizer, step and RNG states and
  are swapped in atomically; `--resume` continues bit for bit; a NaN loss stops the run with the last good
  checkpoint kept; Ctrl-C saves and exits.
- Without --model and --data: the offline demo. A 4-layer Llama is pretrained on generated sentences (data.py, the
  first time only; cached), then taught the Alpaca instruction format with LoRA-SP on a generated task whose answers
  are checked: held-out exact match before and after.
Leaves out: DDP (a later issue), packing several instructions per sequence, fp16 loss scaling, dropout on LoRA.
The last line printed is a JSON summary (tokens_per_s, peak_mem_mib, trainable_params, total_params, final_loss, ...).
"""
import argparse
import json
import math
import os
import random
import resource
import shutil
import signal
import sys
import time

import torch
import torch.nn.functional as F

import data
from lorasp import LoRASPLinear, apply_lorasp, count_trainable, load_adapter, save_adapter
from model import (PRESETS, RMSNorm, build_model, generate, get_config, hf_files, load_pretrained, load_tokenizer,
                   load_safetensors, save_pretrained, save_safetensors, atomic_write)

TARGETS = {"llama": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "gpt2": "c_attn,c_proj,c_fc"}
TOKENIZER_FILES = [f for f in data.SMALL_FILES if f != "config.json"]
# The demo's own settings (the paper's lr 2e-5 is for 7B models and 3 epochs of 52k examples, far too small here)
DEMO = dict(lr=3e-3, epochs=2.0, batch_size=16, grad_accum=1, seq_len=160, val_fraction=0.05, exact_match=200, eval_every=100,
            save_every=0, log_every=25, out="out/demo")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Fine-tune a causal LM with LoRA-SP on Alpaca-format data. Without "
                                "--model and --data: an offline demo on a small generated task.")
    a = p.add_argument
    a("--model", help="preset (llama2-7b, ...) or checkpoint directory (HF or Meta layout); none: the demo model")
    a("--model-dir", help="where a preset's weights are (default: $LORASP_CACHE or ~/.cache/lorasp, models/NAME)")
    a("--download", action=argparse.BooleanOptionalAction, default=False,
      help="fetch a preset's missing weights from the Hugging Face Hub ($HF_TOKEN, $HF_ENDPOINT)")
    a("--data", help="'alpaca' (Stanford Alpaca, fetched once), a .json/.jsonl of instruction/input/output, or .txt "
      "(plain text, every token learned); none: the demo task")
    a("--method", choices=["full", "lora", "lorasp"], default="lorasp", help="which weights train (lora = keep 1.0)")
    a("--rank", type=int, default=16, help="r, the rank of A (r x in) and B (out x r) (paper: 16)")
    a("--alpha", type=float, default=32, help="the update is scaled by alpha / r (paper: 32)")
    a("--keep", type=float, default=0.5, help="fraction of A's and B's entries that train (paper: 0.5)")
    a("--mode", choices=["mask", "freeze"], default="mask", help="frozen entries: zero (paper's Eq. 2) or initial")
    a("--structure", choices=["element", "column"], default="element",
      help="trainable entries of A: random (paper) or whole input columns (saves activation memory)")
    a("--targets", help="comma-separated module names to adapt (default: all 7 Llama projections; GPT-2: c_attn,"
      "c_proj,c_fc)")
    a("--lr", type=float, default=2e-5, help="peak AdamW learning rate (paper: 2e-5)")
    a("--weight-decay", type=float, default=0.01, help="AdamW decay of trainable weights (torch's default; not norms, "
      "biases)")
    a("--epochs", type=float, default=3, help="passes over the training split (paper: 3)")
    a("--batch-size", type=int, default=4, help="sequences per micro-batch (fits a 7B NF4 model in 24 GB at 512)")
    a("--grad-accum", type=int, default=8, help="micro-batches per optimizer step (4 x 8 = Alpaca's batch of 32)")
    a("--seq-len", type=int, default=512, help="longer sequences are truncated (a count is printed)")
    a("--warmup", type=float, default=0.03, help="fraction of steps of linear warm-up (Alpaca's 0.03)")
    a("--schedule", choices=["cosine", "linear"], default="cosine", help="decay to 0 after the warm-up")
    a("--clip", type=float, default=1.0, help="gradient norm clipping threshold")
    a("--val-fraction", type=float, default=0.02, help="held-out share of the records (seeded split)")
    a("--quant", choices=["none", "nf4"], default="none", help="store the frozen base in NF4 (QLoRA)")
    a("--checkpointing", choices=["none", "full", "selective"], default="none", help="activation checkpointing")
    a("--dtype", choices=["auto", "bf16", "fp32"], default="auto", help="auto: bf16 autocast on CUDA, fp32 on CPU")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    a("--seed", type=int, default=0, help="data order, split, LoRA-SP masks")
    a("--out", default="out", help="run directory: checkpoint/, adapter/ (or model/), metrics.jsonl")
    a("--resume", action=argparse.BooleanOptionalAction, default=False, help="continue exactly from OUT/checkpoint")
    a("--save-every", type=int, default=200, help="optimizer steps between checkpoints (0: at the end only)")
    a("--max-steps", type=int, help="total optimizer steps (default: --epochs worth)")
    a("--eval-every", type=int, default=200, help="validation loss every N steps (0: at the end only)")
    a("--log-every", type=int, default=10, help="steps between progress lines")
    a("--exact-match", type=int, default=0, help="greedy answers to N held-out records: exact match before/after")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    if args.model is None and args.data is None:  # the demo: its own defaults, still overridable by flags
        p.set_defaults(**DEMO)
        args = p.parse_args(argv)
    if args.method == "full" and args.quant == "nf4":
        p.error("--method full with --quant nf4: NF4 weights are frozen 4-bit codes with no gradient; "
                "train an adapter on the NF4 base (--method lorasp or lora) or use --quant none")
    if (args.model is None) != (args.data is None):
        p.error("give both --model and --data, or neither (the offline demo)")
    return args


# ----------------------------------------------------------------------------------------------------
# The model: a preset or a directory, loaded (NF4 if asked), adapted

def has_weights(directory):
    if os.path.exists(os.path.join(directory, "params.json")):
        return any(f.startswith("consolidated.") for f in os.listdir(directory))
    try:
        return os.path.exists(os.path.join(directory, "config.json")) and bool(hf_files(directory))
    except FileNotFoundError:
        return False


def resolve_model(args):
    """--model -> a checkpoint directory: a directory is used as is; a preset is looked up in --model-dir or the
    cache (models/NAME), and fetched from the Hub with --download."""
    if os.path.isdir(args.model):
        return args.model
    if args.model not in PRESETS:
        sys.exit(f"error: --model {args.model!r} is neither a directory nor a preset; known presets: "
                 f"{', '.join(PRESETS)}")
    directory, repo = args.model_dir or data.cache_dir("models", args.model), data.HF_REPOS.get(args.model)
    if not has_weights(directory) and args.download and repo:
        print(f"downloading {repo} into {directory}")
        data.download_hf(repo, directory)
    if has_weights(directory):
        return directory
    if repo is None:
        sys.exit(f"error: no weights for {args.model} in {directory}, and no public checkpoint to fetch")
    gated = repo.startswith("meta-llama/")
    sys.exit("\n".join(line for line in [
        f"error: no weights for {args.model} in {directory}. Get them one of these ways:",
        f"  1. add --download: fetches {repo} from huggingface.co into {directory} (token from $HF_TOKEN)",
        f"  2. huggingface-cli download {repo} --local-dir {directory} --include '*.json' '*.safetensors' "
        "'tokenizer.model'",
        "  3. Meta's download: request it at https://www.llama.com/llama-downloads/, run download.sh, copy "
        "tokenizer.model into the folder with params.json and consolidated.00.pth, pass --model FOLDER" if gated
        else "",
        f"{repo} is gated: accept Meta's licence at https://huggingface.co/{repo} (logged in), then create a read "
        "token at https://huggingface.co/settings/tokens and export HF_TOKEN=..." if gated else "",
        "Weights elsewhere? --model-dir DIR (for the preset) or --model DIR."] if line))


def load_model(args, directory, checkpoint, device, bf16):
    """The model to train: the base (NF4 if asked; bf16 under autocast unless every weight trains) with LoRA-SP
    applied, or restored from a checkpoint's adapter (or, for full fine-tuning, its model)."""
    full = args.method == "full"
    if full and checkpoint:
        directory = os.path.join(checkpoint, "model")
    dtype = torch.bfloat16 if bf16 and not full else torch.float32  # full: fp32 master weights, bf16 compute
    model = load_pretrained(directory, "nf4" if args.quant == "nf4" else None, dtype, device)
    model.checkpointing = args.checkpointing
    if full:
        model.requires_grad_(True)
    elif checkpoint:
        load_adapter(model, os.path.join(checkpoint, "adapter"))
    else:
        targets = (args.targets or TARGETS[model.config.model_type]).split(",")
        apply_lorasp(model, targets, args.rank, args.alpha, 1.0 if args.method == "lora" else args.keep, args.mode,
                     args.structure, args.seed)
    return model.train()


def save_weights(model, directory, args, source):
    """The adapter (PEFT format + LoRA-SP extras), or for full fine-tuning the model with its tokenizer files."""
    if args.method != "full":
        return save_adapter(model, directory, base_model_name_or_path=args.model)
    save_pretrained(model, directory)
    for f in TOKENIZER_FILES:
        if os.path.exists(os.path.join(source, f)):
            shutil.copy(os.path.join(source, f), directory)


def count_params(model):
    """Every weight, NF4 ones included (their codes are buffers, not Parameters)."""
    return sum(p.numel() for p in model.parameters()) + sum(
        m.weight.shape.numel() for m in model.modules() if type(m).__name__ == "NF4Linear")


# ----------------------------------------------------------------------------------------------------
# Data and losses

def load_examples(args, tok):
    """(train examples, validation examples, validation records) from --data."""
    path = args.data
    if path == "alpaca":
        path = data.cache_dir("data", "alpaca_data.json")
        if not os.path.exists(path):
            print(f"fetching Stanford Alpaca's alpaca_data.json into {path}")
            data.download(data.ALPACA_URL, path)
    if path.endswith(".txt"):  # language modelling: every token learned, no prompt template
        blocks = data.text_examples(path, tok, args.seq_len)
        train, val = data.split_records(blocks, args.val_fraction, args.seed)
        print(f"{path}: {len(train):,} train / {len(val):,} held-out blocks of {args.seq_len} tokens")
        return train, val, []
    records = data.read_records(path)
    train, val = data.split_records(records, args.val_fraction, args.seed)
    (train_ex, n_train), (val_ex, n_val) = (data.tokenize_records(r, tok, args.seq_len) for r in (train, val))
    print(f"{path}: {len(train):,} train / {len(val):,} held-out records; {n_train + n_val:,} longer than --seq-len "
          f"{args.seq_len} truncated")
    return train_ex, val_ex, val


def causal_lm_loss(model, batch):
    """Summed next-token cross-entropy over the labelled tokens, and their number: logits at t predict token t+1.
    Every loss function returns (sum, count); the loop divides by the count of the whole optimizer step."""
    logits = model(batch["input_ids"])                         # (B, T, vocab)
    labels = batch["labels"][:, 1:]                            # (B, T-1)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=data.IGNORE,
                           reduction="sum")
    return loss, (labels != data.IGNORE).sum()


def micro_batches(examples, args, start, pad_id):
    """Micro-batches epoch after epoch from the start-th on. The order is a function of the seed and the epoch only,
    so a resumed run sees exactly the batches the interrupted one would have seen."""
    lengths, n = [len(e["input_ids"]) for e in examples], math.ceil(len(examples) / args.batch_size)
    epoch, i = divmod(start, n)
    while True:
        for idx in data.length_grouped_batches(lengths, args.batch_size, args.seed + epoch)[i:]:
            yield {k: v.to(args.device) for k, v in data.collate([examples[j] for j in idx], pad_id).items()}
        epoch, i = epoch + 1, 0


@torch.no_grad()
def evaluate(model, examples, loss_fn, args, autocast, pad_id):
    """Mean loss per labelled token over the validation examples."""
    model.eval()
    order, total, count = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"])), 0.0, 0
    for s in range(0, len(order), args.batch_size):
        batch = data.collate([examples[i] for i in order[s:s + args.batch_size]], pad_id)
        with autocast():
            loss, n = loss_fn(model, {k: v.to(args.device) for k, v in batch.items()})
        total, count = total + loss.item(), count + int(n)
    model.train()
    return total / max(count, 1)


@torch.no_grad()
def exact_match(model, tok, records, device, autocast, batch_size=50):
    """Greedy answers (KV cache, left-padded batches) to the records' prompts: (fraction equal to the reference
    output, the answers)."""
    model.eval()
    answers, new = [], max(len(tok.encode(r["output"], bos=False)) for r in records) + 2
    for s in range(0, len(records), batch_size):
        prompts = [tok.encode(data.alpaca_prompt(r)) for r in records[s:s + batch_size]]
        T = max(map(len, prompts))
        ids = torch.tensor([[0] * (T - len(p)) + p for p in prompts], device=device)      # (B, T), left-padded
        mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts], device=device)
        with autocast():
            out = generate(model, ids, new, eos_id=tok.eos_id, attention_mask=mask)[:, T:].tolist()
        answers += [tok.decode(o[:o.index(tok.eos_id)] if tok.eos_id in o else o).strip() for o in out]
    model.train()
    return sum(a == r["output"].strip() for a, r in zip(answers, records)) / len(records), answers


# ----------------------------------------------------------------------------------------------------
# Checkpoints: written into checkpoint.tmp, then swapped in for checkpoint (a crash leaves one whole checkpoint)

def save_checkpoint(args, model, opt, step, source):
    final = os.path.join(args.out, "checkpoint")
    tmp, old = final + ".tmp", final + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    save_weights(model, os.path.join(tmp, "model" if args.method == "full" else "adapter"), args, source)
    with atomic_write(os.path.join(tmp, "optimizer.pt")) as f:
        torch.save(opt.state_dict(), f)
    rng = {"torch": torch.get_rng_state(), **{f"cuda{i}": torch.cuda.get_rng_state(i)
                                              for i in range(torch.cuda.device_count())}}
    save_safetensors(rng, os.path.join(tmp, "rng.safetensors"))
    state = dict(step=step, micro_batch=step * args.grad_accum, python_rng=random.getstate(), args=vars(args))
    with atomic_write(os.path.join(tmp, "state.json"), "w") as f:
        json.dump(state, f)
    if os.path.exists(final):
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(out):
    """OUT/checkpoint, or OUT/checkpoint.old if a crash came between the two renames of save_checkpoint."""
    for d in ("checkpoint", "checkpoint.old"):
        if os.path.exists(os.path.join(out, d, "state.json")):
            return os.path.join(out, d)
    sys.exit(f"error: --resume: no checkpoint in {out}")


RESUME_MAY_CHANGE = {"out", "resume", "save_every", "eval_every", "log_every", "download", "model_dir", "device",
                     "exact_match"}


def restore(checkpoint, args, opt):
    """Optimizer, RNG states and step from a checkpoint written by the same command (hyper-parameters checked)."""
    with open(os.path.join(checkpoint, "state.json")) as f:
        state = json.load(f)
    changed = [k for k, v in vars(args).items() if k not in RESUME_MAY_CHANGE and state["args"].get(k) != v]
    if changed:
        sys.exit(f"error: --resume with different settings than the checkpoint's: " + ", ".join(
            f"--{k.replace('_', '-')} {state['args'].get(k)} -> {getattr(args, k)}" for k in changed))
    opt.load_state_dict(torch.load(os.path.join(checkpoint, "optimizer.pt"), map_location=args.device,
                                   weights_only=True))
    rng = load_safetensors(os.path.join(checkpoint, "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    for i in range(torch.cuda.device_count()):
        if f"cuda{i}" in rng:
            torch.cuda.set_rng_state(rng[f"cuda{i}"], i)
    v, s, g = state["python_rng"]
    random.setstate((v, tuple(s), g))
    return state["step"]


# ----------------------------------------------------------------------------------------------------
# The loop

def lr_at(step, total, args):
    """Linear warm-up over the first warmup x total steps, then cosine (or linear) decay towards 0."""
    warm = max(1, round(args.warmup * total))
    if step < warm:
        return args.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)                   # 0 -> 1 over the decay
    return args.lr * (0.5 * (1 + math.cos(math.pi * t)) if args.schedule == "cosine" else 1 - t)


def peak_mem_mib(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss     # the process's peak: KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def train(args):
    """Run the job args describe; returns the summary printed as the last line."""
    t_start, device = time.time(), torch.device(args.device)
    bf16 = args.dtype == "bf16" or args.dtype == "auto" and device.type == "cuda"
    autocast = lambda: torch.autocast(device.type, torch.bfloat16, enabled=bf16)  # noqa: E731
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    source = resolve_model(args)
    checkpoint = find_checkpoint(args.out) if args.resume else None
    tok = load_tokenizer(source)
    pad_id = tok.pad_id if tok.pad_id is not None else 0
    model = load_model(args, source, checkpoint, device, bf16)
    train_ex, val_ex, val_records = load_examples(args, tok)
    loss_fn = causal_lm_loss
    params = [p for p in model.parameters() if p.requires_grad]
    no_decay = {id(p) for m in model.modules() if isinstance(m, (RMSNorm, torch.nn.LayerNorm)) for p in m.parameters()}
    no_decay |= {id(p) for n, p in model.named_parameters() if n.endswith(".bias")}
    opt = torch.optim.AdamW([{"params": [p for p in params if id(p) not in no_decay]},
                             {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0}],
                            lr=args.lr, weight_decay=args.weight_decay)
    step = restore(checkpoint, args, opt) if checkpoint else 0
    total = args.max_steps or math.ceil(args.epochs * math.ceil(len(train_ex) / args.batch_size) / args.grad_accum)
    trainable, lora = count_trainable(model), sum(m.r * (m.base.in_features + m.base.out_features)
                                                  for m in model.modules() if isinstance(m, LoRASPLinear))
    print(f"{args.method}: {trainable:,} trainable of {count_params(model):,} parameters" + (
        f"; LoRA at r={args.rank} would train {lora:,} ({trainable / lora:.2f}x)" if lora else "") +
        f"; {total} steps of {args.batch_size} x {args.grad_accum} sequences; {'bf16' if bf16 else 'fp32'} on {device}")
    summary = dict(method=args.method, trainable_params=trainable, total_params=count_params(model))
    if args.exact_match and not checkpoint:
        summary["exact_match_before"], before = exact_match(model, tok, val_records[:args.exact_match], device,
                                                            autocast)
        print(f"held-out exact match before training: {summary['exact_match_before']:.1%}")
    os.makedirs(args.out, exist_ok=True)
    log_path = os.path.join(args.out, "metrics.jsonl")
    kept = [] if not checkpoint or not os.path.exists(log_path) else [  # drop what came after the checkpoint
        line for line in open(log_path) if json.loads(line)["step"] <= step]
    with open(log_path, "w") as f:
        f.writelines(kept)
    log = open(log_path, "a")
    stream, stop = micro_batches(train_ex, args, step * args.grad_accum, pad_id), []

    def on_sigint(signum, frame):  # finish the step, save, exit; a second Ctrl-C stops at once
        stop.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nCtrl-C: saving a checkpoint after this step (press again to quit without saving)", flush=True)

    previous_handler = signal.signal(signal.SIGINT, on_sigint)
    first, t0, tokens, losses, loss_value, val_loss = step, time.time(), 0, [], float("nan"), None
    try:
        while step < total and not stop:
            loss_sum, count = 0.0, 0
            for _ in range(args.grad_accum):
                batch = next(stream)
                with autocast():
                    loss, n = loss_fn(model, batch)
                loss.backward()                                # gradients of the summed loss, divided below
                loss_sum, count, tokens = loss_sum + loss.detach(), count + n, tokens + int(batch["attention_mask"].sum())
            loss_value = (loss_sum / count).item()
            for p in params:
                if p.grad is not None:
                    p.grad /= count                            # the mean over the step's tokens: one big batch
            norm = torch.nn.utils.clip_grad_norm_(params, args.clip)
            if not (math.isfinite(loss_value) and math.isfinite(norm)):
                raise FloatingPointError(
                    f"loss {loss_value}, gradient norm {norm.item()} at step {step + 1}: stopped without saving this "
                    f"state; the last good checkpoint is kept in {os.path.join(args.out, 'checkpoint')}. Try a lower "
                    "--lr, --dtype fp32, or --clip")
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, args)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step, losses = step + 1, losses + [loss_value]
            if step % args.log_every == 0 or step == total:
                dt = time.time() - t0
                rec = dict(step=step, loss=sum(losses) / len(losses), lr=opt.param_groups[0]["lr"],
                           tokens_per_s=tokens / dt, peak_mem_mib=peak_mem_mib(device))
                eta = (total - step) * dt / (step - first)
                print(f"step {step:>5}/{total}  loss {rec['loss']:.4f}  lr {rec['lr']:.2e}  {rec['tokens_per_s']:,.0f} "
                      f"tok/s  ETA {eta // 60:.0f}m{eta % 60:02.0f}s  peak {rec['peak_mem_mib']:,.0f} MiB", flush=True)
                log.write(json.dumps(rec) + "\n")
                losses = []
            if args.eval_every and step % args.eval_every == 0 or step == total:
                val_loss = evaluate(model, val_ex, loss_fn, args, autocast, pad_id) if val_ex else None
                print(f"step {step:>5}/{total}  validation loss {val_loss:.4f}" if val_ex else "", flush=True)
                log.write(json.dumps(dict(step=step, val_loss=val_loss)) + "\n")
            log.flush()
            if args.save_every and step % args.save_every == 0 or step == total or stop:
                save_checkpoint(args, model, opt, step, source)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        log.close()
    train_s = time.time() - t0
    if stop:
        summary["interrupted"] = True
    else:
        save_weights(model, os.path.join(args.out, "model" if args.method == "full" else "adapter"), args, source)
    if args.exact_match and not stop:
        summary["exact_match_after"], after = exact_match(model, tok, val_records[:args.exact_match], device, autocast)
        print(f"held-out exact match after training: {summary['exact_match_after']:.1%}")
        if not checkpoint:
            r = val_records[0]
            print(f"sample: {r['instruction']!r} {r['input']!r} -> expected {r['output']!r}\n"
                  f"  before: {before[0]!r}\n  after:  {after[0]!r}")
    summary.update(steps=step, tokens_per_s=round(tokens / train_s, 1), peak_mem_mib=round(peak_mem_mib(device), 1),
                   final_loss=round(loss_value, 6), val_loss=val_loss and round(val_loss, 6),
                   wall_s=round(time.time() - t_start, 1), out=args.out)
    return summary


# ----------------------------------------------------------------------------------------------------
# The offline demo: a small Llama pretrained on generated text (cached), taught an instruction task with LoRA-SP

def prepare_demo(args):
    """(model directory, task file) for the demo, made offline: an Alpaca-format JSON of generated instructions
    with checkable answers, and a 4-layer Llama pretrained once on generated sentences stating the same skills in
    plain words (so the fine-tuning teaches the format, and the knowledge comes from pretraining)."""
    model_dir, task = data.cache_dir("models", "demo-llama"), data.cache_dir("data", "demo_tasks.json")
    if not os.path.exists(task):
        os.makedirs(os.path.dirname(task), exist_ok=True)
        with atomic_write(task, "w") as f:
            json.dump(data.demo_records(3000, seed=1), f, indent=1)
    if has_weights(model_dir):
        print(f"demo model: {model_dir} (pretrained by an earlier run)")
        return model_dir, task
    work = model_dir + ".pretrain"
    shutil.rmtree(work, ignore_errors=True)
    init, corpus = os.path.join(work, "init"), os.path.join(work, "corpus.txt")
    os.makedirs(init)
    lines = data.demo_corpus(DEMO_PRETRAIN["docs"], seed=0)
    with open(corpus, "w") as f:
        f.write("\n".join(lines) + "\n")
    data.train_sentencepiece(lines[:2000] + list(data.PROMPT_DICT.values()) * 20, os.path.join(init, "tokenizer.model"),
                             DEMO_PRETRAIN["vocab"])
    torch.manual_seed(0)
    config = get_config("llama-tiny")
    for k, v in DEMO_PRETRAIN["config"].items():
        setattr(config, k, v)
    config.vocab_size = load_tokenizer(init).vocab_size
    save_pretrained(build_model(config), init)
    print(f"pretraining the demo model ({config.n_layer} layers, {config.n_embd} wide) on {len(lines):,} generated "
          f"documents; cached in {model_dir} for later runs")
    train(parse_args(["--model", init, "--data", corpus, "--method", "full", "--out", work, "--device", args.device,
                      *DEMO_PRETRAIN["flags"]]))
    os.replace(os.path.join(work, "model"), model_dir)
    shutil.rmtree(work)
    return model_dir, task


DEMO_PRETRAIN = dict(docs=5000, vocab=400, config=dict(n_layer=4, n_embd=128, n_head=4, n_kv_head=4, n_ffn=336),
                     flags=["--lr", "3e-3", "--epochs", "1", "--batch-size", "16", "--grad-accum", "1", "--seq-len",
                            "128", "--val-fraction", "0.01", "--eval-every", "0", "--save-every", "0",
                            "--weight-decay", "0.1", "--log-every", "50"])
REAL_JOB = ("python train.py --model llama2-7b --data alpaca --quant nf4 --checkpointing selective --download "
            "--out out/llama2-7b-alpaca")


def main(argv=None):
    args = parse_args(argv)
    demo = args.model is None
    if demo:
        args.model, args.data = prepare_demo(args)
    try:
        summary = train(args)
    except FloatingPointError as e:
        sys.exit(f"error: {e}")
    if summary.get("interrupted"):
        print(f"interrupted at step {summary['steps']}: checkpoint saved in {os.path.join(args.out, 'checkpoint')}. "
              f"Resume with:\n  python train.py {' '.join(sys.argv[1:] if argv is None else argv)} --resume")
    elif demo:
        print(f"adapter saved in {os.path.join(args.out, 'adapter')}\nthe real job (a GPU with 24 GB; needs the "
              f"Llama 2 licence accepted on the Hub and HF_TOKEN set):\n  {REAL_JOB}")
    print(json.dumps(summary))
    if summary.get("interrupted"):
        sys.exit(130)


if __name__ == "__main__":
    main()
