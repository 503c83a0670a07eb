#!/usr/bin/env bash
# The Python package's step of scripts/test.sh: build cbqa's extension into the project venv
# (`maturin develop`: cargo rebuilds only what changed, so a second run takes seconds), lint it,
# and run its pytest suite (parity with the cbqa binary, which must be built: CBQA_BIN, else
# $CARGO_TARGET_DIR/debug/cbqa, else target/debug/cbqa). Bounded in time.
#   CBQA_PY_TARGET_DIR  cargo's target directory for the extension (default python/target), kept
#                       apart from the main build's so the two feature sets do not thrash.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="$root/.venv"
[ -x "$venv/bin/maturin" ] || { echo "python/test.sh: $venv/bin/maturin missing; run scripts/setup.sh" >&2; exit 1; }
cd "$here"
# the binary the tests compare with: the main build's, before CARGO_TARGET_DIR is redirected
export CBQA_BIN="${CBQA_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/cbqa}"
export CARGO_TARGET_DIR="${CBQA_PY_TARGET_DIR:-$here/target}"
export PYO3_PYTHON="$venv/bin/python"
echo "== python/: cargo fmt --check, clippy"
cargo fmt -- --check
timeout 1800 cargo clippy --all-targets -- -D warnings
echo "== python/: maturin develop --release (into $venv)"
VIRTUAL_ENV="$venv" timeout 1800 "$venv/bin/maturin" develop --release --quiet
echo "== python/: pytest"
timeout 900 "$venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
