"""The Forward-Forward algorithm (Hinton 2022, "The Forward-Forward algorithm: some preliminary
investigations", arXiv:2212.13345; supervised variant, section 3.3).

Each hidden layer l has its own objective on its own activity and learns from it alone:

    input:      x with its first K features replaced by the one-hot label (Hinton's MNIST
                embedding); positive = the true label, negative = a wrong label
                y- = (y + r) mod K, r uniform in {1, ..., K-1} from the learner's seeded generator
    layer:      a^l = sigmoid(W^l u^(l-1) + b^l),  u^0 = embedded x,
                u^l = a^l / rms(a^l)   (length-normalised input to the next layer, detached in
                training, so only the direction of a^l, not its goodness, is passed on)
    goodness:   G^l = sum_j (a^l_j)^2
    objective:  p(positive) = sigmoid(G^l - theta_l),  theta_l = ff_threshold * n_l,
                loss^l = softplus(theta_l - G^l(pos)) + softplus(G^l(neg) - theta_l)
    prediction: argmax_k sum_l G^l(x with label k embedded), over every hidden layer

Choices for the sigmoid MLP (Hinton uses ReLU units and theta = n_l): goodness is the sum of
squared sigmoid activities, in (0, n_l), with the threshold per unit in (0, 1) (0.25 = units at
a = 0.5); the next layer's input is normalised to unit RMS (length sqrt(n_l) instead of Hinton's
length 1, a constant factor that keeps its scale that of a [0, 1] pixel for the shared
initialisation); the goodness of every hidden layer counts (Hinton leaves out the first hidden
layer of his deeper nets). The MLP's output layer takes no part: it is not trained and
``model(x)`` is NOT ff's prediction; :class:`FFScorer` is (per-class goodness, differentiable,
for attacks through torch.autograd). Each layer's gradient is taken by autograd through that
layer alone. Forward-only, no feedback pathway.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as nnf

from ...model import MLP
from .base import PeerLearner, onehot

RMS_EPS = 1e-12


def embed_label(x: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``x`` (flattened) with features 0..K-1 replaced by the one-hot ``labels`` (value 1)."""
    x = x.flatten(1)
    if x.shape[1] <= n_classes:
        raise ValueError(f"ff embeds the label in the first {n_classes} input features: needs more than "
                         f"{n_classes} features, got {x.shape[1]}")
    return torch.cat([onehot(labels, n_classes, x), x[:, n_classes:]], 1)


