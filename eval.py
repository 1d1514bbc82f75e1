"""eval.py: how lorasp scores a fine-tuned model (the paper's Tables 1 and 2), and the evaluations a user runs on
a checkpoint with or without an adapter: MMLU 5-shot, perplexity, greedy generation side by side; and (--plot) the
loss curves of train.py runs, drawn by plot.py.

The metrics (GLUE's, BLEU, chrF, ROUGE, SQuAD's exact match and F1) live in metrics.py, by hand and equal to the tools
papers report with; they are importable from here too (`from eval import bleu`).
Here, on a model from model.load_pretrained (optionally NF4, optionally with lorasp.load_adapter):
- `mmlu`: Hendrycks et al. 2021 in the original release's format and prompt (their evaluate.py): k worked dev
  examples, the answer read from the next-token logits of " A" .. " D"; per-subject, macro and micro accuracy.
- `perplexity`: exp(mean token NLL) over windows of the model's context (non-overlapping, or strided); over records
  (`records_perplexity`), cut as train.py's validation loss cuts, what is past --seq-len said (evalcli.records_note).
- `generate_answers`: greedy answers to Alpaca-style instructions, printed with and without the adapter.
- `evaluate_glue`: a classifier's metrics on a GLUE task's dev set(s); `evaluate_translation`: BLEU, chrF(++), ROUGE of
  beam-search translations (beam 4, length penalty 0.6, T5's prefix); `evaluate_squad`: a span head's best span
  over a question's windows (or GPT-2's greedy answer). train.py validates with the same functions.
On a CPU in bf16 (train.py's autocast, or bf16 weights: evalcli.bucket_limit) batches, prompts, sources and perplexity's
last windows are padded to data.bucket_length's few lengths: oneDNN keeps memory for every matmul shape it meets.
Left out: MMLU's category averages and calibration, batching (one prompt at a time; the k-shot prefix is cached),
padding MMLU's prompts (each question's new tokens after the cached prefix: one length per question) and --task
generate's (one at a time: a padded prompt's bf16 near-ties go otherwise than transformers' on the same prompt).

    python eval.py --task mmlu --model DIR [--adapter DIR] [--quant nf4] [--data-dir MMLU_DIR] [--limit 20]
    python eval.py --task perplexity --model DIR --data FILE.txt|FILE.json [--adapter DIR] [--predictions F.jsonl]
    python eval.py --task generate --model DIR --adapter DIR --prompts FILE
    python eval.py --task glue/sst2 --model DIR [--adapter DIR] [--data-dir GLUE_DIR] [--seq-len 128]
    python eval.py --task wmt16-en-ro --model DIR [--adapter DIR] [--data-dir DIR] [--limit N] [--num-beams 4]
    python eval.py --task squad --model DIR [--adapter DIR] [--data-dir DIR] [--limit N] [--seq-len 384 --stride 128]
    python eval.py --plot RUN_DIR [RUN_DIR ...] --out loss.svg
    python eval.py                     # a demonstration of the metrics (metrics.py's)

Sections: GLUE's dev sets, WMT16 and SQuAD; MMLU; perplexity and generation; the command line, whose flags and checks,
data and model loaded, printouts and --predictions' file (the rows above give it) are evalcli.py's (cli.py: train.py's).
"""
import contextlib
import json
import math
import sys

import torch
import torch.nn.functional as F

from checks import console, context, windows_said
from data import (IGNORE, T5_PREFIX, alpaca_prompt, bucket_length, fit_contexts, glue_examples, sorted_batches,
                  squad_records, squad_windows)
from data import GLUE, UserError, mmlu_prompt, perplexity_docs, read_prompts  # noqa: F401 (eval.read_prompts ...)
from tokenizer import load_tokenizer
import metrics
from evalcli import (CAUSAL, TAKES, answer_ids, answers_said, base_only, bucket_limit, check_kind, final_hidden,
                     glue_said, in_glue_order, load_model, mmlu_encoder, mmlu_rows, mmlu_said, model_config, model_path,
                     parse_args, records_note, seq_len_for, squad_said, task_data, trained_on, translations_said,
                     with_adapter, write_predictions)
