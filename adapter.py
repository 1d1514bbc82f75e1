"""adapter.py: an adapter folder in PEFT's LoRA format, read and written by hand (no peft package).

    adapter_config.json          PEFT's LoraConfig: r, lora_alpha, target_modules, modules_to_save, ...
    adapter_model.safetensors    base_model.model.<module>.lora_A.weight (r, in) and .lora_B.weight (out, r): the
                                 values forward uses, so PEFT reproduces a LoRA-SP model's outputs in either mode
    lorasp_extras.safetensors    ours (EXTRAS_FILE): masks, raw packed and frozen entries, the LoRA-SP settings and
                                 what the adapter trained on (a file of its own: PEFT warns about unknown config keys)

- PEFT's rules for which modules an adapter names, as PEFT 0.21 reads them: `matches` (a name or its end),
  `targeted` (those, or "all-linear": every linear but the output layer and a task's head; `trained_whole`),
  `peft_target` (target_modules, exclude_modules, layers_to_transform), `rank_alpha` (rank_pattern, alpha_pattern,
  use_rslora), `saved_whole` (modules_to_save and the task's heads). Where PEFT would read a folder differently from
  us, or its own versions would (`old_alphas`), the folder is an error, never a silent guess; so is a config field we
  do not know (KNOWN), which PEFT ignores with a warning; so is a task adapter (task_type SEQ_CLS, TOKEN_CLS,
  QUESTION_ANS) on a model without its task's head (`headless`), which PEFT loads onto a causal LM without a word.
- `write_adapter` replaces the folder whole (checkpoint.replace_dir), PEFT's file a tensor at a time (`write_planned`:
  each layer's dense A and B made as written); EXTRAS_FILE holds each layer's own parameters and buffers by name
  (`extras_of`, `restore`). `read_adapter` checks each file (a config other than plain LoRA's,
  PLAIN below, is refused), `adapted_names` checks the tensors against the config.
- `save_layers`, `load_layers`: a model's LoRASPLinear layers to and from the folder, the work of lorasp.py's
  save_adapter / load_adapter (which pass the layer class in: this file imports nothing of lorasp's);
  `all_or_nothing`: a failure while the layers are built (load_layers', apply_lorasp's) leaves the model as it was.
- `adapter_digest`: an adapter's files hashed; `merges`, `merged_already`: what an export.py folder's MERGED file says
  it holds merged, and whether an adapter is one of those (evalcli.base_quant refuses to apply it again).
- `weights_probe`, `probe_verdict`: the base known by its weights, not its files: save_layers keeps a few hundred sums
  of the weights it trained on and of its update in EXTRAS_FILE's base record; evalcli.base_weights compares them once
  the adapter loads: the same weights (a .bin, a GGUF of them), the base with this update merged in (refused: an
  export copied or converted without its MERGED file), or other weights.
Left out: PEFT's other methods (DoRA, IA3, prompt tuning, ...) and adapters on biases, embeddings or convolutions.
Not run on its own: `python train.py` saves adapters, `python eval.py --adapter DIR` loads them;
tests/test_lorasp_adapter.py and tests/test_peft_wild.py check them against peft.
"""
import copy
import functools
import hashlib
import itertools
import json
import math
import numbers
import os
import re
import weakref

import torch

from checkpoint import (atomic_write, check_finite, load_safetensors, read_json, read_safetensors_header, replace_dir,
                        safetensors_header, save_safetensors, torch_load, trim_heap)

EXTRAS_FILE = "lorasp_extras.safetensors"  # masks, raw packed entries and settings: what PEFT's files cannot hold
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", EXTRAS_FILE, "adapter_model.bin")  # ours
# export.py's record, beside the merged weights, of the adapters merged into them and the base they came from (a file
# of its own: transformers keeps config.json's unknown keys through save_pretrained, onto weights they may not describe;
# config.json is in the base's fingerprint, this file is not)
MERGED = "lorasp_merged.json"
PEFT = "base_model.model."                 # the prefix of every tensor name in PEFT's adapter files
ALL_LINEAR = "all-linear"                  # PEFT's target_modules for every linear layer but the output one (QLoRA's)
# adapter_config.json fields PEFT honours and load_adapter does not, with the values that change nothing: any other
# is refused. init_lora_weights: PEFT redoes pissa, olora, loftq, corda ... on load, changing W itself
UNSET = (None, False, "none", [], {})
PLAIN = dict(bias=UNSET, use_dora=UNSET, lora_bias=UNSET, use_qalora=UNSET, layer_replication=UNSET,
             alora_invocation_tokens=UNSET, megatron_config=UNSET, trainable_token_indices=UNSET,
             target_parameters=UNSET, use_bdlora=UNSET, arrow_config=UNSET, kasa_config=UNSET, velora_config=UNSET,
             monteclora_config=UNSET,
             init_lora_weights=(None, True, False, "gaussian", "orthogonal"))
# the heads PEFT's PeftModelFor<task> adds to modules_to_save as it loads, whatever adapter_config.json says
TASK_HEADS = dict(SEQ_CLS=["classifier", "score"], TOKEN_CLS=["classifier", "score"], QUESTION_ANS=["qa_outputs"])
# the other fields PEFT (up to 0.21) writes, each honoured above or of no effect on a plain LoRA adapter's outputs; a
# field not known here is refused unless unset: PEFT ignores it (with a warning), yet a newer PEFT's may change the math
KNOWN = {*PLAIN, "peft_type", "task_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision",
         "inference_mode", "r", "lora_alpha", "lora_dropout", "fan_in_fan_out", "use_rslora", "target_modules",
         "exclude_modules", "layers_to_transform", "layers_pattern", "rank_pattern", "alpha_pattern", "modules_to_save",
         "megatron_core", "qalora_group_size", "runtime_config", "ensure_weight_tying", "merge_weights",  # 0.2's
         "loftq_config", "eva_config", "corda_config", "lora_ga_config"}  # read with their init_lora_weights only


# ----------------------------------------------------------------------------------------------------
# PEFT's rules: which modules an adapter names, and with which r and alpha

def matches(name, targets):
    """PEFT's rule for target_modules: the qualified name is, or ends with "." + , a target (modules_to_save's is
    the bare str.endswith: "norm" is every layer's input_layernorm too)."""
    return any(name == t or name.endswith("." + t) for t in targets)


def all_linear(targets):
    """Whether targets is PEFT's shorthand "all-linear" (any case, as PEFT reads it; alone, or the one name of a list,
    as --targets gives it). With other names it is refused: PEFT reads such a list as module names, and "all-linear"
    names none, so it would adapt the other names only, without a word."""
    names = [targets] if isinstance(targets, str) else list(targets)
    if len(names) > 1 and any(str(t).lower() == ALL_LINEAR for t in names):
        raise ValueError(f"targets {names}: {ALL_LINEAR} adapts every linear layer but the output one; give it alone, "
                         f"or module names without it (PEFT would read it as a module name, which matches none)")
    return len(names) == 1 and str(names[0]).lower() == ALL_LINEAR


