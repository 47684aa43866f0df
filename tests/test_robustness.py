"""Attack properties on tiny models, and the masking checks on a deliberately masked model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from localstdp import robustness as R


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The models here are tiny: one intra-op thread. A second one only spins, and on a loaded 2-core
    machine that spinning made this file ~30x slower (4 min instead of 7 s)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SMALL = R.AttackSettings(eps=(0.05, 0.1, 0.3, 1.0), pgd_steps=20, pgd_restarts=2, square_queries=30,
                         search_queries=50, apgd_steps=20, autoattack_queries=50)


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


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "noise", "random_search", "square", "apgd", "autoattack",
                                    "autoattack_tabular"])
def test_eps_zero_returns_input_and_bounds_hold(attack):
    m = linear_model(d=64)
    x, y = data(m, n=40, d=64)
    image = attack in ("square", "autoattack")
    shape = (1, 8, 8) if image else (64,)
    xs = x.reshape((len(x), *shape))
    net = nn.Sequential(nn.Flatten(), m) if image else m
    clf = R.make_classifier(net, shape, 2, "ce")

    def run(eps):
        if attack == "fgsm":
            return R.fgsm(clf, xs, y, eps)
        if attack == "pgd":
            return R.pgd(clf, xs, y, eps, steps=10, restarts=2, seed=3)
        if attack == "noise":
            return R.sign_noise(xs, eps, seed=3)
        if attack == "random_search":
            return R.random_search(m, xs, y, eps, queries=20, seed=3)
        if attack == "apgd":
            return R.apgd(clf, xs, y, eps, steps=10, restarts=2, seed=3)
        if attack.startswith("autoattack"):  # APGD-CE, APGD-margin, then Square (image) / random search
            return R.autoattack(net, xs, y, eps, 2, steps=10, restarts=1, queries=20, seed=3)
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
    # the per-example values ART's compute_loss asks for (APGD compares them example by example)
    np.testing.assert_allclose(R.MarginLoss("none")(z, onehot).numpy(), [-1.5, 2.0])
    assert float(R.MarginLoss("mean")(z, y)) == pytest.approx(0.25)
    clf = R.make_classifier(nn.Identity(), (3,), 3, "margin")
    np.testing.assert_allclose(clf.compute_loss(z.numpy(), onehot.numpy(), reduction="none"), [-1.5, 2.0])
    with pytest.raises(ValueError, match="reduction"):
        R.MarginLoss("max")(z, y)


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


@pytest.mark.parametrize("bad", [dict(apgd_steps=0), dict(apgd_restarts=0), dict(autoattack_queries=0),
                                 dict(apgd_steps=2.5), dict(apgd_restarts=True), dict(autoattack="yes"),
                                 dict(autoattack=1)])
def test_autoattack_settings_validate(bad):
    with pytest.raises(ValueError):
        R.AttackSettings(**bad)


def test_autoattack_defaults():
    s = R.AttackSettings()
    assert s.autoattack is True and s.apgd_steps == 50 and s.apgd_restarts == 1
    assert s.autoattack_queries is None  # the suite's own Square run is AutoAttack's gradient-free part
    assert R.AttackSettings(autoattack=False, apgd_steps=7, autoattack_queries=5000).autoattack_queries == 5000


def test_dlr_loss_needs_three_classes():
    m = linear_model()
    x, y = data(m, n=5)
    with pytest.raises(ValueError, match="3 classes"):
        R.apgd(R.make_classifier(m, (6,), 2), x, y, 0.1, loss_type="difference_logits_ratio")


def test_autoattack_at_least_as_strong_as_fgsm_and_pgd_on_curved_model():
    m, x, y = curved_model()
    ce = R.make_classifier(m, (2,), 2, "ce")
    for eps in (0.05, 0.1, 0.15, 0.2):
        f = R.correct(m, R.fgsm(ce, x, y, eps), y).mean()
        adv, by = R.autoattack_parts(m, x, y, eps, 2, steps=20, restarts=1, queries=100, seed=1)
        assert np.abs(adv - x).max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        a = R.correct(m, adv, y)
        np.testing.assert_array_equal(a, R.correct(m, x, y) & (by < 0))  # robust = survived every part
        assert set(np.unique(by)) <= {-1, 0, 1, 2}
        assert a.mean() <= f
        if eps == 0.15:  # where one sign step lands short (see the PGD test): APGD goes further
            assert f - a.mean() > 0.05
            p = R.correct(m, R.pgd(ce, x, y, eps, 40, 2, 0), y).mean()
            assert a.mean() <= p + 0.01
    # the margin component alone (our MarginLoss, through ART's compute_loss) is an attack too
    mg = R.make_classifier(m, (2,), 2, "margin")
    assert R.correct(m, R.apgd(mg, x, y, 0.15, 20, 1, 0), y).mean() < R.correct(m, R.fgsm(ce, x, y, 0.15), y).mean()


def three_class_model(seed: int = 0):
    """A small ReLU MLP fitted to three Gaussian blobs in [0, 1]^4."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(300, n_features=4, centers=3, cluster_std=1.5, random_state=seed)
    x = ((x - x.min(0)) / (x.max(0) - x.min(0))).astype(np.float32)
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.Adam(m.parameters(), 0.02)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(m(xt), yt).backward()
        opt.step()
    return m, x, y.astype(np.int64)


