r"""Backends of the timing mode: the direct reference, a binned GEMM form and the binned sum as a gather.

The timing-mode weight change of one layer is

    S_ji = sum_b e_bj x_bi kappa(t_bj - t_bi),      t = T (1 - a)   (latency code),

with e the (masked) post error d - a, x the (masked, possibly centred) pre activity, and kappa the
coincidence kernel of :func:`localstdp.rules.window.kappa`. The direct form materialises the
batch x n_out x n_in tensor kappa(t_bj - t_bi); it is the reference the tests use.

Binned backend ("post spikes on a clock"). The post spike time is rounded to the centre
c_k = (k + 1/2) h of its clock step k = floor(t_bj / h), h = T / K, K = ``time_bins``; the pre
spike time stays exact. Then

    S_ji ~= sum_k sum_b E_k[b, j] A_k[b, i],   E_k = e * [bin(t_bj) == k],   A_k = x * kappa(c_k - t_bi),

and stacking the K clock steps along the batch axis makes it ONE GEMM of inner size K * batch.
Memory is O(K * batch * width), never O(batch * n_in * n_out). The cost is K times the rate
mode's update GEMM: accuracy and cost are traded through K alone.

Gather backend: the same sum, without the K-fold arithmetic. Each (b, j) lies in exactly one
clock step k_bj, so

    S[j, :] = sum_b e_bj A[k_bj, b, :]

is a weighted gather-sum of batch rows per post neuron from the (K * batch, n_in) table A: batch *
n_out * n_in multiply-adds, the arithmetic of ONE rate-mode update GEMM, plus building A (K * batch *
n_in kernel values, only for the clock steps that hold a post spike). The kernel values and the
rounding of the post times are the binned backend's, so its result equals the binned one within
float rounding (a different summation order) and the bound below holds unchanged.

Error bound of both (tested in tests/test_timing.py, derived in docs/timing.md). Rounding moves
each post time by at most h/2 (pre times are exact), so every kernel value is off by at most the
largest change of kappa over an interval of length h/2:

    eps(K) = max(cP, cM) - min(cP exp(-h / (2 tau_plus)), cM exp(-h / (2 tau_minus))),
    cP = A_plus / tau_plus, cM = A_minus / tau_minus,

and hence, elementwise, |S_binned - S_direct|_ji <= eps(K) * sum_b |e_bj| |x_bi| (and the same for
S_gather, up to float rounding)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .params import RuleParams
from .window import kappa, latency

# "auto" uses the exact direct form while its batch x n_out x n_in tensor stays this small.
AUTO_DIRECT_MAX_ELEMENTS = 1 << 20
# The gather backend's kernel table is built and read in pieces of at most this many bytes (L2-sized)
# and column chunks of at most GATHER_CHUNK columns (measured in docs/timing.md).
GATHER_TABLE_BYTES = 1 << 20
GATHER_CHUNK = 128
# "auto" takes the gather from this many clock steps on; below, the K-GEMM binned form was faster
# (docs/timing.md, "Choosing the backend").
GATHER_MIN_BINS = 4


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
    k_post = _bin_of(latency(post, p.T), p).to(torch.int64)  # (B, n_out): each post spike's clock step
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


def _gather_blocks(n_in: int, batch: int, slots: int, itemsize: int) -> tuple[int, int]:
    """(column chunk, batch block) of the gather backend: one table (block x slots x chunk) fits in
    GATHER_TABLE_BYTES, so that it is still in the L2 cache when the gather reads it."""
    chunks = -(-n_in // GATHER_CHUNK)
    chunk = -(-n_in // chunks)  # equal chunks of at most GATHER_CHUNK columns
    return chunk, max(1, min(batch, GATHER_TABLE_BYTES // (itemsize * slots * chunk)))


def _symmetric(p: RuleParams) -> bool:
    """kappa(D) = cP exp(-|D| / tau): one time constant, no jump at D = 0 (the default window)."""
    return p.tau_plus == p.tau_minus and p.A_plus == p.A_minus


def _kernel_table_(out: torch.Tensor, centres: torch.Tensor, t_pre: torch.Tensor, x: torch.Tensor,
                   p: RuleParams) -> torch.Tensor:
    """out[b, k, i] = x_bi kappa(c_k - t_bi) for a (block, slots, chunk) piece, in place in ``out``.

    The usual window (:func:`_symmetric`) takes four passes: |c - t| / tau (the caller passes
    times divided by tau), its exp, and x cP divided by it. Other windows pick the branch by the
    sign of D = c - t as :func:`_kappa_times_x` does. The values equal kappa's within rounding.
    """
    cP, cM = p.A_plus / p.tau_plus, p.A_minus / p.tau_minus
    D = torch.sub(centres.view(1, -1, 1), t_pre.unsqueeze(1), out=out)  # (block, slots, chunk)
    if _symmetric(p):  # x arrives multiplied by cP
        return torch.div(x.unsqueeze(1), D.abs_().exp_(), out=D)
    ltp = D > 0 if cP != cM else None
    torch.minimum(D * (-1.0 / p.tau_plus), D.mul_(1.0 / p.tau_minus), out=D).exp_()
    if ltp is None:
        return D.mul_((x * cP).unsqueeze(1))
    return D.mul_(torch.where(ltp, cP, cM).to(D.dtype)).mul_(x.unsqueeze(1))


@torch.no_grad()
def timing_gather(x: torch.Tensor, post: torch.Tensor, e: torch.Tensor, pre: torch.Tensor, p: RuleParams,
                  out: torch.Tensor | None = None, alpha: float = 1.0) -> torch.Tensor:
    """The binned sum as a weighted gather: S[j] = sum_b e_bj A[b, k_bj], batch * n_out * n_in
    multiply-adds (one rate-mode GEMM's worth) instead of the binned backend's K times as many.

    A[b, k] = x_b * kappa(c_k - t_b) is the binned backend's factor; only the clock steps that hold
    a post spike get a row. With ``out`` given, ``out += alpha * S`` in place (no weight-sized
    temporary) and ``out`` is returned. A is built and consumed one (batch block x clock step x
    column chunk) piece at a time, small enough to stay in the L2 cache between the two; each piece
    is one ``embedding_bag`` (mode "sum", per-sample weights alpha e_bj): bag j sums row (b, k_bj)
    of the piece over the block's examples b.
    """
    B, n_out, n_in = post.shape[0], post.shape[1], pre.shape[1]
    if out is None:
        out = pre.new_zeros((n_out, n_in))
    if B == 0 or n_out == 0 or n_in == 0:
        return out
    K = p.time_bins
    lo, hi = (int(v) for v in _bin_of(latency(post, p.T).aminmax(), p))  # only these clock steps get rows
    steps = hi - lo + 1
    unit = p.tau_plus if _symmetric(p) else 1.0  # times in units of tau for the usual window
    centres = (torch.arange(lo, hi + 1, device=pre.device, dtype=pre.dtype) + 0.5) * (p.T / K / unit)
    t_pre = latency(pre, p.T) / unit
    xc = x * (p.A_plus / p.tau_plus) if _symmetric(p) else x
    chunk, block = _gather_blocks(n_in, B, steps, pre.element_size())
    table = pre.new_empty(block * steps * chunk)
    bags = []  # per batch block: (first example, size, rows, weights, bag offsets), bag j = row j of (n_out, size)
    for s in range(0, B, block):
        bb = min(block, B - s)
        # row of (b, k_bj) in the block's table: (b - s) * steps + k_bj - lo, computed in (n_out, bb) order
        k = torch.neg(post[s:s + bb].T, out=post.new_empty((n_out, bb))).add_(1.0).mul_(p.T)  # latency T (1 - a)
        rows = _bin_of(k, p).add_(torch.arange(bb, device=pre.device, dtype=k.dtype) * steps - lo)
        weights = torch.mul(e[s:s + bb].T, alpha, out=e.new_empty((n_out, bb)))
        bags.append((s, bb, rows.to(torch.int64).view(-1), weights.view(-1),
                     torch.arange(0, n_out * bb, bb, device=pre.device)))
    for i in range(0, n_in, chunk):
        cols = slice(i, min(i + chunk, n_in))
        cc = cols.stop - i
        t_c, x_c = t_pre[:, cols].contiguous(), xc[:, cols].contiguous()
        acc = None
        for s, bb, rows, weights, offsets in bags:
            A = _kernel_table_(table[: bb * steps * cc].view(bb, steps, cc), centres, t_c[s:s + bb], x_c[s:s + bb], p)
            part = F.embedding_bag(rows, A.view(bb * steps, cc), offsets, per_sample_weights=weights, mode="sum")
            acc = part if acc is None else acc.add_(part)
            del part  # one (n_out, chunk) buffer alive at a time
        out[:, cols] += acc
    return out


def _bin_of(t: torch.Tensor | tuple, p: RuleParams):
    """The clock step of spike times t, min(floor(t / h), K - 1), in place, as floats (or of each 0-d
    tensor of a tuple): the binned and the gather backends' one rounding of the post spike times."""
    if isinstance(t, tuple):
        return tuple(_bin_of(v, p) for v in t)
    return t.div_(p.T / p.time_bins).floor_().clamp_(0, p.time_bins - 1)


def resolve_backend(p: RuleParams, batch: int, n_out: int, n_in: int) -> str:
    """The backend ``p.timing_backend`` stands for at this size ("auto": direct while small, then
    the gather from GATHER_MIN_BINS clock steps on, the binned GEMM below)."""
    if p.timing_backend != "auto":
        return p.timing_backend
    if batch * n_out * n_in <= AUTO_DIRECT_MAX_ELEMENTS:
        return "direct"
    return "gather" if p.time_bins >= GATHER_MIN_BINS else "binned"


def timing_update(x: torch.Tensor, post: torch.Tensor, e: torch.Tensor, pre: torch.Tensor, p: RuleParams) -> torch.Tensor:
    """sum_b e_bj x_bi kappa(t_bj - t_bi), by the backend ``p.timing_backend`` selects."""
    backend = resolve_backend(p, post.shape[0], post.shape[1], pre.shape[1])
    if backend == "direct":
        return timing_direct(x, post, e, pre, p)
    if backend == "gather":
        return timing_gather(x, post, e, pre, p)
    return timing_binned(x, post, e, pre, p)


@torch.no_grad()
def timing_apply_(weight: torch.Tensor, x: torch.Tensor, post: torch.Tensor, e: torch.Tensor, pre: torch.Tensor,
                  p: RuleParams, alpha: float) -> None:
    """weight += alpha * sum_b e_bj x_bi kappa(t_bj - t_bi) in place, by the binned backend (one
    ``addmm_``) or the gather backend (accumulated into ``weight`` chunk by chunk); no weight-sized
    temporary. The direct form is not in-place: use :func:`timing_update`."""
    backend = resolve_backend(p, post.shape[0], post.shape[1], pre.shape[1])
    if backend == "gather":
        timing_gather(x, post, e, pre, p, out=weight, alpha=alpha)
    elif backend == "binned":
        E, A = binned_factors(x, post, e, pre, p)
        weight.addmm_(E.T, A, alpha=alpha)
    else:
        raise ValueError(f"timing_apply_: backend {backend!r} has no in-place form")
