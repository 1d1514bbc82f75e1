"""config.json fields read as transformers reads them (a test-only oracle): tiny random checkpoints written in the HF
layout by the test, with one field set, left out or spelled another way, load through model.load_pretrained to
transformers' logits (fp32: to 1e-5) and compute in the dtype transformers' from_pretrained() picks by default."""
import json

import pytest
import torch
import transformers

from fixtures import random_params
import model as M

V, T = 96, 10
LLAMA = dict(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
GPT2 = dict(vocab_size=V, n_positions=32, n_embd=32, n_layer=2, n_head=4)
BERT = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=32)
KINDS = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, LLAMA),
         "gpt2": (transformers.GPT2Config, transformers.GPT2LMHeadModel, GPT2),
         "bert": (transformers.BertConfig, transformers.BertModel, BERT)}


def write(kind, directory, drop=(), **fields):
    """A random checkpoint of `kind` saved by transformers (fp32 tensors), config.json edited: `drop` keys removed,
    `fields` set as written (transformers' own classes could not spell some of them)."""
    Config, Model, sizes = KINDS[kind]
    random_params(Model(Config(**sizes)), 7).save_pretrained(directory)
    path = directory / "config.json"
    c = {k: v for k, v in json.loads(path.read_text()).items() if k not in drop} | fields
    path.write_text(json.dumps(c))
    return Model.from_pretrained(directory).eval()  # the default: dtype="auto" in transformers 5


def ids(seed=0):
    return torch.randint(3, V, (2, T), generator=torch.Generator().manual_seed(seed))


def same_outputs(ref, ours, kind, atol=1e-5):
    x = ids()
    with torch.no_grad():
        want = ref(x).last_hidden_state if kind == "bert" else ref(x).logits
        torch.testing.assert_close(ours(x), want, atol=atol, rtol=0)


@pytest.mark.parametrize("key", ["torch_dtype", "dtype"])
def test_config_dtype_is_the_default_compute_dtype(key, tmp_path):
    """fp32 tensors, config.json saying bfloat16 (as TinyLlama's): transformers 5's from_pretrained() computes in
    bfloat16 (dtype="auto"), and so do we (we computed in the tensors' float32); dtype= overrides it."""
    ref = write("llama", tmp_path, drop=("dtype", "torch_dtype"), **{key: "bfloat16"})
    assert ref.model.embed_tokens.weight.dtype == torch.bfloat16  # the oracle's reading
    ours = M.load_pretrained(tmp_path)
    assert {p.dtype for p in ours.parameters()} == {torch.bfloat16}
    same_outputs(ref, ours, "llama", atol=0.05)  # both in bf16 (logits ~ +-3; bf16's step there: 0.016)
    ref32 = transformers.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    same_outputs(ref32, M.load_pretrained(tmp_path, dtype=torch.float32), "llama")


@pytest.mark.parametrize("sharded", [False, True])
def test_no_config_dtype_and_mixed_tensors_compute_in_the_dtype_transformers_picks(sharded, tmp_path):
    """bf16 weights and fp32 norms, config.json naming no dtype: transformers 5 computes in the dtype of the first
    floating tensor by name (of the first shard); the safetensors library stores fp32 tensors first, and we took the
    first in the file (computed in fp32: logits 0.05 off transformers')."""
    from safetensors.torch import save_file
    ref = write("llama", tmp_path, drop=("dtype", "torch_dtype"))
    state = {k: v.to(torch.float32 if "norm" in k else torch.bfloat16).contiguous()
             for k, v in ref.state_dict().items()}
    for f in tmp_path.glob("model*.safetensors*"):
        f.unlink()
    if sharded:   # each shard mixed: the safetensors library writes its fp32 tensors first
        names = {k: "model-0000%d-of-00002.safetensors" % (1 + ("layers.1." in k)) for k in state}
        for name in set(names.values()):
            save_file({k: v for k, v in state.items() if names[k] == name}, tmp_path / name, {"format": "pt"})
        (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": names}))
    else:
        save_file(state, tmp_path / "model.safetensors", {"format": "pt"})
    ref = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert ref.model.embed_tokens.weight.dtype == torch.bfloat16  # the oracle's reading
    ours = M.load_pretrained(tmp_path)
    assert {p.dtype for p in ours.parameters()} == {torch.bfloat16}
    same_outputs(ref, ours, "llama", atol=0.03)


def test_config_dtype_that_is_not_a_float_dtype_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(M.get_config("llama-tiny").to_hf() | dict(torch_dtype="int8")))
    with pytest.raises(ValueError, match=r"config.json: torch_dtype = 'int8' is not a torch floating-point dtype"):
        M.load_pretrained(tmp_path)


