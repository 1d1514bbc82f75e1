"""eval.py's evaluations: the MMLU prompt against a hand-written string, answer tokens for SentencePiece and byte-level
BPE, accuracies against a model whose answers are known, the KV-cache reuse against full forwards, perplexity against
a hand computation, generation with and without an adapter, and the loss-curve SVG."""
import csv
import json
import math
import random
import os
import xml.etree.ElementTree as ET

import pytest
import sentencepiece as spm
import torch
import torch.nn as nn
from tokenizers import ByteLevelBPETokenizer

import eval as E
import evalcli
import plot
from data import alpaca_prompt, read_mmlu_csv, text_examples
from lorasp import apply_lorasp, load_adapter, save_adapter
from model import LlamaConfig, build_model, generate, load_pretrained, save_pretrained
from tokenizer import load_tokenizer

DEV = [["What is 1 + 1?", "1", "2", "3", "4", "B"],
       ['Which word is "quoted", with a comma?', "this, one", "that", "none", "all", "A"],
       ["Pick D.", "a", "b", "c", "d", "D"]]
TESTS = {"high_school_physics": [["Is light a wave?", "yes", "no", "maybe", "never", "A"],
                                 ["2 * 3 =", "5", "6", "7", "8", "B"],
                                 ["Pick C.", "a", "b", "c", "d", "C"],
                                 ["Pick B.", "a", "b", "c", "d", "B"]],
         "anatomy": [["Bones in the ear?", "1", "3", "5", "7", "B"],
                     ["Pick B again.", "a", "b", "c", "d", "B"],
                     ["Pick D.", "a", "b", "c", "d", "D"]]}
CORPUS = [E.mmlu_prompt(s, DEV, row) + f" {row[5]}" for s, rows in TESTS.items() for row in rows] * 20


def write_mmlu(root):
    for split, tables in (("dev", {s: DEV for s in TESTS}), ("test", TESTS)):
        (root / split).mkdir(parents=True)
        for subject, rows in tables.items():
            with open(root / split / f"{subject}_{split}.csv", "w", newline="") as f:
                csv.writer(f).writerows(rows)
    return root


def small_llama(d, **config):
    """A tiny random Llama (2 layers, width 32, GQA) with the demo's 300-piece tokenizer, saved into folder d."""
    from fixtures import demo_tokenizer
    d.mkdir()
    tok = demo_tokenizer(d, 300)
    torch.manual_seed(0)
    save_pretrained(build_model(LlamaConfig(vocab_size=tok.vocab_size, n_layer=2, n_embd=32, n_head=4, n_kv_head=2,
                                            n_ffn=64, **config)), d)
    return tok


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random Llama in the HF layout with a SentencePiece tokenizer trained on MMLU-style text (LLaMA's ids)."""
    d = tmp_path_factory.mktemp("tiny")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(d / "tokenizer"), vocab_size=400,
                                   model_type="bpe", character_coverage=1.0, byte_fallback=True, unk_id=0, bos_id=1,
                                   eos_id=2, pad_id=-1, minloglevel=2)
    torch.manual_seed(0)
    save_pretrained(build_model(LlamaConfig(vocab_size=400, max_seq_len=512)), d)
    return d


def test_mmlu_prompt_is_the_original_format(tmp_path):
    root = write_mmlu(tmp_path)
    dev = read_mmlu_csv(root / "dev" / "anatomy_dev.csv")
    assert dev == DEV  # quoted fields with commas and quotes come back as written
    expected = ("The following are multiple choice questions (with answers) about  high school physics.\n\n"
                "What is 1 + 1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
                'Which word is "quoted", with a comma?\nA. this, one\nB. that\nC. none\nD. all\nAnswer: A\n\n'
                "2 * 3 =\nA. 5\nB. 6\nC. 7\nD. 8\nAnswer:")
    assert E.mmlu_prompt("high_school_physics", dev, TESTS["high_school_physics"][1], k=2) == expected
    (root / "test" / "bad_test.csv").write_text("q,a,b,c,d,E\n")
    with pytest.raises(ValueError, match="line 1"):
        read_mmlu_csv(root / "test" / "bad_test.csv")


def test_answer_tokens_sentencepiece_and_bpe(ckpt, tmp_path):
    """The id scored for each letter is the token that really follows "Answer:" in a prompt that goes on with " C":
    '▁C' for SentencePiece (LLaMA), 'ĠC' for byte-level BPE (GPT-2)."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=400, min_frequency=2, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(tmp_path))
    sp = spm.SentencePieceProcessor(model_file=str(ckpt / "tokenizer.model"))
    prompt = E.mmlu_prompt("anatomy", DEV, TESTS["anatomy"][0])
    for tok, piece in ((load_tokenizer(ckpt), sp.id_to_piece), (load_tokenizer(tmp_path), bpe.id_to_token)):
        ids = E.answer_ids(tok)
        assert [piece(i) for i in ids] in (["▁A", "▁B", "▁C", "▁D"], ["ĠA", "ĠB", "ĠC", "ĠD"])
        for letter, i in zip("ABCD", ids):
            assert tok.encode(prompt + " " + letter)[len(tok.encode(prompt))] == i


class Always(nn.Module):
    """A tiny Llama (so the KV cache is real) whose next-token logits favour one letter's token everywhere."""

    def __init__(self, ckpt, letter):
        super().__init__()
        self.inner, tok = load_pretrained(ckpt), load_tokenizer(ckpt)
        self.config, self.favourite = self.inner.config, E.answer_ids(tok)["ABCD".index(letter)]

    def forward(self, input_ids, cache=None, last_only=False):
        logits = self.inner(input_ids, cache=cache, last_only=last_only)
        return logits.index_fill(-1, torch.tensor([self.favourite]), 1e4)


