"""The validation robustness selection: the comparison a robustness reviewer asks for.

Per method family (the local rule over all its frontier settings; backprop over its weight decays,
and its rates when frontier.backprop_lr is given; the linear model and random features over their
L2 strengths; each with its input-noise levels when frontier.input_noise is given; the adversarially
trained families over their training radius, TRADES also over its beta), the setting chosen is the
one with the highest worst-case accuracy ON THE VALIDATION SPLIT (attacked there: units.val_robust) among the settings whose mean validation
accuracy is within :data:`SELECT_TOL` of the family's best. The rule is fixed in advance and the
same for every family; exact ties on the validation worst case at the headline eps are broken by
the mean validation worst case over all frontier eps, then by validation accuracy, then by the
point order of the config (``frontier_points``). Only the chosen settings' TEST numbers are
reported, and the local rule's chosen setting is compared with every other family's by a paired
bootstrap over seeds and test examples (Holm-adjusted over every comparison of the run).
"""

from __future__ import annotations

import numpy as np

from ..registry import ROBUST_METHODS, SHALLOW_BASELINES
from ..robustness.suite import eps_key
from . import stats
from .settings import HEADLINE_EPS, unpack

SELECT_TOL = 0.01  # one point of mean validation accuracy, fixed before any run
FAMILIES = ("local", "backprop", *SHALLOW_BASELINES, *ROBUST_METHODS)
ALPHA = 0.05


def _candidates(rows: list[dict]) -> list[dict]:
    """One record per frontier point of a family: seeds, mean validation accuracy and worst case."""
    out = []
    for name in dict.fromkeys(r["point"] for r in rows):
        rs = sorted((r for r in rows if r["point"] == name), key=lambda r: r["seed"])
        eps = list(rs[0]["val_robust"]["worst"])
        out.append({"point": name, "seeds": [r["seed"] for r in rs],
                    "val": float(np.mean([r["val_accuracy"] for r in rs])),
                    "val_worst": {e: float(np.mean([r["val_robust"]["worst"][e] for r in rs])) for e in eps},
                    "n_val_attacked": rs[0]["val_robust"]["n"]})
    return out


def choose(cands: list[dict], headline: str, tol: float = SELECT_TOL) -> tuple[dict, list[dict]]:
    """(chosen, eligible): the eligible candidates are those within ``tol`` of the best mean
    validation accuracy; the chosen one has the highest validation worst case at ``headline``
    (ties: mean validation worst case over every eps, then validation accuracy, then list order)."""
    best = max(c["val"] for c in cands)
    eligible = [c for c in cands if c["val"] >= best - tol - 1e-12]
    score = lambda c: (c["val_worst"][headline], float(np.mean(list(c["val_worst"].values()))), c["val"])
    top = max(score(c) for c in eligible)
    return next(c for c in eligible if score(c) == top), eligible


def _bits(rows: list[dict], what: str, eps: str | None) -> np.ndarray:
    return np.stack([unpack(r["per_example"]["clean"], r["n_test"]) if what == "clean" else
                     unpack(r["per_example"][what][eps], r["n_attacked"]) for r in rows])


def selection_summary(frows: list[dict], task: str, n_boot: int = 2000) -> dict | None:
    """The chosen setting of every family with its test numbers, and the local rule's chosen setting
    against each other family's (see the module's docstring); None without validation attacks."""
    rows = [r for r in frows if r["task"] == task and r.get("val_robust") is not None]
    if not rows or not any(r["method"] == "local" for r in rows):
        return None
    eps = list(rows[0]["val_robust"]["worst"])
    headline = eps_key(HEADLINE_EPS) if eps_key(HEADLINE_EPS) in eps else eps[-1]
    families, chosen_rows = {}, {}
    for fam in FAMILIES:
        frs = [r for r in rows if r["method"] == fam]
        if not frs:
            continue
        cands = _candidates(frs)
        chosen, eligible = choose(cands, headline)
        rs = sorted((r for r in frs if r["point"] == chosen["point"]), key=lambda r: r["seed"])
        chosen_rows[fam] = rs
        test = {"clean": stats.describe([r["clean_accuracy"] for r in rs]),
                "worst": {e: stats.describe([r["robust_accuracy"]["worst"][e] for r in rs]) for e in eps}}
        if "certified" in rs[0]["robust_accuracy"]:
            test["certified"] = {e: stats.describe([r["robust_accuracy"]["certified"][e] for r in rs]) for e in eps}
        families[fam] = {"chosen": chosen["point"], "best_val": max(c["val"] for c in cands),
                         "eligible": [c["point"] for c in eligible], "candidates": cands, "test": test}
    comparisons = []
    local = chosen_rows["local"]
    for fam, rs in chosen_rows.items():
        if fam == "local":
            continue
        seeds = sorted({r["seed"] for r in local} & {r["seed"] for r in rs})
        la = [r for r in local if r["seed"] in seeds]
        lb = [r for r in rs if r["seed"] in seeds]
        for what, e in [("clean", None)] + [("worst", e) for e in eps]:
            boot = stats.paired_bootstrap(_bits(la, what, e), _bits(lb, what, e), n_boot=n_boot, seed=3)
            comparisons.append({"task": task, "family": fam, "metric": what, "eps": e, "seeds": seeds,
                                "local_point": families["local"]["chosen"], "point": families[fam]["chosen"],
                                "diff_mean": boot["diff_mean"], "diff_ci95": boot["ci"], "p_value": boot["p_value"]})
    return {"tolerance": SELECT_TOL, "headline_eps": headline, "families": families, "comparisons": comparisons}


