r"""The association-STDP rule as pure tensor functions.

This is the project's own derivation from the principles stated in arXiv:2011.12012 (S. K. Gupta,
"A More Biologically Plausible Local Learning Rule for ANNs"); the paper's own equations are not
available to us. See docs/rule.md for the full derivation.

Latency code: a neuron with activity a in (0, 1) fires at t(a) = T (1 - a).

STDP window, D = t_post - t_pre:
    W(D) = +A_plus  exp(-D / tau_plus)   for D > 0   (pre before post: potentiation)
    W(D) = -A_minus exp( D / tau_minus)  for D <= 0  (post before pre: depression)

Association: every neuron j of a layer has a target d_j = a_hi if it is associated with the label,
else a_lo (the label is broadcast as a third factor, not an error).

Nudging the post spike from t(a_j) towards t(a_j + beta (d_j - a_j)) changes the STDP of synapse
i -> j, to first order in beta, by T beta (d_j - a_j) kappa(t_j - t_i), with the coincidence kernel
    kappa(D) = (A_plus / tau_plus) exp(-D / tau_plus)     for D > 0
               (A_minus / tau_minus) exp(D / tau_minus)   for D <= 0.
Hence, averaged over the batch,
    dW_ji = eta <(d_j - a_j) a_i kappa(t_j - t_i)>,    db_j = eta <d_j - a_j>.
Rate mode is the tau -> infinity limit with A / tau fixed to 1 (kappa == 1): dW = eta <e a_pre^T>.

Every factor is local to one synapse; nothing here sees another layer's weights or errors.

Convolutional layers (:func:`local_conv_update`): a Conv2d is a dense layer applied at every output
position with shared weights, so its change is the dense rule summed over positions and averaged over
the batch -- the weight-gradient of its own local error with its own input,
    dW[o, i, u, v] = eta <sum_p e[o, p] x[i, p + (u, v)] kappa(t[o, p] - t[i, p + (u, v)])>,
computed as one GEMM over the unfolded input patches (the reference form; in rate mode with theta 0 the
learner runs closed forms without them, :func:`conv_error_update` and :func:`pooled_conv_update`). What each
channel is taught (``target``) is the learner's choice (``rules/layerwise.py``; :func:`pooled_conv_target`
is the default).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .params import RuleParams
from .timing import timing_direct, timing_update  # noqa: F401  (timing_direct: re-exported)
from .window import kappa, latency, stdp_window  # noqa: F401  (re-exported: the spike-time primitives)


def association_targets(assoc: torch.Tensor, y: torch.Tensor, a_hi: float, a_lo: float) -> torch.Tensor:
    """Targets d (batch x n) from an association matrix ``assoc`` (n x K, entries in [0, 1]).

    d = a_lo + (a_hi - a_lo) * assoc[:, y]^T: a_hi for neurons associated with the label.
    """
    return a_lo + (a_hi - a_lo) * assoc[:, y].T


def fill_untaught(target: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
    """Targets with NaN (a neuron not taught on this label) replaced by the neuron's own activity,
    so its error d - a, and every update it drives, is exactly zero. Returns ``target`` itself
    when nothing is NaN."""
    nan = torch.isnan(target)
    return torch.where(nan, post, target) if bool(nan.any()) else target


def spike_mask(a: torch.Tensor, theta: float) -> torch.Tensor | None:
    """1 where a neuron spikes (activity >= theta), else 0; None when theta == 0 (all spike)."""
    if theta <= 0:
        return None
    return (a >= theta).to(a.dtype)


def local_update(
    pre: torch.Tensor,
    post: torch.Tensor,
    target: torch.Tensor,
    p: RuleParams,
    reduction: str = "mean",
    pre_mean: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias change of one layer from its own pre/post activity and targets.

    Args:
        pre: presynaptic activity a^(l-1), (batch, n_in), values in [0, 1].
        post: postsynaptic activity a^l, (batch, n_out), values in (0, 1).
        target: association targets d^l, (batch, n_out).
        p: the rule's hyper-parameters (eta, mode, window).
        reduction: "mean" (divide by the batch size) or "sum" (for sharded batches).
        pre_mean: optional (n_in,) running mean of each presynaptic neuron's own activity
            (``RuleParams.center``): the presynaptic factor becomes a_i - m_i (a covariance
            rule) and the bias absorbs -sum_i dW_ji m_i, i.e. the same step taken in the centred
            parametrisation z = W (a - m) + b'. Still local: m_i is the pre neuron's own statistic.

    Returns:
        (dW, db) with shapes (n_out, n_in) and (n_out,), already multiplied by eta.
    """
    _check_reduction(reduction)
    if pre.ndim != 2 or post.ndim != 2 or pre.shape[0] != post.shape[0] or target.shape != post.shape:
        raise ValueError(f"shape mismatch: pre {tuple(pre.shape)}, post {tuple(post.shape)}, target {tuple(target.shape)}")
    err = target - post
    scale = p.eta / pre.shape[0] if reduction == "mean" else p.eta
    db = err.sum(0) * scale
    pre_mask, post_mask = spike_mask(pre, p.theta), spike_mask(post, p.theta)
    e = err if post_mask is None else err * post_mask
    x = pre if pre_mask is None else pre * pre_mask
    if pre_mean is not None:
        x = x - pre_mean
    if p.mode == "rate":
        dW = e.T @ x
    elif p.mode == "timing":
        dW = timing_update(x, post, e, pre, p)
    else:  # two-phase
        dW = two_phase_direct(x, post, target, pre, p, post_mask)
    if pre_mean is not None:
        return dW * scale, db - (dW * scale) @ pre_mean
    return dW * scale, db


