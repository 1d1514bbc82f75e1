"""resume.py: the checkpoints train.py writes so that `--resume` goes on bit for bit, and the checks that refuse a
resume that would not.

    OUT/checkpoint/  adapter/ (or model/ for --method full)  the weights, as tasks.save_weights writes them
                     optimizer.pt                            AdamW's state (tensors and numbers: weights_only=True)
                     rng.safetensors                         every DDP rank's torch (and cuda) RNG state
                     state.json                              step, data position, world size, Python's RNG, the flags,
                                                             the step losses since the last progress line, the
                                                             evaluations so far (--patience's history), the crc32
                                                             of each file above (`file_sums`), the run's last step
                                                             (`total`) and the code that computed it (`code`)
                     metrics.jsonl                           the run's log up to the step

- `save_checkpoint` writes OUT/checkpoint.tmp whole (each file fsynced), then swaps it in with two renames (OUT
  fsynced after them): a crash, a power cut, a full disk or a kill leaves one whole checkpoint (`find_checkpoint`
  takes OUT/checkpoint.old when the crash came between them).
  `claim` locks OUT for the run: a second train.py into it is refused (a kill releases the lock).
- A --resume that would not go on bit for bit is refused, each with the reason and what to do (train.py's set_up and
  load call these before the weights load; `restore` then loads optimizer, RNG states and step, or names the damaged
  file): other flags than the checkpoint's run or another number of processes (`same_settings`; RESUMABLE lists the
  flags that may change), base files whose fingerprint changed (`check_base`; export.py's merge of that base: said),
  data whose tokenized examples hash otherwise (`data_hash`; --allow-data-change, which keeps the checkpoint's
  held-out records held out: `check_data`), a damaged file (`check_sums`: one flipped bit, before any loads). One
  that goes on otherwise than its run planned says so: other code (`same_code`), another step count (`last_step`),
  another split of each step's records (--batch-size x --grad-accum kept: `same_steps`, which refuses one whose steps
  would train other records) or other recomputation (--checkpointing, --full-blocks).
- An allocation that fails in the run (torch's out of memory: `out_of_memory`) ends with what it was doing, the last
  good checkpoint, and the settings that need less by the memory plan, those that --resume takes first (`oom_error`).
Leaves out: keeping several checkpoints (one per run: the last), saving mid-step. Read train.py's save_if_due and
load for where these are called; `python -m pytest -q tests/test_train.py tests/test_train_resume.py -k resume` runs
the resume tests (21).
"""
import argparse
import contextlib
import functools
import hashlib
import io
import itertools
import json
import math
import os
import random
import shutil
import signal
import sys
import time
import tokenize
import traceback
import zlib

import torch

import plan
from adapter import merged_already, merges
from checkpoint import (DISK_FULL, atomic_write, copy_file, files_fingerprints, fsync_dir, load_safetensors, locked,
                        save_safetensors, temporaries)
from data import GLUE, UserError, cache_dir, fingerprint, holds_out, task_kind
from ddp import barrier, gathered, rank_world
from download import has_weights
from model import PRESETS
from plot import log_records
from tasks import TARGETS, save_weights, weights_dir
from tokenizer import tokenizer_changes, tokenizer_files

RESUMABLE = {"out", "resume", "save_every", "eval_every", "log_every", "download", "model_dir", "device",
             "exact_match", "threads", "bleu", "allow_data_change", "data_sha256", "base_sha256", "base_files",
             "tokenizer_files", "data_parts", "held_out", "group_rule", "checkpointing", "full_blocks",
             "plan_only"}  # what may change on --resume; the rest must
# match (data_sha256, held_out and base_sha256 have their own checks: check_data, check_base; --model, --data and
# --data-dir as a path: the files there, not how the path is written, see same_path; group_rule: the checkpoint's own;
# --checkpointing and --full-blocks recompute the same values, tests/test_checkpointing.py: same_steps says so)
ADDED = {"full_blocks": 0}  # flags newer than some checkpoints: the value a checkpoint without them ran with
# warm-up steps of --warmup x total steps (train.lr_at), as each lorasp counted them, newest first: Trainer's ceil
# (since bc3f699), round() (from a77cd20), at least one round()ed (before); state.json names its run's since 9a38efa
WARMUP_RULES = dict(ceil=math.ceil, round=round, round1=lambda x: max(1, round(x)))


def data_hash(train_ex, val_ex, args):
    """sha256 of the tokenized examples (GLUE's dev sets: {split: examples}), and args.data_parts: {part: sha256 of its
    examples} ("train", GLUE's dev splits by name, else "validation"). A data file edited, replaced or re-downloaded
    between a checkpoint and its --resume gives another hash; the parts say which changed (changed_parts). Each
    example is serialized once for both (it was twice: 16 of WMT16's 53 s before its first step)."""
    whole, args.data_parts, val = hashlib.sha256(), {}, val_ex if isinstance(val_ex, dict) else {"validation": val_ex}
    for part, examples in {"train": train_ex, **val}.items():
        h, split = hashlib.sha256(), part != "train" and isinstance(val_ex, dict)  # split: whole hashes it as JSON's
        whole.update(f"[{json.dumps(part)},[".encode() * split)                   # [name, [examples]], as before
        for k, e in enumerate(examples):
            text = json.dumps(e, separators=(",", ":")).encode()
            h.update(text)
            whole.update(b"," * (split and k > 0) + text)
        whole.update(b"]]" * split)
        args.data_parts[part] = h.hexdigest()
    return whole.hexdigest()


def rng_states(args):
    """The RNG states of this process, under DDP of every rank (gathered: call it on all of them): torch, cuda for
    rank 0; torch.1, cuda.1 for rank 1, ... Dropout draws as many numbers as a rank's micro-batch has elements, so the
    ranks' states part ways after the first step whose micro-batches differ in shape."""
    mine = {"torch": torch.get_rng_state()} | ({"cuda": torch.cuda.get_rng_state(args.device)} if
                                               args.device.startswith("cuda") else {})  # this process's GPU
    return {name + (f".{r}" if r else ""): t for name, state in mine.items()
            for r, t in enumerate(gathered(state, args.device))}


