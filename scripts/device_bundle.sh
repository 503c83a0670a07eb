#!/usr/bin/env bash
# Make device-bundle/ (git-ignored): what the GPU machine needs besides the git working tree, laid
# out like the checkout so scripts/gpu_check.sh runs the same in both:
#   device-bundle/cbqa                      stripped release binary (default features: tch, ort, tract)
#   device-bundle/scripts/                  gpu_check.sh, gpu_check.py, bench_peers.py, bench_train.py
#   device-bundle/tests/fixtures/t5_v1_*/   the two fixture models (without the reference tensors)
#   device-bundle/eval/demo/                the 200 NQ-open questions the check trains and evaluates on
#   device-bundle/MANIFEST.txt              commit, libtorch it was built against, sha256 of the binary
# It prints the bundle's size (with the working tree: the device tool carries both, 64 MiB at most),
# the `carry` list for the device tool and the one command to run there.
#   scripts/device_bundle.sh [--no-build] [--self-test]
# --self-test runs the bundled binary with LD_LIBRARY_PATH set to the venv's torch/lib alone (ldd
# must resolve every libtorch library there and nowhere else): `cbqa doctor` and a tch evaluation
# on a fixture, as the GPU machine runs it against its own torch 2.11.0.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build=1 selftest=0
for a in "$@"; do
  case "$a" in
    --no-build) build=0 ;;
    --self-test) selftest=1 ;;
    *) echo "device_bundle.sh: unknown argument '$a' (expected --no-build, --self-test)" >&2; exit 2 ;;
  esac
done
target="${CARGO_TARGET_DIR:-$root/target}"
binary="$target/release/cbqa"
bundle="$root/device-bundle"
limit_mib=64

if [ "$build" = 1 ]; then
  scripts/setup.sh
  cargo build --release --bin cbqa
fi
[ -x "$binary" ] || { echo "device_bundle.sh: $binary not built (run without --no-build)" >&2; exit 1; }

# Stage next to the bundle, then swap it in, so a failed run leaves the old bundle whole.
stage="$(mktemp -d "$root/.device-bundle.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
chmod 755 "$stage"
mkdir -p "$stage/scripts" "$stage/tests/fixtures" "$stage/eval/demo"
objcopy --strip-all "$binary" "$stage/cbqa"
cp scripts/gpu_check.sh scripts/gpu_check.py scripts/bench_peers.py scripts/bench_train.py "$stage/scripts/"
for f in t5_v1_0 t5_v1_1; do
  mkdir -p "$stage/tests/fixtures/$f"
  for part in config.json generation_config.json model.safetensors tokenizer.json \
    special_tokens_map.json tokenizer_config.json; do
    cp "tests/fixtures/$f/$part" "$stage/tests/fixtures/$f/"
  done
done
cp eval/demo/nq-open-200.jsonl "$stage/eval/demo/"
torch_version="$(.venv/bin/python -c 'import torch; print(torch.__version__)')"
{
  echo "commit     $(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' (with uncommitted changes)')"
  echo "built      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "libtorch   torch $torch_version (tch 0.24); run with LD_LIBRARY_PATH=<python3's torch>/lib"
  echo "sha256     $(sha256sum "$stage/cbqa" | cut -d' ' -f1)  cbqa"
} >"$stage/MANIFEST.txt"
rm -rf "$bundle"
mv "$stage" "$bundle"
trap - EXIT

bundle_b=$(du -sb "$bundle" | cut -f1)
tree_b=$(git ls-files -z | du -cb --files0-from=- 2>/dev/null | tail -n1 | cut -f1)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
echo "device_bundle.sh: $bundle is $(mib "$bundle_b") MiB (binary $(mib "$(stat -c %s "$bundle/cbqa")") MiB);" \
  "with the working tree ($(mib "$tree_b") MiB) $(mib $((bundle_b + tree_b))) MiB of the ${limit_mib} MiB a run may bring"
if [ $((bundle_b + tree_b)) -ge $((limit_mib * 1048576)) ]; then
  echo "device_bundle.sh: over the device tool's ${limit_mib} MiB" >&2; exit 1
fi
echo "carry:   [\"device-bundle\"]"
echo "command: bash device-bundle/scripts/gpu_check.sh    (results in \$OUT as they come; estimated 4-6 minutes, never measured; timeout_s 420)"
echo "rerun:   GPU_CHECK_SHAPES=t5-base GPU_CHECK_STEPS=100 GPU_CHECK_QUESTIONS=64 bash device-bundle/scripts/gpu_check.sh"

# run_as_device CMD...: CMD with torch 2.11's lib folder at another path and the build's own
# libtorch folder hidden (a private mount namespace: the binary's rpath and recorded libtorch_cuda.so
# lead nowhere, as on the GPU machine), LD_LIBRARY_PATH naming only that other path. Without
# `unshare -m` (no privilege) the build's path stays visible and it says so.
run_as_device() {
  if [ "$hidden" = 1 ]; then
    unshare -m bash -c 'mount --bind "$1" "$2" && mount --bind "$3" "$1" && shift 3 && exec "$@"' \
      _ "$site" "$view" "$empty" env LD_LIBRARY_PATH="$torchlib" "$@"
  else
    env LD_LIBRARY_PATH="$torchlib" "$@"
  fi
}

self_test() {
  site="$(dirname "$(readlink -f .venv/libtorch)")"
  view="$(mktemp -d)" empty="$(mktemp -d)" out="$(mktemp -d)"
  trap 'rm -rf "$view" "$empty" "$out"' RETURN
  hidden=0 torchlib="$site/torch/lib"
  if unshare -m true 2>/dev/null; then
    hidden=1 torchlib="$view/torch/lib"
  else
    echo "device_bundle.sh: unshare -m is not permitted: the build's libtorch path stays visible" >&2
  fi
  echo "== self-test: $bundle/cbqa with LD_LIBRARY_PATH=$torchlib only (torch $torch_version)"
  deps="$(run_as_device ldd "$bundle/cbqa")"
  echo "$deps" | grep -E 'libtorch|libc10'
  if echo "$deps" | grep -E 'libtorch|libc10' | grep -v -F "$torchlib/" | grep -q .; then
    echo "device_bundle.sh: a libtorch library resolves outside $torchlib" >&2; return 1
  fi
  if echo "$deps" | grep -q 'not found'; then
    echo "device_bundle.sh: unresolved libraries:" >&2; echo "$deps" | grep 'not found' >&2; return 1
  fi
  doctor="$(run_as_device "$bundle/cbqa" doctor)"
  echo "$doctor"
  grep -q 'torch 2.11.0' <<<"$doctor" || { echo "device_bundle.sh: doctor names no torch 2.11.0" >&2; return 1; }
  grep -q 'libtorch_cuda.so loaded\|available' <<<"$doctor" ||
    { echo "device_bundle.sh: libtorch_cuda.so did not load" >&2; return 1; }
  run_as_device "$bundle/cbqa" eval --backend tch --model "$bundle/tests/fixtures/t5_v1_1" \
    --data "$bundle/eval/demo/nq-open-200.jsonl" --limit 20 --beams 4 --out "$out/eval"
  rows=$(($(wc -l <"$out/eval/predictions.csv") - 1))
  [ "$rows" = 20 ] || { echo "device_bundle.sh: the tch eval wrote $rows predictions, not 20" >&2; return 1; }
  echo "device_bundle.sh: self-test passed (build's libtorch hidden: $([ "$hidden" = 1 ] && echo yes || echo no);" \
    "doctor, tch beam-4 eval of 20 questions on torch $torch_version)"
}

if [ "$selftest" = 1 ]; then
  self_test
fi
