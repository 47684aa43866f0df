"""The attack suite (IBM adversarial-robustness-toolbox) and the gradient-masking checks.

Threat model (``docs/evaluation.md``): white-box, L-infinity, inputs in [0, 1], untargeted. Every
attack runs on the ORDINARY ``nn.Module`` forward that returns the logits z^L, differentiated by
torch.autograd (ART's ``PyTorchClassifier.loss_gradient``); nothing here defines a custom backward.

Attacks, each at every eps of :data:`EPS`:
  fgsm    ART FastGradientMethod, cross-entropy on the logits, one step of size eps;
  pgd     ART ProjectedGradientDescentPyTorch, ``steps`` iterations of size 2.5 eps / steps, random
          start, ``restarts`` random starts, run once with cross-entropy and once with a CW-style
          margin loss max_{j != y} z_j - z_y; an example counts as robust only if it survives both;
  square  ART SquareAttack (gradient-free, image inputs only: the model sees (1, 28, 28) and its
          forward flattens);
  random_search  gradient-free attack for tabular inputs (ART's Square attack needs images): the
          best of ``queries`` random vertices of the eps-ball by the margin loss;
  autoattack  AutoAttack (Croce & Hein 2020) as its components, each on the examples that survived
          the ones before: ART AutoProjectedGradientDescent with cross-entropy, then APGD with a
          margin loss (2 classes: our CW-style ``MarginLoss``, through the classifier's own loss;
          >= 3 classes: ART's "difference_logits_ratio"), each ``apgd_steps`` iterations from an
          initial step of 2 eps with ``apgd_restarts`` random starts; then ART SquareAttack (images)
          or the random search (tabular). An example counts as robust only if it survives every
          component. By default (``autoattack_queries=None``) the Square / random-search component
          IS the suite's run above (no second run) and APGD runs 50 steps; the standard version
          (``apgd_steps=100, autoattack_queries=5000``: a separate 5000-query Square) costs 3-8x
          the whole suite on an MNIST pair (see :class:`AttackSettings`). The masking checks count
          the APGD part as white-box (``SuiteResult.autoattack_apgd``) and the Square part as
          gradient-free. ``autoattack=False`` leaves it out;
  noise   one draw of random sign noise, x + eps * s, s in {-1, +1}^d (a floor, not an attack);
  transfer  PGD examples (both losses) crafted on ANOTHER model, applied to this one;
  worst   per example, correct only if correct under every attack above.

``correct["certified"]`` is reserved for a proven lower bound (interval bounds, computed elsewhere):
it is not an attack, and neither the worst case nor the masking checks ever read it (:data:`NOT_ATTACKS`).

Robust accuracy counts every attacked example (a clean mistake stays a mistake). All randomness
comes from explicit seeds; numpy's global state (which ART uses) is restored afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

EPS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1.0)
WHITE_BOX = ("fgsm", "pgd", "autoattack")
GRADIENT_FREE = ("square", "random_search", "noise")
NOT_ATTACKS = ("worst", "certified")  # entries of SuiteResult.correct that add_worst never combines
AUTOATTACK_PARTS = ("apgd-ce", "apgd-margin", "square")  # the order they run in ("square": or random search)
CHECKS = ("pgd_le_fgsm", "monotone_in_eps", "unbounded_to_chance", "whitebox_beats_blackbox", "transfer_not_stronger")


def eps_key(eps: float) -> str:
    """The JSON key of an eps: ``str(float)``, e.g. "0.1", "0.05", "1.0"."""
    return str(float(eps))


@dataclass(frozen=True)
class AttackSettings:
    """How hard to attack.

    eps: L-inf radii (inputs live in [0, 1]); pgd_steps >= 1 iterations of size 2.5 eps / steps;
    pgd_restarts >= 1 random starts per loss; square_queries >= 1 Square iterations (MNIST);
    search_queries >= 1 random vertices for tabular inputs; batch_size for ART;
    autoattack: run AutoAttack; apgd_steps >= 1 iterations and apgd_restarts >= 1 random starts of
    each APGD component; autoattack_queries: None reuses the suite's Square / random-search run as
    AutoAttack's gradient-free component, an integer >= 1 runs a separate one with that many
    iterations on the APGD survivors. AutoAttack's standard version is apgd_steps=100,
    apgd_restarts=1, autoattack_queries=5000. Measured on MNIST 3-vs-5 MLPs (300 examples, one
    thread), relative to the suite without AutoAttack (~17 s over the 8 eps of EPS, ~5.6 s at eps
    0.05 and 0.1): the defaults (50, 1, None) ~1.1x, 100 steps ~1.3x, the standard version ~3-4x
    over EPS and ~5-8x at the two small eps (its Square runs 5000 iterations on the survivors);
    tol: slack (a fraction of the attacked examples) the masking checks allow for sampling noise;
    unbounded_max: the white-box accuracy at the largest eps must not exceed this (~0).
    """

    eps: tuple[float, ...] = EPS
    pgd_steps: int = 40
    pgd_restarts: int = 3
    square_queries: int = 300
    search_queries: int = 200
    batch_size: int = 1024
    autoattack: bool = True
    apgd_steps: int = 50
    apgd_restarts: int = 1
    autoattack_queries: int | None = None
    tol: float = 0.01
    unbounded_max: float = 0.05

    def __post_init__(self) -> None:
        if not self.eps or any(not 0 <= e <= 1 for e in self.eps) or list(self.eps) != sorted(set(self.eps)):
            raise ValueError(f"eps = {self.eps!r}: expected distinct increasing values in [0, 1]")
        for name in ("pgd_steps", "pgd_restarts", "square_queries", "search_queries", "batch_size", "apgd_steps",
                     "apgd_restarts", "autoattack_queries"):
            v = getattr(self, name)
            if name == "autoattack_queries" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} = {v!r}: expected an integer >= 1")
        if not isinstance(self.autoattack, (bool, np.bool_)):
            raise ValueError(f"autoattack = {self.autoattack!r}: expected True or False")
        if not 0 <= self.tol < 1 or not 0 <= self.unbounded_max < 1:
            raise ValueError("tol and unbounded_max must lie in [0, 1)")


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
        raise ValueError(f"eps = {eps!r}: expected a value in [0, 1]")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError("inputs must lie in [0, 1]")


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


@dataclass
class SuiteResult:
    """Per-example correctness of one model: ``correct[attack][eps_key]`` is a bool array."""

    clean: np.ndarray
    correct: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    adversarial: dict[str, list[np.ndarray]] = field(default_factory=dict)  # PGD examples for transfer
    zero_gradient_fraction: float = 0.0
    # per eps key: correct under AutoAttack's gradient components (APGD-CE and APGD-margin) alone;
    # the masking checks count this part as white-box (its Square part is gradient-free)
    autoattack_apgd: dict[str, np.ndarray] = field(default_factory=dict)

    def accuracy(self) -> dict[str, dict[str, float]]:
        return {a: {k: float(v.mean()) for k, v in per.items()} for a, per in self.correct.items()}


def attack_suite(model: nn.Module, x: np.ndarray, y: np.ndarray, input_shape: tuple[int, ...], n_classes: int,
                 settings: AttackSettings = AttackSettings(), seed: int = 0,
                 progress: Callable[[str], None] | None = None) -> SuiteResult:
    """Run every white-box and gradient-free attack on ``model`` at every eps of ``settings``.

    ``x`` is (n, features) in [0, 1]; it is reshaped to ``input_shape`` for ART (the MLP's forward
    flattens again). The Square attack runs when ``input_shape`` is an image (C, H, W), the random
    search otherwise; AutoAttack (when ``settings.autoattack``) likewise. Transfer and worst case are
    added later (:func:`add_transfer`, :func:`add_worst`).
    """
    x = np.asarray(x, dtype=np.float32).reshape((len(x), *input_shape))
    y = np.asarray(y, dtype=np.int64)
    image = len(input_shape) == 3
    search = "square" if image else "random_search"
    clf_ce = make_classifier(model, input_shape, n_classes, "ce")
    clf_margin = make_classifier(model, input_shape, n_classes, "margin")
    res = SuiteResult(clean=correct(model, x, y), zero_gradient_fraction=zero_gradient_fraction(model, x, y))
    bs = settings.batch_size
    names = ("fgsm", "pgd") + (("autoattack",) if settings.autoattack else ()) + (search, "noise")
    for name in names:
        res.correct[name] = {}
    for i, eps in enumerate(settings.eps):
        if progress is not None:
            progress(f"eps {eps:g} ({i + 1}/{len(settings.eps)})")
        k = eps_key(eps)
        s = seed * 1009 + i
        res.correct["fgsm"][k] = correct(model, fgsm(clf_ce, x, y, eps, bs), y)
        adv = [pgd(clf, x, y, eps, settings.pgd_steps, settings.pgd_restarts, s, bs) for clf in (clf_ce, clf_margin)]
        res.adversarial[k] = adv
        res.correct["pgd"][k] = np.logical_and.reduce([correct(model, a, y) for a in adv])
        if image:
            res.correct["square"][k] = correct(model, square(clf_margin, x, y, eps, settings.square_queries, s, bs), y)
        else:
            res.correct["random_search"][k] = correct(model, random_search(model, x, y, eps, settings.search_queries,
                                                                           s), y)
        if settings.autoattack:
            own = settings.autoattack_queries is not None  # else: the run above is AutoAttack's Square part
            _, by = autoattack_parts(model, x, y, eps, n_classes, settings.apgd_steps, settings.apgd_restarts,
                                     settings.autoattack_queries or 1, s, bs, (clf_ce, clf_margin),
                                     AUTOATTACK_PARTS if own else AUTOATTACK_PARTS[:2])
            res.autoattack_apgd[k] = res.clean & ~np.isin(by, (0, 1))
            survived = res.clean & (by < 0)
            res.correct["autoattack"][k] = survived if own else survived & res.correct[search][k]
        res.correct["noise"][k] = correct(model, sign_noise(x, eps, s), y)
        log.debug("eps %s: %s", k, {a: float(v[k].mean()) for a, v in res.correct.items()})
    return res


def add_transfer(target: nn.Module, res: SuiteResult, source: SuiteResult, y: np.ndarray) -> None:
    """Apply ``source``'s PGD examples (both losses) to ``target``: correct only if it survives both."""
    res.correct["transfer"] = {
        k: np.logical_and.reduce([correct(target, a, y) for a in advs]) for k, advs in source.adversarial.items()
    }


