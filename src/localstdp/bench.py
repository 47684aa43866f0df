"""Throughput and efficiency of the local rule against backprop, measured side by side in ONE process.

Per layer, the rate mode needs one forward GEMM and one weight-update GEMM; backprop also needs
the GEMM that carries the error to the layer below (not for the first layer: the input needs no
gradient). For 784-1024-1024-10 that bounds the speed-up of the rate mode at
flops(backprop) / flops(rate) ~= 1.28. The benchmark measures, with warm-up, interleaved repeats
(batch by batch, every method in turn) and medians:

- ``rate_vs_backprop_speedup``: backprop epoch time / rate epoch time (median of the per-repeat
  ratios; backprop is plain SGD, no momentum, cross-entropy, torch.autograd);
- ``timing_vs_rate_cost``: timing epoch time / rate epoch time (binned backend, ``time_bins`` K);
- ``gemm_efficiency``: achieved FLOP/s of rate-mode training / FLOP/s of the same GEMMs (same
  shapes, same order, preallocated outputs) timed in the same repeats;
- peak memory of one training step of each method; time per batch against width and batch size;
- the cost and the error of the timing mode against K.

Data are synthetic and MNIST-shaped (784 features in [0, 1], 10 classes): the cost does not
depend on the values. Library code: it returns a dict and writes files; the CLI prints.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .errors import LocalSTDPError
from .model import build_model
from .rules import Backprop, BackpropParams, LocalRule, RuleParams
from .rules.functional import timing_direct
from .rules.timing import binned_error_bound, timing_binned

log = logging.getLogger(__name__)

N_FEATURES, N_CLASSES = 784, 10
TARGETS = {"rate_vs_backprop_speedup": (">=", 1.25), "gemm_efficiency": (">=", 0.80), "timing_vs_rate_cost": ("<=", 4.0)}
METHODS = ("rate", "backprop", "timing")


@dataclass(frozen=True)
class BenchSpec:
    """What to measure. hidden/batch: the headline net and batch; epoch_batches: batches per
    timed epoch; repeats: interleaved timed repeats after ``warmup`` untimed ones; time_bins: K of
    the timing mode in the headline; scale_*: the width and batch sweeps (time per batch);
    bins_sweep: the K values whose cost and error are measured; lr: both methods' learning rate."""

    hidden: tuple[int, ...] = (1024, 1024)
    batch: int = 256
    epoch_batches: int = 20
    repeats: int = 7
    warmup: int = 1
    time_bins: int = 4
    scale_widths: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    scale_batches: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)
    scale_methods: tuple[str, ...] = ("rate", "backprop", "timing")
    scale_steps: int = 3
    scale_repeats: int = 3
    bins_sweep: tuple[int, ...] = (2, 4, 8, 16, 32)
    bins_steps: int = 3
    lr: float = 0.05
    seed: int = 0


QUICK = BenchSpec(epoch_batches=6, repeats=5, scale_widths=(256, 1024, 4096), scale_batches=(32, 256, 1024),
                  scale_methods=("rate", "backprop"), scale_steps=1, scale_repeats=3, bins_sweep=(2, 4, 8, 32),
                  bins_steps=2)


# ------------------------------------------------------------------------------------------------
# pieces
# ------------------------------------------------------------------------------------------------


def layer_flops(widths: list[int], batch: int) -> list[int]:
    """2 * batch * n_in * n_out: the FLOPs of one GEMM of each layer."""
    return [2 * batch * a * b for a, b in zip(widths[:-1], widths[1:])]


