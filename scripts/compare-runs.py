#!/usr/bin/env python3
"""Compare two reproduce outputs example by example: ``scripts/compare-runs.py A/results.json B/results.json``.

For every panel row (task, method, seed) and frontier row (task, point, seed) found in both, compares the
per-example bits of every attack at every eps, the clean accuracy, the validation worst case and the
diagnostics' certified radii; prints each difference (and rows found in one run only) and exits 1 when any
is found, 0 when the runs agree on everything compared."""

from __future__ import annotations

import json
import sys


def _rows(res: dict) -> dict:
    out = {("panel", r["task"], r["method"], r["seed"]): r for r in res["rows"]}
    out |= {("frontier", r["task"], r["point"], r["seed"]): r for r in res["frontier_rows"]}
    return out


def _fields(row: dict) -> dict:
    f = {"clean_accuracy": row.get("clean_accuracy"), "val_robust": row.get("val_robust")}
    for attack, per in row.get("per_example", {}).items():
        if isinstance(per, dict):
            f |= {f"per_example.{attack}.{k}": v for k, v in per.items()}
        else:
            f[f"per_example.{attack}"] = per
    radius = (row.get("diagnostics") or {}).get("certified_radius") or {}
    if "per_example" in radius:
        f["certified_radius"] = radius["per_example"]
    return f


def main(a_path: str, b_path: str) -> int:
    a, b = (_rows(json.load(open(p, encoding="utf-8"))) for p in (a_path, b_path))
    diffs = 0
    for key in sorted(set(a) | set(b), key=str):
        if key not in a or key not in b:
            print(f"only in {'B' if key not in a else 'A'}: {key}")
            diffs += 1
            continue
        fa, fb = _fields(a[key]), _fields(b[key])
        for name in sorted(set(fa) | set(fb)):
            if fa.get(name) != fb.get(name):
                print(f"differs: {key} {name}")
                diffs += 1
    print(f"{len(set(a) & set(b))} rows in both; {diffs} difference(s)")
    return 1 if diffs else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
