"""export.py writes the tokenizer of a base that has no tokenizer files to copy: a GGUF's own (its tokenizer.ggml.*
metadata) and a gpt2.tiktoken's (OpenAI's GPT-2 ranks), as tokenizer.hf_tokenizer writes them. The oracles:
transformers' AutoTokenizer on the folder gives the ids lorasp's load_tokenizer gives the base, on texts with accents
and scripts, runs of spaces, tabs and newlines, digits, emoji, code, chat marks and the special tokens written out; so
do transformers' own GGUF reader (but where it departs from the model's tokenizer, each departure named), llama.cpp's
expected ids (the .inp/.out beside its vocabularies), tiktoken on the ranks and GPT-2's own encoder.json + vocab.bpe. A
tiny random Llama with LLaMA's real vocabulary, exported, gives in transformers the run's logits on those ids."""
import base64
import json
import os
import shutil
import unicodedata

import pytest
import tiktoken
import torch
import transformers

import ggufread as G
import data
import model as M
import tokenizer
import train
from fetch_real import path
from fixtures import flags, random_params, tiny  # noqa: F401  (tiny: a fixture)
from lorasp import merge_lorasp, save_adapter
from test_export import convert_hf_to_gguf, run, trained
from test_gguf import llama_cpp_layout, llama_meta, write
from test_real_tokenizers import TEXT, llama_cpp_inputs

TEXTS = [TEXT, "Hello world", " a leading space", "  two  spaces,\ttab\n\nnew lines  ", "x", "", " ", "\n",
         "digits 3.14159 1,000,000 ½ ² ١٢٣ 2026-12-06", "emoji 🙂👍🏽🚀 and 日本語のテキスト, 한국어, Привет",
         "def f(x):\n    return {'a': x ** 2}  # code\n",
         "<|im_start|>user\nHi 42!<|im_end|>\n<|im_start|>assistant\n",
         "<s>Hi</s> x <unk>y</s>", "a</s>b <s> c", "<|endoftext|>the end<|endoftext|>", "I'll we've SHE'D 'q'",
         " " * 7 + "runs of spaces:" + " " * 17 + "(sentencepiece's whitespace pieces share one score)" + " " * 5]

DIGITS = {ord(c): None for t in TEXTS for c in t if unicodedata.category(c)[0] == "N"}  # (str.translate: drop them)


def expected(vocab):
    """llama.cpp's test inputs for a vocabulary GGUF and the ids it expects (no BOS)."""
    with open(path("llama.cpp", f"ggml-vocab-{vocab}.gguf.out"), encoding="utf-8") as f:
        ids = [[int(i) for i in line.split()] for line in f.read().split("\n")]
    return list(zip(llama_cpp_inputs(vocab), ids, strict=True))


@pytest.mark.parametrize("vocab", ["llama-spm", "phi-3"])
def test_a_gguf_sentencepiece_bpe_is_written_as_a_tokenizer_json_transformers_reads_to_lorasps_ids(tmp_path, vocab):
    """LLaMA's and Phi-3's sentencepiece BPE from llama.cpp's vocabulary GGUFs, as a BPE tokenizer.json: its merges
    ranked by score, byte fallback, the "▁" before the text (even one starting with a space: sentencepiece's and
    llama.cpp's) and after an added token only for Phi-3, whose markers strip the spaces after them. transformers'
    AutoTokenizer gives lorasp's ids, llama.cpp's; lorasp reads the folder back to them (LLaMA's: a "▁" came after
    each added token). transformers' own GGUF reader gives them too, but where a text starts with a space: it adds no
    "▁" there (as its Metaspace does), which sentencepiece, llama.cpp and lorasp do."""
    gguf = path("llama.cpp", f"ggml-vocab-{vocab}.gguf")
    ours = tokenizer.load_tokenizer(gguf)
    tokenizer.hf_tokenizer(ours, tmp_path, gguf)
    assert sorted(os.listdir(tmp_path)) == ["chat_template.jinja"] * (vocab == "phi-3") + [
        "tokenizer.json", "tokenizer.model", "tokenizer_config.json"]
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    chat = "<|user|>\nWhat is 2+2?<|end|>\n<|assistant|> 4<|end|>\n<|endoftext|>"
    for text in TEXTS + [chat] + llama_cpp_inputs(vocab):
        assert hf(text).input_ids == ours.encode(text), text
    for text, ids in expected(vocab):
        assert hf(text, add_special_tokens=False).input_ids == ids, text
    marks = [(hf.bos_token_id, ours.bos_id), (hf.eos_token_id, ours.eos_id), (hf.pad_token_id, ours.pad_id),
             (hf.unk_token_id, 0), (hf("a").input_ids[0], ours.bos_id)]
    assert all(a == b for a, b in marks), marks
    if vocab == "phi-3":
        return
    back = tokenizer.load_tokenizer(tmp_path)                  # tokenizer.model, the added tokens of tokenizer.json
    assert [back.encode(t) for t in TEXTS] == [ours.encode(t) for t in TEXTS]
    own = transformers.AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    texts = TEXTS + llama_cpp_inputs(vocab)
    apart = [t for t in texts if own(t).input_ids != ours.encode(t)]
    assert apart and all(t.startswith(" ") for t in apart) and all(
        ours.encode(t, bos=False) == ids for t, ids in expected(vocab) if t in apart)
    assert (own.bos_token_id, own.eos_token_id, own.unk_token_id) == (hf.bos_token_id, hf.eos_token_id,
                                                                      hf.unk_token_id)


