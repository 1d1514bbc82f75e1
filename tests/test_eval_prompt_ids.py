"""MMLU's prompt ids with each header tokenized once (evalcli.mmlu_encoder) against the whole prompt tokenized at once,
on the real vocabularies of the papers' models (Llama 2's sentencepiece, GPT-2's and Llama 3's byte-level BPE) and on
rows made to join badly: a different id would be a silently different score. Where the tokenizer may join the
header's end and the question (a piece holding a newline), the whole prompt is tokenized, as before."""
import random

import pytest
import sentencepiece as spm

import data
import evalcli
from fetch_real import path
from tokenizer import load_tokenizer

PIECES = ["the", " of", "Which", " is", "?", "\n", "\n\n", " ", "  ", "\t", "é", "漢字", "🙂", "12", "3.5", "-",
          "'s", "</s>", "<s>", "<|endoftext|>", "<|begin_of_text|>", "A", "D.", "Answer:", "\r\n", "ʼ", "x\u0301", "١٢"]


def rows(n, seed):
    """question, A, B, C, D, answer: text of the pieces above in random order (a row may start or end with a space,
    a newline, a digit, an added token's text)."""
    r = random.Random(seed)
    text = lambda k: "".join(r.choice(PIECES) for _ in range(r.randint(1, k)))  # noqa: E731
    return [[text(12), *(text(4) for _ in range(4)), r.choice("ABCD")] for _ in range(n)]


def tokenizers():
    return {"llama2": load_tokenizer(path("llama.cpp", "ggml-vocab-llama-spm.gguf")),
            "gpt2": load_tokenizer(path("gpt2", "encoder.json").removesuffix("encoder.json")),
            "llama3": load_tokenizer(path("llama3", "tokenizer.json").removesuffix("tokenizer.json"))}


@pytest.mark.parametrize("name", ["llama2", "gpt2", "llama3"])
def test_each_prompt_has_the_ids_of_the_whole_prompt(name):
    tok = tokenizers()[name]
    assert evalcli.breaks_at_newline(tok)                     # the header tokenized apart, not the fallback
    encode, dev, test = evalcli.mmlu_encoder(tok), rows(5, 0), rows(150, 1)
    for subject in ("abstract_algebra", "high_school_us_history"):
        for i, row in enumerate(test):
            shots = i % 6                                     # 0 (no header) to 5 worked examples
            assert encode(subject, dev, row, shots) == tok.encode(data.mmlu_prompt(subject, dev, row, shots)), row


def test_the_cut_is_before_the_newlines_gpt2_would_join_otherwise():
    """GPT-2 tokenizes a text's last "\\n\\n" as one token (628), and "\\n\\n" before a word as two (198 198): the
    header tokenized with its newlines would give another id."""
    tok, row, dev = tokenizers()["gpt2"], ["Which is it?", "a", "b", "c", "d", "A"], rows(2, 2)
    text = data.mmlu_prompt("anatomy", dev, row, 2)
    head = data.mmlu_prompt("anatomy", dev, row, 2)[:-len(data.mmlu_example(row, answer=False))]  # ends "\n\n"
    assert tok.encode(head) + tok.encode(text[len(head):], after=True) != tok.encode(text)
    assert evalcli.mmlu_encoder(tok)("anatomy", dev, row, 2) == tok.encode(text)


def test_a_tokenizer_with_a_newline_piece_is_tokenized_whole(tmp_path):
    """A sentencepiece vocabulary with a piece "A\\n\\n" (as Gemma's has newline pieces) joins the header's last
    answer and the newlines after it: cut there, the ids differ; breaks_at_newline says no, and the prompt is whole."""
    corpus = [data.mmlu_prompt("anatomy", rows(5, s), row) for s, row in enumerate(rows(40, 3))]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=800, model_type="bpe", byte_fallback=True, normalization_rule_name=
                                   "identity", remove_extra_whitespaces=False, user_defined_symbols=["A\n\n"],
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    tok = load_tokenizer(str(tmp_path))
    dev, row = [r[:5] + ["A"] for r in rows(5, 4)], rows(1, 5)[0]
    text = data.mmlu_prompt("anatomy", dev, row, 5)
    cut = len(text) - len(data.mmlu_example(row, answer=False)) - 2
    assert tok.encode(text[:cut]) + tok.encode(text[cut:], bos=False, after=True) != tok.encode(text)
    assert not evalcli.breaks_at_newline(tok)
    assert evalcli.mmlu_encoder(tok)("anatomy", dev, row, 5) == tok.encode(text)
