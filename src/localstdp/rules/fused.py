"""The local rule's update applied in place: the same values as
:func:`localstdp.rules.functional.local_update` (reduction "mean"), without its chain of temporaries.

Plain rate mode is one ``addmm_`` per layer: W += (eta / B) e^T x, straight into the weight. The binned
timing backend is one ``addmm_`` too, with the stacked (K * batch) factors; the gather backend adds
into the weight one column chunk at a time (:func:`localstdp.rules.timing.timing_apply_`). The direct
timing form and the two-phase variant still build dW (they are references and research options).

The covariance rule (``pre_mean``, RuleParams.center) and fixed connectivity (``mask``, the
receptive fields of ``model.receptive_field``) have two forms:

- ``exact`` (the default, what every shipped config runs): the SAME floating-point operations as
  ``local_update`` followed by ``LayerwiseRule._masked`` and ``apply_layer`` -- one GEMM into a dW,
  scaled in place, the bias term -dW m by matrix-vector products, the mask applied by ``addcmul_``
  and ``masked_fill_`` -- so the trained weights are bit-identical (tests/test_mlp_unchanged.py),
  but with one weight-sized buffer instead of four weight-sized temporaries.
- fused (``exact=False``): no weight-sized buffer at all. W += (eta / B) e^T (x - m) is one
  ``addmm_``; the bias term -dW m is the rank-1 form -(eta / B) e^T ((x - m) m) (a batch-sized
  vector); with a mask, the out-of-field synapses are reset by ``W *= mask`` and the bias term is
  taken over the synapses that exist as W_after m - W_before m (two matrix-vector products). Equal to
  the exact form within float rounding (tests/test_fused.py), not bit for bit (a GEMM with alpha
  rounds once where mm-then-scale rounds twice).
"""

from __future__ import annotations

import torch

from .functional import local_update, spike_mask
from .params import RuleParams
from .timing import resolve_backend, timing_apply_


def _check(pre: torch.Tensor, post: torch.Tensor, target: torch.Tensor) -> None:
    if pre.ndim != 2 or post.ndim != 2 or pre.shape[0] != post.shape[0] or target.shape != post.shape:
        raise ValueError(f"shape mismatch: pre {tuple(pre.shape)}, post {tuple(post.shape)}, target {tuple(target.shape)}")


@torch.no_grad()
def apply_local_update_(
    weight: torch.Tensor, bias: torch.Tensor, pre: torch.Tensor, post: torch.Tensor, target: torch.Tensor, p: RuleParams,
    pre_mean: torch.Tensor | None = None, mask: torch.Tensor | None = None, absent: torch.Tensor | None = None,
    exact: bool = True,
) -> None:
    """weight += dW and bias += db of one layer, in place (batch mean, as ``local_update``).

    ``pre_mean``: the covariance rule's running presynaptic mean (RuleParams.center). ``mask``: fixed
    connectivity, 0/1 of the weight's shape (absent synapses do not change, and the bias term -dW m
    counts only the synapses that exist); ``absent``: ``1 - mask`` (precomputed by the caller; derived
    here when not given). ``exact``: see the module docstring."""
    B = pre.shape[0]
    if pre_mean is not None or mask is not None:
        if p.mode != "rate":  # timing / two-phase with the covariance rule or a mask: the reference path
            dW, db = local_update(pre, post, target, p, pre_mean=pre_mean)
            if mask is not None:
                kept = dW * mask
                db = db if pre_mean is None else db + (dW - kept) @ pre_mean
                dW = kept
            weight.add_(dW)
            bias.add_(db)
            return
        _check(pre, post, target)
        (_exact_rate_ if exact else _fused_rate_)(weight, bias, pre, post, target, p, pre_mean, mask, absent)
        return
    fast_timing = p.mode == "timing" and resolve_backend(p, B, post.shape[1], pre.shape[1]) != "direct"
    if p.mode != "rate" and not fast_timing:
        dW, db = local_update(pre, post, target, p)
        weight.add_(dW)
        bias.add_(db)
        return
    _check(pre, post, target)
    scale = p.eta / B
    err = target - post
    bias.add_(err.sum(0), alpha=scale)
    pre_mask, post_mask = spike_mask(pre, p.theta), spike_mask(post, p.theta)
    e = err if post_mask is None else err.mul_(post_mask)
    x = pre if pre_mask is None else pre * pre_mask
    if p.mode == "rate":
        weight.addmm_(e.T, x, alpha=scale)
    else:
        timing_apply_(weight, x, post, e, pre, p, scale)  # binned: one addmm_; gather: in place by chunks


def _factors(pre, post, target, p: RuleParams, pre_mean):
    """local_update's own steps up to its GEMM: (error, masked error, centred pre factor, scale)."""
    err = target - post
    scale = p.eta / pre.shape[0]
    pre_mask, post_mask = spike_mask(pre, p.theta), spike_mask(post, p.theta)
    e = err if post_mask is None else err * post_mask
    x = pre if pre_mask is None else pre * pre_mask
    if pre_mean is not None:
        x = x - pre_mean
    return err, e, x, scale


def _exact_rate_(weight, bias, pre, post, target, p: RuleParams, pre_mean, mask, absent) -> None:
    """Bit for bit what local_update + _masked + apply_layer computed (the order of every rounding
    kept), with one weight-sized buffer: dW = e^T x; dW *= eta / B; db = err.sum * eta / B - dW m;
    W += dW * mask; dW *= 1 - mask (what is left on the absent synapses: the values of dW - dW * mask
    up to the sign of a zero, which no later sum can tell apart); db += dW m."""
    err, e, x, scale = _factors(pre, post, target, p, pre_mean)
    db = err.sum(0) * scale
    dW = torch.mm(e.T, x).mul_(scale)
    if pre_mean is not None:
        db = db - torch.mv(dW, pre_mean)
    if mask is None:
        weight.add_(dW)
    else:
        weight.addcmul_(dW, mask)  # dW * mask is exact (0/1): one rounding, as weight.add_(dW * mask)
        if pre_mean is not None:
            dW.mul_(1 - mask if absent is None else absent)  # dW - dW * mask (a bool masked_fill_ is 20x slower)
            db = db + torch.mv(dW, pre_mean)
    bias.add_(db)


def _fused_rate_(weight, bias, pre, post, target, p: RuleParams, pre_mean, mask, absent) -> None:
    """No weight-sized buffer: the GEMM accumulates into W; the bias term is batch- or vector-sized."""
    err, e, x, scale = _factors(pre, post, target, p, pre_mean)
    db = err.sum(0).mul_(scale)
    if pre_mean is not None and mask is None:
        db -= torch.mv(e.T, torch.mv(x, pre_mean)).mul_(scale)  # (e^T x) m = e^T (x m): rank-1 form
    before = torch.mv(weight, pre_mean) if pre_mean is not None and mask is not None else None
    weight.addmm_(e.T, x, alpha=scale)
    if mask is not None:
        weight.mul_(mask)  # the absent synapses were 0 and stay 0
        if before is not None:
            db -= torch.mv(weight, pre_mean).sub_(before)  # dW m over the synapses that exist
    bias.add_(db)
