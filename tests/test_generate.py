"""generate.py against transformers' generate() (a test-only oracle) on tiny random checkpoints the tests write:
Llama with grouped-query attention, Mistral up to its sliding window, Qwen2 with q/k/v biases, GPT-2 up to its last
position. Batches of left-padded prompts of different lengths, greedy token for token, rows that end early (a list of
EOS ids) going on with padding as theirs; the filtered distribution sampling draws from equal to transformers'
TemperatureLogitsWarper + TopPLogitsWarper, ties and top_p 0 and 1 included; sampled tokens equal to theirs under the
same global seed, and seeded sampling reproducible."""
import sys

import pytest
import torch
import transformers
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

import generate as G
import model as M
from fixtures import random_params, tiny  # noqa: F401  (tiny: a fixture)

V = 64
SMALL = dict(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             bos_token_id=None, eos_token_id=None, pad_token_id=None)  # no EOS of their own: the tests give it
HF = {  # name: (class, config, the positions generation may use: GPT-2's learned ones, Mistral's window)
    "llama": (transformers.LlamaForCausalLM, transformers.LlamaConfig(**SMALL, num_key_value_heads=2), None),
    "mistral": (transformers.MistralForCausalLM, transformers.MistralConfig(**SMALL, num_key_value_heads=1,
                                                                            sliding_window=24), 24),
    "qwen2": (transformers.Qwen2ForCausalLM, transformers.Qwen2Config(**SMALL, num_key_value_heads=2,
                                                                      tie_word_embeddings=False), None),
    "gpt2": (transformers.GPT2LMHeadModel, transformers.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4,
                                                                   n_positions=24, bos_token_id=None, eos_token_id=None,
                                                                   tie_word_embeddings=False), 24)}
LENGTHS = [7, 3, 5, 1]  # the prompts of one batch, left-padded to 7


@pytest.fixture(scope="module", params=list(HF))
def pair(request, tmp_path_factory):
    """(transformers' model, ours from its saved files, the positions generation may use or None). Biases N(0, 0.1)
    and untied heads: random_params' biases near 1 (or a tied head) make Qwen2 and GPT-2 repeat one token forever."""
    cls, config, room = HF[request.param]
    ref, g = random_params(cls(config), 0), torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    d = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(d)
    if request.param == "qwen2":
        assert ref.model.layers[0].self_attn.q_proj.bias is not None  # (the biases are there to be loaded)
    return ref, M.load_pretrained(d), room


def prompts(seed=1):
    """(B, 7) left-padded prompts of LENGTHS (padding id 0) and their attention mask."""
    T = max(LENGTHS)
    mask = torch.tensor([[0] * (T - n) + [1] * n for n in LENGTHS])
    return torch.randint(3, V, (len(LENGTHS), T), generator=torch.Generator().manual_seed(seed)) * mask, mask


def test_left_padded_batches_greedy_as_transformers(pair):
    """Greedy continuations of prompts of 7, 3, 5 and 1 tokens in one left-padded batch, up to the last position the
    model has (GPT-2's 24 learned ones, Mistral's window of 24; 20 new tokens for Llama and Qwen2) equal
    transformers'; the same with two EOS ids that end two rows early: those rows go on with pad_id, or where none is
    given with the first EOS, as transformers' (it emitted EOS whatever pad_id was given)."""
    ref, ours, room = pair
    x, mask = prompts()
    n = 20 if room is None else room - x.shape[1] + 1  # (the last new token is sampled, never run)
    hf = ref.generate(x, attention_mask=mask, max_new_tokens=n, do_sample=False)
    assert hf.shape == (4, 7 + n) and torch.equal(G.generate(ours, x, n, attention_mask=mask), hf)
    assert all(len(set(row[7:].tolist())) > 2 for row in hf)  # (not one token over and over)
    stops = [hf[1, 7 + 2].item(), hf[2, 7 + 5].item()]  # two ids that end rows 1 and 2 early
    for pad in (next(i for i in range(V) if i not in stops), None):
        want = ref.generate(x, attention_mask=mask, max_new_tokens=n, do_sample=False, eos_token_id=stops,
                            pad_token_id=pad)
        got = G.generate(ours, x, n, eos_id=stops, attention_mask=mask, pad_id=pad)
        assert torch.equal(got, want), pad
        assert (got[1, 7 + 3:] == (stops[0] if pad is None else pad)).all()  # row 1 ended by its third new token


