"""The shallow baselines of the panel (issue 23, rules/shallow.py): ``linear`` is L2-regularised
multinomial logistic regression on the pixels (checked against scikit-learn's optimum), its attacked
worst case and certified accuracy both equal its EXACT worst case (closed form: a linear score's worst
L-inf perturbation in the [0, 1] box is per pixel); ``random-features`` trains the readout of the
task's network on hidden layers frozen at initialisation; both are panel methods (L2 required,
frontier points along their L2, derived rows equal running the frontier unit)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from localstdp import evaluation as E
from localstdp.cli import main
from localstdp.data import load_dataset
from localstdp.errors import ConfigError
from localstdp.evaluation.points import point_config
from localstdp.evaluation.units import frontier_row_from_panel, frontier_unit, panel_unit, train_method
from localstdp.model import build_model, build_network
from localstdp.registry import DEFAULT_METHODS
from localstdp.robustness import AttackSettings
from localstdp.robustness.bounds import certified_correct
from localstdp.robustness.suite import add_worst, attack_suite, eps_key
from localstdp.rules.shallow import readout_features, readout_layer
from localstdp.train import load_run, train

WD = 0.01
SETS = [f"methods.linear.backprop.weight_decay={WD}", f"methods.random-features.backprop.weight_decay={WD}"]


@pytest.fixture(scope="module")
def mnist():
    cfg = E.task_config("mnist-3v5").with_sets(SETS)
    return cfg, load_dataset(cfg.data)


@pytest.fixture(scope="module")
def linear(mnist):
    cfg, ds = mnist
    return train_method(cfg, "linear", ds, seed=0, epochs=8)


def exact_robust(model, x: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    """Per example, EXACTLY whether every x' in the eps-box of x within [0, 1]^d keeps z_y > z_j for
    every j != y: the margin (w_y - w_j).x' + b_y - b_j is minimised pixel by pixel, each pixel at the
    end of its interval [max(0, x - eps), min(1, x + eps)] against the sign of its weight."""
    W, b = (t.detach().double().numpy() for t in (model.layers[0].weight, model.layers[0].bias))
    lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
    ok = np.ones(len(y), bool)
    for j in range(W.shape[0]):
        d = W[y] - W[j]  # (n, d)
        worst = np.where(d > 0, d * lo, d * hi).sum(1) + b[y] - b[j]
        ok &= (j == y) | (worst > 0)
    return ok


def test_linear_is_l2_logistic_regression_at_sklearn_optimum(mnist, linear):
    from sklearn.linear_model import LogisticRegression

    cfg, ds = mnist
    m = linear.model
    assert m.widths == [784, 2] and len(m.layers) == 1 and linear.cfg.backprop.weight_decay == WD
    x, y = ds.x_train.double().numpy(), ds.y_train.numpy()
    # softmax with two rows, L2 (wd/2)(|w0|^2 + |w1|^2), bias free == binary logistic on v = w1 - w0 with
    # penalty (wd/4)|v|^2 == scikit-learn's C sum(CE) + |v|^2 / 2 at C = 2 / (wd n)
    ref = LogisticRegression(C=2 / (WD * len(y)), tol=1e-10, max_iter=5000).fit(x, y)
    W, b = m.layers[0].weight.detach().double().numpy(), m.layers[0].bias.detach().double().numpy()
    np.testing.assert_allclose(W[1] - W[0], ref.coef_[0], atol=2e-3)
    xt = ds.x_test.double().numpy()
    ours = xt @ (W[1] - W[0]) + b[1] - b[0]
    np.testing.assert_allclose(ours, ref.decision_function(xt), atol=1e-2)
    assert np.mean((ours > 0) == ds.y_test.numpy()) == pytest.approx(ref.score(xt, ds.y_test.numpy()), abs=1 / len(xt))
    assert 0.9 < ref.score(xt, ds.y_test.numpy()) < 1.0


def test_linear_certified_and_attacked_worst_case_equal_the_exact_worst_case(mnist, linear):
    cfg, ds = mnist
    idx = E.attack_indices(len(ds.y_test), 150)
    x, y = ds.x_test[idx].numpy(), ds.y_test[idx].numpy()
    eps = (0.05, 0.1)
    res = attack_suite(linear.model, x, y, ds.input_shape, ds.n_classes,
                       AttackSettings(eps=eps, pgd_steps=10, pgd_restarts=1, square_queries=20, apgd_steps=10), seed=0)
    add_worst(res)
    clean = res.clean.mean()
    for e in eps:
        exact = exact_robust(linear.model, x, y, e)
        assert 0.3 < exact.mean() < clean  # the eps matters, and not everything breaks
        np.testing.assert_array_equal(certified_correct(linear.model, x, y, e), exact)  # bounds: exact for a linear score
        np.testing.assert_array_equal(res.correct["worst"][eps_key(e)], exact)  # FGSM's step IS the worst point (2 classes)


def test_certified_is_exact_for_a_multiclass_linear_model():
    m = build_model(20, [], 4, "sigmoid", seed=3)
    x = np.random.default_rng(0).random((400, 20)).astype(np.float32)
    y = m(torch.from_numpy(x)).argmax(1).numpy()  # clean-correct everywhere: the eps decides
    for e in (0.01, 0.03, 0.1):
        exact = exact_robust(m, x, y, e)
        assert 0 < exact.mean() < 1
        np.testing.assert_array_equal(certified_correct(m, x, y, e), exact)


def test_random_features_trains_only_the_readout(mnist):
    cfg, ds = mnist
    t = train_method(cfg, "random-features", ds, seed=1, epochs=3)
    init = build_network(cfg.model, ds.n_features, ds.n_classes, 1)
    assert t.model.widths == init.widths == [784, *cfg.model.hidden, 2]
    for a, b in zip(t.model.layers[:-1], init.layers[:-1]):  # hidden layers exactly as initialised
        torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=0)
        torch.testing.assert_close(a.bias, b.bias, rtol=0, atol=0)
    assert (t.model.layers[-1].weight - init.layers[-1].weight).abs().max() > 0.1
    head, feats = readout_layer(t.model), readout_features(t.model, ds.x_train)
    torch.testing.assert_close(head(feats), t.model(ds.x_train))
    # the readout is at the optimum of mean CE + (wd/2)|W|^2 on those features: its gradient is ~0
    w, b = head.weight.detach().clone().requires_grad_(), head.bias.detach().clone().requires_grad_()
    loss = torch.nn.functional.cross_entropy(feats @ w.T + b, ds.y_train) + 0.5 * WD * (w * w).sum()
    gw, gb = torch.autograd.grad(loss, (w, b))
    assert float(gw.abs().max()) < 1e-3 and float(gb.abs().max()) < 1e-3
    assert 0.8 < t.metrics["history"][-1]["val_accuracy"] <= 1.0


def test_panel_methods_need_their_l2_and_sweep_it_on_the_frontier(mnist):
    cfg, _ = mnist
    shipped = E.task_config("mnist-3v5")  # ships both L2 strengths (chosen on validation): take them out
    bare = dataclasses.replace(shipped, methods={k: v for k, v in shipped.methods.items()
                                                 if k not in ("linear", "random-features")})
    for m in ("linear", "random-features"):
        with pytest.raises(ConfigError, match=f"{m} needs its L2 strength chosen on validation"):
            E.method_config(bare, m)
        assert E.method_config(cfg, m).backprop.weight_decay == WD
    assert E.resolve_methods(None) == list(DEFAULT_METHODS) and "linear" not in DEFAULT_METHODS  # opt-in only
    f = dataclasses.replace(cfg.frontier, linear_l2=[0.001, WD], readout_l2=[0.1])
    cfg = dataclasses.replace(cfg, frontier=f)
    names = [E.point_name(p) for p in E.frontier_points(cfg, ("local", "backprop", "linear", "random-features"))]
    assert names[-3:] == ["linear:l2=0.001", f"linear:l2={WD}", "random-features:l2=0.1"]
    assert not any(n.startswith(("linear", "random")) for n in map(E.point_name, E.frontier_points(cfg)))
    pts = E.frontier_points(cfg, ("local", "linear", "random-features"))
    assert {E.point_name(p): E.from_panel(p, cfg) for p in pts if p["method"] != "local"
            and p["method"] != "backprop"} == {"linear:l2=0.001": None, f"linear:l2={WD}": "linear",
                                                "random-features:l2=0.1": None}
    for p in pts:
        if p["method"] in ("linear", "random-features"):
            assert E.method_config(point_config(cfg, p), p["method"]).backprop.weight_decay == p["value"]


def test_linear_frontier_row_from_the_panel_equals_running_it(mnist):
    cfg, ds = mnist
    s = E.GridSettings(seeds=1, frontier_seeds=1, epochs=1, n_attack=12, n_boot=200, methods=("local", "linear"),
                       attacks=AttackSettings(pgd_steps=3, pgd_restarts=1, square_queries=5, autoattack=False))
    rows = panel_unit("mnist-3v5", cfg, ds, 0, s)["rows"]
    lin = next(r for r in rows if r["method"] == "linear")
    assert "certified" in lin["robust_accuracy"] and lin["clean_accuracy"] > 0.85
    point = next(p for p in E.frontier_points(cfg, s.methods) if E.from_panel(p, cfg) == "linear")
    ran = frontier_unit("mnist-3v5", cfg, ds, point, 0, s)["rows"][0]
    derived = frontier_row_from_panel(lin, point, s.frontier_eps)
    keep = ("robust_accuracy", "per_example", "clean_accuracy", "val_accuracy", "point", "knob", "value")
    assert {k: derived[k] for k in keep} == {k: ran[k] for k in keep}


def test_train_cli_linear_writes_a_one_layer_model(tmp_path):
    out = tmp_path / "lin"
    assert main(["train", "--config", "configs/iris.toml", "--rule", "linear", "--epochs", "2", "--out", str(out),
                 "--no-progress", "--set", "backprop.weight_decay=0.01"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "linear" and m["widths"] == [4, 2] and m["test_accuracy"] > 0.8
    cfg, model, method = load_run(out)
    assert method == "linear" and len(model.layers) == 1
    ds = load_dataset(cfg.data)
    assert float((model.predict(ds.x_test) == ds.y_test).float().mean()) == pytest.approx(m["test_accuracy"])
    again = train(cfg, "linear", None, dataset=ds)  # deterministic: same weights, same accuracy
    assert again["test_accuracy"] == m["test_accuracy"]


def test_results_md_names_the_shallow_baselines_settings():
    from localstdp.evaluation.plan import _method_settings
    from localstdp.evaluation.report import _settings

    cfg = E.task_config("mnist-3v5")
    assert _settings(_method_settings(cfg, "linear")) == "L2 0.1, L-BFGS, full batch"
    assert _settings(_method_settings(cfg, "random-features")) == "L2 1e-05, L-BFGS, full batch"
