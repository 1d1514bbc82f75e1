"""Backbones and loading against transformers (a test-only oracle): tiny random checkpoints written by the test in the
public layouts (HF sharded safetensors + index, pytorch_model*.bin, Meta's consolidated.NN.pth) load to the same
logits."""
import io
import json
import os
import pickletools
import re
import shutil
import sys

import pytest
import torch
import transformers

from fixtures import DEVICES, flags, random_params, tiny  # noqa: F401  (tiny: a fixture)
import checkpoint as C
import model as M
from quant import NF4Linear

V, T = 128, 12


@pytest.fixture(scope="module")
def hf_llama(tmp_path_factory):
    """LlamaForCausalLM with GQA (4 heads, 2 kv heads), non-default theta and eps, saved as 2 safetensors shards."""
    c = transformers.LlamaConfig(vocab_size=V, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=5000.0,
                                 max_position_embeddings=256, tie_word_embeddings=False)
    ref = random_params(transformers.LlamaForCausalLM(c), 0).eval()
    d = tmp_path_factory.mktemp("llama")
    ref.save_pretrained(d, max_shard_size="300KB")
    assert len([f for f in os.listdir(d) if f.endswith(".safetensors")]) == 2, os.listdir(d)
    assert (d / "model.safetensors.index.json").exists()
    return ref, d


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory):
    c = transformers.GPT2Config(vocab_size=V, n_positions=64, n_embd=64, n_layer=2, n_head=4)
    ref = random_params(transformers.GPT2LMHeadModel(c), 1).eval()
    d = tmp_path_factory.mktemp("gpt2")
    ref.save_pretrained(d)
    return ref, d


def ids(B=2, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def test_llama_sharded_safetensors_matches_transformers(hf_llama):
    ref, d = hf_llama
    ours = M.load_pretrained(d)
    assert isinstance(ours, M.Llama) and ours.config.n_kv_head == 2 and ours.config.rope_theta == 5000.0
    x = ids()
    torch.testing.assert_close(ours(x), ref(x).logits, atol=1e-4, rtol=0)


def test_llama_padding_left_and_right(hf_llama):
    ref, d = hf_llama
    ours, x = M.load_pretrained(d), ids()
    for mask in (torch.tensor([[0] * 3 + [1] * (T - 3), [1] * T]), torch.tensor([[1] * (T - 4) + [0] * 4, [1] * T])):
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        want = ref(x, attention_mask=mask, position_ids=pos).logits
        got = ours(x, attention_mask=mask)
        torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-4, rtol=0)
        assert torch.isfinite(got).all()


def test_gpt2_safetensors_and_bin_match_transformers(hf_gpt2, tmp_path):
    ref, d = hf_gpt2
    x = ids()
    torch.testing.assert_close(M.load_pretrained(d)(x), ref(x).logits, atol=1e-4, rtol=0)
    # the original `gpt2` files: pytorch_model.bin of GPT2Model (no "transformer." prefix, causal-mask buffers)
    state = {k.removeprefix("transformer."): v for k, v in ref.state_dict().items() if k != "lm_head.weight"}
    for i in range(2):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    torch.testing.assert_close(M.load_pretrained(tmp_path)(x), ref(x).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fields", [dict(activation_function="gelu"), dict(activation_function="relu"),
                                    dict(n_inner=48), dict(n_inner=256), dict(scale_attn_weights=False),
                                    dict(scale_attn_by_inverse_layer_idx=True, reorder_and_upcast_attn=True),
                                    dict(layer_norm_epsilon=0.3, n_layer=3)])
def test_gpt2_config_fields_as_transformers_reads_them(fields, tmp_path):
    """GPT-2 config.json fields that change the forward pass (distilgpt2 and the GPT-2s trained by others carry them):
    the MLP activation and width, attention logits unscaled or scaled by 1/(layer + 1) (Stanford CRFM's runs), the
    LayerNorm eps. Each was refused (only GPT-2 as released)."""
    c = transformers.GPT2Config(**dict(dict(vocab_size=V, n_positions=64, n_embd=64, n_layer=2, n_head=4), **fields))
    random_params(transformers.GPT2LMHeadModel(c), 3).save_pretrained(tmp_path)
    ref, ours = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval(), M.load_pretrained(tmp_path)
    x, mask = ids(), torch.tensor([[1] * T, [1] * (T - 3) + [0] * 3])
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x).logits, atol=1e-4, rtol=0)
        got, want = ours(x, attention_mask=mask), ref(x, attention_mask=mask).logits
        torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-4, rtol=0)
    M.save_pretrained(ours, tmp_path / "back")  # and written back as transformers reads it
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, ref(x).logits, atol=1e-5, rtol=0)


