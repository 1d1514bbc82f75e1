"""Bad input and faults, as a careful user and an attacker would try them (issue 13): one table, one row per case.
Each row builds its input, then names what must happen: an exception type (or argparse's exit code 2, or SystemExit
for train.py's one-line "error: ..."), and a fragment its message must contain (the file, the line, the flag, the
field); `None` rows must succeed and check the right result themselves (silent wrong results that are now right).
Fault rows (a kill during a save, a full disk via a small file-size limit, Ctrl-C, SIGTERM) check that the checkpoint
left behind resumes to exactly the weights of an uninterrupted run. Everything is local: downloads go to
tests/fake_hub.py on 127.0.0.1."""
import base64
import contextlib
import dataclasses
import io
import json
import math
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import zipfile
from types import SimpleNamespace

import pytest
import torch

import checkpoint
import data
import download
import eval as E
import metrics
import model as M
import plan
import resume
import tokenizer
import train
from checkpoint import load_safetensors, save_safetensors
from fake_hub import serve
from fixtures import fault_at_loss_call, flags, t5_sentencepiece, table, tiny  # noqa: F401  (tiny: a fixture)
from lorasp import EXTRAS_FILE, LoRASPLinear, adapter_base, apply_lorasp, load_adapter, save_adapter
from model import EncoderConfig, GPT2Config, LlamaConfig, T5Config, build_model, load_pretrained, save_pretrained
from quant import NF4Tensor, quantize_nf4

CASES, case = table()


class Killed(BaseException):
    """The process dying mid-save: nothing in train.py catches it, as nothing would catch a SIGKILL."""


# ----------------------------------------------------------------------------------------------------
# What the rows build on

def small_model(directory, **config):
    """A 1-layer Llama (vocab 64) in the HF layout: library-level loading rows need no tokenizer."""
    torch.manual_seed(0)
    save_pretrained(build_model(LlamaConfig(vocab_size=64, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64,
                                            **config)), directory)
    return str(directory)


def edit_json(path, **changes):
    c = json.load(open(path))
    c.update(changes)
    for k, v in changes.items():
        if v is KeyError:
            del c[k]
    json.dump(c, open(path, "w"))


def raw_safetensors(path, header, data_bytes):
    """A safetensors file with a hand-made header: the reference reader's rules are what is tested."""
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    open(path, "wb").write(struct.pack("<Q", len(head)) + head + data_bytes)
    return str(path)


def run(ctx, *more, data_file=None, out="out"):
    """train.main on the tiny fixture for 10 steps (4 x 2 sequences), returning the summary it prints last."""
    args = flags((ctx.tiny[0], data_file or ctx.tiny[1]), ctx.tmp / out, *more)
    train.main(args)
    return json.loads(ctx.capsys.readouterr().out.strip().split("\n")[-1])


def checkpointed(ctx, out="out"):
    """OUT with a checkpoint after step 2 (of 10): a copy of one made once for the module."""
    shutil.copytree(ctx.shared.checkpoint, ctx.tmp / out)
    return ctx.tmp / out


def undo(ctx):
    """Undo the row's patches (the loss hook), keeping its cache folder."""
    ctx.mp.undo()
    ctx.mp.setenv("LORASP_CACHE", str(ctx.tmp / "cache"))


def same_as_straight(ctx, out):
    """OUT's final adapter and optimizer state are exactly those of the uninterrupted run (bit for bit)."""
    final = ctx.shared.straight
    for f in ("adapter_model.safetensors", EXTRAS_FILE):
        a, b = load_safetensors(str(ctx.tmp / out / "adapter" / f)), final["adapter"][f]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    a, b = torch.load(ctx.tmp / out / "checkpoint" / "optimizer.pt", weights_only=True), final["optimizer"]
    assert a["state"].keys() == b["state"].keys() and all(
        torch.equal(a["state"][i][k], b["state"][i][k]) for i in a["state"] for k in a["state"][i])


@pytest.fixture(scope="module")
def shared(tiny, tmp_path_factory):
    """Made once: an uninterrupted 10-step run (checkpoints every 2 steps) and a run stopped with a checkpoint after
    step 2, which rows copy and damage."""
    root = tmp_path_factory.mktemp("shared")
    train.main(flags(tiny, root / "straight", "--save-every", "2"))
    straight = dict(adapter={f: load_safetensors(str(root / "straight" / "adapter" / f))
                             for f in ("adapter_model.safetensors", EXTRAS_FILE)},
                    optimizer=torch.load(root / "straight" / "checkpoint" / "optimizer.pt", weights_only=True))
    train.main(flags(tiny, root / "stopped", "--max-steps", "2"))
    return SimpleNamespace(straight=straight, checkpoint=root / "stopped")


@pytest.fixture
def ctx(tiny, shared, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
    return SimpleNamespace(tiny=tiny, shared=shared, tmp=tmp_path, mp=monkeypatch, capsys=capsys)


# ----------------------------------------------------------------------------------------------------
# 1. Nonsense numbers on the command line: refused at parse time, with the allowed range (argparse: exit code 2)

for flag, value, fragment in [
        ("--batch-size", "-1", "argument --batch-size: -1 is out of range: must be an integer >= 1"),  # hung
        ("--batch-size", "0", "argument --batch-size: 0 is out of range: must be an integer >= 1"),
        ("--rank", "0", "argument --rank: 0 is out of range: must be an integer >= 1"),
        ("--rank", "-4", "argument --rank: -4 is out of range: must be an integer >= 1"),
        ("--rank", "x", "argument --rank: 'x' is not an integer"),
        ("--seq-len", "0", "argument --seq-len: 0 is out of range: must be an integer >= 2"),
        ("--seq-len", "1", "argument --seq-len: 1 is out of range: must be an integer >= 2"),
        ("--clip", "-1", "argument --clip: -1 is out of range: must be a number >= 0"),
        ("--alpha", "0", "argument --alpha: 0 is out of range: must be a number > 0"),
        ("--grad-accum", "0", "argument --grad-accum: 0 is out of range: must be an integer >= 1"),  # blamed the lr
        ("--val-fraction", "1", "argument --val-fraction: 1 is out of range: must be a number >= 0, < 1"),
        ("--log-every", "0", "argument --log-every: 0 is out of range: must be an integer >= 1"),
        ("--max-steps", "0", "argument --max-steps: 0 is out of range: must be an integer >= 1"),  # ran 42 steps
        ("--max-steps", "-3", "argument --max-steps: -3 is out of range: must be an integer >= 1"),
        ("--keep", "0", "argument --keep: 0 is out of range: must be a number > 0, <= 1"),
        ("--keep", "1.5", "argument --keep: 1.5 is out of range: must be a number > 0, <= 1"),
        ("--lr", "nan", "argument --lr: nan is out of range: must be a number > 0"),
        ("--lr", "-0.001", "argument --lr: -0.001 is out of range: must be a number > 0"),
        ("--lr", "-1e-3", "argument --lr: -1e-3 is out of range: must be a number > 0"),  # "expected one argument"
        ("--alpha", "-inf", "argument --alpha: -inf is out of range: must be a number > 0"),
        ("--epochs", "0", "argument --epochs: 0 is out of range: must be a number > 0"),
        ("--warmup", "2", "argument --warmup: 2 is out of range: must be a number >= 0, <= 1"),
        ("--threads", "0", "argument --threads: 0 is out of range: must be an integer >= 1"),
        ("--save-every", "-1", "argument --save-every: -1 is out of range: must be an integer >= 0"),
        ("--method", "qlora", "argument --method: invalid choice: 'qlora'"),
        ("--schedule", "constant_with_warmup", "argument --schedule: invalid choice: 'constant_with_warmup' (choose "
         "from 'cosine', 'linear', 'constant')"),  # (Trainer's name for --schedule constant: the choices say ours)
        ("--seed", str(2**64), "argument --seed: 18446744073709551616 is out of range: must be an integer >= 0, <= "
         "18446744073709551615"),  # (was torch's "Overflow when unpacking long long")
        ("--seed", "-1", "argument --seed: -1 is out of range: must be an integer >= 0")]:  # (Python's random takes
    # -1 as 1: the same split and data order as --seed 1, silently; torch takes it as 2**64 - 1)
    case(f"cli {flag} {value}", 2, fragment)(
        lambda ctx, flag=flag, value=value: train.parse_args(["--model", "m", "--data", "d", flag, value]))

case("cli --weight-decay 100 --lr 0.01 (lr x weight_decay >= 1)", 2, "--weight-decay 100 with --lr 0.01: AdamW "
     "multiplies each weight by 1 - lr x weight_decay = 0 at the peak step")(  # (trained, exit 0, its val loss worse
    lambda ctx: train.parse_args(["--model", "m", "--data", "d", "--weight-decay", "100", "--lr", "0.01"]))  # than
# step 1's; --weight-decay 1000: a NaN stop that said to lower --lr)
case("cli --method full --quant nf4", 2, "NF4 weights are frozen 4-bit codes with no gradient")(
    lambda ctx: train.parse_args(["--model", "m", "--data", "d", "--method", "full", "--quant", "nf4"]))
case("cli --model without --data", 2, "give both --model and --data")(
    lambda ctx: train.parse_args(["--model", "m"]))
case("cli unknown glue task", 2, "unknown GLUE task 'glue/nope'")(
    lambda ctx: train.parse_args(["--model", "m", "--data", "glue/nope"]))


@case("cli --data glue/t.json, a records file in a folder named glue", 2, "(the file: write ./glue/t.json)")
def _(ctx):  # (was only "unknown GLUE task", with the file right there)
    (ctx.tmp / "glue").mkdir(exist_ok=True)
    (ctx.tmp / "glue" / "t.json").write_text("[]")
    cwd = os.getcwd()
    os.chdir(ctx.tmp)
    try:
        train.parse_args(["--model", "m", "--data", "glue/t.json"])
    finally:
        os.chdir(cwd)


case("cli --method lora --keep 0.3", 2, "--keep 0.3 with --method lora: LoRA trains every entry")(
    lambda ctx: train.parse_args(["--model", "m", "--data", "d", "--method", "lora", "--keep", "0.3"]))
case("cli --method lora --kee 0.3 (an abbreviation argparse takes)", 2, "--keep 0.3 with --method lora")(
    lambda ctx: train.parse_args(["--model", "m", "--data", "d", "--method", "lora", "--kee", "0.3"]))  # (ran LoRA)
case("cli --out ''", 2, "--out '' is empty: name the run's folder")(  # (loaded the model and data, then
    lambda ctx: train.parse_args(["--model", "m", "--data", "d", "--out", ""]))  # "No such file or directory: ''")
case("cli --out names a file", 2, "is a file; --out names the run's folder")(
    lambda ctx: (ctx.tmp / "f").write_text("") or train.parse_args(["--model", "m", "--data", "d", "--out",
                                                                     str(ctx.tmp / "f")]))

@case("cli --data OUT/heldout.jsonl with that --out: the run would replace the records it trains on", 2,
      "heldout.jsonl is the file this run writes the records it holds out to: it would be replaced by a share of "
      "itself; copy it out of --out")
def _(ctx):  # (trained on it, then wrote its own held-out share over it: 6 records left 3, without a word)
    (ctx.tmp / "o").mkdir()
    held = records_file(ctx, '{"instruction": "a", "output": "b"}\n', "o/heldout.jsonl")
    train.parse_args(["--model", "m", "--data", held, "--out", str(ctx.tmp / "o" / ".." / "o") + "/"])


case("cli --targets given twice (argparse keeps the last)", 2, "--targets given twice (q_proj; v_proj): only the "
     "last would be read; give them once: --targets q_proj,v_proj")(  # (adapted v_proj alone, without a word)
    lambda ctx: train.parse_args(["--model", "m", "--data", "d", "--targets", "q_proj", "--targets", "v_proj"]))
case("eval.py: --subjects given twice", 2, "--subjects given twice (anatomy; virology): only the last would be read; "
     "give them once: --subjects anatomy virology")(  # (scored virology alone, without a word)
    lambda ctx: E.main(["--task", "mmlu", "--model", ctx.tiny[0], "--subjects", "anatomy", "--subjects", "virology"]))
case("eval.py: --plot given twice", 2, "--plot given twice (a; b): only the last would be read; give them once: "
     "--plot a b")(lambda ctx: E.main(["--plot", "a", "--plot", "b"]))  # (drew b's curve alone)
case("cli --out=~/runs, a ~ the shell does not expand after '='", 2, "--out ~/runs: the shell did not expand '~' (it "
     "does not after '=' or inside quotes): write --out " + os.path.expanduser("~/runs"))(  # (trained into ./~/runs,
    lambda ctx: train.parse_args(["--model", "m", "--data", "d", "--out=~/runs"]))  # printed as "~/runs/adapter")
case("cli --out '$SCRATCH/runs', a variable the shell did not expand (single quotes)", 2, "--out $SCRATCH/runs: the "
     "shell did not expand $SCRATCH (it does not inside single quotes): write --out /scratch/me/runs (or "
     "./$SCRATCH/runs for a folder named '$SCRATCH' here)")(  # (trained into ./$SCRATCH/runs, printed as
    lambda ctx: ctx.mp.setenv("SCRATCH", "/scratch/me") or train.parse_args(  # "$SCRATCH/runs/adapter")
        ["--model", "m", "--data", "d", "--out", "$SCRATCH/runs"]))
case("export.py: --out='${SCRATCH}/merged', a variable unexpanded", 2, "--out ${SCRATCH}/merged: the shell did not "
     "expand ${SCRATCH}")(
    lambda ctx: ctx.mp.setenv("SCRATCH", "/scratch/me") or export_main(ctx, "--model", "m", "--adapter", "a",
                                                                        "--out=${SCRATCH}/merged"))


@case("export.py: --out '' (\"$OUT\" with OUT unset): refused before a file is written, the current folder kept", 2,
      "--out '' is empty: give a path")
def _(ctx):  # (loaded the model, exported into ./..tmp, hard-linked the current folder's whole tree into it, then
    os.chdir(ctx.tmp)                                                   # "[Errno 16] Device or resource busy: '.' ->
    (ctx.tmp / "keep.txt").write_text("mine")                           # '..old'"; --force tried to replace it)
    import export
    ctx.mp.setattr(export, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))
    try:
        with pytest.raises(SystemExit) as e:
            export_main(ctx, "--model", ctx.tiny[0], "--adapter", str(ctx.shared.checkpoint), "--out", "", "--force")
    finally:
        os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert sorted(os.listdir(ctx.tmp)) == ["cache", "keep.txt"] or sorted(os.listdir(ctx.tmp)) == ["keep.txt"]
    raise e.value


for argv in (["--plot", "run", "--out", ""], ["--task", "perplexity", "--model", "", "--data", "d.txt"]):
    flag = argv[2] if argv[0] == "--plot" else argv[2]
    case(f"eval.py: {' '.join(map(repr, argv))}: an empty path refused as such", 2, f"{flag} '' is empty: give a "
         "path")(lambda ctx, argv=argv: E.main(argv))  # (--plot: "could not be written:
# No such file or directory"; --model: "'' is neither a checkpoint folder ...")
case("generate.py: --model '' refused as empty", 2, "--model '' is empty: give a path")(
    lambda ctx: __import__("generate").main(argv=["--model", "", "--prompt", "a"]))


@case("cli --out './$SCRATCH/runs', or a variable that is not set: a folder of that name, as written", None)
def _(ctx):
    ctx.mp.setenv("SCRATCH", "/scratch/me")
    ctx.mp.delenv("NOT_SET_HERE", raising=False)
    for out in ("./$SCRATCH/runs", "$NOT_SET_HERE/runs", "runs/$SCRATCH"):
        assert train.parse_args(["--model", "m", "--data", "d", "--out", out]).out == out


case("eval.py: a quoted '~/...' --adapter", 2, "--adapter ~/a: the shell did not expand '~'")(
    lambda ctx: E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1], "--adapter", "~/a"]))

case("eval.py: an --adapter folder that does not exist", SystemExit, "--adapter nowhere: no such folder")(  # (was
    lambda ctx: E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1], "--adapter",  # "no
                        "nowhere"]))  # adapter_config.json; not an adapter folder")


@case("eval.py: --task generate without --adapter has no adapted answers in its JSON", None)
def _(ctx):  # (each read "adapted": "", as if an adapter had answered with nothing)
    (ctx.tmp / "p.txt").write_text("Say hi\n")
    E.main(["--task", "generate", "--model", ctx.tiny[0], "--prompts", str(ctx.tmp / "p.txt"), "--max-new-tokens", "2"])
    answers = json.loads(ctx.capsys.readouterr().out.strip().splitlines()[-1])["answers"]
    assert len(answers) == 1 and list(answers[0]) == ["base"]


@case("eval.py: --task generate past GPT-2's positions: refused before the model loads; past a Llama's context: noted",
      None)
def _(ctx):  # (GPT-2: the forward's "past the 32 positions", naming no flag, after the answers before it; a Llama:
    d = ctx.tmp / "gpt2"                                       # no word, where generate.py and transformers warn)
    save_pretrained(build_model(GPT2Config(vocab_size=10, n_positions=64, n_layer=1, n_embd=8, n_head=2)), d)
    (d / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate("abcdefghij")}))
    (d / "merges.txt").write_text("#version: 0.2\n")
    (ctx.tmp / "p.txt").write_text("ab\nabcdefghij\n")
    T = len(tokenizer.load_tokenizer(str(d)).encode(data.alpaca_prompt(dict(instruction="abcdefghij", input=""))))
    command = ["--task", "generate", "--model", str(d), "--prompts", str(ctx.tmp / "p.txt"), "--max-new-tokens"]
    E.main(command + [str(65 - T)])                            # T + (65 - T) - 1 = 64 positions: generated
    assert len(json.loads(ctx.capsys.readouterr().out.strip().splitlines()[-1])["answers"]) == 2
    with ctx.mp.context() as mp, pytest.raises(SystemExit) as e:
        mp.setattr(E, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))
        E.main(command + [str(66 - T)])
    assert e.value.code == f"error: --max-new-tokens {66 - T}: the longest prompt's {T} tokens ({ctx.tmp / 'p.txt'}, " \
        f"prompt 2) and {66 - T} new ones pass the 64 positions of {d}; at most {65 - T} new tokens fit"
    llama = shutil.copytree(ctx.tiny[0], ctx.tmp / "llama")
    edit_json(llama / "config.json", max_position_embeddings=16)  # (its prompts: more tokens than that)
    E.main(["--task", "generate", "--model", str(llama), "--prompts", str(ctx.tmp / "p.txt"), "--max-new-tokens", "2"])
    assert f"new ones pass {llama}'s context (16 positions): RoPE runs on" in ctx.capsys.readouterr().err


@case("train.py: the offline demo while another one is making its model", data.UserError, "the offline demo's model is "
      "being pretrained by another train.py (in ")
def _(ctx):  # (was: both rebuilt the pretraining folder, the second deleting the first's; the first died renaming)
    import fcntl
    import cli
    lock = cli.demo_model_dir() + ".lock"
    os.makedirs(os.path.dirname(lock))
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)                         # the first, making the model
    try:
        cli.prepare_demo(train.parse_args([]), lambda args: pytest.fail("a second pretraining started"))
    finally:
        os.close(fd)
        assert os.listdir(os.path.dirname(lock)) == [os.path.basename(lock)]  # nothing of the second's


@case("train.py: the offline demo with a LORASP_CACHE that cannot be written", SystemExit, "the offline demo keeps its "
      "model and task in ")
def _(ctx):  # (was "error: [Errno 20] Not a directory: '.../f/data'", naming neither the variable nor what to do)
    (ctx.tmp / "f").write_text("")
    ctx.mp.setenv("LORASP_CACHE", str(ctx.tmp / "f"))
    try:
        train.main([])
    except SystemExit as e:
        assert f"{ctx.tmp / 'f'} ($LORASP_CACHE; default $XDG_CACHE_HOME/lorasp, else ~/.cache/lorasp), which cannot " \
            "be written (Not a directory" in e.code and "set LORASP_CACHE to a folder you can write" in e.code, e.code
        raise


@case('LORASP_CACHE="~/c" (quoted: the shell left the ~) is c in the home folder, as the shell would say', None)
def _(ctx):  # (was a folder named ~ in the current one: ./~/c/models/...)
    ctx.mp.setenv("HOME", str(ctx.tmp / "home"))
    ctx.mp.setenv("LORASP_CACHE", "~/c")
    assert data.cache_dir("models", "gpt2") == str(ctx.tmp / "home" / "c" / "models" / "gpt2")


@case("XDG_CACHE_HOME set (LORASP_CACHE not): the cache is $XDG_CACHE_HOME/lorasp, as pip's and huggingface_hub's "
      "are; a relative XDG_CACHE_HOME is ignored, as the XDG spec says", None)
def _(ctx):  # (was ~/.cache/lorasp whatever XDG_CACHE_HOME said)
    ctx.mp.delenv("LORASP_CACHE", raising=False)
    ctx.mp.setenv("HOME", str(ctx.tmp / "home"))
    for xdg, root in [(str(ctx.tmp / "xdg"), ctx.tmp / "xdg" / "lorasp"), ("rel/x", ctx.tmp / "home" / ".cache" /
                      "lorasp"), ("", ctx.tmp / "home" / ".cache" / "lorasp")]:
        ctx.mp.setenv("XDG_CACHE_HOME", xdg)
        assert data.cache_dir("models", "gpt2") == str(root / "models" / "gpt2"), xdg
    assert ctx.capsys.readouterr().err == ""                   # (no old cache to keep: nothing said)


@case("XDG_CACHE_HOME set where ~/.cache/lorasp already holds a cache and $XDG_CACHE_HOME/lorasp is not there: the "
      "old cache is kept (its weights not fetched again), said once a process with the command that moves it", None)
def _(ctx):
    ctx.mp.delenv("LORASP_CACHE", raising=False)
    ctx.mp.setattr(download, "_kept_said", set())
    ctx.mp.setenv("HOME", str(ctx.tmp / "home"))
    ctx.mp.setenv("XDG_CACHE_HOME", str(ctx.tmp / "xdg"))
    old = ctx.tmp / "home" / ".cache" / "lorasp"
    (old / "models" / "gpt2").mkdir(parents=True)
    assert [data.cache_dir("models"), data.cache_dir("data")] == [str(old / "models"), str(old / "data")]
    new = ctx.tmp / "xdg" / "lorasp"
    assert ctx.capsys.readouterr().err == (f"note: lorasp's cache stays {old}, which holds its files: $XDG_CACHE_HOME/"
                                           f"lorasp ({new}) is not there (`mkdir -p {new.parent} && mv {old} {new}` "
                                           "moves it; or set LORASP_CACHE)\n")
    os.makedirs(new.parent)
    os.replace(old, new)                                       # (the move it says)
    assert data.cache_dir("models") == str(new / "models")
    ctx.mp.setenv("XDG_CACHE_HOME", str(ctx.tmp / "home" / ".cache"))  # (the same folder as the old: nothing said)
    old.mkdir()
    (old / "x").write_text("")
    assert data.cache_dir() == str(old) and ctx.capsys.readouterr().err == ""


def unwritable_cache(ctx, fetch):
    """fetch() with $LORASP_CACHE a file: the error must name the variable (was "[Errno 20] Not a directory: ...")."""
    (ctx.tmp / "f").write_text("")
    ctx.mp.setenv("LORASP_CACHE", str(ctx.tmp / "f"))
    try:
        fetch()
    except data.UserError as e:
        assert f"is in {ctx.tmp / 'f'} ($LORASP_CACHE; default $XDG_CACHE_HOME/lorasp, else ~/.cache/lorasp), which " \
            "cannot be written (Not a directory" in str(e) and str(e).endswith("set LORASP_CACHE to a folder you can " \
                                                                              "write"), str(e)
        raise


case("MMLU's fetch into a LORASP_CACHE that cannot be written", data.UserError, "$LORASP_CACHE")(
    lambda ctx: unwritable_cache(ctx, data.mmlu_dir))  # (was "download failed ([Errno 20] Not a directory: ...)")


@case("a preset's --download into a LORASP_CACHE that cannot be written", data.UserError, "$LORASP_CACHE")
def _(ctx):  # (was a NotADirectoryError traceback, once the Hub had listed the files)
    with serve("x/y", {"config.json": b"{}", "model.safetensors": b"0" * 8}) as (url, _):
        unwritable_cache(ctx, lambda: data.download_hf("x/y", data.cache_dir("models", "y"), endpoint=url))


@case("the Hub lists files named ..\\x or sub\\x: never fetched (Windows reads \\ as a folder)", None)
def _(ctx):  # (was fetched under that name: on Windows, outside the model's folder)
    files = {"config.json": b"{}", "model.safetensors": b"0" * 8, "..\\..\\x.safetensors": b"1" * 8,
             "sub\\y.safetensors": b"2" * 8, ".hidden.json": b"{}"}
    with serve("x/y", files) as (url, log):
        data.download_hf("x/y", str(ctx.tmp / "d"), endpoint=url)
    assert sorted(os.listdir(ctx.tmp / "d")) == ["config.json", "model.safetensors"]
    assert not [p for _, p, *_ in log if "%5C" in p or "hidden" in p], log


case("--data demo's task file into a LORASP_CACHE that cannot be written", data.UserError, "$LORASP_CACHE")(
    lambda ctx: unwritable_cache(ctx, data.demo_task))  # (was "error: [Errno 13] Permission denied: '/nonexistent'",
# HOME unset: nobody's home, naming neither the variable nor what to do)
case("GLUE's fetch into a LORASP_CACHE that cannot be written", data.UserError, "$LORASP_CACHE")(
    lambda ctx: unwritable_cache(ctx, lambda: data.download_glue("sst2", data.cache_dir("glue"))))  # (was "[Errno 20]
# Not a directory", no variable named)


@case("cli --rank 8 without --alpha: the scale alpha/r = 4 said, and the --alpha that gives 2r", None)
def _(ctx):  # (was silent: alpha stays 32, 2r at r 16 only, so r 8 scaled its update twice as much as 2r would)
    train.parse_args(["--model", "m", "--data", "d", "--rank", "8"])
    assert ctx.capsys.readouterr().out.splitlines() == [
        "note: --rank 8 keeps --alpha 32 (2r at the default r): the update is scaled by alpha/r = 4; give --alpha 16 "
        "for 2r"]
    for argv in (["--rank", "8", "--alpha", "32"], ["--rank", "16"], ["--rank", "8", "--method", "full"]):
        train.parse_args(["--model", "m", "--data", "d", *argv])
        assert "alpha/r" not in ctx.capsys.readouterr().out, argv


@case("cli a flag given twice, or --threads past the CPUs, says which value is used", None)
def _(ctx):  # (the earlier --lr was dropped without a word, and 64 threads on 2 CPUs ran slower without one)
    train.parse_args(["--model", "m", "--data", "d", "--lr", "1e-4", "--rank", "16", "--lr=2e-4", "--rank", "16",
                      "--threads", "100000"])
    cpus, where = plan.usable_cpus()                           # (a container's CPU quota, where it has one)
    assert ctx.capsys.readouterr().out.splitlines() == [
        "note: a flag given twice keeps its last value: --lr 0.0002 (not 0.0001)",  # (--rank: the same value twice)
        f"note: --threads 100000 is more than the {cpus} CPU{'s' * (cpus != 1)} this process may use" +
        f" ({where})" * (where != "its affinity") + ": the extra threads wait on each other (slower, nothing gained)"]

case("cli --out under a file", 2, "task.json is a file, so no folder can be made under it")(  # (was "[Errno 20] Not
    lambda ctx: train.parse_args(["--model", "m", "--data", "d", "--out", os.path.join(ctx.tiny[1], "run")]))  # a
# directory" once the data was read)

@contextlib.contextmanager
def nothing_writes(size=0):
    """A file-size limit of `size` bytes, 0 by default (SIGXFSZ ignored: EFBIG instead of a kill): a file can be made,
    not one byte (or not past `size`) written in it, whoever runs the test (chmod does not stop root; a read-only mount
    needs privileges to make)."""
    limit, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)


@case("train.py: --out a folder where no file can be written (EFBIG), refused before the model loads", 2,
      "no file can be written in ")
def _(ctx):  # (was "error: [Errno 27] File too large" once the model had loaded; a read-only --out: "[Errno 13]
    os.makedirs(out := ctx.tmp / "out")  # Permission denied: 'OUT/heldout.jsonl.tmp<pid>'", or metrics.jsonl)
    ctx.mp.setattr(train, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))
    with nothing_writes(), pytest.raises(SystemExit) as e:
        train.main(flags(ctx.tiny, out))
    err = ctx.capsys.readouterr().err
    assert f"error: --out {out}: no file can be written in {out}: File too large (EFBIG); give a folder you can " \
        "write" in err, err
    assert os.listdir(out) == []                                       # the probe removed
    sys.stderr.write(err)
    raise e.value


@case("train.py: --out not made yet, under a folder where no file can be written: that folder named, nothing made", 2,
      "would be made): File too large (EFBIG)")
def _(ctx):  # (was "error: [Errno 27] File too large", its folders made, once the model had loaded)
    ctx.mp.setattr(train, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))
    before = sorted(os.listdir(ctx.tmp))
    with nothing_writes(), pytest.raises(SystemExit) as e:
        train.main(flags(ctx.tiny, ctx.tmp / "runs" / "a"))
    err = ctx.capsys.readouterr().err
    assert f"--out {ctx.tmp / 'runs' / 'a'}: no file can be written in {ctx.tmp} (where {ctx.tmp / 'runs' / 'a'} " \
        "would be made)" in err, err
    assert sorted(os.listdir(ctx.tmp)) == before                        # no runs/, no probe left
    sys.stderr.write(err)
    raise e.value


@case("export.py: --out beside which no file can be written (EFBIG), refused before --model loads", 2,
      "no file can be written in ")
def _(ctx):  # (was "error: [Errno 27] File too large: writing OUT ..." once the base had loaded and spilled)
    import export
    ctx.mp.setattr(export, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))
    with nothing_writes(), pytest.raises(SystemExit) as e:
        export.main(["--model", ctx.tiny[0], "--adapter", str(ctx.shared.checkpoint), "--out", str(ctx.tmp / "m")])
    err = ctx.capsys.readouterr().err
    assert f"--out {ctx.tmp / 'm'}: no file can be written in {ctx.tmp}: File too large (EFBIG)" in err, err
    assert set(os.listdir(ctx.tmp)) <= {"cache"}                        # no m, m.lock, spill or probe
    sys.stderr.write(err)
    raise e.value


@case("eval.py --plot: --out where no file can be written (EFBIG): refused, the SVG there kept", 2,
      "no file can be written in ")
def _(ctx):  # (was "error: [Errno 27] File too large", the earlier loss.svg cut to 0 bytes)
    (svg := ctx.tmp / "loss.svg").write_text("<svg>the earlier plot</svg>\n")
    with nothing_writes(), pytest.raises(SystemExit) as e:
        E.main(["--plot", str(ctx.shared.checkpoint), "--out", str(svg)])
    err = ctx.capsys.readouterr().err
    assert f"--out {svg}: no file can be written in {ctx.tmp}: File too large (EFBIG)" in err, err
    assert svg.read_text() == "<svg>the earlier plot</svg>\n"
    sys.stderr.write(err)
    raise e.value


@case("eval.py --plot: the disk fills while the SVG is written (the probe's byte fits): the SVG there kept", SystemExit,
      "loss.svg: the SVG (")
def _(ctx):  # (was the earlier loss.svg cut to its first 100 bytes of the new plot: the SVG was written in place)
    (svg := ctx.tmp / "loss.svg").write_text("<svg>the earlier plot</svg>\n")
    with nothing_writes(100), pytest.raises(SystemExit) as e:
        E.main(["--plot", str(ctx.shared.checkpoint), "--out", str(svg)])
    assert svg.read_text() == "<svg>the earlier plot</svg>\n" and os.listdir(ctx.tmp) == ["loss.svg"]
    assert "could not be written: File too large (EFBIG); the file there is as it was" in e.value.code, e.value.code
    raise e.value


def predictions_into(ctx, where, *more, task=("--task", "perplexity")):
    """eval.py with --predictions `where` (a path under ctx.tmp), refused before the model loads (and before the
    data is read: the refusal is at parse time)."""
    ctx.mp.setattr(E, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))
    E.main([*task, "--model", ctx.tiny[0], "--data", ctx.tiny[1], *more, "--predictions", str(ctx.tmp / where)])


case("eval.py --predictions in a folder that is not there: refused before the model loads", 2,
     "/no/such/p.jsonl: no folder ")(  # (unchecked: the scores, then "No such file or directory", hours later)
    lambda ctx: predictions_into(ctx, "no/such/p.jsonl"))
case("eval.py --predictions a folder: refused before the model loads", 2, "is a folder: give a file's name (in it: ")(
    lambda ctx: predictions_into(ctx, "."))
case("eval.py --predictions the --data file it scores (heldout.jsonl): refused, the records kept", 2,
     "/heldout.jsonl is the file perplexity reads (--data: ")(
    lambda ctx: E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", held := records_file(ctx, "".join(
        json.dumps(r) + "\n" for r in json.load(open(ctx.tiny[1]))[:4]), "heldout.jsonl"), "--predictions", held]))
# (unchecked: the records scored, then the file replaced by their rows)
case("eval.py --predictions inside --model's folder: refused (a file there is read, or replaced, as its own)", 2,
     "is inside --model ")(
    lambda ctx: E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1], "--predictions",
                        os.path.join(ctx.tiny[0], "config.jsonl")]))
case("eval.py --predictions with --plot: refused (it draws loss curves; no example, no file)", 2,
     "--predictions p.jsonl: --plot draws loss curves and evaluates no example")(
    lambda ctx: E.main(["--plot", "run", "--predictions", "p.jsonl"]))  # (as other flags: "has no effect", a note)
case("eval.py --predictions FILE.txt for a task with no text form (mmlu): refused, the forms named", 2,
     "--task mmlu writes .jsonl (JSON Lines, a line per example), not .txt (.txt is --task wmt16-en-ro's: the "
     "hypotheses, a line each: sacreBLEU's input)")(
    lambda ctx: predictions_into(ctx, "out.txt", task=("--task", "mmlu")))


@case("eval.py --predictions where no file can be written (EFBIG): refused before the model loads", 2,
      "no file can be written in ")
def _(ctx):  # (unchecked: the scores printed, then "could not be written: File too large", after the whole run)
    with nothing_writes():
        predictions_into(ctx, "p.jsonl")


@case("eval.py --predictions: the disk fills while the file is written: named, the earlier file there kept", SystemExit,
      "p.jsonl (")
def _(ctx):
    (p := ctx.tmp / "p.jsonl").write_text("the earlier run's\n")
    with nothing_writes(100), pytest.raises(SystemExit) as e:
        E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1], "--seq-len", "16",
                "--predictions", str(p)])
    assert p.read_text() == "the earlier run's\n" and sorted(os.listdir(ctx.tmp)) in (["cache", "p.jsonl"], [
        "p.jsonl"]), os.listdir(ctx.tmp)                                # (no temporary left)
    assert "could not be written: File too large (EFBIG); the file there is as it was (the scores: the JSON line " \
        "above)" in e.value.code, e.value.code
    assert json.loads(ctx.capsys.readouterr().out.strip().splitlines()[-1])["task"] == "perplexity"
    raise e.value


for device, fragment in [("cuda:99", "--device cuda:99: torch sees"),  # no machine has it: a GPU's too
                         ("gpu", "--device gpu: lorasp runs on cpu or cuda")]:  # (were tracebacks from torch, after
    case(f"train.py: --device {device}", SystemExit, fragment)(                 # the memory plan; eval.py, model.py:
        lambda ctx, device=device: train.main(["--model", "m", "--data", "d", "--device", device]))  # on load)
    case(f"eval.py: --device {device}", 2, fragment)(
        lambda ctx, device=device: E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1],
                                           "--device", device]))
    case(f"model.py: --device {device}", 2, fragment)(
        lambda ctx, device=device: ctx.mp.setattr(sys, "argv", ["model.py", "--model", ctx.tiny[0], "--device",
                                                                device]) or M.main())



def generate_command(ctx, *argv):
    """model.py's command line (python model.py ARGV)."""
    ctx.mp.setattr(sys, "argv", ["model.py", *argv])
    M.main()


for flag, value, fragment in [("--temperature", "-1", "--temperature: -1.0 is out of range: must be a number >= 0"),
                              ("--top-p", "1.5", "--top-p: 1.5 is out of range: must be a number >= 0, <= 1"),
                              ("--max-new-tokens", "-2", "--max-new-tokens: -2 is out of range")]:
    case(f"model.py: {flag} {value}", 2, fragment)(  # (were greedy decoding, silently; --max-new-tokens -2: none)
        lambda ctx, flag=flag, value=value: generate_command(ctx, "--model", ctx.tiny[0], flag, value))


