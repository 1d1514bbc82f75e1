"""evalcli.py: eval.py's command line: its flags, which task reads each, the checks of what the user names with them,
all made before a weight is read, and the model they name, loaded: a train.py run's folder given for --model, --adapter,
--data or --prompts (its model/, adapter/ or heldout.jsonl stands in, or the error says which to give), what the adapter
recorded of the base it trained on (--quant auto follows its NF4; another base's files, its tokenizer's,
another task's head are said).

- `parse_args(argv)`: (args, the flags argv gave), checked; argparse's own errors (a value out of range, --task
  without --model, perplexity without --data, --subjects or --plot given twice, a path beginning with a ~ the shell
  left, a --plot --out where nothing can be written) exit with status 2, a flag the task does not read or given twice
  prints a note.
  `seq_len_for`: --seq-len against the model's config (its positions, sliding window, context); `task_data`: the
  task's data, read before the model loads (`mmlu_rows`: --subjects' rows, in --data-dir); `mmlu_encoder`: MMLU's
  prompt ids with each header tokenized once, the same ids (`breaks_at_newline`: where the tokenizer allows the cut).
- `model_path`, `adapter_folder`, `input_file`: what --model, --adapter, --data and --prompts name (checks.py's
  not_a_model: an adapter or a run's folder given as --model, train.py's too); `base_quant`: the --quant the base
  loads with, and the adapter's base checked against this one (`other_base`: a PEFT adapter's base_model_name_or_path
  naming another model, by name: paths differ between machines; an adapter the base holds merged already, export.py's
  record says (its files' adapter_digest there), refused: its update would count twice; `base_weights`, once it loads:
  the same by its weights, the adapter's probe of them, where that record is lost); `write_merged`: that record,
  written into export.py's folder; `head_order`, `in_glue_order`: a fine-tuned
  classifier's outputs put in GLUE's class order, by the names its config.json gives them (run_glue.py's label_to_id).
- `load_model`: the model with its head and adapter (a random head refused), `with_adapter`, and `base_only`: the
  base for a while (--task generate's `side_by_side`; `eos_note`: the answers the tokenizer's EOS alone ended). TAKES:
  the model types each task takes. `bucket_limit`: the length eval.py's runs pad to where the loaded model multiplies
  bf16 on a CPU (train.py's, from flags: plan.bucket).
- What eval.py prints of each task (`squad_said`, `glue_said`, `translations_said`, `mmlu_said`, `answers_said`), and
  --predictions: `predictions_problem` (checked in parse_args, before the model loads), `write_predictions` (each
  example's row, `example_rows`, written whole once the run ends); `final_hidden`: the hidden states perplexity's
  loss read, for each window's NLL.
Leaves out: running the task (eval.command does, after parse_args) and fetching a model (train.py --download).
`python eval.py --help` prints every flag.
"""
import argparse
import contextlib
import errno
import itertools
import json
import os
import re
import shlex
import sys
import textwrap
import time

import torch

from checkpoint import atomic_write, files_fingerprint, read_json, release
from checks import (adapter_config, check_model, check_new_tokens, check_seq_len, context, dtype_name,  # noqa
                    given_flags, no_effect, not_a_model, not_causal, ranged, repeated, run_folder, runs_instead,
                    unexpanded, unwritable)  # (F401: evalcli.not_a_model, as before)
from data import (GLUE, SQUAD_FILES, UserError, alpaca_prompt, cache_dir, data_fingerprint, fingerprint, mmlu_dir,
                  mmlu_example, mmlu_prompt, one_per_question, perplexity_docs, read_mmlu_csv, read_prompts,
                  read_records, read_squad, read_translation, task_kind)
from tokenizer import (GPT2_PATTERN, LLAMA3_PATTERN, BPETokenizer, SentencePieceTokenizer, check_vocab, load_tokenizer,
                       sentencepiece_settings, tokenizer_changes, tokenizer_files, tokenizer_unchecked)
from download import HF_REPOS, resolve_model
from metrics import score_line, squad_f1, squad_normalize
from generate import stop_ids
from adapter import EXTRAS_FILE, MERGED, adapter_digest, merges, probe_verdict, saved_whole, whole_dir
from lorasp import LINEAR_TYPES, LoRASPLinear, adapter_base, load_adapter, matches
from model import MODELS, PRESETS, check_window, device_problem, load_pretrained  # noqa: F401  (evalcli.PRESETS)
from plan import model_config, stored_base

# ----------------------------------------------------------------------------------------------------
# The flags, checked

TASKS = ["mmlu", "perplexity", "generate", *(f"glue/{t}" for t in GLUE), "wmt16-en-ro", "squad"]
# the tasks that read each flag (given to another task, it is noted as having no effect)
READS = {"--subjects": "mmlu", "--shots": "mmlu", "--limit": "mmlu glue wmt16-en-ro squad", "--data": "perplexity",
         "--seq-len": "perplexity mmlu glue squad", "--stride": "perplexity squad", "--prompts": "generate",
         "--max-new-tokens": "generate wmt16-en-ro", "--num-beams": "wmt16-en-ro",
         "--batch-size": "glue wmt16-en-ro squad", "--data-dir": "mmlu glue wmt16-en-ro squad"}
CAUSAL = ("llama", "gpt2"), "a causal LM: this task generates or scores text with one"
TRAINED = "lorasp_trained.json"  # a --method full run's model/: its task, data file and held-out records (run_record)
# the model types a task takes, and what to call them (GLUE: load_model asks for a classifier head instead)
TAKES = {"mmlu": CAUSAL, "perplexity": CAUSAL, "generate": CAUSAL,
         "wmt16-en-ro": (("t5",), "a T5: --task wmt16-en-ro translates with T5"),
         "squad": (("roberta", "bert", "llama", "gpt2"), "an encoder with a span head (RoBERTa, BERT) or a causal LM "
                   "(Llama, GPT-2): --task squad takes those")}


