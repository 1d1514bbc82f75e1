"""plan.py: what a run will need, before it starts. A memory plan from the model's config and train.py's flags.

Nothing here reads a weight. The config comes from config.json, params.json or a preset; the model is built on the
meta device (shapes, no storage) so its tensors are listed exactly as load_pretrained fills them; the activations a
block keeps for backward are counted per token from what model.py's code saves (ACTIVATIONS, below):

    peak = runtime + data + base + embeddings + adapter + activations + backward + loss + dequant + heap + shapes

- runtime: Python, torch and the tokenizer libraries. CPU: this process's resident size when the plan is made plus
  what the first step adds (RUNTIME_STEP, measured); CUDA: cuBLAS's workspace.
- data: the records read and their tokenized examples, Python lists of ints: DATA_PER_BYTE of the task x its files'
  size (measured at the data sets' sizes; CPU only: on a GPU they stay in the host's memory). A file not fetched yet
  counts 0.
- base: the block linears by storage: fp32 or bf16, or NF4 (4 bits, a uint8 scale per 64 values, an fp32 scale per
  256 blocks: 4.127 bits a weight). Full fine-tuning: every weight fp32 x 4 (weight, gradient, AdamW's two moments),
  under bf16 autocast + a bf16 copy of each block linear's (autocast's cache, kept for backward).
- embeddings: embedding tables, norms, biases and a separate head, dense in the compute dtype.
- adapter: per adapted linear, r (in + out) mask bytes and the trainable entries (keep of them) fp32 x 4 (weight,
  gradient, two moments), plus a classifier's head x 4; what forward unpacks (A_eff, B_eff) in the compute dtype.
- activations: what each block keeps for backward, per token (ACTIVATIONS; full fine-tuning: no adapter, TRAINED
  more; under bf16 autocast BF16's fp32 norm inputs, or with full fine-tuning AUTOCAST's), x batch x seq-len x
  layers.
- backward: beside them, the gradients in flight (GRADS_IN_FLIGHT widths per token), plus one block's activations
  while it is recomputed (full) or its recomputed parts (selective).
- loss: the causal LM's chunked cross-entropy (a LOSS_CHUNK of fp32 logits, dL/dh); T5's whole logits.
- dequant: the largest NF4 weight, dequantized for its matmul; on CPU with full checkpointing, a block's NF4 weights
  but its tail (TAILS), which a replay dequantizes and keeps for the block's backward (recompute.replay_slot), in
  buffers per weight shape that every block reuses.
- heap: CPU: the holes glibc keeps where freed activations were (HEAP_SLACK x activations + backward + loss; none
  where a (tokens, C) activation passes MMAP_MAX: mapped, given back when freed); CUDA: the caching allocator's slack
  (ALLOCATOR_SLACK x the rest).
- shapes: CPU bf16: oneDNN keeps every matmul it has set up (its primitive cache and ideep's, 1024 each), ~3 MiB
  (SHAPE_BYTES) per weight shape and batch length; batches are padded to few lengths (bucket, data.bucket_length):
  SHAPE_BYTES x the distinct weight shapes whose rows are tokens x the lengths up to --seq-len, and a causal LM's
  head x its row counts (the scored tokens, bucketed too) up to a batch's tokens. An upper bound: a short run, or data
  of few lengths, meets fewer of them.

`estimate(config, args)` returns the parts in bytes; `lines(...)` words them; `settle` decides --quant/--checkpointing
auto (`choose`, `fewest_full_blocks`) and `check_fits` refuses a plan that does not fit, naming settings that do
(`fitting`); `peak_mem_mib` is the measured peak train.py reports beside them. tests/test_plan.py checks the counts
against autograd's saved tensors on tiny blocks and the total against the measured peak (VmHWM) of train.py runs.
Leaves out: fragmentation beyond what the constants measured, the CUDA context (outside torch's allocator: it is
already gone from what torch.cuda.mem_get_info reports free), pinned host buffers.
`python plan.py` prints the memory this machine has for a run; every train.py run prints its plan before a weight
is read ("memory plan: ... at the peak").
"""
import argparse
import copy
import itertools
import math
import os
import sys

import torch
try:
    import resource
except ImportError:                                            # (Windows: peak_mem_mib says None)
    resource = None

import data
from data import UserError
from download import snapshot_hint
from adapter import all_linear, targeted, trained_whole
from lorasp import DRAWN, UNITS
from checkpoint import (META_LAYERS, bnb_config, check_layers, consolidated, hf_checkpoint, is_meta, meta_config,
                        read_json, refuse_vision, resident as resident_bytes, stored_nf4, torch_names)
from configs import layer_counts
from ggufread import gguf_checkpoint, gguf_file
import quant
import quant_torch
import recompute
import tokenizer
from model import CONFIGS, LOSS_CHUNK, PRESETS, LlamaConfig, build_model, check_config, get_config

GiB = 1 << 30
MiB = 1 << 20
RUNTIME_STEP = 16 * MiB       # CPU: the tokenizer, thread pools and kernel caches a first step adds (measured)
HEAP_SLACK = 0.5              # CPU: glibc keeps the holes freed activations leave: +50% of a step's working memory
MMAP_MAX = 32 * MiB           # ... for blocks under glibc's largest mmap threshold; bigger ones go back at once
ALLOCATOR_SLACK = 0.05        # CUDA: the caching allocator rounds and keeps freed blocks
SHAPE_BYTES = 3 * MiB         # CPU bf16: what oneDNN's two primitive caches, and the heap holes around them, keep per
                              # (weight shape, batch length): forward, dL/dx, dL/dA (measured 2.4 to 3.3 MiB)
DATA_PER_BYTE = {"lm": 10, "glue": 10, "seq2seq": 7, "squad": 40, "squad-gen": 25}  # resident bytes per byte of
# the data's files, read and tokenized (measured at the data sets' sizes, docs/benchmarks.md: Alpaca 9 (19 a token,
# 0.38 tokens a byte), QQP 9.7, MNLI 3.1 (its parse columns are not read), WMT16 6.3, SQuAD 39 and squad-gen 21: a
# context in each of its questions' windows or prompts)
GRADS_IN_FLIGHT = 3           # backward holds about this many of a block's widest tensors (dL/d gate, up, act)
MARGIN = 0.9                  # --quant/--checkpointing auto: a plan fits when it needs at most 90% of what is free
TAILS = ("mlp.down_proj", "mlp.c_proj", "DenseReluDense.wo")  # the blocks' recompute.tail layers: a replay skips them
PAPER_PRESETS = ("llama2-7b", "llama2-13b", "llama2-70b")  # the paper's LLaMA-2 runs (7B, 13B; 70B, their kin, too):
# qN(W) and recomputation
CGROUP, PROC_CGROUP = "/sys/fs/cgroup", "/proc/self/cgroup"  # control groups: a container's memory limit, and ours
UNLIMITED = 1 << 60           # a cgroup v1 limit this large is none (the kernel writes 9223372036854771712)


