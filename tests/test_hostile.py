"""Files from a hostile or careless publisher (red-team pass, session 34): a checkpoint, tokenizer or config that
parses but lies. Each must be an error naming the file and what in it is wrong, never a RecursionError naming
nothing, a silent choice between two values, or a read of a file outside the folder the user named. The cases a
careful user can meet too are rows of test_bad_input.py."""
import json
import math
import os
import re
import struct

import pytest
import torch

import train
from checkpoint import read_safetensors_header, save_safetensors
from fixtures import flags, tiny  # noqa: F401  (tiny: a fixture)
from ggufread import read_gguf
from model import LlamaConfig, build_model, load_pretrained, load_tokenizer, save_pretrained


def small_model(directory, shard_size=None):
    """A 2-layer Llama (vocab 64) in the HF layout."""
    torch.manual_seed(0)
    save_pretrained(build_model(LlamaConfig(vocab_size=64, n_layer=2, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64)),
                    directory, shard_size=shard_size)
    return directory


DEEP = "[" * 100_000 + "]" * 100_000  # 200 kB of brackets: past Python's recursion limit (json's C reader recurses)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors.index.json"])
def test_a_config_nested_past_the_recursion_limit_is_named(tmp_path, name):  # was a RecursionError naming nothing
    small_model(tmp_path, shard_size=20_000 if name.endswith("index.json") else None)
    (tmp_path / name).write_text(DEEP)
    with pytest.raises(ValueError, match=str(tmp_path / name) + ": "):
        load_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json"])
def test_a_tokenizer_file_nested_past_the_recursion_limit_is_named(tmp_path, name):
    if name == "tokenizer_config.json":                        # (read beside a WordPiece vocab.txt)
        (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\na\n")
    (tmp_path / name).write_text(DEEP)
    with pytest.raises(ValueError, match=str(tmp_path / name) + ": JSON nested deeper than"):
        load_tokenizer(tmp_path)


def test_a_safetensors_header_nested_past_the_recursion_limit_is_named(tmp_path):
    head = DEEP.encode()
    (tmp_path / "x.safetensors").write_bytes(struct.pack("<Q", len(head)) + head)
    with pytest.raises(ValueError, match=str(tmp_path / "x.safetensors") + ": corrupt safetensors header"):
        read_safetensors_header(str(tmp_path / "x.safetensors"))


def test_a_gguf_array_of_arrays_nested_100000_deep_is_named(tmp_path):  # 1.2 MB: was a RecursionError
    def string(s):
        return struct.pack("<Q", len(s)) + s.encode()
    raw = (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + string("general.x") + struct.pack("<I", 9)  # one array entry
           + struct.pack("<IQ", 9, 1) * 100_000 + struct.pack("<IQ", 4, 0))  # an array of 1 array of 1 ... of none
    (tmp_path / "x.gguf").write_bytes(raw)
    with pytest.raises(ValueError, match=str(tmp_path / "x.gguf") + ": metadata 'general.x' holds arrays nested more "
                       "than 8 deep"):
        read_gguf(str(tmp_path / "x.gguf"))


def test_a_safetensors_header_naming_a_tensor_twice_is_refused(tmp_path):
    """{"a": bytes 0-4, "a": bytes 4-8, "b": bytes 0-4}: json keeps the second "a", whose bytes and b's tile the data,
    so the file loaded with a silently reading the bytes the file also gave b (a lie no reader can settle)."""
    entry = '{"dtype": "F32", "shape": [1], "data_offsets": [%d, %d]}'
    head = ('{"a": %s, "a": %s, "b": %s}' % (entry % (0, 4), entry % (4, 8), entry % (0, 4))).encode()
    head += b" " * (-len(head) % 8)
    (tmp_path / "x.safetensors").write_bytes(struct.pack("<Q", len(head)) + head + struct.pack("<2f", 1.0, 2.0))
    with pytest.raises(ValueError, match=str(tmp_path / "x.safetensors") + ": safetensors header: key 'a' is given "
                       "twice in an object"):
        read_safetensors_header(str(tmp_path / "x.safetensors"))


def test_a_safetensors_header_naming_a_tensor_twice_alike_loads(tmp_path):  # the same entry twice: one meaning
    save_safetensors({"a": torch.tensor([1.0]), "b": torch.tensor([2.0])}, tmp_path / "x.safetensors")
    raw = (tmp_path / "x.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    head = ("{" + ", ".join(f'"{k}": {json.dumps(v)}' for k, v in [("a", header["a"]), *header.items()]) + "}").encode()
    head += b" " * (-len(head) % 8)
    (tmp_path / "y.safetensors").write_bytes(struct.pack("<Q", len(head)) + head + raw[8 + n:])
    assert sorted(read_safetensors_header(str(tmp_path / "y.safetensors"))[0]) == ["a", "b"]


def test_a_tokenizer_json_vocabulary_giving_a_token_two_ids_is_refused(tmp_path):
    """"a": 0, "b": 1, "a": 2: json kept id 2 for a, and id 0 was nobody's (a vocabulary of 3 without a word)."""
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "a": 2}, "merges": '
                                             '[]}, "pre_tokenizer": {"type": "ByteLevel"}, "added_tokens": []}')
    with pytest.raises(ValueError, match=str(tmp_path / "tokenizer.json") + ": key 'a' is given twice in an object, "
                       "as 0 and then 2"):
        load_tokenizer(tmp_path)


