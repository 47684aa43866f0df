"""The peer rules on a user's model (issue 24, item 3): ``LocalLearner(model, rule=...)`` equals the
rule's learner on the package MLP, whatever order the model defines its layers in, and shares the
walker's refusals, step's logits, state_dict and requires_grad."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from localstdp import LocalLearner
from localstdp.errors import ConfigError
from localstdp.model import build_model
from localstdp.rules.peers import PEERS, FFScorer, PeerParams
from localstdp.rules.peers.models import ModelPeer

RULES = ["fa", "dfa", "drtp", "pepita", "ff"]
SGD = dict(optimizer="sgd", momentum=0.0)


def data(seed=0, n=7):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 3, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def as_sequential(mlp) -> nn.Sequential:
    mods = [nn.Flatten()]
    for layer in mlp.layers:
        mods += [copy.deepcopy(layer), nn.Sigmoid()]
    return nn.Sequential(*mods[:-1])


class Reordered(nn.Module):
    """The same layers, defined output first: forward calls them in the MLP's order."""

    def __init__(self, mlp):
        super().__init__()
        self.out = copy.deepcopy(mlp.layers[2])
        self.h2, self.h1 = copy.deepcopy(mlp.layers[1]), copy.deepcopy(mlp.layers[0])
        self.s1, self.s2, self.drop = nn.Sigmoid(), nn.Sigmoid(), nn.Dropout(0.0)

    def forward(self, x):
        return self.out(self.drop(self.s2(self.h2(self.s1(self.h1(x.flatten(1)))))))


def weights(model, order):
    return [t for name in order for t in (getattr(model, name).weight, getattr(model, name).bias)]


@pytest.mark.parametrize("rule", RULES)
def test_a_peer_rule_on_a_user_model_equals_its_mlp_learner(rule):
    """Broken functional reuse, call order or fixed-matrix draw: the user's model drifts from the MLP."""
    mlp = build_model(12, [6, 5], 3, "sigmoid", seed=3)
    seq, mine = as_sequential(mlp), Reordered(mlp)
    ref = PEERS[rule](mlp, PeerParams(lr=0.3, **SGD), 3, seed=4)
    learners = [LocalLearner(m, 3, 0.3, rule=rule, seed=4, **SGD) for m in (seq, mine)]
    assert isinstance(learners[1], ModelPeer) and learners[1].rule == rule
    for s in range(3):
        x, y = data(s)
        want = ref.step(x, y)
        for learner in learners:
            assert learner.step(x, y) == pytest.approx(want, rel=1e-6, abs=1e-7)
    assert learners[1].names == ["h1", "h2", "out"]
    ref_w = [t for layer in mlp.layers for t in (layer.weight, layer.bias)]
    for got in ([t for i in (1, 3, 5) for t in (seq[i].weight, seq[i].bias)], weights(mine, ["h1", "h2", "out"])):
        for a, b in zip(got, ref_w):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    moved = sum(float((a - b).detach().abs().sum()) for a, b in zip(ref_w, build_model(12, [6, 5], 3, "sigmoid", 3).parameters()))
    assert moved > 1e-3
    if rule == "ff":  # the prediction: per-label goodness, as FFScorer on the MLP
        x, _ = data(9)
        torch.testing.assert_close(learners[1].predict_module()(x), FFScorer(mlp)(x.flatten(1)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule", RULES)
def test_peer_rules_share_the_walker_refusals_step_logits_and_frozen_parameters(rule):
    mlp = build_model(12, [6, 5], 3, "sigmoid", seed=1)
    cnn = nn.Sequential(nn.Conv2d(1, 2, 2), nn.Sigmoid(), nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(ConfigError, match=rf"^0 \(Conv2d\): rule '{rule}' trains nn.Linear layers only"):
        LocalLearner(cnn, 3, rule=rule)
    with pytest.raises(ConfigError, match=r"^3 \(Linear\) is followed by ReLU"):
        LocalLearner(nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Sigmoid(), nn.Linear(6, 5), nn.ReLU(),
                                   nn.Linear(5, 3)), 3, rule=rule).step(*data())
    with pytest.raises(ConfigError, match="unknown"):
        LocalLearner(as_sequential(mlp), 3, rule=rule, etaa=1.0)
    model = as_sequential(mlp)
    model[1].bias.requires_grad_(False)
    frozen = model[1].bias.clone()
    before = copy.deepcopy(model)
    x, y = data()
    out = LocalLearner(model, 3, 0.5, rule=rule).step(x, y)
    assert torch.equal(model[1].bias, frozen) and not torch.equal(model[1].weight, before[1].weight)
    if rule == "ff":
        assert out.logits is None
    else:
        torch.testing.assert_close(out.logits, before(x), rtol=0, atol=0)


@pytest.mark.parametrize("rule", ["fa", "pepita", "ff"])
def test_peer_state_dict_round_trip_continues_identically(rule, tmp_path):
    from safetensors.torch import load_file, save_file

    mlp = build_model(12, [6, 5], 3, "sigmoid", seed=2)
    model = Reordered(mlp)
    a = LocalLearner(model, 3, 0.05, rule=rule, seed=1)  # Adam: its moments are state
    a.step(*data())
    save_file(a.state_dict(), tmp_path / "s.safetensors")
    twin = copy.deepcopy(model)
    b = LocalLearner(twin, 3, 0.05, rule=rule, seed=8)
    b.load_state_dict(load_file(tmp_path / "s.safetensors"))
    for s in (1, 2):
        assert a.step(*data(s)) == b.step(*data(s))
    assert all(torch.equal(u, v) for u, v in zip(model.state_dict().values(), twin.state_dict().values()))
