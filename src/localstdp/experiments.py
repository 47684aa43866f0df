"""``reproduce``: the panel (tasks x methods x seeds) and the robustness-accuracy frontier.

The protocol is ``docs/evaluation.md``. Per task and seed s, every panel method (localstdp.methods)
trains from the task's config with ``train.seed = s``: same architecture, initialisation, split and
epoch budget. Each model is attacked on the same test examples (localstdp.robustness: FGSM, PGD,
AutoAttack, Square / random search, noise), the PGD examples of every other method's model of the
seed are transferred to it, the per-example worst case is taken, and interval / linear bounds give
the certified accuracy (localstdp.bounds). Where a baseline's VALIDATION accuracy differs from the
local rule's by more than ``match_tol``, the more accurate of the two is taken at the epoch of its
own full run whose validation accuracy is closest to the other's (kept weights, not a retrain) and
attacked again: robustness at matched clean accuracy.

The frontier sweeps backprop's weight decay and the local rule's own knobs (eta, epochs,
rule.weight_decay), one at a time from the task's settings, ``frontier_seeds`` seeds each, attacked
at ``frontier_eps``. Statistics and verdicts: localstdp.analysis.

Every finished unit (a task's seed of the panel, or one frontier point and seed) is written to
``OUT/units/`` as it completes, and so is every part of a panel unit (one method of one seed,
trained and attacked: localstdp.units); ``resume`` reuses the units and parts made with the same
settings and code version, so an interrupted run loses at most the steps in progress (one model
each).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from . import __version__
from .checkpoint import atomic_write_text
from .config import ExperimentConfig, load_config
from .data import Dataset, load_dataset
from .errors import ConfigError, LocalSTDPError
from .methods import PANEL, method_config, resolve_methods
from .registry import DEFAULT_METHODS, SUITES, TASKS
from .robustness import (
    AttackSettings,
)
from .units import (  # noqa: F401
    PART,
    assemble_panel,
    attack_indices,
    from_panel,
    frontier_points,
    frontier_row_from_panel,
    frontier_unit,
    load_part,
    pack,
    panel_method,
    panel_unit,
    part_fingerprint,
    point_name,
    save_part,
    unpack,
)

log = logging.getLogger(__name__)

# Task registry and suites live in registry.py (plain data, read by the CLI parser); re-exported here.
HEADLINE_EPS = 0.1  # the eps of the paired tests and of the verdicts
FRONTIER_EPS = (0.05, 0.1)
UNITS = "units"


@dataclass(frozen=True)
class GridSettings:
    """seeds >= 1 (train.seed = 0..seeds-1) for the panel; frontier_seeds for the frontier (0 = no
    frontier); epochs overrides train.epochs (None: the config's); n_attack caps the attacked test
    examples (a fixed seeded subset, the same for every seed and method; None: all); match_tol:
    validation-accuracy gap above which a matched comparison is run; certify: add the certified
    accuracy (interval / linear bounds); n_boot: bootstrap replicates of the statistics."""

    seeds: int = 5
    methods: tuple[str, ...] = DEFAULT_METHODS  # the peer rules (registry.PEER_RULES) only when named
    frontier_seeds: int = 3
    frontier_eps: tuple[float, ...] = FRONTIER_EPS
    matched_eps: tuple[float, ...] = (HEADLINE_EPS,)
    epochs: int | None = None
    n_attack: int | None = 500
    match_tol: float = 0.01
    certify: bool = True
    n_boot: int = 20000  # the bootstrap p-value cannot fall below 1/(n_boot+1): Holm multiplies it
    attacks: AttackSettings = field(default_factory=AttackSettings)

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ConfigError(f"seeds = {self.seeds!r}: expected an integer >= 1")
        if self.frontier_seeds < 0:
            raise ConfigError(f"frontier_seeds = {self.frontier_seeds!r}: expected an integer >= 0 (0 = no frontier)")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs = {self.epochs!r}: expected an integer >= 1")
        if self.n_attack is not None and self.n_attack < 1:
            raise ConfigError(f"n_attack = {self.n_attack!r}: expected an integer >= 1")
        if not 0 <= self.match_tol < 1:
            raise ConfigError(f"match_tol = {self.match_tol!r}: expected a value in [0, 1)")
        if "local" not in self.methods:
            raise ConfigError("the panel compares against the local rule: --methods must include local")
        resolve_methods(self.methods)
        if self.n_boot < 100:
            raise ConfigError(f"n_boot = {self.n_boot!r}: expected at least 100 bootstrap replicates")


def task_config(task: str) -> ExperimentConfig:
    """The packaged config of a registered task."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    with resources.as_file(resources.files("localstdp") / "configs" / TASKS[task]) as path:
        return load_config(path)


def resolve_tasks(tasks: Sequence[str] | None = None, suite: str | None = None) -> list[str]:
    """Task names from an explicit list or a suite name (default: the "paper" suite)."""
    if tasks:
        bad = [t for t in tasks if t not in TASKS]
        if bad:
            raise ConfigError(f"unknown task(s) {', '.join(bad)}; expected any of {', '.join(TASKS)}")
        return list(dict.fromkeys(tasks))
    suite = suite or "paper"
    if suite not in SUITES:
        raise ConfigError(f"unknown suite {suite!r}; expected one of {', '.join(SUITES)}")
    return list(SUITES[suite])


# ---------------------------------------------------------------------------------------------
# the grid, unit by unit, resumable


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The package version and a hash of its source files: any code change makes new units."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


def fingerprint(task: str, cfg: ExperimentConfig, settings: GridSettings) -> str:
    """What a unit's numbers depend on: the task's config, the settings and the code version."""
    blob = json.dumps({"task": task, "config": cfg.to_dict(), "settings": dataclasses.asdict(settings),
                       "version": code_version()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _derived(cfg: ExperimentConfig, settings: GridSettings, point: dict, seed: int) -> str | None:
    """The panel method whose row gives this frontier point and seed (the same model), or None."""
    m = from_panel(point, cfg)
    return m if m in settings.methods and seed < settings.seeds else None


def _units(task: str, cfg: ExperimentConfig, settings: GridSettings) -> list[tuple[str, str, str, object]]:
    """(unit name, task, kind, argument): the panel's seeds, then every frontier point x seed that
    is not a panel model already (those rows are derived from the panel's, see _frontier_rows)."""
    units = [(f"{task}/panel-seed{s}", task, "panel", s) for s in range(settings.seeds)]
    for p in frontier_points(cfg) if settings.frontier_seeds else []:
        units += [(f"{task}/frontier-{point_name(p)}-seed{s}", task, "frontier", (p, s))
                  for s in range(settings.frontier_seeds) if _derived(cfg, settings, p, s) is None]
    return units


def _frontier_rows(cfgs: Mapping[str, ExperimentConfig], settings: GridSettings, rows: list[dict],
                   results: dict) -> list[dict]:
    """Every frontier row in point order: from its own unit, or derived from the panel's row."""
    out = []
    for t, c in cfgs.items():
        for p in frontier_points(c) if settings.frontier_seeds else []:
            for s in range(settings.frontier_seeds):
                m = _derived(c, settings, p, s)
                if m is None:
                    out += results[f"{t}/frontier-{point_name(p)}-seed{s}"]["rows"]
                else:
                    row = next(r for r in rows if r["task"] == t and r["method"] == m and r["seed"] == s)
                    out.append(frontier_row_from_panel(row, p, settings.frontier_eps))
    return out


# ---------------------------------------------------------------------------------------------
# steps: what a worker runs. A panel unit is one part per method (the local rule's first: every
# other part's matched comparison reads it) and an assembly; a frontier unit is one step.

# The cost model (the progress bar's ETA and the order steps are handed out in, largest first):
# a step costs (one example's forward FLOPs) x (forward-pass equivalents). Training an example is
# ~3 passes (forward and backward); every epoch also scores the train, validation and test
# splits. The suite at one eps costs ~180 passes per attacked example (measured: mnist-10's
# 1024-64 network, 500 examples, one thread: 43 s at one eps, 4.9 s an epoch). Forward-Forward
# scores every label with its own pass, and trains on a positive and a negative pass.
TRAIN_PASSES = 3
ATTACK_PASSES = 180


@dataclass(frozen=True)
class _Step:
    key: str  # "<task>/panel-seed<s>/<method>" for a part; the unit's name for a frontier unit
    unit: str
    task: str
    kind: str  # "part" or "frontier"
    arg: object  # (seed, method) for a part, (point, seed) for a frontier unit
    needs: str | None  # the key of the step it reads (a part: its seed's local part)
    cost: float


def forward_flops(cfg: ExperimentConfig, ds: Dataset) -> float:
    """FLOPs of one example's forward through the task's network (torch's FLOP counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .model import build_network

    net = build_network(cfg.model, ds.n_features, ds.n_classes, 0)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(ds.x_test[:1].float())
    return float(max(counter.get_total_flops(), 1))


def step_cost(cfg: ExperimentConfig, ds: Dataset, settings: GridSettings, method: str, n_eps: int,
              flops: float, epochs: int | None = None) -> float:
    """The cost model above for one model: train ``method`` and attack it at ``n_eps`` eps."""
    mcfg = method_config(cfg, method).with_overrides(epochs=epochs if epochs is not None else settings.epochs)
    ff = PANEL[method].learner == "ff"
    k = ds.n_classes if ff else 1
    n_train, n_eval = len(ds.y_train), len(ds.y_train) + len(ds.y_val) + len(ds.y_test)
    n_attack = min(settings.n_attack or len(ds.y_test), len(ds.y_test))
    train_passes = mcfg.train.epochs * (n_train * TRAIN_PASSES * (2 if ff else 1) + n_eval * k)
    return flops * (train_passes + n_attack * n_eps * ATTACK_PASSES * k)


def _steps(plan, cfgs, settings, data) -> list[_Step]:
    steps = []
    flops_of = {t: forward_flops(cfgs[t], data[t]) for t in dict.fromkeys(t for _, t, _, _ in plan)}
    for name, t, kind, arg in plan:
        flops = flops_of[t]
        if kind == "panel":
            order = ["local"] + [m for m in settings.methods if m != "local"]
            steps += [_Step(f"{name}/{m}", name, t, "part", (arg, m), None if m == "local" else f"{name}/local",
                            step_cost(cfgs[t], data[t], settings, m, len(settings.attacks.eps), flops))
                      for m in order]
        else:
            point, seed = arg
            epochs = None if point["knob"] == "train.epochs" else settings.epochs
            cfg = method_config(cfgs[t], point["method"]).with_sets(point["overrides"])
            steps.append(_Step(name, name, t, "frontier", arg, None,
                               step_cost(cfg, data[t], settings, point["method"], len(settings.frontier_eps), flops,
                                         epochs)))
    return steps


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
    import os
    import signal
    import threading

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    logging.getLogger("art").setLevel(logging.WARNING)
    _WORKER.update(data=dict(datasets), queue=queue)

    def watch() -> None:  # ``parent`` is the pid the parent passed: it may be gone before this runs
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="localstdp-parent-watch", daemon=True).start()


def _worker_run(step: _Step, cfg: ExperimentConfig, settings: GridSettings, unit_dir: Path, fingerprint: str):
    data = _WORKER["data"]
    if step.task not in data:
        data[step.task] = load_dataset(cfg.data)
    return run_step(step, cfg, data[step.task], settings, unit_dir, fingerprint, _WORKER["queue"].put)


def run_grid(tasks: Sequence[str] | Mapping[str, ExperimentConfig], settings: GridSettings = GridSettings(),
             progress: bool = False, datasets: Mapping[str, Dataset] | None = None, out: str | Path | None = None,
             resume: bool = False, jobs: int = 1) -> dict:
    """Run every unit; returns the results dict written to results.json (see localstdp.analysis).

    ``tasks`` is a list of registered task names, or a mapping name -> config (tests use tiny ones).
    With ``out``, each finished unit is written to ``out/units/<task>/<unit>.json`` and each panel
    method's model (and, until its unit is assembled, its part) to ``out/units/<task>/<unit>/<method>/``;
    ``resume`` reuses the units and parts made with the same fingerprint and refuses others. Without
    ``out`` the parts live in a temporary directory. ``jobs`` > 1 runs steps in that many worker
    processes of one thread each, the largest ready step first (numbers equal a one-thread run, not
    always bit for bit a multi-thread one).
    """
    import tempfile

    from .analysis import summarise

    if jobs < 1:
        raise ConfigError(f"jobs = {jobs!r}: expected an integer >= 1")
    cfgs = dict(tasks) if isinstance(tasks, Mapping) else {t: task_config(t) for t in tasks}
    plan = [u for t, c in cfgs.items() for u in _units(t, c, settings)]
    scratch = tempfile.TemporaryDirectory(prefix="localstdp-units-") if out is None else None
    unit_dir = Path(out) / UNITS if out is not None else Path(scratch.name)
    try:
        return _run_grid(cfgs, plan, settings, progress, datasets, unit_dir, resume and out is not None, jobs,
                         summarise)
    finally:
        if scratch is not None:
            scratch.cleanup()


def _run_grid(cfgs, plan, settings, progress, datasets, unit_dir: Path, resume: bool, jobs: int, summarise) -> dict:
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
                try:
                    rec = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError):
                    continue  # a damaged unit is run again
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
        if t not in data:
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
        atomic_write_text(unit_dir / f"{name}.json", json.dumps(rec) + "\n")
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
        if jobs == 1 or len(pending) <= 1:
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
        "version": code_version(), "jobs": jobs, "units_resumed": len(done), "parts_resumed": parts_resumed,
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


def _method_settings(cfg: ExperimentConfig, method: str) -> dict:
    m = method_config(cfg, method)
    if method == "local":
        return {"lr": m.train.lr, "a_hi": m.rule.a_hi, "a_lo": m.rule.a_lo, "mode": m.rule.mode,
                "weight_decay": m.rule.weight_decay, "lr_schedule": m.train.lr_schedule}
    params = m.peers if PANEL[method].learner not in ("backprop", "backprop-mse") else m.backprop
    return dataclasses.asdict(params) | {"early_stopped": PANEL[method].early_stop}
