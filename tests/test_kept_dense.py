"""A full replay keeps the NF4 weights it dequantizes for its block's backward (recompute.replay_slot,
quant_torch.replay_dense): dL/dx = g W reads the replay's W instead of dequantizing it a third time. Checked against
the same step with the keeping off (recompute.KEEP_DENSE): the same gradients bit for bit, on models whose blocks all
differ (a weight kept from another block, or from the step before, changes them), and the dequantizes counted."""
import pytest
import torch
import torch.nn.functional as F

import lorasp
import model as M
import quant
import recompute

SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TARGETS = {"llama": SEVEN, "gpt2": ["c_attn", "c_proj", "c_fc"], "t5": ["q", "k", "v", "o", "wi", "wo"]}
IDS = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))


def nf4_model(tmp_path, arch):
    """A tiny random checkpoint of `arch` (3 blocks a stack, each its own weights), loaded with NF4 block linears and
    LoRA-SP on them, B drawn away from zero (else dL/dA = 0)."""
    torch.manual_seed(0)
    kw = dict(num_layers=3, num_decoder_layers=3) if arch == "t5" else dict(n_layer=3)
    M.save_pretrained(M.build_model(M.replace(M.get_config(f"{arch}-tiny"), **kw)), tmp_path)
    m = M.load_pretrained(tmp_path, quantize="nf4").train()
    lorasp.apply_lorasp(m, TARGETS[arch], r=4, alpha=8)
    for layer in m.modules():
        if isinstance(layer, lorasp.LoRASPLinear):
            layer.B_train.data.normal_(0, 0.3)
    m.checkpointing = "full"
    return m


def grads_and_dequantizes(m, arch, autocast, monkeypatch, steps=2):
    """The adapters' gradients after `steps` full-checkpointing steps (summed), and the dequantizes of the last step."""
    count, dequantize = [0], quant.NF4Tensor.dequantize

    def counted(self, *a, **k):
        count[0] += 1
        return dequantize(self, *a, **k)
    monkeypatch.setattr(quant.NF4Tensor, "dequantize", counted)
    ids = IDS % m.config.vocab_size
    m.zero_grad(set_to_none=True)
    for _ in range(steps):
        count[0] = 0
        torch.manual_seed(0)  # T5's dropout: the same masks either way
        with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            logits = m(ids, ids) if arch == "t5" else m(ids)
        F.cross_entropy(logits.float().flatten(0, 1), ids.flatten()).backward()
    monkeypatch.setattr(quant.NF4Tensor, "dequantize", dequantize)
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}, count[0]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "t5"])
@pytest.mark.parametrize("autocast", [False, True])
def test_kept_dense_weights_give_the_same_gradients(tmp_path, arch, autocast, monkeypatch):
    m = nf4_model(tmp_path, arch)
    grads, counts = {}, {}
    for keep in (False, True):
        monkeypatch.setattr(recompute, "KEEP_DENSE", keep)
        grads[keep], counts[keep] = grads_and_dequantizes(m, arch, autocast, monkeypatch)
    assert grads[False].keys() == grads[True].keys() and grads[False]
    for n, g in grads[True].items():
        assert g.abs().sum() > 0 and torch.equal(g, grads[False][n]), n
    assert counts[True] < counts[False], counts


@pytest.mark.parametrize("autocast", [False, True])
def test_a_full_step_dequantizes_each_weight_twice(tmp_path, autocast, monkeypatch):
    """llama, 3 blocks of 7 NF4 weights: forward dequantizes 7 a block, the replay 6 (not down_proj's, recompute.tail),
    backward only down_proj's, plus the first block's q/k/v, whose input (the embedding's output) takes no gradient:
    their backward computes no dL/dx, so the replay keeps nothing for them either (and dequantizes them for the
    replay's forward only). Without the keeping: 7 + 6 + 7 a block, but those 3."""
    m = nf4_model(tmp_path, "llama")
    L = m.config.n_layer
    for keep, expected in ((False, 20 * L - 3), (True, 14 * L)):
        monkeypatch.setattr(recompute, "KEEP_DENSE", keep)
        assert grads_and_dequantizes(m, "llama", autocast, monkeypatch, steps=1)[1] == expected, keep


