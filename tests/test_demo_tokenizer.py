"""The offline demo's tokenizer.model (data.train_sentencepiece), trained as Llama 2's was: sentencepiece (lorasp's
tokenizer) and transformers' tokenizers read the same ids from it on text with newlines, tabs, runs of spaces and
characters its training text never had; its specs are Llama 2's. (llama.cpp's converter on the demo-like model's
export: tests/test_export.py.) It was trained with sentencepiece's defaults: nmt_nfkc (newlines and runs of spaces
made single spaces), no byte pieces (an unseen character <unk>), which transformers and llama.cpp do not apply. A
demo model cached before is not taken for the new one's."""
import os
import tempfile

import pytest
import transformers
from sentencepiece import sentencepiece_model_pb2

import cli
import data
import tokenizer
import train
from fixtures import demo_tokenizer
from model import LlamaConfig, build_model, save_pretrained

# Llama 2's tokenizer.model (Meta's file; llama2.c ships a copy), its specs printed with sentencepiece's ModelProto:
# the fields that decide how text becomes pieces, and its special pieces' ids
LLAMA2_NORMALIZER = dict(name="identity", precompiled_charsmap=b"", add_dummy_prefix=True,
                         remove_extra_whitespaces=False, escape_whitespaces=True)
LLAMA2_TRAINER = dict(model_type=sentencepiece_model_pb2.TrainerSpec.BPE, split_digits=True, byte_fallback=True,
                      allow_whitespace_only_pieces=True, split_by_whitespace=True, split_by_number=True,
                      split_by_unicode_script=True, treat_whitespace_as_suffix=False, max_sentencepiece_length=16,
                      unk_id=0, bos_id=1, eos_id=2, pad_id=-1, unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
                      unk_surface=" \N{DOUBLE QUESTION MARK} ")
TEXTS = (data.PROMPT_DICT["prompt_input"].format(instruction="How many words are in owl fox?", input="cat  dog"),
         "cat  dog   3\t7\n\nowl  ", "é 漢 😀 café\r\nfox", "Answer:\t12345.\n")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(folder, lorasp's tokenizer): the fixtures' demo tokenizer.model, alone in its folder."""
    d = tmp_path_factory.mktemp("demo_tok")
    return d, demo_tokenizer(d, 300)


def test_the_demo_tokenizer_has_llama_2s_specs(demo):
    """normalizer_spec and trainer_spec field by field as Llama 2's, and its first 259 pieces: <unk>, <s>, </s>, then
    the 256 bytes <0x00>..<0xFF> (type BYTE), as Llama 2's. Was nmt_nfkc with extra whitespace removed, no bytes."""
    m = sentencepiece_model_pb2.ModelProto()
    m.ParseFromString((demo[0] / "tokenizer.model").read_bytes())
    assert {k: getattr(m.normalizer_spec, k) for k in LLAMA2_NORMALIZER} == LLAMA2_NORMALIZER
    assert {k: getattr(m.trainer_spec, k) for k in LLAMA2_TRAINER} == LLAMA2_TRAINER
    T = sentencepiece_model_pb2.ModelProto.SentencePiece
    assert [(p.piece, p.type) for p in m.pieces[:259]] == [("<unk>", T.UNKNOWN), ("<s>", T.CONTROL), (
        "</s>", T.CONTROL)] + [(f"<0x{b:02X}>", T.BYTE) for b in range(256)]


@pytest.mark.parametrize("reader", ["LlamaTokenizer", "SentencePieceBackend"])
def test_transformers_reads_the_demo_tokenizer_model_as_ours(demo, reader):
    """transformers' LlamaTokenizer (tokenizers' BPE built from the file; LlamaTokenizerFast is the same class in
    transformers 5) and its SentencePieceBackend give our ids, and decode them back to the text, on texts with
    newlines, tabs, runs of spaces, \\r\\n and characters the demo's text lacks (é, 漢, an emoji: their UTF-8 bytes).
    Were: a newline or a run of spaces one "▁" in ours (nmt_nfkc), kept in transformers'; é and 漢 <unk> in ours,
    dropped in transformers'. (A text that starts with a run of spaces LlamaTokenizer reads one space short, on Llama
    2's own tokenizer.model too: there SentencePieceBackend alone is compared; its decode writes a tab <0x09>.)"""
    d, ours = demo
    hf = (transformers.LlamaTokenizer.from_pretrained(d) if reader == "LlamaTokenizer" else
          transformers.SentencePieceBackend(vocab_file=str(d / "tokenizer.model")))
    for text in TEXTS + ("  two leading spaces",) * (reader == "SentencePieceBackend"):
        ids = ours.encode(text, bos=False)
        assert hf.encode(text, add_special_tokens=False) == ids, text
        assert ours.decode(ids) == text and (hf.decode(ids) == text or reader == "SentencePieceBackend")
    assert ours.encode("é", bos=False) == [ours.sp.piece_to_id("▁")] + [3 + b for b in "é".encode()]  # <0xC3> <0xA9>


def test_the_demo_vocabulary_holds_its_words_beside_the_byte_pieces():
    """DEMO_PRETRAIN's vocab on the demo's own text (data.demo_files): each of its words and the prompt's words is one
    piece, its text needs no byte piece (400 pieces, what it had before, left too few merges beside 256 bytes)."""
    with tempfile.TemporaryDirectory() as d:
        data.demo_files(d, 300, cli.DEMO_PRETRAIN["vocab"])
        tok = tokenizer.load_tokenizer(d)
    assert tok.vocab_size == cli.DEMO_PRETRAIN["vocab"]
    for word in [*data.DEMO_WORDS, "Below", "Instruction", "Response", "How", "many", "words", "numbers", "appear"]:
        assert len(tok.encode(word, bos=False)) == 1, word
    record = data.demo_records(1, seed=1)[0]
    assert min(tok.encode(data.PROMPT_DICT["prompt_no_input"].format(**record) + record["output"], bos=False)) >= 259


def test_a_demo_model_cached_by_an_earlier_recipe_is_not_taken_for_the_demos(tmp_path, monkeypatch, capsys):
    """A cache holding the demo model an earlier lorasp pretrained (models/demo-llama, its tokenizer trained the old
    way) was the demo's model: `python train.py` fine-tuned it and never trained the tokenizer anew. The demo's folder
    is named by its recipe now: the demo pretrains its own, and a note names the old folder, left as it was."""
    monkeypatch.setitem(cli.DEMO_PRETRAIN, "docs", 300)
    monkeypatch.setitem(cli.DEMO_PRETRAIN, "config", dict(n_layer=1, n_embd=32, n_head=2, n_kv_head=2, n_ffn=64))
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
    old = tmp_path / "cache" / "models" / "demo-llama"
    old.mkdir(parents=True)
    demo_tokenizer(old, 300)
    save_pretrained(build_model(LlamaConfig(vocab_size=456, n_layer=1, n_embd=32, n_head=2, n_kv_head=2,
                                            n_ffn=64)), old)
    before = {f: (old / f).read_bytes() for f in os.listdir(old)}
    train.main(["--max-steps", "1", "--exact-match", "0", "--dtype", "fp32", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert f"note: {old}: the demo model of another recipe" in out and "pretraining the demo model" in out
    assert f"{cli.demo_model_dir()}: lorasp" in out and os.path.basename(cli.demo_model_dir()) != "demo-llama"
    assert {f: (old / f).read_bytes() for f in os.listdir(old)} == before
