"""Replace the README's generated results block with the sentences of a results.json.

    .venv/bin/python scripts/update-readme-results.py docs/reproduce/results.json

The block lies between ``<!-- results:begin -->`` and ``<!-- results:end -->``; tests/test_report.py
checks that it equals what docs/reproduce/results.json generates, so a README number cannot drift
from the run it quotes.
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
res = json.loads(Path(sys.argv[1]).read_text())
block = "".join(f"- {s}\n" for t in res["claims"] for s in res["claims"][t]["sentences"])
sys.path.insert(0, str(ROOT / "src"))
from localstdp.evaluation.report import readme_tables  # noqa: E402

readme = ROOT / "README.md"
text = readme.read_text()
for tag, body in (("results", block), ("tables", readme_tables(res))):
    text, n = re.subn(rf"(<!-- {tag}:begin -->\n).*?(<!-- {tag}:end -->)", lambda m: m.group(1) + body + m.group(2),
                      text, flags=re.S)
    if n != 1:
        sys.exit(f"README.md has no <!-- {tag}:begin --> ... <!-- {tag}:end --> block")
readme.write_text(text)
print(f"README.md: {block.count(chr(10))} generated lines")
