"""Evaluate an ONNX export on Ray: ``python -m cbqa.ray_eval --model DIR --data FILE --out DIR``.

The questions are planned into the batches ``cbqa eval`` would run (``cbqa.plan_batches``) and
read as a Ray Dataset with one row per batch; a pool of actors, each holding one
``cbqa.Answerer``, answers them (``map_batches``). Each batch goes whole to one actor, so every
answer is computed exactly as in a single ``cbqa eval`` process, and predictions.csv is
byte-identical to its. A worker that dies is restarted and its batch retried (``max_restarts``,
``max_task_retries``); the driver checks that every question came back exactly once before it
writes predictions.csv (input order) and the metrics.csv row (``cbqa.write_eval``).

Without ``--address`` a local Ray cluster is started on 127.0.0.1 with one CPU per worker;
``--address auto`` (or ``HOST:PORT``) joins a running cluster (``ray start --head``).
"""

import argparse
import json
import os
import resource
import sys
import time

import cbqa


class AnswerActor:
    """A Ray Data map worker: one ``cbqa.Answerer``, called with one planned batch per row."""

    def __init__(self, model, backend, device, threads, settings):
        self.answerer = cbqa.Answerer(
            model, backend, device=device, threads=threads, **settings
        )

    def answer(self, questions):
        """Answers of one batch, errors returned (not raised) as ``cbqa eval`` records them."""
        return self.answerer.answer(questions, errors="return")

    def __call__(self, batch):
        import pyarrow as pa

        cols = {k: [] for k in ("index", "text", "score", "candidates", "truncated", "error")}
        for indices, questions in zip(batch["index"], batch["question"]):
            answers = self.answer([str(q) for q in questions])
            for i, a in zip(indices, answers):
                cols["index"].append(int(i))
                cols["text"].append(a.text)
                cols["score"].append(float(a.score))
                cols["candidates"].append(
                    json.dumps([[c.text, float(c.score)] for c in a.candidates])
                )
                cols["truncated"].append(bool(a.truncated))
                cols["error"].append(a.error)
        n = len(cols["index"])
        # Linux reports ru_maxrss in KiB.
        cols["peak_rss_mb"] = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024] * n
        types = {"score": pa.float64(), "error": pa.string()}
        return pa.table({k: pa.array(v, type=types.get(k)) for k, v in cols.items()})


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m cbqa.ray_eval", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="the ONNX export (cbqa export's or optimum's)")
    p.add_argument("--data", required=True, help="the benchmark file")
    p.add_argument("--out", required=True, help="directory for predictions.csv and metrics.csv")
    p.add_argument("--limit", type=int, help="only the first N questions")
    p.add_argument("--normalizer", choices=["squad", "trivia_qa"], help="default: the benchmark's")
    p.add_argument("--split", help="the split column of metrics.csv (default: the file name)")
    p.add_argument("--workers", type=int, default=2, help="actors, each holding one Answerer")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--address", help="a running Ray cluster (auto, HOST:PORT); default: local")
    p.add_argument("--backend", choices=["ort", "tract"], default="ort")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads per worker (0: auto)")
    p.add_argument("--beams", type=int)
    p.add_argument("--candidates", type=int)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--length-penalty", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--batch-tokens", type=int)
    p.add_argument("--prefix")
    p.add_argument("--max-input-tokens", type=int)
    p.add_argument("--max-retries", type=int, default=3, help="restarts of a dead worker")
    return p.parse_args(argv)


# As `cbqa eval`: batches per journal chunk and the default --batch-size, from the library itself
# (cbqa::eval::journal::CHUNK_BATCHES, BatchPolicy::default()); tests/test_ray.py checks the
# predictions stay identical.
CHUNK_BATCHES = cbqa._native.EVAL_CHUNK_BATCHES
DEFAULT_BATCH_SIZE = cbqa._native.DEFAULT_BATCH_SIZE

