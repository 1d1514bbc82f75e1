"""GPT-2 as a classifier (the second paper's GPT-2 runs on SST-2 and GLUE): the `score` head on the last real token
against transformers' GPT2ForSequenceClassification on the same random weights (right padding), and
`train.py --model <gpt2> --data glue/sst2` end to end: the head saved beside the adapter (PEFT's modules_to_save),
eval.py reproducing the dev metrics training reported."""
import json

import pytest
import torch
import transformers
from tokenizers import ByteLevelBPETokenizer

import eval as E
import model as M
import train
from fixtures import random_params
from test_train_tasks import FILL, NEG, POS, glue_dir, run  # noqa: F401  (glue_dir: a fixture)


def test_score_head_matches_transformers(tmp_path):
    c = transformers.GPT2Config(vocab_size=90, n_positions=32, n_embd=32, n_layer=2, n_head=4, num_labels=3,
                                pad_token_id=0)
    ref = random_params(transformers.GPT2ForSequenceClassification(c), 0)
    ref.save_pretrained(tmp_path)
    ours = M.load_pretrained(tmp_path)
    assert ours.config.num_labels == 3 and M.GPT2Config.from_hf(ours.config.to_hf()) == ours.config
    ids = torch.randint(1, 90, (3, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 6:], mask[2, 2:] = 0, 0
    ids[mask == 0] = 0  # right padding with pad_token_id: HF's last non-pad token is our last real one
    want = ref(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ours.classify(ids, mask), want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.classify(ids[:1]), want[:1], atol=1e-4, rtol=1e-4)  # no mask: the last token


def test_gpt2_trains_on_sst2_and_eval_reproduces_dev_metrics(glue_dir, tmp_path, capsys):  # noqa: F811
    d = tmp_path / "gpt2"
    d.mkdir()
    tk = ByteLevelBPETokenizer()
    tk.train_from_iterator([" ".join(POS + NEG + FILL)] * 20, vocab_size=300, min_frequency=1,
                           special_tokens=["<|endoftext|>"])
    tk.save_model(str(d))
    vocab = json.loads((d / "vocab.json").read_text())
    torch.manual_seed(0)
    M.save_pretrained(M.build_model(M.GPT2Config(vocab_size=len(vocab), n_positions=48, n_embd=32)), d)
    # --dtype fp32: eval.py computes in fp32 (auto would pick bf16 on a CPU with bf16 units)
    summary, out = run(train.main, ["--model", str(d), "--data", "glue/sst2", "--data-dir", str(glue_dir), "--out",
                                    str(tmp_path / "run"), "--batch-size", "8", "--grad-accum", "1", "--seq-len", "32",
                                    "--lr", "3e-2", "--rank", "4", "--max-steps", "12", "--eval-every", "6",
                                    "--log-every", "6", "--save-every", "0", "--dtype", "fp32"], capsys)
    assert summary["head_params"] == 32 * 2 and f"adapter + {32 * 2:,} head" in out  # score: C x 2, no bias
    per_block = 4 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32)) // 2  # c_attn, attn.c_proj, c_fc, mlp.c_proj
    assert summary["trainable_params"] == 64 + 2 * per_block  # 2 blocks, r=4, keep 0.5, + the head
    cfg = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert cfg["modules_to_save"] == ["score"] and cfg["task_type"] == "SEQ_CLS"
    result, _ = run(E.main, ["--task", "glue/sst2", "--model", str(d), "--adapter", str(tmp_path / "run" / "adapter"),
                             "--data-dir", str(glue_dir), "--seq-len", "32", "--batch-size", "8"], capsys)
    assert result["dev"] == pytest.approx(summary["dev"], abs=1e-6, rel=0)
