#!/usr/bin/env python3
"""Training speed, side by side in one run: `cbqa train` against transformers' own training step.

Both train the same t5-small-shaped model (random init, same config.json and tokenizer) on the
same synthetic data, with the same batch (examples per step and sequence lengths), optimizer
(AdaFactor with the paper's settings), dropout (0.1) and libtorch thread count. Every question
tokenizes to exactly --in-len tokens and every answer to --out-len tokens (+ </s>), so neither side
pads and both do the same arithmetic per step. Reported: steady-state training tokens/s (input +
target tokens, the first --warmup steps dropped), the ratio cbqa/transformers, and the peak RSS of
each process. This is a benchmark, not a test: numbers drift run to run on a shared machine, so
the two sides alternate for --rounds rounds and the medians are reported.
On a GPU (--device cuda, --precision bf16: cbqa's bf16 matmuls on fp32 weights, transformers under
torch.autocast(bfloat16), the same mixed precision), the peak GPU memory of each process is read
with nvidia-smi (memory in use above what was in use before it started, CUDA context included).

Run: .venv/bin/python scripts/bench_train.py [--bin target/debug/cbqa] [--threads 2]
         [--batch 32] [--in-len 16] [--out-len 8] [--steps 12] [--warmup 2] [--rounds 2]
Writes runs/bench-train/train_speed.csv (or --csv) and prints a table.
"""
import argparse
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def gpu_used_mib():
    """Memory in use on GPU 0 per nvidia-smi (MiB), or None without nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                              "-i", "0"], capture_output=True, text=True, timeout=10)
        return float(out.stdout.split()[0]) if out.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


class GpuPeak:
    """Polls nvidia-smi in a thread while a child runs; `peak` is MiB above the starting level."""

    def __init__(self, on):
        import threading
        self.base = gpu_used_mib() if on else None
        self.top, self.stop = self.base, threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True) if self.base is not None else None
        if self.thread:
            self.thread.start()

    def poll(self):
        while not self.stop.wait(0.2):
            used = gpu_used_mib()
            if used is not None:
                self.top = max(self.top, used)

    def peak(self):
        if not self.thread:
            return None
        self.stop.set()
        self.thread.join()
        return self.top - self.base


def measured(cmd, gpu=False):
    """Run cmd; return (stdout, wall seconds, peak RSS MiB of that process alone, via wait4,
    peak GPU MiB or None)."""
    with tempfile.TemporaryFile(mode="w+") as out, tempfile.TemporaryFile(mode="w+") as err:
        gpu_peak = GpuPeak(gpu)
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        p.returncode = code  # reaped by wait4 already
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        gpu_mib = gpu_peak.peak()
    if code != 0:
        raise SystemExit(f"{cmd[0]} failed ({code}):\n{stderr[-4000:]}")
    return stdout, wall, usage.ru_maxrss / 1024, gpu_mib


def make_model(cbqa, work, preset):
    """A `preset`-shaped model with a tokenizer trained on NQ-open questions."""
    data = os.path.join(ROOT, "eval", "demo", "nq-open-200.jsonl")
    tok_dir = os.path.join(work, "tok")
    sh([cbqa, "init", "--out", tok_dir, "--train-tokenizer", data, "--vocab-size", "2048"])
    model = os.path.join(work, "model")
    sh([cbqa, "init", "--out", model, "--preset", preset, "--tokenizer",
        os.path.join(tok_dir, "tokenizer.json")])
    return model


def make_data(model, path, n, in_len, out_len, seed=0):
    """n examples whose question is exactly in_len tokens and answer out_len tokens (+ </s>)."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
    words = [t[1:] for t, i in tok.get_vocab().items() if t.startswith("\u2581") and t[1:].isalpha() and i > 2]
    single = [w for w in words if len(tok.encode(w, add_special_tokens=False).ids) == 1]
    rng = random.Random(seed)

    def text(k):
        while True:
            s = " ".join(rng.choice(single) for _ in range(k))
            if len(tok.encode(s, add_special_tokens=False).ids) == k:
                return s

    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(json.dumps({"question": text(in_len), "answer": [text(out_len)]}) + "\n")


def run_cbqa(cbqa, model, data, work, args, tag):
    out = os.path.join(work, f"run-{tag}")
    per_example = args.in_len + args.out_len + 2
    cmd = [cbqa, "train", "--model", model, "--train", data, "--out", out, "--device", args.device,
           "--precision", args.precision,
           "--max-steps", str(args.steps), "--batch-tokens", str(args.batch * per_example),
           "--micro-batch-tokens", str(args.batch * per_example), "--threads", str(args.threads),
           "--optimizer", "adafactor", "--lr", "1e-3", "--dropout", "0.1", "--log-every", "1000"]
    _, wall, peak, gpu = measured(cmd, args.device != "cpu")
    with open(os.path.join(out, "train_log.csv")) as f:
        rows = list(csv.DictReader(f))
    tps = [float(r["tokens_per_s"]) for r in rows[args.warmup:]]
    return {"tokens_per_s": statistics.median(tps), "wall_s": wall, "peak_rss_mib": peak, "peak_gpu_mib": gpu}