def save_checkpoint(args, model, opt, step, source, total, micro, rng, losses=(), evals=(), tokens=None, tok=None):
    """OUT/checkpoint, written whole and swapped in; `total`: the run's last step (its lr schedule's: last_step);
    `losses`: the steps' since the last progress line, whose mean the next one logs; `evals`: the validation records
    so far (--patience's history, kept in state.json too: a deleted log starts again, early stopping's count does
    not); `tokens`: the run's up to `step` (run_tokens). The log goes with it: OUT/metrics.jsonl may be another run's
    by the time this one resumes (a fresh run into the same --out that stopped before its first save). `tok`: the
    run's tokenizer, for save_weights."""
    final = os.path.join(args.out, "checkpoint")
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_weights(model, os.path.join(tmp, "model" if args.method == "full" else "adapter"), args, source, tok)
        with atomic_write(os.path.join(tmp, "optimizer.pt")) as f:
            try:
                torch.save(opt.state_dict(), summed := Summed(f))  # tensors and numbers: weights_only=True loads
            except RuntimeError as e:                          # torch's writer turns the file's OSError (a full
                raise e.__context__ if isinstance(e.__context__, OSError) else e  # disk) into "unexpected pos"
        save_safetensors(rng, os.path.join(tmp, "rng.safetensors"))  # rng_states: every rank's
        sums = file_sums(tmp, {"optimizer.pt": summed.crc})    # (before state.json's temporary file is there)
        with atomic_write(os.path.join(tmp, "state.json"), "w") as f:
            json.dump(dict(step=step, micro_batch=min(step * args.grad_accum, micro or math.inf),  # (a short last
                           world_size=rank_world()[1], ended=step >= total, total=total,  # step: --epochs)
                           python_rng=random.getstate(), code=code(), losses=list(losses),
                           warmup_rule=getattr(args, "warmup_rule", "ceil"),
                           epochs_rule=getattr(args, "epochs_rule", "round"),  # (epoch_micro_batches)
                           group_rule=getattr(args, "group_rule", "step"),  # (data.step_groups)
                           args=vars(args), crc32=sums, evals=list(evals), tokens=tokens), f)
        if os.path.exists(log := os.path.join(args.out, "metrics.jsonl")):  # (flushed by the loop; synced, as the
            copy_file(log, os.path.join(tmp, "metrics.jsonl"))               # rest)
    except BaseException as e:                                 # a full disk, a file-size limit, out of memory, a
        shutil.rmtree(tmp, ignore_errors=True)                 # second Ctrl-C: the old one stays
        if not isinstance(e, OSError):
            raise
        cause = e.__cause__ if isinstance(e.__cause__, OSError) else e  # (save_weights says which folder)
        fix = "free space" if cause.errno in DISK_FULL else "fix that"  # (EACCES)
        raise OSError(e.errno, f"saving the checkpoint of step {step} failed ({cause.strerror or cause}); " + (
            f"{final} still holds the previous one: {fix}, then --resume" if os.path.exists(final) else
            f"no earlier checkpoint exists: {fix}, then start again")) from e
    if os.path.exists(final):                                  # (a stale .old is left by a crash after the swap)
        shutil.rmtree(final + ".old", ignore_errors=True)
        os.replace(final, final + ".old")
    os.replace(tmp, final)
    fsync_dir(final)                                           # the swap made durable, before .old goes
    shutil.rmtree(final + ".old", ignore_errors=True)


def py_files(folder):
    """{name: bytes} of the .py files in folder."""
    files = {}
    for name in sorted(f for f in os.listdir(folder) if f.endswith(".py")):
        with open(os.path.join(folder, name), "rb") as f:
            files[name] = f.read()
    return files


def code_stamp(sources):
    """What computes a run's steps, as state.json's `code` names it: a fingerprint of lorasp's .py files (sources:
    {name: bytes}) as code_tokens reads them (a file that is no Python: its bytes), and torch's version. Other code
    may sum in another order (session 32 found such a change), so a --resume across a change is not bit for bit:
    restore says so (same_code); an edited comment or docstring is the same code."""
    h = hashlib.sha256()
    for name in sorted(sources):
        try:
            text = "\0".join(code_tokens(sources[name])).encode()
        except (tokenize.TokenError, SyntaxError):
            text = sources[name]
        h.update(name.encode() + b"\0" + text + b"\0\0")
    return dict(lorasp=h.hexdigest()[:12], torch=torch.__version__)


def code_tokens(source):
    """The tokens of Python source (bytes) that can change what it computes: not its comments, blank lines and line
    breaks inside brackets (NL), the indentation's width, nor a statement of strings alone (a docstring)."""
    kept, statement, T = [], [], tokenize
    for t in T.tokenize(io.BytesIO(source).readline):
        statement += [t] if t.type not in (T.COMMENT, T.NL) else []
        if t.type in (T.NEWLINE, T.ENDMARKER):                 # a statement's end
            doc = all(u.type in (T.STRING, T.INDENT, T.DEDENT, T.NEWLINE, T.ENDMARKER, T.ENCODING) for u in statement)
            kept += ["\t" if u.type == T.INDENT else u.string for u in statement  # (a docstring: its indentation)
                     if not (doc and u.type in (T.STRING, T.NEWLINE))]
            statement = []
    return kept


SOURCES = py_files(os.path.dirname(os.path.abspath(__file__)))  # as this file is imported: the files the process
# runs, not what an edit during the run left


@functools.cache
def code():
    """code_stamp of the files this process runs (SOURCES), taken at its first save or --resume, not as it imports this
    file: tokenizing lorasp's ~1 MB of Python takes ~0.4 s (reading it: ~1 ms)."""
    return code_stamp(SOURCES)


def same_code(state):
    """--resume: say so where the checkpoint's steps were computed by other code than this process's (code()), or
    by a lorasp from before state.json named it: the steps left may not be the ones its run would have taken."""
    was, now = state.get("code"), code()
    if was != now and rank_world()[0] == 0:
        print("note: --resume: the checkpoint was saved by " + (", ".join(
            f"{k} {was.get(k)}" for k in now if was.get(k) != now[k]) + " (this is " + ", ".join(
            f"{k} {now[k]}" for k in now if was.get(k) != now[k]) + ")" if was else
            "a lorasp from before checkpoints named their code") + ": the steps left may differ from those its run "
            "would have taken (other code can sum in another order), not bit for bit; the run goes on")


def run_tokens(run):
    """The tokens the run has trained on since its first step, as its step counts steps: a resumed run's are its
    checkpoint's and this process's (train.Run.tokens; the summary's `tokens` counted these alone). None after a
    checkpoint saved before they were counted."""
    return None if run.tokens_before is None else run.tokens_before + run.tokens


@contextlib.contextmanager
def stop_signals(stop):
    """Ctrl-C, SIGTERM (a job scheduler's stop) or SIGHUP (a closed ssh session, no nohup: it ended the run unsaved)
    while the block runs: its number is appended to `stop`, and the loop saves a checkpoint after the step and stops
    (train.main exits 128 + it: 130, 143, 129); a second one quits without saving (Ctrl-C: KeyboardInterrupt; the
    others: their default, killed). One ignored (nohup's SIGHUP) stays so; the handlers before are put back after."""
    def on_signal(signum, frame):
        ctrl_c = signum == signal.SIGINT
        signal.signal(signum, signal.default_int_handler if ctrl_c else signal.SIG_DFL)
        stop.append(signum)
        print(f"\n{'Ctrl-C' if ctrl_c else signal.Signals(signum).name}: saving a checkpoint after this step (" + (
            "press again" if ctrl_c else "send it again") + " to quit without saving)", flush=True)

    hangup = [signal.SIGHUP] if hasattr(signal, "SIGHUP") else []           # (Windows has none)
    previous = {s: signal.signal(s, on_signal) for s in [signal.SIGINT, signal.SIGTERM] + hangup
                if signal.getsignal(s) != signal.SIG_IGN}     # ignored as it started (nohup's SIGHUP): stays ignored
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


UNLOCKED = []  # claim's --out where no lock could be taken: said once


