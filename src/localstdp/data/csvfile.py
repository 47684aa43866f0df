"""A CSV file with one label column and numeric feature columns.

Every message names the file and, for a cell, its 1-based line in the file (blank lines count).
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np

from ..errors import ArgumentTypeError, DataError

log = logging.getLogger(__name__)

# A label column holds classes: more distinct values than this share of the rows (and than
# MAX_IMPLICIT_CLASSES when the column was not named) is a feature or a measurement, not a label.
MAX_CLASS_SHARE = 0.5
MAX_IMPLICIT_CLASSES = 100
_warned: set[str] = set()


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """The non-blank rows of ``path`` with the 1-based line each starts on."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            out, line = [], 1
            for r in reader:
                if r and any(c.strip() for c in r):
                    out.append((line, r))
                line = reader.line_num + 1
            return out
    except FileNotFoundError:
        raise DataError(f"data.path: CSV file not found: {path.absolute()}") from None
    except IsADirectoryError:
        raise DataError(f"data.path: {path.absolute()} is a directory, expected a CSV file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from None


def _label_column(path: Path, label, header, width: int) -> int:
    if isinstance(label, str):
        if header is None or label not in header:
            raise DataError(f"{path}: data.label = {label!r}: no column of that name (header: {header})")
        return header.index(label)
    if isinstance(label, int):
        if not -width <= label < width:
            raise DataError(f"{path}: data.label = {label}: out of range for {width} columns")
        return label % width
    return width - 1


def _check_label(path: Path, ys: list[str], col: int, header, named: bool) -> None:
    """Refuse a column that cannot be a class label (fractional numbers, or nearly one value per row)."""
    name = repr(header[col]) if header else str(col)
    distinct = set(ys)
    hint = "name the label column with data.label" if not named else "a label column holds classes"
    where = f"data.label = {name}" if named else f"data.label (not set, so the last column, {name})"
    if all(_is_number(v) for v in ys):
        values = [float(v) for v in ys]
        if any(not math.isfinite(v) for v in values):
            raise DataError(f"{path}: {where}: holds a non-finite value; {hint}")
        if any(v != round(v) for v in values):
            raise DataError(f"{path}: {where}: column {name} holds {len(set(values))} distinct float values; {hint}")
    limit = MAX_CLASS_SHARE * len(ys) if named else min(MAX_CLASS_SHARE * len(ys), MAX_IMPLICIT_CLASSES)
    if len(distinct) > max(limit, 2):
        raise DataError(f"{path}: {where}: column {name} holds {len(distinct)} distinct values in {len(ys)} rows, "
                        f"too many for class labels; {hint}")


def read_csv(path: str | Path, label: str | int | None = None):
    """(x, y) from ``path``. The first row is a header when any of its cells is not a number.

    ``label`` names the label column (header name or 0-based index); default: the last column, with
    a warning naming it. Labels may be integers or strings (a column of fractional numbers, or of
    nearly as many values as rows, is refused); every other cell must parse as a finite float.
    """
    from .. import checks

    checks.path("path", path)
    if label is not None and (isinstance(label, bool) or not isinstance(label, (str, int))):
        checks.fail("label", "a column name (str), a 0-based column index (int) or None", checks.got(label),
                    ArgumentTypeError)
    path = Path(path)
    rows = _rows(path)
    if not rows:
        raise DataError(f"{path}: empty CSV file")
    header = None
    first_line, first = rows[0]
    if not all(_is_number(c) for c in first):
        header, rows = [c.strip() for c in first], rows[1:]
    if not rows:
        raise DataError(f"{path}: no data rows")
    width = len(header) if header else len(rows[0][1])
    if width < 2:
        raise DataError(f"{path}: line {first_line}: need a label column and at least one feature column")
    col = _label_column(path, label, header, width)
    names = header or [str(i) for i in range(width)]
    xs, ys = [], []
    for n, row in rows:
        if len(row) != width:
            raise DataError(f"{path}: line {n}: {len(row)} columns, expected {width} (as on line {first_line})")
        values = []
        for j, c in enumerate(row):
            if j == col:
                continue
            try:
                v = float(c)
            except ValueError:
                raise DataError(f"{path}: line {n}: non-numeric feature value {c!r} (column {names[j]!r})") from None
            if not math.isfinite(v):
                raise DataError(f"{path}: line {n}: non-finite feature value {c.strip()!r} (column {names[j]!r})")
            values.append(v)
        xs.append(values)
        ys.append(row[col].strip())
    _check_label(path, ys, col, header, named=label is not None)
    if label is None and str(path) not in _warned:
        _warned.add(str(path))
        log.warning("localstdp: warning: %s: data.label not set; using the last column, %s, as the label "
                    "(%d classes)", path, repr(header[col]) if header else f"column {col}", len(set(ys)))
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys)
    if all(_is_number(v) for v in ys):
        y = np.asarray([float(v) for v in ys]).astype(np.int64)  # integer-like, checked above
    return x, y