from evalcli import base_quant, mmlu_subjects, not_a_model  # noqa: F401  (bench/second_paper.py's: eval.base_quant ...)
from metrics import (accuracy, bleu, chrf, f1, glue_metrics, matthews_corrcoef,  # noqa: F401
                     pearson, rouge, spearman, squad_f1, squad_normalize, squad_scores)  # (the contract: eval.bleu ...)
from generate import beam_search, finite, generate
from model import lm_loss
from plan import use_threads
from plot import plot

# ----------------------------------------------------------------------------------------------------
# A model scored on GLUE's dev sets, WMT16 translations and SQuAD (train.py validates with these too)

def classifier_loss(logits, labels):
    """Summed cross-entropy of logits (B, n) against class indices (B,); one output (STS-B): squared error. Rows
    labelled IGNORE (a DDP rank's filler batch) add nothing, in both cases."""
    if logits.shape[1] == 1:
        keep = labels != IGNORE                                       # a score of -100 is not a target
        return F.mse_loss(logits[keep, 0].float(), labels[keep].float(), reduction="sum")
    return F.cross_entropy(logits.float(), labels, reduction="sum")   # ignore_index=-100: IGNORE


@torch.no_grad()
def evaluate_glue(model, task, dev_sets, batch_size=32, autocast=contextlib.nullcontext, bucket=None, rows=None):
    """{dev split: {glue_metrics..., "loss": mean classifier_loss}} of an encoder with a head (model.classify) on
    encoded GLUE examples (data.glue_examples); the prediction is the argmax, or STS-B's score. bucket: as
    data.collate's (train.py's CPU bf16 runs). rows: a list that gets each example's {split, index, label,
    prediction}."""
    training, device, out = model.training, next(model.parameters()).device, {}
    model.eval()
    for split, examples in dev_sets.items():
        logits = {}
        for at, b in sorted_batches(examples, batch_size, getattr(model.config, "pad_id", 0),  # GPT-2: none
                                    bucket=bucket):                # (at: the batch's example indices)
            b = {k: v.to(device) for k, v in b.items()}
            with autocast():
                logits.update(zip(at, model.classify(b["input_ids"], b["attention_mask"],
                                                     b["token_type_ids"]).float()))
        z = finite(model, torch.stack([logits[i] for i in range(len(examples))]).cpu(), f"{split}: the logits")
        y = torch.tensor([e["labels"] for e in examples])                 # (N,) class indices or scores
        predictions = z[:, 0] if z.shape[1] == 1 else z.argmax(1)  # (N,)
        rows is None or rows.extend(dict(split=split, index=i, label=a, prediction=b) for i, (a, b) in enumerate(zip(
            y.tolist(), predictions.tolist())))  # (the lists glue_metrics scores: STS-B's float32 scores as floats)
        out[split] = dict(glue_metrics(task, predictions.tolist(), y.tolist()),
                          loss=classifier_loss(z, y).item() / len(y))
    model.train(training)
    return out


@torch.no_grad()
def translate(model, tok, sources, prefix=T5_PREFIX, batch_size=32, num_beams=4, length_penalty=0.6,
              max_new_tokens=256, bucket=None):
    """Translations of `sources`, in order; batches of similar length (little padding), beam search, decoded.
    bucket: sources padded to data.bucket_length's lengths up to it (CPU bf16: few encoder shapes; the decoder
    runs one token a step)."""
    order, out, dev, training = sorted(range(len(sources)), key=lambda i: len(sources[i])), [None] * len(sources), \
        next(model.parameters()).device, model.training
    model.eval()  # no dropout while decoding
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        ids = [tok.encode(prefix + sources[i]) for i in rows]
        S = max(map(len, ids))
        S = bucket_length(S, bucket) if bucket else S
        x = torch.tensor([s + [tok.pad_id] * (S - len(s)) for s in ids], device=dev)
        mask = (torch.arange(S, device=dev) < torch.tensor([len(s) for s in ids], device=dev)[:, None]).long()
        best = beam_search(model, x, mask, num_beams, length_penalty, max_new_tokens)[0][:, 0]  # (B, 1 + n)
        for i, hyp in zip(rows, best.tolist()):
            out[i] = tok.decode(hyp)
    model.train(training)
    return out


