"""Certified robust accuracy: a proven lower bound beside the attacked (upper-bound) accuracy.

Threat model (as for the attacks): L-infinity ball of radius eps intersected with the input box,

    B(x) = {x' : |x' - x|_inf <= eps, x' in [0, 1]^d} = [lo, hi],  lo = max(x - eps, 0), hi = min(x + eps, 1).

Network (``model.MLP``, L linear layers, hidden activation sigma = logistic sigmoid):

    z_0 = W_0 x + b_0,   a_i = sigma(z_i),   z_i = W_i a_(i-1) + b_i  (i = 1 .. L-1),   logits z_(L-1).

An example (x, y) is CERTIFIED when m_j = min_{x' in B(x)} z_y(x') - z_j(x') > 0 for every j != y: then
no x' in the ball changes argmax z. We compute lower bounds mlb_j <= m_j, so certified => robust, and
certified accuracy <= any attacked accuracy (attacks give upper bounds on robust accuracy).

IBP (interval bound propagation). A box [p, q] with centre c = (p + q) / 2 and radius r = (q - p) / 2
maps through z = W a + b exactly to z in [W c + b - |W| r, W c + b + |W| r] (the first layer is
therefore exact), and sigma is increasing, so a in [sigma(l), sigma(u)]. The LAST layer is not
bounded logit by logit: the margin is linear in a_(L-2),

    z_y - z_j = (W_y - W_j) a + (b_y - b_j) >= (W_y - W_j) c + (b_y - b_j) - |W_y - W_j| r,

which is tighter than lower(z_y) - upper(z_j) because the shared a cancels.

CROWN (Zhang, Weng, Chen, Hsieh, Daniel 2018, "Efficient Neural Network Robustness Certification with
General Activation Functions", NeurIPS). Given pre-activation bounds z_i in [l, u], each neuron gets
linear bounds  aL z + bL <= sigma(z) <= aU z + bU  on [l, u]. A lower bound of Lam . z_k (Lam a row
of coefficients) is propagated backwards:

    Lam . z_i = Lam W_i a_(i-1) + Lam b_i,
    Lam' . a >= sum_n Lam'_n (aL_n z_n + bL_n) [Lam'_n >= 0] + Lam'_n (aU_n z_n + bU_n) [Lam'_n < 0],

down to z_0 = W_0 x + b_0, where Lam . z_0 >= Lam . (W_0 c + b_0) - |Lam W_0| r over the input box.
Hidden layers' bounds are computed this way too (rows +e_n and -e_n give the lower and the upper bound
of neuron n), layer by layer, each intersected with the IBP bound from the previous (tightened) layer;
the output is bounded directly with the margin rows Lam = e_y - e_j. The returned margin bound is
max(CROWN, IBP), so "crown" never certifies less than "ibp".

Sigmoid relaxation on [l, u] (width w = u - l, chord slope k = (sigma(u) - sigma(l)) / w, m = (l + u) / 2):
  upper bound  - l >= 0 (sigma concave there): tangent at m;
               - otherwise, if k <= sigma'(u): the chord (valid for u <= 0 where sigma is convex, and for
                 l < 0 < u because chord - sigma is concave on [l, 0], non-increasing on [0, u], zero at l, u);
               - otherwise (l < 0 < u): the tangent at d >= 0 that passes through (l, sigma(l)) (CROWN's
                 choice). The touching point d*(l) depends on l only; it is tabulated once (bisection, keeping
                 the upper end of the bracket) on a grid of l with step 2^-10, and the table value at the grid
                 point at or below l is used: the tangent at any d >= d*(l) is still an upper bound on [l, inf)
                 (its value at l only grows with d), so the rounding of l and d stays sound (at most one grid
                 step loose). l < -40 is bisected directly.
  lower bound  by symmetry, sigma(z) = 1 - sigma(-z): the upper bound of sigma on [-u, -l], (a, b), gives
               sigma(z) >= a z + (1 - b) on [l, u] (tangent at m for u <= 0, chord for l >= 0 or when
               k <= sigma'(l), else the tangent at d' in [l, 0] through (u, sigma(u))).
  w < 1e-6:    tangent at m with both intercepts moved by 0.0121 w^2 >= max|sigma''| / 2 * (w / 2)^2
               (Taylor; max|sigma''| = 1 / (6 sqrt 3)), which avoids dividing by a vanishing width and is exact
               at eps = 0.

Numerics: the bounds are computed in float64 (the model's float32 weights convert exactly), keeping
round-off (~1e-15 relative) far below any margin that matters, with one exception: the single large
product |Lam W_0| at the input ((2 n_1 rows per example) x n_1 x d multiply-adds, most of the cost) runs
in float32, about twice as fast, and its round-off is covered by a proven allowance computed in float64
(see ``_backsub``), so this step is as sound as the rest. The bound is proven for exact arithmetic on the
model's weights; the remaining float64 round-off is not made rigorous by directed rounding. Clean
correctness is read from the model's own forward, so a clean mistake is never certified, and at eps = 0
(the ball is {x}) "certified" is exactly "clean correct".
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn

from .. import checks
from ..errors import ArgumentError, ArgumentTypeError

METHODS = ("ibp", "crown")

_NARROW = 1e-6  # below this interval width the sigmoid gets the tangent-plus-Taylor-slack relaxation
_TAYLOR = 0.0121  # >= max|sigma''| / 8 = 1 / (48 sqrt 3) = 0.012028
_BISECT = 40  # bisection steps for tangent points below the table (bracket width u 2^-40)
_DTYPE = torch.float64  # all bound arithmetic (see "Numerics" above) ...
_FAST_GEMM = True  # ... except |Lam W_0| at the input: float32 GEMM plus a proven round-off allowance
_BUDGET = 2**23  # elements (64 MB in float64) of one backward coefficient tensor; examples are chunked to fit


# ---------------------------------------------------------------- sigmoid relaxation


def _dsig(z: torch.Tensor) -> torch.Tensor:
    """sigma'(z) = sigma(z) sigma(-z) (no cancellation in 1 - sigma(z) for large z)."""
    return torch.sigmoid(z) * torch.sigmoid(-z)


