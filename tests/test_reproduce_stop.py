"""Stopping a `reproduce --jobs 2` run from outside: SIGTERM stops it like Ctrl-C (exit 143, the
kept work counted), and after SIGKILL of the parent its worker processes exit by themselves
instead of computing on, orphaned, for hours."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import alive, children

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")




def _start(out: Path, pipes: bool = True) -> tuple[subprocess.Popen, list[int]]:
    cmd = [sys.executable, "-m", "localstdp", "reproduce", "--tasks", "iris-1v2", "--seeds", "2", "--epochs", "5000",
           "--frontier-seeds", "0", "--methods", "local", "backprop", "--jobs", "2", "--no-progress", "--out", str(out)]
    io = subprocess.PIPE if pipes else subprocess.DEVNULL  # a killed parent's pipes stay open in its children
    proc = subprocess.Popen(cmd, stdout=io, stderr=io, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the two workers (and the resource tracker) are running
        kids = [k for k in children(proc.pid) if "spawn_main" in Path(f"/proc/{k}/cmdline").read_text(errors="replace")]
        if len(kids) >= 2:
            time.sleep(3)  # let them import and start a step
            return proc, kids
        assert proc.poll() is None, "reproduce exited before its workers started"
        time.sleep(0.5)
    proc.kill()
    pytest.fail("the workers did not start")


def _gone(pids: list[int], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.5)
    for p in pids:  # do not leave them running
        if alive(p):
            os.kill(p, signal.SIGKILL)
    return False


@pytest.mark.slow  # about 15 s idle: two reproduce runs with two workers each, stopped
def test_sigterm_stops_like_ctrl_c_and_sigkill_leaves_no_worker_running(tmp_path):
    proc, workers = _start(tmp_path / "term")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "interrupted: 0 finished unit(s) and 0 finished model(s)" in err and "Traceback" not in err
    assert _gone(workers, 15)

    proc, workers = _start(tmp_path / "kill", pipes=False)
    proc.kill()
    proc.wait(timeout=60)
    assert _gone(workers, 15), "workers kept running after their parent was killed"
