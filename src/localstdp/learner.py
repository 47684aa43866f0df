"""The local rule on any PyTorch model: ``LocalLearner``.

    learner = LocalLearner(model, n_classes=10, lr=0.5, **rule_options)   # RuleParams fields
    loss = learner.step(x, y)        # ONE forward pass (no autograd), every layer updated in place

Contract. The learnable layers are the ``nn.Linear`` and ``nn.Conv2d`` modules of ``model`` whose
weight requires grad, in the order the forward pass calls them. For each, forward hooks record:

* its input ``pre``: whatever the layer receives (after pooling, flatten, dropout or any other
  parameter-free module, which therefore pass activity forward);
* its activity ``post``: the output of the ``nn.Sigmoid`` module called right after it on its
  output. Only nn.Sigmoid counts: the rule's targets (``a_hi``, ``a_lo``) and its latency code
  t = T (1 - a) are firing rates in (0, 1); ReLU, tanh or a functional ``torch.sigmoid`` are refused;
* for the LAST learnable layer (the output layer, ``n_classes`` units, nn.Linear) the activity is
  sigmoid of its output when no nn.Sigmoid follows, as in the package MLP whose logits are z^L.

Layer l then changes from (pre, post, label) alone (``rules/layerwise.py``): a Linear by the dense
rule (``local_update``), a Conv2d by the weight-gradient of its own local error with its own input
(``local_conv_update``), taught as ``conv_teaching`` says (default "pooled": docs/ablation.md,
"Convolutional layers"). Nothing flows from one layer to another except the forward activity.

Refused with a :class:`ConfigError` naming the module: a module other than Linear/Conv2d with
trainable parameters (BatchNorm with affine parameters, attention, embeddings, ...; freeze it with
``requires_grad_(False)`` or remove it), a learnable layer not followed by nn.Sigmoid (except the
last), a Conv2d with groups > 1, a padding mode other than zeros or uneven "same" padding, modules that
work in place (``inplace=True``: they would overwrite the activity the rule reads), a layer called
twice per forward (shared weights), and a model without learnable layers. ``model.train()`` /
``eval()`` is the caller's: dropout in train mode shapes what the next layer receives.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .errors import ConfigError
from .rules.layerwise import LayerwiseRule, conv_padding, units
from .rules.params import ConvParams, RuleParams

ACTIVATIONS = (nn.Sigmoid,)
# LocalLearner's defaults where they differ from RuleParams': the covariance rule (center) is what
# lets the layer after a conv stack learn (docs/ablation.md, "Convolutional layers": 0.21 -> 0.97
# validation accuracy on digits with a frozen conv, 0.91 -> 0.97 with the taught one).
DEFAULT_OPTIONS = {"center": 0.99}


def _describe(name: str, module: nn.Module) -> str:
    return f"{name or 'the model'} ({type(module).__name__})"


def _check_conv(name: str, conv: nn.Conv2d) -> None:
    """Refuse what the unfold-based conv update does not cover."""
    if conv.groups != 1:
        raise ConfigError(f"{_describe(name, conv)}: groups = {conv.groups}; the local rule supports groups = 1")
    if conv.padding_mode != "zeros":
        raise ConfigError(f"{_describe(name, conv)}: padding_mode {conv.padding_mode!r}; the local rule reads "
                          "padding as zero activity (padding_mode='zeros')")
    try:
        conv_padding(conv)
    except ValueError as exc:
        raise ConfigError(f"{_describe(name, conv)}: {exc}") from None


def learnable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every nn.Linear / nn.Conv2d with a trainable weight; refuses (ConfigError,
    naming the module) anything else the rule would have to train, and in-place modules."""
    found = []
    for name, m in model.named_modules():
        if getattr(m, "inplace", False) is True:
            raise ConfigError(f"{_describe(name, m)} works in place and would overwrite the activity the local "
                              "rule reads; use inplace=False")
        trainable = [p for p in m.parameters(recurse=False) if p.requires_grad]
        if isinstance(m, (nn.Linear, nn.Conv2d)) and m.weight.requires_grad:
            if isinstance(m.weight, nn.parameter.UninitializedParameter):
                raise ConfigError(f"{_describe(name, m)}: run one forward pass to initialise lazy layers first")
            if isinstance(m, nn.Conv2d):
                _check_conv(name, m)
            found.append((name, m))
        elif trainable:
            norm = isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))
            hint = "use it without affine parameters, " if norm else ""
            hint += "freeze it with requires_grad_(False) or remove it"
            raise ConfigError(f"{_describe(name, m)} has trainable parameters the local rule cannot train "
                              f"(it trains nn.Linear and nn.Conv2d only); {hint}")
    if not found:
        raise ConfigError(f"{type(model).__name__} has no learnable nn.Linear or nn.Conv2d layer")
    return found


