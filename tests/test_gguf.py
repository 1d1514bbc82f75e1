"""GGUF by hand against llama.cpp's own Python package `gguf` (a test-only oracle): files the test writes with
gguf.GGUFWriter read back to the same metadata and tensor table as gguf.GGUFReader reads, every supported block type
dequantized bit for bit as gguf.quants.dequantize does it (the K-quants from random blocks: gguf-py quantizes none), and
a tiny random Llama written in llama.cpp's layout (q/k rows permuted as convert_hf_to_gguf.py does) loading to the
logits of the model it came from, and of transformers' own GGUF loader on the same file (a K-quant one: to those of
transformers' Llama holding gguf-py's dequantized weights)."""
import math
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q, GGUFReader, GGUFWriter
from gguf.quants import dequantize, quantize

from fixtures import flags, random_params, tiny  # noqa: F401  (tiny: a fixture)
import checkpoint as C
import ggufread as G
import train
import model as M
from data import perplexity_docs
from tokenizer import bytes_to_unicode, load_tokenizer

TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0]
# ggml.h's block layouts: bytes per block, where its fp16 fields lie, and the largest |code| they multiply
BLOCKS = {Q.Q4_0: (18, [0], 8), Q.Q4_1: (20, [0, 2], 15), Q.Q5_0: (22, [0], 16), Q.Q5_1: (24, [0, 2], 31),
          Q.Q8_0: (34, [0], 127), Q.Q2_K: (84, [80, 82], 45), Q.Q3_K: (110, [108], 128), Q.Q4_K: (144, [0, 2], 945),
          Q.Q5_K: (176, [0, 2], 1953), Q.Q6_K: (210, [208], 4064)}
HF_NAMES = {hf: gg for gg, hf in G.GGUF_NAMES.items()}
Q_SIZES = {kind: size for kind, (size, _) in GGML_QUANT_SIZES.items()}  # values per block, as gguf-py has them


