"""model.py: transformer backbones and how they load from checkpoints (no Hugging Face model classes).

- Backbones: LLaMA (RMSNorm, RoPE in HF's rotate_half layout, SwiGLU, grouped-query attention; Touvron et al. 2023;
  Mistral's, Qwen2's and Qwen3's checkpoints too (Qwen3: an RMSNorm on each head's q and k), up to their sliding
  window) and GPT-2 (learned positions, LayerNorm, tanh-GELU, tied head; Radford et al. 2019). Modules are named
  after the Hugging Face checkpoint keys (`model.layers.0.self_attn.q_proj`, `transformer.h.0.attn.c_attn`), so an
  HF state dict loads with no name map and LoRA targets are the names users know. Decoders: model(input_ids) -> logits.
  Encoders: RoBERTa and BERT (one post-LN implementation; Liu et al. 2019, Devlin et al. 2019), model(input_ids,
  attention_mask, token_type_ids) -> hidden states, with add_head(n) / classify() as HF's *ForSequenceClassification.
  T5 v1.0 and v1.1 / FLAN-T5 / mT5 (Raffel et al. 2020; relative position buckets, RMS norm, cross-attention): model(
  input_ids, decoder_input_ids, attention_mask) -> logits, decoded by beam_search (HF's generate conventions).
- `load_pretrained(path, quantize="nf4")`: HF layout (config.json + model.safetensors, shards + index, or
  pytorch_model*.bin), Meta's (params.json + consolidated.NN.pth: model-parallel shards merged, q/k rows permuted from
  Meta's interleaved RoPE to rotate_half, through one name table) or a GGUF Llama (llama.cpp's one file: F32/F16/BF16,
  Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 and the K-quants Q2_K-Q6_K dequantized to float32 (a bf16 load: bf16), q/k rows permuted
  alike). One routine for all: build the module tree on the `meta` device, stream tensors one at a time (safetensors by
  plain reads; .bin/.pth memory-mapped with their pages handed back), convert names per architecture, quantize each
  block linear to quant.NF4Linear as its weight arrives (QLoRA, Dettmers et al. 2023), check nothing is missing, left
  over or mis-shaped. Peak host memory: the NF4 model plus one tensor. `save_pretrained` writes HF's layout.
- The configs (one dataclass per architecture), their presets and config.json read as transformers reads it:
  configs.py. Generation (KV cache, greedy, temperature, top-p; T5's beam search; `python generate.py`): generate.py.
  The files (safetensors by hand, HF shards and .bin, Meta's .pth, atomic writes): checkpoint.py; GGUF: ggufread.py.
  Names that moved there (model.PRESETS, model.positions, model.generate, model.selective, ...) still import.
- Activation checkpointing per block: `model.checkpointing = "none" | "full" | "selective"`, or a list, one per block.
  The blocks mark with `cheap(...)` the norms, attention and activations that "selective" recomputes (Korthikanti et al.
  2022's rule for the attention core, applied to norms and activations too); its hooks and replayed RNG: recompute.py.

Leaves out: dynamic-NTK RoPE (linear, llama3 and yarn scaling are read), sliding-window attention (a Mistral or Qwen
runs sequences up to its window: plain causal attention there; longer ones are refused), fused kernels, tensor
parallelism, writing NF4 checkpoints. Tokenizers: tokenizer.py (`load_tokenizer` is re-exported here).

`python model.py`: a tiny random model. Sections (~900 lines): a model from its config; the shared layers (attention,
RMSNorm, RoPE, SwiGLU, dropout, the chunked LM loss); LLaMA; GPT-2; RoBERTa and BERT; T5; loading, saving; the demo.
"""
import math
import os
import tempfile
from dataclasses import asdict, replace  # noqa: F401  (model.replace: tests use it)
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from checkpoint import MetaInit, fill, hf_checkpoint, inside, is_meta, meta_checkpoint, read_json, write_checkpoint
from checkpoint import prequantized
from configs import ACT, CONFIGS, LlamaConfig, check_config, config_dtype, float_dtype, get_config, layer_counts
from configs import (PRESETS, EncoderConfig, GPT2Config, MT5Config, T5Config, check_window,  # noqa: F401
                     positions)  # (model.PRESETS, model.positions, ... as before the move: evalcli.py, tasks.py)
from data import bucket_length
from fused import project
from generate import beam_search, generate, main as generate_main, sample  # noqa: F401  (model.generate etc.: moved)
from ggufread import gguf_checkpoint, gguf_file
from quant_torch import kept_buffer
from recompute import (Recipe, Recompute, block_mode, cheap, recompute, run_block, selective,  # noqa: F401
                       tail)  # (likewise: model.selective, model.cheap, ... as before the move; tests use them)
from tokenizer import load_tokenizer  # noqa: F401  (contract: model.load_tokenizer)

# torch sends float cos, sin, exp, log, sqrt, ... to MKL's VML, which picks each function's kernel on its first call:
# a first call split over threads could leave one thread's half on a low-accuracy kernel (~1e-4 off; RoPE's first cos
# in ~1 of 8 fresh 2-thread processes here: pytorch/pytorch#188792). So each is called once first, on one element.
for _f in "acos asin atan cos erf erfc erfinv exp log log10 log2 sin sqrt tan tanh trunc".split():
    for _t in (torch.float32, torch.float64):
        getattr(torch, _f)(torch.full((1,), 0.5, dtype=_t))

# ----------------------------------------------------------------------------------------------------
# A model from its config (configs.py: the configs, their presets and config.json)

def build_model(config):
    """A randomly initialised model from a preset key or a config (under `with torch.device("meta"):` it is free)."""
    config = get_config(config) if isinstance(config, str) else config
    return MODELS[config.model_type](config)


