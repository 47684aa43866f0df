"""Robustness of a trained model: the attack suite and its gradient-masking checks, and proven bounds.

- :mod:`~localstdp.robustness.attacks`: the primitives on the IBM adversarial-robustness-toolbox
  (FGSM, PGD, APGD / AutoAttack, Square, random search, sign noise, per-example correctness);
- :mod:`~localstdp.robustness.suite`: the suite every model of ``reproduce`` meets
  (:class:`AttackSettings`, :func:`attack_suite`, transfer, the per-example worst case and
  :func:`masking_checks`);
- :mod:`~localstdp.robustness.bounds`: certified accuracy from interval and linear (CROWN) bounds.

The threat model and the protocol are ``docs/evaluation.md``.
"""

from __future__ import annotations

from .attacks import (
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
from .bounds import certified_accuracy, certified_correct, margin_lower_bounds, supports
from .suite import (
    CHECKS,
    EPS,
    GRADIENT_FREE,
    NOT_ATTACKS,
    WHITE_BOX,
    AttackSettings,
    SuiteResult,
    add_transfer,
    add_worst,
    attack_suite,
    eps_key,
    masking_checks,
)

__all__ = [
    "AUTOATTACK_PARTS", "CHECKS", "EPS", "GRADIENT_FREE", "NOT_ATTACKS", "WHITE_BOX", "AttackSettings", "MarginLoss",
    "SuiteResult", "add_transfer", "add_worst", "apgd", "attack_suite", "autoattack", "autoattack_parts",
    "certified_accuracy", "certified_correct", "correct", "eps_key", "fgsm", "make_classifier", "margin_lower_bounds",
    "margins", "masking_checks", "numpy_seed", "pgd", "random_search", "sign_noise", "square", "supports",
    "zero_gradient_fraction",
]
