"""eval.py's metrics against their references: sacreBLEU (BLEU, chrF, chrF++) and rouge-score as test-only oracles on
varied text;
the GLUE metrics against hand-computed values and the same quantity written another way (scikit-learn and SciPy
are not installed, so their definitions are re-derived here independently)."""
import math
import random

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from rouge_score import tokenize as rouge_tokenize
from sacrebleu.metrics.chrf import CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from eval import accuracy, bleu, chrf, f1, matthews_corrcoef, pearson, rouge, spearman
from metrics import _chrf_words, _rouge_tokens, _tokenize_13a, score_line, translation_scores

TRICKY = [
    "", " ", "a", "Hello, world!", "The U.S.A. costs $1,000.50 -- or 3-4 euro.", ".5 and 5. and ,5 and 5,",
    "state-of-the-art x-ray 10-20 -7 a - b", "He said &quot;no&quot; &amp; left &lt;3 &gt; &amp;quot; & amp;",
    "Pisica stă pe covor; ăâîșț ĂÂÎȘȚ şţ (cedilla) — «citat» „ghilimele” 'single' `tick`",
    "multi\nline -\nhyphen <skipped> tab\there nbsp\u00a0here em\u2003space", "trailing space  \n",
    "İstanbul Kelvin\u212a straße ﬁne café naïve 日本語 emoji 🙂 ok", "{braces} [brackets] ~tilde^ caret_ under|bar",
    "1.000.000,5 2016. 3.14.15 a.b.c ...ellipsis... ,,, ..", "#hash @at a/b c\\d e:f;g?h!i*j+k=l%m",
]

WORDS = ("the a of to și în de la cu pe este nu un o care mai au fost ca din pentru că sunt acest "
         "Guvernul președintele țării școală învățământ având până între după când dacă însă "
         "European Commission report vote 2016 1,000 3.5 10.000,50 3-4 -5 12:30 5% state-of-the-art "
         "U.S. e.g. don't l'école naïve café 日本 🙂 İzmir Kelvin\u212a straße").split()
PUNCT = [".", ",", "!", "?", ";", ":", "-", "—", "–", "(", ")", '"', "„", "”", "'", "&quot;", "&amp;", "&lt;",
         "...", "/", "%"]
SPACES = [" "] * 12 + ["  ", "\t", "\u00a0", "\n", "-\n"]


def _sentence(rng):
    out = []
    for _ in range(rng.randint(1, 25)):
        out.append(rng.choice(WORDS) if rng.random() < 0.8 else rng.choice(PUNCT))
        out.append(rng.choice(SPACES) if rng.random() < 0.85 else "")
    return "".join(out).strip(" ") if rng.random() < 0.9 else "".join(out)


def _mutate(rng, ref):
    kind = rng.random()
    if kind < 0.05:
        return ""
    if kind < 0.1:
        return _sentence(rng)  # unrelated
    if kind < 0.15:
        return rng.choice(ref.split() or [""])  # one word
    def swap(words, i):
        j = rng.randrange(len(words))
        words[i], words[j] = words[j], words[i]
    return _edit_words(rng, ref, lambda: rng.choice(WORDS), lambda: rng.choice(WORDS + PUNCT), swap)


def _edit_words(rng, ref, replacement, insertion, other):
    """Up to four random edits of ref's words: one deleted, replaced, inserted, or other(words, i) done to one."""
    words = ref.split(" ")
    for _ in range(rng.randint(0, 4)):
        i = rng.randrange(len(words))
        op = rng.random()
        if op < 0.3 and len(words) > 1:
            del words[i]
        elif op < 0.6:
            words[i] = replacement()
        elif op < 0.8:
            words.insert(i, insertion())
        else:
            other(words, i)
    return " ".join(words)


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(0)
    refs = [_sentence(rng) for _ in range(300)]
    hyps = [_mutate(rng, r) for r in refs]
    return hyps, refs


def _oracle_bleu(hyps, refs):
    return sacrebleu.corpus_bleu(hyps, [refs]).score


SCORER = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)


def _oracle_rouge(hyps, refs):
    scores = [SCORER.score(r, h) for h, r in zip(hyps, refs)]  # rouge_score takes (target, prediction)
    return {k: 100 * float(np.mean([s[k].fmeasure for s in scores])) for k in ("rouge1", "rouge2", "rougeL")}


