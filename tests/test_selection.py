"""The validation robustness selection (issue 23, item 4b), backprop's rate re-chosen per weight decay,
the local rule's target-contrast knob, and the validation attack behind them."""

import numpy as np
import pytest
import torch

from localstdp.config import FrontierConfig
from localstdp.errors import ConfigError
from localstdp.evaluation import stats
from localstdp.evaluation.analysis import frontier_summary
from localstdp.evaluation.points import from_panel, frontier_points, point_name
from localstdp.evaluation.selection import SELECT_TOL, choose, finish, selection_lines, selection_summary
from localstdp.evaluation.settings import GridSettings, pack
from localstdp.evaluation.units import val_robust


def cand(point, val, w10, w05=0.0):
    return {"point": point, "val": val, "val_worst": {"0.05": w05, "0.1": w10}}


def test_choose_best_worst_case_within_one_point_of_the_best_validation_accuracy():
    assert SELECT_TOL == 0.01
    cs = [cand("a", 0.95, 0.30), cand("b", 0.942, 0.40), cand("c", 0.93, 0.90), cand("d", 0.9401, 0.35)]
    chosen, eligible = choose(cs, "0.1")
    assert [c["point"] for c in eligible] == ["a", "b", "d"]  # c is 2 points below the best: not eligible
    assert chosen["point"] == "b"
    # exactly one point below the best is eligible (the tolerance is inclusive)
    assert [c["point"] for c in choose([cand("a", 0.95, 0.1), cand("e", 0.94, 0.2)], "0.1")[1]] == ["a", "e"]
    # ties on the headline eps: the mean over eps decides, then validation accuracy, then list order
    assert choose([cand("a", 0.95, 0.3, 0.5), cand("b", 0.95, 0.3, 0.6)], "0.1")[0]["point"] == "b"
    assert choose([cand("a", 0.945, 0.3, 0.5), cand("b", 0.95, 0.3, 0.5)], "0.1")[0]["point"] == "b"
    assert choose([cand("a", 0.95, 0.3, 0.5), cand("b", 0.95, 0.3, 0.5)], "0.1")[0]["point"] == "a"


def _row(task, method, point, seed, val, val_worst, clean_bits, worst_bits):
    n = len(clean_bits)
    return {"task": task, "method": method, "point": point, "knob": "k", "value": None, "seed": seed,
            "val_accuracy": val, "clean_accuracy": float(np.mean(clean_bits)), "n_test": n, "n_attacked": n,
            "robust_accuracy": {"worst": {"0.05": float(np.mean(worst_bits)), "0.1": float(np.mean(worst_bits))}},
            "per_example": {"clean": pack(clean_bits), "worst": {"0.05": pack(worst_bits), "0.1": pack(worst_bits)}},
            "val_robust": {"n": 50, "clean": val, "worst": {"0.05": val_worst, "0.1": val_worst}}}


def test_selection_summary_reports_only_the_chosen_settings_and_pairs_them_by_seed():
    rng = np.random.default_rng(0)
    n = 40
    rows = []
    bits = {}
    for point, method, val, vw in (("local", "local", 0.95, 0.2), ("local:eta=0.5", "local", 0.945, 0.5),
                                   ("local:eta=2", "local", 0.90, 0.9),
                                   ("backprop:wd=0", "backprop", 0.96, 0.1), ("backprop:wd=0.1", "backprop", 0.955, 0.3),
                                   ("linear:l2=1", "linear", 0.93, 0.6)):
        for s in range(3):
            clean = rng.random(n) < 0.9
            worst = clean & (rng.random(n) < 0.5)
            bits[point, s] = (clean, worst)
            rows.append(_row("t", method, point, s, val, vw, clean, worst))
    rows.append(_row("other", "local", "local", 0, 0.9, 0.1, np.ones(n, bool), np.ones(n, bool)))
    sel = selection_summary(rows, "t", n_boot=500)
    fams = sel["families"]
    assert {f: v["chosen"] for f, v in fams.items()} == {"local": "local:eta=0.5", "backprop": "backprop:wd=0.1",
                                                         "linear": "linear:l2=1"}
    assert fams["local"]["eligible"] == ["local", "local:eta=0.5"]  # eta=2 is 5 points below the best
    assert fams["local"]["test"]["clean"]["mean"] == pytest.approx(np.mean([bits["local:eta=0.5", s][0].mean()
                                                                            for s in range(3)]))
    c = next(c for c in sel["comparisons"] if c["family"] == "backprop" and c["metric"] == "worst" and c["eps"] == "0.1")
    la = np.stack([bits["local:eta=0.5", s][1] for s in range(3)])
    lb = np.stack([bits["backprop:wd=0.1", s][1] for s in range(3)])
    ref = stats.paired_bootstrap(la, lb, n_boot=500, seed=3)
    assert c["diff_mean"] == pytest.approx(la.mean() - lb.mean()) and c["diff_ci95"] == ref["ci"]
    assert c["seeds"] == [0, 1, 2]
    finish({"t": sel})
    ps = [c["p_value"] for c in sel["comparisons"]]
    assert [c["p_holm"] for c in sel["comparisons"]] == stats.holm(ps)
    assert all(c["verdict"] == ("no significant difference" if c["p_holm"] >= 0.05 else
                                "higher" if c["diff_mean"] > 0 else "lower") for c in sel["comparisons"])
    text = "\n".join(selection_lines({"selection": {"t": sel}, "settings": {"n_boot": 500}}))
    assert "| local | local:eta=0.5 | 2 of 3 |" in text
    # a p-value at the bootstrap's floor 1/(B+1) is written as a bound, with its Holm adjustment
    floored = {"t": {**sel, "comparisons": [dict(sel["comparisons"][0], p_value=1 / 501, p_holm=9 / 501)]}}
    assert f"| ≤ {9 / 501:.2g} |" in "\n".join(selection_lines({"selection": floored, "settings": {"n_boot": 500}}))
    # without validation attacks there is nothing to select by
    assert selection_summary([{k: v for k, v in r.items() if k != "val_robust"} for r in rows], "t") is None


