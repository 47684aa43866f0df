"""Hyper-parameters of the association-STDP rule: one frozen, validated record.

Units: time is measured in units of the coding window T (a neuron with activity a in (0, 1)
fires its first spike at latency t = T (1 - a)); learning rates are per example (updates are
averaged over the batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ..errors import ConfigError

MODES = ("rate", "timing", "two-phase")
ASSOCIATIONS = ("onehot", "random", "pairs")
TIMING_BACKENDS = ("direct", "binned", "gather", "auto")


@dataclass(frozen=True)
class RuleParams:
    """Hyper-parameters of the local rule. Every field is validated in ``__post_init__``.

    Attributes:
        eta: learning rate, > 0 (default 0.5). dW = eta * mean_batch[(d - a) a_pre^T kappa].
        a_hi: association target of a neuron associated with the label, in (0, 1].
        a_lo: target of every other neuron, in [0, a_hi).
        mode: "rate" (kappa == 1, the tau -> infinity limit, one GEMM per layer), "timing"
            (finite tau, the smooth first-order rule) or "two-phase" (the exact finite-beta
            difference of the STDP window between the nudged and the free post spike).
        tau_plus, tau_minus: STDP time constants (units of T), > 0.
        A_plus, A_minus: STDP amplitudes, >= 0 (at least one > 0).
        T: coding window, > 0: latency t(a) = T (1 - a).
        theta: spike threshold in [0, 1): activity below it emits no spike and takes part in no
            pairing (its weights do not change; biases still do).
        beta: nudging strength of the two-phase variant, in (0, 1].
        association: "onehot" (balanced: neuron j of a layer is associated with class j mod K)
            or "random" (each neuron gets an independent random binary code over the classes)
            or "pairs" (first hidden layer: one-vs-one codes, neuron j taught a_hi on class a,
            a_lo on class b of one pair and not taught on the other classes; deeper hidden
            layers one-hot). See docs/ablation.md for what each measured on ten classes.
        association_density: fraction of classes a neuron is associated with under "random",
            in (0, 1).
        timing_backend: how timing mode is computed: "direct" (the batch x n_out x n_in form),
            "binned" (post spike times on a clock of ``time_bins`` steps, one GEMM K times the rate
            mode's), "gather" (the same clock and kernel values, summed as a gather with one rate-mode
            GEMM's multiply-adds) or "auto" (direct while small, then gather for K >= 4, else binned;
            docs/timing.md).
        time_bins: number of clock steps of the binned backend, >= 2.
        center: 0 (default) = off; in (0, 1): covariance rule. Each layer keeps every presynaptic
            neuron's running mean activity m (m <- center m + (1 - center) mean_batch(a_pre),
            starting from the first batch's mean); the presynaptic factor becomes a_pre - m and
            the bias absorbs -dW m. Helps on full Fashion-MNIST (docs/ablation.md). The layer
            pipeline shares m; ``--parallel data`` refuses it (docs/distributed.md).
    """

    eta: float = 0.5
    a_hi: float = 0.9
    a_lo: float = 0.1
    mode: str = "rate"
    tau_plus: float = 0.5
    tau_minus: float = 0.5
    A_plus: float = 0.5
    A_minus: float = 0.5
    T: float = 1.0
    theta: float = 0.0
    beta: float = 0.1
    association: str = "onehot"
    association_density: float = 0.5
    timing_backend: str = "auto"
    time_bins: int = 32
    center: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        def finite(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"rule.{name} must be a finite number, got {value!r}")
            return float(value)

        def check(name: str, ok: bool, expected: str) -> None:
            if not ok:
                raise ConfigError(f"rule.{name} = {getattr(self, name)!r}: expected {expected}")

        for f in fields(self):
            if f.type in ("float", float):
                finite(f.name)
        check("eta", self.eta > 0, "a learning rate > 0")
        check("a_hi", 0 < self.a_hi <= 1, "a value in (0, 1]")
        check("a_lo", 0 <= self.a_lo < self.a_hi, "a value in [0, a_hi)")
        check("mode", self.mode in MODES, f"one of {', '.join(MODES)}")
        check("tau_plus", self.tau_plus > 0, "a time constant > 0")
        check("tau_minus", self.tau_minus > 0, "a time constant > 0")
        check("A_plus", self.A_plus >= 0, "an amplitude >= 0")
        check("A_minus", self.A_minus >= 0, "an amplitude >= 0")
        check("A_plus", self.A_plus > 0 or self.A_minus > 0, "A_plus or A_minus > 0")
        check("T", self.T > 0, "a coding window > 0")
        check("theta", 0 <= self.theta < 1, "a threshold in [0, 1)")
        check("beta", 0 < self.beta <= 1, "a nudging strength in (0, 1]")
        check("weight_decay", self.weight_decay >= 0, "a decay >= 0 (0 = off)")
        check("center", 0 <= self.center < 1, "a running-mean momentum in [0, 1) (0 = off)")
        check("association", self.association in ASSOCIATIONS, f"one of {', '.join(ASSOCIATIONS)}")
        check("association_density", 0 < self.association_density < 1, "a fraction in (0, 1)")
        check("timing_backend", self.timing_backend in TIMING_BACKENDS, f"one of {', '.join(TIMING_BACKENDS)}")
        if isinstance(self.time_bins, bool) or not isinstance(self.time_bins, int):
            raise ConfigError(f"rule.time_bins must be an integer, got {self.time_bins!r}")
        check("time_bins", self.time_bins >= 2, "an integer >= 2")


CONV_TEACHINGS = ("pooled", "position", "softhebb", "none", "readout")


@dataclass(frozen=True)
class ConvParams:
    """How the local rule teaches convolutional (nn.Conv2d) layers; validated in ``__post_init__``.

    Attributes:
        teaching: "pooled" (default; each channel's association target is compared with the
            channel's MEAN activity over positions and the error is shared by its positions:
            :func:`localstdp.rules.functional.pooled_conv_target`), "position" (the target at every
            position), "softhebb" (no label: soft winner-take-all Hebbian features,
            :func:`localstdp.rules.functional.softhebb_conv_update`) or "none" (conv layers stay at
            their initial weights), or "readout" (each conv layer taught to make the label decodable
            from its whole map through a fixed random readout of its own: :mod:`localstdp.rules.readout`;
            docs/ablation.md, "Deep conv stacks"). Chosen on validation: docs/ablation.md, "Convolutional layers".
        lr_scale: conv layers learn at lr_scale * eta, > 0 (default 3, chosen there over 0.3 / 1 / 3 / 10).
        tau: softmax temperature of "softhebb", > 0.
    """

    teaching: str = "pooled"
    lr_scale: float = 3.0
    tau: float = 1.0

    def __post_init__(self) -> None:
        if self.teaching not in CONV_TEACHINGS:
            raise ConfigError(f"conv teaching {self.teaching!r}: expected one of {', '.join(CONV_TEACHINGS)}")
        for name in ("lr_scale", "tau"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"conv {name} = {v!r}: expected a finite number > 0")
