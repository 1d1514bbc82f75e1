"""export.py: a fine-tuned adapter merged into its base and written as a Hugging Face checkpoint, for serving.

    python export.py --model BASE --adapter ADAPTER_DIR --out DIR [--dtype bf16|fp16|fp32] [--shard-size 5GB]

What PEFT users get from `merge_and_unload().save_pretrained(DIR)`: W' = W + (alpha/r) B_eff A_eff in every adapted
linear (lorasp.merge_lorasp; LoRA Sec. 4.1: no extra latency at inference), written in the layout transformers, vLLM
and llama.cpp's convert_hf_to_gguf.py read:
    model.safetensors, or model-0000i-of-0000n.safetensors + model.safetensors.index.json (each shard <= --shard-size)
    config.json                 the base's own (torch_dtype set), or one built from a Meta or GGUF base's config;
                                the tokenizer's BOS and EOS ids where it names none (transformers' generate stops there)
    tokenizer files, generation_config.json      copied from the base folder (a Llama's tokenizer.model alone gets a
                                                 tokenizer_config.json); a GGUF's tokenizer (byte-level or sentencepiece
                                                 BPE) and a gpt2.tiktoken's written (tokenizer.hf_tokenizer), with its
                                                 BOS, EOS, UNK, PAD and chat template: AutoTokenizer gives lorasp's ids
- The base and the adapter load as eval.py and generate.py load them (evalcli: a train.py run's folder for either, a
  preset, the adapter's checks against its base); an adapter trained on the NF4-quantized base merges into the
  dequantized NF4 weights it learned on, as QLoRA users who dequantize before merging do: the model eval.py scores
  (merged into the original weights, as PEFT on a fresh bf16 load does, it is another model, off by NF4's rounding).
- A classifier adapter (GLUE: the head in modules_to_save) exports as *ForSequenceClassification with id2label (GPT-2:
  a pad id, tokenizer files AutoTokenizer reads to the run's ids: gpt2_tokenizer), a SQuAD one as
  *ForQuestionAnswering; tied embeddings stay one tensor unless the adapter changed lm_head.
- --dtype fp16 of a T5 is written with a warning: its activations pass float16's range (transformers guards them).
- Written into DIR.tmp and renamed (checkpoint.replace_dir): an interrupted export leaves no DIR, or the old one.
- lorasp_merged.json (evalcli.write_merged): the adapters DIR holds merged (hashed) and the base: eval.py, generate.py,
  export.py refuse one of them applied onto DIR again (its update twice), and DIR's tokenizer files read as the base's.
  A copy of DIR without it, or a GGUF of DIR, is known by its weights (evalcli.base_weights: the adapter's probe).
- Memory: the base's weights are memory-mapped from scratch files beside DIR (checkpoint.fill's spill: each checked,
  cast and written to its file as it loads); each shard's header is written first (names, shapes and dtype known
  beforehand), then each layer merged, cast and written at its offset: the peak is about the largest tensor (and an
  NF4 base's 4-bit codes), not a shard or the model (7B: docs/jobs.md); the scratch takes the base's size as loaded.
Leaves out: re-quantizing the merged model (GPTQ, GGUF's k-quants: convert DIR with their own tools).
"""
import argparse
import collections
import itertools
import json
import os
import re
import sys
import tempfile

import torch
import torch.nn as nn

from adapter import PEFT, read_adapter, whole_dir
from checkpoint import (DISK_FULL, atomic_write, copy_file, is_meta, one_writer, read_json, release,
                        replace_dir, safetensors_header)
from checks import console, repeated, run_folder, unexpanded, unwritable
from data import UserError
from evalcli import GLUE_NAMES, adapter_folder, base_quant, load_model, model_path, whole_modules, write_merged
from ggufread import gguf_file
from lorasp import LoRASPLinear, adapter_base, merge_lorasp
from plan import use_threads
from quant import NF4Linear
from tokenizer import (BPETokenizer, config_token_ids, hf_tokenizer, llama_tokenizer_config, load_tokenizer,
                       save_tokenizer)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
