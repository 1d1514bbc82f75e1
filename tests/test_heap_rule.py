"""checkpoint.trim_if_crept, train.py's heap rule, fed the resident sizes of a run step by step: it lets a steady run
be (glibc's dynamic mmap threshold grows the second step's resident size by a fifth once, without any creep) and
still trims a run whose memory creeps."""
import pytest

import checkpoint as C

GiB = 2 ** 30


def trims(monkeypatch, sizes):
    """The sizes (resident after each step) after which trim_if_crept trimmed, called after each step as train.py
    does."""
    now, trimmed, heap = [0], [], None
    monkeypatch.setattr(C, "resident", lambda field="VmRSS": now[0])
    monkeypatch.setattr(C, "trim_heap", lambda: trimmed.append(now[0]))
    for size in sizes:
        now[0] = size
        heap = C.trim_if_crept(heap)
    return trimmed


def test_a_steady_run_is_not_trimmed_after_its_second_step(monkeypatch):
    """The 134M Llama, fp32, 4 x 256, one thread (docs/benchmarks-7b.md, session 27): 1.48 GiB resident after the
    first step (its large activations were fresh mappings, unmapped when freed), 1.81 after the second and every later
    one (the same blocks now kept in the heap). Trimming after the second step only refaults those pages in the third
    (0.32 s of system time against 0.03)."""
    steady = [int(g * GiB) for g in (1.48, 1.81, 1.81, 1.80, 1.81, 1.81, 1.82, 1.81)]
    assert trims(monkeypatch, steady) == []


@pytest.mark.parametrize("sizes, expected", [
    # from the 134M run's steady 1.81 GiB (the second step's), creeping: trimmed at the first size past 1.1 x 1.81;
    # the next step sets a new base (2.1), and 2.0, 2.1, 2.15 stay under 2.31
    ([1.48, 1.81, 1.90, 2.0, 2.1, 2.0, 2.1, 2.15], [2.0]),
    # creeping 5% a step from the first step: the second step (1.05) keeps the first's base, the third (1.1025) is past
    # 1.1 and trimmed; then 1.2 is the base, 1.26 the second step, 1.323 trimmed
    ([1.0, 1.05, 1.1025, 1.2, 1.26, 1.323], [1.1025, 1.323]),
    # the second step moves the base up once (1.0 -> 1.3), not twice: 1.44 (> 1.43) is trimmed
    ([1.0, 1.3, 1.44, 1.5], [1.44]),
    # after a trim, the same again: 1.5 the base, 2.0 the new base, 2.3 (> 2.2) trimmed
    ([1.0, 1.3, 1.44, 1.5, 2.0, 2.3], [1.44, 2.3]),
])
def test_a_creeping_run_is_trimmed(monkeypatch, sizes, expected):
    assert trims(monkeypatch, [int(g * GiB) for g in sizes]) == [int(g * GiB) for g in expected]


def test_no_proc_no_trim(monkeypatch):
    """Where there is no /proc, resident() is 0: nothing to compare, nothing trimmed."""
    assert trims(monkeypatch, [0] * 6) == []
