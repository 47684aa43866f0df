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

import copy
import datetime
import logging
import multiprocessing
import os
import platform
import statistics
import time
import uuid
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as nnf

log = logging.getLogger("localstdp.bench")

# name -> how the net is built: an MLP (input width, hidden widths) or a shipped config's network
NETS = {
    "mlp-uneven": {"kind": "mlp", "n_in": 784, "hidden": [2048, 2048, 2048],
                   "about": "784-2048-2048-2048-10: the split is uneven (bound 1.72x at 2 ranks)"},
    "mlp-even": {"kind": "mlp", "n_in": 2048, "hidden": [2048, 2048, 2048, 2048],
                 "about": "2048-2048-2048-2048-2048-10: four equal layers, two equal halves (bound ~2x)"},
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


def net_config(name: str, batch: int, defs: dict | None = None):
    """(ExperimentConfig, n_features) of a benchmark net at ``batch`` (``defs``: more nets, as NETS)."""
    from ..config import ExperimentConfig, load_config

    spec = {**NETS, **(defs or {})}[name]
    if spec["kind"] == "config":
        cfg = load_config(spec["config"]).with_overrides(batch_size=batch, epochs=1)
        return cfg, 784
    cfg = ExperimentConfig().with_overrides(batch_size=batch, epochs=1)
    cfg = type(cfg)(data=cfg.data, model=type(cfg.model)(hidden=list(spec["hidden"])), train=cfg.train,
                    rule=cfg.rule, backprop=cfg.backprop)
    return cfg, spec["n_in"]


def synthetic(n: int, n_features: int, n_classes: int = 10, seed: int = 0):
    from ..data import Dataset

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, n_features, generator=g)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return Dataset("bench", x, y, x[:1], y[:1], n_classes, tuple(range(n_classes)), (n_features,))


def backprop_stack(model: nn.Module) -> tuple[nn.Sequential, list[tuple[int, int]]]:
    """The network as an nn.Sequential for backprop, and its units as [start, stop) child ranges
    (one per learnable layer, the cuts the local pipeline may use)."""
    from ..model import MLP

    if isinstance(model, MLP):
        kids: list[nn.Module] = []
        units = []
        for l, layer in enumerate(model.layers):
            start = len(kids)
            kids.append(copy.deepcopy(layer))
            if l < len(model.layers) - 1:
                kids.append(nn.Sigmoid())
            units.append((start, len(kids)))
        return nn.Sequential(*kids), units
    return copy.deepcopy(model), []


def stage_modules(stack: nn.Sequential, units: list[tuple[int, int]], split: list[tuple[int, int]]) -> list[nn.Sequential]:
    kids = list(stack.children())
    return [nn.Sequential(*kids[units[lo][0] : units[hi - 1][1]]) for lo, hi in split]


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


def _time(fn, k: int) -> float:
    t0 = time.perf_counter()
    fn(k)
    return time.perf_counter() - t0


def _sgd(params, lr: float = LR):
    return torch.optim.SGD(params, lr=lr)


def _bp_step(net: nn.Module, opt, x, y, scale: float = 1.0) -> None:
    opt.zero_grad(set_to_none=True)
    (nnf.cross_entropy(net(x), y) * scale).backward()
    opt.step()


