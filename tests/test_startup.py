"""Start-up (issue 12, item 4): the command line imports what a command needs when it runs it.

`import localstdp.cli`, building the parser and every `--help` must not load torch, numpy, scipy,
scikit-learn, ART, matplotlib or tqdm (together they take seconds); each check runs in a fresh
interpreter, since this test process has long imported them. Not timed: BENCHMARKS.md ("Start-up")
has the numbers.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "numpy", "scipy", "sklearn", "art", "matplotlib", "tqdm", "mlxtend", "safetensors")
REPORT = f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)


def _heavy_after(code: str) -> list[str]:
    done = _python(f"import sys\n{code}\n{REPORT}")
    assert done.returncode == 0, done.stderr
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


def test_import_cli_loads_no_heavy_module():
    assert _heavy_after("import localstdp.cli") == []


def test_import_package_loads_no_heavy_module():
    assert _heavy_after("import localstdp; localstdp.__version__") == []


def test_parser_and_every_help_load_no_heavy_module():
    code = """
import contextlib, io
from localstdp.cli import SUBCOMMANDS, build_parser, main
build_parser()
for cmd in ([], ["train"], ["evaluate"], ["tune"], ["reproduce"], ["bench"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main([*cmd, "--help"])
"""
    assert _heavy_after(code) == []


@pytest.mark.parametrize("argv", [["--help"], ["reproduce", "--help"], ["--version"]])
def test_help_and_version_work(argv):
    done = subprocess.run([sys.executable, "-m", "localstdp", *argv], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    if argv == ["--help"]:
        for sub in ("train", "evaluate", "tune", "reproduce", "bench"):
            assert sub in done.stdout
    elif argv[0] == "reproduce":  # the registry's names reach the help text
        assert "iris-1v2" in done.stdout and "backprop-wd" in done.stdout and "extended" in done.stdout
    else:
        assert done.stdout.startswith("localstdp ")


def test_console_script_help_works():
    script = Path(sys.executable).parent / "localstdp"
    if not script.exists():
        pytest.skip("no localstdp console script next to this interpreter")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "usage: localstdp" in done.stdout


def test_public_names_still_import():
    import localstdp
    from localstdp import LEARNERS, MLP, ExperimentConfig, RuleParams, build_model, load_config
    from localstdp.config import load_config as config_load
    from localstdp.model import MLP as ModelMLP

    assert load_config is config_load and MLP is ModelMLP
    assert callable(build_model) and "local" in LEARNERS and ExperimentConfig and RuleParams
    assert set(localstdp.__all__) <= set(dir(localstdp))
    assert set(localstdp.__all__) == set(localstdp._LAZY) | {"__version__"}
    with pytest.raises(AttributeError):
        localstdp.no_such_name  # noqa: B018


def test_registry_is_what_the_library_uses():
    from localstdp import config, registry
    from localstdp.evaluation import methods, plan

    assert plan.TASKS is registry.TASKS and plan.SUITES is registry.SUITES
    assert config.PANEL_METHODS is registry.PANEL_METHODS == tuple(methods.PANEL)
    assert set(registry.SUITES["extended"]) <= set(registry.TASKS)
