"""The fast timing-mode backend against the direct reference, and the in-place update path."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from localstdp.model import build_model
from localstdp.rules import LocalRule, RuleParams
from localstdp.rules.functional import latency, local_update, timing_direct
from localstdp.rules.fused import apply_local_update_
from localstdp.rules.timing import binned_error_bound, binned_factors, resolve_backend, timing_binned, timing_update

WINDOWS = [
    {},  # the default symmetric window: kappa continuous at D = 0
    {"A_plus": 1.0, "tau_plus": 0.2, "A_minus": 0.3, "tau_minus": 1.0},  # a jump at D = 0
    {"A_plus": 0.0, "A_minus": 0.5, "tau_minus": 0.3, "T": 2.0},  # depression only, T != 1
]


def _layer(seed: int, B: int = 48, n_in: int = 30, n_out: int = 20):
    g = torch.Generator().manual_seed(seed)
    pre = torch.rand(B, n_in, generator=g)
    post = torch.sigmoid(2 * torch.randn(B, n_out, generator=g))
    e = torch.rand(B, n_out, generator=g) * 0.8 - 0.4
    return pre, post, e


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("bins", [2, 5, 16, 64])
def test_binned_error_within_stated_bound(window, bins):
    p = RuleParams(mode="timing", time_bins=bins, **window)
    pre, post, e = _layer(bins)
    x = pre * (pre > 0.2)  # masked pre activity, raw pre for the spike times
    direct = timing_direct(x, post, e, pre, p).double()
    binned = timing_binned(x, post, e, pre, p).double()
    bound = binned_error_bound(p) * (e.abs().T.double() @ x.double())
    assert ((binned - direct).abs() <= bound + 1e-5).all()
    assert (binned - direct).abs().max() > 0  # the rounding is real at these shapes


def test_bound_formula_and_convergence():
    p = RuleParams(mode="timing", time_bins=32)  # cP = cM = 1, tau = 0.5, h = 1/32
    assert binned_error_bound(p) == pytest.approx(1 - math.exp(-1 / 32), rel=1e-12)
    # with a jump at D = 0 the bound never falls below |cP - cM|
    jump = RuleParams(mode="timing", A_plus=1.0, tau_plus=0.2, A_minus=0.3, tau_minus=1.0, time_bins=10_000)
    assert binned_error_bound(jump) >= 5.0 - 0.3
    # on a continuous window the measured error shrinks like 1/K
    pre, post, e = _layer(0, B=64, n_in=40, n_out=30)
    errs = []
    for bins in (4, 16, 64):
        q = RuleParams(mode="timing", time_bins=bins)
        d = timing_direct(pre, post, e, pre, q)
        errs.append(float((timing_binned(pre, post, e, pre, q) - d).norm() / d.norm()))
    assert errs[0] > 2.5 * errs[1] > 2.5 * 2.5 * errs[2]
    assert errs[2] < 0.01


def test_binned_exact_when_post_spikes_lie_on_the_clock():
    p = RuleParams(mode="timing", time_bins=8, A_plus=0.7, tau_plus=0.3)
    pre, _, e = _layer(1, n_out=8)
    centres = (torch.arange(8, dtype=torch.float64) + 0.5) / 8
    post = (1 - centres).float().expand(pre.shape[0], 8).contiguous()  # t_post = c_k exactly
    torch.testing.assert_close(timing_binned(pre, post, e, pre, p), timing_direct(pre, post, e, pre, p),
                               rtol=1e-5, atol=1e-6)


def test_binned_factor_shapes_stay_linear_in_width():
    p = RuleParams(mode="timing", time_bins=6)
    pre, post, e = _layer(2, B=10, n_in=7, n_out=5)
    E, A = binned_factors(pre, post, e, pre, p)
    assert E.shape == (60, 5) and A.shape == (60, 7)
    # each (example, post neuron) sits in exactly one clock step
    assert torch.equal(E.view(6, 10, 5).sum(0), e)
    k = (latency(post) * 6).floor().clamp(0, 5).long()
    assert torch.equal((E.view(6, 10, 5) != 0).float().argmax(0), k)


def test_dispatch():
    small = RuleParams(mode="timing", timing_backend="auto")
    assert resolve_backend(small, 8, 10, 10) == "direct"
    assert resolve_backend(small, 256, 1024, 1024) == "binned"
    assert resolve_backend(RuleParams(mode="timing", timing_backend="binned"), 1, 1, 1) == "binned"
    pre, post, e = _layer(3)
    direct = RuleParams(mode="timing", timing_backend="direct")
    binned = RuleParams(mode="timing", timing_backend="binned", time_bins=4)
    torch.testing.assert_close(timing_update(pre, post, e, pre, direct), timing_direct(pre, post, e, pre, direct))
    torch.testing.assert_close(timing_update(pre, post, e, pre, binned), timing_binned(pre, post, e, pre, binned))


@pytest.mark.parametrize(
    "params",
    [
        RuleParams(mode="rate", eta=0.3),
        RuleParams(mode="rate", eta=0.3, theta=0.4),
        RuleParams(mode="timing", eta=0.3, timing_backend="binned", time_bins=5, theta=0.3),
        RuleParams(mode="timing", eta=0.3, timing_backend="direct"),
        RuleParams(mode="two-phase", eta=0.3),
    ],
)
def test_in_place_update_equals_local_update(params):
    pre, post, e = _layer(4)
    target = (post + e).clamp(0, 1)
    g = torch.Generator().manual_seed(5)
    W, b = torch.randn(20, 30, generator=g), torch.randn(20, generator=g)
    dW, db = local_update(pre, post, target, params)
    W2, b2 = W.clone(), b.clone()
    apply_local_update_(W2, b2, pre, post, target, params)
    torch.testing.assert_close(W2, W + dW, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b2, b + db, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["rate", "timing"])
def test_learner_step_applies_every_layers_update_from_one_forward(mode):
    model = build_model(12, [16, 9], 3, "sigmoid", seed=0)
    params = RuleParams(mode=mode, eta=0.4, timing_backend="binned", time_bins=7)
    rule = LocalRule(model, params, n_classes=3, seed=0)
    g = torch.Generator().manual_seed(6)
    x, y = torch.rand(10, 12, generator=g), torch.randint(0, 3, (10,), generator=g)
    before = copy.deepcopy(model)
    ups, acts = LocalRule(before, params, 3, seed=0).updates(x, y)
    loss = rule.step(x, y)
    for layer, old, (dW, db) in zip(model.layers, before.layers, ups):
        torch.testing.assert_close(layer.weight, old.weight + dW, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.bias, old.bias + db, rtol=1e-5, atol=1e-6)
    assert loss == pytest.approx(float(((rule.targets(2, y) - acts[-1]) ** 2).mean()), rel=1e-6)


def test_cached_targets_equal_association_targets_and_follow_a_new_map():
    from localstdp.rules.functional import association_targets

    model = build_model(5, [12], 4, "sigmoid", seed=0)
    rule = LocalRule(model, RuleParams(association="random"), n_classes=4, seed=1)
    y = torch.tensor([3, 0, 2, 2, 1])
    for l in range(2):
        assert torch.equal(rule.targets(l, y), association_targets(rule.associations[l], y, 0.9, 0.1))
    rule.associations[0] = 1 - rule.associations[0]  # a replaced map must not be served from the cache
    assert torch.equal(rule.targets(0, y), association_targets(rule.associations[0], y, 0.9, 0.1))


@pytest.mark.parametrize("mode", ["rate", "timing"])
def test_step_allocates_nothing_weight_sized(mode):
    from localstdp.bench import peak_step_memory

    model = build_model(512, [512], 10, "sigmoid", seed=0)  # one 512 x 512 weight = 1 MiB
    rule = LocalRule(model, RuleParams(mode=mode, timing_backend="binned", time_bins=4), n_classes=10, seed=0)
    x, y = torch.rand(4, 512), torch.arange(4)
    rule.step(x, y)
    peak = peak_step_memory(lambda: rule.step(x, y), torch.device("cpu"))
    assert 0 < peak < 512 * 512 * 4 // 4  # activations and factors only: far below one weight
