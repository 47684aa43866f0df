"""Training for robustness (issue 33; rules/robust.py): input noise, PGD adversarial training, TRADES and the
local rule on adversarial examples of its own model, as a config section, panel methods, frontier knobs and
validation-selection families. Every hand-written piece is checked against a direct reference: the PGD
against one with the analytic input gradient of a linear model, TRADES' step against autograd of the
written-out objective and a fresh Adam, the noise against the generator's own draws."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from localstdp.config import load_config
from localstdp.data import load_dataset
from localstdp.errors import ConfigError
from localstdp.evaluation.methods import PANEL, method_config
from localstdp.evaluation.plan import _method_settings
from localstdp.evaluation.points import from_panel, frontier_points, point_config, point_name
from localstdp.model import build_model
from localstdp.rules.backprop import Backprop, BackpropParams
from localstdp.rules.robust import SEED_OFFSET, Hardened, RobustParams, craft, harden, trades_loss
from localstdp.train import Interrupted, make_learner, train


def _linear(seed=0, n_in=6, k=3):
    torch.manual_seed(seed)
    return nn.Linear(n_in, k).double()


def _reference_pgd(w, b, x, y, eps, steps, step, start):
    """PGD with the closed-form input gradient of sum CE(Wx + b, y): W^T (softmax(z) - onehot(y))."""
    xa = start.clone()
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    xa = torch.max(torch.min(xa, hi), lo)
    onehot = torch.eye(w.shape[0], dtype=x.dtype)[y]
    for _ in range(steps):
        g = (torch.softmax(xa @ w.T + b, 1) - onehot) @ w
        xa = torch.max(torch.min(xa + step * g.sign(), hi), lo)
    return xa


def test_craft_is_pgd_with_the_exact_input_gradient():
    net = _linear()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(40, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    start = x + 0.1 * (2 * torch.rand(x.shape, generator=g, dtype=torch.float64) - 1)
    got = craft(net, x, y, 0.1, 5, 0.03, start)
    ref = _reference_pgd(net.weight.detach(), net.bias.detach(), x, y, 0.1, 5, 0.03, start)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    assert (got - x).abs().max() <= 0.1 + 1e-12 and got.min() >= 0 and got.max() <= 1
    assert net.weight.grad is None  # the attack reads no parameter gradient and leaves none
    loss = lambda v: float(nn.functional.cross_entropy(net(v), y, reduction="sum").detach())
    assert loss(got) > loss(x) + 1.0  # it ascends the loss


def test_trades_step_is_autograd_of_the_written_out_objective_and_one_adam_step():
    model = build_model(6, [5], 3, "sigmoid", seed=0)
    twin = copy.deepcopy(model)
    params = BackpropParams(lr=0.01)
    rp = RobustParams(adv_eps=0.1, adv_steps=3, trades_beta=6.0)
    learner = Hardened(Backprop(model, params, 3), model, rp, seed=4)
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
    loss = learner.step(x, y)
    # the reference: the same draws from the generator, TRADES' objective written out, a fresh Adam
    gen = torch.Generator().manual_seed(4 + SEED_OFFSET)
    start = x + 0.001 * torch.randn(x.shape, generator=gen)
    with torch.no_grad():
        clean = twin(x)
    xa = craft(twin, x, y, 0.1, 3, 2.5 * 0.1 / 3, start, clean_logits=clean)
    p, q = torch.softmax(twin(x), 1), torch.softmax(twin(xa), 1)
    obj = nn.functional.cross_entropy(twin(x), y) + 6.0 * (p * (p.log() - q.log())).sum(1).mean()
    assert loss == pytest.approx(float(obj.detach()), rel=1e-5)
    torch.testing.assert_close(trades_loss(twin, x, xa, y, 6.0), obj, rtol=1e-5, atol=1e-7)
    opt = torch.optim.Adam(twin.parameters(), lr=0.01)
    obj.backward()
    opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["local", "backprop"])
def test_adversarial_training_shows_the_inner_learner_pgd_examples_of_the_current_model(method):
    cfg = load_config("mnist-3v5").with_sets(["robust.adv_eps=0.1", "robust.adv_steps=4"])
    ds = load_dataset(cfg.data)
    x, y = ds.x_train[:32], ds.y_train[:32]
    model = build_model(ds.n_features, [128, 64], 2, "sigmoid", seed=0)
    twin = copy.deepcopy(model)
    hard = harden(make_learner(method, model, cfg, 2), model, cfg.robust, seed=0)
    assert isinstance(hard, Hardened)
    plain = make_learner(method, twin, cfg, 2)
    for _ in range(2):  # two steps: the second batch is crafted against the model the first step changed
        gen_state = hard.gen.get_state()
        hard.step(x, y)
        gen = torch.Generator()
        gen.set_state(gen_state)
        start = x + 0.1 * (2 * torch.rand(x.shape, generator=gen) - 1)
        plain.step(craft(twin, x, y, 0.1, 4, 2.5 * 0.1 / 4, start), y)
        for a, b in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_input_noise_is_the_generators_gaussian_clipped_to_the_unit_box():
    model = build_model(6, [4], 3, "sigmoid", seed=0)
    hard = Hardened(Backprop(model, BackpropParams(), 3), model, RobustParams(input_noise=0.3), seed=7)
    x, y = torch.rand(50, 6, generator=torch.Generator().manual_seed(0)), torch.zeros(50, dtype=torch.long)
    got = hard.batch(x, y)
    ref = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(7 + SEED_OFFSET))).clamp(0, 1)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert (got == 0).any() and (got == 1).any() and not torch.equal(hard.batch(x, y), got)  # fresh draws


def test_robust_params_and_the_config_section():
    for bad, match in (({"input_noise": -0.1}, "input_noise"), ({"adv_eps": float("nan")}, "adv_eps"),
                       ({"adv_steps": 0}, "adv_steps")):
        with pytest.raises(ConfigError, match=match):
            RobustParams(**bad)
    with pytest.raises(ConfigError, match="needs robust.adv_eps"):  # at training, not in a partial table
        harden(make_learner("backprop", build_model(4, [3], 2, "sigmoid", 0), load_config("iris"), 2), None,
               RobustParams(trades_beta=6.0), 0)
    assert RobustParams(adv_eps=0.1, adv_steps=4).step_size == pytest.approx(0.0625)
    assert RobustParams(adv_eps=0.1, adv_step=0.01).step_size == 0.01
    cfg = load_config("iris")
    assert "robust" not in cfg.to_dict()  # configs without it read and write as before
    on = cfg.with_sets(["robust.input_noise=0.2"])
    assert on.to_dict()["robust"]["input_noise"] == 0.2 and on.robust.active
    with pytest.raises(ConfigError, match="unknown key robust.eps"):
        cfg.with_sets(["robust.eps=0.1"])
    model = build_model(4, [], 2, "sigmoid", seed=0)
    with pytest.raises(ConfigError, match="TRADES is a loss, for backprop only"):
        harden(make_learner("local", build_model(4, [3], 2, "sigmoid", 0), cfg, 2), model,
               RobustParams(adv_eps=0.1, trades_beta=1.0), 0)
    with pytest.raises(ConfigError, match="full-batch"):
        harden(make_learner("linear", model, cfg, 2), model, RobustParams(adv_eps=0.1), 0)
    assert harden("learner", model, RobustParams(), 0) == "learner"  # off: the learner itself


def test_parallel_training_refuses_robust_training():
    from localstdp.parallel.comm import check_config

    cfg = load_config("mnist-3v5")
    check_config(cfg, "data", "local")
    with pytest.raises(ConfigError, match=r"\[robust\] training .* single-process"):
        check_config(cfg.with_sets(["robust.input_noise=0.1"]), "pipeline", "local")


def test_a_run_stopped_and_resumed_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    cfg = load_config("iris").with_sets(["train.epochs=3", "robust.input_noise=0.2", "robust.adv_eps=0.05",
                                         "robust.adv_steps=2"])
    whole = train(cfg, "backprop", tmp_path / "whole")
    stop = {"n": 0}

    def should_stop():
        stop["n"] += 1
        return 15 if stop["n"] == 5 else 0

    with pytest.raises(Interrupted):
        train(cfg, "backprop", tmp_path / "part", should_stop=should_stop)
    resumed = train(cfg, "backprop", tmp_path / "part", resume=True)
    for k, v in whole["model"].state_dict().items():
        torch.testing.assert_close(resumed["model"].state_dict()[k], v, rtol=0, atol=0)


def test_methods_defaults_and_the_frontier_knobs():
    cfg = load_config("mnist-3v5")
    at, tr, lat = (method_config(cfg, m) for m in ("backprop-at", "backprop-trades", "local-at"))
    assert (at.robust.adv_eps, at.robust.trades_beta, tr.robust.trades_beta, lat.robust.adv_eps) == (0.1, 0.0, 6.0, 0.1)
    assert PANEL["local-at"].learner == "local" and PANEL["backprop-trades"].learner == "backprop"
    own = method_config(cfg.with_sets(["methods.backprop-at.robust.adv_eps=0.2"]), "backprop-at")
    assert own.robust.adv_eps == 0.2  # the config's own table wins over the default
    assert _method_settings(cfg, "backprop-at")["robust"]["adv_eps"] == 0.1
    assert "robust" not in _method_settings(cfg, "backprop")
    swept = cfg.with_sets(["frontier.input_noise=[0.1]", "frontier.adv_eps=[0.05, 0.1]", "frontier.trades_beta=[1.0]"])
    methods = ("local", "backprop", "linear", "backprop-at", "backprop-trades", "local-at")
    pts = frontier_points(swept, methods)
    new = [p for p in pts if p["knob"].startswith("robust.")]
    assert [point_name(p) for p in new] == [
        "local:noise=0.1", "backprop:noise=0.1", "linear:noise=0.1", "backprop-at:eps=0.05", "backprop-at:eps=0.1",
        "backprop-trades:eps=0.05", "backprop-trades:eps=0.1", "backprop-trades:beta=1.0", "local-at:eps=0.05",
        "local-at:eps=0.1"]
    assert [from_panel(p, swept) for p in new] == [None, None, None, None, "backprop-at", None, "backprop-trades",
                                                   None, None, "local-at"]
    # what a point trains with is method_config of its config, applied by train_method (units.py): every point's
    # knob must hold its value there, whatever the method's defaults (backprop-at's radius 0.1, ...)
    knob_value = {"robust.input_noise": lambda c: c.robust.input_noise, "robust.adv_eps": lambda c: c.robust.adv_eps,
                  "robust.trades_beta": lambda c: c.robust.trades_beta, "train.lr": lambda c: c.train.lr,
                  "train.epochs": lambda c: c.train.epochs, "rule.weight_decay": lambda c: c.rule.weight_decay,
                  "backprop.weight_decay": lambda c: c.backprop.weight_decay,
                  "rule.targets": lambda c: [c.rule.a_hi, c.rule.a_lo]}
    for p in pts:
        if p["knob"] != "base":
            trained = method_config(point_config(swept, p), p["method"])
            assert knob_value[p["knob"]](trained) == p["value"], point_name(p)
    assert method_config(point_config(swept, new[3]), "backprop-at").robust.adv_eps == 0.05
    assert method_config(point_config(swept, new[7]), "backprop-trades").robust.trades_beta == 1.0
    lin = point_config(swept, new[2])
    assert method_config(lin, "linear").robust.input_noise == 0.1
    assert point_config(swept, new[1]).robust.input_noise == 0.1 and point_config(swept, new[1]).backprop.weight_decay == 0
    assert not [p for p in frontier_points(swept, ("local", "backprop")) if p["method"] not in ("local", "backprop")]
    with pytest.raises(ConfigError, match="adv_eps"):
        cfg.with_sets(["frontier.adv_eps=[0.0]"])


def test_adversarial_training_buys_robustness_on_a_paper_task():
    """PGD-AT at eps 0.1 against plain backprop, same network, seed and rate, 8 epochs on mnist-3v5: the
    worst case of a 20-step PGD at eps 0.1 on the test split is far higher (the family does what it is for)."""
    from localstdp.robustness import native

    cfg = load_config("mnist-3v5").with_sets(["train.epochs=8", "backprop.lr=0.003"])
    ds = load_dataset(cfg.data)
    acc = {}
    for name, c in (("plain", cfg), ("at", cfg.with_sets(["robust.adv_eps=0.1"]))):
        model = train(c, "backprop")["model"]
        broken, _ = native.pgd(model, ds.x_test, ds.y_test, 0.1, steps=20, restarts=1, losses=("ce",), seed=0)
        acc[name] = 1.0 - float(broken[0].float().mean())  # broken includes the misclassified clean examples
    assert acc["at"] > acc["plain"] + 0.3, acc


def test_the_robust_suite_runs_every_family_and_reports_them(tmp_path):
    from localstdp.evaluation import grid as G
    from localstdp.evaluation.plan import task_config
    from localstdp.evaluation.settings import GridSettings
    from localstdp.robustness.suite import AttackSettings

    cfg = task_config("iris-1v2")
    cfg = dataclasses.replace(cfg, frontier=dataclasses.replace(
        cfg.frontier, backprop_weight_decay=[0.0], local_lr=[], local_epochs=[], local_weight_decay=[], backprop_lr=[],
        local_targets=[], linear_l2=[0.1], input_noise=[0.2], adv_eps=[0.05], trades_beta=[]))
    attacks = AttackSettings(pgd_steps=3, pgd_restarts=1, square_queries=5, autoattack=False, targets=0)
    s = GridSettings(seeds=1, frontier_seeds=1, epochs=2, n_attack=12, n_boot=200, attacks=attacks, val_attack=10,
                     diagnostics=False, methods=("local", "backprop", "linear", "backprop-at", "backprop-trades", "local-at"))
    res = G.run_grid({"iris-1v2": cfg}, s)
    assert {r["method"] for r in res["rows"]} == set(s.methods)
    fams = res["selection"]["iris-1v2"]["families"]
    assert set(fams) == {"local", "backprop", "linear", "backprop-at", "backprop-trades", "local-at"}
    assert "local:noise=0.2" in [c["point"] for c in fams["local"]["candidates"]]
    assert "backprop-at:eps=0.05" in [c["point"] for c in fams["backprop-at"]["candidates"]]
    trades = res["settings"]["tasks"]["iris-1v2"]["methods"]["backprop-trades"]
    assert trades["robust"] == dataclasses.asdict(RobustParams(adv_eps=0.1, trades_beta=6.0))
    assert all(np.isfinite(r["clean_accuracy"]) for r in res["rows"])
    assert set(res["frontier"]["iris-1v2"]["against"]) >= {"backprop-at", "backprop-trades", "local-at"}