def finish(selection: dict[str, dict]) -> None:
    """Holm over every comparison of every task, and each comparison's verdict ("higher" / "lower":
    the local rule's chosen setting against the family's, significant after Holm; else "no
    significant difference")."""
    cs = [c for s in selection.values() for c in s["comparisons"]]
    for c, p in zip(cs, stats.holm([c["p_value"] for c in cs])):
        c["p_holm"] = p
        sig = p is not None and p < ALPHA
        c["verdict"] = ("higher" if c["diff_mean"] > 0 else "lower") if sig else "no significant difference"


def _fmt(d: dict) -> str:
    return f"{d['mean']:.3f} ± {d['std']:.3f}"


def _robust_words(sel: dict) -> str:
    """What the families of a run with training for robustness (issue 33) also range over; "" without."""
    fams = {f: d for s in sel.values() for f, d in s["families"].items()}
    noise = any(":noise=" in c["point"] for d in fams.values() for c in d["candidates"])
    adv = [f for f in ROBUST_METHODS if f in fams]
    return ((", each with its input-noise levels" if noise else "")
            + (f"; {', '.join(adv)} over their training radius" + (" and TRADES' beta" if "backprop-trades" in adv
                                                                    else "") if adv else ""))


def selection_lines(results: dict) -> list[str]:
    """results.md's section: per task, each family's chosen setting with its test numbers, and the
    local rule's chosen setting against each family's."""
    sel = results.get("selection")
    if not sel:
        return []
    lines = ["", "## Validation robustness selection (the headline robustness comparison)", "",
             f"Per family (the local rule over its frontier settings, backprop over its weight decays and rates, the "
             f"linear model and random features over their L2 strengths{_robust_words(sel)}), the setting with the highest worst-case "
             f"accuracy on the VALIDATION split (attacked there, worst case of the suite at the frontier eps) among "
             f"the settings within {SELECT_TOL:g} of the family's best mean validation accuracy; ties by the mean "
             f"validation worst case over the eps, then validation accuracy. Test numbers (mean ± std over seeds) "
             f"of the chosen settings only; local − family: paired bootstrap over seeds and test examples, "
             f"Holm-adjusted over every comparison here.", ""]
    for t, s in sel.items():
        fams = s["families"]
        es = list(next(iter(fams.values()))["test"]["worst"])
        lines += [f"### {t} (chosen at eps {s['headline_eps']})", "",
                  "| family | chosen | eligible | clean | " + " | ".join(f"worst @ {e}" for e in es)
                  + " | " + " | ".join(f"certified @ {e}" for e in es) + " |",
                  "|---|---|---|---|" + "---|" * (2 * len(es))]
        for fam, f in fams.items():
            cert = f["test"].get("certified", {})
            lines.append(f"| {fam} | {f['chosen']} | {len(f['eligible'])} of {len(f['candidates'])} | "
                         f"{_fmt(f['test']['clean'])} | " + " | ".join(_fmt(f["test"]["worst"][e]) for e in es)
                         + " | " + " | ".join(f"{cert[e]['mean']:.3f}" if e in cert else "-" for e in es) + " |")
        lines += ["", "| local − family | metric | difference [95% CI] | p (Holm) | verdict |", "|---|---|---|---|---|"]
        for c in s["comparisons"]:
            what = "clean" if c["metric"] == "clean" else f"worst @ {c['eps']}"
            # a raw p-value at the bootstrap's floor 1/(B+1) is an upper bound, and so is its Holm adjustment
            ptxt = "-" if c["p_holm"] is None else stats.holm_text(c, results["settings"].get("n_boot", 2000))
            lines.append(f"| {c['family']} | {what} | {c['diff_mean']:+.3f} [{c['diff_ci95'][0]:+.3f}, "
                         f"{c['diff_ci95'][1]:+.3f}] | {ptxt} | {c['verdict']} |")
        lines.append("")
    return lines


SHORT = {"higher": "higher", "lower": "lower", "no significant difference": "n.s."}


def selection_table(results: list[dict], eps: str = "0.1") -> str:
    """The README's robustness table: per task of every run in ``results``, each family's chosen
    setting's mean clean / worst-case test accuracy at ``eps``, and the local rule's paired verdict
    against each family's chosen setting there (Holm within its run)."""
    fams = [f for f in FAMILIES if any(f in s["families"] for r in results for s in r.get("selection", {}).values())]
    lines = ["| task | seeds | " + " | ".join(fams) + f" | local − family, worst @ {eps} |",
             "|---|---|" + "---|" * len(fams) + "---|"]
    for res in results:
        for t, s in res.get("selection", {}).items():
            cells = []
            for f in fams:
                d = s["families"].get(f)
                cells.append("-" if d is None else
                             f"{d['test']['clean']['mean']:.3f} / {d['test']['worst'][eps]['mean']:.3f}")
            cmp = [c for c in s["comparisons"] if c["metric"] == "worst" and c["eps"] == eps]
            verdicts = "; ".join(f"{c['family']} {c['diff_mean']:+.3f} ({SHORT[c['verdict']]})" for c in cmp)
            n = len(s["families"]["local"]["candidates"][0]["seeds"])
            lines.append(f"| {t} | {n} | " + " | ".join(cells) + f" | {verdicts} |")
    return "\n".join(lines) + "\n"
