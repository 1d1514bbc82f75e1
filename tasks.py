"""tasks.py: the kinds of task train.py runs, and what each needs beside the loop.

    kind     --data                                 backbones           trains whole   loss (sum, count)
    lm       alpaca, squad-gen, demo, .json(l)/.txt llama, gpt2         -              next-token CE on the response
    glue     glue/TASK (the paper's Table 1)        roberta, bert, gpt2 the classifier CE (STS-B: squared error)
    seq2seq  wmt16-en-ro (Table 2)                  t5                  -              teacher-forced CE
    squad    squad (the second paper's QA)          roberta, bert       the span head  start and end CE, halved

- KINDS (backbones, PEFT's task type), TARGETS (each family's default LoRA targets: LoRA's paper adapts the encoders'
  and T5's query and value), `heads`, and `checked_config`: --model's family trains --data, before a weight is read
  (its --model and --seq-len checks are checks.py's, shared with eval.py).
- `load_model`: the base (NF4 if asked) with LoRA-SP applied (`check_adapted`: --rank within each target's width
  min(in, out), a --keep that trains an entry of every A and B), or a checkpoint's adapter restored, a head added where
  the task has one; `adamw`: AdamW over what trains, norms and biases without weight decay; `save_weights`: the
  adapter in PEFT's format (+ LoRA-SP's extras), or for full fine-tuning the model with its tokenizer files. Either
  folder is replaced whole.
- `check_split`: the data a run got, against its flags (no training example, nothing held out for --patience or
  --exact-match); `save_heldout`: OUT/heldout.jsonl, the records no step trains on, for eval.py.
- Every loss returns (sum, count): train.py divides the accumulated gradient by the step's total count, so
  accumulating micro-batches equals one big batch.
- `evaluate`: the validation loss (GLUE: eval.py's dev metrics), `best_so_far`: early stopping's pick, and
  `before_after`: what training added, on held-out records (exact match, BLEU, SQuAD's exact match and F1).
Run `python -m pytest -q tests/test_train_tasks.py` (GLUE, WMT16 and SQuAD runs on tiny models, end to end).
"""
import json
import math
import os
import re
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

import data
import metrics
import plan
import tokenizer
from data import UserError
from ddp import rank_world
from checks import check_model, check_seq_len
from download import HF_REPOS, SMALL_FILES
from evalcli import TRAINED, in_glue_order
from eval import (classifier_loss, context_length, evaluate_glue, evaluate_squad, evaluate_translation,
                  generate_answers)
from lorasp import DRAWN, LINEAR_TYPES, UNITS, apply_lorasp, load_adapter, matches, save_adapter
from adapter import all_linear, targeted, trained_whole
from checkpoint import atomic_write, copy_file, read_json, replace_dir
from ggufread import gguf_file
from export import gpt2_tokenizer, pad_row_needed
from model import PRESETS, RMSNorm, load_pretrained, save_pretrained

TARGETS = {"llama": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "gpt2": "c_attn,c_proj,c_fc",
           "roberta": "query,value", "bert": "query,value", "t5": "q,v"}  # encoders, T5: as LoRA's paper adapts them
KINDS = {"lm": (("llama", "gpt2"), "CAUSAL_LM"), "glue": (("roberta", "bert", "gpt2"), "SEQ_CLS"),  # kind of task:
         "seq2seq": (("t5",), "SEQ_2_SEQ_LM"), "squad": (("roberta", "bert"), "QUESTION_ANS")}  # backbones, PEFT type


# ----------------------------------------------------------------------------------------------------
# The model a task trains: checked against --data, loaded and adapted, saved

def heads(model, args):
    """What trains whole beside the adapter and is saved with it: a classifier's head (RoBERTa: classifier; BERT:
    bert.pooler, classifier; GPT-2: score), a span head (qa_outputs)."""
    head = {"glue": getattr(type(model), "head", ()), "squad": ("qa_outputs",)}.get(data.task_kind(args.data), ())
    return trained_whole(head, (getattr(args, "targets", None) or "").split(","))  # all-linear: a LoRA on BERT's pooler


