"""bench/gpu_check.py, the one-shot GPU script, checked on CPU: --dry-run runs its code paths on a tiny shape and
prints the JSON summary the GPU run prints; its test selection picks exactly the device-parametrized cases."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import gpu_check  # noqa: E402


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """The two --dry-run commands the tests below check, started at once (independent processes, each ~10-17 s,
    mostly imports and a train.py child: they overlap on two cores); {name: CompletedProcess}. Output goes to files, not
    pipes, so neither blocks on a full pipe while the other is read."""
    d, runs = tmp_path_factory.mktemp("gpu_check"), {}
    commands = dict(summary=["--dry-run", "--skip-tests"],
                    only_cli=["--dry-run", "--only-cli", "--cli-preset", "llama-tiny"])
    for name, argv in commands.items():
        out, err = open(d / f"{name}.out", "w"), open(d / f"{name}.err", "w")
        runs[name] = subprocess.Popen([sys.executable, "bench/gpu_check.py", *argv], cwd=ROOT, stdout=out, stderr=err)
        out.close(), err.close()
    return {name: subprocess.CompletedProcess(p.args, p.wait(timeout=600), (d / f"{name}.out").read_text(),
                                              (d / f"{name}.err").read_text()) for name, p in runs.items()}


def test_device_cases_are_the_parametrized_ones():
    ids = ["tests/test_quant.py::test_a[cpu]", "tests/test_lorasp.py::test_b[mask-element-cuda]",
           "tests/test_quant.py::test_double_quant_against_bitsandbytes_cpu_library", "tests/t.py::test_c[cpu-2]",
           "tests/t.py::test_d[x-cpu-y]", "tests/t.py::test_e[cpux]"]
    assert gpu_check.device_cases(ids, "cpu") == [ids[0], ids[3], ids[4]]
    assert gpu_check.device_cases(ids, "cuda") == [ids[1]]


def test_dry_run_prints_the_summary(dry_runs):
    p = dry_runs["summary"]                    # bench/gpu_check.py --dry-run --skip-tests
    assert p.returncode == 0, p.stderr[-2000:]
    s = json.loads(p.stdout.strip().splitlines()[-1])
    assert s["shape"] == "tiny" and s["tests"] is None
    assert s["dequantize"]["torch"]["fraction_of_copy"] > 0
    assert s["dequantize"]["triton"].startswith("not used") and s["dequantize"]["step_uses_triton"] is False  # CPU
    for who in ("ours", "peft"):
        assert s[who]["trainable"] > 0 and set(s[who]) >= {"1x32", "2x32"}
        assert all(s[who][b]["tokens_per_s"] > 0 for b in ("1x32", "2x32"))
    assert s["ours"]["trainable"] * 2 == s["peft"]["trainable"]    # LoRA-SP trains half of LoRA's entries
    assert set(s["ratio"]) == {"1x32", "2x32"}
    assert s["cli"]["steps"] == 2 and s["cli"]["tokens_per_s"] > 0 and s["cli"]["peak_mem_mib"] > 0, s["cli"]


def test_only_cli_on_a_whole_preset(dry_runs):
    """--only-cli --cli-preset NAME: part 4 alone, on a checkpoint of the preset's whole shape (llama2-7b on a GPU)."""
    p = dry_runs["only_cli"]                   # bench/gpu_check.py --dry-run --only-cli --cli-preset llama-tiny
    assert p.returncode == 0, p.stderr[-2000:]
    s = json.loads(p.stdout.strip().splitlines()[-1])
    assert "ours" not in s and "tests" not in s
    assert s["cli"]["shape"] == "llama-tiny" and s["cli"]["steps"] == 2 and s["cli"]["tokens_per_s"] > 0, s["cli"]
