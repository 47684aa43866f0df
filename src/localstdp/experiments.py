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
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from . import __version__
from .checkpoint import atomic_write_text
from .config import ExperimentConfig, load_config
from .data import Dataset, load_dataset
from .errors import ConfigError, LocalSTDPError
from .methods import PANEL, closest_epoch, method_config, resolve_methods, selected_epoch
from .registry import SUITES, TASKS
from .robustness import (
    AttackSettings,
    SuiteResult,
    add_transfer,
    add_worst,
    attack_suite,
    correct,
    eps_key,
    masking_checks,
)
from .train import train

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
    methods: tuple[str, ...] = tuple(PANEL)
    frontier_seeds: int = 3
    frontier_eps: tuple[float, ...] = FRONTIER_EPS
    epochs: int | None = None
    n_attack: int | None = 500
    match_tol: float = 0.01
    certify: bool = True
    n_boot: int = 2000
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


def attack_indices(n_test: int, n_attack: int | None, seed: int = 20201124) -> np.ndarray:
    """The attacked test examples: all of them, or a fixed seeded subset of ``n_attack``."""
    if n_attack is None or n_attack >= n_test:
        return np.arange(n_test)
    return np.sort(np.random.default_rng(seed).choice(n_test, size=n_attack, replace=False))


def pack(bits: np.ndarray) -> str:
    """A bool vector as a hex string (results.json keeps per-example correctness compactly)."""
    return np.packbits(np.asarray(bits, dtype=bool)).tobytes().hex()


def unpack(hexstr: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(hexstr), dtype=np.uint8))[:n].astype(bool)


# ---------------------------------------------------------------------------------------------
# one model


@dataclass
class Trained:
    model: object
    metrics: dict
    epoch: int  # the reported epoch (1-based)
    states: list  # per-epoch weights of the full run


def train_method(cfg: ExperimentConfig, method: str, ds: Dataset, seed: int, epochs: int | None = None) -> Trained:
    """Train one panel method and load the weights of its reported epoch (the last, or the best
    validation epoch for early stopping)."""
    spec = PANEL[method]
    mcfg = method_config(cfg, method).with_overrides(seed=seed, epochs=epochs)
    m = train(mcfg, spec.learner, None, dataset=ds, keep_epochs=True)
    e = selected_epoch(m["history"], spec.early_stop)
    model = m.pop("model")
    states = m.pop("epoch_states")
    if e != len(m["history"]):
        model.load_state_dict(states[e - 1])
    return Trained(model, m, e, states)


def _attack(model, ds: Dataset, idx: np.ndarray, settings: GridSettings, eps: Sequence[float], seed: int) -> SuiteResult:
    """The attack suite at ``eps`` on the attacked examples, plus the certified accuracy."""
    x, y = ds.x_test[idx].numpy(), ds.y_test[idx].numpy()
    res = attack_suite(model, x, y, ds.input_shape, ds.n_classes,
                       dataclasses.replace(settings.attacks, eps=tuple(eps)), seed=seed)
    if settings.certify:
        from .bounds import certified_correct

        res.correct["certified"] = {eps_key(e): certified_correct(model, x, y, e) for e in eps}
    return res


def _per_example(res: SuiteResult) -> dict:
    return {a: {k: pack(v) for k, v in per.items()} for a, per in res.correct.items()}


def _history(metrics: dict) -> list[dict]:
    return [{k: h.get(k) for k in ("epoch", "loss", "train_accuracy", "val_accuracy", "test_accuracy")}
            for h in metrics["history"]]


def _row(task: str, method: str, seed: int, t: Trained, ds: Dataset, res: SuiteResult, n_attacked: int) -> dict:
    h = t.metrics["history"][t.epoch - 1]
    clean = correct(t.model, ds.x_test.numpy(), ds.y_test.numpy())
    return {
        "task": task, "method": method, "seed": seed,
        "epoch": t.epoch, "epochs": int(t.metrics["epochs"]),
        "clean_accuracy": float(clean.mean()), "val_accuracy": h["val_accuracy"],
        "train_accuracy": float(h["train_accuracy"]), "n_test": len(clean),
        "attacked_clean_accuracy": float(res.clean.mean()), "n_attacked": n_attacked,
        "robust_accuracy": res.accuracy(),
        "per_example": {"clean": pack(clean)} | _per_example(res),
        "zero_gradient_fraction": res.zero_gradient_fraction,
        "history": _history(t.metrics), "wall_seconds": float(t.metrics["wall_seconds"]),
    }


