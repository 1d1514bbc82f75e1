"""A careful user's resumes (sixteenth session): Ctrl-C between two progress lines, a fresh run into the same --out
that died before its first save, the offline demo stopped while it pretrains. Each compares with the run that was
never interrupted."""
import argparse
import hashlib
import json
import os
import shutil
import signal

import pytest

import cli
import data
import resume
import train
from fixtures import fault_at_loss_call, flags, tiny  # noqa: F401  (tiny: a fixture)


def log(out):
    return [(m["step"], m.get("loss"), m.get("val_loss")) for m in map(json.loads, open(out / "metrics.jsonl"))]


def straight_and_stopped(tiny, tmp_path, monkeypatch, call, *more):
    """The run straight through into a/, and the same run into b/ stopped by Ctrl-C at the loss's call-th call."""
    train.train(train.parse_args(flags(tiny, tmp_path / "a", *more)))
    fault_at_loss_call(monkeypatch, call, signal.SIGINT)
    with pytest.raises(SystemExit):
        train.main(flags(tiny, tmp_path / "b", *more))
    monkeypatch.undo()


def test_a_resume_between_progress_lines_logs_the_losses_a_straight_run_logs(tiny, tmp_path, monkeypatch):
    """Ctrl-C at step 4 of --log-every 5: the progress line of step 5 is the mean of steps 1-5's losses. The resumed
    run logged the mean of step 5's alone (steps 1-4's were lost with the process), a loss no step had: metrics.jsonl
    and the plot differed from the straight run's by 0.16 with no word (the demo's step 120: 0.4331 for 0.4329)."""
    straight_and_stopped(tiny, tmp_path, monkeypatch, 7)  # step 4's first micro-batch
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
    straight_and_stopped(tiny, tmp_path, monkeypatch, 9, *more)  # step 5
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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_demo_stopped_while_it_pretrains_goes_on_from_its_checkpoint(tmp_path, monkeypatch, capsys, sig):
    """Ctrl-C while the offline demo pretrains its model said it saved a checkpoint, then failed with "error: [Errno
    2] No such file or directory: '.../demo-llama.pretrain/model' -> '.../demo-llama'" (exit 1), and the next run
    threw the checkpoint away. Now it exits 130 saying so (SIGTERM: 143, 128 + 15, a scheduler's 'terminated'; it was
    130 too), and the next `python train.py` goes on from the checkpoint: the cached model is the one an uninterrupted
    first run pretrains, bit for bit."""
    monkeypatch.setitem(cli.DEMO_PRETRAIN, "docs", 300)
    monkeypatch.setitem(cli.DEMO_PRETRAIN, "config", dict(n_layer=1, n_embd=32, n_head=2, n_kv_head=2, n_ffn=64))
    demo = ["--max-steps", "1", "--exact-match", "0", "--dtype", "fp32", "--out", str(tmp_path / "out")]
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "straight"))
    train.main(demo)
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "stopped"))
    loss = train.causal_lm_loss
    fault_at_loss_call(monkeypatch, 2, sig)                            # the pretraining's step 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train.main(demo)
    assert e.value.code == 128 + sig                                   # 130, 143
    assert "interrupted at step 2 of the demo model's pretraining" in capsys.readouterr().err
    monkeypatch.setattr(train, "causal_lm_loss", loss)                 # no more signals
    train.main(demo)
    assert "going on from the checkpoint" in capsys.readouterr().out
    name = os.path.basename(cli.demo_model_dir())                     # (named by the recipe, as patched here)
    model = lambda cache: open(tmp_path / cache / "models" / name / "model.safetensors", "rb").read()  # noqa
    assert model("stopped") == model("straight")
    assert not os.path.exists(tmp_path / "stopped" / "models" / (name + ".pretrain"))


