"""model.kind = "cnn" (issue 13 items 3, 4): the config's layer list and its errors, the CNN both methods
share, `localstdp train` of a tiny CNN with the local rule and backprop, a bit-identical resume, and the
DataLoader that serves the training batches (tests/test_mlp_unchanged.py: MLP results unchanged)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from localstdp.cli import main
from localstdp.config import config_from_dict, load_config
from localstdp.data import load_dataset
from localstdp.errors import ConfigError
from localstdp.learner import LocalLearner
from localstdp.model import CNN, MLP, build_network
from localstdp.rules.backprop import Backprop
from localstdp.train import Interrupted, batches, epoch_loader, load_run, make_learner, shuffle_generator, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = """
[data]
name = "digits"
[model]
kind = "cnn"
conv = [{channels = 6, kernel = 3, padding = 1, pool = 2}]
hidden = [24]
[train]
epochs = 12
lr = 2.0
seed = 2
[rule]
center = 0.99
[backprop]
lr = 0.01
"""


def cnn_cfg(**model):
    table = {"kind": "cnn", "conv": [{"channels": 4, "kernel": 3, "padding": 1, "pool": 2}]} | model
    return config_from_dict({"data": {"name": "digits"}, "model": table})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny-cnn.toml"
    path.write_text(TINY)
    cfg = load_config(path)
    return path, cfg, load_dataset(cfg.data)


# ---- config ----------------------------------------------------------------------------------------


def test_cnn_config_parses_with_defaults_and_round_trips():
    cfg = cnn_cfg(hidden=[32])
    (c,) = cfg.model.conv
    assert (c.channels, c.kernel, c.stride, c.padding, c.pool) == (4, 3, 1, 1, 2)
    again = config_from_dict(cfg.to_dict())
    assert again == cfg and again.to_dict()["model"]["conv"] == [
        {"channels": 4, "kernel": 3, "stride": 1, "padding": 1, "pool": 2}]
    assert cfg.to_dict()["conv_rule"] == {"teaching": "pooled", "lr_scale": 3.0, "tau": 1.0}
    assert cfg.with_sets(["model.conv=[{channels=8, kernel=5}]"]).model.conv[0].kernel == 5


def test_mlp_config_dict_has_no_cnn_keys():
    d = load_config(CONFIGS / "digits.toml").to_dict()
    assert "kind" not in d["model"] and "conv" not in d["model"] and "conv_rule" not in d
    assert load_config(CONFIGS / "digits.toml").model.kind == "mlp"


@pytest.mark.parametrize(("model", "extra", "message"), [
    ({"kind": "rnn"}, {}, "model.kind = 'rnn': expected one of mlp, cnn"),
    ({"conv": []}, {}, "model.conv is empty"),
    ({"conv": [{"chanels": 4}]}, {}, "unknown key model.conv[0].chanels (did you mean 'channels'?)"),
    ({"conv": [{"channels": 4}, {"channels": 8, "kernel": 0}]}, {}, "model.conv[1].kernel = 0: expected an integer >= 1"),
    ({"conv": [{"channels": 4, "padding": -1}]}, {}, "model.conv[0].padding = -1: expected an integer >= 0"),
    ({"conv": [{"kernel": 3}]}, {}, "model.conv[0].channels is required"),
    ({"conv": [{"channels": 2.5}]}, {}, "model.conv[0].channels = 2.5"),
    ({"conv": [4]}, {}, "model.conv"),
    ({"receptive_field": 3}, {}, "model.receptive_field is only for model.kind = 'mlp'"),
    ({"hidden": [0]}, {}, "model.hidden = [0]"),
    ({}, {"conv_rule": {"teaching": "backprop"}}, "[conv_rule]: conv teaching 'backprop'"),
    ({}, {"conv_rule": {"lr_scal": 1.0}}, "unknown key conv_rule.lr_scal (did you mean 'lr_scale'?)"),
])
def test_cnn_config_errors_are_one_line_and_name_the_key(model, extra, message):
    table = {"kind": "cnn", "conv": [{"channels": 4}]} | model
    with pytest.raises(ConfigError) as info:
        config_from_dict({"data": {"name": "digits"}, "model": table} | extra)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_mlp_refuses_conv_and_conv_rule():
    with pytest.raises(ConfigError, match=r"model.conv is only for model.kind = 'cnn'"):
        config_from_dict({"data": {"name": "digits"}, "model": {"conv": [{"channels": 4}]}})
    with pytest.raises(ConfigError, match=r"\[conv_rule\] is only for model.kind = 'cnn'"):
        config_from_dict({"data": {"name": "digits"}, "conv_rule": {"lr_scale": 1.0}})
    assert config_from_dict({"data": {"name": "digits"}, "model": {"kind": "cnn", "conv": [{"channels": 2}],
                                                                    "hidden": []}}).model.hidden == []


def test_shapes_that_do_not_fit_the_data_are_config_errors():
    with pytest.raises(ConfigError, match="needs a square one-channel image, got 60 features"):
        build_network(cnn_cfg().model, 60, 10, 0)
    with pytest.raises(ConfigError, match=r"model.conv\[1\].kernel = 5: larger than its 4x4 input"):
        build_network(cnn_cfg(conv=[{"channels": 4, "kernel": 3, "padding": 1, "pool": 2},
                                    {"channels": 4, "kernel": 5}]).model, 64, 10, 0)
    with pytest.raises(ConfigError, match=r"model.conv\[0\].pool = 16: larger than the 8x8 feature map"):
        build_network(cnn_cfg(conv=[{"channels": 4, "kernel": 3, "padding": 1, "pool": 16}]).model, 64, 10, 0)


# ---- the network -------------------------------------------------------------------------------------


def test_cnn_layers_in_order_and_logits_from_flat_or_image_input():
    model = build_network(cnn_cfg(hidden=[16]).model, 64, 10, 0)
    assert isinstance(model, CNN) and isinstance(model, nn.Sequential)
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["ToImage", "Conv2d", "Sigmoid", "MaxPool2d", "Flatten", "Linear", "Sigmoid", "Linear"]
    assert model[5].in_features == 4 * 4 * 4 and model.widths == [64, 16, 10]
    x = torch.rand(5, 64)
    z = model(x)
    assert z.shape == (5, 10) and torch.equal(z, model(x.view(5, 1, 8, 8)))  # attacks pass images
    assert torch.equal(model.predict(x, batch_size=2), z.argmax(1))


def test_cnn_same_weights_for_every_method_and_seed_dependent():
    cfg = cnn_cfg(hidden=[16])
    a, b, c = (build_network(cfg.model, 64, 10, s) for s in (3, 3, 4))
    for (k, v), w, u in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(v, w) and not torch.equal(v, u), k
    assert a[1].weight.abs().max() <= 1 / 3  # U(-1/sqrt(fan_in), ...), fan_in = 1 * 3 * 3
    assert 0.25 < a[1].weight.abs().max()
    local, bp = make_learner("local", a, cfg, 10), make_learner("backprop", b, cfg, 10)
    assert isinstance(local, LocalLearner) and isinstance(bp, Backprop)
    assert local.conv.teaching == "pooled" and local.params.center == cfg.rule.center  # the config's options


def test_peers_and_mlp_only_paths_refuse_the_cnn():
    cfg = cnn_cfg()
    with pytest.raises(ConfigError, match="--rule fa: the peer rules train the package MLP only"):
        make_learner("fa", build_network(cfg.model, 64, 10, 0), cfg, 10)
    with pytest.raises(ConfigError, match="this training path was handed the package MLP"):
        make_learner("local", MLP(64, [8], 10), cfg, 10)


# ---- training ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["local", "backprop"])
def test_cli_trains_a_tiny_cnn_and_evaluate_reloads_it(tmp_path, capsys, tiny, rule):
    path, cfg, ds = tiny
    out = tmp_path / rule
    assert main(["train", "--config", str(path), "--rule", rule, "--out", str(out), "--no-progress",
                 "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["widths"] == [64, 24, 10] and len(metrics["history"]) == 12
    assert metrics["val_accuracy"] > 0.7 and metrics["test_accuracy"] > 0.7  # chance is 0.1
    capsys.readouterr()
    assert main(["evaluate", "--run", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == metrics["test_accuracy"]
    cfg2, model, method = load_run(out)
    assert method == rule and isinstance(model, CNN) and cfg2.model == cfg.model
    from localstdp.robustness.attacks import fgsm, make_classifier

    clf = make_classifier(model, (1, 8, 8), 10)
    x, y = ds.x_test[:64].numpy().reshape(-1, 1, 8, 8), ds.y_test[:64].numpy()
    adv = fgsm(clf, x, y, 0.1)
    assert np.abs(adv - x).max() <= 0.1 + 1e-6 and (adv != x).any()


@pytest.mark.parametrize("rule", ["local", "backprop"])
def test_cnn_resumed_mid_epoch_is_bit_identical(tmp_path, tiny, rule):
    _, cfg, ds = tiny
    cfg = cfg.with_overrides(epochs=3)
    full = train(cfg, rule, tmp_path / "full", dataset=ds)
    calls = {"n": 0}

    def stop_mid_epoch_2():
        calls["n"] += 1
        return 15 if calls["n"] == 40 else 0  # 34 batches an epoch: batch 6 of epoch 2

    with pytest.raises(Interrupted):
        train(cfg, rule, tmp_path / "part", dataset=ds, should_stop=stop_mid_epoch_2)
    resumed = train(cfg, rule, tmp_path / "part", dataset=ds, resume=True)
    for (k, v), w in zip(full["model"].state_dict().items(), resumed["model"].state_dict().values()):
        assert torch.equal(v, w), k
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert (tmp_path / "full" / "model.safetensors").read_bytes() == (tmp_path / "part" / "model.safetensors").read_bytes()


def test_resume_refuses_another_conv_stack(tmp_path, tiny):
    _, cfg, ds = tiny
    train(cfg.with_overrides(epochs=1), "local", tmp_path / "run", dataset=ds)
    (tmp_path / "run" / "metrics.json").unlink()
    other = cfg.with_sets(["model.conv=[{channels=4, kernel=3, padding=1, pool=2}]"]).with_overrides(epochs=2)
    with pytest.raises(Exception, match="different config"):
        train(other, "local", tmp_path / "run", dataset=ds, resume=True)


def test_data_loader_serves_the_shuffled_batches_exactly():
    x, y = torch.rand(10, 3), torch.arange(10)
    perm = torch.randperm(10, generator=shuffle_generator(1))
    got = list(epoch_loader(x, y, perm, 4))
    want = batches(10, 4, perm)
    assert len(got) == 3 and [len(b) for _, b in got] == [4, 4, 2]
    for (xb, yb), idx in zip(got, want):
        assert torch.equal(xb, x[idx]) and torch.equal(yb, y[idx])
    tail = list(epoch_loader(x, y, perm, 4, start=2))  # a resumed epoch starts at its checkpoint's batch
    assert len(tail) == 1 and torch.equal(tail[0][1], y[want[2]])


def test_backprop_trains_a_users_own_sequential_like_autograd():
    """Backprop on a hand-built nn.Sequential (no keep_connectivity_) takes the step plain SGD takes."""
    import copy

    from torch import nn

    from localstdp.rules.backprop import Backprop, BackpropParams

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 3))
    ref, init = copy.deepcopy(net), copy.deepcopy(net)
    x, y = torch.randn(8, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    p = BackpropParams()
    learner = Backprop(net, p, 3, 0)
    learner.step(x, y)
    ref_opt = copy.deepcopy(learner.optimizer)
    ref_opt.param_groups[0]["params"] = list(ref.parameters())
    ref_opt.state.clear()
    ref_opt.zero_grad()
    learner.loss_mean(ref(x), y).backward()
    ref_opt.step()
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(net[0].weight, init[0].weight)  # it did learn