# --- BLEU


def test_13a_tokenizer_matches_sacrebleu(corpus):
    tok = Tokenizer13a()
    for line in TRICKY + corpus[0] + corpus[1]:
        assert _tokenize_13a(line) == tok(line.rstrip()).split(), repr(line)


def test_bleu_corpus_matches_sacrebleu(corpus):
    hyps, refs = corpus
    ours = bleu(hyps, refs)
    assert 5 < ours < 95  # a corpus with partial matches at every order, so the comparison means something
    assert ours == _oracle_bleu(hyps, refs)  # same operations in the same order: bit-identical


def test_bleu_each_sentence_matches_sacrebleu(corpus):
    # one-pair corpora hit the corner cases: zero matches, smoothing of higher orders, too-short hypotheses
    hyps, refs = corpus
    for h, r in zip(hyps + TRICKY, refs + TRICKY[::-1]):
        assert bleu([h], [r]) == _oracle_bleu([h], [r]), (h, r)


@pytest.mark.parametrize("hyps,refs", [
    ([""], ["a b c"]), ([""], [""]), (["a b c"], [""]), (["", ""], ["x y", "z"]),  # empty sides
    (["a"], ["a"]), (["a b"], ["a b"]), (["a b c"], ["a b c"]), (["a b c d"], ["a b c d"]),  # shorter than 4-grams
    (["the cat"], ["the cat sat on the mat"]), (["x y z w"], ["a b c d"]),  # brevity penalty; no match at all
    (["the the the the the the the"], ["the cat is on the mat"]),  # clipping
    (["a b c d e", "a"], ["a b x d e", "a"]),  # matches at orders 1-2 only: exp smoothing of 3 and 4
    (["Pisica stă pe covor."], ["Pisica stă pe preș."]), (["1,000.5 $ 3-4."], ["1,000.5 $ 3 - 4 ."]),
])
def test_bleu_corner_cases_match_sacrebleu(hyps, refs):
    assert bleu(hyps, refs) == _oracle_bleu(hyps, refs)


def test_bleu_multiple_references_match_sacrebleu(corpus):
    rng = random.Random(1)
    hyps, refs = corpus
    hyps, refs = hyps[:100], refs[:100]
    second = [_mutate(rng, r) for r in refs]
    third = [_mutate(rng, r) if i % 3 else None for i, r in enumerate(refs)]  # a variable number of references
    ours = bleu(hyps, [[a, b] + ([c] if c is not None else []) for a, b, c in zip(refs, second, third)])
    assert ours == sacrebleu.corpus_bleu(hyps, [refs, second, third]).score
    # tied distances pick the shorter reference for the brevity penalty
    assert bleu(["a b c"], [["a b c d", "a b"]]) == sacrebleu.corpus_bleu(["a b c"], [["a b c d"], ["a b"]]).score


def test_bleu_errors():
    with pytest.raises(ValueError):
        bleu([], [])  # sacreBLEU raises IndexError here
    with pytest.raises(ValueError):
        bleu(["a", "b"], ["a"])  # sacreBLEU would silently drop "b"
    # sacreBLEU's layout, a list per reference stream, was "need as many predictions as references: 2, 1"
    with pytest.raises(ValueError, match=r"^references holds 1 list of 2 texts, sacreBLEU's corpus_bleu\(hypotheses, "
                                         r"\[refs\]\) layout: bleu takes one entry per hypothesis"):
        bleu(["a b", "c d"], [["a b", "c d"]])
    assert bleu(["a b c d", "e f"], [["a b c d", "x"], ["e f"]]) == sacrebleu.corpus_bleu(
        ["a b c d", "e f"], [["a b c d", "e f"], ["x", None]]).score  # (per hypothesis: 2 texts, then 1)


# --- chrF and chrF++


def _streams(refs):  # one text or list of texts per hypothesis -> sacreBLEU's reference streams, None where one ends
    refs = [[r] if isinstance(r, str) else r for r in refs]
    return [[r[j] if j < len(r) else None for r in refs] for j in range(max(map(len, refs)))]