def checked_config(args):
    """--model's config (config.json, params.json or the preset), read without a weight, and checked against --data:
    the data exists and the model's family trains it."""
    check_model(args.model, train=True)
    directory = args.model if args.model not in PRESETS else args.model_dir or data.cache_dir("models", args.model)
    config = plan.model_config(args.model, directory if os.path.exists(directory) else None)
    plan.check_layers_held(config, directory)                  # before the plan builds the model on the meta device
    if data.task_kind(args.data) == "lm" and args.data not in data.NAMED_LM_DATA and not os.path.isfile(args.data):
        raise UserError(f"--data {args.data}: " + ("a directory" if os.path.isdir(args.data) else "no such file") +
                        ". --data takes alpaca (fetched once), a .json/.jsonl of "
                        "instruction/input/output records, a .txt, glue/TASK, wmt16-en-ro, squad, squad-gen or demo")
    if data.task_kind(args.data) == "lm" and args.data not in data.NAMED_LM_DATA:
        data.check_records_name(args.data)                     # before the model loads (and its family is checked)
    backbones = KINDS[data.task_kind(args.data)][0]
    if config.model_type not in backbones:
        raise UserError(f"--data {args.data} trains {' or '.join(backbones)}; {args.model} holds {config.model_type}"
                        " (the table at the end of --help lists what each family trains)")
    check_seq_len(config, args.seq_len, args.model)           # else an IndexError at the first batch that long
    if (context := getattr(config, "max_seq_len", None)) and args.seq_len > context:  # RoPE runs on, untrained
        print(f"note: --seq-len {args.seq_len} is past {args.model}'s context ({context} tokens): a sequence that long "
              "trains on positions the model never saw")
    if args.full_blocks > plan.layers(config):
        raise UserError(f"--full-blocks {args.full_blocks}: {args.model} has {plan.layers(config)} blocks" +
                        (" per stack" if config.model_type == "t5" else ""))
    return config


def load_model(args, directory, checkpoint, device, bf16):
    """The base (NF4 if asked; bf16 under autocast unless every weight trains) with LoRA-SP applied, or restored
    from a checkpoint's adapter; for full fine-tuning, the checkpoint's model."""
    full = args.method == "full"
    directory = os.path.join(checkpoint, "model") if full and checkpoint else directory
    model = load_pretrained(directory, "nf4" if args.quant == "nf4" else None,
                            torch.bfloat16 if bf16 and not full else torch.float32, device)  # full: fp32 masters
    if head := heads(model, args):  # a fresh head (or the checkpoint's), trained in fp32 as the adapter is
        glue = data.task_kind(args.data) == "glue"
        model.add_head(len(data.GLUE[args.data[5:]][4] or [0])) if glue else model.add_qa_head()  # STS-B: 1 output
        for name in head:
            model.get_submodule(name).float()
        if glue and not checkpoint:  # a fine-tuned head naming its classes otherwise (roberta-large-mnli)
            in_glue_order(model, directory, args.data[5:])
    # --full-blocks N: the first N blocks (of each stack: T5's decoder may have more) replayed whole, the rest selective
    blocks = max(plan.layers(model.config), getattr(model.config, "num_decoder_layers", None) or 0)
    model.checkpointing = ["full"] * args.full_blocks + ["selective"] * (blocks - args.full_blocks) \
        if args.full_blocks else args.checkpointing
    if full:
        model.requires_grad_(True)
    elif checkpoint:
        try:
            load_adapter(model, os.path.join(checkpoint, "adapter"))  # the head too: loaded, trainable
        except (ValueError, KeyError, OSError) as e:
            sys.exit(f"error: --resume: the checkpoint's adapter cannot be loaded: {e}")
    else:
        targets = (args.targets or TARGETS[model.config.model_type]).split(",")
        # the head trains whole: no adapter inside it (--targets dense would match it too)
        linears = [n for n, m in model.named_modules() if isinstance(m, LINEAR_TYPES) and not (head and
                                                                                            n.startswith(head))]
        if all_linear(targets):                                # PEFT's: every linear but lm_head, outside the head
            targets = targeted(linears, targets)
            lacked = getattr(model, "lacked", None)
            fresh = lacked and next(n for n, m in model.named_modules() if m is lacked[0])
            if fresh and any(n.startswith(f"{fresh}.") for n in targets):   # BERT's pooler, drawn fresh by fill()
                raise UserError(f"--targets all-linear: {args.model} holds no {fresh} (as BertForMaskedLM saves it): "
                                "under all-linear's LoRA (PEFT's too) its freshly drawn weight stays frozen, and an "
                                "adapter does not hold it, so the adapter would not reload onto it; give --targets "
                                "names (query,key,value,dense: the pooler then trains whole, with the classifier)")
        if unmatched := [t for t in targets if not any(matches(n, [t]) for n in linears)]:  # a typo adapts nothing
            ends, kind = sorted({n.rsplit(".", 1)[-1] for n in linears}), data.task_kind(args.data)
            raise UserError(f"--targets {','.join(unmatched)}: no linear layer of {args.model}" + (
                f" outside its {'span' if kind == 'squad' else 'classifier'} head" if head else "") + " is named so; "
                f"give --targets from their names' ends: {', '.join(ends)}")
        if head:
            targets = [n for n in linears if matches(n, targets)]
        keep = 1.0 if args.method == "lora" else args.keep
        check_adapted(args, keep, {n: model.get_submodule(n) for n in linears if matches(n, targets)})
        apply_lorasp(model, targets, args.rank, args.alpha, keep, args.mode, args.structure, args.seed)
        for name in head:
            model.get_submodule(name).requires_grad_(True)
    return model.train()