def parser():
    ap = argparse.ArgumentParser(description="Evaluate a checkpoint, with or without an adapter, or plot loss curves. "
                                             "Without arguments: a demonstration of the metrics.")
    a = ap.add_argument
    a("--task", choices=TASKS, help="what to evaluate")
    a("--model", help="checkpoint directory (Hugging Face or Meta layout, with its tokenizer)")
    a("--adapter", help="adapter directory (lorasp.save_adapter's, or a PEFT LoRA adapter)")
    a("--quant", choices=["auto", "none", "nf4"], default="auto", help="NF4 base linears, quantized on load (auto: "
      "as the adapter trained, else a 4-bit checkpoint's NF4 as stored, else none)")
    a("--dtype", type=dtype_name, choices=["float32", "bfloat16", "float16"],
      help="compute dtype, or bf16, fp16, fp32 (default: config.json's dtype or torch_dtype, else the checkpoint's)")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    a("--data-dir", help=f"mmlu: the release's data/ folder (default: downloaded to {cache_dir('mmlu')}); glue: a "
      f"glue_data/ folder (default: the cache, downloaded); squad: dev-v1.1.json's folder (default: the cache, "
      f"downloaded); wmt16-en-ro: test.jsonl or test.en + test.ro (default: "
      f"{cache_dir('wmt16-en-ro')})")
    a("--subjects", nargs="+", help="mmlu: these subjects only (file names without _test.csv)")
    a("--shots", type=ranged(int, 0), default=5, help="mmlu: worked dev examples before each question")
    a("--limit", type=ranged(int, 1), help="mmlu: at most this many questions per subject; glue, wmt16-en-ro, "
      "squad: the first N examples of each dev/test set")
    a("--data", help="perplexity: a text file, or Alpaca-format .json/.jsonl records")
    a("--seq-len", type=ranged(int, 2), help="perplexity window / mmlu prompt limit (default: the model's context); "
      "glue: pairs cut to this length (default 128, the paper's); squad: window length (default 384)")
    a("--stride", type=ranged(int, 1), help="perplexity: windows start this many tokens apart (default: --seq-len); "
      "squad: context tokens between window starts (default 128)")
    a("--prompts", help="generate: instructions, one per line, or Alpaca .json/.jsonl records")
    a("--max-new-tokens", type=ranged(int, 1), default=128, help="generate, wmt16-en-ro: at most this many tokens "
      "an answer / a translation")
    a("--num-beams", type=ranged(int, 1), default=4, help="wmt16-en-ro: beam width (1: greedy); length penalty 0.6")
    a("--batch-size", type=ranged(int, 1), default=32, help="glue, wmt16-en-ro: examples per forward pass; squad: "
      "windows")
    a("--predictions", metavar="FILE", help="also write each example's row to FILE, whole once the last example is "
      "scored (Ctrl-C: nothing written; an earlier FILE is kept until then), its form by its extension: .jsonl (every "
      "task): JSON Lines, line 1 {\"run\": the JSON line printed, the command, every flag, the model's and adapter's "
      "paths and fingerprints}, then a line an example: mmlu {subject, index (0: the test file's first question), "
      "gold, prediction, correct, shots, cut, logprobs of A..D}, glue {split, index (in the dev split as read), label, "
      "prediction (STS-B: the score)}, wmt16-en-ro {index, source, reference, hypothesis}, squad {id, question, "
      "prediction, answers, exact_match, f1}, perplexity {document, begin, tokens, nll (summed), and part for "
      "records}, generate {index, record, base, adapted}; wmt16-en-ro .txt: the hypotheses, a line each, in the test "
      "pairs' order (sacrebleu test.ro -i FILE.txt); squad .json: {id: answer} (evaluate-v1.1.py's predictions); "
      "these two with the run's line beside them, in FILE.txt.run.json, FILE.json.run.json. Any other extension is "
      "refused, before the model loads")
    a("--plot", nargs="+", metavar="RUN_DIR", help="draw the loss curves in these runs' metrics.jsonl")
    a("--out", default="loss.svg", help="--plot: the SVG file to write")
    return ap


def parse_args(argv=None):
    """(args, the flags argv set): ranges, the device, what the task needs, and what --model, --adapter, --data and
    --prompts name, checked before the model loads; a note for each flag the task does not read."""
    ap = parser()
    args = ap.parse_args(argv)
    if problem := device_problem(args.device):
        ap.error(problem)
    given = given_flags(ap, argv)
    repeated(ap, argv, lists=["--subjects", "--plot"])       # argparse keeps the last, without a word
    unexpanded(ap, args, ["--model", "--adapter", "--data", "--data-dir", "--prompts", "--plot", "--out",
                          "--predictions"])
    if args.predictions and (args.plot or not args.task):     # (a file expected, none written, a note alone)
        ap.error(f"--predictions {args.predictions}: " + ("--plot draws loss curves and evaluates no example" if
                 args.plot else "no --task, no example") + ": give --task (and --model) to write each example's row")
    if args.plot:                                              # --plot draws, and evaluates nothing
        no_effect(sorted(given - {"--plot", "--out"}), " with --plot (it draws the runs' loss curves and evaluates "
                  "nothing)")
        if problem := unwritable("--out", args.out, os.path.dirname(os.path.abspath(args.out))):  # (was an SVG cut
            ap.error(problem)                                  # to 0 bytes by a full disk, the earlier one lost)
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
    if args.predictions and (problem := predictions_problem(args)):  # (not hours later, the scores printed alone)
        ap.error(problem)
    return args, given


def seq_len_for(args, given, config):
    """The length the task cuts at: squad's windows and GLUE's pairs (--seq-len, else 384 or 128), perplexity's windows
    and MMLU's prompts (--seq-len, else the model's context), a causal LM's squad prompts (its context). --seq-len is
    checked against the model's config before a weight is read: within its positions and sliding window, a warning past
    a causal LM's context; squad's window flags on a causal LM, which answers by generation, noted. GLUE's and squad's
    default length too (a toy model's positions may end before 128 or 384: that was refused only once the weights had
    loaded)."""
    task, causal = args.task, config.model_type in CAUSAL[0]
    scored, room = task in ("mmlu", "perplexity"), context(config) if causal else None  # (T5: no context length)
    length = args.seq_len or (room if scored else 384 if task == "squad" else 128)
    length = room if task == "squad" and causal else length   # (its prompts cut to fit the context: squad_records)
    if args.seq_len and scored or task.startswith("glue/") or task == "squad" and not causal:  # the default too
        check_seq_len(config, length, args.model, default=not args.seq_len)  # (GPT-2's forward refuses, maybe hours in)
    check_window(config, args.seq_len, args.model)
    if scored and room and (args.seq_len or 0) > room:         # RoPE runs on
        print(f"warning: --seq-len {args.seq_len} is past the model's context ({room} tokens): "
              "positions it never trained on", file=sys.stderr)
    if task == "squad" and causal:                             # (READS: an encoder's windows)
        no_effect([f for f in ("--seq-len", "--stride", "--batch-size") if f in given], f": {args.model} is a "
                  "causal LM, which answers each question by greedy generation from its context (cut to fit), one "
                  "at a time")
    return length


def task_data(args, tok=None):
    """The task's data, read (fetched if need be) before the model loads, so that a bad row or record is named before
    minutes of loading a 7B model: MMLU's rows (mmlu_rows: every subject's, a few MB), SQuAD's questions, WMT16's
    sentence pairs, perplexity's documents (tokenized by tok, the model's), generate's records; GLUE's: None."""
    task = args.task
    if task == "mmlu":
        args.data_dir = mmlu_dir(args.data_dir)
        if args.shots == 0:                                    # (a worked example's file: none needed)
            print(f"note: --shots 0: zero-shot prompts, no dev file read (only {os.path.join(args.data_dir, 'test')})")
        return mmlu_rows(args.data_dir, args.subjects, args.shots)
    if task == "squad":
        return one_per_question(read_squad("dev", args.data_dir))[:args.limit]
    if task == "wmt16-en-ro":
        pairs = read_translation(args.data_dir or cache_dir("wmt16-en-ro"), "test")[:args.limit]
        if not pairs:                                          # (else bleu's "need as many predictions as ...: 0, 0")
            raise UserError(f"{args.data_dir or cache_dir('wmt16-en-ro')}: its test split (test.jsonl, or test.en + "
                            "test.ro) holds no sentence pair")
        return pairs
    if task == "perplexity":
        return perplexity_docs(args.data, tok)
    if task == "generate" and args.adapter:
        untemplated(args)
    return answer_room(args, read_prompts(args.prompts), tok) if task == "generate" else None


def untemplated(args):
    """A note where --adapter trained on a .txt corpus (every token, no template) and --task generate asks it in
    Alpaca's template, which it never saw (generate.py's template note is the other way round)."""
    inner = run_folder(args.adapter)[0] if os.path.isdir(args.adapter) else args.adapter
    if str(task := adapter_base(inner).get("task")).lower().endswith(".txt"):
        print(f"note: --adapter {inner} trained on a text corpus (--data {task}: every token, no template); --task "
              "generate asks each instruction in Alpaca's template, which it never trained on: to continue text as it "
              f"learned to, python generate.py --model {args.model} --adapter {inner} --prompt TEXT", file=sys.stderr)


