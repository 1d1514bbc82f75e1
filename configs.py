"""configs.py: what each backbone's numbers are, the published presets, and config.json read as transformers reads it.

- One dataclass per architecture; model.py builds the modules from its fields. LlamaConfig (Touvron et al. 2023; also
  Mistral's, Qwen2's and Qwen3's checkpoints: a sliding window, q/k/v biases, q/k norms), GPT2Config, EncoderConfig
  (RoBERTa and BERT), T5Config and MT5Config. Their defaults are a toy that runs on a laptop CPU; PRESETS hold the
  published shapes, looked up by exact key (get_config).
- config.json <-> a config: each class's table HF (our field -> config.json's key) is read by read_hf and written by
  write_hf, an alias key (ALIASES: transformers' attribute_map, GPT-2's hidden_size for n_embd) winning where written;
  from_hf / to_hf write out by hand only what a table cannot say (RoPE scaling, sliding windows, heads,
  architectures). Every field that changes the computation is read as transformers reads it (activations, MLP widths,
  attention scales, eps, RoPE base, ...) or refused by name (refuse_unsupported); numbers that cannot describe a model
  are refused naming the file and the field (check_config), before from_hf reads them and after.
- What a config allows: positions (the longest sequence where positions are learned), check_window (a sliding window
  lorasp does not implement), config_dtype (the dtype config.json asks to compute in).

Leaves out: Meta's params.json and GGUF metadata (checkpoint.py and ggufread.py read them into LlamaConfig's
fields), tokenizer configs (tokenizer.py), generation_config.json.

Run `python configs.py` to list the presets, each read back from the config.json it writes.
"""
import argparse
import math
from dataclasses import dataclass, fields, replace
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F

from data import UserError

# ----------------------------------------------------------------------------------------------------
# config.json's vocabularies (activations, RoPE scalings), and reading it through a table

def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")  # GPT-2's "gelu_new"


# config.json's activation names (transformers' ACT2FN keys) -> the function; "gelu" is the exact (erf) GELU. Aliases
# as ACT2FN has them: "gelu_python" is erf GELU in Python, "gelu_fast" the tanh formula rearranged, "swish" nn.SiLU
ACT = {"relu": F.relu, "gelu": F.gelu, "gelu_python": F.gelu, "gelu_new": gelu_tanh, "gelu_fast": gelu_tanh,
       "gelu_pytorch_tanh": gelu_tanh, "silu": F.silu, "swish": F.silu}

# rope_type -> the numbers it needs. Not "dynamic": transformers' frequencies then follow the longest sequence a model
# has seen so far (state kept between calls), so the same tokens get other logits later
ROPE_TYPES = dict(default=(), linear=("factor",), llama3=("factor", "low_freq_factor", "high_freq_factor"),
                  yarn=("factor",))


# config.json's is_causal, which transformers 5 reads in every model's forward (masking_utils, SDPA's flag): false
# makes a decoder attend both ways (as embedding models use it), true an encoder causally; null is as if absent. The
# values a decoder may carry (an encoder: None or False; T5, both kinds: None)
CAUSAL = (None, True)


def refuse_unsupported(c, **supported):
    """Refuse a config.json field that changes the computation in a way these backbones don't implement, naming it
    and its value (read silently, the logits would be wrong). supported: key -> (transformers' default, values)."""
    for key, (default, values) in supported.items():
        if c.get(key, default) not in values:
            raise NotImplementedError(f"{key} = {c.get(key, default)!r} is not supported (supported: "
                                      f"{', '.join(map(repr, values))})")


def hf_num_labels(c):
    """A classifier's outputs as transformers 5 counts them (num_labels where written, over id2label's entries; else
    id2label's entries, else 2); 0 where the architecture is no *ForSequenceClassification (no head to load)."""
    if not any(a.endswith("ForSequenceClassification") for a in c.get("architectures") or []):
        return 0
    n = c.get("num_labels")
    return n if type(n) is int else len(c["id2label"]) if c.get("id2label") else 2


def id2label(num_labels):
    """The labels a classifier's config.json names (transformers counts its outputs by them)."""
    return {"id2label": {i: f"LABEL_{i}" for i in range(num_labels)}} if num_labels else {}


def hf_aliases(cls, c):
    """config.json's dict c with cls.ALIASES applied as transformers' attribute_map applies them: an alias key
    (GPT-2's hidden_size for n_embd, ...) is read as the key it names, and wins over it where both are written."""
    return c | {key: c[alias] for alias, key in cls.ALIASES.items() if alias in c}


def read_hf(cls, c, **given):
    """cls from config.json's dict c through its table HF (our field -> config.json's key): the fields `given` (read
    by hand), the others from their keys as written; an absent key leaves the field's default (where that is not
    transformers', from_hf gives the field), an absent cls.REQUIRED key is an error."""
    c = hf_aliases(cls, c)
    for key in cls.REQUIRED:
        if key not in c:
            raise KeyError(key)  # (load_pretrained: "field ... is missing")
    return cls(**{f: c[key] for f, key in cls.HF.items() if key in c and f not in given} | given)


