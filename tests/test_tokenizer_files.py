"""The base's tokenizer files as lorasp records and copies them: added_tokens.json (transformers' file for the tokens
added to a sentencepiece vocabulary, a pad token say) is hashed with the others (resume's check, the adapter's record),
and a --method full run's OUT/model holds every file transformers rebuilds the base's tokenizer from. The reference:
transformers' AutoTokenizer on the folders."""
import json
import os
import shutil

import pytest
import torch
import transformers
from tokenizers import ByteLevelBPETokenizer

import data
import tasks
import tokenizer
import train
from download import SMALL_FILES
from fetch_real import path
from fixtures import demo_tokenizer, flags, gpt2_folder, random_params, tiny  # noqa: F401  (tiny: a fixture)
from model import EncoderConfig, GPT2Config, LlamaConfig, build_model, generate, save_pretrained

SPECIAL = dict(special=True, normalized=False, single_word=False, lstrip=False, rstrip=False)
TEXTS = ["How many words are in owl fox?<pad><pad>", "<pad>cat dog 3 7", "a <pad> b</s>", "<s>x<|im_end|> y"]


def transformers4_folder(directory, added, decoder=True):
    """tokenizer.model + added_tokens.json + special_tokens_map.json + tokenizer_config.json, as transformers 4's
    LlamaTokenizer.save_pretrained wrote a Llama whose vocabulary gained tokens (add_special_tokens({"pad_token":
    "<pad>"})); the added tokens in tokenizer_config.json's added_tokens_decoder too (decoder: transformers 4.34 on;
    before, added_tokens.json alone said them); legacy false, so transformers 5 reads the text after an added token
    as ours does."""
    (directory / "added_tokens.json").write_text(json.dumps(added))
    (directory / "special_tokens_map.json").write_text(json.dumps(dict(bos_token="<s>", eos_token="</s>",
                                                                       unk_token="<unk>", pad_token="<pad>")))
    (directory / "tokenizer_config.json").write_text(json.dumps(dict(
        tokenizer_class="LlamaTokenizer", legacy=False, add_bos_token=True, add_eos_token=False, pad_token="<pad>",
        **({"added_tokens_decoder": {str(i): SPECIAL | dict(content=t) for t, i in added.items()}} if decoder
           else {}))))


def test_a_changed_added_tokens_json_is_a_changed_tokenizer(tmp_path):
    """Another added_tokens.json beside the same tokenizer.model is other ids for the same text (transformers says so,
    and load_tokenizer does), so tokenizer_files records it and tokenizer_changes names it: --resume refuses other
    data on other ids, eval.py warns on an adapter trained with the other file. (It was not hashed: nothing noticed.)"""
    n = demo_tokenizer(tmp_path, 300).vocab_size                 # (the pieces: 0..n-1)
    transformers4_folder(tmp_path, {"<pad>": n})
    before, config = tokenizer.tokenizer_files(tmp_path), (tmp_path / "tokenizer_config.json").read_bytes()
    ids = [transformers.AutoTokenizer.from_pretrained(tmp_path)(t).input_ids for t in TEXTS]
    assert [tokenizer.load_tokenizer(tmp_path).encode(t) for t in TEXTS] == ids and n in ids[0]
    assert {f for f, sha in before.items() if sha} == {"tokenizer.model", "added_tokens.json",
                                                       "special_tokens_map.json", "tokenizer_config.json"}
    transformers4_folder(tmp_path, {"<pad>": n, "<|im_end|>": n + 1})   # a chat marker added to the vocabulary
    now = [transformers.AutoTokenizer.from_pretrained(tmp_path)(t).input_ids for t in TEXTS]
    assert [tokenizer.load_tokenizer(tmp_path).encode(t) for t in TEXTS] == now != ids
    (tmp_path / "tokenizer_config.json").write_bytes(config)     # the other files as before: added_tokens.json alone
    assert [tokenizer.load_tokenizer(tmp_path).encode(t) for t in TEXTS] == now  # (ours reads it: transformers 4 did)
    assert tokenizer.tokenizer_changes(before, tokenizer.tokenizer_files(tmp_path)) == "added_tokens.json differs"
    os.remove(tmp_path / "added_tokens.json")
    assert "added_tokens.json is missing" in tokenizer.tokenizer_changes(before, tokenizer.tokenizer_files(tmp_path))


