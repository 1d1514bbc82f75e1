"""Out of memory mid-run, and the way back (session 35): what a run says when an allocation fails (the step, the save,
the last good checkpoint, the settings that need less), a --resume at another split of a step's records or with other
recomputation, and --plan-only. Each failure is torch's own: a real allocation too large for any machine."""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import cli
import plan
import resume
import train
from fixtures import fault_at_loss_call, flags, tiny  # noqa: F401  (tiny: a fixture)


def too_large():
    """torch's own out of memory: `DefaultCPUAllocator: can't allocate memory: you tried to allocate ... bytes`."""
    torch.empty(1 << 62, dtype=torch.uint8)


def fail_at_loss_call(monkeypatch, n):
    """train.py's n-th training loss (gradients on) fails to allocate, as a step too large for the memory would."""
    calls, original = [0], train.causal_lm_loss

    def loss(model, batch):
        calls[0] += torch.is_grad_enabled()
        if calls[0] == n and torch.is_grad_enabled():
            too_large()
        return original(model, batch)
    monkeypatch.setattr(train, "causal_lm_loss", loss)


def records_per_call(monkeypatch):
    """The training records (their token ids) of each training loss call, as a list the run appends to."""
    seen, original = [], train.causal_lm_loss

    def loss(model, batch):
        if torch.is_grad_enabled():
            seen.append(sorted(tuple(ids[mask.bool()].tolist()) for ids, mask in zip(batch["input_ids"],
                                                                                    batch["attention_mask"])))
        return original(model, batch)
    monkeypatch.setattr(train, "causal_lm_loss", loss)
    return seen


def steps(calls, accum):
    """Each step's records: accum loss calls a step."""
    return [sorted(sum(calls[i:i + accum], [])) for i in range(0, len(calls), accum)]


def stopped(monkeypatch, tiny, out, call, *more):
    """train.py into out with flags `more`, stopped by Ctrl-C at the loss's `call`-th call (saved after its step)."""
    fault_at_loss_call(monkeypatch, call, signal.SIGINT)
    with pytest.raises(SystemExit):
        train.main(flags(tiny, out, *more))
    monkeypatch.undo()


def losses(out):
    return [m["loss"] for m in map(json.loads, open(out / "metrics.jsonl")) if "loss" in m]


def test_out_of_memory_in_a_step_names_it_keeps_the_checkpoint_and_the_split_it_names_goes_on(tiny, tmp_path,
                                                                                              monkeypatch):
    """torch's out of memory at step 5 (checkpoints every 3 steps) was a traceback that said nothing of the run: now
    one line says the step, the checkpoint kept (step 3) and the settings that need less by the memory plan; the
    first it names, another split of the same 8 records a step, resumes and ends where the straight run ends."""
    more = "--save-every", "3", "--log-every", "1", "--max-steps", "6"  # (in the first epoch: see the next tests)
    train.train(train.parse_args(flags(tiny, tmp_path / "a", *more)))
    fail_at_loss_call(monkeypatch, 9)                          # step 5's first micro-batch (4 x 2)
    with pytest.raises(SystemExit) as stop:
        train.main(flags(tiny, tmp_path / "b", *more))
    monkeypatch.undo()
    said = str(stop.value.code)
    assert said.startswith("error: out of memory in step 5 ([enforce fail") and "DefaultCPUAllocator: can't allocate " \
        "memory: you tried to allocate 4611686018427387904 bytes" in said, said
    assert f"The last good checkpoint is kept in {tmp_path / 'b' / 'checkpoint'} (step 3)" in said, said
    assert json.load(open(tmp_path / "b" / "checkpoint" / "state.json"))["step"] == 3
    # the plan's figures for each, all below this run's; the splits and recomputation go on, the rest start again
    assert "Settings that need less, by the memory plan (this run's settings: " in said, said
    assert "--batch-size 2 --grad-accum 4 (" in said and "--batch-size 1 --grad-accum 8 (" in said, said
    assert "--checkpointing full (" in said and ": each goes on from the checkpoint (the same command with " \
        "--resume and it)" in said, said
    assert "--seq-len 100 (" in said and ": each changes the run: start again" in said  # (NF4: < 1 MiB less here)
    train.train(train.parse_args(flags(tiny, tmp_path / "b", *more, "--resume", "--batch-size", "2", "--grad-accum",
                                       "4")))
    torch.testing.assert_close(losses(tmp_path / "b"), losses(tmp_path / "a"), rtol=1e-5, atol=0)