def test_untied_heads_load_as_transformers_loads_them(hf_llama, tmp_path):
    """A GPT-2 with tie_word_embeddings: false and its own lm_head; a Llama whose config says tied but whose file
    stores a different lm_head.weight (transformers 5 keeps it, untied). Neither head is dropped for the embedding."""
    c = transformers.GPT2Config(vocab_size=V, n_positions=64, n_embd=64, n_layer=2, n_head=4, tie_word_embeddings=False)
    ref = random_params(transformers.GPT2LMHeadModel(c), 2)
    ref.save_pretrained(tmp_path / "gpt2")
    ours, x = M.load_pretrained(tmp_path / "gpt2"), ids()
    assert ours.lm_head.weight is not ours.transformer.wte.weight
    torch.testing.assert_close(ours(x), ref(x).logits, atol=1e-4, rtol=0)
    ref, d = hf_llama
    config = json.loads((d / "config.json").read_text())
    for f in os.listdir(d):
        (tmp_path / f).write_bytes((d / f).read_bytes())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, tie_word_embeddings=True)))
    torch.testing.assert_close(M.load_pretrained(tmp_path)(x), ref(x).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_tied_head_stored_only_under_its_head_name_loads_as_transformers_loads_it(hf_gpt2, tmp_path, arch):
    """A tied model whose file holds lm_head.weight and not the embedding (an exporter that kept the head's name):
    transformers ties the embedding to it (was: "1 tensors missing from the checkpoint: model.embed_tokens.weight")."""
    if arch == "gpt2":
        ref = hf_gpt2[0]
    else:
        c = transformers.LlamaConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
        ref = random_params(transformers.LlamaForCausalLM(c), 3)
    ref.save_pretrained(tmp_path)
    embed = "transformer.wte.weight" if arch == "gpt2" else "model.embed_tokens.weight"
    state = C.load_safetensors(tmp_path / "model.safetensors")
    state["lm_head.weight"] = state.pop(embed)
    C.save_safetensors(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    x = ids()
    with torch.no_grad():
        want = type(ref).from_pretrained(tmp_path).eval()(x).logits
        torch.testing.assert_close(want, ref(x).logits, atol=1e-5, rtol=0)
        ours = M.load_pretrained(tmp_path)
        torch.testing.assert_close(ours(x), want, atol=1e-4, rtol=0)
    assert ours.lm_head.weight is ours.get_parameter(embed)


def test_single_file_beside_an_index_loads_as_transformers_loads_it(hf_llama, tmp_path):
    """model.safetensors beside an older index + shards: transformers reads model.safetensors, and so do we."""
    ref, d = hf_llama
    for f in os.listdir(d):
        (tmp_path / f).write_bytes((d / f).read_bytes())
    new = random_params(transformers.LlamaForCausalLM(ref.config), 3)
    new.save_pretrained(tmp_path / "new")
    os.replace(tmp_path / "new" / "model.safetensors", tmp_path / "model.safetensors")
    x = ids()
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(M.load_pretrained(tmp_path)(x), hf(x).logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(hf(x).logits, new(x).logits, atol=1e-4, rtol=0)


def test_llama_sharded_pytorch_model_bin(hf_llama, tmp_path):
    """pytorch_model-0000i-of-00002.bin + pytorch_model.bin.index.json, as older HF repos (Llama-2-7b-hf) ship."""
    ref, d = hf_llama
    sd = ref.state_dict()
    names = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    weight_map = {k: names[i % 2] for i, k in enumerate(sd)}
    for n in names:
        torch.save({k: v for k, v in sd.items() if weight_map[k] == n}, tmp_path / n)
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    x = ids()
    torch.testing.assert_close(M.load_pretrained(tmp_path)(x), ref(x).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "meta"])
def test_legacy_format_pytorch_model_bin_loads_as_transformers_loads_it(hf_gpt2, hf_llama, tmp_path, arch):
    """A pytorch_model.bin (or consolidated.00.pth) in torch's pre-1.6 (not zip) format, as older Hub repositories
    ship it: torch.load cannot memory-map it (was: refused, "mmap can only be used with files saved with ...").
    GPT-2's lm_head.weight shares wte's storage in it: handing the pages of a tensor read into memory back to the
    kernel zeroed the second (logits 5.0 off)."""
    ref, d = {"gpt2": hf_gpt2, "llama": hf_llama, "meta": hf_llama}[arch]
    x = ids()
    if arch == "meta":
        write_meta(ref, tmp_path)
        for f in ("consolidated.00.pth", "consolidated.01.pth"):
            torch.save(torch.load(tmp_path / f), tmp_path / f, _use_new_zipfile_serialization=False)
        torch.testing.assert_close(M.load_pretrained(tmp_path)(x), ref(x).logits, atol=1e-4, rtol=0)
        return
    state = ref.state_dict()
    assert arch == "llama" or state["lm_head.weight"].data_ptr() == state["transformer.wte.weight"].data_ptr()
    torch.save(state, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    with torch.no_grad():
        want = type(ref).from_pretrained(tmp_path).eval()(x).logits
        torch.testing.assert_close(want, ref(x).logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(M.load_pretrained(tmp_path)(x), want, atol=1e-4, rtol=0)


class Payload:
    """Unpickling this would create a folder: weights_only=True must refuse to run it (in the pre-1.6 format too)."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_a_legacy_format_bin_with_a_pickle_payload_is_refused_never_run(hf_llama, tmp_path):
    (tmp_path / "config.json").write_text((hf_llama[1] / "config.json").read_text())
    torch.save({"model.embed_tokens.weight": Payload(str(tmp_path / "pwned"))}, tmp_path / "pytorch_model.bin",
               _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: cannot be read as a PyTorch checkpoint of tensors "
                                         r"\(UnpicklingError"):
        M.load_pretrained(tmp_path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("layout", ["bin", "meta"])
def test_a_legacy_format_file_is_named_from_its_pickle_alone(hf_llama, tmp_path, layout):
    """The layer checks made before any weight is read (the memory plan's, load_pretrained's) name a pre-1.6 file's
    tensors from its pickle: torch.load cannot memory-map the file and read every tensor to name them (a train.py run
    read a pytorch_model.bin whole twice: tests/test_train.py). Cut after its pickle, the file still names its 2 layers
    against a config of 1 (was: "cannot be read as a PyTorch checkpoint of tensors (EOFError ...")."""
    import plan
    ref, d = hf_llama
    if layout == "meta":
        write_meta(ref, tmp_path)
        params = json.loads((tmp_path / "params.json").read_text())
        (tmp_path / "params.json").write_text(json.dumps(dict(params, n_layers=1)))
        f, key = tmp_path / "consolidated.00.pth", "params.json: n_layers"
        state = torch.load(f)
    else:
        (tmp_path / "config.json").write_text(json.dumps(dict(ref.config.to_dict(), num_hidden_layers=1)))
        f, key, state = tmp_path / "pytorch_model.bin", "config.json: num_hidden_layers", ref.state_dict()
    torch.save(state, f, _use_new_zipfile_serialization=False)
    with open(f, "rb") as file:                               # the pickles (magic, version, sys_info, the dict) alone
        for _ in range(4):
            pickletools.dis(file, out=io.StringIO())           # (read through, nothing built)
        cut = file.tell()
    os.truncate(f, cut)
    want = rf"{key} = 1, but the checkpoint's tensors are of 2 layers \(0 to 1\)"
    with pytest.raises(ValueError, match=want):
        plan.check_layers_held(M.LlamaConfig(n_layer=1), str(tmp_path))
    if layout == "bin":
        with pytest.raises(ValueError, match=want):
            M.load_pretrained(tmp_path)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod."])
def test_a_state_dict_of_a_wrapped_model_is_named_with_the_fix(hf_llama, tmp_path, prefix):
    """torch.save(model.state_dict()) of a DistributedDataParallel (module.) or torch.compile'd (_orig_mod.) model:
    every key carries the wrapper's prefix (was: "tensor 'module.lm_head.weight' is left over", no cause)."""
    (tmp_path / "config.json").write_text((hf_llama[1] / "config.json").read_text())
    torch.save({prefix + k: v for k, v in hf_llama[0].state_dict().items()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=rf"'{re.escape(prefix)}.*' is left over: the keys carry the "
                                         rf"'{re.escape(prefix)}' prefix of a wrapped model"):
        M.load_pretrained(tmp_path)


def test_a_bin_that_is_no_pytorch_file_is_named(hf_llama, tmp_path):
    """Binary junk, text, an empty file: named as no PyTorch checkpoint (was: torch's "Weights only load failed ..."
    or "mmap can only be used with files saved with ...", which point at the wrong cause)."""
    (tmp_path / "config.json").write_text((hf_llama[1] / "config.json").read_text())
    for content in (bytes(range(7, 256)) * 12, b"<html>404 Not Found</html>" * 20, b""):
        (tmp_path / "pytorch_model.bin").write_bytes(content)
        with pytest.raises(ValueError, match=rf"pytorch_model\.bin: not a PyTorch checkpoint \({len(content):,} "
                                             r"bytes starting .*: neither torch\.save's zip archive nor its pre-1\.6 "
                                             r"format\)$"):
            M.load_pretrained(tmp_path)


LFS = b"version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize 2471645608\n" % (b"4f" * 32)


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin", "model.gguf", "adapter"])
def test_a_git_lfs_pointer_is_named_with_the_fix(hf_llama, tmp_path, name):
    """A `git clone` of a Hub repository without git-lfs leaves ~130-byte pointer files where the weights should be
    (was: "corrupt safetensors header (says 2334956330930810742 bytes ...)", "no GGUF magic", ...)."""
    from lorasp import load_adapter
    fix = r": a Git LFS pointer \(\d+ bytes\), not the file itself .* git lfs pull"
    if name == "adapter":
        (tmp_path / "adapter_config.json").write_text(json.dumps(dict(peft_type="LORA", r=4, lora_alpha=8)))
        (tmp_path / "adapter_model.safetensors").write_bytes(LFS)
        with pytest.raises(ValueError, match=r"adapter_model\.safetensors" + fix):
            load_adapter(M.load_pretrained(hf_llama[1]), tmp_path, peft=True)
        return
    if name != "model.gguf":
        (tmp_path / "config.json").write_text((hf_llama[1] / "config.json").read_text())
    (tmp_path / name).write_bytes(LFS)
    with pytest.raises(ValueError, match=re.escape(name) + fix):
        M.load_pretrained(tmp_path)


def test_bin_that_is_not_a_flat_state_dict_is_named(hf_llama, tmp_path):
    """A training checkpoint ({"state_dict": sd, "step": 3}) or a stray number: one line naming the file and entry."""
    ref, d = hf_llama
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    for state, message in (({"state_dict": ref.state_dict(), "step": 3}, r"entry 'state_dict' is OrderedDict, not "
                            r"a tensor .*save them alone: torch\.save\(ckpt\['state_dict'\], FILE\)"),
                           ({**ref.state_dict(), "step": 5}, r"entry 'step' is int, not a tensor \(a state dict")):
        torch.save(state, tmp_path / "pytorch_model.bin")
        with pytest.raises(ValueError, match=r"pytorch_model\.bin: " + message):
            M.load_pretrained(tmp_path)


def write_meta(ref, directory, n_shards=2, llama3=False, **extra):
    """Meta's layout, written independently of model.py: params.json + consolidated.NN.pth, q/k rows interleaved
    per head ((i, i + hd/2) -> (2i, 2i+1)), column-parallel weights split on dim 0, row-parallel wo/w2 and the
    token embedding on dim 1 (llama3: on dim 0, by vocabulary, and params.json gives vocab_size)."""
    c, sd = ref.config, ref.state_dict()
    hd = c.hidden_size // c.num_attention_heads

    def interleave(w, heads):
        out = torch.empty_like(w)
        for h in range(heads):
            rows = w[h * hd:(h + 1) * hd]
            out[h * hd:(h + 1) * hd][0::2], out[h * hd:(h + 1) * hd][1::2] = rows[:hd // 2], rows[hd // 2:]
        return out
    meta = {"tok_embeddings.weight": (sd["model.embed_tokens.weight"], 0 if llama3 else 1),
            "norm.weight": (sd["model.norm.weight"], None),
            "output.weight": (sd["lm_head.weight"], 0), "rope.freqs": (torch.zeros(hd // 2), None)}
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        meta.update({
            f"layers.{i}.attention.wq.weight": (interleave(sd[p + "self_attn.q_proj.weight"], 4), 0),
            f"layers.{i}.attention.wk.weight": (interleave(sd[p + "self_attn.k_proj.weight"], 2), 0),  # kv heads
            f"layers.{i}.attention.wv.weight": (sd[p + "self_attn.v_proj.weight"], 0),
            f"layers.{i}.attention.wo.weight": (sd[p + "self_attn.o_proj.weight"], 1),
            f"layers.{i}.feed_forward.w1.weight": (sd[p + "mlp.gate_proj.weight"], 0),
            f"layers.{i}.feed_forward.w2.weight": (sd[p + "mlp.down_proj.weight"], 1),
            f"layers.{i}.feed_forward.w3.weight": (sd[p + "mlp.up_proj.weight"], 0),
            f"layers.{i}.attention_norm.weight": (sd[p + "input_layernorm.weight"], None),
            f"layers.{i}.ffn_norm.weight": (sd[p + "post_attention_layernorm.weight"], None)})
    for s in range(n_shards):
        shard = {k: (t if dim is None else t.chunk(n_shards, dim)[s]).clone() for k, (t, dim) in meta.items()}
        torch.save(shard, directory / f"consolidated.{s:02d}.pth")
    # Meta's FFN rule: multiple_of * ceil(int(2 * 4 * dim / 3) / multiple_of) = 32 * ceil(170 / 32) = 192
    params = dict(dim=c.hidden_size, n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads,
                  n_kv_heads=c.num_key_value_heads, multiple_of=32, norm_eps=c.rms_norm_eps,
                  vocab_size=c.vocab_size if llama3 else -1,
                  rope_theta=5000.0, **extra)
    (directory / "params.json").write_text(json.dumps(params))


@pytest.mark.parametrize("llama3", [False, True])
def test_meta_layout_two_shards_identical_logits(hf_llama, tmp_path, llama3):
    ref, d = hf_llama
    write_meta(ref, tmp_path, llama3=llama3)
    ours, hf = M.load_pretrained(tmp_path), M.load_pretrained(d)
    assert ours.config == M.replace(hf.config, max_seq_len=4096)  # Meta's params.json does not record it
    x = ids()
    assert torch.equal(ours(x), hf(x))


def test_params_json_beside_an_hf_checkpoint(hf_llama, tmp_path):
    """params.json beside config.json + safetensors (as Mistral's repositories ship it) and no consolidated.NN.pth:
    the HF checkpoint loads."""
    ref, d = hf_llama
    for f in os.listdir(d):
        (tmp_path / f).write_bytes((d / f).read_bytes())
    (tmp_path / "params.json").write_text(json.dumps(dict(dim=64, n_layers=2, n_heads=4, multiple_of=32)))
    x = ids()
    torch.testing.assert_close(M.load_pretrained(tmp_path)(x), ref(x).logits, atol=1e-4, rtol=0)


def test_nf4_on_load(hf_llama):
    ref, d = hf_llama
    q, dense = M.load_pretrained(d, quantize="nf4"), M.load_pretrained(d)
    block = q.model.layers[0]
    assert all(isinstance(m, NF4Linear) for m in (block.self_attn.q_proj, block.self_attn.o_proj, block.mlp.up_proj))
    assert type(q.lm_head) is torch.nn.Linear and q.model.embed_tokens.weight.dtype == torch.float32
    x = ids()
    a, b = q(x), dense(x)
    # exactly a dense model holding the dequantized weights: the loader quantized the right tensors, nothing else
    with torch.no_grad():
        for name, m in q.named_modules():
            if isinstance(m, NF4Linear):
                dense.get_submodule(name).weight.copy_(m.weight.dequantize(torch.float32))
    torch.testing.assert_close(a, dense(x), atol=1e-5, rtol=0)
    # vs the original weights, measured on these random weights: ||a - b|| / ||b|| = 0.26 (each linear alone: 0.09,
    # NF4's error for Gaussian weights; it compounds through 14 linears), top-1 agreement 0.62
    rel = ((a - b).norm() / b.norm()).item()
    assert 0 < rel < 0.35, rel
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.5


def test_nf4_codes_do_not_depend_on_the_compute_dtype(hf_llama):
    """NF4 is quantized from the file's values, not from their cast to the compute dtype: train.py's bf16 run (the
    default on CPUs with bf16 units and on CUDA) and eval.py's fp32 load of the same fp32 checkpoint or GGUF must see
    the same base. Quantized after the bf16 cast, 0.28% of SmolLM2's codes differed from the fp32 load's, and its
    NF4 base loss moved 5.14 -> 5.23: an adapter was scored on other weights than it trained on."""
    d = hf_llama[1]
    a, b = (M.load_pretrained(d, quantize="nf4", dtype=dt) for dt in (torch.float32, torch.bfloat16))
    qa, qb = ({n: m.weight for n, m in q.named_modules() if isinstance(m, NF4Linear)} for q in (a, b))
    assert qa.keys() == qb.keys() and len(qa) == 14
    for n in qa:
        assert torch.equal(qa[n].codes, qb[n].codes), n
        assert torch.equal(qa[n].dequantize(torch.float32), qb[n].dequantize(torch.float32)), n
    assert b.model.embed_tokens.weight.dtype == torch.bfloat16          # the rest in the compute dtype, as before


def test_nf4_load_trims_the_heap_once_it_grew_10_percent(hf_llama, monkeypatch):
    """Quantize's freed temporaries stay in malloc's arenas (a 1.1B load peaked anywhere from 1.08 to 1.96 GiB): fill
    trims once the resident size grew 10% past its size after the last trim, not after every tensor."""
    sizes, trims = iter(range(100, 10_000, 3)), []                 # a resident size growing 3% a reading
    now = [0]

    def resident(field="VmRSS"):
        now[0] = next(sizes)
        return now[0]
    monkeypatch.setattr(C, "resident", resident)
    monkeypatch.setattr(C, "trim_heap", lambda: trims.append(now[0]))
    q = M.load_pretrained(hf_llama[1], quantize="nf4")
    n = sum(isinstance(m, NF4Linear) for m in q.modules())
    assert 1 < len(trims) < n                                       # some trims, fewer than one per tensor
    assert all(b > 1.1 * (a + 3) for a, b in zip(trims, trims[1:]))  # each once 10% past the size after the last


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_kv_cache_matches_full_forward(arch, device, hf_llama, hf_gpt2):
    ours = M.load_pretrained((hf_llama if arch == "llama" else hf_gpt2)[1], device=device)
    x, mask = ids().to(device), torch.tensor([[0] * 3 + [1] * (T - 3), [1] * T], device=device)  # row 0: left-padded
    full = ours(x, attention_mask=mask)
    cache = [{} for _ in range(ours.config.n_layer)]
    steps = [ours(x[:, :5], attention_mask=mask[:, :5], cache=cache)]  # prefill, then one token at a time
    steps += [ours(x[:, t:t + 1], attention_mask=mask[:, :t + 1], cache=cache) for t in range(5, T)]
    torch.testing.assert_close(torch.cat(steps, 1)[mask.bool()], full[mask.bool()], atol=1e-5, rtol=0)
    # greedy generation with the cache equals recomputing everything at each step (and transformers' greedy)
    prompt = x[1:, :4]
    out = M.generate(ours, prompt, 8)
    slow = prompt
    for _ in range(8):
        slow = torch.cat([slow, ours(slow)[:, -1:].argmax(-1)], 1)
    assert torch.equal(out, slow)
    ref = (hf_llama if arch == "llama" else hf_gpt2)[0]
    hf = ref.generate(prompt.cpu(), max_new_tokens=8, do_sample=False, attention_mask=torch.ones_like(prompt.cpu()))
    assert torch.equal(out.cpu(), hf)


def test_generation_up_to_the_last_position_as_transformers(hf_gpt2):
    """GPT-2 with 64 positions continues a 61-token prompt by 4 tokens, 65 in all, as transformers does: the last
    token is only sampled, never run (eval's SQuAD answers are budgeted so; the extra forward was out of positions)."""
    ref, d = hf_gpt2
    ours, x = M.load_pretrained(d), torch.randint(0, V, (1, 61), generator=torch.Generator().manual_seed(0))
    hf = ref.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=4, do_sample=False)
    assert hf.shape == (1, 65) and torch.equal(M.generate(ours, x, 4), hf)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_generation_refuses_right_padded_prompts(arch):
    """generate continues each row from its last position, so a right-padded batch (data.collate's) continued its
    padding: greedy tokens that transformers' generate (left-padded) never gives, silently. It is refused; the same
    prompts left-padded continue as each prompt alone does."""
    torch.manual_seed(0)
    model = M.build_model(M.LlamaConfig(vocab_size=V) if arch == "llama" else M.GPT2Config(vocab_size=V)).eval()
    a, b = torch.randint(1, V, (1, 6), generator=torch.Generator().manual_seed(1)), torch.randint(1, V, (1, 4))
    right = torch.cat([a, torch.cat([b, b.new_zeros(1, 2)], 1)]), torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    with pytest.raises(ValueError, match=r"^generate: prompt row 1 ends in padding \(attention_mask 0 at its last "
                                         r"position\): pad prompts on the left"):
        M.generate(model, right[0], 3, attention_mask=right[1])
    left = torch.cat([a, torch.cat([b.new_zeros(1, 2), b], 1)]), right[1].flip(1)
    out = M.generate(model, left[0], 3, attention_mask=left[1])
    assert torch.equal(out[0, 6:], M.generate(model, a, 3)[0, 6:])
    assert torch.equal(out[1, 6:], M.generate(model, b, 3)[0, 4:])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_generation_computes_only_the_logits_it_reads(arch):
    """The prefill (the whole prompt) and MMLU need the last position's logits only: last_only gives exactly those,
    and generate's LM head never sees more than one position a row (it saw them all: 590 MiB of fp32 logits for the
    demo's 50 prompts of 60 tokens on SmolLM2's 49k words)."""
    torch.manual_seed(0)
    model = M.build_model(M.LlamaConfig(vocab_size=V) if arch == "llama" else M.GPT2Config(vocab_size=V)).eval()
    x = torch.randint(0, V, (3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x, last_only=True), model(x)[:, -1:], atol=1e-6, rtol=1e-5)
    seen = []
    model.lm_head.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].shape[1]))
    out = M.generate(model, x, 3)
    assert seen == [1, 1, 1] and out.shape == (3, 12)


def test_sampling_top_p(monkeypatch):
    logits = torch.tensor([[3.0, 2.0, 1.0, -5.0]])
    g = torch.Generator().manual_seed(0)
    draws = {M.sample(logits, 1.0, 0.5, g).item() for _ in range(50)}
    assert draws == {0}  # token 0 alone has p = 0.67 >= 0.5
    draws = {M.sample(logits, 1.0, 0.9, g).item() for _ in range(200)}
    assert draws == {0, 1}  # 0.67 + 0.24 reaches 0.9; 2 and 3 are outside the nucleus
    # exactly top_p: 1/4 + 1/4 reaches 0.5, so two of four equal tokens are the nucleus, not three (Holtzman's smallest
    # set; transformers' TopPLogitsWarper keeps two); at top_p 1, all four
    for top_p, n in ((0.5, 2), (1.0, 4)):
        assert len({M.sample(torch.zeros(1, 4), 1.0, top_p, g).item() for _ in range(200)}) == n
    assert M.sample(logits).item() == 0
    # top_p 0 (model.py's --top-p accepts it, as transformers) keeps the top token: not a nucleus of nothing
    assert {M.sample(logits, 1.0, 0.0, g).item() for _ in range(20)} == {0}
    # top_p 1 keeps every token: over SmolLM2's 49,152 words the fp32 running sum of these probabilities reaches 1.0
    # some 19k tokens before the end, and a cut there would drop them (probabilities as multinomial is handed them)
    handed, multinomial = [], torch.multinomial
    monkeypatch.setattr(torch, "multinomial", lambda p, *a, **k: handed.append(p.clone()) or multinomial(p, *a, **k))
    M.sample(torch.linspace(0, -20, 49152)[None], 1.0, 1.0, g)
    assert handed[0].shape == (1, 49152) and bool((handed[0] > 0).all())


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_save_pretrained_loads_in_transformers(arch, tmp_path):
    torch.manual_seed(0)
    ours = M.build_model(f"{arch}-tiny").eval()
    M.save_pretrained(ours, tmp_path, shard_size=100_000)
    assert (tmp_path / "model.safetensors.index.json").exists()
    cls = transformers.LlamaForCausalLM if arch == "llama" else transformers.GPT2LMHeadModel
    ref = cls.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 256, (2, 10))
    torch.testing.assert_close(ours(x), ref(x).logits, atol=1e-4, rtol=0)
    assert torch.equal(M.load_pretrained(tmp_path)(x), ours(x))
    M.save_pretrained(ours, tmp_path)  # re-saving unsharded removes the old shards and index
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]


def test_presets_have_the_published_sizes():
    def count(name):
        with torch.device("meta"):
            m = M.build_model(name)
        return sum(p.numel() for p in m.parameters())
    assert count("llama2-7b") == 6_738_415_616
    assert count("llama2-70b") == 68_976_648_192
    assert count("tinyllama-1.1b") == 1_100_048_384
    assert count("smollm2-135m") == 134_515_008
    assert count("gpt2") == 124_439_808
    assert count("gpt2-xl") == 1_557_611_200
    with pytest.raises(ValueError, match="unknown model preset 'llama-7b'.*llama2-7b.*gpt2-xl"):
        M.get_config("llama-7b")


LLAMA3_HUB = dict(  # config.json as meta-llama/Llama-3.1-8B, -3.2-1B and -3.2-3B publish it (the fields that shape it)
    common=dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=128256, num_key_value_heads=8,
                rms_norm_eps=1e-05, rope_theta=500000.0, max_position_embeddings=131072, hidden_act="silu",
                attention_bias=False, mlp_bias=False, pretraining_tp=1, bos_token_id=128000, eos_token_id=128001),
    rope=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192,
              rope_type="llama3"),
    **{"llama3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                           tie_word_embeddings=False),
       "llama3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                           head_dim=64, tie_word_embeddings=True, factor=32.0),
       "llama3.2-3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                           head_dim=128, tie_word_embeddings=True, factor=32.0)})


@pytest.mark.parametrize("preset,params", [("llama3.1-8b", 8_030_261_248), ("llama3.2-1b", 1_235_814_400),
                                           ("llama3.2-3b", 3_212_749_824)])
def test_llama3_presets_read_like_the_published_configs(preset, params):
    """The Llama 3 presets = their published config.json read by from_hf (llama3 RoPE included), with the published
    parameter counts; transformers builds the same shapes from the preset's to_hf()."""
    fields = dict(LLAMA3_HUB[preset])
    rope = dict(LLAMA3_HUB["rope"], factor=fields.pop("factor", 8.0))
    hub = LLAMA3_HUB["common"] | fields | dict(rope_scaling=rope)
    assert M.LlamaConfig.from_hf(hub) == M.get_config(preset)
    with torch.device("meta"):
        ours = M.build_model(preset)
        ref = transformers.LlamaForCausalLM(transformers.LlamaConfig(**M.get_config(preset).to_hf()))
    assert sum(p.numel() for p in ours.parameters()) == params
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


QWEN25_HUB = dict(  # Qwen/Qwen2.5-0.5B's config.json as published (architectures ... vocab_size; dtype fields left out)
    architectures=["Qwen2ForCausalLM"], attention_dropout=0.0, bos_token_id=151643, eos_token_id=151643,
    hidden_act="silu", hidden_size=896, initializer_range=0.02, intermediate_size=4864, max_position_embeddings=32768,
    max_window_layers=24, model_type="qwen2", num_attention_heads=14, num_hidden_layers=24, num_key_value_heads=2,
    rms_norm_eps=1e-06, rope_theta=1000000.0, sliding_window=32768, tie_word_embeddings=True, use_cache=True,
    use_mrope=False, use_sliding_window=False, vocab_size=151936)


MISTRAL_HUB = dict(  # mistralai/Mistral-7B-v0.1's config.json as published (dtype fields left out)
    architectures=["MistralForCausalLM"], bos_token_id=1, eos_token_id=2, hidden_act="silu", hidden_size=4096,
    initializer_range=0.02, intermediate_size=14336, max_position_embeddings=32768, model_type="mistral",
    num_attention_heads=32, num_hidden_layers=32, num_key_value_heads=8, rms_norm_eps=1e-05, rope_theta=10000.0,
    sliding_window=4096, tie_word_embeddings=False, use_cache=True, vocab_size=32000)


QWEN3_HUB = dict(  # Qwen/Qwen3-0.6B's config.json as published (written from memory: the index does not ship it)
    architectures=["Qwen3ForCausalLM"], attention_bias=False, attention_dropout=0.0, bos_token_id=151643,
    eos_token_id=151645, head_dim=128, hidden_act="silu", hidden_size=1024, initializer_range=0.02,
    intermediate_size=3072, max_position_embeddings=40960, max_window_layers=28, model_type="qwen3",
    num_attention_heads=16, num_hidden_layers=28, num_key_value_heads=8, rms_norm_eps=1e-06, rope_scaling=None,
    rope_theta=1000000, sliding_window=None, tie_word_embeddings=True, torch_dtype="bfloat16", use_cache=True,
    use_sliding_window=False, vocab_size=151936)


# preset -> (its Hub repository's config.json, transformers' family, the published parameter count)
HUB_CONFIGS = {"mistral-7b": (MISTRAL_HUB, "Mistral", 7_241_732_096),
               "qwen2.5-0.5b": (QWEN25_HUB, "Qwen2", 494_032_768), "qwen3-0.6b": (QWEN3_HUB, "Qwen3", 596_049_920)}


@pytest.mark.parametrize("preset", list(HUB_CONFIGS))
def test_preset_reads_like_the_published_config(preset):
    """The preset = its repository's config.json read by from_hf (mistral-7b: mistralai/Mistral-7B-v0.1, its 4096-token
    window kept; qwen2.5-0.5b: Qwen/Qwen2.5-0.5B, an ungated 0.5B, its window off; qwen3-0.6b: Qwen/Qwen3-0.6B, head_dim
    128: q is 2048 wide over a 1024 model), with the published parameter count, which transformers' model built from
    that config.json has too, and transformers' shapes from the preset's to_hf()."""
    hub, family, count = HUB_CONFIGS[preset]
    assert M.LlamaConfig.from_hf(hub) == M.get_config(preset)
    model_class, config_class = getattr(transformers, family + "ForCausalLM"), getattr(transformers, family + "Config")
    with torch.device("meta"):
        ours = M.build_model(preset)
        published = model_class(config_class(**hub))
        ref = model_class(config_class(**M.get_config(preset).to_hf()))
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items()}  # noqa: E731
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in published.parameters()) == count
    assert shapes(ours) == shapes(ref) == shapes(published)


@pytest.fixture
def ckpt(tmp_path):
    """llama-tiny saved by us in 2 shards + index; returns (directory, shard paths)."""
    torch.manual_seed(0)
    M.save_pretrained(M.build_model("llama-tiny"), tmp_path, shard_size=300_000)
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) == 2
    return tmp_path, shards


