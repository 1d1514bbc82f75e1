"""The teaching demos (`python lorasp.py`, `python quant.py`, `python model.py`, `python metrics.py`) checked figure by
figure against math written here another way: LoRA and LoRA-SP as a merged dense weight W + s (B ⊙ S_B)(A ⊙ S_A)
differentiated by autograd in float64, PEFT's LoRA gradient masked by S, the paper's half of A and B, bitsandbytes'
NF4 (its table, its storage, its dequantize), a tiny Llama's parameters counted from its config and its greedy
continuation without a KV cache, sacreBLEU, rouge-score, scikit-learn and SciPy. A printed claim that is not what the
code computes fails here. Also: what a student who edits lorasp.py or quant.py meets (one fact, one place)."""
import inspect
import math
import re
import runpy
import sys
import tempfile

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lorasp
import quant
from lorasp import LoRASPLinear

ROOT = __file__.rsplit("/tests/", 1)[0]


def number(out, label):
    """The number printed right after `label` (commas allowed; a trailing % divides by 100)."""
    m = re.search(re.escape(label) + r"\s*([-\d.,e+]+)(%?)", out)
    assert m, f"{label!r} not in the output:\n{out}"
    return float(m[1].replace(",", "").rstrip(".,")) / (100 if m[2] else 1)


# ----------------------------------------------------------------------------------------------------
# python lorasp.py

def lorasp_reference():
    """The demo's inputs, drawn as it draws them, and its figures the textbook way: dense float64 A and B, the
    update merged into W, autograd; S_A and S_B are the masks a keep=0.5, seed=1 layer draws (counted below)."""
    torch.manual_seed(0)
    n, r, alpha = 512, 16, 32
    base, x, target = nn.Linear(n, n), torch.randn(8, 256, n), torch.randn(8, 256, n)
    B0 = 0.02 * torch.randn(n, r)
    layer = LoRASPLinear(base, r, alpha, seed=1)
    A0 = nn.init.kaiming_uniform_(torch.empty(r, n), a=math.sqrt(5), generator=torch.Generator().manual_seed(1))
    assert torch.equal(layer.lora_A * layer.mask_A, A0 * layer.mask_A)    # PEFT's init, drawn first from seed 1
    S_A, S_B = layer.mask_A.double(), layer.mask_B.double()
    W, b, X, T = (t.detach().double() for t in (base.weight, base.bias, x, target))

    def run(A, B, SA=1, SB=1):
        """y, dL/dA, dL/dB of y = x (W + s (B ⊙ SB)(A ⊙ SA))^T + b, L the mean squared error."""
        A, B = A.double().clone().requires_grad_(), B.double().clone().requires_grad_()
        y = X @ (W + alpha / r * (B * SB) @ (A * SA)).T + b
        F.mse_loss(y, T).backward()
        return y.detach(), A.grad, B.grad

    lora, sp = run(A0, B0), run(A0, B0, S_A, S_B)
    return dict(n=n, r=r, x=x, A0=A0, B0=B0, S_A=S_A, S_B=S_B, lora=lora, sp=sp, base=base, target=target,
                alpha=alpha, freeze=run(A0, B0))


