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
``OUT/units/`` as it completes; ``resume`` reuses the units made with the same settings and code
version, so an interrupted run loses at most the unit in progress.
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
from .checkpoint import atomic_write_text, save_checkpoint
from .config import ExperimentConfig, load_config
from .data import Dataset, load_dataset
from .errors import ConfigError, LocalSTDPError
from .methods import PANEL, method_config, resolve_methods
from .registry import DEFAULT_METHODS, SUITES, TASKS
from .robustness import (
    AttackSettings,
)
from .train import MODEL
from .units import (  # noqa: F401
    attack_indices,
    from_panel,
    frontier_points,
    frontier_row_from_panel,
    frontier_unit,
    pack,
    panel_unit,
    point_name,
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


def run_unit(kind: str, task: str, cfg: ExperimentConfig, ds: Dataset, arg, settings: GridSettings,
             say: Callable[[str], None] = lambda s: None) -> dict:
    if kind == "panel":
        return panel_unit(task, cfg, ds, arg, settings, say)
    point, seed = arg
    return frontier_unit(task, cfg, ds, point, seed, settings, say)


_WORKER: dict = {}


def _worker_init(datasets: dict, queue) -> None:
    """A unit worker: one thread (the workers share the cores), ART quiet, Ctrl-C left to the parent."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    logging.getLogger("art").setLevel(logging.WARNING)
    _WORKER.update(data=dict(datasets), queue=queue)


def _worker_run(kind: str, task: str, cfg: ExperimentConfig, arg, settings: GridSettings) -> dict:
    data = _WORKER["data"]
    if task not in data:
        data[task] = load_dataset(cfg.data)
    return run_unit(kind, task, cfg, data[task], arg, settings, _WORKER["queue"].put)


def run_grid(tasks: Sequence[str] | Mapping[str, ExperimentConfig], settings: GridSettings = GridSettings(),
             progress: bool = False, datasets: Mapping[str, Dataset] | None = None, out: str | Path | None = None,
             resume: bool = False, jobs: int = 1) -> dict:
    """Run every unit; returns the results dict written to results.json (see localstdp.analysis).

    ``tasks`` is a list of registered task names, or a mapping name -> config (tests use tiny ones).
    With ``out``, each finished unit is written to ``out/units/<task>/<unit>.json``; ``resume``
    loads those made with the same fingerprint and refuses others. ``jobs`` > 1 runs units in that
    many worker processes of one thread each (numbers equal a one-thread run, not always bit for bit
    a multi-thread one).
    """
    from .analysis import summarise

    if jobs < 1:
        raise ConfigError(f"jobs = {jobs!r}: expected an integer >= 1")
    cfgs = dict(tasks) if isinstance(tasks, Mapping) else {t: task_config(t) for t in tasks}
    plan = [u for t, c in cfgs.items() for u in _units(t, c, settings)]
    unit_dir = Path(out) / UNITS if out is not None else None
    if unit_dir is not None and unit_dir.exists() and not resume:
        for old in unit_dir.glob("*/*"):  # a fresh run: units of an earlier run must not mix with this one
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    prints = {t: fingerprint(t, c, settings) for t, c in cfgs.items()}
    done: dict[str, dict] = {}
    if resume and unit_dir is not None:
        for name, t, _, _ in plan:
            path = unit_dir / f"{name}.json"
            if path.exists():
                try:
                    rec = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError):
                    continue  # a damaged unit is run again
                if rec.get("fingerprint") != prints[t]:
                    raise LocalSTDPError(f"{path} was made by other settings, config or code version; resume with "
                                         "the same command or reproduce into a new --out")
                done[name] = rec
    # the bar counts work, not units: a panel seed attacks every method at every eps, a frontier
    # point one model at the frontier eps, so its ETA is honest across the two kinds
    cost = {name: (len(settings.methods) * len(settings.attacks.eps) if kind == "panel" else len(settings.frontier_eps))
            for name, _, kind, _ in plan}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(cost.values()), initial=sum(cost[n] for n in done), desc=f"reproduce {len(done)}/"
                   f"{len(plan)} units", unit="attack", dynamic_ncols=True,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
    say = (lambda s: bar.set_postfix_str(s, refresh=True)) if bar is not None else (lambda s: log.info("%s", s))
    t0 = time.perf_counter()
    results: dict[str, dict] = dict(done)

    def finish(name: str, task: str, rec: dict) -> None:
        models = rec.pop("models", {})
        rec = rec | {"fingerprint": prints[task], "unit": name}
        if unit_dir is not None:
            (unit_dir / task).mkdir(parents=True, exist_ok=True)
            for method, (tensors, meta) in models.items():  # each model before the record that lists it
                (unit_dir / name / method).mkdir(parents=True, exist_ok=True)
                save_checkpoint(unit_dir / name / method / MODEL, tensors, meta)
            atomic_write_text(unit_dir / f"{name}.json", json.dumps(rec) + "\n")
        results[name] = rec
        if bar is not None:
            bar.set_description_str(f"reproduce {len(results)}/{len(plan)} units", refresh=False)
            bar.update(cost[name])

    todo = [u for u in plan if u[0] not in done]
    try:
        if jobs == 1 or len(todo) <= 1:
            data: dict[str, Dataset] = dict(datasets or {})
            for name, t, kind, arg in todo:
                if t not in data:
                    say(f"{t}: load data")
                    data[t] = load_dataset(cfgs[t].data)
                finish(name, t, run_unit(kind, t, cfgs[t], data[t], arg, settings, say))
        else:
            _run_parallel(todo, cfgs, settings, datasets or {}, jobs, say, finish)
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
        "version": code_version(), "jobs": jobs, "units_resumed": len(done), "wall_seconds": time.perf_counter() - t0,
    }
    return summarise({"settings": settings_out, "rows": rows, "matched": matched, "frontier_rows": frontier})


def _run_parallel(todo, cfgs, settings, datasets, jobs, say, finish) -> None:
    """Units in ``jobs`` worker processes; each finished unit is handed to ``finish`` at once, and
    the workers' status lines reach ``say``. Ctrl-C stops the workers (finished units stay written)."""
    import multiprocessing
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        q = manager.Queue()
        ex = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init, initargs=(dict(datasets), q))
        try:
            futs = {ex.submit(_worker_run, kind, t, cfgs[t], arg, settings): (name, t) for name, t, kind, arg in todo}
            pending = set(futs)
            while pending:
                ready, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                try:
                    while True:
                        say(q.get_nowait())
                except queue_mod.Empty:
                    pass
                for f in ready:
                    name, t = futs[f]
                    finish(name, t, f.result())
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