def answer_room(args, records, tok):
    """generate's records, their longest prompt and --max-new-tokens checked against the model's positions before it
    loads (checks.check_new_tokens, as generate.py checks its --prompt)."""
    lengths = [len(tok.encode(alpaca_prompt(r))) for r in records]
    at = max(range(len(lengths)), key=lengths.__getitem__)        # (the first of the longest)
    check_new_tokens(model_config(model_path(args.model), model_path(args.model)), lengths[at], args.max_new_tokens,
                     args.model, f"the longest prompt's {lengths[at]} tokens ({args.prompts}, prompt {at + 1})",
                     "that prompt")
    return records


def mmlu_rows(data_dir, subjects=None, shots=5):
    """{subject: (dev rows, test rows)} of the subjects to score (mmlu_subjects), each file read once (eval.mmlu
    scores these rows: it read every file a second time); shots 0: no dev file read (dev rows: [])."""
    return {s: (read_mmlu_csv(os.path.join(data_dir, "dev", f"{s}_dev.csv")) if shots else [],
                read_mmlu_csv(os.path.join(data_dir, "test", f"{s}_test.csv")))
            for s in mmlu_subjects(data_dir, subjects, dev=bool(shots))}


def mmlu_encoder(tok):
    """encode(subject, dev, row, shots): tok.encode(data.mmlu_prompt(...)), the same ids, with each header (the task
    line and worked examples: Llama 2, 1.11 ms a prompt whole, 0.38 so) tokenized once: cut before the newlines that end
    the last worked example, after its answer's letter, where breaks_at_newline says the ids break there; else whole."""
    heads, breaks = {}, breaks_at_newline(tok)

    def encode(subject, dev, row, shots):
        text = mmlu_prompt(subject, dev, row, shots)
        cut = len(text) - len(mmlu_example(row, answer=False)) - 2  # before "\n\n" + the question
        if not (breaks and shots and text[cut - 1].isalnum() and text[cut:].startswith("\n")):
            return tok.encode(text)
        if (head := text[:cut]) not in heads:
            heads[head] = tok.encode(head)
        return heads[head] + tok.encode(text[cut:], bos=False, after=True)  # (after: no "▁" or space of its own)
    return encode


def breaks_at_newline(tok):
    """Whether tok's ids of a text with a letter or digit, then "\n", are those of its two parts there, the second
    encoded as a continuation (after=True). Llama 2's sentencepiece BPE: no piece holds "\n" (<0x0A>, a byte piece,
    merges with nothing) and the text is not normalized (a Unigram's best split is not cut: left out). Byte-level BPE
    under GPT-2's or Llama 3's regex: no pre-token holds a letter or digit and the "\n" after it. Not where an added
    token holds a newline or strips spaces (flags). Any other tokenizer: False (mmlu_encoder tokenizes it whole)."""
    if tok.flags:
        return False
    if type(tok) is SentencePieceTokenizer:
        settings, n = sentencepiece_settings(tok.sp.serialized_model_proto()), tok.sp.get_piece_size()
        return (settings["model_type"] == 2 and not settings["charsmap"] and not settings["remove_extra_whitespaces"]
                and "\n" not in "".join([*tok.sp.id_to_piece(list(range(n))), *tok.added]))
    return (isinstance(tok, BPETokenizer) and tok.pattern in (GPT2_PATTERN, LLAMA3_PATTERN) and not tok.normal_form
            and not any("\n" in t for t in tok.names))


def mmlu_subjects(data_dir, subjects=None, dev=True):
    """The subjects to score: those asked (--subjects), or every one test/ holds; each with its test file and, for
    worked examples (dev), its dev file."""
    test_dir = os.path.join(data_dir, "test")
    there = sorted(f[:-len("_test.csv")] for f in os.listdir(test_dir) if f.endswith("_test.csv"))
    if not there:                                              # (else a ZeroDivisionError after the loop)
        raise ValueError(f"{test_dir}: no SUBJECT_test.csv file (MMLU's release holds 57)")
    if unknown := [s for s in subjects or () if s not in there]:  # (else "No such file" for its dev file)
        raise ValueError(f"--subjects {' '.join(unknown)}: no {os.path.join(test_dir, unknown[0] + '_test.csv')}; the "
                         f"subjects there: {', '.join(there[:6])}" + (f", ... ({len(there)})" if len(there) > 6
                                                                       else ""))
    subjects = list(dict.fromkeys(subjects)) if subjects else there  # a subject given twice is scored once
    if dev and (missing := [s for s in subjects if not os.path.isfile(os.path.join(data_dir, "dev", f"{s}_dev.csv"))]):
        raise ValueError(f"{os.path.join(data_dir, 'dev', missing[0] + '_dev.csv')}: no such file (the worked "
                         f"examples of {missing[0]}'s prompts" + (f"; {len(missing)} subjects lack theirs)" if
                                                                  len(missing) > 1 else ")"))
    return subjects


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
    if path.lower().endswith((".tsv", ".csv")):                # (read as text: its header, tabs or commas and labels
        raise UserError(                                       # scored, or answered, as words, exit 0)
            f"--{flag} {path}: a table (GLUE's .tsv, MMLU's .csv), not " + ("text" if flag == "data" else
                                                                            "instructions") +
            " (lorasp reads it as text, header, separators and labels too): GLUE scores with --task glue/TASK "
            "--data-dir GLUE_DIR, MMLU with --task mmlu --data-dir its data/ folder; for its sentences alone, save "
            "their column as a .txt" + (" (one a line)" if flag == "prompts" else ""))
    return path


# ----------------------------------------------------------------------------------------------------
# What --model and --adapter name: a model or an adapter, or a train.py run's folder holding one; the adapter's base

def model_path(name):
    """--model as load_pretrained takes it: a checkpoint directory or .gguf file, or a preset's cache folder (where
    train.py puts it, as train.py resolves it); anything else is refused, naming the flag."""
    check_model(name)
    return resolve_model(argparse.Namespace(model=name, model_dir=None, download=None))  # None: eval.py cannot fetch


def adapter_folder(path, config=False):
    """--adapter: an adapter's folder; a train.py run's --out folder (or its checkpoint/) stands for its adapter/.
    config: the folder must hold adapter_config.json, said before a weight loads (generate.py, export.py). A save
    killed between checkpoint.replace_dir's two renames (no DIR: DIR.old, the one before, beside DIR.tmp, complete):
    where each is, and what to do."""
    for d in (os.path.normpath(path), os.path.join(path, "adapter")):  # --adapter OUT/adapter, or OUT (was: "no such
        if not os.path.exists(d) and os.path.isdir(d + ".tmp") and os.path.isdir(d + ".old"):  # folder", "no result")
            raise UserError(f"--adapter {path}: the save of {d} was stopped between its two renames: {d}.tmp holds the "
                            f"new adapter (complete), {d}.old the one before it; give --adapter {d}.tmp (or .old), or "
                            f"rename {d}.tmp to {d} (train.py's next save there puts {d}.old back, dropping {d}.tmp)")
    if not os.path.exists(path):                               # (was "no adapter_config.json; not an adapter folder")
        raise UserError(f"--adapter {path}: no such folder")
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
    if config and not os.path.isfile(os.path.join(path, "adapter_config.json")):
        raise UserError(f"--adapter {path}: no adapter_config.json; not an adapter folder (train.py's OUT/adapter, "
                        "lorasp.save_adapter's or PEFT's)")
    return path


