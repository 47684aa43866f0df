import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from localstdp.cli import main
from localstdp.config import load_config
from localstdp.data import load_dataset
from localstdp.model import build_model
from localstdp.train import load_run, train

ROOT = Path(__file__).parents[1]
IRIS = ROOT / "configs" / "iris.toml"


@pytest.fixture(scope="module")
def iris():
    cfg = load_config(IRIS)
    return cfg, load_dataset(cfg.data)


def test_same_seed_same_initialisation_for_both_methods():
    a, b = build_model(4, [16, 16], 2, "sigmoid", 3), build_model(4, [16, 16], 2, "sigmoid", 3)
    c = build_model(4, [16, 16], 2, "sigmoid", 4)
    for (k, v), w, u in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(v, w) and not torch.equal(v, u), k
    bound = 1 / 4**0.5
    assert a.layers[0].weight.abs().max() <= bound


@pytest.mark.parametrize("method", ["local", "backprop"])
def test_training_is_deterministic_and_learns_iris(iris, method):
    cfg, ds = iris
    m1 = train(cfg, method, dataset=ds)
    m2 = train(cfg, method, dataset=ds)
    for p1, p2 in zip(m1["model"].parameters(), m2["model"].parameters()):
        assert torch.equal(p1, p2)
    assert m1["test_accuracy"] >= 0.9 and m1["train_accuracy"] >= 0.9
    assert len(m1["history"]) == cfg.train.epochs
    # the reported accuracy is what the model predicts
    acc = (m1["model"].predict(ds.x_test) == ds.y_test).float().mean().item()
    assert acc == pytest.approx(m1["test_accuracy"])


def test_local_rule_beats_chance_quickly_on_mnist_pair():
    cfg = load_config(ROOT / "configs" / "mnist-3v5.toml").with_overrides(epochs=3, lr=0.1)
    m = train(cfg, "local")
    assert m["test_accuracy"] > 0.85


