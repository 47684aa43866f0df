"""The ``[evaluation]`` and ``[frontier]`` sections of a config: how ``localstdp reproduce`` judges a
comparison and which settings its robustness-accuracy frontier trains (config.py re-exports both)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import ConfigError


@dataclass(frozen=True)
class EvaluationConfig:
    """How a comparison is judged (``localstdp reproduce``).

    equivalence_margin: two methods' clean accuracies are called "equivalent" only when an
        equivalence test (TOST, 90% paired-bootstrap CI over seeds and test examples) puts their
        difference inside +-margin AND the difference is not significant; in (0, 1), default 0.01.
    """

    equivalence_margin: float = 0.01

    def __post_init__(self) -> None:
        if not 0 < self.equivalence_margin < 1:
            raise ConfigError(f"evaluation.equivalence_margin = {self.equivalence_margin!r}: expected a value in (0, 1)")


@dataclass(frozen=True)
class FrontierConfig:
    """The robustness-accuracy frontier of ``localstdp reproduce`` (one knob at a time, from the
    task's own settings).

    backprop_weight_decay: backprop's weight decay values (the frontier backprop traces; 0 = plain).
    local_lr: the local rule's eta values; local_epochs: epoch budgets; local_weight_decay: values
    of rule.weight_decay; local_targets: target pairs [a_hi, a_lo] (the rule's target contrast).
    Empty lists sweep nothing along that knob. linear_l2 / readout_l2: the L2 strengths of the
    linear and random-features baselines (swept only when those methods run). backprop_lr: when
    given, every backprop weight decay is trained at each of these Adam learning rates, and the
    frontier keeps, per decay, the rate with the best mean VALIDATION accuracy (each decay gets its
    own rate, as each family's frontier must be the best that family can do); empty: backprop's lr.
    input_noise: robust.input_noise values (Gaussian input noise in training, rules/robust.py), a knob of
    the local rule, backprop (at its own rate, no decay) and the linear model (when it runs) alike.
    adv_eps: robust.adv_eps values (the training radius) of the adversarially trained families
    backprop-at, backprop-trades and local-at (each when it runs); trades_beta: TRADES' beta values at
    backprop-trades' own radius.
    """

    backprop_weight_decay: list[float] = field(default_factory=lambda: [0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2])
    local_lr: list[float] = field(default_factory=list)
    local_epochs: list[int] = field(default_factory=list)
    local_weight_decay: list[float] = field(default_factory=lambda: [1e-3, 1e-2])
    linear_l2: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0])
    readout_l2: list[float] = field(default_factory=lambda: [1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
    backprop_lr: list[float] = field(default_factory=list)
    local_targets: list[list[float]] = field(default_factory=list)
    input_noise: list[float] = field(default_factory=list)
    adv_eps: list[float] = field(default_factory=list)
    trades_beta: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("backprop_weight_decay", "local_weight_decay", "linear_l2", "readout_l2", "input_noise",
                     "trades_beta"):
            if any(not math.isfinite(v) or v < 0 for v in getattr(self, name)):
                raise ConfigError(f"frontier.{name} = {getattr(self, name)!r}: expected values >= 0")
        if any(not math.isfinite(v) or v <= 0 for v in self.local_lr):
            raise ConfigError(f"frontier.local_lr = {self.local_lr!r}: expected learning rates > 0")
        if any(v < 1 for v in self.local_epochs):
            raise ConfigError(f"frontier.local_epochs = {self.local_epochs!r}: expected integers >= 1")
        if any(not math.isfinite(v) or v <= 0 for v in self.adv_eps):
            raise ConfigError(f"frontier.adv_eps = {self.adv_eps!r}: expected training radii > 0")
        if any(not math.isfinite(v) or v <= 0 for v in self.backprop_lr):
            raise ConfigError(f"frontier.backprop_lr = {self.backprop_lr!r}: expected learning rates > 0")
        for pair in self.local_targets:
            if len(pair) != 2 or not 0 <= pair[1] < pair[0] <= 1:
                raise ConfigError(f"frontier.local_targets = {self.local_targets!r}: expected pairs [a_hi, a_lo] "
                                  "with 0 <= a_lo < a_hi <= 1")