def hf_folder(directory):
    """A base whose tokenizer transformers 5 saved (tokenizer.json, tokenizer_config.json, chat_template.jinja) after
    a pad token was added, its tokenizer.model kept beside them as the Hub's repositories do."""
    json.dump(dict(tokenizer_class="LlamaTokenizer", legacy=False, add_bos_token=True),
              open(directory / "tokenizer_config.json", "w"))
    hf = transformers.AutoTokenizer.from_pretrained(directory)
    hf.add_special_tokens({"pad_token": "<pad>"})
    hf.chat_template = "{% for m in messages %}{{ m['content'] }}<pad>{% endfor %}"
    hf.save_pretrained(directory)


@pytest.mark.parametrize("layout", ["transformers4", "transformers5"])
def test_a_method_full_runs_model_has_the_bases_tokenizer(tiny, tmp_path, layout):  # noqa: F811
    """train.py --method full's OUT/model is a checkpoint of its own: transformers' AutoTokenizer on it gives the
    base's ids on texts with its special and added tokens, its pad token and its chat template. (added_tokens.json
    and chat_template.jinja were not copied: <pad> was cut into pieces, and the template was lost.)"""
    base = tmp_path / "base"
    base.mkdir()
    shutil.copy(os.path.join(tiny[0], "tokenizer.model"), base)
    n = tokenizer.load_tokenizer(base).vocab_size
    save_pretrained(build_model(LlamaConfig(vocab_size=n + 2, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64)),
                    base)
    if layout == "transformers4":
        transformers4_folder(base, {"<pad>": n, "<|im_end|>": n + 1}, decoder=False)  # (4.33's: added_tokens.json
        # alone names them, for transformers 5 too)
        (base / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}<|im_end|>{% endfor %}")
    else:
        hf_folder(base)
    train.main(flags((str(base), tiny[1]), tmp_path / "out", "--max-steps", "1", "--method", "full"))
    want, got = (transformers.AutoTokenizer.from_pretrained(d) for d in (base, tmp_path / "out" / "model"))
    assert [got(t).input_ids for t in TEXTS] == [want(t).input_ids for t in TEXTS]
    assert len(got) == len(want) > n and got.pad_token_id == want.pad_token_id == n
    assert got.chat_template == want.chat_template is not None
    ours = tokenizer.load_tokenizer(tmp_path / "out" / "model")
    assert [ours.encode(t) for t in TEXTS] == [tokenizer.load_tokenizer(base).encode(t) for t in TEXTS]
    assert tokenizer.tokenizer_files(tmp_path / "out" / "model") == tokenizer.tokenizer_files(base)


@pytest.mark.parametrize("layout", ["transformers4", "transformers4, config.json pad_token_id 0", "transformers5",
                                    "gpt2", "pad <unk>", "pad </s>"])
def test_the_pad_id_is_the_token_tokenizer_config_json_names(layout, tmp_path):
    """tokenizer_config.json's pad_token is transformers' pad_token_id: an added <pad> (a sentencepiece vocabulary's,
    GPT-2's), or a token of the model's own named as pad (<unk>, </s>: common in Llama fine-tunes). Ours had none
    (a sentencepiece model trained without a pad piece, GPT-2's vocabulary without <pad>)."""
    if layout == "gpt2":
        gpt2_folder(tmp_path)
        n = 300
    else:
        n = demo_tokenizer(tmp_path, 300).vocab_size
        if layout.startswith("transformers4"):
            transformers4_folder(tmp_path, {"<pad>": n})
            if "config.json" in layout:                           # (a Llama fine-tune's: <unk>, a special piece:
                (tmp_path / "config.json").write_text('{"pad_token_id": 0}')  # the tokenizer's own wins, as before)
        elif layout == "transformers5":
            hf_folder(tmp_path)
        else:
            json.dump(dict(tokenizer_class="LlamaTokenizer", legacy=False, pad_token=layout[4:]),
                      open(tmp_path / "tokenizer_config.json", "w"))
    want = transformers.AutoTokenizer.from_pretrained(tmp_path).pad_token_id
    assert tokenizer.load_tokenizer(tmp_path).pad_id == want == {"pad <unk>": 0, "pad </s>": 2}.get(layout, n)