def evaluate_translation(model, tok, pairs, **kw):
    """({bleu, chrf, chrf++, rouge1, rouge2, rougeL}, translations): metrics.translation_scores of the model's
    translations of the sources against the targets."""
    hypotheses = translate(model, tok, [s for s, _ in pairs], **kw)
    return metrics.translation_scores(hypotheses, [t for _, t in pairs]), hypotheses


def best_span(start, end, offsets, max_answer=30):
    """(score, first char, end char) of a window's best span: start logit + end logit, maximised over every pair of
    context tokens with start <= end < start + max_answer (exhaustive, not BERT's top-20 pre-selection)."""
    T, ok = len(offsets), torch.tensor([o is not None for o in offsets])
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    valid = ok[:, None] & ok[None, :] & (j >= i) & (j - i < max_answer)  # (T, T): span i..j allowed
    if not valid.any():  # a window with no context token
        return -math.inf, 0, 0
    a, b = divmod(int((start[:T, None] + end[None, :T]).masked_fill(~valid, -math.inf).argmax()), T)
    return float(start[a] + end[b]), offsets[a][0], offsets[b][1]


@torch.no_grad()
def evaluate_squad(model, tok, dataset, batch_size=32, max_len=384, stride=128, autocast=contextlib.nullcontext,
                   bucket=None, note=True):
    """({exact_match, f1}, {id: answer}) of an encoder with a span head (model.span_logits) on SQuAD-format data:
    each question's windows (data.squad_windows), its answer the best span over all of them (best_span) as the
    context's characters; a causal LM (GPT-2) answers generatively instead: greedy, Alpaca's template with the
    context as input (data.squad_records), also scored with BLEU against all gold answers. bucket: as
    data.collate's and generate_answers' (CPU bf16); note: the data notes (what was cut), as data's."""
    if model.config.model_type in CAUSAL[0]:  # (generate_answers: eval mode, the training mode set back)
        new = 32                                               # the tokens an answer may take
        records = fit_contexts(squad_records(dataset), tok, context_length(model), new, note)  # contexts cut to fit
        answers = generate_answers(model, tok, records, new, autocast=autocast, bucket=bucket)
        pred = {r["id"]: a for r, a in zip(records, answers)}
        return dict(squad_scores(dataset, pred), bleu=bleu(answers, [r["answers"] or [""] for r in records])), pred
    windows, training, best = squad_windows(dataset, tok, max_len, stride, note=note), model.training, {}
    device = next(model.parameters()).device
    model.eval()
    for rows, b in sorted_batches(windows, batch_size, model.config.pad_id, bucket=bucket):
        with autocast():
            start, end = model.span_logits(*(b[k].to(device) for k in ("input_ids", "attention_mask",
                                                                          "token_type_ids")))
        for i, s, e in zip(rows, *finite(model, torch.stack([start, end]), "squad: the span logits").cpu()):
            w = windows[i]
            score, a, z = best_span(s, e, w["offsets"])
            if score > best.get(w["id"], (-math.inf,))[0]:
                best[w["id"]] = score, w["context"][a:z]
    model.train(training)
    pred = {k: text for k, (_, text) in best.items()}
    return squad_scores(dataset, pred), pred


def context_length(model):
    """The longest sequence scored at once: the model's context, or its sliding window (Mistral, Qwen2: no further)."""
    return context(model.config)


# ----------------------------------------------------------------------------------------------------
# MMLU k-shot, as Hendrycks et al.'s evaluate.py builds it

