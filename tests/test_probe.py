"""The base an adapter goes on, known by its weights (adapter.weights_probe, probe_verdict), not by its files: a merged
export copied or converted without lorasp_merged.json is refused (its update would count twice), the same base in
another layout or dtype is the same weights (a note), another base is warned about as before, and an adapter saved
without a probe behaves as before. The distances are measured on tiny Llama, GPT-2, T5 and BERT models: a
re-conversion's rounding, an NF4 base and a trained update stay apart by the margins PROBE_TOL leaves."""
import json
import re
import shutil
import subprocess
import sys

import pytest
import torch

import eval as E
import export
import generate
import train
from adapter import EXTRAS_FILE, PROBE_TOL, probe_verdict, weights_probe
from checkpoint import load_safetensors, read_safetensors_header, save_safetensors
from fetch_real import path
from fixtures import flags, random_params, tiny  # noqa: F401  (tiny: a fixture)
from lorasp import LINEAR_TYPES, LoRASPLinear, adapter_base, apply_lorasp, merge_lorasp
from model import EncoderConfig, GPT2Config, LlamaConfig, T5Config, build_model, load_pretrained, save_pretrained
from quant import NF4Linear

TWICE = "is already merged into --model "


def verdict(model, probe):
    return probe_verdict(model, probe, LoRASPLinear, LINEAR_TYPES)


