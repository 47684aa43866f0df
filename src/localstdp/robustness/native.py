"""Native torch attacks (L-inf, untargeted): FGSM, PGD, APGD and Square on the ORDINARY ``nn.Module``
forward, differentiated by torch.autograd, with no numpy round trip per step.

They are the algorithms of IBM ART's implementations (``FastGradientMethod``,
``ProjectedGradientDescentPyTorch``, ``AutoProjectedGradientDescent``, ``SquareAttack``), step for step,
with three differences, each of which can only make an attack stronger per example or leave it as it is:

* an example counts as broken if ANY point the attack evaluates is misclassified (ART looks at the
  last iterate of each start only);
* a restart runs only on the examples the earlier starts did not break (exact for the attack's own
  accuracy: ART keeps a later start's example only where it succeeds);
* APGD does not stop the whole batch when every loss is exactly zero (ART does).

ART stays the reference: ``tests/test_native_attacks.py`` runs both on fixed seeds and models and
checks the native attack is never weaker per example.

Random draws come from ``rs``, a numpy ``RandomState`` (or the ``numpy.random`` module itself, whose
global stream ART draws from). PGD's starts are drawn for all ``n`` examples of the call every start,
and Square's stripes for every correctly classified example, as ART draws them; APGD's starts are
drawn for all ``n`` (``art_draws=False``, the suite's mode) or in ART's order and shapes
(``art_draws=True``, the reference test). Either way each example's draw is indexed from a draw that
does not depend on which other examples are still alive, so an attack on the survivors of other
attacks gives every survivor the same trajectory as an attack on every example.

Every function takes ``x`` as a float tensor of the model's input shape and ``y`` as class indices,
and returns ``(broken, x_adv)``: ``broken`` a bool tensor (n,), ``x_adv`` the adversarial examples
(x where nothing was found; see each function for which point it keeps).
"""

from __future__ import annotations

import bisect
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ArgumentError
from .attacks import margins

LOSSES = ("ce", "margin", "dlr")
TARGETED_LOSSES = ("dlr-t", "margin-t")  # toward a given class per example (robustness/targeted.py)


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Croce & Hein's difference-of-logits ratio, as ART computes it: -(z_y - z_i) / (z_(1) - z_(3)),
    z_i the largest logit if it is not y's, else the second largest (needs >= 3 classes)."""
    srt = logits.sort(1).values
    z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
    top_is_y = logits.argmax(1) == y
    z_i = torch.where(top_is_y, srt[:, -2], srt[:, -1])
    return -(z_y - z_i) / (srt[:, -1] - srt[:, -3])


