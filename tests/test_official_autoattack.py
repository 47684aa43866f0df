"""The official AutoAttack, standard version, as an optional attack of the suite (issue 33 item 3;
robustness/official.py, ``reproduce --autoattack-standard``): it runs on the survivors of every other attack,
its examples are the official code's own, it joins the worst case in both suite modes, and on a linear binary
model, whose exact robust accuracy is known in closed form, it reaches that exact number."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from localstdp.errors import ConfigError
from localstdp.robustness import official
from localstdp.robustness.suite import AttackSettings, add_worst, attack_suite

pytest.importorskip("pyautoattack")

SMALL = AttackSettings(eps=(0.1,), pgd_steps=5, pgd_restarts=1, square_queries=20, search_queries=20, apgd_steps=5,
                       targets=2, sanity_eps=0.9)


def _digits(classes: int, hidden: int, n_test: int = 120):
    x, y = load_digits(return_X_y=True)
    keep = y < classes
    x, y = torch.tensor(x[keep] / 16.0, dtype=torch.float32), torch.tensor(y[keep])
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:-n_test], perm[-n_test:]
    torch.manual_seed(0)
    layers = [nn.Linear(64, hidden), nn.Sigmoid(), nn.Linear(hidden, classes)] if hidden else [nn.Linear(64, classes)]
    model = nn.Sequential(nn.Flatten(), *layers)  # sees (1, 8, 8) images: the official Square attack needs them
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(40):
        for b in range(0, len(tr), 100):
            i = tr[b:b + 100]
            opt.zero_grad()
            F.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
    model.eval()
    return model, x[te].reshape(-1, 1, 8, 8).numpy(), y[te].numpy()


def test_it_attacks_every_other_attacks_survivors_with_the_official_code():
    model, x, y = _digits(10, 32)
    on = dataclasses.replace(SMALL, autoattack_standard=True)
    res = attack_suite(model, x, y, (1, 8, 8), 10, on, seed=3)
    base = attack_suite(model, x, y, (1, 8, 8), 10, SMALL, seed=3)
    k = "0.1"
    left = np.logical_and.reduce([base.correct[a][k] for a in base.correct])
    for a in base.correct:  # the other attacks are untouched by the option
        assert np.array_equal(res.correct[a][k], base.correct[a][k])
    got = res.correct["aa-standard"][k]
    assert not (got & ~left).any()  # it only ever attacks survivors
    # the same call to the official code by hand: AutoAttack standard on exactly those survivors, seed 3 * 1009
    from pyautoattack import AutoAttack

    idx = np.flatnonzero(left)
    adv = AutoAttack(model, norm="Linf", eps=0.1, seed=3 * 1009, version="standard")
    adv.verbose = False
    xa, _ = adv.run_standard_evaluation(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]), batch_size=500)
    with torch.no_grad():
        survives = (model(xa).argmax(1).numpy() == y[idx])
    assert np.array_equal(got[idx], survives) and not got[~left].any()
    add_worst(res)
    add_worst(base)
    assert np.array_equal(res.correct["worst"][k], base.correct["worst"][k] & got)
    # the worst-case-only mode (frontier points) gives the same worst case
    wo = attack_suite(model, x, y, (1, 8, 8), 10, on, seed=3, worst_only=True)
    assert np.array_equal(wo.correct["worst"][k], res.correct["worst"][k])


def test_the_official_code_alone_finds_what_the_suite_finds_on_a_fixed_model():
    """The independent check of the suite (issue 33 item 3): on a fixed ten-class model, the official
    AutoAttack standard run alone on every correctly classified example leaves exactly the examples the
    suite's worst case leaves, at eps 0.05 and 0.1 (0.858 and 0.442 of 120)."""
    model, x, y = _digits(10, 32)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    alive = model(xt).argmax(1) == yt
    for eps, expected in ((0.05, 103), (0.1, 53)):
        res = attack_suite(model, x, y, (1, 8, 8), 10, dataclasses.replace(SMALL, eps=(eps,)), seed=3)
        add_worst(res)
        left = (alive & ~official.broken(model, xt, yt, eps, 0, alive, 10)).numpy()
        assert np.array_equal(left, res.correct["worst"][str(eps)]) and left.sum() == expected


def test_on_a_linear_binary_model_it_reaches_the_exact_robust_accuracy():
    """A linear two-class model's robust accuracy at eps is exact: the margin minus eps times the L1 norm of
    the weight difference, restricted to the box [0, 1] (each pixel moves by eps against its weight, clipped)."""
    model, x, y = _digits(2, 0, n_test=100)
    w = model[1].weight.detach().flatten(1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    d = ((w[1] - w[0]) * (2 * yt.float() - 1).unsqueeze(1)).view(-1, 1, 8, 8)  # raises the true class's margin
    worst = torch.where(d > 0, (xt - 0.1).clamp(0, 1), (xt + 0.1).clamp(0, 1))
    with torch.no_grad():
        exact = (model(worst).argmax(1) == yt).numpy()
    alive = torch.from_numpy((model(xt).argmax(1) == yt).numpy())
    broken = official.broken(model, xt, yt, 0.1, 0, alive, 2).numpy()
    assert np.array_equal(alive.numpy() & ~broken, exact)


def test_tabular_inputs_run_its_components_without_square():
    model, x, y = _digits(3, 16, n_test=60)
    flat = nn.Sequential(*list(model)[1:])  # the same weights on (64,) vectors
    xt, yt = torch.from_numpy(x.reshape(-1, 64)), torch.from_numpy(y)
    alive = flat(xt).argmax(1) == yt
    broken = official.broken(flat, xt, yt, 0.15, 0, alive, 3)
    assert broken.dtype == torch.bool and not (broken & ~alive).any() and broken.any()


def test_without_the_official_code_the_option_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # import fails
    assert not official.available()
    with pytest.raises(ConfigError, match=r"pip install 'localstdp\[autoattack\]'"):
        official.require()
    with pytest.raises(ValueError, match="autoattack_standard"):
        AttackSettings(autoattack_standard="yes")
