"""The report of ``localstdp bench --parallel`` (:mod:`localstdp.bench.parallel`): the summary of the
speed-ups the issue's targets name, the markdown section of BENCHMARKS.md and the speed-up plot."""

from __future__ import annotations

import statistics

from .parallel_spec import SCHEDULES
from .scaling import measured_cases


def _med(v: list[float]) -> float:
    return statistics.median(v)


def summarise(result: dict) -> list[dict]:
    """Per (ranks, net, batch): the speed-ups the issue's targets name."""
    rows = []
    for grp in result["groups"]:
        n = grp["world"]
        if n < 2:
            continue
        for case in measured_cases(grp):
            eps, prof = case["examples_per_s"], case["profile"]
            local1, bp1 = _med(eps["local 1x1"]), _med(eps["backprop 1x1"])
            pipe = _med(eps[f"local pipeline {n}x1"])
            c = prof["local_unit_s"]
            bound = sum(c) / max(sum(c[lo:hi]) for lo, hi in prof["split"])
            sched = {}
            for name, v in eps.items():
                w = name.split()
                if w[0] == "backprop" and w[1] in SCHEDULES:
                    m = _med(v)
                    if m > sched.get(w[1], (0.0, 0))[0]:
                        sched[w[1]] = (m, int(w[3][1:]))
            best = max(sched.items(), key=lambda kv: kv[1][0]) if sched else None
            measured = prof.get("split_measured") or prof["split"]
            rows.append({
                "ranks": n, "net": case["net"], "batch": case["batch"], "split": prof["split"],
                "split_measured": measured,
                "measured_split_bound": sum(c) / max(sum(c[lo:hi]) for lo, hi in measured),
                "local_1x1": local1, "local_1xN": _med(eps.get(f"local 1x{n}", [float("nan")])),
                "backprop_1x1": bp1, "backprop_1xN": _med(eps.get(f"backprop 1x{n}", [float("nan")])),
                "pipeline": pipe, "pipeline_speedup": pipe / local1, "split_bound": bound,
                "pipeline_of_bound": pipe / local1 / bound,
                "local_data_speedup": max(_med(eps[f"local data-updates {n}x1"]),
                                          _med(eps[f"local data-activities {n}x1"])) / local1,
                "local_data_updates_speedup": _med(eps[f"local data-updates {n}x1"]) / local1,
                "local_data_activities_speedup": _med(eps[f"local data-activities {n}x1"]) / local1,
                "ddp_speedup": _med(eps[f"backprop ddp {n}x1"]) / bp1,
                "schedules": {k: {"examples_per_s": v[0], "microbatches": v[1], "speedup": v[0] / bp1}
                              for k, v in sched.items()},
                "best_schedule": best[0] if best else None,
                "pipeline_over_best_backprop_pipeline": pipe / best[1][0] if best else None,
            })
    return rows


