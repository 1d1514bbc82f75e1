"""The files' own commands (`python lorasp.py`, quant.py, metrics.py, configs.py, tokenizer.py, checkpoint.py,
model.py) and the bench/ scripts the README runs, each in its own process, where users run them (session 33): a stdout
that cannot show a character (PYTHONIOENCODING=ascii, a C locale), a reader that went away (`| head -1`, here a pipe
closed before the command starts, so that it is not a race). train.py, eval.py, export.py and generate.py:
tests/test_environments.py."""
import ast
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

from checkpoint import save_safetensors
from fixtures import demo_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASCII = {"PYTHONIOENCODING": "ascii"}
C_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
GONE = b"note: stdout's reader is gone (Broken pipe): this command goes on, printing nowhere (Ctrl-C stops it)\n"


def run(argv, env=None, stdout=subprocess.PIPE):
    """(exit status, stdout bytes, stderr bytes) of `python *argv` from the repository, in a user's shell's
    environment (stdout buffered: no PYTHONUNBUFFERED; no PYTHONIOENCODING) plus env."""
    user = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "PYTHONIOENCODING")}
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, env={**user, **(env or {})}, stdout=stdout,
                          stderr=subprocess.PIPE, timeout=600)
    return done.returncode, done.stdout, done.stderr


def into_closed_pipe(argv):
    """run(argv) with stdout a pipe whose reader has gone: `| head -1` once head has its line."""
    r, w = os.pipe()
    os.close(r)
    try:
        return run(argv, stdout=w)
    finally:
        os.close(w)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(a tokenizer folder, a .safetensors file whose tensor name and metadata are not ASCII)."""
    d = tmp_path_factory.mktemp("scripts")
    demo_tokenizer(d, 100)
    save_safetensors({"wörter.weight": torch.zeros(2, 3)}, str(d / "w.safetensors"), {"note": "Größe ½"})
    return str(d), str(d / "w.safetensors")


def test_the_lorasp_demo_prints_whole_to_an_ascii_stdout():
    """Its "⊙" raised UnicodeEncodeError half-way (a traceback, exit 1); it now writes `*`, as its other lines do."""
    status, out, err = run(["lorasp.py"], ASCII)
    assert status == 0 and not err, err
    assert out.decode("ascii").rstrip().endswith("both keep h and A_eff, B_eff too.")
    assert b"so it is LoRA on A * S_A, B * S_B (eff)" in out


def test_the_metrics_demo_prints_whole_in_the_c_locale():
    """Its Romanian sentences ("stă") raised UnicodeEncodeError on the first line; now what ASCII lacks is escaped."""
    status, out, err = run(["metrics.py"], C_LOCALE)
    assert status == 0 and not err, err
    assert out.startswith(b"['Pisica st\\u0103 pe covor.', 'Pre\\u021bul a crescut cu 3,5%.'] vs ")
    assert out.splitlines()[-1].startswith(b"scores [0.1, 2.0, 2.0, 3.5, 4.2] vs [0.0, 1.5, 2.5, 2.5, 5.0]: Pearson")


def test_the_tokenizer_demo_prints_what_a_utf8_terminal_shows(files):
    """`python tokenizer.py DIR TEXT`: a non-ASCII TEXT (and its "▁" pieces) raised UnicodeEncodeError under an ASCII
    stdout; in the C locale TEXT itself, read as ASCII, reached sentencepiece as surrogates (a RuntimeError traceback);
    no TEXT, `--help`: its default example ("Café") raised too. Now the bytes printed are a UTF-8 locale's."""
    for argv in ([files[0], "Grüße ▁ 日本"], [files[0]], ["--help"]):
        utf8 = run(["tokenizer.py", *argv], {"LC_ALL": "C.UTF-8", "PYTHONUTF8": "1"})[1]
        assert "'Grüße ▁ 日本': " in utf8.decode() if len(argv) == 2 else "Café" in utf8.decode()
        for env in (ASCII, C_LOCALE):
            status, out, err = run(["tokenizer.py", *argv], env)
            assert status == 0 and not err and out == utf8, (argv, env, err)


def test_checkpoint_py_lists_non_ascii_names_to_an_ascii_stdout(files):
    """A tensor name, a metadata value the encoding lacks: `error: 'ascii' codec can't encode ...`, exit 1 (the
    print's UnicodeEncodeError taken for a bad file). Now listed, in UTF-8."""
    status, out, err = run(["checkpoint.py", files[1]], ASCII)
    assert status == 0 and not err, err
    assert out == run(["checkpoint.py", files[1]], {"PYTHONIOENCODING": "utf-8"})[1]
    assert out.decode().startswith(f"{'wörter.weight':60s} F32   (2, 3)\n1 tensors") and "'Größe ½'" in out.decode()


@pytest.mark.parametrize("argv", [["lorasp.py"], ["quant.py"], ["metrics.py"]], ids=lambda a: a[0])
def test_a_demo_whose_reader_went_away_ends_quietly(argv):
    """`python lorasp.py | head -1`: a BrokenPipeError traceback (or Python's "Exception ignored ... BrokenPipeError",
    exit 120, where stdout is buffered). A demo has nothing to lose: it now ends as cat does, killed by SIGPIPE, no
    word."""
    status, _, err = into_closed_pipe(argv)
    assert status == -signal.SIGPIPE and not err, (status, err)


@pytest.mark.parametrize("argv", [["configs.py"], ["tokenizer.py", "{dir}", "héllo"], ["checkpoint.py", "{file}"],
                                  ["model.py"]], ids=lambda a: a[0])
def test_a_command_whose_reader_went_away_goes_on_and_says_so(files, argv):
    """configs.py: a traceback; tokenizer.py and model.py (its demo) likewise; checkpoint.py `error: [Errno 32] Broken
    pipe`, exit 1, as if the file were bad. Now they finish, saying once on stderr that nothing is read (checks.console,
    as train.py)."""
    status, _, err = into_closed_pipe([a.format(dir=files[0], file=files[1]) for a in argv])
    assert status == 0 and err == GONE, (status, err)


README_BENCH = sorted(set(re.findall(r"bench/[a-z_0-9]+\.py", open(os.path.join(ROOT, "README.md")).read())))


@pytest.mark.parametrize("script", README_BENCH)
def test_a_bench_script_the_readme_runs_calls_console_first(script):
    """They printed as they went: `| head -1` (or a tee that ended) killed each at its next line with BrokenPipeError
    (paper_tables.py's table, check_figure.py's exit status never reached). Now each calls checks.console() as it
    starts, as train.py does. Read, not run: they take minutes to hours (the test below runs one)."""
    tree = ast.parse(open(os.path.join(ROOT, script)).read())
    main = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "__name__ == '__main__'")
    assert [ast.unparse(n) for n in main.body][-2:] == ["console()", "main()"], script


def test_check_figure_whose_reader_went_away_goes_on_to_its_result(tmp_path):
    """`python bench/check_figure.py | head -1`: its first line raised BrokenPipeError before the toy was built (exit
    1, a traceback, nothing checked). Now it goes on, says so once, and ends as its run does: here its toy cannot be
    written (--out under a file), so the error it exits with is toy_glue.py's, not a BrokenPipeError."""
    (tmp_path / "f").write_text("")
    status, _, err = into_closed_pipe(["bench/check_figure.py", "--out", str(tmp_path / "f" / "check")])
    assert status == 1 and err.startswith(GONE), err
    assert b"NotADirectoryError" in err and b"BrokenPipeError" not in err, err   # (toy_glue.py's, as it printed it)
