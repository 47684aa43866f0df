"""Tables and plots of a ``reproduce`` results dict: results.json, results.md and PNG figures.

Plots use matplotlib's Agg backend (no display needed). Every number printed comes from the
results dict (localstdp.evaluation.analysis computed the statistics); nothing here computes a new one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..checkpoint import atomic_write_text
from .analysis import OTHER_FRONTIERS, format_p, frontier_phrase
from .diagnostics_report import has_diagnostics, markdown_lines, plot_diagnostics
from .selection import selection_lines
from .stats import holm_text

ATTACK_ORDER = ("fgsm", "pgd", "autoattack", "targeted", "aa-standard", "square", "random_search", "transfer", "noise", "worst", "certified")
METHOD_COLORS = {"local": "tab:blue", "backprop": "tab:red", "backprop-wd": "tab:orange", "backprop-es": "tab:purple",
                 "backprop-mse": "tab:brown", "linear": "tab:green", "random-features": "tab:olive",
                 "local-timing": "tab:cyan", "backprop-at": "tab:pink", "backprop-trades": "tab:gray",
                 "local-at": "navy"}


def _cell(summary, task, method, metric, attack=None, eps=None):
    return next((s for s in summary if s["task"] == task and s["method"] == method and s["metric"] == metric
                 and s["attack"] == attack and s["eps"] == eps), None)


def _fmt(c, boot: bool = False) -> str:
    if c is None:
        return "-"
    s = f"{c['mean']:.3f} ± {c['std']:.3f}"
    ci = c.get("boot_ci95") if boot else None
    if ci is not None:
        s += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return s


def _diff(c) -> str:
    return f"{c['diff_mean']:+.3f} [{c['diff_ci95'][0]:+.3f}, {c['diff_ci95'][1]:+.3f}]"


def _settings(d: dict) -> str:
    if "a_hi" in d:  # the local rule
        s = f"eta {d['lr']:g}, targets {d['a_hi']:g}/{d['a_lo']:g}, {d['mode']} mode"
        return s + (f", weight decay {d['weight_decay']:g}" if d["weight_decay"] else "") + _robust(d)
    if "l2" in d:  # linear / random-features (rules/shallow.py): one L2 strength, no optimiser settings
        return f"L2 {d['l2']:g}, {d['solver']}" + _robust(d)
    s = f"{d['optimizer']} lr {d['lr']:g}"
    s += f", weight decay {d['weight_decay']:g}" if d["weight_decay"] else ""
    return s + (", early-stopped on validation" if d.get("early_stopped") else "") + _robust(d)


def _robust(d: dict) -> str:
    """The ``[robust]`` training of a method's settings (rules/robust.py), e.g. ", PGD adversarial training
    at eps 0.1 (7 steps)"; "" without."""
    r = d.get("robust")
    if not r:
        return ""
    s = f", input noise {r['input_noise']:g}" if r["input_noise"] else ""
    if r["adv_eps"]:
        what = f"TRADES beta {r['trades_beta']:g}" if r["trades_beta"] else "PGD adversarial training"
        s += f", {what} at eps {r['adv_eps']:g} ({r['adv_steps']} steps)"
    return s


def versions_line(settings: dict) -> list[str]:
    """The line naming the versions a run used, and a blank line; none for a results.json made before
    runs recorded them (settings.versions)."""
    v = settings.get("versions")
    if not v:
        return []
    return ["Versions: " + ", ".join(f"{name} {ver}" for name, ver in v.items() if ver) + ".", ""]


