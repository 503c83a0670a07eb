#!/usr/bin/env python3
"""Peer engines on cbqa's bench workload, rows appended to the same bench.csv.

Runs the token ids that `cbqa bench` wrote to OUT/questions.json through
  transformers   T5ForConditionalGeneration.generate (PyTorch eager), from the HF checkpoint
  optimum        optimum's ORTModelForSeq2SeqLM, from optimum's own ONNX export
  ct2-float32    CTranslate2 Translator, compute_type float32 (ct2-transformers-converter)
  ct2-int8       CTranslate2 Translator, compute_type int8
  ct2-float32-batches, ct2-int8-batches
                 the same with CTranslate2's inter_threads = --threads and intra_threads = 1:
                 --threads batches at once (submitted from as many Python threads), one thread
                 each, as cbqa's ONNX Runtime and tract backends run them by default
with every question forced to decode exactly --force-steps tokens (min = max new tokens), in
batches of the given sizes, each engine in its own process so its peak RSS is its own.
transformers also runs on a GPU (--device cuda, --dtype bf16: the model cast to bfloat16), as
scripts/gpu_check.sh does beside `cbqa bench --backends tch --device cuda`.

  .venv/bin/python scripts/bench_peers.py --checkpoint CKPT --optimum-onnx DIR --ct2 DIR \
      --out runs/bench --batch-sizes 32 --threads 2 --force-steps 8
"""
import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

COLUMNS = ["engine", "device", "precision", "batch_size", "threads", "questions", "generated_tokens",
           "wall_s", "questions_per_s", "tokens_per_s", "p50_ms", "p95_ms", "p99_ms", "encoder_s",
           "decoder_s", "peak_rss_mb", "roofline_s", "roofline_fraction"]


def quantile(xs, q):
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def append_rows(path, rows):
    header, old = [], []
    if os.path.exists(path):
        with open(path, newline="", encoding="utf-8") as f:
            r = csv.reader(f)
            header = next(r, [])
            old = list(r)
    for row in rows:
        for k in row:
            if k not in header:
                header.append(k)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".bench.csv.")
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for r in old:
            w.writerow(r + [""] * (len(header) - len(r)))
        for row in rows:
            w.writerow([row.get(h, "") for h in header])
    os.replace(tmp, path)


def batches(questions, bs):
    return [questions[i:i + bs] for i in range(0, len(questions), bs)]


def pad(batch, device="cpu"):
    import torch
    n = max(len(q) for q in batch)
    ids = torch.tensor([q + [0] * (n - len(q)) for q in batch], dtype=torch.long)
    mask = torch.tensor([[1] * len(q) + [0] * (n - len(q)) for q in batch], dtype=torch.long)
    return ids.to(device), mask.to(device)


def sync(device):
    """Wait for the GPU, so a batch's latency is its own."""
    if device != "cpu":
        import torch
        torch.cuda.synchronize()


