"""generate.py --adapter: a train.py run's adapter (or a PEFT one) on its base continues a prompt with the greedy tokens
of transformers + PEFT's generate (PeftModel.from_pretrained, a test-only oracle) on the same base and adapter; an
adapter that does not fit, a folder that is not one, another base's and an NF4 base's adapter are said, as eval.py
says them."""
import json
import sys

import pytest
import torch
import transformers

import generate as G
import model as M
import tokenizer
import train
from fixtures import flags, random_params, tiny  # noqa: F401  (tiny: a fixture)
from lorasp import apply_lorasp, save_adapter

PROMPT = "The capital of France is"  # generate.py's default


def run(monkeypatch, *argv):
    """generate.py's main on argv; (the token ids it generated, fp32 greedy), captured as they leave generate."""
    got, original = [], G.generate

    def spy(*a, **k):
        got.append(out := original(*a, **k))
        return out
    with monkeypatch.context() as m:
        m.setattr(G, "generate", spy)
        m.setattr(sys, "argv", ["generate.py", "--dtype", "float32", "--device", "cpu", "--max-new-tokens", "12",
                                "--prompt", PROMPT, *argv])
        G.main()
    return got[0][0].tolist()


def hf_greedy(model, tok):
    """transformers' (or PEFT's) greedy continuation of PROMPT: the whole sequence, as ours."""
    ids = torch.tensor([tok.encode(PROMPT)])
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                              eos_token_id=list(tok.stops), pad_token_id=tok.stops[0])[0].tolist()


@pytest.fixture(scope="module")
def run_dir(tiny, tmp_path_factory):
    """A train.py run on the tiny Llama: OUT/adapter. (10 steps at lr 1e-3: the continuation changes from its third
    token; at 1e-2 the adapter ends every prompt at once, EOS, and one token would be all the test compares.)"""
    out = tmp_path_factory.mktemp("run") / "demo"
    train.main(flags(tiny, out, "--lr", "1e-3"))
    return out


def base(tiny):
    return transformers.LlamaForCausalLM.from_pretrained(tiny[0], dtype=torch.float32).eval()


def test_a_train_py_adapter_generates_as_peft(tiny, run_dir, monkeypatch, capsys):
    """`python generate.py --model M --adapter OUT/adapter`: PEFT's greedy tokens on transformers' Llama with the same
    adapter (was: "unrecognized arguments: --adapter"); OUT itself stands for OUT/adapter; without the adapter the
    tokens are the base's, and differ."""
    from peft import PeftModel
    tok = tokenizer.load_tokenizer(tiny[0])
    want = hf_greedy(PeftModel.from_pretrained(base(tiny), str(run_dir / "adapter")).eval(), tok)
    assert run(monkeypatch, "--model", tiny[0], "--adapter", str(run_dir / "adapter")) == want
    assert len(want) == len(tok.encode(PROMPT)) + 12  # (no EOS cut it short)
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == tok.decode(want) and "differ" not in err  # stdout: the text alone; its own base
    assert run(monkeypatch, "--model", tiny[0], "--adapter", str(run_dir)) == want
    assert f"its adapter, {run_dir / 'adapter'}" in capsys.readouterr().err
    plain = run(monkeypatch, "--model", tiny[0])
    assert plain == hf_greedy(base(tiny), tok) and plain != want


def test_a_peft_adapter_generates_as_peft(tiny, tmp_path, monkeypatch):
    """An adapter PEFT itself saved (get_peft_model, lora_B random) loads with its effective A and B: PEFT's tokens."""
    from peft import LoraConfig, get_peft_model
    peft = get_peft_model(base(tiny), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(n)))
    peft.save_pretrained(tmp_path / "peft")
    tok = tokenizer.load_tokenizer(tiny[0])
    want = hf_greedy(peft.eval(), tok)
    assert want != hf_greedy(base(tiny), tok) and len(want) == len(tok.encode(PROMPT)) + 12
    assert run(monkeypatch, "--model", tiny[0], "--adapter", str(tmp_path / "peft")) == want


def test_an_adapter_that_does_not_fit_or_is_none_is_one_line(tiny, tmp_path, monkeypatch, capsys):
    """Another base's adapter (other widths) is refused in one line naming both and the layer (eval.py's names the
    layer alone); so is a folder holding no adapter (before any weight loads) and a missing one; --adapter without
    --model (python model.py's demo) is an error."""
    other = M.build_model(M.LlamaConfig(vocab_size=200, n_layer=2, n_embd=48, n_head=4, n_kv_head=2, n_ffn=64))
    save_adapter(apply_lorasp(other, ["q_proj"], r=4), tmp_path / "other")
    with pytest.raises(SystemExit, match=rf"^error: --adapter {tmp_path / 'other'} on --model {tiny[0]}: model.layers.0"
                                         r".self_attn.q_proj: adapter A \(4, 48\), B \(48, 4\) do not fit Linear "
                                         r"32x32 with r=4$"):
        run(monkeypatch, "--model", tiny[0], "--adapter", str(tmp_path / "other"))
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(M, "load_pretrained", lambda *a, **k: pytest.fail("the weights loaded first"))
    with pytest.raises(SystemExit, match=rf"^error: --adapter {tmp_path / 'empty'}: no adapter_config.json; not an "
                                         r"adapter folder \(train.py's OUT/adapter"):
        run(monkeypatch, "--model", tiny[0], "--adapter", str(tmp_path / "empty"))
    with pytest.raises(SystemExit, match=rf"^error: --adapter {tmp_path / 'nowhere'}: no such folder$"):
        run(monkeypatch, "--model", tiny[0], "--adapter", str(tmp_path / "nowhere"))
    monkeypatch.setattr(sys, "argv", ["model.py", "--adapter", str(tmp_path / "other")])  # python model.py's demo
    with pytest.raises(SystemExit):
        G.main(demo=lambda: pytest.fail("the demo ran without its adapter"))
    assert "error: --adapter needs --model" in capsys.readouterr().err


