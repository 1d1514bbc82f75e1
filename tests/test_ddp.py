"""train.py under torchrun: DistributedDataParallel with gloo on CPU, 2 processes, on test_train's tiny Llama.

The reference for 2 ranks x batch 2 is one process with batch 4 (the same global batches; the loss divided by the
global token count), reached through a Ctrl-C that only one rank saw and a --resume; bytes all-reduced per step are
what DDP's comm hook was handed (LoRA-SP: half of LoRA's). A driver script written here (test code, not runtime code)
runs train.main under `python -m torch.distributed.run` and has each rank dump its trainable tensors. A tiny BERT on
SST-2 trains a classifier the same way."""
import json
import os
import random
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

import data
import eval as E
import model as M
import tokenizer
import train
from checkpoint import load_safetensors
from fixtures import flags, tiny  # noqa: F401  (the tiny fixture; one thread comes from conftest.py)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = """
import json, os, signal, sys, time
sys.path.insert(0, {repo!r})
import torch, train
LOSS = os.environ.get("LOSS", "causal_lm_loss")                   # the task's loss, where a Ctrl-C is sent from
rank, models, load, loss, calls = int(os.environ["RANK"]), [], train.load_model, getattr(train, LOSS), [0]
train.load_model = lambda *a: models.append(load(*a)) or models[-1]   # keep the model to dump it below

def interrupted(model, batch):                # Ctrl-C reaching rank SIGINT_RANK only, at its SIGINT_AT-th loss
    calls[0] += torch.is_grad_enabled()
    if str(calls[0]) == os.environ.get("SIGINT_AT") and str(rank) == os.environ.get("SIGINT_RANK"):
        os.kill(os.getpid(), signal.SIGINT)
    return loss(model, batch)
setattr(train, LOSS, interrupted)
if os.environ.get("SCARCE_RANK") == str(rank):  # this rank reads 1 byte of memory available
    import plan
    plan.available_bytes = lambda device: (1, "test")
if "VAL_LOSSES" in os.environ:                # scripted validation losses, one per evaluation
    val_losses = iter(json.loads(os.environ["VAL_LOSSES"]))
    train.evaluate = lambda *a: dict(val_loss=next(val_losses))
if os.environ.get("LATE_LOG") == str(rank):   # this rank opens metrics.jsonl a second after the others
    open_log = train.open_log
    train.open_log = lambda run: time.sleep(1) or open_log(run)
argv = sys.argv[1:]
if rank > 0 and "OTHER_OUT" in os.environ:    # only rank 0 may write: give the others a directory to leave alone
    argv[argv.index("--out") + 1] = os.environ["OTHER_OUT"]
try:
    train.main(argv)
finally:
    torch.save({{n: p.detach() for n, p in models[0].named_parameters() if p.requires_grad}},
               os.path.join(os.environ["DUMP"], f"rank{{rank}}.pt"))
    with open(os.path.join(os.environ["DUMP"], f"rank{{rank}}.mode"), "w") as f:
        f.write(str(models[0].checkpointing))
