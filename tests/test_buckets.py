"""CPU bf16 runs pad their batches to data.bucket_length's few lengths. oneDNN keeps what it set up for every bf16
matmul shape it meets (its primitive cache and ideep's: ~3 MiB per weight shape and length, plan.SHAPE_BYTES), so a run
padded to each batch's longest sequence grew with every new length the data brought: MiniLM on an SST-2-format file,
--seq-len 64, peaked at 1166 MiB against a plan of 528 (plan and peak now 768 and 771). Checked here: the lengths
themselves; the padding leaves every kind of loss as it was (fp32: to float rounding; bf16: within its rounding);
a train.py run on CPU bf16 meets only those lengths and the plan counts them, fp32 runs pad as before; --resume goes
on bit for bit with bf16's padding; a causal LM's vocabulary head meets few row counts too, and the plan counts a DDP
rank's. The evaluations pad too (eval.py): greedy generation's prompts (SmolLM2-135M on 40 prompt lengths: +107 MiB
over its warm-up, bucketed +1 MiB), translation sources, SQuAD windows, perplexity's last windows: the same answers
and scores as unpadded in fp32, and as transformers' on the same padded inputs (each family: RoPE, GPT-2's learned
positions, T5's relative buckets, BERT's segments, RoBERTa's pad-counted positions); eval.py pads where its linears
multiply bf16 on a CPU (bucket_limit), but not --task generate's one prompt at a time; train.py's check on CPU bf16."""
import json
import math
import random
import signal

import pytest
import torch
import torch.nn.functional as F
import transformers

import data
import model as M
import plan
import tokenizer
import train
from checkpoint import load_safetensors
from fixtures import fault_at_loss_call, flags, random_params, tiny  # noqa: F401  (tiny: a fixture)
from lorasp import apply_lorasp

BERT = M.EncoderConfig("bert", vocab_size=64, n_positions=64, n_embd=32, n_head=4, n_ffn=72)
HF_CAUSAL = {"llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
                 vocab_size=64, hidden_size=32, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=64)),
             "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
                 vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=1))}