def two_phase_direct(
    x: torch.Tensor,
    post: torch.Tensor,
    target: torch.Tensor,
    pre: torch.Tensor,
    p: RuleParams,
    post_mask: torch.Tensor | None,
) -> torch.Tensor:
    """Exact finite-beta variant: sum_b x_bi [W(t~_bj - t_bi) - W(t_bj - t_bi)] / (beta T).

    t~ is the post spike time after nudging the activity by beta (d - a). As beta -> 0 this
    tends to the timing mode; at finite beta it includes the LTP/LTD jump at coincidence.
    """
    nudged = post + p.beta * (target - post)
    t_pre = latency(pre, p.T)[:, None, :]
    diff = stdp_window(latency(nudged, p.T)[:, :, None] - t_pre, p) - stdp_window(latency(post, p.T)[:, :, None] - t_pre, p)
    if post_mask is not None:
        diff = diff * post_mask[:, :, None]
    return torch.einsum("bi,bji->ji", x, diff) / (p.beta * p.T)


# ----------------------------------------------------------------------------------------------
# Convolutional layers
# ----------------------------------------------------------------------------------------------


def conv_patches(x: torch.Tensor, kernel_size, stride, padding, dilation) -> torch.Tensor:
    """(batch, C, H, W) -> (batch * positions, C * kh * kw): every output position's input patch,
    channel-major (the layout of a Conv2d weight's last three axes); padding reads as activity 0."""
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def conv_rows(t: torch.Tensor) -> torch.Tensor:
    """(batch, C, H', W') -> (batch * positions, C), in conv_patches' row order."""
    return t.flatten(2).transpose(1, 2).reshape(-1, t.shape[1])


