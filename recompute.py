"""recompute.py: activation checkpointing by hand, per transformer block (model.py's `model.checkpointing`).

- "full" (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"): a block keeps only its input; backward
  runs it again, with grad, and differentiates the replay (`Recompute`, `run_block`).
- "selective" (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models"): the matmul
  outputs are kept and the cheap, large tensors are recomputed when backward needs them. The paper recomputes the
  attention core only (QK^T, softmax, dropout, the product with V); we apply its rule to norms and SwiGLU/GELU too.
  The blocks mark those ops with `cheap(fn, *inputs)`; under `selective` their outputs are saved as recipes
  (saved-tensor hooks), replayed once on first use.
- A `Recipe` replays with the first run's RNG and autocast state, so dropout draws the same mask and the gradients
  are those of no checkpointing. The trainable parameters a block uses are inputs of `Recompute`, so its output needs
  a gradient even when the block's input does not (a frozen base with LoRA inside), the case where reentrant
  torch.utils.checkpoint loses the gradients.
- A full replay skips what only its discarded output needs: the block's last projection (`tail(layer, x)`: Llama's
  down_proj, GPT-2's and T5's feed-forward output), whose value only flows, through additions, into the block's
  output. A LoRA-SP layer there gets zeros for its frozen base's part (`frozen_base`; dL/dx = g W needs no value), so
  the replay saves that matmul and, on an NF4 base, its dequantize: 7% of a `full` step's base-weight work.
- A full replay keeps what it computes from a frozen weight alone for that block's backward (`replay_slot`: on CPU, an
  NF4 weight's dequantized W, which dL/dx = g W reads again), in buffers reused block after block: a `full` step then
  dequantizes each weight twice, not three times (KEEP_DENSE; one block's weights more memory, which plan.py counts).
Also here: `saved_activation_bytes`, what autograd keeps for a module's backward (lorasp.py's demo measures with it).
Leaves out: offloading to host memory, per-op policies beyond `cheap`, checkpointing across several blocks.
Run `python model.py` (its demo compares the gradients of "none", "full" and "selective" on a tiny Llama);
tests/test_checkpointing.py checks them on Llama, GPT-2 and T5, with LoRA-SP and NF4 inside (tests/test_encoders.py
on RoBERTa/BERT, tests/test_t5.py on T5 again).
"""
import weakref

import torch
import torch.nn as nn


class Recipe:
    """fn(*inputs), replayable later with the RNG and autocast state of the first run (dropout draws the same mask)."""

    def __init__(self, fn, inputs):
        self.fn, self.inputs, self.out, dev = fn, inputs, None, inputs[0].device
        self.cuda = [dev] if dev.type == "cuda" else []
        self.rng = torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in self.cuda]
        self.autocast = dev.type, torch.get_autocast_dtype(dev.type), torch.is_autocast_enabled(dev.type)

    def run(self):
        """Recompute once, with grad: the same graph serves saved-tensor unpacks and Recompute.backward."""
        if self.out is None:
            with torch.random.fork_rng(devices=self.cuda), torch.enable_grad(), torch.autocast(
                    self.autocast[0], dtype=self.autocast[1], enabled=self.autocast[2]):
                torch.set_rng_state(self.rng[0])
                for d, state in zip(self.cuda, self.rng[1]):
                    torch.cuda.set_rng_state(state, d)
                self.leaves = [x.detach().requires_grad_(x.requires_grad) for x in self.inputs]
                self.out = self.fn(*self.leaves)
        return self.out


class Recompute(torch.autograd.Function):
    """Run a recipe without keeping its intermediates; backward replays it and differentiates the replay.
    The trainable parameters fn uses come in as extra inputs, so the output requires grad even when the block input
    does not (a frozen base with LoRA inside): the case where reentrant torch.utils.checkpoint loses the gradients."""

    @staticmethod
    def forward(ctx, recipe, *tensors):
        ctx.recipe, ctx.params = recipe, list(tensors[len(recipe.inputs):])
        ctx.save_for_backward(*recipe.inputs)  # all that stays alive (and what saved-tensor hooks see)
        with torch.no_grad():
            return recipe.fn(*recipe.inputs)

    @staticmethod
    def backward(ctx, grad):
        r = ctx.recipe
        r.inputs = ctx.saved_tensors  # (raises if an input was modified in place since forward)
        _slots.clear()                # the previous block's backward is done: its kept buffers are free again
        out, wrt = r.run(), [t for t in r.leaves + ctx.params if t.requires_grad]
        grads = iter(torch.autograd.grad(out, wrt, grad, allow_unused=True))
        result = [next(grads) if t.requires_grad else None for t in r.leaves + ctx.params]
        r.out = r.leaves = r.inputs = ctx.recipe = None  # outlives backward while the loss lives: hold nothing
        return None, *result


_replaying = False  # True while a full-checkpointing replay runs a block (run_block's fn, with grad)
_unread = False     # True inside tail() during such a replay
_slots = {}         # replay_slot's count per key since this block's replay began
KEEP_DENSE = True   # False: a replay keeps nothing for backward, which computes it again (one dequantize more a weight)


def replay_slot(key):
    """Inside a full replay: (key, n) for the n-th value of its kind (key: its shape) that this block's backward reads
    again and that depends on frozen weights only (quant_torch.replay_dense), to name a buffer kept for it. No slot is
    handed out twice before that backward is done (Recompute.backward counts the next block's from 0), and every block
    of a stack names the same ones. Outside a replay (or with KEEP_DENSE off): None, keep nothing."""
    if not (_replaying and KEEP_DENSE):
        return None
    n = _slots[key] = _slots.get(key, -1) + 1
    return key, n


