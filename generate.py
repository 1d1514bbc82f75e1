"""generate.py: decoding with a KV cache: greedy, temperature and nucleus sampling, and beam search (T5).

- `generate(model, ids, n)`: the prompt runs once (prefill) and fills each layer's cache (k, v of every position);
  then one token at a time, attending over the cache. Left-padded prompts of different lengths go behind an
  attention mask; finished rows go on with `pad_id` (as transformers' pad_token_id), else the first EOS id.
- `sample`: greedy at temperature 0, else softmax(logits / T) within the smallest set of top tokens whose
  probability reaches top_p (Holtzman et al. 2020), as transformers' warpers (`warp`) filter them.
- `beam_search(model, ids)`: Hugging Face's generate(num_beams=K, length_penalty, early_stopping=True) for an
  encoder-decoder; the encoder runs once, the decoder's self-attention cache is reordered as beams move.
The models (model.py's Llama, GPT-2, T5) need only the cache protocol: model(ids, attention_mask=, cache=,
last_only=) and config.n_layer for a decoder (last_only: the prefill's last position's logits only); model.encode,
model.decode, model.decoder.block (one cache a block) and config.eos_id / pad_id for T5.
- The command line: `python generate.py --model DIR --prompt "..." [--adapter DIR] [--quantize nf4]
  [--temperature 0.8 --top-p 0.9]` loads a checkpoint (model.load_pretrained), with an adapter (train.py's OUT/adapter
  or a PEFT one, checked against its base as eval.py checks it), continues the prompt and prints the text and the speed
  (`python model.py --model DIR ...` runs it too; `python model.py` alone shows a greedy continuation on a tiny model).
  It stops where transformers' generate stops (generation_config.json's eos_token_id, else config.json's) and at the
  tokenizer's EOS, which transformers passes where those name none or others: it says so when that ended the text
  (tok.stops, tokenizer.generation_eos: eval.py's answers end alike).
Leaves out: speculative decoding, repetition penalties, stop strings.
"""
import argparse
import contextlib
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

from adapter import adapter_base, saved_whole
from checks import (adapter_config, check_new_tokens, console, dtype_name, given_flags, no_effect, not_causal, ranged,
                    repeated, unexpanded)
from checkpoint import read_json
from data import NAMED_LM_DATA, PROMPT_DICT, UserError
from tokenizer import check_vocab, generation_eos, load_tokenizer


def warp(logits, temperature=1.0, top_p=1.0):
    """The fp32 logits (B, vocab) sampling draws from: divided by the temperature, -inf outside the nucleus, the
    smallest set of top tokens whose probability reaches top_p (Holtzman et al. 2020). Computed as transformers'
    Temperature- and TopPLogitsWarper compute it, bit for bit: sorted upwards, a token goes while the mass up to it is
    within 1 - top_p, so equal logits at the edge split as theirs do and top_p 0 keeps one token."""
    scores = logits.float() / temperature
    if top_p < 1:  # (at 1 all stay, no sort: transformers adds no TopPLogitsWarper there)
        low, order = scores.sort(-1)  # ascending
        drop = low.softmax(-1).cumsum(-1) <= 1 - top_p  # (B, vocab) in ascending order
        drop[..., -1] = False  # the top token always stays
        scores = scores.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    return scores


def sample(logits, temperature=0.0, top_p=1.0, generator=None):
    """Next token (B,) from logits (B, vocab): greedy at temperature 0, else a draw from softmax(warp(logits))."""
    if temperature <= 0:
        return logits.argmax(-1)
    if (top := (scores := warp(logits, temperature, top_p)).amax(-1)).isinf().any():  # +Inf somewhere, or -Inf
        raise ValueError(f"temperature {temperature}: the logits divided by it pass float32's range ("  # everywhere
                         f"{'Inf' if top.isposinf().any() else '-Inf'}): give a larger one, or 0 for greedy decoding")
    # (softmax: NaN either way, a traceback from multinomial; -Inf everywhere: every logit negative, the top one too)
    return torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(-1)


