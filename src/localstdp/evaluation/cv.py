"""``localstdp cv``: repeated stratified cross-validation with the setting selection nested in each fold.

For a task with few examples (iris-1v2: 100) one train/validation/test split is a coarse instrument:
one test example moves the accuracy by several points and a tie on a small validation split decides
the learning rate. Here every example of the task (train, validation and test of the config's data)
is used: ``repeats`` x ``folds`` outer folds (scikit-learn ``RepeatedStratifiedKFold``, seeded). In
each outer training part, every grid point of a method is scored by the mean validation accuracy over
``inner_folds`` stratified inner folds of that part only, the winner is chosen by
:data:`localstdp.evaluation.tune.TIE_RULE` (the rule of ``localstdp tune``, the same for every
method), the method is trained on the whole outer training part with it and scored on the outer
test fold, which nothing before has read. Inputs are min-max scaled with the statistics of the part
a model trains on (images: by their known range), as :func:`localstdp.data.load_dataset` does.
Every method of an outer fold shares its splits, inner splits and training seed (``train.seed`` +
repeat), so the per-fold differences are paired.

Statistics (:func:`corrected_t`): the mean over the k r outer folds with the Nadeau-Bengio corrected
resampled t interval, variance s^2 (1/(k r) + n_test/n_train), t with k r - 1 degrees of freedom
(Nadeau & Bengio 2003, Machine Learning 52:239-281; Bouckaert & Frank 2004). The plain t interval
treats overlapping training sets as independent and is too narrow; it is reported beside it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import atomic_write_text, output_dir
from ..config import DataConfig, ExperimentConfig
from ..data import Dataset, _check_finite, _minmax, _record, _select_classes, read_idx, read_table
from ..errors import ConfigError
from ..train import train
from .methods import PANEL, method_config, resolve_methods, selected_epoch
from .stats import describe
from .tune import TIE_RULE, apply_point, choose, parse_grid, val_cross_entropy


@dataclass(frozen=True)
class Examples:
    """Every example of a task, unscaled: x (n, features) float64, y in 0..K-1; ``divisor`` scales
    images by their known range, None means min-max with the training part's statistics."""

    name: str
    x: np.ndarray
    y: np.ndarray
    labels: tuple
    shape: tuple
    divisor: float | None


def load_examples(data: DataConfig) -> Examples:
    """All of the task's examples (the classes of ``data``), before any split or scaling."""
    if data.name == "idx":
        x_tr, y_tr, x_te, y_te, source = read_idx(data)
        x, y = np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te])
    else:
        x, y, source = read_table(data)
    x = np.asarray(x, dtype=np.float64)
    _check_finite(x, source)
    x, y, labels = _select_classes(x, np.asarray(y), data.classes, source)
    images = {"idx": 255.0, "mnist": 255.0, "digits": 16.0}
    side = int(round(x.shape[1] ** 0.5))
    shape = (1, side, side) if data.name in images else (x.shape[1],)
    return Examples(data.name, x, y, labels, shape, images.get(data.name))


def fold_dataset(ex: Examples, train_idx, test_idx, val_idx=None) -> Dataset:
    """A Dataset of the given rows, scaled with the statistics of the TRAINING rows only."""
    val_idx = np.zeros(0, dtype=np.int64) if val_idx is None else np.asarray(val_idx)
    x_tr, x_va, x_te = ex.x[train_idx], ex.x[val_idx], ex.x[test_idx]
    if ex.divisor is None:
        x_tr, x_va, x_te = _minmax(x_tr, x_va, x_te)
    else:
        x_tr, x_va, x_te = x_tr / ex.divisor, x_va / ex.divisor, x_te / ex.divisor
    return _record(ex.name, x_tr, ex.y[train_idx], x_te, ex.y[test_idx], ex.labels, ex.shape, x_va, ex.y[val_idx])


def outer_splits(y: np.ndarray, repeats: int, folds: int, seed: int) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """(repeat, fold, train indices, test indices) of ``RepeatedStratifiedKFold``, seeded."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    rskf = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    return [(i // folds, i % folds, tr, te) for i, (tr, te) in enumerate(rskf.split(np.zeros(len(y)), y))]


def _fold_seed(seed: int, repeat: int, fold: int) -> int:
    """The seed of an outer fold's inner splits (and early-stopping carve), fixed by (seed, repeat, fold)."""
    return int(np.random.SeedSequence([seed, repeat, fold]).generate_state(1)[0])