def write_hf(config):
    """The table's part of config.json: each field under its key."""
    return {key: getattr(config, f) for f, key in config.HF.items()}


# ----------------------------------------------------------------------------------------------------
# The configs and their presets

@dataclass
class LlamaConfig:
    model_type: ClassVar[str] = "llama"
    vocab_size: int = 256     # defaults are a toy that runs on a laptop CPU
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_kv_head: int = 2        # < n_head: grouped-query attention (Llama-2-70B, TinyLlama, SmolLM2)
    n_ffn: int = 176          # SwiGLU hidden size
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 2048   # the context it was trained to (RoPE needs no table): perplexity's windows, notes
    tie_embeddings: bool = False
    bias: bool = False        # biases on q/k/v/o (HF's attention_bias)
    head_dim: Optional[int] = None       # None: n_embd // n_head; else q_proj is C -> n_head * head_dim
    rope_scaling: Optional[dict] = None  # transformers' rope_parameters less theta (rope_inv_freq); None: plain RoPE
    sliding_window: Optional[int] = None  # Mistral's (Qwen2's): a token sees the last N; sequences of <= N only
    qkv_bias: bool = False    # biases on q/k/v but not o (Qwen2)
    layer_types: Optional[tuple] = None  # Qwen2's window layers ("sliding_attention"); None: all (ours refuses past
                                         # the window on every layer: written back so transformers slides the same)
    qk_norm: bool = False     # an RMSNorm over each head's q and k before RoPE (Qwen3)
    padding_idx: Optional[int] = None  # config.json's pad_token_id: a row whose lookups give it no gradient (HF's)
    HF: ClassVar[dict] = dict(  # our field -> config.json's key
        vocab_size="vocab_size", n_layer="num_hidden_layers", n_embd="hidden_size", n_head="num_attention_heads",
        n_kv_head="num_key_value_heads", n_ffn="intermediate_size", norm_eps="rms_norm_eps", rope_theta="rope_theta",
        max_seq_len="max_position_embeddings", tie_embeddings="tie_word_embeddings", bias="attention_bias")
    REQUIRED: ClassVar[tuple] = ("vocab_size", "num_hidden_layers", "hidden_size", "num_attention_heads",
                                 "intermediate_size")
    ALIASES: ClassVar[dict] = {}  # transformers' attribute_map: alias key -> the key it stands for (GPT-2's, T5's)
    LAYERS: ClassVar[dict] = dict(n_layer=r"(?:^|\.)layers\.(\d+)\.")  # a layer count -> its blocks' tensor names,
    # the block index caught (model.layers.3.mlp.up_proj.weight; Meta's layers.3.): layer_counts

    @classmethod
    def from_hf(cls, c):
        """As transformers reads it: rope_scaling, else rope_parameters (transformers 5); theta there, else on top."""
        rope = dict(c.get("rope_scaling") or c.get("rope_parameters") or {})
        theta, kind = rope.pop("rope_theta", c.get("rope_theta", 10000.0)), rope.pop("type", "default")
        kind = rope.setdefault("rope_type", kind)
        refuse_unsupported(rope, rope_type=("default", tuple(ROPE_TYPES)), partial_rotary_factor=(1.0, (1.0,)))
        for key in ROPE_TYPES[kind]:
            if key not in rope:
                raise KeyError(f"rope_scaling.{key}")  # (load_pretrained: "field ... is missing")
            if type(rope[key]) not in (int, float) or not rope[key] > 0:
                raise ValueError(f"rope_scaling.{key} = {rope[key]!r} must be a number > 0")
        arch = c.get("model_type")
        longest = c.get("max_position_embeddings", dict(mistral=131072, qwen2=32768, qwen3=32768).get(arch, 2048))
        if kind in ("llama3", "yarn"):  # (a top-level original_max_position_embeddings wins, as Phi-3's)
            rope["original_max_position_embeddings"] = c.get("original_max_position_embeddings") or rope.get(
                "original_max_position_embeddings", longest)  # (absent: each transformers class's default)
        if arch in ("mistral", "qwen2", "qwen3"):  # their transformers classes never read these (Qwen3: all four
            unread = ("mlp_bias",) if arch == "qwen3" else ("attention_bias", "mlp_bias")  # q/k/v/o have a bias)
            c = {k: v for k, v in c.items() if k not in unread}
        silu = tuple(k for k, f in ACT.items() if f is F.silu)  # "silu", "swish": the SwiGLU this Llama fuses
        refuse_unsupported(c, mlp_bias=(False, (False, None)), hidden_act=("silu", silu),
                           partial_rotary_factor=(None, (None, 1.0)), is_causal=(None, CAUSAL),
                           attention_dropout=(0.0, (0.0, None)))  # (training: this Llama has no dropout)
        hd = c.get("head_dim", 128 if arch == "qwen3" else None)  # (Qwen3Config's default: 128, whatever the width)
        hd = None if hd == c["hidden_size"] / c["num_attention_heads"] else hd  # None: hidden_size / heads (what
        # transformers 5 always writes)
        if hd and hd % 2:
            raise ValueError(f"head_dim = {hd} must be even (RoPE rotates pairs of dimensions)")
        kv = c.get("num_key_value_heads", dict(mistral=8, qwen2=32, qwen3=32).get(arch))  # absent: each class's
        return read_hf(cls, c, n_kv_head=kv or c["num_attention_heads"], rope_theta=theta,  # default (null: all)
                       norm_eps=c.get("rms_norm_eps", 1e-6),  # transformers' LlamaConfig default (ours: Llama 2's)
                       max_seq_len=longest, head_dim=hd, rope_scaling=None if kind == "default" else rope,
                       sliding_window=cls.hf_window(c), qkv_bias=arch == "qwen2", layer_types=cls.hf_layer_types(c),
                       qk_norm=arch == "qwen3", padding_idx=cls.hf_padding_idx(c))

    @staticmethod
    def hf_padding_idx(c):
        """embed_tokens' padding_idx as transformers builds it from pad_token_id (-1: the last row, as nn.Embedding
        reads it); None if none, not an integer, or past the vocabulary (transformers cannot build that model). true or
        false is refused: transformers builds row 1 or 0 from it (Python's True is 1); here it was no row."""
        pad, vocab = c.get("pad_token_id"), c["vocab_size"]
        if type(pad) is bool:
            raise ValueError(f"pad_token_id = {pad!r} must be a token id (an integer) or null")
        return pad % vocab if type(pad) is int and -vocab <= pad < vocab else None

    @staticmethod
    def hf_window(c):
        """The sliding window transformers applies, None if none: a Mistral's sliding_window (absent: MistralConfig's
        4096); a Qwen2's or Qwen3's if use_sliding_window and a layer slides (layer_types; else those from
        max_window_layers, 28 if absent), its sliding_window (absent: 4096). Refused past it on every layer."""
        if c.get("model_type") == "mistral":
            return c.get("sliding_window", 4096)
        if c.get("model_type") not in ("qwen2", "qwen3") or not c.get("use_sliding_window"):
            return None
        if type(first := c.get("max_window_layers", 28)) is not int:
            raise ValueError(f"max_window_layers = {first!r} must be an integer (the first layer with a window)")
        return c.get("sliding_window", 4096) if LlamaConfig.hf_layer_types(c) else None

    @staticmethod
    def hf_layer_types(c):
        """A Qwen2's (or Qwen3's) attention per layer as Qwen2Config reads it: layer_types, else a window from
        max_window_layers on (28 if absent); None where no window applies."""
        if c.get("model_type") not in ("qwen2", "qwen3") or not c.get("use_sliding_window") or \
                c.get("sliding_window", 4096) is None:
            return None
        first, n = c.get("max_window_layers", 28), c["num_hidden_layers"]
        types = c.get("layer_types") or ["sliding_attention" if i >= first else "full_attention" for i in range(n)]
        return tuple(types) if "sliding_attention" in types else None

    @property
    def hd(self):
        return self.head_dim or self.n_embd // self.n_head

    def to_hf(self):
        """config.json as transformers reads it: a Llama, a Mistral (a sliding window), a Qwen2 (q/k/v biases) or a
        Qwen3 (q/k norms; head_dim always written: absent, Qwen3Config's is 128)."""
        hf = dict(architectures=["LlamaForCausalLM"], model_type="llama", **write_hf(self), hidden_act="silu",
                  **({"head_dim": self.hd} if self.head_dim or self.qk_norm else {}),
                  **({"pad_token_id": self.padding_idx} if self.padding_idx is not None else {}),
                  **({"rope_scaling": self.rope_scaling} if self.rope_scaling else {}))
        if self.qkv_bias or self.qk_norm:  # its window on the layers it came with (every layer if none said), in both
            types = list(self.layer_types or ["sliding_attention"] * self.n_layer) if self.sliding_window else None
            qwen = "Qwen3" if self.qk_norm else "Qwen2"                                                    # spellings
            hf |= dict(architectures=[qwen + "ForCausalLM"], model_type=qwen.lower(), layer_types=types,
                       sliding_window=self.sliding_window, use_sliding_window=bool(self.sliding_window),
                       max_window_layers=types.index("sliding_attention") if types else self.n_layer)
        elif self.sliding_window:
            hf |= dict(architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=self.sliding_window)
        return hf


