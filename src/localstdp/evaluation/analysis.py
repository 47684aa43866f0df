"""Statistics, verdicts and the sentences the README prints, from the rows of ``reproduce``.

Everything here is a function of the results dict (rows with per-example correctness), so a
results.json can be re-analysed and its sentences re-generated without training anything.

Per task and method: mean, std and 95% t CI over seeds, and a 95% bootstrap CI over seeds AND test
examples (localstdp.evaluation.stats). Local vs each baseline: a two-level paired bootstrap of the difference
(seeds x test examples), the paired t-test over seeds beside it, Holm's correction over the whole
family of comparisons of the run (every task x baseline x metric), and for clean accuracy a TOST
equivalence test with the task's ``evaluation.equivalence_margin``. A significant difference is
never called equivalent (stats.verdict). A robustness advantage with a failed gradient-masking check
is "not established". The frontier verdict says whether the local rule's point lies above, on or
below backprop's weight-decay frontier beyond the seed CIs, or is not comparable with it
(:func:`frontier_verdict`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..registry import ROBUST_METHODS, SHALLOW_BASELINES
from . import stats
from .selection import finish, selection_summary
from .settings import unpack
from .stats import holm_text

HEADLINE = "0.1"
ALPHA = 0.05
# (metric, attack, eps) compared between the local rule and each baseline
COMPARED = (("clean_accuracy", None, None), ("robust_accuracy", "worst", "0.05"), ("robust_accuracy", "worst", "0.1"),
            ("robust_accuracy", "fgsm", "0.1"), ("robust_accuracy", "certified", "0.1"))


def _bits(row: dict, attack: str | None, eps: str | None) -> np.ndarray | None:
    pe = row["per_example"]
    if attack is None:
        return unpack(pe["clean"], row["n_test"])
    if attack not in pe or eps not in pe[attack]:
        return None
    return unpack(pe[attack][eps], row["n_attacked"])


def _matrix(rows: list[dict], attack, eps) -> np.ndarray | None:
    cols = [_bits(r, attack, eps) for r in rows]
    return None if any(c is None for c in cols) else np.stack(cols)


def _by(rows, task, method):
    return sorted((r for r in rows if r["task"] == task and r["method"] == method), key=lambda r: r["seed"])


def _value(row, attack, eps):
    return row["clean_accuracy"] if attack is None else row["robust_accuracy"].get(attack, {}).get(eps)


def _t_test(a, b) -> dict:
    import warnings

    with warnings.catch_warnings():  # near-identical differences: scipy warns, the p-value says it
        warnings.simplefilter("ignore", RuntimeWarning)
        return stats.paired_test(a, b)


def summarise(res: dict) -> dict:
    """Add cells, comparisons (with Holm), matched comparisons, frontier, checks and claims."""
    rows, st = res["rows"], res["settings"]
    n_boot = st.get("n_boot", 2000)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = [m for m in st["methods"] if any(r["method"] == m for r in rows)]
    summary, comparisons, checks = [], [], {}
    for task in tasks:
        checks[task] = {}
        for m in methods:
            by = _by(rows, task, m)
            if not by:
                continue
            clean = stats.describe([r["clean_accuracy"] for r in by])
            boot = stats.bootstrap_ci(_matrix(by, None, None), n_boot=n_boot, seed=1)
            summary.append({"task": task, "method": m, "metric": "clean_accuracy", "attack": None, "eps": None,
                            **clean, "boot_ci95": boot["ci"]})
            for a in by[0]["robust_accuracy"]:
                for e in by[0]["robust_accuracy"][a]:
                    summary.append({"task": task, "method": m, "metric": "robust_accuracy", "attack": a, "eps": e,
                                    **stats.describe([r["robust_accuracy"][a][e] for r in by])})
            summary.append({"task": task, "method": m, "metric": "zero_gradient_fraction", "attack": None,
                            "eps": None, **stats.describe([r["zero_gradient_fraction"] for r in by])})
            checks[task][m] = {c: all(r["checks"][c] for r in by) for c in by[0]["checks"]}
        local = _by(rows, task, "local")
        for b in methods:
            if b == "local":
                continue
            base = _by(rows, task, b)
            if [r["seed"] for r in base] != [r["seed"] for r in local]:
                raise ValueError(f"{task}: local and {b} rows do not pair by seed")
            for metric, attack, eps in COMPARED:
                la, ba = _matrix(local, attack, eps), _matrix(base, attack, eps)
                if la is None or ba is None:
                    continue
                boot = stats.paired_bootstrap(la, ba, n_boot=n_boot, seed=2)
                c = {"task": task, "baseline": b, "metric": metric, "attack": attack, "eps": eps,
                     "local_mean": float(np.mean([_value(r, attack, eps) for r in local])),
                     "baseline_mean": float(np.mean([_value(r, attack, eps) for r in base])),
                     "diff_mean": boot["diff_mean"], "diff_ci95": boot["ci"], "p_value": boot["p_value"],
                     "t_test": _t_test([_value(r, attack, eps) for r in local], [_value(r, attack, eps) for r in base])}
                if attack is None:
                    margin = st["tasks"][task]["equivalence_margin"]
                    c["tost"] = stats.tost(la, ba, margin, n_boot=n_boot, seed=2)
                comparisons.append(c)
    for c, p in zip(comparisons, stats.holm([c["p_value"] for c in comparisons])):
        c["p_holm"] = p
    for c in comparisons:
        c["verdict"] = _verdict(c, checks.get(c["task"], {}))
    matched_cmp = _matched_comparisons(res.get("matched", []), n_boot)
    frontier = {t: frontier_summary(res.get("frontier_rows", []), t) for t in tasks
                if any(r["task"] == t for r in res.get("frontier_rows", []))}
    selection = {t: sel for t in tasks if (sel := selection_summary(res.get("frontier_rows", []), t, n_boot))}
    finish(selection)
    out = res | {"summary": summary, "comparisons": comparisons, "matched_comparisons": matched_cmp,
                 "frontier": frontier, "checks": checks} | ({"selection": selection} if selection else {})
    out["claims"] = {t: claims(out, t) for t in tasks}
    return out


def _verdict(c: dict, checks: dict) -> str:
    if c["metric"] == "clean_accuracy":
        return stats.verdict({"diff_mean": c["diff_mean"], "p_value": c["p_value"]}, c["tost"], c["p_holm"], ALPHA)
    sig = c["p_holm"] is not None and c["p_holm"] < ALPHA
    if not sig:
        return "no significant difference"
    if c["diff_mean"] < 0:
        return "lower"
    failed = [f"{m}:{k}" for m in ("local", c["baseline"]) for k, ok in checks.get(m, {}).items() if not ok]
    return "higher" if not failed or c["attack"] == "certified" else "not established (" + ", ".join(failed) + ")"


def _matched_comparisons(matched: list[dict], n_boot: int) -> list[dict]:
    out = []
    keys = sorted({(m["task"], m["pair"][1]) for m in matched})
    for task, b in keys:
        ms = sorted((m for m in matched if m["task"] == task and m["pair"][1] == b), key=lambda m: m["seed"])
        for e in sorted(ms[0]["robust_accuracy"]["local"].get("worst", {})):
            la = [m["robust_accuracy"]["local"]["worst"][e] for m in ms]
            ba = [m["robust_accuracy"][b]["worst"][e] for m in ms]
            out.append({"task": task, "baseline": b, "eps": e, "seeds": [m["seed"] for m in ms],
                        "stopped": sorted({m["stopped_method"] for m in ms}),
                        "local_clean_mean": float(np.mean([m["clean_accuracy"]["local"] for m in ms])),
                        "baseline_clean_mean": float(np.mean([m["clean_accuracy"][b] for m in ms])),
                        "local_mean": float(np.mean(la)), "baseline_mean": float(np.mean(ba)),
                        **stats.paired_test(la, ba)})
    return out


# ---------------------------------------------------------------------------------------------
# the frontier


def frontier_summary(frows: list[dict], task: str) -> dict:
    """Points (mean/std/CI over seeds) and, per eps, the verdict of the local rule's own point.
    Where backprop was trained at several rates per weight decay (frontier.backprop_lr), its
    frontier is, per decay, the rate with the best mean validation accuracy (ties: the first rate
    listed); the other rates' points stay in ``points`` with ``"on_frontier": False``."""
    rows = [r for r in frows if r["task"] == task]
    points = []
    for name in dict.fromkeys(r["point"] for r in rows):
        rs = sorted((r for r in rows if r["point"] == name), key=lambda r: r["seed"])
        eps = list(rs[0]["robust_accuracy"]["worst"])
        points.append({"point": name, "method": rs[0]["method"], "knob": rs[0]["knob"], "value": rs[0]["value"],
                       **({"lr": rs[0]["lr"]} if "lr" in rs[0] else {}),
                       "seeds": [r["seed"] for r in rs], "n_test": rs[0].get("n_test"),
                       "clean": stats.describe([r["clean_accuracy"] for r in rs]),
                       "val": stats.describe([r["val_accuracy"] for r in rs if r["val_accuracy"] is not None]),
                       "worst": {e: stats.describe([r["robust_accuracy"]["worst"][e] for r in rs]) for e in eps},
                       "certified": {e: stats.describe([r["robust_accuracy"]["certified"][e] for r in rs])
                                     for e in eps if "certified" in rs[0]["robust_accuracy"]}})
    base = next((p for p in points if p["method"] == "local" and p["knob"] == "base"), None)
    # backprop's points: its weight decays (each at its validation-best rate) and its input-noise levels
    bp = _best_rate_per_decay([p for p in points if p["method"] == "backprop" and p["knob"] == "backprop.weight_decay"])
    bp += [p for p in points if p["method"] == "backprop" and p["knob"] != "backprop.weight_decay"]
    verdicts = {}
    if base is not None and bp:
        for e in base["worst"]:
            verdicts[e] = frontier_verdict(base, bp, e)
        for p in points:
            if p["method"] == "local":
                p["position"] = {e: frontier_verdict(p, bp, e) for e in p["worst"]}
    out = {"points": points, "verdict": verdicts}
    # the other families' frontiers, when swept: the shallow baselines' (L2 strength, input noise) and the
    # robustly trained families' (training radius, TRADES' beta)
    against = {m: {e: frontier_verdict(base, fam, e) for e in base["worst"]} for m in OTHER_FRONTIERS
               if base is not None and (fam := [p for p in points if p["method"] == m])}
    return out | ({"against": against} if against else {})


