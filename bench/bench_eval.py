"""eval.py against transformers on the same model and rows: MMLU 5-shot, WMT16 En-Ro greedy translation, GLUE SST-2.

    python bench/bench_eval.py [--tasks mmlu wmt16 glue] [--repeats 2] [--threads 1] [--quick] [--before DIR]

It writes small checkpoints in the public layouts (a random Llama with Llama 2's real sentencepiece vocabulary from
tests/fetch_real.py's folder, $LORASP_REAL; a random T5 with T5's real tokenizer.json; all-MiniLM-L6-v2 from there with
a random 2-class head) and synthetic data in the real formats (MMLU's data/dev + data/test CSV folders; WMT16's
test.jsonl; glue_data/SST-2/dev.tsv), then runs, each in a process of its own, interleaved:
- ours: `eval.py --task mmlu` / `--task wmt16-en-ro --num-beams 1` / `--task glue/sst2`, float32, as a user runs it;
- the peer, transformers: AutoModelForCausalLM scoring each prompt as Hendrycks et al.'s evaluate.py does (the prompt
  built here as theirs builds it, one prompt a forward, the logits of " A" .. " D" at its last position);
  AutoModelForSeq2SeqLM.generate (greedy, the same max new tokens, the same batches: sources sorted by length);
  AutoModelForSequenceClassification as run_glue.py evaluates (batches of 32 in file order, padded to their longest).
Printed per run: the process's wall time, the time scoring (tokenizing included; a question / a sentence) and the part
of it outside the model's forward passes (tokenizing, masks, decoding's bookkeeping: what a GPU waits on), its peak
resident memory (VmHWM); then ours/peer ratios (medians of each run's ratio to the next), the load average and the
CPU's bf16 flags; and whether the answers agree (each question's letter, each translation and BLEU, each prediction).
--quick: MMLU and WMT16 only, 1-layer models, a few rows: 39 s at load 3, 3m46s at load 10-11 (each process ~20 s).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from bench_data import Words  # noqa: E402  (the bench scripts import each other as top-level modules)
from children import cpus_said  # noqa: E402

# eval.main in a child: the scoring timed (eval.mmlu; eval.translate; GLUE's tokenizing and eval.evaluate_glue), the
# answers kept (MMLU's letters, read where eval.finite checks their logits; the translations; GLUE's predictions), VmHWM
OURS = """
import json, sys, time
t0 = time.time()
sys.path.insert(0, sys.argv[1])
import eval as E
loop, forward, answers = [0.0], [0.0], []
def timed(real, keep=lambda out: None, acc=loop):
    def run(*a, **k):
        t = time.time()
        out = real(*a, **k)
        acc[0] += time.time() - t
        keep(out)
        return out
    return run
def finite(model, t, what, real=E.finite):
    answers.extend("ABCD"[int(t.argmax())] for _ in range(what.startswith("mmlu:")))
    return real(model, t, what)
def glue_metrics(task, predictions, labels, real=E.glue_metrics):
    answers.extend(map(str, predictions))
    return real(task, predictions, labels)
def load_model(*a, real=E.load_model, **k):  # its forward passes timed: what is left is tokens, masks, Python
    model, tok = real(*a, **k)
    for name in ("forward", "encode", "decode"):           # (T5's translate calls the last two; classify: forward)
        if hasattr(model, name):
            setattr(model, name, timed(getattr(model, name), acc=forward))
    return model, tok
E.mmlu, E.glue_examples, E.evaluate_glue = timed(E.mmlu), timed(E.glue_examples), timed(E.evaluate_glue)
E.load_model = load_model
E.translate, E.finite, E.glue_metrics = timed(E.translate, answers.extend), finite, glue_metrics
E.main(sys.argv[2:])
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print("BENCH " + json.dumps(dict(wall=time.time() - t0, loop=loop[0], forward=forward[0], hwm_mib=hwm / 1024,
                                 answers=answers)))