@pytest.mark.parametrize("kind, key", [("llama", "rms_norm_eps"), ("gpt2", "layer_norm_epsilon"),
                                       ("bert", "layer_norm_eps")])
def test_missing_eps_reads_transformers_default(kind, key, tmp_path):
    """A config.json without its norm eps (hand-written, old conversions): transformers' class default (Llama 1e-6,
    GPT-2 1e-5, BERT 1e-12), not a refusal (Llama, GPT-2: a KeyError named as a missing field)."""
    write(kind, tmp_path, drop=(key,))
    Config, Model, sizes = KINDS[kind]
    ref = Model.from_pretrained(tmp_path).eval()
    assert getattr(ref.config, key) == getattr(Config(), key)
    ours = M.load_pretrained(tmp_path)
    assert ours.config.norm_eps == getattr(Config(), key)
    same_outputs(ref, ours, kind)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_encoder_config_without_its_heads_is_refused(kind, tmp_path):
    """An encoder's config.json without num_attention_heads (hand-written), its weights from an 8-head model: named
    as a missing field, as a Llama's, GPT-2's or T5's shapes are. Was read as the toy default, 4 heads: every tensor
    fits, so it loaded without a word and gave other hidden states than the model saved (here by up to 0.15)."""
    Config = transformers.BertConfig if kind == "bert" else transformers.RobertaConfig
    Model = transformers.BertModel if kind == "bert" else transformers.RobertaModel
    extra = {} if kind == "bert" else dict(pad_token_id=1, type_vocab_size=1)
    ref = random_params(Model(Config(**BERT | extra | dict(num_attention_heads=8))), 7).eval()
    ref.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "num_attention_heads"}))
    with pytest.raises(ValueError, match=f"config.json: field 'num_attention_heads' is missing \\({kind} needs it\\)"):
        M.load_pretrained(tmp_path)
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "max_position_embeddings"):
        with pytest.raises(KeyError, match=key):                # every shape, as the other configs
            M.EncoderConfig.from_hf({k: v for k, v in ref.config.to_dict().items() if k != key})


@pytest.mark.parametrize("kind, key, value", [("llama", "hidden_act", "swish"),
                                              ("gpt2", "activation_function", "swish"),
                                              ("gpt2", "activation_function", "gelu_python"),
                                              ("gpt2", "activation_function", "gelu_fast"),
                                              ("bert", "hidden_act", "gelu_python")])
def test_activation_aliases_as_transformers_act2fn(kind, key, value, tmp_path):
    """ACT2FN's other names for the functions we have: "swish" is SiLU (was refused), "gelu_python" erf GELU,
    "gelu_fast" tanh GELU."""
    ref = write(kind, tmp_path, **{key: value})
    same_outputs(ref, M.load_pretrained(tmp_path), kind)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("classifier_dropout", [None, 0.0, 0.3])
def test_classifier_dropout_is_the_heads_rate(kind, classifier_dropout, tmp_path, monkeypatch):
    """classifier_dropout (was refused unless equal to hidden_dropout_prob): transformers drops at that rate before the
    head's linears (BERT: before classifier; RoBERTa: before dense and out_proj), the body at hidden_dropout_prob;
    None: the body's rate. The rates our dropout() is called with, in training, are the same."""
    Config = transformers.BertConfig if kind == "bert" else transformers.RobertaConfig
    Model = transformers.BertForSequenceClassification if kind == "bert" else \
        transformers.RobertaForSequenceClassification
    extra = {} if kind == "bert" else dict(pad_token_id=1, type_vocab_size=1)
    c = Config(**BERT, **extra, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
               classifier_dropout=classifier_dropout)
    ref = Model(c)
    ref.save_pretrained(tmp_path)
    head = [m.p for name, m in ref.named_modules() if isinstance(m, torch.nn.Dropout) and
            name.startswith(("dropout", "classifier"))]  # the oracle's head dropouts (BERT: 1, RoBERTa's: 1 shared)
    assert head == [0.1 if classifier_dropout is None else classifier_dropout]
    ours, rates = M.load_pretrained(tmp_path).train(), []
    body = M.dropout
    monkeypatch.setattr(M, "dropout", lambda x, p: rates.append(p) or body(x, p))
    ours.classify(ids())
    n_head = 1 if kind == "bert" else 2  # the last calls: the head's
    assert rates[-n_head:] == [head[0]] * n_head and set(rates[:-n_head]) == {0.1}


