"""Manual activation checkpointing: the same gradients as no checkpointing (the reference is the plain forward),
with LoRA-style adapters in frozen blocks, dropout, NF4 bases and autocast; what is kept, checked with
saved_tensors_hooks and with weak references to the tensors a block produces."""
import gc
import weakref

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import model as M
from fixtures import DEVICES
from quant import NF4Linear

MODES = ("none", "full", "selective")


class Adapter(nn.Module):
    """Stand-in for lorasp.LoRASPLinear: a frozen base plus a trainable low-rank path, y = W x + B A x."""

    def __init__(self, base, r=4):
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.randn(r, base.in_features) * 0.3)
        self.B = nn.Parameter(torch.randn(base.out_features, r) * 0.3)

    def forward(self, x):
        return self.base(x) + x @ self.A.T @ self.B.T


def with_adapters(model, targets):
    """Freeze everything, then wrap the named projections of every block with a trainable Adapter."""
    model.requires_grad_(False)
    for name, module in list(model.named_modules()):
        if name.rsplit(".", 1)[-1] in targets:
            parent, child = name.rsplit(".", 1)
            setattr(model.get_submodule(parent), child, Adapter(module))
    return model


def loss_and_grads(model, mode, ids, seed=0):
    model.checkpointing = mode
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the dropout masks of every mode start from the same RNG state
    logits = model(ids)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def assert_modes_agree(model, ids):
    loss0, g0 = loss_and_grads(model, "none", ids)
    assert g0 and all(g.abs().sum() > 0 for g in g0.values())
    for mode in ("full", "selective"):
        loss, g = loss_and_grads(model, mode, ids)
        assert torch.equal(loss, loss0), mode
        assert g.keys() == g0.keys()
        for n in g0:
            torch.testing.assert_close(g[n], g0[n], atol=1e-6, rtol=0, msg=f"{mode}: {n}")


def tiny(arch, **kw):
    torch.manual_seed(0)
    config = M.replace(M.get_config(f"{arch}-tiny"), **kw)
    m = M.build_model(config).train()
    with torch.no_grad():
        for p in m.parameters():  # away from the zero-bias, unit-norm start so every path carries signal
            p.add_(torch.randn_like(p) * 0.05)
    return m


IDS = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("device", DEVICES)
def test_llama_adapters_in_frozen_blocks(device):
    """Block inputs do not require grad (frozen embeddings); only adapter parameters inside the blocks do."""
    m = with_adapters(tiny("llama"), ("q_proj", "v_proj", "down_proj")).to(device)
    assert not m.model.embed_tokens.weight.requires_grad
    assert_modes_agree(m, IDS.to(device))


def test_gpt2_full_finetune_with_dropout():
    """Dropout 0.1 on embeddings, attention probabilities and residuals: recomputation must replay the same masks."""
    m = tiny("gpt2", dropout=0.1)
    assert_modes_agree(m, IDS)
    m.checkpointing = "none"
    torch.manual_seed(0)
    a = m(IDS)
    torch.manual_seed(1)
    assert not torch.equal(a, m(IDS))  # dropout is really on


def test_gpt2_adapters_with_dropout():
    assert_modes_agree(with_adapters(tiny("gpt2", dropout=0.1), ("c_attn", "c_fc")), IDS)


@pytest.mark.parametrize("device", DEVICES)
def test_nf4_base_with_adapters(tmp_path, device):
    M.save_pretrained(tiny("llama"), tmp_path)
    m = with_adapters(M.load_pretrained(tmp_path, quantize="nf4").train(), ("q_proj", "k_proj", "o_proj", "up_proj"))
    m = m.to(device)
    assert isinstance(m.model.layers[0].self_attn.q_proj.base, NF4Linear)
    assert_modes_agree(m, IDS.to(device))


