"""Layer-pipeline and data-parallel training over torch.distributed (gloo on CPU).

The local rule needs, for layer l and batch k, only that layer's own input a^(l-1)_k and output
a^l_k (computed with W^l as updated by batch k-1) and the broadcast label y_k. Nothing flows back
from later layers, so two schedules are exact:

``pipeline``  rank r owns a contiguous slice of layers. Rank 0 reads batch k, runs its layers
    (forward, local update, apply), and sends (y_k, activity) to rank 1 while it goes on with
    batch k+1; rank r receives, runs its layers, sends on. There are no backward messages, so
    with several micro-batches in flight all ranks compute at once. Each rank performs exactly
    the tensor operations of the single-process loop (:func:`localstdp.train.train`) on its
    layers, in the same order, so with the same seed and threads per process the weights are
    equal bit for bit.
``data``  every rank takes a contiguous shard of every batch, computes its per-layer changes
    with ``reduction="sum"``; one all_reduce sums them and every rank applies the same change
    (equal to single-process up to float summation order). The backprop baseline uses plain
    DistributedDataParallel instead, so the comparison stays fair; it has no pipeline mode.

Every rank loads the data set and builds the full model from the seed (identical everywhere);
at the end of an epoch the owners broadcast their layers, all ranks evaluate a shard of the
train/test sets, and rank 0 alone writes the run directory exactly as ``train`` does (so
``localstdp evaluate --run DIR`` works), logs and shows progress.

Processes join through the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``); :func:`launch` starts N local workers through torch's elastic launcher on
127.0.0.1 for users without torchrun. Every wait on a peer has a timeout, so a dead or hung
peer ends every process with :class:`~localstdp.errors.DistributedError` instead of a hang.
"""

from __future__ import annotations

import datetime
import itertools
import json
import logging
import math
import multiprocessing
import os
import re
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from .checkpoint import atomic_write_text, model_tensors, save_checkpoint
from .config import ExperimentConfig
from .data import Dataset, load_dataset
from .errors import ConfigError, DistributedError, DivergenceError, LocalSTDPError
from .model import MLP, build_model
from .train import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    MODEL,
    Interrupted,
    RunState,
    _check_finite,
    _load_state,
    _receptive_field,
    _save_state,
    batches,
    checkpoint_due,
    make_learner,
    predictor,
    run_metrics,
    schedule_lr,
    shuffle_generator,
)

log = logging.getLogger(__name__)

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


def _pipeline_epoch(run: _Run, idx_batches: list[torch.Tensor], state: RunState) -> tuple[bool, int]:
    """Run this rank's stage over the batches of one epoch from ``state.step``.

    Returns (stopped, first_bad_batch): stopped when rank 0 asked to stop mid-epoch;
    first_bad_batch (1-based, last stage only) where the loss first became non-finite, else 0.
    """
    comm, r, P = run.comm, run.rank, run.world
    lo, hi = run.stages[r]
    first, last = r == 0, r == P - 1
    L = len(run.model.layers)
    width_in = run.model.widths[lo]
    pending: deque = deque()
    stopped, bad = False, 0
    try:
        for b in range(state.step, len(idx_batches)):
            bsz = len(idx_batches[b])
            schedule_lr(run.learner, run.cfg, state.epoch, b, len(idx_batches))
            if first:
                idx = idx_batches[b]
                a, y = run.ds.x_train[idx].flatten(1), run.ds.y_train[idx]
            else:
                head = comm.recv(torch.empty(bsz + 1, dtype=torch.int64), r - 1, f"receiving batch {b + 1} from rank {r - 1}")
                if int(head[0]) == _STOP:
                    stopped = True
                    if not last:
                        pending.append((comm.isend(head, r + 1, "forwarding stop"), head))
                    break
                y = head[1:]
                a = comm.recv(torch.empty(bsz, width_in), r - 1, f"receiving batch {b + 1} from rank {r - 1}")
            for l in range(lo, hi):  # the same operations, in the same order, as LocalRule.step
                post = run.model.layer_forward(l, a)
                run.learner.learn_layer(l, a, post, y)
                a = post
            if last:
                loss = float(((run.learner.targets(L - 1, y) - a) ** 2).mean())
                if not math.isfinite(loss) and not bad:
                    bad = b + 1
                state.epoch_loss += loss * bsz
            else:
                head = torch.cat([torch.tensor([_GO]), y])
                what = f"sending batch {b + 1} to rank {r + 1}"
                pending.append((comm.isend(head, r + 1, what), head))
                pending.append((comm.isend(a, r + 1, what), a))
                while len(pending) > 2 * SEND_WINDOW:
                    comm.wait(pending.popleft()[0], what)
            state.step = b + 1
            if first:
                if run.bar is not None:
                    run.bar.update(1)
                signum = run.should_stop() if run.should_stop is not None else 0
                if signum and state.step < len(idx_batches):
                    stopped, run.signum = True, signum
                    if not last:
                        head = torch.full((len(idx_batches[state.step]) + 1,), _STOP, dtype=torch.int64)
                        pending.append((comm.isend(head, r + 1, "sending stop"), head))
                    break
        while pending:
            comm.wait(pending.popleft()[0], f"sending to rank {r + 1}")
    finally:
        pending.clear()
    return stopped, bad


