"""Throughput and efficiency of the local rule against backprop, measured side by side in ONE process.

Per layer, the rate mode needs one forward GEMM and one weight-update GEMM; backprop also needs
the GEMM that carries the error to the layer below (not for the first layer: the input needs no
gradient). For 784-1024-1024-10 that bounds the speed-up of the rate mode at
flops(backprop) / flops(rate) ~= 1.28. The benchmark measures, with warm-up, interleaved repeats
(batch by batch, every method in turn) and medians:

- ``rate_vs_backprop_speedup``: backprop epoch time / rate epoch time (median of the per-repeat
  ratios; backprop is plain SGD, no momentum, cross-entropy, torch.autograd);
- ``timing_vs_rate_cost``: timing epoch time / rate epoch time (``timing_backend``, default the
  gather, with ``time_bins`` K);
- ``gemm_efficiency``: achieved FLOP/s of rate-mode training / FLOP/s of the same GEMMs (same
  shapes, same order, preallocated outputs) timed in the same repeats;
- peak memory of one training step of each method; time per batch against width and batch size;
- the cost and the error of the timing mode against K, for the gather and the binned backend;
- ``--configs`` (configs.py): one epoch of every shipped config, the local rule against backprop on
  the config's own network and data; ``--rules``: the peer local rules beside ours and backprop.

Data are synthetic and MNIST-shaped (784 features in [0, 1], 10 classes): the cost does not
depend on the values. Library code: it returns a dict and writes files; the CLI prints. The
measuring machinery is in core.py, the markdown report in report.py, the workload (BenchSpec,
FLOPs, learners) in workload.py.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, replace

import torch

from ..errors import LocalSTDPError
from ..model import build_model
from ..rules import RuleParams
from ..rules.timing import binned_error_bound, timing_binned, timing_direct, timing_gather
from .core import interleaved, load_average, machine_info, op_breakdown, paired_ratio, peak_step_memory, stepper
from .workload import N_CLASSES, N_FEATURES, QUICK, BenchSpec, make_learner, method_flops, synthetic_batches

log = logging.getLogger(__name__)

TARGETS = {"rate_vs_backprop_speedup": (">=", 1.25), "gemm_efficiency": (">=", 0.90), "timing_vs_rate_cost": ("<=", 4.0)}
CONFIG_TARGET = (">=", 1.25)  # every shipped config: local rule / backprop throughput, at every thread count
METHODS = ("rate", "backprop", "timing")


# ------------------------------------------------------------------------------------------------
# pieces
# ------------------------------------------------------------------------------------------------


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


def timing_error(widths: list[int], spec: BenchSpec, time_bins: int, n: int = 16) -> dict[str, float]:
    """Binned and gather vs direct timing update of the first hidden layer on the benchmark's own
    activities (``n`` examples): relative Frobenius errors, and the stated per-kernel bound eps(K)."""
    model = build_model(widths[0], widths[1:-1], widths[-1], "sigmoid", spec.seed)
    x, _ = synthetic_batches(1, n, widths[0], torch.device("cpu"), spec.seed + 1)[0]
    with torch.no_grad():
        acts = model.activities(x)
    pre, post = acts[0], acts[1]
    g = torch.Generator().manual_seed(spec.seed)
    e = torch.where(torch.rand(post.shape, generator=g) < 0.1, 0.9, 0.1) - post  # association-like targets
    p = RuleParams(mode="timing", time_bins=time_bins)
    direct = timing_direct(pre, post, e, pre, p)
    rel = {name: float((f(pre, post, e, pre, p) - direct).norm() / direct.norm())
           for name, f in (("binned", timing_binned), ("gather", timing_gather))}
    return {"rel_error": rel["binned"], "rel_error_gather": rel["gather"], "kernel_error_bound": binned_error_bound(p)}


# ------------------------------------------------------------------------------------------------
# the benchmark
# ------------------------------------------------------------------------------------------------


def headline(spec: BenchSpec, device: torch.device) -> dict:
    """Epoch times of rate, backprop, timing and the bare GEMMs, interleaved; ratios; memory."""
    widths = [N_FEATURES, *spec.hidden, N_CLASSES]
    batches = synthetic_batches(spec.epoch_batches, spec.batch, N_FEATURES, device, spec.seed)
    learners = {m: make_learner(m, widths, spec, device) for m in METHODS}
    gemm = GemmReference(widths, spec.batch, device, spec.seed)
    fns = {m: stepper(lrn.step, batches) for m, lrn in learners.items()}
    fns["gemm"] = lambda i: gemm.step()
    log.info("bench %s: headline %s, batch %d, %d batches x %d repeats", device, widths, spec.batch,
             spec.epoch_batches, spec.repeats)
    times = interleaved(fns, spec.epoch_batches, spec.repeats, spec.warmup, device)
    med = {k: statistics.median(v) for k, v in times.items()}
    flops = {m: method_flops(m, widths, spec.batch, spec.time_bins, spec.timing_backend) * spec.epoch_batches
             for m in METHODS}
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
        "timing_backend": spec.timing_backend,
        "epoch_seconds": times,
        "epoch_seconds_median": med,
        "epoch_seconds_min": {k: min(v) for k, v in times.items()},
        "gflops_per_second": {k: flops[k] / med[k] / 1e9 for k in med},
        "rate_vs_backprop_speedup": paired_ratio(times["backprop"], times["rate"]),
        "timing_vs_rate_cost": paired_ratio(times["timing"], times["rate"]),
        "gemm_efficiency": paired_ratio(times["gemm"], times["rate"]),
        "flop_bound_speedup": method_flops("backprop", widths, 1) / method_flops("rate", widths, 1),
        "peak_step_memory_bytes": memory,
        "op_breakdown": ops,
        "parameter_bytes": sum(p.numel() * p.element_size() for p in learners["rate"].model.parameters()),
    }


def _per_batch(methods, widths: list[int], batch: int, spec: BenchSpec, device: torch.device) -> dict[str, float]:
    """Median seconds per batch of each method at one shape (interleaved repeats)."""
    batches = synthetic_batches(spec.scale_steps, batch, widths[0], device, spec.seed)
    fns = {m: stepper(make_learner(m, widths, spec, device).step, batches) for m in methods}
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
    """Cost (timing step / rate step, interleaved) and error of the timing mode for each K: one row
    per K with the headline backend's numbers at the top level and every backend of
    ``spec.bins_backends`` under "backends"."""
    widths = [N_FEATURES, *spec.hidden, N_CLASSES]
    batches = synthetic_batches(spec.bins_steps, spec.batch, N_FEATURES, device, spec.seed)
    fns = {"rate": stepper(make_learner("rate", widths, spec, device).step, batches)}
    backends = list(dict.fromkeys((spec.timing_backend, *spec.bins_backends)))
    for K in spec.bins_sweep:
        for b in backends:
            fns[f"{b}{K}"] = stepper(make_learner("timing", widths, spec, device, K, b).step, batches)
    log.info("bench %s: time_bins %s, backends %s", device, list(spec.bins_sweep), backends)
    times = interleaved(fns, spec.bins_steps, spec.scale_repeats, 1, device)
    rows = []
    for K in spec.bins_sweep:
        err = timing_error(widths, spec, K)
        by = {b: {"timing_vs_rate_cost": paired_ratio(times[f"{b}{K}"], times["rate"]),
                  "seconds_per_batch": statistics.median(times[f"{b}{K}"]) / spec.bins_steps,
                  "rel_error": err["rel_error_gather" if b == "gather" else "rel_error"]} for b in backends}
        rows.append({"time_bins": K, "backend": spec.timing_backend, **by[spec.timing_backend],
                     "kernel_error_bound": err["kernel_error_bound"], "backends": by})
    return rows


def run_device(spec: BenchSpec, device: torch.device, configs=None, rules: list[str] | None = None) -> dict:
    """Everything measured on one device at one thread count: headline, K sweep, scaling, and when
    asked the shipped configs (``configs``: a configs.ConfigSpec) and the peer ``rules``."""
    t0 = time.perf_counter()
    res = {"machine": machine_info(device), "headline": headline(spec, device)}
    res["time_bins_sweep"] = bins_sweep(spec, device)
    res["scaling"] = scaling(spec, device)
    if rules:
        from .configs import bench_rules

        res["rules"] = bench_rules(rules, spec, device)
    if configs is not None:
        from .configs import bench_configs, bench_fields

        res["configs"] = bench_configs(configs, device)
        res["receptive_fields"] = bench_fields(configs, device)
    res["machine"]["load_average_end"] = load_average()
    res["wall_seconds"] = time.perf_counter() - t0
    return res


def run_bench(quick: bool = False, device: str = "auto", spec: BenchSpec | None = None,
              threads: list[int] | None = None, configs=None, rules: list[str] | None = None, **overrides) -> dict:
    """Run the benchmark; ``device``: "cpu", "cuda" or "auto" (CPU, plus CUDA when present).

    ``threads``: CPU thread counts to measure in turn (default: torch's current setting); each
    gets its own entry, "cpu" for the first and "cpu-<n>t" for the others. ``configs``: a
    configs.ConfigSpec (True: one epoch of every shipped config, or a few batches when
    ``quick``); ``rules``: peer rules to time beside ours and backprop. Returns the JSON-ready
    result; the headline keys and ``configs`` (speedup, local_s, backprop_s, peak_mib per config)
    at the top level come from the first entry measured."""
    spec = spec or (QUICK if quick else BenchSpec())
    if overrides:
        spec = replace(spec, **overrides)
    if configs is True:
        from .configs import QUICK_CONFIGS, ConfigSpec

        configs = QUICK_CONFIGS if quick else ConfigSpec()
    if device not in ("auto", "cpu", "cuda"):
        raise LocalSTDPError(f"unknown device {device!r}; expected auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise LocalSTDPError("--device cuda: no CUDA device is available")
    if threads is not None and (not threads or any(n < 1 for n in threads)):
        raise LocalSTDPError(f"threads = {threads!r}: expected positive thread counts")
    if configs is not None or rules:
        from .configs import check_names

        check_names(configs, rules)
    runs: list[tuple[str, str, int | None]] = []
    if device in ("auto", "cpu"):
        for i, n in enumerate(threads or [None]):
            runs.append(("cpu" if i == 0 else f"cpu-{n}t", "cpu", n))
    if device in ("auto", "cuda"):
        runs.append(("cuda", "cuda", None))
    result: dict = {"quick": quick, "spec": asdict(spec), "targets": {k: list(v) for k, v in TARGETS.items()},
                    "devices": {}}
    if configs is not None:
        result["config_spec"] = asdict(configs)
        result["config_target"] = list(CONFIG_TARGET)
    saved = torch.get_num_threads()
    try:
        for key, dev, n in runs:
            if dev == "cuda" and not torch.cuda.is_available():
                result["devices"][key] = {"skipped": "no CUDA device is available"}
                continue
            if n is not None:
                torch.set_num_threads(n)
            result["devices"][key] = run_device(spec, torch.device(dev), configs, rules)
            torch.set_num_threads(saved)
    finally:
        torch.set_num_threads(saved)
    first = result["devices"][runs[0][0]]
    for key in TARGETS:
        result[key] = first["headline"][key]
    result["targets_met"] = {k: (result[k] >= v if op == ">=" else result[k] <= v) for k, (op, v) in TARGETS.items()}
    if configs is not None:
        from .configs import summary

        result["configs"] = summary(first["configs"])
        low = CONFIG_TARGET[1]
        result["configs_target_met"] = {
            name: all(res["configs"][name]["speedup"] >= low for res in result["devices"].values()
                      if "configs" in res and "speedup" in res["configs"][name])
            for name, r in result["configs"].items() if "speedup" in r}
    return result