OTHER_FRONTIERS = (*SHALLOW_BASELINES, *ROBUST_METHODS)


def _best_rate_per_decay(bp: list[dict]) -> list[dict]:
    """Backprop's frontier points: all of them, or where points carry their own rate ("lr"), per
    weight decay the one with the best mean validation accuracy (marked ``on_frontier``)."""
    if not any("lr" in p for p in bp):
        return bp
    keep = []
    for v in dict.fromkeys(p["value"] for p in bp):
        same = [p for p in bp if p["value"] == v]
        best = max(same, key=lambda p: p["val"]["mean"] if p["val"]["n"] else -1.0)
        for p in same:
            p["on_frontier"] = p is best
        keep.append(best)
    return keep


def _half(d: dict) -> float:
    return 0.0 if d["ci95"] is None else (d["ci95"][1] - d["ci95"][0]) / 2


TOL_EXAMPLES = 3  # clean accuracies within this many test examples of each other are comparable


def _interval(d: dict) -> tuple[float, float]:
    return d["mean"] - _half(d), d["mean"] + _half(d)


def comparable(a: dict, b: dict, n_test: int | None) -> bool:
    """Whether two frontier points' clean accuracies are comparable: their 95% CIs over seeds overlap
    (touching counts), or the gap between them is at most TOL_EXAMPLES test examples."""
    (a_lo, a_hi), (b_lo, b_hi) = _interval(a["clean"]), _interval(b["clean"])
    gap = max(0.0, b_lo - a_hi, a_lo - b_hi)
    tol = TOL_EXAMPLES / n_test if n_test else 0.0
    return gap <= tol + 1e-12


