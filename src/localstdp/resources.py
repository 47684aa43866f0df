"""A cheap memory check before a model is allocated, and one line for an allocator failure.

:func:`check_memory` estimates what a config asks for (float32 weights and their training state,
plus the activity of the largest batch the loop forwards) from the data's shape and the config
alone, and refuses a run that cannot fit in the memory the system has available (Linux:
``MemAvailable`` of /proc/meminfo; elsewhere the check is skipped). :func:`resolve_device` picks the
device a run trains on (``train --device``).
"""

from __future__ import annotations

from pathlib import Path

from .errors import LocalSTDPError

FLOAT_BYTES = 4  # float32
EVAL_BATCH = 4096  # train._checked_accuracy forwards the splits in chunks of this many examples
WEIGHT_COPIES = 4  # the weights, their update (gradient), and an optimiser's two moments (Adam)
ACTIVITY_COPIES = 3  # per layer and example: pre-activation, activity, and its gradient or trace
GIB = 2**30


class ResourceError(LocalSTDPError):
    """A run that needs more memory than the machine has (exit status 1)."""

    exit_code = 1


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo in bytes; None where it cannot be read (not Linux)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def estimate_bytes(n_features: int, hidden: list[int], n_classes: int, batch_size: int, n_examples: int) -> tuple[int, int]:
    """(weights, activity) bytes a run of this shape allocates at most, roughly (float32)."""
    widths = [int(n_features), *map(int, hidden), int(n_classes)]
    params = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    rows = max(int(batch_size), min(EVAL_BATCH, int(n_examples)))
    return params * FLOAT_BYTES * WEIGHT_COPIES, rows * sum(widths) * FLOAT_BYTES * ACTIVITY_COPIES


def estimate_cnn_bytes(model_cfg, n_features: int, n_classes: int, batch_size: int,
                       n_examples: int) -> tuple[int, int]:
    """(weights, activity) bytes of a ``model.kind = "cnn"`` run, roughly (float32). The network is built
    on torch's meta device (no memory) and one meta example is forwarded to read every layer's output
    size. Activity is the larger of a training step (every layer's output, ACTIVITY_COPIES times, plus
    each conv layer's unfolded input patches, C_in k k x output positions, which the conv updates
    materialise) and an evaluation chunk of up to EVAL_BATCH examples (no gradients: two consecutive
    layers' outputs alive at a time)."""
    import torch
    from torch import nn

    from .model import CNN

    sizes, patches = [int(n_features)], [0]

    def hook(module, inputs, output):
        sizes.append(output[0].numel())
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            patches[0] += module.in_channels * k * output[0, 0].numel()

    with torch.device("meta"):
        model = CNN(int(n_features), model_cfg.conv, model_cfg.hidden, int(n_classes))
        handles = [m.register_forward_hook(hook) for m in model]
        model(torch.empty(1, int(n_features)))
    for h in handles:
        h.remove()
    params = sum(p.numel() for p in model.parameters())
    train = int(batch_size) * (sum(sizes) * ACTIVITY_COPIES + patches[0])
    evaluate = min(EVAL_BATCH, int(n_examples)) * max(a + b for a, b in zip(sizes[:-1], sizes[1:]))
    return params * FLOAT_BYTES * WEIGHT_COPIES, max(train, evaluate) * FLOAT_BYTES


def check_memory(cfg, n_features: int, n_classes: int, n_examples: int, available: int | None = None) -> None:
    """Raise :class:`ResourceError` (one line: the keys at fault, GiB asked for and available)
    when ``cfg`` cannot fit; ``available`` defaults to :func:`available_bytes` (None: no check).
    A CNN (``model.kind = "cnn"``) is measured by :func:`estimate_cnn_bytes`, its conv layers included."""
    if available is None:
        available = available_bytes()
    if available is None:
        return
    cnn = cfg.model.kind == "cnn"
    if cnn:
        weights, activity = estimate_cnn_bytes(cfg.model, n_features, n_classes, cfg.train.batch_size, n_examples)
    else:
        weights, activity = estimate_bytes(n_features, cfg.model.hidden, n_classes, cfg.train.batch_size, n_examples)
    if weights + activity <= available:
        return
    keys = []
    if weights > available / 2 or weights >= activity:
        keys.append("model.conv and model.hidden" if cnn else f"model.hidden = {list(cfg.model.hidden)}")
    if activity > available / 2 or activity > weights:
        keys.append(("model.conv and " if cnn and not keys else "") + f"train.batch_size = {cfg.train.batch_size}")
    raise ResourceError(
        f"not enough memory: {' and '.join(keys)} ask for about {(weights + activity) / GIB:.1f} GiB "
        f"({weights / GIB:.1f} GiB of weights and training state, {activity / GIB:.1f} GiB of batch activity, "
        f"{n_features} inputs) but {available / GIB:.1f} GiB is available; make them smaller")


ALLOCATOR_MARKERS = ("can't allocate memory", "not enough memory", "out of memory", "DefaultCPUAllocator")


def is_allocator_error(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's (or numpy's) failure to allocate memory."""
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in ALLOCATOR_MARKERS)


def allocator_message(exc: BaseException) -> str:
    """One line for an allocation failure: what torch said (its first line), and what to change."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "] " in text and text.startswith("["):  # "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPU..."
        text = text.split("] ", 1)[1]
    return (f"out of memory: {text[:200]}; reduce model.hidden or train.batch_size (or free memory) "
            "and run again")


DEVICES = ("cpu", "cuda", "auto")


def resolve_device(device):
    """The torch.device a run trains on: "cpu", "cuda" (refused, as one line, without a CUDA GPU),
    "auto" (cuda when available, else cpu) or a torch.device."""
    import torch

    if isinstance(device, str) and device not in DEVICES:
        raise LocalSTDPError(f"device {device!r}: expected one of {', '.join(DEVICES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LocalSTDPError("device 'cuda': no CUDA GPU is available to this torch build (use --device cpu or auto)")
    return device


def dataset_to(ds, device):
    """``ds`` with every split on ``device`` (the same object on the CPU)."""
    import dataclasses

    if device.type == "cpu":
        return ds
    splits = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    return dataclasses.replace(ds, **{k: getattr(ds, k).to(device) for k in splits})