def test_mmlu_accuracy_known_answers(ckpt, tmp_path):
    root, tok, lines = write_mmlu(tmp_path), load_tokenizer(ckpt), []
    r = E.mmlu(Always(ckpt, "B"), tok, root, log=lines.append)
    # always "B": physics answers A B C B -> 2/4, anatomy B B D -> 2/3 (subjects in file-name order)
    assert list(r["subjects"]) == ["anatomy", "high_school_physics"]
    assert r["subjects"] == pytest.approx({"anatomy": 2 / 3, "high_school_physics": 0.5})
    assert r["macro"] == pytest.approx((2 / 3 + 0.5) / 2) and r["micro"] == pytest.approx(4 / 7)
    assert r["questions"] == 7 and len(lines) == 2 and "3-shot" in lines[0]
    r = E.mmlu(Always(ckpt, "D"), tok, root, limit=2, log=lines.append)  # first two: physics A B, anatomy B B
    assert r["subjects"] == {"anatomy": 0.0, "high_school_physics": 0.0} and r["questions"] == 4
    r = E.mmlu(Always(ckpt, "C"), tok, root, subjects=["high_school_physics"], limit=3, log=lines.append)
    assert r["micro"] == r["macro"] == pytest.approx(1 / 3) and r["questions"] == 3


def test_mmlu_cache_reuse_and_long_prompts_match_full_forwards(ckpt, tmp_path):
    """Predictions with the reused KV cache equal those of one full forward per prompt; a prompt over the limit
    drops worked examples from the end until it fits. The LM head sees one position a prompt (ad5c0af's last_only:
    logits for every position of a few-hundred-token prompt were built and thrown away)."""
    root, tok, model = write_mmlu(tmp_path), load_tokenizer(ckpt), load_pretrained(ckpt)
    letters = E.answer_ids(tok)
    for max_len in (None, len(tok.encode(E.mmlu_prompt("anatomy", DEV, TESTS["anatomy"][0], k=2))) + 1):
        expected, shots = {}, []
        for s, rows in sorted(TESTS.items()):
            right = 0
            for row in rows:
                k = max(k for k in range(4) if max_len is None or len(tok.encode(E.mmlu_prompt(s, DEV, row, k))) <= max_len)
                logits = model(torch.tensor([tok.encode(E.mmlu_prompt(s, DEV, row, k))]))[0, -1]
                right += "ABCD"[int(logits[letters].argmax())] == row[5]
                shots.append(k)
            expected[s] = right / len(rows)
        seen = []                                              # the LM head's positions a forward (last_only: 1)
        hook = model.lm_head.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].shape[1]))
        result = E.mmlu(model, tok, root, max_len=max_len, log=lambda _: None)
        hook.remove()
        assert result["subjects"] == expected and result["shortened"] == sum(k < len(DEV) for k in shots)
        assert seen and set(seen) == {1}                       # MMLU reads the last position's logits alone
    assert shots[:3] == [2, 2, 2] and min(shots) < 2  # the limit did bite (7 prompts of the second pass)