@pytest.mark.parametrize("limit, count", [(64, 16), (100, 21), (512, 40), (10, 3)])
def test_bucket_lengths_are_few_and_at_most_an_eighth_longer(limit, count):
    padded = [data.bucket_length(n, limit) for n in range(1, limit + 1)]
    assert all(n <= b <= limit and b - n <= max(3, n // 8) for n, b in zip(range(1, limit + 1), padded))
    assert all(b % 4 == 0 or b == limit for b in padded) and padded == sorted(padded)
    assert len(set(padded)) == count, sorted(set(padded))
    assert data.bucket_length(70, 512) == 72 and data.bucket_length(130, 512) == 144 and data.bucket_length(5, 6) == 6


def tiny_model(kind):
    """A tiny random model of each kind of task, with LoRA-SP on its default targets, B nonzero so the adapter counts,
    in eval mode (no dropout: the two paddings must see the same function)."""
    torch.manual_seed(0)
    c = dict(lm=M.LlamaConfig(vocab_size=64, n_layer=2, n_embd=32, n_head=4, n_kv_head=2, n_ffn=72), glue=BERT,
             squad=BERT, seq2seq=M.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=72, num_heads=4))[kind]
    c = M.replace(c)                                                   # a copy: a head added is noted in the config
    m = M.build_model(c)
    m.add_head(2) if kind == "glue" else m.add_qa_head() if kind == "squad" else None
    apply_lorasp(m, train.TARGETS[c.model_type].split(","), r=4)
    for name, p in m.named_parameters():
        if name.endswith("B_train"):
            torch.nn.init.normal_(p, std=0.1)
    return m.eval()


def examples(kind, rng):
    """Five examples of 3 to 21 tokens (pairs: 3 to 21 each side) as each kind's data function makes them."""
    out = []
    for n in (3, 21, 7, 12, 9):
        ids = [rng.randrange(2, 64) for _ in range(n)]
        out.append(dict(
            lm=lambda: {"input_ids": ids, "labels": [data.IGNORE] * (n // 2) + ids[n // 2:]},
            glue=lambda: {"input_ids": ids, "token_type_ids": [0] * n, "labels": rng.randrange(2)},
            squad=lambda: {"input_ids": ids, "token_type_ids": [0] * n, "labels": (n // 3, n // 2)},
            seq2seq=lambda: (ids, [rng.randrange(2, 64) for _ in range(24 - n)]))[kind]())
    return out


@pytest.mark.parametrize("kind", ["lm", "glue", "squad", "seq2seq"])
def test_padding_to_a_bucket_leaves_every_loss_as_it_was(kind):
    """Each task's loss (train.py's) on one batch padded to its longest sequence and to bucket_length's: fp32 equal to
    rounding (padding is masked or IGNORE everywhere), bf16 autocast within bf16's rounding; the same count."""
    model, batch = tiny_model(kind), examples(kind, random.Random(0))
    loss_fn = dict(lm=train.causal_lm_loss, glue=train.classification_loss, squad=train.span_loss,
                   seq2seq=train.seq2seq_loss)[kind]
    pad_id = getattr(model.config, "pad_id", 0)
    longest, bucketed = data.collate(batch, pad_id), data.collate(batch, pad_id, bucket=64)
    assert longest["input_ids"].shape[1] == 21 and bucketed["input_ids"].shape[1] == 24  # the bucket pads 3 more
    for bf16 in (False, True):
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            (a, n), (b, m) = loss_fn(model, longest), loss_fn(model, bucketed)
        assert int(n) == int(m) > 0
        torch.testing.assert_close(b.float(), a.float(), rtol=2e-2 if bf16 else 1e-5, atol=0)


def glue_folder(root, n=96):
    """An SST-2-format folder whose sentences have 1 to 40 words: nearly as many lengths as --seq-len 48 allows."""
    rng, words = random.Random(1), "the a film was good bad very plot and but".split()
    for split in ("train", "dev"):
        (root / "SST-2").mkdir(parents=True, exist_ok=True)
        rows = [(" ".join(rng.choices(words, k=rng.randint(1, 40))), rng.randint(0, 1)) for _ in range(n)]
        (root / "SST-2" / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    return root


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"the a film was good bad very plot and but".split()]
    (d / "vocab.txt").write_text("\n".join(words) + "\n")
    torch.manual_seed(0)
    M.save_pretrained(M.build_model(M.replace(BERT, vocab_size=len(words))), d)
    return d


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_a_cpu_bf16_run_meets_few_lengths_and_the_plan_counts_them(dtype, bert_dir, tmp_path, monkeypatch, capsys):
    """train.py on CPU, every batch it makes (training and the dev set): bf16 pads to bucket_length's 12 lengths up to
    48, where the batches' longest sequences have over 20, and the plan's shapes part is SHAPE_BYTES per weight shape
    and length; fp32 (MKL keeps nothing per shape) pads to the longest sequence, as before, and plans no shapes."""
    made, collate = [], data.collate
    monkeypatch.setattr(data, "collate", lambda ex, *a, **k: made.append(
        (max(len(e["input_ids"]) for e in ex), (b := collate(ex, *a, **k))["input_ids"].shape[1])) or b)
    # the plan's runtime part is this process's resident size: past 1 GiB once an earlier test file here loaded real
    # models (pytest-xdist's order), and the plan is then in GiB; a fixed one keeps it in MiB whatever ran before
    monkeypatch.setattr(plan, "runtime_bytes", lambda device: 300 * plan.MiB)
    train.main(["--model", str(bert_dir), "--data", "glue/sst2", "--data-dir", str(glue_folder(tmp_path / "glue")),
                "--out", str(tmp_path / "out"), "--batch-size", "4", "--grad-accum", "1", "--seq-len", "48",
                "--epochs", "1", "--eval-every", "0", "--save-every", "0", "--device", "cpu", "--dtype", dtype])
    out = capsys.readouterr().out.splitlines()
    plan_line = next(line for line in out if line.startswith("memory plan (MiB)"))
    assert len(made) == 24 + 24 and len({n for n, _ in made}) > 20     # 24 training batches, 24 dev batches
    if dtype == "bf16":
        assert all(T == data.bucket_length(n, 48) for n, T in made) and len({T for _, T in made}) <= 12
        shapes = 3 + 2                                                 # (32, 32), (72, 32), (32, 72); A, B (r 16)
        assert plan_line.endswith(f"  shapes {plan.SHAPE_BYTES * shapes * 12 / plan.MiB:.0f}"), plan_line
        # once the data is read, the lengths its examples round up to: at least the batches' (a batch's is its
        # longest example's), at most every one up to --seq-len
        data_line = next(line for line in out if line.startswith("memory plan with the data's"))
        n = int(data_line.split()[5])
        assert len({T for _, T in made}) <= n <= 12
        assert f"shapes {plan.SHAPE_BYTES * shapes * n / plan.MiB:,.0f} MiB" in data_line, data_line
    else:
        assert all(T == n for n, T in made) and "shapes" not in plan_line
        assert not any(line.startswith("memory plan with the data's") for line in out)


def test_the_plan_counts_shapes_on_cpu_bf16_only():
    """SHAPE_BYTES x the block linears' and adapters' distinct shapes x the lengths up to --seq-len: Llama 2 7B at
    --seq-len 512 meets 40 lengths and 7 shapes: its linears' 3 (4096², 11008 x 4096 and back) and the adapters' 4
    ((16, 4096), (16, 11008), (4096, 16), (11008, 16)); and its head's row counts up to 4 x 512 tokens, 56. None in
    fp32 or on CUDA."""
    c, targets = plan.model_config("llama2-7b"), train.TARGETS["llama"].split(",")

    def shapes(*more):
        a = train.parse_args(["--model", "llama2-7b", "--data", "alpaca", "--quant", "nf4", "--checkpointing",
                              "selective", *more])
        return plan.estimate(c, a, targets, 0, 0)["shapes"]
    assert shapes("--device", "cpu", "--dtype", "bf16") == plan.SHAPE_BYTES * (7 * 40 + 56)
    assert shapes("--device", "cpu", "--dtype", "bf16", "--seq-len", "64") == plan.SHAPE_BYTES * (7 * 16 + 32)
    assert shapes("--device", "cpu", "--dtype", "fp32") == shapes("--device", "cuda", "--dtype", "bf16") == 0


def test_resume_goes_on_bit_for_bit_with_bf16_padding(tiny, tmp_path, monkeypatch):  # noqa: F811
    """tests/test_train.py's exact resume in bf16, whose batches are padded past their longest sequence (its runs are
    fp32): 6 steps straight vs Ctrl-C during step 4, then --resume: the same losses and adapter, bit for bit."""
    made, collate = [], data.collate
    monkeypatch.setattr(data, "collate", lambda ex, *a, **k: made.append(
        (max(len(e["input_ids"]) for e in ex), (b := collate(ex, *a, **k))["input_ids"].shape[1])) or b)
    more = ["--dtype", "bf16", "--max-steps", "6", "--save-every", "0", "--device", "cpu", "--log-every", "1"]
    straight = train.train(train.parse_args(flags(tiny, tmp_path / "a", *more)))
    assert any(T > n for n, T in made)                                 # padded past the longest
    fault_at_loss_call(monkeypatch, 7, signal.SIGINT)                  # step 4's first micro-batch
    with pytest.raises(SystemExit):
        train.main(flags(tiny, tmp_path / "b", *more))
    monkeypatch.undo()
    resumed = train.train(train.parse_args(flags(tiny, tmp_path / "b", *more, "--resume")))
    logs = [[json.loads(line) for line in open(tmp_path / r / "metrics.jsonl")] for r in "ab"]
    assert [(m["step"], m.get("loss"), m.get("val_loss")) for m in logs[0]] == \
        [(m["step"], m.get("loss"), m.get("val_loss")) for m in logs[1]] and len(logs[0]) == 7
    assert resumed["final_loss"] == straight["final_loss"]
    a, b = (load_safetensors(str(tmp_path / r / "adapter" / "adapter_model.safetensors")) for r in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_vocabulary_head_meets_few_row_counts_under_cpu_autocast(monkeypatch):
    """A causal LM's head multiplies only the scored rows (LinearCrossEntropy), whose count changes with every batch
    of instructions (~1 MiB of oneDNN's caches each, measured): under CPU autocast it meets bucket_length's counts,
    unscored rows filling the rest. In float64 (which autocast leaves alone) the loss and gradients are still those
    of F.cross_entropy on the full logits, to rounding."""
    torch.manual_seed(0)
    net = M.build_model("llama-tiny").double()
    ids, met = torch.randint(0, 256, (3, 11)), []
    apply = M.LinearCrossEntropy.apply
    monkeypatch.setattr(M.LinearCrossEntropy, "apply", lambda h, *a: met.append(len(h)) or apply(h, *a))
    for prompt in (1, 2, 3, 5):                                        # 30, 27, 24, 18 scored rows of 33
        labels = ids.clone()
        labels[:, :prompt] = -100
        logits = net(ids)
        ref = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        ref_grads = torch.autograd.grad(ref, list(net.parameters()))
        with torch.autocast("cpu", torch.bfloat16):
            loss = net(ids, labels=labels)
        torch.testing.assert_close(loss, ref)
        for g, r in zip(torch.autograd.grad(loss, list(net.parameters())), ref_grads):
            torch.testing.assert_close(g, r)
    assert met == [32, 28, 24, 20]


class ByteTok:
    """A tokenizer for generation tests: one id per character (2 + its code mod 60), EOS 1, pad 0."""
    eos_id, pad_id = 1, 0

    def encode(self, text, bos=True):
        return [2 + ord(ch) % 60 for ch in text]

    def decode(self, ids):
        return " ".join(map(str, ids))


def prefill_lengths(monkeypatch, module):
    """The T of every forward pass of module (a model, an encoder) with T > 1: prompts, sources; a list it fills."""
    met, forward = [], module.forward

    def counted(ids, *a, **k):
        met.extend([ids.shape[1]] if ids.shape[1] > 1 else [])
        return forward(ids, *a, **k)
    monkeypatch.setattr(module, "forward", counted)
    return met


@pytest.mark.parametrize("batch_size", [1, 3])
def test_generation_padded_to_a_bucket_answers_as_unpadded(batch_size, monkeypatch):
    """eval.generate_answers (train.py's held-out check) with bucket: prompts left-padded to bucket_length's few lengths
    behind the attention mask, the same greedy answers as unpadded, fp32 and (this model) CPU bf16 autocast; the
    prefill meets bucket_length's lengths only (the decoding steps are one token each: no new shape per step). In bf16
    a real model's near-ties can go either way: SDPA's key blocks see the prompt at another offset (SmolLM2-135M, 40
    prompts: 34 answers the same; fp32 all 40)."""
    import eval as E
    model = random_params(M.build_model(M.LlamaConfig(vocab_size=64, n_layer=2, n_embd=32, n_head=4, n_kv_head=2,
                                                      n_ffn=72)), 1)  # (random weights everywhere: varied answers)
    rng = random.Random(0)
    records = [{"instruction": "".join(rng.choice("abcdefgh ") for _ in range(n)), "input": "", "output": ""}
               for n in (1, 9, 4, 17, 30, 12, 6)]
    met = prefill_lengths(monkeypatch, model)
    for bf16 in (False, True):
        autocast = lambda: torch.autocast("cpu", torch.bfloat16, enabled=bf16)  # noqa: E731
        met.clear()
        plain = E.generate_answers(model, ByteTok(), records, 6, batch_size, autocast)
        longest = list(met)
        met.clear()
        padded = E.generate_answers(model, ByteTok(), records, 6, batch_size, autocast, bucket=512)
        assert padded == plain and len(set(plain)) > 1
        assert met == [data.bucket_length(T, 512) for T in longest] and len(set(met)) < len(set(longest))


def test_translation_padded_to_a_bucket_translates_as_unpadded(monkeypatch):
    """eval.translate (beam 2, one source a batch; train.py's --bleu check) with bucket: sources right-padded to
    bucket_length's lengths behind the encoder's mask, the same translations as unpadded, fp32 and CPU bf16; the
    encoder meets those lengths only (the decoder runs one token a step)."""
    import eval as E
    model = random_params(M.build_model(M.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=72, num_heads=4)), 1)
    rng = random.Random(0)
    sources = ["".join(rng.choice("abcdefgh ") for _ in range(n)) for n in (1, 9, 4, 17, 30, 12, 6)]
    met, encode = [], model.encode
    monkeypatch.setattr(model, "encode", lambda ids, *a: met.append(ids.shape[1]) or encode(ids, *a))
    for bf16 in (False, True):
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            met.clear()
            plain = E.translate(model, ByteTok(), sources, "", batch_size=1, num_beams=2, max_new_tokens=6)
            longest = list(met)
            met.clear()
            padded = E.translate(model, ByteTok(), sources, "", batch_size=1, num_beams=2, max_new_tokens=6,
                                 bucket=512)
        assert padded == plain and len(set(plain)) > 1
        assert met == [data.bucket_length(S, 512) for S in longest] and len(set(met)) < len(set(longest))


def test_squad_windows_padded_to_a_bucket_answer_as_unpadded(tmp_path, monkeypatch):
    """eval.evaluate_squad (train.py's SQuAD check) with bucket: each batch of windows padded to bucket_length's
    lengths behind the mask: fp32, the same answers as unpadded; bf16 weights (eval.py --dtype bfloat16), all but
    one of 24 (a random head's near-ties, moved by bf16's rounding of other shapes); the encoder meets bucket
    lengths only."""
    import eval as E
    from bench.toy_squad import write_toy
    squad, bert = write_toy(tmp_path, n_train=1, n_dev=24)
    dataset, tok = data.one_per_question(data.read_squad("dev", squad)), tokenizer.load_tokenizer(bert)
    for dtype in (torch.float32, torch.bfloat16):
        model = random_params(M.load_pretrained(bert).add_qa_head(), 0).to(dtype)
        met = prefill_lengths(monkeypatch, model)
        plain = E.evaluate_squad(model, tok, dataset, batch_size=4, max_len=64)
        longest = list(met)
        met.clear()
        padded = E.evaluate_squad(model, tok, dataset, batch_size=4, max_len=64, bucket=64)
        same = sum(padded[1][k] == a for k, a in plain[1].items())
        assert same == len(dataset) == 24 if dtype == torch.float32 else same >= 23
        assert len(set(plain[1].values())) > 1
        assert met == [data.bucket_length(T, 64) for T in longest] and len(set(met)) < len(set(longest))
        monkeypatch.undo()


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_perplexity_padded_to_a_bucket_scores_as_unpadded(kind, tmp_path, monkeypatch):
    """eval.perplexity with bucket (eval.py on bf16 weights), RoPE and GPT-2's learned positions: each document's
    last, shorter window right-padded to a bucket length, unscored: the same perplexity (fp32: to rounding) and token
    count; windows meet bucket lengths. Each padded window's loss is transformers' (labels=, the same ids) on it:
    fp32 to rounding, bf16 weights within 2%."""
    import eval as E
    random_params(HF_CAUSAL[kind](), 1).save_pretrained(tmp_path)
    rng = random.Random(0)
    docs = [([rng.randrange(64) for _ in range(n)], 0) for n in (5, 23, 40, 70, 13, 33)]
    for dtype in (torch.float32, torch.bfloat16):
        model = M.load_pretrained(tmp_path, dtype=dtype)
        ref = (transformers.LlamaForCausalLM if kind == "llama" else transformers.GPT2LMHeadModel).from_pretrained(
            tmp_path, dtype=dtype).eval()
        met, forward = [], model.forward
        monkeypatch.setattr(model, "forward", lambda ids, labels: met.append((ids, labels)) or forward(ids,
                                                                                                     labels=labels))
        plain = E.perplexity(model, docs, seq_len=32, stride=24)
        longest = [ids.shape[1] for ids, _ in met]
        met.clear()
        padded = E.perplexity(model, docs, seq_len=32, stride=24, bucket=32)
        assert padded[1] == plain[1] and padded[0] == pytest.approx(plain[0], rel=1e-5 if dtype == torch.float32
                                                                    else 2e-2)
        lengths = [ids.shape[1] for ids, _ in met]
        assert lengths == [data.bucket_length(T, 32) for T in longest] and len(set(lengths)) < len(set(longest))
        with torch.no_grad():                                         # transformers: mean NLL of the scored targets
            nll = sum(ref(ids, labels=labels).loss.item() * int((labels[:, 1:] != -100).sum()) for ids, labels in met)
        assert math.exp(nll / padded[1]) == pytest.approx(padded[0], rel=1e-5 if dtype == torch.float32 else 2e-2)
        monkeypatch.undo()


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_the_held_out_check_meets_bucket_prompt_lengths_on_cpu_bf16(dtype, tiny, tmp_path, monkeypatch):  # noqa: F811
    """train.py's before/after check (--exact-match) on CPU: bf16 pads its prompts to the bucket_length of the longest
    (within --seq-len), fp32 to the longest, as before."""
    import eval as E
    met, generate = [], E.generate
    monkeypatch.setattr(E, "generate", lambda m, ids, n, **k: met.append(
        (ids.shape[1], int(k["attention_mask"].sum(1).max()))) or generate(m, ids, n, **k))
    train.main(flags(tiny, tmp_path, "--dtype", dtype, "--max-steps", "1", "--exact-match", "6", "--device", "cpu"))
    assert len(met) == 2                                               # before and after: one batch each
    assert all(T == (data.bucket_length(n, 200) if dtype == "bf16" else n) for T, n in met), met
    assert dtype == "fp32" or any(T > n for T, n in met)


@pytest.mark.parametrize("rank, world", [(0, 1), (0, 2), (1, 2)])
def test_the_plan_counts_the_head_rows_each_rank_meets(rank, world):
    """plan.met's head row counts are those of the batches data.micro_batches gives this rank in the first epoch:
    under DDP a rank's share of global batches of --batch-size x world (it counted batches of --batch-size)."""
    rng = random.Random(0)
    examples = []
    for _ in range(64):
        n, prompt = rng.randint(4, 40), rng.randint(1, 30)
        examples.append({"input_ids": [5] * n, "labels": [data.IGNORE] * min(prompt, n - 1) + [5] * (n - min(prompt,
                                                                                                             n - 1))})
    args = train.parse_args(["--model", "llama-tiny", "--data", "alpaca", "--batch-size", "4", "--seq-len", "48",
                             "--device", "cpu", "--dtype", "bf16"])
    batches = data.micro_batches(examples, 4, args.seed, rank=rank, world=world, accum=data.step_groups(args))
    made = [next(batches) for _ in range(-(-len(examples) // (4 * world)))]           # the first epoch
    rows = {data.bucket_length(int((b["labels"][:, 1:] != data.IGNORE).sum()), 4 * 48) for b in made}
    assert plan.met(examples, [], args, rank, world)[1] == len(rows) > 3


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_eval_py_pads_where_the_weights_are_bf16_on_a_cpu(dtype, tiny, monkeypatch, capsys):  # noqa: F811
    """eval.py --task perplexity on Alpaca records (one document each, of many lengths), scored several a pass:
    --dtype bfloat16 on a CPU (oneDNN's bf16 matmuls) pads each pass to a bucket length and to that length's full
    count of rows (one shape a length), float32 pads to the pass's longest document only (bucket_limit)."""
    import eval as E
    met, forward = [], M.Llama.forward
    monkeypatch.setattr(M.Llama, "forward", lambda self, ids, *a, **k: met.append(tuple(ids.shape)) or forward(
        self, ids, *a, **k))
    E.main(["--task", "perplexity", "--model", tiny[0], "--data", tiny[1], "--dtype", dtype, "--device", "cpu",
            "--seq-len", "200"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lengths = sorted(len(ids) for ids, _ in data.perplexity_docs(tiny[1], tokenizer.load_tokenizer(tiny[0])))
    assert len(set(lengths)) > 5 and result["tokens"] > 0 and 1 < len(met) < len(lengths)
    if dtype == "bfloat16":
        buckets = {data.bucket_length(n, 200) for n in lengths}
        assert {T for _, T in met} <= buckets and all(B == 4096 // T for B, T in met)
        assert len(set(met)) == len({T for _, T in met})      # one shape a length
    else:
        assert {T for _, T in met} <= set(lengths) and sum(B for B, _ in met) == len(lengths)


def test_eval_py_squad_on_a_causal_lm_pads_prompts_within_its_context(tmp_path, monkeypatch, capsys):
    """eval.py --task squad on a causal LM (GPT-2) with bf16 weights: each generated answer's prompt is padded to
    bucket_length's lengths up to the model's context less the answer's 32 tokens, whatever --seq-len says (its note:
    no effect on a causal LM). The limit was --seq-len (default 384): with --seq-len 64 no prompt was padded."""
    import eval as E
    from bench.toy_squad import write_gpt2, write_toy
    squad, _ = write_toy(tmp_path, n_train=1, n_dev=6)
    gpt2 = write_gpt2(tmp_path)                                        # 256 positions: prompts pad up to 224
    met = []
    monkeypatch.setattr(E, "generate", lambda m, ids, n, generate=E.generate, **k: met.append(
        (ids.shape[1], int(k["attention_mask"].sum()))) or generate(m, ids, n, **k))
    runs = []
    for more in ([], ["--seq-len", "64"]):
        met.clear()
        E.main(["--task", "squad", "--model", gpt2, "--data-dir", squad, "--dtype", "bfloat16", *more])
        runs.append((list(met), json.loads(capsys.readouterr().out.strip().splitlines()[-1])))
    (plain, a), (short, b) = runs
    assert plain == short and a == b and len(plain) == 6 and all(n > 64 for _, n in plain)
    assert [T for T, _ in plain] == [data.bucket_length(n, 256 - 32) for _, n in plain] != [n for _, n in plain]


def linear_input_dtypes(m, *inputs):
    """The dtypes every linear (dense or NF4) multiplies in, recorded on one forward pass: what oneDNN sees."""
    from quant import NF4Linear
    seen = []
    hooks = [mod.register_forward_hook(lambda mod, x, y: seen.append(x[0].dtype)) for mod in m.modules()
             if isinstance(mod, (torch.nn.Linear, NF4Linear))]
    with torch.no_grad():
        m(*inputs)
    for h in hooks:
        h.remove()
    return set(seen)


@pytest.mark.parametrize("kind", ["llama", "gpt2", "bert", "t5"])
def test_bucket_limit_pads_where_the_linears_multiply_bf16(kind, tmp_path):
    """eval.bucket_limit against what the linears really multiply in (hooks): each family loaded dense or NF4, fp32 or
    bf16, with a span head (fp32) and a LoRA-SP adapter: a limit exactly where they multiply bf16 (NF4 computes in its
    input's dtype: bf16 embeddings, bf16 matmuls). An fp32 model under CPU bf16 autocast multiplies bf16 too: a limit
    (it said None, reading the fp32 weights)."""
    import eval as E
    c = dict(llama=M.LlamaConfig(vocab_size=64, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, n_ffn=128),
             gpt2=M.GPT2Config(vocab_size=64, n_positions=64, n_layer=2, n_embd=64, n_head=4),
             bert=M.replace(BERT, n_embd=64, n_ffn=128),
             t5=M.T5Config(vocab_size=64, d_model=64, d_kv=16, d_ff=128, num_heads=4))[kind]
    M.save_pretrained(M.build_model(c), tmp_path)
    x = torch.randint(2, 60, (1, 8))
    for quantize in (None, "nf4"):
        for dtype in (torch.float32, torch.bfloat16):
            m = M.load_pretrained(tmp_path, quantize=quantize, dtype=dtype)
            m = m.add_qa_head() if kind == "bert" else m
            apply_lorasp(m, train.TARGETS[c.model_type].split(","), r=4)
            assert linear_input_dtypes(m, *(x, x)[:2 if kind == "t5" else 1]) == {dtype}
            assert E.bucket_limit(m, 48) == (48 if dtype == torch.bfloat16 else None), (quantize, dtype)
    with torch.autocast("cpu", torch.bfloat16):
        assert linear_input_dtypes(m, *(x, x)[:2 if kind == "t5" else 1]) == {torch.bfloat16}
        assert E.bucket_limit(m, 48) == 48                             # (m: NF4 in bf16; an fp32 one below)
        m32 = M.load_pretrained(tmp_path, dtype=torch.float32)        # (autocast casts inside F.linear)
        assert E.bucket_limit(m32, 48) == 48
    assert E.bucket_limit(m32, 48) is None


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_padded_prompts_answer_as_unpadded_and_as_transformers(kind, tmp_path, monkeypatch):
    """eval.generate_answers with bucket, per family: RoPE (Llama) and learned absolute positions (GPT-2), where a
    left pad must not move a real token's position, nor be attended through the KV cache. fp32: the same answers as
    unpadded and as transformers' generate on the same padded ids and attention mask (its position ids from the mask),
    one prompt and three a batch. bf16 weights: each token of each padded answer is transformers' greedy choice on
    that padded row and the answer so far, to bf16's rounding (its logit within 0.1 of transformers' largest: a
    random GPT-2's near-ties, 3.1011 vs 3.0829 in fp32, tie at 3.0781 in transformers' bf16, padded or not), and the
    prompts' last logits are transformers' within 0.1. Prompts are bare ids: the Alpaca template's shared ending
    left a tiny random model one answer (seeds: models with varied answers)."""
    import eval as E
    random_params(HF_CAUSAL[kind](), dict(llama=1, gpt2=3)[kind]).save_pretrained(tmp_path)
    monkeypatch.setattr(E, "alpaca_prompt", lambda r: r["instruction"])
    rng = random.Random(0)
    records = [{"instruction": "".join(rng.choice("abcdefghijklmnop") for _ in range(n))} for n in (1, 9, 5, 17, 30,
                                                                                                   11, 6, 23)]
    for dtype in (torch.float32, torch.bfloat16):
        ours = M.load_pretrained(tmp_path, dtype=dtype)
        ref = (transformers.LlamaForCausalLM if kind == "llama" else transformers.GPT2LMHeadModel).from_pretrained(
            tmp_path, dtype=dtype).eval()
        for batch_size in (1, 3):
            plain = E.generate_answers(ours, ByteTok(), records, 8, batch_size)
            padded = E.generate_answers(ours, ByteTok(), records, 8, batch_size, bucket=64)
            assert len(set(padded)) > 2 and (dtype == torch.bfloat16 or padded == plain)
            for s in range(0, len(records), batch_size):
                prompts = [ByteTok().encode(r["instruction"]) for r in records[s:s + batch_size]]
                T = data.bucket_length(max(map(len, prompts)), 64 - 8)
                assert T > min(map(len, prompts))                      # every batch has a padded row
                ids = torch.tensor([[0] * (T - len(p)) + p for p in prompts])
                mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
                with torch.no_grad():
                    out = ref.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, eos_token_id=1,
                                       pad_token_id=1)[:, T:].tolist()    # (finished rows: EOS, as ours)
                    want = ref(ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
                    tol = 1e-4 if dtype == torch.float32 else 0.1
                    torch.testing.assert_close(ours(ids, attention_mask=mask, last_only=True)[:, -1].float(),
                                               want[:, -1].float(), rtol=0, atol=tol)
                    for row, (p, answer) in enumerate(zip(prompts, padded[s:s + batch_size])):
                        new = [int(t) for t in answer.split()]         # (ByteTok: ids joined by spaces)
                        if dtype == torch.float32:
                            assert new == [t for t in out[row] if t != 1]
                        x = torch.tensor([[0] * (T - len(p)) + p + new])
                        m = (torch.arange(x.shape[1]) >= T - len(p)).long()[None]   # (ids 0: pads, and answers)
                        pos = (m.cumsum(-1) - 1).clamp(min=0)
                        z = ref(x, attention_mask=m, position_ids=pos).logits[0, T - 1:-1]  # (n, vocab)
                        chosen = z.float().gather(-1, torch.tensor(new)[:, None])[:, 0]  # (n,) our tokens' logits
                        assert (chosen >= z.float().max(-1).values - tol).all()


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_padded_windows_give_span_logits_as_transformers(kind, tmp_path):
    """SQuAD windows (evaluate_squad's batches: data.sorted_batches) padded to bucket lengths, per encoder: BERT's
    segments (token_type_ids, pads 0) and RoBERTa's position ids counted from input_ids != pad_id (right padding
    moves none). fp32: every real token's start and end logits as padded to the longest (1e-5) and each window's best
    span the same; bf16 weights: transformers' *ForQuestionAnswering on the same padded batch within 0.1 at real
    tokens, and the same best spans but for near-ties."""
    import eval as E
    cls = dict(bert=(transformers.BertConfig, transformers.BertForQuestionAnswering),
               roberta=(transformers.RobertaConfig, transformers.RobertaForQuestionAnswering))[kind]
    extra = dict(type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5, max_position_embeddings=66) \
        if kind == "roberta" else dict(type_vocab_size=2, max_position_embeddings=64)
    random_params(cls[1](cls[0](vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, **extra)), 0).save_pretrained(tmp_path)
    rng, windows = random.Random(0), []
    for n in (5, 23, 9, 14, 30, 11, 17, 6):
        q = rng.randint(2, n - 2)                                       # question tokens, then context tokens
        windows.append({"input_ids": [rng.randrange(3, 64) for _ in range(n)],
                        "token_type_ids": [0] * q + [int(kind == "bert")] * (n - q), "labels": (0, 0),
                        "offsets": [None] * q + [(i, i + 1) for i in range(n - q)]})
    for dtype in (torch.float32, torch.bfloat16):
        ours = M.load_pretrained(tmp_path, dtype=dtype)
        ref = cls[1].from_pretrained(tmp_path, dtype=dtype).eval()
        pad, spans = ours.config.pad_id, {}
        assert pad == (1 if kind == "roberta" else 0)
        for bucket in (None, 64):
            for rows, b in data.sorted_batches(windows, 3, pad, bucket=bucket):
                args = [b[k] for k in ("input_ids", "attention_mask", "token_type_ids")]
                assert bucket is None or b["attention_mask"].sum(1).max() < b["attention_mask"].shape[1]  # padded past
                with torch.no_grad():
                    start, end = ours.span_logits(*args)
                    hf = ref(*args)
                for r, i in enumerate(rows):
                    n, w = len(windows[i]["input_ids"]), windows[i]
                    got = torch.stack([start[r, :n], end[r, :n]])
                    want = torch.stack([hf.start_logits[r, :n], hf.end_logits[r, :n]]).float()
                    torch.testing.assert_close(got, want, rtol=0, atol=1e-4 if dtype == torch.float32 else 0.1)
                    spans.setdefault(i, {})[bucket] = got, E.best_span(start[r], end[r], w["offsets"])[1:]
                    spans[i][bucket, "hf"] = E.best_span(hf.start_logits[r].float(), hf.end_logits[r].float(),
                                                         w["offsets"])[1:]
        assert len({s[64][1] for s in spans.values()}) > 3
        for s in spans.values():
            if dtype == torch.float32:
                torch.testing.assert_close(s[64][0], s[None][0], rtol=0, atol=1e-5)
                assert s[64][1] == s[None][1] == s[64, "hf"]
        same = sum(s[64][1] == s[64, "hf"] for s in spans.values())
        assert same >= len(windows) - 1


def test_padded_sources_translate_as_transformers(tmp_path):
    """eval.translate (beam 2, batches of 3) with sources right-padded to bucket lengths, on T5's relative position
    buckets (8 buckets up to distance 20: pads reach the log-spaced ones): fp32, the unpadded translations and
    transformers' generate(num_beams=2) on the same padded batch and mask; the encoder's real rows as transformers'
    (1e-4; bf16 weights 0.1), bf16's translations transformers' but for near-ties."""
    import eval as E
    c = transformers.T5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                              relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
                              decoder_start_token_id=0, feed_forward_proj="relu")
    random_params(transformers.T5ForConditionalGeneration(c), 0).save_pretrained(tmp_path)
    rng = random.Random(0)
    sources = ["".join(rng.choice("abcdefghijklmnop") for _ in range(n)) for n in (1, 9, 5, 17, 30, 11, 6, 23)]
    for dtype in (torch.float32, torch.bfloat16):
        ours = M.load_pretrained(tmp_path, dtype=dtype)
        ref = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path, dtype=dtype).eval()
        kw = dict(prefix="", batch_size=3, num_beams=2, max_new_tokens=6)
        plain, padded = E.translate(ours, ByteTok(), sources, **kw), E.translate(ours, ByteTok(), sources, **kw,
                                                                                 bucket=512)
        assert dtype == torch.bfloat16 or padded == plain
        order, hf = sorted(range(len(sources)), key=lambda i: len(sources[i])), {}
        for s in range(0, len(order), 3):
            ids = [ByteTok().encode(sources[i]) for i in order[s:s + 3]]
            S = data.bucket_length(max(map(len, ids)), 512)
            assert S > min(map(len, ids))
            x = torch.tensor([i + [0] * (S - len(i)) for i in ids])
            mask = (x != 0).long()                                     # (ByteTok's ids are 2..61)
            with torch.no_grad():
                out = ref.generate(input_ids=x, attention_mask=mask, num_beams=2, length_penalty=0.6, do_sample=False,
                                   max_new_tokens=6)
                want, got = ref.encoder(input_ids=x, attention_mask=mask).last_hidden_state, ours.encode(x, mask)
            torch.testing.assert_close(got[mask.bool()].float(), want[mask.bool()].float(), rtol=0,
                                       atol=1e-4 if dtype == torch.float32 else 0.1)
            hf.update(zip(order[s:s + 3], out.tolist()))
        strip = lambda ids: [t for t in ids if t > 1]                  # noqa: E731  (start, pads, EOS)
        same = sum(strip(map(int, a.split())) == strip(hf[i]) for i, a in enumerate(padded))
        assert len(set(padded)) > 3 and same >= len(sources) - (dtype == torch.bfloat16)


def test_eval_py_generate_runs_each_prompt_unpadded_in_bf16(tiny, tmp_path, monkeypatch, capsys):  # noqa: F811
    """eval.py --task generate, one prompt at a time, bf16 weights on a CPU: each prompt runs as it is, no pad and no
    attention mask, as transformers' generate does (and as MMLU's prompts run). Padded to a bucket length, SmolLM2-
    135M-Instruct's bf16 greedy answers to 40 prompts (20 tokens) were its unpadded ones for only 29, transformers'
    on the same padded prompts for 34; unpadded they are transformers' for all 40 (fp32: all 40 every way)."""
    import eval as E
    met, generate = [], E.generate
    monkeypatch.setattr(E, "generate", lambda m, ids, n, **k: met.append(
        (ids.shape[1], k["attention_mask"])) or generate(m, ids, n, **k))
    prompts = ["Name a color.", "Say a long thing about rivers and the sea and a boat.", "Why?", "List three cities."]
    (tmp_path / "p.txt").write_text("\n\n".join(prompts) + "\n")
    E.main(["--task", "generate", "--model", tiny[0], "--prompts", str(tmp_path / "p.txt"), "--dtype", "bfloat16",
            "--device", "cpu", "--max-new-tokens", "4"])
    tok = tokenizer.load_tokenizer(tiny[0])
    lengths = [len(tok.encode(data.alpaca_prompt({"instruction": p, "input": ""}))) for p in prompts]
    assert [T for T, _ in met] == lengths != [data.bucket_length(n, 1 << 16) for n in lengths]
    assert all(mask is None for _, mask in met)
    answers = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["answers"]
    model = M.load_pretrained(tiny[0], dtype=torch.bfloat16)
    assert [a["base"] for a in answers] == E.generate_answers(model, tok, [{"instruction": p} for p in prompts], 4)


def test_gpt2_squad_answers_padded_as_unpadded(tmp_path, monkeypatch):
    """eval.evaluate_squad on a causal LM (GPT-2's learned positions: each answer generated from its left-padded
    prompt): fp32 and bf16 weights, every answer and score as unpadded; the prompts met at bucket lengths."""
    import eval as E
    from bench.toy_squad import write_gpt2, write_toy
    squad, _ = write_toy(tmp_path, n_train=1, n_dev=24)
    gpt2 = write_gpt2(tmp_path)
    dataset, tok = data.one_per_question(data.read_squad("dev", squad)), tokenizer.load_tokenizer(gpt2)
    for dtype in (torch.float32, torch.bfloat16):
        model = random_params(M.load_pretrained(gpt2), 1).to(dtype)
        met = prefill_lengths(monkeypatch, model)
        plain = E.evaluate_squad(model, tok, dataset)
        longest = list(met)
        met.clear()
        padded = E.evaluate_squad(model, tok, dataset, bucket=256)
        assert padded == plain and len(set(plain[1].values())) > 3
        assert met == [data.bucket_length(T, 256 - 32) for T in longest] != longest
        monkeypatch.undo()


def test_gpt2_glue_padded_classifies_as_unpadded_and_as_transformers(tmp_path):
    """eval.evaluate_glue on GPT-2 (the classifier reads the last real token, learned positions) with bucket: fp32,
    the same logits as padded to the longest (via the metrics and loss) and as transformers'
    GPT2ForSequenceClassification on the same padded batch (it finds the last token that is not pad_token_id)."""
    import eval as E
    c = transformers.GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=4, num_labels=2,
                                pad_token_id=0)
    random_params(transformers.GPT2ForSequenceClassification(c), 0).save_pretrained(tmp_path)
    ours, ref = M.load_pretrained(tmp_path).add_head(2), transformers.GPT2ForSequenceClassification.from_pretrained(
        tmp_path).eval()
    rng = random.Random(0)
    dev = {"validation": [{"input_ids": [rng.randrange(1, 64) for _ in range(n)], "token_type_ids": [0] * n,
                           "labels": rng.randrange(2)} for n in (3, 21, 7, 12, 9, 30, 5, 17)]}
    plain, padded = E.evaluate_glue(ours, "sst2", dev, 3), E.evaluate_glue(ours, "sst2", dev, 3, bucket=64)
    (p,), (q,) = plain.values(), padded.values()
    assert p["accuracy"] == q["accuracy"] and p["loss"] == pytest.approx(q["loss"], rel=1e-6)
    for rows, b in data.sorted_batches(dev["validation"], 3, 0, bucket=64):
        assert b["attention_mask"].sum(1).max() < b["input_ids"].shape[1]  # padded past the longest
        with torch.no_grad():
            torch.testing.assert_close(ours.classify(b["input_ids"], b["attention_mask"]),
                                       ref(b["input_ids"], attention_mask=b["attention_mask"]).logits, atol=1e-4,
                                       rtol=0)
