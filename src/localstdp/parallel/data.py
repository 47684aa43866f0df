"""Data-parallel schedule: one epoch with changes summed by all_reduce."""

from __future__ import annotations

import logging
import math

import torch

from ..errors import DivergenceError
from ..train import (
    RunState,
    schedule_lr,
)
from .comm import _Run, _shard

log = logging.getLogger("localstdp.parallel")


def _data_epoch(run: _Run, idx_batches: list[torch.Tensor], state: RunState) -> tuple[bool, int]:
    """Every rank trains on its shard of every batch; changes are summed with all_reduce."""
    comm, r, P = run.comm, run.rank, run.world
    L = len(run.model.layers)
    n_out = run.model.widths[-1]
    stopped, bad = False, 0
    if run.method == "local":
        sizes = [p.numel() for layer in run.model.layers for p in (layer.weight, layer.bias)]
        buf = torch.empty(sum(sizes) + 2)
    for b in range(state.step, len(idx_batches)):
        idx = idx_batches[b]
        schedule_lr(run.learner, run.cfg, state.epoch, b, len(idx_batches))
        shard = _shard(idx, r, P)
        x, y = run.ds.x_train[shard], run.ds.y_train[shard]
        signum = run.should_stop() if (r == 0 and run.should_stop is not None) else 0
        stop_now = bool(signum) and b + 1 < len(idx_batches)
        if stop_now:
            run.signum = signum
        if run.method == "local":
            ups, acts = run.learner.updates(x, y, reduction="sum")
            sse = ((run.learner.targets(L - 1, y) - acts[-1]) ** 2).sum()
            parts = [t.reshape(-1) for dW, db in ups for t in (dW, db)]
            torch.cat(parts + [sse.reshape(1).float(), torch.tensor([float(stop_now)])], out=buf)
            comm.all_reduce(buf, f"summing the changes of batch {b + 1}")
            scale, o = 1.0 / len(idx), 0
            with torch.no_grad():
                for l, layer in enumerate(run.model.layers):
                    nw, nb = layer.weight.numel(), layer.bias.numel()
                    run.learner.apply_layer(l, buf[o : o + nw].view_as(layer.weight) * scale,
                                            buf[o + nw : o + nw + nb] * scale)
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
            run.model.keep_connectivity_()  # fixed first-layer connectivity (model.receptive_field)
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