def edit_shard(path, fn):
    state = C.load_safetensors(path)
    fn(state)
    C.save_safetensors(state, path)


@pytest.mark.parametrize("edit,error,message", [
    (lambda s: s.pop("model.layers.1.mlp.up_proj.weight"), ValueError,
     r"missing .*model\.layers\.1\.mlp\.up_proj\.weight"),
    (lambda s: s.update(extra=torch.zeros(3)), ValueError,
     r"model-00002-of-00002\.safetensors: tensor 'extra' is left over"),
    (lambda s: s.update({"model.norm.weight": torch.ones(65)}), ValueError,
     r"tensor 'model\.norm\.weight' has shape \(65,\), expected \(64,\)"),
    (lambda s: s.update({"model.norm.weight": torch.ones(64, dtype=torch.int32)}), TypeError,
     r"tensor 'model\.norm\.weight' has unsupported dtype torch\.int32"),
    (lambda s: s.update({"model.embed_tokens.weight": torch.zeros(256, 64)}), ValueError,
     r"tensor 'model\.embed_tokens\.weight' appears twice"),
])
def test_load_errors_name_the_tensor(ckpt, edit, error, message):
    d, shards = ckpt
    edit_shard(shards[1], edit)  # the second shard: model.norm, lm_head and the last layer
    with pytest.raises(error, match=message):
        M.load_pretrained(d)


