"""Exploring the Fashion-MNIST CNN of issue 13 item 4, on the VALIDATION split only.

A spec string names the network: ``c32k5p2m2`` = Conv2d(., 32, 5, padding 2) + Sigmoid + MaxPool2d(2),
``h1024`` = Linear(., 1024) + Sigmoid; the output Linear(., 10) is added. Trains the local rule
(``LocalLearner``) or backprop (Adam, cross-entropy) on the first ``--n-train`` training images for
``--epochs`` epochs (cosine schedule optional) and prints one JSON line per setting with validation
accuracy and wall seconds. The test split is never read here. Results: docs/ablation.md,
"Convolutional layers", "Fashion-MNIST CNN" (one conv layer, issue 13 item 4) and "Deep conv stacks",
"Fashion-MNIST, two conv layers" (``--teaching readout``, issue 24 item 5).

    OMP_NUM_THREADS=1 .venv/bin/python research/fashion_cnn.py --spec c32k5p2m2-h1024 --n-train 10000 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time

import torch
from torch import nn

from localstdp import LocalLearner
from localstdp.config import DataConfig
from localstdp.data import load_dataset

RULE = {"a_hi": 0.99, "a_lo": 0.01, "association": "pairs", "center": 0.99}


def network(spec: str, side: int, n_classes: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    c, s = 1, side
    flat = None
    for part in spec.split("-"):
        m = re.fullmatch(r"c(\d+)k(\d+)p(\d+)m(\d+)", part)
        if m:
            ch, k, p, pool = map(int, m.groups())
            layers += [nn.Conv2d(c, ch, k, padding=p), nn.Sigmoid()]
            s = s + 2 * p - k + 1
            if pool > 1:
                layers.append(nn.MaxPool2d(pool))
                s //= pool
            c = ch
            continue
        h = int(part[1:])
        if flat is None:
            layers.append(nn.Flatten())
            flat = c * s * s
        layers += [nn.Linear(flat, h), nn.Sigmoid()]
        flat = h
    if flat is None:
        layers.append(nn.Flatten())
        flat = c * s * s
    layers.append(nn.Linear(flat, n_classes))
    return nn.Sequential(*layers)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="c32k5p2m2-h1024")
    ap.add_argument("--method", default="local", choices=["local", "backprop"])
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--n-val", type=int, default=9000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.5])
    ap.add_argument("--scales", type=float, nargs="+", default=[3.0])
    ap.add_argument("--teaching", default="pooled")
    ap.add_argument("--cosine", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rule", default="{}", help="JSON of extra rule options")
    ap.add_argument("--path", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(DataConfig(name="idx", path=args.path))
    side = ds.input_shape[-1]
    x, y = ds.x_train[: args.n_train].view(-1, 1, side, side), ds.y_train[: args.n_train]
    xv, yv = ds.x_val[: args.n_val].view(-1, 1, side, side), ds.y_val[: args.n_val]
    for lr in args.lrs:
        for scale in args.scales:
            model = network(args.spec, side, ds.n_classes, args.seed)
            if args.method == "local":
                learner = LocalLearner(model, ds.n_classes, lr=lr, seed=args.seed, conv_teaching=args.teaching,
                                       conv_lr_scale=scale, **(RULE | json.loads(args.rule)))
                set_lr = learner.set_lr_factor
                step = learner.step
            else:
                opt = torch.optim.Adam(model.parameters(), lr=lr)

                def set_lr(f, opt=opt, lr=lr):
                    for g in opt.param_groups:
                        g["lr"] = lr * f

                def step(xb, yb, opt=opt, model=model):
                    opt.zero_grad()
                    loss = nn.functional.cross_entropy(model(xb), yb)
                    loss.backward()
                    opt.step()

            gen = torch.Generator().manual_seed(args.seed)
            n_b = math.ceil(len(y) / args.batch)
            t0 = time.perf_counter()
            accs = []
            for e in range(args.epochs):
                perm = torch.randperm(len(y), generator=gen)
                for b in range(n_b):
                    if args.cosine:
                        set_lr(0.5 * (1 + math.cos(math.pi * (e * n_b + b) / (args.epochs * n_b))))
                    idx = perm[b * args.batch : (b + 1) * args.batch]
                    step(x[idx], y[idx])
                with torch.no_grad():
                    accs.append(round(float((model(xv).argmax(1) == yv).float().mean()), 4))
            wall = time.perf_counter() - t0
            print(json.dumps({"spec": args.spec, "method": args.method, "lr": lr, "scale": scale,
                              "teaching": args.teaching, "rule": args.rule, "cosine": args.cosine,
                              "n_train": len(y), "epochs": args.epochs, "val": accs,
                              "seconds": round(wall, 1), "s_per_60k_epoch": round(wall / args.epochs * 60000 / len(y), 1)}),
                  flush=True)


if __name__ == "__main__":
    main()