def trained_file(adapter, trained, path):
    """The name of the .gguf the adapter trained on, where `path` is one (its fingerprint hashed that name: a symlink
    or a renamed copy of the file is the same base); else None. (Adapters from before `file`: their base's path.)"""
    if not os.path.isfile(path) or (cfg := adapter_config(adapter)) is None:
        return None
    name = trained.get("file") or os.path.basename(str(cfg.get("base_model_name_or_path")))
    return name if name.endswith(".gguf") else None


def base_names(path):
    """The names a model's path or Hub id goes by, lower-cased: its last part (a folder, a repository, a .gguf with
    and without the extension), the repository of a Hub cache snapshot (models--ORG--NAME/snapshots/HASH) and of a
    preset's cache folder (models/PRESET: HF_REPOS's)."""
    path = os.path.normpath(str(path)).replace("\\", "/")
    names = {os.path.basename(path)}
    if m := re.search(r"models--[^/]+--([^/]+)/snapshots/", path + "/"):
        names.add(m[1])
    names |= {HF_REPOS[n].rsplit("/", 1)[1] for n in list(names) if n in HF_REPOS}
    return {n.lower() for n in names | {n[:-len(".gguf")] for n in names if n.endswith(".gguf")} if n}


def other_base(name, adapter, trained):
    """A note where adapter_config.json's base_model_name_or_path names another model than --model: an adapter that
    records no fingerprint of its base's files (PEFT's; lorasp's own is checked by its files) is checked against its
    base by shapes alone, and another model of the same shapes (a chat or instruct version, a fine-tune) loads it.
    The names are compared, not the paths: a path differs from machine to machine."""
    named = (adapter_config(adapter) or {}).get("base_model_name_or_path")
    if trained.get("fingerprint") or not isinstance(named, str) or not named.strip():
        return
    ours = base_names(name)
    try:
        ours |= base_names(model_path(name))                  # (a preset: its cache folder)
    except (UserError, SystemExit):                             # (said by the check that comes next)
        return
    if not base_names(named) & ours:
        print(f"note: --adapter {adapter}: its adapter_config.json names its base {named!r}, not --model {name}; "
              "an adapter that records nothing of its base's files is checked against it by shapes alone: on another "
              "model of the same shapes (a chat or instruct version, another fine-tune) it scores other weights than "
              "it trained on", file=sys.stderr)


def base_quant(name, adapter, quant, task=None, flag="--quant", prog="eval.py"):
    """The --quant to load the base with ('auto': the one the adapter trained on, as train.py recorded it; else
    none), and a warning when this base is not the adapter's: an adapter learns its base's weights, NF4's rounding
    included, so on other weights it scores otherwise (tests/test_train.py measures both ways). A GLUE adapter on
    another GLUE task is refused where the two tasks' classes differ (SST-2's head on CoLA: a score meaning nothing),
    or their sizes (its head would not load); QNLI's on RTE (the same two classes), QQP's on MRPC (the same two
    meanings, ALIKE), a warning.
    flag, prog: the flag and the command named (generate.py's --quantize)."""
    trained = adapter_base(adapter) if adapter else {}
    held, record = merges(path := model_path(name)) if adapter else ([], {})  # (its MERGED file, read once)
    digest = adapter_digest(adapter) if held and os.path.isdir(adapter) else None  # (as adapter.merged_already)
    if twice := next((m for m in held if digest and m["files"] == digest), None):   # W + 2 (alpha/r) B A, scored
        raise UserError(f"--adapter {adapter} is already merged into {path} by export.py (from --model "
                        f"{twice.get('base')}, as {twice.get('adapter')}); applying it again doubles its update: give "
                        f"--model {twice.get('base')} (the original base) or leave out --adapter")
    if held:                                                   # another adapter on top: stacked, said
        print(f"note: --model {path} holds {', '.join(str(m.get('adapter')) for m in held)} merged (export.py); "
              f"--adapter {adapter} goes on top of {'it' if len(held) == 1 else 'them'}", file=sys.stderr)
    if adapter:
        other_base(name, adapter, trained)
    if quant == "auto":  # (no adapter's record: a bitsandbytes 4-bit checkpoint's NF4 as stored, else unquantized)
        quant = trained.get("quant") or ("nf4" if stored_base(model_path(name)) else "none")
        if trained.get("quant") == "nf4":
            print(f"{flag} nf4: --adapter {adapter} trained on the NF4-quantized base")
    elif trained.get("quant") not in (None, quant):
        print(f"warning: --adapter {adapter} trained on {'an NF4' if trained['quant'] == 'nf4' else 'an unquantized'} "
              f"base; {flag} {quant} scores it on other weights than it learned on (without {flag}, {prog} "
              "follows the adapter)", file=sys.stderr)
    if not isinstance(trained.get("probe"), dict) and other_files(name, adapter, trained):  # (a probe: said once the
        files_warning(adapter, model_path(name))                                            # weights load: by them)
    if isinstance(old := trained.get("tokenizer"), dict):      # (the fingerprint's files are the weights)
        now = tokenizer_files(path := model_path(name), name=trained_file(adapter, trained, path))
        if now == record.get("tokenizer_written"):             # an export's own tokenizer files (a tokenizer.json,
            now = record.get("tokenizer_from") or now          # the same ids) as written: the base's they came from
        if which := tokenizer_changes(old, now):
            print(f"warning: --adapter {adapter} trained on a base whose tokenizer files differ from {path}'s "
                  f"({which}): its text is other token ids than the adapter learned on; its scores here may not be "
                  "the run's", file=sys.stderr)
        if unchecked := tokenizer_unchecked(old, now):       # (saved before those files were hashed)
            print(f"note: --adapter {adapter} was saved before lorasp hashed {', '.join(unchecked)}: {path}'s "
                  f"{'is' if len(unchecked) == 1 else 'are'} not checked against the files it trained with",
                  file=sys.stderr)
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
        (was, same), (now, alike) = ((GLUE_NAMES.get(t), GLUE_NAMES.get(ALIKE.get(t, t))) for t in (
            str(trained["task"])[5:], str(task)[5:]))
        if was and now and same != alike:                   # (QNLI's and RTE's are the same two: a transfer, said)
            raise UserError(f"--adapter {adapter} trained on {trained['task']}, whose head's classes are "
                            f"{', '.join(was)}: --task {task}'s are {', '.join(now)}, so its scores would mean "
                            f"nothing; score it on --task {trained['task']}, or train an adapter on {task}")
        print(f"warning: --adapter {adapter} trained on {trained['task']}, not {task}: its head's classes are "
              f"{trained['task'][5:]}'s", file=sys.stderr)
    return quant


def write_merged(directory, base, adapter):
    """export.py's MERGED file in the folder it writes (last: after its tokenizer files): the adapters the base held
    merged already (an export's, MERGED) and this one (adapter.adapter_digest: base_quant refuses it onto this folder);
    the tokenizer files export wrote and those of the base they came from, which base_quant compares an adapter's
    with while the folder's are as written (export adds tokenizer.json or tokenizer_config.json: the same ids)."""
    held, record = merges(base)
    name = trained_file(adapter, trained := adapter_base(adapter), base)
    old = record.get("tokenizer_from") if record.get("tokenizer_written") == tokenizer_files(base, name=name) else None
    entry = dict(adapter=os.path.abspath(adapter), files=adapter_digest(adapter), base=os.path.abspath(base),
                 base_fingerprint=files_fingerprint(base, name=name), trained_on=trained.get("fingerprint"))
    with atomic_write(os.path.join(directory, MERGED), "w") as f:
        json.dump(dict(merged=held + [entry], tokenizer_from=old or tokenizer_files(base, name=name),
                       tokenizer_written=tokenizer_files(directory)), f, indent=2)


