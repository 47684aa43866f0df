"""Where a run stands and its checkpoint: :class:`RunState`, the shuffling order (and the
DataLoader that serves it), and saving / loading ``checkpoint.safetensors`` with the config check
that keeps a resumed run the same run. Used by :mod:`localstdp.train` and the parallel loops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from .checkpoint import TMP_SUFFIX, load_checkpoint, load_model_tensors, model_tensors, save_checkpoint
from .config import ExperimentConfig, config_from_dict
from .errors import CheckpointError, ConfigError, LocalSTDPError

CHECKPOINT = "checkpoint.safetensors"
MODEL = "model.safetensors"
METRICS = "metrics.json"
CONFIG = "config.toml"


class Interrupted(LocalSTDPError):
    """Training stopped on a signal after writing a checkpoint; ``exit_code`` is 128 + signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def shuffle_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + 17)


def batches(n: int, batch_size: int, perm: torch.Tensor):
    """Index tensors of consecutive batches of a permutation (the last one may be partial)."""
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


class EpochBatches(Sampler):
    """The sampler of the training DataLoader: one epoch's batches (:func:`batches` of its
    permutation, drawn by :meth:`RunState.epoch_permutation` from the seeded shuffling generator)
    from batch ``start`` on (a resumed epoch skips what its checkpoint already applied). Each item
    is a whole batch's index tensor, so a batch is ``x[idx]``: the same tensors, bit for bit, as
    indexing the data directly."""

    def __init__(self, perm: torch.Tensor, batch_size: int, start: int = 0):
        self.perm, self.batch_size, self.start = perm, int(batch_size), int(start)

    def __iter__(self):
        return iter(batches(len(self.perm), self.batch_size, self.perm)[self.start :])

    def __len__(self) -> int:
        return max(0, -(-len(self.perm) // self.batch_size) - self.start)


def epoch_loader(x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, batch_size: int, start: int = 0) -> DataLoader:
    """A DataLoader over (x, y) serving one epoch in ``perm``'s order from batch ``start`` on
    (``batch_size=None``: the sampler yields whole batches; no workers, no copies beyond x[idx])."""
    return DataLoader(TensorDataset(x, y), sampler=EpochBatches(perm, batch_size, start), batch_size=None)


@dataclass
class RunState:
    """Where a run stands: completed epochs, position inside the current epoch, history."""

    epoch: int = 0
    step: int = 0  # batches of epoch ``epoch`` already applied
    epoch_rng: torch.Tensor | None = None  # shuffling RNG state at the start of epoch ``epoch``
    history: list = field(default_factory=list)
    wall_seconds: float = 0.0
    epoch_loss: float = 0.0  # running loss sum of the current epoch

    def epoch_permutation(self, gen: torch.Generator, n: int) -> torch.Tensor:
        """This epoch's shuffling order. Restores the generator to the epoch's start when resuming
        mid-epoch, and records that start, so every loop (single-process or parallel) and every
        resume draws the same permutation."""
        if self.epoch_rng is not None:
            gen.set_state(self.epoch_rng)
        self.epoch_rng = gen.get_state()
        return torch.randperm(n, generator=gen)

    def end_epoch(self, n: int, train_accuracy: float, test_accuracy: float, seconds: float,
                  val_accuracy: float | None = None) -> dict:
        """Append the finished epoch's record to the history and move to the next epoch.
        ``val_accuracy`` is None without a validation split (data.val_fraction = 0)."""
        record = {"epoch": self.epoch + 1, "loss": self.epoch_loss / n, "train_accuracy": train_accuracy,
                  "val_accuracy": val_accuracy, "test_accuracy": test_accuracy, "seconds": seconds}
        self.history.append(record)
        self.epoch, self.step, self.epoch_rng, self.epoch_loss = self.epoch + 1, 0, None, 0.0
        return record


def checkpoint_due(cfg: ExperimentConfig, epoch: int) -> bool:
    """Whether a checkpoint is written after ``epoch`` completed epochs (every N, and the last)."""
    every = cfg.train.checkpoint_every
    return bool(every and epoch % every == 0) or epoch == cfg.train.epochs


def _remove_stale(out: Path, names: tuple[str, ...]) -> None:
    """Delete ``names`` and temporary files a killed writer left behind (``.NAME.*.tmp``)."""
    for name in names:
        (out / name).unlink(missing_ok=True)
    for name in (CHECKPOINT, MODEL, METRICS, CONFIG):
        for tmp in out.glob(f".{name}.*{TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)


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


def _config_diff(old, new, prefix: str = "") -> list[str]:
    """``key: checkpoint X, config Y`` for every setting that differs between two config dicts."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [f"{prefix.rstrip('.') or 'config'}: checkpoint {old!r}, config {new!r}"]
    out = []
    for key in sorted(set(old) | set(new), key=str):
        out += _config_diff(old.get(key), new.get(key), f"{prefix}{key}.")
    return out


def _load_state(out: Path, model, learner, method: str, cfg: ExperimentConfig) -> RunState:
    path = out / CHECKPOINT
    tensors, meta = load_checkpoint(path)
    if meta.get("kind") != "checkpoint" or meta.get("method") != method:
        raise CheckpointError(f"{path}: a {meta.get('method')!r} checkpoint cannot resume a {method!r} run")
    old = meta.get("config")
    try:  # a checkpoint of an older version lacks keys added since: compare with their defaults filled in
        old = config_from_dict(old).to_dict()
    except (ConfigError, TypeError, AttributeError):
        pass  # not a valid config: the diff below names what differs
    if cfg.train.lr_schedule == "constant":  # a longer budget just continues the run
        diff = _config_diff(_without_epochs(old), _without_epochs(cfg.to_dict()))
    else:  # the schedule spans train.epochs: another budget would be another run
        diff = _config_diff(old, cfg.to_dict())
    if diff:
        why = (f" (train.lr_schedule = {cfg.train.lr_schedule!r} spans the epoch budget)"
               if any(d.startswith("train.epochs:") for d in diff) else "")
        raise CheckpointError(f"{path}: written with a different config ({'; '.join(diff[:3])}){why}; "
                              "resume with the same settings or train into a new --out")
    load_model_tensors(model, tensors, str(path))
    try:
        learner.load_state_tensors(tensors)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: learner state does not fit: {exc}") from None
    rng = tensors.get("rng.epoch_start")
    expected = torch.Generator().get_state()
    if rng is None or rng.dtype != expected.dtype or rng.shape != expected.shape:
        raise CheckpointError(f"{path}: missing or malformed shuffling RNG state (rng.epoch_start)")
    try:
        state = RunState(
            epoch=int(meta["epoch"]),
            step=int(meta["step"]),
            epoch_rng=rng,
            history=list(meta["history"]),
            wall_seconds=float(meta["wall_seconds"]),
            epoch_loss=float(meta.get("epoch_loss", 0.0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: incomplete metadata ({exc!r})") from None
    if not 0 <= state.epoch <= cfg.train.epochs or state.step < 0 or len(state.history) != state.epoch:
        raise CheckpointError(f"{path}: stands at epoch {state.epoch}, batch {state.step}, which does not fit "
                              f"train.epochs = {cfg.train.epochs}; resume with --epochs >= {state.epoch}")
    return state


