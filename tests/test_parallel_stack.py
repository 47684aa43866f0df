"""Pipelines of any nn.Sequential stack (LocalLearner: MLP and CNN) and of the layer-local peers
(drtp, ff), data parallel for every learner, against the single-process loop.

Workers are real processes joined by gloo on 127.0.0.1 (``parallel.launch``, what ``--nproc``
uses), one thread each; the single-process reference runs with one thread too. A pipeline must
reproduce the single-process weights bit for bit (torch.equal); data parallel agrees up to float
summation order.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from localstdp import parallel
from localstdp.checkpoint import load_checkpoint
from localstdp.config import config_from_dict
from localstdp.data import Dataset
from localstdp.errors import ConfigError
from localstdp.train import batches, schedule_lr, shuffle_generator, train


def images(n_train=50, n_test=17, side=6, k=3, seed=0) -> Dataset:
    """Tiny flat 6x6 'images': 50 examples give a last partial batch of 2 at batch size 16."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_train + n_test, side * side, generator=g)
    y = torch.randint(0, k, (n_train + n_test,), generator=g)
    return Dataset("synthetic", x[:n_train], y[:n_train], x[n_train:], y[n_train:], k, tuple(range(k)), (side * side,))


def config(epochs=2, hidden=(16, 8, 8), rule=None, peers=None, model=None, **train_opts):
    return config_from_dict({
        "data": {"name": "iris"},  # not loaded: the tests pass the data set in
        "model": {"hidden": list(hidden), **(model or {})},
        "train": {"epochs": epochs, "batch_size": 16, "lr": 0.5, "seed": 3, **train_opts},
        "rule": rule or {},
        "peers": peers or {},
        "backprop": {"optimizer": "adam", "lr": 0.01},
    })


def tiny_cnn(seed=0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Unflatten(1, (1, 6, 6)),
        nn.Conv2d(1, 4, 3), nn.Sigmoid(), nn.MaxPool2d(2),  # 4 x 2 x 2
        nn.Conv2d(4, 6, 1, padding=1), nn.Sigmoid(),  # 6 x 4 x 4
        nn.Flatten(), nn.Linear(96, 8), nn.Sigmoid(),
        nn.Linear(8, 3),
    )


def tiny_mlp(seed=0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(36, 16), nn.Sigmoid(), nn.Linear(16, 8), nn.Sigmoid(), nn.Dropout(0.0),
                         nn.Linear(8, 3))


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def single(model: nn.Module, cfg, ds: Dataset, method="local") -> nn.Module:
    """The single-process loop of localstdp.train.train (same shuffling, batches, schedule) on a
    copy of ``model``, with the learner the parallel workers build."""
    model = copy.deepcopy(model)
    if not hasattr(model, "keep_connectivity_"):  # Backprop.step calls it (the package models have it)
        model.keep_connectivity_ = lambda: None
    learner = parallel.build_learner(method, model, cfg, ds.n_classes)
    gen, n, bs = shuffle_generator(cfg.train.seed), len(ds.y_train), cfg.train.batch_size
    for epoch in range(cfg.train.epochs):
        idx = batches(n, bs, torch.randperm(n, generator=gen))
        for b, i in enumerate(idx):
            schedule_lr(learner, cfg, epoch, b, len(idx))
            learner.step(ds.x_train[i], ds.y_train[i])
    return model


