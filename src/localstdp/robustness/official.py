"""The official AutoAttack (Croce & Hein 2020), "standard" version, as an optional attack of the suite.

``AttackSettings(autoattack_standard=True)`` (``localstdp reproduce --autoattack-standard``) adds the attack
"aa-standard": the authors' own code (the ``pyautoattack`` distribution, ``pip install
'localstdp[autoattack]'``), run at each eps on the examples every other attack of the suite left correct:

  four classes or more  version "standard": APGD-CE, APGD-T (9 target classes), FAB-T (9), Square (5,000
                        queries), as published;
  two or three classes  the same budgets without the targeted components, which need a fourth class for
                        their difference-of-logits ratio: APGD-CE, FAB (untargeted), Square 5,000;
  tabular inputs        (not an image: the official Square attack needs (C, H, W)) the same without Square.

Its result joins the worst case like every other attack (a survivor it breaks is broken). It is not counted
by the masking checks, which compare the suite's own white-box and gradient-free attacks.
"""

from __future__ import annotations

import contextlib
import io
import logging

import torch
from torch import nn

from ..errors import ConfigError

NAME = "aa-standard"


def available() -> bool:
    try:
        import pyautoattack  # noqa: F401
    except ImportError:
        return False
    return True


def require() -> None:
    """A one-line ConfigError when the official code is not installed."""
    if not available():
        raise ConfigError("--autoattack-standard runs the official AutoAttack code: pip install 'localstdp[autoattack]' "
                          "(the pyautoattack distribution)")


def broken(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int, alive: torch.Tensor,
           n_classes: int, batch_size: int = 500) -> torch.Tensor:
    """Bool (n,): the examples of ``alive`` that the official AutoAttack breaks at ``eps`` (L-inf, inputs
    in [0, 1]); False elsewhere. Deterministic for a given ``seed``."""
    require()
    from pyautoattack import AutoAttack

    out = torch.zeros(len(y), dtype=torch.bool)
    idx = torch.nonzero(alive, as_tuple=True)[0]
    if len(idx) == 0:
        return out
    image = x.dim() == 4
    if n_classes >= 4 and image:
        adversary = AutoAttack(model, norm="Linf", eps=float(eps), seed=int(seed), device="cpu", version="standard")
    else:  # the standard version's components that apply, at its budgets
        attacks = (["apgd-ce", "apgd-t", "fab-t"] if n_classes >= 4 else ["apgd-ce", "fab"]) + (["square"] if image else [])
        adversary = AutoAttack(model, norm="Linf", eps=float(eps), seed=int(seed), device="cpu", version="custom",
                               attacks=attacks)
        adversary.apgd.n_restarts = adversary.fab.n_restarts = adversary.apgd_targeted.n_restarts = 1
        adversary.fab.n_target_classes = adversary.apgd_targeted.n_target_classes = 9
        adversary.square.n_queries = 5000
    adversary.verbose = False
    quiet = logging.getLogger("auto-attack")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            xa, _ = adversary.run_standard_evaluation(x[idx].contiguous(), y[idx].contiguous(), batch_size=batch_size)
    finally:
        quiet.setLevel(level)
    with torch.no_grad():
        out[idx] = model(xa).argmax(1) != y[idx]
    return out