def adamw(model, params, args):
    """AdamW over what trains; norms and biases without weight decay (T5's relative_attention_bias too, as
    transformers' Trainer: a parameter whose name says bias)."""
    no_decay = {id(p) for m in model.modules() if isinstance(m, (RMSNorm, torch.nn.LayerNorm)) for p in m.parameters()}
    no_decay |= {id(p) for n, p in model.named_parameters() if "bias" in n}
    return torch.optim.AdamW([{"params": [p for p in params if id(p) not in no_decay]},
                              {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0}],
                             lr=args.lr, weight_decay=args.weight_decay)


def check_adapted(args, keep, layers):
    """--rank within every adapted layer's width min(in, out) (beyond it B A has no more rank to give, only more
    entries: LoRA r = min(in, out) can already reach any update), and a --keep that trains an entry of each A and B."""
    if not layers:                                             # (apply_lorasp refuses, naming the targets)
        return
    name, m = min(layers.items(), key=lambda nm: min(nm[1].in_features, nm[1].out_features))
    if args.rank > (width := min(m.in_features, m.out_features)):
        raise UserError(f"--rank {args.rank}: {name} is {m.out_features} x {m.in_features} (out x in), width {width}; "
                        f"B A cannot pass rank {width}, so the extra rank trains entries for nothing. Give --rank "
                        f"{width} or less (or --targets without it)")
    if args.structure not in UNITS:                            # (cli.py's choices are UNITS')
        raise UserError(f"--structure {args.structure}: lorasp.py draws masks for {', '.join(UNITS)} only")
    for name, m in layers.items():
        for k, shape in (("A", (args.rank, m.in_features)), ("B", (m.out_features, args.rank))):
            unit = UNITS[args.structure][k]                    # lorasp's rule: what the layer's mask draws
            if round(keep * (n := DRAWN[unit](shape))) == 0:   # (column: A's whole input columns)
                raise UserError(f"--keep {keep:g} trains no entry of {name}'s {k} (round({keep:g} x {n:,}) {unit} "
                                f"= 0): give --keep {1 / n:.3g} or more" + ", or a larger --rank" * (unit == "entries"))


def weights_dir(args):
    """Where the run's result goes: OUT/adapter, or OUT/model for full fine-tuning."""
    return os.path.join(args.out, "model" if args.method == "full" else "adapter")


