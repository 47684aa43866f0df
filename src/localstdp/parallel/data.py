"""Data-parallel schedule: one epoch, every rank on a shard of every batch.

The local rule exchanges one of two things per batch (``run.exchange``):

- ``"updates"``: every layer's summed (dW, db) over the shard, added by one all_reduce (bytes: the
  whole model, whatever the batch); every rank applies the same change.
- ``"activities"``: every layer's (input, output) activity on the shard, gathered by one all_gather
  (bytes: the batch's activities, whatever the model's size); every rank then runs the single-process
  update (``learn_layer``) on the whole batch. Possible because the rule's update of a layer is a
  function of that layer's two activities and the label alone. Each rank computes 1/N of the
  forward pass and all of the update.
- ``"auto"``: activities when they are at most 1/ACTIVITY_RATIO of the model's bytes (set from the
  measurements in BENCHMARKS.md, "Parallel training"), else updates.
"""

from __future__ import annotations

import logging
import math

import torch

from ..errors import DivergenceError
from ..learner import LocalLearner
from ..train import (
    RunState,
    schedule_lr,
)
from .comm import _Run, _shard

log = logging.getLogger("localstdp.parallel")

# "auto": gather activities when the model's bytes are at least this many times theirs. 1: on the 6 (net, batch)
# cases of BENCHMARKS.md "Parallel training" the faster exchange was activities exactly where the model's bytes
# exceeded the batch's activities (MLPs: 3.0-14x, activities faster; CNN: 0.19-0.77x, updates faster)
ACTIVITY_RATIO = 1.0


def _activity_layout(run: _Run, x: torch.Tensor):
    """(pairs, per-example numels of every pre and post) of a shard's forward pass."""
    learner = run.learner
    if isinstance(learner, LocalLearner):
        _, pairs = learner.activities(x)
    else:
        acts = learner.model.activities(x)
        pairs = list(zip(acts[:-1], acts[1:]))
    return pairs


def choose_exchange(run: _Run, batch: int) -> str:
    """``run.exchange`` resolved for a batch of ``batch`` examples (see the module docstring)."""
    if run.exchange != "auto":
        return run.exchange
    layers = run.learner.layers
    params = sum(p.numel() for layer in layers for p in (layer.weight, layer.bias) if p is not None)
    per_example = getattr(run, "_activity_numel", None)
    if per_example is None:
        with torch.no_grad():
            pairs = _activity_layout(run, run.ds.x_train[:1])
        per_example = run._activity_numel = sum(t[0].numel() for pair in pairs for t in pair)
    return "activities" if params >= ACTIVITY_RATIO * batch * per_example else "updates"


def _activity_step(run: _Run, idx: torch.Tensor, b: int, stop_now: bool) -> tuple[float, bool]:
    """One batch with the shards' activities gathered; every rank runs the whole batch's update."""
    comm, r, P, learner = run.comm, run.rank, run.world, run.learner
    parts = idx.tensor_split(P)
    sizes = [len(s) for s in parts]
    pairs = _activity_layout(run, run.ds.x_train[parts[r]])
    shapes = [t.shape[1:] for pair in pairs for t in pair]
    flat = torch.cat([t.reshape(sizes[r], -1) for pair in pairs for t in pair], dim=1)
    width = flat.shape[1]
    send = torch.zeros(max(sizes), width + 1, dtype=flat.dtype)
    send[: sizes[r], :width] = flat
    send[0, width] = float(stop_now)
    got = comm.all_gather(send, f"gathering the activities of batch {b + 1}")
    full = torch.cat([g[:n, :width] for g, n in zip(got, sizes)])
    stop_all = float(got[0][0, width]) > 0
    cols, o = [], 0
    for shape in shapes:
        k = math.prod(shape)
        cols.append(full[:, o : o + k].reshape(len(idx), *shape))
        o += k
    y = run.ds.y_train[idx]
    if isinstance(learner, LocalLearner):
        y = learner._labels(y)
    for l in range(len(pairs)):
        learner.learn_layer(l, cols[2 * l], cols[2 * l + 1], y)
    return learner.output_loss(y, cols[-1]), stop_all


