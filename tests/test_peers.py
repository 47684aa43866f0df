"""The peer rules (localstdp.rules.peers) against references: autograd backprop, hand-computed
updates on tiny networks, and the train loop's checkpoints, resume and data parallelism."""

from __future__ import annotations

import math
import signal

import pytest
import torch

from localstdp import parallel
from localstdp.config import config_from_dict
from localstdp.data import Dataset
from localstdp.errors import ConfigError
from localstdp.model import build_model
from localstdp.rules import LEARNERS, Backprop, BackpropParams
from localstdp.rules.peers import (
    PEERS,
    PEPITA,
    DirectFeedbackAlignment,
    DirectRandomTargetProjection,
    FeedbackAlignment,
    FFScorer,
    ForwardForward,
    PeerParams,
)
from localstdp.rules.peers.ff import embed_label, negative_labels
from localstdp.train import Interrupted, make_learner, train

SGD = PeerParams(optimizer="sgd", lr=0.5, momentum=0.0)


def batch(n=6, d=5, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


def sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def grads(learner, x, y):
    learner.zero_grad()
    learner.accumulate(x, y, 1.0)
    return [p.grad.clone() for p in learner.model.parameters()]


def test_fa_with_transposed_forward_weights_is_backprop():
    x, y = batch()
    m_fa, m_bp = build_model(5, [4, 4], 3, "sigmoid", 1), build_model(5, [4, 4], 3, "sigmoid", 1)
    fa = FeedbackAlignment(m_fa, SGD, 3, seed=0)
    for l in (1, 2):
        fa.fixed[f"B{l}"] = m_fa.layers[l].weight.detach().t().clone()  # B = W^T
    bp = Backprop(m_bp, BackpropParams(optimizer="sgd", lr=0.5, momentum=0.0), 3)
    assert fa.step(x, y) == pytest.approx(bp.step(x, y), abs=1e-7)
    for a, b in zip(m_fa.parameters(), m_bp.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    # with its own random B the hidden updates differ; the output layer's never depends on B
    m_rand = build_model(5, [4, 4], 3, "sigmoid", 1)
    g_rand = grads(FeedbackAlignment(m_rand, SGD, 3, seed=0), x, y)
    g_bp = [g * len(y) for g in grads_bp(x, y)]
    torch.testing.assert_close(g_rand[4], g_bp[4])
    torch.testing.assert_close(g_rand[5], g_bp[5])
    assert not torch.allclose(g_rand[0], g_bp[0])


def grads_bp(x, y):
    m = build_model(5, [4, 4], 3, "sigmoid", 1)
    torch.nn.functional.cross_entropy(m(x), y).backward()
    return [p.grad for p in m.parameters()]


def test_dfa_one_hidden_layer_equals_hand_computed_update():
    x, y = batch(n=4, d=3, k=2, seed=2)
    model = build_model(3, [2], 2, "sigmoid", 5)
    W1, b1 = model.layers[0].weight.detach().clone(), model.layers[0].bias.detach().clone()
    W2, b2 = model.layers[1].weight.detach().clone(), model.layers[1].bias.detach().clone()
    dfa = DirectFeedbackAlignment(model, SGD, 2, seed=0)
    B = dfa.B(0).clone()  # (n_hidden, n_out)
    dfa.step(x, y)
    N, lr = len(y), SGD.lr
    dW1, db1, dW2, db2 = torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, 2), torch.zeros(2)
    for n in range(N):  # one example, one synapse at a time
        a = [sig(float(W1[i] @ x[n]) + float(b1[i])) for i in range(2)]
        z = [sum(float(W2[k, i]) * a[i] for i in range(2)) + float(b2[k]) for k in range(2)]
        p = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
        e = [p[k] - (1.0 if k == int(y[n]) else 0.0) for k in range(2)]
        for i in range(2):
            delta = sum(float(B[i, k]) * e[k] for k in range(2)) * a[i] * (1 - a[i])
            db1[i] += delta / N
            for j in range(3):
                dW1[i, j] += delta * float(x[n, j]) / N
        for k in range(2):
            db2[k] += e[k] / N
            for i in range(2):
                dW2[k, i] += e[k] * a[i] / N
    for got, w0, d in zip(model.parameters(), (W1, b1, W2, b2), (dW1, db1, dW2, db2)):
        torch.testing.assert_close(got.detach(), w0 - lr * d, rtol=0, atol=1e-6)


def test_drtp_hidden_targets_do_not_depend_on_the_output_layer():
    x, y = batch()
    model = build_model(5, [4, 4], 3, "sigmoid", 1)
    drtp = DirectRandomTargetProjection(model, SGD, 3, seed=0)
    before, g_before = drtp.hidden_targets(x, y), grads(drtp, x, y)
    with torch.no_grad():
        model.layers[-1].weight.mul_(-3.0).add_(0.7)
        model.layers[-1].bias.add_(2.0)
    after, g_after = drtp.hidden_targets(x, y), grads(drtp, x, y)
    for a, b in zip(before, after):
        assert torch.equal(a, b)
    for a, b in zip(g_before[:4], g_after[:4]):  # the hidden layers' updates: unchanged
        assert torch.equal(a, b)
    assert not torch.equal(g_before[4], g_after[4])  # the output layer learns from its own error
    # the signal is B^l y* (the label, not the error) times f'
    acts = [x]
    for layer in model.layers[:-1]:
        acts.append(torch.sigmoid(layer(acts[-1])).detach())
    y_star = torch.nn.functional.one_hot(y, 3).float()
    for l in range(2):
        torch.testing.assert_close(before[l], (y_star @ drtp.B(l).t()) * acts[l + 1] * (1 - acts[l + 1]))


def test_pepita_update_equals_the_two_pass_formula():
    x, y = batch(n=3, d=4, k=2, seed=3)
    model = build_model(4, [3, 3], 2, "sigmoid", 2)
    pep = PEPITA(model, SGD, 2, seed=0)
    Fm = pep.F.clone()
    assert Fm.shape == (4, 2) and Fm.abs().max() <= 0.05 * math.sqrt(6 / 4)
    Ws = [(layer.weight.detach().clone(), layer.bias.detach().clone()) for layer in model.layers]
    g = grads(pep, x, y)
    ref = [torch.zeros_like(t) for t in g]
    for n in range(len(y)):  # the paper's Algorithm 1, one example at a time
        h = [x[n]]
        for l, (W, b) in enumerate(Ws):
            v = W @ h[-1] + b
            h.append(torch.softmax(v, 0) if l == 2 else torch.sigmoid(v))
        e = h[-1] - torch.nn.functional.one_hot(y[n], 2).float()
        hm = [x[n] + Fm @ e]
        for W, b in Ws[:2]:
            hm.append(torch.sigmoid(W @ hm[-1] + b))
        for l in range(2):
            ref[2 * l] += torch.outer(h[l + 1] - hm[l + 1], hm[l])
            ref[2 * l + 1] += h[l + 1] - hm[l + 1]
        ref[4] += torch.outer(e, hm[2])
        ref[5] += e
    for got, want in zip(g, ref):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_ff_goodness_embedding_and_negative_labels_by_hand():
    model = build_model(5, [2, 2], 2, "sigmoid", 0)
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.tensor([[1.0, -1.0, 0.5, 0.0, 0.2], [0.0, 2.0, -0.5, 1.0, 0.0]]))
        model.layers[0].bias.copy_(torch.tensor([0.1, -0.2]))
        model.layers[1].weight.copy_(torch.tensor([[0.3, -0.7], [1.5, 0.4]]))
        model.layers[1].bias.copy_(torch.tensor([0.0, 0.05]))
    x = torch.tensor([[0.9, 0.8, 0.6, 0.4, 1.0]])
    u = embed_label(x, torch.tensor([1]), 2)
    assert torch.equal(u, torch.tensor([[0.0, 1.0, 0.6, 0.4, 1.0]]))  # first K features: the one-hot label
    a1 = [sig(-1.0 + 0.3 + 0.2 + 0.1), sig(2.0 - 0.3 + 0.4 - 0.2)]
    g1 = a1[0] ** 2 + a1[1] ** 2
    rms = math.sqrt(g1 / 2)
    u1 = [a / rms for a in a1]
    a2 = [sig(0.3 * u1[0] - 0.7 * u1[1]), sig(1.5 * u1[0] + 0.4 * u1[1] + 0.05)]
    g2 = a2[0] ** 2 + a2[1] ** 2
    scorer = FFScorer(model)
    assert scorer(x)[0, 1].item() == pytest.approx(g1 + g2, rel=1e-6)
    ff = ForwardForward(model, PeerParams(ff_threshold=0.3), 2, seed=0)
    pos = ff.layer_losses(x, torch.tensor([1]), torch.tensor([0]))
    assert scorer(x)[0, 0].item() != pytest.approx(g1 + g2)  # label 0 embedded: another goodness
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    u0 = embed_label(x, torch.tensor([0]), 2)
    a1n = torch.sigmoid(model.layers[0](u0)).detach()
    assert pos[0].detach().item() == pytest.approx(softplus(0.3 * 2 - g1) + softplus(float((a1n**2).sum()) - 0.3 * 2), rel=1e-6)
    # negative labels: (y + r) mod K, r uniform in 1..K-1 from the seeded generator
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3] * 50)
    neg = negative_labels(y, 4, torch.Generator().manual_seed(9))
    r = torch.randint(1, 4, (len(y),), generator=torch.Generator().manual_seed(9))
    assert torch.equal(neg, (y + r) % 4) and not (neg == y).any()
    assert set(neg[y == 2].tolist()) == {0, 1, 3}


