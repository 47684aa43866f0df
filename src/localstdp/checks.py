"""The argument checks of the public entry points, in one place (issue 34).

Every check raises :class:`~localstdp.errors.ArgumentError` (a ``ValueError``) or
:class:`~localstdp.errors.ArgumentTypeError` (also a ``TypeError``) whose message reads
``"<argument>: expected <what>, got <what came>"``, so a wrong call fails at the library's edge with
the argument named instead of deep inside torch ("index out of range in self").

Cost. The per-step check of a training batch (:func:`batch`) reads attributes, then reduces the
labels to their min and max and the inputs to their sum (NaN or inf in x makes the sum non-finite;
only then is x scanned, for the position, which also clears a sum that merely overflowed): two
reductions and, on a GPU, one host sync per step; about 6 us on a 64 x 784 CPU batch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

from .errors import ArgumentError, ArgumentTypeError

INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
SEED_LIMIT = 2**32  # seeds are numpy / torch generator seeds: integers in [0, 2**32)


def got(value: Any) -> str:
    """A short description of ``value`` for an error message."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}, dtype {str(value.dtype).removeprefix('torch.')} on {value.device}"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}, dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


def fail(name: str, expected: str, came: str, kind: type[ArgumentError] = ArgumentError):
    """Raise ``kind("<name>: expected <expected>, got <came>")``."""
    raise kind(f"{name}: expected {expected}, got {came}")


# ---------------------------------------------------------------------------------------------
# scalars


