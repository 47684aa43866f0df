"""Layer-pipeline and data-parallel training (localstdp.parallel) against the single-process loop.

Workers are real processes joined by gloo on 127.0.0.1: through torch's elastic launcher
(``parallel.launch``, what ``--nproc`` uses) or through torchrun's environment variables. The
pipeline must reproduce the single-process weights bit for bit (same seed, one thread per
process); data parallel must agree up to float summation order.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from localstdp import parallel
from localstdp.checkpoint import load_checkpoint
from localstdp.cli import main
from localstdp.config import config_from_dict
from localstdp.data import Dataset
from localstdp.errors import ConfigError
from localstdp.train import Interrupted, load_run, train

ROOT = Path(__file__).resolve().parents[1]


def synthetic(n_train=70, n_test=23, d=12, k=3, seed=0) -> Dataset:
    """A tiny in-memory data set: 70 examples give a last partial batch of 6 at batch size 16."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_train + n_test, d, generator=g)
    y = torch.randint(0, k, (n_train + n_test,), generator=g)
    return Dataset("synthetic", x[:n_train], y[:n_train], x[n_train:], y[n_train:], k, tuple(range(k)), (d,))


def config(mode="rate", epochs=2, hidden=(16, 8, 8), batch_size=16, lr_schedule="constant", **rule):
    return config_from_dict({
        "data": {"name": "iris"},  # not loaded: the tests pass the data set in
        "model": {"hidden": list(hidden)},
        "train": {"epochs": epochs, "batch_size": batch_size, "lr": 0.5, "seed": 3, "lr_schedule": lr_schedule},
        "rule": {"mode": mode, **rule},
        "backprop": {"optimizer": "adam", "lr": 0.01},
    })


