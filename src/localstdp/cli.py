"""The ``localstdp`` command: parses arguments, calls the library, prints results.

Exit codes: 0 success; 1 runtime error (data, checkpoint, divergence, a dead peer); 2 usage or
configuration error; 130 / 143 interrupted by SIGINT / SIGTERM after writing a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

from . import __version__
from .bench_cli import _add_bench
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


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one model (local rule or backprop) from a config")
    p.add_argument("--config", required=True, help="TOML config file")
    p.add_argument("--rule", choices=["local", "backprop", "backprop-mse"], default="local",
                   help="training method (backprop-mse: sigmoid outputs, squared error to the rule's targets)")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, validated like the file (e.g. train.lr=0.1; repeatable)")
    p.add_argument("--out", required=True, help="run directory (created)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--parallel", choices=["none", "pipeline", "data"], default="none",
                   help="torch.distributed training: layer pipeline (local rule) or data parallel; "
                        "under torchrun the process joins its group (docs/distributed.md)")
    p.add_argument("--nproc", type=int, help="without torchrun: start N local workers (gloo on 127.0.0.1)")
    p.add_argument("--dist-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="longest wait on a peer before the run is declared dead (default 30)")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from .config import load_config
    from .train import train

    cfg = load_config(args.config).with_sets(args.set).with_overrides(seed=args.seed, epochs=args.epochs)
    stop = _StopFlag()
    stop.install()
    several = os.environ.get("WORLD_SIZE", "1") != "1"  # torchrun started several copies of this command
    if args.parallel != "none" or args.nproc is not None or several:
        from .parallel import train_from_cli, under_torchrun

        if under_torchrun() and os.environ.get("RANK") != "0":
            logging.getLogger().setLevel(logging.ERROR)  # rank 0 alone logs
        m = train_from_cli(cfg, args.rule, args.out, mode=args.parallel, nproc=args.nproc, resume=args.resume,
                           progress=not args.no_progress, timeout=args.dist_timeout, should_stop=stop)
        if m is None:  # not rank 0
            return 0
    else:
        m = train(cfg, args.rule, args.out, progress=not args.no_progress, resume=args.resume, should_stop=stop)
    print(f"{args.rule}: train accuracy {m['train_accuracy']:.4f}, test accuracy {m['test_accuracy']:.4f} "
          f"({m['epochs']} epochs, {m['wall_seconds']:.1f} s) -> {args.out}")
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="reload a run's checkpoint and print its accuracy")
    p.add_argument("--run", required=True, help="run directory written by `localstdp train`")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from .data import load_dataset
    from .train import accuracy, load_run

    cfg, model, method = load_run(args.run)
    ds = load_dataset(cfg.data)
    if ds.n_features != model.widths[0] or ds.n_classes != model.widths[-1]:
        raise LocalSTDPError(f"{args.run}: the model's shape {model.widths} does not fit the data set")
    res = {"method": method, "train_accuracy": accuracy(model, ds.x_train, ds.y_train),
           "test_accuracy": accuracy(model, ds.x_test, ds.y_test)}
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{method}: train accuracy {res['train_accuracy']:.4f}, test accuracy {res['test_accuracy']:.4f}")
    return 0


SUBCOMMANDS = [_add_train, _add_evaluate, _add_tune, _add_reproduce, _add_bench]


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on ONE line (what is wrong, and where help is), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="localstdp", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"localstdp {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except LocalSTDPError as exc:
        if args.debug:
            raise
        print(f"localstdp: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if args.debug:
            raise
        signum = int(getattr(exc, "signum", signal.SIGINT))
        print(f"localstdp: interrupted by signal {signum} before a checkpoint could be written; "
              "--resume continues from the last one", file=sys.stderr)
        return 128 + signum
    except OSError as exc:
        if args.debug:
            raise
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"localstdp: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


def entry() -> None:
    """Console entry point: ``main`` and its exit status, without a broken process group's abort."""
    code = main()
    parallel = sys.modules.get("localstdp.parallel")
    if parallel is not None:
        parallel.exit_if_group_left(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