# HF's glue dataset's class names, in data.GLUE's class order: what a fine-tuned checkpoint's id2label calls them
GLUE_NAMES = {"cola": ("unacceptable", "acceptable"), "sst2": ("negative", "positive"),
              "mrpc": ("not_equivalent", "equivalent"), "qqp": ("not_duplicate", "duplicate"),
              "mnli": ("entailment", "neutral", "contradiction"), "qnli": ("entailment", "not_entailment"),
              "rte": ("entailment", "not_entailment")}
ALIKE = {"qqp": "mrpc"}  # classes named otherwise that mean the same: (not) a paraphrase, GLUE's paraphrase tasks


def head_order(path, task, adapter=None):
    """The head's output for each of a GLUE task's classes, in data.GLUE's order, where the checkpoint's own head names
    them otherwise in config.json (roberta-large-mnli: contradiction, neutral, entailment), as run_glue.py's label_to_id
    maps them; None where the order is GLUE's, unnamed (LABEL_0, ...), or the adapter brings a head train.py trained
    (in GLUE's order; a PEFT adapter's head, run_glue.py's, keeps the base's). Names of other classes (an SST-2 head on
    RTE) are read in GLUE's order, with a warning."""
    names, cfg = GLUE_NAMES.get(task), adapter_config(adapter) if adapter else None
    head = cfg and any(matches(h, saved_whole(cfg)) for h in ("classifier", "score"))  # (with an old config's head)
    if not names or head and os.path.exists(os.path.join(whole_dir(adapter), EXTRAS_FILE)):  # ours: GLUE's order
        return None
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            c = json.load(f)
        label2id = c.get("label2id") or {v: int(k) for k, v in c["id2label"].items()}  # (transformers' inverse)
        label2id = {str(k).lower(): int(v) for k, v in label2id.items()}
    except (OSError, ValueError, KeyError, AttributeError, TypeError):  # no config.json (a .gguf), no names
        return None
    if set(label2id) == {f"label_{i}" for i in range(len(label2id))} or len(label2id) != len(names):
        return None                                                     # (a head of another size: load_model says)
    if sorted(label2id) != sorted(names):
        print(f"warning: {path}'s head names its classes {', '.join(sorted(label2id, key=label2id.get))} "
              f"(config.json's label2id), not glue/{task}'s {', '.join(names)}: read in GLUE's order, as run_glue.py "
              "does", file=sys.stderr)
        return None
    order = [label2id[n] for n in names]
    if order == sorted(order):
        return None
    print(f"note: {path}'s head gives {', '.join(sorted(names, key=label2id.get))} (config.json's label2id): read as "
          f"glue/{task}'s {', '.join(names)}, as run_glue.py maps them")
    return order


@torch.no_grad()
def in_glue_order(model, path, task, adapter=None):
    """model with its classifier's output rows put in GLUE's class order where head_order says the head names them
    otherwise: its logits then read by GLUE's label ids, in eval.py and in train.py alike."""
    if order := head_order(path, task, adapter):
        last = model.get_submodule(type(model).head[-1])      # BERT's classifier, GPT-2's score, RoBERTa's classifier
        last = getattr(last, "out_proj", last)                 # (its dense, then out_proj)
        for t in (last.weight, last.bias):
            if t is not None:
                t.copy_(t[order])
    return model


# ----------------------------------------------------------------------------------------------------
# The model the flags name, loaded: its head and adapter checked, and the base without the adapter (generate)

def load_model(name, adapter=None, quant="none", dtype=None, device="cpu", num_labels=0, qa=False, takes=None,
               tok=None, spill=None, warn_zero=True):
    """(model in eval mode, tokenizer) for a checkpoint directory or .gguf file (a preset: its cache folder, where
    train.py puts it), NF4-quantized if asked, with a classifier head of num_labels outputs (GLUE) or a span head
    (qa: SQuAD) and an adapter if given; takes: (the model types the task takes, what to call them), TAKES's: another
    type is refused; tok: its tokenizer, read already (perplexity's data), else read here; spill: load_pretrained's;
    warn_zero: with_adapter's."""
    name = model_path(name)
    check_kind(name, num_labels, qa, takes)
    model = load_pretrained(name, quantize=None if quant == "none" else quant, dtype=dtype, device=device, spill=spill)
    if num_labels or qa and hasattr(model, "add_qa_head"):  # (a causal LM answers SQuAD without one)
        before = set(model._modules)
        model = model.add_head(num_labels) if num_labels else model.add_qa_head()  # weights: the adapter's, loaded next
        fresh, what = sorted(set(model._modules) - before), "span" if qa else "classifier"
        if fresh and not adapter:                              # a fresh, random head: its scores would mean nothing
            raise UserError(f"--model {name} has no trained {what} head: pass --adapter "
                            "(a run's OUT/adapter brings its head) or the model a --method full run saved")
        cfg = adapter_config(adapter) if fresh else None       # (unreadable: load_adapter names what is wrong)
        if cfg is not None and not all(matches(n, saved_whole(cfg)) for n in fresh):  # (as load_adapter reads it)
            raise UserError(f"--adapter {adapter} brings no {what} head for {name} ({', '.join(fresh)}; its "
                            f"adapter_config.json's modules_to_save: {cfg.get('modules_to_save')}, task_type "
                            f"{cfg.get('task_type')}): the head would be random; pass an adapter trained on this task, "
                            "on this base")
    tok = tok or load_tokenizer(name)
    check_vocab(tok, model.config.vocab_size, name)
    return (with_adapter(model, adapter, name, warn_zero, spill) if adapter else model).eval(), tok


def check_kind(name, num_labels=0, qa=False, takes=None):
    """Refuse a model of a type the task does not take (load_model's arguments), from config.json (or the .gguf's
    header) alone: eval.py asks before the task's data is read or fetched (MMLU's tar, SQuAD's dev set)."""
    kind = model_config(name, name).model_type                 # config.json: these checks need no weight
    if num_labels and not hasattr(MODELS[kind], "add_head"):
        raise UserError(f"--model {name}: a {kind} has no classifier head; GLUE tasks take RoBERTa, BERT or GPT-2")
    if takes and kind not in takes[0]:                      # (a causal LM's task: what runs this one, named)
        runs = runs_instead(kind, name) if takes is CAUSAL else ""
        raise UserError(f"--model {name} is a {kind}, not {takes[1]}" + (f"; {runs}" if runs else ""))
    if (takes is CAUSAL or qa and not hasattr(MODELS[kind], "add_qa_head")) and os.path.isfile(  # (SQuAD: generated)
            cfg := os.path.join(name, "config.json")):        # a classifier's tied LM head would speak
        not_causal(name, kind, read_json(cfg).get("architectures"), task="squad" if qa else None)


def whole_modules(model, adapter):
    """The modules of model that the adapter brings whole (modules_to_save: a trained head), which change the model
    whatever its B A is."""
    whole = tuple(saved_whole(adapter_config(adapter) or {}))
    return [n for n, _ in model.named_modules() if whole and n.endswith(whole)]


