"""A careful user's resumes (sixteenth session): Ctrl-C between two progress lines, a fresh run into the same --out
that died before its first save, the offline demo stopped while it pretrains. Each compares with the run that was
never interrupted."""
import json
import os
import signal

import pytest

import cli
import train
from fixtures import fault_at_loss_call, flags, tiny  # noqa: F401  (tiny: a fixture)


def log(out):
    return [(m["step"], m.get("loss"), m.get("val_loss")) for m in map(json.loads, open(out / "metrics.jsonl"))]


def test_a_resume_between_progress_lines_logs_the_losses_a_straight_run_logs(tiny, tmp_path, monkeypatch):
    """Ctrl-C at step 4 of --log-every 5: the progress line of step 5 is the mean of steps 1-5's losses. The resumed
    run logged the mean of step 5's alone (steps 1-4's were lost with the process), a loss no step had: metrics.jsonl
    and the plot differed from the straight run's by 0.36 with no word (the demo's step 120: 0.4331 for 0.4329)."""
    train.train(train.parse_args(flags(tiny, tmp_path / "a")))
    fault_at_loss_call(monkeypatch, 7, signal.SIGINT)                  # step 4's first micro-batch
    with pytest.raises(SystemExit):
        train.main(flags(tiny, tmp_path / "b"))
    monkeypatch.undo()
    assert json.load(open(tmp_path / "b" / "checkpoint" / "state.json"))["step"] == 4
    train.train(train.parse_args(flags(tiny, tmp_path / "b", "--resume")))
    assert log(tmp_path / "b") == log(tmp_path / "a")


def test_resume_keeps_its_log_after_a_fresh_run_into_the_same_out_died(tiny, tmp_path, monkeypatch):
    """A run stopped by Ctrl-C at step 5 (checkpoint saved); a fresh run into the same --out (another --lr, no
    --resume: it says it will replace the checkpoint at its first save) stops on a NaN at step 3, before saving; the
    first run's --resume then went on from its checkpoint but kept the second run's log lines up to step 5 as its own
    (its validation losses early stopping's history too): metrics.jsonl mixed two runs with no word. The checkpoint
    now keeps its own log."""
    more = "--eval-every", "2"
    train.train(train.parse_args(flags(tiny, tmp_path / "a", *more)))
    fault_at_loss_call(monkeypatch, 9, signal.SIGINT)                  # step 5
    with pytest.raises(SystemExit):
        train.main(flags(tiny, tmp_path / "b", *more))
    monkeypatch.undo()
    fault_at_loss_call(monkeypatch, 5, "nan")                          # step 3 of a fresh run, no save yet
    with pytest.raises(SystemExit, match="this run had saved no checkpoint yet"):
        train.main(flags(tiny, tmp_path / "b", *more, "--lr", "5e-2"))
    monkeypatch.undo()
    assert json.load(open(tmp_path / "b" / "checkpoint" / "state.json"))["step"] == 5
    train.train(train.parse_args(flags(tiny, tmp_path / "b", *more, "--resume")))
    assert log(tmp_path / "b") == log(tmp_path / "a")
    os.remove(tmp_path / "b" / "metrics.jsonl")                         # deleted by hand: the checkpoint still has it
    train.train(train.parse_args(flags(tiny, tmp_path / "b", *more, "--resume")))
    assert log(tmp_path / "b") == log(tmp_path / "a")
