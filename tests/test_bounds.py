"""Certified robustness bounds (localstdp.bounds): soundness against dense grids, sampling and attacks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from localstdp.model import MLP, build_model
from localstdp.robustness import bounds
from localstdp.robustness.bounds import certified_accuracy, certified_correct, margin_lower_bounds, sigmoid_relaxation


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small tensors: one intra-op thread is faster and immune to contention on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _min_margins(model, pts, y):
    """(K,) min over the points of z_y - z_j, in float64."""
    Ws = [(L.weight.double(), L.bias.double()) for L in model.layers]
    a = torch.as_tensor(pts, dtype=torch.float64)
    with torch.no_grad():
        for W, b in Ws[:-1]:
            a = torch.sigmoid(a @ W.T + b)
        z = a @ Ws[-1][0].T + Ws[-1][1]
    return (z[:, y : y + 1] - z).min(0).values.numpy()


# ---------------------------------------------------------------- the sigmoid relaxation


def test_sigmoid_relaxation_is_sound_on_every_kind_of_interval():
    g = torch.Generator().manual_seed(0)
    l = torch.randn(4000, generator=g, dtype=torch.float64) * 6
    w = torch.rand(4000, generator=g, dtype=torch.float64) ** 3 * 20
    w[:50], w[50:100] = 0.0, 1e-8  # degenerate and narrow (Taylor branch)
    l[100:150], w[100:150] = -60.0, 65.0  # below the tangent table: bisection branch
    u = l + w
    assert (l < 0).logical_and(u > 0).sum() > 800 and (u <= 0).sum() > 500 and (l >= 0).sum() > 500
    aL, bL, aU, bU = sigmoid_relaxation(l, u)
    z = l[:, None] + torch.linspace(0, 1, 1001, dtype=torch.float64)[None] * w[:, None]
    s = torch.sigmoid(z)
    assert (aL[:, None] * z + bL[:, None] - s).max() <= 1e-15
    assert (s - aU[:, None] * z - bU[:, None]).max() <= 1e-15
    # reasonably tight: mean vertical gap between the two lines (measured max 0.0107 for widths < 1)
    gap = ((aU - aL)[:, None] * z + (bU - bL)[:, None]).mean(1)
    assert gap[w < 1].max() < 0.015 and gap[50:100].max() < 1e-15
    # zero width: both lines touch sigma exactly
    assert torch.allclose(aL[:50] * l[:50] + bL[:50], torch.sigmoid(l[:50]), atol=1e-15)
    assert torch.allclose(aU[:50] * l[:50] + bU[:50], torch.sigmoid(l[:50]), atol=1e-15)


# ---------------------------------------------------------------- 1. soundness vs a dense grid


@pytest.fixture(scope="module")
def tiny():
    """2-6-5-3 sigmoid MLP, seeded weights scaled x4 so the sigmoids bend inside the boxes."""
    model = build_model(2, [6, 5], 3, "sigmoid", seed=1)
    with torch.no_grad():
        for layer in model.layers:
            layer.weight.mul_(4)
            layer.bias.mul_(2)
    return model


CENTRES = np.array([[0.3, 0.6], [0.5, 0.5], [0.05, 0.95], [0.9, 0.2], [1.0, 0.0]])


@pytest.mark.parametrize("eps", [0.02, 0.1, 0.3])
def test_margin_bounds_below_dense_grid_minimum(tiny, eps):
    gaps = {"ibp": [], "crown": []}
    for c in CENTRES:
        lo, hi = np.clip(c - eps, 0, 1), np.clip(c + eps, 0, 1)
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 201), np.linspace(lo[1], hi[1], 201), indexing="ij")
        grid = np.c_[gx.ravel(), gy.ravel()]
        for y in range(3):
            grid_min = _min_margins(tiny, grid, y)
            ibp = margin_lower_bounds(tiny, c[None], np.array([y]), eps, "ibp")[0]
            crown = margin_lower_bounds(tiny, c[None], np.array([y]), eps, "crown")[0]
            assert np.isinf(ibp[y]) and np.isinf(crown[y])
            others = np.arange(3) != y
            assert (ibp[others] <= grid_min[others] + 1e-12).all()
            assert (crown[others] <= grid_min[others] + 1e-12).all()
            assert (crown[others] >= ibp[others]).all()
            gaps["ibp"] += list(grid_min[others] - ibp[others])
            gaps["crown"] += list(grid_min[others] - crown[others])
    g_ibp, g_crown = np.array(gaps["ibp"]), np.array(gaps["crown"])
    # measured max gaps (crown / ibp): eps 0.02: 0.0008 / 0.05, 0.1: 0.015 / 0.27, 0.3: 0.16 / 0.81
    limit = {0.02: 0.002, 0.1: 0.03, 0.3: 0.3}[eps]
    assert g_crown.max() <= limit
    assert g_crown.mean() < 0.25 * g_ibp.mean()
    assert g_ibp.max() > 2 * limit if eps < 0.3 else g_ibp.max() > limit  # ibp is far looser: the test has teeth


def test_batched_and_chunked_bounds_equal_one_by_one(tiny, monkeypatch):
    rng = np.random.default_rng(0)
    x, y = rng.random((23, 2)), rng.integers(0, 3, 23)
    full = margin_lower_bounds(tiny, x, y, 0.1, "crown")
    single = np.concatenate([margin_lower_bounds(tiny, x[i : i + 1], y[i : i + 1], 0.1, "crown") for i in range(23)])
    monkeypatch.setattr(bounds, "_BUDGET", 40)  # forces one example per backward chunk
    chunked = margin_lower_bounds(tiny, x, y, 0.1, "crown", batch_size=5)
    np.testing.assert_allclose(full, single, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(full, chunked, rtol=1e-12, atol=1e-12)


def test_float32_input_product_keeps_the_float64_bound_below(monkeypatch):
    """The big |Lam W_0| product runs in float32 with a round-off allowance: never above the all-float64 bound,
    and within a hair of it."""
    model = build_model(64, [256, 32], 10, "sigmoid", seed=5)
    x = (load_digits().data[:30] / 16).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()
    fast = margin_lower_bounds(model, x, y, 0.05, "crown")
    monkeypatch.setattr(bounds, "_FAST_GEMM", False)
    exact = margin_lower_bounds(model, x, y, 0.05, "crown")
    finite = np.isfinite(exact)
    assert (np.isfinite(fast) == finite).all()
    fast, exact = fast[finite], exact[finite]
    # measured: exact - fast in [5.5e-7, 1.0e-6] with |bounds| up to 0.93
    assert (fast < exact).all()  # the allowance really is subtracted
    assert (exact - fast).max() < 1e-5


# ---------------------------------------------------------------- 2. certified <= attacked


@pytest.fixture(scope="module")
def digits():
    """64-32-16-2 sigmoid MLP trained 30 epochs (Adam, seeded) on load_digits 3 vs 8, features / 16."""
    torch.manual_seed(0)
    d = load_digits()
    keep = np.isin(d.target, (3, 8))
    x = (d.data[keep] / 16).astype(np.float32)
    y = (d.target[keep] == 8).astype(np.int64)
    model = build_model(64, [32, 16], 2, "sigmoid", seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 32):
            b = perm[i : i + 32]
            loss = F.cross_entropy(model(xt[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model, x, y


def _pgd(model, x, y, eps, steps=20, seed=0):
    """Per-example True when the example survives L-inf PGD (cross-entropy, random start, step 2.5 eps / steps)."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    lo, hi = (xt - eps).clamp(0, 1), (xt + eps).clamp(0, 1)
    adv = (xt + (torch.rand(xt.shape, generator=g) * 2 - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), yt, reduction="sum"), adv)
        adv = torch.max(torch.min(adv.detach() + 2.5 * eps / steps * grad.sign(), hi), lo)
    with torch.no_grad():
        return (model(adv).argmax(1) == yt).numpy()


