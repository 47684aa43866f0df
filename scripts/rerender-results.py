"""Re-render a committed run's text from its stored numbers, after a change to how numbers are WRITTEN.

    .venv/bin/python scripts/rerender-results.py docs/reproduce/results.json [MORE.json ...]

Recomputes each task's claims (verdict words and generated sentences: localstdp.evaluation.analysis.claims)
from the summary, comparisons, checks and frontier stored in results.json, and rewrites results.json and the
results.md beside it (localstdp.evaluation.report.markdown). No number is recomputed or changed: the
comparisons, intervals, p-values and verdicts are read, not re-derived; the plots are left as they are.
Then run scripts/update-readme-results.py for the README's generated blocks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from localstdp.checkpoint import atomic_write_text
from localstdp.evaluation.analysis import claims
from localstdp.evaluation.report import markdown


def rerender(path: Path) -> bool:
    res = json.loads(path.read_text())
    new = {t: claims(res, t) for t in res["claims"]}
    for t, c in new.items():  # verdicts are numbers' consequences: a re-render must not move one
        old = res["claims"][t]
        moved = [k for k in c if k != "sentences" and json.dumps(c[k]) != json.dumps(old.get(k))]
        if moved:
            raise SystemExit(f"{path}: {t}: {', '.join(moved)} would change; re-run the analysis instead")
    changed = json.dumps(new) != json.dumps(res["claims"])
    res["claims"] = new
    atomic_write_text(path, json.dumps(res, indent=1) + "\n")
    atomic_write_text(path.with_name("results.md"), markdown(res))
    return changed


def main(argv: list[str]) -> int:
    for arg in argv:
        print(f"{arg}: {'sentences re-rendered' if rerender(Path(arg)) else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
