"""lorasp.py: LoRA-SP, LoRA that trains a fixed random part of A and B (Wu et al. 2024, arXiv 2403.08822).

    y = W x + (alpha/r) (B ⊙ S_B)(A ⊙ S_A) x          LoRA-SP Eq. 2 on top of LoRA's (Hu et al. 2021) update

      x ──┬──────────── W (frozen; nn.Linear or NF4Linear) ─────────────────┐
          └── A ⊙ S_A (r, in) ── h (r) ── B ⊙ S_B (out, r) ── × alpha/r ──(+)── y

- S_A, S_B hold exactly round(keep * numel) True entries (structure="column": S_A holds round(keep * in) whole
  columns), drawn once by a CPU torch.Generator seeded per layer (layer_seed: the global seed and the module's name
  through crc32): the same on any device, in any construction order, on every DDP rank. keep=1.0 is plain LoRA.
- The trainable entries are packed into the layer's only Parameters (A_train, B_train); frozen entries are buffers.
  This is the paper's "update selected parameters in A and B ... as indicated by S" (Sec. 3.4) made structural:
  gradients and optimizer state are exactly keep × LoRA's under any optimizer, and weight decay cannot move a frozen
  entry (it does move them in a dense LoRA whose gradients are masked by a hook: see the demo).
- mode="mask" is Eq. 2: frozen entries are 0 in forward; mode="freeze": they keep their init (A's Kaiming draw; B's 0s).
- Eq. 3's W - ΔW trains as our usual W + (alpha/r) ΔW, B -> -B mapping one onto the other (docs/paper.md: why, and
  the paper's other gaps); Eq. 2's (A⊙S)(B⊙S)^T is the transposed layout, ours is PEFT's: A (r, in), B (out, r).
- structure="element" (the paper's) saves NO activation memory: every input feature meets some trainable entry
  of A, so dL/dA = g_h^T x needs all of x, as in LoRA. structure="column" makes A's trainable entries whole input
  columns; backward then keeps x[..., cols] instead of x, about keep × LoRA's input activations. B keeps random
  entries: dL/dB = g_y^T h needs only the r-wide h whatever B's pattern, so structuring B would save nothing.
  Caveat: layers that read one input (q, k, v) each keep their own columns of it.
Left out: dropout on the LoRA path (PEFT's default lora_dropout is 0), bias training, conv and embedding layers.
Run `python lorasp.py` for the teaching demo: LoRA vs LoRA-SP gradients, optimizer state and saved activations.
"""
import argparse
import math
import signal
import zlib

import torch
import torch.nn as nn

from adapter import (DenseView, adaptable, all_or_nothing, check_settings, dense_pair, float_dtype, load_layers,
                     mergeable, save_layers)
from adapter import EXTRAS_FILE, adapter_base, matches, peft_target  # noqa: F401  (lorasp.matches etc., as before)
from quant import NF4Linear
from recompute import frozen_base, saved_activation_bytes

LINEAR_TYPES = (nn.Linear, NF4Linear)
KEEP = 0.5                                   # the default share of A's and B's entries that train: the paper's half
RANK, ALPHA, MODE, STRUCTURE = 16, 32, "mask", "element"   # the paper's r, Eq. 2, its entries; alpha 2r: ours
UNITS = {"element": dict(A="entries", B="entries"), "column": dict(A="columns", B="entries")}  # what S_A, S_B draw
DRAWN = {"entries": math.prod, "columns": lambda shape: shape[-1]}  # a mask's units: round(keep * that) of them train
SPREAD = {"entries": lambda m, shape: m.view(shape), "columns": lambda m, shape: m.expand(shape).clone()}  # on shape


# ----------------------------------------------------------------------------------------------------
# The layer: masks drawn once, trainable entries packed, y = W x + (alpha/r) B_eff A_eff x

def layer_seed(seed, name):
    """A per-layer seed from the global seed and the module's qualified name (crc32: stable, unlike hash())."""
    return zlib.crc32(f"{seed}:{name}".encode())


def pick(shape, keep, gen, unit="entries"):
    """Bool mask: round(keep * n) of its n units (DRAWN: entries, or whole columns) True, by a random permutation."""
    if unit not in SPREAD:                          # (it was laid as columns, without a word: a square A's rows too)
        raise NotImplementedError(f"mask unit {unit!r} is in DRAWN (how many to draw), not in SPREAD (how they lie)")
    mask = torch.zeros(n := DRAWN[unit](shape), dtype=torch.bool)
    mask[torch.randperm(n, generator=gen)[:round(keep * n)]] = True
    return SPREAD[unit](mask, shape)                           # columns: each one True whole


