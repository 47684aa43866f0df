"""The local rule's per-layer machinery, shared by every learner that applies it.

A learner holds a list of learnable layers (nn.Linear or nn.Conv2d), each with its own association
map, running presynaptic mean (``RuleParams.center``) and target table, and changes layer ``l`` from
that layer's own input ``pre``, its own activity ``post`` and the broadcast label ``y`` alone:
:class:`LayerwiseRule`. How the activities are obtained is the subclass's business:
:class:`localstdp.rules.local.LocalRule` reads them from the package MLP
(``MLP.activities``), :class:`localstdp.learner.LocalLearner` from forward hooks on any nn.Module.
Both run the same per-layer code, so they agree bit for bit on the same network.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from .association import make_associations
from .functional import (
    association_targets,
    conv_error_update,
    fill_untaught,
    local_conv_update,
    local_update,
    pooled_conv_target,
    pooled_conv_update,
    softhebb_conv_update,
)
from .fused import apply_local_update_
from .params import ConvParams, RuleParams
from .readout import readout_conv_error, readout_conv_target, readout_matrix


def units(layer: nn.Module) -> int:
    """Neurons of a learnable layer: output features (Linear) or output channels (Conv2d)."""
    return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features


def conv_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """A Conv2d's padding as numbers ("valid" is 0, "same" half the dilated kernel; ValueError when
    "same" would pad unevenly, which the unfold-based update does not reproduce)."""
    if not isinstance(conv.padding, str):
        return tuple(conv.padding)
    if conv.padding == "valid":
        return (0, 0)
    total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
    if any(t % 2 for t in total):
        raise ValueError("padding='same' with an even kernel pads unevenly; give explicit padding")
    return tuple(t // 2 for t in total)


class LayerwiseRule:
    """Trains a list of layers, each from its own (pre, post) activity and the label only."""

    name = "local"

    def __init__(self, layers: Sequence[nn.Module], params: RuleParams, n_classes: int, seed: int = 0,
                 conv: ConvParams | None = None):
        self.layers = list(layers)
        self.params = params
        self.conv = conv if conv is not None else ConvParams()
        self.base_eta = params.eta  # train.lr; set_lr_factor scales it (train.lr_schedule)
        self.n_classes = n_classes
        gen = torch.Generator().manual_seed(int(seed) + 7919)  # association codes, independent of init
        maps = make_associations([units(m) for m in self.layers], n_classes, params.association,
                                 params.association_density, gen)
        self.associations = [A.to(m.weight.device) for A, m in zip(maps, self.layers)]
        self.pre_means: list[torch.Tensor | None] = [None] * len(self.layers)  # params.center > 0 only
        # per layer: (association map, its (n_classes x n) target table, its (n_classes x n) bool table
        # of taught entries, or None when every entry is taught)
        self._target_tables: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}
        self._absent: tuple[torch.Tensor, torch.Tensor] | None = None  # (a mask, 1 - mask)
        # rules/fused.py: False makes the covariance rule and fixed connectivity use the fused form
        # (no weight-sized buffer; equal within float rounding, not bit for bit). Every shipped
        # MLP config runs the exact form (tests/test_mlp_unchanged.py).
        self.exact_updates = True
        # A conv layer in rate mode with theta 0 takes a closed form without unfolded patches ("pooled":
        # functional.pooled_conv_update; "readout", "position": functional.conv_error_update), equal
        # to the unfold form within float rounding; False: the unfold form (local_conv_update), the reference.
        self.closed_conv = True
        self.seed = seed
        self._readouts: dict[int, torch.Tensor] = {}  # conv teaching "readout": layer -> its fixed readout

    def set_lr_factor(self, factor: float) -> None:
        """Scale the learning rate to ``factor`` x train.lr for the following steps (a schedule)."""
        eta = self.base_eta * factor
        if eta != self.params.eta:
            self.params = dataclasses.replace(self.params, eta=eta)

    def mask(self, l: int) -> torch.Tensor | None:
        """Fixed connectivity of layer ``l`` (0/1, the weight's shape) or None: absent synapses stay 0."""
        return None

    @torch.no_grad()
    def pre_mean(self, l: int, pre: torch.Tensor) -> torch.Tensor | None:
        """Layer ``l``'s running mean of its presynaptic activity, updated with this batch (the
        covariance rule, ``params.center`` > 0), else None. Each pre neuron's own statistic; a conv
        layer keeps one per input channel (its neurons share weights, so they share the mean)."""
        c = self.params.center
        if c <= 0:
            return None
        m, batch = self.pre_means[l], pre.mean(0) if pre.ndim == 2 else pre.mean((0, 2, 3))
        self.pre_means[l] = batch if m is None else m * c + batch * (1 - c)
        return self.pre_means[l]

    def targets(self, l: int, y: torch.Tensor) -> torch.Tensor:
        """Association targets of layer ``l`` (0-based) for labels ``y``, (batch, units).

        Rows of a cached (n_classes x n) table of association_targets: one contiguous gather per
        batch instead of a strided one (the table is rebuilt when the association map is replaced)."""
        return self._tables(l)[1].index_select(0, y)

    def _tables(self, l: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        A, w = self.associations[l], self.layers[l].weight
        tables = self._target_tables
        if l not in tables or tables[l][0] is not A or tables[l][1].dtype != w.dtype or tables[l][1].device != w.device:
            # targets in the layer's dtype and on its device (0.9 in a float64 model is 0.9, not 0.90000004)
            Aw = A.to(device=w.device, dtype=w.dtype) if w.dtype.is_floating_point else A
            classes = torch.arange(A.shape[1], device=Aw.device)
            table = association_targets(Aw, classes, self.params.a_hi, self.params.a_lo).contiguous()
            taught = ~torch.isnan(table)
            tables[l] = (A, table, None if bool(taught.all()) else taught)
        return tables[l]

    def taught_targets(self, l: int, y: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        """Targets with untaught entries (NaN, pairs codes) set to the neuron's own activity, so its
        error is zero (the values of ``fill_untaught``). Which entries are taught is a (n_classes x n)
        table built with the target table: one gather per step, no NaN scan (a sync) per step."""
        _, table, taught = self._tables(l)
        target = table.index_select(0, y)
        return target if taught is None else torch.where(taught.index_select(0, y), target, post)

    def absent(self, l: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(mask(l), 1 - mask(l)) -- the complement computed once per mask tensor -- or (None, None)."""
        mask = self.mask(l)
        if mask is None:
            return None, None
        if self._absent is None or self._absent[0] is not mask:
            self._absent = (mask, 1 - mask)
        return mask, self._absent[1]

    def layer_update(self, l: int, pre: torch.Tensor, post: torch.Tensor, y: torch.Tensor, reduction: str = "mean"):
        """(dW, db) of layer ``l`` from its own pre/post activity and the broadcast label only."""
        if isinstance(self.layers[l], nn.Conv2d):
            return self.conv_update(l, pre, post, y, reduction)
        m = self.pre_mean(l, pre)
        dW, db = local_update(pre, post, self.taught_targets(l, y, post), self.params, reduction, pre_mean=m)
        return self._masked(l, dW, db, m)

    def conv_update(self, l: int, pre: torch.Tensor, post: torch.Tensor, y: torch.Tensor, reduction: str = "mean"):
        """(dW, db) of conv layer ``l`` as ``self.conv.teaching`` says (see ConvParams)."""
        layer, c = self.layers[l], self.conv
        p = self.params if c.lr_scale == 1 else dataclasses.replace(self.params, eta=self.params.eta * c.lr_scale)
        if c.teaching in ("none", "softhebb"):  # no bias change
            zero_b = torch.zeros(units(layer), dtype=layer.weight.dtype, device=layer.weight.device)
        if c.teaching == "none":
            return torch.zeros_like(layer.weight), zero_b
        if c.teaching == "softhebb":
            dW = softhebb_conv_update(pre, layer.weight, p.eta, c.tau, layer.stride, conv_padding(layer), layer.dilation)
            return (dW * pre.shape[0] if reduction == "sum" else dW), zero_b
        geometry = (layer.kernel_size, layer.stride, conv_padding(layer), layer.dilation, reduction)
        closed = self.closed_conv and p.mode == "rate" and p.theta <= 0  # no unfolded patches (see __init__)
        if c.teaching == "readout":  # a fixed random readout of the layer's own map (rules/readout.py)
            R = self.readout(l, post)
            if closed:
                return conv_error_update(pre, readout_conv_error(post, y, R), p, *geometry, self.pre_mean(l, pre))
            return local_conv_update(pre, post, readout_conv_target(post, y, R), p, *geometry,
                                     pre_mean=self.pre_mean(l, pre))
        target = self.targets(l, y)  # (batch, channels), NaN where untaught
        if c.teaching == "pooled" and closed:
            return pooled_conv_update(pre, post, target, p, *geometry, pre_mean=self.pre_mean(l, pre))
        if c.teaching == "pooled":
            target = pooled_conv_target(post, target)
        else:  # "position": the channel's target at every position
            target = fill_untaught(target[:, :, None, None].expand_as(post), post)
            if closed:
                return conv_error_update(pre, target - post, p, *geometry, self.pre_mean(l, pre))
        return local_conv_update(pre, post, target, p, *geometry, pre_mean=self.pre_mean(l, pre))

    def readout(self, l: int, post: torch.Tensor) -> torch.Tensor:
        """Conv layer ``l``'s fixed readout (conv teaching "readout"), drawn from the seed on first use."""
        R = self._readouts.get(l)
        size = post[0].numel()
        if R is None or R.shape[1] != size or R.dtype != post.dtype or R.device != post.device:
            R = self._readouts[l] = readout_matrix(self.seed, l, self.n_classes, size, post.dtype, post.device)
        return R

    def _masked(self, l: int, dW: torch.Tensor, db: torch.Tensor, pre_mean: torch.Tensor | None):
        """Fixed connectivity (``mask(l)``): absent synapses do not change, and the covariance rule's
        bias term -dW m counts only the synapses that exist."""
        mask = self.mask(l)
        if mask is None:
            return dW, db
        kept = dW * mask
        return kept, db if pre_mean is None else db + (dW - kept) @ pre_mean

    @torch.no_grad()
    def decay_layer(self, l: int) -> None:
        """rule.weight_decay: every synapse of layer ``l`` shrinks by its own value, W *= 1 - eta wd."""
        wd = self.params.weight_decay
        if wd > 0 and self.layers[l].weight.requires_grad:
            self.layers[l].weight.mul_(1.0 - self.params.eta * wd)

    @torch.no_grad()
    def apply_layer(self, l: int, dW: torch.Tensor, db: torch.Tensor) -> None:
        """Decay (rule.weight_decay), then W += dW, b += db: every path that changes a layer ends here
        or in learn_layer, which does the same."""
        layer = self.layers[l]
        self.decay_layer(l)
        if layer.weight.requires_grad:  # a frozen parameter (requires_grad False) never changes
            layer.weight.add_(dW)
        if layer.bias is not None and layer.bias.requires_grad:
            layer.bias.add_(db)

    @torch.no_grad()
    def learn_layer(self, l: int, pre: torch.Tensor, post: torch.Tensor, y: torch.Tensor) -> None:
        """Layer ``l``'s update applied in place (dense layers: rules/fused.py, bit for bit the values of
        layer_update + apply_layer, without their chain of weight-sized temporaries).
        ``step`` runs exactly this per layer, so a pipeline stage calling it reproduces ``step``."""
        layer = self.layers[l]
        if isinstance(layer, nn.Conv2d) or layer.bias is None or not (layer.weight.requires_grad
                                                                    and layer.bias.requires_grad):
            self.apply_layer(l, *self.layer_update(l, pre, post, y))  # conv, no bias, a frozen part
            return
        target = self.taught_targets(l, y, post)  # untaught (pairs codes): the neuron's own activity
        mask, absent = self.absent(l)  # fixed connectivity (receptive fields)
        m = self.pre_mean(l, pre)
        self.decay_layer(l)
        apply_local_update_(layer.weight, layer.bias, pre, post, target, self.params, m, mask, absent,
                            exact=self.exact_updates)

    def output_loss(self, y: torch.Tensor, out: torch.Tensor) -> float:
        """The output layer's mean squared target error (what ``step`` returns)."""
        return float(((self.targets(len(self.layers) - 1, y) - out) ** 2).mean())

    def follow_layers(self) -> None:
        """Association maps and running means onto their layers' devices (after a ``model.to``)."""
        for l, layer in enumerate(self.layers):
            dev = layer.weight.device
            if self.associations[l].device != dev:
                self.associations[l] = self.associations[l].to(dev)
            m = self.pre_means[l]
            if m is not None and m.device != dev:
                self.pre_means[l] = m.to(dev)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"rule.association.{l}": A for l, A in enumerate(self.associations)}
        return out | {f"rule.pre_mean.{l}": m for l, m in enumerate(self.pre_means) if m is not None}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for l in range(len(self.associations)):
            A = tensors.get(f"rule.association.{l}")
            if A is None or A.shape != self.associations[l].shape:
                raise ValueError(f"checkpoint lacks association map {l} of shape {tuple(self.associations[l].shape)}")
            self.associations[l] = A.to(self.associations[l].device).clone()
        for l in range(len(self.pre_means)):
            m = tensors.get(f"rule.pre_mean.{l}")
            self.pre_means[l] = None if m is None else m.to(self.layers[l].weight.device).clone()