def targeted(linears, targets, whole=()):
    """The names among linears (qualified names) that targets picks: each one that is or ends with "." + a target,
    or for "all-linear" every one but the output layer (lm_head) and those inside `whole` (a task's head, trained
    whole): PEFT 0.21's _maybe_include_all_linear_layers, with its task heads (TASK_HEADS) passed as `whole`."""
    if isinstance(targets, str) and not all_linear(targets):   # read a character at a time, "wo" adapted T5's "o"
        raise TypeError(f"targets {targets!r} is a str: give a list of module names, [{targets!r}]")
    if not isinstance(targets, (str, list, tuple, set, frozenset)) or any(not isinstance(t, str) for t in targets):
        raise TypeError(f"targets {targets!r}: module names are str, in a list: ['q_proj', 'v_proj'] "
                        "(nn.Sequential's first layer: ['0'])")  # (an int: "can only concatenate str"; None: ...)
    if not all_linear(targets):
        return [n for n in linears if matches(n, targets)]
    return [n for n in linears if n != "lm_head" and not any(n == w or n.startswith(w + ".") for w in whole)]


def trained_whole(head, targets):
    """The modules of a task's head (model.py's) that train whole beside the adapter: all of them, but under
    "all-linear" only those PEFT's task heads name (TASK_HEADS): BERT's pre-trained pooler is then one more linear,
    LoRA-adapted, as PEFT's SEQ_CLS all-linear adapts it (its classifier, a fresh layer, trains whole either way)."""
    return tuple(h for h in head if not all_linear(targets) or h in {*itertools.chain(*TASK_HEADS.values())})


def peft_target(cfg, name):
    """Whether PEFT (0.21, check_target_module_exists) adapts the module `name` under adapter_config.json's cfg.
    No target_modules: not checked here (every adapted linear in the file is taken)."""
    exclude = cfg.get("exclude_modules")
    if exclude and (re.fullmatch(exclude, name) if isinstance(exclude, str) else matches(name, exclude)):
        return False                                           # exclude_modules wins over everything
    targets = cfg.get("target_modules")
    if targets is None:
        return True
    if isinstance(targets, str) and targets.lower() == ALL_LINEAR:   # expanded on the model it loads onto: not the
        return bool(targeted([name], ALL_LINEAR, TASK_HEADS[cfg["task_type"]] if cfg.get("task_type") == "SEQ_CLS"
                             else ()))                         # output layer, nor a SEQ_CLS head (a list: names)
    if isinstance(targets, str):                               # a regex: the whole name, layers not checked
        return re.fullmatch(targets, name) is not None
    if name in targets:                                        # the whole name listed: layers not checked
        return True
    if not matches(name, targets):                             # nor its end
        return False
    layers = cfg.get("layers_to_transform")
    if layers in (None, []):
        return True
    return layer_index(name, cfg.get("layers_pattern")) in ([layers] if isinstance(layers, int) else layers)


def layer_index(name, pattern=None):
    """The layer number in a module's name as PEFT reads it: the number after layers_pattern (a name, or a list of
    names), else after the first segment that follows a dot ("model.layers.3.mlp" -> 3); None if there is none."""
    before = [rf"(?:^|.*?\.){p}\." for p in ([pattern] if isinstance(pattern, str) else pattern)] if pattern else \
        [r".*?\.[^.]*\."]
    for p in before:
        if m := re.match(p + r"(\d+)\.", name):
            return int(m[1])
    return None


def rank_alpha(cfg, name, where="adapter_config.json"):
    """(r, alpha) of the module `name` as PEFT picks them: the value of the first rank_pattern / alpha_pattern key (a
    regex) that matches the name's end, else r / lora_alpha; use_rslora's alpha/sqrt(r), written as alpha'/r.
    Keys that match the name with different alphas are an error: PEFT picked the first in the order the user wrote
    them, and saves them sorted (json sort_keys), so the file no longer says which (A's shape says which r)."""
    def pattern(field, default):
        hits = pattern_hits(cfg, field, name)
        if field == "alpha_pattern" and len(set(hits.values())) > 1:
            raise ValueError(f"{where}: alpha_pattern keys {list(hits)} all match {name}, with alphas "
                             f"{list(hits.values())}: PEFT trained with the first as the user wrote them and saved "
                             "them sorted, so which one it used is lost; keep only that key")
        return next(iter(hits.values()), default)
    r = pattern("rank_pattern", cfg["r"])
    alpha = pattern("alpha_pattern", cfg["lora_alpha"])
    if (old := old_alphas(cfg, name)) and set(old.values()) != {alpha}:
        raise ValueError(f"{where}: PEFT's versions read alpha_pattern differently for {name}: alpha {alpha} from "
                         f"PEFT 0.15 on, {old['0.14']} in 0.14, {old['older']} before; the file does not say which "
                         "wrote it (peft_version, written since 0.18): keep keys every version reads alike (one per "
                         "module, not its whole name)")
    return r, alpha * (math.sqrt(r) if cfg.get("use_rslora") else 1)


def old_alphas(cfg, name):
    """{versions: alpha} as PEFT before 0.15 read alpha_pattern, where the config may be that old (no peft_version or
    one before 0.15): the first key that matches after a dot (".*\\.key$"), else the whole name as a key; before 0.14
    that one key, over rank_pattern's keys then alpha_pattern's, gave both r and alpha. {} for a newer config."""
    v = re.match(r"(\d+)\.(\d+)", str(cfg.get("peft_version")))
    if v and (int(v[1]), int(v[2])) >= (0, 15) or not cfg.get("alpha_pattern"):
        return {}
    ranks, alphas = cfg.get("rank_pattern") or {}, cfg["alpha_pattern"]
    def first(keys):
        return next((k for k in keys if re.match(rf".*\.{k}$", name)), name)
    return {"0.14": alphas.get(first(alphas), cfg["lora_alpha"]),
            "older": alphas.get(first([*ranks, *alphas]), cfg["lora_alpha"])}


def pattern_hits(cfg, field, name):
    """The keys (regexes) of rank_pattern or alpha_pattern that match the name's end, PEFT's rule, with their values."""
    return {k: v for k, v in (cfg.get(field) or {}).items() if re.match(rf"(.*\.)?({k})$", name)}


def saved_whole(cfg):
    """adapter_config.json's modules_to_save as PEFT loads them: with the heads of its task_type (TASK_HEADS), which
    configs before PEFT 0.11 left out while their files held them."""
    return [*(cfg.get("modules_to_save") or []), *TASK_HEADS.get(cfg.get("task_type"), [])]


def headless(cfg, modules, where):
    """Refuse a task adapter (task_type SEQ_CLS, TOKEN_CLS, QUESTION_ANS) on a model without its task's head (a causal
    LM's lm_head is none): it trained the body for that head, not for the model's own output. PEFT 0.21 loads it onto
    AutoModelForCausalLM without a word (PeftModelForSequenceClassification around the LM, the head's tensors dropped),
    and lorasp did so where the file held no head (modules_to_save null)."""
    heads = TASK_HEADS.get(cfg.get("task_type"))
    if heads and not any(n and n.endswith(tuple(heads)) for n in modules):   # (PEFT's modules_to_save rule)
        kind = {"SEQ_CLS": "sequence classification", "TOKEN_CLS": "token classification",
                "QUESTION_ANS": "question answering"}[cfg["task_type"]]
        raise ValueError(f"{where}: task_type {cfg['task_type']!r}: a {kind} adapter, trained with a head "
                         f"({' or '.join(heads)}) this model does not have: its layers trained the body for that "
                         "head, not for the model's own outputs; score it with that head (eval.py --task " + (
                             "squad" if heads == ["qa_outputs"] else "glue/TASK") + " adds it to a model that takes "
                         "one), or, if it is a causal LM's adapter labelled wrong, set task_type to \"CAUSAL_LM\" in "
                         "the file")


