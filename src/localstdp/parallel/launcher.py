"""The training loop, torchrun entry (run) and the --nproc launcher (forkserver workers)."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

from ..checkpoint import atomic_write_text, model_tensors, save_checkpoint
from ..config import ExperimentConfig
from ..data import Dataset, load_dataset
from ..errors import ConfigError, DistributedError, DivergenceError, LocalSTDPError
from ..train import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    MODEL,
    Interrupted,
    RunState,
    _check_finite,
    _load_state,
    _save_state,
    batches,
    checkpoint_due,
    predictor,
    run_metrics,
    shuffle_generator,
)
from .comm import (
    DEFAULT_TIMEOUT,
    _agree,
    _init,
    check_config,
    check_exchange,
    check_mode,
    exit_if_group_left,
    under_torchrun,
)
from .data import _data_epoch
from .pipeline import _pipeline_epoch
from .setup import _setup, _sharded_accuracy, _sync_model

log = logging.getLogger("localstdp.parallel")


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
    model: torch.nn.Module | None = None,
    exchange: str = "auto",
) -> dict | None:
    """Train on every rank of the (already initialised) default process group.

    Same arguments and run directory as :func:`localstdp.train.train`; ``should_stop`` is polled
    on rank 0 only. ``model``: train a copy of this initial nn.Module instead of the config's model
    (pipeline: an nn.Sequential; the local rule trains it with LocalLearner and the config's rule
    options, see :func:`localstdp.parallel.build_learner`). Returns the metrics dict (with ``"model"``) on rank 0 and None elsewhere.
    With ``resume`` every rank reads ``out/checkpoint.safetensors`` (the run directory must be
    visible to all ranks, e.g. on a shared file system). ``exchange`` (data parallel, local rule):
    what the ranks exchange per batch, "updates", "activities" or "auto" (:mod:`localstdp.parallel.data`).
    """
    check_mode(mode, method)
    check_config(cfg, mode, method)
    check_exchange(exchange)
    ds = dataset if dataset is not None else load_dataset(cfg.data)
    run = _setup(cfg, method, mode, ds, timeout, should_stop, model)
    run.exchange = exchange
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
    model: torch.nn.Module | None = None,
    exchange: str = "auto",
) -> dict | None:
    """Join the process group (torchrun's environment, else a group of one), train, leave."""
    check_mode(mode, method)
    joined = not dist.is_initialized()
    if joined:
        _init(timeout)
    leave = joined
    try:
        return train_parallel(cfg, method, out, mode=mode, dataset=dataset, progress=progress, resume=resume,
                              should_stop=should_stop, timeout=timeout, model=model, exchange=exchange)
    except DistributedError:
        leave = False  # the peers may be gone; leaving the group could wait on them
        raise
    finally:
        if leave:
            dist.destroy_process_group()


def _worker(cfg, method, out, mode, dataset, resume, progress, timeout, threads, log_level, keep_model, model=None,
            exchange="auto"):
    """Entry point of a worker started by :func:`launch` (a fresh process)."""
    torch.set_num_threads(threads)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=log_level if rank == 0 else logging.ERROR, format="%(message)s")
    try:
        m = run(cfg, method, out, mode=mode, dataset=dataset, progress=progress and rank == 0, resume=resume,
                timeout=timeout, model=model, exchange=exchange)
    except LocalSTDPError as exc:
        log.error("localstdp: error: %s", exc)
        exit_if_group_left(exc.exit_code)
        sys.exit(exc.exit_code)
    if m is not None and not keep_model:
        m.pop("model")
    return m


def _check_launch_args(nproc, cfg, method, out, mode, dataset, resume, progress, timeout, threads, keep_model,
                       model) -> None:
    """launch's arguments, before any process starts: ArgumentError / ArgumentTypeError naming the argument."""
    from .. import checks
    from ..registry import LEARNER_NAMES

    checks.integer("nproc", nproc, lo=1)
    checks.instance("cfg", cfg, ExperimentConfig, "an ExperimentConfig (localstdp.load_config)")
    checks.choice("method", method, LEARNER_NAMES)
    if out is not None:
        checks.path("out", out)
    checks.instance("mode", mode, str, "a str")
    if dataset is not None:
        checks.instance("dataset", dataset, Dataset, "None or a localstdp.data.Dataset")
    for name, v in (("resume", resume), ("progress", progress), ("keep_model", keep_model)):
        checks.flag(name, v)
    checks.number("timeout", timeout, 0, lo_open=True)
    if threads is not None:
        checks.integer("threads", threads, lo=1)
    if model is not None:
        checks.instance("model", model, torch.nn.Module, "None or a torch.nn.Module")


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
    model: torch.nn.Module | None = None,
    exchange: str = "auto",
) -> dict:
    """Start ``nproc`` local workers through torch's elastic launcher on 127.0.0.1 and train.

    Each worker uses ``threads`` intra-op threads (default: OMP_NUM_THREADS, else 1, as torchrun).
    ``model``: every worker trains a copy of this initial nn.Module (see :func:`train_parallel`).
    ``exchange``: data parallel with the local rule, see :func:`train_parallel`.
    Returns rank 0's metrics (with ``"model"`` only if ``keep_model``). If any worker fails, the
    launcher stops the others and this raises :class:`DistributedError` (or :class:`Interrupted`).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    _check_launch_args(nproc, cfg, method, out, mode, dataset, resume, progress, timeout, threads, keep_model, model)
    check_mode(mode, method)
    check_exchange(exchange)
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
                                              keep_model, model, exchange)
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
    exchange: str = "auto",
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
    check_exchange(exchange)
    if exchange != "auto" and (mode != "data" or method != "local"):
        raise ConfigError(f"--exchange {exchange}: applies to --parallel data with --rule local only")
    if not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"--dist-timeout {timeout!r}: expected a number of seconds > 0")
    hidden = len(cfg.model.hidden)
    layers = hidden + 1 + (len(cfg.model.conv) if cfg.model.kind == "cnn" else 0)
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
    if mode == "pipeline" and method == "ff" and world > hidden:
        raise ConfigError(f"--parallel pipeline --rule ff with {world} processes needs at least {world} hidden "
                          f"layers (ff trains the hidden layers only); the model has {hidden}")
    if under_torchrun() or world == 1:
        return run(cfg, method, out, mode=mode, progress=progress, resume=resume, should_stop=should_stop,
                   timeout=timeout, exchange=exchange)
    return launch(world, cfg, method, out, mode=mode, resume=resume, progress=progress, timeout=timeout,
                  exchange=exchange)


# ----------------------------------------------------------------------------------------------
# Throughput benchmark: the bare training loop, no evaluation, no files
# ----------------------------------------------------------------------------------------------
