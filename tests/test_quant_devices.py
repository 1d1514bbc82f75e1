"""NF4 on every device in fixtures.DEVICES (CPU here; CUDA too where bench/gpu_check.py runs them): codes against a
brute-force nearest-level search made on the CPU, the rounding bound, and NF4Linear against a dense layer. This file
imports no bitsandbytes, so it runs on a GPU machine that lacks it."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from fixtures import DEVICES
from quant import NF4_LEVELS, NF4Linear, quantize_nf4


def weights(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 0.02


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("block_size", [32, 64, 256, 4096])
def test_codes_and_bf16_values_equal_brute_force_argmin(block_size, device):
    w = weights((37, 91), seed=block_size)                               # 3367 values: a tail block
    q = quantize_nf4(w.to(device), block_size, double_quant=False)
    flat = torch.nn.functional.pad(w.reshape(-1), (0, -w.numel() % block_size)).view(-1, block_size)
    absmax = flat.abs().amax(1, keepdim=True)
    nearest = (flat * (1 / absmax))[..., None].sub(NF4_LEVELS).abs().argmin(-1)  # ties: first = lower
    codes = torch.stack([q.codes >> 4, q.codes & 15], 1).view(-1)[: w.numel()]
    assert q.codes.device.type == device
    assert torch.equal(codes.cpu().long(), nearest.view(-1)[: w.numel()])
    assert torch.equal(q.absmax.cpu(), absmax.view(-1))
    values = (NF4_LEVELS[nearest] * absmax).view(-1)[: w.numel()].to(torch.bfloat16).view(w.shape)
    assert torch.equal(q.dequantize(torch.bfloat16).cpu(), values)        # level x scale in fp32, then rounded


@pytest.mark.parametrize("device", DEVICES)
def test_error_is_within_half_the_widest_gap_per_block(device):
    w = weights((64, 320), seed=3).to(device)
    q = quantize_nf4(w, 64)
    err = (q.dequantize(torch.float32) - w).reshape(-1, 64).abs().amax(1)
    half_gap = (NF4_LEVELS[1:] - NF4_LEVELS[:-1]).max() / 2
    absmax = w.reshape(-1, 64).abs().amax(1)
    # double quantization perturbs each scale slightly: allow 1% on top of the rounding bound
    assert torch.all(err.cpu() <= absmax.cpu() * (half_gap * 1.01 + 0.01))


@pytest.mark.parametrize("device", DEVICES)
def test_nf4linear_matches_dense_layer_on_dequantized_weight(device):
    base = nn.Linear(96, 40).to(device)
    layer = NF4Linear.from_linear(base)
    dense = nn.Linear(96, 40).to(device)
    with torch.no_grad():
        dense.weight.copy_(layer.weight.dequantize(torch.float32))
        dense.bias.copy_(base.bias)
    x1 = torch.randn(3, 5, 96, device=device, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    torch.testing.assert_close(layer(x1), dense(x2), rtol=0, atol=1e-6)
    g = torch.randn(3, 5, 40, device=device)
    layer(x1).backward(g)
    dense(x2).backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=0, atol=1e-6)
    assert [p for p in layer.parameters() if p.requires_grad] == []       # no weight (or bias) gradient


def kernel_equals_torch_path(device):
    """quant_triton's kernel against quant.py's torch path, bit for bit, over block sizes, tails, double quantization
    on and off and the three output dtypes."""
    import quant_torch
    import quant_triton
    torch.manual_seed(0)
    for shape in [(37, 91), (300, 257), (4099,)]:
        w = (torch.randn(shape) * 0.02).to(device)
        for block_size in (32, 64, 4096):
            for double_quant in (True, False):
                q = quantize_nf4(w, block_size, double_quant=double_quant)
                for dtype in (torch.bfloat16, torch.float16, torch.float32):
                    out = torch.full((w.numel(),), float("nan"), dtype=dtype, device=device)
                    quant_triton.dequantize(q, NF4_LEVELS.to(device), out)
                    quant_torch.TRITON = False
                    try:
                        ref = q.dequantize(dtype)
                    finally:
                        quant_torch.TRITON = True
                    assert torch.equal(out.view(shape), ref), (shape, block_size, double_quant, dtype)
    # codes that arrive as a strided view (a state dict can hold one) are read as values, not as raw memory
    q = quantize_nf4(w, 64)
    spread = torch.zeros(2 * q.codes.numel(), dtype=torch.uint8, device=device)
    spread[::2] = q.codes
    q.codes = spread[::2]
    out = torch.empty(w.numel(), dtype=torch.bfloat16, device=device)
    quant_triton.dequantize(q, NF4_LEVELS.to(device), out)
    quant_torch.TRITON = False
    try:
        assert torch.equal(out.view(w.shape), q.dequantize(torch.bfloat16))
    finally:
        quant_torch.TRITON = True
    with pytest.raises(ValueError, match="must all be on"):                  # raw pointers: never across devices
        quant_triton.dequantize(q, NF4_LEVELS.to("meta"), out)


@pytest.mark.parametrize("device", DEVICES)
def test_triton_kernel_equals_the_torch_path(device):
    """On CUDA the compiled kernel; on CPU the same kernel through Triton's interpreter (TRITON_INTERPRET=1, set before
    Triton is imported, hence a fresh process)."""
    if device != "cpu":
        return kernel_equals_torch_path(device)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = "import test_quant_devices as t; t.kernel_equals_torch_path('cpu'); print('equal')"
    path = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path}
    p = subprocess.run([sys.executable, "-c", code], cwd=os.path.join(root, "tests"), capture_output=True, text=True,
                       env=env)
    assert p.returncode == 0 and p.stdout.split() == ["equal"], p.stderr[-3000:]
