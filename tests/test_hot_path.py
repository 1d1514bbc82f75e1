"""model.py's hand-written backward passes on the training step's hot path (RMSNorm, RoPE, SwiGLU) against autograd
over the formulas as Hugging Face writes them: the same outputs and gradients bit for bit (torch.equal), in fp32, in
bf16, and with a bf16 input under fp32 weights (full fine-tuning under autocast); and the same tensors kept for
backward, which plan.py counts."""
import threading

import pytest
import torch
import torch.nn.functional as F

import model as M
import quant_torch

DTYPES = [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32)]


def rmsnorm_reference(x, weight, eps):  # transformers' LlamaRMSNorm
    h = x.float()
    return weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rope_reference(x, cos, sin):  # transformers' apply_rotary_pos_emb: x cos + rotate_half(x) sin
    x1, x2 = x.chunk(2, -1)
    return x * cos + torch.cat([-x2, x1], -1) * sin


def run(fn, inputs, seed=1):
    """(output, gradients of the inputs that need one, bytes kept for backward once per storage) for a random
    output gradient."""
    kept = {}

    def note(t):
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(note, lambda t: t):
        out = fn(*inputs)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.dtype)
    grads = torch.autograd.grad(out, [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad], g)
    return out, grads, sum(kept.values())


def same(a, b):
    out_a, grads_a, kept_a = a
    out_b, grads_b, kept_b = b
    assert out_a.dtype == out_b.dtype and torch.equal(out_a, out_b)
    assert len(grads_a) == len(grads_b)
    for ga, gb in zip(grads_a, grads_b):
        assert ga.dtype == gb.dtype and torch.equal(ga, gb), (ga - gb).abs().max()
    assert kept_a == kept_b


@pytest.mark.parametrize("weight_trains", [False, True])
@pytest.mark.parametrize("x_dtype,w_dtype", DTYPES)
def test_rmsnorm_equals_autograd_bit_for_bit(x_dtype, w_dtype, weight_trains):
    """LoRA (a frozen weight) and full fine-tuning (the weight trains); a transposed view, as Qwen3's q/k norms get."""
    torch.manual_seed(0)
    norm = M.RMSNorm(64, 1e-6).to(w_dtype).requires_grad_(weight_trains)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = (torch.randn(3, 7, 64) * 3).to(x_dtype).requires_grad_()
    xt = torch.randn(3, 5, 4, 64).to(x_dtype).transpose(1, 2).requires_grad_()  # (B, nh, T, hd), not contiguous
    for x in (x, xt):
        reference = run(lambda x, w: rmsnorm_reference(x, w, 1e-6), [x, norm.weight])
        same(run(lambda x, w: norm(x), [x, norm.weight]), reference)


