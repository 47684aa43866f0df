#!/usr/bin/env bash
# Re-choose the settings of the four paper tasks on the VALIDATION split, with the same budget for
# every method of the panel: 5 grid points x 3 seeds each (docs/evaluation.md). Each step starts
# from the previous step's chosen config, so backprop-wd / -es / -mse build on backprop's chosen
# optimiser. Writes docs/tune/<task>/<method>/{tune.json,tune.md,config.toml}; the shipped configs
# are then edited by hand to the chosen values, with the searched grids in their comments.
# Usage: OMP_NUM_THREADS=1 scripts/tune-paper-configs.sh [TASK ...]   (about 3 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-docs/tune}
tasks=("$@"); [ ${#tasks[@]} -gt 0 ] || tasks=(iris mnist-0v1 mnist-3v5 mnist-4v9)
for task in "${tasks[@]}"; do
    if [ "$task" = iris ]; then
        local_lr=0.05,0.1,0.2,0.5,1.0; bp_lr=0.001,0.003,0.01,0.03,0.1
    else
        local_lr=0.02,0.05,0.1,0.2,0.5; bp_lr=0.0003,0.001,0.003,0.01,0.03
    fi
    wd=0.0003,0.001,0.003,0.01,0.03
    d=$OUT/$task
    prev=configs/$task.toml
    for step in "local train.lr=$local_lr" "backprop backprop.lr=$bp_lr" "backprop-wd backprop.weight_decay=$wd" \
                "backprop-es backprop.lr=$bp_lr" "backprop-mse backprop.lr=$bp_lr" \
                "linear backprop.weight_decay=0.0001,0.001,0.01,0.1,1.0" \
                "random-features backprop.weight_decay=0.00001,0.0001,0.001,0.01,0.1"; do
        set -- $step
        # a finished step is kept (the script can be stopped and run again)
        [ -f "$d/$1/tune.json" ] || "$BIN"/localstdp tune --config "$prev" --rule "$1" --grid "$2" --out "$d/$1" --no-progress
        prev=$d/$1/config.toml
    done
done
