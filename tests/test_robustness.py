"""Attack properties on tiny models, and the masking checks on a deliberately masked model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from localstdp import robustness as R

SMALL = R.AttackSettings(eps=(0.05, 0.1, 0.3, 1.0), pgd_steps=20, pgd_restarts=2, square_queries=30,
                         search_queries=50)


def linear_model(d: int = 6, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Linear(d, 2)
    with torch.no_grad():
        m.weight.mul_(8.0)
        m.bias.copy_(-m.weight.sum(1) * 0.5)  # boundary through the middle of the cube
    return m


def data(model: nn.Module, n: int = 120, d: int = 6, seed: int = 0):
    x = np.random.default_rng(seed).uniform(size=(n, d)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()
    return x, y


def curved_model(seed: int = 0):
    """A small tanh MLP fitted to two concentric circles: a curved boundary where one sign step
    (FGSM) lands short of what 40 small projected steps (PGD) reach."""
    from sklearn.datasets import make_circles

    x, y = make_circles(400, noise=0.05, factor=0.5, random_state=seed)
    x = ((x - x.min(0)) / (x.max(0) - x.min(0))).astype(np.float32)
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
    opt = torch.optim.Adam(m.parameters(), 0.02)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(m(xt), yt).backward()
        opt.step()
    return m, x, y.astype(np.int64)


class Saturated(nn.Module):
    """An ordinary forward whose sigmoid saturates in float32: the input gradient is exactly zero
    almost everywhere (gradient masking by construction), yet the decision depends on x."""

    def __init__(self, d: int):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d) / d)

    def forward(self, x):
        h = torch.sigmoid(1e4 * (x.flatten(1) @ self.w - 0.5))
        return torch.stack([1 - h, h], 1) * 5


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "noise", "random_search", "square"])
def test_eps_zero_returns_input_and_bounds_hold(attack):
    m = linear_model(d=64)
    x, y = data(m, n=40, d=64)
    shape = (1, 8, 8) if attack == "square" else (64,)
    xs = x.reshape((len(x), *shape))
    clf = R.make_classifier(m if attack != "square" else nn.Sequential(nn.Flatten(), m), shape, 2, "ce")

    def run(eps):
        if attack == "fgsm":
            return R.fgsm(clf, xs, y, eps)
        if attack == "pgd":
            return R.pgd(clf, xs, y, eps, steps=10, restarts=2, seed=3)
        if attack == "noise":
            return R.sign_noise(xs, eps, seed=3)
        if attack == "random_search":
            return R.random_search(m, xs, y, eps, queries=20, seed=3)
        return R.square(clf, xs, y, eps, queries=20, seed=3)

    np.testing.assert_array_equal(run(0.0), xs)
    for eps in (0.05, 0.3):
        adv = run(eps)
        assert adv.shape == xs.shape and adv.dtype == np.float32
        assert adv.min() >= 0.0 and adv.max() <= 1.0
        assert np.abs(adv - xs).max() <= eps + 1e-6
        assert np.abs(adv - xs).max() > 0  # it did move


def test_fgsm_matches_autograd_reference():
    m = linear_model()
    x, y = data(m)
    eps = 0.1
    adv = R.fgsm(R.make_classifier(m, (6,), 2, "ce"), x, y, eps)
    xt = torch.from_numpy(x).requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(m(xt), torch.from_numpy(y), reduction="sum"), xt)
    ref = (xt.detach() + eps * g.sign()).clamp(0, 1).numpy()
    np.testing.assert_allclose(adv, ref, atol=1e-6)


def test_margin_loss_matches_direct_formula():
    z = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, 1.0]])
    y = torch.tensor([0, 2])
    np.testing.assert_allclose(R.margins(z, y).numpy(), [0.5 - 2.0, 3.0 - 1.0])
    onehot = torch.eye(3)[y]
    assert float(R.MarginLoss()(z, onehot)) == pytest.approx(-1.5 + 2.0)
    assert float(R.MarginLoss()(z, y)) == pytest.approx(0.5)


def test_pgd_at_least_as_strong_as_fgsm_on_curved_model():
    m, x, y = curved_model()
    assert R.correct(m, x, y).mean() > 0.99
    ce, mg = R.make_classifier(m, (2,), 2, "ce"), R.make_classifier(m, (2,), 2, "margin")
    gap = {}
    for eps in (0.05, 0.1, 0.15, 0.2):
        f = R.correct(m, R.fgsm(ce, x, y, eps), y).mean()
        p = (R.correct(m, R.pgd(ce, x, y, eps, 40, 2, 0), y) & R.correct(m, R.pgd(mg, x, y, eps, 40, 2, 0), y)).mean()
        assert p <= f
        gap[eps] = f - p
    assert gap[0.15] > 0.05 and gap[0.2] > 0.03  # strictly stronger where the boundary bends


def test_attacks_are_deterministic_given_seed():
    m = linear_model(d=64)
    x, y = data(m, n=30, d=64)
    xi = x.reshape(-1, 1, 8, 8)
    clf = R.make_classifier(nn.Sequential(nn.Flatten(), m), (1, 8, 8), 2, "margin")
    np.testing.assert_array_equal(R.pgd(clf, xi, y, 0.2, 5, 2, seed=1), R.pgd(clf, xi, y, 0.2, 5, 2, seed=1))
    np.testing.assert_array_equal(R.square(clf, xi, y, 0.2, 10, seed=1), R.square(clf, xi, y, 0.2, 10, seed=1))
    assert not np.array_equal(R.sign_noise(x, 0.2, 1), R.sign_noise(x, 0.2, 2))


def test_square_needs_images_and_settings_validate():
    m = linear_model()
    x, y = data(m, n=5)
    with pytest.raises(ValueError, match="image"):
        R.square(R.make_classifier(m, (6,), 2), x, y, 0.1)
    with pytest.raises(ValueError, match="eps"):
        R.fgsm(R.make_classifier(m, (6,), 2), x, y, 1.5)
    with pytest.raises(ValueError):
        R.AttackSettings(eps=(0.2, 0.1))
    with pytest.raises(ValueError):
        R.AttackSettings(pgd_steps=0)


def _suite(model, x, y, shape, settings=SMALL):
    res = R.attack_suite(model, x, y, shape, 2, settings, seed=0)
    R.add_transfer(model, res, res, y.reshape(-1))  # self-transfer: only to complete the set
    R.add_worst(res)
    return res


def test_clean_model_passes_every_check():
    m = linear_model()
    x, y = data(m)
    res = _suite(m, x, y, (6,))
    assert res.zero_gradient_fraction == 0.0
    acc = res.accuracy()
    assert set(acc) == {"fgsm", "pgd", "random_search", "noise", "transfer", "worst"}
    assert acc["pgd"]["1.0"] == 0.0 and acc["fgsm"]["1.0"] == 0.0
    # worst is the per-example minimum: never above any single attack
    for a in acc:
        for k in acc[a]:
            assert acc["worst"][k] <= acc[a][k]
    out = R.masking_checks(res, 2, SMALL)
    assert out["checks"] == {c: True for c in R.CHECKS}


def test_masking_checks_flag_a_saturated_model():
    d = 6
    m = Saturated(d)
    x = np.random.default_rng(1).uniform(size=(150, d)).astype(np.float32)
    with torch.no_grad():
        y = m(torch.from_numpy(x)).argmax(1).numpy()
    assert 0.2 < y.mean() < 0.8
    res = _suite(m, x, y, (d,))
    assert res.zero_gradient_fraction > 0.9
    out = R.masking_checks(res, 2, SMALL)
    # FGSM cannot move (zero gradient): it keeps high accuracy even unbounded, and random vertices /
    # noise break examples that the white-box attacks miss
    assert res.accuracy()["fgsm"]["1.0"] > 0.9
    assert out["checks"]["unbounded_to_chance"] is False
    assert out["checks"]["whitebox_beats_blackbox"] is False
    assert out["values"]["whitebox_beats_blackbox"] > 0.1


def test_zero_gradient_fraction_counts_examples():
    m = Saturated(4)
    x = np.full((4, 4), 0.9, dtype=np.float32)
    x[0] = 0.5  # exactly on the boundary: sigmoid'(0) > 0
    y = np.ones(4, dtype=np.int64)
    assert R.zero_gradient_fraction(m, x, y) == pytest.approx(0.75)


def test_masking_check_values_from_hand_numbers():
    n = 10
    keys = ["0.1", "1.0"]
    t, f = np.ones(n, bool), np.zeros(n, bool)
    half = np.array([True] * 5 + [False] * 5)
    res = R.SuiteResult(clean=t.copy(), correct={
        "fgsm": {"0.1": half.copy(), "1.0": f.copy()},
        "pgd": {"0.1": t.copy(), "1.0": f.copy()},  # PGD weaker than FGSM at 0.1: suspicious
        "noise": {"0.1": t.copy(), "1.0": f.copy()},
    })
    R.add_worst(res)
    s = R.AttackSettings(eps=(0.1, 1.0), tol=0.0)
    out = R.masking_checks(res, 2, s)
    assert out["values"]["pgd_le_fgsm"] == pytest.approx(0.5)
    assert out["checks"]["pgd_le_fgsm"] is False
    assert out["checks"]["monotone_in_eps"] is True
    assert out["checks"]["unbounded_to_chance"] is True
    assert out["checks"]["whitebox_beats_blackbox"] is True
    assert "transfer_not_stronger" not in out["checks"]  # not run, not claimed
    assert list(res.correct["worst"]) == keys
