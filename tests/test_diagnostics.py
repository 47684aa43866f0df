"""Diagnostics of what a model learned (issue 23, item 2): the participation ratio and median |cos| on
hand-made matrices, a hidden layer that makes XOR linearly separable beats the input's readout,
the certified radius is certified at itself and not one tolerance step above, CNN and Forward-Forward
are handled, and a tiny reproduce run carries the entry, the table and the figure."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from localstdp import evaluation as E
from localstdp.config_model import ConvLayer
from localstdp.data import Dataset
from localstdp.evaluation import diagnostics as D
from localstdp.evaluation.diagnostics_report import markdown_lines
from localstdp.evaluation.report import markdown, write_report
from localstdp.model import CNN, MLP
from localstdp.robustness import AttackSettings
from localstdp.robustness import bounds as D_bounds
from localstdp.robustness.bounds import certified_correct
from localstdp.rules.peers import FFScorer


def _orthogonal(n: int, seed: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))[0]


def test_participation_ratio_of_known_singular_values():
    s = torch.tensor([3.0, 2.0, 1.0, 0.0], dtype=torch.float64)
    m = _orthogonal(4, 0) @ torch.diag(s) @ _orthogonal(4, 1).T
    assert D.participation_ratio(m) == pytest.approx((9 + 4 + 1) ** 2 / (81 + 16 + 1))  # 2.0
    assert D.participation_ratio(torch.eye(5) * 7) == pytest.approx(5.0)  # k equal singular values: k
    assert D.participation_ratio(np.outer([1.0, 2, 3], [4.0, 5])) == pytest.approx(1.0)  # rank one
    assert D.participation_ratio(np.zeros((3, 2))) == 0.0


def test_median_abs_cos_on_hand_made_rows():
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # pairs: 0, 1/sqrt2, 1/sqrt2
    assert D.median_abs_cos(rows) == pytest.approx(1 / math.sqrt(2))
    assert D.median_abs_cos(np.vstack([rows, [[0.0, 0.0]]])) == pytest.approx(1 / math.sqrt(2))  # zero row left out
    # |cos|: opposite rows count as aligned; an even number of pairs takes the middle two's mean
    assert D.median_abs_cos(np.array([[1.0, 0], [-2.0, 0], [0, 1.0]])) == pytest.approx(0.0)
    four = np.array([[1.0, 0], [1.0, 1], [0, 1.0], [-1.0, 1]])  # |cos| 0, 0 and four of 1/sqrt2
    assert D.median_abs_cos(four) == pytest.approx(1 / math.sqrt(2))
    conv = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(0))  # a conv's weight: (out, in k k)
    assert D.median_abs_cos(conv) == D.median_abs_cos(conv.reshape(3, -1))
    assert math.isnan(D.median_abs_cos(np.array([[1.0, 2.0]])))


def _xor(n: int, seed: int):
    """Points near the corners of [0, 1]^2, label = XOR of the coordinates' bits: no line separates them."""
    g = np.random.default_rng(seed)
    bits = g.integers(0, 2, size=(n, 2))
    x = np.clip(bits + g.normal(0, 0.08, size=(n, 2)), 0, 1).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(bits[:, 0] ^ bits[:, 1]).long()


def _xor_data() -> Dataset:
    (xtr, ytr), (xv, yv), (xte, yte) = _xor(400, 0), _xor(100, 1), _xor(200, 2)
    return Dataset("xor", xtr, ytr, xte, yte, 2, (0, 1), (2,), xv, yv)


def _xor_model() -> MLP:
    """A fixed hidden layer h1 = OR, h2 = AND (sigmoids of x0 + x1 - 0.5 and - 1.5): XOR = h1 - h2, linear."""
    m = MLP(2, [2], 2)
    with torch.no_grad():
        m.layers[0].weight.copy_(torch.tensor([[10.0, 10.0], [10.0, 10.0]]))
        m.layers[0].bias.copy_(torch.tensor([-5.0, -15.0]))
        m.layers[1].weight.copy_(torch.tensor([[-5.0, 5.0], [5.0, -5.0]]))
        m.layers[1].bias.copy_(torch.tensor([2.5, -2.5]))
    return m


