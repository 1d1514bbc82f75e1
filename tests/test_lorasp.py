"""LoRA-SP layer against independent references: a merged dense weight (forward), a dense LoRA whose gradients are
masked by hooks (backward), PEFT's own LoRA layer (gradients), exact counts, AdamW with weight decay, and autograd's
saved tensors; and what the teaching demo (`python lorasp.py`) prints."""
import collections
import inspect
import math
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from fixtures import DEVICES
from lorasp import (LoRASPLinear, apply_lorasp, count_trainable, layer_seed, lorasp_summary, merge_lorasp,
                    saved_activation_bytes, unpack)

MODES = [(m, s) for m in ("mask", "freeze") for s in ("element", "column")]


def trained(layer, seed=0):
    """Give every entry of A and B (frozen ones too, in freeze mode) a random value, as if trained."""
    g = torch.Generator().manual_seed(seed)
    layer.load_dense(torch.randn(layer.lora_A.shape, generator=g), torch.randn(layer.lora_B.shape, generator=g))
    return layer


def dense_reference(layer):
    """The same layer written the textbook way: dense A, B Parameters, S applied in forward (mask mode) or to
    the gradient by a hook (freeze mode)."""
    A = nn.Parameter(layer.lora_A.detach().clone())
    B = nn.Parameter(layer.lora_B.detach().clone())
    if layer.mode == "freeze":
        A.register_hook(lambda g: g * layer.mask_A)
        B.register_hook(lambda g: g * layer.mask_B)
        f = lambda x: layer.base(x) + layer.scale * x @ A.T @ B.T  # noqa: E731
    else:
        f = lambda x: layer.base(x) + layer.scale * x @ (A * layer.mask_A).T @ (B * layer.mask_B).T  # noqa: E731
    return f, A, B


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode,structure", MODES)
def test_forward_equals_merged_dense_weight(mode, structure, device):
    torch.manual_seed(0)
    layer = trained(LoRASPLinear(nn.Linear(32, 48), r=4, alpha=8, mode=mode, structure=structure)).to(device)
    x = torch.randn(2, 5, 32, device=device)                                     # (B, T, in)
    S_A = layer.mask_A if mode == "mask" else torch.ones_like(layer.mask_A)
    S_B = layer.mask_B if mode == "mask" else torch.ones_like(layer.mask_B)
    A = torch.zeros(4, 32, device=device).masked_scatter(layer.mask_A, layer.A_train.detach())  # the packed entries,
    B = torch.zeros(48, 4, device=device).masked_scatter(layer.mask_B, layer.B_train.detach())  # not lora_A
    if mode == "freeze":
        A[~layer.mask_A], B[~layer.mask_B] = layer.A_frozen, layer.B_frozen
    W = layer.base.weight + 2.0 * (B * S_B) @ (A * S_A)
    torch.testing.assert_close(layer(x), x @ W.T + layer.base.bias)
    torch.testing.assert_close(merge_lorasp(layer)(x), x @ W.T + layer.base.bias)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode,structure", MODES)
def test_backward_equals_dense_lora_with_masked_gradients(mode, structure, device):
    torch.manual_seed(0)
    layer = trained(LoRASPLinear(nn.Linear(32, 48), r=4, alpha=8, mode=mode, structure=structure)).to(device)
    ref, A, B = dense_reference(layer)
    x, t = torch.randn(3, 7, 32, device=device), torch.randn(3, 7, 48, device=device)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    nn.functional.mse_loss(layer(x1), t).backward()
    nn.functional.mse_loss(ref(x2), t).backward()
    torch.testing.assert_close(layer.A_train.grad, A.grad[layer.mask_A])
    torch.testing.assert_close(layer.B_train.grad, B.grad[layer.mask_B])
    assert not A.grad[~layer.mask_A].any() and not B.grad[~layer.mask_B].any()
    torch.testing.assert_close(x1.grad, x2.grad)