def test_cli_train_then_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(IRIS), "--rule", "local", "--seed", "1", "--epochs", "5",
                 "--out", str(out), "--no-progress"]) == 0
    for name in ("model.safetensors", "metrics.json", "config.toml", "checkpoint.safetensors"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*.tmp"))  # no temp files left behind
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 5 and len(metrics["history"]) == 5 and metrics["seed"] == 1
    assert set(metrics) >= {"train_accuracy", "test_accuracy", "history", "wall_seconds"}
    tensors = load_file(out / "model.safetensors")
    assert sorted(tensors) == [f"model.layers.{i}.{k}" for i in range(3) for k in ("bias", "weight")]
    assert load_config(out / "config.toml").train.seed == 1
    capsys.readouterr()
    assert main(["evaluate", "--run", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert res["train_accuracy"] == pytest.approx(metrics["train_accuracy"])
    _, model, method = load_run(out)
    assert method == "local" and model.widths == [4, 16, 16, 2]


@pytest.mark.parametrize("method", ["local", "backprop"])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, iris, method):
    cfg, ds = iris
    cfg = cfg.with_overrides(epochs=4)
    full = train(cfg, method, tmp_path / "full", dataset=ds)
    calls = {"n": 0}

    def stop_at_batch_13():
        calls["n"] += 1
        return 15 if calls["n"] == 13 else 0  # SIGTERM-like stop mid-epoch 2

    from localstdp.train import Interrupted

    with pytest.raises(Interrupted) as info:
        train(cfg, method, tmp_path / "part", dataset=ds, should_stop=stop_at_batch_13)
    assert info.value.exit_code == 128 + 15
    assert not (tmp_path / "part" / "metrics.json").exists()
    resumed = train(cfg, method, tmp_path / "part", dataset=ds, resume=True)
    for p1, p2 in zip(full["model"].parameters(), resumed["model"].parameters()):
        assert torch.equal(p1, p2)
    assert [h["test_accuracy"] for h in resumed["history"]] == [h["test_accuracy"] for h in full["history"]]


def test_python_dash_m_entry_point(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "localstdp", "--version"], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and r.stdout.startswith("localstdp ")


def test_checkpoint_bytes_do_not_depend_on_the_process(tmp_path):
    # safetensors keeps metadata in a hash map: with several keys their order changes per process
    import subprocess
    import sys

    code = ("import sys, torch; from localstdp.checkpoint import save_checkpoint; "
            "save_checkpoint(sys.argv[1], {'w': torch.arange(6.0).reshape(2, 3), 'b': torch.ones(2)}, "
            "{'kind': 'model', 'method': 'local', 'widths': [3, 2], 'epoch': 1})")
    for name in ("a", "b", "c"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True)
    blobs = {(tmp_path / n).read_bytes() for n in "abc"}
    assert len(blobs) == 1


@pytest.mark.parametrize("method", ["local", "backprop"])
def test_lr_schedule_scales_every_step_like_a_hand_written_loop(iris, method):
    import dataclasses
    import math

    from localstdp.train import batches, make_learner, shuffle_generator

    cfg, ds = iris
    cfg = cfg.with_overrides(epochs=2, lr_schedule="cosine")
    got = train(cfg, method, dataset=ds)["model"]
    # reference: the same loop written out, the rate set by hand before each batch
    model = build_model(ds.n_features, cfg.model.hidden, ds.n_classes, "sigmoid", cfg.train.seed)
    learner = make_learner(method, model, cfg, ds.n_classes)
    gen, n, bs = shuffle_generator(cfg.train.seed), len(ds.y_train), cfg.train.batch_size
    total, t = cfg.train.epochs * math.ceil(n / bs), 0
    base = cfg.train.lr if method == "local" else cfg.backprop.lr
    for _ in range(cfg.train.epochs):
        for idx in batches(n, bs, torch.randperm(n, generator=gen)):
            rate = base * 0.5 * (1 + math.cos(math.pi * t / total))
            if method == "local":
                learner.params = dataclasses.replace(learner.params, eta=rate)
            else:
                for g in learner.optimizer.param_groups:
                    g["lr"] = rate
            learner.step(ds.x_train[idx], ds.y_train[idx])
            t += 1
    for p1, p2 in zip(got.parameters(), model.parameters()):
        torch.testing.assert_close(p1, p2, rtol=0, atol=1e-7)
    constant = train(cfg.with_overrides(lr_schedule="constant"), method, dataset=ds)["model"]
    assert max(float((p1 - p2).abs().max()) for p1, p2 in zip(got.state_dict().values(), constant.state_dict().values())) > 1e-3


def test_lr_schedule_resumes_exactly(tmp_path, iris):
    from localstdp.train import Interrupted

    cfg, ds = iris
    cfg = cfg.with_overrides(epochs=3, lr_schedule="linear")
    full = train(cfg, "backprop", tmp_path / "full", dataset=ds)
    calls = iter(range(10_000))
    with pytest.raises(Interrupted):
        train(cfg, "backprop", tmp_path / "part", dataset=ds, should_stop=lambda: 15 if next(calls) == 20 else 0)
    # the schedule spans the epoch budget: a different budget on resume is refused, the checkpoint kept
    from localstdp.errors import CheckpointError

    before = (tmp_path / "part" / "checkpoint.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match=r"train.epochs: checkpoint 3, config 5.*'linear' spans"):
        train(cfg.with_overrides(epochs=5), "backprop", tmp_path / "part", dataset=ds, resume=True)
    assert (tmp_path / "part" / "checkpoint.safetensors").read_bytes() == before
    resumed = train(cfg, "backprop", tmp_path / "part", dataset=ds, resume=True)
    for p1, p2 in zip(full["model"].parameters(), resumed["model"].parameters()):
        assert torch.equal(p1, p2)


def test_checkpoint_written_before_lr_schedule_existed_still_resumes(tmp_path, iris):
    from localstdp.checkpoint import load_checkpoint, save_checkpoint
    from localstdp.train import Interrupted

    cfg, ds = iris
    cfg = cfg.with_overrides(epochs=3)
    full = train(cfg, "local", dataset=ds)
    calls = iter(range(10_000))
    with pytest.raises(Interrupted):
        train(cfg, "local", tmp_path / "old", dataset=ds, should_stop=lambda: 15 if next(calls) == 20 else 0)
    path = tmp_path / "old" / "checkpoint.safetensors"
    tensors, meta = load_checkpoint(path)
    del meta["config"]["train"]["lr_schedule"]  # as written by a version without the key
    save_checkpoint(path, tensors, meta)
    resumed = train(cfg, "local", tmp_path / "old", dataset=ds, resume=True)
    for p1, p2 in zip(full["model"].parameters(), resumed["model"].parameters()):
        assert torch.equal(p1, p2)
