"""Our hand-written safetensors reader/writer against the reference `safetensors` package."""
import errno
import json
import os
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from checkpoint import (atomic_write, iter_safetensors, load_safetensors, read_safetensors_header, replace_dir,
                        save_safetensors)

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32,
          torch.int16, torch.int8, torch.uint8, torch.bool]


def sample_tensors():
    g = torch.Generator().manual_seed(0)
    out = {}
    for i, dt in enumerate(DTYPES):
        x = torch.randn(3, 5, generator=g) * 100
        out[f"t{i}.{str(dt)[6:]}"] = (x > 0) if dt == torch.bool else x.to(dt)
    out["scalar"] = torch.tensor(3.5)
    out["empty"] = torch.zeros(0, 4)
    out["noncontig"] = torch.arange(12.0).view(3, 4).t()
    return out


def test_reference_reads_ours(tmp_path):
    ts = sample_tensors()
    save_safetensors(ts, tmp_path / "ours.safetensors", metadata={"format": "pt"})
    back = load_file(tmp_path / "ours.safetensors")
    assert back.keys() == ts.keys()
    for k in ts:
        assert back[k].dtype == ts[k].dtype and torch.equal(back[k], ts[k]), k


def test_we_read_reference(tmp_path):
    ts = {k: v.contiguous() for k, v in sample_tensors().items()}
    save_file(ts, tmp_path / "ref.safetensors", metadata={"format": "pt", "note": "x"})
    back = load_safetensors(tmp_path / "ref.safetensors")
    assert back.keys() == ts.keys()
    for k in ts:
        assert back[k].dtype == ts[k].dtype and torch.equal(back[k], ts[k]), k
    _, meta, _ = read_safetensors_header(tmp_path / "ref.safetensors")
    assert meta == {"format": "pt", "note": "x"}
    assert [n for n, _ in iter_safetensors(tmp_path / "ref.safetensors", names=["scalar"])] == ["scalar"]


def test_truncated_file_is_named(tmp_path):
    p = tmp_path / "w.safetensors"
    save_safetensors({"w": torch.ones(100)}, p)
    raw = p.read_bytes()
    p.write_bytes(raw[:-10])
    with pytest.raises(ValueError, match="truncated.*'w'"):
        load_safetensors(p)


