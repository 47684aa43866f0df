"""localstdp: train ordinary neural networks with a local association-STDP rule, side by side
with backpropagation."""

__version__ = "0.1.0"

from .config import ExperimentConfig, load_config  # noqa: E402
from .model import MLP, build_model  # noqa: E402
from .rules import LEARNERS, RuleParams  # noqa: E402

__all__ = ["ExperimentConfig", "LEARNERS", "MLP", "RuleParams", "build_model", "load_config", "__version__"]