@case("model.py: --top-p and --seed with greedy decoding (--temperature 0) say they do nothing", None)
def _(ctx):  # (greedy decoding, the same text whatever they were, without a word)
    generate_command(ctx, "--model", ctx.tiny[0], "--max-new-tokens", "2", "--top-p", "0.5", "--seed", "3")
    assert "note: --top-p, --seed have no effect with --temperature 0 (greedy decoding)" in ctx.capsys.readouterr().err
    generate_command(ctx, "--model", ctx.tiny[0], "--max-new-tokens", "2", "--top-p", "0.5", "--temperature", "0.7")
    assert "note:" not in ctx.capsys.readouterr().err


@case("model.py: --temperature and --seed with --top-p 0 (the top token: greedy) say they do nothing", None)
def _(ctx):  # (--seed 3 and --seed 4 gave the same text, whatever --temperature, without a word)
    texts = []
    for seed in ("3", "4"):
        generate_command(ctx, "--model", ctx.tiny[0], "--max-new-tokens", "3", "--temperature", "5", "--top-p", "0",
                         "--seed", seed)
        out = ctx.capsys.readouterr()
        texts.append(out.out)
        assert "note: --temperature, --seed have no effect with --top-p 0 (the top token: greedy decoding)" in out.err
    generate_command(ctx, "--model", ctx.tiny[0], "--max-new-tokens", "3")
    assert texts == [ctx.capsys.readouterr().out] * 2                      # the greedy text, the note's reason


case("model.py: --seed past torch's 64 bits", 2, "--seed: 99999999999999999999 is out of range: must be an integer "
     ">= 0, <= 18446744073709551615")(  # (was a traceback: "Overflow when unpacking long long")
    lambda ctx: generate_command(ctx, "--model", ctx.tiny[0], "--temperature", "1", "--seed", "9" * 20))
case("model.py: --prompt whose bytes are not UTF-8 ($(printf 'Caf\\xe9'))", 2, "--prompt is not UTF-8 text (byte e9 "
     "at offset 3)")(  # (was a RuntimeError traceback from sentencepiece's encode)
    lambda ctx: generate_command(ctx, "--model", ctx.tiny[0], "--prompt", "Caf\udce9"))  # (as Python decodes argv)
case("model.py: --model=~/m, the ~ unexpanded", 2, "--model ~/m: the shell did not expand '~'")(
    lambda ctx: generate_command(ctx, "--model=~/m"))


@case("model.py: a UTF-8 --prompt under a C locale (PYTHONUTF8=0 LC_ALL=C) continues the same text, in UTF-8", None)
def _(ctx):  # (Python decodes argv's bytes as ASCII, each non-ASCII byte a surrogate: was a sentencepiece traceback;
    texts = []  # then the text's print to an ASCII stdout was a UnicodeEncodeError traceback)
    for env in ({}, {"PYTHONUTF8": "0", "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0"}):
        p = subprocess.run([sys.executable, "model.py", "--model", ctx.tiny[0], "--prompt", "caf\u00e9 au lait",
                            "--max-new-tokens", "4", "--device", "cpu"], env={**os.environ, **env}, capture_output=True,
                           cwd=os.path.dirname(M.__file__), timeout=300)
        assert p.returncode == 0 and b"Traceback" not in p.stderr, p.stderr.decode(errors="replace")
        texts.append(p.stdout.decode("utf-8"))
    assert texts[0] == texts[1] and "au lait" in texts[0], texts


@case("model.py without --model: the demo reads --max-new-tokens, --temperature, --top-p, --seed; notes the rest", None)
def _(ctx):  # (python model.py --max-new-tokens 3 printed 12 tokens: every generation flag was silently ignored)
    def shown(*argv):
        generate_command(ctx, *argv)
        out = ctx.capsys.readouterr()
        line = next(x for x in out.out.splitlines() if "continuation of" in x)
        return line.split(":")[0], json.loads(line.rpartition(": ")[2]), out.err
    how, greedy, err = shown("--max-new-tokens", "3", "--prompt", "Hi", "--dtype", "float16")
    assert how.startswith("greedy") and len(greedy) == 3, (how, greedy)
    assert "note: --prompt, --dtype have no effect without --model" in err
    assert len(shown()[1]) == 12                                              # the demo's own length, as before
    a, b, c = (shown("--max-new-tokens", "40", "--temperature", "5", "--top-p", "0.9", "--seed", s) for s in "778")
    assert a[0].startswith("sampled") and a[1] == b[1] != c[1] and len(a[1]) == 40 and a[1][:3] != greedy
    with pytest.raises(SystemExit):
        generate_command(ctx, "--seed", "-1")


@case("model.py: --max-new-tokens past GPT-2's positions", SystemExit, "the prompt's 2 tokens and 9 new ones pass the "
      "8 positions of")
def _(ctx):  # (was a traceback from GPT-2's forward: "GPT-2 has 8 positions; asked for more")
    d = ctx.tmp / "gpt2"
    save_pretrained(build_model(GPT2Config(vocab_size=10, n_positions=8, n_layer=1, n_embd=8, n_head=2)), d)
    (d / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate("abcdefghij")}))
    (d / "merges.txt").write_text("#version: 0.2\n")
    generate_command(ctx, "--model", str(d), "--prompt", "ab", "--max-new-tokens", "7")  # 2 + 7 - 1 = 8 positions
    assert len(ctx.capsys.readouterr().out.strip()) == 9  # the prompt and 7 new tokens, one letter each
    generate_command(ctx, "--model", str(d), "--prompt", "ab", "--max-new-tokens", "9")


@case("generate.py: generation_config.json's eos_token_id a token's text, not its id", SystemExit,
      "generation_config.json: eos_token_id [2, '</s>'] is not a token id or a list of them")
def _(ctx):  # (was a TypeError traceback from torch.tensor in generate: "new(): invalid data type 'str'")
    d = shutil.copytree(ctx.tiny[0], ctx.tmp / "named_eos")
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, "</s>"]}))
    generate_command(ctx, "--model", str(d), "--max-new-tokens", "2")


for field, value in [("eos_token_id", "</s>"), ("bos_token_id", "1"), ("pad_token_id", {})]:
    case(f"config.json: {field} {value!r}, not a token id (train.py, eval.py, generate.py)", SystemExit,
         f"config.json: {field} {value!r} is not a token id or a list of them")(  # (was a TypeError traceback:
        lambda ctx, field=field, value=value: (                                # "'<' not supported between ...")
            edit_json(shutil.copytree(ctx.tiny[0], ctx.tmp / "ids") / "config.json", **{field: value}),
            generate_command(ctx, "--model", str(ctx.tmp / "ids"), "--max-new-tokens", "2")))


case("train.py: --exact-match with a --val-fraction that holds no record out", SystemExit, "--exact-match 5 asks "
     "held-out records, and --val-fraction 0.001 holds none of")(  # (trained, then skipped the check without a word)
    lambda ctx: run(ctx, "--val-fraction", "0.001", "--exact-match", "5"))
@case("train.py: a --val-fraction that holds nothing out says there is no validation", None)
def _(ctx):  # (trained without a validation loss, without a word: --eval-every 5 evaluated nothing)
    train.main(flags(ctx.tiny, ctx.tmp / "out", "--val-fraction", "0.001", "--eval-every", "5"))
    out = ctx.capsys.readouterr().out
    assert f"note: --val-fraction 0.001 holds nothing of {ctx.tiny[1]} out (it rounds to 0): no validation loss" in out
    assert json.loads(out.strip().splitlines()[-1])["val_loss"] is None


case("train.py: --rank above a targeted layer's width", SystemExit, "--rank 17: model.layers.0.self_attn.k_proj is "
     "16 x 32 (out x in), width 16")(lambda ctx: run(ctx, "--rank", "17"))  # (was accepted: r 17 of a rank-16 product)
case("train.py: --keep too small to train an entry of A", SystemExit, "--keep 0.001 trains no entry of "
     "model.layers.0.self_attn.q_proj's A (round(0.001 x 32) entries = 0): give --keep 0.0312 or more")(
    lambda ctx: run(ctx, "--rank", "1", "--keep", "0.001"))  # (was "keep=0.001 leaves A (1, 32) without ...": no flag)


@case("train.py: --resume of a --method full checkpoint grouped before the no-decay fix", SystemExit, "groups the "
      "trained tensors 17 with weight decay, 4 without; this version groups them 16 and 5: it was saved before T5's "
      "relative_attention_bias moved to the no-decay group")
def _(ctx):  # (was "optimizer.pt is damaged (ValueError: loaded state dict contains a parameter group that doesn't
    run(ctx, "--method", "full", "--max-steps", "2")  # match the size of optimizer's group)"; here one norm moves
    path = ctx.tmp / "out" / "checkpoint" / "optimizer.pt"  # back, as T5's bias was grouped before
    state = torch.load(path, weights_only=True)
    decay, no_decay = (g["params"] for g in state["param_groups"])
    decay.append(no_decay.pop())
    torch.save(state, path)
    edit_json(path.parent / "state.json", crc32=KeyError)     # (and before state.json kept its files' crc32s)
    try:
        run(ctx, "--method", "full", "--max-steps", "2", "--resume")
    except SystemExit as e:
        assert f"--model {ctx.tmp / 'out' / 'checkpoint' / 'model'} (a new schedule)" in e.code
        raise


@case("train.py: --clip 0 turns clipping off (transformers' max_grad_norm 0)", None)
def _(ctx):  # (was refused: "argument --clip: 0 is out of range: must be a number > 0")
    limits, clip = [], torch.nn.utils.clip_grad_norm_
    ctx.mp.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm: limits.append(max_norm) or clip(
        params, max_norm))
    run(ctx, "--clip", "0", "--max-steps", "2")
    assert limits == [float("inf")] * 2                        # the norm measured (the NaN check), nothing scaled


case("train.py: --model PRESET with a --model-dir of another architecture", SystemExit, "holds a llama of 2 layers, "
     "width 32, not gpt2-medium (a gpt2 of 24 layers, width 1024)")(  # (trained the tiny Llama, its first line and
    lambda ctx: train.main(flags(("gpt2-medium", ctx.tiny[1]), ctx.tmp / "out", "--model-dir", ctx.tiny[0])))  # adapter
# config saying gpt2-medium)

@case("train.py: total_params under --mode freeze counts the frozen entries forward uses", None)
def _(ctx):  # (was 39,584 = the base + the trainable entries: the frozen half of A and B, nonzero, left out)
    base = load_safetensors(os.path.join(ctx.tiny[0], "model.safetensors"))
    lora = sum(16 * sum(t.shape) for k, t in base.items() if k.endswith("_proj.weight"))  # r (out + in), 7 projections
    s = run(ctx, "--mode", "freeze", "--max-steps", "1")
    assert s["total_params"] == sum(t.numel() for t in base.values()) + lora == 64160
    assert s["trainable_params"] == lora / 2
    s = run(ctx, "--max-steps", "1", out="mask")               # mask mode: the frozen entries are zeros, not held
    assert s["total_params"] == sum(t.numel() for t in base.values()) + lora / 2

@case("cli --model-dir and --download beside a --model that is not a preset say they do nothing", None)
def _(ctx):  # (were unused without a word: the directory --model names is read, nothing is fetched)
    train.parse_args(["--model", ctx.tiny[0], "--data", "d", "--model-dir", "elsewhere", "--download"])
    train.parse_args(["--model", "m.gguf", "--data", "d", "--model-dir=elsewhere", "--no-download"])
    train.parse_args(["--download"])
    train.parse_args(["--model", "llama2-7b", "--data", "d", "--model-dir", "elsewhere", "--download"])  # a preset
    assert ctx.capsys.readouterr().out.splitlines() == [
        f"note: --model-dir and --download have no effect: --model {ctx.tiny[0]} is not a preset, its files are read "
        "where they are (for a preset's weights)",
        "note: --model-dir has no effect: --model m.gguf is not a preset, its files are read where they are (for a "
        "preset's weights)",
        "note: --download has no effect: the offline demo makes its own model (for a preset's weights)"]


@case("eval.py: squad's window flags on a causal LM say so", None)
def _(ctx):  # (--seq-len, --stride, --batch-size were unused without a word: a causal LM generates its answers)
    (ctx.tmp / "dev-v1.1.json").write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [{
        "context": "one two three", "qas": [{"id": "q1", "question": "Which?", "answers": [
            {"text": "two", "answer_start": 4}]}]}]}]}))
    E.main(["--task", "squad", "--model", ctx.tiny[0], "--data-dir", str(ctx.tmp), "--seq-len", "64", "--stride", "8",
            "--batch-size", "4"])
    out = ctx.capsys.readouterr().out.splitlines()
    assert out[0] == f"note: --seq-len, --stride, --batch-size have no effect: {ctx.tiny[0]} is a causal LM, which " \
        "answers each question by greedy generation from its context (cut to fit), one at a time"
    assert json.loads(out[-1])["task"] == "squad"


def short_context_squad(ctx, positions):
    """The tiny Llama with `positions` of context (its Alpaca prompt of a one-word question: 141 tokens before the
    context), and a SQuAD dev file of one question whose context is 109 tokens."""
    shutil.copytree(ctx.tiny[0], ctx.tmp / "short")
    edit_json(ctx.tmp / "short" / "config.json", max_position_embeddings=positions)
    qa = {"id": "q1", "question": "Which?", "answers": [{"text": "two", "answer_start": 4}]}
    (ctx.tmp / "dev-v1.1.json").write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [{
        "context": "one two three four five six seven eight nine ten " * 3, "qas": [qa]}]}]}))
    return ["--task", "squad", "--model", str(ctx.tmp / "short"), "--data-dir", str(ctx.tmp)]


case("eval.py: --task squad on a causal LM whose context, beside the prompt and the answer, holds no word of the "
     "question's context", SystemExit, "squad question 'q1': Alpaca's template and the question take 141 tokens, and "
     "the model's context of 160 leaves 128 beside a 32-token answer: no token of its context fits; a causal LM of a "
     "longer context answers it")(  # (was asked with no context at all, past the model's context, exit 0;
    lambda ctx: E.main(short_context_squad(ctx, 160)))  # a GPT-2's: "116 tokens: past the 64 positions", no flag)


@case("eval.py: --task squad on a causal LM: contexts cut to fit its context are counted", None)
def _(ctx):  # (were cut to their first tokens without a word: an answer in the rest could not be given)
    E.main(short_context_squad(ctx, 223))
    out = ctx.capsys.readouterr().out.splitlines()
    assert "squad: 1 of 1 contexts cut to their first tokens, to fit the model's context of 223 with a 32-token " \
        "answer: an answer in what was cut cannot be given" in out, out
    assert json.loads(out[-1])["task"] == "squad"


case("eval.py: perplexity --stride past --seq-len", SystemExit, "--stride 40 with --seq-len 32: windows further apart "
     "than they are long leave the tokens between them unscored; give --stride 32 or less")(  # (named neither flag:
    lambda ctx: E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1], "--seq-len",  # "need 0
                        "32", "--stride", "40"]))  # < stride <= seq_len, got stride 40, seq_len 32")


@case("train.py: --seq-len past a Llama's context says so", None)
def _(ctx):  # (was silent; eval.py warned of the same for perplexity and MMLU)
    shutil.copytree(ctx.tiny[0], ctx.tmp / "m")
    edit_json(ctx.tmp / "m" / "config.json", max_position_embeddings=128)
    train.main(flags((str(ctx.tmp / "m"), ctx.tiny[1]), ctx.tmp / "out", "--max-steps", "1"))  # --seq-len 200
    assert f"note: --seq-len 200 is past {ctx.tmp / 'm'}'s context (128 tokens): a sequence that long trains on " \
        "positions the model never saw" in ctx.capsys.readouterr().out


case("train.py: --model names a weight file", SystemExit, "model.safetensors is a file: pass its checkpoint's folder")(
    lambda ctx: train.main(["--model", os.path.join(ctx.tiny[0], "model.safetensors"), "--data", ctx.tiny[1]]))
case("train.py: --data names a directory", SystemExit, ": a directory. --data takes")(  # (the model: was "neither a
    lambda ctx: train.main(["--model", ctx.tiny[0], "--data", str(ctx.tmp)]))  # directory nor a preset"; data: "no such
# file")
case("train.py: a preset name in the wrong case", SystemExit, "--model 'Llama2-7B' is neither a directory nor a "
     "preset; did you mean llama2-7b? (presets are written in lower case)")(  # (listed all 24 presets, the right one
    lambda ctx: train.main(["--model", "Llama2-7B", "--data", ctx.tiny[1], "--out", str(ctx.tmp / "o")]))  # among
case("eval.py: a preset name in the wrong case", SystemExit, "did you mean smollm2-135m? (presets are written "  # them)
     "in lower case)")(lambda ctx: E.main(["--task", "mmlu", "--model", "SmolLM2-135M"]))


@case("eval.py: flags the task does not read say so", None)
def _(ctx):  # (were unused without a word: --shots, --num-beams on perplexity, --out without --plot)
    E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1], "--seq-len", "32", "--shots", "3",
            "--num-beams=2", "--out", str(ctx.tmp / "x.svg")])
    out = ctx.capsys.readouterr().out.splitlines()
    assert out[0] == "note: --shots, --num-beams, --out have no effect with --task perplexity (--out names --plot's " \
        "SVG)"
    assert json.loads(out[-1])["task"] == "perplexity" and not os.path.exists(ctx.tmp / "x.svg")


@case("cli --method full with adapter flags says they do nothing", None)
def _(ctx):
    train.parse_args(["--model", "m", "--data", "d", "--method", "full", "--rank", "8", "--targets=q_proj"])
    assert "note: --method full trains every weight: --rank, --targets (the adapter's) have no effect" in \
        ctx.capsys.readouterr().out


@case("cli flags a task ignores say so (--val-fraction with GLUE, --bleu outside WMT16, --exact-match on .txt)", None)
def _(ctx):
    train.parse_args(["--model", "m", "--data", "glue/rte", "--val-fraction", "0.1", "--bleu", "50"])
    train.parse_args(["--model", "m", "--data", "notes.txt", "--exact-match", "20"])
    train.parse_args(["--model", "m", "--data", "d.json", "--val-fraction", "0.1", "--exact-match", "20"])
    train.parse_args(["--model", "m", "--data", "d.json", "--data-dir", "glue_data", "--allow-data-change"])
    train.parse_args(["--model", "m", "--data", "squad-gen", "--data-dir", "squad", "--allow-data-change",
                      "--resume", "--val-fraction", "0", "--eval-every", "5"])  # (squad-gen: SQuAD's dev set)
    train.parse_args(["--model", "m", "--data", "notes.txt", "--val-fraction", "0", "--eval-every", "5"])
    assert ctx.capsys.readouterr().out.splitlines() == [
        "note: --val-fraction, --bleu have no effect with --data glue/rte",
        "note: --exact-match has no effect with --data notes.txt",
        "note: --data-dir has no effect with --data d.json",      # (these two were silent)
        "note: --allow-data-change has no effect without --resume",
        "note: --val-fraction has no effect with --data squad-gen",
        "note: --val-fraction 0 holds nothing out: --eval-every 5 has no validation to run"]


@case("cli flags the offline demo ignores name the demo, not --data None", None)
def _(ctx):  # (said "note: --bleu, --data-dir have no effect with --data None")
    train.parse_args(["--data-dir", "x", "--bleu", "3"])
    assert ctx.capsys.readouterr().out.splitlines() == [
        "note: --bleu, --data-dir have no effect with the offline demo (its own task file)"]


@case("cli --mode/--structure where every entry trains (--method lora, --keep 1) say they do nothing", None)
def _(ctx):  # (were accepted silently: LoRA ran, a --structure column adapter that had every column)
    train.parse_args(["--model", "m", "--data", "d", "--method", "lora", "--mode", "freeze", "--structure", "column"])
    train.parse_args(["--model", "m", "--data", "d", "--keep", "1", "--structure=column"])
    train.parse_args(["--model", "m", "--data", "d", "--keep", "0.5", "--mode", "freeze", "--structure", "column"])
    assert ctx.capsys.readouterr().out.splitlines() == [
        "note: --method lora trains every entry of A and B: --mode, --structure (LoRA-SP's: what the frozen entries "
        "hold, which train) have no effect",
        "note: --keep 1 trains every entry of A and B: --structure (LoRA-SP's: what the frozen entries hold, which "
        "train) has no effect"]


@case("cli --epochs with --max-steps: the steps asked for win, and say so; --data demo's own count yields", None)
def _(ctx):  # (--data demo --epochs 1 ran the demo's 60 steps: its default --max-steps overrode the --epochs given)
    a = train.parse_args(["--model", "m", "--data", "d", "--epochs", "1", "--max-steps", "7"])
    assert (a.max_steps, ctx.capsys.readouterr().out) == (
        7, "note: --max-steps 7 sets the number of steps: --epochs has no effect\n")
    a = train.parse_args(["--model", "smollm2-135m", "--data", "demo", "--epochs", "1"])
    assert (a.max_steps, a.epochs) == (None, 1) and train.parse_args(["--model", "smollm2-135m", "--data",
                                                                      "demo"]).max_steps == 60
    assert ctx.capsys.readouterr().out == ""


@case("cli --schedule where --warmup covers every step says it does nothing", None)
def _(ctx):  # (--warmup 1 --schedule linear trained at 0.0025, 0.005, 0.0075, 0.01: the --schedule cosine run's lrs)
    train.parse_args(["--model", "m", "--data", "d", "--warmup", "1", "--schedule", "linear"])
    train.parse_args(["--model", "m", "--data", "d", "--warmup", "0.9", "--max-steps", "4", "--schedule=constant"])
    train.parse_args(["--model", "m", "--data", "d", "--warmup", "0.5", "--max-steps", "4", "--schedule", "linear"])
    assert ctx.capsys.readouterr().out.splitlines() == [
        "note: --warmup 1 warms up over every step: --schedule linear (what follows the warm-up) has no effect",
        "note: --warmup 0.9 of --max-steps 4 warms up over every step: --schedule constant (what follows the warm-up) "
        "has no effect"]


@case("--lr 1e-40, --alpha 1e-30: adapters that change no weight of the model are said to, at the end", None)
def _(ctx):  # (trained 10 steps, exit 0, an adapter that scores as the base, without a word)
    for flag, value in (("--lr", "1e-40"), ("--alpha", "1e-30")):
        s = run(ctx, flag, value, out=f"out{flag}")
        ctx.capsys.readouterr()
        out = load_adapter(load_pretrained(ctx.tiny[0]), str(ctx.tmp / f"out{flag}" / "adapter"))
        layers = [m for m in out.modules() if isinstance(m, LoRASPLinear)]   # the check, written out: W + s B A == W
        assert layers and all(torch.equal(m.base.weight + m.scale * m.lora_B @ m.lora_A, m.base.weight) for m in layers)
        assert s["adapters_change_nothing"] is True, (flag, s)
    assert "adapters_change_nothing" not in run(ctx, out="normal")               # a run that learns: no word


@case("cli --patience that too few evaluations can never reach says so", None)
def _(ctx):  # (was silent: --eval-every 0 evaluates once, at the end, so no run stopped early)
    for steps in ("10", "11", "16"):  # evaluations at 5, 10 (11; 15, 16): patience 2 stops after a 3rd, before the end
        train.parse_args(["--model", "m", "--data", "d", "--patience", "2", "--eval-every", "5", "--max-steps", steps])
    train.parse_args(["--model", "m", "--data", "d", "--patience", "2", "--eval-every", "0"])
    assert ctx.capsys.readouterr().out.splitlines() == [
        "note: --patience 2 cannot stop early: --eval-every 5 with --max-steps 10 evaluates 2 times, the last at the "
        "end; it keeps the best evaluation's weights",
        "note: --patience 2 cannot stop early: --eval-every 5 with --max-steps 11 evaluates 3 times, the last at the "
        "end; it keeps the best evaluation's weights",
        "note: --patience 2 cannot stop early: --eval-every 0 evaluates once at the end; it keeps the best "
        "evaluation's weights"]


@case("train.py: --patience that too few evaluations of an --epochs run can never reach says so", None)
def _(ctx):  # (silent: its steps are known once the data is read, so the parse-time note above never saw them)
    args = flags(ctx.tiny, ctx.tmp / "out", "--epochs", "1", "--eval-every", "5", "--patience", "1")
    del args[args.index("--max-steps"):args.index("--max-steps") + 2]   # 54 examples, 4 x 2 a step: 7 steps
    train.main(args)
    out = ctx.capsys.readouterr().out
    assert "note: --patience 1 cannot stop early: --eval-every 5 with --epochs 1 (7 steps) evaluates 2 times, the " \
        "last at the end; it keeps the best evaluation's weights" in out
    assert [r["step"] for r in map(json.loads, open(ctx.tmp / "out" / "metrics.jsonl")) if "val_loss" in r] == [5, 7]


@case("cli --data demo --method full: the demo's own --quant nf4 yields", None)
def _(ctx):  # (was refused for the --quant nf4 the user never gave: "--method full with --quant nf4: NF4 weights ...")
    assert train.parse_args(["--model", "m", "--data", "demo", "--method", "full"]).quant == "auto"
    assert train.parse_args(["--model", "m", "--data", "demo"]).quant == "nf4"


for value in ("", "q_proj,", "q_proj,,v_proj"):  # ("" trained the default targets, silently)
    case(f"cli --targets {value!r}", 2, f"--targets {value!r} has an empty name")(
        lambda ctx, value=value: train.parse_args(["--model", "m", "--data", "d", "--targets", value]))


@case("cli --targets with spaces after the commas", None)
def _(ctx):  # (" v_proj" was refused at load: no module is named so)
    assert train.parse_args(["--model", "m", "--data", "d", "--targets", "q_proj, v_proj"]).targets == "q_proj,v_proj"


case("cli --exact-match with --val-fraction 0", 2, "--exact-match 5 asks held-out records, and --val-fraction 0 "
     "holds none out")(  # (ran without the check, silently)
    lambda ctx: train.parse_args(["--model", "m", "--data", "d.json", "--val-fraction", "0", "--exact-match", "5"]))


@case("cli the demo's own --exact-match with --val-fraction 0 says there is no check", None)
def _(ctx):  # (the demo's before/after check was dropped silently)
    assert train.parse_args(["--val-fraction", "0"]).exact_match == 200
    assert ctx.capsys.readouterr().out == "note: --val-fraction 0 holds no record out: no held-out exact match (the " \
        "demo's --exact-match 200)\n"


@case("train.py: --exact-match past the held-out records says how many it asked", None)
def _(ctx):  # (--exact-match 50 scored the 6 held out, and printed the percentage alone)
    train.main(flags(ctx.tiny, ctx.tmp / "out", "--max-steps", "1", "--exact-match", "50"))
    out = ctx.capsys.readouterr().out
    assert "held-out exact match before training (6 records): " in out
    assert "held-out exact match after training (6 records): " in out


@case("train.py: --grad-accum where one micro-batch holds every example says a step repeats them", None)
def _(ctx):  # (--batch-size 100 --grad-accum 4: each step the 54 examples 4 times, 4x the time, one's loss, no word)
    runs = {}
    for accum in ("4", "1"):
        train.main(flags(ctx.tiny, ctx.tmp / accum, "--batch-size", "100", "--grad-accum", accum, "--max-steps", "1"))
        out = ctx.capsys.readouterr().out
        runs[accum] = json.loads(out.strip().split("\n")[-1]), out
    (s4, out4), (s1, out1) = runs["4"], runs["1"]
    assert "note: --grad-accum 4: a micro-batch holds all 54 training examples, so a step's 4 micro-batches repeat " \
        "them: its gradient is one micro-batch's, at 4 times the compute" in out4
    assert "note: --grad-accum" not in out1
    assert s4["tokens"] == 4 * s1["tokens"] and s4["final_loss"] == pytest.approx(s1["final_loss"], rel=1e-5)


