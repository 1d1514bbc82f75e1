"""Long runs and long chains of interruptions (session 33), each pinned at the smallest size that shows it: epochs
whose steps straddle their boundary resumed on either side, a --resume whose step count changed, a checkpoint saved
by other code, a killed run's temporary where there are no locks, the demo's resume taking state.json as read before
it claimed --out, --epochs beside --max-steps on a resume. The long runs that found them: docs/robustness.md, "Long
runs (session 33)". Session 34: what a user watching one sees (the epoch, an ETA with its evaluations and saves) and
a code stamp that an edited comment leaves as it was."""
import json
import os
import shutil
import signal
import time

import pytest
import torch

import checkpoint
import resume
import train
from fixtures import fault_at_loss_call, flags, tiny  # noqa: F401  (tiny: a fixture)
from test_nothing_lost import adapter

# 54 training examples in micro-batches of 4: 14 an epoch; 3 a step, so step 5 holds epoch 1's last two and epoch 2's
# first, and --epochs 2 (28 micro-batches) ends on a step of one
def epochs(tiny, out, *more):
    """flags' run with --epochs 2 for its --max-steps 10, 3 micro-batches a step, a progress line each."""
    argv = flags(tiny, out, "--grad-accum", "3", "--epochs", "2", "--log-every", "1", *more)
    i = argv.index("--max-steps")
    return argv[:i] + argv[i + 2:]


def stopped_at(tiny, out, monkeypatch, step, *more):
    """The --epochs run into out stopped by Ctrl-C during `step` (saved after it); returns its state.json."""
    fault_at_loss_call(monkeypatch, 3 * (step - 1) + 1, signal.SIGINT)
    with pytest.raises(SystemExit):
        train.main(epochs(tiny, out, *more))
    monkeypatch.undo()
    return json.load(open(out / "checkpoint" / "state.json"))


def log(out):
    return [{k: v for k, v in json.loads(line).items() if k not in ("tokens_per_s", "peak_mem_mib")}  # (wall-clock)
            for line in open(out / "metrics.jsonl")]


@pytest.mark.parametrize("step", [4, 5])
def test_a_resume_on_either_side_of_a_step_that_straddles_two_epochs_is_the_straight_run(tiny, tmp_path, monkeypatch,
                                                                                         step):
    """Stopped after step 4 (the last whole step of epoch 1) or 5 (two micro-batches of epoch 1, one of epoch 2) and
    resumed: the adapter, AdamW's state and the log (but its wall-clock fields) are the straight run's, byte for byte,
    and the run ends on the short step the epochs leave (28 micro-batches: 9 steps of 3 and one of 1)."""
    train.train(train.parse_args(epochs(tiny, tmp_path / "a")))
    assert stopped_at(tiny, tmp_path / "b", monkeypatch, step)["step"] == step
    s = train.train(train.parse_args(epochs(tiny, tmp_path / "b", "--resume")))
    assert s["steps"] == 10 and adapter(tmp_path / "b") == adapter(tmp_path / "a") and log(tmp_path / "b") == log(
        tmp_path / "a")
    assert [(tmp_path / r / "checkpoint" / "optimizer.pt").read_bytes() for r in "ab"].count(
        (tmp_path / "a" / "checkpoint" / "optimizer.pt").read_bytes()) == 2


def test_a_resume_onto_data_that_changes_the_epochs_steps_says_the_lr_schedule_moves(tiny, tmp_path, monkeypatch,
                                                                                    capsys):
    """--epochs 2 over 54 examples is 10 steps; stopped at step 3 and resumed --allow-data-change onto twice the
    records, the run is 20 steps and its lr schedule, laid out over 10, went on over 20 from step 4 on: the lr rose
    from 9.70e-3 (step 3) to 9.73e-3 (step 4; its plan: 8.83e-3) with no word (the data change alone was said).
    state.json now keeps the run's last step, and the move is said, with step 4's lr on each plan."""
    task = tmp_path / "task.json"
    records = json.load(open(tiny[1]))
    task.write_text(json.dumps(records))
    state = stopped_at((tiny[0], str(task)), tmp_path / "b", monkeypatch, 3)
    assert state["step"] == 3 and state["total"] == 10
    task.write_text(json.dumps(records + [dict(r, instruction=r["instruction"] + " Again.") for r in records]))
    capsys.readouterr()
    s = train.train(train.parse_args(epochs((tiny[0], str(task)), tmp_path / "b", "--resume", "--allow-data-change")))
    lrs = {r["step"]: r["lr"] for r in log(tmp_path / "b") if "lr" in r}
    args = train.parse_args(epochs(tiny, tmp_path / "x"))
    assert s["steps"] == 20 and lrs[4] == train.lr_at(3, 20, args) > lrs[3] == train.lr_at(2, 10, args)
    planned = train.lr_at(3, 10, args)
    assert f"note: --resume: --epochs 2 of 114 examples is 20 steps, the checkpoint's run planned 10: the lr " \
           f"schedule goes on over 20 steps (step 4's lr {lrs[4]:.2e}, its plan's {planned:.2e})\n" in \
        capsys.readouterr().out