@pytest.fixture
def one_thread():
    """The workers run one thread each; the single-process reference must too."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tensors(model):
    return model.state_dict()


def assert_equal_models(a, b):
    sa, sb = tensors(a), tensors(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs by {(sa[k] - sb[k]).abs().max().item()}"


def test_partition_is_contiguous_and_optimal():
    g = torch.Generator().manual_seed(0)
    for L, parts in [(1, 1), (4, 2), (5, 3), (6, 6), (7, 3)]:
        costs = (torch.rand(L, generator=g) * 10).tolist()
        stages = parallel.partition_layers(costs, parts)
        assert stages[0][0] == 0 and stages[-1][1] == L and len(stages) == parts
        assert all(lo < hi for lo, hi in stages) and all(a[1] == b[0] for a, b in itertools.pairwise(stages))
        got = max(sum(costs[lo:hi]) for lo, hi in stages)
        best = min(  # brute force over every choice of cut points
            max(sum(costs[lo:hi]) for lo, hi in zip((0, *cuts), (*cuts, L)))
            for cuts in itertools.combinations(range(1, L), parts - 1)
        )
        assert got == pytest.approx(best)
    # the wide benchmark MLP: the two big hidden-to-hidden layers go to different ranks
    assert parallel.partition_layers(parallel.layer_costs([784, 2048, 2048, 2048, 10]), 2) == [(0, 2), (2, 4)]
    with pytest.raises(ConfigError):
        parallel.partition_layers([1.0, 2.0], 3)


def test_backprop_data_parallel_uses_ddp_and_matches(one_thread):
    # first of the launcher tests: its launch starts the forkserver with torch._dynamo preloaded
    ds, cfg = synthetic(), config(lr_schedule="cosine")  # every rank follows the schedule
    ref = train(cfg, "backprop", dataset=ds)
    m = parallel.launch(2, cfg, "backprop", None, mode="data", dataset=ds, threads=1, keep_model=True)
    sr, sm = tensors(ref["model"]), tensors(m["model"])
    for k in sr:
        torch.testing.assert_close(sm[k], sr[k], rtol=1e-4, atol=1e-5)
    assert [h["loss"] for h in m["history"]] == pytest.approx([h["loss"] for h in ref["history"]], rel=1e-5)


@pytest.mark.parametrize("rule", [{"mode": "rate"}, {"mode": "timing"}, {"mode": "rate", "center": 0.9},
                                  {"mode": "rate", "lr_schedule": "cosine"}],
                         ids=["rate", "timing", "rate-center", "rate-cosine"])
def test_pipeline_three_ranks_equals_single_process_bit_for_bit(tmp_path, one_thread, rule):
    ds, cfg = synthetic(), config(**rule)
    ref = train(cfg, "local", tmp_path / "single", dataset=ds)
    m = parallel.launch(3, cfg, "local", tmp_path / "pipe", mode="pipeline", dataset=ds, threads=1, keep_model=True)
    stages = parallel.partition_layers(parallel.layer_costs([12, 16, 8, 8, 3]), 3)
    assert m["parallel"]["stages"] == [list(s) for s in stages] and len(stages) == 3
    assert_equal_models(ref["model"], m["model"])
    # the loss is computed on the last stage with the same operations: equal, not merely close
    assert [h["loss"] for h in m["history"]] == [h["loss"] for h in ref["history"]]
    assert m["test_accuracy"] == pytest.approx(ref["test_accuracy"], abs=1e-6)
    # rank 0 wrote a complete run directory, with the same weights as the single-process one
    cfg2, model2, method = load_run(tmp_path / "pipe")
    assert method == "local" and cfg2 == cfg
    assert_equal_models(ref["model"], model2)
    assert {p.name for p in (tmp_path / "pipe").iterdir()} >= {"model.safetensors", "metrics.json", "config.toml",
                                                               "checkpoint.safetensors"}
    # rank 0's checkpoint holds what every owner holds: weights, rule state (running means of
    # rule.center), shuffling RNG -- tensor for tensor the single-process checkpoint
    single, _ = load_checkpoint(tmp_path / "single" / "checkpoint.safetensors")
    pipe, _ = load_checkpoint(tmp_path / "pipe" / "checkpoint.safetensors")
    assert single.keys() == pipe.keys()
    assert any(k.startswith("rule.pre_mean.") for k in single) == ("center" in rule)
    for k in single:
        assert torch.equal(single[k], pipe[k]), k


@pytest.mark.parametrize("schedule,rule", [("constant", {}), ("linear", {}), ("constant", {"center": 0.9})],
                         ids=["constant", "linear", "center"])
def test_data_parallel_two_ranks_matches_single_process(tmp_path, one_thread, schedule, rule):
    # rule.center: the running presynaptic means move by the whole batch's mean on every rank
    ds, cfg = synthetic(), config(lr_schedule=schedule, **rule)
    ref = train(cfg, "local", dataset=ds)
    m = parallel.launch(2, cfg, "local", tmp_path / "data", mode="data", dataset=ds, threads=1, keep_model=True)
    sr, sm = tensors(ref["model"]), tensors(m["model"])
    for k in sr:
        torch.testing.assert_close(sm[k], sr[k], rtol=1e-5, atol=1e-6)
    # the shards were really trained on: the weights moved away from the initialisation
    init = tensors(parallel.build_model(ds.n_features, cfg.model.hidden, ds.n_classes, "sigmoid", cfg.train.seed))
    assert all((sm[k] - init[k]).abs().max() > 1e-3 for k in sr)
    assert [h["loss"] for h in m["history"]] == pytest.approx([h["loss"] for h in ref["history"]], rel=1e-5)


@pytest.mark.parametrize("mode", ["pipeline", "data"])
def test_world_size_one_in_process(one_thread, mode):
    ds, cfg = synthetic(), config(epochs=1)
    ref = train(cfg, "local", dataset=ds)
    m = parallel.run(cfg, "local", None, mode=mode, dataset=ds)
    if mode == "pipeline":
        assert_equal_models(ref["model"], m["model"])
    else:
        for k, v in tensors(ref["model"]).items():
            torch.testing.assert_close(tensors(m["model"])[k], v, rtol=1e-5, atol=1e-6)
    assert not torch.distributed.is_initialized()  # the group of one was left again


def test_pipeline_stop_and_resume_equals_uninterrupted(tmp_path, one_thread):
    ds, cfg = synthetic(), config(epochs=2)
    ref = train(cfg, "local", dataset=ds)
    calls = iter(range(100))
    stop = lambda: signal.SIGTERM if next(calls) == 6 else 0  # the first batch of epoch 2 (5 batches an epoch)
    with pytest.raises(Interrupted) as exc:
        parallel.run(cfg, "local", tmp_path, mode="pipeline", dataset=ds, should_stop=stop)
    assert exc.value.exit_code == 128 + signal.SIGTERM
    assert (tmp_path / "checkpoint.safetensors").exists() and not (tmp_path / "model.safetensors").exists()
    m = parallel.run(cfg, "local", tmp_path, mode="pipeline", dataset=ds, resume=True)
    assert_equal_models(ref["model"], m["model"])
    assert [h["loss"] for h in m["history"]] == [h["loss"] for h in ref["history"]]


def test_cli_usage_errors(tmp_path, capsys):
    cfg = str(ROOT / "configs" / "iris.toml")
    base = ["train", "--config", cfg, "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(base + ["--rule", "backprop", "--parallel", "pipeline"]) == 2
    assert "pipeline needs a layer-local rule" in capsys.readouterr().err
    assert main(base + ["--nproc", "2"]) == 2
    assert "--nproc needs --parallel" in capsys.readouterr().err
    assert main(base + ["--parallel", "pipeline", "--nproc", "9"]) == 2
    err = capsys.readouterr().err
    assert "needs at least 9 layers" in err and len(err.strip().splitlines()) == 1
    env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:  # torchrun started 2 copies without --parallel: refuse before touching the network
        assert main(base) == 2
        assert "pass --parallel pipeline or --parallel data" in capsys.readouterr().err
        assert main(base + ["--parallel", "data", "--nproc", "2"]) == 2
        assert "under torchrun set --nproc_per_node" in capsys.readouterr().err
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------------------------------
# Faults: a dead or hung worker ends the run non-zero within a bounded time, never a hang.
# ---------------------------------------------------------------------------------------------


def _long_config(tmp_path: Path) -> Path:
    text = (ROOT / "configs" / "iris.toml").read_text()
    path = tmp_path / "long.toml"
    path.write_text(text.replace("epochs = 30", "epochs = 1000000"))
    assert "epochs = 1000000" in path.read_text()
    return path


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _wait_for(path: Path, procs, limit=120.0):
    t0 = time.monotonic()
    while not path.exists():
        for p in procs:
            assert p.poll() is None, p.communicate()[1]
        assert time.monotonic() - t0 < limit, "training did not start"
        time.sleep(0.1)


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))


@pytest.mark.slow  # about 5 s idle: a torchrun group, a rank SIGKILLed
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to find the workers")
def test_killed_worker_ends_nproc_run_nonzero(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "localstdp", "train", "--config", str(_long_config(tmp_path)), "--parallel",
           "pipeline", "--nproc", "3", "--out", str(out), "--no-progress", "--dist-timeout", "10"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        _wait_for(out / "checkpoint.safetensors", [p])  # rank 0 finished an epoch: all workers run
        workers = [w for c in _children(p.pid) for w in _children(c)]
        assert len(workers) == 3, workers
        t0 = time.monotonic()
        os.kill(workers[1], signal.SIGKILL)
        _, err = p.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 1
    assert elapsed < 60
    assert "localstdp: error: worker rank" in err.strip().splitlines()[-1]
    assert "Traceback" not in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # about 5 s idle: waits out a collective timeout
def test_hung_peer_times_out_under_torchrun_env(tmp_path):
    """Two processes joined through torchrun's variables; one stops (SIGSTOP): the other must
    give up after --dist-timeout with one error line and exit status 1."""
    out, port = tmp_path / "run", _free_port()
    cmd = [sys.executable, "-m", "localstdp", "train", "--config", str(_long_config(tmp_path)), "--parallel",
           "pipeline", "--out", str(out), "--no-progress", "--dist-timeout", "2"]
    procs = []
    for rank in range(2):
        env = _env() | {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    try:
        _wait_for(out / "checkpoint.safetensors", procs)
        os.kill(procs[1].pid, signal.SIGSTOP)
        t0 = time.monotonic()
        _, err = procs[0].communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert procs[0].returncode == 1
    assert elapsed < 2 + 20
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("localstdp: error: rank 0 of 2:") and "timed out" in lines[0].lower()


_STOP_SCRIPT = r"""
import sys, torch
from localstdp.parallel.comm import _init
from localstdp.parallel.pipeline import _pipeline_epoch
from localstdp.parallel.setup import _setup
from localstdp.train import RunState, batches
from safetensors.torch import save_file
sys.path.insert(0, sys.argv[1])
from test_parallel import config, synthetic

