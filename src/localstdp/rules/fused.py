"""The local rule's update applied in place: the same values as
:func:`localstdp.rules.functional.local_update` (reduction "mean"), without a weight-sized dW.

Rate mode is one ``addmm_`` per layer: W += (eta / B) e^T x, straight into the weight. The binned
timing backend is one ``addmm_`` too, with the stacked (K * batch) factors. The direct timing form
and the two-phase variant still build dW (they are references and research options).
"""

from __future__ import annotations

import torch

from .functional import local_update, spike_mask
from .params import RuleParams
from .timing import binned_factors, resolve_backend


@torch.no_grad()
def apply_local_update_(
    weight: torch.Tensor, bias: torch.Tensor, pre: torch.Tensor, post: torch.Tensor, target: torch.Tensor, p: RuleParams,
    pre_mean: torch.Tensor | None = None,
) -> None:
    """weight += dW and bias += db of one layer, in place (batch mean, as ``local_update``).
    With ``pre_mean`` (the covariance rule, RuleParams.center) it takes local_update's path."""
    B = pre.shape[0]
    fast_timing = p.mode == "timing" and resolve_backend(p, B, post.shape[1], pre.shape[1]) == "binned"
    if (p.mode != "rate" and not fast_timing) or pre_mean is not None:
        dW, db = local_update(pre, post, target, p, pre_mean=pre_mean)
        weight.add_(dW)
        bias.add_(db)
        return
    if pre.ndim != 2 or post.ndim != 2 or pre.shape[0] != post.shape[0] or target.shape != post.shape:
        raise ValueError(f"shape mismatch: pre {tuple(pre.shape)}, post {tuple(post.shape)}, target {tuple(target.shape)}")
    scale = p.eta / B
    err = target - post
    bias.add_(err.sum(0), alpha=scale)
    pre_mask, post_mask = spike_mask(pre, p.theta), spike_mask(post, p.theta)
    e = err if post_mask is None else err.mul_(post_mask)
    x = pre if pre_mask is None else pre * pre_mask
    if p.mode == "rate":
        weight.addmm_(e.T, x, alpha=scale)
    else:
        E, A = binned_factors(x, post, e, pre, p)
        weight.addmm_(E.T, A, alpha=scale)