def write(path, tensors, meta, arch="llama", **kw):
    """A GGUF file: tensors {name: (float32 array, ggml type)} quantized by gguf itself; meta {key: value}; kw:
    GGUFWriter's (split_max_tensors=n: NAME-0000i-of-0000k.gguf parts, as llama.cpp's gguf-split writes them)."""
    w = GGUFWriter(str(path), arch, **kw)
    for key, value in meta.items():
        if isinstance(value, list):
            w.add_array(key, value)
        elif isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_uint32(key, value)
    for name, (x, kind) in tensors.items():  # uint8: blocks already made (gguf-py quantizes no K-quant)
        w.add_tensor(name, x if x.dtype == np.uint8 else quantize(x, kind), raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("kind", TYPES, ids=lambda k: k.name)
def test_blocks_dequantize_as_gguf_does(tmp_path, kind):
    x = (np.random.default_rng(0).standard_normal((6, 128)) * [[0.01], [1], [30], [0], [-2], [5]]).astype(np.float32)
    path = write(tmp_path / "t.gguf", {"w": (x, kind), "v": (x[0] + 1, Q.F32)}, {})
    meta, tensors = G.read_gguf(path)
    (name, ours), ref = next(G.gguf_tensors(path, {"w": tensors["w"]})), GGUFReader(path).tensors
    ref_w = next(t for t in ref if t.name == "w")
    assert name == "w" and tensors["w"][:2] == ((6, 128), kind.value) and tensors["w"][2] == ref_w.data_offset
    assert torch.equal(ours, torch.from_numpy(dequantize(ref_w.data, kind).reshape(6, 128).astype(np.float32)))
    if kind == Q.F32:
        assert torch.equal(ours, torch.from_numpy(x))


def random_blocks(kind, shape, rng, size=1.0):
    """uint8 (rows, bytes) of random ggml blocks for a float `shape`: random bytes, but each fp16 scale (and min) a
    finite random value that keeps the dequantized weights within about +-size."""
    nbytes, f16s, top = BLOCKS[kind]
    n = math.prod(shape) // Q_SIZES[kind]
    raw = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    for at in f16s:
        scale = rng.uniform(0.2, 1.0, n) * rng.choice([-1, 1], n) * size / top
        raw[:, at:at + 2] = scale.astype(np.float16).view(np.uint8).reshape(n, 2)
    return raw.reshape(shape[0], -1)


@pytest.mark.parametrize("kind", BLOCKS, ids=lambda k: k.name)
def test_random_blocks_dequantize_as_gguf_does(kind):
    """Every bit pattern of every supported block type (random bytes; fp16 fields finite) against gguf.quants,
    bit for bit: both compute each value as ggml-quants.c does, in float32, in the same order. In chunks of 768
    values too (3 K-quant blocks, 24 of the others), so that chunk edges cut rows of 1024 anywhere."""
    raw = random_blocks(kind, (40, 1024), np.random.default_rng(kind.value))
    want = torch.from_numpy(dequantize(raw, kind).astype(np.float32))
    assert want.shape == (40, 1024) and want.isfinite().all() and want.abs().max() > 0.1
    for chunk in (1 << 18, 768):
        assert torch.equal(G.dequantize_ggml(torch.from_numpy(raw.reshape(-1)), kind.value, (40, 1024), chunk), want)


@pytest.mark.parametrize("kind", BLOCKS, ids=lambda k: k.name)
def test_a_file_spanning_chunks_and_a_vector_read_as_gguf_does(tmp_path, kind):
    """Read from the file, a chunk (2^18 values) at a time: a (800, 768) matrix spans 2.3 chunks whose edges cut rows
    (341.3 rows a chunk), a 1-D vector of two blocks and a (2, 3, 2 blocks) tensor keep their shapes; each as gguf-py
    dequantizes it, bit for bit."""
    rng, size = np.random.default_rng(kind.value), Q_SIZES[kind]
    shapes = {"m": (800, 768), "v": (2 * size,), "t": (2, 3, 2 * size)}
    blocks = {k: random_blocks(kind, (math.prod(s[:-1]), s[-1]), rng).reshape(*s[:-1], -1) for k, s in shapes.items()}
    path = write(tmp_path / "c.gguf", {k: (b, kind) for k, b in blocks.items()}, {})
    ours = dict(G.gguf_tensors(path, G.read_gguf(path)[1]))
    for name, shape in shapes.items():
        want = torch.from_numpy(dequantize(blocks[name], kind).astype(np.float32))
        assert ours[name].shape == want.shape == shape and torch.equal(ours[name], want), name


def test_type_names_as_gguf_py_has_them():
    """GGML_TYPES (read) and GGML_OTHERS (named in the refusal) name each type id as gguf-py does, each id once; a
    name dequantize_blocks has no code for is refused, not read as Q2_K (which it fell through to)."""
    assert not set(G.GGML_TYPES) & set(G.GGML_OTHERS)
    for kind, name in [(k, v[0]) for k, v in G.GGML_TYPES.items()] + list(G.GGML_OTHERS.items()):
        assert Q(kind).name == name
    for kind, (name, per_block, block_bytes) in G.GGML_TYPES.items():
        assert GGML_QUANT_SIZES[Q(kind)] == (per_block, block_bytes), name
    with pytest.raises(NotImplementedError, match="ggml type Q8_K has no dequantize_blocks code"):
        G.dequantize_blocks("Q8_K", torch.zeros(1, 292, dtype=torch.uint8))


def test_metadata_as_gguf_reads_it(tmp_path):
    meta = {"a.u32": 7, "a.f32": 0.1, "a.bool": True, "a.str": "héllo ▁ 🙂", "a.strs": ["x", "", "Ġt he"],
            "a.ints": [3, 1, 4, 1, 5], "a.floats": [0.5, -2.25]}
    path = write(tmp_path / "m.gguf", {"w": (np.ones((2, 32), np.float32), Q.F32)}, meta)
    ours, ref = G.read_gguf(path)[0], GGUFReader(path).fields
    assert set(ours) == {k for k in ref if not k.startswith("GGUF.")} and ours["general.architecture"] == "llama"
    for key, value in ours.items():
        assert value == pytest.approx(ref[key].contents()) and type(value) is type(ref[key].contents()), key


def llama_cpp_layout(hf, config, kind=Q.F32, kinds=None):
    """An HF Llama state dict as llama.cpp's convert_hf_to_gguf.py writes it: its names, q/k rows reordered for
    interleaved RoPE pairs (per head: rows (2, hd/2) -> (hd/2, 2)), matrices in `kind` (or kinds[HF name]: then
    they are uint8 rows of ready blocks, reordered alike), vectors in F32."""
    out = {}
    for name, t in hf.items():
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)", name)
        module, leaf = (m[2], m[3]) if m else name.rsplit(".", 1)
        heads = {"self_attn.q_proj": config.num_attention_heads, "self_attn.k_proj": config.num_key_value_heads}
        if module in heads:
            n = heads[module]
            t = t.reshape(n, 2, t.shape[0] // n // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)
        out[(f"blk.{m[1]}." if m else "") + f"{HF_NAMES[module]}.{leaf}"] = (
            t.numpy().copy(), (kinds or {}).get(name, kind) if t.ndim == 2 else Q.F32)
    return out


def llama_meta(c):
    """The metadata llama.cpp writes for a Llama, and a byte-level BPE vocabulary: the bytes but 0x04 (absent, as a
    few are from some real vocabularies), whose id 4 goes to the one merge, ! + ?."""
    vocab = [bytes_to_unicode()[b] if b != 4 else "!?" for b in range(256)]
    return {"llama.block_count": c.num_hidden_layers, "llama.context_length": c.max_position_embeddings,
            "llama.embedding_length": c.hidden_size, "llama.feed_forward_length": c.intermediate_size,
            "llama.attention.head_count": c.num_attention_heads, "llama.attention.head_count_kv": c.num_key_value_heads,
            "llama.rope.freq_base": float(c.rope_parameters["rope_theta"]),
            "llama.attention.layer_norm_rms_epsilon": c.rms_norm_eps,
            "llama.vocab_size": c.vocab_size, "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "default",
            "tokenizer.ggml.tokens": vocab, "tokenizer.ggml.merges": ["! ?"], "tokenizer.ggml.token_type": [1] * 256,
            "tokenizer.ggml.bos_token_id": 5}


@pytest.mark.parametrize("tied,kind", [(False, Q.F32), (True, Q.Q8_0)], ids=["F32", "Q8_0-tied"])
def test_tiny_llama_matches_its_source_and_transformers_gguf_loader(tmp_path, tied, kind):
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=5000.0,
                                 max_position_embeddings=256, tie_word_embeddings=tied)
    src = random_params(transformers.LlamaForCausalLM(c), 0)
    state = {k: v for k, v in src.state_dict().items() if not (tied and k == "lm_head.weight")}
    write(tmp_path / "tiny.gguf", llama_cpp_layout(state, c, kind), llama_meta(c))
    ours = M.load_pretrained(tmp_path)  # the directory's one .gguf
    assert ours.config.n_kv_head == 2 and ours.config.tie_embeddings == tied and ours.config.rope_theta == 5000.0
    ids = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(0))
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf", dtype=torch.float32)
    with torch.no_grad():
        logits, want = ours(ids), ref.eval()(ids).logits
        torch.testing.assert_close(logits, want, atol=1e-4, rtol=0)
        if kind == Q.F32:  # nothing was rounded: the model the file came from
            torch.testing.assert_close(logits, src(ids).logits, atol=1e-4, rtol=0)
    bf16 = M.load_pretrained(tmp_path, dtype=torch.bfloat16)   # streamed in bf16 (no fp32 copy): fp32's, rounded
    assert all(torch.equal(b, o.to(torch.bfloat16)) for b, o in zip(bf16.state_dict().values(),
                                                                     ours.state_dict().values()))
    tok = load_tokenizer(tmp_path / "tiny.gguf")
    # the absent byte is dropped and its neighbours in the same pre-token merge (HF's BPE); it never splits them
    assert tok.encode("!\x04? h\x04i") == tok.encode("!? hi") == [4, ord(" "), ord("h"), ord("i")]
    assert tok.bos_id == 5 and tok.eos_id is None


