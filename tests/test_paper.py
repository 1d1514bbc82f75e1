"""What the docs and messages attribute to the papers, against the papers' own text (shared/papers/: Wu et al. 2024,
arXiv 2403.08822) and the recipes they name, written out here: a setting the paper does not give must not be called
the paper's, and a figure quoted from another recipe must be that recipe's.

The paper gives (Sec. 4.3) AdamW, lr 2e-5, 3 epochs, r = 16 and half of A and B for every experiment, and (Sec. 4.4)
batch 64 / 32 and sequence length 128 for RoBERTa-base / -large on GLUE; no alpha, no LoRA targets, no batch or
sequence length for T5 and LLaMA. Table 1's caption: Matthews correlation for CoLA, Pearson for STS-B, accuracy for
SST-2, MRPC, QNLI, QQP and RTE.
"""
import glob
import math
import os
import re
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
import cli  # noqa: E402
import data  # noqa: E402
import metrics  # noqa: E402
import paper_tables  # noqa: E402

PAPER = {"--lr": 2e-5, "--epochs": 3, "--rank": 16, "--keep": 0.5}  # Sec. 4.3: every setting it gives train.py's flags
ALPACA_GLOBAL_BATCH = 128  # tatsu-lab/stanford_alpaca's README ("Batch size 128"): 4 GPUs x 4 a device x 8 accumulated


def doc_paragraphs():
    """(file, paragraph with its lines joined by spaces) of README.md and docs/*.md."""
    for path in [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]:
        with open(path, encoding="utf-8") as f:
            for paragraph in f.read().split("\n\n"):
                yield os.path.relpath(path, ROOT), " ".join(paragraph.split("\n"))


def test_docs_give_stanford_alpacas_global_batch():
    """Stanford Alpaca trained at a global batch of 128; the docs called lorasp's 4 x 8 = 32 (one GPU's share of
    Alpaca's per-device 4 x 8, the 4 GPUs dropped) "Alpaca's global batch of 32" and "Alpaca's (batch 4 x 8 = 32)"."""
    claim = re.compile(r"Alpaca's[^.;]{0,60}?\bbatch\b(?: (?:is|of))?\s+(\d+)\b(?!\s*[×x])"
                       r"|Alpaca's[^.;]{0,60}?\bbatch\b[^.;]{0,40}?=\s*(\d+)")
    claims = [(path, m.group(0), int(m.group(1) or m.group(2))) for path, text in doc_paragraphs()
              for m in claim.finditer(text)]
    assert claims, "no statement of Alpaca's batch found: the pattern no longer reads the docs"
    assert [c for c in claims if c[2] != ALPACA_GLOBAL_BATCH] == []


def test_docs_call_the_paper_s_only_what_it_gives():
    """alpha 32 and the query/value (q/v) targets are lorasp's and LoRA's choices: a clause that calls settings the
    paper's and names one of them must say whose it is (the docs said "(r=16, alpha=32, keep=0.5, the paper's)", "the
    paper's Table 2 setting for T5-base: LoRA-SP r=16 on q and v")."""
    not_given = re.compile(r"\balpha ?=? ?32\b|\bquery and value\b|\bq and v\b")
    papers = re.compile(r"the paper's(?! counts?\b)(?!\s*\d)")  # (not its parameter counts, quoted as such)
    whose = re.compile(r"\bours\b|\bnot\b|\bnone\b|\bneither\b|LoRA's")
    wrong = [(path, clause) for path, text in doc_paragraphs() for clause in re.split(r"(?<=[.;])\s", text)
             if papers.search(clause) and not_given.search(clause) and not whose.search(clause)]
    assert wrong == []


def test_documented_runs_at_another_rank_give_alpha():
    """alpha's default is a constant 32, 2r at the paper's r = 16 only (the paper gives no alpha): a documented run at
    another rank without --alpha scales its update by 32/r (the second paper's r = 8 at 4, where bench/second_paper.py,
    whose runs the docs report, passes --alpha 2r)."""
    command = re.compile(r"train\.py (?:(?! python )[^`|#])*?--rank (\d+)(?:(?! python )[^`|#])*")  # to its end
    runs = [(path, m.group(0)) for path, text in doc_paragraphs() for m in command.finditer(text)
            if int(m.group(1)) != 16]
    assert runs, "no documented run at another rank found: the pattern no longer reads the docs"
    assert [(path, run) for path, run in runs if "--alpha" not in run] == []


