"""Direct random target projection (Frenkel, Lefebvre & Bol 2021, "Learning without feedback:
fixed random learning signals allow for feedforward training of deep neural networks",
Frontiers in Neuroscience 15:629892).

DFA with the output error replaced by the one-hot target y* (for classification the sign of the
error is known in advance: e_k < 0 for the label, > 0 for the others). Each hidden layer's
learning signal is a fixed random projection of the label alone:

    delta^l = (B^l y*) * f'(z^l),  l < L,   B^l: (n_l, n_L) fixed random
    dW^l = delta^l a^(l-1)^T,  db^l = delta^l   (W <- W - lr dW under plain SGD, as in the
                                                 paper's code: the projected target enters
                                                 where DFA's projected error does)
    output layer: its own error, delta^L = softmax(z^L) - y*

No hidden layer's update depends on any later layer (not even the output): each layer can
update as soon as its own forward step is done. Forward-only, no feedback pathway.
"""

from __future__ import annotations

import torch

from .base import onehot
from .dfa import DirectFeedbackAlignment


class DirectRandomTargetProjection(DirectFeedbackAlignment):
    name = "drtp"
    forward_only = True

    def signal(self, e: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return onehot(y, self.n_classes, e)

    @torch.no_grad()
    def hidden_targets(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """Every hidden layer's delta^l (per example): the forward pass up to the last hidden
        layer and the label, nothing else (the output layer is not even evaluated)."""
        acts = [x.flatten(1)]
        for layer in self.model.layers[:-1]:
            acts.append(self.model.f(layer(acts[-1])))
        return self.hidden_deltas(acts, onehot(y, self.n_classes, acts[0]))
