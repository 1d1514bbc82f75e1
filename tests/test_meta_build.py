"""Building on the meta device: no initialiser runs (checkpoint.MetaInit), so torch's meta normal_ does not import
torch._dynamo (~0.65 s of every train.py / eval.py start: the memory plan's build and load_pretrained's); weights a
checkpoint fills and the seeded random init stay what they were."""
import os
import subprocess
import sys

import torch

import model as M

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["llama-tiny", "gpt2-tiny", "roberta-tiny", "bert-tiny", "t5-tiny"]


def test_a_meta_build_imports_no_dynamo_and_loads_the_same_weights(tmp_path):
    """A fresh process builds every tiny preset on the meta device and loads a saved checkpoint: torch._dynamo was
    imported by nn.Embedding's N(0, 1) fill on meta (torch._refs.normal_); now it is not, and the loaded weights are
    the saved ones."""
    torch.manual_seed(0)
    saved = M.build_model("llama-tiny")
    M.save_pretrained(saved, tmp_path)
    code = ("import sys, torch, model\n"
            "with torch.device('meta'):\n"
            f"    built = [model.build_model(p) for p in {TINY!r}]\n"
            "loaded = model.load_pretrained(sys.argv[1])\n"
            "torch.save(loaded.state_dict(), sys.argv[1] + '/loaded.pt')\n"
            "print('dynamo' if 'torch._dynamo' in sys.modules else 'no dynamo')\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == "no dynamo"
    loaded, want = torch.load(tmp_path / "loaded.pt"), saved.state_dict()
    assert loaded.keys() == want.keys() and all(torch.equal(loaded[k], want[k]) for k in want)


def test_the_seeded_random_init_is_the_one_without_meta_init():
    """build_model (under MetaInit) draws the same numbers as the model classes built without it, as before: every
    tensor and the generator's state after it equal."""
    for preset in TINY:
        config = M.get_config(preset)
        torch.manual_seed(0)
        ours, after = M.build_model(preset).state_dict(), torch.random.get_rng_state()
        torch.manual_seed(0)
        plain = M.MODELS[config.model_type](config).state_dict()
        assert torch.equal(after, torch.random.get_rng_state()), preset
        assert ours.keys() == plain.keys() and all(torch.equal(ours[k], plain[k]) for k in ours), preset