def negative_labels(y: torch.Tensor, n_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A wrong label per example: (y + r) mod K with r uniform in {1, ..., K-1}."""
    r = torch.randint(1, n_classes, (len(y),), generator=generator)
    return (y + r.to(y.device)) % n_classes


def rms_normalise(a: torch.Tensor) -> torch.Tensor:
    return a / torch.sqrt((a * a).mean(1, keepdim=True) + RMS_EPS)


def goodness(layers, f, u: torch.Tensor, detach: bool = False) -> list[torch.Tensor]:
    """G^l = sum_j (a^l_j)^2 of every hidden layer (per example) for the embedded input ``u``;
    ``detach``: each layer sees its input as a constant (training: a layer learns from itself)."""
    out = []
    for layer in layers[:-1]:
        a = f(layer(u.detach() if detach else u))
        out.append((a * a).sum(1))
        u = rms_normalise(a)
    return out


def ff_losses(g_pos: list[torch.Tensor], g_neg: list[torch.Tensor], widths: list[int], threshold: float):
    """loss^l = softplus(theta_l - G^l(pos)) + softplus(G^l(neg) - theta_l), theta_l = threshold * n_l,
    per example, of every hidden layer (``widths``: their unit counts)."""
    return [nnf.softplus(threshold * n - gp) + nnf.softplus(gn - threshold * n) for gp, gn, n in zip(g_pos, g_neg, widths)]


class FFScorer(nn.Module):
    """ff's classifier as an ordinary module: ``forward(x)`` is the (B, K) total goodness of x
    with each label embedded, differentiable in x by autograd; ``predict`` is its argmax.

    It shares the MLP's ``layers`` (the same ModuleList: its state_dict has the MLP's keys, so
    the MLP's saved states load into it) and has the MLP's ``widths``. It is not an MLP: the
    activation is ``act``, not ``f``, so localstdp.robustness.bounds (which would bound the MLP's logits, not
    the goodness) refuses it."""

    def __init__(self, model: MLP):
        super().__init__()
        self.layers = model.layers
        self.widths = list(model.widths)
        self.act = model.f
        self.n_classes = model.widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K) total goodness. The first layer is affine and the embedding sets features 0..K-1
        to the one-hot label, so its pre-activation with label k is W[:, K:] x[K:] + b + W[:, k]:
        one matmul serves every label (the definition, one full pass per label, is
        :meth:`forward_per_label`; equal up to float rounding, gradients included)."""
        x = x.flatten(1)
        first, K = self.layers[0], self.n_classes
        if not isinstance(first, nn.Linear):
            return self.forward_per_label(x)
        h = nnf.linear(x[:, K:], first.weight[:, K:], first.bias)  # (B, n1): the label-free part, once
        a = self.act(h.unsqueeze(1) + first.weight[:, :K].T.unsqueeze(0))  # (B, K, n1): label k adds W[:, k]
        total = (a * a).sum(2)
        for g in goodness(self.layers[1:], self.act, rms_normalise(a.reshape(-1, a.shape[2]))):
            total = total + g.view(-1, K)
        return total

    def forward_per_label(self, x: torch.Tensor) -> torch.Tensor:
        """The definition: for each label k, x with k embedded through every hidden layer."""
        x = x.flatten(1)
        scores = []
        for k in range(self.n_classes):
            labels = torch.full((len(x),), k, dtype=torch.long, device=x.device)
            scores.append(torch.stack(goodness(self.layers, self.act, embed_label(x, labels, self.n_classes))).sum(0))
        return torch.stack(scores, 1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        return torch.cat([self(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


class ForwardForward(PeerLearner):
    name = "ff"
    forward_only = True

    def __init__(self, model, params, n_classes: int, seed: int = 0):
        super().__init__(model, params, n_classes, seed)
        if n_classes < 2 or model.widths[0] <= n_classes:
            raise ValueError(f"ff needs >= 2 classes and more than {n_classes} input features, got widths {model.widths}")
        self.scorer = FFScorer(model)

    def trained_parameters(self) -> list[nn.Parameter]:
        """The hidden layers only: ff's objective never involves the output layer."""
        return [p for layer in self.model.layers[:-1] for p in layer.parameters()]

    def predict_module(self) -> FFScorer:
        """The module whose argmax is ff's prediction (what to evaluate and attack)."""
        return self.scorer

    def layer_losses(self, x: torch.Tensor, y: torch.Tensor, y_neg: torch.Tensor) -> list[torch.Tensor]:
        """loss^l per example of every hidden layer for positive labels y, negative y_neg."""
        K, f, layers = self.n_classes, self.model.f, self.model.layers
        g_pos = goodness(layers, f, embed_label(x, y, K), detach=True)
        g_neg = goodness(layers, f, embed_label(x, y_neg, K), detach=True)
        return ff_losses(g_pos, g_neg, self.model.widths[1:], self.params.ff_threshold)

    def accumulate(self, x, y, scale, rows=None) -> float:
        y_neg = negative_labels(y, self.n_classes, self.gen)  # for the whole batch, then the shard
        if rows is not None:
            x, y, y_neg = x[rows], y[rows], y_neg[rows]
        with torch.enable_grad():
            losses = self.layer_losses(x, y, y_neg)
            total = torch.stack(losses).sum()
            (total * scale).backward()
        return float(total.detach()) / len(losses)
