"""The frontier verdict can come out every way (issue 23, item 5): "above" needs backprop points of
COMPARABLE clean accuracy (95% CIs overlapping, touching included, or within 3 test examples) that
are all less robust beyond both CIs; an empty comparison is "not comparable", never "above"; a more
accurate backprop point more robust beyond both CIs is "below"; anything else "on". Hand-made points,
one case per answer, and the words the report and the README sentences print for each."""

from __future__ import annotations

from localstdp.evaluation.analysis import TOL_EXAMPLES, comparable, frontier_phrase, frontier_summary, frontier_verdict


def pt(clean, rob, c_half=0.01, r_half=0.01, n_test=300):
    return {"clean": {"mean": clean, "ci95": [clean - c_half, clean + c_half]},
            "worst": {"0.1": {"mean": rob, "ci95": [rob - r_half, rob + r_half]}}, "n_test": n_test}


def test_each_answer():
    bp = [pt(0.95, 0.20), pt(0.93, 0.40), pt(0.90, 0.55)]
    assert frontier_verdict(pt(0.94, 0.45), bp, "0.1") == "above"  # both comparable points less robust, beyond CIs
    assert frontier_verdict(pt(0.94, 0.30), bp, "0.1") == "below"  # 0.93 / 0.40 beyond both CIs
    assert frontier_verdict(pt(0.94, 0.405), bp, "0.1") == "on"  # robust CIs overlap with 0.93 / 0.40
    assert frontier_verdict(pt(0.89, 0.50), bp, "0.1") == "below"  # 0.90 / 0.55 dominates


def test_an_empty_comparison_is_not_comparable_never_above():
    bp = [pt(0.95, 0.20), pt(0.93, 0.40), pt(0.90, 0.55)]
    # 0.97 +- 0.005 against at most 0.95 +- 0.01: a gap of 0.005 (1.5 of 300 test examples) ... comparable
    assert frontier_verdict(pt(0.97, 0.20, c_half=0.005), bp, "0.1") == "on"
    assert frontier_verdict(pt(0.97, 0.10, c_half=0.005), bp, "0.1") == "below"  # 0.95 / 0.20 is comparable
    # ... but 0.99 +- 0.005 is 0.025 (7.5 examples) beyond the most accurate backprop point: nothing to compare
    assert frontier_verdict(pt(0.99, 0.90, c_half=0.005), bp, "0.1") == "not comparable"
    assert frontier_verdict(pt(0.99, 0.90, c_half=0.005), [], "0.1") == "not comparable"
    # issue 23's mnist-4v9: every local seed 290/300 (a zero-width CI), backprop at most 0.95 +- 0.002
    lone = pt(290 / 300, 0.60, c_half=0.0)
    far = [pt(0.95, 0.30, c_half=0.002), pt(0.94, 0.40, c_half=0.002)]
    assert frontier_verdict(lone, far, "0.1") == "not comparable"  # the old code said "above"
    near = [pt(288 / 300, 0.30, c_half=0.0)]  # 2 examples apart: within the 3-example tolerance
    assert frontier_verdict(lone, near, "0.1") == "above"


def test_tolerance_and_touching_intervals():
    assert TOL_EXAMPLES == 3
    a = pt(0.90, 0.5, c_half=0.0)
    assert comparable(a, pt(0.90 + 3 / 300, 0.1, c_half=0.0), 300)  # exactly 3 examples apart
    assert not comparable(a, pt(0.90 + 4 / 300, 0.1, c_half=0.0), 300)  # 4 examples apart
    assert not comparable(a, pt(0.90 + 4 / 300, 0.1, c_half=0.0), None)  # no test size: intervals only
    # touching clean intervals (binary fractions: exact) are comparable; a hair apart, not
    assert comparable(pt(0.5, 0.5, c_half=0.125), pt(0.75, 0.1, c_half=0.125), 10**9)
    assert not comparable(pt(0.5, 0.5, c_half=0.125), pt(0.75 + 1e-6, 0.1, c_half=0.125), 10**9)
    # touching ROBUST intervals are not "beyond": on, not above / below
    bp = [pt(0.90, 0.5, r_half=0.125)]
    assert frontier_verdict(pt(0.90, 0.75, r_half=0.125), bp, "0.1") == "on"
    assert frontier_verdict(pt(0.90, 0.75 + 1e-6, r_half=0.125), bp, "0.1") == "above"
    assert frontier_verdict(pt(0.90, 0.25, r_half=0.125), bp, "0.1") == "on"
    assert frontier_verdict(pt(0.90, 0.25 - 1e-6, r_half=0.125), bp, "0.1") == "below"
    # a comparable point a little LESS accurate but more robust beyond both CIs: below
    assert frontier_verdict(pt(0.90, 0.25, c_half=0.0), [pt(0.90 - 2 / 300, 0.6, c_half=0.0)], "0.1") == "below"


def test_words_and_summary_rows():
    assert frontier_phrase({"0.05": "on", "0.1": "above"}) == "on it at eps 0.05, above it at eps 0.1"
    assert frontier_phrase({"0.1": "not comparable"}) == "outside its clean-accuracy range (not comparable) at eps 0.1"

    def row(point, method, knob, seed, clean, worst):
        return {"task": "t", "point": point, "method": method, "knob": knob, "value": None, "seed": seed,
                "clean_accuracy": clean, "val_accuracy": 0.9, "n_test": 300,
                "robust_accuracy": {"worst": {"0.1": worst}}}

    rows = [row("local", "local", "base", s, 290 / 300, 0.6) for s in range(3)]
    rows += [row("backprop:weight_decay=0.0", "backprop", "backprop.weight_decay", s, c, 0.3)
             for s, c in enumerate((0.93, 0.94, 0.935))]
    rows += [row("linear:l2=0.01", "linear", "backprop.weight_decay", s, 0.96, 0.7) for s in range(3)]
    fr = frontier_summary(rows, "t")
    assert fr["verdict"] == {"0.1": "not comparable"}  # backprop's 0.935 +- 0.012 stays below 0.9667 - 3/300
    assert fr["against"] == {"linear": {"0.1": "below"}}  # 0.96 / 0.70: 2 examples less accurate, more robust
    assert fr["points"][0]["n_test"] == 300