@pytest.mark.parametrize("kind", ["causal", "padding"])
def test_attention_with_dropout_takes_bf16_logits_in_fp32(kind):
    """Training on CPU (DropoutAttention) in bf16: q k^T in fp32, as SDPA's CPU kernels (our eval path) and GPT-2's
    reorder_and_upcast_attn compute it (the logits were rounded to bf16 first: output off by ~0.08, not ~0.008). The
    reference: the same bf16 q, k, v and dropout draw, in fp64."""
    g = torch.Generator().manual_seed(0)
    B, nh, S, hd, p = 2, 4, 40, 16, 0.1
    q, k, v = (torch.randn(B, nh, S, hd, generator=g) * (4 if i < 2 else 1) for i in range(3))  # logits ~ +-20
    q, k, v = q.bfloat16(), k.bfloat16(), v.bfloat16()
    allowed = torch.ones(S, S, dtype=torch.bool).tril()
    mask = None if kind == "causal" else allowed & (torch.arange(S) < 30 - torch.arange(B)[:, None, None, None])
    if mask is not None:
        mask = mask | ~mask.any(-1, keepdim=True)
    torch.manual_seed(1)
    got = M.attend(q, k, v, mask, dropout=p).double()
    torch.manual_seed(1)
    keep = torch.rand(B, nh, S, S) >= p                                   # the draw DropoutAttention makes first
    s = (q.double() @ k.double().transpose(-1, -2) * hd ** -0.5).masked_fill(~(allowed if mask is None else mask),
                                                                           float("-inf"))
    want = (s.softmax(-1) * keep / (1 - p) @ v.double()).transpose(1, 2).flatten(2)
    assert (got - want).abs().max() < 0.02  # bf16 rounding of the probabilities and the output: ~0.01


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_num_labels_without_id2label(kind, tmp_path):
    """A classifier's config.json with "num_labels": 3 and no id2label (hand-written): transformers builds 3 outputs
    (we read 2, HF's default without id2label, and refused the stored head's shape)."""
    Config, sizes = (transformers.BertConfig, BERT) if kind == "bert" else (transformers.GPT2Config, GPT2)
    Model = getattr(transformers, f"{'Bert' if kind == 'bert' else 'GPT2'}ForSequenceClassification")
    random_params(Model(Config(**sizes, num_labels=3, pad_token_id=0)), 2).save_pretrained(tmp_path)  # (GPT-2: HF
    # finds the last token by it; ids() has none)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items()
                                if k not in ("id2label", "label2id")} | dict(num_labels=3)))
    ref, ours, x = Model.from_pretrained(tmp_path).eval(), M.load_pretrained(tmp_path), ids()
    assert ref.config.num_labels == ours.config.num_labels == 3
    with torch.no_grad():
        torch.testing.assert_close(ours.classify(x), ref(x).logits, atol=1e-5, rtol=0)


MT5 = dict(architectures=["MT5ForConditionalGeneration"], d_ff=48, d_kv=8, d_model=32, decoder_start_token_id=0,
           dropout_rate=0.1, eos_token_id=1, feed_forward_proj="gated-gelu", initializer_factor=1.0,
           is_encoder_decoder=True, layer_norm_epsilon=1e-06, model_type="mt5", num_decoder_layers=2, num_heads=4,
           num_layers=2, pad_token_id=0, relative_attention_num_buckets=32, tie_word_embeddings=False,
           tokenizer_class="T5Tokenizer", vocab_size=V)  # google/mt5-small's config.json, sizes shrunk


@pytest.mark.parametrize("fields", [{}, dict(tie_word_embeddings=None), dict(feed_forward_proj="gated-silu"),
                                    dict(dense_act_fn="relu", is_gated_act=False)])
