"""Replace the generated results blocks with what a results.json generates.

    .venv/bin/python scripts/update-readme-results.py docs/reproduce/results.json \
        [docs/nonlinear/results.json [docs/nonlinear/ten/results.json]]
    .venv/bin/python scripts/update-readme-results.py --robust docs/robust/results.json \
        docs/robust/fashion-0v6/results.json docs/robust/fashion-2v6/results.json \
        docs/robust/fashion-mnist-small/results.json

README.md's ``<!-- summary:begin -->`` ... ``<!-- summary:end -->`` block gets :func:`summary_table` (the
README's one table); docs/results.md's ``tables`` block gets the full tables (``readme_tables``) and its
``results`` block the generated sentences. tests/test_report.py checks that all three equal what
docs/reproduce/results.json generates, so a quoted number cannot drift from the run it quotes.

With the validation robustness selection in the runs (issue 23): README.md's ``selection`` block gets
the chosen settings of every family on the paper tasks and, when given, on the nonlinear suite's tasks
(``selection_table``), docs/results.md's ``selection-words`` block their sentences; its ``selection`` block and docs/nonlinear.md's ``tables``,
``selection`` and ``results`` blocks get the full sections; the third run (ten-class Fashion-MNIST,
fashion-mnist-small) joins the README's table and fills docs/nonlinear.md's ``ten-tables``,
``ten-selection`` and ``ten-results`` blocks.

With ``--robust`` (issue 33): README.md's ``robust`` block gets the robust suite's selection table and the
Fashion-MNIST panel runs' table (:func:`panel_table`); docs/results.md's ``robust-words`` block the
selection's sentences, its ``robust-selection``, ``robust-results`` and ``robust-fashion`` blocks the full
sections.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGE = ROOT / "docs" / "results.md"
NONLINEAR = ROOT / "docs" / "nonlinear.md"


def _mean(summary: list[dict], task: str, method: str, metric: str, attack=None, eps=None) -> str:
    c = next((s for s in summary if s["task"] == task and s["method"] == method and s["metric"] == metric
              and s["attack"] == attack and s["eps"] == eps), None)
    return "-" if c is None else f"{c['mean']:.3f}"


def summary_table(res: dict) -> str:
    """The README's table: per task and method, the mean clean test accuracy and the mean worst-case
    accuracy over every attack at eps 0.1."""
    st, summary = res["settings"], res["summary"]
    tasks, methods = list(res["checks"]), list(st["methods"])
    rows = [f"| {t} | " + " | ".join(
        _mean(summary, t, m, "clean_accuracy") + " / " + _mean(summary, t, m, "robust_accuracy", "worst", "0.1")
        for m in methods) + " |" for t in tasks]
    return (f"Clean test accuracy / worst-case accuracy over every attack at eps 0.1 (L-inf, inputs in [0, 1]), "
            f"mean over {len(st['seeds'])} seeds:\n\n| task | " + " | ".join(methods) + " |\n|---|"
            + "---|" * len(methods) + "\n" + "\n".join(rows) + "\n")


def sentences(res: dict) -> str:
    return "".join(f"- {s}\n" for t in res["claims"] for s in res["claims"][t]["sentences"])


def replace(path: Path, tag: str, body: str) -> None:
    text, n = re.subn(rf"(<!-- {tag}:begin -->\n).*?(<!-- {tag}:end -->)", lambda m: m.group(1) + body + m.group(2),
                      path.read_text(), flags=re.S)
    if n != 1:
        sys.exit(f"{path.relative_to(ROOT)} has no <!-- {tag}:begin --> ... <!-- {tag}:end --> block")
    path.write_text(text)


def selection_sentences(runs: list[dict], eps: str = "0.1") -> str:
    """One generated sentence per task: the local rule's validation-chosen setting against each
    family's at ``eps`` (worst case) and on clean accuracy, as the paired tests found it."""
    words = {"higher": "higher than", "lower": "lower than", "no significant difference": "not different from"}
    out = []
    for res in runs:
        for t, s in res.get("selection", {}).items():
            parts = {}
            for metric, e in (("worst", eps), ("clean", None)):
                cs = [c for c in s["comparisons"] if c["metric"] == metric and c["eps"] == e]
                groups: dict[str, list[str]] = {}
                for c in cs:
                    groups.setdefault(c["verdict"], []).append(f"{c['family']} ({c['diff_mean']:+.3f})")
                parts[metric] = "; ".join(f"{words[v]} " + ", ".join(f) for v, f in groups.items())
            out.append(f"- {t}: the local rule's chosen setting ({s['families']['local']['chosen']}) has a worst case "
                       f"at eps {eps} {parts['worst']}, and a clean accuracy {parts['clean']} (paired bootstrap, "
                       "Holm).\n")
    return "".join(out)