def test_the_base_is_checked_as_eval_py_checks_it(tiny, tmp_path, monkeypatch, capsys):
    """An NF4-trained adapter: without --quantize the base loads in NF4, as it trained (said on stderr: stdout holds
    the text), and its tokens are our NF4 model's with the adapter; --quantize none says it runs on other weights. An
    adapter whose recorded base has other files but the same weights (its probe): a note naming the base."""
    from lorasp import load_adapter
    nf4 = apply_lorasp(M.load_pretrained(tiny[0], quantize="nf4", dtype=torch.float32), ["q_proj", "v_proj"], r=4)
    g = torch.Generator().manual_seed(0)                       # (the global one's state: the tests run before)
    with torch.no_grad():
        for n, p in nf4.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    save_adapter(nf4, tmp_path / "nf4", base={"quant": "nf4", "fingerprint": "0" * 64})
    got = run(monkeypatch, "--model", tiny[0], "--adapter", str(tmp_path / "nf4"))
    out, err = capsys.readouterr()
    assert "--quantize nf4: --adapter" in err and "trained on the NF4-quantized base" in err and "NF4" not in out
    assert f"note: --model {tiny[0]}: other files than --adapter {tmp_path / 'nf4'} trained on (another layout, " \
        "dtype or conversion), the same weights (" in err and "whose files differ" not in err   # (its probe)
    ours = load_adapter(M.load_pretrained(tiny[0], quantize="nf4", dtype=torch.float32), tmp_path / "nf4").eval()
    ids = torch.tensor([tokenizer.load_tokenizer(tiny[0]).encode(PROMPT)])
    assert got == M.generate(ours, ids, 12, eos_id=tokenizer.load_tokenizer(tiny[0]).stops)[0].tolist()
    assert len(got) == ids.shape[1] + 12
    unquantized = run(monkeypatch, "--model", tiny[0], "--adapter", str(tmp_path / "nf4"), "--quantize", "none")
    assert ("trained on an NF4 base; --quantize none scores it on other weights than it learned on (without --quantize, "
            "generate.py follows the adapter)") in capsys.readouterr().err
    assert unquantized != got  # NF4's rounding matters: the two bases continue otherwise


def test_a_gguf_base_by_another_name_and_one_with_other_bytes(tiny, tmp_path, monkeypatch, capsys):
    """An adapter train.py trained on a .gguf: through a symlink of another name it is the same base (no warning) and
    continues as load_adapter on that base does; a .gguf with other bytes is said to be another base; --quantize nf4
    on an adapter that trained unquantized is said too."""
    import shutil
    from test_gguf import llama_cpp_layout, llama_meta, write
    from lorasp import load_adapter
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    gguf = write(tmp_path / "Tiny.F32.gguf", llama_cpp_layout(random_params(transformers.LlamaForCausalLM(c), 0)
                                                              .state_dict(), c), llama_meta(c) | {
                                                                  "tokenizer.ggml.eos_token_id": 6})
    train.main(flags((str(gguf), tiny[1]), tmp_path / "out", "--max-steps", "4", "--lr", "3e-3"))
    (tmp_path / "smol.gguf").symlink_to(gguf)
    capsys.readouterr()
    got = run(monkeypatch, "--model", str(tmp_path / "smol.gguf"), "--adapter", str(tmp_path / "out"))
    assert "warning" not in capsys.readouterr().err
    ours = load_adapter(M.load_pretrained(gguf, dtype=torch.float32), tmp_path / "out" / "adapter").eval()
    ids = torch.tensor([tokenizer.load_tokenizer(gguf).encode(PROMPT)])
    assert got == M.generate(ours, ids, 12, eos_id=tokenizer.load_tokenizer(gguf).stops)[0].tolist()
    assert len(got) > ids.shape[1] + 2 and got != M.generate(M.load_pretrained(gguf, dtype=torch.float32), ids, 12,
                                                               eos_id=tokenizer.load_tokenizer(gguf).stops)[0].tolist()
    other = shutil.copy(gguf, tmp_path / "other.gguf")
    with open(other, "r+b") as f:                                      # other weights under the same name
        f.seek(-4, 2)
        f.write(b"\x00\x00\x00\x3f")                                # 0.5 (was 3.39e38: an Inf logit, now refused)
    shutil.move(other, gguf)
    run(monkeypatch, "--model", str(tmp_path / "smol.gguf"), "--adapter", str(tmp_path / "out"), "--quantize", "nf4")
    err = capsys.readouterr().err
    assert f"trained on a base whose files differ from {tmp_path / 'smol.gguf'}'s" in err
    assert "trained on an unquantized base; --quantize nf4 scores it on other weights" in err