def unpack(mask, train, frozen=None):
    """Dense matrix of mask's shape: the packed trainable entries where mask is True, frozen ones (or 0) elsewhere."""
    if train.numel() == mask.numel():
        return train.view(mask.shape)                          # keep=1, plain LoRA: no copy
    out = torch.zeros(mask.shape, dtype=train.dtype, device=train.device)
    if frozen is not None:
        out.masked_scatter_(~mask, frozen)
    return out.masked_scatter_(mask, train)                    # in place, no copy; backward: dL/dout at mask, packed


class _LoRAInput(torch.autograd.Function):
    """x -> (x as (N, in), h = x A^T) for y = base(x) + scale h B^T. Backward keeps only x[..., cols] (structure=
    "column": A trains on those columns only) and adds g_h A into the base's dL/dx in place, not as a 2nd tensor."""

    @staticmethod
    def forward(ctx, x, A, cols, masked):                      # x: (..., in), A: (r, in), cols: (k,) or None
        x2 = x.reshape(-1, x.shape[-1])                        # (N, in), N tokens
        x_s = x2 if cols is None else x2.index_select(1, cols)  # (N, k), a copy: x itself need not stay alive
        ctx.save_for_backward(x_s, A, cols)
        ctx.shape = x.shape
        h = x_s @ A.index_select(1, cols).T if masked and cols is not None else x2 @ A.T  # (N, r); mask: A = 0
        if not ctx.needs_input_grad[0]:                        # off cols. A frozen input (the first block's): x2
            ctx.mark_non_differentiable(x2)                    # takes no gradient, so the base's dL/dx matmul is
        return x2, h                                           # skipped too

    @staticmethod
    def backward(ctx, gx, gh):                                 # gx: the base's dL/dx (N, in), gh: (N, r)
        x_s, A, cols = ctx.saved_tensors
        gh = gh.to(A.dtype)                                    # bf16 when autocast made h from an fp32 x
        gA = gh.T @ x_s                                        # (r, k)
        gA = gA if cols is None else A.new_zeros(A.shape).index_copy_(1, cols, gA)
        if not ctx.needs_input_grad[0]:
            return None, gA, None, None
        gx = gx.contiguous().addmm_(gh, A)                     # dL/dx += g_h A_eff, in place (a fresh tensor,
        return gx.view(ctx.shape), gA, None, None              # or zeros when the base has no dL/dx)


