"""What the benchmarks run: the synthetic MNIST-shaped workload (784 features, 10 classes), the
:class:`BenchSpec` of a run, the GEMM FLOPs of a training step, and a fresh learner per method.
Shared by run.py (the headline, sweeps and scaling) and configs.py (shipped configs, peer rules).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import build_model
from ..rules import Backprop, BackpropParams, LocalRule, RuleParams

N_FEATURES, N_CLASSES = 784, 10


@dataclass(frozen=True)
class BenchSpec:
    """What to measure. hidden/batch: the headline net and batch; epoch_batches: batches per
    timed epoch; repeats: interleaved timed repeats after ``warmup`` untimed ones; time_bins: K of
    the timing mode in the headline (default: RuleParams' default); timing_backend: its backend
    (rules/timing.py; "gather", what "auto" picks at this size); scale_*: the width and batch sweeps
    (time per batch); bins_sweep: the K values whose cost and error are measured, for every backend
    of bins_backends; lr: both methods' learning rate."""

    hidden: tuple[int, ...] = (1024, 1024)
    batch: int = 256
    epoch_batches: int = 20
    repeats: int = 7
    warmup: int = 1
    time_bins: int = RuleParams.time_bins  # the library default (32): what a user who sets mode = "timing" gets
    timing_backend: str = "gather"
    scale_widths: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    scale_batches: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)
    scale_methods: tuple[str, ...] = ("rate", "backprop", "timing")
    scale_steps: int = 3
    scale_repeats: int = 3
    bins_sweep: tuple[int, ...] = (2, 4, 8, 16, 32)
    bins_backends: tuple[str, ...] = ("gather", "binned")
    bins_steps: int = 3
    lr: float = 0.05
    seed: int = 0


QUICK = BenchSpec(epoch_batches=6, repeats=5, scale_widths=(256, 1024, 4096), scale_batches=(32, 256, 1024),
                  scale_methods=("rate", "backprop"), scale_steps=1, scale_repeats=3, bins_sweep=(2, 4, 8, 32),
                  bins_steps=2)


def layer_flops(widths: list[int], batch: int) -> list[int]:
    """2 * batch * n_in * n_out: the FLOPs of one GEMM of each layer."""
    return [2 * batch * a * b for a, b in zip(widths[:-1], widths[1:])]


def method_flops(method: str, widths: list[int], batch: int, time_bins: int = 1, backend: str = "binned") -> int:
    """GEMM FLOPs of one training step (elementwise work is not counted). Timing mode: the binned
    backend's update GEMM has inner size K * batch; the gather backend's multiply-adds are one
    rate-mode update's (counted as FLOPs although they are a gather, not a GEMM)."""
    f = layer_flops(widths, batch)
    if method == "rate":
        return 2 * sum(f)
    if method == "backprop":
        return 2 * sum(f) + sum(f[1:])  # + the error GEMM of every layer but the first
    if method == "timing":
        return sum(f) * (2 if backend == "gather" else 1 + time_bins)  # forward + the update
    raise ValueError(f"unknown method {method!r}")


def make_learner(method: str, widths: list[int], spec: BenchSpec, device: torch.device, time_bins: int | None = None,
                 timing_backend: str | None = None):
    """A fresh model (same seed for every method) and its learner on ``device``; timing mode with
    ``spec``'s K and backend unless ``time_bins`` / ``timing_backend`` are given."""
    model = build_model(widths[0], widths[1:-1], widths[-1], "sigmoid", spec.seed).to(device)
    if method == "backprop":
        return Backprop(model, BackpropParams(optimizer="sgd", lr=spec.lr, momentum=0.0), widths[-1], spec.seed)
    if method == "rate":
        params = RuleParams(eta=spec.lr, mode="rate")
    elif method == "timing":
        params = RuleParams(eta=spec.lr, mode="timing", timing_backend=timing_backend or spec.timing_backend,
                            time_bins=spec.time_bins if time_bins is None else time_bins)
    else:
        raise ValueError(f"unknown method {method!r}")
    rule = LocalRule(model, params, widths[-1], spec.seed)
    rule.associations = [A.to(device) for A in rule.associations]
    return rule


def synthetic_batches(n_batches: int, batch: int, n_features: int, device: torch.device, seed: int = 0):
    """MNIST-shaped batches: features uniform in [0, 1], labels uniform over 10 classes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_batches, batch, n_features, generator=g).to(device)
    y = torch.randint(0, N_CLASSES, (n_batches, batch), generator=g).to(device)
    return list(zip(x.unbind(0), y.unbind(0)))
