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

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from .attacks import (  # noqa: F401  (re-exported: the suite's primitives live in attacks.py)
    AUTOATTACK_PARTS,
    MarginLoss,
    apgd,
    autoattack,
    autoattack_parts,
    correct,
    fgsm,
    make_classifier,
    margins,
    numpy_seed,
    pgd,
    random_search,
    sign_noise,
    square,
    zero_gradient_fraction,
)

log = logging.getLogger(__name__)

EPS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1.0)
WHITE_BOX = ("fgsm", "pgd", "autoattack")
GRADIENT_FREE = ("square", "random_search", "noise")
NOT_ATTACKS = ("worst", "certified")  # entries of SuiteResult.correct that add_worst never combines
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
