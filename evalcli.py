"""evalcli.py: eval.py's command line: its flags, which task reads each, and the checks of what the user names with
them, all but --seq-len's made before a weight is read: a train.py run's folder given for --model, --adapter, --data
or --prompts (its model/, adapter/ or heldout.jsonl stands in, or the error says which to give), and what the adapter
recorded of the base it trained on (--quant auto follows its NF4; another base's files, another task's head are said).

- `parse_args(argv)`: (args, the flags argv gave), checked; argparse's own errors (a value out of range, --task
  without --model, perplexity without --data) exit with status 2, a flag the task does not read prints a note.
  `seq_len_for`: --seq-len against the model once it loaded (its positions, sliding window, context).
- `model_path`, `not_a_model`, `adapter_folder`, `input_file`: what --model, --adapter, --data and --prompts name
  (train.py refuses an adapter given as its --model with not_a_model too); `base_quant`: the --quant the base loads
  with, and the adapter's base checked against this one.
Leaves out: running the task (eval.command does, after parse_args) and fetching a model (train.py --download).
`python eval.py --help` prints every flag.
"""
import argparse
import json
import os
import sys

import torch

from checkpoint import files_fingerprint
from data import GLUE, UserError, cache_dir, task_kind
from download import has_weights, no_model, resolve_model
from lorasp import adapter_base
from model import PRESETS, check_window, device_problem, positions

# ----------------------------------------------------------------------------------------------------
# The flags, checked

TASKS = ["mmlu", "perplexity", "generate", *(f"glue/{t}" for t in GLUE), "wmt16-en-ro", "squad"]
# the tasks that read each flag (given to another task, it is noted as having no effect)
READS = {"--subjects": "mmlu", "--shots": "mmlu", "--limit": "mmlu glue wmt16-en-ro squad", "--data": "perplexity",
         "--seq-len": "perplexity mmlu glue squad", "--stride": "perplexity squad", "--prompts": "generate",
         "--max-new-tokens": "generate wmt16-en-ro", "--num-beams": "wmt16-en-ro",
         "--batch-size": "glue wmt16-en-ro squad", "--data-dir": "mmlu glue wmt16-en-ro squad"}


def parser():
    ap = argparse.ArgumentParser(description="Evaluate a checkpoint, with or without an adapter, or plot loss curves. "
                                             "Without arguments: a demonstration of the metrics.")
    a = ap.add_argument
    a("--task", choices=TASKS, help="what to evaluate")
    a("--model", help="checkpoint directory (Hugging Face or Meta layout, with its tokenizer)")
    a("--adapter", help="adapter directory (lorasp.save_adapter's, or a PEFT LoRA adapter)")
    a("--quant", choices=["auto", "none", "nf4"], default="auto", help="NF4 base linears, quantized on load (auto: "
      "as the adapter trained, else none)")
    a("--dtype", choices=["float32", "bfloat16", "float16"],
      help="compute dtype (default: config.json's torch_dtype, else the checkpoint's)")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    a("--data-dir", help=f"mmlu: the release's data/ folder (default: downloaded to {cache_dir('mmlu')}); glue: a "
      f"glue_data/ folder (default: the cache, downloaded); squad: dev-v1.1.json's folder (default: the cache, "
      f"downloaded); wmt16-en-ro: test.jsonl or test.en + test.ro (default: "
      f"{cache_dir('wmt16-en-ro')})")
    a("--subjects", nargs="+", help="mmlu: these subjects only (file names without _test.csv)")
    a("--shots", type=int, default=5, help="mmlu: worked dev examples before each question")
    a("--limit", type=int, help="mmlu: at most this many questions per subject; glue, wmt16-en-ro, squad: the first N "
      "examples of each dev/test set")
    a("--data", help="perplexity: a text file, or Alpaca-format .json/.jsonl records")
    a("--seq-len", type=int, help="perplexity window / mmlu prompt limit (default: the model's context); glue: pairs "
      "cut to this length (default 128, the paper's); squad: window length (default 384)")
    a("--stride", type=int, help="perplexity: windows start this many tokens apart (default: --seq-len); squad: "
      "context tokens between window starts (default 128)")
    a("--prompts", help="generate: instructions, one per line, or Alpaca .json/.jsonl records")
    a("--max-new-tokens", type=int, default=128, help="generate, wmt16-en-ro: at most this many tokens an answer / "
      "a translation")
    a("--num-beams", type=int, default=4, help="wmt16-en-ro: beam width (1: greedy); length penalty 0.6")
    a("--batch-size", type=int, default=32, help="glue, wmt16-en-ro: examples per forward pass; squad: "
      "windows")
    a("--plot", nargs="+", metavar="RUN_DIR", help="draw the loss curves in these runs' metrics.jsonl")
    a("--out", default="loss.svg", help="--plot: the SVG file to write")
    return ap


