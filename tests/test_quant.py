"""quant.py against independent references: bitsandbytes' published constants and its NF4 functions (CPU), and
dense layers holding the dequantized weights. The tests that run on every device (a brute-force nearest-level search,
NF4Linear against a dense layer) are in test_quant_devices.py, which needs no bitsandbytes."""
import json
import math
import threading

import bitsandbytes as bnb
import bitsandbytes.functional as BF
import pytest
import torch
import torch.nn as nn

from quant import (BLOCK_SIZES, DYNAMIC_CODE, NF4_LEVELS, NF4Linear, NF4Tensor, quantize_nf4)

# bitsandbytes' NF4 table as published in its source (functional.py, get_4bit_type "nf4") and the QLoRA paper.
BNB_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
           -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
           0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
           0.7229568362236023, 1.0]


def weights(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 0.02).to(dtype)


def bnb_state_dict(codes, state):
    sd = {f"weight.{k}": v for k, v in state.as_dict(packed=True).items()}
    sd["weight"] = codes
    return sd


def test_levels_equal_bitsandbytes_constants():
    assert NF4_LEVELS.dtype == torch.float32 and NF4_LEVELS.shape == (16,)
    assert (NF4_LEVELS - torch.tensor(BNB_NF4)).abs().max() <= 1e-7
    assert torch.equal(NF4_LEVELS, BF.get_4bit_type("nf4", device="cpu"))      # in fact bit-identical
    assert NF4_LEVELS[7] == 0.0 and NF4_LEVELS[0] == -1.0 and NF4_LEVELS[-1] == 1.0


def test_dynamic_code_properties():
    c = DYNAMIC_CODE
    assert c.shape == (256,) and torch.all(c[1:] > c[:-1])              # 256 distinct values, sorted
    assert c[-1] == 1.0 and c[127] == 0.0 and (c > 0).sum() == 128 and (c < 0).sum() == 127
    assert torch.equal(c[:127], -c[128:255].flip(0))                    # signed: mirrored apart from 0 and 1
    assert c[128].item() == pytest.approx(0.55e-6, rel=1e-5)            # smallest magnitude: 10^-6 * 0.55
    assert torch.equal(c, BF.create_dynamic_map(signed=True))


def test_packing_order_and_tail():
    # One block of 3: absmax 2 -> scaled [1, -1, 0.0796..] -> levels 15, 0, 8; the pad nibble is level 7 (0.0).
    q = quantize_nf4(torch.tensor([2.0, -2.0, 2 * BNB_NF4[8]]), block_size=32, double_quant=False)
    assert q.codes.tolist() == [0xF0, 0x87]
    assert q.absmax.tolist() == [2.0]
    assert q.dequantize(torch.float32).tolist() == pytest.approx([2.0, -2.0, 2 * BNB_NF4[8]], abs=1e-7)
    # tail block with its own absmax: 70 values = one block of 64 and a tail of 6
    w = torch.cat([torch.full((64,), 0.5), torch.tensor([3.0, 0, 0, 0, 0, -3.0])])
    q = quantize_nf4(w, 64, double_quant=False)
    assert q.absmax.tolist() == [0.5, 3.0] and q.codes.numel() == 35
    assert q.codes[-3:].tolist() == [0xF7, 0x77, 0x70]


def test_double_quant_bits_per_parameter():
    w = weights((1024, 1024))
    q = quantize_nf4(w)
    # codes + 8-bit scales + fp32 scale per 256 blocks + the fp32 offset
    assert q.nbytes == 1024 * 1024 // 2 + 1024 * 1024 // 64 + 4 * 1024 * 1024 // (64 * 256) + 4
    assert round(8 * q.nbytes / w.numel(), 3) == 4.127
    assert round(8 * quantize_nf4(w, double_quant=False).nbytes / w.numel(), 3) == 4.5


@pytest.mark.parametrize("shape,block_size,dtype", [((64, 128), 64, torch.float32), ((300, 257), 32, torch.bfloat16),
                                                    ((513, 999), 128, torch.float16), ((4096, 512), 64, torch.bfloat16),
                                                    ((7, 3), 4096, torch.float32), ((96, 4096), 2048, torch.float32)])
