"""bench/bench_cli.py's ratio lines pair each of our configs with peft in the same dtype: `auto` with the dtype
train.py said it chose (it was compared with peft fp32 whatever auto chose: 0.44x printed for a 0.83x result)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import bench_cli  # noqa: E402


def test_auto_is_compared_with_peft_in_the_dtype_train_py_chose():
    summary = {"peft:fp32:none": (2.0, 4.0, 3.0), "peft:bf16:none": (1.0, 2.0, 2.0),
               "ours:auto:none": (0.8, 1.6, 1.5), "ours:fp32:none": (1.9, 3.8, 2.1),
               "peft:fp32:full": (2.5, 5.0, 2.0), "ours:fp32:selective": (2.0, 4.0, 1.0)}
    bf16 = "lorasp: 1,400,832 trainable ...; 4 steps of 4 x 1 sequences, bf16 autocast on cpu"
    lines = bench_cli.ratios(summary, {"ours:auto:none": bf16})
    assert lines == ["ours:auto:none / peft:bf16:none: time 0.80x (CPU time 0.80x), peak RSS 0.75x",
                     "ours:fp32:none / peft:fp32:none: time 0.95x (CPU time 0.95x), peak RSS 0.70x",
                     "ours:fp32:selective / peft:fp32:full: time 0.80x (CPU time 0.80x), peak RSS 0.50x"]
    fp32 = bf16.replace("bf16 autocast", "fp32")  # a CPU without bf16 units: auto is fp32
    assert bench_cli.ratios(summary, {"ours:auto:none": fp32})[0].startswith(
        "ours:auto:none / peft:fp32:none: time 0.40x")