def test_a_learning_rate_past_one_is_refused_as_the_typo_it_is(capsys):
    """--lr 3e3 for 3e-3 trained on without a word (AdamW moves each weight by about lr a step: 3000): loss 8.8 after
    two steps of the demo's model, no NaN to stop it, an adapter of noise saved as the result."""
    with pytest.raises(SystemExit) as e:
        train.parse_args(["--model", "m", "--data", "d.json", "--lr", "3e3"])
    assert e.value.code == 2 and "argument --lr: 3e3 is out of range: must be a number > 0, <= 1" in \
        capsys.readouterr().err
    assert train.parse_args(["--model", "m", "--data", "d.json", "--lr", "1"]).lr == 1.0


def test_heldout_jsonl_stays_the_records_of_the_adapter_beside_it(tiny, tmp_path, monkeypatch):
    """A finished run (seed 0) in --out; a fresh run into it with --seed 1 stopped by Ctrl-C rewrote heldout.jsonl with
    its own split at load time while adapter/ still held the first run's result: the `evaluate:` line the first run
    printed then scored that adapter on records it had trained on (59 of the 60 with the demo's task), with no word.
    heldout.jsonl now changes with the result it goes with: the second run's, once it has one."""
    first = tmp_path / "first"
    train.train(train.parse_args(flags(tiny, first)))
    train.train(train.parse_args(flags(tiny, tmp_path / "second", "--seed", "1")))
    held = lambda run: open(run / "heldout.jsonl").read()  # noqa: E731
    assert held(first) != held(tmp_path / "second")                     # the seed draws another split
    fault_at_loss_call(monkeypatch, 9, signal.SIGINT)                  # step 5 of a fresh run with --seed 1
    with pytest.raises(SystemExit):
        train.main(flags(tiny, first, "--seed", "1"))
    monkeypatch.undo()
    assert held(first) != held(tmp_path / "second")                     # the first run's, beside its adapter
    train.train(train.parse_args(flags(tiny, first, "--seed", "1", "--resume")))
    assert held(first) == held(tmp_path / "second")                     # the second run's, beside its result


def test_an_early_stop_between_progress_lines_logs_the_losses_before_it(tiny, tmp_path, monkeypatch):
    """--patience stopping at step 4 of --log-every 5: the steps since the last progress line were never logged (the
    line comes before the validation that stops the run), so metrics.jsonl and the plot had no training loss at all
    for them. Now the stop logs them, as the last step of a run does."""
    for out, every in (tmp_path / "a", "5"), (tmp_path / "each", "1"):
        val = iter([3.0, 4.0, 5.0])                                    # worse at every evaluation after the first
        monkeypatch.setattr(train, "evaluate", lambda *a, **k: dict(val_loss=next(val)))  # noqa: B023
        train.train(train.parse_args(flags(tiny, out, "--eval-every", "2", "--patience", "1", "--log-every", every)))
    steps = [loss for _, loss, _ in log(tmp_path / "each") if loss is not None]
    assert len(steps) == 4 and log(tmp_path / "a") == [(2, None, 3.0), (4, None, 4.0), (4, pytest.approx(sum(steps) / 4,
                                                                                                 rel=1e-12), None)]


def test_resume_on_changed_data_is_refused_before_the_weights_load(tiny, tmp_path, monkeypatch):
    """train.py reads --data before the weights load so that a bad record is named before minutes of loading (and
    quantizing) a 7B base; a --resume whose data changed since the checkpoint was still refused only after the weights
    had loaded (restore, with the optimizer state). Now it is refused as soon as the data is read."""
    task = tmp_path / "task.json"
    task.write_text(open(tiny[1]).read())
    fault_at_loss_call(monkeypatch, 3, signal.SIGINT)                  # a checkpoint at step 2 of 10
    with pytest.raises(SystemExit):
        train.main(flags((tiny[0], str(task)), tmp_path / "out"))
    monkeypatch.undo()
    records = json.loads(task.read_text())
    records[7]["output"] = "a different answer"
    task.write_text(json.dumps(records))

    def loaded(*a, **k):
        raise AssertionError("the weights loaded before the data was checked")
    monkeypatch.setattr(train, "load_model", loaded)
    with pytest.raises(SystemExit, match=r"--resume: the training data changed since the checkpoint \(--data "):
        train.main(flags((tiny[0], str(task)), tmp_path / "out", "--resume"))


