"""What a newcomer's mistakes look like: one line `error: ...` that names the flag or file and what to do, through
train.main and eval.main, for no network (a closed port on 127.0.0.1 stands in for a host that cannot be reached), a
gated or missing Hub repository (tests/fake_hub.py), a missing --data file, a --keep out of range, a model folder
without tokenizer or weights, and a model that does not train the data (refused before any weight is looked for)."""
import os
import shutil
import socket

import pytest

import data
import download
import eval as E
import plan
import train
from fake_hub import serve
from fixtures import flags, tiny  # noqa: F401  (tiny: a fixture)


def one_line_error(call):
    """call() must exit with one line `error: ...` (sys.exit(message): printed without a traceback); returns it."""
    with pytest.raises(SystemExit) as e:
        call()
    message = str(e.value)
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in message, message
    return message


@pytest.fixture
def closed_port():
    """A URL on 127.0.0.1 where nothing listens: connecting is refused at once, as with no network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_no_network_names_the_url_and_how_to_fetch_by_hand(tiny, tmp_path, monkeypatch, closed_port):
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "ALPACA_URL", f"{closed_port}/alpaca_data.json")
    message = one_line_error(lambda: train.main(flags((tiny[0], "alpaca"), tmp_path / "out")))
    for part in (f"cannot reach 127.0.0.1 to fetch {closed_port}/alpaca_data.json", "fetch it by hand and put it at "
                 + str(tmp_path / "cache" / "data" / "alpaca_data.json"), "or pass --data FILE"):
        assert part in message, part
    monkeypatch.setenv("HF_ENDPOINT", closed_port)                                  # the model's repository
    monkeypatch.setattr(plan, "available_bytes", lambda device: (64 * plan.GiB, "test"))
    message = one_line_error(lambda: train.main(["--model", "llama2-7b", "--data", tiny[1], "--download"]))
    assert f"cannot reach 127.0.0.1 to fetch {closed_port}/api/models/meta-llama/Llama-2-7b-hf" in message
    assert "huggingface-cli download meta-llama/Llama-2-7b-hf --local-dir" in message and "--model DIR" in message


def test_gated_and_missing_repositories(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(plan, "available_bytes", lambda device: (64 * plan.GiB, "test"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    files = {f: open(os.path.join(tiny[0], f), "rb").read() for f in ("config.json", "model.safetensors")}
    with serve("meta-llama/Llama-2-7b-hf", files, token="t0k") as (url, _):
        monkeypatch.setenv("HF_ENDPOINT", url)
        message = one_line_error(lambda: train.main(["--model", "llama2-7b", "--data", tiny[1], "--download"]))
        assert "HTTP 401" in message and "accept its licence at https://huggingface.co/meta-llama/Llama-2-7b-hf" in \
            message and "export HF_TOKEN" in message
        monkeypatch.setenv("HF_TOKEN", "t0k")                                    # (without it: 401, as the Hub)
        message = one_line_error(lambda: train.main(["--model", "llama2-13b", "--data", tiny[1], "--download"]))
        assert "HTTP 404" in message and "no repository 'meta-llama/Llama-2-13b-hf'" in message


def test_plain_mistakes_are_one_line(tiny, tmp_path, monkeypatch, capsys):
    message = one_line_error(lambda: train.main(flags((tiny[0], str(tmp_path / "missing.json")), tmp_path / "o")))
    assert "--data " + str(tmp_path / "missing.json") + ": no such file. --data takes alpaca" in message
    with pytest.raises(SystemExit) as e:                                            # argparse's own: usage, exit 2
        train.main(flags(tiny, tmp_path / "o", "--keep", "1.5"))
    assert e.value.code == 2 and "argument --keep: 1.5 is out of range: must be a number > 0, <= 1" in \
        capsys.readouterr().err
    bare = tmp_path / "bare"                                                        # weights, no tokenizer
    shutil.copytree(tiny[0], bare, ignore=shutil.ignore_patterns("tokenizer.model"))
    message = one_line_error(lambda: train.main(flags((str(bare), tiny[1]), tmp_path / "o")))
    assert f"{bare}: no tokenizer file (tokenizer.model, tokenizer.json" in message
    message = one_line_error(lambda: E.main(["--task", "perplexity", "--model", str(bare), "--data", tiny[1]]))
    assert f"{bare}: no tokenizer file" in message
    os.remove(bare / "model.safetensors")                                           # no weights either
    message = one_line_error(lambda: train.main(flags((str(bare), tiny[1]), tmp_path / "o")))
    assert f"--model {bare}: no weights (model.safetensors" in message


def test_model_and_data_are_checked_before_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path))                              # no T5 weights here
    message = one_line_error(lambda: train.main(["--model", "t5-small", "--data", "glue/sst2"]))
    assert "--data glue/sst2 trains roberta or bert or gpt2; t5-small holds t5" in message and "no weights" not in message


def test_a_bugs_key_error_keeps_its_traceback(tmp_path, monkeypatch):
    """The loaders' own errors for a user's file are ValueErrors (ec30326), so eval.py and model.py no longer turn
    every KeyError into `error: ...`: a KeyError from a bug in the code stays a KeyError with its traceback (it was
    one line naming only the missing key, the bug's place lost). A user's mistake is still one line."""
    import model as M

    def bug(*args, **kwargs):
        raise KeyError("n_layer")                              # a lookup the code got wrong, not the user's file
    monkeypatch.setattr(E, "command", bug)
    with pytest.raises(KeyError, match="n_layer"):
        E.main(["--task", "perplexity"])
    monkeypatch.setattr("sys.argv", ["model.py", "--model", str(tmp_path), "--device", "cpu"])
    assert str(tmp_path) in one_line_error(M.main)             # an empty folder: the user's mistake, one line
    monkeypatch.setattr(M, "load_pretrained", bug)
    (tmp_path / "config.json").write_text("{}")                # a folder that passes --model's checks (generate.py
    (tmp_path / "model.safetensors").write_bytes(b"")          # resolves it as eval.py does) before the loader runs
    with pytest.raises(KeyError, match="n_layer"):
        M.main()


def test_no_network_for_a_hub_repository_says_to_fetch_the_repository_not_the_api_listing(tmp_path, closed_port):
    """The Hub's file listing (api/models/...) is no file to put in the model's folder: the message said 'fetch it by
    hand and put it at DEST' of that URL; it names the repository's download and where that folder goes."""
    dest = tmp_path / "models" / "roberta-base"
    with pytest.raises(download.UserError) as e:
        download.download_hf("FacebookAI/roberta-base", str(dest), endpoint=closed_port)
    message = str(e.value)
    assert f"cannot reach 127.0.0.1 to fetch {closed_port}/api/models/FacebookAI/roberta-base" in message
    assert "fetch it by hand" not in message
    assert (f"On a machine that can, fetch the repository by hand (huggingface-cli download FacebookAI/roberta-base "
            f"--local-dir {dest}) and put that folder at {dest}, or pass --model DIR") in message
