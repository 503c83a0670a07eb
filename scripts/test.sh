#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up, fixtures, lint, the inference-only build, tests
# in both build configurations (default features, and inference-only without libtorch).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || { echo "test.sh: cargo not found; install Rust with rustup" >&2; exit 1; }
# Reference fixtures from transformers are committed; recreate them if someone removed them.
for f in t5_v1_0 t5_v1_1; do
  [ -f "tests/fixtures/$f/reference.safetensors" ] || { .venv/bin/python scripts/make_fixtures.py; break; }
done
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo check, no features at all (no backend, no libtorch)"
cargo check --no-default-features
echo "== inference-only build (no libtorch)"
cargo build --no-default-features --features ort,tract
if ldd target/debug/cbqa | grep -q torch; then
  echo "test.sh: the inference-only binary links libtorch" >&2; exit 1
fi
doctor=$(target/debug/cbqa doctor)
grep -q 'not built in' <<<"$doctor" || { echo "test.sh: inference-only binary reports libtorch" >&2; exit 1; }
# Reduced-precision results depend on the CPU's integer kernels: say which ones this run has.
grep 'cpu (int8)' <<<"$doctor" || true
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
# The examples (examples/serve.rs, the embedding example over cbqa::serve) must keep building.
cargo build --examples
cargo test --all-targets "$@"
cargo test --doc
echo "== Python package (python/: build into .venv, pytest against the default-features binary"
echo "   just built; the Ray and torchrun tests run on 127.0.0.1)"
python/test.sh
echo "== cargo test, inference-only build (no libtorch: the ort and tract tests)"
cargo test --no-default-features --features ort,tract --tests "$@"