def with_adapter(model, adapter, name, warn_zero=True, spill=None):
    """model with the adapter loaded, in eval mode; one that does not fit it is an error naming both. peft=True: for
    inference PEFT's file holds the effective A and B, so a PEFT adapter (no LoRA-SP extras) is welcome. warn_zero:
    say where (alpha/r) B A is 0 in every layer (export.py says it itself, with its counts, once merged). spill:
    load_pretrained's, where the model was loaded with one (base_weights)."""
    try:
        model = load_adapter(model, adapter, peft=True).eval()
    except RuntimeError as e:                                  # load_state_dict: a head of another shape
        raise UserError(f"--adapter {adapter} does not fit --model {name} and this task: "
                        f"{str(e).strip().splitlines()[-1].strip()}") from None
    base_weights(model, adapter, name, spill)
    layers = [m for n, m in model.named_modules() if isinstance(m, LoRASPLinear)]
    if warn_zero and layers and not whole_modules(model, adapter) and not any(
            m.lora_B.any() and m.lora_A.any() for m in layers):  # (no base weight read: an untrained one read them all)
        print(f"warning: --adapter {adapter} changes no weight of --model {name}: (alpha/r) B A is 0 in each of its "
              f"{len(layers)} layers (B = 0: an adapter that trained nothing, or PEFT's initial one); what follows is "
              "the base model's", file=sys.stderr)         # (was scored, answered with, merged as the base: no word)
    return model


def other_files(name, adapter, trained):
    """Whether the base's files are not those the adapter recorded it trained on (checkpoint.files_fingerprint)."""
    return bool(trained.get("fingerprint")) and trained["fingerprint"] != files_fingerprint(
        path := model_path(name), name=trained_file(adapter, trained, path))


def files_warning(adapter, path):
    print(f"warning: --adapter {adapter} trained on a base whose files differ from {path}'s (another model, or "
          "a re-download or re-conversion): its scores here may not be the run's", file=sys.stderr)


def base_weights(model, adapter, name, spill=None):
    """The adapter's base known by its weights, once it is loaded onto --model, where it saved a probe of them
    (adapter.weights_probe): --model that holds this adapter merged already (export.py's folder without its MERGED
    file: converted to a .gguf, its weights copied) is refused, its update would count twice; where the files differ
    from those it trained on, a note if the weights are the same (a .bin, shards, a GGUF F32 / F16 / BF16 of them), a
    warning where they are the same or this merge of them, its update too small to tell which, else base_quant's
    warning (said here, for an adapter with a probe). spill: the folder whose memory-mapped copies
    of the weights the model holds (export.py): each tensor probed is handed back (handed_back)."""
    trained = adapter_base(adapter)
    if not isinstance(trained.get("probe"), dict):
        return
    verdict, seen = probe_verdict(model, trained["probe"], LoRASPLinear, LINEAR_TYPES, whole_modules(model, adapter),
                                  handed_back(spill))
    if verdict == "merged":                                    # W + 2 (alpha/r) B A, scored (was: the warning alone)
        was = (adapter_config(adapter) or {}).get("base_model_name_or_path") or "the base it trained on"
        raise UserError(f"--adapter {adapter} is already merged into --model {model_path(name)}: its weights are the "
                        f"base it trained on plus its update (W + (alpha/r) B A, to {seen['merged']:.2%}, where the "
                        f"update is {100 * seen['update']:.2g}% of W v), as export.py writes them (its folder "
                        f"converted or copied without {MERGED}); applying it again doubles its update: give --model "
                        f"{was} (the original base) or leave out --adapter")
    if other_files(name, adapter, trained):
        if verdict is None and seen:                           # (was files_warning: "may not be the run's")
            return print(f"warning: --model {model_path(name)} holds the weights --adapter {adapter} trained on "
                         f"({seen['same']:.2%} apart where probed) or they with its update merged in "
                         f"({seen['merged']:.2%} apart): its update, {100 * seen['update']:.2g}% of W v, is too small "
                         "against the files' rounding to tell which; if --model is export.py's merge of it (copied or "
                         f"converted without {MERGED}), its update counts twice here: give the base it trained on",
                         file=sys.stderr)
        if verdict != "same":
            return files_warning(adapter, model_path(name))
        print(f"note: --model {model_path(name)}: other files than --adapter {adapter} trained on (another layout, "
              f"dtype or conversion), the same weights ({seen['same']:.2%} apart where probed: a re-conversion's "
              "rounding)", file=sys.stderr)


def handed_back(spill):
    """For probe_verdict's read, where the model holds its weights as memory-mapped copies in the folder spill
    (checkpoint.spilled: export.py): a tensor that lies in one of them (/proc/self/maps names the files) has its pages
    handed back (checkpoint.release; re-read when export.py writes it), so the probe keeps no layer in memory until
    then (7B: ~1 GB); any other is left alone (release would zero memory no file backs). None without spill."""
    if not spill or not os.path.isfile("/proc/self/maps"):
        return None
    folder, spans = os.path.realpath(spill) + os.sep, []
    with open("/proc/self/maps") as f:
        for line in f:                                         # "lo-hi perms offset dev inode path"
            fields = line.split(None, 5)
            if len(fields) == 6 and fields[5].startswith(folder):
                spans.append(tuple(int(x, 16) for x in fields[0].split("-")))

    def read(t):
        begin = t.data_ptr()
        if t.device.type == "cpu" and any(lo <= begin and begin + t.numel() * t.element_size() <= hi
                                          for lo, hi in spans):
            release(t)
    return read


@contextlib.contextmanager
def base_only(model, before):
    """The base model for a while: the modules an adapter's load replaced (its LoRASPLinear wrappers, modules_to_save's
    copies) set back to `before`'s (model.named_modules() ahead of the load), then the adapter's again."""
    now = dict(model.named_modules())
    swapped = sorted(n for n, m in before.items() if n and now.get(n) is not m)  # (a parent before its children)

    def put(modules):
        for n in swapped:
            parent, _, child = n.rpartition(".")
            setattr(model.get_submodule(parent), child, modules[n])
    put(before)
    try:
        yield model
    finally:
        put(now)


def eos_note(path, tok, ended):
    """--task generate: say (once) how many answers ended at the tokenizer's EOS alone, an id transformers' generate
    would not stop on (generation_config.json or config.json names others, or none: generate.stop_ids), as generate.py
    says it of its text. ended: each answer's stop id (None: it ran to --max-new-tokens)."""
    _, extra, why = stop_ids(path, tok)
    if n := sum(i in extra for i in ended):
        print(f"note: {n} of {len(ended)} answers stopped at the tokenizer's EOS ({extra[0]}); transformers' generate "
              f"would go on: {os.path.join(path, why)}")


def side_by_side(left, right, width=58):
    """Two texts in columns of `width` characters, each wrapped paragraph by paragraph."""
    wrap = lambda t: [line for par in t.split("\n") for line in textwrap.wrap(par, width) or [""]]  # noqa: E731
    return "\n".join(f"{a:<{width}} | {b}" for a, b in itertools.zip_longest(wrap(left), wrap(right), fillvalue=""))


def bucket_limit(model, limit):
    """limit, for eval.py's bucket (data.bucket_length's few lengths up to it), where the model multiplies bf16
    on a CPU, whose oneDNN keeps memory for every matmul shape it meets (plan.SHAPE_BYTES): bf16 weights (--dtype
    bfloat16 or a bf16 checkpoint) or CPU bf16 autocast; else None, padding to the longest as before (MKL's fp32,
    cuBLAS: nothing kept). The first parameter is the input embedding, whose dtype the linears multiply in:
    load_pretrained casts every tensor to one dtype, NF4Linear computes in its input's; heads, adapters come later."""
    p = next(model.parameters())
    autocast = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    return limit if p.device.type == "cpu" and (p.dtype == torch.bfloat16 or autocast) else None