@torch.no_grad()
def mmlu(model, tok, data, subjects=None, k=5, limit=None, max_len=None, log=print, rows=None):
    """{subjects: {name: accuracy}, macro: their mean (QLoRA's), micro: over all questions (evaluate.py's "Average
    accuracy"), questions: n, shots: the worked examples a prompt starts with, k or fewer where a dev file holds fewer
    (the fewest of any subject), shortened: how many prompts had fewer than that subject's, to fit, cut: how many did
    not fit even with none, and were cut at the start}. A prompt longer than max_len (default: the model's context)
    drops worked examples from the end, as the original does (which loops for ever on one too long with none).
    Prompts of a subject share their first few hundred tokens: the previous prompt's KV cache is reused up to where
    the token ids first differ (causal attention: keys and values of the shared part do not depend on what follows).
    data: MMLU's data/ folder, or its rows as evalcli.mmlu_rows read them ({subject: (dev rows, test rows)}, chosen
    already). rows: a list that gets each question's {subject, index (its test row), gold, prediction (the largest
    logit's), correct, shots, cut, logprobs: " A" .. " D"'s log-probabilities over the vocabulary}."""
    data = data if isinstance(data, dict) else mmlu_rows(data, subjects, k)
    max_len, letters, encode = max_len or context_length(model), answer_ids(tok), mmlu_encoder(tok)
    device, acc, hits, total, shortened, cuts, shots_given = next(model.parameters()).device, {}, 0, 0, 0, 0, k
    for s, (dev, test) in data.items():
        dev, test, shots_given = dev[:k], test[:limit], min(shots_given, len(dev[:k]))
        seen, cache, right, fewer, cut = [], [{}] * model.config.n_layer, 0, 0, 0
        for q, row in enumerate(test):
            for shots in range(len(dev), -1, -1):
                ids = encode(s, dev, row, shots)  # tok.encode(data.mmlu_prompt(s, dev, row, shots))
                if len(ids) <= max_len:
                    break
            fewer, cut = fewer + (shots < len(dev)), cut + (over := len(ids) > max_len)
            ids = ids[-max_len:]  # too long even zero-shot: keep the end, where the answer goes (said: cut)
            n = min(len(ids) - 1, next((i for i, (a, b) in enumerate(zip(ids, seen)) if a != b), len(seen)))
            cache = [{"k": c["k"][:, :, :n], "v": c["v"][:, :, :n]} if n else {} for c in cache]  # (B, nkv, n, hd)
            logits = model(torch.tensor([ids[n:]], device=device), cache=cache, last_only=True)[0, -1]  # (vocab,)
            pick = "ABCD"[int(finite(model, logits[letters], f"mmlu: {s}'s logits").argmax())]
            right, seen = right + (pick == row[5]), ids
            rows is None or rows.append(dict(subject=s, index=q, gold=row[5], prediction=pick, correct=pick == row[5],
                                             shots=shots, cut=over,
                                             logprobs=logits.float().log_softmax(-1)[letters].tolist()))
        acc[s], hits, total = right / len(test), hits + right, total + len(test)
        log(f"{acc[s]:.3f}  {s} ({len(test)} questions, {len(dev)}-shot" + (
            f"; {fewer} with fewer worked examples, to fit {max_len} tokens" if fewer else "") + (
            f"; {cut} cut at the start to fit {max_len} tokens even with no worked example" if cut else "") + ")")
        shortened, cuts = shortened + fewer, cuts + cut
    return dict(subjects=acc, macro=sum(acc.values()) / len(acc), micro=hits / total, questions=total,
                shots=shots_given, shortened=shortened, cut=cuts)


# ----------------------------------------------------------------------------------------------------
# Perplexity, generation

