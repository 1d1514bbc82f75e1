"""A toy SQuAD v1.1 and a tiny random BERT, for running the extractive-QA pipeline offline (tests, --toy commands).

    python bench/toy_squad.py --out toysquad [--gpt2]   # toysquad/squad/{train,dev}-v1.1.json, toysquad/bert/

Each paragraph is filler words with an animal, a color, a fruit and a city at random places ("we saw the fox near
rome with a pear then ..."); the question asks for the animal ("which animal is named ?"; --asked for more kinds),
the answer a span of the context with its character offset, in the official files'
layout (read by data.read_squad like the real ones). The tokenizer is a WordPiece vocab.txt of the toy's words (one
token each); the model a BERT of --shape with random weights. EM on it says the pipeline learns, nothing about SQuAD.
"""
import argparse
import json
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import model as M  # noqa: E402

KINDS = {"animal": "cat dog fox owl bee cow pig ant".split(), "color": "red blue green pink gray gold tan teal".split(),
         "fruit": "apple pear plum fig lime kiwi date melon".split(),
         "city": "paris rome oslo lima cairo delhi tokyo bern".split()}
FILL = "i we saw met found near with and the a in of by then later there".split()
WORDS = ["which", "is", "named", "?", ".", ",", *KINDS] + FILL + [w for ws in KINDS.values() for w in ws]


def toy_squad(n_paragraphs, seed=0, length=(12, 30), asked=("animal",)):
    """SQuAD v1.1's "data" list: one article of n_paragraphs paragraphs. A paragraph is filler words with one word of
    each kind (an animal, a color, a fruit, a city) at random places; a question per asked kind asks which one is
    named ("which animal is named ?"), its answer that word, a span of the context with its character offset.
    Asking every kind makes the model match the question's kind to the word's: a random 2-layer BERT stayed at
    chance over the four (loss ln 4) for 1000 steps, so by default only the animal is asked."""
    rng, paragraphs = random.Random(seed), []
    for p in range(n_paragraphs):
        words = [rng.choice(FILL) for _ in range(rng.randint(*length))]
        picks = {kind: rng.choice(ws) for kind, ws in KINDS.items()}
        at = sorted(rng.sample(range(len(words) + 1), len(picks)))
        for i, (kind, w) in sorted(zip(at, rng.sample(list(picks.items()), len(picks))), reverse=True):
            words.insert(i, w)
        where, context = {}, ""
        for w in words:
            where.setdefault(w, len(context) + (len(context) > 0))
            context += (" " if context else "") + w
        qas = [dict(id=f"{seed}-{p}-{kind}", question=f"which {kind} is named ?",
                    answers=[dict(text=w, answer_start=where[w])]) for kind, w in picks.items() if kind in asked]
        paragraphs.append(dict(context=context + " .", qas=qas))
    return [dict(title="toy", paragraphs=paragraphs)]


def write_toy(out, n_train=400, n_dev=40, seed=0, shape=None, asked=("animal",)):
    """OUT/squad/{train,dev}-v1.1.json and OUT/bert/ (config, weights, vocab.txt); returns (squad dir, bert dir)."""
    squad, bert = os.path.join(out, "squad"), os.path.join(out, "bert")
    os.makedirs(squad, exist_ok=True)
    os.makedirs(bert, exist_ok=True)
    for name, n, s in (("train-v1.1.json", n_train, seed), ("dev-v1.1.json", n_dev, seed + 1)):
        with open(os.path.join(squad, name), "w") as f:
            json.dump(dict(data=toy_squad(n, s, asked=asked), version="1.1"), f)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    with open(os.path.join(bert, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    torch.manual_seed(seed)
    config = M.EncoderConfig("bert", vocab_size=len(vocab), n_positions=128, **(shape or dict(
        n_layer=2, n_embd=64, n_head=4, n_ffn=128)))
    M.save_pretrained(M.build_model(config), bert)
    return squad, bert


def write_gpt2(out, seed=0):
    """OUT/gpt2: a random 2-layer GPT-2 (width 64, 256 positions) with a byte-level BPE (HF `tokenizers`) trained on
    the toy's words and Alpaca's templates, for the generative path (train.py --data squad-gen)."""
    from tokenizers import ByteLevelBPETokenizer  # a test-only dependency: only this toy needs it
    d = os.path.join(out, "gpt2")
    os.makedirs(d, exist_ok=True)
    tk = ByteLevelBPETokenizer()
    tk.train_from_iterator([" ".join(WORDS)] * 20 + list(data.PROMPT_DICT.values()) * 20, vocab_size=400,
                           min_frequency=1, special_tokens=["<|endoftext|>"])
    tk.save_model(d)
    with open(os.path.join(d, "vocab.json")) as f:
        vocab = json.load(f)
    torch.manual_seed(seed)
    M.save_pretrained(M.build_model(M.GPT2Config(vocab_size=len(vocab), n_positions=256, n_layer=2, n_embd=64,
                                                 n_head=4)), d)
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="toysquad", help="writes OUT/squad/*.json and OUT/bert/")
    ap.add_argument("--sizes", type=int, nargs=2, default=[800, 100], help="train, dev paragraphs")
    ap.add_argument("--asked", nargs="+", default=["animal"], choices=list(KINDS), help="kinds the questions ask for")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gpt2", action=argparse.BooleanOptionalAction, default=False, help="also OUT/gpt2, a tiny GPT-2")
    args = ap.parse_args()
    squad, bert = write_toy(args.out, *args.sizes, args.seed, asked=args.asked)
    print(f"{squad}: train-v1.1.json, dev-v1.1.json; {bert}: a random 2-layer BERT, width 64" +
          (f"; {write_gpt2(args.out, args.seed)}: a random 2-layer GPT-2, width 64" if args.gpt2 else ""))


if __name__ == "__main__":
    main()
