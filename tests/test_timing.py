"""The fast timing-mode backend against the direct reference, and the in-place update path."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from localstdp.model import build_model
from localstdp.rules import LocalRule, RuleParams, timing
from localstdp.rules.functional import latency, local_update, local_update_reference, spike_mask, timing_direct
from localstdp.rules.fused import apply_local_update_
from localstdp.rules.timing import (
    binned_error_bound,
    binned_factors,
    resolve_backend,
    timing_apply_,
    timing_binned,
    timing_gather,
    timing_update,
)

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


@pytest.mark.parametrize("backend", [timing_binned, timing_gather])
def test_binned_exact_when_post_spikes_lie_on_the_clock(backend):
    p = RuleParams(mode="timing", time_bins=8, A_plus=0.7, tau_plus=0.3)
    pre, _, e = _layer(1, n_out=8)
    centres = (torch.arange(8, dtype=torch.float64) + 0.5) / 8
    post = (1 - centres).float().expand(pre.shape[0], 8).contiguous()  # t_post = c_k exactly
    torch.testing.assert_close(backend(pre, post, e, pre, p), timing_direct(pre, post, e, pre, p),
                               rtol=1e-5, atol=1e-6)


# the gather backend: the binned sum (same clock, same kernel values) as one weighted gather

GATHER_CASES = [  # seed, (batch, n_in, n_out), K, window, theta, centred pre factor
    (0, (48, 30, 20), 16, {}, 0.0, False),
    (1, (33, 17, 41), 5, WINDOWS[1], 0.25, False),
    (2, (64, 50, 7), 32, WINDOWS[2], 0.0, True),
    (3, (20, 64, 64), 64, {"A_plus": 0.2, "A_minus": 0.6, "tau_plus": 0.3, "tau_minus": 0.3}, 0.3, True),
]


def _gather_case(seed, shape, theta, centred, dtype):
    """(pre, post, masked error, masked and possibly centred pre factor) as local_update forms them."""
    pre, post, e = (t.to(dtype) for t in _layer(seed, *shape))
    x = pre if theta == 0 else pre * (pre >= theta)
    e = e if theta == 0 else e * (post >= theta)
    x = x - 0.9 * pre.mean(0) if centred else x  # the covariance rule's factor: negative values too
    return pre, post, e, x


def _scale(e, x, p):
    """sum_b |e_bj| |x_bi| max(cP, cM): what every bound below is relative to."""
    return (e.abs().T @ x.abs()).double() * max(p.A_plus / p.tau_plus, p.A_minus / p.tau_minus)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed,shape,bins,window,theta,centred", GATHER_CASES)
@pytest.mark.parametrize("pieces", [None, (512, 7)])  # default, or small tables and column chunks with remainders
def test_gather_equals_binned_within_rounding(dtype, seed, shape, bins, window, theta, centred, pieces, monkeypatch):
    if pieces:
        monkeypatch.setattr(timing, "GATHER_TABLE_BYTES", pieces[0])
        monkeypatch.setattr(timing, "GATHER_CHUNK", pieces[1])
    p = RuleParams(mode="timing", time_bins=bins, **window)
    pre, post, e, x = _gather_case(seed, shape, theta, centred, dtype)
    binned = timing_binned(x, post, e, pre, p).double()
    gather = timing_gather(x, post, e, pre, p)
    assert gather.dtype == dtype and gather.shape == binned.shape
    rounding = (1e-5 if dtype == torch.float32 else 1e-13) * _scale(e, x, p)
    assert ((gather.double() - binned).abs() <= rounding).all()
    W = torch.randn(shape[2], shape[1], dtype=dtype, generator=torch.Generator().manual_seed(seed))
    into = timing_gather(x, post, e, pre, p, out=W.clone(), alpha=-0.3)  # in place: W - 0.3 S
    assert ((into.double() - (W.double() - 0.3 * binned)).abs() <= 0.3 * rounding + 1e-6 * W.abs().double()).all()


def test_gather_of_an_empty_batch_adds_nothing():
    p = RuleParams(mode="timing", time_bins=8)
    W = torch.randn(3, 4)
    empty = torch.zeros(0, 4), torch.zeros(0, 3)
    assert torch.equal(timing_gather(empty[0], empty[1], empty[1], empty[0], p, out=W.clone()), W)
    assert torch.equal(timing_gather(empty[0], empty[1], empty[1], empty[0], p), torch.zeros(3, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed,shape,bins,window,theta,centred", GATHER_CASES)
def test_gather_error_within_stated_bound_of_direct(dtype, seed, shape, bins, window, theta, centred):
    p = RuleParams(mode="timing", time_bins=bins, **window)
    pre, post, e, x = _gather_case(seed, shape, theta, centred, dtype)
    direct = timing_direct(x, post, e, pre, p).double()
    err = (timing_gather(x, post, e, pre, p).double() - direct).abs()
    bound = binned_error_bound(p) * (e.abs().T @ x.abs()).double()
    assert (err <= bound + (1e-5 if dtype == torch.float32 else 1e-12) * _scale(e, x, p)).all()
    assert err.max() > 1e3 * (1e-7 if dtype == torch.float32 else 1e-16) * _scale(e, x, p).max()  # rounding is real


@pytest.mark.parametrize("theta,centred,window", [(0.0, False, {}), (0.3, False, WINDOWS[1]), (0.2, True, WINDOWS[2])])
def test_gather_update_against_per_synapse_reference(theta, centred, window):
    p = RuleParams(mode="timing", timing_backend="gather", time_bins=4, eta=0.7, theta=theta, **window)
    g = torch.Generator().manual_seed(7)
    pre, post = torch.rand(10, 6, generator=g, dtype=torch.float64), torch.rand(10, 5, generator=g, dtype=torch.float64)
    target = torch.rand(10, 5, generator=g, dtype=torch.float64)
    m = pre.mean(0) if centred else None
    dW, db = local_update(pre, post, target, p, pre_mean=m)
    ref_dW, ref_db = (torch.tensor(v, dtype=torch.float64) for v in local_update_reference(pre, post, target, p, m))
    pre_mask, post_mask = spike_mask(pre, theta), spike_mask(post, theta)
    e = (target - post) * (1 if post_mask is None else post_mask)
    x = (pre if pre_mask is None else pre * pre_mask) - (0 if m is None else m)
    bound = p.eta / 10 * binned_error_bound(p) * (e.abs().T @ x.abs())  # eps(K) per kernel value, batch mean
    assert ((dW - ref_dW).abs() <= bound + 1e-12).all()
    assert (dW - ref_dW).abs().max() > 1e-4  # K = 4: the clock's rounding is visible
    db_bound = 0 if m is None else bound @ m.abs()  # the bias absorbs -dW m
    assert ((db - ref_db).abs() <= db_bound + 1e-12).all()


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
    assert resolve_backend(small, 256, 1024, 1024) == "gather"  # K = 32 clock steps (the default)
    assert resolve_backend(RuleParams(mode="timing", time_bins=timing.GATHER_MIN_BINS - 1), 256, 1024, 1024) == "binned"
    assert resolve_backend(RuleParams(mode="timing", time_bins=timing.GATHER_MIN_BINS), 256, 1024, 1024) == "gather"
    assert resolve_backend(RuleParams(mode="timing", timing_backend="binned"), 1, 1, 1) == "binned"
    assert resolve_backend(RuleParams(mode="timing", timing_backend="gather"), 1, 1, 1) == "gather"
    pre, post, e = _layer(3)
    direct = RuleParams(mode="timing", timing_backend="direct")
    binned = RuleParams(mode="timing", timing_backend="binned", time_bins=4)
    torch.testing.assert_close(timing_update(pre, post, e, pre, direct), timing_direct(pre, post, e, pre, direct))
    torch.testing.assert_close(timing_update(pre, post, e, pre, binned), timing_binned(pre, post, e, pre, binned))
    gather = RuleParams(mode="timing", timing_backend="gather", time_bins=4)
    torch.testing.assert_close(timing_update(pre, post, e, pre, gather), timing_gather(pre, post, e, pre, gather))
    with pytest.raises(ValueError, match="no in-place form"):
        timing_apply_(torch.zeros(20, 30), pre, post, e, pre, direct, 1.0)


@pytest.mark.parametrize(
    "params",
    [
        RuleParams(mode="rate", eta=0.3),
        RuleParams(mode="rate", eta=0.3, theta=0.4),
        RuleParams(mode="timing", eta=0.3, timing_backend="binned", time_bins=5, theta=0.3),
        RuleParams(mode="timing", eta=0.3, timing_backend="direct"),
        RuleParams(mode="timing", eta=0.3, timing_backend="gather", time_bins=9, theta=0.3),
        RuleParams(mode="timing", eta=0.3, timing_backend="gather", time_bins=6, A_plus=1.0, tau_plus=0.2),
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


@pytest.mark.parametrize("mode,backend", [("rate", "binned"), ("timing", "binned"), ("timing", "gather")])
def test_learner_step_applies_every_layers_update_from_one_forward(mode, backend):
    model = build_model(12, [16, 9], 3, "sigmoid", seed=0)
    params = RuleParams(mode=mode, eta=0.4, timing_backend=backend, time_bins=7)
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


@pytest.mark.parametrize("mode,backend,width", [("rate", "binned", 512), ("timing", "binned", 512),
                                                ("timing", "gather", 1024)])
def test_step_allocates_nothing_weight_sized(mode, backend, width):
    from localstdp.bench import peak_step_memory

    # one width x width weight (1 or 4 MiB); the gather's largest buffer is one n_out x GATHER_CHUNK slice
    model = build_model(width, [width], 10, "sigmoid", seed=0)
    rule = LocalRule(model, RuleParams(mode=mode, timing_backend=backend, time_bins=4), n_classes=10, seed=0)
    x, y = torch.rand(4, width), torch.arange(4)
    rule.step(x, y)
    peak = peak_step_memory(lambda: rule.step(x, y), torch.device("cpu"))
    assert 0 < peak < width * width * 4 // 4  # activations and factors only: far below one weight
