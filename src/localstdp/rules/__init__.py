"""Training methods behind one interface, and the registry that names them.

A learner is built as ``LEARNERS[name](model, params, n_classes, seed)`` and offers
``step(x, y) -> float``, ``set_lr_factor(f)``, ``state_tensors()`` and ``load_state_tensors(d)``.
The peer rules (``rules/peers``, docs/peers.md) take ``cfg.peers``; a learner whose prediction is
not argmax ``model(x)`` (ff) has ``predict_module()``, and ``SCORERS[name](model)`` rebuilds it.
"""

from __future__ import annotations

from ..registry import LEARNER_NAMES
from .backprop import Backprop, BackpropMSE, BackpropParams
from .local import LocalRule
from .params import RuleParams
from .peers import PEERS, SCORERS, PeerParams
from .shallow import Readout

LEARNERS = {"local": LocalRule, "backprop": Backprop, "backprop-mse": BackpropMSE, **PEERS,
            "linear": Readout, "random-features": Readout}  # shallow.py: linear = no hidden layer
assert tuple(LEARNERS) == LEARNER_NAMES  # the CLI's --rule choices (registry.py, no torch)

__all__ = ["LEARNERS", "PEERS", "SCORERS", "Backprop", "BackpropMSE", "BackpropParams", "LocalRule", "PeerParams",
           "Readout", "RuleParams"]
