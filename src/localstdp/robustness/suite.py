"""The attack suite (IBM adversarial-robustness-toolbox) and the gradient-masking checks.

Threat model (``docs/evaluation.md``): white-box, L-infinity, inputs in [0, 1], untargeted (and targeted
attacks for three classes or more). Every attack runs on the ORDINARY ``nn.Module`` forward that returns the
logits z^L, differentiated by torch.autograd; nothing here defines a custom backward.

Attacks, each at every eps of :data:`EPS`, as native torch loops (:mod:`.native`: ART's algorithms
step for step, never weaker per example than ART's own implementations on the reference test):
  fgsm    one signed-gradient step of size eps on the cross-entropy of the logits (ART's
          FastGradientMethod);
  pgd     ``steps`` iterations of size 2.5 eps / steps from a uniform random start (ART's
          ProjectedGradientDescent), ``restarts`` starts, the cross-entropy and a CW-style margin loss
          max_{j != y} z_j - z_y attacked in one batch; an example counts as robust only if it
          survives both; a restart runs only on what the earlier starts did not break;
  square  the Square attack (ART's SquareAttack; gradient-free, image inputs only: the model sees
          (1, 28, 28) and its forward flattens);
  random_search  gradient-free attack for tabular inputs (the Square attack needs images): the
          best of ``queries`` random vertices of the eps-ball by the margin loss;
  autoattack  AutoAttack (Croce & Hein 2020) as its components, each on the examples that survived
          the ones before: APGD (ART's AutoProjectedGradientDescent) with cross-entropy, then APGD
          with the CW margin (2 classes) or the difference-of-logits ratio (>= 3 classes), each
          ``apgd_steps`` iterations from an initial step of 2 eps with ``apgd_restarts`` random
          starts; then the Square attack (images) or the random search (tabular). An example counts
          as robust only if it survives every component. By default (``autoattack_queries=None``) the
          Square / random-search component IS the suite's run above (no second run) and APGD runs 50
          steps, a reduced AutoAttack; the standard version is ``apgd_steps=100,
          autoattack_queries=5000``. The masking checks count the APGD part as white-box
          (``SuiteResult.autoattack_apgd``) and the Square part as gradient-free.
          ``autoattack=False`` leaves it out;
  targeted  (>= 3 classes, ``targets`` > 0) APGD-T and multi-targeted PGD (:mod:`.targeted`) on the
          examples every attack above left at that eps (its accuracy is theirs or less);
  aa-standard  (``autoattack_standard``) the official AutoAttack code, "standard" version, on the examples
          every attack above left (:mod:`.official`);
  noise   one draw of random sign noise, x + eps * s, s in {-1, +1}^d (a floor, not an attack);
  transfer  PGD examples (both losses, full strength: every start's last iterate) crafted on ANOTHER
          model, applied to this one;
  worst   per example, correct only if correct under every attack above and at every smaller eps.

The sanity eps (>= ``sanity_eps``, 0.5 and 1.0 by default) get a small budget (``sanity_steps``
PGD / APGD steps, one start, ``sanity_queries`` Square / search queries): their only check is that
white-box accuracy reaches chance. Where only the worst case is wanted (frontier points),
``attack_suite(..., worst_only=True)`` attacks only the survivors, cheapest attack first.

``correct["certified"]`` is reserved for a proven lower bound (interval bounds, computed elsewhere): it is
not an attack; neither the worst case nor the masking checks read it (:data:`NOT_ATTACKS`). Robust accuracy
counts every attacked example (a clean mistake stays a mistake). All randomness comes from explicit seeds."""

from __future__ import annotations

