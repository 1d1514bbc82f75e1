"""A toy SQuAD v1.1 and a tiny random BERT, for running the extractive-QA pipeline offline (tests, --toy commands).

    python bench/toy_squad.py --out toysquad     # toysquad/squad/{train,dev}-v1.1.json, toysquad/bert/

Each paragraph says who has what ("bob has a kite . carol has a drum . ..."); each question asks what one of them
has ("what does carol have ?"), the answer a span of the context with its character offset, in the official files'
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
import model as M  # noqa: E402

NAMES = "alice bob carol dave erin frank grace heidi ivan judy mallory oscar peggy trent victor wendy".split()
THINGS = "apple book cup drum egg flag guitar hat kite lamp map nut pen ring sock toy".split()
WORDS = ["what", "does", "have", "has", "a", ".", "?"] + NAMES + THINGS


def toy_squad(n_paragraphs, seed=0, facts=(3, 6)):
    """SQuAD v1.1's "data" list: one article of n_paragraphs paragraphs, one question per fact."""
    rng, paragraphs = random.Random(seed), []
    for p in range(n_paragraphs):
        names, context, qas = rng.sample(NAMES, rng.randint(*facts)), "", []
        for name in names:
            thing = rng.choice(THINGS)
            context += f"{name} has a {thing} . "
            qas.append(dict(id=f"{seed}-{p}-{name}", question=f"what does {name} have ?",
                            answers=[dict(text=thing, answer_start=len(context) - len(thing) - 3)]))
        paragraphs.append(dict(context=context.strip(), qas=qas))
    return [dict(title="toy", paragraphs=paragraphs)]


def write_toy(out, n_train=400, n_dev=40, seed=0, shape=None):
    """OUT/squad/{train,dev}-v1.1.json and OUT/bert/ (config, weights, vocab.txt); returns (squad dir, bert dir)."""
    squad, bert = os.path.join(out, "squad"), os.path.join(out, "bert")
    os.makedirs(squad, exist_ok=True)
    os.makedirs(bert, exist_ok=True)
    for name, n, s in (("train-v1.1.json", n_train, seed), ("dev-v1.1.json", n_dev, seed + 1)):
        with open(os.path.join(squad, name), "w") as f:
            json.dump(dict(data=toy_squad(n, s), version="1.1"), f)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    with open(os.path.join(bert, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    torch.manual_seed(seed)
    config = M.EncoderConfig("bert", vocab_size=len(vocab), n_positions=128, **(shape or dict(
        n_layer=2, n_embd=64, n_head=4, n_ffn=128)))
    M.save_pretrained(M.build_model(config), bert)
    return squad, bert


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="toysquad", help="writes OUT/squad/*.json and OUT/bert/")
    ap.add_argument("--sizes", type=int, nargs=2, default=[400, 40], help="train, dev paragraphs (3-6 questions each)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    squad, bert = write_toy(args.out, *args.sizes, args.seed)
    print(f"{squad}: train-v1.1.json, dev-v1.1.json; {bert}: a random 2-layer BERT, width 64")


if __name__ == "__main__":
    main()
