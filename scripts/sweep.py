#!/usr/bin/env python3
"""How cost grows as work grows (issue 17, item 3): `cbqa bench` over a grid of batch size,
question length, answer length, model shape and engine, on synthetic questions of exact lengths
and random weights, each configuration in its own `cbqa bench` call with a bounded number of
questions. Writes OUT/sweep.csv (one row per configuration: the bench columns plus the grid's),
OUT/sweep.md (tables of questions/s and ms per generated token) and three SVG plots:

  OUT/qps_by_batch.svg        questions/s against batch size (question 32, answer 16 tokens)
  OUT/ms_by_answer.svg        ms per generated token against answer length (batch 32, question 32)
  OUT/ms_by_question.svg      ms per generated token against question length (batch 32, answer 16)

  scripts/sweep.py [--out eval/results/sweep] [--models small,base] [--engines ort,ort-int8,tract]
  scripts/sweep.py --quick --model-dir ONNX_DIR --out DIR     (one tiny grid, for the test suite)

Models: t5-small and t5-base shapes with random weights, made once under runs/sweep/ with
`cbqa init` and exported fp32 and int8 with `cbqa export`. Uses the inference-only release binary
(`--bin`, built by scripts/bench.sh). Each bench call gets `--questions max(16, 2 x batch)` so a
configuration takes seconds, not minutes; the grid's full run is ~30-40 min on 2 cores.
"""

import argparse
import csv
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
FULL = {
    "batch_sizes": [1, 8, 32, 128],
    "question_lengths": [8, 32, 128],
    "answer_lengths": [4, 16, 64],
}
QUICK = {"batch_sizes": [1, 4], "question_lengths": [8, 16], "answer_lengths": [2, 4]}
# The three cuts the plots draw: the varied axis, and the other two fixed.
CUTS = [
    ("qps_by_batch", "batch_size", "questions_per_s", {"question_tokens": 32, "answer_tokens": 16}),
    ("ms_by_answer", "answer_tokens", "ms_per_token", {"batch_size": 32, "question_tokens": 32}),
    ("ms_by_question", "question_tokens", "ms_per_token", {"batch_size": 32, "answer_tokens": 16}),
]


def run(cmd):
    """Run a command, failing with its stderr."""
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"sweep.py: {' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stderr}")
    return p.stdout


def make_models(bin_path, names):
    """The exports of each model shape: {name: {"fp32": dir, "int8": dir}}, made once."""
    base = ROOT / "runs" / "sweep"
    tok = base / "tok"
    if not (tok / "tokenizer.json").exists():
        run([bin_path, "init", "--out", tok, "--preset", "tiny", "--train-tokenizer",
             ROOT / "eval" / "demo" / "nq-open-200.jsonl", "--vocab-size", "2000", "--force"])
    out = {}
    for name in names:
        model = base / name / "model"
        if not (model / "model.safetensors").exists():
            run([bin_path, "init", "--out", model, "--preset", f"t5-{name}",
                 "--tokenizer", tok / "tokenizer.json", "--force"])
        dirs = {}
        for precision, extra in (("fp32", []), ("int8", ["--quantize", "int8"])):
            d = base / name / f"onnx-{precision}"
            if not (d / "cbqa_export.json").exists():
                run([bin_path, "export", "--model", model, "--out", d, "--force", *extra])
            dirs[precision] = d
        out[name] = dirs
    return out


def engines_of(names):
    """(label, backend, precision) of each engine asked for."""
    known = {"ort": ("ort", "fp32"), "ort-int8": ("ort", "int8"), "tract": ("tract", "fp32")}
    bad = [n for n in names if n not in known]
    if bad:
        sys.exit(f"sweep.py: unknown engine(s) {bad}; expected some of {sorted(known)}")
    return [(n, *known[n]) for n in names]