def records_note(docs, seq_len, parts):
    """eval.records_perplexity's parts said: what is past --seq-len, and the perplexity train.py's validation loss at
    that --seq-len measures (exp(val_loss)), or why it has none; with the result's as_trained entry where it has one."""
    (p, m, cut), (_, k, past), longest = parts["cut"], parts["past"], max(len(ids) for ids, _ in docs)
    if not past:
        return (f"\nevery record fits in {seq_len} tokens (the longest: {longest}): a train.py run at --seq-len "
                f"{longest} or more validates on these tokens: exp(its val_loss) is this perplexity where both ran "
                "in one dtype (a shorter run: pass its --seq-len)"), {}
    note = (f"\n{past} of {len(docs)} records are longer than {seq_len} tokens (the longest: {longest}): their {k} "
            "tokens past it are scored in further windows, which see the record from their start only. train.py's ")
    if not cut:  # (no record left: no as_trained, whose nan would be no JSON value)
        return note + (f"validation at --seq-len {seq_len} leaves out every one (its prompt fills it): it has no "
                       "validation loss"), {}
    return note + (f"validation loss at --seq-len {seq_len} cuts them there (and leaves out the {len(docs) - cut} "
                   f"whose prompt fills it): so scored, perplexity {p:.4f} over {m} tokens, exp(its val_loss) where "
                   "both ran in one dtype"), dict(
        as_trained=dict(perplexity=p, tokens=m))


def trained_on(args, flag, path):
    """A note (or "") where --data (perplexity) or --prompts (generate) is the file --adapter (or --model, a --method
    full run's model/) trained on, known by its contents (data.data_fingerprint, which the run kept: run_record) under
    any name: its training records are read with the few held out (was said as exp(the run's val_loss) without a
    word); or where --data is another run's heldout.jsonl of that file (another --seed or --val-fraction: another
    split), the records of it the adapter or model trained on."""
    inner = run_folder(args.adapter)[0] if args.adapter and os.path.isdir(args.adapter) else ""
    if (was := run_record(inner or args.model)).get("data") is None:
        return ""
    who = f"--adapter {inner}" if inner else f"--model {args.model}"
    held = os.path.join(os.path.dirname(os.path.normpath(inner or args.model)), "heldout.jsonl")
    own = f"; the held-out records alone: {held}" if os.path.isfile(held) and not os.path.samefile(held, path) else ""
    if data_fingerprint(path) == was["data"]:
        return (f"\nnote: {flag} {path} is the file {who} trained on (its contents): " + (
            f"its training {'blocks' if path.lower().endswith('.txt') else 'records'} are scored with the ones held "
            "out, so this is not the run's held-out perplexity (nor exp(its val_loss))" if flag == "--data" else
            f"most of its instructions are ones the {'adapter' if inner else 'model'} trained on") + own)
    run = os.path.dirname(os.path.normpath(path))             # another run's heldout.jsonl: of the same file?
    if flag != "--data" or os.path.basename(path) != "heldout.jsonl" or was.get("held") is None or not any(
            run_record(os.path.join(run, *d)).get("data") == was["data"] for d in (
                ["adapter"], ["checkpoint", "adapter"], ["model"], ["checkpoint", "model"])):
        return ""
    records, kept = read_records(path, note=False), set(was["held"])  # (its notes: perplexity_docs' read)
    if trained := sum(fingerprint(r) not in kept for r in records):
        return (f"\nnote: --data {path} holds another run's held-out records of the file {who} trained on (another "
                f"split: --seed or --val-fraction): {trained} of its {len(records)} records trained {who}, so this is "
                f"not a held-out perplexity{own}")
    return ""


def run_record(folder):
    """What a train.py run's result recorded of its data ({task, data, held}, tasks.save_weights'): an adapter's
    (adapter_base), or a --method full run's model/ (its TRAINED file); {} for anything else."""
    folder = whole_dir(folder)                                # (a save stopped between its renames: DIR.old)
    if os.path.isfile(os.path.join(folder, "adapter_config.json")):
        return adapter_base(folder)
    record = read_json(os.path.join(folder, TRAINED)) if os.path.isfile(os.path.join(folder, TRAINED)) else {}
    return record if isinstance(record, dict) else {}


def answer_ids(tok):
    """The token that follows "Answer:" when the text goes on with " A" (.. " D"): SentencePiece's "▁A", byte-level
    BPE's "ĠA". Read off the tokenizer itself, so either kind (and any vocabulary) gets the token it really uses."""
    base, ids = tok.encode("Answer:", bos=False), []
    for c in "ABCD":
        full = tok.encode(f"Answer: {c}", bos=False)
        if full[:len(base)] != base or len(full) == len(base):
            raise ValueError(f"the tokenizer splits 'Answer: {c}' differently from 'Answer:': {full} vs {base}")
        ids.append(full[len(base)])
    if len(set(ids)) != 4:
        raise ValueError(f"' A'..' D' do not start with four different tokens: {ids}")
    return ids


# ----------------------------------------------------------------------------------------------------
# What eval.py prints of a task's result, and --predictions: each example's row, in a file

def squad_said(data, pred, result):
    """--task squad's lines: the first three questions' answers beside their gold ones, then the scores."""
    for qa in [a["paragraphs"][0]["qas"][0] for a in data[:3]]:
        print(f"  {qa['question']} -> {pred.get(qa['id'])!r} (gold: {[a['text'] for a in qa['answers']]})")
    print(f"SQuAD v1.1 dev, {len(data)} questions: exact match {result['exact_match']:.2f}  F1 "
          f"{result['f1']:.2f}" + (f"  BLEU {result['bleu']:.2f}" if "bleu" in result else ""))


def glue_said(task, dev, result):
    """--task glue/TASK's line for each dev split: its examples and metrics."""
    for split, scores in result.items():
        print(f"{task} {split}, {len(dev[split])} examples: " + "  ".join(f"{k} {v:.4g}" for k, v in scores.items()))


def translations_said(pairs, hypotheses, result, num_beams):
    """--task wmt16-en-ro's lines: the first three translations beside their references, then the scores."""
    for (source, target), hyp in list(zip(pairs, hypotheses))[:3]:
        print(f"  {source}\n    -> {hyp}\n    reference: {target}")
    print(f"WMT16 En-Ro test, {len(pairs)} sentences, beam {num_beams}: {score_line(result)}")


def mmlu_said(result, shots):
    """--task mmlu's line: both averages, and the prompts that held fewer worked examples than --shots, or were cut."""
    fewer = f" ({result['shortened']} prompts with fewer, to fit)" if result["shortened"] else ""
    fewer += f" ({result['cut']} cut at the start, their question's start lost: give a longer --seq-len)" * bool(
        result["cut"])  # (were said as prompts with fewer worked examples alone)
    fewer += f" (--shots {shots}: a dev file holds {result['shots']})" if result["shots"] < shots else ""
    print(f"MMLU {result['shots']}-shot{fewer}: macro {result['macro']:.4f} over {len(result['subjects'])} "
          f"subjects (their mean: QLoRA's MMLU score), micro {result['micro']:.4f} over {result['questions']} "
          "questions (evaluate.py's \"Average accuracy\")")


def answers_said(args, path, tok, records, base, tuned, ended):
    """--task generate's answers, the base's beside the adapter's, and the notes on them (eos_note, trained_on)."""
    for r, x, y in zip(records, base, tuned or [""] * len(records)):
        print(f"\n### {r['instruction']}" + (f"\n    {r['input']}" if r.get("input") else ""))
        print(side_by_side("[base] " + x, f"[{args.adapter or 'no adapter'}] " + y))
    eos_note(path, tok, ended)  # (answers transformers' generate would run on past: said once)
    if note := trained_on(args, "--prompts", args.prompts):  # (instructions the adapter trained on)
        print(note.lstrip("\n"))


