"""Folders an older lorasp wrote, read by today's (session 32): each read as the version that wrote it would, or
refused naming the file and what to do. The old layouts are written here by hand (no old commit is needed)."""
import argparse
import json
import math
import os
import shutil
import signal

import pytest

import cli
import data
import resume
import train
from fixtures import fault_at_loss_call, flags, tiny  # noqa: F401  (tiny: a fixture)

DEMO = ["--max-steps", "3", "--save-every", "1", "--exact-match", "0", "--dtype", "fp32"]


@pytest.fixture
def demo_stopped(tmp_path, monkeypatch):
    """The offline demo (a small recipe) straight into a/, and stopped by Ctrl-C after step 2 into b/; then the recipe
    changes, as an earlier lorasp's did (its model was demo-llama, before the folder was named by its recipe)."""
    monkeypatch.setitem(cli.DEMO_PRETRAIN, "docs", 300)
    monkeypatch.setitem(cli.DEMO_PRETRAIN, "config", dict(n_layer=1, n_embd=32, n_head=2, n_kv_head=2, n_ffn=64))
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
    train.main(DEMO + ["--out", str(tmp_path / "a")])
    fault_at_loss_call(monkeypatch, 2, signal.SIGINT)                    # step 2 (one loss a step): saved after it
    with pytest.raises(SystemExit):
        train.main(DEMO + ["--out", str(tmp_path / "b")])
    old = cli.demo_model_dir()
    monkeypatch.undo()
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(cli.DEMO_PRETRAIN, "docs", 301)                 # today's recipe: another model folder
    monkeypatch.setitem(cli.DEMO_PRETRAIN, "config", dict(n_layer=1, n_embd=32, n_head=2, n_kv_head=2, n_ffn=64))
    assert cli.demo_model_dir() != old
    return tmp_path, old


def test_the_demo_resumed_after_its_recipe_changed_goes_on_on_the_model_it_trained_on(demo_stopped, capsys):
    """`python train.py --resume` of a demo run an earlier lorasp began (its model in $LORASP_CACHE/models/demo-llama,
    or another recipe's demo-llama-HASH) pretrained today's demo model (3 minutes), then refused: "the base model's
    files changed since the checkpoint (--model .../demo-llama-20081dfc: config.json differs, ...): restore them",
    though nothing had changed and the old model was still there. Now it goes on on the checkpoint's own model, and
    its adapter is the straight run's bit for bit; today's model is not pretrained."""
    tmp_path, old = demo_stopped
    capsys.readouterr()
    train.main(DEMO + ["--out", str(tmp_path / "b"), "--resume"])
    out = capsys.readouterr().out
    assert f"trained on the offline demo's model {old}" in out
    adapter = lambda run: open(tmp_path / run / "adapter" / "adapter_model.safetensors", "rb").read()  # noqa: E731
    assert adapter("a") == adapter("b")
    assert not os.path.exists(cli.demo_model_dir())


def test_the_demo_resumed_after_its_old_model_was_deleted_is_refused_naming_it(demo_stopped, capsys):
    """The same, with the earlier recipe's model deleted (today's demo says it is not used: delete it): refused
    before any pretraining, naming the model the checkpoint trained on, not as files that changed."""
    tmp_path, old = demo_stopped
    shutil.rmtree(old)
    with pytest.raises(SystemExit) as e:
        train.main(DEMO + ["--out", str(tmp_path / "b"), "--resume"])
    assert f"trained on the offline demo's model {old}, which is gone" in str(e.value.code)
    assert "start again without --resume" in str(e.value.code)
    assert not os.path.exists(cli.demo_model_dir())
    assert json.load(open(tmp_path / "b" / "checkpoint" / "state.json"))["step"] == 2


def old_lr_at(step, total, args):
    """train.lr_at as lorasp had it before 2026-12-05 (f3058b0): at least one warm-up step, round()ed."""
    warm = max(1, round(args.warmup * total))
    if step < warm:
        return args.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return args.lr * (0.5 * (1 + math.cos(math.pi * t)) if args.schedule == "cosine" else 1 - t)


@pytest.mark.parametrize("warmup", ["0.03", "0"])
def test_a_checkpoint_saved_before_state_json_named_its_warm_up_rule_goes_on_with_the_rule_it_ran(
        tiny, tmp_path, monkeypatch, warmup):
    """A state.json without warmup_rule (lorasp before 9a38efa) was resumed as round(--warmup x total) warm-up steps:
    the demo run f3058b0 began (--max-steps 8, stopped at step 4 by SIGTERM) had warmed max(1, round(0.24)) = 1 step
    and went on with none, every lr after it another (step 8's 1.142e-04, not 1.485e-04; final loss 9.102, not
    8.915), exit 0. Now the rule is the one under which the checkpoint's last step ran at optimizer.pt's lr: the
    adapter is the old schedule's straight run's bit for bit (--warmup 0: that code's one full-lr step, too)."""
    more = "--warmup", warmup, "--eval-every", "2"
    monkeypatch.setattr(train, "lr_at", old_lr_at)             # the run as that code ran it, straight and stopped
    train.train(train.parse_args(flags(tiny, tmp_path / "a", *more)))
    fault_at_loss_call(monkeypatch, 7, signal.SIGINT)          # step 4 of 10
    with pytest.raises(SystemExit):
        train.main(flags(tiny, tmp_path / "b", *more))
    monkeypatch.undo()
    path = tmp_path / "b" / "checkpoint" / "state.json"
    state = json.load(open(path))
    assert state.pop("warmup_rule") and state["step"] == 4
    json.dump(state, open(path, "w"))                          # as that code wrote it
    train.train(train.parse_args(flags(tiny, tmp_path / "b", *more, "--resume")))
    adapter = lambda run: open(run / "adapter" / "adapter_model.safetensors", "rb").read()  # noqa: E731
    assert adapter(tmp_path / "a") == adapter(tmp_path / "b")
    assert json.load(open(path))["warmup_rule"] == ("ceil" if warmup == "0.03" else "round1")  # (the same count)


def test_a_checkpoint_whose_last_lr_fits_two_warm_up_counts_is_refused():
    """At step 1 of --warmup 0, step 0 ran at the full lr whether that lorasp warmed 1 step (max(1, round(0))) or
    none: the steps left would differ, so the resume is refused naming state.json (it went on with none before)."""
    args = argparse.Namespace(out="OUT", lr=1e-3, warmup=0.0, schedule="cosine")
    with pytest.raises(data.UserError, match=r"OUT/checkpoint/state.json does not say how its run counted its "
                                             r"warm-up steps .* fits 0 and 1 warm-up steps of its 8"):
        resume.old_warmup(args, dict(step=1, lr=1e-3), 8)
    assert resume.old_warmup(args, dict(step=2, lr=train.lr_at(1, 8, argparse.Namespace(
        **vars(args), warmup_rule="round1"))), 8) == "round1"     # at step 2 the lr tells them apart