@torch.no_grad()
def perplexity(model, docs, seq_len=None, stride=None, bucket=None, tokens=0, rows=None):
    """(exp(mean NLL), scored tokens). Each document is cut into windows of seq_len tokens (default: the model's
    context) starting every `stride` (default seq_len: no overlap); a window scores only targets no earlier window
    scored, so a stride < seq_len gives later windows more context. A window's first token has no context in it.
    The NLL comes from model(windows, labels=...) (model.lm_loss): the windows' logits are never whole in memory.
    tokens: windows scored together, shortest first, up to that many tokens a forward pass (an NF4 base dequantizes
    every weight each pass: 150 short records were 150 passes), right-padded and unscored (causal: no real token sees
    the padding); 0: one window a pass. bucket: a pass's length right-padded to data.bucket_length's few lengths up to
    it (and seq_len); CPU bf16, where each length costs oneDNN's caches (bucket_limit). rows: a list that gets each
    window's {document (index in docs), begin, tokens scored, nll: their sum, to rounding its share of the pass's}."""
    seq_len = seq_len or context_length(model)
    stride, device, windows = stride or seq_len, next(model.parameters()).device, []
    if not 0 < stride <= seq_len:
        raise ValueError(f"--stride {stride} with --seq-len {seq_len}: windows further apart than they are long "
                         f"leave the tokens between them unscored; give --stride {seq_len} or less")
    for d, (ids, start) in enumerate(docs):
        done = max(start, 1)  # index of the first target still to score: token 0 has nothing before it
        for begin in range(0, len(ids) - 1, stride):
            window = ids[begin:begin + seq_len]
            first = max(done - begin, 1)  # its first target not scored yet
            if first < len(window):
                windows.append((window, first, d, begin))
                done = begin + len(window)
    if not windows:
        raise ValueError("perplexity: no token to score (each document needs at least 2 tokens)")
    if tokens:
        windows.sort(key=lambda w: len(w[0]))  # (stable) a pass's rows of about one length: little padding
    nll, n, i = 0.0, 0, 0
    length = (lambda T: bucket_length(T, min(bucket, seq_len))) if bucket else (lambda T: T)
    while i < len(windows):
        j = i + 1                                # rows i..j-1, the longest last
        while tokens and j < len(windows) and (j + 1 - i) * length(len(windows[j][0])) <= tokens:
            j += 1
        batch = windows[i:j]
        T = length(max(len(w) for w, *_ in batch))
        if bucket and tokens:                    # and as many rows as that length's full pass: one shape a length
            batch = batch + [([], 0, None, 0)] * (max(1, tokens // T) - len(batch))  # (unscored rows)
        ids = torch.tensor([w + [0] * (T - len(w)) for w, *_ in batch], device=device)
        labels = torch.tensor([[-100] * f + w[f:] + [-100] * (T - len(w)) for w, f, *_ in batch], device=device)
        count = sum(len(w) - f for w, f, *_ in batch)  # -100: unscored
        with final_hidden(model, rows is not None) as h:  # h[0]: (B, T, C), the hidden states the loss read
            loss = finite(model, model(ids, labels=labels), "perplexity: the loss")  # (a mean: no (T, vocab) logits)
        rows is None or rows.extend(dict(document=d, begin=b, tokens=len(w) - f, nll=(len(w) - f) * lm_loss(
            h[0][[r]], model.lm_head, labels[[r]]).item()) for r, (w, f, d, b) in enumerate(batch) if w)
        nll, n, i = nll + loss.item() * count, n + count, j
    return exp(nll / n), n


def exp(x):
    """e^x, inf past float64's range (mean NLL > 709.78 nats: math.exp's OverflowError, a traceback)."""
    return math.exp(x) if x < 709.78 else math.inf


def records_perplexity(model, docs, seq_len, stride, bucket, rows=None):
    """perplexity over records, scored in two parts: each record cut at seq_len, as train.py's validation loss cuts it
    at its --seq-len (one whose prompt fills it left out: data.tokenize_records), and the tokens past it. Returns the
    perplexity, its tokens and the parts, {"cut": (perplexity, tokens, records), "past": ...} (evalcli.records_note).
    rows: perplexity's, each with its part, its document the record's index in docs."""
    parts, got = dict(cut=[(i, ids[:seq_len], s) for i, (ids, s) in enumerate(docs) if s < seq_len],
                      past=[(i, ids, max(s, seq_len)) for i, (ids, s) in enumerate(docs) if len(ids) > seq_len]), {}
    for part, d in parts.items():
        windows = None if rows is None else []
        got[part] = perplexity(model, [x[1:] for x in d], seq_len, stride, bucket, 4096, windows) if d else (
            math.nan, 0)
        rows is None or rows.extend(dict(w, part=part, document=d[w["document"]][0]) for w in windows)
    (p, m), (q, k) = got.values()
    ppl = exp(sum(math.log(x) * y for x, y in ((p, m), (q, k)) if y) / (m + k))
    return ppl, m + k, dict(cut=(p, m, len(parts["cut"])), past=(q, k, len(parts["past"])))


@torch.no_grad()
def generate_answers(model, tok, records, max_new_tokens=128, batch_size=1, autocast=contextlib.nullcontext,
                     bucket=None, ended=None):
    """Greedy answers (KV cache) to Alpaca records (instruction, optional input), each up to its first of tok.stops
    (generate.py's: transformers' generate's eos ids, and EOS); batches of prompts are left-padded behind an attention
    mask (one prompt at a time needs none). bucket: prompts padded to data.bucket_length's few lengths up to it (CPU
    bf16: each prefill length costs oneDNN's caches; a decoding step is one token whatever the cache holds, no new
    shape), within the model's context. ended: a list that gets each answer's stop id (None: none came)."""
    training, device, answers = model.training, next(model.parameters()).device, []
    stops = getattr(tok, "stops", None if tok.eos_id is None else [tok.eos_id])  # (a tokenizer of one's own: its EOS)
    model.eval()
    for s in range(0, len(records), batch_size):
        prompts = [tok.encode(alpaca_prompt(r)) for r in records[s:s + batch_size]]
        T = max(map(len, prompts))
        T = bucket_length(T, min(bucket, context_length(model) - max_new_tokens)) if bucket else T  # (never below T)
        ids = torch.tensor([[0] * (T - len(p)) + p for p in prompts], device=device)  # (B, T)
        mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts], device=device)
        with autocast():
            out = generate(model, ids, max_new_tokens, eos_id=stops,
                           attention_mask=mask if batch_size > 1 or bucket else None)[:, T:].tolist()
        cut = [next((i for i, t in enumerate(o) if t in (stops or ())), len(o)) for o in out]  # its first stop id
        answers += [tok.decode(o[:i]).strip() for o, i in zip(out, cut)]  # each answer up to there
        ended.extend(o[i] if i < len(o) else None for o, i in zip(out, cut)) if ended is not None else None
    model.train(training)
    return answers


