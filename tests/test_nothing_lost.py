"""Nothing is lost (seventeenth session): a checkpoint from older code after a fresh run into its --out died, a
checkpoint's log deleted as its hint says, a kill between the result's weights and its held-out records, Ctrl-C during
the last step's save. Each compares with the run that was never interrupted."""
import json
import os
import signal

import pytest

import train
from fixtures import fault_at_loss_call, flags, tiny  # noqa: F401  (tiny: a fixture)
from test_train_resume import log, straight_and_stopped


def adapter(run):
    return open(run / "adapter" / "adapter_model.safetensors", "rb").read()


def test_an_older_checkpoint_keeps_its_log_when_a_fresh_run_into_its_out_dies(tiny, tmp_path, monkeypatch):
    """A checkpoint written before checkpoints kept their log (step 5); a fresh run into the same --out dies on a NaN
    at step 3, before its first save; the first run's --resume then took the fresh run's lines up to step 5 from
    OUT/metrics.jsonl as its own (steps 1-2 of another --lr, no step 5). The fresh run now leaves the earlier
    checkpoint the log it had before rewriting OUT/metrics.jsonl."""
    more = "--eval-every", "2"
    straight_and_stopped(tiny, tmp_path, monkeypatch, 9, *more)       # step 5
    ckpt = tmp_path / "b" / "checkpoint"
    state = json.load(open(ckpt / "state.json"))
    del state["losses"]                                                # as the code before the log copy wrote it
    json.dump(state, open(ckpt / "state.json", "w"))
    os.remove(ckpt / "metrics.jsonl")
    fault_at_loss_call(monkeypatch, 5, "nan")
    with pytest.raises(SystemExit, match="this run had saved no checkpoint yet"):
        train.main(flags(tiny, tmp_path / "b", *more, "--lr", "5e-2"))
    monkeypatch.undo()
    train.train(train.parse_args(flags(tiny, tmp_path / "b", *more, "--resume")))
    assert log(tmp_path / "b") == log(tmp_path / "a")


def test_a_deleted_log_copy_starts_the_log_again_as_the_hint_says(tiny, tmp_path, monkeypatch):
    """A damaged line in the checkpoint's metrics.jsonl: --resume names it and says 'delete the line, or the file to
    start the log again'. Deleting the file went on with OUT/metrics.jsonl's lines instead (which may be another
    run's): now the log starts again, from the steps after the checkpoint."""
    straight_and_stopped(tiny, tmp_path, monkeypatch, 13)             # step 7: lines at 5 kept
    copy = tmp_path / "b" / "checkpoint" / "metrics.jsonl"
    copy.write_text("{damaged\n" + copy.read_text())
    with pytest.raises(SystemExit, match=r"metrics.jsonl, line 1 is not a record .*: delete the line, or the file "
                                         r"to start the log again"):
        train.main(flags(tiny, tmp_path / "b", "--resume"))
    os.remove(copy)
    train.train(train.parse_args(flags(tiny, tmp_path / "b", "--resume")))
    assert log(tmp_path / "b") == [r for r in log(tmp_path / "a") if r[0] > 7] and len(log(tmp_path / "b")) == 2
    assert adapter(tmp_path / "a") == adapter(tmp_path / "b")


def test_a_kill_between_the_weights_and_the_held_out_records_pairs_no_other_runs(tiny, tmp_path, monkeypatch):
    """A finished run in --out; a fresh run with --seed 1 (another split) killed after its adapter was written, before
    heldout.jsonl: adapter/ held the new run's result beside the first run's held-out records, which it had trained
    on, and the `evaluate:` line scored the one on the other without a word. Now heldout.jsonl is never another
    run's: none while the weights are replaced, and --resume writes the pair."""
    train.train(train.parse_args(flags(tiny, tmp_path / "first")))
    train.train(train.parse_args(flags(tiny, tmp_path / "second", "--seed", "1")))
    out, held = tmp_path / "first", lambda run: open(run / "heldout.jsonl").read()  # noqa: E731
    first = held(out)

    def killed(*a):
        raise KeyboardInterrupt                                        # as a kill would stop it (no more written)
    monkeypatch.setattr(train, "save_heldout", killed)
    with pytest.raises(SystemExit):
        train.main(flags(tiny, out, "--seed", "1"))
    monkeypatch.undo()
    assert adapter(out) == adapter(tmp_path / "second")                # the new result...
    assert not os.path.exists(out / "heldout.jsonl") or held(out) != first  # ...never beside the first run's records
    train.train(train.parse_args(flags(tiny, out, "--seed", "1", "--resume")))
    assert held(out) == held(tmp_path / "second") and adapter(out) == adapter(tmp_path / "second")


