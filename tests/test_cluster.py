"""The evaluation grid on a dask.distributed cluster (``--scheduler``): a loopback scheduler with two
worker processes (one thread each) runs reproduce, tune and cv with the numbers of ``--jobs 1``, a
worker killed with SIGKILL in the middle of a unit costs nothing but time, a unit whose workers keep
dying is one line and keeps the finished units, and an unreachable scheduler is one line, exit 2."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from localstdp.cli import main

distributed = pytest.importorskip("distributed")
# the scheduler's HTTP server (no dashboard) moves to another port when 8787 is taken
pytestmark = pytest.mark.filterwarnings("ignore:Port 8787 is already in use")

# a two-method, two-seed mnist-3v5 reproduce, cut down to seconds, with one frontier point (a frontier step)
TINY = ["reproduce", "--tasks", "mnist-3v5", "--methods", "local", "backprop", "--seeds", "2", "--frontier-seeds", "1",
        "--epochs", "2", "--n-attack", "16", "--pgd-steps", "3", "--pgd-restarts", "1", "--square-queries", "5",
        "--no-autoattack", "--val-attack", "8", "--no-diagnostics", "--no-progress",
        "--set", "frontier.backprop_weight_decay=[0.01]", "--set", "frontier.local_lr=[]",
        "--set", "frontier.local_weight_decay=[]", "--set", "frontier.local_epochs=[]",
        "--set", "frontier.backprop_lr=[]", "--set", "frontier.local_targets=[]"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the reference runs in this process with one torch thread, as every worker does
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cluster():
    """A scheduler and two worker processes (each under its nanny, which restarts it if it dies) on
    127.0.0.1, closed at the end of the module."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=logging.CRITICAL) as lc, \
            distributed.Client(lc.scheduler_address, timeout=30) as client:
        client.wait_for_workers(2, timeout=60)
        # the workers import torch while this process runs the reference
        warm = [client.submit(_warm, pure=False, workers=[w]) for w in client.scheduler_info()["workers"]]
        yield lc, client
        del warm


def _warm() -> None:
    # what a unit's first run on a worker would otherwise pay: the imports (ART's too) and the task's data
    import art.attacks.evasion  # noqa: F401

    import localstdp.evaluation.units  # noqa: F401
    from localstdp.evaluation.cluster import worker_dataset
    from localstdp.evaluation.plan import task_config

    worker_dataset(task_config("mnist-3v5"))


def _numbers(res: dict) -> list[dict]:
    drop = ("wall_seconds", "history")  # per-example results and every number; not the timings
    return [{k: v for k, v in r.items() if k not in drop} for r in res["rows"]]