@pytest.mark.parametrize("vocab", ["llama-bpe", "qwen2", "gpt-2", "starcoder"])
def test_a_gguf_byte_level_bpe_vocabulary_is_written_to_llama_cpps_ids(tmp_path, vocab):
    """llama.cpp's byte-level BPE vocabulary GGUFs (Llama 3's, Qwen2's, GPT-2's, StarCoder's) as tokenizer.hf_tokenizer
    writes them: transformers' AutoTokenizer gives lorasp's ids and llama.cpp's expected ones on its test inputs.
    Llama 3's 'Cửa Việt' was ['C', 'ửa', ' Vi', 'ệ', 't'] in transformers, one ' Việt' in lorasp and llama.cpp: a
    pre-token that is itself in the vocabulary is one token (tiktoken's rule, lorasp's; Llama 3's ignore_merges),
    which the merges alone do not make."""
    gguf = path("llama.cpp", f"ggml-vocab-{vocab}.gguf")
    ours = tokenizer.load_tokenizer(gguf)
    tokenizer.hf_tokenizer(ours, tmp_path, gguf)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS + llama_cpp_inputs(vocab):
        assert hf(text).input_ids == ours.encode(text), text
    for text, ids in expected(vocab):
        assert hf(text, add_special_tokens=False).input_ids == ids, text


def test_a_gguf_byte_level_bpe_is_read_by_transformers_to_lorasps_ids_with_its_marks_and_chat_template(tmp_path):
    """SmolLM2-Instruct's GGUF (byte-level BPE, digits one by one: tokenizer.ggml.pre "smollm"): AutoTokenizer gives
    lorasp's ids; transformers' own GGUF reader too, but where a text holds a digit-like character (it splits no
    digits: " ½" one token, SmolLM2's tokenizer.json and llama.cpp two). tokenizer_config.json names its BOS
    <|im_start|>, EOS and PAD <|im_end|>, UNK <|endoftext|> as the GGUF does, no BOS added, and the GGUF's chat
    template is chat_template.jinja: apply_chat_template renders what transformers' GGUF reader renders."""
    gguf = path("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    ours = tokenizer.load_tokenizer(gguf)
    tokenizer.hf_tokenizer(ours, tmp_path, gguf)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    own = transformers.AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    assert [hf(t).input_ids for t in TEXTS] == [ours.encode(t) for t in TEXTS]
    apart = [t for t in TEXTS if own(t).input_ids != ours.encode(t)]
    assert apart and all(any(unicodedata.category(c)[0] == "N" for c in t) for t in apart)
    assert [own(t.translate(DIGITS)).input_ids for t in apart] == [ours.encode(t.translate(DIGITS)) for t in apart]
    assert (hf.bos_token, hf.eos_token, hf.pad_token, hf.unk_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>",
                                                                        "<|endoftext|>")
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id, hf.unk_token_id) == (1, 2, 2, 0)
    assert (own.bos_token_id, own.eos_token_id, own.unk_token_id) == (1, 2, 0)
    chat = [{"role": "user", "content": "Hi 42!"}, {"role": "assistant", "content": "Hello."}]
    assert hf.chat_template == own.chat_template and hf.apply_chat_template(chat, tokenize=False) == \
        own.apply_chat_template(chat, tokenize=False)


