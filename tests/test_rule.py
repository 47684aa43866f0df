"""The association-STDP rule against its direct per-synapse reference, autograd and its own limits."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from localstdp.model import build_model
from localstdp.rules import LocalRule, RuleParams
from localstdp.rules.association import balanced_onehot
from localstdp.rules.functional import (
    association_targets,
    kappa,
    latency,
    local_update,
    local_update_reference,
    stdp_window,
)

DT = torch.float64  # the reference is float64 Python arithmetic


def _random_layer(seed: int, batch: int, n_in: int, n_out: int, K: int = 3):
    g = torch.Generator().manual_seed(seed)
    pre = torch.rand(batch, n_in, generator=g, dtype=DT)
    post = torch.sigmoid(torch.randn(batch, n_out, generator=g, dtype=DT) * 2)
    y = torch.randint(0, K, (batch,), generator=g)
    target = association_targets(balanced_onehot(n_out, K).double(), y, 0.9, 0.1)
    return pre, post, target


PARAMS = [
    RuleParams(mode="rate", eta=0.3),
    RuleParams(mode="timing", eta=0.3, timing_backend="direct"),
    RuleParams(mode="timing", eta=0.7, tau_plus=0.2, tau_minus=0.8, A_plus=0.3, A_minus=0.6, T=2.0, timing_backend="direct"),
    RuleParams(mode="timing", eta=0.5, theta=0.3, timing_backend="direct"),
    RuleParams(mode="rate", eta=0.5, theta=0.4),
    RuleParams(mode="two-phase", eta=0.4, beta=0.2),
    RuleParams(mode="two-phase", eta=0.4, beta=0.05, tau_plus=0.3, A_minus=0.2, theta=0.2),
]


@pytest.mark.parametrize("p", PARAMS, ids=lambda p: f"{p.mode}-theta{p.theta}-tau{p.tau_plus}")
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 4, 3), (7, 6, 2)])
def test_update_matches_per_synapse_reference(p, shape):
    pre, post, target = _random_layer(sum(shape), *shape)
    dW, db = local_update(pre, post, target, p)
    ref_W, ref_b = local_update_reference(pre, post, target, p)
    torch.testing.assert_close(dW, torch.tensor(ref_W, dtype=DT), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(db, torch.tensor(ref_b, dtype=DT), rtol=1e-10, atol=1e-12)


def test_sum_reduction_is_batch_times_mean():
    pre, post, target = _random_layer(3, 6, 5, 4)
    p = RuleParams(mode="timing", timing_backend="direct")
    mean_W, mean_b = local_update(pre, post, target, p)
    sum_W, sum_b = local_update(pre, post, target, p, reduction="sum")
    torch.testing.assert_close(sum_W, 6 * mean_W)
    torch.testing.assert_close(sum_b, 6 * mean_b)


def test_kappa_is_minus_derivative_of_window_by_autograd():
    p = RuleParams(tau_plus=0.3, tau_minus=0.7, A_plus=0.4, A_minus=0.9)
    D = torch.tensor([-1.5, -0.4, -0.01, 0.01, 0.2, 1.3], dtype=DT, requires_grad=True)
    (grad,) = torch.autograd.grad(stdp_window(D, p).sum(), D)
    torch.testing.assert_close(kappa(D.detach(), p), -grad)


def test_window_signs_and_jump_at_coincidence():
    p = RuleParams(A_plus=0.4, A_minus=0.9)
    w = stdp_window(torch.tensor([-0.2, 0.0, 1e-9, 0.2]), p)
    assert w[0] < 0 and w[1] == pytest.approx(-0.9) and w[2] == pytest.approx(0.4) and w[3] > 0
    assert latency(torch.tensor([0.0, 0.25, 1.0]), T=2.0).tolist() == [2.0, 1.5, 0.0]


@pytest.mark.parametrize("tau", [1e2, 1e4, 1e6])
def test_timing_mode_approaches_rate_mode_as_tau_grows(tau):
    pre, post, target = _random_layer(11, 8, 6, 4)
    rate = local_update(pre, post, target, RuleParams(mode="rate"))[0]
    timing = local_update(pre, post, target, RuleParams(mode="timing", tau_plus=tau, tau_minus=tau, A_plus=tau,
                                                        A_minus=tau, timing_backend="direct"))[0]
    # kappa = exp(-|D|/tau) with |D| <= 1, so the relative gap is at most 1 - exp(-1/tau) ~ 1/tau
    err = (timing - rate).abs().max() / rate.abs().max()
    assert err <= 1.0 / tau
    assert err > 0 or tau > 1e5  # the limit is approached, not imposed


def test_two_phase_approaches_timing_mode_as_beta_shrinks():
    pre, post, target = _random_layer(5, 16, 6, 4)
    timing = local_update(pre, post, target, RuleParams(mode="timing", timing_backend="direct"))[0]
    errs = []
    for beta in (0.2, 0.02, 0.002):
        two = local_update(pre, post, target, RuleParams(mode="two-phase", beta=beta))[0]
        errs.append(float((two - timing).abs().max()))
    # the gap comes from pairs the nudge moves across coincidence (the LTP/LTD jump) and the
    # second-order term, both O(beta)
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.05 * float(timing.abs().max())


def test_association_targets():
    A = balanced_onehot(5, 3)
    assert A.sum(0).tolist() == [2, 2, 1] and A.sum(1).tolist() == [1] * 5
    d = association_targets(A, torch.tensor([0, 2]), 0.9, 0.1)
    torch.testing.assert_close(d, torch.tensor([[0.9, 0.1, 0.1, 0.9, 0.1], [0.1, 0.1, 0.9, 0.1, 0.1]]).to(d.dtype))


def _learner(p=None, seed=0):
    p = p if p is not None else RuleParams(mode="timing", timing_backend="direct", eta=0.5)
    model = build_model(6, [5, 4], 3, "sigmoid", seed=seed).double()
    return model, LocalRule(model, p, n_classes=3, seed=seed)


@pytest.mark.parametrize("first_perturbed", [1, 2])
def test_earlier_layers_do_not_see_later_weights(first_perturbed):
    x = torch.rand(9, 6, generator=torch.Generator().manual_seed(1), dtype=DT)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    model, rule = _learner()
    before, _ = rule.updates(x, y)
    with torch.no_grad():  # perturb every layer from ``first_perturbed`` on, hard
        for layer in model.layers[first_perturbed:]:
            layer.weight.mul_(-3.0).add_(torch.randn_like(layer.weight))
            layer.bias.add_(1.0)
    after, _ = rule.updates(x, y)
    for l in range(first_perturbed):  # bit for bit: nothing downstream reaches these updates
        assert torch.equal(after[l][0], before[l][0]) and torch.equal(after[l][1], before[l][1])
    for l in range(first_perturbed, 3):  # the perturbed layers' own updates do change
        assert not torch.equal(after[l][0], before[l][0])


@pytest.mark.parametrize("mode", ["rate", "timing"])
def test_one_update_moves_every_layer_towards_its_targets(mode):
    x = torch.rand(12, 6, generator=torch.Generator().manual_seed(2), dtype=DT)
    y = torch.arange(12) % 3
    model, rule = _learner(RuleParams(mode=mode, eta=0.5, timing_backend="direct"))
    acts = model.activities(x)
    acts = [a.detach() for a in acts]
    dist_before = [float(((rule.targets(l, y) - acts[l + 1]) ** 2).sum()) for l in range(3)]
    ups, _ = rule.updates(x, y)
    for l, (dW, db) in enumerate(ups):  # each layer alone, its input held fixed
        with torch.no_grad():
            new = torch.sigmoid(acts[l] @ (model.layers[l].weight + dW).T + model.layers[l].bias + db)
        assert float(((rule.targets(l, y) - new) ** 2).sum()) < dist_before[l]


def test_rate_step_equals_manual_update_of_all_layers_from_one_forward():
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(3), dtype=DT)
    y = torch.tensor([2, 0, 1, 1])
    model, rule = _learner(RuleParams(mode="rate", eta=0.25))
    acts = model.activities(x)
    expected = []
    for l, layer in enumerate(model.layers):
        e = rule.targets(l, y) - acts[l + 1]
        expected.append((layer.weight + 0.25 * e.T @ acts[l] / 4, layer.bias + 0.25 * e.mean(0)))
    expected = [(w.detach().clone(), b.detach().clone()) for w, b in expected]
    rule.step(x, y)
    for layer, (w, b) in zip(model.layers, expected):
        torch.testing.assert_close(layer.weight.detach(), w)
        torch.testing.assert_close(layer.bias.detach(), b)


def test_params_validation():
    with pytest.raises(ValueError, match="rule.eta"):
        RuleParams(eta=-1)
    with pytest.raises(ValueError, match="rule.a_lo"):
        RuleParams(a_lo=0.95)
    with pytest.raises(ValueError, match="rule.mode"):
        RuleParams(mode="spiking")
    with pytest.raises(ValueError, match="rule.tau_plus"):
        RuleParams(tau_plus=0)
    with pytest.raises(ValueError, match="rule.theta"):
        RuleParams(theta=1.0)
    with pytest.raises(ValueError, match="finite"):
        RuleParams(T=float("nan"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        RuleParams().eta = 1.0  # type: ignore[misc]


def test_two_phase_keeps_the_ltp_ltd_jump_that_the_smooth_rule_drops():
    # post a = 0.5 fires at t = 0.5; target 0.9 pulls it to a + beta (d - a) = 0.6, t~ = 0.4.
    # A pre spike at t = 0.45 (a_pre = 0.55) is crossed: before the nudge LTP, after it LTD.
    p = RuleParams(mode="two-phase", eta=1.0, beta=0.25, A_plus=0.5, A_minus=0.5, tau_plus=0.5, tau_minus=0.5)
    pre, post, target = (torch.tensor([[v]], dtype=DT) for v in (0.55, 0.5, 0.9))
    dW = local_update(pre, post, target, p)[0].item()
    import math

    expected = 0.55 * (-0.5 * math.exp(-0.05 / 0.5) - 0.5 * math.exp(-0.05 / 0.5)) / 0.25
    assert dW == pytest.approx(expected, rel=1e-12)
    assert dW < 0  # depression although d > a: the crossing flips the sign
    smooth = local_update(pre, post, target, RuleParams(mode="timing", timing_backend="direct"))[0].item()
    assert smooth > 0  # the first-order rule potentiates
