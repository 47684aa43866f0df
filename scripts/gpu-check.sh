#!/usr/bin/env bash
# The GPU checks of issue 15 item 5: the headline benchmark (plus the shipped configs, a few batches
# each) and one training run on CUDA, through the same code as on the CPU (`--device cuda`).
# Writes benchmarks/bench-cuda.json beside the CPU's benchmarks/bench.json, and the training run's
# metrics to gpu-check-out/train/metrics.json. Without a GPU it says so and exits 0 (nothing to check).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-benchmarks/bench-cuda.json}
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu-check: no CUDA device is available (torch.cuda.is_available() is False); nothing to check"
    exit 0
fi
"$PY" -c 'import torch; print("gpu-check:", torch.cuda.get_device_name(0), "torch", torch.__version__)'
"$PY" -m localstdp bench --quick --device cuda --configs --out "$OUT" --force
"$PY" -m localstdp train --config src/localstdp/configs/mnist-10.toml --device cuda --epochs 1 \
    --out gpu-check-out/train --no-progress
echo "gpu-check: wrote $OUT and gpu-check-out/train/metrics.json"