@dataclass
class GPT2Config:
    model_type: ClassVar[str] = "gpt2"
    vocab_size: int = 256
    n_positions: int = 128
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    norm_eps: float = 1e-5
    dropout: float = 0.0      # GPT-2 uses one rate (0.1) for embeddings, attention probabilities and residuals
    num_labels: int = 0       # > 0: a sequence-classification head (`score`)
    tie_word_embeddings: bool = True  # lm_head is wte (as released); False: its own lm_head.weight
    activation_function: str = "gelu_new"  # the MLP's (a key of ACT): tanh-GELU as released
    n_inner: Optional[int] = None  # the MLP's width; None: 4 * n_embd
    scale_attn_weights: bool = True  # attention logits / sqrt(head size); False: unscaled
    scale_attn_by_inverse_layer_idx: bool = False  # and / (block index + 1) (Stanford CRFM's Mistral runs)
    initializer_range: float = 0.02  # the std of a fresh classifier head (score), as transformers draws it
    HF: ClassVar[dict] = dict(
        vocab_size="vocab_size", n_positions="n_positions", n_layer="n_layer", n_embd="n_embd", n_head="n_head",
        norm_eps="layer_norm_epsilon", dropout="resid_pdrop", tie_word_embeddings="tie_word_embeddings",
        activation_function="activation_function", n_inner="n_inner", scale_attn_weights="scale_attn_weights",
        scale_attn_by_inverse_layer_idx="scale_attn_by_inverse_layer_idx", initializer_range="initializer_range")
    REQUIRED: ClassVar[tuple] = ("vocab_size", "n_positions", "n_layer", "n_embd", "n_head")
    ALIASES: ClassVar[dict] = dict(hidden_size="n_embd", max_position_embeddings="n_positions",
                                   num_attention_heads="n_head", num_hidden_layers="n_layer")
    LAYERS: ClassVar[dict] = dict(n_layer=r"(?:^|\.)h\.(\d+)\.")  # (transformer.h.0.attn.c_attn.weight; h.0. bare)

    @classmethod
    def from_hf(cls, c):
        p = c.get("resid_pdrop", 0.1)  # one dropout rate: embeddings, attention probabilities, residuals
        refuse_unsupported(c, activation_function=("gelu_new", tuple(ACT)), add_cross_attention=(False, (False, None)),
                           embd_pdrop=(0.1, (p,)), attn_pdrop=(0.1, (p,)),  # (0.1: transformers' default)
                           is_causal=(None, CAUSAL))
        return read_hf(cls, c, dropout=p, num_labels=hf_num_labels(c))

    def to_hf(self):
        head = "GPT2ForSequenceClassification" if self.num_labels else "GPT2LMHeadModel"
        return dict(architectures=[head], model_type="gpt2", **write_hf(self), embd_pdrop=self.dropout,
                    attn_pdrop=self.dropout, **id2label(self.num_labels))


