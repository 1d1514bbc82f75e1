"""T5 against transformers (a test-only oracle): tiny random checkpoints of both variants written by the test (v1.0 by
transformers' save_pretrained, v1.1 by our write_checkpoint and read back by transformers), logits with padding,
the KV cache, greedy and beam search token for token, activation checkpointing, the tokenizer against T5Tokenizer on a
sentencepiece model the test trains, and the WMT16 reader."""
import gc
import json
import weakref

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers

import checkpoint as C
import model as M
from data import T5_PREFIX, read_translation, seq2seq_batch, translation_examples
from fixtures import random_params, t5_sentencepiece
from lorasp import apply_lorasp
from quant import NF4Linear, quantize_nf4
from tokenizer import load_tokenizer

V = 96
SHAPE = dict(vocab_size=V, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
             relative_attention_max_distance=20, dropout_rate=0.0, decoder_start_token_id=0)


@pytest.fixture(scope="module")
def v10(tmp_path_factory):
    """T5 v1.0: ReLU, tied head with the d_model^-0.5 rescale, 3 decoder blocks over 2 encoder blocks; HF's files."""
    c = transformers.T5Config(**SHAPE, num_decoder_layers=3, feed_forward_proj="relu")
    ref = random_params(transformers.T5ForConditionalGeneration(c), 0).eval()
    d = tmp_path_factory.mktemp("t5v10")
    ref.save_pretrained(d)
    return ref, d


@pytest.fixture(scope="module")
def v11(tmp_path_factory):
    """T5 v1.1 / FLAN-T5: gated GELU, untied head, no rescale. transformers 5 ties T5 heads whatever the config says,
    so the head is untied by hand; the file is written by our writer and read back by transformers. EOS is made likely
    so that hypotheses end at different lengths."""
    ref = transformers.T5ForConditionalGeneration(transformers.T5Config(**SHAPE, feed_forward_proj="gated-gelu"))
    ref.lm_head.weight = nn.Parameter(torch.empty(V, SHAPE["d_model"]))
    random_params(ref, 1)
    with torch.no_grad():
        ref.lm_head.weight[1] *= 2
    config = M.T5Config(**{k: v for k, v in SHAPE.items() if k != "decoder_start_token_id"}, num_decoder_layers=2,
                        feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    d = tmp_path_factory.mktemp("t5v11")
    C.write_checkpoint(d, config, ((k, v) for k, v in ref.state_dict().items() if "embed_tokens" not in k))
    back = transformers.T5ForConditionalGeneration.from_pretrained(d).eval()
    assert back.lm_head.weight is not back.shared.weight and not back.config.scale_decoder_outputs
    return back, d


def batch(B=4, S=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(2, V, (B, S), generator=g)
    mask = torch.ones_like(x)
    mask[0, 7:], mask[2, 4:] = 0, 0  # right padding, as the tokenizer pads
    return x, mask, torch.randint(0, V, (B, 9), generator=g)


@pytest.mark.parametrize("variant", ["v10", "v11"])
def test_logits_match_transformers_with_padding(variant, request):
    ref, d = request.getfixturevalue(variant)
    ours, (x, mask, y) = M.load_pretrained(d), batch()
    assert isinstance(ours, M.T5) and (ours.lm_head.weight is ours.shared.weight) == (variant == "v10")
    assert len(ours.decoder.block) == (3 if variant == "v10" else 2)
    with torch.no_grad():
        want = ref(input_ids=x, attention_mask=mask, decoder_input_ids=y).logits
        torch.testing.assert_close(ours(x, y, mask), want, atol=1e-4, rtol=0)
        torch.testing.assert_close(ours.encode(x, mask)[mask.bool()],  # the encoder alone, padding excluded
                                   ref.encoder(input_ids=x, attention_mask=mask).last_hidden_state[mask.bool()],
                                   atol=1e-4, rtol=0)


def test_flan_t5_resaved_by_transformers5_keeps_its_head_unscaled(v11, tmp_path):
    """transformers 5 saves v1.1 with tie_word_embeddings: true, scale_decoder_outputs: false and lm_head.weight
    stored: an untied head, no d_model^-0.5. A stored embed_tokens copy that differs from `shared` is refused."""
    ref, (x, mask, y) = v11[0], batch()
    ref.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["tie_word_embeddings"] and not config["scale_decoder_outputs"]
    ours = M.load_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, y, mask), ref(input_ids=x, attention_mask=mask, decoder_input_ids=y).logits,
                                   atol=1e-4, rtol=0)
    state = C.load_safetensors(tmp_path / "model.safetensors")
    state["encoder.embed_tokens.weight"] = state["shared.weight"] + 1
    C.save_safetensors(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"tensor 'encoder\.embed_tokens\.weight' differs from 'shared\.weight'"):
        M.load_pretrained(tmp_path)