def inner_splits(y: np.ndarray, train_idx: np.ndarray, inner_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(inner train, inner validation) as indices into the whole task, from ``train_idx`` only."""
    from sklearn.model_selection import StratifiedKFold

    skf = StratifiedKFold(n_splits=inner_folds, shuffle=True, random_state=seed)
    return [(train_idx[a], train_idx[b]) for a, b in skf.split(np.zeros(len(train_idx)), y[train_idx])]


def parse_cv_grids(items: Sequence[str], methods: Sequence[str]) -> dict[str, dict[str, list]]:
    """``method:section.key=v1,v2,...`` items -> {method: grid}; a method's items form a product grid."""
    by_method: dict[str, list[str]] = {}
    for item in items:
        method, sep, rest = item.partition(":")
        if not sep or "=" in method or not method.strip():
            raise ConfigError(f"--grid {item!r}: expected method:section.key=v1,v2,..., e.g. local:train.lr=0.1,0.2")
        if method.strip() not in methods:
            raise ConfigError(f"--grid {item!r}: method {method.strip()!r} is not among --methods ({', '.join(methods)})")
        by_method.setdefault(method.strip(), []).append(rest)
    return {m: parse_grid(v) for m, v in by_method.items()}


def _points(grid: dict[str, list]) -> list[dict]:
    return [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())] if grid else [{}]


def _fit(cfg: ExperimentConfig, method: str, ds: Dataset, seed: int):
    """Train ``method`` (its panel config ``cfg``) on ``ds``; the model of its reported epoch."""
    spec = PANEL[method]
    m = train(cfg.with_overrides(seed=seed), spec.learner, None, dataset=ds, keep_epochs=spec.early_stop)
    e = selected_epoch(m["history"], spec.early_stop)
    if e != len(m["history"]):
        m["model"].load_state_dict(m["epoch_states"][e - 1])
    return m["model"], m["history"][e - 1], e


def inner_select(cfg: ExperimentConfig, method: str, grid: dict[str, list], ex: Examples, train_idx: np.ndarray,
                 inner_folds: int, split_seed: int, train_seed: int, tick: Callable[[str], None] = lambda s: None) -> dict:
    """Choose ``method``'s grid point from the outer TRAINING rows alone: mean validation accuracy
    over the inner folds (ties: :data:`TIE_RULE`). No other row is read."""
    points = _points(grid)
    if len(points) == 1:
        return {"points": [], "chosen": points[0], "tied": [], "chosen_by": "no grid"}
    splits = inner_splits(ex.y, train_idx, inner_folds, split_seed)
    sets = [fold_dataset(ex, tr, np.zeros(0, dtype=np.int64), va) for tr, va in splits]
    rows = []
    for point in points:
        mcfg = method_config(apply_point(cfg, method, point), method)
        acc, ce = [], []
        for ds in sets:
            tick(f"{method} " + ", ".join(f"{k}={v}" for k, v in point.items()))
            model, record, _ = _fit(mcfg, method, ds, train_seed)
            acc.append(float(record["val_accuracy"]))
            ce.append(val_cross_entropy(model, ds))
        rows.append({"point": point, "val_accuracy": acc, "mean": float(np.mean(acc)),
                     "val_cross_entropy": ce, "mean_cross_entropy": float(np.mean(ce))})
    best, tied, decided = choose(rows)
    return {"points": rows, "chosen": rows[best]["point"], "tied": [rows[i]["point"] for i in tied] if len(tied) > 1 else [],
            "chosen_by": decided}


def run_fold(cfg: ExperimentConfig, methods: Sequence[str], grids: dict, ex: Examples, repeat: int, fold: int,
             train_idx: np.ndarray, test_idx: np.ndarray, inner_folds: int, seed: int,
             tick: Callable[[str], None] = lambda s: None) -> dict:
    """One outer fold: for each method, choose inside the training part, train on all of it, score the test fold."""
    t0 = time.perf_counter()
    split_seed, train_seed = _fold_seed(seed, repeat, fold), cfg.train.seed + repeat
    out = {"repeat": repeat, "fold": fold, "train_seed": train_seed, "n_train": len(train_idx), "n_test": len(test_idx),
           "test_index": [int(i) for i in test_idx], "methods": {}}
    for method in methods:
        sel = inner_select(cfg, method, grids.get(method, {}), ex, train_idx, inner_folds, split_seed, train_seed, tick)
        fit_idx, val_idx = train_idx, None
        if PANEL[method].early_stop:  # its epoch is chosen on a validation carve of the training part
            from sklearn.model_selection import train_test_split

            fit_idx, val_idx = train_test_split(train_idx, test_size=cfg.data.val_fraction, random_state=split_seed,
                                                stratify=ex.y[train_idx])
        ds = fold_dataset(ex, fit_idx, test_idx, val_idx)
        tick(f"{method} outer fold")
        model, _, epoch = _fit(method_config(apply_point(cfg, method, sel["chosen"]), method), method, ds, train_seed)
        with torch.no_grad():
            right = (model(ds.x_test).argmax(1) == ds.y_test).numpy()
        out["methods"][method] = sel | {"epoch": epoch, "test_accuracy": float(right.mean()),
                                        "test_correct": right.astype(int).tolist()}
    out["wall_seconds"] = time.perf_counter() - t0
    return out


