"""What ``localstdp bench --parallel`` measures (:mod:`localstdp.bench.parallel`): the nets, the
:class:`ParallelSpec`, the synthetic data, and the rank group's helpers shared by its arms."""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

log = logging.getLogger("localstdp.bench")

# name -> how the net is built: an MLP (input width, hidden widths) or a shipped config's network
NETS = {
    "mlp-uneven": {"kind": "mlp", "n_in": 784, "hidden": [2048, 2048, 2048],
                   "about": "784-2048-2048-2048-10: the split is uneven (bound 1.72x at 2 ranks)"},
    "mlp-even": {"kind": "mlp", "n_in": 2048, "hidden": [2048, 2048, 2048, 2048], "per_rank": True,
                 "about": "2048-2048-2048-2048-2048-10: four equal layers, two equal halves (bound ~2x); with more "
                          "than 4 ranks, one equal 2048-wide layer per rank"},
    "cnn": {"kind": "config", "config": "mnist-10-cnn",
            "about": "configs/mnist-10-cnn.toml: conv 32@5x5 + pool, 256, 10 (three units)"},
}
SCHEDULES = ("gpipe", "1f1b", "interleaved-zb", "zbv")  # backprop's pipeline schedules (torch.distributed.pipelining)
LR = 0.05  # both methods' step size on random data (throughput only)


@dataclass(frozen=True)
class ParallelSpec:
    """What to measure: nets, batch sizes, timed and warm-up batches per timing, interleaved repeats,
    the micro-batch counts tried for backprop's schedules (multiples of the ranks that divide the batch)."""

    nets: tuple[str, ...] = ("mlp-uneven", "mlp-even", "cnn")
    batches: tuple[int, ...] = (64, 256)
    timed: int = 24
    warmup: int = 3
    repeats: int = 3
    microbatches: tuple[int, ...] = (2, 4, 8)
    schedules: tuple[str, ...] = SCHEDULES
    timeout: float = 300.0
    flush_denormal: bool = True
    net_defs: dict = field(default_factory=dict)  # more nets by name (tests: a tiny MLP), as NETS


QUICK_PARALLEL = ParallelSpec(nets=("mlp-uneven",), batches=(64,), timed=6, warmup=2, repeats=1, microbatches=(2, 4))


# ----------------------------------------------------------------------------------------------
# Nets
# ----------------------------------------------------------------------------------------------


def net_config(name: str, batch: int, defs: dict | None = None, world: int = 1):
    """(ExperimentConfig, n_features) of a benchmark net at ``batch`` (``defs``: more nets, as NETS). A net
    with ``per_rank`` repeats its equal hidden layers up to one per rank of a ``world``-rank group."""
    from ..config import ExperimentConfig, load_config

    spec = {**NETS, **(defs or {})}[name]
    if spec["kind"] == "config":
        cfg = load_config(spec["config"]).with_overrides(batch_size=batch, epochs=1)
        return cfg, 784
    cfg = ExperimentConfig().with_overrides(batch_size=batch, epochs=1)
    hidden = list(spec["hidden"])
    if spec.get("per_rank") and world > len(hidden):
        hidden += hidden[-1:] * (world - len(hidden))
    cfg = type(cfg)(data=cfg.data, model=type(cfg.model)(hidden=hidden), train=cfg.train,
                    rule=cfg.rule, backprop=cfg.backprop)
    return cfg, spec["n_in"]


def synthetic(n: int, n_features: int, n_classes: int = 10, seed: int = 0):
    from ..data import Dataset

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, n_features, generator=g)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return Dataset("bench", x, y, x[:1], y[:1], n_classes, tuple(range(n_classes)), (n_features,))


# ----------------------------------------------------------------------------------------------
# The worker
# ----------------------------------------------------------------------------------------------


class _Group:
    """Rank, world, store; timing helpers that keep the ranks in step."""

    def __init__(self, timeout: float):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.timeout = datetime.timedelta(seconds=timeout)
        self.store = dist.distributed_c10d._get_default_store()
        self._k = 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.all_reduce(torch.zeros(1))

    def alone(self, fn):
        """Run ``fn`` on rank 0 while the others block on the store (a socket wait, no spinning)."""
        self._k += 1
        key = f"bench-alone-{self._k}"
        out = None
        if self.rank == 0:
            try:
                out = fn()
            finally:
                self.store.set(key, "1")
        else:
            self.store.wait([key], self.timeout)
        return out
