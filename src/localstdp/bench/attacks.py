"""The attack suite's cost (``localstdp bench --attacks``): seconds per model on the shipped
networks, the suite exactly as ``reproduce`` runs it on a panel model (every attack on every
example at the 8 eps) and as a frontier point runs it (worst case only, survivors only), and the
wall time of a small ``reproduce`` end to end.

Targets (issue 22, the 2-core machine): the panel suite <= 10 s per paper-task model (mnist-3v5's
784-128-64-2 MLP, its 300 test examples), <= 120 s for a Fashion-MNIST MLP on 1,000 examples.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..errors import ConfigError, LocalSTDPError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# name: (config, attacked test examples, training-set limit or None, epochs or None (the config's), target s)
CASES = {
    "mnist-3v5": ("mnist-3v5", 300, None, None, 10.0),
    "fashion-mnist": ("fashion-mnist", 1000, 12000, 3, 120.0),
    "mnist-10-cnn": ("mnist-10-cnn", 300, None, 3, None),
}
REPRODUCE = ["reproduce", "--tasks", "mnist-3v5", "--methods", "local", "backprop", "--seeds", "2",
             "--frontier-seeds", "0"]
REPRODUCE_TARGET = 60.0  # "about a minute"


def bench_case(name: str, seed: int = 0) -> dict:
    """Train the local rule on ``name``'s config (limits as in :data:`CASES`), then time the suite
    on it: panel mode, worst-case-only mode, and report each mode's worst case at eps 0.1."""
    from ..config import load_config
    from ..data import load_dataset
    from ..evaluation.units import train_method
    from ..robustness import AttackSettings, attack_suite

    if name not in CASES:
        raise ConfigError(f"bench --attacks: unknown case {name!r}; expected one of {', '.join(CASES)}")
    config, n, limit, epochs, target = CASES[name]
    cfg = load_config(CONFIG_DIR / f"{config}.toml")
    try:
        ds = load_dataset(cfg.data)
    except LocalSTDPError as exc:
        return {"skipped": str(exc)}
    if limit:
        ds = dataclasses.replace(ds, x_train=ds.x_train[:limit], y_train=ds.y_train[:limit])
    t0 = time.perf_counter()
    trained = train_method(cfg, "local", ds, seed, epochs)
    train_s = time.perf_counter() - t0
    x, y = ds.x_test[:n].numpy(), ds.y_test[:n].numpy()
    out = {"config": config, "examples": len(y), "train_limit": limit, "epochs": trained.metrics["epochs"],
           "train_s": train_s, "target_s": target, "threads": torch.get_num_threads()}
    for mode, worst_only in (("panel", False), ("worst_only", True)):
        t0 = time.perf_counter()
        res = attack_suite(trained.model, x, y, ds.input_shape, ds.n_classes, AttackSettings(), seed=seed,
                           worst_only=worst_only)
        out[f"{mode}_s"] = time.perf_counter() - t0
        if not worst_only:
            from ..robustness import add_worst

            add_worst(res)
        out[f"{mode}_worst_0.1"] = float(res.correct["worst"]["0.1"].mean())
    out["clean"] = float(res.clean.mean())
    out["target_met"] = None if target is None else out["panel_s"] <= target
    return out


def bench_reproduce() -> dict:
    """Wall time of :data:`REPRODUCE` in a fresh output directory (the command's own process)."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "localstdp", *REPRODUCE, "--out", str(Path(tmp) / "r")],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if done.returncode:
        return {"failed": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return {"command": "localstdp " + " ".join(REPRODUCE), "wall_s": wall, "target_s": REPRODUCE_TARGET,
            "target_met": wall <= REPRODUCE_TARGET}


def run_attack_bench(cases: list[str] | None = None, reproduce: bool = True) -> dict:
    import os
    import platform

    result = {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "load_start": list(os.getloadavg())}
    result["cases"] = {c: bench_case(c) for c in (cases or list(CASES))}
    if reproduce:
        result["reproduce"] = bench_reproduce()
    result["load_end"] = list(os.getloadavg())
    return result


def render_markdown(result: dict, command: str) -> str:
    load = ""
    if "load_start" in result:
        load = (f"; load average at start {', '.join(f'{v:.2f}' for v in result['load_start'])}, at end "
                f"{', '.join(f'{v:.2f}' for v in result['load_end'])}")
    lines = [f"Measured by `{command}` ({result.get('threads', '?')} torch threads, {result.get('cpus', '?')} CPUs, "
             f"torch {result.get('torch', '?')}{load}). Each case trains the local rule on the config (limits: "
             "fashion-mnist 3 epochs on its first 12,000 training images, mnist-10-cnn 3 epochs), then runs the "
             "suite with the default settings on its first N test examples: the panel mode (every attack on "
             "every example, 8 eps) and the worst-case-only mode (survivors only).", "",
             "| case | attacked examples | panel suite (s) | worst-case-only suite (s) | target (s) | met | "
             "worst @0.1 panel / worst-only |", "|---|---|---|---|---|---|---|"]
    for name, r in result["cases"].items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} | | | | | |")
            continue
        tgt = "-" if r["target_s"] is None else f"<= {r['target_s']:g}"
        met = "-" if r["target_met"] is None else ("yes" if r["target_met"] else "NO")
        lines.append(f"| {name} | {r['examples']} | {r['panel_s']:.1f} | {r['worst_only_s']:.1f} | {tgt} | {met} | "
                     f"{r['panel_worst_0.1']:.3f} / {r['worst_only_worst_0.1']:.3f} |")
    rep = result.get("reproduce")
    if rep:
        lines.append("")
        if "failed" in rep:
            lines.append(f"`reproduce` end to end: failed ({rep['failed']})")
        else:
            lines.append(f"`{rep['command']}` end to end: {rep['wall_s']:.0f} s (target <= {rep['target_s']:g} s: "
                         f"{'met' if rep['target_met'] else 'NOT met'}).")
    return "\n".join(lines) + "\n"


def write_outputs(result: dict, out: str, md: str, command: str) -> None:
    from ..checkpoint import atomic_write_text

    result["command"] = command
    for path in (out, md):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out), json.dumps(result, indent=1) + "\n")
    atomic_write_text(Path(md), render_markdown(result, command))
