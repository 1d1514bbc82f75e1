"""Real pretrained weights from the package index (fetched by tests/fetch_real.py) against transformers:
- SmolLM2-135M-Instruct as a GGUF (Q4_1 and Q8_0 blocks, GQA 9/3 heads, tied embeddings): the dequantized weights
  equal transformers' own GGUF loading (from_pretrained(..., gguf_file=...)), fp32 logits within 1e-4, and the
  greedy continuation of a fixed chat prompt token for token (our KV cache against HF's generate), and of a
  left-padded batch of chat prompts.
- NF4 of the real weights (QLoRA's 4-bit quantization of the dequantized GGUF): next-token top-1 agreement with fp32
  and the perplexity change on a fixed text, printed (`pytest -s`) and bounded.
- LoRA-SP on the NF4 base through train.py: a few steps on a tiny instruction set lower the loss.
- all-MiniLM-L6-v2 (BERT layout, safetensors + config.json + vocab.txt): hidden states vs transformers' BertModel.
"""
import json
import math

import pytest
import torch
import torch.nn.functional as F
import transformers

import data
import train
from fetch_real import path
from model import generate, load_pretrained, load_tokenizer
from quant import NF4Linear

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
PROSE = ("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined movable "
         "metal type, oil-based ink and a wooden press adapted from those used to make wine. Within fifty years, "
         "printers were at work in more than two hundred European cities, and the price of books fell so far that "
         "ordinary merchants could afford them. Scholars argue about how much the press changed the way people "
         "thought, but few doubt that it made the Reformation, the scientific revolution and the modern newspaper "
         "possible. Today the same story is often told about the internet.\n\nA recipe for bread needs only flour, "
         "water, salt and yeast. Mix them, knead the dough for ten minutes, and leave it somewhere warm until it has "
         "doubled in size. Shape the loaf, let it rise once more, then bake it in a hot oven for about forty minutes. "
         "The crust should be brown and the loaf should sound hollow when you tap its base. Let it cool before you "
         "cut it, or the crumb will be gummy.")


@pytest.fixture(scope="module")
def smol():
    """(our fp32 model, transformers' fp32 model from the same GGUF, our tokenizer)."""
    d = path("smollm2", GGUF).removesuffix(GGUF)
    ref = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF, dtype=torch.float32).eval()
    return load_pretrained(d), ref, load_tokenizer(d)


def test_smollm2_gguf_logits_match_transformers(smol):
    ours, ref, tok = smol
    c = ours.config
    assert (c.n_layer, c.n_embd, c.n_head, c.n_kv_head, c.n_ffn, c.vocab_size, c.tie_embeddings, c.rope_theta) == (
        30, 576, 9, 3, 1536, 49152, True, 100000.0)
    hf = ref.state_dict()
    for name, t in ours.state_dict().items():  # Q4_1 / Q8_0 dequantized bit for bit; q/k rows in HF's order
        assert torch.equal(t, hf[name]), name
    ids = torch.tensor([tok.encode(CHAT + PROSE[:200])])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), ref(ids).logits, atol=1e-4, rtol=0)