def _tangent_through_left(l: torch.Tensor, hi: torch.Tensor, steps: int = _BISECT) -> torch.Tensor:
    """For l < 0: a point d >= 0 whose tangent passes at or above (l, sigma(l)), found by bisection on
    [0, hi] (hi must satisfy that already), as close to the exact touching point d*(l) as ``steps`` allow.

    g(d) = sigma(d) + sigma'(d) (l - d) - sigma(l) is increasing on d > 0 (g' = sigma''(d) (l - d) > 0) and
    g(0) <= 0 (sigma convex on [l, 0]); we keep the end of the bracket where g >= 0.
    """
    lo, target = torch.zeros_like(l), torch.sigmoid(l)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        ok = torch.sigmoid(mid) + _dsig(mid) * (l - mid) >= target
        hi = torch.where(ok, mid, hi)
        lo = torch.where(ok, lo, mid)
    return hi


_TABLE_MIN, _TABLE_STEP = -40.0, 2.0**-10  # d*(l) tabulated on l = -40 + j / 1024 (exact binary grid)
_TABLE: dict = {}


def _tangent_table(device) -> torch.Tensor:
    """d(l_j) >= d*(l_j) on the grid l_j in [-40, 0], built once per device by bisection on [0, 60]."""
    key = (str(device), _DTYPE)
    if key not in _TABLE:
        grid = _TABLE_MIN + _TABLE_STEP * torch.arange(int(-_TABLE_MIN / _TABLE_STEP) + 1, dtype=torch.float64)
        _TABLE[key] = _tangent_through_left(grid, torch.full_like(grid, 60.0), steps=60).to(device, _DTYPE)
    return _TABLE[key]