def test_ff_scorer_is_the_prediction_and_is_differentiable():
    x, y = batch(n=8, d=6, k=3)
    model = build_model(6, [5, 4], 3, "sigmoid", 0)
    ff = ForwardForward(model, PeerParams(lr=0.05), 3, seed=0)
    for _ in range(5):
        ff.step(x, y)
    scorer = ff.predict_module()
    assert set(scorer.state_dict()) == set(model.state_dict())  # the MLP's saved states load into it
    xr = x.clone().requires_grad_(True)
    scores = scorer(xr)
    assert scores.shape == (8, 3) and torch.equal(scorer.predict(x), scores.argmax(1))
    scores[torch.arange(8), y].sum().backward()
    assert xr.grad[:, 3:].abs().sum() > 0 and torch.equal(xr.grad[:, :3], torch.zeros(8, 3))  # label slots
    assert ff.model.layers[-1].weight.grad is None  # the output layer is no part of ff
    # the one-matmul first layer equals the definition (a full pass per label), gradients included
    for hidden in ([5, 4], [7], [6, 5, 4]):
        net = build_model(6, hidden, 3, "sigmoid", 1)
        sc = FFScorer(net)
        xa = x.clone().requires_grad_(True)
        xb = x.clone().requires_grad_(True)
        fast, ref = sc(xa), sc.forward_per_label(xb)
        torch.testing.assert_close(fast, ref, rtol=1e-6, atol=1e-6)
        w = torch.randn(8, 3, generator=torch.Generator().manual_seed(2))
        (fast * w).sum().backward()
        (ref * w).sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-6)
    from localstdp.robustness.bounds import certified_correct

    with pytest.raises(ValueError):  # bounds of the MLP's logits say nothing about the goodness
        certified_correct(scorer, x.numpy(), y.numpy(), 0.05)