def local_conv_update(
    pre: torch.Tensor,
    post: torch.Tensor,
    target: torch.Tensor,
    p: RuleParams,
    kernel_size: tuple[int, int],
    stride=1,
    padding=0,
    dilation=1,
    reduction: str = "mean",
    pre_mean: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias change of a Conv2d (groups 1) from its own input, activity and targets.

    Every (example, output position) pair is one row of the dense rule (:func:`local_update`) with
    the input patch as presynaptic activity; rows are summed over positions and averaged over the
    batch (``reduction`` "mean") or summed ("sum"). In rate mode dW equals
    ``eta * torch.nn.grad.conv2d_weight(pre, W.shape, target - post) / batch``.

    Args:
        pre: the layer's input activity, (batch, C_in, H, W), values in [0, 1].
        post: its activity, (batch, C_out, H', W'), values in (0, 1).
        target: per-position targets, the shape of ``post`` (e.g. :func:`pooled_conv_target`).
        pre_mean: optional (C_in,) running mean of each input channel (``RuleParams.center``).

    Returns:
        (dW, db) with shapes (C_out, C_in, kh, kw) and (C_out,), already multiplied by eta.
    """
    _check_reduction(reduction)
    if pre.ndim != 4 or post.ndim != 4 or pre.shape[0] != post.shape[0] or target.shape != post.shape:
        raise ValueError(f"shape mismatch: pre {tuple(pre.shape)}, post {tuple(post.shape)}, target {tuple(target.shape)}")
    kh, kw = kernel_size
    x = conv_patches(pre, kernel_size, stride, padding, dilation)
    if x.shape[0] != post.shape[0] * post.shape[2] * post.shape[3]:
        raise ValueError(f"post {tuple(post.shape)} is not the output of this convolution of pre {tuple(pre.shape)}")
    m = None if pre_mean is None else pre_mean.repeat_interleave(kh * kw)
    dW, db = local_update(x, conv_rows(post), conv_rows(target), p, reduction="sum", pre_mean=m)
    if reduction == "mean":
        dW, db = dW / pre.shape[0], db / pre.shape[0]
    return dW.view(post.shape[1], pre.shape[1], kh, kw), db


def conv_error_update(pre: torch.Tensor, err: torch.Tensor, p: RuleParams, kernel_size, stride=1, padding=0, dilation=1,
                      reduction: str = "mean", pre_mean: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`local_conv_update` in rate mode with theta 0 in closed form, from the error
    ``err`` = target - post (batch, C_out, H', W') itself: with G the convolution's own weight
    gradient of that error (``torch.nn.grad.conv2d_weight``; aten convolution_backward asked for the
    weight and bias gradients, what backprop runs), G[o, c, u, v] = sum_(b,p) err[b, o, p] x[b, c, p + (u, v)]
    with padding read as 0, and the unfolded patches' centring (every patch entry, padded ones
    included, minus its channel's mean m_c) pulled out of the sum,

        dW = eta <G - (sum_p err[o, p]) m_c>,   db = eta <sum_p err[o, p]> - sum_(c,u,v) dW[o, c, u, v] m_c.

    No unfolded patches (batch x positions x C_in k k), their centred copy or their GEMM. Equal to
    the unfold form within float rounding, not bit for bit (tests/test_conv_closed.py); what
    LayerwiseRule runs for conv teaching "readout" and "position" in rate mode with theta 0."""
    _check_reduction(reduction)
    if p.mode != "rate" or p.theta > 0:
        raise ValueError("the closed conv form holds in rate mode with theta = 0 only")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (_pair(v) for v in (kernel_size, stride, padding, dilation))
    B, C, H, W = pre.shape
    out = ((H + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1)
    if err.ndim != 4 or err.shape[0] != B or tuple(err.shape[2:]) != out:
        raise ValueError(f"err {tuple(err.shape)} is not the output of this convolution of pre {tuple(pre.shape)}")
    shape = (err.shape[1], C, kh, kw)  # G and sum_(b,p) err (backprop's bias gradient) from one call:
    _, G, e_sum = torch.ops.aten.convolution_backward(err, pre, err.new_empty(1).expand(shape), [shape[0]], (sh, sw),
                                                      (ph, pw), (dh, dw), False, [0, 0], 1, (False, True, True))
    scale = p.eta / B if reduction == "mean" else p.eta
    if pre_mean is None:
        return G.mul_(scale), e_sum * scale
    dW = G.sub_(e_sum[:, None, None, None] * pre_mean[None, :, None, None]).mul_(scale)
    return dW, e_sum * scale - dW.sum((2, 3)) @ pre_mean


def pooled_conv_target(post: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-position targets that teach a conv channel through its spatial MEAN activity.

    ``target`` (batch, C) is each channel's association target (NaN: untaught). The channel's error
    is e = d - mean_p a[p], shared by its P positions as e / P: the rate-mode update is then the delta
    rule of a unit whose activity is the channel's mean and whose input is the mean patch,
    dW = eta <e mean_p(x_p)>, db = eta <e>. Returned as post + e / P (so target - post = e / P).
    """
    mean = post.mean((2, 3))
    e = torch.where(torch.isnan(target), torch.zeros_like(mean), target - mean)
    return post + (e / (post.shape[2] * post.shape[3]))[:, :, None, None]


def pooled_conv_update(
    pre: torch.Tensor,
    post: torch.Tensor,
    target: torch.Tensor,
    p: RuleParams,
    kernel_size: tuple[int, int],
    stride=1,
    padding=0,
    dilation=1,
    reduction: str = "mean",
    pre_mean: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`local_conv_update` of ``pooled_conv_target(post, target)`` in rate mode with theta 0, in
    closed form: the error e / P is the same at every position, so

        dW[o, c, u, v] = eta <e_o (S_b[c, u, v] / P - m_c)>,   db_o = eta <e_o> - sum_(c,u,v) dW[o, c, u, v] m_c

    with S_b[c, u, v] the sum over the P output positions of the input pixel that kernel offset (u, v)
    reads (padding reads 0), one small box-sum convolution instead of the unfolded patches
    (batch x P x C_in k k) and their GEMM. Equal to the unfold form within float rounding, not bit for
    bit (tests/test_learner.py). What LocalLearner runs for a conv layer taught "pooled" in rate mode
    with theta 0 (every shipped CNN config); the unfold form stays the reference."""
    _check_reduction(reduction)
    if p.mode != "rate" or p.theta > 0:
        raise ValueError("the pooled closed form holds in rate mode with theta = 0 only")
    B, C, H, W = pre.shape
    _, C_out, Ho, Wo = post.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (_pair(v) for v in (kernel_size, stride, padding, dilation))
    P = Ho * Wo
    mean = post.mean((2, 3))
    e = torch.where(torch.isnan(target), torch.zeros_like(mean), target - mean)  # (B, C_out)
    xp = F.pad(pre, (pw, pw, ph, ph)).reshape(B * C, 1, H + 2 * ph, W + 2 * pw)
    ones = torch.ones(1, 1, Ho, Wo, dtype=pre.dtype, device=pre.device)
    S = F.conv2d(xp, ones, stride=(dh, dw), dilation=(sh, sw))[:, :, :kh, :kw].reshape(B, C * kh * kw)
    x = S / P
    scale = p.eta / B if reduction == "mean" else p.eta
    if pre_mean is None:
        dW = (e.T @ x) * scale
        return dW.view(C_out, C, kh, kw), e.sum(0) * scale
    m = pre_mean.repeat_interleave(kh * kw)
    dW = (e.T @ (x - m)) * scale
    return dW.view(C_out, C, kh, kw), e.sum(0) * scale - dW @ m


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def softhebb_conv_update(
    pre: torch.Tensor, weight: torch.Tensor, eta: float, tau: float, stride=1, padding=0, dilation=1
) -> torch.Tensor:
    """Unsupervised soft winner-take-all Hebbian change of a Conv2d's weight (SoftHebb: Moraitis et
    al., Neuromorph. Comput. Eng. 2022; Journe et al., ICLR 2023), averaged over examples AND positions:

        dW_k = eta < y_k (x - u_k W_k) >,   u = W x (no bias),   y = softmax_k(u / tau)

    at every position. Channels compete for each patch; the -y u W term keeps |W_k| near 1 (Oja).
    No label: a channel learns a recurring patch. Local: u_k and y_k are the channel's own input
    current and its share of a local soft inhibition.
    """
    u = F.conv2d(pre, weight, None, stride, padding, dilation)
    y = torch.softmax(u / tau, dim=1)
    Y, U = conv_rows(y), conv_rows(u)
    x = conv_patches(pre, weight.shape[2:], stride, padding, dilation)
    n = x.shape[0]
    w = weight.reshape(weight.shape[0], -1)
    dW = (Y.T @ x - (Y * U).sum(0)[:, None] * w) * (eta / n)
    return dW.view_as(weight)


# ----------------------------------------------------------------------------------------------
# Direct per-synapse reference (plain Python loops over floats), used only by the tests.
# ----------------------------------------------------------------------------------------------


def _window_scalar(D: float, p: RuleParams) -> float:
    return p.A_plus * math.exp(-D / p.tau_plus) if D > 0 else -p.A_minus * math.exp(D / p.tau_minus)


def _kappa_scalar(D: float, p: RuleParams) -> float:
    if p.mode == "rate":
        return 1.0
    if D > 0:
        return p.A_plus / p.tau_plus * math.exp(-D / p.tau_plus)
    return p.A_minus / p.tau_minus * math.exp(D / p.tau_minus)


def local_update_reference(pre, post, target, p: RuleParams, pre_mean=None) -> tuple[list[list[float]], list[float]]:
    """Loop-over-synapses reference of :func:`local_update` (mean over the batch).

    Written from the equations independently of the tensor code: for every example b, post j and
    pre i, with spike times t = T (1 - a), add the synapse's own contribution. With ``pre_mean``
    the presynaptic factor is (a_i - m_i) (0 - m_i for a pre neuron below theta) and each bias
    then gets -sum_i dW_ji m_i.
    """
    m = None if pre_mean is None else [float(v) for v in pre_mean]
    pre, post, target = (t.tolist() for t in (pre, post, target))
    B, n_in, n_out = len(pre), len(pre[0]), len(post[0])
    dW = [[0.0] * n_in for _ in range(n_out)]
    db = [0.0] * n_out
    for b in range(B):
        for j in range(n_out):
            a_j, d_j = post[b][j], target[b][j]
            db[j] += p.eta * (d_j - a_j) / B
            if a_j < p.theta:
                continue
            t_j = p.T * (1 - a_j)
            for i in range(n_in):
                a_i = pre[b][i]
                if a_i < p.theta and m is None:
                    continue
                t_i = p.T * (1 - a_i)
                x_i = (a_i if a_i >= p.theta else 0.0) - (m[i] if m is not None else 0.0)
                if p.mode == "two-phase":
                    t_nudged = p.T * (1 - (a_j + p.beta * (d_j - a_j)))
                    change = (_window_scalar(t_nudged - t_i, p) - _window_scalar(t_j - t_i, p)) / (p.beta * p.T)
                    dW[j][i] += p.eta * x_i * change / B
                else:
                    dW[j][i] += p.eta * (d_j - a_j) * x_i * _kappa_scalar(t_j - t_i, p) / B
    if m is not None:
        for j in range(n_out):
            db[j] -= sum(dW[j][i] * m[i] for i in range(n_in))
    return dW, db


def local_conv_update_reference(pre, post, target, p: RuleParams, stride: int = 1, padding: int = 0, kernel_size=None,
                                pre_mean=None) -> tuple[list, list[float]]:
    """Loop reference of :func:`local_conv_update` (mean over the batch, dilation 1): for every
    out channel o, in channel i, kernel offset (u, v), example b and output position (r, c), the
    synapse from input pixel (r s + u - pad, c s + v - pad) (activity 0 outside the image) to
    output neuron (o, r, c) adds its own term, as in :func:`local_update_reference`."""
    m = None if pre_mean is None else [float(v) for v in pre_mean]
    pre, post, target = (t.tolist() for t in (pre, post, target))
    B, C_in, H, W = len(pre), len(pre[0]), len(pre[0][0]), len(pre[0][0][0])
    C_out, Ho, Wo = len(post[0]), len(post[0][0]), len(post[0][0][0])
    kh, kw = kernel_size
    dW = [[[[0.0] * kw for _ in range(kh)] for _ in range(C_in)] for _ in range(C_out)]
    db = [0.0] * C_out
    for o in range(C_out):
        for b in range(B):
            for r in range(Ho):
                for c in range(Wo):
                    db[o] += p.eta * (target[b][o][r][c] - post[b][o][r][c]) / B
        for i in range(C_in):
            for u in range(kh):
                for v in range(kw):
                    total = 0.0
                    for b in range(B):
                        for r in range(Ho):
                            for c in range(Wo):
                                a_j, d_j = post[b][o][r][c], target[b][o][r][c]
                                if a_j < p.theta:
                                    continue
                                rr, cc = r * stride + u - padding, c * stride + v - padding
                                a_i = pre[b][i][rr][cc] if 0 <= rr < H and 0 <= cc < W else 0.0
                                if a_i < p.theta and m is None:
                                    continue
                                x_i = (a_i if a_i >= p.theta else 0.0) - (m[i] if m is not None else 0.0)
                                t_i, t_j = p.T * (1 - a_i), p.T * (1 - a_j)
                                if p.mode == "two-phase":
                                    t_n = p.T * (1 - (a_j + p.beta * (d_j - a_j)))
                                    change = (_window_scalar(t_n - t_i, p) - _window_scalar(t_j - t_i, p)) / (p.beta * p.T)
                                    total += x_i * change
                                else:
                                    total += (d_j - a_j) * x_i * _kappa_scalar(t_j - t_i, p)
                    dW[o][i][u][v] = p.eta * total / B
        if m is not None:
            db[o] -= sum(dW[o][i][u][v] * m[i] for i in range(C_in) for u in range(kh) for v in range(kw))
    return dW, db
