r"""Backends of the timing mode: the direct reference and a binned GEMM form.

The timing-mode weight change of one layer is

    S_ji = sum_b e_bj x_bi kappa(t_bj - t_bi),      t = T (1 - a)   (latency code),

with e the (masked) post error d - a, x the (masked) pre activity, and kappa the coincidence
kernel of :func:`localstdp.rules.window.kappa`. The direct form materialises the
batch x n_out x n_in tensor kappa(t_bj - t_bi); it is the reference the tests use.

Binned backend ("post spikes on a clock"). The post spike time is rounded to the centre
c_k = (k + 1/2) h of its clock step k = floor(t_bj / h), h = T / K, K = ``time_bins``; the pre
spike time stays exact. Then

    S_ji ~= sum_k sum_b E_k[b, j] A_k[b, i],   E_k = e * [bin(t_bj) == k],   A_k = x * kappa(c_k - t_bi),

and stacking the K clock steps along the batch axis makes it ONE GEMM of inner size K * batch.
Memory is O(K * batch * width), never O(batch * n_in * n_out). The cost is K times the rate
mode's update GEMM: accuracy and cost are traded through K alone.

Error bound (tested in tests/test_timing.py, derived in docs/timing.md). Rounding moves each
post time by at most h/2, so every kernel value is off by at most the largest change of kappa
over an interval of length h/2:

    eps(K) = max(cP, cM) - min(cP exp(-h / (2 tau_plus)), cM exp(-h / (2 tau_minus))),
    cP = A_plus / tau_plus, cM = A_minus / tau_minus,

and hence, elementwise, |S_binned - S_direct|_ji <= eps(K) * sum_b |e_bj| x_bi.
"""

from __future__ import annotations

import math

import torch

from .params import RuleParams
from .window import kappa, latency

# "auto" uses the exact direct form while its batch x n_out x n_in tensor stays this small.
AUTO_DIRECT_MAX_ELEMENTS = 1 << 20


def binned_error_bound(p: RuleParams, time_bins: int | None = None) -> float:
    """eps(K): the largest error of one kernel value kappa(t_j - t_i) under the binned backend."""
    K = p.time_bins if time_bins is None else int(time_bins)
    h = p.T / K
    cP, cM = p.A_plus / p.tau_plus, p.A_minus / p.tau_minus
    return max(cP, cM) - min(cP * math.exp(-h / (2 * p.tau_plus)), cM * math.exp(-h / (2 * p.tau_minus)))


def binned_factors(
    x: torch.Tensor, post: torch.Tensor, e: torch.Tensor, pre: torch.Tensor, p: RuleParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """The stacked GEMM factors (E, A) of the binned backend: S ~= E^T @ A.

    E is (K * batch, n_out): the post error placed in the clock step of its spike; A is
    (K * batch, n_in): the pre activity weighted by kappa(c_k - t_pre) for every clock centre c_k.
    """
    K, B = p.time_bins, post.shape[0]
    h = p.T / K
    k_post = (latency(post, p.T) / h).floor_().clamp_(0, K - 1).to(torch.int64)  # (B, n_out)
    E = e.new_zeros((K, B, e.shape[1])).scatter_(0, k_post.unsqueeze(0), e.unsqueeze(0))
    centres = (torch.arange(K, device=pre.device, dtype=pre.dtype) + 0.5) * h
    A = _kappa_times_x(centres, latency(pre, p.T), x, p)
    return E.reshape(K * B, -1), A.reshape(K * B, -1)


def _kappa_times_x(centres: torch.Tensor, t_pre: torch.Tensor, x: torch.Tensor, p: RuleParams) -> torch.Tensor:
    """x * kappa(c_k - t_pre) for every clock centre, (K, B, n_in), in few in-place passes.

    One exp: the exponent is min(-D/tau_plus, D/tau_minus) (= -|D|/tau when the two time
    constants agree), which picks the LTP branch exactly when D > 0, as :func:`kappa` does.
    """
    cP, cM = p.A_plus / p.tau_plus, p.A_minus / p.tau_minus
    D = t_pre.neg().unsqueeze(0).add(centres.view(-1, 1, 1))  # (K, B, n_in)
    ltp = D > 0 if cP != cM else None
    if p.tau_plus == p.tau_minus:
        out = D.abs_().mul_(-1.0 / p.tau_plus).exp_()
    else:
        out = torch.minimum(D * (-1.0 / p.tau_plus), D.mul_(1.0 / p.tau_minus)).exp_()
    if ltp is None:
        return out.mul_(x.unsqueeze(0) * cP)
    return out.mul_(torch.where(ltp, cP, cM).to(out.dtype)).mul_(x.unsqueeze(0))


def timing_direct(x: torch.Tensor, post: torch.Tensor, e: torch.Tensor, pre: torch.Tensor, p: RuleParams) -> torch.Tensor:
    """Timing mode, direct form: sum_b e_bj x_bi kappa(t_bj - t_bi). Memory O(batch n_out n_in).

    ``x`` is the (masked) presynaptic activity, ``pre`` the raw one (for spike times).
    """
    D = latency(post, p.T)[:, :, None] - latency(pre, p.T)[:, None, :]
    return torch.einsum("bj,bi,bji->ji", e, x, kappa(D, p))


def timing_binned(x: torch.Tensor, post: torch.Tensor, e: torch.Tensor, pre: torch.Tensor, p: RuleParams) -> torch.Tensor:
    """Timing mode on a clock of ``p.time_bins`` steps: one GEMM, error <= eps(K) sum_b |e| x."""
    E, A = binned_factors(x, post, e, pre, p)
    return E.T @ A


def resolve_backend(p: RuleParams, batch: int, n_out: int, n_in: int) -> str:
    """The backend ``p.timing_backend`` stands for at this size ("auto": direct while small)."""
    if p.timing_backend != "auto":
        return p.timing_backend
    return "direct" if batch * n_out * n_in <= AUTO_DIRECT_MAX_ELEMENTS else "binned"


def timing_update(x: torch.Tensor, post: torch.Tensor, e: torch.Tensor, pre: torch.Tensor, p: RuleParams) -> torch.Tensor:
    """sum_b e_bj x_bi kappa(t_bj - t_bi), by the backend ``p.timing_backend`` selects."""
    if resolve_backend(p, post.shape[0], post.shape[1], pre.shape[1]) == "direct":
        return timing_direct(x, post, e, pre, p)
    return timing_binned(x, post, e, pre, p)