def test_mt5_loads_as_transformers_mt5(fields, tmp_path):
    """model_type "mt5" (was refused): T5 v1.1's layers; transformers' MT5 never scales the decoder output (T5 does
    when tied: tie_word_embeddings left out) and reads the activation as T5 does. Written back, transformers reads
    the same."""
    import checkpoint as C
    c = {k: v for k, v in (MT5 | fields).items() if v is not None}
    ref = transformers.MT5ForConditionalGeneration(transformers.MT5Config(**c))
    ref.lm_head.weight = torch.nn.Parameter(torch.empty(V, 32))  # mT5's own head, as published
    state = {k: v.contiguous() for k, v in random_params(ref, 5).state_dict().items()}
    C.save_safetensors(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(c))
    ref = transformers.MT5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    same_seq2seq(ref, M.load_pretrained(tmp_path), tmp_path / "back")


def same_seq2seq(ref, ours, back):
    """ours (a T5 or mT5) gives the reference's logits, fp32 to 1e-5, and saved to `back` transformers reads it to them."""
    x = ids()
    with torch.no_grad():
        want = ref(input_ids=x, decoder_input_ids=x[:, :5]).logits
        torch.testing.assert_close(ours(x, x[:, :5]), want, atol=1e-5, rtol=0)
        M.save_pretrained(ours, back)
        again = transformers.AutoModelForSeq2SeqLM.from_pretrained(back).eval()
        torch.testing.assert_close(again(input_ids=x, decoder_input_ids=x[:, :5]).logits, want, atol=1e-5, rtol=0)

QWEN3 = dict(LLAMA, head_dim=8, rope_theta=1e6, tie_word_embeddings=True)  # head_dim = hidden_size / heads


@pytest.mark.parametrize("built, drop, fields, window", [
    (dict(attention_bias=True), (), {}, None),                                  # read by Qwen3 (not by Qwen2)
    ({}, (), dict(mlp_bias=True), None),                                        # not read by Qwen3MLP
    ({}, ("rms_norm_eps", "max_position_embeddings"), {}, None),                # Qwen3Config's 1e-6 and 32768
    ({}, ("max_position_embeddings",), dict(rope_parameters=dict(rope_type="yarn", factor=4.0, rope_theta=1e4)), None),
    (dict(use_sliding_window=True, max_window_layers=1), ("sliding_window", "layer_types"), {}, 4096)],
    ids=["attention_bias", "mlp_bias", "no eps, no max_position_embeddings", "yarn, no max_position_embeddings",
         "use_sliding_window, no sliding_window"])
def test_qwen3_config_fields_as_transformers_reads_them(built, drop, fields, window, tmp_path):
    """Qwen3's config.json as Qwen3Config reads it: attention_bias puts a bias on q, k, v and o (Qwen2's class reads
    none); mlp_bias is no field of it; without eps or max_position_embeddings, its defaults (yarn's original length:
    32768); use_sliding_window without sliding_window: 4096, on the layers from max_window_layers on. Saved back,
    transformers reads the same Qwen3 (head_dim written, here hidden_size / heads: absent, Qwen3Config's is 128)."""
    random_params(transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**QWEN3 | built)), 7).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k not in drop} | fields))
    ref = transformers.Qwen3ForCausalLM.from_pretrained(tmp_path).eval()
    ours = M.load_pretrained(tmp_path)
    windows = {layer.self_attn.sliding_window for layer in ref.model.layers}
    assert max(windows - {None}, default=None) == window == ours.config.sliding_window   # the oracle's, and ours
    assert ours.config.bias == built.get("attention_bias", False) and ours.config.qk_norm
    same_outputs(ref, ours, "qwen3")
    M.save_pretrained(ours, tmp_path / "back")
    same_outputs(transformers.Qwen3ForCausalLM.from_pretrained(tmp_path / "back").eval(), ours, "qwen3")


def test_qwen3_with_its_own_head_dim_over_a_width_heads_do_not_divide(tmp_path):
    """Qwen3Config (as Qwen2's, Mistral's) takes any hidden_size beside an explicit head_dim: q_proj is hidden_size ->
    heads x head_dim, nothing divides the width. Was refused: 'hidden_size = 60 is not a multiple of
    num_attention_heads = 8'; now transformers' logits."""
    c = dict(QWEN3, hidden_size=60, num_attention_heads=8, num_key_value_heads=4, head_dim=16)
    random_params(transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**c)), 7).save_pretrained(tmp_path)
    ref = transformers.Qwen3ForCausalLM.from_pretrained(tmp_path).eval()
    ours = M.load_pretrained(tmp_path)
    assert ours.model.layers[0].self_attn.q_proj.weight.shape == (128, 60)
    same_outputs(ref, ours, "qwen3")
    M.save_pretrained(ours, tmp_path / "back")
    same_outputs(transformers.Qwen3ForCausalLM.from_pretrained(tmp_path / "back").eval(), ours, "qwen3")