def method_flops(method: str, widths: list[int], batch: int, time_bins: int = 1) -> int:
    """GEMM FLOPs of one training step (elementwise work is not counted)."""
    f = layer_flops(widths, batch)
    if method == "rate":
        return 2 * sum(f)
    if method == "backprop":
        return 2 * sum(f) + sum(f[1:])  # + the error GEMM of every layer but the first
    if method == "timing":
        return sum(f) * (1 + time_bins)  # forward + the (K * batch)-inner update GEMM
    raise ValueError(f"unknown method {method!r}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_learner(method: str, widths: list[int], spec: BenchSpec, device: torch.device, time_bins: int | None = None):
    """A fresh model (same seed for every method) and its learner on ``device``."""
    model = build_model(widths[0], widths[1:-1], widths[-1], "sigmoid", spec.seed).to(device)
    if method == "backprop":
        return Backprop(model, BackpropParams(optimizer="sgd", lr=spec.lr, momentum=0.0), widths[-1], spec.seed)
    if method == "rate":
        params = RuleParams(eta=spec.lr, mode="rate")
    elif method == "timing":
        params = RuleParams(eta=spec.lr, mode="timing", timing_backend="binned",
                            time_bins=spec.time_bins if time_bins is None else time_bins)
    else:
        raise ValueError(f"unknown method {method!r}")
    rule = LocalRule(model, params, widths[-1], spec.seed)
    rule.associations = [A.to(device) for A in rule.associations]
    return rule


def synthetic_batches(n_batches: int, batch: int, n_features: int, device: torch.device, seed: int = 0):
    """MNIST-shaped batches: features uniform in [0, 1], labels uniform over 10 classes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_batches, batch, n_features, generator=g).to(device)
    y = torch.randint(0, N_CLASSES, (n_batches, batch), generator=g).to(device)
    return list(zip(x.unbind(0), y.unbind(0)))


class GemmReference:
    """The GEMMs of one rate-mode step, alone: forward addmm per layer, then the update addmm_ per
    layer, with every operand and output preallocated."""

    def __init__(self, widths: list[int], batch: int, device: torch.device, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.acts = [torch.rand(batch, w, generator=g).to(device) for w in widths]
        self.W = [torch.rand(b, a, generator=g).to(device) for a, b in zip(widths[:-1], widths[1:])]
        self.bias = [torch.rand(b, generator=g).to(device) for b in widths[1:]]
        self.out = [torch.empty(batch, b, device=device) for b in widths[1:]]

    def step(self) -> None:
        for l, W in enumerate(self.W):
            torch.addmm(self.bias[l], self.acts[l], W.T, out=self.out[l])
        for l, W in enumerate(self.W):
            W.addmm_(self.out[l].T, self.acts[l], alpha=1e-30)


def _time(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _stepper(step: Callable, batches) -> Callable[[int], object]:
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
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in names}
    turn = 0
    for _ in range(repeats):
        total = dict.fromkeys(names, 0.0)
        for i in range(units):
            turn += 1
            for k in names[turn % len(names):] + names[: turn % len(names)]:
                total[k] += _time(lambda: fns[k](i), device)
        for k in names:
            times[k].append(total[k])
    return times


def _paired_ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(n / d for n, d in zip(num, den))


def peak_step_memory(step: Callable[[], object], device: torch.device) -> int:
    """Bytes allocated above the resting state during one training step.

    CUDA: the allocator's peak. CPU: torch.profiler's per-op allocations (running sum of every
    op's own net allocation, in time order; an op's internal temporaries freed before it returns
    are not seen)."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
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
        _sync(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    rows = [(e.key, getattr(e, attr, 0.0) / 1e3 / steps) for e in prof.key_averages()]
    rows = [r for r in rows if r[1] > 0]
    total = sum(ms for _, ms in rows)
    gemm = sum(ms for k, ms in rows if k in GEMM_OPS)
    rows.sort(key=lambda r: -r[1])
    return {"total_ms": total, "gemm_share": gemm / total if total else 0.0,
            "top_ms": {k: ms for k, ms in rows[:top]}}


def timing_error(widths: list[int], spec: BenchSpec, time_bins: int, n: int = 16) -> dict[str, float]:
    """Binned vs direct timing update of the first hidden layer on the benchmark's own activities
    (``n`` examples): relative Frobenius error, and the stated per-kernel bound eps(K)."""
    model = build_model(widths[0], widths[1:-1], widths[-1], "sigmoid", spec.seed)
    x, _ = synthetic_batches(1, n, widths[0], torch.device("cpu"), spec.seed + 1)[0]
    with torch.no_grad():
        acts = model.activities(x)
    pre, post = acts[0], acts[1]
    g = torch.Generator().manual_seed(spec.seed)
    e = torch.where(torch.rand(post.shape, generator=g) < 0.1, 0.9, 0.1) - post  # association-like targets
    p = RuleParams(mode="timing", time_bins=time_bins)
    direct = timing_direct(pre, post, e, pre, p)
    binned = timing_binned(pre, post, e, pre, p)
    return {"rel_error": float((binned - direct).norm() / direct.norm()), "kernel_error_bound": binned_error_bound(p)}


# ------------------------------------------------------------------------------------------------
# the benchmark
# ------------------------------------------------------------------------------------------------


def headline(spec: BenchSpec, device: torch.device) -> dict:
    """Epoch times of rate, backprop, timing and the bare GEMMs, interleaved; ratios; memory."""
    widths = [N_FEATURES, *spec.hidden, N_CLASSES]
    batches = synthetic_batches(spec.epoch_batches, spec.batch, N_FEATURES, device, spec.seed)
    learners = {m: make_learner(m, widths, spec, device) for m in METHODS}
    gemm = GemmReference(widths, spec.batch, device, spec.seed)
    fns = {m: _stepper(lrn.step, batches) for m, lrn in learners.items()}
    fns["gemm"] = lambda i: gemm.step()
    log.info("bench %s: headline %s, batch %d, %d batches x %d repeats", device, widths, spec.batch,
             spec.epoch_batches, spec.repeats)
    times = interleaved(fns, spec.epoch_batches, spec.repeats, spec.warmup, device)
    med = {k: statistics.median(v) for k, v in times.items()}
    flops = {m: method_flops(m, widths, spec.batch, spec.time_bins) * spec.epoch_batches for m in METHODS}
    flops["gemm"] = flops["rate"]
    x0, y0 = batches[0]
    memory = {m: peak_step_memory(lambda lrn=lrn: lrn.step(x0, y0), device) for m, lrn in learners.items()}
    ops = {m: op_breakdown(lambda lrn=lrn: lrn.step(x0, y0), device) for m, lrn in learners.items()}
    ops["gemm"] = op_breakdown(gemm.step, device)
    return {
        "widths": widths,
        "batch": spec.batch,
        "epoch_batches": spec.epoch_batches,
        "epoch_examples": spec.epoch_batches * spec.batch,
        "time_bins": spec.time_bins,
        "epoch_seconds": times,
        "epoch_seconds_median": med,
        "epoch_seconds_min": {k: min(v) for k, v in times.items()},
        "gflops_per_second": {k: flops[k] / med[k] / 1e9 for k in med},
        "rate_vs_backprop_speedup": _paired_ratio(times["backprop"], times["rate"]),
        "timing_vs_rate_cost": _paired_ratio(times["timing"], times["rate"]),
        "gemm_efficiency": _paired_ratio(times["gemm"], times["rate"]),
        "flop_bound_speedup": method_flops("backprop", widths, 1) / method_flops("rate", widths, 1),
        "peak_step_memory_bytes": memory,
        "op_breakdown": ops,
        "parameter_bytes": sum(p.numel() * p.element_size() for p in learners["rate"].model.parameters()),
    }


def _per_batch(methods, widths: list[int], batch: int, spec: BenchSpec, device: torch.device) -> dict[str, float]:
    """Median seconds per batch of each method at one shape (interleaved repeats)."""
    batches = synthetic_batches(spec.scale_steps, batch, widths[0], device, spec.seed)
    fns = {m: _stepper(make_learner(m, widths, spec, device).step, batches) for m in methods}
    times = interleaved(fns, spec.scale_steps, spec.scale_repeats, 1, device)
    return {m: statistics.median(t) / spec.scale_steps for m, t in times.items()}


def scaling(spec: BenchSpec, device: torch.device) -> dict:
    """Seconds per batch against the hidden width (batch fixed) and the batch (width fixed)."""
    out: dict = {"width": [], "batch": []}
    for w in spec.scale_widths:
        log.info("bench %s: width %d", device, w)
        widths = [N_FEATURES, w, w, N_CLASSES]
        out["width"].append({"width": w, "batch": spec.batch,
                             "seconds_per_batch": _per_batch(spec.scale_methods, widths, spec.batch, spec, device)})
    for b in spec.scale_batches:
        log.info("bench %s: batch %d", device, b)
        widths = [N_FEATURES, *spec.hidden, N_CLASSES]
        out["batch"].append({"width": spec.hidden[0], "batch": b,
                             "seconds_per_batch": _per_batch(spec.scale_methods, widths, b, spec, device)})
    return out


def bins_sweep(spec: BenchSpec, device: torch.device) -> list[dict]:
    """Cost (timing step / rate step, interleaved) and error of the timing mode for each K."""
    widths = [N_FEATURES, *spec.hidden, N_CLASSES]
    batches = synthetic_batches(spec.bins_steps, spec.batch, N_FEATURES, device, spec.seed)
    fns = {"rate": _stepper(make_learner("rate", widths, spec, device).step, batches)}
    for K in spec.bins_sweep:
        fns[f"timing{K}"] = _stepper(make_learner("timing", widths, spec, device, time_bins=K).step, batches)
    log.info("bench %s: time_bins %s", device, list(spec.bins_sweep))
    times = interleaved(fns, spec.bins_steps, spec.scale_repeats, 1, device)
    rows = []
    for K in spec.bins_sweep:
        rows.append({"time_bins": K, "timing_vs_rate_cost": _paired_ratio(times[f"timing{K}"], times["rate"]),
                     "seconds_per_batch": statistics.median(times[f"timing{K}"]) / spec.bins_steps,
                     **timing_error(widths, spec, K)})
    return rows


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


def run_device(spec: BenchSpec, device: torch.device) -> dict:
    t0 = time.perf_counter()
    res = {"machine": machine_info(device), "headline": headline(spec, device)}
    res["time_bins_sweep"] = bins_sweep(spec, device)
    res["scaling"] = scaling(spec, device)
    res["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    res["wall_seconds"] = time.perf_counter() - t0
    return res


def run_bench(quick: bool = False, device: str = "auto", spec: BenchSpec | None = None,
              threads: list[int] | None = None, **overrides) -> dict:
    """Run the benchmark; ``device``: "cpu", "cuda" or "auto" (CPU, plus CUDA when present).

    ``threads``: CPU thread counts to measure in turn (default: torch's current setting); each
    gets its own entry, "cpu" for the first and "cpu-<n>t" for the others. Returns the JSON-ready
    result; the three headline keys at the top level come from the first entry measured."""
    spec = spec or (QUICK if quick else BenchSpec())
    if overrides:
        spec = replace(spec, **overrides)
    if device not in ("auto", "cpu", "cuda"):
        raise LocalSTDPError(f"unknown device {device!r}; expected auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise LocalSTDPError("--device cuda: no CUDA device is available")
    if threads is not None and (not threads or any(n < 1 for n in threads)):
        raise LocalSTDPError(f"threads = {threads!r}: expected positive thread counts")
    runs: list[tuple[str, str, int | None]] = []
    if device in ("auto", "cpu"):
        for i, n in enumerate(threads or [None]):
            runs.append(("cpu" if i == 0 else f"cpu-{n}t", "cpu", n))
    if device in ("auto", "cuda"):
        runs.append(("cuda", "cuda", None))
    result: dict = {"quick": quick, "spec": asdict(spec), "targets": {k: list(v) for k, v in TARGETS.items()},
                    "devices": {}}
    saved = torch.get_num_threads()
    try:
        for key, dev, n in runs:
            if dev == "cuda" and not torch.cuda.is_available():
                result["devices"][key] = {"skipped": "no CUDA device is available"}
                continue
            if n is not None:
                torch.set_num_threads(n)
            result["devices"][key] = run_device(spec, torch.device(dev))
            torch.set_num_threads(saved)
    finally:
        torch.set_num_threads(saved)
    first = result["devices"][runs[0][0]]["headline"]
    for key in TARGETS:
        result[key] = first[key]
    result["targets_met"] = {k: (result[k] >= v if op == ">=" else result[k] <= v) for k, (op, v) in TARGETS.items()}
    return result


def write_json(result: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def plot_width(result: dict, path: str | Path) -> None:
    """Seconds per batch against hidden width, one line per method and device (log-log)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for dev, res in result["devices"].items():
        if "skipped" in res:
            continue
        rows = res["scaling"]["width"]
        for m in rows[0]["seconds_per_batch"]:
            ax.plot([r["width"] for r in rows], [r["seconds_per_batch"][m] for r in rows], marker="o",
                    label=f"{m} ({dev}, {res['machine']['threads']} thread{'s' if res['machine']['threads'] > 1 else ''})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("hidden width (784-w-w-10)")
    ax.set_ylabel("seconds per batch")
    batch = result["spec"]["batch"]
    ax.set_title(f"training step time vs width, batch {batch}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def render_markdown(result: dict, json_path: str, png_path: str, notes: str = "", command: str | None = None) -> str:
    """BENCHMARKS.md from a result dict: every number in its tables comes from the JSON."""
    lines = ["# Benchmarks", "",
             f"Generated by `{command or 'localstdp bench --report ' + json_path}` from the JSON that "
             f"`{result.get('command', 'localstdp bench')}` wrote. Do not edit by hand.", ""]
    lines += ["## Headline", "", "| key | measured | target | met |", "|---|---|---|---|"]
    for k, (op, v) in result["targets"].items():
        lines.append(f"| `{k}` | {result[k]:.3f} | {op} {v} | {'yes' if result['targets_met'][k] else 'NO'} |")
    first = next(iter(result["devices"]))
    lines += ["", f"The keys above come from the first entry, `{first}`. Every entry measured:", "",
              "| entry | threads | " + " | ".join(f"`{k}`" for k in result["targets"]) + " |",
              "|---|---|" + "---|" * len(result["targets"])]
    for dev, res in result["devices"].items():
        if "skipped" not in res:
            lines.append(f"| {dev} | {res['machine']['threads']} | "
                         + " | ".join(f"{res['headline'][k]:.3f}" for k in result["targets"]) + " |")
    lines.append("")
    for dev, res in result["devices"].items():
        if "skipped" in res:
            lines += [f"## {dev}", "", f"Skipped: {res['skipped']}.", ""]
            continue
        h, m = res["headline"], res["machine"]
        lines += [f"## {dev}", "",
                  f"Machine: {m.get('cpu')}, {m['cpu_count']} CPUs, torch {m['torch']} with {m['threads']} threads"
                  + (f", GPU {m['gpu']}" if "gpu" in m else "") + f"; {m['platform']}.",
                  f"Load average at start {', '.join(f'{x:.2f}' for x in m.get('load_average') or [])}, at end "
                  f"{', '.join(f'{x:.2f}' for x in m.get('load_average_end') or [])} (other jobs shared the machine "
                  "when the load exceeds the thread count). Wall time of this device's run: "
                  f"{res['wall_seconds']:.0f} s.", "",
                  f"Net {'-'.join(map(str, h['widths']))}, batch {h['batch']}, an epoch of {h['epoch_batches']} batches "
                  f"({h['epoch_examples']} synthetic MNIST-shaped examples), {len(h['epoch_seconds']['rate'])} interleaved "
                  f"repeats after warm-up; medians. Timing mode: binned backend, K = {h['time_bins']} clock steps. "
                  f"FLOP bound of the rate-vs-backprop speed-up for this net: {h['flop_bound_speedup']:.3f}.", "",
                  "| method | epoch s (median) | GEMM GFLOP/s | peak step memory MiB |", "|---|---|---|---|"]
        for k in ("rate", "backprop", "timing", "gemm"):
            mem = h["peak_step_memory_bytes"].get(k)
            lines.append(f"| {k if k != 'gemm' else 'bare GEMMs of a rate step'} | {h['epoch_seconds_median'][k]:.3f} | "
                         f"{h['gflops_per_second'][k]:.1f} | {_mib(mem) if mem is not None else '-'} |")
        lines += ["", f"Ratios (median of per-repeat ratios): rate vs backprop speed-up "
                      f"{h['rate_vs_backprop_speedup']:.3f}, timing vs rate cost {h['timing_vs_rate_cost']:.3f}, "
                      f"GEMM efficiency {h['gemm_efficiency']:.3f}. Parameters: {_mib(h['parameter_bytes'])} MiB.", "",
                  "### Where a step's time goes (torch.profiler, self time per step)", "",
                  "| method | profiled ms per step | GEMM share | top ops (ms) |", "|---|---|---|---|"]
        for k, o in h.get("op_breakdown", {}).items():
            top = ", ".join(f"{n.replace('aten::', '')} {ms:.1f}" for n, ms in o["top_ms"].items())
            lines.append(f"| {k} | {o['total_ms']:.1f} | {o['gemm_share']:.2f} | {top} |")
        lines += ["",
                  "### Timing mode: cost and error against the number of clock steps K", "",
                  "| K | timing / rate time | s per batch | rel. error vs direct (measured) | kernel error bound eps(K) |",
                  "|---|---|---|---|---|"]
        for r in res["time_bins_sweep"]:
            lines.append(f"| {r['time_bins']} | {r['timing_vs_rate_cost']:.2f} | {r['seconds_per_batch']:.3f} | "
                         f"{r['rel_error']:.4f} | {r['kernel_error_bound']:.4f} |")
        for axis, label in (("width", "hidden width (batch %d)" % result["spec"]["batch"]),
                            ("batch", "batch (width %d)" % result["spec"]["hidden"][0])):
            rows = res["scaling"][axis]
            methods = list(rows[0]["seconds_per_batch"])
            lines += ["", f"### Seconds per batch against {label}", "",
                      f"| {axis} | " + " | ".join(methods) + " | backprop / rate |",
                      "|---" * (len(methods) + 2) + "|"]
            for r in rows:
                s = r["seconds_per_batch"]
                lines.append(f"| {r[axis]} | " + " | ".join(f"{s[k]:.4f}" for k in methods)
                             + f" | {s['backprop'] / s['rate']:.2f} |")
        lines.append("")
    lines += [f"![seconds per batch against width]({png_path})", ""]
    if notes:
        lines += [notes.rstrip(), ""]
    return "\n".join(lines)


def write_report(json_path: str | Path, md_path: str | Path = "BENCHMARKS.md", png_path: str | Path | None = None,
                 notes_path: str | Path | None = None, command: str | None = None) -> tuple[Path, Path]:
    """Write the markdown report and the width plot from a benchmark JSON; returns their paths.

    ``notes_path``: an optional markdown file appended verbatim (the analysis of the numbers);
    ``command``: the command line to name in the report's first line."""
    json_path, md_path = Path(json_path), Path(md_path)
    try:
        result = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LocalSTDPError(f"benchmark JSON not found: {json_path}") from None
    except json.JSONDecodeError as exc:
        raise LocalSTDPError(f"{json_path}: not a benchmark JSON: {exc}") from None
    if not all(k in result for k in ("devices", "targets", "spec")):
        raise LocalSTDPError(f"{json_path}: not a benchmark JSON (no devices/targets/spec)")
    png_path = Path(png_path) if png_path else json_path.with_name(json_path.stem + "_width.png")
    plot_width(result, png_path)
    notes = Path(notes_path).read_text(encoding="utf-8") if notes_path else ""
    rel_png = os.path.relpath(png_path, md_path.parent)
    rel_json = os.path.relpath(json_path, md_path.parent)
    md_path.write_text(render_markdown(result, rel_json, rel_png, notes, command), encoding="utf-8")
    return md_path, png_path
