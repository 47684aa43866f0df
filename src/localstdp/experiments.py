"""Grids of tasks x methods x seeds: train both methods, attack them, and compute the statistics.

The protocol is ``docs/evaluation.md``. For every task and seed s, both methods train from the
task's config with ``train.seed = s`` (same architecture, initialisation, split and epoch budget),
then :func:`localstdp.robustness.attack_suite` attacks each model on the same test examples, the
PGD examples of each model are transferred to the other, and the per-example worst case is taken.
When the two clean accuracies of a seed differ by more than ``match_tol``, the more accurate method
is retrained with an early-stopping budget (the epoch whose test accuracy in its own history is
closest to the other method's final one) and attacked again: robustness at matched clean accuracy.

Statistics per cell: mean, sample std and a 95% t confidence interval over seeds; local vs backprop
is compared with a paired t-test over seeds (scipy.stats.ttest_rel).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from .config import ExperimentConfig, load_config
from .data import Dataset, load_dataset
from .errors import ConfigError
from .robustness import AttackSettings, SuiteResult, add_transfer, add_worst, attack_suite, eps_key, masking_checks
from .train import train

log = logging.getLogger(__name__)

# Task registry: name -> config file shipped in localstdp/configs. A new task is one line here.
TASKS: dict[str, str] = {
    "iris-1v2": "iris.toml",
    "mnist-0v1": "mnist-0v1.toml",
    "mnist-3v5": "mnist-3v5.toml",
    "mnist-4v9": "mnist-4v9.toml",
    "mnist-10": "mnist-10.toml",  # ten classes (issue 7): the 5000-image subset
    "digits-10": "digits.toml",
    "fashion-mnist": "fashion-mnist.toml",  # the full 70000 images: needs dataset-fashion-mnist (or data.url)
}
# Named groups of tasks for ``localstdp reproduce --suite``.
SUITES: dict[str, tuple[str, ...]] = {
    "paper": ("iris-1v2", "mnist-0v1", "mnist-3v5", "mnist-4v9"),
    "extended": ("iris-1v2", "mnist-0v1", "mnist-3v5", "mnist-4v9", "mnist-10", "digits-10", "fashion-mnist"),
}
METHODS = ("local", "backprop")
HEADLINE_EPS = 0.1  # the eps of the paired tests and of the verdicts
EQUIVALENCE_MARGIN = 0.02  # |local - backprop| clean accuracy within this (whole 95% CI) = "comparable"
ALPHA = 0.05


@dataclass(frozen=True)
class GridSettings:
    """seeds >= 1 (train.seed = 0..seeds-1); epochs overrides train.epochs (None: the config's);
    n_attack caps the attacked test examples (a fixed seeded subset, the same for every seed and
    method; None: all); match_tol: clean-accuracy gap above which a matched comparison is run."""

    seeds: int = 5
    epochs: int | None = None
    n_attack: int | None = 500
    match_tol: float = 0.01
    attacks: AttackSettings = field(default_factory=AttackSettings)

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ConfigError(f"seeds = {self.seeds!r}: expected an integer >= 1")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs = {self.epochs!r}: expected an integer >= 1")
        if self.n_attack is not None and self.n_attack < 1:
            raise ConfigError(f"n_attack = {self.n_attack!r}: expected an integer >= 1")
        if not 0 <= self.match_tol < 1:
            raise ConfigError(f"match_tol = {self.match_tol!r}: expected a value in [0, 1)")


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


# ---------------------------------------------------------------------------------------------
# statistics


def describe(values: Sequence[float]) -> dict:
    """n, mean, sample std and the 95% t confidence interval of the mean (None for n < 2)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    n = len(v)
    mean = float(v.mean()) if n else float("nan")
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    if n > 1:
        half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))
        ci = [mean - half, mean + half]
    else:
        ci = None
    return {"n": n, "mean": mean, "std": std, "ci95": ci}


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """Paired t-test of a - b over seeds: mean difference, its 95% CI, t and the two-sided p-value.

    p is None when it is undefined (fewer than 2 pairs, or every difference identical: a t-test
    needs variance; the CI is then the single value).
    """
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    desc = describe(d)
    out = {"n": desc["n"], "diff_mean": desc["mean"], "diff_std": desc["std"], "diff_ci95": desc["ci95"],
           "t": None, "p_value": None}
    if len(d) > 1 and np.ptp(d) > 0:
        res = stats.ttest_rel(a, b)
        out["t"], out["p_value"] = float(res.statistic), float(res.pvalue)
    return out


