"""The attack primitives of the suite, each on the ORDINARY ``nn.Module`` forward (logits),
differentiated by torch.autograd through IBM ART: FGSM, PGD (cross-entropy and margin), Square,
AutoAttack's components (APGD-CE, APGD margin / DLR, Square or random search), random search,
sign noise, and the per-example correctness they are scored by. ``suite.py`` composes them into
the suite and the gradient-masking checks (what each attack is and why: its docstring).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from ..errors import ArgumentError

AUTOATTACK_PARTS = ("apgd-ce", "apgd-margin", "square")  # the order they run in ("square": or random search)


class MarginLoss(nn.Module):
    """CW-style margin on the logits: max_{j != y} z_j - z_y, summed over the batch by default.

    ART maximises it (untargeted); it is positive exactly when the example is misclassified. Labels
    may be indices or one-hot rows (ART passes one-hot to losses it does not know). ``reduction``
    ("sum", "mean" or "none") is the attribute ART's ``compute_loss`` sets to get per-example values
    (APGD compares them per example).
    """

    def __init__(self, reduction: str = "sum"):
        super().__init__()
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = y.argmax(1) if y.dim() == 2 else y.long()
        m = margins(logits, y)
        if self.reduction == "none":
            return m
        if self.reduction == "mean":
            return m.mean()
        if self.reduction == "sum":
            return m.sum()
        raise ValueError(f"reduction = {self.reduction!r}: expected 'sum', 'mean' or 'none'")


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example max_{j != y} z_j - z_y (> 0: misclassified)."""
    z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, y.view(-1, 1), float("-inf"))
    return others.max(1).values - z_y


@contextlib.contextmanager
def numpy_seed(seed: int):
    """Seed numpy's global RNG (ART draws from it) and restore the previous state afterwards."""
    state = np.random.get_state()
    np.random.seed(int(seed) % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


def make_classifier(model: nn.Module, input_shape: tuple[int, ...], n_classes: int, loss: str = "ce"):
    """Wrap ``model`` (forward -> logits) once for ART; ``loss`` is "ce" or "margin"."""
    from art.estimators.classification import PyTorchClassifier

    if loss not in ("ce", "margin"):
        raise ValueError(f"loss = {loss!r}: expected 'ce' or 'margin'")
    model.eval()
    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss() if loss == "ce" else MarginLoss(),
        input_shape=tuple(input_shape),
        nb_classes=int(n_classes),
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )


def _check_x(x: np.ndarray, eps: float) -> None:
    if not 0 <= eps <= 1:
        raise ArgumentError(f"eps = {eps!r}: expected a value in [0, 1]")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ArgumentError("x: expected inputs in [0, 1] (inputs must lie in [0, 1])")