def test_a_merge_making_a_token_the_vocabulary_lacks_names_tokenizer_json(tmp_path):  # was: named no file
    (tmp_path / "tokenizer.json").write_text(json.dumps({
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}, "pre_tokenizer": {"type": "ByteLevel"},
        "added_tokens": []}))
    with pytest.raises(ValueError, match=str(tmp_path / "tokenizer.json") + r": tokens \['ab'\] are produced by "
                       "merges but absent from the vocabulary"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("name", ["chat_template.jinja", "special_tokens_map.json", "vocab.txt"])
def test_a_tokenizer_file_symlinked_out_of_the_folder_is_refused(tmp_path, name):
    """A chat_template.jinja (or any tokenizer file) linking to a file elsewhere (~/.ssh/id_rsa): never read, and
    export.py and every save copy the folder's tokenizer files into the model they write, which a user may upload."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "vocab.txt").write_text("[PAD]\n[UNK]\na\n")
    (tmp_path / "secret").write_text("[PAD]\n[UNK]\nthe secret\n")
    (tmp_path / "m" / name).unlink(missing_ok=True)
    (tmp_path / "m" / name).symlink_to(tmp_path / "secret")
    with pytest.raises(ValueError, match=f"{tmp_path / 'm' / name} is a symlink to {tmp_path / 'secret'}, outside the "
                       "model folder: refused"):
        load_tokenizer(tmp_path / "m")


@pytest.mark.parametrize("named", ["/etc/passwd", "../elsewhere/tokenizer.json"])
def test_a_tokenizer_file_a_config_names_elsewhere_is_never_read(tmp_path, named):
    """tokenizer_config.json's tokenizer_file (transformers' slow-to-fast hint) naming a file outside the folder: the
    tokenizer is read from the folder's own files alone."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "tokenizer.json").write_text("not read")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "vocab.txt").write_text("[PAD]\n[UNK]\na\n")
    (tmp_path / "m" / "tokenizer_config.json").write_text(json.dumps({"tokenizer_file": named}))
    tok = load_tokenizer(tmp_path / "m")
    assert tok.read_from == (str(tmp_path / "m" / "tokenizer_config.json"), str(tmp_path / "m" / "vocab.txt"))