@dataclass
class EncoderConfig:
    """RoBERTa (Liu et al. 2019) and BERT (Devlin et al. 2019) share one post-LN encoder. RoBERTa's positions start
    after its padding id, it has one token type and no pooler; BERT has two types (segments A/B) and a pooler."""
    model_type: str = "bert"  # or "roberta"
    vocab_size: int = 256
    n_positions: int = 64     # RoBERTa: 512 + pad_id + 1
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_ffn: int = 256
    n_type: int = 2           # token types (type_vocab_size)
    norm_eps: float = 1e-12
    dropout: float = 0.1      # embeddings, attention probabilities, residual branches, the head (by default)
    pad_id: int = 0
    num_labels: int = 0       # > 0: a sequence-classification head (1: regression, STS-B)
    qa: bool = False          # a span head (extractive QA, SQuAD): qa_outputs
    hidden_act: str = "gelu"  # the MLP's activation (a key of ACT): erf-GELU as released
    classifier_dropout: Optional[float] = None  # the classifier head's dropout; None: `dropout`, as transformers
    initializer_range: float = 0.02  # the std of fresh heads, and of a pooler a checkpoint lacks (Bert.may_lack)
    HF: ClassVar[dict] = dict(  # our field -> config.json's key
        vocab_size="vocab_size", n_positions="max_position_embeddings", n_layer="num_hidden_layers",
        n_embd="hidden_size", n_head="num_attention_heads", n_ffn="intermediate_size", n_type="type_vocab_size",
        norm_eps="layer_norm_eps", dropout="hidden_dropout_prob", pad_id="pad_token_id", hidden_act="hidden_act",
        classifier_dropout="classifier_dropout", initializer_range="initializer_range")
    REQUIRED: ClassVar[tuple] = ("vocab_size", "max_position_embeddings", "num_hidden_layers", "hidden_size",
                                 "num_attention_heads", "intermediate_size")  # (absent, ours would be a toy's)
    ALIASES: ClassVar[dict] = {}
    LAYERS: ClassVar[dict] = dict(n_layer=r"(?:^|\.)encoder\.layer\.(\d+)\.")

    @classmethod
    def from_hf(cls, c):
        p = c.get("hidden_dropout_prob", 0.1)
        refuse_unsupported(c, hidden_act=("gelu", tuple(ACT)), position_embedding_type=("absolute", ("absolute",)),
                           is_decoder=(False, (False, None)), is_causal=(None, (None, False)),  # (CAUSAL's)
                           attention_probs_dropout_prob=(0.1, (p,)))  # one rate
        pad = dict(pad_token_id=1) if c["model_type"] == "roberta" else {}  # transformers' default where absent
        qa = any(a.endswith("ForQuestionAnswering") for a in c.get("architectures") or [])
        return read_hf(cls, pad | {k: v for k, v in c.items() if v is not None},  # (a null: as if absent)
                       model_type=c["model_type"], num_labels=hf_num_labels(c), qa=qa)

    def to_hf(self):
        kind = "ForSequenceClassification" if self.num_labels else "ForQuestionAnswering" if self.qa else "Model"
        return dict(architectures=[self.model_type.capitalize() + kind], model_type=self.model_type,
                    attention_probs_dropout_prob=self.dropout, **write_hf(self), **id2label(self.num_labels))