def test_freeze_mode_gradient_is_lora_gradient_times_mask_bit_for_bit():
    torch.manual_seed(0)
    base, x = nn.Linear(64, 64), torch.randn(4, 64)
    B = torch.randn(64, 8)
    lora, sp = LoRASPLinear(base, 8, keep=1.0, seed=3), LoRASPLinear(base, 8, mode="freeze", seed=3)
    assert torch.equal(lora.lora_A, sp.lora_A)  # A is drawn before the masks: keep does not change it
    lora.load_dense(lora.lora_A, B), sp.load_dense(sp.lora_A, B)
    lora(x).square().sum().backward(), sp(x).square().sum().backward()
    assert torch.equal(unpack(sp.mask_A, sp.A_train.grad), lora.A_train.grad.view(8, 64) * sp.mask_A)
    assert torch.equal(unpack(sp.mask_B, sp.B_train.grad), lora.B_train.grad.view(64, 8) * sp.mask_B)


@pytest.mark.parametrize("mode,structure", MODES + [("mask", "element-keep-1")])
def test_gradients_are_peft_loras_times_the_mask(mode, structure):
    """PEFT's lora.Linear (the oracle) given the A and B our forward uses (mask mode: A ⊙ S_A, B ⊙ S_B; freeze mode:
    A, B whole): the same output and dL/dx, and our packed gradients are its dense ones times S (keep=1: all)."""
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(0)
    keep = 1.0 if structure.endswith("keep-1") else 0.5
    ours = trained(LoRASPLinear(nn.Linear(32, 48), r=4, alpha=8, keep=keep, mode=mode,
                                structure=structure.removesuffix("-keep-1")))
    model = nn.Sequential()
    model.add_module("proj", nn.Linear(32, 48))
    model.proj.load_state_dict(ours.base.state_dict())
    theirs = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["proj"])).base_model.model.proj
    A, B = theirs.lora_A["default"].weight, theirs.lora_B["default"].weight        # (r, in), (out, r)
    with torch.no_grad():
        A.copy_(ours.lora_A), B.copy_(ours.lora_B)
    x, t = torch.randn(3, 7, 32), torch.randn(3, 7, 48)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), theirs(x2)
    nn.functional.mse_loss(y1, t).backward()
    nn.functional.mse_loss(y2, t).backward()
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(unpack(ours.mask_A, ours.A_train.grad), A.grad * ours.mask_A)
    torch.testing.assert_close(unpack(ours.mask_B, ours.B_train.grad), B.grad * ours.mask_B)
    assert A.grad.abs().min() > 0 and B.grad.abs().min() > 0     # S, not a zero gradient, made our frozen entries 0


def test_the_teaching_demo_prints_what_the_paper_claims(capsys):
    """`python lorasp.py` prints, each figure computed there: half of A's and B's entries train; at init (B = 0)
    LoRA-SP's output is LoRA's; its gradient is LoRA's times S in freeze mode and, in mask mode (Eq. 2), that of LoRA
    given A ⊙ S_A and B ⊙ S_B; an AdamW step with weight decay moves no frozen entry (a dense LoRA's masked by a hook:
    all of them); gradients and optimizer state are half LoRA's."""
    import lorasp
    lorasp.demo()
    out = capsys.readouterr().out
    value = lambda label: float(re.search(re.escape(label) + r" *= *([-\d.e]+)", out)[1])  # noqa: E731
    assert "LoRA-SP (keep 0.5) trains 4,096 of 8,192 A entries and 4,096 of 8,192 B entries" in out
    assert re.search(r"at init \(B = 0\).*max \|y_lora - y_sp\| = 0\.0\b", out)
    freeze = ["max |dA_lora * S_A - dA_sp|", "max |dB_lora * S_B - dB_sp|", "max |dA_hook - dA_sp|"]
    mask = ["max |y_eff - y_sp|", "max |dA_eff * S_A - dA_sp|", "max |dB_eff * S_B - dB_sp|"]
    assert [value(label) for label in freeze + mask] == [0.0] * 6
    assert "moves frozen A entries (4,096 of them): hook 4,096, freeze mode 0, mask mode 0" in out
    table = re.finditer(r"^   (LoRA(?:-SP \w+)?)\s+([\d,. ]+)$", out, re.M)
    rows = {m[1]: m[2].replace(",", "").split() for m in table}
    lora, sp = ([int(v) for v in rows[k][:3]] for k in ("LoRA", "LoRA-SP element"))  # trainable, grad, AdamW bytes
    assert lora == [2 * sp[0], 2 * sp[1], 2 * sp[2] - 8]           # AdamW: its two 4-byte step counts, not halved