def test_save_pretrained_round_trip_and_nf4(v10, tmp_path):
    ours, (x, mask, y) = M.load_pretrained(v10[1]), batch()
    M.save_pretrained(ours, tmp_path)
    stored = C.read_safetensors_header(tmp_path / "model.safetensors")[0]
    assert "shared.weight" in stored and "lm_head.weight" not in stored  # tied: stored once
    with torch.no_grad():
        assert torch.equal(M.load_pretrained(tmp_path)(x, y, mask), ours(x, y, mask))
        nf4 = M.load_pretrained(v10[1], quantize="nf4")  # equals the dense model with NF4-rounded block weights
        assert isinstance(nf4.decoder.block[2].layer[1].EncDecAttention.k, NF4Linear)
        assert isinstance(nf4.shared, nn.Embedding) and nf4.lm_head.weight is nf4.shared.weight
        for name, m in ours.named_modules():
            if isinstance(m, nn.Linear) and name != "lm_head":
                m.weight.copy_(quantize_nf4(m.weight).dequantize(torch.float32))
        torch.testing.assert_close(nf4(x, y, mask), ours(x, y, mask), atol=1e-4, rtol=0)


def test_cached_decoding_matches_the_full_decoder(v10):
    ours, (x, mask, y) = M.load_pretrained(v10[1]), batch()
    with torch.no_grad():
        enc, cache = ours.encode(x, mask), [{"self": {}, "cross": {}} for _ in ours.decoder.block]
        steps = torch.cat([ours.decode(y[:, i:i + 1], enc, mask, cache) for i in range(y.shape[1])], 1)
        torch.testing.assert_close(steps, ours(x, y, mask), atol=1e-5, rtol=0)
    assert cache[0]["self"]["k"].shape == (4, 4, 9, 8) and cache[0]["cross"]["k"].shape == (4, 4, 11, 8)


def up_to_eos(row):
    row = row.tolist()
    return row[:row.index(1) + 1] if 1 in row else row


def test_greedy_matches_transformers(v11):
    ref, d = v11
    ours, (x, mask, _) = M.load_pretrained(d), batch(6, seed=3)
    ids, _ = M.beam_search(ours, x, mask, num_beams=1, max_new_tokens=12)  # one beam is greedy decoding
    want = ref.generate(input_ids=x, attention_mask=mask, num_beams=1, do_sample=False, max_new_tokens=12)
    assert torch.equal(ids[:, 0], want)  # ended rows padded with 0 in both
    assert 0 < (want == 1).any(1).sum() < 6  # some rows end early, some run to the limit


@pytest.mark.parametrize("length_penalty", [0.6, 2.0, 0.0])
def test_beam_search_matches_transformers(v11, length_penalty):
    ref, d = v11
    ours, (x, mask, _) = M.load_pretrained(d), batch(6, seed=3)
    ids, scores = M.beam_search(ours, x, mask, num_beams=4, length_penalty=length_penalty, max_new_tokens=12)
    want = ref.generate(input_ids=x, attention_mask=mask, num_beams=4, length_penalty=length_penalty, do_sample=False,
                        early_stopping=True, max_new_tokens=12, output_scores=True, return_dict_in_generate=True)
    # transformers fills ended beams with EOS (its `pad_token_id or eos_token_id` reads pad 0 as missing); we pad
    assert [up_to_eos(r) for r in ids[:, 0]] == [up_to_eos(r) for r in want.sequences]
    torch.testing.assert_close(scores[:, 0], want.sequences_scores, atol=1e-4, rtol=1e-5)


