"""The configs shipped inside the package (``iris.toml``, ``mnist-3v5.toml``, ...): their names, where
they lie, a one-line description of each, and copying one out to edit (``localstdp configs``).

A bare name (``iris``: no path separator, no ``.toml``) stands for the shipped ``iris.toml`` wherever
:func:`localstdp.config.load_config` finds no file of that name, so ``localstdp train --config iris``
works from any directory, with the package installed from a wheel or from a checkout.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ConfigError, OutputError

SUFFIX = ".toml"
DIRECTORY = Path(__file__).resolve().parent


def names() -> list[str]:
    """The shipped configs' names, sorted."""
    return sorted(p.stem for p in DIRECTORY.glob(f"*{SUFFIX}"))


def is_name(text: str | os.PathLike) -> bool:
    """Whether ``text`` reads as a name rather than a path: no separator, no ``.toml`` suffix."""
    s = os.fspath(text)
    seps = [os.sep] + ([os.altsep] if os.altsep else []) + ["/"]
    return bool(s) and s not in (".", "..") and not any(c in s for c in seps) and not s.endswith(SUFFIX)


def path(name: str) -> Path:
    """The file of the shipped config ``name``; ConfigError naming the shipped ones otherwise."""
    if name not in names():
        raise ConfigError(f"no shipped config {name!r}; shipped: {', '.join(names())} (`localstdp configs` lists them)")
    return DIRECTORY / f"{name}{SUFFIX}"


def _without_parentheses(text: str) -> str:
    out, depth = [], 0
    for ch in text:
        depth += ch == "("
        if not depth:
            out.append(ch)
        depth -= ch == ")" and depth > 0
    return re.sub(r"\s+([,.:;])", r"\1", re.sub(r"\s+", " ", "".join(out))).strip()


def describe(name: str) -> str:
    """One line: the first sentence of the config's leading comment, parentheses left out."""
    head = []
    for line in path(name).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        head.append(line.lstrip("#").strip())
    text = _without_parentheses(" ".join(head))
    match = re.search(r"\.(\s|$)", text)
    return text[: match.start() + 1] if match else text


def copy(name: str, dest: str | os.PathLike | None = None) -> Path:
    """Write the shipped config ``name`` to ``dest`` (default ``./NAME.toml``; a directory gets
    ``NAME.toml`` inside it) and return where; an existing file is never overwritten (OutputError)."""
    text = path(name).read_text(encoding="utf-8")
    target = Path(dest) if dest is not None else Path(f"{name}{SUFFIX}")
    if target.is_dir():
        target = target / f"{name}{SUFFIX}"
    try:
        with open(target, "x", encoding="utf-8") as fh:  # "x": fails if it exists, nothing is overwritten
            fh.write(text)
    except FileExistsError:
        raise OutputError(f"{target} exists; not overwriting it (remove it, or name another DEST)") from None
    return target