def test_kept_buffers_are_reused_across_blocks_and_steps(tmp_path, monkeypatch):
    """The kept weights live in one buffer per slot of a replay (a block's weights in order), the same buffers for every
    block and step: at llama2-7b's width a fresh 90 MB tensor faults its pages in on every write."""
    import threading

    import quant_torch
    m = nf4_model(tmp_path, "llama")
    monkeypatch.setattr(recompute, "KEEP_DENSE", True)
    monkeypatch.setattr(quant_torch, "_kept", threading.local())     # none from the tests before
    grads_and_dequantizes(m, "llama", True, monkeypatch, steps=1)
    slots = {k: v.data_ptr() for k, v in vars(quant_torch._kept).items() if k[0][0] == "replay"}
    assert len(slots) == 6, slots    # bf16 q, k, v, o, gate, up: the tail's (down_proj) is not dequantized in a replay
    grads_and_dequantizes(m, "llama", True, monkeypatch, steps=2)
    assert {k: v.data_ptr() for k, v in vars(quant_torch._kept).items() if k[0][0] == "replay"} == slots


@pytest.mark.parametrize("arch", ["llama", "gpt2", "t5"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_the_plan_counts_the_kept_buffers(tmp_path, arch, dtype, monkeypatch):
    """plan.py's dequant part grows by the kept buffers' bytes, measured after a step: one block's NF4 weights but its
    tail (T5: the decoder's, whose shapes cover the encoder's), in the step's dtype."""
    import threading

    import plan
    import quant_torch
    import train
    m = nf4_model(tmp_path / "model", arch)
    monkeypatch.setattr(quant_torch, "_kept", threading.local())
    grads_and_dequantizes(m, arch, dtype == "bf16", monkeypatch, steps=1)
    kept = sum(v.nbytes for k, v in vars(quant_torch._kept).items() if k[0][0] == "replay")
    assert kept > 0
    args = train.parse_args(["--model", str(tmp_path / "model"), "--data", "alpaca", "--quant", "nf4",
                             "--checkpointing", "full", "--dtype", dtype, "--device", "cpu"])
    config, targets = plan.model_config(args.model, args.model), train.TARGETS[arch].split(",")
    planned = {}
    for keep in (False, True):
        monkeypatch.setattr(recompute, "KEEP_DENSE", keep)
        planned[keep] = plan.estimate(config, args, targets, 0, 300 * plan.MiB)["dequant"]
    assert planned[True] - planned[False] == kept


@pytest.mark.parametrize("arch", ["llama", "gpt2", "t5"])
def test_a_tail_the_adapter_leaves_out_is_not_replayed(tmp_path, arch, monkeypatch):
    """A tail that is a plain frozen layer (--targets q_proj,v_proj: down_proj an NF4Linear) is skipped in a replay as a
    LoRA-SP layer's base is: not dequantized, nothing kept for it, as plan.py counts (a replay kept a buffer of its
    shape that the plan left out), and the same gradients as a replay that runs it."""
    import threading

    import plan
    import quant_torch
    import train
    targets = {"llama": ["q_proj", "v_proj"], "gpt2": ["c_attn"], "t5": ["q", "v"]}[arch]
    torch.manual_seed(0)
    kw = dict(num_layers=3, num_decoder_layers=3) if arch == "t5" else dict(n_layer=3)
    M.save_pretrained(M.build_model(M.replace(M.get_config(f"{arch}-tiny"), **kw)), tmp_path / "model")
    m = lorasp.apply_lorasp(M.load_pretrained(tmp_path / "model", quantize="nf4").train(), targets, r=4, alpha=8)
    for layer in m.modules():
        if isinstance(layer, lorasp.LoRASPLinear):
            layer.B_train.data.normal_(0, 0.3)
    m.checkpointing = "full"
    monkeypatch.setattr(recompute, "KEEP_DENSE", True)
    grads, kept = {}, {}
    for replay_tail in (True, False):
        monkeypatch.setattr(M, "tail", (lambda layer, x: layer(x)) if replay_tail else recompute.tail)  # run whole
        monkeypatch.setattr(quant_torch, "_kept", threading.local())
        grads[replay_tail] = grads_and_dequantizes(m, arch, True, monkeypatch, steps=1)[0]
        kept[replay_tail] = sum(v.nbytes for k, v in vars(quant_torch._kept).items() if k[0][0] == "replay")
    kept = kept[False]
    for n, g in grads[False].items():
        assert g.abs().sum() > 0 and torch.equal(g, grads[True][n]), n
    args = train.parse_args(["--model", str(tmp_path / "model"), "--data", "alpaca", "--quant", "nf4",
                             "--checkpointing", "full", "--dtype", "bf16", "--device", "cpu"])
    config, planned = plan.model_config(args.model, args.model), {}
    for keep in (False, True):
        monkeypatch.setattr(recompute, "KEEP_DENSE", keep)
        planned[keep] = plan.estimate(config, args, targets, 0, 300 * plan.MiB)["dequant"]
    assert planned[True] - planned[False] == kept