def frontier_verdict(local: dict, backprop: Sequence[dict], eps: str) -> str:
    """"below" | "above" | "on" | "not comparable": the local point against backprop's frontier at ``eps``.

    The points of COMPARABLE clean accuracy are those whose CI overlaps the local point's or lies
    within TOL_EXAMPLES test examples of it (:func:`comparable`). "below": a comparable point, or one
    at least as accurate (clean mean >= the local point's lower CI bound), is more robust beyond
    both CIs (its robust CI lies entirely above the local one). Otherwise "not comparable" when no
    point is comparable (an empty comparison is never "above"); "above" when every comparable point
    is less robust beyond both CIs; else "on". Touching robust CIs are not "beyond".
    """
    c_lo, _ = _interval(local["clean"])
    r_lo, r_hi = _interval(local["worst"][eps])
    peers = [p for p in backprop if comparable(local, p, local.get("n_test"))]
    if any(_interval(p["worst"][eps])[0] > r_hi for p in backprop if p in peers or p["clean"]["mean"] >= c_lo):
        return "below"
    if not peers:
        return "not comparable"
    if all(_interval(p["worst"][eps])[1] < r_lo for p in peers):
        return "above"
    return "on"


# ---------------------------------------------------------------------------------------------
# claims and sentences


def _find(comparisons, task, baseline, attack, eps):
    return next((c for c in comparisons if c["task"] == task and c["baseline"] == baseline and c["attack"] == attack
                 and c["eps"] == eps), None)


