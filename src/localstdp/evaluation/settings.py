"""What a ``reproduce`` grid runs with (:class:`GridSettings`) and how results.json keeps
per-example correctness (:func:`pack` / :func:`unpack`, the attacked subset :func:`attack_indices`).

The lowest room of localstdp.evaluation: the grid (grid.py, plan.py), its units (units.py) and the
statistics (analysis.py) all read it, and it reads none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..registry import DEFAULT_METHODS
from ..robustness.suite import AttackSettings
from .methods import resolve_methods

HEADLINE_EPS = 0.1  # the eps of the paired tests and of the verdicts
FRONTIER_EPS = (0.05, 0.1)


def attack_indices(n_test: int, n_attack: int | None, seed: int = 20201124) -> np.ndarray:
    """The attacked test examples: all of them, or a fixed seeded subset of ``n_attack``."""
    if n_attack is None or n_attack >= n_test:
        return np.arange(n_test)
    return np.sort(np.random.default_rng(seed).choice(n_test, size=n_attack, replace=False))


def pack(bits: np.ndarray) -> str:
    """A bool vector as a hex string (results.json keeps per-example correctness compactly)."""
    return np.packbits(np.asarray(bits, dtype=bool)).tobytes().hex()


def unpack(hexstr: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(hexstr), dtype=np.uint8))[:n].astype(bool)


@dataclass(frozen=True)
class GridSettings:
    """seeds >= 1 (train.seed = 0..seeds-1) for the panel; frontier_seeds for the frontier (0 = no
    frontier); epochs overrides train.epochs (None: the config's); n_attack caps the attacked test
    examples (a fixed seeded subset, the same for every seed and method; None: all); match_tol:
    validation-accuracy gap above which a matched comparison is run; certify: add the certified
    accuracy (interval / linear bounds); n_boot: bootstrap replicates of the statistics; diagnostics:
    each panel row's "diagnostics" (localstdp.evaluation.diagnostics: effective rank, median |cos|,
    linear readouts by layer, certified radii); val_attack: attack at most this many VALIDATION
    examples of every panel and frontier model (worst case only, frontier eps), for the validation
    robustness selection (evaluation.selection; 0 = off)."""

    seeds: int = 5
    methods: tuple[str, ...] = DEFAULT_METHODS  # the peer rules (registry.PEER_RULES) only when named
    frontier_seeds: int = 3
    frontier_eps: tuple[float, ...] = FRONTIER_EPS
    matched_eps: tuple[float, ...] = (HEADLINE_EPS,)
    epochs: int | None = None
    n_attack: int | None = 500
    match_tol: float = 0.01
    certify: bool = True
    n_boot: int = 20000  # the bootstrap p-value cannot fall below 1/(n_boot+1): Holm multiplies it
    diagnostics: bool = True
    val_attack: int = 0
    attacks: AttackSettings = field(default_factory=AttackSettings)

    def __post_init__(self) -> None:
        from .. import checks

        for name in ("seeds", "frontier_seeds", "n_boot", "val_attack"):
            checks.integer(name, getattr(self, name))  # an ArgumentTypeError naming it, not a TypeError from "<"
        for name in ("epochs", "n_attack"):
            if getattr(self, name) is not None:
                checks.integer(name, getattr(self, name))
        if self.seeds < 1:
            raise ConfigError(f"seeds = {self.seeds!r}: expected an integer >= 1")
        if self.frontier_seeds < 0:
            raise ConfigError(f"frontier_seeds = {self.frontier_seeds!r}: expected an integer >= 0 (0 = no frontier)")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs = {self.epochs!r}: expected an integer >= 1")
        if self.n_attack is not None and self.n_attack < 1:
            raise ConfigError(f"n_attack = {self.n_attack!r}: expected an integer >= 1")
        if not 0 <= self.match_tol < 1:
            raise ConfigError(f"match_tol = {self.match_tol!r}: expected a value in [0, 1)")
        if "local" not in self.methods:
            raise ConfigError("the panel compares against the local rule: --methods must include local")
        resolve_methods(self.methods)
        if self.val_attack < 0:
            raise ConfigError(f"val_attack = {self.val_attack!r}: expected an integer >= 0 (0 = off)")
        if self.n_boot < 100:
            raise ConfigError(f"n_boot = {self.n_boot!r}: expected at least 100 bootstrap replicates")
