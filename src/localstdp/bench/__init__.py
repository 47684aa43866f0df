"""Speed and memory of the local rule against backprop, measured side by side in one process.

- :mod:`~localstdp.bench.workload`: the synthetic workload, :class:`BenchSpec`, FLOPs and learners;
- :mod:`~localstdp.bench.core`: the measuring machinery (interleaved timing, peak memory, op breakdown);
- :mod:`~localstdp.bench.run`: the headline, the time-bins sweep, scaling, and :func:`run_bench`;
- :mod:`~localstdp.bench.configs`: every shipped config and the peer rules, timed (``--configs``, ``--rules``);
- :mod:`~localstdp.bench.report`: BENCHMARKS.md and the width plot from a benchmark JSON.

``localstdp bench`` (:mod:`localstdp.cli.bench`) parses and prints; the numbers are BENCHMARKS.md.
"""

from __future__ import annotations

from .configs import CONFIG_DIR, QUICK_CONFIGS, ConfigSpec, arms_for, shipped_configs
from .core import interleaved, load_average, machine_info, op_breakdown, paired_ratio, peak_step_memory, write_json
from .report import plot_width, render_markdown, write_report
from .run import CONFIG_TARGET, TARGETS, run_bench, run_device
from .workload import (
    N_CLASSES,
    N_FEATURES,
    QUICK,
    BenchSpec,
    layer_flops,
    make_learner,
    method_flops,
    synthetic_batches,
)

__all__ = [
    "CONFIG_DIR", "CONFIG_TARGET", "N_CLASSES", "N_FEATURES", "QUICK", "QUICK_CONFIGS", "TARGETS", "BenchSpec",
    "ConfigSpec", "arms_for", "interleaved", "layer_flops", "load_average", "machine_info", "make_learner",
    "method_flops", "op_breakdown", "paired_ratio", "peak_step_memory", "plot_width", "render_markdown",
    "run_bench", "run_device", "shipped_configs", "synthetic_batches", "write_json", "write_report",
]
