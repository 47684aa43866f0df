"""Conv teaching "readout": each conv layer taught through a fixed random local readout of its own map.

Pooled teaching (the default) asks every channel to be, on average over the image, more active on its
associated classes: a layer with fewer channels than classes cannot give every class a channel, and a
channel cannot use WHERE it fires. Here a conv layer l with activity a (batch, C, H', W') instead gets
its own fixed random readout R_l (K x C H' W', entries N(0, 1 / (C H' W')), drawn from the learner's
seed and the layer's index, never trained), and is taught to make the label linearly decodable from
its whole map through R_l:

    L_l = cross-entropy(softmax(R_l vec(a)), y),   e = -dL_l/dz = (R_l^T (onehot(y) - softmax(R_l a))) * a (1 - a)

(z the layer's output, a = sigmoid(z)). The layer then changes by the rule's conv update with that
error in place of d - a: dW = eta <sum_p e[o, p] x_p^T> (local_conv_update, centring included). This
is the "local error signal" of Mostafa et al. (Front. Neurosci. 2018: fixed random classifiers per
layer) in the rule's terms. Nothing reaches a layer from the layers above it; unlike the association
targets, a unit's teaching signal depends on its own layer's activity (through the softmax), i.e.
on the population it belongs to, not on the unit alone. Measured: docs/ablation.md, "Deep conv stacks".

(Not to be confused with rules/shallow.py, the linear / random-features baselines.)
"""

from __future__ import annotations

import math

import torch

SALT = 3571


def readout_matrix(seed: int, layer: int, n_classes: int, size: int, dtype: torch.dtype,
                   device: torch.device) -> torch.Tensor:
    """Layer ``layer``'s fixed readout (n_classes x size), the same for the same (seed, layer, size)."""
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + SALT + int(layer))
    R = torch.randn(n_classes, size, generator=gen, dtype=torch.float64) / math.sqrt(size)
    return R.to(dtype=dtype, device=device)


@torch.no_grad()
def readout_conv_error(post: torch.Tensor, y: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """e = -dL/dz of the readout loss above (post = sigmoid(z), shape (batch, C, H', W')), the shape of
    post; a teaching signal, computed without autograd."""
    a = post.flatten(1)
    g = -torch.softmax(a @ R.T, dim=1)
    g[torch.arange(len(y), device=g.device), y] += 1.0
    gR = g @ R  # then (g R) (1 - a) a in one pass, in place (autograd's own op):
    return torch.ops.aten.sigmoid_backward.grad_input(gR, a, grad_input=gR).view_as(post)


def readout_conv_target(post: torch.Tensor, y: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """post + e (:func:`readout_conv_error`): the per-position target of the unfold form."""
    return post + readout_conv_error(post, y, R)
