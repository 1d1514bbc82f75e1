"""What a student who edits lorasp.py or quant.py after reading their docstrings meets: one fact, one place."""
import pytest
import torch.nn as nn

import lorasp
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