# ---------------------------------------------------------------------------------------------
# units: one seed of a task's panel; one frontier point and seed


def panel_unit(task: str, cfg: ExperimentConfig, ds: Dataset, seed: int, settings: GridSettings,
               say: Callable[[str], None] = lambda s: None) -> dict:
    """Every panel method of one seed: rows (with transfer, worst case, checks) and matched records."""
    idx = attack_indices(len(ds.y_test), settings.n_attack)
    y = ds.y_test[idx].numpy()
    trained, suites = {}, {}
    for method in settings.methods:
        say(f"{task} seed {seed}: train {method}")
        trained[method] = train_method(cfg, method, ds, seed, settings.epochs)
        say(f"{task} seed {seed}: attack {method}")
        suites[method] = _attack(trained[method].model, ds, idx, settings, settings.attacks.eps, seed)
    for target in settings.methods:  # transfer: survive the PGD examples of every other method's model
        others = [m for m in settings.methods if m != target]
        parts = []
        for source in others:
            tmp = SuiteResult(clean=suites[target].clean)
            add_transfer(trained[target].model, tmp, suites[source], y)
            parts.append(tmp.correct["transfer"])
        if parts:
            suites[target].correct["transfer"] = {k: np.logical_and.reduce([p[k] for p in parts]) for k in parts[0]}
    rows = []
    for method in settings.methods:
        add_worst(suites[method])
        checks = masking_checks(suites[method], ds.n_classes, settings.attacks)
        row = _row(task, method, seed, trained[method], ds, suites[method], len(idx))
        rows.append(row | {"checks": checks["checks"], "check_values": checks["values"]})
    matched = [m for b in settings.methods if b != "local"
               if (m := _matched(task, seed, "local", b, trained, suites, ds, idx, settings, say)) is not None]
    return {"rows": rows, "matched": matched}


def _own_attacks(res: SuiteResult, keys: Sequence[str]) -> SuiteResult:
    """``res`` restricted to its own attacks (no transfer) at ``keys``, with its worst case."""
    own = {a: {k: v[k] for k in keys} for a, v in res.correct.items() if a not in ("transfer", "worst")}
    out = SuiteResult(clean=res.clean, correct=own)
    add_worst(out)
    return out


def _matched(task, seed, a, b, trained, suites, ds, idx, settings, say) -> dict | None:
    """Robustness at matched clean accuracy: the method with the higher VALIDATION accuracy, taken
    at the epoch of its full run whose validation accuracy is closest to the other's."""
    va = {m: trained[m].metrics["history"][trained[m].epoch - 1]["val_accuracy"] for m in (a, b)}
    if va[a] is None or va[b] is None or abs(va[a] - va[b]) <= settings.match_tol:
        return None
    hi, lo = (a, b) if va[a] > va[b] else (b, a)
    t = trained[hi]
    epoch = closest_epoch(t.metrics["history"][: t.epoch], va[lo])
    say(f"{task} seed {seed}: matched {hi} at epoch {epoch}")
    keys = [eps_key(e) for e in settings.frontier_eps]
    t.model.load_state_dict(t.states[epoch - 1])
    s_hi = _attack(t.model, ds, idx, settings, settings.frontier_eps, seed)
    add_worst(s_hi)
    clean_hi = correct(t.model, ds.x_test.numpy(), ds.y_test.numpy())
    t.model.load_state_dict(t.states[t.epoch - 1])
    s_lo = _own_attacks(suites[lo], keys)
    clean_lo = correct(trained[lo].model, ds.x_test.numpy(), ds.y_test.numpy())
    return {"task": task, "seed": seed, "pair": [a, b], "stopped_method": hi, "stopped_epoch": epoch,
            "reference_method": lo, "val_accuracy": {hi: t.metrics["history"][epoch - 1]["val_accuracy"], lo: va[lo]},
            "clean_accuracy": {hi: float(clean_hi.mean()), lo: float(clean_lo.mean())},
            "robust_accuracy": {hi: s_hi.accuracy(), lo: s_lo.accuracy()},
            "per_example": {hi: {"worst": {k: pack(s_hi.correct["worst"][k]) for k in keys}},
                            lo: {"worst": {k: pack(s_lo.correct["worst"][k]) for k in keys}}}}


