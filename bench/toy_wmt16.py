"""A toy English -> Romanian corpus and a tiny T5 for running the Table 2 pipeline offline (no WMT16, no weights).

    python bench/toy_wmt16.py --out toy    # toy/data/{train,validation,test}.jsonl, toy/pretrain/, toy/t5/ (random)

The sentences follow a small grammar with the reorderings that make En-Ro translation more than a word lookup:
the definite article becomes a noun suffix ("the cat" -> "pisica"), adjectives follow the noun and agree with its
gender ("the red cat" -> "pisica roșie", "a red dog" -> "un câine roșu"). OUT/pretrain stands in for pretraining:
the same grammar with adjectives only after "is" ("The cat is red." -> "Pisica este roșie."), so a base trained on
it knows every word and the agreement, and adapting it to the full grammar teaches where an attributive adjective
goes: the shape of the paper's experiment (a pretrained T5 adapted to WMT16). Rows are in the Hugging Face wmt16
export's format ({"translation": {"en": ..., "ro": ...}}). The tokenizer is a sentencepiece unigram model with T5's
special ids (pad 0, EOS 1, unk 2, no BOS) trained on both sides; the model is a randomly initialised T5 v1.0 of --shape,
with Hugging Face's T5 initialisation (embeddings N(0, 1), projections scaled by their fan-in: model.py's generic
N(0, 0.02) leaves the tied, d_model^-0.5-rescaled head's logits near 0 and trains several times slower here).
Scores on this corpus say the pipeline learns; they say nothing about WMT16 (the paper's numbers need t5-base and
the real data: the README has the commands).
"""
import argparse
import io
import json
import os
import random
import sys

import sentencepiece as spm
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import model as M  # noqa: E402

NOUNS = {  # English: (Romanian indefinite, definite, gender)
    "cat": ("pisică", "pisica", "f"), "dog": ("câine", "câinele", "m"), "house": ("casă", "casa", "f"),
    "boy": ("băiat", "băiatul", "m"), "girl": ("fată", "fata", "f"), "book": ("carte", "cartea", "f"),
    "car": ("mașină", "mașina", "f"), "tree": ("copac", "copacul", "m"), "bird": ("pasăre", "pasărea", "f"),
    "man": ("bărbat", "bărbatul", "m"), "teacher": ("profesor", "profesorul", "m"),
    "city": ("oraș", "orașul", "m")}
ADJECTIVES = {"red": ("roșu", "roșie"), "big": ("mare", "mare"), "small": ("mic", "mică"),
              "old": ("bătrân", "bătrână"), "new": ("nou", "nouă"), "white": ("alb", "albă"),
              "black": ("negru", "neagră"), "good": ("bun", "bună")}
VERBS = {"sees": "vede", "has": "are", "wants": "vrea", "finds": "găsește", "draws": "desenează",
         "loves": "iubește"}
ADVERBS = {"today": "azi", "now": "acum", "again": "din nou", "": ""}


def phrase(rng, simple=False):
    noun, definite, adj = rng.choice(list(NOUNS)), rng.random() < 0.6, rng.choice([None, *ADJECTIVES])
    adj = None if simple else adj
    indef, defin, gender = NOUNS[noun]
    en = ("the " if definite else "a ") + (f"{adj} " if adj else "") + noun
    ro = defin if definite else ("un " if gender == "m" else "o ") + indef
    return en, ro + (" " + ADJECTIVES[adj][gender == "f"] if adj else "")


