"""The spike-time primitives every mode of the rule shares: the latency code, the STDP window and
its coincidence kernel (docs/rule.md). A module of its own so that the rule's functions
(:mod:`localstdp.rules.functional`) and the timing backends (:mod:`localstdp.rules.timing`) both
import it without importing each other."""

from __future__ import annotations

import torch

from .params import RuleParams


def latency(a: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """First-spike time of activity ``a``: t = T (1 - a) (stronger activity, earlier spike)."""
    return T * (1.0 - a)


def stdp_window(D: torch.Tensor, p: RuleParams) -> torch.Tensor:
    """The STDP window W(D) for D = t_post - t_pre (LTP for D > 0, LTD for D <= 0)."""
    ltp = p.A_plus * torch.exp(-D.clamp(min=0) / p.tau_plus)
    ltd = -p.A_minus * torch.exp(D.clamp(max=0) / p.tau_minus)
    return torch.where(D > 0, ltp, ltd)


def kappa(D: torch.Tensor, p: RuleParams) -> torch.Tensor:
    """The coincidence kernel kappa(D) = -dW/dD: positive, peaked at coincidence D = 0."""
    ltp = (p.A_plus / p.tau_plus) * torch.exp(-D.clamp(min=0) / p.tau_plus)
    ltd = (p.A_minus / p.tau_minus) * torch.exp(D.clamp(max=0) / p.tau_minus)
    return torch.where(D > 0, ltp, ltd)