def _fgsm(model, x, y, eps):
    xt, yt = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(y)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xt), yt, reduction="sum"), xt)
    with torch.no_grad():
        return (model((xt + eps * grad.sign()).clamp(0, 1)).argmax(1) == yt).numpy()


def test_certified_never_beats_attacks(digits):
    model, x, y = digits
    assert (model(torch.from_numpy(x)).argmax(1).numpy() == y).mean() == 1.0
    measured = {}
    for eps in (0.01, 0.05, 0.1):
        ibp, crown = certified_correct(model, x, y, eps, "ibp"), certified_correct(model, x, y, eps, "crown")
        pgd, fgsm = _pgd(model, x, y, eps), _fgsm(model, x, y, eps)
        assert not (crown & ~pgd).any() and not (crown & ~fgsm).any()
        assert not (ibp & ~crown).any()  # crown never certifies less than ibp
        assert crown.mean() <= pgd.mean()
        measured[eps] = (ibp.mean(), crown.mean(), pgd.mean())
    # measured on 357 examples: (ibp, crown, pgd) = (1, 1, 1) at 0.01, (0.891, 0.891, 0.894) at 0.05,
    # (0.566, 0.583, 0.588) at 0.1
    assert measured[0.01][1] == 1.0
    assert 0.85 < measured[0.05][1] <= measured[0.05][2]
    assert 0.5 < measured[0.1][0] < measured[0.1][1] <= measured[0.1][2]
    assert certified_accuracy(model, x, y, 0.1) == pytest.approx(measured[0.1][1])


