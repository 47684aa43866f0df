"""The shallow baselines of the panel (issue 23): a trained readout on fixed features.

:class:`Readout` trains only the LAST ``nn.Linear`` of a model, by softmax cross-entropy on what
the layers before it compute; those layers stay as initialised:

  linear           ``train`` builds a model with no hidden layer (one nn.Linear on the input
                   pixels): multinomial logistic regression;
  random-features  the task's own network, its hidden layers frozen at their initialisation (the
                   weights every method starts from for that seed), only the output layer trained.

Objective: mean cross-entropy + (wd / 2) ||W||^2 over the trained layer's weight matrix, wd =
``backprop.weight_decay`` (the L2 term Adam's weight decay adds to backprop-wd's gradient; the bias
is not penalised, as in scikit-learn's LogisticRegression; for two classes the optimum is
scikit-learn's binary one at C = 2 / (wd n_train), tests/test_shallow.py). It is convex in the trained layer, so
it is minimised full-batch by L-BFGS with a strong-Wolfe line search: ``full_batch`` makes
``train`` hand :meth:`Readout.step` the whole training split once per epoch, and each step runs
:data:`MAX_ITER` iterations from the current weights with a fresh L-BFGS history, so a checkpoint
needs no optimiser state. There is no learning rate (``set_lr_factor`` does nothing) and the
attacked module is the model itself: its forward returns the logits.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import checks
from ..errors import ConfigError
from .backprop import BackpropParams

MAX_ITER = 25  # L-BFGS iterations per epoch (per step)


def readout_layer(model: nn.Module) -> nn.Linear:
    """The output layer Readout trains: ``model.layers[-1]`` (the MLP) or the last child of an
    ``nn.Sequential`` (the CNN)."""
    layers = getattr(model, "layers", None)
    last = layers[-1] if layers is not None and len(layers) else (model[-1] if isinstance(model, nn.Sequential) else None)
    if not isinstance(last, nn.Linear):
        raise ConfigError(f"a readout needs a model whose last layer is an nn.Linear, got {type(model).__name__}")
    return last


@torch.no_grad()
def readout_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the output layer of ``model`` reads: the last hidden activity (the input itself for a
    model with no hidden layer), so ``readout_layer(model)(readout_features(model, x)) == model(x)``."""
    layers = getattr(model, "layers", None)
    if layers is not None:
        a = x.flatten(1)
        for layer in layers[:-1]:
            a = model.f(layer(a))
        return a
    return model[:-1](x)


class Readout:
    """Logistic regression on a frozen model's last hidden activity, L2 on the weights, full-batch L-BFGS."""

    name = "readout"
    full_batch = True

    def __init__(self, model: nn.Module, params: BackpropParams, n_classes: int, seed: int = 0):
        self.model = model
        self.params = params
        self.n_classes = n_classes
        self.head = readout_layer(model)

    def objective(self, feats: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """mean cross-entropy + (wd / 2) ||W||^2 of the output layer on ``feats``."""
        w = self.head.weight
        return nn.functional.cross_entropy(self.head(feats), y) + 0.5 * self.params.weight_decay * (w * w).sum()

    def set_lr_factor(self, factor: float) -> None:
        """No learning rate: the line search sets every step."""

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        y = checks.package_batch(self.model, x, y, self.n_classes)
        feats = readout_features(self.model, x)
        params = [self.head.weight, self.head.bias]
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=MAX_ITER, history_size=10, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            loss = self.objective(feats, y)
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        for p in params:
            p.grad = None
        with torch.no_grad():
            return float(self.objective(feats, y))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {}  # every step starts a fresh L-BFGS history

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass
