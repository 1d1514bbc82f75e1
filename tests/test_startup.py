"""What a run computes outside its steps, taken once where it cannot change: the probe of the base that every adapter
save keeps (adapter.weights_probe: its base's sums, in adapter.BASE_SUMS) equals a fresh one bit for bit, is taken
again where the model's base changed (a write in place, a tensor replaced, new storage, an NF4 weight's codes), and
goes with its model: a new run's model probes its own."""
import gc
import json
import weakref

import pytest
import torch

import adapter
from adapter import BASE_SUMS, weights_probe
from fixtures import random_params
from lorasp import LINEAR_TYPES, LoRASPLinear, apply_lorasp
from model import LlamaConfig, build_model
from quant import NF4Linear

CONFIG = LlamaConfig(n_layer=3, n_embd=64, n_head=4, n_kv_head=2, n_ffn=128)


def adapted(seed=0, nf4=False):
    """A tiny Llama of random weights (its linears NF4, as --quant nf4 loads them), LoRA-SP on q_proj and down_proj."""
    model = random_params(build_model(CONFIG), seed)
    for m in list(model.modules()) if nf4 else []:
        for k, c in list(m.named_children()):
            if type(c) is torch.nn.Linear and k != "lm_head":
                setattr(m, k, NF4Linear.from_linear(c))
    return apply_lorasp(model, ["q_proj", "down_proj"], r=4, alpha=8)


def probe(model):
    return weights_probe(model, LoRASPLinear, LINEAR_TYPES)


def fresh(model):
    """The probe computed afresh: nothing kept for the model."""
    BASE_SUMS.pop(model, None)
    return probe(model)


def train_b(model, seed):
    """B as if trained (the update's sums change; the base's do not)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRASPLinear):
                m.B_train.copy_(torch.randn(m.B_train.shape, generator=g) * 0.05)


@pytest.mark.parametrize("nf4", [False, True], ids=["fp32", "nf4"])
def test_the_base_is_probed_once_a_model_and_equals_a_fresh_probe(nf4, monkeypatch):
    """Three saves of a run (B trained between them): the base's sums taken at the first only; each probe equals one
    computed afresh, bit for bit (as the adapter's JSON writes it), its update the one B makes now."""
    model, taken = adapted(nf4=nf4), []
    sums = adapter._adapted_sums
    monkeypatch.setattr(adapter, "_adapted_sums", lambda a, update=False, read=None: (
        taken.append(update), sums(a, update, read))[1])
    probes = []
    for seed in (1, 2, 3):
        train_b(model, seed)
        probes.append(probe(model))
    assert taken == [False, True, True, True]                  # the base's once, the update's at every save
    assert len({json.dumps(p["update"]) for p in probes}) == 3
    assert json.dumps(probes[-1]) == json.dumps(fresh(model))
    assert json.dumps(probes[0]["base"]) == json.dumps(probes[-1]["base"])
    assert json.dumps(probes[0]["rest"]) == json.dumps(probes[-1]["rest"])


def bump_q(m):                                                 # model.layers.0.self_attn.q_proj's W, in place
    with torch.no_grad():
        m.model.layers[0].self_attn.q_proj.base.weight[0, 0] += 1


def new_q(m):                                                  # another tensor, as a load with assign=True puts
    q = m.model.layers[0].self_attn.q_proj.base
    q.weight = torch.nn.Parameter(q.weight.detach() * 1.5, requires_grad=False)


def new_storage(m):                                            # .data = ...: the same Parameter, other values
    norm = m.model.norm.weight
    norm.data = norm.detach() + 1


def loaded(m):                                                 # load_state_dict: copy_ into every tensor
    m.load_state_dict(adapted(seed=7).state_dict())


def nf4_codes(m):                                              # an NF4 weight's codes written in place
    m.model.layers[2].mlp.down_proj.base.weight.codes[:8] ^= 0x11


@pytest.mark.parametrize("change", [bump_q, new_q, new_storage, loaded, nf4_codes])
def test_a_changed_base_is_probed_again(change):
    """A base tensor the probe reads, changed between two saves (a W, a norm, an NF4 weight; in place, replaced, new
    storage, a state dict loaded): the second probe is the changed base's, equal to a fresh one, not the one kept."""
    model = adapted(nf4=change is nf4_codes)
    before = probe(model)
    change(model)
    after = probe(model)
    assert json.dumps(after) == json.dumps(fresh(model))
    assert (after["base"], after["rest"]) != (before["base"], before["rest"])


def test_the_kept_sums_go_with_their_model():
    """BASE_SUMS holds no model: a run's model freed, its entry goes with it; the next run's model (other weights)
    probes its own base."""
    gc.collect()
    n = len(BASE_SUMS)
    model = adapted(seed=0)
    first = probe(model)
    assert len(BASE_SUMS) == n + 1
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None and len(BASE_SUMS) == n
    other = adapted(seed=5)
    assert probe(other)["base"] != first["base"]
    assert json.dumps(probe(other)) == json.dumps(fresh(other))
