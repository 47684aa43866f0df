"""Ties in ``localstdp tune`` (issue 23, item 4a): grid order never decides. Points tied on mean
validation accuracy are separated by the lower mean validation cross-entropy, then by the middle of
the tie; tune.json and tune.md say which points tied and what decided."""

from __future__ import annotations

import json

import pytest
import torch

from localstdp.data import load_dataset
from localstdp.evaluation import tune as T
from localstdp.evaluation.plan import task_config
from localstdp.train import train


def _rows(accs, ces):
    return [{"point": {"train.lr": i}, "mean": a, "mean_cross_entropy": c} for i, (a, c) in enumerate(zip(accs, ces))]


def test_choose_breaks_ties_by_cross_entropy_then_the_middle():
    assert T.choose(_rows([0.90, 0.95, 0.93], [0.1, 0.9, 0.2])) == (1, [1], "validation accuracy")
    i, tied, by = T.choose(_rows([0.95, 0.95, 0.95, 0.90], [0.30, 0.20, 0.25, 0.01]))
    assert (i, tied) == (1, [0, 1, 2]) and "cross-entropy among 3 points tied" in by  # not the first grid point
    # the same points in the reverse grid order: the same point wins
    rev = _rows([0.90, 0.95, 0.95, 0.95], [0.01, 0.25, 0.20, 0.30])
    assert T.choose(rev)[0] == 2
    # tied on both: the middle of the tie (the lower middle of an even count), whatever comes first
    assert T.choose(_rows([0.9, 0.95, 0.95, 0.95, 0.9], [0.5, 0.2, 0.2, 0.2, 0.1]))[0] == 2
    assert T.choose(_rows([0.95] * 4, [0.2] * 4))[0] == 1
    assert T.choose(_rows([0.95, 0.95 + 1e-12], [0.3, 0.2]))[0] == 1  # float noise in the mean is no difference


class _Fixed(torch.nn.Module):
    """Returns given validation logits (tune scores the validation split in one batch)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[: len(x)]


def test_tune_records_the_tie_and_chooses_by_cross_entropy(monkeypatch, tmp_path):
    cfg = task_config("iris-1v2").with_overrides(epochs=1)
    ds = load_dataset(cfg.data)
    onehot = torch.nn.functional.one_hot(ds.y_val, 2).float()
    margin = {0.05: 1.0, 0.1: 3.0, 0.2: 2.0, 0.4: 5.0}  # the margin each point's fake model gives the true class
    acc = {0.05: 0.9, 0.1: 0.9, 0.2: 0.9, 0.4: 0.8}

    def fake_train(c, learner, out, dataset=None, keep_epochs=False):
        lr = c.train.lr
        return {"history": [{"val_accuracy": acc[lr]}], "model": _Fixed(margin[lr] * onehot)}

    monkeypatch.setattr(T, "train", fake_train)
    res = T.tune(cfg, "local", {"train.lr": list(margin)}, seeds=2, dataset=ds)
    assert res["tied"] == [{"train.lr": 0.05}, {"train.lr": 0.1}, {"train.lr": 0.2}]
    assert res["chosen"] == {"train.lr": 0.1}  # the lowest cross-entropy of the tie (grid order would take 0.05)
    ce = {r["point"]["train.lr"]: r["mean_cross_entropy"] for r in res["points"]}
    assert ce[0.1] == pytest.approx(float(torch.nn.functional.softplus(torch.tensor(-3.0, dtype=torch.float64))))
    assert ce[0.05] > ce[0.2] > ce[0.1] > ce[0.4]  # 0.4 has the lowest, but is not tied on accuracy
    T.write_tune(res, tmp_path)
    rec = json.loads((tmp_path / "tune.json").read_text())
    assert rec["tied"] == res["tied"] and rec["chosen_by"].startswith("validation cross-entropy among 3")
    md = (tmp_path / "tune.md").read_text()
    assert md.count("(tied)") == 2 and "**(chosen)**" in md
    assert "Tied on validation accuracy: train.lr=0.05, train.lr=0.1, train.lr=0.2" in md and T.TIE_RULE in md


def test_cross_entropy_is_the_trained_models_own(tmp_path):
    cfg = task_config("iris-1v2").with_overrides(epochs=2)
    ds = load_dataset(cfg.data)
    res = T.tune(cfg, "backprop-es", {"backprop.lr": [0.01]}, seeds=1, dataset=ds)
    mcfg = T.method_config(T.apply_point(cfg, "backprop-es", {"backprop.lr": 0.01}), "backprop-es")
    m = train(mcfg.with_overrides(seed=0), "backprop", None, dataset=ds, keep_epochs=True)
    e = res["points"][0]["epochs"][0]
    m["model"].load_state_dict(m["epoch_states"][e - 1])  # the early-stopped epoch's weights
    with torch.no_grad():
        ce = float(torch.nn.functional.cross_entropy(m["model"](ds.x_val).double(), ds.y_val))
    assert res["points"][0]["val_cross_entropy"][0] == pytest.approx(ce, rel=1e-9)
    assert 0 < ce < 1 and res["tied"] == [] and res["chosen_by"] == "validation accuracy"
