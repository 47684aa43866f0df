#!/usr/bin/env bash
# Choose the settings of the fashion-mnist-small task (issue 23: ten-class Fashion-MNIST on the
# 784-128-64-10 network) on the VALIDATION split, with the same budget for every method: 4 grid
# points x 3 seeds each, the tie rule of `localstdp tune`. backprop-wd starts from backprop's chosen
# rate; the others from the shipped config. Writes docs/tune/fashion-mnist-small/<method>/
# {tune.json,tune.md,config.toml}; the shipped config is then edited to the chosen values, with the
# searched grids in its comments. A finished step is kept (stop and rerun).
# local-first-grid is the local rule's first grid, kept.
# Usage: OMP_NUM_THREADS=1 scripts/tune-fashion-small.sh   (about 45 minutes on one core)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
d=${OUT:-docs/tune}/fashion-mnist-small
cfg=src/localstdp/configs/fashion-mnist-small.toml
step() {  # DIR METHOD GRID FROM
    [ -f "$d/$1/tune.json" ] || "$BIN"/localstdp tune --config "$4" --rule "$2" --grid "$3" --out "$d/$1" --no-progress
}
step local-first-grid local train.lr=0.1,0.2,0.5,1.0 "$cfg"   # chose its edge (1.0), so the grid moved up:
step local local train.lr=0.5,1.0,2.0,4.0 "$cfg"
step backprop backprop backprop.lr=0.0005,0.001,0.002,0.004 "$cfg"
step backprop-wd backprop-wd backprop.weight_decay=0.00003,0.0001,0.0003,0.001 "$d/backprop/config.toml"
step linear linear backprop.weight_decay=0.00001,0.0001,0.001,0.01 "$cfg"
step random-features random-features backprop.weight_decay=0.000001,0.00001,0.0001,0.001 "$cfg"
