"""The commands in the environments users run them in (session 32): Windows' facts simulated on Linux, a terminal
that cannot show a character, a reader that goes away. Each runs the real command in its own process, as a user
would."""
import json
import os
import re
import shlex
import signal
import subprocess
import sys

import pytest

from fixtures import flags, tiny  # noqa: F401  (tiny: a fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Windows' facts on Linux, as a sitecustomize.py first on PYTHONPATH: no fcntl or resource module, a folder cannot be
# os.open'ed (PermissionError), no /proc (FileNotFoundError); shutil.rmtree as Windows runs it (no folder fds). A
# simulation of what lorasp's own code meets, not a Windows run (no drive letters, no open files that cannot be removed)
WINDOWS = '''
import builtins, errno, io, os, shutil, sys
sys.modules["fcntl"] = sys.modules["resource"] = None
shutil._use_fd_functions = False
opened, os_opened = builtins.open, os.open

def proc(path):
    return isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(os.path.abspath(path)).startswith("/proc/")

def open(file, *a, **k):
    if proc(file):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", file)
    return opened(file, *a, **k)

def os_open(path, flags, mode=0o777, *, dir_fd=None):
    if proc(path):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
    if dir_fd is None and os.path.isdir(path):
        raise PermissionError(errno.EACCES, "Permission denied", path)
    return os_opened(path, flags, mode, dir_fd=dir_fd)

builtins.open = io.open = open
os.open = os_open
'''

# the offline demo (train.main as `python train.py` calls it) with its pretraining recipe made small (as tests/
# test_locks.py's); under WINDOWS, checking first that the simulation holds in this process
SMALL_DEMO = '''
import sys, cli, train
cli.DEMO_PRETRAIN.update(docs=300, config=dict(n_layer=1, n_embd=32, n_head=2, n_kv_head=2, n_ffn=64))
train.main(sys.argv[1:])
'''
DEMO = '''
import os, sys
for name in ("fcntl", "resource"):
    try:
        __import__(name)
        sys.exit(name + " imports")
    except ImportError:
        pass
for path in (os.getcwd(), "/proc/self/status"):
    try:
        os.open(path, os.O_RDONLY)
        sys.exit(path + " opens")
    except (PermissionError, FileNotFoundError):
        pass
''' + SMALL_DEMO


def command(args, env, cwd=ROOT):
    """A command's (exit status, stdout + stderr) in its own process."""
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    """(env with the simulation, env without it, the demo's --out, what the demo printed): one offline demo of 2 steps
    run under the simulation, its cache in a scratch folder."""
    tmp = tmp_path_factory.mktemp("windows")
    (tmp / "sim").mkdir()
    (tmp / "sim" / "sitecustomize.py").write_text(WINDOWS)
    plain = dict(os.environ, LORASP_CACHE=str(tmp / "cache"), PYTHONPATH=os.pathsep.join([ROOT, f"{ROOT}/tests"]))
    env = dict(plain, PYTHONPATH=os.pathsep.join([str(tmp / "sim"), plain["PYTHONPATH"]]))
    status, out = command(["-c", DEMO, "--max-steps", "2", "--out", str(tmp / "demo")], env)
    assert status == 0, out
    return env, plain, tmp / "demo", out


def test_the_offline_demo_runs_where_there_is_no_fcntl_resource_nor_proc(windows):
    """Under Windows' facts `python train.py` died at its imports ("import of resource halted": plan.py imported it at
    the top); past that, on the --out lock (checkpoint.locked os.open'ed the folder: "[Errno 13] Permission denied")
    and at the first progress line (ru_maxrss, the peak where no /proc is). Now it runs: the peak is unknown (null in
    the summary), --out is said not to be locked, once (the pretraining's --out too is claimed), and the adapter is
    written."""
    env, plain, out, printed = windows
    lines = printed.splitlines()
    notes = [line for line in lines if "is not locked" in line]
    assert len(notes) == 1 and re.fullmatch(r"note: --out \S+ is not locked: no file locks here \(no fcntl: Windows; "
                                            r"or a file system without them\), so a second train.py into it would not "
                                            r"be refused: start one at a time", notes[0]), printed
    assert any(line.startswith("step     2/2  epoch ") and line.endswith("peak unknown") for line in lines), printed
    summary = json.loads(lines[-1])
    assert summary["steps"] == 2 and summary["peak_mem_mib"] is None and summary["train_peak_mem_mib"] is None
    assert sorted(os.listdir(out / "adapter")) == ["adapter_config.json", "adapter_model.safetensors",
                                                   "lorasp_extras.safetensors"]


def test_eval_scores_the_demo_alike_with_and_without_windows_facts(windows):
    """eval.py under the simulation: the perplexity the plain command prints, to the digit."""
    env, plain, out, printed = windows
    evaluate = next(line for line in printed.splitlines() if line.startswith("evaluate: python eval.py")).split()[2:]
    results = [command(evaluate, e) for e in (env, plain)]
    assert [status for status, _ in results] == [0, 0], results
    simulated, real = (json.loads(out.splitlines()[-1]) for _, out in results)
    assert simulated == real and simulated["task"] == "perplexity" and simulated["tokens"] > 0