def _tangent_point(l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """For l < 0 < u: a tangent point d >= d*(l), so the tangent at d is an upper bound of sigma on [l, inf).

    d*(l) decreases as l grows, so the tabulated value at the grid point l_j <= l is >= d*(l) (sound, at most
    one grid step loose); l below the table is bisected on [0, u] directly (g(u) > 0 when chord slope > sigma'(u)).
    """
    table = _tangent_table(l.device)
    j = (torch.floor((l - _TABLE_MIN) / _TABLE_STEP) - 1).clamp(0, len(table) - 1).long()  # -1: round-off guard
    d = table[j]
    far = l < _TABLE_MIN
    if bool(far.any()):
        d[far] = _tangent_through_left(l[far], u[far].clone())
    return d


def _sigmoid_upper(l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) with sigma(z) <= a z + b for z in [l, u] (elementwise; widths >= _NARROW)."""
    sl, su = torch.sigmoid(l), torch.sigmoid(u)
    k = (su - sl) / (u - l).clamp_min(_NARROW)
    d = 0.5 * (l + u)  # tangent point: the midpoint where sigma is concave on [l, u]
    straddle = (l < 0) & (u > 0) & (k > _dsig(u))  # the chord would cut sigma: tangent through (l, sigma(l))
    if bool(straddle.any()):
        d = d.clone()
        d[straddle] = _tangent_point(l[straddle], u[straddle])
    tangent = (l >= 0) | straddle
    a = torch.where(tangent, _dsig(d), k)
    b = torch.where(tangent, torch.sigmoid(d) - a * d, sl - k * l)
    return a, b


def sigmoid_relaxation(l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(aL, bL, aU, bU) with aL z + bL <= sigma(z) <= aU z + bU for every z in [l, u], elementwise."""
    aU, bU = _sigmoid_upper(l, u)
    aL, bL = _sigmoid_upper(-u, -l)  # sigma(z) = 1 - sigma(-z): an upper bound on [-u, -l] ...
    bL = 1.0 - bL  # ... is a lower bound on [l, u] with the same slope
    narrow = (u - l) < _NARROW
    if bool(narrow.any()):
        m = 0.5 * (l + u)
        s = _dsig(m)
        c = torch.sigmoid(m) - s * m
        slack = _TAYLOR * (u - l) ** 2
        aL, aU = torch.where(narrow, s, aL), torch.where(narrow, s, aU)
        bL, bU = torch.where(narrow, c - slack, bL), torch.where(narrow, c + slack, bU)
    return aL, bL, aU, bU


# ---------------------------------------------------------------- bound propagation


def _interval_affine(W, b, p, q):
    """Exact bounds of W a + b over the box a in [p, q] (rows of p, q are examples)."""
    c, r = 0.5 * (p + q), 0.5 * (q - p)
    zc, zr = c @ W.T + b, r @ W.abs().T
    return zc - zr, zc + zr


def _ibp_margin(W, b, p, q, y):
    """Lower bound of z_y - z_j = (W_y - W_j) a + (b_y - b_j) over a in [p, q]: (n, K)."""
    D = W[y][:, None, :] - W[None, :, :]  # (n, K, h)
    c, r = 0.5 * (p + q), 0.5 * (q - p)
    return torch.bmm(D, c[:, :, None]).squeeze(-1) + (b[y][:, None] - b[None, :]) - torch.bmm(D.abs(), r[:, :, None]).squeeze(-1)


def _rowdot(Lam: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Lam (m, h) shared or (s, m, h), v (s, h) per example -> (s, m)."""
    if Lam.dim() == 2:
        return v @ Lam.T
    return torch.bmm(Lam, v[:, :, None]).squeeze(-1)


_U32 = 2.0**-24  # unit round-off of float32


def _gamma(n: int) -> float:
    """gamma_n = n u / (1 - n u): relative error bound of an n-term float32 dot product, any summation order
    (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., sec. 3.1)."""
    return n * _U32 / (1 - n * _U32)


def _backsub(Lam, k, Ws, bs, rel, box):
    """CROWN lower bound (s, m) of Lam . z_k over the input box, for s examples.

    Lam: (m, n_k) shared by the examples or (s, m, n_k). rel[i] = (aL, bL, aU, bU) of layer i, each (s, n_i).
    box = (zc0, zr0, rad0, W0_32): W_0 c + b_0 and |W_0| rad (s, n_0) at the box centre c and radius rad (s, d),
    and the first layer's weights in float32 (None: stay in float64).
    """
    zc0, zr0, rad0, W0_32 = box
    s = zc0.shape[0]
    const = torch.zeros(s, Lam.shape[-2], dtype=zc0.dtype, device=zc0.device)
    centre = spread = None  # Lam . zc0 and |Lam| . zr0 for the final Lam
    for i in range(k, 0, -1):
        const = const + Lam @ bs[i]
        Lam = Lam @ Ws[i]  # coefficients on a_(i-1) = sigma(z_(i-1))
        # relax: positive coefficients take sigma's lower line, negative ones the upper line
        aL, bL, aU, bU = rel[i - 1]
        pos, neg = Lam.clamp(min=0), Lam.clamp(max=0)
        if Lam.dim() == 2:  # shared by the examples (a hidden layer's own bounds): constants are small GEMMs
            const = const + bL @ pos.T + bU @ neg.T
            if i == 1:  # so are the input terms, since the new Lam = pos aL + neg aU with slopes aL, aU >= 0
                centre = (aL * zc0) @ pos.T + (aU * zc0) @ neg.T
                spread = (aL * zr0) @ pos.T - (aU * zr0) @ neg.T
            Lam = (pos * aL[:, None, :]).addcmul_(neg, aU[:, None, :])
        else:
            const = const + torch.bmm(pos, bL[:, :, None]).squeeze(-1) + torch.bmm(neg, bU[:, :, None]).squeeze(-1)
            Lam = pos.mul_(aL[:, None, :]).addcmul_(neg, aU[:, None, :])
        # Lam: (s, m, n_(i-1)) on z_(i-1)
    if Lam.dim() == 2:
        Lam = Lam.expand(s, -1, -1)
    lb = const + (_rowdot(Lam, zc0) if centre is None else centre)
    s, m, h = Lam.shape
    if W0_32 is None:  # |Lam W_0| rad in the working precision
        P = (Lam.reshape(-1, h) @ Ws[0]).abs_().view(s, m, -1)
        return lb - torch.bmm(P, rad0[:, :, None]).squeeze(-1)
    # The one big GEMM ((s m, h) x (h, d); m = 2 n_1 rows per example for the second layer's bounds) runs in
    # float32, about twice as fast, with its round-off bounded (float32 underflow, below 1e-38, not covered):
    #  - P' = fl32(fl32(Lam) fl32(W_0)): |P' - Lam W_0| <= c |Lam| |W_0| entrywise, c = gamma_(h+2) (1 + u)^2
    #    (the 2 extra u round Lam and W_0 to float32), so sum_k |Lam W_0|_k rad_k <= sum_k |P'_k| rad_k + c |Lam| zr0;
    #  - S' = fl32(sum_k |P'_k| fl32(rad_k)) >= (1 - gamma_d)(1 - u) sum_k |P'_k| rad_k.
    if spread is None:
        spread = _rowdot(Lam.abs(), zr0)
    d = W0_32.shape[1]
    P = (Lam.reshape(-1, h).to(torch.float32) @ W0_32).abs_().view(s, m, d)
    S = torch.bmm(P, rad0.to(torch.float32)[:, :, None]).squeeze(-1).to(lb.dtype)
    c = _gamma(h + 2) * (1 + _U32) ** 2
    return lb - S / ((1 - _gamma(d)) * (1 - _U32)) - c * spread


def _chunked_backsub(Lam, k, Ws, bs, rel, box):
    """``_backsub`` over slices of the examples, so each coefficient tensor stays within _BUDGET elements."""
    n, m = box[0].shape[0], Lam.shape[-2]
    widest = max(W.shape[1] for W in Ws[: k + 1])
    step = max(1, _BUDGET // (m * widest))
    out = []
    for a in range(0, n, step):
        sl = slice(a, a + step)
        sub_box = tuple(t[sl] for t in box[:3]) + (box[3],)
        out.append(_backsub(Lam if Lam.dim() == 2 else Lam[sl], k, Ws, bs, [tuple(t[sl] for t in r) for r in rel], sub_box))
    return torch.cat(out)


def _margin_bounds_batch(Ws, bs, x, y, eps, method, W0_32=None):
    """(n, K) lower bounds of z_y - z_j (0 at j == y) for a batch, in the dtype of Ws."""
    L = len(Ws)
    p, q = (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)
    # pure IBP
    lo, hi = p, q
    for i in range(L - 1):
        l, u = _interval_affine(Ws[i], bs[i], lo, hi)
        lo, hi = torch.sigmoid(l), torch.sigmoid(u)
    ibp = _ibp_margin(Ws[-1], bs[-1], lo, hi, y)
    if method == "ibp":
        return ibp
    # CROWN: layer 0 is exact; deeper layers CROWN intersected with IBP from the tightened previous layer
    c0, rad0 = 0.5 * (p + q), 0.5 * (q - p)
    zc0, zr0 = c0 @ Ws[0].T + bs[0], rad0 @ Ws[0].abs().T
    box = (zc0, zr0, rad0, W0_32)
    l, u = zc0 - zr0, zc0 + zr0
    rel = []
    for k in range(1, L - 1):
        rel.append(sigmoid_relaxation(l, u))
        l_ibp, u_ibp = _interval_affine(Ws[k], bs[k], torch.sigmoid(l), torch.sigmoid(u))
        n_k = Ws[k].shape[0]
        eye = torch.eye(n_k, dtype=x.dtype, device=x.device)
        lb = _chunked_backsub(torch.cat([eye, -eye]), k, Ws, bs, rel, box)
        l, u = torch.maximum(lb[:, :n_k], l_ibp), torch.minimum(-lb[:, n_k:], u_ibp)
    if L > 1:
        rel.append(sigmoid_relaxation(l, u))
        tight_ibp = _ibp_margin(Ws[-1], bs[-1], torch.sigmoid(l), torch.sigmoid(u), y)
    else:
        tight_ibp = ibp
    K = Ws[-1].shape[0]
    eye = torch.eye(K, dtype=x.dtype, device=x.device)
    spec = eye[y][:, None, :] - eye[None, :, :]  # rows e_y - e_j on the logits, (n, K, K)
    crown = _chunked_backsub(spec, L - 1, Ws, bs, rel, box)
    return torch.maximum(crown, torch.maximum(tight_ibp, ibp))


# ---------------------------------------------------------------- public API


def _layers(model: nn.Module) -> list[nn.Linear]:
    layers = getattr(model, "layers", None)
    if layers is None or len(layers) == 0 or not all(isinstance(m, nn.Linear) for m in layers):
        raise ArgumentTypeError(f"model: expected a localstdp.model.MLP (model.layers: a list of nn.Linear), got "
                                f"{type(model).__name__} (model must be a localstdp.model.MLP)")
    if len(layers) > 1 and getattr(model, "f", None) is not torch.sigmoid:
        raise ArgumentError(f"model: bounds support the sigmoid activation only, got "
                            f"{getattr(model, 'activation', None)!r}")
    return list(layers)


def supports(model: nn.Module) -> bool:
    """Whether the bounds apply to ``model``: a sigmoid MLP (``model.layers``: nn.Linear only)."""
    try:
        _layers(model)
    except ValueError:
        return False
    return True


def _validate(model, x, y, eps, method, batch_size):
    """The arguments of the public functions below; ArgumentError / ArgumentTypeError (a ValueError) naming
    the argument (:mod:`localstdp.checks`)."""
    if not isinstance(method, str) or method not in METHODS:
        raise ArgumentError(f"method = {method!r}: expected one of {METHODS}")
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real):
        raise ArgumentTypeError(f"eps = {eps!r}: expected a number >= 0")
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise ArgumentError(f"eps = {eps!r}: expected a finite number >= 0")
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ArgumentError(f"batch_size = {batch_size!r}: expected an integer >= 1")
    layers = _layers(model)
    x = checks.array("x", x)
    if x.ndim < 2:
        raise ArgumentError(f"x has shape {x.shape}: expected (n, features) or (n, *image_shape)")
    x = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))
    if x.shape[1] != layers[0].in_features:
        raise ArgumentError(f"x has {x.shape[1]} features per example, the model expects {layers[0].in_features}")
    if (x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating)
            or (x.size and not np.isfinite(x).all())):
        raise ArgumentError(f"x: expected finite real numbers in [0, 1] (x must be finite numbers), got dtype "
                            f"{x.dtype}" + ("" if not np.issubdtype(x.dtype, np.number) else " with NaN or inf"))
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ArgumentError(f"x: expected inputs in [0, 1] (inputs must lie in [0, 1]), got values in "
                            f"[{x.min():g}, {x.max():g}]")
    y = checks.array("y", y)
    if y.shape != (len(x),):
        raise ArgumentError(f"y has shape {y.shape}: expected ({len(x)},), one label per example")
    n_classes = layers[-1].out_features
    if y.size and (y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer) or y.min() < 0
                   or y.max() >= n_classes):
        raise ArgumentError(f"y must hold integer labels in [0, {n_classes}), got "
                            + (f"dtype {y.dtype}" if not np.issubdtype(y.dtype, np.integer) else
                               f"values in [{y.min()}, {y.max()}]"))
    return layers, x, y.astype(np.int64), eps


def margin_lower_bounds(model: nn.Module, x: np.ndarray, y: np.ndarray, eps: float, method: str = "crown",
                        batch_size: int = 256) -> np.ndarray:
    """(n, K) float64: entry j is a lower bound of min over the eps-ball of z_y - z_j; +inf at j == y."""
    layers, x, y, eps = _validate(model, x, y, eps, method, batch_size)
    dev = layers[0].weight.device
    Ws = [m.weight.detach().to(dev, _DTYPE) for m in layers]
    bs = [m.bias.detach().to(dev, _DTYPE) if m.bias is not None else torch.zeros(m.out_features, dtype=_DTYPE, device=dev)
          for m in layers]
    # float32 products with the IEEE round-off the allowance assumes: on the CPU at "highest" matmul precision
    # (not TF32 / bfloat16 modes)
    fast = _FAST_GEMM and _DTYPE == torch.float64 and dev.type == "cpu" and torch.get_float32_matmul_precision() == "highest"
    W0_32 = Ws[0].to(torch.float32) if fast else None
    out = np.empty((len(x), layers[-1].out_features), dtype=np.float64)
    with torch.no_grad():
        for a in range(0, len(x), batch_size):
            xt = torch.as_tensor(x[a : a + batch_size], dtype=_DTYPE, device=dev)
            yt = torch.as_tensor(y[a : a + batch_size], device=dev)
            out[a : a + batch_size] = _margin_bounds_batch(Ws, bs, xt, yt, eps, method, W0_32).cpu().numpy()
    out[np.arange(len(x)), y] = np.inf
    return out


def certified_correct(model: nn.Module, x: np.ndarray, y: np.ndarray, eps: float, method: str = "crown",
                      batch_size: int = 256, among: np.ndarray | None = None) -> np.ndarray:
    """Per example: True only when every x' with |x' - x|_inf <= eps in [0, 1]^d is PROVEN to be classified y.

    A clean mistake (by the model's own forward) is never certified; at eps = 0 this is exactly clean correctness.
    ``among`` (bool, one per example): bound only these, the others are False -- pass the examples no attack
    broke at ``eps``: a sound bound certifies none of the rest, so the answer is the same at less cost.
    """
    layers, xf, yv, eps = _validate(model, x, y, eps, method, batch_size)
    if among is not None:
        among = np.asarray(among)
        if among.shape != (len(xf),) or among.dtype != bool:
            raise ArgumentError(f"among: expected a bool array of shape ({len(xf)},), got {among.dtype} {among.shape}")
    dev, dt = layers[0].weight.device, layers[0].weight.dtype
    with torch.no_grad():
        clean = np.concatenate(
            [model(torch.as_tensor(xf[a : a + batch_size], dtype=dt, device=dev)).argmax(1).cpu().numpy() for a in range(0, len(xf), batch_size)]
        ) if len(xf) else np.zeros(0, dtype=np.int64)
    clean_ok = clean == yv
    if eps == 0 or not clean_ok.any():
        return clean_ok
    ok = np.zeros_like(clean_ok)
    idx = np.flatnonzero(clean_ok if among is None else clean_ok & among)  # bound only the clean-correct examples
    if len(idx):
        ok[idx] = (margin_lower_bounds(model, xf[idx], yv[idx], eps, method, batch_size) > 0).all(1)
    return ok


def certified_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, eps: float, method: str = "crown",
                       batch_size: int = 256) -> float:
    """Share of examples certified (a proven lower bound on robust accuracy); NaN for no examples."""
    ok = certified_correct(model, x, y, eps, method, batch_size)
    return float(ok.mean()) if len(ok) else float("nan")