HF_DTYPES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
UNITS = {"": 1, "B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "KIB": 2 ** 10, "MIB": 2 ** 20, "GIB": 2 ** 30}
# what a base folder holds besides its weights that a served model needs (transformers', sentencepiece's, GPT-2's)
COPIED = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
          "spiece.model", "vocab.json", "merges.txt", "vocab.txt", "chat_template.jinja", "chat_template.json",
          "generation_config.json")
VOCABULARIES = ("tokenizer.model", "tokenizer.json", "vocab.txt", "spiece.model", "vocab.json", "encoder.json")


def shard_size(text):
    """--shard-size as transformers' max_shard_size reads it: bytes, or a number with KB/MB/GB (powers of 10) or
    KiB/MiB/GiB (of 2). A lowercase b after K, M or G ("2Gb") is refused: transformers reads it as bits, people as
    bytes, and the two differ 8-fold."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]I?B|B)?\s*", text, re.IGNORECASE)
    if not m or float(m[1]) * UNITS[(m[2] or "").upper()] < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (bytes, or a number with KB, MB, GB, KiB, MiB, GiB)")
    size = int(float(m[1]) * UNITS[m[2].upper() if m[2] else ""])
    if m[2] and len(m[2]) == 2 and m[2].endswith("b"):         # "2Gb" (was read as 2 GB); "2000b": bytes, as before
        raise argparse.ArgumentTypeError(
            f"{text!r}: a lowercase b is a bit in transformers' max_shard_size ({size // 8:,} bytes) and a byte to "
            f"many people ({size:,} bytes); write {m[1]}{m[2][:-1].upper()}B for {size:,} bytes")
    return size


class NoTokenizer:
    """Stands in for a tokenizer where the base ships none: nothing to check against the embedding, nothing copied."""
    vocab_size, bos_id, eos_id, pad_id = 0, None, None, None


def head_of(adapter):
    """(num_labels, qa) of the head an adapter brings among its modules_to_save: a GLUE classifier (RoBERTa's
    classifier.out_proj, BERT's classifier, GPT-2's score) or SQuAD's span head (qa_outputs); (0, False) if none."""
    tensors = read_adapter(whole_dir(adapter), peft=True)[2]
    for name in ("classifier.out_proj.weight", "classifier.weight", "score.weight"):
        if PEFT + name in tensors:
            return tensors[PEFT + name].shape[0], False
    return 0, any(k.startswith(PEFT + "qa_outputs.") for k in tensors)


def labels(model, base_config, adapter):
    """config.json's id2label for a classifier: GLUE's class names where lorasp trained the head (in GLUE's order,
    data.GLUE's), the base's own names where a PEFT adapter kept its head's rows (run_glue.py's), else LABEL_i."""
    n, task = model.config.num_labels, str(adapter_base(adapter).get("task"))
    names = GLUE_NAMES.get(task[5:]) if task.startswith("glue/") else None
    own = {int(k): v for k, v in (base_config.get("id2label") or {}).items()}
    if names and len(names) == n:
        return dict(enumerate(names))
    if len(own) == n and not task.startswith("glue/"):
        return own
    return {i: f"LABEL_{i}" for i in range(n)}


def plain(m, plan=False):
    """A linear the adapter left in NF4 (with an NF4-trained adapter: every one it did not adapt), as a plain linear
    holding its dequantized weight; plan: any linear's stand-in on the meta device (its shape only)."""
    linear = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta")
    if not plan:
        linear.weight = nn.Parameter(m.weight.dequantize(m.weight.dtype), requires_grad=False)   # (out, in)
        linear.bias = None if m.bias is None else nn.Parameter(m.bias.detach(), requires_grad=False)
    return linear