def finite(model, t, what):
    """t, refused where it holds NaN or Inf: a score no token or answer can be read from. argmax takes NaN for the
    largest logit (all NaN: token 0, the same text whatever the prompt, exit 0), multinomial fails on it, a NaN
    perplexity or accuracy printed is no score. A weight file's NaN is refused as it loads: here a forward in float16,
    whose range ends at 65504, passed it (a large norm weight or activation), or an adapter's update did."""
    # a NaN or Inf makes the sum NaN or Inf: one pass, no bool copy (isfinite().all() took 5x a step's log_softmax);
    # a finite sum past float32's range falls to the exact test
    if not t.sum(dtype=torch.float32).isfinite() and not t.isfinite().all():
        dt = next((p.dtype for p in model.parameters() if p.is_floating_point()), t.dtype)
        raise ValueError(f"{what} hold{'s' * (t.ndim == 0)} {int(t.isnan().sum())} NaN and {int(t.isinf().sum())} "
                         f"Inf values (the model computes in {str(dt)[6:]}): " + (
                             "its activations passed float16's range (max 65504); give --dtype bfloat16 or float32"
                             if dt == torch.float16 else "a weight or adapter value took the forward out of range"))
    return t


@torch.no_grad()
def generate(model, input_ids, max_new_tokens, temperature=0.0, top_p=1.0, eos_id=None, attention_mask=None,
             generator=None, pad_id=None):
    """(B, T) prompts (left-padded, with attention_mask, if of different lengths) -> (B, T + new) token ids.
    A row that ends in padding (right-padded, as data.collate's) is refused: it would continue its padding. eos_id:
    an id or a list of ids that end a row; an ended row goes on with pad_id (None: the first EOS), as transformers'
    with pad_token_id=pad_id (its own default is the generation config's pad_token_id, else the first EOS: callers
    here read a row up to its first stop, so the padding never shows)."""
    if input_ids.shape[1] == 0:  # (was a reshape error deep in the first block)
        raise ValueError("generate: the prompts are empty (0 tokens): nothing to continue; start them with a token "
                         "(a BOS)")
    if attention_mask is not None and not (last := attention_mask[:, -1].bool()).all():
        raise ValueError(f"generate: prompt row {(~last).nonzero()[0, 0].item()} ends in padding (attention_mask 0 at "
                         "its last position): pad prompts on the left, each continues from its last position")
    cache, dev = [{} for _ in range(model.config.n_layer)], input_ids.device
    ids, mask, done = input_ids, attention_mask, torch.zeros(len(input_ids), dtype=torch.bool, device=dev)
    stops = None if eos_id is None else torch.tensor(eos_id if isinstance(eos_id, (list, tuple)) else [eos_id],
                                                     device=dev)  # (once: it was a host-to-device copy every step)
    logits = model(ids, attention_mask=mask, cache=cache, last_only=True)[:, -1]  # prefill: the whole prompt at once
    for step in range(max_new_tokens):
        nxt = sample(finite(model, logits, f"generate: the logits of new token {step + 1}"), temperature, top_p,
                     generator)
        if stops is not None:
            nxt = torch.where(done, stops[0] if pad_id is None else pad_id, nxt)  # ended rows: padding
            done |= torch.isin(nxt, stops)
        ids = torch.cat([ids, nxt[:, None]], 1)
        mask = None if mask is None else torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
        if done.all() or step == max_new_tokens - 1:
            break  # the last token is not run: nothing reads its logits (and GPT-2 may have no position left for it)
        logits = model(nxt[:, None], attention_mask=mask, cache=cache)[:, -1]  # one new token, the past from the cache
    return ids


