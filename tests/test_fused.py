"""fused.project: LoRA-SP layers reading one input share one A matmul. Against each layer's textbook dense form
(tests/test_lorasp.py's dense_reference: dense A, B, S applied in forward or to the gradient by a hook) and against
each layer run on its own; a whole Llama step fused and unfused. Different ranks and alphas per layer, a GQA-sized
k/v, a plain linear and a column-structured layer among them, so a wrong slice, scale or mask shows."""
import copy

import pytest
import torch
import torch.nn as nn

import fused
import model as M
from fused import project
from lorasp import LoRASPLinear, apply_lorasp
from test_lorasp import dense_reference, trained


def close(a, b):
    """Equal up to float64's rounding in another summation order, scaled to the largest entry (the layers' outputs
    reach ~90, their input gradients ~3,000: an absolute 1e-12 failed on an AMD EPYC by 5e-12 at 1.2); a wrong slice,
    scale or mask is off by far more."""
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13 * max(b.abs().max().item(), 1.0))


def layers(mode, ranks=(4, 8, 2), alphas=(8, 4, 6), outs=(48, 16, 16), dtype=torch.float64):
    torch.manual_seed(0)
    return [trained(LoRASPLinear(nn.Linear(32, o), r=r, alpha=a, mode=mode, seed=i), seed=i).to(dtype)
            for i, (r, a, o) in enumerate(zip(ranks, alphas, outs))]


@pytest.mark.parametrize("ranks,alphas", [((4, 8, 2), (8, 4, 6)), ((4, 4, 4), (8, 8, 8))])
@pytest.mark.parametrize("mode", ["mask", "freeze"])
def test_project_equals_dense_reference(mode, ranks, alphas):
    """Outputs, dL/dx and every layer's packed gradients equal the dense form's, whose frozen entries get none."""
    ls = layers(mode, ranks, alphas)
    refs = [dense_reference(m) for m in ls]
    x = torch.randn(3, 7, 32, dtype=torch.float64)
    ts = [torch.randn(3, 7, m.base.out_features, dtype=torch.float64) for m in ls]
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ys = project(x1, *ls)
    sum(((y - t) ** 2).sum() for y, t in zip(ys, ts)).backward()
    sum(((f(x2) - t) ** 2).sum() for (f, _, _), t in zip(refs, ts)).backward()
    close(x1.grad, x2.grad)
    for m, (f, A, B), y in zip(ls, refs, ys):
        close(y, f(x))
        close(m.A_train.grad, A.grad[m.mask_A])
        close(m.B_train.grad, B.grad[m.mask_B])
        assert not A.grad[~m.mask_A].any() and not B.grad[~m.mask_B].any()


@pytest.mark.parametrize("mode", ["mask", "freeze"])
def test_project_equals_each_layer_with_others_between(mode):
    """A plain nn.Linear and a column-structured layer in the list run on their own, in their places; the
    others share the matmul. A frozen input (the first block's q, k, v) takes no gradient either way."""
    ls = layers(mode)
    torch.manual_seed(1)
    mixed = [ls[0], nn.Linear(32, 24).double(), ls[1],
             LoRASPLinear(nn.Linear(32, 8), r=4, mode=mode, structure="column").double(), ls[2]]
    twin = copy.deepcopy(mixed)
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    for need in (True, False):
        x1, x2 = x.clone().requires_grad_(need), x.clone().requires_grad_(need)
        a, b = project(x1, *mixed), [m(x2) for m in twin]
        sum((y * y.sin()).sum() for y in a).backward()
        sum((y * y.sin()).sum() for y in b).backward()
        for y1, y2 in zip(a, b):
            close(y1, y2)
        assert (x1.grad is None) == (x2.grad is None) == (not need)
        if need:
            close(x1.grad, x2.grad)
        for m1, m2 in zip(mixed, twin):
            for p1, p2 in zip(m1.parameters(), m2.parameters()):
                assert (p1.grad is None) == (p2.grad is None)
                if p1.grad is not None:
                    close(p1.grad, p2.grad)
                    p1.grad = p2.grad = None


