"""LocalLearner (the rule on any nn.Module) and the Conv2d update: per-synapse references, locality
over every layer type and mode, bit-identity with the MLP learner, and the refusals."""

from __future__ import annotations

import copy

import pytest
import torch
from legacy_local_rule import LegacyLocalRule
from torch import nn

from localstdp import LocalLearner
from localstdp.errors import ConfigError
from localstdp.model import build_model
from localstdp.rules import LocalRule, RuleParams
from localstdp.rules.functional import (
    local_conv_update,
    local_conv_update_reference,
    pooled_conv_target,
    pooled_conv_update,
    softhebb_conv_update,
)

DT = torch.float64


def _conv_case(seed: int, B=2, C_in=2, C_out=3, H=5, W=4, k=(3, 2), stride=1, padding=0):
    g = torch.Generator().manual_seed(seed)
    pre = torch.rand(B, C_in, H, W, generator=g, dtype=DT)
    w = torch.randn(C_out, C_in, *k, generator=g, dtype=DT)
    post = torch.sigmoid(torch.nn.functional.conv2d(pre, w, stride=stride, padding=padding))
    target = torch.where(torch.rand(post.shape, generator=g, dtype=DT) < 0.5, 0.9, 0.1).to(DT)
    return pre, post, target, w


CONV_PARAMS = [
    RuleParams(mode="rate", eta=0.3),
    RuleParams(mode="rate", eta=0.5, theta=0.4),
    RuleParams(mode="timing", eta=0.7, tau_plus=0.2, tau_minus=0.8, A_plus=0.3, A_minus=0.6, timing_backend="direct"),
    RuleParams(mode="two-phase", eta=0.4, beta=0.2, theta=0.2),
]


