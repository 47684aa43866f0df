from pathlib import Path

import pytest

from localstdp.config import ExperimentConfig, load_config
from localstdp.errors import ConfigError

CONFIGS = sorted((Path(__file__).parents[1] / "src" / "localstdp" / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load_and_round_trip(path, tmp_path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.rule.eta == cfg.train.lr
    copy = tmp_path / "c.toml"
    copy.write_text(cfg.to_toml())
    assert load_config(copy) == cfg


def test_paper_configs_are_binary_with_two_hidden_layers():
    for name, classes in [("iris", [1, 2]), ("mnist-0v1", [0, 1]), ("mnist-3v5", [3, 5]), ("mnist-4v9", [4, 9])]:
        cfg = load_config(Path(__file__).parents[1] / "configs" / f"{name}.toml")
        assert cfg.data.classes == classes and len(cfg.model.hidden) == 2


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text,message",
    [
        ('[data]\nname = "iris"\n[train]\nepochs = "3"', "train.epochs = '3': expected int"),
        ('[data]\nname = "iris"\n[train]\nepoch = 3', "did you mean 'epochs'"),
        ('[data]\nname = "iris"\n[rule]\neta = 0.1', "train.lr"),
        ('[data]\nname = "iris"\n[trian]\nepochs = 3', "did you mean 'train'"),
        ('[data]\nname = "iris"\n[model]\nhidden = [4, 0]', "width >= 1"),
        ('[data]\nname = "iris"\n[model]\nhidden = []', "is empty"),
        ('[data]\nname = "iris"\n[train]\nlr = -0.1', "train.lr = -0.1"),
        ('[data]\nname = "iris"\n[train]\nbatch_size = 0', "train.batch_size = 0"),
        ('[data]\nname = "iris"\n[data]\nname = "x"', "invalid TOML"),
        ('[data]\nname = "imagenet"', "data.name = 'imagenet'"),
        ('[data]\nname = "iris"\nclasses = [1, 1]', "listed twice"),
        ('[data]\nname = "csv"', "data.path is required"),
        ('[model]\nhidden = [4]', "data.name is required"),
        ('[data]\nname = "iris"\n[rule]\nmode = "spikes"', "rule.mode"),
        ('[data]\nname = "iris"\n[backprop]\noptimizer = "rmsprop"', "backprop.optimizer"),
        ('[data]\nname = "iris"\n[train]\nepochs = true', "expected int"),
        ('[data]\nname = "iris"\n[train]\nlr_schedule = "step"', "train.lr_schedule = 'step': expected one of"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)
    assert "\n" not in str(info.value).strip()


def test_overrides_revalidate_and_keep_eta_in_sync():
    cfg = load_config(Path(__file__).parents[1] / "configs" / "iris.toml")
    new = cfg.with_overrides(seed=4, epochs=2, lr=0.7)
    assert (new.train.seed, new.train.epochs, new.rule.eta) == (4, 2, 0.7)
    with pytest.raises(ConfigError, match="train.epochs"):
        cfg.with_overrides(epochs=0)


def test_lr_factor_schedules():
    from localstdp.config import lr_factor

    total = 8
    assert [lr_factor("constant", s, total) for s in range(total)] == [1.0] * total
    assert [lr_factor("linear", s, total) for s in range(total)] == [1 - s / 8 for s in range(total)]
    cos = [lr_factor("cosine", s, total) for s in range(total)]
    assert cos[0] == 1.0 and cos[4] == pytest.approx(0.5) and cos[2] == pytest.approx(0.5 + 0.5 ** 1.5)
    assert all(a > b > 0 for a, b in zip(cos, cos[1:]))  # falls, never reaches zero inside the run
    with pytest.raises(ConfigError, match="lr_schedule"):
        lr_factor("exp", 0, total)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
