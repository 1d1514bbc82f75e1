"""What the step benchmarks share: every config in a fresh child process (nothing of another config's memory is
inherited), the config list run several times in turn (drift on a shared machine hits every config alike), and the
child's peak resident memory read from /proc/self/status."""
import json
import os
import subprocess
import sys

GiB = 1 << 30
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def proc_status(field="VmHWM"):
    """A memory field of /proc/self/status in bytes: VmHWM, the resident high-water mark; VmRSS, the resident size."""
    return [int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field)][0]


def run_children(script, configs, repeats, flags, env=None):
    """{config: [the JSON line each run printed last]}: `python SCRIPT --child CONFIG *flags` for every config, the
    whole list `repeats` times; one progress line per run (step_s, cpu_s, peak_rss); a failed run prints its last
    line and is left out."""
    runs = {c: [] for c in configs}
    for _ in range(repeats):
        for c in configs:
            p = subprocess.run([sys.executable, os.path.abspath(script), "--child", c, *flags], capture_output=True,
                               text=True, env=env)
            if p.returncode:
                print(f"{c}: {(p.stderr.strip() or p.stdout.strip()).splitlines()[-1]}", flush=True)
                continue
            runs[c].append(json.loads(p.stdout.strip().splitlines()[-1]))
            r = runs[c][-1]
            print(f"  {c}: {r['step_s']:.2f} s/step ({r['cpu_s']:.2f} s CPU), peak RSS {r['peak_rss'] / GiB:.2f} GiB",
                  flush=True)
    return runs


def cpus_said(threads=None):
    """plan.cpus_said's line (threads, the CPUs this process may use: a container's quota read as such, bf16 units),
    asked of a child process: torch stays out of the benchmark's parent."""
    code = f"import sys; sys.path.insert(0, {ROOT!r}); import plan; print(plan.cpus_said({threads!r}))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return p.stdout.strip() or f"CPU: not read ({(p.stderr.strip() or 'no output').splitlines()[-1]})"