def test_warp_is_transformers_temperature_and_top_p():
    """The logits sampling draws from (temperature, then the nucleus) equal transformers' TemperatureLogitsWarper then
    TopPLogitsWarper, bit for bit: random logits, logits rounded to integers (many ties at the nucleus' edge),
    equal logits everywhere, top_p 0 (one token) and 1 (no filter: transformers adds no warper) and in between."""
    g = torch.Generator().manual_seed(0)
    cases = [torch.randn(3, 50, generator=g) * 3, (torch.randn(3, 50, generator=g) * 2).round(), torch.zeros(2, 8),
             torch.tensor([[1.0, 3.0, 3.0, 0.0]]), torch.randn(2, 49152, generator=g) * 4]
    for logits in cases:
        for temperature in (1.0, 0.7, 1.9):
            for top_p in (0.0, 0.05, 0.3, 0.5, 0.9, 0.999, 1.0):
                want = TemperatureLogitsWarper(temperature)(None, logits)
                want = TopPLogitsWarper(top_p)(None, want) if top_p < 1 else want
                assert torch.equal(G.warp(logits, temperature, top_p), want), (logits.shape, temperature, top_p)
    # four equal tokens at top_p 0.5: two stay, transformers' two (its upward sort keeps the last); top_p 0 one
    draws = {G.sample(torch.zeros(1, 4), 1.0, 0.5, g).item() for _ in range(100)}
    assert draws == set(torch.nonzero(TopPLogitsWarper(0.5)(None, torch.zeros(1, 4)) == 0)[:, 1].tolist())
    assert {G.sample(torch.tensor([[1.0, 3.0, 3.0, 0.0]]), 1.0, 0.0, g).item() for _ in range(20)} == {2}


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.9), (1.5, 0.5), (1.0, 0.0)])
def test_sampling_draws_transformers_tokens_under_the_same_seed(pair, temperature, top_p):
    """Sampling from the same distribution with the same torch.multinomial call: under one global seed, our sampled
    continuations of a left-padded batch are transformers' do_sample=True ones (top_k=0: transformers' default top_k
    50 is a filter we do not have), token for token; so with two EOS ids that end rows early, then padding."""
    ref, ours, room = pair
    x, mask = prompts(2)
    n, hf = 12, dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    torch.manual_seed(5)
    want = ref.generate(x, attention_mask=mask, max_new_tokens=n, **hf)
    torch.manual_seed(5)
    assert torch.equal(G.generate(ours, x, n, temperature, top_p, attention_mask=mask), want)
    stops = [want[0, 7 + 2].item(), want[3, 7 + 5].item()]
    torch.manual_seed(5)
    want = ref.generate(x, attention_mask=mask, max_new_tokens=n, eos_token_id=stops, pad_token_id=1, **hf)
    torch.manual_seed(5)
    assert torch.equal(G.generate(ours, x, n, temperature, top_p, stops, mask, pad_id=1), want)


def test_seeded_sampling_repeats_and_the_seed_matters(pair):
    """The same generator seed draws the same tokens (batch and step by step); another seed draws others."""
    _, ours, _ = pair
    x, mask = prompts(3)
    draw = lambda seed: G.generate(ours, x, 12, 1.0, 0.95, attention_mask=mask,  # noqa: E731
                                   generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(7), draw(7)) and not torch.equal(draw(7), draw(8))


