"""``localstdp train``: train one model from a config (one process, or torch.distributed).

Registered in :data:`localstdp.cli.SUBCOMMANDS`; parses, calls the library, prints.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from ..errors import LocalSTDPError
from .common import _other_rank


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


def _add_train(sub) -> None:
    from ..registry import LEARNER_NAMES  # plain data: --help loads no torch

    p = sub.add_parser("train", help="train one model (local rule, backprop or a peer rule) from a config")
    p.add_argument("--config", required=True,
                   help="TOML config file, or a shipped config's name (e.g. iris; `localstdp configs` lists them)")
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
    p.add_argument("--exchange", choices=["auto", "updates", "activities"], default="auto",
                   help="--parallel data with the local rule: all-reduce every layer's summed update, or gather the "
                        "shards' activities and let every rank run the whole batch's update (auto: activities when "
                        "the model's bytes are at least the batch's activities)")
    p.add_argument("--nproc", type=_positive_int, help="without torchrun: start N >= 1 local workers (gloo on 127.0.0.1)")
    p.add_argument("--dist-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="longest wait on a peer before the run is declared dead (default 30)")
    p.set_defaults(func=cmd_train)


def _warn_if_nothing_to_resume(args) -> None:
    """--resume into a directory without a checkpoint trains from scratch: say so (rank 0 only);
    a finished run there is refused by train itself."""
    from ..train import CHECKPOINT, METRICS

    out = Path(args.out)
    if args.resume and not (out / CHECKPOINT).exists() and not (out / METRICS).exists() and not _other_rank():
        print(f"localstdp: warning: no checkpoint in {out}: starting from scratch", file=sys.stderr)


def cmd_train(args) -> int:
    from ..config import load_config
    from ..train import train

    cfg = load_config(args.config).for_method(args.rule)  # [methods.RULE]: that method's own settings
    cfg = cfg.with_sets(args.set).with_overrides(seed=args.seed, epochs=args.epochs)
    _warn_if_nothing_to_resume(args)
    stop = _StopFlag()
    stop.install()
    several = os.environ.get("WORLD_SIZE", "1") != "1"  # torchrun started several copies of this command
    if args.parallel != "none" or args.nproc is not None or several:
        from ..parallel import train_from_cli, under_torchrun

        if args.device == "cuda":
            raise LocalSTDPError("--device cuda: --parallel and torchrun runs train on the CPU (gloo)")
        if args.rule in ("linear", "random-features"):  # full-batch L-BFGS (rules/shallow.py): nothing to split
            raise LocalSTDPError(f"--rule {args.rule} trains one layer full-batch: run it without --parallel / torchrun")
        if under_torchrun() and os.environ.get("RANK") != "0":
            logging.getLogger().setLevel(logging.ERROR)  # rank 0 alone logs
        m = train_from_cli(cfg, args.rule, args.out, mode=args.parallel, nproc=args.nproc, resume=args.resume,
                           progress=not args.no_progress, timeout=args.dist_timeout, should_stop=stop,
                           exchange=args.exchange)
        if m is None:  # not rank 0
            return 0
    else:
        m = train(cfg, args.rule, args.out, progress=not args.no_progress, resume=args.resume, should_stop=stop,
                  device=args.device)
    print(f"{args.rule}: train accuracy {m['train_accuracy']:.4f}, test accuracy {m['test_accuracy']:.4f} "
          f"({m['epochs']} epochs, {m['wall_seconds']:.1f} s) -> {args.out}")
    return 0