def test_beam_properties(v11):
    ours, (x, mask, _) = M.load_pretrained(v11[1]), batch(6, seed=3)
    greedy = M.beam_search(ours, x, mask, num_beams=1, max_new_tokens=12)[0][:, 0]
    ids, scores = M.beam_search(ours, x, mask, num_beams=4, length_penalty=0.6, max_new_tokens=12)
    assert ids.shape[:2] == scores.shape == (6, 4) and (ids[..., 0] == 0).all()
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first
    assert any(up_to_eos(a) != up_to_eos(b) for a, b in zip(ids[:, 0], greedy))  # the beams found something else
    # each score is the teacher-forced log-probability of the hypothesis over its length ** 0.6
    with torch.no_grad():
        for b in range(6):
            for k in range(4):
                hyp = torch.tensor(up_to_eos(ids[b, k, 1:]))
                logp = ours(x[b:b + 1], torch.cat([torch.zeros(1, dtype=hyp.dtype), hyp[:-1]])[None], mask[b:b + 1])
                total = logp[0].float().log_softmax(-1).gather(1, hyp[:, None]).sum()
                torch.testing.assert_close(scores[b, k], total / len(hyp) ** 0.6, atol=1e-4, rtol=1e-5)
    # a penalty that favours length picks longer hypotheses here than one that does not
    longer = M.beam_search(ours, x, mask, num_beams=4, length_penalty=2.0, max_new_tokens=12)[0][:, 0]
    shorter = M.beam_search(ours, x, mask, num_beams=4, length_penalty=0.0, max_new_tokens=12)[0][:, 0]
    lengths = [[len(up_to_eos(r)) for r in ids] for ids in (longer, shorter)]
    assert all(a >= b for a, b in zip(*lengths)) and lengths[0] != lengths[1], lengths


def test_presets_read_like_the_published_configs():
    """config.json as transformers writes it for t5-base (v1.0) and flan-t5-base (v1.1) -> our presets."""
    base = transformers.T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
                                 decoder_start_token_id=0).to_dict()
    hub = {k: v for k, v in base.items() if k != "scale_decoder_outputs"}  # transformers 4 wrote no such key
    flan = dict(hub, d_ff=2048, feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True,
                tie_word_embeddings=False)  # as on the hub
    assert M.T5Config.from_hf(base) == M.get_config("t5-base")
    assert M.T5Config.from_hf(flan) == M.get_config("flan-t5-base")
    without = {k: v for k, v in flan.items() if k not in ("dense_act_fn", "is_gated_act")}  # t5-v1_1's: none written
    assert M.T5Config.from_hf(without) == M.get_config("flan-t5-base")
    with pytest.raises(NotImplementedError, match="dense_act_fn = 'mish' .feed_forward_proj = 'gated-mish'"):
        M.T5Config.from_hf(dict(base, feed_forward_proj="gated-mish", dense_act_fn="mish"))


@pytest.mark.parametrize("proj,written", [("gated-gelu", dict(dense_act_fn="gelu")),
                                          ("relu", dict(dense_act_fn="gelu_new")), ("gated-silu", {}),
                                          ("gated-relu", {}), ("gelu", {})])
def test_feed_forward_activation_as_transformers_reads_it(proj, written, tmp_path):
    """feed_forward_proj gives the activation and the gate, but config.json's own dense_act_fn wins in transformers
    (its "gated-gelu" alone is the tanh GELU): both were read from feed_forward_proj alone (logits off by 5e-4 with
    an erf GELU, 0.26 with a tanh GELU over relu), and any projection but relu and gated-gelu was refused."""
    c = transformers.T5Config(**SHAPE, num_decoder_layers=2, feed_forward_proj=proj)
    random_params(transformers.T5ForConditionalGeneration(c), 2).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | written))
    ref, ours = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval(), M.load_pretrained(tmp_path)
    x, mask, y = batch()
    with torch.no_grad():
        want = ref(input_ids=x, attention_mask=mask, decoder_input_ids=y).logits
        torch.testing.assert_close(ours(x, y, mask), want, atol=1e-5, rtol=0)
    assert ours.config.dense_act_fn == ref.config.dense_act_fn and ours.config.is_gated_act == ref.config.is_gated_act


def test_checkpointing_modes_give_the_same_gradients(v10):
    """LoRA-SP on q and v of both stacks, dropout on: "full" and "selective" match "none". The encoder's adapters get
    their gradients through the decoder's cross-attention, an argument of each decoder block, not its input."""
    model = M.load_pretrained(v10[1])
    model.config.dropout_rate = 0.1
    for block in [*model.encoder.block, *model.decoder.block]:
        block.p = 0.1
    apply_lorasp(model, ("q", "v"), r=4, alpha=8)
    for p in model.parameters():
        if p.requires_grad:
            nn.init.normal_(p, 0, 0.5)
    x, mask, y = batch()
    grads = {}
    for model.checkpointing in ("none", "full", "selective"):
        model.train().zero_grad()
        torch.manual_seed(0)
        F.cross_entropy(model(x, y, mask).flatten(0, 1), y.flatten()).backward()
        grads[model.checkpointing] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert any("encoder.block.0" in n for n in grads["none"]) and all(g.abs().sum() > 0 for g in grads["none"].values())
    for mode in ("full", "selective"):
        for n, g in grads["none"].items():
            torch.testing.assert_close(grads[mode][n], g, atol=1e-5, rtol=1e-5, msg=f"{mode}: {n}")