class WordTokenizer:
    """A stand-in tokenizer: one id a word, EOS appended when asked (T5's prefix is 4 of them)."""
    eos_id = 1

    def encode(self, text, bos=None, eos=True, after=False):
        return [7] * len(text.split()) + [self.eos_id] * eos


def test_wmt16_messages_name_no_sequence_length_of_the_paper(tmp_path):
    """The paper gives a sequence length (128) for its RoBERTa runs only; both WMT16 --seq-len refusals said "the
    paper's: 128" for T5."""
    with pytest.raises(ValueError) as prefix_fills:
        data.wmt16_examples(str(tmp_path), WordTokenizer(), 5)     # the 4-word prefix and EOS fill 5 tokens
    pairs = [("how many words are in the red bag", "cate cuvinte sunt in punga rosie")] * 8
    with pytest.raises(ValueError) as too_short:
        data.sentence_room(pairs, WordTokenizer(), 4, 7)           # 2 of the 8 words left after prefix and EOS
    for e in (prefix_fills, too_short):
        assert "--seq-len" in str(e.value) and "paper" not in str(e.value)


def test_help_calls_the_paper_s_only_its_settings(capsys):
    """Each train.py flag whose help says "the paper's" has the paper's value as its default, and only those."""
    with pytest.raises(SystemExit):
        cli.parse_args(["--help"])
    options = re.split(r"\n(?=  -)", capsys.readouterr().out.split("\noptions:\n")[1])  # one a flag, however wrapped
    flags = {re.match(r"\s*(-[\w-]+)", o).group(1): re.sub(r"\s+", " ", o) for o in options}
    claimed = {f for f, help_ in flags.items() if re.search(r"the paper's(?! GLUE| recipe)", help_)}
    assert claimed == set(PAPER)
    for flag, value in PAPER.items():
        assert float(re.search(r"\(default: ([^)]+)\)", flags[flag]).group(1)) == value


def independent(metric, p, y):
    """Table 1's caption metrics, written here: accuracy, Matthews' phi of a 2 x 2 table, Pearson's r (numpy)."""
    if metric == "accuracy":
        return 100 * np.mean(np.asarray(p) == np.asarray(y))
    if metric == "matthews_corrcoef":
        tp, tn = sum(a == b == 1 for a, b in zip(p, y)), sum(a == b == 0 for a, b in zip(p, y))
        fp, fn = sum(a == 1 and b == 0 for a, b in zip(p, y)), sum(a == 0 and b == 1 for a, b in zip(p, y))
        return 100 * (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 100 * np.corrcoef(p, y)[0, 1]


@pytest.mark.parametrize("task", paper_tables.GLUE_COLUMNS)
def test_table1_cells_read_the_caption_s_metric(task):
    """bench/paper_tables.py puts beside each of Table 1's columns the metric its caption names (MRPC and QQP:
    accuracy, where GLUE's headline is F1), from the matched dev set for MNLI."""
    caption = {"cola": "matthews_corrcoef", "stsb": "pearson"}.get(task, "accuracy")
    split, metric = paper_tables.METRIC.get(task, ("dev", "accuracy"))
    assert (split, metric) == ("dev_matched" if task == "mnli" else "dev", caption)
    p, y = ([0.5, 2.0, 1.0, 4.5, 3.0, 0.0], [1.0, 2.5, 0.5, 5.0, 2.0, 0.5]) if task == "stsb" else \
        ([1, 0, 1, 1, 0, 1, 0, 0], [1, 0, 0, 1, 0, 1, 1, 0])
    assert metrics.glue_metrics(task, p, y)[metric] == pytest.approx(independent(caption, p, y), abs=1e-9)