@case("cli process: --batch-size -1 exits at once, no traceback", None)
def _(ctx):
    """The real command line, as a user (or a pre-submission hook) runs it: exit code 2 before anything loads (it
    used to hang; a hang fails by the timeout, generous so that a loaded machine's slow `import torch` does not)."""
    p = subprocess.run([sys.executable, "train.py", "--batch-size", "-1", "--max-steps", "1", "--out",
                        str(ctx.tmp / "x")], cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr + p.stdout
    assert "argument --batch-size: -1 is out of range" in p.stderr and not os.path.exists(ctx.tmp / "x")


@case("the file demos take no flags: python quant.py --block-size 128, lorasp.py --rank 4, configs.py --bogus are "
      "refused", None)
def _(ctx):
    """They ran their fixed demo (block 64, r=16) and printed its figures as if the flag had been read."""
    for argv in (["quant.py", "--block-size", "128"], ["lorasp.py", "--rank", "4"], ["metrics.py", "--hyp", "h.txt"],
                 ["configs.py", "--bogus"]):
        p = subprocess.run([sys.executable, *argv], cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 2 and f"unrecognized arguments: {' '.join(argv[1:])}" in p.stderr, (argv, p.stderr)
        assert "Traceback" not in p.stderr and not p.stdout, argv


@case("python checkpoint.py on a folder, a config.json, a missing file: one line each", None)
def _(ctx):
    """They were tracebacks (IsADirectoryError; a config.json's 'corrupt safetensors header')."""
    model = small_model(ctx.tmp / "m")
    for arg, fragment in [(model, f"{model} is a folder: give one of its .safetensors files (or a .gguf)"),
                          (f"{model}/config.json", f"{model}/config.json: not a .safetensors or .gguf file"),
                          (f"{model}/x.safetensors", "No such file or directory")]:
        p = subprocess.run([sys.executable, "checkpoint.py", arg], capture_output=True, text=True, timeout=300,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert p.returncode == 1 and "Traceback" not in p.stderr and p.stderr.startswith("error: "), p.stderr
        assert fragment in p.stderr and len(p.stderr.strip().split("\n")) == 1, p.stderr


@case("python tokenizer.py on a tokenizer.model file, a damaged one, a .gguf that is not one: load_tokenizer's error "
      "in one line, exit 2; a typed flag refused", None)
def _(ctx):
    """load_tokenizer takes a folder or a .gguf: its own error, exit 2 as argparse's, no traceback, nothing printed."""
    (ctx.tmp / "d").mkdir()
    (ctx.tmp / "d" / "tokenizer.model").write_bytes(b"cut off")
    (ctx.tmp / "x.gguf").write_bytes(b"GGUF\x03\x00")
    for argv, fragment in [([ctx.tmp / "d" / "tokenizer.model"], "tokenizer.model: a file, but not a .gguf; pass "
                            "the checkpoint's directory"), ([ctx.tmp / "d"], "tokenizer.model: not a sentencepiece "
                            "model (damaged or cut off?)"), ([ctx.tmp / "x.gguf"], "x.gguf: truncated GGUF header"),
                           ([ctx.tmp / "d", "--vocab", "v"], "unrecognized arguments: --vocab v")]:
        p = subprocess.run([sys.executable, "tokenizer.py", *map(str, argv)], capture_output=True, text=True,
                           timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert p.returncode == 2 and "Traceback" not in p.stderr and not p.stdout, (argv, p.stderr)
        lines = p.stderr.strip().split("\n")                  # (argparse's: its usage line first)
        assert fragment in lines[-1] and lines[-1].startswith("tokenizer.py: error: ") and len(lines) == 1 + (
            "--vocab" in argv), p.stderr


@case("python tokenizer.py DIR TEXT with a TEXT that is not UTF-8 (Latin-1 bytes): refused naming the byte, exit 2",
      None)
def _(ctx):
    """Its undecodable bytes reached sentencepiece as surrogates: a RuntimeError traceback ("Unable to cast Python
    instance"). Now refused, as generate.py's --prompt is."""
    (ctx.tmp / "t5").mkdir()
    t5_sentencepiece(ctx.tmp / "t5", data.demo_corpus(100), 64)
    p = subprocess.run([sys.executable, "tokenizer.py", str(ctx.tmp / "t5"), "ok", b"caf\xe9"], capture_output=True,
                       text=True, timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert p.returncode == 2 and "Traceback" not in p.stderr and not p.stdout, p.stderr
    assert p.stderr.endswith("tokenizer.py: error: TEXT 2 is not UTF-8 text (byte e9 at offset 3): give it in "
                             "UTF-8\n"), p.stderr


# ----------------------------------------------------------------------------------------------------
# 2. train.py at run time: one line "error: ...", never exit 0 with nothing learned

def records_file(ctx, text, name="d.json"):
    (ctx.tmp / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(ctx.tmp / name)


def epochs_run(ctx, records, *more, batch="4"):
    """train.main on `records` demo records, none held out, `batch` a batch, with --epochs (no --max-steps): what the
    log says, and the summary."""
    path = records_file(ctx, json.dumps(data.demo_records(records, seed=1)))
    args = flags((ctx.tiny[0], path), ctx.tmp / "out", *more)
    del args[args.index("--max-steps"):args.index("--max-steps") + 2]
    args[args.index("--val-fraction") + 1], args[args.index("--batch-size") + 1] = "0", batch
    train.main(args)
    out = ctx.capsys.readouterr().out
    return out, json.loads(out.strip().splitlines()[-1])


@case("--epochs 0.1 on 12 examples: the log says the 1 batch of 3 it runs (0.333 epochs), not '0.1 epochs'", None)
def _(ctx):  # (was "1 step of 4 x 2 sequences (the last 1 x 4: 0.1 epochs)": 4 of the 12 examples; with --grad-accum
    # 1, nothing said)
    for accum, last in (("2", "the last 1 x 4: "), ("1", "")):
        out, s = epochs_run(ctx, 12, "--epochs", "0.1", "--grad-accum", accum)
        assert s["steps"] == 1                                             # ceil(0.1 x ceil(12 / 4)) batches: 1
        assert f"; 1 step of 4 x {accum} sequences ({last}1 of the 3 batches an epoch of 12 examples makes, up to 4 " \
            "of them: 0.333 epochs, --epochs 0.1 rounded up to whole batches)," in out, out.splitlines()[:8]
        shutil.rmtree(ctx.tmp / "out")


@case("--epochs 1.1 on 50 batches an epoch: 55 batches run (1.1 x 50 is 55.00000000000001 in floats), not 56", None)
def _(ctx):  # (was 56 micro-batches, "56 steps of 1 x 1 sequences": the ceiling of the float product)
    class Described(Exception):
        pass

    def described(run):                                                # what the run would do, then no step of it
        print(f"total {run.total} micro {run.micro}")
        raise Described
    ctx.mp.setattr(train, "describe", described)
    with pytest.raises(Described):
        epochs_run(ctx, 50, "--epochs", "1.1", "--grad-accum", "1", batch="1")
    said = [line for line in ctx.capsys.readouterr().out.splitlines() if line.startswith("total ")]
    assert said == ["total 55 micro 55"], said


@case("--resume of an --epochs 1.1 checkpoint written when 1.1 x 50 batches rounded up to 56: it runs on to 56", None)
def _(ctx):  # (was 55: the rule changed under it, and with it the lr schedule its first steps followed, without a word)
    class Described(Exception):
        pass

    def described(run):                                                # what the resumed run would do, then no step
        print(f"total {run.total} micro {run.micro}")
        raise Described
    path = records_file(ctx, json.dumps(data.demo_records(50, seed=1)))
    args = flags((ctx.tiny[0], path), ctx.tmp / "out", "--epochs", "1.1", "--grad-accum", "1")
    del args[args.index("--max-steps"):args.index("--max-steps") + 2]
    args[args.index("--val-fraction") + 1], args[args.index("--batch-size") + 1] = "0", "1"
    fault_at_loss_call(ctx.mp, 2, signal.SIGINT)                      # a checkpoint at step 2
    with pytest.raises(SystemExit):
        train.main(args)
    undo(ctx)
    ctx.mp.setattr(train, "describe", described)
    state_file = ctx.tmp / "out" / "checkpoint" / "state.json"
    new = json.loads(state_file.read_text())
    for state, total in ((new, 55), ({k: v for k, v in new.items() if k != "epochs_rule"}, 56)):  # (older: no field)
        state_file.write_text(json.dumps(state))
        ctx.capsys.readouterr()
        with pytest.raises(Described):
            train.main(args + ["--resume"])
        out = ctx.capsys.readouterr().out
        assert f"total {total} micro {total}" in out, out
        assert ("--epochs 1.1 x 50 batches ran 56 micro-batches" in out) == (total == 56), out


case("empty dataset", SystemExit, "no training examples")(
    lambda ctx: run(ctx, data_file=records_file(ctx, "[]")))
case("every record cut away by --seq-len", SystemExit, "no training examples")(
    lambda ctx: run(ctx, "--seq-len", "8", "--val-fraction", "0"))
case(".txt shorter than one block", SystemExit, "no training examples")(
    lambda ctx: run(ctx, data_file=records_file(ctx, "two words\n", "t.txt")))
case("bad JSONL line", SystemExit, "d.jsonl, line 2: not valid JSON")(
    lambda ctx: run(ctx, data_file=records_file(ctx, '{"instruction": "a", "output": "b"}\n{"instruction": \n',
                                                "d.jsonl")))
case("bad JSON", SystemExit, "d.json, line 3: not valid JSON")(
    lambda ctx: run(ctx, data_file=records_file(ctx, '[\n {"instruction": "a", "output": "b"},\n ]\n')))
case("non-UTF-8 records", SystemExit, "d.json, line 2: not UTF-8 text (byte 0xe9")(
    lambda ctx: run(ctx, data_file=records_file(ctx, b'[{"instruction": "a",\n "output": "caf\xe9"}]')))
case("records saved as UTF-16 (Notepad's 'Unicode', PowerShell 5's >)", SystemExit, "d.json: UTF-16 text (its "
     "byte-order mark 0xff 0xfe), not UTF-8; convert it: iconv -f utf-16 -t utf-8")(  # (said: iconv -f latin1)
    lambda ctx: run(ctx, data_file=records_file(ctx, '[{"instruction": "a", "output": "b"}]'.encode("utf-16"))))
case("non-UTF-8 text file", ValueError, "t.txt, line 3: not UTF-8 text")(
    lambda ctx: data.text_examples(records_file(ctx, b"one\ntwo\nthr\xffee\n", "t.txt"), None, 4))
case("record without output", SystemExit, "record 1 has no 'output' field")(
    lambda ctx: run(ctx, data_file=records_file(ctx, json.dumps([{"instruction": "a", "output": "b"},
                                                                 {"instruction": "c"}]))))
case("records: a field given twice with other values (JSON keeps the last, without a word)", SystemExit,
     "d.jsonl, line 2: record 1 gives 'output' twice ('4', then '5')")(  # (trained on '5', the first value unsaid)
    lambda ctx: run(ctx, data_file=records_file(ctx, '{"instruction": "a", "output": "b"}\n{"instruction": "c", '
                                                '"output": "4", "input": "", "output": "5"}\n', "d.jsonl")))
case("records: a field given twice in a .json list", SystemExit, "d.json, line 3: record 1 gives 'instruction' twice")(
    lambda ctx: run(ctx, data_file=records_file(ctx, '[\n {"instruction": "a", "output": "b"},\n {"instruction": '
                                                '"c", "instruction": "d", "output": "e"}\n]\n')))


@case("records: a field given twice with the same value, or an unread field twice: read as given once", None)
def _(ctx):
    path = records_file(ctx, '[{"instruction": "a", "output": "b", "output": "b", "id": 1, "id": 2}]')
    assert data.read_records(path) == [{"instruction": "a", "output": "b", "id": 2}]


case("records: a .json list saved as .jsonl, on one line", SystemExit, "d.jsonl, line 1: record 0 is a list, not an "
     "object (a list of records on one line: a .jsonl holds one record object a line; name the file .json)")(
    lambda ctx: run(ctx, data_file=records_file(ctx, json.dumps(data.demo_records(4)) + "\n", "d.jsonl")))


case("records whose instruction is Alpaca's whole prompt already (a prompt/completion file renamed)", SystemExit,
     "d.jsonl, line 2: record 1 field 'instruction' starts with Alpaca's prompt template ('Below is an instruction "
     "that describes a task")(  # (trained on the template twice over, exit 0; eval.py and generate.py ask it once)
    lambda ctx: run(ctx, data_file=records_file(ctx, "".join(json.dumps(r) + "\n" for r in [
        {"instruction": "a", "output": "b"},
        {"instruction": data.alpaca_prompt({"instruction": "How many words are in cat dog?"}), "output": "2"}]),
        "d.jsonl")))


@case("records: an input that starts with the template's '### Instruction:', a template named mid-text", None)
def _(ctx):
    path = records_file(ctx, json.dumps([{"instruction": "Count the words.", "input": "### Instruction:\nCount the "
                                          "words.\n\n### Input:\ncat dog\n\n### Response:", "output": "2"}]))
    with pytest.raises(ValueError, match=r"d\.json, line 1: record 0 field 'input' starts with Alpaca's prompt "
                                         r"template \('### Instruction:"):
        data.read_records(path)
    with pytest.raises(ValueError, match="field 'instruction' starts with Alpaca's prompt template"):  # eval.py's
        data.read_prompts(records_file(ctx, json.dumps([{"instruction": "  " + data.alpaca_prompt(  # --prompts too
            {"instruction": "Say hi."})}])))
    about = {"instruction": "What does '### Response:' mark in Alpaca's template?", "output": "The answer's start."}
    assert data.read_records(records_file(ctx, json.dumps([about]))) == [about]


case("records with no instruction and no input, every one (a converter that read the wrong key)", SystemExit,
     "d.json: no record has an instruction or an input (record 0, line 1, ...): every prompt is Alpaca's template "
     "alone")(  # (trained the answers with no question to them, exit 0)
    lambda ctx: run(ctx, data_file=records_file(ctx, json.dumps([{"instruction": "", "input": " ", "output": "2"},
                                                                 {"instruction": " \n", "output": "3"}] * 10))))


@case("records with no instruction and no input, some of them: said, counted", None)
def _(ctx):
    records = data.demo_records(20, seed=1)
    records[5]["instruction"] = records[9]["instruction"] = ""
    train.main(flags(ctx.tiny, ctx.tmp / "out", "--max-steps", "1", "--data", records_file(ctx, json.dumps(
        records, indent=0))))
    out, err = ctx.capsys.readouterr()
    assert json.loads(out.strip().split("\n")[-1])["steps"] == 1
    assert "d.json: 2 of the 20 records have no instruction and no input (the first: record 5, line 27): each " \
           "trains its output after Alpaca's template alone" in err, err


case("--targets with a name no layer has", SystemExit, "--targets v_prj: no linear layer of")(
    lambda ctx: run(ctx, "--targets", "q_proj,v_prj"))


@case("--targets all-linear (PEFT's) on a causal LM: every linear layer but lm_head", None)
def _(ctx):  # (was refused: "--targets all-linear: no linear layer of ... is named so", naming the list to type)
    every = run(ctx, "--targets", "all-linear", "--max-steps", "1")["trainable_params"]
    assert every == run(ctx, "--targets", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "--max-steps", "1",
                        out="named")["trainable_params"] > 0


case("cli --targets all-linear among module names", 2, "--targets q_proj,all-linear: all-linear adapts every linear "
     "layer but the output one; give it alone")(  # (PEFT reads such a list as names: q_proj alone, without a word)
    lambda ctx: train.parse_args(["--model", "m", "--data", "d", "--targets", "q_proj,all-linear"]))


@case("--targets all-linear on a BERT checkpoint without a pooler (BertForMaskedLM's)", SystemExit,
      "holds no bert.pooler (as BertForMaskedLM saves it): under all-linear's LoRA")
def _(ctx):  # (a LoRA on the freshly drawn pooler: the adapter, which does not hold that weight, would not reload)
    d = tiny_bert(ctx)
    tensors = {k: t for k, t in load_safetensors(f"{d}/model.safetensors").items() if ".pooler." not in k}
    save_safetensors(tensors, f"{d}/model.safetensors", metadata={"format": "pt"})
    (ctx.tmp / "SST-2").mkdir()
    for split in ("train", "dev"):
        records_file(ctx, "sentence\tlabel\na b\t1\nc\t0\n", f"SST-2/{split}.tsv")
    train.main(flags((d, "glue/sst2"), ctx.tmp / "o", "--data-dir", str(ctx.tmp), "--seq-len", "16", "--targets",
                     "all-linear"))


@case("--resume --patience: the checkpoint's metrics.jsonl deleted, its state.json one that kept no evaluations",
      SystemExit, "metrics.jsonl is gone, and with it the evaluations --patience 2 counts from")
def _(ctx):  # (was: --patience counted from zero again, a later early stop than the run's own, no word)
    more = "--eval-every", "2", "--patience", "2"
    fault_at_loss_call(ctx.mp, 9, signal.SIGINT)               # a checkpoint at step 5: evaluations at 2 and 4
    with pytest.raises(SystemExit):
        run(ctx, *more)
    undo(ctx)
    assert [e["step"] for e in json.load(open(ctx.tmp / "out" / "checkpoint" / "state.json"))["evals"]] == [2, 4]
    edit_json(ctx.tmp / "out" / "checkpoint" / "state.json", evals=KeyError)   # as saved before state.json kept them
    os.remove(ctx.tmp / "out" / "checkpoint" / "metrics.jsonl")
    run(ctx, *more, "--resume")


case("--patience with no validation set", SystemExit, "--patience 2: there is no validation set to watch")(
    lambda ctx: run(ctx, "--patience", "2", "--val-fraction", "0"))
case("--val-fraction holding out every record", SystemExit, "or --val-fraction 0.999 held them all out")(
    lambda ctx: run(ctx, "--val-fraction", "0.999"))


@case("a second run into the same --out with nothing held out: the first run's heldout.jsonl goes", None)
def _(ctx):
    """It was left behind, and the closing lines called it this run's held-out records and scored them: records the
    second run (--val-fraction 0) trained on. Now the file goes and the evaluate: line names --data itself."""
    run(ctx, "--max-steps", "1")
    assert (ctx.tmp / "out" / "heldout.jsonl").exists()
    ctx.capsys.readouterr()
    train.main(flags(ctx.tiny, ctx.tmp / "out", "--max-steps", "1", "--val-fraction", "0"))
    out = ctx.capsys.readouterr().out
    assert not (ctx.tmp / "out" / "heldout.jsonl").exists() and "heldout.jsonl" not in out
    assert f"--task perplexity --data {ctx.tiny[1]} " in out


@case("a second run into the same --out refused on its data: the first run's files stay as they were", None)
def _(ctx):
    """--exact-match with nothing held out, no training example, --patience with no validation set: each refusal comes
    before this run writes or removes anything in --out (the --exact-match one came after the first run's heldout.jsonl
    was removed: its adapter was left beside no held-out records)."""
    run(ctx, "--max-steps", "1")
    files = {p: p.read_bytes() for p in (ctx.tmp / "out").rglob("*") if p.is_file()}
    empty = records_file(ctx, "[]", "empty.json")
    for more, says in ((("--val-fraction", "0.001", "--exact-match", "5"), "holds none of"),
                       (("--val-fraction", "0", "--patience", "2", "--eval-every", "5"), "no validation set to watch")):
        with pytest.raises(SystemExit, match=says):
            run(ctx, "--max-steps", "1", *more)
    with pytest.raises(SystemExit, match="no training examples"):
        run(ctx, "--max-steps", "1", data_file=empty)
    assert {p: p.read_bytes() for p in (ctx.tmp / "out").rglob("*") if p.is_file()} == files


@case("a .txt corpus with blocks held out: the evaluate: line does not call it nothing held out", None)
def _(ctx):
    """It said "# the training records: none was held out" after holding out 20% of the blocks for the validation
    loss: the command scores the whole corpus, its training blocks too, and the note must say that."""
    text = records_file(ctx, "".join(f"How many words are in cat dog {i}? {i}\n" for i in range(60)), "t.txt")
    train.main(flags((ctx.tiny[0], text), ctx.tmp / "out", "--seq-len", "16", "--val-fraction", "0.2"))
    out = ctx.capsys.readouterr().out
    assert "held-out blocks" in out and "none was held out" not in out
    assert out.split("evaluate: ")[1].split("\n")[0].endswith(
        "   # the whole .txt, its training blocks too: held-out blocks are not written apart")


@case("--resume: an empty optimizer.pt", SystemExit, "optimizer.pt is damaged (not the file its checkpoint saved")
def _(ctx):
    (checkpointed(ctx) / "checkpoint" / "optimizer.pt").write_bytes(b"")
    run(ctx, "--max-steps", "2", "--resume")


case("eval.py: --task perplexity without --data", 2, "--task perplexity needs --data")(
    lambda ctx: E.main(["--task", "perplexity", "--model", ctx.tiny[0]]))
case("eval.py: --task generate without --prompts", 2, "--task generate needs --prompts")(
    lambda ctx: E.main(["--task", "generate", "--model", ctx.tiny[0]]))
for name, text, fragment in [  # (were tracebacks: AttributeError, KeyError; and a JSON error naming no file or line)
        ("p.json", '["Name a cat."]', "p.json, line 1: record 0 is a str, not an object"),
        ("p.json", '[{"question": "Name a cat."}]', "p.json, line 1: record 0 has no 'instruction' field"),
        ("p.jsonl", '{"instruction": "a"}\nName a cat.\n', "p.jsonl, line 2: not valid JSON")]:
    case(f"eval.py: --prompts {text!r} in {name}", SystemExit, fragment)(
        lambda ctx, name=name, text=text: E.main(["--task", "generate", "--model", ctx.tiny[0], "--prompts",
                                                  records_file(ctx, text, name), "--max-new-tokens", "2"]))
for name, text in [("p.txt", ""), ("p.txt", "\n  \n\n"), ("p.json", "[]"), ("p.jsonl", "\n")]:
    case(f"eval.py: --prompts {text!r} in {name}: no instruction to answer", SystemExit, f"{name}: no instruction "
         "to answer")(  # (was exit 0 with '"answers": []', nothing generated)
        lambda ctx, name=name, text=text: E.main(["--task", "generate", "--model", ctx.tiny[0], "--prompts",
                                                  records_file(ctx, text, name), "--max-new-tokens", "2"]))
case("eval.py: perplexity of a records file with no record ([])", SystemExit, "p.json: no record to score")(
    lambda ctx: E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", records_file(ctx, "[]", "p.json")]))
# (was a ZeroDivisionError traceback, after the model loaded)
case("eval.py: --data a folder", SystemExit, "is a folder: give a file (a text file, or Alpaca-format .json/.jsonl")(
    lambda ctx: E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", str(ctx.tmp)]))  # (was "[Errno 21]
# Is a directory", after the model loaded)
for flag, task, name in (("--data", "perplexity", "dev.tsv"), ("--prompts", "generate", "anatomy_test.csv")):
    case(f"eval.py: {flag} a GLUE or MMLU table ({name})", SystemExit, f"{name}: a table (GLUE's .tsv, MMLU's .csv)"
         f", not {'text' if flag == '--data' else 'instructions'}")(  # (read as text: its header, tabs
        lambda ctx, flag=flag, task=task, name=name: E.main([  # and labels scored (or answered) as words, exit 0)
            "--task", task, "--model", ctx.tiny[0], flag, records_file(ctx, "sentence\tlabel\nit is good\t1\n", name)])
        if (ctx.capsys.readouterr() or True) else None)
case("eval.py: --prompts a missing file", SystemExit, "nope.txt: no such file")(
    lambda ctx: E.main(["--task", "generate", "--model", ctx.tiny[0], "--prompts", str(ctx.tmp / "nope.txt")]))
case("eval.py: --plot --out a folder", SystemExit, "is a folder: --plot writes one SVG file")(
    lambda ctx: E.main(["--plot", str(checkpointed(ctx)), "--out", str(ctx.tmp)]))  # (was "[Errno 21]")


@case("eval.py: --data a train.py run's folder: its heldout.jsonl", None)
def _(ctx):
    out = ctx.tmp / "run"
    out.mkdir()
    records = [json.dumps(r) for r in json.load(open(ctx.tiny[1]))[:4]]
    (out / "heldout.jsonl").write_text("\n".join(records) + "\n")
    E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", str(out)])
    first, *_, last = ctx.capsys.readouterr().out.splitlines()
    E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", str(out / "heldout.jsonl")])
    assert first == f"note: --data {out} is a train.py run's folder: its held-out records, {out / 'heldout.jsonl'}"
    assert last == ctx.capsys.readouterr().out.splitlines()[-1]   # the same perplexity as the file's


case("train.py: --model a train.py run's adapter/", SystemExit, "/adapter is an adapter (adapter_config.json), not a "
     "model: train.py trains a new adapter on a base model (this one's: --model ")(  # (was "neither config.json ...")
    lambda ctx: train.main(flags((str(checkpointed(ctx) / "adapter"), ctx.tiny[1]), ctx.tmp / "o")))
case("eval.py: --model a train.py run's folder", SystemExit, "is a train.py run's folder, not a model: give its base, "
     "--model ")(lambda ctx: E.main(["--task", "perplexity", "--model", str(checkpointed(ctx)), "--data",  # (was "no
                                     ctx.tiny[1]]))  # weights (model.safetensors, ...)")


@case("eval.py: --adapter a train.py run's folder: its adapter/", None)
def _(ctx):  # (was "no adapter_config.json; not an adapter folder")
    out = checkpointed(ctx)
    E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1], "--adapter", str(out)])
    first, *_, last = ctx.capsys.readouterr().out.splitlines()
    E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1], "--adapter", str(out / "adapter")])
    assert first == f"note: --adapter {out} is a train.py run's folder: its adapter, {out / 'adapter'}"
    assert last == ctx.capsys.readouterr().out.splitlines()[-1]   # the same perplexity as the adapter's


@case("eval.py: --data the file --adapter trained on (a copy too), not its heldout.jsonl: said beside the perplexity",
      None)
def _(ctx):  # (was scored without a word, beside a note that exp(the run's val_loss) is this perplexity)
    run(ctx, "--max-steps", "2")
    shutil.copy(ctx.tiny[1], copy := ctx.tmp / "copy.json")
    (ctx.tmp / "other.json").write_text(json.dumps(json.load(open(ctx.tiny[1]))[:-1]))  # one record less
    said = []
    for data_file in (ctx.tiny[1], copy, ctx.tmp / "out" / "heldout.jsonl", ctx.tmp / "other.json"):
        E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", str(data_file), "--adapter",
                str(ctx.tmp / "out")])
        said.append(f"note: --data {data_file} is the file --adapter {ctx.tmp / 'out' / 'adapter'} trained on"
                    in ctx.capsys.readouterr().out)
    assert said == [True, True, False, False]
    E.main(["--task", "generate", "--model", ctx.tiny[0], "--prompts", ctx.tiny[1], "--adapter", str(ctx.tmp / "out"),
            "--max-new-tokens", "1"])
    assert "is the file --adapter" in ctx.capsys.readouterr().out


@case("eval.py: --adapter a run's folder holding an earlier run's adapter/ beside its model/", SystemExit,
      "with two runs' results, adapter/ and model/ (--method full's): give --adapter ")
def _(ctx):  # (not the earlier run's adapter, silently)
    out = checkpointed(ctx)
    train.main(flags(ctx.tiny, out, "--max-steps", "2", "--method", "full"))
    E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1], "--adapter", str(out)])


@case("train.py: --out holding an earlier run's result of the other kind says that result stays", None)
def _(ctx):  # (said "replacing ... its result", while the --method full run's model/ stayed beside the new adapter/)
    out = ctx.tmp / "out"
    for method, earlier, kind in (("full", "adapter", "an adapter"), ("lorasp", "model", "a --method full model")):
        train.main(flags(ctx.tiny, out, "--max-steps", "1", "--method", "lorasp" if method == "full" else "full"))
        ctx.capsys.readouterr()
        train.main(flags(ctx.tiny, out, "--max-steps", "1", "--method", method))
        mine = out / ("model" if method == "full" else "adapter")
        assert f"(--resume would go on with that run instead); {out / earlier}, an earlier run's result ({kind}), " \
            f"stays: this run writes {mine}" in ctx.capsys.readouterr().out
        assert {"adapter", "model"} <= set(os.listdir(out))
        shutil.rmtree(out)


@case("eval.py: --adapter a --method full run's folder", SystemExit, "out is a --method full run's folder: it "
      "trained the whole model, which is --model ")  # (was "OUT: no adapter_config.json; not an adapter folder")
def _(ctx):
    train.main(flags(ctx.tiny, ctx.tmp / "out", "--max-steps", "1", "--method", "full"))
    E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--adapter", str(ctx.tmp / "out"), "--data", ctx.tiny[1]])


@case("eval.py: --adapter a killed run's folder: no adapter/ yet, a checkpoint", SystemExit,
      "has no result yet (stopped before its end, or still running): its last checkpoint's adapter is --adapter ")
def _(ctx):  # (was "no adapter_config.json; not an adapter folder")
    out = checkpointed(ctx)
    shutil.rmtree(out / "adapter")                                  # as a run killed before its end leaves it
    E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1], "--adapter", str(out)])


@case("eval.py, generate.py, export.py: --adapter a run whose adapter's save was killed between its two renames",
      SystemExit, "adapter was stopped between its two renames: ")
def _(ctx):  # (was "--adapter OUT/adapter: no such folder", and for OUT "the run has no result yet")
    import re

    import export
    import generate
    out, rename = checkpointed(ctx), os.replace
    ctx.mp.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(Killed()) if a.endswith(".tmp") else rename(a, b))
    ctx.mp.setattr(shutil, "rmtree", lambda *a, **k: None)          # (a SIGKILL cleans nothing up)
    with pytest.raises(Killed):                                     # save_adapter's replace_dir: adapter -> .old, then
        save_adapter(load_adapter(load_pretrained(ctx.tiny[0]), out / "adapter"), out / "adapter")  # killed
    undo(ctx)
    assert {"adapter.old", "adapter.tmp"} <= set(os.listdir(out)) and "adapter" not in os.listdir(out)
    new = str(out / "adapter") + ".tmp"
    for command in (lambda a: generate.main(argv=["--model", ctx.tiny[0], "--adapter", a]),
                    lambda a: export.main(["--model", ctx.tiny[0], "--adapter", a, "--out", str(ctx.tmp / "x")]),
                    lambda a: E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1],
                                      "--adapter", a])):
        for given in (out, out / "adapter"):
            with pytest.raises(SystemExit, match=re.escape(f"give --adapter {new} (or .old), or rename {new} to ")):
                command(str(given))
    E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1], "--adapter", new])
    assert "perplexity" in ctx.capsys.readouterr().out              # (the adapter there is whole)
    E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1], "--adapter", str(out)])


# export.py and generate.py as a careful user runs them, after train.py (session 21)

def export_main(ctx, *argv):
    """export.py's command line (python export.py ARGV)."""
    import export
    export.main([str(a) for a in argv])


@case("export.py: --dtype fp16 with a merged weight past float16's range", SystemExit, "--dtype float16: "
      "model.layers.0.self_attn.q_proj.weight has values up to 100000, beyond its range (max 65504): they would be "
      "written as Inf; give --dtype bf16 or fp32")
def _(ctx):  # (was written as Inf, exit 0: transformers then computed NaN from it)
    base = shutil.copytree(ctx.tiny[0], ctx.tmp / "big")
    weights = load_safetensors(str(base / "model.safetensors"))
    weights["model.layers.0.self_attn.q_proj.weight"][0, 0] = 1e5          # fine in bf16 and fp32
    save_safetensors(weights, str(base / "model.safetensors"))
    try:
        export_main(ctx, "--model", base, "--adapter", ctx.shared.checkpoint / "adapter", "--out", ctx.tmp / "x",
                    "--dtype", "fp16")
    finally:
        assert set(os.listdir(ctx.tmp)) - {"cache"} == {"big"}             # no x, x.tmp or scratch folder left


@case("export.py: --dtype fp16 of a bf16 base rounds each merged weight once, from float32", None)
def _(ctx):  # (merged in bf16 first, then cast: 894 of 1,024 entries of an adapted q_proj off by up to 7x fp16's step)
    torch.manual_seed(0)
    save_pretrained(build_model(LlamaConfig(vocab_size=64, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64))
                    .to(torch.bfloat16), ctx.tmp / "base")
    model = apply_lorasp(load_pretrained(ctx.tmp / "base", dtype=torch.float32), ["q_proj"], r=4, alpha=8)
    layer = model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        layer.B_train.normal_(0, 0.01)                                    # a small update, as training makes
    save_adapter(model, ctx.tmp / "adapter")
    export_main(ctx, "--model", ctx.tmp / "base", "--adapter", ctx.tmp / "adapter", "--out", ctx.tmp / "out",
                "--dtype", "fp16")
    got = load_safetensors(str(ctx.tmp / "out" / "model.safetensors"))["model.layers.0.self_attn.q_proj.weight"]
    W = layer.base.weight.to(torch.bfloat16).float()                      # the file's values, exactly
    want = (W + layer.scale * layer.lora_B @ layer.lora_A).half()          # the sum in fp32, rounded once to fp16
    assert got.dtype == torch.float16 and torch.equal(got, want), int((got != want).sum())


@case("export.py: a GPT-2 base whose only tokenizer, gpt2.tiktoken, is cut off", SystemExit, "gpt2.tiktoken, line 8: "
      "not a 'base64 rank' line of tiktoken's format, or a token ranked again (damaged or cut off?); fetch it again")
def _(ctx):  # (before export.py wrote gpt2.tiktoken's tokenizer.json, such a base's folder got no tokenizer at all)
    torch.manual_seed(0)
    save_pretrained(build_model(GPT2Config(vocab_size=50257, n_positions=8, n_layer=1, n_embd=8, n_head=2)),
                    ctx.tmp / "base")
    ranks = [f"{base64.b64encode(bytes([b])).decode()} {b}\n" for b in range(256)]
    (ctx.tmp / "base" / "gpt2.tiktoken").write_text("".join(ranks[:7]) + ranks[7][:3])   # the 8th line cut short
    save_adapter(apply_lorasp(load_pretrained(ctx.tmp / "base"), ["c_attn"], r=2, alpha=4), ctx.tmp / "adapter")
    try:
        export_main(ctx, "--model", ctx.tmp / "base", "--adapter", ctx.tmp / "adapter", "--out", ctx.tmp / "out")
    finally:
        assert not os.path.exists(ctx.tmp / "out")                        # nothing written


case("a folder whose only tokenizer file, gpt2.tiktoken, is cut off (train.py / eval.py read it now)", data.UserError,
     "gpt2.tiktoken, line 2: not a 'base64 rank' line of tiktoken's format")(
    lambda ctx: tokenizer.load_tokenizer(os.path.dirname(records_file(ctx, "IQ== 0\nI", "gpt2.tiktoken"))))


@case("adapter_config.json: task_type SEQ_CLS onto a causal LM (a classifier's body, no head)", ValueError,
      "adapter_config.json: task_type 'SEQ_CLS': a sequence classification adapter, trained with a head (classifier "
      "or score) this model does not have")
def _(ctx):  # (was loaded without a word: the LM's outputs through a body trained for a classifier)
    d = small_model(ctx.tmp / "m")
    save_adapter(apply_lorasp(load_pretrained(d), ["q_proj"], r=2), ctx.tmp / "a", task_type="SEQ_CLS")
    load_adapter(load_pretrained(d), ctx.tmp / "a")


@case("export.py: --out on a full disk (a file-size limit), for the scratch copy and for --out itself", SystemExit,
      "File too large: writing ")
def _(ctx):  # (was "error: 25600 requested and 20480 written", then "error: [Errno 27] File too large": no file named)
    limit, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        for size in (20_000, 60_000):          # the base's embedding (25,600 bytes) to scratch; the merged file
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, limit[1]))
            with pytest.raises(SystemExit) as e:
                export_main(ctx, "--model", ctx.tiny[0], "--adapter", ctx.shared.checkpoint, "--out", ctx.tmp / "x")
            resource.setrlimit(resource.RLIMIT_FSIZE, limit)
            assert "free space on that disk, then run it again" in e.value.code, e.value.code
            assert set(os.listdir(ctx.tmp)) - {"cache"} == set()           # nothing half-written, no scratch
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)
    raise e.value


@case("export.py: a base whose generation_config.json's eos_token_id is a token's text", SystemExit,
      "generation_config.json: eos_token_id [2, '</s>'] is not a token id or a list of them")
def _(ctx):  # (was written, exit 0, that file copied as it was, and "note: ... has no tokenizer files: ... has none to
    d = shutil.copytree(ctx.tiny[0], ctx.tmp / "named_eos")        # copy" beside the tokenizer.model it copied)
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, "</s>"]}))
    export_main(ctx, "--model", d, "--adapter", ctx.shared.checkpoint, "--out", ctx.tmp / "x")


@case("export.py: a base whose tokenizer.model is damaged", SystemExit, "line 2: not a 'base64 rank' line")
def _(ctx):  # (was written, exit 0, the damaged file copied, and "note: ... has no tokenizer files: ... has none to
    d = shutil.copytree(ctx.tiny[0], ctx.tmp / "damaged")        # copy")
    (d / "tokenizer.model").write_text("IQ== 0\nI*== 1\n")               # a Llama 3 (tiktoken) vocabulary, cut
    export_main(ctx, "--model", d, "--adapter", ctx.shared.checkpoint, "--out", ctx.tmp / "x")


@case("export.py: --adapter a --method full run's folder: its model needs no export", SystemExit,
      "is a --method full run's folder, with no adapter to merge: its model, ")
def _(ctx):  # (was "... which is --model OUT/model (without --adapter)": export.py has no run without --adapter)
    run(ctx, "--method", "full", "--max-steps", "1")
    export_main(ctx, "--model", ctx.tiny[0], "--adapter", ctx.tmp / "out", "--out", ctx.tmp / "x")


@case("export.py: a second export.py into the --out one is writing", SystemExit, "x: another export.py is "
      "writing it (")
def _(ctx):  # (was both run: the second deleted the first's x.tmp as a killed one's, or replaced its x without --force)
    import fcntl
    fd = os.open(ctx.tmp / "x.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)                         # the first export.py, still writing
    try:
        export_main(ctx, "--model", ctx.tiny[0], "--adapter", ctx.shared.checkpoint, "--out", ctx.tmp / "x")
    finally:
        os.close(fd)
        assert set(os.listdir(ctx.tmp)) - {"cache"} == {"x.lock"}          # nothing of the second's
        os.remove(ctx.tmp / "x.lock")


@case("export.py, generate.py: --adapter whose adapter_model.safetensors has a bit flipped", SystemExit,
      "lorasp_extras.safetensors and adapter_model.safetensors disagree (a damaged file, or the files of two saves)")
def _(ctx):  # (was "--adapter A does not fit --model M: ..." from export.py: the base blamed)
    import generate
    a = shutil.copytree(ctx.shared.checkpoint / "adapter", ctx.tmp / "a")
    raw = bytearray((a / "adapter_model.safetensors").read_bytes())
    raw[-50] ^= 0x40                                                       # a bit of a lora_B value
    (a / "adapter_model.safetensors").write_bytes(raw)
    with pytest.raises(SystemExit) as e:
        generate.main(argv=["--model", ctx.tiny[0], "--adapter", str(a)])
    assert e.value.code.startswith(f"error: {a}: ") and "does not fit" not in e.value.code, e.value.code
    export_main(ctx, "--model", ctx.tiny[0], "--adapter", a, "--out", ctx.tmp / "x")


case("generate.py: --temperature 1e-45 (the logits divided by it pass float32)", SystemExit, "--temperature 1e-45: "
     "the logits divided by it pass float32's range (Inf): give a larger one, or 0 for greedy decoding")(
    lambda ctx: generate_command(ctx, "--model", ctx.tiny[0], "--temperature", "1e-45", "--max-new-tokens", "2"))
# (was "RuntimeError: probability tensor contains either `inf`, `nan` or element < 0", a traceback)


@case("generate.py: --temperature 1e-39 where every logit is negative (each divided by it is -Inf)", SystemExit,
      "--temperature 1e-39: the logits divided by it pass float32's range (-Inf): give a larger one, or 0 for greedy")
def _(ctx):  # (was the same traceback from multinomial: only +Inf was checked)
    from test_eval import tiny_gpt2
    (d := ctx.tmp / "g").mkdir()
    tiny_gpt2(d, 16)
    sd = load_safetensors(str(d / "model.safetensors"))
    v = torch.ones(8)                                                  # every logit wte[i] . ln_f(h) = -|v|^2 = -8
    sd.update({"transformer.wte.weight": v.repeat(10, 1), "transformer.ln_f.weight": torch.zeros(8),
               "transformer.ln_f.bias": -v})
    save_safetensors(sd, str(d / "model.safetensors"))
    generate_command(ctx, "--model", str(d), "--prompt", "abc", "--temperature", "1e-39", "--max-new-tokens", "2")


@case("generate.py: --model a T5: said before its weights load, with the command that generates with it", SystemExit,
      "is a t5, an encoder-decoder: generate.py continues a prompt with a causal LM (Llama, GPT-2); a T5 translates "
      "with beam search: python eval.py --task wmt16-en-ro --model ")
def _(ctx):  # (was "is a t5, not a causal LM: it does not generate", once the weights had loaded)
    save_pretrained(build_model(T5Config(vocab_size=64, d_model=8, d_kv=2, d_ff=8, num_heads=4)), ctx.tmp / "t5")
    ctx.mp.setattr(M, "load_pretrained", lambda *a, **k: pytest.fail("the weights loaded"))
    generate_command(ctx, "--model", str(ctx.tmp / "t5"))


def gpt2_classifier(ctx):
    """A folder as export.py writes a GPT-2 GLUE adapter's: GPT2ForSequenceClassification, its tied LM head kept."""
    d = ctx.tmp / "classifier"
    save_pretrained(build_model(GPT2Config(vocab_size=10, n_positions=8, n_layer=1, n_embd=8, n_head=2)).add_head(2), d)
    assert json.loads((d / "config.json").read_text())["architectures"] == ["GPT2ForSequenceClassification"]
    (d / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate("abcdefghij")}))
    (d / "merges.txt").write_text("#version: 0.2\n")
    return d


@case("generate.py: --model export.py's folder of a GPT-2 GLUE classifier: refused, naming its head", SystemExit,
      "is a GPT2ForSequenceClassification (config.json's architectures): its head scores inputs: it is no language "
      "model to generate or score text with; score it with python eval.py --task glue/TASK --model ")
def _(ctx):  # (generated text, exit 0: its LM head is the tied embedding; the adapter itself was refused so already)
    generate_command(ctx, "--model", str(gpt2_classifier(ctx)), "--prompt", "ab", "--max-new-tokens", "2")


@case("generate.py: a prompt and new tokens past a Llama's context say so, as transformers' generate warns", None)
def _(ctx):  # (was silent: RoPE runs on past max_position_embeddings, on positions the model never trained on)
    d = shutil.copytree(ctx.tiny[0], ctx.tmp / "short")
    edit_json(d / "config.json", max_position_embeddings=16)
    T = len(tokenizer.load_tokenizer(str(d)).encode("the cat sat"))
    for n, said in ((17 - T, False), (18 - T, True)):                    # the last new token is not run: T + n - 1
        generate_command(ctx, "--model", str(d), "--prompt", "the cat sat", "--max-new-tokens", str(n))
        err = ctx.capsys.readouterr().err
        assert (f"the prompt's {T} tokens and {n} new ones pass {d}'s context (16 positions): RoPE runs on, as in "
                "transformers' generate (which warns)" in err) == said, err


@case("generate.py --adapter trained on instruction records, given a raw --prompt: a note on the template", None)
def _(ctx):  # (was silent: the adapter learned to answer Alpaca's template, and the prompt was continued as text)
    adapter = str(ctx.shared.checkpoint / "adapter")
    for prompt, said in (("Name a cat.", True), (data.alpaca_prompt({"instruction": "Name a cat."}), False)):
        generate_command(ctx, "--model", ctx.tiny[0], "--adapter", adapter, "--prompt", prompt, "--max-new-tokens", "2")
        err = ctx.capsys.readouterr().err
        assert (f"trained on instruction records in Alpaca's template (--data {ctx.tiny[1]}); --prompt is continued "
                f"as written" in err) == said, err
        assert (f"python eval.py --task generate --model {ctx.tiny[0]} --adapter {adapter} --prompts FILE" in err) \
            == said, err


@case("eval.py: --data another run's heldout.jsonl (another --seed, the same file): the records --adapter trained on "
      "are counted", None)
def _(ctx):  # (was scored as held out without a word: the other split's held-out records are this one's training)
    run(ctx, "--max-steps", "2", out="seed0")
    run(ctx, "--max-steps", "2", "--seed", "1", out="seed1")
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    records = json.load(open(ctx.tiny[1]))
    trained = {key(r) for r in data.split_records(records, 0.1, 1)[0]}              # seed 1's training records
    held = [r for r in data.split_records(records, 0.1, 0)[1]]                      # seed 0's held-out ones
    both = sum(key(r) in trained for r in held)
    assert both == 6 == len(held)                                                 # every one, here
    for adapter, said in (("seed1", True), ("seed0", False)):
        E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", str(ctx.tmp / "seed0" / "heldout.jsonl"),
                "--adapter", str(ctx.tmp / adapter)])
        out = ctx.capsys.readouterr().out
        said_now = f"{both} of its {len(held)} records trained --adapter {ctx.tmp / adapter / 'adapter'}" in out
        assert said_now == said, out


@case("eval.py: --model a --method full run's model/ and --data the file it trained on, or another split's "
      "heldout.jsonl: said as for an adapter", None)