@pytest.mark.parametrize("structure", ["element", "column"])
def test_exact_counts_and_optimizer_state_sizes(structure):
    layer = LoRASPLinear(nn.Linear(30, 50), r=6, keep=0.5, structure=structure)
    n_A = 6 * 15 if structure == "column" else 90
    assert int(layer.mask_A.sum()) == layer.A_train.numel() == n_A
    assert int(layer.mask_B.sum()) == layer.B_train.numel() == 150
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["A_train", "B_train"]
    if structure == "column":
        assert (layer.mask_A.all(0) | ~layer.mask_A.any(0)).all()  # whole columns, all r rows
    for keep in (0.3, 0.77, 1.0):
        lay = LoRASPLinear(nn.Linear(30, 50), r=6, keep=keep)
        assert lay.A_train.numel() == round(keep * 180) and lay.B_train.numel() == round(keep * 300)
    lora = LoRASPLinear(nn.Linear(30, 50), r=6, keep=1.0)
    assert count_trainable(lora) == 6 * (30 + 50) == 2 * count_trainable(layer)
    x = torch.randn(5, 30)
    sizes = []
    for m in (lora, layer):
        trained(m)(x).sum().backward()
        opt = torch.optim.AdamW([m.A_train, m.B_train])
        opt.step()
        sizes.append((sum(p.grad.numel() for p in (m.A_train, m.B_train)),
                      sum(s["exp_avg"].numel() + s["exp_avg_sq"].numel() for s in opt.state.values())))
    assert sizes[1][0] * 2 == sizes[0][0] and sizes[1][1] * 2 == sizes[0][1]


@pytest.mark.parametrize("mode", ["mask", "freeze"])
def test_weight_decay_never_moves_frozen_entries(mode):
    torch.manual_seed(0)
    layer = trained(LoRASPLinear(nn.Linear(16, 24), r=4, mode=mode))
    A0, B0 = layer.lora_A.detach().clone(), layer.lora_B.detach().clone()
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.5)
    for _ in range(3):
        opt.zero_grad()
        layer(torch.randn(8, 16)).square().mean().backward()
        opt.step()
    A1, B1 = layer.lora_A.detach(), layer.lora_B.detach()
    assert torch.equal(A1[~layer.mask_A], A0[~layer.mask_A]) and torch.equal(B1[~layer.mask_B], B0[~layer.mask_B])
    assert (A1[layer.mask_A] != A0[layer.mask_A]).all() and (B1[layer.mask_B] != B0[layer.mask_B]).all()
    if mode == "mask":
        assert not A1[~layer.mask_A].any() and not B1[~layer.mask_B].any()


def test_masks_reproducible_per_name_and_seed_not_construction_order():
    def model(order):
        m = nn.ModuleDict({k: nn.Linear(16, 16) for k in order})
        return apply_lorasp(m, ["q_proj", "v_proj"], r=4, seed=7)

    a, b = model(["q_proj", "v_proj"]), model(["v_proj", "q_proj"])
    for k in ("q_proj", "v_proj"):
        assert torch.equal(a[k].mask_A, b[k].mask_A) and torch.equal(a[k].mask_B, b[k].mask_B)
        assert torch.equal(a[k].lora_A, b[k].lora_A)
        assert a[k].seed == layer_seed(7, k)
    assert not torch.equal(a["q_proj"].mask_A, a["v_proj"].mask_A)        # layers differ
    c = apply_lorasp(nn.ModuleDict({"q_proj": nn.Linear(16, 16)}), ["q_proj"], r=4, seed=8)
    assert not torch.equal(a["q_proj"].mask_A, c["q_proj"].mask_A)        # seeds differ
    assert layer_seed(7, "q_proj") == 4014742243  # crc32: the same in every process (Python's hash() is salted)


