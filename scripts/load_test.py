#!/usr/bin/env python3
"""Load test of `cbqa serve` beside offline `cbqa eval` and `cbqa predict`, in one run.

Loopback only, bounded in count and time: the server is started here on 127.0.0.1 on a free port,
each scenario runs N client threads for T seconds (each client sends one question per request and
waits for the answer before the next; a 429 is retried after its Retry-After), after a warm-up of
the same load (so RSS before is the steady state's), then the server is stopped with SIGTERM. Offline, the same questions, model, threads and decoding are answered by
`cbqa eval` (batch 32, and batch 1 for the one-question latency), and one question by
`cbqa predict` (a whole process: load + answer).

    scripts/load_test.py --bin target/release/cbqa --model runs/bench-t5-small/onnx \\
        --data ../shared/data/nq-open/NQ-open.dev.jsonl --out eval/results/serve-t5-small

writes OUT.csv (one row per scenario) and OUT.md (the table and the targets of issue 16). The
64-client scenario runs twice: with the server's default batching (continuous, for cbqa's own
exports) and with `--batching dynamic`, for the comparison.
"""

import argparse
import csv
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time


def read_questions(path, n):
    qs = []
    with open(path) as f:
        for line in f:
            if line.strip():
                qs.append(json.loads(line)["question"])
            if len(qs) == n:
                break
    return qs


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Server:
    def __init__(self, args, extra):
        cmd = [args.bin, "serve", "--model", args.model, "--port", "0", *engine(args),
               "--max-new-tokens", str(args.max_new_tokens)] + extra
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on http://"):
            self.proc.kill()
            self.proc.wait()
            self.log.seek(0)
            sys.exit(f"cbqa serve did not start: {line!r}\n{' '.join(cmd)}\n{self.log.read()}")
        host, port = line.strip().removeprefix("listening on http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        conn.request("GET", "/v1/model")
        self.batching = json.loads(conn.getresponse().read())["defaults"]["batching"]
        conn.close()

    def histogram_means(self, *names):
        """The mean of each `/metrics` histogram in `names` (whole run; None where absent)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
        means = []
        for n in names:
            count = float(values.get(f"{n}_count", 0))
            means.append(round(float(values[f"{n}_sum"]) / count, 2) if count else None)
        return means

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def client(server, questions, offset, stop_at, out):
    """One client: a keep-alive connection, one question per request until `stop_at`."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
    i = offset
    while time.monotonic() < stop_at:
        body = json.dumps({"question": questions[i % len(questions)]})
        t0 = time.monotonic()
        try:
            conn.request("POST", "/v1/answer", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            status = r.status
            retry_after = float(r.getheader("Retry-After") or 1)
        except (OSError, http.client.HTTPException):
            status = -1
            conn.close()
            conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
        out.append((status, time.monotonic() - t0))
        if status == 429:
            time.sleep(min(retry_after, stop_at - time.monotonic(), 5.0))
        else:
            i += 1
    conn.close()


def run_clients(server, questions, clients, seconds):
    """`clients` threads for `seconds`: each one's (status, latency) list."""
    results = [[] for _ in range(clients)]
    stop_at = time.monotonic() + seconds
    threads = [threading.Thread(target=client, args=(server, questions, k * 7, stop_at, results[k]))
               for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def scenario(args, name, clients, max_queue, questions, extra=()):
    # one question per request: a request limit the queue can hold
    limits = ["--max-queue", str(max_queue), "--max-questions", str(min(max_queue, 64))]
    server = Server(args, [*limits, *extra])
    run_clients(server, questions, clients, args.warmup)
    rss_before = rss_mb(server.proc.pid)
    server_cpu, client_cpu = cpu_seconds(server.proc.pid), sum(os.times()[:2])
    t0 = time.monotonic()
    results = run_clients(server, questions, clients, args.seconds)
    wall = time.monotonic() - t0
    server_cpu = cpu_seconds(server.proc.pid) - server_cpu
    client_cpu = sum(os.times()[:2]) - client_cpu
    rss_after = rss_mb(server.proc.pid)
    # Warm-up included: the questions per decoder step and per join (an encoder call and a first
    # step of its own, so small joins cost throughput).
    mean_batch, mean_join = server.histogram_means("cbqa_batch_size", "cbqa_join_size")
    code = server.stop()
    flat = [r for rs in results for r in rs]
    ok = [lat for st, lat in flat if st == 200]
    count = lambda s: sum(1 for st, _ in flat if st == s)
    return {
        "scenario": name, "batching": server.batching, "clients": clients, "max_queue": max_queue,
        "seconds": round(wall, 2), "server_cpu_s": round(server_cpu, 2),
        "client_cpu_s": round(client_cpu, 2),
        "requests": len(flat), "answered": len(ok), "questions_per_s": round(len(ok) / wall, 2),
        "p50_ms": round(percentile(ok, 50) * 1000, 1), "p95_ms": round(percentile(ok, 95) * 1000, 1),
        "p99_ms": round(percentile(ok, 99) * 1000, 1), "status_429": count(429), "status_504": count(504),
        "other_errors": len(flat) - len(ok) - count(429) - count(504),
        "rss_before_mb": round(rss_before, 1), "rss_after_mb": round(rss_after, 1), "exit_code": code,
        "mean_running_batch": mean_batch, "mean_join": mean_join,
    }


cpu_per_question = {}


def offline_eval(args, batch_size, limit, serial=False):
    """`cbqa eval` on the first `limit` questions: its questions per second (the CPU seconds it
    took per question go to `cpu_per_question[batch_size]`). By default `cbqa eval` decodes as many
    batches at once as it has threads; `serial` decodes one at a time on all of them, so that
    1 / (questions per second) is the latency of one batch (the batch-1 baseline; tract runs a
    batch on one thread, so its baseline is `--threads 1`)."""
    with tempfile.TemporaryDirectory() as out:
        before = sum(os.times()[2:4])
        flags = engine(args)
        if serial and args.backend == "tract":
            flags = ["--backend", "tract", "--threads", "1"]
        elif serial:
            flags.append("--serial-batches")
        cmd = [args.bin, "eval", "--model", args.model, "--data", args.data, "--limit", str(limit),
               *flags, "--max-new-tokens", str(args.max_new_tokens),
               "--batch-size", str(batch_size), "--out", os.path.join(out, "eval")]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu_per_question[batch_size] = (sum(os.times()[2:4]) - before) / limit
        with open(os.path.join(out, "eval", "metrics.csv")) as f:
            return float(list(csv.DictReader(f))[-1]["questions_per_s"])


def engine(args):
    """The backend and thread flags every cbqa command of the run gets."""
    return ["--backend", args.backend, "--threads", str(args.threads)]


def predict_seconds(args, question):
    cmd = [args.bin, "predict", "--model", args.model, *engine(args),
           "--max-new-tokens", str(args.max_new_tokens), question]
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def write_report(args, rows, offline):
    with open(args.out + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    by = {r["scenario"]: r for r in rows}
    lines = [
        f"# `cbqa serve` load test ({args.label})", "",
        f"Model `{args.model}`, backend {args.backend}, {args.threads} threads, greedy, `--max-new-tokens {args.max_new_tokens}`, "
        f"{args.questions} NQ-open dev questions, {args.seconds:g} s per scenario after {args.warmup:g} s of warm-up, one question per request, "
        f"loopback. Written by `scripts/load_test.py`.", "",
        "| scenario | batching | clients | --max-queue | q/s | p50 ms | p95 ms | p99 ms | 429 | 504 | other errors | RSS before → after MB | CPU s: server / clients | mean running batch / join |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['batching']} | {r['clients']} | {r['max_queue']} | {r['questions_per_s']} | {r['p50_ms']} | "
                     f"{r['p95_ms']} | {r['p99_ms']} | {r['status_429']} | {r['status_504']} | {r['other_errors']} | "
                     f"{r['rss_before_mb']} → {r['rss_after_mb']} | {r['server_cpu_s']} / {r['client_cpu_s']} | "
                     f"{r['mean_running_batch']} / {r['mean_join']} |")
    lines += ["", "Offline, same questions, model, threads and decoding:", "",
              f"- `cbqa eval` batch 32 (its default: as many batches at once as threads): {offline['eval_qps']:.2f} q/s (mean of {offline['eval_qps_before']:.2f} "
              f"before the scenarios and {offline['eval_qps_after']:.2f} after)",
              f"- `cbqa eval` batch 1, {'`--threads 1` (tract decodes a batch on one thread)' if args.backend == 'tract' else '`--serial-batches`'}: {offline['eval1_qps']:.2f} q/s = {1000 / offline['eval1_qps']:.1f} ms a question",
              f"- `cbqa predict` of one question (a whole process, model load included): {offline['predict_s'] * 1000:.0f} ms",
              "", "Targets of issue 16:", ""]
    many, one, over = by.get("64 clients"), by.get("1 client"), by.get("4x overload")
    checks = []
    if many:
        ratio = many["questions_per_s"] / offline["eval_qps"]
        checks.append(f"64 clients: {ratio:.2f}x offline batch throughput (target >= 0.8): {'met' if ratio >= 0.8 else 'NOT met'}")
        checks.append(f"64 clients below the queue limit: {many['requests'] - many['answered']} errors (target 0)")
    if one:
        r = one["p50_ms"] / (1000 / offline["eval1_qps"])
        checks.append(f"1 client: p50 {one['p50_ms']} ms = {r:.2f}x the in-process one-question time "
                      f"(target <= 1.2: {'met' if r <= 1.2 else 'NOT met'}); "
                      f"{one['p50_ms'] / (offline['predict_s'] * 1000):.2f}x `cbqa predict` of one question")
    if over:
        growth = over["rss_after_mb"] / over["rss_before_mb"] - 1
        checks.append(f"4x overload: {over['status_429']} 429s, {over['status_504']} timeouts (target 0), "
                      f"{over['other_errors']} other errors, RSS {growth * 100:+.1f}% (target within 10%)")
    dynamic = by.get("64 clients, dynamic batching")
    if many and dynamic:
        checks.append(f"64 clients, {many['batching']} batching against dynamic batching in the same run: "
                      f"{many['questions_per_s'] / dynamic['questions_per_s']:.2f}x the throughput, "
                      f"p50 {many['p50_ms']} against {dynamic['p50_ms']} ms")
    if many and 32 in cpu_per_question:
        served = many["server_cpu_s"] / max(1, many["answered"])
        checks.append(f"64 clients: the server spent {served * 1000:.1f} CPU ms per question, offline "
                      f"`cbqa eval` {cpu_per_question[32] * 1000:.1f} (its whole process, model load "
                      f"included); the clients took {many['client_cpu_s']} CPU s of the same 2 cores")
    lines += [f"- {c}" for c in checks]
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def add_run_args(ap, seconds):
    """The flags of a load-test run: binary, model, questions, threads, decoding, durations
    (also used by scripts/load_test_rounds.py)."""
    ap.add_argument("--bin", default="target/release/cbqa")
    ap.add_argument("--model", default="runs/bench-t5-small/onnx")
    ap.add_argument("--data", default="../shared/data/nq-open/NQ-open.dev.jsonl")
    ap.add_argument("--questions", type=int, default=256)
    ap.add_argument("--backend", choices=["ort", "tract"], default="ort")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=seconds)
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of the same load before each scenario")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap, seconds=15.0)
    ap.add_argument("--max-queue", type=int, default=64, help="the queue of the overload scenario")
    ap.add_argument("--label", default="t5-small shapes, random weights")
    ap.add_argument("--out", default="eval/results/serve-t5-small")
    args = ap.parse_args()
    if args.seconds <= 0 or args.seconds > 300:
        sys.exit("--seconds: between 0 and 300")
    questions = read_questions(args.data, args.questions)
    offline = {
        "eval_qps": offline_eval(args, 32, len(questions)),
        "eval1_qps": offline_eval(args, 1, min(64, len(questions)), serial=True),
        "predict_s": predict_seconds(args, questions[0]),
    }
    rows = [
        scenario(args, "1 client", 1, 256, questions),
        scenario(args, "64 clients", 64, 256, questions),
        scenario(args, "4x overload", 4 * args.max_queue, args.max_queue, questions),
        scenario(args, "64 clients, dynamic batching", 64, 256, questions, ["--batching", "dynamic"]),
    ]
    # the machine may be shared: offline throughput again after the scenarios; the mean is compared
    offline["eval_qps_after"] = offline_eval(args, 32, len(questions))
    offline["eval_qps_before"] = offline["eval_qps"]
    offline["eval_qps"] = (offline["eval_qps_before"] + offline["eval_qps_after"]) / 2
    write_report(args, rows, offline)


if __name__ == "__main__":
    main()
