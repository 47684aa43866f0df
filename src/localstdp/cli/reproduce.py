"""``localstdp reproduce``: the panel (local rule vs the backprop baselines) and the frontier.

Registered in :data:`localstdp.cli.SUBCOMMANDS`; parses, calls localstdp.evaluation (grid, report), prints.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from ..registry import DEFAULT_METHODS, PEER_RULES, ROBUST_METHODS, SHALLOW_BASELINES, TIMING_METHODS

# Per-suite defaults of --seeds, --frontier-seeds and --methods (what the suite is for), used when the
# tasks come from --suite and the option is not given; an explicit option always wins. Without an
# entry here a suite runs the general defaults (5 seeds, frontier 3 seeds, DEFAULT_METHODS).
# peers (issue 14): the local rule, plain backprop (tuned like the peers: learning rate only) and
# backprop-wd (the most robust backprop baseline of the paper panel), and the five peer rules; no
# frontier (it sweeps backprop and the local rule only).
# paper (issue 23): the panel with the linear model and random features beside it. nonlinear (issue 23):
# the Fashion-MNIST tasks where a linear model is not enough; 3 seeds, 1,000 attacked test examples
# (of 2,000 on a pair, 10,000 on fashion-mnist), the panel's backprop variants that the frontier and
# the validation selection cover (backprop's weight decay and rate), and the shallow baselines.
# robust (issue 33): the paper tasks' panel and frontier with the robustly trained families beside the rule,
# backprop and the linear model, and input noise as a knob of those three; the grids below were fixed before
# any run (the training radius around the headline eps 0.1; TRADES' beta 1 and the paper's 6), 3 seeds.
ROBUST_SETS = ("frontier.input_noise=[0.1, 0.2, 0.3]", "frontier.adv_eps=[0.05, 0.1, 0.2]", "frontier.trades_beta=[1.0, 6.0]")
SUITE_DEFAULTS: dict[str, dict] = {
    "paper": {"methods": (*DEFAULT_METHODS, *SHALLOW_BASELINES)},
    "nonlinear": {"seeds": 3, "n_attack": 1000, "methods": ("local", "backprop", "backprop-wd", *SHALLOW_BASELINES)},
    "peers": {"seeds": 3, "frontier_seeds": 0, "methods": ("local", "backprop", "backprop-wd", *PEER_RULES)},
    "timing": {"seeds": 3, "frontier_seeds": 0, "methods": ("local", *TIMING_METHODS)},
    "robust": {"seeds": 3, "methods": ("local", "backprop", "linear", *ROBUST_METHODS), "sets": ROBUST_SETS},
}
GENERAL_DEFAULTS: dict = {"seeds": 5, "frontier_seeds": 3, "methods": None, "n_attack": 500, "val_attack": 500}


def suite_defaults(args) -> dict:
    """seeds, frontier_seeds and methods of a parsed reproduce command line: each as given, else the
    suite's default (only when the tasks come from --suite), else the general default."""
    own = {} if args.tasks else SUITE_DEFAULTS.get(args.suite, {})
    return {k: (v if (v := getattr(args, k)) is not None else own.get(k, d)) for k, d in GENERAL_DEFAULTS.items()}


def _add_reproduce(sub) -> None:
    from ..registry import PANEL_METHODS, SUITES, TASKS  # plain data: --help loads no torch

    p = sub.add_parser("reproduce", help="train the panel on every task x seed, attack and certify the models, "
                       "sweep the robustness-accuracy frontier, write tables/plots")
    p.add_argument("--seeds", type=int, help="panel seeds per task and method (train.seed = 0..N-1; default 5, "
                   "--suite nonlinear and peers 3)")
    p.add_argument("--frontier-seeds", type=int, help="seeds per frontier point (default 3, --suite peers 0; 0 = no "
                   "frontier)")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help=f"tasks to run (any of {', '.join(TASKS)})")
    p.add_argument("--suite", default="paper", help=f"named task list when --tasks is not given "
                   f"({', '.join(SUITES)}; default paper)")
    p.add_argument("--methods", nargs="+", metavar="NAME", help=f"panel methods, any of {' '.join(PANEL_METHODS)} "
                   f"(default: {' '.join(DEFAULT_METHODS)}; --suite paper (the default suite), nonlinear and peers: "
                   + "; ".join(f"{k}: {' '.join(v['methods'])}" for k, v in SUITE_DEFAULTS.items()) + ")")
    p.add_argument("--out", required=True, help="output directory (created); finished units go to OUT/units")
    p.add_argument("--resume", action="store_true", help="reuse the finished units in OUT/units (same settings)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a value of every task's config (repeatable)")
    p.add_argument("--epochs", type=int, help="override train.epochs of every task")
    p.add_argument("--n-attack", type=int, help="attack at most N test examples per task (fixed seeded subset; "
                   "default 500, --suite nonlinear 1000)")
    p.add_argument("--pgd-steps", type=int, default=40, help="PGD iterations (default 40)")
    p.add_argument("--pgd-restarts", type=int, default=3, help="PGD random starts per loss (default 3)")
    p.add_argument("--square-queries", type=int, default=300, help="Square attack iterations (default 300)")
    p.add_argument("--no-autoattack", action="store_true", help="leave AutoAttack out of the suite")
    p.add_argument("--autoattack-standard", action="store_true",
                   help="also run the official AutoAttack code, standard version (APGD-CE, APGD-T, FAB-T, Square "
                   "5,000), on every other attack's survivors: attack 'aa-standard' in the worst case "
                   "(pip install 'localstdp[autoattack]')")
    p.add_argument("--no-certify", action="store_true", help="skip the certified (bound) accuracy")
    p.add_argument("--no-diagnostics", action="store_true", help="skip each panel model's diagnostics (effective "
                   "rank, median |cos|, linear readouts by layer, certified radii)")
    p.add_argument("--val-attack", type=int, metavar="N",
                   help="also attack at most N VALIDATION examples of every panel and frontier model (worst case "
                   "only, frontier eps) and report the validation robustness selection: per method family the "
                   "setting with the best validation worst case within one point of its best validation accuracy "
                   "(default 500; 0: off)")
    p.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 4),
                   help="worker processes, one thread each (default: the CPU count, at most 4)")
    add_scheduler_options(p, "--jobs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_reproduce)


def add_scheduler_options(p, jobs: str) -> None:
    """--scheduler and --scheduler-timeout (reproduce, tune, cv: localstdp.evaluation.cluster)."""
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help=f"run the units on the workers of the dask.distributed scheduler at ADDRESS (e.g. "
                   f"tcp://host:8786) instead of {jobs} local processes; results are written here, workers need the "
                   "installed package and the data (docs/distributed.md; pip install localstdp[cluster])")
    p.add_argument("--scheduler-timeout", type=float, default=20.0, metavar="SECONDS",
                   help="seconds to reach the scheduler before giving up (default 20)")