class Busy(UserError):
    """claim's refusal: another train.py holds --out (cli.prepare_demo must not take it for a stale checkpoint)."""


@contextlib.contextmanager
def claim(out):
    """Hold --out for the run (checkpoint.locked: an exclusive flock on the folder, made if missing; a kill releases
    it): a second train.py into the same --out is refused, where it would interleave its checkpoints, log and result
    with the first's; the temporary file a killed one left (OUT/heldout.jsonl.tmp<pid>, the one file written into OUT
    itself: the temporary folders go whole at the next save) is removed (where there are no locks, once an hour old:
    it is written in seconds, so no train.py is still writing it, on this machine or another). DDP ranks but 0 write
    nothing there and take no lock; a folder this made stays only if something went in, and so do its parents made
    with it (the demo's out/demo-real: a refused run left an empty ./out)."""
    if rank_world()[0] != 0:
        yield
        return
    made, parent = [], os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):                          # (deepest first)
        made, parent = made + [parent], os.path.dirname(parent)
    try:
        with locked(out, Busy(f"--out {out}: another train.py is running into it (their checkpoints, logs and "
                              "results would mix): wait for it to end, or pass another --out"), folder=True) as held:
            if not held and not UNLOCKED:                      # once a process (the demo's pretraining claims too)
                UNLOCKED.append(out)
                print(f"note: --out {out} is not locked: no file locks here (no fcntl: Windows; or a file system "
                      "without them), so a second train.py into it would not be refused: start one at a time")
            for stale in temporaries(os.path.join(out, "heldout.jsonl")):  # no other train.py writes here, so a
                with contextlib.suppress(FileNotFoundError):  # killed one's (unlocked: none writes for an hour; and
                    if held or time.time() - os.path.getmtime(stale) > 3600:  # another run may remove it first)
                        print(f"note: removing {stale}, left by a train.py killed while writing it")
                        os.remove(stale)
            yield
    finally:
        for d in made:                                         # (one that holds something stays, and its parents)
            with contextlib.suppress(OSError):
                os.rmdir(d)


def file_sums(folder, known=None):
    """{path under folder: crc32} of its files. state.json keeps its checkpoint's, so that --resume tells a file
    damaged or replaced since (a flipped bit in optimizer.pt loads without a word) from the one saved; crc32, not
    sha256: 1.9x faster on a CPU with SHA instructions (more without), and it guards against accidents, not an
    adversary (a 7B model's AdamW state is 56 GB: `known` holds its crc32, taken as it was written, not read back)."""
    sums = {}
    for d, _, files in os.walk(folder):
        for name in files:
            if (path := os.path.relpath(os.path.join(d, name), folder)) in (known or {}):
                sums[path] = known[path]
                continue
            crc = 0
            with open(os.path.join(d, name), "rb") as f:
                while chunk := f.read(1 << 24):
                    crc = zlib.crc32(chunk, crc)
            sums[path] = crc
    return sums


class Summed:
    """A file whose writes pass through, their crc32 taken on the way (torch.save writes a file object's write)."""
    def __init__(self, f):
        self.f, self.crc = f, 0

    def write(self, b):
        self.crc = zlib.crc32(b, self.crc)
        return self.f.write(b)

    def flush(self):
        self.f.flush()


def check_sums(checkpoint, state):
    """--resume: the checkpoint's files are the ones it saved (a checkpoint from before file_sums: not checked), before
    any is loaded; a missing file is left to its loader, which says what it held."""
    saved, now = state.get("crc32") or {}, file_sums(checkpoint)
    if bad := sorted(n for n in saved if n in now and now[n] != saved[n]):
        raise UserError(f"--resume: {os.path.join(checkpoint, bad[0])} is damaged (not the file its checkpoint saved: "
                        "its crc32 differs from state.json's); the checkpoint cannot continue the run: start again "
                        "without --resume (or with another --out)")


def find_checkpoint(out, required=True):
    """OUT/checkpoint, or OUT/checkpoint.old when a crash came between save_checkpoint's two renames; none: an error
    (required=False: None)."""
    found = [d for d in ("checkpoint", "checkpoint.old") if os.path.exists(os.path.join(out, d, "state.json"))]
    if not found:
        if not required:
            return None
        if os.path.isdir(part := os.path.join(out, "checkpoint")):  # (save_checkpoint renames whole ones: by hand)
            raise UserError(f"--resume: {part} has no state.json (the step, flags and RNG states), so it cannot "
                            "continue the run: start again without --resume (or with another --out)")
        raise UserError(f"--resume: no checkpoint in {out} (--out names the run's folder)")
    return os.path.join(out, found[0])


def demo_base(args, model_dir):
    """The offline demo's model for this run: model_dir (this version's recipe), or on --resume the demo model OUT's
    checkpoint trained on where that is another (an earlier lorasp's recipe: `demo-llama`, `demo-llama-<hash>`), so
    that the run goes on on its own weights; one deleted since, or a checkpoint of another model (`--out X --resume`
    without its --model), is an error that names it (before any pretraining).
    (take_settings reads state.json again, once train() holds --out: another run may have saved since.)"""
    checkpoint = find_checkpoint(args.out, required=False) if args.resume else None
    state = read_state(checkpoint, required=False) if checkpoint else {}
    was = state.get("args", {}).get("model")
    if not isinstance(was, str) or os.path.realpath(was) == os.path.realpath(model_dir):
        return model_dir
    if not os.path.basename(os.path.normpath(was)).startswith("demo-llama"):   # (before the demo's pretraining)
        raise UserError(f"--resume: {checkpoint} trained on --model {was} --data {state['args'].get('data')}, not the "
                        "offline demo's model: give them (and that run's other flags) with --resume")
    if not has_weights(was):
        raise UserError(f"--resume: {checkpoint} trained on the offline demo's model {was}, which is gone (an earlier "
                        f"lorasp pretrained it; this one's is {model_dir}, other weights): the adapter cannot go on "
                        "without the weights it trained on. Restore that folder, or start again without --resume")
    print(f"note: --resume: {checkpoint} trained on the offline demo's model {was} (an earlier lorasp's recipe): it "
          f"goes on on that model (a new run pretrains and uses {model_dir})")
    return was


def nan_stop(args, step, loss, norm, ours):
    """The error a non-finite loss or gradient norm stops a run with, naming the last good checkpoint when this run
    saved or resumed it (ours), not an earlier run's left in --out; at step 1 (no update yet) --lr is not the cause."""
    kept = ours and find_checkpoint(args.out, required=False)
    fp32 = ", or --dtype fp32" if args.dtype != "fp32" else ""
    return FloatingPointError(f"loss {loss}, gradient norm {norm} at step {step}: stopped without saving; " + (
        f"the last good checkpoint is kept in {kept}" if kept else
        f"this run had saved no checkpoint yet (--save-every {args.save_every})") + (
        f". Step 1 ran before any update, so --lr is not the cause: check the base model's weights and the data{fp32}"
        if step == 1 else f". Start again (without --resume, which keeps the run's flags) with a lower --lr{fp32}"))


