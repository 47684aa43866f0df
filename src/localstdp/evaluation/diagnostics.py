"""What a model learned (issue 23, item 2): per hidden layer, how many directions its weights and its
activity span, how alike its units are, and how much a linear readout of it knows; and per attacked
example, the largest eps at which its prediction is proven. ``results.json`` rows carry it as
``"diagnostics"`` (:func:`model_diagnostics`); evaluation/diagnostics_report.py plots and tabulates it.

Definitions (a hidden layer: every layer with an activation but the output layer; a conv layer's
weight (out, in, k, k) is read as the (out, in k k) matrix of its units' incoming weights, and its
activity is its block's output, after the sigmoid and the max pool if any, flattened):

- effective rank: the participation ratio of a matrix's singular values s_i,
      PR = (sum_i s_i^2)^2 / sum_i s_i^4,
  1 <= PR <= rank; k equal non-zero singular values give exactly k, one dominant direction gives ~1.
  Of the layer's weight matrix ("weight_rank"), and of its activity on the attacked test examples,
  centred per unit ("activation_rank": the PR of the activity's covariance spectrum, lambda_i ~ s_i^2).
- median |cos|: the median over the unit pairs i < j (the diagonal left out) of |w_i . w_j| / (|w_i| |w_j|),
  w_i the rows of the weight matrix; rows of norm zero are left out. Near 1: the units point one way.
- linear readout: multinomial logistic regression (scikit-learn, lbfgs, L2) of the input pixels and of
  each hidden layer's activity, no rescaling (pixels and sigmoid activities both lie in [0, 1]); trained
  on the train split (at most ``READOUT_MAX_TRAIN`` examples: a fixed seeded subset above it), its C
  chosen from ``READOUT_C`` by validation accuracy (ties: the smaller C, the stronger regularisation;
  no validation split: C = 1), reported on the validation and the test split. A hidden layer whose
  readout beats the input's holds something a linear model of the pixels cannot get.
- certified radius: per attacked example, the largest eps on the grid {0, tol, 2 tol, ..., RADIUS_MAX}
  (tol = ``RADIUS_TOL`` = 1/256) at which localstdp.robustness.bounds.certified_correct proves it, found
  by bisection: certified at the returned radius r, and not at r + tol (unless r = RADIUS_MAX); 0 for a
  clean mistake (never certified) and for an example certified at no eps > 0 on the grid. Only where
  the bounds apply (bounds.supports: the sigmoid MLP); otherwise ``{"skipped": reason}``.

Models that are neither localstdp.model.MLP nor CNN (Forward-Forward's label scorer, whose hidden activity
depends on the label embedded in its input) get ``{"skipped": reason}`` for the whole entry.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data import Dataset
from ..model import CNN, MLP
from .settings import attack_indices

READOUT_C = (0.01, 0.1, 1.0, 10.0)
READOUT_MAX_TRAIN = 10_000
READOUT_MAX_ITER = 500
RADIUS_MAX = 0.5
RADIUS_TOL = 1 / 256
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


# ---------------------------------------------------------------- the measures


def participation_ratio(m) -> float:
    """(sum s_i^2)^2 / sum s_i^4 of the singular values s_i of the 2-D matrix ``m``; 0 for a zero matrix."""
    s2 = torch.linalg.svdvals(torch.as_tensor(np.asarray(m), dtype=torch.float64)) ** 2
    den = float((s2 * s2).sum())
    return float(s2.sum()) ** 2 / den if den > 0 else 0.0


def median_abs_cos(w) -> float:
    """Median |cos| between the rows of ``w`` over the pairs i < j (rows of norm zero left out); NaN
    with fewer than two such rows."""
    w = torch.as_tensor(np.asarray(w), dtype=torch.float64).reshape(len(w), -1)
    norms = w.norm(dim=1)
    u = w[norms > 0] / norms[norms > 0, None]
    if len(u) < 2:
        return float("nan")
    i, j = torch.triu_indices(len(u), len(u), offset=1)
    return float(np.median((u @ u.T)[i, j].abs().numpy()))


def readout(train, val, test, cs=READOUT_C, max_train: int = READOUT_MAX_TRAIN, seed: int = 0) -> dict:
    """Linear readout (see the module's definition): {"C", "val_accuracy", "test_accuracy"}, each split an
    (x (n, d), y (n,)) pair of arrays; ``val`` may be empty (then C = 1 and val_accuracy None)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    (xtr, ytr), (xv, yv), (xte, yte) = ((np.asarray(x, np.float32).reshape(len(y), -1) if len(y) else None,
                                         np.asarray(y)) for x, y in (train, val, test))
    if len(ytr) > max_train:
        keep = np.sort(np.random.default_rng(seed).choice(len(ytr), size=max_train, replace=False))
        xtr, ytr = xtr[keep], ytr[keep]
    best = None
    for c in cs if len(yv) else (1.0,):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = LogisticRegression(C=c, max_iter=READOUT_MAX_ITER).fit(xtr, ytr)
        va = float(clf.score(xv, yv)) if len(yv) else None
        if best is None or (va is not None and va > best[1]):
            best = (c, va, clf)
    c, va, clf = best
    return {"C": float(c), "val_accuracy": va, "test_accuracy": float(clf.score(xte, yte))}


def certified_radii(model: nn.Module, x, y, max_eps: float = RADIUS_MAX, tol: float = RADIUS_TOL,
                    method: str = "crown", broken: dict[float, np.ndarray] | None = None) -> np.ndarray:
    """Per example the largest eps in {0, tol, ..., max_eps} at which it is certified (module docstring):
    bisection on the grid, examples sharing a midpoint bounded together. float64 (n,).

    ``broken`` (eps -> bool per example: an attack broke it at that eps, e.g. the attack suite's worst
    case): an example broken at some eps <= a midpoint is not bounded there -- a sound bound does not
    certify it -- so the radii are the same, found with fewer bounds."""
    from ..robustness.bounds import certified_correct

    def among(sel: np.ndarray, e: float) -> np.ndarray | None:
        hits = [b[sel] for a, b in (broken or {}).items() if a <= e]
        return ~np.logical_or.reduce(hits) if hits else None

    K = int(round(max_eps / tol))
    if K < 1 or abs(K * tol - max_eps) > 1e-12:
        raise ValueError(f"max_eps = {max_eps!r} must be a positive whole multiple of tol = {tol!r}")
    x, y = np.asarray(x), np.asarray(y)
    # certified at lo * tol; not at hi * tol, except hi = K, tested only for those that reach K - 1
    # (the top of the range is rarely certified: one pass saved)
    lo, hi = np.zeros(len(y), np.int64), np.full(len(y), K, np.int64)
    live = certified_correct(model, x, y, 0.0, method)  # eps 0: clean correct
    while (act := np.flatnonzero(live & (hi - lo > 1))).size:
        mid = (lo[act] + hi[act]) // 2
        for m in np.unique(mid):
            sel = act[mid == m]
            c = certified_correct(model, x[sel], y[sel], float(m) * tol, method, among=among(sel, float(m) * tol))
            lo[sel[c]], hi[sel[~c]] = m, m
    if (top := np.flatnonzero(live & (lo == K - 1))).size:
        lo[top[certified_correct(model, x[top], y[top], K * tol, method, among=among(top, K * tol))]] = K
    return lo * tol


# ---------------------------------------------------------------- the model's hidden layers


@dataclass
class Hidden:
    name: str  # "h1", "h2", ... (dense), "conv1", ... (conv blocks)
    weight: torch.Tensor  # (units, fan_in)


def hidden_layers(model: nn.Module) -> list[Hidden] | str:
    """The hidden layers of an MLP or CNN, in order; for any other model the reason it is skipped."""
    if isinstance(model, MLP):
        return [Hidden(f"h{i + 1}", m.weight.detach().reshape(m.out_features, -1))
                for i, m in enumerate(model.layers[:-1])]
    if isinstance(model, CNN):
        mods = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))][:-1]
        out, nc, nd = [], 0, 0
        for m in mods:
            conv = isinstance(m, nn.Conv2d)
            nc, nd = nc + conv, nd + (not conv)
            out.append(Hidden(f"conv{nc}" if conv else f"h{nd}", m.weight.detach().reshape(m.weight.shape[0], -1)))
        return out
    return (f"{type(model).__name__} is not a localstdp MLP or CNN (e.g. Forward-Forward's label scorer, whose "
            "hidden activity depends on the label embedded in its input)")


