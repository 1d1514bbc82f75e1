"""Every command README.md and docs/*.md print (`python SCRIPT ...`, `torchrun ... train.py ...`, in code blocks and
inline `code` spans) still parses with the script's own argparse parser; nothing runs.

A flag renamed or removed since the text was written fails at once when a user copies it (a broken guide); a choice
renamed fails the same way. Checked here, per (file, line) where the command is printed:
- the script exists;
- each flag is one of the parser's, written in full: the parsers take argparse's default `allow_abbrev=True`, so
  `--sched` would silently mean train.py's `--schedule` (and a new flag that starts the same way would make it an
  error); a printed command must not lean on that (parsed here with allow_abbrev off; the error says when the
  abbreviation is what it relied on);
- each value passes its flag's type (ranges too) and choices. Placeholders (DIR, FILE, S, N, HOST:PORT, $VAR), `...`
  (flags left out), `[optional]` brackets and `a|b` alternatives (each is checked) are read as a user reads them;
- the bench scripts' --configs that become train.py's flags (bench_cli.py's, with --ours-flags; bench_7b.py's,
  bench_plan.py's) parse as train.py's, and bench_train.py's are among the configs it lists;
- train.py's and eval.py's whole parse_args take each of theirs: no contradiction refused, no flag noted as having
  no effect there (eval.py's: up to the first file it looks for).
The parser is the one the script builds when run: the script is run as __main__ with sys.argv empty and
ArgumentParser.parse_args stopping it at its first call, which hands the parser over (train.py: cli.parse_args's;
eval.py: evalcli.parser(); generate.py/model.py: generate.main's). Scripts that read no argument are listed
(NO_ARGUMENTS) and their source checked to read none; checkpoint.py (one FILE) is run with its listing stubbed.
"""
import argparse
import contextlib
import functools
import inspect
import io
import json
import os
import re
import runpy
import shlex
import sys
from unittest import mock

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted("docs/" + f for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))
NO_ARGUMENTS = {"bench/paper_counts.py", "bench/compile_lorasp.py", "bench/dequant_compiled.py"}
BUILT_IN = {"train.py": "cli.py", "eval.py": "evalcli.py", "model.py": "generate.py"}  # where their parser is built
EXTERNAL = {"convert_hf_to_gguf.py"}          # llama.cpp's converter (tests/fetch_real.py fetches it), not ours
# commands printed as bad input (robustness.md's history of what was refused or ignored): they must stay refused
REFUSED = {("docs/robustness.md", "python configs.py --bogus"),
           ("docs/robustness.md", "python lorasp.py/quant.py/metrics.py --flag")}
LAUNCH = re.compile(r"(?<![\w./-])(python3?|torchrun)\s+")
PLACEHOLDER = re.compile(r"^(\$\w+|\$\{\w+\}|[A-Z][A-Z0-9_]*([:=][A-Z0-9_]+)?)$")
INDENTED = re.compile(r"^ {4,}(\w+=\S*\s+)*(python3?|torchrun)\s")  # an indented code block's command
SHELL_OPS = ("|", "&", ";", ">", "<", "2>", ")")


def _uncommented(text):
    """text up to a `#` that starts a word outside quotes (bash's comment; `a#b` is a word)."""
    quote = None
    for i, c in enumerate(text):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i]
    return text


def commands_in(text):
    """[(script, argv, command as printed)] for each launch in one logical line or inline span."""
    out = []
    for m in LAUNCH.finditer(text):
        rest = _uncommented(text[m.end():])
        try:
            words = shlex.split(rest)
        except ValueError:                                   # an unbalanced quote in the rest of the line
            words = shlex.split(rest.split("'")[0].split('"')[0])
        if m.group(1) == "torchrun":                         # torchrun's own options, then the script
            words = words[next((i for i, w in enumerate(words) if w.endswith(".py")), len(words)):]
        if not words or not words[0].endswith(".py"):        # python -c, python -m pytest, "python 0.3.36"
            continue
        argv = []
        for w in words[1:]:
            if w.startswith(SHELL_OPS) or w == "&&":
                break
            argv.append(w)
        out.append((words[0], argv, " ".join([m.group(1), words[0], *map(shlex.quote, argv)])))
    return out


