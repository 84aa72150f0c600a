#!/usr/bin/env bash
# One-step set-up on a fresh machine: installs bltriton (editable) with its test/demo extras.
# torch is installed only when missing, pinned to a release that has CPU and CUDA wheels; an
# existing torch (e.g. a CUDA build) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
if ! "$PY" -c "import triton" >/dev/null 2>&1; then
  "$PY" -m pip install -q "triton==3.8.0" || echo "setup: triton not installed; the torch backend still works" >&2
fi
"$PY" -m pip install -q -e ".[test]"