def assert_equal(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs by {(sa[k] - sb[k]).abs().max().item()}"


# ---------------------------------------------------------------------------------------------
# Cutting a stack into units
# ---------------------------------------------------------------------------------------------


def test_units_cut_before_learnable_layers_and_cost_convs():
    model, cfg = tiny_cnn(), config()
    learner = parallel.build_learner("local", model, cfg, 3)
    units = parallel.sequential_units(model, learner, torch.rand(1, 36))
    # one unit per learnable layer; pooling and flatten stay with the layer before them
    assert [(u.start, u.stop) for u in units] == [(0, 4), (4, 7), (7, 9), (9, 10)]
    assert [u.in_shape for u in units] == [(36,), (4, 2, 2), (96,), (8,)]
    conv1 = 2 * 16 * 4 * (9 + 1) + 36 + 64 + 16  # conv (forward + update), unflatten, sigmoid, pool outputs
    assert units[0].cost == conv1
    assert units[3].cost == 2 * (8 * 3 + 3)
    # a layer whose activation sits in the next child cannot be cut from it: one unit for both
    split = nn.Sequential(nn.Linear(36, 16), nn.Sequential(nn.Sigmoid(), nn.Linear(16, 8), nn.Sigmoid()),
                          nn.Linear(8, 3))
    units = parallel.sequential_units(split, parallel.build_learner("local", split, cfg, 3), torch.rand(1, 36))
    assert [(u.start, u.stop, tuple(u.layers)) for u in units] == [(0, 2, (0, 1)), (2, 3, (2,))]


def test_pipeline_refusals_are_one_line():
    ds, cfg = images(), config()
    drop = nn.Sequential(nn.Linear(36, 8), nn.Sigmoid(), nn.Dropout(0.5), nn.Linear(8, 3))
    with pytest.raises(ConfigError, match="Dropout in train mode"):
        parallel.make_plan("local", drop, parallel.build_learner("local", drop, cfg, 3), ds.x_train[:1])
    drop.eval()  # dropout off: splits
    assert parallel.make_plan("local", drop, parallel.build_learner("local", drop, cfg, 3), ds.x_train[:1])

    class NotSequential(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(36, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.b(torch.sigmoid(self.a(x)))

    for method, why in [("backprop", "backward pass"), ("fa", "feedback pathway"), ("dfa", "feedback pathway"),
                        ("pepita", "output error of the first")]:
        with pytest.raises(ConfigError, match=why) as exc:
            parallel.check_mode("pipeline", method)
        assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="needs at least 3 hidden layers"):
        parallel.train_from_cli(config(hidden=(8, 8)), "ff", "unused", mode="pipeline", nproc=3)
    odd = NotSequential()
    with pytest.raises(ConfigError):  # LocalLearner refuses functional sigmoid; the plan needs a Sequential
        parallel.make_plan("local", odd, parallel.build_learner("local", odd, cfg, 3), ds.x_train[:1])


# ---------------------------------------------------------------------------------------------
# Pipelines: bit for bit the single-process weights
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build,nproc,rule", [(tiny_cnn, 3, {"center": 0.9}), (tiny_mlp, 2, {"mode": "timing"})],
                         ids=["cnn-3-ranks-center", "mlp-2-ranks-timing"])
def test_sequential_pipeline_equals_single_process(one_thread, build, nproc, rule):
    ds, cfg, model = images(), config(rule=rule, lr_schedule="cosine"), build()
    ref = single(model, cfg, ds)
    m = parallel.launch(nproc, cfg, "local", None, mode="pipeline", dataset=ds, threads=1, keep_model=True,
                        model=model)
    assert len(m["parallel"]["stages"]) == nproc
    assert_equal(ref, m["model"])
    moved = [not torch.equal(a, b) for a, b in zip(ref.parameters(), model.parameters())]
    assert all(moved)  # every stage really trained its layers


@pytest.mark.parametrize("rule,nproc", [("drtp", 3), ("ff", 2)])
def test_peer_pipeline_equals_single_process(tmp_path, one_thread, rule, nproc):
    ds, cfg = images(), config(hidden=(16, 12, 8), peers={"lr": 0.01}, lr_schedule="linear")
    ref = train(cfg, rule, tmp_path / "single", dataset=ds)
    m = parallel.launch(nproc, cfg, rule, tmp_path / "pipe", mode="pipeline", dataset=ds, threads=1, keep_model=True)
    assert len(m["parallel"]["stages"]) == nproc and m["parallel"]["stages"][-1][1] == 4
    assert_equal(ref["model"], m["model"])
    assert [h["loss"] for h in m["history"]] == [h["loss"] for h in ref["history"]]
    assert m["test_accuracy"] == ref["test_accuracy"]
    # rank 0's checkpoint: weights, fixed matrices, generator and every layer's Adam state, equal
    single_ck, _ = load_checkpoint(tmp_path / "single" / "checkpoint.safetensors")
    pipe_ck, _ = load_checkpoint(tmp_path / "pipe" / "checkpoint.safetensors")
    assert single_ck.keys() == pipe_ck.keys() and any(k.startswith("optim.") for k in single_ck)
    for k in single_ck:
        assert torch.equal(single_ck[k], pipe_ck[k]), k


# ---------------------------------------------------------------------------------------------
# Data parallel: every learner
# ---------------------------------------------------------------------------------------------


def close(a: nn.Module, b: nn.Module, rtol=1e-4, atol=1e-5):
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(y, x, rtol=rtol, atol=atol, msg=k)


@pytest.mark.parametrize("method,rule", [("local", {"center": 0.9}), ("backprop", {})], ids=["local", "backprop"])
def test_data_parallel_trains_a_cnn(one_thread, method, rule):
    ds, cfg, model = images(), config(rule=rule), tiny_cnn()
    ref = single(model, cfg, ds, method)
    m = parallel.launch(2, cfg, method, None, mode="data", dataset=ds, threads=1, keep_model=True, model=model)
    close(ref, m["model"])
    assert all(not torch.equal(a, b) for a, b in zip(m["model"].parameters(), model.parameters()))


@pytest.mark.parametrize("rule", ["dfa", "drtp", "pepita"])  # fa and ff: tests/test_peers.py
def test_data_parallel_peers_match_single_process(one_thread, rule):
    ds, cfg = images(), config(hidden=(8,), peers={"lr": 0.01})
    ref = train(cfg, rule, dataset=ds)
    m = parallel.launch(2, cfg, rule, None, mode="data", dataset=ds, threads=1, keep_model=True)
    close(ref["model"], m["model"])
    assert m["test_accuracy"] == pytest.approx(ref["test_accuracy"])


def test_data_parallel_refuses_peers_on_other_models():
    cfg, model = config(), tiny_cnn()
    with pytest.raises(ConfigError, match="peer rules train the package MLP only"):
        parallel.build_learner("drtp", model, cfg, 3)


# ---------------------------------------------------------------------------------------------
# The command line: a model.kind = "cnn" config, end to end
# ---------------------------------------------------------------------------------------------

CNN_TOML = """
[data]
name = "digits"
[model]
kind = "cnn"
conv = [{channels = 4, kernel = 3, padding = 1, pool = 2}, {channels = 6, kernel = 3, padding = 1}]
hidden = [16]
[train]
epochs = 1
batch_size = 64
lr = 0.5
seed = 2
[rule]
center = 0.99
"""


# the 3-rank pipeline about 5 s idle: slow (make test-all); the 2-rank data run stays in make test
@pytest.mark.parametrize("mode,nproc", [pytest.param("pipeline", 3, marks=pytest.mark.slow), ("data", 2)])
def test_cli_trains_a_cnn_config_in_parallel(tmp_path, one_thread, capsys, mode, nproc):
    from localstdp.cli import main
    from localstdp.config import load_config
    from localstdp.train import load_run

    path = tmp_path / "cnn.toml"
    path.write_text(CNN_TOML)
    ref = train(load_config(path), "local")
    out = tmp_path / mode
    assert main(["train", "--config", str(path), "--rule", "local", "--parallel", mode, "--nproc", str(nproc),
                 "--out", str(out), "--no-progress"]) == 0
    _, model, method = load_run(out)  # evaluate --run rebuilds the CNN
    assert method == "local" and type(model).__name__ == "CNN"
    if mode == "pipeline":  # conv, conv, dense, output over 3 ranks: bit for bit
        assert_equal(ref["model"], model)
    else:
        close(ref["model"], model, rtol=1e-4, atol=1e-4)
    capsys.readouterr()
    assert main(["evaluate", "--run", str(out), "--json"]) == 0
    assert abs(__import__("json").loads(capsys.readouterr().out)["test_accuracy"] - ref["test_accuracy"]) < 0.01


@pytest.mark.parametrize("rule,nproc", [("drtp", 2), ("local", 3)])
def test_pipeline_resumed_from_its_checkpoint_equals_uninterrupted(tmp_path, one_thread, rule, nproc):
    """Epoch 1 in one pipeline run, epoch 2 resumed in another: each rank reads rank 0's checkpoint
    (every layer's weights and rule state: Adam moments, running presynaptic means per conv channel)."""
    ds, model = images(), tiny_cnn() if rule == "local" else None
    cfg = config(epochs=2, hidden=(16, 12, 8), rule={"center": 0.9}, peers={"lr": 0.01})
    ref = single(model, cfg, ds) if model is not None else train(cfg, rule, dataset=ds)["model"]
    kw = dict(mode="pipeline", dataset=ds, threads=1, model=model)
    parallel.launch(nproc, cfg.with_overrides(epochs=1), rule, tmp_path, **kw)
    m = parallel.launch(nproc, cfg, rule, tmp_path, resume=True, keep_model=True, **kw)
    assert [h["epoch"] for h in m["history"]] == [1, 2]
    assert_equal(ref, m["model"])
