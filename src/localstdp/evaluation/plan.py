"""The plan of a ``reproduce`` grid: the registered tasks, the units of each task (panel seeds and
frontier points), the steps a worker runs (one panel method of one seed, or one frontier unit) with
their cost, and the fingerprint that lets ``resume`` reuse finished work. Run by grid.py.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .. import __version__
from ..config import ExperimentConfig, load_config
from ..data import Dataset
from ..errors import ArgumentTypeError, ConfigError
from ..registry import SUITES, TASKS
from .methods import PANEL, method_config
from .points import from_panel, frontier_points, point_config, point_name
from .settings import GridSettings
from .units import frontier_row_from_panel


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


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The package version and a hash of its source files: any code change makes new units."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]  # the whole package (src/localstdp), not evaluation/
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


# the distributions whose versions results.json records (settings.versions): the package and the
# libraries its numbers come from (training, attacks, arrays, splits and metrics)
VERSIONED = ("localstdp", "torch", "adversarial-robustness-toolbox", "numpy", "scikit-learn")


def package_versions() -> dict[str, str | None]:
    """The installed version of each of :data:`VERSIONED` (None where one is not installed) and Python's."""
    import platform
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out | {"python": platform.python_version()}


def fingerprint(task: str, cfg: ExperimentConfig, settings: GridSettings) -> str:
    """What a unit's numbers depend on: the task's config, the settings and the code version."""
    blob = json.dumps({"task": task, "config": cfg.to_dict(), "settings": dataclasses.asdict(settings),
                       "version": code_version()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _derived(cfg: ExperimentConfig, settings: GridSettings, point: dict, seed: int) -> str | None:
    """The panel method whose row gives this frontier point and seed (the same model), or None."""
    m = from_panel(point, cfg)
    return m if m in settings.methods and seed < settings.seeds else None


def check_grid_args(tasks, settings, progress=False, datasets=None, out=None, resume=False, jobs=1) -> None:
    """``run_grid``'s arguments: ArgumentError / ArgumentTypeError naming the argument (localstdp.checks).

    tasks: a non-empty list of registered task names (not one name as a str) or a mapping name ->
    ExperimentConfig; settings: a GridSettings; progress, resume: bools; datasets: None or a mapping
    name -> Dataset; out: None or a path; jobs: an integer >= 1."""
    from .. import checks

    if isinstance(tasks, str):
        checks.fail("tasks", f"a list of task names (one task: [{tasks!r}])", repr(tasks), ArgumentTypeError)
    if isinstance(tasks, Mapping):
        for name, cfg in tasks.items():
            checks.instance("tasks", name, str, "task names (str) as the mapping's keys")
            checks.instance(f"tasks[{name!r}]", cfg, ExperimentConfig, "an ExperimentConfig")
    elif isinstance(tasks, (list, tuple)):
        for i, t in enumerate(tasks):
            checks.instance(f"tasks[{i}]", t, str, "a task name (str)")
    else:
        checks.fail("tasks", "a list of task names or a dict name -> ExperimentConfig", checks.got(tasks),
                    ArgumentTypeError)
    if not tasks:
        checks.fail("tasks", "at least one task", repr(tasks))
    checks.instance("settings", settings, GridSettings, "a GridSettings")
    checks.flag("progress", progress)
    checks.flag("resume", resume)
    if datasets is not None:
        checks.mapping("datasets", datasets, "None or a dict task -> Dataset")
        for name, ds in datasets.items():
            checks.instance(f"datasets[{name!r}]", ds, Dataset, "a localstdp.data.Dataset")
    if out is not None:
        checks.path("out", out)
    checks.integer("jobs", jobs, lo=1)


def _units(task: str, cfg: ExperimentConfig, settings: GridSettings) -> list[tuple[str, str, str, object]]:
    """(unit name, task, kind, argument): the panel's seeds, then every frontier point x seed that
    is not a panel model already (those rows are derived from the panel's, see _frontier_rows).
    Refuses, naming the argument, a config that is not an ExperimentConfig or settings that are not
    a GridSettings (run_grid's first step)."""
    from .. import checks

    checks.instance(f"tasks[{task!r}]", cfg, ExperimentConfig, "an ExperimentConfig")
    checks.instance("settings", settings, GridSettings, "a GridSettings")
    units = [(f"{task}/panel-seed{s}", task, "panel", s) for s in range(settings.seeds)]
    for p in frontier_points(cfg, settings.methods) if settings.frontier_seeds else []:
        units += [(f"{task}/frontier-{point_name(p)}-seed{s}", task, "frontier", (p, s))
                  for s in range(settings.frontier_seeds) if _derived(cfg, settings, p, s) is None]
    return units


def _frontier_rows(cfgs: Mapping[str, ExperimentConfig], settings: GridSettings, rows: list[dict],
                   results: dict) -> list[dict]:
    """Every frontier row in point order: from its own unit, or derived from the panel's row."""
    out = []
    for t, c in cfgs.items():
        for p in frontier_points(c, settings.methods) if settings.frontier_seeds else []:
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
# splits. The native suite costs, per attacked example and eps, ~200 passes on a panel model
# (every attack on every example) and ~120 where only the worst case is wanted (frontier points:
# survivors only). Measured by `localstdp bench --attacks` against the same model's training time
# (mnist-3v5's 784-128-64-2 MLP, 300 examples: 170 and 98; mnist-10-cnn: 432 and 341).
# Forward-Forward scores every label with its own pass, and trains on a positive and a negative pass.
TRAIN_PASSES = 3
ATTACK_PASSES = 200
WORST_ONLY_PASSES = 120


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

    from ..model import build_network

    net = build_network(cfg.model, ds.n_features, ds.n_classes, 0)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(ds.x_test[:1].float())
    return float(max(counter.get_total_flops(), 1))


def step_cost(cfg: ExperimentConfig, ds: Dataset, settings: GridSettings, method: str, n_eps: int,
              flops: float, epochs: int | None = None, worst_only: bool = False) -> float:
    """The cost model above for one model: train ``method`` and attack it at ``n_eps`` eps."""
    mcfg = method_config(cfg, method).with_overrides(epochs=epochs if epochs is not None else settings.epochs)
    ff = PANEL[method].learner == "ff"
    k = ds.n_classes if ff else 1
    n_train, n_eval = len(ds.y_train), len(ds.y_train) + len(ds.y_val) + len(ds.y_test)
    n_attack = min(settings.n_attack or len(ds.y_test), len(ds.y_test))
    r = mcfg.robust  # adversarial training: each PGD step is about one more training pass (TRADES: one more)
    adv = 1 + (r.adv_steps + (r.trades_beta > 0)) * (r.adv_eps > 0)
    train_passes = mcfg.train.epochs * (n_train * TRAIN_PASSES * (2 if ff else 1) * adv + n_eval * k)
    passes = WORST_ONLY_PASSES if worst_only else ATTACK_PASSES
    n_val = min(settings.val_attack, len(ds.y_val))  # the validation attack: worst case only, frontier eps
    return flops * (train_passes + n_attack * n_eps * passes * k + n_val * len(settings.frontier_eps) * WORST_ONLY_PASSES * k)


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
            cfg = point_config(cfgs[t], point)
            steps.append(_Step(name, name, t, "frontier", arg, None,
                               step_cost(cfg, data[t], settings, point["method"], len(settings.frontier_eps), flops,
                                         epochs, worst_only=True)))
    return steps


def _method_settings(cfg: ExperimentConfig, method: str) -> dict:
    m = method_config(cfg, method)
    robust = {"robust": dataclasses.asdict(m.robust)} if m.robust.active else {}  # rules/robust.py's training
    if PANEL[method].learner == "local":  # local, local-timing, local-at
        return {"lr": m.train.lr, "a_hi": m.rule.a_hi, "a_lo": m.rule.a_lo, "mode": m.rule.mode,
                "weight_decay": m.rule.weight_decay, "lr_schedule": m.train.lr_schedule} | robust
    if method in ("linear", "random-features"):  # rules/shallow.py: no optimiser settings, one L2 strength
        return {"l2": m.backprop.weight_decay, "solver": "L-BFGS, full batch", "early_stopped": False} | robust
    params = m.peers if PANEL[method].learner not in ("backprop", "backprop-mse") else m.backprop
    return dataclasses.asdict(params) | {"early_stopped": PANEL[method].early_stop} | robust