def _oracle_chrf(hyps, refs, word_order):
    return sacrebleu.corpus_chrf(hyps, _streams(refs), word_order=word_order)


def _same_chrf(hyps, refs, word_order):  # the float itself and sacreBLEU's printout, e.g. "chrF2++ = 63.88"
    ours, theirs = chrf(hyps, refs, word_order=word_order), _oracle_chrf(hyps, refs, word_order)
    assert ours == theirs.score, (hyps[:3], refs[:3], ours, theirs.score)  # tolerance 0: the same float
    assert f"chrF2{'+' * word_order} = {ours:.2f}" == str(theirs)
    return ours


# Romanian as WMT16 writes it and as models write it: comma-below ș ț (U+0219, U+021B) and the older cedilla ş ţ
# (U+015F, U+0163) are different characters to chrF, as are a decomposed s + U+0326; punctuation glued to words
RO_WORDS = ("și şi în în ţara țara România României după până când însă câţiva câțiva Şeful Șeful ŞI ȘI ÎN Ţării "
            "Țării președintele preşedintele învățământ învăţământ s\u0326i t\u0326ara Bucureşti București "
            "al Guvernului Parlamentul European de la cu pe este nu un o care au fost 2016 3,5% 10.000").split()
RO_GLUE = ["", "", "", ",", ".", ";", ":", "!", "?", ")", "\"", "'", "-", "»", "”"]  # glued after a word
RO_OPEN = [""] * 6 + ["(", "\"", "„", "«", "'", "-"]                                 # glued before one
CEDILLA = str.maketrans("șțȘȚşţŞŢ", "şţŞŢșțȘȚ")


def _ro_sentence(rng):
    words = [rng.choice(RO_OPEN) + rng.choice(RO_WORDS) + rng.choice(RO_GLUE) for _ in range(rng.randint(1, 20))]
    return "".join(w + rng.choice([" ", " ", " ", "  ", "\t", "\u00a0"]) for w in words).rstrip(" ")


def _ro_mutate(rng, ref):
    kind = rng.random()
    if kind < 0.2:
        return ref.translate(CEDILLA)  # the other diacritic forms: only their characters differ
    if kind < 0.25:
        return _ro_sentence(rng)
    def other_forms(words, i):
        words[i] = words[i].translate(CEDILLA)
    return _edit_words(rng, ref, lambda: rng.choice(RO_WORDS) + rng.choice(RO_GLUE),
                       lambda: rng.choice(RO_OPEN) + rng.choice(RO_WORDS), other_forms)


@pytest.fixture(scope="module")
def ro_corpus():
    rng = random.Random(23)
    refs = [_ro_sentence(rng) for _ in range(200)]
    return [_ro_mutate(rng, r) for r in refs], refs


def test_chrf_words_match_sacrebleu(corpus, ro_corpus):
    split = CHRF(word_order=2)._remove_punctuation  # sacreBLEU's chrF++ word splitter (a private method)
    lines = TRICKY + corpus[0] + ro_corpus[0] + ro_corpus[1] + ["(hi)", "((", "a.", ".a", "...", "-5", "„citat”"]
    for line in lines:
        assert _chrf_words(line) == split(line), repr(line)


@pytest.mark.parametrize("word_order", [0, 2])
def test_chrf_romanian_corpus_matches_sacrebleu(ro_corpus, word_order):
    hyps, refs = ro_corpus
    assert sum("ş" in h or "ţ" in h for h in hyps) > 20 and sum("ș" in h or "ț" in h for h in hyps) > 20
    assert 30 < _same_chrf(hyps, refs, word_order) < 95  # partial matches: a comparison that means something
    assert chrf([r.translate(CEDILLA) for r in refs], refs, word_order) < 100  # cedilla vs comma: other characters


@pytest.mark.parametrize("word_order", [0, 2])
def test_chrf_random_corpus_matches_sacrebleu(corpus, word_order):
    hyps, refs = corpus  # 300 seeded sentences: Romanian, English, numbers, punctuation, odd whitespace, 5% empty
    assert 20 < _same_chrf(hyps, refs, word_order) < 95