# ----------------------------------------------------------------------------------------------------
# Command line: running the task (its flags, and the checks of what they name: evalcli.py)

def main(argv=None):
    """The command line; a mistake the user can fix (data.UserError: a missing file, no network; the readers' and
    loaders' ValueError, OSError naming a file, tensor or module) ends with one line `error: ...` and exit
    status 1 (argparse's own: 2), anything else keeps its traceback."""
    try:
        command(argv)
    except (UserError, ValueError, NotImplementedError, OSError) as e:
        sys.exit(f"error: {e}")


def command(argv=None):
    """Check the flags (evalcli.parse_args), load the model (its adapter too), run the task: its lines, a JSON line;
    with --predictions, each example's row (evalcli.write_predictions)."""
    args, given = parse_args(argv)
    if args.plot:                                              # --plot draws, and evaluates nothing
        return plot(args.plot, args.out)
    if not args.task:
        metrics.demo()
        return print("on a checkpoint: python eval.py --task mmlu|perplexity|generate|glue/TASK|wmt16-en-ro|squad "
                     "--model DIR ... (see --help)")
    task, glue = args.task, args.task[5:] if args.task.startswith("glue/") else None
    use_threads(file=sys.stderr)                                # (said where a CPU quota or limit chose them)
    path = model_path(args.model)
    length = seq_len_for(args, given, model_config(path, path))  # config.json (or the .gguf's header): no weight yet
    needs = len(GLUE[glue][4] or [0]) if glue else 0, task == "squad", TAKES.get(task)  # a GLUE head: its task's
    check_kind(path, *needs)                                    # outputs (STS-B: 1, a score); before data is fetched
    tok = load_tokenizer(path) if task in ("perplexity", "generate") else None  # its data: tokenized before it loads
    data = task_data(args, tok)                                 # a bad row is named before minutes of loading
    model, tok = load_model(args.model, None if task == "generate" else args.adapter, args.quant, args.dtype,
                            args.device, *needs, tok)
    before = dict(model.named_modules()) if task == "generate" and args.adapter else {}  # generate: the base's too,
    model = with_adapter(model, args.adapter, args.model) if before else model  # the adapter checked before them
    rows, out = [] if args.predictions else None, None          # (each example's, for --predictions)
    if task == "squad":                                         # (a causal LM answers from its context: length)
        result, out = evaluate_squad(model, tok, data, args.batch_size, length, args.stride or 128,
                                     bucket=bucket_limit(model, length))
        squad_said(data, out, result)
    elif glue:
        dev = {s: e[:args.limit] for s, e in glue_examples(glue, tok, length, args.data_dir, train=False)[1].items()}
        in_glue_order(model, path, glue, args.adapter)        # a fine-tuned head naming its classes otherwise
        result = evaluate_glue(model, glue, dev, args.batch_size, bucket=bucket_limit(model, length), rows=rows)
        glue_said(task, dev, result)
    elif task == "wmt16-en-ro":
        result, out = evaluate_translation(model, tok, data, batch_size=args.batch_size,
                                           bucket=bucket_limit(model, 1 << 16),  # (T5: no position limit)
                                           num_beams=args.num_beams, max_new_tokens=args.max_new_tokens)
        result["sentences"] = len(data)
        translations_said(data, out, result, args.num_beams)
    elif task == "mmlu":
        result = mmlu(model, tok, data, k=args.shots, limit=args.limit, max_len=length, rows=rows)  # (task_data's)
        mmlu_said(result, args.shots)
    elif task == "perplexity":
        bucket = bucket_limit(model, length)  # 4096 tokens a pass: ~a long window, or many short records
        if args.data.lower().endswith((".json", ".jsonl")):  # records (a run's heldout.jsonl): as train.py cuts them
            ppl, n, parts = records_perplexity(model, data, length, args.stride, bucket, rows)
            note, more = records_note(data, length, parts)
        else:
            (ppl, n), more = perplexity(model, data, length, args.stride, bucket, 4096, rows), {}
            note = windows_said(path, length, args.stride, args.seq_len)  # (the figure moves with them)
        result = dict(perplexity=ppl, tokens=n, **more)
        print(f"perplexity {ppl:.4f} over {n} tokens" + note + trained_on(args, "--data", args.data))
    else:
        with base_only(model, before):  # one at a time, unpadded (as MMLU's): bf16's answers as transformers'
            base = generate_answers(model, tok, data, args.max_new_tokens, ended=(ended := []))
        tuned = generate_answers(model, tok, data, args.max_new_tokens, ended=ended) if args.adapter else None
        answers_said(args, path, tok, data, base, tuned, ended)
        result = dict(answers=[dict(base=x, **{"adapted": tuned[i]} if tuned else {}) for i, x in enumerate(base)])
        # (no adapter: no "adapted" answer; it read "" as if an adapter had answered nothing)
    print(json.dumps(line := dict(task=task, **result)))
    args.predictions and write_predictions(args, sys.argv[1:] if argv is None else argv, line, rows, data, out)


if __name__ == "__main__":
    console()                                                  # (line-buffered; UTF-8 where ASCII fails; no reader: on)
    main()