def test_corrupt_header(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(struct.pack("<Q", 12) + b"{not json!!}")
    with pytest.raises(ValueError, match="corrupt safetensors header"):
        load_safetensors(p)
    p.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(ValueError, match="corrupt safetensors header"):
        load_safetensors(p)
    head = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    p.write_bytes(struct.pack("<Q", len(head)) + head + bytes(8))
    with pytest.raises(ValueError, match="'w' has 8 bytes for shape"):
        load_safetensors(p)


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as f:
            f.write(b"half of the new")
            raise RuntimeError("crash mid-write")
    assert p.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [p]  # no temporary left behind


def test_atomic_writes_where_a_folder_cannot_be_opened(tmp_path, monkeypatch):
    """Windows opens no folder (os.open of one: PermissionError, EACCES), and fsync_dir opened the one holding a file to
    sync its rename: every atomic write there raised once the file was in place. The folder's sync is skipped where it
    cannot be opened (python-atomicwrites syncs folders on POSIX only); files and folders are written whole."""
    real = os.open

    def windows_open(path, flags, *mode):
        if os.path.isdir(path):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real(path, flags, *mode)
    monkeypatch.setattr(os, "open", windows_open)
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")
    with atomic_write(p) as f:
        f.write(b"new, whole")
    assert p.read_bytes() == b"new, whole" and list(tmp_path.iterdir()) == [p]
    save_safetensors(sample_tensors(), tmp_path / "t.safetensors")
    back = load_file(tmp_path / "t.safetensors")
    assert back.keys() == sample_tensors().keys() and all(torch.equal(back[k], t) for k, t in sample_tensors().items())
    with replace_dir(tmp_path / "d") as d:
        save_safetensors({"w": torch.ones(2)}, os.path.join(d, "w.safetensors"))
    assert sorted(os.listdir(tmp_path / "d")) == ["w.safetensors"] and not os.path.exists(tmp_path / "d.tmp")


# ----------------------------------------------------------------------------------------------------
# A sharded checkpoint whose index and folder disagree: the shard named, and what it holds

@pytest.fixture(scope="module")
def five_shards(tmp_path_factory):
    """A tiny Llama saved by transformers itself in 5 shards with its model.safetensors.index.json."""
    import transformers
    c = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    d = tmp_path_factory.mktemp("sharded")
    transformers.LlamaForCausalLM(c).save_pretrained(d, max_shard_size="100KB")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 5, index
    return d, index["weight_map"]


def sharded_copy(five_shards, tmp_path, edit):
    import shutil
    src, weight_map = five_shards
    shutil.copytree(src, tmp_path / "m")
    (tmp_path / "m" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": edit(dict(weight_map))}))
    return tmp_path / "m"


def in_shard(d, shard):
    """The tensors of a shard as the reference reader lists them."""
    from safetensors import safe_open
    with safe_open(str(d / shard), "pt") as f:
        return sorted(f.keys())


@pytest.mark.parametrize("misplaced", [False, True])
def test_a_shard_the_index_leaves_out_is_named_with_its_tensors(five_shards, tmp_path, misplaced):
    """An index that leaves out a shard the folder has (its tensors dropped from weight_map, or mapped to another
    shard) said "7 tensors missing from the checkpoint: ..." and no more: which file, the user had to find. Now the
    shard, that the index does not name it, and its first tensors (safetensors' own reader's list); where the index
    places them in another shard, that shard too."""
    import model as M
    third = "model-00003-of-00005.safetensors"
    d = sharded_copy(five_shards, tmp_path, lambda m: {k: "model-00002-of-00005.safetensors" if v == third else v
                                                       for k, v in m.items() if misplaced or v != third})
    with pytest.raises(ValueError) as e:
        M.load_pretrained(d)
    held = in_shard(d, third)
    message = str(e.value)
    assert f"{len(held)} tensors missing from the checkpoint" in message, message
    assert f"{third} is in the folder but model.safetensors.index.json does not name it, so it was not read (it " \
           f"holds {len(held)} tensors: {', '.join(held[:3])} ...)" in message, message
    assert ("model.safetensors.index.json places 7 of them in model-00002-of-00005.safetensors, which does not hold "
            "them: " in message) == misplaced, message


def test_a_shard_the_index_names_and_the_folder_lacks_is_named_with_its_tensors(five_shards, tmp_path):
    """Two shards gone: the first one was named, alone; now both, with the tensors the index places in each."""
    d = sharded_copy(five_shards, tmp_path, lambda m: m)
    import model as M
    held = {s: in_shard(d, s) for s in ("model-00002-of-00005.safetensors", "model-00004-of-00005.safetensors")}
    order = {s: [k for k, v in five_shards[1].items() if v == s] for s in held}   # (the index's order)
    for s in held:
        (d / s).unlink()
    with pytest.raises(FileNotFoundError) as e:
        M.load_pretrained(d)
    assert sorted(sum(order.values(), [])) == sorted(sum(held.values(), []))       # (the index tells the truth)
    want = f"{d}: shards {', '.join(held)} named in model.safetensors.index.json are missing (" + "; ".join(
        f"the index places {len(order[s])} tensors in {s}: {', '.join(order[s][:3])}" + " ..." * (len(order[s]) > 3)
        for s in held) + ")"
    assert str(e.value) == want, str(e.value)


def test_an_index_with_an_empty_weight_map_is_named_with_the_shards_beside_it(five_shards, tmp_path):
    """{"weight_map": {}}: no file was read, and the error was "N tensors missing from the checkpoint" with no file or
    folder in it. Now the index, and the shards the folder holds."""
    import model as M
    d = sharded_copy(five_shards, tmp_path, lambda m: {})
    with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json: its weight_map is empty, naming no shard "
                                         r"to read \(the folder holds model-00001-of-00005\.safetensors, "
                                         r"model-00002-of-00005\.safetensors, .* \.\.\.\)"):
        M.load_pretrained(d)
