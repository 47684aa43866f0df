"""Training methods behind one interface, and the registry that names them.

A learner is built as ``LEARNERS[name](model, params, n_classes, seed)`` and offers
``step(x, y) -> float``, ``state_tensors()`` and ``load_state_tensors(d)``.
"""

from __future__ import annotations

from .backprop import Backprop, BackpropMSE, BackpropParams
from .local import LocalRule
from .params import RuleParams

LEARNERS = {"local": LocalRule, "backprop": Backprop, "backprop-mse": BackpropMSE}

__all__ = ["LEARNERS", "Backprop", "BackpropMSE", "BackpropParams", "LocalRule", "RuleParams"]