@torch.no_grad()
def beam_search(model, input_ids, attention_mask=None, num_beams=4, length_penalty=0.6, max_new_tokens=128):
    """(B, S) -> K hypotheses (B, K, 1 + n): start token, tokens, EOS, padding; and their scores (B, K), best first.
    HF's generate(num_beams=K, length_penalty, early_stopping=True); one beam is greedy decoding. A hypothesis scores
    sum(log p) / len**length_penalty (len: its tokens up to EOS). Each step ranks the 2K best continuations of the K
    beams: those ending in EOS among the first K finish, the best K others run on, until K have finished. EOS is T5's
    </s> (config.eos_id) even where generation_config.json names none or config.json's is null: transformers' generate
    runs on past it there (a text after </s> is no translation)."""
    (B, _), K, eos, pad, dev = input_ids.shape, num_beams, model.config.eos_id, model.config.pad_id, input_ids.device
    enc = model.encode(input_ids, attention_mask).repeat_interleave(K, 0)  # (B K, S, C): an input's beams adjacent
    mask = None if attention_mask is None else attention_mask.repeat_interleave(K, 0)
    seqs, rank, cache = torch.full((B, K, 1), pad, device=dev), torch.arange(2 * K, device=dev), [
        {"self": {}, "cross": {}} for _ in model.decoder.block]
    run = torch.zeros(B, K, device=dev).index_fill(1, rank[1:K], -1e9)  # one live beam at first, not K copies
    fin, fin_scores = seqs.new_full((B, K, max_new_tokens + 1), pad), torch.full_like(run, -math.inf)
    for t in range(max_new_tokens):
        logits = model.decode(seqs[..., -1].view(-1, 1), enc, mask, cache)[:, -1]  # (B K, V)
        logp = finite(model, logits, f"beam_search: the logits of new token {t + 1}").float().log_softmax(-1)
        top, idx = (run[..., None] + logp.view(B, K, -1)).view(B, -1).topk(2 * K)  # (B, 2K) over all beams' tokens
        beam, tok = idx // logp.shape[-1], idx % logp.shape[-1]
        cand = torch.cat([seqs.gather(1, beam[..., None].expand(-1, -1, t + 1)), tok[..., None]], 2)  # (B, 2K, t + 2)
        ends = (tok == eos) | (t == max_new_tokens - 1)
        full = (fin_scores > -math.inf).all(1, keepdim=True)  # (B, 1): early stopping, this input is done
        new = torch.where(ends & ~full & (rank < K), top / (t + 1) ** length_penalty, -math.inf)
        fin_scores, keep = torch.cat([fin_scores, new], 1).topk(K)  # the best K finished so far
        fin = torch.cat([fin, F.pad(cand, (0, max_new_tokens - t - 1), value=pad)], 1).gather(
            1, keep[..., None].expand(-1, -1, max_new_tokens + 1))
        if (fin_scores > -math.inf).all():
            break
        run, keep = top.masked_fill(ends, -math.inf).topk(K)  # the K best that did not end run on
        seqs, rows = cand.gather(1, keep[..., None].expand(-1, -1, t + 2)), beam.gather(1, keep)
        rows = (rows + K * torch.arange(B, device=dev)[:, None]).flatten()  # (B K,) the cache row each continues
        for kv in cache * (K > 1):  # cross-attention k, v are the same for all beams of an input: nothing to reorder
            kv["self"].update(k=kv["self"]["k"][rows], v=kv["self"]["v"][rows])  # (one beam: each row its own)
    return fin[..., :t + 2], fin_scores


def stop_ids(path, tok):
    """(the ids generation ends on: tok.stops, those transformers' generate would not end on, why): transformers' own
    (tokenizer.generation_eos: generation_config.json's eos_token_id where the folder has that file, else config.json's)
    and the tokenizer's EOS where they leave it out (after EOS the model begins another text: transformers' generate
    goes on into it). eval.py's answers end on the same tok.stops. A .gguf or Meta's layout: the tokenizer's stops."""
    ids, file, why = generation_eos(path)
    return tok.stops, [tok.eos_id] if file and tok.eos_id is not None and tok.eos_id not in ids else [], why


def head_adapter(adapter, model):
    """Refuse a GLUE or SQuAD adapter (its classifier or span head in modules_to_save, or its task_type's where a config
    before PEFT 0.11 left modules_to_save null) before a weight loads: its head scores inputs, eval.py's work; on a
    causal LM its head's tensors would be 'tensors lorasp does not load'."""
    listed = (cfg := adapter_config(adapter) or {}).get("modules_to_save")
    head = [m for m in listed or saved_whole(cfg) if m.rpartition(".")[2] in ("classifier", "score", "qa_outputs")]
    if head:
        span, task = head == ["qa_outputs"], adapter_base(adapter).get("task")
        where = ("in adapter_config.json's modules_to_save" if listed else f"its task_type {cfg.get('task_type')}'s, "
                 "in its file (modules_to_save null: PEFT before 0.11)")
        raise UserError(f"--adapter {adapter} is a {'question-answering' if span else 'classification'} adapter (its "
                        f"{'span' if span else 'classifier'} head, {', '.join(head)}, is {where}): it scores "
                        f"{task or ('SQuAD' if span else 'a GLUE task')}, it does not generate text; score it with "
                        f"python eval.py --task {task or ('squad' if span else 'glue/TASK')} --model {model} "
                        f"--adapter {adapter}")