def llama2_7b_config(folder):
    """A --model-dir for llama2-7b holding its config.json alone (Meta's Llama-2-7b-hf's fields): plans, no weights."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=4096, intermediate_size=11008,
        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
        max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False)))
    return str(folder)


def test_out_of_memory_at_7b_names_each_setting_that_needs_less_with_its_plan(tmp_path, capsys):
    """llama2-7b, fp32, no quantization or recomputation (--force): an allocation that fails before any save names
    every setting the plan says needs less, each with the total plan.estimate gives it, as settings to start again
    with (nothing to resume)."""
    args = train.parse_args(["--model", "llama2-7b", "--model-dir", llama2_7b_config(tmp_path / "7b"), "--data",
                             "alpaca", "--out", str(tmp_path / "o"), "--quant", "none", "--checkpointing", "none",
                             "--dtype", "fp32", "--force"])
    run = train.set_up(args)
    cli.plan_memory(run)
    with pytest.raises(RuntimeError) as e:
        too_large()
    said = str(resume.oom_error(run, e.value))
    mib = lambda **change: sum(plan.estimate(*run.plan_inputs[:1], argparse.Namespace(**{  # noqa: E731
        **vars(args), **change}), *run.plan_inputs[2:]).values()) / 2**20
    assert said.startswith("out of memory in the run ([enforce fail") and "This run had saved no checkpoint" in said
    assert f"(this run's settings: {mib():,.0f} MiB; " in said, said
    assert (f": --batch-size 2 --grad-accum 16 ({mib(batch_size=2, grad_accum=16):,.0f} MiB); --batch-size 1 "
            f"--grad-accum 32 ({mib(batch_size=1, grad_accum=32):,.0f} MiB); --checkpointing full "
            f"({mib(checkpointing='full'):,.0f} MiB); --quant nf4 ({mib(quant='nf4'):,.0f} MiB); --seq-len 256 "
            f"({mib(seq_len=256):,.0f} MiB): start again with one") in said, said
    assert max(mib(checkpointing="full"), mib(quant="nf4"), mib(batch_size=2, grad_accum=16), mib(seq_len=256)) < mib()


def test_out_of_memory_while_saving_keeps_the_checkpoint_before(tiny, tmp_path, monkeypatch):
    """An allocation that fails in the second save (step 6) leaves the first checkpoint whole (the save's temporary
    folder is removed), says so, and a --resume goes on from it bit for bit."""
    more = "--save-every", "3", "--log-every", "1"
    train.train(train.parse_args(flags(tiny, tmp_path / "a", *more)))
    saves, original = [0], resume.save_safetensors

    def save(tensors, path):
        saves[0] += 1
        too_large() if saves[0] == 2 else None
        return original(tensors, path)
    monkeypatch.setattr(resume, "save_safetensors", save)       # the checkpoint's rng.safetensors, mid-save
    with pytest.raises(SystemExit) as stop:
        train.main(flags(tiny, tmp_path / "b", *more))
    monkeypatch.undo()
    said = str(stop.value.code)
    assert said.startswith("error: out of memory in saving the checkpoint of step 6 ("), said
    assert f"kept in {tmp_path / 'b' / 'checkpoint'} (step 3)" in said, said
    assert json.load(open(tmp_path / "b" / "checkpoint" / "state.json"))["step"] == 3
    assert sorted(os.listdir(tmp_path / "b")) == ["checkpoint", "heldout.jsonl", "metrics.jsonl"]
    train.train(train.parse_args(flags(tiny, tmp_path / "b", *more, "--resume")))
    assert losses(tmp_path / "b") == losses(tmp_path / "a")


# train.py in a child process that the kernel's OOM killer ends (SIGKILL: nothing to catch, nothing printed) half-way
# through its second checkpoint's rng.safetensors
OOM_KILLED = """
import os, signal, sys, resume, train
from fixtures import flags
saves, original = [0], resume.save_safetensors
def save(tensors, path):
    saves[0] += 1
    if saves[0] == 2:
        open(path, "wb").write(b"half")
        os.kill(os.getpid(), signal.SIGKILL)
    return original(tensors, path)
