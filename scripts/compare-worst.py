"""Per example, compare the worst case (and every attack) of two reproduce runs' results.json.

    .venv/bin/python scripts/compare-worst.py OLD/results.json NEW/results.json

For every (task, method, seed) in both runs and every eps in both, counts the attacked examples that
are correct under the worst case in NEW but not in OLD ("weaker": NEW's attacks missed what OLD's
found) and the reverse ("stronger"); the same per attack. Models trained on another CPU may differ in
rounding, so the clean accuracy of each pair is compared too. Exit status 1 when NEW's worst case is
weaker on any example of a pair whose clean predictions agree.
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def unpack(hexstr: str, n: int) -> np.ndarray:
    """localstdp.evaluation.settings.unpack, without importing the package (its torch start-up)."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(hexstr), dtype=np.uint8))[:n].astype(bool)


def rows(path: str) -> dict:
    return {(r["task"], r["method"], r["seed"]): r for r in json.loads(Path(path).read_text())["rows"]}


def main(old_path: str, new_path: str) -> int:
    old, new = rows(old_path), rows(new_path)
    keys = sorted(set(old) & set(new))
    per = defaultdict(lambda: [0, 0])
    same_models = weaker_same = 0
    for key in keys:
        o, n = old[key], new[key]
        m = n["n_attacked"]
        same = o["per_example"]["clean"] == n["per_example"]["clean"]
        same_models += same
        for attack, by_eps in n["per_example"].items():
            if attack == "clean" or attack not in o["per_example"]:
                continue
            for e, bits in by_eps.items():
                if e not in o["per_example"][attack]:
                    continue
                a, b = unpack(o["per_example"][attack][e], m), unpack(bits, m)
                w, s = int((b & ~a).sum()), int((a & ~b).sum())
                per[attack][0] += w
                per[attack][1] += s
                if attack == "worst" and w and same:
                    weaker_same += w
                    print(f"{key} eps {e}: worst case weaker on {w} example(s)")
    print(f"{len(keys)} models in both runs, {same_models} with the same clean predictions")
    for attack, (w, s) in sorted(per.items()):
        print(f"  {attack:14s} weaker on {w:5d}, stronger on {s:5d} (example, eps) pairs")
    return 1 if weaker_same else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    sys.exit(main(sys.argv[1], sys.argv[2]))
