"""SQuAD v1.1: eval.squad_scores on a worked example whose every score is written out by hand from the official
evaluate-v1.1.py's definitions (cases where EM and F1 part ways); the windows and character offsets against
transformers' tokenizer (overflowing windows with offsets) and hand-counted labels; the best span against a brute-force
search; the span head's logits against transformers' BertForQuestionAnswering / RobertaForQuestionAnswering on the
same random weights; a toy run through train.py that learns (EM rises) and eval.py reproducing it; GPT-2's
generative path on contexts longer than its positions; the files fetched once from a local stand-in server, the
pinned sha256 refusing anything else."""
import hashlib
import json
import random
import re
import signal
import string
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
import transformers
from tokenizers import ByteLevelBPETokenizer

import data
import eval as E
import model as M
import tokenizer
import train
from bench.toy_squad import write_gpt2, write_toy
from fake_hub import serve
from fetch_real import path
from fixtures import fault_at_loss_call, random_params
from tokenizer import CJK


def article(*qas, context="ctx"):
    return {"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": str(i), "question": "q", "answers": [{"text": g, "answer_start": 0} for g in golds]}
        for i, golds in enumerate(qas)]}]}


def test_squad_scores_worked_example():
    assert E.squad_normalize("The  Eiffel-Tower, (an) icon!") == "eiffeltower icon"  # punctuation before articles
    assert E.squad_normalize("Theater a.n. THE") == "theater"  # "a.n." loses its dots, then "an" is an article
    assert E.squad_normalize("1–2 ’s") == "1–2 ’s"  # only ASCII punctuation goes
    golds = [["the Denver Broncos"], ["Denver Broncos"], ["Denver", "Denver Broncos"], ["a"], ["cat"], ["Paris"]]
    pred = {"0": "Denver Broncos",        # EM 1, F1 1: the article is normalized away
            "1": "Broncos",               # EM 0, F1 2PR/(P+R) with P = 1, R = 1/2: 2/3
            "2": "Denver Broncos team",   # max over golds: "Denver" P 1/3 R 1 -> 1/2; "Denver Broncos" P 2/3 R 1 -> 4/5
            "3": "The",                   # both normalize to "": EM 1, but F1 0 (no common token; v1.1's rule)
            "4": "the cat, the cat!"}     # "cat cat" vs "cat": EM 0, common 1, P 1/2 R 1 -> 2/3; "5": no prediction
    scores = E.squad_scores([article(*golds)], pred)
    assert scores["exact_match"] == pytest.approx(100 * 2 / 6)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 4 / 5 + 0 + 2 / 3 + 0) / 6)
    assert E.squad_f1("Broncos", "Denver Broncos") == 2 * 1 * 0.5 / (1 + 0.5)  # the script's float, bit for bit


def official_v11(dataset, predictions):
    """evaluate-v1.1.py's normalize_answer, f1_score, exact_match_score and evaluate, written out from its definition
    (the script itself is not a package): the oracle for squad_scores."""
    def normalize(s):
        s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())

    def f1(prediction, truth):
        p, t = normalize(prediction).split(), normalize(truth).split()
        same = sum((Counter(p) & Counter(t)).values())
        return 0 if same == 0 else (2 * (same / len(p)) * (same / len(t))) / (same / len(p) + same / len(t))
    em = f = total = 0
    for qa in (qa for article in dataset for paragraph in article["paragraphs"] for qa in paragraph["qas"]):
        total += 1
        if qa["id"] in predictions:
            truths = [a["text"] for a in qa["answers"]]
            em += max(normalize(predictions[qa["id"]]) == normalize(t) for t in truths)
            f += max(f1(predictions[qa["id"]], t) for t in truths)
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f / total}


def test_squad_scores_equal_the_official_script_on_unicode_answers(capsys):
    """Several answers a question, articles and punctuation next to Unicode letters, spaces and marks (NBSP, U+3000,
    U+2028, curly quotes and dashes the script keeps), missing predictions: squad_scores == the script's, exactly."""
    rng = random.Random(0)
    pool = ["the", "a", "an", "The", "AN", "théâtre", "an-", "the.", "a,", "ANd", "Paris", "Παρίσι", "İstanbul", "ß",
            "ΣΑΣ", "1,000", "3.5", "–", "’", "'s", "“x”", "(b)", "\u00a0", "\u3000", "\u2028", "\t", "日本", "🙂", "a_b",
            "x\u0301", "ǅ", "ﬁ"]
    text = lambda: "".join(rng.choice(pool) + rng.choice(["", " ", "  ", ".", ","])  # noqa: E731
                           for _ in range(rng.randint(0, 6)))
    for _ in range(500):
        golds = [[text() for _ in range(rng.randint(1, 4))] for _ in range(rng.randint(1, 5))]
        pred = {str(i): text() if rng.random() < 0.5 else rng.choice(g) for i, g in enumerate(golds)
                if rng.random() < 0.9}
        assert E.squad_scores([article(*golds)], pred) == official_v11([article(*golds)], pred)