def test_every_figure_the_lorasp_demo_prints_is_the_textbook_math(capsys):
    """Each number `python lorasp.py` prints, recomputed: the paper's half (Eq. 1), LoRA's output at init, how far
    LoRA on the whole A, B lands from Eq. 2 (output, and dA on S_A), the frozen entries AdamW's weight decay moves in a
    dense LoRA masked by a hook, and the table's entries and bytes from their formulas (fp32: 4 bytes an entry)."""
    lorasp.demo()
    out = capsys.readouterr().out
    ref = lorasp_reference()
    n, r, S_A, S_B = ref["n"], ref["r"], ref["S_A"], ref["S_B"]
    half = n * r // 2                                          # the paper: exactly half of A's and of B's entries
    assert f"r={r}, alpha={ref['alpha']}, x (8, 256, {n}): LoRA-SP (keep 0.5) trains {half:,} of {2 * half:,} A " \
           f"entries and {half:,} of {2 * half:,} B entries" in out
    assert int(S_A.sum()) == int(S_B.sum()) == half
    assert number(out, "its output is LoRA's: max |y_lora - y_sp| =") == 0.0   # B = 0: both are W x + b exactly
    (y_lora, dA_lora, _), (y_sp, dA_sp, _) = ref["lora"], ref["sp"]
    assert number(out, "differs: max |y_lora - y_sp| =") == pytest.approx((y_lora - y_sp).abs().max().item(), rel=1e-3)
    assert number(out, "(|y| <=") == pytest.approx(y_lora.abs().max().item(), rel=1e-3)
    rel = ((S_A * dA_lora - dA_sp).norm() / (S_A * dA_lora).norm()).item()   # dA_sp is 0 off S_A: S_A's entries
    assert number(out, "||dA_lora - dA_sp|| =") == pytest.approx(rel, abs=6e-4)
    # AdamW (torch's defaults, lr 1e-3, weight decay 1e-2) multiplies every entry by 1 - lr * wd before its step: an
    # entry with no gradient moves by that alone, so a dense LoRA masked by a hook moves each nonzero frozen entry
    frozen = ref["A0"][~S_A.bool()]
    moved = int((frozen * (1 - 1e-3 * 1e-2) != frozen).sum())
    assert moved == int((frozen != 0).sum()) == 2 * half - half
    assert f"an AdamW step (lr 0.001, weight decay 0.01) moves frozen A entries ({2 * half - half:,} of them): " \
           f"hook {moved:,}, freeze mode 0, mask mode 0" in out
    assert f"element all of x ({int(S_A.bool().any(0).sum())} of {n} columns of A train)" in out
    x, N = ref["x"], 8 * 256
    assert f"x itself is {x.nbytes:,} bytes" in out
    A_eff_B_eff = 4 * (r * n + n * r)                          # unpacked for forward, both fp32
    col_keep = r * round(0.5 * n)                              # structure="column": half of A's columns, whole
    rows = {"LoRA": (2 * r * n, x.nbytes + 4 * N * r),        # keeps x and h = x A^T (N, r)
            "LoRA-SP element": (2 * half, x.nbytes + 4 * N * r + A_eff_B_eff),
            "LoRA-SP column": (col_keep + half, 4 * N * round(0.5 * n) + 4 * N * r + A_eff_B_eff)}
    for name, (trainable, act) in rows.items():
        line = re.search(rf"^   {name}\s+([\d,. ]+)$", out, re.M)[1].replace(",", "").split()
        assert [float(v) for v in line] == pytest.approx(
            [trainable, 4 * trainable, 8 * trainable + 8, act, round(act / rows["LoRA"][1], 3)]), name  # AdamW: m, v
        # fp32 (8 bytes an entry) and one 4-byte step count per Parameter (A_train, B_train)


def test_the_lorasp_demos_gradients_are_textbook_loras_times_s():
    """What part 1 and 2 print as bit-for-bit zeros, against the float64 textbook: the layer in freeze mode gives
    LoRA's dL/dA, dL/dB times S; in mask mode (Eq. 2) the gradient of W + s (B ⊙ S_B)(A ⊙ S_A), on S only."""
    ref = lorasp_reference()
    for mode, (y_ref, dA_ref, dB_ref) in (("freeze", ref["freeze"]), ("mask", ref["sp"])):
        m = LoRASPLinear(ref["base"], ref["r"], ref["alpha"], mode=mode, seed=1)
        m.load_dense(m.lora_A, ref["B0"])
        y = m(ref["x"])
        F.mse_loss(y, ref["target"]).backward()
        torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(m.lora_A.grad.double(), dA_ref * ref["S_A"], rtol=1e-4, atol=1e-9)
        torch.testing.assert_close(m.lora_B.grad.double(), dB_ref * ref["S_B"], rtol=1e-4, atol=1e-9)