def test_apply_lorasp_targets_freezing_counts_and_summary():
    torch.manual_seed(0)
    model = nn.ModuleDict({"layers": nn.ModuleList([nn.ModuleDict({"q_proj": nn.Linear(8, 8),
                                                                    "o_proj": nn.Linear(8, 8)}) for _ in range(2)]),
                           "ln": nn.LayerNorm(8), "seq_proj": nn.Linear(8, 8)})
    apply_lorasp(model, ["q_proj"], r=2)
    assert [n for n, m in model.named_modules() if isinstance(m, LoRASPLinear)] == ["layers.0.q_proj", "layers.1.q_proj"]
    assert isinstance(model["seq_proj"], nn.Linear)                     # "seq_proj" does not end with ".q_proj"
    assert count_trainable(model) == 2 * (round(0.5 * 16) + round(0.5 * 16)) == 32
    assert not model["ln"].weight.requires_grad
    text = lorasp_summary(model)
    base = 5 * (64 + 8) + 16
    assert "layers.1.q_proj" in text and f"trainable 32 of {base} base parameters" in text
    assert f"({100 * 32 / base:.4f}%)" in text
    with pytest.raises(ValueError, match="k_proj"):
        apply_lorasp(model, ["k_proj"])


def test_invalid_settings_are_errors():
    for kw in (dict(keep=0.0), dict(keep=1.5), dict(mode="Mask"), dict(structure="row")):
        with pytest.raises(ValueError):
            LoRASPLinear(nn.Linear(8, 8), r=2, **kw)
    with pytest.raises(TypeError):
        LoRASPLinear(nn.Conv1d(8, 8, 1))


def test_the_default_keep_is_one_constant_the_papers_half():
    """keep's default was written three times (LoRASPLinear's and apply_lorasp's signatures, train.py's --keep): now
    lorasp.KEEP, which all three take; help() still reads keep=0.5 (CONTRACT.md's signature)."""
    import cli
    import lorasp
    assert lorasp.KEEP == 0.5
    for f in (LoRASPLinear, apply_lorasp):
        assert inspect.signature(f).parameters["keep"].default is lorasp.KEEP
        assert "keep=0.5," in str(inspect.signature(f))
    assert cli.parse_args([]).keep is lorasp.KEEP                       # (the offline demo's flags: no --keep)


def test_check_adapted_counts_what_each_structure_draws_or_refuses_it_by_name(monkeypatch):
    """train.py's --keep check (tasks.check_adapted) counted A's entries for "element" and A's columns for any other
    structure: one a student adds (say "row") was counted as "column" without a word. It asks lorasp's rule now (UNITS,
    DRAWN): for each structure, and one added here that draws B's columns too, it refuses exactly the --keep values
    that leave the layer itself without a trainable entry; a structure lorasp does not know is refused by name."""
    import lorasp
    import tasks
    from data import UserError
    base = nn.Linear(40, 30)                                    # A (3, 40): 120 entries, 40 columns; B: 90 entries
    with pytest.raises(UserError, match="--structure row: lorasp.py draws masks for element, column only"):
        tasks.check_adapted(SimpleNamespace(rank=3, structure="row"), 0.5, {"proj": base})
    monkeypatch.setitem(lorasp.UNITS, "both", dict(A="columns", B="columns"))   # B (30, 3): 3 columns
    for structure in lorasp.UNITS:
        for keep in (0.004, 0.005, 0.006, 0.0125, 0.013, 0.16, 0.17, 0.5):   # round(keep * n) = 0 below 0.5 / n
            try:
                LoRASPLinear(base, 3, keep=keep, structure=structure)
                layer = "trains"
            except ValueError as e:
                layer = str(e)[str(e).index("leaves") + 7:][0]   # "A" or "B"
            try:
                tasks.check_adapted(SimpleNamespace(rank=3, structure=structure), keep, {"proj": base})
                check = "trains"
            except UserError as e:
                check = str(e).split("'s ")[1][0]
            assert check == layer, (structure, keep)