def test_backprop_rate_rechosen_per_weight_decay_and_target_contrast_points():
    f = FrontierConfig(backprop_weight_decay=[0.0, 0.01], backprop_lr=[0.001, 0.003], local_weight_decay=[],
                       local_targets=[[0.7, 0.3]], linear_l2=[0.1])

    class Cfg:  # what frontier_points reads
        frontier = f

    pts = frontier_points(Cfg, ("local", "backprop", "linear"))
    assert [point_name(p) for p in pts] == [
        "backprop:weight_decay=0.0,lr=0.001", "backprop:weight_decay=0.0,lr=0.003",
        "backprop:weight_decay=0.01,lr=0.001", "backprop:weight_decay=0.01,lr=0.003", "local",
        "local:a_hi=0.7,a_lo=0.3", "linear:l2=0.1"]
    assert not any(set("/\\") & set(point_name(p)) for p in pts)  # names are file names in OUT/units
    assert pts[1]["overrides"] == ["backprop.weight_decay=0.0", "backprop.lr=0.003"]
    assert pts[5]["overrides"] == ["rule.a_hi=0.7", "rule.a_lo=0.3"]
    with pytest.raises(ConfigError, match="local_targets"):
        FrontierConfig(local_targets=[[0.3, 0.7]])
    with pytest.raises(ConfigError, match="backprop_lr"):
        FrontierConfig(backprop_lr=[0.0])

    def row(point, lr, wd, seed, val, clean, worst):
        return {"task": "t", "point": point, "method": "backprop", "knob": "backprop.weight_decay", "value": wd,
                "lr": lr, "seed": seed, "clean_accuracy": clean, "val_accuracy": val, "n_test": 300,
                "robust_accuracy": {"worst": {"0.1": worst}}}

    rows = [row(f"bp{wd},{lr}", lr, wd, s, val, 0.9, w) for wd, lr, val, w in
            ((0.0, 0.001, 0.90, 0.1), (0.0, 0.003, 0.92, 0.2), (0.01, 0.001, 0.95, 0.5), (0.01, 0.003, 0.80, 0.9))
            for s in range(2)]
    rows += [{**row("local", None, None, s, 0.9, 0.9, 0.3), "method": "local", "knob": "base"} for s in range(2)]
    fr = frontier_summary(rows, "t")
    on = {p["point"]: p.get("on_frontier") for p in fr["points"] if p["method"] == "backprop"}
    assert on == {"bp0.0,0.001": False, "bp0.0,0.003": True, "bp0.01,0.001": True, "bp0.01,0.003": False}
    # the 0.9-robust point was trained at a rate validation rejects: it does not make the local rule "below"
    assert fr["verdict"] == {"0.1": "below"}  # 0.5 at wd 0.01 (its best-validation rate) is beyond 0.3


def test_from_panel_needs_the_same_rate():
    from localstdp.config import load_config

    cfg = load_config("mnist-3v5")
    wd, lr = cfg.backprop.weight_decay, cfg.backprop.lr
    base = {"method": "backprop", "knob": "backprop.weight_decay", "value": wd}
    assert from_panel(base, cfg) == "backprop"
    assert from_panel(base | {"lr": lr}, cfg) == "backprop"
    assert from_panel(base | {"lr": lr / 3}, cfg) is None


def test_val_robust_attacks_a_fixed_validation_subset():
    import dataclasses

    from localstdp.config import load_config
    from localstdp.data import load_dataset
    from localstdp.evaluation.settings import attack_indices
    from localstdp.evaluation.units import VAL_ATTACK_SEED, train_method
    from localstdp.robustness.suite import AttackSettings, add_worst, attack_suite

    cfg = load_config("mnist-3v5").with_sets(["train.epochs=2"])
    ds = load_dataset(cfg.data)
    t = train_method(cfg, "backprop", ds, 0)
    attacks = AttackSettings(pgd_steps=3, pgd_restarts=1, square_queries=5, autoattack=False)
    off = GridSettings(seeds=1, attacks=attacks)
    assert val_robust(t.model, ds, off, 0) is None  # val_attack = 0: off
    on = GridSettings(seeds=1, attacks=attacks, val_attack=40)
    got = val_robust(t.model, ds, on, 0)
    idx = attack_indices(len(ds.y_val), 40, seed=VAL_ATTACK_SEED)
    assert got["n"] == 40 == len(idx)
    ref = attack_suite(t.model, ds.x_val[idx].numpy(), ds.y_val[idx].numpy(), ds.input_shape, ds.n_classes,
                       dataclasses.replace(attacks, eps=on.frontier_eps), seed=0, worst_only=True)
    add_worst(ref)
    assert got["worst"] == ref.accuracy()["worst"]
    with torch.no_grad():
        pred = t.model(ds.x_val[idx]).argmax(1)
    assert got["clean"] == pytest.approx(float((pred == ds.y_val[idx]).float().mean()))
    assert got["worst"]["0.1"] <= got["worst"]["0.05"] <= got["clean"]
    with pytest.raises(ConfigError, match="val_attack"):
        GridSettings(val_attack=-1)