def test_mmlu_command_line_with_adapter_and_nf4(ckpt, tmp_path, capsys):
    root, adapter = write_mmlu(tmp_path / "mmlu"), tmp_path / "adapter"
    torch.manual_seed(1)
    tuned = apply_lorasp(load_pretrained(ckpt), ["q_proj", "v_proj"], r=4)
    for m in tuned.modules():
        if hasattr(m, "B_train"):
            nn.init.normal_(m.B_train, std=0.5)
    save_adapter(tuned, adapter)
    E.main(["--task", "mmlu", "--model", str(ckpt), "--adapter", str(adapter), "--quant", "nf4", "--data-dir",
            str(root), "--limit", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    out = json.loads(lines[-1])
    ref = E.mmlu(load_adapter(load_pretrained(ckpt, quantize="nf4"), adapter), load_tokenizer(ckpt), root, limit=2,
                 log=lambda _: None)
    assert out == dict(task="mmlu", **ref) and out["questions"] == 4
    # --shots 5 (the default) with dev files of 3 rows: the prompts are 3-shot, and the summary says so (said 5-shot)
    assert out["shots"] == 3 and lines[-2].startswith("MMLU 3-shot (--shots 5: a dev file holds 3): macro")


def test_perplexity_by_hand(ckpt, tmp_path):
    model, tok = load_pretrained(ckpt), load_tokenizer(ckpt)
    ids = torch.randint(3, 400, (40,), generator=torch.Generator().manual_seed(0)).tolist()

    def nll(begin, end, targets):  # -log p(ids[j] | ids[begin:j]) for j in targets, from one window's logits
        logp = torch.log_softmax(model(torch.tensor([ids[begin:end]]))[0].double(), -1)
        return [-logp[j - begin - 1, ids[j]].item() for j in targets]

    # windows of 16 without overlap: each window's first token is not scored (nothing before it in the window)
    ref = nll(0, 16, range(1, 16)) + nll(16, 32, range(17, 32)) + nll(32, 40, range(33, 40))
    ppl, n = E.perplexity(model, [(ids, 1)], seq_len=16)
    assert n == 37 and ppl == pytest.approx(math.exp(sum(ref) / n), rel=1e-5)
    # stride 8: every token after the first scored once, by the first window that holds 8 tokens before it
    ref = nll(0, 16, range(1, 16)) + nll(8, 24, range(16, 24)) + nll(16, 32, range(24, 32)) + nll(24, 40, range(32, 40))
    ppl, n = E.perplexity(model, [(ids, 1)], seq_len=16, stride=8)
    assert n == 39 and ppl == pytest.approx(math.exp(sum(ref) / n), rel=1e-5)
    # Alpaca records: only the response and EOS are scored
    records = [{"instruction": "Say hi.", "input": "", "output": "Hi."}, {"instruction": "Add", "input": "1 2",
                                                                          "output": "3"}]
    (tmp_path / "a.json").write_text(json.dumps(records))
    docs = E.perplexity_docs(str(tmp_path / "a.json"), tok)
    for (doc, start), r in zip(docs, records):
        prompt = tok.encode(alpaca_prompt(r))
        assert doc == prompt + tok.encode(r["output"], bos=False, eos=True, after=True) and start == len(prompt)
    logp = [torch.log_softmax(model(torch.tensor([d]))[0].double(), -1) for d, _ in docs]
    ref = [-lp[j - 1, d[j]].item() for lp, (d, s) in zip(logp, docs) for j in range(s, len(d))]
    assert E.perplexity(model, docs) == (pytest.approx(math.exp(sum(ref) / len(ref)), rel=1e-5), len(ref))
    (tmp_path / "t.txt").write_text("Pick C. Answer: C")
    assert E.perplexity_docs(str(tmp_path / "t.txt"), tok) == [(tok.encode("Pick C. Answer: C", eos=True), 1)]


def test_windows_scored_together_give_the_same_perplexity_in_fewer_passes(ckpt):
    """perplexity(tokens=N) scores windows of several documents in one pass, right-padded: the same value as one
    window a pass (an NF4 base dequantizes every weight each pass: the demo's evaluate: line took 150 passes)."""
    model, rng = load_pretrained(ckpt).eval(), random.Random(0)
    docs = [([rng.randrange(64) for _ in range(n)], s) for n, s in ((5, 1), (23, 4), (40, 0), (70, 9), (13, 2), (2, 1))]
    passes, forward = [], model.forward
    model.forward = lambda ids, labels: passes.append(ids.shape) or forward(ids, labels=labels)
    one = E.perplexity(model, docs, seq_len=32, stride=24)
    n_one, passes[:] = len(passes), []
    together = E.perplexity(model, docs, seq_len=32, stride=24, tokens=96)
    assert together[1] == one[1] and together[0] == pytest.approx(one[0], rel=1e-6)
    assert len(passes) < n_one and all(B * T <= 96 or B == 1 for B, T in passes) and max(B for B, _ in passes) > 1


def test_perplexity_on_a_runs_heldout_records_says_their_notes_once(tmp_path, capsys):
    """Records with a field lorasp does not read and an input of "nan" are noted (data.read_records); eval.py
    --task perplexity on a run's heldout.jsonl read the file twice (perplexity_docs, then evalcli.trained_on, checking
    the records against the run's split) and said both notes twice. Once each now."""
    import train
    from fixtures import flags
    d = tmp_path / "m"
    small_llama(d)
    records = [dict(instruction=f"say {w}", input="nan" if i % 3 == 0 else "", output=w, system="be brief")
               for i, w in enumerate("the cat sat on a mat and then it ran far away from home".split() * 3)]
    (tmp_path / "r.json").write_text(json.dumps(records))
    train.main(flags((str(d), str(tmp_path / "r.json")), tmp_path / "out", "--max-steps", "1"))
    capsys.readouterr()
    E.main(["--task", "perplexity", "--model", str(d), "--adapter", str(tmp_path / "out" / "adapter"), "--data",
            str(tmp_path / "out" / "heldout.jsonl"), "--seq-len", "200"])
    err = capsys.readouterr().err
    assert err.count("heldout.jsonl: fields lorasp does not use (it reads instruction, input, output): 'system' in "
                     "4 records") == 1, err
    assert err.count("of the 4 records have the input 'nan'") == 1, err


@pytest.mark.parametrize("seq_len", [120, 400])
def test_records_perplexity_is_exp_val_loss_at_the_same_length_or_says_why_not(seq_len, tmp_path, capsys):
    """A train.py run's last validation loss and eval.py's perplexity on the run's heldout.jsonl at the same --seq-len:
    every record within it (400), exp(val_loss) is the perplexity and eval.py says so; some longer (120: cut, or left
    out where the prompt fills it, by train.py), the perplexity scores their tokens past it too and eval.py says how
    many and prints the records as train.py scored them, whose perplexity is exp(val_loss). The whole perplexity is
    perplexity() over the records unsplit. Was: "perplexity X over N tokens" alone, the two numbers apart unsaid."""
    import train
    from fixtures import flags
    d = tmp_path / "m"
    tok = small_llama(d)
    rng, words = random.Random(0), "the cat sat on a mat and then it ran far away from home".split()
    records = [dict(instruction=" ".join(rng.choices(words, k=rng.randrange(1, 20))), input="",
                    output=" ".join(rng.choices(words, k=rng.randrange(1, 40)))) for _ in range(40)]
    (tmp_path / "r.json").write_text(json.dumps(records))
    argv, out = flags((str(d), str(tmp_path / "r.json")), tmp_path / "out"), tmp_path / "out"
    argv[argv.index("--seq-len") + 1], argv[argv.index("--val-fraction") + 1] = str(seq_len), "0.25"  # 10 held out
    train.main(argv)
    val_loss = [json.loads(line) for line in open(out / "metrics.jsonl") if "val_loss" in line][-1]["val_loss"]
    capsys.readouterr()
    E.main(["--task", "perplexity", "--model", str(d), "--adapter", str(out / "adapter"), "--data",
            str(out / "heldout.jsonl"), "--seq-len", str(seq_len), "--dtype", "float32"])
    printed = capsys.readouterr().out
    result, held = json.loads(printed.splitlines()[-1]), [json.loads(line) for line in open(out / "heldout.jsonl")]
    docs = E.perplexity_docs(str(out / "heldout.jsonl"), tok)
    longer = sum(len(ids) > seq_len for ids, _ in docs)
    model = load_adapter(load_pretrained(d), str(out / "adapter")).eval()
    whole = E.perplexity(model, docs, seq_len)
    assert (result["perplexity"], result["tokens"]) == (pytest.approx(whole[0], rel=1e-6), whole[1])
    if seq_len == 400:  # every record fits: the two numbers agree
        assert longer == 0 and "as_trained" not in result and "every record fits in 400 tokens" in printed
        assert result["perplexity"] == pytest.approx(math.exp(val_loss), rel=1e-5)
    else:  # some longer (some of them left out by train.py): said, and the records as train.py scored them
        assert 0 < longer < len(held) and any(start >= seq_len for _, start in docs)
        assert f"{longer} of {len(held)} records are longer than 120 tokens" in printed and (
            f"leaves out the {sum(start >= seq_len for _, start in docs)} whose prompt fills it" in printed)
        assert result["as_trained"]["perplexity"] == pytest.approx(math.exp(val_loss), rel=1e-5)
        assert f"perplexity {result['as_trained']['perplexity']:.4f} over" in printed
        assert result["tokens"] > result["as_trained"]["tokens"] and result["perplexity"] != math.exp(val_loss)
    strided, n = E.records_perplexity(model, docs, seq_len, 50, None)[:2]  # (later windows overlapping: the same)
    assert (strided, n) == pytest.approx(E.perplexity(model, docs, seq_len, 50), rel=1e-6)


def test_records_whose_prompts_all_fill_seq_len_claim_no_val_loss(ckpt, tmp_path, capsys):
    """Every record's prompt longer than --seq-len: train.py's validation at that length leaves each one out
    (data.tokenize_records keeps none: no val_loss). eval.py printed "so scored, perplexity nan over 0 tokens,
    exp(its val_loss)" and {"as_trained": {"perplexity": NaN, ...}} (not JSON: NaN is no JSON value). Now it says
    train.py has no validation loss there, and the result holds no NaN; the perplexity is perplexity()'s over the
    records."""
    from data import tokenize_records
    records = [dict(instruction="a question about the answers " * (3 + i), input="", output="yes it is " * (1 + i))
               for i in range(4)]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    tok = load_tokenizer(str(ckpt))
    docs = E.perplexity_docs(str(tmp_path / "r.jsonl"), tok)
    seq_len = min(start for _, start in docs) - 1
    assert tokenize_records(records, tok, seq_len)[0] == []             # train.py validates on none of them
    E.main(["--task", "perplexity", "--model", str(ckpt), "--data", str(tmp_path / "r.jsonl"), "--seq-len",
            str(seq_len), "--dtype", "float32"])
    printed = capsys.readouterr().out
    result = json.loads(printed.splitlines()[-1], parse_constant=lambda c: pytest.fail(f"{c} in the result"))
    whole = E.perplexity(load_pretrained(ckpt).eval(), docs, seq_len)
    assert (result["perplexity"], result["tokens"]) == (pytest.approx(whole[0], rel=1e-6), whole[1])
    assert "as_trained" not in result and "nan" not in printed and "exp(its val_loss)" not in printed
    assert f"4 of 4 records are longer than {seq_len} tokens" in printed
    assert f"train.py's validation at --seq-len {seq_len} leaves out every one (its prompt fills it): it has no " \
           "validation loss" in printed


def test_the_evaluate_line_run_gives_exp_val_loss(tmp_path, capsys):
    """train.py's closing `evaluate:` command, pasted, on a run whose held-out records are longer than its --seq-len
    120: its records as train.py scored them have perplexity exp(val_loss). Was: the line passed no --seq-len, so
    eval.py cut at the model's context (256), the records whole: a perplexity the run's val_loss never measured, and
    nothing printed equal to exp(val_loss)."""
    import shlex

    import train
    from fixtures import flags
    d = tmp_path / "m"
    tok = small_llama(d, max_seq_len=256)
    rng, words = random.Random(0), "the cat sat on a mat and then it ran far away from home".split()
    records = [dict(instruction=" ".join(rng.choices(words, k=rng.randrange(1, 20))), input="",
                    output=" ".join(rng.choices(words, k=rng.randrange(1, 40)))) for _ in range(40)]
    (tmp_path / "r.json").write_text(json.dumps(records))
    argv, out = flags((str(d), str(tmp_path / "r.json")), tmp_path / "out"), tmp_path / "out"
    argv[argv.index("--seq-len") + 1], argv[argv.index("--val-fraction") + 1] = "120", "0.25"
    train.main(argv)
    val_loss = [json.loads(line) for line in open(out / "metrics.jsonl") if "val_loss" in line][-1]["val_loss"]
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("evaluate: python "))  # (eval.py's
    # path from another folder than lorasp's: `pytest tests/` from elsewhere)
    docs = E.perplexity_docs(str(out / "heldout.jsonl"), tok)
    assert any(len(ids) > 120 for ids, _ in docs) and all(len(ids) <= 256 for ids, _ in docs)  # (cut at 120 only)
    E.main(shlex.split(line)[3:])
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result.get("as_trained", result)["perplexity"] == pytest.approx(math.exp(val_loss), rel=1e-5), line
    assert "as_trained" in result and "--seq-len 120" in line  # (the whole records' perplexity beside it)


def test_a_txt_is_scored_as_train_py_learns_it(ckpt, tmp_path):
    """eval.py's perplexity reads a .txt as train.py does (each non-empty line BOS ... EOS): the `evaluate:` line of a
    .txt run scored the whole file as one document, newlines as tokens, a stream the model never trained on (5 steps
    on 300 lines: validation loss 1.3056, exp 3.69, while eval.py said 4.10)."""
    tok = load_tokenizer(ckpt)
    (tmp_path / "t.txt").write_text("Pick C. Answer: C\n\nPick A.\nAnswer: A\n" * 4)
    (doc, start), = E.perplexity_docs(str(tmp_path / "t.txt"), tok)
    blocks = text_examples(str(tmp_path / "t.txt"), tok, 4)
    assert start == 1 and doc[:4 * len(blocks)] == [i for b in blocks for i in b["input_ids"]]
    lines = ["Pick C. Answer: C", "Pick A.", "Answer: A"] * 4
    assert doc == [i for line in lines for i in tok.encode(line, eos=True)]


def test_byte_order_marks_are_not_text(ckpt, tmp_path):
    """A file saved with a UTF-8 byte-order mark (Excel's CSV, Notepad's text) reads as the same file without one:
    MMLU's first worked example, the perplexity text (the mark's tokens were scored), the first instruction, and
    records as .json/.jsonl (training, perplexity and --prompts read them alike). The perplexity text is tokenized
    by byte-level BPE too: SentencePiece's normalization drops U+FEFF by itself, GPT-2's bytes keep it (3 tokens)."""
    root, tok = write_mmlu(tmp_path / "mmlu"), load_tokenizer(ckpt)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=400, min_frequency=2, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(tmp_path))
    record = {"instruction": "Name three colors.", "input": "", "output": "Red, green, blue."}
    (tmp_path / "r.json").write_text(json.dumps([record]))
    (tmp_path / "r.jsonl").write_text(json.dumps(record) + "\n")
    for path, read in ((root / "dev" / "anatomy_dev.csv", read_mmlu_csv),
                       (tmp_path / "t.txt", lambda p: E.perplexity_docs(str(p), tok)),
                       (tmp_path / "b.txt", lambda p: E.perplexity_docs(str(p), load_tokenizer(tmp_path))),
                       (tmp_path / "p.txt", lambda p: E.read_prompts(str(p))),
                       (tmp_path / "r.json", lambda p: E.read_prompts(str(p))),
                       (tmp_path / "r.jsonl", lambda p: E.perplexity_docs(str(p), load_tokenizer(tmp_path)))):
        if not path.exists():
            path.write_text("Pick C. Answer: C\nName three colors.\n", encoding="utf-8")
        plain = read(path)
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
        assert read(path) == plain, path.name