def test_nf4_of_a_gguf_quantizes_the_files_values_whatever_the_compute_dtype(tmp_path):
    """gguf_checkpoint(quantize="nf4") streams the block linears in float32 under a bfloat16 load (the rest in bf16,
    no fp32 copy): NF4 of their bf16 rounding differed from an fp32 load's in 0.28% of SmolLM2's codes, so a bf16
    train.py run learned on another base than eval.py (fp32 by default) scored it on."""
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    write(tmp_path / "t.gguf", llama_cpp_layout(random_params(transformers.LlamaForCausalLM(c), 0).state_dict(), c),
          llama_meta(c))
    fp32 = {n: t for _, n, t in G.gguf_checkpoint(str(tmp_path / "t.gguf"), torch.float32)[1]}
    bf16 = {n: t for _, n, t in G.gguf_checkpoint(str(tmp_path / "t.gguf"), torch.bfloat16, "nf4")[1]}
    linears = [n for n in fp32 if re.search(r"layers\.\d+\..*_proj\.weight", n)]
    assert len(linears) == 14 and fp32.keys() == bf16.keys()
    for n, t in bf16.items():
        assert t.dtype == (torch.float32 if n in linears else torch.bfloat16), n
        assert torch.equal(t, fp32[n].to(t.dtype)), n
    for n in linears:                                          # the codes fill makes of them: the fp32 load's
        assert torch.equal(C.quantize_nf4(bf16[n]).codes, C.quantize_nf4(fp32[n]).codes), n
    codes = [{n: m.weight.codes for n, m in M.load_pretrained(str(tmp_path / "t.gguf"), quantize="nf4",
                                                               dtype=d).named_modules() if hasattr(m, "weight")
              and hasattr(m.weight, "codes")} for d in (torch.float32, torch.bfloat16)]   # through load_pretrained too
    assert len(codes[0]) == 14 and all(torch.equal(codes[0][n], codes[1][n]) for n in codes[0])


def test_llama_gguf_with_its_own_head_dim_as_mistral_nemo(tmp_path):
    """A Llama GGUF whose attention.key_length (head_dim) is not embedding_length / heads, as Mistral-Nemo's (5120 /
    32 heads, head_dim 128): was refused; now its q/k rows go back per head of key_length rows, to its source's
    logits."""
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-5,
                                 max_position_embeddings=256)
    src = random_params(transformers.LlamaForCausalLM(c), 0)
    meta = llama_meta(c) | {"llama.attention.key_length": 32, "llama.attention.value_length": 32}
    write(tmp_path / "nemo.gguf", llama_cpp_layout(src.state_dict(), c), meta)
    ours, ids = M.load_pretrained(tmp_path / "nemo.gguf"), torch.randint(0, 256, (2, 10))
    assert ours.config.head_dim == 32
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), src(ids).logits, atol=1e-5, rtol=0)
    write(tmp_path / "v.gguf", llama_cpp_layout(src.state_dict(), c), meta | {"llama.attention.value_length": 16})
    with pytest.raises(NotImplementedError, match=r"v\.gguf: GGUF metadata llama\.attention\.value_length = 16 with "
                       r"head_dim \(key_length\) 32: values of another width than keys are not supported$"):
        M.load_pretrained(tmp_path / "v.gguf")  # (was: "RoPE scaling 'none', RoPE on part of a head and ...")
    write(tmp_path / "r.gguf", llama_cpp_layout(src.state_dict(), c), meta | {"llama.rope.dimension_count": 16})
    with pytest.raises(NotImplementedError, match=r"rope\.dimension_count = 16 .*: RoPE on part of a head is not"):
        M.load_pretrained(tmp_path / "r.gguf")


