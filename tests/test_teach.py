"""What a student who edits lorasp.py or quant.py after reading their docstrings meets: one fact, one place."""
import inspect

import pytest
import torch.nn as nn

import lorasp
import quant
from lorasp import LoRASPLinear


def test_a_mask_unit_drawn_but_not_laid_out_is_refused_not_laid_as_columns(monkeypatch):
    """A student adds a structure "row" (A trains whole rows) as UNITS and DRAWN invite: DRAWN["rows"] counts r rows.
    pick laid every unit but "entries" as columns: on a square A (r = in) the layer drew whole columns without a word
    (elsewhere torch's "expanded size" error). Now the unit is refused by name until SPREAD says how rows lie."""
    monkeypatch.setitem(lorasp.UNITS, "row", dict(A="rows", B="entries"))
    monkeypatch.setitem(lorasp.DRAWN, "rows", lambda shape: shape[0])
    with pytest.raises(NotImplementedError, match=r"mask unit 'rows' is in DRAWN .*, not in SPREAD"):
        LoRASPLinear(nn.Linear(16, 16), r=16, structure="row")
    monkeypatch.setitem(lorasp.SPREAD, "rows", lambda mask, shape: mask[:, None].expand(shape).clone())
    layer = LoRASPLinear(nn.Linear(16, 16), r=16, structure="row")
    rows = layer.mask_A.any(1)
    assert (layer.mask_A.all(1) | ~rows).all() and int(rows.sum()) == 8    # half of the rows, each one whole


def test_nf4s_block_size_is_one_constant():
    """64 was written twice, as quantize_nf4's default (what load_pretrained's NF4 uses) and NF4Linear.from_linear's: a
    student's 128 in one left the other at 64 without a word. Both now take quant.BLOCK_SIZE; help() still reads 64."""
    assert quant.BLOCK_SIZE == 64 and quant.BLOCK_SIZE in quant.BLOCK_SIZES
    for f in (quant.quantize_nf4, quant.NF4Linear.from_linear):
        assert inspect.signature(f).parameters["block_size"].default is quant.BLOCK_SIZE
        assert "block_size=64," in str(inspect.signature(f))
    assert quant.NF4Linear.from_linear(nn.Linear(8, 4)).weight.block_size == quant.BLOCK_SIZE
