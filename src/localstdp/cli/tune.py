"""``localstdp tune``: choose one method's settings on the validation split (see localstdp.evaluation.tune).

Registered in :data:`localstdp.cli.SUBCOMMANDS`; parses, calls the library, prints.
"""

from __future__ import annotations

import sys

from .reproduce import add_scheduler_options


def _add_tune(sub) -> None:
    from ..registry import PANEL_METHODS  # plain data: --help loads no torch

    p = sub.add_parser("tune", help="choose a method's settings by mean validation accuracy over seeds (ties: "
                                    "the lower validation cross-entropy, then the middle of the tie)")
    p.add_argument("--config", required=True,
                   help="TOML config file, or a shipped config's name (e.g. iris; `localstdp configs` lists them)")
    p.add_argument("--rule", required=True, choices=PANEL_METHODS, help="the method to tune")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="one axis of the grid, e.g. train.lr=0.05,0.1,0.2 (repeat for a product grid)")
    p.add_argument("--seeds", type=int, default=3, help="train.seed = 0..N-1 per grid point (default 3)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    p.add_argument("--out", required=True, help="output directory: tune.json, tune.md, config.toml")
    p.add_argument("--jobs", type=int, default=1, help="run the grid point x seed trainings in N local worker processes, one "
                   "thread each (default 1: in this process)")
    add_scheduler_options(p, "--jobs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args) -> int:
    from ..config import load_config
    from ..evaluation.tune import parse_grid, tune, write_tune

    cfg = load_config(args.config).with_sets(args.set)
    grid = parse_grid(args.grid)
    res = tune(cfg, args.rule, grid, args.seeds, epochs=args.epochs, progress=not args.no_progress, jobs=args.jobs,
               scheduler=args.scheduler, scheduler_timeout=args.scheduler_timeout)
    written = write_tune(res, args.out, source=str(args.config))
    for r in res["points"]:
        mark = "  <- chosen" if r["point"] == res["chosen"] else "  (tied)" if r["point"] in res["tied"] else ""
        print(f"{r['point']}: val accuracy {r['mean']:.4f} ± {r['std']:.4f}{mark}")
    print(f"chosen by {res['chosen_by']}", file=sys.stderr)
    print(f"wrote {', '.join(map(str, written))} ({res['wall_seconds']:.0f} s)", file=sys.stderr)
    return 0