def test_column_structure_saves_about_half_the_input_activations():
    torch.manual_seed(0)
    base, x = nn.Linear(128, 96), torch.randn(4, 256, 128, requires_grad=True)   # 1024 tokens
    lora, _ = saved_activation_bytes(LoRASPLinear(base, r=4, keep=1.0), x)
    element, _ = saved_activation_bytes(trained(LoRASPLinear(base, r=4)), x)
    column, y = saved_activation_bytes(trained(LoRASPLinear(base, r=4, structure="column")), x)
    inputs = x.nbytes + 1024 * 4 * 4                                   # x and h = x A^T, fp32
    assert lora == inputs                                              # LoRA keeps x and h, nothing else
    assert column <= 0.55 * lora and element >= lora                   # element mode saves no activations
    weights = (4 * 128 + 96 * 4) * 4                                   # both keep the unpacked A_eff, B_eff too
    assert element == inputs + weights and column == x.nbytes // 2 + 1024 * 4 * 4 + weights   # x[..., cols], h
    y.sum().backward()                                                 # and the saved tensors suffice
    assert x.grad is not None


def test_peft_lora_linear_saves_what_our_keep_1_saves():
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(0)
    x = torch.randn(2, 64, 32, requires_grad=True)
    model = nn.Sequential()
    model.add_module("proj", nn.Linear(32, 32))
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["proj"]))
    theirs, _ = saved_activation_bytes(peft, x)
    ours, _ = saved_activation_bytes(LoRASPLinear(nn.Linear(32, 32), r=4, keep=1.0), x)
    assert ours == theirs == x.nbytes + 2 * 64 * 4 * 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dtypes_and_merge_of_a_model(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).to(dtype)
    apply_lorasp(model, ["0", "2"], r=4, structure="column")
    for m in model:
        if isinstance(m, LoRASPLinear):
            trained(m)
    x = torch.randn(3, 16, dtype=dtype)
    y = model(x)
    assert y.dtype == dtype and model[0].A_train.dtype == torch.float32           # fp32 adapters, like PEFT
    y.float().sum().backward()
    assert model[0].A_train.grad.dtype == torch.float32
    merged = merge_lorasp(model)
    assert [type(m) for m in merged] == [nn.Linear, nn.ReLU, nn.Linear] and merged[0].weight.dtype == dtype
    assert count_trainable(merged) == 0
    # merging rounds W + ΔW once: bf16 keeps 8 bits of it, fp32 24 (1e-5 allows the few ulps a 32-long sum moves)
    tol = dict(atol=(0.03 if dtype == torch.bfloat16 else 1e-5) * y.abs().max().item(), rtol=0)
    torch.testing.assert_close(merged(x), y.detach(), **tol)


def test_merge_refuses_a_nan_or_inf_adapter_naming_the_layer_and_merges_nothing():
    """merge_lorasp folded a NaN or Inf entry of A or B into the weight with no word (an adapter file is checked as it
    loads; the Python API was not): now refused, naming the layer, before any layer merges. The reference: the merge
    written out, W + (alpha/r) B A, NaN where the unchecked one wrote it."""
    torch.manual_seed(0)
    model = nn.Sequential(collections.OrderedDict(up=nn.Linear(16, 32), act=nn.ReLU(), down=nn.Linear(32, 8)))
    apply_lorasp(model, ["up", "down"], r=4)
    for m in (model.up, model.down):
        trained(m)
    x, down = torch.randn(3, 16), model.down
    for k, bad in (("B", float("nan")), ("A", float("inf"))):
        with torch.no_grad():
            good = getattr(down, f"{k}_train")[5].item()
            getattr(down, f"{k}_train")[5] = bad
        assert (down.base.weight + down.scale * down.lora_B @ down.lora_A).isnan().any()  # what the merge wrote
        with pytest.raises(ValueError) as refused:
            merge_lorasp(model)
        assert str(refused.value) == "merge_lorasp: down: lora_A or lora_B holds NaN or Inf; nothing was merged"
        assert isinstance(model.up, LoRASPLinear) and model.down is down  # the layer before it: not merged either
        with pytest.raises(ValueError, match="merge_lorasp: layer: lora_A or lora_B holds NaN or Inf"):
            merge_lorasp(down)                                             # one layer alone
        with torch.no_grad():
            getattr(down, f"{k}_train")[5] = good
    y = model(x)
    torch.testing.assert_close(merge_lorasp(model)(x), y.detach(), atol=1e-5 * y.abs().max().item(), rtol=0)  # merged