def test_questions_without_a_prediction_are_said_as_the_official_script_says_them(capsys):
    """A question missing from the predictions scores 0, as evaluate-v1.1.py scores it; the script says so for each
    ("Unanswered question ID will receive score 0."), squad_scores said nothing: predictions keyed by other ids (another
    split's, a file with its ids renamed) scored 0.0 without a word."""
    golds = [["Denver Broncos"], ["cat"], ["Paris"]]
    assert E.squad_scores([article(*golds)], {"0": "Denver Broncos", "1": "cat", "2": "Paris"})["exact_match"] == 100
    assert capsys.readouterr().err == ""
    assert E.squad_scores([article(*golds)], {"0": "Denver Broncos", "2": "Paris"})["exact_match"] == 200 / 3
    assert capsys.readouterr().err == ("note: 1 of 3 questions have no prediction (first: 1): each scores 0, as the "
                                       "official evaluate-v1.1.py scores them\n")
    assert E.squad_scores([article(*golds)], {"q0": "Denver Broncos"}) == {"exact_match": 0.0, "f1": 0.0}
    assert capsys.readouterr().err.endswith("3 of 3 questions have no prediction (first: 0): each scores 0, as the "
                                            "official evaluate-v1.1.py scores them; no prediction's id is a question's "
                                            "(first: 'q0')\n")


def test_windows_and_offsets_match_transformers_overflow(tmp_path):
    words = [f"w{i}" for i in range(20)]
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "where", "?", ",", *words]))
    tok = tokenizer.load_tokenizer(tmp_path)
    context = "W0 w1  w2, w3 " + " ".join(words[4:])  # case, a double space, a comma: offsets keep the original text
    toks = data.context_tokens(tok, context)
    assert [t for t, _, _ in toks] == tok.encode(context)[1:]  # WordPiece: the whole text's tokens
    assert [context[s:e] for _, s, e in toks][:5] == ["W0", "w1", "w2", ",", "w3"]
    start = context.index("w9")
    dataset = [{"paragraphs": [{"context": context, "qas": [
        {"id": "q", "question": "where ?", "answers": [{"text": "w9 w10", "answer_start": start}]}]}]}]
    windows = data.squad_windows(dataset, tok, max_len=16, stride=4)  # [CLS] where ? [SEP] + 11 context + [SEP]
    hf = transformers.BertTokenizer(vocab=str(tmp_path / "vocab.txt"))(
        "where ?", context, max_length=16, truncation="only_second", stride=7, return_overflowing_tokens=True,
        return_offsets_mapping=True)  # HF's stride is the overlap: 11 - 7 = 4 tokens between window starts
    assert [w["input_ids"] for w in windows] == hf["input_ids"]
    assert [w["token_type_ids"] for w in windows] == hf["token_type_ids"]
    for w, offsets, types in zip(windows, hf["offset_mapping"], hf["token_type_ids"]):
        assert w["offsets"] == [tuple(o) if t == 1 and o != (0, 0) else None for o, t in zip(offsets, types)]
    # the answer is context tokens 10-11 (w9, w10 after the comma): whole in windows 2 and 3 only; else [CLS]
    assert [w["labels"] for w in windows] == [(0, 0), (4 + 10 - 4, 4 + 11 - 4), (4 + 10 - 8, 4 + 11 - 8), (0, 0)]
    w = windows[1]
    (s, _), (_, e) = w["offsets"][w["labels"][0]], w["offsets"][w["labels"][1]]
    assert context[s:e] == "w9 w10"
    # a stride longer than a window (the default 128 with --seq-len 128) steps one window length, as BERT's
    # min(length, doc_stride): no context token is left out of every window (HF: no overlap, stride 0)
    hf = transformers.BertTokenizer(vocab=str(tmp_path / "vocab.txt"))(
        "where ?", context, max_length=16, truncation="only_second", stride=0, return_overflowing_tokens=True)
    windows = data.squad_windows(dataset, tok, max_len=16, stride=128)
    assert [w["input_ids"] for w in windows] == hf["input_ids"] and len(windows) == 2
    assert sorted({o for w in windows for o in w["offsets"] if o}) == [(s, e) for _, s, e in toks]


