"""Wall seconds per kind of work inside the grid's steps: the profile of ``localstdp bench --reproduce``.

Every step of a ``reproduce`` run (a panel part: one method of one seed; a frontier unit) times its work
in named phases -- ``train``, ``attack`` (the test-split suite), ``certify``, ``matched`` (robustness at
matched accuracy), ``val_attack`` (the validation worst case), ``diagnostics``, and at assembly
``transfer`` -- and writes them into its part or unit record as ``phase_seconds``. Nested phases are
timed exclusively under their path ("matched/attack": the attack inside the matched comparison, not
counted again in "matched"), so the phases of a record add up to the time spent in them.
Plain bookkeeping of this process's clock; nothing here changes what a step computes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

_TOTALS: dict[str, float] = {}
_STACK: list[list] = []  # [name, start, seconds spent in nested phases]


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block as phase ``name`` (under the phases it is nested in)."""
    _STACK.append([name, time.perf_counter(), 0.0])
    try:
        yield
    finally:
        path = "/".join(s[0] for s in _STACK)
        _, start, nested = _STACK.pop()
        spent = time.perf_counter() - start
        _TOTALS[path] = _TOTALS.get(path, 0.0) + spent - nested
        if _STACK:
            _STACK[-1][2] += spent


def take() -> dict[str, float]:
    """The phases timed since the last call (seconds, rounded to ms), and start afresh."""
    out = {k: round(v, 3) for k, v in _TOTALS.items()}
    _TOTALS.clear()
    return out


def add(into: dict[str, float], more: dict[str, float] | None) -> dict[str, float]:
    """Phase totals summed (a panel unit's: its parts' and its assembly's)."""
    out = dict(into)
    for k, v in (more or {}).items():
        out[k] = round(out.get(k, 0.0) + float(v), 3)
    return out