def test_tiny_qwen2_gguf_matches_its_source_and_transformers_gguf_loader(tmp_path):
    """A Qwen2 GGUF (architecture "qwen2": q/k/v biases, tied embeddings; llama.cpp keeps its q/k rows in HF's order,
    rotating halves) was refused by architecture. Written as llama.cpp's converter writes it (qwen2.* metadata, the
    Qwen2 pre-tokenizer), it loads to its source's logits and to transformers' own GGUF loader's, biases included."""
    c = transformers.Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1e6,
                                 max_position_embeddings=256, tie_word_embeddings=True)
    src = random_params(transformers.Qwen2ForCausalLM(c), 0).eval()
    tensors = {(f"blk.{m[1]}." if (m := re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)", n)) else "") +
               f"{HF_NAMES[m[2] if m else n.rsplit('.', 1)[0]]}.{n.rsplit('.', 1)[1]}": (t.numpy().copy(), Q.F32)
               for n, t in src.state_dict().items() if n != "lm_head.weight"}
    assert "blk.0.attn_q.bias" in tensors and "blk.0.attn_output.bias" not in tensors
    meta = {k.replace("llama.", "qwen2."): v for k, v in llama_meta(c).items()} | {"tokenizer.ggml.pre": "qwen2"}
    write(tmp_path / "qwen.gguf", tensors, meta, arch="qwen2")
    ours, ids = M.load_pretrained(tmp_path / "qwen.gguf"), torch.randint(0, 256, (2, 10))
    assert (ours.config.qkv_bias, ours.config.bias, ours.config.tie_embeddings) == (True, False, True)
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="qwen.gguf", dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), src(ids).logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours(ids), ref.eval()(ids).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("head_dim", [128, 32], ids=["head_dim 128", "head_dim 32"])
def test_tiny_qwen3_gguf_matches_its_source_and_transformers_gguf_loader(tmp_path, head_dim):
    """A Qwen3 GGUF (architecture "qwen3": attn_q_norm / attn_k_norm, as gguf-py's MODEL_TENSORS lists them; head_dim
    as attention.key_length / value_length, here != embedding_length / heads; q/k rows in HF's order, as Qwen2's) was
    refused by architecture. It loads to its source's logits, and (head_dim 128, which transformers' GGUF loader takes
    for Qwen3Config's default: it reads no key_length) to that loader's."""
    from gguf.constants import MODEL_ARCH, MODEL_TENSORS, TENSOR_NAMES
    c = transformers.Qwen3Config(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim, rms_norm_eps=1e-6,
                                 rope_theta=1e6, max_position_embeddings=256, tie_word_embeddings=True)
    src = random_params(transformers.Qwen3ForCausalLM(c), 0).eval()
    tensors = {(f"blk.{m[1]}." if (m := re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)", n)) else "") +
               f"{HF_NAMES[m[2] if m else n.rsplit('.', 1)[0]]}.{n.rsplit('.', 1)[1]}": (t.numpy().copy(), Q.F32)
               for n, t in src.state_dict().items() if n != "lm_head.weight"}
    known = {TENSOR_NAMES[t].format(bid=i) + ".weight" for t in MODEL_TENSORS[MODEL_ARCH.QWEN3] for i in range(2)}
    assert {"blk.0.attn_q_norm.weight", "blk.1.attn_k_norm.weight"} < set(tensors) <= known
    meta = {k.replace("llama.", "qwen3."): v for k, v in llama_meta(c).items()} | {
        "tokenizer.ggml.pre": "qwen2", "qwen3.attention.key_length": head_dim, "qwen3.attention.value_length": head_dim}
    write(tmp_path / "qwen.gguf", tensors, meta, arch="qwen3")
    ours, ids = M.load_pretrained(tmp_path / "qwen.gguf"), torch.randint(0, 256, (2, 10))
    assert (ours.config.qk_norm, ours.config.hd, ours.config.tie_embeddings) == (True, head_dim, True)
    del tensors["blk.1.attn_k_norm.weight"]                  # a qwen3 file short of a norm: named with the file
    with pytest.raises(ValueError, match=r"short\.gguf: 1 tensors missing from the checkpoint: model\.layers\.1\."
                                         r"self_attn\.k_norm\.weight$"):
        M.load_pretrained(write(tmp_path / "short.gguf", tensors, meta, arch="qwen3"))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), src(ids).logits, atol=1e-5, rtol=0)
        if head_dim == 128:
            ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="qwen.gguf",
                                                                    dtype=torch.float32).eval()
            torch.testing.assert_close(ours(ids), ref(ids).logits, atol=1e-5, rtol=0)


def test_k_quant_llama_matches_transformers_on_gguf_dequantized_weights(tmp_path):
    """Q4_K_M and its kin, the GGUFs most people download (were refused): a tiny Llama whose every matrix is random
    blocks of one of the supported quantized types loads to the logits of transformers' LlamaForCausalLM holding
    gguf-py's dequantization of the same blocks (q/k rows reordered as llama.cpp stores them)."""
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                                 max_position_embeddings=256, tie_word_embeddings=False)
    ref, rng = random_params(transformers.LlamaForCausalLM(c), 0).eval(), np.random.default_rng(0)
    mix = [Q.Q4_K, Q.Q6_K, Q.Q5_K, Q.Q3_K, Q.Q2_K, Q.Q5_0, Q.Q5_1, Q.Q4_0, Q.Q8_0]
    state, raw, kinds = ref.state_dict(), {}, {}
    for i, (name, t) in enumerate((n, t) for n, t in state.items() if t.ndim == 2):
        kinds[name] = mix[i % len(mix)]
        raw[name] = torch.from_numpy(random_blocks(kinds[name], t.shape, rng, 0.1))
        state[name] = torch.from_numpy(dequantize(raw[name].numpy(), kinds[name]).astype(np.float32))
    assert set(kinds.values()) == set(mix) and state["lm_head.weight"].shape == (256, 256)
    ref.load_state_dict(state)
    path = write(tmp_path / "kq.gguf", llama_cpp_layout(state | raw, c, kinds=kinds), llama_meta(c))
    assert {G.GGML_TYPES[kind][0] for _, kind, _ in G.read_gguf(path)[1].values()} == {k.name for k in mix} | {"F32"}
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, want = M.load_pretrained(path)(ids), ref(ids).logits
    assert want.std() > 0.1
    torch.testing.assert_close(logits, want, atol=1e-4, rtol=0)


def test_split_gguf_gguf_beside_config_json_and_eval_py(tmp_path):
    """A split GGUF is refused with how to merge it; a .gguf beside config.json (a Hub GGUF repository) is named in
    the error; eval.py loads a .gguf file, as train.py does (and prints in its 'evaluate:' line)."""
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    tensors = llama_cpp_layout(random_params(transformers.LlamaForCausalLM(c), 0).state_dict(), c)
    for d in ("split", "repo"):
        (tmp_path / d).mkdir()
    write(tmp_path / "split" / "tiny.gguf", tensors, llama_meta(c), split_max_tensors=8)
    for path in (tmp_path / "split", tmp_path / "split" / "tiny-00002-of-00003.gguf"):
        with pytest.raises(NotImplementedError, match=r"tiny-0000\d-of-00003\.gguf: part \d of a GGUF split in 3 "
                           r"files; split GGUFs are not supported: .*llama-gguf-split --merge .*tiny-00001-of-00003"):
            M.load_pretrained(path)
    write(tmp_path / "repo" / "tiny.gguf", tensors, llama_meta(c))
    (tmp_path / "repo" / "config.json").write_text(c.to_json_string())
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors.*; for its GGUF, pass the file itself "
                                                r"\(tiny\.gguf\)"):
        M.load_pretrained(tmp_path / "repo")
    import eval as E
    model, tok = E.load_model(str(tmp_path / "repo" / "tiny.gguf"))
    ids = torch.tensor([tok.encode("! hi")])
    assert torch.equal(model(ids), M.load_pretrained(tmp_path / "repo" / "tiny.gguf")(ids))


