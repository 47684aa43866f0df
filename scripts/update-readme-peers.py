"""Replace a peer-comparison block of docs/comparison.md with what a ``reproduce --suite peers`` results.json
generates.

    .venv/bin/python scripts/update-readme-peers.py [docs/reproduce/peers/results.json] [--no-plot]

The block lies between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``, NAME the results.json's directory
(``peers`` for docs/reproduce/peers, ``peers-fashion`` for docs/reproduce/peers-fashion; any other directory is
refused, so the page's other text stays untouched): the command that made the
run (rebuilt from the run's own settings), one table of clean accuracy, worst-case robust accuracy at
eps 0.05 and 0.1 and the gradient-masking checks per task and method, the failed checks by name, and
which method is highest per task. It also draws the block's plot (worst case at eps 0.1 per task and
method, PEERS_PLOT beside the results.json). tests/test_suite_peers.py checks that the page's blocks
equal what the committed results.json files generate, so a quoted number cannot drift from the run.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "docs/reproduce/peers/results.json"
PAGE = ROOT / "docs/comparison.md"  # the page holding the blocks (its links are relative to docs/)
PEERS_PLOT = "peers-worst-0.1.png"
EPS = ("0.05", "0.1")


def _cell(summary, task, method, metric, attack=None, eps=None):
    return next((s for s in summary if s["task"] == task and s["method"] == method and s["metric"] == metric
                 and s["attack"] == attack and s["eps"] == eps), None)


def _fmt(c) -> str:
    return "-" if c is None else f"{c['mean']:.3f} ± {c['std']:.3f}"


def command(res: dict, out: str) -> str:
    """The reproduce command line of this run: --suite peers when the run is that suite with its
    defaults, else the explicit --tasks / --methods / --seeds / --frontier-seeds."""
    sys.path.insert(0, str(ROOT / "src"))
    from localstdp.cli.reproduce import SUITE_DEFAULTS
    from localstdp.registry import SUITES

    st = res["settings"]
    d = SUITE_DEFAULTS["peers"]
    tasks, methods = list(st["tasks"]), list(st["methods"])
    if (tasks == list(SUITES["peers"]) and methods == list(d["methods"]) and len(st["seeds"]) == d["seeds"]
            and len(st["frontier_seeds"]) == d["frontier_seeds"]):
        args = "--suite peers"
    else:
        args = (f"--tasks {' '.join(tasks)} --methods {' '.join(methods)} --seeds {len(st['seeds'])} "
                f"--frontier-seeds {len(st['frontier_seeds'])}")
    return f"localstdp reproduce {args} --jobs {st['jobs']} --out {out}"


def block(res: dict, out: str = "docs/reproduce/peers") -> str:
    st, summary = res["settings"], res["summary"]
    tasks, methods = list(res["checks"]), list(st["methods"])
    n_att = st["n_attack_cap"]
    lines = [f"`{command(res, out)}`", "",
             f"Seeds {st['seeds'][0]}-{st['seeds'][-1]} (mean ± std over seeds); every model attacked on the same "
             f"{'test split' if n_att is None else f'at most {n_att} test examples'}; worst = per-example minimum over "
             "FGSM, PGD, AutoAttack, Square / random search, noise and transfer from every other model of the seed; "
             "checks: the gradient-masking checks of docs/evaluation.md (pass = every check passed on every seed).", "",
             "| task | metric | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    failed: list[str] = []
    for t in tasks:
        lines.append(f"| {t} | clean | " + " | ".join(_fmt(_cell(summary, t, m, "clean_accuracy")) for m in methods)
                     + " |")
        for e in EPS:
            lines.append(f"| | worst @ {e} | " + " | ".join(
                _fmt(_cell(summary, t, m, "robust_accuracy", "worst", e)) for m in methods) + " |")
        cells = []
        for m in methods:
            bad = [k for k, ok in res["checks"][t].get(m, {}).items() if ok is False]
            cells.append("pass" if not bad else f"**FAIL** ({len(bad)})")
            if bad:
                failed.append(f"{t} {m}: {', '.join(bad)}")
        lines.append("| | checks | " + " | ".join(cells) + " |")
    lines += ["", "Failed checks: " + ("; ".join(failed) if failed else "none") + "."]

    def best(metric, attack=None, eps=None):
        out = []
        for t in tasks:
            vals = {m: c["mean"] for m in methods if (c := _cell(summary, t, m, metric, attack, eps)) is not None}
            top = max(vals.values())
            out.append(f"{t} " + " = ".join(f"{m}" for m in methods if vals.get(m) == top) + f" ({top:.3f})")
        return "; ".join(out)

    lines += ["", f"Highest mean clean accuracy: {best('clean_accuracy')}.",
              f"Highest mean worst-case accuracy at eps 0.1: {best('robust_accuracy', 'worst', '0.1')}.", "",
              f"![worst-case accuracy at eps 0.1 per task and method]({out.removeprefix('docs/')}/{PEERS_PLOT})"]
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    st, summary = res["settings"], res["summary"]
    tasks, methods = list(res["checks"]), list(st["methods"])
    w = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(tasks)), 3.6))
    for i, m in enumerate(methods):
        cs = [_cell(summary, t, m, "robust_accuracy", "worst", "0.1") for t in tasks]
        mu = np.array([c["mean"] if c else np.nan for c in cs])
        sd = np.array([c["std"] if c else 0.0 for c in cs])
        bad = [any(ok is False for ok in res["checks"][t].get(m, {}).values()) for t in tasks]
        x = np.arange(len(tasks)) + (i - (len(methods) - 1) / 2) * w
        bars = ax.bar(x, mu, w, yerr=sd, capsize=1.5, label=m, color=f"C{i}", edgecolor="black", linewidth=0.3)
        for b, flag in zip(bars, bad, strict=True):
            if flag:
                b.set_hatch("///")
    ax.set_xticks(np.arange(len(tasks)), tasks)
    ax.set_ylabel("worst-case accuracy, eps 0.1")
    ax.set_ylim(0, 1.02)
    ax.set_title("worst case over every attack at eps 0.1 (mean ± std over seeds; hatched: a masking check failed)",
                 fontsize=8)
    ax.legend(fontsize=7, ncol=min(len(methods), 8), loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str]) -> int:
    no_plot = "--no-plot" in argv
    paths = [a for a in argv if a != "--no-plot"]
    src = Path(paths[0]) if paths else DEFAULT
    res = json.loads(src.read_text())
    out = src.resolve().parent.relative_to(ROOT).as_posix()
    tag = src.resolve().parent.name
    if not tag.startswith("peers"):  # the site's other generated blocks (results, ...) are not this script's
        sys.exit(f"update-readme-peers.py: {src} is not in a docs/reproduce/peers* directory")
    body = block(res, out)
    text, n = re.subn(rf"(<!-- {tag}:begin -->\n).*?(<!-- {tag}:end -->)", lambda m: m.group(1) + body + m.group(2),
                      PAGE.read_text(), flags=re.S)
    if n != 1:
        sys.exit(f"docs/comparison.md has no <!-- {tag}:begin --> ... <!-- {tag}:end --> block")
    PAGE.write_text(text)
    if not no_plot:
        plot(res, src.parent / PEERS_PLOT)
    print(f"docs/comparison.md: {body.count(chr(10))} generated lines from {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
