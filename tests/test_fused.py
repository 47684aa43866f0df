"""The in-place update paths of rules/fused.py against the composed reference they replace.

The exact form (what every shipped config runs) must equal local_update + the mask step + W += dW bit
for bit; the fused form (``LayerwiseRule.exact_updates = False``) within float rounding; the taught
mask of pairs codes must give the values of fill_untaught."""

from __future__ import annotations

import copy

import pytest
import torch

from localstdp.model import build_model
from localstdp.rules import LocalRule, RuleParams
from localstdp.rules.functional import fill_untaught, local_update
from localstdp.rules.fused import apply_local_update_


def _case(seed: int, B: int = 16, n_in: int = 49, n_out: int = 24, untaught: bool = True, side: int = 3):
    g = torch.Generator().manual_seed(seed)
    pre = torch.rand(B, n_in, generator=g)
    post = torch.sigmoid(2 * torch.randn(B, n_out, generator=g))
    target = torch.where(torch.rand(B, n_out, generator=g) < 0.5, 0.99, 0.01)
    if untaught:  # pairs codes: untaught entries are the neuron's own activity (error exactly 0)
        target = torch.where(torch.rand(B, n_out, generator=g) < 0.6, post, target)
        target[:, 0] = post[:, 0]  # a neuron untaught on the whole batch: a row of zero updates
    from localstdp.model import receptive_field_mask

    mask = receptive_field_mask(n_out, n_in, side, g)
    W = torch.randn(n_out, n_in, generator=g) * mask
    W[W == 0] = -0.0 * torch.sign(torch.randn(()))  # signed zeros on absent synapses, as W *= mask leaves them
    b = torch.randn(n_out, generator=g)
    m = torch.rand(n_in, generator=g)
    return pre, post, target, mask, W, b, m


def _reference(W, b, pre, post, target, p, m, mask):
    """What layerwise.py did before the fused paths: local_update, _masked, apply_layer."""
    dW, db = local_update(pre, post, target, p, pre_mean=m)
    if mask is not None:
        kept = dW * mask
        db = db if m is None else db + (dW - kept) @ m
        dW = kept
    W.add_(dW)
    b.add_(db)


def _bits(t: torch.Tensor) -> bytes:
    return t.contiguous().numpy().tobytes()


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("theta", [0.0, 0.3])
def test_exact_path_is_bit_identical_to_the_composed_reference(center, masked, theta):
    p = RuleParams(eta=0.3, a_hi=0.99, a_lo=0.01, theta=theta)
    for seed in range(3):
        pre, post, target, mask, W, b, m = _case(seed)
        m = m if center else None
        mask = mask if masked else None
        W1, b1, W2, b2 = W.clone(), b.clone(), W.clone(), b.clone()
        _reference(W1, b1, pre, post, target, p, m, mask)
        if m is None and mask is None:  # the plain path: one addmm_ (its own rounding, unchanged)
            continue
        apply_local_update_(W2, b2, pre, post, target, p, m, mask)
        assert _bits(W1) == _bits(W2) and _bits(b1) == _bits(b2)


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_path_equals_the_exact_one_within_rounding(center, masked):
    p = RuleParams(eta=0.3, a_hi=0.99, a_lo=0.01)
    for seed in range(3):
        pre, post, target, mask, W, b, m = _case(seed, B=32, n_in=100, n_out=40, side=4)
        m = m if center else None
        mask = mask if masked else None
        W1, b1, W2, b2 = W.clone(), b.clone(), W.clone(), b.clone()
        apply_local_update_(W1, b1, pre, post, target, p, m, mask)
        apply_local_update_(W2, b2, pre, post, target, p, m, mask, exact=False)
        torch.testing.assert_close(W2, W1, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b2, b1, rtol=1e-5, atol=1e-6)
        if mask is not None:
            assert not W2[mask == 0].any()  # absent synapses stay zero