def test_bounding_only_the_attacks_survivors_gives_the_same_answer(digits):
    """``among``: the examples an attack broke are not bounded (issue 32: the grid passes the survivors);
    a sound bound certifies none of them, so the answer equals bounding every example."""
    model, x, y = digits
    for eps in (0.05, 0.1):
        survived = _pgd(model, x, y, eps)
        every = certified_correct(model, x, y, eps)
        assert (~survived).sum() > 10 and np.array_equal(certified_correct(model, x, y, eps, among=survived), every)
        half = survived & (np.arange(len(y)) % 2 == 0)  # fewer candidates: the rest come back False
        assert np.array_equal(certified_correct(model, x, y, eps, among=half), every & half)
    assert not certified_correct(model, x, y, 0.05, among=np.zeros(len(y), bool)).any()
    with pytest.raises(ValueError, match="among"):
        certified_correct(model, x, y, 0.05, among=np.ones(3, bool))


def test_random_points_in_certified_boxes_keep_the_label(digits):
    model, x, y = digits
    eps = 0.1
    lb = margin_lower_bounds(model, x, y, eps, "crown")
    worst = np.where(np.isinf(lb), np.nan, lb)
    worst = np.nanmin(worst, 1)
    cert = certified_correct(model, x, y, eps, "crown")
    assert (cert == (worst > 0)).all()
    rng = np.random.default_rng(1)
    # the five certified examples closest to the decision boundary
    for i in np.flatnonzero(cert)[np.argsort(worst[cert])[:5]]:
        lo, hi = np.clip(x[i] - eps, 0, 1), np.clip(x[i] + eps, 0, 1)
        pts = np.concatenate([rng.uniform(lo, hi, (1000, 64)), np.where(rng.random((1000, 64)) < 0.5, lo, hi)])
        with torch.no_grad():
            pred = model(torch.from_numpy(pts.astype(np.float32))).argmax(1).numpy()
        assert (pred == y[i]).all()
        other = 1 - y[i]
        assert lb[i, other] <= _min_margins(model, pts, y[i])[other] + 1e-12


# ---------------------------------------------------------------- 3. eps = 0 and argument validation