def _(ctx):  # (were scored as held out without a word: the model/ folder kept no record of its data; a later run with
    # another --seed into the same --out left it beside its heldout.jsonl, 6 of whose 6 records model/ trained on)
    train.main(flags(ctx.tiny, ctx.tmp / "out", "--max-steps", "1", "--method", "full"))
    model, held = ctx.tmp / "out" / "model", ctx.tmp / "out" / "heldout.jsonl"
    ctx.capsys.readouterr()
    for data_file, said in ((ctx.tiny[1], True), (held, False)):
        E.main(["--task", "perplexity", "--model", str(model), "--data", str(data_file)])
        out = ctx.capsys.readouterr().out
        assert (f"note: --data {data_file} is the file --model {model} trained on (its contents): its training "
                f"records are scored with the ones held out, so this is not the run's held-out perplexity (nor "
                f"exp(its val_loss)); the held-out records alone: {held}" in out) == said, out
    train.main(flags(ctx.tiny, ctx.tmp / "out", "--max-steps", "1", "--seed", "1"))   # an adapter's run, another split
    ctx.capsys.readouterr()
    key, records = lambda r: json.dumps(r, sort_keys=True), json.load(open(ctx.tiny[1]))  # noqa: E731
    trained = {key(r) for r in data.split_records(records, 0.1, 0)[0]}          # model/'s training records
    both = sum(key(r) in trained for r in data.split_records(records, 0.1, 1)[1])  # of --seed 1's held-out ones
    E.main(["--task", "perplexity", "--model", str(model), "--data", str(held)])
    assert both and f"note: --data {held} holds another run's held-out records of the file --model {model} trained " \
        f"on (another split: --seed or --val-fraction): {both} of its 6 records trained --model {model}, so this is " \
        "not a held-out perplexity\n" in ctx.capsys.readouterr().out           # (its own held-out records: gone)


@case("eval.py --task generate --adapter trained on a .txt corpus: a note that Alpaca's template is new to it", None)
def _(ctx):  # (was silent: the instructions were asked in a template the adapter never trained on)
    (corpus := ctx.tmp / "corpus.txt").write_text("\n".join(data.demo_corpus(300)) + "\n")
    run(ctx, "--max-steps", "2", data_file=str(corpus))
    (prompts := ctx.tmp / "p.txt").write_text("How many words are in fox mud?\n")
    for adapter, said in ((ctx.tmp / "out", True), (ctx.shared.checkpoint, False)):
        E.main(["--task", "generate", "--model", ctx.tiny[0], "--prompts", str(prompts), "--adapter", str(adapter),
                "--max-new-tokens", "1"])
        err = ctx.capsys.readouterr().err
        assert (f"trained on a text corpus (--data {corpus}: every token, no template); --task generate asks each "
                "instruction in Alpaca's template" in err) == said, err


# what that pass left (session 21, rt21b)

@case("eval.py, generate.py, export.py: --adapter on a base whose tokenizer.model alone changed (same size): a warning",
      None)
def _(ctx):  # (was silent: the base's fingerprint covers its weights and config.json, and the text became other ids)
    import export
    import generate
    other = shutil.copytree(ctx.tiny[0], ctx.tmp / "retrained")
    data.train_sentencepiece(data.demo_corpus(200, seed=7) + list(data.PROMPT_DICT.values()) * 5,
                             str(other / "tokenizer.model"), 456)  # other pieces, the same number
    new, old = tokenizer.load_tokenizer(str(other)), tokenizer.load_tokenizer(ctx.tiny[0])
    assert new.vocab_size == old.vocab_size and new.encode("How many cats?") != old.encode("How many cats?")
    adapter = str(ctx.shared.checkpoint / "adapter")
    legacy = shutil.copytree(adapter, ctx.tmp / "legacy")                 # saved before the adapter kept them
    trained = {k: v for k, v in adapter_base(adapter).items() if k != "tokenizer"}
    save_adapter(load_adapter(load_pretrained(ctx.tiny[0]), adapter), legacy, base=trained)
    for a, base, said in ((adapter, other, True), (adapter, ctx.tiny[0], False), (str(legacy), other, False)):
        for command in (lambda: E.main(["--task", "perplexity", "--model", str(base), "--adapter", a, "--data",
                                        ctx.tiny[1]]),
                        lambda: generate.main(argv=["--model", str(base), "--adapter", a, "--max-new-tokens", "2"]),
                        lambda: export.main(["--model", str(base), "--adapter", a, "--out", str(ctx.tmp / "x"),
                                             "--force"])):
            command()
            err = ctx.capsys.readouterr().err
            assert (f"warning: --adapter {a} trained on a base whose tokenizer files differ from {base}'s "
                    "(tokenizer.model differs): its text is other token ids" in err) == said, (a, base, err)
            assert "whose files differ" not in err, err                    # (its weights and config.json: the same)


def exported(ctx):
    """(the run's folder, export.py's merge of its adapter into the tiny base): a copy of the module's stopped run."""
    out = checkpointed(ctx)
    export_main(ctx, "--model", ctx.tiny[0], "--adapter", out / "adapter", "--out", ctx.tmp / "merged")
    return out, ctx.tmp / "merged"


@case("eval.py, generate.py, export.py, train.py --resume: the adapter export.py merged into --model, applied again",
      SystemExit, "adapter is already merged into it; applying it again doubles its update: give --model ")
def _(ctx):  # (was W + 2 (alpha/r) B A scored, generated from, merged again, exit 0; a warning: other base files)
    import re

    import generate
    out, merged = exported(ctx)
    copy = shutil.copytree(out / "adapter", ctx.tmp / "elsewhere")       # the same adapter, by its files' hashes
    for a in (out / "adapter", out, copy):
        fragment = (f"--adapter {a if a != out else out / 'adapter'} is already merged into {merged} by export.py "
                    f"(from --model {ctx.tiny[0]}, as {out / 'adapter'}); applying it again doubles its update: give "
                    f"--model {ctx.tiny[0]} (the original base) or leave out --adapter")
        for command in (lambda: E.main(["--task", "perplexity", "--model", str(merged), "--adapter", str(a),
                                        "--data", ctx.tiny[1]]),
                        lambda: generate.main(argv=["--model", str(merged), "--adapter", str(a)]),
                        lambda: export_main(ctx, "--model", merged, "--adapter", a, "--out", ctx.tmp / "twice")):
            with pytest.raises(SystemExit, match=re.escape(fragment)):
                command()
    assert not os.path.exists(ctx.tmp / "twice")
    train.main(flags((str(merged), ctx.tiny[1]), out, "--max-steps", "2", "--resume"))   # the run's own checkpoint


@case("eval.py, generate.py, export.py: --model export.py's folder copied without lorasp_merged.json, --adapter the "
      "one merged into it", SystemExit, "/adapter is already merged into --model ")
def _(ctx):  # (was W + 2 (alpha/r) B A scored, exit 0, with a warning alone: the base's files differ; its probe knows)
    import generate
    out, merged = exported(ctx)
    copy = shutil.copytree(merged, ctx.tmp / "copy", ignore=shutil.ignore_patterns("lorasp_merged.json"))
    for command in (lambda: generate.main(argv=["--model", str(copy), "--adapter", str(out / "adapter")]),
                    lambda: export_main(ctx, "--model", copy, "--adapter", out / "adapter", "--out",
                                        ctx.tmp / "twice")):
        with pytest.raises(SystemExit, match=f"--adapter {out / 'adapter'} is already merged into --model {copy}: "):
            command()
    E.main(["--task", "perplexity", "--model", str(copy), "--adapter", str(out / "adapter"), "--data", ctx.tiny[1]])


@case("eval.py: --model export.py's folder copied without lorasp_merged.json, --adapter of one step at --lr 3e-4 "
      "merged into it (an update of 0.7% of W v)", SystemExit, "/adapter is already merged into --model ")
def _(ctx):  # (was W + 2 (alpha/r) B A scored, exit 0, the files' warning alone: under the 2% of W v the probe judged)
    train.main(flags(ctx.tiny, out := ctx.tmp / "run", "--max-steps", "1", "--lr", "3e-4"))
    export_main(ctx, "--model", ctx.tiny[0], "--adapter", out / "adapter", "--out", ctx.tmp / "merged", "--dtype",
                "fp32")
    copy = shutil.copytree(ctx.tmp / "merged", ctx.tmp / "copy", ignore=shutil.ignore_patterns("lorasp_merged.json"))
    E.main(["--task", "perplexity", "--model", str(copy), "--adapter", str(out / "adapter"), "--data", ctx.tiny[1]])


@case("eval.py: another adapter onto export.py's folder: stacked, said; no tokenizer warning for the files export "
      "wrote", None)
def _(ctx):  # (was "trained on a base whose tokenizer files differ (tokenizer.json is new, ...)": the same ids)
    out, merged = exported(ctx)
    train.main(flags(ctx.tiny, ctx.tmp / "second", "--max-steps", "2", "--seed", "2"))
    assert tokenizer.load_tokenizer(str(merged)).encode("How many cats?") == tokenizer.load_tokenizer(
        ctx.tiny[0]).encode("How many cats?")
    ctx.capsys.readouterr()
    E.main(["--task", "perplexity", "--model", str(merged), "--adapter", str(ctx.tmp / "second" / "adapter"),
            "--data", ctx.tiny[1]])
    err = ctx.capsys.readouterr().err
    assert (f"note: --model {merged} holds {out / 'adapter'} merged (export.py); --adapter "
            f"{ctx.tmp / 'second' / 'adapter'} goes on top of it") in err, err
    assert "tokenizer files differ" not in err, err
    (merged / "tokenizer.json").write_text((merged / "tokenizer.json").read_text() + "\n")   # edited since
    E.main(["--task", "perplexity", "--model", str(merged), "--adapter", str(ctx.tmp / "second" / "adapter"),
            "--data", ctx.tiny[1]])
    assert "tokenizer files differ from" in ctx.capsys.readouterr().err  # (export's no longer: compared as it is)


@case("eval.py: --task perplexity, generate, squad on export.py's folder of a GPT-2 GLUE classifier: refused",
      SystemExit, "is a GPT2ForSequenceClassification (config.json's architectures): its head scores inputs: it is no "
      "language model to generate or score text with; score it with python eval.py --task glue/TASK --model ")
def _(ctx):  # (was a perplexity and answers, exit 0, from the tied LM head of a model fine-tuned to classify)
    import evalcli
    d = str(gpt2_classifier(ctx))
    (ctx.tmp / "text.txt").write_text("abc dab cab " * 20)
    (ctx.tmp / "prompts.txt").write_text("abc\ncab\n")
    ctx.mp.setattr(evalcli, "load_pretrained", lambda *a, **k: pytest.fail("the weights loaded"))
    (ctx.tmp / "dev-v1.1.json").write_text(json.dumps(dict(version="1.1", data=[dict(title="t", paragraphs=[dict(
        context="abc dab", qas=[dict(id="1", question="ab?", answers=[dict(text="abc", answer_start=0)])])])])))
    for more in (["generate", "--prompts", str(ctx.tmp / "prompts.txt")], ["squad", "--data-dir", str(ctx.tmp)]):
        with pytest.raises(SystemExit, match="is a GPT2ForSequenceClassification"):  # (squad: generated answers)
            E.main(["--task", *more, "--model", d, "--max-new-tokens", "2", "--seq-len", "8"])
    E.main(["--task", "perplexity", "--model", d, "--data", str(ctx.tmp / "text.txt")])


@case("eval.py: --task squad on transformers' LlamaForQuestionAnswering folder: said what scores SQuAD, not sent to it",
      SystemExit, "is a LlamaForQuestionAnswering (config.json's architectures): its head scores inputs: it is no "
      "language model to generate answers with; lorasp scores a span head on BERT, RoBERTa only (--task squad); --task "
      "squad scores a causal LM's generated answers: give it the LlamaForCausalLM folder")
def _(ctx):  # (was "... score it with python eval.py --task squad", the very command given)
    import transformers
    d = ctx.tmp / "llama-qa"
    config = transformers.LlamaConfig(vocab_size=500, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2)
    transformers.LlamaForQuestionAnswering(config).save_pretrained(d)
    shutil.copy(os.path.join(ctx.tiny[0], "tokenizer.model"), d)
    (ctx.tmp / "text.txt").write_text("abc dab cab " * 20)
    with pytest.raises(SystemExit, match="to generate or score text with; lorasp scores a span head on BERT, RoBERTa "
                       "only \\(--task squad\\); --task squad scores a causal LM's generated answers"):
        E.main(["--task", "perplexity", "--model", str(d), "--data", str(ctx.tmp / "text.txt")])  # (no "score it with")
    (ctx.tmp / "dev-v1.1.json").write_text(json.dumps(dict(version="1.1", data=[dict(title="t", paragraphs=[dict(
        context="abc dab", qas=[dict(id="1", question="ab?", answers=[dict(text="abc", answer_start=0)])])])])))
    E.main(["--task", "squad", "--model", str(d), "--data-dir", str(ctx.tmp), "--max-new-tokens", "2"])


@case("export.py: a T5 written in float16 (--dtype fp16) says that its activations pass float16's range", None)
def _(ctx):  # (was written without a word; lorasp's loader refuses to compute a T5 in float16, transformers clamps)
    import transformers
    save_pretrained(build_model(T5Config(vocab_size=64, d_model=8, d_kv=2, d_ff=8, num_heads=4)), ctx.tmp / "t5")
    save_adapter(apply_lorasp(load_pretrained(ctx.tmp / "t5"), ["q", "v"], r=2), ctx.tmp / "a",
                 task_type="SEQ_2_SEQ_LM")
    for dtype, said in (("fp16", True), ("bf16", False), ("fp32", False)):
        export_main(ctx, "--model", ctx.tmp / "t5", "--adapter", ctx.tmp / "a", "--out", ctx.tmp / dtype, "--dtype",
                    dtype)
        err = ctx.capsys.readouterr().err
        assert (f"warning: {ctx.tmp / 'fp16'}: a T5 in float16, whose activations pass float16's range (65504)" in err
                and "--dtype bf16 or fp32" in err) == said, err
    hf = transformers.T5ForConditionalGeneration.from_pretrained(ctx.tmp / "fp16", dtype=torch.float16)
    assert hf.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32   # (the warning's claim:
    assert hf.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.float16    # transformers' own guard)
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="T5 overflows in float16"):                     # and lorasp's loader's
        load_pretrained(ctx.tmp / "fp16")(ids, ids)
    load_pretrained(ctx.tmp / "fp16", dtype=torch.bfloat16)(ids, ids)                    # (as the warning says)


case("eval.py: a GLUE task on a Llama", SystemExit, "a llama has no classifier head")(
    lambda ctx: E.main(["--task", "glue/sst2", "--model", ctx.tiny[0]]))
case("eval.py: --adapter a folder that is not one", SystemExit, "no adapter_config.json; not an adapter folder")(
    lambda ctx: E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1], "--adapter",
                        str(ctx.tmp)]))
@case("eval.py: --adapter of a deeper model", SystemExit, "adapter module 'model.layers.2.self_attn.q_proj' is not in")
def _(ctx):
    deeper = build_model(dataclasses.replace(load_pretrained(ctx.tiny[0]).config, n_layer=3))
    save_adapter(apply_lorasp(deeper, ["q_proj"], r=4), ctx.tmp / "a")
    E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1], "--adapter", str(ctx.tmp / "a")])


@case("eval.py: --adapter of a shallower model, or a PEFT adapter short of a layer its target_modules names",
      SystemExit, "holds no weights for 1 module adapter_config.json's target_modules ['q_proj'] names in this model: "
      "['model.layers.1.self_attn.q_proj']; PEFT would add them untrained")
def _(ctx):  # (loaded without a word: the base's layer 1 left unadapted, where PEFT warns of missing adapter keys)
    base = load_pretrained(ctx.tiny[0])
    save_adapter(apply_lorasp(build_model(dataclasses.replace(base.config, n_layer=1)), ["q_proj"], r=4), ctx.tmp / "a")
    save_adapter(apply_lorasp(base, ["q_proj"], r=4), ctx.tmp / "b")
    os.remove(ctx.tmp / "b" / EXTRAS_FILE)                       # a PEFT adapter whose file lost layer 1's A and B
    edit_tensors(ctx.tmp / "b" / "adapter_model.safetensors", drop=["model.layers.1."])
    with pytest.raises(ValueError, match=r"holds no weights for 1 module .*: \['model\.layers\.1\.self_attn\.q_proj"):
        load_adapter(load_pretrained(ctx.tiny[0]), ctx.tmp / "b", peft=True)
    E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1], "--adapter", str(ctx.tmp / "a")])


def flip_a_mask_bit(path, to):
    """path (lorasp_extras.safetensors) with one entry of the first mask_A flipped to `to`: a damaged file."""
    name = next(k for k in sorted(load_safetensors(str(path))) if k.endswith(".mask_A"))
    mask = load_safetensors(str(path))[name].clone()
    mask.view(-1)[(mask.view(-1) != to).nonzero()[0]] = to
    edit_tensors(path, add={name: mask})
    return name.removesuffix(".mask_A")


for to in (True, False):  # (was "does not fit --model ...: Number of elements of source < number of ones in mask"
    @case(f"eval.py: --adapter whose extras have a mask bit flipped to {to}", SystemExit,  # and "disagree (files of
          "True entries, but A_train holds ")                               # two saves?)")
    def _(ctx, to=to):
        out = checkpointed(ctx)
        name = flip_a_mask_bit(out / "adapter" / EXTRAS_FILE, to)
        try:
            E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1], "--adapter",
                    str(out / "adapter")])
        except SystemExit as e:
            assert f"{out / 'adapter' / EXTRAS_FILE}: {name}.mask_A has " in str(e), str(e)
            assert "True entries, but A_train holds" in str(e) and str(e).endswith("(a damaged file)"), str(e)
            raise


@case("eval.py: mmlu --seq-len shorter than a question's zero-shot prompt: the prompts cut at the start are said", None)
def _(ctx):  # (were scored without their question's start, said as "3 with fewer worked examples, to fit 10 tokens")
    import sentencepiece as spm
    from test_eval import CORPUS, DEV, TESTS, write_mmlu
    (d := ctx.tmp / "m").mkdir()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(d / "tokenizer"), vocab_size=400,
                                   model_type="bpe", character_coverage=1.0, byte_fallback=True, unk_id=0, bos_id=1,
                                   eos_id=2, pad_id=-1, minloglevel=2)
    save_pretrained(build_model(LlamaConfig(vocab_size=400, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64)), d)
    tok = tokenizer.load_tokenizer(str(d))
    E.main(["--task", "mmlu", "--model", str(d), "--data-dir", str(write_mmlu(ctx.tmp / "mmlu")), "--seq-len", "60"])
    out = ctx.capsys.readouterr().out
    cut = {s: sum(len(tok.encode(E.mmlu_prompt(s, DEV, row, 0))) > 60 for row in rows) for s, rows in TESTS.items()}
    assert 0 < sum(cut.values()) < sum(map(len, TESTS.values())), cut  # (some fit with none; all have fewer)
    for s, n in cut.items():
        assert (f"; {n} cut at the start to fit 60 tokens even with no worked example" in out) == (n > 0), out
    assert json.loads(out.strip().splitlines()[-1])["cut"] == sum(cut.values())
    assert f"({sum(cut.values())} cut at the start, their question's start lost: " in out, out


case("eval.py: --limit 0", 2, "argument --limit: 0 is out of range: must be an integer >= 1")(
    lambda ctx: E.main(["--task", "mmlu", "--model", ctx.tiny[0], "--limit", "0"]))
case("eval.py: --shots -1", 2, "argument --shots: -1 is out of range: must be an integer >= 0")(
    lambda ctx: E.main(["--task", "mmlu", "--model", ctx.tiny[0], "--shots", "-1"]))


@case("SQuAD v2.0 (unanswerable questions) given for v1.1", ValueError, "question q2 has no answer (SQuAD v2.0's")
def _(ctx):
    qas = [{"id": "q1", "question": "Who?", "answers": [{"text": "Ann", "answer_start": 0}]},
           {"id": "q2", "question": "Why?", "answers": [], "is_impossible": True}]
    (ctx.tmp / "dev-v1.1.json").write_text(json.dumps({"version": "v2.0", "data": [
        {"title": "t", "paragraphs": [{"context": "Ann came.", "qas": qas}]}]}))
    data.read_squad("dev", str(ctx.tmp))


@case("SQuAD: an answer of no text (an unanswerable question written as v1.1: text \"\", answer_start -1 or 0)",
      ValueError, "question q2: an answer of no text ('', at -1; SQuAD v2.0's unanswerable question?)")
def _(ctx):  # (was read: a dev question scored against "", exact match 100 with F1 50 where every answer was right;
    qas = [{"id": "q1", "question": "Who?", "answers": [{"text": "Ann", "answer_start": 0}]},  # train: a window
           {"id": "q2", "question": "Why?", "answers": [{"text": "", "answer_start": -1}]}]   # taught "no answer")
    (ctx.tmp / "dev-v1.1.json").write_text(json.dumps({"version": "1.1", "data": [
        {"title": "t", "paragraphs": [{"context": "Ann came.", "qas": qas}]}]}))
    data.read_squad("dev", str(ctx.tmp))


@case("SQuAD: a question, answer or paragraph giving a field twice with other values (JSON keeps the last)", None)
def _(ctx):  # (was read as the last one, the first dropped without a word: trained on, or scored against, either)
    def squad(context='"context": "Ann came."', qa='"id": "q1", "question": "Who came?", "answers": [ANSWER]',
              answer='"text": "Ann", "answer_start": 0'):
        return records_file(ctx, '{"version": "1.1", "data": [{"title": "t", "paragraphs": [{' + context + ', "qas": '
                            '[{' + qa.replace("ANSWER", "{" + answer + "}") + '}]}]}]}', "dev-v1.1.json")
    for given, said in [
            (dict(qa='"id": "q1", "question": "Who left?", "question": "Who came?", "answers": [ANSWER]'),
             "question q1 gives 'question' twice ('Who left?', then 'Who came?')"),
            (dict(qa='"id": "q0", "id": "q1", "question": "Who came?", "answers": [ANSWER]'),
             "question q1 gives 'id' twice ('q0', then 'q1')"),
            (dict(qa='"id": "q1", "question": "Who came?", "answers": [], "answers": [ANSWER]'),
             "question q1 gives 'answers' twice ([], then [{'text': 'Ann', 'answer_start': 0}])"),
            (dict(answer='"text": "Bob", "text": "Ann", "answer_start": 0'),
             "question q1, answer 0 gives 'text' twice ('Bob', then 'Ann')"),
            (dict(context='"context": "Bob left.", "context": "Ann came."'),
             "article 0 ('t'), paragraph 0 gives 'context' twice ('Bob left.', then 'Ann came.')")]:
        path = squad(**given)
        with pytest.raises(ValueError) as e:
            data.read_squad("dev", str(ctx.tmp))
        assert str(e.value).startswith(f"{path}: {said}: JSON keeps the last one"), str(e.value)
    squad(qa='"id": "q1", "question": "Who came?", "question": "Who came?", "answers": [ANSWER]')  # the same: as once
    assert data.read_squad("dev", str(ctx.tmp))[0]["paragraphs"][0]["qas"][0]["question"] == "Who came?"


case("SQuAD: train-v1.1.json cut off (a partial copy) names the file", SystemExit,
     "train-v1.1.json, line 1: not valid JSON (Unterminated string")(
    lambda ctx: (ctx.tmp / "train-v1.1.json").write_text('{"version": "1.1", "data": [{"title": "Super_Bowl_5') and
    train.main(flags((tiny_bert(ctx), "squad"), ctx.tmp / "o", "--data-dir", str(ctx.tmp), "--seq-len", "64")))


@case("eval.py: a SQuAD dev file or WMT16 test split with nothing in it, said before the model loads", None)
def _(ctx):  # (after loading: ZeroDivisionError; "need as many predictions as references, at least one: 0, 0")
    ctx.mp.setattr(E, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))
    records_file(ctx, json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": []}]}), "dev-v1.1.json")
    records_file(ctx, "\n", "test.jsonl")
    save_pretrained(build_model(T5Config(d_model=8, d_kv=2, d_ff=8, num_heads=4)), ctx.tmp / "t5")  # (a model the
    for task, model, message in (                                                   # task takes: refused first else)
            ("squad", ctx.tiny[0], f"{ctx.tmp / 'dev-v1.1.json'}: no question (its \"data\" holds 1 article, none "
                                   "with \"qas\")"),
            ("wmt16-en-ro", ctx.tmp / "t5", f"{ctx.tmp}: its test split (test.jsonl, or test.en + test.ro) holds no "
                                            "sentence pair")):
        with pytest.raises(SystemExit) as e:
            E.main(["--task", task, "--model", str(model), "--data-dir", str(ctx.tmp)])
        assert e.value.code == f"error: {message}"


@case("SQuAD and WMT16: --data-dir the file itself, not its folder: said what to give", None)
def _(ctx):  # (was "DIR/dev-v1.1.json/dev-v1.1.json: SQuAD v1.1's dev-v1.1.json (URL)", "DIR/test.jsonl: no ...")
    squad, wmt = records_file(ctx, "{}", "dev-v1.1.json"), records_file(ctx, "\n", "test.jsonl")
    with pytest.raises(FileNotFoundError) as e:
        data.read_squad("dev", squad)
    assert str(e.value).endswith(f"; --data-dir {squad} is a file, and names the folder holding it: --data-dir "
                                 f"{ctx.tmp}")
    with pytest.raises(FileNotFoundError) as e:
        data.read_translation(wmt, "test")
    assert str(e.value) == f"--data-dir {wmt} is a file, and names the folder holding test.jsonl (or test.en + " \
        f"test.ro): --data-dir {ctx.tmp}"


@case("SQuAD: a file saved with a byte-order mark (PowerShell's UTF8) reads as without one", None)
def _(ctx):
    text = json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Ann came.", "qas": [
        {"id": "q1", "question": "Who?", "answers": [{"text": "Ann", "answer_start": 0}]}]}]}]})
    (ctx.tmp / "dev-v1.1.json").write_text(text, encoding="utf-8-sig")
    assert data.read_squad("dev", str(ctx.tmp)) == json.loads(text)["data"]


case("eval.py: --plot a run's metrics.jsonl", SystemExit, "/metrics.jsonl is a file: --plot takes train.py runs' "
     "--out folders (here: ")(lambda ctx: E.main(["--plot", str(checkpointed(ctx) / "metrics.jsonl"), "--out", str(
         ctx.tmp / "x.svg")]))  # (was "out/metrics.jsonl: no metrics.jsonl there")
case("eval.py: --plot --out in a missing folder", SystemExit, "/nodir/x.svg: no folder ")(
    lambda ctx: E.main(["--plot", str(checkpointed(ctx)), "--out", str(ctx.tmp / "nodir" / "x.svg")]))  # (was
# "[Errno 2] No such file or directory", naming no flag)
@case("eval.py: --plot a killed run's metrics.jsonl, its last line torn; a bad line before it", SystemExit,
      "/metrics.jsonl, line 2 is not a record ('garbage')")
def _(ctx):  # (was "Expecting ',' delimiter: line 1 column 25 (char 24)", naming no file)
    out = checkpointed(ctx)
    lines = open(out / "metrics.jsonl").read().splitlines()
    open(out / "metrics.jsonl", "a").write('{"step": 3, "loss": 4.9')    # what a kill mid-write leaves
    E.main(["--plot", str(out), "--out", str(ctx.tmp / "x.svg")])
    assert open(ctx.tmp / "x.svg").read().count("<circle") == sum('"val_loss"' in line for line in lines)
    open(out / "metrics.jsonl", "w").write(lines[0] + "\ngarbage\n" + lines[1] + "\n")
    E.main(["--plot", str(out), "--out", str(ctx.tmp / "x.svg")])


@case("eval.py: --plot refused (a file, a missing run, a bad line): the SVG already at --out stays as it was", None)
def _(ctx):  # (it was opened for writing first: each refusal left it empty)
    out, svg = checkpointed(ctx), ctx.tmp / "loss.svg"
    E.main(["--plot", str(out), "--out", str(svg)])
    drawn = svg.read_text()
    (ctx.tmp / "bad").mkdir()
    (ctx.tmp / "bad" / "metrics.jsonl").write_text('garbage\n{"step": 1, "loss": 2.0}\n')
    for run_dir in (out / "metrics.jsonl", ctx.tmp / "missing", ctx.tmp / "bad"):
        with pytest.raises(data.UserError):
            E.command(["--plot", str(out), str(run_dir), "--out", str(svg)])
        assert svg.read_text() == drawn


case("eval.py: --plot a folder without metrics.jsonl", SystemExit, "no metrics.jsonl there; --plot takes train.py")(
    lambda ctx: E.main(["--plot", str(ctx.tmp), "--out", str(ctx.tmp / "x.svg")]))  # (was "[Errno 2] No such file")


@case("eval.py: --plot a run with no logged step yet: an empty metrics.jsonl, or only a torn line", None)
def _(ctx):  # (was an empty SVG file left behind; beside a run with steps, drawn as nothing, without a word)
    (ctx.tmp / "ok").mkdir()
    (ctx.tmp / "ok" / "metrics.jsonl").write_text(json.dumps(dict(step=1, loss=2.0)) + "\n")
    for name, text in (("empty", ""), ("torn", '{"step": 1, "loss": 4.9')):
        run_dir, svg = ctx.tmp / name, ctx.tmp / f"{name}.svg"
        run_dir.mkdir()
        (run_dir / "metrics.jsonl").write_text(text)
        with pytest.raises(SystemExit) as e:
            E.main(["--plot", str(run_dir), "--out", str(svg)])
        assert e.value.code == f"error: --plot {run_dir}: no loss logged in {run_dir / 'metrics.jsonl'} yet (empty, " \
            "or only a line cut off mid-write): nothing to draw" and not svg.exists()
        ctx.capsys.readouterr()
        E.main(["--plot", str(ctx.tmp / "ok"), str(run_dir), "--out", str(svg)])
        assert ctx.capsys.readouterr().out.splitlines() == [
            f"note: --plot {run_dir}: no loss logged in {run_dir / 'metrics.jsonl'} yet (empty, or only a line cut off "
            "mid-write): in the legend only", f"wrote {svg} (2 runs)"]
        assert svg.read_text().count("<polyline") == 1 and f">{name}</text>" in svg.read_text()


@case("eval.py: --plot a run with one logged step, or a constant loss", None)
def _(ctx):  # (ZeroDivisionError: one y tick)
    for name, lines in (("one", [(1, 2.0)]), ("flat", [(1, 2.0), (2, 2.0)])):
        (ctx.tmp / name).mkdir()
        (ctx.tmp / name / "metrics.jsonl").write_text("".join(json.dumps(dict(step=s, loss=v)) + "\n" for s, v in lines))
        E.main(["--plot", str(ctx.tmp / name), "--out", str(ctx.tmp / f"{name}.svg")])
        assert (ctx.tmp / f"{name}.svg").read_text().count("<polyline") == 1


def tiny_bert(ctx):
    """A 2-layer BERT with a WordPiece vocab.txt and no head (a base model, as a pre-training upload is used)."""
    d = ctx.tmp / "bert"
    save_pretrained(build_model(EncoderConfig(vocab_size=8)), d)
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"]))
    return str(d)


case("eval.py: a GLUE task on a base encoder without --adapter (a fresh head)", SystemExit,
     "has no trained classifier head")(lambda ctx: E.main(["--task", "glue/sst2", "--model", tiny_bert(ctx),
                                                           "--seq-len", "64"]))  # (128, the default: its positions)


@case("eval.py: a GLUE folder holding the dev file only: evaluation needs no train.tsv", None)
def _(ctx):  # (was refused: "SST-2: needs train.tsv, dev.tsv"; and MNLI's 393k training pairs were tokenized first)
    save_pretrained(build_model(EncoderConfig(vocab_size=8, num_labels=2)), ctx.tmp / "bert")  # a head of its own
    (ctx.tmp / "bert" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abc"]))
    (ctx.tmp / "SST-2").mkdir()
    records_file(ctx, "sentence\tlabel\na b\t1\nc\t0\n", "SST-2/dev.tsv")
    E.main(["--task", "glue/sst2", "--model", str(ctx.tmp / "bert"), "--data-dir", str(ctx.tmp), "--seq-len", "16"])
    out = ctx.capsys.readouterr().out
    assert "glue/sst2: 2 dev examples;" in out and json.loads(out.splitlines()[-1])["dev"]["accuracy"] in (0, 50, 100)


@case("eval.py: a GLUE or SQuAD task with an adapter that brings no head (a causal-LM run's, a classifier's)", None)
def _(ctx):  # (GPT-2's alpaca adapter on glue/sst2 scored a random, unseeded head: 58.33, then 50.0 on the same files)
    d = ctx.tmp / "gpt2"
    torch.manual_seed(0)
    save_pretrained(gpt2 := build_model(GPT2Config(vocab_size=10, n_positions=8, n_layer=1, n_embd=8, n_head=2)), d)
    (d / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate([*"abcdefghi", "<|endoftext|>"])}))
    (d / "merges.txt").write_text("#version: 0.2\n")
    save_adapter(apply_lorasp(gpt2, ["c_attn"], r=2), ctx.tmp / "lm")  # CAUSAL_LM, no modules_to_save
    bert = load_pretrained(tiny_bert(ctx)).add_head(2)
    save_adapter(apply_lorasp(bert, ["query"], r=2), ctx.tmp / "cls", task_type="SEQ_CLS",
                 modules_to_save=("classifier",))
    (ctx.tmp / "SST-2").mkdir()
    for split in ("train", "dev"):
        records_file(ctx, "sentence\tlabel\nabc\t1\nbad\t0\n", f"SST-2/{split}.tsv")
    records_file(ctx, json.dumps({"version": "1.1", "data": SQUAD_DATA}), "dev-v1.1.json")
    for task, model, adapter, head in (("glue/sst2", d, "lm", "classifier head for {} (score; "),
                                       ("squad", ctx.tmp / "bert", "cls", "span head for {} (qa_outputs; ")):
        with pytest.raises(SystemExit) as e:
            E.main(["--task", task, "--model", str(model), "--adapter", str(ctx.tmp / adapter), "--data-dir",
                    str(ctx.tmp), "--seq-len", "8", "--stride", "2"])
        assert e.value.code.startswith(f"error: --adapter {ctx.tmp / adapter} brings no {head.format(model)}"), \
            e.value.code
@case("eval.py: a GLUE adapter scored on another GLUE task whose classes are others (SST-2's head on CoLA)", None)
def _(ctx):  # (was a warning, then CoLA's Matthews correlation of a sentiment head: a score that means nothing;
    # QNLI's and RTE's heads share their classes, entailment and not_entailment: that transfer is said, and scored)
    for task in ("sst2", "rte"):                           # (as train.py saves a GLUE run's adapter: its task)
        save_adapter(apply_lorasp(load_pretrained(tiny_bert(ctx)).add_head(2), ["query"], r=2), ctx.tmp / task,
                     task_type="SEQ_CLS", modules_to_save=("classifier",), base=dict(task=f"glue/{task}"))
    ctx.mp.setattr(E, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))  # refused before it loads
    with pytest.raises(SystemExit) as e:
        E.main(["--task", "glue/cola", "--model", str(ctx.tmp / "bert"), "--adapter", str(ctx.tmp / "sst2"),
                "--seq-len", "8"])
    assert e.value.code == (f"error: --adapter {ctx.tmp / 'sst2'} trained on glue/sst2, whose head's classes are "
                            "negative, positive: --task glue/cola's are unacceptable, acceptable, so its scores would "
                            "mean nothing; score it on --task glue/sst2, or train an adapter on glue/cola")
    assert E.base_quant(str(ctx.tmp / "bert"), str(ctx.tmp / "rte"), "auto", "glue/qnli") == "none"
    assert "trained on glue/rte, not glue/qnli: its head's classes are rte's" in ctx.capsys.readouterr().err


def long_sst2(ctx):
    """GLUE's SST-2 layout with a 100-word sentence in each split: past a tiny encoder's 64 positions."""
    for split in ("train", "dev"):
        records_file(ctx, "sentence\tlabel\n" + " ".join(["a b c d"] * 25) + "\t1\na b\t0\n", f"SST-2/{split}.tsv")
    return str(ctx.tmp)


@case("--seq-len past an encoder's positions", SystemExit, "--seq-len 100: ")
def _(ctx):  # (was an IndexError traceback from the position embedding, at the first batch holding so long a pair)
    (ctx.tmp / "SST-2").mkdir()
    with pytest.raises(SystemExit, match="has 64 positions; use --seq-len 64 or less"):
        train.main(flags((tiny_bert(ctx), "glue/sst2"), ctx.tmp / "o", "--data-dir", long_sst2(ctx), "--seq-len", "100"))
    save_pretrained(build_model(EncoderConfig(vocab_size=8, num_labels=2)), ctx.tmp / "bert")  # a head of its own
    E.main(["--task", "glue/sst2", "--model", str(ctx.tmp / "bert"), "--data-dir", str(ctx.tmp), "--seq-len", "100"])


def mmlu_folder(ctx):
    """An MMLU data/ folder of one subject, one question."""
    for split in ("dev", "test"):
        os.makedirs(ctx.tmp / "mmlu" / split, exist_ok=True)
        records_file(ctx, "q,a,b,c,d,A\n", f"mmlu/{split}/x_{split}.csv")
    return str(ctx.tmp / "mmlu")