def test_a_glue_or_squad_adapter_is_said_to_be_one(tmp_path, monkeypatch, capsys):
    """A GLUE adapter (GPT-2's score head in modules_to_save, as train.py saves it) was refused with "tensors lorasp
    does not load ... ['base_model.model.score.weight']" (and "trained on glue/sst2, not None"): it is said to be a
    classification adapter, before a weight loads, with the eval.py line that scores it; a span head likewise."""
    from tokenizers import ByteLevelBPETokenizer
    tk = ByteLevelBPETokenizer()
    tk.train_from_iterator(["hello world, hello there"] * 10, vocab_size=300, special_tokens=["<|endoftext|>"])
    tk.save_model(str(tmp_path))
    M.save_pretrained(M.build_model(M.GPT2Config(vocab_size=300)), tmp_path)
    glue = apply_lorasp(M.load_pretrained(tmp_path).add_head(2), ["c_attn"], r=4)
    save_adapter(glue, tmp_path / "glue", task_type="SEQ_CLS", modules_to_save=type(glue).head,
                 base={"task": "glue/sst2", "quant": "none"})
    monkeypatch.setattr(M, "load_pretrained", lambda *a, **k: pytest.fail("the weights loaded first"))
    with pytest.raises(SystemExit, match=rf"^error: --adapter {tmp_path / 'glue'} is a classification adapter \(its "
                                         r"classifier head, score, is in adapter_config.json's modules_to_save\): it "
                                         r"scores glue/sst2, it does not generate text; score it with python eval.py "
                                         rf"--task glue/sst2 --model {tmp_path} --adapter {tmp_path / 'glue'}$"):
        run(monkeypatch, "--model", str(tmp_path), "--adapter", str(tmp_path / "glue"))
    assert "not None" not in capsys.readouterr().err
    cfg = tmp_path / "glue" / "adapter_config.json"                     # a span head (PEFT's own adapter: no task)
    cfg.write_text(cfg.read_text().replace('"score"', '"qa_outputs"'))
    (tmp_path / "glue" / "lorasp_extras.safetensors").unlink()
    with pytest.raises(SystemExit, match=r"is a question-answering adapter \(its span head, qa_outputs, .*: it "
                                         r"scores SQuAD, it does not generate text; score it with python eval.py "
                                         r"--task squad "):
        run(monkeypatch, "--model", str(tmp_path), "--adapter", str(tmp_path / "glue"))
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "modules_to_save": None}))  # before PEFT 0.11
    with pytest.raises(SystemExit, match=r"is a classification adapter \(its classifier head, classifier, score, is "
                                         r"its task_type SEQ_CLS's, in its file \(modules_to_save null: PEFT before "
                                         r"0.11\)\): it scores a GLUE task"):  # (its weights loaded, then a traceback)
        run(monkeypatch, "--model", str(tmp_path), "--adapter", str(tmp_path / "glue"))


def test_a_preset_name_and_trains_dtype_names_are_read_as_eval_py_reads_them(tiny, monkeypatch, capsys, tmp_path):
    """`generate.py --model smollm2-135m` (a preset train.py fetched into the cache, as eval.py and export.py take it)
    was "neither config.json ... nor a .gguf file"; `--dtype bf16` (train.py's and export.py's spelling) was argparse's
    invalid choice, in generate.py and eval.py alike. A preset not in the cache says where it looked."""
    import shutil
    import evalcli
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
    shutil.copytree(tiny[0], tmp_path / "cache" / "models" / "llama2-7b")  # the tiny Llama standing in for the preset
    assert run(monkeypatch, "--model", "llama2-7b") == run(monkeypatch, "--model", str(tiny[0]))
    assert run(monkeypatch, "--model", str(tiny[0]), "--dtype", "fp32") == run(monkeypatch, "--model", str(tiny[0]))
    with monkeypatch.context() as m:
        m.setattr(sys, "argv", ["generate.py", "--model", "mistral-7b", "--device", "cpu"])
        with pytest.raises(SystemExit) as e:
            G.main()
    assert str(e.value).startswith("error: no weights for mistral-7b in " + str(tmp_path / "cache" / "models")), e.value
    (tmp_path / "x.txt").write_text("a line to score\n")
    args, _ = evalcli.parse_args(["--task", "perplexity", "--model", str(tiny[0]), "--data", str(tmp_path / "x.txt"),
                                  "--dtype", "bf16"])
    assert args.dtype == "bfloat16"
