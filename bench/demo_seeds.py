"""The offline demo over seeds: `python train.py --seed S` for each seed, its held-out exact match before and after
fine-tuning, then the mean and the spread (min-max).

    python bench/demo_seeds.py --seeds 0 1 2 --out out/demo_seeds                  # ~2 minutes a seed, 1 thread
    python bench/demo_seeds.py --seeds 0 1 2 --out out/demo_seeds --no-bf16-units  # as on a CPU without bf16 units

The seed is the run's (train.py --seed: the held-out split, data order, LoRA-SP masks); the demo model is pretrained
once, as train.py always does it (seed 0), in a fresh cache OUT/cache (LORASP_CACHE), so that it is pretrained with
the same dtype as the runs. Everything on the CPU (--device cpu) with one thread (OMP_NUM_THREADS=1; the demo's own
--threads is 1). The demo keeps train.py's --dtype auto: bf16 autocast on a CPU with bf16 units (AVX512-BF16, AMX),
fp32 on one without. --no-bf16-units makes torch's two checks answer False, so the whole demo (its pretraining too,
in OUT/cache-nobf16) runs as it would on a CPU without them: the figure a reader on such a CPU should land near.
Each seed's summary is kept in OUT/<dtype>/seedS.json: a rerun skips it.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_BF16 = ("import sys, torch; torch.cpu._is_avx512_bf16_supported = torch.cpu._is_amx_tile_supported = lambda: False; "
           "sys.path.insert(0, '.'); import train; train.main(sys.argv[1:])")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="out/demo_seeds", help="OUT/cache[-nobf16] (the demo model), OUT/<kind>/seedS")
    ap.add_argument("--no-bf16-units", action="store_true", help="run as on a CPU without bf16 units (fp32)")
    args = ap.parse_args()
    kind = "nobf16" if args.no_bf16_units else "auto"
    cache = os.path.join(args.out, "cache" + ("-nobf16" if args.no_bf16_units else ""))
    env = dict(os.environ, OMP_NUM_THREADS="1", LORASP_CACHE=os.path.abspath(cache))
    os.makedirs(os.path.join(args.out, kind), exist_ok=True)
    after = {}
    for seed in args.seeds:
        keep = os.path.join(args.out, kind, f"seed{seed}.json")
        argv = [sys.executable, *(["-c", NO_BF16] if args.no_bf16_units else ["train.py"]), "--seed", str(seed),
                "--device", "cpu", "--out", os.path.join(args.out, kind, f"run{seed}")]
        print(f"$ LORASP_CACHE={env['LORASP_CACHE']} OMP_NUM_THREADS=1 " + " ".join(shlex.quote(a) for a in argv)
              + ("   # done before" if os.path.exists(keep) else ""), flush=True)
        if not os.path.exists(keep):
            p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env)
            if p.returncode:
                sys.exit(p.stdout[-3000:] + p.stderr[-3000:])
            with open(keep, "w") as f:
                f.write(p.stdout.strip().split("\n")[-1])
        with open(keep) as f:
            s = json.load(f)
        after[seed] = 100 * s["exact_match_after"]
        print(f"seed {seed}: held-out exact match {100 * s['exact_match_before']:.1f}% before, {after[seed]:.1f}% "
              f"after ({s['steps']} steps, {s['train_s']:.0f} s)", flush=True)
    v = list(after.values())
    print(f"the offline demo ({'as on a CPU without bf16 units: fp32' if args.no_bf16_units else '--dtype auto'}), "
          f"seeds {' '.join(map(str, after))}: held-out exact match after: mean {sum(v) / len(v):.1f}%, "
          f"min {min(v):.1f}%, max {max(v):.1f}% (" + ", ".join(f"{x:.1f}" for x in v) + ")")


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from checks import console  # (lorasp's: line-buffered, UTF-8 where ASCII fails, a reader gone outlived)
    console()
    main()
