#!/usr/bin/env bash
# The two algorithms on CUDA in one short call (about 4 minutes): per-layer spectral vs spatial
# (with their agreement) for ResNet-18 b128 and the FCN b64, then whole-model steps eager and
# under CUDA graphs. Writes under $OUT (or bench/results/) a dated JSON and the logs.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || true
export PYTHONUNBUFFERED=1 BLTRITON_AUTOTUNE=0
out=${OUT:-bench/results}
stem="$out/$(date -u +%F)-$(python3 -c 'import torch,re;print(re.sub(r"[^A-Za-z0-9]+","-",torch.cuda.get_device_name()).strip("-"))')-algorithms"
python3 -c "import bltriton.kernels" || { echo "bltriton.kernels does not import"; exit 1; }
timeout 60 python3 -m bench.algorithms --device cuda --model resnet18 --batch 128 --reps 9 --json "$stem.json" 2>&1 | tee "$stem-resnet.log"
timeout 40 python3 -m bench.algorithms --device cuda --model fcn --batch 64 --reps 9 --json "$stem.json" 2>&1 | grep -v Warn | tee "$stem-fcn.log"
timeout 150 python3 -m bench.gpu_overhead --quick --out "$out" 2>&1 | grep -v "Warn\|USDT" | tee "$stem-overhead.log"
# Experiments for the spatial algorithm's GPU work under CUDA graphs (TF32 GEMMs, one-GEMM
# projections); skipped unless asked: EXPERIMENTS=1 bash bench/gpu_algorithms.sh
if [ "${EXPERIMENTS:-0}" = "1" ]; then
  timeout 150 python3 -m bench.gpu_overhead --quick --tf32-matmul --direct-ratio 100 --out "$out/experiment" 2>&1 | grep -v "Warn\|USDT" | tee "$stem-experiment.log"
fi