def test_errors_name_the_file_and_tensor(tmp_path):
    x, c = np.ones((4, 64), np.float32), transformers.LlamaConfig(vocab_size=4, hidden_size=64, num_attention_heads=4)
    with pytest.raises(NotImplementedError, match=r"g\.gguf: GGUF architecture 'gpt2'"):
        M.load_pretrained(write(tmp_path / "g.gguf", {"w": (x, Q.F32)}, {}, arch="gpt2"))
    w = GGUFWriter(str(tmp_path / "k.gguf"), "llama")
    w.add_tensor("token_embd.weight", np.zeros((4, 136), np.uint8), raw_dtype=Q.IQ4_XS)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(NotImplementedError, match=r"k\.gguf: tensor 'token_embd\.weight' has ggml type 23 \(IQ4_XS\); "
                       r"supported: F32, .*Q6_K \(the i-quants IQ\* are not read: take the model's Q4_K_M, Q8_0 or F16"):
        list(G.gguf_tensors(tmp_path / "k.gguf", G.read_gguf(tmp_path / "k.gguf")[1]))
    meta = {k: v for k, v in llama_meta(c).items() if "feed_forward" not in k}
    with pytest.raises(ValueError, match=r"m\.gguf: GGUF metadata llama\.feed_forward_length is missing"):
        M.load_pretrained(write(tmp_path / "m.gguf", {"token_embd.weight": (x, Q.F32)}, meta))
    path = write(tmp_path / "e.gguf", {"token_embd.weight": (x, Q.F32), "blk.0.extra.weight": (x, Q.F32)},
                 llama_meta(c) | {"llama.block_count": 1, "llama.feed_forward_length": 8})
    with pytest.raises(ValueError, match=r"e\.gguf: tensor 'blk\.0\.extra\.weight' is left over"):
        M.load_pretrained(path)
    for key, v in (("llama.attention.head_count", 0), ("llama.attention.head_count", [4, 4])):  # were tracebacks
        with pytest.raises(ValueError, match=rf"h\.gguf: GGUF metadata {key} = {re.escape(repr(v))}; a Llama needs"):
            M.load_pretrained(write(tmp_path / "h.gguf", {"token_embd.weight": (x, Q.F32)}, llama_meta(c) | {key: v}))
    with pytest.raises(ValueError, match=r"a\.gguf: general\.alignment = 0; the GGUF format needs a positive"):
        G.read_gguf(write(tmp_path / "a.gguf", {"w": (x, Q.F32)}, {"general.alignment": 0}))
    (tmp_path / "h.gguf").unlink(), (tmp_path / "a.gguf").unlink()         # the folder's .gguf count is checked below
    data = path.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[:len(data) - 100])
    with pytest.raises(ValueError, match=r"cut\.gguf: truncated: tensor 'blk\.0\.extra\.weight' \(F32, shape "
                                         r"\(4, 64\)\) ends at byte \d+, the file has \d+ bytes"):
        list(G.gguf_tensors(tmp_path / "cut.gguf", G.read_gguf(tmp_path / "cut.gguf")[1]))
    (tmp_path / "head.gguf").write_bytes(data[:200])
    with pytest.raises(ValueError, match=r"head\.gguf: truncated GGUF header"):
        G.read_gguf(tmp_path / "head.gguf")
    (tmp_path / "ggml.bin").write_bytes(b"GGML" + data[4:])
    with pytest.raises(ValueError, match=r"ggml\.bin: not a GGUF file"):
        G.read_gguf(tmp_path / "ggml.bin")
    with pytest.raises(ValueError, match=r"\d \.gguf files \(cut\.gguf, e\.gguf, g\.gguf"):
        M.load_pretrained(tmp_path)