def test_checkpointing_frees_activations_after_backward(v10):
    """With the loss (so the graph) still referenced, as in `loss = step()` loops, and no cyclic GC, nothing a block
    produced outlives backward: the previous step's activations must not sit beside the next step's."""
    model = apply_lorasp(M.load_pretrained(v10[1]), ("q", "v"), r=4, alpha=8)
    x, mask, y = batch()
    for model.checkpointing in ("none", "full", "selective"):
        outputs = []
        hook = model.decoder.block[1].layer[0].SelfAttention.k.register_forward_hook(
            lambda m, args, out: outputs.append(weakref.ref(out)))
        gc.disable()
        try:
            loss = model(x, y, mask).logsumexp(-1).mean()
            loss.backward()
            assert outputs and all(o() is None for o in outputs), model.checkpointing
        finally:
            gc.enable()
            hook.remove()


def test_bf16_works_and_fp16_is_refused(v10):
    ours, (x, mask, y) = M.load_pretrained(v10[1]), batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = ours(x, y, mask)
    assert torch.isfinite(logits).all() and (logits.float() - ours(x, y, mask)).abs().mean() < 0.1 * logits.abs().mean()
    with pytest.raises(ValueError, match="float16"), torch.autocast("cpu", dtype=torch.float16):
        ours(x, y, mask)
    with pytest.raises(ValueError, match="bfloat16 or float32"):
        M.load_pretrained(v10[1], dtype=torch.float16)(x, y, mask)


# ----------------------------------------------------------------------------------------------------
# Tokenizer and data

CORPUS = ["The quick brown fox jumps over the lazy dog.", "Ana are mere și pere, 123 de lei!",
          "translate English to Romanian: hello world", "Numbers 3.14 and 2,718; naïve café ăâîșț ĂÂÎȘȚ",
          "  multiple   spaces\there  ", "Parlamentul European a adoptat rezoluția."] * 40
TEXTS = CORPUS[:6] + ["a <extra_id_0> b<extra_id_5>c<extra_id_99>", "<extra_id_100> <extra_id_05>", "", "x  y",
                      "Zzz QQQ ♥ 日本", "trailing  ", "\n\nnew\nlines"]


@pytest.fixture(scope="module")
def spiece_dir(tmp_path_factory):
    return t5_sentencepiece(tmp_path_factory.mktemp("spiece"), CORPUS, 70)


def test_tokenizer_matches_t5tokenizer(spiece_dir):
    ours, ref = load_tokenizer(spiece_dir), transformers.T5Tokenizer.from_pretrained(spiece_dir)
    assert (ours.pad_id, ours.eos_id, ours.bos_id, ours.vocab_size) == (0, 1, None, len(ref)) == (0, 1, None, 170)
    assert ref.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>"]) == [169, 70]
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == ref(text).input_ids, text
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True), text


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_wmt16_reader_jsonl_and_plain_text(tmp_path):
    pairs = [("Hello, world!", "Salut, lume!"), ("Two\rlines?", "Două rânduri?"), ("", "gol")]
    write(tmp_path / "train.jsonl", [json.dumps({"translation": {"en": e, "ro": r}}) for e, r in pairs] + [""])
    write(tmp_path / "test.en", [e for e, _ in pairs])
    write(tmp_path / "test.ro", [r for _, r in pairs])
    assert read_translation(tmp_path, "train") == read_translation(tmp_path, "test") == pairs[:2]  # (an empty side)


def hf_wmt16_pairs(f1, f2):
    """What HF's wmt16 builder makes of two aligned text files (datasets' wmt_utils): lines cut at b"\\n", decoded,
    rstripped, zipped, and a pair with an empty side skipped (`if not all(ex.values()): continue`)."""
    with open(f1, "rb") as a, open(f2, "rb") as b:
        return [(s, t) for s, t in zip((x.decode().rstrip() for x in a), (y.decode().rstrip() for y in b)) if s and t]