@torch.no_grad()
def hidden_activity(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> list[np.ndarray]:
    """Each hidden layer's activity (n, units) as float32 arrays, in :func:`hidden_layers`' order."""
    chunks: list[list[torch.Tensor]] = []
    p = next(model.parameters())
    for a in range(0, len(x), batch_size):
        xb = x[a : a + batch_size].to(p.device, p.dtype)
        if isinstance(model, MLP):
            chunks.append(model.activities(xb)[1:-1])
            continue
        acts, mods, h = [], list(model), xb
        for i, m in enumerate(mods):
            h = m(h)
            block_end = isinstance(m, nn.MaxPool2d) or (
                isinstance(m, nn.Sigmoid) and not (i + 1 < len(mods) and isinstance(mods[i + 1], nn.MaxPool2d)))
            if block_end:
                acts.append(h.flatten(1))
        chunks.append(acts)
    if not chunks:
        return [np.zeros((0, len(hl.weight)), np.float32) for hl in hidden_layers(model)]
    return [torch.cat([c[i] for c in chunks]).float().cpu().numpy() for i in range(len(chunks[0]))]


# ---------------------------------------------------------------- the row's entry

_INPUT_READOUT: dict[str, dict] = {}  # the input's readout depends on the data alone: once per data set


def _data_key(ds: Dataset) -> str:
    h = hashlib.blake2b(digest_size=16)
    for t in (ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test, ds.y_test):
        a = np.ascontiguousarray(t.numpy())
        h.update(str((a.dtype, a.shape)).encode() + a.tobytes())
    return h.hexdigest()


def _splits(ds: Dataset, f):
    return [(f(x), y.numpy()) for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test))]


