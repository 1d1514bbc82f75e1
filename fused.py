"""fused.py: LoRA-SP layers that read one input (q, k, v; gate, up) with one adapter matmul for their A's.

    h = x [A_q; A_k; A_v]^T          (N, r_q + r_k + r_v): one pass over x, not three
    y_q = W_q x + (alpha/r) h_q B_q^T, y_k = ..., y_v = ...   each B apart (a block-diagonal B would be mostly zeros):
                                                              the layer's own add_update, as in its forward

Backward then takes dL/dA of all three from one (R, N) x (N, in) product, and adds dL/dx's adapter term
g_h [A_q; A_k; A_v] into the bases' summed dL/dx with one addmm, where three layers make three passes over dL/dx.
The masks stay per matrix: each layer's A_eff is unpacked from its own packed entries (lorasp.unpack) before the
concatenation, so a frozen entry gets no gradient and cannot move, in either mode. The result is each layer's own
forward, up to the order in which fp32 sums are added (tests/test_fused.py). Left out: structure="column" (each
layer keeps its own columns of x) and layers with hooks or a forward of their own: those run as modules, as any other
module does. What it saves on the 134M step: `python bench/fused_adapters.py` (docs/benchmarks-7b.md, session 27).
"""
import torch
import torch.nn as nn

from lorasp import LoRASPLinear, _LoRAInput


def fusable(m):
    """A LoRASPLinear whose call is the plain forward: structure "element", no forward replaced on the instance, no
    forward or backward hooks of its own or global (nn.Module.__call__ runs those; project does not call it)."""
    g = nn.modules.module
    hooks = (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks, g._global_forward_hooks,
             g._global_forward_pre_hooks, g._global_backward_hooks, g._global_backward_pre_hooks)
    return type(m) is LoRASPLinear and m.cols is None and "forward" not in vars(m) and not any(hooks)


def project(x, *layers):
    """[layer(x) for layer in layers], the fusable LoRASPLinear layers among them (two or more) sharing one adapter
    input matmul. x: (..., in) -> each (..., out)."""
    group = [m for m in layers if fusable(m)]
    if len(group) < 2:
        return [m(x) for m in layers]
    A = torch.cat([m.dense("A") for m in group]).to(x.dtype)    # (R, in): each A_eff with its own mask
    x2, h = _LoRAInput.apply(x, A, None, True)                 # (N, in), (N, R)
    hs = dict(zip(map(id, group), h.split([m.r for m in group], 1)))   # (N, r) each, views of h
    out = []
    for m in layers:
        if id(m) not in hs:
            out.append(m(x))
            continue
        out.append(m.add_update(x2, hs[id(m)]).view(*x.shape[:-1], m.base.out_features))   # forward's second half
    return out
