"""``localstdp tune``: choose a method's settings on the VALIDATION split.

Every point of a grid (the product of ``--grid key=v1,v2,...`` axes) trains the method with
``train.seed`` = 0..seeds-1; its score is the mean validation accuracy over seeds (of the last
epoch, or of the best epoch for the early-stopped ``backprop-es``). The highest score wins. Ties
(equal mean validation accuracy, common where the validation split is small) are broken by a rule
fixed in advance and the same for every method, never by grid order (:data:`TIE_RULE`): the lowest
mean validation cross-entropy of the same models (softmax of the scores whose argmax is the
prediction), then, where that ties too, the middle of the tied points in grid order. The test split is removed from the data before training, so no choice
can depend on it. Outputs (``--out DIR``): ``tune.json`` (every point and seed, the tied points and
how the tie was broken), ``tune.md`` (the table) and ``config.toml`` (the input config with the
chosen values: in the base sections for ``local`` and ``backprop``, in ``[methods.<name>]`` for the
panel's variants).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import atomic_write_text, output_dir
from ..config import ExperimentConfig, _merge, config_from_dict, nested
from ..data import Dataset, load_dataset
from ..errors import ConfigError
from ..train import train
from .methods import PANEL, method_config, selected_epoch


def parse_grid(items: Sequence[str]) -> dict[str, list]:
    """``key=v1,v2,...`` axes (values read as TOML, e.g. 0.1 / true / "cosine" / [128, 64])."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or "." not in key or not values.strip():
            raise ConfigError(f"--grid {item!r}: expected section.key=v1,v2,..., e.g. train.lr=0.05,0.1,0.2")
        try:
            vals = tomllib.loads(f"v = [{values}]")["v"]
        except tomllib.TOMLDecodeError:
            vals = [v.strip() for v in values.split(",")]
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice")
        if len(vals) != len({json.dumps(v) for v in vals}):
            raise ConfigError(f"--grid {item!r}: a value is listed twice")
        grid[key] = vals
    if not grid:
        raise ConfigError("tune needs at least one --grid key=v1,v2,...")
    return grid


def _point_table(point: dict) -> dict:
    """{"train.lr": 0.1} -> {"train": {"lr": 0.1}} (nested like a config file)."""
    table: dict = {}
    for key, value in point.items():
        table = _merge(table, nested(key, value))
    return table


def apply_point(cfg: ExperimentConfig, method: str, point: dict) -> ExperimentConfig:
    """``cfg`` with a grid point written where ``method`` reads it: the base sections for local and
    backprop, ``[methods.<method>]`` for the variants (so the other methods keep their settings)."""
    table = _point_table(point)
    if method in ("local", "backprop"):
        return config_from_dict(_merge(cfg.to_dict(), table))
    raw = cfg.to_dict()
    methods = dict(raw.get("methods", {}))
    methods[method] = _merge(methods.get(method, {}), table)
    return config_from_dict(raw | {"methods": methods})


TIE_RULE = ("highest mean validation accuracy; among points tied on it, the lowest mean validation "
            "cross-entropy; among points tied on both, the middle one in grid order (the lower middle of an even count)")
TIE_TOL = 1e-9  # means closer than this are equal (accuracies are counts / n_val: far coarser)


def choose(rows: Sequence[dict]) -> tuple[int, list[int], str]:
    """(index of the chosen point, indices of the points tied on validation accuracy, what decided):
    :data:`TIE_RULE`, from each row's "mean" (validation accuracy) and "mean_cross_entropy"."""
    best = max(r["mean"] for r in rows)
    tied = [i for i, r in enumerate(rows) if r["mean"] >= best - TIE_TOL]
    if len(tied) == 1:
        return tied[0], tied, "validation accuracy"
    ce = min(rows[i]["mean_cross_entropy"] for i in tied)
    flat = [i for i in tied if rows[i]["mean_cross_entropy"] <= ce + TIE_TOL]
    if len(flat) == 1:
        return flat[0], tied, f"validation cross-entropy among {len(tied)} points tied on validation accuracy"
    return flat[(len(flat) - 1) // 2], tied, (f"the middle of {len(flat)} points tied on validation accuracy "
                                              "and cross-entropy")