# the shallow baselines train only their readout by design (tests/test_shallow.py checks what they train)
@pytest.mark.parametrize("name", sorted(set(LEARNERS) - {"linear", "random-features"}))
def test_every_registered_learner_steps(name):
    cfg = peer_config()
    x, y = batch(n=16, d=12, k=3, seed=4)
    model = build_model(12, [8, 8], 3, "sigmoid", 0)
    before = [p.detach().clone() for p in model.parameters()]
    learner = make_learner(name, model, cfg, 3)
    loss = learner.step(x, y)
    assert math.isfinite(loss)
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
    assert changed[0] and changed[1]  # the first layer learns under every rule
    assert all(changed) or name == "ff"  # ff leaves the output layer alone


def synthetic(n_train=70, n_test=23, d=12, k=3, seed=0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_train + n_test, d, generator=g)
    y = torch.randint(0, k, (n_train + n_test,), generator=g)
    return Dataset("synthetic", x[:n_train], y[:n_train], x[n_train:], y[n_train:], k, tuple(range(k)), (d,))


def peer_config(epochs=2, **peers):
    return config_from_dict({
        "data": {"name": "iris", "val_fraction": 0.0},  # not loaded: the tests pass the data set in
        "model": {"hidden": [8, 8]},
        "train": {"epochs": epochs, "batch_size": 16, "seed": 3},
        "peers": {"lr": 0.01, **peers},
    })


@pytest.mark.parametrize("name", sorted(PEERS))
def test_resume_is_bit_identical(tmp_path, name):
    ds, cfg = synthetic(), peer_config(epochs=2)
    ref = train(cfg, name, tmp_path / "ref", dataset=ds)
    train(cfg.with_overrides(epochs=1), name, tmp_path / "cut", dataset=ds)
    (tmp_path / "cut" / "metrics.json").unlink()  # a finished 1-epoch run, continued with a larger budget
    m = train(cfg, name, tmp_path / "cut", dataset=ds, resume=True)
    for (k, a), b in zip(ref["model"].state_dict().items(), m["model"].state_dict().values()):
        assert torch.equal(a, b), k
    assert m["history"] == [dict(h, seconds=g["seconds"]) for h, g in zip(ref["history"], m["history"])]


@pytest.mark.parametrize("name", sorted(PEERS))
def test_stopped_mid_epoch_and_resumed_is_bit_identical(tmp_path, name):
    ds, cfg = synthetic(), peer_config(epochs=2)
    ref = train(cfg, name, dataset=ds)
    polls = iter(range(100))
    with pytest.raises(Interrupted):  # SIGTERM after the third batch of epoch 1: checkpoint mid-epoch
        train(cfg, name, tmp_path / "r", dataset=ds, should_stop=lambda: signal.SIGTERM if next(polls) == 2 else 0)
    m = train(cfg, name, tmp_path / "r", dataset=ds, resume=True)
    for (k, a), b in zip(ref["model"].state_dict().items(), m["model"].state_dict().values()):
        assert torch.equal(a, b), k


