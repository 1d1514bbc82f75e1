"""metrics.py: the scores the papers report, written by hand on plain lists, equal to the tools they were computed with.

- GLUE (LoRA-SP's Table 1): `accuracy`, `f1` (binary, label 1), `matthews_corrcoef` (CoLA), `pearson`, `spearman`
  (STS-B): scikit-learn's / SciPy's definitions and degenerate-case conventions; fractions in [0, 1], as theirs are.
  `glue_metrics(task, ...)`: a task's metrics x 100, its headline first.
- WMT16 En-Ro (Table 2): `bleu` = sacreBLEU's default corpus BLEU (13a tokens, 'exp' smoothing, brevity penalty),
  `chrf` = sacreBLEU's default chrF (Popović 2015: character 1..6-grams, whitespace removed, beta 2, precision and
  recall averaged over the orders present) and with word_order=2 its chrF++ (Popović 2017: word 1..2-grams added, one
  punctuation mark split off a word), WMT's second metric; `rouge` = rouge-score's ROUGE-1/2/L F-measures, no
  stemming, averaged over pairs; all 0-100, `translation_scores` all six (eval.py's wmt16-en-ro). On the texts as
  written, as HF's run_translation scores them: no Romanian normalisation (s and t with a cedilla are other letters
  than with a comma below) and no diacritics removed (fairseq's mBART recipe does both first); the T5 authors' own
  evaluation tokenized with sacreBLEU's 'intl' and averaged ROUGE by bootstrap.
- SQuAD v1.1 (the second paper's QA): `squad_scores` = the official evaluate-v1.1.py's exact match and F1.
All but squad_scores (dataset, predictions) take (predictions, references). tests/test_metrics.py compares BLEU, chrF
and ROUGE with sacreBLEU and rouge-score, and the GLUE metrics with the SciPy and scikit-learn docstrings' examples and
other formulas (neither library is a dependency); tests/test_squad.py scores a worked example by hand. Left out:
sacreBLEU's other tokenizers, smoothings, lowercasing and confidence intervals, chrF's other orders and betas, its
whitespace option and chrF++.py's eps smoothing; rouge-score's stemmer and rougeLsum.
eval.py, which scores models with these, re-exports them (`from eval import bleu` works as before).

Run `python metrics.py` for a demonstration on a few hand-made sentences, labels and scores.
"""
import argparse
import math
import re
import signal
import string
import sys
from collections import Counter

import numpy as np

# ----------------------------------------------------------------------------------------------------
# GLUE: classification and regression (scikit-learn's and SciPy's definitions)

def _pair(predictions, references, what="predictions"):
    """Both as lists, one entry per example: a tensor's or array's numbers (a tensor's 0-d elements hash by id: MCC
    scored 1.0 for 0.5), a generator's items; a str (its characters), a dict (its keys) or a set (its order) refused."""
    out = []
    for name, v in ((what, predictions), ("references", references)):
        if isinstance(v, (str, bytes, dict, set, frozenset)):
            raise TypeError(f"{name} is a {type(v).__name__}: give a list, one entry per example" +
                            (f" ([{v!r}])" if isinstance(v, str) else ""))
        out.append(v.tolist() if hasattr(v, "tolist") else list(v))
    p, r = out
    if len(p) != len(r) or len(p) == 0:
        raise ValueError(f"need as many predictions as references, at least one: {len(p)}, {len(r)}")
    return p, r


def _labels(predictions, references):
    """_pair's lists of labels, one per example: None, a list or str labels against numbers refused, as scikit-learn
    refuses them ("1" != 1 scored each example wrong without a word; f1 failed sorting None against 1)."""
    p, r = _pair(predictions, references)
    for name, xs in (("prediction", p), ("reference", r)):
        if (i := next((i for i, x in enumerate(xs) if x is None or isinstance(x, (list, tuple))), None)) is not None:
            raise ValueError(f"{name} {i} is {xs[i]!r}: the label metrics take one label (an int or a str) an example")
    text, other = (next((x for x in p + r if isinstance(x, str) == want), None) for want in (True, False))
    if text is not None and other is not None:
        raise ValueError(f"str labels against {type(other).__name__} labels ({text!r}, {other!r}): give predictions "
                         "and references as the same type (a model's label ids: int)")
    return p, r