def test_keep_1_is_peft_lora_to_the_bit_where_alpha_over_r_is_a_power_of_two():
    """keep=1.0 is plain LoRA: against PEFT's lora.Linear, output, dL/dA, dL/dB and dL/dx are equal bit for bit at
    alpha/r = 2 (the defaults: a product by 2 is exact); at alpha/r = 16/3 in the last bits only (the rounding order of
    our one y.addmm_(h, B^T, alpha=s) and PEFT's three ops). Every mode and structure at keep=1 is the same layer."""
    from peft import LoraConfig, get_peft_model
    for r, alpha in ((16, 32), (3, 16)):
        torch.manual_seed(0)
        ours = LoRASPLinear(nn.Linear(64, 48), r, alpha, keep=1.0)
        ours.load_dense(ours.lora_A, torch.randn(48, r))
        model = nn.Sequential()
        model.add_module("proj", nn.Linear(64, 48))
        model.proj.load_state_dict(ours.base.state_dict())
        theirs = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=["proj"])).base_model.model.proj
        A, B = theirs.lora_A["default"].weight, theirs.lora_B["default"].weight
        with torch.no_grad():
            A.copy_(ours.lora_A), B.copy_(ours.lora_B)
        x, t = torch.randn(4, 9, 64), torch.randn(4, 9, 48)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = ours(x1), theirs(x2)
        F.mse_loss(y1, t).backward(), F.mse_loss(y2, t).backward()
        pairs = [(y1, y2), (ours.lora_A.grad, A.grad), (ours.lora_B.grad, B.grad), (x1.grad, x2.grad)]
        if alpha / r == 2:
            assert all(torch.equal(a, b) for a, b in pairs)
        else:
            for a, b in pairs:
                torch.testing.assert_close(a, b)
        for mode, structure in (("freeze", "element"), ("mask", "column")):   # keep=1: no entry is frozen
            other = LoRASPLinear(ours.base, r, alpha, keep=1.0, mode=mode, structure=structure)
            other.load_dense(ours.lora_A, ours.lora_B)
            assert torch.equal(other(x), y1.detach())