def test_the_command_line_samples_the_same_text_for_a_seed(tmp_path, monkeypatch, capsys):
    """python generate.py --temperature 1 --seed S: the same text for the same seed, another for another seed."""
    from tokenizers import ByteLevelBPETokenizer
    tk = ByteLevelBPETokenizer()
    tk.train_from_iterator(["hello world, hello there, a sunny day"] * 10, vocab_size=300,
                           special_tokens=["<|endoftext|>"])
    tk.save_model(str(tmp_path))
    torch.manual_seed(0)
    M.save_pretrained(M.build_model(M.GPT2Config(vocab_size=300)), tmp_path)

    def text(seed):
        monkeypatch.setattr(sys, "argv", ["generate.py", "--model", str(tmp_path), "--prompt", "hello", "--device",
                                          "cpu", "--temperature", "1", "--max-new-tokens", "16", "--seed", str(seed)])
        G.main()
        return capsys.readouterr().out
    assert text(3) == text(3) != text(4)



def test_an_empty_prompt_is_refused_in_one_line():
    """(B, 0) prompts: nothing to continue; was a RuntimeError about a reshape deep in the first block."""
    model = M.build_model(M.LlamaConfig(vocab_size=V)).eval()
    with pytest.raises(ValueError, match=r"^generate: the prompts are empty \(0 tokens\): nothing to continue"):
        G.generate(model, torch.zeros(2, 0, dtype=torch.long), 3)


def test_eos_ids_are_read_as_transformers_reads_them(tiny, tmp_path):
    """The ids generation stops on (the tokenizer's stops, what generate.py passes) end the continuation where
    transformers' generate with the checkpoint's own generation config ends it: a generation_config.json list (Llama 3's
    [128001, 128009] shape, the tokenizer's EOS among them), config.json's eos_token_id alone (a list, or one id), and
    no EOS at all (the continuation runs to max_new_tokens)."""
    import json
    import shutil

    import tokenizer
    prompt = torch.tensor([tokenizer.load_tokenizer(tiny[0]).encode("The capital of France is")])
    ref = transformers.LlamaForCausalLM.from_pretrained(tiny[0], dtype=torch.float32).eval()
    free = ref.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=16, do_sample=False,
                        eos_token_id=None)[0, prompt.shape[1]:].tolist()
    a, b = free[3], free[6]
    assert a not in free[:3] and b not in free[:6] and 2 not in free  # (each ends it at its own place; EOS 2 never)
    for config, generation, ends in (({}, {"eos_token_id": [2, b, a]}, 4), ({"eos_token_id": [b, a]}, None, 4),
                                     ({"eos_token_id": b}, None, 7), ({"eos_token_id": None}, None, 16)):
        d = shutil.copytree(tiny[0], tmp_path / str(len(list(tmp_path.iterdir()))))
        (d / "config.json").write_text(json.dumps(json.loads((d / "config.json").read_text()) | config))
        if generation:
            (d / "generation_config.json").write_text(json.dumps(generation))
        ref = transformers.LlamaForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        want = ref.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=16, do_sample=False)
        got = G.generate(M.load_pretrained(d), prompt, 16, eos_id=tokenizer.load_tokenizer(str(d)).stops)
        assert torch.equal(got, want) and got.shape[1] == prompt.shape[1] + ends, (config, generation)


def gpt2_folder(d):
    """A tiny GPT-2 (transformers' own, biases N(0, 0.1) and an untied head: it does not repeat one token) with its own
    byte-level BPE tokenizer (<|endoftext|> its only special token, id 0) in folder d."""
    from tokenizers import ByteLevelBPETokenizer
    tk = ByteLevelBPETokenizer()
    tk.train_from_iterator(["hello world, hello there, a sunny day"] * 10, vocab_size=300,
                           special_tokens=["<|endoftext|>"])
    ref, g = random_params(transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=300, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=None,
        tie_word_embeddings=False)), 0), torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    ref.save_pretrained(d)
    (d / "generation_config.json").unlink()  # (transformers writes one: the test writes its own where it wants one)
    tk.save_model(str(d))
    return d


