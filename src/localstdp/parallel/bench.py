"""Throughput benchmark of the parallel schedules."""

from __future__ import annotations

import logging
import multiprocessing
import time
import uuid

import torch
import torch.distributed as dist

from ..config import ExperimentConfig
from ..data import Dataset
from ..errors import ConfigError
from ..train import (
    RunState,
    batches,
)
from .comm import MODES, _init
from .data import _data_epoch
from .pipeline import _pipeline_epoch
from .setup import _setup

log = logging.getLogger("localstdp.parallel")


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