def test_odd_sizes_round_half_to_even_as_pick_says():
    """keep * numel not an integer: round(), Python's (half to even), as the docstring says: A (3, 7) trains 10 of 21,
    B (5, 3) 8 of 15; structure="column" round(0.5 * 7) = 4 whole columns, 12 entries. Forward and gradients still
    are the merged dense weight's."""
    torch.manual_seed(0)
    for structure, n_A in (("element", 10), ("column", 12)):
        layer = LoRASPLinear(nn.Linear(7, 5), r=3, alpha=8, structure=structure)
        layer.load_dense(torch.randn(3, 7), torch.randn(5, 3))
        assert (layer.A_train.numel(), layer.B_train.numel()) == (n_A, 8)
        x = torch.randn(4, 7, dtype=torch.float64)
        A = (layer.lora_A.detach().double() * layer.mask_A).requires_grad_()
        B = (layer.lora_B.detach().double() * layer.mask_B).requires_grad_()
        (x @ (layer.base.weight.double() + 8 / 3 * B @ A).T + layer.base.bias.double()).square().sum().backward()
        layer(x.float()).square().sum().backward()
        torch.testing.assert_close(layer.lora_A.grad.double(), A.grad * layer.mask_A, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(layer.lora_B.grad.double(), B.grad * layer.mask_B, rtol=1e-4, atol=1e-4)


def test_a_mask_unit_drawn_but_not_laid_out_is_refused_not_laid_as_columns(monkeypatch):
    """A student adds a structure "row" (A trains whole rows) as UNITS and DRAWN invite: DRAWN["rows"] counts r rows.
    pick laid every unit but "entries" as columns: on a square A (r = in) the layer drew whole columns without a word
    (elsewhere torch's "expanded size" error). Now the unit is refused by name until SPREAD says how rows lie."""
    monkeypatch.setitem(lorasp.UNITS, "row", dict(A="rows", B="entries"))
    monkeypatch.setitem(lorasp.DRAWN, "rows", lambda shape: shape[0])
    with pytest.raises(NotImplementedError, match=r"mask unit 'rows' is in DRAWN .*, not in SPREAD"):
        LoRASPLinear(nn.Linear(16, 16), r=16, structure="row")
    monkeypatch.setitem(lorasp.SPREAD, "rows", lambda mask, shape: mask[:, None].expand(shape).clone())
    layer = LoRASPLinear(nn.Linear(16, 16), r=16, structure="row")
    rows = layer.mask_A.any(1)
    assert (layer.mask_A.all(1) | ~rows).all() and int(rows.sum()) == 8    # half of the rows, each one whole


def test_an_edit_of_the_layers_update_reaches_the_layers_fused_py_runs(monkeypatch):
    """A student changes how LoRASPLinear adds its update (here: twice h, as if scaling it otherwise). fused.project,
    which runs Llama's q, k, v and gate, up with one A matmul, wrote the second half of forward out again: in a
    scratch copy, q_proj through it was 2.54 off its own edited forward, silently. Both now call the layer's
    add_update: the model's logits with the edit are those of every layer run on its own, and the edit shows."""
    import model as M
    torch.manual_seed(0)
    model, ids = M.build_model("llama-tiny"), torch.randint(0, 256, (2, 8))
    lorasp.apply_lorasp(model, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], r=4)
    for m in model.modules():
        if isinstance(m, LoRASPLinear):
            m.load_dense(m.lora_A, torch.randn(m.lora_B.shape))
    with torch.no_grad():
        before = model(ids)
        add_update = LoRASPLinear.add_update
        monkeypatch.setattr(LoRASPLinear, "add_update", lambda self, x2, h: add_update(self, x2, 2 * h))
        fused = model(ids)
        monkeypatch.setattr(M, "project", lambda x, *layers: [m(x) for m in layers])   # each layer on its own
        alone = model(ids)
    torch.testing.assert_close(fused, alone)
    assert (fused - before).abs().max() > 0.1


def test_the_layers_other_defaults_are_one_constant_each():
    """r=16, alpha=32, mode="mask", structure="element" were written in LoRASPLinear's signature and again in
    apply_lorasp's (which passes its own on): a student's r=8 in the layer's changed nothing apply_lorasp built, without
    a word (as keep's default did, before lorasp.KEEP). Both now take lorasp.RANK, ALPHA, MODE, STRUCTURE; help() reads
    as CONTRACT.md's signature."""
    for f in (LoRASPLinear, lorasp.apply_lorasp):
        params = inspect.signature(f).parameters
        for name, const in (("r", "RANK"), ("alpha", "ALPHA"), ("mode", "MODE"), ("structure", "STRUCTURE")):
            assert params[name].default is getattr(lorasp, const), (f, name)
        assert "r=16, alpha=32, keep=0.5, mode='mask', structure='element', seed=0" in str(inspect.signature(f))


def test_the_layers_recompute_tail_skips_are_the_ones_plan_py_counts(monkeypatch):
    """Which block linear a full replay skips is written twice: model.py's blocks call recompute.tail(layer, x), and
    plan.py's TAILS names them for the memory plan. A student who moves a tail mark (or adds a backbone) would leave the
    plan counting another layer, silently: here every layer tail() receives on each tiny backbone is one TAILS names,
    and every name in TAILS is some backbone's tail."""
    import model as M
    import plan
    seen, tail = [], M.tail
    monkeypatch.setattr(M, "tail", lambda layer, x: seen.append(layer) or tail(layer, x))
    found = set()
    for preset in ("llama-tiny", "gpt2-tiny", "t5-tiny", "roberta-tiny", "bert-tiny"):
        model, ids, seen[:] = M.build_model(preset), torch.randint(0, 100, (1, 6)), []
        with torch.no_grad():
            model(ids, ids) if preset.startswith("t5") else model(ids)
        names = {id(m): n for n, m in model.named_modules()}
        for layer in seen:
            assert names[id(layer)].endswith(plan.TAILS), (preset, names[id(layer)])
            found |= {t for t in plan.TAILS if names[id(layer)].endswith(t)}
    assert found == set(plan.TAILS)


