"""The generated pages of the docs site: the config reference (from the config dataclasses), the CLI
reference (from argparse), the API reference (from the public names of ``localstdp/__init__.py``) and
the index of the tuning tables (docs/tune/).

mkdocs-gen-files runs this file on every ``mkdocs build`` (``make docs``), so these pages are written
from the code as it is and cannot drift from it; ``python docs/gen_ref.py`` prints them instead.
tests/test_docs.py checks that every field of every config dataclass and every subcommand appears.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "src"))  # the checkout's package, even without an editable install

# The modules whose dataclasses make a config file or a ``reproduce`` run's settings.
CONFIG_MODULES = (
    "localstdp.config",
    "localstdp.config_model",
    "localstdp.rules.params",
    "localstdp.rules.backprop",
    "localstdp.rules.peers.params",
    "localstdp.evaluation.settings",
    "localstdp.robustness.suite",
)
# Dataclasses of those modules that are results, not settings.
NOT_SETTINGS = ("SuiteResult",)


def config_classes() -> list[tuple[str, type]]:
    """(TOML section or Python name, dataclass) for every settings dataclass: the sections of
    ExperimentConfig in file order, then ``[[model.conv]]`` and the other dataclasses of CONFIG_MODULES
    (``reproduce``'s GridSettings and AttackSettings)."""
    from localstdp.config import ExperimentConfig

    out: list[tuple[str, type]] = []
    default = ExperimentConfig()
    for f in dataclasses.fields(ExperimentConfig):
        value = getattr(default, f.name)
        if dataclasses.is_dataclass(value):
            out.append((f"[{f.name}]", type(value)))
    seen = {cls for _, cls in out} | {ExperimentConfig}
    for name in CONFIG_MODULES:
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (dataclasses.is_dataclass(cls) and cls.__module__ == module.__name__ and cls not in seen
                    and cls.__name__ not in NOT_SETTINGS):
                seen.add(cls)
                label = "[[model.conv]]" if cls.__name__ == "ConvLayer" else cls.__name__
                out.append((label, cls))
    return out


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if dataclasses.is_dataclass(value):
        return f"`{type(value).__name__}` (below)"
    if value is None:
        return "unset"
    try:
        return f"`{json.dumps(list(value) if isinstance(value, tuple) else value)}`"
    except TypeError:
        return f"`{value!r}`"


def _md(text: str) -> str:
    """Docstring text as a table cell: rST ``code`` as Markdown `code`, Markdown's specials escaped
    outside code spans."""
    text = text.replace("``", "`")
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"([\\*_\[\]<|])", r"\\\1", parts[i])
    return "`".join(parts)


def field_docs(cls: type) -> dict[str, str] | None:
    """Each field's description when the docstring is a list of fields: after its first paragraph,
    every line is ``name: ...`` (or ``a, b: ...``, ``name (where): ...``), a continuation indented
    under it, or ``Attributes:``. None for a docstring in prose (the page shows it whole)."""
    names = {f.name for f in dataclasses.fields(cls)}
    docs: dict[str, list[str]] = {}
    current: list[str] | None = None
    indent = -1
    doc = inspect.cleandoc(cls.__doc__ or "")
    body = doc.split("\nAttributes:\n", 1) if "\nAttributes:\n" in doc else doc.split("\n\n", 1)
    for line in (body[1] if len(body) > 1 else "").splitlines():
        stripped = line.strip()
        depth = len(line) - len(line.lstrip())
        m = re.match(r"((?:\w+)(?:, \w+)*)(?: \([^)]*\))?: (.*)", stripped)
        if not stripped:
            continue
        if m and set(m.group(1).split(", ")) <= names and (indent < 0 or depth == indent):
            current, indent = [m.group(2)], depth
            for name in m.group(1).split(", "):
                docs[name] = current
        elif current is not None and depth > indent:
            current.append(stripped)
        else:
            return None
    return {k: " ".join(v) for k, v in docs.items()} if docs else None