def test_autocast_state_is_replayed():
    m = tiny("llama")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss0, g0 = loss_and_grads(m, "none", IDS)
        for mode in ("full", "selective"):
            loss, g = loss_and_grads(m, mode, IDS)
            assert torch.equal(loss, loss0)
            for n in g0:
                torch.testing.assert_close(g[n], g0[n], atol=1e-6, rtol=0, msg=f"{mode}: {n}")


def test_full_keeps_only_block_inputs():
    """saved_tensors_hooks see everything autograd keeps: with "full", up to the final norm that is exactly one
    tensor per block, the block's input."""
    m = with_adapters(tiny("llama", n_layer=3), ("q_proj", "v_proj"))
    for mode in MODES:
        m.checkpointing = mode
        saved, inputs, state = [], [], {"blocks": True}
        hooks = [b.register_forward_pre_hook(lambda mod, args: inputs.append(args[0]) if state["blocks"] else None)
                 for b in m.model.layers]
        hooks.append(m.model.norm.register_forward_pre_hook(lambda mod, args: state.update(blocks=False)))

        def pack(t):
            if state["blocks"]:
                saved.append(t)
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            m(IDS).sum().backward()
        for h in hooks:
            h.remove()
        activations = [t for t in saved if not isinstance(t, nn.Parameter)]
        if mode == "full":
            assert len(activations) == 3 and all(a is x for a, x in zip(activations, inputs)), [
                tuple(t.shape) for t in activations]
        if mode == "none":
            assert sum(t.numel() for t in activations) > 10 * sum(x.numel() for x in inputs[:3])


def test_selective_keeps_matmul_outputs_and_recomputes_the_rest():
    """Tensors alive after forward are those autograd saved. Selective: norm outputs, the attention output and the
    SwiGLU product are freed (recomputed in backward); q/k/v and gate/up outputs stay (v and gate checked here).
    Full: only block inputs."""
    projections = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    m = with_adapters(tiny("llama"), projections)  # adapters save their inputs: every tensor is needed in backward
    block = m.model.layers[0]
    for mode in MODES:
        m.checkpointing = mode
        refs = {}

        def keep(name, pre):
            def hook(mod, args, out=None):
                # a storage dies with the last view of it (consumers often save a reshaped view of their input)
                refs.setdefault(name, weakref.ref((args[0] if pre else out).untyped_storage()))
            return hook
        hooks = [block.input_layernorm.register_forward_hook(keep("norm", False)),
                 block.post_attention_layernorm.register_forward_hook(keep("norm2", False)),
                 block.self_attn.o_proj.register_forward_pre_hook(keep("attention", True)),
                 block.mlp.down_proj.register_forward_pre_hook(keep("swiglu", True)),
                 block.self_attn.v_proj.register_forward_hook(keep("v", False)),
                 block.mlp.gate_proj.register_forward_hook(keep("gate", False))]
        loss = m(IDS).logsumexp(-1).mean()
        gc.collect()
        alive = {k: r() is not None for k, r in refs.items()}
        loss.backward()
        for h in hooks:
            h.remove()
        expect = {"none": dict(norm=True, norm2=True, attention=True, swiglu=True, v=True, gate=True),
                  "selective": dict(norm=False, norm2=False, attention=False, swiglu=False, v=True, gate=True),
                  "full": dict(norm=False, norm2=False, attention=False, swiglu=False, v=False, gate=False)}[mode]
        assert alive == expect, (mode, alive)


def test_unknown_mode_is_an_error():
    m = tiny("llama")
    m.checkpointing = "partial"
    with pytest.raises(ValueError, match="'none', 'full' or 'selective'"):
        m(IDS)


