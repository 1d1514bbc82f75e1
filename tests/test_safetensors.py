"""Our hand-written safetensors reader/writer against the reference `safetensors` package."""
import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from checkpoint import atomic_write, iter_safetensors, load_safetensors, read_safetensors_header, save_safetensors

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