@pytest.mark.parametrize("word_order", [0, 2])
def test_chrf_each_sentence_matches_sacrebleu(corpus, ro_corpus, word_order):
    # one pair: sentence_chrf, and the corner cases (orders the reference or the hypothesis lacks, no match)
    for h, r in zip(corpus[0] + ro_corpus[0] + TRICKY, corpus[1] + ro_corpus[1] + TRICKY[::-1]):
        ours = chrf([h], [r], word_order)
        assert ours == sacrebleu.sentence_chrf(h, [r], word_order=word_order).score, (h, r)


@pytest.mark.parametrize("hyps,refs", [
    ([""], ["a b c"]), ([""], [""]), (["a b c"], [""]), ([" \t "], ["x"]), (["", "abc def"], ["x y", ""]),  # empty
    (["abc", "abc"], ["abc", ""]), (["abc", ""], ["abc", "abc"]), (["abc", "abc"], [["abc"], ["", "x"]]),
    (["abcdefgh", "abcdefgh"], ["abc", "abcdefgh"]),  # in a corpus: the first pair's 4..6-grams do not count
    (["a"], ["a"]), (["ab"], ["abc"]), (["abcdefgh"], ["abc"]), (["abc"], ["abcdefgh"]),  # orders one side lacks
    (["xyz"], ["abc"]), (["a b c"], ["abc"]),  # no match at all; whitespace does not count
    (["Pisica stă pe covor."], ["Pisica stă pe preș."]), (["şi ţara"], ["și țara"]), (["ȘI, (da)"], ["ŞI (da)!"]),
    (["(hi) a. .b ! ..."], ["(hi ) a . . b ! ..."]),  # chrF++'s one punctuation mark off a word
])
@pytest.mark.parametrize("word_order", [0, 2])
def test_chrf_corner_cases_match_sacrebleu(hyps, refs, word_order):
    _same_chrf(hyps, refs, word_order)


def test_chrf_hand_computed():
    # "ab" vs "abc": 1-grams P 2/2 R 2/3, 2-grams P 1/1 R 1/2, the hypothesis has no 3-gram and the reference no
    # 4..6-gram, so those orders are left out of the means: P = 1, R = 7/12, chrF2 = 5 P R / (4 P + R) = 7/11
    assert math.isclose(chrf(["ab"], ["abc"]), 100 * 7 / 11, rel_tol=1e-15)
    assert chrf(["a b c"], ["abc"]) == 100.0  # whitespace removed: the same characters
    assert math.isclose(chrf(["cba"], ["abc"]), 100 / 3, rel_tol=1e-15)  # P = R = 1 at order 1, 0 at 2 and 3
    assert chrf(["a b c"], ["abc"], word_order=2) < 100  # words "a", "b", "c" against "abc"
    assert chrf([""], ["abc"]) == chrf(["abc"], [""]) == 0.0


@pytest.mark.parametrize("word_order", [0, 2])
def test_chrf_multiple_references_match_sacrebleu(ro_corpus, word_order):
    rng = random.Random(5)
    hyps, refs = (x[:120] for x in ro_corpus)
    second = [_ro_mutate(rng, r) for r in refs]
    third = [_ro_mutate(rng, h) if i % 3 else None for i, h in enumerate(hyps)]  # a variable number of references
    multi = [[a, b] + ([c] if c is not None else []) for a, b, c in zip(refs, second, third)]
    assert chrf(hyps, multi, word_order) > chrf(hyps, refs, word_order)  # the best reference's counts are summed
    _same_chrf(hyps, multi, word_order)
    for h, rs in zip(hyps, multi):
        assert chrf([h], [rs], word_order) == sacrebleu.sentence_chrf(h, rs, word_order=word_order).score
    # equal sentence scores: the first reference's counts (sacreBLEU keeps the first best); an empty reference
    _same_chrf(["ab cd", "ab"], [["ab xx", "ab yy zz"], ["", "ab"]], word_order)
    _same_chrf(["ab cd", "ab"], [["ab yy zz", "ab xx"], ["ab", ""]], word_order)