class LoRASPLinear(nn.Module):
    """y = base(x) + (alpha/r) x A_eff^T B_eff^T; A_eff = A ⊙ S_A in mask mode, A (frozen entries kept) in freeze
    mode; B likewise. Adapters are fp32 whatever the base's dtype (PEFT's default too) and cast in forward."""

    def __init__(self, base, r=RANK, alpha=ALPHA, keep=KEEP, mode=MODE, structure=STRUCTURE, seed=0):
        super().__init__()
        if not isinstance(base, LINEAR_TYPES):
            raise TypeError(f"LoRASPLinear wraps nn.Linear or NF4Linear, not {type(base).__name__}")
        check_settings(r, alpha, keep, mode, structure, seed, UNITS)   # (alpha 0: no update, no gradient)
        self.base = base.requires_grad_(False)
        self.r, self.alpha, self.scale, self.keep, self.mode, self.structure, self.seed = \
            r, alpha, alpha / r, keep, mode, structure, seed
        gen = torch.Generator().manual_seed(seed)              # on CPU: the same draws whatever the device
        A = nn.init.kaiming_uniform_(torch.empty(r, base.in_features), a=math.sqrt(5), generator=gen)  # PEFT's init,
        dev = base.weight.device                               # drawn first: keep can't change A
        for k, M in (("A", A), ("B", torch.zeros(base.out_features, r))):   # B starts at zero, as in LoRA
            mask = pick(M.shape, keep, gen, UNITS[structure][k])  # column: A's whole columns
            if not mask.any():
                raise ValueError(f"keep={keep} leaves {k} {tuple(M.shape)} without a trainable entry")
            self.register_buffer(f"mask_{k}", mask.to(dev))    # (r, in) / (out, r) bool
            setattr(self, f"{k}_train", nn.Parameter(M[mask].to(dev)))   # (mask.sum(),): the only Parameters
            self.register_buffer(f"{k}_frozen", M[~mask].to(dev) if mode == "freeze" else None)  # mask mode: 0
        self.register_buffer("cols", self.mask_A[0].nonzero()[:, 0] if UNITS[structure]["A"] == "columns" else None)

    def dense(self, k, view=False):
        """A_eff (r, in) / B_eff (out, r) for k "A" / "B", as forward uses it; view: as lora_A gives it (DenseView)."""
        mask, train = getattr(self, f"mask_{k}"), getattr(self, f"{k}_train")
        M = unpack(mask, train, getattr(self, f"{k}_frozen"))
        return DenseView.of(M, k, lambda: None if train.grad is None else unpack(mask, train.grad)) if view else M

    lora_A = property(lambda self: self.dense("A", True), DenseView.refuse("A"), doc="(r, in), as forward uses it")
    lora_B = property(lambda self: self.dense("B", True), DenseView.refuse("B"), doc="(out, r), as forward uses it")

    def forward(self, x):                                      # x: (..., in)
        # (fused.project runs this first line once for the layers that read one x, q, k, v, with their A's stacked)
        x2, h = _LoRAInput.apply(x, self.dense("A").to(x.dtype), self.cols, self.mode == "mask")   # (N, in), (N, r)
        return self.add_update(x2, h).view(*x.shape[:-1], self.base.out_features)

    def add_update(self, x2, h):
        """base(x2) + scale h B_eff^T, (N, out), for x2 (N, in) and h = x2 A_eff^T (N, r): forward's second half and
        fused.project's (Llama's q, k, v, gate, up), so that an edit here reaches every layer."""
        y = frozen_base(self.base, x2)                         # (N, out), a fresh tensor: add into it in place
        # y += scale h B^T in one kernel (PEFT's `result + lora_B(h) * scaling` makes three passes over y), in y's
        # dtype: under autocast an fp32 x gives a bf16 y (and h), and an in-place addmm is not autocast
        return y.addmm_(h.to(y.dtype), self.dense("B").to(y.dtype).T, alpha=self.scale)

    @torch.no_grad()
    def load_dense(self, A, B):
        """Set every entry from dense A (r, in) and B (out, r): the trainable ones, and the frozen ones if kept."""
        for k, M in zip("AB", dense_pair(A, B, self.mask_A.shape, self.mask_B.shape)):   # (shapes checked)
            mask, frozen = getattr(self, f"mask_{k}"), getattr(self, f"{k}_frozen")
            getattr(self, f"{k}_train").copy_(M.to(mask.device)[mask])
            if frozen is not None:
                frozen.copy_(M.to(mask.device)[~mask])

    def extra_repr(self):
        return f"r={self.r}, alpha={self.alpha}, keep={self.keep}, mode={self.mode}, structure={self.structure}"


# ----------------------------------------------------------------------------------------------------
# Whole models: wrap, count, summarize, merge, measure; save and load as PEFT adapters (adapter.py does the work)

def _swap(model, new):
    """model with each module of new ({qualified name: module}) put in that name's place."""
    for name, m in new.items():
        model.set_submodule(name, m)
    return model


def _layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRASPLinear)}


def apply_lorasp(model, targets, r=RANK, alpha=ALPHA, keep=KEEP, mode=MODE, structure=STRUCTURE, seed=0):
    """Wrap every nn.Linear / NF4Linear whose qualified name matches one of `targets` (or PEFT's "all-linear": every
    one but the output layer, lm_head); freeze everything else. Each layer's seed is layer_seed(seed, name)."""
    check_settings(r, alpha, keep, mode, structure, seed, UNITS)   # (seed: each layer's is crc32 of it and the name)
    hits = adaptable(model, targets, LoRASPLinear, LINEAR_TYPES)    # (none already adapted: nothing nested)
    new = all_or_nothing(model, lambda: {n: LoRASPLinear(model.get_submodule(n), r, alpha, keep, mode, structure,
                                                         layer_seed(seed, n)) for n in hits})
    return _swap(model.requires_grad_(False), new)


