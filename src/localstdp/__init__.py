"""localstdp: train ordinary neural networks with a local association-STDP rule, side by side
with backpropagation."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public names, loaded on first use (PEP 562) so that `import localstdp` -- and the command line's
# `--help` / `--version` -- do not import torch: name -> the submodule defining it.
_LAZY = {
    "ExperimentConfig": "config",
    "load_config": "config",
    "MLP": "model",
    "build_model": "model",
    "LocalLearner": "learner",
    "LEARNERS": "rules",
    "RuleParams": "rules",
    "load_run": "train",
    "GridSettings": "evaluation.settings",
    "run_grid": "evaluation.grid",
    "AttackSettings": "robustness.suite",
    "attack_suite": "robustness.suite",
    "certified_accuracy": "robustness.bounds",
}

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .config import ExperimentConfig, load_config
    from .evaluation.grid import run_grid
    from .evaluation.settings import GridSettings
    from .learner import LocalLearner
    from .model import MLP, build_model
    from .robustness.bounds import certified_accuracy
    from .robustness.suite import AttackSettings, attack_suite
    from .rules import LEARNERS, RuleParams
    from .train import load_run


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [  # = _LAZY's names and __version__ (tests/test_startup.py checks they agree)
    "LEARNERS", "MLP", "AttackSettings", "ExperimentConfig", "GridSettings", "LocalLearner", "RuleParams",
    "__version__", "attack_suite", "build_model", "certified_accuracy", "load_config", "load_run", "run_grid",
]