def test_a_cast_beyond_the_dtypes_range_is_named(ckpt):
    """A finite weight beyond float16's range (65504) is Inf once cast: eval.py --dtype float16 would score NaN logits
    (argmax picks a plausible id). The file's own values are finite, so only the cast can tell."""
    d, shards = ckpt
    edit_shard(shards[1], lambda s: s["model.norm.weight"].__setitem__(3, 1e5))
    with pytest.raises(ValueError, match=r"tensor 'model\.norm\.weight' has values up to 100000, beyond "
                                         r"torch\.float16's range \(max 65504\)"):
        M.load_pretrained(d, dtype="float16")
    assert M.load_pretrained(d, dtype="bfloat16").model.norm.weight[3] == 99840     # bf16 holds it, rounded


def test_file_errors(ckpt):
    d, shards = ckpt
    raw = shards[0].read_bytes()
    shards[0].write_bytes(raw[:-100])
    with pytest.raises(ValueError, match=r"model-00001-of-00002\.safetensors: truncated: tensor '.*' ends at byte"):
        M.load_pretrained(d)
    shards[0].write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + raw[24:])
    with pytest.raises(ValueError, match=r"model-00001-of-00002\.safetensors: corrupt safetensors header"):
        M.load_pretrained(d)
    from safetensors.torch import save_file  # the reference writer, for a dtype ours does not write
    save_file({"model.norm.weight": torch.ones(64).to(torch.float8_e4m3fn)}, shards[0])
    with pytest.raises(ValueError, match=r"tensor 'model\.norm\.weight' has an unsupported .*F8_E4M3"):
        M.load_pretrained(d)
    shards[0].unlink()
    with pytest.raises(FileNotFoundError, match=r"shard model-00001-of-00002\.safetensors named in "
                                                r"model\.safetensors\.index\.json is missing"):
        M.load_pretrained(d)
    (d / "model.safetensors.index.json").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        M.load_pretrained(d)
    (d / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(NotImplementedError, match="model_type 'mamba' is not supported"):
        M.load_pretrained(d)
    (d / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="neither config.json"):
        M.load_pretrained(d)


def test_meta_layout_errors(hf_llama, tmp_path):
    ref, _ = hf_llama
    write_meta(ref, tmp_path)
    shard = torch.load(tmp_path / "consolidated.01.pth", weights_only=True)
    shard["layers.0.attention.wq.weight"] = shard["layers.0.attention.wq.weight"][:-1]
    torch.save(shard, tmp_path / "consolidated.01.pth")
    with pytest.raises(ValueError, match=r"tensor 'model\.layers\.0\.self_attn\.q_proj\.weight' has shape \(63, 64\)"):
        M.load_pretrained(tmp_path)
    del shard["layers.0.attention.wq.weight"]
    torch.save(shard, tmp_path / "consolidated.01.pth")
    with pytest.raises(ValueError, match=r"consolidated\.01\.pth: tensor 'layers\.0\.attention\.wq\.weight' is "
                                         r"missing"):
        M.load_pretrained(tmp_path)
    shard["layers.0.attention.wz.weight"] = torch.zeros(2)
    shard["layers.0.attention.wq.weight"] = torch.zeros(32, 64)
    torch.save(shard, tmp_path / "consolidated.01.pth")
    with pytest.raises(ValueError, match=r"consolidated\.01\.pth: tensor 'layers\.0\.attention\.wz\.weight' is "
                                         r"left over"):
        M.load_pretrained(tmp_path)


def test_command_line_generates_text(tmp_path):
    """python model.py --model DIR --prompt ...: a tiny GPT-2 with a byte-level BPE tokenizer the test trains."""
    import subprocess
    import sys

    from tokenizers import ByteLevelBPETokenizer
    tk = ByteLevelBPETokenizer()
    tk.train_from_iterator(["hello world, hello there"] * 10, vocab_size=300, special_tokens=["<|endoftext|>"])
    tk.save_model(str(tmp_path))
    torch.manual_seed(0)
    M.save_pretrained(M.build_model(M.GPT2Config(vocab_size=300)), tmp_path)
    run = subprocess.run([sys.executable, "model.py", "--model", str(tmp_path), "--prompt", "hello world",
                          "--max-new-tokens", "6", "--temperature", "0.8", "--top-p", "0.9", "--quantize", "nf4"],
                         capture_output=True, text=True, cwd=os.path.dirname(M.__file__), check=True)
    assert run.stdout.startswith("hello world") and len(run.stdout) > len("hello world\n")
    assert "tokens/s" in run.stderr


def test_model_py_flags_without_model_run_the_demo_as_before_generate_py(monkeypatch, capsys):
    """python model.py's flags without --model (--seed 3, --device cpu) ran the demo, and --help said so, before the
    command line moved to generate.py; they were refused ('--model is required'). generate.py's own needs --model."""
    import generate
    ran = []
    monkeypatch.setattr(M, "demo", lambda **flags: ran.append(True))
    for argv in (["--seed", "3"], ["--device", "cpu"], []):
        monkeypatch.setattr(sys, "argv", ["model.py", *argv])
        M.main()
    assert ran == [True] * 3 and "note: --seed has no effect with --temperature 0" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["model.py", "--help"])
    with pytest.raises(SystemExit):
        M.main()
    assert "without --model, a demonstration on a tiny random model" in " ".join(capsys.readouterr().out.split())
    monkeypatch.setattr(sys, "argv", ["generate.py", "--seed", "3"])
    with pytest.raises(SystemExit, match="2"):
        generate.main()
    assert "the following arguments are required: --model" in capsys.readouterr().err and ran == [True] * 3