"""


def write_llama(folder, real, layers):
    """A random Llama (Llama 2's widths scaled down, its real 32,000-piece sentencepiece vocabulary) in HF's layout."""
    import model as M
    from tokenizer import load_tokenizer
    spm = load_tokenizer(os.path.join(real, "llama.cpp", "ggml-vocab-llama-spm.gguf")).sp.serialized_model_proto()
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(spm)
    torch.manual_seed(0)
    config = M.LlamaConfig(vocab_size=32000, n_layer=layers, n_embd=256, n_head=8, n_kv_head=8, n_ffn=688,
                           max_seq_len=4096)
    M.save_pretrained(M.build_model(config), folder)
    return folder


def write_t5(folder, real, layers):
    """A random T5 (v1.0 layout, T5's real tokenizer.json) in HF's layout."""
    import model as M
    os.makedirs(folder, exist_ok=True)
    shutil.copy(os.path.join(real, "t5", "tokenizer.json"), folder)
    torch.manual_seed(0)
    model = M.build_model(M.T5Config(vocab_size=32128, d_model=128, d_kv=32, d_ff=256, num_layers=layers,
                                     num_decoder_layers=layers, num_heads=4))
    with torch.no_grad():  # logits 16x further apart (first-step gap ~2.2, not ~0.004): near-ties would flip greedy
        model.shared.weight.mul_(16)  # tokens with the order of a sum (1 thread: 3 of 8 translations differed)
    M.save_pretrained(model, folder)
    return folder


def write_classifier(folder, real):
    """all-MiniLM-L6-v2 (tests/fetch_real.py's: BERT, 6 layers, width 384) with a random 2-class head, as
    transformers' BertForSequenceClassification writes it (a fine-tuned checkpoint's layout)."""
    import transformers
    transformers.logging.set_verbosity_error()                # (its report of the new head's missing tensors)
    transformers.logging.disable_progress_bar()
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification.from_pretrained(os.path.join(real, "minilm"), num_labels=2)
    model.save_pretrained(folder)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(real, "minilm", f), folder)
    return folder


def write_sst2(folder, n, seed=0):
    """GLUE SST-2's dev.tsv in glue_data/SST-2/: a header, sentence<TAB>label, sentences of ~20 words."""
    w = Words(seed)
    os.makedirs(os.path.join(folder, "SST-2"), exist_ok=True)
    with open(os.path.join(folder, "SST-2", "dev.tsv"), "w", encoding="utf-8") as f:
        f.write("sentence\tlabel\n" + "".join(f"{w(20, ' ').lower()}\t{w.r.choice('01')}\n" for _ in range(n)))
    return folder


def write_mmlu(folder, subjects, dev, test, seed=0):
    """MMLU's data/ layout: dev/SUBJECT_dev.csv and test/SUBJECT_test.csv, rows question,A,B,C,D,answer, no header;
    questions of ~25 words, options of ~4, as the release's (its prompts run 400-900 Llama 2 tokens 5-shot)."""
    import csv
    w = Words(seed)
    names = [f"{w.vocab[100 + 7 * i]}_{w.vocab[101 + 7 * i]}" for i in range(subjects)]
    for split, n in (("dev", dev), ("test", test)):
        os.makedirs(os.path.join(folder, split), exist_ok=True)
        for s in names:
            with open(os.path.join(folder, split, f"{s}_{split}.csv"), "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows([w(25, "?"), *(w(4, "") for _ in range(4)), w.r.choice("ABCD")]
                                        for _ in range(n))
    return folder


def tokenizing(model_dir, data_dir):
    """eval.mmlu's tokenizing alone, in this process: (ms a prompt tokenized whole, as before session 33; ms with each
    header tokenized once, evalcli.mmlu_encoder; s its tokenizer check takes, once a run), the ids compared."""
    import data
    import evalcli
    from tokenizer import load_tokenizer
    tok, rows = load_tokenizer(model_dir), evalcli.mmlu_rows(data_dir)
    prompts = [(s, dev, row) for s, (dev, test) in rows.items() for row in test]
    t0 = time.perf_counter()
    encode = evalcli.mmlu_encoder(tok)
    t1 = time.perf_counter()
    whole = [tok.encode(data.mmlu_prompt(s, dev, row)) for s, dev, row in prompts]
    t2 = time.perf_counter()
    apart = [encode(s, dev, row, 5) for s, dev, row in prompts]
    t3 = time.perf_counter()
    if apart != whole:
        sys.exit("mmlu_encoder's ids are not the whole prompts' ids")
    return 1000 * (t2 - t1) / len(prompts), 1000 * (t3 - t2) / len(prompts), t1 - t0


def write_wmt16(folder, n, seed=0):
    """WMT16 En-Ro's test split as eval.py reads it: test.jsonl, one {"translation": {"en", "ro"}} a line."""
    w = Words(seed)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "test.jsonl"), "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(json.dumps({"translation": {"en": w(25), "ro": w(27)}}, ensure_ascii=False) + "\n")
    return folder


# ----------------------------------------------------------------------------------------------------
# The peer: transformers, as the reference scripts run it

def timed_forward(model):
    """model's forward timed (generate calls it each step) and its encoder's (generate runs that once, apart): a list
    whose [0] adds up their seconds."""
    spent = [0.0]

    def timed(real):
        def forward(*a, **k):
            t = time.time()
            out = real(*a, **k)
            spent[0] += time.time() - t
            return out
        return forward
    for m in [model] + ([model.get_encoder()] if model.config.is_encoder_decoder else []):
        m.forward = timed(m.forward)
    return spent


def peer_mmlu(model_dir, data_dir, k, limit):
    """Hendrycks et al.'s evaluate.py on a transformers model: gen_prompt + format_example, k dev examples (fewer while
    the prompt is too long), one forward a prompt, the argmax of the logits of " A".." D" at the last position."""
    from transformers import AutoModelForCausalLM, LlamaTokenizer
    t0 = time.time()
    tok = LlamaTokenizer.from_pretrained(model_dir)  # (transformers 5: tokenizers' BPE, built from tokenizer.model)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    spent = timed_forward(model)
    choices = ["A", "B", "C", "D"]
    letter_ids = [tok(" " + c, add_special_tokens=False).input_ids[-1] for c in choices]

    def format_subject(subject):
        return "".join(" " + entry for entry in subject.split("_"))

    def format_example(row, include_answer=True):
        prompt = row[0] + "".join(f"\n{choices[j]}. {row[j + 1]}" for j in range(4)) + "\nAnswer:"
        return prompt + f" {row[5]}\n\n" if include_answer else prompt

    def gen_prompt(dev, subject, k):
        return (f"The following are multiple choice questions (with answers) about {format_subject(subject)}.\n\n"
                + "".join(format_example(row) for row in dev[:k]))

    import csv
    subjects = sorted(f[:-len("_test.csv")] for f in os.listdir(os.path.join(data_dir, "test")))
    letters, loop = [], time.time()
    with torch.no_grad():
        for s in subjects:
            dev = list(csv.reader(open(os.path.join(data_dir, "dev", f"{s}_dev.csv"), encoding="utf-8")))
            test = list(csv.reader(open(os.path.join(data_dir, "test", f"{s}_test.csv"), encoding="utf-8")))[:limit]
            for row in test:
                shots = k
                while True:
                    ids = tok(gen_prompt(dev, s, shots) + format_example(row, False), return_tensors="pt").input_ids
                    if ids.shape[-1] <= model.config.max_position_embeddings or shots == 0:
                        break
                    shots -= 1
                logits = model(input_ids=ids).logits[0, -1]
                letters.append(choices[int(logits[letter_ids].argmax())])
    return dict(wall=time.time() - t0, loop=time.time() - loop, forward=spent[0], answers=list(letters))


def peer_wmt16(model_dir, data_dir, batch_size, max_new_tokens):
    """transformers' generate, greedy, on T5's prefixed sources in eval.translate's batches (sorted by length)."""
    from transformers import AutoModelForSeq2SeqLM, PreTrainedTokenizerFast
    t0 = time.time()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"), pad_token="<pad>",
                                  eos_token="</s>")
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    spent = timed_forward(model)
    sources = [json.loads(line)["translation"]["en"] for line in open(os.path.join(data_dir, "test.jsonl"))]
    order, hyps, loop = sorted(range(len(sources)), key=lambda i: len(sources[i])), [None] * len(sources), time.time()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = tok(["translate English to Romanian: " + sources[i] for i in rows], return_tensors="pt",
                        padding=True)
            out = model.generate(**batch, num_beams=1, do_sample=False, max_new_tokens=max_new_tokens)
            for i, text in zip(rows, tok.batch_decode(out, skip_special_tokens=True)):
                hyps[i] = text
    return dict(wall=time.time() - t0, loop=time.time() - loop, forward=spent[0], answers=hyps)