def cpu_bf16_units():
    """The bf16 units this CPU has ("avx512_bf16", "amx_bf16"): with them oneDNN multiplies bf16 natively (2048² on 2
    threads of a Sapphire Rapids: 188 GFLOP/s bf16 vs 74 fp32); without them bf16 is emulated, slower than fp32."""
    checks = dict(avx512_bf16="_is_avx512_bf16_supported", amx_bf16="_is_amx_tile_supported")  # torch >= 2.1
    return [unit for unit, f in checks.items() if getattr(torch.cpu, f, lambda: False)()]


def pick_dtype(dtype, device):
    """(bf16 autocast?, why) for --dtype: auto is bf16 on CUDA and on CPUs with bf16 units, else fp32. Adapters,
    gradients and AdamW's state stay fp32 either way; the frozen base is stored in bf16. (Here, not in train.py: the
    plan counts bytes in the dtype the run will use.)"""
    if dtype != "auto":
        return dtype == "bf16", f"--dtype {dtype}"
    if torch.device(device).type == "cuda":
        return True, "--dtype auto: CUDA"
    units = cpu_bf16_units()
    return (True, f"--dtype auto: this CPU multiplies bf16 natively ({', '.join(units)})") if units else (
        False, "--dtype auto: this CPU has no bf16 units (AVX512-BF16, AMX), where bf16 would be emulated and slower")


def bucket(args):
    """--seq-len where batches are padded to data.bucket_length's few lengths: CPU bf16, where each new length costs
    oneDNN's caches SHAPE_BYTES per weight shape (~15 MiB for MiniLM) and padding to the longest sequence meets up
    to --seq-len lengths; None elsewhere (fp32 runs MKL's sgemm, CUDA cuBLAS: nothing kept per shape)."""
    cpu = torch.device(args.device).type == "cpu"
    return args.seq_len if cpu and pick_dtype(args.dtype, args.device)[0] else None


# ----------------------------------------------------------------------------------------------------
# The config, without reading a weight

def model_config(model, directory=None):
    """--model's config: the directory's config.json (or Meta's params.json, or a .gguf's header), else the preset.
    A field the plan needs that is missing is an error naming the file and the field."""
    if directory and (gguf := gguf_file(directory)):
        return LlamaConfig(**gguf_checkpoint(gguf)[0])             # the header only: its stream is not started
    meta = is_meta(directory or model)                             # as load_pretrained picks the layout
    for name in ("params.json", "config.json") if meta else ("config.json", "params.json"):
        path = os.path.join(directory or model, name)
        if os.path.exists(path):
            c = read_json(path)                                    # (bad JSON, a list: named, as the load names them)
            if name == "params.json":
                refuse_vision(c, path)                             # (named: not wrapped below)
            elif isinstance(kind := c.get("model_type"), str) and kind in CONFIGS:  # numbers that cannot describe
                check_config(CONFIGS[kind], path, raw=c)         # a model, named as load_pretrained names them
            try:
                if name == "params.json":
                    return LlamaConfig(**meta_config(
                        c, lambda: tokenizer.load_tokenizer(directory or model).vocab_size))
                if not isinstance(kind, str) or kind not in CONFIGS:   # (a list: "unhashable type")
                    raise UserError(f"{path}: model_type {c.get('model_type')!r} is not supported "
                                    f"({', '.join(CONFIGS)})")
                return CONFIGS[c["model_type"]].from_hf(c)
            except KeyError as e:
                raise UserError(f"{path} has no {e.args[0]!r} field, which the model (and its memory plan) needs")
            except (ValueError, NotImplementedError) as e:             # a value from_hf refuses: name the file
                raise UserError(f"{path}: {e}") from None
            except (TypeError, ZeroDivisionError, AttributeError) as e:  # Meta's numbers, said as meta_checkpoint
                if name != "params.json":                                 # says them (config.json's: check_config)
                    raise
                raise UserError(f"{path}: its numbers do not describe a model ({e})") from None
    if model in PRESETS:
        return get_config(model)                                   # a copy: a head added while planning stays here
    raise UserError(f"{directory or model}: neither config.json (Hugging Face layout) nor params.json (Meta layout)"
                    + snapshot_hint(directory or model))


def check_layers_held(config, directory):
    """Refuse a config whose layer counts the checkpoint's files do not hold (as load_pretrained refuses it) before
    estimate builds the model on the meta device, where 2**40 layers never finish. Names only: safetensors headers, a
    .bin's pickle or its index, consolidated.00.pth's pickle. No weights yet, or a GGUF (its header checks): none."""
    if not directory or not os.path.isdir(directory) or gguf_file(directory):
        return
    if is_meta(directory):
        if files := consolidated(directory):
            check_layers(os.path.join(directory, "params.json"), [("n_layers", config.n_layer, META_LAYERS)],
                         torch_names(files[0]))
        return
    source = os.path.join(directory, "config.json")
    try:                                                           # (its stream is not started)
        hf = read_json(source)                                     # (and its tensors' bitsandbytes keys, if any)
        hf_checkpoint(directory, source, layer_counts(config, hf), None, bnb_config(hf, source))
    except FileNotFoundError:                                      # to be fetched, or the load names what is missing
        pass


# ----------------------------------------------------------------------------------------------------
# What a block keeps for backward, per token: (values in the compute dtype, bytes) by checkpointing mode.
# Counted from model.py's code with the default --targets (others keep less, but all-linear more: every_linear);
# tests/test_plan.py compares them with autograd's saved tensors. C: width, Ck: k/v width, F: MLP width, r: rank,
# A: adapted linears a block, h: heads, T: tokens a sequence; dropout on CPU keeps a bool (h, T, T) mask.

