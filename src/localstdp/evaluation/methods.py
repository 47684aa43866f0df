"""The comparison panel: the local rule and the backprop baselines it must beat (docs/evaluation.md).

Every method trains the same model from the same seed, split and epoch budget; they differ in the
learner and in settings chosen on the validation split (``localstdp tune``), which a config holds
in its base sections (``local``, ``backprop``) or in ``[methods.<name>]`` (the variants):

  local         the association-STDP rule (rules/local.py)
  backprop      cross-entropy + the optimiser of [backprop] (plain: the configs set no weight decay)
  backprop-wd   the same with weight decay ([methods.backprop-wd.backprop] weight_decay)
  backprop-es   plain backprop, the weights of the epoch with the best validation accuracy
  backprop-mse  sigmoid outputs trained with squared error to the local rule's a_hi / a_lo targets
  fa, dfa, drtp, pepita, ff   the peer local rules (docs/peers.md), settings in [methods.<name>.peers];
                only with ``--methods`` (the default is DEFAULT_METHODS)
  linear        multinomial logistic regression on the input pixels (rules/shallow.py)
  random-features  the same network, hidden layers frozen at initialisation, only the output layer trained
                (rules/shallow.py); both only with ``--methods``, each with its L2 strength
                [methods.<name>.backprop] weight_decay chosen on validation (``localstdp tune``)
  local-timing  the local rule in timing mode (rule.mode = "timing", whatever the config's [rule] says):
                the local rule's settings plus [methods.local-timing]; only with ``--methods`` or
                ``--suite timing``
  backprop-at   backprop trained on PGD adversarial examples (Madry et al. 2018; rules/robust.py)
  backprop-trades  backprop trained with the TRADES objective (Zhang et al. 2019), beta 6 (the paper's)
  local-at      the local rule shown adversarial examples crafted against its own current model (the
                attack differentiates the network; the update stays local)
                these three only with ``--methods`` or ``--suite robust``; each trains at radius 0.1 (the
                headline eps, as Madry et al. train at the eps they test at) unless [methods.<name>.robust]
                adv_eps says otherwise, and the frontier sweeps that radius (frontier.adv_eps, and TRADES'
                beta: frontier.trades_beta), so the validation robustness selection chooses it

The test split plays no part in any choice: epochs are picked by validation accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import PANEL_METHODS, ExperimentConfig
from ..errors import ConfigError
from ..registry import DEFAULT_METHODS, SHALLOW_BASELINES


@dataclass(frozen=True)
class PanelMethod:
    name: str
    learner: str  # key of localstdp.rules.LEARNERS
    early_stop: bool  # the reported model is the epoch with the best validation accuracy
    about: str
    sets: tuple[str, ...] = ()  # ``--set``-style values that define the method, applied last
    defaults: tuple[str, ...] = ()  # ``--set``-style values applied first: [methods.<name>] may change them


PANEL: dict[str, PanelMethod] = {
    "local": PanelMethod("local", "local", False, "the local association-STDP rule"),
    "backprop": PanelMethod("backprop", "backprop", False, "backprop, cross-entropy, no regularisation"),
    "backprop-wd": PanelMethod("backprop-wd", "backprop", False, "backprop with weight decay tuned on validation"),
    "backprop-es": PanelMethod("backprop-es", "backprop", True, "backprop early-stopped on validation"),
    "backprop-mse": PanelMethod("backprop-mse", "backprop-mse", False,
                                "backprop, sigmoid outputs, squared error to the rule's targets"),
    "fa": PanelMethod("fa", "fa", False, "feedback alignment (Lillicrap et al. 2016)"),
    "dfa": PanelMethod("dfa", "dfa", False, "direct feedback alignment (Nøkland 2016)"),
    "drtp": PanelMethod("drtp", "drtp", False, "direct random target projection (Frenkel et al. 2021)"),
    "pepita": PanelMethod("pepita", "pepita", False, "PEPITA, error-driven input modulation (Dellaferrera & Kreiman 2022)"),
    "ff": PanelMethod("ff", "ff", False, "Forward-Forward (Hinton 2022); predicts by goodness"),
    "linear": PanelMethod("linear", "linear", False, "multinomial logistic regression on the pixels, L2 tuned on validation"),
    "random-features": PanelMethod("random-features", "random-features", False,
                                   "the same network, hidden layers frozen at initialisation, readout trained"),
    "local-timing": PanelMethod("local-timing", "local", False, "the local rule in timing mode (the STDP window)",
                                ('rule.mode="timing"',)),
    "backprop-at": PanelMethod("backprop-at", "backprop", False, "backprop, PGD adversarial training (Madry et al. 2018)",
                               defaults=("robust.adv_eps=0.1",)),
    "backprop-trades": PanelMethod("backprop-trades", "backprop", False, "backprop, TRADES (Zhang et al. 2019)",
                                   defaults=("robust.adv_eps=0.1", "robust.trades_beta=6.0")),
    "local-at": PanelMethod("local-at", "local", False, "the local rule on adversarial examples of its own model",
                            defaults=("robust.adv_eps=0.1",)),
}
assert tuple(PANEL) == PANEL_METHODS


def resolve_methods(names) -> list[str]:
    """Method names in panel order (default: DEFAULT_METHODS); unknown names are a ConfigError."""
    if not names:
        return list(DEFAULT_METHODS)
    bad = [n for n in names if n not in PANEL]
    if bad:
        raise ConfigError(f"unknown method(s) {', '.join(bad)}; expected any of {', '.join(PANEL)}")
    return [m for m in PANEL if m in set(names)]


def method_config(cfg: ExperimentConfig, name: str) -> ExperimentConfig:
    """The config ``name`` trains with: the base config plus ``[methods.<name>]``.

    backprop-wd without its own weight decay would be plain backprop under another name, and linear or
    random-features without their own L2 strength an untuned baseline: refused."""
    if name not in PANEL:
        raise ConfigError(f"unknown method {name!r}; expected one of {', '.join(PANEL)}")
    if name in SHALLOW_BASELINES and "weight_decay" not in cfg.methods.get(name, {}).get("backprop", {}):
        # the base section's weight decay is plain backprop's (0): an unregularised baseline would be the weakest
        raise ConfigError(f"{name} needs its L2 strength chosen on validation: set [methods.{name}.backprop] "
                          f"weight_decay (choose it with `localstdp tune --rule {name} --grid "
                          f"backprop.weight_decay=...`, or --set methods.{name}.backprop.weight_decay=...)")
    spec = PANEL[name]
    out = (cfg.with_sets(spec.defaults) if spec.defaults else cfg).for_method(name).with_sets(spec.sets)
    if name == "backprop-wd" and out.backprop.weight_decay <= 0:
        raise ConfigError("backprop-wd needs a weight decay > 0: set [methods.backprop-wd.backprop] weight_decay "
                          "(choose it with `localstdp tune --rule backprop-wd --grid backprop.weight_decay=...`)")
    return out


def selected_epoch(history: list[dict], early_stop: bool) -> int:
    """The reported epoch (1-based): the last, or with early stopping the epoch with the highest
    validation accuracy (ties: the earliest)."""
    if not early_stop:
        return len(history)
    val = [h.get("val_accuracy") for h in history]
    if any(v is None for v in val):
        raise ConfigError("early stopping needs a validation split (data.val_fraction > 0)")
    return int(np.argmax(val)) + 1


def closest_epoch(history: list[dict], target: float) -> int:
    """The epoch (1-based) whose VALIDATION accuracy is closest to ``target``; ties: the earliest."""
    val = [h.get("val_accuracy") for h in history]
    if any(v is None for v in val):
        raise ConfigError("a matched-accuracy comparison needs a validation split (data.val_fraction > 0)")
    return int(np.argmin([abs(v - target) for v in val])) + 1