# ----------------------------------------------------------------------------------------------------
# python quant.py

def bnb_nf4(W):
    """W through bitsandbytes' NF4 with double quantization: its codes and scales, read back here as level[code] *
    absmax[block] (its CPU dequantize_4bit (0.50.2) is wrong on a (64, 176) weight: 0.036 off, its codes right)."""
    import bitsandbytes.functional as BF
    codes, state = BF.quantize_4bit(W, blocksize=64, quant_type="nf4", compress_statistics=True)
    absmax = BF.dequantize_blockwise(state.absmax, state.state2) + state.offset               # (blocks,)
    code = torch.stack([codes.view(-1) >> 4, codes.view(-1) & 15], 1).view(-1).long()        # high nibble first
    levels = BF.get_4bit_type("nf4", device="cpu")[code][: W.numel()]
    return (levels.view(-1, 64) * absmax[:, None]).view(W.shape), codes, state


def test_nf4s_block_size_is_one_constant():
    """64 was written twice, as quantize_nf4's default (what load_pretrained's NF4 uses) and NF4Linear.from_linear's: a
    student's 128 in one left the other at 64 without a word. Both now take quant.BLOCK_SIZE; help() still reads 64."""
    assert quant.BLOCK_SIZE == 64 and quant.BLOCK_SIZE in quant.BLOCK_SIZES
    for f in (quant.quantize_nf4, quant.NF4Linear.from_linear):
        assert inspect.signature(f).parameters["block_size"].default is quant.BLOCK_SIZE
        assert "block_size=64," in str(inspect.signature(f))
    assert quant.NF4Linear.from_linear(nn.Linear(8, 4)).weight.block_size == quant.BLOCK_SIZE


def test_every_figure_the_quant_demo_prints_is_bitsandbytes(monkeypatch, capsys):
    """`python quant.py` against bitsandbytes: its NF4 table (rounded as printed), its storage of the same weight
    (packed codes, 8-bit scales, fp32 nested scales and offset: 4 + 8/64 + 32/(64*256) bits a weight, plus the offset),
    the errors of its own dequantize; the RMS weight computed, and no parameter of the layer with a gradient."""
    import bitsandbytes.functional as BF
    monkeypatch.setattr("timeit.repeat", lambda f, number, repeat: [0.0] * repeat)   # (the timings: not checked)
    monkeypatch.setattr(sys, "argv", ["quant.py"])
    monkeypatch.setattr("signal.signal", lambda *args: None)   # (its SIGPIPE rule is for a terminal, not pytest)
    runpy.run_path(f"{ROOT}/quant.py", run_name="__main__")
    out = capsys.readouterr().out
    assert f"NF4 levels: {[round(v, 4) for v in BF.get_4bit_type('nf4', device='cpu').tolist()]}" in out
    W = torch.randn(4096, 4096, generator=torch.manual_seed(0)) * 0.02
    W_nf4, codes, state = bnb_nf4(W)
    stored = codes.nbytes + state.absmax.nbytes + state.state2.absmax.nbytes + 4   # + the fp32 offset
    assert stored == W.numel() // 2 + W.numel() // 64 + 4 * W.numel() // (64 * 256) + 4
    bits = 8 * stored / W.numel()
    assert bits == pytest.approx(4 + 8 / 64 + 32 / (64 * 256), abs=1e-5) and f"{bits:.3f}" == "4.127"
    assert f"{stored / 2 ** 20:.2f} MiB = 4.127 bits/param, {16 / bits:.1f}x smaller than bf16" in out
    err = W_nf4 - W
    assert number(out, "max |error|") == pytest.approx(err.abs().max().item(), rel=5e-3)
    assert number(out, "RMS error") == pytest.approx(err.pow(2).mean().sqrt().item(), rel=5e-3)
    assert number(out, "(RMS weight") == pytest.approx(W.pow(2).mean().sqrt().item(), rel=5e-3)
    assert "input grad (4, 4096); parameters with a gradient: none" in out