def cmd_reproduce(args) -> int:
    from ..errors import ConfigError
    from ..evaluation.grid import run_grid
    from ..evaluation.methods import resolve_methods
    from ..evaluation.plan import resolve_tasks, task_config
    from ..evaluation.report import write_report
    from ..evaluation.settings import GridSettings
    from ..robustness.suite import AttackSettings

    try:
        extra = ({"autoattack": False} if args.no_autoattack else {}) | (
            {"autoattack_standard": True} if args.autoattack_standard else {})
        attacks = AttackSettings(pgd_steps=args.pgd_steps, pgd_restarts=args.pgd_restarts,
                                 square_queries=args.square_queries, **extra)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    if args.autoattack_standard:
        from ..robustness import official

        official.require()  # one line now, not a failure in the first worker
    d = suite_defaults(args)
    args.seeds, args.frontier_seeds, args.n_attack, args.val_attack = (d[k] for k in ("seeds", "frontier_seeds",
                                                                                      "n_attack", "val_attack"))
    methods = tuple(resolve_methods(d["methods"]))
    settings = GridSettings(seeds=args.seeds, frontier_seeds=args.frontier_seeds, methods=methods, epochs=args.epochs,
                            n_attack=args.n_attack, certify=not args.no_certify, attacks=attacks,
                            diagnostics=not args.no_diagnostics, val_attack=args.val_attack)
    if not args.debug:  # ART logs every attack's success rate at INFO; -v should show our progress only
        logging.getLogger("art").setLevel(logging.WARNING)
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: expected an integer >= 1")
    tasks = resolve_tasks(args.tasks, args.suite)
    suite_sets = () if args.tasks else SUITE_DEFAULTS.get(args.suite, {}).get("sets", ())  # before the user's --set
    cfgs = {t: task_config(t).with_sets([*suite_sets, *args.set]) for t in tasks}
    where = f" on the dask scheduler at {args.scheduler}" if args.scheduler else ""
    print(f"reproduce: tasks {', '.join(tasks)}; methods {' '.join(methods)}; {args.seeds} seed(s), frontier "
          f"{args.frontier_seeds} seed(s){where} -> {args.out}", file=sys.stderr)
    def on_term(signum, frame):  # SIGTERM stops like Ctrl-C: workers stopped, finished work kept and counted
        stop = KeyboardInterrupt()
        stop.signum = signum
        raise stop

    import threading

    main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    previous = signal.signal(signal.SIGTERM, on_term) if main_thread else None
    try:
        results = run_grid(cfgs, settings, progress=not args.no_progress, out=args.out, resume=args.resume,
                           jobs=args.jobs, scheduler=args.scheduler, scheduler_timeout=args.scheduler_timeout)
    except KeyboardInterrupt as exc:
        from pathlib import Path

        units = Path(args.out) / "units"
        kept = len(list(units.glob("*/*.json")))
        parts = len(list(units.glob("*/*/*/part.safetensors")))  # models of units not yet assembled
        print(f"localstdp: interrupted: {kept} finished unit(s) and {parts} finished model(s) of unfinished "
              f"units kept in {args.out}/units; run the same command with --resume to continue", file=sys.stderr)
        signum = int(getattr(exc, "signum", 2))
        return 128 + signum
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    written = write_report(results, args.out)
    for v in results["claims"].values():
        for s in v.get("sentences", []):
            print(s)
    print(f"wrote {', '.join(str(p) for p in written[:2])} and {len(written) - 2} plots "
          f"({results['settings']['wall_seconds']:.0f} s)", file=sys.stderr)
    return 0