def test_a_hidden_layer_that_separates_xor_beats_the_input_readout():
    ds, model = _xor_data(), _xor_model()
    assert (model.predict(ds.x_test) == ds.y_test).float().mean() > 0.95
    d = D.model_diagnostics(model, ds, 50)
    assert list(d["readout"]) == ["input", "h1"] and [ly["name"] for ly in d["layers"]] == ["h1"]
    ro = d["readout"]
    assert ro["input"]["test_accuracy"] < 0.8 and ro["h1"]["test_accuracy"] > 0.95
    assert ro["h1"]["C"] in D.READOUT_C and 0 <= ro["h1"]["val_accuracy"] <= 1
    assert d["layers"][0]["units"] == 2 and d["layers"][0]["median_abs_cos"] == pytest.approx(1.0)  # both (1, 1)
    assert d["layers"][0]["weight_rank"] == pytest.approx(1.0)
    cr = d["certified_radius"]
    assert cr["n"] == 50 and len(cr["per_example"]) == 50 and cr["tolerance"] == 1 / 256
    assert 0 < cr["quantiles"]["0.5"] <= cr["quantiles"]["0.9"] <= D.RADIUS_MAX
    # the readout alone, without a validation split: C = 1, no validation accuracy
    linear = D.model_diagnostics(MLP(2, [], 2), ds, 20)  # no hidden layer (the panel's linear model)
    assert linear["layers"] == [] and list(linear["readout"]) == ["input"] and linear["certified_radius"]["n"] == 20
    alone = D.readout((ds.x_train, ds.y_train), (ds.x_val[:0], ds.y_val[:0]), (ds.x_test, ds.y_test))
    assert alone["C"] == 1.0 and alone["val_accuracy"] is None


def test_certified_radius_is_certified_at_itself_and_not_just_above():
    ds, model = _xor_data(), _xor_model()
    x, y = ds.x_test[:60].numpy(), ds.y_test[:60].numpy().copy()
    y[:3] = 1 - y[:3]  # three clean mistakes: never certified, radius 0
    tol = D.RADIUS_TOL
    r = D.certified_radii(model, x, y)
    assert (r[:3] == 0).all() and (r[3:] > 0).sum() > 40
    assert np.allclose(r / tol, np.round(r / tol)) and r.max() <= D.RADIUS_MAX
    for v in np.unique(r):
        sel = np.flatnonzero((r == v) & (np.arange(len(r)) >= 3))
        if len(sel) == 0:
            continue
        assert certified_correct(model, x[sel], y[sel], v).all()
        if v < D.RADIUS_MAX:
            assert not certified_correct(model, x[sel], y[sel], v + tol).any()
    coarse = D.certified_radii(model, x, y, max_eps=0.5, tol=1 / 16)
    assert (coarse <= r + 1e-12).all() and (r < coarse + 1 / 16).all()  # the coarser grid rounds down
    with pytest.raises(ValueError, match="whole multiple"):
        D.certified_radii(model, x, y, max_eps=0.3, tol=1 / 16)
    # the top of the range: certified at max_eps gives max_eps itself
    small = D.certified_radii(model, x, y, max_eps=1 / 16, tol=1 / 64)
    assert set(np.unique(small)) <= {0, 1 / 64, 2 / 64, 3 / 64, 1 / 16} and (small == 1 / 16).sum() > 20
    assert certified_correct(model, x[small == 1 / 16], y[small == 1 / 16], 1 / 16).all()
    assert not certified_correct(model, x[small == 3 / 64], y[small == 3 / 64], 1 / 16).any()


def test_radii_spared_by_the_attacks_are_the_same_radii(monkeypatch):
    """``broken`` (issue 32): examples an attack broke at eps <= a midpoint are not bounded there; the
    radii stay the same, with fewer examples bounded."""
    from localstdp.robustness import native

    ds, model = _xor_data(), _xor_model()
    x, y = ds.x_test[:60].numpy(), ds.y_test[:60].numpy()
    broken = {e: native.pgd(model, torch.from_numpy(x), torch.from_numpy(y), e, 20, 1)[0].any(0).numpy()
              for e in (0.15, 0.25, 0.4)}
    assert 0 < broken[0.15].sum() < broken[0.4].sum() < len(y)
    bounded = []
    real = D_bounds.margin_lower_bounds
    monkeypatch.setattr(D_bounds, "margin_lower_bounds", lambda m, xs, *a, **k: bounded.append(len(xs)) or real(m, xs, *a, **k))
    r = D.certified_radii(model, x, y)
    every, bounded[:] = sum(bounded), []
    assert np.array_equal(D.certified_radii(model, x, y, broken=broken), r) and sum(bounded) < every