def no_effect(flags, why):
    """The note for flags given that the command does not read (each was once silently unused)."""
    if flags:
        print(f"note: {', '.join(flags)} {'has' if len(flags) == 1 else 'have'} no effect{why}")


def parse_args(argv=None):
    """(args, the flags argv set): ranges, the device, what the task needs, and what --model, --adapter, --data and
    --prompts name, checked before the model loads; a note for each flag the task does not read."""
    ap = parser()
    args = ap.parse_args(argv)
    for flag, low in (("shots", 0), ("limit", 1), ("seq_len", 2), ("stride", 1), ("max_new_tokens", 1),
                      ("num_beams", 1), ("batch_size", 1)):                # (0 or less: empty or endless loops)
        if (v := getattr(args, flag)) is not None and v < low:
            ap.error(f"argument --{flag.replace('_', '-')}: {v} is out of range: must be an integer >= {low}")
    if problem := device_problem(args.device):
        ap.error(problem)
    unset = object()                                           # the flags argv sets, however written
    given = {"--" + k.replace("_", "-") for k, v in vars(ap.parse_args(argv, argparse.Namespace(
        **{x.dest: unset for x in ap._actions}))).items() if v is not unset}
    if args.plot:                                              # --plot draws, and evaluates nothing
        no_effect(sorted(given - {"--plot", "--out"}), " with --plot (it draws the runs' loss curves and evaluates "
                  "nothing)")
    if args.plot or not args.task:                             # (no --task: the metrics' demonstration)
        return args, given
    if not args.model:
        ap.error(f"--task {args.task} needs --model")
    task = args.task
    unused = [f for f, tasks in READS.items() if f in given and task.split("/")[0] not in tasks.split()]
    no_effect(unused + ["--out"] * ("--out" in given), f" with --task {task}" + " (--out names --plot's SVG)" * (
        "--out" in given))
    if need := {"perplexity": "data", "generate": "prompts"}.get(task):
        if not getattr(args, need):
            ap.error(f"--task {task} needs --{need}")
        setattr(args, need, input_file(need, getattr(args, need)))  # before the model loads
    args.adapter = args.adapter and adapter_folder(args.adapter)
    args.quant = base_quant(args.model, args.adapter, args.quant, task)
    model_path(args.model)                                     # a mistyped --model: said before any download
    return args, given


def seq_len_for(args, given, config, causal, context):
    """The length squad's windows and GLUE's pairs are cut at (--seq-len, else 384 or 128), checked once the model
    loaded: within its positions and sliding window, a warning past a causal LM's context (eval.context_length's;
    MMLU and perplexity take one); squad's window flags on a causal LM, which answers by generation, noted."""
    task, length = args.task, args.seq_len or (384 if args.task == "squad" else 128)
    cut = task.startswith("glue/") or task == "squad" and not causal or task in ("mmlu", "perplexity") and args.seq_len
    if cut and (room := positions(config)) and length > room:  # (GPT-2's forward refuses, maybe hours in)
        raise UserError(f"--seq-len {length}{'' if args.seq_len else ' (the default)'}: {args.model} has {room} "
                        f"positions; use --seq-len {room} or less")
    check_window(config, args.seq_len, args.model)
    if task in ("mmlu", "perplexity") and (args.seq_len or 0) > context:  # RoPE runs on
        print(f"warning: --seq-len {args.seq_len} is past the model's context ({context} tokens): "
              "positions it never trained on", file=sys.stderr)
    if task == "squad" and causal:                             # (READS: an encoder's windows)
        no_effect([f for f in ("--seq-len", "--stride", "--batch-size") if f in given], f": {args.model} is a "
                  "causal LM, which answers each question by greedy generation from its context (cut to fit), one "
                  "at a time")
    return length


