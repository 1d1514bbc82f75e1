"""quant_bnb.py: bitsandbytes' serialized NF4 form, the keys of a `*-bnb-4bit` checkpoint's Linear4bit weight.

    weight                                  uint8 (ceil(numel/2), 1)  the packed codes, as quant.py packs them (bytes
                                            of another dtype where bitsandbytes' quant_storage asked for one)
    weight.absmax                           float32 (n_blocks,); uint8 codes of the scales with double quantization
    weight.quant_map                        (16,) the NF4 levels
    weight.nested_absmax, .nested_quant_map double quantization only: the scales' fp32 absmax and their 8-bit code
    weight.quant_state.bitsandbytes__nf4    uint8 bytes of the JSON {quant_type, blocksize, dtype, shape, nested_*}

Our state dicts load in bitsandbytes and its checkpoints load here; a state dict that would not read back as it was
written (a missing key, a wrong count, a table that is not NF4's) is an error naming the key, never a silent guess.
A whole `*-bnb-4bit` checkpoint (a 4-bit model's save_pretrained): `settings` reads config.json's quantization_config,
`stored` finds the weights held in this form by their tensor names (checkpoint.py gathers each one's keys as they
stream in). Left out, refused by name: FP4's quant_type, 8-bit (Linear8bitLt's SCB keys), the other quant_methods.
Also here, none of it needed to learn NF4 (quant.py): NF4Linear's nn.Module hooks (to(), state dicts), and the checks
that refuse what would quantize or load as garbage (check_weight, checked). quant.py passes its constants in (like
quant_triton.py, this file imports nothing of the project's). Not run on its own: tests/test_quant.py checks it
against bitsandbytes.
"""
import json
import math

import torch

