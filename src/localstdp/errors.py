"""Errors a user can cause, each mapped to one clear line and an exit code by the CLI.

Library code raises these instead of printing; ``localstdp.cli`` turns them into one line on
stderr and a non-zero exit status (2 for usage and configuration errors, 1 for runtime errors).
"""

from __future__ import annotations


class LocalSTDPError(Exception):
    """Base class: a problem the user can fix. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class ConfigError(LocalSTDPError, ValueError):
    """A malformed or invalid configuration (file, key, type or value)."""

    exit_code = 2


class DataError(LocalSTDPError):
    """A data set that is missing, corrupt, or unusable for the task asked."""

    exit_code = 1


class CheckpointError(LocalSTDPError):
    """A checkpoint that is missing, corrupt, unsafe or does not match its config."""

    exit_code = 1


class OutputError(LocalSTDPError, OSError):
    """An output file or directory that cannot be written (not writable, disk full).

    Also an ``OSError``, so callers that catch ``OSError`` around a write keep working.
    """

    exit_code = 1


class DivergenceError(LocalSTDPError):
    """Training produced NaN or inf in weights or activity."""

    exit_code = 1


class DistributedError(LocalSTDPError):
    """A peer process died, hung or could not be reached."""

    exit_code = 1


class ArgumentError(LocalSTDPError, ValueError):
    """An argument of a library call that the call cannot use: a shape or batch size that does not
    agree, labels outside [0, n_classes), a tensor on another device than the model, non-finite
    inputs, an eps, step count or size out of range (:mod:`localstdp.checks`).

    The message names the argument, what was expected and what came (``"y: expected integer class
    labels in [0, 3), got 3 at index 5"``). Also a ``ValueError``, so ``except ValueError`` clauses
    written before it existed keep working.
    """

    exit_code = 2


class ArgumentTypeError(ArgumentError, TypeError):
    """An argument of the wrong type or dtype (a list where a tensor is expected, float labels, an
    input of another dtype than the model's). Both a ``ValueError`` and a ``TypeError``."""