def run_engine(args, questions, bs):
    """Returns (latencies_ms, generated_tokens, wall_s); runs in a child process."""
    steps = args.force_steps
    if args.engine in ("transformers", "optimum"):
        import torch
        torch.set_num_threads(args.threads)
        if args.engine == "transformers":
            from transformers import T5ForConditionalGeneration
            model = T5ForConditionalGeneration.from_pretrained(args.checkpoint).eval()
            model = model.to(args.device, dtype=torch.bfloat16 if args.dtype == "bf16" else torch.float32)
        else:
            import onnxruntime as ort
            from optimum.onnxruntime import ORTModelForSeq2SeqLM
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            so.inter_op_num_threads = 1
            model = ORTModelForSeq2SeqLM.from_pretrained(args.optimum_onnx, use_cache=True, session_options=so,
                                                         provider="CPUExecutionProvider")

        def gen(batch):
            ids, mask = pad(batch, args.device)
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps,
                                     min_new_tokens=steps, num_beams=1, do_sample=False)
            sync(args.device)
            return int((out.shape[1] - 1) * out.shape[0])
    else:
        import ctranslate2
        from transformers import PreTrainedTokenizerFast
        tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.checkpoint, "tokenizer.json"))
        compute = "int8" if args.engine.startswith("ct2-int8") else "float32"
        at_once = parallel_batches(args)
        tr = ctranslate2.Translator(args.ct2, device="cpu", compute_type=compute,
                                    intra_threads=args.threads // at_once, inter_threads=at_once)

        def gen(batch):
            src = [tok.convert_ids_to_tokens(q) for q in batch]
            res = tr.translate_batch(src, max_batch_size=len(batch), beam_size=1,
                                     max_decoding_length=steps, min_decoding_length=steps)
            return sum(len(r.hypotheses[0]) for r in res)

    bl = batches(questions, bs)
    gen(bl[0])  # warm-up

    def timed(b):
        t = time.perf_counter()
        n = gen(b)
        return (time.perf_counter() - t) * 1e3, n

    work = [b for _ in range(args.repeat) for b in bl]
    start = time.perf_counter()
    if parallel_batches(args) > 1:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(parallel_batches(args)) as ex:
            done = list(ex.map(timed, work))
    else:
        done = [timed(b) for b in work]
    wall = time.perf_counter() - start
    return [d[0] for d in done], sum(d[1] for d in done), wall


def parallel_batches(args):
    """Batches the engine runs at once: --threads for the `-batches` engines, else 1."""
    return max(1, args.threads) if args.engine.endswith("-batches") else 1


def roofline_bounds(out):
    """(precision, batch size, threads) -> the machine's bound per question (s) for the workload,
    from the roofline.json that `cbqa bench --roofline` wrote in the same run (empty if not)."""
    path = os.path.join(out, "roofline.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {(e["precision"], e["batch_size"], e["threads"]): e["roofline_s_per_question"]
                for e in json.load(f)}


def child(args):
    with open(os.path.join(args.out, "questions.json")) as f:
        questions = json.load(f)
    bounds = roofline_bounds(args.out)
    rows = []
    for bs in args.batch_sizes:
        lat, toks, wall = run_engine(args, questions, bs)
        n = len(questions) * args.repeat
        precision = "int8" if args.engine.startswith("ct2-int8") else args.dtype
        per_question = bounds.get((precision, bs, args.threads))
        bound = None if per_question is None else per_question * n
        rows.append({
            "engine": args.engine, "device": args.device, "precision": precision,
            "roofline_s": "" if bound is None else f"{bound:.4f}",
            "roofline_fraction": "" if bound is None else f"{bound / wall:.3f}",
            "batch_size": bs, "threads": args.threads, "questions": n, "generated_tokens": toks,
            "wall_s": f"{wall:.4f}", "questions_per_s": f"{n / wall:.3f}", "tokens_per_s": f"{toks / wall:.3f}",
            "p50_ms": f"{quantile(lat, 0.5):.3f}", "p95_ms": f"{quantile(lat, 0.95):.3f}",
            "p99_ms": f"{quantile(lat, 0.99):.3f}", "encoder_s": "", "decoder_s": "",
            "peak_rss_mb": f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}",
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "workload": f"{len(questions)} questions from questions.json, {args.force_steps} forced steps",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        print(f"{args.engine} batch {bs} threads {args.threads}: {n / wall:.1f} q/s", file=sys.stderr)
    print(json.dumps(rows))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="HF checkpoint dir (transformers, tokenizer)")
    ap.add_argument("--optimum-onnx", help="optimum's ONNX export of the checkpoint")
    ap.add_argument("--ct2", help="ct2-transformers-converter output of the checkpoint")
    ap.add_argument("--engines", default="transformers,optimum,ct2-float32,ct2-int8,"
                    "ct2-float32-batches,ct2-int8-batches")
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--batch-sizes", default="32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--force-steps", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N (transformers only)")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="transformers' weights")
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.batch_sizes = [int(x) for x in str(args.batch_sizes).split(",")]
    if args.engine:
        return child(args)
    if (args.device != "cpu" or args.dtype != "fp32") and set(args.engines.split(",")) != {"transformers"}:
        sys.exit("--device and --dtype apply to --engines transformers only")
    if not os.path.exists(os.path.join(args.out, "questions.json")):
        sys.exit(f"{args.out}/questions.json not found: run `cbqa bench --out {args.out}` first")
    all_rows = []
    for engine in args.engines.split(","):
        need = args.ct2 if engine.startswith("ct2-") else {"optimum": args.optimum_onnx}.get(engine, "x")
        if not need:
            sys.exit(f"engine {engine} needs --optimum-onnx / --ct2")
        cmd = [sys.executable, os.path.abspath(__file__), "--engine", engine, "--checkpoint", args.checkpoint,
               "--out", args.out, "--batch-sizes", ",".join(map(str, args.batch_sizes)), "--threads",
               str(args.threads), "--force-steps", str(args.force_steps), "--repeat", str(args.repeat),
               "--device", args.device, "--dtype", args.dtype]
        if args.optimum_onnx:
            cmd += ["--optimum-onnx", args.optimum_onnx]
        if args.ct2:
            cmd += ["--ct2", args.ct2]
        env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(args.threads))
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            sys.exit(f"{engine} failed ({out.returncode}):\n{out.stderr[-4000:]}")
        all_rows += json.loads(out.stdout.strip().splitlines()[-1])
    append_rows(os.path.join(args.out, "bench.csv"), all_rows)
    for r in all_rows:
        print(f"{r['engine']:<14} batch {r['batch_size']:>4}: {float(r['questions_per_s']):8.1f} q/s  "
              f"{float(r['tokens_per_s']):9.1f} tok/s  p50 {float(r['p50_ms']):7.1f} ms  rss {r['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