def test_chrf_errors():
    with pytest.raises(ValueError):
        chrf([], [])
    with pytest.raises(ValueError):
        chrf(["a", "b"], ["a"])
    with pytest.raises(ValueError, match=r"^references holds 1 list of 2 texts, sacreBLEU's corpus_chrf\(hypotheses, "
                                         r"\[refs\]\) layout: chrf takes one entry per hypothesis"):
        chrf(["a b", "c d"], [["a b", "c d"]])
    with pytest.raises(TypeError, match="^chrf takes a text per hypothesis and a text or a non-empty list of texts"):
        chrf([None], ["a"])
    with pytest.raises(TypeError, match="^hypotheses is a str"):
        chrf("the cat", "the cat")
    for word_order in (-1, True, 2.0, "2"):
        with pytest.raises(ValueError, match=r"^chrf's word_order is a whole number >= 0 \(0: chrF, 2: chrF\+\+\)"):
            chrf(["a"], ["a"], word_order)


def test_translation_scores_and_their_line(ro_corpus):
    hyps, refs = ro_corpus  # eval.py's wmt16-en-ro scores and prints these
    theirs = [sacrebleu.corpus_bleu(hyps, [refs]), _oracle_chrf(hyps, refs, 0), _oracle_chrf(hyps, refs, 2)]
    scores = translation_scores(hyps, refs)
    assert scores == dict(zip(["bleu", "chrf", "chrf++"], [s.score for s in theirs]), **_oracle_rouge(hyps, refs))
    assert list(scores) == ["bleu", "chrf", "chrf++", "rouge1", "rouge2", "rougeL"]
    rouge_part = "  ".join(f"ROUGE-{k[-1]} {scores[k]:.2f}" for k in ("rouge1", "rouge2", "rougeL"))
    assert score_line(dict(scores, sentences=200)) == "BLEU {}  chrF {}  chrF++ {}  ".format(
        *(s.format(score_only=True) for s in theirs)) + rouge_part


# --- ROUGE


def test_rouge_tokenizer_matches_rouge_score(corpus):
    for line in TRICKY + corpus[0] + corpus[1]:
        assert _rouge_tokens(line) == rouge_tokenize.tokenize(line, None), repr(line)


def test_rouge_corpus_matches_rouge_score(corpus):
    hyps, refs = corpus
    ours, ref = rouge(hyps, refs), _oracle_rouge(hyps, refs)
    assert ours.keys() == ref.keys()
    assert 10 < ours["rouge2"] < ours["rougeL"] < 95
    assert ours == ref  # the pairs' F-measures averaged as numpy averages them: the same floats, not close ones


def test_rouge_each_pair_matches_rouge_score(corpus):
    hyps, refs = corpus
    for h, r in zip(hyps + TRICKY + ["", "a", "ș"], refs + TRICKY[::-1] + ["", "", "ș"]):
        assert rouge([h], [r]) == _oracle_rouge([h], [r]), (h, r)  # one pair: no averaging, bit-identical


def test_rouge_hand_computed():
    # tokens: hyp "the cat sat" / ref "the cat was on the mat": 2 shared unigrams, 1 bigram, LCS 2
    out = rouge(["The cat, sat."], ["the cat was on the mat"])
    p1, r1 = 2 / 3, 2 / 6
    p2, r2 = 1 / 2, 1 / 5
    assert math.isclose(out["rouge1"], 100 * 2 * p1 * r1 / (p1 + r1))
    assert math.isclose(out["rouge2"], 100 * 2 * p2 * r2 / (p2 + r2))
    assert math.isclose(out["rougeL"], out["rouge1"])
    with pytest.raises(ValueError):
        rouge([], [])


# --- GLUE metrics


def _mcc_confusion(p, y):  # the binary textbook formula
    tp = sum(a == 1 and b == 1 for a, b in zip(p, y))
    tn = sum(a == 0 and b == 0 for a, b in zip(p, y))
    fp = sum(a == 1 and b == 0 for a, b in zip(p, y))
    fn = sum(a == 0 and b == 1 for a, b in zip(p, y))
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / den if den else 0.0


def _mcc_covariance(p, y):  # multiclass: correlation of the one-hot matrices (Gorodkin's R_K)
    classes = sorted(set(p) | set(y))
    X = np.array([[c == v for c in classes] for v in y], dtype=float)
    Y = np.array([[c == v for c in classes] for v in p], dtype=float)
    X, Y = X - X.mean(0), Y - Y.mean(0)
    den = math.sqrt((X * X).sum() * (Y * Y).sum())
    return (X * Y).sum() / den if den else 0.0


