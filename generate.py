"""generate.py: decoding with a KV cache: greedy, temperature and nucleus sampling, and beam search (T5).

- `generate(model, ids, n)`: the prompt runs once (prefill) and fills each layer's cache (k, v of every position);
  then one token at a time, attending over the cache. Left-padded prompts of different lengths go behind an
  attention mask; finished rows keep emitting EOS.
- `sample`: greedy at temperature 0, else softmax(logits / T) within the smallest set of top tokens whose
  probability reaches top_p (Holtzman et al. 2020).
- `beam_search(model, ids)`: Hugging Face's generate(num_beams=K, length_penalty, early_stopping=True) for an
  encoder-decoder; the encoder runs once, the decoder's self-attention cache is reordered as beams move.
The models (model.py's Llama, GPT-2, T5) need only the cache protocol: model(ids, attention_mask=, cache=,
last_only=) and config.n_layer for a decoder (last_only: the prefill's last position's logits only); model.encode,
model.decode, model.decoder.block (one cache a block) and config.eos_id / pad_id for T5. Leaves out: speculative
decoding, repetition penalties, stop strings.
Run `python model.py` (a greedy continuation on a tiny model) or `python model.py --model DIR --prompt "..."`.
"""
import math

import torch
import torch.nn.functional as F


def sample(logits, temperature=0.0, top_p=1.0, generator=None):
    """Next token (B,) from logits (B, vocab): greedy at temperature 0, else softmax(logits / T) within the
    smallest set of top tokens whose probability reaches top_p (nucleus sampling, Holtzman et al. 2020)."""
    if temperature <= 0:
        return logits.argmax(-1)
    p, idx = torch.softmax(logits.float() / temperature, -1).sort(-1, descending=True)
    if top_p < 1:  # (at 1 all stay: an fp32 running sum can round to 1 before the last few tokens)
        drop = p.cumsum(-1) - p >= top_p  # the mass before this token already reaches top_p (as transformers')
        drop[..., 0] = False  # the top token always stays
        p[drop] = 0
    return idx.gather(-1, torch.multinomial(p, 1, generator=generator)).squeeze(-1)


@torch.no_grad()
def generate(model, input_ids, max_new_tokens, temperature=0.0, top_p=1.0, eos_id=None, attention_mask=None,
             generator=None):
    """(B, T) prompts (left-padded, with attention_mask, if of different lengths) -> (B, T + new) token ids."""
    cache = [{} for _ in range(model.config.n_layer)]
    ids, mask, done = input_ids, attention_mask, torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
    logits = model(ids, attention_mask=mask, cache=cache, last_only=True)[:, -1]  # prefill: the whole prompt at once
    for step in range(max_new_tokens):
        nxt = sample(logits, temperature, top_p, generator)
        if eos_id is not None:                   # an int, or the ids that each end an answer (the first is emitted)
            stops = torch.tensor(eos_id if isinstance(eos_id, (list, tuple)) else [eos_id], device=nxt.device)
            nxt = torch.where(done, stops[0], nxt)  # finished rows keep emitting EOS
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
    beams: those ending in EOS among the first K finish, the best K others run on, until K have finished."""
    (B, _), K, eos, pad, dev = input_ids.shape, num_beams, model.config.eos_id, model.config.pad_id, input_ids.device
    enc = model.encode(input_ids, attention_mask).repeat_interleave(K, 0)  # (B K, S, C): an input's beams adjacent
    mask = None if attention_mask is None else attention_mask.repeat_interleave(K, 0)
    seqs, rank, cache = torch.full((B, K, 1), pad, device=dev), torch.arange(2 * K, device=dev), [
        {"self": {}, "cross": {}} for _ in model.decoder.block]
    run = torch.zeros(B, K, device=dev).index_fill(1, rank[1:K], -1e9)  # one live beam at first, not K copies
    fin, fin_scores = seqs.new_full((B, K, max_new_tokens + 1), pad), torch.full_like(run, -math.inf)
    for t in range(max_new_tokens):
        logp = model.decode(seqs[..., -1].view(-1, 1), enc, mask, cache)[:, -1].float().log_softmax(-1)  # (B K, V)
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
        for kv in cache:  # cross-attention k, v are the same for all beams of an input: nothing to reorder
            kv["self"].update(k=kv["self"]["k"][rows], v=kv["self"]["v"][rows])
    return fin[..., :t + 2], fin_scores
