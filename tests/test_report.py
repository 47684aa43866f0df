"""Verdicts and tables from hand-made rows (no training): the numbers printed are the numbers
computed, and a robustness advantage that fails a masking check is "not established"."""

from __future__ import annotations

import json

import pytest

from localstdp import experiments as E
from localstdp.report import markdown, write_report
from localstdp.robustness import CHECKS, AttackSettings, eps_key

EPS = (0.1, 1.0)


def _row(task, method, seed, clean, rob, checks_ok=True):
    ra = {a: {eps_key(0.1): rob, eps_key(1.0): 0.0} for a in ("fgsm", "pgd", "noise", "transfer", "worst")}
    return {"task": task, "method": method, "seed": seed, "clean_accuracy": clean, "train_accuracy": clean,
            "attacked_clean_accuracy": clean, "n_attacked": 100, "robust_accuracy": ra,
            "zero_gradient_fraction": 0.0, "checks": {c: checks_ok for c in CHECKS},
            "check_values": {c: -0.01 for c in CHECKS}, "epochs": 2,
            "history": [{"epoch": 1, "loss": 1.0, "train_accuracy": clean - 0.1, "test_accuracy": clean - 0.1},
                        {"epoch": 2, "loss": 0.5, "train_accuracy": clean, "test_accuracy": clean}],
            "wall_seconds": 0.0}


def _results(masked_local: bool):
    rows = []
    local_rob = [0.45, 0.47, 0.44, 0.46, 0.48]
    bp_rob = [0.20, 0.18, 0.21, 0.19, 0.22]
    local_clean = [0.950, 0.945, 0.955, 0.950, 0.948]
    bp_clean = [0.951, 0.947, 0.953, 0.950, 0.949]
    for s in range(5):
        rows.append(_row("toy", "local", s, local_clean[s], local_rob[s], checks_ok=not (masked_local and s == 3)))
        rows.append(_row("toy", "backprop", s, bp_clean[s], bp_rob[s]))
    res = {"settings": {"seeds": list(range(5)), "attacks": {**vars(AttackSettings()), "eps": list(EPS)},
                        "match_tol": 0.01}, "rows": rows, "matched": []}
    res.update(E.summarise(rows, [], EPS))
    return res


def test_summary_numbers_and_verdicts():
    res = _results(masked_local=False)
    clean = next(c for c in res["comparisons"] if c["metric"] == "clean_accuracy")
    assert clean["local_mean"] == pytest.approx(0.9496) and clean["backprop_mean"] == pytest.approx(0.95)
    worst = next(c for c in res["comparisons"] if c["attack"] == "worst")
    assert worst["diff_mean"] == pytest.approx(0.46 - 0.20)
    assert worst["p_value"] < 1e-4
    v = res["claims"]["toy"]
    assert v["accuracy"].startswith("comparable")
    assert v["robustness_worst"] == "local more robust" and v["robustness_fgsm"] == "local more robust"
    assert v["robustness_matched"].startswith("not needed")
    md = markdown(res)
    assert "| toy | worst | 0.460 ± 0.016 | 0.200 ± 0.016 | +0.260" in md
    assert "0.950 ± 0.004" in md  # local clean accuracy, mean ± std


def test_failed_check_makes_the_advantage_not_established():
    res = _results(masked_local=True)
    assert res["checks"]["toy"]["local"] == {c: False for c in CHECKS}  # one seed failing fails the cell
    assert res["checks"]["toy"]["backprop"] == {c: True for c in CHECKS}
    v = res["claims"]["toy"]
    assert v["robustness_worst"].startswith("not established")
    assert "local:pgd_le_fgsm" in v["failed_checks"]
    assert "FAIL" in markdown(res)


def test_write_report_files(tmp_path):
    res = _results(masked_local=False)
    written = write_report(res, tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["results.json", "results.md", "robustness-toy.png", "training-toy.png"]
    assert json.loads((tmp_path / "results.json").read_text())["claims"] == res["claims"]
    assert (tmp_path / "robustness-toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
