"""Layer-pipeline schedule: one pipeline epoch of one stage.

Every micro-batch travels from stage r to r + 1 as ONE message: a byte buffer holding an int64 head
[flag, y (, extra labels)] and then the float tensors of ``run.plan.shapes`` (their bytes, exactly,
so the receiving stage computes on the same bits). A stage keeps up to ``SEND_WINDOW`` sends in
flight and has up to ``RECV_AHEAD`` receives posted ahead of the batch it computes: the transport
fills the next micro-batch's buffer while this one is computed, instead of the stage waiting for
the bytes after it finishes (measured in BENCHMARKS.md, "Parallel training").
"""

from __future__ import annotations

import logging
import math
from collections import deque

import torch

from ..train import (
    RunState,
    schedule_lr,
)
from .comm import _GO, _STOP, RECV_AHEAD, SEND_WINDOW, _Run

log = logging.getLogger("localstdp.parallel")


class _Layout:
    """Where the head and each tensor lie in the byte buffer of a micro-batch of ``bsz`` examples."""

    def __init__(self, run: _Run, lo: int, bsz: int):
        plan = run.plan
        self.rows = 2 if plan.extra_labels else 1
        self.bsz = bsz
        self.head_n = self.rows * bsz + 1
        self.shapes = plan.shapes(lo, bsz)
        self.dtype = plan.dtype
        item = torch.empty((), dtype=self.dtype).element_size()
        self.offsets, o = [], 8 * self.head_n
        for shape in self.shapes:
            self.offsets.append(o)
            o += item * math.prod(shape)
        self.nbytes = o

    def pack(self, head: torch.Tensor, outs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([head.view(torch.uint8), *(t.contiguous().reshape(-1).view(torch.uint8) for t in outs)])

    def unpack(self, buf: torch.Tensor):
        head = buf[: 8 * self.head_n].view(torch.int64)
        ends = [*self.offsets[1:], self.nbytes]
        xs = [buf[o:e].view(self.dtype).view(shape) for o, e, shape in zip(self.offsets, ends, self.shapes)]
        return head, xs


def _pipeline_epoch(run: _Run, idx_batches: list[torch.Tensor], state: RunState,
                    recv_ahead: int = RECV_AHEAD) -> tuple[bool, int]:
    """Run this rank's stage over the batches of one epoch from ``state.step``.

    Returns (stopped, first_bad_batch): stopped when rank 0 asked to stop mid-epoch; first_bad_batch
    (1-based, last stage only) where the loss first became non-finite, else 0. A stop travels as a
    message with flag _STOP for the stopping batch and for every later batch the next stage already
    has a receive posted for (at most ``recv_ahead``), so no posted receive is left waiting.
    """
    comm, r, P, plan = run.comm, run.rank, run.world, run.plan
    lo, hi = run.stages[r]
    first, last = r == 0, r == P - 1
    n = len(idx_batches)
    ahead = max(int(recv_ahead), 1)
    out_layouts: dict[int, _Layout] = {}
    in_layouts: dict[int, _Layout] = {}

    def out_layout(bsz: int) -> _Layout:
        if bsz not in out_layouts:
            out_layouts[bsz] = _Layout(run, run.stages[r + 1][0], bsz)
        return out_layouts[bsz]

    def in_layout(bsz: int) -> _Layout:
        if bsz not in in_layouts:
            in_layouts[bsz] = _Layout(run, lo, bsz)
        return in_layouts[bsz]

    pending: deque = deque()  # sends in flight: (work, buffer)
    inbox: deque = deque()  # receives posted: (batch, work, buffer)
    posted = state.step  # the next batch to post a receive for

    def post_receives(upto: int) -> None:
        nonlocal posted
        while posted < min(upto, n):
            lay = in_layout(len(idx_batches[posted]))
            buf = torch.empty(lay.nbytes, dtype=torch.uint8)
            what = f"receiving batch {posted + 1} from rank {r - 1}"
            inbox.append((posted, comm.irecv(buf, r - 1, what), buf))
            posted += 1

    def send(buf: torch.Tensor, what: str) -> None:
        pending.append((comm.isend(buf, r + 1, what), buf))
        while len(pending) > SEND_WINDOW:
            comm.wait(pending.popleft()[0], what)

    def send_stops(b: int) -> None:
        """_STOP for batch b and every later batch the next stage may have a receive posted for."""
        for k in range(b, min(b + ahead, n)):
            lay = out_layout(len(idx_batches[k]))
            buf = torch.zeros(lay.nbytes, dtype=torch.uint8)
            buf[: 8].view(torch.int64)[0] = _STOP
            send(buf, f"sending stop for batch {k + 1} to rank {r + 1}")

    stopped, bad = False, 0
    try:
        if not first:
            post_receives(state.step + ahead)
        for b in range(state.step, n):
            bsz = len(idx_batches[b])
            schedule_lr(run.learner, run.cfg, state.epoch, b, n)
            if first:
                idx = idx_batches[b]
                y = run.ds.y_train[idx]
                xs, extra = plan.first(run.ds.x_train[idx], y)
            else:
                k, work, buf = inbox.popleft()
                comm.wait(work, f"receiving batch {k + 1} from rank {r - 1}")
                head, xs = in_layout(bsz).unpack(buf)
                if int(head[0]) == _STOP:
                    stopped = True
                    while inbox:  # the stops of the later batches already posted
                        k, work, _ = inbox.popleft()
                        comm.wait(work, f"receiving stop for batch {k + 1} from rank {r - 1}")
                    if not last:
                        send_stops(b)
                    break
                post_receives(b + 1 + ahead)
                y, extra = head[1 : bsz + 1], (head[bsz + 1 :] if plan.extra_labels else None)
            outs, loss = plan.run(lo, hi, xs, y, extra, last)  # the learner's own operations on this stage
            if last:
                if not math.isfinite(loss) and not bad:
                    bad = b + 1
                state.epoch_loss += loss * bsz
            else:
                lay = out_layout(bsz)
                head = torch.cat([torch.tensor([_GO]), y, *([extra] if plan.extra_labels else [])])
                send(lay.pack(head, outs), f"sending batch {b + 1} to rank {r + 1}")
            state.step = b + 1
            if first:
                if run.bar is not None:
                    run.bar.update(1)
                signum = run.should_stop() if run.should_stop is not None else 0
                if signum and state.step < n:
                    stopped, run.signum = True, signum
                    if not last:
                        send_stops(state.step)
                    break
        while pending:
            comm.wait(pending.popleft()[0], f"sending to rank {r + 1}")
    finally:
        pending.clear()
        inbox.clear()
    return stopped, bad