def test_codes_and_values_equal_bitsandbytes(shape, block_size, dtype):
    w = weights(shape, dtype, seed=sum(shape))
    ref_codes, ref_state = BF.quantize_4bit(w, blocksize=block_size, quant_type="nf4", compress_statistics=False)
    ours = quantize_nf4(w, block_size, double_quant=False)
    assert torch.equal(ours.codes, ref_codes.view(-1))                   # byte for byte
    assert torch.equal(ours.absmax, ref_state.absmax)
    assert torch.equal(ours.dequantize(dtype), BF.dequantize_4bit(ref_codes, ref_state).view(shape))
    # Double quantization: bitsandbytes' own steps (offset = mean absmax, then 8-bit blockwise in 256s), using
    # its pure-PyTorch kernel, which picks the nearest code as its CUDA kernel does.
    offset = ref_state.absmax.mean()
    redispatch = torch.ops.bitsandbytes.quantize_blockwise.default.redispatch
    q8, absmax2 = redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd),
                             ref_state.absmax - offset, BF.create_dynamic_map(), 256)
    dq = quantize_nf4(w, block_size)
    assert torch.equal(dq.codes, ours.codes) and torch.equal(dq.absmax, q8.view(-1))
    # (bitsandbytes clamps an all-zero last block's scale to 1e-38, here when the weight has a single block)
    assert torch.all((dq.nested_absmax == absmax2) | ((absmax2 == 1e-38) & (dq.nested_absmax == 0)))
    assert dq.offset.item() == offset.item()
    ref_absmax = BF.dequantize_blockwise(q8, absmax=absmax2, code=BF.create_dynamic_map(), blocksize=256) + offset
    assert torch.equal(dq.block_absmax(), ref_absmax.view(-1))


def test_a_block_of_negative_zeros_has_bitsandbytes_bytes():
    """An all -0.0 block's absmax is +0.0 in bitsandbytes' bytes too (it was -0.0: equal as a value, not as bytes)."""
    w = torch.cat([torch.full((64,), -0.0), weights((64,), seed=3), torch.zeros(64)])
    ref_codes, ref_state = BF.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=False)
    ours = quantize_nf4(w, 64, double_quant=False)
    assert torch.equal(ours.codes, ref_codes.view(-1))
    assert torch.equal(ours.absmax.view(torch.int32), ref_state.absmax.view(torch.int32))  # bit patterns


def test_values_on_a_midpoint_take_the_lower_level_as_in_bitsandbytes():
    """A scaled value exactly on a midpoint between two levels rounds to the lower one (bucketize's and bitsandbytes'
    `x > midpoint` rule); random weights never land there, so each block here holds 1.0 (absmax 1: scaled = x)."""
    mids = (NF4_LEVELS[:-1] + NF4_LEVELS[1:]) / 2
    w = torch.zeros(15, 64)
    w[:, 0], w[:, 1] = 1.0, mids
    ref_codes, _ = BF.quantize_4bit(w.view(-1), blocksize=64, quant_type="nf4", compress_statistics=False)
    ours = quantize_nf4(w.view(-1), 64, double_quant=False)
    assert torch.equal(ours.codes, ref_codes.view(-1))
    assert (ours.codes.view(15, 32)[:, 0] & 15).tolist() == list(range(15))   # midpoint k -> level k, not k + 1


def test_scaling_by_the_reciprocal_as_bitsandbytes_picks_its_codes():
    """Values are scaled as x * (1/absmax), bitsandbytes' way: in these blocks x / absmax falls on the other side of a
    midpoint (the last bit differs) and would pick a neighbouring code."""
    pairs = [(0.05962566286325455, -0.05056830868124962), (0.04074228182435036, -0.03455337882041931),
             (0.05900934338569641, -0.03603304550051689)]                       # (absmax, x), each exact in fp32
    mids = (NF4_LEVELS[:-1] + NF4_LEVELS[1:]) / 2
    w = torch.zeros(len(pairs), 64)
    w[:, :2] = torch.tensor(pairs)
    a, x = w[:, 0], w[:, 1]
    assert torch.all(torch.bucketize(x / a, mids) != torch.bucketize(x * (1 / a), mids))   # the cases are such
    ref_codes, _ = BF.quantize_4bit(w.view(-1), blocksize=64, quant_type="nf4", compress_statistics=False)
    ours = quantize_nf4(w.view(-1), 64, double_quant=False)
    assert torch.equal(ours.codes, ref_codes.view(-1))
    assert torch.equal(ours.codes.view(-1, 32)[:, 0] & 15, torch.bucketize(x * (1 / a), mids).to(torch.uint8))