def test_a_checkpoint_names_the_code_that_computed_it_and_a_resume_says_when_it_is_other(tiny, tmp_path, monkeypatch,
                                                                                        capsys):
    """state.json named no lorasp version: a --resume under code that sums in another order (session 32 found such a
    change) went on as if bit for bit. It now keeps a fingerprint of lorasp's files and torch's version; a resume
    under other code says which differs, one from before the stamp says that, and under the same code nothing."""
    stopped_at(tiny, tmp_path / "b", monkeypatch, 4)
    state = json.load(open(tmp_path / "b" / "checkpoint" / "state.json"))
    folder = os.path.dirname(resume.__file__)
    assert state["code"] == resume.code() == resume.code_stamp(resume.py_files(folder))
    assert len(state["code"]["lorasp"]) == 12
    said = []
    for i, code in enumerate((state["code"], dict(state["code"], lorasp="0123456789ab"), None)):
        shutil.copytree(tmp_path / "b", out := tmp_path / f"b{i}")
        (out / "checkpoint" / "state.json").write_text(json.dumps({**state, "code": code} if code else {
            k: v for k, v in state.items() if k != "code"}))             # (not among the files its crc32s check)
        capsys.readouterr()
        train.train(train.parse_args(epochs(tiny, out, "--resume")))
        said.append([line for line in capsys.readouterr().out.splitlines() if "the checkpoint was saved by" in line])
    assert said[0] == []
    assert said[1] == [f"note: --resume: the checkpoint was saved by lorasp 0123456789ab (this is lorasp "
                       f"{state['code']['lorasp']}): the steps left may differ from those its run would have taken "
                       "(other code can sum in another order), not bit for bit; the run goes on"]
    assert said[2] == ["note: --resume: the checkpoint was saved by a lorasp from before checkpoints named their "
                       "code: the steps left may differ from those its run would have taken (other code can sum in "
                       "another order), not bit for bit; the run goes on"]


def test_where_there_are_no_locks_a_killed_runs_temporary_goes_once_no_run_can_be_writing_it(tmp_path, monkeypatch,
                                                                                            capsys):
    """Without file locks (no fcntl: Windows), OUT/heldout.jsonl.tmp<pid> that a kill -9 left stayed in --out for good
    (only a run holding the lock removed one). Now one untouched for over an hour goes (the file is written in
    seconds: no train.py on this machine or another is still writing it), said; a recent one stays."""
    monkeypatch.setattr(checkpoint, "fcntl", None)
    monkeypatch.setattr(resume, "UNLOCKED", [])
    out = tmp_path / "out"
    out.mkdir()
    old, new = out / "heldout.jsonl.tmp4242", out / "heldout.jsonl.tmp4243"
    for f in (old, new):
        f.write_text('{"instruction": "Wh')
    os.utime(old, (time.time() - 3700,) * 2)
    with resume.claim(str(out)):
        pass
    printed = capsys.readouterr().out
    assert sorted(os.listdir(out)) == [new.name] and "is not locked" in printed
    assert f"note: removing {old}, left by a train.py killed while writing it\n" in printed


