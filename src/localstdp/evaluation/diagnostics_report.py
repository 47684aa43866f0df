"""The diagnostics of a ``reproduce`` run (rows' ``"diagnostics"``, localstdp.evaluation.diagnostics) as a
results.md table and a figure per task, diagnostics-<task>.png. Both appear only when rows carry them:
a results.json made before diagnostics renders as before. Numbers are read from the rows (mean over
seeds); nothing new is computed but means, std and the share of examples certified at each radius.
"""

from __future__ import annotations

import numpy as np


def _rows(results: dict, task: str, method: str) -> list[dict]:
    return [r["diagnostics"] for r in results["rows"] if r["task"] == task and r["method"] == method
            and "diagnostics" in r and "skipped" not in r["diagnostics"]]


def has_diagnostics(results: dict, task: str | None = None) -> bool:
    """Whether any row (of ``task``) carries diagnostics that were not skipped."""
    return any("diagnostics" in r and "skipped" not in r["diagnostics"] for r in results.get("rows", [])
               if task is None or r["task"] == task)


def _mean(values) -> float:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def layer_means(ds: list[dict]) -> dict:
    """Means over seeds: readout test accuracy per layer (input first), and per hidden layer the weight
    rank, activation rank and median |cos|; the median certified radius (None where skipped)."""
    names = list(ds[0]["readout"])
    out = {"readout": {n: _mean(d["readout"][n]["test_accuracy"] for d in ds) for n in names}}
    for key in ("weight_rank", "activation_rank", "median_abs_cos"):
        out[key] = {ly["name"]: _mean(d["layers"][i][key] for d in ds) for i, ly in enumerate(ds[0]["layers"])}
    rad = [d["certified_radius"] for d in ds if "skipped" not in d["certified_radius"]]
    out["radius"] = _mean(r["quantiles"]["0.5"] for r in rad) if rad else None
    out["radius_q"] = ((_mean(r["quantiles"]["0.25"] for r in rad), _mean(r["quantiles"]["0.75"] for r in rad))
                       if rad else None)
    return out


def markdown_lines(results: dict) -> list[str]:
    """The results.md section: per task a table of mean-over-seeds diagnostics; [] without any."""
    if not has_diagnostics(results):
        return []
    lines = ["", "## What the models learned (diagnostics, mean over seeds)", "",
             "Linear readout: test accuracy of logistic regression (C chosen on validation) of the input and of each "
             "hidden layer's activity. Effective rank: participation ratio (sum s^2)^2 / sum s^4 of the singular "
             "values of the layer's weights (of its centred activity on the attacked examples in brackets). "
             "|cos|: median |cosine| between the layer's units. Certified radius: per attacked example the "
             "largest eps proven by the bounds (bisection, tolerance 1/256), median [quartiles].", ""]
    for t in dict.fromkeys(r["task"] for r in results["rows"]):
        if not has_diagnostics(results, t):
            continue
        lines += [f"### {t}", "", "| method | readout accuracy | effective rank | median \\|cos\\| | certified radius |",
                  "|---|---|---|---|---|"]
        for m in results["settings"]["methods"]:
            ds = _rows(results, t, m)
            if not ds:
                continue
            s = layer_means(ds)
            ro = ", ".join(f"{n} {v:.3f}" for n, v in s["readout"].items())
            rk = ", ".join(f"{n} {v:.1f} ({s['activation_rank'][n]:.1f})" for n, v in s["weight_rank"].items()) or "-"
            cs = ", ".join(f"{n} {v:.2f}" for n, v in s["median_abs_cos"].items()) or "-"
            rad = "-" if s["radius"] is None else f"{s['radius']:.3f} [{s['radius_q'][0]:.3f}, {s['radius_q'][1]:.3f}]"
            lines.append(f"| {m} | {ro} | {rk} | {cs} | {rad} |")
        lines.append("")
    return lines


def plot_diagnostics(results: dict, task: str, path, colors: dict | None = None) -> None:
    """Three panels: linear-readout test accuracy by layer (input, h1, ...), effective rank by layer
    (weights solid, activity dashed), and the share of attacked examples certified at radius >= eps;
    mean over seeds, error bars: std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    colors = colors or {}
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(16, 4.8))
    for m in results["settings"]["methods"]:
        ds = _rows(results, task, m)
        if not ds:
            continue
        c = colors.get(m)
        names = list(ds[0]["readout"])
        acc = np.array([[d["readout"][n]["test_accuracy"] for n in names] for d in ds])
        a1.errorbar(range(len(names)), acc.mean(0), yerr=acc.std(0), marker="o", ms=4, capsize=2, color=c, label=m)
        hid = [ly["name"] for ly in ds[0]["layers"]]
        for key, ls in (("weight_rank", "-"), ("activation_rank", "--")):
            v = np.array([[ly[key] for ly in d["layers"]] for d in ds], dtype=float)
            if v.size:
                a2.errorbar(np.arange(1, len(hid) + 1), v.mean(0), yerr=v.std(0), ls=ls, marker="o", ms=4, capsize=2,
                            color=c, label=f"{m}, {'weights' if key == 'weight_rank' else 'activity'}")
        rad = [d["certified_radius"] for d in ds if "skipped" not in d["certified_radius"]]
        if rad:
            r = np.concatenate([np.asarray(x["per_example"]) for x in rad])
            grid = np.linspace(0, rad[0]["max"], 129)[1:]
            a3.plot(grid, [(r >= e).mean() for e in grid], color=c, label=m)
        a1.set_xticks(range(len(names)), names)
        a2.set_xticks(np.arange(1, len(hid) + 1), hid)
    a1.set_ylabel("linear readout, test accuracy")
    a1.set_title("what a linear readout of each layer knows")
    a2.set_ylabel("effective rank (participation ratio)")
    a2.set_yscale("log")
    a2.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    a2.yaxis.set_major_formatter(ScalarFormatter())
    a2.yaxis.set_minor_formatter(NullFormatter())
    a2.set_title("effective rank by hidden layer")
    a3.set_xlabel("eps (L-inf)")
    a3.set_ylabel("share of attacked examples certified at eps")
    a3.set_title("certified radius (bisection, tolerance 1/256)")
    for ax in (a1, a2, a3):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    n = len({r["seed"] for r in results["rows"] if r["task"] == task})
    fig.suptitle(f"{task}: what the models learned (mean ± std over {n} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