def test_a_llama_with_odd_heads_is_refused_naming_them(tmp_path):
    """hidden_size 30 over 2 heads: heads of 15 dimensions, which RoPE cannot rotate in pairs; it failed at the first
    forward with a size mismatch (an explicit odd head_dim was refused already)."""
    c = M.LlamaConfig(n_embd=30, n_head=2, n_kv_head=2, n_ffn=64)
    with pytest.raises(ValueError, match=r"config.json: a head of 15 dimensions .* must be even"):
        M.check_config(c, "config.json")
    M.check_config(M.LlamaConfig(n_embd=32, n_head=2, n_kv_head=2), "config.json")  # 16: fine


@pytest.mark.parametrize("fields, named", [(dict(hidden_size=30), "hidden_size = 30 is not a multiple of n_head = 4"),
                                           (dict(num_attention_heads=5), "n_embd = 32 is not a multiple of "
                                                                         "num_attention_heads = 5")])
def test_gpt2_heads_that_do_not_divide_are_named_as_config_json_spells_them(fields, named, tmp_path):
    """GPT-2's config.json may spell n_embd and n_head as transformers' aliases (hidden_size, num_attention_heads),
    which win beside them. The refusal named our field with the alias's value ('n_embd = 30 is not a multiple of
    n_head = 4', where the file's n_embd is 32): it names the key the value came from."""
    random_params(transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2)), 7).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | fields))
    with pytest.raises(ValueError, match="must be divisible by num_heads"):  # transformers reads the alias too
        transformers.GPT2LMHeadModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"config.json: {named}$"):
        M.load_pretrained(tmp_path)


@pytest.mark.parametrize("kind, heads, kv", [("mistral", 16, None), ("qwen2", 64, None), ("qwen3", 64, None),
                                             ("llama", 16, "null"), ("llama", 16, None)])
def test_kv_heads_absent_or_null_as_each_class_reads_them(kind, heads, kv, tmp_path):
    """num_key_value_heads absent: the class's default (MistralConfig's 8, Qwen2's and Qwen3's 32; LlamaConfig's: as
    many as the query heads), null: as many as the query heads (LlamaConfig; transformers 5's other classes refuse a
    null). Was the query heads' count for all: "tensor
    'model.layers.0.self_attn.k_proj.weight' has shape (32, 64), expected (64, 64)" for a checkpoint transformers
    loads."""
    name = {"mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3", "llama": "Llama"}[kind]
    Config, Model = getattr(transformers, name + "Config"), getattr(transformers, name + "ForCausalLM")
    sizes = dict(LLAMA, hidden_size=2 * heads, num_attention_heads=heads, head_dim=2,
                 num_key_value_heads=heads if kv else {"mistral": 8, "llama": heads}.get(kind, 32))
    random_params(Model(Config(**sizes)), 7).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    c = {k: v for k, v in json.loads(path.read_text()).items() if k != "num_key_value_heads"}
    path.write_text(json.dumps(c | ({"num_key_value_heads": None} if kv else {})))
    ref = Model.from_pretrained(tmp_path).eval()
    assert ref.config.num_key_value_heads == (heads if kv else sizes["num_key_value_heads"])  # the oracle's reading
    ours = M.load_pretrained(tmp_path)
    assert ours.config.n_kv_head == ref.config.num_key_value_heads
    same_outputs(ref, ours, kind)



T5 = dict(vocab_size=V, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4)