# the keys of one NF4 weight in this form, after the weight's own name
NF4_KEYS = ("", ".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".quant_state.bitsandbytes__nf4")
UNQUANTIZED = "load the unquantized checkpoint (quantize='nf4', --quant nf4, quantizes it as it loads)"


def settings(qc, source):
    """config.json's quantization_config (source: its path), if it is bitsandbytes' 4-bit NF4 -> {double_quant};
    anything else is refused naming the field (transformers' defaults where a field is absent: fp4, no 8-bit)."""
    what = f"{source}: quantization_config"
    if not isinstance(qc, dict):
        raise NotImplementedError(f"{what} = {qc!r} is not supported: {UNQUANTIZED}")
    flag = lambda k: qc.get(k, qc.get("_" + k))                 # (older files: _load_in_4bit)  # noqa: E731
    method = qc.get("quant_method", "bitsandbytes" if flag("load_in_4bit") or flag("load_in_8bit") else "?")
    if method != "bitsandbytes":                                # GPTQ / AWQ / fp8 tensors (qweight, scales, ...)
        raise NotImplementedError(f"{what} (quant_method {method!r}) is not supported: {UNQUANTIZED}, or a "
                                  "bitsandbytes 4-bit NF4 one (a *-bnb-4bit repository)")
    if flag("load_in_8bit"):
        raise NotImplementedError(f"{what}.load_in_8bit = true: bitsandbytes' 8-bit weights (LLM.int8: Linear8bitLt's "
                                  f"int8 weight and SCB) are not supported: {UNQUANTIZED}, or a 4-bit NF4 one")
    if flag("load_in_4bit") is not True:
        raise ValueError(f"{what}: quant_method bitsandbytes but load_in_4bit = {flag('load_in_4bit')!r}: the file "
                         "says neither 4-bit nor 8-bit; set load_in_4bit to true if its weights are 4-bit")
    if (kind := qc.get("bnb_4bit_quant_type", "fp4")) != "nf4":   # (transformers' default is fp4)
        raise NotImplementedError(f"{what}.bnb_4bit_quant_type = {kind!r}: only NF4 is supported (QLoRA's; FP4 is "
                                  f"another 4-bit table): {UNQUANTIZED}")
    storage = qc.get("bnb_4bit_quant_storage", "uint8")     # the dtype the code bytes are packed in (bf16 for FSDP)
    if not (isinstance(storage, str) and isinstance(getattr(torch, storage, None), torch.dtype)):
        raise NotImplementedError(f"{what}.bnb_4bit_quant_storage = {storage!r} is not a torch dtype (uint8, "
                                  "bfloat16, ...), which the packed codes are read from")
    # (llm_int8_skip_modules is not read: a weight without the NF4 keys is dense, whatever kept it so)
    return dict(double_quant=qc.get("bnb_4bit_use_double_quant") is True)


def stored(names, source, config=None):
    """{weight name: its keys in names} for the weights names hold in this form (a 4-bit checkpoint's); config: what
    settings() read from config.json at source (None: no quantization_config). The two must agree; FP4 and 8-bit
    tensors are refused by name."""
    found, names = {}, set(names)
    for n in names:
        if n.endswith((".quant_state.bitsandbytes__fp4", ".SCB", ".weight_format")):
            kind = "FP4" if n.endswith("fp4") else "8-bit (Linear8bitLt)"
            raise NotImplementedError(f"{source}: tensor {n!r} is a bitsandbytes {kind} weight's; only NF4 is "
                                      f"supported: {UNQUANTIZED}")
        if key := next((k for k in NF4_KEYS[1:] if n.endswith(k)), None):
            found.setdefault(n[: -len(key)], set()).add(n)
    for w, keys in found.items():
        if w in names:                        # the packed codes, under the weight's own name
            keys.add(w)
    if found and config is None:
        raise ValueError(f"{source} has no quantization_config, but its tensors are bitsandbytes NF4 weights (e.g. "
                         f"{min(found)}.absmax): restore the quantization_config the 4-bit model saved (quant_method "
                         "bitsandbytes, load_in_4bit true, bnb_4bit_quant_type nf4)")
    if config is not None and not found:
        raise ValueError(f"{source}: quantization_config says bitsandbytes 4-bit, but no tensor carries the NF4 keys "
                         "(weight.absmax, weight.quant_state.bitsandbytes__nf4): the weights are dense; remove "
                         "quantization_config from config.json, or give the 4-bit checkpoint's files")
    return found


def own_keys(sd, prefix):
    """The entries of sd that are the NF4 weight prefix's (a stray prefix.* key is not: nn.Module reports it)."""
    names = {prefix + k for k in NF4_KEYS}
    return {k: v for k, v in sd.items() if k in names}


def is_int(x):
    return type(x) is int  # JSON's 64.0 or true is not a block size


def require(ok, message):
    if not ok:
        raise ValueError(message)


def check_weight(w, block_size, block_sizes, double_quant=True):
    """What quantize_nf4 refuses: a block size bitsandbytes lacks, a double_quant not a bool ("no" is true), an
    integer weight, one that holds no values."""
    if not isinstance(double_quant, bool):
        raise TypeError(f"double_quant={double_quant!r}: give True (QLoRA's, bitsandbytes' nested scales) or False")
    if not (is_int(block_size) and block_size in block_sizes):
        raise ValueError(f"block_size {block_size!r} is not allowed; choose one of the integers {block_sizes}")
    if not w.is_floating_point():
        raise TypeError(f"NF4 quantizes floating-point weights, got {w.dtype}")
    if w.numel() == 0 or w.is_meta:
        what = "a meta-device" if w.is_meta else "an empty"
        raise ValueError(f"cannot quantize {what} tensor (shape {list(w.shape)}): it holds no values")


def checked(t, what, w=None):
    """The NF4Tensor t, if every block's scale is finite; else an error saying why: NaN/Inf values in the weight w it
    was quantized from, or (a NaN/Inf absmax read from a state dict, or double quantization's code * nested scale +
    offset overflowing fp32) how many scales, and where."""
    bad = ~torch.isfinite(t.block_absmax())
    if not bad.any():
        return t
    if w is not None and not (wf := w.detach().float()).isfinite().all():   # float64 beyond fp32's range: Inf
        where = [tuple(i) for i in (~torch.isfinite(wf)).nonzero()[:3].tolist()]
        raise ValueError(f"weight of shape {list(w.shape)} has {int(torch.isnan(wf).sum())} NaN and "
                         f"{int(torch.isinf(wf).sum())} Inf values, first at index {where}")
    too_big = "" if w is None else (f"; its values (up to {float(wf.abs().max()):.3g}) are too large for double "
                                    "quantization's fp32 scales: quantize with double_quant=False")
    raise ValueError(f"{what}: {int(bad.sum())} of {bad.numel()} block scales are NaN or Inf (first block "
                     f"{int(bad.nonzero()[0])}): they would dequantize to NaN/Inf{too_big}")


def state_dict(t, prefix, levels, nested_block_size):
    """The NF4Tensor t under bitsandbytes' names; levels: the NF4 table (written as quant_map)."""
    meta = {"quant_type": "nf4", "blocksize": t.block_size, "dtype": str(t.dtype).removeprefix("torch."),
            "shape": list(t.shape)}
    sd = {prefix: t.codes.view(-1, 1), f"{prefix}.absmax": t.absmax, f"{prefix}.quant_map": levels.clone()}
    if t.double_quant:
        sd[f"{prefix}.nested_absmax"] = t.nested_absmax
        sd[f"{prefix}.nested_quant_map"] = t.nested_code.clone()
        meta.update(nested_blocksize=nested_block_size, nested_dtype="float32", nested_offset=t.offset.item())
    sd[f"{prefix}.quant_state.bitsandbytes__nf4"] = torch.tensor(list(json.dumps(meta).encode()), dtype=torch.uint8)
    return sd


def read(sd, prefix, levels, block_sizes, nested_block_size, expect_shape=None):
    """NF4Tensor's arguments (codes, absmax, shape, dtype, block_size, and with double quantization nested_absmax,
    offset, nested_code) from bitsandbytes' keys under prefix (ours, or a checkpoint quantized by bitsandbytes);
    inconsistencies, and a shape other than expect_shape (a layer's) where given, are errors."""
    def need(*names):                            # the tensors under prefix + names; all must be there
        if missing := [prefix + k for k in names if prefix + k not in sd]:
            has = sorted(k for k in sd if k.startswith(prefix))
            raise ValueError(f"NF4 state dict is missing {missing} (has {has})")
        return [sd[prefix + k] for k in names]
    codes, absmax, qmap, meta = need("", ".absmax", ".quant_map", ".quant_state.bitsandbytes__nf4")
    try:
        meta = json.loads(bytes(meta.reshape(-1).tolist()).decode())
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # not bytes, UTF-8, JSON
        raise ValueError(f"{prefix}.quant_state.bitsandbytes__nf4 is not a JSON quant state ({e})") from None
    require(isinstance(meta, dict) and meta.get("quant_type") == "nf4" and is_int(meta.get("blocksize"))
            and meta["blocksize"] in block_sizes,
            f"{prefix}: unsupported quant state {meta} (need quant_type nf4, blocksize in {block_sizes})")
    require(torch.equal(qmap.float().cpu(), levels), f"{prefix}.quant_map is not the NF4 table")
    dtype = getattr(torch, str(meta.get("dtype")), None)
    require(isinstance(dtype, torch.dtype) and dtype.is_floating_point,
            f"{prefix}: dtype {meta.get('dtype')!r} is not a floating-point torch dtype")
    shape = meta.get("shape")
    require(isinstance(shape, list) and shape and all(is_int(d) and d > 0 for d in shape),
            f"{prefix}: shape {shape!r} is not a list of positive integers")
    codes, shape, bs = codes.reshape(-1), torch.Size(shape), meta["blocksize"]
    if stored := "" if codes.dtype == torch.uint8 else f" (stored as {codes.numel()} {codes.dtype})":
        codes = codes.contiguous().view(torch.uint8)   # bitsandbytes' quant_storage (bf16 for FSDP): the same bytes
    require(expect_shape is None or shape == expect_shape,
            f"{prefix}: shape {list(shape)} in state dict, {list(expect_shape or [])} in model")
    n_bytes, n_blocks = math.ceil(shape.numel() / 2), math.ceil(shape.numel() / bs)
    require(codes.numel() == n_bytes, f"{prefix}: {codes.numel()} code bytes for shape {list(shape)}, expected "
            f"{n_bytes}{stored}")
    require(absmax.numel() == n_blocks, f"{prefix}.absmax has {absmax.numel()} entries, expected {n_blocks}")
    fields = dict(codes=codes, absmax=absmax.reshape(-1), shape=shape, dtype=dtype, block_size=bs)
    if "nested_offset" not in meta:
        require(absmax.dtype == torch.float32, f"{prefix}.absmax is {absmax.dtype}, expected float32")
        return fields
    nested, nmap = need(".nested_absmax", ".nested_quant_map")              # double-quantized
    n_nested = math.ceil(n_blocks / nested_block_size)
    require(meta.get("nested_blocksize") == nested_block_size and nested.numel() == n_nested and nmap.numel() == 256,
            f"{prefix}: nested_blocksize {meta.get('nested_blocksize')}, {nested.numel()} nested scales, "
            f"{nmap.numel()}-entry nested code; expected {nested_block_size}, {n_nested}, 256")
    require(absmax.dtype == torch.uint8 and nested.is_floating_point() and nmap.is_floating_point()
            and type(meta["nested_offset"]) in (int, float),
            f"{prefix}: double quantization needs uint8 absmax codes, float nested_absmax and nested_quant_map "
            f"and a number nested_offset (found {absmax.dtype}, {nested.dtype}, {nmap.dtype}, "
            f"{meta['nested_offset']!r})")
    # The table is kept as the file has it, not replaced by DYNAMIC_CODE: dequantizing with the file's own table
    # is what bitsandbytes does, whatever table wrote it (bitsandbytes 0.50 writes DYNAMIC_CODE itself).
    offset = torch.tensor(float(meta["nested_offset"]), device=codes.device)
    return dict(fields, nested_absmax=nested.float().reshape(-1), offset=offset,
                nested_code=nmap.float().reshape(-1).to(codes.device))


# NF4Linear's nn.Module hooks: its weight is an NF4Tensor, which nn.Module would neither move nor save nor load

def apply(layer, fn, recurse=True):
    """model.to(device) moves the NF4 weight; model.to(dtype) must not cast its fp32 scales: fn's device only."""
    layer.weight = layer.weight.to(fn(torch.empty(0, device=layer.weight.device)).device)
    return torch.nn.Module._apply(layer, fn, recurse)


def save_to_state(layer, destination, prefix, keep_vars):
    """The bias, if any, as nn.Module saves it, and the weight under bitsandbytes' keys."""
    torch.nn.Module._save_to_state_dict(layer, destination, prefix, keep_vars)
    destination.update(layer.weight.state_dict(prefix + "weight"))


def load_state(layer, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
    """The weight from bitsandbytes' keys (an error into `errors`, as nn.Module collects them), then the bias."""
    mine = own_keys(state_dict, prefix + "weight")
    if not mine:                          # none of its keys: a missing key, an error only if strict, as nn.Module
        missing.append(prefix + "weight")
    else:
        try:
            w = type(layer.weight).from_state_dict(mine, prefix + "weight", layer.weight.shape)
            layer.weight = w.to(layer.weight.device)
        except ValueError as e:
            errors.append(str(e))
    torch.nn.Module._load_from_state_dict(layer, state_dict, prefix, local_metadata, strict, missing, unexpected,
                                          errors)
    unexpected[:] = [k for k in unexpected if k not in mine]      # the NF4 keys were consumed above