def test_double_quant_against_bitsandbytes_cpu_library():
    """bitsandbytes' compiled CPU routine for the 8-bit scales is not always nearest: where it differs from us,
    our code must be strictly nearer. Each side's state, read by the other, dequantizes to identical values."""
    w = weights((1024, 1024), torch.bfloat16, seed=7)
    codes, state = BF.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    ours = quantize_nf4(w, 64)
    assert torch.equal(ours.codes, codes.view(-1))
    assert torch.equal(ours.nested_absmax, state.state2.absmax) and ours.offset.item() == state.offset.item()
    centred = (BF.quantize_4bit(w, blocksize=64, quant_type="nf4")[1].absmax - ours.offset).view(-1, 256)
    normed = (centred / ours.nested_absmax[:, None]).view(-1)
    differ = ours.absmax != state.absmax
    assert differ.float().mean() < 0.01
    dist = lambda idx: (normed[differ] - DYNAMIC_CODE[idx[differ].long()]).abs()
    assert torch.all(dist(ours.absmax) < dist(state.absmax))
    theirs = NF4Tensor.from_state_dict(bnb_state_dict(codes, state))       # we read bitsandbytes' state
    assert torch.equal(theirs.dequantize(torch.bfloat16), BF.dequantize_4bit(codes, state))
    qs = BF.QuantState.from_dict({k[len("weight."):]: v for k, v in ours.state_dict().items() if k != "weight"},
                                 device=torch.device("cpu"))                # bitsandbytes reads ours
    assert torch.equal(BF.dequantize_4bit(ours.codes.view(-1, 1), qs), ours.dequantize(torch.bfloat16))


def test_bitsandbytes_reads_our_linear_state_dict():
    """The path transformers takes for a pre-quantized `*-bnb-4bit` checkpoint: Params4bit.from_prequantized."""
    ours = NF4Linear.from_linear(nn.Linear(128, 64))
    sd = ours.state_dict()
    stats = {k: v for k, v in sd.items() if k.startswith("weight.")}
    param = bnb.nn.Params4bit.from_prequantized(data=sd["weight"], quantized_stats=stats, device="cpu")
    assert param.quant_state.shape == (64, 128) and param.quant_state.nested
    w_ref = BF.dequantize_4bit(param.data, param.quant_state)
    assert torch.equal(w_ref, ours.weight.dequantize(torch.float32))


def test_threads_dequantize_into_their_own_buffers():
    """Two threads running NF4 matmuls at once (an evaluation beside training): with one dequantize buffer per process
    each overwrote the weight the other was multiplying by, silently. Each thread's buffer is its own."""
    torch.manual_seed(0)
    layers = [NF4Linear.from_linear(nn.Linear(256, 512, bias=False)) for _ in range(2)]
    xs = [torch.randn(64, 256) for _ in range(2)]
    refs = [x @ q.weight.dequantize(torch.float32).T for q, x in zip(layers, xs)]
    start, outs = threading.Barrier(2), [[], []]

    def work(i):
        start.wait()
        with torch.no_grad():
            outs[i] += [layers[i](xs[i]) for _ in range(200)]
    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        assert len(outs[i]) == 200 and all(torch.equal(y, refs[i]) for y in outs[i])


