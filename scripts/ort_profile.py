#!/usr/bin/env python3
"""Where the time of a `cbqa bench` run goes, phase by phase, beside each phase's roofline
(issue 17: "where a target is missed, say which phase is short of its roofline and why").

Runs `cbqa bench --roofline --serial-batches` (one batch at a time on all threads, so the phases
add up to the wall time) twice on one export and one batch size: once plain (the wall times),
once with ONNX Runtime's per-node profile (`CBQA_ORT_PROFILE`). The export names its nodes after
their sub-layer (`/decoder/block.3/cross_kv/MatMul_node_812`; `export/graphs.rs`), so the profile's
kernel times sum into phases:

  encoder              every node of encoder_model.onnx
  cross-attention K/V  the decoder's keys/values of the encoder output (first step only)
  decoder steps        self-attention, cross-attention, feed-forward, biases and embedding
  LM head              the final norm and the vocabulary projection
  ONNX Runtime outside kernels   a session run's time that no kernel accounts for
  host                 the encoder's or decoder's bench time outside the session runs: inputs,
                       outputs, the search, row selection

Only the timed batches count (the bench's warm-up batch is left out). Each phase's seconds are
its profiled kernel time scaled by plain / profiled wall time of its session kind (encoder or
decoder), so profiling's own cost is taken out; `achieved` is the phase's roofline time over those
seconds. Writes OUT/phases.csv, OUT/phases.md (with the top operators of
each phase) and keeps both bench runs' files under OUT/plain and OUT/profiled.

  scripts/ort_profile.py --bin target/infer/release/cbqa --model runs/bench-t5-small/onnx \\
      --batch-size 32 --out runs/profile-b32 [--threads 2] [--force-steps 8] [--questions 64] \\
      [--data ../shared/data/nq-open/NQ-open.dev.jsonl]
"""

import argparse
import collections
import csv
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

# Sub-layer scope in a node name -> the finer phase it belongs to.
SCOPES = [
    ("/lm_head/", "LM head"),
    ("/cross_kv/", "cross-attention K/V"),
    ("/self_attention/", "self-attention"),
    ("/cross_attention/", "cross-attention"),
    ("/feed_forward/", "feed-forward"),
    ("/bias/", "biases and embedding"),
]
# Finer phase -> the roofline's phase (bench::roofline's names).
ROOFLINE_PHASE = {
    "encoder": "encoder",
    "cross-attention K/V": "cross-attention K/V",
    "self-attention": "decoder steps",
    "cross-attention": "decoder steps",
    "feed-forward": "decoder steps",
    "biases and embedding": "decoder steps",
    "decoder, other": "decoder steps",
    "LM head": "LM head",
}


def run_bench(a, out, profile_prefix=None):
    cmd = [a.bin, "bench", "--model", a.model, "--backends", "ort", "--batch-sizes",
           str(a.batch_size), "--threads", str(a.threads), "--force-steps", str(a.force_steps),
           "--questions", str(a.questions), "--roofline", "--serial-batches", "--out", out]
    if a.data:
        cmd += ["--data", a.data]
    env = dict(os.environ)
    env.pop("CBQA_ORT_PROFILE", None)
    if profile_prefix:
        env["CBQA_ORT_PROFILE"] = str(profile_prefix)
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"ort_profile.py: {' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stderr}")
    entries = json.loads((out / "roofline.json").read_text())
    if len(entries) != 1:
        sys.exit(f"ort_profile.py: {out / 'roofline.json'}: expected one entry, found {len(entries)}")
    return entries[0]


def session_of(path, prefix):
    """The graph a profile file belongs to: `encoder_model`, `decoder_model`, …"""
    stem = path.name[len(prefix.name) + 1:]
    return re.sub(r"_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}\.json$", "", stem)


def phase_of(node, session, previous):
    """The finer phase of a node (a fused node that lost its scope takes its predecessor's)."""
    if session.startswith("encoder"):
        return "encoder"
    for scope, phase in SCOPES:
        if scope in node:
            return phase
    return previous or "decoder, other"


