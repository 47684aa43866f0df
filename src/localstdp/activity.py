"""What firing rate the local rule reads from a layer whose activation is not a sigmoid.

The rule's targets (``a_hi``, ``a_lo``) and its latency code are firing rates in (0, 1), so by default
(``activity="module"``) a learnable layer must be followed by an ``nn.Sigmoid`` module and its output is
the activity. ``LocalLearner(model, activity=...)`` names another reading; the NETWORK is unchanged (the
next layer still receives the ReLU / tanh / SiLU output), only what the rule compares with its targets:

* ``"sigmoid"``: the rate is sigmoid(z), z the layer's own output (its pre-activation, the neuron's
  "membrane potential"), whatever element-wise activation follows. The rate-mode update
  dW = eta (d - sigmoid(z)) x^T is then exactly the gradient step of the layer's own per-neuron
  logistic loss on z (the same local loss as in a sigmoid network), with x the input the layer actually
  receives (for a ReLU network: the previous layer's ReLU output). For an nn.Sigmoid it is today's rule.
* ``"map"``: the rate is a fixed map of the activation's output h into [0, 1]: (h + 1) / 2 for tanh
  (Hardtanh: its range scaled to [0, 1]), clamp(h, 0, 1) for the ReLU family (ReLU, LeakyReLU, ReLU6,
  ELU, SELU, CELU, GELU, SiLU, Mish, Softplus, Hardswish), h itself for (Hard)sigmoid.

Rate mode only (``mode="rate"``): the timing modes read spike times t = T (1 - a) of the INPUT too,
which a ReLU network does not bound. Measured on digits (docs/activations.md, docs/ablation.md).
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVITIES = ("module", "sigmoid", "map")
TANH_LIKE = (nn.Tanh, nn.Hardtanh)  # nn.ReLU6 is a Hardtanh subclass: handled first below
UNIT = (nn.Sigmoid, nn.Hardsigmoid)
RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Softplus,
             nn.Hardswish)
ELEMENTWISE = UNIT + TANH_LIKE + RELU_LIKE  # what activity="sigmoid" / "map" accept after a learnable layer


def sigmoid_rate(module: nn.Module, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """activity="sigmoid": sigmoid of the layer's output z (h, the activation's output, is not read)."""
    return h if isinstance(module, nn.Sigmoid) else torch.sigmoid(z)


def mapped_rate(module: nn.Module, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """activity="map": the activation's output h mapped into [0, 1] (see the module docstring)."""
    if isinstance(module, UNIT):
        return h
    if isinstance(module, RELU_LIKE):
        return h.clamp(0.0, 1.0)
    if isinstance(module, nn.Tanh):
        return (h + 1.0) * 0.5
    lo, hi = float(module.min_val), float(module.max_val)  # Hardtanh
    return (h - lo) / (hi - lo)


RATES = {"module": None, "sigmoid": sigmoid_rate, "map": mapped_rate}