class _Case:
    """One (net, batch) on this rank: the data, the stage split, and every arm."""

    def __init__(self, g: _Group, net: str, batch: int, spec: ParallelSpec):
        from ..parallel.setup import _setup
        from ..train import batches

        self.g, self.net, self.batch, self.spec = g, net, batch, spec
        cfg, n_in = net_config(net, batch, spec.net_defs)
        n = batch * (spec.timed + spec.warmup)
        self.ds = synthetic(n, n_in)
        self.idx = batches(n, batch, torch.arange(n))
        self.cfg = cfg
        self.setup = lambda mode: _setup(cfg, "local", mode, self.ds, spec.timeout)
        self.pipe = self.setup("pipeline")  # the local pipeline: its plan, units and split
        self.data = self.setup("data")
        self.data_act = self.setup("data")
        self.single = self.setup("data")  # a separate copy for the one-process arms
        plan = self.pipe.plan
        self.unit_costs = list(plan.costs)
        self.split = [tuple(s) for s in self.pipe.stages]
        stack, units = backprop_stack(self.pipe.model)
        if not units:  # a config's nn.Sequential: the plan's units
            units = [(u.start, u.stop) for u in plan.units]
        self.stack0, self.units = stack, units

    def batch_xy(self, b: int):
        i = self.idx[b % len(self.idx)]
        return self.ds.x_train[i], self.ds.y_train[i]

    # -- the arms ------------------------------------------------------------------------------

    def arms(self) -> list[tuple[str, str, object]]:
        """(name, "alone" | "all", fn(k) running k batches); fn of an "all" arm runs on every rank."""
        from ..parallel.data import _data_epoch
        from ..parallel.pipeline import _pipeline_epoch
        from ..train import RunState

        N = self.g.world
        out = []
        learner = self.single.learner

        def local_single(k):
            for b in range(k):
                learner.step(*self.batch_xy(b))

        bp_net = copy.deepcopy(self.stack0)
        bp_opt = _sgd(bp_net.parameters())

        def bp_single(k):
            for b in range(k):
                _bp_step(bp_net, bp_opt, *self.batch_xy(b))

        for threads in sorted({1, N}):
            out.append((f"local 1x{threads}", "alone", _threaded(local_single, threads)))
            out.append((f"backprop 1x{threads}", "alone", _threaded(bp_single, threads)))
        if N == 1:
            return out

        def epoch_of(run, fn):
            def go(k):
                with torch.no_grad():
                    fn(run, self.idx[:k], RunState())
            return go

        out.append((f"local pipeline {N}x1", "all", epoch_of(self.pipe, _pipeline_epoch)))
        # the same without receives posted ahead (each stage posts a batch's receive when it needs it)
        out.append((f"local pipeline-noprefetch {N}x1", "all",
                    epoch_of(self.pipe, lambda run, idx, st: _pipeline_epoch(run, idx, st, recv_ahead=1))))
        self.data.exchange = "updates"
        self.data_act.exchange = "activities"
        out.append((f"local data-updates {N}x1", "all", epoch_of(self.data, _data_epoch)))
        out.append((f"local data-activities {N}x1", "all", epoch_of(self.data_act, _data_epoch)))
        out.append((f"backprop ddp {N}x1", "all", self._ddp()))
        for sched in self.spec.schedules:
            for m in self.spec.microbatches:
                fn = self._schedule(sched, m)
                if fn is not None:
                    out.append((f"backprop {sched} {N}x1 m{m}", "all", fn))
        return out

    def _ddp(self):
        from torch.nn.parallel import DistributedDataParallel

        g = self.g
        net = DistributedDataParallel(copy.deepcopy(self.stack0))
        opt = _sgd(net.parameters())

        def go(k):
            for b in range(k):
                x, y = self.batch_xy(b)
                rows = torch.arange(len(y)).tensor_split(g.world)[g.rank]
                _bp_step(net, opt, x[rows], y[rows])
        return go

    def schedule_split(self, sched: str) -> list[tuple[int, int]] | None:
        """The stages of a schedule: GPipe and 1F1B use the local pipeline's split (one stage per
        rank); the interleaved and V schedules need two stages per rank: the units cut in 2N by cost."""
        from ..parallel.partition import partition_layers

        N = self.g.world
        if sched in ("gpipe", "1f1b"):
            return self.split
        if len(self.unit_costs) < 2 * N:
            return None
        return partition_layers(self.unit_costs, 2 * N)

    def _schedule(self, sched: str, m: int):
        from torch.distributed.pipelining import (
            PipelineStage,
            Schedule1F1B,
            ScheduleGPipe,
            ScheduleInterleavedZeroBubble,
            ScheduleZBVZeroBubble,
        )

        g, N = self.g, self.g.world
        split = self.schedule_split(sched)
        if split is None or self.batch % m or m < N or (sched != "gpipe" and m % N):
            return None
        mods = stage_modules(copy.deepcopy(self.stack0), self.units, split)
        S = len(split)
        if S == N:
            mine = [g.rank]
        elif sched == "zbv":  # V: rank r holds stages r and 2N - 1 - r
            mine = [g.rank, 2 * N - 1 - g.rank]
        else:  # interleaved: rank r holds stages r, r + N
            mine = [g.rank, g.rank + N]
        stages = [PipelineStage(mods[s], s, S, torch.device("cpu")) for s in mine]
        params = [p for s in mine for p in mods[s].parameters()]
        opt = _sgd(params)
        loss = lambda out, y: nnf.cross_entropy(out, y)  # noqa: E731 - the mean over a micro-batch
        cls = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B, "interleaved-zb": ScheduleInterleavedZeroBubble,
               "zbv": ScheduleZBVZeroBubble}[sched]
        schedule = cls(stages[0], m, loss_fn=loss) if S == N else cls(stages, m, loss_fn=loss)
        has_first, has_last = 0 in mine, S - 1 in mine

        def go(k):
            for b in range(k):
                x, y = self.batch_xy(b)
                opt.zero_grad(set_to_none=True)
                args = (x,) if has_first else ()
                kw = {"target": y} if has_last else {}
                schedule.step(*args, **kw)
                opt.step()
        return go

    # -- what the scaling model needs (rank 0 alone, one thread) -------------------------------

    def profile(self) -> dict:
        """Per-stage compute times (seconds per batch, one thread, medians of a few runs)."""
        N = self.g.world
        plan, reps = self.pipe.plan, 5
        out = {"unit_costs": self.unit_costs, "split": [list(s) for s in self.split],
               "unit_in_bytes": [4 * _numel(plan.shapes(u, 1)[0]) for u in range(len(self.unit_costs))]}
        two = self.schedule_split("zbv")
        out["split_2n"] = [list(s) for s in two] if two is not None else None
        x, y = self.batch_xy(0)
        # the local rule: each unit's stage step alone (forward, update) on a copy of the learner
        run = self.setup("data")
        p = _plan_of(run)
        xs0, _ = p.first(x, y)
        unit_s, a = [], xs0
        with torch.no_grad():
            for u in range(len(self.unit_costs)):
                last = u == len(self.unit_costs) - 1
                t = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    nxt, _loss = p.run(u, u + 1, a, y, None, last)
                    t.append(time.perf_counter() - t0)
                unit_s.append(statistics.median(t))
                a = nxt
        out["local_unit_s"] = unit_s
        from ..parallel.partition import partition_layers

        # the split the measured times would choose (the plan splits by its operation counts)
        out["split_measured"] = [list(s) for s in partition_layers(unit_s, N)] if N <= len(unit_s) else None
        from ..parallel.data import _activity_layout

        out["local_step_s"] = {str(self.batch): _median_time(lambda: run.learner.step(x, y), reps)}
        with torch.no_grad():
            out["local_forward_s"] = {str(self.batch): _median_time(lambda: _activity_layout(run, x), reps)}
            pairs = _activity_layout(run, x[:1])
        out["activity_bytes"] = 4 * sum(t[0].numel() for pair in pairs for t in pair)  # per example
        if N > 1:
            shard = self.batch // N
            out["local_step_s"][str(shard)] = _median_time(lambda: run.learner.step(x[:shard], y[:shard]), reps)
            with torch.no_grad():
                out["local_forward_s"][str(shard)] = _median_time(lambda: _activity_layout(run, x[:shard]), reps)
        # message sizes of the local pipeline: head (int64 labels + flag) and the stage input tensors
        out["local_msg_bytes"] = [
            8 * (self.batch + 1) + sum(4 * _numel(s) for s in plan.shapes(lo, self.batch)) for lo, _hi in self.split[1:]]
        out["params_bytes"] = 4 * sum(q.numel() for q in self.stack0.parameters())
        # backprop: forward + backward of each unit at every micro-batch size, the optimiser step
        # every power-of-two micro-batch count up to 64 (the model's predictions for more ranks) and the shard
        sizes = sorted({self.batch // m for m in (1, 2, 4, 8, 16, 32, 64, *self.spec.microbatches)
                        if m <= self.batch and self.batch % m == 0} | ({self.batch // N} if N > 1 else set()))
        bp = {}
        net = copy.deepcopy(self.stack0)
        kids = list(net.children())
        for size in sizes:
            xb, yb = x[:size], y[:size]
            per_unit, a = [], xb
            for i, (s0, s1) in enumerate(self.units):
                mod = nn.Sequential(*kids[s0:s1])
                inp = a.detach().requires_grad_(i > 0)
                last = i == len(self.units) - 1

                def fb(mod=mod, inp=inp, last=last):
                    z = mod(inp)
                    (nnf.cross_entropy(z, yb) if last else z.sum()).backward()
                per_unit.append(_median_time(fb, reps))
                with torch.no_grad():
                    a = mod(a)
            bp[str(size)] = per_unit
        out["backprop_unit_s"] = bp
        opt = _sgd(net.parameters())
        for q in net.parameters():
            q.grad = torch.zeros_like(q)
        out["backprop_opt_s"] = _median_time(opt.step, reps)
        out["backprop_step_s"] = {str(s): _median_time(lambda s=s: _bp_step(net, opt, x[:s], y[:s]), reps)
                                  for s in sizes}
        return out


def _plan_of(run):
    from ..parallel.stages import make_plan

    return make_plan("local", run.model, run.learner, run.ds.x_train[:1])


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _median_time(fn, reps: int) -> float:
    fn()
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


def _threaded(fn, threads: int):
    def go(k):
        torch.set_num_threads(threads)
        try:
            fn(k)
        finally:
            torch.set_num_threads(1)
    return go


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
    try:
        result["link"] = _link(g) if g.world > 1 else []
        for net in spec.nets:
            for batch in spec.batches:
                case = _Case(g, net, batch, spec)
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
                if g.rank == 0:
                    result["cases"].append({"net": net, "batch": batch, "world": g.world, "profile": prof,
                                            "examples_per_s": times})
                    log.info("bench parallel: %s batch %d on %d ranks done", net, batch, g.world)
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
    env = {"OMP_NUM_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return elastic_launch(lc, _worker)(spec)[0]
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def _med(v: list[float]) -> float:
    return statistics.median(v)


def summarise(result: dict) -> list[dict]:
    """Per (ranks, net, batch): the speed-ups the issue's targets name."""
    rows = []
    for grp in result["groups"]:
        n = grp["world"]
        if n < 2:
            continue
        for case in grp["cases"]:
            eps, prof = case["examples_per_s"], case["profile"]
            local1, bp1 = _med(eps["local 1x1"]), _med(eps["backprop 1x1"])
            pipe = _med(eps[f"local pipeline {n}x1"])
            c = prof["local_unit_s"]
            bound = sum(c) / max(sum(c[lo:hi]) for lo, hi in prof["split"])
            sched = {}
            for name, v in eps.items():
                w = name.split()
                if w[0] == "backprop" and w[1] in SCHEDULES:
                    m = _med(v)
                    if m > sched.get(w[1], (0.0, 0))[0]:
                        sched[w[1]] = (m, int(w[3][1:]))
            best = max(sched.items(), key=lambda kv: kv[1][0]) if sched else None
            measured = prof.get("split_measured") or prof["split"]
            rows.append({
                "ranks": n, "net": case["net"], "batch": case["batch"], "split": prof["split"],
                "split_measured": measured,
                "measured_split_bound": sum(c) / max(sum(c[lo:hi]) for lo, hi in measured),
                "local_1x1": local1, "local_1xN": _med(eps.get(f"local 1x{n}", [float("nan")])),
                "backprop_1x1": bp1, "backprop_1xN": _med(eps.get(f"backprop 1x{n}", [float("nan")])),
                "pipeline": pipe, "pipeline_speedup": pipe / local1, "split_bound": bound,
                "pipeline_of_bound": pipe / local1 / bound,
                "local_data_speedup": max(_med(eps[f"local data-updates {n}x1"]),
                                          _med(eps[f"local data-activities {n}x1"])) / local1,
                "local_data_updates_speedup": _med(eps[f"local data-updates {n}x1"]) / local1,
                "local_data_activities_speedup": _med(eps[f"local data-activities {n}x1"]) / local1,
                "ddp_speedup": _med(eps[f"backprop ddp {n}x1"]) / bp1,
                "schedules": {k: {"examples_per_s": v[0], "microbatches": v[1], "speedup": v[0] / bp1}
                              for k, v in sched.items()},
                "best_schedule": best[0] if best else None,
                "pipeline_over_best_backprop_pipeline": pipe / best[1][0] if best else None,
            })
    return rows


def render_markdown(result: dict, command: str) -> str:
    rows = summarise(result)
    model = result["model"]
    lines = [f"Measured by `{command}` ({result['wall_s'] / 60:.1f} min; {result['cpus']} CPUs, "
             f"{result['machine'].get('cpu')}, torch {result['torch']}; 1-min load average "
             f"{result['load_average']['start'][0]:.2f} at the start, {result['load_average']['end'][0]:.2f} at the end). "
             f"Examples per second of the training loop (synthetic MNIST-shaped data, subnormals flushed in every arm), "
             f"medians of {result['spec']['repeats']} interleaved repeats of {result['spec']['timed']} timed batches "
             f"each after {result['spec']['warmup']} warm-up batches; every rank one thread. Speed-ups are against one "
             "process with one thread of the SAME method (\"N machines of one core\"); `1 x N` is one process with N "
             "threads (\"one machine of N cores\"). The split bound is the local rule's total measured layer time "
             "over the slowest stage's.", ""]
    for name, about in result["nets"].items():
        lines.append(f"- `{name}`: {about}")
    lines += ["", "| ranks | net | batch | split (units) | local pipeline | of split bound | local 1 x N | local data: updates / "
              "activities "
              "| backprop 1 x N | DDP | best backprop pipeline (m) | local pipeline / best backprop pipeline |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        best = r["best_schedule"]
        bs = f"{best} {r['schedules'][best]['speedup']:.2f}x (m {r['schedules'][best]['microbatches']})" if best else "-"
        ratio = f"{r['pipeline_over_best_backprop_pipeline']:.2f}x" if best else "-"
        lines.append(
            f"| {r['ranks']} | {r['net']} | {r['batch']} | {' / '.join(f'[{a}, {b})' for a, b in r['split'])} "
            f"| {r['pipeline_speedup']:.2f}x | {r['pipeline_of_bound']:.2f} (bound {r['split_bound']:.2f}x) "
            f"| {r['local_1xN'] / r['local_1x1']:.2f}x | {r['local_data_updates_speedup']:.2f}x / "
            f"{r['local_data_activities_speedup']:.2f}x "
            f"| {r['backprop_1xN'] / r['backprop_1x1']:.2f}x | {r['ddp_speedup']:.2f}x | {bs} | {ratio} |")
    for r in rows:
        if [list(x) for x in r["split_measured"]] != [list(x) for x in r["split"]]:
            lines.append(f"\n{r['net']} batch {r['batch']}, {r['ranks']} ranks: by measured layer times the split would be "
                         f"{' / '.join(f'[{a}, {b})' for a, b in r['split_measured'])} (bound "
                         f"{r['measured_split_bound']:.2f}x) instead of the operation count's (bound {r['split_bound']:.2f}x).")
    lines += ["", "Every arm (examples/s, median and min - max; the model's prediction and its relative error):", "",
              "| ranks | net | batch | arm | examples/s | min - max | model | error |", "|---|---|---|---|---|---|---|---|"]
    pred = {(a["world"], a["net"], a["batch"], a["arm"]): a for a in model["arms"]}
    for grp in result["groups"]:
        for case in grp["cases"]:
            for name, v in case["examples_per_s"].items():
                a = pred[(grp["world"], case["net"], case["batch"], name)]
                p = "-" if a["predicted"] is None else f"{a['predicted']:.0f}"
                e = "-" if a["error"] is None else f"{a['error']:+.0%}"
                lines.append(f"| {grp['world']} | {case['net']} | {case['batch']} | {name} | {_med(v):.0f} "
                             f"| {min(v):.0f} - {max(v):.0f} | {p} | {e} |")
    for w, link in model["links"].items():
        if link["beta_Bps"] != float("inf"):
            lines.append(f"\nLink between two ranks of the {w}-rank group (gloo, loopback), fitted: alpha "
                         f"{link['alpha_s'] * 1e6:.0f} us, beta {link['beta_Bps'] / 1e9:.2f} GB/s.")
    if model["machines"]:
        lines += ["", f"Model: speed-up over one machine of one core, N machines of one core each over a "
                  f"{model['network']['gbit_s']} Gb/s, {model['network']['alpha_s'] * 1e6:.0f} us network, on a net "
                  "of N equal 2048-wide layers (one per machine) plus the output layer:", ""]
        for key, by_n in model["machines"].items():
            cols = list(next(iter(by_n.values())).keys())
            lines += [f"{key}:", "", "| N | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
            for n, vals in by_n.items():
                lines.append(f"| {n} | " + " | ".join("-" if vals.get(c) is None else f"{vals[c]:.2f}" for c in cols) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str) -> str:
    """Speed-up against ranks: measured points and the model's lines (local pipeline, backprop's
    best schedule and its zero-bubble ideal, DDP, local data parallel, ideal)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = result["model"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for key, by_n in model["machines"].items():
        ns = [int(n) for n in by_n]
        style = {"ideal": ("k", ":"), "local pipeline": ("C0", "-"), "local data": ("C0", "--"),
                 "backprop ddp": ("C3", "--"), "backprop 1f1b (best m)": ("C3", "-"),
                 "backprop zero-bubble ideal (best m)": ("C3", "-.")}
        for col, (color, ls) in style.items():
            pts = [(n, by_n[str(n)].get(col)) for n in ns if by_n[str(n)].get(col) is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, ls=ls, label=f"model: {col} ({key})")
        break
    marks = {"pipeline_speedup": ("C0", "o", "measured: local pipeline"),
             "local_data_speedup": ("C0", "s", "measured: local data"),
             "ddp_speedup": ("C3", "s", "measured: backprop DDP")}
    for r in summarise(result):
        for k, (color, mk, label) in marks.items():
            ax.plot([r["ranks"]], [r[k]], color=color, marker=mk, ls="", alpha=0.7, label=label)
        if r["best_schedule"]:
            ax.plot([r["ranks"]], [r["schedules"][r["best_schedule"]]["speedup"]], color="C3", marker="o", ls="",
                    alpha=0.7, label="measured: backprop best pipeline")
    handles, labels = ax.get_legend_handles_labels()
    seen = {}
    for h, lab in zip(handles, labels):
        seen.setdefault(lab, h)
    ax.legend(seen.values(), seen.keys(), fontsize=7)
    ax.set_xlabel("ranks (one core each)")
    ax.set_ylabel("speed-up over one process, one thread")
    ax.set_title("Training throughput against ranks (measured on one machine; model over 10 Gb/s)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