def extract(path):
    """[(line, script, argv, command)]: fenced code blocks and indented command lines (backslash continuations
    joined), inline code spans (a span may wrap onto the next line)."""
    lines = open(os.path.join(ROOT, path), encoding="utf-8").read().split("\n")
    found, fenced, prose = [], False, []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fenced = not fenced
            prose.append("")
            i += 1
            continue
        if fenced or INDENTED.match(line):                     # a fenced or an indented code block's line
            start, joined = i, line
            while joined.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                joined = joined.rstrip()[:-1] + " " + lines[i].strip()
            found += [(start + 1, *c) for c in commands_in(joined)]
            prose += [""] * (i - start + 1)
            i += 1
            continue
        prose.append(line)
        i += 1
    text = "\n".join(prose)                                   # the lines outside code blocks, numbering kept
    for m in re.finditer(r"(?<!`)`([^`]+?)`(?!`)", text):
        if "\n\n" in m.group(1):
            continue
        line = text.count("\n", 0, m.start()) + 1
        found += [(line, *c) for c in commands_in(m.group(1).replace("\n", " "))]
    return sorted(found)


CASES = [(f, line, script, argv, command) for f in DOCS for line, script, argv, command in extract(f)]


class _Parser(Exception):
    def __init__(self, parser):
        self.parser = parser


@functools.lru_cache(maxsize=None)
def parser_of(script):
    """The parser `python SCRIPT` builds: the script run as __main__ with no arguments, stopped at its first
    parse_args, before anything else it would do."""
    path = os.path.join(ROOT, script)
    source = open(os.path.join(ROOT, BUILT_IN.get(script, script)), encoding="utf-8").read()
    assert "ArgumentParser(" in source, (                 # (else run to its end: the job itself)
        f"{script} builds no argparse parser: list it in NO_ARGUMENTS if it reads no argument, or check it here")

    def stop(self, *args, **kwargs):
        raise _Parser(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", stop), mock.patch.object(sys, "argv", [path]), \
            mock.patch.object(sys, "path", [os.path.dirname(path), ROOT, *sys.path]):
        try:
            runpy.run_path(path, run_name="__main__")
        except _Parser as e:
            return e.parser
    raise AssertionError(f"{script} ran to its end without calling parse_args")


class _AnyPlaceholder(list):
    """an action's choices, which also hold a placeholder (DIR, $VAR): its value is the user's to give."""
    def __contains__(self, value):
        return isinstance(value, str) and bool(PLACEHOLDER.match(value)) or list.__contains__(self, value)


def _placeholders_pass(parser):
    """parser's actions let a placeholder value through their type and choices (everything else still checked)."""
    for action in parser._actions:
        if action.type is not None and not getattr(action.type, "_placeholders_pass", False):
            def typed(text, convert=action.type):
                return text if PLACEHOLDER.match(text) else convert(text)
            typed._placeholders_pass = True
            action.type = typed
        if action.choices is not None and not isinstance(action.choices, _AnyPlaceholder):
            action.choices = _AnyPlaceholder(action.choices)
    return parser


def variants(argv):
    """argv as a user types it: `...` (flags left out; after a flag, its values) and a lone $VAR (flags in a variable)
    dropped, [brackets] of an optional flag removed; a value `a|b` gives one argv per alternative."""
    words = []
    for w in argv:
        w = w.strip("[]") if w.startswith("[") or w.endswith("]") else w
        after_flag = bool(words) and words[-1].startswith("-")
        if w in ("...", "…"):
            w = "VALUE" if after_flag else ""
        if not w or (w.startswith("$") and not after_flag):
            continue
        words.append(w)
    n = max([len(w.split("|")) for w in words if "|" in w and " " not in w] + [1])
    return [[(w.split("|") + [w.split("|")[-1]] * n)[k] if "|" in w and " " not in w else w for w in words]
            for k in range(n)]


def _bench(name):
    """bench/NAME.py imported (the bench scripts import each other as top-level modules)."""
    if os.path.join(ROOT, "bench") not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, "bench"))
    return __import__(name)


