"""Layer-pipeline schedule: partitioning layers into stages and one pipeline epoch."""

from __future__ import annotations

import logging
import math
from collections import deque

import torch

from ..train import (
    RunState,
    schedule_lr,
)
from .comm import _GO, _STOP, SEND_WINDOW, _Run

log = logging.getLogger("localstdp.parallel")


def _pipeline_epoch(run: _Run, idx_batches: list[torch.Tensor], state: RunState) -> tuple[bool, int]:
    """Run this rank's stage over the batches of one epoch from ``state.step``.

    Returns (stopped, first_bad_batch): stopped when rank 0 asked to stop mid-epoch;
    first_bad_batch (1-based, last stage only) where the loss first became non-finite, else 0.
    """
    comm, r, P = run.comm, run.rank, run.world
    lo, hi = run.stages[r]
    first, last = r == 0, r == P - 1
    L = len(run.model.layers)
    width_in = run.model.widths[lo]
    pending: deque = deque()
    stopped, bad = False, 0
    try:
        for b in range(state.step, len(idx_batches)):
            bsz = len(idx_batches[b])
            schedule_lr(run.learner, run.cfg, state.epoch, b, len(idx_batches))
            if first:
                idx = idx_batches[b]
                a, y = run.ds.x_train[idx].flatten(1), run.ds.y_train[idx]
            else:
                head = comm.recv(torch.empty(bsz + 1, dtype=torch.int64), r - 1, f"receiving batch {b + 1} from rank {r - 1}")
                if int(head[0]) == _STOP:
                    stopped = True
                    if not last:
                        pending.append((comm.isend(head, r + 1, "forwarding stop"), head))
                    break
                y = head[1:]
                a = comm.recv(torch.empty(bsz, width_in), r - 1, f"receiving batch {b + 1} from rank {r - 1}")
            for l in range(lo, hi):  # the same operations, in the same order, as LocalRule.step
                post = run.model.layer_forward(l, a)
                run.learner.learn_layer(l, a, post, y)
                a = post
            if last:
                loss = float(((run.learner.targets(L - 1, y) - a) ** 2).mean())
                if not math.isfinite(loss) and not bad:
                    bad = b + 1
                state.epoch_loss += loss * bsz
            else:
                head = torch.cat([torch.tensor([_GO]), y])
                what = f"sending batch {b + 1} to rank {r + 1}"
                pending.append((comm.isend(head, r + 1, what), head))
                pending.append((comm.isend(a, r + 1, what), a))
                while len(pending) > 2 * SEND_WINDOW:
                    comm.wait(pending.popleft()[0], what)
            state.step = b + 1
            if first:
                if run.bar is not None:
                    run.bar.update(1)
                signum = run.should_stop() if run.should_stop is not None else 0
                if signum and state.step < len(idx_batches):
                    stopped, run.signum = True, signum
                    if not last:
                        head = torch.full((len(idx_batches[state.step]) + 1,), _STOP, dtype=torch.int64)
                        pending.append((comm.isend(head, r + 1, "sending stop"), head))
                    break
        while pending:
            comm.wait(pending.popleft()[0], f"sending to rank {r + 1}")
    finally:
        pending.clear()
    return stopped, bad
