#!/usr/bin/env bash
# Idempotent project set-up: a venv in .venv with the pinned native stack and the test oracle.
#   torch        -> libtorch for the `tch` crate (tch 0.24 checks for torch 2.11.0)
#   onnxruntime  -> libonnxruntime.so for the `ort` crate (loaded at run time, never downloaded)
#   transformers, safetensors, onnx, sentencepiece, optimum-onnx -> the reference implementation
# It also makes two stable links that the build and the binary use, whatever the Python version:
#   .venv/libtorch          -> site-packages/torch            (LIBTORCH in .cargo/config.toml)
#   .venv/libonnxruntime.so -> onnxruntime/capi/libonnxruntime.so.1.31.1
# Usage: scripts/setup.sh [--gpu]   (--gpu installs onnxruntime-gpu instead of onnxruntime)
# A second run only checks a stamp file and returns at once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
gpu=0
for a in "$@"; do
  case "$a" in
    --gpu) gpu=1 ;;
    *) echo "setup.sh: unknown argument '$a' (expected --gpu)" >&2; exit 2 ;;
  esac
done
req="$root/scripts/requirements.txt"
ort_pkg="onnxruntime==1.31.1"
[ "$gpu" = 1 ] && ort_pkg="onnxruntime-gpu==1.31.1"
stamp="$venv/.cbqa-setup-$( (cat "$req"; echo "$ort_pkg") | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ -e "$venv/libtorch/lib" ] && [ -e "$venv/libonnxruntime.so" ]; then
  exit 0
fi
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
  echo "setup.sh: need Python >= 3.10 as '$python' (set PYTHON=/path/to/python3)" >&2; exit 1
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
if [ "$gpu" = 1 ]; then
  "$venv/bin/python" -m pip uninstall --quiet -y onnxruntime 2>/dev/null || true
else
  "$venv/bin/python" -m pip uninstall --quiet -y onnxruntime-gpu 2>/dev/null || true
fi
# The installed stack takes ~6 GB (torch's CUDA wheels from PyPI are most of it); the test suite's
# builds add ~8 GB. Say so before pip fails half-way with "No space left on device".
free_gb=$(df -Pk "$root" | awk 'NR==2 {print int($4 / 1048576)}')
if [ "${free_gb:-0}" -lt 8 ]; then
  echo "setup.sh: warning: only ${free_gb} GB free on $(df -P "$root" | awk 'NR==2 {print $6}');" \
    "the venv needs ~6 GB and make test's builds ~8 GB more" >&2
fi
echo "setup.sh: installing the pinned Python stack into $venv (first run downloads ~3 GB of wheels)"
# --no-cache-dir: no second copy of the wheels in ~/.cache/pip (the venv is the cache).
"$venv/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check \
  -r "$req" "$ort_pkg"
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
ln -sfn "$site/torch" "$venv/libtorch"
ortlib="$(ls "$site"/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n1 || true)"
if [ -z "$ortlib" ]; then
  echo "setup.sh: $ort_pkg installed no onnxruntime/capi/libonnxruntime.so.*" >&2; exit 1
fi
ln -sfn "$ortlib" "$venv/libonnxruntime.so"
rm -f "$venv"/.cbqa-setup-*
touch "$stamp"
echo "setup.sh: venv ready at $venv"