def _configs(script, args):
    """The --configs of the bench scripts that run train.py, checked as train.py's flags (bench_cli.py's
    WHO:DTYPE:CHECKPOINTING and --ours-flags, bench_7b.py's and bench_plan.py's METHOD:QUANT:CHECKPOINTING), and
    bench_train.py's against the configs it lists itself (COMPARE, TABLE; selective+N); None if they all parse."""
    flags = {"bench/bench_cli.py": ("--dtype", "--checkpointing"), "bench/bench_7b.py": ("--method", "--quant",
             "--checkpointing"), "bench/bench_plan.py": ("--method", "--quant", "--checkpointing")}.get(script)
    if flags is None and script != "bench/bench_train.py":
        return None
    for config in [c for c in args.configs or () if not PLACEHOLDER.match(c)]:
        parts = config.split(":")
        if script == "bench/bench_train.py":
            bench_train = _bench("bench_train")
            known = {i: {c.split(":")[i] for c in bench_train.COMPARE + bench_train.TABLE} for i in range(3)}
            if len(parts) != 3 or any(re.sub(r"\+\d+$", "", x) not in known[i] for i, x in enumerate(parts)):
                return f"--configs {config}: not METHOD:QUANT:CHECKPOINTING of bench_train.py's configs {known}"
            continue
        who = parts[0]
        if script == "bench/bench_cli.py" and who not in ("ours", "peft"):
            return f"--configs {config}: WHO is ours or peft"
        if who in ("peft", "peft-bnb"):                       # (peft's own run, not train.py)
            continue
        words = [w for flag, value in zip(flags, parts[-len(flags):]) for w in (flag, value)]
        if len(parts) != 3 or (inner := problem("train.py", words + shlex.split(getattr(args, "ours_flags", "")))):
            return f"--configs {config}{' --ours-flags ' + repr(args.ours_flags) if 'ours_flags' in args else ''}" \
                   f" as train.py's flags: {inner if len(parts) == 3 else 'not three fields'}"
    return None


def problem(script, argv):
    """None if argv parses with script's parser as printed, else argparse's message (or why it cannot be run)."""
    if not os.path.isfile(os.path.join(ROOT, script)):
        return f"no script {script} in the repository"
    if script in NO_ARGUMENTS:
        source = open(os.path.join(ROOT, script), encoding="utf-8").read()
        assert "argparse" not in source and "sys.argv" not in source, f"{script} reads arguments now: check them"
        return f"{script} takes no arguments, given {argv}" if argv else None
    if script == "checkpoint.py":                             # usage: python checkpoint.py FILE (sys.argv, no parser)
        import checkpoint
        listed, err = [], io.StringIO()
        with mock.patch.object(sys, "argv", ["checkpoint.py", *argv]), \
                mock.patch.object(checkpoint, "list_tensors", listed.append), contextlib.redirect_stderr(err):
            try:
                checkpoint.main()
            except SystemExit as e:
                return str(e.code)
        return None if listed == argv else f"checkpoint.py did not read {argv}"
    if argv[:1] == ["--write"] and script == "bench/bench_cli.py":  # the writer child: DIR CONFIG LAYERS SEED [..]
        try:
            inspect.signature(_bench("bench_cli")._write).bind(argv[1], json.loads(argv[2]), int(argv[3]), int(argv[4]),
                                                     *argv[5:])
        except (TypeError, ValueError, IndexError) as e:
            return f"bench_cli.py --write {argv[1:]}: {e}"
        return None
    parser = _placeholders_pass(parser_of(script))
    elided = any(w in ("...", "…") for w in argv)
    required = [a for a in parser._actions if a.required]
    for words in variants(argv):
        err = io.StringIO()
        parser.allow_abbrev = False                           # a printed flag is written in full
        for a in required:                                    # `export.py ...`: the required flags left out
            a.required = not elided
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                args = parser.parse_args(words)
            if inner := _configs(script, args):
                return f"{' '.join(words)}: {inner}"
        except SystemExit as e:
            if e.code == 0:                                   # --help
                continue
            parser.allow_abbrev = True
            try:
                with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                    parser.parse_args(words)
                abbrev = " (it parses only as an abbreviation of a longer flag: write the flag in full)"
            except SystemExit:
                abbrev = ""
            return f"{' '.join(words)}: {err.getvalue().strip().splitlines()[-1]}{abbrev}"
        finally:
            parser.allow_abbrev = True
            for a in required:
                a.required = True
    return None


