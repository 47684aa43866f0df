"""`localstdp reproduce --suite timing` (issue 32 item 4): the paper tasks with the local rule in rate mode
("local") and in timing mode ("local-timing") in ONE run, so that every comparison is paired (same seeds,
same test examples). local-timing is the local rule with rule.mode = "timing", its own eta chosen on
validation ([methods.local-timing.train] lr, `localstdp tune --rule local-timing`), and otherwise the
local rule's settings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from localstdp.cli import build_parser, main
from localstdp.cli.reproduce import SUITE_DEFAULTS, suite_defaults
from localstdp.config import load_config
from localstdp.data import load_dataset
from localstdp.evaluation.methods import PANEL, method_config, resolve_methods
from localstdp.evaluation.plan import _method_settings, resolve_tasks
from localstdp.evaluation.units import train_method
from localstdp.registry import SUITES, TASKS, TIMING_METHODS
from localstdp.train import train

ROOT = Path(__file__).resolve().parents[1]
CONFIGS, DOCS_TUNE = ROOT / "src" / "localstdp" / "configs", ROOT / "docs" / "tune"
STEMS = {task: TASKS[task].removesuffix(".toml") for task in SUITES["paper"]}  # docs/tune/<stem>/


def _args(*argv):
    return build_parser().parse_args(["reproduce", *argv, "--out", "x"])


def test_the_timing_suite_is_the_paper_tasks_with_rate_and_timing_mode():
    assert resolve_tasks(None, "timing") == list(SUITES["paper"])
    assert TIMING_METHODS == ("local-timing",) and SUITE_DEFAULTS["timing"]["methods"] == ("local", "local-timing")
    assert suite_defaults(_args("--suite", "timing")) == {
        "seeds": 3, "frontier_seeds": 0, "methods": ("local", "local-timing"), "n_attack": 500, "val_attack": 500}
    assert resolve_methods(["local-timing", "local"]) == ["local", "local-timing"]  # panel order: local first
    assert "local-timing" not in resolve_methods(None)  # opt-in only
    assert PANEL["local-timing"].learner == "local" and not PANEL["local-timing"].early_stop


def test_the_command_line_hands_the_suite_to_the_grid(monkeypatch, capsys):
    from localstdp.evaluation import grid

    seen = {}

    def fake_run_grid(cfgs, settings, **kw):
        seen.update(tasks=list(cfgs), settings=settings)
        raise KeyboardInterrupt

    monkeypatch.setattr(grid, "run_grid", fake_run_grid)
    assert main(["reproduce", "--suite", "timing", "--out", "unused-dir", "--jobs", "1", "--no-progress"]) == 130
    s = seen["settings"]
    assert seen["tasks"] == list(SUITES["paper"])
    assert (s.seeds, s.frontier_seeds, list(s.methods)) == (3, 0, ["local", "local-timing"])
    assert "3 seed(s), frontier 0 seed(s)" in capsys.readouterr().err


@pytest.mark.parametrize("task", SUITES["paper"])
def test_local_timing_is_the_local_rule_in_timing_mode_at_its_own_validated_eta(task):
    cfg = load_config(CONFIGS / TASKS[task])
    rate, timing = method_config(cfg, "local"), method_config(cfg, "local-timing")
    assert (rate.rule.mode, timing.rule.mode) == ("rate", "timing")
    # eta (= train.lr) is the validation choice of `localstdp tune --rule local-timing` (docs/tune/<stem>/local-timing)
    tuned = json.loads((DOCS_TUNE / STEMS[task] / "local-timing" / "tune.json").read_text())
    assert tuned["method"] == "local-timing" and tuned["chosen"] == {"train.lr": timing.train.lr}
    assert timing.rule.eta == timing.train.lr
    # everything else is the local rule's: targets, window, clock, epochs, batch, data, model
    assert dataclasses.replace(timing.rule, mode="rate", eta=rate.rule.eta) == rate.rule
    assert dataclasses.replace(timing.train, lr=rate.train.lr) == rate.train
    assert (timing.model, timing.data) == (rate.model, rate.data)
    assert _method_settings(cfg, "local-timing") == _method_settings(cfg, "local") | {"mode": "timing",
                                                                                      "lr": timing.train.lr}
    # its own table sets its settings, but not the mode that defines it
    own = cfg.with_sets(["methods.local-timing.train.lr=0.3", 'methods.local-timing.rule.mode="rate"'])
    c = method_config(own, "local-timing")
    assert (c.train.lr, c.rule.eta, c.rule.mode) == (0.3, 0.3, "timing")
    assert method_config(own, "local").train.lr == rate.train.lr


def test_local_timing_trains_what_the_local_rule_trains_in_timing_mode():
    cfg = load_config(CONFIGS / TASKS["iris-1v2"])
    ds = load_dataset(cfg.data)
    got = train_method(cfg, "local-timing", ds, seed=1, epochs=1)
    assert (got.cfg.rule.mode, got.cfg.train.lr) == ("timing", 0.5)  # iris: [methods.local-timing.train] lr
    by_hand = cfg.with_sets(['rule.mode="timing"', "train.lr=0.5"]).with_overrides(seed=1, epochs=1)
    want = train(by_hand, "local", None, dataset=ds)["model"]
    rate = train_method(cfg, "local", ds, seed=1, epochs=1).model
    for a, b in zip(got.model.state_dict().values(), want.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, r) for a, r in zip(got.model.state_dict().values(), rate.state_dict().values()))