def test_a_checkpoint_saved_before_it_kept_its_log_and_losses_goes_on_as_before(tiny, tmp_path, monkeypatch):
    """A checkpoint written by the code before this session (no step losses in state.json, no metrics.jsonl of its
    own) resumes: OUT/metrics.jsonl's lines up to its step are kept, and the weights are the straight run's bit for
    bit; the progress line after it has only the steps since the resume to average, as that code's resume logged."""
    more = "--eval-every", "2"
    straight_and_stopped(tiny, tmp_path, monkeypatch, 7, *more)  # step 4
    state = json.load(open(tmp_path / "b" / "checkpoint" / "state.json"))
    del state["losses"]
    json.dump(state, open(tmp_path / "b" / "checkpoint" / "state.json", "w"))
    os.remove(tmp_path / "b" / "checkpoint" / "metrics.jsonl")
    train.train(train.parse_args(flags(tiny, tmp_path / "b", *more, "--resume")))
    straight, resumed = log(tmp_path / "a"), log(tmp_path / "b")
    assert [r for r in resumed if r[0] != 5 or r[1] is None] == [r for r in straight if r[0] != 5 or r[1] is None]
    assert [r for r in resumed if r[0] == 5 and r[1] is not None] != [r for r in straight if r[0] == 5 and r[1]]
    adapter = lambda run: open(run / "adapter" / "adapter_model.safetensors", "rb").read()  # noqa: E731
    assert adapter(tmp_path / "a") == adapter(tmp_path / "b")


def test_patience_goes_on_from_the_checkpoints_evaluations_when_its_log_was_deleted(tiny, tmp_path, monkeypatch,
                                                                                     capsys):
    """Deleting the checkpoint's metrics.jsonl starts the log again (documented), and dropped --patience's history with
    it: scripted validation losses 3, 4, 5, ... (the first the best) stop a straight --patience 2 run at step 6, and the
    same run stopped at step 5 and resumed without the file went on to step 10, its result step 6's weights (the first
    evaluation it saw, so "the best"), with no word. state.json now keeps the evaluations; a checkpoint saved before it
    did, its log deleted, is refused with --patience (its count would start from zero)."""
    import shutil
    more = "--eval-every", "2", "--patience", "2"
    losses = lambda: iter(float(v) for v in range(3, 20))               # noqa: E731  (worse at each evaluation)
    straight = losses()
    monkeypatch.setattr(train, "evaluate", lambda *a, **k: dict(val_loss=next(straight)))
    train.train(train.parse_args(flags(tiny, tmp_path / "a", *more)))
    assert json.load(open(tmp_path / "a" / "checkpoint" / "state.json"))["step"] == 6   # the early stop
    stopped = losses()
    monkeypatch.setattr(train, "evaluate", lambda *a, **k: dict(val_loss=next(stopped)))
    fault_at_loss_call(monkeypatch, 9, signal.SIGINT)                  # step 5: evaluations at 2 and 4 done
    with pytest.raises(SystemExit):
        train.main(flags(tiny, tmp_path / "b", *more))
    state = json.load(open(tmp_path / "b" / "checkpoint" / "state.json"))
    assert state["step"] == 5 and [e["step"] for e in state.get("evals", [])] == [2, 4], state.get("evals")
    os.remove(tmp_path / "b" / "checkpoint" / "metrics.jsonl")
    shutil.copytree(tmp_path / "b", tmp_path / "c")
    capsys.readouterr()
    train.train(train.parse_args(flags(tiny, tmp_path / "b", *more, "--resume")))
    out = capsys.readouterr().out
    assert "early stop: no better evaluation in the last 2" in out, out
    assert "metrics.jsonl is gone: the log starts again; --patience goes on from the 2 evaluations its state.json " \
           "keeps" in out, out
    assert json.load(open(tmp_path / "b" / "checkpoint" / "state.json"))["step"] == 6
    adapter = lambda run: open(run / "adapter" / "adapter_model.safetensors", "rb").read()  # noqa: E731
    assert adapter(tmp_path / "a") == adapter(tmp_path / "b")           # step 2's, the best, in both
    del state["evals"]                                                  # a checkpoint from before state.json kept them
    json.dump(state, open(tmp_path / "c" / "checkpoint" / "state.json", "w"))

    def loaded(*a, **k):
        raise AssertionError("the weights loaded before the checkpoint was checked")
    monkeypatch.setattr(train, "load_model", loaded)
    with pytest.raises(SystemExit, match=r"--resume: .*metrics\.jsonl is gone, and with it the evaluations "
                                         r"--patience 2 counts from"):
        train.main(flags(tiny, tmp_path / "c", *more, "--resume"))