ALLOCATORS = ("DefaultCPUAllocator", "out of memory", "not enough memory")  # torch's CPU allocator (Linux; Windows:
# "not enough memory"), CUDA's and MPS's "... out of memory" (torch.OutOfMemoryError, or a plain RuntimeError)
DOING = dict(train_step="step {next}", validate="the validation after step {step}", save_if_due="saving the "
             "checkpoint of step {step}", save_result="saving the result after step {step}", load="loading the model",
             check="the held-out check {when} training")  # train.py's functions, innermost first in a traceback
LOADING = dict(task_examples="reading --data", restore="loading the checkpoint's optimizer state")  # what load called
SHRINK = dict(load=("quant",), task_examples=(), restore=(), validate=("split", "quant", "seq_len"),
              check=("split", "quant", "seq_len"))  # what needs less there: loading, the weights; the validation and
# the check (no backward), all but recomputation; elsewhere (a step, a save) all: split, checkpointing, quant, seq_len


def allocation_failure(e):
    """Whether e is an allocation that failed: torch's out of memory (CPU, CUDA, MPS) or Python's MemoryError."""
    return isinstance(e, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))) or \
        isinstance(e, RuntimeError) and any(a in str(e) for a in ALLOCATORS)


@contextlib.contextmanager
def out_of_memory(run):
    """train.py's run: an allocation that fails in it (allocation_failure) is raised again as oom_error's UserError,
    which says what was being done, what is kept and how to go on; anything else as it came."""
    try:
        yield
    except (RuntimeError, MemoryError) as e:
        if not allocation_failure(e):
            raise
        raise oom_error(run, e) from None