def llama(c, mode, r, T, dropout_cpu):
    """x, norm out, rotated q and k, v, attention out (shared with o_proj), x mid, norm out, gate, up, act; h = x A^T
    of each adapter; 4-byte log-sum-exp per head; q/k norms (Qwen3): their fp32 input, 1 / rms per head. Selective
    keeps the matmul outputs only: x, q, k, v, x mid, gate, up. Full keeps the block's input."""
    C, Cq, Ck, F, h = c.n_embd, c.n_head * c.hd, c.n_kv_head * c.hd, c.n_ffn, c.n_head  # Cq = C unless head_dim
    qk = 4 * (Cq + Ck + h + c.n_kv_head) if c.qk_norm else 0   # q/k norms (Qwen3): their fp32 input and 1 / rms
    return dict(none=(4 * C + 2 * Cq + 2 * Ck + 3 * F + 7 * r, 4 * h + 8 + qk),
                selective=(2 * C + Cq + 2 * Ck + 2 * F + 7 * r, 0),
                full=(C, 0))[mode]


def gpt2(c, mode, r, T, dropout_cpu):
    """x, ln out, qkv, attention out, x mid, ln out, fc out, gelu out, h of 4 adapters; dropout's bool masks (2C) and
    its attention mask (heads x T); LayerNorm's mean and rstd. Selective: x, qkv, x mid, fc out and the masks."""
    C, F, h, p = c.n_embd, c.n_inner or 4 * c.n_embd, c.n_head, c.dropout > 0  # F: the MLP's width (4C as released)
    att = h * T if p and dropout_cpu else 4 * h             # DropoutAttention's mask, or SDPA's log-sum-exp
    return dict(none=(8 * C + 2 * F + 4 * r, 2 * C * p + 16 + att), selective=(5 * C + F + 4 * r, 2 * C * p),
                full=(C, 0))[mode]


def encoder(c, mode, r, T, dropout_cpu):
    """RoBERTa/BERT with query, value adapted: x, q, k, v, both LayerNorms' inputs, the GELU's input, 2 h; dropout's
    masks. The attention output feeds a frozen dense: not kept."""
    C, F, h, p = c.n_embd, c.n_ffn, c.n_head, c.dropout > 0
    att = h * T if p and dropout_cpu else 4 * h + 4 * C
    return dict(none=(6 * C + F + 2 * r, 2 * C * p + 16 + att), selective=(6 * C + F + 2 * r, 2 * C * p),
                full=(C, 0))[mode]


def t5(c, mode, r, T, dropout_cpu):
    """An encoder and a decoder block together, per token of each side, q and v adapted: x, norm out, q, k, v, x mid,
    the feed-forward's activation inputs and outputs, h; the decoder adds cross-attention (norm in and out, q, and k,
    v over the encoder's tokens). Dropout masks; with DropoutAttention, its (heads x T) masks; each norm's 1 / rms."""
    C, inner, F, h, p = c.d_model, c.num_heads * c.d_kv, c.d_ff, c.num_heads, c.dropout_rate > 0
    gated = c.is_gated_act                                   # kept: act's input, its output and wi_1's; relu's output
    ff, ff_in = (3 * F, 2 * F) if gated else (F, F)          # selective keeps the matmul outputs (wi_0, wi_1 / wi)
    att = h * T if p and dropout_cpu else 4 * h + 4 * inner
    enc = dict(none=3 * C + 3 * inner + ff + 2 * r, selective=2 * C + 3 * inner + ff_in + 2 * r, full=C)[mode]
    cross = dict(none=2 * C + 3 * inner + 2 * r, selective=C + 3 * inner + 2 * r, full=0)[mode]
    masks = (2 * C + F) * p + att if mode == "none" else 2 * C * p if mode == "selective" else 0
    cross_masks = att + C * p if mode == "none" else C * p if mode == "selective" else 0
    norms = 4 * 5 if mode == "none" else 0                   # 1 / rms (fp32) of the encoder's 2 and decoder's 3 norms
    return 2 * enc + cross, 2 * masks + cross_masks + norms


ACTIVATIONS = {"llama": llama, "gpt2": gpt2, "roberta": encoder, "bert": encoder, "t5": t5}
# Full fine-tuning trains every weight, so without checkpointing a block keeps more (values a token, as ACTIVATIONS'):
# each linear's input for its weight's gradient, where the default --targets leave that linear frozen (RoBERTa/BERT:
# attention.output.dense, intermediate.dense, output.dense; T5: o, wo and the feed-forward norm's output), and a
# hand-written RMSNorm's normalized input for the gradient of its weight (nn.LayerNorm keeps its input either way).
# GPT-2 adapts all four linears: nothing more. Selective recomputes these (cheap outputs), full keeps the block input.
TRAINED = {"llama": lambda c: 2 * c.n_embd + ((c.n_head + c.n_kv_head) * c.hd if c.qk_norm else 0),  # Qwen3's q/k
           "gpt2": lambda c: 0,
           "roberta": lambda c: 2 * c.n_embd + c.n_ffn, "bert": lambda c: 2 * c.n_embd + c.n_ffn,
           "t5": lambda c: 7 * c.d_model + 3 * c.num_heads * c.d_kv + 2 * c.d_ff}  # encoder 3C + inner + F, decoder
#                                                                                # 4C + 2 inner + F (cross-attention)


# Full fine-tuning under bf16 autocast trains fp32 masters: the residual stream and the norms' outputs stay fp32 (4
# bytes where ACTIVATIONS counts 2) and each linear fed one keeps its own bf16 copy of it (Llama's q, k, v: three).
# Bytes a token more, in widths C, without checkpointing, selective, full; the bf16 copies of the weights, held from
# forward to backward, are counted in `base`. T5 (an encoder and a decoder block): gated +4C (wi_0 and wi_1 copy the
# norm's output), and without checkpointing each block's bf16 copy of the fp32 attention bias: the encoder's
# (B, nh, S, S), the decoder's (1, nh, T, T), cross-attention's (B, 1, 1, S).
AUTOCAST = {"llama": (14, 14, 2), "gpt2": (4, 8, 2), "roberta": (8, 10, 2), "bert": (8, 10, 2), "t5": (32, 32, 4)}