def entries(module, prefix="", plan=False):
    """(name, tensor, the module's own tensor it came from; an NF4 base's: dequantized) in state_dict's order (a
    module's parameters, its persistent buffers, then its children's), each adapted linear merged (lorasp.merge_lorasp)
    and each NF4 one dequantized as it is reached: one such layer in memory at a time. plan: a meta linear of its shape
    stands in for each, unmerged."""
    src = {}
    if isinstance(module, LoRASPLinear):
        layer, nf4 = module, module.base if isinstance(module.base, NF4Linear) and not plan else None
        if nf4:                                              # dequantized once: the merge adds to it, merged's kept
            layer.base = plain(nf4)                          # counts against it (changed)
        src, module = {"weight": layer.base.weight, "bias": (nf4 or layer.base).bias}, \
            plain(layer.base, True) if plan else merge_lorasp(layer, torch.float32)  # (rounded once, to --dtype)
        if nf4:                                              # (the model keeps its 4-bit weight, not the dense one)
            layer.base = nf4
    elif isinstance(module, NF4Linear):
        src, module = {"bias": module.bias}, plain(module, plan)
    for k, t in itertools.chain(module._parameters.items(), ((k, b) for k, b in module._buffers.items()
                                                             if k not in module._non_persistent_buffers_set)):
        if t is not None:
            yield prefix + k, t, src.get(k, t if not src else None)
    for k, child in module._modules.items():
        if child is not None:
            yield from entries(child, prefix + k + ".", plan)


def merged(model, dtype, plan=False, kept=None):
    """(HF name, tensor) of the merged model cast to dtype, a tied tensor once: what save_pretrained writes of
    `model.to(dtype)` once merged and dequantized, tensor by tensor. The model is spent: the pages of each weight
    read (memory-mapped: fill's spill) are handed back once it is written, unless it is read again (tied).
    plan: the same names, meta tensors of their shapes and dtype (nothing merged, read or handed back). kept: a list
    that gets, for each merged weight, (its entries the update changes in dtype, those it changes in float32)."""
    uses = collections.Counter(id(t) for _, t in itertools.chain(model.named_parameters(remove_duplicate=False),
                                                                 model.named_buffers(remove_duplicate=False)))
    seen = set()
    for name, t, src in entries(model, plan=plan):
        if src is t:                                         # (a merged layer's fresh tensors are never tied)
            if t.data_ptr() in seen:
                continue
            seen.add(t.data_ptr())
        if not t.is_floating_point():
            raise TypeError(f"{name}: export writes dense float weights, found {t.dtype}")
        w = torch.empty(t.shape, dtype=dtype, device="meta") if plan else t.detach().to(dtype)
        if not plan and w.numel() and not all(x.isfinite() for x in torch.aminmax(w)):  # (float16's max: 65504)
            raise UserError(f"--dtype {HF_DTYPES[dtype]}: {name} has values up to {t.abs().max().item():.6g}, beyond "
                            f"its range (max {torch.finfo(dtype).max:.6g}): they would be written as Inf; give --dtype "
                            + ("bf16 or fp32" if dtype == torch.float16 else "fp32"))
        if kept is not None and not plan and name.endswith(".weight") and src is not t and src is not None:
            kept.append(changed(w, t, src, dtype))
        yield type(model).hf_tensor(name, w)
        if not plan and isinstance(src, torch.Tensor) and uses[id(src)] == 1:
            release(src)                                     # (read again from the file if touched)
        del t, src, w                                        # (freed before the next layer is merged)


def changed(w, t, W, dtype, chunk=1 << 16):
    """(entries of w, the merged weight in dtype, that differ from W in dtype; entries of t, W + (alpha/r) B A in
    float32, that differ from W), a chunk at a time: layer-sized temporaries grew export's heap by 110 MiB at 134M."""
    w, t, W, n, m = w.reshape(-1), t.reshape(-1), W.reshape(-1), 0, 0
    for i in range(0, len(w), chunk):
        x = W[i:i + chunk].float()
        n, m = n + int((w[i:i + chunk] != x.to(dtype)).sum()), m + int((t[i:i + chunk] != x).sum())
    return n, m


