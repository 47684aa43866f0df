"""What every rank builds (model, learner, stages) and what the ranks share at epoch ends."""

from __future__ import annotations

import copy
import dataclasses
import datetime

import torch
import torch.distributed as dist
from torch import nn

from ..config import ExperimentConfig
from ..data import Dataset
from ..errors import ConfigError
from ..learner import LocalLearner
from ..model import CNN, MLP, build_network
from ..rules import PEERS
from ..rules.layerwise import units
from ..train import make_learner, predictor
from .comm import _Comm, _Run, _shard
from .stages import make_plan

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.uint8, torch.bool)


def build_learner(method: str, model: nn.Module, cfg: ExperimentConfig, n_classes: int):
    """The learner of ``method`` for ``model``: the config's own (train.make_learner) for the package
    models; for any other nn.Module, LocalLearner with the config's rule options (as make_learner
    builds it for a CNN) or backprop. The peer rules are defined on the package MLP only."""
    if isinstance(model, MLP) or (cfg.model.kind == "cnn" and isinstance(model, CNN)):
        return make_learner(method, model, cfg, n_classes)
    if method == "local":
        options = {k: v for k, v in dataclasses.asdict(cfg.rule).items() if k != "eta"}
        c = cfg.conv_rule
        return LocalLearner(model, n_classes, lr=cfg.rule.eta, seed=cfg.train.seed, conv_teaching=c.teaching,
                            conv_lr_scale=c.lr_scale, conv_tau=c.tau, **options)
    if method in PEERS:
        raise ConfigError(f"--rule {method}: the peer rules train the package MLP only (model.layers with sigmoid "
                          f"units); {type(model).__name__} trains with local or backprop")
    return make_learner(method, model, cfg, n_classes)  # backprop: any nn.Module


def _setup(cfg: ExperimentConfig, method: str, mode: str, ds: Dataset, timeout: float, should_stop=None,
           model: nn.Module | None = None) -> _Run:
    """Model, learner and stages of this rank. Every rank builds the full model from the seed (or
    copies the given initial ``model``), so all start identical."""
    comm = _Comm(dist.get_rank(), dist.get_world_size(), datetime.timedelta(seconds=timeout))
    if model is None:
        model = build_network(cfg.model, ds.n_features, ds.n_classes, cfg.train.seed)
    else:
        model = copy.deepcopy(model)
    learner = build_learner(method, model, cfg, ds.n_classes)
    if not hasattr(model, "widths"):  # a hand-built model: what metrics.json and checkpoints record
        layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        model.widths = [ds.n_features, *(units(m) for m in layers)]
    plan, stages = None, []
    if mode == "pipeline":
        plan = make_plan(method, model, learner, ds.x_train[:1])
        stages = plan.partition(comm.world)
    run = _Run(comm, mode, method, cfg, ds, model, learner, stages, should_stop, plan=plan)
    if method != "local" and mode == "data" and not hasattr(learner, "accumulate"):
        from torch.nn.parallel import DistributedDataParallel

        run.ddp = DistributedDataParallel(model)  # backprop: DDP averages the gradients
    return run


def _share(comm: _Comm, owner: int, t: torch.Tensor | None, what: str) -> torch.Tensor | None:
    """Broadcast ``t`` (or None) of the owner; every rank returns the owner's tensor."""
    head = torch.zeros(8, dtype=torch.int64)
    if comm.rank == owner and t is not None:
        head[:3] = torch.tensor([1, _DTYPES.index(t.dtype), t.ndim])
        head[3 : 3 + t.ndim] = torch.tensor(t.shape, dtype=torch.int64)
    comm.broadcast(head, owner, what)
    if not int(head[0]):
        return None
    shape = tuple(head[3 : 3 + int(head[2])].tolist())
    buf = t.detach().reshape(-1).clone() if comm.rank == owner else torch.empty(
        int(torch.tensor(shape).prod()), dtype=_DTYPES[int(head[1])])
    comm.broadcast(buf, owner, what)
    return t if comm.rank == owner else buf.view(shape)


def _share_state(comm: _Comm, owner: int, state: dict | None, what: str) -> dict:
    """Broadcast an optimiser's state of one parameter (names -> tensors) from its owner."""
    names = "\n".join(sorted(k for k, v in (state or {}).items() if v is not None)) if comm.rank == owner else ""
    raw = _share(comm, owner, torch.tensor(list(names.encode()), dtype=torch.uint8), what)
    keys = [k for k in bytes(raw.tolist()).decode().split("\n") if k]
    return {k: _share(comm, owner, torch.as_tensor(state[k]) if comm.rank == owner else None, what) for k in keys}


def _sync_model(run: _Run) -> None:
    """After a pipeline epoch: every stage's owner broadcasts its parameters and buffers and the
    rule's per-layer state (the running presynaptic means of ``rule.center``; a peer rule's optimiser
    state), so all ranks hold the same model and rank 0 checkpoints what the owners hold."""
    if run.mode != "pipeline":
        return
    means = getattr(run.learner, "pre_means", None)
    opt = getattr(run.learner, "optimizer", None)
    with torch.no_grad():
        for owner, (lo, hi) in enumerate(run.stages):
            what = f"sharing the layers of stage {owner} at the end of the epoch"
            tensors = run.plan.parameters(lo, hi)
            for t in tensors:
                run.comm.broadcast(t.data, owner, what)
            for l in run.plan.layer_ids(lo, hi) if means is not None else ():
                means[l] = _share(run.comm, owner, means[l], what)
            for p in tensors if opt is not None else ():
                if isinstance(p, nn.Parameter):
                    state = _share_state(run.comm, owner, opt.state.get(p), what)
                    if run.rank != owner and state:
                        opt.state[p] = state


@torch.no_grad()
def _predict(net: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    if hasattr(net, "predict"):
        return net.predict(x)
    return torch.cat([net(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def _sharded_accuracy(run: _Run) -> tuple[float | None, float | None, float | None]:
    """Train, test and validation accuracy (None without a validation split), each rank predicting
    a shard; counts summed with all_reduce."""
    ds, r, P = run.ds, run.rank, run.world
    counts = torch.zeros(3, dtype=torch.int64)
    net = predictor(run.learner, run.model)
    for i, (x, y) in enumerate(((ds.x_train, ds.y_train), (ds.x_test, ds.y_test), (ds.x_val, ds.y_val))):
        xs, ys = _shard(x, r, P), _shard(y, r, P)
        if len(ys):
            counts[i] = int((_predict(net, xs) == ys).sum())
    run.comm.all_reduce(counts, "summing the accuracy counts")
    n = (len(ds.y_train), len(ds.y_test), len(ds.y_val))
    train_acc, test_acc, val_acc = (float(c) / k if k else None for c, k in zip(counts.tolist(), n))
    return train_acc, test_acc, val_acc
