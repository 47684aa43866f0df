"""What ships, timed: every config in ``localstdp/configs`` (``bench --configs``) and the peer local
rules beside ours and backprop on one network (``bench --rules``).

Shipped configs. Each config's own network (MLP with its receptive fields, or CNN), its own data
(its training split, its batch size, its learning-rate schedule), trained by the learners that
``localstdp train`` builds for it (train.make_learner), arms interleaved batch by batch:

- ``local``: the local rule as the config sets it (what every shipped result uses: the exact update
  path, rules/fused.py);
- ``backprop``: backprop as the config sets it (its optimiser, Adam in every shipped config);
- ``backprop-sgd`` (MLP): backprop with plain SGD (no momentum): the cheapest backprop step, so the
  comparison with it isolates the learning rule from the optimiser;
- ``local-fused`` (MLP configs with the covariance rule or receptive fields): the local rule with
  ``exact_updates = False`` (the opt-in fused path; equal within rounding, not bit for bit).

A repeat is one epoch (``--quick``: its first ``QUICK_BATCHES`` batches, the epoch time then
extrapolated); the step and the schedule are timed, not data loading or evaluation. The speed-up is
the median over repeats of backprop's time / the local rule's time in the same repeat.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from .core import interleaved, load_average, op_breakdown, paired_ratio, peak_step_memory

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # localstdp/configs
QUICK_BATCHES = 20
MIB = 2**20


@dataclass(frozen=True)
class ConfigSpec:
    """batches: timed batches per repeat (None: the whole epoch); repeats: interleaved timed repeats;
    warmup_batches: untimed steps of every arm first; only: config names (default: every shipped one)."""

    batches: int | None = None
    repeats: int = 3
    warmup_batches: int = 3
    only: tuple[str, ...] | None = None


QUICK_CONFIGS = ConfigSpec(batches=QUICK_BATCHES, repeats=5)


def shipped_configs() -> list[str]:
    """The names of every config shipped with the package (MLP and CNN alike), sorted."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def arms_for(cfg) -> list[str]:
    arms = ["local", "backprop"]
    if cfg.model.kind != "cnn":
        arms.append("backprop-sgd")
        if cfg.rule.center > 0 or cfg.model.receptive_field:
            arms.append("local-fused")
    return arms


def build_arm(arm: str, cfg, ds, device: torch.device):
    """A fresh network of ``cfg`` (the same weights for every arm) and the learner of ``arm``."""
    from ..model import build_network
    from ..rules import BackpropParams
    from ..train import make_learner

    model = build_network(cfg.model, ds.n_features, ds.n_classes, cfg.train.seed).to(device)
    if arm == "backprop-sgd":
        cfg = dataclasses.replace(cfg, backprop=BackpropParams(optimizer="sgd", lr=cfg.backprop.lr, momentum=0.0))
        return make_learner("backprop", model, cfg, ds.n_classes)
    learner = make_learner("local" if arm == "local-fused" else arm, model, cfg, ds.n_classes)
    if arm == "local-fused":
        learner.exact_updates = False
    return learner


def _describe(cfg, model) -> str:
    """The network in one line: MLP widths; a CNN's conv blocks, then its dense widths."""
    widths = "-".join(map(str, getattr(model, "widths", []) or []))
    if cfg.model.kind != "cnn":
        return widths
    blocks = cfg.to_dict()["model"].get("conv", [])
    conv = ", ".join("conv " + " ".join(f"{k} {v}" for k, v in (b.items() if isinstance(b, dict) else [])) for b in blocks)
    return f"{conv}; dense {widths}"