@dataclass
class T5Config:  # fields named as in T5's config.json
    model_type: ClassVar[str] = "t5"
    vocab_size: int = 128
    d_model: int = 64
    d_kv: int = 16            # per-head size: num_heads * d_kv need not be d_model (t5-3b)
    d_ff: int = 128
    num_layers: int = 2       # encoder blocks
    num_decoder_layers: int = 2
    num_heads: int = 4
    relative_attention_num_buckets: int = 32  # half of them exact distances, half log-spaced up to the max distance
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"  # v1.0: relu(wi x); "gated-gelu" (v1.1, FLAN-T5): gelu(wi_0 x) * wi_1 x
    dense_act_fn: Optional[str] = None   # a key of ACT; None: feed_forward_proj's last word ("gated-gelu": the tanh
    is_gated_act: Optional[bool] = None  # GELU, gelu_new), as transformers reads it; config.json's own values win
    tie_word_embeddings: bool = True  # v1.0: lm_head is `shared`
    dropout_rate: float = 0.1  # embeddings, attention probabilities, feed-forward, residuals
    scale_decoder_outputs: Optional[bool] = None  # decoder output * d_model^-0.5 before lm_head (v1.0); None: as
    # tied, as transformers 4 read it (transformers 5 writes it, with tie_word_embeddings always true and lm_head kept
    # if stored)
    pad_id: ClassVar[int] = 0  # also the decoder's start token
    eos_id: ClassVar[int] = 1
    HF: ClassVar[dict]  # (below: every field under its own name)
    REQUIRED: ClassVar[tuple] = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")
    ALIASES: ClassVar[dict] = dict(hidden_size="d_model", num_attention_heads="num_heads",
                                   num_hidden_layers="num_layers", head_dim="d_kv")
    LAYERS: ClassVar[dict] = dict(num_layers=r"^encoder\.block\.(\d+)\.",
                                  num_decoder_layers=r"^decoder\.block\.(\d+)\.")
    LAYERS_FROM: ClassVar[dict] = dict(num_decoder_layers="num_layers")  # its count where config.json lacks the key

    @classmethod
    def from_hf(cls, c):
        refuse_unsupported(c, decoder_start_token_id=(0, (0, None)), pad_token_id=(0, (0, None)),  # our pad_id, eos_id
                           eos_token_id=(1, (1, None)), is_causal=(None, (None,)))  # (CAUSAL's: either way, one
        # of the two stacks would be the other's kind)
        c = hf_aliases(cls, c)  # (num_hidden_layers: num_layers, which num_decoder_layers defaults to)
        if not isinstance(c.get("feed_forward_proj", ""), str):
            raise ValueError(f"feed_forward_proj = {c['feed_forward_proj']!r} must be a string ('relu', 'gated-gelu', "
                             "...)")
        if "scale_decoder_outputs" in c and c["scale_decoder_outputs"] is None:  # (transformers: None, not scaled;
            c = c | dict(scale_decoder_outputs=False)                            # absent: as tied)
        config = read_hf(cls, c, num_decoder_layers=c.get("num_decoder_layers") or c["num_layers"])
        if config.dense_act_fn not in ACT:
            raise NotImplementedError(f"dense_act_fn = {config.dense_act_fn!r} (feed_forward_proj = "
                                      f"{config.feed_forward_proj!r}) is not supported ({', '.join(ACT)})")
        return config

    def __post_init__(self):
        if self.scale_decoder_outputs is None:
            self.scale_decoder_outputs = self.tie_word_embeddings
        act = self.feed_forward_proj.split("-")  # "relu", "gated-gelu", ...: transformers' reading
        if self.is_gated_act is None:
            self.is_gated_act = act[0] == "gated"
        if self.dense_act_fn is None:
            self.dense_act_fn = "gelu_new" if self.feed_forward_proj == "gated-gelu" else act[-1]

    def to_hf(self):
        return dict(architectures=["T5ForConditionalGeneration"], model_type="t5", **write_hf(self),
                    is_encoder_decoder=True, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


T5Config.HF = {f.name: f.name for f in fields(T5Config)}  # T5's fields are named as in its config.json


@dataclass
class MT5Config(T5Config):
    """mT5 (Xue et al. 2021): T5 v1.1's layers over a 250k vocabulary. transformers' MT5 reads config.json as T5
    does (its default feed_forward_proj: "gated-gelu") but never scales the decoder output, tied or not."""
    feed_forward_proj: str = "gated-gelu"

    @classmethod
    def from_hf(cls, c):
        return super().from_hf(c | dict(scale_decoder_outputs=False))

    def to_hf(self):
        return super().to_hf() | dict(architectures=["MT5ForConditionalGeneration"], model_type="mt5")


L2, G2 = dict(vocab_size=32000, max_seq_len=4096), dict(vocab_size=50257, n_positions=1024, dropout=0.1)
L3 = dict(vocab_size=128256, n_kv_head=8, rope_theta=500000.0, max_seq_len=131072)  # Llama 3.1 / 3.2 (Meta 2024)
L3_ROPE = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
               original_max_position_embeddings=8192)  # config.json's rope_scaling (3.2: factor 32)