def test_a_pad_token_past_the_embedding_is_left_out_with_the_other_added_tokens(tmp_path, capsys):
    """An early Llama-2 upload: <pad> added as 32000 beside a 32000-row embedding. check_vocab leaves the added token
    out (no text holds it), and now that the pad id is read from tokenizer_config.json, the pad id with it; it was
    refused as "the tokenizer's pad_id 456 is outside the model's embedding"."""
    n = demo_tokenizer(tmp_path, 300).vocab_size
    transformers4_folder(tmp_path, {"<pad>": n})
    tok = tokenizer.load_tokenizer(tmp_path)
    assert tok.pad_id == n
    tokenizer.check_vocab(tok, n, "m")
    assert tok.pad_id is None and tok.vocab_size == n and n not in tok.encode("a<pad>")
    assert f"m: added tokens ['<pad>'] have ids past the embedding's {n} rows: left out, the pad id {n} among them" \
        in capsys.readouterr().out


def test_where_lorasp_pads_the_pad_ids_value_changes_nothing():
    """The pad id now read from tokenizer_config.json (an added <pad> where there was none, so 0) goes where the
    padding is masked or unscored: data.collate's right padding (a causal LM's loss, a GPT-2 or RoBERTa classifier's
    logits, a span head's logits at real tokens) and eval.generate_answers' left padding behind an attention mask.
    The reference: the same batches padded with 0 (what lorasp used before), bit for bit."""
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(3, 60, (n,), generator=g).tolist() for n in (9, 4, 6)]
    lm = data.collate([dict(input_ids=s, labels=[data.IGNORE] * 2 + s[2:]) for s in seqs], 0)
    rows = [dict(input_ids=s, labels=i % 2, token_type_ids=[0] * len(s)) for i, s in enumerate(seqs)]
    T = max(map(len, seqs))
    mask = torch.tensor([[0] * (T - len(s)) + [1] * len(s) for s in seqs])
    llama = random_params(build_model(LlamaConfig(vocab_size=64, n_layer=2, n_embd=32, n_head=4, n_kv_head=2,
                                                  n_ffn=64)), 0)
    gpt2 = random_params(build_model(GPT2Config(vocab_size=64, n_embd=32, n_head=4, n_layer=2, n_positions=32)
                                     ).add_head(2), 0)
    roberta = random_params(build_model(EncoderConfig("roberta", vocab_size=64, n_embd=32, n_head=4, n_ffn=64,
                                                      n_type=1, pad_id=1)).add_head(2), 0)
    span = random_params(build_model(roberta.config).add_qa_head(), 0)
    with torch.no_grad():
        for pad in (61, 1):
            batch = data.collate([dict(input_ids=s, labels=[data.IGNORE] * 2 + s[2:]) for s in seqs], pad)
            assert torch.equal(batch["input_ids"] == pad, lm["attention_mask"] == 0)   # (61, 1: in no text)
            assert torch.equal(tasks.causal_lm_loss(llama, batch)[0], tasks.causal_lm_loss(llama, lm)[0])
            a, b = data.collate(rows, 0), data.collate(rows, pad)
            for m in (gpt2, roberta):
                assert torch.equal(m.classify(b["input_ids"], b["attention_mask"], b["token_type_ids"]),
                                   m.classify(a["input_ids"], a["attention_mask"], a["token_type_ids"]))
            real = a["attention_mask"].bool()
            assert all(torch.equal(x[real], y[real]) for x, y in zip(span.span_logits(b["input_ids"],
                       b["attention_mask"]), span.span_logits(a["input_ids"], a["attention_mask"])))
            for m in (llama, gpt2):
                left = [torch.tensor([[p] * (T - len(s)) + s for s in seqs]) for p in (0, pad)]
                assert torch.equal(*(generate(m, x, 6, attention_mask=mask)[:, T:] for x in left))


def test_a_record_made_before_added_tokens_json_was_hashed_does_not_call_it_new(tmp_path):
    """Records saved by session 21's code list the files of download.SMALL_FILES[2:] they found, and no
    added_tokens.json: a base that had one all along read as "added_tokens.json is new" (eval.py warned, --resume
    --allow-data-change refused). Records now name every file looked at (null: absent), so an old record's unlisted
    added_tokens.json is not checked, and a new record's refusal stays: absent then, present now, is new."""
    n = demo_tokenizer(tmp_path, 300).vocab_size
    transformers4_folder(tmp_path, {"<pad>": n})
    now = tokenizer.tokenizer_files(tmp_path)
    old = {f: sha for f, sha in now.items() if sha is not None and f in SMALL_FILES[2:]}  # (21's)
    assert "added_tokens.json" not in old and set(old) == {"tokenizer.model", "tokenizer_config.json",
                                                           "special_tokens_map.json"}
    assert tokenizer.tokenizer_changes(old, now) == ""
    assert tokenizer.tokenizer_unchecked(old, now) == ["added_tokens.json"]
    assert tokenizer.tokenizer_changes(old | {"tokenizer.model": "0" * 64}, now) == "tokenizer.model differs"
    (tmp_path / "tokenizer.json").write_text("{}")                # a file the old record did look at: new
    assert tokenizer.tokenizer_changes(old, tokenizer.tokenizer_files(tmp_path)) == "tokenizer.json is new"
    os.remove(tmp_path / "tokenizer.json")
    os.rename(tmp_path / "added_tokens.json", tmp_path / "kept")
    before = tokenizer.tokenizer_files(tmp_path)                  # a record of now: added_tokens.json null (absent)
    assert before["added_tokens.json"] is None and tokenizer.tokenizer_unchecked(before, now) == []
    assert tokenizer.tokenizer_changes(before, now) == "added_tokens.json is new"


