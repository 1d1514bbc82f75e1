"""checks.py: the checks train.py's and eval.py's command lines share (cli.py's and evalcli.py's flags), written once:
a flag's range as argparse parses it, the flags the user gave, the note for those that have no effect, --model naming a
model (not an adapter, a run's folder or a weight file), and --seq-len against the model's config, before a weight
is read.

- `ranged(kind, low, high)`: an argparse type that refuses a value out of range and says the range; `dtype_name`:
  eval.py's and generate.py's --dtype takes train.py's and export.py's names too (bf16 for bfloat16).
- `given_flags(parser, argv)`, `no_effect(flags, why)`: the flags argv sets; the note for those the command ignores.
- `repeated(parser, argv, lists)`: a flag given twice (argparse keeps the last without a word): refused for a list
  (--targets, --subjects, --plot: the first ones would be dropped), noted for the rest. `unexpanded(parser, args,
  flags)`: a path that begins with a `~` the shell left alone (`--out=~/runs`, a quoted "~/x"), or with a set
  variable it left alone ('$HOME/runs' in single quotes, a config file's "${SCRATCH}/x"), refused: it named a folder
  `~` or `$HOME` in the current one. `unwritable(flag, value, folder)`: an output folder (or its nearest existing
  parent) where a probe file cannot be made, written and removed (read-only, another user's, full), refused at parse
  time with the OS's reason, not once the model has loaded.
- `check_model(name)`: --model names a checkpoint folder, a .gguf file or a preset; `not_a_model`: the error for an
  adapter or a train.py run's folder given as --model (what to give instead); `check_preset_folder`: a preset's
  --model-dir holds that preset's architecture.
- `check_seq_len(config, seq_len, name)`: within learned positions (GPT-2, BERT, RoBERTa) and a sliding window
  (Mistral, Qwen2), from config.json: a one-line error naming the flag and the limit, not the model's refusal once it
  loaded (or an IndexError at the first batch that long); `context(config)`: what a causal LM scores at once;
  `windows_said`: perplexity's windows, and where their length came from, said beside its figure.
- `not_causal(model, kind, architectures, task)`: a T5, an encoder or a classifier folder given to what continues or
  scores text as a language model (generate.py; eval.py's perplexity, generate, MMLU, a causal LM's SQuAD), refused with
  the command that runs it (`runs_instead`, eval.py's refusals too), or (a Llama's span head: SCORED_HEADS) what
  lorasp scores instead.
- `console()`: a command line's stdout and stderr (train.py, eval.py, export.py, generate.py call it as they start):
  line-buffered, a character the terminal's encoding lacks in UTF-8, a reader that went away leaves the command running
  (`Outlived`).
Low in the house (configs, data, download): cli.py -> tasks.py -> eval.py -> evalcli.py all import it, no cycle.
"""
import argparse
import codecs
import contextlib
import errno
import json
import math
import os
import sys
import tempfile

from configs import PRESETS, check_window, positions
from data import UserError
from checkpoint import is_meta
from download import has_weights, no_model


def ranged(kind, low=None, high=None, open_low=False, open_high=False):
    """An argparse type: a `kind` (int or float) within [low, high] (open ends: open_low/open_high); anything else is
    refused at parse time, with the allowed range (argparse prints it: no traceback, nothing started)."""
    name = "an integer" if kind is int else "a number"
    allowed = name + ("" if low is None else f" {'>' if open_low else '>='} {low}") + (
        "" if high is None else f"{',' if low is not None else ''} {'<' if open_high else '<='} {high}")

    def parse(text):
        try:
            x = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {name}") from None
        if not (math.isfinite(x) and (low is None or (x > low if open_low else x >= low))
                and (high is None or (x < high if open_high else x <= high))):
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {allowed}")
        return x
    return parse