def frontier_points(cfg: ExperimentConfig) -> list[dict]:
    """The frontier's points: backprop's weight decay, and the local rule at its own settings and
    along each of its knobs. ``overrides`` are ``--set`` strings applied to the method's config."""
    f = cfg.frontier
    pts = [{"method": "backprop", "knob": "backprop.weight_decay", "value": v,
            "overrides": [f"backprop.weight_decay={v!r}"]} for v in f.backprop_weight_decay]
    pts.append({"method": "local", "knob": "base", "value": None, "overrides": []})
    pts += [{"method": "local", "knob": "train.lr", "value": v, "overrides": [f"train.lr={v!r}"]} for v in f.local_lr]
    pts += [{"method": "local", "knob": "train.epochs", "value": v, "overrides": [f"train.epochs={v!r}"]}
            for v in f.local_epochs]
    pts += [{"method": "local", "knob": "rule.weight_decay", "value": v, "overrides": [f"rule.weight_decay={v!r}"]}
            for v in f.local_weight_decay]
    return pts


KNOB_LABELS = {"backprop.weight_decay": "weight_decay", "train.lr": "eta", "train.epochs": "epochs",
               "rule.weight_decay": "weight_decay"}


def point_name(p: dict) -> str:
    """e.g. "backprop:weight_decay=0.001", "local" (its own settings), "local:eta=0.2"."""
    return p["method"] if p["knob"] == "base" else f"{p['method']}:{KNOB_LABELS[p['knob']]}={p['value']}"


def frontier_unit(task: str, cfg: ExperimentConfig, ds: Dataset, point: dict, seed: int, settings: GridSettings,
                  say: Callable[[str], None] = lambda s: None) -> dict:
    """One frontier point and seed: clean accuracy and robust accuracy at frontier_eps (own attacks)."""
    idx = attack_indices(len(ds.y_test), settings.n_attack)
    base = method_config(cfg, point["method"])
    pcfg = base.with_sets(point["overrides"])
    epochs = None if point["knob"] == "train.epochs" else settings.epochs
    say(f"{task} frontier {point_name(point)} seed {seed}: train")
    t = train_method(pcfg, "local" if point["method"] == "local" else "backprop", ds, seed, epochs)
    say(f"{task} frontier {point_name(point)} seed {seed}: attack")
    res = _attack(t.model, ds, idx, settings, settings.frontier_eps, seed)
    add_worst(res)
    row = _row(task, point["method"], seed, t, ds, res, len(idx))
    row.pop("history")
    return {"rows": [row | {"point": point_name(point), "knob": point["knob"], "value": point["value"]}]}


# ---------------------------------------------------------------------------------------------
# the grid, unit by unit, resumable