def add_worst(res: SuiteResult) -> None:
    """Per example and eps, correct only if correct under every attack run so far.

    Entries in :data:`NOT_ATTACKS` ("worst" itself, and "certified", a proven lower bound) never enter.
    """
    attacks = [a for a in res.correct if a not in NOT_ATTACKS]
    if not attacks:
        raise ValueError("add_worst: no attack results")
    keys = res.correct[attacks[0]].keys()
    res.correct["worst"] = {k: np.logical_and.reduce([res.correct[a][k] for a in attacks]) for k in keys}


def masking_checks(res: SuiteResult, n_classes: int, settings: AttackSettings = AttackSettings()) -> dict:
    """The checks of docs/evaluation.md, computed from the numbers of one model.

    Returns ``{"checks": {name: bool}, "values": {name: float}}``; each value is the worst margin
    the check saw (it passes when the value <= 0). "White-box" below is FGSM, PGD and, when it ran,
    AutoAttack's gradient part (APGD-CE and APGD-margin: ``res.autoattack_apgd``; a result without
    that split counts the whole of ``correct["autoattack"]``); AutoAttack's Square / random-search part
    counts as gradient-free. ``correct["certified"]`` (a proven bound, not an attack) is never read.
      pgd_le_fgsm              the iterative attacks are not weaker than one step: max over eps and over
                               PGD and AutoAttack's APGD part of acc(attack) - acc(fgsm) - tol;
      monotone_in_eps          max rise of acc(fgsm), acc(pgd), acc(autoattack) or acc(worst) from one
                               eps to the next (clean accuracy before the first) - tol;
      unbounded_to_chance      white-box accuracy at the largest eps - unbounded_max (and it must be
                               at most chance, 1/K);
      whitebox_beats_blackbox  max over eps of the share of examples a gradient-free attack (square or
                               random search, noise, or AutoAttack's Square part) breaks while every
                               white-box attack fails - tol;
      transfer_not_stronger    the same for transferred examples (only when transfer was run).
    """
    tol = settings.tol
    acc = res.accuracy()
    keys = list(res.correct["fgsm"].keys())
    iterative = {"pgd": res.correct["pgd"]}
    if "autoattack" in res.correct:
        iterative["autoattack"] = res.autoattack_apgd or res.correct["autoattack"]
    white = {k: np.logical_and.reduce([res.correct["fgsm"][k]] + [c[k] for c in iterative.values()])
             for k in keys}  # per example: robust to every white-box attack
    values = {"pgd_le_fgsm": max(float(c[k].mean()) - acc["fgsm"][k] for c in iterative.values() for k in keys)
              - tol}
    rise = -np.inf
    for a in ("fgsm", "pgd", "autoattack", "worst"):
        if a not in acc:
            continue
        seq = [float(res.clean.mean())] + [acc[a][k] for k in keys]
        rise = max(rise, max(b - c for c, b in itertools.pairwise(seq)))
    values["monotone_in_eps"] = rise - tol
    top = float(white[keys[-1]].mean())
    values["unbounded_to_chance"] = max(top - settings.unbounded_max, top - 1.0 / n_classes)

    def beats(names) -> float:
        names = [n for n in names if n in res.correct]
        if not names:
            return float("nan")
        return max(float((white[k] & ~np.logical_and.reduce([res.correct[n][k] for n in names])).mean())
                   for k in keys) - tol

    # with the split, examples only AutoAttack's Square part breaks are a gradient-free win (without
    # it, white already implies correct["autoattack"]: nothing gradient-free to compare)
    values["whitebox_beats_blackbox"] = beats(GRADIENT_FREE + (("autoattack",) if res.autoattack_apgd else ()))
    values["transfer_not_stronger"] = beats(("transfer",))
    checks = {name: bool(values[name] <= 1e-12) for name in CHECKS if not np.isnan(values[name])}
    return {"checks": checks, "values": {k: float(v) for k, v in values.items()}}
