"""What a pipeline stage runs: one plan per (model, learner) pair that can be split exactly.

A plan cuts the model into *units* (each holds one learnable layer: the pipeline partitions units,
and a stage [lo, hi) owns the learnable layers lo..hi-1), says what travels from one stage to the
next, and runs one stage's part of a training step with exactly the tensor operations the
learner's own ``step`` performs on those layers, in the same order, so a pipeline of any number of
ranks ends with the single-process weights bit for bit.

  LocalMLPPlan   the local rule (LocalRule) on the package MLP: one unit per layer.
  SequentialPlan the local rule (LocalLearner) on any nn.Sequential stack (MLP or CNN: Conv2d,
                 Sigmoid, MaxPool2d, Flatten, Linear, ...). A cut lies only just before a child
                 holding a learnable layer and never between a layer and its activation, so every
                 stage reads its layers' (pre, post) activity itself; the parameter-free modules
                 after an activation (pooling, flatten) run on the earlier stage, so the smaller
                 tensor is sent.
  DRTPPlan       drtp on the MLP: a hidden layer's target is a fixed random projection of the
                 label (B^l y*), the output layer's error is its own; nothing waits for a later layer.
  FFPlan         ff on the MLP: each hidden layer's goodness objective on its own activity; the
                 positive and negative streams and the layers' losses so far travel forward.

Refused (:func:`make_plan`, one line each): backprop, fa and dfa (their learning signal travels
back from the output: a feedback pathway), pepita (its second, modulated pass starts at the input
from the output error of the first pass: every layer waits for the whole network).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as nnf

from ..errors import ConfigError
from ..learner import LocalLearner
from ..model import MLP
from ..rules.layerwise import LayerwiseRule
from ..rules.peers import DirectRandomTargetProjection, ForwardForward
from ..rules.peers.base import add_grad, onehot, output_error, sigmoid_prime
from ..rules.peers.ff import embed_label, negative_labels, rms_normalise
from .partition import layer_costs, partition_layers, sequential_units

REFUSED = {
    "backprop": "backprop's backward pass makes every layer wait for the layers above it",
    "backprop-mse": "backprop's backward pass makes every layer wait for the layers above it",
    "fa": "fa sends the output error back layer by layer through fixed random matrices (a feedback pathway): "
          "every layer waits for the layers above it",
    "dfa": "dfa sends the output error to every hidden layer (a feedback pathway): every layer waits for the "
           "output of the whole forward pass",
    "pepita": "pepita's second forward pass starts at the input modulated by the output error of the first: every "
              "layer waits for the whole network (not layer-local in a pipeline)",
}
PIPELINE_RULES = ("local", "drtp", "ff")


class Plan:
    """Base: units with costs; a stage [lo, hi) of units; what it receives, runs and sends."""

    extra_labels = False  # ff: a second label row (the negative labels) travels with y

    def __init__(self, model: nn.Module, learner, costs: list[float]):
        self.model, self.learner, self.costs = model, learner, [float(c) for c in costs]
        self.dtype = next(model.parameters()).dtype

    def partition(self, parts: int) -> list[tuple[int, int]]:
        return partition_layers(self.costs, parts)

    def first(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Rank 0: the stage input from the batch, and the extra labels (or None)."""
        return [x.flatten(1)], None

    def shapes(self, lo: int, bsz: int) -> list[tuple[int, ...]]:
        """Shapes of the float tensors the stage starting at unit ``lo`` receives."""
        raise NotImplementedError

    def run(self, lo: int, hi: int, xs: list[torch.Tensor], y: torch.Tensor, extra, last: bool):
        """One step of the stage's layers; returns (tensors for the next stage, loss or None).
        ``loss`` (last stage only) is what the learner's ``step`` returns for the batch."""
        raise NotImplementedError

    def parameters(self, lo: int, hi: int) -> list[torch.Tensor]:
        """Every parameter (and buffer) of the stage's units: the owner broadcasts them at epoch ends."""
        raise NotImplementedError

    def layer_ids(self, lo: int, hi: int) -> range:
        """The learner's layer indices of the stage (its per-layer rule state)."""
        return range(lo, hi)