def save_weights(model, directory, args, source, tok=None):
    """The adapter (PEFT's files + LoRA-SP's extras) or, for full fine-tuning, the model with its tokenizer files and
    what it trained on (evalcli.TRAINED, as an adapter's extras keep it); either folder is replaced whole (a failed
    save, a full disk say, leaves the previous one as it was). tok: the run's tokenizer, source's (None: loaded)."""
    try:
        if args.method != "full":
            hub = args.model in HF_REPOS and not gguf_file(source)  # a preset's files, fetched from its repository
            name = HF_REPOS[args.model] if hub else os.path.abspath(source)  # what PEFT's AutoPeftModel can load
            named = list(getattr(args, "base_files", None) or ()) if os.path.isfile(source) else []  # a .gguf: the
            # name its fingerprint hashed (resumed through a symlink: the first run's), for eval.py's check
            return save_adapter(model, directory, base_model_name_or_path=name,
                                task_type=KINDS[data.task_kind(args.data)][1], modules_to_save=heads(model, args),
                                base=dict(fingerprint=getattr(args, "base_sha256", None), quant=args.quant,
                                          task=args.data, file=named[0] if named else None,
                                          data=data.data_fingerprint(args.data),  # (eval.py: --data that file, said;
                                          held=getattr(args, "held_out", None),   # another split's records counted)
                                          tokenizer=getattr(args, "tokenizer_files", None)))  # (eval.py checks both)
        gpt2 = directory == weights_dir(args) and model.config.model_type == "gpt2" and hasattr(model, "score")
        with replace_dir(directory, own=("model*.safetensors*", *SMALL_FILES, *tokenizer.COPIED, TRAINED)) as tmp:
            tok = tokenizer.load_tokenizer(source) if tok is None else tok  # (keep_token_ids: its ids)
            pad = save_gpt2_classifier(model, tmp, tok, source) if gpt2 else save_pretrained(model, tmp)
            for f in ("generation_config.json", *tokenizer.COPIED):  # the tokenizer's files: a checkpoint of its own
                if os.path.exists(os.path.join(source, f)):      # (written as the rest: the umask's mode)
                    copy_file(os.path.join(source, f), os.path.join(tmp, f))
            if gguf_file(source):                              # a .gguf: its tokenizer, written as files
                tokenizer.save_tokenizer(tok, tmp)
            elif os.path.isfile(os.path.join(tmp, "tokenizer.model")):  # alone: transformers' BOS (export.py's too)
                tokenizer.llama_tokenizer_config(tok, tmp)
            keep_token_ids(os.path.join(source, "config.json"), os.path.join(tmp, "config.json"), tok)
            with atomic_write(os.path.join(tmp, TRAINED), "w") as f:  # what an adapter's base keeps of its data:
                json.dump(dict(task=args.data, data=data.data_fingerprint(args.data),  # eval.py's trained_on reads it
                               held=getattr(args, "held_out", None)), f)
            if gpt2:                                           # lorasp's marks, the pad named (export.py's files)
                gpt2_tokenizer(tok, tmp, pad)
                config = read_json(os.path.join(tmp, "config.json"))  # (save_tokenizer's: the tokenizer's pad)
                with atomic_write(os.path.join(tmp, "config.json"), "w") as f:
                    json.dump(config | {"pad_token_id": pad}, f, indent=2)
    except OSError as e:
        raise OSError(e.errno, f"writing {directory} failed ({e.strerror or e}); it holds what it held before") from e


def save_gpt2_classifier(model, directory, tok, source):
    """save_pretrained of a GPT-2 classifier as export.py writes one: transformers' GPT2ForSequenceClassification reads
    each text's last token that is not pad_token_id, so with no pad, or the EOS (the closing mark lorasp's classifier
    reads) as pad, the file's embedding gets export.gpt2_pad_row's zero row as pad (the model, and the checkpoints
    --resume reads, keep their shapes). Returns the pad id."""
    base = read_json(os.path.join(source, "config.json")) if os.path.isfile(os.path.join(source, "config.json")) else {}
    hf, rows = model.config.to_hf(), model.transformer.wte.num_embeddings
    pad = tok.pad_id if base.get("pad_token_id") is None else base["pad_token_id"]
    if pad_row_needed(tok, pad):
        pad, hf["vocab_size"] = rows, rows + 1
    hf["pad_token_id"] = pad
    save_pretrained(model, directory, config=hf, edit=lambda n, t: torch.cat([t, t.new_zeros(1, t.shape[1])]) if (
        n == "transformer.wte.weight" and pad == rows) else t)
    return pad


def keep_token_ids(base, saved, tok):
    """The base config.json's bos/eos/pad_token_id into the saved one, where to_hf (the computation only) wrote none:
    load_tokenizer reads them (Qwen2.5-Instruct's eos <|im_end|>, not its tokenizer's <|endoftext|>), as transformers
    does; lost, a run on the saved model ended every response with another EOS. Where neither names one (a .gguf,
    Meta's layout, the demo's model), the tokenizer's (config_token_ids: without, transformers' generate ran on)."""
    ids = {k: v for k, v in read_json(base).items() if k in ("bos_token_id", "eos_token_id", "pad_token_id")} if \
        os.path.isfile(base) else {}
    config = ids | read_json(saved)                            # (what to_hf wrote wins: RoBERTa's pad, T5's)
    with open(saved, "w") as f:
        json.dump(config | tokenizer.config_token_ids(tok, config), f, indent=2)


