"""What several test files build the same way: random weights for a reference model, the tiny Llama that train.py
runs on (and its command line), a fault injected into its training loss, tokenizers trained here with a checkpoint
family's special ids, and the one-row-a-case tables of tests/test_bad_input.py and tests/test_api_wild.py."""
import io
import json
import os
from collections import namedtuple

import pytest
import sentencepiece as spm
import torch

import data
import tokenizer
import train
from model import LlamaConfig, build_model, save_pretrained

# The devices tests parametrized over: CUDA cases exist only where a GPU is (bench/gpu_check.py runs them), never skipped
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


Case = namedtuple("Case", "name build expect fragment")


def table():
    """A table of cases: (its rows, `case(name, expect, fragment)`, the decorator that registers a builder as a row)."""
    rows = []

    def case(name, expect, fragment=""):
        def add(build):
            rows.append(Case(name, build, expect, fragment))
            return build
        return add
    return rows, case


def random_params(m, seed):
    """Random values everywhere (norm weights and biases too) so a mis-loaded tensor cannot hide; eval mode (no
    dropout), as the comparisons need it."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            r = torch.randn(p.shape, generator=g)  # matrices ~ unit gain (1/sqrt(fan_in)), vectors ~ 1 +- 0.2
            p.copy_(r / p.shape[-1] ** 0.5 if p.ndim == 2 else 1 + 0.2 * r)
    return m.eval()


def t5_sentencepiece(directory, lines, vocab_size):
    """directory/spiece.model: a unigram sentencepiece model trained on lines with T5's special ids (pad 0, eos 1,
    unk 2, no bos)."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=1.0, minloglevel=2)
    (directory / "spiece.model").write_bytes(buf.getvalue())
    return directory


def demo_tokenizer(directory, docs):
    """directory/tokenizer.model: data.train_sentencepiece (trained as Llama 2's tokenizer was) on `docs` lines of the
    demo's text and Alpaca's templates: 456 pieces, the 200 it had before plus Llama's 256 byte pieces."""
    data.train_sentencepiece(data.demo_corpus(docs) + list(data.PROMPT_DICT.values()) * 5,
                             str(directory / "tokenizer.model"), 456)
    return tokenizer.load_tokenizer(str(directory))


def gpt2_folder(directory):
    """A byte-level BPE (GPT-2's kind, trained here: 300 ids, <|endoftext|> 0) that transformers saved after a pad
    token was added: tokenizer.json and a tokenizer_config.json naming pad_token <pad> (id 300)."""
    import transformers                                      # (test-only oracles: imported where used)
    from tokenizers import ByteLevelBPETokenizer
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(data.demo_corpus(50), vocab_size=300, min_frequency=2, special_tokens=["<|endoftext|>"])
    bpe.save(str(directory / "tokenizer.json"))
    json.dump(dict(tokenizer_class="GPT2Tokenizer", bos_token="<|endoftext|>", eos_token="<|endoftext|>"),
              open(directory / "tokenizer_config.json", "w"))
    hf = transformers.AutoTokenizer.from_pretrained(directory)
    hf.add_special_tokens({"pad_token": "<pad>"})
    hf.save_pretrained(directory)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model directory, task file): a 2-layer Llama with its own sentencepiece tokenizer, and demo records."""
    d = tmp_path_factory.mktemp("tiny")
    tok = demo_tokenizer(d, 300)
    torch.manual_seed(0)
    save_pretrained(build_model(LlamaConfig(vocab_size=tok.vocab_size, n_layer=2, n_embd=32, n_head=4, n_kv_head=2,
                                            n_ffn=64)), d)
    task = d / "task.json"
    task.write_text(json.dumps(data.demo_records(60, seed=1)))
    return str(d), str(task)


def flags(tiny, out, *more):
    """train.py's arguments for 10 quick steps on the tiny fixture, in fp32 (--dtype auto would pick bf16 on a CPU
    with bf16 units: the exact comparisons these tests make are fp32's)."""
    return ["--model", tiny[0], "--data", tiny[1], "--out", str(out), "--batch-size", "4", "--grad-accum", "2",
            "--seq-len", "200", "--lr", "1e-2", "--max-steps", "10", "--val-fraction", "0.1", "--eval-every", "0",
            "--log-every", "5", "--dtype", "fp32", *more]


def fault_at_loss_call(monkeypatch, n, what):
    """On train.py's n-th training loss (with gradients on: 2 calls a step with `flags`), make it NaN (what="nan") or
    send this process the signal `what` (SIGINT: Ctrl-C, SIGTERM), then go on."""
    calls, original = [0], train.causal_lm_loss

    def loss(model, batch):
        out = original(model, batch)
        if torch.is_grad_enabled():
            calls[0] += 1
            if calls[0] == n:
                if what == "nan":
                    return out[0] * float("nan"), out[1]
                os.kill(os.getpid(), what)
        return out
    monkeypatch.setattr(train, "causal_lm_loss", loss)
