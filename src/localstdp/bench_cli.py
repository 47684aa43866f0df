"""The ``localstdp bench`` subcommand (registered in cli.py): runs :mod:`localstdp.bench`, prints."""

from __future__ import annotations

import shlex

from .errors import ConfigError


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="time the local rule against backprop (and write BENCHMARKS.md)")
    p.add_argument("--quick", action="store_true", help="smaller sweeps, fewer repeats (about 2 minutes)")
    p.add_argument("--out", help="write the result JSON here")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CPU, plus CUDA when present (default)")
    p.add_argument("--time-bins", type=int, help="clock steps K of the timing mode in the headline")
    p.add_argument("--repeats", type=int, help="interleaved timed repeats")
    p.add_argument("--threads", help="CPU thread counts to measure in turn, e.g. 1,2 (default: torch's setting)")
    p.add_argument("--report", metavar="JSON", help="do not measure: write the markdown report from this JSON")
    p.add_argument("--md", default="BENCHMARKS.md", help="markdown report path for --report (default BENCHMARKS.md)")
    p.add_argument("--plot", help="plot path for --report (default: next to the JSON)")
    p.add_argument("--notes", help="a markdown file appended to the report (the analysis)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from .bench import TARGETS, run_bench, write_json, write_report

    if args.report:
        words = ["localstdp", "bench", "--report", args.report, "--md", args.md]
        words += (["--plot", args.plot] if args.plot else []) + (["--notes", args.notes] if args.notes else [])
        md, png = write_report(args.report, args.md, args.plot, args.notes, " ".join(shlex.quote(w) for w in words))
        print(f"wrote {md} and {png}")
        return 0
    if not args.out:
        raise ConfigError("bench: --out FILE.json is required (or --report FILE.json)")
    overrides = {}
    for name in ("time_bins", "repeats"):
        value = getattr(args, name)
        if value is not None:
            if value < (2 if name == "time_bins" else 1):
                raise ConfigError(f"bench: --{name.replace('_', '-')} = {value}: too small")
            overrides[name] = value
    threads = None
    if args.threads:
        try:
            threads = [int(t) for t in args.threads.split(",")]
        except ValueError:
            raise ConfigError(f"bench: --threads {args.threads!r}: expected integers such as 1,2") from None
    result = run_bench(quick=args.quick, device=args.device, threads=threads, **overrides)
    words = ["localstdp", "bench", *(["--quick"] if args.quick else []), "--out", args.out]
    words += [] if args.device == "auto" else ["--device", args.device]
    words += ["--threads", args.threads] if args.threads else []
    words += [w for k, v in overrides.items() for w in (f"--{k.replace('_', '-')}", str(v))]
    result["command"] = " ".join(shlex.quote(w) for w in words)
    write_json(result, args.out)
    for key, (op, target) in TARGETS.items():
        print(f"{key:26s} {result[key]:7.3f}  (target {op} {target}: {'met' if result['targets_met'][key] else 'NOT met'})")
    for dev, res in result["devices"].items():
        if "skipped" in res:
            print(f"{dev}: skipped ({res['skipped']})")
    print(f"-> {args.out}")
    return 0
