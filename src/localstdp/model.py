"""The networks both training methods share: the multilayer perceptron and a small CNN.

z^l = W^l a^(l-1) + b^l,  a^l = sigmoid(z^l),  a^0 = x in [0, 1]. The prediction is argmax a^L
(the earliest-firing output neuron), which equals argmax z^L; attacks differentiate the logits
z^L through this ordinary forward with torch.autograd. :class:`CNN` (``model.kind = "cnn"``) takes
the same flat features, reshaped to the square one-channel image, and returns the same logits.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {"sigmoid": torch.sigmoid}


class MLP(nn.Module):
    """Fully connected network; layers live in an ``nn.ModuleList`` so checkpoints hold them all."""

    def __init__(self, n_in: int, hidden: list[int] | tuple[int, ...], n_out: int, activation: str = "sigmoid"):
        super().__init__()
        from . import checks

        checks.choice("activation", activation, sorted(ACTIVATIONS))
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, (list, tuple)):
            checks.fail("hidden", "a list or tuple of layer widths", checks.got(hidden), checks.ArgumentTypeError)
        widths = [checks.integer("n_in", n_in, 1), *(checks.integer(f"hidden[{i}]", h, 1) for i, h in
                                                     enumerate(hidden)), checks.integer("n_out", n_out, 1)]
        self.widths = widths
        self.activation = activation
        self.f = ACTIVATIONS[activation]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        # fixed first-layer connectivity (build_model's receptive_field): 0/1 (n_h1, n_in), or None
        self.register_buffer("in_mask", None, persistent=False)

    @torch.no_grad()
    def keep_connectivity_(self) -> None:
        """Reset the first layer's absent synapses (``in_mask`` == 0) to zero; no-op without a mask."""
        if self.in_mask is not None:
            self.layers[0].weight.mul_(self.in_mask)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """PyTorch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from ``generator``.

        An explicit generator makes the same seed give the same weights for every method.
        """
        for layer in self.layers:
            bound = 1.0 / math.sqrt(layer.in_features)
            layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2 * bound - bound)
            layer.bias.copy_(torch.rand(layer.bias.shape, generator=generator) * 2 * bound - bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits z^L (what attacks and cross-entropy use)."""
        a = x.flatten(1)
        for layer in self.layers[:-1]:
            a = self.f(layer(a))
        return self.layers[-1](a)

    def activities(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's activity [a^0 = x, a^1, ..., a^L] from one forward pass."""
        acts = [x.flatten(1)]
        for layer in self.layers:
            acts.append(self.f(layer(acts[-1])))
        return acts

    def layer_forward(self, l: int, a_prev: torch.Tensor) -> torch.Tensor:
        """Activity of layer ``l`` (0-based) from the previous layer's activity."""
        return self.f(self.layers[l](a_prev))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        return torch.cat([self(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def receptive_field_mask(n_out: int, n_in: int, side: int, generator: torch.Generator) -> torch.Tensor:
    """(n_out, n_in) 0/1 mask: neuron j sees one random ``side`` x ``side`` patch of a square input
    image (top-left corner uniform over the valid positions, rows first, then columns)."""
    width = math.isqrt(n_in)
    if width * width != n_in:
        raise ValueError(f"receptive fields need a square input image, got {n_in} features")
    if not 1 <= side <= width:
        raise ValueError(f"receptive field side {side} must be in [1, {width}]")
    r0 = torch.randint(0, width - side + 1, (n_out,), generator=generator)[:, None, None]
    c0 = torch.randint(0, width - side + 1, (n_out,), generator=generator)[:, None, None]
    rows, cols = torch.arange(width)[None, :, None], torch.arange(width)[None, None, :]
    inside = (rows >= r0) & (rows < r0 + side) & (cols >= c0) & (cols < c0 + side)
    return inside.reshape(n_out, n_in).to(torch.get_default_dtype())


def build_model(n_in: int, hidden, n_out: int, activation: str, seed: int, receptive_field: int = 0) -> MLP:
    """The MLP for ``seed``: the same weights whichever method will train it.

    ``receptive_field`` = S > 0: fixed sparse connectivity of the first hidden layer, part of the
    architecture both methods share. Each of its neurons sees one random S x S patch of the
    (square) input image; the mask (its own generator, seeded by ``seed``) zeroes the other initial
    weights and is kept as ``model.in_mask`` (a non-persistent buffer) for the learners, which keep
    the masked weights at zero. Because they stay zero, the trained weights alone define the
    function: an unmasked MLP loaded with them computes the same outputs.
    """
    model = MLP(n_in, hidden, n_out, activation)
    model.reset_parameters(torch.Generator().manual_seed(int(seed)))
    if receptive_field:
        gen = torch.Generator().manual_seed(int(seed) * 7 + 104729)
        model.in_mask = receptive_field_mask(model.widths[1], model.widths[0], int(receptive_field), gen)
        model.keep_connectivity_()
    return model


class ToImage(nn.Module):
    """(batch, side * side) or (batch, 1, side, side) -> (batch, 1, side, side): the CNN's first
    layer, so it takes the flat features of every data set and the images attacks pass (ART)."""

    def __init__(self, side: int):
        super().__init__()
        self.side = int(side)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), 1, self.side, self.side)

    def extra_repr(self) -> str:
        return f"side={self.side}"


class CNN(nn.Sequential):
    """Conv blocks, then dense layers: ToImage(side), [Conv2d, Sigmoid, MaxPool2d?] ...,
    Flatten, [Linear, Sigmoid] ..., Linear (the logits z^L). An ``nn.Sequential`` whose children are
    the layers in order, so anything that walks a Sequential (LocalLearner's hooks, a pipeline split)
    sees them; ``forward`` takes the flat features (batch, side * side) every data set provides (or the
    (batch, 1, side, side) images) and returns the logits z^L.

    ``widths`` is [n_in, *hidden, n_out] (the flat input, the dense hidden widths, the classes), as
    metrics.json and checkpoints record for the MLP; ``conv`` the :class:`ConvLayer` records.
    """

    def __init__(self, n_in: int, conv, hidden, n_out: int):
        side = math.isqrt(int(n_in))
        if side * side != n_in:
            raise ValueError(f"model.kind = 'cnn' needs a square one-channel image, got {n_in} features per example")
        layers: list[nn.Module] = [ToImage(side)]
        channels, size = 1, side
        for i, c in enumerate(conv):
            given, size = size, (size + 2 * c.padding - c.kernel) // c.stride + 1
            if size < 1:
                raise ValueError(f"model.conv[{i}].kernel = {c.kernel}: larger than its {given}x{given} input "
                                 f"with padding {c.padding}")
            layers += [nn.Conv2d(channels, c.channels, c.kernel, c.stride, c.padding), nn.Sigmoid()]
            if c.pool > 1:
                if size < c.pool:
                    raise ValueError(f"model.conv[{i}].pool = {c.pool}: larger than the {size}x{size} feature map")
                layers.append(nn.MaxPool2d(c.pool))
                size //= c.pool
            channels = c.channels
        layers.append(nn.Flatten())
        dense = [channels * size * size, *map(int, hidden), int(n_out)]
        for a, b in zip(dense[:-1], dense[1:]):
            layers += [nn.Linear(a, b), nn.Sigmoid()]
        super().__init__(*layers[:-1])  # no sigmoid after the output layer: forward returns the logits
        self.widths = [int(n_in), *map(int, hidden), int(n_out)]
        self.conv = list(conv)
        self.in_mask = None  # no fixed connectivity (the MLP's receptive_field)

    def keep_connectivity_(self) -> None:
        """Nothing to keep (the learners call it after every step; see MLP.keep_connectivity_)."""

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for every weight and bias, layer by layer in order, from
        ``generator`` (PyTorch's default bound for Linear and Conv2d; fan_in = in_channels k k for a conv)."""
        for layer in self:
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                bound = 1.0 / math.sqrt(layer.weight[0].numel())
                layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2 * bound - bound)
                layer.bias.copy_(torch.rand(layer.bias.shape, generator=generator) * 2 * bound - bound)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        return torch.cat([self(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def checked_receptive_field(model_cfg, n_in: int) -> int:
    """model.receptive_field, checked against the data (a square image of side >= S)."""
    from .errors import ConfigError

    S = model_cfg.receptive_field
    side = math.isqrt(int(n_in))
    if S and (side * side != n_in or S > side):
        raise ConfigError(f"model.receptive_field = {S}: needs a square input image of side >= {S}, got {n_in} features")
    return S


def build_network(model_cfg, n_in: int, n_out: int, seed: int) -> MLP | CNN:
    """The network ``model_cfg`` (a config's ModelConfig) describes, for ``seed``: the same weights
    whichever method trains it. What does not fit the data is a ConfigError naming the key."""
    from .errors import ConfigError

    if model_cfg.kind != "cnn":
        S = checked_receptive_field(model_cfg, n_in)
        return build_model(n_in, model_cfg.hidden, n_out, model_cfg.activation, seed, S)
    try:
        model = CNN(n_in, model_cfg.conv, model_cfg.hidden, n_out)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    model.reset_parameters(torch.Generator().manual_seed(int(seed)))
    return model
