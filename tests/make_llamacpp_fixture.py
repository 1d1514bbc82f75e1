"""Writes tests/data/llamacpp/: a tiny random Llama quantized by llama.cpp's own quantizer (the way users' Q4_K_M files
are made) and the logits llama.cpp itself computes on each file, for test_gguf_llamacpp.py (which needs no llama.cpp).

The F32 source is written with gguf-py's GGUFWriter (a sentencepiece-style vocabulary so llama.cpp accepts it), then
llama_cpp.llama_model_quantize makes Q4_K_M, Q6_K and Q3_K_M from it; only those ship (the F32 one is rebuilt by the
test from `tiny_llama`, whose weights fingerprint is recorded). llama.cpp runs with an F32 KV cache and no flash
attention, so what differs from us is its quantized activations (q8_K dot products) and its summation order.

Run it with llama-cpp-python 0.3.36 in its own venv (never the CI one):
    python3.11 -m venv /tmp/lcpp-venv && /tmp/lcpp-venv/bin/pip install numpy gguf==0.19.0
    CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 /tmp/lcpp-venv/bin/pip install llama-cpp-python==0.3.36
    /tmp/lcpp-venv/bin/python tests/make_llamacpp_fixture.py
"""
import ctypes
import hashlib
import json
import os
import sys
import tempfile

import numpy as np
from gguf import GGUFWriter

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "llamacpp")
N_EMBD, N_FFN, N_LAYER, N_HEAD, N_KV_HEAD, VOCAB = 256, 512, 2, 4, 2, 300
IDS = [1, 17, 250, 3, 99, 298, 42, 42, 160, 7, 205, 64]        # BOS, then any ids: the logits are all that is compared
FTYPES = {"Q4_K_M": 15, "Q6_K": 18, "Q3_K_M": 12}             # llama.h's LLAMA_FTYPE_MOSTLY_*


def vocab():
    """<unk> <s> </s>, the 256 byte tokens llama.cpp's SPM vocabulary looks up (it finds "\\n" as <0x0A>), and
    word pieces up to VOCAB: (tokens, scores, token types)."""
    words = "▁the ▁a ▁of ▁and ▁to ▁in ▁is ▁it ▁that ▁was e t a o i n s h r d l u ▁ ▁on ▁for ▁as ▁with ▁be".split()
    words += [f"▁w{i}" for i in range(VOCAB - 3 - 256 - len(words))]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + words
    types = [2, 3, 3] + [6] * 256 + [1] * len(words)            # gguf.TokenType: UNKNOWN, CONTROL, BYTE, NORMAL
    return tokens, [0.0] * 259 + [-float(i) for i in range(len(words))], types


def tiny_llama(seed=0):
    """llama.cpp's tensor names -> float32 arrays (torch shapes; q/k rows as llama.cpp stores them: random, so the
    reordering convert_hf_to_gguf.py does needs no undoing here). Scales give logits of std ~1.5."""
    rng, hd = np.random.default_rng(seed), N_EMBD // N_HEAD

    def w(rows, cols, std=None):
        return (rng.standard_normal((rows, cols)) * (std or cols ** -0.5)).astype(np.float32)

    def norm():
        return (1 + 0.1 * rng.standard_normal(N_EMBD)).astype(np.float32)
    out = {"token_embd.weight": w(VOCAB, N_EMBD, 1.0)}
    for i in range(N_LAYER):
        out |= {f"blk.{i}.attn_norm.weight": norm(), f"blk.{i}.attn_q.weight": w(N_EMBD, N_EMBD),
                f"blk.{i}.attn_k.weight": w(N_KV_HEAD * hd, N_EMBD), f"blk.{i}.attn_v.weight": w(N_KV_HEAD * hd, N_EMBD),
                f"blk.{i}.attn_output.weight": w(N_EMBD, N_EMBD), f"blk.{i}.ffn_norm.weight": norm(),
                f"blk.{i}.ffn_gate.weight": w(N_FFN, N_EMBD), f"blk.{i}.ffn_up.weight": w(N_FFN, N_EMBD),
                f"blk.{i}.ffn_down.weight": w(N_EMBD, N_FFN)}
    return out | {"output_norm.weight": norm(), "output.weight": w(VOCAB, N_EMBD, 0.1)}


def fingerprint(tensors):
    """sha256 over the names and float32 bytes: the test checks its rebuilt F32 model is the one quantized here."""
    h = hashlib.sha256()
    for name, t in tensors.items():
        h.update(name.encode() + t.tobytes())
    return h.hexdigest()


def write_f32(path, tensors):
    """The F32 GGUF llama.cpp quantizes: the metadata convert_hf_to_gguf.py writes for a Llama, and the vocabulary."""
    w = GGUFWriter(str(path), "llama")
    w.add_block_count(N_LAYER)
    w.add_context_length(256)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FFN)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_KV_HEAD)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(VOCAB)
    w.add_file_type(0)                                        # ALL_F32
    tokens, scores, types = vocab()
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def llama_cpp_logits(path):
    """llama.cpp's logits (len(IDS), VOCAB) for IDS on one file: F32 KV cache, no flash attention, 2 threads."""
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_batch=64, logits_all=True, n_threads=2,
                          n_threads_batch=2, type_k=0, type_v=0, flash_attn=False, verbose=False)  # 0: GGML_TYPE_F32
    llm.eval(IDS)
    logits = np.array(llm.scores[:llm.n_tokens], dtype=np.float32)
    llm.close()
    assert logits.shape == (len(IDS), VOCAB), logits.shape
    return logits


def quantize(src, dst, ftype):
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = ftype, 2
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) != 0:
        sys.exit(f"llama.cpp could not quantize {src} to ftype {ftype}")


def main():
    import llama_cpp
    os.makedirs(OUT, exist_ok=True)
    tensors = tiny_llama()
    record = {"llama_cpp_python": llama_cpp.__version__, "ids": IDS, "f32_sha256": fingerprint(tensors), "logits": {}}
    with tempfile.TemporaryDirectory() as tmp:
        src = write_f32(os.path.join(tmp, "tiny-f32.gguf"), tensors)
        record["logits"]["F32"] = llama_cpp_logits(src)
        for name, ftype in FTYPES.items():
            dst = os.path.join(OUT, f"tiny-{name}.gguf")
            quantize(src, dst, ftype)
            record["logits"][name] = llama_cpp_logits(dst)
            print(f"{dst}: {os.path.getsize(dst)} bytes")
    record["logits"] = {k: [[round(float(x), 6) for x in row] for row in v] for k, v in record["logits"].items()}
    with open(os.path.join(OUT, "logits.json"), "w") as f:
        json.dump(record, f)
        f.write("\n")


if __name__ == "__main__":
    main()
