"""train.py's optimization against an independent reference: transformers' Trainer with a PEFT LoRA, as a user of the
peers (and of QLoRA's qlora.py) trains. A tiny random LlamaForCausalLM written in Hugging Face's layout, Alpaca-format
records with responses of 1 to 12 words; train.py `--method lora` against LoraConfig(r, alpha, the 7 projections,
dropout 0) holding the same initial A and B, and Trainer with the TrainingArguments our flags mean (AdamW with
Trainer's groups and defaults, cosine or linear decay or a constant lr, max_grad_norm, gradient accumulation), fed our
micro-batches' rows in our order (the order is ours by design: data.micro_batches, length-grouped) and padded by a
collator of its own. Per-step loss, lr and the final A and B agree to fp32's rounding (1e-5), so these match: the
loss over the response tokens of the whole accumulated step (Trainer's num_items_in_batch), label shift, padding
ignored, the schedule without warm-up, AdamW's betas, eps and weight decay on A and B, clipping (it bites every step).
Elsewhere: the schedule with warm-up and the weight-decay groups on each family (tests/test_train.py); what differs
on purpose (warm-up one step ahead, --weight-decay 0.01, steps across epoch ends): docs/jobs.md."""
import json
import random

import peft
import pytest
import torch
import transformers
from safetensors.torch import load_file

import train
from fixtures import demo_tokenizer, random_params
from tasks import TARGETS

SETTINGS = dict(rank=4, alpha=8, lr=5e-3, steps=6, batch=4, accum=2, weight_decay=0.1, clip=0.05)
TRAINER_SCHEDULE = {"constant": "constant_with_warmup"}  # --schedule constant in Trainer (its "constant": no warm-up)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(HF model directory, records file): a random 2-layer LlamaForCausalLM with a sentencepiece tokenizer."""
    d = tmp_path_factory.mktemp("hf-llama")
    tok = demo_tokenizer(d, 300)
    c = transformers.LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                 tie_word_embeddings=False)
    torch.manual_seed(0)
    random_params(transformers.LlamaForCausalLM(c), 0).save_pretrained(d)
    rng, records = random.Random(1), d / "records.json"
    words = " ".join(r["instruction"] for r in train.data.demo_records(40, seed=1)).split()
    records.write_text(json.dumps([dict(r, output=" ".join(rng.choices(words, k=rng.randint(1, 12))))  # responses of
                                   for r in train.data.demo_records(80, seed=1)]))                    # 1 to 12 words
    return str(d), str(records)


def run_ours(setup, out, monkeypatch, schedule):
    """train.py --method lora, no warm-up: (initial {layer: (A, B)}, micro-batches in order, metrics.jsonl's step
    records, the saved adapter's tensors)."""
    s, initial, batches = SETTINGS, {}, []
    load_model, loss_fn = train.load_model, train.causal_lm_loss

    def recording_load(*a, **k):
        model = load_model(*a, **k)
        initial.update({n: (m.lora_A.detach().clone(), m.lora_B.detach().clone()) for n, m in model.named_modules()
                        if isinstance(m, train.LoRASPLinear)})
        return model

    def recording_loss(model, batch):
        if torch.is_grad_enabled():
            batches.append({k: v.clone() for k, v in batch.items()})
        return loss_fn(model, batch)
    monkeypatch.setattr(train, "load_model", recording_load)
    monkeypatch.setattr(train, "causal_lm_loss", recording_loss)
    train.train(train.parse_args([
        "--model", setup[0], "--data", setup[1], "--out", str(out), "--method", "lora", "--rank", str(s["rank"]),
        "--alpha", str(s["alpha"]), "--lr", str(s["lr"]), "--max-steps", str(s["steps"]), "--batch-size",
        str(s["batch"]), "--grad-accum", str(s["accum"]), "--weight-decay", str(s["weight_decay"]), "--clip",
        str(s["clip"]), "--warmup", "0", "--schedule", schedule, "--seq-len", "256", "--val-fraction", "0.1",
        "--eval-every", "0", "--save-every", "0", "--log-every", "1", "--dtype", "fp32", "--threads", "1"]))
    log = [r for line in (out / "metrics.jsonl").read_text().splitlines() if "loss" in (r := json.loads(line))]
    return initial, batches, log, load_file(str(out / "adapter" / "adapter_model.safetensors"))


class Rows(torch.utils.data.IterableDataset):
    """Our micro-batches' rows, unpadded, in our order: an IterableDataset, so Trainer batches them as they come."""
    def __init__(self, batches):
        self.rows = [{"input_ids": b["input_ids"][i][b["attention_mask"][i] == 1].tolist(),
                      "labels": b["labels"][i][b["attention_mask"][i] == 1].tolist()}
                     for b in batches for i in range(len(b["input_ids"]))]

    def __iter__(self):
        return iter(self.rows)


