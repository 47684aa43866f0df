"""A narrow two-conv-layer stack under the local rule (issue 24, item 5), on scikit-learn's 8x8 digits.

The issue's network: Conv2d(1, 8, 3, padding 1) + sigmoid + 2x2 max-pool, Conv2d(8, 16, 3, padding 1) +
sigmoid + 2x2 max-pool, 32 hidden units (sigmoid), dropout 0.1, 10 outputs. Trained by ``LocalLearner``
with a conv teaching (``conv_teaching``: "pooled", the default; "readout", a fixed random readout per conv
layer, ``localstdp.rules.readout``; "none", frozen random convs) or by backprop (Adam + cross-entropy)
on the same network, 30 epochs of batch 32. Every choice on the VALIDATION split; ``--test`` reads the test
split for settings already chosen. Results: docs/ablation.md, "Deep conv stacks".

    OMP_NUM_THREADS=1 .venv/bin/python research/deep_conv.py --seeds 0 1 2 --lrs 0.5 1 2 \
        --variants local:pooled:1 local:pooled:3 local:pooled:10 local:readout:3 local:readout:10 \
        local:readout:30 local:none:1
    OMP_NUM_THREADS=1 .venv/bin/python research/deep_conv.py --seeds 0 1 2 \
        --lrs 0.0001 0.0003 0.001 0.002 0.003 0.005 0.01 0.03 0.1 --variants backprop
    (rounds 2 and 3 and the test runs: docs/ablation.md, "Deep conv stacks")
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
from digits_common import FAMILIES, digits, report, train_backprop, train_local
from torch import nn


def network(seed: int, width: tuple[int, int, int] = (8, 16, 32)) -> nn.Module:
    torch.manual_seed(seed)
    c1, c2, h = width
    return nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.Sigmoid(), nn.MaxPool2d(2),
                         nn.Conv2d(c1, c2, 3, padding=1), nn.Sigmoid(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(c2 * 4, h), nn.Sigmoid(), nn.Dropout(0.1), nn.Linear(h, 10))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--families", nargs="+", default=["center"], help="local rule options (ignored by backprop)")
    ap.add_argument("--variants", nargs="+", default=["local:pooled:3", "local:readout:10", "backprop"],
                    help="local:TEACHING:CONV_LR_SCALE or backprop (then --lrs are Adam's)")
    ap.add_argument("--test", action="store_true", help="read the TEST split (only for the chosen settings)")
    ap.add_argument("--json", default=None, help="append one JSON line per setting here")
    args = ap.parse_args()
    ds = digits()
    for variant, family, lr in itertools.product(args.variants, args.families, args.lrs):
        method, *rest = variant.split(":")
        if method == "backprop" and family != args.families[0]:
            continue
        t0 = time.perf_counter()
        if method == "local":
            opts = FAMILIES[family] | {"lr": lr, "conv_teaching": rest[0], "conv_lr_scale": float(rest[1])}
            accs = [train_local(network(s), ds, (1, 8, 8), s, args.epochs, args.test, **opts) for s in args.seeds]
        else:
            accs = [train_backprop(network(s), ds, (1, 8, 8), s, args.epochs, lr, args.test) for s in args.seeds]
        row = {"method": method, "teaching": rest[0] if rest else "-", "conv_lr_scale": float(rest[1]) if rest else None,
               "family": family if method == "local" else "-", "lr": lr, "split": "test" if args.test else "val"}
        report(row, accs, t0, args.json)


if __name__ == "__main__":
    main()
