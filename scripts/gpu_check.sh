#!/usr/bin/env bash
# The GPU check, for the GPU machine as it is: python3 with torch 2.11.0+cu130 and transformers,
# no Rust, no network. scripts/device_bundle.sh brings the binary and this script there.
#   scripts/gpu_check.sh [--dry-run] [OUT]      OUT defaults to $OUT, else runs/gpu-check
# --dry-run does every step with the CPU in place of the GPU, tiny shapes and few steps (the test
# suite runs it: tests/integration/gpu_check.rs). Every result is a CSV/JSON file in OUT:
#   env.json          torch, CUDA, device name (python3's torch; nvidia-smi -L)
#   doctor.csv        `cbqa doctor`: libtorch 2.11 linked, libtorch_cuda.so loaded, CUDA visible
#   train_*/          `cbqa train --device cuda --precision bf16` (loss falls as on the CPU) and a
#                     run stopped halfway and resumed (same parameters as the straight run)
#   parity.csv        tch on CUDA vs the CPU, greedy and beam-4, on both fixtures and the trained
#                     model: fp32 candidates identical and scores within 1e-4; bf16 EM within 1
#   peers/*/bench.csv cbqa tch vs transformers generate on CUDA, fp32 and bf16, batch 1/32/256,
#                     t5-base and t5-large shapes, random weights made here by transformers
#   peers.csv         the ratios; train_speed.csv: training tokens/s and peak GPU memory of
#                     `cbqa train` vs transformers (AdaFactor, bf16, t5-base shape)
#   summary.csv       one row per check (pass/FAIL); timings.csv: seconds per step
# The exit status is 1 when any check failed; every step runs regardless. GPU_CHECK_STEPS,
# GPU_CHECK_SHAPES and GPU_CHECK_QUESTIONS shorten a rerun.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dry=0
out="${OUT:-}"
for a in "$@"; do
  case "$a" in
    --dry-run) dry=1 ;;
    -*) echo "gpu_check.sh: unknown option '$a' (expected --dry-run)" >&2; exit 2 ;;
    *) out="$a" ;;
  esac
done
out="${out:-runs/gpu-check}"
mkdir -p "$out" && out="$(cd "$out" && pwd)"
if [ -n "$(ls -A "$out")" ]; then
  echo "gpu_check.sh: $out is not empty; give an empty or new folder" >&2; exit 2
fi
# The bundle has the binary at its root; a checkout has it in target/.
bin="${CBQA:-}"
[ -z "$bin" ] && [ -x "$root/cbqa" ] && bin="$root/cbqa"
[ -z "$bin" ] && bin="$root/target/release/cbqa"
[ -x "$bin" ] || { echo "gpu_check.sh: no cbqa binary at $bin (scripts/device_bundle.sh, or set CBQA)" >&2; exit 2; }
python="${PYTHON:-}"
[ -z "$python" ] && [ "$dry" = 1 ] && [ -x "$root/.venv/bin/python" ] && python="$root/.venv/bin/python"
python="${python:-python3}"
# The binary finds libtorch through python's torch/lib (the build machine's rpath is absent here).
torchlib="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" \
  || { echo "gpu_check.sh: $python has no torch" >&2; exit 2; }
export LD_LIBRARY_PATH="$torchlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# ONNX Runtime from python's onnxruntime, for `cbqa doctor` to say whether this build (ort's api-31)
# loads it; the GPU machine's is 1.30 (CPU only), and nothing below needs it.
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  ortlib="$("$python" -c 'import glob, os, onnxruntime as o; print((glob.glob(os.path.join(os.path.dirname(o.__file__), "capi", "libonnxruntime.so.*")) or [""])[0])' 2>/dev/null || true)"
  [ -n "$ortlib" ] && export ORT_DYLIB_PATH="$ortlib"
fi
export TRANSFORMERS_VERBOSITY=error HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
data="$root/eval/demo/nq-open-200.jsonl"
fixtures="$root/tests/fixtures"
helper="$root/scripts/gpu_check.py"
if [ "$dry" = 1 ]; then
  dev=cpu steps=12 limit=(--limit 12) threads=1
  shapes=(tiny-base tiny-large) batches=1,4 questions=8 train_peer=(--preset tiny --batch 8 --steps 3 --warmup 1)
else
  dev=cuda:0 steps=300 limit=() threads=16
  shapes=(t5-base t5-large) batches=1,32,256 questions=256 train_peer=(--preset t5-base --batch 128 --steps 30 --warmup 5)
fi
# A shorter rerun on the GPU machine: GPU_CHECK_STEPS=100 GPU_CHECK_SHAPES=t5-base GPU_CHECK_QUESTIONS=64
steps="${GPU_CHECK_STEPS:-$steps}" questions="${GPU_CHECK_QUESTIONS:-$questions}"
[ -n "${GPU_CHECK_SHAPES:-}" ] && read -r -a shapes <<<"$GPU_CHECK_SHAPES"
echo "gpu_check: $bin on $dev, python $python, results in $out"