resume.save_safetensors = save
train.main(flags(sys.argv[1:3], sys.argv[3], "--save-every", "3", "--log-every", "1"))
"""


def test_the_oom_killer_mid_save_leaves_the_checkpoint_before_and_resume_goes_on(tiny, tmp_path):
    """What a user sees when the kernel kills the run instead (exit -9, "Killed" in a shell, no word from train.py):
    OUT/checkpoint is the last whole save (step 3; the killed one's OUT/checkpoint.tmp is left, and the next save
    replaces it), and --resume goes on to the straight run's losses, bit for bit."""
    root, more = os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ("--save-every", "3", "--log-every", "1")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.path.join(root, "tests")]))
    child = subprocess.run([sys.executable, "-c", OOM_KILLED, *tiny, str(tmp_path / "b")], cwd=root, env=env,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    assert "step     6/10" in child.stdout and "error" not in child.stdout + child.stderr  # (killed in step 6's save)
    assert json.load(open(tmp_path / "b" / "checkpoint" / "state.json"))["step"] == 3
    assert (tmp_path / "b" / "checkpoint.tmp" / "rng.safetensors").read_bytes() == b"half"
    train.train(train.parse_args(flags(tiny, tmp_path / "a", *more)))
    train.train(train.parse_args(flags(tiny, tmp_path / "b", *more, "--resume")))
    assert losses(tmp_path / "b") == losses(tmp_path / "a") and not os.path.exists(tmp_path / "b" / "checkpoint.tmp")


def test_out_of_memory_before_any_save_says_so_and_what_to_start_again_with(tiny, tmp_path, monkeypatch):
    fail_at_loss_call(monkeypatch, 3)                          # step 2
    with pytest.raises(SystemExit) as stop:
        train.main(flags(tiny, tmp_path, "--save-every", "0"))
    said = str(stop.value.code)
    assert said.startswith("error: out of memory in step 2 (") and "This run had saved no checkpoint (--save-every " \
        "0)" in said, said
    assert "--batch-size 2 --grad-accum 4 (" in said and "--checkpointing full (" in said and ": start again with " \
        "one" in said and "--resume" not in said, said


def test_an_error_that_is_not_out_of_memory_keeps_its_traceback(tiny, tmp_path, monkeypatch):
    """A bug (a RuntimeError of another kind) is not taken for an out of memory: it stays a traceback."""
    def loss(model, batch):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)")
    monkeypatch.setattr(train, "causal_lm_loss", loss)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        train.main(flags(tiny, tmp_path))



def test_out_of_memory_loading_names_what_it_read_and_only_settings_that_shrink_it(tiny, tmp_path, monkeypatch):
    """A --resume (54 examples at 4 x 1 to step 20: another split parts ways at the epoch's end) whose model fails to
    load named as ways on --batch-size 2 --grad-accum 2 ("goes on from the checkpoint"), which that --resume refuses,
    and --checkpointing full and --seq-len, which loading does not use: now only what shrinks the weights (--quant
    nf4: < 1 MiB on the tiny model, so none). Its data failing to load was "loading the model": now "reading --data"."""
    more = "--batch-size", "4", "--grad-accum", "1", "--max-steps", "20"
    stopped(monkeypatch, tiny, tmp_path, 4, *more)
    for target, doing in (("train.load_model", "loading the model"), ("data.load_examples", "reading --data")):
        monkeypatch.setattr(target, lambda *a, **k: too_large())
        with pytest.raises(SystemExit) as stop:
            train.main(flags(tiny, tmp_path, *more, "--resume"))
        monkeypatch.undo()
        said = str(stop.value.code)
        assert said.startswith(f"error: out of memory in {doing} (") and f"{tmp_path / 'checkpoint'} (step 4)" in said
        assert said.endswith("other processes may have taken memory since): none (a machine with more memory, or "
                             "fewer processes on it)"), said
    with pytest.raises(SystemExit, match="the steps left would not train the records"):   # what it named before
        train.main(flags(tiny, tmp_path, *more, "--resume", "--batch-size", "2", "--grad-accum", "2"))


