#!/usr/bin/env bash
# Coverage-guided fuzzing of cbqa's readers (cargo-fuzz / libFuzzer on the nightly toolchain).
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 600 s, every target)
# Runs under `nice -n 19`, one target after another, one job each. Seeds: fuzz/seeds/<target>
# (committed); the growing corpus: fuzz/corpus/<target> (not committed). Each run's last stats
# line goes to fuzz/results.tsv (target, seconds, executions, crashes); crashes to
# fuzz/artifacts/<target>. Stated allocation cap: 512 MB per allocation (-malloc_limit_mb),
# 2 GB RSS; a hang is an input taking over 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(data config_json safetensors pickle msgpack tf_bundle spiece onnx_dir predictions corpus serve_request)
fi
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz --locked" >&2; exit 1; }
rustup toolchain list | grep -q nightly || { echo "the nightly toolchain is missing: rustup toolchain install nightly" >&2; exit 1; }
# On a shared machine, builds wait for the lock in $CBQA_CPU_LOCK (if set).
lock=()
[ -n "${CBQA_CPU_LOCK:-}" ] && lock=(flock "$CBQA_CPU_LOCK")
# The onnx_dir target copies its graphs from an export of the t5_v1_0 fixture.
export CBQA_FUZZ_EXPORT=${CBQA_FUZZ_EXPORT:-$PWD/target/fuzz-export/t5_v1_0}
if [ ! -f "$CBQA_FUZZ_EXPORT/decoder_with_past_model.onnx" ]; then
  "${lock[@]}" cargo run --quiet --release -- export --model tests/fixtures/t5_v1_0 --out "$CBQA_FUZZ_EXPORT" --no-validate --force
fi
# CBQA_FUZZ_NO_BUILD=1: run the binaries already built.
# Not niced: a build holding a shared lock at nice 19 starves every waiter behind it.
[ -n "${CBQA_FUZZ_NO_BUILD:-}" ] || "${lock[@]}" cargo +nightly fuzz build -O
bin=fuzz/target/x86_64-unknown-linux-gnu/release
results=fuzz/results.tsv
[ -f "$results" ] || printf 'target\tseconds\texecutions\tcrashes\tfinished\n' > "$results"
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="fuzz/artifacts/$t/last-run.log"
  set +e
  nice -n 19 "$bin/$t" "fuzz/corpus/$t" "fuzz/seeds/$t" \
    -max_total_time="$secs" -timeout=10 -malloc_limit_mb=512 -rss_limit_mb=2048 \
    -max_len=65536 -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 > "$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  crashes=$(find "fuzz/artifacts/$t" -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\n' "$t" "$secs" "${execs:-0}" "$crashes" "$(date -u +%FT%TZ)" | tee -a "$results"
  [ $rc -eq 0 ] || echo "$t: libFuzzer exited with $rc (see $log)" >&2
done
