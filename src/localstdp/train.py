"""The training loop, the same for every learner in :data:`localstdp.rules.LEARNERS`.

A run directory holds:
  config.toml             the resolved configuration (written first)
  checkpoint.safetensors  resumable state: weights, learner state, shuffling RNG, position, history
  model.safetensors       the final weights and what ``evaluate`` needs to rebuild the model
  metrics.json            accuracies, per-epoch history, wall seconds (written last)
Every file is written atomically. Training is deterministic for a given seed and thread count:
initialisation, shuffling and association codes each come from their own seeded generator, so a
run resumed from any checkpoint ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from . import checks
from .checkpoint import (
    atomic_write_text,
    load_checkpoint,
    load_model_tensors,
    model_tensors,
    output_dir,
    save_checkpoint,
)
from .config import ExperimentConfig, config_from_dict, lr_factor
from .data import Dataset, load_dataset
from .errors import CheckpointError, ConfigError, DivergenceError, LocalSTDPError
from .model import CNN, MLP, build_model, build_network, checked_receptive_field
from .resources import check_memory, dataset_to, resolve_device
from .rules import LEARNERS, PEERS, SCORERS
from .rules.robust import harden
from .train_state import (  # noqa: F401  (re-exported: the parallel loops and tests import them from here)
    CHECKPOINT,
    CONFIG,
    METRICS,
    MODEL,
    EpochBatches,
    Interrupted,
    RunState,
    _config_diff,
    _load_state,
    _remove_stale,
    _save_state,
    _without_epochs,
    batches,
    checkpoint_due,
    epoch_loader,
    shuffle_generator,
)

log = logging.getLogger(__name__)

def _receptive_field(cfg: ExperimentConfig, ds: Dataset) -> int:
    """cfg.model.receptive_field, checked against the data (a square image of side >= S)."""
    return checked_receptive_field(cfg.model, ds.n_features)


def schedule_lr(learner, cfg: ExperimentConfig, epoch: int, batch: int, n_batches: int) -> None:
    """Set ``learner``'s rate for batch ``batch`` (0-based) of ``epoch`` (train.lr_schedule); every
    loop (single-process, pipeline stage, data-parallel rank) calls this before each batch."""
    t = cfg.train
    learner.set_lr_factor(lr_factor(t.lr_schedule, epoch * n_batches + batch, t.epochs * n_batches))


def _network(method: str, cfg: ExperimentConfig, ds: Dataset, seed: int) -> MLP | CNN:
    """The network ``method`` trains: the config's, or for ``linear`` (multinomial logistic regression,
    rules/shallow.py) one nn.Linear from the input to the classes, initialised from the same seed."""
    if method == "linear":
        return build_model(ds.n_features, [], ds.n_classes, cfg.model.activation, seed)
    return build_network(cfg.model, ds.n_features, ds.n_classes, seed)


def make_learner(method: str, model: MLP | CNN, cfg: ExperimentConfig, n_classes: int):
    if method not in LEARNERS:
        raise LocalSTDPError(f"unknown method {method!r}; expected one of {', '.join(LEARNERS)}")
    if cfg.model.kind == "cnn" and method != "linear":  # linear: one nn.Linear on the pixels, whatever the config
        if not isinstance(model, CNN):  # a caller that built the package MLP for a CNN config
            raise ConfigError("model.kind = 'cnn': this training path was handed the package MLP; build the model "
                              "with localstdp.model.build_network(cfg.model, n_in, n_out, seed)")
        if method in PEERS:
            raise ConfigError(f"--rule {method}: the peer rules train the package MLP only; a model.kind = 'cnn' "
                              "config trains with local, backprop or backprop-mse")
        if method == "local":  # the rule on any nn.Module, with the config's rule options
            from .learner import LocalLearner

            options = {k: v for k, v in dataclasses.asdict(cfg.rule).items() if k != "eta"}
            c = cfg.conv_rule
            return LocalLearner(model, n_classes, lr=cfg.rule.eta, seed=cfg.train.seed, conv_teaching=c.teaching,
                                conv_lr_scale=c.lr_scale, conv_tau=c.tau, **options)
    if method == "backprop-mse":  # the local rule's own bounded targets
        return LEARNERS[method](model, cfg.backprop, n_classes, cfg.train.seed, a_hi=cfg.rule.a_hi, a_lo=cfg.rule.a_lo)
    params = cfg.rule if method == "local" else cfg.peers if method in PEERS else cfg.backprop
    return LEARNERS[method](model, params, n_classes, cfg.train.seed)


def predictor(learner, model: MLP | CNN):
    """The module whose argmax is the learner's prediction: ``model`` itself, or for a learner that
    predicts otherwise (ff: goodness per embedded label) its ``predict_module()``."""
    make = getattr(learner, "predict_module", None)
    return make() if make is not None else model


@torch.no_grad()
def accuracy(model: MLP | CNN, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model.predict(x) == y).float().mean()) if len(y) else float("nan")


def run_metrics(method: str, cfg: ExperimentConfig, ds: Dataset, model: MLP | CNN, state: RunState) -> dict:
    """The metrics.json record of a finished run (the same for single-process and parallel runs)."""
    return {
        "method": method,
        "seed": cfg.train.seed,
        "data": cfg.data.name,
        "classes": list(ds.class_labels),
        "widths": model.widths,
        "epochs": cfg.train.epochs,
        "n_train": len(ds.y_train),
        "n_val": len(ds.y_val),
        "n_test": len(ds.y_test),
        "train_accuracy": state.history[-1]["train_accuracy"],
        "val_accuracy": state.history[-1].get("val_accuracy"),
        "test_accuracy": state.history[-1]["test_accuracy"],
        "history": state.history,
        "wall_seconds": state.wall_seconds,
    }


def _check_finite(model: torch.nn.Module, epoch: int, step: int) -> None:
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise DivergenceError(f"training diverged: {name} became NaN/inf at epoch {epoch + 1}, batch {step}")


@torch.no_grad()
def _checked_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int, batch_size: int = 4096) -> float:
    """Accuracy, refusing NaN/inf activity (finite weights can still overflow the logits z^L)."""
    correct = 0
    for i in range(0, len(y), batch_size):
        z = model(x[i : i + batch_size])
        if not torch.isfinite(z).all():
            raise DivergenceError(f"training diverged: the output activity became NaN/inf after epoch {epoch + 1}")
        correct += int((z.argmax(1) == y[i : i + batch_size]).sum())
    return correct / len(y) if len(y) else float("nan")


def _learner_step(learner, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int) -> float:
    """One learner step; a loss or an optimiser value that overflows is divergence, not a crash."""
    try:
        loss = learner.step(x, y)
    except RuntimeError as exc:
        if "overflow" not in str(exc):
            raise
        raise DivergenceError(f"training diverged: numeric overflow at epoch {epoch + 1}, batch {step} ({exc})") from None
    if not math.isfinite(loss):
        if isinstance(getattr(learner, "model", None), (MLP, CNN)):
            _check_finite(learner.model, epoch, step)  # name the tensor at fault when there is one
        raise DivergenceError(f"training diverged: loss is {loss} at epoch {epoch + 1}, batch {step}")
    return loss


def train(
    cfg: ExperimentConfig,
    method: str,
    out: str | Path | None = None,
    *,
    dataset: Dataset | None = None,
    progress: bool = False,
    resume: bool = False,
    should_stop: Callable[[], int] | None = None,
    step_hook: Callable[[int, int], None] | None = None,
    keep_epochs: bool = False,
    device="cpu",
) -> dict:
    """Train ``method`` ("local" or "backprop") on ``cfg``; write the run to ``out`` if given.

    Args:
        dataset: an already loaded dataset (else loaded from ``cfg.data``).
        progress: show a tqdm progress bar over batches.
        resume: continue from ``out/checkpoint.safetensors`` if it exists.
        should_stop: polled after every batch; a non-zero return (a signal number) makes the loop
            write a checkpoint and raise :class:`Interrupted`.
        step_hook: called as ``step_hook(epoch, step)`` after every batch (tests use it).
        keep_epochs: keep a copy of the weights after every epoch trained in this call, returned as
            ``metrics["epoch_states"][e - 1]`` (a state_dict) for epoch e (early stopping and
            matched-accuracy comparisons pick an epoch of the full run on validation accuracy).
        device: "cpu" (default), "cuda" or "auto" (cuda when available): where model, data and learner
            live while training; checkpoints, ``metrics["model"]`` and ``epoch_states`` are on the CPU.

    Returns:
        The metrics dict (also written to ``out/metrics.json``).
    """
    ds = dataset if dataset is not None else load_dataset(cfg.data)
    seed = cfg.train.seed
    check_memory(cfg, ds.n_features, ds.n_classes, len(ds.y_train))  # one line, not an allocator traceback
    dev = resolve_device(device)
    model = _network(method, cfg, ds, seed).to(dev)
    ds = dataset_to(ds, dev)
    learner = make_learner(method, model, cfg, ds.n_classes)
    net = predictor(learner, model)  # what accuracy (and metrics["model"], hence attacks) uses
    learner = harden(learner, net, cfg.robust, seed)  # [robust]: noisy or adversarial batches (itself when off)
    gen = shuffle_generator(seed)
    out_dir = Path(out) if out is not None else None
    state = RunState()
    if out_dir is not None:
        output_dir(out_dir)
        if resume and (out_dir / CHECKPOINT).exists():
            state = _load_state(out_dir, model, learner, method, cfg)
            log.info("resuming %s at epoch %d, batch %d", out_dir, state.epoch + 1, state.step)
            _remove_stale(out_dir, ())
        elif resume and (out_dir / METRICS).exists():
            raise LocalSTDPError(f"{out_dir} holds a finished run; nothing to resume")
        else:  # a fresh run: results of an earlier run in this directory must not survive next to it
            _remove_stale(out_dir, (CHECKPOINT, MODEL, METRICS))
        atomic_write_text(out_dir / CONFIG, cfg.to_toml())
    n = len(ds.y_train)
    bs = n if getattr(learner, "full_batch", False) else cfg.train.batch_size  # rules/shallow.py: L-BFGS
    n_batches = math.ceil(n / bs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.train.epochs * n_batches, initial=state.epoch * n_batches + state.step,
                   desc=f"{method} seed {seed}", unit="batch", leave=False, dynamic_ncols=True)
    t_start = time.perf_counter()
    wall_before = state.wall_seconds
    saved_epoch = state.epoch  # the epoch the checkpoint on disk stands at (for messages)
    epoch_states: list[dict | None] = [None] * state.epoch  # epochs before a resume were not kept
    try:
        while state.epoch < cfg.train.epochs:
            perm = state.epoch_permutation(gen, n)
            t_epoch = time.perf_counter()
            # from the batch the checkpoint we resumed from stands at (0 in a fresh epoch)
            for b, (xb, yb) in enumerate(epoch_loader(ds.x_train, ds.y_train, perm, bs, state.step), state.step):
                schedule_lr(learner, cfg, state.epoch, b, n_batches)
                loss = _learner_step(learner, xb, yb, state.epoch, b + 1)
                state.epoch_loss += loss * len(yb)
                state.step = b + 1
                if bar is not None:
                    bar.update(1)
                if step_hook is not None:
                    step_hook(state.epoch, state.step)
                signum = should_stop() if should_stop is not None else 0
                if signum and out_dir is not None and state.step < n_batches:
                    _check_finite(model, state.epoch, state.step)
                    state.wall_seconds = wall_before + time.perf_counter() - t_start
                    _save_state(out_dir, model, learner, method, cfg, state, gen.get_state())
                    raise Interrupted(
                        f"interrupted by signal {signum}: checkpoint written to {out_dir / CHECKPOINT}; "
                        "continue with --resume", 128 + signum)
            _check_finite(model, state.epoch, state.step)
            val = _checked_accuracy(net, ds.x_val, ds.y_val, state.epoch) if ds.has_val else None
            record = state.end_epoch(n, _checked_accuracy(net, ds.x_train, ds.y_train, state.epoch),
                                     _checked_accuracy(net, ds.x_test, ds.y_test, state.epoch),
                                     time.perf_counter() - t_epoch, val)
            if keep_epochs:
                epoch_states.append({k: v.detach().clone().cpu() for k, v in model.state_dict().items()})
            if bar is not None:
                bar.set_postfix(test=f"{record['test_accuracy']:.3f}")
            state.wall_seconds = wall_before + time.perf_counter() - t_start
            signum = should_stop() if should_stop is not None else 0
            stopping = bool(signum) and state.epoch < cfg.train.epochs
            if out_dir is not None and (checkpoint_due(cfg, state.epoch) or stopping):  # once, even when stopping
                _save_state(out_dir, model, learner, method, cfg, state, gen.get_state())
                saved_epoch = state.epoch
            if stopping:
                raise Interrupted(f"interrupted by signal {signum} after epoch {state.epoch}: checkpoint written; "
                                  "continue with --resume", 128 + signum)
    except DivergenceError as exc:
        if out_dir is not None and (out_dir / CHECKPOINT).exists():
            kept = f"the last good checkpoint, {out_dir / CHECKPOINT} (after epoch {saved_epoch}), is kept"
        else:
            kept = "no checkpoint was written"
        raise DivergenceError(f"{exc}; lower the learning rate ({kept})") from None
    finally:
        if bar is not None:
            bar.close()
    metrics = run_metrics(method, cfg, ds, model, state)
    if out_dir is not None:
        save_checkpoint(out_dir / MODEL, model_tensors(model), {"kind": "model", "method": method,
                                                                "widths": model.widths, "config": cfg.to_dict()})
        atomic_write_text(out_dir / METRICS, json.dumps(metrics, indent=2) + "\n")
    if dev.type != "cpu":
        net.cpu()  # in-process callers (attacks, analysis) get a CPU model
    metrics["model"] = net  # for in-process callers; not serialised (ff: its FFScorer, sharing the MLP's layers)
    if keep_epochs:
        metrics["epoch_states"] = epoch_states
    return metrics


def load_run(run_dir: str | Path) -> tuple[ExperimentConfig, MLP | CNN, str]:
    """Rebuild the trained model of a run directory: (config, model, method)."""
    run_dir = Path(checks.path("run_dir", run_dir))
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}")
    if not (run_dir / MODEL).exists() and (run_dir / CHECKPOINT).exists():
        raise CheckpointError(f"{run_dir} has no {MODEL}: the run has not finished (continue it with train --resume)")
    tensors, meta = load_checkpoint(run_dir / MODEL, what="model file")
    try:
        cfg = config_from_dict(meta["config"])
        widths = [int(w) for w in meta["widths"]]
        method = str(meta["method"])
        if cfg.model.kind == "cnn" and method != "linear":
            model = CNN(widths[0], cfg.model.conv, cfg.model.hidden, widths[-1])
        else:
            model = MLP(widths[0], widths[1:-1], widths[-1], cfg.model.activation)
    except (KeyError, TypeError, ValueError, IndexError) as exc:  # ConfigError is a ValueError
        raise CheckpointError(f"{run_dir / MODEL}: incomplete or invalid metadata ({exc})") from None
    load_model_tensors(model, tensors, str(run_dir / MODEL), what="model file")
    if method in SCORERS:  # ff predicts by goodness: the module to evaluate and attack
        return cfg, SCORERS[method](model), method
    return cfg, model, method
