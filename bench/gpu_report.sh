#!/usr/bin/env bash
# The GPU report in one call (under 10 minutes on an H100/H200): tests on CUDA, benchmarks,
# autotune cache reuse, and a dated results file under bench/results/. Usage:
#   bash bench/gpu_report.sh [--quick] [--skip peaks,tests,bench,cache,tuned,overhead]
set -uo pipefail
cd "$(dirname "$0")/.."
# The GPU image has torch, triton, pytest and pytest-benchmark but no network: install bltriton
# itself without dependencies or build isolation.
if ! python3 -m pip install -q --no-deps --no-build-isolation -e .; then
  # No usable setuptools: lay the package out by hand (bltriton/ with kernels/ as bltriton.kernels).
  site=$(mktemp -d)
  cp -r bltriton "$site/bltriton" && cp -r kernels "$site/bltriton/kernels" || exit 1
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  echo "gpu_report: pip install failed; using PYTHONPATH=$site" >&2
fi
export PYTHONUNBUFFERED=1
python3 -m bench.gpu_report "$@"
