"""model(input_ids, labels=...): the chunked LinearCrossEntropy against F.cross_entropy on the full logits, loss and
gradients, for Llama and GPT-2 (tied head), with ignored positions and several chunks; the SwiGLU autograd function
against autograd's own."""
import pytest
import torch
import torch.nn.functional as F

import model as M
from lorasp import apply_lorasp


@pytest.mark.parametrize("arch,lora", [("llama-tiny", False), ("llama-tiny", True), ("gpt2-tiny", False)])
def test_chunked_loss_matches_cross_entropy(arch, lora, monkeypatch):
    torch.manual_seed(0)
    net = M.build_model(arch).double()
    if lora:
        apply_lorasp(net, ["q_proj", "down_proj"], r=4).double()
        for n, p in net.named_parameters():
            if n.endswith("B_train"):
                torch.nn.init.normal_(p)
    ids = torch.randint(0, 256, (3, 11))
    labels = ids.clone()
    labels[0, :4] = labels[2, 7:] = -100  # a masked prompt, a padded tail
    logits = net(ids)
    ref = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    ref_grads = torch.autograd.grad(ref, [p for p in net.parameters() if p.requires_grad])
    for chunk in (M.LOSS_CHUNK, 256 * 7):  # one chunk; 7 rows at a time, so 33 rows make 5 chunks
        monkeypatch.setattr(M, "LOSS_CHUNK", chunk)
        loss = net(ids, labels=labels)
        grads = torch.autograd.grad(loss, [p for p in net.parameters() if p.requires_grad])
        torch.testing.assert_close(loss, ref)
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r)
    with torch.no_grad():
        torch.testing.assert_close(net(ids, labels=labels), ref)


def test_bf16_loss_close_to_fp32_logits():
    """bf16 weights and activations: the softmax still runs in fp32, so the loss is the fp32-softmax one of the bf16
    logits."""
    torch.manual_seed(0)
    net = M.build_model("llama-tiny").to(torch.bfloat16)
    ids = torch.randint(0, 256, (2, 9))
    ref = F.cross_entropy(net(ids)[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
    loss = net(ids, labels=ids)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=2e-3, atol=2e-3)
    loss.backward()
    assert net.lm_head.weight.grad.dtype == torch.bfloat16 and net.lm_head.weight.grad.abs().sum() > 0


def test_swiglu_gradients_match_autograd():
    gate, up = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True), torch.randn(3, 5, 7, dtype=torch.float64,
                                                                                        requires_grad=True)
    torch.autograd.gradcheck(M.swiglu, (gate, up))
    torch.testing.assert_close(M.swiglu(gate, up), F.silu(gate) * up)


def test_fp32_head_under_autocast_is_cast_once(monkeypatch):
    """Full fine-tuning under bf16 autocast (fp32 masters): autocast cast the whole (vocab, C) head weight to bf16 at
    the loss's matmuls, 6 copies over 5 chunks, each a transient of the head's size. Now once; the
    loss is the same value (autocast's casts and ours round alike), the gradient within bf16's rounding of its 5
    partial sums."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Casts(TorchDispatchMode):
        def __init__(self, weight):
            super().__init__()
            self.ptr, self.n = weight.data_ptr(), 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += func is torch.ops.aten._to_copy.default and args[0].data_ptr() == self.ptr
            return func(*args, **(kwargs or {}))
    torch.manual_seed(0)
    net = M.build_model("llama-tiny")                  # fp32 weights, trained whole
    ids = torch.randint(0, 256, (3, 11))
    monkeypatch.setattr(M, "LOSS_CHUNK", 256 * 7)      # 7 rows at a time: 33 rows, 5 chunks
    head = net.lm_head.weight
    with torch.autocast("cpu", torch.bfloat16), Casts(head) as casts:
        loss = net(ids, labels=ids)
    assert casts.n == 1
    loss.backward()
    grad = head.grad.clone()                           # against one chunk
    net.zero_grad()
    monkeypatch.setattr(M, "LOSS_CHUNK", M.LOSS_CHUNK * 1000)
    with torch.autocast("cpu", torch.bfloat16):
        ref = net(ids, labels=ids)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grad, head.grad, rtol=2e-2, atol=2e-4)  # (5 bf16 partial sums against 1)
