"""What should a conv channel be taught? The probe of issue 13 on scikit-learn's 8x8 digits.

A 16-channel 3x3 conv (padding 1) + sigmoid + 2x2 max-pool + 64 + 10 network trained by
``LocalLearner`` with each conv teaching of ``ConvParams`` (and a frozen random conv, "none"), next to
dense-only networks trained by the same rule; every choice is made on the VALIDATION split
(``DataConfig(name="digits")``: 1068 train / 189 validation / 540 test). The test split is read only
with ``--test`` for the chosen settings. Results: docs/ablation.md, "Convolutional layers".

    OMP_NUM_THREADS=1 .venv/bin/python research/conv_teaching.py --epochs 30 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch
from rows import emit
from torch import nn

from localstdp import LocalLearner
from localstdp.config import DataConfig
from localstdp.data import load_dataset

FAMILIES = {  # rule options besides lr: the defaults, the digits config's, each with the covariance rule
    "default": {},
    "center": {"center": 0.99},
    "digits": {"a_hi": 0.99, "a_lo": 0.01, "association": "pairs"},
    "digits-center": {"a_hi": 0.99, "a_lo": 0.01, "association": "pairs", "center": 0.99},
}


def network(kind: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "cnn":
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Sigmoid(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(256, 64), nn.Sigmoid(), nn.Linear(64, 10))
    if kind == "mlp64":
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.Sigmoid(), nn.Linear(64, 10))
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.Sigmoid(), nn.Linear(128, 64), nn.Sigmoid(),
                         nn.Linear(64, 10))


def run(ds, kind, teaching, lr, scale, family, seed, epochs, batch=32, test=False, tau=1.0):
    model = network(kind, seed)
    learner = LocalLearner(model, 10, lr=lr, seed=seed, conv_teaching=teaching, conv_lr_scale=scale, conv_tau=tau,
                           **({"center": 0.0} | FAMILIES[family]))
    x, y = ds.x_train.view(-1, 1, 8, 8), ds.y_train
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch):
            idx = perm[i : i + batch]
            learner.step(x[idx], y[idx])
    xs, ys = (ds.x_test, ds.y_test) if test else (ds.x_val, ds.y_val)
    with torch.no_grad():
        return float((model(xs.view(-1, 1, 8, 8)).argmax(1) == ys).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.1, 0.2, 0.5, 1.0])
    ap.add_argument("--variants", nargs="+", default=["cnn:position:1", "cnn:position:10", "cnn:pooled:1",
                    "cnn:pooled:10", "cnn:softhebb:1", "cnn:softhebb:0.1", "cnn:none:1", "mlp64:-:1", "mlp:-:1"])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--tau", type=float, default=1.0, help="SoftHebb temperature (conv_tau)")
    ap.add_argument("--test", action="store_true", help="read the TEST split (only for the chosen settings)")
    ap.add_argument("--json", default=None, help="append one JSON line per setting here")
    args = ap.parse_args()
    ds = load_dataset(DataConfig(name="digits"))
    for family, variant, lr in itertools.product(args.families, args.variants, args.lrs):
        kind, teaching, scale = variant.split(":")
        t = time.perf_counter()
        accs = [run(ds, kind, "pooled" if teaching == "-" else teaching, lr, float(scale), family, s, args.epochs,
                    test=args.test, tau=args.tau) for s in args.seeds]
        row = {"family": family, "net": kind, "teaching": teaching, "conv_lr_scale": float(scale), "lr": lr,
               "tau": args.tau,
               "split": "test" if args.test else "val", "mean": statistics.mean(accs), "accs": accs,
               "seconds": round(time.perf_counter() - t, 1)}
        emit(row, args.json)


if __name__ == "__main__":
    main()
