"""Shared by research/activations.py and research/deep_conv.py: scikit-learn's 8x8 digits
(``DataConfig(name="digits")``: 1068 train / 189 validation / 540 test), a training loop for
``LocalLearner`` and one for backprop (Adam + cross-entropy) on the SAME network, 30 epochs of batch 32,
and the accuracy of the model in eval mode (dropout off) on the validation split, or the test split
with ``test=True`` (read only for settings already chosen on validation)."""

from __future__ import annotations

import statistics
import time

import torch
from rows import emit
from torch import nn

from localstdp import LocalLearner
from localstdp.config import DataConfig
from localstdp.data import load_dataset

FAMILIES = {  # rule options besides lr (LocalLearner's defaults, and the digits config's codes and targets)
    "center": {"center": 0.99},
    "digits-center": {"a_hi": 0.99, "a_lo": 0.01, "association": "pairs", "center": 0.99},
    "random-center": {"association": "random", "center": 0.99},  # each unit associated with half the classes
}


def digits():
    torch.set_num_threads(1)
    return load_dataset(DataConfig(name="digits"))


def _batches(n: int, seed: int, epochs: int, batch: int = 32):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            yield perm[i : i + batch]


def accuracy(model: nn.Module, ds, shape, test: bool) -> float:
    xs, ys = (ds.x_test, ds.y_test) if test else (ds.x_val, ds.y_val)
    model.eval()
    with torch.no_grad():
        return float((model(xs.view(-1, *shape)).argmax(1) == ys).float().mean())


def train_local(model, ds, shape, seed, epochs, test=False, **learner_options) -> float:
    learner = LocalLearner(model, 10, seed=seed, **learner_options)
    x, y = ds.x_train.view(-1, *shape), ds.y_train
    model.train()
    for idx in _batches(len(y), seed, epochs):
        learner.step(x[idx], y[idx])
    return accuracy(model, ds, shape, test)


def train_backprop(model, ds, shape, seed, epochs, lr, test=False) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = ds.x_train.view(-1, *shape), ds.y_train
    model.train()
    for idx in _batches(len(y), seed, epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return accuracy(model, ds, shape, test)


def report(row: dict, accs: list[float], t0: float, path: str | None) -> None:
    row = row | {"mean": round(statistics.mean(accs), 4), "std": round(statistics.stdev(accs), 4) if len(accs) > 1
                 else 0.0, "accs": [round(a, 4) for a in accs], "seconds": round(time.perf_counter() - t0, 1)}
    emit(row, path)