def check_split(args, train_ex, val_ex, val_records, world=1, kept=False):
    """The data a run got, against its flags: no training example, --patience with no validation set to watch and
    --exact-match with no record held out are refused; a --val-fraction that holds nothing out and a --batch-size past
    the examples are said; --exact-match and --bleu are set to what the task can check. Returns the rows a micro-batch
    holds (under DDP, a process's). kept: the held-out records are a checkpoint's (resume.check_data, which says how
    many are left), not --val-fraction's share."""
    if not train_ex:                                           # else: 0 steps, and an untrained adapter saved
        raise UserError(f"--data {args.data}: no training examples ({why_none(args, kept)}); nothing to train on")
    if args.patience and not val_ex:                           # early stopping would never look
        raise UserError(f"--patience {args.patience}: there is no validation set to watch " + (
            f"(this --resume holds out its checkpoint's held-out records, and none is in {args.data}); a --resume "
            "keeps the checkpoint's --patience and --val-fraction: give --data with those records in it, or start a "
            "new run without --resume" if kept  # (resume.same_settings refuses another --patience or --val-fraction)
            else f"(--val-fraction {args.val_fraction:g} of {args.data}); hold some records out, or drop --patience"))
    if args.val_fraction and not val_ex and data.holds_out(args.data) and not kept:  # (0: cli.py's note; kept:
        print(f"note: --val-fraction {args.val_fraction:g} holds nothing of {args.data} out (it rounds to 0): no "
              "validation loss")                               # resume.check_data's)
    if args.exact_match and args.val_fraction and not val_records and data.holds_out(args.data) \
            and not args.data.lower().endswith(".txt"):        # (--val-fraction 0: cli.py's refusal, or note)
        raise UserError(f"--exact-match {args.exact_match} asks held-out records, and " + (
            f"this --resume holds out its checkpoint's held-out records, and none is in {args.data}: drop --exact-match"
            if kept
            else f"--val-fraction {args.val_fraction:g} holds none of {args.data}'s records out (it rounds to 0): "
            "give a larger --val-fraction, or drop --exact-match"))
    args.exact_match = args.exact_match if val_records and data.task_kind(args.data) != "seq2seq" else 0
    args.bleu = args.bleu if data.task_kind(args.data) == "seq2seq" else 0
    if (rows := math.ceil(len(train_ex) / world)) < args.batch_size:  # one batch an epoch holds every example
        print(f"note: --batch-size {args.batch_size} is more than the {len(train_ex):,} training examples" + (
            f" over {world} processes" if world > 1 else "") + f": each micro-batch holds {rows}")
        if args.grad_accum > 1 and (args.max_steps or args.epochs > 1):  # (a step of 2+ micro-batches: an epoch each)
            print(f"note: --grad-accum {args.grad_accum}: a micro-batch holds all {rows:,} training examples" + (
                " a process gets" if world > 1 else "") + f", so a step's {args.grad_accum} micro-batches repeat "
                f"them: its gradient is one micro-batch's, at {args.grad_accum} times the compute")
    return min(rows, args.batch_size)


def why_none(args, kept=False):
    """What leaves --data with no training example, as its reader drops and splits them (--val-fraction only where it
    splits: data.holds_out; kept: a --resume's checkpoint's held-out records; GLUE's and WMT16's rows are truncated to
    --seq-len, never dropped)."""
    split = ", or every record is one the checkpoint held out, which this --resume holds out again" if kept else \
        f", or --val-fraction {args.val_fraction:g} held them all out" if args.val_fraction else ""
    if data.holds_out(args.data):
        return ("empty, or shorter than one block of " if args.data.lower().endswith(".txt") else
                "empty, or every record's prompt is longer than ") + f"--seq-len {args.seq_len}{split}"
    return {"squad-gen": "every question's prompt (its context and question) is longer than --seq-len "
                         f"{args.seq_len}", "squad": "every train question was left out (the note above says why)"
            }.get(args.data, "its train split holds none")


