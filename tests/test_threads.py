"""CPU threads in a container, a Slurm job, under OMP_NUM_THREADS: plan.pick_threads against fake control groups
(tests/test_plan.py's `cgroups`: a fake /sys/fs/cgroup and /proc/self/cgroup) and a fake affinity.

torch's default thread count is the machine's cores (or the affinity mask's); it does not read a control group's CPU
quota. In a container of 2 CPUs (docker --cpus=2) on a 64-core host, train.py ran 64 threads sharing 2 CPUs' time,
throttled by the kernel each period, and said "64 threads" as if that were a choice."""
import os
import re
import subprocess
import sys

import pytest
import torch

import cli
import eval as E
import export
import generate
import plan
import train
from fixtures import flags, tiny  # noqa: F401  (the tiny fixture)
from test_plan import cgroups

LIMITS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "SLURM_CPUS_PER_TASK")


@pytest.fixture
def big_host(monkeypatch):
    """A 64-core host: torch's default 64 threads, 64 CPUs in the affinity mask, no thread variable set."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    for name in LIMITS:
        monkeypatch.delenv(name, raising=False)


def test_a_cgroup_v2_cpu_quota_sets_the_threads(tmp_path, monkeypatch, big_host):
    """docker --cpus=2 / a Kubernetes limit of 2 CPUs: cpu.max "200000 100000" in the container's own group (its
    mount's root); "max" is no quota; a parent's tighter quota (a pod's, over its container's) counts."""
    cgroups(tmp_path, monkeypatch, "0::/\n", {".": {"cpu.max": "200000 100000\n"}})
    assert plan.cgroup_cpus() == (2.0, f"{tmp_path}/cg/cpu.max")
    n, why = plan.pick_threads()
    assert n == 2 and why == f"the 2 CPUs this process may use: its control group's quota of 2 CPUs, " \
        f"{tmp_path}/cg/cpu.max; torch's default: 64"
    cgroups(tmp_path, monkeypatch, "0::/\n", {".": {"cpu.max": "max 100000\n"}})
    assert plan.cgroup_cpus() is None and plan.pick_threads() == (64, "")
    cgroups(tmp_path, monkeypatch, "0::/kubepods/pod1/ctr\n", {"kubepods/pod1": {"cpu.max": "300000 100000\n"},
                                                              "kubepods/pod1/ctr": {"cpu.max": "max 100000\n"},
                                                              ".": {"cpu.max": "max 100000\n"}})
    assert plan.cgroup_cpus() == (3.0, f"{tmp_path}/cg/kubepods/pod1/cpu.max") and plan.pick_threads()[0] == 3


def test_a_quota_below_one_cpu_is_one_thread_and_a_fraction_rounds_up(tmp_path, monkeypatch, big_host):
    cgroups(tmp_path, monkeypatch, "0::/\n", {".": {"cpu.max": "50000 100000\n"}})
    assert plan.pick_threads()[0] == 1 and "quota of 0.5 CPUs" in plan.pick_threads()[1]
    cgroups(tmp_path, monkeypatch, "0::/\n", {".": {"cpu.max": "250000 100000\n"}})
    assert plan.pick_threads()[0] == 3


def test_a_cgroup_v1_cpu_quota_up_the_hierarchy(tmp_path, monkeypatch, big_host):
    """cgroup v1 (cpu,cpuacct mounted together; -1: no quota): a Slurm job's group under a tighter parent, and a
    container's own mount, where the path's first folders are not there."""
    cgroups(tmp_path, monkeypatch, "6:memory:/slurm/job7\n4:cpu,cpuacct:/slurm/job7\n0::/\n", {
        "cpu,cpuacct": {"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"},
        "cpu,cpuacct/slurm": {"cpu.cfs_quota_us": "400000\n", "cpu.cfs_period_us": "100000\n"},
        "cpu,cpuacct/slurm/job7": {"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"}})
    assert plan.cgroup_cpus() == (4.0, f"{tmp_path}/cg/cpu,cpuacct/slurm/cpu.cfs_quota_us")
    assert plan.pick_threads()[0] == 4
    for tree in ("b", "c"):                                    # (each tree in a folder of its own)
        (tmp_path / tree).mkdir()
    cgroups(tmp_path / "b", monkeypatch, "4:cpu,cpuacct:/docker/ab12\n", {"cpu": {  # only the link's name mounted
        "cpu.cfs_quota_us": "150000\n", "cpu.cfs_period_us": "100000\n"}})
    assert plan.cgroup_cpus() == (1.5, f"{tmp_path}/b/cg/cpu/cpu.cfs_quota_us") and plan.pick_threads()[0] == 2
    cgroups(tmp_path / "c", monkeypatch, "4:cpu:/\n", {"cpu": {"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us":
                                                                 "1000\n"}})
    assert plan.cgroup_cpus() is None and plan.pick_threads() == (64, "")


def test_the_affinity_and_the_thread_variables_count_and_threads_wins(tmp_path, monkeypatch, big_host):
    """taskset / a Slurm cpuset (the affinity mask), OMP_NUM_THREADS and the others (the user's choice, or the job's):
    the fewest counts; --threads, given, is taken as it is (cli.py's note says when it passes the CPUs)."""
    cgroups(tmp_path, monkeypatch, "0::/\n", {".": {"cpu.max": "800000 100000\n"}})
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert plan.pick_threads() == (3, "the 3 CPUs this process may use: its affinity; torch's default: 64")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert plan.pick_threads() == (2, "OMP_NUM_THREADS=2; torch's default: 64")
    monkeypatch.setenv("OMP_NUM_THREADS", "1,4")                # OpenMP's nested form: the outer level's
    assert plan.pick_threads()[0] == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")               # not a count: torch warns of it, and it counts for
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")              # nothing here
    assert plan.pick_threads() == (2, "SLURM_CPUS_PER_TASK=2; torch's default: 64")
    assert plan.pick_threads(16) == (16, "")



def test_a_thread_variable_of_other_digits_counts_for_nothing(tmp_path, monkeypatch, big_host):
    """OMP_NUM_THREADS=² (a superscript, Unicode's digit to str.isdigit) was int()'s ValueError, a traceback before
    any flag was read in train.py, eval.py, generate.py and export.py; ٣ (Arabic-Indic 3) was taken as 3, though
    OpenMP reads ASCII digits only. Both count for nothing now, as "lots" does."""
    for value in ("²", "٣", "3²"):
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert plan.pick_threads() == (64, ""), value

def test_a_quota_torch_follows_already_is_not_said(tmp_path, monkeypatch, big_host):
    """Where torch's default is already the fewest (this process's threads as set), nothing is said."""
    cgroups(tmp_path, monkeypatch, "0::/\n", {".": {"cpu.max": "200000 100000\n"}})
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert plan.pick_threads() == (2, "")


def test_the_threads_note_counts_the_quota(tmp_path, monkeypatch, capsys, big_host):
    """--threads past the CPUs: the note counted the affinity alone (64 here), under a quota of 2 it said nothing."""
    cgroups(tmp_path, monkeypatch, "0::/\n", {".": {"cpu.max": "200000 100000\n"}})
    cli.parse_args(["--model", "smollm2-135m", "--data", "demo", "--threads", "8"])
    assert f"note: --threads 8 is more than the 2 CPUs this process may use (its control group's quota of 2 CPUs, " \
        f"{tmp_path}/cg/cpu.max): the extra threads wait on each other" in capsys.readouterr().out


def test_train_py_in_a_container_runs_the_quotas_threads_and_says_why(tiny, tmp_path):  # noqa: F811
    """train.py in a fresh process whose control groups (plan's roots) give 0.5 CPU, torch's default 4 threads (set
    before main: a bigger host's) and no OMP_NUM_THREADS: it ran 4 threads, its first line said "4 threads" as if
    chosen. Now 1, and why, before the dtype line, which says the count torch runs with."""
    (tmp_path / "cg").mkdir()
    (tmp_path / "cg" / "cpu.max").write_text("50000 100000\n")
    (tmp_path / "self-cgroup").write_text("0::/\n")
    boot = (f"import sys, torch, plan, train; plan.CGROUP, plan.PROC_CGROUP = {str(tmp_path / 'cg')!r}, "
            f"{str(tmp_path / 'self-cgroup')!r}; torch.set_num_threads(4); train.main(sys.argv[1:])")
    env = {k: v for k, v in os.environ.items() if k not in LIMITS}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.abspath(plan.__file__)), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", boot, *flags(tiny, tmp_path / "out", "--max-steps", "1")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    said = [i for i, line in enumerate(lines) if line.startswith("threads ")]
    assert [lines[i] for i in said] == [f"threads 1 (the 1 CPU this process may use: its control group's quota of 0.5 "
                                        f"CPUs, {tmp_path}/cg/cpu.max; torch's default: 4)"], done.stdout[:1000]
    assert re.search(r"\(--dtype fp32\), 1 thread$", lines[said[0] + 1]), done.stdout[:1000]


