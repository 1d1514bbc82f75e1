"""The paper-table helpers under bench/: the parameter counts bench/paper_counts.py prints against lorasp's own count
on adapted tiny models; the eight toy GLUE tasks in the official layouts (read back by data.load_glue); a table cell
read back rather than rerun; the hand-written SVGs parse as XML."""
import sys
import xml.etree.ElementTree as ET

import pytest
import torch

import data
import model as M
from bench import paper_counts, paper_tables, second_paper, toy_glue
from lorasp import apply_lorasp, count_trainable


@pytest.mark.parametrize("preset,targets,r", [("roberta-tiny", "query,value", 3), ("t5-tiny", "q,v", 5),
                                              ("llama-tiny", paper_counts.LLAMA, 7)])
def test_counts_equal_lorasp_count_trainable(preset, targets, r):
    for method, keep in (("lora", 1.0), ("lorasp", 0.5)):
        torch.manual_seed(0)
        model = M.build_model(preset)
        model = model.add_head(2) if preset.startswith("roberta") else model
        head = [p for n in getattr(type(model), "head", ()) for p in model.get_submodule(n).parameters()] \
            if preset.startswith("roberta") else []
        apply_lorasp(model, targets.split(","), r=r, keep=keep)
        for p in head:  # the head trains whole beside the adapter, as train.py does
            p.requires_grad_(True)
        assert paper_counts.trainable(paper_counts.build(preset), method, targets, r) == count_trainable(model)
    full = M.build_model(preset)
    assert paper_counts.trainable(full, "full", None, None) == sum(p.numel() for p in full.parameters())


def test_eight_toy_glue_tasks_load(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["toy_glue.py", "--out", str(tmp_path), "--tasks", "all", "--mlm-steps", "0",
                                      "--sizes", "60", "20", "--shape", "n_layer=1,n_embd=16,n_head=2,n_ffn=32"])
    toy_glue.main()
    for task in data.GLUE:
        splits = data.load_glue(task, str(tmp_path / "glue"))
        assert len(splits["train"]) == 60 and all(len(v) == 20 for k, v in splits.items() if k != "train")
        labels = {y for _, _, y in splits["train"]}
        assert len(labels) > (5 if task == "stsb" else 1), task  # every class occurs


def test_cells_are_read_back_and_svgs_parse(tmp_path):
    calls = []
    make = lambda: calls.append(1) or {"x": 1}  # noqa: E731
    path = str(tmp_path / "a" / "result.json")
    assert paper_tables.cell(path, make) == paper_tables.cell(path, make) == {"x": 1} and calls == [1]
    ET.fromstring(paper_tables.bar_svg(["A", "B"], [(1, [50.0, 60.0]), (2, [55.0, 0.0]), (3, [70.0, 20.0])], "t"))
    root = ET.fromstring(second_paper.rank_svg({"lora": [(1, 50.0), (8, 70.0), (64, 72.5)], "lorasp": [(1, 48.0),
                                                                                                      (64, 71.0)]}))
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 2


def test_dropout_attention_gradient_of_a_full_size_bias():
    """T5 with padding in full fine-tuning: the position bias plus the padding bias is a (B, nh, T, S) tensor that
    needs a gradient; DropoutAttention's backward summed it over every dim (sum([]) reduces all). Found by
    paper_tables --table 2 --toy; checked against the same math through autograd with the same dropout draw."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g, requires_grad=True) for _ in range(3))
    bias = torch.randn(2, 3, 5, 5, generator=g, requires_grad=True)
    torch.manual_seed(1)
    y = M.DropoutAttention.apply(q, k, v, bias, 0.3, 0.5)
    torch.manual_seed(1)
    keep = torch.rand(2, 3, 5, 5) >= 0.3  # the draw forward makes
    ref = ((q @ k.transpose(-1, -2) * 0.5 + bias).softmax(-1) * keep / 0.7) @ v
    grads = torch.autograd.grad(y.sum(), (q, k, v, bias))
    for a, b in zip(grads, torch.autograd.grad(ref.sum(), (q, k, v, bias))):
        torch.testing.assert_close(a, b)
