"""The ``[model]`` section of a config: the MLP (default) or a CNN, validated once.

    [model]                      [model]
    hidden = [128, 64]           kind = "cnn"
                                 conv = [{channels = 32, kernel = 5, padding = 2, pool = 2}]
                                 hidden = [1024]     # dense layers after the flatten

Every problem is a one-line :class:`~localstdp.errors.ConfigError` naming the key, e.g.
``model.conv[1].kernel``. What the data must satisfy (a square image large enough for the conv
stack) is checked when the model is built (:func:`localstdp.model.build_network`).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field

from .errors import ConfigError

MODEL_KINDS = ("mlp", "cnn")


@dataclass(frozen=True)
class ConvLayer:
    """One convolutional block: Conv2d(channels, kernel, stride, padding) + Sigmoid, then a
    MaxPool2d(pool) when pool > 1. Integers: channels, kernel, stride, pool >= 1; padding >= 0."""

    channels: int
    kernel: int = 3
    stride: int = 1
    padding: int = 0
    pool: int = 1

    @classmethod
    def from_table(cls, i: int, table) -> ConvLayer:
        """Validate ``model.conv[i]`` (a TOML table) into a ConvLayer; errors name the key."""
        where = f"model.conv[{i}]"
        if isinstance(table, ConvLayer):
            return table
        if not isinstance(table, dict):
            raise ConfigError(f"{where} = {table!r}: expected a table, e.g. {{channels = 32, kernel = 5, pool = 2}}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key, value in table.items():
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(names)})"
                raise ConfigError(f"unknown key {where}.{key}{hint}")
            lowest = 0 if key == "padding" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ConfigError(f"{where}.{key} = {value!r}: expected an integer >= {lowest}")
        if "channels" not in table:
            raise ConfigError(f"{where}.channels is required (the layer's output channels)")
        return cls(**table)


@dataclass(frozen=True)
class ModelConfig:
    """The network both methods train.

    kind: "mlp" (default) or "cnn".
    hidden: widths of the hidden dense layers (MLP: at least one; CNN: after the flatten, may be []).
    activation: sigmoid (the local rule's activities are firing rates in (0, 1)).
    receptive_field (MLP only): 0 (default) = full connectivity; S >= 1: each neuron of the first
        hidden layer sees one fixed random S x S patch of the square input image (architecture, so
        both methods share it; the inputs must form a square image of side >= S). See model.build_model.
    conv (CNN only): the convolutional blocks in order, each a table {channels, kernel = 3, stride = 1,
        padding = 0, pool = 1} (:class:`ConvLayer`); the input is the square one-channel image.
    """

    kind: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "sigmoid"
    receptive_field: int = 0
    conv: list[dict] = field(default_factory=list)  # ConvLayer records once validated

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"model.kind = {self.kind!r}: expected one of {', '.join(MODEL_KINDS)}")
        if not self.hidden and self.kind == "mlp":
            raise ConfigError("model.hidden is empty: expected at least one hidden layer width, e.g. [64, 64]")
        if any(w < 1 for w in self.hidden):
            raise ConfigError(f"model.hidden = {self.hidden!r}: every layer needs a width >= 1")
        if self.activation != "sigmoid":
            raise ConfigError(f"model.activation = {self.activation!r}: expected sigmoid")
        if self.receptive_field < 0:
            raise ConfigError(f"model.receptive_field = {self.receptive_field!r}: expected 0 (off) or a patch side >= 1")
        if self.kind == "mlp" and self.conv:
            raise ConfigError("model.conv is only for model.kind = 'cnn' (the MLP has no convolutional layers)")
        if self.kind == "cnn":
            if not self.conv:
                raise ConfigError("model.conv is empty: model.kind = 'cnn' needs at least one layer, "
                                  "e.g. conv = [{channels = 32, kernel = 5, padding = 2, pool = 2}]")
            if self.receptive_field:
                raise ConfigError("model.receptive_field is only for model.kind = 'mlp' (a CNN's receptive fields are "
                                  "its kernels)")
            if not isinstance(self.conv, list):
                raise ConfigError(f"model.conv = {self.conv!r}: expected a list of tables")
            object.__setattr__(self, "conv", [ConvLayer.from_table(i, t) for i, t in enumerate(self.conv)])

    def table(self) -> dict:
        """This section as a config file holds it; an MLP omits ``kind`` and ``conv`` (at their
        defaults), so MLP configs read and write exactly as before CNNs existed."""
        d = dataclasses.asdict(self)
        if self.kind == "mlp":
            d.pop("kind")
            d.pop("conv")
        return d