def input_file(flag, path):
    """--data/--prompts: a file. A train.py run's --out folder stands for its heldout.jsonl (the records no step
    trained on, as its evaluate: line says); any other folder, or no file, is an error naming the flag."""
    if os.path.isfile(held := os.path.join(path, "heldout.jsonl")):
        print(f"note: --{flag} {path} is a train.py run's folder: its held-out records, {held}")
        return held
    if os.path.isdir(path):
        raise UserError(f"--{flag} {path} is a folder: give a file (a text file, or Alpaca-format .json/.jsonl "
                        "records), or a train.py run's --out folder with its heldout.jsonl")
    if not os.path.isfile(path):
        raise UserError(f"--{flag} {path}: no such file")
    return path


# ----------------------------------------------------------------------------------------------------
# What --model and --adapter name: a model or an adapter, or a train.py run's folder holding one; the adapter's base

def model_path(name):
    """--model as load_pretrained takes it: a checkpoint directory or .gguf file, or a preset's cache folder (where
    train.py puts it, as train.py resolves it); anything else is refused, naming the flag."""
    if error := not_a_model(name):
        raise error
    if not (os.path.isdir(name) or os.path.isfile(name) and name.endswith(".gguf") or name in PRESETS):
        raise no_model(name, PRESETS)
    return resolve_model(argparse.Namespace(model=name, model_dir=None, download=None))  # None: eval.py cannot fetch


def not_a_model(path, train=False):
    """The error for --model given an adapter, or a train.py run's --out folder (or its checkpoint/), where a model
    was meant: what to give instead; None for anything else (load_pretrained names what else is wrong)."""
    if not os.path.isdir(path) or has_weights(path) or any(os.path.isfile(os.path.join(path, f)) for f in (
            "config.json", "params.json")):
        return None
    adapter, model = run_folder(path)
    if model:
        return UserError(f"--model {path} is a train.py run's folder: its fine-tuned model is --model {model}" + (
            f" (and {adapter} an adapter: two runs' results)" if os.path.isdir(adapter) else ""))
    if (cfg := adapter_config(adapter)) is None:
        return None
    base = cfg.get("base_model_name_or_path") or "its base model"
    what = "an adapter (adapter_config.json)" if adapter == path else "a train.py run's folder"
    return UserError(f"--model {path} is {what}, not a model: " + (
        f"train.py trains a new adapter on a base model (this one's: --model {base}); to go on with its run: "
        "--resume, with --out the run's folder" if train else f"give its base, --model {base}, and --adapter "
                                                             f"{adapter}"))


def run_folder(path):
    """(adapter, model) of a folder: its adapter, itself where it holds adapter_config.json, else a train.py run's
    adapter/ (there or not); a train.py run's model/ (--method full's) where it holds weights, else None."""
    adapter = path if os.path.isfile(os.path.join(path, "adapter_config.json")) else os.path.join(path, "adapter")
    return adapter, model if has_weights(model := os.path.join(path, "model")) else None


