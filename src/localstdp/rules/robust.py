"""Training for robustness, the same for every learner: input noise and adversarial examples.

The ``[robust]`` section of a config (all off by default) changes what a learner is shown, never how it
learns:

  input_noise   Gaussian noise of this std added to the input of every training batch, clipped to
                [0, 1] (the attacks' domain);
  adv_eps       > 0: every training batch is replaced by adversarial examples crafted against the
                current model, L-infinity PGD within adv_eps of it (Madry et al. 2018): a uniform random
                start in the ball, ``adv_steps`` signed-gradient steps of ``adv_step`` (0: 2.5 adv_eps /
                adv_steps, Madry et al.'s rule) on the cross-entropy of the model's logits, each step
                projected back onto the ball and [0, 1]. The attack differentiates the network (torch.autograd
                on the input only); the learner's update is its own: the local rule learns locally from the
                adversarial batch, backprop by its gradient;
  trades_beta   > 0 (backprop only, with adv_eps > 0): TRADES (Zhang et al. 2019) instead of the
                adversarial batch: the loss is CE(f(x), y) + beta KL(softmax f(x) || softmax f(x')), x'
                crafted by the same PGD on that KL from x + 0.001 N(0, 1) (the paper's start).

Noise and random starts come from their own generator, seeded from train.seed and kept in the
checkpoint, so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .. import checks
from ..errors import ConfigError

SEED_OFFSET = 7919  # the generator of noise and random starts: train.seed + this (apart from the others)


@dataclass(frozen=True)
class RobustParams:
    """``[robust]``: input_noise >= 0; adv_eps >= 0 (0: no adversarial training); adv_steps >= 1;
    adv_step >= 0 (0: 2.5 adv_eps / adv_steps); trades_beta >= 0 (0: PGD adversarial training)."""

    input_noise: float = 0.0
    adv_eps: float = 0.0
    adv_steps: int = 7
    adv_step: float = 0.0
    trades_beta: float = 0.0

    def __post_init__(self) -> None:
        for name in ("input_noise", "adv_eps", "adv_step", "trades_beta"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"robust.{name} = {v!r}: expected a finite value >= 0")
        if self.adv_steps < 1:
            raise ConfigError(f"robust.adv_steps = {self.adv_steps!r}: expected an integer >= 1")
        # trades_beta > 0 with adv_eps = 0 is refused by harden(), not here: a [methods.<name>.robust] table may
        # set beta alone over the method's own radius

    @property
    def active(self) -> bool:
        """Any of it set (trades_beta alone too: harden() then refuses it in one line)."""
        return self.input_noise > 0 or self.adv_eps > 0 or self.trades_beta > 0

    @property
    def step_size(self) -> float:
        return self.adv_step or 2.5 * self.adv_eps / self.adv_steps


def _kl(clean_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax clean || softmax logits), summed over the batch (TRADES' regulariser, up to 1 / n)."""
    return nn.functional.kl_div(logits.log_softmax(1), clean_logits.log_softmax(1), reduction="sum", log_target=True)


def trades_loss(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """TRADES' objective on a batch: mean CE(f(x), y) + beta mean KL(softmax f(x) || softmax f(x_adv))."""
    logits = model(x)
    return nn.functional.cross_entropy(logits, y) + beta * _kl(logits, model(x_adv)) / len(y)


def craft(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, step: float,
          start: torch.Tensor, clean_logits: torch.Tensor | None = None) -> torch.Tensor:
    """L-infinity PGD from ``start`` (a point of the ball around x): ``steps`` ascents of the summed
    cross-entropy of ``net(x')`` with labels y (or, given ``clean_logits``, of TRADES' KL to them), each
    x' <- clip(proj_ball(x' + step sign(grad)), 0, 1). Gradients reach only x': the model's parameters
    are neither read for .grad nor written."""
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    xa = torch.max(torch.min(start, hi), lo).detach()
    for _ in range(steps):
        xa.requires_grad_(True)
        with torch.enable_grad():
            out = net(xa)
            loss = (nn.functional.cross_entropy(out, y, reduction="sum") if clean_logits is None
                    else _kl(clean_logits, out))
            (g,) = torch.autograd.grad(loss, xa)
        xa = torch.max(torch.min(xa.detach() + step * g.sign(), hi), lo)
    return xa.detach()


class Hardened:
    """A learner shown noisy or adversarial batches (``[robust]``); everything else is the inner
    learner's (its rate, state, prediction module). ``net`` is the module whose logits the attacks of
    the evaluation read (train.predictor)."""

    def __init__(self, inner, net: nn.Module, params: RobustParams, seed: int):
        if params.trades_beta > 0 and params.adv_eps == 0:
            raise ConfigError("robust.trades_beta > 0 needs robust.adv_eps > 0 (the radius TRADES crafts its examples in)")
        if params.trades_beta > 0 and not hasattr(inner, "step_loss"):
            raise ConfigError(f"robust.trades_beta: TRADES is a loss, for backprop only; {getattr(inner, 'name', inner)} "
                              "takes adversarial examples with robust.adv_eps (trades_beta = 0)")
        if params.adv_eps > 0 and getattr(inner, "full_batch", False):
            raise ConfigError("robust.adv_eps: the shallow baselines train full-batch by L-BFGS, not on adversarial "
                              "batches; give them robust.input_noise")
        self.inner, self.net, self.params = inner, net, params
        self.gen = torch.Generator().manual_seed(seed + SEED_OFFSET)

    def __getattr__(self, name):  # model, full_batch, set_lr_factor, predict_module, ...: the inner learner's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _draw(self, like: torch.Tensor, kind: str) -> torch.Tensor:
        r = (torch.randn if kind == "normal" else torch.rand)(like.shape, generator=self.gen, dtype=like.dtype)
        return r.to(like.device)

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the inner learner is shown for (x, y): x with noise, then (adv_eps > 0, not TRADES) the
        PGD examples against the current model."""
        p = self.params
        if p.input_noise > 0:
            x = (x + p.input_noise * self._draw(x, "normal")).clamp(0, 1)
        if p.adv_eps > 0 and p.trades_beta == 0:
            start = x + p.adv_eps * (2 * self._draw(x, "uniform") - 1)
            x = craft(self.net, x, y, p.adv_eps, p.adv_steps, p.step_size, start)
        return x

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        p, model = self.params, self.inner.model
        y = checks.package_batch(model, x, y, self.inner.n_classes)  # one line on a bad batch, before the attack
        xb = self.batch(x, y)
        if p.trades_beta == 0:
            return self.inner.step(xb, y)
        with torch.no_grad():
            clean = self.net(xb)
        xa = craft(self.net, xb, y, p.adv_eps, p.adv_steps, p.step_size, xb + 0.001 * self._draw(xb, "normal"),
                   clean_logits=clean)
        return self.inner.step_loss(xb, y, lambda x, y: trades_loss(model, x, xa, y, p.trades_beta))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return self.inner.state_tensors() | {"robust.generator": self.gen.get_state()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.inner.load_state_tensors({k: v for k, v in tensors.items() if k != "robust.generator"})
        if "robust.generator" in tensors:
            self.gen.set_state(tensors["robust.generator"])


def harden(learner, net: nn.Module, params: RobustParams, seed: int):
    """``learner`` itself when ``[robust]`` is off, else :class:`Hardened` around it."""
    return Hardened(learner, net, params, seed) if params.active else learner
