"""LocalLearner on ReLU / tanh / SiLU networks (``activity=``, localstdp.activity) and the conv teaching
"readout" (localstdp.rules.readout): the hand-written updates against direct references (per-synapse
loops, autograd of the local loss each is the gradient of), locality, and the refusals."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from localstdp import LocalLearner
from localstdp.errors import ConfigError
from localstdp.rules import RuleParams
from localstdp.rules.functional import local_conv_update_reference
from localstdp.rules.readout import readout_conv_target, readout_matrix

DT = torch.float64


def _mlp(act: type[nn.Module], seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), act(), nn.Linear(5, 4), act(), nn.Linear(4, 3)).double()


def _batch(seed: int = 1, n: int = 7):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 6, generator=g, dtype=DT), torch.randint(0, 3, (n,), generator=g)


def _onehot_targets(units: int, y: torch.Tensor, hi: float = 0.9, lo: float = 0.1) -> torch.Tensor:
    """Balanced one-hot association written out: neuron j is taught hi on class j mod 3."""
    hi, lo = torch.tensor(hi, dtype=DT), torch.tensor(lo, dtype=DT)  # 0.9 in float64, not float32's
    return torch.where(torch.arange(units)[None, :] % 3 == y[:, None], hi, lo)


def _dense_reference(pre, post, target, eta, m=None):
    """Rate-mode dW, db by loops over examples and synapses: the presynaptic factor is the input as the
    layer receives it, negative values included (tanh, SiLU), minus its running mean m when centred
    (functional.local_update_reference reads a negative input as "no spike", a sigmoid network's view)."""
    B, n_out, n_in = len(pre), len(post[0]), len(pre[0])
    m = [0.0] * n_in if m is None else m.tolist()
    pre, post, target = pre.tolist(), post.tolist(), target.tolist()
    dW = [[sum((target[b][j] - post[b][j]) * (pre[b][i] - m[i]) for b in range(B)) * eta / B for i in range(n_in)]
          for j in range(n_out)]
    db = [sum(target[b][j] - post[b][j] for b in range(B)) * eta / B - sum(dW[j][i] * m[i] for i in range(n_in))
          for j in range(n_out)]
    return dW, db


RATE_OF = {  # activity -> activation -> the rule's rate from (z, h), written out independently
    "sigmoid": {nn.ReLU: lambda z, h: torch.sigmoid(z), nn.Tanh: lambda z, h: torch.sigmoid(z),
                nn.SiLU: lambda z, h: torch.sigmoid(z), nn.Sigmoid: lambda z, h: h},
    "map": {nn.ReLU: lambda z, h: h.clamp(0, 1), nn.Tanh: lambda z, h: (h + 1) / 2,
            nn.SiLU: lambda z, h: h.clamp(0, 1), nn.Sigmoid: lambda z, h: h},
}


@pytest.mark.parametrize("activity", ["sigmoid", "map"])
@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh, nn.SiLU])
@pytest.mark.parametrize("center", [0.0, 0.99])
def test_activity_updates_equal_the_per_synapse_reference(activity, act, center):
    """Each layer's (dW, db) from updates() equals the loop reference fed by a forward pass written by
    hand: its input is the previous activation's output, its activity the rate of RATE_OF."""
    model, (x, y) = _mlp(act), _batch()
    ups = LocalLearner(model, 3, lr=0.7, activity=activity, center=center).updates(x, y)
    a, W = x, [model[0], model[2], model[4]]
    for l, layer in enumerate(W):
        z = a @ layer.weight.T + layer.bias
        h = act()(z) if l < 2 else z
        rate = RATE_OF[activity][act](z, h) if l < 2 else torch.sigmoid(z)
        m = a.mean(0) if center else None  # the first batch's mean starts the running mean
        ref_W, ref_b = _dense_reference(a.detach(), rate.detach(), _onehot_targets(rate.shape[1], y), 0.7, m)
        torch.testing.assert_close(ups[l][0], torch.tensor(ref_W, dtype=DT), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ups[l][1], torch.tensor(ref_b, dtype=DT), rtol=1e-10, atol=1e-12)
        a = h