def _data_epoch(run: _Run, idx_batches: list[torch.Tensor], state: RunState) -> tuple[bool, int]:
    """Every rank trains on its shard of every batch; changes are summed with all_reduce."""
    comm, r, P = run.comm, run.rank, run.world
    L = len(run.model.layers)
    n_out = run.model.widths[-1]
    stopped, bad = False, 0
    if run.method == "local":
        sizes = [p.numel() for layer in run.model.layers for p in (layer.weight, layer.bias)]
        buf = torch.empty(sum(sizes) + 2)
    for b in range(state.step, len(idx_batches)):
        idx = idx_batches[b]
        schedule_lr(run.learner, run.cfg, state.epoch, b, len(idx_batches))
        shard = _shard(idx, r, P)
        x, y = run.ds.x_train[shard], run.ds.y_train[shard]
        signum = run.should_stop() if (r == 0 and run.should_stop is not None) else 0
        stop_now = bool(signum) and b + 1 < len(idx_batches)
        if stop_now:
            run.signum = signum
        if run.method == "local":
            ups, acts = run.learner.updates(x, y, reduction="sum")
            sse = ((run.learner.targets(L - 1, y) - acts[-1]) ** 2).sum()
            parts = [t.reshape(-1) for dW, db in ups for t in (dW, db)]
            torch.cat(parts + [sse.reshape(1).float(), torch.tensor([float(stop_now)])], out=buf)
            comm.all_reduce(buf, f"summing the changes of batch {b + 1}")
            scale, o = 1.0 / len(idx), 0
            with torch.no_grad():
                for l, layer in enumerate(run.model.layers):
                    nw, nb = layer.weight.numel(), layer.bias.numel()
                    run.learner.apply_layer(l, buf[o : o + nw].view_as(layer.weight) * scale,
                                            buf[o + nw : o + nw + nb] * scale)
                    o += nw + nb
            loss = float(buf[-2]) / (len(idx) * n_out)
            stop_all = float(buf[-1]) > 0
        elif hasattr(run.learner, "accumulate"):  # a peer rule: shards' update directions summed
            rows = torch.arange(len(idx)).tensor_split(P)[r]  # this rank's shard of the batch
            xb, yb = run.ds.x_train[idx], run.ds.y_train[idx]  # whole batch: ff draws negatives for all of it
            run.learner.zero_grad()
            part = run.learner.accumulate(xb, yb, 1.0 / len(idx), rows)
            red = torch.cat([run.learner.flat_grad(), torch.tensor([part, float(stop_now)])])
            comm.all_reduce(red, f"summing the updates of batch {b + 1}")
            run.learner.set_flat_grad(red[:-2])
            run.learner.apply()
            loss = float(red[-2]) / len(idx)
            stop_all = float(red[-1]) > 0
        else:  # backprop: DistributedDataParallel averages the gradients during backward
            opt = run.learner.optimizer
            opt.zero_grad(set_to_none=True)
            ce = run.learner.loss_sum(run.ddp(x), y)  # the learner's own loss (CE, or MSE for backprop-mse)
            try:
                (ce * (P / len(idx))).backward()  # DDP divides by P: the mean over the whole batch
            except RuntimeError as exc:
                raise comm.fail(f"averaging the gradients of batch {b + 1}", exc) from None
            opt.step()
            run.model.keep_connectivity_()  # fixed first-layer connectivity (model.receptive_field)
            red = comm.all_reduce(torch.tensor([float(ce.detach()), float(stop_now)], dtype=torch.float64),
                                  f"summing the loss of batch {b + 1}")
            loss = float(red[0]) / len(idx)
            stop_all = float(red[1]) > 0
        if not math.isfinite(loss):  # every rank sees the same reduced loss: all raise together
            raise DivergenceError(f"training diverged: loss is {loss} at epoch {state.epoch + 1}, batch {b + 1}; "
                                  "lower the learning rate (the last good checkpoint is kept)")
        state.epoch_loss += loss * len(idx)
        state.step = b + 1
        if r == 0 and run.bar is not None:
            run.bar.update(1)
        if stop_all:
            stopped = True
            break
    return stopped, bad


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