@pytest.mark.parametrize("p", CONV_PARAMS, ids=lambda p: f"{p.mode}-theta{p.theta}")
@pytest.mark.parametrize("stride,padding,center", [(1, 0, False), (2, 1, False), (1, 1, True)])
def test_conv_update_matches_per_synapse_loop(p, stride, padding, center):
    pre, post, target, _ = _conv_case(stride + 3 * padding, stride=stride, padding=padding)
    m = torch.tensor([0.3, 0.6], dtype=DT) if center else None
    dW, db = local_conv_update(pre, post, target, p, (3, 2), stride, padding, pre_mean=m)
    ref_W, ref_b = local_conv_update_reference(pre, post, target, p, stride, padding, (3, 2), pre_mean=m)
    torch.testing.assert_close(dW, torch.tensor(ref_W, dtype=DT), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(db, torch.tensor(ref_b, dtype=DT), rtol=1e-10, atol=1e-12)


def test_conv_rate_update_is_the_weight_gradient_of_the_local_error():
    pre, post, target, w = _conv_case(7, B=3, stride=2, padding=1)
    dW, db = local_conv_update(pre, post, target, RuleParams(eta=0.25), (3, 2), 2, 1)
    grad = torch.nn.grad.conv2d_weight(pre, w.shape, target - post, stride=2, padding=1)
    torch.testing.assert_close(dW, 0.25 * grad / 3, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(db, 0.25 * (target - post).sum((0, 2, 3)) / 3, rtol=1e-12, atol=1e-14)


def test_pooled_target_is_the_delta_rule_of_the_channel_mean():
    """Rate mode with pooled targets: dW = eta <(d - mean_p a) mean_p x_p>, db = eta <d - mean_p a>."""
    pre, post, _, _ = _conv_case(3, B=4, padding=1)
    d = torch.tensor([[0.9, 0.1, float("nan")]], dtype=DT).expand(4, 3)
    dW, db = local_conv_update(pre, post, pooled_conv_target(post, d), RuleParams(eta=0.5), (3, 2), 1, 1)
    e = torch.nan_to_num(d - post.mean((2, 3)))  # untaught channel: no error
    cols = torch.nn.functional.unfold(pre, (3, 2), padding=1).mean(2)  # mean patch per example
    torch.testing.assert_close(dW.flatten(1), 0.5 * e.T @ cols / 4, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(db, 0.5 * e.mean(0), rtol=1e-12, atol=1e-14)
    assert torch.all(dW[2] == 0)


@pytest.mark.parametrize("stride,padding,dilation,center,reduction", [
    (1, 0, 1, False, "mean"), (2, 1, 1, True, "mean"), (1, 2, 2, True, "sum"), ((2, 1), (1, 0), (1, 2), False, "mean"),
])
def test_pooled_closed_form_equals_the_unfolded_update(stride, padding, dilation, center, reduction):
    """The closed form (what LocalLearner runs for pooled rate-mode conv layers) against the unfold form, every geometry, the covariance
    rule's bias term and an untaught channel; float64, so equal to rounding."""
    g = torch.Generator().manual_seed(11)
    pre = torch.rand(3, 2, 9, 8, generator=g, dtype=DT)
    w = torch.randn(4, 2, 3, 2, generator=g, dtype=DT)
    post = torch.sigmoid(torch.nn.functional.conv2d(pre, w, stride=stride, padding=padding, dilation=dilation))
    d = torch.where(torch.rand(3, 4, generator=g, dtype=DT) < 0.5, 0.99, 0.01)
    d[:, 1] = float("nan")  # untaught (pairs codes)
    m = torch.tensor([0.3, 0.6], dtype=DT) if center else None
    p = RuleParams(eta=0.7)
    args = ((3, 2), stride, padding, dilation, reduction)
    ref_W, ref_b = local_conv_update(pre, post, pooled_conv_target(post, d), p, *args, pre_mean=m)
    dW, db = pooled_conv_update(pre, post, d, p, *args, pre_mean=m)
    torch.testing.assert_close(dW, ref_W, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(db, ref_b, rtol=1e-12, atol=1e-14)
    assert torch.all(dW[1] == 0) and dW.abs().sum() > 0
    with pytest.raises(ValueError, match="rate mode with theta = 0"):
        pooled_conv_update(pre, post, d, RuleParams(eta=0.7, theta=0.2), *args)


def test_local_learner_takes_the_closed_form_for_pooled_rate_conv_layers(monkeypatch):
    """Pooled teaching in rate mode (theta 0): both conv layers go through pooled_conv_update, whose result
    equals the unfold form of the same rule (local_conv_update on pooled targets) within rounding; with
    theta > 0 (no closed form) the unfold form runs."""
    import localstdp.rules.layerwise as layerwise

    calls = []
    monkeypatch.setattr(layerwise, "pooled_conv_update", lambda *a, **k: calls.append(1) or pooled_conv_update(*a, **k))
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(6, 1, 8, 8, generator=g, dtype=DT), torch.randint(0, 5, (6,), generator=g)
    learner = LocalLearner(_cnn(), 5, lr=0.3, center=0.9)
    ups = learner.updates(x, y)
    assert len(calls) == 2
    ref = LocalLearner(_cnn(), 5, lr=0.3, center=0.9)
    acts = {}
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: acts.__setitem__(k, (i[0], o))) for k, m in
             enumerate(ref.model) if isinstance(m, nn.Sigmoid) or isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        ref.model(x)
    for h in hooks:
        h.remove()
    for l, (conv_i, sig_i) in enumerate([(0, 1), (3, 4)]):
        pre, post = acts[conv_i][0], acts[sig_i][1]
        m = ref.pre_mean(l, pre)
        p = RuleParams(eta=0.3 * ref.conv.lr_scale, center=0.9)
        layer = ref.model[conv_i]
        want = local_conv_update(pre, post, pooled_conv_target(post, ref.targets(l, y)), p, layer.kernel_size,
                                 layer.stride, layer.padding, pre_mean=m)
        torch.testing.assert_close(ups[l][0], want[0], rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(ups[l][1], want[1], rtol=1e-10, atol=1e-13)
    calls.clear()
    LocalLearner(_cnn(), 5, lr=0.3, theta=0.2).updates(x, y)
    assert not calls


def test_softhebb_matches_a_position_loop():
    pre, _, _, w = _conv_case(5, B=2, padding=1)
    dW = softhebb_conv_update(pre, w, 0.3, 0.7, 1, 1)
    xp = torch.nn.functional.pad(pre, (1, 1, 1, 1))
    ref, n = torch.zeros_like(w), 0
    for b in range(2):
        for r in range(xp.shape[2] - 2):
            for c in range(xp.shape[3] - 1):
                patch = xp[b, :, r : r + 3, c : c + 2]
                u = (w * patch).sum((1, 2, 3))
                y = torch.softmax(u / 0.7, 0)
                ref += y[:, None, None, None] * (patch - u[:, None, None, None] * w)
                n += 1
    torch.testing.assert_close(dW, 0.3 * ref / n, rtol=1e-10, atol=1e-12)


def _cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.Sigmoid(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 2, stride=2), nn.Sigmoid(), nn.Flatten(), nn.Dropout(0.0),
        nn.Linear(24, 12), nn.Sigmoid(), nn.Linear(12, 5),
    ).double()


LOCALITY = [
    ("rate", "pooled", {}), ("rate", "pooled", {"center": 0.0}), ("rate", "position", {"center": 0.9}), ("rate", "softhebb", {}),
    ("timing", "pooled", {"timing_backend": "direct", "tau_plus": 0.3}), ("timing", "position", {"timing_backend": "binned"}),
    ("two-phase", "pooled", {"theta": 0.2}), ("rate", "pooled", {"association": "pairs", "theta": 0.3}),
]


@pytest.mark.parametrize("mode,teaching,opts", LOCALITY, ids=lambda v: str(v))
def test_perturbing_a_layer_above_leaves_the_updates_below_bit_identical(mode, teaching, opts):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(6, 1, 8, 8, generator=g, dtype=DT), torch.randint(0, 5, (6,), generator=g)
    model = _cnn()

    def updates(m):  # a fresh learner each time: the running means (center) start equal
        return LocalLearner(m, 5, lr=0.3, mode=mode, conv_teaching=teaching, **opts).updates(x, y)

    base = updates(model)
    assert all(dW.abs().sum() > 0 for dW, _ in base)
    for k in range(1, len(base)):
        other = copy.deepcopy(model)
        with torch.no_grad():
            layer = LocalLearner(other, 5).layers[k]
            layer.weight.add_(torch.randn(layer.weight.shape, generator=g, dtype=DT))
        changed = updates(other)
        for j in range(k):
            assert torch.equal(changed[j][0], base[j][0]) and torch.equal(changed[j][1], base[j][1]), (k, j)
        assert not torch.equal(changed[k][0], base[k][0])


def _sequential_mlp(model) -> nn.Sequential:
    mods = [nn.Flatten()]
    for layer in model.layers:
        mods += [copy.deepcopy(layer), nn.Sigmoid()]
    return nn.Sequential(*mods[:-1])  # the logits z^L, as MLP.forward


MLP_CASES = [
    dict(),
    dict(association="pairs", a_hi=0.99, a_lo=0.01, center=0.99),
    dict(mode="timing", timing_backend="binned", time_bins=8, theta=0.1),
    dict(mode="two-phase", weight_decay=0.01),
    dict(association="random"),
]


@pytest.mark.parametrize("opts", MLP_CASES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_local_learner_on_a_sequential_mlp_equals_local_rule_and_the_legacy_rule(opts):
    """Bit-identical weights after several steps: LocalLearner on an nn.Sequential copy of the package
    MLP, LocalRule on the MLP, and the frozen pre-issue-13 LocalRule (tests/legacy_local_rule.py)."""
    p = RuleParams(eta=0.4, **opts)
    models = [build_model(16, [20, 12], 4, "sigmoid", seed=2) for _ in range(2)]
    seq = _sequential_mlp(models[0])
    learners = [LocalRule(models[0], p, 4, seed=5), LegacyLocalRule(models[1], p, 4, seed=5),
                LocalLearner(seq, 4, lr=0.4, seed=5, **({"center": 0.0} | opts))]
    g = torch.Generator().manual_seed(3)
    for _ in range(4):
        x, y = torch.rand(9, 16, generator=g), torch.randint(0, 4, (9,), generator=g)
        losses = [learner.step(x, y) for learner in learners]
        assert losses[0] == losses[1] == losses[2]
    ref = [t for layer in models[1].layers for t in (layer.weight, layer.bias)]
    for other in (models[0].layers, [m for m in seq if isinstance(m, nn.Linear)]):
        assert all(torch.equal(a, b) for a, b in zip([t for layer in other for t in (layer.weight, layer.bias)], ref))
    for key, value in learners[1].state_tensors().items():  # association maps (NaN: untaught), running means
        for learner in (learners[0], learners[2]):
            torch.testing.assert_close(learner.state_tensors()[key], value, rtol=0, atol=0, equal_nan=True)


def test_local_rule_with_receptive_fields_equals_the_legacy_rule():
    p = RuleParams(eta=0.3, association="pairs", center=0.9)
    models = [build_model(36, [10, 6], 3, "sigmoid", seed=1, receptive_field=3) for _ in range(2)]
    rules = [LocalRule(models[0], p, 3, seed=0), LegacyLocalRule(models[1], p, 3, seed=0)]
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.rand(7, 36, generator=g), torch.randint(0, 3, (7,), generator=g)
        assert rules[0].step(x, y) == rules[1].step(x, y)
        new, old = rules[0].updates(x, y, reduction="sum")[0], rules[1].updates(x, y, reduction="sum")[0]
        assert all(torch.equal(a, b) for u, v in zip(new, old) for a, b in zip(u, v))
    assert all(torch.equal(a, b) for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()))


def test_state_tensors_round_trip_continues_identically():
    g = torch.Generator().manual_seed(4)
    batches = [(torch.rand(5, 1, 8, 8, generator=g, dtype=DT), torch.randint(0, 5, (5,), generator=g)) for _ in range(3)]
    a = LocalLearner(_cnn(), 5, lr=0.2, center=0.9, association="random")
    a.step(*batches[0])
    model_b = copy.deepcopy(a.model)
    b = LocalLearner(model_b, 5, lr=0.2, center=0.9, association="random", seed=99)  # other codes until loaded
    b.load_state_tensors(a.state_tensors())
    assert set(a.state_tensors()) == {f"rule.{k}.{l}" for k in ("association", "pre_mean") for l in range(4)}
    for x, y in batches[1:]:
        assert a.step(x, y) == b.step(x, y)
    assert all(torch.equal(u, v) for u, v in zip(a.model.state_dict().values(), model_b.state_dict().values()))


def test_same_padding_equals_explicit_padding_and_the_model_is_not_modified():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 1, 6, 6, generator=g), torch.randint(0, 3, (4,), generator=g)

    def net(pad):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 3, 3, padding=pad), nn.Sigmoid(), nn.Flatten(), nn.Linear(108, 3))

    same, explicit = net("same"), net(1)
    ups = [LocalLearner(m, 3).updates(x, y) for m in (same, explicit)]
    assert all(torch.equal(a, b) for u, v in zip(*ups) for a, b in zip(u, v))
    assert same[0].padding == "same"