def target_modules(adapted, linears):
    """target_modules for the adapted modules among the model's linears: their short names when those pick exactly
    them (PEFT matches name ends), else the full names."""
    short = sorted({n.rsplit(".", 1)[-1] for n in adapted})
    return short if {n for n in linears if matches(n, short)} == set(adapted) else sorted(adapted)


# ----------------------------------------------------------------------------------------------------
# The folder: written whole, read back with every file checked

def write_adapter(directory, tensors, extras, config, settings):
    """Replace the folder with PEFT's two files (tensors: {name: (like, make)}, written by write_planned; config) and
    EXTRAS_FILE (extras, with the LoRA-SP settings as its metadata). A failed save (a full disk) leaves the previous
    adapter (checkpoint.replace_dir)."""
    outside_saved(lora_names(tensors), [f"{PEFT}{m}." for m in config.get("modules_to_save") or ()], directory)
    with replace_dir(directory, own=ADAPTER_FILES) as tmp:
        save_safetensors(extras, os.path.join(tmp, EXTRAS_FILE), metadata={"lorasp": json.dumps(settings)})
        write_planned(tensors, os.path.join(tmp, "adapter_model.safetensors"), metadata={"format": "pt"})
        with atomic_write(os.path.join(tmp, "adapter_config.json"), "w") as f:
            json.dump(config, f, indent=2)