def test_out_of_memory_in_the_validation_names_no_recomputation(tiny, tmp_path, monkeypatch):
    """The validation has no backward: --checkpointing full leaves it as it was (it was named first); a smaller
    --batch-size (its batches') is named."""
    monkeypatch.setattr(train, "evaluate", lambda *a, **k: too_large())
    with pytest.raises(SystemExit) as stop:
        train.main(flags(tiny, tmp_path, "--eval-every", "4", "--save-every", "2", "--max-steps", "6"))
    said = str(stop.value.code)
    assert said.startswith("error: out of memory in the validation after step 4 (") and "(step 2)" in said, said
    assert "--batch-size 2 --grad-accum 4 (" in said and "--checkpointing" not in said, said


def test_out_of_memory_in_the_check_after_training_says_the_result_is_saved(tiny, tmp_path, monkeypatch, capsys):
    """The held-out check after training runs out: the run's result is saved (it said only "the last good checkpoint"
    and named training settings to go on with, the check's memory unchanged by them); the same command with --resume
    and --exact-match 0, as it says, ends the run without the check, exit 0."""
    before_after = train.before_after
    monkeypatch.setattr(train, "before_after", lambda *a: too_large() if a[-1] == "after" else before_after(*a))
    with pytest.raises(SystemExit) as stop:
        train.main(flags(tiny, tmp_path, "--exact-match", "4"))
    monkeypatch.undo()
    said = str(stop.value.code)
    assert said.startswith("error: out of memory in the held-out check after training (") and "Training ended: its " \
        f"result is saved in {tmp_path / 'adapter'}. The same command with --resume and --exact-match 0 " \
        "ends the run without the check (eval.py scores the result)" in said and "Settings" not in said, said
    capsys.readouterr()
    train.main(flags(tiny, tmp_path, "--exact-match", "4", "--resume", "--exact-match", "0"))
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["steps"] == 10


def test_out_of_memory_with_full_blocks_names_full_recomputation_as_it_resumes(tiny, tmp_path, monkeypatch):
    """--checkpointing selective --full-blocks 1: the way on it named, '--checkpointing full' added to the same
    command with --resume, was argparse's refusal ('--full-blocks 1 needs --checkpointing selective'); it names
    --full-blocks 0 with it now, and that command resumes."""
    more = "--save-every", "3", "--max-steps", "6", "--checkpointing", "selective", "--full-blocks", "1", "--seq-len", \
        "200", "--batch-size", "8", "--grad-accum", "1"
    fail_at_loss_call(monkeypatch, 5)                          # step 5
    with pytest.raises(SystemExit) as stop:
        train.main(flags(tiny, tmp_path, *more))
    monkeypatch.undo()
    said = str(stop.value.code)
    assert "(step 3)" in said and "--checkpointing full --full-blocks 0 (" in said, said
    with pytest.raises(SystemExit) as refused:                  # what it named before
        train.main(flags(tiny, tmp_path, *more, "--resume", "--checkpointing", "full"))
    assert refused.value.code == 2
    train.main(flags(tiny, tmp_path, *more, "--resume", "--checkpointing", "full", "--full-blocks", "0"))
    assert json.load(open(tmp_path / "checkpoint" / "state.json"))["step"] == 6