class LocalMLPPlan(Plan):
    """The local rule on the package MLP (what LocalRule.step does, layer by layer)."""

    def __init__(self, model: MLP, learner):
        super().__init__(model, learner, layer_costs(model.widths))

    def shapes(self, lo, bsz):
        return [(bsz, self.model.widths[lo])]

    def run(self, lo, hi, xs, y, extra, last):
        a = xs[0]
        for l in range(lo, hi):
            post = self.model.layer_forward(l, a)
            self.learner.learn_layer(l, a, post, y)
            a = post
        return [a], (self.learner.output_loss(y, a) if last else None)

    def parameters(self, lo, hi):
        return [p for l in range(lo, hi) for p in self.model.layers[l].parameters()]


class SequentialPlan(Plan):
    """LocalLearner on an nn.Sequential: the stage's slice of children run through the learner's
    hooks (``activities(x, part)``), then ``learn_layer`` per layer, as ``LocalLearner.step``."""

    def __init__(self, model: nn.Sequential, learner: LocalLearner, example: torch.Tensor):
        learner.resolve(example)  # the layers in call order before any stage runs a part of the model
        self.units = sequential_units(model, learner, example)
        super().__init__(model, learner, [u.cost for u in self.units])
        self.children = list(model.children())
        self._parts: dict[tuple[int, int], nn.Sequential] = {}

    def first(self, x, y):
        return [x], None

    def part(self, lo: int, hi: int) -> nn.Sequential:
        if (lo, hi) not in self._parts:
            self._parts[lo, hi] = nn.Sequential(*self.children[self.units[lo].start : self.units[hi - 1].stop])
        return self._parts[lo, hi]

    def shapes(self, lo, bsz):
        return [(bsz, *self.units[lo].in_shape)]

    def run(self, lo, hi, xs, y, extra, last):
        y = self.learner._labels(y)
        out, acts = self.learner.activities(xs[0], self.part(lo, hi))
        ids = self.layer_ids(lo, hi)
        for l in ids:
            self.learner.learn_layer(l, *acts[l], y)
        return [out.contiguous()], (self.learner.output_loss(y, acts[ids[-1]][1]) if last else None)

    def layer_ids(self, lo, hi):
        return range(self.units[lo].layers.start, self.units[hi - 1].layers.stop)

    def parameters(self, lo, hi):
        kids = self.children[self.units[lo].start : self.units[hi - 1].stop]
        return [t for c in kids for t in (*c.parameters(), *c.buffers())]


class _PeerPlan(Plan):
    """A peer rule on the MLP: zero_grad, the stage's share of ``accumulate``, then ``apply``
    (the optimiser steps the parameters that have a .grad: this stage's)."""

    def parameters(self, lo, hi):
        return [p for l in range(lo, hi) for p in self.model.layers[l].parameters()]

    def run(self, lo, hi, xs, y, extra, last):
        learner = self.learner
        learner.zero_grad()
        out, loss = self.accumulate(lo, hi, xs, y, extra, 1.0 / len(y), last)
        learner.apply()
        return out, loss


class DRTPPlan(_PeerPlan):
    """drtp's ``accumulate`` (DFA's with the one-hot label as the projected signal), per layer."""

    def __init__(self, model: MLP, learner: DirectRandomTargetProjection):
        super().__init__(model, learner, layer_costs(model.widths))

    def shapes(self, lo, bsz):
        return [(bsz, self.model.widths[lo])]

    @torch.no_grad()
    def accumulate(self, lo, hi, xs, y, extra, scale, last):
        m, learner, a = self.model, self.learner, xs[0]
        L, loss = len(m.layers), None
        for l in range(lo, hi):
            layer = m.layers[l]
            if l < L - 1:
                post = m.f(layer(a))
                delta = onehot(y, learner.n_classes, post).mm(learner.B(l).t()) * sigmoid_prime(post)
            else:
                post = layer(a)  # the logits z^L
                delta = output_error(post, y)
                loss = float(nnf.cross_entropy(post, y, reduction="sum")) / len(y)
            add_grad(layer.weight, delta.t().mm(a) * scale)
            add_grad(layer.bias, delta.sum(0) * scale)
            a = post
        return [a], loss


