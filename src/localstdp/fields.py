"""Receptive fields as what they are: a banded (block-sparse) first layer instead of a masked dense one.

A first-layer neuron with an S x S field (``model.receptive_field``) reads S * S of the n = w * w
inputs; the masked dense layer multiplies all n. The field of a neuron whose patch starts on image
row r0 lies inside the S image rows r0 .. r0 + S - 1, i.e. inside the CONTIGUOUS input range
[r0 w, (r0 + S) w). Grouping the neurons by r0 makes the layer block-sparse: per group one GEMM of
the group's rows with that band of S w inputs (S w / n of the dense work: 280 / 784 for S = 10 on
28 x 28), weights read from and written to the dense weight (so checkpoints, attacks and every other
reader of ``model.layers[0]`` see the ordinary nn.Linear).

- :func:`field_bands`: the groups of a mask.
- :func:`banded_linear`: z = x W^T + b by bands, with an autograd backward (x's gradient and W's,
  the latter zero outside the bands), so backprop trains the same banded layer.
- :func:`banded_rate_update_`: the local rule's rate-mode update of the layer (covariance rule
  and mask included) by bands.

Equal to the dense masked form within float rounding (tests/test_fused.py), not bit for bit (the
GEMMs sum in another order); W's gradient is zero outside the bands (inside a band but outside a
field it is the dense one; backprop's W *= mask after each step removes it, as for the dense layer).
Not used by the learners: ``localstdp bench --configs`` measures both forms on every shipped
receptive-field shape (BENCHMARKS.md, "Receptive fields"), and with the weight kept in the dense
nn.Linear layout the banded form's row gathers and scatters cost more than the 2.8x of GEMM work it
saves at the shipped batch size (32); a band-major parameter layout would change checkpoints and
every recorded result, so it is left as measured, not switched on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Band:
    """Neurons ``rows`` (indices into the layer's outputs) read only inputs [start, stop)."""

    rows: torch.Tensor
    start: int
    stop: int


def field_bands(mask: torch.Tensor) -> list[Band]:
    """The row bands of a receptive-field mask (n_out, w * w): neurons grouped by the first image row
    their field touches; each group's band spans the image rows up to the last row any of its fields
    touches (S rows for square S x S fields)."""
    n_out, n_in = mask.shape
    w = math.isqrt(n_in)
    if w * w != n_in:
        raise ValueError(f"receptive fields need a square input image, got {n_in} features")
    present = mask != 0
    cols = torch.arange(n_in, device=mask.device).expand(n_out, n_in)
    first = torch.where(present, cols, n_in).amin(1)
    last = torch.where(present, cols, -1).amax(1)
    if (last < 0).any():
        raise ValueError("a neuron without any input in the mask")
    r_first, r_last = first // w, last // w
    bands = []
    for r in r_first.unique().tolist():
        rows = (r_first == r).nonzero().flatten()
        bands.append(Band(rows, int(r) * w, (int(r_last[rows].max()) + 1) * w))
    return bands


class _BandedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, bands):
        ctx.save_for_backward(x, weight)
        ctx.bands = bands
        z = x.new_empty(x.shape[0], weight.shape[0])
        for band in bands:
            W = weight.index_select(0, band.rows)[:, band.start : band.stop]
            z.index_copy_(1, band.rows, torch.addmm(bias.index_select(0, band.rows), x[:, band.start : band.stop], W.T))
        return z

    @staticmethod
    def backward(ctx, grad_z):
        x, weight = ctx.saved_tensors
        gx = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        gW = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        for band in ctx.bands:
            g = grad_z.index_select(1, band.rows)
            if gx is not None:
                W = weight.index_select(0, band.rows)[:, band.start : band.stop]
                gx[:, band.start : band.stop].addmm_(g, W)
            if gW is not None:
                gW[:, band.start : band.stop].index_add_(0, band.rows, g.T @ x[:, band.start : band.stop])
        return gx, gW, grad_z.sum(0) if ctx.needs_input_grad[2] else None, None


def banded_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, bands: list[Band]) -> torch.Tensor:
    """x W^T + b of a layer whose weight is zero outside ``bands`` (autograd-aware)."""
    return _BandedLinear.apply(x, weight, bias, bands)


@torch.no_grad()
def banded_rate_update_(weight: torch.Tensor, bias: torch.Tensor, bands: list[Band], mask: torch.Tensor,
                        x: torch.Tensor, err: torch.Tensor, scale: float, pre_mean: torch.Tensor | None = None) -> None:
    """The local rule's rate-mode update of a receptive-field layer, by bands: W += scale e^T x on the
    synapses that exist, b += scale sum_b e (minus dW m over those synapses with the covariance rule).
    ``x``: the (masked) presynaptic factor, ``err``: the (masked) error, both as in local_update."""
    xc = x if pre_mean is None else x - pre_mean
    db = err.sum(0).mul_(scale)
    for band in bands:
        sl = slice(band.start, band.stop)
        dW = (err.index_select(1, band.rows).T @ xc[:, sl]).mul_(scale).mul_(mask.index_select(0, band.rows)[:, sl])
        weight[:, sl].index_add_(0, band.rows, dW)
        if pre_mean is not None:
            db.index_add_(0, band.rows, -(dW @ pre_mean[sl]))
    bias.add_(db)