def init_weights(module, std=0.02):
    """GPT-2 / LLaMA initialisation: N(0, 0.02) for linears and embeddings, zero biases (norms start at one)."""
    if isinstance(module, (nn.Linear, nn.Embedding)) and not module.weight.is_meta:  # meta: nothing to fill (and slow)
        nn.init.normal_(module.weight, 0.0, std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def add_head(model, name, make, num_labels=None):
    """model with a head `name`: make() drawn fresh (N(0, initializer_range), zero bias; fp32 whatever the backbone's
    dtype), unless the checkpoint brought one; a classifier's num_labels must then be the checkpoint's."""
    if name not in model._modules:
        std = getattr(model.config, "initializer_range", 0) or 0.02  # (0: transformers' 0.02)
        setattr(model, name, make().to(next(model.parameters()).device).apply(lambda m: init_weights(m, std)))
        model.config.num_labels = num_labels or model.config.num_labels
    if num_labels and model.config.num_labels != num_labels:
        raise ValueError(f"the checkpoint's head has {model.config.num_labels} labels, the task {num_labels}")
    return model


# ----------------------------------------------------------------------------------------------------
# Layers the backbones share: attention (and its CPU dropout path), RMSNorm, RoPE, SwiGLU, dropout; the LM loss

def check_positions(config, n):
    """Refuse n tokens past the learned positions (GPT-2's, BERT's, RoBERTa's: the embedding lookup would fail with an
    IndexError; on CUDA a device-side assert, which ends the process) or a sliding window (Mistral: not implemented)."""
    if (window := getattr(config, "sliding_window", None)) and n > window:
        raise ValueError(f"{n} tokens: past the model's sliding window of {window}, which lorasp does not implement "
                         f"(up to {window} it is plain causal attention)")
    if n > (room := positions(config) or n):
        raise ValueError(f"{n} tokens: past the {room} positions of this {config.model_type} "
                         f"({config.HF['n_positions']} {config.n_positions})")


def positions_and_mask(config, input_ids, attention_mask=None, position_ids=None, cache=None):
    """Positions (B, T) after the cache's past tokens (check_positions: within reach), counting attention_mask's 1s
    (B, S = past + T), and a bool mask (B, 1, T, S), (T, S) where none is padded, None for plain causal attention."""
    (B, T), dev, past = input_ids.shape, input_ids.device, cache[0]["k"].shape[2] if cache and cache[0] else 0
    check_positions(config, past + T)
    if position_ids is None:
        position_ids = (torch.arange(past, past + T, device=dev).expand(B, T) if attention_mask is None
                        else (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:])
    if attention_mask is None:  # causal (SDPA's own), or after a cache one mask for every row (MMLU: was 4.4 ms a call)
        return position_ids, None if past == 0 or T == 1 else torch.ones(T, past + T, dtype=torch.bool,
                                                                          device=dev).tril(past)
    mask = torch.ones(T, past + T, dtype=torch.bool, device=dev).tril(past) & attention_mask.bool()[:, None, None, :]
    return position_ids, mask | ~mask.any(-1, keepdim=True)  # a padding query that sees nothing sees all: no NaN


def attend(q, k, v, mask, kv=None, dropout=0.0, causal=True, scale=None):
    """softmax(q k^T / sqrt(hd) + mask) v over (B, nh, T, hd) heads (a bool mask: where allowed; `scale` replaces
    1/sqrt(hd)), back to (B, T, nh * hd); appends k, v to the cache kv. mask None: causal attention, or full
    attention if not `causal` (encoders)."""
    if kv is not None:
        if kv:
            k, v = torch.cat([kv["k"], k], 2), torch.cat([kv["v"], v], 2)  # (B, nkv, past + T, hd)
        kv["k"], kv["v"] = k, v
    if dropout > 0 and q.device.type == "cpu" and k.shape[1] == q.shape[1]:  # SDPA's CPU dropout path is memory-hungry
        if mask is None and causal and q.shape[2] > 1:
            mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril(k.shape[2] - q.shape[2])
        y = DropoutAttention.apply(q, k, v, mask, dropout, q.shape[-1] ** -0.5 if scale is None else scale)
    else:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale,
                                           enable_gqa=k.shape[1] != q.shape[1],
                                           is_causal=causal and mask is None and 1 < q.shape[2] == k.shape[2])
    return y.transpose(1, 2).flatten(2)


