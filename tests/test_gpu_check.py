"""bench/gpu_check.py, the one-shot GPU script, checked on CPU: --dry-run runs its code paths on a tiny shape and
prints the JSON summary the GPU run prints; its test selection picks exactly the device-parametrized cases."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import gpu_check  # noqa: E402


def test_device_cases_are_the_parametrized_ones():
    ids = ["tests/test_quant.py::test_a[cpu]", "tests/test_lorasp.py::test_b[mask-element-cuda]",
           "tests/test_quant.py::test_double_quant_against_bitsandbytes_cpu_library", "tests/t.py::test_c[cpu-2]",
           "tests/t.py::test_d[x-cpu-y]", "tests/t.py::test_e[cpux]"]
    assert gpu_check.device_cases(ids, "cpu") == [ids[0], ids[3], ids[4]]
    assert gpu_check.device_cases(ids, "cuda") == [ids[1]]


def test_dry_run_prints_the_summary():
    p = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry-run", "--skip-tests"], cwd=ROOT,
                       capture_output=True, text=True)
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


def test_only_cli_on_a_whole_preset():
    """--only-cli --cli-preset NAME: part 4 alone, on a checkpoint of the preset's whole shape (llama2-7b on a GPU)."""
    p = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry-run", "--only-cli", "--cli-preset", "llama-tiny"],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    s = json.loads(p.stdout.strip().splitlines()[-1])
    assert "ours" not in s and "tests" not in s
    assert s["cli"]["shape"] == "llama-tiny" and s["cli"]["steps"] == 2 and s["cli"]["tokens_per_s"] > 0, s["cli"]
