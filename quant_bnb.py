"""quant_bnb.py: bitsandbytes' serialized NF4 form, the keys of a `*-bnb-4bit` checkpoint's Linear4bit weight.

    weight                                  uint8 (ceil(numel/2), 1)  the packed codes, as quant.py packs them (bytes
                                            of another dtype where bitsandbytes' quant_storage asked for one)
    weight.absmax                           float32 (n_blocks,); uint8 codes of the scales with double quantization
    weight.quant_map                        (16,) the NF4 levels
    weight.nested_absmax, .nested_quant_map double quantization only: the scales' fp32 absmax and their 8-bit code
    weight.quant_state.bitsandbytes__nf4    uint8 bytes of the JSON {quant_type, blocksize, dtype, shape, nested_*}

Our state dicts load in bitsandbytes and its checkpoints load here; a state dict that would not read back as it was
written (a missing key, a wrong count, a table that is not NF4's) is an error naming the key, never a silent guess.
Left out: FP4's quant_type and the other keys bitsandbytes can write (its 8-bit Linear8bitLt state).
quant.py's NF4Tensor.state_dict / from_state_dict and NF4Linear's state-dict hooks call this file, passing their
constants in (like quant_triton.py, it imports nothing of the project's). Not run on its own: tests/test_quant.py
checks it against bitsandbytes.
"""
import json
import math

import torch

# the keys of one NF4 weight in this form, after the weight's own name
NF4_KEYS = ("", ".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".quant_state.bitsandbytes__nf4")


def own_keys(sd, prefix):
    """The entries of sd that are the NF4 weight prefix's (a stray prefix.* key is not: nn.Module reports it)."""
    names = {prefix + k for k in NF4_KEYS}
    return {k: v for k, v in sd.items() if k in names}


def is_int(x):
    return type(x) is int  # JSON's 64.0 or true is not a block size


def require(ok, message):
    if not ok:
        raise ValueError(message)


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
    except (ValueError, TypeError, OverflowError) as e:  # not bytes, not UTF-8, not JSON
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
            f"{nmap.numel()}-entry nested code; expected 256, {n_nested}, 256")
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