def _same(a: dict, b: dict) -> None:
    assert _numbers(a) == _numbers(b) and a["matched"] == b["matched"]
    assert [{k: v for k, v in r.items() if k != "wall_seconds"} for r in a["frontier_rows"]] == \
        [{k: v for k, v in r.items() if k != "wall_seconds"} for r in b["frontier_rows"]]
    assert a["comparisons"] == b["comparisons"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("jobs1")
    assert main([*TINY, "--jobs", "1", "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text())


def test_reproduce_on_the_cluster_gives_the_numbers_of_jobs_1(cluster, reference, tmp_path):
    lc, _ = cluster
    assert main([*TINY, "--scheduler", lc.scheduler_address, "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    _same(res, reference)
    assert res["settings"]["scheduler"] == lc.scheduler_address
    assert len(res["rows"]) == 4 and len(res["frontier_rows"]) == 2  # the frontier's local point is the panel's
    # the client wrote every unit and model into the run directory
    units = tmp_path / "units" / "mnist-3v5"
    assert sorted(p.name for p in units.glob("*.json")) == ["frontier-backprop:weight_decay=0.01-seed0.json",
                                                            "panel-seed0.json", "panel-seed1.json"]
    assert len(list(units.glob("panel-seed*/*/model.safetensors"))) == 4


def _executing(dask_worker) -> list[str]:
    return [str(ts.key) for ts in dask_worker.state.executing]


def _kill_one_mid_unit(client, run: threading.Thread, after=lambda: True) -> tuple[int, str]:
    """SIGKILL the process of a worker that is running a unit (once ``after()`` holds); (pid, unit key)."""
    pids = client.run(os.getpid)
    while run.is_alive():
        busy = {w: keys for w, keys in client.run(_executing).items() if keys}
        if busy and after():
            worker, keys = next(iter(busy.items()))
            time.sleep(0.1)  # into the unit
            if keys[0] in client.run(_executing, workers=[worker])[worker]:
                os.kill(pids[worker], signal.SIGKILL)
                return pids[worker], keys[0]
        time.sleep(0.02)
    pytest.fail("the run ended before a unit could be killed")


def _run_in_thread(args) -> tuple[threading.Thread, dict]:
    box: dict = {}
    th = threading.Thread(target=lambda: box.update(rc=main(args)), daemon=True)
    th.start()
    return th, box


@pytest.mark.slow  # about 9 s idle: a dask worker SIGKILLed mid-unit
def test_a_killed_worker_costs_time_not_results(cluster, reference, tmp_path):
    lc, client = cluster
    th, box = _run_in_thread([*TINY, "--scheduler", lc.scheduler_address, "--out", str(tmp_path)])
    pid, key = _kill_one_mid_unit(client, th)
    print(f"killed worker process {pid} running {key}")
    assert th.is_alive()  # killed mid-run
    th.join(timeout=240)
    assert not th.is_alive() and box["rc"] == 0
    _same(json.loads((tmp_path / "results.json").read_text()), reference)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    client.wait_for_workers(2, timeout=60)  # the nanny started a new worker process


@pytest.mark.slow  # about 12 s idle
def test_a_unit_whose_workers_keep_dying_is_one_line_and_keeps_the_finished_units(cluster, reference, tmp_path,
                                                                                   capsys):
    lc, client = cluster
    client.wait_for_workers(2, timeout=60)
    lc.scheduler.allowed_failures = 0  # the first death of a unit's worker gives it up (default 3)
    parts = lambda: list((tmp_path / "units").glob("*/*/*/model.safetensors"))  # noqa: E731  (finished models)
    try:
        th, box = _run_in_thread([*TINY, "--scheduler", lc.scheduler_address, "--out", str(tmp_path)])
        _kill_one_mid_unit(client, th, after=lambda: len(parts()) >= 1)
        th.join(timeout=240)
    finally:
        lc.scheduler.allowed_failures = 3
    assert not th.is_alive() and box["rc"] == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("localstdp: error:")]
    assert len(err) == 1 and "was lost: every worker that ran it died" in err[0] and "--resume" in err[0]
    assert parts()  # the models finished before stay
    client.wait_for_workers(2, timeout=60)
    assert main([*TINY, "--scheduler", lc.scheduler_address, "--out", str(tmp_path), "--resume"]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["settings"]["parts_resumed"] + res["settings"]["units_resumed"] >= 1  # the kept work is reused
    _same(res, reference)


def test_tune_and_cv_on_the_cluster_give_the_numbers_of_one_process(cluster):
    from localstdp.evaluation.cv import cross_validate
    from localstdp.evaluation.plan import task_config
    from localstdp.evaluation.tune import tune

    lc, client = cluster
    cfg = task_config("iris-1v2").with_overrides(epochs=5)
    grid = {"train.lr": [0.05, 0.2]}
    here, there = (tune(cfg, "local", grid, 2, scheduler=s) for s in (None, client))
    drop = ("wall_seconds", "threads", "jobs", "scheduler")
    assert {k: v for k, v in there.items() if k not in drop} == {k: v for k, v in here.items() if k not in drop}
    assert there["scheduler"] == lc.scheduler_address
    grids = {"local": {"train.lr": [0.05, 0.2]}}
    here, there = (cross_validate(cfg, ["local", "backprop"], grids, repeats=1, folds=2, inner_folds=2,
                                  scheduler=s) for s in (None, lc.scheduler_address))
    strip = lambda r: {k: v for k, v in r.items() if k != "wall_seconds"}  # noqa: E731
    assert [strip(f) for f in there["outer_folds"]] == [strip(f) for f in here["outer_folds"]]
    assert there["summary"] == here["summary"] and there["differences"] == here["differences"]


@pytest.mark.slow  # about 7.5 s idle: two process pools
def test_cv_and_tune_take_jobs_too():
    # --jobs N: the same units in N local worker processes (tune and cv ran in one process before)
    from localstdp.evaluation.cv import cross_validate
    from localstdp.evaluation.plan import task_config
    from localstdp.evaluation.tune import tune

    cfg = task_config("iris-1v2").with_overrides(epochs=3)
    here, there = (cross_validate(cfg, ["local", "backprop"], {}, repeats=1, folds=2, inner_folds=2, jobs=j)
                   for j in (1, 2))
    strip = lambda r: {k: v for k, v in r.items() if k != "wall_seconds"}  # noqa: E731
    assert [strip(f) for f in there["outer_folds"]] == [strip(f) for f in here["outer_folds"]] and there["jobs"] == 2
    with pytest.raises(Exception, match="jobs = 0"):
        tune(cfg, "local", {"train.lr": [0.1]}, 1, jobs=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_is_one_line_and_exit_2(tmp_path, capsys):
    address = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    rc = main([*TINY, "--scheduler", address, "--scheduler-timeout", "1", "--out", str(tmp_path)])
    assert rc == 2 and time.monotonic() - t0 < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"localstdp: error: cannot reach the dask scheduler at {address} within 1 s")
    assert not any("Traceback" in line for line in err)
    for cmd in (["tune", "--config", "iris", "--rule", "local", "--grid", "train.lr=0.1,0.2"],
                ["cv", "--config", "iris"]):
        assert main([*cmd, "--scheduler", address, "--scheduler-timeout", "1", "--out", str(tmp_path / cmd[0])]) == 2
        assert "cannot reach the dask scheduler" in capsys.readouterr().err


def test_dask_is_optional(monkeypatch, tmp_path, capsys):
    # importing the package, and a run without --scheduler, never import dask
    code = ("import sys, localstdp, localstdp.evaluation.grid, localstdp.evaluation.tune, localstdp.evaluation.cv, "
            "localstdp.evaluation.cluster, localstdp.cli; assert 'distributed' not in sys.modules and 'dask' not in "
            "sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    assert main([*TINY, "--scheduler", "tcp://127.0.0.1:8786", "--out", str(tmp_path)]) == 2
    assert "pip install localstdp[cluster]" in capsys.readouterr().err


@pytest.mark.slow
def test_mnist_3v5_two_methods_two_seeds_survive_a_killed_worker(cluster, tmp_path):
    # the target: a two-method, two-seed mnist-3v5 reproduce at the full settings (the task's
    # epochs, 500 attacked test examples, the whole attack suite, validation attacks, diagnostics) on
    # the 2-worker loopback cluster, one worker killed in the middle of a unit: the numbers of --jobs 1
    lc, client = cluster
    full = ["reproduce", "--tasks", "mnist-3v5", "--methods", "local", "backprop", "--seeds", "2", "--frontier-seeds",
            "0", "--no-progress"]
    assert main([*full, "--jobs", "1", "--out", str(tmp_path / "jobs1")]) == 0
    client.wait_for_workers(2, timeout=60)
    th, box = _run_in_thread([*full, "--scheduler", lc.scheduler_address, "--out", str(tmp_path / "cluster")])
    pid, key = _kill_one_mid_unit(client, th)
    print(f"killed worker process {pid} running {key}")
    th.join(timeout=1800)
    assert not th.is_alive() and box["rc"] == 0
    ref, res = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("jobs1", "cluster"))
    _same(res, ref)
    client.wait_for_workers(2, timeout=60)
