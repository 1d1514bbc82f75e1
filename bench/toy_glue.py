"""Toy GLUE-format tasks and a tiny RoBERTa, pretrained here, for running the Table 1 pipeline offline.

    python bench/toy_glue.py --out toyglue   # toyglue/glue/{SST-2,MRPC,STS-B,MNLI}/*.tsv, toyglue/roberta/

Four tasks (--tasks all: eight) in the official files' layouts (read by data.load_glue like the real ones), over a
60-word vocabulary:
- SST-2: one sentence, label 1 if its one sentiment word is positive ("the plot was superb").
- MRPC: two sentences, label 1 if the second is the first with a word swapped for its synonym, 0 if swapped for its
  antonym (F1 and accuracy).
- STS-B: two sentences, the second the first's five words shuffled with 5 - k of them swapped for nonsense words;
  the score is k, 0 to 5 (Pearson, Spearman).
- MNLI: premise and hypothesis; entailment: the hypothesis is a subset of the premise's words; contradiction: it
  repeats one with "not"; neutral: it brings a new word. dev_mismatched draws its filler words from another half of
  the vocabulary than dev_matched and train do.
- --tasks all adds CoLA (acceptable: "the plot was very good"; not: the same words reordered; Matthews
  correlation), QNLI (does the sentence name the question's noun), QQP (the question reordered: duplicate; a noun
  replaced: not) and RTE (the hypothesis three of the premise's words: entailment; one negated or new: not).
The checkpoint stands in for a pretrained one (nothing here can be downloaded): a random tiny RoBERTa in Hugging
Face's layout (byte-level BPE: vocab.json + merges.txt trained by HF `tokenizers`), then pretrained with masked-
language modelling (RoBERTa's objective: 15% of the tokens masked, predicted through the tied word embeddings;
--mlm-steps) on the sentences of the four training sets, so that an adapter has features to adapt, as in the paper
(on the random one, LoRA-SP on q, v at lr 3e-2 stayed at chance on SST-2 over 189 steps; full fine-tuning: 100%).
Scores on these tasks say the pipeline learns; they say nothing about GLUE.
"""
import argparse
import json
import os
import random
import shutil
import sys

import torch
import torch.nn.functional as F
from tokenizers import ByteLevelBPETokenizer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import model as M  # noqa: E402
import tokenizer  # noqa: E402

POS, NEG = "good great fine lovely superb brilliant".split(), "bad awful poor dull boring weak".split()
SYNONYMS = {"big": ("large", "small"), "quick": ("fast", "slow"), "smart": ("clever", "dumb"),
            "begin": ("start", "end"), "happy": ("glad", "sad"), "old": ("aged", "young"),
            "rich": ("wealthy", "needy"), "hot": ("warm", "cold")}  # word: (its synonym, its antonym)
NOISE = "zip zap zot zut zen zag zog".split()  # what STS-B's second sentences swap words for
FILL = ("the a plot actors was is very quite really and but music scenes cast ending script it this that of with "
        "dog cat car tree road city river book song game").split()


def words(rng, k, pool):
    return rng.choices(pool, k=k)


def sst2(rng, pool):
    y = rng.randint(0, 1)
    w = words(rng, rng.randint(3, 8), pool)
    w.insert(rng.randrange(len(w) + 1), rng.choice(POS if y else NEG))
    return [" ".join(w), y]


def mrpc(rng, pool, i):
    y, key = rng.randint(0, 1), rng.choice(list(SYNONYMS))
    w = words(rng, rng.randint(4, 9), pool)
    w.insert(rng.randrange(len(w) + 1), key)
    other = [SYNONYMS[key][1 - y] if x == key else x for x in w]
    return [y, 2 * i, 2 * i + 1, " ".join(w), " ".join(other)]


def stsb(rng, pool, i):
    a, keep = words(rng, 5, pool), rng.randint(0, 5)
    b = [x if j < keep else rng.choice(NOISE) for j, x in enumerate(rng.sample(a, 5))]
    return [i, "toy", " ".join(a), " ".join(b), f"{keep:.1f}"]


def mnli(rng, pool, i):
    premise, y = words(rng, rng.randint(5, 9), pool), rng.randrange(3)
    kept = rng.sample(premise, 3)
    hypothesis = kept if y == 0 else (["not"] + kept if y == 2 else kept + [rng.choice([w for w in pool
                                                                                       if w not in premise])])
    return [i, "toy", " ".join(premise), " ".join(hypothesis), ("entailment", "neutral", "contradiction")[y]]