def two_stops(cls, base, prompt):
    """transformers' 16 greedy tokens after prompt with no EOS, and two ids that, as EOS, would end it at two places
    before the 16th (each first generated there): (tokens, the earlier id, the later)."""
    free = cls.from_pretrained(base, dtype=torch.float32).generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=16, do_sample=False, eos_token_id=None,
        pad_token_id=0)[0, prompt.shape[1]:].tolist()
    b, a = [t for i, t in enumerate(free) if i >= 2 and t not in free[:i]][:2]  # tokens first generated there
    assert free.index(b) < free.index(a) < 15
    return free, b, a


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_the_command_line_stops_where_transformers_generate_stops(kind, tiny, tmp_path, monkeypatch, capsys):
    """python generate.py's greedy ids against transformers' generate() with the checkpoint's own generation config
    (from_pretrained, max_new_tokens as --max-new-tokens): config.json's eos_token_id alone, a generation_config.json
    list over config.json's, a generation_config.json naming none (transformers then never stops: ours ends at EOS, as
    plainly wanted, and says so; its ids are transformers' up to there), config.json's null (the tokenizer's EOS, never
    generated here: both run to the end). Was: config.json's EOS ended it where transformers went on, unsaid."""
    import json
    import shutil

    import tokenizer
    base = gpt2_folder(tmp_path / "base") if kind == "gpt2" else shutil.copytree(tiny[0], tmp_path / "base")
    cls = transformers.GPT2LMHeadModel if kind == "gpt2" else transformers.LlamaForCausalLM
    prompt = torch.tensor([tokenizer.load_tokenizer(str(base)).encode("hello there")])
    free, b, a = two_stops(cls, base, prompt)
    tok_eos = tokenizer.load_tokenizer(str(base)).eos_id
    assert tok_eos not in free  # (config.json's null: the tokenizer's EOS, never generated: no stop either way)
    original = G.generate
    cases = [({"eos_token_id": a}, None, free.index(a) + 1, False),
             ({"eos_token_id": a}, {"eos_token_id": [b, 7]}, free.index(b) + 1, False),
             ({"eos_token_id": a}, {"bos_token_id": 1}, free.index(a) + 1, True),  # transformers: 16
             ({"eos_token_id": None}, None, 16, False)]
    for i, (config, generation, ends, said) in enumerate(cases):
        d = shutil.copytree(base, tmp_path / str(i))
        (d / "config.json").write_text(json.dumps(json.loads((d / "config.json").read_text()) | config))
        if generation:
            (d / "generation_config.json").write_text(json.dumps(generation))
        ref = cls.from_pretrained(d, dtype=torch.float32).eval()
        want = ref.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=16, do_sample=False)
        got = []
        monkeypatch.setattr(G, "generate", lambda *a, **k: got.append(original(*a, **k)) or got[-1])
        monkeypatch.setattr(sys, "argv", ["generate.py", "--model", str(d), "--prompt", "hello there", "--device",
                                          "cpu", "--dtype", "float32", "--max-new-tokens", "16"])
        G.main()
        err = capsys.readouterr().err
        assert got[0].shape[1] == prompt.shape[1] + ends, (config, generation)
        assert torch.equal(got[0], want[:, :prompt.shape[1] + ends]) and (want.shape == got[0].shape) != said
        assert ("transformers' generate would go on" in err) == said, err
        if said:
            assert f"stopped at the tokenizer's EOS ({a})" in err and "generation_config.json names no eos" in err


