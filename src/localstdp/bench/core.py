"""The measuring machinery every benchmark of :mod:`localstdp.bench` shares: interleaved timing with
paired ratios, peak step memory, a torch.profiler breakdown, the machine and its load, JSON output.

The box the benchmarks run on is shared: every arm runs batch by batch in a rotating order, so each
sees the same machine load, and a ratio is the median of the per-repeat ratios, never a ratio of
medians of separately timed runs."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)




def time_call(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def stepper(step: Callable, batches) -> Callable[[int], object]:
    return lambda i: step(*batches[i])


def interleaved(fns: dict[str, Callable[[int], object]], units: int, repeats: int, warmup: int,
                device: torch.device) -> dict[str, list[float]]:
    """Seconds per repeat of every fn, each repeat being ``units`` calls fn(0..units-1).

    Interleaved at the finest grain: for every unit all fns run back to back, in an order that
    rotates from unit to unit, so every method sees the same machine load (the box is shared).
    ``warmup`` untimed repeats come first."""
    names = list(fns)
    for _ in range(warmup):
        for i in range(units):
            for k in names:
                fns[k](i)
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in names}
    turn = 0
    for _ in range(repeats):
        total = dict.fromkeys(names, 0.0)
        for i in range(units):
            turn += 1
            for k in names[turn % len(names):] + names[: turn % len(names)]:
                total[k] += time_call(lambda: fns[k](i), device)
        for k in names:
            times[k].append(total[k])
    return times


def paired_ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(n / d for n, d in zip(num, den))


def peak_step_memory(step: Callable[[], object], device: torch.device) -> int:
    """Bytes allocated above the resting state during one training step.

    CUDA: the allocator's peak. CPU: torch.profiler's per-op allocations (running sum of every
    op's own net allocation, in time order; an op's internal temporaries freed before it returns
    are not seen)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        sync(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    deltas = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events() if e.self_cpu_memory_usage)
    peak = cur = 0
    for _, d in deltas:
        cur += d
        peak = max(peak, cur)
    return int(peak)


GEMM_OPS = ("aten::addmm", "aten::addmm_", "aten::mm", "aten::bmm", "aten::matmul")


def op_breakdown(step: Callable[[], object], device: torch.device, steps: int = 2, top: int = 6) -> dict:
    """Where one training step spends its time, from torch.profiler: the GEMM share of the self
    time and the ``top`` ops by self time (milliseconds per step)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        sync(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    rows = [(e.key, getattr(e, attr, 0.0) / 1e3 / steps) for e in prof.key_averages()]
    rows = [r for r in rows if r[1] > 0]
    total = sum(ms for _, ms in rows)
    gemm = sum(ms for k, ms in rows if k in GEMM_OPS)
    rows.sort(key=lambda r: -r[1])
    return {"total_ms": total, "gemm_share": gemm / total if total else 0.0,
            "top_ms": {k: ms for k, ms in rows[:top]}}


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the OS does not say)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_info(device: torch.device) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpu": platform.processor() or None}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), info["cpu"])
    except OSError:
        pass
    if hasattr(os, "getloadavg"):
        info["load_average"] = list(os.getloadavg())
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write_json(result: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