def test_commands_are_found():
    """the extraction finds the commands the docs print, each at the line that prints it (a regex gone wrong would
    check nothing)."""
    readme = {command for f, line, script, argv, command in CASES if f == "README.md"}
    mmlu = "python eval.py --task mmlu --model llama2-7b --adapter out/7b/adapter --predictions out/7b/mmlu.jsonl"
    assert {"python train.py", "python tests/fetch_real.py", "python checkpoint.py FILE.safetensors", mmlu} <= readme
    assert any(c.startswith("torchrun train.py --model llama2-70b") for c in readme)   # torchrun's options left out
    bench = {command for f, line, script, argv, command in CASES if f == "docs/benchmarks.md"}
    assert "python bench/bench_eval.py --quick" in bench                 # (eval.py against transformers, in a minute)
    assert len(CASES) > 200
    for doc, line, script, argv, command in CASES:
        text = open(os.path.join(ROOT, doc), encoding="utf-8").read().split("\n")[line - 1]
        assert os.path.basename(script) in text or text.rstrip().endswith(("python", "torchrun")), (doc, line)
    jobs = [argv for f, line, script, argv, command in CASES if f == "docs/gpu.md" and script == "train.py"]
    assert any(argv[:4] == ["--model", "/tmp/l4/model", "--data", "/tmp/l4/alpaca.json"] and "--out" in argv
               for argv in jobs), jobs                        # an indented block, its lines joined at the \


CHECKED = [c for c in CASES if (c[0], c[4]) not in REFUSED and os.path.basename(c[2]) not in EXTERNAL]


@pytest.mark.parametrize("doc,line,script,argv,command", CHECKED, ids=[f"{c[0]}:{c[1]}:{c[2]}" for c in CHECKED])
def test_printed_command_parses(doc, line, script, argv, command):
    assert (why := problem(script, argv)) is None, f"{doc}:{line}: `{command}`: {why}"


def test_printed_bad_input_stays_refused():
    """robustness.md's commands printed as bad input are still printed, and still refused."""
    printed = {(doc, command): (script, argv) for doc, line, script, argv, command in CASES}
    for doc, command in sorted(REFUSED):
        assert (doc, command) in printed, f"{doc} no longer prints `{command}`: drop it from REFUSED"
        assert problem(*printed[doc, command]) is not None, f"{doc}: `{command}` parses now"


def _filled(words, script="train.py"):
    """words with a placeholder given to a typed flag (--seed S, --method METHOD) replaced by a value it takes, and
    glue/TASK by a task."""
    actions, out = parser_of(script)._option_string_actions, []
    for w in words:
        action = actions.get(out[-1]) if out else None
        if action is not None and PLACEHOLDER.match(w) and (action.type or action.choices):
            w = str(action.default if action.default is not None else 1)
        w = re.sub(r"^glue/[A-Z]+$", "glue/sst2", w)          # glue/TASK: one of the tasks
        out.append(w)
    return out


WHOLE = [c for c in CHECKED if c[2] in ("train.py", "eval.py")]
ABSENT = re.compile(r"no such (file|folder)|neither a checkpoint directory")  # eval.py's paths, read at parse time


@pytest.mark.parametrize("doc,line,script,argv,command", WHOLE, ids=[f"{c[0]}:{c[1]}:{c[2]}" for c in WHOLE])
def test_printed_command_is_taken_whole(doc, line, script, argv, command, tmp_path, monkeypatch):
    """train.py's and eval.py's whole parse_args (cli.py, evalcli.py) take each printed command without an error (a
    contradiction: --method full with --quant nf4, --full-blocks without selective, --task perplexity without --data)
    or a note (a flag that changes nothing there). eval.py's files (DIR, out/7b/adapter) are not there: its parse stops
    at the first, after its notes and contradictions."""
    import cli
    import evalcli
    from download import UserError
    monkeypatch.chdir(tmp_path)                               # (--out's probe: a file made and removed)
    for words in variants(argv):
        words = [os.path.expanduser(w) if w.startswith("~") else w for w in _filled(words, script)]  # as the shell does
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                (cli.parse_args if script == "train.py" else evalcli.parse_args)(words)
        except SystemExit as e:
            assert e.code == 0, f"{doc}:{line}: `{command}`: {err.getvalue().strip().splitlines()[-1]}"
            continue                                          # --help
        except UserError as e:
            assert script == "eval.py" and ABSENT.search(str(e)), f"{doc}:{line}: `{command}`: {e}"
        assert "note:" not in out.getvalue() + err.getvalue(), f"{doc}:{line}: `{command}`: {out.getvalue()}"


