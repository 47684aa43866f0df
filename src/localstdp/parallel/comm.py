"""Process group plumbing: constants, checks, the _Comm wrapper (timeouts, failure handling), shared run state."""

from __future__ import annotations

import datetime
import itertools
import logging
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..config import ExperimentConfig
from ..data import Dataset
from ..errors import ConfigError, DistributedError
from ..model import MLP, build_model
from ..train import (
    _receptive_field,
    make_learner,
    predictor,
)

log = logging.getLogger("localstdp.parallel")


MODES = ("pipeline", "data")
DEFAULT_TIMEOUT = 30.0  # seconds any wait on a peer may take before the run is declared dead
SEND_WINDOW = 4  # micro-batches a stage may have in flight towards the next one
_GO, _STOP = 0, 1  # flag in front of every pipeline message


def check_mode(mode: str, method: str) -> None:
    """Usage errors of the parallel options (ConfigError, exit status 2)."""
    if mode not in MODES:
        raise ConfigError(f"--parallel {mode!r}: expected one of none, {', '.join(MODES)}")
    if mode == "pipeline" and method != "local":
        raise ConfigError("--parallel pipeline needs the local rule: backprop's backward pass makes every layer wait "
                          "for the next one (the peer rules have no pipeline schedule yet); use --parallel data")


def check_config(cfg: ExperimentConfig, mode: str, method: str) -> None:
    """Rule options a parallel mode cannot honour exactly (ConfigError, exit status 2)."""
    if mode == "data" and method == "local" and getattr(cfg.rule, "center", 0) > 0:
        raise ConfigError("rule.center (running presynaptic means) is not supported with --parallel data: each rank "
                          "would average its own shard; use --parallel pipeline")


def partition_layers(costs: list[float], parts: int) -> list[tuple[int, int]]:
    """Split layers with per-layer ``costs`` into ``parts`` contiguous stages [lo, hi) so that
    the most expensive stage is as cheap as possible (exact dynamic programme, O(L^2 parts))."""
    L = len(costs)
    if not 1 <= parts <= L:
        raise ConfigError(f"a pipeline of {parts} stages needs at least {parts} layers; the model has {L}")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + float(c))
    best = [[math.inf] * (L + 1) for _ in range(parts + 1)]
    cut = [[0] * (L + 1) for _ in range(parts + 1)]
    best[0][0] = 0.0
    for k in range(1, parts + 1):
        for i in range(k, L - (parts - k) + 1):
            for j in range(k - 1, i):
                c = max(best[k - 1][j], prefix[i] - prefix[j])
                if c < best[k][i]:
                    best[k][i], cut[k][i] = c, j
    stages, i = [], L
    for k in range(parts, 0, -1):
        stages.append((cut[k][i], i))
        i = cut[k][i]
    return stages[::-1]


def layer_costs(widths: list[int]) -> list[float]:
    """Work of each layer per example (multiply-adds of its forward and its update)."""
    return [float(a * b + b) for a, b in itertools.pairwise(widths)]


# ----------------------------------------------------------------------------------------------
# Communication: every wait has a timeout and every failure becomes one DistributedError line.
# ----------------------------------------------------------------------------------------------


@dataclass
class _Comm:
    rank: int
    world: int
    timeout: datetime.timedelta

    def fail(self, what: str, exc: BaseException) -> DistributedError:
        text = re.sub(r"^\[[^\]]*\]\s*", "", " ".join(str(exc).split()))  # drop gloo's [file:line]
        text = re.split(r"(?<=\.) ", text)[0] if text else type(exc).__name__
        return DistributedError(
            f"rank {self.rank} of {self.world}: {what} failed: {text[:160]} (a peer process died, hung or is "
            f"unreachable; timeout {self.timeout.total_seconds():g} s)")

    def wait(self, work, what: str) -> None:
        try:
            work.wait(self.timeout)
        except RuntimeError as exc:  # gloo raises RuntimeError / dist.DistError subclasses
            raise self.fail(what, exc) from None

    def isend(self, t: torch.Tensor, dst: int, what: str):
        try:
            return dist.isend(t, dst)
        except RuntimeError as exc:
            raise self.fail(what, exc) from None

    def recv(self, t: torch.Tensor, src: int, what: str) -> torch.Tensor:
        try:
            work = dist.irecv(t, src)
        except RuntimeError as exc:
            raise self.fail(what, exc) from None
        self.wait(work, what)
        return t

    def broadcast(self, t: torch.Tensor, src: int, what: str) -> torch.Tensor:
        if self.world > 1:
            try:
                work = dist.broadcast(t, src, async_op=True)
            except RuntimeError as exc:
                raise self.fail(what, exc) from None
            self.wait(work, what)
        return t

    def all_reduce(self, t: torch.Tensor, what: str) -> torch.Tensor:
        if self.world > 1:
            try:
                work = dist.all_reduce(t, async_op=True)
            except RuntimeError as exc:
                raise self.fail(what, exc) from None
            self.wait(work, what)
        return t