def pair(rng, simple=False):
    (s_en, s_ro), (o_en, o_ro) = phrase(rng, simple), phrase(rng, simple)
    verb, adv = rng.choice(list(VERBS)), rng.choice(list(ADVERBS))
    if simple and rng.random() < 0.4:  # "X is ADJ": the adjective's forms and agreement, not its attributive place
        adj, gender = rng.choice(list(ADJECTIVES)), NOUNS[s_en.split()[-1]][2]
        en, ro = f"{s_en} is {adj}", f"{s_ro} este {ADJECTIVES[adj][gender == 'f']}"
        return en[0].upper() + en[1:] + ".", ro[0].upper() + ro[1:] + "."
    en, ro = f"{s_en} {verb} {o_en}" + (f" {adv}" if adv else ""), f"{s_ro} {VERBS[verb]} {o_ro}" + (
        f" {ADVERBS[adv]}" if adv else "")
    return en[0].upper() + en[1:] + ".", ro[0].upper() + ro[1:] + "."


def t5_init(t5, std=1.0):
    """transformers' T5PreTrainedModel._init_weights (factor 1): N(0, 1) embeddings, q N(0, (d_model d_kv)^-0.5),
    k/v/wi N(0, d_model^-0.5), o N(0, (heads d_kv)^-0.5), wo N(0, d_ff^-0.5), position tables N(0, d_model^-0.5)."""
    c = t5.config
    fan = dict(q=c.d_model * c.d_kv, k=c.d_model, v=c.d_model, o=c.num_heads * c.d_kv, wi=c.d_model, wi_0=c.d_model,
               wi_1=c.d_model, wo=c.d_ff, relative_attention_bias=c.d_model)
    with torch.no_grad():
        for name, p in t5.named_parameters():
            kind = name.split(".")[-2]
            if name in ("shared.weight", "lm_head.weight") or kind in fan:
                p.normal_(0, std if kind not in fan else fan[kind] ** -0.5)
    return t5


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="toy", help="writes OUT/data/*.jsonl and OUT/t5/")
    ap.add_argument("--sizes", type=int, nargs=3, default=[4000, 200, 200], help="train, validation, test pairs")
    ap.add_argument("--pretrain-sizes", type=int, nargs=2, default=[4000, 100],
                    help="train, validation pairs of the grammar without adjectives")
    ap.add_argument("--shape", default="d_model=128,d_kv=32,d_ff=256,num_layers=3,num_decoder_layers=3,num_heads=4",
                    help="T5Config fields for the tiny model")
    ap.add_argument("--vocab", type=int, default=128, help="sentencepiece vocabulary (then + 100 sentinels)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng, seen, splits = random.Random(args.seed), set(), {}
    for name, n in zip(("pretrain/train", "pretrain/validation", "data/train", "data/validation", "data/test"),
                       args.pretrain_sizes + args.sizes):  # no sentence in two splits
        rows = []
        while len(rows) < n:
            p = pair(rng, simple=name.startswith("pretrain"))
            if p not in seen:
                seen.add(p)
                rows.append(p)
        splits[name] = rows
        os.makedirs(os.path.join(args.out, os.path.dirname(name)), exist_ok=True)
        with open(os.path.join(args.out, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"translation": {"en": en, "ro": ro}}, ensure_ascii=False) + "\n"
                         for en, ro in rows)
    buf, text = io.BytesIO(), [s for en, ro in splits["data/train"] for s in (en, ro)] + [
        "translate English to Romanian:"]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=buf, vocab_size=args.vocab,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=1.0, minloglevel=2)
    shape = {k: int(v) for k, v in (kv.split("=") for kv in args.shape.split(","))}
    torch.manual_seed(args.seed)
    t5 = t5_init(M.build_model(M.T5Config(vocab_size=args.vocab + 100, **shape)))
    M.save_pretrained(t5, os.path.join(args.out, "t5"))
    with open(os.path.join(args.out, "t5", "spiece.model"), "wb") as f:
        f.write(buf.getvalue())
    print(f"{args.out}: {', '.join(f'{k} {len(v)}' for k, v in splits.items())} pairs, e.g. {splits['data/test'][0]}, "
          f"{splits['pretrain/train'][0]}\n"
          f"{args.out}/t5: random T5 v1.0, {sum(p.numel() for p in t5.parameters()):,} parameters, {shape}")


if __name__ == "__main__":
    main()