def train_parallel(
    cfg: ExperimentConfig,
    method: str,
    out: str | Path | None = None,
    *,
    mode: str = "pipeline",
    dataset: Dataset | None = None,
    progress: bool = False,
    resume: bool = False,
    should_stop: Callable[[], int] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict | None:
    """Train on every rank of the (already initialised) default process group.

    Same arguments and run directory as :func:`localstdp.train.train`; ``should_stop`` is polled
    on rank 0 only. Returns the metrics dict (with ``"model"``) on rank 0 and None elsewhere.
    With ``resume`` every rank reads ``out/checkpoint.safetensors`` (the run directory must be
    visible to all ranks, e.g. on a shared file system).
    """
    check_mode(mode, method)
    check_config(cfg, mode, method)
    ds = dataset if dataset is not None else load_dataset(cfg.data)
    run = _setup(cfg, method, mode, ds, timeout, should_stop)
    comm, model, learner, stages, seed = run.comm, run.model, run.learner, run.stages, cfg.train.seed
    r, P = comm.rank, comm.world
    out_dir = Path(out) if out is not None else None
    state = RunState()
    if out_dir is not None:
        if resume and (out_dir / CHECKPOINT).exists():
            state = _load_state(out_dir, model, learner, method, cfg)
            if r == 0:
                log.info("resuming %s at epoch %d, batch %d", out_dir, state.epoch + 1, state.step)
        elif resume and (out_dir / METRICS).exists():
            raise LocalSTDPError(f"{out_dir} holds a finished run; nothing to resume")
        if r == 0:
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(out_dir / CONFIG, cfg.to_toml())
            except OSError as exc:
                raise LocalSTDPError(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
    if r == 0:
        log.info("%s training, %d ranks, stages %s", mode, P, stages if mode == "pipeline" else "all layers")
    gen = shuffle_generator(seed)
    n, bs = len(ds.y_train), cfg.train.batch_size
    n_batches = math.ceil(n / bs)
    if progress and r == 0:
        from tqdm.auto import tqdm

        run.bar = tqdm(total=cfg.train.epochs * n_batches, initial=state.epoch * n_batches + state.step,
                       desc=f"{method} seed {seed} ({mode} x{P})", unit="batch", leave=False, dynamic_ncols=True)
    t_start = time.perf_counter()
    wall_before = state.wall_seconds
    epoch_fn = _pipeline_epoch if mode == "pipeline" else _data_epoch
    try:
        while state.epoch < cfg.train.epochs:
            perm = state.epoch_permutation(gen, n)
            t_epoch = time.perf_counter()
            with torch.no_grad() if method == "local" else torch.enable_grad():
                stopped, bad = epoch_fn(run, batches(n, bs, perm), state)
            if mode == "pipeline":  # the last stage holds the loss; it tells everyone
                info = comm.broadcast(torch.tensor([state.epoch_loss, float(bad)], dtype=torch.float64), P - 1,
                                      "sharing the epoch's loss")
                state.epoch_loss, bad = float(info[0]), int(info[1])
                if bad:
                    raise DivergenceError(f"training diverged: loss is not finite at epoch {state.epoch + 1}, "
                                          f"batch {bad}; lower the learning rate (the last good checkpoint is kept)")
                _sync_model(run)
            _check_finite(model, state.epoch, state.step)
            signum = 0
            if stopped:  # mid-epoch stop: checkpoint where we are, no evaluation
                state.wall_seconds = wall_before + time.perf_counter() - t_start
                if r == 0 and out_dir is not None:
                    _save_state(out_dir, model, learner, method, cfg, state, gen.get_state())
                signum = _agree(run, run.signum)
                if r == 0:
                    where = f"checkpoint written to {out_dir / CHECKPOINT}; " if out_dir is not None else ""
                    raise Interrupted(f"interrupted by signal {signum}: {where}continue with --resume", 128 + signum)
                return None
            train_acc, test_acc, val_acc = _sharded_accuracy(run)
            record = state.end_epoch(n, train_acc, test_acc, time.perf_counter() - t_epoch, val_acc)
            if run.bar is not None:
                run.bar.set_postfix(test=f"{record['test_accuracy']:.3f}")
            state.wall_seconds = wall_before + time.perf_counter() - t_start
            if r == 0:
                log.info("epoch %d: loss %.5f, train %.4f, test %.4f", record["epoch"], record["loss"],
                         train_acc, test_acc)
                signum = run.should_stop() if run.should_stop is not None else 0
                if out_dir is not None and (checkpoint_due(cfg, state.epoch)
                                            or (signum and state.epoch < cfg.train.epochs)):
                    _save_state(out_dir, model, learner, method, cfg, state, gen.get_state())
            signum = _agree(run, signum)
            if signum and state.epoch < cfg.train.epochs:
                if r == 0:
                    raise Interrupted(f"interrupted by signal {signum} after epoch {state.epoch}: checkpoint written; "
                                      "continue with --resume", 128 + signum)
                return None
    finally:
        if run.bar is not None:
            run.bar.close()
    if r != 0:
        return None
    metrics = run_metrics(method, cfg, ds, model, state) | {
        "parallel": {"mode": mode, "world_size": P, "threads_per_rank": torch.get_num_threads(),
                     "stages": [list(s) for s in stages] if mode == "pipeline" else None},
    }
    if out_dir is not None:
        save_checkpoint(out_dir / MODEL, model_tensors(model), {"kind": "model", "method": method,
                                                                "widths": model.widths, "config": cfg.to_dict()})
        atomic_write_text(out_dir / METRICS, json.dumps(metrics, indent=2) + "\n")
    metrics["model"] = predictor(learner, model)
    return metrics


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


def run(
    cfg: ExperimentConfig,
    method: str,
    out: str | Path | None = None,
    *,
    mode: str = "pipeline",
    dataset: Dataset | None = None,
    progress: bool = False,
    resume: bool = False,
    should_stop: Callable[[], int] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict | None:
    """Join the process group (torchrun's environment, else a group of one), train, leave."""
    check_mode(mode, method)
    joined = not dist.is_initialized()
    if joined:
        _init(timeout)
    leave = joined
    try:
        return train_parallel(cfg, method, out, mode=mode, dataset=dataset, progress=progress, resume=resume,
                              should_stop=should_stop, timeout=timeout)
    except DistributedError:
        leave = False  # the peers may be gone; leaving the group could wait on them
        raise
    finally:
        if leave:
            dist.destroy_process_group()


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


def _worker(cfg, method, out, mode, dataset, resume, progress, timeout, threads, log_level, keep_model):
    """Entry point of a worker started by :func:`launch` (a fresh process)."""
    torch.set_num_threads(threads)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=log_level if rank == 0 else logging.ERROR, format="%(message)s")
    try:
        m = run(cfg, method, out, mode=mode, dataset=dataset, progress=progress and rank == 0, resume=resume,
                timeout=timeout)
    except LocalSTDPError as exc:
        log.error("localstdp: error: %s", exc)
        exit_if_group_left(exc.exit_code)
        sys.exit(exc.exit_code)
    if m is not None and not keep_model:
        m.pop("model")
    return m


def launch(
    nproc: int,
    cfg: ExperimentConfig,
    method: str,
    out: str | Path | None = None,
    *,
    mode: str = "pipeline",
    dataset: Dataset | None = None,
    resume: bool = False,
    progress: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    threads: int | None = None,
    keep_model: bool = False,
) -> dict:
    """Start ``nproc`` local workers through torch's elastic launcher on 127.0.0.1 and train.

    Each worker uses ``threads`` intra-op threads (default: OMP_NUM_THREADS, else 1, as torchrun).
    Returns rank 0's metrics (with ``"model"`` only if ``keep_model``). If any worker fails, the
    launcher stops the others and this raises :class:`DistributedError` (or :class:`Interrupted`).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    check_mode(mode, method)
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: expected at least 1 worker")
    if threads is None:
        threads = int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
    # forkserver: one process imports torch and this package once, then forks every worker
    # (spawn would import them in each worker; fork would copy the caller's threads). DDP's
    # first construction imports torch._dynamo (seconds): preload it for backprop runs.
    multiprocessing.set_forkserver_preload(["localstdp.parallel"] + (["torch._dynamo"] if method != "local" else []))
    lc = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"localstdp-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", rdzv_configs={"timeout": max(60, int(timeout))},
        max_restarts=0, monitor_interval=0.1, start_method="forkserver", local_addr="127.0.0.1",
        shutdown_timeout=5,
    )
    quiet = [logging.getLogger(name) for name in ("torch.distributed.elastic", "torch.multiprocessing")]
    old_levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.CRITICAL)  # the launcher's own chatter; failures are reported below
    try:
        results = elastic_launch(lc, _worker)(cfg, method, None if out is None else str(out), mode, dataset, resume,
                                              progress, timeout, threads, logging.getLogger().getEffectiveLevel(),
                                              keep_model)
    except ChildFailedError as exc:
        # the root cause first: a worker killed by a signal, else the earliest failure
        killed = sorted((f.timestamp, r, f) for r, f in exc.failures.items() if f.exitcode < 0)
        rank, failure = (killed[0][1], killed[0][2]) if killed else exc.get_first_failure()
        code = failure.exitcode
        if code in (130, 143):
            raise Interrupted(f"worker rank {rank} was interrupted (exit status {code})", code) from None
        how = f"was killed by {failure.signal_name()}" if code < 0 else f"exited with status {code}"
        raise DistributedError(f"worker rank {rank} of {nproc} {how}; the other workers were stopped") from None
    finally:
        for q, level in zip(quiet, old_levels):
            q.setLevel(level)
    return results[0]


def train_from_cli(
    cfg: ExperimentConfig,
    method: str,
    out: str | Path,
    *,
    mode: str,
    nproc: int | None = None,
    resume: bool = False,
    progress: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    should_stop: Callable[[], int] | None = None,
) -> dict | None:
    """What ``localstdp train --parallel MODE [--nproc N]`` does: join torchrun's group if this
    process is a torchrun worker, else start ``nproc`` local workers, else train as a group of
    one. Returns rank 0's metrics (None on the other ranks)."""
    if nproc is not None and nproc < 1:  # 0 is not "not given"
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    if mode == "none":
        if nproc:
            raise ConfigError("--nproc needs --parallel pipeline or --parallel data")
        raise ConfigError(f"this is one of {os.environ.get('WORLD_SIZE', 'several')} processes started by torchrun: "
                          "pass --parallel pipeline or --parallel data (else each would train its own copy into --out)")
    check_mode(mode, method)
    check_config(cfg, mode, method)
    if not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"--dist-timeout {timeout!r}: expected a number of seconds > 0")
    layers = len(cfg.model.hidden) + 1
    if under_torchrun():
        if nproc:
            raise ConfigError("--nproc starts local workers itself; under torchrun set --nproc_per_node instead")
        world = int(os.environ["WORLD_SIZE"])
    else:
        world = nproc or 1
        if world < 1:
            raise ConfigError(f"--nproc {nproc}: expected at least 1 worker")
    if mode == "pipeline" and world > layers:
        raise ConfigError(f"--parallel pipeline with {world} processes needs at least {world} layers; "
                          f"the model has {layers} (model.hidden = {list(cfg.model.hidden)})")
    if under_torchrun() or world == 1:
        return run(cfg, method, out, mode=mode, progress=progress, resume=resume, should_stop=should_stop,
                   timeout=timeout)
    return launch(world, cfg, method, out, mode=mode, resume=resume, progress=progress, timeout=timeout)


# ----------------------------------------------------------------------------------------------
# Throughput benchmark: the bare training loop, no evaluation, no files
# ----------------------------------------------------------------------------------------------


def _bench_worker(mode: str, widths: list[int], batch_size: int, n_batches: int, warmup: int, threads: int,
                  rule_mode: str, timeout: float) -> dict:
    torch.set_num_threads(threads)
    _init(timeout)
    try:
        g = torch.Generator().manual_seed(0)
        n = batch_size * n_batches
        x = torch.rand(n, widths[0], generator=g)
        y = torch.randint(0, widths[-1], (n,), generator=g)
        ds = Dataset("bench", x, y, x[:1], y[:1], widths[-1], tuple(range(widths[-1])), (widths[0],))
        cfg = ExperimentConfig().with_overrides(batch_size=batch_size, epochs=1)
        cfg = type(cfg)(data=cfg.data, model=type(cfg.model)(hidden=list(widths[1:-1])), train=cfg.train,
                        rule=type(cfg.rule)(**{**cfg.rule.__dict__, "mode": rule_mode}), backprop=cfg.backprop)
        run = _setup(cfg, "local", "data" if mode == "single" else mode, ds, timeout)
        idx = batches(n, batch_size, torch.arange(n))
        epoch_fn = _pipeline_epoch if mode == "pipeline" else _data_epoch

        def loop(k: int) -> None:
            if mode == "single":
                for b in idx[:k]:
                    run.learner.step(x[b], y[b])
            else:
                with torch.no_grad():
                    epoch_fn(run, idx[:k], RunState())

        loop(warmup)
        run.comm.all_reduce(torch.zeros(1), "bench barrier")
        t0 = time.perf_counter()
        loop(n_batches)
        run.comm.all_reduce(torch.zeros(1), "bench barrier")  # the pipeline has drained
        seconds = time.perf_counter() - t0
    finally:
        dist.destroy_process_group()
    return {"mode": mode, "ranks": run.world, "threads_per_rank": threads, "batch_size": batch_size,
            "batches": n_batches, "seconds": seconds, "examples_per_s": n_batches * batch_size / seconds,
            "stages": [list(s) for s in run.stages] if mode == "pipeline" else None}


def benchmark(mode: str, nproc: int, threads: int, widths: list[int], *, batch_size: int = 32, n_batches: int = 64,
              warmup: int = 8, rule_mode: str = "rate", timeout: float = 120.0) -> dict:
    """Examples per second of the local rule's training loop (no evaluation, no files).

    ``mode``: "single" (``LocalRule.step`` in one process; ``nproc`` must be 1), "pipeline" or
    "data". Workers are started with :func:`launch`'s launcher, ``threads`` intra-op threads each.
    """
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if mode not in ("single", *MODES) or (mode == "single" and nproc != 1):
        raise ConfigError(f"benchmark mode {mode!r} with {nproc} processes: expected single (1), pipeline or data")
    multiprocessing.set_forkserver_preload(["localstdp.parallel"])
    lc = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"bench-{uuid.uuid4().hex[:12]}",
                      rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.1,
                      start_method="forkserver", local_addr="127.0.0.1", shutdown_timeout=5)
    res = elastic_launch(lc, _bench_worker)(mode, list(widths), batch_size, n_batches, warmup, threads, rule_mode,
                                            timeout)
    return res[0]