@case("eval.py: perplexity's --seq-len past GPT-2's positions", SystemExit, "--seq-len 16: ")
def _(ctx):  # (was a warning that it would run on positions never trained, then GPT-2's forward refusing the window)
    d = ctx.tmp / "gpt2"
    save_pretrained(build_model(GPT2Config(vocab_size=10, n_positions=8, n_layer=1, n_embd=8, n_head=2)), d)
    (d / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate("abcdefghij")}))
    (d / "merges.txt").write_text("#version: 0.2\n")
    text = records_file(ctx, "abcdefghij" * 2, "t.txt")
    E.main(["--task", "perplexity", "--model", str(d), "--data", text, "--seq-len", "8"])  # 8 fits: scored
    assert "warning" not in ctx.capsys.readouterr().err
    with pytest.raises(SystemExit, match="has 8 positions; use --seq-len 8 or less"):
        E.main(["--task", "mmlu", "--model", str(d), "--data-dir", mmlu_folder(ctx), "--seq-len", "16"])
    E.main(["--task", "perplexity", "--model", str(d), "--data", text, "--seq-len", "16"])


@case("eval.py: a mistyped --model with a run's adapter", SystemExit, "--model 'no-such-model': neither a checkpoint "
      "directory, a .gguf file nor a preset")
def _(ctx):  # (was "no weights for no-such-model in CACHE/models/no-such-model. It has no public checkpoint to fetch":
    m = torch.nn.Sequential()  # the adapter's base check resolved --model before load_model could refuse it)
    m.add_module("q_proj", torch.nn.Linear(4, 4))
    save_adapter(apply_lorasp(m, ["q_proj"], r=2), ctx.tmp / "a", base=dict(fingerprint="0" * 64, quant="none"))
    ctx.mp.chdir(ctx.tmp)
    E.main(["--task", "mmlu", "--model", "no-such-model", "--adapter", str(ctx.tmp / "a")])


case("eval.py: perplexity with an encoder", SystemExit, "is a bert, not a causal LM: this task generates or scores "
     "text with one; an encoder scores inputs: python eval.py --task glue/TASK or squad")(  # (was no command)
    lambda ctx: E.main(["--task", "perplexity", "--model", tiny_bert(ctx), "--data", records_file(ctx, "a b c\n",
                                                                                                   "t.txt")]))


@case("eval.py: perplexity with a T5: the command that runs it named", SystemExit, "is a t5, not a causal LM: this "
      "task generates or scores text with one; a T5 translates with beam search: python eval.py --task wmt16-en-ro "
      "--model ")
def _(ctx):  # (was "is a t5, not a causal LM: this task generates or scores text with one", no command)
    save_pretrained(build_model(T5Config(vocab_size=64, d_model=8, d_kv=2, d_ff=8, num_heads=4)), ctx.tmp / "t5")
    t5_sentencepiece(ctx.tmp / "t5", data.demo_corpus(100), 64)
    E.main(["--task", "perplexity", "--model", str(ctx.tmp / "t5"), "--data", records_file(ctx, "a b c\n", "t.txt")])
@case("WMT16: a --seq-len that T5's prefix and EOS fill, cutting every English sentence away", SystemExit,
      "--seq-len 24: T5's prefix 'translate English to Romanian: ' is 31 tokens with this tokenizer: with EOS it fills "
      "every source cut to 24 tokens")
def _(ctx):  # (trained, exit 0, to translate sources that held the prefix alone; eval.py translates whole sources)
    (ctx.tmp / "t5").mkdir()
    tok = tokenizer.load_tokenizer(str(t5_sentencepiece(ctx.tmp / "t5", data.demo_corpus(100), 64)))
    assert len(tok.sp.encode(data.T5_PREFIX)) == 31                # (sentencepiece itself: no EOS)
    save_pretrained(build_model(T5Config(vocab_size=tok.vocab_size, d_model=8, d_kv=2, d_ff=8, num_heads=4)),
                    ctx.tmp / "t5")
    for split in ("train", "validation"):
        records_file(ctx, '{"translation": {"en": "one cat", "ro": "o pisica"}}\n' * 8, f"{split}.jsonl")
    train.main(["--model", str(ctx.tmp / "t5"), "--data", "wmt16-en-ro", "--data-dir", str(ctx.tmp), "--out",
                str(ctx.tmp / "out"), "--seq-len", "24", "--rank", "4", "--max-steps", "1", "--dtype", "fp32"])


@case("WMT16: a --seq-len past T5's prefix and EOS that leaves the median pair's sentence less than half its tokens",
      SystemExit, "--seq-len 33 leaves 1 token of each English sentence after T5's prefix (31 tokens) and EOS: the "
      "median train pair's sentence is ")
def _(ctx):  # (passed the prefix check above; trained, exit 0, on sources cut to the prefix and one token)
    (ctx.tmp / "t5").mkdir()
    tok = tokenizer.load_tokenizer(str(t5_sentencepiece(ctx.tmp / "t5", data.demo_corpus(100), 64)))
    save_pretrained(build_model(T5Config(vocab_size=tok.vocab_size, d_model=8, d_kv=2, d_ff=8, num_heads=4)),
                    ctx.tmp / "t5")
    pair = '{"translation": {"en": "how many words are in the red bag", "ro": "cate cuvinte sunt in punga rosie"}}\n'
    for split in ("train", "validation"):
        records_file(ctx, pair * 8, f"{split}.jsonl")
    flags = ["--model", str(ctx.tmp / "t5"), "--data", "wmt16-en-ro", "--data-dir", str(ctx.tmp), "--rank", "4",
             "--max-steps", "1", "--dtype", "fp32"]
    sentence = len(tok.encode("how many words are in the red bag", eos=False))   # (the median: every pair's)
    need = len(tok.encode(data.T5_PREFIX + "how many words are in the red bag", eos=True))
    train.main([*flags, "--out", str(ctx.tmp / "fits"), "--seq-len", str(need)])  # the figure it names trains
    with pytest.raises(SystemExit) as e:
        train.main([*flags, "--out", str(ctx.tmp / "out"), "--seq-len", "33"])
    assert f"sentence is {sentence} tokens" in e.value.code and f"give --seq-len {need} or more" in e.value.code
    raise e.value


@case("eval.py: wmt16-en-ro with a Llama", SystemExit, "is a llama, not a T5: --task wmt16-en-ro translates with T5")
def _(ctx):  # (was a traceback from beam search: 'LlamaConfig' object has no attribute 'eos_id')
    records_file(ctx, '{"translation": {"en": "a", "ro": "b"}}\n', "test.jsonl")
    E.main(["--task", "wmt16-en-ro", "--model", ctx.tiny[0], "--data-dir", str(ctx.tmp)])


@case("eval.py: squad with a T5", SystemExit, "is a t5, not an encoder with a span head (RoBERTa, BERT) or a causal LM")
def _(ctx):  # (was a traceback: AttributeError 'T5' object has no attribute 'span_logits')
    save_pretrained(build_model(T5Config(d_model=8, d_kv=2, d_ff=8, num_heads=4)), ctx.tmp / "t5")
    data.train_sentencepiece(["a b c d e f g h"] * 20, str(ctx.tmp / "t5" / "tokenizer.model"), 268)  # 3+256+9
    qa = {"id": "q", "question": "b?", "answers": [{"text": "b", "answer_start": 2}]}
    records_file(ctx, json.dumps({"data": [{"paragraphs": [{"context": "a b c", "qas": [qa]}]}]}), "dev-v1.1.json")
    E.main(["--task", "squad", "--model", str(ctx.tmp / "t5"), "--data-dir", str(ctx.tmp)])


def unfetched(ctx):
    """No download may start (the row's refusal must come first): a fetch fails the test."""
    def fetch(*a, **k):
        raise AssertionError(f"fetched {getattr(a[0], 'full_url', a[0])} before refusing the model")
    ctx.mp.setattr("download._urlopen", fetch)


@case("eval.py: mmlu with an encoder: refused before MMLU is fetched", SystemExit, "is a bert, not a causal LM: this "
      "task generates or scores text with one")
def _(ctx):  # (was MMLU's tar fetched first: offline, "cannot reach people.eecs.berkeley.edu" instead)
    unfetched(ctx)
    E.main(["--task", "mmlu", "--model", tiny_bert(ctx)])


@case("eval.py: squad with a T5: refused before SQuAD is fetched", SystemExit, "is a t5, not an encoder with a span "
      "head (RoBERTa, BERT) or a causal LM")
def _(ctx):  # (was SQuAD's dev-v1.1.json fetched first: offline, "cannot reach rajpurkar.github.io" instead)
    unfetched(ctx)
    save_pretrained(build_model(T5Config(d_model=8, d_kv=2, d_ff=8, num_heads=4)), ctx.tmp / "t5")
    E.main(["--task", "squad", "--model", str(ctx.tmp / "t5")])


@case("eval.py: wmt16-en-ro with an encoder and no data yet: the model refused first", SystemExit,
      "is a bert, not a T5: --task wmt16-en-ro translates with T5")
def _(ctx):  # (was "no test.jsonl, nor test.en + test.ro" and how to export WMT16, for a model that cannot run it)
    unfetched(ctx)
    E.main(["--task", "wmt16-en-ro", "--model", tiny_bert(ctx)])


case("eval.py: perplexity of a one-token text", SystemExit, "no token to score")(
    lambda ctx: E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", records_file(ctx, "", "t.txt")]))
case("missing data file", SystemExit, "nope.json")(
    lambda ctx: run(ctx, data_file=str(ctx.tmp / "nope.json")))
case("unknown preset", SystemExit, "neither a directory nor a preset; known presets: llama2-7b")(
    lambda ctx: train.main(["--model", "llama3-8b", "--data", ctx.tiny[1]]))
case("--resume without a checkpoint", SystemExit, "--resume: no checkpoint in")(
    lambda ctx: run(ctx, "--resume"))
case("cli --full-blocks without selective checkpointing", 2, "--full-blocks 2 needs --checkpointing selective")(
    lambda ctx: train.parse_args(["--model", "m", "--data", "d", "--full-blocks", "2", "--checkpointing", "full"]))
case("--full-blocks past the model's blocks", SystemExit, "--full-blocks 5: ")(
    lambda ctx: run(ctx, "--checkpointing", "selective", "--full-blocks", "5"))


@case("--resume of a checkpoint from before --full-blocks existed", None)
def _(ctx):
    """A checkpoint's saved settings without full_blocks ran with 0: it resumes (not "--full-blocks None -> 0")."""
    out = checkpointed(ctx)
    state = json.load(open(out / "checkpoint" / "state.json"))
    state["args"].pop("full_blocks")
    json.dump(state, open(out / "checkpoint" / "state.json", "w"))
    assert run(ctx, "--max-steps", "2", "--resume")["steps"] == 2                # refused before: raises


@case("the offline demo's --resume of a checkpoint whose demo model (an earlier lorasp's recipe) is deleted",
      SystemExit, "trained on the offline demo's model ")
def _(ctx):
    """Refused naming that model, before today's is pretrained (was: minutes of pretraining, then "the base model's
    files changed since the checkpoint ... restore them"); tests/test_compat.py resumes one still there."""
    out, cache = checkpointed(ctx), ctx.tmp / "cache"
    state = json.load(open(out / "checkpoint" / "state.json"))
    state["args"]["model"] = str(cache / "models" / "demo-llama")  # an earlier lorasp's demo model (no recipe hash)
    json.dump(state, open(out / "checkpoint" / "state.json", "w"))
    ctx.mp.setenv("LORASP_CACHE", str(cache))
    ctx.mp.setattr(train, "train", lambda args: pytest.fail("pretrained today's demo model"))
    train.main(["--out", str(out), "--resume"])


@case("--resume of a state.json saved before it named its warm-up rule, optimizer.pt's last lr fitting none",
      SystemExit, "does not say how its run counted its warm-up steps")
def _(ctx):
    """Refused (was: resumed with round()'s count, whatever the run had warmed); tests/test_compat.py resumes one
    whose lr fits."""
    loss, out = train.causal_lm_loss, ctx.tmp / "out"
    fault_at_loss_call(ctx.mp, 3, signal.SIGINT)               # Ctrl-C in step 2 of 10: saved after it
    with pytest.raises(SystemExit):
        run(ctx)
    ctx.mp.setattr(train, "causal_lm_loss", loss)
    state = json.load(open(out / "checkpoint" / "state.json"))
    del state["warmup_rule"], state["crc32"]["optimizer.pt"]  # as lorasp wrote it before 9a38efa; (edited below)
    json.dump(state, open(out / "checkpoint" / "state.json", "w"))
    opt = torch.load(out / "checkpoint" / "optimizer.pt", weights_only=True)
    opt["param_groups"][0]["lr"] /= 3                          # no count of warm-up steps gives this lr
    torch.save(opt, out / "checkpoint" / "optimizer.pt")
    run(ctx, "--resume")


@case("--resume with --checkpointing auto of a run auto gave --full-blocks", None)
def _(ctx):
    """auto takes the checkpoint's choice, the blocks replayed whole included (not "--full-blocks 1 -> 0")."""
    out = checkpointed(ctx)
    state = json.load(open(out / "checkpoint" / "state.json"))
    state["args"].update(checkpointing="selective", full_blocks=1)
    json.dump(state, open(out / "checkpoint" / "state.json", "w"))
    assert run(ctx, "--max-steps", "2", "--resume")["steps"] == 2                # refused before: raises


case("--resume with other settings", SystemExit, "--resume with different settings than the checkpoint's: "
     "--rank 16 -> 8")(lambda ctx: checkpointed(ctx) and run(ctx, "--max-steps", "2", "--resume", "--rank", "8"))
case("--resume at another number of records a step (--batch-size x --grad-accum)", SystemExit, "--batch-size 4 -> 2 "
     "(keep --batch-size x --grad-accum = 4 x 2 = 8, the records a step trains, e.g. --batch-size 2 --grad-accum 4)")(
    lambda ctx: checkpointed(ctx) and run(ctx, "--max-steps", "2", "--resume", "--batch-size", "2"))
case("an allocation that fails in a step (torch's own out of memory)", SystemExit, "out of memory in step 1 ([enforce "
     "fail")(lambda ctx: ctx.mp.setattr(train, "causal_lm_loss", lambda model, batch: torch.empty(
         1 << 62, dtype=torch.uint8)) or run(ctx))  # (was torch's traceback: no word of the run, what is kept, fits)
case("an allocation that fails in the held-out check after training", SystemExit, "Training ended: its result is "
     "saved in ")(lambda ctx, check=train.before_after: ctx.mp.setattr(train, "before_after", lambda *a: torch.empty(
         1 << 62, dtype=torch.uint8) if a[-1] == "after" else check(*a)) or run(ctx, "--exact-match", "2"))
# (was: training settings named to go on with, which leave the check's memory as it is; the result saved unsaid)
case("an allocation that fails in a step of a run with --full-blocks", SystemExit, "--checkpointing full --full-blocks "
     "0 (")(lambda ctx: ctx.mp.setattr(train, "causal_lm_loss", lambda model, batch: torch.empty(
         1 << 62, dtype=torch.uint8)) or run(ctx, "--checkpointing", "selective", "--full-blocks", "1"))  # (was
# '--checkpointing full', which with the command's --full-blocks 1 argparse refuses)
case("an allocation that fails reading --data", SystemExit, "out of memory in reading --data ([enforce fail")(
    lambda ctx: ctx.mp.setattr(data, "load_examples", lambda *a: torch.empty(1 << 62, dtype=torch.uint8)) or
    run(ctx))  # (was "in loading the model")
@case("--plan-only --force where the run does not fit", SystemExit, " GiB and 4.0 GiB is available: --quant nf4 "
      "--checkpointing full does not fit")  # (7.4 GiB alone; 7.5, 8.2 in the full suite)
def _(ctx):  # (was exit 0 and "The run, with the settings the plan settled": as if it fitted)
    from test_recover import llama2_7b_config
    ctx.mp.setattr(plan, "available_bytes", lambda device: (4 * plan.GiB, "test"))
    train.main(["--model", "llama2-7b", "--model-dir", llama2_7b_config(ctx.tmp / "7b"), "--data", "alpaca", "--out",
                str(ctx.tmp / "o"), "--plan-only", "--force"])


case("OMP_NUM_THREADS=² (a superscript digit, str.isdigit's)", None)(  # (was int()'s ValueError, a traceback)
    lambda ctx: ctx.mp.setenv("OMP_NUM_THREADS", "²") or run(ctx, "--max-steps", "1"))
case("--plan-only with the offline demo's model not made yet", SystemExit, "--plan-only: the offline demo's model is "
     "not made yet")(lambda ctx: ctx.mp.setenv("LORASP_CACHE", str(ctx.tmp / "cache")) or train.main(
         ["--plan-only", "--out", str(ctx.tmp / "o")]))  # (its pretraining would read and write weights for minutes)
case("--resume with another --schedule", SystemExit, "--resume with different settings than the checkpoint's: "
     "--schedule cosine -> constant")(  # the lr of every step left depends on it: refused, as cosine <-> linear
    lambda ctx: checkpointed(ctx) and run(ctx, "--max-steps", "4", "--resume", "--schedule", "constant"))
case("--resume with another --max-steps", SystemExit, "--resume with different settings than the checkpoint's: "
     "--max-steps 2 -> 4 (the lr schedule is laid out over the steps its run planned: a resume goes on with it, not a "
     "longer or shorter one; give the checkpoint's, or start again without --resume)")(  # (said no why, nor what to do)
    lambda ctx: checkpointed(ctx) and run(ctx, "--max-steps", "4", "--resume"))


@case("--resume on changed data", SystemExit, "--resume: the training data changed since the checkpoint")
def _(ctx):
    task = ctx.tmp / "task.json"
    shutil.copy(ctx.tiny[1], task)
    run(ctx, "--max-steps", "2", data_file=str(task))
    records = json.load(open(task))
    records[7]["output"] = "a different answer"
    json.dump(records, open(task, "w"))
    run(ctx, "--max-steps", "2", "--resume", data_file=str(task))


@case("--resume on changed data --allow-data-change", None)
def _(ctx):
    task = ctx.tmp / "task.json"
    shutil.copy(ctx.tiny[1], task)
    fault_at_loss_call(ctx.mp, 5, signal.SIGINT)               # a checkpoint at step 3 of 4
    with pytest.raises(SystemExit):
        run(ctx, "--max-steps", "4", data_file=str(task))
    undo(ctx)
    json.dump(json.load(open(task))[:-3], open(task, "w"))
    assert run(ctx, "--max-steps", "4", "--resume", "--allow-data-change", data_file=str(task))["steps"] == 4


@case("--resume --allow-data-change onto records added and reordered: the checkpoint's held-out records stay held "
      "out", None)
def _(ctx):
    """A new seeded split of the changed file held out records the checkpoint had trained on (6 of the 9 here): the
    run's val_loss and its heldout.jsonl scored what the adapter learned, exit 0."""
    task, records = ctx.tmp / "task.json", json.load(open(ctx.tiny[1]))
    json.dump(records, open(task, "w"))
    fault_at_loss_call(ctx.mp, 5, signal.SIGINT)               # a checkpoint at step 3 of 6
    with pytest.raises(SystemExit):
        run(ctx, "--max-steps", "6", data_file=str(task))
    undo(ctx)
    shutil.copytree(ctx.tmp / "out", ctx.tmp / "old")          # its checkpoint as an earlier lorasp saved it:
    state = json.load(open(ctx.tmp / "old" / "checkpoint" / "state.json"))  # its held-out records not named
    state["args"].pop("held_out", None)
    json.dump(state, open(ctx.tmp / "old" / "checkpoint" / "state.json", "w"))
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    trained, held = ({key(r) for r in part} for part in data.split_records(records, 0.1, 0))  # the first run's split
    json.dump(records[::-1] + data.demo_records(30, seed=7), open(task, "w"))   # reordered, 30 records added
    fault_at_loss_call(ctx.mp, 3, signal.SIGINT)               # stopped again, at step 5
    with pytest.raises(SystemExit):
        run(ctx, "--max-steps", "6", "--resume", "--allow-data-change", data_file=str(task))
    undo(ctx)
    printed = ctx.capsys.readouterr().out
    summary = run(ctx, "--max-steps", "6", "--resume", data_file=str(task))  # the data its checkpoint trained on now
    now = {key(json.loads(line)) for line in open(ctx.tmp / "out" / "heldout.jsonl")}
    assert summary["steps"] == 6 and now == held and not now & trained
    assert "the checkpoint's 6 held-out records stay held out" in printed
    train.main(flags((ctx.tiny[0], str(task)), ctx.tmp / "old", "--max-steps", "6", "--resume", "--allow-data-change"))
    assert "records it trained on may be held out now" in ctx.capsys.readouterr().err


@case("--resume: bad state.json", SystemExit, "state.json is damaged")
def _(ctx):
    (checkpointed(ctx) / "checkpoint" / "state.json").write_text('{"step": 2, "args": ')
    run(ctx, "--max-steps", "2", "--resume")


@case("--resume: a checkpoint folder without state.json", SystemExit, "/checkpoint has no state.json (the step, flags")
def _(ctx):  # (was "no checkpoint in OUT", beside the checkpoint folder)
    os.remove(checkpointed(ctx) / "checkpoint" / "state.json")
    run(ctx, "--max-steps", "2", "--resume")


@case("--resume: state.json without python_rng", SystemExit, "state.json is damaged (KeyError")
def _(ctx):
    path = checkpointed(ctx) / "checkpoint" / "state.json"
    edit_json(path, python_rng=KeyError)
    run(ctx, "--max-steps", "2", "--resume")


@case("--resume: state.json's step edited (-1, 1, 1.5, true, \"2\") or another checkpoint's", None)
def _(ctx):  # (went on from that step, 1.5 as 1, with step 2's optimizer and RNG states, without a word)
    path = checkpointed(ctx) / "checkpoint" / "state.json"
    saved = json.load(open(path))
    for step in (-1, 1, 1.5, True, "2", 4):
        json.dump(dict(saved, step=step), open(path, "w"))
        with pytest.raises(SystemExit) as e:
            run(ctx, "--max-steps", "2", "--resume")
        assert e.value.code == f"error: --resume: {path} is damaged (its step {json.dumps(step)} is not the 2 steps " \
            f"{path.parent / 'optimizer.pt'} took); the checkpoint cannot continue the run: start again without " \
            "--resume (or with another --out)"
    json.dump(dict(saved, args=dict(saved["args"], base_sha256=None, base_files=None)), open(path, "w"))
    assert run(ctx, "--max-steps", "2", "--resume")["steps"] == 2  # none recorded: as before fingerprints (TypeError)


@case("--resume over a base whose files changed", SystemExit, "the base model's files changed since the checkpoint")
def _(ctx):
    base = str(shutil.copytree(ctx.tiny[0], ctx.tmp / "base"))
    train.main(flags((base, ctx.tiny[1]), ctx.tmp / "out", "--max-steps", "2"))
    model = load_pretrained(base)
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(0.01)              # other weights, same names, shapes and sizes
    save_pretrained(model, base)
    train.main(flags((base, ctx.tiny[1]), ctx.tmp / "out", "--max-steps", "2", "--resume"))


case("--resume with another --method: refused before the weights load", SystemExit,
     "different settings than the checkpoint's: --method lorasp -> full")(
    lambda ctx: checkpointed(ctx) and run(ctx, "--max-steps", "2", "--resume", "--method", "full"))


@case("--resume: the --model folder written with a trailing slash, a torn last line in metrics.jsonl", None)
def _(ctx):
    out = checkpointed(ctx)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "lo')                             # a kill in the middle of a write
    train.main(flags((ctx.tiny[0] + "/", ctx.tiny[1]), out, "--max-steps", "2", "--resume"))
    assert [json.loads(line)["step"] for line in open(out / "metrics.jsonl")] == [2, 2]   # loss, val_loss


def resumed(ctx, model, data_file):
    """--resume of checkpointed(ctx) with --model and --data written as given: the summary's steps."""
    out = checkpointed(ctx)
    train.main(flags((str(model), str(data_file)), out, "--max-steps", "2", "--resume"))
    return json.loads(ctx.capsys.readouterr().out.strip().split("\n")[-1])["steps"]


@case("--resume: --model and --data as relative paths of the checkpoint's absolute ones", None)
def _(ctx):  # (was refused: "--model /abs/tiny -> tiny")
    ctx.mp.chdir(os.path.dirname(ctx.tiny[0]))
    assert resumed(ctx, os.path.relpath(ctx.tiny[0]), os.path.relpath(ctx.tiny[1])) == 2


@case("--resume: --model and --data through symlinks", None)
def _(ctx):
    os.symlink(ctx.tiny[0], ctx.tmp / "base")
    os.symlink(ctx.tiny[1], ctx.tmp / ("task" + os.path.splitext(ctx.tiny[1])[1]))
    assert resumed(ctx, ctx.tmp / "base", ctx.tmp / ("task" + os.path.splitext(ctx.tiny[1])[1])) == 2


@case("--resume: --model and --data copied to another folder, the same files; the base's read once", None)
def _(ctx):
    (ctx.tmp / "elsewhere").mkdir()
    task, read = shutil.copy(ctx.tiny[1], ctx.tmp / "elsewhere"), []
    ctx.mp.setattr(resume, "files_fingerprints", lambda *a, **k: read.append(a[0]) or checkpoint.files_fingerprints(
        *a, **k))
    assert resumed(ctx, shutil.copytree(ctx.tiny[0], ctx.tmp / "elsewhere" / "base"), task) == 2
    assert read == [str(ctx.tmp / "elsewhere" / "base")]               # 3 times before: 2 settings checks, the load


@case("--resume: --data-dir written another way (from another folder); its files changed: refused", None)
def _(ctx):  # (was refused: "--data-dir glue -> ../glue")
    (ctx.tmp / "glue" / "SST-2").mkdir(parents=True)
    for split in ("train", "dev"):
        records_file(ctx, "sentence\tlabel\n" + "".join(f"{'a b c'[i % 5:]}\t{i % 2}\n" for i in range(12)),
                     f"glue/SST-2/{split}.tsv")
    ctx.mp.chdir(ctx.tmp)
    bert = tiny_bert(ctx)
    argv = lambda glue: flags((bert, "glue/sst2"), ctx.tmp / "o", "--data-dir", glue, "--seq-len", "16",  # noqa
                              "--max-steps", "4")
    train.main(argv("glue"))
    (ctx.tmp / "sub").mkdir()
    ctx.mp.chdir(ctx.tmp / "sub")
    shutil.copytree(ctx.tmp / "o", ctx.tmp / "stopped")
    train.main(argv("../glue") + ["--resume"])
    assert json.loads(ctx.capsys.readouterr().out.strip().split("\n")[-1])["steps"] == 4
    shutil.rmtree(ctx.tmp / "o")
    shutil.copytree(ctx.tmp / "stopped", ctx.tmp / "o")
    records_file(ctx, "sentence\tlabel\na a\t1\n", "glue/SST-2/dev.tsv")
    with pytest.raises(SystemExit, match=r"--resume: the validation data changed since the checkpoint \(--data "
                                         r"glue/sst2: .*/glue/SST-2/dev.tsv changed; "):
        train.main(argv(str(ctx.tmp / "glue")) + ["--resume"])


@case("--resume: a copy of the base with one file changed", SystemExit, "/base: config.json differs). The adapter")
def _(ctx):  # refused before any weight loads, naming the file
    base = str(shutil.copytree(ctx.tiny[0], ctx.tmp / "base"))
    edit_json(os.path.join(base, "config.json"), rms_norm_eps=1e-3)   # (load_pretrained reads it: a changed model)
    resumed(ctx, base, ctx.tiny[1])


@case("--resume: a copy of the data with one record changed", SystemExit,
      "--resume: the training data changed since the checkpoint (--data ")
def _(ctx):
    (ctx.tmp / "elsewhere").mkdir()
    task = shutil.copy(ctx.tiny[1], ctx.tmp / "elsewhere")
    records = json.load(open(task))
    records[7]["output"] = "a different answer"
    json.dump(records, open(task, "w"))
    resumed(ctx, ctx.tiny[0], task)


@case("--resume: a checkpoint past the run's last step (--epochs over data --allow-data-change shrank)", SystemExit,
      "--resume: the checkpoint is at step 3, past this run's last (2: --epochs 1 of 9 examples)")
def _(ctx):  # (was: no step trained, the summary said "steps": 3 as if the run were done)
    task = ctx.tmp / "task.json"
    shutil.copy(ctx.tiny[1], task)
    argv = flags((ctx.tiny[0], str(task)), ctx.tmp / "out", "--epochs", "1")
    argv[argv.index("--max-steps"):argv.index("--max-steps") + 2] = []
    fault_at_loss_call(ctx.mp, 5, signal.SIGINT)               # a checkpoint at step 3 (of 7 for 54 examples)
    with pytest.raises(SystemExit):
        train.main(argv)
    undo(ctx)
    json.dump(json.load(open(task))[:9], open(task, "w"))     # 9 train examples (the checkpoint held out none of
    # them; a new split would hold out 1 it trained on): 2 steps of 2 x 4
    train.main(argv + ["--resume", "--allow-data-change"])


@case("--out over an earlier run without --resume: said so, once", None)
def _(ctx):  # (said twice, in two wordings)
    out = checkpointed(ctx)
    train.main(flags(ctx.tiny, out, "--max-steps", "2"))
    assert [line for line in ctx.capsys.readouterr().out.splitlines() if "earlier run" in line] == [
        f"note: --out {out} holds an earlier run ({out / 'checkpoint'}); this one starts afresh, replacing its "
        "checkpoint at its first save, its log and its result (--resume would go on with that run instead)"]


@case("--resume of a run that ended: said that nothing is left to train", None)
def _(ctx):  # (was an exit 0 that trained no step, "tokens": 0, without a word)
    ended = run(ctx, "--max-steps", "2")
    train.main(flags(ctx.tiny, ctx.tmp / "out", "--max-steps", "2", "--resume"))
    out = ctx.capsys.readouterr().out
    s = json.loads(out.strip().split("\n")[-1])  # the run's tokens, as its steps; none trained now
    assert (s["steps"], s["tokens"], s["tokens_since_resume"]) == (2, ended["tokens"], 0) and ended["tokens"] > 0
    assert f"note: --resume: the checkpoint's run ended at step 2, its last: nothing is left to train (its result is " \
           f"in {ctx.tmp / 'out' / 'adapter'})" in out, out


@case("--resume: a complete bad line just before a torn last one", SystemExit, "metrics.jsonl, line 3 is not a record")
def _(ctx):
    out = checkpointed(ctx)
    with open(out / "checkpoint" / "metrics.jsonl", "a") as f:     # the log --resume reads: the checkpoint's
        f.write('{"step": 1, "bad\n{"step": 2, "lo')               # the torn tail is line 4
    run(ctx, "--max-steps", "2", "--resume")


@case("--resume: the checkpoint's metrics.jsonl cut mid-line (a damaged copy: its save writes it whole)", SystemExit,
      "checkpoint/metrics.jsonl ends in a line cut off ('{\"step\": 2, \"val_'): its checkpoint wrote it whole, so it "
      "was damaged since")
def _(ctx):  # (was read as a kill's torn line: the step-2 evaluation dropped without a word, from the log and from
    out = checkpointed(ctx)                                     # --patience's history; the summary's val_loss null)
    log = out / "checkpoint" / "metrics.jsonl"
    text = log.read_text()
    log.write_text(text[:text.rindex('"val_loss"') + 5])
    run(ctx, "--max-steps", "2", "--resume")


@case("--resume after the base's tokenizer_config.json changed (a chat template): its weights did not", None)
def _(ctx):
    base = str(shutil.copytree(ctx.tiny[0], ctx.tmp / "base"))
    train.main(flags((base, ctx.tiny[1]), ctx.tmp / "out", "--max-steps", "2"))
    (ctx.tmp / "base" / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    train.main(flags((base, ctx.tiny[1]), ctx.tmp / "out", "--max-steps", "2", "--resume"))


@case("--resume after the base's tokenizer.model was replaced: named, not blamed on the data", SystemExit,
      "and the base's tokenizer files changed (tokenizer.model differs): its records are other token ids now")
def _(ctx):  # (was "the training data changed ... Restore the data, or pass --allow-data-change", the data unchanged)
    base = str(shutil.copytree(ctx.tiny[0], ctx.tmp / "base"))
    train.main(flags((base, ctx.tiny[1]), ctx.tmp / "out", "--max-steps", "2"))
    data.train_sentencepiece(data.demo_corpus(200, seed=7) + list(data.PROMPT_DICT.values()) * 5,
                             str(ctx.tmp / "base" / "tokenizer.model"), 456)  # another vocabulary of the same size
    train.main(flags((base, ctx.tiny[1]), ctx.tmp / "out", "--max-steps", "2", "--resume"))


@case("--resume --allow-data-change after an added_tokens.json came beside the base's tokenizer.model: refused",
      SystemExit, "and the base's tokenizer files changed (added_tokens.json is new): its records are other token ids")
def _(ctx):  # (was: went on without a word, its records read with "How" as one added token; added_tokens.json unhashed)
    base = str(shutil.copytree(ctx.tiny[0], ctx.tmp / "base"))
    train.main(flags((base, ctx.tiny[1]), ctx.tmp / "out", "--max-steps", "2"))
    (ctx.tmp / "base" / "added_tokens.json").write_text(json.dumps({"How": 5}))  # what transformers reads, as ours
    assert tokenizer.load_tokenizer(base).encode("How many?")[1] == 5
    train.main(flags((base, ctx.tiny[1]), ctx.tmp / "out", "--max-steps", "2", "--resume", "--allow-data-change"))


def hashed_before_added_tokens(record):
    """A tokenizer_files record as lorasp wrote it before added_tokens.json was hashed: the files of SMALL_FILES[2:]
    it found, nothing else (no null for an absent one)."""
    return {f: sha for f, sha in record.items() if sha is not None and f in tokenizer.HASHED_BEFORE}


@case("--resume --allow-data-change of a checkpoint saved before added_tokens.json was hashed, on a base that had one "
      "all along: goes on", None)
def _(ctx):  # (was refused: "the base's tokenizer files changed (added_tokens.json is new)", the file unchanged)
    base = str(shutil.copytree(ctx.tiny[0], ctx.tmp / "base"))
    (ctx.tmp / "base" / "added_tokens.json").write_text(json.dumps({"How": 5}))
    task = str(shutil.copy(ctx.tiny[1], ctx.tmp / "task.json"))
    train.main(flags((base, task), ctx.tmp / "out", "--max-steps", "2"))
    state = json.loads((ctx.tmp / "out" / "checkpoint" / "state.json").read_text())
    assert state["args"]["tokenizer_files"]["added_tokens.json"] is not None  # (hashed now)
    state["args"]["tokenizer_files"] = hashed_before_added_tokens(state["args"]["tokenizer_files"])
    (ctx.tmp / "out" / "checkpoint" / "state.json").write_text(json.dumps(state))
    records = json.loads(open(task).read())
    json.dump(records + records[:2], open(task, "w"))                    # other data: --allow-data-change's case
    ctx.capsys.readouterr()
    train.main(flags((base, task), ctx.tmp / "out", "--max-steps", "2", "--resume", "--allow-data-change"))
    assert json.loads(ctx.capsys.readouterr().out.strip().split("\n")[-1])["steps"] == 2      # (resumed, ended)


@case("eval.py: --adapter saved before added_tokens.json was hashed, on its base that had one: a note, no warning",
      None)
def _(ctx):  # (was "warning: ... tokenizer files differ ... (added_tokens.json is new)", the file unchanged)
    base = str(shutil.copytree(ctx.tiny[0], ctx.tmp / "base"))
    (ctx.tmp / "base" / "added_tokens.json").write_text(json.dumps({"How": 5}))
    train.main(flags((base, ctx.tiny[1]), ctx.tmp / "out", "--max-steps", "1"))
    adapter, old = str(ctx.tmp / "out" / "adapter"), ctx.tmp / "old"
    trained = adapter_base(adapter)
    save_adapter(load_adapter(load_pretrained(base), adapter), old,
                 base=trained | dict(tokenizer=hashed_before_added_tokens(trained["tokenizer"])))
    ctx.capsys.readouterr()
    E.main(["--task", "perplexity", "--model", base, "--adapter", str(old), "--data", ctx.tiny[1]])
    err = ctx.capsys.readouterr().err
    assert "warning" not in err and f"note: --adapter {old} was saved before lorasp hashed added_tokens.json: " \
        f"{base}'s is not checked against the files it trained with" in err, err
    (ctx.tmp / "base" / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')  # a file it
    E.main(["--task", "perplexity", "--model", base, "--adapter", str(old), "--data", ctx.tiny[1]])  # looked for
    assert "tokenizer files differ from" in (err := ctx.capsys.readouterr().err) and \
        "(tokenizer_config.json is new)" in err, err


@case("--resume --allow-data-change after the base's tokenizer.model was replaced: refused too", SystemExit,
      "and the base's tokenizer files changed (tokenizer.model differs): its records are other token ids now, which "
      "the adapter never trained on. Restore those files, or start again without --resume (--allow-data-change lets "
      "in other records, not other ids for them)")
def _(ctx):  # (was: went on without a word, the adapter learning on one vocabulary's ids and then another's)
    base = str(shutil.copytree(ctx.tiny[0], ctx.tmp / "base"))
    train.main(flags((base, ctx.tiny[1]), ctx.tmp / "out", "--max-steps", "2"))
    data.train_sentencepiece(data.demo_corpus(200, seed=7) + list(data.PROMPT_DICT.values()) * 5,
                             str(ctx.tmp / "base" / "tokenizer.model"), 456)  # another vocabulary of the same size
    train.main(flags((base, ctx.tiny[1]), ctx.tmp / "out", "--max-steps", "2", "--resume", "--allow-data-change"))


def as_mistral(ctx, window):
    """The tiny fixture's folder as a Mistral with a sliding window (model_type and the window in config.json)."""
    d = shutil.copytree(ctx.tiny[0], ctx.tmp / "mistral")
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(config | dict(model_type="mistral", sliding_window=window)))
    return str(d)


@case("--seq-len past a Mistral's sliding window (not implemented) is refused before training", SystemExit,
      "--seq-len 200: past ")
def _(ctx):
    train.main(flags((as_mistral(ctx, 128), ctx.tiny[1]), ctx.tmp / "out"))  # (flags: --seq-len 200)


@case("eval.py --seq-len past a Mistral's sliding window is refused before scoring (was a warning, then a traceback)",
      SystemExit, "--seq-len 200: past ")
def _(ctx):
    E.main(["--task", "perplexity", "--model", as_mistral(ctx, 128), "--data", ctx.tiny[1], "--seq-len", "200"])


@case("model.py --prompt with --max-new-tokens past a Mistral's window says how many fit (was a traceback)",
      SystemExit, "pass the 128 positions of")
def _(ctx):
    ctx.mp.setattr(sys, "argv", ["model.py", "--model", as_mistral(ctx, 128), "--prompt", "How many",
                                 "--max-new-tokens", "200"])
    M.main()


@case("a Mistral with --seq-len within its sliding window trains (model_type mistral was refused)", None)
def _(ctx):
    train.main(flags((as_mistral(ctx, 128), ctx.tiny[1]), ctx.tmp / "out", "--seq-len", "128", "--max-steps", "2"))
    summary = json.loads(ctx.capsys.readouterr().out.strip().split("\n")[-1])
    assert summary["steps"] == 2 and math.isfinite(summary["final_loss"]), summary


@case("a Qwen2 config.json whose max_window_layers (the first layer with a window) is not an integer", ValueError,
      "config.json: max_window_layers = '24' must be an integer")
def _(ctx):
    d = shutil.copytree(ctx.tiny[0], ctx.tmp / "qwen2")
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(config | dict(model_type="qwen2", use_sliding_window=True,
                                                            sliding_window=64, max_window_layers="24")))
    load_pretrained(d)


case("tokenizer.model in tiktoken's format (Llama 3) read as sentencepiece", ValueError, "a tiktoken BPE file")(
    lambda ctx: tokenizer.SentencePieceTokenizer(records_file(ctx, "IQ== 0\nIg== 1\n", "tokenizer.model")))
case("tokenizer.model in tiktoken's format, 2 tokens: not Llama 3's", data.UserError, "2 tokens ranked 0..1: not Llama")(
    lambda ctx: tokenizer.load_tokenizer(os.path.dirname(records_file(ctx, "IQ== 0\nIg== 1\n", "tokenizer.model"))))
@case("Meta's Llama 2 folder without tokenizer.model, which download.sh put one folder up", data.UserError,
      "no tokenizer.model beside params.json; Meta's download keeps one in the folder above: cp ")
def _(ctx):
    (ctx.tmp / "llama-2-7b").mkdir()
    (ctx.tmp / "llama-2-7b" / "params.json").write_text('{"dim": 64}')
    (ctx.tmp / "tokenizer.model").write_bytes(b"x")
    tokenizer.load_tokenizer(ctx.tmp / "llama-2-7b")


case("Llama 3's tokenizer.model with a damaged line", data.UserError, "tokenizer.model, line 2: not a 'base64 rank'")(
    lambda ctx: tokenizer.load_tokenizer(os.path.dirname(records_file(ctx, "IQ== 0\nI*== 1\n", "tokenizer.model"))))
case("Llama 3's tokenizer.model with two tokens of one rank (was '2 tokens ranked 0..0'; on the real file: '128,000 "
     "tokens ranked 0..127999: not Llama 3's (128,000 tokens ranked 0..127,999)')", data.UserError,
     "tokenizer.model, line 2: rank 0 again, for another token")(
    lambda ctx: tokenizer.load_tokenizer(os.path.dirname(records_file(ctx, "IQ== 0\nIg== 0\n", "tokenizer.model"))))
case("Llama 3's tokenizer.model with one token twice, ranked apart", data.UserError,
     "tokenizer.model, line 2: its token again, ranked 0 before")(
    lambda ctx: tokenizer.load_tokenizer(os.path.dirname(records_file(ctx, "IQ== 0\nIQ== 1\n", "tokenizer.model"))))



@case("tokenizer.json of sentencepiece's BPE (Metaspace, byte_fallback) without its 256 byte pieces", ValueError,
      "tokenizer.json: sentencepiece refuses the model its vocabulary makes (INTERNAL: there are not 256 byte pieces")
def _(ctx):  # (was "None: not a sentencepiece model (damaged or cut off?); fetch it again": no file, the wrong cause)
    space = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    specials = [{"id": i, "content": c, "special": True} for i, c in enumerate(("<unk>", "<s>", "</s>"))]
    (d := ctx.tmp / "tok").mkdir()
    (d / "tokenizer.json").write_text(json.dumps({"added_tokens": specials, "pre_tokenizer": space, "decoder": space,
                                                  "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": True,
                                                            "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2}, "merges": []}}))
    tokenizer.load_tokenizer(str(d))


@case("--resume: a line of metrics.jsonl that is not a record", SystemExit, "metrics.jsonl, line 1 is not a record")
def _(ctx):
    log = checkpointed(ctx) / "checkpoint" / "metrics.jsonl"       # the log --resume reads: the checkpoint's
    log.write_text("not json\n" + log.read_text())
    run(ctx, "--max-steps", "2", "--resume")


@case("--resume: truncated optimizer.pt", SystemExit, "optimizer.pt is damaged")
def _(ctx):
    path = checkpointed(ctx) / "checkpoint" / "optimizer.pt"
    path.write_bytes(path.read_bytes()[:200])
    run(ctx, "--max-steps", "2", "--resume")


@case("--resume: adapter lost its extras", SystemExit, "lorasp_extras.safetensors is missing")
def _(ctx):
    os.remove(checkpointed(ctx) / "checkpoint" / "adapter" / EXTRAS_FILE)
    run(ctx, "--max-steps", "2", "--resume")


@case("NaN before any checkpoint", SystemExit, "stopped without saving; this run had saved no checkpoint yet")
def _(ctx):
    fault_at_loss_call(ctx.mp, 3, "nan")
    run(ctx)


@case("NaN before this run's first save, over an earlier run's checkpoint: not called this run's", SystemExit,
      "stopped without saving; this run had saved no checkpoint yet")
def _(ctx):
    run(ctx, "--max-steps", "2")                               # an earlier run, finished: OUT/checkpoint is its
    ctx.capsys.readouterr()
    fault_at_loss_call(ctx.mp, 3, "nan")
    try:
        run(ctx, "--lr", "1e-3")
    finally:                                                   # and the run said so as it started
        assert "checkpoint); this one starts afresh, replacing its checkpoint at its first save" in \
            ctx.capsys.readouterr().out


@case("NaN after a checkpoint", SystemExit, "the last good checkpoint is kept in")
def _(ctx):
    fault_at_loss_call(ctx.mp, 9, "nan")
    run(ctx, "--save-every", "2")


@case("config.json rms_norm_eps -1 via train.py", SystemExit, "config.json: rms_norm_eps = -1 must be > 0")
def _(ctx):
    shutil.copytree(ctx.tiny[0], ctx.tmp / "m")
    edit_json(ctx.tmp / "m" / "config.json", rms_norm_eps=-1)
    train.main(flags((str(ctx.tmp / "m"), ctx.tiny[1]), ctx.tmp / "out"))


@case("huge row: cut before it is tokenized whole", None)
def _(ctx):
    tok, seen = tokenizer.load_tokenizer(ctx.tiny[0]), []
    encode = tok.encode
    tok.encode = lambda text, *a, **k: seen.append(len(text)) or encode(text, *a, **k)
    long_answer = {"instruction": "Count the words.", "input": "", "output": "cat dog " * 2_000_000}  # 16 MB
    long_question = {"instruction": "Count the words.", "input": "cat dog " * 2_000_000, "output": "many"}
    examples, cut = data.tokenize_records([long_answer, long_question, *data.demo_records(3)], tok, 256)
    assert cut == 2 and len(examples) == 4 and max(seen) < 20_000         # the long question: no room for an answer
    whole = encode(data.alpaca_prompt(long_answer)) + encode("cat dog " * 500, bos=False, after=True)
    assert examples[0]["input_ids"] == whole[:256]     # the same first 256 tokens as the whole text's


# ----------------------------------------------------------------------------------------------------
# 3. Checkpoint files: safetensors by hand, shards, pickles, configs, weights

F32x2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
case("safetensors: overlapping tensors", ValueError, "'b' starts at data byte 4, expected 8 (overlaps")(
    lambda ctx: load_safetensors(raw_safetensors(ctx.tmp / "x.safetensors", {
        "a": F32x2, "b": dict(F32x2, data_offsets=[4, 12])}, bytes(12))))
case("safetensors: two tensors on the same bytes", ValueError, "expected 8 (overlaps the tensor before it)")(
    lambda ctx: load_safetensors(raw_safetensors(ctx.tmp / "x.safetensors", {"a": F32x2, "b": F32x2}, bytes(8))))
case("safetensors: a gap", ValueError, "'b' starts at data byte 12, expected 8 (a gap before it)")(
    lambda ctx: load_safetensors(raw_safetensors(ctx.tmp / "x.safetensors", {
        "a": F32x2, "b": dict(F32x2, data_offsets=[12, 20])}, bytes(20))))
case("safetensors: bytes past the last tensor", ValueError, "4 bytes after the last tensor that no tensor covers")(
    lambda ctx: load_safetensors(raw_safetensors(ctx.tmp / "x.safetensors", {"a": F32x2}, bytes(12))))
case("safetensors: runs past the data", ValueError, "truncated: tensor 'a' ends at byte")(
    lambda ctx: load_safetensors(raw_safetensors(ctx.tmp / "x.safetensors", {"a": F32x2}, bytes(4))))
case("safetensors: a 4 TB tensor in a small file", ValueError, "truncated: tensor 'a' ends at byte 4398046511")(
    lambda ctx: load_safetensors(raw_safetensors(ctx.tmp / "x.safetensors", {
        "a": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 4 << 40]}}, bytes(8))))
case("safetensors: negative dimensions", ValueError, "tensor 'a' has an unsupported or malformed header entry")(
    lambda ctx: load_safetensors(raw_safetensors(ctx.tmp / "x.safetensors", {"a": dict(F32x2, shape=[-2, -1])},
                                                 bytes(8))))
case("safetensors: unknown dtype", ValueError, "tensor 'a' has an unsupported or malformed header entry")(
    lambda ctx: load_safetensors(raw_safetensors(ctx.tmp / "x.safetensors", {"a": dict(F32x2, dtype="F128")},
                                                 bytes(8))))
case("safetensors: bytes do not match the shape", ValueError, "'a' has 8 bytes for shape [3] F32")(
    lambda ctx: load_safetensors(raw_safetensors(ctx.tmp / "x.safetensors", {"a": dict(F32x2, shape=[3])},
                                                 bytes(8))))
case("safetensors: header longer than the file", ValueError, "corrupt safetensors header (says 1000000000 bytes")(
    lambda ctx: load_safetensors(records_file(ctx, struct.pack("<Q", 10**9) + b"{}", "x.safetensors")))
case("safetensors: header not JSON", ValueError, "corrupt safetensors header")(
    lambda ctx: load_safetensors(records_file(ctx, struct.pack("<Q", 8) + b"{not js}", "x.safetensors")))
case("safetensors: not even 8 bytes", ValueError, "not a safetensors file (only 3 bytes)")(
    lambda ctx: load_safetensors(records_file(ctx, b"abc", "x.safetensors")))


def sharded(ctx, name):
    d = small_model(ctx.tmp / "m")
    os.replace(ctx.tmp / "m" / "model.safetensors", ctx.tmp / "m" / "model-00001-of-00001.safetensors")
    json.dump({"weight_map": {"model.embed_tokens.weight": name}}, open(ctx.tmp / "m" /
                                                                       "model.safetensors.index.json", "w"))
    return load_pretrained(d)


case("shard index names ../x", ValueError, "names '../model-00001-of-00001.safetensors', outside")(
    lambda ctx: sharded(ctx, "../model-00001-of-00001.safetensors"))
case("shard index names an absolute path", ValueError, "names '/etc/passwd', outside")(
    lambda ctx: sharded(ctx, "/etc/passwd"))


@case("pytorch_model.bin.index.json names ../x.bin (a .bin checkpoint's index, read as the safetensors one)",
      ValueError, "pytorch_model.bin.index.json names '../x.bin', outside")
def _(ctx):
    d = small_model(ctx.tmp / "m")
    torch.save(load_safetensors(os.path.join(d, "model.safetensors")), ctx.tmp / "x.bin")  # (there, outside)
    os.remove(os.path.join(d, "model.safetensors"))
    (ctx.tmp / "m" / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"lm_head.weight":
                                                                                         "../x.bin"}}))
    load_pretrained(d)