def _shard(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    return t.tensor_split(world)[rank]


# ----------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """What every rank knows about the run."""

    comm: _Comm
    mode: str
    method: str
    cfg: ExperimentConfig
    ds: Dataset
    model: MLP
    learner: object
    stages: list[tuple[int, int]]  # pipeline: the layers of each rank; data: all layers on every rank
    should_stop: Callable[[], int] | None
    bar: object = None
    ddp: object = None
    signum: int = 0  # rank 0: the signal that stopped the run mid-epoch

    @property
    def rank(self) -> int:
        return self.comm.rank

    @property
    def world(self) -> int:
        return self.comm.world


def _sync_model(run: _Run) -> None:
    """After a pipeline epoch: every layer's owner broadcasts it (and the rule's per-layer state,
    the running presynaptic means of ``rule.center``), so all ranks hold the same model and
    rank 0 checkpoints what the owners hold."""
    if run.mode != "pipeline":
        return
    means = getattr(run.learner, "pre_means", None)
    with torch.no_grad():
        for owner, (lo, hi) in enumerate(run.stages):
            for l in range(lo, hi):
                what = f"sharing layer {l + 1} at the end of the epoch"
                layer = run.model.layers[l]
                for p in (layer.weight, layer.bias):
                    run.comm.broadcast(p.data, owner, what)
                if means is not None:
                    has = run.comm.broadcast(torch.tensor([int(means[l] is not None)]), owner, what)
                    if int(has[0]):
                        m = means[l] if run.rank == owner else torch.empty(layer.in_features)
                        means[l] = run.comm.broadcast(m, owner, what)


@torch.no_grad()
def _sharded_accuracy(run: _Run) -> tuple[float | None, float | None, float | None]:
    """Train, test and validation accuracy (None without a validation split), each rank predicting
    a shard; counts summed with all_reduce."""
    ds, r, P = run.ds, run.rank, run.world
    counts = torch.zeros(3, dtype=torch.int64)
    for i, (x, y) in enumerate(((ds.x_train, ds.y_train), (ds.x_test, ds.y_test), (ds.x_val, ds.y_val))):
        xs, ys = _shard(x, r, P), _shard(y, r, P)
        if len(ys):
            counts[i] = int((predictor(run.learner, run.model).predict(xs) == ys).sum())
    run.comm.all_reduce(counts, "summing the accuracy counts")
    n = (len(ds.y_train), len(ds.y_test), len(ds.y_val))
    train_acc, test_acc, val_acc = (float(c) / k if k else None for c, k in zip(counts.tolist(), n))
    return train_acc, test_acc, val_acc


def _setup(cfg: ExperimentConfig, method: str, mode: str, ds: Dataset, timeout: float, should_stop=None) -> _Run:
    """Model, learner and stages of this rank (every rank builds the full model from the seed)."""
    comm = _Comm(dist.get_rank(), dist.get_world_size(), datetime.timedelta(seconds=timeout))
    model = build_model(ds.n_features, cfg.model.hidden, ds.n_classes, cfg.model.activation, cfg.train.seed,
                        _receptive_field(cfg, ds))
    learner = make_learner(method, model, cfg, ds.n_classes)
    L = len(model.layers)
    stages = partition_layers(layer_costs(model.widths), comm.world) if mode == "pipeline" else [(0, L)] * comm.world
    run = _Run(comm, mode, method, cfg, ds, model, learner, stages, should_stop)
    if method != "local" and mode == "data" and not hasattr(learner, "accumulate"):  # backprop (peers: _data_epoch)
        from torch.nn.parallel import DistributedDataParallel

        run.ddp = DistributedDataParallel(model)  # the MLP has no buffers to synchronise
    return run


def _agree(run: _Run, signum: int) -> int:
    """Rank 0's decision (a signal number, or 0 to go on), known to every rank; also a barrier
    that keeps the others waiting (with the timeout) while rank 0 writes its files."""
    t = run.comm.broadcast(torch.tensor([signum], dtype=torch.int64), 0, "waiting for rank 0")
    return int(t[0])


# ----------------------------------------------------------------------------------------------
# Joining and launching
# ----------------------------------------------------------------------------------------------


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher setting its env)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def _init(timeout: float) -> None:
    td = datetime.timedelta(seconds=timeout)
    try:
        if under_torchrun():
            dist.init_process_group("gloo", init_method="env://", timeout=td)
        else:  # one process: a group of one, no network
            dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1, timeout=td)
    except (RuntimeError, ValueError) as exc:
        text = " ".join(str(exc).split())[:200]
        raise DistributedError(f"cannot join the process group within {timeout:.0f} s: {text}") from None


def exit_if_group_left(code: int) -> None:
    """End the process at once when a process group is still open.

    After a peer failure :func:`run` leaves the group open on purpose (leaving would wait on the dead
    or hung peer); at interpreter exit its C++ destructor then finds a timed-out collective and calls
    std::terminate (SIGABRT instead of our exit status). So flush and exit without running it."""
    if dist.is_available() and dist.is_initialized():
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