stop_at, ahead, out = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(1)
_init(20)
ds, cfg = synthetic(n_train=150), config(epochs=1, hidden=(16, 8, 8, 8))
run = _setup(cfg, "local", "pipeline", ds, 20)
calls = iter(range(1000))
run.should_stop = lambda: 15 if next(calls) == stop_at else 0  # rank 0 alone asks
idx = batches(len(ds.y_train), cfg.train.batch_size, torch.arange(len(ds.y_train)))
state = RunState()
with torch.no_grad():
    stopped, _ = _pipeline_epoch(run, idx, state, recv_ahead=ahead)
    first_stop = state.step
    again = _pipeline_epoch(run, idx, state, recv_ahead=ahead)  # resume in place from the stop
lo, hi = run.stages[run.rank]
save_file({f"{l}.{n}": p.detach().clone() for l in range(lo, hi) for n, p in run.model.layers[l].named_parameters()},
          f"{out}.{run.rank}.safetensors")
print(stopped, first_stop, again[0], state.step)
torch.distributed.destroy_process_group()
"""


# ahead 3 about 4 s idle: slow (make test-all); ahead 1 stays in make test
@pytest.mark.parametrize("ahead", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_pipeline_stop_mid_epoch_across_three_ranks(tmp_path, one_thread, ahead):
    """Rank 0 stops after batch 4 of 10: every stage stops at the same batch, with the receives it had
    posted ahead answered (none is left waiting), and going on from there gives the uninterrupted
    weights bit for bit."""
    from safetensors.torch import load_file

    from localstdp.model import build_network
    from localstdp.train import batches, make_learner, schedule_lr

    ds, cfg = synthetic(n_train=150), config(epochs=1, hidden=(16, 8, 8, 8))
    model = build_network(cfg.model, ds.n_features, ds.n_classes, cfg.train.seed)
    learner = make_learner("local", model, cfg, ds.n_classes)
    idx = batches(len(ds.y_train), cfg.train.batch_size, torch.arange(len(ds.y_train)))
    for b, i in enumerate(idx):  # the single-process steps over the same batches
        schedule_lr(learner, cfg, 0, b, len(idx))
        learner.step(ds.x_train[i], ds.y_train[i])
    port, script = _free_port(), tmp_path / "stop.py"
    script.write_text(_STOP_SCRIPT)
    procs = []
    for rank in range(3):
        env = _env() | {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "3", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(script), str(ROOT / "tests"), "3", str(ahead),
                                       str(tmp_path / "w")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env))
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-2000:]
        assert o.split() == ["True", "4", "False", "10"]  # stopped at batch 4, then ran to the end
    got = {}
    for rank in range(3):
        got |= load_file(tmp_path / f"w.{rank}.safetensors")
    want = dict(model.layers.named_parameters())
    assert set(got) == set(want)
    for k, v in want.items():
        assert torch.equal(got[k], v.detach()), k


_EXCHANGE_SCRIPT = r"""
import sys, torch
from localstdp.parallel.comm import _init
from localstdp.parallel.data import _data_epoch, choose_exchange
from localstdp.parallel.setup import _setup
from localstdp.train import RunState, batches
from safetensors.torch import save_file
sys.path.insert(0, sys.argv[1])
from test_parallel import config, synthetic

