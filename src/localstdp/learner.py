"""The local rule on any PyTorch model: ``LocalLearner``.

    learner = LocalLearner(model, n_classes=10, lr=0.5, **rule_options)   # RuleParams fields
    out = learner.step(x, y)         # ONE forward pass (no autograd), every layer updated in place
    out.loss, out.logits             # a float (the target error, as before) with the model's output
    LocalLearner(model, rule="fa", n_classes=10, lr=1e-3, **peer_options)  # a peer rule (PeerParams)

``rule`` is "local" (default, this module) or a peer rule, "fa", "dfa", "drtp", "pepita" or "ff"
(:mod:`localstdp.rules.peers.models`: Linear layers only). Every rule shares the walker
(:mod:`localstdp.walker`: call order, refusals), ``step``, ``state_dict`` / ``load_state_dict``,
``to`` and ``optimizer`` (the learning rate for torch LR schedulers): :mod:`localstdp.model_learner`.

Contract. The learnable layers are the ``nn.Linear`` and ``nn.Conv2d`` modules of ``model`` with a
parameter that requires grad, in the order the forward pass calls them (a frozen weight or bias is
never changed: a layer with a frozen weight learns its bias only). For each, forward hooks record:

* its input ``pre``: whatever the layer receives (after pooling, flatten, dropout or any other
  parameter-free module, which therefore pass activity forward);
* its activity ``post``: the output of the ``nn.Sigmoid`` module called right after it on its
  output. Only nn.Sigmoid counts: the rule's targets (``a_hi``, ``a_lo``) and its latency code
  t = T (1 - a) are firing rates in (0, 1); ReLU, tanh or a functional ``torch.sigmoid`` are refused,
  unless ``activity="map"`` (or "sigmoid") says how to read a rate from any element-wise activation
  module (:mod:`localstdp.activity`, docs/activations.md: the network is unchanged, rate mode only);
* for the LAST learnable layer (the output layer, ``n_classes`` units, nn.Linear) the activity is
  sigmoid of its output when no nn.Sigmoid follows, as in the package MLP whose logits are z^L.

Layer l then changes from (pre, post, label) alone (``rules/layerwise.py``): a Linear by the dense
rule (``local_update``), a Conv2d by the weight-gradient of its own local error with its own input
(``local_conv_update``), taught as ``conv_teaching`` says (default "pooled": docs/ablation.md,
"Convolutional layers"). Nothing flows from one layer to another except the forward activity.

Refused with a :class:`ConfigError` naming the module (:mod:`localstdp.walker`): a module other than
Linear/Conv2d with trainable parameters (BatchNorm with affine parameters, attention, embeddings, ...;
freeze it with ``requires_grad_(False)`` or remove it), a learnable layer not followed by nn.Sigmoid
(except the last), a Conv2d with groups > 1, a padding mode other than zeros or uneven "same" padding,
modules that work in place (``inplace=True``: they would overwrite the activity the rule reads), one
Parameter held by two modules or a layer called twice per forward (shared weights), parametrized
weights and the hook-based ``nn.utils.weight_norm``, residual/skip connections (a layer's input that
is not the output of the module called before it), and a model without learnable layers. ``model.train()`` /
``eval()`` is the caller's: dropout in train mode shapes what the next layer receives.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from . import checks
from .activity import RATES
from .errors import ConfigError
from .model_learner import LearningRate, ModelLearner, StepResult
from .rules.association import make_associations
from .rules.layerwise import LayerwiseRule, units
from .rules.params import ConvParams, RuleParams
from .walker import ACTIVATIONS, describe, learnable_layers  # noqa: F401 - re-exported (older imports)

# LocalLearner's defaults where they differ from RuleParams': the covariance rule (center) is what
# lets the layer after a conv stack learn (docs/ablation.md, "Convolutional layers": 0.21 -> 0.97
# validation accuracy on digits with a frozen conv, 0.91 -> 0.97 with the taught one).
DEFAULT_OPTIONS = {"center": 0.99}
RULES = ("local", "fa", "dfa", "drtp", "pepita", "ff")


class LocalLearner(ModelLearner, LayerwiseRule):
    """The local rule attached to any nn.Module (see the module docstring for the contract).

    Args:
        model: the network; its layers are changed in place.
        rule: "local" (this class) or a peer rule ("fa", "dfa", "drtp", "pepita", "ff"): then the
            learner is that rule's :class:`localstdp.rules.peers.models.ModelPeer`, built with
            ``n_classes``, ``lr``, ``seed``, ``example`` and the rule's :class:`PeerParams` options.
        n_classes: classes of the labels; the last learnable layer must have that many outputs.
        lr: the learning rate eta (``RuleParams.eta``; 0.5 by default, 2.0 was best on 8x8 digits);
            ``learner.optimizer.param_groups[0]["lr"]``, which torch LR schedulers change.
        seed: seed of the association codes.
        example: an input batch: the layers' call order is read from it now (no update, buffers
            kept); without it, from the first ``step`` / ``updates``.
        conv_teaching, conv_lr_scale, conv_tau: how Conv2d layers learn (:class:`ConvParams`).
        activity: what rate the rule reads from a layer (:mod:`localstdp.activity`): "module" (default,
            the nn.Sigmoid after it; any other activation refused), "map" (the output of the ReLU, tanh,
            SiLU, ... after it mapped into [0, 1]: clamp(h, 0, 1), (h + 1) / 2; as accurate as the
            sigmoid network on digits) or "sigmoid" (sigmoid of the layer's output z). Rate mode only.
            docs/activations.md.
        **rule_options: any other :class:`RuleParams` field (a_hi, a_lo, mode, association, center,
            weight_decay, ...). Unlike RuleParams, ``center`` defaults to 0.99 (DEFAULT_OPTIONS);
            pass center=0 for the plain rule.
    """

    rule = "local"
    _hint = ("; ReLU, tanh, SiLU and other element-wise activations: LocalLearner(..., activity='map'), "
             "docs/activations.md")

    def __new__(cls, *args, rule: str = "local", **kwargs):
        if rule == "local" or cls is not LocalLearner:
            return super().__new__(cls)
        if rule not in RULES:
            raise ConfigError(f"rule {rule!r}: expected one of {', '.join(RULES)}")
        from .rules.peers.models import MODEL_PEERS  # its own learner class (not a LocalLearner)

        return MODEL_PEERS[rule](*args, **kwargs)

    def __init__(self, model: nn.Module, n_classes: int = 10, lr: float = 0.5, *, rule: str = "local", seed: int = 0,
                 example: torch.Tensor | None = None, conv_teaching: str = "pooled", conv_lr_scale: float = 3.0,
                 conv_tau: float = 1.0, activity: str = "module", **rule_options):
        self._check_args(model, n_classes, lr, seed)
        names = [f.name for f in dataclasses.fields(RuleParams) if f.name != "eta"]
        unknown = sorted(set(rule_options) - set(names))
        if unknown:
            raise ConfigError(f"unknown rule option(s) {', '.join(unknown)}; expected lr or one of {', '.join(names)}")
        if activity not in RATES:
            raise ConfigError(f"activity {activity!r}: expected one of {', '.join(RATES)} (docs/activations.md)")
        self._walk(model, n_classes)
        self.seed = seed
        conv = ConvParams(teaching=conv_teaching, lr_scale=conv_lr_scale, tau=conv_tau)
        params = RuleParams(eta=lr, **(DEFAULT_OPTIONS | rule_options))
        if activity != "module" and params.mode != "rate":
            raise ConfigError(f"activity={activity!r} is defined in rate mode only (mode={params.mode!r} reads the "
                              "spike times of every layer's input, which a ReLU network does not bound)")
        self.activity, self._rate = activity, RATES[activity]
        LayerwiseRule.__init__(self, self.layers, params, n_classes, seed, conv)
        self.optimizer = LearningRate([p for m in self.layers for p in m.parameters() if p.requires_grad], lr)
        self._keep_state = False  # load_state_tensors before the first pass: permute it, do not rebuild
        if example is not None:
            self.resolve(example)

    def _per_layer(self) -> list[list]:
        return [self.layers, self.names, self.associations, self.pre_means]

    def _rebuild(self) -> None:
        """Association codes drawn for the call order (as the constructor draws them), unless loaded."""
        self._target_tables.clear()
        self._readouts.clear()  # conv teaching "readout": drawn again for the call order
        if self._keep_state:
            return
        gen = torch.Generator().manual_seed(int(self.seed) + 7919)
        maps = make_associations([units(m) for m in self.layers], self.n_classes, self.params.association,
                                 self.params.association_density, gen)
        self.associations[:] = [A.to(m.weight.device) for A, m in zip(maps, self.layers)]

    def _follow(self) -> None:
        self.follow_layers()

    def _sync_lr(self) -> None:
        """The rule's eta is the optimizer's learning rate (a torch LR scheduler may have changed it)."""
        eta = self.optimizer.param_groups[0]["lr"]
        if eta != self.params.eta:
            self.params = dataclasses.replace(self.params, eta=eta)

    def set_lr_factor(self, factor: float) -> None:
        """Scale the learning rate to ``factor`` x the constructor's ``lr`` (train.lr_schedule)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.base_eta * factor
        self._sync_lr()

    @torch.no_grad()
    def activities(self, x: torch.Tensor, part: nn.Module | None = None) -> tuple[torch.Tensor, list]:
        """One forward pass: the model's output and every learnable layer's (pre, post).

        ``part``: run that part of the model instead (a pipeline stage, a slice of an nn.Sequential
        model, fed the activity it receives); layers outside it get None."""
        self._follow()
        out, found = self.record(x, part)
        if part is not None:
            inside = {id(m) for m in part.modules()}
            missing = [self.names[l] for l, f in enumerate(found) if f is None and id(self.layers[l]) in inside]
            if missing:
                raise ConfigError(f"learnable layer(s) {', '.join(missing)} not called in the forward pass; "
                                  "freeze them with requires_grad_(False) or remove them")
        return out, found

    def _labels(self, y: torch.Tensor) -> torch.Tensor:
        return y.to(self.layers[-1].weight.device)

    @torch.no_grad()
    def updates(self, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every learnable layer's (dW, db) from ONE forward pass, not applied, with no side effect:
        the running means (``center``) are left as they were (``updates`` then ``step`` equals ``step``).
        A frozen weight's or bias's entry is zero (``step`` leaves it alone)."""
        checks.choice("reduction", reduction, ("mean", "sum"))
        y = self._check_batch(x, y)
        self._sync_lr()
        _, acts = self.activities(x)
        y, means = self._labels(y), list(self.pre_means)
        try:
            ups = [self.layer_update(l, pre, post, y, reduction) for l, (pre, post) in enumerate(acts)]
        finally:
            self.pre_means[:] = means
        return [(dW if m.weight.requires_grad else torch.zeros_like(dW),
                 db if m.bias is not None and m.bias.requires_grad else torch.zeros_like(db))
                for (dW, db), m in zip(ups, self.layers)]

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """One update of every learnable layer from one forward pass. Returns a float, the output
        layer's mean squared target error (before the update), with ``.logits``: the model's output.

        ``x``: a non-empty batch of finite values, the model's dtype and device; ``y``: (batch,) integer
        labels in [0, n_classes). Anything else raises ArgumentError (a ValueError) or ArgumentTypeError
        (also a TypeError) naming the argument, and no layer changes (:mod:`localstdp.checks`)."""
        y = self._check_batch(x, y)
        self._sync_lr()
        out, acts = self.activities(x)
        y = self._labels(y)
        for l, (pre, post) in enumerate(acts):
            self.learn_layer(l, pre, post, y)
        self.optimizer.step()  # nothing to apply; keeps torch's LR schedulers' call-order check quiet
        self.steps += 1
        return StepResult(self.output_loss(y, acts[-1][1]), out)

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        LayerwiseRule.load_state_tensors(self, tensors)
        self._keep_state = True
        self._target_tables.clear()

    def _check_rule_state(self, state, layers: list[nn.Module]) -> None:
        for l, m in enumerate(layers):
            key = f"rule.association.{l}"
            A = checks.state_tensor(state, key, (units(m), self.n_classes), floating=False,
                                    what=f" (the association map of layer {l}: units x n_classes)")
            if not A.is_floating_point() or not bool(((A == 0) | (A == 1) | A.isnan()).all()):
                checks.fail(f"state[{key!r}]", "an association map of entries 0, 1 or NaN (untaught)",
                            checks.got(A) + " with other values")
            n_pre = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
            checks.state_tensor(state, f"rule.pre_mean.{l}", (n_pre,), required=False,
                                what=f" (the running mean of layer {l}'s input)")

    def _rule_state(self) -> dict[str, torch.Tensor]:
        return self.state_tensors()

    def _load_rule_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_tensors(state)