def pad_rows(rows):
    """Right padding to the longest row: pad id 0, labels -100, attention mask 0 (transformers' collators' rule)."""
    T = max(len(r["input_ids"]) for r in rows)
    return {"input_ids": torch.tensor([r["input_ids"] + [0] * (T - len(r["input_ids"])) for r in rows]),
            "labels": torch.tensor([r["labels"] + [-100] * (T - len(r["labels"])) for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (T - len(r["input_ids"])) for r in rows])}


def run_trainer(setup, tmp_path, initial, batches, schedule):
    """The same run through transformers' Trainer and PEFT: (per-step loss (the forward's losses summed over the step's
    micro-batches), per-step lr, Trainer's logs, the trained {layer: (A, B)}, the Trainer)."""
    s = SETTINGS
    base = transformers.LlamaForCausalLM.from_pretrained(setup[0], dtype=torch.float32)
    model = peft.get_peft_model(base, peft.LoraConfig(r=s["rank"], lora_alpha=s["alpha"], lora_dropout=0.0,
                                                      target_modules=TARGETS["llama"].split(","), bias="none",
                                                      task_type="CAUSAL_LM"))
    lora = {n[len("base_model.model."):]: m for n, m in model.named_modules() if hasattr(m, "lora_A") and
            isinstance(getattr(m, "lora_A"), torch.nn.ModuleDict)}
    assert sorted(lora) == sorted(initial)
    with torch.no_grad():
        for n, m in lora.items():
            m.lora_A["default"].weight.copy_(initial[n][0])
            m.lora_B["default"].weight.copy_(initial[n][1])
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "trainer"), per_device_train_batch_size=s["batch"],
        gradient_accumulation_steps=s["accum"], learning_rate=s["lr"], max_steps=s["steps"], warmup_steps=0,
        lr_scheduler_type=TRAINER_SCHEDULE.get(schedule, schedule), weight_decay=s["weight_decay"],
        max_grad_norm=s["clip"], optim="adamw_torch", logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
        seed=0, remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=True)
    losses, lrs = [], []

    class Record(transformers.TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            lrs.append(optimizer.param_groups[0]["lr"])
    model.base_model.model.register_forward_hook(  # the loss each micro-batch's forward returns (training only)
        lambda m, i, o: losses.append(float(o.loss.detach())) if m.training else None)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Rows(batches), data_collator=pad_rows,
                                   callbacks=[Record()])
    trainer.train()
    step_loss = [sum(losses[i:i + s["accum"]]) for i in range(0, len(losses), s["accum"])]
    trained = {n: (m.lora_A["default"].weight.detach(), m.lora_B["default"].weight.detach()) for n, m in lora.items()}
    return step_loss, lrs, [r for r in trainer.state.log_history if "loss" in r], trained, trainer


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_lora_run_equals_trainer_with_peft(setup, tmp_path, monkeypatch, schedule):
    """No warm-up (where our schedule is transformers' exactly): per-step loss, lr and the final A and B as Trainer
    + PEFT give them, to fp32's rounding; clipping bit on every step, and the steps' token counts differ between
    micro-batches (so a per-micro-batch mean would not match)."""
    initial, batches, log, saved = run_ours(setup, tmp_path / "ours", monkeypatch, schedule)
    s = SETTINGS
    assert len(batches) == s["steps"] * s["accum"] and len(log) == s["steps"]
    counts = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
    assert len(set(counts)) > 1                                # micro-batches of different token counts
    assert sum((b["attention_mask"] == 0).any() for b in batches) >= 3  # padded rows: padding is ignored (a step's
    # records are length-grouped whole, then cut: its micro-batches pad little, and some none)
    step_loss, lrs, hf_log, trained, trainer = run_trainer(setup, tmp_path, initial, batches, schedule)
    torch.testing.assert_close(torch.tensor([r["loss"] for r in log]), torch.tensor(step_loss), rtol=1e-5, atol=1e-5)
    assert trainer.model_accepts_loss_kwargs       # each forward's loss: its sum over the step's labelled tokens
    assert [r["loss"] for r in hf_log] == pytest.approx(step_loss, rel=1e-4)  # (Trainer's log: rounded)
    assert all(r["grad_norm"] > s["clip"] for r in hf_log)     # clipping bites every step: its norm is tested
    assert [r["lr"] for r in log] == pytest.approx(lrs, rel=1e-12)  # each step's lr, decayed to above 0 at the last,
    assert [r["lr"] for r in log] == pytest.approx([r["learning_rate"] for r in hf_log], rel=1e-12)  # logged alike
    assert lrs[0] == s["lr"] and (0 < lrs[-1] < s["lr"] / 4 if schedule != "constant" else set(lrs) == {s["lr"]})
    for n, (A, B) in trained.items():
        key = f"base_model.model.{n}"
        torch.testing.assert_close(saved[f"{key}.lora_A.weight"], A, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(saved[f"{key}.lora_B.weight"], B, rtol=1e-5, atol=1e-5)
        assert not torch.equal(A, initial[n][0]) and not torch.equal(B, initial[n][1])   # both trained
