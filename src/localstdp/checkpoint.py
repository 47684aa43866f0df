"""Checkpoints: safetensors for tensors, JSON strings in its metadata; written atomically.

Nothing here unpickles: ``safetensors`` parses a JSON header and raw tensor bytes only, so a
checkpoint from a stranger cannot run code. A write goes to a temporary file in the same
directory, is fsync'ed, then renamed over the target, so a kill at any moment leaves either the
old file or the new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import CheckpointError, OutputError

FORMAT = "localstdp/1"
TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone gives 0600


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via temp file + fsync + rename (readers never see a partial file).

    A failure (disk full, directory not writable) raises :class:`OutputError` naming ``path``,
    removes the temporary file and leaves any previous ``path`` untouched.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _FILE_MODE)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            kept = " (the previous file is kept)" if path.exists() else ""
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}{kept}") from exc
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def output_dir(path: str | Path) -> Path:
    """``path`` created (with its parents) if needed; an OSError becomes a one-line OutputError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {path}: {exc.strerror or exc}") from None
    return path


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save named tensors and JSON-serialisable metadata to a .safetensors file, atomically."""
    # ONE metadata key: safetensors stores __metadata__ as a hash map whose key order varies from
    # process to process, so two keys would make identical checkpoints differ byte for byte
    header = {"localstdp": json.dumps({"format": FORMAT, "meta": meta}, sort_keys=True)}
    blob = st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=header)
    atomic_write_bytes(path, blob)


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`; any problem is a CheckpointError.

    ``what`` names the file in messages ("checkpoint", or "model file" for model.safetensors)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {what} {path}: {exc}") from None
    # a pickle starts with 0x80, a torch.save zip with "PK"; a safetensors file starts with its header
    # length (whose low byte may well be 0x80) and then the JSON header's "{"
    if (raw[:1] == b"\x80" or raw[:2] == b"PK") and raw[8:9] != b"{":
        raise CheckpointError(f"{path}: looks like a pickle / torch.save file; only safetensors files are loaded")
    if not raw:
        raise CheckpointError(f"{path}: empty file, expected a safetensors {what}")
    try:
        tensors = st_load(raw)
        header = _header_metadata(raw)
    except (SafetensorError, ValueError, TypeError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors {what} (truncated or corrupt: {exc})") from None
    if "localstdp" not in header:
        raise CheckpointError(f"{path}: not a localstdp {what} (no 'localstdp' metadata; expected format {FORMAT!r})")
    try:
        doc = json.loads(header["localstdp"])
        fmt, meta = doc.get("format"), doc["meta"]
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt {what} metadata ({exc})") from None
    if fmt != FORMAT:
        raise CheckpointError(f"{path}: not a localstdp {what} (format {fmt!r}, expected {FORMAT!r})")
    return tensors, meta


def _header_metadata(raw: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob already validated by ``st_load``.

    Parsed from the same bytes (8-byte little-endian header length, then a JSON header), so the
    tensors and the metadata can never come from two different versions of the file.
    """
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise TypeError("__metadata__ is not a table")
    return meta


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"model.{k}": v for k, v in model.state_dict().items()}


def load_model_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str,
                       what: str = "checkpoint") -> None:
    """Copy ``model.*`` tensors into ``model``; names and shapes must match exactly."""
    expected = model.state_dict()
    got = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    missing = sorted(set(expected) - set(got))
    if missing:
        raise CheckpointError(f"{source}: {what} lacks {', '.join(missing)}")
    extra = sorted(set(got) - set(expected))
    if extra:
        raise CheckpointError(f"{source}: {what} has tensors the model lacks: {', '.join(extra)}")
    for k, v in expected.items():
        if got[k].shape != v.shape:
            raise CheckpointError(
                f"{source}: {k} has shape {tuple(got[k].shape)} but the config's model needs {tuple(v.shape)}"
            )
        if not torch.isfinite(got[k]).all():
            raise CheckpointError(f"{source}: {k} contains NaN or inf")
    model.load_state_dict(got)
