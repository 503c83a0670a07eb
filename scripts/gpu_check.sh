#!/usr/bin/env bash
# The GPU checks in one short script, for a session that is lent a GPU machine (never run yet).
# Prerequisites there: a venv with torch 2.13.0 (CUDA wheel) and onnxruntime-gpu==1.31.1
# (scripts/setup.sh --gpu, or wheels carried in), and a built binary (cargo build --release).
#   scripts/gpu_check.sh [OUT] [DEVICE]     DEVICE defaults to cuda:0; `cpu` dry-runs the script.
# It checks, each against the CPU run of the same thing:
#   1. cbqa doctor: libtorch sees the GPU (libtorch_cuda.so loaded at run time, native::torch_cuda)
#   2. eval through ONNX Runtime CUDA (and TensorRT) gives the CPU's predictions, greedy and beam-4
#      (beam-4 reorders the state with the Gather graph on the GPU)
#   3. eval with the tch backend on the GPU gives the CPU's predictions
#   4. cbqa train --device cuda --precision bf16 runs a few steps and writes a checkpoint
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-runs/gpu-check}"
dev="${2:-cuda:0}"
bin="${CBQA:-target/release/cbqa}"
data=eval/demo/nq-open-200.jsonl
rm -rf "$out" && mkdir -p "$out"
"$bin" doctor | tee "$out/doctor.txt"
"$bin" export --model tests/fixtures/t5_v1_1 --out "$out/onnx"
same() { # compare the prediction column of two predictions.csv files
  .venv/bin/python - "$1" "$2" <<'PY'
import csv, sys
a = [r["candidates"] for r in csv.DictReader(open(sys.argv[1]))]
b = [r["candidates"] for r in csv.DictReader(open(sys.argv[2]))]
bad = sum(x != y for x, y in zip(a, b))
print(f"{sys.argv[2]}: {len(a) - bad}/{len(a)} identical to the CPU")
sys.exit(1 if bad or len(a) != len(b) else 0)
PY
}
for beams in 1 4; do
  "$bin" eval --model "$out/onnx" --data "$data" --beams "$beams" --out "$out/cpu-$beams"
  "$bin" eval --model "$out/onnx" --data "$data" --beams "$beams" --device "$dev" --out "$out/ort-gpu-$beams"
  same "$out/cpu-$beams/predictions.csv" "$out/ort-gpu-$beams/predictions.csv"
  "$bin" eval --backend tch --model tests/fixtures/t5_v1_1 --data "$data" --beams "$beams" --device "$dev" --out "$out/tch-gpu-$beams"
  same "$out/cpu-$beams/predictions.csv" "$out/tch-gpu-$beams/predictions.csv"
done
if [ "$dev" != cpu ]; then
  trt="tensorrt:${dev#cuda:}"
  "$bin" eval --model "$out/onnx" --data "$data" --device "$trt" --out "$out/trt-1" --trt-cache "$out/trt-cache"
  same "$out/cpu-1/predictions.csv" "$out/trt-1/predictions.csv"
  "$bin" bench --model "$out/onnx" --backends ort --device "$dev" --batch-sizes 1,32,128 --out "$out/bench"
fi
"$bin" init --out "$out/init" --preset tiny --train-tokenizer "$data" --seed 1
prec=bf16; [ "$dev" = cpu ] && prec=fp32
"$bin" train --model "$out/init" --train "$data" --out "$out/train" --device "$dev" --precision "$prec" \
  --optimizer adamw --lr 3e-3 --dropout 0 --batch-tokens 2000 --max-steps 20
echo "gpu_check: all checks passed on $dev"