def _refused(model, match, **kw):
    with pytest.raises(ConfigError, match=match):
        learner = LocalLearner(model, kw.pop("n_classes", 3), **kw)
        learner.step(torch.rand(2, 1, 4, 4), torch.tensor([0, 1]))


class _Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 5), nn.Linear(5, 3)

    def forward(self, x):
        return self.fc2(torch.sigmoid(self.fc1(x.flatten(1))))


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn, self.out = nn.MultiheadAttention(4, 1), nn.Linear(16, 3)


def test_refusals_name_the_module():
    flat = nn.Flatten()
    _refused(nn.Sequential(flat, nn.Linear(16, 5), nn.BatchNorm1d(5), nn.Sigmoid(), nn.Linear(5, 3)),
             r"^2 \(BatchNorm1d\) has trainable parameters.*without affine")
    _refused(_Attention(), r"^attn \(MultiheadAttention\) has trainable")
    _refused(nn.Sequential(flat, nn.Linear(16, 5), nn.ReLU(), nn.Linear(5, 3)), r"^1 \(Linear\) is followed by ReLU")
    _refused(_Functional(), r"^fc1 \(Linear\) is followed by Linear, not nn.Sigmoid")
    _refused(nn.Sequential(flat, nn.Sigmoid()), "no learnable")
    _refused(nn.Sequential(nn.Conv2d(1, 2, 3, groups=1), nn.Sigmoid(), nn.Conv2d(2, 2, 1, groups=2), nn.Sigmoid(),
                           flat, nn.Linear(8, 3)), r"^2 \(Conv2d\): groups = 2")
    _refused(nn.Sequential(nn.Conv2d(1, 2, 2, padding="same"), nn.Sigmoid(), flat, nn.Linear(32, 3)), "unevenly")
    _refused(nn.Sequential(flat, nn.Linear(16, 5), nn.Sigmoid(), nn.Dropout(inplace=True), nn.Linear(5, 3)),
             r"^3 \(Dropout\) works in place")
    _refused(nn.Sequential(flat, nn.Linear(16, 5), nn.Sigmoid(), nn.Linear(5, 4)), "no learnable nn.Linear with n_classes = 3")
    _refused(nn.Sequential(flat, nn.Linear(16, 3), nn.Sigmoid(), nn.Linear(3, 4)), r"^3 \(Linear\) is the output layer")
    shared = nn.Linear(16, 16)
    _refused(nn.Sequential(flat, shared, nn.Sigmoid(), shared, nn.Sigmoid(), nn.Linear(16, 3)), "called twice")
    _refused(nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.Flatten(), nn.Linear(16, 3)), r"receives a 4-D input")
    _refused(nn.Sequential(flat, nn.Linear(16, 3)), "unknown rule option.*etaa", etaa=1)


def test_frozen_modules_and_parameter_free_ones_pass_activity_forward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.LayerNorm(8),
                          nn.Dropout(0.5), nn.Linear(8, 3))
    model[3].requires_grad_(False)
    model[4].requires_grad_(False)
    learner = LocalLearner(model, 3)
    assert learner.names == ["1", "6"]
    frozen = model[3].weight.clone()
    learner.step(torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0]))
    assert torch.equal(model[3].weight, frozen)