class LocalLearner(LayerwiseRule):
    """The local rule attached to any nn.Module (see the module docstring for the contract).

    Args:
        model: the network; its layers are changed in place.
        n_classes: classes of the labels; the last learnable layer must have that many outputs.
        lr: the learning rate eta (``RuleParams.eta``; 0.5 by default, 2.0 was best on 8x8 digits).
        seed: seed of the association codes.
        conv_teaching, conv_lr_scale, conv_tau: how Conv2d layers learn (:class:`ConvParams`).
        **rule_options: any other :class:`RuleParams` field (a_hi, a_lo, mode, association, center,
            weight_decay, ...). Unlike RuleParams, ``center`` defaults to 0.99 (DEFAULT_OPTIONS);
            pass center=0 for the plain rule.
    """

    def __init__(self, model: nn.Module, n_classes: int = 10, lr: float = 0.5, *, seed: int = 0,
                 conv_teaching: str = "pooled", conv_lr_scale: float = 3.0, conv_tau: float = 1.0, **rule_options):
        named = learnable_layers(model)
        names = [f.name for f in dataclasses.fields(RuleParams) if f.name != "eta"]
        unknown = sorted(set(rule_options) - set(names))
        if unknown:
            raise ConfigError(f"unknown rule option(s) {', '.join(unknown)}; expected lr or one of {', '.join(names)}")
        last_name, last = named[-1]
        if not isinstance(last, nn.Linear) or units(last) != n_classes:
            raise ConfigError(f"{_describe(last_name, last)} is the output layer (the last learnable one): it must "
                              f"be an nn.Linear with n_classes = {n_classes} outputs")
        self.model = model
        self.names = [n for n, _ in named]
        conv = ConvParams(teaching=conv_teaching, lr_scale=conv_lr_scale, tau=conv_tau)
        params = RuleParams(eta=lr, **(DEFAULT_OPTIONS | rule_options))
        super().__init__([m for _, m in named], params, n_classes, seed, conv)
        self._leaves = [m for m in model.modules() if next(m.children(), None) is None]

    @torch.no_grad()
    def activities(self, x: torch.Tensor, part: nn.Module | None = None) -> tuple[torch.Tensor, list]:
        """One forward pass: the model's output and every learnable layer's (pre, post).

        ``part``: run that part of the model instead (a pipeline stage, a slice of an nn.Sequential
        model, fed the activity it receives); layers outside it get None."""
        calls: list[tuple[nn.Module, torch.Tensor | None, torch.Tensor]] = []

        def record(module, inputs, output):
            calls.append((module, inputs[0] if inputs else None, output))

        handles = [m.register_forward_hook(record) for m in self._leaves]
        try:
            out = self.model(x) if part is None else part(x)
        finally:
            for h in handles:
                h.remove()
        index = {id(m): l for l, m in enumerate(self.layers)}
        found: list = [None] * len(self.layers)
        for k, (module, pre, z) in enumerate(calls):
            l = index.get(id(module))
            if l is None:
                continue
            where = _describe(self.names[l], module)
            if found[l] is not None:
                raise ConfigError(f"{where} is called twice in one forward pass; the local rule needs one "
                                  "(pre, post) pair per layer (no shared weights)")
            nxt = calls[k + 1] if k + 1 < len(calls) else None
            if nxt is not None and isinstance(nxt[0], ACTIVATIONS) and nxt[1] is z:
                post = nxt[2]
            elif l == len(self.layers) - 1:
                post = torch.sigmoid(z)  # the output layer: its logits' sigmoid, as in the package MLP
            else:
                after = "nothing" if nxt is None else type(nxt[0]).__name__
                raise ConfigError(f"{where} is followed by {after}, not nn.Sigmoid: the local rule reads a layer's "
                                  "activity from the nn.Sigmoid module applied to its output (put pooling, "
                                  "dropout and flatten after the activation)")
            if isinstance(module, nn.Linear) and pre.ndim != 2:
                raise ConfigError(f"{where} receives a {pre.ndim}-D input; the local rule needs (batch, features): "
                                  "add nn.Flatten before it")
            found[l] = (pre, post)
        inside = None if part is None else {id(m) for m in part.modules()}
        missing = [self.names[l] for l, f in enumerate(found) if f is None
                   and (inside is None or id(self.layers[l]) in inside)]
        if missing:
            raise ConfigError(f"learnable layer(s) {', '.join(missing)} not called in the forward pass; "
                              "freeze them with requires_grad_(False) or remove them")
        return out, found

    def _labels(self, y: torch.Tensor) -> torch.Tensor:
        return y.to(self.associations[0].device)

    @torch.no_grad()
    def updates(self, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every learnable layer's (dW, db) from ONE forward pass, not applied."""
        y = self._labels(y)
        _, acts = self.activities(x)
        return [self.layer_update(l, pre, post, y, reduction) for l, (pre, post) in enumerate(acts)]

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One update of every learnable layer from one forward pass; returns the output layer's mean
        squared target error (before the update)."""
        y = self._labels(y)
        _, acts = self.activities(x)
        for l, (pre, post) in enumerate(acts):
            self.learn_layer(l, pre, post, y)
        return self.output_loss(y, acts[-1][1])