def test_selective_does_not_confuse_a_reused_address():
    """A cheap output may be freed inside the block and its address handed to another tensor: only the same
    storage is rebuilt from the recipe (this once gave wrong gradients, intermittently)."""
    ctx = M.selective()
    with ctx:
        x = torch.randn(64, requires_grad=True)
        y = M.cheap(torch.sin, x)
        packed = ctx.pack(y.view(8, 8))
        assert not isinstance(packed, torch.Tensor)
        torch.testing.assert_close(ctx.unpack(packed), torch.sin(x).view(8, 8).detach())
        entry = ctx.recipes.pop(y.untyped_storage().data_ptr())
        del y
        z = torch.randn(64)
        ctx.recipes[z.untyped_storage().data_ptr()] = entry  # as if z had been allocated at y's old address
        assert ctx.pack(z) is z


@pytest.mark.parametrize("structure", ["element", "column"])
def test_lorasp_layers_on_an_nf4_base(tmp_path, structure):
    """The real adapter (lorasp.apply_lorasp) on every projection of an NF4-loaded Llama: all three modes agree."""
    import lorasp
    M.save_pretrained(tiny("llama"), tmp_path)
    m = M.load_pretrained(tmp_path, quantize="nf4").train()
    lorasp.apply_lorasp(m, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], r=4,
                        alpha=8, structure=structure)
    with torch.no_grad():
        for layer in m.modules():
            if isinstance(layer, lorasp.LoRASPLinear):
                layer.B_train.normal_(0, 0.3)  # B starts at zero, which would leave A without gradient
    assert_modes_agree(m, IDS)



TAILS = {"llama": "mlp.down_proj", "gpt2": "mlp.c_proj", "t5": "DenseReluDense.wo"}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["llama", "gpt2", "t5"])
@pytest.mark.parametrize("autocast", [False, True])
def test_full_replay_skips_the_frozen_tail_matmul(arch, autocast, device, monkeypatch):
    """A full replay runs each LoRA-SP layer's frozen base again, except the block's tail (recompute.tail): its value
    only flows into the block output the replay discards. Counted by forward hooks on the bases. The gradients are
    bit for bit those of a replay that runs the tail too, in fp32 and under bf16 autocast, with dropout on."""
    import lorasp
    m = tiny(arch, **({"dropout": 0.1} if arch == "gpt2" else {}))  # T5's tiny config has dropout 0.1 already
    m.requires_grad_(False)
    targets = {"llama": ["q_proj", "down_proj"], "gpt2": ["c_attn", "c_proj"], "t5": ["q", "wo"]}[arch]
    lorasp.apply_lorasp(m.to(device), targets, r=4, alpha=8)
    calls = {}
    for name, layer in m.named_modules():
        if isinstance(layer, lorasp.LoRASPLinear):
            layer.B_train.data.normal_(0, 0.3)  # B starts at zero, which would leave A without gradient
            layer.base.register_forward_hook(lambda mod, i, o, n=name: calls.__setitem__(n, calls.get(n, 0) + 1))
    ids = (IDS % m.config.vocab_size).to(device)
    grads = {}
    for mode in ("none", "full", "full, tail replayed"):
        if mode == "full, tail replayed":
            monkeypatch.setattr(M, "tail", lambda layer, x: layer(x))  # what the replay did before tail()
        m.checkpointing, before = mode.split(",")[0], dict(calls)
        m.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        with torch.autocast(device, torch.bfloat16, enabled=autocast):
            logits = m(ids, ids) if arch == "t5" else m(ids)
        F.cross_entropy(logits.float().flatten(0, 1), ids.flatten()).backward()
        grads[mode] = {n: p.grad for n, p in m.named_parameters() if p.requires_grad}
        ran = {n: calls[n] - before.get(n, 0) for n in calls}
        tails = [n for n in ran if n.endswith(TAILS[arch])]
        assert tails and len(tails) < len(ran)
        for n, k in ran.items():  # none: once; full: forward and replay, the tails forward only
            assert k == (1 if mode == "none" or n in tails and mode == "full" else 2), (mode, n, k)
    assert grads["full"].keys() == grads["none"].keys() and grads["none"]
    for n, g in grads["full"].items():
        assert g.abs().sum() > 0, n
        assert torch.equal(g, grads["full, tail replayed"][n]), n
        if not autocast:  # the order of T5's gradient sums differs between modes (before tail() too): 1e-9
            torch.testing.assert_close(g, grads["none"][n], atol=1e-6, rtol=0, msg=n)


