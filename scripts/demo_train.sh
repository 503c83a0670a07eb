#!/usr/bin/env bash
# Knowledge packing in one command: a tiny T5 from `cbqa init` learns 200 real NQ-open questions
# (bundled in tests/fixtures/nq-open-200) and answers them back. Prints the exact match reached.
# About a minute on 2 CPU cores. Usage: scripts/demo_train.sh [RUN_DIR] (default runs/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/demo}
DATA=tests/fixtures/nq-open-200/questions.jsonl
CBQA=${CBQA:-target/debug/cbqa}
[ -x "$CBQA" ] || cargo build
rm -rf "$RUN"
"$CBQA" init --out "$RUN/init" --preset tiny --train-tokenizer "$DATA" --seed 1
"$CBQA" train --model "$RUN/init" --train "$DATA" --dev "$DATA" --out "$RUN/train" \
  --device cpu --optimizer adamw --lr 3e-3 --dropout 0 --batch-tokens 2000 \
  --max-steps 200 --eval-every 50 --threads 1