@case("pytorch_model.bin whose zip members are named ../../x (a crafted archive): refused, nothing written", ValueError,
      "pytorch_model.bin: cannot be read as a PyTorch checkpoint of tensors (RuntimeError")
def _(ctx):  # (torch.load reads members by name and extracts nothing; a member outside its archive's folder: none)
    d = small_model(ctx.tmp / "m")
    torch.save(load_safetensors(os.path.join(d, "model.safetensors")), ctx.tmp / "good.bin")
    os.remove(os.path.join(d, "model.safetensors"))
    with zipfile.ZipFile(ctx.tmp / "good.bin") as good, \
            zipfile.ZipFile(ctx.tmp / "m" / "pytorch_model.bin", "w") as z:
        for member in good.infolist():
            z.writestr(member.filename.replace("good/", "../../trav/", 1), good.read(member))
    try:
        load_pretrained(d)
    finally:
        assert not os.path.exists(ctx.tmp / "trav") and not os.path.exists(ctx.tmp.parent / "trav")


@case("pytorch_model.bin whose tensors share one storage (k_proj and v_proj halves of one, up_proj a transposed view): "
      "each loads its own values", None)
def _(ctx):  # (read_tensors copies each out of the mapped file and hands its pages back: the other's stay readable)
    d = small_model(ctx.tmp / "m")
    sd = load_safetensors(os.path.join(d, "model.safetensors"))
    os.remove(os.path.join(d, "model.safetensors"))
    both = torch.randn(32, 32)                                 # (k_proj, v_proj: (16, 32) each, n_kv_head 2 x 8)
    up = torch.randn(32, 64).t()                               # (64, 32), strides (1, 64)
    sd |= {"model.layers.0.self_attn.k_proj.weight": both[:16], "model.layers.0.self_attn.v_proj.weight": both[16:],
           "model.layers.0.mlp.up_proj.weight": up}
    torch.save(sd, ctx.tmp / "m" / "pytorch_model.bin")
    model = load_pretrained(d)
    for name, want in (("k_proj", both[:16]), ("v_proj", both[16:])):
        assert torch.equal(model.get_parameter(f"model.layers.0.self_attn.{name}.weight"), want), name
    assert torch.equal(model.get_parameter("model.layers.0.mlp.up_proj.weight"), up)
case("shard index names a missing shard", FileNotFoundError, "shard model-00002-of-00002.safetensors named in "
     "model.safetensors.index.json is missing")(lambda ctx: sharded(ctx, "model-00002-of-00002.safetensors"))


@case("shards named .SAFETENSORS (index and files)", ValueError,  # (was "not a PyTorch checkpoint ... neither")
      "model-00001-of-00001.SAFETENSORS: a safetensors file (its header) under another name")
def _(ctx):
    d = small_model(ctx.tmp / "m")
    os.replace(ctx.tmp / "m" / "model.safetensors", ctx.tmp / "m" / "model-00001-of-00001.SAFETENSORS")
    names = checkpoint.read_safetensors_header(ctx.tmp / "m" / "model-00001-of-00001.SAFETENSORS")[0]
    (ctx.tmp / "m" / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: "model-00001-of-00001.SAFETENSORS" for k in names}}))
    return load_pretrained(d)


def two_shards(ctx, indexed):
    """The small model's tensors in two shards, the index naming those of the first `indexed` tensors' shard only."""
    d = small_model(ctx.tmp / "m")
    sd = load_safetensors(os.path.join(d, "model.safetensors"))
    os.remove(os.path.join(d, "model.safetensors"))
    names = sorted(sd)
    for f, keys in (("model-00001-of-00002.safetensors", names[:2]), ("model-00002-of-00002.safetensors", names[2:])):
        save_safetensors({k: sd[k] for k in keys}, os.path.join(d, f))
    json.dump({"weight_map": {k: "model-00001-of-00002.safetensors" for k in names[:indexed]}},
              open(os.path.join(d, "model.safetensors.index.json"), "w"))
    return load_pretrained(d)


case("shard index leaves out a shard the folder holds", ValueError,  # (was "N tensors missing", naming no file)
     "model-00002-of-00002.safetensors is in the folder but model.safetensors.index.json does not name it, so it was "
     "not read (it holds")(lambda ctx: two_shards(ctx, 2))
case("shard index with an empty weight_map", ValueError,
     "model.safetensors.index.json: its weight_map is empty, naming no shard to read")(lambda ctx: two_shards(ctx, 0))


@case("shard index is not an index", ValueError, "model.safetensors.index.json: not a shard index")
def _(ctx):
    d = small_model(ctx.tmp / "m")
    (ctx.tmp / "m" / "model.safetensors.index.json").write_text('{"weight_map": ["a"]}')
    os.remove(ctx.tmp / "m" / "model.safetensors")             # (beside it, the single file loads first)
    load_pretrained(d)


@case("weight file: a symlink out of the model folder", ValueError, "is a symlink to")
def _(ctx):
    d = small_model(ctx.tmp / "m")
    os.makedirs(ctx.tmp / "elsewhere")
    os.replace(ctx.tmp / "m" / "model.safetensors", ctx.tmp / "elsewhere" / "model.safetensors")
    os.symlink(ctx.tmp / "elsewhere" / "model.safetensors", ctx.tmp / "m" / "model.safetensors")
    load_pretrained(d)


class Payload:
    """Unpickling this would create a folder: weights_only=True must refuse to run it."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@case("pytorch_model.bin with a pickle payload: refused, never run, and said why (was torch's advice to load it with "
      "weights_only=False, which runs it)", ValueError, "pytorch_model.bin: cannot be read as a PyTorch checkpoint of "
      "tensors (UnpicklingError: its pickle calls posix.mkdir, which builds no tensor; lorasp reads pickles with "
      "torch.load(weights_only=True), which never runs such a call")
def _(ctx):
    d = small_model(ctx.tmp / "m")
    os.remove(ctx.tmp / "m" / "model.safetensors")
    torch.save({"model.embed_tokens.weight": Payload(str(ctx.tmp / "pwned"))}, ctx.tmp / "m" / "pytorch_model.bin")
    try:
        load_pretrained(d)
    finally:
        assert not os.path.exists(ctx.tmp / "pwned")


@case("config.json: a key given twice with other values (json kept the last without a word)", ValueError,
      "m/config.json: key 'num_hidden_layers' is given twice in an object, as 7 and then 1: JSON readers keep the last "
      "without a word; delete the one not meant")
def _(ctx):
    d = small_model(ctx.tmp / "m")
    text = (ctx.tmp / "m" / "config.json").read_text()
    (ctx.tmp / "m" / "config.json").write_text(text.replace('"num_hidden_layers"', '"num_hidden_layers": 7, '
                                                            '"num_hidden_layers"'))
    load_pretrained(d)


@case("config.json: a key given twice with the same value: one meaning, loaded", None)
def _(ctx):
    d = small_model(ctx.tmp / "m")
    text = (ctx.tmp / "m" / "config.json").read_text()
    (ctx.tmp / "m" / "config.json").write_text(text.replace('"num_hidden_layers"', '"num_hidden_layers": 1, '
                                                            '"num_hidden_layers"'))
    assert load_pretrained(d).config.n_layer == 1


@case("config.json: a Llama's pad_token_id true (was no padding row; transformers' padding row 1, Python's True)",
      ValueError, "m/config.json: pad_token_id = True must be a token id (an integer) or null")
def _(ctx):
    d = small_model(ctx.tmp / "m")
    edit_json(ctx.tmp / "m" / "config.json", pad_token_id=True)
    load_pretrained(d)


@case("spiece.model empty (a download that wrote nothing): was sentencepiece's \"unk is not defined\", no file",
      ValueError, "t5/spiece.model: not a sentencepiece model (damaged or cut off?); fetch it again")
def _(ctx):
    (ctx.tmp / "t5").mkdir()
    (ctx.tmp / "t5" / "spiece.model").write_bytes(b"")
    tokenizer.load_tokenizer(ctx.tmp / "t5")


for dtype, fragment in [("bf16", "dtype 'bf16': give a floating-point torch dtype (torch.bfloat16) or its name "
                                 "('bfloat16'), or None / 'auto'"),  # (AttributeError: module 'torch' has no ...)
                        (torch.int8, "dtype torch.int8: give a floating-point")]:  # (a TypeError of torch.finfo)
    case(f"load_pretrained(dtype={dtype!r})", ValueError, fragment)(
        lambda ctx, dtype=dtype: load_pretrained(small_model(ctx.tmp / "m"), dtype=dtype))


@case("load_pretrained(dtype='auto') is transformers' 'auto': config.json's dtype", None)
def _(ctx):  # (was AttributeError: module 'torch' has no attribute 'auto')
    d = small_model(ctx.tmp / "m")
    edit_json(os.path.join(d, "config.json"), torch_dtype="bfloat16")
    assert next(load_pretrained(d, dtype="auto").parameters()).dtype == torch.bfloat16


@case("checkpoint of mixed dtypes (bf16 linears, fp32 norms) runs with dtype=None", None)
def _(ctx):
    d = small_model(ctx.tmp / "m")
    sd = load_safetensors(str(ctx.tmp / "m" / "model.safetensors"))
    save_safetensors({k: t if "norm" in k else t.bfloat16() for k, t in sd.items()},
                     ctx.tmp / "m" / "model.safetensors")
    m = load_pretrained(d)
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}       # one dtype: the first tensor's
    logits = m(torch.randint(0, 64, (1, 5)))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def poisoned(ctx, value, quantize=None):
    d = small_model(ctx.tmp / "m")
    sd = load_safetensors(str(ctx.tmp / "m" / "model.safetensors"))
    sd["model.layers.0.mlp.up_proj.weight"][3, 5:7] = value
    save_safetensors(sd, ctx.tmp / "m" / "model.safetensors")
    return load_pretrained(d, quantize=quantize)


case("NaN weights in a dense checkpoint", ValueError, "'model.layers.0.mlp.up_proj.weight' (shape [64, 32]) has 2 "
     "NaN and 0 Inf values, first at index [(3, 5), (3, 6)]")(lambda ctx: poisoned(ctx, float("nan")))
case("Inf weights in a dense checkpoint", ValueError, "has 0 NaN and 2 Inf values")(
    lambda ctx: poisoned(ctx, float("inf")))
case("NaN weights loaded as NF4", ValueError, "tensor 'model.layers.0.mlp.up_proj.weight': weight of shape [64, "
     "32] has 2 NaN")(lambda ctx: poisoned(ctx, float("nan"), quantize="nf4"))


# Values: NaN and Inf a forward makes of finite weights (float16's range), an adapter's, a perplexity past float64's
# range, an adapter that changes nothing or rounds away in the export's dtype

def loud(ctx):
    """The tiny fixture with its final norm weight 60000 (finite in float16): its logits pass float16's range and
    reach the millions in float32 (a mean NLL far past 709.78 nats, where exp passes float64's range)."""
    base = shutil.copytree(ctx.tiny[0], ctx.tmp / "loud")
    weights = load_safetensors(str(base / "model.safetensors"))
    weights["model.norm.weight"].fill_(60000.0)
    save_safetensors(weights, str(base / "model.safetensors"))
    return str(base)


case("generate.py: --dtype float16 where the activations pass its range (greedy read the NaN logits as token 0)",
     SystemExit, "error: generate: the logits of new token 1 hold 455 NaN and 1 Inf values (the model computes in "
     "float16): its activations passed float16's range (max 65504); give --dtype bfloat16 or float32")(
    lambda ctx: generate_command(ctx, "--model", loud(ctx), "--dtype", "float16", "--max-new-tokens", "4",
                                 "--prompt", "The cat"))  # (printed "The cat ⁇ ⁇ ⁇ ⁇", exit 0; sampled: a traceback)
case("eval.py: --task perplexity in float16 where the activations pass its range (was perplexity nan, exit 0)",
     SystemExit, "error: perplexity: the loss holds 1 NaN and 0 Inf values (the model computes in float16): its "
     "activations passed float16's range")(  # (and a JSON line {"perplexity": NaN}, which JSON does not allow)
    lambda ctx: E.main(["--task", "perplexity", "--model", loud(ctx), "--data", ctx.tiny[1], "--dtype", "fp16",
                        "--seq-len", "200"]))


@case("eval.py: a perplexity past float64's range (mean NLL over 709.78 nats) is inf, not an OverflowError traceback",
      None)
def _(ctx):  # (was "OverflowError: math range error" from math.exp, a traceback)
    E.main(["--task", "perplexity", "--model", (d := loud(ctx)), "--data", ctx.tiny[1], "--dtype", "fp32",
            "--seq-len", "200"])
    assert json.loads(ctx.capsys.readouterr().out.strip().splitlines()[-1])["perplexity"] == math.inf
    tok, model = tokenizer.load_tokenizer(d), load_pretrained(d)
    ids = tok.encode(data.alpaca_prompt(json.load(open(ctx.tiny[1]))[0]))
    with torch.no_grad():                                               # one record's mean NLL, computed directly
        assert model(torch.tensor([ids]), labels=torch.tensor([ids])).item() > 709.79


def peft_copy(ctx, name="a"):
    """The shared run's adapter as a PEFT adapter (its LoRA-SP extras left out) and its tensors, to edit."""
    shutil.copytree(ctx.shared.checkpoint / "adapter", d := ctx.tmp / name)
    os.remove(d / EXTRAS_FILE)
    return d, load_safetensors(str(d / "adapter_model.safetensors"))


def poisoned_adapter(ctx, value):
    d, sd = peft_copy(ctx)
    sd["base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"][0, 0] = value
    save_safetensors(sd, str(d / "adapter_model.safetensors"))
    return load_adapter(load_pretrained(ctx.tiny[0]), d, peft=True)


case("adapter_model.safetensors with an Inf in a lora_B (was perplexity nan, exit 0)", ValueError,
     "adapter_model.safetensors: tensor 'base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight' (shape [32, "
     "16]) has 0 NaN and 1 Inf values, first at index [(0, 0)]")(lambda ctx: poisoned_adapter(ctx, math.inf))
case("adapter_model.safetensors with a NaN in a lora_B (was: 'lorasp_extras.safetensors and adapter_model.safetensors "
     "disagree', of a PEFT adapter without that file)", ValueError, "q_proj.lora_B.weight' (shape [32, 16]) has 1 NaN "
     "and 0 Inf values")(lambda ctx: poisoned_adapter(ctx, math.nan))
for alpha in (0, math.nan):
    case(f"adapter_config.json: lora_alpha {alpha} (the error named no file)", ValueError,
         f"adapter_config.json: r = 16, lora_alpha = {alpha}; need an integer r >= 1 and a finite, non-zero number "
         "lora_alpha")(  # (was "need an integer r >= 1 and a finite alpha != 0 ...; got r=16, alpha=0": which file?)
        lambda ctx, alpha=alpha: (edit_json((d := peft_copy(ctx)[0]) / "adapter_config.json", lora_alpha=alpha),
                                  load_adapter(load_pretrained(ctx.tiny[0]), d, peft=True)))


@case("eval.py, generate.py, export.py: an adapter whose lora_B are all 0 (it trained nothing) is said to score as "
      "the base", None)
def _(ctx):  # (was scored, answered with and exported as the base model without a word)
    d, sd = peft_copy(ctx)
    save_safetensors({k: t.zero_() if ".lora_B." in k else t for k, t in sd.items()},
                     str(d / "adapter_model.safetensors"))
    said = f"warning: --adapter {d} changes no weight of --model {ctx.tiny[0]}: (alpha/r) B A is 0 in each of its 14 "
    scores = []
    for adapter in ([], ["--adapter", str(d)], ["--adapter", str(ctx.shared.checkpoint / "adapter")]):
        E.main(["--task", "perplexity", "--model", ctx.tiny[0], "--data", ctx.tiny[1], "--seq-len", "200", *adapter])
        out = ctx.capsys.readouterr()
        scores.append(json.loads(out.out.strip().splitlines()[-1])["perplexity"])
        assert (said in out.err) == (adapter[1:] == [str(d)]), out.err
    assert scores[1] == scores[0] != scores[2]                          # the base's perplexity, the trained one's not
    generate_command(ctx, "--model", ctx.tiny[0], "--adapter", str(d), "--max-new-tokens", "2")
    assert said in ctx.capsys.readouterr().err
    export_main(ctx, "--model", ctx.tiny[0], "--adapter", d, "--out", ctx.tmp / "x", "--dtype", "bf16")
    assert said not in (err := ctx.capsys.readouterr().err) and err.count("warning: ") == 1 and "changes no weight " \
        "entry in bfloat16 or float32 in any of its 14 layers" in err, err      # (export.py's alone: it said both)


@case("export.py: --dtype bf16 where (alpha/r) B A rounds away in nearly every entry float32 keeps: said, with counts",
      None)
def _(ctx):  # (was written without a word: 22 of 17,495 changed entries left, the export all but the base)
    d, sd = peft_copy(ctx)
    save_safetensors({k: t * 1e-6 if ".lora_B." in k else t for k, t in sd.items()},
                     str(d / "adapter_model.safetensors"))
    base, counts = load_safetensors(ctx.tiny[0] + "/model.safetensors"), {}
    for dtype in ("fp32", "bf16", "fp16"):
        export_main(ctx, "--model", ctx.tiny[0], "--adapter", d, "--out", ctx.tmp / dtype, "--dtype", dtype)
        got = load_safetensors(str(ctx.tmp / dtype / "model.safetensors"))
        counts[dtype] = sum(int((got[k] != base[k].to(got[k].dtype)).sum()) for k in base)   # the files' own
        err = ctx.capsys.readouterr().err
        warned = f"changes {counts[dtype]:,} weight entries in {dict(bf16='bfloat16', fp16='float16')[dtype]}, " \
            f"{counts['fp32']:,} in float32: --dtype fp32 keeps them" if dtype != "fp32" else "weight entries in"
        assert (warned in err) == (counts[dtype] < 0.01 * counts["fp32"]), (dtype, counts, err)  # (the files' counts)
    assert 0 < counts["bf16"] < 0.01 * counts["fp32"], counts
    export_main(ctx, "--model", ctx.tiny[0], "--adapter", ctx.shared.checkpoint / "adapter", "--out", ctx.tmp / "t",
                "--dtype", "bf16")                                      # a trained adapter: no warning
    assert "weight entries in" not in ctx.capsys.readouterr().err


def with_config(ctx, **changes):
    d = small_model(ctx.tmp / "m")
    edit_json(ctx.tmp / "m" / "config.json", **changes)
    return load_pretrained(d)


case("config.json: rms_norm_eps -1", ValueError, "config.json: rms_norm_eps = -1 must be > 0")(
    lambda ctx: with_config(ctx, rms_norm_eps=-1))
case("config.json: 0 heads", ValueError, "config.json: num_attention_heads = 0 must be an integer >= 1")(
    lambda ctx: with_config(ctx, num_attention_heads=0))
case("config.json: heads as a string", ValueError, "config.json: num_attention_heads = '4' must be an integer")(
    lambda ctx: with_config(ctx, num_attention_heads="4"))
case("config.json: width not a multiple of heads", ValueError, "hidden_size = 32 is not a multiple of "
     "num_attention_heads = 5")(lambda ctx: with_config(ctx, num_attention_heads=5, num_key_value_heads=5))
case("config.json: a field missing", ValueError, "config.json: field 'intermediate_size' is missing")(
    lambda ctx: with_config(ctx, intermediate_size=KeyError))
case("config.json: hidden_size null", ValueError, "config.json: hidden_size = None must be an integer >= 1")(
    lambda ctx: with_config(ctx, hidden_size=None))  # (was: TypeError: unsupported operand type(s) for /: 'NoneType'
# and 'int', naming neither file nor field)
case("config.json: unsupported model_type", NotImplementedError, "model_type 'mamba' is not supported")(
    lambda ctx: with_config(ctx, model_type="mamba"))
case("config.json: a Qwen3 mixture of experts (qwen3_moe), not the dense Qwen3", NotImplementedError,
     "config.json: model_type 'qwen3_moe' is not supported (llama, mistral, qwen2, qwen3, ")(
    lambda ctx: with_config(ctx, model_type="qwen3_moe", num_experts=8, num_experts_per_tok=2))
case("config.json: a Qwen3 with an activation lorasp does not implement", NotImplementedError,
     "config.json: hidden_act = 'gelu' is not supported (supported: 'silu', 'swish')")(
    lambda ctx: with_config(ctx, model_type="qwen3", hidden_act="gelu"))
case("config.json: a Qwen3 with attention dropout", NotImplementedError,
     "config.json: attention_dropout = 0.1 is not supported")(
    lambda ctx: with_config(ctx, model_type="qwen3", attention_dropout=0.1))
case("config.json: a Qwen3 whose checkpoint has no q/k norms (a Qwen2's tensors)", ValueError,
     "model.safetensors: 2 tensors missing from the checkpoint: model.layers.0.self_attn.q_norm.weight, "
     "model.layers.0.self_attn.k_norm")(
    lambda ctx: with_config(ctx, model_type="qwen3", head_dim=8))
case("config.json: Llama dynamic NTK rope_scaling", NotImplementedError, "config.json: rope_type = 'dynamic' is not "
     "supported (supported: 'default', 'linear', 'llama3', 'yarn')")(
    lambda ctx: with_config(ctx, rope_scaling={"factor": 4.0, "type": "dynamic"}))
case("config.json: Llama partial_rotary_factor", NotImplementedError, "config.json: partial_rotary_factor = 0.5 is not "
     "supported")(lambda ctx: with_config(ctx, rope_parameters={"rope_type": "default", "partial_rotary_factor": 0.5}))
case("config.json: llama3 rope_scaling without low_freq_factor", ValueError, "config.json: field "
     "'rope_scaling.low_freq_factor' is missing")(
    lambda ctx: with_config(ctx, rope_scaling={"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0}))
case("config.json: linear rope_scaling factor as a string", ValueError, "config.json: rope_scaling.factor = '4' must be "
     "a number > 0")(lambda ctx: with_config(ctx, rope_scaling={"rope_type": "linear", "factor": "4"}))
case("config.json: odd head_dim", ValueError, "config.json: head_dim = 7 must be even")(
    lambda ctx: with_config(ctx, head_dim=7))
case("config.json: Llama attention_dropout 0.1 (would train without it)", NotImplementedError,
     "config.json: attention_dropout = 0.1 is not supported (supported: 0.0, None)")(
    lambda ctx: with_config(ctx, attention_dropout=0.1))
case("config.json: Llama hidden_act gelu", NotImplementedError, "config.json: hidden_act = 'gelu' is not supported "
     "(supported: 'silu', 'swish')")(lambda ctx: with_config(ctx, hidden_act="gelu"))


def with_t5_config(ctx, **changes):
    save_pretrained(build_model("t5-tiny"), ctx.tmp / "t")
    edit_json(ctx.tmp / "t" / "config.json", **changes)
    return load_pretrained(ctx.tmp / "t")


def with_bert_config(ctx, **changes):
    save_pretrained(build_model("bert-tiny"), ctx.tmp / "b")
    edit_json(ctx.tmp / "b" / "config.json", **changes)
    return load_pretrained(ctx.tmp / "b")


def with_gpt2_config(ctx, **changes):
    save_pretrained(build_model(GPT2Config(vocab_size=10, n_positions=8, n_layer=1, n_embd=8, n_head=2)), ctx.tmp / "g")
    edit_json(ctx.tmp / "g" / "config.json", **changes)
    return load_pretrained(ctx.tmp / "g")


case("config.json: GPT-2 attn_pdrop 0 beside resid_pdrop 0.1 (was trained with 0.1)", NotImplementedError,
     "config.json: attn_pdrop = 0.0 is not supported (supported: 0.1)")(
    lambda ctx: with_gpt2_config(ctx, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.0))
case("config.json: T5 eos_token_id 2 (beam search stops at 1)", NotImplementedError,
     "config.json: eos_token_id = 2 is not supported (supported: 1, None)")(
    lambda ctx: with_t5_config(ctx, eos_token_id=2))
case("config.json: T5 pad_token_id 3 (also the decoder's start)", NotImplementedError,
     "config.json: pad_token_id = 3 is not supported (supported: 0, None)")(
    lambda ctx: with_t5_config(ctx, pad_token_id=3))
case("config.json: T5 feed_forward_proj null", ValueError, "config.json: feed_forward_proj = None must be a string "
     "('relu', 'gated-gelu', ...)")(lambda ctx: with_t5_config(ctx, feed_forward_proj=None))  # (was an AttributeError:
# 'NoneType' object has no attribute 'split', naming neither file nor field)
case("config.json: a GPTQ checkpoint's quantization_config", NotImplementedError,
     "config.json: quantization_config (quant_method 'gptq') is not supported: load the unquantized checkpoint")(
    lambda ctx: with_config(ctx, quantization_config={"bits": 4, "group_size": 128, "quant_method": "gptq"}))
BNB = dict(quant_method="bitsandbytes", load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)


def bnb_model(ctx, edit=lambda sd: None, qc=True, **changes):
    """small_model as a bitsandbytes 4-bit checkpoint (an NF4 model's state dict is its keys), loaded: config.json's
    quantization_config changed by changes (None: the field removed; qc=False: none at all), its tensors by edit."""
    d = small_model(ctx.tmp / "m")
    sd = load_pretrained(d, "nf4").state_dict()
    edit(sd)
    save_safetensors(sd, os.path.join(d, "model.safetensors"))
    if qc:
        edit_json(os.path.join(d, "config.json"), quantization_config={
            k: v for k, v in {**BNB, **changes}.items() if v is not None})
    return load_pretrained(d, "nf4")


def quant_state(sd, name, **changes):
    """sd with the quant state of weight `name` changed."""
    key = f"{name}.quant_state.bitsandbytes__nf4"
    sd[key] = torch.tensor(list(json.dumps({**json.loads(bytes(sd[key].tolist())), **changes}).encode()),
                           dtype=torch.uint8)


UP = "model.layers.0.mlp.up_proj.weight"
case("config.json: a bitsandbytes FP4 checkpoint", NotImplementedError,
     "config.json: quantization_config.bnb_4bit_quant_type = 'fp4': only NF4 is supported")(
    lambda ctx: bnb_model(ctx, bnb_4bit_quant_type="fp4"))
case("config.json: bitsandbytes 4-bit without bnb_4bit_quant_type (transformers' default: FP4)", NotImplementedError,
     "quantization_config.bnb_4bit_quant_type = 'fp4': only NF4")(lambda ctx: bnb_model(ctx, bnb_4bit_quant_type=None))
case("config.json: a bitsandbytes 8-bit checkpoint", NotImplementedError,
     "config.json: quantization_config.load_in_8bit = true: bitsandbytes' 8-bit weights (LLM.int8")(
    lambda ctx: bnb_model(ctx, load_in_4bit=False, load_in_8bit=True))
case("config.json: bitsandbytes with load_in_4bit false and no 8-bit", ValueError,
     "quant_method bitsandbytes but load_in_4bit = False")(lambda ctx: bnb_model(ctx, load_in_4bit=False))
case("config.json: bnb_4bit_quant_storage not a dtype", NotImplementedError,
     "quantization_config.bnb_4bit_quant_storage = 'nibbles' is not a torch dtype")(
    lambda ctx: bnb_model(ctx, bnb_4bit_quant_storage="nibbles"))
case("config.json: bitsandbytes 4-bit, every tensor dense", ValueError,
     "config.json: quantization_config says bitsandbytes 4-bit, but no tensor carries the NF4 keys")(
    lambda ctx: with_config(ctx, quantization_config=BNB))
case("NF4 tensors (bitsandbytes' keys), config.json without quantization_config", ValueError,
     "config.json has no quantization_config, but its tensors are bitsandbytes NF4 weights (e.g. "
     "model.layers.0.mlp.down_proj.weight.absmax)")(lambda ctx: bnb_model(ctx, qc=False))
case("a bitsandbytes FP4 tensor in an NF4 checkpoint", NotImplementedError,
     f"tensor '{UP}.quant_state.bitsandbytes__fp4' is a bitsandbytes FP4 weight's")(
    lambda ctx: bnb_model(ctx, lambda sd: sd.update({f"{UP}.quant_state.bitsandbytes__fp4": sd.pop(
        f"{UP}.quant_state.bitsandbytes__nf4")})))
case("a bitsandbytes 8-bit tensor (SCB) in an NF4 checkpoint", NotImplementedError,
     "tensor 'model.layers.0.mlp.up_proj.SCB' is a bitsandbytes 8-bit (Linear8bitLt) weight's")(
    lambda ctx: bnb_model(ctx, lambda sd: sd.update({"model.layers.0.mlp.up_proj.SCB": torch.ones(64)})))
case("a bitsandbytes 4-bit checkpoint's block size 16", ValueError,
     f"model.safetensors: {UP}: unsupported quant state")(
    lambda ctx: bnb_model(ctx, lambda sd: quant_state(sd, UP, blocksize=16)))
case("a bitsandbytes 4-bit checkpoint's weight without its quant_map", ValueError,
     f"model.safetensors: NF4 state dict is missing ['{UP}.quant_map']")(
    lambda ctx: bnb_model(ctx, lambda sd: sd.pop(f"{UP}.quant_map")))
case("config.json: BERT classifier_dropout 1.5", ValueError, "config.json: classifier_dropout = 1.5 must be in [0, 1)")(
    lambda ctx: with_bert_config(ctx, classifier_dropout=1.5))
case("config.json: BERT initializer_range -0.02 (a fresh head's std)", ValueError,
     "config.json: initializer_range = -0.02 must be >= 0")(lambda ctx: with_bert_config(ctx, initializer_range=-0.02))
case("config.json: GPT-2 n_inner 0", ValueError, "config.json: n_inner = 0 must be an integer >= 1")(
    lambda ctx: with_gpt2_config(ctx, n_inner=0))
case("config.json: a Llama with is_causal false (transformers 5 attends both ways: an embedding model's)",
     NotImplementedError, "config.json: is_causal = False is not supported (supported: None, True)")(
    lambda ctx: with_config(ctx, is_causal=False))  # (was read nowhere: causal logits, 4.9 off transformers')
case("config.json: BERT with is_causal true (transformers 5 attends causally)", NotImplementedError,
     "config.json: is_causal = True is not supported (supported: None, False)")(
    lambda ctx: with_bert_config(ctx, is_causal=True))
case("config.json: GPT-2 scale_attn_weights \"false\", a string (was read as true: scaled)", ValueError,
     "config.json: scale_attn_weights = 'false' must be true or false")(
    lambda ctx: with_gpt2_config(ctx, scale_attn_weights="false"))
case("config.json: Llama tie_word_embeddings 0 (was read as untied; transformers refuses a non-bool)", ValueError,
     "config.json: tie_word_embeddings = 0 must be true or false")(lambda ctx: with_config(ctx, tie_word_embeddings=0))
case("config.json: GPT-2 num_attention_heads as a string (transformers reads it over n_head)", ValueError,
     "config.json: num_attention_heads = '2' must be an integer >= 1")(  # (was: n_head read, the alias not looked at)
    lambda ctx: with_gpt2_config(ctx, num_attention_heads="2"))
case("config.json: GPT-2 activation_function mish", NotImplementedError, "config.json: activation_function = 'mish' "
     "is not supported (supported: 'relu', 'gelu', 'gelu_python', 'gelu_new'")(
    lambda ctx: with_gpt2_config(ctx, activation_function="mish"))


@case("config.json: a list", ValueError, "config.json: expected a JSON object {...}, found a list")
def _(ctx):
    d = small_model(ctx.tmp / "m")
    (ctx.tmp / "m" / "config.json").write_text("[1, 2]")
    load_pretrained(d)


@case("config.json: not JSON", ValueError, "config.json, line 2: not valid JSON")
def _(ctx):
    d = small_model(ctx.tmp / "m")
    (ctx.tmp / "m" / "config.json").write_text('{"model_type": "llama",\n oops}')
    load_pretrained(d)


def config_for_commands(ctx, text=None, **changes):
    """A copy of the tiny fixture (tokenizer too) with config.json edited, or replaced by `text`: train.py and
    eval.py read it for their checks and memory plan (plan.model_config) before load_pretrained reads it."""
    shutil.copytree(ctx.tiny[0], ctx.tmp / "m")
    if text is None:
        edit_json(ctx.tmp / "m" / "config.json", **changes)
    else:
        (ctx.tmp / "m" / "config.json").write_text(text)
    return str(ctx.tmp / "m")


case("train.py: config.json with 0 heads (was ZeroDivisionError inside from_hf, read for the memory plan)",
     SystemExit, "config.json: num_attention_heads = 0 must be an integer >= 1")(
    lambda ctx: train.main(flags((config_for_commands(ctx, num_attention_heads=0), ctx.tiny[1]), ctx.tmp / "o")))
case("train.py: config.json not JSON (was: the parser's words, no file named)", SystemExit,
     "config.json, line 2: not valid JSON")(
    lambda ctx: train.main(flags((config_for_commands(ctx, '{"model_type": "llama",\n oops}'), ctx.tiny[1]),
                                 ctx.tmp / "o")))
@case("train.py: Meta params.json with multiple_of 0 (was ZeroDivisionError, read for the memory plan)", SystemExit,
      "params.json: multiple_of = 0 must be an integer >= 1")
def _(ctx):
    os.makedirs(ctx.tmp / "meta")
    torch.save({}, ctx.tmp / "meta" / "consolidated.00.pth")
    shutil.copy(os.path.join(ctx.tiny[0], "tokenizer.model"), ctx.tmp / "meta")
    (ctx.tmp / "meta" / "params.json").write_text('{"dim": 32, "n_layers": 1, "n_heads": 4, "vocab_size": 64, '
                                                  '"multiple_of": 0, "norm_eps": 1e-5}')
    train.main(flags((str(ctx.tmp / "meta"), ctx.tiny[1]), ctx.tmp / "o"))


case("train.py: config.json whose model_type is a list (was TypeError: unhashable type, read for the memory plan)",
     SystemExit, "config.json: model_type ['llama'] is not supported (llama, ")(
    lambda ctx: train.main(flags((config_for_commands(ctx, model_type=["llama"]), ctx.tiny[1]), ctx.tmp / "o")))


case("eval.py: config.json with hidden_size null (was TypeError inside from_hf)", SystemExit,
     "config.json: hidden_size = None must be an integer >= 1")(
    lambda ctx: E.main(["--task", "perplexity", "--model", config_for_commands(ctx, hidden_size=None), "--data",
                        ctx.tiny[1]]))


@case("Meta params.json without dim", ValueError, "params.json: field 'dim' is missing")
def _(ctx):
    os.makedirs(ctx.tmp / "meta")
    torch.save({}, ctx.tmp / "meta" / "consolidated.00.pth")
    (ctx.tmp / "meta" / "params.json").write_text('{"n_layers": 1}')
    load_pretrained(ctx.tmp / "meta")


def meta_with(ctx, **more):
    """A 1-layer Llama 3 in Meta's layout (params.json + consolidated.00.pth) with `more` in its params.json."""
    import transformers
    from test_model import write_meta
    c = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=192, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2)
    write_meta(transformers.LlamaForCausalLM(c), ctx.tmp, n_shards=1, llama3=True)
    edit_json(ctx.tmp / "params.json", **more)
    return load_pretrained(ctx.tmp)


case("Meta params.json: a Llama 4 key that changes the model (use_qk_norm)", NotImplementedError,
     "params.json: use_qk_norm = true: Meta's code (llama_models) computes another model with it")(
    lambda ctx: meta_with(ctx, use_qk_norm=True))  # (was read without it: another model's outputs, no word)
case("Meta params.json: a key no Meta reader knows (Mistral's sliding_window)", NotImplementedError,
     "params.json: sliding_window = 4096: a key lorasp does not know")(
    lambda ctx: meta_with(ctx, sliding_window=4096))
for field, value, fragment, was in [
        ("dim", 64.0, "dim = 64.0 must be an integer >= 1", "named config.json's hidden_size, a key params.json lacks"),
        ("multiple_of", True, "multiple_of = True must be an integer >= 1", "FFNs of multiple 1: Python's True"),
        ("n_kv_heads", 3, "n_heads = 4 is not a multiple of n_kv_heads = 3", "named config.json's keys"),
        ("ffn_dim_multiplier", 1e308, "ffn_dim_multiplier = 1e+308 makes FFNs of inf rows", "an OverflowError")]:
    case(f"Meta params.json: {field} {value!r} (was {was})", ValueError,
         f"params.json: its numbers do not describe a model ({fragment})")(
        lambda ctx, field=field, value=value: meta_with(ctx, **{field: value}))



# A layer count the files do not hold. The model is built (on the meta device) before a tensor is read: config.json's
# num_hidden_layers = 2**40 built until killed (fuzz30, over the real MiniLM's weights); now held against the tensor
# names first, where they cost no weight read (safetensors headers, a .bin's pickle or its index, Meta's .pth pickle)
HUGE = 2 ** 40
LAYERS = "config.json: num_hidden_layers = 1099511627776, but the checkpoint's tensors are of "


@case("a config.json asking for 2**40 layers over a 1-layer checkpoint (was a hang: building them)", ValueError,
      LAYERS + "1 layer: a config of another model? Set num_hidden_layers to 1")
def _(ctx):
    small_model(ctx.tmp)
    edit_json(ctx.tmp / "config.json", num_hidden_layers=HUGE)
    load_pretrained(ctx.tmp)


case("train.py: a config.json asking for 2**40 layers (was a hang: the memory plan built them)", SystemExit,
     LAYERS + "2 layers (0 to 1)")(
    lambda ctx: train.main(flags((config_for_commands(ctx, num_hidden_layers=HUGE), ctx.tiny[1]), ctx.tmp / "o")))


@case("GPT-2's config.json (the alias num_hidden_layers) short of the 2 layers its safetensors hold", ValueError,
      "config.json: num_hidden_layers = 1, but the checkpoint's tensors are of 2 layers (0 to 1)")
def _(ctx):  # (was: "tensor 'transformer.h.1.attn.c_attn.bias' is left over")
    save_pretrained(build_model(GPT2Config(vocab_size=10, n_positions=8, n_layer=2, n_embd=8, n_head=2)), ctx.tmp)
    edit_json(ctx.tmp / "config.json", n_layer=KeyError, num_hidden_layers=1)
    load_pretrained(ctx.tmp)


@case("a T5 config.json asking for 3 decoder layers over 2", ValueError,
      "config.json: num_decoder_layers = 3, but the checkpoint's tensors are of 2 layers (0 to 1)")
def _(ctx):  # (was: "13 tensors missing from the checkpoint: decoder.block.2.layer.0.SelfAttention.q.weight, ...")
    save_pretrained(build_model(T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_heads=4)), ctx.tmp)
    edit_json(ctx.tmp / "config.json", num_decoder_layers=3)
    load_pretrained(ctx.tmp)


def t5_decoder_unwritten(ctx, written):
    """A T5 of 2 encoder layers and 1 decoder layer, its config.json's num_decoder_layers deleted (KeyError) or null:
    transformers then builds num_layers' 2 decoder layers (was: "num_decoder_layers = 2 ... Set num_decoder_layers to
    1", naming a value the file does not hold)."""
    save_pretrained(build_model(T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_heads=4, num_layers=2,
                                         num_decoder_layers=1)), ctx.tmp)
    edit_json(ctx.tmp / "config.json", num_decoder_layers=written)
    load_pretrained(ctx.tmp)


case("a T5 config.json without num_decoder_layers (num_layers is used) over a decoder of 1 layer", ValueError,
     "config.json: num_decoder_layers (absent: num_layers = 2 is used), but the checkpoint's tensors are of 1 layer: "
     "add num_decoder_layers = 1 to config.json, or give the weights it describes")(
    lambda ctx: t5_decoder_unwritten(ctx, KeyError))
case("a T5 config.json with num_decoder_layers null (num_layers is used) over a decoder of 1 layer", ValueError,
     "config.json: num_decoder_layers (null: num_layers = 2 is used), but the checkpoint's tensors are of 1 layer: "
     "set num_decoder_layers = 1 in config.json")(lambda ctx: t5_decoder_unwritten(ctx, None))


@case("a BERT of 2**40 layers in .bin shards: named by their index's weight_map", ValueError,
      "config.json: num_hidden_layers = 1099511627776, but the checkpoint's tensors are of 2 layers (0 to 1)")
def _(ctx):
    state = build_model(EncoderConfig(vocab_size=16, n_layer=2, n_embd=8, n_head=2, n_ffn=16)).state_dict()
    shards = {f"pytorch_model-0000{i + 1}-of-00002.bin": dict(list(state.items())[i::2]) for i in range(2)}
    for name, part in shards.items():
        torch.save(part, ctx.tmp / name)
    (ctx.tmp / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"weight_map": {k: name for name, part in shards.items() for k in part}}))
    (ctx.tmp / "config.json").write_text(json.dumps(EncoderConfig(n_layer=HUGE).to_hf()))
    load_pretrained(ctx.tmp)


