"""Choosing on the validation split: the grid, the choice, the outputs, and that the test split is
never read; the panel's methods (backprop-mse's loss, rule.weight_decay) against direct references."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from localstdp.cli import main
from localstdp.config import ExperimentConfig, config_from_dict, parse_set
from localstdp.data import load_dataset
from localstdp.errors import ConfigError
from localstdp.evaluation.methods import closest_epoch, method_config, selected_epoch
from localstdp.evaluation.plan import task_config
from localstdp.evaluation.tune import apply_point, parse_grid, tune
from localstdp.model import build_model
from localstdp.rules import LEARNERS, RuleParams
from localstdp.rules.backprop import BackpropParams
from localstdp.train import train


def test_parse_grid_and_set():
    assert parse_grid(["train.lr=0.05,0.1", "model.hidden=[8, 4],[16]"]) == {
        "train.lr": [0.05, 0.1], "model.hidden": [[8, 4], [16]]}
    assert parse_grid(['train.lr_schedule="constant","cosine"'])["train.lr_schedule"] == ["constant", "cosine"]
    for bad in (["train.lr"], ["lr=0.1"], ["train.lr=0.1,0.1"], []):
        with pytest.raises(ConfigError):
            parse_grid(bad)
    assert parse_set("train.lr=0.2") == {"train": {"lr": 0.2}}
    assert parse_set("train.lr_schedule=cosine") == {"train": {"lr_schedule": "cosine"}}  # bare string
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_set("lr=0.1")


def test_methods_tables_validate_and_apply():
    cfg = task_config("mnist-3v5")
    wd = cfg.with_sets(["methods.backprop-wd.backprop.weight_decay=0.02"])
    assert method_config(wd, "backprop-wd").backprop.weight_decay == 0.02
    assert method_config(wd, "backprop").backprop.weight_decay == 0.0  # plain backprop is untouched
    assert config_from_dict(wd.to_dict()) == wd  # round trip through the file form
    with pytest.raises(ConfigError, match="unknown method"):
        cfg.with_sets(["methods.backprop-xx.backprop.lr=0.1"])
    with pytest.raises(ConfigError, match="backprop.weight_decay"):
        cfg.with_sets(["methods.backprop-wd.backprop.weight_decay=-1"])
    no_wd = dataclasses.replace(cfg, methods={})
    with pytest.raises(ConfigError, match="backprop-wd needs a weight decay"):
        method_config(no_wd, "backprop-wd")
    pt = apply_point(cfg, "backprop-mse", {"backprop.lr": 0.003})
    assert pt.methods["backprop-mse"]["backprop"]["lr"] == 0.003 and pt.backprop.lr == cfg.backprop.lr
    assert apply_point(cfg, "local", {"train.lr": 0.3}).train.lr == 0.3


def test_epoch_selection_uses_validation_only():
    hist = [{"val_accuracy": v, "test_accuracy": t} for v, t in ((0.8, 0.99), (0.9, 0.5), (0.9, 0.6), (0.85, 0.7))]
    assert selected_epoch(hist, early_stop=False) == 4
    assert selected_epoch(hist, early_stop=True) == 2  # best validation, earliest tie; test ignored
    assert closest_epoch(hist, 0.86) == 4 and closest_epoch(hist, 0.1) == 1
    with pytest.raises(ConfigError, match="validation split"):
        selected_epoch([{"val_accuracy": None}], early_stop=True)


def test_tune_chooses_by_validation_and_never_reads_the_test_split(tmp_path):
    cfg = task_config("iris-1v2").with_overrides(epochs=3)
    ds = load_dataset(cfg.data)
    poisoned = dataclasses.replace(ds, x_test=torch.full_like(ds.x_test, float("nan")))  # reading it would fail
    res = tune(cfg, "local", {"train.lr": [0.05, 1.0]}, seeds=2, dataset=poisoned)
    assert res["n_val"] == len(ds.y_val) == 21
    for p in res["points"]:  # each score is the mean final-epoch validation accuracy of a direct run
        vals = [train(cfg.with_overrides(lr=p["point"]["train.lr"], seed=s), "local", None,
                      dataset=ds)["val_accuracy"] for s in (0, 1)]
        assert p["val_accuracy"] == pytest.approx(vals) and p["mean"] == pytest.approx(sum(vals) / 2)
    best = max(res["points"], key=lambda p: p["mean"])
    assert res["chosen"] == best["point"] and res["config"]["train"]["lr"] == best["point"]["train.lr"]


def test_tune_cli_writes_json_table_and_config(tmp_path, capsys):
    rc = main(["tune", "--config", "configs/iris.toml", "--rule", "backprop-wd", "--grid",
               "backprop.weight_decay=0.001,0.1", "--seeds", "1", "--epochs", "2", "--out", str(tmp_path),
               "--no-progress"])
    assert rc == 0
    rec = json.loads((tmp_path / "tune.json").read_text())
    assert rec["method"] == "backprop-wd" and len(rec["points"]) == 2
    chosen = rec["chosen"]["backprop.weight_decay"]
    from localstdp.config import load_config

    back = load_config(tmp_path / "config.toml")
    assert method_config(back, "backprop-wd").backprop.weight_decay == chosen
    assert "(chosen)" in (tmp_path / "tune.md").read_text()
    assert main(["tune", "--config", "configs/iris.toml", "--rule", "local", "--grid", "train.lr=-1,0.1",
                 "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "train.lr" in capsys.readouterr().err


def test_backprop_mse_loss_and_gradient_match_a_direct_formula():
    torch.manual_seed(0)
    model = build_model(6, [5], 3, "sigmoid", seed=0)
    ref = build_model(6, [5], 3, "sigmoid", seed=0)
    learner = LEARNERS["backprop-mse"](model, BackpropParams(optimizer="sgd", lr=0.1, momentum=0.0), 3, 0,
                                       a_hi=0.8, a_lo=0.2)
    x, y = torch.rand(4, 6), torch.tensor([0, 2, 1, 2])
    d = torch.full((4, 3), 0.2)
    d[torch.arange(4), y] = 0.8
    loss_ref = ((torch.sigmoid(ref(x)) - d) ** 2).sum(1).mean()
    grads = torch.autograd.grad(loss_ref, list(ref.parameters()))
    loss = learner.step(x, y)
    assert loss == pytest.approx(float(loss_ref.detach()))
    for p, p0, g in zip(model.parameters(), ref.parameters(), grads):
        torch.testing.assert_close(p, p0 - 0.1 * g)


def test_rule_weight_decay_shrinks_each_synapse_before_the_update():
    model = build_model(6, [5], 2, "sigmoid", seed=1)
    plain = build_model(6, [5], 2, "sigmoid", seed=1)
    x, y = torch.rand(8, 6), torch.randint(0, 2, (8,))
    LEARNERS["local"](plain, RuleParams(eta=0.5), 2, 0).step(x, y)
    w0 = [l.weight.detach().clone() for l in model.layers]
    LEARNERS["local"](model, RuleParams(eta=0.5, weight_decay=0.1), 2, 0).step(x, y)
    for l, lp, w in zip(model.layers, plain.layers, w0):
        # decayed weight + the same update (the update depends on activities, computed before the step)
        torch.testing.assert_close(l.weight, lp.weight - 0.5 * 0.1 * w)
    with pytest.raises(ConfigError, match="weight_decay"):
        RuleParams(weight_decay=-0.1)


def test_backprop_mse_trains_from_the_cli(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--config", "configs/iris.toml", "--rule", "backprop-mse", "--epochs", "2", "--out",
                 str(out), "--no-progress", "--set", "backprop.lr=0.01"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "backprop-mse" and m["n_val"] == 21 and m["history"][-1]["val_accuracy"] is not None
    assert isinstance(ExperimentConfig().evaluation.equivalence_margin, float)
