"""The backpropagation baselines behind the same interface as the local rule.

``Backprop``: cross-entropy on the logits z^L, gradients from torch.autograd, an optimiser from
torch.optim. ``BackpropMSE``: the same, but the sigmoid outputs a^L = sigmoid(z^L) are trained with
the squared error to the local rule's own bounded targets (a_hi for the label's neuron, a_lo for the
others): the baseline that differs from the local rule only in how the error reaches each layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .. import checks
from ..errors import ConfigError
from ..model import MLP

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class BackpropParams:
    """Baseline settings. optimizer: "adam" (default) or "sgd"; lr > 0; momentum in [0, 1) (SGD
    only); weight_decay >= 0."""

    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"backprop.optimizer = {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        for name, ok, what in (
            ("lr", math.isfinite(self.lr) and self.lr > 0, "a finite learning rate > 0"),
            ("momentum", 0 <= self.momentum < 1, "a value in [0, 1)"),
            ("weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0, "a finite value >= 0"),
        ):
            if not ok:
                raise ConfigError(f"backprop.{name} = {getattr(self, name)!r}: expected {what}")


class Backprop:
    """Trains an :class:`MLP` end to end with cross-entropy and torch.optim."""

    name = "backprop"

    def __init__(self, model: MLP, params: BackpropParams, n_classes: int, seed: int = 0):
        self.model = model
        self.params = params
        self.n_classes = n_classes
        if params.optimizer == "adam":
            self.optimizer = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(
                model.parameters(), lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay
            )
        self.loss_fn = nn.CrossEntropyLoss()

    def loss_sum(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss summed over the batch (the data-parallel loop divides by the batch)."""
        return nn.functional.cross_entropy(logits, y, reduction="sum")

    def loss_mean(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(logits, y)

    def set_lr_factor(self, factor: float) -> None:
        """Scale the optimiser's learning rate to ``factor`` x backprop.lr (train.lr_schedule)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.params.lr * factor

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return self.step_loss(x, y, lambda x, y: self.loss_mean(self.model(x), y))

    def step_loss(self, x: torch.Tensor, y: torch.Tensor, loss_fn) -> float:
        """One optimiser step on ``loss_fn(x, y)`` (a scalar of the model's parameters; ``step``'s is the
        training loss, rules/robust.py's TRADES its own objective)."""
        y = checks.package_batch(self.model, x, y, self.n_classes)
        self.optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(x, y)
        loss.backward()
        self.optimizer.step()
        keep = getattr(self.model, "keep_connectivity_", None)  # a user's own nn.Module has none
        if keep is not None:
            keep()  # fixed first-layer connectivity (build_model's receptive_field)
        return float(loss.detach())

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The optimiser state as named tensors (safetensors can store them; no pickle)."""
        out = {}
        for idx, state in self.optimizer.state_dict()["state"].items():
            for key, value in state.items():
                out[f"optim.{idx}.{key}"] = torch.as_tensor(value).clone()
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        sd = self.optimizer.state_dict()
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            if not name.startswith("optim."):
                continue
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value.clone()
        sd["state"] = state
        self.optimizer.load_state_dict(sd)


class BackpropMSE(Backprop):
    """Backprop on the squared error of the sigmoid outputs to the local rule's targets:
    loss = mean_batch sum_k (sigmoid(z_k) - d_k)^2, d_k = a_hi if k == y else a_lo."""

    name = "backprop-mse"

    def __init__(self, model: MLP, params: BackpropParams, n_classes: int, seed: int = 0,
                 a_hi: float = 0.9, a_lo: float = 0.1):
        super().__init__(model, params, n_classes, seed)
        self.a_hi, self.a_lo = float(a_hi), float(a_lo)

    def loss_sum(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = torch.full_like(logits, self.a_lo).scatter_(1, y.view(-1, 1), self.a_hi)
        return ((torch.sigmoid(logits) - d) ** 2).sum()

    def loss_mean(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_sum(logits, y) / len(y)