def test_layers_sharing_the_dequantize_buffer_keep_their_own_weights(monkeypatch):
    """On CPU every NF4 matmul dequantizes into one buffer per dtype: a stack of layers of different sizes, run
    forward then backward (each layer's backward after the others' forwards overwrote the buffer), equals the same
    stack of dense layers holding the dequantized weights; the buffer is the largest weight's size."""
    import quant_torch
    monkeypatch.setattr(quant_torch, "_kept", threading.local())    # whatever earlier tests left: not counted
    torch.manual_seed(0)
    shapes = [(64, 96), (96, 256), (256, 32)]                       # (in, out): the middle one is the largest
    nf4 = [NF4Linear.from_linear(nn.Linear(i, o, bias=False)) for i, o in shapes]
    dense = [nn.Linear(i, o, bias=False) for i, o in shapes]
    for q, d in zip(nf4, dense):
        d.weight.data = q.weight.dequantize(torch.float32)
    x1 = torch.randn(4, 64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y1, y2 = x1, x2
    for q, d in zip(nf4, dense):
        y1, y2 = torch.tanh(q(y1)), torch.tanh(d(y2))
    torch.testing.assert_close(y1, y2, rtol=0, atol=1e-6)
    y1.square().sum().backward()
    y2.square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=0, atol=1e-6)
    assert vars(quant_torch._kept)[("dequantize", torch.float32)].numel() == 96 * 256
    with pytest.raises(ValueError, match="needs a torch.float32 buffer of 6144 elements"):
        nf4[0].weight.dequantize(torch.float32, buffer=torch.empty(100))          # too small: refused, not cut
    with pytest.raises(ValueError, match="got torch.bfloat16"):
        nf4[0].weight.dequantize(torch.float32, buffer=torch.empty(6144, dtype=torch.bfloat16))