def test_kaiming_init_like_peft():
    torch.manual_seed(0)
    layer = LoRASPLinear(nn.Linear(256, 64), r=16, keep=1.0)
    bound = 1 / math.sqrt(256)                                         # kaiming_uniform(a=sqrt(5)) on fan_in=256
    A = layer.lora_A
    assert A.abs().max() <= bound and A.abs().max() > 0.95 * bound and not layer.lora_B.any()


def test_compiles_without_graph_breaks():
    # fullgraph=True turns any graph break into an error. aot_eager traces forward and backward as inductor does
    # but skips code generation (inductor on these graphs: python bench/compile_lorasp.py, too slow for a test).
    torch.manual_seed(0)
    for mode, structure in (("mask", "element"), ("freeze", "column")):
        layer = trained(LoRASPLinear(nn.Linear(32, 24), r=4, mode=mode, structure=structure))
        x = torch.randn(2, 8, 32)
        f = torch.compile(lambda x: layer(x).square().sum(), fullgraph=True, backend="aot_eager")
        f(x).backward()
        g = layer.A_train.grad.clone()
        layer.zero_grad()
        layer(x).square().sum().backward()
        torch.testing.assert_close(g, layer.A_train.grad)


@pytest.mark.parametrize("device", DEVICES)
def test_fp32_model_under_bf16_autocast(device):
    """An fp32 model run under torch.autocast(bf16), as users write it: the adapter adds in the base's output
    dtype (the in-place addmm is not autocast), and the result and A's gradient match the same math done by hand."""
    from quant import NF4Linear
    torch.manual_seed(0)
    for base in (nn.Linear(64, 32), NF4Linear.from_linear(nn.Linear(64, 32))):
        layer = trained(LoRASPLinear(base.to(device), r=4, alpha=8, seed=3))
        x = torch.randn(2, 5, 64, device=device, requires_grad=True)
        with torch.autocast(device, torch.bfloat16):
            y = layer(x)
        assert y.dtype == torch.bfloat16
        y.float().square().sum().backward()
        bf = lambda t: t.detach().to(torch.bfloat16)  # noqa: E731
        W = base.weight.dequantize(torch.bfloat16) if isinstance(base, NF4Linear) else bf(base.weight)
        h = bf(x) @ bf(layer.lora_A).T
        terms = [bf(x) @ W.T, layer.scale * (h @ bf(layer.lora_B).T)] + ([bf(base.bias)] if base.bias is not None
                                                                         else [])
        ref = sum(terms[1:], terms[0])
        # the same bf16 terms added in another order: where they nearly cancel, the output can be off by an ulp of
        # the terms (on CUDA 2 of 320 outputs were off by 2^-10, 13% of their value), so the bound is 2% of the
        # output plus half an ulp (2^-8 relative) of the terms' magnitudes
        bound = 0.02 * ref.float().abs() + 2 ** -8 * sum(t.float().abs() for t in terms)
        assert torch.all((y.float() - ref.float()).abs() <= bound), (y.float() - ref.float()).abs().max()
        assert layer.A_train.grad.dtype == torch.float32 and layer.A_train.grad.abs().sum() > 0