@case("a 1-layer config.json over a pytorch_model.bin of 2: named by its pickle (memory-mapped, no weight read)",
      ValueError, "config.json: num_hidden_layers = 1, but the checkpoint's tensors are of 2 layers (0 to 1)")
def _(ctx):  # (was: "tensor 'model.layers.1.self_attn.q_proj.weight' is left over")
    torch.save(build_model(LlamaConfig(n_layer=2)).state_dict(), ctx.tmp / "pytorch_model.bin")
    (ctx.tmp / "config.json").write_text(json.dumps(LlamaConfig(n_layer=1).to_hf()))
    load_pretrained(ctx.tmp)


case("Meta params.json asking for 2**40 layers (n_layers) over consolidated.00.pth's 1 (was a hang)", ValueError,
     "params.json: n_layers = 1099511627776, but the checkpoint's tensors are of 1 layer: a config of another model? "
     "Set n_layers to 1")(lambda ctx: meta_with(ctx, n_layers=HUGE))


@case("train.py: Meta params.json asking for 2**40 layers (was a hang: the memory plan built them)", SystemExit,
      "params.json: n_layers = 1099511627776, but the checkpoint's tensors are of 1 layer")
def _(ctx):
    with pytest.raises(ValueError):
        meta_with(ctx, n_layers=HUGE)                                  # (the row above's folder)
    shutil.copy(os.path.join(ctx.tiny[0], "tokenizer.model"), ctx.tmp)
    train.main(flags((str(ctx.tmp), ctx.tiny[1]), ctx.tmp / "o"))

def llama_vision_meta(ctx):
    """Llama 3.2 11B Vision's params.json (Meta's layout, tiny numbers) and a file with its text and vision tensors."""
    os.makedirs(ctx.tmp / "meta")
    (ctx.tmp / "meta" / "params.json").write_text(json.dumps(dict(
        dim=64, ffn_dim_multiplier=1.3, multiple_of=32, n_heads=4, n_kv_heads=2, n_layers=2, norm_eps=1e-5,
        rope_theta=500000.0, use_scaled_rope=True, vision_chunk_size=560, vision_max_num_chunks=4, vocab_size=256,
        vision_num_cross_attention_layers=1)))
    torch.save({"text_model.tok_embeddings.weight": torch.zeros(256, 64),
                "vision_model.vision_encoder.conv1._linear.weight": torch.zeros(64, 588)},
               ctx.tmp / "meta" / "consolidated.00.pth")
    return ctx.tmp / "meta"


VISION = ("params.json: vision_chunk_size, vision_max_num_chunks, vision_num_cross_attention_layers: a vision model "
          "(Llama 3.2 Vision), which lorasp does not support")
case("Meta params.json of Llama 3.2 Vision", NotImplementedError, VISION)(  # (was: "tensor ... is left over")
    lambda ctx: load_pretrained(llama_vision_meta(ctx)))
case("train.py: --model a Llama 3.2 Vision in Meta's layout", SystemExit, VISION)(  # (the plan: a text Llama's)
    lambda ctx: train.main(flags((str(llama_vision_meta(ctx)), ctx.tiny[1]), ctx.tmp / "out")))


@case("a folder holding two checkpoints: Meta's layout (a 2-layer model) and Hugging Face's (a 1-layer one)",
      ValueError, "holds two checkpoints: Meta's layout (params.json + consolidated.00.pth) and Hugging Face's "
      "(config.json + model.safetensors); transformers reads the second, Meta's code the first")
def _(ctx):  # (was Meta's, without a word: the 2-layer model, where transformers loads the 1-layer one)
    import transformers
    from test_model import write_meta
    c = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)
    write_meta(transformers.LlamaForCausalLM(c), ctx.tmp, n_shards=1, llama3=True)
    assert load_pretrained(ctx.tmp).config.n_layer == 2                     # Meta's alone, and config.json beside it:
    small_model(ctx.tmp / "hf")                                            # (a config.json alone: test_plan.py's)
    shutil.copy(ctx.tmp / "hf" / "config.json", ctx.tmp)
    assert load_pretrained(ctx.tmp).config.n_layer == 2
    shutil.copy(ctx.tmp / "hf" / "model.safetensors", ctx.tmp)            # and its weights: two models
    load_pretrained(ctx.tmp)


case("no config.json or params.json", FileNotFoundError, "params.json (Meta layout) nor a .gguf file")(
    lambda ctx: load_pretrained(ctx.tmp))


def with_state(ctx, edit):
    d = small_model(ctx.tmp / "m")
    sd = load_safetensors(str(ctx.tmp / "m" / "model.safetensors"))
    edit(sd)
    save_safetensors(sd, ctx.tmp / "m" / "model.safetensors")
    return load_pretrained(d)


case("a tensor missing", ValueError, "m/model.safetensors: 1 tensors missing from the checkpoint: model.norm.weight")(
    lambda ctx: with_state(ctx, lambda sd: sd.pop("model.norm.weight")))
case("a tensor left over", ValueError, "tensor 'extra.weight' is left over")(
    lambda ctx: with_state(ctx, lambda sd: sd.update({"extra.weight": torch.ones(2)})))
case("a tensor mis-shaped", ValueError, "'model.norm.weight' has shape (31,), expected (32,)")(
    lambda ctx: with_state(ctx, lambda sd: sd.update({"model.norm.weight": torch.ones(31)})))
case("an integer tensor", TypeError, "'model.norm.weight' has unsupported dtype torch.int64")(
    lambda ctx: with_state(ctx, lambda sd: sd.update({"model.norm.weight": torch.ones(32, dtype=torch.long)})))


# ----------------------------------------------------------------------------------------------------
# 4. NF4 state dicts (bitsandbytes' keys), as a checkpoint could bring them

def nf4_state(edit, w=None):
    sd = quantize_nf4(torch.randn(8, 64) if w is None else w).state_dict()
    meta = json.loads(bytes(sd["weight.quant_state.bitsandbytes__nf4"].tolist()).decode())
    if edit(sd, meta) is not False:
        sd["weight.quant_state.bitsandbytes__nf4"] = torch.tensor(list(json.dumps(meta).encode()), dtype=torch.uint8)
    return NF4Tensor.from_state_dict(sd)


case("NF4: block size 64.0", ValueError, "unsupported quant state")(
    lambda ctx: nf4_state(lambda sd, m: m.update(blocksize=64.0)))
case("NF4: quantize with block size 64.0", ValueError, "block_size 64.0 is not allowed")(
    lambda ctx: quantize_nf4(torch.randn(64), 64.0))
case("NF4: dtype name not a dtype", ValueError, "dtype 'os' is not a floating-point torch dtype")(
    lambda ctx: nf4_state(lambda sd, m: m.update(dtype="os")))
case("NF4: integer dtype", ValueError, "dtype 'int64' is not a floating-point torch dtype")(
    lambda ctx: nf4_state(lambda sd, m: m.update(dtype="int64")))
case("NF4: negative shape", ValueError, "shape [-8, -64] is not a list of positive integers")(
    lambda ctx: nf4_state(lambda sd, m: m.update(shape=[-8, -64])))
case("NF4: shape that does not fit the codes", ValueError, "code bytes for shape [8, 128]")(
    lambda ctx: nf4_state(lambda sd, m: m.update(shape=[8, 128])))
case("NF4: quant state not JSON", ValueError, "weight.quant_state.bitsandbytes__nf4 is not a JSON quant state")(
    lambda ctx: nf4_state(lambda sd, m: sd.update({"weight.quant_state.bitsandbytes__nf4":
                                                   torch.tensor(list(b"{oops"), dtype=torch.uint8)}) or False))
case("NF4: quant state nested past the recursion limit", ValueError, "is not a JSON quant state (maximum recursion")(
    lambda ctx: nf4_state(lambda sd, m: sd.update({"weight.quant_state.bitsandbytes__nf4": torch.tensor(
        list(b"[" * 100_000 + b"]" * 100_000), dtype=torch.uint8)}) or False))
case("NF4: NaN nested scale", ValueError, "8 of 8 block scales are NaN or Inf")(
    lambda ctx: nf4_state(lambda sd, m: sd["weight.nested_absmax"].fill_(float("nan"))))
case("NF4: Inf nested offset", ValueError, "block scales are NaN or Inf")(
    lambda ctx: nf4_state(lambda sd, m: m.update(nested_offset=float("inf"))))
case("NF4: not the NF4 table", ValueError, "weight.quant_map is not the NF4 table")(
    lambda ctx: nf4_state(lambda sd, m: sd["weight.quant_map"].mul_(2)))
case("NF4: a key missing", ValueError, "NF4 state dict is missing ['weight.absmax']")(
    lambda ctx: nf4_state(lambda sd, m: sd.pop("weight.absmax")))
case("NF4: NaN weights", ValueError, "weight of shape [64] has 1 NaN and 0 Inf values")(
    lambda ctx: quantize_nf4(torch.tensor([float("nan")] + [0.0] * 63)))


@case("NF4: double quantization of |w| ~ 1e37 stays finite", None)
def _(ctx):
    w = torch.randn(600, 64).clamp(-3, 3) * 3e36                        # fp32's sum of the scales overflows
    q = nf4_state(lambda sd, m: None, w)
    err = (q.dequantize(torch.float32) - w).abs().max() / w.abs().max()
    assert torch.isfinite(q.dequantize(torch.float32)).all() and err < 0.2


for f in ("bleu", "rouge"):  # one sentence scored as a str: its characters were the sentences (BLEU 0.0, ROUGE-2 0.0
    case(f"metrics.{f}('the cat sat', 'the cat sat'): strings, not lists", TypeError,  # of two equal texts)
         "hypotheses is a str: give a list, one entry per example (['the cat sat'])")(
        lambda ctx, f=f: getattr(metrics, f)("the cat sat", "the cat sat"))


for name, args in (("a None hypothesis (a generation that failed)", ([None, "a"], ["a", "a"])),  # (AttributeError:
                   ("an empty list of references", (["a"], [[]]))):    # no attribute 'rstrip'; min() arg is empty)
    case(f"metrics.bleu with {name}", TypeError, "bleu takes a text per hypothesis and a text or a non-empty "
         "list of texts per reference: hypothesis 0 is ")(lambda ctx, args=args: metrics.bleu(*args))
case("metrics.rouge with a list of references per hypothesis, as bleu takes them", TypeError, "rouge takes one "
     "reference text per hypothesis: reference 0 is a list")(  # (AttributeError: 'list' object has no attribute
    lambda ctx: metrics.rouge(["the cat sat"], [["the cat sat", "a cat sat"]]))       # 'lower')


SQUAD_DATA = [{"title": "t", "paragraphs": [{"context": "Paris is in France.", "qas": [
    {"id": "q1", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]}]}]}]
for name, args, error, fragment in [  # HF evaluate's list of {"id", "prediction_text"}: scored 0.0 without a word
        ("HF evaluate's list of predictions", (SQUAD_DATA, [{"id": "q1", "prediction_text": "France"}]), TypeError,
         "predictions is a list: give {question id: answer text} (from HF evaluate's [{'id', 'prediction_text'}]: "
         "{p['id']: p['prediction_text'] for p in predictions})"),
        ("the whole file as the dataset", ({"version": "1.1", "data": SQUAD_DATA}, {"q1": "France"}), TypeError,
         "dataset is the file's \"data\" list (json.load(f)[\"data\"]), not the whole file"),  # (a TypeError of
        ("a list as one prediction", (SQUAD_DATA, {"q1": ["France"]}), TypeError,  # string indices; an
         "prediction 'q1' is a list, not the answer's text")]:                      # AttributeError of .lower)
    case(f"metrics.squad_scores: {name}", error, fragment)(lambda ctx, args=args: metrics.squad_scores(*args))


# ----------------------------------------------------------------------------------------------------
# 5. Adapters

def adapter(ctx, keep=0.5):
    base = build_model(LlamaConfig(vocab_size=64, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64))
    model = apply_lorasp(base, ["q_proj", "v_proj"], r=4, keep=keep)
    save_adapter(model, ctx.tmp / "a")
    return build_model(LlamaConfig(vocab_size=64, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64))


@case("adapter without lorasp_extras: refused", FileNotFoundError, "lorasp_extras.safetensors is missing: without it "
      "this adapter would load as plain LoRA (keep=1)")
def _(ctx):
    fresh = adapter(ctx)
    os.remove(ctx.tmp / "a" / EXTRAS_FILE)
    load_adapter(fresh, ctx.tmp / "a")


@case("adapter without lorasp_extras, peft=True: plain LoRA, as asked", None)
def _(ctx):
    fresh = adapter(ctx)
    os.remove(ctx.tmp / "a" / EXTRAS_FILE)
    assert all(m.keep == 1.0 for m in load_adapter(fresh, ctx.tmp / "a", peft=True).modules() if hasattr(m, "keep"))


@case("adapter_config.json not JSON", ValueError, "adapter_config.json, line 1: not valid JSON")
def _(ctx):
    fresh = adapter(ctx)
    (ctx.tmp / "a" / "adapter_config.json").write_text("{")
    load_adapter(fresh, ctx.tmp / "a")


@case("adapter r = 0", ValueError, "r = 0, lora_alpha = 32; need an integer r >= 1")
def _(ctx):
    fresh = adapter(ctx)
    edit_json(ctx.tmp / "a" / "adapter_config.json", r=0, lora_alpha=32)
    load_adapter(fresh, ctx.tmp / "a")


case("not an adapter folder", FileNotFoundError, "no adapter_config.json; not an adapter folder")(
    lambda ctx: load_adapter(build_model("llama-tiny"), ctx.tmp))


@case("adapter for another width", ValueError, "do not fit Linear")
def _(ctx):
    adapter(ctx)
    load_adapter(build_model("llama-tiny"), ctx.tmp / "a")


@case("adapter extras of another save", ValueError, "lorasp_extras.safetensors and adapter_model.safetensors disagree")
def _(ctx):
    fresh = adapter(ctx)
    keep = (ctx.tmp / "a" / EXTRAS_FILE).read_bytes()
    base = build_model(LlamaConfig(vocab_size=64, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64))
    model = apply_lorasp(base, ["q_proj", "v_proj"], r=4, seed=7)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "B_train" in n:
                p.normal_()
    save_adapter(model, ctx.tmp / "a")
    (ctx.tmp / "a" / EXTRAS_FILE).write_bytes(keep)
    load_adapter(fresh, ctx.tmp / "a")


def edit_tensors(path, drop=(), add=None):
    """Rewrite a safetensors file without the tensors whose names contain one of `drop`, with those of `add`, keeping
    its metadata (an adapter's 'lorasp' settings)."""
    tensors, metadata = load_safetensors(str(path)), checkpoint.read_safetensors_header(str(path))[1]
    tensors = {k: v for k, v in tensors.items() if not any(d in k for d in drop)}
    save_safetensors({**tensors, **(add or {})}, str(path), metadata=metadata)


@case("adapter lora_A/B for a module that is not a linear layer", ValueError, "adapter module 'model.norm' is a "
      "RMSNorm; lorasp adapts nn.Linear and NF4Linear only")
def _(ctx):  # (was AttributeError: 'RMSNorm' object has no attribute 'out_features', raised writing the message)
    fresh = adapter(ctx, keep=1.0)
    os.remove(ctx.tmp / "a" / EXTRAS_FILE)
    edit_tensors(ctx.tmp / "a" / "adapter_model.safetensors", add={
        "base_model.model.model.norm.lora_A.weight": torch.zeros(4, 32),
        "base_model.model.model.norm.lora_B.weight": torch.zeros(32, 4)})
    edit_json(ctx.tmp / "a" / "adapter_config.json", target_modules=["q_proj", "v_proj", "norm"])
    load_adapter(fresh, ctx.tmp / "a", peft=True)


@case("adapter folder without its weights", FileNotFoundError, "/a: no adapter_model.safetensors (or PEFT's "
      "adapter_model.bin)")
def _(ctx):
    fresh = adapter(ctx)
    os.remove(ctx.tmp / "a" / "adapter_model.safetensors")
    load_adapter(fresh, ctx.tmp / "a")


@case("adapter weights without lora_A", ValueError, "adapter_model.safetensors: holds no lora_A weights")
def _(ctx):
    fresh = adapter(ctx)
    edit_tensors(ctx.tmp / "a" / "adapter_model.safetensors", drop=["lora_A"])
    load_adapter(fresh, ctx.tmp / "a")


@case("adapter weights without a lora_B", ValueError, "model.layers.0.self_attn.v_proj: adapter A (4, 32), B None do "
      "not fit Linear 16x32 with r=4")
def _(ctx):
    fresh = adapter(ctx)
    edit_tensors(ctx.tmp / "a" / "adapter_model.safetensors", drop=["v_proj.lora_B"])
    load_adapter(fresh, ctx.tmp / "a")


@case("adapter extras without their 'lorasp' settings", ValueError, f"{EXTRAS_FILE}: its 'lorasp' metadata is missing "
      "or malformed (TypeError: ")
def _(ctx):
    fresh = adapter(ctx)
    path = str(ctx.tmp / "a" / EXTRAS_FILE)
    save_safetensors(load_safetensors(path), path)
    load_adapter(fresh, ctx.tmp / "a")


@case("adapter extras without a layer's tensor", ValueError, "model.layers.0.self_attn.v_proj.B_train: "
      "lorasp_extras.safetensors has None, the layer needs (32,)")
def _(ctx):
    fresh = adapter(ctx)
    edit_tensors(ctx.tmp / "a" / EXTRAS_FILE, drop=["v_proj.B_train"])
    load_adapter(fresh, ctx.tmp / "a")


@case("adapter extras with a tensor of no adapted module", ValueError, "lorasp_extras.safetensors: tensors of no "
      "adapter module: ['model.layers.0.mlp.up_proj.mask_A']")
def _(ctx):
    fresh = adapter(ctx)
    edit_tensors(ctx.tmp / "a" / EXTRAS_FILE, add={"model.layers.0.mlp.up_proj.mask_A": torch.ones(1)})
    load_adapter(fresh, ctx.tmp / "a")


@case("PEFT adapter whose target_modules leaves out modules its file holds", ValueError, "adapter_config.json's "
      "target_modules ['q_proj'] does not name: ['model.layers.0.self_attn.v_proj']")
def _(ctx):  # (loaded them all: 0.198 off PeftModel's logits, which leaves them out without a warning)
    fresh = adapter(ctx)
    os.remove(ctx.tmp / "a" / EXTRAS_FILE)
    edit_json(ctx.tmp / "a" / "adapter_config.json", target_modules=["q_proj"])
    load_adapter(fresh, ctx.tmp / "a", peft=True)


@case("PEFT adapter with layers_to_transform leaving out layers its file holds", ValueError, "does not name: "
      "['model.layers.1.self_attn.q_proj', 'model.layers.1.self_attn.v_proj']")
def _(ctx):  # (loaded them all: 0.175 off PeftModel's logits)
    base = build_model(LlamaConfig(vocab_size=64, n_layer=2, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64))
    save_adapter(apply_lorasp(base, ["q_proj", "v_proj"], r=4, keep=1.0), ctx.tmp / "a")
    os.remove(ctx.tmp / "a" / EXTRAS_FILE)
    edit_json(ctx.tmp / "a" / "adapter_config.json", layers_to_transform=[0])
    fresh = build_model(LlamaConfig(vocab_size=64, n_layer=2, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64))
    load_adapter(fresh, ctx.tmp / "a", peft=True)