def test_autoattack_three_classes_uses_dlr_and_respects_the_ball():
    m, x, y = three_class_model()
    assert R.correct(m, x, y).mean() > 0.9
    ce = R.make_classifier(m, (4,), 3, "ce")
    accs = []
    for eps in (0.05, 0.1, 0.2):
        adv, by = R.autoattack_parts(m, x, y, eps, 3, steps=30, restarts=1, queries=50, seed=2)
        assert adv.dtype == np.float32 and adv.min() >= 0 and adv.max() <= 1
        assert np.abs(adv - x).max() <= eps + 1e-6
        a = R.correct(m, adv, y).mean()
        assert a <= R.correct(m, R.fgsm(ce, x, y, eps), y).mean()
        accs.append(a)
    assert accs[0] < R.correct(m, x, y).mean() and accs[-1] < accs[0]  # it breaks examples, more with eps
    # the DLR component alone moves examples across the boundary too
    dlr = R.apgd(ce, x, y, 0.1, 30, 1, 0, loss_type="difference_logits_ratio")
    assert R.correct(m, dlr, y).mean() < R.correct(m, x, y).mean()
    # deterministic given the seed, and numpy's global state is left alone
    state = np.random.get_state()[1].copy()
    a1 = R.autoattack(m, x, y, 0.1, 3, steps=10, queries=20, seed=5)
    np.testing.assert_array_equal(a1, R.autoattack(m, x, y, 0.1, 3, steps=10, queries=20, seed=5))
    np.testing.assert_array_equal(np.random.get_state()[1], state)


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
    assert set(acc) == {"fgsm", "pgd", "autoattack", "random_search", "noise", "transfer", "worst"}
    assert acc["pgd"]["1.0"] == 0.0 and acc["fgsm"]["1.0"] == 0.0 and acc["autoattack"]["1.0"] == 0.0
    assert list(res.autoattack_apgd) == list(acc["fgsm"])
    for k in acc["fgsm"]:
        assert acc["autoattack"][k] <= acc["fgsm"][k]
        assert (res.correct["autoattack"][k] <= res.autoattack_apgd[k]).all()  # the Square part only adds
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
    # AutoAttack's gradient part barely moves either (its random start breaks a few); its random-search
    # part breaks the rest, and that part counts as gradient-free (it does not hide the masking)
    assert res.accuracy()["autoattack"]["0.3"] < 0.1 and float(res.autoattack_apgd["0.3"].mean()) > 0.5


def test_autoattack_off_leaves_the_other_attacks_unchanged():
    m = linear_model()
    x, y = data(m)
    s = R.AttackSettings(eps=(0.1, 0.3), pgd_steps=10, pgd_restarts=1, search_queries=20, apgd_steps=10)
    off = R.attack_suite(m, x, y, (6,), 2, dataclasses.replace(s, autoattack=False), seed=0)
    on = R.attack_suite(m, x, y, (6,), 2, s, seed=0)
    assert "autoattack" not in off.correct and off.autoattack_apgd == {}
    assert set(on.correct) == set(off.correct) | {"autoattack"}
    for a, per in off.correct.items():
        for k, v in per.items():
            np.testing.assert_array_equal(on.correct[a][k], v)  # seeded apart: AutoAttack changes nothing else
    R.add_worst(off)
    assert set(R.masking_checks(off, 2, SMALL)["checks"]) == set(R.CHECKS) - {"transfer_not_stronger"}