def test_what_counts_as_out_of_memory():
    """torch's CPU allocator's own error, CUDA's class (no GPU here: its class, with the text torch gives it), MPS's
    text and Python's MemoryError; not another RuntimeError."""
    with pytest.raises(RuntimeError) as cpu:
        too_large()
    assert resume.allocation_failure(cpu.value) and resume.allocation_failure(MemoryError())
    assert resume.allocation_failure(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 "
                                                            "has a total capacity of 79.19 GiB"))
    assert resume.allocation_failure(RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)"))
    assert not resume.allocation_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)"))


def test_a_resume_at_another_split_of_a_steps_records_trains_the_same_records(tiny, tmp_path, monkeypatch, capsys):
    """4 x 1 straight, and stopped at step 4 then resumed at 2 x 2 and at 1 x 4: each step left trains the straight
    run's 4 records, and the losses equal its to 1e-5 relative (fp32: the step's sums run in another order, over
    batches padded to other lengths; measured 8.2e-8, under float32's epsilon, over the 6 steps left, while one step's
    loss moves the next by ~1e-2: a step on other records could not pass). It was refused ("--batch-size 4 -> 2")."""
    more = "--batch-size", "4", "--grad-accum", "1", "--log-every", "1"
    straight = records_per_call(monkeypatch)
    train.train(train.parse_args(flags(tiny, tmp_path / "a", *more)))
    monkeypatch.undo()
    for b, g in (2, 2), (1, 4):
        out = tmp_path / f"{b}x{g}"
        stopped(monkeypatch, tiny, out, 4, *more)  # Ctrl-C at step 4: saved after it
        assert json.load(open(out / "checkpoint" / "state.json"))["step"] == 4
        resumed = records_per_call(monkeypatch)
        capsys.readouterr()
        train.train(train.parse_args(flags(tiny, out, *more, "--resume", "--batch-size", str(b), "--grad-accum",
                                           str(g))))
        monkeypatch.undo()
        assert f"note: --resume at --batch-size {b} --grad-accum {g}, the checkpoint's run 4 x 1: each step trains " \
            "the same 4 records" in capsys.readouterr().out
        assert steps(resumed, g) == steps(straight, 1)[4:]
        torch.testing.assert_close(losses(out), losses(tmp_path / "a"), rtol=1e-5, atol=0)


def test_a_resume_at_another_number_of_records_a_step_is_refused_naming_the_product(tiny, tmp_path, monkeypatch):
    train.train(train.parse_args(flags(tiny, tmp_path, "--max-steps", "2")))   # 4 x 2, ended at step 2
    with pytest.raises(SystemExit, match=r"--resume with different settings than the checkpoint's: --batch-size 4 -> "
                       r"2 \(keep --batch-size x --grad-accum = 4 x 2 = 8, the records a step trains, e.g. "
                       r"--batch-size 2 --grad-accum 4\)$"):
        train.main(flags(tiny, tmp_path, "--max-steps", "2", "--resume", "--batch-size", "2"))