def tiny_gguf(directory, vocab):
    """A tiny random Llama as llama.cpp writes one (q/k rows permuted), with the tokenizer metadata of llama.cpp's
    vocabulary GGUF ggml-vocab-VOCAB.gguf."""
    meta = {k: v for k, v in G.read_gguf(path("llama.cpp", f"ggml-vocab-{vocab}.gguf"))[0].items()
            if k.startswith("tokenizer.")}
    c = transformers.LlamaConfig(vocab_size=len(meta["tokenizer.ggml.tokens"]), hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                 max_position_embeddings=128)
    os.makedirs(directory)
    gguf = directory / "tiny.gguf"
    write(gguf, llama_cpp_layout(random_params(transformers.LlamaForCausalLM(c), 0).state_dict(), c),
          {k: v for k, v in llama_meta(c).items() if not k.startswith("tokenizer.")} | meta)
    return gguf


def test_a_gguf_base_exports_with_its_tokenizer_and_transformers_gives_the_runs_logits(tmp_path, capsys):
    """A tiny random Llama GGUF with LLaMA's real vocabulary, exported with a LoRA-SP adapter: the folder had no
    tokenizer (a note said to build one with transformers' GGUF reader, whose ids differ: see above). Now
    AutoTokenizer on it gives lorasp's ids of the GGUF, lorasp reads the folder back to them, AutoModelForCausalLM
    gives the run's merged logits on them, and llama.cpp's convert_hf_to_gguf.py makes of it a GGUF whose tokenizer
    gives them again."""
    gguf = tiny_gguf(tmp_path / "base", "llama-spm")
    ours = trained(M.load_pretrained(gguf, dtype=torch.float32), ["q_proj", "v_proj"])
    save_adapter(ours, tmp_path / "adapter", base_model_name_or_path=str(gguf))
    assert run("--model", gguf, "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
    assert "no tokenizer files" not in capsys.readouterr().err
    tok, hf = tokenizer.load_tokenizer(gguf), transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    back = tokenizer.load_tokenizer(tmp_path / "out")
    assert [hf(t).input_ids for t in TEXTS] == [tok.encode(t) for t in TEXTS] == [back.encode(t) for t in TEXTS]
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    ids = hf(" Hi <s>there</s>  2+2=4 🙂", return_tensors="pt").input_ids
    assert ids[0].tolist() == tok.encode(" Hi <s>there</s>  2+2=4 🙂")
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, merge_lorasp(ours)(ids), atol=1e-5, rtol=0)
    convert_hf_to_gguf(tmp_path / "out", tmp_path / "out.gguf")  # (llama.cpp's converter reads its tokenizer.model)
    again = tokenizer.load_tokenizer(tmp_path / "out.gguf")
    assert [again.encode(t) for t in TEXTS] == [tok.encode(t) for t in TEXTS]