def test_generate_side_by_side(ckpt, tmp_path, capsys):
    torch.manual_seed(2)
    tuned = apply_lorasp(load_pretrained(ckpt), ["q_proj", "v_proj", "down_proj"], r=4)
    for m in tuned.modules():
        if hasattr(m, "B_train"):
            nn.init.normal_(m.B_train, std=1.0)
    save_adapter(tuned, tmp_path / "adapter")
    (tmp_path / "prompts.txt").write_text("Pick B.\n\nWhat is 1 + 1?\n")
    E.main(["--task", "generate", "--model", str(ckpt), "--adapter", str(tmp_path / "adapter"), "--prompts",
            str(tmp_path / "prompts.txt"), "--max-new-tokens", "8"])
    out = capsys.readouterr().out
    answers = json.loads(out.strip().splitlines()[-1])["answers"]
    tok, base = load_tokenizer(ckpt), load_pretrained(ckpt)
    for a, instruction in zip(answers, ["Pick B.", "What is 1 + 1?"]):
        ids = torch.tensor([tok.encode(alpaca_prompt({"instruction": instruction}))])
        for key, m in (("base", base), ("adapted", tuned)):
            new = generate(m, ids, 8, eos_id=tok.eos_id)[0, ids.shape[1]:].tolist()
            assert a[key] == tok.decode([t for t in new if t != tok.eos_id]).strip()
        assert f"### {instruction}" in out
    assert len(answers) == 2 and answers[0]["base"] != answers[0]["adapted"]
    assert evalcli.side_by_side("a b c", "d\ne", width=3) == "a b | d\nc   | e"


