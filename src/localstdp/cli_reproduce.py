"""``localstdp reproduce``: the paper's comparison (accuracy and robustness) with statistics.

Registered in :data:`localstdp.cli.SUBCOMMANDS`; parses, calls experiments/report, prints.
"""

from __future__ import annotations

import logging
import sys


def _add_reproduce(sub) -> None:
    from .experiments import SUITES, TASKS

    p = sub.add_parser("reproduce", help="train both methods on every task x seed, attack them, write tables/plots")
    p.add_argument("--seeds", type=int, default=5, help="seeds per task and method (train.seed = 0..N-1; default 5)")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help=f"tasks to run (any of {', '.join(TASKS)})")
    p.add_argument("--suite", default="paper", help=f"named task list when --tasks is not given "
                   f"({', '.join(SUITES)}; default paper)")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--epochs", type=int, help="override train.epochs of every task")
    p.add_argument("--n-attack", type=int, default=500, help="attack at most N test examples per task (fixed "
                   "seeded subset; default 500)")
    p.add_argument("--pgd-steps", type=int, default=40, help="PGD iterations (default 40)")
    p.add_argument("--pgd-restarts", type=int, default=3, help="PGD random starts per loss (default 3)")
    p.add_argument("--square-queries", type=int, default=300, help="Square attack iterations (default 300)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args) -> int:
    from .errors import ConfigError
    from .experiments import GridSettings, resolve_tasks, run_grid
    from .report import write_report
    from .robustness import AttackSettings

    try:
        attacks = AttackSettings(pgd_steps=args.pgd_steps, pgd_restarts=args.pgd_restarts,
                                 square_queries=args.square_queries)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    settings = GridSettings(seeds=args.seeds, epochs=args.epochs, n_attack=args.n_attack, attacks=attacks)
    if not args.debug:  # ART logs every attack's success rate at INFO; -v should show our progress only
        logging.getLogger("art").setLevel(logging.WARNING)
    tasks = resolve_tasks(args.tasks, args.suite)
    print(f"reproduce: tasks {', '.join(tasks)}; {args.seeds} seed(s); local and backprop -> {args.out}",
          file=sys.stderr)
    results = run_grid(tasks, settings, progress=not args.no_progress)
    written = write_report(results, args.out)
    for t, v in results["claims"].items():
        print(f"{t}: accuracy {v['accuracy']}; robustness (worst case, eps 0.1) {v['robustness_worst']}; "
              f"FGSM {v['robustness_fgsm']}; matched {v['robustness_matched']}")
    print(f"wrote {', '.join(str(p) for p in written[:2])} and {len(written) - 2} plots "
          f"({results['settings']['wall_seconds']:.0f} s)")
    return 0