def test_cnn_layers_and_ff_skipped():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(60, 64, generator=g)
    y = (x[:, :32].mean(1) > x[:, 32:].mean(1)).long()
    ds = Dataset("toy", x[:30], y[:30], x[45:], y[45:], 2, (0, 1), (1, 8, 8), x[30:45], y[30:45])
    cnn = CNN(64, [ConvLayer(3, kernel=3, padding=1, pool=2)], [5], 2)
    d = D.model_diagnostics(cnn, ds, 15)
    assert [ly["name"] for ly in d["layers"]] == ["conv1", "h1"] and list(d["readout"]) == ["input", "conv1", "h1"]
    assert [ly["units"] for ly in d["layers"]] == [3, 5]
    assert [a.shape[1] for a in D.hidden_activity(cnn, x[:4])] == [3 * 4 * 4, 5]  # after the pool, flattened
    assert d["layers"][0]["weight_rank"] <= 3 + 1e-9 and "skipped" in d["certified_radius"]
    ff = D.model_diagnostics(FFScorer(MLP(64, [5], 2)), ds, 15)
    assert set(ff) == {"skipped"} and "FFScorer" in ff["skipped"]


@pytest.fixture(scope="module")
def tiny_run():
    cfg = E.task_config("iris-1v2")
    cfg = dataclasses.replace(cfg, frontier=dataclasses.replace(cfg.frontier, backprop_weight_decay=[],
                                                                local_lr=[], local_epochs=[], local_weight_decay=[]))
    attacks = AttackSettings(pgd_steps=2, pgd_restarts=1, square_queries=3, search_queries=5, autoattack=False)
    settings = E.GridSettings(seeds=1, frontier_seeds=0, epochs=1, n_attack=8, n_boot=100, attacks=attacks,
                              methods=("local", "backprop", "ff"), certify=False)
    return cfg, settings, E.run_grid({"iris-1v2": cfg}, settings)


def test_rows_carry_diagnostics_and_the_report_shows_them(tiny_run, tmp_path):
    cfg, settings, res = tiny_run
    rows = {r["method"]: r for r in res["rows"]}
    for m in ("local", "backprop"):
        d = rows[m]["diagnostics"]
        assert list(d["readout"]) == ["input"] + [f"h{i + 1}" for i in range(len(cfg.model.hidden))]
        assert d["certified_radius"]["n"] == rows[m]["n_attacked"] == 8
    assert rows["local"]["diagnostics"]["readout"]["input"] == rows["backprop"]["diagnostics"]["readout"]["input"]
    assert "skipped" in rows["ff"]["diagnostics"]
    written = write_report(res, tmp_path)
    assert (tmp_path / "diagnostics-iris-1v2.png") in written
    assert (tmp_path / "diagnostics-iris-1v2.png").stat().st_size > 10_000
    md = (tmp_path / "results.md").read_text()
    assert "## What the models learned" in md and "### iris-1v2" in md
    # without the entry (a results.json made before diagnostics): no table, no figure
    bare = res | {"rows": [{k: v for k, v in r.items() if k != "diagnostics"} for r in res["rows"]]}
    assert "What the models learned" not in markdown(bare)
    section = "".join(line + "\n" for line in markdown_lines(res))
    assert section in markdown(res) and markdown(bare) == markdown(res).replace(section, "", 1)
    out = tmp_path / "bare"
    assert not any(p.name.startswith("diagnostics-") for p in write_report(bare, out))


def test_diagnostics_off(tiny_run):
    cfg, settings, _ = tiny_run
    res = E.run_grid({"iris-1v2": cfg}, dataclasses.replace(settings, diagnostics=False, methods=("local",)))
    assert all("diagnostics" not in r for r in res["rows"])