import itertools
import logging
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .. import checks
from . import native, official
from .attacks import (  # noqa: F401  (re-exported: the suite's primitives live in attacks.py)
    AUTOATTACK_PARTS,
    MarginLoss,
    _sub_seed,
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
from .suite_args import check_suite_args
from .targeted import suite_targeted

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
    search_queries >= 1 random vertices for tabular inputs; batch_size: unused by the native attacks (kept for
    the ART primitives of :mod:`.attacks`); autoattack: run AutoAttack; apgd_steps >= 1 iterations and apgd_restarts >= 1 random starts of
    each APGD component; autoattack_queries: None reuses the suite's Square / random-search run as
    AutoAttack's gradient-free component, an integer >= 1 runs a separate one with that many
    iterations on the APGD survivors. AutoAttack's standard version is apgd_steps=100,
    apgd_restarts=1, autoattack_queries=5000 (its cost: ``localstdp bench --attacks``); targets >= 0: classes
    the targeted attacks aim at (three classes or more; 0 leaves them out); autoattack_standard: also the official
    AutoAttack, "standard" version, on every other attack's survivors (:mod:`.official`; needs pyautoattack);
    tol: slack (a fraction of the attacked examples) the masking checks allow for sampling noise;
    unbounded_max: the white-box accuracy at the largest eps must not exceed this (~0);
    sanity_eps: eps at and above it get the sanity budget, sanity_steps >= 1 PGD and APGD steps with one
    start and sanity_queries >= 1 Square / random-search queries (the check there is "reaches chance").
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
    targets: int = 9
    autoattack_standard: bool = False
    tol: float = 0.01
    unbounded_max: float = 0.05
    sanity_eps: float = 0.5
    sanity_steps: int = 10
    sanity_queries: int = 30

    def __post_init__(self) -> None:
        # ArgumentError is a ValueError (what these checks raised before it existed)
        eps = self.eps
        if (not isinstance(eps, (tuple, list)) or not eps
                or any(isinstance(e, bool) or not isinstance(e, numbers.Real) for e in eps)
                or any(not 0 <= e <= 1 for e in eps) or list(eps) != sorted(set(eps))):
            checks.fail("eps", "distinct increasing values in [0, 1]", repr(eps))
        for name in ("pgd_steps", "pgd_restarts", "square_queries", "search_queries", "batch_size", "apgd_steps",
                     "apgd_restarts", "autoattack_queries", "sanity_steps", "sanity_queries"):
            v = getattr(self, name)
            if name == "autoattack_queries" and v is None:
                continue
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
                checks.fail(name, "an integer >= 1", repr(v))
        checks.flag("autoattack", self.autoattack)
        checks.flag("autoattack_standard", self.autoattack_standard)
        checks.integer("targets", self.targets, lo=0)
        checks.number("tol", self.tol, 0, 1, hi_open=True)
        checks.number("unbounded_max", self.unbounded_max, 0, 1, hi_open=True)
        checks.number("sanity_eps", self.sanity_eps, 0, 1, lo_open=True)


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


def _budget(settings: AttackSettings, eps: float) -> dict:
    """The attack budget at ``eps``: the settings' own, or the small sanity budget at eps >=
    ``settings.sanity_eps`` (their only check is that accuracy reaches chance)."""
    if eps < settings.sanity_eps:
        return {"pgd_steps": settings.pgd_steps, "pgd_restarts": settings.pgd_restarts,
                "apgd_steps": settings.apgd_steps, "apgd_restarts": settings.apgd_restarts,
                "square_queries": settings.square_queries, "search_queries": settings.search_queries,
                "autoattack_queries": settings.autoattack_queries}
    q = settings.sanity_queries
    return {"pgd_steps": settings.sanity_steps, "pgd_restarts": 1, "apgd_steps": settings.sanity_steps,
            "apgd_restarts": 1, "square_queries": min(q, settings.square_queries),
            "search_queries": min(q, settings.search_queries),
            "autoattack_queries": None if settings.autoattack_queries is None else min(q, settings.autoattack_queries)}


def _apgd_losses(n_classes: int) -> tuple[str, str]:
    """AutoAttack's two APGD losses: cross-entropy, then DLR (>= 3 classes) or the CW margin (2 classes)."""
    return ("ce", "dlr" if n_classes >= 3 else "margin")


def attack_suite(model: nn.Module, x: np.ndarray, y: np.ndarray, input_shape: tuple[int, ...], n_classes: int,
                 settings: AttackSettings = AttackSettings(), seed: int = 0,
                 progress: Callable[[str], None] | None = None, worst_only: bool = False) -> SuiteResult:
    """Run every white-box and gradient-free attack on ``model`` at every eps of ``settings``.

    Arguments are checked first (:mod:`localstdp.checks`; ArgumentError / ArgumentTypeError naming the argument):
    ``model`` an nn.Module on the CPU with float32 parameters whose output for one example is (1, n_classes)
    logits; ``x`` at least one example of finite values in [0, 1] with prod(input_shape) values each; ``y`` one
    integer label in [0, n_classes) per example; ``seed`` an integer in [0, 2**32).

    ``x`` is (n, features) in [0, 1]; it is reshaped to ``input_shape`` (the MLP's forward flattens
    again). The Square attack runs when ``input_shape`` is an image (C, H, W), the random search
    otherwise; AutoAttack (when ``settings.autoattack``) likewise. The attacks are the native torch
    loops of :mod:`localstdp.robustness.native` (ART's algorithms, checked against ART by the tests).

    Panel mode (``worst_only=False``): every attack on every example at every eps, for the per-attack
    numbers and the masking checks; transfer and worst case are added later (:func:`add_transfer`,
    :func:`add_worst`). ``worst_only=True`` (frontier points, selection): only the worst case is
    wanted, so each eps, cheapest attack first, attacks only the examples that survived everything
    before it, at this eps and at the smaller ones (a point broken at eps is broken at every larger
    eps); ``correct`` then holds "worst" alone. Every example's random draws are made for all n
    examples, so a survivor's attack is the one the panel mode runs on it: both modes give the same
    worst case (tests/test_experiments.py).
    """
    checks.instance("settings", settings, AttackSettings, "an AttackSettings")
    x, y, input_shape = check_suite_args(model, x, y, input_shape, n_classes, settings, seed, progress, worst_only)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    image = len(input_shape) == 3
    search = "square" if image else "random_search"
    res = SuiteResult(clean=correct(model, x, y), zero_gradient_fraction=zero_gradient_fraction(model, x, y))
    clean = torch.from_numpy(res.clean)
    names = ("fgsm", "pgd") + (("autoattack",) if settings.autoattack else ()) + (search, "noise")
    names += (("targeted",) if settings.targets and n_classes >= 3 else ()) + ((official.NAME,) if settings.autoattack_standard else ())
    for name in ("worst",) if worst_only else names:
        res.correct[name] = {}
    alive = clean.clone()
    aa_losses = _apgd_losses(n_classes)
    for i, eps in enumerate(settings.eps):
        if progress is not None:
            progress(f"eps {eps:g} ({i + 1}/{len(settings.eps)})")
        k = eps_key(eps)
        s = seed * 1009 + i
        b = _budget(settings, eps)
        if worst_only:
            alive = _worst_case(model, xt, yt, x, eps, s, b, settings, image, alive, aa_losses, n_classes)
            res.correct["worst"][k] = alive.numpy().copy()
            continue
        broken, _ = native.fgsm(model, xt, yt, eps)
        res.correct["fgsm"][k] = (clean & ~broken).numpy()
        broken, adv = native.pgd(model, xt, yt, eps, b["pgd_steps"], b["pgd_restarts"], ("ce", "margin"),
                                 seed=s, keep_final=True)
        res.adversarial[k] = [a.numpy() for a in adv]
        res.correct["pgd"][k] = (clean & ~broken.any(0)).numpy()
        res.correct[search][k] = (clean & ~_search(model, xt, yt, x, eps, s, b, image, None)).numpy()
        if settings.autoattack:
            survived = clean.clone()
            for j, loss in enumerate(aa_losses):
                broken, _ = native.apgd(model, xt, yt, eps, b["apgd_steps"], b["apgd_restarts"], loss,
                                        seed=_sub_seed(s, j), alive=survived)
                survived &= ~broken
            res.autoattack_apgd[k] = survived.numpy().copy()
            if b["autoattack_queries"] is not None:  # its own Square / random search on the APGD survivors
                survived &= ~_search(model, xt, yt, x, eps, _sub_seed(s, 2), b, image, survived, own=True)
                res.correct["autoattack"][k] = survived.numpy()
            else:  # the suite's run above is AutoAttack's gradient-free part
                res.correct["autoattack"][k] = survived.numpy() & res.correct[search][k]
        res.correct["noise"][k] = correct(model, sign_noise(x, eps, s), y) & res.clean
        for name in [a for a in ("targeted", official.NAME) if a in res.correct]:  # on every earlier attack's survivors
            left = torch.from_numpy(np.logical_and.reduce([res.correct[a][k] for a in names[:names.index(name)]]))
            res.correct[name][k] = (left & ~(suite_targeted(model, xt, yt, eps, s, b, settings.targets, n_classes, left)
                                             if name == "targeted" else official.broken(model, xt, yt, eps, s, left, n_classes))).numpy()
        log.debug("eps %s: %s", k, {a: float(v[k].mean()) for a, v in res.correct.items()})
    return res


def _search(model, xt, yt, x, eps, s, b, image, alive, own: bool = False) -> torch.Tensor:
    """Broken by the gradient-free attack: Square (images) or the random search (tabular)."""
    q = b["autoattack_queries"] if own else (b["square_queries"] if image else b["search_queries"])
    if image:
        return native.square(model, xt, yt, eps, q, seed=s, alive=alive)[0]
    adv = random_search(model, x, yt.numpy(), eps, q, s)
    broken = torch.from_numpy(~correct(model, adv, yt.numpy()))
    return broken if alive is None else broken & alive


def _worst_case(model, xt, yt, x, eps, s, b, settings, image, alive, aa_losses, n_classes=2) -> torch.Tensor:
    """The examples of ``alive`` that survive every attack at ``eps``, cheapest attack first, each on
    the survivors of the ones before (the same attacks and draws as the panel mode's)."""
    alive = alive & torch.from_numpy(correct(model, sign_noise(x, eps, s), yt.numpy()))
    alive &= ~native.fgsm(model, xt, yt, eps)[0]
    if alive.any():
        broken, _ = native.pgd(model, xt, yt, eps, b["pgd_steps"], b["pgd_restarts"], ("ce", "margin"), seed=s,
                               alive=alive)
        alive &= ~broken.any(0)
    if settings.autoattack:
        for j, loss in enumerate(aa_losses):
            if alive.any():
                alive &= ~native.apgd(model, xt, yt, eps, b["apgd_steps"], b["apgd_restarts"], loss,
                                      seed=_sub_seed(s, j), alive=alive)[0]
    if alive.any():
        alive &= ~_search(model, xt, yt, x, eps, s, b, image, alive)
    if settings.autoattack and b["autoattack_queries"] is not None and alive.any():
        alive &= ~_search(model, xt, yt, x, eps, _sub_seed(s, 2), b, image, alive, own=True)
    if settings.targets and n_classes >= 3 and alive.any():
        alive &= ~suite_targeted(model, xt, yt, eps, s, b, settings.targets, n_classes, alive)
    if settings.autoattack_standard and alive.any():
        alive &= ~official.broken(model, xt, yt, eps, s, alive, n_classes)
    return alive


def add_transfer(target: nn.Module, res: SuiteResult, source: SuiteResult, y: np.ndarray) -> None:
    """Apply ``source``'s PGD examples (both losses) to ``target``: correct only if it survives both."""
    res.correct["transfer"] = {
        k: np.logical_and.reduce([correct(target, a, y) for a in advs]) for k, advs in source.adversarial.items()
    }


def add_worst(res: SuiteResult) -> None:
    """``res.correct["worst"] = worst_of(res)``: per example and eps, correct only if correct under every
    attack run so far AND at every smaller eps (the eps-ball holds the smaller ones)."""
    res.correct["worst"] = worst_of(res)


def worst_of(res: SuiteResult) -> dict[str, np.ndarray]:
    """The worst case :func:`add_worst` stores, ``res`` unchanged (e.g. the survivors of a model's own attacks
    before transfer joins). Entries in :data:`NOT_ATTACKS` ("worst", "certified") never enter; a worst-case-only
    result (``attack_suite(..., worst_only=True)``: "worst" and no attack) gives its own "worst"."""
    attacks = [a for a in res.correct if a not in NOT_ATTACKS]
    if not attacks:
        if "worst" in res.correct:
            return res.correct["worst"]
        raise ValueError("add_worst: no attack results")
    keys = sorted(res.correct[attacks[0]].keys(), key=float)
    worst, prev = {}, None
    for k in keys:
        w = np.logical_and.reduce([res.correct[a][k] for a in attacks])
        worst[k] = w if prev is None else w & prev
        prev = worst[k]
    return {k: worst[k] for k in res.correct[attacks[0]]}


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
