"""localstdp.stats against scipy, hand computations, a naive re-implementation of the bootstrap,
and the normal/binomial approximations it should agree with on large synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from localstdp.evaluation import stats as st

Z975 = sps.norm.ppf(0.975)


def _pair(rng, s, n, a_only, b_only, both=0.78):
    """(S, N) bool correctness of two methods, drawn per (seed, example) from the joint
    P(both right) = both, P(a only) = a_only, P(b only) = b_only; true diff = a_only - b_only."""
    u = rng.random((s, n))
    a = u < both + a_only
    b = (u < both) | ((u >= both + a_only) & (u < both + a_only + b_only))
    return a, b


# ---------------------------------------------------------------------------------------------
# over-seed statistics (copied from the former experiments.py)


def test_describe_matches_scipy():
    v = [0.91, 0.87, 0.95, 0.89]
    d = st.describe(v)
    sem = np.std(v, ddof=1) / math.sqrt(4)
    lo, hi = sps.t.interval(0.95, 3, loc=np.mean(v), scale=sem)
    assert d["n"] == 4
    assert d["mean"] == pytest.approx(0.905)
    assert d["std"] == pytest.approx(np.std(v, ddof=1))
    assert d["ci95"] == pytest.approx([lo, hi])
    assert st.describe([0.7]) == {"n": 1, "mean": 0.7, "std": 0.0, "ci95": None}


def test_paired_test_matches_scipy():
    a, b = [0.90, 0.85, 0.93, 0.88], [0.86, 0.84, 0.88, 0.85]
    r = st.paired_test(a, b)
    ref = sps.ttest_rel(a, b)
    d = np.subtract(a, b)
    lo, hi = sps.t.interval(0.95, 3, loc=d.mean(), scale=d.std(ddof=1) / 2)
    assert r["n"] == 4 and r["diff_mean"] == pytest.approx(0.0325)
    assert r["diff_std"] == pytest.approx(d.std(ddof=1))
    assert r["t"] == pytest.approx(ref.statistic) and r["p_value"] == pytest.approx(ref.pvalue)
    assert r["diff_ci95"] == pytest.approx([lo, hi])
    same = st.paired_test([0.5, 0.6], [0.4, 0.5])  # identical differences: p undefined
    assert same["p_value"] is None and same["t"] is None and same["diff_mean"] == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------
# Holm


def test_holm_hand_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    assert st.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_none_passes_through_and_is_not_counted():
    out = st.holm([None, 0.01, None, 0.04, 0.03, 0.005])
    assert out[0] is None and out[2] is None
    assert out[1:2] + out[3:] == pytest.approx([0.03, 0.06, 0.06, 0.02])  # family size 4, not 6
    assert st.holm([None, None]) == [None, None]
    assert st.holm([]) == []


def test_holm_caps_at_one_ties_and_rejects_invalid():
    assert st.holm([0.4, 0.6]) == [0.8, 0.8]  # 0.4*2 = 0.8; max(0.8, 0.6) = 0.8
    assert st.holm([0.3, 0.9, 0.7]) == pytest.approx([0.9, 1.0, 1.0])  # 0.9, min(1, 1.4), 0.9 -> capped, monotone
    assert st.holm([0.02, 0.02]) == [0.04, 0.04]  # ties get one value
    with pytest.raises(ValueError):
        st.holm([0.1, float("nan")])
    with pytest.raises(ValueError):
        st.holm([1.5])


# ---------------------------------------------------------------------------------------------
# paired bootstrap


def test_replicates_match_naive_two_level_resampling():
    """The vectorised replicates equal the literal definition, with the documented draw order,
    whatever the block size (blocks of 4 replicates vs all at once)."""
    rng = np.random.default_rng(3)
    x = rng.random((3, 7))
    n_boot = 50
    got = st._replicates(x, n_boot, seed=11, chunk=4)
    assert np.array_equal(got, st._replicates(x, n_boot, seed=11))
    r = np.random.default_rng(11)
    seed_idx = r.integers(0, 3, size=(n_boot, 3))
    ex_idx = r.integers(0, 7, size=(n_boot, 7))
    naive = np.array([x[seed_idx[k]][:, ex_idx[k]].mean() for k in range(n_boot)])
    assert got == pytest.approx(naive, abs=1e-12)
    assert np.ptp(got) > 0  # it does resample


def test_identical_methods_give_zero_difference_and_p_one():
    a, _ = _pair(np.random.default_rng(0), 4, 500, 0.05, 0.03)
    r = st.paired_bootstrap(a, a.copy(), n_boot=500)
    assert r["diff_mean"] == 0.0 and r["ci"] == [0.0, 0.0] and r["p_value"] == 1.0 and r["se"] == 0.0
    assert (r["n_seeds"], r["n_examples"], r["n_boot"]) == (4, 500, 500)


@pytest.mark.parametrize("n_seeds", [1, 3])
def test_three_point_difference_ci_matches_binomial_width(n_seeds):
    """a right on 3 % more examples (truth 0.03), N = 10000; seeds identical (no seed variance):
    the CI covers 0.03, excludes 0, and its width is the normal-approximation width
    2 z sqrt(var(d) / N) of the paired per-example differences d in {-1, 0, 1}."""
    a1, b1 = _pair(np.random.default_rng(1), 1, 10_000, 0.06, 0.03)
    a, b = np.repeat(a1, n_seeds, axis=0), np.repeat(b1, n_seeds, axis=0)
    r = st.paired_bootstrap(a, b, n_boot=2000, seed=0)
    d = a1[0].astype(float) - b1[0]
    assert r["diff_mean"] == pytest.approx(d.mean())
    lo, hi = r["ci"]
    assert lo < 0.03 < hi and lo > 0
    normal_width = 2 * Z975 * math.sqrt(d.var() / d.size)
    assert (hi - lo) == pytest.approx(normal_width, rel=0.10)
    assert r["se"] == pytest.approx(math.sqrt(d.var() / d.size), rel=0.10)
    assert r["p_value"] == pytest.approx(1 / 2001)  # no replicate reaches 0: the floor


def test_seed_variance_widens_the_interval():
    """Seeds whose differences range from -1 to +7 points: the CI is much wider than with five
    copies of one seed, and its standard error is the crossed (pigeonhole) variance
    var(row means)/S + var(column means)/N + var(residual)/(S N)."""
    rng = np.random.default_rng(2)
    rows = [_pair(rng, 1, 10_000, 0.04 + t / 2, 0.02 - t / 2) for t in (-0.04, -0.02, 0.0, 0.02, 0.04)]
    a, b = np.vstack([r[0] for r in rows]), np.vstack([r[1] for r in rows])
    het = st.paired_bootstrap(a, b, seed=0)
    same = st.paired_bootstrap(np.repeat(a[2:3], 5, 0), np.repeat(b[2:3], 5, 0), seed=0)
    w_het, w_same = het["ci"][1] - het["ci"][0], same["ci"][1] - same["ci"][0]
    assert w_het > 3 * w_same
    d = a.astype(float) - b
    s, n = d.shape
    rm, cm = d.mean(1), d.mean(0)
    resid = d - rm[:, None] - cm[None, :] + d.mean()
    se = math.sqrt(rm.var() / s + cm.var() / n + resid.var() / (s * n))
    assert het["se"] == pytest.approx(se, rel=0.15)
    # the over-seed t-test alone (test set fixed) would not see the example-level part
    assert het["diff_mean"] == pytest.approx(st.paired_test(a.mean(1), b.mean(1))["diff_mean"])


def test_p_value_close_to_normal_approximation():
    """A difference of about 1.5 standard errors: the bootstrap p is near 2 (1 - Phi(z))."""
    # 90 examples only a gets right, 70 only b, 1840 concordant: d = 0.01, z = 1.58
    a = np.zeros((1, 2000), dtype=bool)
    b = np.zeros((1, 2000), dtype=bool)
    a[0, :90] = True
    b[0, 90:160] = True
    a[0, 400:1600] = b[0, 400:1600] = True
    np.random.default_rng(5).shuffle(perm := np.arange(2000))
    a, b = a[:, perm], b[:, perm]
    d = a[0].astype(float) - b[0]
    z = d.mean() / math.sqrt(d.var() / d.size)
    assert z == pytest.approx(0.01 / math.sqrt((0.08 - 0.01**2) / 2000))
    r = st.paired_bootstrap(a, b, n_boot=4000, seed=1)
    assert r["p_value"] == pytest.approx(2 * sps.norm.sf(abs(z)), abs=0.04)
    assert (r["p_value"] < 0.05) == (r["ci"][0] > 0 or r["ci"][1] < 0)  # p <-> CI inversion


def test_bootstrap_is_deterministic_and_accepts_floats_and_1d():
    rng = np.random.default_rng(4)
    a, b = rng.random((3, 200)), rng.random((3, 200))  # e.g. per-example robust correctness
    r1, r2 = st.paired_bootstrap(a, b, n_boot=300, seed=7), st.paired_bootstrap(a, b, n_boot=300, seed=7)
    assert r1 == r2
    assert st.paired_bootstrap(a, b, n_boot=300, seed=8)["ci"] != r1["ci"]
    one = st.paired_bootstrap(a[0], b[0], n_boot=300, seed=7)
    assert one["n_seeds"] == 1 and one["diff_mean"] == pytest.approx(a[0].mean() - b[0].mean())
    with pytest.raises(ValueError):
        st.paired_bootstrap(a, b[:, :100])
    with pytest.raises(ValueError):
        st.paired_bootstrap(a, np.full_like(b, np.nan))


def test_bootstrap_ci_one_method_binomial_width():
    a = np.random.default_rng(6).random((1, 10_000)) < 0.8
    r = st.bootstrap_ci(a, n_boot=2000, seed=0)
    p = a.mean()
    assert r["mean"] == pytest.approx(p)
    lo, hi = r["ci"]
    assert lo < 0.8 < hi
    assert hi - lo == pytest.approx(2 * Z975 * math.sqrt(p * (1 - p) / a.size), rel=0.10)
    assert (r["n_seeds"], r["n_examples"]) == (1, 10_000)


# ---------------------------------------------------------------------------------------------
# TOST and verdict


def test_tost_tiny_difference_is_equivalent():
    a, b = _pair(np.random.default_rng(7), 3, 10_000, 0.030, 0.029)
    t = st.tost(a, b, margin=0.02)
    assert abs(t["diff_mean"]) < 0.004  # about 0.001 (seeded)
    assert t["equivalent"] is True
    assert -0.02 < t["ci"][0] < t["ci"][1] < 0.02
    assert t["p_tost"] == max(t["p_lower"], t["p_upper"]) and t["p_tost"] < 0.05
    r = st.paired_bootstrap(a, b)
    assert st.verdict(r, t, st.holm([r["p_value"]])[0]) == "equivalent"
    # the 90 % TOST interval lies inside the 95 % one from the same replicates
    assert r["ci"][0] <= t["ci"][0] and t["ci"][1] <= r["ci"][1]


def test_tost_near_margin_with_large_noise_is_not_equivalent():
    a, b = _pair(np.random.default_rng(8), 3, 300, 0.25, 0.23, both=0.3)
    t = st.tost(a, b, margin=0.02)
    assert t["equivalent"] is False and t["p_tost"] > 0.05
    assert t["ci"][1] > 0.02
    r = st.paired_bootstrap(a, b)
    assert r["p_value"] > 0.05
    assert st.verdict(r, t, r["p_value"]) == "inconclusive"


@pytest.mark.parametrize("sign", [1, -1])
def test_significant_difference_inside_margin_is_never_equivalent(sign):
    """diff 0.019 with tiny noise (float scores), margin 0.02: the TOST passes, yet the difference
    is significant, so the verdict is the direction."""
    rng = np.random.default_rng(9)
    base = rng.uniform(0.3, 0.7, (5, 2000))
    other = base - 0.019 + rng.normal(0.0, 0.002, base.shape)
    a, b = (base, other) if sign > 0 else (other, base)
    t = st.tost(a, b, margin=0.02)
    r = st.paired_bootstrap(a, b)
    assert t["equivalent"] is True and t["diff_mean"] == pytest.approx(sign * 0.019, abs=2e-4)
    assert r["p_value"] < 0.05
    assert st.verdict(r, t, st.holm([r["p_value"], 0.5])[0]) == ("higher" if sign > 0 else "lower")


def test_verdict_rule_table():
    up, down = {"diff_mean": 0.01}, {"diff_mean": -0.01}
    eq, neq = {"equivalent": True}, {"equivalent": False}
    assert st.verdict(up, eq, 0.001) == "higher"
    assert st.verdict(down, eq, 0.001) == "lower"
    assert st.verdict(up, eq, 0.2) == "equivalent"
    assert st.verdict(up, neq, 0.2) == "inconclusive"
    assert st.verdict(up, eq, 0.05) == "equivalent"  # p == alpha is not significant
    assert st.verdict(up, eq, 0.04, alpha=0.01) == "equivalent"
    assert st.verdict(up, eq, None) == "inconclusive"
    assert st.verdict(up, neq, None) == "inconclusive"


def test_tost_p_values_follow_the_bootstrap_distribution():
    a, b = _pair(np.random.default_rng(10), 1, 1000, 0.06, 0.03)
    t = st.tost(a, b, margin=0.05, n_boot=1000, seed=3)
    reps = st._replicates(a.astype(float) - b, 1000, 3)
    assert t["p_upper"] == pytest.approx(max(np.mean(reps >= 0.05), 1 / 1001))
    assert t["p_lower"] == pytest.approx(1 / 1001)  # nothing near -0.05
    assert t["ci"] == pytest.approx(list(np.quantile(reps, [0.05, 0.95])))
    with pytest.raises(ValueError):
        st.tost(a, b, margin=0.0)


# ---------------------------------------------------------------------------------------------
# McNemar


def test_mcnemar_exact_binomial_by_hand():
    # 8 examples only a gets right, 2 only b, 40 concordant:
    # p = 2 P(X <= 2 | 10, 1/2) = 2 (1 + 10 + 45) / 1024
    a = np.array([1] * 8 + [0] * 2 + [1] * 30 + [0] * 10, dtype=bool)
    b = np.array([0] * 8 + [1] * 2 + [1] * 30 + [0] * 10, dtype=bool)
    r = st.mcnemar(a, b)
    assert r["p_value"] == pytest.approx(112 / 1024)
    assert (r["n_a_only"], r["n_b_only"], r["n_discordant"], r["n_examples"]) == (8, 2, 10, 50)
    assert r["diff"] == pytest.approx(a.mean() - b.mean())
    assert st.mcnemar(b, a)["p_value"] == pytest.approx(112 / 1024)
    none = st.mcnemar(a, a)
    assert none["p_value"] == 1.0 and none["n_discordant"] == 0
    with pytest.raises(ValueError):
        st.mcnemar(a.astype(float) * 0.5, b)


def test_holm_text_writes_a_p_value_at_the_bootstrap_floor_as_a_bound():
    # 2000 replicates: the floor is 1/2001; at it the raw p and its Holm adjustment are upper bounds
    assert st.holm_text({"p_value": 1 / 2001, "p_holm": 4 / 2001}) == f"≤ {4 / 2001:.2g}"
    assert st.holm_text({"p_value": 1 / 501, "p_holm": 1 / 501}, n_boot=500) == f"≤ {1 / 501:.2g}"
    # one replicate above the floor is a value, written as one (two significant digits)
    assert st.holm_text({"p_value": 2 / 2000, "p_holm": 0.0123}) == "0.012"
    assert st.holm_text({"p_value": 2 / 500, "p_holm": 2 / 500}, n_boot=500) == "0.004"
    assert st.holm_text({"p_value": None, "p_holm": None}) == "n/a"
    # a real bootstrap with no replicate crossing zero lands on the floor
    a, b = np.ones((3, 200)), np.zeros((3, 200))
    r = st.paired_bootstrap(a, b, n_boot=300)
    assert st.holm_text({"p_value": r["p_value"], "p_holm": min(1.0, 3 * r["p_value"])}, 300).startswith("≤ ")
