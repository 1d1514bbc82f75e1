"""GGUF K-quants against llama.cpp itself: tests/data/llamacpp/ holds a tiny random Llama quantized by llama.cpp's own
quantizer to Q4_K_M, Q6_K and Q3_K_M (as users' files are made) and the logits llama.cpp computed on each file
(tests/make_llamacpp_fixture.py, llama-cpp-python 0.3.36; nothing here imports llama.cpp). We read every tensor bit
for bit as gguf-py dequantizes it, rebuild the F32 source to llama.cpp's F32 logits, and reach llama.cpp's quantized
logits: within its 8-bit activation rounding, and to 1e-5 once that rounding (q8_K) is done on our side too."""
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader
from gguf.quants import dequantize

import ggufread as G
import model as M
from make_llamacpp_fixture import fingerprint, tiny_llama, write_f32

DATA = Path(__file__).parent / "data" / "llamacpp"
RECORD = json.loads((DATA / "logits.json").read_text())
IDS = torch.tensor([RECORD["ids"]])                                     # (1, 12)
# what llama.cpp's quantizer made of the 2-layer model (llama-quant.cpp's mixes: output.weight Q6_K; Q4_K_M gives
# layer 1's attn_v and ffn_down Q6_K, Q3_K_M every attn_v Q5_K and every attn_output and ffn_down Q4_K)
TYPES = {"Q4_K_M": {"Q4_K": 13, "Q6_K": 3, "F32": 5}, "Q6_K": {"Q6_K": 16, "F32": 5},
         "Q3_K_M": {"Q3_K": 9, "Q4_K": 4, "Q5_K": 2, "Q6_K": 1, "F32": 5}}
# llama.cpp rounds a K-quant matmul's activations to 8 bits (q8_K) first: its logits then differ from ours by up to
# 0.108 (mean 0.023; the logits' std is 1.64). Quantizing changed them by 0.25 (Q6_K) to 2.6 (Q3_K_M).
TOL, MEAN_TOL = 0.2, 0.04


def logits(path, q8_K=False):
    model = M.load_pretrained(path, dtype=torch.float64 if q8_K else None)
    if q8_K:
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):              # every matmul of ours has K-quant weights here
                module.register_forward_pre_hook(lambda _, args: (q8_K_round(args[0]),))
    with torch.no_grad():
        return model(IDS)[0]                                            # (12, 300)


def q8_K_round(x):
    """x rounded as ggml's quantize_row_q8_K rounds it (blocks of 256: q = round(-127 x / max), max the signed value
    of largest |x|, q <= 127; x' = q max / -127), the activations llama.cpp's K-quant dot products multiply."""
    b = x.reshape(*x.shape[:-1], -1, 256)
    iscale = -127.0 / b.gather(-1, b.abs().argmax(-1, keepdim=True))
    return (torch.round(iscale * b).clamp(max=127) / iscale).reshape(x.shape)


@pytest.mark.parametrize("name", TYPES)
def test_the_files_hold_llama_cpps_k_quants(name):
    _, tensors = G.read_gguf(DATA / f"tiny-{name}.gguf")
    assert Counter(G.GGML_TYPES[kind][0] for _, kind, _ in tensors.values()) == TYPES[name]


@pytest.mark.parametrize("name", TYPES)
def test_every_tensor_reads_as_gguf_py_dequantizes_it(name):
    path = DATA / f"tiny-{name}.gguf"
    ours = dict(G.gguf_tensors(path, G.read_gguf(path)[1]))
    for t in GGUFReader(path).tensors:
        want = torch.from_numpy(dequantize(t.data, t.tensor_type).astype(np.float32)).view(ours[t.name].shape)
        assert torch.equal(ours[t.name], want), t.name


def test_the_f32_source_gives_llama_cpps_logits(tmp_path):
    """The model before quantizing, rebuilt from its seed: llama.cpp's F32 logits to float rounding (the architecture,
    RoPE pairs and GQA read alike; what remains below is the quantization alone)."""
    tensors = tiny_llama()
    assert fingerprint(tensors) == RECORD["f32_sha256"]
    want = torch.tensor(RECORD["logits"]["F32"])
    torch.testing.assert_close(logits(write_f32(tmp_path / "tiny-f32.gguf", tensors)), want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", TYPES)
def test_quantized_logits_within_llama_cpps_activation_rounding(name):
    ours, want = logits(DATA / f"tiny-{name}.gguf"), torch.tensor(RECORD["logits"][name])
    diff = (ours - want).abs()
    assert want.std() > 1 and diff.max() < TOL and diff.mean() < MEAN_TOL, (diff.max(), diff.mean())
    top2 = want.topk(2, -1).values
    differ = ours.argmax(-1) != want.argmax(-1)                  # only where llama.cpp's own top two are within TOL
    assert differ.sum() <= 1 and (top2[differ, 0] - top2[differ, 1] < TOL).all()


@pytest.mark.parametrize("name", TYPES)
def test_quantized_logits_exact_once_we_round_activations_as_llama_cpp(name):
    """With q8_K rounding on our side, llama.cpp's logits to float rounding: its K-quant dot products are our dequantized
    weights times those 8-bit activations. In float64: in float32 our own rounding error put one value on the other
    side of a q8_K tie (Q3_K_M, token 3), which moved every logit after it by up to 0.08."""
    want = torch.tensor(RECORD["logits"][name], dtype=torch.float64)
    torch.testing.assert_close(logits(DATA / f"tiny-{name}.gguf", q8_K=True), want, atol=1e-5, rtol=0)


def test_a_stream_in_bfloat16_is_the_float32_one_rounded():
    """gguf_checkpoint(path, dtype): bfloat16 (and float64) written chunk by chunk equal the float32 tensors cast after
    (a bf16 load held both); float16 and None stay float32, for fill's cast to refuse values beyond float16's range."""
    path = DATA / "tiny-Q4_K_M.gguf"
    f32 = {name: t for _, name, t in G.gguf_checkpoint(path)[1]}
    assert {t.dtype for t in f32.values()} == {torch.float32} and len(f32) == 21
    for dtype, want in [(torch.bfloat16, torch.bfloat16), (torch.float64, torch.float64),
                        (torch.float16, torch.float32), (torch.float32, torch.float32)]:
        for _, name, t in G.gguf_checkpoint(path, dtype)[1]:
            assert t.dtype == want and torch.equal(t, f32[name].to(want)), (dtype, name)