"""


def torchrun(tmp_path, name, argv, **env):
    """2 processes on CPU (gloo); returns (completed process, [rank 0's, rank 1's trainable tensors])."""
    driver, dump = tmp_path / "driver.py", tmp_path / name
    driver.write_text(DRIVER.format(repo=REPO))
    dump.mkdir()
    with subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(driver), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1", DUMP=str(dump), **env)) as p:
        try:
            run = subprocess.CompletedProcess(p.args, 0, *p.communicate(timeout=120))
        except subprocess.TimeoutExpired:                      # ranks that disagree wait on each other: torchrun
            p.terminate()                                      # ends its workers (SIGTERM, then SIGKILL)
            p.communicate()
            raise
    run.returncode = p.returncode
    return run, [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def ddp_flags(tiny, out, *more):  # 2 ranks x 2 sequences x 2 micro-batches = one process's 4 x 2
    return flags(tiny, out, "--batch-size", "2", "--max-steps", "4", "--log-every", "2", "--checkpointing", "full",
                 *more)


def summary(run):
    return json.loads(run.stdout.strip().split("\n")[-1])


def trainable_after(args):
    """train.train(args) in this process; returns (summary, the trained tensors)."""
    models, load = [], train.load_model
    train.load_model = lambda *a: models.append(load(*a)) or models[-1]
    try:
        s = train.train(args)
    finally:
        train.load_model = load
    return s, {n: p.detach() for n, p in models[0].named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    """4 steps on 2 ranks with activation checkpointing, in two launches: Ctrl-C reaches rank 1 alone during step 2
    (rank 1 is pointed at a directory of its own), then --resume. Returns (tmp, first run, resumed run, ranks)."""
    tmp = tmp_path_factory.mktemp("ddp")
    cut, _ = torchrun(tmp, "cut", ddp_flags(tiny, tmp / "out"), SIGINT_AT="3", SIGINT_RANK="1",
                      OTHER_OUT=str(tmp / "rank1"))
    assert cut.returncode != 0 and "interrupted at step 2: checkpoint saved" in cut.stdout, cut.stderr[-3000:]
    state = json.load(open(tmp / "out" / "checkpoint" / "state.json"))
    assert (state["step"], state["micro_batch"], state["world_size"]) == (2, 4, 2)
    resumed, ranks = torchrun(tmp, "resumed", ddp_flags(tiny, tmp / "out", "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return tmp, cut, resumed, ranks


def test_two_ranks_equal_one_process_with_the_global_batch(tiny, runs, tmp_path):
    """Ranks identical; after the Ctrl-C and --resume, equal to one process's straight run with batch 4."""
    tmp, _, resumed, (rank0, rank1) = runs
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    one, single = trainable_after(train.parse_args(ddp_flags(tiny, tmp_path, "--batch-size", "4")))
    assert single.keys() == rank0.keys() and any("B_train" in k and single[k].abs().max() > 1e-3 for k in single)
    for k in single:
        torch.testing.assert_close(rank0[k], single[k], atol=1e-5, rtol=0)
    ddp = summary(resumed)
    assert ddp["world_size"] == 2 and ddp["steps"] == 4 and ddp["final_loss"] == pytest.approx(one["final_loss"], 1e-5)
    assert ddp["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)
    logs = [[json.loads(line) for line in open(d / "metrics.jsonl")] for d in (tmp / "out", tmp_path)]
    assert [m["step"] for m in logs[0]] == [m["step"] for m in logs[1]] == [2, 4, 4]     # loss, loss, val_loss
    assert [m.get("loss", m.get("val_loss")) for m in logs[0]] == pytest.approx(
        [m.get("loss", m.get("val_loss")) for m in logs[1]], rel=1e-5)
    with pytest.raises(train.UserError, match="different settings than the checkpoint.s: 2 -> 1 processes"):
        train.train(train.parse_args(ddp_flags(tiny, tmp / "out", "--resume")))  # its batches are 2 ranks'


def test_rank_0_alone_prints_and_writes(runs):
    tmp, cut, resumed, _ = runs
    for run, last in ((cut, "interrupted at step 2"), (resumed, '{"method"')):
        lines = run.stdout.strip().split("\n")
        assert sum(line.startswith(last) for line in lines) == 1 and sum("step     2/4  epoch " in line for line in
                                                                         lines) == (run is cut)
    assert "4 steps of 2 x 2 sequences x 2 processes" in resumed.stdout
    assert not os.path.exists(tmp / "rank1") and sorted(os.listdir(tmp / "out")) == ["adapter", "checkpoint",
                                                                                      "heldout.jsonl", "metrics.jsonl"]


def test_bytes_all_reduced_are_half_of_loras(tiny, runs, tmp_path):
    """DDP's comm hook is handed LoRA-SP's packed gradients: half of what LoRA on an NF4 base (selective
    checkpointing, a 1-process group here: the buckets do not depend on the number of ranks) sends."""
    _, _, resumed, (rank0, _) = runs
    lorasp = summary(resumed)["allreduce_bytes_per_step"]
    assert "DDP, world size 2: 32,768 bytes of gradients all-reduced per step, 0.50x LoRA's 65,536" in resumed.stdout
    assert lorasp == 4 * sum(t.numel() for t in rank0.values())                        # fp32 gradients
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        lora, _ = trainable_after(train.parse_args(flags(tiny, tmp_path, "--method", "lora", "--quant", "nf4",
                                                         "--checkpointing", "selective", "--max-steps", "2")))
    finally:
        dist.destroy_process_group()
    print(f"bytes all-reduced per step: LoRA-SP {lorasp:,}, LoRA {lora['allreduce_bytes_per_step']:,}")
    assert lora["allreduce_bytes_per_step"] == 4 * lora["trainable_params"] == 65536
    assert lorasp / lora["allreduce_bytes_per_step"] == 0.5


@pytest.mark.parametrize("mode", ["none", "full", "selective"])
def test_ddp_in_one_process_with_each_checkpointing_mode(tiny, tmp_path, mode):
    """A 1-rank gloo group still runs DDP's reducer: no "mark a variable ready only once" with the manual
    checkpointing, and the same adapter as without DDP."""
    adapters = []
    for ddp in (False, True):
        if ddp:
            dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        try:
            s = train.train(train.parse_args(flags(tiny, tmp_path / str(ddp), "--checkpointing", mode, "--max-steps",
                                                   "2", "--save-every", "0")))
        finally:
            if ddp:
                dist.destroy_process_group()
        assert ("allreduce_bytes_per_step" in s) == ddp
        adapters.append(load_safetensors(str(tmp_path / str(ddp) / "adapter" / "adapter_model.safetensors")))
    assert s["allreduce_bytes_per_step"] == 4 * s["trainable_params"]
    for k in adapters[0]:
        torch.testing.assert_close(adapters[1][k], adapters[0][k], atol=1e-6, rtol=0)


def test_ranks_plan_alike_from_the_least_memory(tiny, tmp_path):
    """--checkpointing auto on 2 ranks where one has (here: reads) almost no memory: both take what fits that one
    (full), not each its own choice; the plan line says the figure is the least over the processes."""
    run, _ = torchrun(tmp_path, "dump", ddp_flags(tiny, tmp_path / "out", "--max-steps", "2", "--quant", "none",
                                                  "--checkpointing", "auto", "--force"), SCARCE_RANK="1",
                      OTHER_OUT=str(tmp_path / "rank1"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert [(tmp_path / "dump" / f"rank{r}.mode").read_text() for r in (0, 1)] == ["full", "full"]
    assert "checkpointing full: selective would need" in run.stdout and "; the least over 2 processes" in run.stdout


def test_ranks_resumed_share_early_stoppings_history(tiny, tmp_path):
    """--patience after --resume: every rank reads early stopping's history (metrics.jsonl's evaluations up to the
    checkpoint) before rank 0 rewrites the file. A rank that came late read it empty: it trained on alone after the
    others had stopped, and waited for them. Scripted validation losses: 1, 2, Ctrl-C, then 3, 4: stop at step 4."""
    more = ["--eval-every", "1", "--patience", "3", "--max-steps", "8"]
    cut, _ = torchrun(tmp_path, "cut", ddp_flags(tiny, tmp_path / "out", *more), SIGINT_AT="3", SIGINT_RANK="0",
                      VAL_LOSSES="[1, 2]")
    assert "interrupted at step 2: checkpoint saved" in cut.stdout, cut.stderr[-3000:]
    resumed, _ = torchrun(tmp_path, "resumed", ddp_flags(tiny, tmp_path / "out", *more, "--resume"), LATE_LOG="1",
                          VAL_LOSSES="[3, 4, 5, 6, 7, 8]")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "early stop: no better evaluation in the last 3" in resumed.stdout
    assert (summary(resumed)["steps"], summary(resumed)["evaluated_step"]) == (4, 1)


@pytest.fixture(scope="module")
def bert_sst2(tmp_path_factory):
    """(checkpoint directory, GLUE folder): a tiny random BERT (dropout 0.1, as BERT's) with a WordPiece vocab of a
    few words, and SST-2 TSVs whose 25 training sentences all differ in length (1 to 25 words), so that the two ranks'
    micro-batches do too."""
    d, rng = tmp_path_factory.mktemp("bert"), random.Random(0)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "fine", "bad", "dull", "the", "film", "was", "very"]
    (d / "vocab.txt").write_text("\n".join(words) + "\n")
    torch.manual_seed(0)
    M.save_pretrained(M.build_model(M.EncoderConfig("bert", vocab_size=len(words), n_positions=48, n_embd=32,
                                                    n_ffn=64)), d)
    (d / "SST-2").mkdir()
    for split, lengths in (("train", rng.sample(range(25), 25)), ("dev", [rng.randrange(24) for _ in range(10)])):
        rows = [(" ".join(rng.choices(words[9:], k=k) + [words[5 + 2 * y]]), y)
                for k, y in zip(lengths, (rng.randint(0, 1) for _ in lengths))]
        (d / "SST-2" / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return str(d), str(d)


def glue_flags(bert_sst2, out, *more):
    return ["--model", bert_sst2[0], "--data", "glue/sst2", "--data-dir", bert_sst2[1], "--out", str(out),
            "--batch-size", "2", "--grad-accum", "1", "--seq-len", "32", "--lr", "3e-2", "--rank", "4", "--max-steps",
            "8", "--eval-every", "4", "--log-every", "4", "--save-every", "0", "--dtype", "fp32", *more]


@pytest.fixture(scope="module")
def glue_runs(bert_sst2, tmp_path_factory):
    """SST-2 on the tiny BERT, 8 steps on 2 ranks: straight, and cut by a Ctrl-C (rank 0, step 6) then --resume.
    Returns (tmp, straight run, its ranks' tensors, resumed run, its ranks' tensors)."""
    tmp = tmp_path_factory.mktemp("glue_ddp")
    straight, ranks = torchrun(tmp, "straight", glue_flags(bert_sst2, tmp / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    cut, _ = torchrun(tmp, "cut", glue_flags(bert_sst2, tmp / "out"), LOSS="classification_loss", SIGINT_AT="6",
                      SIGINT_RANK="0")
    assert "interrupted at step 6: checkpoint saved" in cut.stdout, cut.stderr[-3000:]
    resumed, resumed_ranks = torchrun(tmp, "resumed", glue_flags(bert_sst2, tmp / "out", "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return tmp, straight, ranks, resumed, resumed_ranks


def test_glue_on_two_ranks_reports_the_dev_metrics_of_its_adapter(bert_sst2, glue_runs, capsys):
    """A classifier trains under DDP (its loss calls model.classify, which DDP's wrapper lacked: an AttributeError on
    every rank); the dev metrics it reports are one process's eval.py of the adapter it saved, over the whole dev
    set."""
    tmp, straight, (rank0, rank1), _, _ = glue_runs
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0) and any("classifier" in k for k in rank0)
    s = summary(straight)
    assert s["world_size"] == 2 and s["steps"] == 8 and s["evaluated_step"] == 8
    # 25 rows: an epoch's 7th global batch holds one, and rank 1 a filler row (every label IGNORE) that trains nothing
    # and is no token trained on (tokens/s counted it)
    tok = tokenizer.load_tokenizer(bert_sst2[0])
    batches = data.micro_batches(data.glue_examples("sst2", tok, 32, bert_sst2[1])[0], 4, seed=0)
    assert s["tokens"] == sum(int(next(batches)["attention_mask"].sum()) for _ in range(8))
    E.main(["--task", "glue/sst2", "--model", bert_sst2[0], "--adapter", str(tmp / "straight" / "adapter"),
            "--data-dir", bert_sst2[1], "--seq-len", "32", "--batch-size", "2"])
    one = json.loads(capsys.readouterr().out.strip().split("\n")[-1])
    assert one["dev"] == pytest.approx(s["dev"], abs=1e-6, rel=0) and s["val_loss"] == s["dev"]["loss"]


def test_glue_resume_on_two_ranks_goes_on_bit_for_bit(glue_runs):
    """Dropout draws as many numbers as a rank's micro-batch has elements, so the ranks' RNG states part ways: the
    checkpoint keeps each rank's (it kept rank 0's, which rank 1 then went on from)."""
    tmp, straight, ranks, resumed, resumed_ranks = glue_runs
    for r in (0, 1):
        assert all(torch.equal(resumed_ranks[r][k], ranks[r][k]) for k in ranks[r])
    assert summary(resumed)["dev"] == summary(straight)["dev"]
    assert set(load_safetensors(str(tmp / "out" / "checkpoint" / "rng.safetensors"))) == {"torch", "torch.1"}


def test_micro_batches_shard_one_process_batches():
    """Ranks take every world-th example of one process's batches of batch_size x world; a rank left without one
    (a short last batch) gets an example with no labelled token."""
    examples = [dict(input_ids=list(range(n + 1)), labels=list(range(n + 1))) for n in range(13)]
    one = data.micro_batches(examples, 6, seed=3)
    ranks = [data.micro_batches(examples, 2, seed=3, rank=r, world=3) for r in range(3)]
    for _ in range(5):                                                 # 3 batches per epoch (6, 6, 1), and on
        whole, parts = next(one), [next(s) for s in ranks]
        rows = [row for p in parts for row in p["labels"].tolist() if any(t != data.IGNORE for t in row)]
        want = whole["labels"].tolist()
        strip = lambda row: [t for t in row if t != data.IGNORE]   # noqa: E731  (padding differs)
        assert sorted(map(strip, rows)) == sorted(map(strip, want))
        if len(want) == 1:
            assert all((p["labels"] == data.IGNORE).all() for p in parts[1:])
    resumed, again = (data.micro_batches(examples, 2, seed=3, start=s, rank=1, world=3) for s in (4, 0))
    for _ in range(4):                                                 # start counts global batches
        next(again)
    assert all(torch.equal(next(resumed)["input_ids"], next(again)["input_ids"]) for _ in range(4))


def test_an_early_stop_at_the_first_step_after_a_resume_says_the_world_size_once(tiny, tmp_path):
    """--patience 2 stopping at step 3, the first step after a --resume from step 2, between progress lines: the
    progress line the stop logs printed the 'DDP, world size 2' line a second time (it prints after a process's
    first step)."""
    more = ["--eval-every", "1", "--patience", "2", "--max-steps", "8"]
    cut, _ = torchrun(tmp_path, "cut", ddp_flags(tiny, tmp_path / "out", *more), SIGINT_AT="3", SIGINT_RANK="0",
                      VAL_LOSSES="[1, 2]")
    assert "interrupted at step 2: checkpoint saved" in cut.stdout, cut.stderr[-3000:]
    resumed, _ = torchrun(tmp_path, "resumed", ddp_flags(tiny, tmp_path / "out", *more, "--resume"),
                          VAL_LOSSES="[3]")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "early stop: no better evaluation in the last 2" in resumed.stdout and summary(resumed)["steps"] == 3
    assert resumed.stdout.count("DDP, world size 2") == 1, resumed.stdout