RB = dict(model_type="roberta", vocab_size=50265, n_positions=514, n_type=1, norm_eps=1e-5, pad_id=1)
BT = dict(vocab_size=30522, n_positions=512)
T5P, V11 = dict(vocab_size=32128, d_kv=64), dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)
T5P12, T5P24 = dict(T5P, num_layers=12, num_decoder_layers=12), dict(T5P, num_layers=24, num_decoder_layers=24)
PRESETS = {  # the published shapes; the "-tiny" presets are for tests and demos
    "llama2-7b": LlamaConfig(**L2, n_layer=32, n_embd=4096, n_head=32, n_kv_head=32, n_ffn=11008),
    "llama2-13b": LlamaConfig(**L2, n_layer=40, n_embd=5120, n_head=40, n_kv_head=40, n_ffn=13824),
    "llama2-70b": LlamaConfig(**L2, n_layer=80, n_embd=8192, n_head=64, n_kv_head=8, n_ffn=28672),
    "llama3.2-1b": LlamaConfig(**L3, rope_scaling=L3_ROPE | dict(factor=32.0), n_layer=16, n_embd=2048, n_head=32,
                               n_ffn=8192, tie_embeddings=True),
    "llama3.2-3b": LlamaConfig(**L3, rope_scaling=L3_ROPE | dict(factor=32.0), n_layer=28, n_embd=3072, n_head=24,
                               n_ffn=8192, tie_embeddings=True),
    "llama3.1-8b": LlamaConfig(**L3, rope_scaling=L3_ROPE, n_layer=32, n_embd=4096, n_head=32, n_ffn=14336),
    "tinyllama-1.1b": LlamaConfig(vocab_size=32000, n_layer=22, n_embd=2048, n_head=32, n_kv_head=4, n_ffn=5632),
    "smollm2-135m": LlamaConfig(vocab_size=49152, n_layer=30, n_embd=576, n_head=9, n_kv_head=3, n_ffn=1536,
                                rope_theta=100000.0, max_seq_len=8192, tie_embeddings=True),
    "mistral-7b": LlamaConfig(vocab_size=32000, n_layer=32, n_embd=4096, n_head=32, n_kv_head=8, n_ffn=14336,
                              max_seq_len=32768, sliding_window=4096),  # v0.1: its window refuses --seq-len > 4096
    "qwen2.5-0.5b": LlamaConfig(vocab_size=151936, n_layer=24, n_embd=896, n_head=14, n_kv_head=2, n_ffn=4864,
                                norm_eps=1e-6, rope_theta=1e6, max_seq_len=32768, tie_embeddings=True, qkv_bias=True),
    "qwen3-0.6b": LlamaConfig(vocab_size=151936, n_layer=28, n_embd=1024, n_head=16, n_kv_head=8, n_ffn=3072,
                              norm_eps=1e-6, rope_theta=1e6, max_seq_len=40960, tie_embeddings=True, head_dim=128,
                              qk_norm=True),  # 16 heads x 128 = 2048 wide q over a 1024 model
    "llama-tiny": LlamaConfig(),
    "gpt2": GPT2Config(**G2, n_layer=12, n_embd=768, n_head=12),
    "gpt2-medium": GPT2Config(**G2, n_layer=24, n_embd=1024, n_head=16),
    "gpt2-large": GPT2Config(**G2, n_layer=36, n_embd=1280, n_head=20),
    "gpt2-xl": GPT2Config(**G2, n_layer=48, n_embd=1600, n_head=25),
    "gpt2-tiny": GPT2Config(),
    "roberta-base": EncoderConfig(**RB, n_layer=12, n_embd=768, n_head=12, n_ffn=3072),
    "roberta-large": EncoderConfig(**RB, n_layer=24, n_embd=1024, n_head=16, n_ffn=4096),
    "bert-base-uncased": EncoderConfig(**BT, n_layer=12, n_embd=768, n_head=12, n_ffn=3072),
    "bert-large-uncased": EncoderConfig(**BT, n_layer=24, n_embd=1024, n_head=16, n_ffn=4096),
    "all-minilm-l6-v2": EncoderConfig(**BT, n_layer=6, n_embd=384, n_head=12, n_ffn=1536),  # sentence-transformers'
    "roberta-tiny": EncoderConfig("roberta", n_type=1, norm_eps=1e-5, pad_id=1),
    "bert-tiny": EncoderConfig(),
    "t5-small": T5Config(**T5P, d_model=512, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8),
    "t5-base": T5Config(**T5P12, d_model=768, d_ff=3072, num_heads=12),
    "t5-large": T5Config(**T5P24, d_model=1024, d_ff=4096, num_heads=16),
    "flan-t5-base": T5Config(**T5P12, d_model=768, d_ff=2048, num_heads=12, **V11),
    "flan-t5-large": T5Config(**T5P24, d_model=1024, d_ff=2816, num_heads=16, **V11),
    "t5-tiny": T5Config(),
}


