"""``localstdp bench --parallel``: training throughput against the number of ranks, the local rule's
layer pipeline and data parallel beside backprop's DistributedDataParallel and backprop through
torch's own pipeline engine (``torch.distributed.pipelining``: GPipe, 1F1B, interleaved zero bubble,
ZBV zero bubble), on the same nets with the same stage split.

One group of N worker processes (torch's elastic launcher, gloo on 127.0.0.1, one intra-op thread
each) runs every *arm* of a (net, batch) in turn, the arms interleaved ``repeats`` times so that a
change in machine load hits all of them alike; each timing drops its own warm-up batches. The
one-process arms (``1 x 1``: one process with one thread, "N machines of one core" is against it;
``1 x N``: one process with N threads, "one machine of N cores") run on rank 0 while the other ranks
sleep in a blocking wait on the rendezvous store (no spinning). Before the arms, rank 0 measures
what the scaling model needs (:mod:`localstdp.bench.scaling`): every stage's compute time alone on
one thread (the local rule's stage step; backprop's forward + backward per micro-batch size and its
optimiser step), and the link (one-way time of gloo messages of several sizes between ranks 0 and 1).
Synthetic MNIST-shaped data (uniform features, uniform labels); nothing is written but the JSON.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import platform
import statistics
import time
import uuid
from unittest import mock

import torch
import torch.distributed as dist

from ..errors import ConfigError
from .parallel_arms import _Case, _time
from .parallel_spec import NETS, QUICK_PARALLEL, SCHEDULES, ParallelSpec, _Group

__all__ = ["NETS", "QUICK_PARALLEL", "SCHEDULES", "ParallelSpec", "run_parallel_bench", "run_ranks"]

log = logging.getLogger("localstdp.bench")


def _link(g: _Group, sizes=(1 << 10, 1 << 14, 1 << 17, 1 << 20, 1 << 22), reps: int = 12) -> list[dict]:
    """One-way seconds of a gloo message of each size between ranks 0 and 1 (half the round trip)."""
    out = []
    for size in sizes:
        buf = torch.zeros(size // 4)
        times = []
        for i in range(reps + 2):
            g.barrier()
            t0 = time.perf_counter()
            if g.rank == 0:
                dist.send(buf, 1)
                dist.recv(buf, 1)
            elif g.rank == 1:
                dist.recv(buf, 0)
                dist.send(buf, 0)
            if i >= 2:
                times.append((time.perf_counter() - t0) / 2)
        out.append({"bytes": size, "s": statistics.median(times)})
    return out


def _collectives(g: _Group, sizes=(1 << 18, 1 << 20, 1 << 22, 1 << 24, 1 << 26), reps: int = 6) -> dict:
    """Seconds of gloo's all_reduce (sum) of a float buffer of each size and of its all_gather of the
    same total size (each rank contributing size / N): what data parallel and DDP pay per batch."""
    out = {"all_reduce": [], "all_gather": []}
    for size in sizes:
        buf = torch.ones(size // 4)
        part = torch.ones(size // 4 // g.world)
        parts = [torch.empty_like(part) for _ in range(g.world)]
        for kind, op in (("all_reduce", lambda: dist.all_reduce(buf)), ("all_gather", lambda: dist.all_gather(parts, part))):
            times = []
            for i in range(reps + 1):
                g.barrier()
                t0 = time.perf_counter()
                op()
                if i >= 1:
                    times.append(_max_over_ranks(time.perf_counter() - t0))
            out[kind].append({"bytes": size, "s": statistics.median(times)})
    return out


def _worker(spec: ParallelSpec) -> dict:
    try:
        return _worker_body(spec)
    except Exception:
        import sys
        import traceback

        traceback.print_exc(file=sys.stderr)  # the launcher reports only the exit code
        raise


def _worker_body(spec: ParallelSpec) -> dict:
    from ..parallel.comm import _init

    torch.set_num_threads(1)
    # Sigmoid units saturate on random labels and their activities go subnormal; x86 multiplies
    # subnormals 10-100x slower, which made the local rule's update 3x slower than the same GEMM on
    # normal numbers. Every arm of the benchmark runs with subnormals flushed to zero alike.
    torch.set_flush_denormal(spec.flush_denormal)
    _init(spec.timeout)
    g = _Group(spec.timeout)
    result = {"world": g.world, "cases": []}
    t_start = time.perf_counter()
    try:
        result["link"] = _link(g) if g.world > 1 else []
        result["collectives"] = _collectives(g) if g.world > 1 else {}
        for net in spec.nets:
            for batch in spec.batches:
                try:
                    case = _Case(g, net, batch, spec)
                except ConfigError as exc:  # e.g. fewer layers than ranks: every rank refuses alike
                    if g.rank == 0:
                        result["cases"].append({"net": net, "batch": batch, "world": g.world, "skipped": str(exc)})
                        print(f"bench --parallel: {g.world} ranks: {net} batch {batch} skipped ({exc})", flush=True)
                    continue
                arms = case.arms()
                prof = g.alone(case.profile)
                times: dict[str, list[float]] = {name: [] for name, _, _ in arms}
                for rep in range(spec.repeats):
                    order = arms[rep % len(arms):] + arms[: rep % len(arms)]  # rotate: no arm always first
                    for name, where, fn in order:
                        if where == "alone":
                            s = g.alone(lambda fn=fn: (fn(spec.warmup), _time(fn, spec.timed))[1])
                        else:
                            fn(spec.warmup)
                            g.barrier()
                            s = _time(fn, spec.timed)
                            g.barrier()  # the last rank has finished (a pipeline has drained)
                            s = _max_over_ranks(s)
                        if g.rank == 0:
                            times[name].append(spec.timed * batch / s)
                # free the case's DDP, pipeline stages and process-group handles while the group is alive: freed
                # after destroy_process_group (at this function's return), one of them sometimes blocked for ever
                del case, arms, order, fn
                gc.collect()
                g.barrier()
                if g.rank == 0:
                    result["cases"].append({"net": net, "batch": batch, "world": g.world, "profile": prof,
                                            "examples_per_s": times})
                    done = len(result["cases"])
                    print(f"bench --parallel: {g.world} ranks: {net} batch {batch} done ({done}/"
                          f"{len(spec.nets) * len(spec.batches)}, {time.perf_counter() - t_start:.0f} s)", flush=True)
    finally:
        dist.destroy_process_group()
    return result


def _max_over_ranks(s: float) -> float:
    t = torch.tensor([s], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t[0])


def run_ranks(spec: ParallelSpec, nproc: int) -> dict:
    """Every arm of ``spec`` in one group of ``nproc`` worker processes (one thread each)."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    multiprocessing.set_forkserver_preload(["localstdp.parallel", "torch.distributed.pipelining"])
    lc = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"bench-{uuid.uuid4().hex[:12]}",
                      rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.1,
                      start_method="forkserver", local_addr="127.0.0.1", shutdown_timeout=5)
    with mock.patch.dict(os.environ, {"OMP_NUM_THREADS": "1"}):  # the workers' OpenMP: one thread each
        return elastic_launch(lc, _worker)(spec)[0]


def run_parallel_bench(spec: ParallelSpec, ranks: list[int], progress=print) -> dict:
    """Every rank count of ``ranks`` (each a fresh group), then the scaling model fitted to them."""
    from .core import load_average, machine_info
    from .scaling import fit_and_predict

    t0 = time.time()
    load0 = load_average()
    groups = []
    for n in ranks:
        progress(f"bench --parallel: {n} rank(s), nets {', '.join(spec.nets)}, batches "
                 f"{', '.join(map(str, spec.batches))}, {spec.repeats} repeats")
        groups.append(run_ranks(spec, n))
    result = {"spec": {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.__dict__.items()},
              "ranks": ranks, "groups": groups, "machine": machine_info(torch.device("cpu")), "cpus": os.cpu_count(),
              "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
              "load_average": {"start": load0, "end": load_average()}, "wall_s": time.time() - t0,
              "nets": {k: {**NETS, **spec.net_defs}[k]["about"] for k in spec.nets}}
    result["model"] = fit_and_predict(result)
    return result