# An adapter under bf16 autocast over a bf16 base (train.py's bf16): bytes a token more than ACTIVATIONS' count at 2
# bytes a value, without checkpointing (selective and full recompute these). Each hand-written RMSNorm keeps the fp32
# copy of its input it computes in (x.float(): 4 bytes where the input is counted at 2; Llama: 2 a block, T5: 5 an
# encoder and a decoder block); on CPU nn.LayerNorm keeps its mean and 1 / std in bf16 (2 bytes where counted at 4;
# 2 LayerNorms a block); SDPA keeps its output in bf16, counted at 4 (RoBERTa/BERT, T5; not with DropoutAttention).
sdpa = lambda p, cpu: not (p and cpu)  # noqa: E731  (attention without DropoutAttention: dropout off, or not on CPU)
BF16 = {"llama": lambda c, cpu: 2 * 2 * c.n_embd,
        "gpt2": lambda c, cpu: -8 * cpu,
        "roberta": lambda c, cpu: -8 * cpu - 2 * c.n_embd * sdpa(c.dropout > 0, cpu),
        "bert": lambda c, cpu: -8 * cpu - 2 * c.n_embd * sdpa(c.dropout > 0, cpu),
        "t5": lambda c, cpu: 5 * 2 * c.d_model - 3 * 2 * c.num_heads * c.d_kv * sdpa(c.dropout_rate > 0, cpu)}


def every_linear(config, mode, r, dropout_cpu):
    """Values a block keeps a token more under --targets all-linear than ACTIVATIONS' default targets: h of each
    further adapter and, without checkpointing, the input of each linear the defaults leave frozen where nothing else
    keeps it (selective recomputes those, full keeps the block's input). Llama, GPT-2: the defaults are every linear.
    RoBERTa/BERT: key, attention.output.dense, intermediate.dense, output.dense; their inputs: the attention output
    (kept already where SDPA keeps it as its output), the LayerNorm's output, the GELU's. T5, an encoder and a decoder
    block: k, o, wi (gated: wi_0, wi_1), wo and cross-attention's k, o; o's inputs (not where SDPA keeps them), the
    feed-forward norms' outputs and wo's (not where ReLU keeps its output and wo reads it: no dropout, not gated)."""
    kind, none = config.model_type, mode == "none"
    if kind in ("roberta", "bert"):
        C, p = config.n_embd, config.dropout > 0
        return 4 * r + none * (C + config.n_ffn + C * (not sdpa(p, dropout_cpu))) if mode != "full" else 0
    if kind == "t5":
        C, inner, F, p = config.d_model, config.num_heads * config.d_kv, config.d_ff, config.dropout_rate > 0
        gated = config.is_gated_act
        return (10 + 2 * gated) * r + none * (2 * C + 3 * inner * (not sdpa(p, dropout_cpu)) + 2 * F * (
            gated or p)) if mode != "full" else 0
    return 0


def kept(config, mode, r, T, dropout_cpu, full=False, bf16=False, B=1, every=False):
    """(values in the compute dtype, bytes) a block keeps a token: ACTIVATIONS' count with adapters of rank r; under
    full fine-tuning (full) no adapter's h and what the trained weights need besides (TRAINED), under bf16 autocast
    the fp32 tensors and bf16 copies of AUTOCAST (B: sequences a batch, for T5's decoder bias); an adapter under bf16
    autocast: BF16's (B: sequences a batch, also for GPT-2's causal mask); every: --targets all-linear's more."""
    kind = config.model_type
    values, extra = ACTIVATIONS[kind](config, mode, 0 if full else r, T, dropout_cpu)
    values += TRAINED[kind](config) if full and mode == "none" else 0
    values += every_linear(config, mode, r, dropout_cpu) if every and not full else 0
    if kind == "gpt2" and mode == "none" and config.dropout > 0 and dropout_cpu:
        extra += T / B                                       # DropoutAttention's (T, T) causal mask, one a batch
    if bf16 and not full and mode == "none":
        extra += BF16[kind](config, dropout_cpu)
    if full and bf16:
        C = getattr(config, "n_embd", None) or config.d_model
        extra += AUTOCAST[kind][("none", "selective", "full").index(mode)] * C
        if kind == "t5":
            extra += 4 * C * config.is_gated_act * (mode != "full") + (
                2 * config.num_heads * T * (1 + 1 / B) + 2 if mode == "none" else 0)
    return values, extra


def layers(config):
    return getattr(config, "n_layer", None) or config.num_layers  # T5: an encoder and a decoder block a "layer"


def seq_len_of(config, args):
    """Tokens of a sequence that the plan counts: --seq-len, capped by the model's positions."""
    return min(args.seq_len, getattr(config, "n_positions", None) or args.seq_len)


# ----------------------------------------------------------------------------------------------------
# The estimate