def test_generate_checks_the_adapter_before_the_base_answers(ckpt, tmp_path, monkeypatch):
    """An adapter of another base (other widths) given to --task generate: refused before any answer is generated
    (it loaded after the base model's answers, so it failed after minutes of generation)."""
    save_adapter(apply_lorasp(build_model(LlamaConfig(vocab_size=400, n_embd=48, n_ffn=96)), ["q_proj"], r=4),
                 tmp_path / "adapter")
    (tmp_path / "prompts.txt").write_text("Pick B.\n")
    answered = []
    monkeypatch.setattr(E, "generate_answers", lambda *a, **k: answered.append(a) or [""])
    with pytest.raises(SystemExit, match=r"error: .*q_proj.*do not fit"):
        E.main(["--task", "generate", "--model", str(ckpt), "--adapter", str(tmp_path / "adapter"), "--prompts",
                str(tmp_path / "prompts.txt"), "--max-new-tokens", "2"])
    assert answered == []


def test_plot_svg(tmp_path, capsys):
    runs = {"full": [1, 2, 3, 4], "lora": [5, 4, 3], "lorasp": [5, 4.5, 4, 3.5, 3.2]}
    for name, losses in runs.items():
        (tmp_path / name).mkdir()
        rows = [dict(step=10 * (i + 1), loss=v, lr=1e-4) for i, v in enumerate(losses)]
        rows[1]["val_loss"] = 2.5
        rows.append(dict(step=20, loss=losses[1] - 0.1))  # a resumed run logs step 20 again: the last value wins
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "loss.svg"
    E.main(["--plot", *(str(tmp_path / n) for n in runs), "--out", str(out)])
    svg = ET.parse(out).getroot()
    ns = {"s": "http://www.w3.org/2000/svg"}
    lines = svg.findall("s:polyline", ns)
    assert len(lines) == 3 and len(svg.findall("s:circle", ns)) == 3
    for line, losses in zip(lines, runs.values()):
        xs, ys = zip(*(map(float, p.split(",")) for p in line.get("points").split()))
        assert len(xs) == len(losses) and all(a < b for a, b in zip(xs, xs[1:]))
        assert (ys[1] > ys[0]) == (losses[1] - 0.1 < losses[0])  # SVG y grows downwards: lower loss, larger y
    capsys.readouterr()                                        # --plot evaluates nothing: the flags that ask it
    E.main(["--plot", str(tmp_path / "full"), "--out", str(out), "--task", "mmlu", "--model", "m"])  # say so (were
    assert capsys.readouterr().out.splitlines() == [                                            # silently unused)
        "note: --model, --task have no effect with --plot (it draws the runs' loss curves and evaluates nothing)",
        f"wrote {out} (1 run)"]                                # (was "(1 runs)")
    texts = [t.text for t in svg.findall("s:text", ns)]
    assert all(n in texts for n in runs) and "step" in texts and "loss" in texts
    assert plot.ticks(0, 40) == [0, 10, 20, 30, 40] and plot.ticks(1.0, 5.0) == [1, 2, 3, 4, 5]