def test_plain_text_pairs_read_as_hf_wmt16_builds_them(tmp_path, capsys):
    """Europarl's aligned files (WMT16 ro-en's training data) hold lines empty on one side, trailing spaces, CRLF:
    those pairs trained "" -> a sentence (3 of 7 pairs here; HF's wmt16, the export, has none)."""
    (tmp_path / "train.en").write_bytes(b"Resumption of the session \r\n\nI declare resumed.\n\n \nA\rB\t\n"
                                        b"Thank you.\n\n")
    (tmp_path / "train.ro").write_bytes("Reluarea sesiunii\r\nSe deschide.\nDeclar reluată.\n\nX\nA\rB\n"
                                        "Vă mulțumesc.\n".encode())
    pairs = read_translation(tmp_path, "train")
    assert pairs == hf_wmt16_pairs(tmp_path / "train.en", tmp_path / "train.ro") and len(pairs) == 4
    assert pairs[0] == ("Resumption of the session", "Reluarea sesiunii") and pairs[2] == ("A\rB", "A\rB")
    assert capsys.readouterr().err == f"note: {tmp_path / 'train.en'} + train.ro: skipped 3 pairs with an empty " \
                                      "side (lines 2, 4, 5), as HF's wmt16 builder skips them\n"


def test_wmt16_reader_errors(tmp_path):
    write(tmp_path / "train.jsonl", ['{"translation": {"en": "a", "ro": "b"}}', '{"translation": {"en": "a"}}'])
    with pytest.raises(ValueError, match=r"train.jsonl, line 2: expected"):
        read_translation(tmp_path, "train")
    write(tmp_path / "validation.jsonl", ['{"translation": {"en": "a", "ro": null}}'])
    with pytest.raises(ValueError, match="line 1"):
        read_translation(tmp_path, "validation")
    write(tmp_path / "test.en", ["a", "b", "c"])
    write(tmp_path / "test.ro", ["x", "y"])
    with pytest.raises(ValueError, match=r"test.en has 3 lines, .*test.ro has 2"):
        read_translation(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="wmt16.*ro-en"):
        read_translation(tmp_path, "dev")


def test_examples_and_teacher_forcing_batch(spiece_dir):
    tok = load_tokenizer(spiece_dir)
    examples, cut = translation_examples([("hello world", "salut lume"), ("a" * 80, "b")], tok, max_source_len=40)
    assert cut == 1 and examples[0] == (tok.encode(T5_PREFIX + "hello world"), tok.encode("salut lume"))
    assert len(examples[0][0]) < 40 and examples[0][0][-1] == examples[0][1][-1] == 1
    assert examples[1] == (tok.encode(T5_PREFIX + "a" * 80)[:39] + [1], tok.encode("b"))  # cut, EOS kept
    b = seq2seq_batch(examples)
    T = max(len(t) for _, t in examples)
    assert b["labels"].shape == b["decoder_input_ids"].shape == (2, T)
    assert b["labels"][1, len(examples[1][1]):].eq(-100).all() and b["attention_mask"].sum(1).tolist() == [
        len(s) for s, _ in examples]
    assert b["decoder_input_ids"][:, 0].eq(0).all()
    assert torch.equal(b["decoder_input_ids"][:, 1:], b["labels"][:, :-1].clamp(min=0))  # shifted right, pad for -100


def test_translate_batches_like_one_at_a_time(spiece_dir):
    import eval as E
    tok = load_tokenizer(spiece_dir)
    torch.manual_seed(0)
    model = random_params(M.build_model(M.T5Config(vocab_size=tok.vocab_size, dropout_rate=0.0)), 4).eval()
    sources = ["Hello, world!", "The quick brown fox jumps over the lazy dog.", "a", "Parlamentul European"]
    batched = E.translate(model, tok, sources, batch_size=3, max_new_tokens=8)
    assert batched == [E.translate(model, tok, [s], batch_size=1, max_new_tokens=8)[0] for s in sources]
    scores, hyps = E.evaluate_translation(model, tok, list(zip(sources, sources)), max_new_tokens=8)
    assert hyps == batched and scores == dict(bleu=E.bleu(hyps, sources), chrf=E.chrf(hyps, sources),
                                              **{"chrf++": E.chrf(hyps, sources, 2)}, **E.rouge(hyps, sources))
    assert any(hyps)  # something was decoded


def test_wmt_sgml_is_refused_naming_the_file(tmp_path):
    """newsdev2016/newstest2016 as WMT publishes them (.sgm) renamed to .en/.ro: every tag line was a "sentence"
    (<seg id="1">...</seg> trained and scored with its tags, the <doc> lines as pairs); now one line naming the file."""
    for lang, tag in (("en", "srcset"), ("ro", "refset")):
        (tmp_path / f"test.{lang}").write_text(f'<{tag} setid="newstest2016" srclang="any">\n<doc docid="d" '
                                               f'origlang="ro">\n<seg id="1">Text {lang}</seg>\n</doc>\n</{tag}>\n')
    with pytest.raises(ValueError, match=r"test.en, line 1: WMT's SGML \(newstest's .sgm\), not a sentence a line"):
        read_translation(tmp_path, "test")
