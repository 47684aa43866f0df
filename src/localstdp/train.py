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

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .checkpoint import atomic_write_text, load_checkpoint, load_model_tensors, model_tensors, save_checkpoint
from .config import ExperimentConfig, config_from_dict
from .data import Dataset, load_dataset
from .errors import CheckpointError, DivergenceError, LocalSTDPError
from .model import MLP, build_model
from .rules import LEARNERS

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"
MODEL = "model.safetensors"
METRICS = "metrics.json"
CONFIG = "config.toml"


class Interrupted(LocalSTDPError):
    """Training stopped on a signal after writing a checkpoint; ``exit_code`` is 128 + signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def make_learner(method: str, model: MLP, cfg: ExperimentConfig, n_classes: int):
    if method not in LEARNERS:
        raise LocalSTDPError(f"unknown method {method!r}; expected one of {', '.join(LEARNERS)}")
    params = cfg.rule if method == "local" else cfg.backprop
    return LEARNERS[method](model, params, n_classes, cfg.train.seed)


@torch.no_grad()
def accuracy(model: MLP, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model.predict(x) == y).float().mean()) if len(y) else float("nan")


def shuffle_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + 17)


def batches(n: int, batch_size: int, perm: torch.Tensor):
    """Index tensors of consecutive batches of a permutation (the last one may be partial)."""
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


@dataclass
class RunState:
    """Where a run stands: completed epochs, position inside the current epoch, history."""

    epoch: int = 0
    step: int = 0  # batches of epoch ``epoch`` already applied
    epoch_rng: torch.Tensor | None = None  # shuffling RNG state at the start of epoch ``epoch``
    history: list = field(default_factory=list)
    wall_seconds: float = 0.0
    epoch_loss: float = 0.0  # running loss sum of the current epoch


def _check_finite(model: MLP, epoch: int, step: int) -> None:
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise DivergenceError(
                f"training diverged: {name} became NaN/inf at epoch {epoch + 1}, batch {step}; "
                "lower the learning rate (the last good checkpoint is kept)"
            )


def _save_state(out: Path, model, learner, method: str, cfg: ExperimentConfig, state: RunState, gen_state) -> None:
    tensors = model_tensors(model) | learner.state_tensors()
    tensors["rng.epoch_start"] = state.epoch_rng if state.epoch_rng is not None else gen_state
    meta = {
        "kind": "checkpoint",
        "method": method,
        "widths": model.widths,
        "epoch": state.epoch,
        "step": state.step,
        "history": state.history,
        "wall_seconds": state.wall_seconds,
        "epoch_loss": state.epoch_loss,
        "config": cfg.to_dict(),
    }
    save_checkpoint(out / CHECKPOINT, tensors, meta)


def _without_epochs(d):
    """A config dict without train.epochs: a run may be resumed with a larger epoch budget."""
    if not isinstance(d, dict):
        return d
    return d | {"train": {k: v for k, v in d.get("train", {}).items() if k != "epochs"}}


def _load_state(out: Path, model, learner, method: str, cfg: ExperimentConfig) -> RunState:
    tensors, meta = load_checkpoint(out / CHECKPOINT)
    if meta.get("kind") != "checkpoint" or meta.get("method") != method:
        raise CheckpointError(f"{out / CHECKPOINT}: a {meta.get('method')!r} checkpoint cannot resume a {method!r} run")
    if _without_epochs(meta.get("config")) != _without_epochs(cfg.to_dict()):
        raise CheckpointError(f"{out / CHECKPOINT}: was written with a different config; resume with the same settings")
    load_model_tensors(model, tensors, str(out / CHECKPOINT))
    try:
        learner.load_state_tensors(tensors)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{out / CHECKPOINT}: learner state does not fit: {exc}") from None
    return RunState(
        epoch=int(meta["epoch"]),
        step=int(meta["step"]),
        epoch_rng=tensors["rng.epoch_start"],
        history=list(meta["history"]),
        wall_seconds=float(meta["wall_seconds"]),
        epoch_loss=float(meta.get("epoch_loss", 0.0)),
    )


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
) -> dict:
    """Train ``method`` ("local" or "backprop") on ``cfg``; write the run to ``out`` if given.

    Args:
        dataset: an already loaded dataset (else loaded from ``cfg.data``).
        progress: show a tqdm progress bar over batches.
        resume: continue from ``out/checkpoint.safetensors`` if it exists.
        should_stop: polled after every batch; a non-zero return (a signal number) makes the loop
            write a checkpoint and raise :class:`Interrupted`.
        step_hook: called as ``step_hook(epoch, step)`` after every batch (tests use it).

    Returns:
        The metrics dict (also written to ``out/metrics.json``).
    """
    ds = dataset if dataset is not None else load_dataset(cfg.data)
    seed = cfg.train.seed
    model = build_model(ds.n_features, cfg.model.hidden, ds.n_classes, cfg.model.activation, seed)
    learner = make_learner(method, model, cfg, ds.n_classes)
    gen = shuffle_generator(seed)
    out_dir = Path(out) if out is not None else None
    state = RunState()
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LocalSTDPError(f"cannot create output directory {out_dir}: {exc.strerror or exc}") from None
        if resume and (out_dir / CHECKPOINT).exists():
            state = _load_state(out_dir, model, learner, method, cfg)
            log.info("resuming %s at epoch %d, batch %d", out_dir, state.epoch + 1, state.step)
        elif resume and (out_dir / METRICS).exists():
            raise LocalSTDPError(f"{out_dir} holds a finished run; nothing to resume")
        try:
            atomic_write_text(out_dir / CONFIG, cfg.to_toml())
        except OSError as exc:
            raise LocalSTDPError(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
    n, bs = len(ds.y_train), cfg.train.batch_size
    n_batches = math.ceil(n / bs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.train.epochs * n_batches, initial=state.epoch * n_batches + state.step,
                   desc=f"{method} seed {seed}", unit="batch", leave=False, dynamic_ncols=True)
    t_start = time.perf_counter()
    wall_before = state.wall_seconds
    try:
        while state.epoch < cfg.train.epochs:
            if state.epoch_rng is not None:
                gen.set_state(state.epoch_rng)
            state.epoch_rng = gen.get_state()
            perm = torch.randperm(n, generator=gen)
            t_epoch = time.perf_counter()
            for b, idx in enumerate(batches(n, bs, perm)):
                if b < state.step:
                    continue  # already applied before the checkpoint we resumed from
                loss = learner.step(ds.x_train[idx], ds.y_train[idx])
                if not math.isfinite(loss):
                    _check_finite(model, state.epoch, b + 1)
                    raise DivergenceError(
                        f"training diverged: loss is {loss} at epoch {state.epoch + 1}, batch {b + 1}; "
                        "lower the learning rate (the last good checkpoint is kept)"
                    )
                state.epoch_loss += loss * len(idx)
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
            record = {
                "epoch": state.epoch + 1,
                "loss": state.epoch_loss / n,
                "train_accuracy": accuracy(model, ds.x_train, ds.y_train),
                "test_accuracy": accuracy(model, ds.x_test, ds.y_test),
                "seconds": time.perf_counter() - t_epoch,
            }
            state.history.append(record)
            state.epoch, state.step, state.epoch_rng, state.epoch_loss = state.epoch + 1, 0, None, 0.0
            if bar is not None:
                bar.set_postfix(test=f"{record['test_accuracy']:.3f}")
            state.wall_seconds = wall_before + time.perf_counter() - t_start
            every = cfg.train.checkpoint_every
            if out_dir is not None and ((every and state.epoch % every == 0) or state.epoch == cfg.train.epochs):
                _save_state(out_dir, model, learner, method, cfg, state, gen.get_state())
            signum = should_stop() if should_stop is not None else 0
            if signum and state.epoch < cfg.train.epochs:
                if out_dir is not None:
                    _save_state(out_dir, model, learner, method, cfg, state, gen.get_state())
                raise Interrupted(f"interrupted by signal {signum} after epoch {state.epoch}: checkpoint written; "
                                  "continue with --resume", 128 + signum)
    finally:
        if bar is not None:
            bar.close()
    metrics = {
        "method": method,
        "seed": seed,
        "data": cfg.data.name,
        "classes": list(ds.class_labels),
        "widths": model.widths,
        "epochs": cfg.train.epochs,
        "n_train": n,
        "n_test": len(ds.y_test),
        "train_accuracy": state.history[-1]["train_accuracy"],
        "test_accuracy": state.history[-1]["test_accuracy"],
        "history": state.history,
        "wall_seconds": state.wall_seconds,
    }
    if out_dir is not None:
        save_checkpoint(out_dir / MODEL, model_tensors(model), {"kind": "model", "method": method,
                                                                "widths": model.widths, "config": cfg.to_dict()})
        atomic_write_text(out_dir / METRICS, json.dumps(metrics, indent=2) + "\n")
    metrics["model"] = model  # for in-process callers; not serialised
    return metrics


def load_run(run_dir: str | Path) -> tuple[ExperimentConfig, MLP, str]:
    """Rebuild the trained model of a run directory: (config, model, method)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}")
    tensors, meta = load_checkpoint(run_dir / MODEL)
    try:
        cfg = config_from_dict(meta["config"])
        widths = [int(w) for w in meta["widths"]]
        method = str(meta["method"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{run_dir / MODEL}: incomplete metadata ({exc})") from None
    model = MLP(widths[0], widths[1:-1], widths[-1], cfg.model.activation)
    load_model_tensors(model, tensors, str(run_dir / MODEL))
    return cfg, model, method
