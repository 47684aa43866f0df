"""Verdicts, tables and sentences from hand-made rows (no training): the numbers printed are the
numbers computed, a significant difference is never "equivalent", a robustness advantage that fails
a masking check is "not established", and the README's table and docs/results.md's tables and sentences
are the ones the committed results.json generates."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from localstdp.evaluation.analysis import summarise
from localstdp.evaluation.report import markdown, write_report
from localstdp.evaluation.settings import pack

ROOT = Path(__file__).resolve().parents[1]
N = 400


def _bits(rate: float, perm) -> np.ndarray:
    """The first rate*N examples of a per-seed order: both methods of a seed share the easy ones."""
    b = np.zeros(N, dtype=bool)
    b[perm[: int(round(rate * N))]] = True
    return b


def _row(method, seed, clean, rob, checks_ok=True):
    perm = np.random.default_rng(seed).permutation(N)
    c, w = _bits(clean, perm), _bits(rob, perm)
    per = {a: {"0.1": pack(w), "1.0": pack(np.zeros(N, bool))} for a in ("fgsm", "pgd", "worst")}
    ra = {a: {"0.1": float(w.mean()), "1.0": 0.0} for a in ("fgsm", "pgd", "worst")}
    return {"task": "toy", "method": method, "seed": seed, "clean_accuracy": float(c.mean()), "n_test": N,
            "n_attacked": N, "val_accuracy": 0.9, "attacked_clean_accuracy": float(c.mean()), "robust_accuracy": ra,
            "per_example": {"clean": pack(c)} | per, "zero_gradient_fraction": 0.0,
            "checks": {"pgd_le_fgsm": checks_ok}, "history": [], "epoch": 2, "epochs": 2}


def _results(local_clean, bp_clean, local_rob, bp_rob, checks_ok=True, margin=0.02):
    rows = []
    for s in range(5):
        rows.append(_row("local", s, local_clean, local_rob, checks_ok))
        rows.append(_row("backprop", s, bp_clean, bp_rob))
    st = {"methods": ["local", "backprop"], "seeds": list(range(5)), "frontier_seeds": [], "n_boot": 500,
          "match_tol": 0.01, "attacks": {"eps": [0.1, 1.0], "pgd_steps": 3, "pgd_restarts": 1},
          "tasks": {"toy": {"equivalence_margin": margin, "methods": {
              "local": {"lr": 0.1, "a_hi": 0.9, "a_lo": 0.1, "mode": "rate", "weight_decay": 0.0},
              "backprop": {"optimizer": "adam", "lr": 0.001, "weight_decay": 0.0}}}}}
    return summarise({"settings": st, "rows": rows, "matched": [], "frontier_rows": []})


def test_robust_advantage_with_a_failed_check_is_not_established():
    ok = _results(0.95, 0.95, 0.45, 0.15)
    bad = _results(0.95, 0.95, 0.45, 0.15, checks_ok=False)
    assert ok["claims"]["toy"]["robustness_worst"] == "higher"
    assert bad["claims"]["toy"]["robustness_worst"].startswith("not established (local:pgd_le_fgsm")


def test_a_significant_difference_is_never_called_equivalent():
    # 2 points apart on 5 x 400 examples with identical seeds: inside a 0.03 margin, but significant
    res = _results(0.95, 0.93, 0.4, 0.4, margin=0.03)
    c = next(c for c in res["comparisons"] if c["attack"] is None)
    assert c["p_holm"] < 0.05 and c["verdict"] == "higher"
    same = _results(0.95, 0.95, 0.4, 0.4, margin=0.03)
    assert next(c for c in same["comparisons"] if c["attack"] is None)["verdict"] == "equivalent"


def test_tables_and_sentences_print_the_computed_numbers(tmp_path):
    res = _results(0.95, 0.94, 0.45, 0.15)
    md = markdown(res)
    c = next(c for c in res["comparisons"] if c["attack"] is None)
    assert f"{c['local_mean']:.3f}" in md and f"{c['diff_mean']:+.3f}" in md
    for s in res["claims"]["toy"]["sentences"]:
        assert s in md
    assert "0.450 ± 0.000" in md  # local worst case at eps 0.1, mean ± std over seeds
    written = write_report(res, tmp_path)
    assert json.loads(written[0].read_text())["claims"] == json.loads(json.dumps(res["claims"]))


def test_sentences_write_a_floored_p_value_as_a_bound():
    res = _results(0.95, 0.80, 0.45, 0.15)  # far apart: no replicate crosses zero
    c = next(c for c in res["comparisons"] if c["attack"] is None)
    assert c["p_value"] == pytest.approx(1 / (res["settings"].get("n_boot", 2000) + 1))
    s = res["claims"]["toy"]["sentences"][0]
    assert f"Holm-adjusted p ≤ {c['p_holm']:.2g}: higher." in s
    assert f"| ≤ {c['p_holm']:.2g} | higher |" in markdown(res)


@pytest.mark.parametrize("run", ["reproduce", "nonlinear", "nonlinear/ten", "reproduce/peers", "reproduce/peers-fashion"])
def test_committed_claims_are_what_their_stored_numbers_generate(run):
    """Each committed run's verdicts and sentences equal analysis.claims on its stored numbers (so a change in
    how a number is written is re-rendered: scripts/rerender-results.py)."""
    from localstdp.evaluation.analysis import claims

    path = ROOT / "docs" / run / "results.json"
    if not path.exists():
        pytest.skip("no committed results")
    res = json.loads(path.read_text())
    assert {t: claims(res, t) for t in res["claims"]} == res["claims"]
    assert (path.parent / "results.md").read_text() == markdown(res)


def test_readme_result_sentences_come_from_the_committed_results():
    """The README's one table and docs/results.md's tables and sentences (the blocks between the markers)
    are exactly what docs/reproduce/results.json generates."""
    path = ROOT / "docs" / "reproduce" / "results.json"
    readme = (ROOT / "README.md").read_text()
    page = (ROOT / "docs" / "results.md").read_text()
    if not path.exists():
        pytest.skip("no committed reproduction results")
    res = json.loads(path.read_text())
    m = re.search(r"<!-- results:begin -->\n(.*?)<!-- results:end -->", page, re.S)
    assert m, "docs/results.md lacks the generated results block"
    expected = "".join(f"- {s}\n" for t in res["claims"] for s in res["claims"][t]["sentences"])
    assert m.group(1) == expected
    from localstdp.evaluation.report import readme_tables

    tables = re.search(r"<!-- tables:begin -->\n(.*?)<!-- tables:end -->", page, re.S)
    assert tables and tables.group(1) == readme_tables(res)
    spec = importlib.util.spec_from_file_location("update_readme_results", ROOT / "scripts/update-readme-results.py")
    upd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(upd)
    summary = re.search(r"<!-- summary:begin -->\n(.*?)<!-- summary:end -->", readme, re.S)
    assert summary, "README lacks the generated summary table"
    assert summary.group(1) == upd.summary_table(res)
    assert summary.group(1).count("| task |") == 1 and summary.group(1).count("\n| ") == len(res["checks"]) + 1


def test_selection_blocks_come_from_the_committed_results():
    """README's robustness table and sentences, docs/results.md's selection section and docs/nonlinear.md's
    generated blocks are exactly what the committed results.json files generate (issue 23)."""
    paper_path = ROOT / "docs" / "reproduce" / "results.json"
    nonlinear_path = ROOT / "docs" / "nonlinear" / "results.json"
    if not paper_path.exists():
        pytest.skip("no committed reproduction results")
    paper = json.loads(paper_path.read_text())
    nonlinear = json.loads(nonlinear_path.read_text()) if nonlinear_path.exists() else None
    ten_path = ROOT / "docs" / "nonlinear" / "ten" / "results.json"
    ten = json.loads(ten_path.read_text()) if ten_path.exists() else None
    spec = importlib.util.spec_from_file_location("update_readme_results", ROOT / "scripts/update-readme-results.py")
    upd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(upd)
    blocks = upd.selection_blocks(paper, nonlinear, ten)
    if paper.get("selection"):
        assert {(p.name, tag) for p, tag in blocks} >= {("README.md", "selection"), ("results.md", "selection")}
    for (path, tag), body in blocks.items():
        m = re.search(rf"<!-- {tag}:begin -->\n(.*?)<!-- {tag}:end -->", path.read_text(), re.S)
        assert m, f"{path.name} lacks the generated {tag} block"
        assert m.group(1) == body, f"{path.name}: the {tag} block is not what the results generate"


def test_robust_blocks_come_from_the_committed_results():
    """README's and docs/results.md's blocks of the robustly trained families (issue 33) are exactly what
    docs/robust/results.json (--suite robust) and the Fashion-MNIST panel runs beside it generate."""
    paper_path = ROOT / "docs" / "robust" / "results.json"
    if not paper_path.exists():
        pytest.skip("no committed robust-suite results")
    paper = json.loads(paper_path.read_text())
    fashion = [json.loads((ROOT / "docs" / "robust" / t / "results.json").read_text())
               for t in ("fashion-0v6", "fashion-2v6", "fashion-mnist-small")
               if (ROOT / "docs" / "robust" / t / "results.json").exists()]
    spec = importlib.util.spec_from_file_location("update_readme_results", ROOT / "scripts/update-readme-results.py")
    upd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(upd)
    blocks = upd.robust_blocks(paper, fashion)
    assert {f for f in paper["selection"]["mnist-3v5"]["families"]} >= {"backprop-at", "backprop-trades", "local-at"}
    for (path, tag), body in blocks.items():
        m = re.search(rf"<!-- {tag}:begin -->\n(.*?)<!-- {tag}:end -->", path.read_text(), re.S)
        assert m, f"{path.name} lacks the generated {tag} block"
        assert m.group(1) == body, f"{path.name}: the {tag} block is not what the results generate"