class DropoutAttention(torch.autograd.Function):
    """dropout(softmax(q k^T * scale + mask)) v that keeps q, k, v and a bool dropout mask for backward and recomputes
    the probabilities there, as FlashAttention does (Dao et al. 2022). On CPU, SDPA with dropout falls back to plain
    math that keeps the (B, nh, T, S) probabilities, a float dropout mask and the dropped probabilities."""

    @staticmethod
    def probs(q, k, mask, scale):                                          # -> (B, nh, T, S) fp32, in fresh memory
        # q k^T * scale as one kernel (beta=0: the empty first argument is ignored), over (B * nh) batched heads, in
        # fp32 as SDPA's CPU kernels compute them (and GPT-2's reorder_and_upcast_attn): bf16 logits of size 10 are
        # off by up to 0.03, a softmax weight by 3%
        q, k = q.float(), k.float()
        s = torch.baddbmm(q.new_empty(()), q.flatten(0, 1), k.flatten(0, 1).transpose(1, 2), beta=0, alpha=scale)
        s = s.view(*q.shape[:3], k.shape[2])                               # softmax in fp32
        if mask is not None:                                               # a bool mask (where allowed) or a bias
            s = s.masked_fill_(~mask, float("-inf")) if mask.dtype == torch.bool else s.add_(mask)
        return s.softmax(-1)

    @staticmethod
    def forward(ctx, q, k, v, mask, p, scale):                             # q (B, nh, T, hd), k, v (B, nh, S, hd)
        keep = torch.rand(*q.shape[:3], k.shape[2], device=q.device) >= p    # (B, nh, T, S) bool
        ctx.save_for_backward(q, k, v, mask, keep)
        ctx.p, ctx.scale = p, scale
        return (DropoutAttention.probs(q, k, mask, scale).mul_(keep).to(v.dtype) @ v).mul_(1 / (1 - p))

    @staticmethod
    def backward(ctx, g):                                                  # g (B, nh, T, hd)
        q, k, v, mask, keep = ctx.saved_tensors
        probs, kept = DropoutAttention.probs(q, k, mask, ctx.scale), 1 / (1 - ctx.p)
        g_v = (probs * keep).to(v.dtype).transpose(-1, -2) @ g * kept
        t = (g @ v.transpose(-1, -2)).float().mul_(keep).mul_(probs)      # dL/dprobs * probs (without 1/(1-p))
        g_s = t.addcmul_(probs, t.sum(-1, keepdim=True), value=-1)         # softmax's backward: p * (g - sum(g p))
        g_mask = None
        if ctx.needs_input_grad[3]:                                        # a float bias that trains (T5's positions)
            dims = [d for d in range(4) if mask.shape[d] == 1 < g_s.shape[d]]  # none: a full (B, nh, T, S) bias
            g_mask = ((g_s.sum(dims, keepdim=True) if dims else g_s) * kept).to(mask.dtype)  # sum([]) sums all
        g_s = g_s.mul_(ctx.scale * kept).to(q.dtype)
        return g_s @ k, g_s.transpose(-1, -2) @ q, g_v, g_mask, None, None


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x²) + eps) * weight, computed in fp32 (Zhang & Sennrich 2019)."""

    def __init__(self, dim, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        return _RMSNorm.apply(x, self.weight, self.eps)


class _RMSNorm(torch.autograd.Function):
    """RMSNorm's forward as HF writes it, and a backward of four passes over x where autograd's chain (pow, mean,
    rsqrt, two products) makes eight, each into fresh memory: the norm's gradients bit for bit, the same saved tensors.
    (In a block x's gradient now arrives as one sum, not two, beside the residual's: added in another order.)"""

    @staticmethod
    def forward(ctx, x, weight, eps):                          # x (..., C), weight (C,)
        h = x.float()
        rstd = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)  # (..., 1)
        y = (h * rstd).to(x.dtype)
        ctx.save_for_backward(h, rstd, weight, y if weight.requires_grad else None)  # y: for dL/dweight only
        ctx.dtype = x.dtype
        return weight * y

    @staticmethod
    def backward(ctx, g):
        h, rstd, weight, y = ctx.saved_tensors
        gw = None if y is None else (g * y).sum_to_size(weight.shape).to(weight.dtype)
        if not ctx.needs_input_grad[0]:
            return None, gw, None
        gy = (g * weight).to(ctx.dtype).to(h.dtype)            # dL/d(h rstd), rounded to y's dtype as autograd does
        # autograd's formulas in its order, so the same rounding: rsqrt' = -0.5 rstd^3, mean' = 1 / C, pow' = 2 h
        c = (gy * h).sum(-1, keepdim=True) * -0.5 * rstd.pow(3) / h.shape[-1]  # (..., 1): dL/dmean(h^2) / C
        return (h * (2 * c)).add_(gy.mul_(rstd)).to(ctx.dtype), gw, None


def rope_inv_freq(hd, theta, s=None, device=None):
    """RoPE's frequencies theta^(-2i/hd) (hd/2,) and the factor on cos and sin, rescaled as transformers' Llama does
    for s["rope_type"]: linear (Chen et al. 2023: positions / factor), llama3 (Llama 3.1: wavelengths past
    L/low_freq_factor / factor, a smooth blend down to L/high_freq_factor), yarn (Peng et al. 2023: Eq. 18-21)."""
    kind, base = (s or {}).get("rope_type", "default"), theta ** (torch.arange(0, hd, 2, device=device).float() / hd)
    inv = 1.0 / base
    if kind == "linear":
        return inv / s["factor"], 1.0
    if kind == "llama3":
        L, lo, hi, factor = (s[k] for k in ("original_max_position_embeddings", "low_freq_factor", "high_freq_factor",
                                            "factor"))
        wavelen = 2 * math.pi / inv
        smooth = (L / wavelen - lo) / (hi - lo)  # 0 at wavelength L/lo, 1 at L/hi
        blend = (1 - smooth) * inv / factor + smooth * inv
        return torch.where(wavelen > L / lo, inv / factor, torch.where(wavelen < L / hi, inv, blend)), 1.0
    if kind == "yarn":
        factor, L = s["factor"], s["original_max_position_embeddings"]
        mscale = lambda m: 1.0 if factor <= 1 else 0.1 * m * math.log(factor) + 1.0  # noqa: E731  (Eq. 21)
        att = s.get("attention_factor") or (mscale(s["mscale"]) / mscale(s["mscale_all_dim"])
                                             if s.get("mscale") and s.get("mscale_all_dim") else mscale(1))
        dim = lambda turns: hd * math.log(L / (turns * 2 * math.pi)) / (2 * math.log(theta))  # noqa: E731 (turns in L)
        lo, hi = dim(s.get("beta_fast") or 32), dim(s.get("beta_slow") or 1)
        lo, hi = (math.floor(lo), math.ceil(hi)) if s.get("truncate", True) else (lo, hi)
        lo, hi = max(lo, 0), min(hi, hd - 1)
        keep = 1 - ((torch.arange(hd // 2, device=device).float() - lo) / (hi - lo or 0.001)).clamp(0, 1)
        return 1.0 / (factor * base) * (1 - keep) + inv * keep, att  # fast dimensions keep theirs, slow ones / factor
    return inv, 1.0


def rope_cos_sin(positions, head_dim, theta, scaling=None):
    """cos, sin (B, T, hd) in HF's rotate_half layout: dimension i pairs with i + hd/2, frequency theta^(-2i/hd)
    (rescaled by rope_inv_freq)."""
    inv_freq, att = rope_inv_freq(head_dim, theta, scaling, positions.device)
    angles = positions[..., None].float() * inv_freq  # (B, T, hd/2)
    angles = torch.cat([angles, angles], -1)  # (B, T, hd)
    cos, sin = angles.cos(), angles.sin()
    return (cos, sin) if att == 1.0 else (cos * att, sin * att)  # (yarn's attention factor; others 1.0)


class _Rope(torch.autograd.Function):
    """apply_rope(x, cos, sin): each pair (x_i, x_{i+hd/2}) rotated by its angle (RoFormer Eq. 34, half-split layout),
    x cos + rotate_half(x) sin, rotate_half(x) = (-x2, x1), with each half's product added in place: no rotate_half
    copy (neg, cat) forward, and backward one product, not autograd's neg, cat and split of the gradient. The same
    values both ways, bit for bit."""

    @staticmethod
    def forward(ctx, x, cos, sin):                             # x (B, nh, T, hd), cos, sin (B, 1, T, hd)
        ctx.save_for_backward(cos, sin)
        ctx.dtype, h = x.dtype, x.shape[-1] // 2
        y = x * cos
        y[..., :h] -= x[..., h:] * sin[..., :h]                # y1 = x1 cos1 - x2 sin1
        y[..., h:] += x[..., :h] * sin[..., h:]                # y2 = x2 cos2 + x1 sin2
        return y

    @staticmethod
    def backward(ctx, g):                                      # the transposed rotation: g cos + (g2 sin2, -g1 sin1)
        cos, sin = ctx.saved_tensors
        h = g.shape[-1] // 2
        gx, gs = (g * cos).to(ctx.dtype), (g * sin).to(ctx.dtype)  # each rounded to x's dtype, as autograd does
        gx[..., :h] += gs[..., h:]
        gx[..., h:] -= gs[..., :h]
        return gx, None, None


apply_rope = _Rope.apply


class SwiGLU(torch.autograd.Function):
    """silu(gate) * up (Shazeer 2020) keeping only gate and up for backward (autograd would keep silu(gate) too: one
    (B, T, n_ffn) tensor a layer), recomputed in backward. No double backward."""

    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return SwiGLU.times(F.silu(gate), up)                  # in place: one fresh (B, T, n_ffn) tensor, not two

    @staticmethod
    def backward(ctx, g):
        gate, up = ctx.saved_tensors
        t = g * up                                             # silu_backward: one fused pass, written over g * up
        return torch.ops.aten.silu_backward.grad_input(t, gate, grad_input=t), SwiGLU.times(F.silu(gate), g)

    @staticmethod
    def times(a, b):
        """a * b, into a where that is its dtype (not where b's is wider: a bf16 gate, an fp32 up)."""
        return a.mul_(b) if torch.result_type(a, b) == a.dtype else a * b


swiglu = SwiGLU.apply


def dropout(x, p):
    """Inverted dropout that keeps a bool mask for backward (on CPU F.dropout keeps a float one and draws 2x slower)."""
    return x / (1 - p) * (torch.rand(x.shape, device=x.device) >= p) if p > 0 else x


LOSS_CHUNK = 1 << 24  # logits computed at a time by LinearCrossEntropy: 64 MiB in fp32


def logits_buffer(rows, vocab, dtype, device):
    """(rows, vocab) for a chunk of logits: on CPU in quant_torch.kept_buffer (a fresh 64 MiB chunk's pages faulted in:
    0.05-0.1 s of system time a 134M fp32 step at 4 x 256, 1 thread); CUDA's allocator reuses its blocks already."""
    if device.type != "cpu":
        return torch.empty(rows, vocab, dtype=dtype, device=device)
    return kept_buffer("logits", rows * vocab, dtype).view(rows, vocab)


class LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of logits h W^T, a chunk of rows at a time: the (N, vocab) fp32 logits, their softmax and
    gradient never exist whole (at Llama-2's 32000 words, 4 x 256 tokens they are 131 MB each). The gradient is
    taken in forward, while a chunk's logits exist: dL/dlogits = softmax - onehot, then dL/dh = g W, dL/dW = g^T h."""

    @staticmethod
    def forward(ctx, h, W, targets):                   # h (N, C), W (vocab, C), targets (N,), -100: not scored
        dt = torch.promote_types(h.dtype, torch.float32)  # softmax in fp32 at least (bf16 logits round badly)
        loss, rows = h.new_zeros((), dtype=dt), max(1, LOSS_CHUNK // W.shape[0])
        gh = torch.empty_like(h) if h.requires_grad else None
        dev = h.device.type  # under autocast W once in its dtype (fp32 masters: else autocast casts it every chunk;
        cast = torch.is_autocast_enabled(dev) and h.dtype != torch.float64  # float64 it leaves alone)
        gW, Wh = torch.zeros_like(W) if W.requires_grad else None, W.to(
            torch.get_autocast_dtype(dev) if cast else h.dtype)  # no copy if dtypes agree
        for i in range(0, len(h), rows):
            t, x = targets[i:i + rows], h[i:i + rows]
            logits = logits_buffer(len(x), len(Wh), dt, h.device)  # (rows, vocab), overwritten chunk by chunk
            if x.dtype == Wh.dtype == dt:
                torch.mm(x, Wh.T, out=logits)
            else:
                logits.copy_(x @ Wh.T)                  # bf16 under autocast, in fp32 from here
            ok, top = t != -100, logits.amax(-1, keepdim=True)
            picked = logits.gather(1, t.clamp(min=0)[:, None])
            e = logits.sub_(top).exp_()                 # in place: few passes over the chunk, no new buffers
            total = e.sum(-1, keepdim=True)
            loss += (top + total.log() - picked)[ok].sum()  # log sum exp - logit of the target
            g = e.mul_(ok[:, None] / total)             # softmax, 0 on unscored rows
            g[ok, t[ok]] -= 1
            g = g.to(x.dtype)
            if gh is not None:
                gh[i:i + rows] = g @ Wh
            if gW is not None:
                gW += g.T @ x                           # (in place: a bf16 product adds into fp32, no copy)
        ctx.save_for_backward(gh, gW)
        return loss

    @staticmethod
    def backward(ctx, grad):
        gh, gW = ctx.saved_tensors
        return None if gh is None else gh * grad, None if gW is None else gW * grad, None


def lm_loss(h, head, labels):
    """Mean next-token cross-entropy, Hugging Face's `labels` convention: position t is scored on labels[:, t + 1],
    -100 is not scored. h (B, T, C): final hidden states; a plain nn.Linear head goes through LinearCrossEntropy."""
    targets = F.pad(labels[:, 1:], (0, 1), value=-100).flatten()  # (B * T,)
    if type(head) is nn.Linear and head.bias is None:
        h, W = (h, head.weight) if torch.is_grad_enabled() else (h.detach(), head.weight.detach())  # no grads in eval
        scored = targets != -100  # only these rows meet the head: an instruction's prompt (most rows) is not scored
        rows = scored.clone()
        if h.device.type == "cpu" and torch.is_autocast_enabled("cpu"):  # oneDNN keeps memory per bf16 matmul shape:
            n = int(scored.sum())  # few row counts (data.bucket_length's), unscored rows (0 loss, 0 gradient) the rest
            rows[(~scored).nonzero()[:bucket_length(n, len(rows)) - n]] = True
        total = LinearCrossEntropy.apply(h.flatten(0, 1)[rows], W, targets[rows])
    else:
        total = F.cross_entropy(head(h).flatten(0, 1).float(), targets, reduction="sum")
    return total / (targets != -100).sum().clamp(min=1)  # no scored token: 0, not 0/0


# ----------------------------------------------------------------------------------------------------
# LLaMA (Touvron et al. 2023): pre-norm RMSNorm, RoPE, SwiGLU, grouped-query attention

class LlamaBlock(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x)). `cheap` marks what selective checkpointing recomputes."""

    def __init__(self, c):
        super().__init__()
        C, hd, Linear = c.n_embd, c.hd, nn.Linear
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(C, c.norm_eps), RMSNorm(C, c.norm_eps)
        qkv = c.bias or c.qkv_bias  # attention_bias: all four have one; Qwen2: q, k and v only
        self.self_attn = nn.ModuleDict(dict(  # ModuleDicts: the HF names (self_attn.q_proj), with no code of their own
            q_proj=Linear(C, c.n_head * hd, qkv), k_proj=Linear(C, c.n_kv_head * hd, qkv),
            v_proj=Linear(C, c.n_kv_head * hd, qkv), o_proj=Linear(c.n_head * hd, C, c.bias)))
        if c.qk_norm:  # Qwen3: one RMSNorm over head_dim, shared by every q head (and k head)
            self.self_attn.update(dict(q_norm=RMSNorm(hd, c.norm_eps), k_norm=RMSNorm(hd, c.norm_eps)))
        self.mlp = nn.ModuleDict(dict(gate_proj=Linear(C, c.n_ffn, False), up_proj=Linear(C, c.n_ffn, False),
                                      down_proj=Linear(c.n_ffn, C, False)))
        self.hd = hd

    def forward(self, x, cos, sin, mask, kv=None):
        (B, T, _), a, m = x.shape, self.self_attn, self.mlp
        h = cheap(self.input_layernorm, x)
        # q (B, nh, T, hd); k, v (B, nkv, T, hd)
        q, k, v = (y.view(B, T, -1, self.hd).transpose(1, 2) for y in project(h, a.q_proj, a.k_proj, a.v_proj))
        if "q_norm" in a:
            q, k = cheap(a.q_norm, q), cheap(a.k_norm, k)  # (Qwen3: before RoPE)
        x = x + a.o_proj(cheap(lambda q, k, v: attend(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, mask, kv),
                               q, k, v))
        h = cheap(self.post_attention_layernorm, x)
        return x + tail(m.down_proj, cheap(swiglu, *project(h, m.gate_proj, m.up_proj)))  # (fused.py: one A matmul)


class Llama(nn.Module):
    def __init__(self, config):
        super().__init__()
        c, self.config, self.checkpointing = config, config, "none"
        self.model = nn.ModuleDict(dict(embed_tokens=nn.Embedding(c.vocab_size, c.n_embd, c.padding_idx),
                                        layers=nn.ModuleList(LlamaBlock(c) for _ in range(c.n_layer)),
                                        norm=RMSNorm(c.n_embd, c.norm_eps)))
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.apply(init_weights)

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, labels=None, last_only=False):
        """input_ids (B, T) -> logits (B, T, vocab); with labels, the mean next-token loss (lm_loss) instead.
        cache: one dict per layer, filled during generation. last_only: the last position's logits (B, 1, vocab),
        all that generation and MMLU read (50 prompts of 60 tokens x 49k words: 590 MB of fp32 logits else)."""
        pos, mask = positions_and_mask(self.config, input_ids, attention_mask, position_ids, cache)
        x = self.model.embed_tokens(input_ids)  # (B, T, C)
        cos, sin = rope_cos_sin(pos, self.config.hd, self.config.rope_theta, self.config.rope_scaling)
        cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)  # (B, 1, T, hd): the same for every head
        for i, block in enumerate(self.model.layers):
            x = run_block(block_mode(self.checkpointing, i), block, x, cos, sin, mask, cache[i] if cache else None)
        x = self.model.norm(x[:, -1:] if last_only else x)
        return self.lm_head(x) if labels is None else lm_loss(x, self.lm_head, labels)

    @staticmethod
    def hf_tensor(name, t):
        """HF key -> ours (the same; a bare LlamaModel's or Qwen3Model's, as embedding models ship, under model., as
        transformers' *ForCausalLM loads it); old conversions also stored RoPE's inv_freq, which we compute instead."""
        if name.endswith("rotary_emb.inv_freq"):
            return None
        return ("model." + name if name.startswith(("embed_tokens.", "layers.", "norm.")) else name), t


# ----------------------------------------------------------------------------------------------------
# GPT-2 (Radford et al. 2019): learned positions, pre-norm LayerNorm, tanh-GELU, tied head, a classifier head

class GPT2Block(nn.Module):
    def __init__(self, c, i=0):
        super().__init__()
        C, F, self.n_head, self.p = c.n_embd, c.n_inner or 4 * c.n_embd, c.n_head, c.dropout
        self.act = ACT[c.activation_function]
        self.scale = ((C // c.n_head) ** -0.5 if c.scale_attn_weights else 1.0) / (  # on the attention logits
            i + 1 if c.scale_attn_by_inverse_layer_idx else 1)
        self.ln_1, self.ln_2 = nn.LayerNorm(C, eps=c.norm_eps), nn.LayerNorm(C, eps=c.norm_eps)
        self.attn = nn.ModuleDict(dict(c_attn=nn.Linear(C, 3 * C), c_proj=nn.Linear(C, C)))
        self.mlp = nn.ModuleDict(dict(c_fc=nn.Linear(C, F), c_proj=nn.Linear(F, C)))

    def forward(self, x, mask, kv=None):
        (B, T, C), a, m, p = x.shape, self.attn, self.mlp, self.p if self.training else 0.0

        def core(qkv):  # (B, T, 3C) -> (B, T, C)
            q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in qkv.split(C, 2))  # (B, nh, T, hd)
            return attend(q, k, v, mask, kv, p, scale=self.scale)
        x = x + dropout(a.c_proj(cheap(core, a.c_attn(cheap(self.ln_1, x)))), p)
        return x + dropout(tail(m.c_proj, cheap(self.act, m.c_fc(cheap(self.ln_2, x)))), p)


class GPT2(nn.Module):
    head: ClassVar[tuple] = ("score",)  # a classifier's head: trains whole beside the adapter, saved with it

    def __init__(self, config):
        super().__init__()
        c, self.config, self.checkpointing = config, config, "none"
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c.vocab_size, c.n_embd), wpe=nn.Embedding(c.n_positions, c.n_embd),
            h=nn.ModuleList(GPT2Block(c, i) for i in range(c.n_layer)), ln_f=nn.LayerNorm(c.n_embd, eps=c.norm_eps)))
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(init_weights)
        for name, p in self.named_parameters():  # residual projections scaled by 1/sqrt(2 n_layer) (GPT-2 paper)
            if name.endswith("c_proj.weight") and not p.is_meta:
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c.n_layer))
        if c.num_labels:
            self.add_head(c.num_labels)

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, labels=None, hidden=False,
                last_only=False):
        """input_ids (B, T) -> logits (B, T, vocab); with labels, the mean next-token loss (lm_loss) instead;
        hidden: the final hidden states (B, T, C)."""
        pos, mask = positions_and_mask(self.config, input_ids, attention_mask, position_ids, cache)
        x = self.transformer.wte(input_ids) + self.transformer.wpe(pos)  # (B, T, C)
        x = dropout(x, self.config.dropout if self.training else 0.0)
        for i, block in enumerate(self.transformer.h):
            x = run_block(block_mode(self.checkpointing, i), block, x, mask, cache[i] if cache else None)
        x = self.transformer.ln_f(x[:, -1:] if last_only else x)  # (last_only: as Llama's)
        return x if hidden else self.lm_head(x) if labels is None else lm_loss(x, self.lm_head, labels)

    def add_head(self, num_labels):
        """HF's GPT2ForSequenceClassification head, unless the checkpoint brought one: `score`, C -> num_labels, no
        bias (N(0, initializer_range); fp32)."""
        return add_head(self, "score", lambda: nn.Linear(self.config.n_embd, num_labels, bias=False), num_labels)

    def classify(self, input_ids, attention_mask=None, token_type_ids=None):
        """(B, T) -> logits (B, num_labels) from the last real token (attention_mask 1; a causal model's only token
        that has read the whole text). HF picks the last token that is not pad_token_id instead: the same on
        padded batches unless the text itself ends in the pad token (GPT-2 has none; <|endoftext|> is often used).
        token_type_ids: ignored (GPT-2 has none)."""
        x = self(input_ids, attention_mask, hidden=True)  # (B, T, C)
        real = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        last = (real * torch.arange(x.shape[1], device=x.device)).argmax(-1)  # (B,)
        return self.score(x[torch.arange(len(x), device=x.device), last].to(self.score.weight.dtype))

    @staticmethod
    def hf_tensor(name, t):
        """HF key -> ours. HF's Conv1D stores (in, out), nn.Linear (out, in): transposed (so also ours -> HF)."""
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            return None  # causal-mask buffers of older HF files
        if not name.startswith(("transformer.", "lm_head.", "score.")):
            name = "transformer." + name  # GPT2Model files (the original `gpt2` repo) lack the prefix
        conv1d = name.endswith(("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"))
        return name, (t.t() if conv1d else t)


# ----------------------------------------------------------------------------------------------------
# RoBERTa and BERT (Liu et al. 2019, Devlin et al. 2019): one post-LN encoder, classifier and span heads

class EncoderBlock(nn.Module):
    """Post-LN, as BERT: x = LN(x + attn(x)), then x = LN(x + W2 act(W1 x)) (act: GELU); dropout on both branches."""

    def __init__(self, c):
        super().__init__()
        C, L, LN, self.n_head, self.p = c.n_embd, nn.Linear, nn.LayerNorm, c.n_head, c.dropout
        self.act = ACT[c.hidden_act]
        self.attention = nn.ModuleDict(dict(self=nn.ModuleDict(dict(query=L(C, C), key=L(C, C), value=L(C, C))),
                                            output=nn.ModuleDict(dict(dense=L(C, C), LayerNorm=LN(C, eps=c.norm_eps)))))
        self.intermediate = nn.ModuleDict(dict(dense=L(C, c.n_ffn)))
        self.output = nn.ModuleDict(dict(dense=L(c.n_ffn, C), LayerNorm=LN(C, eps=c.norm_eps)))

    def forward(self, x, mask, first=False):
        """first: position 0's output only (B, 1, C), what a classifier reads: queries, MLP and norms for one token."""
        s, o, p = self.attention["self"], self.attention.output, self.p if self.training else 0.0
        xq = x[:, :1] if first else x  # (B, Tq, C)

        def core(q, k, v):  # (B, Tq, C), (B, T, C), (B, T, C) -> (B, Tq, C)
            q, k, v = (t.unflatten(-1, (self.n_head, -1)).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hd)
            return attend(q, k, v, mask, dropout=p, causal=False)
        x = cheap(o.LayerNorm, xq + dropout(o.dense(cheap(core, s.query(xq), s.key(x), s.value(x))), p))
        h = cheap(self.act, self.intermediate.dense(x))  # erf GELU as released
        return cheap(self.output.LayerNorm, x + dropout(self.output.dense(h), p))


class Encoder(nn.Module):
    """RoBERTa / BERT: model(input_ids, attention_mask, token_type_ids) -> hidden states (B, T, C); add_head() and
    classify() are HF's *ForSequenceClassification. Modules sit under `roberta.` / `bert.`, as in HF's files."""
    prefix: ClassVar[str]
    head: ClassVar[tuple]  # what trains fully beside the adapter and is saved with it (PEFT's modules_to_save)

    def __init__(self, config):
        super().__init__()
        c, self.config, self.checkpointing, E = config, config, "none", nn.Embedding
        body = dict(embeddings=nn.ModuleDict(dict(  # padding_idx: the pad row gets no gradient, as in HF
            word_embeddings=E(c.vocab_size, c.n_embd, c.pad_id), token_type_embeddings=E(c.n_type, c.n_embd),
            position_embeddings=E(c.n_positions, c.n_embd, c.pad_id if self.prefix == "roberta" else None),
            LayerNorm=nn.LayerNorm(c.n_embd, eps=c.norm_eps))),
            encoder=nn.ModuleDict(dict(layer=nn.ModuleList(EncoderBlock(c) for _ in range(c.n_layer)))))
        if self.prefix == "bert" and not c.qa:  # HF's BertForQuestionAnswering has none
            body["pooler"] = nn.ModuleDict(dict(dense=nn.Linear(c.n_embd, c.n_embd)))
        setattr(self, self.prefix, nn.ModuleDict(body))
        self.apply(init_weights)
        if c.num_labels:
            self.add_head(c.num_labels)
        if c.qa:
            self.add_qa_head()

    def initialize(self, module):
        """A module drawn fresh as transformers' _init_weights draws it: linears N(0, initializer_range), zero bias."""
        module.apply(lambda m: init_weights(m, self.config.initializer_range or 0.02))  # (0: transformers' 0.02)
        return module

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, first_only=False):
        """input_ids (B, T) -> hidden states (B, T, C) (first_only: (B, 1, C), the last block computes position 0's
        output only: about 1/n_layer less work for a classifier). attention_mask (B, T): 1 = real token, 0 = padding."""
        c, body, real = self.config, getattr(self, self.prefix), (input_ids != self.config.pad_id).long()
        check_positions(c, input_ids.shape[1])
        # RoBERTa's positions count real tokens from pad_id + 1 (HF's create_position_ids_from_input_ids)
        pos = real.cumsum(1) * real + c.pad_id if self.prefix == "roberta" else torch.arange(input_ids.shape[1],
                                                                                            device=input_ids.device)
        e, types = body.embeddings, torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        x = e.LayerNorm(e.word_embeddings(input_ids) + e.position_embeddings(pos) + e.token_type_embeddings(types))
        x = dropout(x, c.dropout if self.training else 0.0)  # (B, T, C)
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): keys
        for i, block in enumerate(body.encoder.layer):
            x = run_block(block_mode(self.checkpointing, i), block, x, mask, first_only and i == c.n_layer - 1)
        return x

    def add_head(self, num_labels):
        """A fresh classification head (N(0, initializer_range), zero bias; fp32 whatever the backbone's dtype), unless
        the checkpoint brought one. RoBERTa: classifier.dense, classifier.out_proj; BERT: classifier (+ its pooler)."""
        C, L = self.config.n_embd, nn.Linear
        return add_head(self, "classifier", lambda: L(C, num_labels) if self.prefix == "bert" else nn.ModuleDict(
            dict(dense=L(C, C), out_proj=L(C, num_labels))), num_labels)

    def classify(self, input_ids, attention_mask=None, token_type_ids=None):
        """(B, T) -> logits (B, num_labels) from the first token (<s> / [CLS]), dropout before each head linear:
        RoBERTa out_proj(tanh(dense(x))); BERT classifier(tanh(pooler(x))), no dropout before the pre-trained pooler.
        The head's rate: classifier_dropout, else the body's (transformers' reading)."""
        c, head = self.config, self.classifier
        p = (c.dropout if c.classifier_dropout is None else c.classifier_dropout) if self.training else 0.0
        x = self(input_ids, attention_mask, token_type_ids, first_only=True)[:, 0]  # (B, C)
        if self.prefix == "bert":
            if self.lacked and self.lacked[0] is self.bert.pooler:  # fill's fresh pooler, read: said once
                print(self.lacked[1])
                self.lacked = None
            dense = self.bert.pooler.dense  # (a LoRASPLinear where a PEFT adapter names "dense" or all-linear)
            x = dense(x.to(getattr(dense, "base", dense).weight.dtype))
            return head(dropout(torch.tanh(x), p).to(head.weight.dtype))
        return head.out_proj(dropout(torch.tanh(head.dense(dropout(x.to(head.dense.weight.dtype), p))), p))

    def add_qa_head(self):
        """HF's *ForQuestionAnswering head, unless the checkpoint brought one: qa_outputs, a linear from each token's
        final hidden state to its (start, end) logits (N(0, initializer_range), zero bias; fp32). BERT's pooler goes:
        nothing reads it, and HF's BertForQuestionAnswering (and so a saved QA model) has none."""
        getattr(self, self.prefix)._modules.pop("pooler", None)
        self.config.qa = True
        return add_head(self, "qa_outputs", lambda: nn.Linear(self.config.n_embd, 2))

    def span_logits(self, input_ids, attention_mask=None, token_type_ids=None):
        """(B, T) -> start logits (B, T), end logits (B, T) (no dropout before the head, as HF)."""
        x = self(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        return self.qa_outputs(x.to(self.qa_outputs.weight.dtype)).float().unbind(-1)  # (start, end)

    @classmethod
    def hf_tensor(cls, name, t):
        """HF key -> ours: the prefix added where a bare RobertaModel/BertModel file lacks it, LayerNorm gamma/beta of
        old files renamed. Dropped on purpose: pre-training heads (lm_head.*, cls.predictions.*: MLM;
        cls.seq_relationship.*: next sentence), position_ids/token_type_ids buffers, RoBERTa's unused pooler."""
        if name.startswith(("lm_head.", "cls.predictions.", "cls.seq_relationship.")) \
                or name.endswith(("embeddings.position_ids", "embeddings.token_type_ids")):
            return None
        name = name if name.startswith((cls.prefix + ".", "classifier.", "qa_outputs.")) else f"{cls.prefix}.{name}"
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        return None if name.startswith("roberta.pooler.") else (name, t)


class Roberta(Encoder):
    prefix, head = "roberta", ("classifier",)


class Bert(Encoder):
    prefix, head = "bert", ("bert.pooler", "classifier")
    may_lack = ("bert.pooler",)  # BertForMaskedLM saves none: fill() draws it fresh (initialize), as transformers does
    lacked = None  # (that pooler, fill's note): said where classify reads it, not an adapter's, not dropped for SQuAD


# ----------------------------------------------------------------------------------------------------
# T5 v1.0 and v1.1 / FLAN-T5 (Raffel et al. 2020): encoder-decoder, relative position buckets

class T5Block(nn.Module):
    """Pre-norm residual sublayers in HF's layout: layer.0 self-attention, layer.1 cross-attention over the encoder
    output (decoder only), layer.{1|2} the feed-forward DenseReluDense. T5 does not scale attention logits by
    1/sqrt(d_kv) (its initialisation absorbs it); positions enter as a learned bias added to them."""

    def __init__(self, c, decoder, first):
        super().__init__()
        C, inner, L = c.d_model, c.num_heads * c.d_kv, lambda i, o: nn.Linear(i, o, bias=False)  # noqa: E731
        sub = lambda name, **m: nn.ModuleDict({name: nn.ModuleDict(m), "layer_norm": RMSNorm(C, c.layer_norm_epsilon)})
        qkvo = lambda: dict(q=L(C, inner), k=L(C, inner), v=L(C, inner), o=L(inner, C))  # noqa: E731
        self.gated, self.act, self.n_head, self.p = c.is_gated_act, ACT[c.dense_act_fn], c.num_heads, c.dropout_rate
        ff = dict(wi_0=L(C, c.d_ff), wi_1=L(C, c.d_ff)) if self.gated else dict(wi=L(C, c.d_ff))
        table = dict(relative_attention_bias=nn.Embedding(c.relative_attention_num_buckets, c.num_heads))
        self.layer = nn.ModuleList([sub("SelfAttention", **qkvo(), **(table if first else {}))]  # ModuleDicts: HF's
                                   + ([sub("EncDecAttention", **qkvo())] if decoder else [])  # names, no code
                                   + [sub("DenseReluDense", **ff, wo=L(c.d_ff, C))])

    def attention(self, a, h, src, bias, p, kv, cross=False):
        """h (B, T, C) attends over src (B, S, C); bias (B|1, nh, T, S) holds positions and masks."""
        split = lambda t: t.view(*t.shape[:2], self.n_head, -1).transpose(1, 2)  # noqa: E731  (B, nh, T, d_kv)
        if cross and kv:  # the encoder's k, v: computed at the first decoding step, reused at every later one
            k, v = kv["k"], kv["v"]
        else:
            k, v = split(a.k(src)), split(a.v(src))
            if cross and kv is not None:
                kv.update(k=k, v=v)
        core = lambda q, k, v, b: attend(q, k, v, b.to(q.dtype), None if cross else kv, p, scale=1.0)  # noqa: E731
        return a.o(cheap(core, split(a.q(h)), k, v, bias))

    def forward(self, x, bias, enc=None, enc_bias=None, kv=None):
        (attn, *cross, ff), p = self.layer, self.p if self.training else 0.0
        h = cheap(attn.layer_norm, x)
        x = x + dropout(self.attention(attn.SelfAttention, h, h, bias, p, kv and kv["self"]), p)
        if cross:
            h = cheap(cross[0].layer_norm, x)
            y = self.attention(cross[0].EncDecAttention, h, enc, enc_bias, p, kv and kv["cross"], cross=True)
            x = x + dropout(y, p)
        h, m = cheap(ff.layer_norm, x), ff.DenseReluDense
        if self.gated:  # v1.1: act(wi_0 h) * wi_1 h
            h = cheap(lambda a, b: dropout(self.act(a) * b, p), m.wi_0(h), m.wi_1(h))
        else:
            h = cheap(lambda a: dropout(self.act(a), p), m.wi(h))
        return x + dropout(tail(m.wo, h), p)


class T5(nn.Module):
    """Encoder-decoder (Raffel et al. 2020): model(input_ids, decoder_input_ids, attention_mask) -> logits (B, T, V).
    Each stack's relative position table lives in its first block and serves all; `shared` embeds both stacks."""

    def __init__(self, config):
        super().__init__()
        c, self.config, self.checkpointing = config, config, "none"
        self.shared = nn.Embedding(c.vocab_size, c.d_model)
        for name, n in (("encoder", c.num_layers), ("decoder", c.num_decoder_layers)):
            setattr(self, name, nn.ModuleDict(dict(  # embed_tokens: `shared` again (HF files may store tied copies)
                embed_tokens=self.shared, block=nn.ModuleList(T5Block(c, name == "decoder", i == 0) for i in range(n)),
                final_layer_norm=RMSNorm(c.d_model, c.layer_norm_epsilon))))
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_word_embeddings:
            self.lm_head.weight = self.shared.weight
        self.apply(init_weights)

    def position_bias(self, stack, T, past=0):
        """(1, nh, T, past + T) bias for key - query distances, bucketed: half the buckets exact small distances, half
        log-spaced up to the max distance. The encoder splits them between left and right; the decoder sees the past."""
        c, pos = self.config, torch.arange(past + T, device=self.shared.weight.device)
        rel, n, bucket = pos[None] - pos[past:, None], c.relative_attention_num_buckets, 0  # (T, S)
        if stack is self.encoder:
            n //= 2
            bucket, rel = (rel > 0).long() * n, rel.abs()
        else:
            rel = (-rel).clamp(min=0)
        exact = n // 2
        log = torch.log(rel.float() / exact) / math.log(c.relative_attention_max_distance / exact) * (n - exact)
        bucket = bucket + torch.where(rel < exact, rel, (exact + log.long()).clamp(max=n - 1))
        return stack.block[0].layer[0].SelfAttention.relative_attention_bias(bucket).permute(2, 0, 1)[None]

    def run(self, stack, ids, bias, enc=None, enc_bias=None, cache=None):
        p, dev = self.config.dropout_rate if self.training else 0.0, ids.device.type
        x = dropout(stack.embed_tokens(ids), p)  # (B, T, C)
        if torch.float16 in (x.dtype, torch.is_autocast_enabled(dev) and torch.get_autocast_dtype(dev)):
            raise ValueError("T5 overflows in float16 (its activations pass 65504): use bfloat16 or float32")
        for i, block in enumerate(stack.block):
            x = run_block(block_mode(self.checkpointing, i), block, x, bias, enc, enc_bias, cache and cache[i])
        return dropout(stack.final_layer_norm(x), p)

    @staticmethod
    def padding_bias(attention_mask, S, like):  # (B|1, 1, 1, S): -1e9 on padding (finite: never a row of NaN)
        mask = like.new_ones(1, S) if attention_mask is None else attention_mask.to(like)
        return (mask[:, None, None] - 1) * 1e9

    def encode(self, input_ids, attention_mask=None):
        """(B, S) -> encoder output (B, S, C)."""
        bias = self.position_bias(self.encoder, input_ids.shape[1])
        return self.run(self.encoder, input_ids, bias + self.padding_bias(attention_mask, input_ids.shape[1], bias))

    def decode(self, decoder_input_ids, enc, attention_mask=None, cache=None):
        """(B, T) decoder ids -> logits (B, T, vocab); cache: one {"self": {}, "cross": {}} per decoder block."""
        T, past = decoder_input_ids.shape[1], cache[0]["self"]["k"].shape[2] if cache and cache[0]["self"] else 0
        future = torch.ones(T, past + T, dtype=torch.bool, device=enc.device).triu(past + 1)
        bias = self.position_bias(self.decoder, T, past).masked_fill(future, -1e9)
        pad = self.padding_bias(attention_mask, enc.shape[1], bias)
        x = self.run(self.decoder, decoder_input_ids, bias, enc, pad, cache)
        return self.lm_head(x * self.config.d_model ** -0.5 if self.config.scale_decoder_outputs else x)  # Mesh TF's

    def forward(self, input_ids, decoder_input_ids, attention_mask=None):
        """input_ids (B, S), decoder_input_ids (B, T) (labels shifted right behind the start token 0) -> logits."""
        return self.decode(decoder_input_ids, self.encode(input_ids, attention_mask), attention_mask)

    @staticmethod
    def hf_tensor(name, t):
        """HF key -> ours (the same); some old files carry a cross-attention position table nothing uses."""
        return None if name.endswith("EncDecAttention.relative_attention_bias.weight") else (name, t)


# ----------------------------------------------------------------------------------------------------
# Loading: build on the meta device, stream tensors in one at a time, quantize as they arrive

# config.json's model_type -> backbone. A new architecture brings a config dataclass (configs.py: from_hf, to_hf and
# its CONFIGS entry), a module tree named like its HF checkpoint, an hf_tensor(name, tensor) key conversion, and an
# entry here; fill() does the rest.
MODELS = {"llama": Llama, "mistral": Llama, "qwen2": Llama, "qwen3": Llama, "gpt2": GPT2, "roberta": Roberta,
          "bert": Bert, "t5": T5, "mt5": T5}


def device_problem(name):
    """What is wrong with --device NAME here, or None: lorasp runs on cpu or cuda[:N], and cuda needs a GPU torch
    sees (else torch's AssertionError or RuntimeError surfaced as a traceback, deep in the run)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        return f"--device {name}: lorasp runs on cpu or cuda (cuda:N: the N-th GPU)"
    if device.type == "cuda" and (device.index or 0) >= (n := torch.cuda.device_count()):
        return f"--device {name}: torch sees {n} CUDA device{'s' * (n != 1)} here" + (
            f" (torch {torch.__version__} is built without CUDA)" if torch.version.cuda is None else "") + \
            "; use --device cpu" + (f" or cuda:0 .. cuda:{n - 1}" if n else "")
    return None


def load_pretrained(path, quantize=None, dtype=None, device="cpu", spill=None):
    """The model a checkpoint directory (or .gguf file) describes, filled one tensor at a time; returned in eval mode.
    quantize="nf4": every linear inside the blocks becomes an NF4Linear as its weight arrives; embeddings, norms and
    the LM head stay dense. dtype: the compute dtype (None: as transformers 5's default dtype="auto", config.json's
    `dtype` or `torch_dtype`, else the first tensor's). A config.json whose numbers cannot describe a model is an
    error naming the field. spill: fill's (a folder its dense weights are memory-mapped from: export.py).
    A bitsandbytes 4-bit NF4 checkpoint (`*-bnb-4bit`): its NF4 linears load as stored (quantize="nf4"; nothing is
    quantized) or dequantized (None); its dense tensors as they are (checkpoint.prequantized)."""
    if quantize not in (None, "nf4"):
        raise ValueError(f"quantize must be None or 'nf4', not {quantize!r}")
    path, given, dtype = os.fspath(path), dtype, None if dtype in (None, "auto") else float_dtype(dtype)
    if given not in (None, "auto") and dtype is None:
        raise ValueError(f"dtype {given!r}: give a floating-point torch dtype (torch.bfloat16) or its name "
                         "('bfloat16'), or None / 'auto' (config.json's)")
    if gguf := gguf_file(path):  # llama.cpp's one file: weights dequantized as they stream in (bf16 without fp32)
        fields_, stream = gguf_checkpoint(gguf, dtype, quantize)
        cls, config, source, hf = Llama, LlamaConfig(**fields_), gguf, None
    elif is_meta(path):
        fields_, stream = meta_checkpoint(path)
        cls, config, source, hf = Llama, LlamaConfig(**fields_), os.path.join(path, "params.json"), None
    elif os.path.exists(os.path.join(path, "config.json")):
        hf = read_json(source := inside(path, "config.json", path))  # (not a symlink out of the folder)
        if not isinstance(kind := hf.get("model_type"), str) or kind not in MODELS:  # (a list: "unhashable type")
            raise NotImplementedError(f"{source}: model_type {kind!r} is not supported ({', '.join(MODELS)})")
        stored = prequantized(hf, source, quantize)  # a bitsandbytes 4-bit NF4 checkpoint's settings; GPTQ... refused
        cls, dtype = MODELS[hf["model_type"]], dtype or config_dtype(hf, source)
        check_config(CONFIGS[hf["model_type"]], source, raw=hf)
        try:
            config = CONFIGS[hf["model_type"]].from_hf(hf)
        except KeyError as e:
            raise ValueError(f"{source}: field {e.args[0]!r} is missing ({hf['model_type']} needs it)") from None
        except (NotImplementedError, ValueError) as e:
            raise type(e)(f"{source}: {e}") from None
    else:
        raise FileNotFoundError(f"{path}: neither config.json (Hugging Face layout), params.json (Meta layout) nor "
                                "a .gguf file")
    check_config(config, source, hf)
    if hf is not None:  # (its layer counts checked against the tensor names: 2**40 layers took forever to build)
        stream = hf_checkpoint(path, source, layer_counts(config, hf), cls.hf_tensor, stored)
    with torch.device("meta"), MetaInit():
        model = cls(config)
    return fill(model, stream, dtype, quantize, device, spill, stored=hf is not None and stored is not None).eval()


def save_pretrained(model, directory, shard_size=None, config=None, edit=lambda name, t: t):
    """Write a (dense) model in the HF layout, loadable by load_pretrained and by transformers; config (an HF dict)
    and edit(name, tensor) change what is written, not the model (tasks.save_gpt2_classifier's pad row)."""
    seen, state = set(), model.state_dict()
    for name, t in state.items():
        if not t.is_floating_point():
            raise TypeError(f"{name}: save_pretrained writes dense float weights, found {t.dtype}")
    unique = [n for n, t in state.items() if not (t.data_ptr() in seen or seen.add(t.data_ptr()))]  # tied: once
    write_checkpoint(directory, config or model.config, (type(model).hf_tensor(n, edit(n, state[n])) for n in unique),
                     shard_size)


# ----------------------------------------------------------------------------------------------------
# The demo

def demo(max_new_tokens=12, temperature=0.0, top_p=1.0, seed=0):
    """Build a tiny Llama, save it in the HF layout, load it back (dense and NF4), checkpoint, generate (or sample)."""
    torch.manual_seed(0)
    model, ids = build_model("llama-tiny"), torch.randint(0, 256, (2, 16))
    print(f"llama-tiny: {sum(p.numel() for p in model.parameters()):,} parameters, {asdict(model.config)}")
    with tempfile.TemporaryDirectory() as d:
        save_pretrained(model, d, shard_size=200_000)
        back, nf4 = load_pretrained(d), load_pretrained(d, quantize="nf4")
        print(f"saved as {sorted(os.listdir(d))}\n"
              f"loaded back: max |logit diff| {(back(ids) - model(ids)).abs().max():.1e}; "
              f"with NF4 linears {(nf4(ids) - model(ids)).abs().max():.1e} (logit std {model(ids).std():.2f})")
    grads = {}
    for back.checkpointing in ("none", "full", "selective"):
        back.train().zero_grad()
        F.cross_entropy(back(ids).flatten(0, 1), ids.roll(-1, 1).flatten()).backward()
        grads[back.checkpointing] = torch.cat([p.grad.flatten() for p in back.parameters()])
    print("activation checkpointing, max |grad diff| vs none: " + ", ".join(
        f"{m} {(grads[m] - grads['none']).abs().max():.1e}" for m in ("full", "selective")))
    out = generate(back.eval(), ids[:1, :4], max_new_tokens, temperature, top_p, generator=torch.manual_seed(seed))
    print(f"{'sampled' if temperature else 'greedy'} continuation of {ids[0, :4].tolist()}: {out[0, 4:].tolist()}")
    print('with real weights: python generate.py --model DIR --prompt "..."')


def main():
    """`python model.py`: the demo; with --model, generate.py's command line (as before it moved)."""
    generate_main(demo)


if __name__ == "__main__":
    from checks import console  # (the command line alone: an import of model.py leaves the streams as they are)
    console()                                                  # (line-buffered; UTF-8 where ASCII fails; no reader: on)
    main()
