"""Statistics for comparing training methods over seeds and test examples (pure numpy/scipy).

Data layout. A method evaluated with S training seeds on a fixed test set of N examples gives an
(S, N) matrix ``x`` of per-example scores: ``x[s, i]`` is 1/0 correctness (bool) of seed s on test
example i, or a float in [0, 1] (e.g. per-example robust correctness). Two methods ``a`` and ``b``
are *paired*: row s of both is the same seed (same initialisation, split and budget), column i the
same test example. Accuracy is ``x.mean()``; the compared quantity is ``diff = mean(a) - mean(b)``.

Definitions
-----------
``describe`` / ``paired_test``
    Over-seed summaries (copied unchanged from the former ``experiments.py``): mean, sample std (ddof=1) and
    the 95 % Student-t interval ``mean +- t_{0.975, n-1} s / sqrt(n)``; the paired t-test of the
    per-seed differences (``scipy.stats.ttest_rel``). They see only seed-to-seed variation: the
    finite test set is treated as fixed.

``paired_bootstrap`` (two-level paired bootstrap)
    Each replicate draws S seed indices with replacement and, independently, N test-example
    indices with replacement; the *same* example indices are used for both methods and for every
    drawn seed (the design is crossed, seeds x examples, not nested), and the *same* seed indices
    for both methods. The replicate statistic is ``T* = mean(a*) - mean(b*)`` over the drawn
    seed x example grid, i.e. the mean of ``d = a - b`` over it. Its spread therefore contains
    both sources of uncertainty: which seeds were trained (training randomness) and which test
    examples were drawn (finite test set). This is Owen's "pigeonhole" bootstrap for crossed
    random effects, which is mildly conservative (it over-counts the seed x example interaction
    term, Owen 2007). With S == 1 the seed draw is trivial and it is the ordinary paired bootstrap
    over test examples; with identical rows it is also exactly that.

    * ``ci``: the percentile interval ``[q_{alpha/2}, q_{1-alpha/2}]`` of the T* (numpy's default
      linear quantile interpolation).
    * ``p_value`` (two-sided, H0: diff = 0): ``p = min(1, 2 min(#{T* <= 0}, #{T* >= 0}) / B)``,
      floored at ``1 / (B + 1)`` (B = n_boot), the resolution of B replicates, so that p is never
      reported as exactly 0. It is the percentile-interval inversion: up to interpolation,
      ``p < alpha`` iff the (1 - alpha) percentile CI excludes 0. With a == b every T* is exactly
      0 and p = 1.

``bootstrap_ci``
    The one-sample version for one method's accuracy (same resampling, statistic mean(x*)).

``tost`` (two one-sided tests, equivalence within +-margin)
    From the same paired-bootstrap replicates: ``equivalent`` iff the (1 - 2 alpha) percentile CI
    lies strictly inside (-margin, +margin) (the interval form of TOST at level alpha; Schuirmann
    1987, Berger & Hsu 1996). The one-sided bootstrap p-values are ``p_lower = #{T* <= -margin}/B``
    (H0: diff <= -margin) and ``p_upper = #{T* >= +margin}/B`` (H0: diff >= +margin), each floored
    at 1/(B+1); ``p_tost = max(p_lower, p_upper)``. ``p_tost < alpha`` agrees with ``equivalent`` up
    to quantile interpolation at the boundary; ``equivalent`` (the CI rule) is the decision.

``holm``
    Holm-Bonferroni step-down adjusted p-values (Holm 1979): with the m defined p-values sorted
    ascending p_(1) <= ... <= p_(m), ``adj_(k) = max_{j <= k} min(1, (m - j + 1) p_(j))``. The
    adjustment is monotone in the sorted order and capped at 1; None entries are returned as None
    and do not count in m. Controls the family-wise error rate under any dependence.

``mcnemar``
    Exact McNemar test (McNemar 1947; exact binomial form as recommended by Dietterich 1998) of
    two classifiers on the same examples (one seed): with n_a = #{a right, b wrong} and
    n_b = #{a wrong, b right}, the two-sided ``scipy.stats.binomtest(n_a, n_a + n_b, 0.5)``
    p-value; p = 1 when there is no discordant pair.

``verdict``
    One word per comparison, with the rule (alpha = family level, p already Holm-adjusted):

    1. adjusted p < alpha  -> "higher" (diff > 0) or "lower" (diff < 0). A significant difference is
       never called "equivalent", even when the TOST passes (a tiny but real difference inside the
       margin is reported as a difference);
    2. otherwise, TOST equivalent -> "equivalent";
    3. otherwise -> "inconclusive" (neither a difference nor equivalence is shown).

    A missing adjusted p (None: no defined test) gives "inconclusive": without a difference test a
    significant difference cannot be ruled out, so equivalence is not claimed either.

Limits. With S = 3..5 seeds the seed level of the bootstrap is coarse (only C(2S-1, S) distinct
seed multisets; the bootstrap variance of a mean of S values is (S-1)/S of the unbiased one), so
seed variance is somewhat under-covered; the example level is fine for N >= 30.

References
----------
B. Efron, R. Tibshirani (1993), An Introduction to the Bootstrap, Chapman & Hall (ch. 13, 15, 16).
A. C. Davison, D. V. Hinkley (1997), Bootstrap Methods and their Application, CUP (sec. 3.8).
A. B. Owen (2007), The pigeonhole bootstrap, Annals of Applied Statistics 1(2), 386-411.
X. Bouthillier et al. (2021), Accounting for variance in machine learning benchmarks, MLSys.
D. J. Schuirmann (1987), A comparison of the two one-sided tests procedure ..., J. Pharmacokinet.
Biopharm. 15, 657-680. R. L. Berger, J. C. Hsu (1996), Bioequivalence trials, intersection-union
tests and equivalence confidence sets, Statistical Science 11(4), 283-319.
S. Holm (1979), A simple sequentially rejective multiple test procedure, Scand. J. Statist. 6, 65-70.
Q. McNemar (1947), Psychometrika 12, 153-157. T. G. Dietterich (1998), Approximate statistical
tests for comparing supervised classification learning algorithms, Neural Computation 10, 1895-1923.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "describe",
    "paired_test",
    "paired_bootstrap",
    "bootstrap_ci",
    "tost",
    "holm",
    "mcnemar",
    "verdict",
    "VERDICTS",
]

VERDICTS = ("equivalent", "higher", "lower", "inconclusive")

# Elements of the (chunk, N) index/count block handled at once: bounds memory (~16 MB of int64
# indices) independently of n_boot, while keeping numpy calls large enough to be fast.
_CHUNK_ELEMENTS = 2_000_000


# ---------------------------------------------------------------------------------------------
# over seeds (unchanged from the former experiments.py)


def describe(values: Sequence[float]) -> dict:
    """n, mean, sample std and the 95% t confidence interval of the mean (None for n < 2)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    n = len(v)
    mean = float(v.mean()) if n else float("nan")
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    if n > 1:
        half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))
        ci = [mean - half, mean + half]
    else:
        ci = None
    return {"n": n, "mean": mean, "std": std, "ci95": ci}


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """Paired t-test of a - b over seeds: mean difference, its 95% CI, t and the two-sided p-value.

    p is None when it is undefined (fewer than 2 pairs, or every difference identical: a t-test
    needs variance; the CI is then the single value).
    """
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    desc = describe(d)
    out = {"n": desc["n"], "diff_mean": desc["mean"], "diff_std": desc["std"], "diff_ci95": desc["ci95"],
           "t": None, "p_value": None}
    if len(d) > 1 and np.ptp(d) > 0:
        res = stats.ttest_rel(a, b)
        out["t"], out["p_value"] = float(res.statistic), float(res.pvalue)
    return out