NOUNS = "plot music cast ending script dog cat car tree road city river book song game".split()
QUESTION = ["what", "where", "who"]  # the words only the extra tasks (--tasks all) bring


def cola(rng):
    """Acceptable (1): "DET NOUN was/is [ADV] ADJ"; unacceptable (0): the same words in another order."""
    w = [rng.choice(["the", "a", "this", "that"]), rng.choice(NOUNS), rng.choice(["was", "is"])] + \
        [rng.choice(["very", "quite", "really"])] * rng.randint(0, 1) + [rng.choice(POS + NEG)]
    y, bad = rng.randint(0, 1), w[:]
    while not y and bad == w:
        rng.shuffle(bad)
    return ["toy", y, "" if y else "*", " ".join(w if y else bad)]


def qnli(rng, pool, i):
    """entailment: the sentence names the question's noun; not_entailment: it does not."""
    noun, y = rng.choice(NOUNS), rng.randint(0, 1)
    w = [x for x in words(rng, rng.randint(4, 8), pool) if x != noun]
    w.insert(rng.randrange(len(w) + 1), noun if y else rng.choice([n for n in NOUNS if n != noun]))
    return [i, f"{rng.choice(QUESTION)} is the {noun}", " ".join(w), ("not_entailment", "entailment")[y]]


def qqp(rng, pool, i):
    """1: the second question is the first's words reordered; 0: one of its nouns replaced."""
    q, y = [rng.choice(QUESTION)] + words(rng, rng.randint(3, 6), pool) + [rng.choice(NOUNS)], rng.randint(0, 1)
    other = q[:1] + rng.sample(q[1:], len(q) - 1)
    if not y:
        other[other.index(q[-1])] = rng.choice([n for n in NOUNS if n != q[-1]])
    return [i, 2 * i, 2 * i + 1, " ".join(q), " ".join(other), y]


def rte(rng, pool, i):
    """entailment: the hypothesis is three of the premise's words; not_entailment: one of them negated or new."""
    premise, y = words(rng, rng.randint(5, 9), pool), rng.randint(0, 1)
    kept = rng.sample(premise, 3)
    hypothesis = kept if y else (["not"] + kept if rng.random() < 0.5 else kept[:2] + [rng.choice(NOUNS)])
    y = y or set(hypothesis) <= set(premise)  # a "new" noun may be in the premise after all
    return [i, " ".join(premise), " ".join(hypothesis), ("not_entailment", "entailment")[y]]


def pretrain_mlm(directory, texts, mask_id, steps, seed, batch=64, lr=1e-3):
    """Masked-LM pretraining of the encoder in directory, saved back: 15% of the non-special tokens of each
    sentence are replaced by mask_id and predicted from the final hidden states through the tied word embeddings."""
    tok, torch_rng = tokenizer.load_tokenizer(directory), torch.Generator().manual_seed(seed)
    encoder = M.load_pretrained(directory).train()
    encoder.requires_grad_(True)
    E = getattr(encoder, encoder.prefix).embeddings.word_embeddings.weight  # (vocab, C)
    bias = torch.zeros(E.shape[0], requires_grad=True)
    opt = torch.optim.AdamW([*encoder.parameters(), bias], lr=lr, weight_decay=0.01)
    ids = [tok.encode(t, eos=True) for t in texts]
    for step in range(steps):
        rows = [ids[i] for i in torch.randint(len(ids), (batch,), generator=torch_rng).tolist()]
        x = torch.tensor([r + [tok.pad_id] * (max(map(len, rows)) - len(r)) for r in rows])  # (B, T)
        real = x != tok.pad_id
        special = real & ((x == tok.bos_id) | (x == tok.eos_id))
        masked = (torch.rand(x.shape, generator=torch_rng) < 0.15) & real & ~special
        h = encoder(x.masked_fill(masked, mask_id), real.long())[masked]  # (n masked, C)
        loss = F.cross_entropy(h @ E.T + bias, x[masked])
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 100 == 0 or step == steps - 1:
            print(f"{directory}: MLM step {step + 1}/{steps}  loss {loss.item():.3f}")
    M.save_pretrained(encoder, directory)