def test_sigmoid_activity_is_the_gradient_step_of_each_layers_own_logistic_loss():
    """activity="sigmoid", center 0: dW = -eta d/dW mean_b sum_j BCE(sigmoid(z_j), d_j), with the layer's
    input held fixed (autograd of the layer-local loss, nothing from the layers above)."""
    model, (x, y) = _mlp(nn.ReLU), _batch(n=9)
    ups = LocalLearner(model, 3, lr=0.3, activity="sigmoid", center=0.0).updates(x, y)
    a = x
    for l, layer in enumerate([model[0], model[2], model[4]]):
        W, b = layer.weight.detach().clone().requires_grad_(), layer.bias.detach().clone().requires_grad_()
        z = a.detach() @ W.T + b
        loss = nn.functional.binary_cross_entropy_with_logits(z, _onehot_targets(z.shape[1], y), reduction="sum") / len(y)
        gW, gb = torch.autograd.grad(loss, (W, b))
        torch.testing.assert_close(ups[l][0], -0.3 * gW, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(ups[l][1], -0.3 * gb, rtol=1e-12, atol=1e-14)
        a = torch.relu(z.detach())


@pytest.mark.parametrize("activity", ["sigmoid", "map"])
def test_a_sigmoid_network_trains_bit_identically_under_every_activity(activity):
    x, y = _batch(3, n=12)
    base, other = _mlp(nn.Sigmoid, 4), _mlp(nn.Sigmoid, 4)
    a, b = LocalLearner(base, 3, lr=0.5), LocalLearner(other, 3, lr=0.5, activity=activity)
    for k in range(3):
        a.step(x[4 * k : 4 * k + 4], y[4 * k : 4 * k + 4])
        b.step(x[4 * k : 4 * k + 4], y[4 * k : 4 * k + 4])
    for p, q in zip(base.parameters(), other.parameters()):
        assert torch.equal(p, q)


def test_a_relu_cnn_with_sigmoid_activity_equals_the_conv_reference():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(12, 3)).double()
    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(4, 1, 4, 4, generator=g, dtype=DT), torch.tensor([0, 2, 1, 2])
    dW, db = LocalLearner(model, 3, lr=0.4, activity="sigmoid", conv_teaching="position", center=0.0).updates(x, y)[0]
    post = torch.sigmoid(model[0](x))
    target = _onehot_targets(3, y)[:, :, None, None].expand_as(post)
    ref_W, ref_b = local_conv_update_reference(x, post, target, RuleParams(eta=0.4 * 3.0), 1, 1, (3, 3))
    torch.testing.assert_close(dW, torch.tensor(ref_W, dtype=DT), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(db, torch.tensor(ref_b, dtype=DT), rtol=1e-10, atol=1e-12)


def test_other_activations_are_refused_with_the_option_and_the_page_named():
    x, y = _batch()
    with pytest.raises(ConfigError, match=r"^0 \(Linear\) is followed by ReLU, not nn.Sigmoid.*activity='map'.*"
                       r"docs/activations.md"):
        LocalLearner(_mlp(nn.ReLU), 3).step(x, y)
    with pytest.raises(ConfigError, match="followed by Softmax"):
        LocalLearner(nn.Sequential(nn.Linear(6, 4), nn.Softmax(1), nn.Linear(4, 3)).double(), 3,
                     activity="sigmoid").step(x, y)
    with pytest.raises(ConfigError, match="rate mode only"):
        LocalLearner(_mlp(nn.ReLU), 3, activity="sigmoid", mode="timing")
    with pytest.raises(ConfigError, match="activity 'relu': expected one of module, sigmoid, map"):
        LocalLearner(_mlp(nn.ReLU), 3, activity="relu")
    with pytest.raises(ConfigError, match=r"^0 \(Linear\) is followed by ReLU, not nn.Sigmoid"):
        LocalLearner(_mlp(nn.ReLU), 3, rule="dfa").step(x, y)  # the peer rules: sigmoid only


# -- conv teaching "readout" -----------------------------------------------------------------------


def test_readout_error_is_minus_the_gradient_of_the_layers_readout_loss():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 3, 4, 4, generator=g, dtype=DT, requires_grad=True)
    y = torch.tensor([0, 3, 1, 3, 2])
    R = readout_matrix(7, 1, 4, 48, DT, z.device)
    post = torch.sigmoid(z)
    loss = nn.functional.cross_entropy(torch.sigmoid(z).flatten(1) @ R.T, y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, z)
    torch.testing.assert_close(readout_conv_target(post.detach(), y, R) - post.detach(), -grad, rtol=1e-12, atol=1e-14)
    assert torch.equal(R, readout_matrix(7, 1, 4, 48, DT, z.device))  # fixed: the same from (seed, layer, size)
    assert not torch.equal(R, readout_matrix(7, 2, 4, 48, DT, z.device))


def _cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Sigmoid(), nn.MaxPool2d(2),
                         nn.Conv2d(3, 4, 3, padding=1), nn.Sigmoid(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(16, 6), nn.Sigmoid(), nn.Linear(6, 5)).double()


def test_readout_teaching_equals_the_conv_reference_and_stays_local():
    g = torch.Generator().manual_seed(4)
    x, y = torch.rand(3, 1, 8, 8, generator=g, dtype=DT), torch.tensor([4, 0, 2])
    model = _cnn()
    learner = LocalLearner(model, 5, lr=0.3, seed=11, conv_teaching="readout", conv_lr_scale=2.0, center=0.0)
    ups = learner.updates(x, y)
    pre, post = x, torch.sigmoid(model[0](x))
    R = readout_matrix(11, 0, 5, post[0].numel(), DT, post.device)
    ref_W, ref_b = local_conv_update_reference(pre, post, readout_conv_target(post, y, R), RuleParams(eta=0.6), 1, 1,
                                               (3, 3))
    torch.testing.assert_close(ups[0][0], torch.tensor(ref_W, dtype=DT), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ups[0][1], torch.tensor(ref_b, dtype=DT), rtol=1e-10, atol=1e-12)
    for k in range(1, 4):  # a layer above changed: every update below it bit-identical
        other = copy.deepcopy(model)
        with torch.no_grad():
            layer = [m for m in other if isinstance(m, (nn.Conv2d, nn.Linear))][k]
            layer.weight.add_(torch.randn(layer.weight.shape, generator=g, dtype=DT))
        changed = LocalLearner(other, 5, lr=0.3, seed=11, conv_teaching="readout", conv_lr_scale=2.0,
                               center=0.0).updates(x, y)
        assert all(torch.equal(changed[j][0], ups[j][0]) and torch.equal(changed[j][1], ups[j][1]) for j in range(k))
        assert not torch.equal(changed[k][0], ups[k][0])