@pytest.mark.parametrize("kind", ["gpt2", "t5", "mt5"])
@pytest.mark.parametrize("both", [False, True], ids=["alias only", "alias and own key"])
def test_attribute_map_aliases_win_as_transformers_reads_them(kind, both, tmp_path):
    """GPT2Config and T5Config (MT5Config) map hidden_size, num_attention_heads, ... onto n_embd, n_head, ... (d_model,
    num_heads, ...): transformers reads config.json's alias key, and where both are written the alias wins. Were read
    by their own keys only: 'field 'n_embd' is missing' for a config.json that spells them as aliases, and a GPT-2
    whose n_head (2) disagrees with num_attention_heads (4) computed with 2 heads: logits off by 0.13, no word."""
    name = {"gpt2": "GPT2", "t5": "T5", "mt5": "MT5"}[kind]
    Config = getattr(transformers, name + "Config")
    Model = getattr(transformers, name + ("LMHeadModel" if kind == "gpt2" else "ForConditionalGeneration"))
    random_params(Model(Config(**GPT2 if kind == "gpt2" else T5)), 7).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    c = json.loads(path.read_text())
    aliases = {alias: c[key] for alias, key in Config.attribute_map.items()}  # the values the weights were built with
    if both:  # own keys that disagree, with the same shapes (T5's position table has a column a head: d_kv and
        c |= dict(n_head=2) if kind == "gpt2" else dict(d_kv=16, num_heads=2)  # num_heads disagree: a shape error)
    else:
        c = {k: v for k, v in c.items() if k not in Config.attribute_map.values()}
    path.write_text(json.dumps(c | aliases))
    ref, x = Model.from_pretrained(tmp_path).eval(), ids()
    ours = M.load_pretrained(tmp_path)
    with torch.no_grad():
        want = ref(x).logits if kind == "gpt2" else ref(input_ids=x, decoder_input_ids=x[:, :5]).logits
        torch.testing.assert_close(ours(x) if kind == "gpt2" else ours(x, x[:, :5]), want, atol=1e-5, rtol=0)
    assert M.CONFIGS[kind].ALIASES == Config.attribute_map  # the oracle's table, all of it


CAUSAL = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, LLAMA, [True], [False]),
          "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, QWEN3, [True], [False]),
          "gpt2": (transformers.GPT2Config, transformers.GPT2LMHeadModel, GPT2, [True], [False]),
          "bert": (transformers.BertConfig, transformers.BertModel, BERT, [False], [True]),
          "t5": (transformers.T5Config, transformers.T5ForConditionalGeneration, T5, [], [True, False])}


@pytest.mark.parametrize("kind", CAUSAL)
def test_is_causal_in_config_json_is_read_or_refused(kind, tmp_path):
    """transformers 5 reads config.json's is_causal in every model's forward (masking_utils, the SDPA flag): False
    makes a decoder attend both ways (a bidirectional 'power feature', as embedding models use it), True makes an
    encoder causal, and either makes one of T5's stacks the other's kind. We read it nowhere: a Llama with is_causal
    false loaded without a word, logits 4.9 off transformers'. Now what is not the backbone's own attention is refused
    naming the field; the values that change nothing (and null, as if absent) load to transformers' outputs."""
    Config, Model, sizes, same, other = CAUSAL[kind]
    random_params(Model(Config(**sizes)), 7).save_pretrained(tmp_path)
    path, x = tmp_path / "config.json", ids()
    c = json.loads(path.read_text())

    def ref():  # transformers' reading of config.json as it now is
        with torch.no_grad():
            out = Model.from_pretrained(tmp_path).eval()(x, **dict(decoder_input_ids=x[:, :5]) if kind == "t5" else {})
        return out.last_hidden_state if kind == "bert" else out.logits

    def ours():
        with torch.no_grad():
            return M.load_pretrained(tmp_path)(x, *[x[:, :5]] if kind == "t5" else [])
    default = ref()
    for value in same + [None]:
        path.write_text(json.dumps(c | dict(is_causal=value)))
        torch.testing.assert_close(ref(), default, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours(), default, atol=1e-5, rtol=0)
    for value in other:
        path.write_text(json.dumps(c | dict(is_causal=value)))
        assert (ref() - default).abs().max() > 0.1  # the oracle's reading: another attention
        with pytest.raises(NotImplementedError, match=f"config.json: is_causal = {value} is not supported"):
            M.load_pretrained(tmp_path)


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_a_fresh_classifier_head_is_drawn_with_initializer_range(kind, tmp_path):
    """A classifier head the checkpoint lacks is drawn N(0, initializer_range), as transformers' _init_weights draws
    *ForSequenceClassification's. GPT-2's config.json value was not read: its fresh head was drawn with std 0.02
    where transformers draws 0.2 (BERT's was read already)."""
    Config, Model, sizes = KINDS[kind]
    random_params(Model(Config(**sizes, initializer_range=0.2)), 7).save_pretrained(tmp_path)
    Head = getattr(transformers, ("GPT2" if kind == "gpt2" else "Bert") + "ForSequenceClassification")
    want = Head.from_pretrained(tmp_path, num_labels=50).classifier.weight.std() if kind == "bert" else \
        Head.from_pretrained(tmp_path, num_labels=50).score.weight.std()
    assert abs(want - 0.2) < 0.02  # the oracle's reading (1600 draws: std known to ~2%)
    ours = M.load_pretrained(tmp_path).add_head(50)
    got = (ours.score if kind == "gpt2" else ours.classifier).weight.std()
    assert abs(got - want) < 0.02, (got, want)