def test_a_demo_resume_takes_the_checkpoint_as_it_is_once_out_is_claimed(tiny, tmp_path, monkeypatch):
    """The offline demo's --resume read state.json in cli.prepare_demo (demo_base: which demo model it trained on) and
    handed that read to take_settings through args.checkpoint_state, before train() claims --out: where another
    train.py into --out saved and ended in between, the run went on with the earlier state.json beside the later
    files, and called them damaged ("optimizer.pt is damaged ... start again without --resume"). take_settings now
    reads it under the claim, and goes on from the checkpoint there."""
    stopped_at(tiny, tmp_path / "b", monkeypatch, 4)
    args = train.parse_args(epochs(tiny, tmp_path / "b", "--resume"))
    assert resume.demo_base(args, tiny[0]) == tiny[0]                   # (not a demo model: this run's)
    train.train(train.parse_args(epochs(tiny, tmp_path / "b", "--resume")))  # another train.py: to its last step
    s = train.train(args)
    assert s["steps"] == 10 and s["tokens_since_resume"] == 0


def test_a_resume_with_another_epochs_beside_the_same_max_steps_goes_on(tiny, tmp_path, monkeypatch):
    """--epochs beside --max-steps changes nothing (parse_args says so), yet a --resume that gave another was refused
    ("--epochs 3 -> 5.0"). Now it goes on, and ends as the straight run; another --max-steps is refused, with why."""
    train.train(train.parse_args(flags(tiny, tmp_path / "a")))
    fault_at_loss_call(monkeypatch, 7, signal.SIGINT)                   # step 4
    with pytest.raises(SystemExit):
        train.main(flags(tiny, tmp_path / "b"))
    monkeypatch.undo()
    s = train.train(train.parse_args(flags(tiny, tmp_path / "b", "--resume", "--epochs", "5")))
    assert s["steps"] == 10 and adapter(tmp_path / "b") == adapter(tmp_path / "a")


def test_a_resume_of_a_run_that_had_ended_reports_no_speed(tiny, tmp_path):
    """A --resume of a run whose checkpoint is its last step runs no step: its summary said `"tokens_per_s": 0.0`, a
    speed of nothing measured (a script averaging the runs' speeds took it as one). Now null, as `final_loss` is."""
    first = train.train(train.parse_args(flags(tiny, tmp_path / "a")))
    again = train.train(train.parse_args(flags(tiny, tmp_path / "a", "--resume")))
    assert first["tokens_per_s"] > 0 and again["steps"] == first["steps"] and again["tokens_since_resume"] == 0
    assert again["tokens_per_s"] is None and again["final_loss"] is None


def test_the_log_and_the_progress_line_name_the_epoch_a_resumed_run_as_the_straight_one(tiny, tmp_path, monkeypatch,
                                                                                      capsys):
    """Neither the log's step records nor the progress line named the epoch: a user of --epochs could not tell where
    one ended. Both now say the epochs done (micro-batches / an epoch's 14, floored to 4 places): step 5's three
    micro-batches straddle the boundary (15/14: 1.0714), the short last step ends on 2; a run stopped after step 5
    and resumed says what the straight run says; --max-steps names no epoch count."""
    train.train(train.parse_args(epochs(tiny, tmp_path / "a")))
    straight = capsys.readouterr().out
    done = [min(3 * s, 28) for s in range(1, 11)]
    assert [r["epoch"] for r in log(tmp_path / "a") if "loss" in r] == [d * 10**4 // 14 / 10**4 for d in done] == [
        0.2142, 0.4285, 0.6428, 0.8571, 1.0714, 1.2857, 1.5, 1.7142, 1.9285, 2]
    assert "step     5/10  epoch 1.0714/2  loss " in straight and "step    10/10  epoch 2/2  loss " in straight
    stopped_at(tiny, tmp_path / "b", monkeypatch, 5)
    capsys.readouterr()
    train.train(train.parse_args(epochs(tiny, tmp_path / "b", "--resume")))
    lines = lambda out: [line.split("  loss")[0] for line in out.splitlines() if line.startswith("step ")]  # noqa: E731
    assert lines(capsys.readouterr().out) == lines(straight)[5:]
    assert lines(straight)[5] == "step     6/10  epoch 1.2857/2"
    assert [r["epoch"] for r in log(tmp_path / "b") if "loss" in r] == [r["epoch"] for r in log(tmp_path / "a")
                                                                         if "loss" in r]
    train.train(train.parse_args(flags(tiny, tmp_path / "c")))        # 2 micro-batches a step, up to step 10
    assert "step    10/10  epoch 1.4285  loss " in capsys.readouterr().out