def estimate(config, args, targets=(), data_bytes=0, runtime=None, met=None):
    """{part: bytes} for a run of args (method, rank, keep, quant, checkpointing, dtype, device, batch size, seq len)
    on a model of config; targets: the adapted linears' names (or all-linear, expanded as train.py expands it);
    runtime: the runtime's bytes (default: runtime_bytes(), measured now); met: (batch lengths, head row counts) the
    data meets (`met`; default: every one up to --seq-len and a batch's tokens)."""
    s = 2 if pick_dtype(args.dtype, args.device)[0] else 4
    full, nf4, cpu = args.method == "full", args.quant == "nf4", torch.device(args.device).type == "cpu"
    kernel = nf4 and quant_torch.triton_kernel(torch.device(args.device)) is not None  # CUDA + Triton: no fp32 levels
    keep = 1.0 if args.method == "lora" else args.keep
    with torch.device("meta"), torch.random.fork_rng(devices=[]):  # the plan draws no number the run would draw
        # a copy: add_head sets num_labels (add_qa_head qa) on the model's config, which must stay the caller's
        model, task = build_model(copy.deepcopy(config)), data.task_kind(args.data)
        if getattr(config, "num_labels", 0) == 0 and task == "glue":
            model.add_head(2)
        if task == "squad":                                       # the span head, and BERT's pooler gone
            model.add_qa_head()
    parts = dict(runtime=runtime_bytes(args.device) if runtime is None else runtime,
                 data=data_bytes, base=0, embeddings=0, adapter=0, activations=0, backward=0, loss=0, dequant=0, heap=0,
                 shapes=0)
    head = trained_whole({"glue": getattr(type(model), "head", ()), "squad": ("qa_outputs",)}.get(task, ()), targets)
    seen, biggest, shapes, replay_kept = set(), 0, set(), {}      # shapes: of token-row matmuls
    stored = stored_base(args.model)                              # a 4-bit checkpoint's: its NF4 weights, as stored
    every = not full and all_linear(targets)
    targets = set(targeted([n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)], targets, head))
    for name, m in model.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            if id(p) in seen:
                continue                                          # a tied weight: stored once
            seen.add(id(p))
            n = p.numel()
            block_linear = isinstance(m, torch.nn.Linear) and pname == "weight" and any(
                part.isdigit() for part in name.split("."))       # as fill() quantizes: inside a numbered block
            if full:                                              # fp32 weight, gradient, AdamW's two moments;
                parts["base"] += 16 * n + 2 * n * (block_linear and s == 2)  # autocast's bf16 copy, forward to backward
            elif head and name.startswith(head):              # a classifier's head trains whole
                parts["adapter"] += 16 * n
            elif block_linear and nf4 and (stored is None or held(stored[0], f"{name}.{pname}")):
                parts["base"] += nf4_bytes(n, stored is None or stored[1])   # (else a linear the file holds dense)
                levels = 0 if s == 4 or kernel else 4 * (min(n, quant_torch.CHUNK) if cpu else n)  # read now
                biggest = max(biggest, n * s + levels)
                if not name.endswith(TAILS):                      # a full replay keeps it for backward (CPU), in
                    at = [i for i, part in enumerate(name.split(".")) if part.isdigit()][0]   # a buffer per shape and
                    shapes_of = replay_kept.setdefault(".".join(name.split(".")[:at + 1]), {})   # use in its block
                    shapes_of[tuple(p.shape)] = shapes_of.get(tuple(p.shape), 0) + 1
            elif block_linear:
                parts["base"] += n * s
            else:
                parts["embeddings"] += n * s
            shapes |= {tuple(p.shape)} if block_linear else set()
            if isinstance(m, torch.nn.Linear) and pname == "weight" and not full and not (head and name.startswith(
                    head)) and name in targets:                   # (all-linear: BERT's pooler, outside a block)
                i, o = p.shape[1], p.shape[0]
                units = UNITS[args.structure]                     # lorasp's rule: round(keep x units) train
                trained = sum(round(keep * DRAWN[u](shape)) * math.prod(shape) // DRAWN[u](shape) for u, shape in (
                    (units["A"], (args.rank, i)), (units["B"], (o, args.rank))))
                frozen = args.rank * (i + o) - trained if args.mode == "freeze" else 0
                parts["adapter"] += args.rank * (i + o) * (1 + s) + 16 * trained + 4 * frozen  # masks, A/B_eff
                shapes |= {(args.rank, i), (o, args.rank)}
    tokens, T, L = args.batch_size * seq_len_of(config, args), seq_len_of(config, args), layers(config)
    kind = config.model_type
    per_token = lambda mode: (lambda v, b: v * s + b)(  # noqa: E731
        *kept(config, mode, args.rank, T, cpu, full, s == 2, args.batch_size, every))
    full_blocks = args.full_blocks if args.checkpointing == "selective" else 0  # (at most L: tasks.checked_config)
    parts["activations"] = tokens * ((L - full_blocks) * per_token(args.checkpointing)
                                     + full_blocks * per_token("full"))
    C = getattr(config, "n_embd", None) or config.d_model
    F = getattr(config, "n_ffn", None) or getattr(config, "d_ff", None) or getattr(config, "n_inner", None) or 4 * C
    parts["backward"] = tokens * GRADS_IN_FLIGHT * F * s + tokens * dict(
        none=0, selective=per_token("none") - per_token("selective"),  # a full replay rebuilds a whole block
        full=per_token("none"))["full" if full_blocks else args.checkpointing]
    V = config.vocab_size
    if kind in ("llama", "gpt2"):                                 # LinearCrossEntropy: fp32 chunk, dL/dh, final norm
        parts["loss"] = min(LOSS_CHUNK, tokens * V) * (4 + (2 if s == 2 else 0)) + 2 * tokens * C * s
        parts["loss"] += V * C * 4 if full else 0                 # the head's gradient, computed in forward
    elif kind == "t5":                                            # logits, their fp32 copy, log-softmax and its grad
        parts["loss"] = tokens * V * (s + 12)
    parts["dequant"] = biggest          # + its fp32 levels before rounding: one step on CPU, whole on an accelerator
    #                                     without quant_triton's kernel (which rounds each value as it makes it)
    if cpu and recompute.KEEP_DENSE and (args.checkpointing == "full" or full_blocks):  # kept buffers, reused
        for shape in {k for b in replay_kept.values() for k in b}:   # every block (T5: both stacks) reuses them
            parts["dequant"] += max(b.get(shape, 0) for b in replay_kept.values()) * math.prod(shape) * s
    parts["activations"] += tokens * C * s * (2 if kind == "t5" else 1)   # the embeddings' output
    working = parts["activations"] + parts["backward"] + parts["loss"]
    if cpu:                                 # measured with the default glibc malloc: resident / live = 1.43 to 1.52
        parts["heap"] = HEAP_SLACK * working if tokens * C * s < MMAP_MAX else 0
    else:
        parts["heap"] = ALLOCATOR_SLACK * sum(parts.values())
    if bucket(args):                        # a causal LM's vocabulary head: row counts up to a batch's tokens
        lengths = lambda n: len({data.bucket_length(k, n) for k in range(1, n + 1)})  # noqa: E731
        lm = kind in ("llama", "gpt2") and data.task_kind(args.data) == "lm"
        n_lengths, n_heads = met or (lengths(T), lengths(tokens))
        parts["shapes"] = SHAPE_BYTES * (len(shapes) * n_lengths + lm * n_heads)
    return {k: int(v) for k, v in parts.items()}


def nf4_bytes(n, double_quant=True):
    """The bytes of an NF4 weight of n values, as NF4Tensor.nbytes counts them: 4-bit codes, and a block's scale: a
    uint8 code, an fp32 scale a nested block and the offset (double quantization), else fp32."""
    blocks = math.ceil(n / quant.BLOCK_SIZE)
    return math.ceil(n / 2) + (blocks + 4 * math.ceil(blocks / quant.NESTED_BLOCK_SIZE) + 4 if double_quant else
                               4 * blocks)


def stored_base(model):
    """--model's NF4 weights if it is a bitsandbytes 4-bit checkpoint folder ({their names}, double-quantized), else
    None (read from config.json and the tensor names, no weight)."""
    return stored_nf4(model) if isinstance(model, str) and os.path.isdir(model) else None


def held(names, name):
    """Whether a weight of ours is one of the checkpoint's names (a bare model's, without model./transformer.)."""
    return name in names or name.partition(".")[2] in names