@case("PEFT adapter whose exclude_modules names a module its file holds", ValueError, "does not name: "
      "['model.layers.0.self_attn.v_proj']")
def _(ctx):  # (loaded it: PeftModel leaves it out)
    fresh = adapter(ctx)
    os.remove(ctx.tmp / "a" / EXTRAS_FILE)
    edit_json(ctx.tmp / "a" / "adapter_config.json", exclude_modules=["v_proj"])
    load_adapter(fresh, ctx.tmp / "a", peft=True)


for kw, was in [(dict(alpha=0), "an update scaled by 0: nothing learned, no gradient"), (dict(alpha=float("nan")), "NaN"),
                (dict(r=0), "ZeroDivisionError"), (dict(r=2.5), "TypeError of torch.empty")]:
    case(f"LoRASPLinear({', '.join(f'{k}={v}' for k, v in kw.items())}) (was: {was})", ValueError,
         "need an integer r >= 1 and a finite alpha != 0 (the update is scaled by alpha / r); got ")(
        lambda ctx, kw=kw: LoRASPLinear(torch.nn.Linear(8, 8), **kw))


def wordpiece(ctx):
    (ctx.tmp / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]))
    return tokenizer.load_tokenizer(str(ctx.tmp))


for args, fragment in [(("a", "b", 3), "max_len 3 leaves no room for the text after the 3 special tokens: --seq-len 4 "
                         "or more"), (("a", None, 2), "max_len 2 leaves no room for the text after the 2 special "
                                      "tokens: --seq-len 3 or more")]:  # (every example was [CLS] [SEP] [SEP]: the
    case(f"GLUE pairs at --seq-len {args[2]}: no text token left", ValueError, fragment)(  # classifier saw no text)
        lambda ctx, args=args: wordpiece(ctx).encode_pair(*args))


case("apply_lorasp(t5, 'wo'): targets a str, not a list", TypeError, "targets 'wo' is a str: give a list of module "
     "names, ['wo']")(  # (read a character at a time: 'o' matched the attention's o, and wo was never adapted)
    lambda ctx: apply_lorasp(build_model(T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                                                  num_heads=4)), "wo", r=4))


@case("adapter onto a model already adapted on more modules", ValueError, "already has adapter layers this adapter "
      "does not hold: ['model.layers.0.mlp.up_proj']")
def _(ctx):
    fresh = apply_lorasp(adapter(ctx), ["q_proj", "v_proj", "up_proj"], r=4, seed=3)
    with torch.no_grad():                          # (they kept their values: a mix of two adapters, 0.65 off the saved
        fresh.model.layers[0].mlp.up_proj.B_train.normal_()                  # model's logits, without a word)
    load_adapter(fresh, ctx.tmp / "a")


# ----------------------------------------------------------------------------------------------------
# 6. Downloads and archives (a stand-in server on 127.0.0.1)

def mmlu_tar(members=None):
    members = members or {"data/dev/x_dev.csv": "q,a,b,c,d,A\n", "data/test/x_test.csv": "q,a,b,c,d,B\n"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, text in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            t.addfile(info, io.BytesIO(text.encode()))
    return buf.getvalue()


def mmlu_from(ctx, body):
    with serve("x/y", {"data.tar": body}) as (url, _):
        ctx.mp.setattr(data, "MMLU_URL", f"{url}/cdn/data.tar")
        return data.mmlu_dir()


@case("MMLU: an HTML page saved as data.tar", SystemExit, "did not give MMLU's archive")
def _(ctx):
    try:
        mmlu_from(ctx, b"<!DOCTYPE html><html><body>503 Service Unavailable</body></html>")
    except SystemExit as e:
        assert "(not a tar archive); received 64 bytes starting b'<!DOCTYPE html>" in str(e)
        assert os.listdir(ctx.tmp / "cache" / "mmlu") == []                 # nothing sticks
        raise


@case("MMLU: a member that would land outside the folder", SystemExit, "did not give MMLU's archive")
def _(ctx):
    try:
        mmlu_from(ctx, mmlu_tar({"data/test/x_test.csv": "q,a,b,c,d,A\n", "../../escaped.txt": "x"}))
    finally:
        assert not [f for _, _, fs in os.walk(ctx.tmp) for f in fs if f == "escaped.txt"]
        assert os.listdir(ctx.tmp / "cache" / "mmlu") == []


@case("MMLU: extraction interrupted (Ctrl-C), then redone", None)
def _(ctx):
    original = tarfile.TarFile.extractall

    def interrupted(self, path, **kw):
        os.makedirs(os.path.join(path, "data", "test"))
        open(os.path.join(path, "data", "test", "x_test.csv"), "w").write("half")
        raise KeyboardInterrupt
    ctx.mp.setattr(tarfile.TarFile, "extractall", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mmlu_from(ctx, mmlu_tar())
    assert not os.path.exists(ctx.tmp / "cache" / "mmlu" / "data")           # no half folder for the next call
    ctx.mp.setattr(tarfile.TarFile, "extractall", original)
    d = mmlu_from(ctx, mmlu_tar())
    assert open(os.path.join(d, "test", "x_test.csv")).read() == "q,a,b,c,d,B\n"


@case("MMLU: a stray partial folder (no completion mark) is redone", None)
def _(ctx):
    os.makedirs(ctx.tmp / "cache" / "mmlu" / "data" / "test")
    (ctx.tmp / "cache" / "mmlu" / "data" / "test" / "x_test.csv").write_text("half")
    d = mmlu_from(ctx, mmlu_tar())
    assert open(os.path.join(d, "test", "x_test.csv")).read() == "q,a,b,c,d,B\n"
    assert os.path.exists(os.path.join(d, data.MMLU_DONE))


@case("download: a stale .part of a file that changed on the server (If-Range)", None)
def _(ctx):
    files, dest = {"f.json": os.urandom(3 << 20)}, str(ctx.tmp / "f.json")
    with serve("x/y", files, cut={"f.json": 1 << 20}) as (url, _):
        with pytest.raises(OSError, match="run the same command again to resume"):
            data.download(f"{url}/cdn/f.json", dest)
        files["f.json"] = os.urandom(3 << 20)                              # changed, same length
        data.download(f"{url}/cdn/f.json", dest)
    assert open(dest, "rb").read() == files["f.json"]                      # not old bytes + new bytes


@case("download: a .part with nothing to validate it is not resumed", None)
def _(ctx):
    body, dest = os.urandom(1 << 20), str(ctx.tmp / "f.json")
    open(dest + ".part", "wb").write(b"stale bytes of some other file")
    with serve("x/y", {"f.json": body}) as (url, log):
        data.download(f"{url}/cdn/f.json", dest)
    assert open(dest, "rb").read() == body and log[-1][2] is None          # no Range request


@case("download: a second process fetching the same file waits for the first, then takes its file", None)
def _(ctx):  # (was: both wrote dest.part: one died renaming it, or a file of both bytes was kept)
    import fcntl
    import threading
    body, dest = os.urandom(1 << 20), str(ctx.tmp / "f.json")
    fd = os.open(dest + ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)                         # the first, still fetching

    def first_ends():
        open(dest, "wb").write(b"the first's file")
        os.remove(dest + ".lock")
        os.close(fd)
    ends = threading.Timer(0.5, first_ends)
    with serve("x/y", {"f.json": body}) as (url, log):
        ends.start()
        data.download(f"{url}/cdn/f.json", dest)
        ends.join()
    assert open(dest, "rb").read() == b"the first's file" and log == [] and os.listdir(ctx.tmp) == ["f.json"]
    assert "another process is downloading it; waiting for it to end" in ctx.capsys.readouterr().err


@case("download: a known file's checksum fails", OSError, "checksum failed")
def _(ctx):
    with serve("x/y", {"data.tar": b"<html>moved</html>"}) as (url, _):
        ctx.mp.setitem(data.KNOWN_FILES, f"{url}/cdn/data.tar", (18, "0" * 64))
        try:
            data.download(f"{url}/cdn/data.tar", str(ctx.tmp / "data.tar"))
        except OSError as e:
            assert "Received: 18 bytes starting b'<html>moved</html>'" in str(e)
            assert os.listdir(ctx.tmp) == []
            raise


def test_pinned_checksums_are_the_published_ones():
    """MMLU's and GLUE's files are verified against the sha256 huggingface/datasets recorded for the same URLs."""
    assert data.KNOWN_FILES[data.MMLU_URL] == (
        166184960, "bec563ba4bac1d6aaf04141cd7d1605d7a5ca833e38f994051e818489592989b")
    zips = {data.GLUE_URL + z for _, z, *_ in data.GLUE.values() if z} | set(data.MRPC_URLS.values())
    assert zips <= data.KNOWN_FILES.keys() and all(len(h) == 64 for _, h in data.KNOWN_FILES.values())


@case("GLUE: an HTML page saved as RTE.zip", ValueError, "did not give GLUE's rte archive")
def _(ctx):
    with serve("x/y", {"RTE.zip": b"<html>rate limited</html>"}) as (url, _):
        ctx.mp.setattr(data, "GLUE_URL", f"{url}/cdn/")
        try:
            data.load_glue("rte")
        finally:
            assert os.listdir(ctx.tmp / "cache" / "glue") == []


@case("GLUE: a zip member named ../../x lands inside the folder", None)
def _(ctx):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for split in ("train", "dev"):
            z.writestr(f"RTE/{split}.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
        z.writestr("../../escaped.txt", "x")
    with serve("x/y", {"RTE.zip": buf.getvalue()}) as (url, _):
        ctx.mp.setattr(data, "GLUE_URL", f"{url}/cdn/")
        assert len(data.load_glue("rte")["train"]) == 1
    assert not [r for r, _, fs in os.walk(ctx.tmp) for f in fs if f == "escaped.txt" and "glue" not in r]


@case("Alpaca: an HTML page saved as alpaca_data.json", ValueError, "did not give Alpaca's records")
def _(ctx):
    with serve("x/y", {"alpaca_data.json": b"<html>404</html>"}) as (url, _):
        ctx.mp.setattr(data, "ALPACA_URL", f"{url}/cdn/alpaca_data.json")
        try:
            data.load_examples("alpaca", None, 64, 0.1, 0)
        finally:
            assert os.listdir(ctx.tmp / "cache" / "data") == []


@case("Alpaca: the cached file changed since its download", ValueError, "alpaca_data.json changed since it was "
      "downloaded")
def _(ctx):
    tok = tokenizer.load_tokenizer(ctx.tiny[0])
    with serve("x/y", {"alpaca_data.json": open(ctx.tiny[1], "rb").read()}) as (url, _):
        ctx.mp.setattr(data, "ALPACA_URL", f"{url}/cdn/alpaca_data.json")
        data.load_examples("alpaca", tok, 64, 0.1, 0)                      # fetched, its sha256 recorded
    cached = ctx.tmp / "cache" / "data" / "alpaca_data.json"
    cached.write_text(json.dumps(json.load(open(cached))[:10]))
    data.load_examples("alpaca", tok, 64, 0.1, 0)


case("GLUE: a label that is not one", ValueError, "train.tsv:2: label 'maybe' is not entailment or not_entailment")(
    lambda ctx: data.read_glue(records_file(ctx, "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n",
                                            "train.tsv"), "rte"))
case("GLUE: a row with a stray tab (too many fields)", ValueError, "train.tsv:2: 5 fields, expected 4")(
    lambda ctx: data.read_glue(records_file(ctx, "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tc\tentailment\n",
                                            "train.tsv"), "rte"))
case("GLUE: a header naming a column it reads twice (csv.DictReader keeps the last, pandas the first)", ValueError,
     "dev.tsv:1: the header names 'sentence' twice (columns 1 and 3)")(  # (was read as the last, without a word)
    lambda ctx: data.read_glue(records_file(ctx, "sentence\tlabel\tsentence\nit was good\t1\tit was bad\n", "dev.tsv"),
                               "sst2"))
case("GLUE: a text column empty in every row (a converter that wrote another column's name)", ValueError,
     "train.tsv: column 'sentence2' is empty in every row (line 2, ...): the classifier would learn GLUE rte from "
     "the other sentence alone")(  # (trained on [CLS] A [SEP] [SEP], exit 0)
    lambda ctx: data.read_glue(records_file(ctx, "index\tsentence1\tsentence2\tlabel\n0\ta cat sat\t\tentailment\n"
                                            "1\tit rained\t \tnot_entailment\n", "train.tsv"), "rte"))


@case("GLUE: a text column empty in some rows: read, counted in a note", None)
def _(ctx):
    rows = data.read_glue(records_file(ctx, "sentence\tlabel\ngood film\t1\n\t0\nbad plot\t0\n \t1\n", "dev.tsv"),
                          "sst2")
    assert rows == [("good film", None, 1), ("", None, 0), ("bad plot", None, 0), (" ", None, 1)]
    err = ctx.capsys.readouterr().err
    assert f"note: {ctx.tmp / 'dev.tsv'}: column 'sentence' is empty in 2 of the 4 rows (lines 3, 5)" in err, err


case("WMT16: every pair's target its source word for word (one language written twice)", ValueError,
     "train.en + train.ro: every pair's target is its source, word for word (line 1, ...)")(  # (trained to copy, exit
    lambda ctx: records_file(ctx, "a cat\nthe sun\nthe dog \n", "train.en") and records_file(  # 0; BLEU 100 by copying)
        ctx, "a cat\n\nthe dog\n", "train.ro") and data.read_translation(str(ctx.tmp), "train"))


case("WMT16: the English file holds the Romanian sentences and the Romanian file the English (swapped)", ValueError,
     "test.en + test.ro: the English side reads as Romanian: 3 of its 4 sentences hold a letter")(  # (were scored, exit
    lambda ctx: records_file(ctx, "Pisica doarme.\nAstăzi e soare.\nÎn oraș plouă.\nȚara e mare.\n", "test.en")  # 0:
    and records_file(ctx, "The cat sleeps.\nToday it is sunny.\nIt rains in town.\nThe country is big.\n",  # BLEU of
                     "test.ro") and data.read_translation(str(ctx.tmp), "test"))                   # the swap)


@case("WMT16: Romanian without its diacritics, or English with a Romanian name: read as pairs", None)
def _(ctx):
    records_file(ctx, "The cat sleeps.\nWe met in Brașov.\nIt rains.\nThe sea.\n", "test.en")
    records_file(ctx, "Pisica doarme.\nNe-am intalnit la Brasov.\nPlouă.\nMarea.\n", "test.ro")
    assert len(data.read_translation(str(ctx.tmp), "test")) == 4
    records_file(ctx, "Azi e soare.\nPisica doarme.\n", "test.en")          # both sides Romanian without diacritics:
    records_file(ctx, "Today it is sunny.\nThe cat sleeps.\n", "test.ro")   # no letter to tell (not refused)
    assert len(data.read_translation(str(ctx.tmp), "test")) == 2


@case("WMT16: some pairs the same in both languages (a name, a number): read as pairs", None)
def _(ctx):
    records_file(ctx, "".join(json.dumps({"translation": {"en": e, "ro": r}}) + "\n" for e, r in [
        ("Bucharest", "Bucharest"), ("2016", "2016"), ("a cat", "o pisică")]), "train.jsonl")
    assert data.read_translation(str(ctx.tmp), "train") == [("Bucharest", "Bucharest"), ("2016", "2016"),
                                                            ("a cat", "o pisică")]


case("GLUE: not UTF-8", ValueError, "train.tsv, line 2: not UTF-8 text")(
    lambda ctx: data.read_glue(records_file(ctx, b"index\tsentence1\tsentence2\tlabel\n0\t\xff\tb\tentailment\n",
                                            "train.tsv"), "rte"))
case("WMT16: a bad JSONL line", ValueError, "train.jsonl, line 1: expected")(
    lambda ctx: records_file(ctx, '{"translation": {"en": "a"}}\n', "train.jsonl") and
    data.read_translation(str(ctx.tmp), "train"))
case("WMT16: a JSONL line giving the target twice with other texts (JSON keeps the last)", ValueError,
     "train.jsonl, line 2: gives 'ro' twice ('b', then 'c'): JSON keeps the last one")(  # (was trained on 'c')
    lambda ctx: records_file(ctx, '{"translation": {"en": "x", "ro": "y"}}\n{"translation": {"en": "a", "ro": "b", '
                             '"ro": "c"}}\n', "train.jsonl") and data.read_translation(str(ctx.tmp), "train"))
case("GLUE: an STS-B score that is nan", ValueError, "train.tsv:2: label 'nan' is not a number in [0, 5]")(
    lambda ctx: data.read_glue(records_file(ctx, "sentence1\tsentence2\tscore\na\tb\tnan\n", "train.tsv"), "stsb"))
case("GLUE: an STS-B score past 5", ValueError, "train.tsv:3: label '7' is not a number in [0, 5]")(
    lambda ctx: data.read_glue(records_file(ctx, "sentence1\tsentence2\tscore\na\tb\t4.5\nc\td\t7\n",
                                            "train.tsv"), "stsb"))


@case("GLUE: STS-B scores within [0, 1] (a re-export divided by 5), beside a train file on GLUE's 0-5, are said", None)
def _(ctx):  # (were read without a word)
    (ctx.tmp / "STS-B").mkdir()
    for split, scores in (("train", ["5.0", "1.2"]), ("dev", ["0.92", "0.1"])):
        records_file(ctx, "sentence1\tsentence2\tscore\n" + "".join(f"a\tb{i}\t{y}\n" for i, y in enumerate(scores)),
                     f"STS-B/{split}.tsv")
    data.load_glue("stsb", str(ctx.tmp))
    assert ("every STS-B score in dev.tsv is within [0, 1] (the largest 0.92), where GLUE's are 0-5, as "
            "train.tsv's are (the largest 5)") in ctx.capsys.readouterr().err


case("GLUE: a dev.tsv with a header and no rows", ValueError, "SST-2/dev.tsv: no examples")(
    lambda ctx: [records_file(ctx, "sentence\tlabel\n" + "a\t1\n" * (n == "train"), f"SST-2/{n}.tsv")
                 for n in ("train", "dev") if os.makedirs(ctx.tmp / "SST-2", exist_ok=True) or True] and
    data.load_glue("sst2", str(ctx.tmp)))


@case("GLUE: an empty dev.tsv (0 bytes), with a header row (SST-2) and without (CoLA): said to be empty", None)
def _(ctx):  # (was "no column 'sentence' for GLUE sst2 (the header has [])" and, for CoLA, "(a header and no rows)")
    for task, folder in (("sst2", "SST-2"), ("cola", "CoLA")):
        os.makedirs(ctx.tmp / folder)
        path = records_file(ctx, "\ufeff\n" if task == "cola" else "", f"{folder}/dev.tsv")  # (a BOM, a blank line)
        with pytest.raises(ValueError) as e:
            data.load_glue(task, str(ctx.tmp), train=False)
        assert str(e.value) == f"{path}: an empty file (GLUE {task}'s dev.tsv holds " + (
            "a row per example, no header" if task == "cola" else "a header, then a row per example") + \
            ", as download_glue_data.py writes it)"


@case("GLUE: pairs with a byte-level BPE vocabulary that has no <|endoftext|>", ValueError, "the tokenizer has no id "
      "for a mark GLUE pairs take (GPT-2's <|endoftext|>, BERT's [CLS] and [SEP], RoBERTa's <s> and </s>): 'ab' "
      "encodes to [None, 0, 1, None]")
def _(ctx):  # (a traceback from torch.tensor at the first batch: "Could not infer dtype of NoneType")
    (ctx.tmp / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate("abcdefghij")}))
    (ctx.tmp / "merges.txt").write_text("#version: 0.2\n")
    data.encode_glue([("ab", None, 1)], tokenizer.load_tokenizer(str(ctx.tmp)))


@case("GLUE: --data-dir the task's own folder, or one holding HF's .jsonl export: said what to give", None)
def _(ctx):  # (was "DIR/SST-2/SST-2: needs train.tsv, dev.tsv" and "DIR/SST-2: needs train.tsv, dev.tsv")
    os.makedirs(ctx.tmp / "jsonl" / "SST-2")
    (ctx.tmp / "SST-2").mkdir()
    for split in ("train", "dev"):
        records_file(ctx, "sentence\tlabel\na\t1\n", f"SST-2/{split}.tsv")
        records_file(ctx, '{"sentence": "a", "label": 1}\n', f"jsonl/SST-2/{split}.jsonl")
    with pytest.raises(FileNotFoundError) as e:
        data.load_glue("sst2", str(ctx.tmp / "SST-2"))
    assert str(e.value).endswith(f"; --data-dir names the folder that holds SST-2/, not SST-2/ itself: --data-dir "
                                 f"{ctx.tmp}")
    with pytest.raises(FileNotFoundError) as e:
        data.load_glue("sst2", str(ctx.tmp / "jsonl"))
    assert str(e.value).endswith("(it holds dev.jsonl, train.jsonl: lorasp reads GLUE's .tsv files as "
                                 "download_glue_data.py writes them)")


case("GLUE: CoLA as HF's datasets exports it (a header, 3 columns): every row skipped", ValueError,
     "train.tsv: every row has fields missing or no label (line 1: 3 fields; GLUE cola's are source, label, "
     "original_label, sentence: CoLA's train and dev files have no header)")(  # (was: each row skipped with a
    lambda ctx: data.read_glue(records_file(ctx, "sentence\tlabel\tidx\nab\t1\t0\n", "train.tsv"), "cola"))  # note,
# then "dev.tsv: no examples (a header and no rows)")


@case("WMT16: a folder holding test.jsonl and test.en + test.ro says which it reads", None)
def _(ctx):  # (test.jsonl was read without a word, whatever the plain-text files held)
    records_file(ctx, json.dumps({"translation": {"en": "J", "ro": "K"}}) + "\n", "test.jsonl")
    records_file(ctx, "a\n", "test.en") and records_file(ctx, "x\n", "test.ro")
    assert data.read_translation(str(ctx.tmp), "test") == [("J", "K")]
    assert ctx.capsys.readouterr().err == \
        f"note: {ctx.tmp} holds test.jsonl and test.en + test.ro: reading test.jsonl\n"


@case("GLUE and WMT16: a trailing blank line, a byte-order mark", None)
def _(ctx):
    assert data.read_glue(records_file(ctx, "sentence\tlabel\na\t1\n\n", "train.tsv"), "sst2") == [("a", None, 1)]
    records_file(ctx, '\ufeff{"translation": {"en": "a", "ro": "b"}}\n', "train.jsonl")
    records_file(ctx, "\ufeffa\n", "test.en") and records_file(ctx, "b\n", "test.ro")
    assert data.read_translation(str(ctx.tmp), "train") == data.read_translation(str(ctx.tmp), "test") == [("a", "b")]


case("records: an unpaired surrogate", SystemExit, "d.json, line 1: record 1 field 'output' holds an unpaired "
     "surrogate")(
    lambda ctx: run(ctx, data_file=records_file(ctx, '[{"instruction": "a", "output": "b"}, {"instruction": "a", '
                                                     '"output": "x\\ud800y"}]')))
case("records: JSON Lines named .json", SystemExit, "one JSON object a line is JSON Lines: name the file .jsonl")(
    lambda ctx: run(ctx, data_file=records_file(ctx, '{"instruction": "a", "output": "b"}\n{"instruction": "c", '
                                                     '"output": "d"}\n')))
case("records: a name ending in neither .json, .jsonl nor .txt", SystemExit, "d.csv: a .json or .jsonl of "
     "instruction records or a .txt corpus")(lambda ctx: run(ctx, data_file=records_file(ctx, "a,b\n", "d.csv")))


@case("--data a GLUE task's train.tsv, with an encoder or a Llama: said before the model loads, and what to give", None)
def _(ctx):  # (the encoder's: "--data .../train.tsv trains llama or gpt2; bert holds bert"; the Llama's: after loading)
    tsv = records_file(ctx, "sentence\tlabel\na b\t1\n", "train.tsv")
    ctx.mp.setattr(train, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))
    for model in (ctx.tiny[0], tiny_bert(ctx)):
        with pytest.raises(SystemExit) as e:
            train.main(flags((model, tsv), ctx.tmp / "out"))
        assert e.value.code.endswith("(this one: '.tsv'); a GLUE task's .tsv files train with --data glue/TASK "
                                     "--data-dir GLUE_DIR (the folder holding TASK/train.tsv)"), e.value.code


@case("records: upper-case .JSONL and .TXT", None)
def _(ctx):
    tok = tokenizer.load_tokenizer(ctx.tiny[0])
    lines = "".join(json.dumps(r) + "\n" for r in json.load(open(ctx.tiny[1])))
    upper = data.load_examples(records_file(ctx, lines, "d.JSONL"), tok, 64, 0.1, 0)
    assert upper == data.load_examples(records_file(ctx, lines, "d.jsonl"), tok, 64, 0.1, 0)
    text = "a few words of text\n" * 50
    assert data.load_examples(records_file(ctx, text, "t.TXT"), tok, 16, 0.1, 0) == \
        data.load_examples(records_file(ctx, text, "t.txt"), tok, 16, 0.1, 0)


case("MMLU: a bad CSV row", ValueError, "x_test.csv, line 1: not question,A,B,C,D,answer(A-D)")(
    lambda ctx: data.read_mmlu_csv(records_file(ctx, "q,a,b,c,d,E\n", "x_test.csv")))
case("MMLU: an empty CSV (a subject of no question)", ValueError, "x_test.csv: no rows (an empty file)")(
    lambda ctx: data.read_mmlu_csv(records_file(ctx, "\n\n", "x_test.csv")))  # (ZeroDivisionError, in eval.py)
case("MMLU: a question of no text (evaluate.py stops on an empty one: NaN + str)", ValueError,
     "x_test.csv, line 2: the question has no text")(
    lambda ctx: data.read_mmlu_csv(records_file(ctx, "q,1,2,3,4,A\n,1,2,3,4,B\n", "x_test.csv")))


@case("MMLU: an empty option reads \"nan\", as evaluate.py (pandas.read_csv) prints it, with a note naming its line",
      None)
def _(ctx):  # (was "B. ": another prompt than evaluate.py's, without a word)
    assert data.read_mmlu_csv(records_file(ctx, "q,1,,3,4,A\n", "x_test.csv")) == [["q", "1", "nan", "3", "4", "A"]]
    assert 'x_test.csv: empty options (line 1: B) read as "nan"' in ctx.capsys.readouterr().err


@case("eval.py: --task mmlu, --subjects not there or given twice, a test/ or dev/ folder short of a subject", None)
def _(ctx):  # (after the model loaded: a ZeroDivisionError traceback; "No such file or directory: DIR/dev/x_dev.csv";
    # a subject given twice was scored twice: "over 1 subjects, micro ... over 4 questions" of 2)
    test = ctx.tmp / "mmlu" / "test"
    os.makedirs(test)
    ctx.mp.setattr(E, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))  # refused before it loads
    for message in (f"error: {test}: no SUBJECT_test.csv file (MMLU's release holds 57)",
                    f"error: --subjects astronomy_test.csv: no {test / 'astronomy_test.csv_test.csv'}; the subjects "
                    "there: anatomy, astronomy"):
        with pytest.raises(SystemExit) as e:
            E.main(["--task", "mmlu", "--model", ctx.tiny[0], "--data-dir", str(ctx.tmp / "mmlu"), "--subjects",
                    "anatomy", "astronomy_test.csv"])
        assert e.value.code == message
        for subject in ("anatomy", "astronomy"):
            records_file(ctx, "q,a,b,c,d,A\n", f"mmlu/test/{subject}_test.csv")
    with pytest.raises(SystemExit) as e:
        E.main(["--task", "mmlu", "--model", ctx.tiny[0], "--data-dir", str(ctx.tmp / "mmlu")])
    assert e.value.code == f"error: {ctx.tmp / 'mmlu' / 'dev' / 'anatomy_dev.csv'}: no such file (the worked examples " \
        "of anatomy's prompts; 2 subjects lack theirs)"
    os.makedirs(ctx.tmp / "mmlu" / "dev")
    for subject in ("anatomy", "astronomy"):
        records_file(ctx, "q,a,b,c,d,A\n", f"mmlu/dev/{subject}_dev.csv")
    assert E.mmlu_subjects(str(ctx.tmp / "mmlu"), ["astronomy", "anatomy", "astronomy"]) == ["astronomy", "anatomy"]


# ----------------------------------------------------------------------------------------------------
# 7. Faults: the checkpoint left behind resumes to exactly the uninterrupted run's weights

@case("fault: killed while saving a checkpoint, then --resume", None)
def _(ctx):
    calls, original = [], resume.save_safetensors

    def dies(tensors, path, metadata=None):                    # the second checkpoint's rng file: half, then death
        if str(path).endswith("rng.safetensors") and not calls.append(path) and len(calls) == 2:
            open(path, "wb").write(b"half")
            raise Killed
        return original(tensors, path, metadata)
    ctx.mp.setattr(resume, "save_safetensors", dies)
    with pytest.raises(Killed):
        run(ctx, "--save-every", "2")
    assert json.load(open(ctx.tmp / "out" / "checkpoint" / "state.json"))["step"] == 2
    ctx.mp.setattr(resume, "save_safetensors", original)
    run(ctx, "--save-every", "2", "--resume")
    same_as_straight(ctx, "out")


@case("fault: disk full (file-size limit) while saving, then --resume", None)
def _(ctx):
    calls, original = [0], train.save_checkpoint

    def full_disk(*args):                                      # the second checkpoint: files over 2 KiB fail (EFBIG)
        calls[0] += 1
        if calls[0] != 2:
            return original(*args)
        limit, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, limit[1]))
        try:
            return original(*args)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limit)
            signal.signal(signal.SIGXFSZ, handler)
    ctx.mp.setattr(train, "save_checkpoint", full_disk)
    with pytest.raises(SystemExit) as e:
        run(ctx, "--save-every", "2")
    assert "saving the checkpoint of step 4 failed (File too large)" in str(e.value.code)
    assert "checkpoint still holds the previous one" in str(e.value.code)
    assert sorted(os.listdir(ctx.tmp / "out")) == ["checkpoint", "heldout.jsonl", "metrics.jsonl"]   # no half checkpoint.tmp
    ctx.mp.setattr(train, "save_checkpoint", original)
    run(ctx, "--save-every", "2", "--resume")
    same_as_straight(ctx, "out")


@case("fault: disk full while replacing an adapter keeps the old one whole", OSError, "No space left on device")
def _(ctx):
    """As saving the best adapter under --patience: the extras are written, the weights fail. The folder keeps the
    old extras and weights, and what else it held; nothing half-written is left beside it."""
    import adapter
    base = build_model(LlamaConfig(vocab_size=64, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64))
    model = apply_lorasp(base, ["q_proj", "v_proj"], r=4)
    save_adapter(model, ctx.tmp / "a")
    (ctx.tmp / "a" / "notes.txt").write_text("the user's own file")
    before = {f: (ctx.tmp / "a" / f).read_bytes() for f in os.listdir(ctx.tmp / "a")}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "_train" in n:
                p.add_(1.0)
    original = adapter.write_planned                                   # (the weights file's writer: a tensor at a time)

    def full(tensors, path, metadata=None):
        if str(path).endswith("adapter_model.safetensors"):
            raise OSError(28, "No space left on device", str(path))
        return original(tensors, path, metadata)
    ctx.mp.setattr(adapter, "write_planned", full)
    try:
        save_adapter(model, ctx.tmp / "a")
    finally:
        assert {f: (ctx.tmp / "a" / f).read_bytes() for f in os.listdir(ctx.tmp / "a")} == before
        assert sorted(os.listdir(ctx.tmp)) == ["a"]                            # no a.tmp, no a.old


@case("fault: Ctrl-C saves, then --resume", None)
def _(ctx):
    fault_at_loss_call(ctx.mp, 9, signal.SIGINT)               # step 5
    with pytest.raises(SystemExit) as e:
        run(ctx, "--save-every", "2")
    assert e.value.code == 130
    undo(ctx)
    run(ctx, "--save-every", "2", "--resume")
    same_as_straight(ctx, "out")


@case("fault: SIGTERM saves like Ctrl-C, then --resume", None)
def _(ctx):
    fault_at_loss_call(ctx.mp, 9, signal.SIGTERM)
    with pytest.raises(SystemExit) as e:
        run(ctx, "--save-every", "2")
    assert e.value.code == 143 and "SIGTERM: saving a checkpoint after this step" in ctx.capsys.readouterr().out
    assert json.load(open(ctx.tmp / "out" / "checkpoint" / "state.json"))["step"] == 5
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL              # the handler is put back
    undo(ctx)
    run(ctx, "--save-every", "2", "--resume")
    same_as_straight(ctx, "out")


# Session 29's fixes (ends29), tested in their own files, as rows: a resume's advice, T5's beam search, merge_lorasp

def resumed_without_held_out(ctx):
    """A --patience run stopped at step 3, resumed (--allow-data-change) onto its data less the 6 records its
    checkpoint held out: no validation set."""
    records, task = json.load(open(ctx.tiny[1])), ctx.tmp / "task.json"
    task.write_text(json.dumps(records))
    argv = flags((ctx.tiny[0], str(task)), ctx.tmp / "out", "--patience", "2", "--eval-every", "4")
    fault_at_loss_call(ctx.mp, 5, signal.SIGINT)
    with pytest.raises(SystemExit):
        train.main(argv)
    undo(ctx)
    held = data.split_records(records, 0.1, 0)[1]
    task.write_text(json.dumps([r for r in records if r not in held]))
    train.main(argv + ["--resume", "--allow-data-change"])


case("--resume --allow-data-change onto data without the checkpoint's held-out records, with --patience (was told "
     "to change --val-fraction or drop --patience, which a resume refuses)", SystemExit,
     "--patience 2: there is no validation set to watch (this --resume holds out its checkpoint's held-out records, "
     "and none is in ")(resumed_without_held_out)


def nan_beam_search(ctx):
    """A tiny T5 whose decoder's final norm is NaN (every logit NaN), decoded with 4 beams."""
    import generate
    torch.manual_seed(0)
    model = build_model(T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_heads=4, dropout_rate=0.0)).eval()
    with torch.no_grad():
        model.decoder.final_layer_norm.weight.fill_(math.nan)
    generate.beam_search(model, torch.tensor([[5, 7, 9, 1]]), num_beams=4, max_new_tokens=5)


case("T5's beam search on NaN logits (token 42 won every step, its score NaN, no word)", ValueError,
     "beam_search: the logits of new token 1 hold 256 NaN and 0 Inf values (the model computes in float32)")(
    nan_beam_search)


def poisoned_merge(ctx, k, value):
    """The shared run's adapter loaded onto the tiny model, one entry of a layer's A or B then set to value, merged
    through the Python API (an adapter file with it is refused as it loads)."""
    from lorasp import merge_lorasp
    model = load_adapter(load_pretrained(ctx.tiny[0]), ctx.shared.checkpoint / "adapter")
    with torch.no_grad():
        getattr(model.get_submodule("model.layers.1.self_attn.q_proj"), f"{k}_train")[0] = value
    merge_lorasp(model)


for k, value in (("B", math.nan), ("A", math.inf)):
    case(f"merge_lorasp: an adapter with {value} in a lora_{k} (was folded into the weight without a word)", ValueError,
         "merge_lorasp: model.layers.1.self_attn.q_proj: lora_A or lora_B holds NaN or Inf; nothing was merged")(
        lambda ctx, k=k, value=value: poisoned_merge(ctx, k, value))


@case("merge_lorasp: a model on the meta device (was torch's 'Tensor.item() cannot be called on meta tensors')",
      ValueError, "merge_lorasp: 2 layers on the meta device (shapes, no values: model.layers.0.self_attn.q_proj, "
      "model.layers.1.self_attn.q_proj): load the weights first")
def _(ctx):
    from lorasp import merge_lorasp
    with torch.device("meta"):
        model = build_model(LlamaConfig(n_layer=2))
    merge_lorasp(apply_lorasp(model, ["q_proj"], r=4))


# ----------------------------------------------------------------------------------------------------
# The table

def test_the_table_is_the_issues():
    assert len(CASES) >= 80 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("row", CASES, ids=[c.name for c in CASES])
def test_bad_input(row, ctx):
    if row.expect is None:                                     # a silent wrong result, now right: the row checks it
        row.build(ctx)
        return
    with pytest.raises(BaseException) as e:
        row.build(ctx)
    if row.expect == 2:                                        # argparse: exit code 2, the message on stderr
        assert isinstance(e.value, SystemExit) and e.value.code == 2, e.value
        message = ctx.capsys.readouterr().err
    elif row.expect is SystemExit:                             # train.py's one-line "error: ..."
        assert isinstance(e.value, SystemExit) and isinstance(e.value.code, str), repr(e.value)
        message = e.value.code
    else:
        assert isinstance(e.value, row.expect), repr(e.value)
        message = str(e.value)
    assert row.fragment in message, message
