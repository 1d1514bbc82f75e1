"""The Python API as a student modifying the code calls it (session 30, api30): one table, one row per case.
Each row builds its input and names what must happen: an exception type and a fragment its message must contain (the
argument, and what to give instead), or `None`: the row checks the right result itself (a silent wrong result, now
right). The oracles: PyTorch's conventions (nn.Linear, Tensor.grad), scikit-learn's and SciPy's for the metrics,
SQuAD's evaluate-v1.1.py; docs/robustness.md ("The Python API") lists what these rows hold."""

import pytest
import torch
import torch.nn as nn

from lorasp import LoRASPLinear, apply_lorasp, merge_lorasp
from metrics import accuracy, f1, matthews_corrcoef, pearson, spearman, squad_scores
from quant import NF4Linear, quantize_nf4
from fixtures import table

CASES, case = table()


def layer(**kw):
    torch.manual_seed(0)
    return LoRASPLinear(nn.Linear(8, 6), **{"r": 2, **kw})


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 6))


# ----------------------------------------------------------------------------------------------------
# LoRASPLinear's dense views: lora_A / lora_B are made from the packed entries, not the entries themselves

@case("nn.init.normal_(layer.lora_B) at keep 0.5 (was: ignored, B stayed 0; at keep 1 it wrote through)", RuntimeError,
      "layer.load_dense(A, B)")
def _():
    nn.init.normal_(layer().lora_B)


@case("layer.lora_B.data.fill_(1.0) (was: ignored)", RuntimeError, "lora_B is made from B_train")
def _():
    layer().lora_B.data.fill_(1.0)


@case("layer.lora_A[0, 0] = 1.0 (was: ignored)", RuntimeError, "lora_A is made from A_train")
def _():
    layer().lora_A[0, 0] = 1.0


@case("with torch.no_grad(): layer.lora_A.copy_(A) at keep 1 (wrote through; refused alike at every keep)",
      RuntimeError, "layer.load_dense(A, B)")
def _():
    with torch.no_grad():
        layer(keep=1.0).lora_A.copy_(torch.ones(2, 8))


@case("layer.lora_A = A (was: 'property has no setter', no word of what sets it)", AttributeError,
      "layer.load_dense(A, B)")
def _():
    layer().lora_A = torch.ones(2, 8)


@case("layer.lora_A.grad after backward (was: None, with PyTorch's non-leaf warning)", None)
def _():
    m, x = layer(), torch.randn(3, 8)
    with torch.no_grad():
        m.B_train.normal_()
    m(x).square().sum().backward()
    A, B = (t.detach().clone().requires_grad_() for t in (m.lora_A, m.lora_B))   # dense LoRA, masked by hand (Eq. 2)
    (m.base(x) + m.scale * x @ (A * m.mask_A).T @ (B * m.mask_B).T).square().sum().backward()
    torch.testing.assert_close(m.lora_A.grad, A.grad * m.mask_A)    # 0 at the frozen entries: they take none
    torch.testing.assert_close(m.lora_B.grad, B.grad * m.mask_B)
    assert m.lora_A.grad[m.mask_A].ne(0).all() and layer().lora_A.grad is None   # before backward: None, as a leaf's


@case("the dense views still read, compute and copy as tensors (clone is writable, a result is a plain tensor)", None)
def _():
    m = layer()
    W = m.base.weight + m.scale * m.lora_B @ m.lora_A
    W.add_(1.0)                                                      # a new tensor: the user's to change
    A = m.lora_A.clone()
    A.fill_(1.0)
    assert A.sum() == 16 and type(W) is torch.Tensor and type(A) is torch.Tensor and m.lora_A.ne(1).any()
    assert torch.equal(m.lora_A.float(), m.lora_A) and m.lora_A.requires_grad


for name, args, fragment in [
        ("layer.load_dense(A, B.T): B as (r, out) (was: IndexError 'The shape of the mask [6, 2] at index 0 does not "
         "match the shape of the indexed tensor [2, 6]')", lambda m: (m.lora_A, m.lora_B.T),
         "load_dense: B is (2, 6); this layer's B is (out, r) = (6, 2) (transposed?)"),
        ("layer.load_dense of an A of another r (was: IndexError 'The shape of the mask [2, 8] ... [3, 8]')",
         lambda m: (torch.randn(3, 8), m.lora_B), "load_dense: A is (3, 8); this layer's A is (r, in) = (2, 8)"),
        ("layer.load_dense(A, None) (was: 'NoneType' object has no attribute 'to')", lambda m: (m.lora_A, None),
         "load_dense: B is a NoneType")]:
    case(name, ValueError, fragment)(lambda args=args: (lambda m: m.load_dense(*args(m)))(layer()))