def met(train_ex, val_ex, args, rank=0, world=1):
    """(batch lengths, head row counts) that CPU bf16 batches of these examples meet, once the data is read (the plan
    made before counts every one possible): the lengths the examples round up to (a batch's: its longest's; both
    sides of a translation pair), and a causal LM's scored tokens per batch of the first epoch, rounded as
    model.lm_loss rounds them; under DDP, this rank's share of each global batch (data.micro_batches')."""
    T, val = args.seq_len, [e for v in val_ex.values() for e in v] if isinstance(val_ex, dict) else list(val_ex or ())
    sides = lambda e: (len(e[0]), len(e[1])) if isinstance(e, tuple) else (len(e["input_ids"]),)  # noqa: E731
    lengths = {data.bucket_length(n, T) for e in list(train_ex) + val for n in sides(e)}
    scored = [sum(t != data.IGNORE for t in e["labels"][1:]) if isinstance(e, dict) and isinstance(e["labels"], list)
              else 0 for e in train_ex]
    groups = data.epoch_batches([data.length(e) for e in train_ex], args.batch_size * world, args.seed,
                                data.step_groups(args))
    heads = {data.bucket_length(sum(scored[i] for i in idx[rank::world]), args.batch_size * T)
             for idx in groups if idx[rank::world]}  # (a rank left without an example scores none)
    return len(lengths), len(heads)


def with_data(config, args, targets, data_bytes, runtime, train_ex, val_ex, rows, rank=0, world=1):
    """The plan made again once the data is read: for micro-batches of `rows` (fewer than --batch-size where the data
    has fewer examples), and on CPU bf16 with the batch lengths the data meets (met). Returns (parts, the line that
    says so)."""
    held = argparse.Namespace(**{**vars(args), "batch_size": rows})
    lengths = met(train_ex, val_ex, held, rank, world) if bucket(args) else None
    parts = estimate(config, held, targets, data_bytes, runtime, lengths)
    said = [f"the data's {lengths[0]} batch lengths: shapes {parts['shapes'] / MiB:,.0f} MiB"] if lengths else []
    said += [f"micro-batches of {rows}"] if rows < args.batch_size else []
    return parts, f"memory plan with {', '.join(said)}, {sum(parts.values()) / GiB:.2f} GiB at the peak"


def runtime_bytes(device):
    """CPU: this process's resident size now (Python, torch, the libraries: what a plan made before loading sees)
    plus what a first step adds; CUDA: cuBLAS's workspace (the context is outside torch's allocator, already not
    free)."""
    device = torch.device(device)
    return resident_bytes() + RUNTIME_STEP if device.type == "cpu" else cublas_workspace_bytes(device)


def cublas_workspace_bytes(device):
    """The workspace torch's allocator hands cuBLAS at the first matmul (counted in max_memory_allocated; the offline
    demo on an H200 peaked 30 MiB over a plan without it): CUBLAS_WORKSPACE_CONFIG's :KiB:count pairs where set, else
    torch's default, 32 MiB on Hopper (compute capability 9) and :4096:2:16:8 (8.125 MiB) on the others."""
    spec = os.environ.get("CUBLAS_WORKSPACE_CONFIG", "")
    sizes = [int(x) for x in spec.split(":")[1:] if x.isdigit()]
    if sizes:
        return sum(kib * count for kib, count in zip(sizes[::2], sizes[1::2])) * 1024
    hopper = torch.cuda.is_available() and torch.cuda.get_device_properties(device).major == 9
    return 32 * MiB if hopper else (4096 * 2 + 16 * 8) * 1024


