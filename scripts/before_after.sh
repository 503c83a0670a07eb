#!/usr/bin/env bash
# Two cbqa binaries side by side, for a change that must not change behaviour: the demo's
# predictions (byte-identical?) with ORT, tract, int8, tch and beam 4, and the t5-small bench
# workload of scripts/bench.sh, rounds interleaved (this kind of VM is noisy: use 6+ rounds).
#   scripts/before_after.sh BEFORE_BIN [AFTER_BIN] [OUT_DIR]
# Needs runs/demo (make demo) and runs/bench-t5-small (scripts/bench.sh).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
B=${1:?usage: scripts/before_after.sh BEFORE_BIN [AFTER_BIN] [OUT_DIR]}
A=${2:-target/release/cbqa}; O=${3:-runs/before-after}; D=eval/demo/nq-open-200.jsonl
ROUNDS=${ROUNDS:-6}
rm -rf $O; mkdir -p $O
run_eval() { # tag binary model extra...
  local tag=$1 bin=$2 model=$3; shift 3
  $bin eval --model $model --data $D --out $O/$tag "$@" >/dev/null 2>$O/$tag.err || echo "FAILED $tag"
}
for who in before after; do
  bin=$B; [ $who = after ] && bin=$A
  run_eval $who-ort $bin runs/demo/onnx
  run_eval $who-tract $bin runs/demo/onnx --backend tract
  run_eval $who-int8 $bin runs/demo/onnx-int8
  run_eval $who-tch $bin runs/demo/train/checkpoint-200 --backend tch
  run_eval $who-beam4 $bin runs/demo/onnx --beams 4
done
# the beam default changed (early_stopping True -> False); with the old value in the model's
# generation_config.json the new binary must give the old predictions
rm -rf $O/onnx-es; cp -r runs/demo/onnx $O/onnx-es
python3 - $O/onnx-es/generation_config.json <<'PY'
import json,sys; p=sys.argv[1]; g=json.load(open(p)); g["early_stopping"]=True; json.dump(g,open(p,"w"),indent=2)
PY
run_eval after-beam4-es $A $O/onnx-es --beams 4
echo "| run | predictions.csv before vs after | EM before | EM after |"
echo "|---|---|---|---|"
em() { python3 -c "import csv,sys; r=list(csv.DictReader(open(sys.argv[1]))); print(r[-1]['em'])" $1/metrics.csv; }
for t in ort tract int8 tch beam4; do
  if cmp -s $O/before-$t/predictions.csv $O/after-$t/predictions.csv; then same=identical; else same="differ ($(diff <(cut -d, -f1-3 $O/before-$t/predictions.csv) <(cut -d, -f1-3 $O/after-$t/predictions.csv) | grep -c '^>') rows)"; fi
  echo "| $t | $same | $(em $O/before-$t) | $(em $O/after-$t) |"
done
if cmp -s $O/before-beam4/predictions.csv $O/after-beam4-es/predictions.csv; then s=identical; else s=differ; fi
echo "| beam4, early_stopping=true in generation_config.json (after) | $s vs before-beam4 | $(em $O/before-beam4) | $(em $O/after-beam4-es) |"
# bench: t5-small workload of scripts/bench.sh (fp32 ort+tract, int8 ort), rounds interleaved
M=runs/bench-t5-small
common=(--batch-sizes 32 --threads 2 --force-steps 8 --questions 256 --data ../shared/data/nq-open/NQ-open.dev.jsonl)
for r in $(seq 1 "$ROUNDS"); do
  for who in before after; do
    bin=$B; [ $who = after ] && bin=$A
    $bin bench --model $M/onnx "${common[@]}" --out $O/bench-$who >/dev/null 2>&1 || echo "FAILED bench $who"
    $bin bench --model $M/onnx-int8 --backends ort "${common[@]}" --out $O/bench-$who >/dev/null 2>&1 || echo "FAILED bench int8 $who"
  done
done
echo "| engine | precision | q/s before (median) | q/s after (median) |"
echo "|---|---|---|---|"
python3 - "$O" <<'PY'
import csv, statistics, sys
out = sys.argv[1]
def medians(who):
    rows = list(csv.DictReader(open(f"{out}/bench-{who}/bench.csv")))
    keys = sorted({(r["engine"], r["precision"]) for r in rows})
    return {k: statistics.median(float(r["questions_per_s"]) for r in rows if (r["engine"], r["precision"]) == k) for k in keys}
b, a = medians("before"), medians("after")
for k in b:
    print(f"| {k[0]} | {k[1]} | {b[k]:.1f} | {a.get(k, float('nan')):.1f} |")
PY
