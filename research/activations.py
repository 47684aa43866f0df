"""ReLU, tanh and SiLU networks under the local rule (issue 24, item 4), on scikit-learn's 8x8 digits.

The MLP 64-128-64-10 of docs/ablation.md ("Convolutional layers") with each hidden activation, trained by
``LocalLearner(model, activity=...)`` (``localstdp.activity``: "sigmoid" = the rule reads sigmoid(z) of
the layer's output, "map" = the activation's output mapped into [0, 1]; "module" = the nn.Sigmoid network
as today) and by backprop (Adam + cross-entropy) on the same network. Every choice on the VALIDATION
split; ``--test`` reads the test split for settings already chosen. Results: docs/activations.md.

    OMP_NUM_THREADS=1 .venv/bin/python research/activations.py --seeds 0 1 2 --lrs 0.1 0.3 1 3 \
        --families center digits-center --variants local:sigmoid:module local:relu:sigmoid local:relu:map \
        local:tanh:sigmoid local:tanh:map local:silu:sigmoid local:silu:map
    OMP_NUM_THREADS=1 .venv/bin/python research/activations.py --seeds 0 1 2 \
        --lrs 0.0001 0.0002 0.0005 0.001 0.002 0.005 0.01 0.02 --variants backprop:sigmoid backprop:relu backprop:tanh
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
from digits_common import FAMILIES, digits, report, train_backprop, train_local
from torch import nn

ACTS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}


def network(act: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    A = ACTS[act]
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), A(), nn.Linear(128, 64), A(), nn.Linear(64, 10))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0])
    ap.add_argument("--families", nargs="+", default=["center"], help="local rule options (ignored by backprop)")
    ap.add_argument("--variants", nargs="+", default=["local:sigmoid:module", "local:relu:sigmoid", "local:relu:map"])
    ap.add_argument("--test", action="store_true", help="read the TEST split (only for the chosen settings)")
    ap.add_argument("--json", default=None, help="append one JSON line per setting here")
    args = ap.parse_args()
    ds = digits()
    for variant, family, lr in itertools.product(args.variants, args.families, args.lrs):
        method, act, *rest = variant.split(":")
        if method == "backprop" and family != args.families[0]:
            continue
        t0 = time.perf_counter()
        if method == "local":
            opts = FAMILIES[family] | {"activity": rest[0], "lr": lr}
            accs = [train_local(network(act, s), ds, (64,), s, args.epochs, args.test, **opts) for s in args.seeds]
        else:
            accs = [train_backprop(network(act, s), ds, (64,), s, args.epochs, lr, args.test) for s in args.seeds]
        row = {"method": method, "act": act, "activity": rest[0] if rest else "-",
               "family": family if method == "local" else "-", "lr": lr, "split": "test" if args.test else "val"}
        report(row, accs, t0, args.json)


if __name__ == "__main__":
    main()