def _onehot(y: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[np.asarray(y, dtype=np.int64)]


def fgsm(clf, x: np.ndarray, y: np.ndarray, eps: float, batch_size: int = 1024) -> np.ndarray:
    """One signed-gradient step of size eps on the cross-entropy of ``clf`` (ART FastGradientMethod)."""
    from art.attacks.evasion import FastGradientMethod

    _check_x(x, eps)
    if eps == 0:
        return x.astype(np.float32, copy=True)
    attack = FastGradientMethod(clf, norm=np.inf, eps=eps, eps_step=eps, batch_size=batch_size)
    return attack.generate(x=x.astype(np.float32), y=_onehot(y, clf.nb_classes))


def pgd(clf, x: np.ndarray, y: np.ndarray, eps: float, steps: int = 40, restarts: int = 3, seed: int = 0,
        batch_size: int = 1024) -> np.ndarray:
    """L-inf PGD with random start and ``restarts`` starts (ART keeps a successful restart per example)."""
    from art.attacks.evasion import ProjectedGradientDescentPyTorch

    _check_x(x, eps)
    if eps == 0:
        return x.astype(np.float32, copy=True)
    attack = ProjectedGradientDescentPyTorch(
        clf, norm=np.inf, eps=eps, eps_step=2.5 * eps / steps, max_iter=steps, num_random_init=restarts,
        batch_size=batch_size, verbose=False,
    )
    with numpy_seed(seed):
        return attack.generate(x=x.astype(np.float32), y=_onehot(y, clf.nb_classes))


def square(clf, x: np.ndarray, y: np.ndarray, eps: float, queries: int = 300, seed: int = 0,
           batch_size: int = 1024) -> np.ndarray:
    """ART's Square attack (L-inf, gradient-free); ``x`` must be image-shaped (n, C, H, W)."""
    from art.attacks.evasion import SquareAttack

    _check_x(x, eps)
    if eps == 0:
        return x.astype(np.float32, copy=True)
    if x.ndim != 4:
        raise ValueError(f"the Square attack needs image input (n, C, H, W), got shape {x.shape}")
    attack = SquareAttack(clf, norm=np.inf, eps=eps, max_iter=queries, nb_restarts=1, batch_size=batch_size,
                          verbose=False)
    with numpy_seed(seed):
        return attack.generate(x=x.astype(np.float32), y=_onehot(y, clf.nb_classes))


def apgd(clf, x: np.ndarray, y: np.ndarray, eps: float, steps: int = 100, restarts: int = 1, seed: int = 0,
         batch_size: int = 1024, loss_type: str | None = None) -> np.ndarray:
    """ART AutoProjectedGradientDescent, L-inf, initial step 2 eps (as in AutoAttack), ``restarts``
    random starts; examples it fails on come back unchanged.

    ``loss_type`` None attacks ``clf``'s own loss (cross-entropy or :class:`MarginLoss`, see
    :func:`make_classifier`); "difference_logits_ratio" is ART's DLR loss (needs >= 3 classes).
    """
    from art.attacks.evasion import AutoProjectedGradientDescent

    _check_x(x, eps)
    if eps == 0:
        return x.astype(np.float32, copy=True)
    if loss_type == "difference_logits_ratio" and clf.nb_classes < 3:
        raise ValueError("the difference-of-logits-ratio loss needs >= 3 classes; use the margin loss")
    attack = AutoProjectedGradientDescent(
        clf, norm=np.inf, eps=float(eps), eps_step=2.0 * float(eps), max_iter=int(steps), nb_random_init=int(restarts),
        batch_size=int(batch_size), loss_type=loss_type, verbose=False,
    )
    with numpy_seed(seed):
        return attack.generate(x=x.astype(np.float32), y=_onehot(y, clf.nb_classes))


def _sub_seed(seed: int, part: int) -> int:
    """A seed per AutoAttack component, distinct from the suite's per-eps seed (PGD draws from that)."""
    return int(np.random.SeedSequence([int(seed) % 2**32, 7919, part]).generate_state(1)[0])


def _in_ball(adv: np.ndarray, x: np.ndarray, eps: float) -> np.ndarray:
    """Per example: finite, in [0, 1] and within eps (float32 slack) of x."""
    a, b = adv.reshape(len(adv), -1), x.reshape(len(x), -1)
    ok = np.isfinite(a).all(1) & (a.min(1, initial=0.0) >= 0) & (a.max(1, initial=0.0) <= 1)
    return ok & (np.abs(a - b).max(1, initial=0.0) <= eps + 1e-6)


def autoattack_parts(model: nn.Module, x: np.ndarray, y: np.ndarray, eps: float, n_classes: int, steps: int = 100,
                     restarts: int = 1, queries: int = 5000, seed: int = 0, batch_size: int = 1024,
                     classifiers: tuple | None = None,
                     parts: tuple[str, ...] = AUTOATTACK_PARTS) -> tuple[np.ndarray, np.ndarray]:
    """AutoAttack as its components (``parts``, a prefix of :data:`AUTOATTACK_PARTS`), each on the
    survivors of the ones before.

    ``x`` has the model's input shape, (n, C, H, W) for images (Square attack) or (n, d) (random search).
    Returns ``(x_adv, broken_by)``: x_adv is, per example, the first component's successful example (x
    itself where none succeeded); ``broken_by`` is the index of that component in
    :data:`AUTOATTACK_PARTS`, -1 where none broke it (a clean mistake is -1 too: it was never attacked).
    A component's example counts only if it is finite, in [0, 1] and within eps. ``classifiers`` =
    (cross-entropy, margin) ART wrappers of ``model`` (made here when None).
    """
    if tuple(parts) != AUTOATTACK_PARTS[: len(parts)]:
        raise ValueError(f"parts = {parts!r}: expected a prefix of {AUTOATTACK_PARTS}")
    _check_x(x, eps)
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    x_adv = x.copy()
    broken_by = np.full(len(x), -1, dtype=np.int64)
    if eps == 0 or not len(x):
        return x_adv, broken_by
    clf_ce, clf_margin = classifiers or (make_classifier(model, x.shape[1:], n_classes, "ce"),
                                         make_classifier(model, x.shape[1:], n_classes, "margin"))

    def run(part: str, xs: np.ndarray, ys: np.ndarray, s: int) -> np.ndarray:
        if part == "apgd-ce":
            return apgd(clf_ce, xs, ys, eps, steps, restarts, s, batch_size)
        if part == "apgd-margin" and n_classes >= 3:  # DLR: the margin scaled by z_(1) - z_(3)
            return apgd(clf_ce, xs, ys, eps, steps, restarts, s, batch_size, loss_type="difference_logits_ratio")
        if part == "apgd-margin":  # two classes: DLR is undefined, the CW margin max_{j!=y} z_j - z_y
            return apgd(clf_margin, xs, ys, eps, steps, restarts, s, batch_size)
        if xs.ndim == 4:
            return square(clf_margin, xs, ys, eps, queries, s, batch_size)
        return random_search(model, xs, ys, eps, queries, s)

    alive = correct(model, x, y)
    for j, part in enumerate(parts):
        idx = np.flatnonzero(alive)
        if not len(idx):
            break
        adv = run(part, x[idx], y[idx], _sub_seed(seed, j))
        hit = ~correct(model, adv, y[idx]) & _in_ball(adv, x[idx], eps)
        x_adv[idx[hit]] = adv[hit]
        broken_by[idx[hit]] = j
        alive[idx[hit]] = False
    return x_adv, broken_by


def autoattack(model: nn.Module, x: np.ndarray, y: np.ndarray, eps: float, n_classes: int, steps: int = 100,
               restarts: int = 1, queries: int = 5000, seed: int = 0, batch_size: int = 1024) -> np.ndarray:
    """The AutoAttack examples of :func:`autoattack_parts` (x where no component succeeded)."""
    return autoattack_parts(model, x, y, eps, n_classes, steps, restarts, queries, seed, batch_size)[0]


def sign_noise(x: np.ndarray, eps: float, seed: int = 0) -> np.ndarray:
    """x + eps * s with s uniform in {-1, +1}^d, clipped to [0, 1]."""
    _check_x(x, eps)
    s = np.random.default_rng(seed).choice(np.array([-1.0, 1.0], dtype=np.float32), size=x.shape)
    return np.clip(x + eps * s, 0.0, 1.0).astype(np.float32)


@torch.no_grad()
def random_search(model: nn.Module, x: np.ndarray, y: np.ndarray, eps: float, queries: int = 200,
                  seed: int = 0) -> np.ndarray:
    """Gradient-free: per example, the random eps-ball vertex (of ``queries``) with the largest margin."""
    _check_x(x, eps)
    xt = torch.from_numpy(x.astype(np.float32))
    yt = torch.as_tensor(y, dtype=torch.long)
    best = xt.clone()
    if eps == 0:
        return best.numpy()
    best_m = margins(model(best), yt)
    gen = torch.Generator().manual_seed(int(seed))
    for _ in range(queries):
        s = torch.randint(0, 2, xt.shape, generator=gen).float() * 2 - 1
        cand = (xt + eps * s).clamp(0, 1)
        m = margins(model(cand), yt)
        better = m > best_m
        best[better], best_m[better] = cand[better], m[better]
    return best.numpy()


@torch.no_grad()
def correct(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Per-example boolean: the model's argmax logit equals the label."""
    model.eval()
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    pred = torch.cat([model(xt[i : i + batch_size]).argmax(1) for i in range(0, len(xt), batch_size)])
    return (pred.numpy() == np.asarray(y)).astype(bool)


def zero_gradient_fraction(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Share of examples whose input gradient is all exactly zero under cross-entropy OR the margin loss.

    Plain torch.autograd through the ordinary forward, one gradient per example (sum reduction).
    """
    model.eval()
    yt = torch.as_tensor(y, dtype=torch.long)
    zero = np.zeros(len(y), dtype=bool)
    for loss_fn in (nn.CrossEntropyLoss(reduction="sum"), MarginLoss()):
        xt = torch.from_numpy(np.asarray(x, dtype=np.float32)).requires_grad_(True)
        (g,) = torch.autograd.grad(loss_fn(model(xt), yt), xt)
        zero |= (g.flatten(1) == 0).all(1).numpy()
    return float(zero.mean()) if len(zero) else float("nan")