def oom_error(run, e):
    """What an out of memory in train.py's run (e) tells its user: what was being done (the innermost of train.py's
    functions in its traceback: DOING), the process's peak memory so far, the last good checkpoint this run
    saved or resumed (a save the failure cut short leaves the one before: save_checkpoint swaps whole ones), and the
    settings that need less there (SHRINK) by the plan: another split of a step's records (one --resume takes from
    that step) and --checkpointing full go on with --resume; --quant nf4 and a shorter --seq-len start again. After
    training (the held-out check), the result is saved: how to end the run without the check."""
    args, frames = run.args, traceback.extract_tb(e.__traceback__)
    traceback.clear_frames(e.__traceback__)                    # the failed step's tensors go before the plans are made
    at = [i for i, f in enumerate(frames) if os.path.basename(f.filename) == "train.py" and f.name in DOING]
    name = frames[at[-1]].name if at else None
    if name == "load" and at[-1] + 1 < len(frames) and frames[at[-1] + 1].name in LOADING:
        name = frames[at[-1] + 1].name                         # (its data, or the optimizer state, not the model)
    doing = {**DOING, **LOADING}[name].format(next=run.step + 1, step=run.step, when="after" if run.t0 else
                                              "before") if name else "the run"
    kept = (run.saved or run.checkpoint) and find_checkpoint(args.out, required=False)
    step = read_state(kept, required=False).get("step") if kept else None
    peak, what = plan.peak_mem_mib(run.device), (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    said = [f"out of memory in {doing} ({what})" + (f"; this process had peaked at {peak:,.0f} MiB" if peak else "")]
    said.append(f"The last good checkpoint is kept in {kept} (step {step})" if kept else
                f"This run had saved no checkpoint (--save-every {args.save_every})")
    if name == "check" and run.t0:                             # train() saved the result before its check
        return UserError(". ".join(said + [f"Training ended: its result is saved in {weights_dir(args)}. The same "
                                           f"command with --resume and {'--bleu' if args.bleu else '--exact-match'} 0 "
                                           "ends the run without the check (eval.py scores the result)"]))
    uses = SHRINK.get(name, ("split", "checkpointing", "quant", "seq_len"))
    if run.plan_inputs:
        config, _, *rest = run.plan_inputs                     # (plan_memory's)

        def planned(change):                                   # MiB; once the data is read, the plan it makes
            changed = argparse.Namespace(**{**vars(args), **change})
            return sum((plan.with_data(config, changed, *rest, run.examples, run.val_ex, min(
                changed.batch_size, run.batch), run.rank, run.world)[0] if run.examples else plan.estimate(
                config, changed, *rest)).values()) / 2**20

        def listed(changes):                                   # the flags of each, with its plan's MiB
            return "; ".join(" ".join(f"--{k.replace('_', '-')} {v}" for k, v in c.items()) + f" ({mib:,.0f} MiB)"
                             for c, mib in changes)
        B, G, now = args.batch_size, args.grad_accum, planned({})
        split = splits(args, len(run.examples), step, B, G, run.world) if kept and run.examples else [] if kept \
            else [(b, B * G // b) for b in range(B - 1, 0, -1) if B * G % b == 0]  # (kept: those --resume takes)
        go_on = [dict(batch_size=b, grad_accum=g) for b, g in split if b < B][:2] * ("split" in uses) + [
            dict(checkpointing="full", **{"full_blocks": 0} if args.full_blocks else {})] * (  # (else argparse's
            args.checkpointing != "full" and "checkpointing" in uses)       # "--full-blocks N needs selective")
        anew = [dict(quant="nf4")] * (args.quant != "nf4" and args.method != "full" and "quant" in uses) + [
            dict(seq_len=args.seq_len // 2)] * (args.seq_len >= 4 and "seq_len" in uses)
        go_on, anew = ([(c, mib) for c in changes if (mib := planned(c)) <= now - 1] for changes in (  # (1 MiB less:
            (go_on, anew) if kept else ([], go_on + anew)))                                            # as printed)
        ways = [f"{listed(go_on)}: each goes on from the checkpoint (the same command with --resume and it)"] * bool(
            go_on) + [f"{listed(anew)}: " + ("each changes the run: start again without --resume (or with another "
                                            "--out)" if kept else "start again with one")] * bool(anew)
        said.append(f"Settings that need less, by the memory plan (this run's settings: {now:,.0f} MiB; an estimate, "
                    "and other processes may have taken memory since): " + ("; ".join(ways) or "none (a machine with "
                                                                              "more memory, or fewer processes on it)"))
    return UserError(". ".join(said))


def kept_log(out, checkpoint, step, state):
    """--resume: the log lines up to the checkpoint's step, with their records (what came after is redone; a last line
    cut off by a kill too), from the log the checkpoint keeps (none there, deleted: the log starts again; a line cut
    off there is damage, refused: save_checkpoint writes it whole; a checkpoint from before they kept one:
    OUT/metrics.jsonl). A fresh run (no checkpoint) first leaves such an earlier checkpoint
    OUT/metrics.jsonl, which it is about to rewrite: that checkpoint's --resume then reads its own run's lines.
    state: the checkpoint's state.json (restore's)."""
    log = os.path.join(out, "metrics.jsonl")
    if checkpoint is None:
        earlier = find_checkpoint(out, required=False)
        if earlier and rank_world()[0] == 0 and os.path.exists(log) and not os.path.exists(
                os.path.join(earlier, "metrics.jsonl")) and "losses" not in read_state(earlier, required=False):
            copy_file(log, os.path.join(earlier, "metrics.jsonl"))
        return []
    path = os.path.join(checkpoint, "metrics.jsonl")           # ("losses": saved since checkpoints kept their log)
    path = path if os.path.exists(path) or "losses" in state else log
    kept = [(line, r) for line, r in log_records(path, "--resume", ": delete the line, or the file to start the log "
                                                 "again") if r["step"] <= step] if os.path.exists(path) else []
    if path != log and os.path.exists(path) and "losses" in state:  # save_checkpoint's, whole
        with open(path, "rb") as f:
            f.seek(max(os.path.getsize(path) - 4096, 0))
            tail = f.read().rsplit(b"\n", 1)[-1]
        if tail:                                               # (was dropped as a kill's torn line, silently)
            raise UserError(f"--resume: {path} ends in a line cut off ({tail[:60].decode(errors='replace')!r}): its "
                            "checkpoint wrote it whole, so it was damaged since (the evaluations --patience goes on "
                            "from are in it): restore it, or delete it to resume with the log started anew")
    return kept


@contextlib.contextmanager
def heldout_aside(out, records):
    """While a result's weights are replaced: OUT/heldout.jsonl, when it holds other records than `records` (an earlier
    run's split), steps aside as heldout.jsonl.old (back in place if the save fails). A kill before save_heldout then
    leaves no held-out records beside the new weights (eval.py says so; --resume writes them), never the earlier
    run's, which these weights may have trained on."""
    held = os.path.join(out, "heldout.jsonl")
    try:
        with open(held) as f:
            aside = [json.loads(line) for line in f] != records
    except FileNotFoundError:
        aside = False
    except ValueError:                                         # (damaged: not this run's either)
        aside = True
    os.replace(held, held + ".old") if aside else None
    try:
        yield
    except BaseException:
        os.replace(held + ".old", held) if aside else None
        raise
    if os.path.exists(held + ".old"):                          # (and one a kill left)
        os.remove(held + ".old")


def read_state(checkpoint, required=True):
    """The checkpoint's state.json: step, the run's flags, RNG state; a damaged one is an error naming it (not
    required: {})."""
    try:
        with open(os.path.join(checkpoint, "state.json")) as f:
            state = json.load(f)
        if not isinstance(state, dict) or not isinstance(state.get("args"), dict) or "step" not in state:
            raise ValueError("expected an object with step and args")
    except (ValueError, OSError) as e:
        if not required:
            return {}
        raise UserError(f"--resume: {os.path.join(checkpoint, 'state.json')} is damaged ({e}); the checkpoint cannot "
                        "continue the run: start again without --resume (or with another --out)") from None
    return state


def take_settings(args):
    """--resume: OUT's checkpoint and its state.json, the flags left auto (--dtype, --quant, --checkpointing with its
    --full-blocks) set to what the checkpoint's run chose, on any machine, and how its steps group (data.step_groups)."""
    checkpoint = find_checkpoint(args.out)
    state = read_state(checkpoint)
    saved = state["args"]
    args.dtype = saved.get("dtype", "auto") if args.dtype == "auto" else args.dtype
    if args.checkpointing == "auto":
        args.full_blocks = saved.get("full_blocks", 0)
    args.quant, args.checkpointing = (saved.get(k, "none") if getattr(args, k) == "auto" else getattr(args, k)
                                      for k in ("quant", "checkpointing"))
    args.group_rule = state.get("group_rule", "micro")  # saved before steps were length-grouped whole: kept (set here,
    # before the data's memory plan counts the batches: plan.met, as train.py's stream)
    if args.patience and log_gone(checkpoint, state) and "evals" not in state:  # (before any weight is read)
        raise UserError(f"--resume: {checkpoint}/metrics.jsonl is gone, and with it the evaluations --patience "
                        f"{args.patience} counts from (this checkpoint's state.json, saved by an earlier lorasp, does "
                        "not keep them): resumed, early stopping would count from zero and stop the run later than "
                        "it would have. Restore the file, or start the run again")
    return checkpoint, state


def log_gone(checkpoint, state):
    """Whether the checkpoint's own log was deleted (one saved before checkpoints kept it: OUT's log stands in)."""
    return bool(checkpoint) and "losses" in state and not os.path.exists(os.path.join(checkpoint, "metrics.jsonl"))


def base_changed(args, was, parts):
    """The error for a base whose files' fingerprints `parts` (files_fingerprints) are not the checkpoint's, naming
    the files that differ when the checkpoint kept theirs; None when they are the same."""
    if parts[""] == (was.get("base_sha256") or parts[""]):    # (none recorded: a checkpoint from before them)
        return None
    held = list(itertools.dropwhile(lambda m: m.get("base_fingerprint") != was.get("base_sha256"),
                                    merges(str(args.model))[0]))  # (the adapters merged into this run's base on)
    if held:                                                  # export.py's merge of this run's base: said so
        twice = merged_already(str(args.model), os.path.join(args.out, "checkpoint", "adapter"))
        return UserError(f"--resume: --model {args.model} is the checkpoint's base, {held[0].get('base')}, with "
                         f"{', '.join(str(m.get('adapter')) for m in held)} merged into it by export.py" + (
                             ": the checkpoint's adapter is already merged into it; applying it again doubles its "
                             "update" if twice else "") + f": give --model {held[0].get('base')} (the original base)")
    old, now = was.get("base_files") or {}, {n: h for n, h in parts.items() if n}
    which = ", ".join(n + (" is missing" if n not in now else " is new" if n not in old else " differs")
                      for n in sorted(set(now) | set(old)) if now.get(n) != old.get(n)) if old else ""
    return UserError(f"--resume: the base model's files changed since the checkpoint (--model {args.model}: " +
                     (which or f"its files fingerprint to {parts[''][:12]}..., the checkpoint's base to "
                               f"{was['base_sha256'][:12]}...") +
                     "). The adapter trains on the weights it started on: restore them, or start again without "
                     "--resume")


def check_base(args, path, was):
    """Fingerprint the base at path, once a run (args.base_files, args.base_sha256: its checkpoints keep them), and
    refuse it when it is not the base of the checkpoint whose flags are `was` ({}: none). One file (a .gguf) is
    fingerprinted under the name the checkpoint's run read it by: a symlink or a renamed copy of it is that base."""
    if getattr(args, "base_sha256", None) is None:
        named = list(was.get("base_files") or ())
        args.base_files = files_fingerprints(path, name=named[0] if len(named) == 1 else None)
        args.base_sha256 = args.base_files.pop("")
        args.tokenizer_files = tokenizer_files(path, name=named[0] if len(named) == 1 else None)
    if error := base_changed(args, was, {**args.base_files, "": args.base_sha256}):
        raise error


def same_path(k, old, new, was):
    """--model, --data or --data-dir written another way (relative, through a symlink, a copy elsewhere): the same
    run when the files there are the checkpoint's. One folder: always; another local path: when the checkpoint kept
    the fingerprint (--model: check_base's, before the weights load; --data, --data-dir: the tokenized examples', in
    check_data)."""
    if not (isinstance(old, str) and isinstance(new, str) and os.path.exists(new)) or k == "data" and (
            os.path.splitext(old)[1].lower() not in (".json", ".jsonl", ".txt")
            or os.path.splitext(old)[1].lower() != os.path.splitext(new)[1].lower()):
        return False                                          # a task name (alpaca, glue/sst2), .txt vs .json: as is
    if os.path.realpath(old) == os.path.realpath(new):
        return True
    return bool(was.get("base_sha256" if k == "model" else "data_sha256"))


def same_targets(args, old, new):
    """--targets left out (the family's default: tasks.TARGETS) and written out are one list, in any order."""
    if args.method == "full" or not all(isinstance(t, (str, type(None))) for t in (old, new)):
        return False
    if not (os.path.exists(args.model) or args.model in PRESETS):
        return False                                           # (a missing --model is said where it loads)
    default = lambda: TARGETS.get(plan.model_config(  # noqa: E731  (read only when one side is left out)
        args.model, None if args.model in PRESETS else args.model).model_type, "")
    return set((old or default()).split(",")) == set((new or default()).split(","))


def same_settings(args, state):
    """Refuse a --resume whose flags (but RESUMABLE's) or number of processes differ from the checkpoint's run; paths
    compare normalised (DIR and DIR/ are one folder), --model, --data and --data-dir by their files (same_path);
    --epochs beside --max-steps changes nothing."""
    was = {**ADDED, **state["args"]}
    norm = lambda v: os.path.normpath(v) if isinstance(v, str) and os.sep in v else v  # noqa: E731
    changed = [f"--{k.replace('_', '-')} {was.get(k)} -> {v}" for k, v in vars(args).items()
               if k not in RESUMABLE and norm(was.get(k)) != norm(v)
               and not (k in ("model", "data", "data_dir") and same_path(k, was.get(k), v, was))
               and not (k == "targets" and same_targets(args, was.get(k), v))
               and not (k == "epochs" and args.max_steps and was.get("max_steps"))]  # (--max-steps sets the steps)
    if isinstance(was.get("model"), str) and not any(c.startswith("--model ") for c in changed) and \
            os.path.exists(args.model) and os.path.realpath(was["model"]) != os.path.realpath(args.model):
        check_base(args, args.model, was)                     # another folder: its files checked before any load
    W, world = state.get("world_size", 1), rank_world()[1]
    if W != world:                                             # its data position counts batches of that many
        changed.append(f"{W} -> {world} processes")
    of_split = lambda c: c.startswith(("--batch-size ", "--grad-accum ")) or c.endswith(" processes")  # noqa: E731
    if resplit(args, was, W):                                  # the same records a step, split otherwise:
        changed = [c for c in changed if not of_split(c)]      # same_steps checks them with the data
    if changed:
        B, G, split = was.get("batch_size"), was.get("grad_accum"), any(map(of_split, changed))
        raise UserError("--resume with different settings than the checkpoint's: " + ", ".join(changed) + (
            " (the lr schedule is laid out over the steps its run planned: a resume goes on with it, not a longer or "
            "shorter one; give the checkpoint's, or start again without --resume)" if any(
                c.startswith(("--max-steps ", "--epochs ")) for c in changed) else "") + (
            f" (keep --batch-size x --grad-accum{' x processes' * (W * world > 1)} = {B} x {G}" + (
                f" x {W}" if W * world > 1 else "") + f" = {B * G * W}, the records a step trains" + (
                f", e.g. --batch-size {B // 2} --grad-accum {G * 2})" if B % 2 == 0 and W == world else ")")
            if split and getattr(args, "group_rule", "step") == "step" else
            " (this checkpoint, saved by a lorasp from before steps were grouped whole, goes on at its own "
            "--batch-size and --grad-accum only)" if split else ""))


def resplit(args, was, world):
    """Whether --batch-size, --grad-accum and the processes split the checkpoint's records a step (batch x accum x
    world processes; `was` its flags) otherwise: the same records, in the same order (data.epoch_batches groups whole
    steps), unless its run grouped micro-batches alone (a checkpoint saved before: group_rule)."""
    return getattr(args, "group_rule", "step") == "step" and \
        args.batch_size * args.grad_accum * rank_world()[1] == was.get("batch_size") * was.get("grad_accum") * world


def step_ends(examples, batch, accum, world, micro):
    """cum(k): where a run's step k ends in its stream of records (cum(0) = 0). data.micro_batches deals an epoch's
    records in one order at any split of batch x accum x world (groups of that many, the short one last), in
    micro-batches of batch x world, all full but the epoch's last; a step takes accum of them, on across epochs
    (micro: --epochs' count, the last step cut short; None: --max-steps)."""
    per = batch * world
    n = -(-examples // per)                                    # an epoch's micro-batches

    def cum(k):
        m = min(k * accum, micro or math.inf)                  # the micro-batches dealt by the end of step k
        return m // n * examples + m % n * per
    return cum


def steps_of(args, batch, accum, examples, world):
    """(micro-batches, steps) of the run args describe at --batch-size batch --grad-accum accum over `examples`."""
    micro = epoch_micro_batches(args, -(-examples // (batch * world)), said=False)
    return micro, args.max_steps or math.ceil(micro / accum)


def splits(args, examples, step, batch, accum, world, to=None):
    """The other --batch-size x --grad-accum splits, on `to` processes (default: world), of batch x accum x world
    records a step, largest micro-batch first, with which a --resume from `step` trains each step left on the records
    the run at batch x accum on world processes would."""
    (micro, total), to = steps_of(args, batch, accum, examples, world), to or world
    was, P = step_ends(examples, batch, accum, world, micro), batch * accum * world // to
    out = []
    for b in sorted((b for b in range(1, P + 1) if P % b == 0 and (b, to) != (batch, world)), reverse=True):
        m, t = steps_of(args, b, P // b, examples, to)
        now = step_ends(examples, b, P // b, to, m)
        if batch * accum * world % to == 0 and t == total and (step >= total or all(  # (none left: any split)
                was(k) == now(k) for k in range(step, total + 1))):
            out.append((b, P // b))
    return out


def same_steps(args, state, examples, world):
    """--resume at another split of its run's records a step (same_settings let it through): refused unless each step
    left trains the records its run's would (an epoch's short last micro-batch can shift them: step_ends). That, or
    other recomputation (--checkpointing, --full-blocks: the same values), is said: the sums run in another order, so
    the steps left equal its run's to rounding, not bit for bit."""
    was, B, G, keys = {**ADDED, **state["args"]}, state["args"]["batch_size"], state["args"]["grad_accum"], (
        "checkpointing", "full_blocks")
    if any(getattr(args, k) != was.get(k) for k in keys) and rank_world()[0] == 0:
        flags = lambda a: " ".join(f"--{k.replace('_', '-')} {a.get(k)}" for k in keys)  # noqa: E731
        print(f"note: --resume with {flags(vars(args))}, the checkpoint's run {flags(was)}: recomputation gives the "
              "same values, its gradients to float rounding (not always bit for bit)")
    W = state.get("world_size", 1)
    if (args.batch_size, args.grad_accum, world) == (B, G, W):
        return
    ruled = argparse.Namespace(**{**vars(args), "epochs_rule": state.get("epochs_rule", "ceil")})  # (restore's, later)
    run = f"--batch-size {args.batch_size} --grad-accum {args.grad_accum}" + f" on {world} processes" * (W * world > 1)
    was = f"{B} x {G}" + f" x {W} process{'es' * (W > 1)}" * (W * world > 1)
    if (args.batch_size, args.grad_accum) not in (fit := splits(ruled, examples, state["step"], B, G, W, world)):
        raise UserError(f"--resume with {run}: the steps left would not train the records the checkpoint's run "
                        f"({was}) trains in each (an epoch of {examples:,} training examples ends in a shorter "
                        "micro-batch at one split than at the other, and the steps after it part ways): give "
                        + f"--batch-size {B} --grad-accum {G}" + f" on {W} processes" * (W != world) +
                        "".join(f", or --batch-size {b} --grad-accum {g}" for b, g in fit))
    if rank_world()[0] == 0:
        print(f"note: --resume at {run}, the checkpoint's run {was}: each step trains the same {B * G * W:,} records, "
              "summed in another order (and, where the model has dropout, with other masks): the steps left equal its "
              "run's to rounding, not bit for bit")


def changed_parts(args, was):
    """{part: what to call it} of the data parts (data_hash's) whose examples changed since the checkpoint whose
    flags are `was`: GLUE's by their file; {} when the checkpoint kept none (saved before them)."""
    old, now = was.get("data_parts") or {}, getattr(args, "data_parts", None) or {}
    parts = [p for p in sorted(set(old) | set(now), key=lambda p: p != "train") if old.get(p) != now.get(p)]
    if task_kind(args.data) == "glue" and args.data[5:] in GLUE:
        folder = os.path.join(args.data_dir or cache_dir("glue"), GLUE[args.data[5:]][0])
        return {p: os.path.join(folder, f"{p}.tsv") for p in parts} if old and now else {}
    return {p: f"its {'training' if p == 'train' else p} examples" for p in parts} if old and now else {}


def held_out(args, val_ex, val_records):
    """The fingerprints of the records (a .txt: the blocks) a run holds out, kept in its checkpoints' flags so that a
    --resume onto changed data holds them out again (check_data); None where the task brings its dev split."""
    return [fingerprint(r) for r in val_records or val_ex] if holds_out(args.data) else None


def check_data(args, state, run, examples):
    """--resume: each step left trains the records its run's would (same_steps: another split of them; `examples`: the
    training examples), and the tokenized examples (args.data_sha256) are the checkpoint's, or --allow-data-change
    (unless the base's tokenizer files changed: other ids for the same text); checked as soon as the data is read,
    before the weights load (minutes for a 7B base). Onto changed data the checkpoint's held-out records stay held out
    and all the others train (train.load reads --data so: data.split_records' held; a new seeded split of the changed
    file would hold out records the checkpoint trained on, and its val_loss and heldout.jsonl would score them)."""
    same_steps(args, state, examples, run.world)
    was, held = state["args"], state["args"].get("held_out")
    kind = "blocks" if args.data.lower().endswith(".txt") else "records"
    if was.get("data_sha256") in (None, args.data_sha256):
        return none_held(args, held, kind, run)
    old, now = was.get("tokenizer_files"), getattr(args, "tokenizer_files", None)
    which = tokenizer_changes(old, now) if old and now else ""
    if not args.allow_data_change or which:
        parts = {} if which else changed_parts(args, was)      # (other token ids: every part changed)
        what = "validation" if parts and "train" not in parts else "training"
        raise UserError(f"--resume: the {what} data changed since the checkpoint (--data {args.data}: " + (
            ", ".join(parts.values()) + " changed; " if parts else "") + "its tokenized examples hash to "
            f"{args.data_sha256[:12]}..., the checkpoint's to {was['data_sha256'][:12]}...)" + (
                "; its training examples are the checkpoint's" if what == "validation" else "") + (
                f", and the base's tokenizer files changed ({which}): its records are other token ids now, which the "
                "adapter never trained on. Restore those files, or start again without --resume" + (
                    " (--allow-data-change lets in other records, not other ids for them)" * args.allow_data_change)
                if which else
                ". Restore the data, or pass --allow-data-change to continue on the new data anyway"))
    if held is None:
        if holds_out(args.data) and args.val_fraction and run.rank == 0:  # (a checkpoint saved before held_out)
            print(f"warning: --resume --allow-data-change: the checkpoint does not name its held-out {kind} (saved by "
                  f"an earlier lorasp), so --data {args.data} is split anew: {kind} it trained on may be held out now, "
                  "and the run's val_loss and heldout.jsonl score them", file=sys.stderr)
    elif held and run.rank == 0:
        print(f"note: --resume --allow-data-change: the checkpoint's {len(held)} held-out {kind} stay held out "
              f"({len(args.held_out)} of them are in --data {args.data} now" + (
                  ": no validation loss" if not run.val_ex else "") + ") and every other one trains: a new split of "
              f"the changed data would hold out {kind} the checkpoint trained on")
    none_held(args, held, kind, run)


def none_held(args, held, kind, run):
    """Say that a --resume holds nothing out because its checkpoint names no held-out records (held: its list), not
    because --val-fraction's share rounds to 0 (tasks.check_split's note, not said under its kept)."""
    if held == [] and holds_out(args.data) and args.val_fraction and run.rank == 0:
        print(f"note: --resume holds out the checkpoint's held-out {kind}, and it names none (its run's --val-fraction "
              "share was none, or a --resume --allow-data-change found none of its own in --data): no validation loss")


def held_by(state):
    """The fingerprints of the records a checkpoint (state: its state.json) holds out, which a --resume holds out again
    (data.split_records' held); None for a fresh run (state None), a task with its own dev split, or a checkpoint
    saved before it named them."""
    return state["args"].get("held_out") if state else None


def kept_out(args, state):
    """Whether the run's held-out records are its checkpoint's (tasks.check_split's kept), not --val-fraction's share:
    on any --resume from a checkpoint that names them (data.split_records' held; check_data says what they are). Those
    of a --resume --allow-data-change onto data without them are none, which --val-fraction's share need not be."""
    return held_by(state) is not None


def restore(checkpoint, args, opt, state):
    """Optimizer, RNG states and step from a checkpoint of the same settings, state its state.json (read_state's);
    returns that state, its step an int."""
    same_settings(args, state)
    args.warmup_rule = state.get("warmup_rule", "round")       # saved before warm-up became Trainer's ceil: kept
    args.epochs_rule = state.get("epochs_rule", "ceil")        # saved before --epochs' product was rounded: kept
    path = os.path.join(checkpoint, "optimizer.pt")
    try:
        saved = torch.load(path, map_location=args.device, weights_only=True)
        took = max((int(t["step"]) for t in saved["state"].values() if "step" in t), default=None)  # AdamW's count
        if took is not None and (type(state["step"]) is not int or state["step"] != took):  # (state.json edited, or
            raise UserError(f"--resume: {os.path.join(checkpoint, 'state.json')} is damaged (its step "  # another's)
                            f"{json.dumps(state['step'])} is not the {took} steps {path} took); the checkpoint "
                            "cannot continue the run: start again without --resume (or with another --out)")
        sizes, now = ([len(g["params"]) for g in o["param_groups"]] for o in (saved, opt.state_dict()))
        if sizes != now and sum(sizes) == sum(now):            # the same tensors, grouped anew
            raise UserError(
                f"--resume: {path} groups the trained tensors {sizes[0]} with weight decay, {sum(sizes[1:])} without; "
                f"this version groups them {now[0]} and {sum(now[1:])}: it was saved before T5's "
                "relative_attention_bias moved to the no-decay group (as transformers' Trainer: a name with 'bias'), "
                "and cannot go on bit for bit. Start again without --resume" + (f", or from its weights: --model "
                                                        f"{os.path.join(checkpoint, 'model')} (a new schedule)"
                                                        if args.method == "full" else ""))
        opt.load_state_dict(saved)
        path = os.path.join(checkpoint, "rng.safetensors")
        rngs, rank = load_safetensors(path), rank_world()[0]
        for name in ("torch", "cuda"):                         # this rank's (a checkpoint from before: rank 0's)
            if (rng := rngs.get(f"{name}.{rank}", rngs.get(name))) is not None:
                torch.set_rng_state(rng) if name == "torch" else torch.cuda.set_rng_state(rng, args.device)
        path = os.path.join(checkpoint, "state.json")
        same_code(state)
        random.setstate((state["python_rng"][0], tuple(state["python_rng"][1]), state["python_rng"][2]))
        return dict(state, step=int(state["step"]), lr=saved["param_groups"][0]["lr"])  # (its last step's: old_warmup)
    except UserError:
        raise
    except Exception as e:  # truncated (RuntimeError, EOFError), edited (ValueError, KeyError, TypeError), ...
        why = (str(e).splitlines() or [""])[0][:200]
        raise UserError(f"--resume: {path} is damaged ({type(e).__name__}: {why}); the "
                        "checkpoint cannot continue the run: start again without --resume (or with another --out)") \
            from None


def epoch_micro_batches(args, batches, said=True):
    """--epochs' micro-batches (None with --max-steps): epochs x `batches` (an epoch's) rounded to 9 places, then up
    (1.1 x 50: 55, not the float product 55.00000000000001's 56). A checkpoint saved before that rule (no epochs_rule
    in its state.json: restore) goes on to the float product's ceiling it began with, where the two differ, and says
    so: its lr schedule's first steps were that run's."""
    if args.max_steps:
        return None
    exact, old = math.ceil(round(args.epochs * batches, 9)), math.ceil(args.epochs * batches)
    if getattr(args, "epochs_rule", "round") == "ceil" and old != exact:
        if rank_world()[0] == 0 and said:
            print(f"note: --resume: the checkpoint's run began when --epochs {args.epochs:g} x {batches} batches ran "
                  f"{old} micro-batches (the ceiling of the float product {args.epochs * batches!r}; a new run runs "
                  f"{exact}): it goes on to {old}, the lr schedule it began")
        return old
    return exact


def last_step(args, state, total, examples):
    """The run's last step: `total` (--max-steps, or --epochs' worth of `examples`), or the checkpoint's step when
    early stopping ended its run (state: restore's, {step: 0} for a fresh run): nothing is left to do. A checkpoint
    past `total` (--epochs over data that --allow-data-change shrank) is refused; one that planned another (grew it,
    or shrank it less) is said: its lr schedule goes on over the new total."""
    if state.get("ended"):
        return state["step"]
    if "warmup_rule" not in state and state["step"]:           # (restore's: a checkpoint saved before it was named)
        args.warmup_rule = old_warmup(args, state, total)
    if state["step"] > total:
        raise UserError(f"--resume: the checkpoint is at step {state['step']}, past this run's last ({total}: " + (
            f"--max-steps {args.max_steps}" if args.max_steps else f"--epochs {args.epochs:g} of {examples} "
            "examples") + "); it has nothing left to do. Evaluate its result, or start again with another --out")
    if state.get("total", total) != total and rank_world()[0] == 0:  # (--epochs over what --allow-data-change let in)
        from train import lr_at                                # (here: train.py imports this file)
        print(f"note: --resume: --epochs {args.epochs:g} of {examples} examples is {total} steps, the checkpoint's run "
              f"planned {state['total']}: the lr schedule goes on over {total} steps (step {state['step'] + 1}'s lr "
              f"{lr_at(state['step'], total, args):.2e}, its plan's {lr_at(state['step'], state['total'], args):.2e})")
    return total


def old_warmup(args, state, total):
    """The warm-up rule (WARMUP_RULES) a checkpoint saved before state.json named it ran under: the one whose lr for its
    last step is optimizer.pt's. None fits, or those that fit warm the steps left otherwise: an error."""
    from train import lr_at                                    # (here: train.py imports this file)
    fits = [r for r in WARMUP_RULES if float(state["lr"]) == lr_at(state["step"] - 1, total, argparse.Namespace(
        **{**vars(args), "warmup_rule": r}))]
    if len(counts := sorted({WARMUP_RULES[r](args.warmup * total) for r in fits})) == 1:
        return fits[0]
    raise UserError(f"--resume: {os.path.join(args.out, 'checkpoint', 'state.json')} does not say how its run counted "
                    "its warm-up steps (saved by a lorasp before 2026-12-05 04:27), and its last step's lr in "
                    f"optimizer.pt ({state['lr']!r}) fits " + (" and ".join(map(str, counts)) or "no count of") +
                    f" warm-up steps of its {total}: the lr of the steps left cannot be told. Resume with the lorasp "
                    "that wrote it, or start again without --resume")


def open_log(run):
    """OUT/metrics.jsonl: with --resume, its records up to the checkpoint's step are kept (and their evaluations are
    early stopping's history; the checkpoint's log deleted, state.json's evaluations are: run.state, restore's); what
    came after the checkpoint is redone."""
    args, state = run.args, run.state if run.checkpoint else {}
    os.makedirs(args.out, exist_ok=True) if run.rank == 0 else None
    path = os.path.join(args.out, "metrics.jsonl")
    kept = kept_log(args.out, run.checkpoint, run.step, state)  # (a fresh run: [])
    run.evals = [r for _, r in kept if "val_loss" in r]
    if log_gone(run.checkpoint, state) and "evals" in state:  # early stopping's history, from state.json
        run.evals = [r for r in state["evals"] if r["step"] <= run.step]
        if args.patience and run.rank == 0:
            print(f"note: --resume: {run.checkpoint}/metrics.jsonl is gone: the log starts again; --patience goes on "
                  f"from the {len(run.evals)} evaluations its state.json keeps")
    barrier()                                                  # DDP: every rank has read it before rank 0 rewrites
    if run.rank == 0 and os.path.islink(path):                # (open would write through it, to a file outside)
        os.remove(path)
    run.log = open(path if run.rank == 0 else os.devnull, "w")  # rank 0 alone writes files
    run.log.writelines(line + "\n" for line, _ in kept)