def bench_config(name: str, spec: ConfigSpec, device: torch.device) -> dict:
    """One config's arms, interleaved: per-repeat seconds, epoch seconds, speed-ups, peak memory."""
    from ..config import load_config
    from ..data import load_dataset
    from ..errors import LocalSTDPError
    from ..train import schedule_lr

    cfg = load_config(CONFIG_DIR / f"{name}.toml")
    try:
        ds = load_dataset(cfg.data)
    except (LocalSTDPError, OSError) as exc:
        return {"skipped": f"its data are not available here ({exc})"}
    n, bs = len(ds.y_train), cfg.train.batch_size
    n_batches = math.ceil(n / bs)
    units = n_batches if spec.batches is None else min(spec.batches, n_batches)
    x, y = ds.x_train[: units * bs].to(device), ds.y_train[: units * bs].to(device)
    batches = [(x[i * bs : (i + 1) * bs], y[i * bs : (i + 1) * bs]) for i in range(units)]
    arms = arms_for(cfg)
    learners = {a: build_arm(a, cfg, ds, device) for a in arms}

    def fn(learner):
        def step(i: int):
            schedule_lr(learner, cfg, 0, i, n_batches)
            return learner.step(*batches[i])
        return step

    fns = {a: fn(lrn) for a, lrn in learners.items()}
    for a in arms:  # warm-up: every arm's first steps untimed
        for i in range(min(spec.warmup_batches, units)):
            fns[a](i)
    load_start = load_average()
    log.info("bench config %s on %s: %s, %d of %d batches x %d repeats", name, device, arms, units, n_batches,
             spec.repeats)
    times = interleaved(fns, units, spec.repeats, 0, device)
    per_epoch = n_batches / units
    x0, y0 = batches[0]
    memory = {a: peak_step_memory(lambda lrn=lrn: lrn.step(x0, y0), device) / MIB for a, lrn in learners.items()}
    ops = {a: op_breakdown(lambda lrn=lrn: lrn.step(x0, y0), device, steps=5, top=5)
           for a, lrn in learners.items() if a in ("local", "backprop")}
    out = {
        "kind": cfg.model.kind,
        "net": _describe(cfg, learners["backprop"].model),
        "receptive_field": cfg.model.receptive_field,
        "center": cfg.rule.center,
        "association": cfg.rule.association,
        "backprop_optimizer": cfg.backprop.optimizer,
        "batch": bs,
        "n_train": n,
        "epoch_batches": n_batches,
        "measured_batches": units,
        "repeats": spec.repeats,
        "seconds": times,
        "epoch_s": {a: statistics.median(t) * per_epoch for a, t in times.items()},
        "speedup": paired_ratio(times["backprop"], times["local"]),
        "peak_mib": memory,
        "op_breakdown": ops,
        "load_average": load_start,
        "load_average_end": load_average(),
    }
    if "backprop-sgd" in times:
        out["speedup_vs_sgd"] = paired_ratio(times["backprop-sgd"], times["local"])
    if "local-fused" in times:
        out["speedup_fused"] = paired_ratio(times["backprop"], times["local-fused"])
        out["fused_vs_exact"] = paired_ratio(times["local"], times["local-fused"])
    return out


def check_names(spec: ConfigSpec | None, rules: list[str] | None) -> None:
    """ConfigError (a usage error, before any measuring) for an unknown config or rule name."""
    from ..errors import ConfigError
    from ..rules import PEERS

    unknown = sorted(set(spec.only or ()) - set(shipped_configs())) if spec is not None else []
    if unknown:
        raise ConfigError(f"bench --configs: no shipped config named {', '.join(unknown)}; expected "
                          f"{', '.join(shipped_configs())}")
    unknown = [r for r in rules or () if r not in ("local", "backprop", *PEERS)]
    if unknown:
        raise ConfigError(f"bench --rules: unknown rule {', '.join(unknown)}; expected local, backprop or one of "
                          f"{', '.join(PEERS)}")


def bench_configs(spec: ConfigSpec, device: torch.device) -> dict:
    check_names(spec, None)
    return {name: bench_config(name, spec, device) for name in (list(spec.only) if spec.only else shipped_configs())}


def summary(configs: dict) -> dict:
    """The issue's per-config keys (speedup, local_s, backprop_s, peak_mib) of one entry's configs."""
    out = {}
    for name, r in configs.items():
        if "skipped" in r:
            out[name] = {"skipped": r["skipped"]}
            continue
        out[name] = {"speedup": r["speedup"], "local_s": r["epoch_s"]["local"], "backprop_s": r["epoch_s"]["backprop"],
                     "peak_mib": {"local": r["peak_mib"]["local"], "backprop": r["peak_mib"]["backprop"]}}
        for k in ("speedup_vs_sgd", "speedup_fused"):
            if k in r:
                out[name][k] = r[k]
    return out


# ------------------------------------------------------------------------------------------------
# the peer rules on one network
# ------------------------------------------------------------------------------------------------


