"""Targeted attacks for three or more classes (issue 33, item 3): APGD-T and a multi-targeted PGD.

An untargeted attack follows the loss toward whichever wrong class is easiest to reach from its start; on
ten classes a model can survive it while a push toward one particular class breaks it. Two attacks push
toward each of the ``n_targets`` classes the model ranks highest after the true one, on the clean input
(AutoAttack's choice of targets, its default 9):

* **APGD-T** (Croce & Hein 2020, AutoAttack's "apgd-t"): :func:`localstdp.robustness.native.apgd` on the
  targeted difference-of-logits ratio -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2) for four classes or more,
  on the targeted margin z_t - z_y for three;
* **multi-targeted PGD** (Gowal et al. 2019, "An alternative surrogate loss for PGD-based adversarial
  testing"): :func:`localstdp.robustness.native.pgd` on the targeted margin z_t - z_y, one start per target.

Each target's run attacks only the examples no earlier run broke (survivors only): the answer per example is
"broken by some target of either attack", which is all a worst case needs. An example counts as broken when
it is misclassified (as any class, as in AutoAttack), not only when it reaches its target. The official
AutoAttack code (``pyautoattack``, ``APGDAttack_targeted``) is the reference in tests/test_targeted.py.
"""

from __future__ import annotations

import torch
from torch import nn

from . import native
from .attacks import _sub_seed


@torch.no_grad()
def top_targets(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """(k, n) class indices: per example the k classes with the highest clean logits other than y, highest
    first (AutoAttack's targets: the 2nd, 3rd, ... of its sorted logits for a correctly classified example)."""
    model.eval()
    logits = model(x).float()
    others = logits.scatter(1, y.view(-1, 1), float("-inf"))
    return others.topk(k, dim=1).indices.T.contiguous()


def targeted_broken(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, n_classes: int,
                    n_targets: int = 9, apgd_steps: int = 100, apgd_restarts: int = 1, pgd_steps: int = 40,
                    seed: int = 0, alive: torch.Tensor | None = None) -> torch.Tensor:
    """Bool (n,): broken by APGD-T or multi-targeted PGD toward one of the top ``n_targets`` classes
    (at most ``n_classes`` - 1). ``alive``: attack only these examples (the others count as not broken here).
    Every target's run has its own seed; APGD-T runs ``apgd_steps`` steps x ``apgd_restarts`` starts per target,
    the multi-targeted PGD ``pgd_steps`` steps from one uniform start per target (0: APGD-T alone)."""
    if n_classes < 3:
        raise ValueError(f"targeted attacks need >= 3 classes, got {n_classes}")
    k = min(int(n_targets), n_classes - 1)
    live = torch.ones(len(x), dtype=torch.bool) if alive is None else alive.bool().clone()
    broken = torch.zeros(len(x), dtype=torch.bool)
    if k < 1 or eps == 0 or not len(x):
        return broken
    targets = top_targets(model, x, y, k)
    loss = "dlr-t" if n_classes >= 4 else "margin-t"
    runs = [("apgd", t) for t in range(k)] + [("pgd", t) for t in range(k) if pgd_steps > 0]
    for j, (attack, t) in enumerate(runs):
        if not live.any():
            break
        s = (int(seed) * 7919 + 104729 * (j + 1)) % 2**32
        if attack == "apgd":
            hit, _ = native.apgd(model, x, y, eps, apgd_steps, apgd_restarts, loss, seed=s, alive=live,
                                 target=targets[t])
        else:
            hit, _ = native.pgd(model, x, y, eps, pgd_steps, 1, ("margin-t",), seed=s, alive=live, target=targets[t])
            hit = hit.any(0)
        broken |= hit  # apgd / pgd break only examples of ``live``
        live &= ~hit
    return broken


def suite_targeted(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int, budget: dict,
                   n_targets: int, n_classes: int, alive: torch.Tensor) -> torch.Tensor:
    """:func:`targeted_broken` as the attack suite runs it (robustness/suite.py): the eps' budget (APGD steps
    and starts, PGD steps; the sanity budget at large eps) and a seed of its own derived from the eps' one."""
    return targeted_broken(model, x, y, eps, n_classes, n_targets, budget["apgd_steps"], budget["apgd_restarts"],
                           budget["pgd_steps"], seed=_sub_seed(seed, 3), alive=alive)