def adapter_folder(path):
    """--adapter: an adapter's folder; a train.py run's --out folder (or its checkpoint/) stands for its adapter/."""
    inner, model = run_folder(path)
    if inner != path and os.path.isfile(os.path.join(inner, "adapter_config.json")):
        if model:                                              # --out of a --method full run and an adapter's
            raise UserError(f"--adapter {path} is a train.py run's folder with two runs' results, adapter/ and model/ "
                            f"(--method full's): give --adapter {inner}, or --model {model}")
        print(f"note: --adapter {path} is a train.py run's folder: its adapter, {inner}")
        return inner
    if model and inner != path:                                # (was "no adapter_config.json; not an adapter folder")
        raise UserError(f"--adapter {path} is a --method full run's folder: it trained the whole model, which is "
                        f"--model {model} (without --adapter)")
    if os.path.isfile(os.path.join(last := os.path.join(path, "checkpoint", "adapter"), "adapter_config.json")) and \
            not os.path.exists(os.path.join(path, "adapter")):
        raise UserError(f"--adapter {path}: the run has no result yet (stopped before its end, or still running): its "
                        f"last checkpoint's adapter is --adapter {last} (or finish the run: train.py ... --resume)")
    return path


def trained_file(adapter, trained, path):
    """The name of the .gguf the adapter trained on, where `path` is one (its fingerprint hashed that name: a symlink
    or a renamed copy of the file is the same base); else None. (Adapters from before `file`: their base's path.)"""
    if not os.path.isfile(path) or (cfg := adapter_config(adapter)) is None:
        return None
    name = trained.get("file") or os.path.basename(str(cfg.get("base_model_name_or_path")))
    return name if name.endswith(".gguf") else None


def adapter_config(folder):
    """folder's adapter_config.json as a dict; None where it cannot be read (load_adapter names what is wrong)."""
    try:
        with open(os.path.join(folder, "adapter_config.json")) as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


def base_quant(name, adapter, quant, task=None):
    """The --quant to load the base with ('auto': the one the adapter trained on, as train.py recorded it; else
    none), and a warning when this base is not the adapter's: an adapter learns its base's weights, NF4's rounding
    included, so on other weights it scores otherwise (tests/test_train.py measures both ways). Also a warning for a
    GLUE adapter scored on another GLUE task (with as many labels its head loads, and its scores mean nothing)."""
    trained = adapter_base(adapter) if adapter else {}
    if quant == "auto":
        quant = trained.get("quant") or "none"
        if trained.get("quant") == "nf4":
            print(f"--quant nf4: --adapter {adapter} trained on the NF4-quantized base")
    elif trained.get("quant") not in (None, quant):
        print(f"warning: --adapter {adapter} trained on a {'NF4' if trained['quant'] == 'nf4' else 'unquantized'} "
              f"base; --quant {quant} scores it on other weights than it learned on (without --quant, eval.py "
              "follows the adapter)", file=sys.stderr)
    if trained.get("fingerprint") and trained["fingerprint"] != files_fingerprint(
            path := model_path(name), name=trained_file(adapter, trained, path)):
        print(f"warning: --adapter {adapter} trained on a base whose files differ from {path}'s (another model, or "
              "a re-download or re-conversion): its scores here may not be the run's", file=sys.stderr)
    head = {"glue": "a classifier head", "squad": "a span head"}.get(task_kind(str(trained.get("task"))))
    if head and task and task_kind(task) != task_kind(trained["task"]):  # its head's tensors would not load
        raise UserError(f"--adapter {adapter} trained on {trained['task']}, with {head}: --task {task} does not "
                        f"score it (--task {'glue/TASK' if head == 'a classifier head' else 'squad'} does)")
    labels = {t: len(GLUE[t[5:]][4] or [0]) for t in (str(trained.get("task")), str(task)) if t[5:] in GLUE}
    if len(set(labels.values())) == 2:                      # the head's tensors would not load: a size mismatch
        raise UserError(f"--adapter {adapter} trained on {trained['task']}, whose head has {labels[trained['task']]} "
                        f"outputs; --task {task} has {labels[task]}" + (" (a score)" if labels[task] == 1 else
                                                                        " labels") + f": score it on --task "
                        f"{trained['task']}, or train an adapter on {task}")
    if str(trained.get("task")).startswith("glue/") and task != trained["task"]:
        print(f"warning: --adapter {adapter} trained on {trained['task']}, not {task}: its head's classes are "
              f"{trained['task'][5:]}'s", file=sys.stderr)
    return quant

