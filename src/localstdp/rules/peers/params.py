"""Settings of the peer rules (``[peers]`` in a config; one rule's own values in
``[methods.<rule>.peers]``, e.g. the learning rate ``localstdp tune --rule fa`` chose)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import ConfigError

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class PeerParams:
    """One frozen, validated record for fa, dfa, drtp, pepita and ff.

    Every rule computes an update direction g per parameter (W <- W - lr g under plain SGD);
    torch.optim applies it, as it applies backprop's gradient, so the rules differ only in g.

    Attributes:
        optimizer: "adam" (default) or "sgd".
        lr: learning rate, finite and > 0 (default 1e-3).
        momentum: SGD momentum in [0, 1) (default 0.9; PEPITA's paper uses SGD with 0.9).
        weight_decay: L2 coefficient of torch.optim, finite and >= 0 (default 0).
        feedback_scale: fa, dfa, drtp: every fixed feedback matrix is drawn like a PyTorch
            nn.Linear weight for the signal it carries, U(-s/sqrt(d), s/sqrt(d)) with d the
            signal's dimension, times s = feedback_scale; finite and > 0 (default 1).
        input_scale: pepita: F = input_scale * U(-sqrt(6/n_in), sqrt(6/n_in)), the paper's
            projection of the error onto the input; finite and > 0 (default 0.05, the paper's).
        ff_threshold: ff: goodness threshold per unit, in (0, 1): a hidden layer of n sigmoid
            units calls an input positive when sum_j a_j^2 > ff_threshold * n (default 0.25,
            the goodness of units at a = 0.5, where a freshly initialised layer sits).
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    feedback_scale: float = 1.0
    input_scale: float = 0.05
    ff_threshold: float = 0.25

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"peers.optimizer = {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        for name, ok, what in (
            ("lr", math.isfinite(self.lr) and self.lr > 0, "a finite learning rate > 0"),
            ("momentum", 0 <= self.momentum < 1, "a value in [0, 1)"),
            ("weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0, "a finite value >= 0"),
            ("feedback_scale", math.isfinite(self.feedback_scale) and self.feedback_scale > 0, "a finite value > 0"),
            ("input_scale", math.isfinite(self.input_scale) and self.input_scale > 0, "a finite value > 0"),
            ("ff_threshold", 0 < self.ff_threshold < 1, "a value in (0, 1)"),
        ):
            if not ok:
                raise ConfigError(f"peers.{name} = {getattr(self, name)!r}: expected {what}")