@pytest.mark.parametrize("kind", ["padding", "causal", "bias"])
def test_dropout_attention_matches_plain_math_with_the_same_mask(kind):
    """attend() with dropout on CPU (DropoutAttention: keeps a bool mask, recomputes the probabilities in backward)
    equals softmax / dropout / matmul written out by autograd with the same dropout draw, output and gradients
    (a float bias that trains, T5's, included), and keeps far fewer bytes for backward than SDPA's CPU fallback."""
    torch.manual_seed(0)
    B, nh, T, hd, p = 2, 3, 5, 4, 0.3
    q, k, v = (torch.randn(B, nh, T, hd, requires_grad=True) for _ in range(3))
    mask = {"padding": torch.tensor([[1] * T, [1, 1, 1, 0, 0]]).bool()[:, None, None, :], "causal": None,
            "bias": torch.randn(1, nh, T, T, requires_grad=True)}[kind]
    torch.manual_seed(1)
    scale = 1.0 if kind == "bias" else None                             # T5: unscaled logits, a trained bias
    y = M.attend(q, k, v, mask, dropout=p, causal=kind == "causal", scale=scale)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [q, k, v] + ([mask] if kind == "bias" else []), g)
    torch.manual_seed(1)
    keep = torch.rand(B, nh, T, T) >= p                                  # the draw DropoutAttention makes first
    s = q @ k.transpose(-1, -2) * (hd ** -0.5 if scale is None else scale)
    if kind == "padding":
        s = s.masked_fill(~mask, float("-inf"))
    elif kind == "causal":
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    else:
        s = s + mask
    want_y = (torch.softmax(s, -1) * keep / (1 - p) @ v).transpose(1, 2).flatten(2)
    want = torch.autograd.grad(want_y, [q, k, v] + ([mask] if kind == "bias" else []), g)
    assert torch.allclose(y, want_y, atol=1e-6)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-5)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                  lambda t: t):
        M.attend(q, k, v, mask, dropout=p, causal=kind == "causal")
    ours, saved = sum(saved), []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                  lambda t: t):
        torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                                         is_causal=kind == "causal")
    assert ours < sum(saved)


