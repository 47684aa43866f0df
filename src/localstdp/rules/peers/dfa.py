"""Direct feedback alignment (Nøkland 2016, "Direct feedback alignment provides learning in deep
neural networks", NeurIPS 29).

The output error reaches every hidden layer directly, through one fixed random matrix each:

    e = softmax(z^L) - onehot(y)
    delta^L = e
    delta^l = (B^l e) * f'(z^l),  l < L,   B^l: (n_l, n_L) fixed random
    dW^l = delta^l a^(l-1)^T,  db^l = delta^l   (W <- W - lr dW under plain SGD)

Every hidden layer waits for the output error of the whole forward pass: the rule needs a
(direct) feedback pathway from the output to each layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import PeerLearner, add_grad, forward_all, output_error, sigmoid_prime


def projected_deltas(posts: list[torch.Tensor], s: torch.Tensor, Bs: list[torch.Tensor]) -> list[torch.Tensor]:
    """delta^l = (B^l s) * f'(z^l) of every hidden layer (per example), from its own sigmoid activity
    ``posts[l]`` and the projected signal ``s`` (dfa: the output error; drtp: the one-hot target)."""
    return [s.mm(B.t()) * sigmoid_prime(a) for a, B in zip(posts, Bs)]


class DirectFeedbackAlignment(PeerLearner):
    name = "dfa"
    forward_only = False

    def __init__(self, model, params, n_classes: int, seed: int = 0):
        super().__init__(model, params, n_classes, seed)
        for l in range(len(model.layers) - 1):
            self.feedback_matrix(f"B{l}", model.widths[l + 1], model.widths[-1])

    def B(self, l: int) -> torch.Tensor:
        """B^l (n_l, n_L) of hidden layer ``l`` (0-based)."""
        return self.fixed[f"B{l}"]

    def signal(self, e: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What each hidden layer's B projects: the output error e (DRTP: the one-hot target)."""
        return e

    def hidden_deltas(self, acts: list[torch.Tensor], s: torch.Tensor) -> list[torch.Tensor]:
        """delta^l = (B^l s) * f'(z^l) of every hidden layer (per example) from its own activity."""
        return projected_deltas(acts[1:], s, [self.B(l) for l in range(len(acts) - 1)])

    @torch.no_grad()
    def accumulate(self, x, y, scale, rows=None) -> float:
        if rows is not None:
            x, y = x[rows], y[rows]
        acts, z = forward_all(self.model, x)
        e = output_error(z, y)
        deltas = [*self.hidden_deltas(acts, self.signal(e, y)), e]
        for layer, delta, pre in zip(self.model.layers, deltas, acts):
            add_grad(layer.weight, delta.t().mm(pre) * scale)
            add_grad(layer.bias, delta.sum(0) * scale)
        return float(F.cross_entropy(z, y, reduction="sum"))