PY_SIDE = r"""
import json, os, statistics, sys, time, torch
from transformers import T5ForConditionalGeneration
from transformers.optimization import Adafactor
from tokenizers import Tokenizer
model_dir, data, threads, batch, steps, warmup, seed, device, precision = sys.argv[1:10]
threads, batch, steps, warmup, seed = int(threads), int(batch), int(steps), int(warmup), int(seed)
torch.set_num_threads(threads)
torch.manual_seed(seed)
tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
rows = [json.loads(l) for l in open(data, encoding="utf-8")]
enc = lambda s: tok.encode(s, add_special_tokens=False).ids + [1]
qs = [enc(r["question"]) for r in rows]
ans = [enc(r["answer"][0]) for r in rows]
model = T5ForConditionalGeneration.from_pretrained(model_dir).to(device)
model.config.dropout_rate = 0.1
autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16")
sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
model.train()
opt = Adafactor(model.parameters(), lr=1e-3, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8,
                beta1=None, weight_decay=0.0, relative_step=False, scale_parameter=False, warmup_init=False)
order = list(range(len(rows)))
tps = []
for step in range(steps):
    idx = [order[(step * batch + k) % len(order)] for k in range(batch)]
    t0 = time.perf_counter()
    ids = torch.tensor([qs[i] for i in idx]).to(device)
    labels = torch.tensor([ans[i] for i in idx]).to(device)
    mask = torch.ones_like(ids)
    opt.zero_grad(set_to_none=False)
    with autocast:
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    if not torch.isfinite(loss):
        raise SystemExit("non-finite loss")
    loss.backward()
    opt.step()
    sync()
    dt = time.perf_counter() - t0
    tps.append((ids.numel() + labels.numel()) / dt)
print(json.dumps({"tokens_per_s": statistics.median(tps[warmup:])}))
"""


def run_transformers(model, data, args):
    stdout, wall, peak, gpu = measured([sys.executable, "-c", PY_SIDE, model, data, str(args.threads),
                                        str(args.batch), str(args.steps), str(args.warmup), "0",
                                        args.device, args.precision], args.device != "cpu")
    res = json.loads(stdout.strip().splitlines()[-1])
    res["wall_s"] = wall
    res["peak_rss_mib"] = peak
    res["peak_gpu_mib"] = gpu
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "cbqa"))
    ap.add_argument("--preset", default="t5-small")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--in-len", type=int, default=16)
    ap.add_argument("--out-len", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (both sides)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--csv", default=os.path.join(ROOT, "runs", "bench-train", "train_speed.csv"))
    args = ap.parse_args()
    if not os.path.exists(args.bin):
        raise SystemExit(f"{args.bin} not found: build it with `cargo build` (or pass --bin)")
    with tempfile.TemporaryDirectory() as work:
        model = make_model(args.bin, work, args.preset)
        data = os.path.join(work, "data.jsonl")
        make_data(model, data, max(args.batch * args.steps, 64), args.in_len, args.out_len)
        results = {"cbqa": [], "transformers": []}
        for r in range(args.rounds):
            results["transformers"].append(run_transformers(model, data, args))
            results["cbqa"].append(run_cbqa(args.bin, model, data, work, args, r))
            print(f"round {r + 1}: transformers {results['transformers'][-1]['tokens_per_s']:.0f} tok/s, "
                  f"cbqa {results['cbqa'][-1]['tokens_per_s']:.0f} tok/s", flush=True)
    med = {k: statistics.median(x["tokens_per_s"] for x in v) for k, v in results.items()}
    mem = {k: max(x["peak_rss_mib"] for x in v) for k, v in results.items()}
    gpu = {k: max((x["peak_gpu_mib"] for x in v if x["peak_gpu_mib"] is not None), default=None)
           for k, v in results.items()}
    ratio = med["cbqa"] / med["transformers"]
    setting = (f"{args.preset}, batch {args.batch} x ({args.in_len}+1 in, {args.out_len}+1 out) tokens, "
               f"AdaFactor, dropout 0.1, {args.threads} threads, {args.steps} steps ({args.warmup} warm-up), "
               f"{args.rounds} rounds, {args.device} {args.precision}")
    print(f"\n{setting}")
    print(f"{'system':<14}{'tokens/s':>10}{'peak RSS MiB':>14}")
    for k in ("transformers", "cbqa"):
        print(f"{k:<14}{med[k]:>10.0f}{mem[k]:>14.0f}")
    print(f"ratio cbqa / transformers: {ratio:.3f}")
    os.makedirs(os.path.dirname(args.csv), exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["system", "tokens_per_s", "peak_rss_mib", "peak_gpu_mib", "ratio_vs_transformers", "setting"])
        for k in ("transformers", "cbqa"):
            g = "" if gpu[k] is None else f"{gpu[k]:.0f}"
            w.writerow([k, f"{med[k]:.1f}", f"{mem[k]:.0f}", g, f"{med[k] / med['transformers']:.3f}", setting])
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