def count_trainable(model):
    """Entries that really train: LoRA-SP's packed Parameters (keep × LoRA's), plus anything else left trainable."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lorasp_summary(model):
    """A plain-text table: per adapted layer its shape, r, keep and trainable entries; totals vs the base model."""
    layers = _layers(model)
    adapter = {id(p) for m in layers.values() for p in (m.A_train, m.B_train)}
    base = sum(p.numel() for p in model.parameters() if id(p) not in adapter)
    base += sum(m.weight.shape.numel() for m in model.modules() if isinstance(m, NF4Linear))  # NF4: no Parameter
    w = max([len(n) for n in layers] + [6])
    lines = [f"{'module':<{w}}  {'out x in':>12}  {'r':>4}  {'keep':>5}  {'trainable':>12}"]
    for n, m in layers.items():
        shape = f"{m.base.out_features} x {m.base.in_features}"
        lines.append(f"{n:<{w}}  {shape:>12}  {m.r:>4}  {m.keep:>5.2f}  {m.A_train.numel() + m.B_train.numel():>12,}")
    t = count_trainable(model)
    lines.append(f"trainable {t:,} of {base:,} base parameters ({100 * t / max(base, 1):.4f}%) in {len(layers)} layers")
    return "\n".join(lines)


@torch.no_grad()
def merge_lorasp(model, dtype=None):
    """Fold (alpha/r) B_eff A_eff into each base weight: plain, frozen nn.Linear layers in dtype (default: the base's;
    an NF4 base is dequantized to its original dtype: 4 bits would lose most of a small update; export.py asks float32).
    Refused before any layer merges (mergeable): NaN or Inf in A or B, naming its layers; a meta model."""
    if isinstance(model, LoRASPLinear):
        return merge_lorasp(nn.ModuleDict({"layer": model}), dtype)["layer"]
    float_dtype(dtype, "merge_lorasp")
    for name, m in mergeable(_layers(model), "merge_lorasp").items():
        W = m.base.weight
        W, to = W.dequantize(W.dtype) if isinstance(m.base, NF4Linear) else W, dtype or W.dtype   # (out, in)
        merged = nn.Linear(m.base.in_features, m.base.out_features, bias=m.base.bias is not None, device="meta")
        merged.weight = nn.Parameter((W.float() + m.scale * m.lora_B.float() @ m.lora_A.float()).to(to), False)
        merged.bias = None if m.base.bias is None else nn.Parameter(m.base.bias.detach().clone(), False)
        _swap(model, {name: merged})
    return model


def save_adapter(model, directory, base_model_name_or_path=None, task_type="CAUSAL_LM", modules_to_save=(), base=None):
    """Write the model's adapter as a PEFT LoRA folder, replaced whole: each layer's A_eff and B_eff (PEFT reproduces
    our outputs in either mode), EXTRAS_FILE (load_adapter restores training exactly), modules_to_save (trained whole: a
    head) as PEFT stores them; base: what it trained on (tasks.save_weights'), kept in the extras for eval.py."""
    save_layers(model, directory, LoRASPLinear, LINEAR_TYPES, base_model_name_or_path, task_type, modules_to_save, base)


def load_adapter(model, directory, peft=False):
    """Wrap the adapter's modules of `model` (plain or already wrapped), load it, freeze all but the config's
    modules_to_save (loaded whole); returns the model. Without EXTRAS_FILE: an error (a LoRA-SP adapter would train on
    as plain LoRA), unless peft=True: a PEFT LoRA adapter, keep=1.0. A folder PEFT would read differently: an error."""
    new = load_layers(model, directory, peft, LoRASPLinear, LINEAR_TYPES)   # every file checked before any swap
    return _swap(model.requires_grad_(False), new)             # the adapted layers, then modules_to_save's copies


# ----------------------------------------------------------------------------------------------------
# The teaching demo: one layer, one batch

def demo():
    torch.manual_seed(0)
    n, r, alpha = 512, 16, 32
    base, x, target = nn.Linear(n, n), torch.randn(8, 256, n), torch.randn(8, 256, n)  # x: (B, T, in)
    B = 0.02 * torch.randn(n, r)           # as if trained a few steps: at init B = 0, and then dL/dA = 0

    def step(hook=lambda g: g, A=None, B=B, **kw):           # one AdamW step (torch's defaults): outputs,
        m = LoRASPLinear(base, r, alpha, seed=1, **kw)         # gradients, bytes, A's moves. seed=1: one A at any keep
        y0 = m(x).detach()                                     # at init: B = 0
        m.load_dense(m.lora_A if A is None else A, B)
        m.A_train.register_hook(hook)
        A0, opt = m.lora_A.detach().clone(), torch.optim.AdamW([m.A_train, m.B_train])
        act, y = saved_activation_bytes(m, x.clone().requires_grad_())
        nn.functional.mse_loss(y, target).backward()
        opt.step()
        return dict(y=y.detach(), dA=unpack(m.mask_A, m.A_train.grad), dB=unpack(m.mask_B, m.B_train.grad), m=m, y0=y0,
                    act=act, grad=m.A_train.grad.nbytes + m.B_train.grad.nbytes, moved=m.lora_A.detach() != A0, A0=A0,
                    state=sum(t.nbytes for s in opt.state.values() for t in s.values()), opt=opt.defaults)

    lora, sp = step(keep=1.0), step(mode="freeze")
    S_A, S_B = sp["m"].mask_A, sp["m"].mask_B              # every keep=KEEP element layer here draws these (seed=1)
    hooked = step(lambda g: g * S_A.flatten(), keep=1.0)   # the textbook way: dense LoRA, grad *= S
    mask, column, eff = step(mode="mask"), step(structure="column"), step(A=lora["A0"] * S_A, B=B * S_B, keep=1.0)
    diff, rel = (lambda a, b: (a - b).abs().max().item()), (lambda a, b: (a - b).norm() / a.norm())  # noqa: E731
    print(f"one {n}x{n} layer, r={r}, alpha={alpha}, x {tuple(x.shape)}: LoRA-SP (keep {KEEP}) trains "
          f"{int(S_A.sum()):,} of {S_A.numel():,} A entries and {int(S_B.sum()):,} of {S_B.numel():,} B entries\n"
          f"at init (B = 0) its output is LoRA's: max |y_lora - y_sp| = "
          f"{max(diff(lora['y0'], s['y0']) for s in (sp, mask, column))}; below, B is random\n")
    print("1. freeze mode: the same forward as LoRA, so the gradient is LoRA's times S, bit for bit")
    print(f"   max |dA_lora * S_A - dA_sp|  = {diff(lora['dA'] * S_A, sp['dA'])}")
    print(f"   max |dB_lora * S_B - dB_sp|  = {diff(lora['dB'] * S_B, sp['dB'])}")
    print(f"   max |dA_hook - dA_sp|        = {diff(hooked['dA'], sp['dA'])}   (dense LoRA, hook multiplies dA by S_A)")
    print("   an AdamW step (lr {lr:g}, weight decay {weight_decay:g}) moves frozen A entries ({:,} of them): hook "
          "{:,}, freeze mode {:,}, mask mode {:,}".format(int((~S_A).sum()), *(int((s["moved"] & ~S_A).sum()) for s in (
              hooked, sp, mask)), **lora["opt"]))                   # the hook's: by weight decay
    print("\n2. mask mode (Eq. 2): frozen entries are 0 in forward, so it is LoRA on A * S_A, B * S_B (eff) and its\n"
          f"   gradient is eff's times S: max |y_eff - y_sp| = {diff(eff['y'], mask['y'])}, max |dA_eff * S_A - dA_sp| "
          f"= {diff(eff['dA'] * S_A, mask['dA'])}, max |dB_eff * S_B - dB_sp| = {diff(eff['dB'] * S_B, mask['dB'])}\n"
          f"   LoRA on the whole A, B differs: max |y_lora - y_sp| = {diff(lora['y'], mask['y']):.4g} (|y| <= "
          f"{lora['y'].abs().max():.4g}); on S_A, ||dA_lora - dA_sp|| = {rel(S_A * lora['dA'], mask['dA']):.1%} of "
          "||dA_lora||")
    print("\n3. what each keeps (activations: the tensors autograd saves for backward, x needing a gradient)\n"
          "   method            trainable  grad bytes  AdamW bytes  activation bytes  / LoRA")
    for name, s in (("LoRA", lora), ("LoRA-SP element", mask), ("LoRA-SP column", column)):
        print(f"   {name:<17}{count_trainable(s['m']):>10,}{s['grad']:>12,}{s['state']:>13,}{s['act']:>18,}"
              f"{s['act'] / lora['act']:>8.3f}")
    print(f"   x itself is {x.nbytes:,} bytes. LoRA keeps x and h = x A^T; element all of x ({int(S_A.any(0).sum())} "
          f"of {n} columns of A train),\n   column x[..., cols] only; both keep h and A_eff, B_eff too.")


if __name__ == "__main__":  # no flags: a typed one (--rank 4) is refused, not ignored while r=16's figures print
    argparse.ArgumentParser(description="LoRA vs LoRA-SP on one layer: gradients, optimizer, activations").parse_args()
    if hasattr(signal, "SIGPIPE"):  # a reader that goes (| head -1) ends the demo as it ends cat (Windows has none)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    demo()