def peer_glue(model_dir, data_dir, batch_size, seq_len):
    """run_glue.py's evaluation: AutoTokenizer (pairs cut at --max_seq_length), batches in file order padded to their
    longest, AutoModelForSequenceClassification's argmax."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    spent = timed_forward(model)
    lines = open(os.path.join(data_dir, "SST-2", "dev.tsv"), encoding="utf-8").read().splitlines()[1:]
    sentences, predictions, loop = [line.split("\t")[0] for line in lines], [], time.time()
    with torch.no_grad():
        for start in range(0, len(sentences), batch_size):
            batch = tok(sentences[start:start + batch_size], padding=True, truncation=True, max_length=seq_len,
                        return_tensors="pt")
            predictions += model(**batch).logits.argmax(-1).tolist()
    return dict(wall=time.time() - t0, loop=time.time() - loop, forward=spent[0],
                answers=list(map(str, predictions)))


def peer_child(argv):
    """--peer TASK ARGS...: the peer in this process, its result as a BENCH line with VmHWM."""
    task, args = argv[0], argv[1:]
    r = dict(mmlu=peer_mmlu, wmt16=peer_wmt16, glue=peer_glue)[task](args[0], args[1], int(args[2]), int(args[3]))
    r["hwm_mib"] = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
    print("BENCH " + json.dumps(r))


# ----------------------------------------------------------------------------------------------------

def run(argv, threads):
    """The BENCH dict of a child process, or an exit naming the command and its last output."""
    p = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)))
    found = [json.loads(line[6:]) for line in p.stdout.splitlines() if line.startswith("BENCH ")]
    if p.returncode or not found:
        sys.exit(f"{'eval.py' if argv[0] == '-c' else 'the peer'} {' '.join(argv[3 if argv[0] == '-c' else 1:])}: "
                 f"exit {p.returncode}\n" + (p.stdout + p.stderr)[-3000:])
    return found[0]


def median(xs):
    xs = sorted(xs)
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", choices=["mmlu", "wmt16", "glue"], help="default: all three; --quick: mmlu "
                   "wmt16 (each task is two processes more)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each side, interleaved (ours, peer, ours, ...)")
    p.add_argument("--quick", action="store_true", help="1-layer models on a few rows, one run each")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where its scratch folder goes (deleted at the end)")
    p.add_argument("--threads", type=int, default=1, help="torch's threads in every run (OMP_NUM_THREADS); 1: the "
                   "runs of a shared machine's other jobs stall no thread pool")
    p.add_argument("--before", metavar="DIR", help="another commit's files (git archive COMMIT | tar -x -C DIR), whose "
                   "eval.py runs too, interleaved, on the same rows: a change measured before and after")
    if sys.argv[1:2] == ["--peer"]:
        return peer_child(sys.argv[2:])
    args = p.parse_args()
    args.tasks = args.tasks or ["mmlu", "wmt16"] + ["glue"] * (not args.quick)
    real = os.environ.get("LORASP_REAL", os.path.join(ROOT, ".cache", "real"))
    if not os.path.isdir(real):
        sys.exit(f"no real tokenizer files in {real}: run python tests/fetch_real.py first (or set LORASP_REAL)")
    sys.path.insert(0, ROOT)
    layers, subjects, limit, sentences, new, pairs, repeats = (1, 2, 4, 8, 16, 32, 1) if args.quick else (
        2, 8, 20, 64, 64, 512, args.repeats)
    work = tempfile.mkdtemp(prefix="lorasp-bench-eval-", dir=args.dir)
    here = os.path.abspath(__file__)
    try:
        print(f"{cpus_said(args.threads)}; float32; {repeats} run(s) each, interleaved")
        jobs = {}
        if "mmlu" in args.tasks:
            m, d = write_llama(os.path.join(work, "llama"), real, layers), write_mmlu(os.path.join(work, "mmlu"),
                                                                                     subjects, 5, limit)
            whole, apart, check = tokenizing(m, d)
            print(f"mmlu's tokenizing alone, {subjects * limit} prompts: {whole:.2f} ms a prompt whole, {apart:.2f} ms "
                  f"with its header tokenized once (the same ids), and {check:.2f} s once a run to check the tokenizer")
            jobs["mmlu"] = (["-c", OURS, ROOT, "--task", "mmlu", "--model", m, "--data-dir", d, "--limit",
                             str(limit), "--dtype", "float32", "--device", "cpu"],
                            [here, "--peer", "mmlu", m, d, "5", str(limit)], f"{subjects * limit} questions, 5-shot",
                            subjects * limit)
        if "wmt16" in args.tasks:
            m, d = write_t5(os.path.join(work, "t5"), real, layers), write_wmt16(os.path.join(work, "wmt16"), sentences)
            jobs["wmt16"] = (["-c", OURS, ROOT, "--task", "wmt16-en-ro", "--model", m, "--data-dir", d,
                              "--num-beams", "1", "--max-new-tokens", str(new), "--batch-size", "16", "--dtype",
                              "float32", "--device", "cpu"],
                             [here, "--peer", "wmt16", m, d, "16", str(new)],
                             f"{sentences} sentences, greedy, <= {new} new tokens, batches of 16", sentences)
        if "glue" in args.tasks:
            m, d = write_classifier(os.path.join(work, "minilm"), real), write_sst2(os.path.join(work, "glue"), pairs)
            jobs["glue"] = (["-c", OURS, ROOT, "--task", "glue/sst2", "--model", m, "--data-dir", d, "--batch-size",
                             "32", "--seq-len", "128", "--dtype", "float32", "--device", "cpu"],
                            [here, "--peer", "glue", m, d, "32", "128"], f"SST-2, {pairs} sentences, batches of 32",
                            pairs)
        for task, (ours_argv, peer_argv, what, n) in jobs.items():
            sides = [("ours", ours_argv), ("peer", peer_argv)]
            if args.before:                                   # (OURS's first argument: the files' folder)
                sides.append(("before", ours_argv[:2] + [os.path.abspath(args.before)] + ours_argv[3:]))
            runs = {who: [] for who, _ in sides}
            for _ in range(repeats):
                for who, argv in sides:
                    runs[who].append(r := run(argv, args.threads))
                    r["outside"] = r["loop"] - r["forward"]          # tokens, masks, Python: what a GPU waits on
                    print(f"  {task} {who}: {r['wall']:.1f} s in all, {r['loop']:.2f} s scoring "
                          f"({1000 * r['loop'] / n:.1f} ms each, {1000 * r['outside'] / n:.1f} outside the model's "
                          f"forward passes), VmHWM {r['hwm_mib']:,.0f} MiB; load "
                          + " ".join(open("/proc/loadavg").read().split()[:3]), flush=True)
            o, q = ({k: median([r[k] for r in runs[who]]) for k in ("wall", "loop", "outside", "hwm_mib")}
                    for who in ("ours", "peer"))
            ratio = {k: median([x[k] / y[k] for x, y in zip(runs["ours"], runs["peer"])]) for k in o}  # run by run
            print(f"{task} ({what}), medians: ours {o['loop']:.2f} s scoring / {o['wall']:.1f} s in all / "
                  f"{o['hwm_mib']:,.0f} MiB; peer {q['loop']:.2f} / {q['wall']:.1f} / {q['hwm_mib']:,.0f}; ours/peer "
                  f"(run by run): scoring {ratio['loop']:.2f}, outside the forwards {ratio['outside']:.2f}, wall "
                  f"{ratio['wall']:.2f}, VmHWM {ratio['hwm_mib']:.2f}")
            if args.before:
                ratio = {k: median([x[k] / y[k] for x, y in zip(runs["ours"], runs["before"])]) for k in o}
                same = runs["ours"][0]["answers"] == runs["before"][0]["answers"]
                print(f"  ours/before (run by run): scoring {ratio['loop']:.2f}, outside the forwards "
                      f"{ratio['outside']:.2f}, wall {ratio['wall']:.2f}, VmHWM {ratio['hwm_mib']:.2f}; "
                      + ("the same answers" if same else "OTHER ANSWERS"))
            a, b = runs["ours"][0]["answers"], runs["peer"][0]["answers"]
            same = sum(x == y for x, y in zip(a, b)) if len(a) == len(b) == n else 0
            if task == "wmt16":
                from metrics import bleu
                refs = [json.loads(line)["translation"]["ro"] for line in open(os.path.join(work, "wmt16",
                                                                                            "test.jsonl"))]
                print(f"  translations: {same}/{n} the same; BLEU ours {bleu(a, refs):.2f}, peer {bleu(b, refs):.2f}")
            else:
                print(f"  answers: all {n} the same, so the same accuracy" if same == n else
                      f"  answers: {same}/{n} the same (ours {''.join(a)}, peer {''.join(b)})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from checks import console  # (lorasp's: line-buffered, UTF-8 where ASCII fails, a reader gone outlived)
    console()
    main()