def write_planned(tensors, path, metadata):
    """checkpoint.save_safetensors' file, byte for byte, of {name: (like, make)}: the header from each `like`'s shape
    and dtype (a meta tensor will do), then each make()'s tensor (make None: like itself), written and dropped before
    the next is made. So a model's dense A and B are built one at a time, not all at once (239 MiB at 13B)."""
    with atomic_write(path) as f:
        f.write(safetensors_header({k: like for k, (like, _) in tensors.items()}, metadata))
        for name, (like, make) in tensors.items():
            t = like if make is None else make()
            if (t.shape, t.dtype) != (like.shape, like.dtype):          # (a header that lies: never written)
                raise RuntimeError(f"{name}: {list(t.shape)} {t.dtype} came, {list(like.shape)} {like.dtype} was "
                                   "planned")
            f.write(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
            del t                                              # (before the next one is made)


def lora_names(tensors):
    """The modules an adapter file holds lora_A weights of."""
    return sorted(k[len(PEFT):-len(".lora_A.weight")] for k in tensors if k.startswith(PEFT) and
                  k.endswith(".lora_A.weight"))


def outside_saved(names, whole, where):
    """Refuse an adapted module inside a module saved whole (prefixes `whole`: RoBERTa's classifier.dense with
    --targets dense): PEFT then finds lora_A/B among the whole module's tensors (a KeyError), and so would we."""
    for n in names:
        if w := next((w for w in whole if f"{PEFT}{n}.".startswith(w)), None):
            raise ValueError(f"{where}: {n}: an adapter layer inside modules_to_save's {w[len(PEFT):-1]!r}, which is "
                             "saved whole; neither PEFT nor lorasp load that: adapt layers outside it")


def _own(m):
    return itertools.chain(m.named_parameters(recurse=False), m.named_buffers(recurse=False))


def extras_of(layers):
    """EXTRAS_FILE's tensors: every parameter and buffer of each layer itself, as "{layer name}.{its name}"."""
    return {f"{n}.{k}": t.detach() for n, m in layers.items() for k, t in _own(m)}


def restore(layer, name, extras, where=EXTRAS_FILE):
    """Set every parameter and buffer of the layer itself from extras (EXTRAS_FILE's tensors, each taken out, read
    from where). A mask whose True entries are not its packed entries' count is a damaged file (a flipped bit): its
    entries would land out of place, or not fit at all."""
    for k, t in _own(layer):
        saved = extras.pop(f"{name}.{k}", None)
        if saved is None or saved.shape != t.shape:
            raise ValueError(f"{name}.{k}: {EXTRAS_FILE} has {None if saved is None else tuple(saved.shape)}, "
                             f"the layer needs {tuple(t.shape)}")
        t.data.copy_(saved)
    for k in "AB":
        mask, train = getattr(layer, f"mask_{k}"), getattr(layer, f"{k}_train")
        if int(mask.sum()) != train.numel():
            raise ValueError(f"{where}: {name}.mask_{k} has {int(mask.sum())} True entries, but {k}_train holds "
                             f"{train.numel()} saved entries (a damaged file)")


def whole_dir(directory):
    """The folder, or DIR.old where a save stopped between its two renames: that one is whole."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory) and os.path.isdir(directory.rstrip("/") + ".old"):
        directory = directory.rstrip("/") + ".old"
    return directory


def adapter_base(directory):
    """What save_adapter recorded of what the adapter trained on (tasks.save_weights' base: {fingerprint, quant, task,
    file, data, held, tokenizer}); {} when it recorded nothing (a PEFT adapter, or one saved before lorasp kept it)."""
    path = os.path.join(whole_dir(directory), EXTRAS_FILE)
    try:
        base = json.loads(read_safetensors_header(path)[1]["lorasp"]).get("base") if os.path.exists(path) else {}
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError):
        return {}                                              # load_adapter names what is wrong with the file
    return base if isinstance(base, dict) else {}


def adapter_digest(directory):
    """{file: sha256} of an adapter's update, its adapter_config.json and weights file(s) (adapter_model.*): what
    export.py records of the adapter it merges (MERGED), so the same adapter, copied anywhere, is known there."""
    out = {}
    for f in sorted(os.listdir(directory)):
        if f == "adapter_config.json" or f.startswith("adapter_model.") and os.path.isfile(f"{directory}/{f}"):
            h = hashlib.sha256()
            with open(os.path.join(directory, f), "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            out[f] = h.hexdigest()
    return out


def merges(path):
    """(the adapters export.py merged into the folder at path, oldest first: {adapter, files (adapter_digest), base,
    base_fingerprint, trained_on}, and its MERGED record whole); ([], {}) where it has none (not an export's)."""
    f = os.path.join(path, MERGED) if os.path.isdir(path) else ""
    record = read_json(f) if os.path.isfile(f) else {}
    return [m for m in record.get("merged") or () if isinstance(m, dict) and isinstance(m.get("files"), dict)], record


def merged_already(path, adapter):
    """The MERGED entry of the folder at path whose adapter files are this adapter's (applied onto it again, its
    update would count twice), else None."""
    held = merges(path)[0]
    digest = adapter_digest(adapter) if held and os.path.isdir(adapter) else None
    return next((m for m in held if digest and m["files"] == digest), None)


# ----------------------------------------------------------------------------------------------------
# The base's weights, probed: known by their values, whatever files (layout, dtype, conversion) hold them

PROBE_K = 64      # sums kept of the adapted layers' W v: 64 of the base's, 64 of the update's, (a, b) per other tensor
# How far apart the same weights may be, relative to |W v|: a re-conversion rounds each weight to its file's dtype, and
# moves W v by 0.15-0.17% to bf16 (RMS), 0.02% to fp16, nothing to F32 or from bf16 to fp16 (tests/test_probe.py on
# tiny Llama, GPT-2, BERT, T5; the demo's GGUFs: 0.00-0.17%). 1% is 6x that; a base quantized on one side only (NF4:
# ~9%) is other weights. Base and base + update (the update's sums: 39.5% of the base's on the demo, 4-7% on the tests'
# models) are told apart where the nearer is within PROBE_TOL and the farther PROBE_APART times as far: a rounding's
# error r and the update u are unrelated, so the farther is |r + u| ~ sqrt(|r|^2 + |u|^2); 2x needs |u| >= 1.7 |r|
# (bf16: an update of 0.3% of W v; F32: any), where the 2 PROBE_TOL asked before left updates under 2% unjudged.
PROBE_TOL = 0.01
PROBE_APART = 2
PROBE_NONE = 1e-6  # an update this small (relative to W v) is none: base + it is the base (B still 0, saved at step 0)


def signs(n, salt, device="cpu"):
    """n entries of +-1 in float64: the bits of shake_256(salt), the same on every machine and torch version."""
    raw = torch.frombuffer(bytearray(hashlib.shake_256(salt.encode()).digest((n + 7) // 8)), dtype=torch.uint8)
    bits = (raw[:, None] >> torch.arange(8, dtype=torch.uint8)) & 1                          # (bytes, 8)
    return (1 - 2 * bits.reshape(-1)[:n].double()).to(device)


def probed(model, layer_type, linear_types, whole=()):
    """What weights_probe reads: ({name: layer} of the adapted layers (layer_type) that are the first or last of their
    kind (q_proj, the same module in every block), {name: tensor} of every other parameter but the linears' weights,
    and of the first and last linear of each kind not adapted); the adapter's own tensors and the modules it saves
    whole (`whole`: a trained head) are left out. The linears in between are not read: probing them would cost
    a second dequantization of the whole NF4 model."""
    modules = dict(model.named_modules())
    under = lambda n: any(n == w or n.startswith(w + ".") for w in whole)  # noqa: E731
    wrapped = lambda n: n.endswith(".base") and isinstance(modules.get(n[:-len(".base")]), layer_type)  # noqa: E731
    kinds = {}
    for n, m in modules.items():
        if not under(n) and (isinstance(m, layer_type) or isinstance(m, linear_types) and not wrapped(n)):
            kinds.setdefault(re.sub(r"\.\d+\.", ".#.", n), []).append(n)
    ends = {n for names in kinds.values() for n in (names[0], names[-1])}
    adapted = {n: modules[n] for n in ends if isinstance(modules[n], layer_type)}
    rest = {}
    for n, m in modules.items():
        if under(n) or isinstance(m, layer_type):
            continue
        for k, t in m.named_parameters(recurse=False):
            if not (k == "weight" and isinstance(m, linear_types)):
                rest[f"{n}.{k}"] = t
        if isinstance(m, linear_types) and not wrapped(n) and n in ends:
            rest[f"{n}.weight"] = m.weight                     # (an NF4Tensor: dequantized by _matrix)
    return dict(sorted(adapted.items())), rest


def _matrix(t):
    """A probed tensor as a float (rows, columns) matrix: an NF4 weight dequantized (one layer), a vector a column."""
    t = t.detach() if isinstance(t, torch.Tensor) else t.dequantize(torch.float32)
    return t.reshape(t.shape[0] if t.dim() else 1, -1)


def _sums(name, W, k, Wv=None):
    """(k sums u_i . (W v), ||W||_F) in float64 (which autocast leaves alone), v and the k sign rows u_i drawn from the
    name. W (out, in) is read a block of rows at a time: no float64 copy of it is made. Wv: W v given (an update's
    B (A v): never made dense; no norm)."""
    norm, step = 0.0, max(1, (1 << 17) // max(W.shape[1], 1))   # (1 MiB blocks: export.py's peak is a few layers)
    if Wv is None:
        v, Wv = signs(W.shape[1], "v:" + name, W.device), []
        for i in range(0, W.shape[0], step):
            block = W[i:i + step].double()
            Wv.append(block @ v)
            norm += block.square().sum().item()
        Wv = torch.cat(Wv)
    return (signs(k * Wv.numel(), "u:" + name, Wv.device).view(k, -1) @ Wv.double()).cpu(), norm ** 0.5


def _adapted_sums(adapted, update=False, read=None):
    """The PROBE_K sums of W v (update: of (alpha/r) B A v, made a block of rows at a time), added over the adapted
    layers probed; read: probe_verdict's."""
    def update_sums(n, m):
        Av = _dense_times(m, "A", signs(m.base.in_features, "v:" + n, m.mask_A.device))   # (r,)
        return m.scale * _sums(n, m.mask_B, PROBE_K, _dense_times(m, "B", Av))[0]                # of B A v (out,)
    return sum((update_sums(n, m) if update else _rest_sums(n, m.base.weight, read, PROBE_K)[0]
                for n, m in adapted.items()), torch.zeros(PROBE_K, dtype=torch.float64))


def _dense_times(layer, k, x, block=1 << 16):
    """layer.lora_A @ x in float64 (k "A"; "B": lora_B), the matrix as forward uses it made a block of rows at a time
    from the packed entries (mask_k's True ones in k_train, the others in k_frozen or 0): no dense A or B is held."""
    mask, train, frozen = getattr(layer, f"mask_{k}"), getattr(layer, f"{k}_train"), getattr(layer, f"{k}_frozen")
    step, out, t, f = max(1, block // mask.shape[1]), [], 0, 0   # t, f: packed entries before the block
    for i in range(0, mask.shape[0], step):
        S = mask[i:i + step]
        n = int(S.sum())                                       # (of a block: a whole mask's sum(1) made it int64)
        M = torch.zeros(S.shape, dtype=train.dtype, device=train.device)
        if frozen is not None:                                 # (freeze mode: the others, packed the same way)
            M.masked_scatter_(~S, frozen[f:f + S.numel() - n])
        out.append(M.masked_scatter_(S, train[t:t + n]).double() @ x)
        t, f = t + n, f + S.numel() - n
    return torch.cat(out)


def _rest_sums(n, t, read=None, k=1):
    """(k sums, ||t||_F) of a tensor (a sum: of one other tensor), read(t) then where given and t is one."""
    sums, norm = _sums(n, _matrix(t), k)
    if read is not None and isinstance(t, torch.Tensor):
        read(t)
    return (sums.item() if k == 1 else sums), norm


BASE_SUMS = weakref.WeakKeyDictionary()  # model -> weights_probe's sums of its base and what they read: go with it


def _versions(t):
    """(storage address, version counter) of a tensor, or of an NF4 weight's codes and scales: an in-place write through
    torch (no_grad add_, copy_, load_state_dict) moves the counter, new storage (model.to, .data =) the address; a
    write into .data's values is not counted by torch (lorasp makes none)."""
    parts = [t] if isinstance(t, torch.Tensor) else [x for x in vars(t).values() if isinstance(x, torch.Tensor)]
    return [(x.data_ptr(), x._version) for x in parts]


@torch.no_grad()
def weights_probe(model, layer_type, linear_types, whole=()):
    """A few hundred numbers that know the base by its weights (eval.py compares them: probe_verdict): sums of W v
    over the adapted layers `probed` picks, and of their updates (alpha/r) B A v, for W + (alpha/r) B A is what
    export.py writes; (a sum, the norm) of each other tensor it picks. Float32, NF4 (dequantized) alike. The base's
    sums, all but 0.06 s of 1.4-1.9 s at 7B width (NF4, one thread: bench/probe_cost.py), are taken once per model
    (BASE_SUMS): a run's saves read the same frozen tensors; again where the model holds another, or _versions moved."""
    adapted, rest = probed(model, layer_type, linear_types, whole)
    short = lambda xs: [float(f"{x:.8g}") for x in xs]  # noqa: E731  (8 digits: far below PROBE_TOL)
    read, kept = {n: m.base.weight for n, m in adapted.items()} | rest, BASE_SUMS.get(model)
    if not kept or list(kept[0]) != list(read) or any(r() is not read[n] or v != _versions(read[n])
                                                        for n, (r, v) in kept[0].items()):
        kept = BASE_SUMS[model] = ({n: (weakref.ref(t), _versions(t)) for n, t in read.items()},
                                   short(_adapted_sums(adapted).tolist()),
                                   {n: short(_rest_sums(n, t)) for n, t in rest.items()})
    return dict(adapted=list(adapted), base=list(kept[1]), update=short(_adapted_sums(adapted, update=True).tolist()),
                rest={n: list(v) for n, v in kept[2].items()})


@torch.no_grad()
def probe_verdict(model, probe, layer_type, linear_types, whole=(), read=None):
    """("same", "merged", "other" or None, what was measured) for the model now (the adapter loaded) against the
    weights_probe its adapter saved: the same weights (to PROBE_TOL: a re-conversion's rounding); the base with this
    very update in it already (export.py's merge: the base probed then, plus the update); other weights; None where
    the update is too small against the rounding to tell the first two apart, or the probe is none (an adapter saved
    before it). read: called with each dense tensor once its sums are taken (export.py: its pages handed back)."""
    try:
        then, upd = (torch.tensor(probe[k], dtype=torch.float64) for k in ("base", "update"))
        names, rest = list(probe["adapted"]), {n: (float(a), float(b)) for n, (a, b) in probe["rest"].items()}
    except (TypeError, ValueError, KeyError, AttributeError):  # (a hand-edited file: as an adapter without one)
        return None, {}
    adapted, now_rest = probed(model, layer_type, linear_types, whole)
    if list(adapted) != names or then.shape != (PROBE_K,) or upd.shape != then.shape or not then.norm():
        return None, {}
    for n, (a, b) in rest.items():                             # every other weight read: the same, to PROBE_TOL
        x, y = _rest_sums(n, now_rest[n], read) if n in now_rest else (math.nan, math.nan)   # (NaN: never close)
        if not (abs(x - a) <= PROBE_TOL * b and abs(y - b) <= PROBE_TOL * b):
            return "other", dict(tensor=n)
    now, scale = _adapted_sums(adapted, read=read), then.norm().item()
    same, merged = (now - then).norm().item() / scale, (now - then - upd).norm().item() / scale
    seen = dict(same=same, merged=merged, update=upd.norm().item() / scale, layers=names)
    near, far = sorted((same, merged))
    if near > PROBE_TOL:
        return "other", seen
    if seen["update"] <= PROBE_NONE:                           # base + no update: the base, merged or not
        return "same", seen
    if far >= PROBE_APART * near + PROBE_NONE:                 # (F32: near 0, far the update)
        return ("merged" if merged < same else "same"), seen
    return None, seen                                          # an update within a rounding's reach of 0


def read_adapter(directory, peft):
    """(adapter_config.json, the weights file's path, its tensors, EXTRAS_FILE's tensors or None, the LoRA-SP
    settings), each file checked: a config other than plain LoRA's, or no extras unless peft=True, is refused."""
    config, xpath = os.path.join(directory, "adapter_config.json"), os.path.join(directory, EXTRAS_FILE)
    if not os.path.exists(config):
        named = sorted(d for d in os.listdir(directory) if os.path.exists(f"{directory}/{d}/adapter_config.json")) \
            if os.path.isdir(directory) else []
        raise FileNotFoundError(f"{directory}: no adapter_config.json; not an adapter folder (ours or PEFT's)" + (
            f", but {named} hold adapters (PEFT's save_pretrained puts an adapter not named 'default' in a folder of "
            f"its name): pass {os.path.join(directory, named[0])}" if named else ""))
    weights = [f for f in ("adapter_model.safetensors", "adapter_model.bin") if os.path.exists(f"{directory}/{f}")]
    if not weights:
        raise FileNotFoundError(f"{directory}: no adapter_model.safetensors (or PEFT's adapter_model.bin)")
    cfg = read_json(config)
    if cfg.get("peft_type") != "LORA":
        raise ValueError(f"{config}: peft_type {cfg.get('peft_type')!r}, not 'LORA'")
    for k, plain in PLAIN.items():  # any other value: refused, never loaded silently wrong
        if cfg.get(k) not in plain:
            raise ValueError(f"{config}: {k} = {cfg[k]!r}; lorasp loads plain LoRA only" + (
                " (this adapter's A and B are relative to a base PEFT changes as it loads: save it with PEFT's "
                "save_pretrained(..., path_initial_model_for_weight_conversion=...) for a plain LoRA adapter on "
                "the original model)" if k == "init_lora_weights" else ""))
    if new := [k for k in cfg if k not in KNOWN and cfg[k] not in UNSET]:
        raise ValueError(f"{config}: {new[0]} = {cfg[new[0]]!r}, a field lorasp does not know (a newer PEFT's, or "
                         "an old one's); PEFT ignores such fields with a warning, lorasp refuses them: one may change "
                         "what the adapter computes. If it does not, delete it from the file")
    if type(cfg.get("r")) is not int or cfg["r"] < 1 or type(cfg.get("lora_alpha")) not in (int, float) or not (
            math.isfinite(cfg["lora_alpha"]) and cfg["lora_alpha"]):   # (named no file: LoRASPLinear's error)
        raise ValueError(f"{config}: r = {cfg.get('r')!r}, lora_alpha = {cfg.get('lora_alpha')!r}; need an integer "
                         "r >= 1 and a finite, non-zero number lora_alpha")
    path = os.path.join(directory, weights[0])
    tensors = load_safetensors(path) if path.endswith(".safetensors") else torch_load(path)  # weights_only=True
    # a PEFT model's own state_dict() saved by hand spells lora_A.default.weight; PEFT loads that file too
    named = {re.sub(r"\.(lora_[AB])\.default\.weight$", r".\1.weight", k): t for k, t in tensors.items()}
    if len(named) < len(tensors):
        raise ValueError(f"{path}: holds a module's lora weights twice, as lora_A.weight and lora_A.default.weight")
    tensors = named
    if not os.path.exists(xpath):
        if peft:                                               # a plain PEFT adapter
            return cfg, path, tensors, None, dict(keep=1.0, mode="mask", structure="element", seeds={})
        raise FileNotFoundError(f"{xpath} is missing: without it this adapter would load as plain LoRA (keep=1), "
                                "not as the LoRA-SP adapter that was saved. For a PEFT LoRA adapter, ask for it: "
                                "load_adapter(model, directory, peft=True)")
    extras, sp = load_safetensors(xpath), read_safetensors_header(xpath)[1].get("lorasp")
    try:
        sp = json.loads(sp)
        sp = dict(keep=float(sp["keep"]), mode=sp["mode"], structure=sp["structure"], seeds=dict(sp["seeds"]))
    except (TypeError, ValueError, KeyError, RecursionError) as e:
        raise ValueError(f"{xpath}: its 'lorasp' metadata is missing or malformed ({type(e).__name__}: {e})") from None
    return cfg, path, tensors, extras, sp


def adapted_names(cfg, path, tensors, whole):
    """The names of the modules the adapter holds: each one PEFT would adapt too, and no tensor that the load would
    leave out (only lora_A/B, and those under the prefixes `whole` of the modules_to_save, loaded whole)."""
    names = lora_names(tensors)
    if not names:
        raise ValueError(f"{path}: holds no lora_A weights")
    outside_saved(names, whole, path)
    if cfg.get("ensure_weight_tying") and (tied := [k for k in tensors if ".lora_embedding_" in k]):
        raise ValueError(f"{path}: {tied[0]}: ensure_weight_tying = True: PEFT adapts a tied lm_head and embed_tokens "
                         "as one (and rewrites target_modules to say so); lorasp adapts no embedding")
    if stray := [n for n in names if not peft_target(cfg, n)]:  # PEFT leaves them out without a word
        raise ValueError(f"{path} holds modules that adapter_config.json's target_modules "
                         f"{cfg.get('target_modules')!r}" + (f" with layers_to_transform {cfg['layers_to_transform']}"
                                                             if cfg.get("layers_to_transform") else "") +
                         (" (less exclude_modules)" if cfg.get("exclude_modules") else "") +
                         f" does not name: {stray[:3]}; PEFT would leave them out: fix one file or the other")
    lora = {f"{PEFT}{n}.{k}.weight" for n in names for k in ("lora_A", "lora_B", "base_layer")}  # base_layer: PEFT's
    # save_embedding_layers (lm_head in target_modules), which load_adapter takes if it is the model's own weight
    left = sorted(k for k in tensors if k not in lora and not k.startswith(whole))  # biases, DoRA, embeddings
    if base := [k for k in left if ".base_layer." in k or k.endswith("embed_tokens.weight")]:
        raise ValueError(f"{path}: {base[:3]}: the base model's own weights (PEFT's save_embedding_layers, on by "
                         "default when target_modules names lm_head or embed_tokens), which PEFT loads over the "
                         "model's; lorasp does not: if the vocabulary was not resized, save the adapter again with "
                         "save_pretrained(..., save_embedding_layers=False)")
    if left and cfg.get("ensure_weight_tying"):
        raise ValueError(f"{path}: {left[:3]}: ensure_weight_tying = True: PEFT ties the trained copy of a tied module "
                         "(modules_to_save) to its partner; lorasp does not load a tied pair so")
    if left:
        raise ValueError(f"{path}: tensors lorasp does not load (only Linear lora_A/B and modules_to_save): {left[:3]}")
    return names


def unheld_targets(cfg, modules, names, whole, layer_type, linear_types):
    """The model's linears that adapter_config.json's target_modules picks (PEFT's rules: peft_target) and the adapter
    file holds no A and B for (`names`: those it holds), where it holds them for the same module of another block
    (model.layers.1.self_attn.q_proj, model.layers.0's held: a module outside the blocks, a pooler the trained model
    lacked, is not asked for), outside the modules saved whole (`whole`); none checked without target_modules."""
    if cfg.get("target_modules") is None:
        return []
    block = lambda n: re.sub(r"(?<=\.)\d+(?=\.)", "#", n)  # noqa: E731  (the module's name in every block)
    held = {block(n) for n in names}
    return sorted(n for n, m in modules.items() if n not in names and block(n) in held and isinstance(
        m, linear_types) and not (n.endswith(".base") and isinstance(modules.get(n[:-len(".base")]), layer_type))
        and not any(n == w or n.startswith(w + ".") for w in whole) and peft_target(cfg, n))


def own_base(path, name, tensors, base):
    """PEFT's save_embedding_layers (on when target_modules names lm_head) stores the layer's base weight beside A and
    B, and loads it over the model's: taken where it is the model's own weight, refused otherwise (lorasp loads no base
    weights from an adapter)."""
    W = tensors.get(f"{PEFT}{name}.base_layer.weight")
    if W is not None and not (W.shape == base.weight.shape and torch.equal(W.to(base.weight.dtype), base.weight)):
        raise ValueError(f"{path}: {name}.base_layer.weight (PEFT's save_embedding_layers) is not the model's "
                         f"{name}.weight {tuple(base.weight.shape)}: {tuple(W.shape)}, a resized vocabulary or "
                         "another base model; lorasp loads no base weights from an adapter")


# ----------------------------------------------------------------------------------------------------
# The layers: lorasp.py's LoRASPLinear layers to and from the folder

def transposed(model, name):
    """Whether the HF checkpoint holds module name's weight as (in, out) (GPT-2's Conv1D): model.py's hf_tensor
    transposes it, so a (2, 3) weight comes back (3, 2). PEFT's fan_in_fan_out says so."""
    hf = getattr(type(model), "hf_tensor", None)
    out = hf and hf(f"{name}.weight", torch.empty(2, 3, device="meta"))
    return bool(out) and tuple(out[1].shape) == (3, 2)


def save_layers(model, directory, layer_type, linear_types, base_model_name_or_path, task_type, modules_to_save, base):
    """lorasp.save_adapter: the model's layer_type (LoRASPLinear) layers as PEFT's A and B (their effective values) and
    config, its modules_to_save whole, and EXTRAS_FILE (masks, entries, settings; base: what it trained on)."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, layer_type)}
    if not layers:
        raise ValueError("the model has no LoRASPLinear layers: refusing to write an empty adapter")
    settings = {(m.r, m.alpha, m.keep, m.mode, m.structure) for m in layers.values()}
    if len(settings) > 1:
        raise ValueError(f"PEFT's format has one r and alpha; these layers differ: {sorted(settings)}")
    (r, alpha, keep, mode, structure), = settings
    peft = {}                                                  # A (r, in), B (out, r), planned: each dense one is
    for n, m in layers.items():                                # made as it is written (write_planned)
        for k in "AB":
            like = torch.empty(getattr(m, f"mask_{k}").shape, dtype=getattr(m, f"{k}_train").dtype, device="meta")
            peft[f"{PEFT}{n}.lora_{k}.weight"] = like, functools.partial(getattr, m, f"lora_{k}")
    if empty := [k for k, (t, _) in peft.items() if t.numel() == 0]:   # e.g. ZeRO-3 placeholders: an empty adapter
        raise ValueError(f"refusing to save empty tensors: {empty[:4]}")
    peft.update({f"{PEFT}{n}.{k}": (t.detach(), None) for n in modules_to_save
                 for k, t in model.get_submodule(n).state_dict().items()})
    linears = [n for n, m in model.named_modules() if isinstance(m, (*linear_types, layer_type))
               and not n.endswith(".base")]
    config = dict(peft_type="LORA", task_type=task_type, base_model_name_or_path=base_model_name_or_path,
                  r=r, lora_alpha=alpha, lora_dropout=0.0, bias="none", use_rslora=False,
                  fan_in_fan_out=any(transposed(model, n) for n in layers),  # else PEFT warns, and sets it per layer
                  target_modules=target_modules(layers, linears), inference_mode=True,
                  modules_to_save=list(modules_to_save) or None)
    probe = None if any(p.is_meta for p in model.parameters()) else weights_probe(model, layer_type, linear_types,
                                                                                 modules_to_save)
    base = dict(base or {}, **{"probe": probe} if probe else {})   # (the weights it trained on: eval.py compares)
    trim_heap()                       # the probe's freed blocks handed back: holes the dense A and B grew the heap by
    sp = dict(keep=keep, mode=mode, structure=structure, seeds={n: m.seed for n, m in layers.items()}, base=base)
    write_adapter(directory, peft, extras_of(layers), config, sp)


def _fit(n, modules, cfg, A, B, layer_type, linear_types, where):
    """(the linear, r, alpha) for module n, r and alpha as PEFT picks them; A and B must fit that linear."""
    if n not in modules:
        raise ValueError(f"adapter module {n!r} is not in the model")
    base = modules[n].base if isinstance(modules[n], layer_type) else modules[n]
    r, alpha = rank_alpha(cfg, n, where)
    if not isinstance(base, linear_types):
        raise ValueError(f"adapter module {n!r} is a {type(base).__name__}; lorasp adapts nn.Linear and NF4Linear only")
    if B is None or A.shape != (r, base.in_features) or B.shape != (base.out_features, r):
        hits = pattern_hits(cfg, "rank_pattern", n)
        raise ValueError(f"{n}: adapter A {tuple(A.shape)}, B {None if B is None else tuple(B.shape)} do not fit "
                         f"{type(base).__name__} {base.out_features}x{base.in_features} with r={r}" + (
                             f" ({where}: rank_pattern keys {list(hits)} all match it; PEFT trained with the first "
                             "as the user wrote them, and saves them sorted)" if len(hits) > 1 else ""))
    return base, r, alpha


def load_layers(model, directory, peft, layer_type, linear_types):
    """lorasp.load_adapter: {name: the module to put there}, every file and tensor checked first: each adapted linear
    (of linear_types) wrapped in a layer_type (LoRASPLinear) and loaded, then a trainable copy of each of the config's
    modules_to_save (saved_whole) with its tensors; lorasp.py puts them in the model. PEFT's rank_pattern,
    alpha_pattern, use_rslora and .bin file are honoured (fan_in_fan_out only says HF's Conv1D is transposed, as our
    nn.Linear already is); the PLAIN fields and any tensor left unloaded are errors. A failure leaves the model as it
    was (all_or_nothing)."""
    return all_or_nothing(model, lambda: _new_modules(model, directory, peft, layer_type, linear_types))


def all_or_nothing(model, build):
    """build()'s {name: the module to put there}, or on a failure the model as it was: no module swapped (the caller
    swaps them in), and no weight frozen (each LoRASPLinear freezes its base as it is built: a later layer's failure,
    a keep too small for it or a tensor that does not fit, would leave the earlier ones frozen)."""
    trains = {p: p.requires_grad for p in model.parameters()}
    try:
        return build()
    except BaseException:
        for p, g in trains.items():
            p.requires_grad_(g)
        raise


def _new_modules(model, directory, peft, layer_type, linear_types):
    """load_layers' work: {name: the module to put there}; model's modules untouched but for their bases' freezing."""
    directory = whole_dir(directory)
    cfg, path, tensors, extras, sp = read_adapter(directory, peft)
    modules, mts = dict(model.named_modules()), saved_whole(cfg)
    headless(cfg, modules, os.path.join(directory, "adapter_config.json"))
    whole = [n for n in modules if n and n.endswith(tuple(mts))]      # PEFT's _set_trainable: no "." before
    names = adapted_names(cfg, path, tensors, tuple(f"{PEFT}{n}." for n in whole))
    if other := sorted(m for m, x in modules.items() if isinstance(x, layer_type) and m not in names):
        raise ValueError(f"{directory}: the model already has adapter layers this adapter does not hold: {other[:3]}; "
                         "they would keep their own values beside it (a mix of two adapters): load onto the base model")
    new = {}
    for n in names:
        A, B = tensors[f"{PEFT}{n}.lora_A.weight"], tensors.get(f"{PEFT}{n}.lora_B.weight")
        for k, t in (("lora_A", A), ("lora_B", B)) if B is not None else ():  # (NaN: "the files disagree"; Inf: NaN
            check_finite(t, f"{path}: tensor '{PEFT}{n}.{k}.weight'")          # scores, exit 0)
        base, r, alpha = _fit(n, modules, cfg, A, B, layer_type, linear_types, f"{directory}/adapter_config.json")
        own_base(path, n, tensors, base)               # PEFT's lm_head base weight beside A and B: the model's own
        new[n] = layer = layer_type(base, r, alpha, sp["keep"], sp["mode"], sp["structure"], sp["seeds"].get(n, 0))
        layer.load_dense(A, B)
        if extras is not None:
            restore(layer, n, extras, os.path.join(directory, EXTRAS_FILE))   # every entry as saved, frozen ones too
        # what PEFT reads must be what the extras rebuild (a plain PEFT adapter passes trivially)
        if not (torch.equal(layer.lora_A.cpu(), A.float()) and torch.equal(layer.lora_B.cpu(), B.float())):
            raise ValueError(f"{directory}: {n}: {EXTRAS_FILE} and adapter_model.safetensors disagree (a damaged file, "
                             "or the files of two saves)")
    if extras:
        raise ValueError(f"{EXTRAS_FILE}: tensors of no adapter module: {sorted(extras)[:4]}")
    if unheld := unheld_targets(cfg, modules, names, whole, layer_type, linear_types):  # (was loaded without a word)
        raise ValueError(f"{path} holds no weights for {len(unheld)} module{'s' * (len(unheld) > 1)} "
                         f"adapter_config.json's target_modules {cfg['target_modules']!r} names in this model: "
                         f"{unheld[:3]}; PEFT would add them untrained (B = 0), warning of missing adapter keys: the "
                         "adapter of another (shallower) model, or a file short of layers")
    # modules_to_save as PEFT loads them: a name that matches no module is passed over (SEQ_CLS configs name both
    # "classifier" and "score"); a copy trains in the module's place, so a weight tied to another module (lm_head and
    # the embedding) keeps its old value there, as does the module's other name (T5's shared is encoder.embed_tokens)
    for n in whole:
        prefix, module = f"{PEFT}{n}.", copy.deepcopy(modules[n])
        saved = {k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}
        try:                                   # strict: a missing, left-over or mis-shaped tensor is an error
            module.load_state_dict(saved)
        except RuntimeError as e:              # torch's lines, on one line that names the file
            why = "; ".join(line.strip().rstrip(".") for line in str(e).splitlines()[1:])
            raise RuntimeError(f"{path}: modules_to_save's {n} does not load: {why}" + (
                " (PEFT's modules_to_save.default / original_module spelling: a PeftModel's state_dict() saved by "
                "hand; PEFT's save_pretrained writes the module's own names)" if any(k.startswith(
                    ("modules_to_save.", "original_module.")) for k in saved) else "")) from None
        new[n] = module.requires_grad_(True)
    return new


# ----------------------------------------------------------------------------------------------------
# lorasp.py's arguments and dense views, checked here (that file is at its line budget)

def check_settings(r, alpha, keep, mode, structure, seed, structures):
    """Refuse a LoRASPLinear setting by name, with what to give: a bool, a str, a tensor or None where a number goes
    (a tensor alpha broke save_adapter's JSON; r=True and keep="0.5" failed inside torch), a seed torch.Generator
    cannot take, a mode or structure lorasp does not know (the value as typed: "freeze " shows its space)."""
    number = lambda v, kind=numbers.Real: isinstance(v, kind) and not isinstance(v, bool)  # noqa: E731
    if not (number(r, numbers.Integral) and r >= 1 and number(alpha) and math.isfinite(alpha) and alpha != 0):
        raise ValueError("need an integer r >= 1 and a finite alpha != 0 (the update is scaled by alpha / r); got "
                         f"r={r!r}, alpha={alpha!r}" + ("" if number(r) and number(alpha) else
                                                         " (Python numbers: int(r), float(alpha))"))
    if not (number(keep) and 0 < keep <= 1):
        raise ValueError(f"keep={keep!r}: the share of A's and B's entries that train, a number in (0, 1] (1.0: plain "
                         "LoRA; 0.5: the paper's)")
    if mode not in ("mask", "freeze") or structure not in structures:
        raise ValueError(f"mode={mode!r}, structure={structure!r}: need mode 'mask' (the paper's Eq. 2) or 'freeze', "
                         f"structure one of {list(structures)}")
    if not (number(seed, numbers.Integral) and -2 ** 63 <= seed < 2 ** 64):
        raise ValueError(f"seed={seed!r}: an integer, -2**63 .. 2**64 - 1 (torch.Generator's range); the same seed "
                         "draws the same masks")


def adaptable(model, targets, layer_type, linear_types):
    """The qualified names of model's linears (linear_types) that targets picks (`targeted`), for apply_lorasp. Refused:
    a target that picks nothing, an adapted layer (a layer_type, or the base inside one: apply_lorasp twice nested
    adapters in adapters), and a model that is itself a layer (its name "" made it its own child: RecursionError)."""
    if isinstance(model, (*linear_types, layer_type)):
        raise TypeError(f"apply_lorasp adapts the layers inside a model, not a {type(model).__name__} itself: wrap "
                        "one layer as LoRASPLinear(layer, r, alpha, ...)")
    adapted = {n for n, m in model.named_modules() if isinstance(m, layer_type)}
    linears = [n for n, m in model.named_modules() if isinstance(m, (*linear_types, layer_type))]
    hits = targeted(linears, targets)
    if again := sorted({n if n in adapted else n.rpartition(".")[0] for n in hits} & adapted):
        raise ValueError(f"{', '.join(map(repr, again[:3]))} {'is' if len(again) == 1 else 'are'} already "
                         f"{layer_type.__name__}: apply_lorasp once per layer (merge_lorasp first, to adapt the merged "
                         "weights again)")
    if not hits:
        raise ValueError(f"no nn.Linear/NF4Linear matches targets {list(targets)}; the model has {linears[:8]}...")
    return hits


def dense_pair(A, B, shape_A, shape_B):
    """(A, B) for LoRASPLinear.load_dense, if they are tensors of its masks' shapes, A (r, in) and B (out, r); else an
    error naming the matrix and the shape it needs (torch's was "the shape of the mask [6, 2] at index 0 does not
    match the shape of the indexed tensor [2, 6]", for a B given as (r, out))."""
    for k, M, shape, layout in (("A", A, shape_A, "(r, in)"), ("B", B, shape_B, "(out, r)")):
        if not isinstance(M, torch.Tensor) or M.shape != shape:
            given = tuple(M.shape) if isinstance(M, torch.Tensor) else f"a {type(M).__name__}"
            raise ValueError(f"load_dense: {k} is {given}; this layer's {k} is {layout} = {tuple(shape)}" + (
                                 " (transposed?)" if isinstance(M, torch.Tensor) and M.shape == shape[::-1] else ""))
    return A, B


def mergeable(layers, where):
    """layers ({name: LoRASPLinear}), refused where any is on the meta device (shapes, no values: torch's "Tensor.item()
    cannot be called on meta tensors" before) or holds NaN or Inf in A or B, naming them, before any layer merges."""
    if meta := [n for n, m in layers.items() if any(t.is_meta for t in itertools.chain(m.parameters(), m.buffers()))]:
        raise ValueError(f"{where}: {len(meta)} layer{'s' * (len(meta) > 1)} on the meta device (shapes, no values: "
                         f"{', '.join(meta[:3])}{' ...' * (len(meta) > 3)}): load the weights first "
                         "(load_pretrained, or load_state_dict(state, assign=True))")
    if bad := [n for n, m in layers.items() if not (m.lora_A.isfinite().all() and m.lora_B.isfinite().all())]:
        raise ValueError(f"{where}: {', '.join(bad)}: lora_A or lora_B holds NaN or Inf; nothing was merged")
    return layers


def float_dtype(dtype, where):
    """dtype, if it is None or a floating-point torch dtype (an integer one made every |w| < 1 a 0)."""
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"{where}: dtype={dtype!r}: give a floating-point torch dtype (torch.bfloat16, torch.float32, "
                        "...), or None for the base weight's own")
    return dtype


class DenseView(torch.Tensor):
    """What lora_A / lora_B give: a dense matrix made from a LoRASPLinear's packed entries, not those entries, so a
    write into it (nn.init.normal_(layer.lora_B), .data.fill_, [i] = v, +=) would change nothing (at keep=1, a view
    of A_train, it wrote through): any write is an error naming load_dense. Its .grad is the packed gradient unpacked
    (0 at frozen entries, which take none). A view of it stays a DenseView; any other result is a plain tensor."""
    WRITES = {"__setitem__", "__set__"}

    @classmethod
    def of(cls, dense, k, grad):
        view = dense.as_subclass(cls)
        view.k, view.packed_grad = k, grad                     # grad(): the dense gradient, or None
        return view

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if torch.compiler.is_compiling():                     # traced by torch.compile: no checks (they made
            with torch._C.DisableTorchFunctionSubclass():     # dynamo recurse), plain results
                return func(*args, **(kwargs or {}))
        kwargs = kwargs or {}
        me, name = args[0] if args else kwargs.get("tensor"), getattr(func, "__name__", "")   # (nn.init: tensor=)
        if isinstance(me, cls) and getattr(func, "__self__", None) is torch._C.TensorBase.grad and name == "__get__":
            return getattr(me, "packed_grad", lambda: None)()
        out_arg = kwargs.get("out")
        if isinstance(me, cls) and (name in cls.WRITES or name.endswith("_") and not name.endswith("__")
                                    and name != "requires_grad_") or isinstance(out_arg, cls):
            k = (me if isinstance(me, cls) else out_arg).k
            raise RuntimeError(f"layer.lora_{k} is made from {k}_train (the trainable entries, packed) and mask_{k} "
                               f"each time it is read: a write into it ({name}) is lost (at keep < 1). Set A and B "
                               "with layer.load_dense(A, B) (B only: layer.load_dense(layer.lora_A, B))")
        with torch._C.DisableTorchFunctionSubclass():
            if name in ("__reduce_ex__", "__deepcopy__"):      # torch.save / deepcopy: a plain tensor
                return func(me.as_subclass(torch.Tensor), *args[1:], **kwargs)
            out = func(*args, **kwargs)
            alias = isinstance(me, cls) and isinstance(out, torch.Tensor) and \
                out.untyped_storage()._cdata == me.untyped_storage()._cdata       # (the same storage, meta too)
        if alias:                                              # .data, .detach(), .T, [0]: writes refused too
            out = out.as_subclass(cls)
            out.k = me.k
        return out

    @staticmethod
    def refuse(k):
        """lora_A's / lora_B's setter: an error saying what sets them."""
        def setter(layer, value):
            raise AttributeError(f"layer.lora_{k} is made from {k}_train and mask_{k}, not stored: set A and B with "
                                 "layer.load_dense(A, B)")
        return setter