def template(adapter, model, prompt):
    """A note where the adapter trained on instruction records (Alpaca's template, data.PROMPT_DICT) and --prompt
    is not in it: the text continues the prompt as written, not as the adapter learned to answer."""
    task = str(adapter_base(adapter).get("task"))
    if (task in NAMED_LM_DATA or task.lower().endswith((".json", ".jsonl"))) and not prompt.lstrip().startswith(
            PROMPT_DICT["prompt_input"][:45]):                # ("Below is an instruction that describes a task")
        print(f"note: --adapter {adapter} trained on instruction records in Alpaca's template (--data {task}); "
              "--prompt is continued as written: put it in the template (data.PROMPT_DICT), or answer instructions "
              f"with python eval.py --task generate --model {model} --adapter {adapter} --prompts FILE",
              file=sys.stderr)


def main(demo=None, argv=None):
    """python generate.py --model DIR --prompt "...": the checkpoint's continuation of the prompt, and its speed.
    demo (model.py's): run instead where --model is not given (python model.py's flags, as before the move), with the
    flags it reads (--max-new-tokens, --temperature, --top-p, --seed) where given."""
    from model import device_problem, load_pretrained  # (here, not above: model.py imports this file)
    from plan import use_threads                       # (plan.py imports model.py)
    ap = argparse.ArgumentParser(description="Generate text from a checkpoint (HF or Meta layout) with the KV cache" +
                                 ("; without --model, a demonstration on a tiny random model." if demo else "."))
    ap.add_argument("--model", required=not demo, help="checkpoint directory (config.json or params.json, weights, "
                                                       "tokenizer files), .gguf file, or a preset in the cache")
    ap.add_argument("--prompt", default="The capital of France is", help="text to continue")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate")
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --temperature > 0)")
    ap.add_argument("--adapter", help="adapter directory loaded onto --model (train.py's OUT/adapter, or OUT itself; "
                                      "lorasp.save_adapter's, or a PEFT LoRA adapter)")
    ap.add_argument("--quantize", choices=["nf4", "none"], default=None, help="NF4 block linears while loading "
                    "(default: as --adapter trained, else a 4-bit checkpoint's NF4 as stored, else none)")
    ap.add_argument("--dtype", type=dtype_name, choices=["float32", "bfloat16", "float16"], default=None,
                    help="compute dtype, or bf16, fp16, fp32 (default: config.json's dtype or torch_dtype, "
                         "else the checkpoint's)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    ap.add_argument("--seed", type=ranged(int, 0, 2**64 - 1), default=0, help="sampling seed")  # (torch's range)
    argv = sys.argv[1:] if argv is None else argv
    args, given = ap.parse_args(argv), given_flags(ap, argv)
    with contextlib.redirect_stdout(sys.stderr):              # (stdout: the text alone)
        repeated(ap, argv)                                     # argparse keeps the last, without a word
    unexpanded(ap, args, ["--model", "--adapter"])
    try:  # the prompt's bytes as the shell gave them (a C locale decodes UTF-8 as ASCII): UTF-8, or refused
        args.prompt = os.fsencode(args.prompt).decode("utf-8")
    except UnicodeError as e:                                  # (was a RuntimeError traceback from sentencepiece)
        bad = os.fsencode(args.prompt)[e.start:e.end] if isinstance(e, UnicodeDecodeError) else b""
        ap.error(f"--prompt is not UTF-8 text (byte {bad.hex(' ') or '?'} at offset {e.start}): give it in UTF-8")
    if problem := device_problem(args.device):
        ap.error(problem)
    for flag, ok, allowed in (("max_new_tokens", args.max_new_tokens >= 0, "an integer >= 0"),  # (nan: not ok)
                              ("temperature", 0 <= args.temperature < math.inf, "a number >= 0 (0: greedy)"),
                              ("top_p", 0 <= args.top_p <= 1, "a number >= 0, <= 1 (0: the top token)")):  # (HF's)
        if not ok:  # (were greedy decoding, silently, or a traceback from torch.multinomial)
            ap.error(f"argument --{flag.replace('_', '-')}: {getattr(args, flag)} is out of range: must be {allowed}")
    if args.temperature == 0 and (unused := [f for f, on in (("--top-p", args.top_p != 1), ("--seed", args.seed))
                                             if on]):  # (the same greedy text whatever they are)
        no_effect(unused, " with --temperature 0 (greedy decoding)", sys.stderr)
    elif args.top_p == 0:                                      # (warp keeps the top token alone: no draw is left)
        no_effect([f for f in ("--temperature", "--seed") if f in given], " with --top-p 0 (the top token: greedy "
                  "decoding)", sys.stderr)
    if args.model is None:
        if args.adapter:                                       # (the demo's model is random: no adapter fits it)
            ap.error("--adapter needs --model (the base it trained on)")
        no_effect([f for f in ("--prompt", "--quantize", "--dtype", "--device") if f in given], " without --model "
                  "(the demo continues random token ids on a tiny float32 model, dense and NF4, on the CPU)",
                  sys.stderr)                                  # (were all silently unused)
        return demo(**{k: getattr(args, k) for k in ("max_new_tokens", "temperature", "top_p", "seed")
                       if "--" + k.replace("_", "-") in given})
    use_threads(file=sys.stderr)                               # (said where a CPU quota or limit chose them)
    t0 = time.perf_counter()
    try:                                                       # a missing or damaged file: one line, as train.py
        from evalcli import adapter_folder, base_quant, model_path, stored_base, with_adapter
        with contextlib.redirect_stdout(sys.stderr):          # a preset's name: its cache folder, as eval.py reads it
            args.model = model_path(args.model)
        quant = args.quantize or ("nf4" if stored_base(args.model) else "none")   # a 4-bit checkpoint: as stored
        if os.path.isfile(cfg := os.path.join(args.model, "config.json")):   # (before an 11B T5's weights load)
            not_causal(args.model, (hf := read_json(cfg)).get("model_type"), hf.get("architectures"))
        if args.adapter:  # a run's folder, the base it trained on and its NF4, checked before a weight is read
            with contextlib.redirect_stdout(sys.stderr):      # (stdout: the text alone)
                args.adapter = adapter_folder(args.adapter, config=True)  # (before a weight loads)
                head_adapter(args.adapter, args.model)
                quant = base_quant(args.model, args.adapter, args.quantize or "auto", flag="--quantize",
                                   prog="generate.py")
            template(args.adapter, args.model, args.prompt)
        model = load_pretrained(args.model, None if quant == "none" else quant, args.dtype, args.device)
        tok = load_tokenizer(args.model)
        check_vocab(tok, model.config.vocab_size, args.model)
        stops, extra, why = stop_ids(args.model, tok)          # what transformers' generate stops on, and EOS
        if args.adapter:
            try:
                model = with_adapter(model, args.adapter, args.model)  # (peft=True: PEFT's adapters too)
            except ValueError as e:                            # a layer of other widths: whose, on which base
                raise UserError(f"--adapter {args.adapter} on --model {args.model}: {e}" if args.adapter not in str(e)
                                else e) from None
    except (UserError, ValueError, NotImplementedError, OSError) as e:
        sys.exit(f"error: {e}")
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if not tok.encode(args.prompt):                            # no BOS (GPT-2, SmolLM2) and no text
        ap.error("--prompt is empty and this tokenizer adds no BOS: nothing to continue")
    try:
        not_causal(args.model, model.config.model_type)
    except UserError as e:
        sys.exit(f"error: {e}")
    ids, t0 = torch.tensor([tok.encode(args.prompt)], device=args.device), time.perf_counter()
    T, n = ids.shape[1], args.max_new_tokens
    try:                                                       # GPT-2's positions end it; Llama's RoPE runs on
        check_new_tokens(model.config, T, n, args.model, f"the prompt's {T} tokens", "--prompt")
    except UserError as e:
        sys.exit(f"error: {e}")
    try:
        out = generate(model, ids, args.max_new_tokens, args.temperature, args.top_p, stops,
                       generator=torch.Generator(args.device).manual_seed(args.seed))
    except ValueError as e:                                    # (--temperature 1e-45: a traceback from multinomial)
        sys.exit(f"error: {'--' * str(e).startswith('temperature')}{e}")
    n, dt = out.shape[1] - ids.shape[1], time.perf_counter() - t0
    if n < args.max_new_tokens and out[0, -1].item() in extra:  # (ended by our stop alone: say it, with the text)
        print(f"stopped at the tokenizer's EOS ({out[0, -1].item()}); transformers' generate would go on: "
              f"{os.path.join(args.model, why)}", file=sys.stderr)
    try:
        print(text := tok.decode(out[0].tolist()))
    except UnicodeEncodeError:  # an ASCII stdout (a C locale): the text in UTF-8, as --prompt was read (a traceback)
        sys.stdout.flush()
        sys.stdout.buffer.write(text.encode("utf-8", "surrogateescape") + b"\n")
        sys.stdout.flush()
    print(f"{n} tokens in {dt:.2f} s ({n / dt:.1f} tokens/s)", file=sys.stderr)


if __name__ == "__main__":
    console()                                                  # (line-buffered; UTF-8 where ASCII fails; no reader: on)
    main()
