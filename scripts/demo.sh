#!/usr/bin/env bash
# The main job on bundled data, end to end on the CPU (a few minutes on 2 cores):
#   1. cbqa init   a tiny T5 with a Unigram tokenizer trained on eval/demo/nq-open-200.jsonl
#   2. cbqa train  packs those 200 real NQ-open question/answer pairs into its parameters
#   3. cbqa export writes the trained checkpoint as ONNX (optimum's layout), validated
#   4. cbqa eval   answers the 200 questions through ONNX Runtime and tract and scores them
#   5. the same through an int8 export (7-bit weights, integer GEMMs)
# Everything lands in runs/demo (git-ignored); the exact match reached is printed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release
bin=target/release/cbqa
data=eval/demo/nq-open-200.jsonl
run=runs/demo
rm -rf "$run"
mkdir -p "$run"
echo "== 1. cbqa init"
"$bin" init --out "$run/init" --preset tiny --train-tokenizer "$data" --seed 1
echo "== 2. cbqa train (AdamW 3e-3 from scratch, no dropout: memorising, not fine-tuning)"
"$bin" train --model "$run/init" --train "$data" --dev "$data" --out "$run/train" \
  --device cpu --optimizer adamw --lr 3e-3 --dropout 0 --batch-tokens 2000 \
  --max-steps 200 --eval-every 50
echo "== 3. cbqa export"
last="$run/train/$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["last"])' "$run/train/state.json")"
"$bin" export --model "$last" --out "$run/onnx"
echo "== 4. cbqa eval (ONNX Runtime, then tract)"
"$bin" eval --model "$run/onnx" --data "$data" --out "$run/eval"
"$bin" eval --model "$run/onnx" --data "$data" --out "$run/eval" --backend tract
echo "== 5. cbqa export --quantize int8, eval (integer GEMMs; EM within a point of fp32)"
"$bin" export --model "$last" --out "$run/onnx-int8" --quantize int8
"$bin" eval --model "$run/onnx-int8" --data "$data" --out "$run/eval"
"$bin" predict --model "$run/onnx" "$(head -n1 "$data" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["question"])')"
echo "demo done: $run/train (checkpoints, train_log.csv), $run/onnx, $run/eval/metrics.csv"
