"""Association maps: which classes each neuron of a layer is associated with.

An association matrix A has shape (n_neurons, n_classes) with entries in {0, 1} or NaN; the
teaching target of neuron j for label y is a_hi if A[j, y] == 1, a_lo if A[j, y] == 0, and its own
activity (no teaching, no update) if A[j, y] is NaN. In the output layer neuron k is
always associated with class k alone, so the prediction argmax(a^L) reads the label.
"""

from __future__ import annotations

import torch


def balanced_onehot(n_neurons: int, n_classes: int) -> torch.Tensor:
    """Neuron j is associated with class j mod K: every class gets floor or ceil of n/K neurons."""
    if n_neurons < 1 or n_classes < 2:
        raise ValueError(f"need n_neurons >= 1 and n_classes >= 2, got {n_neurons}, {n_classes}")
    A = torch.zeros(n_neurons, n_classes)
    A[torch.arange(n_neurons), torch.arange(n_neurons) % n_classes] = 1.0
    return A


def random_codes(n_neurons: int, n_classes: int, density: float, generator: torch.Generator) -> torch.Tensor:
    """Each neuron is associated with a random subset of the classes (each with prob. ``density``).

    Neurons whose code would be all-0 or all-1 carry no label information; they are redrawn as a
    single random class (all-0) or all classes but one (all-1), so every neuron is informative.
    """
    if n_neurons < 1 or n_classes < 2:
        raise ValueError(f"need n_neurons >= 1 and n_classes >= 2, got {n_neurons}, {n_classes}")
    A = (torch.rand(n_neurons, n_classes, generator=generator) < density).float()
    row = A.sum(1)
    pick = torch.randint(0, n_classes, (n_neurons,), generator=generator)
    for bad, fill in ((row == 0, 1.0), (row == n_classes, 0.0)):
        idx = bad.nonzero().flatten()
        A[idx, pick[idx]] = fill
    return A


def pairwise_codes(n_neurons: int, n_classes: int) -> torch.Tensor:
    """One-vs-one codes: neuron j is taught on one pair of classes (a, b), a < b, the pairs taken
    in order and cycled (j mod K(K-1)/2). A[j, a] = 1 (target a_hi), A[j, b] = 0 (target a_lo),
    every other class NaN: the neuron is not taught on it (its target is its own activity, so
    the error, and the update, is zero). Pairwise dichotomies are far more often linearly
    separable than one-vs-rest ones, so a layer of them gives the next layer usable votes.
    """
    if n_neurons < 1 or n_classes < 2:
        raise ValueError(f"need n_neurons >= 1 and n_classes >= 2, got {n_neurons}, {n_classes}")
    pairs = [(a, b) for a in range(n_classes) for b in range(a + 1, n_classes)]
    A = torch.full((n_neurons, n_classes), float("nan"))
    for j in range(n_neurons):
        a, b = pairs[j % len(pairs)]
        A[j, a], A[j, b] = 1.0, 0.0
    return A


def make_associations(
    widths: list[int], n_classes: int, kind: str, density: float, generator: torch.Generator
) -> list[torch.Tensor]:
    """One association matrix per layer (hidden layers by ``kind``, the output layer the identity).

    ``kind`` "pairs": the first hidden layer gets :func:`pairwise_codes`, deeper hidden layers the
    balanced one-hot map (they learn to count the pairwise votes).
    """
    maps = []
    for l, w in enumerate(widths[:-1]):
        if kind == "pairs":
            maps.append(pairwise_codes(w, n_classes) if l == 0 else balanced_onehot(w, n_classes))
        elif kind == "onehot":
            maps.append(balanced_onehot(w, n_classes))
        elif kind == "random":
            maps.append(random_codes(w, n_classes, density, generator))
        else:
            raise ValueError(f"unknown association {kind!r}")
    if widths[-1] != n_classes:
        raise ValueError(f"output layer has {widths[-1]} neurons for {n_classes} classes")
    maps.append(torch.eye(n_classes))
    return maps