def accuracy(predictions, references):
    """Fraction of positions where prediction == reference (sklearn.metrics.accuracy_score)."""
    p, r = _labels(predictions, references)
    return sum(a == b for a, b in zip(p, r)) / len(p)


def f1(predictions, references):
    """Binary F1 of the label 1: 2 TP / (2 TP + FP + FN) (sklearn.metrics.f1_score).
    Like sklearn, 0.0 when there is nothing to score (no 1 predicted and no 1 in the references)."""
    p, r = _labels(predictions, references)
    if not set(p) | set(r) <= {0, 1}:
        raise ValueError(f"f1 is binary: labels must be 0/1, got {sorted(set(p) | set(r))}")
    tp = sum(a == 1 and b == 1 for a, b in zip(p, r))
    wrong = sum(a != b for a, b in zip(p, r))  # FP + FN
    return 2 * tp / (2 * tp + wrong) if tp + wrong else 0.0


def matthews_corrcoef(predictions, references):
    """MCC = (c s - t·p) / sqrt((s² - p·p)(s² - t·t)): c correct, s samples, t/p per-class reference/predicted
    counts (sklearn's multiclass form; binary: the phi coefficient). Like sklearn, 0.0 when the denominator is 0."""
    p, r = _labels(predictions, references)
    s, c = len(p), sum(a == b for a, b in zip(p, r))
    tc, pc = Counter(r), Counter(p)
    t_dot_p = sum(tc[k] * pc[k] for k in tc)  # exact integers: no overflow, no rounding before the last step
    den = (s * s - sum(v * v for v in pc.values())) * (s * s - sum(v * v for v in tc.values()))
    return (c * s - t_dot_p) / math.sqrt(den) if den else 0.0