def test_smollm2_greedy_continuation_matches_transformers(smol):
    ours, ref, tok = smol
    ids = torch.tensor([tok.encode(CHAT)])
    out = generate(ours, ids, 24, eos_id=tok.eos_id)
    want = ref.generate(ids, max_new_tokens=24, do_sample=False, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    assert out.tolist() == want.tolist()
    assert "Paris" in tok.decode(out[0, ids.shape[1]:].tolist())  # the real weights, really loaded


def test_smollm2_left_padded_chat_batch_as_transformers(smol):
    """Three chat prompts of different lengths (special tokens in each) in one left-padded batch continue as
    transformers' generate continues them with the GGUF's EOS and pad: each row up to its <|im_end|>, then padding."""
    ours, ref, tok = smol
    enc = [tok.encode(CHAT.replace("What is the capital of France?", q)) for q in ("What is 2+2? Answer briefly.",
                                                                                  "Name a color.", "Hi")]
    T = max(map(len, enc))
    ids = torch.tensor([[0] * (T - len(e)) + e for e in enc])
    mask = torch.tensor([[0] * (T - len(e)) + [1] * len(e) for e in enc])
    want = ref.generate(ids, attention_mask=mask, max_new_tokens=24, do_sample=False)
    got = generate(ours, ids, 24, eos_id=tok.stops, attention_mask=mask, pad_id=ref.generation_config.pad_token_id)
    assert tok.stops == [ref.generation_config.eos_token_id] and torch.equal(got, want)
    assert (got[:, T:] == tok.stops[0]).any(1).sum() >= 2  # (rows ended early)

def test_smollm2_nf4_top1_agreement_and_perplexity(smol):
    ours, _, tok = smol
    nf4 = load_pretrained(path("smollm2", GGUF), quantize="nf4")
    assert sum(isinstance(m, NF4Linear) for m in nf4.modules()) == 30 * 7
    ids = torch.tensor([tok.encode(PROSE)])
    with torch.no_grad():
        a, b = ours(ids)[0, :-1], nf4(ids)[0, :-1]
    agree = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    ppl = [math.exp(F.cross_entropy(x, ids[0, 1:]).item()) for x in (a, b)]
    print(f"\nSmolLM2-135M NF4 vs fp32 on {ids.shape[1]} tokens: top-1 agreement {agree:.1%}, perplexity "
          f"{ppl[0]:.2f} -> {ppl[1]:.2f} ({ppl[1] / ppl[0] - 1:+.1%})")
    assert agree > 0.75 and ppl[1] / ppl[0] < 1.25  # bounds well outside what it measures (see the print)


def test_smollm2_lorasp_steps_lower_the_loss(tmp_path):
    task = tmp_path / "task.json"
    task.write_text(json.dumps(data.demo_records(24, seed=3)))
    train.main(["--model", path("smollm2", GGUF), "--data", str(task), "--quant", "nf4", "--lr", "2e-3",
                "--max-steps", "6", "--batch-size", "4", "--grad-accum", "1", "--seq-len", "128", "--val-fraction",
                "0", "--eval-every", "0", "--save-every", "0", "--log-every", "1", "--out", str(tmp_path / "out")])
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "out" / "metrics.jsonl")]
    print(f"\nSmolLM2-135M NF4 + LoRA-SP, {len(losses)} steps of 4 records: loss "
          + " ".join(f"{x:.2f}" for x in losses))
    assert len(losses) == 6 and sum(losses[-2:]) < 0.5 * sum(losses[:2])
    adapter = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"].endswith(GGUF) and adapter["r"] == 16


def test_minilm_hidden_states_match_transformers():
    d = path("minilm", "model.safetensors").removesuffix("model.safetensors")
    ours, tok = load_pretrained(d), load_tokenizer(d)
    ref = transformers.AutoModel.from_pretrained(d, dtype=torch.float32).eval()
    assert type(ref).__name__ == "BertModel" and ours.config.n_layer == 6 and ours.config.n_embd == 384
    pairs = [tok.encode_pair("A man is playing a guitar.", "Ein Mann spielt Gitarre — très bien!"),
             tok.encode_pair("Naïve café, 東京 and 42 % of ¿qué?")]
    T = max(len(i) for i, _ in pairs)
    ids = torch.tensor([i + [0] * (T - len(i)) for i, _ in pairs])
    types = torch.tensor([t + [0] * (T - len(t)) for _, t in pairs])
    mask = torch.tensor([[1] * len(i) + [0] * (T - len(i)) for i, _ in pairs])
    with torch.no_grad():
        h, want = ours(ids, mask, types), ref(input_ids=ids, attention_mask=mask, token_type_ids=types)
    real = mask.bool()  # padded positions are not compared (no one reads them)
    torch.testing.assert_close(h[real], want.last_hidden_state[real], atol=1e-4, rtol=0)