def test_windows_of_a_context_share_its_offsets_and_ascii_is_not_looked_up_as_cjk(tmp_path, monkeypatch):
    """Each window made its own (first, end) tuple per context token, and each of a context's questions its own
    windows: SQuAD's 88k train windows held 1.7 GB, most of it those tuples; now the context's tuples are made once
    and shared, the values unchanged. context_tokens tried BERT's CJK ranges on every character: an ASCII one is none
    of them (SQuAD's contexts: ~10% of the windows' time)."""
    words = [f"w{i}" for i in range(20)]
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "where", "?", *words]))
    tok = tokenizer.load_tokenizer(tmp_path)
    context = " ".join(words)
    looked = []
    monkeypatch.setattr(data, "CJK", type("Ranges", (), {"__iter__": lambda self: looked.append(1) or iter(CJK)})())
    assert data.context_tokens(tok, context + " 中")[-1][0] == tok.vocab["[UNK]"] and len(looked) == 1  # (中: once)
    toks = data.context_tokens(tok, context)
    dataset = [{"paragraphs": [{"context": context, "qas": [
        {"id": q, "question": "where ?", "answers": [{"text": "w9", "answer_start": context.index("w9")}]}
        for q in "ab"]}]}]
    windows = data.squad_windows(dataset, tok, max_len=16, stride=4)
    assert [w["offsets"][4:-1] for w in windows] == [[(s, e) for _, s, e in toks[i:i + 11]] for i in (0, 4, 8, 12)] * 2
    first, again = windows[0]["offsets"][4:-1], windows[4]["offsets"][4:-1]          # (question a's, then b's)
    assert all(x is y for x, y in zip(first, again)) and windows[1]["offsets"][4] is first[4]


def run_qa_labels(enc, start, end):
    """transformers' run_qa.py: the first and last context tokens of the answer's characters [start, end)."""
    context = [i for i, q in enumerate(enc.sequence_ids()) if q == 1]
    off = enc["offset_mapping"]
    first = next(i for i in context if off[i][1] > start)
    return first, max(i for i in context if off[i][0] < end)


