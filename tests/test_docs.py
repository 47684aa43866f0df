"""The docs site's generated reference pages (docs/gen_ref.py) cover the code: every field of every config
dataclass (a field or a dataclass added later shows up, or this fails), every subcommand of the CLI and
every public name of ``localstdp``. Fast: no mkdocs build here (`make docs` builds the site strictly in CI)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

import localstdp
from localstdp.cli import build_parser
from localstdp.config import ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_ref", ROOT / "docs/gen_ref.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sections(page: str) -> dict[str, str]:
    """The page's ``## `title``` sections by title."""
    parts = re.split(r"^## `([^`]+)`\n", page, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def _reachable(cls: type, out: set[type]) -> set[type]:
    """cls and every dataclass held in its fields' defaults, recursively."""
    out.add(cls)
    for f in dataclasses.fields(cls):
        value = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if dataclasses.is_dataclass(value) and type(value) not in out:
            _reachable(type(value), out)
    return out


def test_config_reference_lists_every_field_of_every_config_dataclass(gen):
    expected = _reachable(ExperimentConfig, set()) - {ExperimentConfig}
    for name in gen.CONFIG_MODULES:  # and every other dataclass those modules define (a new section shows up)
        module = importlib.import_module(name)
        expected |= {c for _, c in inspect.getmembers(module, inspect.isclass)
                     if dataclasses.is_dataclass(c) and c.__module__ == name and c is not ExperimentConfig
                     and c.__name__ not in gen.NOT_SETTINGS}
    page = gen.config_reference()
    sections = {re.search(r"^`([\w.]+)`$", body, re.M).group(1): body for body in _sections(page).values()}
    for cls in expected:
        body = sections.get(f"{cls.__module__}.{cls.__qualname__}")
        assert body is not None, f"{cls.__qualname__} is missing from the config reference"
        for f in dataclasses.fields(cls):
            assert re.search(rf"^\| `{f.name}` \| ", body, re.M), f"{cls.__qualname__}.{f.name} is not in the reference"
    # every [section] of a config file, under its TOML name
    for f in dataclasses.fields(ExperimentConfig):
        if dataclasses.is_dataclass(getattr(ExperimentConfig(), f.name)):
            assert f"## `[{f.name}]`" in page


def test_config_reference_shows_defaults_and_field_descriptions(gen):
    sections = _sections(gen.config_reference())
    assert "| `lr` | `float` | `0.5` |" in sections["[train]"]
    assert "| `hidden` | `list[int]` | `[64, 64]` | widths of the hidden dense layers" in sections["[model]"]
    assert "| `channels` | `int` | (required) |" in sections["[[model.conv]]"]
    # an "Attributes:" docstring gives each field its own line; a prose docstring is shown whole
    assert re.search(r"\| `tau_minus` \| `float` \| `0.5` \| STDP time constants", sections["[rule]"])
    assert "a resumable checkpoint every N epochs" in sections["[train]"]


def _subcommands(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [f"{prefix} {name}", *_subcommands(sub, f"{prefix} {name}")]
    return out


def test_cli_reference_lists_every_subcommand_with_its_options(gen):
    page = gen.cli_reference()
    sections = _sections(page)
    names = _subcommands(build_parser(), "localstdp")
    assert {"localstdp train", "localstdp reproduce", "localstdp configs"} <= set(names)
    assert list(sections) == ["localstdp", *names]
    parser = build_parser()
    for name in names:
        sub = parser
        for word in name.split()[1:]:
            sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in sections[name], f"{name} {flag} is not in the CLI reference"


def test_api_reference_renders_every_public_name(gen):
    page = gen.api_reference()
    public = [n for n in localstdp.__all__ if n != "__version__"]
    for name in public:
        module = localstdp._LAZY[name]
        assert f"::: localstdp.{module}.{name}" in page
        assert getattr(importlib.import_module(f"localstdp.{module}"), name) is getattr(localstdp, name)


def test_the_site_lists_every_tuning_table_and_every_page(gen):
    index = gen.tune_index()
    for path in (ROOT / "docs/tune").glob("*/**/tune.md"):
        assert f"(../tune/{path.relative_to(ROOT / 'docs/tune').as_posix()})" in index
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        assert f": {page.name}\n" in nav, f"docs/{page.name} is not in mkdocs.yml's nav: add it there"
    for generated in gen.PAGES:
        assert f": {generated}\n" in nav