def test_a_one_process_checkpoint_resumed_on_two_processes_at_half_the_batch(tiny, tmp_path, monkeypatch):
    """4 x 2 in one process, stopped at step 2, resumed under torchrun on 2 processes at 2 x 2 (the same 8 records a
    step: each rank takes every other one of a global micro-batch of 4): the losses are the straight run's to 1e-5
    relative (the all-reduce sums the ranks' halves). It was refused ("1 -> 2 processes")."""
    from test_ddp import summary, torchrun
    more = "--log-every", "1", "--max-steps", "4"
    train.train(train.parse_args(flags(tiny, tmp_path / "a", *more)))
    stopped(monkeypatch, tiny, tmp_path / "b", 3, *more)  # step 2
    resumed, _ = torchrun(tmp_path, "resumed", flags(tiny, tmp_path / "b", *more, "--resume", "--batch-size", "2"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "note: --resume at --batch-size 2 --grad-accum 2 on 2 processes, the checkpoint's run 4 x 2 x 1 " \
        "process: each step trains the same 8 records" in resumed.stdout and summary(resumed)["world_size"] == 2
    torch.testing.assert_close(losses(tmp_path / "b"), losses(tmp_path / "a"), rtol=1e-5, atol=0)


def test_a_split_whose_steps_part_ways_at_an_epochs_end_is_refused(tiny, tmp_path, monkeypatch):
    """54 training examples at 4 x 1 end each epoch in a step of 2 records (step 14); at 2 x 2 that micro-batch of 2
    would share step 14 with the next epoch's first: every step after it would train other records. Refused, before
    the weights load, naming the split that goes on."""
    more = "--batch-size", "4", "--grad-accum", "1", "--max-steps", "20"
    stopped(monkeypatch, tiny, tmp_path, 4, *more)
    monkeypatch.setattr(train, "load_model", None)              # not reached
    with pytest.raises(SystemExit, match=r"--resume with --batch-size 2 --grad-accum 2: the steps left would not "
                       r"train the records the checkpoint's run \(4 x 1\) trains in each \(an epoch of 54 training "
                       r"examples .*\): give --batch-size 4 --grad-accum 1$"):
        train.main(flags(tiny, tmp_path, *more, "--resume", "--batch-size", "2", "--grad-accum", "2"))


@pytest.mark.parametrize("n, b, g, micro", [(54, 4, 1, None), (54, 4, 2, None), (10, 2, 2, None), (12, 3, 2, 7),
                                            (7, 8, 1, None)])
def test_step_ends_are_where_micro_batches_ends_each_step(n, b, g, micro):
    """resume.step_ends against data.micro_batches itself: the records dealt by the end of each step, over 3 epochs."""
    import data
    examples = [dict(input_ids=[1] * (2 + i % 5), labels=[1] * (2 + i % 5)) for i in range(n)]
    stream, cum, dealt = data.micro_batches(examples, b, 0, accum=g), resume.step_ends(n, b, g, 1, micro), 0
    for k in range(1, 3 * n // (b * g) + 2):
        take = g if micro is None else max(0, min(g, micro - (k - 1) * g))
        dealt += sum(len(next(stream)["input_ids"]) for _ in range(take))
        assert cum(k) == dealt, k


def test_the_splits_that_go_on_from_a_step():
    """54 examples at 4 x 1: with --max-steps 13 (the first epoch's full steps) 2 x 2 and 1 x 4 go on from step 4;
    with --max-steps 20 the steps left pass the epoch's short step 14 and none does, but from step 20, the last, any
    does (nothing is left to train: a resume of that ended run at 2 x 2 was refused)."""
    import argparse
    thirteen, twenty = (argparse.Namespace(max_steps=n, epochs=3, epochs_rule="round") for n in (13, 20))
    assert resume.splits(thirteen, 54, 4, 4, 1, 1) == [(2, 2), (1, 4)]
    assert resume.splits(twenty, 54, 4, 4, 1, 1) == resume.splits(twenty, 54, 19, 4, 1, 1) == []
    assert resume.splits(twenty, 54, 20, 4, 1, 1) == [(2, 2), (1, 4)]


def test_a_resume_with_checkpointing_full_goes_on_as_the_run_would(tiny, tmp_path, monkeypatch, capsys):
    """--checkpointing none's checkpoint resumed with --checkpointing full (an out of memory's first cure): it was
    refused; recomputation gives the same values (gradients within 1e-6: tests/test_checkpointing.py), so the
    losses equal the straight run's to 1e-6."""
    more = "--checkpointing", "none", "--log-every", "1"
    train.train(train.parse_args(flags(tiny, tmp_path / "a", *more)))
    stopped(monkeypatch, tiny, tmp_path / "b", 7, *more)  # step 4
    capsys.readouterr()
    train.train(train.parse_args(flags(tiny, tmp_path / "b", "--log-every", "1", "--resume", "--checkpointing",
                                       "full")))
    assert "note: --resume with --checkpointing full --full-blocks 0, the checkpoint's run --checkpointing none " \
        "--full-blocks 0: recomputation gives the same values" in capsys.readouterr().out
    torch.testing.assert_close(losses(tmp_path / "b"), losses(tmp_path / "a"), rtol=1e-6, atol=0)


# ----------------------------------------------------------------------------------------------------
# --plan-only: the plan and the settings it settles, no weight read

def test_plan_only_prints_the_plan_and_the_run_and_reads_no_weight(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "load", None)                   # nothing past the plan runs
    train.main(["--model", tiny[0], "--data", tiny[1], "--out", str(tmp_path / "o"), "--plan-only"])
    out = capsys.readouterr().out.splitlines()
    assert out[-4].startswith("memory plan: ") and " at the peak; " in out[-4], out
    assert out[-3] == "--plan-only: no weight was read or fetched. The run, with the settings the plan settled:"
    assert out[-2].endswith(f"train.py --model {tiny[0]} --data {tiny[1]} --out {tmp_path / 'o'} --quant none "
                            "--checkpointing none"), out
    s = json.loads(out[-1])
    assert s["plan_only"] and (s["quant"], s["checkpointing"]) == ("none", "none") and s["planned_mem_mib"] > 0
    assert not os.path.exists(tmp_path / "o")                  # (claim's folder: made, empty, removed)


def test_plan_only_on_a_preset_whose_folder_holds_only_its_config(tmp_path, monkeypatch, capsys):
    """llama2-7b from a --model-dir that holds its config.json and no weights: the plan of 7B, exit 0 (nothing to
    download or read)."""
    d = llama2_7b_config(tmp_path / "llama2-7b")
    monkeypatch.setattr(plan, "available_bytes", lambda device: (64 * plan.GiB, "test"))  # (not this machine's load)
    train.main(["--model", "llama2-7b", "--model-dir", d, "--data", "alpaca", "--out", str(tmp_path / "o"),
                "--plan-only", "--dtype", "fp32"])
    out = capsys.readouterr().out.splitlines()
    assert out[1:3] == ["NF4 base with double quantization: the paper's recipe for llama2-7b",
                        "checkpointing selective: the paper's recipe (selective recomputation)"], out
    assert out[-2].endswith("--quant nf4 --checkpointing selective") and json.loads(out[-1])["planned_mem_mib"] > 4096



def test_plan_only_with_force_exits_1_where_the_run_does_not_fit(tmp_path, monkeypatch, capsys):
    """llama2-7b on 4 GiB (its plan's least, NF4 and full recomputation: 7.4 GiB alone, 7.5 and 8.2 in the full
    suite) with --plan-only --force (a command that keeps --force, checked first): it printed the command "with
    the settings the plan settled" and exited 0, as if the run fitted (--plan-only's help: "exit 0; 1 if it does not
    fit"); now the refusal, exit 1, as without --force."""
    d = llama2_7b_config(tmp_path / "llama2-7b")
    monkeypatch.setattr(plan, "available_bytes", lambda device: (4 * plan.GiB, "test"))
    argv = ["--model", "llama2-7b", "--model-dir", d, "--data", "alpaca", "--out", str(tmp_path / "o"), "--plan-only"]
    for more in [], ["--force"]:
        with pytest.raises(SystemExit, match=r"^error: the memory plan needs \d+.\d GiB and 4.0 GiB is available: "
                           "--quant nf4 --checkpointing full does not fit"):
            train.main(argv + more)
    assert "--plan-only: no weight was read" not in capsys.readouterr().out

def test_plan_only_on_the_demo(tiny, tmp_path, monkeypatch, capsys):
    """The offline demo before its model is made: refused (its pretraining would read and write weights for minutes),
    nothing pretrained; once made, its plan."""
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit, match=r"^error: --plan-only: the offline demo's model is not made yet \("):
        train.main(["--plan-only", "--out", str(tmp_path / "o")])
    assert not os.path.exists(cli.demo_model_dir())
    shutil.copytree(tiny[0], cli.demo_model_dir())            # a model in its place (the plan reads its config)
    monkeypatch.setattr(train, "load", None)
    capsys.readouterr()
    train.main(["--plan-only", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"demo model: {cli.demo_model_dir()} (pretrained by an earlier run)", out
    assert out[-2].endswith(f"train.py --out {tmp_path / 'o'} --quant none --checkpointing none"), out
    assert json.loads(out[-1])["plan_only"]