# run NAME CMD...: CMD's output to OUT/logs/NAME.log, its seconds to timings.csv, a FAIL row if it fails.
mkdir -p "$out/logs"
echo "step,seconds,status" >"$out/timings.csv"
run() {
  local name="$1" t0=$SECONDS rc=0
  shift
  "$@" >"$out/logs/$name.log" 2>&1 || rc=$?
  echo "$name,$((SECONDS - t0)),$rc" >>"$out/timings.csv"
  if [ "$rc" != 0 ]; then
    "$python" "$helper" fail "$out" "$name" "exit $rc: $(tail -n 3 "$out/logs/$name.log" | tr '\n,' '  ')"
    return 1
  fi
}
check() { "$python" "$helper" "$1" "$out" "${@:2}"; }

# 1. the machine and cbqa doctor
run env "$python" "$helper" env "$out"
run doctor "$bin" doctor && cp "$out/logs/doctor.log" "$out/doctor.txt" && check doctor "$out/doctor.txt" "$dev"

# 2. training: bf16 on the device against fp32 on the CPU, and an exact resume on the device
train() { # NAME DEVICE PRECISION MAX_STEPS [--resume]
  "$bin" train --model "$out/init" --train "$data" --out "$out/$1" --device "$2" --precision "$3" \
    --max-steps "$4" --optimizer adafactor --lr 3e-3 --batch-tokens 2000 --seed 1 --log-every 50
}
run init "$bin" init --out "$out/init" --preset tiny --train-tokenizer "$data" --vocab-size 1024 --seed 1
run train_dev train train_dev "$dev" bf16 "$steps"
run train_cpu train train_cpu cpu fp32 "$steps"
[ -f "$out/train_dev/train_log.csv" ] && [ -f "$out/train_cpu/train_log.csv" ] &&
  check loss train-loss-falls "$out/train_dev/train_log.csv" "$out/train_cpu/train_log.csv"
run train_half train train_resumed "$dev" bf16 "$((steps / 2))" &&
  run train_resume "$bin" train --resume "$out/train_resumed" --max-steps "$steps" --device "$dev" &&
  check resume train-resume-exact "$out/train_dev/checkpoint-$steps" "$out/train_resumed/checkpoint-$steps"

# 3. parity of the tch backend on the device with the CPU, fp32 and bf16, greedy and beam-4
evaluate() { # MODEL DEVICE COMPUTE BEAMS OUT
  "$bin" eval --backend tch --model "$1" --device "$2" --compute "$3" --beams "$4" --data "$data" \
    "${limit[@]}" --out "$5"
}
for m in t5_v1_0 t5_v1_1 trained; do
  model="$fixtures/$m"
  [ "$m" = trained ] && model="$out/train_dev/checkpoint-$steps"
  for beams in 1 4; do
    p="$out/eval/$m-b$beams"
    run "eval_${m}_b${beams}_cpu" evaluate "$model" cpu fp32 "$beams" "$p-cpu" || continue
    run "eval_${m}_b${beams}_fp32" evaluate "$model" "$dev" fp32 "$beams" "$p-fp32" &&
      check parity "tch-$m-beam$beams-fp32" "$p-cpu/predictions.csv" "$p-fp32/predictions.csv" fp32
    run "eval_${m}_b${beams}_bf16" evaluate "$model" "$dev" bf16 "$beams" "$p-bf16" &&
      check parity "tch-$m-beam$beams-bf16" "$p-cpu/predictions.csv" "$p-bf16/predictions.csv" bf16
  done
done

# 4. side by side on the same device: cbqa tch vs transformers generate, same weights and ids
benches=()
for shape in "${shapes[@]}"; do
  model="$out/models/$shape"
  run "model_$shape" "$python" "$helper" make-model "$shape" "$model" "$fixtures/t5_v1_0/tokenizer.json" "$dev" || continue
  for c in fp32 bf16; do
    b="$out/peers/$shape-$c"
    run "bench_${shape}_${c}_cbqa" "$bin" bench --backends tch --model "$model" --device "$dev" --compute "$c" \
      --batch-sizes "$batches" --questions "$questions" --force-steps 8 --threads "$threads" --out "$b" &&
      run "bench_${shape}_${c}_transformers" "$python" "$root/scripts/bench_peers.py" --engines transformers \
        --checkpoint "$model" --device "$dev" --dtype "$c" --batch-sizes "$batches" --force-steps 8 \
        --threads "$threads" --out "$b" && benches+=("$b/bench.csv")
  done
  rm -rf "$model" # t5-large is 3 GB in fp32
done
[ "${#benches[@]}" -gt 0 ] && run peers check peers "${benches[@]}" && cat "$out/logs/peers.log"

# 5. training speed and peak GPU memory: cbqa train vs transformers, AdaFactor, bf16
run train_speed "$python" "$root/scripts/bench_train.py" --bin "$bin" "${train_peer[@]}" --rounds 1 \
  --device "$dev" --precision bf16 --threads "$threads" --csv "$out/train_speed.csv" &&
  tail -n 5 "$out/logs/train_speed.log"

rm -rf "$out/init" "$out"/train_*/checkpoint-* # keep the logs, not the weights
"$python" "$helper" summary "$out"