def test_eps_zero_is_clean_correctness(digits, tiny):
    model, x, y = digits
    rng = np.random.default_rng(2)
    y_noisy = np.where(rng.random(len(y)) < 0.3, 1 - y, y)  # some clean mistakes
    clean = model(torch.from_numpy(x)).argmax(1).numpy() == y_noisy
    for method in ("ibp", "crown"):
        np.testing.assert_array_equal(certified_correct(model, x, y_noisy, 0.0, method), clean)
        assert not (certified_correct(model, x, y_noisy, 0.05, method) & ~clean).any()
    # the bounds themselves are the exact margins at eps = 0
    xs, ys = rng.random((10, 2)), rng.integers(0, 3, 10)
    for method in ("ibp", "crown"):
        lb = margin_lower_bounds(tiny, xs, ys, 0.0, method)
        exact = np.stack([_min_margins(tiny, xs[i : i + 1], ys[i]) for i in range(10)])
        exact[np.arange(10), ys] = np.inf
        np.testing.assert_allclose(lb, exact, rtol=0, atol=1e-12)


def test_argument_validation(tiny):
    x, y = np.full((3, 2), 0.5), np.array([0, 1, 2])
    with pytest.raises(ValueError, match="eps"):
        certified_correct(tiny, x, y, -0.1)
    with pytest.raises(ValueError, match="eps"):
        certified_correct(tiny, x, y, float("nan"))
    with pytest.raises(ValueError, match="y has shape"):
        certified_correct(tiny, x, y[:, None], 0.1)
    with pytest.raises(ValueError, match="y has shape"):
        certified_correct(tiny, x, y[:2], 0.1)
    with pytest.raises(ValueError, match="labels"):
        certified_correct(tiny, x, np.array([0, 1, 3]), 0.1)
    with pytest.raises(ValueError, match="method"):
        certified_correct(tiny, x, y, 0.1, method="deeppoly")
    with pytest.raises(ValueError, match="batch_size"):
        margin_lower_bounds(tiny, x, y, 0.1, batch_size=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        certified_correct(tiny, x + 0.6, y, 0.1)
    with pytest.raises(ValueError, match="features"):
        certified_correct(tiny, np.full((3, 3), 0.5), y, 0.1)
    other = MLP(2, [4], 3)
    other.f = torch.tanh
    with pytest.raises(ValueError, match="sigmoid"):
        certified_correct(other, x, y, 0.1)
    assert certified_correct(tiny, np.zeros((0, 2)), np.zeros(0, dtype=int), 0.1).shape == (0,)
    assert np.isnan(certified_accuracy(tiny, np.zeros((0, 2)), np.zeros(0, dtype=int), 0.1))


# ---------------------------------------------------------------- 4. receptive-field (masked) first layer


def test_receptive_field_model_image_inputs():
    model = build_model(64, [24, 12], 3, "sigmoid", seed=3, receptive_field=4)
    assert (model.layers[0].weight[model.in_mask == 0] == 0).all()
    d = load_digits()
    x = (d.data[:40] / 16).reshape(40, 1, 8, 8).astype(np.float32)  # image-shaped input
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()
    eps = 0.2
    ibp = margin_lower_bounds(model, x, y, eps, "ibp")
    crown = margin_lower_bounds(model, x, y, eps, "crown")
    np.testing.assert_array_equal(crown, margin_lower_bounds(model, x.reshape(40, 64), y, eps, "crown"))
    assert (crown >= ibp).all() and (crown > ibp + 1e-6).any()
    assert certified_correct(model, x, y, 0.0).all()
    # an unmasked MLP carrying the same weights gets the same bounds: the mask lives in the weights
    plain = MLP(64, [24, 12], 3)
    plain.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(crown, margin_lower_bounds(plain, x, y, eps, "crown"))
    # sound against random points and vertices of each box
    rng = np.random.default_rng(4)
    xf = x.reshape(40, 64)
    for i in range(0, 40, 4):
        lo, hi = np.clip(xf[i] - eps, 0, 1), np.clip(xf[i] + eps, 0, 1)
        pts = np.concatenate([rng.uniform(lo, hi, (500, 64)), np.where(rng.random((500, 64)) < 0.5, lo, hi)])
        m = _min_margins(model, pts, y[i])
        others = np.arange(3) != y[i]
        assert (crown[i, others] <= m[others] + 1e-12).all()