def test_a_terminal_that_cannot_show_a_folder_s_name_keeps_the_summary(tiny, tmp_path):
    """PYTHONIOENCODING=ascii (or a Windows console's cp1252) and an --out named "rün": the run trained and saved, then
    its closing lines raised UnicodeEncodeError: a traceback, exit 1, the summary never printed. Now the name is
    written in UTF-8 (as the shell gave it) and the summary is the last line."""
    out = tmp_path / "rün"
    status, printed = command(["train.py", *flags(tiny, out)], dict(os.environ, PYTHONIOENCODING="ascii"))
    assert status == 0, printed
    assert f"{out}/adapter (the result)" in printed and json.loads(printed.splitlines()[-1])["steps"] == 10


def test_a_run_whose_reader_went_away_trains_to_its_end(tiny, tmp_path):
    """`python train.py ... | head -1`: the second print raised BrokenPipeError and ended the run ("error: [Errno 32]
    Broken pipe", exit 1), nothing saved. Now the run goes on printing nowhere, says so once on stderr, and ends
    with its result saved, exit 0."""
    out = tmp_path / "piped"
    child = subprocess.Popen([sys.executable, "train.py", *flags(tiny, out)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        first = child.stdout.readline()
        child.stdout.close()                                           # head -1 has its line
        status, errors = child.wait(timeout=300), child.stderr.read()
    finally:
        child.kill()
    assert first and status == 0, errors
    assert errors == "note: stdout's reader is gone (Broken pipe): this command goes on, printing nowhere (Ctrl-C " \
                     "stops it)\n"
    assert json.load(open(out / "checkpoint" / "state.json"))["step"] == 10 and (out / "adapter").is_dir()


# train.py as `python train.py` starts (checks.console), killed (SIGKILL: the OOM killer's) as its model starts loading
KILLED_LOADING = """
import os, signal, sys, checks, train
checks.console()
train.load_model = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
train.main(sys.argv[1:])
"""


def test_a_run_killed_while_loading_keeps_its_memory_plan_in_a_log_file(tiny, tmp_path):
    """stdout to a file (a Slurm job's log, nohup.out) is block-buffered: a run the OOM killer ended while loading left
    an empty log, the memory plan printed before the load lost with the buffer, where it would say why. Now stdout is
    line-buffered: every line printed before the kill is in the file."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}   # (a user's shell: Python's buffering)
    with open(tmp_path / "log", "w") as log:
        status = subprocess.run([sys.executable, "-c", KILLED_LOADING, *flags(tiny, tmp_path / "out")], cwd=ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT, timeout=300).returncode
    lines = (tmp_path / "log").read_text().splitlines()
    assert status == -signal.SIGKILL and any(line.startswith("memory plan: ") for line in lines), lines
    assert " train / 6 held-out examples of 60 records" in lines[-1], lines


def test_the_evaluate_line_runs_as_printed_from_another_folder(tiny, tmp_path):
    """`cd elsewhere && python /path/to/train.py ... --out "rün 1"`: the closing line said `evaluate: python eval.py
    ...`, which from there is "can't open file '.../eval.py'". Now it names eval.py by its path, and pasted in the same
    folder it scores the run (its relative paths as given)."""
    (tmp_path / "elsewhere").mkdir()
    status, printed = command([f"{ROOT}/train.py", *flags(tiny, "rün 1")], os.environ, cwd=tmp_path / "elsewhere")
    evaluate = next(line for line in printed.splitlines() if line.startswith("evaluate: "))
    assert status == 0 and evaluate.startswith(f"evaluate: python {ROOT}/eval.py --task perplexity --data 'rün "
                                               "1/heldout.jsonl'"), printed
    status, printed = command(shlex.split(evaluate)[2:], os.environ, cwd=tmp_path / "elsewhere")
    assert status == 0 and json.loads(printed.splitlines()[-1])["task"] == "perplexity", printed


def test_the_offline_demo_runs_in_the_c_locale(tmp_path):
    """LC_ALL=C with PYTHONUTF8=0 (a cron job, a bare container: Python's files and streams in ASCII): the first
    `python train.py` pretrained the demo's model, then died saving it ("error: 'ascii' codec can't encode character
    '\\u2581'": the tokenizer.json beside it, written in the locale's encoding); export.py of a .gguf likewise. Now
    atomic_write writes text as UTF-8 (JSON's encoding), whatever the locale."""
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", LORASP_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([ROOT, f"{ROOT}/tests"]))
    status, printed = command(["-c", SMALL_DEMO, "--max-steps", "2", "--out", str(tmp_path / "demo")], env)
    assert status == 0 and json.loads(printed.splitlines()[-1])["steps"] == 2, printed
    model = next(line for line in printed.splitlines() if line.startswith("evaluate: ")).split("--model ")[1].split()[0]
    assert "\u2581" in open(os.path.join(model, "tokenizer.json"), encoding="utf-8").read()   # (read as UTF-8)