def fingerprint(task: str, cfg: ExperimentConfig, settings: GridSettings) -> str:
    """What a unit's numbers depend on: the task's config, the settings and the code version."""
    blob = json.dumps({"task": task, "config": cfg.to_dict(), "settings": dataclasses.asdict(settings),
                       "version": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _units(task: str, cfg: ExperimentConfig, settings: GridSettings) -> list[tuple[str, Callable]]:
    units = [(f"{task}/panel-seed{s}", lambda ds, say, s=s: panel_unit(task, cfg, ds, s, settings, say))
             for s in range(settings.seeds)]
    for p in frontier_points(cfg) if settings.frontier_seeds else []:
        for s in range(settings.frontier_seeds):
            units.append((f"{task}/frontier-{point_name(p)}-seed{s}",
                          lambda ds, say, p=p, s=s: frontier_unit(task, cfg, ds, p, s, settings, say)))
    return units


def run_grid(tasks: Sequence[str] | Mapping[str, ExperimentConfig], settings: GridSettings = GridSettings(),
             progress: bool = False, datasets: Mapping[str, Dataset] | None = None, out: str | Path | None = None,
             resume: bool = False) -> dict:
    """Run every unit; returns the results dict written to results.json (see localstdp.analysis).

    ``tasks`` is a list of registered task names, or a mapping name -> config (tests use tiny ones).
    With ``out``, each finished unit is written to ``out/units/<task>/<unit>.json``; ``resume``
    loads those made with the same fingerprint and refuses others.
    """
    from .analysis import summarise

    cfgs = dict(tasks) if isinstance(tasks, Mapping) else {t: task_config(t) for t in tasks}
    plan = [(t, name, fn) for t, c in cfgs.items() for name, fn in _units(t, c, settings)]
    unit_dir = Path(out) / UNITS if out is not None else None
    if unit_dir is not None and unit_dir.exists() and not resume:
        for old in unit_dir.glob("*/*.json"):
            old.unlink()  # a fresh run: units of an earlier run must not mix with this one
    prints = {t: fingerprint(t, c, settings) for t, c in cfgs.items()}
    done: dict[str, dict] = {}
    if resume and unit_dir is not None:
        for t, name, _ in plan:
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
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan), initial=len(done), desc="reproduce", unit="unit", dynamic_ncols=True)
    say = (lambda s: bar.set_postfix_str(s, refresh=True)) if bar is not None else (lambda s: log.info("%s", s))
    t0 = time.perf_counter()
    results: dict[str, dict] = {}
    data: dict[str, Dataset] = dict(datasets or {})
    try:
        for t, name, fn in plan:
            if name in done:
                results[name] = done[name]
                continue
            if t not in data:
                say(f"{t}: load data")
                data[t] = load_dataset(cfgs[t].data)
            rec = fn(data[t], say) | {"fingerprint": prints[t], "unit": name}
            if unit_dir is not None:
                (unit_dir / t).mkdir(parents=True, exist_ok=True)
                atomic_write_text(unit_dir / f"{name}.json", json.dumps(rec) + "\n")
            results[name] = rec
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    rows = [r for _, n, _ in plan if "/panel-" in n for r in results[n]["rows"]]
    matched = [m for _, n, _ in plan if "/panel-" in n for m in results[n]["matched"]]
    frontier = [r for _, n, _ in plan if "/frontier-" in n for r in results[n]["rows"]]
    settings_out = {
        "seeds": list(range(settings.seeds)), "frontier_seeds": list(range(settings.frontier_seeds)),
        "methods": list(settings.methods), "frontier_eps": list(settings.frontier_eps),
        "tasks": {t: {"config": TASKS.get(t), "epochs": c.with_overrides(epochs=settings.epochs).train.epochs,
                      "hidden": list(c.model.hidden), "equivalence_margin": c.evaluation.equivalence_margin,
                      "methods": {m: _method_settings(c, m) for m in settings.methods},
                      "frontier": dataclasses.asdict(c.frontier)} for t, c in cfgs.items()},
        "n_attack_cap": settings.n_attack, "match_tol": settings.match_tol, "headline_eps": HEADLINE_EPS,
        "certify": settings.certify, "n_boot": settings.n_boot, "attacks": dataclasses.asdict(settings.attacks),
        "version": __version__, "units_resumed": len(done), "wall_seconds": time.perf_counter() - t0,
    }
    return summarise({"settings": settings_out, "rows": rows, "matched": matched, "frontier_rows": frontier})


def _method_settings(cfg: ExperimentConfig, method: str) -> dict:
    m = method_config(cfg, method)
    if method == "local":
        return {"lr": m.train.lr, "a_hi": m.rule.a_hi, "a_lo": m.rule.a_lo, "mode": m.rule.mode,
                "weight_decay": m.rule.weight_decay, "lr_schedule": m.train.lr_schedule}
    return dataclasses.asdict(m.backprop) | {"early_stopped": PANEL[method].early_stop}
