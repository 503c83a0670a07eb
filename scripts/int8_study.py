#!/usr/bin/env python3
"""How accurate is each int8 recipe, on CPUs with and without VNNI? One run, one table.

For a checkpoint (default: the tiny model of the test suite, `cbqa init --preset tiny --seed 3`)
this makes
  * cbqa's fp32 export and cbqa's int8 export (`cbqa export --quantize int8`),
  * ONNX Runtime's own `quantize_dynamic` of cbqa's fp32 export: default settings, per-channel,
    and per-channel with reduce_range=True (7-bit weights),
and runs every int8 model twice through `cbqa validate` (cbqa's int8 bounds) (the same validation batches and the same
comparison with the reference forward pass as `cbqa export`): once as it is (on this machine's
kernels) and once with every MatMulInteger rewritten into the arithmetic of ONNX Runtime's AVX2
u8s8 kernel (`scripts/avx2_u8s8.py`: saturating int16 pair sums), which is what a CPU without VNNI
computes. It also counts, on validation-shaped random batches, how many u8 x s8 pairs leave the
int16 range. Output: a table on stdout and `int8_study.csv` in --work.

Usage: scripts/int8_study.py [--cbqa target/debug/cbqa] [--work runs/int8-study] [--model DIR]
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from avx2_u8s8 import rewrite  # noqa: E402

GRAPHS = ["encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx"]
SIDE_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "spiece.model"]
ROOT = Path(__file__).resolve().parent.parent
# cbqa export's int8 bounds (ValidateOptions::for_precision): values within TOLERANCE of the
# reference's scale, tokens equal wherever the reference's top two differ by DECISIVE_MARGIN.
TOLERANCE, DECISIVE_MARGIN = "1.5e-1", "5e-2"


def sh(*args, check=True):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def copy_side_files(src: Path, dst: Path):
    for name in SIDE_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)


def lm_head_as_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """cbqa's fp32 LM head is Gemm(x, shared.weight, transB=1), reading the tied embedding as
    stored. quantize_dynamic turns such a Gemm into a MatMul by transposing the initializer in
    place, which the embedding Gather shares: the decoder then no longer loads. Give the LM head
    its own transposed copy first (what optimum's exports have)."""
    inits = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        trans_b = any(a.name == "transB" and a.i == 1 for a in n.attribute)
        if n.op_type == "Gemm" and trans_b and n.input[1] in inits and len(n.input) == 2:
            w = numpy_helper.to_array(inits[n.input[1]])
            name = n.input[1] + ".T"
            model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w.T), name))
            n.op_type = "MatMul"
            n.input[1] = name
            del n.attribute[:]
    return model


def ort_quantized(fp32: Path, out: Path, per_channel: bool, reduce_range: bool, ops, untie: bool):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    if (out / GRAPHS[-1]).is_file():
        return
    out.mkdir(parents=True, exist_ok=True)
    for g in GRAPHS:
        model = onnx.load(fp32 / g)
        if untie:
            model = lm_head_as_matmul(model)
        quantize_dynamic(model, out / g, per_channel=per_channel, reduce_range=reduce_range,
                         weight_type=QuantType.QInt8, op_types_to_quantize=ops)
    copy_side_files(fp32, out)


def avx2_emulated(src: Path, out: Path, count=False):
    out.mkdir(parents=True, exist_ok=True)
    for g in GRAPHS:
        model = onnx.load(src / g)
        onnx.save(rewrite(model, count), out / g)
    copy_side_files(src, out)


def validate(cbqa: Path, model: Path, onnx_dir: Path):
    """The JSON report of `cbqa validate`, or the error that kept it from running the graphs."""
    # cbqa's int8 bounds for every recipe alike (ORT's exports record no precision).
    r = sh(cbqa, "validate", "--model", model, "--onnx", onnx_dir, "--no-tract", "--json",
           "--tolerance", TOLERANCE, "--decisive-margin", DECISIVE_MARGIN, check=False)
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError:
        return {"error": r.stderr.strip().splitlines()[-1]}


def relative(report, graph, output):
    c = next(c for c in report["checks"] if c["graph"] == graph and c["output"] == output)
    return c["max_abs_diff"], c["max_abs_ref"], c["max_abs_diff"] / max(1.0, c["max_abs_ref"])


