"""Process group plumbing: constants, checks, the _Comm wrapper (timeouts, failure handling), shared run state."""

from __future__ import annotations

import datetime
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..config import ExperimentConfig
from ..data import Dataset
from ..errors import ConfigError, DistributedError
from .partition import layer_costs, partition_layers  # noqa: F401  (re-exported)
from .stages import PIPELINE_RULES, REFUSED, Plan

log = logging.getLogger("localstdp.parallel")


MODES = ("pipeline", "data")
DEFAULT_TIMEOUT = 30.0  # seconds any wait on a peer may take before the run is declared dead
SEND_WINDOW = 4  # micro-batches a stage may have in flight towards the next one
RECV_AHEAD = 2  # micro-batches a stage has receives posted for (the one it waits on and the next)
_GO, _STOP = 0, 1  # flag in front of every pipeline message


def check_mode(mode: str, method: str) -> None:
    """Usage errors of the parallel options (ConfigError, exit status 2)."""
    if mode not in MODES:
        raise ConfigError(f"--parallel {mode!r}: expected one of none, {', '.join(MODES)}")
    if mode == "pipeline" and method not in PIPELINE_RULES:
        why = REFUSED.get(method, "it has no pipeline schedule")
        raise ConfigError(f"--parallel pipeline needs a layer-local rule ({', '.join(PIPELINE_RULES)}): {why}; "
                          "use --parallel data")


EXCHANGES = ("auto", "updates", "activities")  # what data parallel exchanges for the local rule (data.py)


def check_exchange(exchange: str) -> None:
    if exchange not in EXCHANGES:
        raise ConfigError(f"--exchange {exchange!r}: expected one of {', '.join(EXCHANGES)}")


def check_config(cfg: ExperimentConfig, mode: str, method: str) -> None:
    """Options a parallel mode cannot honour (ConfigError, exit status 2): ``[robust]`` training (its
    noise and adversarial batches are drawn by the single-process loop; rule.center runs in both modes:
    data parallel shares the whole batch's presynaptic means)."""
    if cfg.robust.active:
        raise ConfigError(f"--parallel {mode}: [robust] training (input noise, adversarial examples) runs in the "
                          "single-process loop only; train without --parallel")


# ----------------------------------------------------------------------------------------------
# Communication: every wait has a timeout and every failure becomes one DistributedError line.
# ----------------------------------------------------------------------------------------------


@dataclass
class _Comm:
    rank: int
    world: int
    timeout: datetime.timedelta

    def fail(self, what: str, exc: BaseException) -> DistributedError:
        text = re.sub(r"^\[[^\]]*\]\s*", "", " ".join(str(exc).split()))  # drop gloo's [file:line]
        text = re.split(r"(?<=\.) ", text)[0] if text else type(exc).__name__
        return DistributedError(
            f"rank {self.rank} of {self.world}: {what} failed: {text[:160]} (a peer process died, hung or is "
            f"unreachable; timeout {self.timeout.total_seconds():g} s)")

    def wait(self, work, what: str) -> None:
        try:
            work.wait(self.timeout)
        except RuntimeError as exc:  # gloo raises RuntimeError / dist.DistError subclasses
            raise self.fail(what, exc) from None

    def isend(self, t: torch.Tensor, dst: int, what: str):
        try:
            return dist.isend(t, dst)
        except RuntimeError as exc:
            raise self.fail(what, exc) from None

    def irecv(self, t: torch.Tensor, src: int, what: str):
        try:
            return dist.irecv(t, src)
        except RuntimeError as exc:
            raise self.fail(what, exc) from None

    def recv(self, t: torch.Tensor, src: int, what: str) -> torch.Tensor:
        try:
            work = dist.irecv(t, src)
        except RuntimeError as exc:
            raise self.fail(what, exc) from None
        self.wait(work, what)
        return t

    def _collective(self, start, what: str) -> None:
        """Start an async collective (``start()`` returns its work) and wait for it with the timeout."""
        try:
            work = start()
        except RuntimeError as exc:
            raise self.fail(what, exc) from None
        self.wait(work, what)

    def broadcast(self, t: torch.Tensor, src: int, what: str) -> torch.Tensor:
        if self.world > 1:
            self._collective(lambda: dist.broadcast(t, src, async_op=True), what)
        return t

    def all_gather(self, t: torch.Tensor, what: str) -> list[torch.Tensor]:
        """Every rank's ``t`` (equal shapes), in rank order."""
        if self.world == 1:
            return [t]
        out = [torch.empty_like(t) for _ in range(self.world)]
        self._collective(lambda: dist.all_gather(out, t, async_op=True), what)
        return out

    def all_reduce(self, t: torch.Tensor, what: str) -> torch.Tensor:
        if self.world > 1:
            self._collective(lambda: dist.all_reduce(t, async_op=True), what)
        return t


def _shard(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    return t.tensor_split(world)[rank]


# ----------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """What every rank knows about the run."""

    comm: _Comm
    mode: str
    method: str
    cfg: ExperimentConfig
    ds: Dataset
    model: torch.nn.Module
    learner: object
    stages: list[tuple[int, int]]  # pipeline: the layers (units) of each rank; data: all layers on every rank
    should_stop: Callable[[], int] | None
    plan: Plan | None = None  # pipeline: what a stage runs (stages.py)
    bar: object = None
    ddp: object = None
    signum: int = 0  # rank 0: the signal that stopped the run mid-epoch
    exchange: str = "auto"  # data parallel, local rule: "updates", "activities" or "auto" (parallel/data.py)

    @property
    def rank(self) -> int:
        return self.comm.rank

    @property
    def world(self) -> int:
        return self.comm.world


def _agree(run: _Run, signum: int) -> int:
    """Rank 0's decision (a signal number, or 0 to go on), known to every rank; also a barrier
    that keeps the others waiting (with the timeout) while rank 0 writes its files."""
    t = run.comm.broadcast(torch.tensor([signum], dtype=torch.int64), 0, "waiting for rank 0")
    return int(t[0])


# ----------------------------------------------------------------------------------------------
# Joining and launching
# ----------------------------------------------------------------------------------------------


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher setting its env)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def _init(timeout: float) -> None:
    td = datetime.timedelta(seconds=timeout)
    try:
        if under_torchrun():
            dist.init_process_group("gloo", init_method="env://", timeout=td)
        else:  # one process: a group of one, no network
            dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1, timeout=td)
    except (RuntimeError, ValueError) as exc:
        text = " ".join(str(exc).split())[:200]
        raise DistributedError(f"cannot join the process group within {timeout:.0f} s: {text}") from None


def exit_if_group_left(code: int) -> None:
    """End the process at once when a process group is still open.

    After a peer failure :func:`run` leaves the group open on purpose (leaving would wait on the dead
    or hung peer); at interpreter exit its C++ destructor then finds a timed-out collective and calls
    std::terminate (SIGABRT instead of our exit status). So flush and exit without running it."""
    if dist.is_available() and dist.is_initialized():
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