# config.json as the hub has it for these checkpoints (every field that is not a size), sizes shrunk to a toy
LLAMA2 = dict(architectures=["LlamaForCausalLM"], bos_token_id=1, eos_token_id=2, hidden_act="silu",
              initializer_range=0.02, max_position_embeddings=4096, model_type="llama", num_key_value_heads=4,
              pretraining_tp=1, rms_norm_eps=1e-05, rope_scaling=None, tie_word_embeddings=False, torch_dtype="float16",
              transformers_version="4.31.0.dev0", use_cache=True, hidden_size=64, intermediate_size=96,
              num_attention_heads=4, num_hidden_layers=2, vocab_size=V)
T5V11 = dict(architectures=["T5ForConditionalGeneration"], d_ff=48, d_kv=8, d_model=32, decoder_start_token_id=0,
             dropout_rate=0.1, eos_token_id=1, feed_forward_proj="gated-gelu", initializer_factor=1.0,
             is_encoder_decoder=True, layer_norm_epsilon=1e-06, model_type="t5", num_decoder_layers=2, num_heads=4,
             num_layers=2, output_past=True, pad_token_id=0, relative_attention_num_buckets=32,
             tie_word_embeddings=False, vocab_size=V)
PUBLISHED = {
    "Llama-2-7b-hf": LLAMA2,
    "TinyLlama-1.1B-Chat-v1.0": dict(LLAMA2, attention_bias=False, num_key_value_heads=2, rope_theta=10000.0,
                                     max_position_embeddings=2048, torch_dtype="bfloat16"),
    "vicuna-7b-v1.3 (no num_key_value_heads, rope_theta)": dict(
        {k: v for k, v in LLAMA2.items() if k not in ("num_key_value_heads", "pretraining_tp", "rope_scaling")},
        pad_token_id=0, rms_norm_eps=1e-06, max_position_embeddings=2048),
    "CodeLlama-7b-hf": dict(LLAMA2, rope_theta=1000000, max_position_embeddings=16384),
    "distilgpt2": dict(_num_labels=1, activation_function="gelu_new", architectures=["GPT2LMHeadModel"],
                       attn_pdrop=0.1, bos_token_id=50256, embd_pdrop=0.1, eos_token_id=50256,
                       id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0}, layer_norm_epsilon=1e-05, model_type="gpt2",
                       n_ctx=32, n_embd=32, n_head=4, n_inner=None, n_layer=2, n_positions=32, resid_pdrop=0.1,
                       summary_type="cls_index", summary_use_proj=True, vocab_size=V),
    "t5-v1_1-base": T5V11,
    "flan-t5-base": dict(T5V11, dense_act_fn="gelu_new", is_gated_act=True, relative_attention_max_distance=128,
                         n_positions=512),
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_configs_load_as_transformers_reads_them(name, tmp_path):
    """Each config.json written as published (sizes shrunk), over random weights: transformers' logits (in float32:
    both asked for: by default both compute in the config's torch_dtype, as test_config_fields checks)."""
    c = PUBLISHED[name]
    cls = {"llama": transformers.LlamaForCausalLM, "gpt2": transformers.GPT2LMHeadModel,
           "t5": transformers.T5ForConditionalGeneration}[c["model_type"]]
    ref = cls(transformers.AutoConfig.for_model(**json.loads(json.dumps(c))))  # (it edits nested dicts in place)
    if c["model_type"] == "t5":  # v1.1's own head (transformers 5 ties T5 heads whatever the config says)
        ref.lm_head.weight = torch.nn.Parameter(torch.empty(V, c["d_model"]))
    state = {k: v.contiguous() for k, v in random_params(ref, 5).state_dict().items()}
    C.save_safetensors(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(c))
    ref, x = cls.from_pretrained(tmp_path, dtype=torch.float32).eval(), ids()
    ours = M.load_pretrained(tmp_path, dtype=torch.float32)
    with torch.no_grad():
        want = ref(input_ids=x, decoder_input_ids=x[:, :5]).logits if c["model_type"] == "t5" else ref(x).logits
        got = ours(x, x[:, :5]) if c["model_type"] == "t5" else ours(x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


# RoPE scaling and head_dim, each spelled as config.json has it; Llama 3.2's as published (sizes shrunk: with 16-wide
# heads and theta 500000, one frequency is in llama3's blend, three are divided by the factor)
LLAMA32 = dict(LLAMA2, rope_theta=500000.0, max_position_embeddings=131072, tie_word_embeddings=True,
               num_key_value_heads=2, rope_scaling=dict(factor=32.0, high_freq_factor=4.0, low_freq_factor=1.0,
                                                        original_max_position_embeddings=8192, rope_type="llama3"))
SCALED = {
    "Llama-3.2 (rope_scaling llama3)": LLAMA32,
    "llama3 as transformers 5 writes it (rope_parameters)": dict(
        {k: v for k, v in LLAMA32.items() if k not in ("rope_scaling", "rope_theta")},
        rope_parameters=dict(LLAMA32["rope_scaling"], rope_theta=500000.0)),
    "linear, Vicuna-16k's legacy spelling": dict(LLAMA2, rope_scaling=dict(factor=4.0, type="linear")),
    "yarn": dict(LLAMA2, rope_theta=10000.0, max_position_embeddings=256,
                 rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=64)),
    "yarn, mscale, betas, no truncation": dict(LLAMA2, max_position_embeddings=32768, rope_scaling=dict(  # ramp 3.2-5.0
        rope_type="yarn", factor=8.0, original_max_position_embeddings=4096, mscale=0.707, mscale_all_dim=1.0,
        beta_fast=16, beta_slow=2, truncate=False)),
    "yarn, attention_factor, original_max_position_embeddings at the top level": dict(
        LLAMA2, max_position_embeddings=128, original_max_position_embeddings=32,
        rope_scaling=dict(rope_type="yarn", factor=4.0, attention_factor=1.3, original_max_position_embeddings=64)),
    "head_dim 32 over hidden 64 / 4 heads, llama3": dict(LLAMA32, head_dim=32),
    "head_dim 8 (q_proj 64 -> 32), 4 heads": dict(LLAMA2, head_dim=8),
}


def write_hf(c, directory, seed=5):
    """A checkpoint with config.json exactly c (transformers' own save would rewrite its RoPE fields) and random
    weights; transformers' model loaded back from it, in float32."""
    ref = transformers.LlamaForCausalLM(transformers.AutoConfig.for_model(**json.loads(json.dumps(c))))
    state = {k: v.contiguous() for k, v in random_params(ref, seed).state_dict().items()
             if not (c.get("tie_word_embeddings") and k == "lm_head.weight")}
    C.save_safetensors(state, directory / "model.safetensors", metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(c))
    return transformers.LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