def answerer_settings(args):
    """The Answerer keywords the command line set (the rest keep the library's defaults)."""
    names = ["beams", "candidates", "max_new_tokens", "length_penalty", "batch_size",
             "batch_tokens", "prefix", "max_input_tokens"]
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def planned_batches(args, questions):
    """The batches ``cbqa eval`` would run; questions that do not encode get one of their own
    (the actor returns their error)."""
    s = answerer_settings(args)
    plan_keys = ("batch_size", "batch_tokens", "prefix", "max_input_tokens", "beams")
    keys = {k: s[k] for k in plan_keys if k in s}
    # `cbqa eval` answers (and journals) its questions in chunks of CHUNK_BATCHES batches, in input
    # order, and plans the batches inside each chunk; the same chunks here give the same batches.
    chunk = s.get("batch_size", DEFAULT_BATCH_SIZE) * CHUNK_BATCHES
    batches = []
    for start in range(0, len(questions), chunk):
        part = cbqa.plan_batches(args.model, questions[start:start + chunk], **keys)
        batches += [[start + i for i in b] for b in part]
    planned = {i for b in batches for i in b}
    batches += [[i] for i in range(len(questions)) if i not in planned]
    return batches


def start_ray(args):
    import ray

    if ray.is_initialized():
        return
    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        ray.init(
            num_cpus=max(1, int(args.workers * args.cpus_per_worker + 0.999)),
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
        )


def answer_on_ray(args, questions, batches, actor_cls=AnswerActor):
    """Every question's answer row, in input order; checks each came back exactly once."""
    import ray

    rows = [{"index": b, "question": [questions[i] for i in b]} for b in batches]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    answered = ds.map_batches(
        actor_cls,
        fn_constructor_kwargs=dict(
            model=os.path.abspath(args.model),
            backend=args.backend,
            device=args.device,
            threads=args.threads,
            settings=answerer_settings(args),
        ),
        batch_size=None,
        compute=ray.data.ActorPoolStrategy(size=args.workers),
        num_cpus=args.cpus_per_worker,
        max_restarts=args.max_retries,
        max_task_retries=args.max_retries,
    )
    out = answered.take_all()
    seen = sorted(r["index"] for r in out)
    if seen != list(range(len(questions))):
        missing = sorted(set(range(len(questions))) - set(seen))
        dups = sorted({i for i in seen if seen.count(i) > 1})
        raise cbqa.CbqaError(
            f"Ray returned {len(seen)} answers for {len(questions)} questions "
            f"(missing {missing[:5]}, duplicated {dups[:5]})"
        )
    return sorted(out, key=lambda r: r["index"])


def to_answer(row):
    """A ``cbqa.Answer`` from an actor's output row."""
    cands = [cbqa.Candidate(t, s) for t, s in json.loads(row["candidates"])]
    return cbqa.Answer(row["text"], row["score"], cands, row["truncated"], row["error"])


def run(args, actor_cls=AnswerActor):
    """Evaluate as ``cbqa eval`` does, answering on Ray; returns the metrics.csv row."""
    examples = cbqa.read_dataset(args.data)
    if args.limit is not None:
        examples = examples[: args.limit]
    questions = [e.question for e in examples]
    start_ray(args)
    start = time.perf_counter()
    rows = answer_on_ray(args, questions, planned_batches(args, questions), actor_cls)
    wall = time.perf_counter() - start
    s = answerer_settings(args)
    row = cbqa.write_eval(
        args.out,
        args.data,
        [to_answer(r) for r in rows],
        model=args.model,
        backend=args.backend,
        device=args.device,
        threads=args.threads,
        beams=s.get("beams"),
        batch_size=s.get("batch_size"),
        batch_tokens=s.get("batch_tokens"),
        limit=args.limit,
        normalizer=args.normalizer,
        split=args.split,
        wall_s=wall,
        peak_rss_mb=max(r["peak_rss_mb"] for r in rows),
    )
    return dict(row)


def main(argv=None):
    args = parse_args(argv)
    row = run(args)
    recall = "  ".join(f"{k} {float(v):.2f}" for k, v in row.items() if k.startswith("recall@"))
    print(
        f"n {row['n']}  EM {float(row['em']):.2f}  F1 {float(row['f1']):.2f}  {recall}  "
        f"({row['normalizer']} normalisation) on {args.workers} Ray workers in "
        f"{float(row['wall_s']):.1f}s; wrote {args.out}/predictions.csv and metrics.csv"
    )
    if int(row["errors"]) > 0:
        print(f"warning: {row['errors']} question(s) could not be answered", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