def input_readout(ds: Dataset) -> dict:
    """The readout of the input pixels (cached per data set: every model of a task shares it)."""
    key = _data_key(ds)
    if key not in _INPUT_READOUT:
        if len(_INPUT_READOUT) >= 8:
            _INPUT_READOUT.pop(next(iter(_INPUT_READOUT)))
        _INPUT_READOUT[key] = readout(*_splits(ds, lambda x: x.numpy()))
    return dict(_INPUT_READOUT[key])


def _finite(v: float) -> float | None:
    """None for NaN (results.json stays strict JSON)."""
    return float(v) if np.isfinite(v) else None


def radius_summary(radii: np.ndarray, clean: np.ndarray) -> dict:
    """Quantiles and the per-example radii (:func:`certified_radii`) of the attacked examples."""
    q = np.quantile(radii, QUANTILES) if len(radii) else np.full(len(QUANTILES), np.nan)
    return {"method": "crown", "tolerance": RADIUS_TOL, "max": RADIUS_MAX, "n": int(len(radii)),
            "n_clean_wrong": int((~clean).sum()), "mean": _finite(radii.mean()) if len(radii) else None,
            "quantiles": {f"{p:g}": _finite(v) for p, v in zip(QUANTILES, q)},
            "per_example": [float(r) for r in radii]}


def model_diagnostics(model: nn.Module, ds: Dataset, n_attacked: int, suite=None) -> dict:
    """The ``"diagnostics"`` entry of a results.json row (module docstring): ``layers`` (per hidden layer
    its name, units, weight_rank, activation_rank, median_abs_cos), ``readout`` (input first, then each
    hidden layer) and ``certified_radius`` on the attacked examples (attack_indices(n_test, n_attacked));
    ``{"skipped": reason}`` for a model that is neither MLP nor CNN. ``suite``: the model's attack-suite
    result on those examples, if there is one (its worst case spares the radii bounds, not changing them)."""
    from ..robustness.bounds import supports
    from ..robustness.suite import worst_of

    hidden = hidden_layers(model)
    if isinstance(hidden, str):
        return {"skipped": hidden}
    idx = attack_indices(len(ds.y_test), n_attacked)
    x_att, y_att = ds.x_test[idx], ds.y_test[idx].numpy()
    att_acts = hidden_activity(model, x_att)
    layers = [{"name": h.name, "units": int(h.weight.shape[0]), "weight_rank": participation_ratio(h.weight),
               "activation_rank": participation_ratio(a - a.mean(0)) if len(a) else None,
               "median_abs_cos": _finite(median_abs_cos(h.weight))} for h, a in zip(hidden, att_acts)]
    out = {"layers": layers, "readout": {"input": input_readout(ds)}}
    if hidden:
        per_split = _splits(ds, lambda x: hidden_activity(model, x))
        for i, h in enumerate(hidden):
            out["readout"][h.name] = readout(*[(acts[i], y) for acts, y in per_split])
    if not supports(model):
        out["certified_radius"] = {"skipped": "the bounds do not apply to this model (bounds.supports: sigmoid MLP only)"}
    else:
        broken = None if suite is None else {float(k): ~v for k, v in worst_of(suite).items()}
        radii = certified_radii(model, x_att.numpy(), y_att, broken=broken)
        out["certified_radius"] = radius_summary(radii, model.predict(x_att).numpy() == y_att)
    return out
