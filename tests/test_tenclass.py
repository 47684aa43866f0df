"""Ten-class tasks: pairwise association codes (checked against a per-synapse reference), the
ten-class configs, and the full Fashion-MNIST files when Debian's dataset-fashion-mnist is there."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

import localstdp
from localstdp.config import load_config
from localstdp.data import load_dataset
from localstdp.errors import ConfigError
from localstdp.model import build_model
from localstdp.rules.association import make_associations, pairwise_codes
from localstdp.rules.functional import fill_untaught, local_update_reference
from localstdp.rules.local import LocalRule
from localstdp.rules.params import RuleParams
from localstdp.train import train

CONFIGS = Path(localstdp.__file__).parent / "configs"
FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_pairwise_codes_cover_every_pair_once_per_cycle():
    A = pairwise_codes(50, 10)
    assert A.shape == (50, 10)
    taught = ~torch.isnan(A)
    assert taught.sum(1).tolist() == [2] * 50  # every neuron is taught on exactly two classes
    assert (A[taught] == 1).sum() == 50 and (A[taught] == 0).sum() == 50
    pairs = [(int((A[j] == 1).nonzero()), int((A[j] == 0).nonzero())) for j in range(50)]
    expected = [(a, b) for a in range(10) for b in range(a + 1, 10)]
    assert pairs[:45] == expected and pairs[45:] == expected[:5]
    with pytest.raises(ValueError):
        pairwise_codes(3, 1)


def test_pairs_association_layers():
    maps = make_associations([20, 6, 3], 3, "pairs", 0.5, torch.Generator().manual_seed(0))
    assert torch.isnan(maps[0]).any()  # first hidden layer: one-vs-one
    assert torch.equal(maps[1], torch.eye(3)[torch.arange(6) % 3])  # deeper: balanced one-hot
    assert torch.equal(maps[2], torch.eye(3))
    assert RuleParams(association="pairs").association == "pairs"
    with pytest.raises(ConfigError):
        RuleParams(association="pair")


def test_fill_untaught():
    t = torch.tensor([[0.9, float("nan")], [float("nan"), 0.1]])
    a = torch.tensor([[0.3, 0.4], [0.5, 0.6]])
    assert torch.equal(fill_untaught(t, a), torch.tensor([[0.9, 0.4], [0.5, 0.1]]))
    full = torch.tensor([[0.9, 0.1]])
    assert fill_untaught(full, a[:1]) is full


@pytest.mark.parametrize("mode", ["rate", "timing"])
def test_pairs_step_matches_per_synapse_reference(mode):
    """One LocalRule step with pairwise codes equals the loop reference with hand-made targets:
    a_hi on the pair's first class, a_lo on its second, the neuron's own activity elsewhere."""
    torch.manual_seed(0)
    p = RuleParams(eta=0.3, association="pairs", mode=mode, a_hi=0.95, a_lo=0.05, timing_backend="direct")
    model = build_model(5, [7], 4, "sigmoid", seed=3).double()
    rule = LocalRule(model, p, n_classes=4, seed=0)
    rule.associations = [A.double() for A in rule.associations]
    x = torch.rand(6, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1, 2])
    acts = [a.clone() for a in model.activities(x)]
    before = [(l.weight.clone(), l.bias.clone()) for l in model.layers]
    rule.step(x, y)
    pairs = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    h = acts[1]
    target_h = h.clone()
    for bi in range(6):
        for j in range(7):
            a, b = pairs[j % 6]
            if int(y[bi]) == a:
                target_h[bi, j] = 0.95
            elif int(y[bi]) == b:
                target_h[bi, j] = 0.05
    target_o = torch.full((6, 4), 0.05, dtype=torch.float64)
    target_o[torch.arange(6), y] = 0.95
    for l, (pre, post, tgt) in enumerate([(acts[0], h, target_h), (h, acts[2], target_o)]):
        dW, db = local_update_reference(pre, post, tgt, p)
        W0, b0 = before[l]
        assert torch.allclose(model.layers[l].weight - W0, torch.tensor(dW, dtype=torch.float64), atol=1e-12)
        assert torch.allclose(model.layers[l].bias - b0, torch.tensor(db, dtype=torch.float64), atol=1e-12)
    # a neuron whose pair does not contain the label of any example is left exactly unchanged
    y2 = torch.zeros(6, dtype=torch.long)  # only class 0: neurons of pairs (1,2), (1,3), (2,3) untaught
    W0 = model.layers[0].weight.clone()
    rule.step(x, y2)
    assert torch.equal(model.layers[0].weight[3:6], W0[3:6])
    assert not torch.equal(model.layers[0].weight[0:3], W0[0:3])


@pytest.mark.parametrize("name,eta,center,bp_lr,hidden,rf,schedule", [
    ("mnist-10", 0.3, 0.99, 0.003, [1024, 64], 10, "constant"),
    ("digits", 0.2, 0.0, 0.003, [128, 64], 0, "constant"),
    ("fashion-mnist", 1.0, 0.99, 0.004, [2048, 64], 8, "cosine"),
])
def test_tenclass_configs_load(name, eta, center, bp_lr, hidden, rf, schedule):
    cfg = load_config(CONFIGS / f"{name}.toml")
    assert cfg.rule.association == "pairs" and cfg.rule.eta == cfg.train.lr == eta and cfg.rule.center == center
    assert (cfg.rule.a_hi, cfg.rule.a_lo) == (0.99, 0.01) and cfg.backprop.lr == bp_lr
    assert cfg.data.classes is None  # all ten classes
    assert cfg.model.hidden == hidden and cfg.model.receptive_field == rf
    assert cfg.train.lr_schedule == schedule


def test_digits_ten_classes_local_rule_learns():
    """A short, seeded run of the shipped digits config: far above chance (0.1) for both methods.
    (The ablation numbers in docs/ablation.md come from the full epoch budget.)"""
    cfg = load_config(CONFIGS / "digits.toml").with_overrides(epochs=10)
    ds = load_dataset(cfg.data)
    assert ds.n_classes == 10 and ds.x_train.shape == (1068, 64) and ds.x_val.shape == (189, 64)
    torch.manual_seed(0)
    local = train(cfg, "local", dataset=ds)
    bp = train(cfg, "backprop", dataset=ds)
    assert local["test_accuracy"] > 0.8, local["test_accuracy"]
    assert bp["test_accuracy"] > 0.5, bp["test_accuracy"]
    again = train(cfg, "local", dataset=ds)
    assert again["test_accuracy"] == local["test_accuracy"]  # deterministic


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian package dataset-fashion-mnist is not installed "
                                                 "(apt-get install dataset-fashion-mnist)")
@pytest.mark.slow
def test_full_fashion_mnist_loads():
    cfg = load_config(CONFIGS / "fashion-mnist.toml")
    ds = load_dataset(cfg.data)
    assert ds.x_train.shape == (51000, 784) and ds.x_val.shape == (9000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.n_classes == 10 and ds.input_shape == (1, 28, 28)
    assert torch.bincount(ds.y_train).tolist() == [5100] * 10  # 6000 per class, 15% held out for validation
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert 0.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) == 1.0
    assert math.isclose(float(ds.x_train.mean()), 0.2860, abs_tol=5e-4)  # the published pixel mean
    small = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=4))
    sub = dataclasses.replace(ds, x_train=ds.x_train[:2000], y_train=ds.y_train[:2000],
                              x_test=ds.x_test[:1000], y_test=ds.y_test[:1000])
    m = train(small, "local", dataset=sub)
    assert m["test_accuracy"] > 0.6, m["test_accuracy"]


@pytest.mark.parametrize("mode,theta", [("rate", 0.0), ("rate", 0.3), ("timing", 0.0), ("timing", 0.3), ("two-phase", 0.2)])
def test_centred_update_matches_reference(mode, theta):
    """The covariance rule (presynaptic factor a - m, bias absorbing -dW m) against the loop reference."""
    from localstdp.rules.functional import local_update

    g = torch.Generator().manual_seed(1)
    pre, post = torch.rand(5, 4, generator=g, dtype=torch.float64), torch.rand(5, 3, generator=g, dtype=torch.float64)
    target = torch.rand(5, 3, generator=g, dtype=torch.float64)
    m = torch.rand(4, generator=g, dtype=torch.float64)
    p = RuleParams(eta=0.7, mode=mode, theta=theta, timing_backend="direct", tau_plus=0.4, tau_minus=0.6, beta=0.05)
    dW, db = local_update(pre, post, target, p, pre_mean=m)
    rW, rb = local_update_reference(pre, post, target, p, pre_mean=m)
    assert torch.allclose(dW, torch.tensor(rW, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(db, torch.tensor(rb, dtype=torch.float64), atol=1e-12)
    # the same step in the centred parametrisation z = W (a - m) + b': W (a - m) + b' is unchanged
    # by the bias correction, i.e. db = db_plain - dW m
    _, db_plain = local_update(pre, post, target, p)
    assert torch.allclose(db, db_plain - dW @ m, atol=1e-12)


def test_rule_center_running_mean_step_and_state():
    cfg_p = RuleParams(eta=0.2, center=0.9)
    model = build_model(6, [5], 3, "sigmoid", seed=0).double()
    rule = LocalRule(model, cfg_p, n_classes=3, seed=0)
    g = torch.Generator().manual_seed(2)
    x1, x2 = torch.rand(4, 6, generator=g, dtype=torch.float64), torch.rand(4, 6, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    rule.step(x1, y)
    assert torch.allclose(rule.pre_means[0], x1.mean(0))  # the first batch starts the mean
    W0, b0 = model.layers[0].weight.clone(), model.layers[0].bias.clone()
    acts = model.activities(x2)
    rule.step(x2, y)
    m = 0.9 * x1.mean(0) + 0.1 * x2.mean(0)
    assert torch.allclose(rule.pre_means[0], m, atol=1e-15)
    rW, rb = local_update_reference(acts[0], acts[1], rule.targets(0, y), cfg_p, pre_mean=m)
    assert torch.allclose(model.layers[0].weight - W0, torch.tensor(rW, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(model.layers[0].bias - b0, torch.tensor(rb, dtype=torch.float64), atol=1e-12)
    state = rule.state_tensors()
    assert torch.equal(state["rule.pre_mean.0"], rule.pre_means[0]) and "rule.pre_mean.1" in state
    other = LocalRule(build_model(6, [5], 3, "sigmoid", seed=0).double(), cfg_p, n_classes=3, seed=0)
    other.load_state_tensors(state)
    assert torch.equal(other.pre_means[1], rule.pre_means[1])
    plain = LocalRule(build_model(6, [5], 3, "sigmoid", seed=0), RuleParams(), n_classes=3)
    plain.step(x1.float(), y)
    assert plain.pre_means == [None, None] and not any(k.startswith("rule.pre_mean") for k in plain.state_tensors())
    with pytest.raises(ConfigError, match="center"):
        RuleParams(center=1.0)


def test_checkpoint_whose_header_length_starts_with_0x80_loads(tmp_path):
    """A safetensors header length with low byte 0x80 is not a pickle (adding a config key such as
    rule.center once made real checkpoints hit this)."""
    from localstdp.checkpoint import load_checkpoint, save_checkpoint

    t = {"w": torch.arange(3.0)}
    for pad in range(400):
        path = tmp_path / f"c{pad}.safetensors"
        save_checkpoint(path, t, {"kind": "model", "pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("no padding gave a header length with low byte 0x80")
    tensors, meta = load_checkpoint(path)
    assert torch.equal(tensors["w"], t["w"]) and meta["pad"] == "x" * pad


# --- fixed receptive fields of the first hidden layer (model.receptive_field, round 2 of issue 7) ---


def test_receptive_field_mask_is_one_square_patch_per_neuron():
    from localstdp.config import config_from_dict as load_config_dict
    from localstdp.model import receptive_field_mask

    M = receptive_field_mask(40, 64, 3, torch.Generator().manual_seed(5))
    assert M.shape == (40, 64) and M.sum(1).tolist() == [9.0] * 40
    for row in M.reshape(40, 8, 8):
        r, c = row.nonzero(as_tuple=True)
        assert r.max() - r.min() == 2 and c.max() - c.min() == 2  # one contiguous 3 x 3 square
    assert torch.equal(M, receptive_field_mask(40, 64, 3, torch.Generator().manual_seed(5)))
    assert receptive_field_mask(2, 64, 8, torch.Generator()).sum().item() == 128  # side = image: full
    for n_in, side in ((63, 3), (64, 9), (64, 0)):
        with pytest.raises(ValueError):
            receptive_field_mask(2, n_in, side, torch.Generator())
    with pytest.raises(ConfigError, match="receptive_field"):
        load_config_dict({"data": {"name": "iris"}, "model": {"receptive_field": -1}})
    cfg = load_config_dict({"data": {"name": "iris"}, "model": {"receptive_field": 3}, "train": {"epochs": 1}})
    with pytest.raises(ConfigError, match="square input image of side >= 3"):  # iris: 4 features = 2 x 2
        train(cfg, "local")


def test_build_model_masks_only_the_first_layer():
    full, masked = build_model(16, [6, 5], 3, "sigmoid", seed=4), build_model(16, [6, 5], 3, "sigmoid", 4, 2)
    M = masked.in_mask
    assert full.in_mask is None and M.shape == (6, 16) and M.sum().item() == 6 * 4
    assert torch.equal(masked.layers[0].weight, full.layers[0].weight * M)  # same init, absent synapses 0
    assert all(torch.equal(a, b) for a, b in zip(list(full.state_dict().values())[1:], list(masked.state_dict().values())[1:]))
    assert "in_mask" not in masked.state_dict()  # not persistent: checkpoints hold only weights


@pytest.mark.parametrize("center", [0.0, 0.9])
def test_masked_local_step_matches_reference(center):
    """With fixed connectivity an absent synapse never changes, a present one takes the loop
    reference's step, and the covariance rule's bias term counts only present synapses."""
    p = RuleParams(eta=0.4, center=center, association="pairs", a_hi=0.95, a_lo=0.05)
    model = build_model(9, [7], 3, "sigmoid", 1, 2).double()
    rule = LocalRule(model, p, n_classes=3, seed=0)
    M = model.in_mask
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(5, 9, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 2, 0])
    acts = model.activities(x)
    W0, b0 = model.layers[0].weight.clone(), model.layers[0].bias.clone()
    W1 = model.layers[1].weight.clone()
    rule.step(x, y)
    m = x.mean(0) if center else None
    target = fill_untaught(rule.targets(0, y), acts[1])
    rW, rb = local_update_reference(acts[0], acts[1], target, p, pre_mean=m)
    rW, rb = torch.tensor(rW, dtype=torch.float64), torch.tensor(rb, dtype=torch.float64)
    kept = rW * M
    assert torch.allclose(model.layers[0].weight - W0, kept, atol=1e-12)
    assert torch.equal(model.layers[0].weight * (1 - M), torch.zeros_like(W0))
    expected_db = rb if m is None else rb + (rW - kept) @ m  # = eta mean(e) - (M * dW) m
    assert torch.allclose(model.layers[0].bias - b0, expected_db, atol=1e-12)
    if m is not None:
        e_mean = 0.4 * (target - acts[1]).mean(0)
        assert torch.allclose(model.layers[0].bias - b0, e_mean - kept @ m, atol=1e-12)
    assert not torch.equal(model.layers[1].weight, W1)  # the output layer is fully connected
    dW, db = rule.layer_update(0, acts[0], acts[1], y)  # the data-parallel path masks too
    assert torch.equal(dW * (1 - M), torch.zeros_like(dW))


def test_masked_backprop_matches_autograd_on_present_synapses():
    """Backprop with fixed connectivity = Adam on the gradient restricted to present synapses."""
    from localstdp.rules.backprop import Backprop, BackpropParams

    model = build_model(9, [6], 3, "sigmoid", 2, 2).double()
    ref = build_model(9, [6], 3, "sigmoid", 2).double()
    M = model.in_mask
    with torch.no_grad():
        ref.layers[0].weight.mul_(M)
    bp = Backprop(model, BackpropParams(lr=0.05), n_classes=3)
    opt = torch.optim.Adam(ref.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        x, y = torch.rand(8, 9, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g)
        bp.step(x, y)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(x), y).backward()
        ref.layers[0].weight.grad.mul_(M)
        opt.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-12)
    assert torch.equal(model.layers[0].weight * (1 - M), torch.zeros_like(M, dtype=torch.float64))