class FFPlan(_PeerPlan):
    """ff's ``accumulate``: the positive and negative streams through the stage's hidden layers,
    each layer's loss from its own goodness; the output layer (untrained) rides on the last stage.
    Rank 0 draws the negative labels for the whole batch from the learner's generator, as ``step``."""

    extra_labels = True

    def __init__(self, model: MLP, learner: ForwardForward):
        super().__init__(model, learner, layer_costs(model.widths)[:-1])

    def partition(self, parts):
        L = len(self.model.layers)
        if parts > L - 1:
            raise ConfigError(f"ff: a pipeline of {parts} stages needs at least {parts} hidden layers (ff trains the "
                              f"hidden layers only); the model has {L - 1}")
        stages = partition_layers(self.costs, parts)
        return stages[:-1] + [(stages[-1][0], L)]

    def first(self, x, y):
        K = self.learner.n_classes
        y_neg = negative_labels(y, K, self.learner.gen)
        return [embed_label(x, y, K), embed_label(x, y_neg, K)], y_neg

    def shapes(self, lo, bsz):
        w = self.model.widths[lo]
        return [(bsz, w), (bsz, w), (lo, bsz)] if lo else [(bsz, w), (bsz, w)]

    def accumulate(self, lo, hi, xs, y, extra, scale, last):
        m, p = self.model, self.learner.params
        up, un = xs[0], xs[1]
        before = list(xs[2].unbind(0)) if lo else []
        own = []
        with torch.enable_grad():
            for l in range(lo, min(hi, len(m.layers) - 1)):
                layer = m.layers[l]
                ap, an = m.f(layer(up.detach())), m.f(layer(un.detach()))
                gp, gn = (ap * ap).sum(1), (an * an).sum(1)
                up, un = rms_normalise(ap), rms_normalise(an)
                theta = p.ff_threshold * m.widths[l + 1]
                own.append(nnf.softplus(theta - gp) + nnf.softplus(gn - theta))
            (torch.stack(own).sum() * scale).backward()
        losses = before + [t.detach() for t in own]
        if last:
            return [], float(torch.stack(losses).sum()) / len(losses) / len(y)
        return [up.detach(), un.detach(), torch.stack(losses)], None


def make_plan(method: str, model: nn.Module, learner, example: torch.Tensor) -> Plan:
    """The pipeline plan of ``method`` on ``model`` (ConfigError, one line, when it has none)."""
    if method in REFUSED:
        raise ConfigError(f"--parallel pipeline --rule {method}: {REFUSED[method]}; use --parallel data")
    if method not in PIPELINE_RULES:
        raise ConfigError(f"--parallel pipeline: no pipeline schedule for --rule {method}")
    if isinstance(learner, DirectRandomTargetProjection) and isinstance(model, MLP):
        return DRTPPlan(model, learner)
    if isinstance(learner, ForwardForward) and isinstance(model, MLP):
        return FFPlan(model, learner)
    if isinstance(learner, LocalLearner):
        if not isinstance(model, nn.Sequential):
            raise ConfigError(f"--parallel pipeline splits an nn.Sequential (its children run in order); "
                              f"{type(model).__name__} is not one: build the model as an nn.Sequential")
        return SequentialPlan(model, learner, example)
    if isinstance(learner, LayerwiseRule) and isinstance(model, MLP):
        return LocalMLPPlan(model, learner)
    raise ConfigError(f"--parallel pipeline: no pipeline schedule for --rule {method} on {type(model).__name__}")
