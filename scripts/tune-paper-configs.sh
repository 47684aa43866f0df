#!/usr/bin/env bash
# Re-choose the settings of the four paper tasks on the VALIDATION split, with the same budget for
# every method of the panel: 4 grid points x 3 seeds each (docs/evaluation.md). Each step starts
# from the previous step's chosen config, so backprop-wd / -es / -mse build on backprop's chosen
# optimiser. Writes docs/tune/<task>/<method>/{tune.json,tune.md,config.toml}; the shipped configs
# are then edited by hand to the chosen values, with the searched grids in their comments.
# Usage: scripts/tune-paper-configs.sh [TASK ...]   (about 10 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-docs/tune}
tasks=("$@"); [ ${#tasks[@]} -gt 0 ] || tasks=(iris mnist-0v1 mnist-3v5 mnist-4v9)
for task in "${tasks[@]}"; do
    if [ "$task" = iris ]; then
        local_lr=0.1,0.2,0.5,1.0; bp_lr=0.001,0.003,0.01,0.03
    else
        local_lr=0.05,0.1,0.2,0.5; bp_lr=0.0003,0.001,0.003,0.01
    fi
    wd=0.001,0.003,0.01,0.03
    cfg=configs/$task.toml
    d=$OUT/$task
    "$BIN"/localstdp tune --config "$cfg" --rule local --grid train.lr=$local_lr --out "$d/local" --no-progress
    "$BIN"/localstdp tune --config "$d/local/config.toml" --rule backprop --grid backprop.lr=$bp_lr --out "$d/backprop" --no-progress
    "$BIN"/localstdp tune --config "$d/backprop/config.toml" --rule backprop-wd --grid backprop.weight_decay=$wd --out "$d/backprop-wd" --no-progress
    "$BIN"/localstdp tune --config "$d/backprop-wd/config.toml" --rule backprop-es --grid backprop.lr=$bp_lr --out "$d/backprop-es" --no-progress
    "$BIN"/localstdp tune --config "$d/backprop-es/config.toml" --rule backprop-mse --grid backprop.lr=$bp_lr --out "$d/backprop-mse" --no-progress
done
