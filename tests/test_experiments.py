"""The grid: statistics against direct formulas, the task registry, and a tiny 1-seed run
(results.json schema, every check computed, the same seed gives the same numbers)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats

from localstdp import experiments as E
from localstdp.cli import main
from localstdp.errors import ConfigError
from localstdp.robustness import CHECKS, EPS, AttackSettings

TINY_ATTACKS = AttackSettings(pgd_steps=3, pgd_restarts=1, square_queries=5, search_queries=10)
TINY = E.GridSettings(seeds=1, epochs=2, n_attack=12, attacks=TINY_ATTACKS)
TASKS = ["iris-1v2", "mnist-3v5"]


def test_describe_matches_hand_formula():
    d = E.describe([0.9, 0.8, 1.0])
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(n)
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.9) and d["std"] == pytest.approx(0.1)
    assert d["ci95"] == pytest.approx([0.9 - half, 0.9 + half])
    one = E.describe([0.7])
    assert one == {"n": 1, "mean": 0.7, "std": 0.0, "ci95": None}


def test_paired_test_matches_scipy_and_hand_t():
    a, b = [0.91, 0.95, 0.93, 0.90, 0.97], [0.90, 0.91, 0.92, 0.88, 0.93]
    r = E.paired_test(a, b)
    d = np.subtract(a, b)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert r["t"] == pytest.approx(t)
    assert r["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), len(d) - 1))
    assert r["diff_mean"] == pytest.approx(d.mean())
    same = E.paired_test([0.5, 0.6], [0.4, 0.5])  # identical differences: no variance, p undefined
    assert same["p_value"] is None and same["diff_mean"] == pytest.approx(0.1)


def test_registry_and_attack_subset():
    assert set(E.SUITES["paper"]) <= set(E.TASKS)
    for task in E.TASKS:
        cfg = E.task_config(task)
        assert cfg.data.name in ("iris", "mnist", "digits", "idx")
    with pytest.raises(ConfigError, match="unknown task"):
        E.resolve_tasks(["mnist-7v8"])
    with pytest.raises(ConfigError, match="unknown suite"):
        E.resolve_tasks(None, "nope")
    assert E.resolve_tasks(None) == list(E.SUITES["paper"])
    idx = E.attack_indices(300, 50)
    assert len(idx) == 50 and len(set(idx)) == 50 and list(idx) == sorted(idx) and idx.max() < 300
    np.testing.assert_array_equal(idx, E.attack_indices(300, 50))
    np.testing.assert_array_equal(E.attack_indices(30, 500), np.arange(30))


def test_early_stop_epoch_picks_closest_then_earliest():
    hist = [{"test_accuracy": a} for a in (0.80, 0.90, 0.95, 0.90, 0.97)]
    assert E._early_stop_epoch(hist, 0.91) == 2
    assert E._early_stop_epoch(hist, 0.99) == 5


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    rc = main(["reproduce", "--seeds", "1", "--epochs", "2", "--n-attack", "12", "--pgd-steps", "3",
               "--pgd-restarts", "1", "--square-queries", "5", "--tasks", *TASKS, "--out", str(out),
               "--no-progress"])
    assert rc == 0
    return out, json.loads((out / "results.json").read_text())


def test_results_schema_and_files(tiny_run):
    out, res = tiny_run
    for t in TASKS:
        assert (out / f"robustness-{t}.png").stat().st_size > 10_000
        assert (out / f"training-{t}.png").stat().st_size > 10_000
    md = (out / "results.md").read_text()
    assert "## Claim 1" in md and "## Gradient-masking checks" in md
    eps_keys = [str(e) for e in EPS]
    assert eps_keys == ["0.05", "0.1", "0.15", "0.2", "0.25", "0.3", "0.5", "1.0"]
    assert len(res["rows"]) == 4
    for row in res["rows"]:
        assert {"task", "method", "seed", "clean_accuracy", "robust_accuracy", "zero_gradient_fraction"} <= set(row)
        assert row["seed"] == 0 and row["n_attacked"] == 12
        ra = row["robust_accuracy"]
        expected = {"fgsm", "pgd", "transfer", "noise", "worst"} | (
            {"square"} if row["task"].startswith("mnist") else {"random_search"})
        assert set(ra) == expected
        for per in ra.values():
            assert list(per) == eps_keys
            assert all(0.0 <= v <= 1.0 for v in per.values())
            # the worst case is the per-example minimum: never above any attack
            assert all(ra["worst"][k] <= per[k] + 1e-12 for k in eps_keys)
        assert 0.0 <= row["zero_gradient_fraction"] <= 1.0
        assert set(row["checks"]) == set(CHECKS)
    for t in TASKS:
        for m in E.METHODS:
            assert set(res["checks"][t][m]) == set(CHECKS)
            assert all(isinstance(v, bool) for v in res["checks"][t][m].values())
        assert set(res["claims"][t]) >= {"accuracy", "robustness_fgsm", "robustness_worst", "robustness_matched"}
    cells = [s for s in res["summary"] if s["metric"] == "clean_accuracy"]
    assert len(cells) == 4 and all(c["n"] == 1 and c["ci95"] is None for c in cells)
    row = next(r for r in res["rows"] if r["task"] == "iris-1v2" and r["method"] == "local")
    cell = next(c for c in cells if c["task"] == "iris-1v2" and c["method"] == "local")
    assert cell["mean"] == row["clean_accuracy"]


def _numbers(res):
    return [{k: v for k, v in r.items() if k not in ("wall_seconds", "history")} |
            {"history": [{k: h[k] for k in ("epoch", "loss", "train_accuracy", "test_accuracy")}
                         for h in r["history"]]} for r in res["rows"]]


def test_same_seed_same_numbers(tiny_run):
    _, res = tiny_run
    again = E.run_grid(["iris-1v2"], TINY)
    first = [r for r in _numbers(res) if r["task"] == "iris-1v2"]
    assert _numbers(again) == first


def test_matched_comparison_retrains_the_more_accurate_method():
    # backprop with a tiny learning rate stays far below the local rule after 2 epochs
    cfg = E.task_config("mnist-3v5")
    cfg = dataclasses.replace(cfg, backprop=dataclasses.replace(cfg.backprop, lr=1e-6))
    res = E.run_grid({"mnist-3v5": cfg}, TINY)
    acc = {r["method"]: r["clean_accuracy"] for r in res["rows"]}
    assert acc["local"] > acc["backprop"] + TINY.match_tol
    (m,) = res["matched"]
    assert m["stopped_method"] == "local" and m["reference_method"] == "backprop"
    hist = next(r["history"] for r in res["rows"] if r["method"] == "local")
    assert m["stopped_epochs"] == E._early_stop_epoch(hist, acc["backprop"])
    assert m["clean_accuracy"]["backprop"] == acc["backprop"]
    # the early-stopped run is exactly epoch `stopped_epochs` of the full run (deterministic training)
    assert m["clean_accuracy"]["local"] == pytest.approx(hist[m["stopped_epochs"] - 1]["test_accuracy"])
    assert set(m["robust_accuracy"]["local"]) == {"fgsm", "pgd", "square", "noise", "worst"}
    (cmp_,) = res["matched_comparisons"]
    assert cmp_["seeds"] == [0] and cmp_["stopped"] == ["local"]
