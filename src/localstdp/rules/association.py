"""Association maps: which classes each neuron of a layer is associated with.

An association matrix A has shape (n_neurons, n_classes) with entries in {0, 1}; the teaching
target of neuron j for label y is a_hi if A[j, y] else a_lo. In the output layer neuron k is
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


def make_associations(
    widths: list[int], n_classes: int, kind: str, density: float, generator: torch.Generator
) -> list[torch.Tensor]:
    """One association matrix per layer (hidden layers by ``kind``, the output layer the identity)."""
    maps = []
    for w in widths[:-1]:
        if kind == "onehot":
            maps.append(balanced_onehot(w, n_classes))
        elif kind == "random":
            maps.append(random_codes(w, n_classes, density, generator))
        else:
            raise ValueError(f"unknown association {kind!r}")
    if widths[-1] != n_classes:
        raise ValueError(f"output layer has {widths[-1]} neurons for {n_classes} classes")
    maps.append(torch.eye(n_classes))
    return maps