def _mean(summary, task, method, metric, attack=None, eps=None):
    c = next((s for s in summary if s["task"] == task and s["method"] == method and s["metric"] == metric
              and s["attack"] == attack and s["eps"] == eps), None)
    return None if c is None else c["mean"]


def claims(res: dict, task: str) -> dict:
    """The strongest baselines and the verdicts against them, computed from the numbers."""
    summ, comps = res["summary"], res["comparisons"]
    bases = [m for m in res["settings"]["methods"] if m != "local" and _mean(summ, task, m, "clean_accuracy") is not None]
    if not bases:
        return {}
    best_clean = max(bases, key=lambda m: _mean(summ, task, m, "clean_accuracy"))
    best_rob = max(bases, key=lambda m: _mean(summ, task, m, "robust_accuracy", "worst", HEADLINE) or 0.0)
    acc = _find(comps, task, best_clean, None, None)
    rob = _find(comps, task, best_rob, "worst", HEADLINE)
    cert = _find(comps, task, best_rob, "certified", HEADLINE)
    failed = sorted({f"{m}:{k}" for m, ch in res["checks"][task].items() for k, ok in ch.items() if not ok})
    fr = res.get("frontier", {}).get(task, {}).get("verdict", {})
    return {"strongest_clean_baseline": best_clean, "strongest_robust_baseline": best_rob,
            "accuracy": acc["verdict"], "robustness_worst": rob["verdict"] if rob else None,
            "certified": cert["verdict"] if cert else None, "frontier": fr, "failed_checks": failed,
            "sentences": sentences(res, task, best_clean, best_rob, acc, rob, cert, fr)}


def _ci(c):
    return f"[{c['diff_ci95'][0]:+.3f}, {c['diff_ci95'][1]:+.3f}]"


def format_p(p) -> str:
    return "n/a" if p is None else (f"{p:.2g}" if p >= 1e-3 else "< 0.001")


FRONTIER_NAMES = {"linear": "the linear model's L2", "random-features": "the random-features readout's L2",
                  "backprop-at": "PGD adversarial training's radius", "backprop-trades": "TRADES' radius and beta",
                  "local-at": "the adversarially trained local rule's radius"}
FRONTIER_WORDS = {"not comparable": "outside its clean-accuracy range (not comparable)"}


def frontier_phrase(verdicts: dict) -> str:
    """e.g. "on it at eps 0.05, above it at eps 0.1"; "not comparable": "outside its clean-accuracy
    range (not comparable) at eps 0.1" (no backprop point of comparable clean accuracy)."""
    return ", ".join(f"{FRONTIER_WORDS.get(v, f'{v} it')} at eps {e}" for e, v in verdicts.items())


def sentences(res, task, best_clean, best_rob, acc, rob, cert, fr) -> list[str]:
    """One sentence per claim, saying exactly what the numbers show (the README prints these)."""
    margin = res["settings"]["tasks"][task]["equivalence_margin"]
    n_boot = res["settings"].get("n_boot", 2000)
    word = {"equivalent": f"equivalent within ±{margin}", "inconclusive": f"neither different nor shown "
            f"equivalent within ±{margin}", "higher": "higher", "lower": "lower"}[acc["verdict"]]
    out = [f"{task}: clean accuracy, local {acc['local_mean']:.3f} vs {best_clean} {acc['baseline_mean']:.3f} "
           f"(the most accurate baseline): local − baseline {acc['diff_mean']:+.3f}, 95% CI {_ci(acc)} over seeds "
           f"and test examples, Holm-adjusted p {holm_text(acc, n_boot)}: {word}."]
    if rob is not None:
        out.append(f"{task}: worst-case accuracy at eps {HEADLINE}, local {rob['local_mean']:.3f} vs {best_rob} "
                   f"{rob['baseline_mean']:.3f} (the most robust baseline): {rob['diff_mean']:+.3f}, 95% CI {_ci(rob)}, "
                   f"Holm-adjusted p {holm_text(rob, n_boot)}: "
                   + (f"local {rob['verdict']}" if rob["verdict"] in ("higher", "lower") else rob["verdict"])
                   + (f"; certified (proven) accuracy {cert['local_mean']:.3f} vs {cert['baseline_mean']:.3f}"
                      if cert is not None else "") + ".")
    if fr:
        out.append(f"{task}: against backprop's weight-decay frontier the local rule's point lies "
                   + frontier_phrase(fr) + ".")
    for m, v in res.get("frontier", {}).get(task, {}).get("against", {}).items():
        what = FRONTIER_NAMES.get(m, f"{m}'s")
        out.append(f"{task}: against {what} frontier the local rule's point lies " + frontier_phrase(v) + ".")
    return out
