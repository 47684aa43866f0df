"""Tables and plots of a ``reproduce`` results dict: results.json, results.md and PNG figures.

Plots use matplotlib's Agg backend (no display needed). Every number printed comes from the
results dict; nothing here computes a new statistic except formatting.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .checkpoint import atomic_write_text
from .experiments import HEADLINE_EPS, METHODS
from .robustness import CHECKS, eps_key

ATTACK_ORDER = ("fgsm", "pgd", "square", "random_search", "transfer", "noise", "worst")
ATTACK_LABELS = {"fgsm": "FGSM", "pgd": "PGD (CE + margin)", "square": "Square (gradient-free)",
                 "random_search": "random search (gradient-free)", "transfer": "transfer (from other method)",
                 "noise": "random sign noise", "worst": "worst case per example"}
METHOD_LABELS = {"local": "local rule", "backprop": "backprop"}
METHOD_COLORS = {"local": "tab:blue", "backprop": "tab:red"}
MARKERS = ("o", "x", "s", "^", "v", "D")


def _cell(summary: list[dict], task: str, method: str, metric: str, attack=None, eps=None) -> dict | None:
    return next((s for s in summary if s["task"] == task and s["method"] == method and s["metric"] == metric
                 and s["attack"] == attack and s["eps"] == eps), None)


def _fmt(c: dict | None, ci: bool = True) -> str:
    if c is None:
        return "-"
    s = f"{c['mean']:.3f} ± {c['std']:.3f}"
    if ci and c["ci95"] is not None:
        s += f" [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]"
    return s


def _p(p) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def _diff(c: dict) -> str:
    s = f"{c['diff_mean']:+.3f}"
    if c["diff_ci95"] is not None:
        s += f" [{c['diff_ci95'][0]:+.3f}, {c['diff_ci95'][1]:+.3f}]"
    return s


def markdown(results: dict) -> str:
    """The tables a paper would print: accuracy, robustness, checks, matched accuracy, verdicts."""
    st, summary = results["settings"], results["summary"]
    tasks = list(results["checks"].keys())
    eps = [eps_key(e) for e in st["attacks"]["eps"]]
    head = eps_key(HEADLINE_EPS)
    n_att = {t: next(r["n_attacked"] for r in results["rows"] if r["task"] == t) for t in tasks}
    a = st["attacks"]
    lines = [
        "# Local association-STDP rule vs backprop: accuracy and adversarial robustness",
        "",
        (f"Seeds {st['seeds']} (train.seed) per task and method; mean ± sample std [95% t CI] over seeds; "
         "p: two-sided paired t-test over seeds (local vs backprop, n/a when every difference is identical)."),
        "Attacked test examples per task: " + ", ".join(f"{t} {n}" for t, n in n_att.items()) +
        f". L-inf, inputs in [0, 1], untargeted, on the logits with torch.autograd through the ordinary forward "
        f"(IBM ART). FGSM (CE); PGD {a['pgd_steps']} steps, step 2.5·eps/{a['pgd_steps']}, random start, "
        f"{a['pgd_restarts']} restarts, CE and margin loss; Square {a['square_queries']} queries (images); "
        f"random search {a['search_queries']} vertices (tabular); transfer = PGD examples of the other method's "
        "model of the same seed; worst = per-example minimum over all attacks.",
        "",
        "## Claim 1: clean test accuracy",
        "",
        "| task | local rule | backprop | local − backprop [95% CI] | p | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for t in tasks:
        c = next(x for x in results["comparisons"] if x["task"] == t and x["metric"] == "clean_accuracy")
        lines.append(f"| {t} | {_fmt(_cell(summary, t, 'local', 'clean_accuracy'))} | "
                     f"{_fmt(_cell(summary, t, 'backprop', 'clean_accuracy'))} | {_diff(c)} | {_p(c['p_value'])} | "
                     f"{results['claims'][t]['accuracy']} |")
    lines += ["", f"## Claim 2: robust accuracy at eps = {head}", "",
              "| task | attack | local rule | backprop | local − backprop [95% CI] | p |", "|---|---|---|---|---|---|"]
    for t in tasks:
        for c in results["comparisons"]:
            if c["task"] != t or c["metric"] != "robust_accuracy":
                continue
            at = c["attack"]
            lines.append(f"| {t} | {at} | {_fmt(_cell(summary, t, 'local', 'robust_accuracy', at, head), False)} | "
                         f"{_fmt(_cell(summary, t, 'backprop', 'robust_accuracy', at, head), False)} | {_diff(c)} | "
                         f"{_p(c['p_value'])} |")
    lines += ["", "## Worst-case robust accuracy vs eps (mean ± std over seeds)", "",
              "| task | method | " + " | ".join(eps) + " |", "|---|---|" + "---|" * len(eps)]
    for t in tasks:
        for m in METHODS:
            vals = [_cell(summary, t, m, "robust_accuracy", "worst", e) for e in eps]
            lines.append(f"| {t} | {m} | " + " | ".join(f"{v['mean']:.3f} ± {v['std']:.3f}" if v else "-"
                                                      for v in vals) + " |")
    lines += ["", "## Gradient-masking checks (pass only if every seed passes)", "",
              "| task | method | " + " | ".join(CHECKS) + " | zero-gradient fraction |",
              "|---|---|" + "---|" * (len(CHECKS) + 1)]
    for t in tasks:
        for m in METHODS:
            ch = results["checks"][t][m]
            z = _cell(summary, t, m, "zero_gradient_fraction")
            lines.append(f"| {t} | {m} | " + " | ".join({True: "pass", False: "FAIL"}.get(ch.get(k), "n/a")
                                                      for k in CHECKS) + f" | {z['mean']:.3f} |")
    lines += ["", f"## Robustness at matched clean accuracy (worst case, eps = {head})", ""]
    if results["matched_comparisons"]:
        lines += [("When a seed's clean accuracies differ by more than "
                   f"{st['match_tol']}, the more accurate method is retrained with fewer epochs (the epoch whose "
                   "test accuracy is closest to the other's) and attacked again (no transfer on either side)."), "",
                  ("| task | seeds | early-stopped | clean local / backprop | worst local | worst backprop | "
                   "local − backprop [95% CI] | p |"), "|---|---|---|---|---|---|---|---|"]
        for c in results["matched_comparisons"]:
            lines.append(f"| {c['task']} | {','.join(map(str, c['seeds']))} | {', '.join(c['stopped'])} | "
                         f"{c['local_clean_mean']:.3f} / {c['backprop_clean_mean']:.3f} | {c['local_mean']:.3f} | "
                         f"{c['backprop_mean']:.3f} | {_diff(c)} | {_p(c['p_value'])} |")
    else:
        lines.append(f"No seed had clean accuracies differing by more than {st['match_tol']}: not needed.")
    lines += ["", "## Verdicts (computed from the numbers above)", "",
              "| task | accuracy | robustness, FGSM | robustness, worst case | robustness, matched | failed checks |",
              "|---|---|---|---|---|---|"]
    for t in tasks:
        v = results["claims"][t]
        lines.append(f"| {t} | {v['accuracy']} | {v['robustness_fgsm']} | {v['robustness_worst']} | "
                     f"{v['robustness_matched']} | {', '.join(v['failed_checks']) or 'none'} |")
    lines += ["", ("A robustness advantage counts only if it is significant (p < 0.05) and every masking check "
                   "passes for both methods of the task; otherwise it is reported as \"not established\"."), ""]
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_robustness(results: dict, task: str, path: str | Path) -> None:
    """Accuracy vs eps: one panel per method (a line per attack) and one comparing the worst case."""
    plt = _plt()
    rows = [r for r in results["rows"] if r["task"] == task]
    eps = [float(e) for e in results["settings"]["attacks"]["eps"]]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), sharey=True)
    cmap = plt.get_cmap("tab10")

    def curve(m, attack):
        rs = [r for r in rows if r["method"] == m]
        clean = [r["attacked_clean_accuracy"] for r in rs]
        vals = np.array([[c] + [r["robust_accuracy"][attack][eps_key(e)] for e in eps] for r, c in zip(rs, clean)])
        return np.array([0.0] + eps), vals.mean(0), (vals.std(0, ddof=1) if len(vals) > 1 else 0 * vals[0])

    for ax, m in zip(axes[:2], METHODS):
        attacks = [a for a in ATTACK_ORDER if a in rows[0]["robust_accuracy"]]
        for i, a in enumerate(attacks):
            x, mu, sd = curve(m, a)
            if a == "worst":  # drawn wide and pale underneath, so attacks that coincide with it stay visible
                ax.plot(x, mu, color="black", lw=5, alpha=0.3, zorder=1, label=ATTACK_LABELS[a])
            else:
                ax.plot(x, mu, marker=MARKERS[i % len(MARKERS)], ms=5, mfc="none", color=cmap(i), lw=1.3,
                        ls="--" if a == "noise" else "-", zorder=2, label=ATTACK_LABELS[a])
            ax.fill_between(x, mu - sd, mu + sd, color="black" if a == "worst" else cmap(i), alpha=0.12)
        ax.set_title(f"{task}: {METHOD_LABELS[m]}")
        ax.set_xlabel("L-inf budget eps (inputs in [0, 1])")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy on attacked test examples")
    axes[1].legend(loc="upper right", fontsize=8, framealpha=0.9)
    ax = axes[2]
    for m in METHODS:
        for a, ls in (("worst", "-"), ("fgsm", ":")):
            x, mu, sd = curve(m, a)
            ax.plot(x, mu, marker="o" if a == "worst" else "x", ms=4, ls=ls, color=METHOD_COLORS[m],
                    lw=2 if a == "worst" else 1.2, label=f"{METHOD_LABELS[m]}: "
                    f"{'worst case' if a == 'worst' else 'FGSM'}")
            ax.fill_between(x, mu - sd, mu + sd, color=METHOD_COLORS[m], alpha=0.12)
    ax.set_title(f"{task}: local rule vs backprop")
    ax.set_xlabel("L-inf budget eps (inputs in [0, 1])")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    axes[0].set_ylim(-0.02, 1.02)
    n_seeds = len({r["seed"] for r in rows})
    fig.suptitle(f"Robust accuracy vs eps (mean ± std over {n_seeds} seed{'s' if n_seeds != 1 else ''})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(results: dict, task: str, path: str | Path) -> None:
    """Learning curves: train (dashed) and test (solid) accuracy per epoch, mean ± std over seeds."""
    plt = _plt()
    rows = [r for r in results["rows"] if r["task"] == task]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lo = 1.0
    for m in METHODS:
        rs = [r for r in rows if r["method"] == m]
        n = min(len(r["history"]) for r in rs)
        ep = np.arange(1, n + 1)
        for key, ls in (("test_accuracy", "-"), ("train_accuracy", "--")):
            v = np.array([[h[key] for h in r["history"][:n]] for r in rs])
            mu = v.mean(0)
            sd = v.std(0, ddof=1) if len(v) > 1 else np.zeros_like(mu)
            ax.plot(ep, mu, ls=ls, color=METHOD_COLORS[m], marker="o" if n < 15 else None, ms=3,
                    label=f"{METHOD_LABELS[m]}, {key.split('_')[0]}")
            ax.fill_between(ep, mu - sd, mu + sd, color=METHOD_COLORS[m], alpha=0.12)
            lo = min(lo, float((mu - sd).min()))
    ax.set_ylim(max(0.0, math.floor(lo * 20) / 20 - 0.02), 1.005)
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{task}: learning curves (mean ± std over {len({r['seed'] for r in rows})} seeds)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict, out: str | Path) -> list[Path]:
    """Write results.json, results.md, robustness-<task>.png and training-<task>.png into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "results.md"]
    atomic_write_text(written[0], json.dumps(results, indent=1) + "\n")
    atomic_write_text(written[1], markdown(results))
    for task in results["checks"]:
        for kind, fn in (("robustness", plot_robustness), ("training", plot_training)):
            p = out / f"{kind}-{task}.png"
            fn(results, task, p)
            written.append(p)
    return written
