#!/usr/bin/env bash
# Every speed and memory row of the README's "Results at a glance", run three times in a row on a machine left to
# itself, each run's whole output kept in OUT/NAME-RUN.log (the README and docs/ quote the range over the three).
#
#     nohup bash bench/repeat_speed.sh /tmp/repeats > /tmp/repeats.out 2>&1 &     # about 90 minutes on 2 cores
#     bash bench/repeat_speed.sh /tmp/repeats quant lorasp                       # only some rows
#
# Rows: 7b (bench_7b, ours vs transformers + peft + bitsandbytes, the random 7B checkpoint kept in /tmp/lorasp-7b),
# train (bench_train, 134M Llama, 8 configs), bf16 (bench_train at fp32 and bf16), quant (bench_quant), lorasp
# (bench_lorasp, the layer and the adapter alone), glue (bench_glue, RoBERTa-base), t5 (bench_t5, T5-base).
set -u
out=${1:-/tmp/repeats}; shift || true
rows=${*:-7b train bf16 quant lorasp glue t5}
mkdir -p "$out"
cd "$(dirname "$0")/.."
lscpu | grep -E "Model name|^CPU\(s\)" > "$out/machine.txt"; grep -o 'avx512_bf16\|amx_bf16' /proc/cpuinfo | sort | uniq -c >> "$out/machine.txt"
row() {  # NAME COMMAND...: three runs, one log each
    local name=$1; shift
    for run in 1 2 3; do
        echo "$(date +%T) $name run $run: $*"
        "$@" > "$out/$name-$run.log" 2>&1 || echo "$(date +%T) $name run $run failed: see $out/$name-$run.log"
    done
}
for r in $rows; do
    case $r in
        7b) row 7b python bench/bench_7b.py --keep --configs lorasp:nf4:full peft-bnb:nf4:full ;;
        train) row train python bench/bench_train.py --configs peft:none:none lora:none:none lorasp-element:none:none \
                   lorasp-column:none:none peft:none:full lorasp-element:none:full lorasp-element:none:selective \
                   lorasp-element:nf4:selective --threads 1 --steps 2 --measure-gflops ;;
        bf16) row bf16 python bench/bench_train.py --configs peft:none:none lorasp-element:none:none --dtypes fp32 bf16 \
                  --measure-gflops --steps 2 --threads 1 ;;
        quant) row quant env OMP_NUM_THREADS=1 python bench/bench_quant.py --repeats 11 ;;
        lorasp) row lorasp python bench/bench_lorasp.py --repeats 7
                row adapter python bench/bench_lorasp.py --adapter-only --threads 1 --repeats 31 ;;
        glue) row glue python bench/bench_glue.py --batch 8 --threads 1 --repeats 2 --warmup 1 \
                  --checkpointing none selective full ;;
        t5) row t5 python bench/bench_t5.py --batch 4 --steps 2 --repeats 1 --mmap-threshold 131072 ;;
        *) echo "unknown row $r (known: 7b train bf16 quant lorasp glue t5)"; exit 2 ;;
    esac
done
echo "$(date +%T) done"
