"""Replace the generated results blocks with what a results.json generates.

    .venv/bin/python scripts/update-readme-results.py docs/reproduce/results.json

README.md's ``<!-- summary:begin -->`` ... ``<!-- summary:end -->`` block gets :func:`summary_table` (the
README's one table); docs/results.md's ``tables`` block gets the full tables (``readme_tables``) and its
``results`` block the generated sentences. tests/test_report.py checks that all three equal what
docs/reproduce/results.json generates, so a quoted number cannot drift from the run it quotes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGE = ROOT / "docs" / "results.md"


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


def main(argv: list[str]) -> int:
    res = json.loads(Path(argv[0]).read_text())
    sys.path.insert(0, str(ROOT / "src"))
    from localstdp.evaluation.report import readme_tables

    replace(README, "summary", summary_table(res))
    replace(PAGE, "tables", readme_tables(res))
    replace(PAGE, "results", sentences(res))
    print(f"README.md: the summary table; docs/results.md: {sentences(res).count(chr(10))} generated lines")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