@torch.no_grad()
def val_cross_entropy(model, ds: Dataset, batch_size: int = 4096) -> float:
    """Mean cross-entropy of softmax(model(x)) on the validation split (the model's forward gives the
    scores its prediction is the argmax of: the logits z^L, or Forward-Forward's goodness per label)."""
    total = 0.0
    for i in range(0, len(ds.y_val), batch_size):
        z = model(ds.x_val[i : i + batch_size]).double()
        total += float(torch.nn.functional.cross_entropy(z, ds.y_val[i : i + batch_size], reduction="sum"))
    return total / len(ds.y_val)


def without_test(ds: Dataset) -> Dataset:
    """The data set with its test split removed: what tuning is allowed to see."""
    return dataclasses.replace(ds, x_test=ds.x_test[:0], y_test=ds.y_test[:0])


def _score(mcfg: ExperimentConfig, method: str, seed: int, ds: Dataset | None) -> tuple[float, float, int]:
    """One grid point and seed: (validation accuracy, validation cross-entropy, reported epoch). ``ds``
    None (on a cluster worker): the config's data, loaded there, without its test split."""
    if ds is None:
        from .cluster import worker_dataset

        ds = without_test(worker_dataset(mcfg))
    spec = PANEL[method]
    m = train(mcfg.with_overrides(seed=seed), spec.learner, None, dataset=ds, keep_epochs=spec.early_stop)
    e = selected_epoch(m["history"], spec.early_stop)
    if e != len(m["history"]):  # the early-stopped epoch's weights (backprop-es: the MLP itself)
        m["model"].load_state_dict(m["epoch_states"][e - 1])
    return float(m["history"][e - 1]["val_accuracy"]), val_cross_entropy(m["model"], ds), e


def tune(cfg: ExperimentConfig, method: str, grid: dict[str, list], seeds: int = 3, *,
         dataset: Dataset | None = None, epochs: int | None = None, progress: bool = False, jobs: int = 1,
         scheduler=None, scheduler_timeout: float | None = None) -> dict:
    """Score every grid point on validation accuracy; returns the record written to tune.json
    (``chosen`` is the winning point, ``config`` the resulting config as a dict).

    The point x seed trainings run in this process, in ``jobs`` local worker processes of one thread
    each, or on the dask cluster at ``scheduler`` (an address or a ``distributed.Client``; its workers
    load the config's data themselves unless ``dataset`` is given): localstdp.evaluation.cluster."""
    from .cluster import CONNECT_TIMEOUT, run_units

    if method not in PANEL:
        raise ConfigError(f"unknown method {method!r}; expected one of {', '.join(PANEL)}")
    if seeds < 1:
        raise ConfigError(f"seeds = {seeds!r}: expected an integer >= 1")
    if cfg.data.val_fraction == 0:
        raise ConfigError("tune chooses on the validation split: data.val_fraction must be > 0")
    cfg = cfg.with_overrides(epochs=epochs)
    keys = list(grid)
    points = [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]
    configs = [apply_point(cfg, method, p) for p in points]  # every point validated before any training
    remote = scheduler is not None
    # the data is read here too (n_train, n_val; a missing file fails before any unit is sent)
    ds = without_test(dataset if dataset is not None else load_dataset(cfg.data))
    send = None if dataset is None and (remote or jobs > 1) else ds  # None: each worker loads it once
    items = [(method_config(pcfg, method), method, seed) for pcfg in configs for seed in range(seeds)]
    names = [", ".join(f"{k}={v}" for k, v in point.items()) + f" seed {seed}" for point in points
             for seed in range(seeds)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc=f"tune {method}", unit="run", dynamic_ncols=True)
        if jobs == 1 and not remote and items:
            bar.set_postfix_str(names[0])

    def done(i: int, _) -> None:
        if bar is not None:
            bar.update(1)
            if jobs == 1 and not remote and i + 1 < len(names):
                bar.set_postfix_str(names[i + 1])

    t0 = time.perf_counter()
    try:
        runs = run_units(_score, items, data=send, jobs=jobs, scheduler=scheduler, on_result=done, names=names,
                         scheduler_timeout=scheduler_timeout or CONNECT_TIMEOUT)
    finally:
        if bar is not None:
            bar.close()
    rows = []
    for k, point in enumerate(points):
        vals, ces, eps = (list(v) for v in zip(*runs[k * seeds:(k + 1) * seeds]))
        rows.append({"point": point, "val_accuracy": vals, "mean": float(np.mean(vals)),
                     "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, "epochs": eps,
                     "val_cross_entropy": ces, "mean_cross_entropy": float(np.mean(ces))})
    best, tied, decided = choose(rows)
    return {
        "method": method,
        "grid": grid,
        "seeds": list(range(seeds)),
        "epochs": cfg.train.epochs,
        "n_train": len(ds.y_train),
        "n_val": len(ds.y_val),
        "points": rows,
        "chosen": rows[best]["point"],
        "chosen_mean": rows[best]["mean"],
        "tied": [rows[i]["point"] for i in tied] if len(tied) > 1 else [],
        "chosen_by": decided,
        "tie_rule": TIE_RULE,
        "config": configs[best].to_dict(),
        "threads": torch.get_num_threads() if jobs == 1 and scheduler is None else 1,
        "jobs": jobs,
        "scheduler": (scheduler if isinstance(scheduler, str) else scheduler.scheduler.address) if remote else None,
        "wall_seconds": time.perf_counter() - t0,
    }


