"""A CSV file with one label column and numeric feature columns."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import DataError


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_csv(path: str | Path, label: str | int | None = None):
    """(x, y) from ``path``. The first row is a header when any of its cells is not a number.

    ``label`` names the label column (header name or 0-based index); default: the last column.
    Labels may be numbers or strings; every other cell must parse as a float.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except FileNotFoundError:
        raise DataError(f"CSV file not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path}: empty CSV file")
    header = None
    if not all(_is_number(c) for c in rows[0]):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise DataError(f"{path}: no data rows")
    width = len(rows[0])
    if width < 2:
        raise DataError(f"{path}: need a label column and at least one feature column")
    if isinstance(label, str):
        if header is None or label not in header:
            raise DataError(f"{path}: no column named {label!r} (header: {header})")
        col = header.index(label)
    elif isinstance(label, int):
        if not -width <= label < width:
            raise DataError(f"{path}: label column {label} out of range for {width} columns")
        col = label % width
    else:
        col = width - 1
    xs, ys = [], []
    for n, row in enumerate(rows, start=2 if header else 1):
        if len(row) != width:
            raise DataError(f"{path}: line {n} has {len(row)} columns, expected {width}")
        feats = row[:col] + row[col + 1 :]
        try:
            xs.append([float(c) for c in feats])
        except ValueError:
            bad = next(c for c in feats if not _is_number(c))
            raise DataError(f"{path}: line {n}: non-numeric feature value {bad!r}") from None
        ys.append(row[col].strip())
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys)
    if all(_is_number(v) for v in ys):
        yf = y.astype(np.float64)
        if np.all(np.isfinite(yf)) and np.all(yf == np.round(yf)):
            y = yf.astype(np.int64)
    return x, y