@pytest.mark.parametrize("gap", [1e-3, 5e-4])
def test_a_table_of_levels_the_lookup_cannot_tell_apart_is_refused(gap):
    """A student's own 16 levels, three of them gap apart near 0.2: quant_torch's lookup by a float's top 16 bits holds
    one midpoint a bin, and at 5e-4 two fell in one (417 of 2,000,000 values got another code than torch.bucketize's,
    without a word). tables() now refuses such a table; at 1e-3 it builds and agrees with bucketize."""
    import quant_torch
    levels = torch.linspace(-1, 1, 16)
    levels[10], levels[11] = levels[9] + gap, levels[9] + 2 * gap
    levels = levels.sort().values
    mids = (levels[:-1] + levels[1:]) / 2
    make = lambda: quant_torch.tables(levels, mids, quant.DYNAMIC_CODE, torch.device("cpu"))  # noqa: E731
    if gap < 1e-3:
        with pytest.raises(ValueError, match=r"two of their midpoints fall among the floats that share 0\.2001"):
            make()
        return
    x = torch.cat([torch.rand(2_000_000, generator=torch.Generator().manual_seed(0)) * 2 - 1, mids])
    assert torch.equal(quant_torch.nearest_level(x, make()).long(), torch.bucketize(x, mids))


def test_a_nested_block_size_of_ones_own_is_the_one_a_refusal_expects():
    """A student's NESTED_BLOCK_SIZE = 128 refuses bitsandbytes' own checkpoints (their nested_blocksize is 256), as it
    must; the refusal said "nested_blocksize 256 ...; expected 256": its 256 was a literal, not the size asked for."""
    import bitsandbytes.functional as BF
    import quant_bnb
    codes, state = BF.quantize_4bit(torch.randn(300, 128), blocksize=64, quant_type="nf4", compress_statistics=True)
    sd = {f"weight.{k}": v for k, v in state.as_dict(packed=True).items()} | {"weight": codes}
    with pytest.raises(ValueError, match=r"nested_blocksize 256, 3 nested scales, 256-entry nested code; expected "
                                         r"128, 5, 256"):
        quant_bnb.read(sd, "weight", quant.NF4_LEVELS, quant.BLOCK_SIZES, 128)
    assert quant_bnb.read(sd, "weight", quant.NF4_LEVELS, quant.BLOCK_SIZES, 256)["nested_absmax"].numel() == 3


# ----------------------------------------------------------------------------------------------------
# python model.py