def test_plot_runs_whose_folders_share_a_name(tmp_path):
    """Runs in a/run and b/run each get their curve and a legend entry that tells them apart (the second was dropped:
    one curve, one "run" in the legend); a run given twice is an error naming it."""
    for name, losses in (("a", [3.0, 2.0]), ("b", [5.0, 4.0, 3.5])):
        (tmp_path / name / "run").mkdir(parents=True)
        rows = [dict(step=i + 1, loss=v) for i, v in enumerate(losses)]
        (tmp_path / name / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    svg = ET.fromstring(plot.plot_svg([tmp_path / "a" / "run", tmp_path / "b" / "run"]))
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert [len(p.get("points").split()) for p in svg.findall("s:polyline", ns)] == [2, 3]
    texts = [t.text for t in svg.findall("s:text", ns)]
    assert os.path.join("a", "run") in texts and os.path.join("b", "run") in texts and "run" not in texts
    assert plot.run_names(["x/out", "y/out", "z/other"]) == [os.path.join("x", "out"), os.path.join("y", "out"), "other"]
    with pytest.raises(plot.UserError, match="given twice"):
        plot.plot_svg([tmp_path / "a" / "run", str(tmp_path / "a" / "run") + "/"])
    (tmp_path / "link").symlink_to(tmp_path / "b")             # (drew b/run twice, as run and as link/run)
    real = os.path.realpath(tmp_path / "b" / "run")
    with pytest.raises(plot.UserError, match=rf"^--plot {tmp_path / 'b' / 'run'} and {tmp_path / 'link' / 'run'} are "
                                             rf"the same run \({real}, through a link\)"):
        plot.plot_svg([tmp_path / "a" / "run", tmp_path / "b" / "run", tmp_path / "link" / "run"])


def test_mmlu_dir_cache_and_errors(tmp_path, monkeypatch):
    """A cached copy (marked complete) is used without any download; a --data-dir without test/ is an error naming
    it. (A cached folder without the mark is redone: tests/test_bad_input.py.)"""
    from data import MMLU_DONE, mmlu_dir
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
    write_mmlu(tmp_path / "cache" / "mmlu" / "data")
    (tmp_path / "cache" / "mmlu" / "data" / MMLU_DONE).write_text("")
    assert mmlu_dir() == str(tmp_path / "cache" / "mmlu" / "data")
    assert mmlu_dir(str(tmp_path / "cache" / "mmlu" / "data")) == str(tmp_path / "cache" / "mmlu" / "data")
    with pytest.raises(SystemExit, match="no test/ folder"):
        mmlu_dir(str(tmp_path / "elsewhere"))


def test_mmlu_without_test_folder_names_the_folder(tmp_path, monkeypatch):
    """A cached MMLU marked complete whose test/ went since was said as 'None: no test/ folder' (and --data-dir's
    without 'error:'): the folder is named, with what to do."""
    from data import MMLU_DONE, mmlu_dir
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "mmlu" / "data"
    cached.mkdir(parents=True)
    (cached / MMLU_DONE).write_text("")
    with pytest.raises(SystemExit) as cache_error:
        mmlu_dir()
    assert str(cache_error.value).startswith(f"error: {cached} (delete it to fetch MMLU again): no test/ folder")
    with pytest.raises(SystemExit) as given_error:
        mmlu_dir(str(tmp_path / "elsewhere"))
    assert str(given_error.value).startswith(f"error: --data-dir {tmp_path / 'elsewhere'}: no test/ folder")


def test_a_window_past_the_context_is_warned_about(ckpt, tmp_path, capsys):
    """--seq-len past a Llama's context scores positions it never trained on (RoPE runs on, as in transformers):
    the result stands, with a warning (it had none)."""
    (tmp_path / "t.txt").write_text("Pick C. Answer: C\n" * 40)
    for seq_len, warned in (("512", False), ("600", True)):
        E.main(["--task", "perplexity", "--model", str(ckpt), "--data", str(tmp_path / "t.txt"), "--seq-len", seq_len])
        assert ("--seq-len 600 is past the model's context (512 tokens)" in capsys.readouterr().err) == warned


def test_help_names_the_tasks_each_flag_serves(capsys):
    """--batch-size sets squad's windows per forward pass too (evaluate_squad); its help named glue and wmt16-en-ro."""
    with pytest.raises(SystemExit):
        E.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--batch-size BATCH_SIZE glue, wmt16-en-ro: examples per forward pass; squad: windows" in text


def test_a_bad_mmlu_csv_is_refused_before_the_model_loads(ckpt, tmp_path, monkeypatch):
    """HF's cais/mmlu written out per subject (a header, question, subject, choices, answer 0-3) is refused naming the
    file and line; on a 7B or 70B model that came after minutes of loading (the subjects' names are checked first,
    their rows are not)."""
    root = write_mmlu(tmp_path / "mmlu")
    (root / "test" / "anatomy_test.csv").write_text("question,subject,choices,answer\nWhat?,anatomy,\"['a', 'b', "
                                                    "'c', 'd']\",1\n")

    def loaded(*args, **kwargs):
        raise RuntimeError("the model was loaded before the data was read")
    monkeypatch.setattr(E, "load_model", loaded)
    with pytest.raises(SystemExit, match=r"anatomy_test.csv, line 1: not question,A,B,C,D,answer"):
        E.main(["--task", "mmlu", "--model", str(ckpt), "--data-dir", str(root)])


@pytest.mark.parametrize("task, flag", [("perplexity", "--data"), ("generate", "--prompts")])
def test_a_bad_record_is_refused_before_the_model_loads(ckpt, tmp_path, monkeypatch, task, flag):
    """--task perplexity's --data and generate's --prompts were read after the model (mmlu's rows are read first): a
    record with no output, or a file that is not JSON, was named after minutes of loading a 7B or 70B model."""
    (tmp_path / "r.jsonl").write_text('{"instruction": "Say hi.", "input": "", "output": "Hi."}\n{"instruction": \n')

    def loaded(*args, **kwargs):
        raise RuntimeError("the model was loaded before the data was read")
    monkeypatch.setattr(E, "load_model", loaded)
    with pytest.raises(SystemExit, match=r"r.jsonl.* line 2"):
        E.main(["--task", task, "--model", str(ckpt), flag, str(tmp_path / "r.jsonl")])


def tiny_gpt2(d, n_positions=8):
    """A 1-layer GPT-2 of 10 byte-level tokens and n_positions learned positions, with its vocab.json and merges."""
    from model import GPT2Config
    save_pretrained(build_model(GPT2Config(vocab_size=10, n_positions=n_positions, n_layer=1, n_embd=8, n_head=2)), d)
    (d / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate("abcdefghij")}))
    (d / "merges.txt").write_text("#version: 0.2\n")
    return d