@pytest.mark.parametrize("x_dtype,cs_dtype", DTYPES)
def test_rope_equals_autograd_bit_for_bit(x_dtype, cs_dtype):
    """q as the block makes it, a transposed view (B, nh, T, hd), rotated by rope_cos_sin's (B, 1, T, hd) angles."""
    torch.manual_seed(0)
    cos, sin = M.rope_cos_sin(torch.arange(3, 12).expand(2, 9), 32, 10000.0)
    cos, sin = cos[:, None].to(cs_dtype), sin[:, None].to(cs_dtype)
    q = torch.randn(2, 9, 4, 32).to(x_dtype).transpose(1, 2).requires_grad_()
    same(run(M.apply_rope, [q, cos, sin]), run(rope_reference, [q, cos, sin]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swiglu_equals_autograd_bit_for_bit(dtype):
    """Keeping gate and up only (not silu(gate), which autograd would keep too) is the point of the Function."""
    torch.manual_seed(0)
    gate, up = (torch.randn(2, 9, 48).to(dtype).requires_grad_() for _ in range(2))
    a, b = run(M.swiglu, [gate, up]), run(lambda g, u: F.silu(g) * u, [gate, up])
    assert a[2] < b[2]
    same(a[:2] + (0,), b[:2] + (0,))


def test_dropout_is_inverted_as_torchs():
    """model.dropout is F.dropout's inverted dropout: each value zeroed with probability p, the rest scaled by 1/(1-p),
    so the expected activation is unchanged and evaluation (p = 0) needs no rescaling; its gradient is the same mask."""
    x = (torch.rand(400, 250) + 1).requires_grad_()
    torch.manual_seed(0)
    y = M.dropout(x, 0.3)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.7, rtol=1e-6, atol=0)
    assert abs(kept.float().mean().item() - 0.7) < 0.01                # 100k draws: 0.7 within 0.01
    g, = torch.autograd.grad(y, x, torch.ones_like(y))
    assert torch.equal(g, kept / 0.7) and M.dropout(x, 0.0) is x


def test_loss_logits_go_into_one_kept_buffer(monkeypatch):
    """LinearCrossEntropy writes each chunk of logits into one CPU buffer kept between calls (a fresh 64 MB chunk is a
    new mapping whose pages fault in): the next call reuses it, and what it held before (NaN here) never reaches the
    loss or the gradient. Several chunks, the last one short."""
    monkeypatch.setattr(M, "LOSS_CHUNK", 7 * 50)               # 7 rows of a 50-word vocabulary a chunk
    monkeypatch.setattr(quant_torch, "_kept", threading.local())
    torch.manual_seed(0)
    h, W, t = torch.randn(30, 16, requires_grad=True), torch.randn(50, 16), torch.randint(0, 50, (30,))
    t[3] = -100
    ref = F.cross_entropy(h @ W.T, t, ignore_index=-100, reduction="sum")
    ref_grad, = torch.autograd.grad(ref, h)
    buffers = []
    for _ in range(2):
        loss = M.LinearCrossEntropy.apply(h, W, t)
        torch.testing.assert_close(loss, ref)
        torch.testing.assert_close(torch.autograd.grad(loss, h)[0], ref_grad)
        buffers.append(vars(quant_torch._kept)[("logits", torch.float32)])
        buffers[-1].fill_(float("nan"))
    assert len(buffers) == 2 and buffers[0] is buffers[1] and buffers[0].numel() == 7 * 50


def test_threads_get_their_own_logits_buffer():
    """Two threads computing losses at once in one process (an evaluation beside training): with one buffer shared
    between them, each wrote its logits over the other's (37 of 60 losses wrong, some by 1e15). Each thread's buffer is
    its own, and the losses are cross_entropy's."""
    torch.manual_seed(0)
    cases = [(torch.randn(300, 32), torch.randn(3000, 32), torch.randint(0, 3000, (300,))) for _ in range(2)]
    refs = [F.cross_entropy(h @ W.T, t, reduction="sum") for h, W, t in cases]
    start, losses, buffers = threading.Barrier(2), [[], []], [None, None]

    def work(i):
        buffers[i] = M.logits_buffer(4, 50, torch.float32, torch.device("cpu")).untyped_storage().data_ptr()
        start.wait()
        for _ in range(20):
            losses[i].append(M.LinearCrossEntropy.apply(*cases[i]))
    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert buffers[0] != buffers[1]
    for i in range(2):
        assert len(losses[i]) == 20
        for loss in losses[i]:
            torch.testing.assert_close(loss, refs[i], rtol=1e-5, atol=0)


@pytest.mark.parametrize("gate_dtype,up_dtype", [(torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16)])
def test_swiglu_of_two_dtypes_is_computed_in_the_wider(gate_dtype, up_dtype):
    """A bf16 gate and an fp32 up (or the reverse): silu(gate) * up is fp32, as autograd's formula and the Function
    before the in-place products gave; multiplied in place into silu(gate) it came back in bf16 (off by 6e-3), and up's
    gradient was rounded to bf16 on the way."""
    torch.manual_seed(0)
    gate, up = (torch.randn(2, 9, 48).to(dtype).requires_grad_() for dtype in (gate_dtype, up_dtype))
    (out, grads, _), (want, want_grads, _) = run(M.swiglu, [gate, up]), run(lambda g, u: F.silu(g) * u, [gate, up])
    assert out.dtype == want.dtype == torch.float32 and torch.equal(out, want)
    assert grads[1].dtype == want_grads[1].dtype and torch.equal(grads[1], want_grads[1])