def rounded(model, dtype):
    """model with every parameter rounded to dtype and back: a file written in dtype, read as float32."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).float())
    return model


CONFIGS = [LlamaConfig(n_layer=3, n_embd=64, n_head=4, n_kv_head=2, n_ffn=128), GPT2Config(n_layer=3, n_embd=64,
           n_head=4), EncoderConfig(n_layer=3, n_embd=64), T5Config(d_model=64, d_kv=16, d_ff=128, num_layers=2,
                                                                    num_heads=4)]
TARGETS = {"llama": ["q_proj", "down_proj"], "gpt2": ["c_attn", "c_fc"], "bert": ["query", "output.dense"],
           "t5": ["q", "wo"]}


def as_if_trained(config, scale):
    """(the adapter on config's model (random weights, seed 0) with B drawn at `scale` (0: untrained), its probe, and
    `onto`: the adapter loaded onto another model, as eval.py does: the same seeds, the same masks)."""
    targets = TARGETS[config.model_type]
    trained = apply_lorasp(random_params(build_model(config), 0), targets, r=4, alpha=8)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in trained.modules():
            if isinstance(m, LoRASPLinear):
                m.B_train.copy_(torch.randn(m.B_train.shape, generator=g) * scale)
    ours = {n: m for n, m in trained.named_modules() if isinstance(m, LoRASPLinear)}

    def onto(model):
        model = apply_lorasp(model, targets, r=4, alpha=8)
        for n, m in model.named_modules():
            if isinstance(m, LoRASPLinear):
                m.load_dense(ours[n].lora_A, ours[n].lora_B)
        return model
    return trained, weights_probe(trained, LoRASPLinear, LINEAR_TYPES), onto


@pytest.mark.parametrize("config", CONFIGS, ids=["llama", "gpt2", "bert", "t5"])
def test_rounding_a_trained_update_and_nf4_stay_apart_by_the_margins(config):
    """On each kind of model, an adapter as if trained (B of 0.05: an update a few times PROBE_TOL, smaller than the
    demo's 39.5%): the same base, or it rounded to bf16 or fp16, is 'same' within PROBE_TOL / 4; the base with the
    update merged (fp32, or then rounded to bf16) is 'merged', as close; the NF4 base and other weights are 'other'."""
    trained, probe, onto = as_if_trained(config, 0.05)
    assert len(probe["base"]) + len(probe["update"]) + 2 * len(probe["rest"]) < 400       # a few hundred floats

    def nf4(model):                                            # its linears NF4, as --quant nf4 loads them
        for n, m in list(model.named_modules()):
            for k, c in list(m.named_children()):
                if type(c) is torch.nn.Linear:
                    setattr(m, k, NF4Linear.from_linear(c))
        return model
    base = lambda seed=0: random_params(build_model(config), seed)  # noqa: E731
    got = {case: verdict(onto(model), probe) for case, model in (
        ("fp32", base()), ("bf16", rounded(base(), torch.bfloat16)), ("fp16", rounded(base(), torch.float16)),
        ("merged fp32", merge_lorasp(onto(base()), torch.float32)),
        ("merged bf16", rounded(merge_lorasp(onto(base()), torch.float32), torch.bfloat16)),
        ("nf4", nf4(base())), ("other", base(5)))}
    print({k: (v, {x: round(d, 5) if isinstance(d, float) else d for x, d in seen.items() if x != "layers"})
           for k, (v, seen) in got.items()})
    assert {k: v for k, (v, _) in got.items()} == {"fp32": "same", "bf16": "same", "fp16": "same", "merged fp32":
                                                   "merged", "merged bf16": "merged", "nf4": "other", "other": "other"}
    assert max(got[k][1]["same"] for k in ("fp32", "bf16", "fp16")) < PROBE_TOL / 4
    assert max(got[k][1]["merged"] for k in ("merged fp32", "merged bf16")) < PROBE_TOL / 4
    assert got["fp32"][1]["update"] > 3 * PROBE_TOL


@pytest.mark.parametrize("config", CONFIGS, ids=["llama", "gpt2", "bert", "t5"])
@pytest.mark.parametrize("scale", [0.005, 0.01])
def test_an_update_under_2_percent_of_w_v_is_told_apart_where_it_passes_the_rounding(config, scale):
    """An update of 0.4-1.5% of W v (B of 0.005, 0.01: a run's first steps at a usual lr; lorasp's tiny Llama at --lr
    3e-4, one step: 0.7%): the base in fp32 or bf16 is 'same', the base with it merged (fp32, bf16) 'merged'. Before,
    all four had no verdict (the two had to be 2 PROBE_TOL apart): export.py's merge copied without its record was
    scored with the update twice, and the same weights in a .bin were warned about as other files."""
    _, probe, onto = as_if_trained(config, scale)
    base = lambda: random_params(build_model(config), 0)  # noqa: E731
    got = {case: verdict(onto(model), probe) for case, model in (
        ("fp32", base()), ("bf16", rounded(base(), torch.bfloat16)),
        ("merged fp32", merge_lorasp(onto(base()), torch.float32)),
        ("merged bf16", rounded(merge_lorasp(onto(base()), torch.float32), torch.bfloat16)))}
    print({k: (v, {x: round(d, 5) for x, d in seen.items() if x != "layers"}) for k, (v, seen) in got.items()})
    assert {k: v for k, (v, _) in got.items()} == {"fp32": "same", "bf16": "same", "merged fp32": "merged",
                                                   "merged bf16": "merged"}
    assert 0.003 < got["fp32"][1]["update"] < 2 * PROBE_TOL


def test_no_update_is_the_same_weights_and_one_within_the_rounding_has_no_verdict():
    """B still 0 (an adapter saved at step 0): base + 0 is the base, merged or not: 'same' (was no verdict, and where
    the files differ "its scores here may not be the run's"). An update of 0.01% of W v against bf16's rounding of
    0.17%: nothing tells the base from the merge (no verdict); in F32 the update alone is the difference: told."""
    config = CONFIGS[0]
    base = lambda: random_params(build_model(config), 0)  # noqa: E731
    _, probe, onto = as_if_trained(config, 0)
    assert [verdict(onto(m), probe)[0] for m in (base(), rounded(base(), torch.bfloat16))] == ["same", "same"]
    _, probe, onto = as_if_trained(config, 1e-4)
    got = [verdict(onto(m), probe) for m in (rounded(base(), torch.bfloat16), rounded(merge_lorasp(onto(base()),
                                                                                       torch.float32), torch.bfloat16),
                                             base(), merge_lorasp(onto(base()), torch.float32))]
    assert [v for v, _ in got] == [None, None, "same", "merged"], got
    assert got[0][1]["update"] < 0.001 < got[0][1]["same"]


def ppl(capsys, model, adapter, data):
    """eval.py --task perplexity: (its perplexity, stderr)."""
    capsys.readouterr()
    E.main(["--task", "perplexity", "--model", str(model), "--adapter", str(adapter), "--data", str(data)])
    out, err = capsys.readouterr()
    return json.loads(out.strip().splitlines()[-1])["perplexity"], err


def weights_only(folder, to):
    """The merged folder's weights and config and tokenizer files, copied without lorasp_merged.json."""
    shutil.copytree(folder, to, ignore=shutil.ignore_patterns("lorasp_merged.json"))
    return to


def convert_hf_to_gguf(folder, gguf, outtype):
    """llama.cpp's own converter (tests/fetch_real.py fetches it), as users run it."""
    done = subprocess.run([sys.executable, path("llama.cpp", "convert", "convert_hf_to_gguf.py"), str(folder),
                           "--outtype", outtype, "--outfile", str(gguf)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return gguf


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):  # noqa: F811
    """(a train.py run's adapter on the tiny Llama, its held-out records, the folder export.py merged it into)."""
    d = tmp_path_factory.mktemp("run")
    train.main(flags(tiny, d / "run", "--max-steps", "4"))
    export.main(["--model", tiny[0], "--adapter", str(d / "run" / "adapter"), "--out", str(d / "merged"), "--dtype",
                 "fp32"])
    return d / "run" / "adapter", d / "run" / "heldout.jsonl", d / "merged"


def test_a_merged_export_copied_or_converted_without_its_record_is_refused(run, tiny, tmp_path, capsys):  # noqa: F811
    """export.py's folder, its files copied without lorasp_merged.json, also in bf16, and converted to a GGUF (F32,
    F16) by llama.cpp's converter: eval.py, generate.py and export.py refuse --adapter the adapter merged into it,
    naming the base it trained on (before: W + 2 (alpha/r) B A scored, exit 0, with a warning of other base files)."""
    adapter, held, merged = run
    export.main(["--model", tiny[0], "--adapter", str(adapter), "--out", str(tmp_path / "bf16"), "--dtype", "bf16"])
    bare = convert_hf_to_gguf(merged, tmp_path / "merged.gguf", "f32")
    for model in (weights_only(merged, tmp_path / "copy"), weights_only(tmp_path / "bf16", tmp_path / "copy16"),
                  bare, convert_hf_to_gguf(merged, tmp_path / "merged.f16.gguf", "f16")):
        said = (f"--adapter {adapter} {TWICE}{model}: its weights are the base it trained on plus its update")
        give = f"applying it again doubles its update: give --model {tiny[0]} (the original base) or leave out " \
            "--adapter"
        for command in (lambda: E.main(["--task", "perplexity", "--model", str(model), "--adapter", str(adapter),
                                        "--data", str(held)]),
                        lambda: generate.main(argv=["--model", str(model), "--adapter", str(adapter)]),
                        lambda: export.main(["--model", str(model), "--adapter", str(adapter), "--out",
                                             str(tmp_path / "twice")])):
            with pytest.raises(SystemExit) as e:
                command()
            assert said in str(e.value.code) and give in str(e.value.code), e.value.code
    assert not (tmp_path / "twice").exists()


def test_the_same_base_in_another_layout_is_a_note_and_scores_the_same(run, tiny, tmp_path, capsys):  # noqa: F811
    """The tiny base re-written as pytorch_model.bin, as shards, and in bf16: the same weights, a note (was 'its
    scores here may not be the run's'); the .bin and the shards score the run's perplexity exactly."""
    adapter, held, _ = run
    want, err = ppl(capsys, tiny[0], adapter, held)
    assert "note" not in err and "warning" not in err, err
    model = load_pretrained(tiny[0], dtype=torch.float32)
    layouts = {"bin": tmp_path / "bin", "shards": tmp_path / "shards", "bf16": tmp_path / "bf16"}
    for d in layouts.values():
        shutil.copytree(tiny[0], d, ignore=shutil.ignore_patterns("model*.safetensors*"))
    torch.save(load_safetensors(f"{tiny[0]}/model.safetensors"), layouts["bin"] / "pytorch_model.bin")
    save_pretrained(model, layouts["shards"], shard_size=20_000)
    save_pretrained(model.to(torch.bfloat16), layouts["bf16"])
    assert len(list(layouts["shards"].glob("model-*.safetensors"))) > 2
    for kind, d in layouts.items():
        got, err = ppl(capsys, d, adapter, held)
        assert f"note: --model {d}: other files than --adapter {adapter} trained on (another layout, dtype or " \
               "conversion), the same weights (" in err and "warning" not in err, (kind, err)
        assert got == want if kind != "bf16" else got == pytest.approx(want, rel=1e-2)


def test_another_base_is_warned_about_and_an_adapter_without_a_probe_behaves_as_before(run, tiny, tmp_path,  # noqa
                                                                                    capsys):
    """Another base (one q_proj, or one norm, changed): today's warning. An adapter saved before the probe, on the
    merged copy: scored with the warning alone, as before (nothing to know the merge by)."""
    adapter, held, merged = run
    for name in ("model.layers.1.self_attn.q_proj.weight", "model.norm.weight"):
        other = shutil.copytree(tiny[0], tmp_path / name)
        sd = load_safetensors(other / "model.safetensors")
        sd[name] += 0.1 * torch.randn(sd[name].shape, generator=torch.Generator().manual_seed(0))
        save_safetensors(sd, other / "model.safetensors")
        _, err = ppl(capsys, other, adapter, held)
        assert f"warning: --adapter {adapter} trained on a base whose files differ from {other}'s" in err, err
        assert "note: --model" not in err, err
    old = shutil.copytree(adapter, tmp_path / "old")
    sp = json.loads(read_safetensors_header(str(old / EXTRAS_FILE))[1]["lorasp"])
    del sp["base"]["probe"]
    save_safetensors(load_safetensors(str(old / EXTRAS_FILE)), str(old / EXTRAS_FILE), metadata={
        "lorasp": json.dumps(sp)})
    assert "probe" not in adapter_base(old) and adapter_base(adapter)["probe"]
    twice, err = ppl(capsys, weights_only(merged, tmp_path / "copy"), old, held)
    once, _ = ppl(capsys, tiny[0], adapter, held)
    assert f"warning: --adapter {old} trained on a base whose files differ" in err and twice != pytest.approx(once)


def test_the_probe_reads_the_first_and_last_layer_of_each_kind_and_every_other_tensor(tiny):  # noqa: F811
    """The probe reads the first and last adapted layer of each kind (q_proj and v_proj of the first and last block),
    every other tensor but the linears between the first and last of their kind; an adapter whose B is 0 (untrained)
    is the same weights merged or not: 'same'."""
    model = apply_lorasp(load_pretrained(tiny[0]), ["q_proj", "v_proj"], r=4)
    probe = weights_probe(model, LoRASPLinear, LINEAR_TYPES)
    assert probe["adapted"] == [f"model.layers.{i}.self_attn.{k}_proj" for i in (0, 1) for k in "qv"]
    assert {"model.norm.weight", "model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight",
            "model.layers.1.mlp.up_proj.weight"} <= set(probe["rest"])
    assert not any(re.search(r"\.(q|v)_proj\.", n) for n in probe["rest"])
    assert verdict(model, probe)[0] == "same" and verdict(model, probe)[1]["update"] == 0


def test_export_hands_back_the_pages_of_spilled_weights_only(tiny, tmp_path, monkeypatch):  # noqa: F811
    """export.py's model holds its weights as memory-mapped copies (load_pretrained's spill): the probe hands each one's
    pages back once read (they come back from the file, the same values); a tensor no spill file holds is left as it
    is (release would have zeroed it)."""
    import checkpoint
    import evalcli
    (tmp_path / "spill").mkdir()
    model = load_pretrained(tiny[0], dtype=torch.float32, spill=str(tmp_path / "spill"))
    want = load_pretrained(tiny[0], dtype=torch.float32).state_dict()
    released = []
    monkeypatch.setattr(evalcli, "release", lambda t: released.append(t) or checkpoint.release(t))
    read, mine = evalcli.handed_back(str(tmp_path / "spill")), torch.randn(1 << 16)
    kept = mine.clone()
    for t in [*model.state_dict().values(), mine]:
        read(t)
    assert len(released) == len(want) and all(t is not mine for t in released)
    assert torch.equal(mine, kept) and evalcli.handed_back(None) is None
    assert all(torch.equal(t, want[k]) for k, t in model.state_dict().items())


def test_a_run_with_a_small_update_knows_its_merge_and_its_base(tiny, tmp_path, capsys):  # noqa: F811
    """One step at --lr 3e-4 (an update of 0.7% of W v): export.py's merge of it copied without lorasp_merged.json is
    refused, and the base as pytorch_model.bin is the same weights (a note). Both had no verdict (under the 2% asked
    before): the copy was scored with the update twice, the .bin warned about as other files. At --lr 1e-4 (0.24%) on
    the base rounded to bf16 (0.17%) the two cannot be told apart: the warning says so and what to do."""
    for lr in ("3e-4", "1e-4"):
        train.main(flags(tiny, tmp_path / lr, "--max-steps", "1", "--lr", lr))
    adapter, held = tmp_path / "3e-4" / "adapter", tmp_path / "3e-4" / "heldout.jsonl"
    export.main(["--model", tiny[0], "--adapter", str(adapter), "--out", str(tmp_path / "merged"), "--dtype", "fp32"])
    copy = weights_only(tmp_path / "merged", tmp_path / "copy")
    with pytest.raises(SystemExit, match=f"--adapter {adapter} {TWICE}{copy}: its weights are the base it trained on "
                       r"plus its update \(W \+ \(alpha/r\) B A, to 0.00%, where the update is 0.7\d% of W v\)"):
        E.main(["--task", "perplexity", "--model", str(copy), "--adapter", str(adapter), "--data", str(held)])
    model, bf16 = load_pretrained(tiny[0], dtype=torch.float32), tmp_path / "bf16"
    shutil.copytree(tiny[0], tmp_path / "bin", ignore=shutil.ignore_patterns("model*.safetensors*"))
    torch.save(load_safetensors(f"{tiny[0]}/model.safetensors"), tmp_path / "bin" / "pytorch_model.bin")
    _, err = ppl(capsys, tmp_path / "bin", adapter, held)
    assert f"note: --model {tmp_path / 'bin'}: other files than --adapter {adapter} trained on" in err and \
        "warning" not in err, err
    shutil.copytree(tiny[0], bf16, ignore=shutil.ignore_patterns("model*.safetensors*"))
    save_pretrained(model.to(torch.bfloat16), bf16)
    small = tmp_path / "1e-4" / "adapter"
    _, err = ppl(capsys, bf16, small, held)
    assert re.search(rf"warning: --model {bf16} holds the weights --adapter {small} trained on \(0.1\d% apart where "
                     r"probed\) or they with its update merged in \(0.\d\d% apart\): its update, 0.2\d% of W v, is "
                     r"too small against the files' rounding to tell which; if --model is export.py's merge of it "
                     r"\(copied or converted without lorasp_merged.json\), its update counts twice here: give the base "
                     "it trained on", err) and "may not be the run's" not in err, err