HEADERS = {"SST-2": ["sentence", "label"], "MRPC": ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
           "STS-B": ["index", "genre", "sentence1", "sentence2", "score"],
           "MNLI": ["index", "genre", "sentence1", "sentence2", "gold_label"], "CoLA": None,  # CoLA: no header
           "QNLI": ["index", "question", "sentence", "label"],
           "QQP": ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
           "RTE": ["index", "sentence1", "sentence2", "label"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="toyglue", help="writes OUT/glue/<TASK>/*.tsv, OUT/roberta/")
    ap.add_argument("--sizes", type=int, nargs=2, default=[2000, 400], help="train, dev examples per task")
    ap.add_argument("--shape", default="n_layer=4,n_embd=128,n_head=4,n_ffn=512", help="EncoderConfig fields")
    ap.add_argument("--mlm-steps", type=int, default=600, help="masked-LM pretraining steps of batch 64 (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the pretraining: its sums, so the toy "
                    "model and every score on it, depend on the count (SST-2, docs/benchmarks.md: 2 threads 94.0, "
                    "1 thread 83.5)")
    ap.add_argument("--tasks", choices=["four", "all"], default="four", help="SST-2, MRPC, STS-B, MNLI; all: also "
                    "CoLA, QNLI, QQP, RTE (the paper's eight; a larger vocabulary, so a different tokenizer and model)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng, half = random.Random(args.seed), len(FILL) // 2
    matched, mismatched = FILL[:half] + FILL[half:half + 6], FILL[:6] + FILL[half:]
    make = {"SST-2": lambda i, p: sst2(rng, p), "MRPC": lambda i, p: mrpc(rng, p, i),
            "STS-B": lambda i, p: stsb(rng, p, i), "MNLI": lambda i, p: mnli(rng, p, i)}
    if args.tasks == "all":
        make.update({"CoLA": lambda i, p: cola(rng), "QNLI": lambda i, p: qnli(rng, p, i),
                     "QQP": lambda i, p: qqp(rng, p, i), "RTE": lambda i, p: rte(rng, p, i)})
    texts = []
    for task, fn in make.items():
        splits = {"train": (args.sizes[0], FILL), "dev": (args.sizes[1], FILL)} if task != "MNLI" else \
            {"train": (args.sizes[0], matched), "dev_matched": (args.sizes[1], matched),
             "dev_mismatched": (args.sizes[1], mismatched)}
        os.makedirs(os.path.join(args.out, "glue", task), exist_ok=True)
        for split, (n, pool) in splits.items():
            rows = [HEADERS[task]] * (task != "CoLA") + [fn(i, pool) for i in range(n)]
            texts += [t for r in rows[1:] if split == "train" for t in r if isinstance(t, str) and " " in t]
            with open(os.path.join(args.out, "glue", task, f"{split}.tsv"), "w", encoding="utf-8") as f:
                f.write("".join("\t".join(map(str, r)) + "\n" for r in rows))
    vocab = POS + NEG + list(SYNONYMS) + [w for pair in SYNONYMS.values() for w in pair] + FILL + NOISE + ["not"] + \
        (QUESTION if args.tasks == "all" else [])
    shape = {k: int(v) for k, v in (kv.split("=") for kv in args.shape.split(","))}
    d = os.path.join(args.out, "roberta.partial")  # renamed to roberta/ once pretrained: a killed build is not a toy
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    tk = ByteLevelBPETokenizer()
    tk.train_from_iterator([" ".join(vocab)] * 20, vocab_size=400, min_frequency=1,
                           special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tk.save_model(d)
    with open(os.path.join(d, "vocab.json"), encoding="utf-8") as f:
        bpe = json.load(f)
    torch.manual_seed(args.seed)
    M.save_pretrained(M.build_model(M.EncoderConfig("roberta", vocab_size=len(bpe), n_positions=130, n_type=1,
                                                    norm_eps=1e-5, pad_id=1, **shape)), d)
    pretrain_mlm(d, texts, bpe["<mask>"], args.mlm_steps, args.seed)
    shutil.rmtree(os.path.join(args.out, "roberta"), ignore_errors=True)
    os.replace(d, os.path.join(args.out, "roberta"))
    print(f"{args.out}/glue: {', '.join(make)} ({args.sizes[0]} train, {args.sizes[1]} dev each); "
          f"{args.out}/roberta: {shape}, {args.mlm_steps} MLM steps")


if __name__ == "__main__":
    main()