# ---------------------------------------------------------------------------------------------
# bootstrap over seeds and test examples


def _as_matrix(x, name: str) -> np.ndarray:
    """(S, N) float64 copy of x; a 1-D array is one seed."""
    m = np.asarray(x, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise ValueError(f"{name} must be an (S, N) array with S >= 1 and N >= 1, got shape {np.shape(x)}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} contains non-finite values")
    return m


def _check_boot_args(n_boot: int, alpha: float) -> None:
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")


def _replicates(x: np.ndarray, n_boot: int, seed: int, chunk: int | None = None) -> np.ndarray:
    """The n_boot two-level bootstrap replicates of mean(x) for an (S, N) float matrix x.

    Draw order (fixed, so a replicate set is reproducible from ``seed`` and the tests can rebuild
    it naively): ``rng = default_rng(seed)``; seed indices ``rng.integers(0, S, (n_boot, S))``; then
    example indices ``rng.integers(0, N, (n_boot, N))``, generated in row blocks (int64 draws are
    sequential, so blocking does not change them). Replicate r is
    ``x[seed_idx[r]][:, ex_idx[r]].mean()``.

    Computed without the (S, n_boot, N) cube: the example draw of a replicate is turned into counts
    w (np.bincount, sum N), so ``sum_j x[s, ex_idx[r, j]] = w @ x[s]`` for all seeds at once (one
    (chunk, N) @ (N, S) product); the seed draw then averages those S per-seed means. Sums of
    integer counts times 0/1 (or -1/0/1) values are exact in float64, so equal inputs give exactly
    equal replicates.
    """
    s_count, n = x.shape
    step = chunk if chunk is not None else max(1, _CHUNK_ELEMENTS // n)
    seed_idx, blocks = _draws(s_count, n, n_boot, seed, step)
    xt = np.ascontiguousarray(x.T)  # (N, S)
    per_seed = np.empty((n_boot, s_count))  # per replicate: the mean of each seed over its examples
    start = 0
    for counts in blocks:
        per_seed[start:start + len(counts)] = (counts @ xt) / n
        start += len(counts)
    return np.take_along_axis(per_seed, seed_idx, axis=1).mean(axis=1)


@functools.lru_cache(maxsize=3)
def _draws(s_count: int, n: int, n_boot: int, seed: int, step: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The draws of :func:`_replicates` -- seed indices and, per row block, the example counts as floats --
    which depend on the shape, ``n_boot`` and ``seed`` only: a run's many comparisons of the same shape
    (every method pair, attack and eps of a task) draw them once (read-only, at most 3 shapes kept)."""
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, s_count, size=(n_boot, s_count))
    blocks = []
    for start in range(0, n_boot, step):
        c = min(step, n_boot - start)
        idx = rng.integers(0, n, size=(c, n))
        idx += (np.arange(c) * n)[:, None]  # offset row r into its own block of bincount bins
        counts = np.bincount(idx.ravel(), minlength=c * n).reshape(c, n).astype(float)
        counts.setflags(write=False)
        blocks.append(counts)
    seed_idx.setflags(write=False)
    return seed_idx, tuple(blocks)


def _two_sided_p(reps: np.ndarray, null: float = 0.0) -> float:
    """min(1, 2 min(#{T* <= null}, #{T* >= null}) / B), floored at 1 / (B + 1)."""
    b = len(reps)
    k = min(int(np.count_nonzero(reps <= null)), int(np.count_nonzero(reps >= null)))
    return float(max(1.0 / (b + 1), min(1.0, 2.0 * k / b)))


def _one_sided_p(count: int, b: int) -> float:
    return float(max(1.0 / (b + 1), count / b))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Two-level paired bootstrap of mean(a) - mean(b) over seeds and test examples.

    a, b: (S, N) bool or float arrays (row = seed, column = test example, paired), or 1-D (one
    seed). Returns ``diff_mean`` (observed mean(a) - mean(b)), ``ci`` ([lo, hi], percentile,
    level 1 - alpha), ``se`` (bootstrap standard deviation of the replicates), ``p_value``
    (two-sided, see the module docstring), ``alpha``, ``n_seeds``, ``n_examples``, ``n_boot``.
    """
    am, bm = _as_matrix(a, "a"), _as_matrix(b, "b")
    if am.shape != bm.shape:
        raise ValueError(f"a and b must have the same (S, N) shape, got {am.shape} and {bm.shape}")
    _check_boot_args(n_boot, alpha)
    d = am - bm  # mean(a*) - mean(b*) = mean(d*) since both use the same seed and example draws
    reps = _replicates(d, int(n_boot), seed)
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return {
        "diff_mean": float(d.mean()),
        "ci": [float(lo), float(hi)],
        "se": float(reps.std(ddof=1)) if n_boot > 1 else 0.0,
        "p_value": _two_sided_p(reps),
        "alpha": float(alpha),
        "n_seeds": int(d.shape[0]),
        "n_examples": int(d.shape[1]),
        "n_boot": int(n_boot),
    }


def bootstrap_ci(a: np.ndarray, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """One method's accuracy mean(a) with a two-level bootstrap percentile CI (seeds and examples).

    Returns ``mean``, ``ci`` ([lo, hi], level 1 - alpha), ``se``, ``alpha``, ``n_seeds``,
    ``n_examples``, ``n_boot``.
    """
    am = _as_matrix(a, "a")
    _check_boot_args(n_boot, alpha)
    reps = _replicates(am, int(n_boot), seed)
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return {
        "mean": float(am.mean()),
        "ci": [float(lo), float(hi)],
        "se": float(reps.std(ddof=1)) if n_boot > 1 else 0.0,
        "alpha": float(alpha),
        "n_seeds": int(am.shape[0]),
        "n_examples": int(am.shape[1]),
        "n_boot": int(n_boot),
    }


def tost(a: np.ndarray, b: np.ndarray, margin: float, alpha: float = 0.05, n_boot: int = 2000,
         seed: int = 0) -> dict:
    """Equivalence of mean(a) - mean(b) within +-margin from the two-level paired bootstrap.

    ``equivalent`` iff the (1 - 2 alpha) percentile CI lies strictly inside (-margin, +margin).
    Returns ``diff_mean``, ``ci`` (the 1 - 2 alpha interval), ``margin``, ``alpha``, ``p_lower``
    (H0: diff <= -margin), ``p_upper`` (H0: diff >= +margin), ``p_tost`` (their max),
    ``equivalent`` (bool), ``n_seeds``, ``n_examples``, ``n_boot``. Same ``seed`` as
    :func:`paired_bootstrap` -> the same replicates.
    """
    if not (math.isfinite(float(margin)) and margin > 0):
        raise ValueError(f"margin must be a positive finite number, got {margin!r}")
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5) for a 1 - 2 alpha interval, got {alpha!r}")
    am, bm = _as_matrix(a, "a"), _as_matrix(b, "b")
    if am.shape != bm.shape:
        raise ValueError(f"a and b must have the same (S, N) shape, got {am.shape} and {bm.shape}")
    _check_boot_args(n_boot, alpha)
    d = am - bm
    reps = _replicates(d, int(n_boot), seed)
    # Each one-sided test at level alpha <-> one end of the (1 - 2 alpha) two-sided interval.
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])
    p_lower = _one_sided_p(int(np.count_nonzero(reps <= -margin)), int(n_boot))
    p_upper = _one_sided_p(int(np.count_nonzero(reps >= margin)), int(n_boot))
    return {
        "diff_mean": float(d.mean()),
        "ci": [float(lo), float(hi)],
        "margin": float(margin),
        "alpha": float(alpha),
        "p_lower": p_lower,
        "p_upper": p_upper,
        "p_tost": max(p_lower, p_upper),
        "equivalent": bool(-margin < lo and hi < margin),
        "n_seeds": int(d.shape[0]),
        "n_examples": int(d.shape[1]),
        "n_boot": int(n_boot),
    }


# ---------------------------------------------------------------------------------------------
# multiple comparisons, per-seed exact test, verdict


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input order; None passes through (not counted)."""
    defined = [(i, p) for i, p in enumerate(p_values) if p is not None]
    for _, p in defined:
        if not 0.0 <= float(p) <= 1.0:  # also rejects NaN
            raise ValueError(f"p-values must lie in [0, 1] (or be None), got {p!r}")
    out: list[float | None] = [None] * len(p_values)
    m = len(defined)
    running = 0.0
    # stable sort: ties keep input order and, through the running max, get the same adjusted value
    for k, (i, p) in enumerate(sorted(defined, key=lambda ip: ip[1])):
        running = max(running, min(1.0, (m - k) * float(p)))  # the running max makes it monotone
        out[i] = running
    return out


def mcnemar(a_row, b_row) -> dict:
    """Exact McNemar test of two classifiers' per-example correctness on the same examples.

    a_row, b_row: 1-D bool (or 0/1) arrays of equal length N. Returns ``n_a_only`` (a right,
    b wrong), ``n_b_only`` (a wrong, b right), ``n_discordant``, ``n_examples``, ``diff``
    ((n_a_only - n_b_only) / N = acc(a) - acc(b)) and ``p_value`` (two-sided exact binomial on the
    discordant pairs; 1 when there are none).
    """
    from scipy import stats

    a = np.asarray(a_row)
    b = np.asarray(b_row)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"a_row and b_row must be non-empty 1-D arrays of equal length, got {a.shape}, {b.shape}")
    for name, v in (("a_row", a), ("b_row", b)):
        if not np.all((v == 0) | (v == 1)):
            raise ValueError(f"{name} must hold per-example correctness (bool or 0/1)")
    a, b = a.astype(bool), b.astype(bool)
    n_a = int(np.count_nonzero(a & ~b))
    n_b = int(np.count_nonzero(~a & b))
    n_disc = n_a + n_b
    # Concordant pairs carry no information on which classifier is better; under H0 each
    # discordant pair is a fair coin.
    p = float(stats.binomtest(n_a, n_disc, 0.5).pvalue) if n_disc else 1.0
    return {"n_a_only": n_a, "n_b_only": n_b, "n_discordant": n_disc, "n_examples": int(a.size),
            "diff": (n_a - n_b) / a.size, "p_value": min(1.0, p)}


def verdict(diff: dict, tost: dict, p_adjusted: float | None, alpha: float = 0.05) -> str:
    """"higher" / "lower" / "equivalent" / "inconclusive" for a - b (rule in the module docstring).

    diff: a dict with ``diff_mean`` (e.g. from :func:`paired_bootstrap`); tost: a dict with
    ``equivalent`` (from :func:`tost`); p_adjusted: the comparison's family-adjusted p-value
    (e.g. from :func:`holm`), or None when undefined.
    """
    if p_adjusted is None:
        return "inconclusive"  # no difference test: neither a difference nor equivalence is shown
    if p_adjusted < alpha:
        # Significant: report the direction, never "equivalent" (a real difference inside the
        # margin is still a difference).
        if diff["diff_mean"] > 0:
            return "higher"
        if diff["diff_mean"] < 0:
            return "lower"
        return "inconclusive"  # significant yet exactly zero observed difference: no direction
    if tost["equivalent"]:
        return "equivalent"
    return "inconclusive"


def holm_text(c: dict, n_boot: int = 2000) -> str:
    """A bootstrap comparison's Holm-adjusted p as text. Where its raw p is the bootstrap's floor
    1 / (n_boot + 1) (no replicate crossed zero), that p and its Holm adjustment are upper bounds, not
    values, and are written "≤ 0.002"; otherwise the adjusted value, two significant digits."""
    p, raw = c.get("p_holm"), c.get("p_value")
    if p is None:
        return "n/a"
    at_floor = raw is not None and raw <= (1.0 / (n_boot + 1)) * (1 + 1e-9)
    return f"≤ {p:.2g}" if at_floor else f"{p:.2g}"