@pytest.mark.parametrize("autocast", [False, True])
def test_full_replay_tail_skip_on_an_nf4_base(tmp_path, autocast, monkeypatch):
    """The same on an NF4-loaded Llama, LoRA-SP on all seven projections: a `full` step dequantizes each block's 7
    weights in forward, 6 in the replay (not down_proj's) and 7 in backward, but for the first block's q/k/v (their
    input, the embedding's output, takes no gradient: no dL/dx, no dequantize); gradients equal to the replayed
    tail's."""
    import lorasp
    import quant
    import recompute
    M.save_pretrained(tiny("llama"), tmp_path)
    m = M.load_pretrained(tmp_path, quantize="nf4").train()
    lorasp.apply_lorasp(m, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], r=4, alpha=8)
    for layer in m.modules():
        if isinstance(layer, lorasp.LoRASPLinear):
            layer.B_train.data.normal_(0, 0.3)
    count, dequantize = [0], quant.NF4Tensor.dequantize

    def counted(self, *a, **k):
        count[0] += 1
        return dequantize(self, *a, **k)
    monkeypatch.setattr(quant.NF4Tensor, "dequantize", counted)
    monkeypatch.setattr(recompute, "KEEP_DENSE", False)  # backward dequantizes again (tests/test_kept_dense.py: on)
    m.checkpointing, grads = "full", {}
    for replay_tail in (False, True):
        if replay_tail:
            monkeypatch.setattr(M, "tail", lambda layer, x: layer(x))
        m.zero_grad(set_to_none=True)
        count[0] = 0
        with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            logits = m(IDS)
        F.cross_entropy(logits.float()[:, :-1].flatten(0, 1), IDS[:, 1:].flatten()).backward()
        assert count[0] == m.config.n_layer * (21 if replay_tail else 20) - 3, (replay_tail, count[0])
        grads[replay_tail] = {n: p.grad for n, p in m.named_parameters() if p.requires_grad}
    assert grads[False].keys() == grads[True].keys() and grads[False]
    for n, g in grads[False].items():
        assert g.abs().sum() > 0 and torch.equal(g, grads[True][n]), n


@pytest.mark.parametrize("arch", ["llama", "gpt2", "t5"])
def test_per_block_modes(arch, monkeypatch):
    """model.checkpointing as a list (train.py --full-blocks 1): block i runs under mode[i] (T5: in each stack), and
    the gradients are those of no checkpointing."""
    kw = dict(num_layers=3, num_decoder_layers=3) if arch == "t5" else dict(n_layer=3)
    m = with_adapters(tiny(arch, **kw), ("q", "v", "wo") if arch == "t5" else ("q_proj", "v_proj", "c_attn", "c_fc"))
    ids = IDS[:, :12] % m.config.vocab_size
    run = (lambda: m(ids, ids)) if arch == "t5" else (lambda: m(ids))

    def grads(mode):
        m.checkpointing = mode
        m.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        run().float().pow(2).mean().backward()
        return {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}
    g0 = grads("none")
    seen, real = [], M.run_block
    monkeypatch.setattr(M, "run_block", lambda mode, *a: (seen.append(mode), real(mode, *a))[1])
    g = grads(["full", "selective", "selective"])
    assert seen == ["full", "selective", "selective"] * (2 if arch == "t5" else 1)
    assert g0 and g.keys() == g0.keys() and all(g0[n].abs().sum() > 0 for n in g0)
    for n in g0:
        torch.testing.assert_close(g[n], g0[n], atol=1e-6, rtol=0, msg=n)
