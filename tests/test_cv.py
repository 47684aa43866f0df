"""``localstdp cv`` (issue 23, item 9): nested repeated stratified cross-validation. The outer folds
are stratified, disjoint and cover every example once per repeat; scaling reads the training rows
only; the setting is chosen from the outer training part alone; the corrected resampled t interval
against a hand computation; bad input is one line; --resume reuses finished folds."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from localstdp.cli import main
from localstdp.config import load_config
from localstdp.data import load_dataset
from localstdp.errors import ConfigError
from localstdp.evaluation import cv as CV

GRIDS = {"local": {"train.lr": [0.05, 1.0]}, "backprop": {"backprop.lr": [0.001, 0.1]}}


@pytest.fixture(scope="module")
def cfg():
    return load_config("iris").with_sets(["train.epochs=8"])


@pytest.fixture(scope="module")
def ex(cfg):
    return CV.load_examples(cfg.data)


@pytest.fixture(scope="module")
def run(cfg, ex):
    return CV.cross_validate(cfg, ["local", "backprop"], GRIDS, repeats=1, folds=2, inner_folds=2, seed=0, examples=ex)


def test_all_examples_and_stratified_disjoint_covering_folds(cfg, ex):
    ds = load_dataset(cfg.data)
    assert len(ex.y) == len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 100
    assert np.bincount(ex.y).tolist() == [50, 50] and ex.divisor is None and ex.x.shape == (100, 4)
    splits = CV.outer_splits(ex.y, repeats=2, folds=5, seed=0)
    assert [(r, k) for r, k, _, _ in splits] == [(r, k) for r in range(2) for k in range(5)]
    for r in range(2):
        tests = [te for rr, _, _, te in splits if rr == r]
        assert sorted(np.concatenate(tests).tolist()) == list(range(100))  # every example once per repeat
        for _, _, tr, te in (s for s in splits if s[0] == r):
            assert not set(tr) & set(te) and len(tr) + len(te) == 100
            assert np.bincount(ex.y[te]).tolist() == [10, 10]  # stratified: 50/50 -> 10/10 per fold
    assert [te.tolist() for *_, te in splits[:5]] != [te.tolist() for *_, te in splits[5:]]  # repeats differ
    again = CV.outer_splits(ex.y, repeats=2, folds=5, seed=0)
    assert all(np.array_equal(a[3], b[3]) for a, b in zip(splits, again))  # seeded
    # inner folds: from the outer training part only, stratified, covering it once
    _, _, tr, te = splits[0]
    inner = CV.inner_splits(ex.y, tr, 3, seed=7)
    assert sorted(np.concatenate([va for _, va in inner]).tolist()) == sorted(tr.tolist())
    assert all(not set(a) & set(te) and not set(a) & set(b) for a, b in inner)
    assert all(abs(np.bincount(ex.y[va], minlength=2)[0] - np.bincount(ex.y[va], minlength=2)[1]) <= 1 for _, va in inner)


def test_scaling_reads_the_training_rows_only(ex):
    _, _, tr, te = CV.outer_splits(ex.y, 1, 5, 0)[0]
    ds = CV.fold_dataset(ex, tr, te)
    lo, hi = ex.x[tr].min(0), ex.x[tr].max(0)
    assert torch.allclose(ds.x_train.min(0).values, torch.zeros(4)) and torch.allclose(ds.x_train.max(0).values, torch.ones(4))
    by_hand = np.clip((ex.x[te] - lo) / (hi - lo), 0, 1)
    assert np.allclose(ds.x_test.numpy(), by_hand, atol=1e-6)
    assert ds.y_test.tolist() == ex.y[te].tolist() and len(ds.y_val) == 0
    # extreme test rows would stretch the min/max if they leaked into it: the training inputs do not move
    x = ex.x.copy()
    x[te[::2]], x[te[1::2]] = -1000.0, 1000.0
    leak = CV.fold_dataset(dataclasses.replace(ex, x=x), tr, te)
    assert torch.equal(leak.x_train, ds.x_train)
    assert leak.x_test[::2].eq(0).all() and leak.x_test[1::2].eq(1).all()  # clipped, not rescaled
    # a validation part is scaled with the training rows' statistics too
    with_val = CV.fold_dataset(ex, tr[:40], te, tr[40:])
    lo, hi = ex.x[tr[:40]].min(0), ex.x[tr[:40]].max(0)
    assert np.allclose(with_val.x_val.numpy(), np.clip((ex.x[tr[40:]] - lo) / (hi - lo), 0, 1), atol=1e-6)


def test_the_setting_is_chosen_inside_the_fold(cfg, ex, run):
    splits = CV.outer_splits(ex.y, 1, 2, 0)
    for f, (r, k, tr, te) in zip(run["outer_folds"], splits):
        assert f["test_index"] == te.tolist() and f["n_train"] == 50 and f["train_seed"] == cfg.train.seed + r
        for m, grid in GRIDS.items():
            rec = f["methods"][m]
            # an independent computation from the outer training rows alone gives the same scores and choice
            alone = CV.inner_select(cfg, m, grid, ex, tr, 2, CV._fold_seed(0, r, k), cfg.train.seed + r)
            assert alone["points"] == rec["points"] and alone["chosen"] == rec["chosen"]
            assert len(rec["points"]) == 2 and all(len(p["val_accuracy"]) == 2 for p in rec["points"])
            means = [p["mean"] for p in rec["points"]]
            assert not rec["tied"] and rec["chosen"] == rec["points"][int(np.argmax(means))]["point"]
            assert rec["chosen"] == {"local": {"train.lr": 1.0}, "backprop": {"backprop.lr": 0.1}}[m]
            assert rec["test_accuracy"] == pytest.approx(np.mean(rec["test_correct"]))
            assert len(rec["test_correct"]) == 50
        # the outer test fold's inputs and labels scrambled: the choice and its scores do not move
        x, y = ex.x.copy(), ex.y.copy()
        x[te], y[te] = x[te][::-1] * 3.0, 1 - y[te]
        scrambled = CV.run_fold(cfg, ["local", "backprop"], GRIDS, dataclasses.replace(ex, x=x, y=y), r, k, tr, te, 2, 0)
        for m in GRIDS:
            assert scrambled["methods"][m]["points"] == f["methods"][m]["points"]
            assert scrambled["methods"][m]["chosen"] == f["methods"][m]["chosen"]
    # the local rule learns the task at its chosen rate (not a chance-level run)
    assert run["summary"]["local"]["mean"] > 0.8 and run["summary"]["backprop"]["mean"] > 0.8


def test_corrected_t_by_hand():
    v = [0.90, 0.95, 1.00, 0.85]
    s = CV.corrected_t(v, n_train=80, n_test=20)
    # mean 0.925; s^2 = (0.025^2 * 2 + 0.075^2 * 2) / 3 = 0.0125 / 3; corrected: (1/4 + 20/80) s^2
    var = (0.25 + 0.25) * 0.0125 / 3
    t975 = 3.182446305284263  # Student t, 3 degrees of freedom
    assert s["mean"] == pytest.approx(0.925) and s["df"] == 3 and s["se"] == pytest.approx(math.sqrt(var))
    assert s["ci95"] == pytest.approx([0.925 - t975 * math.sqrt(var), 0.925 + t975 * math.sqrt(var)])
    assert s["ci95"] == pytest.approx([0.779742, 1.070258], abs=1e-6)
    assert s["t"] == pytest.approx(0.925 / math.sqrt(var)) and s["t"] == pytest.approx(20.2657, abs=1e-4)
    assert s["p_value"] == pytest.approx(2.6266e-4, abs=1e-8)
    d = CV.corrected_t([0.05, 0.0, -0.05, 0.05, 0.0], n_train=80, n_test=20)
    assert d["mean"] == pytest.approx(0.01) and d["t"] == pytest.approx(0.01 / math.sqrt(0.45 * 0.0017500000000000003))
    from scipy import stats

    assert d["p_value"] == pytest.approx(2 * stats.t.sf(d["t"], 4))
    flat = CV.corrected_t([0.9, 0.9, 0.9], 80, 20)
    assert flat["ci95"] == pytest.approx([0.9, 0.9]) and flat["p_value"] is None


def test_summary_is_computed_from_the_folds(run):
    folds = run["outer_folds"]
    for m in ("local", "backprop"):
        acc = [f["methods"][m]["test_accuracy"] for f in folds]
        assert run["summary"][m]["mean"] == pytest.approx(np.mean(acc))
        assert sum(run["summary"][m]["chosen"].values()) == 2
    d = [f["methods"]["local"]["test_accuracy"] - f["methods"]["backprop"]["test_accuracy"] for f in folds]
    diff = run["differences"]["local - backprop"]
    assert diff["mean"] == pytest.approx(np.mean(d))
    assert diff["wins"] + diff["ties"] + diff["losses"] == 2
    assert "| local |" in CV.cv_markdown(run) and "local - backprop" in CV.cv_markdown(run)


@pytest.mark.parametrize("extra, message", [
    (["--methods", "local", "nonsense"], "unknown method"),
    (["--grid", "train.lr=0.1,0.2"], "expected method:section.key"),
    (["--grid", "local:lr=0.1"], "section.key"),
    (["--grid", "backprop:backprop.lr=0.1", "--methods", "local"], "not among --methods"),
    (["--folds", "1"], "folds = 1"),
    (["--inner-folds", "1"], "inner folds = 1"),
    (["--folds", "51"], "at least 51 examples of every class"),
    (["--folds", "2", "--inner-folds", "26"], "26 inner folds"),
])
def test_bad_input_is_one_line(tmp_path, capsys, extra, message):
    code = main(["cv", "--config", "iris", "--out", str(tmp_path / "o"), "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("localstdp: error:")
    assert not (tmp_path / "o" / "cv.json").exists()
    with pytest.raises(ConfigError):
        CV.parse_cv_grids(["local=train.lr=0.1"], ["local"])


def test_resume_reuses_finished_folds(tmp_path, capsys, monkeypatch):
    out = tmp_path / "cv"
    args = ["cv", "--config", "iris", "--repeats", "1", "--folds", "2", "--inner-folds", "2", "--set", "train.epochs=8",
            "--grid", "local:train.lr=0.05,1.0", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    first = json.loads((out / "cv.json").read_text())
    assert sorted(p.name for p in (out / "folds").iterdir()) == ["r00-f00.json", "r00-f01.json"]
    assert (out / "cv.md").read_text().startswith("# cv on iris: 1 x 2-fold")
    capsys.readouterr()
    # one fold lost, the other marked: a resumed run trains the lost one alone and keeps the marked one
    (out / "folds" / "r00-f01.json").unlink()
    kept = json.loads((out / "folds" / "r00-f00.json").read_text())
    marked = json.loads(json.dumps(kept))
    marked["methods"]["local"]["test_accuracy"] = 0.123
    (out / "folds" / "r00-f00.json").write_text(json.dumps(marked))
    calls = []
    real = CV.train
    monkeypatch.setattr(CV, "train", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert main([*args, "--resume"]) == 0
    second = json.loads((out / "cv.json").read_text())
    assert len(calls) == 2 * 2 + 1 + 1  # local: 2 points x 2 inner folds + the outer fit; backprop: no grid
    assert second["outer_folds"][0]["methods"]["local"]["test_accuracy"] == 0.123
    assert second["outer_folds"][1]["methods"] == first["outer_folds"][1]["methods"]  # retrained: the same
    # the unmarked fold back: the resumed result is the first run's
    (out / "folds" / "r00-f00.json").write_text(json.dumps(kept))
    calls.clear()
    assert main([*args, "--resume"]) == 0 and calls == []
    third = json.loads((out / "cv.json").read_text())
    assert third["summary"] == first["summary"] and third["differences"] == first["differences"]
    # another setup's folds are refused on --resume, and a fresh run (no --resume) replaces them
    capsys.readouterr()
    assert main([*args, "--seed", "1", "--resume"]) == 2
    assert "different cv setup" in capsys.readouterr().err
    assert main([*args, "--seed", "1"]) == 0 and len(calls) == 2 * 6
    assert json.loads((out / "cv.json").read_text())["seed"] == 1
