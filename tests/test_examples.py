"""The scripts in examples/ run as a user would run them, on a small slice, and learn."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_own_model_example_learns_on_a_slice():
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLES / "own_model.py"), "--limit", "600", "--epochs", "10"],
                          capture_output=True, text=True, timeout=300, env=env, check=True)
    accuracy = float(re.search(r"final test accuracy ([0-9.]+)", done.stdout).group(1))
    assert accuracy > 0.4, done.stdout  # ten classes: chance is 0.1 (0.653 when written)
    assert len((EXAMPLES / "own_model.py").read_text().splitlines()) <= 60


def _run(script: str, *args: str) -> str:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=300,
                          env=env, check=True)
    assert len((EXAMPLES / script).read_text().splitlines()) <= 60
    return done.stdout


@pytest.mark.slow  # about 6 s idle: a script in its own process (make test-all)
def test_two_conv_layer_cnn_example_learns():
    out = _run("two_conv_cnn.py", "--epochs", "8")  # the whole set: a conv stack needs some hundred steps
    assert float(re.search(r"final test accuracy ([0-9.]+)", out).group(1)) > 0.4, out


@pytest.mark.slow  # about 6 s idle: a script in its own process (make test-all)
def test_peer_rule_on_a_user_module_example_learns_on_a_slice():
    out = _run("peer_rule.py", "--limit", "600", "--epochs", "5")
    assert float(re.search(r"final test accuracy ([0-9.]+)", out).group(1)) > 0.4, out


@pytest.mark.slow  # about 4.5 s idle: a script in its own process (make test-all)
def test_relu_example_shows_the_refusal_then_trains_with_activity_map():
    out = _run("relu_model.py", "--limit", "600", "--epochs", "5")
    assert re.search(r"without activity=: 0 \(Linear\) is followed by ReLU, not nn.Sigmoid.*activity='map'", out), out
    assert float(re.search(r"final test accuracy ([0-9.]+)", out).group(1)) > 0.4, out
