"""PEPITA, "Present the Error to Perturb the Input To modulate Activity" (Dellaferrera & Kreiman
2022, "Error-driven input modulation: solving the credit assignment problem without a backward
pass", ICML, PMLR 162:4937-4955; Algorithm 1).

Two forward passes through the same weights, the second on the input modulated by the error
of the first; every update is a difference of the two passes' activities:

    standard pass:   h^0 = x,           h^l = f(W^l h^(l-1) + b^l),  h^L = softmax(z^L)
                     e = h^L - onehot(y)
    modulated pass:  h~^0 = x + F e,    h~^l = f(W^l h~^(l-1) + b^l)  (F: (n_in, n_L) fixed random)
    first layer:     dW^1 = (h^1 - h~^1) (h~^0)^T
    hidden l < L:    dW^l = (h^l - h~^l) (h~^(l-1))^T
    output layer:    dW^L = e (h~^(L-1))^T
    biases:          db^l = h^l - h~^l,  db^L = e        (W <- W - lr dW under plain SGD)

F = input_scale * U(-sqrt(6/n_in), sqrt(6/n_in)), input_scale = 0.05 as in the paper. No signal
travels from a layer to an earlier one except through the input itself: forward-only.
Deviations from the paper: the package's MLP has biases (the paper's networks have none), which
learn from the same differences; the hidden units are sigmoid (the paper's are ReLU); the paper's
dropout and learning-rate decay are left to the shared training loop (train.lr_schedule).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as nnf

from .base import PeerLearner, add_grad, forward_all, output_error


def pepita_updates(posts, mod_pres, mod_posts, e):
    """Per-layer (dW, db) summed over the batch: hidden layer l, (h^l - h~^l) (h~^(l-1))^T from its
    activity in the two passes (``posts``, ``mod_posts``) and its input in the modulated one
    (``mod_pres``); the output layer, e (h~^(L-1))^T with ``mod_pres[-1]`` its modulated input."""
    out = []
    for a, a_mod, pre_mod in zip(posts, mod_posts, mod_pres):
        diff = a - a_mod
        out.append((diff.t().mm(pre_mod), diff.sum(0)))
    out.append((e.t().mm(mod_pres[-1]), e.sum(0)))
    return out


class PEPITA(PeerLearner):
    name = "pepita"
    forward_only = True

    def __init__(self, model, params, n_classes: int, seed: int = 0):
        super().__init__(model, params, n_classes, seed)
        n_in = model.widths[0]
        self.random_matrix("F", (n_in, model.widths[-1]), params.input_scale * math.sqrt(6.0 / n_in))

    @property
    def F(self) -> torch.Tensor:
        return self.fixed["F"]

    @torch.no_grad()
    def updates(self, x: torch.Tensor, y: torch.Tensor):
        """Per-layer (dW, db) summed over the batch, and the first pass's logits."""
        acts, z = forward_all(self.model, x)
        e = output_error(z, y)
        mod, _ = forward_all(self.model, acts[0] + e.mm(self.F.t()))
        return pepita_updates(acts[1:], mod, mod[1:], e), z

    @torch.no_grad()
    def accumulate(self, x, y, scale, rows=None) -> float:
        if rows is not None:
            x, y = x[rows], y[rows]
        ups, z = self.updates(x, y)
        for layer, (dW, db) in zip(self.model.layers, ups):
            add_grad(layer.weight, dW * scale)
            add_grad(layer.bias, db * scale)
        return float(nnf.cross_entropy(z, y, reduction="sum"))