def bench_one(bin_path, onnx_dir, backend, batch, qlen, alen, threads, work):
    """One `cbqa bench` configuration; its bench.csv row."""
    out = work / f"{backend}-{onnx_dir.name}-b{batch}-q{qlen}-a{alen}"
    if out.exists():
        for f in out.iterdir():
            f.unlink()
    questions = max(16, 2 * batch)
    run([bin_path, "bench", "--model", onnx_dir, "--backends", backend, "--batch-sizes", batch,
         "--threads", threads, "--questions", questions, "--min-tokens", qlen, "--max-tokens", qlen,
         "--force-steps", alen, "--out", out])
    with open(out / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != 1:
        sys.exit(f"sweep.py: {out}/bench.csv has {len(rows)} rows, expected 1")
    return rows[0]


def sweep(args, models, grid):
    """Every configuration of the grid; the rows of sweep.csv."""
    work = pathlib.Path(args.out) / "runs"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for model_name, dirs in models.items():
        for label, backend, precision in engines_of(args.engines.split(",")):
            for qlen in grid["question_lengths"]:
                for alen in grid["answer_lengths"]:
                    for batch in grid["batch_sizes"]:
                        r = bench_one(args.bin, dirs[precision], backend, batch, qlen, alen,
                                      args.threads, work)
                        ms = 1000 * float(r["wall_s"]) / max(1, int(r["generated_tokens"]))
                        r.update(model_shape=model_name, engine_label=label,
                                 question_tokens=qlen, answer_tokens=alen,
                                 ms_per_token=f"{ms:.4f}")
                        rows.append(r)
                        print(f"{model_name:>6} {label:<9} batch {batch:>4} question {qlen:>4} "
                              f"answer {alen:>3}: {float(r['questions_per_s']):8.2f} q/s "
                              f"{ms:8.3f} ms/token", flush=True)
    return rows


def write_csv(path, rows):
    cols = ["model_shape", "engine_label", "batch_size", "question_tokens", "answer_tokens",
            "questions_per_s", "ms_per_token"]
    cols += [c for c in rows[0] if c not in cols]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def series(rows, x, y, fixed):
    """{line label: [(x, y), ...]} for the rows matching `fixed`."""
    out = {}
    for r in rows:
        if all(int(r[k]) == v for k, v in fixed.items()):
            key = f"{r['model_shape']} {r['engine_label']}"
            out.setdefault(key, []).append((int(r[x]), float(r[y])))
    return {k: sorted(v) for k, v in out.items()}


def svg(lines, title, xlabel, ylabel):
    """A log-log line plot of `lines` as SVG text (stdlib only)."""
    import math
    w, h, m = 720, 440, 70
    pts = [p for v in lines.values() for p in v if p[0] > 0 and p[1] > 0]
    if not pts:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="80"><text x="10" y="40">{title}: no data</text></svg>\n'
    lx = [math.log2(p[0]) for p in pts]
    ly = [math.log10(p[1]) for p in pts]
    x0, x1 = min(lx), max(lx) if max(lx) > min(lx) else min(lx) + 1
    y0, y1 = math.floor(min(ly) * 2) / 2, math.ceil(max(ly) * 2) / 2
    y1 = y1 if y1 > y0 else y0 + 0.5
    px = lambda v: m + (math.log2(v) - x0) / (x1 - x0) * (w - 2 * m)
    py = lambda v: h - m - (math.log10(v) - y0) / (y1 - y0) * (h - 2 * m)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
         f'<rect width="{w}" height="{h}" fill="white"/>',
         f'<text x="{w / 2}" y="24" text-anchor="middle" font-size="14">{title}</text>',
         f'<text x="{w / 2}" y="{h - 20}" text-anchor="middle">{xlabel} (log scale)</text>',
         f'<text x="18" y="{h / 2}" transform="rotate(-90 18 {h / 2})" text-anchor="middle">{ylabel} (log scale)</text>']
    for xv in sorted({p[0] for p in pts}):
        s.append(f'<text x="{px(xv):.1f}" y="{h - m + 18}" text-anchor="middle">{xv}</text>')
    e = y0
    while e <= y1 + 1e-9:
        v = 10 ** e
        s.append(f'<line x1="{m}" x2="{w - m}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#ddd"/>')
        s.append(f'<text x="{m - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
        e += 0.5
    for i, (label, p) in enumerate(sorted(lines.items())):
        c = colors[i % len(colors)]
        path = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in p)
        s.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{path}"/>')
        s.append(f'<text x="{w - m + 4}" y="{m + 16 * i}" fill="{c}">{label}</text>')
    s.append("</svg>\n")
    return "\n".join(s)


GRID_KEYS = {"batch_size": "batch_sizes", "question_tokens": "question_lengths",
             "answer_tokens": "answer_lengths"}


def cut_at(fixed, grid):
    """The fixed values of a cut, moved to the grid's nearest values (a quick grid has others)."""
    return {k: min(grid[GRID_KEYS[k]], key=lambda g: abs(g - v)) for k, v in fixed.items()}


def write_report(out, rows, cpu, grid):
    md = [f"# Sweep: how cost grows (`scripts/sweep.py`)\n",
          f"CPU: {cpu}. Synthetic questions of exact lengths, random weights, greedy with forced "
          "steps (`cbqa bench --force-steps`), one `cbqa bench` call per configuration.\n"]
    for name, x, y, fixed in CUTS:
        fixed = cut_at(fixed, grid)
        lines = series(rows, x, y, fixed)
        label = "questions/s" if y == "questions_per_s" else "ms per generated token"
        what = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in fixed.items())
        (out / f"{name}.svg").write_text(svg(lines, f"{label} against {x.replace('_', ' ')} ({what})",
                                             x.replace("_", " "), label))
        xs = sorted({a for v in lines.values() for a, _ in v})
        md.append(f"\n## {label} against {x.replace('_', ' ')} ({what}) — `{name}.svg`\n")
        md.append("| engine | " + " | ".join(str(v) for v in xs) + " |")
        md.append("|---|" + "---|" * len(xs))
        for k, v in sorted(lines.items()):
            d = dict(v)
            md.append(f"| {k} | " + " | ".join(f"{d[a]:.3g}" if a in d else "-" for a in xs) + " |")
    (out / "sweep.md").write_text("\n".join(md) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(ROOT / "target" / "infer" / "release" / "cbqa"))
    ap.add_argument("--out", default=str(ROOT / "eval" / "results" / "sweep"))
    ap.add_argument("--models", default="small,base", help="model shapes: small, base")
    ap.add_argument("--engines", default="ort,ort-int8,tract")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a tiny grid on --model-dir (the test suite's)")
    ap.add_argument("--model-dir", help="with --quick: one export to sweep (fp32 and int8 alike)")
    args = ap.parse_args()
    if not pathlib.Path(args.bin).exists():
        sys.exit(f"sweep.py: {args.bin} not found: build it with scripts/bench.sh or pass --bin")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        if not args.model_dir:
            sys.exit("sweep.py: --quick needs --model-dir ONNX_DIR")
        d = pathlib.Path(args.model_dir)
        models, grid = {"given": {"fp32": d, "int8": d}}, QUICK
    else:
        models, grid = make_models(args.bin, args.models.split(",")), FULL
    rows = sweep(args, models, grid)
    write_csv(out / "sweep.csv", rows)
    write_report(out, rows, rows[0].get("cpu", "unknown CPU"), grid)
    print(f"wrote {out}/sweep.csv, sweep.md and the plots")


if __name__ == "__main__":
    main()