@contextlib.contextmanager
def final_hidden(model, wanted=True):
    """A list that gets the hidden states (B, T, C) a causal LM's head reads, each forward while the block runs: its
    final norm's output (Llama's model.norm, GPT-2's transformer.ln_f), eval.perplexity's per window; none unwanted."""
    got, norm = [], model.model.norm if hasattr(model, "model") else model.transformer.ln_f
    hook = norm.register_forward_hook(lambda module, inputs, output: got.append(output)) if wanted else None
    try:
        yield got
    finally:
        hook is None or hook.remove()


# the extensions --predictions takes besides .jsonl (every task's): one task's outputs in the form another tool reads
OTHER_FORMS = {".txt": ("wmt16-en-ro", "the hypotheses, a line each: sacreBLEU's input"),
               ".json": ("squad", "{id: answer}: evaluate-v1.1.py's predictions file")}


def predictions_problem(args):
    """What is wrong with --predictions FILE, said before the model loads (else after hours, the scores printed
    alone): an extension the task has no form for, a folder, a folder that is not there or where nothing can be
    written, the file of the data the task reads, a path inside --model's or --adapter's folder; None if nothing."""
    path, task = args.predictions, args.task
    ext, forms = os.path.splitext(path)[1].lower(), [".jsonl", *(e for e, (t, _) in OTHER_FORMS.items() if t == task)]
    if os.path.isdir(path):
        return f"--predictions {path} is a folder: give a file's name (in it: {os.path.join(path, 'p.jsonl')})"
    if ext not in forms:
        return (f"--predictions {path}: --task {task} writes " + " or ".join(
            f"{e} ({OTHER_FORMS[e][1]})" if e in OTHER_FORMS else ".jsonl (JSON Lines, a line per example)"
            for e in forms) + f", not {ext or 'a file without an extension'}" + (
            f" ({ext} is --task {OTHER_FORMS[ext][0]}'s: {OTHER_FORMS[ext][1]})" if ext in OTHER_FORMS else ""))
    folder = os.path.dirname(os.path.abspath(path))
    if ext != ".jsonl" and os.path.isdir(beside := path + ".run.json"):
        return f"--predictions {path}: {beside}, where the run's line goes, is a folder: give another name"
    if not os.path.isdir(folder):
        return (f"--predictions {path}: no folder {folder} (eval.py makes none): make it first (mkdir -p {folder}), "
                "or give a file in a folder that is there")
    if problem := unwritable("--predictions", path, folder):
        return problem
    inputs = [("--data", args.data), ("--prompts", args.prompts)]
    if task == "squad":
        inputs.append(("--data-dir", os.path.join(args.data_dir or cache_dir("squad"), SQUAD_FILES["dev"][0])))
    if task == "wmt16-en-ro":
        pairs = args.data_dir or cache_dir(task)
        inputs += [("--data-dir", os.path.join(pairs, f"test.{e}")) for e in ("jsonl", "en", "ro")]
    for flag, f in inputs:
        if f and same_path(path, f):
            return (f"--predictions {path} is the file {task} reads ({flag}: {f}): writing it would replace the data; "
                    "give another name")
    adapter = [("--adapter", args.adapter)] if args.adapter else []
    for flag, d in [("--model", model_path(args.model))] + adapter:
        if (same := same_path(path, d)) or os.path.realpath(path).startswith(os.path.join(os.path.realpath(d), "")):
            return (f"--predictions {path} is {'' if same else 'inside '}{flag} {d}, whose files are the checkpoint's "
                    "(one written there replaces one of them, or is read with them): write it outside, beside it")
    return None


def same_path(a, b):
    """Whether paths a and b name one file: the same real path, or (both there) the same file under two names."""
    return os.path.realpath(a) == os.path.realpath(b) or os.path.exists(a) and os.path.exists(b) and os.path.samefile(
        a, b)


def example_rows(task, rows, data, out, line):
    """Each example's row: eval.py's (mmlu, glue, perplexity: rows), or made here from the task's data and outputs
    (out: squad's {id: answer}, wmt16-en-ro's hypotheses; generate's answers in the printed line)."""
    if task == "squad":
        qas = [qa for a in data for p in a["paragraphs"] for qa in p["qas"]]
        gold = [[a["text"] for a in qa["answers"]] for qa in qas]
        return [dict(id=qa["id"], question=qa["question"], prediction=(p := out.get(qa["id"])), answers=g,
                     exact_match=100.0 * max(squad_normalize(p) == squad_normalize(t) for t in g) if p is not None
                     else 0.0, f1=100.0 * max(squad_f1(p, t) for t in g) if p is not None else 0.0)
                for qa, g in zip(qas, gold)]  # (each question's, as squad_scores counts it)
    if task == "wmt16-en-ro":
        return [dict(index=i, source=s, reference=t, hypothesis=h) for i, ((s, t), h) in enumerate(zip(data, out))]
    if task == "generate":
        return [dict(index=i, record=r, **a) for i, (r, a) in enumerate(zip(data, line["answers"]))]
    return rows


def write_predictions(args, argv, line, rows, data, out):
    """--predictions FILE, written whole (checkpoint.atomic_write) in the form its extension names (the parser's
    --help): JSON Lines, the run's line first; or another tool's form, the run's line beside it in FILE.run.json."""
    path, ext = args.predictions, os.path.splitext(args.predictions)[1].lower()
    rows = example_rows(args.task, rows, data, out, line)
    adapter = args.adapter and os.path.abspath(args.adapter)
    run = dict(run=dict(result=line, command=shlex.join(["python", "eval.py", *argv]), examples=len(rows),
                        model=os.path.abspath(model_path(args.model)), model_fingerprint=files_fingerprint(
                            model_path(args.model)), adapter=adapter, adapter_files=adapter and adapter_digest(adapter),
                        written=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        flags={k: v for k, v in vars(args).items() if k not in ("plot", "out")}))
    if ext == ".txt":                                          # (a line break in one shifts every later line)
        if broken := [r["index"] for r in rows if re.search("[\r\n]", r["hypothesis"])]:
            print(f"warning: {len(broken)} hypotheses hold a line break (the first: test pair {broken[0] + 1}): "
                  f"{path} has a space there, one line each (a .jsonl keeps them)", file=sys.stderr)
        text = "".join(re.sub("\r\n|[\r\n]", " ", r["hypothesis"]) + "\n" for r in rows)
    elif ext == ".json":                                       # (no answer, no window with context: scored 0)
        text = json.dumps({r["id"]: r["prediction"] for r in rows if r["prediction"] is not None})
    else:
        text = "".join(json.dumps(r) + "\n" for r in [run, *rows])
    for name, body in [(path, text)] + [(path + ".run.json", json.dumps(run, indent=1))] * (ext != ".jsonl"):
        try:
            with atomic_write(name, "w") as f:
                f.write(body)
        except OSError as e:                                   # (a full disk: the scores printed, the file named)
            raise UserError(f"--predictions {name} ({len(body.encode()):,} bytes) could not be written: "
                            f"{e.strerror or e} ({errno.errorcode.get(e.errno, e.errno)}); " + (
                                "the file there is as it was" if os.path.exists(name) else "nothing written") +
                            " (the scores: the JSON line above)") from e
    print(f"predictions: {len(rows)} examples, {path}" + (f" (the run: {path}.run.json)" if ext != ".jsonl" else ""),
          file=sys.stderr)
