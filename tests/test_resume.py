"""A run killed at any moment and resumed, even several times, ends bit-identical to an
uninterrupted one (issue 6); SIGINT / SIGTERM finish the batch, checkpoint, and exit 130 / 143.
One chain of five processes (each start costs seconds, so they are few) covers all of it.

Real ``python -m localstdp train`` processes are killed: with SIGKILL by this test at a moment
taken from the run's own progress, and at the two worst moments of a checkpoint write (half the
bytes written; everything written and fsync'ed but not yet renamed), which a small wrapper forces by
sending itself SIGKILL from inside the library's own atomic writer. Each process has one thread
(OMP_NUM_THREADS=1), as does the in-process reference run, so the comparison can be exact.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from localstdp.checkpoint import load_checkpoint
from localstdp.config import load_config
from localstdp.errors import CheckpointError
from localstdp.train import train

EPOCHS = 16
# digits (8x8, 10 classes), batches of 4: ~300 steps an epoch, long enough to be killed inside
CONFIG = f"""
[data]
name = "digits"
split_seed = 1
[model]
hidden = [24]
[train]
epochs = {EPOCHS}
batch_size = 4
lr = 0.5
seed = 3
"""

# Runs the CLI, but SIGKILLs itself (no clean-up of any kind) at the DIE_AT-th replace of
# checkpoint.safetensors in this process: with DIE_HALF=1 after cutting the temporary file to half
# its bytes (killed mid-write), else with the complete, fsync'ed temporary file not yet renamed.
DIE_IN_WRITER = """
import os, signal, sys
at, half, count = int(os.environ["DIE_AT"]), os.environ.get("DIE_HALF") == "1", [0]
real_replace = os.replace
def replace(src, dst, *a, **kw):
    if str(dst).endswith("checkpoint.safetensors"):
        count[0] += 1
        if count[0] == at:
            if half:
                os.truncate(src, os.path.getsize(src) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *a, **kw)
os.replace = replace
from localstdp.cli import main
sys.exit(main(sys.argv[1:]))
"""


def env(**extra: str) -> dict[str, str]:
    return os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} | extra


def cli_args(config: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(config), "--out", str(out), "--no-progress", *extra]


def start(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "localstdp", *cli_args(config, out, *extra)], env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def die_in_writer(config: Path, out: Path, at: int, half: bool, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DIE_IN_WRITER, *cli_args(config, out, *extra)],
                          env=env(DIE_AT=str(at), DIE_HALF="1" if half else "0"),
                          capture_output=True, text=True, timeout=300, check=False)


def wait_for_checkpoints(proc: subprocess.Popen, out: Path, n: int, timeout: float = 240.0) -> None:
    """Poll until ``n`` new versions of the checkpoint were renamed into place (each a new inode)."""
    path, seen, last = out / "checkpoint.safetensors", 0, None
    if path.exists():
        last = path.stat().st_ino
    deadline = time.monotonic() + timeout
    while seen < n:
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint progress"
        try:
            ino = path.stat().st_ino
        except FileNotFoundError:
            ino = None
        if ino is not None and ino != last:
            seen, last = seen + 1, ino
        time.sleep(0.001)


def epoch_step(out: Path) -> tuple[int, int]:
    _, meta = load_checkpoint(out / "checkpoint.safetensors")
    return meta["epoch"], meta["step"]


def temp_files(out: Path) -> list[Path]:
    return sorted(out.glob(".checkpoint.safetensors.*.tmp"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The config file and the uninterrupted reference run (in-process, one thread)."""
    tmp = tmp_path_factory.mktemp("resume")
    config = tmp / "digits.toml"
    config.write_text(CONFIG)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = train(load_config(config), "local", tmp / "reference")
    finally:
        torch.set_num_threads(threads)
    return config, ref


def assert_same_as_reference(out: Path, ref: dict) -> None:
    tensors, _ = load_checkpoint(out / "model.safetensors")
    expected = ref["model"].state_dict()
    assert sorted(tensors) == sorted(f"model.{k}" for k in expected)
    for k, v in expected.items():
        assert torch.equal(tensors[f"model.{k}"], v), k
    hist = json.loads((out / "metrics.json").read_text())["history"]
    keep = ("epoch", "loss", "train_accuracy", "test_accuracy")
    assert [{k: h[k] for k in keep} for h in hist] == [{k: h[k] for k in keep} for h in ref["history"]]


@pytest.mark.slow
def test_killed_several_times_then_resumed_equals_uninterrupted(setup, tmp_path):
    config, ref = setup
    out = tmp_path / "run"
    rng = random.Random(6)

    # 1. killed while writing its 2nd checkpoint: a half-written temporary file is left behind
    r = die_in_writer(config, out, at=2, half=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert epoch_step(out) == (1, 0)  # the 1st checkpoint is intact and readable
    (half,) = temp_files(out)
    with pytest.raises(CheckpointError):  # the half-written file is garbage ...
        load_checkpoint(half)
    assert not (out / "metrics.json").exists()

    # 2. resumed, then killed after fsync but before the rename of its 2nd checkpoint (epoch 3)
    r = die_in_writer(config, out, 2, False, "--resume")
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert epoch_step(out) == (2, 0)
    (complete,) = temp_files(out)  # ... and the resume removed it; a new, complete one is left
    assert complete != half and load_checkpoint(complete)[1]["epoch"] == 3
    assert not (out / "metrics.json").exists()

    # 3. resumed, then SIGKILLed at a moment between two checkpoints
    proc = start(config, out, "--resume")
    wait_for_checkpoints(proc, out, 2)
    time.sleep(rng.uniform(0.0, 0.05))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    epoch, step = epoch_step(out)
    assert 4 <= epoch < EPOCHS and step == 0
    assert not (out / "metrics.json").exists()

    # 4. resumed, then SIGINT (Ctrl-C): the batch is finished, a checkpoint written, exit 130
    proc = start(config, out, "--resume")
    wait_for_checkpoints(proc, out, 2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted by signal 2" in err and "--resume" in err and "Traceback" not in err
    epoch2, step2 = epoch_step(out)
    assert (epoch2, step2) >= (epoch + 2, 0) and epoch2 < EPOCHS
    assert not (out / "metrics.json").exists()

    # 5. resumed, then SIGTERM: the same, exit 143
    proc = start(config, out, "--resume")
    wait_for_checkpoints(proc, out, 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted by signal 15" in err and "Traceback" not in err
    epoch3, step3 = epoch_step(out)
    assert (epoch3, step3) >= (epoch2 + 1, 0) and epoch3 < EPOCHS
    assert not (out / "metrics.json").exists()

    # 6. resumed to the end (in-process, one thread): the same weights, bit for bit, and history
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config(config), "local", out, resume=True)
    finally:
        torch.set_num_threads(threads)
    assert temp_files(out) == []
    assert_same_as_reference(out, ref)
