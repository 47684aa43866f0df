"""Round 2 of the ten-class research (issue 7): prototypes screened before anything enters the library.

Every option stays local: a layer's update uses only its own pre/post activity, its own state and the
broadcast label. Options that change the ARCHITECTURE (the fixed connectivity masks) are applied to
BOTH methods: the same mask, drawn from ``train.seed``, multiplies the first layer's weights at
initialisation and after every update, for the local rule and for backprop alike.

  --opt mask=F     fixed sparse random connectivity of hidden layer 0: each neuron keeps a random
                   fraction F of its input synapses (0 = off, full connectivity).
  --opt rf=S       fixed local receptive fields of hidden layer 0: each neuron sees one random S x S
                   patch of the square input image (0 = off). Combines with mask (intersection). KEPT:
                   the library's model.receptive_field draws the same mask (but its local rule's
                   covariance bias term counts only present synapses; this prototype's does not).
  --opt rescale=1  scale the kept initial weights by 1/sqrt(kept fraction) (keeps the init variance).
  --opt groups=G   association of hidden layer 0: neuron j is taught a_hi on a random group of up to
                   G classes and a_lo on a disjoint random group of up to G classes, untaught on the
                   rest (G = 1 is the one-vs-one "pairs" code, with random pairs). 0 = off.
  --opt adam=LR    per-synapse adaptive step (Adam on the local update, betas 0.9 / b2): every synapse
                   keeps running moments of ITS OWN update dW/eta and steps LR * m / (sqrt(v) + 1e-8).
                   Local: a synapse's own history. 0 = off (plain eta * dW).
  --opt precond=L  layer-level input preconditioning (players="0" or "0,1"): the layer keeps the running
                   covariance C of its OWN presynaptic activity (momentum 0.99) and steps
                   dW P with P = (C + L * mean(diag C) I)^-1 * mean(diag C), refreshed every pevery steps.
                   Uses only the layer's own pre activity (a state of the layer). 0 = off.
  --opt abstain=V  hidden layer 0's untaught (NaN) association entries become V (e.g. 0.5: the pair
                   neuron is taught to abstain on the other classes), weighted by abstainw. -1 = off.
  --opt decor=R    anti-Hebbian lateral decorrelation in hidden layer 0 (R = its rate): after the
                   forward update, W0 -= R * offdiag(C) W0 where C is the batch covariance of the
                   layer's own activities (only that layer's activity and weights). 0 = off.

Usage (prints one JSON line per seed and a summary line):
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python research/tenclass_round2.py \
        --config configs/mnist-10.toml --seeds 0 1 2 --opt rf=12 [--method backprop] [--set ...]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from tenclass_research import add_common_args, load, run_seeds  # noqa: E402

from localstdp.rules import LEARNERS  # noqa: E402
from localstdp.rules.backprop import Backprop  # noqa: E402
from localstdp.rules.local import LocalRule  # noqa: E402

OPT = dict(mask=0.0, rf=0, rescale=0, groups=0, decor=0.0, adam=0.0, b2=0.999, precond=0.0, players="0", pevery=50, abstain=-1.0, abstainw=1.0)


def connectivity_mask(n_out: int, n_in: int, seed: int) -> torch.Tensor | None:
    """(n_out, n_in) 0/1 mask of hidden layer 0, or None (full connectivity)."""
    if OPT["mask"] <= 0 and OPT["rf"] <= 0:
        return None
    g = torch.Generator().manual_seed(int(seed) * 7 + 104729)
    m = torch.ones(n_out, n_in)
    if OPT["rf"] > 0:
        side = int(round(math.sqrt(n_in)))
        assert side * side == n_in, "rf needs a square input image"
        S = min(OPT["rf"], side)
        r0 = torch.randint(0, side - S + 1, (n_out,), generator=g)
        c0 = torch.randint(0, side - S + 1, (n_out,), generator=g)
        rows = torch.arange(side)[None, :, None]
        cols = torch.arange(side)[None, None, :]
        inside = ((rows >= r0[:, None, None]) & (rows < r0[:, None, None] + S)
                  & (cols >= c0[:, None, None]) & (cols < c0[:, None, None] + S))
        m = m * inside.reshape(n_out, n_in).float()
    if OPT["mask"] > 0:
        m = m * (torch.rand(n_out, n_in, generator=g) < OPT["mask"]).float()
    return m


def init_mask(model, seed):
    layer = model.layers[0]
    m = connectivity_mask(layer.out_features, layer.in_features, seed)
    if m is not None:
        with torch.no_grad():
            layer.weight.mul_(m)
            if OPT["rescale"]:
                layer.weight.mul_(1 / m.mean(1, keepdim=True).clamp_min(1e-6).sqrt())
    return m


def group_codes(n_neurons: int, n_classes: int, G: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed) + 7919)
    A = torch.full((n_neurons, n_classes), float("nan"))
    for j in range(n_neurons):
        perm = torch.randperm(n_classes, generator=g).tolist()
        ka = int(torch.randint(1, G + 1, (1,), generator=g))
        kb = int(torch.randint(1, G + 1, (1,), generator=g))
        A[j, perm[:ka]] = 1.0
        A[j, perm[ka:ka + kb]] = 0.0
    return A


class MaskedLocal(LocalRule):
    def __init__(self, model, params, n_classes, seed=0):
        super().__init__(model, params, n_classes, seed)
        self.mask = init_mask(model, seed)
        if OPT["groups"] > 0:
            self.associations[0] = group_codes(model.widths[1], n_classes, OPT["groups"], seed)
        if OPT["abstain"] >= 0:
            A = self.associations[0]
            self.associations[0] = torch.where(torch.isnan(A), torch.full_like(A, OPT["abstain"]), A)

    @torch.no_grad()
    def precond_step(self, x, y):
        ups, acts = self.updates(x, y)
        if not hasattr(self, "cov"):
            self.cov, self.P, self.t = {}, {}, 0
        self.t += 1
        for l, (dW, db) in enumerate(ups):
            layer = self.model.layers[l]
            if str(l) not in OPT["players"].split(","):
                layer.weight.add_(dW)
                layer.bias.add_(db)
                continue
            pre = acts[l]
            xc = pre - pre.mean(0)
            Cb = xc.T @ xc / len(pre)
            C = self.cov.get(l)
            self.cov[l] = Cb if C is None else 0.99 * C + 0.01 * Cb
            if l not in self.P or self.t % OPT["pevery"] == 0:
                C = self.cov[l]
                s = C.diagonal().mean()
                self.P[l] = torch.linalg.inv(C + OPT["precond"] * s * torch.eye(len(C))) * s
            m = self.pre_means[l]
            dWp = dW @ self.P[l]
            layer.weight.add_(dWp)
            # the covariance rule's bias absorbs -dW m: keep that consistent with the preconditioned dW
            layer.bias.add_(db if m is None else db + dW @ m - dWp @ m)
        return float(((self.targets(len(acts) - 2, y) - acts[-1]) ** 2).mean())

    @torch.no_grad()
    def adam_step(self, x, y):
        ups, acts = self.updates(x, y)
        if not hasattr(self, "mom"):
            self.mom, self.t = {}, 0
        self.t += 1
        b1, b2, eta = 0.9, OPT["b2"], self.params.eta
        for l, (dW, db) in enumerate(ups):
            for name, g, p in (("w", dW, self.model.layers[l].weight), ("b", db, self.model.layers[l].bias)):
                g = g / eta
                m, v = self.mom.get((l, name), (torch.zeros_like(g), torch.zeros_like(g)))
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                self.mom[(l, name)] = (m, v)
                p.add_(OPT["adam"] * (m / (1 - b1 ** self.t)) / ((v / (1 - b2 ** self.t)).sqrt() + 1e-8))
        return float(((self.targets(len(acts) - 2, y) - acts[-1]) ** 2).mean())

    @torch.no_grad()
    def step(self, x, y):
        out = (self.adam_step(x, y) if OPT["adam"] > 0 else self.precond_step(x, y) if OPT["precond"] > 0
               else super().step(x, y))
        W = self.model.layers[0].weight
        if OPT["decor"] > 0:
            a = self.model.layer_forward(0, x.flatten(1))
            ac = a - a.mean(0)
            C = ac.T @ ac / len(a)
            C.fill_diagonal_(0)
            W.sub_(OPT["decor"] * C @ W)
        if self.mask is not None:
            W.mul_(self.mask)
        return out


class MaskedBackprop(Backprop):
    def __init__(self, model, params, n_classes, seed=0):
        self.mask = init_mask(model, seed)
        super().__init__(model, params, n_classes, seed)

    def step(self, x, y):
        out = super().step(x, y)
        if self.mask is not None:
            with torch.no_grad():
                self.model.layers[0].weight.mul_(self.mask)
        return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    add_common_args(ap, config="configs/mnist-10.toml")
    ap.add_argument("--opt", action="append", default=[])
    a = ap.parse_args(argv)
    for o in a.opt:
        k, v = o.split("=")
        if k not in OPT:
            raise SystemExit(f"unknown --opt {k}")
        OPT[k] = type(OPT[k])(v)
    LEARNERS["local"], LEARNERS["backprop"] = MaskedLocal, MaskedBackprop  # this process only
    cfg, ds = load(a)
    run_seeds(a, cfg, ds, {"opt": a.opt})
    return 0


if __name__ == "__main__":
    sys.exit(main())
