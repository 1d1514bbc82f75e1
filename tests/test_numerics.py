"""Values a careful user meets: NaN and Inf that a float16 forward (or an adapter) makes of finite weights, a perplexity
past float64's range, blocks NF4 finds hard, a bf16 file read in float32 and written back. The scores eval.py and
generate.py print must come from finite logits (an argmax reads NaN as the largest: token 0 where all are NaN); the
command-line rows of the same fixes are in test_bad_input.py's table. References: bitsandbytes for NF4, torch's own
argmax and multinomial for what the unchecked code did, the bits of the file for the round trip."""
import math

import bitsandbytes.functional as BF
import pytest
import torch

import tokenizer
import eval as E
from checkpoint import load_safetensors, save_safetensors
from generate import beam_search, generate
from model import GPT2Config, LlamaConfig, T5Config, build_model, load_pretrained, save_pretrained
from quant import quantize_nf4
from test_eval import TESTS, write_mmlu


def nan_llama(vocab=64):
    """A tiny Llama whose final norm weight is NaN: every logit NaN, whatever the prompt."""
    torch.manual_seed(0)
    m = build_model(LlamaConfig(vocab_size=vocab, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64)).eval()
    with torch.no_grad():
        m.model.norm.weight.fill_(float("nan"))
    return m


def test_generate_refuses_nan_logits_greedy_and_sampled():
    model, ids = nan_llama(), torch.tensor([[1, 5, 7]])
    logits = model(ids)[:, -1]
    assert logits.isnan().all() and logits.argmax(-1).item() == 0       # what greedy decoding emitted, exit 0
    with pytest.raises(RuntimeError, match="probability tensor contains"):  # what sampling did: a traceback
        torch.multinomial(logits.float().softmax(-1), 1)
    for temperature in (0.0, 0.7):
        with pytest.raises(ValueError, match=r"generate: the logits of new token 1 hold 64 NaN and 0 Inf values \(the "
                                             r"model computes in float32\)"):
            generate(model, ids, 3, temperature=temperature)


def test_beam_search_refuses_nan_logits():
    """T5's beam search read NaN logits unchecked: topk takes NaN for the largest, and an arbitrary token won every
    step (greedily token 42 here, every step, its score NaN; no word); now refused as generate() refuses them."""
    torch.manual_seed(0)
    model = build_model(T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_heads=4, dropout_rate=0.0)).eval()
    with torch.no_grad():
        model.decoder.final_layer_norm.weight.fill_(float("nan"))      # every decoder logit NaN
    ids = torch.tensor([[5, 7, 9, 1]])
    assert model.decode(torch.zeros(1, 1, dtype=torch.long), model.encode(ids)).isnan().all()
    assert torch.full((1, 64), float("nan")).topk(2).values.isnan().all()  # what the unchecked ranking kept
    for beams in (1, 4):
        with pytest.raises(ValueError, match=rf"beam_search: the logits of new token 1 hold {64 * beams} NaN and 0 Inf "
                                             r"values \(the model computes in float32\)"):
            beam_search(model, ids, num_beams=beams, max_new_tokens=5)


def test_generate_names_float16_where_its_range_is_passed():
    torch.manual_seed(0)
    model = build_model(LlamaConfig(vocab_size=64, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64)).eval()
    with torch.no_grad():
        model.model.norm.weight.fill_(60000.0)                            # finite in float16; h W^T passes 65504
    model.half()
    assert not model(torch.tensor([[1, 5, 7]]))[:, -1].isfinite().all()
    with pytest.raises(ValueError, match=r"\(the model computes in float16\): its activations passed float16's range "
                                         r"\(max 65504\); give --dtype bfloat16 or float32"):
        generate(model, torch.tensor([[1, 5, 7]]), 2)
    assert torch.isfinite(generate(model.float(), torch.tensor([[1, 5, 7]]), 2)).all()  # float32 computes it


def test_glue_scores_refuse_nan_logits():
    torch.manual_seed(0)
    model = build_model(GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=1, n_head=4)).add_head(2)
    dev = {"validation": [{"input_ids": [3, 4, 5], "token_type_ids": [0] * 3, "labels": 1},
                          {"input_ids": [6, 7], "token_type_ids": [0] * 2, "labels": 0}]}
    assert math.isfinite(E.evaluate_glue(model, "sst2", dev, 2)["validation"]["loss"])
    with torch.no_grad():
        model.transformer.ln_f.weight.fill_(float("nan"))
    # (argmax read each NaN row as class 0: accuracy 0.5 here, printed as the model's)
    with pytest.raises(ValueError, match="validation: the logits hold 4 NaN and 0 Inf values"):
        E.evaluate_glue(model, "sst2", dev, 2)