def _brute_ranks(a):
    return [1 + sum(b < v for b in a) + (sum(b == v for b in a) - 1) / 2 for v in a]


def _textbook_pearson(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return sxy / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def test_accuracy_and_f1_hand_computed():
    p, y = [1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 0, 1]  # TP 3, FP 1, FN 0
    assert accuracy(p, y) == 5 / 6
    assert f1(p, y) == 2 * 3 / (2 * 3 + 1)
    assert f1([1, 1, 0, 0], [1, 0, 1, 0]) == 0.5  # P = R = 1/2
    assert f1([0, 0, 0], [0, 0, 0]) == 0.0  # sklearn: nothing to score -> 0.0
    assert f1([0, 0, 0], [1, 0, 1]) == 0.0  # no positive predicted
    assert f1([True, False], [1, 0]) == 1.0
    assert accuracy(["a", "b"], ["a", "c"]) == 0.5
    assert accuracy(np.array(p), np.array(y)) == 5 / 6 and f1(np.array(p), np.array(y)) == 6 / 7  # arrays work too
    with pytest.raises(ValueError):
        f1([2, 1], [1, 0])
    with pytest.raises(ValueError):
        accuracy([1], [1, 0])
    rng = random.Random(3)
    for _ in range(50):  # 2PR/(P+R), the usual form
        p = [rng.randint(0, 1) for _ in range(12)]
        y = [rng.randint(0, 1) for _ in range(12)]
        tp = sum(a & b for a, b in zip(p, y))
        prec, rec = (tp / sum(p) if sum(p) else 0.0), (tp / sum(y) if sum(y) else 0.0)
        assert math.isclose(f1(p, y), 2 * prec * rec / (prec + rec) if prec + rec else 0.0)


def test_mcc_hand_computed_and_two_other_formulas():
    assert math.isclose(matthews_corrcoef([1, -1, 1, 1], [1, 1, 1, -1]), -1 / 3)  # sklearn's docstring example
    assert matthews_corrcoef([1, 0, 1, 0], [1, 0, 1, 0]) == 1.0
    assert matthews_corrcoef([1, 0, 1, 0], [0, 1, 0, 1]) == -1.0
    assert matthews_corrcoef([1, 1, 1], [1, 0, 1]) == 0.0  # constant prediction: sklearn's 0.0
    assert matthews_corrcoef([0, 1], [1, 1]) == 0.0  # constant references
    rng = random.Random(4)
    for _ in range(50):
        p = [rng.randint(0, 1) for _ in range(rng.randint(2, 15))]
        y = [rng.randint(0, 1) for _ in p]
        assert math.isclose(matthews_corrcoef(p, y), _mcc_confusion(p, y), abs_tol=1e-12)
        p = [rng.randint(0, 2) for _ in range(20)]
        y = [rng.randint(0, 2) for _ in p]
        assert math.isclose(matthews_corrcoef(p, y), _mcc_covariance(p, y), abs_tol=1e-12)


def test_pearson_and_spearman():
    # SciPy's docstring examples
    r = pearson([1, 2, 3, 4, 5, 6, 7], [10, 9, 2.5, 6, 4, 3, 2])
    assert math.isclose(r, -0.828503883588428, rel_tol=1e-12)
    assert math.isclose(spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]), 0.8207826816681233, rel_tol=1e-12)
    assert math.isclose(spearman([1, 2, 3], [10, 100, 1000]), 1.0)  # monotone, not linear
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([1, 2, 3], [2, 2, 2]))  # SciPy: nan
    with pytest.raises(ValueError):
        pearson([1.0], [2.0])
    rng = np.random.default_rng(5)
    for _ in range(30):
        x = rng.integers(0, 5, size=17).tolist()  # many ties
        y = (rng.normal(size=17) + np.array(x)).round(1).tolist()
        assert math.isclose(pearson(x, y), _textbook_pearson(x, y), rel_tol=1e-12)
        assert math.isclose(spearman(x, y), _textbook_pearson(_brute_ranks(x), _brute_ranks(y)), rel_tol=1e-12)