@pytest.mark.parametrize("task", ["perplexity", "mmlu"])
def test_seq_len_past_gpt2_positions_is_refused_before_the_weights_load(tmp_path, monkeypatch, task):
    """--seq-len past GPT-2's learned positions is refused from config.json, in one line naming the flag and the limit;
    it was refused once the model had loaded (minutes for a large one)."""
    d, text = tiny_gpt2(tmp_path / "gpt2"), tmp_path / "t.txt"
    text.write_text("abcdefghij" * 4)
    monkeypatch.setattr(E, "load_model", lambda *a, **k: pytest.fail("the weights loaded first"))
    data = ["--data", str(text)] if task == "perplexity" else ["--data-dir", str(write_mmlu(tmp_path / "mmlu"))]
    with pytest.raises(SystemExit, match=rf"^error: --seq-len 16: {d} has 8 positions; use --seq-len 8 or less$"):
        E.main(["--task", task, "--model", str(d), *data, "--seq-len", "16"])


def test_perplexity_reads_the_tokenizer_once(ckpt, tmp_path, monkeypatch, capsys):
    """perplexity's data is tokenized before the model loads (a bad record is named first); the model then takes that
    tokenizer (a real vocabulary takes seconds to read: it was read twice)."""
    import tokenizer
    read, real = [], tokenizer.load_tokenizer
    for module in (tokenizer, E, evalcli):
        if hasattr(module, "load_tokenizer"):
            monkeypatch.setattr(module, "load_tokenizer", lambda path: read.append(path) or real(path))
    (tmp_path / "t.txt").write_text("Pick C. Answer: C\n" * 10)
    E.main(["--task", "perplexity", "--model", str(ckpt), "--data", str(tmp_path / "t.txt")])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tokens"] > 0 and read == [str(ckpt)]


def test_a_weight_file_for_model_names_its_folder(ckpt):
    """--model given the weights file says to pass its folder, as train.py does (was: neither a checkpoint directory,
    a .gguf file nor a preset)."""
    with pytest.raises(SystemExit, match=rf"^error: --model {ckpt / 'model.safetensors'} is a file: pass its "
                                         rf"checkpoint's folder \({ckpt}: config.json and the weights\)"):
        E.main(["--task", "mmlu", "--model", str(ckpt / "model.safetensors")])


def test_a_model_the_task_does_not_take_is_refused_before_the_weights_load(ckpt, tmp_path, monkeypatch):
    """--task wmt16-en-ro on a Llama (a T5's task), or a GLUE task (a classifier's), is refused from config.json: it
    came after the weights had loaded (minutes for a 7B model), as a --seq-len past GPT-2's positions did."""
    import evalcli
    (tmp_path / "test.jsonl").write_text('{"translation": {"en": "a", "ro": "b"}}\n')
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\na b\t0\n")
    monkeypatch.setattr(evalcli, "load_pretrained", lambda *a, **k: pytest.fail("the weights loaded first"))
    with pytest.raises(SystemExit, match=rf"^error: --model {ckpt} is a llama, not a T5: --task wmt16-en-ro "
                                         "translates with T5$"):
        E.main(["--task", "wmt16-en-ro", "--model", str(ckpt), "--data-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match=rf"^error: --model {ckpt}: a llama has no classifier head; GLUE tasks take "
                                         "RoBERTa, BERT or GPT-2$"):
        E.main(["--task", "glue/sst2", "--model", str(ckpt), "--data-dir", str(tmp_path)])


def test_mmlu_rows_are_read_once_and_before_the_model_loads(ckpt, tmp_path, monkeypatch, capsys):
    """eval.py reads every subject's CSV files before the model loads (a bad row is named first) and scores those rows:
    it read each file again to score it (twice the reading; a file changed in between was scored unchecked)."""
    import data
    import evalcli
    root, read, real = write_mmlu(tmp_path / "mmlu"), [], data.read_mmlu_csv
    for module in (data, E, evalcli):
        if hasattr(module, "read_mmlu_csv"):
            monkeypatch.setattr(module, "read_mmlu_csv", lambda path: read.append(os.path.basename(path)) or real(path))
    E.main(["--task", "mmlu", "--model", str(ckpt), "--data-dir", str(root), "--limit", "2"])
    assert sorted(read) == sorted(f"{s}_{split}.csv" for s in TESTS for split in ("dev", "test"))
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ref = E.mmlu(load_pretrained(ckpt), load_tokenizer(ckpt), root, limit=2, log=lambda _: None)  # a folder: as before
    assert out == dict(task="mmlu", **ref) and out["questions"] == 4


def test_a_tasks_default_length_past_the_positions_is_refused_before_the_weights_load(tmp_path, monkeypatch):
    """GLUE's default length (128) past a toy GPT-2's positions, and squad's (384) past a toy BERT's, are refused from
    config.json, as an explicit --seq-len is: they were refused only once the weights had loaded. A causal LM answers
    SQuAD by generation, without windows: its positions do not refuse the default."""
    import evalcli
    from model import EncoderConfig
    gpt2, bert = tiny_gpt2(tmp_path / "gpt2"), tmp_path / "bert"
    save_pretrained(build_model(EncoderConfig(vocab_size=8)), bert)              # 64 positions
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\na b\t0\n")
    qa = {"id": "1", "question": "a?", "answers": [{"text": "b", "answer_start": 2}]}
    (tmp_path / "dev-v1.1.json").write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": "a b",
                                                                                              "qas": [qa]}]}]}))
    monkeypatch.setattr(evalcli, "load_pretrained", lambda *a, **k: pytest.fail("the weights loaded first"))
    for task, d, n, room in (("glue/sst2", gpt2, 128, 8), ("squad", bert, 384, 64)):
        with pytest.raises(SystemExit, match=rf"^error: --seq-len {n} \(the default\): {d} has {room} positions; use "
                                             rf"--seq-len {room} or less$"):
            E.main(["--task", task, "--model", str(d), "--data-dir", str(tmp_path)])
    with pytest.raises(pytest.fail.Exception, match="the weights loaded first"):  # past the checks: loading
        E.main(["--task", "squad", "--model", str(gpt2), "--data-dir", str(tmp_path)])


