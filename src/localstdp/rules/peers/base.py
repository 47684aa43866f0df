"""What the peer rules share: the optimiser that applies a rule's update direction, fixed random
matrices drawn from the seed, and checkpointing of both.

A peer learner's ``accumulate(x, y, scale, rows)`` adds ``scale`` x the batch SUM of the rule's
per-example update direction g to every trained parameter's ``.grad`` (W <- W - lr g under plain
SGD) and returns the batch's summed loss. ``step`` is zero_grad, accumulate with scale 1/B, and one
optimiser step; ``--parallel data`` runs accumulate on each rank's shard, sums the ``.grad``s
with all_reduce and takes the same optimiser step on every rank (localstdp.parallel).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ... import checks
from ...model import MLP
from .params import PeerParams

FIXED_SALT = 15485863  # the fixed matrices' generator: its own stream, independent of init and shuffling


def sigmoid_prime(a: torch.Tensor) -> torch.Tensor:
    """f'(z) of the sigmoid from its output a = f(z)."""
    return a * (1.0 - a)


def onehot(y: torch.Tensor, n_classes: int, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros(len(y), n_classes, dtype=like.dtype, device=like.device).scatter_(1, y.view(-1, 1), 1.0)


def forward_all(model: MLP, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """[a^0 = x, a^1, ..., a^(L-1)] (hidden sigmoid activities) and the logits z^L."""
    acts = [x.flatten(1)]
    for layer in model.layers[:-1]:
        acts.append(model.f(layer(acts[-1])))
    return acts, model.layers[-1](acts[-1])


def output_error(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """e = softmax(z^L) - onehot(y): the cross-entropy error at the logits, per example."""
    return torch.softmax(z, 1) - onehot(y, z.shape[1], z)


def add_grad(p: torch.Tensor, g: torch.Tensor) -> None:
    if p.grad is None:
        p.grad = g.detach().clone()
    else:
        p.grad.add_(g)


def make_optimizer(parameters, p: PeerParams) -> torch.optim.Optimizer:
    if p.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=p.lr, weight_decay=p.weight_decay)
    return torch.optim.SGD(parameters, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)


class PeerLearner:
    """Base of the peer learners: same interface as :class:`localstdp.rules.Backprop`."""

    name = "peer"
    forward_only = False  # True: no feedback pathway (no signal travels from a layer to an earlier one)

    def __init__(self, model: MLP, params: PeerParams, n_classes: int, seed: int = 0):
        self.check_model(model)
        self.model = model
        self.device = next(model.parameters()).device
        self.params = params
        self.n_classes = n_classes
        self.gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + FIXED_SALT)
        self.fixed: dict[str, torch.Tensor] = {}  # fixed random matrices, by name (checkpointed)
        self.optimizer = make_optimizer(self.trained_parameters(), params)

    def check_model(self, model) -> None:
        """The package MLP with sigmoid units (a user's model: localstdp.rules.peers.models)."""
        if model.activation != "sigmoid":
            raise ValueError(f"{self.name}: only the sigmoid MLP is supported, got {model.activation!r}")

    # -- what subclasses provide ------------------------------------------------------------
    def trained_parameters(self) -> list[nn.Parameter]:
        """The parameters this rule changes (default: every layer's weight and bias)."""
        return list(self.model.parameters())

    def accumulate(self, x: torch.Tensor, y: torch.Tensor, scale: float, rows: torch.Tensor | None = None) -> float:
        """Add ``scale`` x the summed update direction of examples ``rows`` (all when None) of the
        batch (x, y) to ``.grad``; return their summed loss. Batch-level randomness (ff's negative
        labels) is drawn for the whole batch first, so shards of a batch see what one process sees."""
        raise NotImplementedError

    # -- shared machinery -------------------------------------------------------------------
    def random_matrix(self, name: str, shape: tuple[int, ...], bound: float) -> torch.Tensor:
        """A fixed U(-bound, bound) matrix from the learner's own (CPU) generator, kept under ``name``
        on the model's device (the same numbers on every device)."""
        t = ((torch.rand(shape, generator=self.gen) * 2.0 - 1.0) * bound).to(self.device)
        self.fixed[name] = t
        return t

    def feedback_matrix(self, name: str, n_rows: int, n_signal: int) -> torch.Tensor:
        """(n_rows, n_signal) feedback matrix carrying an ``n_signal``-dimensional signal:
        U(-s/sqrt(n_signal), s/sqrt(n_signal)), s = feedback_scale (nn.Linear's init for that map)."""
        return self.random_matrix(name, (n_rows, n_signal), self.params.feedback_scale / math.sqrt(n_signal))

    def set_lr_factor(self, factor: float) -> None:
        """Scale the optimiser's learning rate to ``factor`` x peers.lr (train.lr_schedule)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.params.lr * factor

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def apply(self) -> None:
        """One optimiser step on the accumulated ``.grad``, then the fixed connectivity."""
        self.optimizer.step()
        self.model.keep_connectivity_()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One update from the batch (x, y); returns the batch's mean loss."""
        y = checks.package_batch(self.model, x, y, self.n_classes)
        self.zero_grad()
        loss = self.accumulate(x, y, 1.0 / len(y))
        self.apply()
        return loss / len(y)

    def flat_grad(self) -> torch.Tensor:
        """Every trained parameter's ``.grad`` (zeros where none) as one vector (data parallel)."""
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in self.trained_parameters()])

    def set_flat_grad(self, flat: torch.Tensor) -> None:
        o = 0
        for p in self.trained_parameters():
            p.grad = flat[o : o + p.numel()].view_as(p).clone()
            o += p.numel()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Fixed matrices, the generator and the optimiser state as named tensors (safetensors)."""
        out = {f"peer.fixed.{k}": v for k, v in self.fixed.items()}
        out["peer.rng"] = self.gen.get_state()
        for idx, state in self.optimizer.state_dict()["state"].items():
            for key, value in state.items():
                out[f"optim.{idx}.{key}"] = torch.as_tensor(value).clone()
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for k, v in self.fixed.items():
            t = tensors.get(f"peer.fixed.{k}")
            if t is None or t.shape != v.shape:
                raise ValueError(f"checkpoint lacks the fixed matrix {k} of shape {tuple(v.shape)}")
            self.fixed[k] = t.to(self.device, copy=True)
        rng = tensors.get("peer.rng")
        if rng is None:
            raise ValueError("checkpoint lacks the peer rule's generator state (peer.rng)")
        self.gen.set_state(rng.clone())
        sd = self.optimizer.state_dict()
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            if name.startswith("optim."):
                _, idx, key = name.split(".", 2)
                state.setdefault(int(idx), {})[key] = value.clone()
        sd["state"] = state
        self.optimizer.load_state_dict(sd)
