"""Cutting a model into pipeline stages by cost.

The MLP: one unit per layer, cost n_in * n_out + n_out multiply-adds per example (``layer_costs``).

An nn.Sequential stack (:func:`sequential_units`): one probe forward pass of a single example
measures every module. Cost per example: a Linear 2 (n_in n_out + n_out), a Conv2d
2 (positions C_out (C_in/groups kh kw + 1)) -- the forward GEMM and the local update, one GEMM of
the same size -- and every parameter-free module (activation, pooling, flatten) one operation per
output element. The stack is grouped into units, each starting at a child that holds a learnable
layer (the first unit also holds the modules before it, the last the modules after): a cut lies
just before a learnable layer, so the previous layer's activation and the pooling / flatten after
it stay on the earlier stage, and a layer is never separated from its activation.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError

RANDOM_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def partition_layers(costs: list[float], parts: int) -> list[tuple[int, int]]:
    """Split layers with per-layer ``costs`` into ``parts`` contiguous stages [lo, hi) so that
    the most expensive stage is as cheap as possible (exact dynamic programme, O(L^2 parts))."""
    L = len(costs)
    if not 1 <= parts <= L:
        raise ConfigError(f"a pipeline of {parts} stages needs at least {parts} layers; the model has {L}")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + float(c))
    best = [[math.inf] * (L + 1) for _ in range(parts + 1)]
    cut = [[0] * (L + 1) for _ in range(parts + 1)]
    best[0][0] = 0.0
    for k in range(1, parts + 1):
        for i in range(k, L - (parts - k) + 1):
            for j in range(k - 1, i):
                c = max(best[k - 1][j], prefix[i] - prefix[j])
                if c < best[k][i]:
                    best[k][i], cut[k][i] = c, j
    stages, i = [], L
    for k in range(parts, 0, -1):
        stages.append((cut[k][i], i))
        i = cut[k][i]
    return stages[::-1]


def layer_costs(widths: list[int]) -> list[float]:
    """Work of each MLP layer per example (multiply-adds of its forward and its update)."""
    return [float(a * b + b) for a, b in itertools.pairwise(widths)]


def module_cost(module: nn.Module, out: torch.Tensor) -> float:
    """Operations per example of one leaf module that produced ``out`` (a batch of one)."""
    if isinstance(module, nn.Linear):
        return 2.0 * (module.in_features * module.out_features + module.out_features)
    if isinstance(module, nn.Conv2d):
        k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        return 2.0 * out[0].numel() * (k + 1)
    return float(out[0].numel()) if isinstance(out, torch.Tensor) else 0.0


@dataclass(frozen=True)
class Unit:
    """Children [start, stop) of the stack, holding the learner's layers ``layers``."""

    start: int
    stop: int
    layers: range
    cost: float
    in_shape: tuple[int, ...]  # per example, what the unit's first child receives


@torch.no_grad()
def sequential_units(model: nn.Sequential, learner, example: torch.Tensor) -> list[Unit]:
    """The units of ``model`` for ``learner`` (a LocalLearner on it), from one probe forward pass
    of ``example`` (a batch of one); ConfigError (one line) for what a pipeline cannot split."""
    children = list(model.children())
    owner = {id(m): i for i, c in enumerate(children) for m in c.modules()}
    for m in model.modules():
        if isinstance(m, RANDOM_MODULES) and m.training and m.p > 0:
            raise ConfigError(f"{type(m).__name__} in train mode draws from the global random generator in forward "
                              "order, which a pipeline cannot reproduce; call model.eval() on it or use p = 0")
    calls, in_shapes = [], {}
    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, i[0] if i else None, o))) for m in leaves]

    def shape_of(k: int):
        def hook(module, inputs) -> None:  # returns None: the input goes on unchanged
            in_shapes.setdefault(k, tuple(inputs[0].shape[1:]))
        return hook

    hooks += [c.register_forward_pre_hook(shape_of(k)) for k, c in enumerate(children)]
    saved = [(b, b.clone()) for b in model.buffers()]  # a probe must not move running statistics
    try:
        out = model(example)
        if type(model).forward is not nn.Sequential.forward:  # an overridden forward must be the chain
            chained = example
            for c in children:
                chained = c(chained)
            if not torch.equal(out, chained):
                raise ConfigError(f"{type(model).__name__}.forward is not its children applied in order; a pipeline "
                                  "splits the children")
    finally:
        for h in hooks:
            h.remove()
        for b, v in saved:
            b.copy_(v)
    index = {id(m): l for l, m in enumerate(learner.layers)}
    layer_child, act_child = [None] * len(learner.layers), [None] * len(learner.layers)
    cost = [0.0] * len(children)
    for k, (m, _inp, z) in enumerate(calls):
        i = owner.get(id(m))
        if i is None:
            raise ConfigError(f"{type(m).__name__} runs in the forward pass but is not part of the nn.Sequential's "
                              "children; a pipeline can split only the stack's own modules")
        cost[i] += module_cost(m, z)
        l = index.get(id(m))
        if l is not None:
            layer_child[l] = act_child[l] = i
            nxt = calls[k + 1] if k + 1 < len(calls) else None
            if nxt is not None and isinstance(nxt[0], nn.Sigmoid) and nxt[1] is z:
                act_child[l] = owner[id(nxt[0])]
    if None in layer_child or layer_child != sorted(layer_child):
        raise ConfigError("the learnable layers must run once each, in the order of the nn.Sequential's children")
    starts = [0]
    for i in sorted(set(layer_child))[1:]:
        if not any(layer_child[l] < i <= act_child[l] for l in range(len(layer_child))):
            starts.append(i)  # no layer is cut off from its activation here
    units = []
    for start, stop in zip(starts, [*starts[1:], len(children)]):
        ls = [l for l, c in enumerate(layer_child) if start <= c < stop]
        units.append(Unit(start, stop, range(ls[0], ls[-1] + 1), sum(cost[start:stop]),
                          tuple(example.shape[1:]) if start == 0 else in_shapes[start]))
    return units