exchange, center, out = sys.argv[2], float(sys.argv[3]), sys.argv[4]
torch.set_num_threads(1)
_init(20)
ds = synthetic(n_train=150)
cfg = config(epochs=1, hidden=(16, 8, 8), **({"center": center} if center else {}))
run = _setup(cfg, "local", "data", ds, 20)
run.exchange = exchange
idx = batches(len(ds.y_train), cfg.train.batch_size, torch.arange(len(ds.y_train)))
state = RunState()
with torch.no_grad():
    _data_epoch(run, idx, state)
if run.rank == 0:
    save_file({k: v.detach().clone() for k, v in run.model.state_dict().items()}, out)
run.exchange = "auto"
print(choose_exchange(run, 16), state.epoch_loss)
torch.distributed.destroy_process_group()
"""


# the centred case about 5 s idle: slow (make test-all); the plain one stays in make test
@pytest.mark.parametrize("center", [0.0, pytest.param(0.9, marks=pytest.mark.slow)], ids=["plain", "center"])
def test_data_parallel_activity_exchange_matches_single_process(tmp_path, one_thread, center):
    """Data parallel gathering the shards' activities (each rank then runs the whole batch's update)
    against the single-process steps over the same batches, with and without rule.center; "auto"
    picks the all-reduce of updates on this small net (its weights are few against its activities)."""
    from safetensors.torch import load_file

    from localstdp.model import build_network
    from localstdp.train import batches, make_learner, schedule_lr

    ds = synthetic(n_train=150)
    cfg = config(epochs=1, hidden=(16, 8, 8), **({"center": center} if center else {}))
    model = build_network(cfg.model, ds.n_features, ds.n_classes, cfg.train.seed)
    learner = make_learner("local", model, cfg, ds.n_classes)
    idx = batches(len(ds.y_train), cfg.train.batch_size, torch.arange(len(ds.y_train)))
    loss = 0.0
    for b, i in enumerate(idx):
        schedule_lr(learner, cfg, 0, b, len(idx))
        loss += learner.step(ds.x_train[i], ds.y_train[i]) * len(i)
    port, script = _free_port(), tmp_path / "exchange.py"
    script.write_text(_EXCHANGE_SCRIPT)
    procs = [subprocess.Popen([sys.executable, str(script), str(ROOT / "tests"), "activities", str(center),
                               str(tmp_path / "w.safetensors")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env() | {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "3",
                                                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
             for rank in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-2000:]
        word, got_loss = o.split()
        assert word == "updates"  # what auto would have chosen here
        assert float(got_loss) == pytest.approx(loss, rel=1e-5)
    got = load_file(tmp_path / "w.safetensors")
    init = build_network(cfg.model, ds.n_features, ds.n_classes, cfg.train.seed).state_dict()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6)
        assert (v - init[k]).abs().max() > 1e-3  # the layers did learn