def test_sub_word_tokens_have_their_own_characters_as_in_transformers(tmp_path):
    """SQuAD's answers are character spans: some end inside a word ("70" of "70percent", "unbeliev"). Each token of
    a word maps to its own characters, as transformers' offset_mapping (real MiniLM WordPiece vocabulary, accents
    and CJK included; RoBERTa's byte-level BPE, multi-byte characters split across tokens), so the label is
    run_qa.py's and the answer read back is the gold text (every token had the whole word's characters: labels
    (5, 7) "70percent" where run_qa has (5, 5), and no prediction could say "70"). RoBERTa's are the whole text's
    tokens, as run_qa's ("Ġ's", '"),', a second space's "Ġ", "Ċ"; each word was tokenized alone)."""
    context = ("The 1970s band grew unbelievably, 70percent of Kraków and Beyoncé fans: naïve 中文日本語, "
               "Ångström's \"3.14km\"),  ﬁne\nzero\u200bwidth emoji🙂ok and more ")
    golds = {g: context.index(g + after) for g, after in (("70", "percent"), ("unbeliev", ""), ("Beyoncé", ""),
                                                          ("14km", ""), ("Ångström", "'"), ("ﬁne", ""))}
    dataset = [{"paragraphs": [{"context": context, "qas": [
        {"id": g, "question": "what?", "answers": [{"text": g, "answer_start": a}]} for g, a in golds.items()]}]}]
    d = tmp_path / "bpe"
    d.mkdir()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([context, "un believ ably percent 70 Kra ków"] * 20, vocab_size=320, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    bpe.save_model(str(d))
    minilm = path("minilm", "vocab.txt").removesuffix("vocab.txt")
    for ours, ref in ((tokenizer.load_tokenizer(minilm), transformers.AutoTokenizer.from_pretrained(minilm)),
                      (tokenizer.load_tokenizer(d), transformers.RobertaTokenizer(vocab=str(d / "vocab.json"),
                                                                              merges=str(d / "merges.txt")))):
        enc = ref(context, add_special_tokens=False, return_offsets_mapping=True)
        assert [(t, s, e) for t, s, e in data.context_tokens(ours, context)] == \
            [(t, *o) for t, o in zip(enc["input_ids"], enc["offset_mapping"])]
        for w in data.squad_windows(dataset, ours, max_len=128, split="train"):
            gold, start = w["id"], golds[w["id"]]
            pair = ref("what?", context, return_offsets_mapping=True)
            (a, b), offsets = run_qa_labels(pair, start, start + len(gold)), pair["offset_mapping"]
            assert w["labels"] == (a, b), gold
            said = context[w["offsets"][a][0]:w["offsets"][b][1]]  # the answer read back from the labelled span
            assert said == context[offsets[a][0]:offsets[b][1]], gold
            assert said == gold or gold == "unbeliev", said  # it ends inside a token (##va, believ): the whole token


def test_wordpiece_offsets_where_the_basic_tokenizer_cuts_and_drops(tmp_path):
    """BERT's basic tokenizer cuts around each CJK ideograph, does not cut at a control character Python calls a
    space (U+0085, U+001C: dropped, the letters around them one word), and leaves dropped characters (controls, a
    stripped accent) out of an [UNK]'s span; transformers' offset_mapping on the real MiniLM vocabulary is the
    reference. Before: "中🙂" was one piece, so 中 and the [UNK] both had (1, 3); "b\x85a" was two words (other ids
    than the model is fed: [b, a] for [ba])."""
    minilm = path("minilm", "vocab.txt").removesuffix("vocab.txt")
    ours, ref = tokenizer.load_tokenizer(minilm), transformers.AutoTokenizer.from_pretrained(minilm)
    context = "\u00a0中🙂a\tb\u0085a 'x\x1c🙂中  \u0301🙂 éa🙂\u0301 wi\u001cki 日本🙂 end"
    enc = ref(context, add_special_tokens=False, return_offsets_mapping=True)
    assert [(t, s, e) for t, s, e in data.context_tokens(ours, context)] == \
        [(t, *o) for t, o in zip(enc["input_ids"], enc["offset_mapping"])]
    gold = "本"  # an ideograph before an [UNK] in one whitespace-delimited word: its own token, labelled alone
    dataset = [{"paragraphs": [{"context": context, "qas": [
        {"id": "q", "question": "what?", "answers": [{"text": gold, "answer_start": context.index(gold)}]}]}]}]
    (w,) = data.squad_windows(dataset, ours, max_len=128, split="train")
    pair = ref("what?", context, return_offsets_mapping=True)
    assert w["input_ids"] == pair["input_ids"]
    assert w["labels"] == run_qa_labels(pair, context.index(gold), context.index(gold) + 1)
    assert context[w["offsets"][w["labels"][0]][0]:w["offsets"][w["labels"][1]][1]] == gold


def test_a_questions_leading_whitespace_is_dropped_as_run_qa_drops_it(tmp_path):
    """SQuAD has questions that start with spaces; transformers' run_qa.py lstrips them ("lots of whitespace on the
    left ... will make the truncation of the context fail"). RoBERTa's BPE made tokens of them ("Ġ", "ĠĠ", ...)."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["What year did the band play? The band played in 1970 and 1971."] * 20, vocab_size=300,
                            min_frequency=2, special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    bpe.save_model(str(tmp_path))
    ours, ref = tokenizer.load_tokenizer(tmp_path), transformers.RobertaTokenizer(vocab=str(tmp_path / "vocab.json"),
                                                                             merges=str(tmp_path / "merges.txt"))
    context, question = "The band played in 1970 and 1971", "   \n What year did the band play?"
    dataset = [{"paragraphs": [{"context": context, "qas": [
        {"id": "q", "question": question, "answers": [{"text": "1970", "answer_start": context.index("1970")}]}]}]}]
    (w,) = data.squad_windows(dataset, ours, max_len=64, split="train")
    pair = ref(question.lstrip(), context, return_offsets_mapping=True)
    assert w["input_ids"] == pair["input_ids"]
    assert w["labels"] == run_qa_labels(pair, context.index("1970"), context.index("1970") + 4)


def test_best_span_is_the_best_valid_pair():
    g = torch.Generator().manual_seed(0)
    offsets = [None] * 3 + [(2 * i, 2 * i + 1) for i in range(40)] + [None]
    for _ in range(20):
        start, end = torch.randn(50, generator=g), torch.randn(50, generator=g)  # padded past the offsets
        best = max((float(start[i] + end[j]), offsets[i][0], offsets[j][1]) for i in range(3, 43)
                   for j in range(i, min(i + 30, 43)))  # brute force over the valid spans
        assert E.best_span(start, end, offsets) == pytest.approx(best)
    assert E.best_span(torch.zeros(2), torch.zeros(2), [None, None])[0] == float("-inf")


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_span_head_matches_transformers(arch, tmp_path):
    kw = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              max_position_embeddings=40, pad_token_id=1)
    cls = transformers.BertForQuestionAnswering if arch == "bert" else transformers.RobertaForQuestionAnswering
    config = (transformers.BertConfig if arch == "bert" else transformers.RobertaConfig)(**kw)
    ref = random_params(cls(config), 0)
    ref.save_pretrained(tmp_path)
    ours = M.load_pretrained(tmp_path)
    assert ours.config.qa and json.loads((tmp_path / "config.json").read_text())["architectures"][0] == cls.__name__
    ids = torch.randint(2, 99, (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 7:], mask[2, 3:] = 0, 0
    ids[mask == 0] = 1
    types = torch.zeros_like(ids) if arch == "roberta" else (torch.arange(12) >= 5).long().expand(3, 12)
    want = ref(input_ids=ids, attention_mask=mask, token_type_ids=types)
    start, end = ours.span_logits(ids, mask, types)
    for a, b in ((start, want.start_logits), (end, want.end_logits)):
        torch.testing.assert_close(a[mask == 1], b[mask == 1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_span_adapter_loads_in_peft_with_its_head(arch, tmp_path):
    """LoRA-SP on a backbone with a fresh span head, saved as train.py saves it (task_type QUESTION_ANS, qa_outputs in
    modules_to_save): PEFT on transformers' *ForQuestionAnswering gives our start and end logits, merged and unmerged.
    (Unmerged BERT goes through PEFT's base_model: PeftModelForQuestionAnswering.forward drops token_type_ids.)"""
    from peft import PeftModel
    from lorasp import apply_lorasp, save_adapter
    kw = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              max_position_embeddings=40, pad_token_id=1)
    config = (transformers.BertConfig if arch == "bert" else transformers.RobertaConfig)(**kw)
    random_params((transformers.BertModel if arch == "bert" else transformers.RobertaModel)(config), 0) \
        .save_pretrained(tmp_path / "base")
    ours = apply_lorasp(M.load_pretrained(tmp_path / "base").add_qa_head(), ["query", "value", "dense"], r=4, alpha=8)
    ours.qa_outputs.requires_grad_(True)
    with torch.no_grad():
        for p in ours.parameters():
            if p.requires_grad:
                p.normal_(0, 0.3)
    save_adapter(ours, tmp_path / "adapter", task_type="QUESTION_ANS", modules_to_save=("qa_outputs",))
    ids = torch.randint(2, 99, (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    ids[mask == 0] = 1
    types = torch.zeros_like(ids) if arch == "roberta" else (torch.arange(12) >= 5).long().expand(3, 12)
    cls = transformers.BertForQuestionAnswering if arch == "bert" else transformers.RobertaForQuestionAnswering
    with torch.no_grad():
        start, end = ours.eval().span_logits(ids, mask, types)
        ref = PeftModel.from_pretrained(cls.from_pretrained(tmp_path / "base"), tmp_path / "adapter").eval()
        for hf in (ref.base_model, ref.merge_and_unload()):
            out = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
            for a, b in ((start, out.start_logits), (end, out.end_logits)):
                torch.testing.assert_close(a[mask == 1], b[mask == 1], atol=1e-4, rtol=1e-4)
        plain = cls.from_pretrained(tmp_path / "base").eval()
        plain.qa_outputs.load_state_dict(ours.qa_outputs.state_dict())   # our head without the adapter
        assert not torch.allclose(start, plain(input_ids=ids, attention_mask=mask, token_type_ids=types).start_logits)


def test_span_loss_is_each_windows_own():
    """The span loss of a batch is the sum of its windows' losses alone, each a cross-entropy over the window's own
    tokens: the padding its batch-mates give it is no class (it was: a window's loss grew with the batch's longest,
    so one process with batch 8 and 2 DDP ranks with batch 4 trained other weights)."""
    model = random_params(M.build_model(M.EncoderConfig("bert", vocab_size=50, n_positions=32, n_embd=32, n_ffn=64,
                                                        qa=True)), 0)
    g = torch.Generator().manual_seed(0)
    windows = [dict(input_ids=torch.randint(5, 50, (n,), generator=g).tolist(), token_type_ids=[0] * 3 + [1] * (n - 3),
                    labels=(a, b)) for n, (a, b) in ((5, (0, 0)), (12, (4, 6)), (7, (3, 3)), (9, (8, 8)))]
    batch = data.collate(windows)
    with torch.no_grad():
        loss, n = train.span_loss(model, batch)
        alone = [train.span_loss(model, data.collate([w]))[0] for w in windows]
        start, end = model.span_logits(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    want = sum(F.cross_entropy(s[:len(w["input_ids"])], torch.tensor(w["labels"][0]), reduction="sum") / 2 +
               F.cross_entropy(e[:len(w["input_ids"])], torch.tensor(w["labels"][1]), reduction="sum") / 2
               for s, e, w in zip(start, end, windows))
    assert n == 4 and batch["input_ids"].shape == (4, 12)
    torch.testing.assert_close(loss, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, sum(alone), atol=1e-5, rtol=0)


def test_toy_squad_learns_and_eval_reproduces_it(tmp_path, capsys):
    squad, bert = write_toy(tmp_path, n_train=400, n_dev=60)
    train.main(["--model", bert, "--data", "squad", "--data-dir", squad, "--out", str(tmp_path / "run"),
                "--method", "lorasp", "--lr", "1e-2", "--epochs", "3", "--batch-size", "16", "--grad-accum", "1",
                "--seq-len", "64", "--exact-match", "60", "--eval-every", "0", "--save-every", "0", "--threads", "1",
                "--dtype", "fp32"])
    out = capsys.readouterr().out
    s = json.loads(out.strip().split("\n")[-1])
    assert s["exact_match_before"] < 10 and s["exact_match_after"] > 50, out
    assert s["trainable_params"] == 4096 + 130  # half of r=16 on 2 x 2 projections of 64 x 64, + qa_outputs whole
    E.main(["--task", "squad", "--model", bert, "--adapter", str(tmp_path / "run" / "adapter"), "--data-dir", squad,
            "--seq-len", "64"])
    r = json.loads(capsys.readouterr().out.strip().split("\n")[-1])
    assert (r["exact_match"], r["f1"]) == pytest.approx((s["exact_match_after"], s["f1_after"]))


def test_gpt2_answers_generatively_with_long_contexts_cut(tmp_path):
    squad, bert = write_toy(tmp_path, n_train=1, n_dev=4)
    vocab = {w: i for i, w in enumerate(open(f"{bert}/vocab.txt").read().split())}
    tok = tokenizer.WordPieceTokenizer(vocab)  # any tokenizer with encode/decode: the prompt text is what matters here
    model = M.build_model(M.GPT2Config(vocab_size=len(vocab), n_positions=96)).eval()  # < prompt + 32 new tokens
    dataset = data.one_per_question(data.read_squad("dev", squad))
    scores, pred = E.evaluate_squad(model, tok, dataset)
    assert set(pred) == {a["paragraphs"][0]["qas"][0]["id"] for a in dataset} and set(scores) == {"exact_match", "f1",
                                                                                                  "bleu"}
    assert scores == E.squad_scores(dataset, pred) | {"bleu": E.bleu(list(pred.values()), [
        [a["text"] for a in x["paragraphs"][0]["qas"][0]["answers"]] for x in dataset])}


def test_squad_files_download_once_into_the_cache_checksummed(tmp_path, monkeypatch):
    body = json.dumps({"version": "1.1", "data": [article(["x"])]}).encode()
    monkeypatch.setenv("LORASP_CACHE", str(tmp_path))
    with serve("org/squad", {"dev-v1.1.json": body}) as (url, log):
        monkeypatch.setattr(data, "SQUAD_URL", f"{url}/cdn/")
        with pytest.raises(OSError, match="sha256"):  # not the official file: the pinned checksum refuses it
            data.read_squad("dev")
        assert not (tmp_path / "squad" / "dev-v1.1.json").exists()
        monkeypatch.setitem(data.SQUAD_FILES, "dev", ("dev-v1.1.json", hashlib.sha256(body).hexdigest()))
        assert data.read_squad("dev") == [article(["x"])]
        n = len(log)
        assert data.read_squad("dev") == [article(["x"])] and len(log) == n  # the second time from the cache
    with pytest.raises(FileNotFoundError, match="dev-v1.1.json"):
        data.read_squad("dev", str(tmp_path / "elsewhere"))  # --data-dir: read, never downloaded


def test_answers_not_at_their_start_are_counted_and_bad_fields_refused(tmp_path, capsys):
    """An answer_start that misses its text: the question is left out of training (BERT's run_squad.py does the same)
    and labelled no-answer in dev, with a count printed; it used to train a span on whatever tokens were there.
    Fields of the wrong type are an error naming the question."""
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "where", "?", "bad", "and",
                                                   "good"]))
    tok = tokenizer.load_tokenizer(tmp_path)
    qas = [{"id": "right", "question": "where ?", "answers": [{"text": "good", "answer_start": 8}]},
           {"id": "off", "question": "where ?", "answers": [{"text": "good", "answer_start": 4}]},
           {"id": "past", "question": "where ?", "answers": [{"text": "good", "answer_start": 99}]}]
    dataset = [{"paragraphs": [{"context": "bad and good", "qas": qas}]}]
    windows = data.squad_windows(dataset, tok, max_len=16, split="train")
    assert [(w["id"], w["labels"]) for w in windows] == [("right", (6, 6))]     # [CLS] where ? [SEP] bad and good
    assert "squad train: 2 questions whose answer texts are not at their answer_start in the context (first: off): " \
        "left out" in capsys.readouterr().out
    windows = data.squad_windows(dataset, tok, max_len=16, split="dev")
    assert [(w["id"], w["labels"]) for w in windows] == [("right", (6, 6)), ("off", (0, 0)), ("past", (0, 0))]
    assert "labelled as no answer" in capsys.readouterr().out
    for bad in ({"answer_start": "8"}, {"answers": None}):
        qa = dict(qas[0], answers=[dict(qas[0]["answers"][0], **bad)]) if "answer_start" in bad else dict(qas[0], **bad)
        (tmp_path / "dev-v1.1.json").write_text(json.dumps({"data": [{"paragraphs": [{"context": "c", "qas": [qa]}]}]}))
        with pytest.raises(ValueError, match=r"dev-v1.1.json: question 'right': expected \{\"id\": str"):
            data.read_squad("dev", str(tmp_path))


def long_toy(tmp_path):
    """The toy SQuAD (40 train, 6 dev paragraphs) with, in each file, a question longer than the span head's 64 query
    tokens and a context longer than the toy GPT-2's 256 positions; (squad dir, BERT dir, GPT-2 dir)."""
    squad, bert = write_toy(tmp_path, n_train=40, n_dev=6)
    for name in ("train-v1.1.json", "dev-v1.1.json"):
        d = json.load(open(f"{squad}/{name}"))
        paragraphs = d["data"][0]["paragraphs"]
        paragraphs[0]["qas"][0]["question"] += " i we saw" * 30
        paragraphs[1]["context"] += " i we saw" * 120
        json.dump(d, open(f"{squad}/{name}", "w"))
    return squad, bert, write_gpt2(tmp_path)


@pytest.mark.parametrize("task", ["squad", "squad-gen"])
def test_squads_cut_notes_are_said_once_a_run(tmp_path, capsys, monkeypatch, task):
    """train.py --data squad said 'squad dev: 1 question longer than 64 tokens cut ...' three times (reading the data,
    then each before/after check's windows of the same dev questions); squad-gen said 'squad: 1 of 6 contexts cut
    ...' twice (the checks): once each now, and after a --resume (no "before" check) by the "after" one. eval.py
    says each once."""
    squad, bert, gpt2 = long_toy(tmp_path)
    model, note = (bert, "squad dev: 1 question longer than 64 tokens cut") if task == "squad" else (
        gpt2, "of 6 contexts cut to their first tokens")
    run = ["--model", model, "--data", task, "--data-dir", squad, "--seq-len", "128" if task == "squad" else "256",
           "--batch-size", "4", "--exact-match", "6", "--eval-every", "0", "--dtype", "fp32", "--max-steps", "2"]
    train.main(run + ["--out", str(tmp_path / "run")])
    assert capsys.readouterr().out.count(note) == 1
    if task == "squad-gen":                                    # Ctrl-C in step 2: a checkpoint of step 1 to resume
        fault_at_loss_call(monkeypatch, 2, signal.SIGINT)
        with pytest.raises(SystemExit):
            train.main(run + ["--out", str(tmp_path / "stopped")])
        monkeypatch.undo()
        assert capsys.readouterr().out.count(note) == 1       # (by the "before" check)
        train.main(run + ["--out", str(tmp_path / "stopped"), "--resume"])
        assert capsys.readouterr().out.count(note) == 1       # (by the "after" check)
    E.main(["--task", "squad", "--model", model, "--adapter", str(tmp_path / "run" / "adapter"), "--data-dir", squad]
           + ["--seq-len", "128"] * (task == "squad"))
    assert capsys.readouterr().out.count(note) == 1


def test_a_dev_file_giving_two_questions_one_id_is_refused(tmp_path):
    """Predictions are kept by question id (evaluate_squad's best span, the official script's predictions file), so two
    dev questions sharing an id (files joined by hand) shared one answer: the oracle's answer to one, scored against
    the other's gold, gave 50.0 where each question answered alone gives 100.0. A training file may repeat an id."""
    qas = [{"id": "q", "question": "who?", "answers": [{"text": t, "answer_start": 0}]} for t in ("Ann", "Bob")]
    dataset = [{"paragraphs": [{"context": f"{qa['answers'][0]['text']} came.", "qas": [qa]}]} for qa in qas]
    assert E.squad_scores(dataset, {"q": "Bob"})["exact_match"] == 50.0             # what sharing the id gives
    for name in ("dev-v1.1.json", "train-v1.1.json"):
        (tmp_path / name).write_text(json.dumps({"data": dataset}))
    with pytest.raises(ValueError, match=r"dev-v1.1.json: question id 'q' is given to two questions: predictions are "
                                         "kept by id"):
        data.read_squad("dev", str(tmp_path))
    assert data.read_squad("train", str(tmp_path)) == dataset


def test_train_names_the_eval_command_that_scores_squad():
    """train.py's closing 'evaluate:' line for SQuAD runs names eval.py's --task squad (it once said --task perplexity,
    which fails on --data squad)."""
    for name in ("squad", "squad-gen"):
        args = train.parse_args(["--model", "m", "--data", name, "--data-dir", "D", "--out", "o"])
        assert re.search(r"^evaluate: python \S*eval\.py --task squad --model m --adapter o/adapter --data-dir D\b",
                         train.outputs(args), re.M), train.outputs(args)     # (\S*: its path, run from elsewhere)


def test_a_question_of_no_text_is_refused_naming_the_file_and_its_id(tmp_path):
    """A question that is empty or all spaces trained windows of [CLS] [SEP] context and was scored, without a word
    (a span learned with nothing asked); now the reader refuses it, as it refuses an answer of no text."""
    for question in ("", "   ", "\t\n"):
        qas = [{"id": "fine", "question": "Who came?", "answers": [{"text": "Ann", "answer_start": 0}]},
               {"id": "blank", "question": question, "answers": [{"text": "Ann", "answer_start": 0}]}]
        for name in ("dev-v1.1.json", "train-v1.1.json"):
            (tmp_path / name).write_text(json.dumps({"data": [{"paragraphs": [{"context": "Ann came.", "qas": qas}]}]}))
            with pytest.raises(ValueError, match=rf"{name}: question 'blank': a question of no text "
                                                 rf"\({re.escape(repr(question))}\)"):
                data.read_squad(name.split("-")[0], str(tmp_path))
    qas[1]["question"] = "Who?"                                # the same file with the question asked reads
    (tmp_path / "train-v1.1.json").write_text(json.dumps({"data": [{"paragraphs": [{"context": "Ann came.",
                                                                                      "qas": qas}]}]}))
    assert [qa["id"] for qa in data.read_squad("train", str(tmp_path))[0]["paragraphs"][0]["qas"]] == ["fine", "blank"]


def test_is_impossible_of_another_type_than_a_boolean_is_said_as_such(tmp_path):
    """"is_impossible": "False" (a string, as a spreadsheet writes it) was refused as "has no answer", the wrong
    reason (the question has one): now the type is said. A boolean reads as before: false with an answer reads, true
    is SQuAD v2.0's unanswerable question."""
    def write(value):
        qa = {"id": "q1", "question": "Who came?", "answers": [{"text": "Ann", "answer_start": 0}],
              "is_impossible": value}
        (tmp_path / "dev-v1.1.json").write_text(json.dumps({"data": [{"paragraphs": [{"context": "Ann came.",
                                                                                        "qas": [qa]}]}]}))
    for value in ("False", "false", 0, None, ["False"]):
        write(value)
        with pytest.raises(ValueError, match=rf"dev-v1.1.json: question 'q1': \"is_impossible\" is "
                                             rf"{re.escape(json.dumps(value))}: expected true or false") as e:
            data.read_squad("dev", str(tmp_path))
        assert "has no answer" not in str(e.value)
    write(False)
    assert data.read_squad("dev", str(tmp_path))[0]["paragraphs"][0]["qas"][0]["is_impossible"] is False
    write(True)
    with pytest.raises(ValueError, match=r"dev-v1.1.json: question q1 has no answer \(SQuAD v2.0's unanswerable"):
        data.read_squad("dev", str(tmp_path))