def stopped_on(records, tiny, tmp_path, monkeypatch):
    """train.py's flags for a run on `records` (written to tmp_path/task.json) into tmp_path/out, and that run stopped
    by Ctrl-C with its checkpoint at step 3 of 4."""
    task = tmp_path / "task.json"
    task.write_text(json.dumps(records))
    argv = flags((tiny[0], str(task)), tmp_path / "out", "--max-steps", "4")
    fault_at_loss_call(monkeypatch, 5, signal.SIGINT)
    with pytest.raises(SystemExit):
        train.main(argv)
    monkeypatch.undo()
    return argv


def reads_and_tokenizes(monkeypatch):
    """([the path of each data.read_records call], [the records of each tokenize_records call]), as they come."""
    read, tokenized, original = [], [], (data.read_records, data.tokenize_records)
    monkeypatch.setattr(data, "read_records", lambda path, *a: read.append(path) or original[0](path, *a))
    monkeypatch.setattr(data, "tokenize_records", lambda r, *a: tokenized.append(len(r)) or original[1](r, *a))
    return read, tokenized


def test_resume_onto_changed_data_reads_and_tokenizes_it_once(tiny, tmp_path, monkeypatch, capsys):
    """--resume --allow-data-change onto a --data file with 30 records added read and tokenized it twice (train.py's
    load: a new seeded split, 81 train / 9 held-out; then resume.check_data: the checkpoint's 6 held-out records held
    out) and printed both splits' lines, the first of a split no step trained on. Now once, and one line."""
    records = json.load(open(tiny[1]))
    argv = stopped_on(records, tiny, tmp_path, monkeypatch)
    (tmp_path / "task.json").write_text(json.dumps(records + data.demo_records(30, seed=7)))
    read, tokenized = reads_and_tokenizes(monkeypatch)
    capsys.readouterr()
    train.main(argv + ["--resume", "--allow-data-change"])
    printed = capsys.readouterr().out
    assert [line for line in printed.splitlines() if line.startswith(f"{tmp_path / 'task.json'}: ")] == [
        f"{tmp_path / 'task.json'}: 84 train / 6 held-out examples of 90 records; 0 longer than --seq-len 200, cut"]
    assert read == [str(tmp_path / "task.json")] and sum(tokenized) == 90
    assert "the checkpoint's 6 held-out records stay held out (6 of them are in --data" in printed


def test_a_held_out_record_held_twice_keeps_its_training_twin_on_resume(tiny, tmp_path, monkeypatch, capsys):
    """A record the file holds twice, word for word, one copy held out and one training. An unchanged --resume goes on
    (a split by the checkpoint's held-out records alone moves both copies out: other examples, refused as changed
    data); --resume --allow-data-change onto the file with 30 records added held out both copies (7 records, one of
    them the checkpoint's training record): now the checkpoint's held-out copy alone."""
    records = json.load(open(tiny[1]))
    held = data.split_records(records, 0.1, 0)[1]
    records[-1] = held[0]                                       # (record 59 trains: the split is the same)
    argv = stopped_on(records, tiny, tmp_path, monkeypatch)
    assert data.split_records(records, 0.1, 0)[1] == held
    shutil.copytree(tmp_path / "out", tmp_path / "again")
    train.main(argv + ["--resume"])                              # the same data: goes on
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["steps"] == 4
    (tmp_path / "task.json").write_text(json.dumps(records + data.demo_records(30, seed=7)))
    train.main(flags((tiny[0], str(tmp_path / "task.json")), tmp_path / "again", "--max-steps", "4", "--resume",
                     "--allow-data-change"))
    now = [json.loads(line) for line in open(tmp_path / "again" / "heldout.jsonl")]
    printed = capsys.readouterr().out
    assert f"{tmp_path / 'task.json'}: 84 train / 6 held-out examples of 90 records" in printed
    assert sorted(map(json.dumps, now)) == sorted(map(json.dumps, held))