def test_mmlu_refuses_nan_logits(tmp_path):
    import sentencepiece as spm
    from test_eval import CORPUS
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=400, model_type="bpe", character_coverage=1.0, byte_fallback=True,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    tok = tokenizer.load_tokenizer(str(tmp_path))
    root = write_mmlu(tmp_path / "mmlu")
    # (the letters' NaN logits: argmax 0, answer A every time: 1 of the 7 questions "right", printed as a score)
    assert sum(row[5] == "A" for rows in TESTS.values() for row in rows) == 1
    with pytest.raises(ValueError, match="mmlu: [a-z_]+'s logits hold 4 NaN and 0 Inf values"):
        E.mmlu(nan_llama(400), tok, str(root), log=lambda s: None)


def test_perplexity_past_float64s_range_is_inf_not_a_traceback(tmp_path):
    torch.manual_seed(0)
    model = build_model(LlamaConfig(vocab_size=64, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64)).eval()
    with torch.no_grad():
        model.model.norm.weight.fill_(60000.0)                            # logits in the millions: NLL in the 1e5s
    ids = list(range(1, 20))
    with torch.no_grad():
        nll = model(torch.tensor([ids]), labels=torch.tensor([ids])).item()  # the mean NLL, computed directly
    assert nll > 709.79                                                   # math.exp(nll): OverflowError
    with pytest.raises(OverflowError):
        math.exp(nll)
    assert E.perplexity(model, [(ids, 0)]) == (math.inf, 18)
    small = build_model(LlamaConfig(vocab_size=64, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64)).eval()
    with torch.no_grad():
        want = math.exp(small(torch.tensor([ids]), labels=torch.tensor([ids])).item())
    assert E.perplexity(small, [(ids, 0)])[0] == pytest.approx(want, rel=1e-6)  # below the edge: exp as before


@pytest.mark.parametrize("label,w", [
    ("an all-zero block beside a normal one", torch.cat([torch.zeros(64), torch.linspace(-2, 3, 64)])),
    ("one outlier of 1e4 in a block", torch.cat([torch.linspace(-1, 1, 63), torch.tensor([1e4]), torch.ones(64)])),
    ("float16's max, both signs", torch.tensor([65504.0, -65504.0] * 64, dtype=torch.float16)),
    ("bfloat16 values near float32's max", torch.full((128,), 3e38, dtype=torch.bfloat16)),
    ("subnormal float32 values", torch.full((128,), 1e-40))])
def test_degenerate_nf4_blocks_equal_bitsandbytes(label, w):
    w = w.reshape(2, 64)
    ours = quantize_nf4(w, 64, double_quant=False)
    codes, state = BF.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=False)
    assert torch.equal(ours.codes, codes.view(-1)) and torch.equal(ours.absmax, state.absmax)
    assert torch.equal(ours.dequantize(w.dtype), BF.dequantize_4bit(codes, state).view(w.shape))
    assert torch.isfinite(quantize_nf4(w, 64).dequantize(torch.float32)).all()  # double quantization too


def test_a_bf16_file_read_in_float32_and_written_back_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    save_pretrained(build_model(LlamaConfig(vocab_size=64, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64))
                    .to(torch.bfloat16), tmp_path / "a")
    model = load_pretrained(tmp_path / "a", dtype=torch.float32)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    save_pretrained(model.to(torch.bfloat16), tmp_path / "b")
    a, b = (load_safetensors(str(tmp_path / d / "model.safetensors")) for d in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k].view(torch.int16), b[k].view(torch.int16)) for k in a)


def test_float16_max_in_a_file_loads_in_float16_and_rounds_up_in_bfloat16(tmp_path):
    torch.manual_seed(0)
    save_pretrained(build_model(LlamaConfig(vocab_size=64, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64))
                    .half(), tmp_path)
    sd = load_safetensors(str(tmp_path / "model.safetensors"))
    sd["model.layers.0.mlp.up_proj.weight"][0, 0] = 65504.0               # float16's largest finite value
    save_safetensors(sd, str(tmp_path / "model.safetensors"))
    for dtype, want in ((torch.float16, 65504.0), (torch.bfloat16, 65536.0), (torch.float32, 65504.0)):
        got = load_pretrained(tmp_path, dtype=dtype).model.layers[0].mlp.up_proj.weight[0, 0].item()
        assert got == want == torch.tensor(65504.0).to(dtype).item(), (dtype, got)