def test_a_paraphrase_adapter_is_scored_on_the_other_paraphrase_task(tmp_path, capsys):
    """MRPC's and QQP's heads mean the same (0: not a paraphrase, 1: a paraphrase; GLUE's two paraphrase tasks, scored
    alike: F1 and accuracy): a QQP adapter on MRPC, a zero-shot transfer, is said and scored, as QNLI's on RTE (was
    refused: "its scores would mean nothing"). Scored on the same pairs, it gives what it gives on its own task."""
    from model import EncoderConfig
    words = "a b c d e f".split()
    bert = tmp_path / "bert"
    save_pretrained(build_model(EncoderConfig(vocab_size=5 + len(words))), bert)
    (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]))
    rng = random.Random(0)
    pairs = [(" ".join(rng.choices(words, k=3)), " ".join(rng.choices(words, k=2)), i % 2) for i in range(10)]
    (tmp_path / "MRPC").mkdir()
    (tmp_path / "MRPC" / "dev.tsv").write_text("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + "".join(
        f"{y}\t{i}\t{i + 50}\t{a}\t{b}\n" for i, (a, b, y) in enumerate(pairs)), encoding="utf-8")
    (tmp_path / "QQP").mkdir()
    (tmp_path / "QQP" / "dev.tsv").write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n" + "".join(
        f"{i}\t{i}\t{i + 50}\t{a}\t{b}\t{y}\n" for i, (a, b, y) in enumerate(pairs)), encoding="utf-8")
    torch.manual_seed(0)
    for task in ("mrpc", "qqp"):
        model = apply_lorasp(load_pretrained(bert).add_head(2), ["query"], r=2)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.normal_(0, 0.5)
        save_adapter(model, tmp_path / task, task_type="SEQ_CLS", modules_to_save=("classifier",),
                     base=dict(task=f"glue/{task}"))
    for trained, other in (("qqp", "mrpc"), ("mrpc", "qqp")):
        scores = {}
        for task in (trained, other):
            E.main(["--task", f"glue/{task}", "--model", str(bert), "--adapter", str(tmp_path / trained),
                    "--data-dir", str(tmp_path), "--seq-len", "16"])
            captured = capsys.readouterr()
            scores[task] = json.loads(captured.out.strip().splitlines()[-1])["dev"]
        assert f"trained on glue/{trained}, not glue/{other}" in captured.err
        assert scores[other] == scores[trained] and set(scores[other]) == {"f1", "accuracy", "loss"}


def test_an_exports_record_is_read_once_for_an_adapter_put_on_it(tmp_path, monkeypatch, capsys):
    """evalcli.base_quant read an export's lorasp_merged.json 3 times for one adapter put on it (adapter.merged_already,
    merges for the stacked note, merges again for the tokenizer files export wrote): once now. Its adapter onto it is
    still refused, another one still noted as stacked."""
    import shutil

    import adapter
    import evalcli
    import export
    import train
    from fixtures import flags
    base = tmp_path / "base"
    small_llama(base)
    (tmp_path / "r.json").write_text(json.dumps(__import__("data").demo_records(20, seed=1)))
    train.main(flags((str(base), str(tmp_path / "r.json")), tmp_path / "out", "--max-steps", "1"))
    one = str(tmp_path / "out" / "adapter")
    export.main(["--model", str(base), "--adapter", one, "--out", str(tmp_path / "m")])
    two = shutil.copytree(one, tmp_path / "two")                # another adapter: its files' digest differs
    (two / "adapter_config.json").write_text((two / "adapter_config.json").read_text() + "\n")
    read, real = [], adapter.read_json
    monkeypatch.setattr(adapter, "read_json", lambda path: read.append(os.path.basename(path)) or real(path))
    capsys.readouterr()
    assert evalcli.base_quant(str(tmp_path / "m"), str(two), "auto") == "none"
    assert read.count("lorasp_merged.json") == 1
    assert f"note: --model {tmp_path / 'm'} holds {one} merged (export.py); --adapter {two} goes on top of it" in \
        capsys.readouterr().err
    read.clear()
    with pytest.raises(E.UserError, match=f"--adapter {one} is already merged into {tmp_path / 'm'} by export.py"):
        evalcli.base_quant(str(tmp_path / "m"), one, "auto")
    assert read.count("lorasp_merged.json") == 1


def test_plot_legend_fits_long_run_names_and_says_what_the_dots_are(tmp_path):
    """Legend names are drawn whole: the SVG widens for a long one (at 720 pixels the legend showed about 18
    characters of a name: 'lorasp-r16-alpha32-lr3e-4' and '...-lr3e-3' read the same); the dots are named."""
    names = ["sweep/lorasp-r16-alpha32-lr3e-4", "sweep/lorasp-r16-alpha32-lr3e-3"]
    for name in names:
        (tmp_path / name).mkdir(parents=True)
        rows = [dict(step=10, loss=3.0), dict(step=20, loss=2.0, val_loss=2.2)]
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    svg = ET.fromstring(plot.plot_svg([tmp_path / n for n in names]))
    ns = {"s": "http://www.w3.org/2000/svg"}
    width, font = float(svg.get("width")), float(svg.get("font-size"))
    legend = [t for t in svg.findall("s:text", ns) if t.text and t.text.startswith("lorasp-r16")]
    assert len(legend) == 2                                  # (each name: its folder, its parent shared)
    for t in legend:                                         # a sans-serif glyph is at most ~0.75 em wide on average
        assert float(t.get("x")) + 0.75 * font * len(t.text) <= width, t.text
    assert any(t.text == "dots: validation loss" for t in svg.findall("s:text", ns))