def per_example_loss(name: str, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """The attack losses, per example, each to be MAXIMISED: "ce", "margin" (CW) or "dlr"; toward ``target``
    (a class per example): "dlr-t", AutoAttack's targeted DLR -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2), and
    "margin-t", z_t - z_y."""
    if name in TARGETED_LOSSES:
        if target is None:
            raise ValueError(f"loss {name!r} needs a target class per example")
        z = logits.gather(1, torch.stack([y, target], 1))
        if name == "margin-t":
            return z[:, 1] - z[:, 0]
        if logits.shape[1] < 4:
            raise ValueError("the targeted difference-of-logits-ratio loss needs >= 4 classes; use margin-t")
        srt = logits.sort(1).values
        return -(z[:, 0] - z[:, 1]) / (srt[:, -1] - 0.5 * (srt[:, -3] + srt[:, -4]) + 1e-12)
    if name == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if name == "margin":
        return margins(logits, y)
    if name == "dlr":
        if logits.shape[1] < 3:
            raise ValueError("the difference-of-logits-ratio loss needs >= 3 classes; use the margin loss")
        return dlr(logits, y)
    raise ValueError(f"loss = {name!r}: expected one of {LOSSES + TARGETED_LOSSES}")


def _check(x: torch.Tensor, eps: float) -> None:
    if not 0 <= eps <= 1:
        raise ArgumentError(f"eps = {eps!r}: expected a value in [0, 1]")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ArgumentError("x: expected inputs in [0, 1] (inputs must lie in [0, 1])")


def _project(xa: torch.Tensor, x0: torch.Tensor, eps: float) -> torch.Tensor:
    """x0 + the L-inf projection of xa - x0 onto the eps-ball (ART: sign(d) * min(|d|, eps), the same
    numbers as clamping d to [-eps, eps]); two passes and one new tensor."""
    d = xa - x0
    return d.clamp_(-eps, eps).add_(x0)


def _step(xa: torch.Tensor, g: torch.Tensor, size) -> torch.Tensor:
    """clip(xa + size * sign(g), 0, 1), in place on ``g`` (size: a scalar or a per-example tensor)."""
    return g.sign_().mul_(size).add_(xa).clamp_(0, 1)


def _uniform(rs, rows: torch.Tensor, drawn: torch.Tensor, shape: tuple[int, ...], eps: float,
             dtype: torch.dtype) -> torch.Tensor:
    """U(-eps, eps) starts for the examples ``rows``: one draw for each example of ``drawn`` (a superset
    of ``rows``, in order), then indexed, so a row's start depends on ``drawn`` only."""
    u = rs.uniform(-eps, eps, (len(drawn), int(np.prod(shape))))
    return torch.from_numpy(u.astype(np.float32)[_positions(drawn, rows)]).to(dtype).reshape(len(rows), *shape)


def _positions(drawn: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
    """Where each of ``rows`` sits in ``drawn`` (a superset, in order): the index into a per-drawn-row draw."""
    pos = torch.full((int(drawn.max()) + 1 if len(drawn) else 0,), -1, dtype=torch.long)
    pos[drawn] = torch.arange(len(drawn))
    return pos[rows].numpy()


def _grad(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, losses: tuple[str, ...],
          li: torch.Tensor | None = None, target: torch.Tensor | None = None):
    """(per-example loss, per-example misclassified, input gradient) in one forward and backward.

    Row r is attacked with ``losses[li[r]]`` (``li`` None: ``losses[0]`` for every row). The model is in
    eval mode, so rows do not interact: each row's gradient is its own loss's."""
    xs = xs.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xs)
        f = torch.empty(len(ys), dtype=logits.dtype)
        total = logits.new_zeros(())
        for j, name in enumerate(losses):
            sel = slice(None) if li is None else (li == j)
            if li is not None and not sel.any():
                continue
            fj = per_example_loss(name, logits[sel], ys[sel], None if target is None else target[sel])
            f[sel] = fj.detach()
            total = total + fj.sum()
            if li is None:
                break
        (g,) = torch.autograd.grad(total, xs)
    return f, (logits.argmax(1) != ys).detach(), g


@torch.no_grad()
def _wrong(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    return model(xs).argmax(1) != ys


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One signed-gradient step of size eps on the cross-entropy, clipped to [0, 1] (ART's
    FastGradientMethod, L-inf, eps_step = eps). Broken: the clean point or the step's is misclassified."""
    _check(x, eps)
    model.eval()
    if eps == 0 or not len(x):
        return _wrong(model, x, y) if len(x) else torch.zeros(0, dtype=torch.bool), x.clone()
    _, wrong0, g = _grad(model, x, y, ("ce",))
    adv = _project(_step(x, g, torch.tensor(eps, dtype=x.dtype)), x, eps)
    return wrong0 | _wrong(model, adv, y), adv


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 40, restarts: int = 3,
        losses: tuple[str, ...] = ("ce", "margin"), rs=None, seed: int = 0, keep_final: bool = False,
        alive: torch.Tensor | None = None, chunk: int = 2048,
        target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """L-inf PGD, ``steps`` steps of size 2.5 eps / steps from a uniform random start, ``restarts`` starts,
    every loss of ``losses`` attacked in the same batch (the same starts for every loss, as ART with one
    seed). Returns ``(broken, x_adv)``: ``broken`` (len(losses), n) per loss, x_adv (len(losses), n, ...).

    ``keep_final`` (the panel: its examples are handed to other models as transfer attacks): every
    start runs its full ``steps`` and x_adv is the LAST iterate of the start that broke the example
    (of the first start where none did), full strength as ART's. Otherwise a row leaves the batch at
    its first misclassified iterate and x_adv is that point.
    ``alive`` (bool, n): attack only these examples (the others count as not broken here).
    Restarts run only on the (loss, example) rows the earlier starts did not break. ``target`` (a class per
    example): for the targeted losses ("margin-t", "dlr-t").
    """
    _check(x, eps)
    model.eval()
    n, L = len(x), len(losses)
    broken = torch.zeros(L, n, dtype=torch.bool)
    adv = x.unsqueeze(0).repeat(L, *([1] * x.dim()))
    if eps == 0 or not n:
        return broken, adv
    rs = rs if rs is not None else np.random.RandomState(seed % 2**32)
    step = torch.tensor(2.5 * eps / steps, dtype=torch.float32).to(x.dtype)
    todo = torch.ones(L, n, dtype=torch.bool) if alive is None else alive.bool().unsqueeze(0).repeat(L, 1)
    shape = tuple(x.shape[1:])
    for r in range(restarts):
        noise_all = _uniform(rs, torch.arange(n), torch.arange(n), shape, eps, x.dtype)  # all n, every start
        li_all, ex_all = todo.nonzero(as_tuple=True)
        for c in range(0, len(ex_all), chunk):
            li, ex = li_all[c : c + chunk], ex_all[c : c + chunk]
            x0, ys, ts = x[ex], y[ex], (None if target is None else target[ex])
            xa = _project((x0 + noise_all[ex]).clamp(0, 1), x0, eps)
            hit = torch.zeros(len(ex), dtype=torch.bool)
            idx = torch.arange(len(ex))  # rows still moving
            for _t in range(steps + 1):
                if _t == steps:  # the last iterate: a forward only
                    wrong = _wrong(model, xa, ys[idx])
                else:
                    _, wrong, g = _grad(model, xa, ys[idx], losses, li[idx], None if ts is None else ts[idx])
                new = wrong & ~hit[idx]
                hit[idx[new]] = True
                if not keep_final:
                    adv[li[idx[new]], ex[idx[new]]] = xa[new]
                    idx, xa, g = idx[~wrong], xa[~wrong], (g[~wrong] if _t < steps else None)
                    if not len(idx):
                        break
                if _t < steps:
                    xa = _project(_step(xa, g, step), x0[idx], eps)
            if keep_final:
                take = torch.ones(len(ex), dtype=torch.bool) if r == 0 else hit
                adv[li[take], ex[take]] = xa[take]
            broken[li[hit], ex[hit]] = True
        todo &= ~broken
        if not todo.any():
            break
    return broken, adv


def _checkpoints(steps: int) -> list[int]:
    """APGD's step-size checkpoints (ART / Croce & Hein): p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), as iterations ceil(p * steps)."""
    w = [0, 0.22]
    while True:
        nxt = w[-1] + max(w[-1] - w[-2] - 0.03, 0.06)
        if nxt > 1:
            break
        w.append(nxt)
    return [math.ceil(p * steps) for p in w]


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 100, restarts: int = 1,
         loss: str = "ce", rs=None, seed: int = 0, alive: torch.Tensor | None = None,
         art_draws: bool = False, target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Auto-PGD (Croce & Hein 2020) as ART's AutoProjectedGradientDescent, L-inf, initial step 2 eps,
    momentum 0.75, the step halved at the checkpoints where the loss stalled (each example its own
    step), ``restarts`` uniform random starts, each on the examples still correctly classified.

    ``loss``: "ce", "margin" or "dlr", or toward ``target`` (a class per example) "dlr-t" or "margin-t" (APGD-T).
    One forward and backward per iteration (ART: a gradient, then a
    separate loss evaluation). Returns ``(broken, x_adv)``; x_adv is the first misclassified point found.
    """
    _check(x, eps)
    model.eval()
    n = len(x)
    adv = x.clone()
    if eps == 0 or not n:
        return _wrong(model, x, y) if n else torch.zeros(0, dtype=torch.bool), adv
    rs = rs if rs is not None else np.random.RandomState(seed % 2**32)
    wrong0 = _wrong(model, x, y)
    live = torch.ones(n, dtype=torch.bool) if alive is None else alive.bool()
    todo, broken = live & ~wrong0, live & wrong0  # a clean mistake is broken at x itself
    # art_draws: ART's next start attacks the examples whose LAST iterate is correct, and starts from
    # base + noise where base is ART's x_adv (the previous start's random point for those examples)
    art_todo, base = todo.clone(), x.clone()
    shape = tuple(x.shape[1:])
    view = (-1,) + (1,) * len(shape)
    w = _checkpoints(steps)
    losses = (loss,)
    for _r in range(restarts):
        rows = (art_todo if art_draws else todo).nonzero().squeeze(1)  # ART's rows: a superset, same draws
        if not len(rows):
            break
        x0, ys, ts = x[rows], y[rows], (None if target is None else target[rows])
        drawn = art_todo.nonzero().squeeze(1) if art_draws else torch.arange(n)
        noise = _uniform(rs, rows, drawn, shape, eps, x.dtype)
        hit = torch.zeros(len(rows), dtype=torch.bool)

        def found(xs, wrong, sub):
            new = wrong & ~hit[sub]
            adv[rows[sub[new]]] = xs[new]
            hit[sub[new]] = True

        all_rows = torch.arange(len(rows))
        x_k = _project(((base[rows] if art_draws else x0) + noise).clamp(0, 1), x0, eps)
        start = x_k
        eta = torch.full((len(rows),), 2.0 * eps, dtype=torch.float32).to(x.dtype)
        count = torch.zeros(len(rows))
        f_0, wrong, g = _grad(model, x_k, ys, losses, target=ts)
        found(x_k, wrong, all_rows)
        x_1 = _project(_step(x_k, g, eta.view(view)), x0, eps)
        f_1, wrong, g_1 = _grad(model, x_1, ys, losses, target=ts)
        found(x_1, wrong, all_rows)
        eta_w, f_max_w, f_max = eta.clone(), f_0.clone(), f_0.clone()
        x_max, x_max_m_1 = x_k.clone(), x0.clone()
        ge = f_1 >= f_0
        f_max[ge], x_max[ge] = f_1[ge], x_1[ge]
        count[ge] += 1
        x_km1, x_k, g = x_k, x_1, g_1
        for k in range(1, steps):
            z = _project(_step(x_k, g, eta.view(view)), x0, eps)
            # x_k + 0.75 (z - x_k) + 0.25 (x_k - x_km1), rounded in ART's order
            x_new = z.sub_(x_k).mul_(0.75).add_(x_k).add_((x_k - x_km1).mul_(1 - 0.75))
            x_new = _project(x_new.clamp_(0, 1), x0, eps)
            f_new, wrong, g_new = _grad(model, x_new, ys, losses, target=ts)
            found(x_new, wrong, all_rows)
            better = f_new > f_max
            count[better] += 1
            x_max[better], x_max_m_1[better], f_max[better] = x_new[better], x_k[better], f_new[better]
            x_km1, x_k, g = x_k, x_new, g_new
            if k in w:
                cond = (count < 0.75 * (k - w[w.index(k) - 1])) | ((eta_w == eta) & (f_max_w == f_max))
                eta[cond] /= 2
                x_k[cond], x_km1[cond] = x_max[cond], x_max_m_1[cond]
                count[:] = 0
                eta_w, f_max_w = eta.clone(), f_max.clone()
                if cond.any() and k < steps - 1:  # the gradient at the restored best points
                    _, _, g[cond] = _grad(model, x_k[cond], ys[cond], losses, target=None if ts is None else ts[cond])
        broken[rows[hit]] = True
        if art_draws:
            last = _wrong(model, x_k, ys)
            base[rows] = torch.where(last.view(view), x_k, start)
            art_todo &= ~_wrong(model, base, y)
        todo &= ~broken
    return broken, adv


def _square_fraction(i: int, steps: int, p_init: float = 0.8) -> float:
    """ART's schedule of the square's share of the image."""
    intervals = [0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8]
    ratio = [1, 1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128, 1 / 256, 1 / 512]
    return p_init * ratio[bisect.bisect_left(intervals, i / steps)]


@torch.no_grad()
def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, queries: int = 300, rs=None,
           seed: int = 0, alive: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The Square attack (Andriushchenko et al. 2020), L-inf, gradient-free, as ART's SquareAttack:
    vertical stripes of +-eps to start, then ``queries`` iterations that each try one random square
    (one position and one sign per channel, shared by the batch) of +-2 eps, clipped to the ball and to
    [0, 1], kept per example where it lowers the margin z_y - max_{j != y} z_j. ``x`` is (n, C, H, W).
    One forward per iteration on the examples still correctly classified (ART: three). Its draws are
    ART's in ART's order (with ``rs`` numpy's global stream, seeded, it repeats ART's run)."""
    _check(x, eps)
    if x.dim() != 4:
        raise ValueError(f"the Square attack needs image input (n, C, H, W), got shape {tuple(x.shape)}")
    model.eval()
    n, C, H, W = x.shape
    adv = x.clone()
    if eps == 0 or not n:
        return torch.zeros(n, dtype=torch.bool), adv
    rs = rs if rs is not None else np.random.RandomState(seed % 2**32)
    logits = model(x)
    wrong0 = logits.argmax(1) != y
    todo = ~wrong0 if alive is None else alive.bool() & ~wrong0
    broken = wrong0 if alive is None else wrong0 & alive.bool()
    rows = todo.nonzero().squeeze(1)
    x0, ys = x[rows], y[rows]
    m_cur = -margins(logits[rows], ys)  # ART's loss z_y - z_(2); > 0 while correct
    # the starting stripes are drawn for every correctly classified example, as ART draws them, and
    # indexed: an attack on a subset (``alive``) gives each of its examples the same stripes
    drawn = (~wrong0).nonzero().squeeze(1)
    stripes = rs.choice([-1, 1], size=(len(drawn), C, 1, W))[_positions(drawn, rows)]
    # float64 arithmetic cast back, as ART's numpy does
    cand = (x0.double() + eps * torch.from_numpy(stripes.astype(np.float64))).clamp(0, 1).to(x.dtype)
    lg = model(cand)
    m_new = -margins(lg, ys)
    better = m_new < m_cur
    xr = torch.where(better.view(-1, 1, 1, 1), cand, x0)
    m_cur = torch.where(better, m_new, m_cur)
    wrong = better & (lg.argmax(1) != ys)
    idx = torch.arange(len(rows))
    e2 = 2 * eps
    lo, hi = x0 - eps, x0 + eps  # float32, as ART's numpy computes x_init -+ eps
    # min(max(v, lo), hi) clipped to [0, 1] is v clamped to [max(lo, 0), min(hi, 1)] (lo <= x0 <= 1, hi >=
    # x0 >= 0: the two intervals meet), exactly: two passes instead of three
    lo01, hi01 = lo.clamp(min=0), hi.clamp(max=1)
    xc, li, hi_, l01, h01 = xr, lo, hi, lo01, hi01  # the live rows' copies, gathered again when rows leave
    for i in range(queries):
        live = ~wrong[idx]
        if not bool(live.all()):
            idx = idx[live]
            if not len(idx):
                break
            xc, li, hi_, l01, h01 = xr[idx], lo[idx], hi[idx], lo01[idx], hi01[idx]
        p = _square_fraction(i, queries)
        # ART's square side, clipped to the image: on images as small as 4 x 4 (or one pixel high or wide)
        # ART's side reaches the image's and its randint(0, 0) fails; there the square sits at 0, undrawn
        h = min(max(int(round(math.sqrt(p * H * W))), 1), H, W)
        top = rs.randint(0, H - h) if H > h else 0
        left = rs.randint(0, W - h) if W > h else 0
        signs = rs.choice([-e2, e2], size=[C, 1, 1])
        # ART: min(max(xr + delta, x - eps), x + eps) in float64, clipped to [0, 1], cast to float32.
        # Outside the square delta is 0 and every operand float32: the same numbers in float32.
        cand = torch.minimum(torch.maximum(xc, l01), h01)
        win = (slice(None), slice(None), slice(top, top + h), slice(left, left + h))
        sq = xc[win].double() + torch.from_numpy(np.asarray(signs, dtype=np.float64)).view(1, C, 1, 1)
        sq = torch.minimum(torch.maximum(sq, li[win].double()), hi_[win].double())
        cand[win] = sq.clamp_(0, 1).to(x.dtype)
        lg = model(cand)
        m_new = -margins(lg, ys[idx])
        better = m_new < m_cur[idx]
        sel = idx[better]
        kept = cand[better]
        xr[sel], m_cur[sel] = kept, m_new[better]
        if xc is not xr:
            xc[better] = kept
        wrong[sel] = lg.argmax(1)[better] != ys[sel]
    adv[rows] = xr
    broken[rows[wrong]] = True
    return broken, adv
