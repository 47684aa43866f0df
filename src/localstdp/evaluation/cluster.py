"""The evaluation grid on a dask.distributed cluster (``reproduce``, ``tune`` and ``cv`` with ``--scheduler``).

``--jobs N`` runs the units in N local worker processes; ``--scheduler tcp://host:8786`` sends the same
units to the workers of a dask scheduler instead (a ``distributed.Client`` implements the
``concurrent.futures`` interface the local pool loop uses). Every unit runs as it does in a local
worker: one torch thread, ART quiet, the same seeds, its data loaded from its config by the worker
(unless the caller passed the data in memory: then it travels inside every task, which suits small
data). Its result travels back to the client as the future's result and the CLIENT writes it into the
run directory, so workers need no shared file system: they need the installed package (same version)
and the data its configs read (bundled data ships with the package; files such as Fashion-MNIST's IDX
files must be present on each worker).

A worker that dies (killed, out of memory, its machine gone) loses no unit: the scheduler runs its
tasks again on another worker, up to its ``distributed.scheduler.allowed-failures`` (default 3) deaths
per task; past that the unit's ``KilledWorker`` becomes one line (:class:`ClusterError`) and the units
finished so far stay written for ``--resume``. dask is an optional dependency
(``pip install localstdp[cluster]``), imported only here and only when a scheduler is given.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..checkpoint import atomic_write_bytes
from ..errors import ConfigError, LocalSTDPError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 20.0  # seconds to reach the scheduler (--scheduler-timeout)
INSTALL_HINT = "pip install localstdp[cluster]"


class ClusterError(LocalSTDPError):
    """A unit the cluster could not finish (its workers kept dying) or a scheduler that went away."""

    exit_code = 1


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ConfigError(f"--scheduler needs dask.distributed, which is not installed: {INSTALL_HINT}") from None
    return distributed


def connect(address: str, timeout: float = CONNECT_TIMEOUT):
    """A ``distributed.Client`` of the scheduler at ``address``; a :class:`ConfigError` (one line, exit
    status 2) when it cannot be reached within ``timeout`` seconds."""
    distributed = _distributed()
    if timeout <= 0:
        raise ConfigError(f"scheduler timeout {timeout!r}: expected a number of seconds > 0")
    try:
        return distributed.Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot reach the dask scheduler at {address} within {timeout:g} s ({exc})") from None


class Cluster:
    """The client side of a run on a cluster: ``with Cluster(scheduler) as c`` connects (``scheduler`` an
    address, or a ``distributed.Client`` the caller owns and keeps open), submits units, and turns the
    cluster's failures into :class:`ClusterError`."""

    def __init__(self, scheduler, timeout: float = CONNECT_TIMEOUT):
        self.own = isinstance(scheduler, str)
        self.client = connect(scheduler, timeout) if self.own else scheduler
        self.address = self.client.scheduler.address if not self.own else scheduler
        self.executor = self.client.get_executor(pure=False, retries=0)  # concurrent.futures, as the local pool
        self.tag = uuid.uuid4().hex[:8]
        from .plan import package_versions

        self.versions = package_versions()  # every worker must run the same

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        if self.own:
            self.client.close()

    def workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def describe(self) -> str:
        n = self.workers()
        return f"the dask cluster at {self.address} ({n} worker(s){', waiting for workers' if n == 0 else ''})"

    def submit(self, name: str, fn: Callable, *args, priority: int = 0):
        """Run ``fn(*args)`` on a worker as a local pool worker runs it (:func:`_in_worker`); a worker
        that dies while running it is replaced by the scheduler, no retry on an exception (a bug or a
        bad config is reported once)."""
        import dask

        key = f"localstdp-{name}-{self.tag}-{uuid.uuid4().hex[:6]}"  # named in the workers' logs
        # a part's inputs (the local rule's part: its kept epoch weights and adversarial examples) are tens
        # of MB on MNIST and travel with the task on purpose: a dead worker then loses nothing to recompute
        with dask.config.set({"distributed.admin.large-graph-warning-threshold": "1GiB"}):
            return self.executor.submit(_in_worker, self.versions, fn, *args, key=key, priority=priority)

    def result(self, future, what: str, kept: str = ""):
        """The future's result; a unit lost with its workers, or a lost scheduler, as one line."""
        distributed = _distributed()
        try:
            return future.result()
        except distributed.KilledWorker as exc:
            n = getattr(exc, "allowed_failures", None)
            last = getattr(getattr(exc, "last_worker", None), "address", "?")
            raise ClusterError(f"{what} was lost: every worker that ran it died ({'' if n is None else n + 1} "
                               f"worker(s), the last {last}; the scheduler gives a unit up after "
                               f"distributed.scheduler.allowed-failures = {n} deaths: see the workers' logs){kept}"
                               ) from None
        except (concurrent.futures.CancelledError, distributed.comm.CommClosedError) as exc:
            raise ClusterError(f"lost the dask scheduler at {self.address} while running {what} "
                               f"({type(exc).__name__}{': ' if str(exc) else ''}{exc}){kept}") from None

    def wait(self, futures: Iterable, timeout: float = 1.0) -> set:
        done, _ = concurrent.futures.wait(list(futures), timeout=timeout,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        return set(done)

    def cancel(self, futures: Iterable) -> None:
        for f in list(futures):
            f.cancel()  # the executor's future cancels its task on the cluster


def _in_worker(versions: dict, fn: Callable, *args):
    """What a local pool worker sets up (:func:`local_worker_init`), per task: one torch thread (a dask worker
    should run one task at a time: ``--nthreads 1``), ART quiet; then ``fn(*args)``. A worker whose
    localstdp, library or Python versions differ from the client's refuses (its numbers could differ;
    not the source hash: an edited checkout is not told apart, as with --jobs)."""
    import socket

    import torch

    from .plan import package_versions

    own = package_versions()
    if own != versions:
        diff = ", ".join(f"{k} {own.get(k)} (client {versions.get(k)})" for k in sorted(set(own) | set(versions))
                         if own.get(k) != versions.get(k))
        raise ConfigError(f"the dask worker on {socket.gethostname()} runs other versions: {diff}; install the "
                          "client's localstdp and libraries on every worker")

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    logging.getLogger("art").setLevel(logging.WARNING)
    return fn(*args)


_DATA: dict[str, object] = {}  # per worker process: the data sets its units loaded, by config


def worker_dataset(cfg, ds=None):
    """``ds`` when the caller sent one, else the task's data set loaded from its config on this worker
    (kept for the worker's next unit of the same data)."""
    if ds is not None:
        return ds
    import dataclasses
    import json

    from ..data import load_dataset

    key = json.dumps(dataclasses.asdict(cfg.data), sort_keys=True, default=str)
    if key not in _DATA:
        _DATA[key] = load_dataset(cfg.data)
    return _DATA[key]


# --------------------------------------------------------------------------------------------------
# reproduce: the grid's steps


def _read_dir(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")}


def grid_step(step, cfg, settings, fingerprint: str, ds, local_files: dict[str, bytes] | None):
    """One grid step on a worker (grid.run_step without the shared directory): a frontier unit's
    record, or a part as the files :func:`localstdp.evaluation.units.save_part` writes, by name (the
    local rule's part, which every other method's part reads, arrives the same way)."""
    from .units import load_part, panel_method, save_part

    ds = worker_dataset(cfg, ds)
    if step.kind == "frontier":
        from .units import frontier_unit

        point, seed = step.arg
        return frontier_unit(step.task, cfg, ds, point, seed, settings)
    seed, method = step.arg
    with tempfile.TemporaryDirectory(prefix="localstdp-part-") as tmp:
        local = None
        if local_files is not None:
            (Path(tmp) / "in").mkdir()
            for name, blob in local_files.items():
                (Path(tmp) / "in" / name).write_bytes(blob)
            local = load_part(Path(tmp) / "in")
        part = panel_method(step.task, cfg, ds, seed, method, settings, local)
        save_part(Path(tmp) / "out", method, part, fingerprint)
        return _read_dir(Path(tmp) / "out")


def write_part(path: Path, files: dict[str, bytes]) -> None:
    """A part's files from a worker into its method's directory; part.safetensors last (a directory
    with it holds a whole part, as save_part writes it)."""
    from .units import PART

    path.mkdir(parents=True, exist_ok=True)
    for name in sorted(files, key=lambda n: n == PART):
        atomic_write_bytes(path / name, files[name])


def run_grid_steps(cluster: Cluster, pending: list, finished: set, cfgs, settings, datasets, unit_dir: Path, prints,
                   say: Callable[[str], None], complete: Callable) -> None:
    """grid._run_parallel on a cluster: every ready step submitted at once, the largest (cost) first by
    priority; a panel part's files and a frontier unit's record come back to this process, which
    writes them (``complete``) and then submits the parts that read the local rule's."""
    rank = {st.key: len(pending) - i for i, st in enumerate(pending)}  # pending is sorted largest first
    kept = f"; the finished units are kept in {unit_dir}: run the same command with --resume to continue"
    running: dict = {}
    say(f"units on {cluster.describe()}")
    try:
        while pending or running:
            for st in [st for st in pending if st.needs is None or st.needs in finished]:
                pending.remove(st)
                local = None if st.needs is None else _read_dir(unit_dir / st.needs)
                f = cluster.submit(st.key, grid_step, st, cfgs[st.task], settings, prints[st.task],
                                   datasets.get(st.task), local, priority=rank[st.key])
                running[f] = st
            if not running:
                raise RuntimeError("grid steps wait on steps that are not scheduled")  # a bug in the plan
            for f in cluster.wait(running):
                st = running.pop(f)
                out = cluster.result(f, f"step {st.key}", kept)
                if st.kind == "part":
                    write_part(unit_dir / st.key, out)
                    out = None
                complete(st, out)
            say(f"{len(running)} step(s) on the cluster, {len(pending)} waiting")
    except BaseException:
        cluster.cancel(running)
        raise


# --------------------------------------------------------------------------------------------------
# tune and cv: independent units, their results back in order


def run_units(fn: Callable, items: Sequence[tuple], *, data=None, jobs: int = 1, scheduler=None,
              scheduler_timeout: float = CONNECT_TIMEOUT, on_result: Callable[[int, object], None] = lambda i, r: None,
              names: Sequence[str] | None = None) -> list:
    """``[fn(*items[0], data), fn(*items[1], data), ...]``: in this process (``jobs`` 1, no scheduler), in
    ``jobs`` local worker processes of one thread each, or on the dask cluster at ``scheduler``. ``on_result(i, result)`` is called in this process as each unit finishes (to write
    and count it), in any order; the list comes back in the order of ``items``."""
    if jobs < 1:
        raise ConfigError(f"jobs = {jobs!r}: expected an integer >= 1")
    results: list = [None] * len(items)
    names = names or [str(i) for i in range(len(items))]

    def got(i: int, r) -> None:
        results[i] = r
        on_result(i, r)

    if scheduler is None and (jobs == 1 or len(items) <= 1):
        for i, args in enumerate(items):
            got(i, fn(*args, data))
        return results
    if scheduler is not None:
        with Cluster(scheduler, scheduler_timeout) as cluster:
            log.info("units on %s", cluster.describe())
            running = {cluster.submit(names[i], fn, *args, data, priority=-i): i for i, args in enumerate(items)}
            try:
                while running:
                    for f in cluster.wait(running):
                        i = running.pop(f)
                        got(i, cluster.result(f, f"unit {names[i]}"))
            except BaseException:
                cluster.cancel(running)
                raise
        return results
    _run_local_pool(fn, [(*args, data) for args in items], jobs, got)
    return results


def local_worker_init(parent: int) -> None:
    """A local pool worker (``--jobs``; grid._worker_init too): one thread (the workers share the cores),
    ART quiet, Ctrl-C left to the parent, and it exits when the parent is gone (killed, even by SIGKILL)
    instead of computing on unseen."""
    import signal
    import threading
    import time

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    logging.getLogger("art").setLevel(logging.WARNING)

    def watch() -> None:  # ``parent`` is the pid the parent passed: it may be gone before this runs
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="localstdp-parent-watch", daemon=True).start()


def _run_local_pool(fn: Callable, items: Sequence[tuple], jobs: int, got: Callable) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    ex = ProcessPoolExecutor(max_workers=min(jobs, len(items)), mp_context=ctx, initializer=local_worker_init,
                             initargs=(os.getpid(),))
    try:
        running = {ex.submit(fn, *args): i for i, args in enumerate(items)}
        while running:
            done, _ = wait(set(running), timeout=1.0, return_when=FIRST_COMPLETED)
            for f in done:
                got(running.pop(f), f.result())
    except BaseException:
        for p in list(getattr(ex, "_processes", {}).values()):
            p.terminate()
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown()
