#!/usr/bin/env bash
# Choose the learning rate of the robustly trained families (issue 33: backprop-at, backprop-trades, local-at)
# on the four paper tasks on the VALIDATION split, with the budget every panel method had
# (scripts/tune-paper-configs.sh: 5 grid points x 3 seeds, mean validation accuracy, tune's tie rule), at
# their panel radius 0.1 (and TRADES' beta 6), fixed before this search. The grids are backprop's and the
# local rule's own. Writes docs/tune/<task>/<method>/{tune.json,tune.md,config.toml}; the shipped configs
# are then edited by hand to the chosen values ([methods.<name>.backprop] lr / [methods.local-at.train] lr).
# Usage: OMP_NUM_THREADS=1 scripts/tune-robust.sh [TASK ...]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-docs/tune}
JOBS=${JOBS:-2}
tasks=("$@"); [ ${#tasks[@]} -gt 0 ] || tasks=(iris mnist-0v1 mnist-3v5 mnist-4v9)
for task in "${tasks[@]}"; do
    if [ "$task" = iris ]; then
        local_lr=0.05,0.1,0.2,0.5,1.0; bp_lr=0.001,0.003,0.01,0.03,0.1
    else
        local_lr=0.02,0.05,0.1,0.2,0.5; bp_lr=0.0003,0.001,0.003,0.01,0.03
    fi
    for step in "backprop-at backprop.lr=$bp_lr" "backprop-trades backprop.lr=$bp_lr" "local-at train.lr=$local_lr"; do
        set -- $step
        # a finished step is kept (the script can be stopped and run again)
        [ -f "$OUT/$task/$1/tune.json" ] || "$BIN"/localstdp tune --config "configs/$task.toml" --rule "$1" \
            --grid "$2" --out "$OUT/$task/$1" --jobs "$JOBS" --no-progress
    done
done