def test_a_gguf_in_a_folder_symlinked_out_of_it_is_refused(tmp_path):  # as a safetensors shard is
    (tmp_path / "m").mkdir()
    (tmp_path / "elsewhere.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    (tmp_path / "m" / "model.gguf").symlink_to(tmp_path / "elsewhere.gguf")
    with pytest.raises(ValueError, match=f"{tmp_path / 'm' / 'model.gguf'} is a symlink to"):
        load_pretrained(tmp_path / "m")


@pytest.mark.parametrize("key, value, expected", [
    ("attention.head_count_kv", True, "= True; a Llama needs a positive integer"),  # (were named by config.json's
    ("feed_forward_length", 96.0, "= 96.0; a Llama needs a positive integer"),     # keys, which a GGUF lacks:
    ("attention.layer_norm_rms_epsilon", math.nan, "= nan; a Llama needs a finite number > 0"),  # rms_norm_eps)
    ("attention.head_count_kv", 3, "llama.attention.head_count = 4 is not a multiple of llama.attention.head_count_kv"),
    ("rope.scaling.factor", math.nan, "= nan; a Llama needs a finite number > 0")],  # (SILENT: RoPE of NaN loaded)
    ids=["head_count_kv true", "feed_forward_length 96.0", "rms epsilon NaN", "head_count_kv 3", "linear factor NaN"])
def test_gguf_metadata_of_the_wrong_type_is_named_as_the_file_names_it(tmp_path, key, value, expected):
    import transformers
    from test_gguf import llama_cpp_layout, llama_meta, write
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    meta = llama_meta(c) | {f"llama.{key}": value} | ({"llama.rope.scaling.type": "linear"} if "scaling" in key else {})
    write(tmp_path / "m.gguf", llama_cpp_layout(transformers.LlamaForCausalLM(c).state_dict(), c), meta)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'm.gguf'}: GGUF metadata " + (
            "" if expected.startswith("llama.") else f"llama.{key} ") + expected)):
        load_pretrained(tmp_path / "m.gguf")


def test_atomic_write_never_writes_through_a_symlink_named_as_its_temporary(tmp_path):
    """A folder lorasp writes into but did not make (a run folder copied from elsewhere, to --resume) holding a
    symlink named as atomic_write's temporary (PATH.tmp<pid>) to a file elsewhere: the write went through the link into
    that file, and the rename then left PATH itself a link to it."""
    from checkpoint import atomic_write
    (tmp_path / "victim").write_text("kept")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / f"state.json.tmp{os.getpid()}").symlink_to(tmp_path / "victim")
    with atomic_write(tmp_path / "run" / "state.json", "w") as f:
        f.write("{}")
    assert (tmp_path / "victim").read_text() == "kept"
    assert not (tmp_path / "run" / "state.json").is_symlink() and (tmp_path / "run" / "state.json").read_text() == "{}"


def test_python_checkpoint_py_lists_names_without_their_control_characters(tmp_path):
    """A tensor name or metadata key holding an escape sequence ("a\\x1b[2Jb" clears the screen; OSC 0 sets the
    terminal's title) went to the terminal as written: now as repr writes it, as the errors name them."""
    import subprocess
    import sys
    save_safetensors({"a\x1b[2Jb": torch.zeros(2)}, tmp_path / "esc.safetensors")

    def string(b):
        return struct.pack("<Q", len(b)) + b
    raw = (b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + string(b"general.name\x1b]0;title\x07") + struct.pack("<I", 8)
           + string(b"x") + string(b"t\xff\x1b[31m") + struct.pack("<IQIQ", 1, 8, 0, 0))  # F32 (8,) at 0
    (tmp_path / "esc.gguf").write_bytes(raw + b"\0" * (-len(raw) % 32) + b"\0" * 32)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name, shown in (("esc.safetensors", r"a\x1b[2Jb"), ("esc.gguf", r"t\udcff\x1b[31m")):
        out = subprocess.run([sys.executable, os.path.join(root, "checkpoint.py"), str(tmp_path / name)],
                             capture_output=True, check=True).stdout
        assert b"\x1b" not in out and b"\x07" not in out and shown.encode() in out, out