def config_reference() -> str:
    lines = [
        "# Config reference",
        "",
        "Generated from the config dataclasses by `docs/gen_ref.py` on every docs build: every key, its type and",
        "default, and the class's own docstring. A config file (TOML) has the sections below, each optional",
        "except `data.name`; `[methods.<method>.<section>]` holds one panel method's own values for a section",
        "(e.g. `[methods.backprop-wd.backprop]`). How to write one: [Configs](../configs.md).",
        "",
    ]
    for label, cls in config_classes():
        where = f"{cls.__module__}.{cls.__qualname__}"
        lines += [f"## `{label}`", "", f"`{where}`", ""]
        doc = inspect.cleandoc(cls.__doc__ or "")
        if doc and not doc.startswith(cls.__name__ + "("):  # a dataclass without a docstring gets its signature
            lines += ["```text", doc, "```", ""]
        described = field_docs(cls)
        if described is None:
            lines += ["| key | type | default |", "|---|---|---|"]
        else:
            lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            row = f"| `{f.name}` | `{kind}` | {_default(f)} |"
            lines.append(row if described is None else row + f" {_md(described.get(f.name, ''))} |")
        lines.append("")
    return "\n".join(lines)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_reference() -> str:
    from localstdp.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps help at the terminal's width: one width for every build
    try:
        parser = build_parser()
        lines = [
            "# CLI reference",
            "",
            "Generated from the argparse parser (`localstdp.cli.build_parser`) by `docs/gen_ref.py` on every docs",
            "build: the `--help` of `localstdp` and of each subcommand. Exit codes and what a run writes:",
            "[Exit codes, checkpoints and resuming](../running.md).",
            "",
            "## `localstdp`",
            "",
            "```text",
            parser.format_help().rstrip(),
            "```",
            "",
        ]

        def walk(p: argparse.ArgumentParser, prefix: str) -> None:
            for name, sub in _subcommands(p).items():
                lines.extend([f"## `{prefix} {name}`", "", "```text", sub.format_help().rstrip(), "```", ""])
                walk(sub, f"{prefix} {name}")

        walk(parser, "localstdp")
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(lines)


def api_reference() -> str:
    import localstdp

    lines = [
        "# API reference",
        "",
        "The public API: the names `localstdp/__init__.py` exports (`import localstdp; localstdp.LocalLearner`),",
        "rendered from their docstrings by mkdocstrings. Generated by `docs/gen_ref.py` from that module's list.",
        "",
    ]
    for name, module in localstdp._LAZY.items():
        lines += [f"## `{name}`", "", f"::: localstdp.{module}.{name}", ""]
    return "\n".join(lines)


def tune_index() -> str:
    lines = [
        "# Tuning tables",
        "",
        "Every setting of the shipped configs was chosen on the validation split with `localstdp tune`",
        "(`scripts/tune-paper-configs.sh`, `scripts/tune-tenclass-configs.sh`, `scripts/tune-peers.sh`); each",
        "table below is one `tune.md` of docs/tune/ (an `abandoned-grid` is a grid that was replaced, kept as",
        "measured). Listed by `docs/gen_ref.py` from the directory.",
        "",
    ]
    by_task: dict[str, list[Path]] = {}
    for path in sorted((DOCS / "tune").glob("*/**/tune.md")):
        by_task.setdefault(path.relative_to(DOCS / "tune").parts[0], []).append(path)
    for task, paths in by_task.items():
        links = []
        for p in paths:
            rel = p.relative_to(DOCS / "tune" / task).parent.as_posix()
            links.append(f"[{rel}](../tune/{p.relative_to(DOCS / 'tune').as_posix()})")
        lines.append(f"- **{task}**: " + ", ".join(links))
    return "\n".join(lines) + "\n"


PAGES = {
    "reference/config.md": config_reference,
    "reference/cli.md": cli_reference,
    "reference/api.md": api_reference,
    "reference/tune.md": tune_index,
}


def main() -> None:
    import mkdocs_gen_files

    for path, make in PAGES.items():
        with mkdocs_gen_files.open(path, "w") as f:
            f.write(make())
        mkdocs_gen_files.set_edit_path(path, "gen_ref.py")


if __name__ == "<run_path>":  # mkdocs-gen-files
    main()
elif __name__ == "__main__":
    for make in PAGES.values():
        print(make())
