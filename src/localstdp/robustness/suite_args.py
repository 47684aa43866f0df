"""The attack suite's argument checks (:func:`localstdp.robustness.suite.attack_suite`): one line naming the
argument at fault, never a traceback from deep inside an attack."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import nn

from .. import checks
from ..errors import ArgumentTypeError


def check_suite_args(model, x, y, input_shape, n_classes, settings, seed, progress, worst_only):
    """attack_suite's arguments (ArgumentError / ArgumentTypeError naming the argument); returns x as float32
    (n, *input_shape), y as int64 and input_shape as a tuple. Puts ``model`` in eval mode and runs it on one
    example: its output must be (1, n_classes) logits."""
    checks.instance("model", model, nn.Module, "a torch.nn.Module")
    input_shape = checks.shape("input_shape", input_shape)
    if len(input_shape) not in (1, 3):
        checks.fail("input_shape", "(features,) or an image shape (channels, height, width)", repr(input_shape))
    n_classes = checks.integer("n_classes", n_classes, lo=2)
    # settings: checked by attack_suite (an AttackSettings, defined in suite.py, which imports this module)
    checks.seed("seed", seed)
    checks.optional_callable("progress", progress)
    checks.flag("worst_only", worst_only)
    x = checks.unit_inputs("x", x)
    if len(x) == 0:
        checks.fail("x", "at least one example", f"shape {x.shape}")
    size = math.prod(input_shape)
    if math.prod(x.shape[1:]) != size:
        checks.fail("x", f"{size} values per example (input_shape {input_shape})", f"shape {x.shape}")
    y = checks.class_labels("y", y, len(x), n_classes)
    for name, p in itertools.chain(model.named_parameters(), model.named_buffers()):
        if p.device.type != "cpu":
            checks.fail("model", "a model on the CPU (the attacks run there: model.cpu())", f"{name} on {p.device}")
        if p.is_floating_point() and p.dtype != torch.float32:
            checks.fail("model", "float32 parameters (the attacks feed float32 inputs: model.float())",
                        f"{name} of dtype {str(p.dtype).removeprefix('torch.')}", ArgumentTypeError)
    x = x.astype(np.float32, copy=False).reshape((len(x), *input_shape))
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(x[:1]))
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        checks.fail("x", f"inputs of shape input_shape = {input_shape} that the model's forward accepts",
                    f"its forward failed on one: {msg}")
    if not isinstance(out, torch.Tensor) or out.shape != (1, n_classes):
        checks.fail("n_classes", "the number of logits the model returns per example",
                    f"{n_classes}, the model returns {checks.got(out)} for one example")
    return x, y, input_shape