def test_a_gguf_whose_tokenizer_is_not_written_says_so(tmp_path, capsys):
    """A GGUF's WordPiece (BGE's, llama.cpp's "bert"): not written, and the note names it and the way to one."""
    gguf = tiny_gguf(tmp_path / "base", "bert-bge")
    save_adapter(trained(M.load_pretrained(gguf), ["q_proj"]), tmp_path / "adapter")
    assert run("--model", gguf, "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
    assert sorted(os.listdir(tmp_path / "out")) == ["config.json", "lorasp_merged.json", "model.safetensors"]
    assert "has no tokenizer files: " + f"{gguf} is a GGUF whose tokenizer, a bert tokenizer (WordPieceTokenizer), " \
           "export.py does not write" in " ".join(capsys.readouterr().err.split())


def test_a_base_with_gpt2_tiktoken_alone_exports_a_tokenizer_of_gpt2s_ids(tmp_path, capsys):
    """A GPT-2 base whose tokenizer is OpenAI's ranks as tiktoken ships them (gpt2.tiktoken): the folder had none
    ("has none to copy"). Now a byte-level BPE tokenizer.json, merges derived from the ranks: AutoTokenizer gives
    tiktoken's ids on those ranks (GPT-2's encoding), those of GPT-2's own encoder.json + vocab.bpe, and lorasp reads
    the folder back to them. A damaged gpt2.tiktoken is a one-line error naming its line, nothing written."""
    base = tmp_path / "base"
    random_params(transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=50257, n_embd=16, n_layer=1, n_head=2, n_positions=32)), 0).save_pretrained(base)
    shutil.copy(path("gpt2", "gpt2.tiktoken"), base / "gpt2.tiktoken")
    save_adapter(trained(M.load_pretrained(base), ["c_attn"]), tmp_path / "adapter")
    assert run("--model", base, "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
    assert "has no tokenizer files" not in capsys.readouterr().err
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    with open(base / "gpt2.tiktoken") as f:                  # "base64-token rank" lines
        ranks = {base64.b64decode(t): int(r) for t, r in (line.split() for line in f if line.strip())}
    ref = tiktoken.Encoding("gpt2", pat_str=tokenizer.GPT2_PATTERN, mergeable_ranks=ranks,
                            special_tokens={"<|endoftext|>": 50256})
    openai = tokenizer.load_tokenizer(path("gpt2", "encoder.json").removesuffix("encoder.json"))
    back = tokenizer.load_tokenizer(tmp_path / "out")
    for text in TEXTS:
        assert hf(text).input_ids == ref.encode(text, allowed_special="all") == openai.encode(text) == back.encode(
            text), text
    assert (hf.bos_token_id, hf.eos_token_id) == (50256, 50256)
    lines = (base / "gpt2.tiktoken").read_text().splitlines(keepends=True)
    (base / "gpt2.tiktoken").write_text("".join(lines[:7]) + lines[7][:5])   # cut off: one line, naming it
    assert run("--model", base, "--adapter", tmp_path / "adapter", "--out", tmp_path / "cut") == (
        f"error: {base / 'gpt2.tiktoken'}, line 8: not a 'base64 rank' line of tiktoken's format, or a token ranked "
        "again (damaged or cut off?); fetch it again") and not os.path.exists(tmp_path / "cut")


@pytest.mark.parametrize("how", ["export.py", "--method full"])
def test_a_tokenizer_model_alone_is_saved_with_a_tokenizer_json_of_the_runs_ids(tiny, tmp_path, how):  # noqa: F811
    """A Llama whose tokenizer is a tokenizer.model alone (the demo's; Meta's layout), exported or trained with
    --method full: the folder held that tokenizer.model and a tokenizer_config.json, which transformers 5's
    LlamaTokenizer reads to other ids than sentencepiece's on " a leading space" and runs of spaces. Now a
    tokenizer.json beside it: AutoTokenizer gives lorasp's ids of the base (sentencepiece's), lorasp reads the folder
    back to them, so does the tokenizer.json transformers saves of it, and llama.cpp's convert_hf_to_gguf.py (which
    reads the tokenizer.model) makes a GGUF of them on texts without special tokens."""
    base = tokenizer.load_tokenizer(tiny[0])
    if how == "export.py":
        save_adapter(trained(M.load_pretrained(tiny[0]), ["q_proj"]), tmp_path / "adapter")
        assert run("--model", tiny[0], "--adapter", tmp_path / "adapter", "--out", tmp_path / "out") is None
        out = tmp_path / "out"
    else:
        train.main(flags(tiny, tmp_path / "run", "--max-steps", "1", "--method", "full"))
        out = tmp_path / "run" / "model"
    assert {"tokenizer.model", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(out))
    hf, back = transformers.AutoTokenizer.from_pretrained(out), tokenizer.load_tokenizer(out)
    for text in [*TEXTS, "a</s>b", " x<s>  y"]:
        assert hf(text).input_ids == base.encode(text) == back.encode(text), text
    assert [hf(t, add_special_tokens=False).input_ids for t in TEXTS if "<" not in t] == [
        base.sp.encode(t) for t in TEXTS if "<" not in t]                # (sentencepiece's own)
    hf.save_pretrained(tmp_path / "saved")                   # (transformers 5 saves no tokenizer.model: lorasp
    saved = tokenizer.load_tokenizer(tmp_path / "saved")     # reads the tokenizer.json alone; it refused it)
    assert "tokenizer.model" not in os.listdir(tmp_path / "saved")
    assert [saved.encode(t) for t in TEXTS] == [base.encode(t) for t in TEXTS]
    convert_hf_to_gguf(out, tmp_path / "out.gguf")
    again, plain = tokenizer.load_tokenizer(tmp_path / "out.gguf"), [t for t in TEXTS if "<" not in t]
    assert [again.encode(t) for t in plain] == [base.encode(t) for t in plain]  # (after a special token's text the
    # GGUF puts no "▁" where the demo's legacy tokenizer does: a GGUF has no legacy flag; so without the tokenizer.json)


@pytest.mark.parametrize("writer", ["save_tokenizer gpt-2", "hf_tokenizer gpt-2", "save_tokenizer llama-spm",
                                    "hf_tokenizer llama-spm", "llama_tokenizer_config demo"])
def test_every_writer_writes_tokenizer_config_json_once_and_transformers_reads_the_runs_ids(tmp_path, monkeypatch,
                                                                                           writer):
    """tokenizer_config.json has one writer (tokenizer.write_tokenizer_config), whatever writes the folder:
    save_tokenizer (train.py --method full's OUT/model from a .gguf), hf_tokenizer (export.py's from a .gguf or
    gpt2.tiktoken) and llama_tokenizer_config (a tokenizer.model alone). hf_tokenizer wrote it twice for a byte-level
    BPE (save_tokenizer's, then its own again with UNK), and only it said clean_up_tokenization_spaces false
    (transformers before 4.45 cleaned up by default: "a ." decoded "a."); llama_tokenizer_config's said nothing of
    legacy, so AutoTokenizer put no "▁" after a special token's text where lorasp does ("a</s>b": 362 for "b", the run's
    284). A sentencepiece folder (save_tokenizer's, llama_tokenizer_config's) held a tokenizer.model alone, which
    transformers 5's LlamaTokenizer reads to other ids where a text starts with a space or holds a run of them (" a": no
    "▁" of its own; "▁▁" before "spaces" where sentencepiece joins "▁spaces"): now a tokenizer.json beside it.
    Each folder, read by AutoTokenizer: the run's ids (and sentencepiece's), BOS, EOS, PAD, decoding."""
    written, atomic_write = [], tokenizer.atomic_write
    monkeypatch.setattr(tokenizer, "atomic_write",
                        lambda p, *a, **k: written.append(os.path.basename(p)) or atomic_write(p, *a, **k))
    how, vocab = writer.split()
    if how == "llama_tokenizer_config":                          # the demo's: a Llama's tokenizer.model alone
        data.demo_files(tmp_path, 300, 400)
        os.remove(tmp_path / "corpus.txt")
        (tmp_path / "config.json").write_text('{"model_type": "llama"}')
        ours = tokenizer.load_tokenizer(tmp_path)
        tokenizer.llama_tokenizer_config(ours, tmp_path)
    else:
        gguf = path("llama.cpp", f"ggml-vocab-{vocab}.gguf")
        ours = tokenizer.load_tokenizer(gguf)
        getattr(tokenizer, how)(ours, tmp_path, *[gguf] * (how == "hf_tokenizer"))
    assert written.count("tokenizer_config.json") == 1, written
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["clean_up_tokenization_spaces"] is False
    hf, back = transformers.AutoTokenizer.from_pretrained(tmp_path), tokenizer.load_tokenizer(tmp_path)
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (ours.bos_id, ours.eos_id, ours.pad_id)
    assert os.path.isfile(tmp_path / "tokenizer.json") and os.path.isfile(tmp_path / "tokenizer.model") != (
        vocab == "gpt-2")                                        # (sentencepiece's: both, lorasp and llama.cpp read
    sp = [s.encode(t) for t in TEXTS if "<" not in t] if (s := getattr(ours, "sp", None)) else []  # the model)
    for text in [*TEXTS, "Hello , world . It ' s n't , I 'm (a) ?"]:
        assert hf(text).input_ids == ours.encode(text) == back.encode(text), text
    if sp:                                                       # (and sentencepiece's own, where no special text)
        assert [hf(t, add_special_tokens=False).input_ids for t in TEXTS if "<" not in t] == sp
    ids = ours.encode("Hello , world . It ' s n't , I 'm (a) ?", bos=False)
    assert hf.decode(ids) == ours.decode(ids) == "Hello , world . It ' s n't , I 'm (a) ?"
