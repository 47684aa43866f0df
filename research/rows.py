"""What every research script does with a result row: print it as one JSON line and, with ``--json
PATH``, append the same line to PATH; and the task name a config path stands for."""

from __future__ import annotations

import json
from pathlib import Path


def emit(row: dict, path: str | None) -> None:
    """Print ``row`` as a JSON line; append it to ``path`` too when given."""
    line = json.dumps(row)
    print(line, flush=True)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def task_of(config: str) -> str:
    """The task name a row records: the config file's stem (``fashion-2v6`` for .../fashion-2v6.toml)."""
    return Path(config).stem