def test_nf4linear_saves_nothing_input_sized_for_backward():
    layer = NF4Linear.from_linear(nn.Linear(256, 256, bias=False))
    x = torch.randn(8, 256, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = layer(x)
    assert saved == []                                   # neither x nor a dequantized (256, 256) copy
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_nf4linear_dtype_autocast_and_to():
    layer = NF4Linear.from_linear(nn.Linear(64, 32))
    before = layer.weight.block_absmax().clone()
    layer.to(torch.bfloat16)                             # casts the bias, never the NF4 scales
    assert layer.bias.dtype == torch.bfloat16 and torch.equal(layer.weight.block_absmax(), before)
    assert layer(torch.randn(2, 64, dtype=torch.bfloat16)).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(torch.randn(2, 64)).dtype == torch.bfloat16
    moved = layer.weight.to("cpu")
    assert torch.equal(moved.dequantize(), layer.weight.dequantize())


def test_state_dict_round_trip():
    a = NF4Linear.from_linear(nn.Linear(100, 30))        # 3000 values: a tail block, odd block count
    sd = a.state_dict()
    assert set(sd) == {"bias", "weight", "weight.absmax", "weight.quant_map", "weight.nested_absmax",
                       "weight.nested_quant_map", "weight.quant_state.bitsandbytes__nf4"}
    meta = json.loads(bytes(sd["weight.quant_state.bitsandbytes__nf4"].tolist()))
    assert meta == {"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [30, 100],
                    "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": a.weight.offset.item()}
    b = NF4Linear.from_linear(nn.Linear(100, 30))
    b.load_state_dict(sd)                                # strict: every key consumed, none missing
    assert torch.equal(b.weight.dequantize(), a.weight.dequantize()) and torch.equal(b.bias, a.bias)


def test_bad_input_errors():
    with pytest.raises(TypeError, match="floating-point"):
        quantize_nf4(torch.arange(64))
    with pytest.raises(ValueError, match="empty"):
        quantize_nf4(torch.zeros(0, 4))
    w = torch.randn(4, 16)
    w[1, 3], w[2, 0], w[3, 3] = float("nan"), float("inf"), float("nan")
    with pytest.raises(ValueError, match=r"2 NaN and 1 Inf values, first at index \[\(1, 3\), \(2, 0\), \(3, 3\)\]"):
        quantize_nf4(w)
    big = torch.ones(2, 64, dtype=torch.float64)
    big[1, 5] = 1e300  # finite in float64, Inf once in float32, where the scales live
    with pytest.raises(ValueError, match=r"0 NaN and 1 Inf values, first at index \[\(1, 5\)\]"):
        quantize_nf4(big)
    for bs in (16, 48, 8192):
        with pytest.raises(ValueError, match="block_size"):
            quantize_nf4(torch.randn(64), block_size=bs)
    assert BLOCK_SIZES == (32, 64, 128, 256, 512, 1024, 2048, 4096)


def test_bad_state_dict_errors():
    sd = NF4Linear.from_linear(nn.Linear(64, 8, bias=False)).state_dict()
    with pytest.raises(ValueError, match="missing.*weight.absmax"):
        NF4Tensor.from_state_dict({k: v for k, v in sd.items() if k != "weight.absmax"})
    with pytest.raises(ValueError, match="code bytes for shape"):
        NF4Tensor.from_state_dict({**sd, "weight": sd["weight"][:-1]})
    with pytest.raises(ValueError, match="absmax has 7 entries"):
        NF4Tensor.from_state_dict({**sd, "weight.absmax": sd["weight.absmax"][:-1]})
    with pytest.raises(ValueError, match="nested_absmax"):
        NF4Tensor.from_state_dict({k: v for k, v in sd.items() if k != "weight.nested_absmax"})
    with pytest.raises(ValueError, match="not the NF4 table"):
        NF4Tensor.from_state_dict({**sd, "weight.quant_map": torch.linspace(-1, 1, 16)})
    other = NF4Linear.from_linear(nn.Linear(32, 8, bias=False))
    with pytest.raises(RuntimeError, match=r"shape \[8, 64\] in state dict, \[8, 32\] in model"):
        other.load_state_dict(sd)
    assert math.isclose(other.weight.dequantize(torch.float32).abs().max().item(),
                        other.weight.block_absmax().max().item(), rel_tol=1e-6)  # untouched after the error


def test_strict_load_names_a_stray_weight_key():
    """Only bitsandbytes' NF4 keys are the weight's: any other weight.* key is unexpected, as nn.Module reports it
    (it used to be taken as the weight's and dropped without a word). Our own state dicts and bitsandbytes' load."""
    model = nn.Sequential(NF4Linear.from_linear(nn.Linear(64, 8)))
    sd = model.state_dict()
    for stray in ("0.weight.extra", "0.weight.absmax.x", "0.weightx"):
        with pytest.raises(RuntimeError, match=rf'Unexpected key\(s\) in state_dict: "{stray}"'):
            model.load_state_dict({**sd, stray: torch.zeros(1)})
    assert model.load_state_dict({**sd, "0.weight.extra": torch.zeros(1)}, strict=False).unexpected_keys == \
        ["0.weight.extra"]
    model.load_state_dict(sd)
    for double in (True, False):
        codes, state = BF.quantize_4bit(weights((8, 64)), blocksize=64, quant_type="nf4", compress_statistics=double)
        model.load_state_dict({f"0.{k}": v for k, v in bnb_state_dict(codes, state).items()} | {"0.bias": sd["0.bias"]})
        assert model[0].weight.double_quant == double
        torch.testing.assert_close(model[0].weight.dequantize(torch.float32), BF.dequantize_4bit(codes, state))


def test_an_integer_input_or_dtype_is_refused_not_truncated():
    """An NF4Linear given integer activations dequantized its weight to that dtype, every |w| < 1 truncated to 0, and
    returned zeros without a word (nn.Linear refuses); dequantize(torch.int32) truncated the same way."""
    layer = NF4Linear.from_linear(nn.Linear(64, 8))
    with pytest.raises(TypeError, match="floating-point dtype .* got torch.int64"):
        layer(torch.ones(3, 64, dtype=torch.long))
    with pytest.raises(TypeError, match="floating-point dtype .* got torch.int32"):
        layer.weight.dequantize(torch.int32)
    x = torch.randn(3, 64, dtype=torch.float64)                 # a float dtype wider than the scales: computed in it
    torch.testing.assert_close(layer(x), x @ layer.weight.dequantize(torch.float64).T + layer.bias.double())


def test_an_input_on_another_device_than_the_layer_is_an_error_naming_both():
    """An input on another device than the NF4 weight failed deep inside (autocast's "unknown device type" for a meta
    input, "Tensor on device meta is not on the expected device cpu!" for a meta layer): the error names both."""
    layer = NF4Linear.from_linear(nn.Linear(64, 8))
    with pytest.raises(ValueError, match="NF4Linear: input on meta, weight on cpu"):
        layer(torch.randn(3, 64, device="meta"))
    with pytest.raises(ValueError, match="NF4Linear: input on cpu, weight on meta"):
        NF4Linear.from_linear(nn.Linear(64, 8)).to("meta")(torch.randn(3, 64))


def test_a_state_dict_without_the_nf4_weight_is_a_missing_key_as_nn_module_reports_it():
    """load_state_dict(..., strict=False) of a dict without an NF4 layer's weight (the other layers' tensors, say)
    raised "NF4 state dict is missing [...]" where nn.Linear reports a missing key: now the same as nn.Linear, and
    the weight kept. A weight with some of its NF4 keys is still an error."""
    model = nn.Sequential(NF4Linear.from_linear(nn.Linear(64, 8)), nn.Linear(8, 4))
    before = model[0].weight.dequantize()
    others = {k: v for k, v in model.state_dict().items() if k.startswith("1.")}
    assert model.load_state_dict(others, strict=False).missing_keys == ["0.weight", "0.bias"]
    assert torch.equal(model[0].weight.dequantize(), before)
    dense = nn.Sequential(nn.Linear(64, 8), nn.Linear(8, 4))
    assert dense.load_state_dict(others, strict=False).missing_keys == ["0.weight", "0.bias"]   # the reference
    with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "0.weight", "0.bias"'):
        model.load_state_dict(others)
    with pytest.raises(RuntimeError, match="NF4 state dict is missing"):
        model.load_state_dict({**others, "0.weight": model.state_dict()["0.weight"]}, strict=False)


def test_a_meta_weight_is_refused_before_quantizing():
    """A weight on the meta device (a model built there, its weights not yet loaded) failed with "Tensor.item() cannot
    be called on meta tensors" (double quantization's offset) or a bool() of a meta tensor: now a one-line error."""
    for double_quant in (True, False):
        with pytest.raises(ValueError, match=r"cannot quantize a meta-device tensor \(shape \[8, 64\]\): it holds no "):
            quantize_nf4(torch.empty(8, 64, device="meta"), double_quant=double_quant)
        with pytest.raises(ValueError, match="meta-device"):
            NF4Linear.from_linear(nn.Linear(64, 8, device="meta"), double_quant=double_quant)


@pytest.mark.parametrize("storage", [torch.bfloat16, torch.float32, torch.int8])
def test_codes_stored_in_another_dtype_load_as_bitsandbytes_reads_them(storage):
    """bitsandbytes' quant_storage (bf16 for FSDP-QLoRA) keeps the packed code bytes in another dtype's tensor, and
    its checkpoints carry them so; they were refused ("750 torch.bfloat16 code bytes ..., expected 1500 uint8"). The
    bytes are read as bytes, as bitsandbytes dequantizes them."""
    w = weights((30, 100), torch.bfloat16, seed=5)
    codes, state = BF.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True, quant_storage=storage)
    assert codes.dtype == storage
    model = nn.Sequential(NF4Linear.from_linear(nn.Linear(100, 30, bias=False)))
    model.load_state_dict({f"0.{k}": v for k, v in bnb_state_dict(codes, state).items()})
    assert torch.equal(model[0].weight.dequantize(), BF.dequantize_4bit(codes, state))
    assert torch.equal(model[0].weight.codes, quantize_nf4(w).codes)
    short = codes.reshape(-1).view(torch.uint8)[:1498].view(torch.int16)          # a byte pair short
    with pytest.raises(ValueError, match=r"1498 code bytes for shape \[30, 100\], expected 1500 \(stored as 749 "):
        NF4Tensor.from_state_dict({**bnb_state_dict(codes, state), "weight": short})