def test_an_added_token_of_no_text_is_never_matched(tmp_path):
    """A tokenizer.json added token whose content is "" (the tokenizers library skips such a token): tiktoken, told to
    match "" whole, never returned from encode (a hang on 1 kB); added_tokens.json's "" beside a sentencepiece model
    cut every text at every character ("hello" 9 ids, not 5). Both now encode as without it."""
    from tokenizer import bytes_to_unicode
    vocab = {c: i for i, c in enumerate(bytes_to_unicode()[b] for b in range(256))}
    for name, added in (("plain", []), ("empty", [{"id": 300, "content": "", "special": True}])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "tokenizer.json").write_text(json.dumps({
            "model": {"type": "BPE", "vocab": vocab, "merges": []}, "pre_tokenizer": {"type": "ByteLevel"},
            "added_tokens": added}))
    text = "hello world"
    assert load_tokenizer(tmp_path / "empty").encode(text) == load_tokenizer(tmp_path / "plain").encode(text)

    from fixtures import demo_tokenizer
    (tmp_path / "sp").mkdir()
    plain = demo_tokenizer(tmp_path / "sp", 50)
    (tmp_path / "sp" / "added_tokens.json").write_text(json.dumps({"": plain.vocab_size}))
    assert load_tokenizer(tmp_path / "sp").encode(text) == plain.encode(text)


def test_a_run_never_writes_its_log_through_a_symlink_in_out(tiny, tmp_path):
    """OUT/metrics.jsonl a symlink to a file elsewhere (a folder copied from somewhere, or planted): the run's log was
    written through it (open(path, "w") follows links), overwriting that file. Now the link is replaced by the log."""
    victim, out = tmp_path / "victim.txt", tmp_path / "out"
    victim.write_text("keep me\n")
    out.mkdir()
    (out / "metrics.jsonl").symlink_to(victim)
    train.train(train.parse_args(flags(tiny, out, "--max-steps", "2")))
    assert victim.read_text() == "keep me\n" and not (out / "metrics.jsonl").is_symlink()
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 2


def test_an_adapter_whose_lorasp_metadata_is_nested_past_the_recursion_limit_is_named(tmp_path):
    """The adapter's extras file's `lorasp` metadata, 200 kB of brackets: load_adapter raised a bare RecursionError
    (its json.loads caught ValueError and the like only); now a ValueError naming the file."""
    import lorasp
    from adapter import EXTRAS_FILE
    from checkpoint import load_safetensors
    model = lorasp.apply_lorasp(build_model(LlamaConfig(vocab_size=64, n_layer=1, n_embd=32, n_head=4, n_ffn=64)),
                                ["q_proj"], r=2, alpha=4)
    lorasp.save_adapter(model, tmp_path / "a")
    extras = tmp_path / "a" / EXTRAS_FILE
    save_safetensors(load_safetensors(extras), extras, metadata={"lorasp": DEEP})
    fresh = build_model(LlamaConfig(vocab_size=64, n_layer=1, n_embd=32, n_head=4, n_ffn=64))
    with pytest.raises(ValueError, match=rf"{re.escape(str(extras))}: its 'lorasp' metadata is missing or malformed"):
        lorasp.load_adapter(fresh, tmp_path / "a")


@pytest.mark.parametrize("layout", ["hf", "meta"])
def test_load_pretrained_never_reads_a_config_symlinked_out_of_the_folder(tmp_path, layout):
    """config.json / params.json a symlink to a file elsewhere: load_tokenizer refused it (so train.py did), but
    load_pretrained, called on its own, read it; now refused as a symlinked shard is (the Hub cache's links load)."""
    folder = small_model(tmp_path / "m")
    name = "config.json"
    if layout == "meta":
        torch.save({"w": torch.zeros(1)}, folder / "consolidated.00.pth")
        (folder / "config.json").unlink()
        name = "params.json"
        (tmp_path / "params.json").write_text(json.dumps(dict(dim=32, n_layers=2, n_heads=4, vocab_size=64,
                                                              multiple_of=32, norm_eps=1e-5)))
    else:
        os.replace(folder / name, tmp_path / name)
    (folder / name).symlink_to(tmp_path / name)
    with pytest.raises(ValueError, match=rf"{name} is a symlink to .*outside the model folder: refused"):
        load_pretrained(folder)