@pytest.mark.parametrize("name", SCALED)
def test_rope_scaling_and_head_dim_as_transformers(name, tmp_path):
    """Logits to 1e-5 at positions far into the context too (where the scalings differ most), through the KV cache as
    in one forward, greedy generation as transformers', and back through save_pretrained."""
    ref, x = write_hf(SCALED[name], tmp_path), ids()
    ours = M.load_pretrained(tmp_path, dtype=torch.float32)
    far = torch.arange(T).expand(2, T) * 7 + 40  # positions 40 .. 117
    with torch.no_grad():
        for pos in (None, far):
            torch.testing.assert_close(ours(x, position_ids=pos), ref(x, position_ids=pos).logits, atol=1e-5, rtol=0)
        plain = M.load_pretrained(tmp_path, dtype=torch.float32)
        plain.config.rope_scaling = None  # the scaling matters (where there is one)
        assert torch.allclose(plain(x, position_ids=far), ours(x, position_ids=far), atol=1e-3) == (ours.config.rope_scaling is None)
        cache = [{} for _ in range(ours.config.n_layer)]
        steps = [ours(x[:, :5], cache=cache)] + [ours(x[:, t:t + 1], cache=cache) for t in range(5, T)]
        torch.testing.assert_close(torch.cat(steps, 1), ours(x), atol=1e-5, rtol=0)
        prompt = x[:1, :4]
        assert torch.equal(M.generate(ours, prompt, 8), ref.generate(prompt, max_new_tokens=8, do_sample=False,
                                                                      attention_mask=torch.ones_like(prompt)))
        M.save_pretrained(ours, tmp_path / "back")
        back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "back", dtype=torch.float32).eval()
        torch.testing.assert_close(back(x, position_ids=far).logits, ref(x, position_ids=far).logits, atol=1e-5, rtol=0)
        assert M.load_pretrained(tmp_path / "back").config == ours.config


def assert_peft_reads_our_adapter(ours, ref, targets, x, directory):
    """LoRA-SP on `targets` of ours with random entries (B too, so the update is not zero), saved for PEFT: PEFT on
    transformers' ref gives our logits on x."""
    from peft import PeftModel
    from lorasp import apply_lorasp, save_adapter
    apply_lorasp(ours, targets, r=4, alpha=8)
    with torch.no_grad():
        for p in ours.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)
        save_adapter(ours, directory)
        peft = PeftModel.from_pretrained(ref, directory).eval()
        torch.testing.assert_close(peft(x).logits, ours(x), atol=1e-5, rtol=0)


def test_peft_loads_our_adapter_on_a_llama3_checkpoint_with_wide_heads(tmp_path):
    """LoRA-SP trained on our Llama (llama3 RoPE, head_dim 32: q_proj 64 -> 128), saved for PEFT: PEFT on
    transformers' model gives our logits."""
    ref = write_hf(SCALED["head_dim 32 over hidden 64 / 4 heads, llama3"], tmp_path)
    ours, x = M.load_pretrained(tmp_path, dtype=torch.float32), ids()
    assert_peft_reads_our_adapter(ours, ref, ["q_proj", "k_proj", "v_proj", "o_proj"], x, tmp_path / "adapter")
    with torch.no_grad():
        assert not torch.allclose(M.load_pretrained(tmp_path, dtype=torch.float32)(x), ours(x), atol=1e-3)


def test_meta_use_scaled_rope_is_llama3_with_metas_constants(tmp_path):
    """Llama 3.1's params.json says only use_scaled_rope: Meta's apply_scaling (factor 8, low 1, high 4, 8192) is
    transformers' llama3 with those numbers, which convert_llama_weights_to_hf.py writes into config.json."""
    c = dict(LLAMA2, rope_theta=5000.0, intermediate_size=192, num_key_value_heads=2, rope_scaling=dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192))
    (tmp_path / "hf").mkdir(), (tmp_path / "meta").mkdir()
    ref = write_hf(c, tmp_path / "hf")
    write_meta(ref, tmp_path / "meta", use_scaled_rope=True)
    ours, x, far = M.load_pretrained(tmp_path / "meta"), ids(), torch.arange(T).expand(2, T) * 500 + 40
    with torch.no_grad():
        torch.testing.assert_close(ours(x, position_ids=far), ref(x, position_ids=far).logits, atol=1e-5, rtol=0)


def mistral(directory, sliding_window):
    """transformers' MistralForCausalLM, tiny and random (GQA 4/2 heads, theta 1e6 as Mistral v0.2+), saved by
    transformers itself: its own config.json, model_type "mistral"."""
    c = transformers.MistralConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, rope_theta=1e6,
                                   sliding_window=sliding_window)
    ref = random_params(transformers.MistralForCausalLM(c), 0).eval()
    ref.save_pretrained(directory)
    return ref


def test_mistral_is_a_llama_whose_sliding_window_is_refused_past_its_length(tmp_path):
    """Mistral-7B's config.json (model_type "mistral") was refused. It is Llama's computation, plus a sliding window:
    up to the window, our logits and greedy continuation are transformers'; past it, transformers' differ from plain
    causal attention, and ours refuse (never silently causal). Saved back, transformers reads a Mistral again."""
    ref, x = mistral(tmp_path, sliding_window=T), ids()
    ours = M.load_pretrained(tmp_path, dtype=torch.float32)
    assert ours.config.sliding_window == T
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x).logits, atol=1e-5, rtol=0)
        prompt = x[:1, :4]
        assert torch.equal(M.generate(ours, prompt, T - 4), ref.generate(
            prompt, max_new_tokens=T - 4, do_sample=False, attention_mask=torch.ones_like(prompt)))
        longer = torch.cat([x, x[:, :3]], 1)
        unlimited = M.load_pretrained(tmp_path, dtype=torch.float32)
        unlimited.config.sliding_window = None
        assert not torch.allclose(unlimited(longer), ref(longer).logits, atol=1e-3)  # the window matters there
        with pytest.raises(ValueError, match=f"{T + 3} tokens: past the model's sliding window of {T}, which lorasp "
                                             "does not implement"):
            ours(longer)
        with pytest.raises(ValueError, match="past the model's sliding window"):
            M.generate(ours, prompt, T)                        # the 13th token's step
        M.save_pretrained(ours, tmp_path / "back")
        back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back", dtype=torch.float32).eval()
        assert type(back).__name__ == "MistralForCausalLM" and back.config.sliding_window == T
        torch.testing.assert_close(back(longer).logits, ref(longer).logits, atol=1e-5, rtol=0)


def test_mistral_without_a_window_and_its_adapter_in_peft(tmp_path):
    """Mistral v0.2/v0.3 say sliding_window null: plain causal attention at any length. LoRA-SP on it, saved for PEFT:
    PEFT on transformers' MistralForCausalLM gives our logits."""
    ref, x = mistral(tmp_path, sliding_window=None), torch.randint(0, V, (2, 3 * T))
    ours = M.load_pretrained(tmp_path, dtype=torch.float32)
    assert ours.config.sliding_window is None
    assert_peft_reads_our_adapter(ours, ref, ["q_proj", "v_proj", "down_proj"], x, tmp_path / "adapter")


@pytest.mark.parametrize("window", [None, T], ids=["full attention", "sliding window"])
def test_qwen2_is_a_llama_with_qkv_biases(tmp_path, window):
    """Qwen2/Qwen2.5's config.json (model_type "qwen2": biases on q, k and v but not o; tied embeddings in the small
    ones; use_sliding_window) was refused. Now transformers' logits; NF4 keeps the biases; saved back, transformers
    reads a Qwen2 again; LoRA-SP on it loads in PEFT to our logits. A window (here on the last layer only, as
    max_window_layers says) is refused past its length on every layer: up to it, attention is plain causal. Saved
    back, the window stays on the same layers (was max_window_layers 0: on every layer, other logits past it)."""
    c = transformers.Qwen2Config(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, rope_theta=1e6, tie_word_embeddings=True,
                                 use_sliding_window=window is not None, sliding_window=window or 4096,
                                 max_window_layers=1)
    ref = random_params(transformers.Qwen2ForCausalLM(c), 0).eval()
    ref.save_pretrained(tmp_path)
    ours, x = M.load_pretrained(tmp_path, dtype=torch.float32), ids()
    assert (ours.config.qkv_bias, ours.config.sliding_window, ours.config.tie_embeddings) == (True, window, True)
    attn = ours.model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.v_proj.bias is not None and attn.o_proj.bias is None
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x).logits, atol=1e-5, rtol=0)
        nf4 = M.load_pretrained(tmp_path, quantize="nf4", dtype=torch.float32).model.layers[0].self_attn.k_proj
        assert torch.equal(nf4.bias, ref.model.layers[0].self_attn.k_proj.bias)
        if window:
            with pytest.raises(ValueError, match=f"past the model's sliding window of {T}"):
                ours(torch.cat([x, x], 1))
        M.save_pretrained(ours, tmp_path / "back")
        back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back", dtype=torch.float32).eval()
        assert type(back).__name__ == "Qwen2ForCausalLM"
        torch.testing.assert_close(back(x).logits, ref(x).logits, atol=1e-5, rtol=0)
        assert back.config.layer_types == ref.config.layer_types  # was: a window on both layers (max_window_layers 0)
        longer = torch.cat([x, x], 1)                              # past the window: its layers matter
        torch.testing.assert_close(back(longer).logits, ref(longer).logits, atol=1e-5, rtol=0)
        written = json.loads((tmp_path / "back" / "config.json").read_text())
        del written["layer_types"]                                 # as a transformers before layer_types reads it
        assert transformers.Qwen2Config(**written).layer_types == ref.config.layer_types
    assert_peft_reads_our_adapter(ours, ref, ["q_proj", "k_proj", "o_proj", "up_proj"], x, tmp_path / "adapter")