def test_ff_metrics_model_is_the_scorer():
    ds, cfg = synthetic(), peer_config(epochs=1)
    m = train(cfg, "ff", dataset=ds)
    assert isinstance(m["model"], FFScorer)
    acc = float((m["model"].predict(ds.x_test) == ds.y_test).float().mean())
    assert m["test_accuracy"] == pytest.approx(acc)


@pytest.mark.parametrize("name", ["fa", "ff"])
def test_data_parallel_matches_single_process(name):
    ds, cfg = synthetic(), peer_config(epochs=2)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = train(cfg, name, dataset=ds)
        m = parallel.launch(2, cfg, name, None, mode="data", dataset=ds, threads=1, keep_model=True)
    finally:
        torch.set_num_threads(old)
    for (k, a), b in zip(ref["model"].state_dict().items(), m["model"].state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=k)
    assert m["test_accuracy"] == pytest.approx(ref["test_accuracy"])


def test_peer_settings_are_validated():
    for bad in ({"lr": 0.0}, {"optimizer": "lbfgs"}, {"momentum": 1.0}, {"ff_threshold": 1.5},
                {"feedback_scale": -1.0}, {"input_scale": float("inf")}, {"lr_typo": 1.0}):
        with pytest.raises(ConfigError):
            peer_config(**bad)
    cfg = config_from_dict({"data": {"name": "iris"}, "methods": {"fa": {"peers": {"lr": 0.02}}}})
    assert cfg.for_method("fa").peers.lr == 0.02 and cfg.peers.lr == PeerParams().lr


def test_cli_trains_a_peer_with_its_methods_table(tmp_path, capsys):
    from localstdp.cli import main
    from localstdp.config import load_config

    config = tmp_path / "c.toml"
    config.write_text('[data]\nname = "iris"\nclasses = [0, 1]\n[model]\nhidden = [8]\n[train]\nepochs = 2\n'
                      '[methods.pepita.peers]\nlr = 0.02\noptimizer = "sgd"\n')
    assert main(["train", "--config", str(config), "--rule", "pepita", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 0
    assert "pepita: train accuracy" in capsys.readouterr().out
    used = load_config(tmp_path / "r" / "config.toml")
    assert used.peers.lr == 0.02 and used.peers.optimizer == "sgd" and not used.methods
    with pytest.raises(SystemExit) as exc:  # --rule choices: the registry's learners
        main(["train", "--config", str(config), "--rule", "nope", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "'ff'" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", sorted(PEERS))
def test_cuda_run_matches_cpu(name):
    ds, cfg = synthetic(), peer_config(epochs=2)
    cpu, gpu = train(cfg, name, dataset=ds), train(cfg, name, dataset=ds, device="cuda")
    for (k, a), b in zip(cpu["model"].state_dict().items(), gpu["model"].state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=k)


def test_ff_layers_learn_from_their_own_loss_alone():
    """ff's layer isolation: each hidden layer's gradient is that of its own loss^l with its input held
    constant (the detach in ff.goodness). Without the detach, layer 1's loss reaches layer 0: its
    gradient then moves when only layer 1's weights change, and differs from autograd of loss^0 alone."""
    x, y = batch(n=8, d=6, k=3)
    model = build_model(6, [5, 4], 3, "sigmoid", 0)
    ff = ForwardForward(model, SGD, 3, seed=0)

    def first_grads():
        ff.gen = torch.Generator().manual_seed(15485863)  # the learner's own stream: the same negatives
        ff.zero_grad()
        ff.accumulate(x, y, 1.0)
        return [p.grad.clone() for p in model.layers[0].parameters()]

    g = first_grads()
    y_neg = negative_labels(y, 3, torch.Generator().manual_seed(15485863))
    first = model.layers[0]
    with torch.enable_grad():
        a_pos = torch.sigmoid(first(embed_label(x, y, 3)))
        a_neg = torch.sigmoid(first(embed_label(x, y_neg, 3)))
        theta = 0.25 * 5
        own = (torch.nn.functional.softplus(theta - (a_pos**2).sum(1))
               + torch.nn.functional.softplus((a_neg**2).sum(1) - theta)).sum()
        want = torch.autograd.grad(own, [first.weight, first.bias])
    torch.testing.assert_close(g[0], want[0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g[1], want[1], rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        model.layers[1].weight.mul_(-3.0)
    assert torch.equal(first_grads()[0], g[0]) and model.layers[1].weight.grad.abs().sum() > 0