def test_a_failed_save_of_the_result_keeps_the_earlier_pair(tiny, tmp_path, monkeypatch):
    """A full disk while a fresh run (another split) writes its adapter over an earlier run's: the earlier adapter and
    its held-out records stay, as they were, and the error is one line."""
    out = tmp_path / "out"
    train.train(train.parse_args(flags(tiny, out)))
    before = adapter(out), open(out / "heldout.jsonl").read()
    save = train.save_weights

    def full(model, directory, *a):
        if directory.endswith("adapter"):
            raise OSError(28, f"writing {directory} failed (No space left on device); it holds what it held before")
        return save(model, directory, *a)
    monkeypatch.setattr(train, "save_weights", full)
    with pytest.raises(SystemExit, match=r"^error: \[Errno 28\] writing .*adapter failed \(No space left on device\)"):
        train.main(flags(tiny, out, "--seed", "1"))
    assert (adapter(out), open(out / "heldout.jsonl").read()) == before


def test_ctrl_c_during_the_last_steps_save_stops_before_the_after_check(tiny, tmp_path, monkeypatch, capsys):
    """Ctrl-C while the last step's checkpoint was being written printed 'saving a checkpoint after this step' and
    went on: the result saved, then the after-check's generation (minutes on a 7B). Now it stops once the checkpoint
    is saved, as a Ctrl-C at any other step does, and --resume saves the straight run's result and checks it."""
    more = "--exact-match", "3"
    train.train(train.parse_args(flags(tiny, tmp_path / "a", *more)))
    save = train.save_checkpoint

    def saving(args, model, opt, step, *a):
        if step == 10:
            os.kill(os.getpid(), signal.SIGINT)
        return save(args, model, opt, step, *a)
    monkeypatch.setattr(train, "save_checkpoint", saving)
    checked = []
    monkeypatch.setattr(train, "check", lambda run, records, when, *a: checked.append(when))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train.main(flags(tiny, tmp_path / "b", *more))
    assert e.value.code == 130 and checked == ["before"]
    assert "interrupted at step 10: checkpoint saved" in capsys.readouterr().out
    monkeypatch.undo()
    s = train.train(train.parse_args(flags(tiny, tmp_path / "b", *more, "--resume")))
    assert "exact_match_after" in str(s) and adapter(tmp_path / "a") == adapter(tmp_path / "b")


def test_a_disk_full_mid_write_of_a_checkpoint_keeps_the_previous_one(tiny, tmp_path, monkeypatch):
    """The file system fills up in the middle of optimizer.pt of step 6's checkpoint (a writer that raises ENOSPC
    after some bytes): the error is one line, step 3's checkpoint is whole, and --resume from it ends with the straight
    run's adapter, bit for bit."""
    import builtins
    import errno
    more = "--save-every", "3"
    train.train(train.parse_args(flags(tiny, tmp_path / "a", *more)))
    real_open, saves = builtins.open, []

    class Full:
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, b):
            self.n += len(b)
            if self.n > 100:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(b)

        def __getattr__(self, k):
            return getattr(self.f, k)

        def __enter__(self):
            return self

        def __exit__(self, *e):
            return self.f.__exit__(*e)

    def full_open(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        if "optimizer.pt" in str(path) and "w" in mode:
            saves.append(path)
            return Full(f) if len(saves) == 2 else f
        return f
    monkeypatch.setattr(builtins, "open", full_open)
    with pytest.raises(SystemExit) as e:
        train.main(flags(tiny, tmp_path / "b", *more))
    monkeypatch.undo()
    assert "\n" not in str(e.value) and str(e.value).startswith("error: [Errno 28] saving the checkpoint of step 6 "
                                                                "failed (No space left on device); ")
    assert json.load(open(tmp_path / "b" / "checkpoint" / "state.json"))["step"] == 3
    assert sorted(os.listdir(tmp_path / "b")) == ["checkpoint", "heldout.jsonl", "metrics.jsonl"]
    train.train(train.parse_args(flags(tiny, tmp_path / "b", *more, "--resume")))
    assert adapter(tmp_path / "a") == adapter(tmp_path / "b") and log(tmp_path / "a") == log(tmp_path / "b")


def test_a_nan_in_an_fp32_run_does_not_advise_fp32(tiny, tmp_path, monkeypatch):
    """A NaN at step 7 of an fp32 run (--save-every 3): it names the step and step 6's checkpoint, and advised
    '--dtype fp32', the dtype the run already had. Now only a lower --lr."""
    fault_at_loss_call(monkeypatch, 13, "nan")
    with pytest.raises(SystemExit) as e:
        train.main(flags(tiny, tmp_path, "--save-every", "3"))
    assert str(e.value) == (f"error: loss nan, gradient norm nan at step 7: stopped without saving; the last good "
                            f"checkpoint is kept in {tmp_path / 'checkpoint'}. Start again (without --resume, which "
                            "keeps the run's flags) with a lower --lr")