@pytest.mark.parametrize("kind, pad", [("llama", 5), ("llama", -1), ("qwen3", 5), ("llama", None)])
def test_pad_token_id_row_gets_no_embedding_gradient_as_transformers(kind, pad, tmp_path):
    """Llama's, Mistral's and Qwen's transformers classes build embed_tokens with padding_idx=pad_token_id: that row
    gets no gradient from the lookup (-1: the last row, as nn.Embedding reads it). We ignored pad_token_id: full
    fine-tuning moved the row where transformers leaves it (its gradient 3.6 where transformers' is 0), wherever the
    pad id is a real token (a pad that is also the EOS). Gradients of the whole model compared, tied head too."""
    Config, Model, sizes = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, LLAMA),
                            "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, QWEN3)}[kind]
    random_params(Model(Config(**sizes, pad_token_id=pad)), 7).save_pretrained(tmp_path)
    x = torch.tensor([[3, 5, 7, 5, 9, V - 1, 11, 5, 4, V - 1]])   # the pad id (5 or V - 1) among the real tokens
    ref, ours = Model.from_pretrained(tmp_path).train(), M.load_pretrained(tmp_path).train()
    ref(x, labels=x).loss.backward()
    ours.requires_grad_(True)
    ours(x, labels=x).backward()
    want, got = dict(ref.named_parameters()), dict(ours.named_parameters())
    if pad is not None and not ref.config.tie_word_embeddings:  # the oracle's reading (tied: the head's gradient)
        assert (want["model.embed_tokens.weight"].grad[pad % V] == 0).all()
    for name, p in got.items():
        torch.testing.assert_close(p.grad, want[name].grad, atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize("tied", [True, False])
def test_t5_scale_decoder_outputs_null_is_false_as_transformers_reads_it(tied, tmp_path):
    """T5Config sets scale_decoder_outputs from tie_word_embeddings, then config.json's own value over it: a null
    there is None, and the decoder output is not scaled. We read a null as absent (scaled when tied): logits 2.9 off
    transformers', and saved back with true, so transformers read our copy another way too."""
    config = transformers.T5Config(**T5, tie_word_embeddings=tied)
    random_params(transformers.T5ForConditionalGeneration(config), 7).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | dict(scale_decoder_outputs=None)))
    ref = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert not ref.config.scale_decoder_outputs  # the oracle's reading
    same_seq2seq(ref, M.load_pretrained(tmp_path), tmp_path / "back")


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_num_labels_wins_over_a_shorter_id2label(kind, tmp_path):
    """A hand-edited classifier config.json with num_labels 3 beside an id2label of 2 entries: transformers 5 builds
    3 outputs (num_labels wins, with a warning). We counted id2label's entries and refused the stored head: "tensor
    'classifier.weight' has shape (3, 32), expected (2, 32)", naming the tensor, not the field."""
    Config, sizes = (transformers.BertConfig, BERT) if kind == "bert" else (transformers.GPT2Config, GPT2)
    Model = getattr(transformers, f"{'Bert' if kind == 'bert' else 'GPT2'}ForSequenceClassification")
    random_params(Model(Config(**sizes, num_labels=3, pad_token_id=0)), 2).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | dict(num_labels=3, id2label={"0": "a", "1": "b"})))
    ref, ours, x = Model.from_pretrained(tmp_path).eval(), M.load_pretrained(tmp_path), ids()
    assert ref.config.num_labels == ours.config.num_labels == 3
    with torch.no_grad():
        torch.testing.assert_close(ours.classify(x), ref(x).logits, atol=1e-5, rtol=0)
