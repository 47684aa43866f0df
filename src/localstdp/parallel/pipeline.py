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

    A message from stage r to r + 1 is an int64 head [flag, y (, extra labels)] followed by the
    float tensors of ``run.plan.shapes``. Returns (stopped, first_bad_batch): stopped when rank 0
    asked to stop mid-epoch; first_bad_batch (1-based, last stage only) where the loss first became
    non-finite, else 0.
    """
    comm, r, P, plan = run.comm, run.rank, run.world, run.plan
    lo, hi = run.stages[r]
    first, last = r == 0, r == P - 1
    rows = 2 if plan.extra_labels else 1  # label rows in the head
    pending: deque = deque()
    stopped, bad = False, 0
    try:
        for b in range(state.step, len(idx_batches)):
            bsz = len(idx_batches[b])
            schedule_lr(run.learner, run.cfg, state.epoch, b, len(idx_batches))
            if first:
                idx = idx_batches[b]
                y = run.ds.y_train[idx]
                xs, extra = plan.first(run.ds.x_train[idx], y)
            else:
                what = f"receiving batch {b + 1} from rank {r - 1}"
                head = comm.recv(torch.empty(rows * bsz + 1, dtype=torch.int64), r - 1, what)
                if int(head[0]) == _STOP:
                    stopped = True
                    if not last:
                        pending.append((comm.isend(head, r + 1, "forwarding stop"), head))
                    break
                y, extra = head[1 : bsz + 1], (head[bsz + 1 :] if rows == 2 else None)
                xs = [comm.recv(torch.empty(shape, dtype=plan.dtype), r - 1, what) for shape in plan.shapes(lo, bsz)]
            outs, loss = plan.run(lo, hi, xs, y, extra, last)  # the learner's own operations on this stage
            if last:
                if not math.isfinite(loss) and not bad:
                    bad = b + 1
                state.epoch_loss += loss * bsz
            else:
                head = torch.cat([torch.tensor([_GO]), y, *([extra] if rows == 2 else [])])
                what = f"sending batch {b + 1} to rank {r + 1}"
                pending.append((comm.isend(head, r + 1, what), head))
                for t in outs:
                    t = t.contiguous()
                    pending.append((comm.isend(t, r + 1, what), t))
                while len(pending) > (1 + len(outs)) * SEND_WINDOW:
                    comm.wait(pending.popleft()[0], what)
            state.step = b + 1
            if first:
                if run.bar is not None:
                    run.bar.update(1)
                signum = run.should_stop() if run.should_stop is not None else 0
                if signum and state.step < len(idx_batches):
                    stopped, run.signum = True, signum
                    if not last:
                        size = rows * len(idx_batches[state.step]) + 1
                        head = torch.full((size,), _STOP, dtype=torch.int64)
                        pending.append((comm.isend(head, r + 1, "sending stop"), head))
                    break
        while pending:
            comm.wait(pending.popleft()[0], f"sending to rank {r + 1}")
    finally:
        pending.clear()
    return stopped, bad
