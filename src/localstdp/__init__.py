"""localstdp: train ordinary neural networks with a local association-STDP rule, side by side
with backpropagation."""

__version__ = "0.1.0"

from .config import ExperimentConfig, load_config
from .model import MLP, build_model
from .rules import LEARNERS, RuleParams

__all__ = ["LEARNERS", "MLP", "ExperimentConfig", "RuleParams", "__version__", "build_model", "load_config"]