def bench_rules(rules: list[str], spec, device: torch.device) -> dict:
    """Every rule in ``rules`` on the headline network (``spec``: workload.BenchSpec), interleaved.

    ``local`` is the rate-mode rule, ``backprop`` plain SGD, and every peer rule (rules/peers) runs
    with plain SGD too (PeerParams(optimizer="sgd", momentum=0)), so the times differ by the rule's
    own work alone. Returns seconds per epoch, each rule's speed-up over backprop and its cost
    relative to the local rule (medians of per-repeat ratios), and peak step memory."""
    from ..model import build_model
    from ..rules import LEARNERS, PeerParams
    from .workload import N_CLASSES, N_FEATURES, make_learner, synthetic_batches

    check_names(None, rules)
    rules = list(dict.fromkeys(["local", "backprop", *rules]))
    widths = [N_FEATURES, *spec.hidden, N_CLASSES]
    batches = synthetic_batches(spec.epoch_batches, spec.batch, N_FEATURES, device, spec.seed)
    learners = {}
    for r in rules:
        if r in ("local", "backprop"):
            learners[r] = make_learner("rate" if r == "local" else r, widths, spec, device)
        else:
            model = build_model(widths[0], widths[1:-1], widths[-1], "sigmoid", spec.seed).to(device)
            learners[r] = LEARNERS[r](model, PeerParams(optimizer="sgd", lr=spec.lr, momentum=0.0), N_CLASSES,
                                      spec.seed)
    fns = {r: (lambda i, lrn=lrn: lrn.step(*batches[i])) for r, lrn in learners.items()}
    log.info("bench %s: rules %s on %s", device, rules, widths)
    load_start = load_average()
    times = interleaved(fns, spec.epoch_batches, spec.repeats, spec.warmup, device)
    x0, y0 = batches[0]
    return {
        "widths": widths,
        "batch": spec.batch,
        "epoch_batches": spec.epoch_batches,
        "optimizer": "sgd (no momentum) for backprop and every peer rule",
        "seconds": times,
        "epoch_s": {r: statistics.median(t) for r, t in times.items()},
        "speedup_vs_backprop": {r: paired_ratio(times["backprop"], t) for r, t in times.items()},
        "cost_vs_local": {r: paired_ratio(t, times["local"]) for r, t in times.items()},
        "peak_mib": {r: peak_step_memory(lambda lrn=lrn: lrn.step(x0, y0), device) / MIB for r, lrn in learners.items()},
        "load_average": load_start,
        "load_average_end": load_average(),
    }


# ------------------------------------------------------------------------------------------------
# receptive fields: the masked dense first layer against the banded one (fields.py)
# ------------------------------------------------------------------------------------------------


def bench_fields(spec: ConfigSpec, device: torch.device, repeats: int = 5, steps: int = 20) -> dict:
    """For every shipped config with receptive fields: one first-layer step of each method, dense
    masked (what runs) against banded (fields.py), interleaved. local: forward + the exact centred
    update; backprop: forward + autograd backward. Milliseconds per step (medians) and ratios."""
    from ..config import load_config
    from ..fields import banded_linear, banded_rate_update_, field_bands
    from ..model import receptive_field_mask

    out = {}
    for name in (list(spec.only) if spec.only else shipped_configs()):
        cfg = load_config(CONFIG_DIR / f"{name}.toml")
        S = cfg.model.receptive_field if cfg.model.kind != "cnn" else 0
        if not S:
            continue
        n_out, n_in, B = cfg.model.hidden[0], 784, cfg.train.batch_size
        g = torch.Generator().manual_seed(0)
        mask = receptive_field_mask(n_out, n_in, S, g).to(device)
        bands = field_bands(mask)
        W = (torch.randn(n_out, n_in, generator=g).to(device) * 0.05) * mask
        b, m = torch.zeros(n_out, device=device), torch.full((n_in,), 0.1, device=device)
        x, e = torch.rand(B, n_in, generator=g).to(device), (torch.rand(B, n_out, generator=g).to(device) - 0.5)
        absent = 1 - mask
        Wg, bg = W.clone().requires_grad_(), b.clone().requires_grad_()

        def dense_local(i):
            torch.addmm(b, x, W.T)
            dW = torch.mm(e.T, x - m).mul_(1e-9)
            db = -torch.mv(dW, m)
            W.addcmul_(dW, mask)
            db += torch.mv(dW.mul_(absent), m)
            b.add_(db)

        def banded_local(i):
            banded_linear(x, W, b, bands)
            banded_rate_update_(W, b, bands, mask, x, e, 1e-9, m)

        def backward(fwd):
            def f(i):
                fwd(x, Wg, bg).sum().backward()
                Wg.grad = bg.grad = None
            return f

        fns = {"local-dense": dense_local, "local-banded": banded_local,
               "backprop-dense": backward(lambda x, W, b: torch.addmm(b, x, W.T)),
               "backprop-banded": backward(lambda x, W, b: banded_linear(x, W, b, bands))}
        times = interleaved(fns, steps, repeats, 1, device)
        out[name] = {"shape": [n_out, n_in], "side": S, "batch": B, "bands": len(bands),
                     "band_inputs": sum((bd.stop - bd.start) * len(bd.rows) for bd in bands) / n_out,
                     "ms_per_step": {k: statistics.median(t) / steps * 1e3 for k, t in times.items()},
                     "banded_speedup": {k: paired_ratio(times[f"{k}-dense"], times[f"{k}-banded"])
                                        for k in ("local", "backprop")}}
    return out
