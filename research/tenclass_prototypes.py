"""Prototypes of ten-class ideas for the local rule that were TRIED and NOT kept in the library
(issue 7; results in docs/ablation.md). Each stays local: a layer's targets use only its own
activity, its own state and the broadcast label.

  --opt k=N          k-winners-take-all by spike order: among the neurons associated with the label,
                     only the N earliest-firing (most active) are taught a_hi; the other associated
                     neurons are not taught (loser=hold) or taught a_lo (loser=low). 0 = off.
  --opt homeo=G      homeostatic threshold for the WTA choice: score = a - G * (running win rate).
  --opt wnorm=R      weight normalisation: after each step every hidden neuron's incoming weight
                     vector is rescaled to norm R (its own synapses only). 0 = off.
  --opt lrdecay=S    learning-rate schedule eta_t = eta / (1 + t / S), t = steps taken. 0 = off.
  --opt center=M     covariance rule: the presynaptic factor is a_pre minus its own running mean
                     (momentum M), and the bias absorbs -dW m (rate mode). 0 = off.
  --opt momentum=MU  a per-synapse momentum trace of the update (rate mode). 0 = off.
  --opt pwta=N       with pairs: among the copies of one pair, only the N earliest-firing learn the
                     pair's first class on an example (the others are not taught on it). 0 = off.
  --opt pairs=0      one-vs-one codes in hidden layer 0 (the same rule as the library's
                     rule.association = "pairs", kept here to combine with the options above).

The library's rule.center is NOT applied by these prototypes (use --opt center); pass
--set rule.center=0 to make that explicit.

Usage (prints one JSON line; train with --set as in tenclass_research.py):
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python research/tenclass_prototypes.py \
        --config configs/mnist-10.toml --seeds 0 1 2 --opt k=1 --set train.lr=0.1
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from tenclass_research import add_common_args, load, run_seeds  # noqa: E402

from localstdp.rules import LEARNERS  # noqa: E402
from localstdp.rules.fused import apply_local_update_  # noqa: E402
from localstdp.rules.local import LocalRule  # noqa: E402

OPT = dict(center=0.0, momentum=0.0, pairs="", pwta=0, k=0, loser="hold", homeo=0.0, wnorm=0.0, lrdecay=0.0)


class Prototype(LocalRule):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.win_rates = [torch.zeros(w) for w in self.model.widths[1:]]
        self.t, self.eta0 = 0, self.params.eta

    def layer_targets(self, l, post, y):
        d = self.targets(l, y)
        if str(l) in OPT["pairs"].split(","):
            K = self.n_classes
            pairs = [(a, b) for a in range(K) for b in range(a + 1, K)]
            pa = torch.tensor([pairs[j % len(pairs)][0] for j in range(post.shape[1])])
            pb = torch.tensor([pairs[j % len(pairs)][1] for j in range(post.shape[1])])
            hi, lo = y[:, None] == pa[None], y[:, None] == pb[None]
            full = torch.full_like
            if OPT["pwta"] > 0:  # among a pair's copies, only the k earliest-firing learn the pair's first class
                for pid in range(len(pairs)):
                    cols = torch.arange(pid, post.shape[1], len(pairs))
                    if len(cols) <= OPT["pwta"]:
                        continue
                    sub = post[:, cols]
                    win = torch.zeros_like(sub, dtype=torch.bool).scatter_(1, sub.topk(OPT["pwta"], dim=1).indices, True)
                    hi[:, cols] &= win  # the losers are not taught on this example
            return torch.where(hi, full(post, self.params.a_hi), torch.where(lo, full(post, self.params.a_lo), post))
        if l < len(self.associations) - 1 and OPT["k"] > 0:
            A = self.associations[l][:, y].T > 0  # (batch, n): neurons associated with the label
            score = (post - OPT["homeo"] * self.win_rates[l]).masked_fill(~A, -float("inf"))
            k = min(OPT["k"], int(A.sum(1).min()))
            win = torch.zeros_like(post, dtype=torch.bool).scatter_(1, score.topk(k, dim=1).indices, True)
            lose = A & ~win
            if OPT["loser"] == "hold":
                d = torch.where(lose, post, d)
            elif OPT["loser"] == "low":
                d = torch.where(lose, torch.full_like(d, self.params.a_lo), d)
            self.win_rates[l] = 0.99 * self.win_rates[l] + 0.01 * win.float().mean(0) * self.n_classes
        return d

    @torch.no_grad()
    def _rich_step(self, acts, y):
        """Rate mode with a centred presynaptic term (covariance rule: each pre neuron's own running
        mean m is subtracted, and the bias absorbs -dW m, i.e. SGD in the centred parametrisation)
        and/or a per-synapse momentum trace."""
        if not hasattr(self, "means"):
            self.means = [a.mean(0) for a in acts[:-1]]
            self.vel = [None] * len(self.model.layers)
        for l, layer in enumerate(self.model.layers):
            pre, post = acts[l], acts[l + 1]
            e = self.layer_targets(l, post, y) - post
            if OPT["center"] > 0:
                self.means[l] = OPT["center"] * self.means[l] + (1 - OPT["center"]) * pre.mean(0)
                xc = pre - self.means[l]
            else:
                xc = pre
            dW = self.params.eta / len(pre) * e.T @ xc
            db = self.params.eta / len(pre) * e.sum(0)
            if OPT["center"] > 0:
                db = db - dW @ self.means[l]
            if OPT["momentum"] > 0:
                if self.vel[l] is None:
                    self.vel[l] = (torch.zeros_like(dW), torch.zeros_like(db))
                vW, vb = self.vel[l]
                vW.mul_(OPT["momentum"]).add_(dW)
                vb.mul_(OPT["momentum"]).add_(db)
                dW, db = vW, vb
            layer.weight.add_(dW)
            layer.bias.add_(db)

    @torch.no_grad()
    def step(self, x, y):
        if OPT["lrdecay"] > 0:
            self.t += 1
            self.params = dataclasses.replace(self.params, eta=self.eta0 / (1 + self.t / OPT["lrdecay"]))
        acts = self.model.activities(x)
        if OPT["center"] > 0 or OPT["momentum"] > 0:
            self._rich_step(acts, y)
        else:
            for l, layer in enumerate(self.model.layers):
                apply_local_update_(layer.weight, layer.bias, acts[l], acts[l + 1],
                                    self.layer_targets(l, acts[l + 1], y), self.params)
        if OPT["wnorm"] > 0:
            for layer in self.model.layers[:-1]:
                layer.weight.mul_(OPT["wnorm"] / layer.weight.norm(dim=1, keepdim=True).clamp_min(1e-8))
        return float(((self.targets(len(acts) - 2, y) - acts[-1]) ** 2).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    add_common_args(ap, config="configs/mnist-10.toml")
    ap.add_argument("--opt", action="append", default=[])
    a = ap.parse_args(argv)
    if a.method != "local":
        raise SystemExit("the prototypes are variants of the local rule: --method local only")
    for o in a.opt:
        k, v = o.split("=")
        OPT[k] = v if isinstance(OPT[k], str) else type(OPT[k])(v)
    LEARNERS["local"] = Prototype  # this process only
    cfg, ds = load(a)
    run_seeds(a, cfg, ds, {"opt": dict(OPT)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