def test_smollm2_padded_prompts_and_windows_as_unpadded(smol):
    """The evaluations' CPU bf16 padding (data.bucket_length) on the real weights, in fp32 where it must change
    nothing: greedy answers from left-padded prompts (one at a time and three a batch) are the unpadded ones and
    transformers' generate on the same padded ids and mask; perplexity with the last windows right-padded is the
    unpadded one."""
    import eval as E
    ours, ref, tok = smol
    records = [{"instruction": q} for q in ("What is the capital of France?", "Name two colours.",
                                            "Write one sentence about the sea, the wind and the boats.", "Why?")]
    plain = E.generate_answers(ours, tok, records, 12)
    for batch_size in (1, 3):
        assert E.generate_answers(ours, tok, records, 12, batch_size, bucket=2048) == plain
    p = tok.encode(data.alpaca_prompt(records[1]))
    T = data.bucket_length(len(p), 2048)
    ids, mask = torch.tensor([[0] * (T - len(p)) + p]), torch.tensor([[0] * (T - len(p)) + [1] * len(p)])
    assert T > len(p)
    want = ref.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=tok.eos_id,
                        pad_token_id=tok.eos_id)[0, T:].tolist()
    assert plain[1] == tok.decode([t for t in want if t != tok.eos_id]).strip()
    docs = [(tok.encode(PROSE[:n]), 0) for n in (300, 700, 1100)]
    a, b = E.perplexity(ours, docs, seq_len=64, stride=48), E.perplexity(ours, docs, seq_len=64, stride=48, bucket=64)
    assert a[1] == b[1] and a[0] == pytest.approx(b[0], rel=1e-5)


def test_minilm_padded_windows_as_unpadded_and_as_transformers():
    """all-MiniLM-L6-v2 (BERT) on pairs padded to bucket lengths (data.collate, as evaluate_squad's windows): real
    tokens' hidden states as padded to the longest (fp32, 1e-5), and bf16 weights' as transformers' bf16 BertModel on
    the same padded batch (0.1 of |h| up to ~10)."""
    d = path("minilm", "model.safetensors").removesuffix("model.safetensors")
    tok = load_tokenizer(d)
    texts = [("Where is the boat?", "The boat is in the harbour, beside the old red lighthouse."),
             ("Who wrote it?", "A man wrote it."), ("What colour?", "Blue, green and a little grey in the winter.")]
    examples = [dict(zip(("input_ids", "token_type_ids"), tok.encode_pair(a, b)), labels=0) for a, b in texts]
    longest, padded = data.collate(examples, 0), data.collate(examples, 0, bucket=64)
    assert padded["input_ids"].shape[1] > longest["input_ids"].shape[1]
    keys = ("input_ids", "attention_mask", "token_type_ids")
    real = longest["attention_mask"].bool()
    for dtype in (torch.float32, torch.bfloat16):
        ours = load_pretrained(d, dtype=dtype)
        ref = transformers.AutoModel.from_pretrained(d, dtype=dtype).eval()
        with torch.no_grad():
            h = ours(*(padded[k] for k in keys))[:, :real.shape[1]][real].float()
            want = ref(**{k: padded[k] for k in keys}).last_hidden_state[:, :real.shape[1]][real].float()
            if dtype == torch.float32:
                torch.testing.assert_close(h, ours(*(longest[k] for k in keys))[real], atol=1e-5, rtol=0)
        torch.testing.assert_close(h, want, atol=1e-4 if dtype == torch.float32 else 0.1, rtol=0)


def test_fetch_real_help_prints_usage_and_fetches_nothing(tmp_path):
    """`python tests/fetch_real.py --help` started pip and npm downloads into $LORASP_REAL (it read no arguments)."""
    import os, subprocess, sys  # noqa: E401
    env = dict(os.environ, LORASP_REAL=str(tmp_path / "real"))
    script = os.path.join(os.path.dirname(__file__), "fetch_real.py")
    r = subprocess.run([sys.executable, script, "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("usage: fetch_real.py"), r.stdout + r.stderr
    assert "pip download" not in r.stdout and not (tmp_path / "real").exists()
