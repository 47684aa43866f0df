"""The suite's two modes and its budget: panel (every attack on every example) and worst-case-only
(survivors only, cheapest first) give the same worst case; the worst case carries over eps; the
sanity eps get the small budget; ``bench --attacks`` reports and refuses like the rest of bench."""

import numpy as np
import pytest
import torch
from test_native_attacks import _model

from localstdp.cli import main
from localstdp.robustness import AttackSettings, SuiteResult, add_worst, attack_suite
from localstdp.robustness.suite import _budget


def test_worst_case_carries_over_eps():
    t, f = True, False
    res = SuiteResult(clean=np.array([t, t, t]), correct={
        "pgd": {"0.1": np.array([t, f, t]), "0.05": np.array([t, t, f]), "0.3": np.array([t, t, t])},
        "fgsm": {"0.1": np.array([t, t, t]), "0.05": np.array([t, t, t]), "0.3": np.array([f, t, t])}})
    add_worst(res)
    w = res.correct["worst"]
    assert w["0.05"].tolist() == [t, t, f]
    assert w["0.1"].tolist() == [t, f, f]  # example 2 broke at 0.05: broken at 0.1 though pgd@0.1 missed it
    assert w["0.3"].tolist() == [f, f, f]
    assert list(w) == ["0.1", "0.05", "0.3"]  # the keys keep their order


@pytest.mark.parametrize("k", [2, 10])
def test_worst_only_mode_equals_the_panel_worst_case(k):
    net, x, y = _model(k)
    s = AttackSettings(eps=(0.03, 0.06, 0.1, 0.5), pgd_steps=10, pgd_restarts=2, square_queries=40, apgd_steps=12,
                       sanity_steps=4, sanity_queries=5)
    panel = attack_suite(net, x.flatten(1).numpy(), y.numpy(), (1, 8, 8), k, s, seed=3)
    add_worst(panel)
    fast = attack_suite(net, x.flatten(1).numpy(), y.numpy(), (1, 8, 8), k, s, seed=3, worst_only=True)
    assert set(fast.correct) == {"worst"}
    for key, w in panel.correct["worst"].items():
        assert np.array_equal(fast.correct["worst"][key], w), key
    accs = [panel.correct["worst"][key].mean() for key in ("0.03", "0.06", "0.1")]
    assert 0 < accs[-1] < accs[0] < panel.clean.mean()  # not vacuous: some break, some survive
    add_worst(fast)  # a worst-only result stays as it is
    assert set(fast.correct) == {"worst"}


def test_sanity_eps_get_the_small_budget():
    s = AttackSettings()
    assert _budget(s, 0.3)["pgd_steps"] == 40 and _budget(s, 0.3)["pgd_restarts"] == 3
    assert _budget(s, 0.5) == {"pgd_steps": 10, "pgd_restarts": 1, "apgd_steps": 10, "apgd_restarts": 1,
                               "square_queries": 30, "search_queries": 30, "autoattack_queries": None}
    with pytest.raises(ValueError, match="sanity_eps"):
        AttackSettings(sanity_eps=0.0)
    with pytest.raises(ValueError, match="sanity_steps"):
        AttackSettings(sanity_steps=0)


def test_panel_suite_counts_clean_mistakes_under_every_attack():
    net, x, y = _model(10)
    y = y.clone()
    y[:6] = (y[:6] + 1) % 10  # six clean mistakes
    res = attack_suite(net, x.flatten(1).numpy(), y.numpy(), (1, 8, 8), 10,
                       AttackSettings(eps=(0.01,), pgd_steps=3, pgd_restarts=1, square_queries=3, apgd_steps=3), seed=0)
    assert (~res.clean).any()
    for attack, per in res.correct.items():
        assert not (per["0.01"] & ~res.clean).any(), attack
    # the transfer examples are full-strength PGD examples inside the ball
    for a in res.adversarial["0.01"]:
        assert a.shape == (len(y), 1, 8, 8) and np.abs(a - x.numpy()).max() <= 0.01 + 1e-6


def test_bench_attacks_refuses_an_unknown_case(capsys, tmp_path):
    code = main(["bench", "--attacks", "nope", "--out", str(tmp_path / "a.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "unknown case 'nope'" in err[0]
    assert not (tmp_path / "a.json").exists()


def test_bench_attacks_markdown():
    from localstdp.bench.attacks import render_markdown

    md = render_markdown({"cases": {"mnist-3v5": {"examples": 300, "panel_s": 8.04, "worst_only_s": 4.5,
                                                  "target_s": 10.0, "target_met": True, "panel_worst_0.1": 0.65,
                                                  "worst_only_worst_0.1": 0.65},
                                    "fashion-mnist": {"skipped": "no IDX files"}},
                          "reproduce": {"command": "localstdp reproduce ...", "wall_s": 58.2, "target_s": 60.0,
                                        "target_met": True}}, "localstdp bench --attacks")
    assert "| mnist-3v5 | 300 | 8.0 | 4.5 | <= 10 | yes | 0.650 / 0.650 |" in md
    assert "skipped: no IDX files" in md and "end to end: 58 s (target <= 60 s: met)" in md
    assert torch.get_num_threads() >= 1
