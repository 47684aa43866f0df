"""Backends of the timing mode. The direct form is the reference; faster GEMM forms go here."""

from __future__ import annotations

import torch

from .functional import timing_direct
from .params import RuleParams


def timing_update(x: torch.Tensor, post: torch.Tensor, e: torch.Tensor, pre: torch.Tensor, p: RuleParams) -> torch.Tensor:
    """sum_b e_bj x_bi kappa(t_bj - t_bi), by the backend ``p.timing_backend`` selects."""
    return timing_direct(x, post, e, pre, p)
