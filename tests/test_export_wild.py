"""export.py and generate.py on what a careful user brings after training, each against an independent reference:
adapters written by peft itself (its LoraConfig options; a LoRA or a trained copy on a tied head) exported and read by
transformers, to the logits of PEFT's own model; a batch of prompts of different lengths, left-padded, against each
prompt alone and transformers' generate. Tiny random models, a few seconds each."""
import copy
import subprocess
import sys
import warnings

import pytest
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model

import generate as G
import model as M
from fixtures import random_params

V = 96
ROOT = __file__.rsplit("/tests/", 1)[0]


def base(directory, tied):
    """A 3-layer random Llama saved in transformers' layout (tied or not), and transformers' fp32 model of it."""
    cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                                   tie_word_embeddings=tied)
    random_params(transformers.LlamaForCausalLM(cfg), 0).save_pretrained(directory)
    return transformers.LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


def peft_adapter(hf, directory, **lora):
    """PEFT's adapter on hf, saved by PEFT, with B (PEFT's init: 0) and any trained copies made random so they matter;
    PEFT's own model of it, loaded back from the folder as PEFT users load it."""
    peft = get_peft_model(copy.deepcopy(hf), LoraConfig(r=4, lora_alpha=8, **lora))
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n or ".modules_to_save." in n:
                p.add_(torch.randn_like(p) * 0.5)
    peft.save_pretrained(directory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PeftModel.from_pretrained(copy.deepcopy(hf), directory).eval()


def exported(tmp_path, adapter):
    """python export.py --model base --adapter ADAPTER --out out --dtype fp32, as a user runs it; transformers' model of
    the folder and what export.py said on stderr."""
    done = subprocess.run([sys.executable, "export.py", "--model", tmp_path / "base", "--adapter", adapter, "--out",
                           tmp_path / "out", "--dtype", "fp32"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval(), done.stderr


@pytest.mark.parametrize("tied,lora", [
    (False, dict(target_modules=["q_proj", "v_proj", "down_proj"], use_rslora=True, rank_pattern={"v_proj": 6},
                 alpha_pattern={"down_proj": 3}, layers_to_transform=[0, 2])),
    (True, dict(target_modules=["q_proj"], modules_to_save=["embed_tokens"])),
    (True, dict(target_modules=["q_proj"], modules_to_save=["lm_head"])),
    ], ids=["rslora-rank_pattern-alpha_pattern-layers_to_transform", "tied-embed_tokens-saved", "tied-lm_head-saved"])
def test_a_peft_adapter_exports_to_peft_merge_and_unload(tmp_path, tied, lora):
    """PEFT's own adapter (per-layer r and alpha, rsLoRA's alpha / sqrt(r); a trained copy of one of a tied pair,
    which PEFT keeps apart from its partner) exported: transformers on DIR gives PEFT's merged model's logits."""
    hf = base(tmp_path / "base", tied)
    peft = peft_adapter(hf, tmp_path / "adapter", **lora)
    ours, _ = exported(tmp_path, tmp_path / "adapter")
    x = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = peft.merge_and_unload()(x).logits
        assert (want - hf(x).logits).abs().max() > 1                        # the adapter matters
        torch.testing.assert_close(ours(x).logits, want, atol=1e-5, rtol=0)


def test_a_peft_lora_on_a_tied_lm_head_exports_the_model_peft_trained(tmp_path):
    """LoRA on lm_head of a tied Llama, written by PEFT: DIR (untied, as export.py says) gives the logits of PEFT's
    model as it trained and ran, A and B beside the head. PEFT's merge_and_unload folds B A into the one tied tensor,
    so its merged model changes the input embedding too: other logits (about 9 off here), which export.py does not
    copy."""
    hf = base(tmp_path / "base", True)
    peft = peft_adapter(hf, tmp_path / "adapter", target_modules=["q_proj", "lm_head"])
    ours, err = exported(tmp_path, tmp_path / "adapter")
    assert "changes lm_head, tied to the embedding" in err and "written untied" in err
    x = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = peft(x).logits                                              # PEFT's model, unmerged
        torch.testing.assert_close(ours(x).logits, want, atol=1e-5, rtol=0)
        merged = peft.merge_and_unload()
        assert (merged(x).logits - want).abs().max() > 1                   # PEFT's merge: another model
        assert (merged.model.embed_tokens.weight - hf.model.embed_tokens.weight).abs().max() > 0.1


def test_a_left_padded_batch_generates_each_prompt_as_alone_and_as_transformers(tmp_path):
    """Five prompts of 1 to 12 tokens, left-padded into one batch, greedy: each row's new tokens are those of the
    prompt generated alone, and those of transformers' generate on it alone (fp32: in bf16 the two implementations'
    roundings differ, and a near tie can go either way)."""
    hf = base(tmp_path / "base", False)
    ours = M.load_pretrained(tmp_path / "base", dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    rows = [torch.randint(1, V, (n,), generator=g) for n in (3, 9, 5, 1, 12)]
    T = max(len(r) for r in rows)
    ids = torch.stack([torch.cat([torch.zeros(T - len(r), dtype=torch.long), r]) for r in rows])
    mask = torch.stack([torch.arange(T) >= T - len(r) for r in rows]).long()
    batch = G.generate(ours, ids, 15, attention_mask=mask)[:, T:]
    for i, r in enumerate(rows):
        alone = G.generate(ours, r[None], 15)[0, len(r):]
        ref = hf.generate(r[None], max_new_tokens=15, do_sample=False, pad_token_id=0)[0, len(r):]
        assert torch.equal(batch[i], alone) and torch.equal(alone, ref), (i, batch[i], alone, ref)
