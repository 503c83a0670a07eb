#!/usr/bin/env python3
"""The Python half of scripts/gpu_check.sh: facts about the machine, random peer models, and the
comparisons whose verdicts go to OUT/summary.csv (check, status, detail), one row per check.

It uses only what the GPU machine's python3 has (torch, transformers, safetensors, tokenizers) and
runs there with transformers 5.x as well as here with the project's 4.57.
  gpu_check.py env OUT                         env.json: torch, CUDA, device name, transformers
  gpu_check.py doctor OUT DOCTOR_TXT DEVICE    doctor.csv, and whether CUDA is visible to cbqa
  gpu_check.py make-model SHAPE DIR TOKENIZER DEVICE   random T5 of SHAPE by transformers
  gpu_check.py parity OUT NAME REF CAND MODE   predictions.csv vs the CPU run (MODE fp32|bf16)
  gpu_check.py loss OUT NAME LOG [REF_LOG]     the loss falls (and ends near the CPU run's)
  gpu_check.py resume OUT NAME A B             two checkpoints' model.safetensors are identical
  gpu_check.py peers OUT BENCH_CSV...          peers.csv: cbqa / transformers per configuration
  gpu_check.py fail OUT NAME DETAIL            a step that did not run to its end
  gpu_check.py summary OUT                     print summary.csv; exit 1 if a check failed
"""
import csv
import json
import os
import shutil
import subprocess
import sys

# Shapes of the side-by-side peers: the paper's t5-base and t5-large, and tiny ones for --dry-run.
SHAPES = {
    "t5-base": dict(d_model=768, d_ff=3072, d_kv=64, num_heads=12, num_layers=12, vocab_size=32128),
    "t5-large": dict(d_model=1024, d_ff=4096, d_kv=64, num_heads=16, num_layers=24, vocab_size=32128),
    "tiny-base": dict(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, vocab_size=512),
    "tiny-large": dict(d_model=96, d_ff=192, d_kv=16, num_heads=6, num_layers=3, vocab_size=512),
}


