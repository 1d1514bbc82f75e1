"""Shared test settings: one torch thread per process, and the suite on two processes where pytest-xdist is installed.

`python -m pytest -q` runs the tests in 2 worker processes (pytest-xdist, requirements-dev.txt) when this machine lets
this process use 2 or more CPUs (the whole suite on a quiet 2-core machine: 594 s in one process, 348 s in two).
`-n 0` or `-p no:xdist` runs them in this process, as do one test file (2 workers would only add their start-up),
`-s`, `--pdb` and `--collect-only` (which need the tests here); `-n N` picks N workers. Under workers:
- each test file runs on one worker (`--dist loadfile`), so a module's fixtures (a trained model, torchrun launches)
  are built once, as in a serial run;
- a test marked `alone` (it needs both CPUs: a thread race in a fresh process) waits until the other worker's test
  ends and holds the other workers back until it ends itself.
"""
import fcntl
import os
import shutil
import signal
import tempfile

import pytest
import torch

# Child processes (train.py, torchrun's ranks) start with one thread too, unless the caller asked for more: two workers
# each running a two-thread child on 2 CPUs would wait on each other.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Ctrl-C as the tests send it (fixtures.fault_at_loss_call): pytest started in the background of a non-interactive shell
# (`pytest &` in a script) inherits SIGINT ignored, which train.py then keeps ignored (resume.stop_signals, as under
# nohup), so those tests saw no stop ("DID NOT RAISE"). The suite runs with Python's own Ctrl-C however it was started.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core CPU two threads wait on each other (10x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which turns -n into worker processes
def pytest_cmdline_main(config):
    """No -n given: 2 workers, each test file on one, where xdist is installed, 2 CPUs are ours, the tests need not
    run in this process and more than one file is asked for (one file would run on one worker, after both started)."""
    if (not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput")
            or config.option.numprocesses is not None or config.option.dist != "no" or cpus() < 2
            or config.option.usepdb or config.option.collectonly or config.option.capture == "no"):
        return
    paths = {arg.split("::")[0] for arg in config.args}
    if len(paths) < 2 and not any(os.path.isdir(p) for p in paths):
        return
    config.option.numprocesses, config.option.dist = 2, "loadfile"
    config.option.loadscopereorder = False  # files in the order below, not by their number of tests


# The longest files (minutes, in few tests), started first so that both workers end at about the same time; the rest
# follow in their usual order. A file missing here only starts later.
SLOW_FIRST = ["test_real_tokenizers.py", "test_real_models.py", "test_faults.py", "test_ddp.py",
              "test_export_tokenizer.py", "test_gpu_check.py", "test_real_tokenizer_files.py", "test_export.py",
              "test_plan.py", "test_bad_input.py", "test_gguf.py"]


def pytest_collection_modifyitems(config, items):
    if hasattr(config, "workerinput"):  # every worker collects the same order, which the controller hands out
        rank = {name: i for i, name in enumerate(SLOW_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_configure(config):
    config.addinivalue_line("markers", "alone: runs while no other worker runs a test (it needs both CPUs)")
    if not hasattr(config, "workerinput") and config.getoption("dist", "no") != "no":  # the controller of workers
        config.lorasp_locks = tempfile.mkdtemp(prefix="lorasp-pytest-locks-")


def pytest_unconfigure(config):
    if getattr(config, "lorasp_locks", None):
        shutil.rmtree(config.lorasp_locks, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: the controller hands each worker the folder of the locks
def pytest_configure_node(node):
    if getattr(node.config, "lorasp_locks", None):
        node.workerinput["lorasp_locks"] = node.config.lorasp_locks


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """On a worker: a test marked `alone` takes the gate, then the run lock for itself; any other test passes the gate
    and shares the run lock. The gate, held while `alone` waits, keeps the other worker from starting its next test."""
    folder = getattr(item.config, "workerinput", {}).get("lorasp_locks")
    if folder is None:
        yield
        return
    alone = item.get_closest_marker("alone") is not None
    with open(os.path.join(folder, "gate"), "a") as gate, open(os.path.join(folder, "run"), "a") as run:
        fcntl.flock(gate, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        fcntl.flock(run, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield
