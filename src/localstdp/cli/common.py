"""What every subcommand's shell shares: which torchrun process prints."""

from __future__ import annotations

import os


def _other_rank() -> bool:
    """Whether this process is a torchrun worker other than rank 0 (which alone prints usage errors)."""
    return "WORLD_SIZE" in os.environ and os.environ.get("RANK", "0") != "0"
