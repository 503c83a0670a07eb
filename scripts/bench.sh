#!/usr/bin/env bash
# The t5-small throughput workload, cbqa and its peers side by side in one run, with the ratios:
# t5-small shapes (60M parameters, random weights), 256 questions of 10–21 tokens, batch 32,
# 8 forced decode steps, fp32 (+ int8), 2 threads.
#   scripts/bench.sh [OUT_DIR]        (default runs/bench-t5-small)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
out="${1:-runs/bench-t5-small}"
threads="${THREADS:-2}"
batch="${BATCH:-32}"
steps="${STEPS:-8}"
rounds="${ROUNDS:-2}"
# The inference-only binary (no libtorch linked): what a service embedding cbqa would ship, and
# the one whose peak RSS is reported.
cargo build --release --no-default-features --features ort,tract --target-dir target/infer
bin=target/infer/release/cbqa
py=.venv/bin/python
mkdir -p "$out"
if [ ! -f "$out/model/model.safetensors" ]; then
  # a T5 tokenizer trained on the bundled questions, then t5-small shapes with the full vocab
  "$bin" init --out "$out/tok" --preset tiny --train-tokenizer eval/demo/nq-open-200.jsonl --vocab-size 2000 --force
  "$bin" init --out "$out/model" --preset t5-small --tokenizer "$out/tok/tokenizer.json" --force
fi
[ -f "$out/onnx/cbqa_export.json" ] || "$bin" export --model "$out/model" --out "$out/onnx" --force
[ -f "$out/onnx-int8/cbqa_export.json" ] || "$bin" export --model "$out/model" --out "$out/onnx-int8" --quantize int8 --force
[ -f "$out/optimum/decoder_with_past_model.onnx" ] || HF_HUB_OFFLINE=1 .venv/bin/optimum-cli export onnx \
  --model "$out/model" --task text2text-generation-with-past "$out/optimum" >/dev/null 2>&1
[ -f "$out/ct2/model.bin" ] || .venv/bin/ct2-transformers-converter --model "$out/model" --output_dir "$out/ct2" --force >/dev/null
rm -f "$out/bench.csv" "$out/roofline.json"
common=(--batch-sizes "$batch" --threads "$threads" --force-steps "$steps" --questions 256 --data ../shared/data/nq-open/NQ-open.dev.jsonl)
[ -f ../shared/data/nq-open/NQ-open.dev.jsonl ] || common=(--batch-sizes "$batch" --threads "$threads" --force-steps "$steps" --questions 256)
for r in $(seq 1 "$rounds"); do
  echo "== round $r: cbqa"
  "$bin" bench --model "$out/onnx" "${common[@]}" --roofline --out "$out" >/dev/null
  "$bin" bench --model "$out/onnx-int8" --backends ort "${common[@]}" --roofline --out "$out" >/dev/null
  echo "== round $r: peers"
  $py scripts/bench_peers.py --checkpoint "$out/model" --optimum-onnx "$out/optimum" --ct2 "$out/ct2" \
    --out "$out" --batch-sizes "$batch" --threads "$threads" --force-steps "$steps" >/dev/null
done
"$bin" bench --plot-only --out "$out" >/dev/null
echo "== cbqa eval peak RSS (t5-small fp32, 512 NQ-open questions, greedy, 32 new tokens)"
rm -rf "$out/eval"
"$bin" eval --model "$out/onnx" --data ../shared/data/nq-open/NQ-open.dev.jsonl --limit 512 \
  --threads "$threads" --out "$out/eval" | tail -n 1
$py -c 'import csv,sys; r=list(csv.DictReader(open(sys.argv[1])))[-1]; print("peak RSS", r["peak_rss_mb"], "MB at", r["questions_per_s"], "q/s")' "$out/eval/metrics.csv"
$py - "$out/bench.csv" <<'PY'
import csv, sys, collections
rows = list(csv.DictReader(open(sys.argv[1])))
qs = collections.defaultdict(list)
rss = {}
frac = collections.defaultdict(list)
for r in rows:
    key = r["engine"] + ("-int8" if r["precision"] == "int8" and "int8" not in r["engine"] else "")
    qs[key].append(float(r["questions_per_s"]))
    rss[key] = max(rss.get(key, 0.0), float(r["peak_rss_mb"] or 0))
    if r.get("roofline_fraction"):
        frac[key].append(float(r["roofline_fraction"]))
mean = {k: sum(v) / len(v) for k, v in qs.items()}
print(f"{'engine':<18}{'q/s':>10}{'peak RSS MB':>14}{'of roofline':>13}")
for k in sorted(mean, key=mean.get, reverse=True):
    f = f"{100 * sum(frac[k]) / len(frac[k]):.0f}%" if frac[k] else "-"
    print(f"{k:<18}{mean[k]:>10.1f}{rss[k]:>14.0f}{f:>13}")
def ratio(a, b):
    if a in mean and b in mean:
        print(f"{a} / {b}: {mean[a] / mean[b]:.2f}x")
ratio("cbqa-ort", "ct2-float32")
ratio("cbqa-ort", "ct2-float32-batches")
ratio("cbqa-ort", "optimum")
ratio("cbqa-tract", "cbqa-ort")
ratio("cbqa-ort-int8", "ct2-int8")
ratio("cbqa-ort-int8", "ct2-int8-batches")
ratio("cbqa-ort", "transformers")
PY
echo "wrote $out/bench.csv and $out/throughput.svg"