def timed_runs(events, batches, path):
    """The events of the timed batches: `cbqa bench` runs one untimed warm-up batch first, and with
    forced steps every batch makes the same number of calls to each graph."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    if not runs or len(runs) % (batches + 1):
        sys.exit(f"ort_profile.py: {path}: {len(runs)} runs, not a multiple of the "
                 f"{batches} timed batches and one warm-up batch")
    first = runs[len(runs) // (batches + 1)]["ts"]
    return [e for e in events if e["ts"] >= first]


def kernel_times(prefix, batches):
    """{finer phase: s}, {finer phase: {op: s}}, {kind: kernel s}, {kind: session run s}, for the
    timed batches; kind is "encoder" or "decoder"."""
    files = sorted(prefix.parent.glob(prefix.name + "-*.json"))
    if not files:
        sys.exit(f"ort_profile.py: no ONNX Runtime profile written under {prefix}-*.json")
    by_phase = collections.Counter()
    by_op = collections.defaultdict(collections.Counter)
    kernel = collections.Counter()
    session_run = collections.Counter()
    for f in files:
        session = session_of(f, prefix)
        if "decoder" not in session and "encoder" not in session:
            continue  # the GEMM probe, the small state graphs (row selection, joining)
        kind = "encoder" if session.startswith("encoder") else "decoder"
        events = timed_runs(json.loads(f.read_text()), batches, f)
        session_run[kind] += sum(e["dur"] for e in events if e.get("name") == "model_run") / 1e6
        nodes = sorted((e for e in events
                        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")),
                       key=lambda e: e["ts"])
        phase = None
        for e in nodes:
            phase = phase_of(e["name"][: -len("_kernel_time")], session, phase)
            s = e["dur"] / 1e6
            by_phase[phase] += s
            by_op[phase][e.get("args", {}).get("op_name", "?")] += s
            kernel[kind] += s
    return by_phase, by_op, kernel, session_run


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, type=pathlib.Path, help="the cbqa binary")
    ap.add_argument("--model", required=True, type=pathlib.Path, help="a cbqa ONNX export")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--force-steps", type=int, default=8)
    ap.add_argument("--questions", type=int, default=64)
    ap.add_argument("--data", help="questions file (default: the bench's synthetic questions)")
    ap.add_argument("--out", required=True, type=pathlib.Path)
    a = ap.parse_args()
    for d in ("plain", "profiled"):
        shutil.rmtree(a.out / d, ignore_errors=True)
        (a.out / d).mkdir(parents=True)
    plain = run_bench(a, a.out / "plain")
    prefix = a.out / "profiled" / "ort"
    profiled = run_bench(a, a.out / "profiled", prefix)
    batches = -(-plain["questions"] // a.batch_size)
    by_phase, by_op, kernel, session_run = kernel_times(prefix, batches)

    roof = {p["phase"]: p["roofline_s"] for p in plain["phases"]}
    scale = {k: plain[k]["measured_s"] / profiled[k]["measured_s"] for k in ("encoder", "decoder")}
    rows = []
    for phase, s in sorted(by_phase.items(), key=lambda kv: -kv[1]):
        kind = "encoder" if phase == "encoder" else "decoder"
        rows.append({"phase": phase, "roofline_phase": ROOFLINE_PHASE[phase],
                     "seconds": s * scale[kind], "profiled_kernel_s": s,
                     "top_ops": ", ".join(f"{op} {100 * t / s:.0f}%"
                                          for op, t in by_op[phase].most_common(4))})
    for kind in ("encoder", "decoder"):
        # What no kernel accounts for: ONNX Runtime's own work inside its runs, and the bench's
        # time outside them (cbqa's side: inputs, outputs, the search, row selection).
        ort = (session_run[kind] - kernel[kind]) * scale[kind]
        host = (profiled[kind]["measured_s"] - session_run[kind]) * scale[kind]
        for name, s in ((f"ONNX Runtime outside kernels ({kind})", ort), (f"host ({kind})", host)):
            rows.append({"phase": name, "roofline_phase": "", "seconds": s,
                         "profiled_kernel_s": 0.0, "top_ops": ""})
    # The roofline's phases, measured: the finer phases summed.
    measured = collections.Counter()
    for r in rows:
        if r["roofline_phase"]:
            measured[r["roofline_phase"]] += r["seconds"]
    for r in rows:
        rp = r["roofline_phase"]
        r["roofline_s"] = roof.get(rp, "") if rp else ""
        r["achieved"] = roof[rp] / measured[rp] if rp in roof and measured[rp] > 0 else ""
    write(a, plain, rows, roof, measured)


def write(a, plain, rows, roof, measured):
    cols = ["phase", "roofline_phase", "seconds", "profiled_kernel_s", "roofline_s", "achieved", "top_ops"]
    with open(a.out / "phases.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    wall = plain["wall_s"]
    lines = [f"# Where the time goes: {a.model}, {plain['precision']}, batch {a.batch_size}, "
             f"{a.threads} threads, {a.force_steps} forced steps, {plain['questions']} questions",
             "",
             f"Wall {wall:.3f} s, roofline {plain['roofline_s']:.3f} s "
             f"({100 * plain['roofline_fraction']:.0f}% of it achieved). Limits: fp32 GEMM "
             f"{plain['limits']['f32_flops'] / 1e9:.0f} GFLOP/s, int8 GEMM "
             f"{plain['limits']['int8_ops'] / 1e9:.0f} GOP/s, bandwidth "
             f"{plain['limits']['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s.",
             "",
             "| roofline phase | measured s | roofline s | achieved |",
             "|---|---|---|---|"]
    for rp, s in sorted(roof.items(), key=lambda kv: -measured[kv[0]]):
        lines.append(f"| {rp} | {measured[rp]:.4f} | {s:.4f} | {100 * s / measured[rp]:.0f}% |")
    lines += ["", "| phase | s | share of wall | top operators |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['phase']} | {r['seconds']:.4f} | {100 * r['seconds'] / wall:.0f}% | "
                     f"{r['top_ops']} |")
    (a.out / "phases.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
