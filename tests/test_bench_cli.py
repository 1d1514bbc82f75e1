"""bench/bench_cli.py's ratio lines pair each of our configs with peft in the same dtype: `auto` with the dtype
train.py said it chose (it was compared with peft fp32 whatever auto chose: 0.44x printed for a 0.83x result).
bench/bench_train.py refuses a config it does not know."""
import os
import sys

import pytest

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


def test_bench_train_refuses_a_config_it_does_not_know_naming_the_known_ones(monkeypatch):
    """bench_train.py --configs lorasp-elemnt:none:none ran lorasp-element (its `else` branch) under the typo's label,
    and a QUANT typo (nf44) ran unquantized: a row labelled as what it is not. Now refused before any child runs."""
    import bench_train
    import model
    monkeypatch.setattr(bench_train, "run_children", lambda *a, **k: pytest.fail("a child ran"))
    for config, part in [("lorasp-elemnt:none:none", "METHOD 'lorasp-elemnt'; known: peft, full, lora, lorasp-element, "
                                                      "lorasp-column"),
                         ("lora:nf44:none", "QUANT 'nf44'; known: none, nf4"),
                         ("lora:none:selective+x", "CHECKPOINTING 'selective+x'; known: none, full, selective, "
                                                    "selective+N")]:
        monkeypatch.setattr(sys, "argv", ["bench_train.py", "--configs", "peft:none:none", config])
        with pytest.raises(SystemExit) as refused:
            bench_train.main()
        assert str(refused.value) == f"--configs {config}: unknown {part}"
    with pytest.raises(SystemExit, match="expected METHOD:QUANT:CHECKPOINTING"):
        bench_train.parse_config("lorasp-element:none")
    monkeypatch.setattr(model, "build_model", lambda *a: pytest.fail("the model was built"))  # a child checks too
    with pytest.raises(SystemExit, match="unknown METHOD 'lorasp-elemnt'"):
        bench_train.child("lorasp-elemnt:none:none", 1, 1, 1, 8, 1e-3, "none")
    for config in bench_train.TABLE + bench_train.COMPARE + ["lorasp-column:nf4:selective+4"]:
        assert bench_train.parse_config(config) == config.split(":")