def selection_blocks(paper: dict, nonlinear: dict | None, ten: dict | None = None) -> dict[tuple[Path, str], str]:
    """(file, block tag) -> body of every selection block the runs generate."""
    from localstdp.evaluation.report import readme_tables
    from localstdp.evaluation.selection import selection_lines, selection_table

    runs = [r for r in (paper, nonlinear, ten) if r is not None and r.get("selection")]
    out = {}
    if runs:
        out[README, "selection"] = selection_table(runs)
        out[PAGE, "selection-words"] = selection_sentences(runs)
    if paper.get("selection"):
        out[PAGE, "selection"] = "\n".join(selection_lines(paper)[1:]) + "\n"
    for run, prefix in ((nonlinear, ""), (ten, "ten-")):  # docs/nonlinear.md's blocks of each run
        if run is not None:
            out[NONLINEAR, f"{prefix}tables"] = readme_tables(run)
            out[NONLINEAR, f"{prefix}selection"] = "\n".join(selection_lines(run)[1:]) + "\n"
            out[NONLINEAR, f"{prefix}results"] = sentences(run)
    return out


def panel_table(runs: list[dict], eps: str = "0.1") -> str:
    """Per task of panel runs (no frontier): each method's mean clean / worst-case test accuracy at ``eps``,
    and the local rule's paired difference in worst case against each method (the panel's comparisons:
    bootstrap over seeds and test examples, Holm within its run)."""
    from localstdp.evaluation.selection import SHORT

    methods = list(dict.fromkeys(m for r in runs for m in r["settings"]["methods"]))
    lines = ["| task | seeds | " + " | ".join(methods) + f" | local − method, worst @ {eps} |",
             "|---|---|" + "---|" * len(methods) + "---|"]
    for res in runs:
        for t in res["checks"]:
            cells = [_mean(res["summary"], t, m, "clean_accuracy") + " / "
                     + _mean(res["summary"], t, m, "robust_accuracy", "worst", eps) for m in methods]
            cmp = [c for c in res["comparisons"] if c["task"] == t and c["metric"] == "robust_accuracy"
                   and c["attack"] == "worst" and c["eps"] == eps]
            verdicts = "; ".join(f"{c['baseline']} {c['diff_mean']:+.3f} ({SHORT[c['verdict']]})" for c in cmp)
            lines.append(f"| {t} | {len(res['settings']['seeds'])} | " + " | ".join(cells) + f" | {verdicts} |")
    return "\n".join(lines) + "\n"


def robust_blocks(paper: dict, fashion: list[dict]) -> dict[tuple[Path, str], str]:
    """(file, block tag) -> body of the blocks of the robustly trained families' runs (issue 33): the paper
    tasks' ``--suite robust`` run (``paper``: its validation selection) and the Fashion-MNIST panel runs of
    scripts/robust-fashion.sh (``fashion``)."""
    from localstdp.evaluation.report import readme_tables
    from localstdp.evaluation.selection import selection_lines, selection_table

    out = {(README, "robust"): selection_table([paper]) + ("\n" + panel_table(fashion) if fashion else "")}
    out[PAGE, "robust-words"] = selection_sentences([paper])
    out[PAGE, "robust-selection"] = "\n".join(selection_lines(paper)[1:]) + "\n"
    out[PAGE, "robust-results"] = sentences(paper)
    if fashion:
        out[PAGE, "robust-fashion"] = "".join(readme_tables(r) + "\n" + sentences(r) for r in fashion)
    return out


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--robust":  # --robust PAPER_ROBUST.json [FASHION.json ...]
        sys.path.insert(0, str(ROOT / "src"))
        runs = [json.loads(Path(a).read_text()) for a in argv[1:]]
        for (path, tag), body in robust_blocks(runs[0], runs[1:]).items():
            replace(path, tag, body)
        print(f"README.md, docs/results.md: the robust blocks of {len(runs)} run(s)")
        return 0
    res = json.loads(Path(argv[0]).read_text())
    nonlinear = json.loads(Path(argv[1]).read_text()) if len(argv) > 1 else None
    ten = json.loads(Path(argv[2]).read_text()) if len(argv) > 2 else None
    sys.path.insert(0, str(ROOT / "src"))
    from localstdp.evaluation.report import readme_tables

    replace(README, "summary", summary_table(res))
    replace(PAGE, "tables", readme_tables(res))
    replace(PAGE, "results", sentences(res))
    for (path, tag), body in selection_blocks(res, nonlinear, ten).items():
        replace(path, tag, body)
    print(f"README.md: the summary table; docs/results.md: {sentences(res).count(chr(10))} generated lines")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