@pytest.mark.parametrize("head_dim", [32, None], ids=["head_dim 32 over 64 / 4 heads", "no head_dim: Qwen3's 128"])
def test_qwen3_is_a_llama_with_qk_norms(tmp_path, head_dim):
    """Qwen3's config.json (model_type "qwen3": an RMSNorm over head_dim on q and k before RoPE, no q/k/v biases, its
    own head_dim, tied embeddings in the small ones) was refused. Now transformers' logits and greedy tokens; NF4
    leaves the norms dense fp32 (not block linears); saved back, transformers reads a Qwen3 again; LoRA-SP on it loads
    in PEFT to our logits. A config.json without head_dim is Qwen3Config's 128, not hidden_size / heads."""
    c = transformers.Qwen3Config(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, rope_theta=1e6, tie_word_embeddings=True,
                                 **({"head_dim": head_dim} if head_dim else {}))
    ref = random_params(transformers.Qwen3ForCausalLM(c), 0).eval()
    ref.save_pretrained(tmp_path)
    if head_dim is None:                                       # as a config.json written without it
        hf = json.loads((tmp_path / "config.json").read_text())
        del hf["head_dim"]
        (tmp_path / "config.json").write_text(json.dumps(hf))
    ours, x = M.load_pretrained(tmp_path, dtype=torch.float32), ids()
    assert (ours.config.qk_norm, ours.config.hd, ours.config.tie_embeddings) == (True, head_dim or 128, True)
    attn = ours.model.layers[1].self_attn
    assert attn.q_proj.bias is None and attn.q_proj.out_features == 4 * (head_dim or 128)
    assert torch.equal(attn.k_norm.weight, ref.model.layers[1].self_attn.k_norm.weight)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x).logits, atol=1e-5, rtol=0)
        prompt = x[:1, :4]
        assert torch.equal(M.generate(ours, prompt, 8), ref.generate(prompt, max_new_tokens=8, do_sample=False,
                                                                     attention_mask=torch.ones_like(prompt)))
        a = M.load_pretrained(tmp_path, quantize="nf4", dtype=torch.float32).model.layers[0].self_attn
        assert isinstance(a.q_proj, NF4Linear) and type(a.q_norm) is M.RMSNorm
        assert a.q_norm.weight.dtype == torch.float32
        assert torch.equal(a.q_norm.weight, ref.model.layers[0].self_attn.q_norm.weight)
        M.save_pretrained(ours, tmp_path / "back")
        back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back", dtype=torch.float32).eval()
        assert type(back).__name__ == "Qwen3ForCausalLM" and back.config.head_dim == (head_dim or 128)
        torch.testing.assert_close(back(x).logits, ref(x).logits, atol=0, rtol=0)
    assert_peft_reads_our_adapter(ours, ref, ["q_proj", "k_proj", "o_proj", "up_proj"], x, tmp_path / "adapter")


def test_a_bare_qwen3_model_file_loads_as_transformers_causal_lm_reads_it(tmp_path):
    """A Qwen3Model saved without its LM head (keys without "model.", as embedding models are shipped; tied
    embeddings): transformers' Qwen3ForCausalLM puts them under model. and ties the head. Ours too (was: "tensor
    'embed_tokens.weight' is left over: Llama has no such parameter")."""
    c = transformers.Qwen3Config(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True)
    random_params(transformers.Qwen3Model(c), 0).save_pretrained(tmp_path)
    ref, x = transformers.Qwen3ForCausalLM.from_pretrained(tmp_path).eval(), ids()
    with torch.no_grad():
        torch.testing.assert_close(M.load_pretrained(tmp_path)(x), ref(x).logits, atol=1e-5, rtol=0)


def test_qwen3_norms_train_alike_under_every_checkpointing_mode():
    """The q/k norms are `cheap` (recomputed under selective): full fine-tuning gives them, and every other weight,
    the gradients of no checkpointing (a recomputed norm whose weight lost its gradient would train silently less)."""
    from test_checkpointing import assert_modes_agree
    torch.manual_seed(0)
    m = M.build_model(M.LlamaConfig(vocab_size=V, n_embd=64, head_dim=32, qk_norm=True)).train()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    assert_modes_agree(m, ids())


def test_train_py_trains_a_qwen3_folder(tiny, tmp_path):
    """train.py on a Qwen3 folder saved by transformers (the tiny fixture's tokenizer): LoRA-SP on NF4 with selective
    checkpointing: the loss falls; the adapter is saved, and loaded on the folder's model it moves the logits."""
    import train
    from lorasp import apply_lorasp, load_adapter
    d = tmp_path / "qwen3"
    d.mkdir()
    for f in os.listdir(tiny[0]):
        if f.startswith("tokenizer"):
            shutil.copy(os.path.join(tiny[0], f), d)
    c = transformers.Qwen3Config(vocab_size=M.load_tokenizer(tiny[0]).vocab_size, hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                 tie_word_embeddings=True)
    torch.manual_seed(0)
    transformers.Qwen3ForCausalLM(c).save_pretrained(d)
    out = tmp_path / "out"
    s = train.train(train.parse_args(flags((str(d), tiny[1]), out, "--quant", "nf4", "--checkpointing", "selective",
                                           "--max-steps", "8", "--log-every", "1")))
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.2, losses
    assert s["trainable_params"] > 0 and (out / "adapter" / "adapter_model.safetensors").exists()
    back, fresh = M.load_pretrained(d, dtype=torch.float32), M.load_pretrained(d, dtype=torch.float32)
    load_adapter(apply_lorasp(back, train.TARGETS["llama"].split(",")), out / "adapter")
    with torch.no_grad():
        assert not torch.allclose(back(ids()), fresh(ids()), atol=1e-3)


YARN = dict(rope_type="yarn", factor=4.0, rope_theta=10000.0)


@pytest.mark.parametrize("kind, fields, drop, window", [
    ("mistral", {}, ("sliding_window",), 4096),                                         # MistralConfig's default
    ("qwen2", dict(use_sliding_window=True, max_window_layers=1), ("sliding_window", "layer_types"), 4096),  # Qwen2's
    ("qwen2", dict(use_sliding_window=True, sliding_window=8, max_window_layers=2), ("layer_types",), None),
    ("qwen2", dict(use_sliding_window=True, sliding_window=8), ("layer_types", "max_window_layers"), None),  # 28 of 2
    ("qwen2", dict(use_sliding_window=True, sliding_window=8, layer_types=["full_attention"] * 2), (), None),
    ("mistral", dict(sliding_window=None, attention_bias=True, mlp_bias=True), (), None),  # not fields of these two
    ("qwen2", dict(attention_bias=True, mlp_bias=True), (), None),
    ("mistral", dict(rope_parameters=YARN), ("max_position_embeddings",), 4096),
    ("qwen2", dict(rope_parameters=YARN), ("max_position_embeddings",), None)],
    ids=["mistral, no sliding_window", "qwen2, no sliding_window", "qwen2, max_window_layers = layers",
         "qwen2, no max_window_layers", "qwen2, layer_types all full", "mistral, attention_bias",
         "qwen2, attention_bias", "mistral, yarn, no max_position_embeddings",
         "qwen2, yarn, no max_position_embeddings"])
def test_mistral_and_qwen2_config_fields_as_transformers_reads_them(tmp_path, kind, fields, drop, window):
    """A config.json without sliding_window: transformers' Mistral and Qwen2 (use_sliding_window) take 4096 (ours: no
    window: past 4096 tokens, silently other logits). A Qwen2 whose layers all attend fully (max_window_layers >= the
    layers, 28 if absent; layer_types) has no window (ours refused past it). attention_bias and mlp_bias are not read
    by these two classes (ours: "tensors missing", "not supported"). Without max_position_embeddings, yarn's original
    length is the class's default (131072, 32768; ours: Llama's 2048, other logits). The oracle's windows: its
    attention modules'."""
    Config, Model = {"mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
                     "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[kind]
    random_params(Model(Config(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2)), 0).save_pretrained(tmp_path)
    hf = {k: v for k, v in json.loads((tmp_path / "config.json").read_text()).items() if k not in drop} | fields
    (tmp_path / "config.json").write_text(json.dumps(hf))
    ref = Model.from_pretrained(tmp_path, dtype=torch.float32).eval()
    windows = {getattr(layer.self_attn, "sliding_window", ref.config.sliding_window) for layer in ref.model.layers}
    assert max(windows - {None}, default=None) == window        # the oracle's reading, as the case expects
    ours = M.load_pretrained(tmp_path, dtype=torch.float32)
    assert ours.config.sliding_window == window
    with torch.no_grad():                                       # T = 12 tokens: past 8, within 4096
        torch.testing.assert_close(ours(ids()), ref(ids()).logits, atol=1e-5, rtol=0)