def test_gpt2s_own_file_names_are_hashed_and_a_method_full_model_keeps_them(tiny, tmp_path):  # noqa: F811
    """GPT-2's original encoder.json + vocab.bpe, which load_tokenizer reads as vocab.json + merges.txt, were neither
    hashed (another vocab.bpe, other ids for the same text: no warning, --resume --allow-data-change went on) nor
    copied into a --method full run's model/ (load_tokenizer on it: "no tokenizer file"). A record made before they
    were hashed leaves them not checked."""
    base = tmp_path / "base"
    base.mkdir()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(data.demo_corpus(50), vocab_size=300, min_frequency=2, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(base))
    os.rename(base / "vocab.json", base / "encoder.json")
    os.rename(base / "merges.txt", base / "vocab.bpe")
    tok = tokenizer.load_tokenizer(base)
    save_pretrained(build_model(GPT2Config(vocab_size=tok.vocab_size, n_embd=32, n_head=4, n_layer=1,
                                           n_positions=256)), base)
    record = tokenizer.tokenizer_files(base)
    assert record["encoder.json"] and record["vocab.bpe"]
    train.main(flags((str(base), tiny[1]), tmp_path / "out", "--max-steps", "1", "--method", "full"))
    text = "How many words are in owl fox?"
    assert tokenizer.load_tokenizer(tmp_path / "out" / "model").encode(text) == tok.encode(text)
    vocab = json.loads((base / "encoder.json").read_text())
    vocab["a"], vocab["e"] = vocab["e"], vocab["a"]                   # two ids swapped: other ids for the same text
    (base / "encoder.json").write_text(json.dumps(vocab))
    assert tokenizer.load_tokenizer(base).encode("a e") != tok.encode("a e")
    assert tokenizer.tokenizer_changes(record, tokenizer.tokenizer_files(base)) == "encoder.json differs"
    old = {f: sha for f, sha in record.items() if sha is not None and f in tokenizer.HASHED_BEFORE}  # (none of them)
    assert tokenizer.tokenizer_changes(old, record) == ""
    assert tokenizer.tokenizer_unchecked(old, record) == ["encoder.json", "vocab.bpe"]


@pytest.mark.parametrize("config", [dict(add_bos_token=False), dict(eos_token="<unk>", pad_token="</s>"),
                                    dict(add_eos_token=True, bos_token="</s>")])
def test_a_tokenizer_config_json_beside_a_gguf_is_not_read_as_transformers_reads_none(tmp_path, config):
    """A folder holding a .gguf and a tokenizer_config.json: load_tokenizer reads the GGUF's tokenizer, its own
    BOS/EOS/PAD and whether texts get them, and not the file beside it; transformers'
    AutoTokenizer.from_pretrained(folder, gguf_file=...) does the same (measured: its BOS, EOS, PAD and ids are the
    GGUF's whatever the file says), so the two agree and the file is left unread."""
    shutil.copy(path("llama.cpp", "ggml-vocab-llama-spm.gguf"), tmp_path / "m.gguf")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    ours = tokenizer.load_tokenizer(tmp_path)
    for text in ("Hi", "a</s>b", "How many words?"):
        assert ours.encode(text) == hf(text).input_ids == tokenizer.load_tokenizer(tmp_path / "m.gguf").encode(text)
    assert (ours.bos_id, ours.eos_id, ours.pad_id, ours.add_eos) == (hf.bos_token_id, hf.eos_token_id,
                                                                     hf.pad_token_id, False) == (1, 2, None, False)