def test_t5_beam_search_stops_as_transformers_or_at_its_eos(tmp_path):
    """T5's beam search (eval.py's translations) against transformers' generate with the checkpoint's own generation
    config: config.json's EOS 1 alone, and with t5-small's generation_config.json: the same ids, greedy and 4 beams.
    A generation_config.json naming no eos_token_id, or config.json's null: transformers never stops (its rows run to
    max_new_tokens past </s>); ours end at </s> 1 (eval.py decodes a translation up to it: a text after </s> is not
    one), its ids transformers' up to there, then padding."""
    import json
    import shutil

    import checkpoint as C
    V, shape = 96, dict(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0)
    torch.manual_seed(0)
    ref = transformers.T5ForConditionalGeneration(transformers.T5Config(**shape, feed_forward_proj="gated-gelu"))
    ref.lm_head.weight = torch.nn.Parameter(torch.empty(V, 32))
    random_params(ref, 1)
    with torch.no_grad():
        ref.lm_head.weight[1] *= 2  # EOS likely: rows end at different lengths
    base = tmp_path / "base"
    C.write_checkpoint(base, M.T5Config(**shape, num_decoder_layers=2, feed_forward_proj="gated-gelu",
                                        tie_word_embeddings=False),
                       ((k, v) for k, v in ref.state_dict().items() if "embed_tokens" not in k))
    g = torch.Generator().manual_seed(3)
    x = torch.randint(2, V, (6, 11), generator=g)
    mask = torch.ones_like(x)
    mask[0, 7:], mask[2, 4:] = 0, 0  # right padding, as the tokenizer pads
    small = {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}  # t5-small's generation_config.json
    for i, (config, generation, stops) in enumerate([({}, None, True), ({}, small, True),
                                                     ({}, {"decoder_start_token_id": 0, "pad_token_id": 0}, False),
                                                     ({"eos_token_id": None}, None, False)]):
        d = shutil.copytree(base, tmp_path / str(i))
        (d / "config.json").write_text(json.dumps(json.loads((d / "config.json").read_text()) | config))
        if generation:
            (d / "generation_config.json").write_text(json.dumps(generation))
        hf, ours = transformers.T5ForConditionalGeneration.from_pretrained(d).eval(), M.load_pretrained(d).eval()
        for beams in (1, 4) if stops else (1,):
            want = hf.generate(input_ids=x, attention_mask=mask, num_beams=beams, do_sample=False, max_new_tokens=12,
                               length_penalty=0.6, early_stopping=True)  # (as eval.py's beam search)
            got = G.beam_search(ours, x, mask, num_beams=beams, length_penalty=0.6, max_new_tokens=12)[0][:, 0]
            assert got.shape == want.shape or not stops
            for row, theirs in zip(got.tolist(), want.tolist()):
                end = row.index(1) + 1 if 1 in row else len(row)  # ours: up to </s>, then padding 0
                assert row[:end] == theirs[:end] and set(row[end:]) <= {0}, (config, generation, row, theirs)
                # transformers: the same padding greedy; with beams EOS (its `pad_token_id or eos_token_id` reads pad
                # 0 as none); where it names no EOS, whatever came next (it runs to max_new_tokens)
                assert set(theirs[end:]) <= ({0} if beams == 1 else {1}) or not stops, (row, theirs)
            assert stops or want.shape[1] == 13 and not (want[:, 1:] == 1).any(1).all()  # (theirs went on past 1)
            assert 0 < (got == 1).any(1).sum() < 6  # (rows that ended early, and not all: the case is tested)