def dtype_name(name):
    """--dtype as torch names it: bf16, fp16, fp32 (train.py's and export.py's spelling) or torch's own name."""
    return {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(name, name)


def given_flags(parser, argv):
    """The flags argv sets, however written (--keep=X, or --kee X as argparse takes it), a default value too: argv
    parsed again onto a namespace of markers, which only a flag given replaces."""
    unset = object()
    return {"--" + k.replace("_", "-") for k, v in vars(parser.parse_args(argv, argparse.Namespace(
        **{a.dest: unset for a in parser._actions}))).items() if v is not unset}


def repeated(parser, argv, lists=()):
    """A flag argv gives more than once, however written: argparse keeps the last value without a word. A flag of
    `lists` is refused (`--targets q_proj --targets v_proj` adapted v_proj alone), another flag's earlier values are
    noted (`--lr 1e-4 ... --lr 2e-4`: 2e-4 trains)."""
    values = {}

    class Sets(argparse.Namespace):                            # argparse sets a dest each time its flag is given
        def __setattr__(self, name, value):
            values.setdefault(name, []).append(value)
            super().__setattr__(name, value)

    marked = Sets(**{a.dest: None for a in parser._actions})
    values.clear()                                             # (the markers set above)
    parser.parse_args(argv, marked)
    for dest, seen in values.items():
        flag = "--" + dest.replace("_", "-")
        shown = [" ".join(map(str, v)) if isinstance(v, list) else (flag if v else "--no-" + flag[2:])
                 if isinstance(v, bool) else str(v) for v in seen]
        if len(set(shown)) < 2:
            continue
        times = "twice" if len(seen) == 2 else f"{len(seen)} times"
        if flag in lists:
            parser.error(f"{flag} given {times} ({'; '.join(shown)}): only the last would be read; give them once: "
                         f"{flag} {(' ' if isinstance(seen[0], list) else ',').join(shown)}")
        print(f"note: a flag given {times} keeps its last value: " + (shown[-1] if isinstance(seen[-1], bool) else
              f"{flag} {shown[-1]}") + f" (not {', '.join(v for v in dict.fromkeys(shown) if v != shown[-1])})")


def unexpanded(parser, args, flags):
    """A path flag that begins with a `~` the shell did not expand (it does not after `=` or inside quotes) is refused:
    it would name a folder `~` in the current one (`--out=~/runs`: ./~/runs, printed as ~/runs); so is one that begins
    with a variable the environment sets, left as written (single quotes: '$HOME/runs' was ./$HOME/runs, printed as
    $HOME/runs). ./ before either keeps the name as written. An empty one ("$OUT" with OUT unset) is refused too (export
    --out '': the current folder, which it then tried to replace)."""
    for flag in flags:
        value = getattr(args, flag[2:].replace("-", "_"))
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and not v.strip():
                parser.error(f"{flag} {v!r} is empty: give a path (\"$VAR\" with VAR unset is '')")
            if isinstance(v, str) and v.startswith("~") and os.path.expanduser(v) != v:
                parser.error(f"{flag} {v}: the shell did not expand '~' (it does not after '=' or inside quotes): "
                             f"write {flag} {os.path.expanduser(v)} (or ./{v} for a folder named "
                             f"'{v.split(os.sep)[0]}' here)")
            if isinstance(v, str) and v.startswith("$") and os.path.expandvars(head := v.split(os.sep)[0]) != head:
                parser.error(f"{flag} {v}: the shell did not expand {head} (it does not inside single quotes): write "
                             f"{flag} {os.path.expandvars(head)}{v[len(head):]} (or ./{v} for a folder named '{head}' "
                             "here)")


def unwritable(flag, value, folder):
    """The error for a `folder` (its nearest existing parent if it is not made yet) in which no file can be made,
    written and removed, as the command will (a read-only mount, a folder of another user, a full disk, a file-size
    limit): said at parse time, before a weight loads, with the OS's reason; None if one can. A probe, not os.access,
    which answers yes to root and can be wrong on network file systems; nothing is left behind (`folder` not made)."""
    there = os.path.abspath(folder)
    while not os.path.exists(there):
        there = os.path.dirname(there)
    if not os.path.isdir(there):                               # (a file on the way: the callers' own errors say so)
        return None
    try:
        fd, probe = tempfile.mkstemp(prefix=".lorasp-probe-", dir=there)
        try:
            os.write(fd, b"\n")                                # (a file-size limit or a full disk: at the first byte)
        finally:
            os.close(fd)
            os.remove(probe)
    except OSError as e:
        return (f"{flag} {value}: no file can be written in {there}" + (
            f" (where {os.path.abspath(folder)} would be made)" if there != os.path.abspath(folder) else "") +
            f": {e.strerror or e} ({errno.errorcode.get(e.errno, e.errno)}); give a folder you can write")
    return None


def no_effect(flags, why="", file=None):
    """The note for flags given that the command does not read (each was once silently unused)."""
    if flags:
        print(f"note: {', '.join(flags)} {'has' if len(flags) == 1 else 'have'} no effect{why}", file=file)


# ----------------------------------------------------------------------------------------------------
# --model: a model, not an adapter or a run's folder

def check_model(name, train=False):
    """--model names a checkpoint directory, a .gguf file or a preset; else an error saying what to give (train: in
    train.py's words, which list the presets)."""
    if error := not_a_model(name, train):
        raise error
    if not (os.path.isdir(name) or os.path.isfile(name) and name.endswith(".gguf") or name in PRESETS):
        if os.path.isfile(name):                               # a weight file: its folder holds the config too
            raise UserError(f"--model {name} is a file: pass its checkpoint's folder "
                            f"({os.path.dirname(os.path.abspath(name))}: config.json and the weights), or a .gguf "
                            "file")
        raise no_model(name, PRESETS, train)


def check_preset_folder(name, config, directory):
    """--model PRESET whose --model-dir holds another architecture is refused: config is what its files hold, and they
    would train under the preset's name (--model gpt2-medium --model-dir models/gpt2 trained GPT-2 small, its log
    saying gpt2-medium)."""
    def shape(c):                                              # (T5: num_layers, d_model)
        return c.model_type, getattr(c, "n_layer", None) or c.num_layers, getattr(c, "n_embd", None) or c.d_model
    if name in PRESETS and shape(config) != shape(want := PRESETS[name]):
        (kind, n, width), (kind0, n0, width0) = shape(config), shape(want)
        raise UserError(f"--model {name}: {directory} holds a {kind} of {n} layers, width {width}, not {name} (a "
                        f"{kind0} of {n0} layers, width {width0}): give --model {directory} for the model it holds, "
                        f"or a folder of {name}'s own files")


def not_a_model(path, train=False):
    """The error for --model given an adapter, or a train.py run's --out folder (or its checkpoint/), where a model
    was meant: what to give instead; None for anything else (load_pretrained names what else is wrong)."""
    if not os.path.isdir(path) or has_weights(path) or any(os.path.isfile(os.path.join(path, f)) for f in (
            "config.json", "params.json")):
        return None
    adapter, model = run_folder(path)
    if model:
        return UserError(f"--model {path} is a train.py run's folder: its fine-tuned model is --model {model}" + (
            f" (and {adapter} an adapter: two runs' results)" if os.path.isdir(adapter) else ""))
    if (cfg := adapter_config(adapter)) is None:
        return None
    base = cfg.get("base_model_name_or_path") or "its base model"
    what = "an adapter (adapter_config.json)" if adapter == path else "a train.py run's folder"
    return UserError(f"--model {path} is {what}, not a model: " + (
        f"train.py trains a new adapter on a base model (this one's: --model {base}); to go on with its run: "
        "--resume, with --out the run's folder" if train else f"give its base, --model {base}, and --adapter "
                                                             f"{adapter}"))


def run_folder(path):
    """(adapter, model) of a folder: its adapter, itself where it holds adapter_config.json, else a train.py run's
    adapter/ (there or not); a train.py run's model/ (--method full's) where it holds weights, else None."""
    adapter = path if os.path.isfile(os.path.join(path, "adapter_config.json")) else os.path.join(path, "adapter")
    return adapter, model if has_weights(model := os.path.join(path, "model")) else None


def adapter_config(folder):
    """folder's adapter_config.json as a dict; None where it cannot be read (load_adapter names what is wrong)."""
    try:
        with open(os.path.join(folder, "adapter_config.json")) as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


# ----------------------------------------------------------------------------------------------------
# --seq-len: against the config, before the weights load

# the heads lorasp scores, on which models (model.py's add_qa_head, add_head) and where
SCORED_HEADS = {"ForQuestionAnswering": ("squad", "a span head", {"bert": "BERT", "roberta": "RoBERTa"}),
                "ForSequenceClassification": ("glue/TASK", "a classifier head", {"bert": "BERT", "roberta": "RoBERTa",
                                                                                 "gpt2": "GPT-2"})}


def not_causal(model, kind, architectures=None, task=None):
    """Refuse a model that does not continue a prompt (config.json's model_type and architectures, or the loaded
    model's type), saying what runs it: a T5 generates in eval.py's translation task (beam search), an encoder or a
    classifier (export.py's of a GLUE or SQuAD adapter: GPT-2's keeps a tied LM head) scores inputs there.
    generate.py's, and eval.py's for the tasks that take a causal LM (its perplexity scored that tied head); task:
    eval.py's (squad: a causal LM's generated answers), so a head lorasp does not score (a Llama's span head) is said
    so, not sent to the task that refused it."""
    if head := [a for a in architectures or () if a.endswith(tuple(SCORED_HEADS))]:
        end = next(k for k in SCORED_HEADS if head[0].endswith(k))
        there, what, kinds = SCORED_HEADS[end]
        raise UserError(f"--model {model} is a {head[0]} (config.json's architectures): its head scores inputs: it is "
                        f"no language model to {'generate answers' if task == 'squad' else 'generate or score text'} "
                        "with; " + (f"score it with python eval.py --task {there} --model {model}" if kind in kinds else
                                    f"lorasp scores {what} on {', '.join(kinds.values())} only (--task {there})" + (
                                        f"; --task squad scores a causal LM's generated answers: give it the "
                                        f"{head[0].removesuffix(end)}ForCausalLM folder" if there == "squad" else "")))
    if kind in ("t5", "mt5"):
        raise UserError(f"--model {model} is a {kind}, an encoder-decoder: generate.py continues a prompt with a "
                        f"causal LM (Llama, GPT-2); {runs_instead(kind, model)}")
    if kind in ("bert", "roberta"):
        raise UserError(f"--model {model} is a {kind}, an encoder: it does not generate; {runs_instead(kind, model)}")


def runs_instead(kind, model):
    """What runs a model that is no causal LM (not_causal's, and eval.py's causal-LM tasks' refusals): "" if none."""
    if kind in ("t5", "mt5"):
        return f"a T5 translates with beam search: python eval.py --task wmt16-en-ro --model {model}"
    return "an encoder scores inputs: python eval.py --task glue/TASK or squad" if kind in ("bert", "roberta") else ""


def check_seq_len(config, seq_len, name, default=False):
    """Refuse a --seq-len past the model's learned positions (GPT-2's, BERT's, RoBERTa's: no embedding for a later
    position) or its sliding window (not implemented); default: the length is the task's, not the user's."""
    if (room := positions(config)) and seq_len > room:
        raise UserError(f"--seq-len {seq_len}{' (the default)' if default else ''}: {name} has {room} positions; use "
                        f"--seq-len {room} or less")
    check_window(config, seq_len, name)


def context(config):
    """The longest sequence a causal LM scores at once: its context (RoPE: max_seq_len; GPT-2: its positions), or its
    sliding window (Mistral, Qwen2) where that is shorter."""
    longest = getattr(config, "max_seq_len", None) or config.n_positions
    return min(longest, getattr(config, "sliding_window", None) or longest)


def windows_said(path, length, stride, given):
    """Perplexity's windows, said beside its figure (which moves with them): their length, and where it comes from:
    --seq-len, or the model's context, which Meta's params.json does not record (checkpoint.meta_context tells it by
    the Llama's version: the same weights in Hugging Face's layout, whose config.json records it, were scored in other
    windows with no word)."""
    why = "--seq-len" if given else "the model's context" + (
        ": Meta's params.json records none, so it is told by the Llama's version, as transformers' converter does "
        "(Llama 2 4096, Code Llama 16384, Llama 3 8192, 3.1 and later 131072): give --seq-len to compare layouts"
        if os.path.isdir(path) and is_meta(path) else "")
    return f" in windows of {length} tokens" + (f", one every {stride}" if stride and stride < length else "") + (
        f" ({why})")


def check_new_tokens(config, T, n, model, said, shorten):
    """A prompt of T tokens and n new ones (`said`: "the prompt's T tokens", as the message names them): past learned
    positions (GPT-2's) or a sliding window, a UserError naming --max-new-tokens (the last new token is not run: T +
    n - 1 positions); past a RoPE context, a note (transformers' generate warns and runs on). generate.py's --prompt,
    eval.py's --prompts (was the forward's error, after the answers before it, naming no flag)."""
    if (room := positions(config) or getattr(config, "sliding_window", None)) and T + max(n - 1, 0) > room:
        raise UserError(f"--max-new-tokens {n}: {said} and {n} new ones pass the {room} positions of {model}; " + (
            f"at most {room - T + 1} new tokens fit" if T <= room else f"shorten {shorten}"))
    if (length := getattr(config, "max_seq_len", None)) and T + max(n - 1, 0) > length:
        print(f"note: {said} and {n} new ones pass {model}'s context ({length} positions): RoPE runs on, as in "
              "transformers' generate (which warns), on positions the model never trained on", file=sys.stderr)


def console():
    """stdout and stderr as a command line needs them (not on import): line-buffered (a log file keeps every line
    before a SIGKILL), what their encoding lacks in UTF-8 (LC_ALL=C's ASCII: "▁", a file named "ü", as generate.py
    writes its text), a reader that goes away outlived (Outlived). docs/robustness.md's "Environments" says why."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="lorasp.utf8", line_buffering=True)
        if stream is not None and not isinstance(stream, Outlived):
            setattr(sys, name, Outlived(stream, name))


def _utf8(e):
    """An encoding error handler: what the stream's encoding lacks, in UTF-8 (a name's undecodable bytes as they were,
    surrogateescape's)."""
    text = e.object[e.start:e.end]
    try:
        return text.encode("utf-8", "surrogateescape"), e.end
    except UnicodeError:
        return text.encode("utf-8", "backslashreplace"), e.end


codecs.register_error("lorasp.utf8", _utf8)


class Outlived:
    """A stream whose reader may go: a pipe's (| head, a pager quit, a tee that ended: EPIPE), a terminal's (a closed
    ssh session: EIO). From then on it writes to os.devnull, saying so once on the other stream, where each print
    raised and ended train.py, unsaved (after SIGHUP its save too)."""
    def __init__(self, stream, name):
        self.stream, self.name = stream, name

    def write(self, text):
        return self._kept(self.stream.write, text) or len(text)

    def flush(self):
        self._kept(self.stream.flush)

    def _kept(self, write, *text):
        try:
            return write(*text)
        except OSError as e:
            if not isinstance(e, BrokenPipeError) and e.errno != errno.EIO:
                raise
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())   # (its buffer drains there too)
            other = sys.stderr if self.name == "stdout" else sys.stdout
            with contextlib.suppress(OSError):
                print(f"note: {self.name}'s reader is gone ({e.strerror}): this command goes on, printing nowhere "
                      "(Ctrl-C stops it)", file=other, flush=True)

    def __getattr__(self, name):                               # (fileno, isatty, encoding, ...: the stream's)
        return getattr(self.stream, name)
