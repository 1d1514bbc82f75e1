"""Two processes at once (twenty-second session): the locks that keep them apart, each race replayed in one process
with a hook that runs the other side inside the window (a flock called late, a write half-done), so the order that
broke them is the order tested. What went wrong before is in each test's docstring."""
import builtins
import fcntl
import os

import pytest

import checkpoint
import resume


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
    removed file, while a fourth made and locked a new one: both wrote OUT (1,093 entries of 4 processes, 692 of them
    beside another, and 32 died in their exit on the lock file the other had removed:
    /tmp/s22/locks22-repro/one_writer_race.py). train.py's --out, a folder it made and left empty, was removed
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