def available_bytes(device):
    """(bytes free for this run, where that figure comes from), or (None, why not): on CPU MemAvailable from
    /proc/meminfo, or less where a control group's memory limit leaves less (cgroup_free); torch.cuda.mem_get_info on
    CUDA."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free on {torch.cuda.get_device_name(device)}"
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        free, where = min((kib * 1024, "MemAvailable"), cgroup_free() or (math.inf, ""))
        return free + resident_bytes(), where + " + this process"   # what we hold already counts as ours
    except (OSError, StopIteration, ValueError):
        return None, "the available memory cannot be read (no /proc/meminfo MemAvailable): planning without the " \
            "check" + ", and runtime without this process's own size (no /proc/self/status)" * (not resident_bytes())


def cgroup_free():
    """(bytes, the limit's file) the tightest memory limit of this process's control groups leaves free, or None
    where none sets one: a container's, a Kubernetes pod's or a Slurm job's limit, past which the kernel kills the run
    (unsaved), and which /proc/meminfo, the whole machine's, does not show. Each group from ours up to the mount's
    root: limit - use + its file cache (which the kernel reclaims first, as MemAvailable counts it); cgroup v2's
    memory.max, memory.current, or v1's memory.limit_in_bytes, memory.usage_in_bytes."""
    found = []
    for folder, v1 in cgroup_folders("memory"):
        limit = cgroup_number(folder, "memory.limit_in_bytes" if v1 else "memory.max")
        if limit is not None and limit < UNLIMITED:
            used = cgroup_number(folder, "memory.usage_in_bytes" if v1 else "memory.current") or 0
            stat = cgroup_stat(folder)
            cache = sum(stat.get(("total_" if v1 else "") + k, 0) for k in ("active_file", "inactive_file"))
            found.append((max(limit - used + cache, 0), os.path.join(folder, "memory.limit_in_bytes" if v1 else
                                                                       "memory.max") + " less what the group uses"))
    return min(found) if found else None


def cgroup_cpus():
    """(CPUs, the quota's file) of the tightest CPU quota of this process's control groups (docker --cpus, a
    Kubernetes CPU limit), or None where none sets one. Threads past it share its time: once a period's quota is spent
    the kernel stops them all until the next (100 ms), and torch's default thread count (the machine's cores) does
    not read it. cgroup v2's cpu.max "QUOTA PERIOD" ("max": none), v1's cpu.cfs_quota_us (-1: none) /
    cpu.cfs_period_us."""
    found = []
    for folder, v1 in cgroup_folders("cpu"):
        quota, period = [cgroup_number(folder, f"cpu.cfs_{n}_us") for n in ("quota", "period")] if v1 else \
            (cgroup_numbers(folder, "cpu.max") + [None, None])[:2]
        if quota and period:
            found.append((quota / period, os.path.join(folder, "cpu.cfs_quota_us" if v1 else "cpu.max")))
    return min(found) if found else None


def cgroup_folders(controller):
    """(folder, v1?) for each of this process's control groups that controller ("memory", "cpu") governs, from ours
    up to its mount's root; none where /proc/self/cgroup cannot be read."""
    try:
        with open(PROC_CGROUP) as f:
            groups = [line.rstrip("\n").split(":", 2) for line in f if line.count(":") >= 2]
    except OSError:
        return
    for _, controllers, path in groups:                        # "0::/path" (v2), "4:cpu,cpuacct:/path" (v1)
        v1 = controller in controllers.split(",")
        if controllers and not v1:
            continue
        root = CGROUP if not v1 else os.path.join(CGROUP, controllers if os.path.isdir(os.path.join(
            CGROUP, controllers)) else controller)             # v1: cpu,cpuacct/ (and often its link cpu/)
        parts = [p for p in path.split("/") if p]
        for i in range(len(parts), -1, -1):                    # a container's mount starts at its own group: the
            yield os.path.join(root, *parts[:i]), v1            # path's first folders are not there


def cgroup_number(folder, name):
    """The number a control group's file holds; None where the file is not there or says "max" (no limit)."""
    return (cgroup_numbers(folder, name) or [None])[0]


def cgroup_numbers(folder, name):
    """The numbers a control group's file holds, in order (cpu.max: quota, period), None for "max" or -1 (no limit);
    [] where the file is not there."""
    try:
        with open(os.path.join(folder, name)) as f:
            return [int(word) if word.isdigit() else None for word in f.read().split()]
    except OSError:
        return []


def usable_cpus():
    """(CPUs, where that count comes from): those this process may run on (its affinity: taskset, a Slurm job's
    cpuset), or its control groups' CPU quota rounded up (cgroup_cpus; 0.5 CPU: 1) where that is fewer."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # (macOS)
    quota = cgroup_cpus()
    if quota and math.ceil(quota[0]) <= affinity:
        return math.ceil(quota[0]), f"its control group's quota of {quota[0]:g} CPU{'s' * (quota[0] != 1)}, {quota[1]}"
    return affinity, "its affinity"


def pick_threads(threads=None):
    """(CPU threads for torch, why): --threads where given; else the fewest of torch's default and the limits it does
    not follow (usable_cpus, and OMP_NUM_THREADS, MKL_NUM_THREADS and SLURM_CPUS_PER_TASK where set: the user's or
    the job's choice). why names the limit that chose, where it is below torch's default; else ""."""
    if threads:
        return threads, ""
    default, (cpus, where) = torch.get_num_threads(), usable_cpus()
    limits = [(default, ""), (cpus, f"the {cpus} CPU{'s' * (cpus != 1)} this process may use: {where}")]
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        first = os.environ.get(name, "").split(",")[0].strip()  # (OMP's "4,2": 4 at the outer level)
        if first.isascii() and first.isdigit() and int(first) > 0:  # (isdigit alone: "²", int()'s ValueError)
            limits.append((int(first), f"{name}={first}"))
    n, why = min(limits, key=lambda limit: limit[0])          # (a tie: the first, torch's default, says nothing)
    return n, f"{why}; torch's default: {default}" if n < default else ""


def use_threads(threads=None, file=None):
    """torch.set_num_threads(pick_threads(threads)), and a line that says why (to file) where a limit torch does not
    follow chose fewer than its default ("threads 2 (the 2 CPUs ... cpu.max; torch's default: 64)")."""
    n, why = pick_threads(threads)
    torch.set_num_threads(n)
    print(f"threads {n} ({why})", file=file) if why else None
    return n


def cpus_said(threads=None):
    """A benchmark's line on the CPU its figures come from: the threads (pick_threads' where not given: train.py's),
    the CPUs this process may use and why (a container's quota, read as such), the bf16 units --dtype auto reads."""
    threads, (cpus, where) = threads or pick_threads()[0], usable_cpus()
    return f"CPU: {threads} thread{'s' * (threads != 1)}, {cpus} CPU{'s' * (cpus != 1)} this process may use " \
        f"({where}); bf16 units: {', '.join(cpu_bf16_units()) or 'none'} (what --dtype auto reads)"


def cgroup_stat(folder):
    """A control group's memory.stat as {key: bytes}; {} where it cannot be read."""
    try:
        with open(os.path.join(folder, "memory.stat")) as f:
            return {k: int(v) for k, v in (line.split() for line in f if len(line.split()) == 2) if v.isdigit()}
    except OSError:
        return {}


def peak_mem_mib(device):
    """The peak in MiB (to 0.1): CUDA, torch's allocator; CPU, the resident high-water mark VmHWM (ru_maxrss where there
    is no /proc: on Linux it also counts the parent's size at fork, for a process started by a big one); None where
    neither is there (Windows: no /proc, no resource module)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    if resident_bytes("VmHWM"):
        return round(resident_bytes("VmHWM") / 2**20, 1)
    if resource is None:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss     # KiB on Linux, bytes on macOS
    return round(rss / 2**20 if sys.platform == "darwin" else rss / 1024, 1)


def data_bytes(args):
    """What the data this run reads and tokenizes will hold in this process's memory: DATA_PER_BYTE of its task x its
    files' size (0 while they are not on disk); 0 on a GPU, whose memory the plan counts (the examples stay in the
    host's)."""
    if torch.device(args.device).type != "cpu":
        return 0
    kind, path = data.task_kind(args.data), data.cache_dir("data", "alpaca_data.json") if args.data == "alpaca" else \
        args.data
    if kind == "glue":
        path = os.path.join(args.data_dir or data.cache_dir("glue"), data.GLUE[args.data[5:]][0]) if \
            args.data[5:] in data.GLUE else ""
    elif kind == "seq2seq":
        path = args.data_dir or data.cache_dir("wmt16-en-ro")
    elif args.data in ("squad", "squad-gen"):                  # (counted 0: SQuAD's 88k windows held 1.9 GB)
        path = args.data_dir or data.cache_dir("squad")
    per_byte = DATA_PER_BYTE["squad-gen" if args.data == "squad-gen" else kind]
    if os.path.isdir(path):
        return per_byte * sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return per_byte * os.path.getsize(path) if os.path.isfile(path) else 0


def lines(parts, available=None, why=""):
    """The plan as two printable lines: each part (GiB, or MiB for a plan under 1 GiB), the total, the memory
    available."""
    need = sum(parts.values())
    unit, name, digits = (GiB, "GiB", 2) if need >= GiB else (MiB, "MiB", 0)
    shown = "  ".join(f"{k} {v / unit:.{digits}f}" for k, v in parts.items() if round(v / unit, digits))
    free = f"{available / GiB:.1f} GiB available ({why})" if available is not None else why
    return [f"memory plan ({name}): {shown}", f"memory plan: {need / unit:.{digits}f} {name} at the peak; {free}"]


# ----------------------------------------------------------------------------------------------------
# Settings that fit: --quant auto / --checkpointing auto, and the refusal of an explicit choice that does not fit

QUANTS, MODES = ("none", "nf4"), ("none", "selective", "full")  # each list: the faster (and exact) setting first


def total(config, args, targets, data_bytes, runtime, **change):
    """The plan's total in bytes for args with some flags changed (quant=..., checkpointing=...)."""
    return sum(estimate(config, argparse.Namespace(**{**vars(args), **change}), targets, data_bytes, runtime).values())


def choose(config, args, targets, available, data_bytes, runtime, preset=None):
    """(quant, checkpointing, [why each]) for --quant/--checkpointing auto; explicit values are kept. A preset of the
    paper's (PAPER_PRESETS) training an adapter gets its recipe: NF4 and selective recomputation (full if selective
    does not fit); --method full never NF4 (as its refusal of --quant nf4).
    Elsewhere the fastest setting whose plan fits in MARGIN x the memory available; unknown memory: the fastest."""
    paper = preset in PAPER_PRESETS and args.method != "full"  # full fine-tuning: NF4 codes have no gradient
    stored = args.method != "full" and stored_base(args.model) is not None  # a 4-bit checkpoint: NF4 as it is
    quants = [args.quant] if args.quant != "auto" else ["none"] if args.method == "full" else ["nf4"] if paper or \
        stored else list(QUANTS)
    modes = [args.checkpointing] if args.checkpointing != "auto" else ["selective", "full"] if paper else list(MODES)
    tried = []                                                 # (quant, checkpointing, bytes), in order of preference
    for q, m in itertools.product(quants, modes):
        tried.append((q, m, total(config, args, targets, data_bytes, runtime, quant=q, checkpointing=m)))
        if available is None or tried[-1][2] <= MARGIN * available:
            break
    q, m, _ = tried[-1]
    no = lambda t: f"{t[2] / GiB:.1f} GiB, more than the {MARGIN * available / GiB:.1f} usable ({MARGIN:.0%} of " \
        f"{available / GiB:.1f} GiB available)"  # noqa: E731
    other_q, other_m = [t for t in tried if t[0] != q], [t for t in tried if t[0] == q and t[1] != m]
    why_q = f"--quant {q}" if args.quant != "auto" else f"the paper's recipe for {preset}" if paper else \
        f"the base's files are NF4 already ({preset}: a bitsandbytes 4-bit checkpoint): loaded as stored, nothing " \
        "quantized" if stored else \
        f"--quant {other_q[-1][0]} would need {no(other_q[-1])}" if other_q else "the exact weights"
    why_m = f"--checkpointing {m}" if args.checkpointing != "auto" else \
        f"{other_m[-1][1]} would need {no(other_m[-1])}" if other_m else \
        "the paper's recipe (selective recomputation)" if paper else "the fastest"
    if available is None and "auto" in (args.quant, args.checkpointing):
        why_m += " (memory available unknown: chosen without the check)"
    return q, m, [why_q, why_m]


def settle(config, args, targets, available, data_bytes, runtime):
    """--quant/--checkpointing auto decided (choose) and set in args; where selective does not fit and full does, the
    fewest --full-blocks with which selective fits. Returns the two lines that say what was chosen and why."""
    auto = args.checkpointing == "auto"
    args.quant, args.checkpointing, why = choose(config, args, targets, available, data_bytes, runtime, args.model)
    if auto and args.checkpointing == "full" and available is not None:  # between the two: fewest blocks replayed whole
        args.full_blocks = fewest_full_blocks(config, args, targets, available, data_bytes, runtime)
        if args.full_blocks:
            args.checkpointing = "selective"
            why[1] += f"; {args.full_blocks} of {layers(config)} blocks replayed whole fit"
    blocks = f", the first {args.full_blocks} blocks full" if args.full_blocks else ""
    stored = stored_base(args.model)                          # (its double quantization is the file's)
    dq = "" if stored and not stored[1] else " with double quantization"
    return [(f"NF4 base{dq}: " if args.quant == "nf4" else "no quantization: ") + why[0],
            f"checkpointing {args.checkpointing}{blocks}: {why[1]}"]


def fewest_full_blocks(config, args, targets, available, data_bytes, runtime):
    """For --checkpointing auto when selective does not fit and full does: the fewest blocks replayed whole
    (--full-blocks) with which selective fits in MARGIN x the memory available, by bisection (the plan shrinks as the
    count grows); 0 when none does."""
    def fits(n):
        return total(config, args, targets, data_bytes, runtime, checkpointing="selective", full_blocks=n) <= \
            MARGIN * available
    lo, hi = 1, layers(config) - 1
    if hi < lo or not fits(hi):
        return 0
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
    return lo


def fitting(config, args, targets, available, data_bytes, runtime):
    """The settings (flags) whose plan fits the memory available, fastest first, with their totals in GiB."""
    out = []
    for q in QUANTS if args.method != "full" else ("none",):
        for m in MODES:
            t = total(config, args, targets, data_bytes, runtime, quant=q, checkpointing=m)
            if t <= MARGIN * available:
                out.append(f"--quant {q} --checkpointing {m} ({t / GiB:.1f} GiB)")
    return out


def check_fits(parts, config, args, targets, available, data_bytes, runtime):
    """Refuse (unless --force) a plan of parts that needs more than the memory available, naming the settings that
    fit, or what would have to change."""
    need = sum(parts.values())
    if available is None or need <= available or args.force:
        return
    fits = fitting(config, args, targets, available, data_bytes, runtime)
    weights = sum(parts[k] for k in ("runtime", "base", "embeddings", "adapter"))
    raise UserError(f"the memory plan needs {need / GiB:.1f} GiB and {available / GiB:.1f} GiB is available: --quant "
                    f"{args.quant} --checkpointing {args.checkpointing} does not fit. " + (
                        f"Settings that fit: {'; '.join(fits)}" if fits else "No --quant/--checkpointing setting "
                        "fits: try a smaller --batch-size or --seq-len" if weights <= available else
                        f"No setting fits: the weights alone (base, embeddings, adapter) take {weights / GiB:.1f} "
                        f"GiB; {args.model} needs a machine with more memory") + "; or --force to try anyway")


if __name__ == "__main__":  # (had no command line: `python plan.py` printed nothing and exited 0)
    free, where = available_bytes("cpu")
    print(f"this machine: {'unknown' if free is None else f'{free / GiB:.1f} GiB'} available ({where}); a run's plan: "
          "python train.py --model NAME --data DATA [its flags] prints it before a weight is read or fetched, and "
          "stops there while the weights are not in the cache (docs/memory-plan.md)")