def markdown(results: dict) -> str:
    st, summary = results["settings"], results["summary"]
    tasks = list(results["checks"])
    methods = st["methods"]
    a = st["attacks"]
    lines = [
        "# Local association-STDP rule vs a panel of backprop baselines",
        "",
        f"Panel seeds {st['seeds']} (train.seed), frontier seeds {st['frontier_seeds']}. Methods: "
        + ", ".join(methods) + ". Every setting was chosen on the validation split (`localstdp tune`); per task:",
        "",
        "| task | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
        *[f"| {t} | " + " | ".join(_settings(st["tasks"][t]["methods"][m]) for m in methods) + " |" for t in tasks],
        "",
        *versions_line(st),
        "Mean ± sample std over seeds; [95% CI] from a paired bootstrap over seeds AND test examples "
        f"({st['n_boot']} replicates); p: bootstrap p-value, Holm-adjusted over every comparison of this run. "
        "Clean accuracy: \"equivalent\" only when a TOST puts the difference inside the task's margin and it is "
        "not significant. Robust accuracy: L-inf, inputs in [0, 1], untargeted, on the logits through the "
        f"ordinary forward (IBM ART): FGSM; PGD {a['pgd_steps']} steps x {a['pgd_restarts']} restarts x (CE, "
        "margin); AutoAttack (APGD-CE, APGD margin/DLR, Square or random search); Square / random search; "
        "transfer from every other panel model of the seed; random sign noise; worst = per-example minimum "
        "over all of them. certified = proven by interval / linear bounds (a lower bound no attack can undercut).",
        "",
        "## Clean test accuracy",
        "",
        "| task | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for t in tasks:
        lines.append(f"| {t} | " + " | ".join(_fmt(_cell(summary, t, m, "clean_accuracy"), True) for m in methods) + " |")
    for e in ("0.05", "0.1"):
        lines += ["", f"## Worst-case robust accuracy at eps {e} (certified below it)", "",
                  "| task | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for t in tasks:
            cells = []
            for m in methods:
                w, c = _cell(summary, t, m, "robust_accuracy", "worst", e), _cell(summary, t, m, "robust_accuracy",
                                                                                  "certified", e)
                cells.append(_fmt(w) + (f" (cert. {c['mean']:.3f})" if c else ""))
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += ["", "## Local rule − each baseline", "",
              "| task | baseline | metric | local | baseline | local − baseline [95% CI] | p (Holm) | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    for c in results["comparisons"]:
        metric = "clean" if c["attack"] is None else f"{c['attack']} @ {c['eps']}"
        lines.append(f"| {c['task']} | {c['baseline']} | {metric} | {c['local_mean']:.3f} | {c['baseline_mean']:.3f} | "
                     f"{_diff(c)} | {holm_text(c, st.get('n_boot', 2000))} | {c['verdict']} |")
    eps = [str(float(e)) for e in a["eps"]]
    lines += ["", "## Worst-case robust accuracy vs eps (mean ± std over seeds)", "",
              "| task | method | " + " | ".join(eps) + " |", "|---|---|" + "---|" * len(eps)]
    for t in tasks:
        for m in methods:
            vals = [_cell(summary, t, m, "robust_accuracy", "worst", e) for e in eps]
            lines.append(f"| {t} | {m} | " + " | ".join(_fmt(v) for v in vals) + " |")
    names = sorted({k for t in tasks for ch in results["checks"][t].values() for k in ch})
    lines += ["", "## Gradient-masking checks (pass only if every seed passes)", "",
              "| task | method | " + " | ".join(names) + " | zero-gradient fraction |",
              "|---|---|" + "---|" * (len(names) + 1)]
    for t in tasks:
        for m in methods:
            ch = results["checks"][t].get(m, {})
            z = _cell(summary, t, m, "zero_gradient_fraction")
            lines.append(f"| {t} | {m} | " + " | ".join({True: "pass", False: "FAIL"}.get(ch.get(k), "n/a")
                                                      for k in names) + f" | {z['mean']:.3f} |")
    lines += ["", "## Robustness at matched clean accuracy (worst case)", ""]
    if results["matched_comparisons"]:
        lines += [f"Where a seed's validation accuracies differ by more than {st['match_tol']}, the method with the "
                  "higher one is taken at the epoch of its full run whose validation accuracy is closest to the "
                  "other's (no transfer on either side); p: paired t-test over those seeds.", "",
                  "| task | baseline | eps | seeds | taken earlier | clean local / baseline | worst local | "
                  "worst baseline | p |", "|---|---|---|---|---|---|---|---|---|"]
        for c in results["matched_comparisons"]:
            lines.append(f"| {c['task']} | {c['baseline']} | {c['eps']} | {','.join(map(str, c['seeds']))} | "
                         f"{', '.join(c['stopped'])} | {c['local_clean_mean']:.3f} / {c['baseline_clean_mean']:.3f} | "
                         f"{c['local_mean']:.3f} | {c['baseline_mean']:.3f} | {format_p(c['p_value'])} |")
    else:
        lines.append("No seed had validation accuracies differing by more than the tolerance: not needed.")
    if results.get("frontier"):
        lines += ["", "## Robustness–accuracy frontier", "",
                  "Backprop's weight decay swept; the local rule at its own settings and along eta, epochs and "
                  "rule.weight_decay (one at a time); the linear and random-features baselines along their L2 "
                  "strength when they ran. Verdict for the local rule's own point: backprop points are of comparable "
                  "clean accuracy when their CIs overlap its CI or lie within 3 test examples of it; **below** if "
                  "one of those, or a more accurate one, is more robust beyond both seed CIs; else **not "
                  "comparable** if there is none; **above** if every one is less robust beyond both CIs; else "
                  "**on**.", ""]
        for t, fr in results["frontier"].items():
            es = list(fr["points"][0]["worst"])
            vs = [("backprop", fr["verdict"])] + list(fr.get("against", {}).items())
            lines += [f"### {t}: " + "; ".join(f"against {m}: " + ", ".join(f"eps {e}: **{v}**" for e, v in d.items())
                                             for m, d in vs if d), "",
                      "| point | clean | " + " | ".join(f"worst @ {e} | certified @ {e}" for e in es) + " |",
                      "|---|---|" + "---|---|" * len(es)]
            for p in fr["points"]:
                cells = [f"{_fmt(p['worst'][e])} | " + (f"{p['certified'][e]['mean']:.3f}" if e in p["certified"]
                                                        else "-") for e in es]
                lines.append(f"| {p['point']} | {_fmt(p['clean'])} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += selection_lines(results)  # none without validation attacks
    lines += markdown_lines(results)  # none for rows without diagnostics
    lines += ["", "## What this run shows (generated from the numbers above)", ""]
    for t in tasks:
        for s in results["claims"][t].get("sentences", []):
            lines.append(f"- {s}")
        failed = results["claims"][t].get("failed_checks")
        if failed:
            lines.append(f"- {t}: failed masking checks: {', '.join(failed)}")
    return "\n".join(lines) + "\n"


def readme_tables(results: dict) -> str:
    """The README's results tables: clean accuracy, and worst-case / certified accuracy at eps 0.1, per
    task and method (mean ± std over seeds), and the frontier verdicts."""
    st, summary = results["settings"], results["summary"]
    tasks, methods = list(results["checks"]), st["methods"]
    head = "| task | " + " | ".join(methods) + " |\n|---|" + "---|" * len(methods) + "\n"
    out = ["Clean test accuracy (mean ± std over seeds):\n\n" + head + "".join(
        f"| {t} | " + " | ".join(_fmt(_cell(summary, t, m, "clean_accuracy")) for m in methods) + " |\n"
        for t in tasks)]
    rows = []
    for t in tasks:
        cells = []
        for m in methods:
            w = _cell(summary, t, m, "robust_accuracy", "worst", "0.1")
            c = _cell(summary, t, m, "robust_accuracy", "certified", "0.1")
            cells.append(_fmt(w) + (f" / {c['mean']:.3f}" if c else ""))
        rows.append(f"| {t} | " + " | ".join(cells) + " |\n")
    out.append("Worst-case accuracy over every attack at eps 0.1 / certified accuracy at eps 0.1 (a proven lower "
               "bound):\n\n" + head + "".join(rows))
    if results.get("frontier"):
        out.append("Against backprop's weight-decay frontier, the local rule's own point lies: " + "; ".join(
            f"{t}: " + frontier_phrase(fr["verdict"])
            for t, fr in results["frontier"].items()) + ".\n")
    return "\n".join(out)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_robustness(results: dict, task: str, path) -> None:
    """Worst-case (solid) and certified (dotted) accuracy vs eps for every panel method."""
    plt = _plt()
    rows = [r for r in results["rows"] if r["task"] == task]
    eps = [float(e) for e in results["settings"]["attacks"]["eps"]]
    fig, ax = plt.subplots(figsize=(8, 5))
    for m in results["settings"]["methods"]:
        rs = [r for r in rows if r["method"] == m]
        if not rs:
            continue
        for attack, ls in (("worst", "-"), ("certified", ":")):
            if attack not in rs[0]["robust_accuracy"]:
                continue
            v = np.array([[r["attacked_clean_accuracy"]] + [r["robust_accuracy"][attack][str(e)] for e in eps]
                          for r in rs])
            mu, sd = v.mean(0), (v.std(0, ddof=1) if len(v) > 1 else np.zeros(v.shape[1]))
            x = [0.0] + eps
            ax.plot(x, mu, ls=ls, marker="o" if attack == "worst" else None, ms=3, color=METHOD_COLORS.get(m),
                    label=f"{m}: {'worst case' if attack == 'worst' else 'certified'}")
            if attack == "worst":
                ax.fill_between(x, mu - sd, mu + sd, color=METHOD_COLORS.get(m), alpha=0.12)
    ax.set_xscale("symlog", linthresh=0.05)
    ax.set_xlabel("L-inf budget eps (inputs in [0, 1])")
    ax.set_ylabel("accuracy on attacked test examples")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"{task}: robust accuracy vs eps (mean ± std over {len({r['seed'] for r in rows})} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(results: dict, task: str, path) -> None:
    """Validation (solid) and train (dashed) accuracy per epoch, mean over seeds."""
    plt = _plt()
    rows = [r for r in results["rows"] if r["task"] == task]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in results["settings"]["methods"]:
        rs = [r for r in rows if r["method"] == m and r.get("history")]
        if not rs:
            continue
        n = min(len(r["history"]) for r in rs)
        for key, ls in (("val_accuracy", "-"), ("train_accuracy", "--")):
            if rs[0]["history"][0].get(key) is None:
                continue
            v = np.array([[h[key] for h in r["history"][:n]] for r in rs])
            ax.plot(np.arange(1, n + 1), v.mean(0), ls=ls, color=METHOD_COLORS.get(m), label=f"{m}, {key.split('_')[0]}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"{task}: learning curves (validation split; mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_frontier(results: dict, task: str, path) -> None:
    """Clean vs worst-case accuracy, one panel per frontier eps; error bars: std over seeds."""
    plt = _plt()
    fr = results["frontier"][task]
    es = list(fr["points"][0]["worst"])
    fig, axes = plt.subplots(1, len(es), figsize=(6 * len(es), 4.8), squeeze=False)
    for ax, e in zip(axes[0], es):
        # backprop's frontier: each weight decay at its validation-best rate (frontier.backprop_lr); the other rates faint
        wd = [p for p in fr["points"] if p["method"] == "backprop" and p["knob"] == "backprop.weight_decay"]
        bp = sorted((p for p in wd if p.get("on_frontier", True)), key=lambda p: p["value"])
        off = [p for p in wd if not p.get("on_frontier", True)]
        if off:
            ax.scatter([p["clean"]["mean"] for p in off], [p["worst"][e]["mean"] for p in off], s=8, color="tab:red",
                       alpha=0.25, label="backprop, rates validation did not choose")
        ax.errorbar([p["clean"]["mean"] for p in bp], [p["worst"][e]["mean"] for p in bp],
                    xerr=[p["clean"]["std"] for p in bp], yerr=[p["worst"][e]["std"] for p in bp], color="tab:red",
                    marker="s", ms=4, capsize=2, label="backprop, weight decay sweep")
        for p in bp:
            ax.annotate(f"{p['value']:g}", (p["clean"]["mean"], p["worst"][e]["mean"]), fontsize=6,
                        textcoords="offset points", xytext=(3, 3), color="tab:red")
        knobs = {"base": ("*", 12), "train.lr": ("o", 5), "train.epochs": ("^", 5), "rule.weight_decay": ("D", 5),
                 "rule.targets": ("P", 6)}
        for knob, (mk, ms) in knobs.items():
            pts = [p for p in fr["points"] if p["method"] == "local" and p["knob"] == knob]
            if pts:
                ax.errorbar([p["clean"]["mean"] for p in pts], [p["worst"][e]["mean"] for p in pts],
                            xerr=[p["clean"]["std"] for p in pts], yerr=[p["worst"][e]["std"] for p in pts],
                            ls="none", marker=mk, ms=ms, color="tab:blue", capsize=2,
                            label="local rule" + ("" if knob == "base" else f", {knob} sweep"))
        ax.set_xlabel("clean test accuracy")
        ax.set_ylabel(f"worst-case accuracy at eps {e}")
        for m in OTHER_FRONTIERS:
            for knob, what, mk in (("backprop.weight_decay", "L2", "v"), ("robust.adv_eps", "training eps", "h"),
                                   ("robust.trades_beta", "beta", "8")):
                pts = sorted((p for p in fr["points"] if p["method"] == m and p["knob"] == knob), key=lambda p: p["value"])
                if pts:
                    ax.errorbar([p["clean"]["mean"] for p in pts], [p["worst"][e]["mean"] for p in pts],
                                xerr=[p["clean"]["std"] for p in pts], yerr=[p["worst"][e]["std"] for p in pts],
                                color=METHOD_COLORS[m], marker=mk, ms=4, capsize=2, label=f"{m}, {what} sweep")
        for m in ("local", "backprop", "linear"):  # input noise in training (frontier.input_noise)
            pts = sorted((p for p in fr["points"] if p["method"] == m and p["knob"] == "robust.input_noise"),
                         key=lambda p: p["value"])
            if pts:
                ax.errorbar([p["clean"]["mean"] for p in pts], [p["worst"][e]["mean"] for p in pts],
                            xerr=[p["clean"]["std"] for p in pts], yerr=[p["worst"][e]["std"] for p in pts],
                            color=METHOD_COLORS[m], marker="x", ms=6, ls=":", capsize=2, label=f"{m}, input noise sweep")
        ax.set_title(f"{task}, eps {e}: local point vs backprop's frontier: {fr['verdict'].get(e, '?')}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict, out) -> list[Path]:
    """Write results.json, results.md, robustness-/training-/frontier-<task>.png into ``out``, and
    diagnostics-<task>.png where the task's rows carry diagnostics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "results.md"]
    atomic_write_text(written[0], json.dumps(results, indent=1) + "\n")
    atomic_write_text(written[1], markdown(results))
    for task in results["checks"]:
        plots = [("robustness", plot_robustness), ("training", plot_training)]
        if task in results.get("frontier", {}):
            plots.append(("frontier", plot_frontier))
        for kind, fn in plots:
            p = out / f"{kind}-{task}.png"
            fn(results, task, p)
            written.append(p)
        if has_diagnostics(results, task):
            p = out / f"diagnostics-{task}.png"
            plot_diagnostics(results, task, p, METHOD_COLORS)
            written.append(p)
    return written