def test_autoattack_with_its_own_square_run_in_the_suite():
    m = nn.Sequential(nn.Flatten(), linear_model(d=64))
    x, y = data(m, n=40, d=64)
    s = R.AttackSettings(eps=(0.05, 0.3), pgd_steps=10, pgd_restarts=1, square_queries=20, apgd_steps=10,
                         autoattack_queries=40)
    res = R.attack_suite(m, x, y, (1, 8, 8), 2, s, seed=0)
    acc = res.accuracy()
    for k in ("0.05", "0.3"):
        assert (res.correct["autoattack"][k] <= res.autoattack_apgd[k]).all()
        assert acc["autoattack"][k] <= acc["fgsm"][k]
    assert acc["autoattack"]["0.05"] > acc["autoattack"]["0.3"]


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


def _hand_result():
    t, f = np.ones(10, bool), np.zeros(10, bool)
    half = np.array([True] * 5 + [False] * 5)
    return R.SuiteResult(clean=t.copy(), correct={
        "fgsm": {"0.1": half.copy(), "1.0": f.copy()},
        "pgd": {"0.1": half.copy(), "1.0": f.copy()},
        "autoattack": {"0.1": half.copy(), "1.0": f.copy()},
        "noise": {"0.1": t.copy(), "1.0": f.copy()},
    }), t, f, half


def test_autoattack_enters_the_checks_from_hand_numbers():
    s = R.AttackSettings(eps=(0.1, 1.0), tol=0.0)
    res, t, f, half = _hand_result()
    R.add_worst(res)
    assert R.masking_checks(res, 2, s)["checks"] == {c: True for c in R.CHECKS if c != "transfer_not_stronger"}

    res, t, f, half = _hand_result()
    res.correct["autoattack"]["0.1"] = t.copy()  # AutoAttack weaker than one FGSM step: suspicious
    R.add_worst(res)
    out = R.masking_checks(res, 2, s)
    assert out["values"]["pgd_le_fgsm"] == pytest.approx(0.5) and out["checks"]["pgd_le_fgsm"] is False

    res, t, f, half = _hand_result()
    res.correct["autoattack"]["1.0"] = t.copy()  # rises with eps (0.5 -> 1), weaker than FGSM unbounded
    R.add_worst(res)
    out = R.masking_checks(res, 2, s)
    assert out["checks"]["monotone_in_eps"] is False and out["values"]["monotone_in_eps"] == pytest.approx(0.5)
    assert out["values"]["pgd_le_fgsm"] == pytest.approx(1.0)

    # with the split: the APGD part is white-box, examples only its Square part breaks are a
    # gradient-free win over the white-box attacks
    res, t, f, half = _hand_result()
    res.correct["fgsm"]["0.1"] = res.correct["pgd"]["0.1"] = t.copy()
    res.autoattack_apgd = {"0.1": t.copy(), "1.0": f.copy()}
    R.add_worst(res)
    out = R.masking_checks(res, 2, s)
    assert out["checks"]["pgd_le_fgsm"] is True
    assert out["checks"]["whitebox_beats_blackbox"] is False
    assert out["values"]["whitebox_beats_blackbox"] == pytest.approx(0.5)


def test_certified_never_enters_worst_or_checks():
    s = R.AttackSettings(eps=(0.1, 1.0), tol=0.0)
    res, t, f, half = _hand_result()
    ref, *_ = _hand_result()
    # a proven lower bound, stored first and only at the small eps: it must be ignored by both
    res.correct = {"certified": {"0.1": f.copy()}, **res.correct}
    R.add_worst(res)
    R.add_worst(ref)
    assert list(res.correct["worst"]) == ["0.1", "1.0"]
    for k in ("0.1", "1.0"):
        np.testing.assert_array_equal(res.correct["worst"][k], ref.correct["worst"][k])
    np.testing.assert_array_equal(res.correct["worst"]["0.1"], half)  # not the all-False bound
    acc = res.accuracy()
    assert acc["certified"] == {"0.1": 0.0} and acc["worst"]["0.1"] == 0.5
    out, out_ref = R.masking_checks(res, 2, s), R.masking_checks(ref, 2, s)
    assert out["checks"] == out_ref["checks"]
    np.testing.assert_equal(out["values"], out_ref["values"])  # (NaN for the transfer check, not run)
    R.add_worst(res)  # again: neither the old worst nor the bound enters
    np.testing.assert_array_equal(res.correct["worst"]["0.1"], half)
    assert "certified" in R.NOT_ATTACKS and "worst" in R.NOT_ATTACKS
