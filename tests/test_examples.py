"""The scripts in examples/ run as a user would run them, on a small slice, and learn."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_own_model_example_learns_on_a_slice():
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLES / "own_model.py"), "--limit", "600", "--epochs", "10"],
                          capture_output=True, text=True, timeout=300, env=env, check=True)
    accuracy = float(re.search(r"final test accuracy ([0-9.]+)", done.stdout).group(1))
    assert accuracy > 0.4, done.stdout  # ten classes: chance is 0.1 (0.653 when written)
    assert len((EXAMPLES / "own_model.py").read_text().splitlines()) <= 60
