"""MNIST-format IDX files (full MNIST, Fashion-MNIST), raw or gzip-compressed.

A directory holds train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
t10k-labels-idx1-ubyte, each optionally with a .gz suffix. Every file's magic number, dimensions
and length are checked; a file that is missing, truncated or of the wrong kind raises DataError.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from ..errors import DataError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file into an array (magic: two zero bytes, a type code, the rank)."""
    from .. import checks

    path = Path(checks.path("path", path))
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read or decompress ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES or not 1 <= raw[3] <= 4:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype, rank = np.dtype(_DTYPES[raw[2]]), raw[3]
    if len(raw) < 4 + 4 * rank:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{rank}I", raw[4 : 4 + 4 * rank])
    expected = 4 + 4 * rank + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(f"{path}: {what} ({len(raw)} bytes, header implies {expected})")
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * rank).reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise DataError(f"{directory}: missing IDX file {stem}[.gz]")


def load_idx_dir(directory: str | Path):
    """(x_train, y_train, x_test, y_test) from a directory of the four IDX files; x flattened."""
    from .. import checks

    directory = Path(checks.path("directory", directory))
    if not directory.is_dir():
        raise DataError(f"IDX directory not found: {directory}")
    arrays = {key: read_idx(_find(directory, stem)) for key, stem in FILES.items()}
    out = []
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or y.ndim != 1:
            raise DataError(f"{directory}: {split} images must be 3-D and labels 1-D, got {x.shape} and {y.shape}")
        if len(x) != len(y):
            raise DataError(f"{directory}: {split} has {len(x)} images but {len(y)} labels")
        out += [x.reshape(len(x), -1).astype(np.float64), y.astype(np.int64)]
    if out[0].shape[1] != out[2].shape[1]:
        raise DataError(f"{directory}: train and test images differ in size")
    return tuple(out)