def test_a_cut_k_quant_tensor_or_a_row_of_part_blocks_is_an_error_naming_it(tmp_path):
    """A Q4_K tensor whose file ends early (refused before the tensor ahead of it is read: a cut 4 GB download failed
    only once the gigabytes before the cut were in), or whose rows are not whole 256-value blocks though the whole
    tensor is (ggml refuses such a file; here its dims are edited): one line naming the file, the tensor, its type."""
    w = random_blocks(Q.Q4_K, (4, 512), np.random.default_rng(0))
    path = write(tmp_path / "k.gguf", {"a": (np.ones((2, 32), np.float32), Q.F32), "w": (w, Q.Q4_K)}, {})
    data = path.read_bytes()
    assert next(G.gguf_tensors(path, {"w": G.read_gguf(path)[1]["w"]}))[1].shape == (4, 512)
    (tmp_path / "cut.gguf").write_bytes(data[:-100])
    with pytest.raises(ValueError, match=rf"cut\.gguf: truncated: tensor 'w' \(Q4_K, shape \(4, 512\)\) ends at byte "
                                         rf"{len(data)}, the file has {len(data) - 100} bytes; download or convert"):
        next(G.gguf_tensors(tmp_path / "cut.gguf", G.read_gguf(tmp_path / "cut.gguf")[1]))
    dims = b"w" + struct.pack("<IQQ", 2, 512, 4)
    assert data.count(dims) == 1
    for new, shape in [((384, 4), (4, 384)), ((384, 2), (2, 384)), ((128, 6), (6, 128))]:  # 6, 3, 3 blocks in all
        (tmp_path / "row.gguf").write_bytes(data.replace(dims, b"w" + struct.pack("<IQQ", 2, *new)))
        with pytest.raises(ValueError, match=rf"row\.gguf: tensor 'w' of shape {re.escape(str(shape))} is not a whole "
                                             rf"number of Q4_K blocks \({new[0]} values per row, 256 per block\)"):
            list(G.gguf_tensors(tmp_path / "row.gguf", G.read_gguf(tmp_path / "row.gguf")[1]))
    for kind in (Q.Q4_0, Q.Q5_0, Q.Q8_0):                                     # blocks of 32: rows of 48, 3 blocks in all
        path = write(tmp_path / "r32.gguf", {"w": (random_blocks(kind, (4, 64), np.random.default_rng(0)), kind)}, {})
        path.write_bytes(path.read_bytes().replace(dims[:1] + struct.pack("<IQQ", 2, 64, 4),
                                                   dims[:1] + struct.pack("<IQQ", 2, 48, 2)))
        with pytest.raises(ValueError, match=rf"r32\.gguf: tensor 'w' of shape \(2, 48\) is not a whole number of "
                                             rf"{kind.name} blocks \(48 values per row, 32 per block\)"):
            list(G.gguf_tensors(path, G.read_gguf(path)[1]))


def test_a_tensor_past_the_end_or_of_an_unknown_type_is_an_error_naming_it(tmp_path):
    """A damaged table entry: an offset past the file's end (2^63 was "cannot fit 'int' into an offset-sized integer",
    naming nothing), dims too large for the file (an allocator traceback asking for 288 TB), or a type id no ggml
    reads (4 was "a type newer than this reader": it is Q4_2, long removed): one line naming the file and tensor."""
    w = random_blocks(Q.Q4_K, (4, 512), np.random.default_rng(0))
    path = write(tmp_path / "k.gguf", {"a": (np.ones((2, 32), np.float32), Q.F32), "w": (w, Q.Q4_K)}, {})
    data, entry = path.read_bytes(), b"w" + struct.pack("<IQQ", 2, 512, 4)
    at = data.index(entry) + len(entry)                                     # then: type u32, offset u64
    size = len(data)
    assert struct.unpack("<I", data[at:at + 4]) == (Q.Q4_K.value,)
    for label, new, error in [
            ("past", data[:at + 4] + struct.pack("<Q", 1 << 63) + data[at + 12:], r"truncated: tensor 'w' \(Q4_K, "
             rf"shape \(4, 512\)\) ends at byte 92233720368547\d{{5}}, the file has {size} bytes; download or convert"),
            ("dims", data.replace(entry, b"w" + struct.pack("<IQQ", 2, 512, 1 << 40)), r"truncated: tensor 'w' \(Q4_K, "
             rf"shape \({1 << 40}, 512\)\) ends at byte \d+, the file has {size} bytes"),
            ("type", data[:at] + struct.pack("<I", 4) + data[at + 4:], r"tensor 'w' has ggml type 4 \(unknown to this "
             r"reader\); supported: F32,"),
            ("tq", data[:at] + struct.pack("<I", 34) + data[at + 4:], r"tensor 'w' has ggml type 34 \(TQ1_0\)")]:
        (tmp_path / f"{label}.gguf").write_bytes(new)
        with pytest.raises((ValueError, NotImplementedError), match=rf"{label}\.gguf: {error}"):
            next(G.gguf_tensors(tmp_path / f"{label}.gguf", G.read_gguf(tmp_path / f"{label}.gguf")[1]))


def test_a_tokenizer_key_missing_is_an_error_naming_the_file_and_key(tmp_path):
    """A GGUF whose tokenizer lacks a list it is built from (BPE's merges, sentencepiece's scores) is a one-line
    error in eval.py, naming the file and key (a KeyError traceback from gguf_tokenizer, since eval.py stopped taking
    every KeyError for a user's mistake)."""
    import eval as E
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    tensors, spm = llama_cpp_layout(random_params(transformers.LlamaForCausalLM(c), 0).state_dict(), c), dict(
        llama_meta(c), **{"tokenizer.ggml.model": "llama", "tokenizer.ggml.token_type": [1] * 256})
    (tmp_path / "t.txt").write_text("hi")
    for name, meta, key in (("b.gguf", llama_meta(c), "merges"), ("s.gguf", spm, "scores")):
        meta.pop(f"tokenizer.ggml.{key}", None)  # (the sentencepiece one never had scores)
        with pytest.raises(SystemExit, match=rf"^error: .*{name}: GGUF metadata tokenizer\.ggml\.{key} is missing"):
            E.main(["--task", "perplexity", "--model", str(write(tmp_path / name, tensors, meta)), "--data",
                    str(tmp_path / "t.txt")])
    with pytest.raises(ValueError, match=r"n\.gguf: GGUF metadata tokenizer\.ggml\.tokens is a str, not a list"):
        load_tokenizer(write(tmp_path / "n.gguf", {}, llama_meta(c) | {"tokenizer.ggml.tokens": "ab"}))


def test_a_name_twice_in_the_header_is_refused_as_gguf_refuses_it(tmp_path):
    """A dict keeps the last of two entries of one name: a file with a tensor (or metadata key) twice would load one
    of them unnoticed. gguf.GGUFReader and llama.cpp refuse such a file; so do we."""
    x = np.ones((2, 32), np.float32)
    path = write(tmp_path / "d.gguf", {"wa": (0 * x, Q.F32), "wb": (x, Q.F32)}, {"x.aa": 1, "x.ab": 2})
    raw = path.read_bytes()
    for old, new, what in [(b"wb", b"wa", "tensor 'wa'"), (b"x.ab", b"x.aa", "metadata key 'x.aa'")]:
        path.write_bytes(raw.replace(old, new, 1))
        with pytest.raises((ValueError, KeyError), match="[Dd]uplicate"):
            GGUFReader(path)
        with pytest.raises(ValueError, match=rf"d\.gguf: {what} appears twice in the GGUF header"):
            G.read_gguf(path)


