"""Feedback alignment (Lillicrap, Cownden, Tweed & Akerman 2016, "Random synaptic feedback weights
support error backpropagation for deep learning", Nature Communications 7:13276).

Backprop with the transposed forward weights replaced by fixed random matrices B:

    delta^L = e = softmax(z^L) - onehot(y)                 (cross-entropy error at the logits)
    delta^l = (B^(l+1) delta^(l+1)) * f'(z^l),  l < L      (backprop: W^(l+1)^T instead of B^(l+1))
    dW^l = delta^l a^(l-1)^T,  db^l = delta^l               (W <- W - lr dW under plain SGD)

B^(l+1) has the shape of W^(l+1)^T, (n_l, n_(l+1)). The error still travels backwards layer by
layer: the rule needs a feedback pathway. Implemented as an autograd Function whose backward
uses B, so with B^(l+1) = W^(l+1)^T the update is backprop's, bit for bit (tests/test_peers.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import PeerLearner


class _FeedbackLinear(torch.autograd.Function):
    """z = a W^T + b forward; backward sends the error to the input through B (n_in, n_out)."""

    @staticmethod
    def forward(ctx, a, W, b, B):
        ctx.save_for_backward(a, B)
        return F.linear(a, W, b)

    @staticmethod
    def backward(ctx, g):
        a, B = ctx.saved_tensors
        need = ctx.needs_input_grad
        return (g.mm(B.t()) if need[0] else None, g.t().mm(a) if need[1] else None,
                g.sum(0) if need[2] else None, None)


class FeedbackAlignment(PeerLearner):
    name = "fa"
    forward_only = False

    def __init__(self, model, params, n_classes: int, seed: int = 0):
        super().__init__(model, params, n_classes, seed)
        for l in range(1, len(model.layers)):  # layer 0 sends nothing further back
            W = model.layers[l].weight
            self.feedback_matrix(f"B{l}", W.shape[1], W.shape[0])

    def B(self, l: int) -> torch.Tensor:
        """B^l (n_(l-1), n_l): what carries layer l's error back to layer l-1 (0-based l >= 1)."""
        return self.fixed[f"B{l}"]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """z^L by the ordinary forward, with B in place of W^T in the backward graph."""
        a = x.flatten(1)
        layers = self.model.layers
        for l, layer in enumerate(layers):
            z = layer(a) if l == 0 else _FeedbackLinear.apply(a, layer.weight, layer.bias, self.B(l))
            a = self.model.f(z) if l < len(layers) - 1 else z
        return a

    def accumulate(self, x, y, scale, rows=None) -> float:
        if rows is not None:
            x, y = x[rows], y[rows]
        with torch.enable_grad():
            loss = F.cross_entropy(self.logits(x), y, reduction="sum")
            (loss * scale).backward()
        return float(loss.detach())