def render_markdown(result: dict, command: str) -> str:
    rows = summarise(result)
    model = result["model"]
    lines = [f"Measured by `{command}` ({result['wall_s'] / 60:.1f} min; {result['cpus']} CPUs, "
             f"{result['machine'].get('cpu')}, torch {result['torch']}; 1-min load average "
             f"{result['load_average']['start'][0]:.2f} at the start, {result['load_average']['end'][0]:.2f} at the end). "
             f"Examples per second of the training loop (synthetic MNIST-shaped data, subnormals flushed in every arm), "
             f"medians of {result['spec']['repeats']} interleaved repeats of {result['spec']['timed']} timed batches "
             f"each after {result['spec']['warmup']} warm-up batches; every rank one thread. Speed-ups are against one "
             "process with one thread of the SAME method (\"N machines of one core\"); `1 x N` is one process with N "
             "threads (\"one machine of N cores\"). The split bound is the local rule's total measured layer time "
             "over the slowest stage's.", ""]
    for name, about in result["nets"].items():
        lines.append(f"- `{name}`: {about}")
    for grp in result["groups"]:
        for case in grp["cases"]:
            if "skipped" in case:
                lines.append(f"- skipped on {grp['world']} ranks: `{case['net']}` batch {case['batch']} ({case['skipped']})")
    lines += ["", "| ranks | net | batch | split (units) | local pipeline | of split bound | local 1 x N | local data: updates / "
              "activities "
              "| backprop 1 x N | DDP | best backprop pipeline (m) | local pipeline / best backprop pipeline |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        best = r["best_schedule"]
        bs = f"{best} {r['schedules'][best]['speedup']:.2f}x (m {r['schedules'][best]['microbatches']})" if best else "-"
        ratio = f"{r['pipeline_over_best_backprop_pipeline']:.2f}x" if best else "-"
        lines.append(
            f"| {r['ranks']} | {r['net']} | {r['batch']} | {' / '.join(f'[{a}, {b})' for a, b in r['split'])} "
            f"| {r['pipeline_speedup']:.2f}x | {r['pipeline_of_bound']:.2f} (bound {r['split_bound']:.2f}x) "
            f"| {r['local_1xN'] / r['local_1x1']:.2f}x | {r['local_data_updates_speedup']:.2f}x / "
            f"{r['local_data_activities_speedup']:.2f}x "
            f"| {r['backprop_1xN'] / r['backprop_1x1']:.2f}x | {r['ddp_speedup']:.2f}x | {bs} | {ratio} |")
    for r in rows:
        if [list(x) for x in r["split_measured"]] != [list(x) for x in r["split"]]:
            lines.append(f"\n{r['net']} batch {r['batch']}, {r['ranks']} ranks: by measured layer times the split would be "
                         f"{' / '.join(f'[{a}, {b})' for a, b in r['split_measured'])} (bound "
                         f"{r['measured_split_bound']:.2f}x) instead of the operation count's (bound {r['split_bound']:.2f}x).")
    lines += ["", "Every arm (examples/s, median and min - max; the model's prediction and its relative error):", "",
              "| ranks | net | batch | arm | examples/s | min - max | model | error |", "|---|---|---|---|---|---|---|---|"]
    pred = {(a["world"], a["net"], a["batch"], a["arm"]): a for a in model["arms"]}
    for grp in result["groups"]:
        for case in measured_cases(grp):
            for name, v in case["examples_per_s"].items():
                a = pred[(grp["world"], case["net"], case["batch"], name)]
                p = "-" if a["predicted"] is None else f"{a['predicted']:.0f}"
                e = "-" if a["error"] is None else f"{a['error']:+.0%}"
                lines.append(f"| {grp['world']} | {case['net']} | {case['batch']} | {name} | {_med(v):.0f} "
                             f"| {min(v):.0f} - {max(v):.0f} | {p} | {e} |")
    for w, link in model["links"].items():
        if link["beta_Bps"] != float("inf"):
            lines.append(f"\nLink between two ranks of the {w}-rank group (gloo, loopback), fitted: alpha "
                         f"{link['alpha_s'] * 1e6:.0f} us, beta {link['beta_Bps'] / 1e9:.2f} GB/s.")
    if model["machines"]:
        lines += ["", f"Model: speed-up over one machine of one core, N machines of one core each over a "
                  f"{model['network']['gbit_s']} Gb/s, {model['network']['alpha_s'] * 1e6:.0f} us network, on a net "
                  "of N equal 2048-wide layers (one per machine) plus the output layer:", ""]
        for key, by_n in model["machines"].items():
            cols = list(next(iter(by_n.values())).keys())
            lines += [f"{key}:", "", "| N | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
            for n, vals in by_n.items():
                lines.append(f"| {n} | " + " | ".join("-" if vals.get(c) is None else f"{vals[c]:.2f}" for c in cols) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str) -> str:
    """Speed-up against ranks: measured points and the model's lines (local pipeline, backprop's
    best schedule and its zero-bubble ideal, DDP, local data parallel, ideal)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = result["model"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for key, by_n in model["machines"].items():
        ns = [int(n) for n in by_n]
        style = {"ideal": ("k", ":"), "local pipeline": ("C0", "-"), "local data": ("C0", "--"),
                 "backprop ddp": ("C3", "--"), "backprop 1f1b (best m)": ("C3", "-"),
                 "backprop zero-bubble ideal (best m)": ("C3", "-.")}
        for col, (color, ls) in style.items():
            pts = [(n, by_n[str(n)].get(col)) for n in ns if by_n[str(n)].get(col) is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, ls=ls, label=f"model: {col} ({key})")
        break
    marks = {"pipeline_speedup": ("C0", "o", "measured: local pipeline"),
             "local_data_speedup": ("C0", "s", "measured: local data"),
             "ddp_speedup": ("C3", "s", "measured: backprop DDP")}
    for r in summarise(result):
        for k, (color, mk, label) in marks.items():
            ax.plot([r["ranks"]], [r[k]], color=color, marker=mk, ls="", alpha=0.7, label=label)
        if r["best_schedule"]:
            ax.plot([r["ranks"]], [r["schedules"][r["best_schedule"]]["speedup"]], color="C3", marker="o", ls="",
                    alpha=0.7, label="measured: backprop best pipeline")
    handles, labels = ax.get_legend_handles_labels()
    seen = {}
    for h, lab in zip(handles, labels):
        seen.setdefault(lab, h)
    ax.legend(seen.values(), seen.keys(), fontsize=7)
    ax.set_xlabel("ranks (one core each)")
    ax.set_ylabel("speed-up over one process, one thread")
    ax.set_title("Training throughput against ranks (measured on one machine; model over 10 Gb/s)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
