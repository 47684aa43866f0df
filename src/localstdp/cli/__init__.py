"""The ``localstdp`` command: parses arguments, calls the library, prints results.

Exit codes: 0 success; 1 runtime error (data, checkpoint, divergence, a dead peer); 2 usage or
configuration error; 130 / 143 interrupted by SIGINT / SIGTERM after writing a checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback

from .. import __version__
from ..errors import LocalSTDPError
from .bench import _add_bench
from .common import _other_rank
from .configs import _add_configs
from .cv import _add_cv
from .evaluate import _add_evaluate
from .reproduce import _add_reproduce
from .train import _add_train
from .tune import _add_tune

SUBCOMMANDS = [_add_train, _add_evaluate, _add_tune, _add_cv, _add_reproduce, _add_bench, _add_configs]


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on ONE line (what is wrong, and where help is), exit status 2."""

    def error(self, message: str):
        # one prefix for every error, also inside a subcommand ("localstdp train"); torchrun
        # workers all parse the same line, so rank 0 alone prints it (every rank exits 2)
        self.exit(2, None if _other_rank() else f"localstdp: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="localstdp", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"localstdp {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _fail(args, exc: BaseException, message: str | None, code: int) -> int:
    """Print the error (with its traceback under --debug) and return its exit status; a usage
    error under torchrun is printed by rank 0 alone (every rank fails alike)."""
    if args.debug:
        traceback.print_exception(exc)
    if message is not None and not (code == 2 and _other_rank()):
        print(message, file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except LocalSTDPError as exc:
        return _fail(args, exc, f"localstdp: error: {exc}", exc.exit_code)
    except KeyboardInterrupt as exc:
        signum = int(getattr(exc, "signum", signal.SIGINT))
        return _fail(args, exc, f"localstdp: interrupted by signal {signum} before a checkpoint could be written; "
                                "--resume continues from the last one", 128 + signum)
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return _fail(args, exc, f"localstdp: error: {exc.strerror or exc}{where}", 1)
    except (RuntimeError, MemoryError) as exc:  # torch's allocator: one line, exit 1; anything else is a bug
        from ..resources import allocator_message, is_allocator_error

        if not is_allocator_error(exc):
            raise
        return _fail(args, exc, f"localstdp: error: {allocator_message(exc)}", 1)


def entry() -> None:
    """Console entry point: ``main`` and its exit status, without a broken process group's abort."""
    code = main()
    parallel = sys.modules.get("localstdp.parallel")
    if parallel is not None:
        parallel.exit_if_group_left(code)
    sys.exit(code)

