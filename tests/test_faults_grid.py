"""Faults of `localstdp reproduce` not met before (issue 34, item 3): the disk filling up while a unit
or a part is written (an injected ENOSPC at the fsync of that file), SIGTERM to a `--jobs 2` run that
has finished some work, and unit files damaged between two runs. Each stops with one line (or exit
143 for SIGTERM), keeps every file finished before it and no temporary file, and ``--resume`` then
gives the numbers of an uninterrupted run; a damaged file is found on resume and run again, never
trusted."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from procs import alive, children

from localstdp import evaluation as E
from localstdp.cli import main
from localstdp.errors import OutputError
from localstdp.evaluation.units import PART, part_fingerprint, read_unit, unit_text
from localstdp.robustness import AttackSettings

TASK = "iris-1v2"
UNITS = Path("units") / TASK


def tiny_grid(epochs: int = 2) -> tuple[dict, E.GridSettings]:
    cfg = E.task_config(TASK)
    cfg = dataclasses.replace(cfg, frontier=dataclasses.replace(
        cfg.frontier, backprop_weight_decay=[0.0], local_lr=[], local_epochs=[], local_weight_decay=[], backprop_lr=[],
        local_targets=[]))
    attacks = AttackSettings(pgd_steps=2, pgd_restarts=1, square_queries=2, search_queries=3, autoattack=False)
    return {TASK: cfg}, E.GridSettings(seeds=2, frontier_seeds=0, epochs=epochs, n_attack=8, attacks=attacks,
                                       methods=("local", "backprop"), val_attack=0, diagnostics=False)


def numbers(res: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("wall_seconds", "history")} for r in res["rows"]]


@contextlib.contextmanager
def disk_full(monkeypatch, name: str):
    """ENOSPC at the fsync of any file whose path contains ``name`` (a temporary file of the atomic
    write: ``.<file>.<random>.tmp``), as a full disk reports it."""
    real = os.fsync

    def fsync(fd):
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = ""
        if name in path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    try:
        yield
    finally:
        monkeypatch.setattr(os, "fsync", real)


def no_temporary_files(out: Path) -> bool:
    return not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads /proc (Linux)")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the tiny grid (one thread, as the workers run)."""
    tasks, settings = tiny_grid()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return numbers(E.run_grid(tasks, settings, out=tmp_path_factory.mktemp("reference")))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A run stopped by a full disk while writing its second unit: the first unit written, the second's
    two parts kept."""
    tasks, settings = tiny_grid()
    out = tmp_path_factory.mktemp("stopped")
    with pytest.MonkeyPatch.context() as mp, disk_full(mp, "panel-seed1.json"):
        with pytest.raises(OutputError, match="panel-seed1.json: No space left on device"):
            E.run_grid(tasks, settings, out=out)
    return out


def resume(out: Path) -> dict:
    tasks, settings = tiny_grid()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return E.run_grid(tasks, settings, out=out, resume=True)
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# the disk fills up


def test_disk_full_while_a_unit_is_written_is_one_line_and_resume_completes(tmp_path, monkeypatch, capsys, reference):
    out = tmp_path / "out"
    args = ["reproduce", "--tasks", TASK, "--seeds", "2", "--frontier-seeds", "0", "--methods", "local", "backprop",
            "--epochs", "2", "--n-attack", "8", "--pgd-steps", "2", "--pgd-restarts", "1", "--square-queries", "2",
            "--no-autoattack", "--val-attack", "0", "--no-diagnostics", "--jobs", "1", "--no-progress", "--out", str(out)]
    with disk_full(monkeypatch, "panel-seed1.json"):
        assert main(args) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("localstdp:")]
    assert err == [f"localstdp: error: cannot write {out / UNITS / 'panel-seed1.json'}: No space left on device"]
    assert no_temporary_files(out)
    assert read_unit(out / UNITS / "panel-seed0.json") is not None  # the unit finished before is kept, whole
    assert not (out / UNITS / "panel-seed1.json").exists()
    kept = sorted(p.parent.name for p in (out / UNITS / "panel-seed1").glob(f"*/{PART}"))
    assert kept == ["backprop", "local"]  # its two trained models are kept: resume only assembles the unit
    assert all(part_fingerprint(out / UNITS / "panel-seed1" / m) for m in kept)
    assert main(args + ["--resume"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["units_resumed"] == 1 and res["settings"]["parts_resumed"] == 2


@pytest.mark.parametrize("file", ["local/.part.safetensors", "backprop/.model.safetensors"])
def test_disk_full_while_a_part_is_written_keeps_the_rest_and_resume_gives_the_same_numbers(
        tmp_path, monkeypatch, reference, file):
    tasks, settings = tiny_grid()
    with disk_full(monkeypatch, f"panel-seed1/{file}"), pytest.raises(OutputError, match="No space left on device"):
        E.run_grid(tasks, settings, out=tmp_path)
    assert no_temporary_files(tmp_path)
    assert read_unit(tmp_path / UNITS / "panel-seed0.json") is not None
    assert part_fingerprint(tmp_path / UNITS / "panel-seed1" / file.split("/")[0]) is None  # not finished
    res = resume(tmp_path)
    assert numbers(res) == reference and res["settings"]["units_resumed"] == 1


# ---------------------------------------------------------------------------------------------
# files damaged between runs


def _flip_last_byte(path: Path) -> None:
    b = bytearray(path.read_bytes())
    b[-3] ^= 0x40  # inside the tensor data: the file still parses
    path.write_bytes(bytes(b))


DAMAGE = {
    "part payload": ("local", PART, _flip_last_byte),
    "part truncated": ("local", PART, lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
    "part header": ("backprop", PART, lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      " +
                                                               p.read_bytes()[24:])),
    "model payload": ("backprop", "model.safetensors", _flip_last_byte),
    "model truncated": ("local", "model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:100])),
    "model missing": ("local", "model.safetensors", Path.unlink),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_part_is_found_on_resume_and_run_again(tmp_path, stopped, reference, damage):
    method, name, spoil = DAMAGE[damage]
    out = tmp_path / "out"
    shutil.copytree(stopped, out)
    part = out / UNITS / "panel-seed1" / method
    assert part_fingerprint(part) is not None
    spoil(part / name)
    assert part_fingerprint(part) is None  # found: not counted as finished
    res = resume(out)
    assert numbers(res) == reference
    assert res["settings"]["units_resumed"] == 1 and res["settings"]["parts_resumed"] == 1  # the other part kept


def _change_a_digit(path: Path) -> None:
    text = path.read_text()
    i = text.index('"clean_accuracy": ') + len('"clean_accuracy": ')
    path.write_text(text[:i] + ("1" if text[i] == "0" else "0") + text[i + 1 :])


UNIT_DAMAGE = {
    "truncated": lambda p: p.write_text(p.read_text()[:40]),
    "not UTF-8": lambda p: p.write_bytes(b"\xff\xfe" + p.read_bytes()[2:]),
    "not an object": lambda p: p.write_text("[]\n"),
    "a number changed": _change_a_digit,
    "empty": lambda p: p.write_bytes(b""),
}


@pytest.mark.parametrize("damage", list(UNIT_DAMAGE))
def test_read_unit_finds_a_damaged_unit_file(tmp_path, damage):
    rec = {"rows": [{"clean_accuracy": 0.5, "x": [1, 2]}], "matched": [], "fingerprint": "f", "unit": "u"}
    path = tmp_path / "u.json"
    path.write_text(unit_text(rec))
    assert read_unit(path) == json.loads(unit_text(rec))
    UNIT_DAMAGE[damage](path)
    assert read_unit(path) is None
    assert read_unit(tmp_path / "missing.json") is None


def test_a_truncated_unit_file_is_run_again(tmp_path, stopped, reference):
    out = tmp_path / "out"
    shutil.copytree(stopped, out)
    UNIT_DAMAGE["truncated"](out / UNITS / "panel-seed0.json")
    res = resume(out)
    assert numbers(res) == reference and res["settings"]["units_resumed"] == 0


@pytest.mark.parametrize("damage", ["not UTF-8", "not an object", "a number changed"])
def test_a_damaged_unit_file_is_run_again_never_trusted(tmp_path, stopped, reference, damage):
    out = tmp_path / "out"
    shutil.copytree(stopped, out)
    UNIT_DAMAGE[damage](out / UNITS / "panel-seed0.json")
    res = resume(out)
    assert numbers(res) == reference and res["settings"]["units_resumed"] == 0


# ---------------------------------------------------------------------------------------------
# SIGTERM to `reproduce --jobs 2` after it finished some work




SIGTERM_ARGS = ["reproduce", "--tasks", TASK, "--seeds", "2", "--frontier-seeds", "0", "--methods", "local",
                "backprop", "--epochs", "400", "--n-attack", "8", "--pgd-steps", "2", "--pgd-restarts", "1",
                "--square-queries", "2", "--no-autoattack", "--val-attack", "0", "--no-diagnostics", "--no-progress"]


@pytest.mark.slow  # about 45 s: the stopped run, its resume and the same run uninterrupted
def test_sigterm_to_a_two_job_run_stops_every_worker_keeps_finished_work_and_resume_is_identical(tmp_path):
    out = tmp_path / "term"
    cmd = [sys.executable, "-m", "localstdp", *SIGTERM_ARGS, "--jobs", "2", "--out", str(out)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    workers: set[int] = set()
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:  # the first finished model (or unit), then SIGTERM at once
            workers |= {k for k in children(proc.pid)
                        if "spawn_main" in Path(f"/proc/{k}/cmdline").read_text(errors="replace")}
            if list((out / UNITS).glob(f"*/*/{PART}")) or list((out / UNITS).glob("*.json")):
                break
            assert proc.poll() is None, "reproduce ended before any model was finished"
            time.sleep(0.05)
        else:
            pytest.fail("no model was finished in time")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    line = next(line for line in err.splitlines() if "interrupted:" in line)
    units, models = (int(w) for w in line.split("interrupted: ")[1].replace(" finished unit(s) and", "").split()[:2])
    assert units + models >= 1 and "Traceback" not in err
    deadline = time.monotonic() + 15
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(workers) == 2 and not any(alive(w) for w in workers), "a worker outlived the SIGTERM"
    assert no_temporary_files(out)
    kept_parts = [p.parent for p in (out / UNITS).glob(f"*/*/{PART}")]
    assert all(part_fingerprint(p) is not None for p in kept_parts)
    # resume with the same command, then the same run uninterrupted: the same numbers
    again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["settings"]["units_resumed"] * 2 + resumed["settings"]["parts_resumed"] >= 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*SIGTERM_ARGS, "--jobs", "1", "--out", str(tmp_path / "whole")]) == 0
    finally:
        torch.set_num_threads(threads)
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert numbers(resumed) == numbers(whole)
