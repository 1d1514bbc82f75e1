#!/bin/bash
# The allocator table of docs/benchmarks-7b.md, three times over: train.py's step (134M Llama, 4 x 256, fp32, 1 thread,
# 4 steps) under glibc malloc settings from the environment, each setting run 3 times in turn. ~20 minutes.
#   bash bench/allocator_repeats.sh [LOGDIR]      (logs: one per setting and repeat; the summary lines at the end)
set -u
cd "$(dirname "$0")/.."
logs=${1:-/tmp/allocator-repeats}
mkdir -p "$logs"
grep -o 'avx512_bf16\|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' '; echo "(CPU flags)"
settings=("" "MALLOC_MMAP_THRESHOLD_=1048576" "MALLOC_MMAP_THRESHOLD_=1048576 THP_MEM_ALLOC_ENABLE=1"
          "MALLOC_MMAP_THRESHOLD_=4194304 MALLOC_TRIM_THRESHOLD_=1073741824"
          "MALLOC_MMAP_THRESHOLD_=16777216 MALLOC_TRIM_THRESHOLD_=1073741824")
for r in 1 2 3; do
  for i in "${!settings[@]}"; do
    s=${settings[$i]}
    python bench/bench_cli.py --configs ours:fp32:none --steps 4 --ours-flags "--threads 1" --env $s \
      > "$logs/setting$i-run$r.log" 2>&1
    echo "run $r | ${s:-glibc defaults (train.py trims when the heap grew 10%)} | $(grep "^  ours:fp32:none:" "$logs/setting$i-run$r.log" | tail -1)"
  done
done
