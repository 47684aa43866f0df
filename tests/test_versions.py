"""A reproducible environment (issue 25, item 4): requirements.lock pins every distribution of the
environment exactly, covers every dependency pyproject.toml names (inside its range), and is what this
environment holds (`make install` installs with ``-c requirements.lock``); a reproduce run records the
versions it used in results.json (settings.versions), and the results.json files committed before
that still load and generate the same README blocks."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from localstdp import evaluation as E
from localstdp.evaluation.plan import VERSIONED, package_versions
from localstdp.evaluation.report import markdown, readme_tables
from localstdp.robustness import AttackSettings

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted((ROOT / "docs" / "reproduce").glob("*/results.json")) + sorted(
    (ROOT / "docs" / "reproduce").glob("results.json"))


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())
            assert m, f"requirements.lock: not an exact pin: {line!r}"
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]


def test_the_lock_pins_every_declared_dependency_inside_its_range():
    pins = lock()
    assert "localstdp" not in pins  # the package itself is not locked (it is installed editable or as a wheel)
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (pyproject.toml) is missing from requirements.lock"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), (req, pins[name])


def test_this_environment_holds_the_locked_versions():
    """What `make install` (pip install -c requirements.lock) gives; a drifted .venv: run `make install`."""
    pins = lock()
    for req in declared():
        name = canonicalize_name(req.name)
        assert metadata.version(req.name) == pins[name], (
            f"{req.name} {metadata.version(req.name)} installed, requirements.lock says {pins[name]}; run make install")


def test_package_versions_name_the_installed_distributions():
    import numpy
    import torch

    v = package_versions()
    assert list(v) == [*VERSIONED, "python"]
    assert v["torch"] == torch.__version__ and v["numpy"] == numpy.__version__
    assert v["localstdp"] == metadata.version("localstdp") and v["adversarial-robustness-toolbox"]


def test_a_reproduce_run_records_its_versions(tmp_path):
    cfg = E.task_config("iris-1v2")
    cfg = dataclasses.replace(cfg, frontier=dataclasses.replace(cfg.frontier, backprop_weight_decay=[],
                                                                local_lr=[], local_epochs=[], local_weight_decay=[]))
    attacks = AttackSettings(pgd_steps=2, pgd_restarts=1, square_queries=3, search_queries=5, autoattack=False)
    settings = E.GridSettings(seeds=1, frontier_seeds=0, epochs=1, n_attack=8, n_boot=100, attacks=attacks,
                              methods=("local", "backprop"), certify=False)
    res = E.run_grid({"iris-1v2": cfg}, settings)
    assert res["settings"]["versions"] == package_versions()
    assert "Versions: localstdp " in markdown(res) and f"torch {package_versions()['torch']}" in markdown(res)
    assert json.loads(json.dumps(res))["settings"]["versions"]["numpy"] == package_versions()["numpy"]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_results_without_versions_still_render(path):
    """Made before runs recorded versions: the report and the generated blocks (README, docs/results.md,
    docs/comparison.md) come out as before, and the same results with versions added change only the
    report's versions line, never a generated block."""
    res = json.loads(path.read_text())
    # a run made since records them (docs/reproduce/results.json): the same check on it without them
    res = res | {"settings": {k: v for k, v in res["settings"].items() if k != "versions"}}
    md, tables = markdown(res), readme_tables(res)
    assert "Versions:" not in md
    with_versions = res | {"settings": res["settings"] | {"versions": package_versions()}}
    assert readme_tables(with_versions) == tables
    assert markdown(with_versions).replace(
        "Versions: " + ", ".join(f"{k} {v}" for k, v in package_versions().items() if v) + ".\n\n", "") == md
    if path.parent.name.startswith("peers"):  # the peers block's generator (its README test reads the file)
        spec = importlib.util.spec_from_file_location("update_readme_peers", ROOT / "scripts/update-readme-peers.py")
        peers = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(peers)
        assert peers.block(with_versions) == peers.block(res)
    else:  # the README's table
        spec = importlib.util.spec_from_file_location("update_readme_results", ROOT / "scripts/update-readme-results.py")
        results = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(results)
        assert results.summary_table(with_versions) == results.summary_table(res)