def test_gguf_add_eos_token_ends_a_scored_document(tmp_path, capsys):
    """tokenizer.ggml.add_eos_token true (llama.cpp then ends every tokenized text with EOS): a perplexity document
    ends with it (it was read for no GGUF), a prompt does not; the note names the key."""
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    meta = llama_meta(c) | {"tokenizer.ggml.eos_token_id": 6, "tokenizer.ggml.add_eos_token": True}
    tok = load_tokenizer(write(tmp_path / "e.gguf", {}, meta))
    assert "tokenizer.ggml.add_eos_token" in capsys.readouterr().out
    (tmp_path / "doc.txt").write_text("hi")
    assert perplexity_docs(str(tmp_path / "doc.txt"), tok) == [([ord("h"), ord("i"), 6], 1)]
    assert tok.encode("hi") == [ord("h"), ord("i")]


def test_llama31_rope_freqs_as_transformers_llama3(tmp_path):
    """Llama 3.1 GGUFs carry rope_freqs.weight: the llama3 RoPE as per-frequency divisors (computed here as llama.cpp's
    convert_hf_to_gguf.py does). It was refused; now read back as rope_scaling llama3 and the logits equal
    transformers' on the HF model with that rope_scaling, at 300 positions (where the scaled frequencies differ). Any
    other divisors are refused by name."""
    rope = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                original_max_position_embeddings=8192)
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                                 max_position_embeddings=131072, rope_parameters=dict(rope_theta=500000.0, **rope))
    src = random_params(transformers.LlamaForCausalLM(c), 0).eval()
    hd, divisors = 16, []
    for i in range(0, 16, 2):                  # convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors
        wavelen = 2 * math.pi * 500000.0 ** (i / hd)
        smooth = (8192 / wavelen - 1.0) / (4.0 - 1.0)
        divisors.append(1.0 if wavelen < 8192 / 4 else 8.0 if wavelen > 8192 else 1 / ((1 - smooth) / 8.0 + smooth))
    tensors = llama_cpp_layout(src.state_dict(), c) | {"rope_freqs.weight": (np.array(divisors, np.float32), Q.F32)}
    write(tmp_path / "l31.gguf", tensors, llama_meta(c))
    ours = M.load_pretrained(tmp_path / "l31.gguf")
    assert ours.config.rope_scaling == rope
    ids = torch.randint(0, 256, (1, 300), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = src(ids).logits
        torch.testing.assert_close(ours(ids), want, atol=1e-4, rtol=0)
        plain = M.load_pretrained(write(tmp_path / "plain.gguf", llama_cpp_layout(src.state_dict(), c), llama_meta(c)))
        assert (plain(ids) - want).abs().max() > 1e-2     # the divisors matter at these positions
    tensors["rope_freqs.weight"] = (np.array(divisors, np.float32) * 1.5, Q.F32)
    with pytest.raises(NotImplementedError, match=r"bad\.gguf: rope_freqs\.weight \(8,\) is not Llama 3\.1's llama3"):
        M.load_pretrained(write(tmp_path / "bad.gguf", tensors, llama_meta(c)))


def test_linear_rope_scaling_metadata_as_transformers(tmp_path):
    """A GGUF whose metadata says rope.scaling.type linear (a 4x context fine-tune, as convert_hf_to_gguf.py writes
    it from rope_scaling {type: linear}) was refused; now rope_scaling linear, logits = transformers' on the HF model;
    yarn in metadata stays refused by name."""
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                                 max_position_embeddings=1024,
                                 rope_parameters=dict(rope_theta=10000.0, rope_type="linear", factor=4.0))
    src = random_params(transformers.LlamaForCausalLM(c), 0).eval()
    tensors, meta = llama_cpp_layout(src.state_dict(), c), llama_meta(c)
    ours = M.load_pretrained(write(tmp_path / "lin.gguf", tensors, meta | {"llama.rope.scaling.type": "linear",
                                                                            "llama.rope.scaling.factor": 4.0}))
    assert ours.config.rope_scaling == dict(rope_type="linear", factor=4.0)
    ids = torch.randint(0, 256, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), src(ids).logits, atol=1e-4, rtol=0)
    with pytest.raises(NotImplementedError, match=r"y\.gguf: RoPE scaling 'yarn'"):
        M.load_pretrained(write(tmp_path / "y.gguf", tensors, meta | {"llama.rope.scaling.type": "yarn",
                                                                      "llama.rope.scaling.factor": 4.0}))


def test_a_k_quant_block_with_an_inf_scale_is_refused_naming_the_tensor(tmp_path):
    """A damaged Q4_K file: one block's fp16 d is Inf, so its weights dequantize to Inf/NaN. Loading refuses it naming
    the tensor (checkpoint.fill checks every streamed tensor), for the dense and the NF4 load alike; no NaN model."""
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=512, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    ref, rng = random_params(transformers.LlamaForCausalLM(c), 0), np.random.default_rng(0)
    state, raw, kinds = ref.state_dict(), {}, {}
    for name, t in ((n, t) for n, t in state.items() if t.ndim == 2):
        kinds[name], raw[name] = Q.Q4_K, torch.from_numpy(random_blocks(Q.Q4_K, t.shape, rng, 0.1))
    raw["model.layers.0.mlp.up_proj.weight"][3, 0:2] = torch.tensor([0x00, 0x7C], dtype=torch.uint8)
    path = write(tmp_path / "bad.gguf", llama_cpp_layout(state | raw, c, kinds=kinds), llama_meta(c))
    for quantize in (None, "nf4"):
        with pytest.raises(ValueError, match=r"ffn_up.*(NaN|Inf)|up_proj.*(NaN|Inf)"):
            M.load_pretrained(path, quantize=quantize)


