"""The panel and the frontier: registry, a tiny run through the CLI (results.json schema, every
statistic computed, the same seed gives the same numbers), matched accuracy from kept epoch weights
chosen on validation, resuming an interrupted run, and the frontier verdict on hand-made points."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from localstdp import evaluation as E
from localstdp import registry
from localstdp.cli import main
from localstdp.errors import ConfigError, LocalSTDPError
from localstdp.evaluation import grid  # cli/reproduce looks run_grid up here (monkeypatched below)
from localstdp.evaluation.analysis import frontier_verdict
from localstdp.robustness import AttackSettings

TINY_ATTACKS = AttackSettings(pgd_steps=3, pgd_restarts=1, square_queries=5, search_queries=10, autoattack=False)
TASKS = ["iris-1v2", "mnist-3v5"]
WD = "methods.backprop-wd.backprop.weight_decay=0.01"


def tiny(**kw) -> E.GridSettings:
    base = dict(seeds=2, frontier_seeds=1, epochs=2, n_attack=12, n_boot=200, attacks=TINY_ATTACKS)
    return E.GridSettings(**(base | kw))


def tiny_cfg(task: str, *sets: str):
    cfg = E.task_config(task)
    cfg = dataclasses.replace(cfg, frontier=dataclasses.replace(cfg.frontier, backprop_weight_decay=[0.0, 0.01],
                                                                local_lr=[0.05], local_epochs=[1],
                                                                local_weight_decay=[0.01], backprop_lr=[],
                                                                local_targets=[]))
    return cfg.with_sets([WD, *sets])


def test_registry_and_attack_subset():
    assert set(registry.SUITES["paper"]) <= set(registry.TASKS)
    for task in registry.TASKS:
        cfg = E.task_config(task)
        assert cfg.data.name in ("iris", "mnist", "digits", "idx")
    with pytest.raises(ConfigError, match="unknown task"):
        E.resolve_tasks(["mnist-7v8"])
    with pytest.raises(ConfigError, match="unknown suite"):
        E.resolve_tasks(None, "nope")
    assert E.resolve_tasks(None) == list(registry.SUITES["paper"])
    idx = E.attack_indices(300, 50)
    assert len(idx) == 50 and len(set(idx)) == 50 and list(idx) == sorted(idx) and idx.max() < 300
    np.testing.assert_array_equal(idx, E.attack_indices(300, 50))
    np.testing.assert_array_equal(E.attack_indices(30, 500), np.arange(30))
    bits = np.random.default_rng(0).random(37) > 0.5
    np.testing.assert_array_equal(E.unpack(E.pack(bits), 37), bits)
    with pytest.raises(ConfigError, match="must include local"):
        E.GridSettings(methods=("backprop",))


def test_frontier_points_one_knob_at_a_time():
    pts = E.frontier_points(tiny_cfg("mnist-3v5"))
    assert [E.point_name(p) for p in pts] == ["backprop:weight_decay=0.0", "backprop:weight_decay=0.01", "local",
                                              "local:eta=0.05", "local:epochs=1", "local:weight_decay=0.01"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    rc = main(["reproduce", "--seeds", "2", "--frontier-seeds", "1", "--epochs", "2", "--n-attack", "12",
               "--pgd-steps", "3", "--pgd-restarts", "1", "--square-queries", "5", "--no-autoattack",
               "--tasks", *TASKS, "--set", WD, "--set", "frontier.backprop_weight_decay=[0.0, 0.01]",
               "--set", "frontier.local_lr=[0.05]", "--set", "frontier.local_weight_decay=[]",
               "--set", "frontier.local_epochs=[]", "--set", "frontier.backprop_lr=[]",
               "--set", "frontier.local_targets=[]", "--jobs", "1", "--val-attack", "10",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    return out, json.loads((out / "results.json").read_text())


def test_validation_robustness_selection_from_a_run(tiny_run):
    out, res = tiny_run
    for t in TASKS:
        sel = res["selection"][t]
        names = {p["point"] for p in res["frontier"][t]["points"]}
        assert set(sel["families"]) == {"local", "backprop"}
        for f in sel["families"].values():
            assert f["chosen"] in names and f["chosen"] in f["eligible"]
            chosen = [r for r in res["frontier_rows"] if r["task"] == t and r["point"] == f["chosen"]]
            assert f["test"]["clean"]["mean"] == pytest.approx(np.mean([r["clean_accuracy"] for r in chosen]))
        # every panel and frontier model was attacked on 10 validation examples
        assert all(r["val_robust"]["n"] == 10 for r in res["frontier_rows"] if r["task"] == t)
        assert {c["family"] for c in sel["comparisons"]} == {"backprop"}
    assert "## Validation robustness selection" in (out / "results.md").read_text()


def test_results_schema_statistics_and_files(tiny_run):
    out, res = tiny_run
    methods = ["local", "backprop", "backprop-wd", "backprop-es", "backprop-mse"]
    assert res["settings"]["methods"] == methods
    for t in TASKS:
        for kind in ("robustness", "training", "frontier"):
            assert (out / f"{kind}-{t}.png").stat().st_size > 10_000
    md = (out / "results.md").read_text()
    assert "## Clean test accuracy" in md and "## Robustness–accuracy frontier" in md
    assert len(res["rows"]) == 2 * 2 * len(methods)
    for row in res["rows"]:
        ra = row["robust_accuracy"]
        assert {"fgsm", "pgd", "transfer", "noise", "worst", "certified"} <= set(ra)
        for k in ra["worst"]:
            # the worst case is the per-example minimum over the attacks; the proven bound lies below it
            assert all(ra["worst"][k] <= ra[a][k] + 1e-12 for a in ra if a != "certified")
            assert ra["certified"][k] <= ra["worst"][k] + 1e-12
        clean = E.unpack(row["per_example"]["clean"], row["n_test"])
        assert clean.mean() == pytest.approx(row["clean_accuracy"])
        assert row["val_accuracy"] is not None and 1 <= row["epoch"] <= 2
        es = row["method"] == "backprop-es"
        vals = [h["val_accuracy"] for h in row["history"]]
        assert row["epoch"] == (int(np.argmax(vals)) + 1 if es else 2)
    comps = res["comparisons"]
    assert {c["baseline"] for c in comps} == set(methods[1:])
    holm = sorted((c["p_value"], c["p_holm"]) for c in comps)
    assert all(ph >= p - 1e-12 for p, ph in holm)  # Holm never lowers a p-value
    for c in comps:
        assert c["diff_ci95"][0] <= c["diff_mean"] + 1e-12 <= c["diff_ci95"][1] + 2e-12
        if c["attack"] is None:
            assert c["verdict"] in ("equivalent", "higher", "lower", "inconclusive")
            assert not (c["verdict"] == "equivalent" and c["p_holm"] < 0.05)
    for t in TASKS:
        cl = res["claims"][t]
        assert cl["strongest_clean_baseline"] in methods[1:] and len(cl["sentences"]) == 3
        fr = res["frontier"][t]
        assert [p["point"] for p in fr["points"]] == ["backprop:weight_decay=0.0", "backprop:weight_decay=0.01",
                                                       "local", "local:eta=0.05"]
        assert set(fr["verdict"]) == {"0.05", "0.1"}
        assert set(fr["verdict"].values()) <= {"above", "on", "below", "not comparable"}
        for s in cl["sentences"]:
            assert s in md


def _numbers(res):
    drop = ("wall_seconds", "history")
    return [{k: v for k, v in r.items() if k not in drop} for r in res["rows"]]


def test_same_seed_same_numbers(tiny_run):
    _, res = tiny_run
    cfg = tiny_cfg("iris-1v2", "frontier.local_weight_decay=[]", "frontier.local_epochs=[]")
    again = E.run_grid({"iris-1v2": cfg}, tiny(frontier_seeds=0, val_attack=10))
    first = [r for r in _numbers(res) if r["task"] == "iris-1v2"]
    assert _numbers(again) == first


def test_matched_takes_the_kept_epoch_chosen_on_validation_under_a_cosine_schedule():
    # backprop with a tiny learning rate stays far below the local rule: the local rule is taken at
    # the epoch of ITS OWN full run (cosine schedule over 4 epochs) whose validation accuracy is closest
    cfg = tiny_cfg("mnist-3v5", "backprop.lr=1e-6", "train.lr=0.2", "train.lr_schedule=\"cosine\"")
    res = E.run_grid({"mnist-3v5": cfg}, tiny(seeds=1, frontier_seeds=0, epochs=4, methods=("local", "backprop")))
    rows = {r["method"]: r for r in res["rows"]}
    (m,) = res["matched"]
    assert m["stopped_method"] == "local" and m["reference_method"] == "backprop"
    hist = rows["local"]["history"]
    target = rows["backprop"]["val_accuracy"]
    gaps = [abs(h["val_accuracy"] - target) for h in hist]
    assert m["stopped_epoch"] == int(np.argmin(gaps)) + 1 < 4
    # the kept weights of that epoch, not a retrain with a squeezed schedule: same test accuracy as the history
    assert m["clean_accuracy"]["local"] == pytest.approx(hist[m["stopped_epoch"] - 1]["test_accuracy"])
    assert m["clean_accuracy"]["backprop"] == pytest.approx(rows["backprop"]["clean_accuracy"])
    # matched comparisons read the worst case only (attacked survivors-only) and the certified bound
    assert set(m["robust_accuracy"]["local"]) == set(m["robust_accuracy"]["backprop"]) == {"worst", "certified"}
    assert res["matched_comparisons"][0]["seeds"] == [0]


def test_resume_reuses_finished_units_and_gives_the_same_results(tmp_path):
    cfg = tiny_cfg("iris-1v2", "frontier.local_weight_decay=[]", "frontier.local_epochs=[]",
                   "frontier.local_lr=[]", "frontier.backprop_weight_decay=[0.0, 0.1]")
    s = tiny(methods=("local", "backprop"))
    full = E.run_grid({"iris-1v2": cfg}, s, out=tmp_path)
    units = sorted((tmp_path / "units" / "iris-1v2").glob("*.json"))
    # the frontier's local point and its weight-decay-0 backprop point are panel models: no units of their own
    assert [u.name for u in units] == ["frontier-backprop:weight_decay=0.1-seed0.json", "panel-seed0.json",
                                       "panel-seed1.json"]
    assert [p["point"] for p in full["frontier"]["iris-1v2"]["points"]] == [
        "backprop:weight_decay=0.0", "backprop:weight_decay=0.1", "local"]
    # every panel model is kept beside its unit, readable as a run directory (localstdp evaluate --run)
    from localstdp.data import load_dataset
    from localstdp.train import accuracy, load_run

    for row in full["rows"]:
        rcfg, model, learner = load_run(tmp_path / "units" / "iris-1v2" / f"panel-seed{row['seed']}" / row["method"])
        assert learner == row["method"] and rcfg.train.seed == row["seed"]
        ds = load_dataset(rcfg.data)
        assert accuracy(model, ds.x_test, ds.y_test) == pytest.approx(row["clean_accuracy"])
    units[1].unlink()  # as if stopped during that unit
    stamp = units[2].stat().st_mtime_ns
    again = E.run_grid({"iris-1v2": cfg}, s, out=tmp_path, resume=True)
    assert units[2].stat().st_mtime_ns == stamp and units[1].exists()  # reused, and re-made
    assert again["settings"]["units_resumed"] == 2
    assert _numbers(again) == _numbers(full)
    assert again["comparisons"] == full["comparisons"] and again["frontier"] == full["frontier"]
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=0.3))
    with pytest.raises(LocalSTDPError, match="other settings"):
        E.run_grid({"iris-1v2": other}, s, out=tmp_path, resume=True)


def test_a_stopped_unit_keeps_its_finished_parts_and_resume_gives_the_same_results(tmp_path, monkeypatch, capsys):
    # a panel unit is one part per method, each written as it finishes: stopped in its third model,
    # the run keeps the two before it, and the resumed run trains only the rest, with the same numbers
    from localstdp.evaluation import units

    cfg = tiny_cfg("iris-1v2", "frontier.local_weight_decay=[]", "frontier.local_epochs=[]",
                   "frontier.local_lr=[]", "frontier.backprop_weight_decay=[0.0]", "backprop.lr=1e-4")
    s = tiny(seeds=1, methods=("local", "backprop", "backprop-wd", "fa"))
    full = E.run_grid({"iris-1v2": cfg}, s)  # no out: the parts live in a temporary directory
    assert len(full["matched"]) >= 1  # backprop at a tiny rate: the matched comparison is in a part
    trained = []
    real = units.train_method

    def stop_at_third(cfg, method, *a, **kw):
        if len(trained) == 2:
            raise KeyboardInterrupt
        trained.append(method)
        return real(cfg, method, *a, **kw)

    monkeypatch.setattr(units, "train_method", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        E.run_grid({"iris-1v2": cfg}, s, out=tmp_path)
    unit = tmp_path / "units" / "iris-1v2" / "panel-seed0"
    assert not unit.with_suffix(".json").exists()
    kept = sorted(p.parent.name for p in unit.glob("*/part.safetensors"))
    assert kept == sorted(trained) and trained[0] == "local"  # the local rule's part comes first
    real_grid = grid.run_grid
    monkeypatch.setattr(grid, "run_grid", lambda *a, **kw: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert main(["reproduce", "--tasks", "iris-1v2", "--out", str(tmp_path), "--no-progress"]) == 130
    assert "0 finished unit(s) and 2 finished model(s) of unfinished units kept" in capsys.readouterr().err
    monkeypatch.setattr(grid, "run_grid", real_grid)
    trained.clear()
    monkeypatch.setattr(units, "train_method", lambda cfg, method, *a, **kw: trained.append(method) or real(
        cfg, method, *a, **kw))
    again = E.run_grid({"iris-1v2": cfg}, s, out=tmp_path, resume=True)
    assert sorted(trained) == sorted(set(s.methods) - set(kept))
    assert again["settings"]["parts_resumed"] == 2 and again["settings"]["units_resumed"] == 0
    assert _numbers(again) == _numbers(full) and again["matched"] == full["matched"]
    assert again["comparisons"] == full["comparisons"]
    # the unit is written and its parts' attack data removed; every model stays readable
    assert unit.with_suffix(".json").exists() and not list(unit.glob("*/part.safetensors"))
    assert sorted(p.parent.name for p in unit.glob("*/model.safetensors")) == sorted(s.methods)
    # a part made by other settings is refused, not mixed in
    E.run_grid({"iris-1v2": cfg}, s, out=tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(units, "train_method", stop_at_third)
        trained.clear()
        E.run_grid({"iris-1v2": cfg}, s, out=tmp_path / "b")
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=0.3))
    with pytest.raises(LocalSTDPError, match="other settings"):
        E.run_grid({"iris-1v2": other}, s, out=tmp_path / "b", resume=True)


def test_two_jobs_give_the_numbers_of_one(tmp_path):
    # steps run in two worker processes, the largest ready first, each reading the local rule's part
    cfg = tiny_cfg("iris-1v2", "frontier.local_weight_decay=[]", "frontier.local_epochs=[]",
                   "frontier.local_lr=[]", "frontier.backprop_weight_decay=[0.0, 0.1]", "backprop.lr=1e-4")
    s = tiny(seeds=2, methods=("local", "backprop", "ff"))
    one = E.run_grid({"iris-1v2": cfg}, s, out=tmp_path / "one")
    two = E.run_grid({"iris-1v2": cfg}, s, out=tmp_path / "two", jobs=2)
    assert _numbers(two) == _numbers(one) and two["matched"] == one["matched"]
    assert two["frontier"] == one["frontier"] and two["comparisons"] == one["comparisons"]


def test_cost_model_orders_the_steps_largest_first():
    # ff scores every label with its own pass (and trains on two): its step costs the most of a seed
    from localstdp.data import load_dataset

    cfg = E.task_config("mnist-3v5")
    ds = load_dataset(cfg.data)
    s = E.GridSettings(seeds=1, methods=("local", "backprop", "ff"), n_attack=500)
    flops = E.forward_flops(cfg, ds)
    widths = [ds.n_features, *cfg.model.hidden, ds.n_classes]
    assert flops == pytest.approx(2 * sum(a * b for a, b in zip(widths, widths[1:])), rel=0.01)
    c = {m: E.step_cost(cfg, ds, s, m, 8, flops) for m in s.methods}
    n_eval = len(ds.y_train) + len(ds.y_val) + len(ds.y_test)
    attack = min(500, len(ds.y_test)) * 8 * E.ATTACK_PASSES
    assert c["backprop"] == pytest.approx(flops * (cfg.train.epochs * (len(ds.y_train) * 3 + n_eval) + attack))
    assert c["ff"] > c["backprop"]
    assert E.step_cost(cfg, ds, s, "backprop", 2, flops) < c["backprop"]


def _pt(clean, rob, c_half=0.01, r_half=0.01):
    return {"clean": {"mean": clean, "ci95": [clean - c_half, clean + c_half]},
            "worst": {"0.1": {"mean": rob, "ci95": [rob - r_half, rob + r_half]}}}


def test_frontier_verdict_on_hand_made_points():
    bp = [_pt(0.95, 0.20), _pt(0.93, 0.40), _pt(0.90, 0.55)]
    assert frontier_verdict(_pt(0.94, 0.45), bp, "0.1") == "above"  # beats every backprop point this accurate
    assert frontier_verdict(_pt(0.94, 0.30), bp, "0.1") == "below"  # 0.93 within CI, 0.40 beyond both CIs
    assert frontier_verdict(_pt(0.94, 0.405), bp, "0.1") == "on"
    # backprop never that accurate: an empty comparison (issue 23; tests/test_frontier_verdict.py)
    assert frontier_verdict(_pt(0.98, 0.10, c_half=0.005), bp, "0.1") == "not comparable"
    assert frontier_verdict(_pt(0.89, 0.50), bp, "0.1") == "below"  # 0.90/0.55 dominates


def test_reproduce_usage_errors_are_one_line(capsys):
    assert main(["reproduce", "--methods", "local", "sgd", "--out", "x", "--tasks", "iris-1v2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown method(s) sgd" in err
    assert main(["reproduce", "--methods", "backprop", "--out", "x", "--tasks", "iris-1v2"]) == 2
    assert "must include local" in capsys.readouterr().err


def test_frontier_rows_derived_from_the_panel_equal_running_the_frontier_unit():
    from localstdp.data import load_dataset
    from localstdp.evaluation.units import frontier_row_from_panel, frontier_unit, panel_unit

    cfg = tiny_cfg("mnist-3v5")
    s = tiny(seeds=1, methods=("local", "backprop"), epochs=2)
    ds = load_dataset(cfg.data)
    panel = panel_unit("mnist-3v5", cfg, ds, 0, s)["rows"]
    for point in E.frontier_points(cfg):
        m = E.from_panel(point, cfg)
        if m is None:
            continue
        ran = frontier_unit("mnist-3v5", cfg, ds, point, 0, s)["rows"][0]
        derived = frontier_row_from_panel(next(r for r in panel if r["method"] == m), point, s.frontier_eps)
        keep = ("robust_accuracy", "per_example", "clean_accuracy", "val_accuracy", "point", "knob", "value", "epoch")
        assert {k: derived[k] for k in keep} == {k: ran[k] for k in keep}, point
    assert {E.from_panel(p, cfg) for p in E.frontier_points(cfg)} == {None, "local", "backprop"}


def test_every_unit_of_a_run_records_where_its_time_went(tiny_run):
    """issue 32: each unit record carries its phases (bench --reproduce sums them); a panel unit's are its
    parts' (train, attack, certify, val_attack, diagnostics, the matched comparisons) plus the transfer."""
    from localstdp.bench.reproduce import profile_run

    out, res = tiny_run
    prof = profile_run(out)
    assert prof["units"] == len(list((out / "units").glob("*/*.json"))) and prof["units_without_phases"] == 0
    panel = prof["kinds"]["panel"]
    assert panel["units"] == 2 * len(TASKS)
    assert {"train", "attack", "certify", "val_attack", "diagnostics", "transfer"} <= set(panel["phases"])
    assert all(v > 0 for v in panel["phases"].values())
    assert {"train", "attack", "val_attack"} <= set(prof["kinds"]["frontier local"]["phases"])
    # the phases are the steps' work: less than the run's wall time (one process here), most of it
    assert 0.5 * res["settings"]["wall_seconds"] < prof["phase_seconds"] < res["settings"]["wall_seconds"]