def write_shards(directory, model, dtype, max_shard, kept=None):
    """checkpoint.write_checkpoint's safetensors files and index of merged(model, dtype), a shard not held: its header
    written first (planned: the same names, shapes, dtype), then each tensor as it is merged, and dropped."""
    shards = []
    for name, t in merged(model, dtype, plan=True):          # (write_checkpoint's split: a shard <= max_shard bytes)
        if not shards or sum(x.nbytes for x in shards[-1].values()) + t.nbytes > max_shard:
            shards.append({})
        shards[-1][name] = t
    n, tensors = len(shards), merged(model, dtype, kept=kept)
    names = ["model.safetensors"] if n == 1 else [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    for file, shard in zip(names, shards):
        with atomic_write(os.path.join(directory, file)) as f:
            f.write(safetensors_header(shard, {"format": "pt"}))
            for want, w in shard.items():
                name, t = next(tensors)
                if (name, t.shape, t.dtype) != (want, w.shape, w.dtype):   # (a file whose header lies: never)
                    raise RuntimeError(f"export.py: {name} {list(t.shape)} came, {want} {list(w.shape)} was planned")
                f.write(t.contiguous().reshape(-1).view(torch.uint8).numpy())
                del t                                        # (before the next one is merged)
    if n > 1:
        with atomic_write(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": sum(t.nbytes for s in shards for t in s.values())},
                       "weight_map": {k: file for file, s in zip(names, shards) for k in s}}, f, indent=2)


def tied(model):
    """Whether lm_head's weight is the input embedding's (one tensor in the file, as transformers writes it)."""
    head = getattr(getattr(model, "lm_head", None), "weight", None)
    return head is not None and any(p is head for n, p in model.named_parameters(remove_duplicate=False)
                                    if not n.startswith("lm_head."))