def test_a_resume_of_a_resume_that_held_nothing_out_says_why_not_val_fractions_rounding(tiny, tmp_path, monkeypatch,
                                                                                       capsys):
    """--resume --allow-data-change onto the data less the checkpoint's 6 held-out records holds none out (said), and
    its checkpoint names none. A --resume of that said "--val-fraction 0.1 holds nothing of ... out (it rounds to 0)",
    of 54 records (0.1 of them is 5), and refused --exact-match for that reason: now it says the checkpoint names no
    held-out records, and refuses --exact-match saying so."""
    records, task = json.load(open(tiny[1])), tmp_path / "task.json"
    task.write_text(json.dumps(records))
    argv = flags((tiny[0], str(task)), tmp_path / "out", "--max-steps", "8")
    for more in ([], ["--resume", "--allow-data-change"]):                # each stopped by Ctrl-C 3 steps on
        fault_at_loss_call(monkeypatch, 5, signal.SIGINT)
        with pytest.raises(SystemExit):
            train.main(argv + more)
        monkeypatch.undo()
        held = data.split_records(records, 0.1, 0)[1]                       # 6 records held out
        task.write_text(json.dumps([r for r in records if r not in held]))
    argv += ["--resume"]
    assert "the checkpoint's 6 held-out records stay held out (0 of them are in --data" in capsys.readouterr().out
    assert json.load(open(tmp_path / "out" / "checkpoint" / "state.json"))["step"] == 6
    assert json.load(open(tmp_path / "out" / "checkpoint" / "state.json"))["args"]["held_out"] == []
    with pytest.raises(SystemExit) as refused:
        train.main(argv + ["--exact-match", "2"])
    assert "rounds to 0" not in capsys.readouterr().out + str(refused.value)
    assert str(refused.value) == "error: --exact-match 2 asks held-out records, and this --resume holds out its " \
                                 f"checkpoint's held-out records, and none is in {task}: drop --exact-match"
    train.main(argv)
    out = capsys.readouterr().out
    assert "rounds to 0" not in out
    assert "note: --resume holds out the checkpoint's held-out records, and it names none (its run's --val-fraction " \
           "share was none, or a --resume --allow-data-change found none of its own in --data): no validation " \
           "loss" in out
    assert json.loads(out.splitlines()[-1])["steps"] == 8


def test_a_resume_reads_state_json_once(tiny, tmp_path, monkeypatch):
    """A --resume read the checkpoint's state.json 5 times: set_up's take_settings, load's check of the data, restore,
    then resume.open_log and its kept_log (twice where the checkpoint's log is gone). open_log took restore's
    (Run.state): 3 reads; now take_settings' is the run's (Run.state from set_up on), and load and restore take it: 1
    read, and the log is the straight run's."""
    straight_and_stopped(tiny, tmp_path, monkeypatch, 7)                # step 4
    read, real = [], resume.read_state                                  # (train.py calls it only inside resume.py)
    monkeypatch.setattr(resume, "read_state", lambda *a, **k: read.append(a[0]) or real(*a, **k))
    train.train(train.parse_args(flags(tiny, tmp_path / "b", "--resume")))
    assert read == [str(tmp_path / "b" / "checkpoint")] and log(tmp_path / "b") == log(tmp_path / "a")