def append_csv(path, row):
    """Append `row` (a dict) to the CSV at `path`, writing the header for a new file."""
    new = not os.path.exists(path)
    with open(path, "a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(row), lineterminator="\n")
        if new:
            w.writeheader()
        w.writerow(row)


def verdict(out, check, ok, detail):
    """One row of OUT/summary.csv, echoed to stdout."""
    status = "pass" if ok else "FAIL"
    append_csv(os.path.join(out, "summary.csv"), {"check": check, "status": status, "detail": detail})
    print(f"gpu_check: {status} {check}: {detail}", flush=True)


def cmd_env(out):
    import torch
    import transformers
    info = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "transformers": transformers.__version__, "cuda_available": torch.cuda.is_available(),
            "device_count": torch.cuda.device_count()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device_name=p.name, capability=f"{p.major}.{p.minor}", memory_mib=p.total_memory >> 20)
    try:
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = smi.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        info["nvidia_smi"] = None
    with open(os.path.join(out, "env.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info))


def cmd_doctor(out, doctor_txt, device):
    """doctor.csv from `cbqa doctor`'s lines (name padded to 20 columns, then the value)."""
    rows = []
    for line in open(doctor_txt, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.strip():
            rows.append({"item": line[:20].strip(), "value": line[20:].strip()})
    for r in rows:
        append_csv(os.path.join(out, "doctor.csv"), r)
    cuda = next((r["value"] for r in rows if r["item"] == "cuda (libtorch)"), "")
    linked = next((r["value"] for r in rows if r["item"] == "libtorch"), "")
    verdict(out, "doctor-libtorch", "torch 2.11" in linked, linked)
    if device == "cpu":  # dry run: libtorch_cuda.so loads, no GPU is expected
        verdict(out, "doctor-cuda", "libtorch_cuda.so" in cuda, cuda)
    else:
        verdict(out, "doctor-cuda", cuda.startswith("available") and "libtorch_cuda.so" in cuda, cuda)


def cmd_make_model(shape, out_dir, tokenizer, device):
    """A T5 of `shape` with random weights drawn by transformers (on `device`), written where cbqa
    reads it: config.json and generation_config.json by save_pretrained, model.safetensors with
    the tied embedding once (as transformers 4.x writes it), and the given tokenizer.json."""
    import torch
    from safetensors.torch import save_file
    from transformers import T5Config, T5ForConditionalGeneration
    cfg = T5Config(**SHAPES[shape], feed_forward_proj="relu", decoder_start_token_id=0,
                   pad_token_id=0, eos_token_id=1, dropout_rate=0.1)
    torch.manual_seed(0)
    with torch.device(device):
        model = T5ForConditionalGeneration(cfg)
    model.save_pretrained(out_dir)
    tied = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items() if k not in tied}
    for f in os.listdir(out_dir):
        if f.endswith(".safetensors") or f.endswith(".safetensors.index.json"):
            os.remove(os.path.join(out_dir, f))
    save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(tokenizer, os.path.join(out_dir, "tokenizer.json"))
    print(f"{out_dir}: {shape}, {sum(v.numel() for v in state.values()) / 1e6:.1f}M parameters")


def read_preds(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def em_percent(rows):
    return 100.0 * sum(float(r["em"]) for r in rows) / max(len(rows), 1)


def cmd_parity(out, name, ref, cand, mode):
    """fp32: every question's candidates identical and scores within 1e-4; bf16: EM within 1 point
    (the answers of reduced-precision matmuls may differ where the top two tokens nearly tie)."""
    a, b = read_preds(ref), read_preds(cand)
    same = sum(x["candidates"] == y["candidates"] for x, y in zip(a, b))
    diffs = [abs(float(x["score"]) - float(y["score"])) for x, y in zip(a, b)
             if x["score"] and y["score"] and x["candidates"] == y["candidates"]]
    max_diff = max(diffs, default=0.0)
    em_a, em_b = em_percent(a), em_percent(b)
    row = {"check": name, "mode": mode, "questions": len(a), "identical": same,
           "max_score_diff": f"{max_diff:.3g}", "em_ref": f"{em_a:.2f}", "em": f"{em_b:.2f}"}
    append_csv(os.path.join(out, "parity.csv"), row)
    if mode == "fp32":
        ok = len(a) == len(b) and same == len(a) and max_diff <= 1e-4
    else:
        ok = len(a) == len(b) and abs(em_a - em_b) <= 1.0
    verdict(out, name, ok, f"{same}/{len(a)} identical, max score diff {max_diff:.3g}, "
                           f"EM {em_b:.2f} vs {em_a:.2f}")


def losses(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def cmd_loss(out, name, log, ref_log=None):
    """The mean loss of the last tenth of the steps is below that of the first tenth; with a
    reference run (the CPU's), the two end within 25% of each other."""
    xs = losses(log)
    k = max(len(xs) // 10, 1)
    first, last = sum(xs[:k]) / k, sum(xs[-k:]) / k
    ok, detail = last < first, f"{len(xs)} steps, loss {first:.3f} -> {last:.3f}"
    if ref_log:
        ys = losses(ref_log)
        ref_last = sum(ys[-k:]) / k
        ok = ok and abs(last - ref_last) <= 0.25 * ref_last
        detail += f" (reference run: {sum(ys[:k]) / k:.3f} -> {ref_last:.3f})"
    verdict(out, name, ok, detail)


def cmd_resume(out, name, a, b):
    """Bitwise-identical model.safetensors; otherwise the largest parameter difference is named."""
    pa, pb = os.path.join(a, "model.safetensors"), os.path.join(b, "model.safetensors")
    with open(pa, "rb") as fa, open(pb, "rb") as fb:
        if fa.read() == fb.read():
            return verdict(out, name, True, "model.safetensors bitwise identical")
    from safetensors.torch import load_file
    ta, tb = load_file(pa), load_file(pb)
    worst = max((float((ta[k].float() - tb[k].float()).abs().max()), k) for k in ta)
    verdict(out, name, False, f"parameters differ, largest {worst[0]:.3g} in {worst[1]}")


def cmd_peers(out, *bench_csvs):
    """One row per (shape, precision, batch size): questions/s and p50 of cbqa-tch and
    transformers from the same bench.csv, and their ratio."""
    for path in bench_csvs:
        shape = os.path.basename(os.path.dirname(path))
        rows = list(csv.DictReader(open(path, encoding="utf-8")))
        by = {(r["engine"], r["batch_size"]): r for r in rows}
        for bs in sorted({r["batch_size"] for r in rows}, key=int):
            c, t = by.get(("cbqa-tch", bs)), by.get(("transformers", bs))
            if not c or not t:
                verdict(out, f"peers-{shape}-{bs}", False, "a side is missing from " + path)
                continue
            ratio = float(c["questions_per_s"]) / float(t["questions_per_s"])
            append_csv(os.path.join(out, "peers.csv"), {
                "model": shape, "device": c["device"], "precision": c["precision"], "batch_size": bs,
                "cbqa_q_per_s": c["questions_per_s"], "transformers_q_per_s": t["questions_per_s"],
                "ratio_q_per_s": f"{ratio:.3f}", "cbqa_p50_ms": c["p50_ms"],
                "transformers_p50_ms": t["p50_ms"]})
            print(f"{shape} batch {bs}: cbqa {float(c['questions_per_s']):.1f} q/s, transformers "
                  f"{float(t['questions_per_s']):.1f} q/s (x{ratio:.2f})")


def cmd_fail(out, name, detail):
    verdict(out, name, False, detail)


def cmd_summary(out):
    rows = list(csv.DictReader(open(os.path.join(out, "summary.csv"), encoding="utf-8")))
    failed = [r for r in rows if r["status"] != "pass"]
    print(f"gpu_check: {len(rows) - len(failed)}/{len(rows)} checks passed; results in {out}")
    for r in failed:
        print(f"  FAIL {r['check']}: {r['detail']}")
    sys.exit(1 if failed or not rows else 0)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmds = {"env": cmd_env, "doctor": cmd_doctor, "make-model": cmd_make_model, "parity": cmd_parity,
            "loss": cmd_loss, "resume": cmd_resume, "peers": cmd_peers, "fail": cmd_fail,
            "summary": cmd_summary}
    cmd = cmds.get(sys.argv[1])
    if cmd is None:
        sys.exit(f"gpu_check.py: unknown command {sys.argv[1]!r}\n{__doc__}")
    cmd(*sys.argv[2:])


if __name__ == "__main__":
    main()
