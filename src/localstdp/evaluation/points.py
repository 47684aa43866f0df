"""The robustness-accuracy frontier's points: which settings a task's frontier trains (backprop's weight
decay, at each of its rates when frontier.backprop_lr is given; the local rule along its knobs; the
shallow baselines' L2 strengths), their names, the config each trains with, and which are panel models
already. Read by units.py (training one point) and plan.py (the grid's units).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config import ExperimentConfig
from ..registry import ROBUST_METHODS, SHALLOW_BASELINES
from .methods import PANEL, method_config


def frontier_points(cfg: ExperimentConfig, methods: Sequence[str] = ()) -> list[dict]:
    """The frontier's points: backprop's weight decay (at each of frontier.backprop_lr when given:
    the rate is re-chosen on validation per decay, see analysis.frontier_summary), and the local
    rule at its own settings and along each of its knobs (eta, epochs, rule.weight_decay, target
    contrast); with ``linear`` / ``random-features`` among ``methods``, their L2 strength
    (frontier.linear_l2 / readout_l2); input noise (frontier.input_noise) for the local rule, backprop and
    the linear model; with ``backprop-at`` / ``backprop-trades`` / ``local-at`` among ``methods``, their training
    radius (frontier.adv_eps) and TRADES' beta (frontier.trades_beta). ``overrides`` are ``--set`` strings
    applied to the method's config."""
    f = cfg.frontier
    pts = []
    for v in f.backprop_weight_decay:
        if f.backprop_lr:
            pts += [{"method": "backprop", "knob": "backprop.weight_decay", "value": v, "lr": lr,
                     "overrides": [f"backprop.weight_decay={v!r}", f"backprop.lr={lr!r}"]} for lr in f.backprop_lr]
        else:
            pts.append({"method": "backprop", "knob": "backprop.weight_decay", "value": v,
                        "overrides": [f"backprop.weight_decay={v!r}"]})
    pts.append({"method": "local", "knob": "base", "value": None, "overrides": []})
    pts += [{"method": "local", "knob": "train.lr", "value": v, "overrides": [f"train.lr={v!r}"]} for v in f.local_lr]
    pts += [{"method": "local", "knob": "train.epochs", "value": v, "overrides": [f"train.epochs={v!r}"]}
            for v in f.local_epochs]
    pts += [{"method": "local", "knob": "rule.weight_decay", "value": v, "overrides": [f"rule.weight_decay={v!r}"]}
            for v in f.local_weight_decay]
    pts += [{"method": "local", "knob": "rule.targets", "value": list(v),
             "overrides": [f"rule.a_hi={v[0]!r}", f"rule.a_lo={v[1]!r}"]} for v in f.local_targets]
    for m, values in (("linear", f.linear_l2), ("random-features", f.readout_l2)):
        if m in methods:  # the L2 strength of rules/shallow.py is backprop.weight_decay
            pts += [{"method": m, "knob": "backprop.weight_decay", "value": v,
                     "overrides": [f"backprop.weight_decay={v!r}"]} for v in values]
    # input noise in training (rules/robust.py), a knob of every family alike: the local rule, backprop (at its
    # own rate, no decay) and the linear model; then the robustly trained families along their radius / beta
    for m in ("local", "backprop", "linear"):
        if m != "linear" or m in methods:
            pts += [_robust_point(m, "input_noise", v) for v in f.input_noise]
    for m in ROBUST_METHODS:
        if m in methods:
            pts += [_robust_point(m, "adv_eps", v) for v in f.adv_eps]
            pts += [_robust_point(m, "trades_beta", v) for v in (f.trades_beta if m == "backprop-trades" else ())]
    return pts


def _robust_point(method: str, key: str, value: float) -> dict:
    return {"method": method, "knob": f"robust.{key}", "value": value, "overrides": [f"robust.{key}={value!r}"]}


KNOB_LABELS = {"backprop.weight_decay": "weight_decay", "train.lr": "eta", "train.epochs": "epochs",
               "rule.weight_decay": "weight_decay", "rule.targets": "targets", "robust.input_noise": "noise",
               "robust.adv_eps": "eps", "robust.trades_beta": "beta"}
# the knobs whose point at the method's own setting IS its panel model (from_panel)
PANEL_KNOBS = ("backprop.weight_decay", "robust.adv_eps", "robust.trades_beta")


def point_name(p: dict) -> str:
    """e.g. "backprop:weight_decay=0.001", "backprop:weight_decay=0.001,lr=0.003" (with
    frontier.backprop_lr), "local" (its own settings), "local:eta=0.2", "local:a_hi=0.8,a_lo=0.2",
    "linear:l2=0.01", "linear:noise=0.1", "backprop-at:eps=0.05", "backprop-trades:beta=1.0"."""
    if p["knob"] == "base":
        return p["method"]
    if p["knob"] == "rule.targets":  # a name is also a file name (OUT/units): no "/" in it
        return f"{p['method']}:a_hi={p['value'][0]},a_lo={p['value'][1]}"
    shallow = p["method"] in SHALLOW_BASELINES and p["knob"] == "backprop.weight_decay"
    label = "l2" if shallow else KNOB_LABELS[p["knob"]]
    return f"{p['method']}:{label}={p['value']}" + (f",lr={p['lr']}" if "lr" in p else "")


def point_config(cfg: ExperimentConfig, point: dict) -> ExperimentConfig:
    """The config a frontier point trains with as the panel method ``point["method"]``: that method's
    config with the point's overrides; for linear / random-features the overrides go into their
    ``[methods.<name>]`` table, where the panel reads their L2 strength, and so do those of a method with
    defaults (backprop-at, backprop-trades, local-at), which its table overrides."""
    m = point["method"]
    if m in SHALLOW_BASELINES or PANEL[m].defaults:
        # into the method's own table: train_method applies method_config once more, and a method's defaults
        # (backprop-at's radius, ...) must not undo the point's value there
        return cfg.with_sets([f"methods.{m}.{o}" for o in point["overrides"]])
    return method_config(cfg, m).with_sets(point["overrides"])


def point_fields(point: dict) -> dict:
    """What a frontier row records of its point: name, knob, value (and backprop's rate when swept)."""
    return {"point": point_name(point), "knob": point["knob"], "value": point["value"]} | (
        {"lr": point["lr"]} if "lr" in point else {})


def from_panel(point: dict, cfg: ExperimentConfig) -> str | None:
    """The panel method whose model IS this frontier point (same config, seed and budget), or None:
    the local rule at its own settings, and backprop, linear or random-features at the config's own
    weight decay / L2 strength (and, for a point with its own rate, the config's own rate)."""
    if point["method"] == "local" and point["knob"] == "base":
        return "local"
    m, knob = point["method"], point["knob"]
    if knob in PANEL_KNOBS:
        own = method_config(cfg, m)
        section, key = knob.split(".")
        if point["value"] == getattr(getattr(own, section), key) and ("lr" not in point or point["lr"] == own.backprop.lr):
            return m
    return None
