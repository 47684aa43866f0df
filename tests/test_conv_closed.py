"""The closed form of the conv update in rate mode with theta 0 (functional.conv_error_update: the
convolution's own weight gradient of the error, the covariance rule's centring pulled out of the sum)
against the unfold form it replaces (functional.local_conv_update), the per-synapse loop and autograd;
and LocalLearner with conv teaching "readout" / "position" trained both ways."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from localstdp import LocalLearner
from localstdp.rules import RuleParams
from localstdp.rules.functional import conv_error_update, local_conv_update, local_conv_update_reference

DT = torch.float64
TIGHT = {"rtol": 1e-12, "atol": 1e-14}


def _case(seed: int, k=(3, 2), stride=1, padding=0, dilation=1, B=3, C_in=2, C_out=4, H=9, W=8):
    g = torch.Generator().manual_seed(seed)
    pre = torch.rand(B, C_in, H, W, generator=g, dtype=DT)
    w = torch.randn(C_out, C_in, *k, generator=g, dtype=DT)
    post = torch.sigmoid(nn.functional.conv2d(pre, w, stride=stride, padding=padding, dilation=dilation))
    target = torch.rand(post.shape, generator=g, dtype=DT)
    return pre, post, target


GEOMETRIES = [(1, 0, 1), (2, 1, 1), (1, 2, 2), ((2, 1), (1, 0), (1, 2)), (3, (2, 1), (2, 1))]


@pytest.mark.parametrize("stride,padding,dilation", GEOMETRIES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("center", [False, True])
def test_closed_form_equals_the_unfold_form(stride, padding, dilation, reduction, center):
    """float64: equal to rounding, padded positions included (the unfold form centres them to -m_c)."""
    pre, post, target = _case(7, stride=stride, padding=padding, dilation=dilation)
    m = torch.tensor([0.3, 0.65], dtype=DT) if center else None
    p = RuleParams(eta=0.7)
    args = ((3, 2), stride, padding, dilation, reduction)
    ref_W, ref_b = local_conv_update(pre, post, target, p, *args, pre_mean=m)
    dW, db = conv_error_update(pre, target - post, p, *args, pre_mean=m)
    assert dW.shape == ref_W.shape == (4, 2, 3, 2) and ref_W.abs().max() > 1e-2 and ref_b.abs().max() > 1e-2
    torch.testing.assert_close(dW, ref_W, **TIGHT)
    torch.testing.assert_close(db, ref_b, **TIGHT)


def test_padding_reads_zero_then_is_centred():
    """With padding and a pre mean, the padded positions contribute -m_c: dropping them (a closed form that
    centred only the pixels inside the image) differs from the unfold form by far more than rounding."""
    pre, post, target = _case(5, padding=2)
    m = torch.tensor([0.4, 0.9], dtype=DT)
    p = RuleParams(eta=1.0)
    dW, _ = conv_error_update(pre, target - post, p, (3, 2), 1, 2, pre_mean=m)
    ref_W, _ = local_conv_update(pre, post, target, p, (3, 2), 1, 2, pre_mean=m)
    inside = torch.ones_like(pre)  # the number of in-image pixels each (offset, position) reads, per channel
    G_in = torch.nn.grad.conv2d_weight(inside, (4, 2, 3, 2), target - post, 1, 2)
    only_inside = torch.nn.grad.conv2d_weight(pre, (4, 2, 3, 2), target - post, 1, 2) - G_in * m[None, :, None, None]
    torch.testing.assert_close(dW, ref_W, **TIGHT)
    assert (only_inside / pre.shape[0] - ref_W).abs().max() > 1e-2


@pytest.mark.parametrize("stride,padding,center", [(1, 0, False), (2, 1, True), (1, 1, True)])
def test_closed_form_matches_the_per_synapse_loop(stride, padding, center):
    pre, post, target = _case(stride + 3 * padding, stride=stride, padding=padding, B=2, H=5, W=4, C_out=3)
    m = torch.tensor([0.3, 0.6], dtype=DT) if center else None
    p = RuleParams(eta=0.3)
    dW, db = conv_error_update(pre, target - post, p, (3, 2), stride, padding, pre_mean=m)
    ref_W, ref_b = local_conv_update_reference(pre, post, target, p, stride, padding, (3, 2), pre_mean=m)
    torch.testing.assert_close(dW, torch.tensor(ref_W, dtype=DT), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(db, torch.tensor(ref_b, dtype=DT), rtol=1e-10, atol=1e-12)


def test_closed_form_is_eta_times_autograds_weight_and_bias_gradient():
    """Without centring: dW, db = eta / B * d/dW, d/db of sum(conv(pre; W, b) * err) (autograd)."""
    pre, post, target = _case(9, stride=2, padding=1, dilation=(1, 2))
    err = target - post
    w = torch.zeros(4, 2, 3, 2, dtype=DT, requires_grad=True)
    b = torch.zeros(4, dtype=DT, requires_grad=True)
    (nn.functional.conv2d(pre, w, b, stride=2, padding=1, dilation=(1, 2)) * err).sum().backward()
    dW, db = conv_error_update(pre, err, RuleParams(eta=0.4), (3, 2), 2, 1, (1, 2))
    torch.testing.assert_close(dW, 0.4 * w.grad / 3, **TIGHT)
    torch.testing.assert_close(db, 0.4 * b.grad / 3, **TIGHT)


def test_refusals():
    pre, post, target = _case(1)
    err = target - post
    for p in (RuleParams(eta=0.5, theta=0.2), RuleParams(eta=0.5, mode="timing")):
        with pytest.raises(ValueError, match="rate mode with theta = 0"):
            conv_error_update(pre, err, p, (3, 2))
    with pytest.raises(ValueError, match="not the output of this convolution"):
        conv_error_update(pre, err[:, :, 1:], RuleParams(), (3, 2))
    with pytest.raises(ValueError, match="reduction"):
        conv_error_update(pre, err, RuleParams(), (3, 2), reduction="max")


def _cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Sigmoid(), nn.MaxPool2d(2),
                         nn.Conv2d(3, 4, 3, stride=2, padding=(1, 0), dilation=(1, 2)), nn.Sigmoid(), nn.Flatten(),
                         nn.Linear(12, 6), nn.Sigmoid(), nn.Linear(6, 5)).double()


@pytest.mark.parametrize("teaching", ["readout", "position"])
def test_local_learner_trains_the_same_weights_both_ways(teaching, monkeypatch):
    """LocalLearner (covariance rule, a cosine-like changing rate) a few steps with the closed form
    (default, checked to run) and with ``closed_conv = False`` (the unfold form): the same weights, biases
    and running means within float64 rounding."""
    import localstdp.rules.layerwise as layerwise

    calls = []
    monkeypatch.setattr(layerwise, "conv_error_update", lambda *a, **k: calls.append(1) or conv_error_update(*a, **k))
    g = torch.Generator().manual_seed(3)
    data = [(torch.rand(5, 1, 12, 12, generator=g, dtype=DT), torch.randint(0, 5, (5,), generator=g)) for _ in range(4)]
    learners = []
    for closed in (True, False):
        learner = LocalLearner(_cnn(), 5, lr=0.5, seed=2, conv_teaching=teaching, conv_lr_scale=3.0, center=0.9,
                               association="pairs")  # pairs: untaught (NaN) conv targets under "position"
        learner.closed_conv = closed
        for i, (x, y) in enumerate(data):
            learner.set_lr_factor(1.0 - 0.2 * i)
            learner.step(x, y)
        learners.append(learner)
    assert len(calls) == 2 * len(data)  # the closed learner only: two conv layers a step
    (closed, unfold), start = learners, _cnn().state_dict()
    for k, v in unfold.model.state_dict().items():
        torch.testing.assert_close(closed.model.state_dict()[k], v, rtol=1e-11, atol=1e-13)
        assert not torch.equal(v, start[k])  # every parameter learned
    for a, b in zip(closed.pre_means, unfold.pre_means):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)  # later batches read rounded-apart weights