def corrected_t(values: Sequence[float], n_train: float, n_test: float, alpha: float = 0.05) -> dict:
    """Mean of per-fold values with the Nadeau-Bengio corrected resampled t interval and p-value
    (H0: mean 0): var = s^2 (1/n + n_test/n_train), n = len(values), t_{n-1}. p is None without variance."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    n = len(v)
    mean = float(v.mean())
    s2 = float(v.var(ddof=1)) if n > 1 else 0.0
    se = math.sqrt((1.0 / n + n_test / n_train) * s2)
    out = {"n": n, "mean": mean, "std": math.sqrt(s2), "se": se, "df": n - 1, "ci95": None, "t": None, "p_value": None}
    if n > 1:
        half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * se
        out["ci95"] = [mean - half, mean + half]
    if se > 0:
        out["t"] = mean / se
        out["p_value"] = float(2 * stats.t.sf(abs(out["t"]), n - 1))
    return out


def summarise(folds: list[dict], methods: Sequence[str], grids: dict | None = None) -> tuple[dict, dict]:
    """({method: corrected-t summary and the chosen points in grid order}, {"local - m": corrected-t of the
    paired per-fold differences})."""
    n_train, n_test = np.mean([f["n_train"] for f in folds]), np.mean([f["n_test"] for f in folds])
    acc = {m: [f["methods"][m]["test_accuracy"] for f in folds] for m in methods}
    summary = {}
    for m in methods:
        chosen = Counter(json.dumps(f["methods"][m]["chosen"]) for f in folds)
        order = [json.dumps(p) for p in _points((grids or {}).get(m, {}))]
        summary[m] = {k: v for k, v in corrected_t(acc[m], n_train, n_test).items() if k not in ("t", "p_value")} | {
            "naive_ci95": describe(acc[m])["ci95"], "min": min(acc[m]), "max": max(acc[m]),
            "chosen": {k: chosen[k] for k in sorted(chosen, key=lambda k: (order.index(k) if k in order else len(order), k))},
            "folds_tied": sum(bool(f["methods"][m]["tied"]) for f in folds)}
    ref = "local" if "local" in methods else methods[0]
    diffs = {}
    for m in methods:
        if m != ref:
            d = np.subtract(acc[ref], acc[m])
            diffs[f"{ref} - {m}"] = corrected_t(d, n_train, n_test) | {
                "wins": int((d > 0).sum()), "ties": int((d == 0).sum()), "losses": int((d < 0).sum())}
    return summary, diffs


def _check(ex: Examples, repeats: int, folds: int, inner_folds: int, seed: int, methods, cfg: ExperimentConfig) -> list:
    """The outer splits, after every check that can refuse the setup before any training."""
    if repeats < 1:
        raise ConfigError(f"repeats = {repeats}: expected an integer >= 1")
    for name, k in (("folds", folds), ("inner folds", inner_folds)):
        if k < 2:
            raise ConfigError(f"{name} = {k}: expected an integer >= 2")
    counts = np.bincount(ex.y, minlength=len(ex.labels))
    if counts.min() < folds:
        raise ConfigError(f"{folds} stratified folds need at least {folds} examples of every class "
                          f"(class counts {counts.tolist()})")
    splits = outer_splits(ex.y, repeats, folds, seed)
    smallest = min(np.bincount(ex.y[tr], minlength=len(ex.labels)).min() for _, _, tr, _ in splits)
    if smallest < inner_folds:
        raise ConfigError(f"{inner_folds} inner folds need at least {inner_folds} examples of every class in each "
                          f"outer training part (the smallest has {smallest})")
    if any(PANEL[m].early_stop for m in methods) and cfg.data.val_fraction == 0:
        raise ConfigError("an early-stopped method needs data.val_fraction > 0 (its epoch is chosen on a carve of "
                          "the outer training part)")
    return splits


def cross_validate(cfg: ExperimentConfig, methods: Sequence[str], grids: dict[str, dict[str, list]] | None = None, *,
                   repeats: int = 10, folds: int = 5, inner_folds: int = 3, seed: int = 0, epochs: int | None = None,
                   out: str | Path | None = None, resume: bool = False, progress: bool = False,
                   examples: Examples | None = None, jobs: int = 1, scheduler=None,
                   scheduler_timeout: float | None = None) -> dict:
    """Nested repeated stratified cross-validation of ``methods``; returns the record of cv.json.

    Each finished outer fold is written to ``out/folds/`` (when ``out`` is given); ``resume`` reuses
    those written by the same setup and trains only the others. The outer folds run in this process,
    in ``jobs`` local worker processes of one thread each, or on the dask cluster at ``scheduler`` (an
    address or a ``distributed.Client``; its workers load the config's examples themselves unless
    ``examples`` is given), each fold written here as it comes back: localstdp.evaluation.cluster."""
    methods = resolve_methods(list(methods) or ["local", "backprop"])
    if jobs < 1:
        raise ConfigError(f"jobs = {jobs!r}: expected an integer >= 1")
    grids = dict(grids or {})
    bad = [m for m in grids if m not in methods]
    if bad:
        raise ConfigError(f"a grid for {', '.join(bad)}, which is not among the methods ({', '.join(methods)})")
    cfg = cfg.with_overrides(epochs=epochs)
    for m in methods:  # every configuration validated before any training
        for p in _points(grids.get(m, {})):
            method_config(apply_point(cfg, m, p), m)
    ex = examples if examples is not None else load_examples(cfg.data)
    splits = _check(ex, repeats, folds, inner_folds, seed, methods, cfg)
    trained = {k: v for k, v in cfg.to_dict().items() if k not in ("evaluation", "frontier")}  # what cv reads
    setup = {"config": trained, "methods": methods, "grids": grids, "repeats": repeats, "folds": folds,
             "inner_folds": inner_folds, "seed": seed, "n_examples": len(ex.y)}
    key = hashlib.sha256(json.dumps(setup, sort_keys=True, default=str).encode()).hexdigest()[:16]
    store = Path(out) / "folds" if out is not None else None
    done = _load_folds(store, key, resume)
    per_fold = sum(len(_points(grids.get(m, {}))) * inner_folds * (len(_points(grids.get(m, {}))) > 1) + 1
                   for m in methods)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(splits) * per_fold, initial=len(done) * per_fold, desc="cv", unit="run", dynamic_ncols=True)
    if scheduler is not None or jobs > 1:
        from .cluster import CONNECT_TIMEOUT, run_units

        todo = [(r, k, tr, te) for r, k, tr, te in splits if f"r{r:02d}-f{k:02d}.json" not in done]
        names = [f"r{r:02d}-f{k:02d}.json" for r, k, _, _ in todo]

        def finished(i: int, rec: dict) -> None:
            done[names[i]] = rec | {"setup": key}
            if store is not None:
                atomic_write_text(store / names[i], json.dumps(done[names[i]]) + "\n")
            if bar is not None:
                bar.update(per_fold)

        try:
            run_units(_remote_fold, [(cfg, methods, grids, r, k, tr, te, inner_folds, seed) for r, k, tr, te in todo],
                      data=examples, jobs=jobs, scheduler=scheduler, on_result=finished, names=names,
                      scheduler_timeout=scheduler_timeout or CONNECT_TIMEOUT)
        finally:
            if bar is not None:
                bar.close()
    records = []
    try:
        for r, k, tr, te in splits:
            name = f"r{r:02d}-f{k:02d}.json"
            if name not in done:
                def tick(what: str, r=r, k=k) -> None:
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix_str(f"repeat {r + 1} fold {k + 1}: {what}")

                done[name] = run_fold(cfg, methods, grids, ex, r, k, tr, te, inner_folds, seed, tick) | {"setup": key}
                if store is not None:
                    atomic_write_text(store / name, json.dumps(done[name]) + "\n")
            records.append(done[name])
    finally:
        if bar is not None:
            bar.close()
    summary, diffs = summarise(records, methods, grids)
    return {"source": ex.name, "classes": list(ex.labels), "n_examples": len(ex.y), "repeats": repeats, "folds": folds,
            "inner_folds": inner_folds, "seed": seed, "methods": methods, "grids": grids, "epochs": cfg.train.epochs,
            "tie_rule": TIE_RULE, "setup_key": key, "summary": summary, "differences": diffs,
            "threads": torch.get_num_threads() if jobs == 1 and scheduler is None else 1, "jobs": jobs,
            "scheduler": (scheduler if isinstance(scheduler, str) else scheduler.scheduler.address)
            if scheduler is not None else None, "wall_seconds": sum(f["wall_seconds"] for f in records),
            "outer_folds": records, "config": cfg.to_dict()}


def _remote_fold(cfg: ExperimentConfig, methods, grids, repeat: int, fold: int, train_idx, test_idx, inner_folds: int,
                 seed: int, ex: Examples | None) -> dict:
    """:func:`run_fold` in a worker process: ``ex`` None (the caller passed no examples): the config's,
    read by the worker (once per worker process)."""
    if ex is None:
        data = json.dumps(dataclasses.asdict(cfg.data), sort_keys=True, default=str)
        if data not in _WORKER_EXAMPLES:
            _WORKER_EXAMPLES[data] = load_examples(cfg.data)
        ex = _WORKER_EXAMPLES[data]
    return run_fold(cfg, methods, grids, ex, repeat, fold, train_idx, test_idx, inner_folds, seed)


_WORKER_EXAMPLES: dict[str, Examples] = {}


def _load_folds(store: Path | None, key: str, resume: bool) -> dict[str, dict]:
    """The fold files of an earlier run of the same setup (resume), else an emptied store."""
    if store is None:
        return {}
    output_dir(store)
    done = {}
    for path in sorted(store.glob("r*-f*.json")):
        if not resume:  # a fresh run: an earlier run's folds must not be mixed in
            path.unlink()
            continue
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # unreadable: trained again
        if rec.get("setup") != key:
            raise ConfigError(f"{path} was written by a different cv setup (config, methods, grids, folds or "
                              "seed): use another --out, or run without --resume to start again")
        done[path.name] = rec
    return done


def _ci(s: dict, key: str = "ci95", sign: str = "") -> str:
    return f"[{s[key][0]:{sign}.3f}, {s[key][1]:{sign}.3f}]" if s.get(key) else "-"


def cv_markdown(res: dict, source: str = "") -> str:
    grids = "; ".join(f"{m}: " + ", ".join(f"{k} in {{{', '.join(map(str, v))}}}" for k, v in g.items())
                      for m, g in res["grids"].items()) or "none (the config's settings)"
    n = res["repeats"] * res["folds"]
    lines = [f"# cv{' on ' + source if source else ''}: {res['repeats']} x {res['folds']}-fold nested cross-validation", "",
             f"{res['n_examples']} examples (classes {res['classes']} of {res['source']}), {res['repeats']} repeat(s) of "
             f"{res['folds']} stratified folds (seed {res['seed']}), {res['epochs']} epochs. In each outer training part "
             f"the setting is chosen by mean validation accuracy over {res['inner_folds']} inner folds; grids: {grids}. "
             f"Choice: {res['tie_rule']}.", "",
             f"| method | mean test accuracy | 95% CI (Nadeau-Bengio corrected) | plain t 95% CI | std over {n} folds "
             "| lowest / highest fold | chosen (folds) | folds with a tie |", "|---|---|---|---|---|---|---|---|"]
    for m, s in res["summary"].items():
        chosen = ", ".join(f"{_point(k)}: {c}" for k, c in s["chosen"].items())
        lines.append(f"| {m} | {s['mean']:.4f} | {_ci(s)} | {_ci(s, 'naive_ci95')} | {s['std']:.4f} | {s['min']:.2f} / {s['max']:.2f} | {chosen} "
                     f"| {s['folds_tied']} |")
    if res["differences"]:
        lines += ["", "| paired difference | mean | 95% CI (corrected) | t | p (corrected) | folds won / tied / lost |",
                  "|---|---|---|---|---|---|"]
        for name, d in res["differences"].items():
            t = f"{d['t']:.2f}" if d["t"] is not None else "-"
            p = f"{d['p_value']:.3g}" if d["p_value"] is not None else "-"
            lines.append(f"| {name} | {d['mean']:+.4f} | {_ci(d, sign='+')} | {t} | {p} | {d['wins']} / {d['ties']} / {d['losses']} |")
    lines += ["", f"Training time {res['wall_seconds']:.0f} s ({res['threads']} thread(s))."]
    return "\n".join(lines) + "\n"


def _point(key: str) -> str:
    point = json.loads(key)
    return ", ".join(f"{k}={v}" for k, v in point.items()) or "config"


def write_cv(res: dict, out: str | Path, source: str = "") -> list[Path]:
    out = Path(out)
    output_dir(out)
    paths = [out / "cv.json", out / "cv.md"]
    atomic_write_text(paths[0], json.dumps(res, indent=1) + "\n")
    atomic_write_text(paths[1], cv_markdown(res, source))
    return paths