def tune_markdown(res: dict, source: str = "") -> str:
    keys = list(res["grid"])
    lines = [f"# tune {res['method']}{' on ' + source if source else ''}", "",
             f"Mean validation accuracy over seeds {res['seeds']} ({res['n_val']} validation examples, "
             f"{res['n_train']} training, {res['epochs']} epochs); the test split was not read.", "",
             "| " + " | ".join(keys) + " | val accuracy (mean ± std) | val cross-entropy | per seed |",
             "|" + "---|" * (len(keys) + 3)]
    tied = res.get("tied", [])
    for r in res["points"]:
        mark = " **(chosen)**" if r["point"] == res["chosen"] else " (tied)" if r["point"] in tied else ""
        per = ", ".join(f"{v:.3f}" for v in r["val_accuracy"])
        if PANEL[res["method"]].early_stop:
            per += f" (epochs {', '.join(map(str, r['epochs']))})"
        ce = f"{r['mean_cross_entropy']:.4f}" if "mean_cross_entropy" in r else "-"
        lines.append("| " + " | ".join(str(r["point"][k]) for k in keys)
                     + f" | {r['mean']:.4f} ± {r['std']:.4f}{mark} | {ce} | {per} |")
    if "tie_rule" in res:
        lines += ["", f"Choice: {res['tie_rule']}. "
                  + (f"Tied on validation accuracy: {', '.join(_point_text(p) for p in tied)}; " if tied else
                     "No tie on validation accuracy; ") + f"decided by {res['chosen_by']}."]
    return "\n".join(lines) + "\n"


def _point_text(point: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def write_tune(res: dict, out: str | Path, source: str = "") -> list[Path]:
    out = Path(out)
    output_dir(out)
    paths = [out / "tune.json", out / "tune.md", out / "config.toml"]
    atomic_write_text(paths[0], json.dumps(res, indent=2) + "\n")
    atomic_write_text(paths[1], tune_markdown(res, source))
    header = (f"# chosen by `localstdp tune --rule {res['method']}` on the validation split "
              f"(mean of seeds {res['seeds']}): {res['chosen']}\n")
    import tomli_w

    atomic_write_text(paths[2], header + tomli_w.dumps(res["config"]))
    return paths