def test_every_figure_the_model_demo_prints_is_recomputed(capsys):
    """`python model.py`: the parameter count from llama-tiny's config by hand, the save/load round trip exact, the
    NF4 logits those of weights quantized and dequantized by bitsandbytes, checkpointing's gradients equal while it
    keeps less (so the 0.0 is not a comparison with itself), and the greedy continuation argmax by argmax over the
    whole sequence, no KV cache."""
    import model as M
    from recompute import saved_activation_bytes
    M.demo()
    out = capsys.readouterr().out
    c = M.get_config("llama-tiny")
    hd = c.n_embd // c.n_head
    block = c.n_embd * (2 * c.n_embd + 2 * c.n_kv_head * hd) + 3 * c.n_embd * c.n_ffn + 2 * c.n_embd  # attn, mlp, norms
    count = c.vocab_size * c.n_embd * (1 if c.tie_embeddings else 2) + c.n_layer * block + c.n_embd
    assert out.startswith(f"llama-tiny: {count:,} parameters")
    torch.manual_seed(0)
    model, ids = M.build_model("llama-tiny"), torch.randint(0, 256, (2, 16))
    with tempfile.TemporaryDirectory() as d:
        M.save_pretrained(model, d, shard_size=200_000)
        back = M.load_pretrained(d)
    assert number(out, "loaded back: max |logit diff|") == 0.0 == (back(ids) - model(ids)).abs().max()
    nf4 = M.build_model("llama-tiny")
    nf4.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, m in nf4.named_modules():
            if isinstance(m, nn.Linear) and name.startswith("model.layers."):   # the block linears, as fill quantizes
                m.weight.copy_(bnb_nf4(m.weight)[0])
    logits = model(ids)
    assert number(out, "with NF4 linears") == pytest.approx((nf4(ids) - logits).abs().max().item(), rel=0.01)
    assert number(out, "(logit std") == pytest.approx(logits.std().item(), abs=0.006)
    assert number(out, "vs none: full") == 0.0 and number(out, ", selective") == 0.0
    kept = {}
    for back.checkpointing in ("none", "full"):
        kept[back.checkpointing], _ = saved_activation_bytes(back.train(), ids)
    assert kept["full"] < kept["none"] / 2
    seq = ids[:1, :4]
    with torch.no_grad():
        for _ in range(12):
            seq = torch.cat([seq, back.eval()(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert f"greedy continuation of {ids[0, :4].tolist()}: {seq[0, 4:].tolist()}" in out


# ----------------------------------------------------------------------------------------------------
# python metrics.py

def test_every_figure_the_metrics_demo_prints_is_the_reference_or_the_textbooks(capsys):
    """`python metrics.py`: BLEU, chrF, chrF++ as sacreBLEU computes them, ROUGE-1/2/L as rouge-score (no stemmer,
    the mean of the pairs' F-measures); accuracy, F1, MCC from the confusion counts, Pearson by its definition and
    Spearman as Pearson's of the average ranks (ties share theirs)."""
    import metrics
    import sacrebleu
    from rouge_score import rouge_scorer
    metrics.demo()
    out = capsys.readouterr().out
    hyp = ["Pisica stă pe covor.", "Prețul a crescut cu 3,5%."]
    ref = ["Pisica stă pe preș.", "Prețul a crescut cu 3,5% în 2016."]
    want = {"BLEU": sacrebleu.corpus_bleu(hyp, [ref]).score, "chrF": sacrebleu.corpus_chrf(hyp, [ref]).score,
            "chrF++": sacrebleu.corpus_chrf(hyp, [ref], word_order=2).score}
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    for k in ("rouge1", "rouge2", "rougeL"):
        want[f"ROUGE-{k[5:]}"] = 100 * sum(scorer.score(r, h)[k].fmeasure for h, r in zip(hyp, ref)) / len(hyp)
    p, y, s, g = [1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 0, 1], [0.1, 2.0, 2.0, 3.5, 4.2], [0.0, 1.5, 2.5, 2.5, 5.0]
    tp, tn, fp, fn = (sum(a == i and b == j for a, b in zip(p, y)) for i, j in ((1, 1), (0, 0), (1, 0), (0, 1)))

    def pearson(u, v):
        du, dv = [a - sum(u) / len(u) for a in u], [b - sum(v) / len(v) for b in v]
        return sum(a * b for a, b in zip(du, dv)) / math.sqrt(sum(a * a for a in du) * sum(b * b for b in dv))

    def ranks(u):                                              # 1-based; tied values share their mean rank
        return [sum(1 for b in u if b < a) + (1 + sum(1 for b in u if b == a)) / 2 for a in u]
    want |= {"accuracy": (tp + tn) / len(p), "F1": 2 * tp / (2 * tp + fp + fn),
             "MCC": (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)),
             "Pearson": pearson(s, g), "Spearman": pearson(ranks(s), ranks(g))}
    for label, value in want.items():
        decimals = 4 if label in ("accuracy", "F1", "MCC", "Pearson", "Spearman") else 2
        assert re.search(rf"(^|  |: ){re.escape(label)} {value:.{decimals}f}(  |$)", out, re.M), (label, value, out)