# ---------------------------------------------------------------------------------------------
# one task


def _early_stop_epoch(history: list[dict], target: float) -> int:
    """The epoch (1-based) whose test accuracy is closest to ``target``; ties: the earliest."""
    gaps = [abs(h["test_accuracy"] - target) for h in history]
    return int(np.argmin(gaps)) + 1


def _row(task: str, method: str, seed: int, metrics: dict, res: SuiteResult, checks: dict, n_attacked: int) -> dict:
    return {
        "task": task,
        "method": method,
        "seed": seed,
        "clean_accuracy": float(metrics["test_accuracy"]),
        "train_accuracy": float(metrics["train_accuracy"]),
        "attacked_clean_accuracy": float(res.clean.mean()),
        "n_attacked": n_attacked,
        "robust_accuracy": res.accuracy(),
        "zero_gradient_fraction": res.zero_gradient_fraction,
        "checks": checks["checks"],
        "check_values": checks["values"],
        "epochs": int(metrics["epochs"]),
        "history": [{k: h[k] for k in ("epoch", "loss", "train_accuracy", "test_accuracy")}
                    for h in metrics["history"]],
        "wall_seconds": float(metrics["wall_seconds"]),
    }


def run_task_seed(task: str, cfg: ExperimentConfig, ds: Dataset, seed: int, settings: GridSettings,
                  status: Callable[[str], None] | None = None) -> tuple[list[dict], dict | None]:
    """Train and attack both methods for one seed: (rows, matched-comparison record or None)."""
    say = status or (lambda s: None)
    cfg = cfg.with_overrides(seed=seed, epochs=settings.epochs)
    idx = attack_indices(len(ds.y_test), settings.n_attack)
    x, y = ds.x_test[idx].numpy(), ds.y_test[idx].numpy()
    metrics, suites = {}, {}
    for method in METHODS:
        say(f"{task} seed {seed}: train {method}")
        metrics[method] = train(cfg, method, None, dataset=ds)
        say(f"{task} seed {seed}: attack {method}")
        suites[method] = attack_suite(metrics[method]["model"], x, y, ds.input_shape, ds.n_classes,
                                      settings.attacks, seed=seed)
    for target, source in (("local", "backprop"), ("backprop", "local")):
        add_transfer(metrics[target]["model"], suites[target], suites[source], y)
    rows = []
    for method in METHODS:
        add_worst(suites[method])
        checks = masking_checks(suites[method], ds.n_classes, settings.attacks)
        rows.append(_row(task, method, seed, metrics[method], suites[method], checks, len(idx)))

    acc = {m: metrics[m]["test_accuracy"] for m in METHODS}
    if abs(acc["local"] - acc["backprop"]) <= settings.match_tol:
        return rows, None
    hi, lo = ("local", "backprop") if acc["local"] > acc["backprop"] else ("backprop", "local")
    epoch = _early_stop_epoch(metrics[hi]["history"], acc[lo])
    say(f"{task} seed {seed}: matched {hi} ({epoch} epochs)")
    m_stop = train(cfg.with_overrides(epochs=epoch), hi, None, dataset=ds)
    s_stop = attack_suite(m_stop["model"], x, y, ds.input_shape, ds.n_classes, settings.attacks, seed=seed)
    add_worst(s_stop)  # no transfer partner: worst over its own attacks
    own = {a: v for a, v in suites[lo].correct.items() if a not in ("transfer", "worst")}
    lo_suite = SuiteResult(clean=suites[lo].clean, correct=dict(own))
    add_worst(lo_suite)  # the same attack set for both sides of the matched comparison
    matched = {
        "task": task,
        "seed": seed,
        "stopped_method": hi,
        "stopped_epochs": epoch,
        "reference_method": lo,
        "clean_accuracy": {hi: float(m_stop["test_accuracy"]), lo: float(acc[lo])},
        "robust_accuracy": {hi: s_stop.accuracy(), lo: lo_suite.accuracy()},
    }
    return rows, matched


# ---------------------------------------------------------------------------------------------
# the grid