def gpt2_tokenizer(tok, directory, pad):
    """A GPT-2 classifier's tokenizer files, read by transformers' AutoTokenizer to the run's ids: tokenizer.json (the
    base's, else tokenizer.save_tokenizer's of its vocab.json + merges.txt or encoder.json + vocab.bpe) with a
    TemplateProcessing adding lorasp's marks (encode_pair's: <|endoftext|> A <|endoftext|> B <|endoftext|>), and the
    pad (gpt2_pad_row's: an added token of that id) named in tokenizer_config.json, padding on the right."""
    f = lambda name: os.path.join(directory, name)             # noqa: E731
    if not os.path.isfile(f("tokenizer.json")) and type(tok) is not BPETokenizer:  # (none to write one from)
        return print("warning: transformers' tokenizer of this folder adds none of the marks lorasp's classifier read "
                     "around the texts (tokenizer.py's encode_pair): no tokenizer.json, and no byte-level BPE to "
                     "write one from; give it those ids, or score the folder with python eval.py --task glue/TASK "
                     "--model OUT",
                     file=sys.stderr)
    if not os.path.isfile(f("tokenizer.json")):
        save_tokenizer(tok, directory)
    t, cfg = (read_json(f(n)) if os.path.isfile(f(n)) else {} for n in ("tokenizer.json", "tokenizer_config.json"))
    known = {i: s for s, i in t["model"]["vocab"].items()} | {a["id"]: a["content"] for a in t["added_tokens"]}
    if pad not in known:                                       # the row gpt2_pad_row added
        known[pad] = next(s for s in ("<|pad|>", "<|padding|>", f"<|pad{pad}|>") if s not in known.values())
        new = dict(content=known[pad], single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
        t["added_tokens"].append(dict(id=pad, **new))          # (a text holding it is read as that token)
        cfg.setdefault("added_tokens_decoder", {})[str(pad)] = new
    if tok.template is None:                                   # (else the base's template has marks between: ours)
        part = lambda p, k: [{"Sequence": {"id": p, "type_id": k}}] if p in ("A", "B") else [  # noqa: E731
            {"SpecialToken": {"id": known[i], "type_id": k}} for i in p]
        single, pair = ([x for p, k in tok.marks_template(two) for x in part(p, k)] for two in (False, True))
        marks = {i for p, _ in tok.marks_template(True) if p not in ("A", "B") for i in p}
        old = t.get("post_processor") or {}                    # (ByteLevel's, for offsets: kept)
        kept = [p for p in old.get("processors", [old] * bool(old)) if p.get("type") != "TemplateProcessing"]
        ours = dict(type="TemplateProcessing", single=single, pair=pair, special_tokens={
            known[i]: dict(id=known[i], ids=[i], tokens=[known[i]]) for i in marks})
        t["post_processor"] = dict(type="Sequence", processors=kept + [ours]) if kept else ours
    # tokenizer.json read whole (transformers 5's GPT2Tokenizer renumbers its added tokens: a <|pad|> 301 read as
    # 300), add_bos/eos_token would rebuild its template; no token types (GPT-2 adds their embeddings)
    cfg = {k: v for k, v in cfg.items() if k not in ("add_bos_token", "add_eos_token")} | dict(
        tokenizer_class="PreTrainedTokenizerFast", pad_token=known[pad], padding_side="right",
        model_input_names=["input_ids", "attention_mask"])
    files = {"tokenizer.json": t, "tokenizer_config.json": cfg}
    if os.path.isfile(f("special_tokens_map.json")):          # (in step with tokenizer_config.json)
        files["special_tokens_map.json"] = read_json(f("special_tokens_map.json")) | dict(pad_token=known[pad])
    for name, j in files.items():
        with open(f(name), "w", encoding="utf-8") as fh:
            json.dump(j, fh, ensure_ascii=False)


def pad_row_needed(tok, pad):
    """A GPT-2 classifier needs a pad row of its own (gpt2_pad_row) with no pad, or with the EOS as pad: the closing
    mark lorasp's classifier reads, where transformers' would read the token before it."""
    return pad is None or not isinstance(tok, NoTokenizer) and pad == tok.encode_pair("a", "b")[0][-1]


def gpt2_pad_row(model, hf, was=None):
    """A GPT-2 classifier with no pad token, or the EOS as pad (was), gets one more embedding row, zeros, as its
    pad_token_id: transformers' GPT2ForSequenceClassification reads each row's last token that is not pad_token_id
    (none: no batch), any id may be in lorasp's inputs, the EOS their closing mark (with the EOS as pad, the token
    before it was read). Padded with it on the right, each text scores as alone: no real token sees it (causal)."""
    wte, tie = model.transformer.wte, tied(model)
    rows = wte.weight.detach()
    wte.weight = nn.Parameter(torch.cat([rows, rows.new_zeros(1, rows.shape[1])]), requires_grad=False)
    wte.num_embeddings = rows.shape[0] + 1
    if tie:                                                    # (the LM head, kept tied: one row more)
        model.lm_head.weight = wte.weight
    hf["pad_token_id"], hf["vocab_size"] = rows.shape[0], rows.shape[0] + 1
    print(f"note: pad_token_id {rows.shape[0]}: a row added to the embedding (vocab_size {rows.shape[0] + 1}), an id "
          "no input holds, for transformers' GPT-2 classifier, which reads each text's last token that is not "
          "pad_token_id" + f" (the base's pad, {was}, is the closing mark lorasp's reads)" * (was is not None),
          file=sys.stderr)


def hf_config(model, path, adapter, dtype, num_labels, qa, tok):
    """config.json: the base's own where it has one (a Meta or GGUF base: ours, as transformers' LlamaConfig; the
    context Meta's files do not record is said), with the tokenizer's BOS and EOS ids where it names none (where
    transformers' generate stops: tokenizer.config_token_ids) and torch_dtype; a head's architecture and labels; the
    tie as the merged model has it; GPT-2's n_ctx where it lacks one (convert_hf_to_gguf.py: KeyError 'n_ctx'
    without); a GPT-2 classifier's pad id: its tokenizer's, else one added to the model (gpt2_pad_row: a row more in
    its embedding)."""
    own = path if os.path.isdir(path) and not gguf_file(path) and not is_meta(path) else None
    ours, hf = model.config.to_hf(), read_json(os.path.join(own, "config.json")) if own else model.config.to_hf()
    hf |= config_token_ids(tok, hf)                            # (the demo's model names none: generate ran on)
    if os.path.isdir(path) and is_meta(path):                 # (was written with no word: vLLM caps prompts at it)
        print(f"note: {path} is in Meta's layout, whose params.json records no context length: config.json's "
              f"max_position_embeddings is {hf['max_position_embeddings']}, told by the Llama's version as "
              "transformers' converter does (Llama 2 4096, Code Llama 16384, Llama 3 8192, 3.1 and later 131072)",
              file=sys.stderr)
    if num_labels or qa:                                      # the base's MaskedLM / LMHead / Model names another head
        hf["architectures"] = ours["architectures"]
        hf.pop("num_labels", None)
        if num_labels:
            hf["id2label"] = labels(model, hf, adapter)
            hf["label2id"] = {v: k for k, v in hf["id2label"].items()}
    if model.config.model_type == "gpt2" and num_labels:     # transformers' classifier reads each text's last token
        pad = tok.pad_id if hf.get("pad_token_id") is None else hf["pad_token_id"]  # that is not pad_token_id
        if pad_row_needed(tok, pad):
            gpt2_pad_row(model, hf, pad)
        else:
            hf["pad_token_id"] = pad
    if model.config.model_type == "gpt2" and "n_ctx" not in hf:  # (transformers 5 writes n_positions alone; the
        hf["n_ctx"] = hf["n_positions"]                        # GPT-2 configs llama.cpp's converter reads have both)
    if hf.pop("quantization_config", None):                  # a bitsandbytes 4-bit base: the weights written are
        print(f"note: {path} is a bitsandbytes 4-bit checkpoint: the merged weights are its NF4 weights dequantized "
              f"plus the update (as peft's merge_and_unload on a 4-bit model), written dense, {HF_DTYPES[dtype]}, "
              "without its quantization_config", file=sys.stderr)  # dense (else read as 4-bit codes)
    hf["torch_dtype"] = HF_DTYPES[dtype]
    if "dtype" in hf:                                         # (transformers 5 writes this name)
        hf["dtype"] = HF_DTYPES[dtype]
    if hf.get("tie_word_embeddings", ours.get("tie_word_embeddings")) and hasattr(model, "lm_head") and not tied(model):
        # (a classifier or encoder has no lm_head to untie: RoBERTa's and BERT's configs say tied all the same)
        if model.config.model_type in ("t5", "mt5"):          # tied, T5 v1.0 also scales the decoder output
            raise UserError(f"--adapter {adapter} changes lm_head, which is tied to the embedding of {path} (T5 v1.0); "
                            "an untied T5 reads the decoder output otherwise: export.py does not write it")
        print(f"note: --adapter {adapter} changes lm_head, tied to the embedding in {path}: written untied "
              "(tie_word_embeddings false, both tensors)", file=sys.stderr)
        hf["tie_word_embeddings"] = False
    return hf


def export(model_name, adapter, out, dtype=None, max_shard=5 * 10 ** 9, force=False):
    """Merge the adapter into its base and write `out` whole (see the docstring above); returns the config.json."""
    path = model_path(model_name)
    if (run := run_folder(adapter) if os.path.isdir(adapter) else None) and run[1] and not os.path.exists(run[0]):
        raise UserError(f"--adapter {adapter} is a --method full run's folder, with no adapter to merge: its model, "
                        f"{run[1]}, is in Hugging Face's layout already (config.json, weights, the base's tokenizer)")
    adapter = adapter_folder(adapter, config=True)
    mine = os.path.realpath(out)
    for flag, p in (("--model", path), ("--adapter", adapter)):
        there = os.path.realpath(p if os.path.isdir(p) else os.path.dirname(p))
        if mine == there or there.startswith(mine + os.sep):
            raise UserError(f"--out {out} would replace {flag} {p}: give another folder")
    if os.path.isdir(out) and os.listdir(out) and not force:
        raise UserError(f"--out {out} exists and is not empty: give a new folder, or --force to replace it")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file: give a folder")
    trained = adapter_base(adapter)                          # what train.py recorded: its quant, task, fingerprint
    quant = trained.get("quant") or "none"
    base_quant(path, adapter, quant, trained.get("task"), prog="export.py")  # another base's files: a warning
    if quant == "nf4":
        print(f"note: --adapter {adapter} trained on the NF4-quantized base: merged into those dequantized weights "
              "(what it learned on and eval.py scores), not into the original base weights", file=sys.stderr)
    num_labels, qa = head_of(adapter)
    ranks = os.path.join(path, "gpt2.tiktoken")              # (OpenAI's GPT-2 ranks, as tiktoken ships them)
    present = os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f)) for f in VOCABULARIES)
    try:                                                     # (load_tokenizer reads gpt2.tiktoken alone too)
        tok = load_tokenizer(path)
    except UserError:                                        # weights merge without one; served models need it
        if present or os.path.isdir(path) and os.path.isfile(ranks):
            raise                                            # one there that does not read: damaged, not absent
        tok = NoTokenizer()
    tiktoken = os.path.isdir(path) and os.path.isfile(ranks) and not present and not gguf_file(path)
    # the base's weights memory-mapped from files beside --out (on its disk, not in memory), read as they are written;
    # each file is unlinked once mapped (NFS keeps a .nfs* stand-in until it is unmapped: left, not an error)
    where = os.path.dirname(os.path.abspath(out))
    while not os.path.isdir(where):                          # (replace_dir makes --out's missing parents)
        where = os.path.dirname(where)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=where, ignore_cleanup_errors=True) as spill:
        # loaded as stored (fp32 if asked for): W + B A is summed in fp32 and rounded once, to --dtype, as it is
        # written (entries; PEFT on a bf16 load rounds the base first, then the sum)
        try:
            model, _ = load_model(path, adapter, quant, torch.float32 if dtype == "fp32" else None,
                                  num_labels=num_labels, qa=qa, tok=tok, spill=spill, warn_zero=False)  # (said below)
        except ValueError as e:                              # a layer of other widths: whose, on which base
            raise UserError(f"--adapter {adapter} does not fit --model {path}: {e}" if adapter not in str(e) else e) \
                from None
    dtype = DTYPES[dtype] if dtype else next(model.parameters()).dtype
    if dtype == torch.float16 and model.config.model_type == "t5":  # (model.py's T5 refuses to compute so: written)
        print(f"warning: {out}: a T5 in float16, whose activations pass float16's range (65504) in its feed-forward "
              "(it trained in bfloat16): transformers keeps its wo in float32 and clamps, other runtimes may compute "
              "Inf or NaN, lorasp's eval.py takes it with --dtype bfloat16; --dtype bf16 or fp32 run anywhere",
              file=sys.stderr)
    hf, unwritten = hf_config(model, path, adapter, dtype, num_labels, qa, tok), None
    whole = whole_modules(model, adapter)                    # (a head it brings whole: not the base, whatever B A is)
    with replace_dir(out, own=("*",)) as tmp:                # DIR.tmp, renamed to DIR once whole
        write_shards(tmp, model, dtype, max_shard, kept := [])
        copied = [f for f in COPIED if os.path.isdir(path) and os.path.isfile(os.path.join(path, f))]
        for f in copied:                                     # (written as the rest: the umask's mode, not the base's)
            copy_file(os.path.join(path, f), os.path.join(tmp, f))
        if model.config.model_type == "gpt2" and num_labels and not isinstance(tok, NoTokenizer):
            gpt2_tokenizer(tok, tmp, hf["pad_token_id"])       # (before config.json: save_tokenizer edits one)
        elif type(tok) is BPETokenizer and os.path.isfile(os.path.join(path, "encoder.json")) and not {
                "tokenizer.json", "vocab.json"} & set(copied):  # OpenAI's names for GPT-2's: transformers reads none
            save_tokenizer(tok, tmp)
        elif (tiktoken or gguf_file(path)) and not isinstance(tok, NoTokenizer) and not set(VOCABULARIES) & set(
                copied):                                     # a GGUF's own (the folder has none beside it), or ranks
            try:
                hf_tokenizer(tok, tmp, gguf_file(path))
            except NotImplementedError as e:                 # (a GGUF's WordPiece or Unigram: the note below)
                unwritten = e
        with atomic_write(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(hf, f, indent=2)
        llama_tokenizer_config(tok, tmp)                     # a tokenizer.model alone: transformers' BOS
        write_merged(tmp, path, adapter)                     # (lorasp_merged.json: the adapter not applied again)
    files = sorted(os.listdir(out))
    print(f"wrote {out}: {', '.join(files)} ({HF_DTYPES[dtype]})")
    n, m = (sum(x[i] for x in kept) for i in (0, 1))          # (was said nowhere: the base written, renamed)
    if kept and m and n < 0.01 * m:                          # the update rounds away in --dtype
        print(f"warning: {out}: --adapter {adapter}'s (alpha/r) B A changes {n:,} weight entries in {HF_DTYPES[dtype]}"
              f", {m:,} in float32: --dtype fp32 keeps them" + "; this export is the base model" * (not n),
              file=sys.stderr)
    elif kept and not m and not whole:                       # (evalcli.with_adapter's warning, quiet here)
        print(f"warning: {out}: --adapter {adapter}'s (alpha/r) B A changes no weight entry in {HF_DTYPES[dtype]}"
              + " or float32" * (dtype != torch.float32) + f" in any of its {len(kept)} layers (as an adapter that "
              "trained nothing does, or PEFT's initial one: B = 0); this export is the base model", file=sys.stderr)
    if isinstance(tok, NoTokenizer) or not set(COPIED[:-1]) & set(files):
        print(f"note: {out} has no tokenizer files: " + (
            f"{path} is a GGUF whose tokenizer, {unwritten}, export.py does not write (it writes byte-level and "
            "sentencepiece BPE); transformers: AutoTokenizer.from_pretrained(folder, gguf_file=...).save_pretrained("
            f"'{out}'), whose ids may differ from lorasp's" if gguf_file(path) else f"{path} has none to copy"),
              file=sys.stderr)
    return hf


def main(argv=None):
    ap = argparse.ArgumentParser(description="Merge a LoRA / LoRA-SP adapter into its base model and write a Hugging "
                                 "Face checkpoint (safetensors + config.json + tokenizer files) for transformers, "
                                 "vLLM or llama.cpp's convert_hf_to_gguf.py.")
    ap.add_argument("--model", required=True, help="the base: a checkpoint folder (HF or Meta layout), a .gguf file "
                                                    "or a preset (train.py's cache folder)")
    ap.add_argument("--adapter", required=True, help="the adapter folder (train.py's OUT/adapter, or OUT itself; "
                                                     "lorasp.save_adapter's or a PEFT LoRA adapter)")
    ap.add_argument("--out", required=True, help="the folder to write (new or empty; --force replaces it)")
    ap.add_argument("--dtype", choices=list(DTYPES), default=None,
                    help="the weights' dtype (default: the base's, as load_pretrained reads it; a GGUF's: fp32)")
    ap.add_argument("--shard-size", type=shard_size, default="5GB",
                    help="the most bytes in one safetensors file, as transformers' max_shard_size (default 5GB)")
    ap.add_argument("--force", action=argparse.BooleanOptionalAction, default=False, help="replace a non-empty --out")
    args = ap.parse_args(argv := sys.argv[1:] if argv is None else argv)
    repeated(ap, argv)                                         # argparse keeps the last, without a word
    unexpanded(ap, args, ["--model", "--adapter", "--out"])    # (--out=~/merged: a folder ./~/merged)
    if problem := unwritable("--out", args.out, os.path.dirname(os.path.abspath(args.out))):  # OUT.lock, OUT.tmp
        ap.error(problem)  # and the spill go beside OUT (was "[Errno 27] File too large" once --model had loaded)
    use_threads(file=sys.stderr)                               # (said where a CPU quota or limit chose them)
    try:
        with one_writer(args.out, "export.py"):               # (two into one --out: one's files in the other's)
            export(args.model, args.adapter, args.out, args.dtype, args.shard_size, args.force)
    except (UserError, ValueError, NotImplementedError, OSError) as e:
        full = isinstance(e, OSError) and e.errno in DISK_FULL  # (no file named)
        sys.exit(f"error: {e}" + (f": writing {args.out} (and the scratch copy of --model beside it, as it merges) "
                                  "failed, nothing half-written is left: free space on that disk, then run it again"
                                  if full else ""))


if __name__ == "__main__":
    console()                                                  # (line-buffered; UTF-8 where ASCII fails; no reader: on)
    main()
