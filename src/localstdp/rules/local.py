"""The association-STDP rule on the package's own :class:`MLP`: the per-layer machinery of
:mod:`localstdp.rules.layerwise` (the same code :class:`localstdp.learner.LocalLearner` runs on any
model) fed with ``MLP.activities``, plus the MLP's fixed first-layer connectivity (``in_mask``)."""

from __future__ import annotations

import torch

from .. import checks
from ..model import MLP
from .layerwise import LayerwiseRule
from .params import RuleParams


class LocalRule(LayerwiseRule):
    """Trains every layer of an :class:`MLP` from one forward pass; no error flows backwards."""

    def __init__(self, model: MLP, params: RuleParams, n_classes: int, seed: int = 0):
        self.model = model
        super().__init__(model.layers, params, n_classes, seed)

    def mask(self, l: int) -> torch.Tensor | None:
        """``model.in_mask`` (build_model's receptive fields) for the first layer, else None."""
        return self.model.in_mask if l == 0 else None

    @torch.no_grad()
    def updates(self, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean"):
        """Every layer's (dW, db) from ONE forward pass, and the activities it used."""
        checks.choice("reduction", reduction, ("mean", "sum"))
        y = checks.package_batch(self.model, x, y, self.n_classes)
        acts = self.model.activities(x)
        return [self.layer_update(l, acts[l], acts[l + 1], y, reduction) for l in range(len(acts) - 1)], acts

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One update of all layers at once; returns the output layer's mean squared target error."""
        y = checks.package_batch(self.model, x, y, self.n_classes)
        acts = self.model.activities(x)
        for l in range(len(self.model.layers)):
            self.learn_layer(l, acts[l], acts[l + 1], y)
        return self.output_loss(y, acts[-1])