def integer(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int (a Python or numpy integer, not a bool or a float) in [lo, hi]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        fail(name, "an integer" + _range(lo, hi), got(value), ArgumentTypeError)
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        fail(name, "an integer" + _range(lo, hi), repr(v))
    return v


def seed(name: str, value: Any) -> int:
    return integer(name, value, 0, SEED_LIMIT - 1)


def number(name: str, value: Any, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> float:
    """``value`` as a finite float (a Python or numpy real, not a bool) in the interval given."""
    what = "a finite number" + _range(lo, hi, lo_open, hi_open)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        fail(name, what, got(value), ArgumentTypeError)
    v = float(value)
    if (not math.isfinite(v) or (lo is not None and (v < lo or (lo_open and v == lo)))
            or (hi is not None and (v > hi or (hi_open and v == hi)))):
        fail(name, what, repr(value))
    return v


def _range(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi:g}"
    return ""


def choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        fail(name, f"one of {', '.join(map(repr, choices))}", got(value))
    return value


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        fail(name, "True or False", got(value), ArgumentTypeError)
    return bool(value)


def instance(name: str, value: Any, types: type | tuple[type, ...], expected: str, hint: str = "") -> Any:
    if not isinstance(value, types):
        fail(name, expected, got(value) + hint, ArgumentTypeError)
    return value


def optional_callable(name: str, value: Any) -> Callable | None:
    if value is not None and not callable(value):
        fail(name, "a callable or None", got(value), ArgumentTypeError)
    return value


def path(name: str, value: Any) -> Any:
    """A file system path: a str or an os.PathLike (not empty)."""
    import os

    if not isinstance(value, (str, os.PathLike)) or (isinstance(value, str) and not value):
        fail(name, "a path (str or pathlib.Path)", got(value), ArgumentTypeError)
    return value


# ---------------------------------------------------------------------------------------------
# torch batches (the learners' step / updates)


def tensor(name: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        hint = " (torch.as_tensor(...) converts it)" if isinstance(value, (np.ndarray, list, tuple)) else ""
        fail(name, "a torch.Tensor", got(value) + hint, ArgumentTypeError)
    return value


def model_input(name: str, x: Any, dtype: torch.dtype | None, device: torch.device | None) -> torch.Tensor:
    """``x`` is a tensor with a batch dimension, of the model's floating dtype and on its device."""
    tensor(name, x)
    if x.ndim < 1:
        fail(name, "a batch (batch, ...) with a leading batch dimension", got(x))
    if not x.dtype.is_floating_point or (dtype is not None and x.dtype != dtype):
        want = str(dtype).removeprefix("torch.") + " (the model's dtype)" if dtype is not None else "a floating dtype"
        fail(name, f"a tensor of dtype {want}", f"dtype {str(x.dtype).removeprefix('torch.')}", ArgumentTypeError)
    if (device is not None and x.device != device) or x.device.type == "meta":
        fail(name, f"a tensor on {device or 'a real device'} (the model's first layer's device)", f"one on {x.device}")
    return x


def batch(x: Any, y: Any, n_classes: int, dtype: torch.dtype | None = None,
          device: torch.device | None = None) -> torch.Tensor:
    """Check a training batch; returns ``y`` as int64 on ``x``'s device.

    x: a non-empty batch (batch, ...) of finite values, dtype ``dtype`` on ``device``; y: shape
    (batch,), an integer dtype, every label in [0, n_classes)."""
    model_input("x", x, dtype, device)
    tensor("y", y)
    if len(x) == 0:
        fail("x", "a batch of at least one example", got(x))
    if y.ndim != 1 or len(y) != len(x):
        fail("y", f"shape ({len(x)},): one label per example of x", f"shape {tuple(y.shape)}")
    if y.dtype not in INTEGER_DTYPES:
        fail("y", "integer class labels (an int64 tensor)", f"dtype {str(y.dtype).removeprefix('torch.')}",
             ArgumentTypeError)
    if y.device.type == "meta":
        fail("y", "labels with values (a tensor on a real device)", "one on the meta device")
    y = y.to(device=x.device, dtype=torch.int64)
    lo, hi = torch.aminmax(y)
    if x.device.type == "cpu":
        lo, hi, total = int(lo), int(hi), float(x.sum())
    else:  # one host sync for the three numbers
        lo, hi, total = torch.stack([lo.double(), hi.double(), x.sum().double()]).tolist()
    if lo < 0 or hi >= n_classes:
        labels(y, n_classes)  # names the first bad one
    if not math.isfinite(total):
        finite("x", x)
    return y


def labels(y: torch.Tensor, n_classes: int, name: str = "y") -> None:
    bad = ((y < 0) | (y >= n_classes)).nonzero()
    if len(bad):
        i = int(bad[0, 0])
        fail(name, f"integer class labels in [0, {n_classes})", f"{int(y[i])} at index {i}")


def finite(name: str, x: torch.Tensor) -> None:
    bad = (~torch.isfinite(x)).nonzero()
    if len(bad):
        where = tuple(int(i) for i in bad[0])
        fail(name, "finite values (no NaN or inf)", f"{float(x[where])} at index {where if len(where) > 1 else where[0]}")


def model_device_dtype(layers) -> tuple[torch.dtype | None, torch.device | None]:
    """The (dtype, device) an input must have: the first layer's; the device is None (not checked)
    when the layers lie on several devices and ``layers`` may not be in call order."""
    w = layers[0].weight
    return w.dtype, w.device


# ---------------------------------------------------------------------------------------------
# numpy arrays (the attack suite and the bounds take (n, features) arrays in [0, 1])


def array(name: str, value: Any) -> np.ndarray:
    """``value`` as a numpy array (a CPU tensor or any array-like)."""
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            fail(name, "an array or a CPU tensor", got(value) + " (call .cpu() first)")
        value = value.detach().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        fail(name, "an array of numbers", f"{got(value)} ({exc})", ArgumentTypeError)


def unit_inputs(name: str, x: Any) -> np.ndarray:
    """``x``: an array of at least 2 dimensions (n, ...) of finite real numbers in [0, 1]."""
    x = array(name, x)
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        fail(name, "real numbers in [0, 1]", f"dtype {x.dtype}", ArgumentTypeError)
    if x.ndim < 2:
        fail(name, "shape (n, features) or (n, *input_shape)", f"shape {x.shape}")
    if x.size:
        if not np.isfinite(x).all():
            where = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
            fail(name, "finite inputs in [0, 1] (no NaN or inf)", f"{x[where]} at index {where}")
        lo, hi = x.min(), x.max()
        if lo < 0 or hi > 1:
            where = tuple(int(i) for i in np.argwhere((x < 0) | (x > 1))[0])
            fail(name, "inputs in [0, 1] (inputs must lie in [0, 1])", f"{x[where]} at index {where}")
    return x


def class_labels(name: str, y: Any, n: int, n_classes: int) -> np.ndarray:
    """``y``: shape (n,), an integer dtype, every label in [0, n_classes); returned as int64."""
    y = array(name, y)
    if y.shape != (n,):
        fail(name, f"shape ({n},): one label per example", f"shape {y.shape}")
    if y.size and (y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer)):
        fail(name, f"integer class labels in [0, {n_classes})", f"dtype {y.dtype}", ArgumentTypeError)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        i = int(np.flatnonzero((y < 0) | (y >= n_classes))[0])
        fail(name, f"integer class labels in [0, {n_classes})", f"{int(y[i])} at index {i}")
    return y.astype(np.int64)


def shape(name: str, value: Any) -> tuple[int, ...]:
    """A shape: a non-empty tuple or list of positive integers."""
    if not isinstance(value, (tuple, list)) or not value:
        fail(name, "a non-empty tuple of positive integers, e.g. (4,) or (1, 28, 28)", got(value), ArgumentTypeError)
    return tuple(integer(f"{name}[{i}]", v, lo=1) for i, v in enumerate(value))


def mapping(name: str, value: Any, what: str = "a dict") -> Mapping:
    if not isinstance(value, Mapping):
        fail(name, what, got(value), ArgumentTypeError)
    return value


def state_tensor(state: Mapping, key: str, shape: tuple[int, ...] | None = None, *, required: bool = True,
                 floating: bool = True, what: str = "") -> torch.Tensor | None:
    """Entry ``key`` of a learner state: a tensor (of ``shape``, floating and finite when ``floating``);
    None when absent and not ``required``."""
    name = f"state[{key!r}]"
    v = state.get(key)
    want = "a tensor" + (f" of shape {tuple(shape)}" if shape is not None else "") + what
    if v is None:
        if required:
            fail(name, want, "nothing (the entry is missing)")
        return None
    tensor(name, v)
    if shape is not None and tuple(v.shape) != tuple(shape):
        fail(name, want, f"shape {tuple(v.shape)}")
    if floating:
        if not v.dtype.is_floating_point:
            fail(name, want + " of a floating dtype", f"dtype {str(v.dtype).removeprefix('torch.')}", ArgumentTypeError)
        if not bool(torch.isfinite(v).all()):
            fail(name, want + " of finite values", "NaN or inf in it")
    return v


def package_batch(model: torch.nn.Module, x: Any, y: Any, n_classes: int) -> torch.Tensor:
    """A batch for a learner of :data:`localstdp.rules.LEARNERS` on the package's MLP or CNN: as
    :func:`batch`, with the model's first parameter's dtype and device, and ``x[0]`` holding
    ``model.widths[0]`` values (what their forward flattens or reshapes to). Returns ``y`` as int64."""
    p = next(model.parameters(), None)
    y = batch(x, y, n_classes, None if p is None else p.dtype, None if p is None else p.device)
    widths = getattr(model, "widths", None)
    if widths and x[0].numel() != widths[0]:
        fail("x", f"{widths[0]} input features per example (the model's widths[0])", f"shape {tuple(x.shape)}")
    return y
