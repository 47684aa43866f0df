"""`localstdp reproduce --suite peers` (issue 14 item 4): the suite's tasks, methods and seeds; the peer
learning rates the configs ship equal the validation choices in docs/tune (scripts/apply-peer-tune.py,
tested on a temporary copy); and the peer blocks of docs/comparison.md equal what the committed results.json files
generate."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from localstdp.cli import build_parser, main
from localstdp.cli.reproduce import SUITE_DEFAULTS, suite_defaults
from localstdp.config import load_config
from localstdp.evaluation.methods import method_config
from localstdp.evaluation.plan import resolve_tasks
from localstdp.registry import DEFAULT_METHODS, PEER_RULES, SUITES

ROOT = Path(__file__).resolve().parents[1]
SUITE_TASKS = ["iris-1v2", "mnist-0v1", "mnist-3v5", "mnist-4v9", "mnist-10", "fashion-mnist"]
SUITE_METHODS = ["local", "backprop", "backprop-wd", "fa", "dfa", "drtp", "pepita", "ff"]
# config stem (= docs/tune/<stem>/) of each task of the suite
STEMS = {"iris-1v2": "iris", "mnist-0v1": "mnist-0v1", "mnist-3v5": "mnist-3v5", "mnist-4v9": "mnist-4v9",
         "mnist-10": "mnist-10", "fashion-mnist": "fashion-mnist"}


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _args(*argv):
    return build_parser().parse_args(["reproduce", *argv, "--out", "x"])


def test_the_peers_suite_is_the_paper_tasks_plus_the_ten_class_ones():
    assert resolve_tasks(None, "peers") == SUITE_TASKS
    assert list(SUITES["peers"]) == [*SUITES["paper"], "mnist-10", "fashion-mnist"]


def test_suite_defaults_seeds_methods_and_no_frontier():
    base = {"n_attack": 500, "val_attack": 500}
    d = suite_defaults(_args("--suite", "peers"))
    assert d == {"seeds": 3, "frontier_seeds": 0, "methods": tuple(SUITE_METHODS)} | base
    assert list(SUITE_DEFAULTS["peers"]["methods"]) == ["local", "backprop", "backprop-wd", *PEER_RULES]
    # an explicit option wins; explicit --tasks (no suite) and suites without an entry keep the general defaults
    assert suite_defaults(_args("--suite", "peers", "--seeds", "2", "--methods", "local", "fa", "--val-attack", "0")) == {
        "seeds": 2, "frontier_seeds": 0, "methods": ["local", "fa"], "n_attack": 500, "val_attack": 0}
    general = {"seeds": 5, "frontier_seeds": 3, "methods": None} | base
    assert suite_defaults(_args("--suite", "peers", "--tasks", "mnist-3v5")) == general
    assert suite_defaults(_args("--suite", "extended")) == general
    # the paper suite (the default) adds the linear model and random features to the panel (issue 23)
    paper = (*DEFAULT_METHODS, "linear", "random-features")
    assert suite_defaults(_args()) == general | {"methods": paper}
    assert suite_defaults(_args("--suite", "nonlinear")) == general | {
        "seeds": 3, "n_attack": 1000, "methods": ("local", "backprop", "backprop-wd", "linear", "random-features")}


def test_the_command_line_hands_the_suite_defaults_to_the_grid(monkeypatch, capsys):
    from localstdp.evaluation import grid

    seen = {}

    def fake_run_grid(cfgs, settings, **kw):
        seen.update(tasks=list(cfgs), settings=settings, jobs=kw["jobs"])
        raise KeyboardInterrupt

    monkeypatch.setattr(grid, "run_grid", fake_run_grid)  # where cli/reproduce looks it up
    rc = main(["reproduce", "--suite", "peers", "--out", "unused-dir", "--jobs", "1", "--no-progress"])
    assert rc == 130 and seen["tasks"] == SUITE_TASKS and seen["jobs"] == 1
    s = seen["settings"]
    assert (s.seeds, s.frontier_seeds, list(s.methods)) == (3, 0, SUITE_METHODS)
    assert "3 seed(s), frontier 0 seed(s)" in capsys.readouterr().err


@pytest.mark.parametrize("task", SUITE_TASKS)
def test_shipped_peer_rates_are_the_validation_choices(task):
    """Every rule tuned for the task (docs/tune/<stem>/<rule>/tune.json) trains with the rate it chose;
    the paper tasks and mnist-10 have all five rules tuned."""
    cfg = load_config(ROOT / "src/localstdp/configs" / f"{STEMS[task]}.toml")
    tuned = 0
    for rule in PEER_RULES:
        path = ROOT / "docs/tune" / STEMS[task] / rule / "tune.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        assert r["method"] == rule and list(r["grid"]) == ["peers.lr"]
        assert method_config(cfg, rule).peers.lr == pytest.approx(r["chosen"]["peers.lr"])
        tuned += 1
    if task != "fashion-mnist":
        assert tuned == len(PEER_RULES)


def test_peer_tuning_budget_is_equal_per_task():
    """Same number of grid points x seeds for every rule of a task, and the local rule's / backprop's on
    the paper tasks (5 x 3) and on mnist-10 (3 x 1)."""
    for stem in STEMS.values():
        budgets = {}
        for rule in (*PEER_RULES, "local", "backprop"):
            path = ROOT / "docs/tune" / stem / rule / "tune.json"
            if path.exists():
                r = json.loads(path.read_text())
                budgets[rule] = (len(next(iter(r["grid"].values()))), len(r["seeds"]))
        peers = {b for r, b in budgets.items() if r in PEER_RULES}
        assert len(peers) <= 1, (stem, budgets)
        if stem != "fashion-mnist":
            assert set(budgets.values()) == peers, (stem, budgets)


def _fake_tune(root: Path, task: str, rule: str, grid: list[float], chosen: float, mean: float, seeds: int = 3):
    d = root / task / rule
    d.mkdir(parents=True)
    (d / "tune.json").write_text(json.dumps({"method": rule, "grid": {"peers.lr": grid}, "seeds": list(range(seeds)),
                                             "chosen": {"peers.lr": chosen}, "chosen_mean": mean}))


def test_apply_script_writes_the_chosen_rates_and_nothing_else(tmp_path):
    configs, tune = tmp_path / "configs", tmp_path / "tune"
    configs.mkdir()
    original = (ROOT / "src/localstdp/configs/mnist-4v9.toml").read_text()
    # an older hand-written peer block (as mnist-3v5 had) must be replaced, not duplicated
    old_block = ("# The peer local rules (docs/peers.md), hand-written\n# second comment line\n"
                 "[methods.fa.peers]       # feedback alignment (validation 0.9)\nlr = 0.5\n\n"
                 "[methods.ff.peers]\nlr = 0.7\n\n")
    base = re.sub(r"(?m)^\[methods\.[a-z]+\.peers\].*\n(?:[^\[\n#].*\n)*\n?", "", original)
    base = re.sub(r"(?m)^# --- peer local rules.*\n(?:.*\n)*?# --- end of the peer local rules ---\n\n?", "", base)
    cfg_path = configs / "mnist-4v9.toml"
    cfg_path.write_text(base.replace("[evaluation]", old_block + "[evaluation]"))
    _fake_tune(tune, "mnist-4v9", "fa", [0.0003, 0.001, 0.003], 0.001, 0.951)
    _fake_tune(tune, "mnist-4v9", "pepita", [0.0003, 0.001, 0.003], 0.003, 0.962)
    apply = _script("apply-peer-tune")
    for _ in range(2):  # idempotent
        assert apply.main(["--tune", str(tune), "--configs", str(configs), "mnist-4v9"]) == 0
        text = cfg_path.read_text()
        cfg = load_config(cfg_path)
        assert method_config(cfg, "fa").peers.lr == 0.001
        assert method_config(cfg, "pepita").peers.lr == 0.003
        for rule in ("dfa", "drtp", "ff"):  # untuned: no table, the [peers] default
            assert method_config(cfg, rule).peers.lr == cfg.peers.lr == 1e-3
        assert "lr = 0.5" not in text and "lr = 0.7" not in text and "hand-written" not in text
        assert text.count("[methods.fa.peers]") == 1
        assert "validation 0.951 (docs/tune/mnist-4v9/fa/)" in text and "{0.0003, 0.001, 0.003}" in text
        # every other line as it was
        stripped = re.sub(r"(?m)^# --- peer local rules.*\n(?:.*\n)*?# --- end of the peer local rules ---\n\n?", "",
                          text)
        assert stripped == base
        assert cfg.backprop == load_config(ROOT / "src/localstdp/configs/mnist-4v9.toml").backprop


def test_apply_script_command_line(tmp_path):
    configs, tune = tmp_path / "configs", tmp_path / "tune"
    configs.mkdir()
    shutil.copy(ROOT / "src/localstdp/configs/iris.toml", configs / "iris.toml")
    _fake_tune(tune, "iris", "drtp", [0.01, 0.03, 0.1], 0.1, 0.778)
    p = subprocess.run([sys.executable, str(ROOT / "scripts/apply-peer-tune.py"), "--tune", str(tune), "--configs",
                        str(configs), "iris"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "not tuned (keep the [peers] defaults): fa dfa pepita ff" in p.stderr
    assert method_config(load_config(configs / "iris.toml"), "drtp").peers.lr == 0.1


def test_readme_peer_blocks_come_from_the_committed_results():
    """Each docs/comparison.md block between peers markers (<!-- peers:begin --> for docs/reproduce/peers, <!-- peers-NAME:begin -->
    for docs/reproduce/peers-NAME) is exactly what that directory's committed results.json generates; each run is
    the peers suite's methods and seeds on tasks of the suite, no task is in two runs, and together they cover
    every task of the suite."""
    page = (ROOT / "docs/comparison.md").read_text()
    blocks = re.findall(r"<!-- (peers[\w-]*):begin -->\n(.*?)<!-- \1:end -->", page, re.S)
    assert blocks and blocks[0][0] == "peers", "docs/comparison.md lacks the generated peers block"
    upd = _script("update-readme-peers")
    covered: list[str] = []
    for tag, body in blocks:
        src = ROOT / "docs/reproduce" / tag / "results.json"
        res = json.loads(src.read_text())
        assert body == upd.block(res, f"docs/reproduce/{tag}"), tag
        assert list(res["settings"]["methods"]) == SUITE_METHODS and len(res["settings"]["seeds"]) == 3
        assert set(res["settings"]["tasks"]) <= set(SUITE_TASKS)
        assert (src.parent / upd.PEERS_PLOT).exists()
        covered += res["settings"]["tasks"]
    assert sorted(covered) == sorted(SUITE_TASKS), "the page's peer blocks do not cover the suite exactly once"
    # the section title the issue asks for, the page's title, above the first block
    assert page.startswith("# How the rule compares with other local rules\n")
