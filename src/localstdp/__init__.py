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
}

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .config import ExperimentConfig, load_config
    from .learner import LocalLearner
    from .model import MLP, build_model
    from .rules import LEARNERS, RuleParams


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["LEARNERS", "MLP", "ExperimentConfig", "LocalLearner", "RuleParams", "__version__", "build_model", "load_config"]