def test_taught_mask_gives_fill_untaught_values():
    model = build_model(16, [30], 10, "sigmoid", 0)
    rule = LocalRule(model, RuleParams(association="pairs"), 10, 0)
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 10, (12,), generator=g)
    post = torch.rand(12, 30, generator=g)
    want = fill_untaught(rule.targets(0, y), post)
    assert torch.equal(rule.taught_targets(0, y, post), want)
    assert not torch.isnan(want).any()
    assert rule._target_tables[0][2] is not None and rule._tables(1)[2] is None  # layer 1: one-hot, all taught


def test_fused_training_stays_close_to_the_exact_training():
    """Ten steps of a mnist-10-shaped rule (receptive fields, pairs, centre) both ways."""
    model = build_model(196, [64, 16], 10, "sigmoid", 3, receptive_field=5)
    params = RuleParams(eta=0.3, a_hi=0.99, a_lo=0.01, association="pairs", center=0.99)
    exact = LocalRule(model, params, 10, 3)
    fused = LocalRule(copy.deepcopy(model), params, 10, 3)
    fused.exact_updates = False
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        x, y = torch.rand(32, 196, generator=g), torch.randint(0, 10, (32,), generator=g)
        exact.step(x, y)
        fused.step(x, y)
    for a, b in zip(exact.model.parameters(), fused.model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    assert not fused.model.layers[0].weight[model.in_mask == 0].any()


def test_banded_receptive_field_layer_equals_the_dense_masked_one():
    """fields.py: forward, autograd gradients and the local rule's centred update, banded vs dense."""
    from localstdp.fields import banded_linear, banded_rate_update_, field_bands
    from localstdp.model import receptive_field_mask

    g = torch.Generator().manual_seed(0)
    n_out, n_in, B = 40, 196, 8
    mask = receptive_field_mask(n_out, n_in, 5, g)
    bands = field_bands(mask)
    assert sum(len(bd.rows) for bd in bands) == n_out
    for bd in bands:  # every field lies inside its band
        outside = torch.ones(n_in, dtype=torch.bool)
        outside[bd.start : bd.stop] = False
        assert not mask[bd.rows][:, outside].any()
    W = torch.randn(n_out, n_in, generator=g) * mask
    b = torch.randn(n_out, generator=g)
    x = torch.rand(B, n_in, generator=g, requires_grad=True)
    Wd, Wb = W.clone().requires_grad_(), W.clone().requires_grad_()
    bd_, bb = b.clone().requires_grad_(), b.clone().requires_grad_()
    zd = torch.addmm(bd_, x, Wd.T)
    zb = banded_linear(x, Wb, bb, bands)
    torch.testing.assert_close(zb, zd)
    gz = torch.randn(B, n_out, generator=g)
    gxd, = torch.autograd.grad(zd, x, gz, retain_graph=True)
    gxb, = torch.autograd.grad(zb, x, gz, retain_graph=True)
    torch.testing.assert_close(gxb, gxd)
    zd.backward(gz)
    zb.backward(gz)
    in_band = torch.zeros(n_out, n_in)
    for bd in bands:
        in_band[bd.rows, bd.start : bd.stop] = 1.0
    torch.testing.assert_close(Wb.grad, Wd.grad * in_band)  # zero outside the bands (W *= mask after each step)
    torch.testing.assert_close(bb.grad, bd_.grad)
    xs, e, m = x.detach(), torch.randn(B, n_out, generator=g), torch.rand(n_in, generator=g)
    p = RuleParams(eta=0.3)
    target = torch.sigmoid(torch.randn(B, n_out, generator=g))
    post = target - e
    W1, b1, W2, b2 = W.clone(), b.clone(), W.clone(), b.clone()
    apply_local_update_(W1, b1, xs, post, target, p, m, mask)
    banded_rate_update_(W2, b2, bands, mask, xs, target - post, p.eta / B, m)
    torch.testing.assert_close(W2, W1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b2, b1, rtol=1e-5, atol=1e-6)
