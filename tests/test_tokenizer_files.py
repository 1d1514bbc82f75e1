"""The base's tokenizer files as lorasp records and copies them: added_tokens.json (transformers' file for the tokens
added to a sentencepiece vocabulary, a pad token say) is hashed with the others (resume's check, the adapter's record),
and a --method full run's OUT/model holds every file transformers rebuilds the base's tokenizer from. The reference:
transformers' AutoTokenizer on the folders."""
import json
import os
import shutil

import pytest
import transformers

import data
import train
from fixtures import demo_tokenizer, flags, tiny  # noqa: F401  (tiny: a fixture)
from model import LlamaConfig, build_model, save_pretrained

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
    before, config = data.tokenizer_files(tmp_path), (tmp_path / "tokenizer_config.json").read_bytes()
    ids = [transformers.AutoTokenizer.from_pretrained(tmp_path)(t).input_ids for t in TEXTS]
    assert [data.load_tokenizer(tmp_path).encode(t) for t in TEXTS] == ids and n in ids[0]
    assert set(before) == {"tokenizer.model", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json"}
    transformers4_folder(tmp_path, {"<pad>": n, "<|im_end|>": n + 1})   # a chat marker added to the vocabulary
    now = [transformers.AutoTokenizer.from_pretrained(tmp_path)(t).input_ids for t in TEXTS]
    assert [data.load_tokenizer(tmp_path).encode(t) for t in TEXTS] == now != ids
    (tmp_path / "tokenizer_config.json").write_bytes(config)     # the other files as before: added_tokens.json alone
    assert [data.load_tokenizer(tmp_path).encode(t) for t in TEXTS] == now  # (ours reads it, as transformers 4 did)
    assert data.tokenizer_changes(before, data.tokenizer_files(tmp_path)) == "added_tokens.json differs"
    os.remove(tmp_path / "added_tokens.json")
    assert "added_tokens.json is missing" in data.tokenizer_changes(before, data.tokenizer_files(tmp_path))


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
    n = data.load_tokenizer(base).vocab_size
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
    ours = data.load_tokenizer(tmp_path / "out" / "model")
    assert [ours.encode(t) for t in TEXTS] == [data.load_tokenizer(base).encode(t) for t in TEXTS]
    assert data.tokenizer_files(tmp_path / "out" / "model") == data.tokenizer_files(base)
