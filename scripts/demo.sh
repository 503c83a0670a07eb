#!/usr/bin/env bash
# The main job on bundled data, as far as the pipeline exists: set-up, release build, then
# `cbqa init` of a tiny T5 with a tokenizer trained on eval/demo/nq-open-200.jsonl, loading it back
# with cbqa and with transformers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release
bin=target/release/cbqa
data=eval/demo/nq-open-200.jsonl
run=runs/demo
mkdir -p "$run"
echo "== cbqa init (tiny T5, Unigram tokenizer trained on $data)"
"$bin" init --out "$run/model" --preset tiny --train-tokenizer "$data" --vocab-size 1000 --force
echo "== cbqa inspect"
"$bin" inspect "$run/model"
echo "== transformers loads it"
.venv/bin/python scripts/hf_oracle.py load "$run/model" | .venv/bin/python -c '
import json, sys
v = json.load(sys.stdin)
assert not v["missing"] and not v["unexpected"], v
print(f"T5ForConditionalGeneration.from_pretrained: {v[\"parameters\"]} parameters, no missing or unexpected keys")'
echo "demo done: model in $run/model"
