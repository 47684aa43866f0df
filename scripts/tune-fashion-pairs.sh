#!/usr/bin/env bash
# Choose the settings of the Fashion-MNIST pair tasks (issue 23) on the VALIDATION split, with the same
# budget for every method: 5 grid points x 3 seeds each, the tie rule of `localstdp tune`. Each step
# starts from the previous step's chosen config (backprop-wd from backprop's chosen rate). Writes
# docs/tune/<task>/<method>/{tune.json,tune.md,config.toml}; the shipped configs are then edited to the
# chosen values, with the searched grids in their comments. A finished step is kept (stop and rerun).
# The local rule was first searched over {0.02, 0.05, 0.1, 0.2, 0.5} (docs/tune/<task>/local-first-grid): its choice
# was the grid's lowest point, so the grid moved down; the later steps do not read the local rule's rate.
# Usage: OMP_NUM_THREADS=1 scripts/tune-fashion-pairs.sh [TASK ...]   (about 10 minutes per task on one core)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-docs/tune}
tasks=("$@"); [ ${#tasks[@]} -gt 0 ] || tasks=(fashion-0v6 fashion-2v6)
for task in "${tasks[@]}"; do
    d=$OUT/$task
    prev=src/localstdp/configs/$task.toml
    for step in "local train.lr=0.002,0.005,0.01,0.02,0.05" "backprop backprop.lr=0.0003,0.001,0.003,0.01,0.03" \
                "backprop-wd backprop.weight_decay=0.0003,0.001,0.003,0.01,0.03" \
                "linear backprop.weight_decay=0.0001,0.001,0.01,0.1,1.0" \
                "random-features backprop.weight_decay=0.00001,0.0001,0.001,0.01,0.1"; do
        set -- $step
        [ -f "$d/$1/tune.json" ] || "$BIN"/localstdp tune --config "$prev" --rule "$1" --grid "$2" --out "$d/$1" --no-progress
        prev=$d/$1/config.toml
    done
done
