"""load_pretrained's build on the meta device: no initialiser runs (checkpoint.MetaInit), so torch's meta normal_
does not import torch._dynamo (eval.py's start: 2.3 s of imports on a loaded 2-core machine); the weights a checkpoint
fills, and any real tensor built under MetaInit, stay what they were."""
import os
import subprocess
import sys

import torch

import model as M
from checkpoint import MetaInit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["llama-tiny", "gpt2-tiny", "roberta-tiny", "bert-tiny", "t5-tiny"]


def test_load_pretrained_imports_no_dynamo_and_loads_the_same_weights(tmp_path):
    """A fresh process loads a saved checkpoint: load_pretrained's meta build imported torch._dynamo (nn.Embedding's
    N(0, 1) fill on meta runs torch._refs.normal_); now it does not, and the loaded weights are the saved ones."""
    torch.manual_seed(0)
    saved = M.build_model("llama-tiny")
    M.save_pretrained(saved, tmp_path)
    code = ("import sys, torch, model\n"
            "loaded = model.load_pretrained(sys.argv[1])\n"
            "torch.save(loaded.state_dict(), sys.argv[1] + '/loaded.pt')\n"
            "print('dynamo' if 'torch._dynamo' in sys.modules else 'no dynamo')\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == "no dynamo"
    loaded, want = torch.load(tmp_path / "loaded.pt"), saved.state_dict()
    assert loaded.keys() == want.keys() and all(torch.equal(loaded[k], want[k]) for k in want)


def test_meta_init_builds_meta_models_without_dynamo_and_real_ones_as_ever():
    """Under MetaInit every tiny architecture builds on meta without importing torch._dynamo (a fresh process), and
    on the CPU draws the same numbers as without it: every tensor, and the generator's state after, equal."""
    code = ("import sys, torch, model\nfrom checkpoint import MetaInit\n"
            "with torch.device('meta'), MetaInit():\n"
            f"    built = [model.MODELS[c.model_type](c) for c in map(model.get_config, {TINY!r})]\n"
            "print('dynamo' if 'torch._dynamo' in sys.modules else 'no dynamo')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.split("\n")[-2] == "no dynamo", out.stderr
    for preset in TINY:
        config = M.get_config(preset)
        torch.manual_seed(0)
        with MetaInit():
            ours = M.MODELS[config.model_type](config).state_dict()
        after = torch.random.get_rng_state()
        torch.manual_seed(0)
        plain = M.build_model(config).state_dict()
        assert torch.equal(after, torch.random.get_rng_state()), preset
        assert ours.keys() == plain.keys() and all(torch.equal(ours[k], plain[k]) for k in ours), preset