def test_a_resume_with_no_validation_set_is_told_what_a_resume_can_do(tiny, tmp_path, monkeypatch, capsys):
    """A --patience run resumed (--allow-data-change) onto data without its checkpoint's 6 held-out records was told
    "(--val-fraction 0.1 of DATA); hold some records out, or drop --patience", and onto data of those records alone
    "--val-fraction 0.1 held them all out": a resume holds out its checkpoint's records, and refuses another
    --val-fraction or --patience. Now each says what a resume can do; the advice followed, the run goes on."""
    records, task = json.load(open(tiny[1])), tmp_path / "task.json"
    task.write_text(json.dumps(records))
    argv = flags((tiny[0], str(task)), tmp_path / "out", "--patience", "2", "--eval-every", "4")
    fault_at_loss_call(monkeypatch, 5, signal.SIGINT)                   # stopped by Ctrl-C 3 steps on
    with pytest.raises(SystemExit):
        train.main(argv)
    monkeypatch.undo()
    held = data.split_records(records, 0.1, 0)[1]                       # 6 records held out
    assert len(held) == 6 and json.load(open(tmp_path / "out" / "checkpoint" / "state.json"))["step"] == 3
    argv += ["--resume", "--allow-data-change"]
    task.write_text(json.dumps([r for r in records if r not in held]))
    with pytest.raises(SystemExit) as refused:
        train.main(argv)
    assert str(refused.value) == (
        "error: --patience 2: there is no validation set to watch (this --resume holds out its checkpoint's held-out "
        f"records, and none is in {task}); a --resume keeps the checkpoint's --patience and --val-fraction: give "
        "--data with those records in it, or start a new run without --resume")
    for flag in (["--patience", "0"], ["--val-fraction", "0.5"]):      # what the old advice asked: refused
        with pytest.raises(SystemExit, match="--resume with different settings than the checkpoint's"):
            train.main(argv + flag)
    task.write_text(json.dumps(held))
    with pytest.raises(SystemExit) as refused:
        train.main(argv)
    assert str(refused.value) == f"error: --data {task}: no training examples (empty, or every record's prompt is " \
        "longer than --seq-len 200, or every record is one the checkpoint held out, which this --resume holds out " \
        "again); nothing to train on"
    task.write_text(json.dumps(records))                                # the records back: it goes on
    capsys.readouterr()
    train.main(argv)
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["steps"] == 10


def test_data_hash_serializes_each_example_once_and_hashes_as_before(monkeypatch):
    """train.py serialized every tokenized example twice, for data_sha256 (resume.data_hash) and for data_parts
    (tasks.check_split's): 12 of MNLI's 66 s and 29 of WMT16's 99 s before the first step. One pass now gives both,
    each hash what it was (a checkpoint's data_sha256 still matches its data)."""
    def old(*lists):                                           # both hashes as they were made
        return hashlib.sha256(b"".join(json.dumps(e, separators=(",", ":")).encode() for x in lists for e in x)
                              ).hexdigest()
    train_ex = [{"input_ids": [1, 2], "labels": 0}, {"input_ids": [3], "labels": 1}]
    glue = {"dev_matched": [{"input_ids": [4], "labels": 2}, {"input_ids": [5], "labels": 0}], "dev_mismatched": []}
    for val, parts in ((glue, glue), (train_ex[:1], {"validation": train_ex[:1]}), ([([5, 1], [6, 1])], None)):
        dumps, calls, args = json.dumps, [], argparse.Namespace()
        monkeypatch.setattr(json, "dumps", lambda *a, **k: calls.append(a[0]) or dumps(*a, **k))
        got = resume.data_hash(train_ex, val, args)
        monkeypatch.undo()
        parts = parts or {"validation": val}
        assert got == old(train_ex, val.items() if isinstance(val, dict) else val)
        assert args.data_parts == {"train": old(train_ex), **{p: old(x) for p, x in parts.items()}}
        assert [c for c in calls if not isinstance(c, str)] == train_ex + [e for x in parts.values() for e in x]
