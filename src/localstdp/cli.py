"""The ``localstdp`` command: parses arguments, calls the library, prints results.

Exit codes: 0 success; 1 runtime error (data, checkpoint, divergence, a dead peer); 2 usage or
configuration error; 130 / 143 interrupted by SIGINT / SIGTERM after writing a checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback
from pathlib import Path

from . import __version__
from .bench_cli import _add_bench
from .cli_evaluate import _add_evaluate
from .cli_reproduce import _add_reproduce
from .cli_tune import _add_tune
from .errors import LocalSTDPError


class _StopFlag:
    """Records the first SIGINT/SIGTERM so the loop can finish its batch and checkpoint."""

    def __init__(self) -> None:
        self.signum = 0

    def __call__(self) -> int:
        return self.signum

    def install(self) -> None:
        def handler(signum, frame):
            if self.signum:  # a second signal: stop now, without a new checkpoint
                stop = KeyboardInterrupt()
                stop.signum = signum
                raise stop
            self.signum = signum
            print(f"localstdp: signal {signum} received; finishing the batch and writing a checkpoint",
                  file=sys.stderr)

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


def _positive_int(text: str) -> int:
    """argparse type of --nproc: an integer >= 1 (0 is a usage error, not "not given")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _other_rank() -> bool:
    """Whether this process is a torchrun worker other than rank 0 (which alone prints usage errors)."""
    return "WORLD_SIZE" in os.environ and os.environ.get("RANK", "0") != "0"


def _add_train(sub) -> None:
    from .registry import LEARNER_NAMES  # plain data: --help loads no torch

    p = sub.add_parser("train", help="train one model (local rule, backprop or a peer rule) from a config")
    p.add_argument("--config", required=True, help="TOML config file")
    p.add_argument("--rule", choices=LEARNER_NAMES, default="local",
                   help="training method (backprop-mse: sigmoid outputs, squared error to the rule's targets; "
                        "fa dfa drtp pepita ff: the peer rules of docs/peers.md); the config's "
                        "[methods.RULE] settings apply")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, validated like the file (e.g. train.lr=0.1; repeatable)")
    p.add_argument("--out", required=True, help="run directory (created)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--parallel", choices=["none", "pipeline", "data"], default="none",
                   help="torch.distributed training: layer pipeline (local, drtp, ff; MLP or CNN for local) or data "
                        "parallel (every rule and model); "
                        "under torchrun the process joins its group (docs/distributed.md)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                   help="where to train: cpu (default, what every recorded number used), cuda, or auto "
                        "(cuda when available); --parallel trains on the CPU")
    p.add_argument("--nproc", type=_positive_int, help="without torchrun: start N >= 1 local workers (gloo on 127.0.0.1)")
    p.add_argument("--dist-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="longest wait on a peer before the run is declared dead (default 30)")
    p.set_defaults(func=cmd_train)


def _warn_if_nothing_to_resume(args) -> None:
    """--resume into a directory without a checkpoint trains from scratch: say so (rank 0 only);
    a finished run there is refused by train itself."""
    from .train import CHECKPOINT, METRICS

    out = Path(args.out)
    if args.resume and not (out / CHECKPOINT).exists() and not (out / METRICS).exists() and not _other_rank():
        print(f"localstdp: warning: no checkpoint in {out}: starting from scratch", file=sys.stderr)


def cmd_train(args) -> int:
    from .config import load_config
    from .train import train

    cfg = load_config(args.config).for_method(args.rule)  # [methods.RULE]: that method's own settings
    cfg = cfg.with_sets(args.set).with_overrides(seed=args.seed, epochs=args.epochs)
    _warn_if_nothing_to_resume(args)
    stop = _StopFlag()
    stop.install()
    several = os.environ.get("WORLD_SIZE", "1") != "1"  # torchrun started several copies of this command
    if args.parallel != "none" or args.nproc is not None or several:
        from .parallel import train_from_cli, under_torchrun

        if args.device == "cuda":
            raise LocalSTDPError("--device cuda: --parallel and torchrun runs train on the CPU (gloo)")
        if under_torchrun() and os.environ.get("RANK") != "0":
            logging.getLogger().setLevel(logging.ERROR)  # rank 0 alone logs
        m = train_from_cli(cfg, args.rule, args.out, mode=args.parallel, nproc=args.nproc, resume=args.resume,
                           progress=not args.no_progress, timeout=args.dist_timeout, should_stop=stop)
        if m is None:  # not rank 0
            return 0
    else:
        m = train(cfg, args.rule, args.out, progress=not args.no_progress, resume=args.resume, should_stop=stop,
                  device=args.device)
    print(f"{args.rule}: train accuracy {m['train_accuracy']:.4f}, test accuracy {m['test_accuracy']:.4f} "
          f"({m['epochs']} epochs, {m['wall_seconds']:.1f} s) -> {args.out}")
    return 0


SUBCOMMANDS = [_add_train, _add_evaluate, _add_tune, _add_reproduce, _add_bench]


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
        from .resources import allocator_message, is_allocator_error

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


if __name__ == "__main__":
    entry()
