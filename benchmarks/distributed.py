"""Throughput of the local rule's training loop: 1 rank x 2 threads vs 2 ranks x 1 thread.

    .venv/bin/python benchmarks/distributed.py [--widths 784 2048 2048 2048 10] [--batch-size 32 256]
        [--batches 48] [--repeats 3] [--json OUT.json]

Each configuration runs in fresh worker processes started through torch's elastic launcher
(gloo on 127.0.0.1), times only the training loop (no evaluation, no files; the pipeline is timed
until it has drained), and the configurations are interleaved ``--repeats`` times so that a
change in machine load hits all of them alike; the table shows medians (and min-max). Run it at
normal priority on an otherwise idle machine: it measures how two CPU cores are best used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics

import torch

from localstdp import parallel


def _gemm_rate(start_at: float, seconds: float, n: int) -> float:
    """GFLOP/s of one thread doing (32 x n) @ (n x n) GEMMs for ``seconds`` from ``start_at``."""
    import time

    torch.set_num_threads(1)
    a, w = torch.rand(32, n), torch.rand(n, n)
    a @ w.T
    while time.time() < start_at:
        time.sleep(0.001)
    t0, k = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        a @ w.T
        k += 1
    return k * 2 * 32 * n * n / (time.perf_counter() - t0) / 1e9


def gemm_capacity(procs: int, n: int = 2048, seconds: float = 3.0) -> list[float]:
    """GFLOP/s of each of ``procs`` single-thread processes running the GEMM at the same time:
    how much compute the machine gives this benchmark in parallel right now."""
    import concurrent.futures
    import multiprocessing
    import time

    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(procs, mp_context=ctx) as pool:
        start_at = time.time() + 8.0  # after every worker has imported torch
        return list(pool.map(_gemm_rate, [start_at] * procs, [seconds] * procs, [n] * procs))


# (mode, ranks, threads per rank); 1 x 1 is the reference for what one core does alone
CONFIGS = [("single", 1, 2), ("pipeline", 2, 1), ("data", 2, 1), ("single", 1, 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[784, 2048, 2048, 2048, 10])
    ap.add_argument("--batch-size", type=int, nargs="+", default=[32, 256])
    ap.add_argument("--batches", type=int, default=48, help="timed batches per run")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one-thread", action="store_true", help="also time 1 rank x 1 thread")
    ap.add_argument("--json", help="also write the raw results here")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    one, two = gemm_capacity(1), gemm_capacity(2)
    print(f"# capacity: one 1-thread process {one[0]:.1f} GFLOP/s; two at once {two[0]:.1f} + {two[1]:.1f} "
          f"= {sum(two):.1f} GFLOP/s (32 x 2048 x 2048 GEMM)", flush=True)
    raw = []
    for bs in args.batch_size:
        for rep in range(args.repeats):
            for mode, ranks, threads in CONFIGS:
                if (mode, threads) == ("single", 1) and not args.one_thread:
                    continue
                r = parallel.benchmark(mode, ranks, threads, args.widths, batch_size=bs, n_batches=args.batches,
                                       warmup=args.warmup)
                r["repeat"] = rep
                raw.append(r)
                print(f"# bs {bs} rep {rep}: {mode:8s} {ranks}x{threads}: {r['examples_per_s']:9.1f} ex/s", flush=True)
    print(f"\nwidths {'-'.join(map(str, args.widths))}, rate mode, {args.batches} batches per run, "
          f"median of {args.repeats} interleaved repeats; torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, 1-min load average at start {load_before:.2f}, at end {os.getloadavg()[0]:.2f}\n")
    print(f"Machine capacity during the run (32 x 2048 x 2048 fp32 GEMM, 1 thread per process): one process "
          f"{one[0]:.1f} GFLOP/s, two processes at once {sum(two):.1f} GFLOP/s in total.\n")
    print("| batch | configuration | examples/s (median) | min - max | vs 1x2 |")
    print("|---|---|---|---|---|")
    for bs in args.batch_size:
        base = None
        for mode, _ranks, threads in CONFIGS:
            v = [r["examples_per_s"] for r in raw
                 if r["batch_size"] == bs and r["mode"] == mode and r["threads_per_rank"] == threads]
            if not v:
                continue
            med = statistics.median(v)
            base = base or med
            label = {"single": f"1 rank x {threads} thread{'s' * (threads > 1)}",
                     "pipeline": "pipeline, 2 ranks x 1 thread", "data": "data parallel, 2 ranks x 1 thread"}[mode]
            print(f"| {bs} | {label} | {med:.0f} | {min(v):.0f} - {max(v):.0f} | {med / base:.2f}x |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"capacity_gflops": {"one": one, "two": two}, "runs": raw}, fh, indent=2)


if __name__ == "__main__":
    main()
