"""Where the CPU time of one `python train.py ...` goes, in its own process: train.py's main run here with its phases
timed (CPU seconds, time.process_time: all threads; wall seconds), each phase's own time (its timed callees' apart),
so the rows and `other` add up to the process's CPU time. The training steps (train_step) against everything else:
imports, the memory plan, tokenizer and data, the model's load, the checks before and after, validations, saves.

    python bench/phase_times.py                                 # the offline demo, train.py's defaults
    python bench/phase_times.py -- --model DIR --data FILE --max-steps 4 --save-every 2 --eval-every 2
    python bench/phase_times.py --src OTHER_CHECKOUT -- ...     # another checkout's train.py (before/after)

The flags after -- are train.py's. The demo's first run (no cached model) pretrains it through train.py: those
phases are the rows named `pretraining: ...`. Timing adds a few microseconds a call (the steps: one call each).
"""
import argparse
import functools
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS, STACK, PRETRAINING = {}, [], []


def timed(owner, name, label, pretraining=False):
    """owner.name, wrapped: its calls' own CPU and wall seconds (those of timed calls inside it: theirs) in ROWS."""
    f = getattr(owner, name)

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        key = ("pretraining: " if PRETRAINING else "") + label
        STACK.append([0.0, 0.0])
        PRETRAINING.extend([1] * pretraining)
        cpu, wall = time.process_time(), time.time()
        try:
            return f(*args, **kwargs)
        finally:
            cpu, wall = time.process_time() - cpu, time.time() - wall
            del PRETRAINING[len(PRETRAINING) - pretraining:]
            inner = STACK.pop()
            row = ROWS.setdefault(key, [0.0, 0.0, 0])
            row[0], row[1], row[2] = row[0] + cpu - inner[0], row[1] + wall - inner[1], row[2] + 1
            if STACK:
                STACK[-1][0], STACK[-1][1] = STACK[-1][0] + cpu, STACK[-1][1] + wall
    setattr(owner, name, wrapper)


def imported(label, names):
    cpu, wall = time.process_time(), time.time()
    for n in names:
        __import__(n)
    ROWS[label] = [time.process_time() - cpu, time.time() - wall, 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=ROOT, help="the checkout whose train.py runs (default: this one)")
    ap.add_argument("flags", nargs=argparse.REMAINDER, help="-- and train.py's flags (none: the offline demo)")
    args = ap.parse_args()
    argv, src = args.flags[1:] if args.flags[:1] == ["--"] else args.flags, args.src
    sys.path.insert(0, os.path.abspath(src))
    start = time.time()
    imported("import torch", ["torch"])
    imported("import torch._dynamo (AdamW's first call imports it; else the memory plan's meta build)",
             ["torch._dynamo"])
    imported("import train.py and lorasp's files", ["train"])
    import adapter  # (imported above: here, their names)
    import cli
    import data
    import resume
    import tasks
    import train
    for n, label in [("prepare_demo", "the demo's model and task, found or made"), ("set_up", "set_up"),
                     ("plan_memory", "memory plan"), ("load", "load: the rest (tokenizer, checks, batches, AdamW)"),
                     ("describe", "describe"), ("check", "checks before and after training (generation)"),
                     ("train_step", "TRAINING STEPS"), ("report", "progress lines"), ("validate", "validations"),
                     ("save_if_due", "checkpoints: the rest (files, optimizer state, fsync)"),
                     ("save_result", "the result's save: the rest"), ("closing", "closing lines")]:
        timed(train, n, label)
    timed(cli, "pretrain_demo", "the rest (corpus, tokenizer, model written)", pretraining=True)
    timed(data, "task_examples", "load: data read and tokenized")
    timed(tasks, "load_pretrained", "load: model weights")
    timed(tasks, "apply_lorasp", "load: adapter layers (masks drawn)")
    timed(adapter, "weights_probe", "saves: the adapter's probe of its base (weights_probe)")
    timed(resume, "code", "saves: the code's stamp (resume.code, once a process)")
    timed(resume, "file_sums", "saves: crc32 of the checkpoint's files")
    status = 0
    try:
        train.console()
        train.main(argv)
    except SystemExit as e:
        status = e.code
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total, wall = usage.ru_utime + usage.ru_stime, time.time() - start
    rows = dict(ROWS, **{"other (Python's start, flags, what no row names)": [
        total - sum(r[0] for r in ROWS.values()), wall - sum(r[1] for r in ROWS.values()), 1]})
    steps = sum(r[0] for k, r in rows.items() if k.endswith("TRAINING STEPS"))
    print(f"\nphase times of train.py {' '.join(argv)} ({os.path.abspath(src)}): CPU s, wall s, calls", file=sys.stderr)
    for k, (cpu, w, n) in rows.items():
        print(f"| {k} | {cpu:.2f} | {w:.2f} | {n} |", file=sys.stderr)
    print(f"| process | {total:.2f} | {wall:.2f} | |", file=sys.stderr)
    print(f"the steps: {steps:.2f} of {total:.2f} CPU s ({steps / total:.1%}); outside them: {total - steps:.2f}",
          file=sys.stderr)
    sys.exit(status)


if __name__ == "__main__":
    main()