def get_config(name):
    """A fresh copy of a preset, looked up by its exact key."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
    return replace(PRESETS[name])


# config.json's model_type -> its config (model.MODELS: -> its backbone)
CONFIGS = {"llama": LlamaConfig, "mistral": LlamaConfig, "qwen2": LlamaConfig, "qwen3": LlamaConfig,
           "gpt2": GPT2Config, "roberta": EncoderConfig, "bert": EncoderConfig, "t5": T5Config,
           "mt5": MT5Config}  # (an MT5Config's model_type is "t5": a T5 for the rest of lorasp; a Mistral is a Llama
# with a sliding window, a Qwen2 one with q/k/v biases, a Qwen3 one with q/k norms)


# ----------------------------------------------------------------------------------------------------
# Checks: numbers that cannot describe a model, the dtype config.json asks for, the lengths a config allows

def config_problem(field, value):
    """What is wrong with a config value (None: nothing): integers >= 1 (num_labels, pad_id: >= 0), a finite eps > 0,
    a dropout rate in [0, 1), a RoPE base > 0, an initializer_range >= 0, a JSON true or false (a string "false" is
    true to Python)."""
    if field.type in (bool, Optional[bool]):
        return None if type(value) is bool or value is None and field.type != bool else "must be true or false"
    if field.type in (int, Optional[int]):
        if value is None and field.type != int:
            return None                                 # (n_inner: None is 4 * n_embd)
        low = 0 if field.name in ("num_labels", "pad_id", "padding_idx") else 1
        return None if type(value) is int and value >= low else f"must be an integer >= {low}"
    if field.type in (float, Optional[float]):
        if value is None and field.type != float:
            return None                                 # (classifier_dropout: None is the body's rate)
        if type(value) not in (int, float) or not math.isfinite(value):
            return "must be a finite number"
        if "dropout" in field.name:
            return None if 0 <= value < 1 else "must be in [0, 1)"
        if field.name == "initializer_range":           # a std (0: transformers' 0.02)
            return None if value >= 0 else "must be >= 0"
        return None if value > 0 or not ("eps" in field.name or "theta" in field.name) else "must be > 0"
    return None


def check_config(config, source, raw=None):
    """Refuse a config whose numbers cannot describe the model, naming the file and its field: config.json's raw
    values (config: its class) before from_hf reads them (no KeyError or ZeroDivisionError from inside), then the built
    config's (raw, where given: the keys named as config.json spells them)."""
    built = not isinstance(config, type)
    cls, names = type(config) if built else config, config.HF
    key_of = lambda f: hf_key(cls, f, raw)  # noqa: E731
    for f in fields(cls):
        required, key = names.get(f.name, f.name) in cls.REQUIRED, key_of(f.name)  # (GPT-2's hidden_size: an alias)
        value = getattr(config, f.name) if built else raw.get(key)
        if not built and value is None and not (required and key in raw):
            continue                                   # absent (or null): from_hf's default, or its KeyError
        if problem := config_problem(f, value):
            raise ValueError(f"{source}: {key} = {value!r} {problem}")
    if not built:
        return
    qwen = getattr(config, "head_dim", None) and (getattr(config, "qk_norm", 0) or getattr(config, "qkv_bias", 0))
    heads = [(f, n) for f, n in (("n_embd", "n_head"), ("n_head", "n_kv_head")) if hasattr(config, n) and not (
        f == "n_embd" and qwen)]  # (q: C -> heads x head_dim) Qwen2's and Qwen3's classes take any width then; Llama's
    # refuses it (and to_hf writes a Llama)
    for a, b in heads:
        if getattr(config, a) % getattr(config, b):
            raise ValueError(f"{source}: {key_of(a)} = {getattr(config, a)} is not a multiple of "
                             f"{key_of(b)} = {getattr(config, b)}")
    if isinstance(config, EncoderConfig) and config.pad_id >= config.vocab_size:  # (else nn.Embedding's assert)
        raise ValueError(f"{source}: pad_token_id = {config.pad_id} is not a row of the {config.vocab_size}-token "
                         "embedding (vocab_size)")
    if isinstance(config, LlamaConfig) and config.hd % 2:  # (else a size mismatch deep in the first forward)
        raise ValueError(f"{source}: a head of {config.hd} dimensions (hidden_size / num_attention_heads) must be even "
                         "(RoPE rotates pairs of dimensions)")