def test_a_benchmarks_cpu_line_says_the_threads_and_the_quota(tmp_path, monkeypatch, big_host):
    """bench/*.py said the bf16 flags of /proc/cpuinfo (any CPU's) and not the quota: a container's figures read as a
    big host's. Their line (bench/children.cpus_said asks plan's) says the threads, the CPUs and why, the units."""
    cgroups(tmp_path, monkeypatch, "0::/\n", {".": {"cpu.max": "200000 100000\n"}})
    monkeypatch.setattr(plan, "cpu_bf16_units", lambda: ["amx_bf16"])
    said = f"2 CPUs this process may use (its control group's quota of 2 CPUs, {tmp_path}/cg/cpu.max); bf16 units: " \
        "amx_bf16 (what --dtype auto reads)"
    assert plan.cpus_said() == "CPU: 2 threads, " + said and plan.cpus_said(1) == "CPU: 1 thread, " + said


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):  # noqa: F811
    """A run's folder (its adapter) on the tiny fixture, for export.py."""
    out = tmp_path_factory.mktemp("run")
    train.main(flags(tiny, out, "--max-steps", "1"))
    return out


@pytest.mark.parametrize("command", ["eval", "generate", "export"])
def test_eval_generate_and_export_run_the_quotas_threads(command, tiny, trained, tmp_path, monkeypatch,  # noqa: F811
                                                          capsys, big_host):
    """eval.py, generate.py and export.py set no thread count: torch's default, the host's cores, in a container of 2
    CPUs too. Now each takes plan.pick_threads' and says why on stderr (generate.py's stdout is the text alone)."""
    cgroups(tmp_path, monkeypatch, "0::/\n", {".": {"cpu.max": "200000 100000\n"}})
    monkeypatch.setattr(torch, "set_num_threads", (set_to := []).append)
    dict(eval=lambda: E.main(["--task", "perplexity", "--model", tiny[0], "--data", tiny[1]]),
         generate=lambda: generate.main(argv=["--model", tiny[0], "--max-new-tokens", "2"]),
         export=lambda: export.main(["--model", tiny[0], "--adapter", str(trained), "--out", str(tmp_path / "m")]))[
             command]()
    assert set_to == [2] and f"threads 2 (the 2 CPUs this process may use: its control group's quota of 2 CPUs, " \
        f"{tmp_path}/cg/cpu.max; torch's default: 64)\n" in capsys.readouterr().err
