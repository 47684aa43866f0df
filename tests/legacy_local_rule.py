"""FROZEN: ``LocalRule`` as it stood at commit 0c260f1, before it became a user of the per-layer
machinery it now shares with ``LocalLearner`` (issue 13). tests/test_learner.py checks that today's
learners reproduce it bit for bit; do not edit it."""

from __future__ import annotations

import dataclasses

import torch

from localstdp.model import MLP
from localstdp.rules.association import make_associations
from localstdp.rules.functional import association_targets, fill_untaught, local_update
from localstdp.rules.fused import apply_local_update_
from localstdp.rules.params import RuleParams


class LegacyLocalRule:
    """Trains every layer of an :class:`MLP` from one forward pass; no error flows backwards."""

    name = "local"

    def __init__(self, model: MLP, params: RuleParams, n_classes: int, seed: int = 0):
        self.model = model
        self.params = params
        self.base_eta = params.eta  # train.lr; set_lr_factor scales it (train.lr_schedule)
        self.n_classes = n_classes
        gen = torch.Generator().manual_seed(int(seed) + 7919)  # association codes, independent of init
        self.associations = make_associations(
            model.widths[1:], n_classes, params.association, params.association_density, gen
        )
        self.pre_means: list[torch.Tensor | None] = [None] * len(model.layers)  # params.center > 0 only
        # per layer: (association map, its (n_classes x n) target table, whether it has untaught NaNs)
        self._target_tables: dict[int, tuple[torch.Tensor, torch.Tensor, bool]] = {}

    def set_lr_factor(self, factor: float) -> None:
        """Scale the learning rate to ``factor`` x train.lr for the following steps (a schedule)."""
        eta = self.base_eta * factor
        if eta != self.params.eta:
            self.params = dataclasses.replace(self.params, eta=eta)

    @torch.no_grad()
    def pre_mean(self, l: int, pre: torch.Tensor) -> torch.Tensor | None:
        """Layer ``l``'s running mean of its presynaptic activity, updated with this batch (the
        covariance rule, ``params.center`` > 0), else None. Each pre neuron's own statistic."""
        c = self.params.center
        if c <= 0:
            return None
        m, batch = self.pre_means[l], pre.mean(0)
        self.pre_means[l] = batch if m is None else m * c + batch * (1 - c)
        return self.pre_means[l]

    def targets(self, l: int, y: torch.Tensor) -> torch.Tensor:
        """Association targets of layer ``l`` (0-based) for labels ``y``.

        Rows of a cached (n_classes x n) table of association_targets: one contiguous gather per
        batch instead of a strided one (the table is rebuilt when the association map is replaced)."""
        A = self.associations[l]
        tables = self._target_tables
        if l not in tables or tables[l][0] is not A:
            classes = torch.arange(A.shape[1], device=A.device)
            table = association_targets(A, classes, self.params.a_hi, self.params.a_lo).contiguous()
            tables[l] = (A, table, bool(torch.isnan(table).any()))
        return tables[l][1].index_select(0, y)

    def taught_targets(self, l: int, y: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        """Targets with untaught entries (NaN, pairs codes) set to the neuron's own activity, so its
        error is zero; maps without untaught entries skip the NaN scan (a sync per layer per step)."""
        target = self.targets(l, y)
        return fill_untaught(target, post) if self._target_tables[l][2] else target

    def layer_update(self, l: int, pre: torch.Tensor, post: torch.Tensor, y: torch.Tensor, reduction: str = "mean"):
        """(dW, db) of layer ``l`` from its own pre/post activity and the broadcast label only."""
        m = self.pre_mean(l, pre)
        dW, db = local_update(pre, post, self.taught_targets(l, y, post), self.params, reduction, pre_mean=m)
        return self._masked(l, dW, db, m)

    def _masked(self, l: int, dW: torch.Tensor, db: torch.Tensor, pre_mean: torch.Tensor | None):
        """Fixed connectivity (``model.in_mask``, first layer only): absent synapses do not change,
        and the covariance rule's bias term -dW m counts only the synapses that exist."""
        mask = self.model.in_mask if l == 0 else None
        if mask is None:
            return dW, db
        kept = dW * mask
        return kept, db if pre_mean is None else db + (dW - kept) @ pre_mean

    @torch.no_grad()
    def decay_layer(self, l: int) -> None:
        """rule.weight_decay: every synapse of layer ``l`` shrinks by its own value, W *= 1 - eta wd."""
        wd = self.params.weight_decay
        if wd > 0:
            self.model.layers[l].weight.mul_(1.0 - self.params.eta * wd)

    @torch.no_grad()
    def apply_layer(self, l: int, dW: torch.Tensor, db: torch.Tensor) -> None:
        """Decay (rule.weight_decay), then W += dW, b += db: every path that changes a layer ends here
        or in learn_layer, which does the same."""
        layer = self.model.layers[l]
        self.decay_layer(l)
        layer.weight.add_(dW)
        layer.bias.add_(db)

    @torch.no_grad()
    def learn_layer(self, l: int, pre: torch.Tensor, post: torch.Tensor, y: torch.Tensor) -> None:
        """Layer ``l``'s update applied in place (no weight-sized dW: rules/fused.py). ``step`` runs
        exactly this per layer, so a pipeline stage calling it reproduces ``step`` bit for bit."""
        layer = self.model.layers[l]
        if l == 0 and self.model.in_mask is not None:
            self.apply_layer(l, *self.layer_update(l, pre, post, y))  # fixed connectivity: masked dW
            return
        target = self.taught_targets(l, y, post)  # NaN: not taught on this label (pairs codes)
        self.decay_layer(l)
        apply_local_update_(layer.weight, layer.bias, pre, post, target, self.params, self.pre_mean(l, pre))

    @torch.no_grad()
    def updates(self, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean"):
        """Every layer's (dW, db) from ONE forward pass, and the activities it used."""
        acts = self.model.activities(x)
        return [self.layer_update(l, acts[l], acts[l + 1], y, reduction) for l in range(len(acts) - 1)], acts

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One update of all layers at once; returns the output layer's mean squared target error."""
        acts = self.model.activities(x)
        for l in range(len(self.model.layers)):
            self.learn_layer(l, acts[l], acts[l + 1], y)
        return float(((self.targets(len(acts) - 2, y) - acts[-1]) ** 2).mean())

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"rule.association.{l}": A for l, A in enumerate(self.associations)}
        return out | {f"rule.pre_mean.{l}": m for l, m in enumerate(self.pre_means) if m is not None}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for l in range(len(self.associations)):
            A = tensors.get(f"rule.association.{l}")
            if A is None or A.shape != self.associations[l].shape:
                raise ValueError(f"checkpoint lacks association map {l} of shape {tuple(self.associations[l].shape)}")
            self.associations[l] = A.clone()
        for l in range(len(self.pre_means)):
            m = tensors.get(f"rule.pre_mean.{l}")
            self.pre_means[l] = None if m is None else m.clone()