def _floats(predictions, references):
    x, y = (np.asarray(v, dtype=np.float64) for v in _pair(predictions, references))
    if x.ndim != 1 or y.ndim != 1:          # (spearman ranked a 2-D list flattened: a number, without a word)
        raise ValueError(f"a correlation takes one number per example; got shapes {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError("a correlation needs at least 2 pairs")
    return x, y


def pearson(predictions, references):
    """Pearson's r = cov(x, y) / (std x std y) (scipy.stats.pearsonr); nan if either input is constant."""
    x, y = _floats(predictions, references)
    if (x == x[0]).all() or (y == y[0]).all():
        return float("nan")  # SciPy's convention: the correlation of a constant is undefined
    xm, ym = x - x.mean(), y - y.mean()
    r = np.dot(xm / np.linalg.norm(xm), ym / np.linalg.norm(ym))  # normalize first, as SciPy does, for stability
    return float(np.clip(r, -1.0, 1.0))


def _average_ranks(a):  # 1-based; ties share the mean of the ranks they span (scipy.stats.rankdata 'average')
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # rank of the last copy of each distinct value
    return (last - (counts - 1) / 2)[inverse.reshape(-1)]


def spearman(predictions, references):
    """Spearman's rho = Pearson's r of the average ranks (scipy.stats.spearmanr); nan if either input is constant."""
    x, y = _floats(predictions, references)
    if np.isnan(x).any() or np.isnan(y).any():
        return float("nan")  # SciPy propagates nan; np.unique would give it a rank
    return pearson(_average_ranks(x), _average_ranks(y))


GLUE_METRICS = {"cola": (matthews_corrcoef,), "stsb": (pearson, spearman), "mrpc": (f1, accuracy),
                "qqp": (f1, accuracy)}


def glue_metrics(task, predictions, references):
    """A GLUE task's metrics x 100, the first one the task's headline (early stopping's): Matthews correlation (CoLA),
    Pearson and Spearman (STS-B, on scores), F1 and accuracy (MRPC, QQP: GLUE's order; the paper's Table 1 reports
    their accuracy), accuracy (the others; MNLI per dev set, matched and mismatched)."""
    return {fn.__name__: 100 * fn(predictions, references) for fn in GLUE_METRICS.get(task, (accuracy,))}


# ----------------------------------------------------------------------------------------------------
# Translation: corpus BLEU and chrF (sacreBLEU), ROUGE (rouge-score)

# mteval-v13a's tokenizer as sacreBLEU writes it (sacrebleu/tokenizers/tokenizer_13a.py + tokenizer_re.py):
_13A_RULES = [(re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # split off ASCII symbols but ' , - .
              (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),   # period and comma, unless preceded by a digit...
              (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),   # ...or followed by one (keeps 1,000.5 whole)
              (re.compile(r"([0-9])(-)"), r"\1 \2 ")]        # a dash after a digit (3-4 -> 3 - 4)


def _tokenize_13a(line):
    line = line.rstrip().replace("<skipped>", "").replace("-\n", "").replace("\n", " ")  # rstrip: sacreBLEU's
    line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")  # in order
    line = f" {line} "  # the padding matters: it lets a leading ".5" split as ". 5"
    for pattern, repl in _13A_RULES:
        line = pattern.sub(repl, line)
    return line.split()  # str.split: any Unicode whitespace, as sacreBLEU


def _ngrams(tokens, orders):
    return Counter(tuple(tokens[i:i + n]) for n in orders for i in range(len(tokens) - n + 1))


def _texts(hypotheses, references, name):
    """(hypotheses, [[reference texts]] one list per hypothesis), checked for bleu and chrf (name): a reference is a
    text or a non-empty list of texts; sacreBLEU's [refs] layout (a list per reference stream) is refused naming
    itself, a length mismatch or an empty corpus too (sacreBLEU truncates to the shorter list / raises IndexError)."""
    n = len(references) if isinstance(references, (list, tuple)) and isinstance(hypotheses, (list, tuple)) else 0
    if n and n != len(hypotheses) and all(isinstance(r, (list, tuple)) and len(r) == len(hypotheses) > 1
                                          for r in references):
        raise ValueError(f"references holds {n} list{'s' * (n > 1)} of {len(hypotheses)} texts, sacreBLEU's "
                         f"corpus_{name}(hypotheses, [refs]) layout: {name} takes one entry per hypothesis, a text or "
                         f"a list of texts ({name}(hypotheses, refs), or [list(r) for r in zip(*streams)])")
    hypotheses, references = _pair(hypotheses, references, "hypotheses")
    out = []
    for i, (hyp, refs) in enumerate(zip(hypotheses, references)):
        refs = [refs] if isinstance(refs, str) else refs
        if not (isinstance(hyp, str) and isinstance(refs, (list, tuple)) and refs and all(isinstance(r, str)
                                                                                         for r in refs)):
            raise TypeError(f"{name} takes a text per hypothesis and a text or a non-empty list of texts per "
                            f"reference: hypothesis {i} is {hyp!r:.60}, its references {refs!r:.60}")  # (min([]))
        out.append(list(refs))
    return hypotheses, out


def bleu(hypotheses, references):
    """Corpus BLEU ×100 = sacrebleu.corpus_bleu(hypotheses, [references]).score; references[i]: str or list of str.
    BLEU = BP exp(mean_n log p_n), n = 1..4, p_n = clipped matches / hypothesis n-grams over the corpus,
    BP = exp(1 - ref_len/hyp_len) if hyp_len < ref_len (closest reference length, the shorter on ties); 'exp'
    smoothing: the k-th order with no match gets p_n = 1 / (2^k total_n). Bad input as _texts says."""
    hypotheses, references = _texts(hypotheses, references, "bleu")
    correct, total, hyp_len, ref_len = [0] * 4, [0] * 4, 0, 0
    for hyp, refs in zip(hypotheses, references):
        hyp, refs = _tokenize_13a(hyp), [_tokenize_13a(r) for r in refs]
        ref_counts = Counter()
        for ref in refs:
            ref_counts |= _ngrams(ref, range(1, 5))  # | keeps the max count over references: the clip
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
        for gram, count in _ngrams(hyp, range(1, 5)).items():
            total[len(gram) - 1] += count
            correct[len(gram) - 1] += min(count, ref_counts[gram])
    if not any(correct) or not all(total):
        return 0.0  # sacreBLEU floors log(0) at -9999999999, so the score underflows to exactly 0.0
    bp = math.exp(1 - ref_len / hyp_len) if hyp_len < ref_len else 1.0
    smooth, logs = 1.0, []
    for c, t in zip(correct, total):  # same operations in the same order as sacreBLEU: bit-identical scores
        smooth *= 2 if c == 0 else 1
        logs.append(math.log(100.0 / (smooth * t) if c == 0 else 100.0 * c / t))
    return bp * math.exp(sum(logs) / 4)


def _chrf_words(text):
    """chrF++'s words (Popović's chrF++.py, as sacreBLEU): split at whitespace; a word longer than one character loses
    one ASCII punctuation mark, off its end, else off its start, as a word of its own ("(hi)" -> "(hi", ")")."""
    words = []
    for w in text.split():
        if len(w) > 1 and w[-1] in _PUNCT:
            words += [w[:-1], w[-1]]
        elif len(w) > 1 and w[0] in _PUNCT:
            words += [w[0], w[1:]]
        else:
            words.append(w)
    return words


def _chrf_grams(text, word_order):
    """[Counter of the text's character n-grams, n = 1..6, whitespace removed] + its word n-grams, n = 1..word_order."""
    chars = "".join(text.split())
    words = _chrf_words(text) if word_order else []
    return ([Counter(chars[i:i + n] for i in range(len(chars) - n + 1)) for n in range(1, 7)]
            + [_ngrams(words, (n,)) for n in range(1, word_order + 1)])


def _chrf_stats(hyp, ref):
    """[(hypothesis n-grams, reference n-grams, matches)] per order, matches clipped by the reference's counts. As
    sacreBLEU counts them: an order the reference has no n-gram of does not count the hypothesis' either (so an empty
    reference adds nothing to the corpus, and "abcdefgh" against "abc" adds no 4..6-gram to the corpus' counts)."""
    return [(sum(h.values()) if r else 0, sum(r.values()), sum((h & r).values())) for h, r in zip(hyp, ref)]


def _chrf_score(stats, beta=2):
    """chrF_beta x 100 = (1 + b²) P R / (b² P + R) (Popović 2015), P and R the mean precision and recall over
    the orders both sides have n-grams of (sacreBLEU 2's 'effective order'; chrF++.py's eps smoothing is left out);
    0 when P + R is 0. In sacreBLEU's order of operations: the same float."""
    P = R = 0.0
    orders = 0
    for n_hyp, n_ref, n_match in stats:
        if n_hyp and n_ref:
            P, R, orders = P + n_match / n_hyp, R + n_match / n_ref, orders + 1
    if P + R == 0:  # (no order both sides have, or no match in any)
        return 0.0
    P, R = P / orders, R / orders
    return 100 * ((1 + beta ** 2) * P * R / (beta ** 2 * P + R))


def chrf(hypotheses, references, word_order=0):
    """Corpus chrF ×100 (Popović 2015), word_order=2: chrF++ (Popović 2017); = sacrebleu.corpus_chrf(hypotheses,
    [references], word_order=word_order).score. references[i]: str or list of str (the best one's counts)."""
    if type(word_order) is not int or word_order < 0:  # (-1 scored 5 character orders; True, chrF+)
        raise ValueError(f"chrf's word_order is a whole number >= 0 (0: chrF, 2: chrF++), not {word_order!r}")
    hypotheses, references = _texts(hypotheses, references, "chrf")
    total = [(0, 0, 0)] * (6 + word_order)
    for hyp, refs in zip(hypotheses, references):
        h = _chrf_grams(hyp, word_order)
        best = max((_chrf_stats(h, _chrf_grams(r, word_order)) for r in refs), key=_chrf_score)
        total = [tuple(a + b for a, b in zip(t, s)) for t, s in zip(total, best)]
    return _chrf_score(total)


def translation_scores(hypotheses, references):
    """{bleu, chrf, chrf++, rouge1, rouge2, rougeL} of translations (bleu's references: a text or texts each; rouge
    takes one text each)."""
    return dict(bleu=bleu(hypotheses, references), chrf=chrf(hypotheses, references),
                **{"chrf++": chrf(hypotheses, references, word_order=2)}, **rouge(hypotheses, references))


SCORE_NAMES = {"bleu": "BLEU", "chrf": "chrF", "chrf++": "chrF++", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2",
               "rougeL": "ROUGE-L"}


def score_line(scores):
    """"BLEU 26.81  chrF 55.40  ..." of the scores SCORE_NAMES names, in their order, 2 decimals (sacreBLEU's)."""
    return "  ".join(f"{name} {scores[k]:.2f}" for k, name in SCORE_NAMES.items() if k in scores)


def _rouge_tokens(text):
    """rouge-score's default tokenizer: lowercase, keep runs of ASCII [a-z0-9] (so 'ș' and 'é' split words)."""
    return re.findall(r"[a-z0-9]+", text.lower())


def _fmeasure(match, n_hyp, n_ref):
    p, r = match / max(n_hyp, 1), match / max(n_ref, 1)
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _lcs_length(a, b):
    row = [0] * (len(b) + 1)  # row[j] = LCS(a[:i], b[:j]), one row of the DP table at a time
    for x in a:
        diag = 0
        for j, y in enumerate(b, 1):
            diag, row[j] = row[j], diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge(hypotheses, references):
    """{rouge1, rouge2, rougeL} F-measures ×100, the mean over pairs of rouge_score's RougeScorer(use_stemmer=False)
    .score(reference, hypothesis); n-gram overlap and whole-text LCS (not rougeLsum); F = 2PR/(P+R), or 0."""
    hypotheses, references = _pair(hypotheses, references, "hypotheses")
    for what, xs in (("hypothesis", hypotheses), ("reference", references)):  # (bleu takes lists of references)
        if (i := next((i for i, x in enumerate(xs) if not isinstance(x, str)), None)) is not None:
            raise TypeError(f"rouge takes one reference text per hypothesis: {what} {i} is a {type(xs[i]).__name__}")
    scores = {"rouge1": [], "rouge2": [], "rougeL": []}
    for hyp, ref in zip(hypotheses, references):
        h, r = _rouge_tokens(hyp), _rouge_tokens(ref)
        for n in (1, 2):
            hg, rg = _ngrams(h, (n,)), _ngrams(r, (n,))
            scores[f"rouge{n}"].append(_fmeasure(sum((hg & rg).values()), sum(hg.values()), sum(rg.values())))
        scores["rougeL"].append(_fmeasure(_lcs_length(r, h), len(h), len(r)))
    return {k: 100 * float(np.mean(v)) for k, v in scores.items()}  # numpy's mean of the pairs' F: the same float


# ----------------------------------------------------------------------------------------------------
# SQuAD v1.1: the official evaluate-v1.1.py

_PUNCT = set(string.punctuation)  # the official script's: ASCII punctuation only ("–", "’" stay)


def squad_normalize(text):
    """SQuAD v1.1's normalize_answer, in its order: lower-case, drop punctuation, replace the words a/an/the by a
    space, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def squad_f1(prediction, truth):
    """Token F1 of normalized texts (bag-of-words overlap); 0 when nothing overlaps, empty texts included (v1.1;
    v2.0's script gives 1 to two empty texts)."""
    p, t = squad_normalize(prediction).split(), squad_normalize(truth).split()
    same = sum((Counter(p) & Counter(t)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)  # in the script's order: the same float, bit for bit


def _squad_questions(dataset):
    """(question id, [gold answer texts]) of each question in a v1.1 file's "data" list, the shape checked: a file name,
    Hugging Face datasets' flat rows, a question without answers (SQuAD v2.0's) or with bare texts are errors that say
    so (they were a TypeError of string indices, KeyError 'paragraphs', "max() arg is an empty sequence")."""
    if isinstance(dataset, str):
        raise TypeError(f"dataset is a str ({dataset!r:.60}): squad_scores takes the file's \"data\" list, not a file "
                        "name: json.load(open(path))[\"data\"]")
    for i, article in enumerate(dataset):
        if not (isinstance(article, dict) and "paragraphs" in article):
            raise TypeError(f'dataset entry {i} has no "paragraphs" ({str(article):.60}): squad_scores takes the v1.1 '
                            "file's \"data\" list of articles; Hugging Face datasets' flat rows (id, answers.text) as "
                            'one: [{"paragraphs": [{"qas": [{"id": r["id"], "answers": [{"text": t} for t in '
                            'r["answers"]["text"]]} for r in rows]}]}]')
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = qa.get("answers")
                if not answers:
                    raise ValueError(f"question {qa.get('id')!r} has no answers (a SQuAD v2.0 unanswerable question?): "
                                     "squad_scores is v1.1's, where every question has one or more")
                if not all(isinstance(a, dict) and isinstance(a.get("text"), str) for a in answers):
                    raise TypeError(f"question {qa.get('id')!r}: answers are {{\"text\": ..., \"answer_start\": ...}} "
                                    f"objects in a v1.1 file, not {answers[0]!r:.40}")
                yield qa["id"], [a["text"] for a in answers]


def squad_scores(dataset, predictions):
    """{"exact_match", "f1"} in percent, as SQuAD v1.1's evaluate-v1.1.py: dataset is the file's "data" list,
    predictions {question id: text}; each question scores the max over its gold answers; a question without a
    prediction scores 0 and is counted in a note (the script prints each one)."""
    if isinstance(dataset, dict):                              # (a TypeError of string indices)
        raise TypeError('dataset is the file\'s "data" list (json.load(f)["data"]), not the whole file')
    if not isinstance(predictions, dict):                      # a list matched no id: 0.0 without a word
        raise TypeError(f"predictions is a {type(predictions).__name__}: give {{question id: answer text}} (from HF "
                        "evaluate's [{'id', 'prediction_text'}]: {p['id']: p['prediction_text'] for p in predictions})")
    if bad := next((k for k, v in predictions.items() if not isinstance(v, str)), None):
        raise TypeError(f"prediction {bad!r} is a {type(predictions[bad]).__name__}, not the answer's text")
    em = f = total = 0
    unanswered = []
    for qid, gold in _squad_questions(dataset):
        total += 1
        if qid in predictions:
            pred = predictions[qid]
            em += max(squad_normalize(pred) == squad_normalize(g) for g in gold)
            f += max(squad_f1(pred, g) for g in gold)
        else:
            unanswered.append(qid)
    if not total:                                              # (ZeroDivisionError, as the script's)
        raise ValueError("dataset holds no questions: give the v1.1 file's \"data\" list of articles")
    if unanswered:  # (the script prints a line for each: "Unanswered question ID will receive score 0.")
        print(f"note: {len(unanswered):,} of {total:,} questions have no prediction (first: {unanswered[0]}): each "
              "scores 0, as the official evaluate-v1.1.py scores them" + (
                  f"; no prediction's id is a question's (first: {next(iter(predictions))!r})" if
                  predictions and len(unanswered) == total else ""), file=sys.stderr)
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f / total}


# ----------------------------------------------------------------------------------------------------
# The demo

def demo():
    hyp = ["Pisica stă pe covor.", "Prețul a crescut cu 3,5%."]
    ref = ["Pisica stă pe preș.", "Prețul a crescut cu 3,5% în 2016."]
    print(f"{hyp} vs {ref}:\n" + score_line(translation_scores(hyp, ref)))
    p, y, s, g = [1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 0, 1], [0.1, 2.0, 2.0, 3.5, 4.2], [0.0, 1.5, 2.5, 2.5, 5.0]
    print(f"labels {p} vs {y}: accuracy {accuracy(p, y):.4f}  F1 {f1(p, y):.4f}  MCC {matthews_corrcoef(p, y):.4f}")
    print(f"scores {s} vs {g}: Pearson {pearson(s, g):.4f}  Spearman {spearman(s, g):.4f}")


if __name__ == "__main__":  # no flags: a typed one is refused, not ignored
    argparse.ArgumentParser(description="The metrics on a few examples").parse_args()
    sys.stdout.reconfigure(errors="backslashreplace")   # an ASCII stdout (LC_ALL=C): "ă" as \u0103, not a traceback
    if hasattr(signal, "SIGPIPE"):  # a reader that goes (| head -1) ends the demo as it ends cat: no traceback
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # (Windows has no SIGPIPE)
    demo()
