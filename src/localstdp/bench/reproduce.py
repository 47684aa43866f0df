"""The main job's profile (``localstdp bench --reproduce``): where ``make reproduce``'s time goes.

Runs ``localstdp reproduce`` exactly as ``make reproduce`` does (the paper suite, ``--seeds 3``, its
default workers) in a child process, with its own progress bar, and times it end to end; or, with
``--from DIR``, reads a run that already finished. Every unit record of a run carries the wall seconds
its work spent in each phase (localstdp.evaluation.phases: ``train``, ``attack``, ``certify``,
``matched``, ``val_attack``, ``diagnostics``, ``transfer``); the profile sums them by kind of unit
(panel seeds; frontier points of the local rule and of backprop), by phase and by task. The phase
seconds are the workers' own clocks: with ``--jobs 2`` they add up to about twice the wall time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from ..errors import LocalSTDPError

MAKE_REPRODUCE = ["reproduce", "--seeds", "3"]  # the Makefile's `reproduce` target (SEEDS ?= 3)
TARGET_S = 600.0  # issue 32: make reproduce <= 10 min idle on the 2-core machine
PHASES = ("train", "attack", "certify", "matched/attack", "matched/certify", "matched", "val_attack", "diagnostics",
          "transfer")


def unit_kind(name: str, rec: dict) -> str:
    """"panel", or "frontier <method>" (the family whose knob the point turns)."""
    if "/panel-" in name:
        return "panel"
    rows = rec.get("rows") or [{}]
    return f"frontier {rows[0].get('method', '?')}"


def profile_run(run_dir: str | Path) -> dict:
    """Sum the phase seconds of every unit record under ``run_dir``/units, by kind, phase and task."""
    run_dir = Path(run_dir)
    files = sorted((run_dir / "units").glob("*/*.json"))
    if not files:
        raise LocalSTDPError(f"{run_dir}: no unit records under {run_dir / 'units'} (not a reproduce output)")
    kinds: dict[str, dict] = defaultdict(lambda: {"units": 0, "phases": defaultdict(float)})
    tasks: dict[str, float] = defaultdict(float)
    missing = 0
    for f in files:
        try:
            rec = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LocalSTDPError(f"{f}: unreadable unit record ({exc})") from None
        spent = rec.get("phase_seconds")
        if spent is None:
            missing += 1
            continue
        k = kinds[unit_kind(rec.get("unit", f"{f.parent.name}/{f.stem}"), rec)]
        k["units"] += 1
        for ph, s in spent.items():
            k["phases"][ph] += float(s)
            tasks[f.parent.name] += float(s)
    out_kinds = {name: {"units": k["units"], "phases": dict(k["phases"]), "seconds": sum(k["phases"].values())}
                 for name, k in sorted(kinds.items())}
    by_phase: dict[str, float] = defaultdict(float)
    for k in out_kinds.values():
        for ph, s in k["phases"].items():
            by_phase[ph] += s
    result = {"units": len(files), "units_without_phases": missing, "kinds": out_kinds,
              "phases": dict(sorted(by_phase.items(), key=lambda kv: -kv[1])), "tasks": dict(tasks),
              "phase_seconds": sum(by_phase.values())}
    results = run_dir / "results.json"
    if results.exists():
        try:
            settings = json.loads(results.read_text(encoding="utf-8"))["settings"]
            result["run"] = {k: settings.get(k) for k in ("wall_seconds", "jobs", "seeds", "frontier_seeds", "methods",
                                                          "units_resumed", "parts_resumed", "version")}
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return result


def run_reproduce(run_dir: str | Path, seeds: int = 3, jobs: int | None = None) -> dict:
    """``localstdp reproduce --seeds N --out run_dir`` in a child process (its progress bar on this
    terminal), timed end to end with the load average around it, then :func:`profile_run`."""
    words = [*MAKE_REPRODUCE[:-1], str(seeds), "--out", str(run_dir)] + (["--jobs", str(jobs)] if jobs else [])
    load0 = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "localstdp", *words], check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise LocalSTDPError(f"bench --reproduce: `localstdp {' '.join(words)}` exited {done.returncode}")
    prof = profile_run(run_dir)
    load1 = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return prof | {"wall_s": wall, "target_s": TARGET_S, "target_met": wall <= TARGET_S,
                   "reproduce": "localstdp " + " ".join(words), "load_average": {"start": load0, "end": load1},
                   "cpu_count": os.cpu_count()}


def render_markdown(result: dict, command: str) -> str:
    """The profile as a BENCHMARKS.md section."""
    lines = ["## `make reproduce`: where the main job's time goes (issue 32)", "",
             f"`{command}` ({result.get('reproduce', 'a finished run')}; {result['units']} units)."]
    if "wall_s" in result:
        la = {k: "/".join(f"{v:.2f}" for v in vs) if vs else "unknown" for k, vs in (result.get("load_average") or {}).items()}
        met = "met" if result["target_met"] else "NOT met"
        lines += [f"End to end {result['wall_s']:.0f} s ({result['wall_s'] / 60:.1f} min) on {result['cpu_count']} "
                  f"CPUs, load average (1/5/15 min) at start {la.get('start')}, at end {la.get('end')}; target <= "
                  f"{result['target_s']:.0f} s: {met}."]
    run = result.get("run") or {}
    if run:
        lines += [f"The run's own clock: {run.get('wall_seconds', 0):.0f} s with --jobs {run.get('jobs')}, seeds "
                  f"{run.get('seeds')}, frontier seeds {run.get('frontier_seeds')}, code {run.get('version')}."]
    total = result["phase_seconds"] or 1.0
    lines += ["", "Seconds spent in each phase, summed over the workers (with 2 workers about twice the wall time):",
              "", "| kind of unit | units | " + " | ".join(PHASES) + " | total | share |",
              "|---|---|" + "---|" * (len(PHASES) + 2)]
    for name, k in result["kinds"].items():
        cells = [f"{k['phases'].get(ph, 0.0):.0f}" for ph in PHASES]
        lines.append(f"| {name} | {k['units']} | " + " | ".join(cells) + f" | {k['seconds']:.0f} | "
                     f"{k['seconds'] / total:.0%} |")
    cells = [f"{result['phases'].get(ph, 0.0):.0f}" for ph in PHASES]
    lines.append(f"| all | {result['units']} | " + " | ".join(cells) + f" | {result['phase_seconds']:.0f} | 100% |")
    lines += ["", "By task: " + ", ".join(f"{t} {s:.0f} s" for t, s in sorted(result["tasks"].items())) + "."]
    if result.get("units_without_phases"):
        lines += [f"{result['units_without_phases']} unit records carry no phase times (made before they were kept)."]
    return "\n".join(lines) + "\n"