@case("torch.compile(fullgraph=True) of a function reading lora_B @ lora_A (the first DenseView: RecursionError in "
      "dynamo)", None)
def _():
    m = layer()
    with torch.no_grad():
        m.B_train.normal_()
    torch._dynamo.reset()
    f = torch.compile(lambda: m.lora_B @ m.lora_A, fullgraph=True, backend="aot_eager")   # (no code generation)
    torch.testing.assert_close(f(), m.lora_B @ m.lora_A, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------
# LoRASPLinear's and apply_lorasp's settings

for kw, was in [(dict(keep="0.5"), "'<' not supported between instances of 'int' and 'str'"),
                (dict(keep=None), "'<' not supported between 'int' and 'NoneType'"),
                (dict(keep=torch.tensor(0.5)), "type Tensor doesn't define __round__ method"),
                (dict(r=True), "empty() takes 1 positional argument but 2 were given"),
                (dict(alpha="16"), "must be real number, not str"),
                (dict(alpha=torch.tensor(16.0)), "accepted; save_adapter: Object of type Tensor is not JSON "
                                                 "serializable"),
                (dict(alpha=True), "accepted as 1: scale 1/r"), (dict(keep=True), "accepted as keep 1.0"),
                (dict(seed=2 ** 64), "Overflow when unpacking long long"),
                (dict(seed=1.5), "manual_seed expected a long, but got float"),
                (dict(seed="1"), "manual_seed expected a long, but got str")]:
    (k, v), = kw.items()
    case(f"LoRASPLinear({k}={v!r}) (was: {was})", ValueError, f"{k}={v!r}")(lambda kw=kw: layer(**kw))

case("LoRASPLinear(mode='freeze ') names the value as typed", ValueError, "mode='freeze '")(
    lambda: layer(mode="freeze "))

for seed in (None, 1.5, "1"):
    case(f"apply_lorasp(seed={seed!r}) (was: accepted, masks drawn from crc32('{seed}:name'))", ValueError,
         f"seed={seed!r}")(lambda seed=seed: apply_lorasp(model(), ["0"], seed=seed))


@case("apply_lorasp on a bare nn.Linear (was: RecursionError)", TypeError, "LoRASPLinear(layer")
def _():
    apply_lorasp(nn.Linear(8, 8), "all-linear")


@case("apply_lorasp(model, [0]): an int target (was: 'can only concatenate str (not \"int\") to str')", TypeError,
      "targets [0]: module names are str")
def _():
    apply_lorasp(model(), [0])


@case("apply_lorasp(model, None) (was: 'NoneType' object is not iterable)", TypeError, "targets None")
def _():
    apply_lorasp(model(), None)


@case("apply_lorasp 'all-linear' twice (was: adapters nested inside adapters, without a word)", ValueError,
      "already LoRASPLinear")
def _():
    apply_lorasp(apply_lorasp(model(), "all-linear"), "all-linear")


@case("apply_lorasp(model, ['base']) on an adapted model (was: an adapter wrapped inside the adapter)", ValueError,
      "already LoRASPLinear")
def _():
    apply_lorasp(apply_lorasp(model(), ["0"]), ["base"])


@case("apply_lorasp(model, ['0']) twice names the layer as adapted (was: 'no nn.Linear matches ['0']')", ValueError,
      "'0' is already LoRASPLinear")
def _():
    apply_lorasp(apply_lorasp(model(), ["0"]), ["0"])


@case("apply_lorasp on other layers of an adapted model still adapts them", None)
def _():
    m = apply_lorasp(apply_lorasp(model(), ["0"]), ["2"], r=4)
    assert type(m[0].base) is nn.Linear and type(m[2].base) is nn.Linear and m[2].r == 4


for dtype, was in [(torch.int32, "integer weights: every |w| < 1 became 0"), ("bfloat16", "Invalid device string")]:
    case(f"merge_lorasp(model, dtype={dtype!r}) (was: {was})", TypeError, f"dtype={dtype!r}")(
        lambda dtype=dtype: merge_lorasp(apply_lorasp(model(), ["0"]), dtype=dtype))


# ----------------------------------------------------------------------------------------------------
# NF4

for dtype in (int, float, "float32", None):
    case(f"NF4Tensor.dequantize({dtype!r}) (was: AttributeError, no is_floating_point)",
         TypeError, "torch dtype")(lambda dtype=dtype: quantize_nf4(torch.randn(64)).dequantize(dtype))


@case("NF4Linear(a plain tensor) (was: accepted; forward failed: no attribute 'padded_numel')", TypeError,
      "NF4Linear.from_linear")
def _():
    NF4Linear(torch.randn(4, 64))


for flag in ("no", "False", 0.5, None):
    case(f"quantize_nf4(w, double_quant={flag!r}) (was: taken by its truth: \"no\" double-quantized)", TypeError,
         "double_quant")(lambda flag=flag: quantize_nf4(torch.randn(64), double_quant=flag))


# ----------------------------------------------------------------------------------------------------
# Metrics: the GLUE ones on what a student has at hand (tensors, arrays, generators)

@case("matthews_corrcoef of torch tensors (was 1.0: elements hashed by id; 0.5)", None)
def _():
    p, y = torch.tensor([1, 0, 1]), torch.tensor([1, 0, 0])
    assert matthews_corrcoef(p, y) == matthews_corrcoef([1, 0, 1], [1, 0, 0]) == 0.5


@case("f1 and accuracy of torch tensors (were: refused 'labels tensor(0)...', a tensor)", None)
def _():
    p, y = torch.tensor([1, 0, 1]), torch.tensor([1, 0, 0])
    assert f1(p, y) == 2 / 3 and type(accuracy(p, y)) is float and accuracy(p, y) == 2 / 3


@case("accuracy of a generator (was: \"object of type 'generator' has no len()\")", None)
def _():
    assert accuracy((p for p in [1, 0, 1]), [1, 0, 0]) == 2 / 3


for fn in (accuracy, matthews_corrcoef):
    case(f"{fn.__name__}(['1', '0'], [1, 0]): str against int labels (was 0.0; scikit-learn refuses)", ValueError,
         "str labels against int")(lambda fn=fn: fn(["1", "0"], [1, 0]))
    case(f"{fn.__name__} of a dict (was: its keys scored)", TypeError, "predictions is a dict")(
        lambda fn=fn: fn({1: 0, 0: 1}, [1, 0]))

case("f1([None, 1], [1, 1]) (was: \"'<' not supported between instances of 'NoneType' and 'int'\")", ValueError,
     "prediction 0 is None")(lambda: f1([None, 1], [1, 1]))
case("f1 of 2-D lists (was: \"unhashable type: 'list'\")", ValueError, "one label (an int or a str) an example")(
    lambda: f1([[1, 0], [0, 1]], [[1, 0], [1, 1]]))
case("accuracy([None, 1], [1, 1]) (was 0.5; scikit-learn refuses None labels)", ValueError, "prediction 0 is None")(
    lambda: accuracy([None, 1], [1, 1]))
case("matthews_corrcoef of a set (was: -1.0, in the set's order)", TypeError, "predictions is a set")(
    lambda: matthews_corrcoef({0, 1}, [1, 0]))
case("spearman of 2-D lists (was 0.577, the flattened ranks)", ValueError, "one number per example")(
    lambda: spearman([[1, 0], [0, 1]], [[1, 0], [1, 1]]))
case("pearson of 2-D lists (was: 'only 0-dimensional arrays can be converted to Python scalars')", ValueError,
     "one number per example")(lambda: pearson([[1, 0], [0, 1]], [[1, 0], [1, 1]]))


# SQuAD v1.1: the official script's shapes, and what students pass instead
def squad(qas):
    return [{"title": "t", "paragraphs": [{"context": "c", "qas": qas}]}]


case("squad_scores of a dataset without questions (was: ZeroDivisionError)", ValueError, "holds no questions")(
    lambda: squad_scores([], {}))
case("squad_scores with a question without answers, SQuAD v2.0's (was: 'max() arg is an empty sequence')",
     ValueError, "question 'x' has no answers")(
    lambda: squad_scores(squad([{"id": "x", "answers": [], "is_impossible": True}]), {"x": ""}))
case("squad_scores of HF datasets' flat rows (was: KeyError 'paragraphs')", TypeError, "datasets' flat rows")(
    lambda: squad_scores([{"id": "x", "answers": {"text": ["a"], "answer_start": [0]}}], {"x": "a"}))
case("squad_scores with answers as plain texts (was: 'string indices must be integers')", TypeError,
     "question 'x': answers")(lambda: squad_scores(squad([{"id": "x", "answers": ["a"]}]), {"x": "a"}))
case("squad_scores('dev-v1.1.json', ...) (was: 'string indices must be integers')", TypeError,
     "not a file name")(lambda: squad_scores("dev-v1.1.json", {"x": "a"}))


# ----------------------------------------------------------------------------------------------------

def test_the_table_has_unique_names():
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("row", CASES, ids=[c.name for c in CASES])
def test_api_wild(row):
    if row.expect is None:                                     # a silent wrong result, now right: the row checks it
        row.build()
        return
    with pytest.raises(BaseException) as e:
        row.build()
    assert isinstance(e.value, row.expect), repr(e.value)
    assert row.fragment in str(e.value), str(e.value)