def saturation_counts(counting: Path, fp32: Path, cfg: dict, seed=0):
    """Saturated pairs / all pairs of every MatMulInteger, summed over encoder and decoder, on a
    validation-shaped batch (3 rows of 35 tokens, two of them padded; 6 decoder positions)."""
    rng = np.random.default_rng(seed)
    b, s, t = 3, min(cfg.get("relative_attention_max_distance", 128) + 3, 48), 6
    ids = rng.integers(3, cfg["vocab_size"], (b, s)).astype(np.int64)
    mask = np.ones((b, s), np.int64)
    for i, n in enumerate([s, s // 2, 4]):
        mask[i, n:] = 0
        ids[i, n:] = 0
        ids[i, n - 1] = 1
    dec = rng.integers(0, cfg["vocab_size"], (b, t)).astype(np.int64)
    dec[:, 0] = 0
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    enc_ref = ort.InferenceSession(str(fp32 / GRAPHS[0]))
    hidden = enc_ref.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    sat = pairs = 0.0
    feeds = {
        GRAPHS[0]: {"input_ids": ids, "attention_mask": mask},
        GRAPHS[1]: {"input_ids": dec, "encoder_attention_mask": mask, "encoder_hidden_states": hidden},
    }
    for g, feed in feeds.items():
        sess = ort.InferenceSession(str(counting / g), so)
        names = [o.name for o in sess.get_outputs()]
        wanted = {i.name for i in sess.get_inputs()}
        out = dict(zip(names, sess.run(None, {k: v for k, v in feed.items() if k in wanted})))
        sat += sum(v for k, v in out.items() if k.startswith("saturated_pairs/"))
        pairs += sum(v for k, v in out.items() if k.startswith("pairs/"))
    return sat, pairs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cbqa", default=str(ROOT / "target/debug/cbqa"))
    ap.add_argument("--work", default=str(ROOT / "runs/int8-study"))
    ap.add_argument("--model", help="checkpoint directory (default: the test suite's tiny model)")
    args = ap.parse_args()
    cbqa, work = Path(args.cbqa), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print("cpu:", sh(cbqa, "doctor").stdout.split("cpu (int8)", 1)[-1].splitlines()[0].strip())
    model = Path(args.model) if args.model else work / "model"
    if not args.model and not (model / "model.safetensors").is_file():
        sh(cbqa, "init", "--out", model, "--preset", "tiny", "--seed", "3", "--force",
           "--tokenizer", ROOT / "tests/fixtures/t5_v1_1/tokenizer.json")
    fp32 = work / "fp32"
    sh(cbqa, "export", "--model", model, "--out", fp32, "--force", "--no-tract")
    variants = {}
    variants["cbqa int8"] = work / "cbqa-int8"
    sh(cbqa, "export", "--model", model, "--out", variants["cbqa int8"], "--quantize", "int8",
       "--force", "--no-validate")
    # "ort as is": quantize_dynamic's defaults on cbqa's fp32 graphs, which it breaks (see
    # lm_head_as_matmul). The others give the LM head its own matrix first; "linears" quantizes
    # what cbqa's int8 export quantizes (every linear layer and the LM head, embeddings float).
    linears = ["MatMul"]
    for label, pc, rr, ops, untie in [
        ("ort as is", False, False, None, False),
        ("ort default", False, False, None, True),
        ("ort linears", False, False, linears, True),
        ("ort linears per-channel", True, False, linears, True),
        ("ort linears per-channel reduce_range", True, True, linears, True),
    ]:
        d = work / label.replace(" ", "-")
        ort_quantized(fp32, d, pc, rr, ops, untie)
        variants[label] = d
    cfg = json.loads((model / "config.json").read_text())
    rows = []
    for label, d in variants.items():
        emu, counting = Path(str(d) + "-avx2"), Path(str(d) + "-avx2-count")
        avx2_emulated(d, emu)
        avx2_emulated(d, counting, count=True)
        for kernel, dd in [("this cpu", d), ("avx2 emulated", emu)]:
            rep = validate(cbqa, model, dd)
            if "error" in rep:
                rows.append({"recipe": label, "kernel": kernel, "error": rep["error"]})
                continue
            sat, pairs = saturation_counts(counting, fp32, cfg) if kernel != "this cpu" else (0, 0)
            enc = relative(rep, GRAPHS[0], "last_hidden_state")
            dec = relative(rep, GRAPHS[1], "logits")
            am = rep["argmax"][0]
            rows.append({
                "recipe": label, "kernel": kernel,
                "encoder_max_abs_diff": f"{enc[0]:.4e}", "encoder_max_abs_ref": f"{enc[1]:.3f}",
                "encoder_rel": f"{enc[2]:.4e}",
                "logits_max_abs_diff": f"{dec[0]:.4e}", "logits_max_abs_ref": f"{dec[1]:.3f}",
                "logits_rel": f"{dec[2]:.4e}",
                "argmax_same": f"{am['same']}/{am['decisive']}",
                "saturated_pairs": f"{int(sat)}/{int(pairs)}" if kernel != "this cpu" else "",
                "passes": str(all(c["passes"] for c in rep["checks"]) and am["same"] == am["decisive"]),
            })
    fields = list(max(rows, key=len)) + ["error"]
    rows = [{k: r.get(k, "") for k in fields} for r in rows]
    with open(work / "int8_study.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    cols = ["recipe", "kernel", "encoder_rel", "logits_rel", "argmax_same", "saturated_pairs", "passes", "error"]
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(r[c].ljust(w) for c, w in zip(cols, widths)))
    print(f"rel = max|got - reference| / max(1, max|reference|), which `cbqa export` bounds by {TOLERANCE}; "
          f"argmax at positions where the reference's top two differ by > {DECISIVE_MARGIN} of the scale")
    print(f"wrote {work / 'int8_study.csv'}")


if __name__ == "__main__":
    main()
