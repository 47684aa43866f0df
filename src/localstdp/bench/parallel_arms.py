"""The arms of ``localstdp bench --parallel`` (:mod:`localstdp.bench.parallel`): one (net, batch) on one
rank -- its data, the local pipeline's split, every arm's training loop (the local rule in one process,
its pipeline and data parallel; backprop in one process, DDP and torch.distributed.pipelining's
schedules on the same split) and the per-stage profile the scaling model needs."""

from __future__ import annotations

import copy
import math
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as nnf

from .parallel_spec import LR, ParallelSpec, _Group, net_config, synthetic


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
        cfg, n_in = net_config(net, batch, spec.net_defs, g.world)
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
               "unit_in_bytes": [4 * math.prod(plan.shapes(u, 1)[0]) for u in range(len(self.unit_costs))]}
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
            8 * (self.batch + 1) + sum(4 * math.prod(s) for s in plan.shapes(lo, self.batch)) for lo, _hi in self.split[1:]]
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
