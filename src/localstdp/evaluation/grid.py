"""``reproduce``: the panel (tasks x methods x seeds) and the robustness-accuracy frontier.

The protocol is ``docs/evaluation.md``. Per task and seed s, every panel method (localstdp.evaluation.methods)
trains from the task's config with ``train.seed = s``: same architecture, initialisation, split and
epoch budget. Each model is attacked on the same test examples (localstdp.robustness.suite: FGSM, PGD,
AutoAttack, Square / random search, noise), the PGD examples of every other method's model of the
seed are transferred to it, the per-example worst case is taken, and interval / linear bounds give
the certified accuracy (localstdp.robustness.bounds). Where a baseline's VALIDATION accuracy differs from the
local rule's by more than ``match_tol``, the more accurate of the two is taken at the epoch of its
own full run whose validation accuracy is closest to the other's (kept weights, not a retrain) and
attacked again: robustness at matched clean accuracy.

The frontier sweeps backprop's weight decay and the local rule's own knobs (eta, epochs,
rule.weight_decay), one at a time from the task's settings, ``frontier_seeds`` seeds each, attacked
at ``frontier_eps``. Statistics and verdicts: localstdp.evaluation.analysis.

Every finished unit (a task's seed of the panel, or one frontier point and seed) is written to
``OUT/units/`` as it completes, and so is every part of a panel unit (one method of one seed,
trained and attacked: localstdp.evaluation.units); ``resume`` reuses the units and parts made with the same
settings and code version, so an interrupted run loses at most the steps in progress (one model
each).
The steps run in this process (``jobs`` 1), in ``jobs`` local worker processes, or on the workers of a
dask.distributed cluster (``scheduler``: localstdp.evaluation.cluster); the same numbers either way.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..checkpoint import atomic_write_text
from ..config import ExperimentConfig
from ..data import Dataset, load_dataset
from ..errors import LocalSTDPError
from ..registry import TASKS
from .plan import (
    _frontier_rows,
    _method_settings,
    _Step,
    _steps,
    _units,
    check_grid_args,
    code_version,
    fingerprint,
    package_versions,
    task_config,
)
from .settings import HEADLINE_EPS, GridSettings
from .units import (
    PART,
    assemble_panel,
    frontier_unit,
    load_part,
    panel_method,
    part_fingerprint,
    read_unit,
    save_part,
    unit_text,
)

log = logging.getLogger(__name__)

UNITS = "units"


def run_step(step: _Step, cfg: ExperimentConfig, ds: Dataset, settings: GridSettings, unit_dir: Path,
             fingerprint: str, say: Callable[[str], None] = lambda s: None) -> dict | None:
    """Run one step: a frontier unit returns its record; a part is written to its method's
    directory (read back by the assembly) and returns None."""
    if step.kind == "frontier":
        point, seed = step.arg
        return frontier_unit(step.task, cfg, ds, point, seed, settings, say)
    seed, method = step.arg
    local = None if method == "local" else load_part(unit_dir / step.unit / "local")
    part = panel_method(step.task, cfg, ds, seed, method, settings, local, say)
    save_part(unit_dir / step.unit / method, method, part, fingerprint)
    return None


_WORKER: dict = {}


def _worker_init(datasets: dict, queue, parent: int) -> None:
    """A step worker: one thread (the workers share the cores), ART quiet, Ctrl-C left to the parent,
    and it exits when the parent is gone (killed, even by SIGKILL) instead of computing on unseen."""
    from .cluster import local_worker_init

    local_worker_init(parent)
    _WORKER.update(data=dict(datasets), queue=queue)


def _worker_run(step: _Step, cfg: ExperimentConfig, settings: GridSettings, unit_dir: Path, fingerprint: str):
    data = _WORKER["data"]
    if step.task not in data:
        data[step.task] = load_dataset(cfg.data)
    return run_step(step, cfg, data[step.task], settings, unit_dir, fingerprint, _WORKER["queue"].put)


def run_grid(tasks: Sequence[str] | Mapping[str, ExperimentConfig], settings: GridSettings = GridSettings(),  # noqa: B008  (frozen)
             progress: bool = False, datasets: Mapping[str, Dataset] | None = None, out: str | Path | None = None,
             resume: bool = False, jobs: int = 1, scheduler=None, scheduler_timeout: float | None = None) -> dict:
    """Run every unit; returns the results dict written to results.json (see localstdp.evaluation.analysis).

    ``tasks`` is a list of registered task names, or a mapping name -> config (tests use tiny ones).
    With ``out``, each finished unit is written to ``out/units/<task>/<unit>.json`` and each panel
    method's model (and, until its unit is assembled, its part) to ``out/units/<task>/<unit>/<method>/``;
    ``resume`` reuses the units and parts made with the same fingerprint and refuses others. Without
    ``out`` the parts live in a temporary directory. ``jobs`` > 1 runs steps in that many worker
    processes of one thread each, the largest ready step first (numbers equal a one-thread run, not
    always bit for bit a multi-thread one). ``scheduler`` (a dask scheduler's address, e.g.
    ``tcp://host:8786``, or a ``distributed.Client``) runs the same steps on that cluster's workers
    instead (localstdp.evaluation.cluster; ``jobs`` is then unused): the same numbers as ``jobs`` > 1,
    each step's files written here by this process as its result comes back; ``scheduler_timeout``
    seconds to reach it (default 20).
    """
    import tempfile

    from .analysis import summarise

    check_grid_args(tasks, settings, progress, datasets, out, resume, jobs)
    cfgs = dict(tasks) if isinstance(tasks, Mapping) else {t: task_config(t) for t in tasks}
    plan = [u for t, c in cfgs.items() for u in _units(t, c, settings)]
    scratch = tempfile.TemporaryDirectory(prefix="localstdp-units-") if out is None else None
    unit_dir = Path(out) / UNITS if out is not None else Path(scratch.name)
    try:
        if scheduler is None:
            return _run_grid(cfgs, plan, settings, progress, datasets, unit_dir, resume and out is not None, jobs,
                             summarise)
        from .cluster import CONNECT_TIMEOUT, Cluster

        with Cluster(scheduler, scheduler_timeout or CONNECT_TIMEOUT) as cluster:
            return _run_grid(cfgs, plan, settings, progress, datasets, unit_dir, resume and out is not None, jobs,
                             summarise, cluster)
    finally:
        if scratch is not None:
            scratch.cleanup()


def _run_grid(cfgs, plan, settings, progress, datasets, unit_dir: Path, resume: bool, jobs: int, summarise,
              cluster=None) -> dict:
    if unit_dir.exists() and not resume:
        for old in unit_dir.glob("*/*"):  # a fresh run: units of an earlier run must not mix with this one
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    prints = {t: fingerprint(t, c, settings) for t, c in cfgs.items()}
    stale = ("reproduce with the same command to resume, or into a new --out")
    done: dict[str, dict] = {}
    if resume:
        for name, t, _, _ in plan:
            path = unit_dir / f"{name}.json"
            if path.exists():
                rec = read_unit(path)
                if rec is None:
                    continue  # a damaged unit (unreadable, not JSON, or not matching its digest) is run again
                if rec.get("fingerprint") != prints[t]:
                    raise LocalSTDPError(f"{path} was made by other settings, config or code version; {stale}")
                done[name] = rec
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=0, desc=f"reproduce {len(done)}/{len(plan)} units", unit="", dynamic_ncols=True,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
    say = (lambda s: bar.set_postfix_str(s, refresh=True)) if bar is not None else (lambda s: log.info("%s", s))
    t0 = time.perf_counter()
    results: dict[str, dict] = dict(done)
    data: dict[str, Dataset] = dict(datasets or {})
    for t in dict.fromkeys(t for name, t, _, _ in plan if name not in done):
        if t not in data:  # here too on a cluster: the plan's cost model and the assembly read it
            say(f"{t}: load data")
            data[t] = load_dataset(cfgs[t].data)
    steps = _steps([u for u in plan if u[0] not in done], cfgs, settings, data)
    finished: set[str] = set()
    if resume:
        for st in steps:
            if st.kind == "part":
                fp = part_fingerprint(unit_dir / st.key)
                if fp is not None and fp != prints[st.task]:
                    raise LocalSTDPError(f"{unit_dir / st.key} was made by other settings, config or code "
                                         f"version; {stale}")
                if fp is not None:
                    finished.add(st.key)
    parts_resumed = len(finished)
    if bar is not None:
        bar.total = sum(st.cost for st in steps) / 1e9
        bar.update(sum(st.cost for st in steps if st.key in finished) / 1e9)

    def finish(name: str, task: str, rec: dict) -> None:
        rec = rec | {"fingerprint": prints[task], "unit": name}
        (unit_dir / task).mkdir(parents=True, exist_ok=True)
        atomic_write_text(unit_dir / f"{name}.json", unit_text(rec))
        results[name] = rec
        if bar is not None:
            bar.set_description_str(f"reproduce {len(results)}/{len(plan)} units", refresh=False)

    def assemble_if_ready(name: str, task: str, seed: int) -> None:
        if name in results or any(f"{name}/{m}" not in finished for m in settings.methods):
            return
        say(f"{name}: transfer, worst case, checks")
        parts = {m: load_part(unit_dir / name / m) for m in settings.methods}
        finish(name, task, assemble_panel(task, data[task], seed, settings, parts))
        for m in settings.methods:  # the unit is written: its parts' attack data is no longer needed
            (unit_dir / name / m / PART).unlink(missing_ok=True)

    def complete(st: _Step, rec: dict | None) -> None:
        if st.kind == "frontier":
            finish(st.unit, st.task, rec)
        else:
            finished.add(st.key)
            assemble_if_ready(st.unit, st.task, st.arg[0])
        if bar is not None:
            bar.update(st.cost / 1e9)

    for st in steps:  # units whose every part was kept
        if st.kind == "part" and st.key in finished:
            assemble_if_ready(st.unit, st.task, st.arg[0])
    pending = sorted((st for st in steps if st.key not in finished), key=lambda st: -st.cost)  # stable
    try:
        if cluster is not None:
            from .cluster import run_grid_steps

            run_grid_steps(cluster, pending, finished, cfgs, settings, datasets or {}, unit_dir, prints, say, complete)
        elif jobs == 1 or len(pending) <= 1:
            while pending:
                st = next(st for st in pending if st.needs is None or st.needs in finished)
                pending.remove(st)
                complete(st, run_step(st, cfgs[st.task], data[st.task], settings, unit_dir, prints[st.task], say))
        else:
            _run_parallel(pending, finished, cfgs, settings, datasets or {}, jobs, unit_dir, prints, say, complete)
    finally:
        if bar is not None:
            bar.close()
    rows = [r for n, *_ in plan if "/panel-" in n for r in results[n]["rows"]]
    matched = [m for n, *_ in plan if "/panel-" in n for m in results[n]["matched"]]
    frontier = _frontier_rows(cfgs, settings, rows, results)
    settings_out = {
        "seeds": list(range(settings.seeds)), "frontier_seeds": list(range(settings.frontier_seeds)),
        "matched_eps": list(settings.matched_eps),
        "methods": list(settings.methods), "frontier_eps": list(settings.frontier_eps),
        "tasks": {t: {"config": TASKS.get(t), "epochs": c.with_overrides(epochs=settings.epochs).train.epochs,
                      "hidden": list(c.model.hidden), "equivalence_margin": c.evaluation.equivalence_margin,
                      "methods": {m: _method_settings(c, m) for m in settings.methods},
                      "frontier": dataclasses.asdict(c.frontier)} for t, c in cfgs.items()},
        "n_attack_cap": settings.n_attack, "match_tol": settings.match_tol, "headline_eps": HEADLINE_EPS,
        "certify": settings.certify, "n_boot": settings.n_boot, "attacks": dataclasses.asdict(settings.attacks),
        "version": code_version(), "versions": package_versions(), "jobs": jobs,
        "scheduler": cluster.address if cluster is not None else None, "units_resumed": len(done),
        "parts_resumed": parts_resumed,
        "wall_seconds": time.perf_counter() - t0,
    }
    return summarise({"settings": settings_out, "rows": rows, "matched": matched, "frontier_rows": frontier})


def _run_parallel(pending, finished, cfgs, settings, datasets, jobs, unit_dir, prints, say, complete) -> None:
    """Steps in ``jobs`` worker processes, the largest ready step whenever a worker is free; each
    finished step is handed to ``complete`` at once, and the workers' status lines reach ``say``.
    Ctrl-C stops the workers (finished steps stay written)."""
    import multiprocessing
    import os
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()  # handed to the workers as they start (no manager process to outlive a killed parent)
    ex = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init,
                             initargs=(dict(datasets), q, os.getpid()))
    try:
        running: dict = {}
        while pending or running:
            while len(running) < jobs:
                st = next((st for st in pending if st.needs is None or st.needs in finished), None)
                if st is None:
                    break
                pending.remove(st)
                running[ex.submit(_worker_run, st, cfgs[st.task], settings, unit_dir, prints[st.task])] = st
            ready, _ = wait(set(running), timeout=1.0, return_when=FIRST_COMPLETED)
            try:
                while True:
                    say(q.get_nowait())
            except queue_mod.Empty:
                pass
            for f in ready:
                complete(running.pop(f), f.result())
    except BaseException:
        for p in list(getattr(ex, "_processes", {}).values()):
            p.terminate()
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown()

