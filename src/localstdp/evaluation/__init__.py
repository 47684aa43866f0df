"""The evaluation behind ``localstdp reproduce`` and ``localstdp tune`` (protocol: ``docs/evaluation.md``).

Modules, lowest first (each reads only those above it):

- :mod:`~localstdp.evaluation.methods`: the panel's methods (local rule, backprop baselines, peer rules);
- :mod:`~localstdp.evaluation.stats`: paired bootstrap, TOST, Holm, McNemar (numbers in, numbers out);
- :mod:`~localstdp.evaluation.settings`: :class:`GridSettings`, and how results.json packs per-example bits;
- :mod:`~localstdp.evaluation.points`: the frontier's points (settings, names, configs);
- :mod:`~localstdp.evaluation.units`: one panel seed or one frontier point: train, attack, certify;
- :mod:`~localstdp.evaluation.plan`: tasks, units and steps of a grid, their cost and fingerprints;
- :mod:`~localstdp.evaluation.selection`: the validation robustness selection (each family's setting chosen
  by its validation worst case) and its paired comparisons;
- :mod:`~localstdp.evaluation.analysis`: summaries, paired comparisons, verdicts and claims;
- :mod:`~localstdp.evaluation.grid`: :func:`run_grid`, the resumable (and parallel) run of a grid;
- :mod:`~localstdp.evaluation.report`: results.md, the README tables and the plots;
- :mod:`~localstdp.evaluation.tune`: one method's settings chosen on the validation split.

The names below are loaded on first use (PEP 562): importing one module (say ``stats``) does not
import the rest.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {  # public name -> the submodule defining it
    "PANEL": "methods", "PanelMethod": "methods", "method_config": "methods", "resolve_methods": "methods",
    "selected_epoch": "methods", "closest_epoch": "methods",
    "GridSettings": "settings", "HEADLINE_EPS": "settings", "FRONTIER_EPS": "settings", "attack_indices": "settings",
    "pack": "settings", "unpack": "settings",
    "train_method": "units", "panel_method": "units", "panel_unit": "units", "assemble_panel": "units",
    "frontier_points": "points", "point_name": "points", "point_config": "points", "from_panel": "points",
    "frontier_unit": "units",
    "frontier_row_from_panel": "units",
    "task_config": "plan", "resolve_tasks": "plan", "code_version": "plan", "fingerprint": "plan",
    "forward_flops": "plan", "step_cost": "plan", "TRAIN_PASSES": "plan", "ATTACK_PASSES": "plan",
    "selection_summary": "selection", "choose": "selection", "SELECT_TOL": "selection",
    "summarise": "analysis", "claims": "analysis", "frontier_verdict": "analysis",
    "run_grid": "grid", "run_step": "grid",
    "markdown": "report", "readme_tables": "report", "write_report": "report",
    "parse_grid": "tune", "apply_point": "tune", "write_tune": "tune",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
