"""``localstdp cv``: nested repeated stratified cross-validation of panel methods (see localstdp.evaluation.cv).

Registered in :data:`localstdp.cli.SUBCOMMANDS`; parses, calls the library, prints.
"""

from __future__ import annotations

import sys

from .reproduce import add_scheduler_options


def _add_cv(sub) -> None:
    from ..registry import PANEL_METHODS  # plain data: --help loads no torch

    p = sub.add_parser("cv", help="repeated stratified cross-validation over all of a task's examples, each "
                                  "method's setting chosen by inner folds of each outer training part")
    p.add_argument("--config", required=True,
                   help="TOML config file, or a shipped config's name (e.g. iris; `localstdp configs` lists them)")
    p.add_argument("--methods", nargs="+", default=["local", "backprop"], metavar="METHOD",
                   help=f"panel methods to compare (default: local backprop; any of {', '.join(PANEL_METHODS)})")
    p.add_argument("--repeats", type=int, default=10, help="repeats of the outer k-fold split (default 10)")
    p.add_argument("--folds", type=int, default=5, help="outer stratified folds per repeat (default 5)")
    p.add_argument("--inner-folds", type=int, default=3,
                   help="inner stratified folds of each outer training part that choose the setting (default 3)")
    p.add_argument("--grid", action="append", default=[], metavar="METHOD:KEY=V1,V2,...",
                   help="one axis of a method's grid, e.g. local:train.lr=0.05,0.1,0.2 (repeat for more axes or "
                        "methods); a method without one trains with the config's settings")
    p.add_argument("--seed", type=int, default=0, help="seed of the outer and inner splits (default 0)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    p.add_argument("--out", required=True, help="output directory: cv.json, cv.md and folds/ (one file per outer fold)")
    p.add_argument("--resume", action="store_true", help="reuse the outer folds an earlier run of the same setup "
                                                         "finished (OUT/folds/)")
    p.add_argument("--jobs", type=int, default=1, help="run the outer folds in N local worker processes, one "
                   "thread each (default 1: in this process)")
    add_scheduler_options(p, "--jobs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_cv)


def cmd_cv(args) -> int:
    from ..config import load_config
    from ..evaluation.cv import cross_validate, parse_cv_grids, write_cv
    from ..evaluation.methods import resolve_methods

    cfg = load_config(args.config).with_sets(args.set)
    methods = resolve_methods(args.methods)
    grids = parse_cv_grids(args.grid, methods)
    res = cross_validate(cfg, methods, grids, repeats=args.repeats, folds=args.folds, inner_folds=args.inner_folds,
                         seed=args.seed, epochs=args.epochs, out=args.out, resume=args.resume,
                         progress=not args.no_progress, jobs=args.jobs, scheduler=args.scheduler,
                         scheduler_timeout=args.scheduler_timeout)
    written = write_cv(res, args.out, source=str(args.config))
    for m, s in res["summary"].items():
        ci = s["ci95"]
        print(f"{m}: test accuracy {s['mean']:.4f}" + (f", 95% CI [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
    for name, d in res["differences"].items():
        ci = d["ci95"]
        p = f"{d['p_value']:.3g}" if d["p_value"] is not None else "-"
        print(f"{name}: {d['mean']:+.4f}" + (f", 95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "") + f", p {p}")
    print(f"wrote {', '.join(map(str, written))} ({res['wall_seconds']:.0f} s of training)", file=sys.stderr)
    return 0