def tail(layer, x):
    """layer(x), where the caller only adds the result (through dropout at most) into the block's output. In a full
    replay that output is never read, only differentiated: a LoRA-SP layer there calls its base through `frozen_base`,
    which skips the matmul, and a frozen linear the adapter leaves out goes through `frozen_base` itself."""
    global _unread
    if not _replaying:
        return layer(x)
    _unread = True
    try:
        if hasattr(layer, "out_features") and not any(p.requires_grad for p in layer.parameters()):  # nn.Linear or
            return frozen_base(layer, x.flatten(0, -2)).view(*x.shape[:-1], layer.out_features)  # NF4Linear: (.., out)
        return layer(x)
    finally:
        _unread = False


class _Unread(torch.autograd.Function):
    """Stands in for base(x2) where nothing reads the value: zeros of its shape and dtype forward, and backward's
    dL/dx = g W as the frozen base's own backward computes it (NF4Linear.grad_input, or g W for nn.Linear)."""

    @staticmethod
    def forward(ctx, x2, base, dtype):                         # x2: (N, in); dtype: what base(x2) would return
        ctx.base, ctx.dtype = base, x2.dtype
        return x2.new_zeros(x2.shape[0], base.out_features, dtype=dtype)

    @staticmethod
    def backward(ctx, g):                                      # g: (N, out)
        base = ctx.base
        gx = base.grad_input(g) if hasattr(base, "grad_input") else g @ base.weight.to(g.dtype)
        return gx.to(ctx.dtype), None, None


def frozen_base(base, x2):
    """base(x2) for a frozen linear base (an adapter's): inside a tail() of a full replay, where the value is never
    read, zeros stand in for it and its matmul (and an NF4 dequantize) is skipped; dL/dx is the same."""
    if not _unread:
        return base(x2)
    dev = x2.device.type
    return _Unread.apply(x2, base, torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x2.dtype)


def recompute(fn, *inputs, params=()):
    """fn(*inputs) whose intermediates are recomputed in backward; returns (recipe, output)."""
    recipe = Recipe(fn, inputs)
    return recipe, Recompute.apply(recipe, *inputs, *[p for p in params if p.requires_grad])


_selective = None  # the active `selective` context, if any


class selective(torch.autograd.graph.saved_tensors_hooks):
    """While active, outputs of `cheap` ops are saved for backward as recipes (recomputed on use), not as tensors."""

    def __init__(self):
        self.recipes = {}  # storage address of a cheap output -> (recipe, storage offset, weakref to the storage)
        super().__init__(self.pack, self.unpack)

    def __enter__(self):
        global _selective
        self.outer, _selective = _selective, self
        return super().__enter__()

    def __exit__(self, *exc):
        global _selective
        _selective, self.recipes = self.outer, {}  # self <-> self.pack is a cycle: don't let it hold activations
        return super().__exit__(*exc)

    def pack(self, t):  # consumers may save a view (a reshape) of a cheap output: remember how to rebuild it
        storage = t.untyped_storage()
        hit = self.recipes.get(storage.data_ptr()) if t.numel() else None
        if hit is None or hit[2]() is not storage:  # the address may have been freed and reused by another tensor
            return t
        return hit[0], t.shape, t.stride(), t.storage_offset() - hit[1]

    @staticmethod
    def unpack(packed):
        if isinstance(packed, torch.Tensor):
            return packed
        recipe, shape, stride, offset = packed
        y = recipe.run().detach()
        return y.as_strided(shape, stride, y.storage_offset() + offset)


def cheap(fn, *inputs):
    """fn(*inputs); under selective checkpointing the output is recomputed in backward from its (kept) inputs."""
    if _selective is None:
        return fn(*inputs)
    recipe, y = recompute(fn, *inputs, params=fn.parameters() if isinstance(fn, nn.Module) else ())
    _selective.recipes[y.untyped_storage().data_ptr()] = recipe, y.storage_offset(), weakref.ref(y.untyped_storage())
    return y


def block_mode(mode, i):
    """Block i's checkpointing: `mode`, or mode[i] when it is a list, one mode per block (a stack's, T5: each stack's):
    ["full"] * 5 + ["selective"] * 7 replays the first five blocks whole (Megatron's --recompute-num-layers), a
    memory-time trade between the two modes (train.py --full-blocks)."""
    return mode if isinstance(mode, str) else mode[i]


def run_block(mode, block, x, *args):
    """block(x, *args) under activation checkpointing `mode` (only while gradients are being recorded)."""
    if mode not in ("none", "full", "selective"):
        raise ValueError(f"checkpointing must be 'none', 'full' or 'selective', not {mode!r}")
    if mode == "none" or not torch.is_grad_enabled():
        return block(x, *args)
    if mode == "full":  # arguments that need gradients (a decoder's encoder output) are recomputation inputs too
        slots = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]

        def fn(x, *tensors):
            global _replaying
            a = list(args)
            for i, t in zip(slots, tensors):
                a[i] = t
            outer, _replaying = _replaying, torch.is_grad_enabled()  # with grad: the replay (forward runs without)
            try:
                return block(x, *a)
            finally:
                _replaying = outer
        return recompute(fn, x, *[args[i] for i in slots], params=block.parameters())[1]
    with selective():
        return block(x, *args)


def saved_activation_bytes(module, *inputs):
    """(bytes autograd keeps for backward while running module(*inputs), output), once per storage, but the module's
    parameters and buffers: a LoRA layer's x (for dL/dA; column: x[..., cols]) and h = x A^T (for dL/dB; its frozen base
    keeps nothing), weight-derived copies (A_eff, a bf16 B). What `selective` keeps its own inner hooks pack: unseen."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.untyped_storage()) or t, lambda t: t):
        out = module(*inputs)
    own = {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}
    return sum({s.data_ptr(): s.nbytes() for s in saved if s.data_ptr() not in own}.values()), out
