"""`python tokenizer.py PATH [TEXT ...]`, the file's demo, on real tokenizers (tests/fetch_real.py): the ids it prints
for each text are load_tokenizer's and its reference's (SmolLM2's GGUF: HF `tokenizers` on its vocabulary; the Hub's
Llama 3 tokenizer.json: transformers' AutoTokenizer; Mistral 7B's tokenizer.model: sentencepiece, pieces too; T5's
tokenizer.json: transformers' T5Tokenizer, pieces too), and the files it names are those load_tokenizer read; a
PATH load_tokenizer refuses is its one-line error and exit status 2 (tests/test_bad_input.py: more bad PATHs)."""
import ast
import os
import re
import shutil
import subprocess
import sys

import pytest
import sentencepiece
import transformers
from gguf import GGUFReader

from fetch_real import path
from test_real_tokenizers import smollm2_reference
from tokenizer import EXAMPLE, load_tokenizer, token_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ["Héllo  wörld: 42 ½ 日本語 🙂", "a\tb\n\n  c <|im_end|>", " lead"]


def demo(*argv):
    return subprocess.run([sys.executable, "tokenizer.py", *map(str, argv)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def printed(stdout, what):
    """The lists (ids) or the reprs (pieces) the demo printed after `  ids` / `  pieces`, one per text."""
    lines = [line[len(f"  {what} "):] for line in stdout.splitlines() if line.startswith(f"  {what} ")]
    return [ast.literal_eval(line) if what == "ids" else [ast.literal_eval(p) for p in re.findall(r"'[^'\\]*'", line)]
            for line in lines]


def test_smollm2_gguf_ids_are_load_tokenizers_and_tokenizers():
    gguf = path("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    run, ours, ref = demo(gguf, *TEXTS), load_tokenizer(gguf), smollm2_reference(GGUFReader(gguf).fields)
    assert run.returncode == 0 and run.stdout.startswith(f"BPETokenizer from {gguf}: 49,152 ids"), run.stderr
    assert "BOS 1 '<|im_start|>', EOS 2 '<|im_end|>', PAD 2 '<|im_end|>'" in run.stdout
    assert printed(run.stdout, "ids") == [ours.encode(t) for t in TEXTS] == [ref.encode(t).ids for t in TEXTS]
    assert 2 in printed(run.stdout, "ids")[1] and run.stdout.count(": round-trips") == 3   # <|im_end|> whole


def test_llama3_tokenizer_json_ids_are_load_tokenizers_and_transformers():
    folder = os.path.dirname(path("llama3", "tokenizer.json"))
    run, ours, hf = demo(folder, *TEXTS), load_tokenizer(folder), transformers.AutoTokenizer.from_pretrained(folder)
    assert run.returncode == 0 and run.stdout.startswith(f"BPETokenizer from {folder} (tokenizer.json, "), run.stderr
    assert printed(run.stdout, "ids") == [ours.encode(t) for t in TEXTS] == [hf(t).input_ids for t in TEXTS]
    assert all(ids[0] == 128000 for ids in printed(run.stdout, "ids"))   # <|begin_of_text|> first, as transformers


def test_mistral_tokenizer_model_default_text_ids_and_pieces_are_sentencepieces():
    """No TEXT: the example sentence (a digit, a run of spaces, a non-ASCII character)."""
    folder = os.path.dirname(path("mistral", "v1", "tokenizer.model"))
    run, sp = demo(folder), sentencepiece.SentencePieceProcessor(model_file=path("mistral", "v1", "tokenizer.model"))
    ids = [1, *sp.encode(EXAMPLE)]                             # <s> first, as the tests of this file say
    assert run.returncode == 0 and f"{EXAMPLE!r}: {len(ids)} ids" in run.stdout, run.stderr
    assert printed(run.stdout, "ids") == [ids] == [load_tokenizer(folder).encode(EXAMPLE)]
    assert printed(run.stdout, "pieces") == [[sp.id_to_piece(i) for i in ids]]
    assert f"decoded {EXAMPLE!r}: round-trips" in run.stdout and "add_bos True, add_eos False" in run.stdout


def test_t5_sentinels_pieces_and_eos_are_transformers_t5_tokenizers(tmp_path):
    """T5's real tokenizer.json in a T5 folder, as transformers' T5Tokenizer reads it: the ids, and each id's text by
    token_text (a sentinel's was a KeyError: 32099) and in the demo's pieces, are its convert_ids_to_tokens; add_eos is
    True (was False), as encode ends every text with EOS, and no note says T5's EOS is left off a prompt (it is not)."""
    shutil.copy(path("t5", "tokenizer.json"), tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    ours, hf, text = load_tokenizer(tmp_path), transformers.AutoTokenizer.from_pretrained(tmp_path), \
        "a <extra_id_0> b <extra_id_99> </s>"
    ids = ours.encode(text)
    assert ids == hf(text).input_ids and {32099, 32000} < set(ids) and ids[-1] == ours.eos_id == 1
    assert [token_text(ours, i) for i in ids] == hf.convert_ids_to_tokens(ids)
    run = demo(tmp_path, text)
    assert run.returncode == 0 and printed(run.stdout, "ids") == [ids], run.stderr
    assert printed(run.stdout, "pieces") == [hf.convert_ids_to_tokens(ids)]
    assert ours.add_eos and "ids; add_bos False, add_eos True\n" in run.stdout, run.stdout
    assert "every text ends with EOS" not in run.stdout


def test_the_demo_names_the_files_load_tokenizer_read():
    """MiniLM's folder holds tokenizer.json and special_tokens_map.json beside the vocab.txt its WordPiece is read from:
    the demo named them all (its own twin of load_tokenizer's choice); now the files load_tokenizer read, in order."""
    folder = os.path.dirname(path("minilm", "vocab.txt"))
    run, tok = demo(folder, "a b"), load_tokenizer(folder)
    read = ("tokenizer_config.json", "vocab.txt", "config.json")
    assert tok.read_from == tuple(os.path.join(folder, f) for f in read)
    assert run.returncode == 0 and run.stdout.startswith(f"WordPieceTokenizer from {folder} ({', '.join(read)}): "), \
        run.stdout


@pytest.mark.parametrize("kind", ["missing", "empty folder"])
def test_a_bad_path_is_load_tokenizers_error_and_exit_2(tmp_path, kind):
    """A path that is not there says so (it said "no tokenizer file ...; copy the base model's tokenizer files into
    it", advice for a folder that does not exist); an empty folder names the files looked for."""
    path = tmp_path / "none"
    if kind == "empty folder":
        path.mkdir()
    try:
        load_tokenizer(path)
    except Exception as e:                                     # (whatever it raises: the demo says the same)
        error = str(e)
    run = demo(path)
    assert run.returncode == 2 and run.stderr == f"tokenizer.py: error: {error}\n" and not run.stdout, run.stderr
    assert error == f"{path}: no such file or folder" if kind == "missing" else \
        error.startswith(f"{path}: no tokenizer file (tokenizer.model")