@pytest.mark.parametrize("base_dtype", [torch.float32, torch.bfloat16])
def test_project_under_bf16_autocast_like_each_layer(base_dtype):
    """fp32 adapters on an fp32 or bf16 base under bf16 autocast (train.py's bf16): the output dtypes of each layer
    alone, and outputs and gradients as close to float64's as each layer alone gets (bf16 rounds the fused sums in
    another order, so not equal to it)."""
    ls = [m.float() for m in layers("mask", dtype=torch.float32)]
    for m in ls:
        m.base.to(base_dtype)
    twin, exact = copy.deepcopy(ls), [copy.deepcopy(m).double() for m in ls]
    x = torch.randn(3, 7, 32).to(base_dtype)
    runs = []
    for fn, bf16, dtype in ((lambda x: project(x, *ls), True, base_dtype), (lambda x: [m(x) for m in twin], True,
                            base_dtype), (lambda x: [m(x) for m in exact], False, torch.float64)):
        xi = x.clone().to(dtype).requires_grad_()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            ys = fn(xi)
        sum(y.double().square().sum() for y in ys).backward()
        runs.append(([y.dtype for y in ys], [y.double() for y in ys] + [xi.grad.double()]))
    assert runs[0][0] == runs[1][0] == [torch.bfloat16] * 3
    for net, i in ((ls, 0), (twin, 1)):
        runs[i][1].extend(p.grad.double() for m in net for p in (m.A_train, m.B_train))
    runs[2][1].extend(p.grad for m in exact for p in (m.A_train, m.B_train))
    for fused_t, alone, ref in zip(runs[0][1], runs[1][1], runs[2][1]):
        scale = ref.abs().max()
        assert (fused_t - ref).abs().max() <= 2 * (alone - ref).abs().max() + 1e-3 * scale


def test_a_hooked_layer_runs_on_its_own():
    """Hooks are honoured: a layer with a forward hook, a backward hook or its own forward is called as a module."""
    ls, seen = layers("mask") + [LoRASPLinear(nn.Linear(32, 8), r=2).double()], []
    ls[1].register_forward_hook(lambda m, i, o: seen.append(("forward", o.shape)))
    ls[2].register_full_backward_hook(lambda m, gi, go: seen.append(("backward", go[0].shape)))
    ls[3].forward = lambda x: seen.append(("own", x.shape)) or LoRASPLinear.forward(ls[3], x)
    x = torch.randn(2, 3, 32, dtype=torch.float64, requires_grad=True)
    ys = project(x, *ls)
    sum(y.sum() for y in ys).backward()
    assert seen == [("forward", ys[1].shape), ("own", x.shape), ("backward", ys[2].shape)]


@pytest.mark.parametrize("checkpointing", ["none", "selective", "full"])
def test_llama_step_fused_equals_unfused(monkeypatch, checkpointing):
    """The whole model, q/k/v and gate/up fused in each block (float64: only the order of sums differs), GQA."""
    torch.manual_seed(0)
    cfg = M.LlamaConfig(vocab_size=64, n_layer=2, n_embd=32, n_head=4, n_kv_head=2, n_ffn=48)
    net = apply_lorasp(M.build_model(cfg).double(), ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                     "down_proj"], r=4, alpha=8, keep=0.5)
    for i, m in enumerate(m for m in net.modules() if isinstance(m, LoRASPLinear)):
        trained(m, seed=i)
    net.checkpointing, ids = checkpointing, torch.randint(0, 64, (2, 9))
    grads, calls, apply = [], [], fused._LoRAInput.apply
    monkeypatch.setattr(fused._LoRAInput, "apply", lambda *a: calls.append(a[1].shape) or apply(*a))
    for fn in (project, lambda x, *ls: [m(x) for m in ls]):
        monkeypatch.setattr(M, "project", fn)
        loss = net(ids, labels=ids)
        loss.backward()
        grads.append([loss.detach()] + [p.grad.clone() for p in net.parameters() if p.requires_grad])
        net.zero_grad(set_to_none=True)
    assert len(grads[0]) == 1 + 2 * 7 * 2
    assert calls[:4] == [(12, 32), (4, 32), (8, 32), (4, 48)]  # q, k, v's A's (4 + 4 + 4 rows) as one, o's, gate
    # and up's as one, down's (o and down read inputs of their own)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