def test_eval_answers_stop_where_generate_py_stops(tiny, tmp_path, capsys):
    """eval.py --task generate's answers against transformers' generate with the checkpoint's own generation config:
    a generation_config.json naming another EOS list than config.json's (both end at its first id), and one naming none
    over config.json's list [a, b] (transformers never stops; ours ends at the tokenizer's EOS a, as generate.py, its
    text transformers' up to there, and says so once, as generate.py does, for the two prompts' answers). Was: eval.py
    ended the second at b, config.json's list, which transformers passes over (its own stop rule: config.json's list
    kept under a generation_config.json naming none); then it ended it at a unsaid."""
    import json
    import shutil

    import data
    import eval as E
    import tokenizer
    base, cls = shutil.copytree(tiny[0], tmp_path / "base"), transformers.LlamaForCausalLM  # (GPT-2's 64 positions:
    (tmp_path / "p.txt").write_text("Say hello there.\n" * 2)  # too few for Alpaca's prompt and 16 new tokens)
    prompt = torch.tensor([tokenizer.load_tokenizer(str(base)).encode(data.alpaca_prompt({"instruction": "Say hello "
                                                                                                           "there."}))])
    free, b, a = two_stops(cls, base, prompt)
    cases = [({"eos_token_id": a}, {"eos_token_id": [b, 7]}, free.index(b), True),
             ({"eos_token_id": [a, b]}, {"bos_token_id": 1}, free.index(a), False)]  # transformers: 16
    for i, (config, generation, ends, theirs) in enumerate(cases):
        d = shutil.copytree(base, tmp_path / str(i))
        (d / "config.json").write_text(json.dumps(json.loads((d / "config.json").read_text()) | config))
        (d / "generation_config.json").write_text(json.dumps(generation))
        want = cls.from_pretrained(d, dtype=torch.float32).eval().generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=16, do_sample=False)[0, prompt.shape[1]:]
        assert (len(want) == ends + 1) == theirs and want.tolist()[:ends] == free[:ends]  # (16 where theirs goes on)
        E.main(["--task", "generate", "--model", str(d), "--prompts", str(tmp_path / "p.txt"), "--device", "cpu",
                "--dtype", "float32", "--max-new-tokens", "16"])
        out = capsys.readouterr().out
        answers = json.loads(out.strip().splitlines()[-1])["answers"]
        assert [r["base"] for r in answers] == [tokenizer.load_tokenizer(str(d)).decode(free[:ends]).strip()] * 2, \
            config
        note = (f"note: 2 of 2 answers stopped at the tokenizer's EOS ({a}); transformers' generate would go on: "
                f"{d / 'generation_config.json'} names no eos_token_id")
        assert out.count("transformers' generate would go on") == (not theirs) and (note in out) != theirs, out


def test_finite_refuses_any_nan_or_inf_and_passes_values_whose_sum_overflows():
    """finite() sums first (one pass; isfinite().all() took 5x a decoding step's log_softmax) and tests every value
    only where the sum is not finite: NaN, +Inf, -Inf, both Infs (a NaN sum) are refused in every dtype, and finite
    values whose float32 sum overflows (3e38 twice; float16's 65504 summed) are not."""
    model = M.build_model(M.LlamaConfig(vocab_size=8, n_layer=1, n_embd=8, n_head=2, n_kv_head=1, n_ffn=8))
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for bad in ([float("nan")], [float("inf")], [-float("inf")], [float("inf"), -float("inf")]):
            with pytest.raises(ValueError, match="the logits hold"):
                G.finite(model, torch.tensor([1.0, *bad, 2.0], dtype=dtype), "the logits")
    big = torch.tensor([3e38, 3e38, -1.0])
    assert not big.sum().isfinite() and G.finite(model, big, "the logits") is big
    half = torch.full((40000,), 65504.0, dtype=torch.float16)
    assert G.finite(model, half, "the logits") is half


def test_an_unpadded_mask_after_a_cache_is_the_padded_ones_with_every_token_real():
    """After a cache and with no padding (MMLU's question after its cached prefix), positions_and_mask gives one (T, S)
    mask for every row (it built a (B, 1, T, S) mask and its fix-up for rows of padding: 4.4 ms a call), equal to what
    an attention_mask of ones gives, as are the positions; none without a cache, or for one token."""
    config, ids = M.LlamaConfig(), torch.tensor([[3, 4, 5], [6, 7, 8]])
    cache = [{"k": torch.zeros(2, 2, 4, 16), "v": torch.zeros(2, 2, 4, 16)}] * config.n_layer  # 4 past tokens
    pos, mask = M.positions_and_mask(config, ids, cache=cache)
    pos1, mask1 = M.positions_and_mask(config, ids, torch.ones(2, 7, dtype=torch.long), cache=cache)
    assert mask.shape == (3, 7) and mask1.shape == (2, 1, 3, 7) and torch.equal(mask.expand_as(mask1), mask1)
    assert torch.equal(pos, pos1) and pos.tolist() == [[4, 5, 6]] * 2
    assert torch.equal(mask, torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 0], [1] * 7]).bool())
    assert M.positions_and_mask(config, ids)[1] is None
    assert M.positions_and_mask(config, ids[:, :1], cache=cache)[1] is None