def tokens_counted(args):
    """What tok/s and the summary's `tokens` count: an example's tokens past its padding (its attention mask), as
    transformers' Trainer counts num_input_tokens_seen: T5's are the source's alone, the encoder's input."""
    if data.task_kind(args.data) == "seq2seq":
        return "source tokens (the encoder's input, padding not counted; targets not counted)", "source tok/s"
    return "tokens (each example's, padding not counted)", "tok/s"


def save_heldout(args, records):
    """OUT/heldout.jsonl for eval.py: the records no step trains on (cli.outputs names the file). Without any, an
    earlier run's is removed: this run may train on its records, which outputs would call held out."""
    held = os.path.join(args.out, "heldout.jsonl")
    if data.holds_out(args.data) and records:
        os.makedirs(args.out, exist_ok=True)
        with atomic_write(held, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    elif os.path.exists(held):
        os.remove(held)


# ----------------------------------------------------------------------------------------------------
# Losses: (summed loss, count) for a batch of each kind

def causal_lm_loss(model, batch):
    """(summed next-token cross-entropy over the labelled tokens, their number): logits at t predict token t+1.
    model(ids, labels=) computes it a chunk of rows at a time (model.lm_loss): no (B, T, vocab) logits."""
    n = (batch["labels"][:, 1:] != data.IGNORE).sum()
    return model(batch["input_ids"], labels=batch["labels"]) * n, n


def classification_loss(model, batch):
    """(summed cross-entropy of the head's logits (B, num_labels), or STS-B's squared error; the labelled rows)."""
    logits = model.classify(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return classifier_loss(logits, batch["labels"]), (batch["labels"] != data.IGNORE).sum()


def span_loss(model, batch):
    """(summed cross-entropy of the start logits against the answer's first token and of the end logits against its
    last, halved (HF's (start + end) / 2), the windows): labels (B, 2); (0, 0) points at [CLS], no answer here."""
    start, end = model.span_logits(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])  # (B, T)
    pad = batch["attention_mask"] == 0                         # no answer there: the padding a window gets from its
    start, end = start.masked_fill(pad, -math.inf), end.masked_fill(pad, -math.inf)  # batch-mates is not a class
    y = batch["labels"]
    loss = F.cross_entropy(start, y[:, 0], reduction="sum") + F.cross_entropy(end, y[:, 1], reduction="sum")
    return loss / 2, (y[:, 0] != data.IGNORE).sum()


def seq2seq_loss(model, batch):
    """(summed teacher-forced cross-entropy over the target tokens, their number): decoder_input_ids are the labels
    shifted right behind the start token (data.seq2seq_batch), so position i predicts labels[i] from labels[:i]."""
    logits = model(batch["input_ids"], batch["decoder_input_ids"], batch["attention_mask"])  # (B, T, vocab)
    labels = batch["labels"].flatten()                                                       # IGNORE on padding
    return F.cross_entropy(logits.flatten(0, 1).float(), labels, reduction="sum"), (labels != data.IGNORE).sum()


# ----------------------------------------------------------------------------------------------------
# Validation, early stopping's pick, and what training added

@torch.no_grad()
def evaluate(model, examples, loss_fn, args, autocast, pad_id):
    """{"val_loss": mean loss per labelled token (a classifier: per sequence)} over the validation examples (in length
    order: little padding); GLUE's dev sets ({split: examples}): with eval.evaluate_glue's metrics per set."""
    if isinstance(examples, dict):
        dev = evaluate_glue(model, args.data[5:], examples, args.batch_size, autocast, plan.bucket(args))
        return dict(val_loss=next(iter(dev.values()))["loss"], **dev)
    model.eval()
    (rank, world), total, count = rank_world(), 0.0, 0
    batches = data.sorted_batches(examples, args.batch_size, pad_id, rank, world, plan.bucket(args))  # DDP: a share
    for _, batch in batches:
        with autocast():
            loss, n = loss_fn(model, {k: v.to(args.device) for k, v in batch.items()})
        total, count = total + loss.item(), count + int(n)
    if world > 1:
        t = torch.tensor([total, count], dtype=torch.float64, device=args.device)
        dist.all_reduce(t)
        total, count = t.tolist()
    model.train()
    return dict(val_loss=total / max(count, 1))


def best_so_far(evals):
    """(the best evaluation record, how many came after it): early stopping maximises a GLUE task's headline dev
    metric (MNLI: matched), else minus the validation loss. A nan is never best: (None, len(evals)) while every
    evaluation is nan (then no weights are saved as the best, and the run's result is its last weights)."""
    def score(rec):
        dev = [v for v in rec.values() if isinstance(v, dict)]
        return next(iter(dev[0].values())) if dev else -rec["val_loss"]
    numbers = [j for j, rec in enumerate(evals) if not math.isnan(score(rec))]
    if not numbers:
        return None, len(evals)
    i = max(numbers, key=lambda j: (score(evals[j]), -j))  # the first of equals
    return evals[i], len(evals) - 1 - i


def before_after(model, tok, records, autocast, args, when):
    """What training added, measured before and after it on a few held-out records, printed: wmt16, BLEU of beam-4
    translations (eval.evaluate_translation); instructions, the share of greedy answers (eval.generate_answers) equal
    to `output`, and that start with it, then a non-word character or the end (the knowledge without the format).
    Returns (summary entries, answers). SQuAD (records: single-question articles): exact match and F1 of the span
    head, or of greedy answers (squad-gen), by eval.evaluate_squad, its notes said once a run: the span head's by
    reading the data (data.squad_examples), squad-gen's (contexts cut to fit) by the first check."""
    if data.task_kind(args.data) == "squad" or args.data == "squad-gen":
        first = when == "before" or bool(args.resume)          # (a resumed run has no "before" check)
        with autocast():
            scores, answers = evaluate_squad(model, tok, records, args.batch_size, args.seq_len,
                                             bucket=plan.bucket(args), note=args.data == "squad-gen" and first)
        print(f"SQuAD on {len(records)} dev questions {when} training: exact match {scores['exact_match']:.1f}, F1 "
              f"{scores['f1']:.1f}", flush=True)
        return {f"exact_match_{when}": scores["exact_match"], f"f1_{when}": scores["f1"]}, list(answers.values())
    if args.bleu:
        with autocast():
            scores, answers = evaluate_translation(model, tok, records, max_new_tokens=args.seq_len,
                                                   bucket=plan.bucket(args))
        print(f"{len(records)} validation sentences {when} training: {metrics.score_line(scores)}; e.g. "
              f"{records[0][0]!r} -> {answers[0][:200]!r}", flush=True)
        return {f"{k}_{when}": scores[k] for k in ("bleu", "chrf", "chrf++", "rougeL")}, answers
    ctx, unchecked = context_length(model), "(not checked: longer than the context)"
    keep = fitting(tok, records, ctx)
    gone = f"; {len(records) - len(keep)} left out: prompt and answer longer than the model's {ctx} positions" * (
        len(keep) < len(records))
    if not keep:
        print(f"held-out exact match {when} training: not measured{gone}")
        return {}, [unchecked] * len(records)
    new = max(len(tok.encode(records[i]["output"], bos=False)) for i in keep) + 2
    found = iter(generate_answers(model, tok, [records[i] for i in keep], new, 50, autocast, plan.bucket(args)))
    answers = [next(found) if i in keep else unchecked for i in range(len(records))]  # (train.py's samples: aligned)
    pairs = [(answers[i], records[i]["output"].strip()) for i in keep]
    exact = sum(a == r for a, r in pairs) / len(pairs)
    prefix = sum(bool(re.match(re.escape(r) + r"(\W|$)", a)) for a, r in pairs) / len(pairs)
    print(f"held-out exact match {when} training ({len(pairs)} records{gone}): {exact:.1%} (answers that start with "
          f"the expected one: {prefix:.1%})")                  # (--exact-match N: fewer if fewer were held out)
    return {f"exact_match_{when}": exact, f"prefix_match_{when}": prefix}, answers


def fitting(tok, records, context):
    """The indices of the records greedy answers can be checked on within the model's context: every prompt is
    generated on for as many tokens as the longest expected answer and 2, so the longest records are left out until
    the longest prompt and that fit (GPT-2's learned positions end there; the check once stopped the run with
    "97 tokens: past the 96 positions")."""
    sizes = {i: (len(tok.encode(data.alpaca_prompt(r))), len(tok.encode(r["output"], bos=False)))
             for i, r in enumerate(records)}
    while sizes and max(p for p, _ in sizes.values()) + max(o for _, o in sizes.values()) + 2 > context:
        del sizes[max(sizes, key=lambda i: sum(sizes[i]))]
    return set(sizes)