def _data_epoch(run: _Run, idx_batches: list[torch.Tensor], state: RunState) -> tuple[bool, int]:
    """Every rank trains on its shard of every batch; changes are summed with all_reduce."""
    comm, r, P = run.comm, run.rank, run.world
    stopped, bad = False, 0
    if run.method == "local":
        layers = run.learner.layers  # the learnable layers (LocalRule: the MLP's; LocalLearner: any model's)
        L, n_out = len(layers), run.learner.n_classes
        sizes = [p.numel() for layer in layers for p in (layer.weight, layer.bias) if p is not None]
        buf = torch.empty(sum(sizes) + 2, dtype=layers[0].weight.dtype)
    for b in range(state.step, len(idx_batches)):
        idx = idx_batches[b]
        schedule_lr(run.learner, run.cfg, state.epoch, b, len(idx_batches))
        shard = _shard(idx, r, P)
        x, y = run.ds.x_train[shard], run.ds.y_train[shard]
        signum = run.should_stop() if (r == 0 and run.should_stop is not None) else 0
        stop_now = bool(signum) and b + 1 < len(idx_batches)
        if stop_now:
            run.signum = signum
        if run.method == "local" and choose_exchange(run, len(idx)) == "activities":
            loss, stop_all = _activity_step(run, idx, b, stop_now)
        elif run.method == "local":
            ups, out = _local_updates(run, x, y, b)
            sse = ((run.learner.targets(L - 1, y) - out) ** 2).sum()
            parts = [t.reshape(-1) for (dW, db), layer in zip(ups, layers)
                     for t in ((dW, db) if layer.bias is not None else (dW,))]
            torch.cat(parts + [sse.reshape(1).float(), torch.tensor([float(stop_now)])], out=buf)
            comm.all_reduce(buf, f"summing the changes of batch {b + 1}")
            scale, o = 1.0 / len(idx), 0
            with torch.no_grad():
                for l, layer in enumerate(layers):
                    nw = layer.weight.numel()
                    nb = layer.bias.numel() if layer.bias is not None else 0
                    run.learner.apply_layer(l, buf[o : o + nw].view_as(layer.weight) * scale,
                                            buf[o + nw : o + nw + nb] * scale if nb else None)
                    o += nw + nb
            loss = float(buf[-2]) / (len(idx) * n_out)
            stop_all = float(buf[-1]) > 0
        elif hasattr(run.learner, "accumulate"):  # a peer rule: shards' update directions summed
            rows = torch.arange(len(idx)).tensor_split(P)[r]  # this rank's shard of the batch
            xb, yb = run.ds.x_train[idx], run.ds.y_train[idx]  # whole batch: ff draws negatives for all of it
            run.learner.zero_grad()
            part = run.learner.accumulate(xb, yb, 1.0 / len(idx), rows)
            red = torch.cat([run.learner.flat_grad(), torch.tensor([part, float(stop_now)])])
            comm.all_reduce(red, f"summing the updates of batch {b + 1}")
            run.learner.set_flat_grad(red[:-2])
            run.learner.apply()
            loss = float(red[-2]) / len(idx)
            stop_all = float(red[-1]) > 0
        else:  # backprop: DistributedDataParallel averages the gradients during backward
            opt = run.learner.optimizer
            opt.zero_grad(set_to_none=True)
            ce = run.learner.loss_sum(run.ddp(x), y)  # the learner's own loss (CE, or MSE for backprop-mse)
            try:
                (ce * (P / len(idx))).backward()  # DDP divides by P: the mean over the whole batch
            except RuntimeError as exc:
                raise comm.fail(f"averaging the gradients of batch {b + 1}", exc) from None
            opt.step()
            keep = getattr(run.model, "keep_connectivity_", None)
            if keep is not None:
                keep()  # fixed first-layer connectivity (model.receptive_field)
            red = comm.all_reduce(torch.tensor([float(ce.detach()), float(stop_now)], dtype=torch.float64),
                                  f"summing the loss of batch {b + 1}")
            loss = float(red[0]) / len(idx)
            stop_all = float(red[1]) > 0
        if not math.isfinite(loss):  # every rank sees the same reduced loss: all raise together
            raise DivergenceError(f"training diverged: loss is {loss} at epoch {state.epoch + 1}, batch {b + 1}; "
                                  "lower the learning rate (the last good checkpoint is kept)")
        state.epoch_loss += loss * len(idx)
        state.step = b + 1
        if r == 0 and run.bar is not None:
            run.bar.update(1)
        if stop_all:
            stopped = True
            break
    return stopped, bad


def _local_updates(run: _Run, x: torch.Tensor, y: torch.Tensor, b: int):
    """Every layer's summed (dW, db) over this rank's shard from one forward pass, and the output
    activity. With ``rule.center`` the running presynaptic means move by the mean over the WHOLE
    batch (one all_reduce of the shards' sums), as in one process, not by this shard's."""
    learner = run.learner
    if isinstance(learner, LocalLearner):  # any nn.Module: the activities its hooks record
        y = learner._labels(y)
        _, pairs = learner.activities(x)
    else:  # LocalRule on the MLP
        acts = learner.model.activities(x)
        pairs = list(zip(acts[:-1], acts[1:]))
    if learner.params.center > 0:
        means = _batch_means(run, [pre for pre, _ in pairs], b)
        learner.pre_mean = lambda l, pre: means[l]  # shadows LayerwiseRule.pre_mean for these updates
        try:
            ups = [learner.layer_update(l, pre, post, y, "sum") for l, (pre, post) in enumerate(pairs)]
        finally:
            del learner.pre_mean
    else:
        ups = [learner.layer_update(l, pre, post, y, "sum") for l, (pre, post) in enumerate(pairs)]
    return ups, pairs[-1][1]


def _batch_means(run: _Run, pres: list[torch.Tensor], b: int) -> list[torch.Tensor]:
    """rule.center: every layer's running presynaptic mean m <- c m + (1 - c) mean_batch(pre) with the
    mean over the whole batch (sums and counts of every shard added by all_reduce); per input
    channel for a conv layer, as LayerwiseRule.pre_mean."""
    learner, c = run.learner, run.learner.params.center
    sums = [p.sum(0) if p.ndim == 2 else p.sum((0, 2, 3)) for p in pres]
    counts = [p.shape[0] if p.ndim == 2 else p.shape[0] * p.shape[2] * p.shape[3] for p in pres]
    buf = torch.cat([*sums, torch.tensor(counts, dtype=sums[0].dtype)])
    run.comm.all_reduce(buf, f"summing the presynaptic means of batch {b + 1}")
    o, n = 0, len(buf) - len(pres)
    for l, s in enumerate(sums):
        batch = buf[o : o + s.numel()] / buf[n + l]
        o += s.numel()
        m = learner.pre_means[l]
        learner.pre_means[l] = batch if m is None else m * c + batch * (1 - c)
    return learner.pre_means
