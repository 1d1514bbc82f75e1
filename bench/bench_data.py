"""The data path at the datasets' sizes: time and peak resident memory (VmHWM) of a train.py run up to its first step.

    python bench/bench_data.py [--datasets alpaca mnli qqp wmt16 squad squad-gen] [--scale 1.0] [--dir /tmp/...]

Hubs are unreachable here, so it writes synthetic files in each real format at the real size (x --scale): Alpaca's
52,002 records (instruction ~15 words, input ~10 in 40% of them, output ~45), GLUE MNLI's 392,702 training pairs (with
its parse columns) and QQP's 363,846, WMT16 En-Ro's 610,320 pairs (~25 words), SQuAD v1.1's 87,599 questions (~120-word
contexts, 5 questions each); words drawn from a 30k-word Zipf vocabulary. Each runs through 1-layer models whose
tokenizers are real ones from tests/fetch_real.py's folder ($LORASP_REAL): Llama 2's sentencepiece vocabulary
(llama.cpp's GGUF), GPT-2's BPE, T5's Unigram, all-MiniLM's WordPiece. Each run is `train.py --max-steps 1` in a
process of its own, stopped as its first step would start; printed: seconds to that point, VmHWM, and the memory
plan's data term (plan.data_bytes). session 32's table in docs/benchmarks.md came from it (before/after scale32).
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

from children import cpus_said

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = dict(alpaca=52002, mnli=392702, qqp=363846, wmt16=610320, squad=87599)

# train.main in a child, its loop replaced by a stop that prints the time and VmHWM when the first step would start
STOPPED = """
import json, os, sys, time
t0 = time.time()
sys.path.insert(0, sys.argv[1])
import plan, train
def stop(run):
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print("BENCH " + json.dumps(dict(s=round(time.time() - t0, 1), hwm_mib=round(hwm / 1024),
                                     data_mib=round(plan.data_bytes(run.args) / 2**20))), flush=True)
    os._exit(0)
train.loop = stop
train.main(sys.argv[2:])
"""


class Words:
    """Sentences from a Zipf vocabulary of ~30k made-up words after English's commonest (seeded)."""
    def __init__(self, seed=0):
        self.r = random.Random(seed)
        syl = [a + b for a in "bcdfglmnprstv" for b in "aeiou"] + ["st", "th", "ch", "an", "er", "on"]
        common = ("the of and to a in is that for it as was with be by on not he this are or his from at which but "
                  "have an they you were her all she there would their we him been has when who will more if").split()
        self.vocab = common + ["".join(self.r.choices(syl, k=self.r.choice((1, 2, 2, 3, 3, 4)))) for _ in range(30000)]
        self.cum, total = [], 0.0
        for i in range(len(self.vocab)):
            total += 1 / (i + 1)
            self.cum.append(total)

    def __call__(self, n, end="."):
        ws = self.r.choices(self.vocab, cum_weights=self.cum, k=max(4, int(self.r.gauss(n, n / 3))))
        return " ".join([ws[0].capitalize(), *ws[1:]]) + end


