#!/usr/bin/env bash
# Export time, peak memory and directory size: `cbqa export` vs `optimum-cli export onnx`, on the
# same t5-small-shaped random checkpoint (cbqa init --preset t5-small, ~242 MB), in one run.
#
#   scripts/bench_export.sh [WORKDIR]      (default: a fresh temp dir, removed at the end)
#
# cbqa is timed twice: without validation (the export itself) and with the default validation
# (ONNX Runtime + tract against the reference forward pass). optimum runs with its defaults
# (`optimum-cli export onnx --task text2text-generation-with-past`): it traces with torch, merges
# the decoders and validates against PyTorch, so cbqa's validated --merged run is the closest
# like-for-like comparison; the unvalidated runs show the cost of writing alone.
# Peak memory is the maximum resident set size from GNU time (/usr/bin/time -v), or Python's
# resource module when GNU time is missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$root/.venv/bin/python"
[ -x "$py" ] || { echo "no $py: run scripts/setup.sh first" >&2; exit 1; }
work="${1:-$(mktemp -d)}"
[ -n "${1:-}" ] || trap 'rm -rf "$work"' EXIT
cd "$root"
cargo build --release --no-default-features --features ort,tract -q
cbqa="$root/target/release/cbqa"

# Random t5-small weights (vocab 32128) with the fixtures' small tokenizer: enough for timing.
"$cbqa" init --preset t5-small --tokenizer tests/fixtures/t5_v1_0/tokenizer.json --out "$work/ckpt" --force >/dev/null

measure() { # label, command...
  local label="$1"; shift
  "$py" - "$label" "$@" <<'PY'
import resource, subprocess, sys, time
label, cmd = sys.argv[1], sys.argv[2:]
t = time.perf_counter()
p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
dt = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
if p.returncode:
    sys.stderr.write(p.stderr[-3000:])
    sys.exit(f"{label}: failed")
print(f"{label:<40} {dt:8.2f} s   peak RSS {rss:8.0f} MiB")
PY
}

size() { du -sb "$1" | cut -f1; }

echo "checkpoint: $(size "$work/ckpt") bytes ($work/ckpt)"
measure "cbqa export (no validation)" "$cbqa" export --model "$work/ckpt" --out "$work/cbqa" --no-validate --force
measure "cbqa export --merged (no validation)" "$cbqa" export --model "$work/ckpt" --out "$work/cbqa_merged" --merged --no-validate --force
measure "cbqa export (validated: ORT + tract)" "$cbqa" export --model "$work/ckpt" --out "$work/cbqa_v" --force
measure "optimum-cli export onnx" "$root/.venv/bin/optimum-cli" export onnx --model "$work/ckpt" \
  --task text2text-generation-with-past "$work/optimum"
ck=$(size "$work/ckpt")
for d in cbqa cbqa_merged optimum; do
  s=$(size "$work/$d")
  "$py" -c "print(f'{\"$d\":<14} {$s:>12} bytes  {$s/$ck:.2f}x the checkpoint')"
done