PEAK = """import sys, torch, torch.nn as nn, checkpoint as C, ggufread as G
path, dtype = sys.argv[1], getattr(torch, sys.argv[2])
meta, tensors = G.read_gguf(path)
with torch.device("meta"):
    model = nn.ModuleDict({"up": nn.Linear(11008, 4096, bias=False)})
C.trim_heap()
open("/proc/self/clear_refs", "w").write("5")               # VmHWM := VmRSS now
base = C.resident()
C.fill(model, ((path, "up.weight", t) for _, t in G.gguf_tensors(path, tensors, dtype)), dtype)
t = model.up.weight
print(C.resident("VmHWM") - base, t.nbytes, t.sum(dtype=torch.float64).item())"""


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_7b_q4_k_tensor_reads_within_its_output_plus_a_few_mib(tmp_path, dtype):
    """Llama-2-7B's ffn_up (4096 x 11008) in Q4_K, read and loaded (checkpoint.fill) in a fresh process: the resident
    peak above the start is the output (172 MiB in float32, 86 in bfloat16) plus a few MiB (measured: 5-16). It was
    58-84 MiB more in float32 (the file's 24 MiB of blocks held whole; 16384 K-quant blocks a chunk, 16 MiB each
    temporary); a bfloat16 load held the float32 tensor too, and fill's finiteness check a float32 copy of 2^24 values
    (3.9x its output)."""
    raw = random_blocks(Q.Q4_K, (4096, 11008), np.random.default_rng(0), 0.1)
    path = write(tmp_path / "up.gguf", {"blk.0.ffn_up.weight": (raw, Q.Q4_K)}, {})
    run = subprocess.run([sys.executable, "-c", PEAK, str(path), dtype], capture_output=True, text=True,
                         cwd=C.__file__.rpartition("/")[0])
    assert run.returncode == 0, run.stderr
    peak, nbytes, total = run.stdout.split()
    assert int(nbytes) == 4096 * 11008 * getattr(torch, dtype).itemsize
    want = torch.from_numpy(dequantize(raw, Q.Q4_K)).to(getattr(torch, dtype)).double().sum().item()
    assert float(total) == pytest.approx(want, rel=1e-6)
    assert int(peak) < int(nbytes) + (32 << 20), (int(peak) - int(nbytes)) >> 20


def test_full_fine_tune_of_a_gguf_saves_its_tokenizer(tmp_path, tiny):
    """--method full from a .gguf saved OUT/model with no tokenizer file (a GGUF has none to copy): the saved model
    could not be used alone. Now its tokenizer is written there (tokenizer.json, with add_bos/add_eos and BOS/EOS):
    our loader and transformers read it back to the GGUF's ids; the saved model loads and runs."""
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    meta = llama_meta(c) | {"tokenizer.ggml.eos_token_id": 6, "tokenizer.ggml.add_bos_token": True}
    gguf = write(tmp_path / "t.gguf", llama_cpp_layout(random_params(transformers.LlamaForCausalLM(c), 0)
                                                       .state_dict(), c), meta)
    train.main(flags((str(gguf), tiny[1]), tmp_path / "out", "--method", "full", "--max-steps", "1"))
    saved, texts = tmp_path / "out" / "model", ["! ?!? hi\x04 there\n", "", "\x05\x06 x"]
    ours, back = load_tokenizer(gguf), load_tokenizer(saved)
    assert [back.encode(t) for t in texts] == [ours.encode(t) for t in texts]
    assert (back.bos_id, back.eos_id, back.add_bos, back.add_eos) == (ours.bos_id, ours.eos_id, True, False) == (
        5, 6, True, False)
    hf = transformers.AutoTokenizer.from_pretrained(saved)
    assert [hf(t).input_ids for t in texts] == [ours.encode(t) for t in texts]
    ids = torch.tensor([back.encode(texts[0])])
    assert M.load_pretrained(saved)(ids).shape == (1, ids.shape[1], 256)


@pytest.mark.parametrize("pad", [5, 255])
def test_gguf_padding_token_row_gets_no_embedding_gradient_as_transformers(tmp_path, pad):
    """tokenizer.ggml.padding_token_id: transformers' GGUF loader reads it as pad_token_id, and its LlamaModel builds
    embed_tokens with padding_idx there: that row gets no gradient (--method full). We read no pad from a GGUF: the
    row moved where transformers leaves it (the real SmolLM2 GGUF has padding_token_id 2, its EOS). Gradients of the
    whole model compared, the pad id among the real tokens."""
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                                 max_position_embeddings=256, tie_word_embeddings=False)
    src = random_params(transformers.LlamaForCausalLM(c), 0)
    write(tmp_path / "tiny.gguf", llama_cpp_layout(src.state_dict(), c),
          llama_meta(c) | {"tokenizer.ggml.padding_token_id": pad})
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf", dtype=torch.float32)
    ours = M.load_pretrained(tmp_path)
    assert ref.config.pad_token_id == pad and ref.model.embed_tokens.padding_idx == pad  # the oracle's reading
    assert ours.config.padding_idx == pad
    x = torch.tensor([[3, pad, 7, 9, pad, 11, 4, pad]])
    ref.train()(x, labels=x).loss.backward()
    ours.train().requires_grad_(True)
    ours(x, labels=x).backward()
    want = dict(ref.named_parameters())
    assert (want["model.embed_tokens.weight"].grad[pad] == 0).all()
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, want[name].grad, atol=1e-5, rtol=0, msg=name)