def write_data(folder, names, scale):
    """The synthetic files of `names` under folder, in the layouts train.py reads (--data FILE or --data-dir)."""
    w, n = Words(), {k: max(8, round(v * scale)) for k, v in SIZES.items()}
    if "alpaca" in names:
        recs = [dict(instruction=w(15), input=w(10) if w.r.random() < 0.4 else "", output=w(45))
                for _ in range(n["alpaca"])]
        with open(os.path.join(folder, "alpaca_data.json"), "w") as f:
            json.dump(recs, f, indent=4)
    for task in {"mnli", "qqp"} & set(names):
        d = os.path.join(folder, "glue", task.upper())
        os.makedirs(d, exist_ok=True)
        splits = [("train", n[task]), ("dev_matched", n[task] // 40), ("dev_mismatched", n[task] // 40)] \
            if task == "mnli" else [("train", n[task]), ("dev", n[task] // 9)]
        for split, m in splits:
            with open(os.path.join(d, split + ".tsv"), "w") as f:
                if task == "mnli":
                    f.write("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                            "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n")
                    for i in range(m):
                        a, b, y = w(20), w(10), w.r.choice(("entailment", "neutral", "contradiction"))
                        f.write("\t".join([str(i), str(i), f"{i}e", "fiction", f"( {a} )", f"( {b} )", f"(ROOT {a})",
                                            f"(ROOT {b})", a, b, y, y]) + "\n")
                else:
                    f.write("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n")
                    for i in range(m):
                        f.write(f"{i}\t{2 * i}\t{2 * i + 1}\t{w(11, '?')}\t{w(11, '?')}\t{w.r.choice('01')}\n")
    if "wmt16" in names:
        os.makedirs(d := os.path.join(folder, "wmt16"), exist_ok=True)
        for split, m in (("train", n["wmt16"]), ("validation", 1999), ("test", 1999)):
            with open(os.path.join(d, split + ".jsonl"), "w") as f:
                for _ in range(m):
                    pair = {"en": w(25), "ro": " ".join(x + "ăâîșț"[len(x) % 5] * (len(x) % 3 == 0) for x in
                                                       w(27).split())}
                    f.write(json.dumps({"translation": pair}, ensure_ascii=False) + "\n")
    if {"squad", "squad-gen"} & set(names):
        os.makedirs(d := os.path.join(folder, "squad"), exist_ok=True)
        for split, m in (("train", n["squad"]), ("dev", max(8, n["squad"] // 8))):
            paragraphs = []
            for q in range(0, m, 5):
                ctx, qas = w(120), []
                for k in range(q, min(q + 5, m)):
                    words = ctx.split(" ")
                    j = w.r.randrange(len(words) - 3)
                    text, start = " ".join(words[j:j + w.r.randint(1, 3)]), len(" ".join(words[:j])) + (j > 0)
                    qas.append(dict(id=f"{split}{k:07d}", question=w(10, "?"),
                                    answers=[dict(answer_start=start, text=text)] * (1 if split == "train" else 3)))
                paragraphs.append(dict(context=ctx, qas=qas))
            articles = [dict(title=f"t{i}", paragraphs=paragraphs[i:i + 40]) for i in range(0, len(paragraphs), 40)]
            with open(os.path.join(d, f"{split}-v1.1.json"), "w") as f:
                json.dump(dict(data=articles, version="1.1"), f)


def write_models(folder, real):
    """1-layer models whose tokenizers are real ones: {name: folder}."""
    import model as M
    from tokenizer import load_tokenizer
    spm = load_tokenizer(os.path.join(real, "llama.cpp", "ggml-vocab-llama-spm.gguf")).sp.serialized_model_proto()
    specs = dict(
        llama2=(M.LlamaConfig(vocab_size=32000, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, n_ffn=64),
                {"tokenizer.model": spm}),
        gpt2=(M.GPT2Config(vocab_size=50257, n_positions=1024, n_embd=32, n_layer=1, n_head=4),
              {f: os.path.join(real, "gpt2", f) for f in ("encoder.json", "vocab.bpe")}),
        t5=(M.T5Config(vocab_size=32128, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
                       num_heads=4), {"tokenizer.json": os.path.join(real, "t5", "tokenizer.json")}))
    out = dict(minilm=os.path.join(real, "minilm"))
    for name, (config, files) in specs.items():
        os.makedirs(out.setdefault(name, os.path.join(folder, name)), exist_ok=True)
        for dst, src in files.items():
            if isinstance(src, bytes):
                with open(os.path.join(out[name], dst), "wb") as f:
                    f.write(src)
            else:
                shutil.copy(src, os.path.join(out[name], dst))
        M.save_pretrained(M.build_model(config), out[name])
    return out


def flags(name, folder, models):
    """train.py's flags for dataset `name`."""
    data = dict(alpaca=["--model", models["llama2"], "--data", os.path.join(folder, "alpaca_data.json"),
                        "--seq-len", "512"],
                mnli=["--model", models["gpt2"], "--data", "glue/mnli", "--seq-len", "128"],
                qqp=["--model", models["gpt2"], "--data", "glue/qqp", "--seq-len", "128"],
                wmt16=["--model", models["t5"], "--data", "wmt16-en-ro", "--seq-len", "128"],
                squad=["--model", models["minilm"], "--data", "squad", "--seq-len", "384"],
                **{"squad-gen": ["--model", models["llama2"], "--data", "squad-gen", "--seq-len", "512"]})[name]
    where = dict(mnli="glue", qqp="glue", wmt16="wmt16", squad="squad", **{"squad-gen": "squad"}).get(name)
    return data + (["--data-dir", os.path.join(folder, where)] if where else []) + [
        "--out", os.path.join(folder, "runs", name), "--max-steps", "1", "--batch-size", "4", "--dtype", "fp32",
        "--eval-every", "0"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["alpaca", "mnli", "qqp", "wmt16", "squad", "squad-gen"],
                   choices=["alpaca", "mnli", "qqp", "wmt16", "squad", "squad-gen"])
    p.add_argument("--scale", type=float, default=1.0, help="a fraction of the real sizes (1.0: the real ones)")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where its scratch folder goes (deleted at the end)")
    args = p.parse_args()
    real = os.environ.get("LORASP_REAL", os.path.join(ROOT, ".cache", "real"))
    if not os.path.isdir(real):
        sys.exit(f"no real tokenizer files in {real}: run python tests/fetch_real.py first (or set LORASP_REAL)")
    sys.path.insert(0, ROOT)
    work = tempfile.mkdtemp(prefix="lorasp-bench-data-", dir=args.dir)
    try:
        t = time.time()
        write_data(work, args.datasets, args.scale)
        models = write_models(work, real)
        print(f"data and models written in {time.time() - t:.0f} s (--scale {args.scale:g}); {cpus_said()}")
        print(f"{'data':<10} {'s to step 1':>12} {'VmHWM MiB':>10} {'plan data MiB':>14}  load average")
        for name in args.datasets:
            env = dict(os.environ, LORASP_CACHE=os.path.join(work, "cache"))
            done = subprocess.run([sys.executable, "-c", STOPPED, ROOT, *flags(name, work, models)], env=env,
                                  capture_output=True, text=True)
            found = [json.loads(line[6:]) for line in done.stdout.splitlines() if line.startswith("BENCH ")]
            if not found:
                sys.exit(f"{name}: train.py ended before its first step (exit {done.returncode}):\n"
                         + (done.stdout + done.stderr)[-3000:])
            r = found[0]
            print(f"{name:<10} {r['s']:>12} {r['hwm_mib']:>10,} {r['data_mib']:>14,}  "
                  + " ".join(open("/proc/loadavg").read().split()[:3]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