def test_a_broken_copy_of_the_readme_fails_where_it_is_broken(tmp_path):
    """README.md with a flag renamed, one abbreviated and a choice misspelled: each is found, at its line."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    broken = text.replace("--grad-accum 1 --seq-len 128 --rank 8", "--grad-acc 1 --seq-len 128 --rank 8") \
        .replace("--checkpointing selective --batch-size 4", "--checkpointing selectiv --batch-size 4") \
        .replace("--task mmlu --model llama2-7b", "--tasks mmlu --model llama2-7b")
    (tmp_path / "README.md").write_text(broken, encoding="utf-8")
    found = {line: problem(script, argv) for line, script, argv, command in extract(str(tmp_path / "README.md"))}
    bad = {line: p for line, p in found.items() if p}
    lines = {t: text[:text.index(t)].count("\n") + 1 for t in ("--grad-accum 1 --seq-len 128 --rank 8",
                                                               "--checkpointing selective --batch-size 4",
                                                               "--task mmlu --model llama2-7b")}
    assert set(bad) == set(lines.values()), bad
    assert "abbreviation" in bad[lines["--grad-accum 1 --seq-len 128 --rank 8"]]
    assert "invalid choice: 'selectiv'" in bad[lines["--checkpointing selective --batch-size 4"]]
    assert "--tasks" in bad[lines["--task mmlu --model llama2-7b"]]


def test_a_stale_flag_an_abbreviation_and_a_bad_choice_are_caught():
    """the check itself: each kind of stale command fails, naming why."""
    assert problem("train.py", ["--model", "DIR", "--data", "FILE", "--seq-len", "128"]) is None
    assert "unrecognized arguments: --lr-schedule" in problem("train.py", ["--lr-schedule", "cosine"])
    assert "abbreviation" in problem("train.py", ["--sched", "cosine"])          # --schedule, abbreviated
    assert "invalid choice: 'nf8'" in problem("eval.py", ["--task", "mmlu", "--quant", "nf8"])
    assert "--seq-len" in problem("train.py", ["--seq-len", "1"])                 # its range: >= 2
    assert problem("train.py", ["--seed", "S", "--quant", "nf4|none"]) is None   # placeholders, alternatives
    assert "invalid choice: 'nf9'" in problem("train.py", ["--quant", "nf4|nf9"])
    assert problem("bench/nope.py", []) == "no script bench/nope.py in the repository"
    assert "takes no arguments" in problem("bench/paper_counts.py", ["--x"])
    assert problem("checkpoint.py", ["FILE.gguf"]) is None and problem("checkpoint.py", []) is not None
    assert problem("tokenizer.py", ["DIR", "text"]) is None and "PATH" in problem("tokenizer.py", [])  # its parser
    assert "unrecognized arguments: --bogus" in problem("tokenizer.py", ["DIR", "--bogus"])
    cli = ["--configs", "peft:fp32:none", "ours:auto:selective", "--ours-flags", "--full-blocks 5"]
    assert problem("bench/bench_cli.py", cli) is None                # --ours-flags: train.py's flags
    assert "--full-block " in problem("bench/bench_cli.py", cli[:-1] + ["--full-block 5"])
    assert "invalid choice: 'selectiv'" in problem("bench/bench_cli.py", ["--configs", "ours:fp32:selectiv"])
    assert problem("bench/bench_train.py", ["--configs", "lorasp-element:nf4:selective+4", "peft:none:full"]) is None
    assert "lorasp-elemnt" in problem("bench/bench_train.py", ["--configs", "lorasp-elemnt:none:none"])
    assert "invalid choice: 'nf8'" in problem("bench/bench_7b.py", ["--configs", "lorasp:nf8:full"])
