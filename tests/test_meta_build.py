"""load_pretrained's build on the meta device: no initialiser runs (checkpoint.MetaInit), so torch's meta normal_
does not import torch._dynamo (eval.py's start: 2.3 s of imports on a loaded 2-core machine); the weights a checkpoint
fills, and any real tensor built under MetaInit, stay what they were. And what a Meta params.json builds: its RoPE
fields computed as Meta's own code does (llama-models 0.3.0), keys that would make Meta's model another refused."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import model as M
from checkpoint import MetaInit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["llama-tiny", "gpt2-tiny", "roberta-tiny", "bert-tiny", "t5-tiny"]


def test_load_pretrained_imports_no_dynamo_and_loads_the_same_weights(tmp_path):
    """A fresh process loads a saved checkpoint: load_pretrained's meta build imported torch._dynamo (nn.Embedding's
    N(0, 1) fill on meta runs torch._refs.normal_); now it does not, and the loaded weights are the saved ones."""
    torch.manual_seed(0)
    saved = M.build_model("llama-tiny")
    M.save_pretrained(saved, tmp_path)
    code = ("import sys, torch, model\n"
            "loaded = model.load_pretrained(sys.argv[1])\n"
            "torch.save(loaded.state_dict(), sys.argv[1] + '/loaded.pt')\n"
            "print('dynamo' if 'torch._dynamo' in sys.modules else 'no dynamo')\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == "no dynamo"
    loaded, want = torch.load(tmp_path / "loaded.pt"), saved.state_dict()
    assert loaded.keys() == want.keys() and all(torch.equal(loaded[k], want[k]) for k in want)


def test_meta_init_builds_meta_models_without_dynamo_and_real_ones_as_ever():
    """Under MetaInit every tiny architecture builds on meta without importing torch._dynamo (a fresh process), and
    on the CPU draws the same numbers as without it: every tensor, and the generator's state after, equal."""
    code = ("import sys, torch, model\nfrom checkpoint import MetaInit\n"
            "with torch.device('meta'), MetaInit():\n"
            f"    built = [model.MODELS[c.model_type](c) for c in map(model.get_config, {TINY!r})]\n"
            "print('dynamo' if 'torch._dynamo' in sys.modules else 'no dynamo')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.split("\n")[-2] == "no dynamo", out.stderr
    for preset in TINY:
        config = M.get_config(preset)
        torch.manual_seed(0)
        with MetaInit():
            ours = M.MODELS[config.model_type](config).state_dict()
        after = torch.random.get_rng_state()
        torch.manual_seed(0)
        plain = M.build_model(config).state_dict()
        assert torch.equal(after, torch.random.get_rng_state()), preset
        assert ours.keys() == plain.keys() and all(torch.equal(ours[k], plain[k]) for k in ours), preset


# ----------------------------------------------------------------------------------------------------
# Meta's params.json RoPE fields, against Meta's own formula

def llama3_apply_scaling(freqs):
    """llama-models 0.3.0, llama_models/llama3/model.py apply_scaling, written out (the package needs fairscale): its
    constants, whatever params.json says."""
    scale_factor, low_freq_factor, high_freq_factor, old_context_len = 8, 1, 4, 8192
    low_freq_wavelen, high_freq_wavelen = old_context_len / low_freq_factor, old_context_len / high_freq_factor
    wavelen = 2 * torch.pi / freqs
    new_freqs = torch.where(wavelen > low_freq_wavelen, freqs / scale_factor, freqs)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    return torch.where((wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen),
                       (1 - smooth) * new_freqs / scale_factor + smooth * new_freqs, new_freqs)


def llama4_apply_scaling(freqs, scale_factor, high_freq_factor):
    """llama-models 0.3.0, llama_models/llama4/model.py apply_scaling, written out: a loop over the frequencies,
    low_freq_factor 1 and 8192 tokens fixed; scale_factor and high_freq_factor from ModelArgs (llama4/args.py:
    rope_scaling_factor, rope_high_freq_factor, 16 and 1 when params.json leaves them out)."""
    low_freq_factor, old_context_len = 1, 8192
    low_freq_wavelen, high_freq_wavelen = old_context_len / low_freq_factor, old_context_len / high_freq_factor
    new_freqs = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            new_freqs.append(freq)
        elif wavelen > low_freq_wavelen:
            new_freqs.append(freq / scale_factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            new_freqs.append((1 - smooth) * freq / scale_factor + smooth * freq)
    return torch.tensor(new_freqs, dtype=freqs.dtype)


def tiny_meta(directory, **params):
    """Meta's layout, one shard: random tensors under Meta's names (dim 64, 4 heads of 16, theta 500000: frequencies
    whose wavelengths run from 6 to 617k tokens, across 8192 / high_freq_factor .. 8192)."""
    os.makedirs(directory, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    shapes = {"tok_embeddings.weight": (32, 64), "norm.weight": (64,), "output.weight": (32, 64),
              **{f"layers.0.{k}": s for k, s in {
                  "attention.wq.weight": (64, 64), "attention.wk.weight": (64, 64), "attention.wv.weight": (64, 64),
                  "attention.wo.weight": (64, 64), "feed_forward.w1.weight": (192, 64),
                  "feed_forward.w2.weight": (64, 192), "feed_forward.w3.weight": (192, 64),
                  "attention_norm.weight": (64,), "ffn_norm.weight": (64,)}.items()}}
    torch.save({k: torch.randn(s, generator=g) for k, s in shapes.items()},
               os.path.join(directory, "consolidated.00.pth"))
    with open(os.path.join(directory, "params.json"), "w") as f:
        json.dump(dict(dim=64, n_layers=1, n_heads=4, multiple_of=32, norm_eps=1e-5, vocab_size=32, rope_theta=500000.0,
                       **params), f)
    return directory


@pytest.mark.parametrize("params, reference", [
    (dict(use_scaled_rope=True), llama3_apply_scaling),                                   # Llama 3.1-3.3's
    (dict(use_scaled_rope=True, rope_scaling_factor=16.0), lambda f: llama4_apply_scaling(f, 16.0, 1.0)),
    (dict(use_scaled_rope=True, rope_high_freq_factor=2.0), lambda f: llama4_apply_scaling(f, 16.0, 2.0)),
    (dict(use_scaled_rope=True, rope_scaling_factor=4, rope_high_freq_factor=4),
     lambda f: llama4_apply_scaling(f, 4, 4)),
    (dict(use_scaled_rope=False, rope_scaling_factor=16.0), lambda f: f),                 # not scaled: read by neither
])
def test_params_json_rope_fields_give_metas_frequencies(tmp_path, params, reference):
    """params.json's rope_scaling_factor was read with Llama 3's high_freq_factor 4 beside it; the Llama 4 code that
    reads that key takes rope_high_freq_factor from the file, 1 where it is absent, and 16 for an absent factor: a
    params.json of {use_scaled_rope, rope_scaling_factor: 16} computed other frequencies than Meta's (those between
    8192/4 and 8192 tokens of wavelength), silently. Now each is Meta's own formula's, to float32 rounding."""
    model = M.load_pretrained(tiny_meta(tmp_path / "meta", **params))
    c = model.config
    freqs = 1.0 / (c.rope_theta ** (torch.arange(0, c.hd, 2)[: (c.hd // 2)].float() / c.hd))  # Meta's precompute
    ours = M.rope_inv_freq(c.hd, c.rope_theta, c.rope_scaling)[0]
    want = reference(freqs)
    torch.testing.assert_close(ours, want, rtol=1e-6, atol=0)
    assert params.get("use_scaled_rope") is False or not torch.equal(want, freqs)  # (the scaling does something)


@pytest.mark.parametrize("key, value, words", [
    ("use_qk_norm", True, "use_qk_norm = true: Meta's code (llama_models) computes another model with it"),
    ("nope_layer_interval", 4, "nope_layer_interval = 4: Meta's code"),
    ("attention_chunk_size", 8192, "attention_chunk_size = 8192: Meta's code"),
    ("quantization_args", {"group_size": 32}, 'quantization_args = {"group_size": 32}: Meta\'s code'),
    ("sliding_window", 4096, "sliding_window = 4096: a key lorasp does not know"),
    ("head_dim", 32, "head_dim = 32: not dim / n_heads (16)"),
    ("rope_high_freq_factor", 0.5, "rope_high_freq_factor = 0.5 must be >= 1"),
])
def test_params_json_keys_that_change_metas_model_are_refused_by_name(tmp_path, key, value, words):
    """A params.json key Meta's code reads and lorasp does not (Llama 4's), one Meta's code does not know at all (it
    may be another reader's), loaded silently as a plain Llama; now refused, naming the file and the key. The same
    keys with the values that change nothing load (a Llama 4 params.json writes them out)."""
    d = tiny_meta(tmp_path / "meta", **{key: value}, use_scaled_rope=True)
    with pytest.raises((NotImplementedError, ValueError)) as e:
        M.load_pretrained(d)
    assert f"{d / 'params.json'}: " in str(e.value) and words in str(e.value), str(e.value)
    d = tiny_meta(tmp_path / "inert", use_qk_norm=False, nope_layer_interval=None, attention_chunk_size=None,
                  attn_temperature_tuning=False, moe_args=None, head_dim=16, max_seq_len=8192, max_batch_size=1,
                  floor_scale=8192.0, attn_scale=0.1, ffn_exp=4.0)
    assert M.load_pretrained(d).config.rope_scaling is None
