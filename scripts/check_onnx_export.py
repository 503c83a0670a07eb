#!/usr/bin/env python3
"""Interoperability check of a `cbqa export` directory with the real tools (used by the tests).

  .venv/bin/python scripts/check_onnx_export.py ONNX_DIR [--fixture tests/fixtures/t5_v1_0]

1. `onnx.checker.check_model(path, full_check=True)` on every *.onnx (full_check runs shape
   inference too; external data is checked against the shared file).
2. With --fixture: optimum's `ORTModelForSeq2SeqLM.from_pretrained(ONNX_DIR)` loads the export
   unchanged and its `generate` (greedy and beam-4, the settings of the fixture's reference.json)
   must return exactly the token sequences transformers produced (reference.safetensors).

Prints one JSON line with the results; exits non-zero on any failure.
"""
import argparse
import glob
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")


def check_graphs(onnx_dir):
    import onnx

    out = {}
    for path in sorted(glob.glob(os.path.join(onnx_dir, "*.onnx"))):
        onnx.checker.check_model(path, full_check=True)
        m = onnx.load(path, load_external_data=False)
        out[os.path.basename(path)] = {"ir_version": m.ir_version, "opset": m.opset_import[0].version}
    if not out:
        raise SystemExit(f"no .onnx files in {onnx_dir}")
    return out


def check_optimum(onnx_dir, fixture, use_merged=None):
    import torch
    from safetensors.torch import load_file
    from optimum.onnxruntime import ORTModelForSeq2SeqLM

    ref = load_file(os.path.join(fixture, "reference.safetensors"))
    with open(os.path.join(fixture, "reference.json"), encoding="utf-8") as f:
        meta = json.load(f)
    # What a user types: no file names (use_cache defaults to True; use_merged=None picks
    # decoder_model_merged.onnx when it exists).
    kwargs = {} if use_merged is None else {"use_merged": use_merged}
    model = ORTModelForSeq2SeqLM.from_pretrained(onnx_dir, **kwargs)
    ids, mask = ref["input_ids"], ref["attention_mask"]
    res = {"decoder_with_past_loaded": model.decoder_with_past is not None,
           "merged": bool(model.decoder.is_merged), "can_use_cache": bool(model.can_use_cache)}
    with torch.no_grad():
        g = meta["greedy"]
        greedy = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                max_new_tokens=g["max_new_tokens"], num_beams=1)
        b = meta["beam4"]
        beam = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                              max_new_tokens=b["max_new_tokens"], num_beams=b["num_beams"],
                              num_return_sequences=b["num_return_sequences"],
                              length_penalty=b["length_penalty"], early_stopping=b["early_stopping"])

    def same(got, want):
        return list(got.shape) == list(want.shape) and bool(torch.equal(got, want))

    res["greedy_equal"] = same(greedy, ref["greedy_sequences"])
    res["beam4_equal"] = same(beam, ref["beam4_sequences"])
    if not res["greedy_equal"]:
        res["greedy_got"] = greedy.tolist()
        res["greedy_want"] = ref["greedy_sequences"].tolist()
    if not res["beam4_equal"]:
        res["beam4_got"] = beam.tolist()
        res["beam4_want"] = ref["beam4_sequences"].tolist()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("onnx_dir")
    ap.add_argument("--fixture")
    ap.add_argument("--unmerged", action="store_true", help="load with use_merged=False")
    args = ap.parse_args()
    result = {"checker": check_graphs(args.onnx_dir)}
    ok = True
    if args.fixture:
        result["optimum"] = check_optimum(args.onnx_dir, args.fixture, False if args.unmerged else None)
        ok = result["optimum"]["greedy_equal"] and result["optimum"]["beam4_equal"]
    print(json.dumps(result))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