def hf_key(cls, field, raw=None):
    """The config.json key transformers reads cls's field from: its table's, or an alias of it written in raw
    (config.json's dict; GPT-2's hidden_size for n_embd)."""
    key = cls.HF.get(field, field)
    return next((alias for alias, k in cls.ALIASES.items() if k == key and alias in (raw or {})), key)


def layer_counts(config, raw=None):
    """[(config.json's key, the config's layer count, a regex catching a block's index in its tensors' names[, where
    raw lacks the key (absent or null), what count is used instead: T5's num_layers for num_decoder_layers])], one a
    stack (T5: its encoder's and its decoder's), for checkpoint.check_layers."""
    cls, counts = type(config), []
    for f, pattern in config.LAYERS.items():
        key, stand_in = hf_key(cls, f, raw), getattr(cls, "LAYERS_FROM", {}).get(f)
        lacked = stand_in and raw is not None and raw.get(key) is None
        counts.append((key, getattr(config, f), pattern) + ((f"{'null' if key in raw else 'absent'}: "
                       f"{hf_key(cls, stand_in, raw)} = {getattr(config, stand_in)!r} is used",) if lacked else ()))
    return counts


def positions(config):
    """The most tokens a sequence may hold where positions are learned: GPT-2's and BERT's n_positions, RoBERTa's less
    pad_id + 1 (its positions start there: 512 of roberta-base's 514); None where they have no end (RoPE, T5's
    relative buckets). A longer sequence has no position embedding (an IndexError, deep in a forward)."""
    if config.model_type == "roberta":
        return config.n_positions - config.pad_id - 1
    return config.n_positions if config.model_type in ("bert", "gpt2") else None


def check_window(config, seq_len, name):
    """Refuse a --seq-len past a sliding window (Mistral, Qwen2), which these backbones do not implement: the forward
    would refuse it at the first batch that long."""
    if (window := getattr(config, "sliding_window", None)) and (seq_len or 0) > window:
        raise UserError(f"--seq-len {seq_len}: past {name}'s sliding window of {window} tokens, which lorasp does not "
                        f"implement; use --seq-len {window} or less")


def config_dtype(hf, source):
    """config.json's `dtype` (transformers 5) or `torch_dtype` (4), as from_pretrained's default dtype="auto" reads
    it: the dtype the model computes in, whatever the tensors are stored in; None if it names none."""
    key = "dtype" if hf.get("dtype") is not None else "torch_dtype"
    if (dtype := float_dtype(hf.get(key))) is None and hf.get(key) is not None:
        raise ValueError(f"{source}: {key} = {hf[key]!r} is not a torch floating-point dtype (bfloat16, float16, "
                         "float32)")
    return dtype


def float_dtype(name):
    """The floating-point torch dtype `name` is or names ("bfloat16", as transformers writes them), else None."""
    dtype = getattr(torch, name, None) if isinstance(name, str) else name
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else None


def main():
    """Each preset's architecture, read back from the config.json it writes (from_hf(to_hf(c)) == c)."""
    argparse.ArgumentParser(description="The presets, each read back from the config.json it writes").parse_args()
    for name, config in PRESETS.items():
        hf = config.to_hf()
        back = CONFIGS[hf["model_type"]].from_hf(hf)
        print(f"{name:20} {hf['architectures'][0]:30} {'read back the same' if back == config else 'DIFFERS'}")


if __name__ == "__main__":  # no flags: a typed one (--bogus) is refused, not ignored while the list prints
    from checks import console  # (here, not above: checks imports this file)
    console()                                                  # (line-buffered; UTF-8 where ASCII fails; no reader: on)
    main()