def _metric(row_or_acc: dict, attack: str, eps: float) -> float:
    return row_or_acc[attack][eps_key(eps)]


def summarise(rows: list[dict], matched: list[dict], eps: Sequence[float]) -> dict:
    """Cells (mean/std/CI), paired comparisons, matched comparisons, checks and verdicts."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    summary, comparisons, matched_cmp, checks, claims = [], [], [], {}, {}
    for task in tasks:
        by = {m: sorted((r for r in rows if r["task"] == task and r["method"] == m), key=lambda r: r["seed"])
              for m in METHODS}
        checks[task] = {}
        for m in METHODS:
            summary.append({"task": task, "method": m, "metric": "clean_accuracy", "attack": None, "eps": None,
                            **describe([r["clean_accuracy"] for r in by[m]])})
            attacks = by[m][0]["robust_accuracy"].keys() if by[m] else []
            for a in attacks:
                for e in eps:
                    summary.append({"task": task, "method": m, "metric": "robust_accuracy", "attack": a,
                                    "eps": eps_key(e), **describe([_metric(r["robust_accuracy"], a, e)
                                                                   for r in by[m]])})
            summary.append({"task": task, "method": m, "metric": "zero_gradient_fraction", "attack": None,
                            "eps": None, **describe([r["zero_gradient_fraction"] for r in by[m]])})
            names = by[m][0]["checks"].keys() if by[m] else []
            checks[task][m] = {c: all(r["checks"][c] for r in by[m]) for c in names}
        seeds_l, seeds_b = [r["seed"] for r in by["local"]], [r["seed"] for r in by["backprop"]]
        if seeds_l != seeds_b:
            raise ValueError(f"{task}: local and backprop rows do not pair by seed ({seeds_l} vs {seeds_b})")
        pairs = [("clean_accuracy", None, None)] + [("robust_accuracy", a, HEADLINE_EPS)
                                                     for a in by["local"][0]["robust_accuracy"]]
        for metric, a, e in pairs:
            get = (lambda r: r["clean_accuracy"]) if a is None else (lambda r, a=a, e=e: _metric(r["robust_accuracy"],
                                                                                                   a, e))
            la, ba = [get(r) for r in by["local"]], [get(r) for r in by["backprop"]]
            comparisons.append({"task": task, "metric": metric, "attack": a,
                                "eps": None if e is None else eps_key(e), "local_mean": float(np.mean(la)),
                                "backprop_mean": float(np.mean(ba)), **paired_test(la, ba)})
        mt = sorted((m for m in matched if m["task"] == task), key=lambda m: m["seed"])
        if mt:
            la = [_metric(m["robust_accuracy"]["local"], "worst", HEADLINE_EPS) for m in mt]
            ba = [_metric(m["robust_accuracy"]["backprop"], "worst", HEADLINE_EPS) for m in mt]
            lc = [m["clean_accuracy"]["local"] for m in mt]
            bc = [m["clean_accuracy"]["backprop"] for m in mt]
            matched_cmp.append({"task": task, "metric": "robust_accuracy", "attack": "worst",
                                "eps": eps_key(HEADLINE_EPS), "seeds": [m["seed"] for m in mt],
                                "stopped": sorted({m["stopped_method"] for m in mt}),
                                "local_clean_mean": float(np.mean(lc)), "backprop_clean_mean": float(np.mean(bc)),
                                "local_mean": float(np.mean(la)), "backprop_mean": float(np.mean(ba)),
                                **paired_test(la, ba)})
        claims[task] = _verdicts(task, comparisons, matched_cmp, checks[task])
    return {"summary": summary, "comparisons": comparisons, "matched_comparisons": matched_cmp,
            "checks": checks, "claims": claims}


def _find(comparisons: list[dict], task: str, metric: str, attack: str | None) -> dict:
    return next(c for c in comparisons if c["task"] == task and c["metric"] == metric and c["attack"] == attack)


def _significant(c: dict) -> bool:
    return c["p_value"] is not None and c["p_value"] < ALPHA  # undefined p (no variance): not significant


def _verdicts(task: str, comparisons: list[dict], matched_cmp: list[dict], checks: dict) -> dict:
    """The answer to both claims for one task, computed from the numbers (never asserted)."""
    c = _find(comparisons, task, "clean_accuracy", None)
    ci = c["diff_ci95"]
    if ci is not None and -EQUIVALENCE_MARGIN <= ci[0] and ci[1] <= EQUIVALENCE_MARGIN:
        acc = f"comparable (95% CI of local - backprop within +-{EQUIVALENCE_MARGIN})"
        if _significant(c):
            acc += f"; the difference {c['diff_mean']:+.3f} is significant (p = {c['p_value']:.2g})"
    elif _significant(c):
        acc = "local lower" if c["diff_mean"] < 0 else "local higher"
        acc += f" (paired t-test p < {ALPHA})"
    else:
        acc = "inconclusive (not significant, CI wider than the equivalence margin)"
    failed = sorted({f"{m}:{k}" for m, ch in checks.items() for k, ok in ch.items() if not ok})
    rob = {}
    for attack in ("fgsm", "worst"):
        r = _find(comparisons, task, "robust_accuracy", attack)
        if _significant(r) and r["diff_mean"] > 0:
            v = "local more robust" if not failed else "not established (masking check failed: " + \
                ", ".join(failed) + ")"
        elif _significant(r) and r["diff_mean"] < 0:
            v = "local less robust"
        elif r["p_value"] is None:
            v = f"undetermined (no p-value: {r['n']} seed(s) or identical differences)"
        else:
            v = "no significant difference"
        rob[attack] = v
    m = next((x for x in matched_cmp if x["task"] == task), None)
    if m is None:
        rob_m = "not needed (clean accuracies within the matching tolerance for every seed)"
    elif _significant(m) and m["diff_mean"] > 0:
        rob_m = "local more robust" if not failed else "not established (masking check failed)"
    elif _significant(m) and m["diff_mean"] < 0:
        rob_m = "local less robust"
    elif m["p_value"] is None:
        rob_m = (f"undetermined ({m['n']} matched seed(s), difference {m['diff_mean']:+.3f}; "
                 "a paired test needs >= 2 seeds with varying differences)")
    else:
        rob_m = "no significant difference"
    return {"accuracy": acc, "robustness_fgsm": rob["fgsm"], "robustness_worst": rob["worst"],
            "robustness_matched": rob_m, "failed_checks": failed}


def run_grid(tasks: Sequence[str] | Mapping[str, ExperimentConfig], settings: GridSettings = GridSettings(),
             progress: bool = False, datasets: Mapping[str, Dataset] | None = None) -> dict:
    """Run the whole grid; returns the results dict written to results.json.

    ``tasks`` is a list of registered task names, or a mapping name -> config (tests use tiny
    ones). Each data set is loaded once per task (or taken from ``datasets``).
    """
    cfgs = dict(tasks) if isinstance(tasks, Mapping) else {t: task_config(t) for t in tasks}
    rows, matched = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cfgs) * settings.seeds, desc="reproduce", unit="seed", dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        for task, cfg in cfgs.items():
            ds = (datasets or {}).get(task) or load_dataset(cfg.data)
            for seed in range(settings.seeds):
                status = (lambda s: bar.set_description_str(s)) if bar is not None else None
                r, m = run_task_seed(task, cfg, ds, seed, settings, status)
                rows.extend(r)
                if m is not None:
                    matched.append(m)
                log.info("%s seed %d: %s", task, seed,
                         ", ".join(f"{x['method']} clean {x['clean_accuracy']:.3f}" for x in r))
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    eps = settings.attacks.eps
    out = {
        "settings": {
            "seeds": list(range(settings.seeds)),
            "tasks": {t: {"config": TASKS.get(t), "epochs": c.with_overrides(epochs=settings.epochs).train.epochs,
                          "hidden": list(c.model.hidden), "local_lr": c.train.lr,
                          "backprop": dataclasses.asdict(c.backprop)} for t, c in cfgs.items()},
            "n_attack_cap": settings.n_attack,
            "match_tol": settings.match_tol,
            "headline_eps": HEADLINE_EPS,
            "equivalence_margin": EQUIVALENCE_MARGIN,
            "attacks": dataclasses.asdict(settings.attacks),
            "wall_seconds": time.perf_counter() - t0,
        },
        "rows": rows,
        "matched": matched,
    }
    out.update(summarise(rows, matched, eps))
    return out