def test_the_eta_counts_the_evaluations_and_saves_still_to_come(tiny, tmp_path, monkeypatch, capsys):
    """The ETA counted training time only: where an evaluation takes minutes (7B) it said seconds. On a clock where a
    step takes 1 s, an evaluation 10 s and a save 5 s (evaluations at steps 2, 4, .., 10; saves at 5 and 10), it now
    adds those still due at the mean of those timed so far, and those of a kind not yet timed by name."""
    clock, real_loss = [1000.0], train.causal_lm_loss

    def after(f, seconds, when=lambda: True):
        def slow(*a, **k):
            clock[0] += seconds if when() else 0
            return f(*a, **k)
        return slow
    monkeypatch.setattr(train, "time", type("Clock", (), dict(time=lambda: clock[0])))
    monkeypatch.setattr(train, "causal_lm_loss", after(real_loss, 0.5, torch.is_grad_enabled))  # 2 micro-batches
    monkeypatch.setattr(train, "evaluate", after(train.evaluate, 10))
    monkeypatch.setattr(train, "save_checkpoint", after(train.save_checkpoint, 5))
    train.train(train.parse_args(flags(tiny, tmp_path / "a", "--eval-every", "2", "--save-every", "5",
                                       "--log-every", "1")))
    eta = {int(line.split("/")[0][5:]): line.split("ETA ")[1].split("  peak")[0]
           for line in capsys.readouterr().out.splitlines() if "ETA " in line}
    assert eta[1] == "0m09s + 5 evaluations, 2 saves"   # 9 steps; the 5 evaluations at 2, .., 10
    assert eta[3] == "0m47s + 2 saves"                  # 7 steps + 4 evaluations x 10 s
    assert eta[6] == "0m39s" and eta[10] == "0m15s"      # 4 + 3 x 10 + 5 (the save at 10); at 10, its own two


def test_an_edited_comment_or_docstring_is_the_same_code_any_other_edit_is_not():
    """The code stamp hashed the files' bytes: a student who edited a comment and resumed was told the steps left "may
    differ ... not bit for bit". Comments, docstrings, blank lines, line breaks inside brackets and the indentation's
    width now leave it as it was; an edit to what runs (a name, a number, a string that is not a docstring) does not."""
    source = (b'"""A module."""\nimport math\n\n\ndef f(x, y=2):\n    """Doc."""\n    # why\n'
              b'    return math.sqrt(x) * y + len("ab")  # how\n')
    same = [source.replace(b"# why", b"# why not"), source.replace(b"# how", b""), source.replace(b"Doc.", b"Doc,\n\n"
            b"    more."), source.replace(b'"""A module."""\n', b""), source.replace(b"\n\n\n", b"\n"),
            source.replace(b"x, y=2", b"x,\n          y=2"), source.replace(b"\n    ", b"\n  ")]
    other = [source.replace(b"sqrt", b"exp"), source.replace(b"y=2", b"y=3"), source.replace(b'"ab"', b'"abc"'),
             source.replace(b'    """Doc."""\n', b'    x = """Doc."""\n')]
    stamp = lambda text: resume.code_stamp({"m.py": text})["lorasp"]  # noqa: E731
    assert [stamp(s) for s in same] == [stamp(source)] * len(same)
    assert len({stamp(s) for s in [source] + other}) == 1 + len(other)
    assert stamp(b"x = (1,\n") != stamp(b"x = (2,\n") != stamp(b"if x:\n  a\n b\n")  # (no Python: its bytes, hashed)


def test_a_bare_resume_of_a_run_on_another_model_is_refused_before_the_demo_pretrains(tiny, tmp_path, monkeypatch):
    """`python train.py --out X --resume` (no --model) where X's run trained on another model: the demo's defaults
    took over, and the demo model was pretrained first (minutes, seen: killed at step 284 of its pretraining) before
    any word on the checkpoint. Now demo_base refuses at once, naming the model and data the checkpoint's run had."""
    stopped_at(tiny, tmp_path / "b", monkeypatch, 4)
    args = train.parse_args(["--out", str(tmp_path / "b"), "--resume"])
    with pytest.raises(train.UserError, match=rf"--resume: .*checkpoint trained on --model {tiny[0]} --data "
                                              rf"{tiny[1]}, not the offline demo's model: give them"):
        resume.demo_base(args, str(tmp_path / "models" / "demo-llama-0123"))
