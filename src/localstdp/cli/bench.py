"""The ``localstdp bench`` subcommand (registered in cli/__init__.py): runs :mod:`localstdp.bench`, prints.

Outputs default to ``bench-out/`` (not tracked); an output that would replace a file git tracks
(the committed BENCHMARKS.md, benchmarks/bench.json, ...) is refused unless ``--force``."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
from pathlib import Path

from ..errors import ConfigError, OutputError

DEFAULT_DIR = "bench-out"  # untracked (.gitignore): a documented command never replaces committed files


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="time the local rule against backprop (and write a markdown report)")
    p.add_argument("--quick", action="store_true", help="smaller sweeps, fewer repeats (about 2 minutes)")
    p.add_argument("--out", default=f"{DEFAULT_DIR}/bench.json",
                   help=f"write the result JSON here (default {DEFAULT_DIR}/bench.json)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CPU, plus CUDA when present (default)")
    p.add_argument("--time-bins", type=int, help="clock steps K of the timing mode in the headline")
    p.add_argument("--repeats", type=int, help="interleaved timed repeats")
    p.add_argument("--threads", help="CPU thread counts to measure in turn, e.g. 1,2 (default: torch's setting)")
    p.add_argument("--configs", nargs="*", metavar="NAME",
                   help="also time one epoch (--quick: a few batches) of every shipped config, or of the NAMEs "
                        "given, for the local rule and backprop on the config's own network")
    p.add_argument("--rules", nargs="+", metavar="RULE",
                   help="also time these rules (local, backprop, fa, dfa, drtp, pepita, ff) on the headline network")
    p.add_argument("--attacks", nargs="*", metavar="CASE",
                   help="instead: time the attack suite per model (cases mnist-3v5, fashion-mnist, mnist-10-cnn; "
                        "default all) and a small reproduce end to end; writes --out (default "
                        f"{DEFAULT_DIR}/attacks.json) and --md (default {DEFAULT_DIR}/attacks.md)")
    p.add_argument("--parallel", action="store_true",
                   help="instead: training throughput against ranks -- the local rule's layer pipeline and data "
                        "parallel, backprop's DDP and torch.distributed.pipelining schedules (GPipe, 1F1B, "
                        "interleaved zero bubble, ZBV) -- and the scaling model; writes --out (default "
                        f"{DEFAULT_DIR}/parallel.json), --md (default {DEFAULT_DIR}/parallel.md) and --plot "
                        f"(default {DEFAULT_DIR}/parallel.png)")
    p.add_argument("--ranks", type=int, nargs="+", metavar="N",
                   help="with --parallel: the rank counts, one thread each (default 2, 4, 8 up to the CPU count)")
    p.add_argument("--nets", nargs="+", metavar="NET", help="with --parallel: mlp-uneven, mlp-even, cnn (default all)")
    p.add_argument("--batch-sizes", type=int, nargs="+", metavar="B", help="with --parallel: default 64 256")
    p.add_argument("--no-reproduce", action="store_true", help="with --attacks: skip the reproduce run")
    p.add_argument("--reproduce", action="store_true",
                   help="instead: profile the main job -- run `make reproduce`'s command (localstdp reproduce "
                        "--seeds 3) into --run-dir, time it, and sum its units' phases (train, attacks, "
                        f"certificates, ...) by kind of unit; writes --out (default {DEFAULT_DIR}/reproduce.json) "
                        f"and --md (default {DEFAULT_DIR}/reproduce.md)")
    p.add_argument("--from", dest="from_dir", metavar="DIR",
                   help="with --reproduce: profile this finished reproduce output instead of running one")
    p.add_argument("--run-dir", default=f"{DEFAULT_DIR}/reproduce-run",
                   help=f"with --reproduce: where the run writes (default {DEFAULT_DIR}/reproduce-run; replaced)")
    p.add_argument("--seeds", type=int, default=3, help="with --reproduce: panel seeds (default 3, as make reproduce)")
    p.add_argument("--report", metavar="JSON", help="do not measure: write the markdown report from this JSON")
    p.add_argument("--md", default=f"{DEFAULT_DIR}/BENCHMARKS.md",
                   help=f"markdown report path for --report (default {DEFAULT_DIR}/BENCHMARKS.md)")
    p.add_argument("--plot", help="plot path for --report (default: next to the report, JSON_STEM_width.png)")
    p.add_argument("--notes", help="a markdown file appended to the report (the analysis)")
    p.add_argument("--attacks-report", metavar="JSON", help="with --report: the JSON of `bench --attacks`, rendered "
                   "as the report's attack-suite section")
    p.add_argument("--reproduce-report", metavar="JSON", help="with --report: the JSON of `bench --reproduce`, "
                   "rendered as the report's section on the main job's profile")
    p.add_argument("--force", action="store_true", help="overwrite files that git tracks (BENCHMARKS.md, benchmarks/*)")
    p.set_defaults(func=cmd_bench)


def _tracked(path: Path) -> bool | None:
    """Whether git tracks ``path``; None when git cannot tell (not installed)."""
    try:
        done = subprocess.run(["git", "ls-files", "--error-unmatch", "--", path.name], cwd=path.parent,
                              capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.returncode == 0


def refuse_to_replace(paths: list[str | Path], force: bool) -> None:
    """Usage error (exit 2) before any work when an output would replace a file git tracks (or,
    without git, any existing file), unless ``--force``."""
    if force:
        return
    for p in map(Path, paths):
        if not p.exists():
            continue
        tracked = _tracked(p.absolute())
        if tracked or tracked is None:
            why = "is tracked by git" if tracked else "exists (git cannot tell whether it is committed)"
            raise ConfigError(f"bench: {p} {why}; pass --force to overwrite it, or write elsewhere "
                              f"(the default is {DEFAULT_DIR}/)")


def cmd_attacks(args) -> int:
    from ..bench.attacks import CASES, run_attack_bench, write_outputs

    out = f"{DEFAULT_DIR}/attacks.json" if args.out == f"{DEFAULT_DIR}/bench.json" else args.out
    md = f"{DEFAULT_DIR}/attacks.md" if args.md == f"{DEFAULT_DIR}/BENCHMARKS.md" else args.md
    bad = [c for c in args.attacks if c not in CASES]
    if bad:
        raise ConfigError(f"bench --attacks: unknown case {bad[0]!r}; expected one of {', '.join(CASES)}")
    refuse_to_replace([out, md], args.force)
    result = run_attack_bench(args.attacks or None, reproduce=not args.no_reproduce)
    words = ["localstdp", "bench", "--attacks", *args.attacks, *(["--no-reproduce"] if args.no_reproduce else [])]
    write_outputs(result, out, md, " ".join(shlex.quote(w) for w in words))
    for name, r in result["cases"].items():
        if "skipped" in r:
            print(f"attacks {name:14s} skipped ({r['skipped']})")
            continue
        tgt = "" if r["target_s"] is None else \
            f"  (target <= {r['target_s']:g} s: {'met' if r['target_met'] else 'NOT met'})"
        print(f"attacks {name:14s} panel {r['panel_s']:7.1f} s  worst-only {r['worst_only_s']:7.1f} s  "
              f"{r['examples']} examples{tgt}")
    rep = result.get("reproduce")
    if rep:
        print(f"reproduce end to end: {rep.get('wall_s', float('nan')):.0f} s" if "wall_s" in rep
              else f"reproduce end to end: failed ({rep['failed']})")
    print(f"-> {out}, {md}")
    return 0


def cmd_parallel(args) -> int:
    import os

    from ..bench import write_json
    from ..bench.parallel import NETS, QUICK_PARALLEL, ParallelSpec, run_parallel_bench

    out = f"{DEFAULT_DIR}/parallel.json" if args.out == f"{DEFAULT_DIR}/bench.json" else args.out
    md = f"{DEFAULT_DIR}/parallel.md" if args.md == f"{DEFAULT_DIR}/BENCHMARKS.md" else args.md
    png = args.plot or str(Path(md).with_suffix(".png"))
    spec = QUICK_PARALLEL if args.quick else ParallelSpec()
    changes = {}
    if args.nets:
        bad = [n for n in args.nets if n not in NETS]
        if bad:
            raise ConfigError(f"bench --nets: unknown net {bad[0]!r}; expected one of {', '.join(NETS)}")
        changes["nets"] = tuple(args.nets)
    if args.batch_sizes:
        if min(args.batch_sizes) < 2:
            raise ConfigError(f"bench --batch-sizes: {min(args.batch_sizes)} is too small (>= 2)")
        changes["batches"] = tuple(args.batch_sizes)
    if args.repeats is not None:
        if args.repeats < 1:
            raise ConfigError(f"bench: --repeats = {args.repeats}: too small")
        changes["repeats"] = args.repeats
    spec = dataclasses.replace(spec, **changes)
    cpus = os.cpu_count() or 1
    ranks = args.ranks or [n for n in (2, 4, 8) if n <= cpus] or [2]
    if min(ranks) < 2:
        raise ConfigError(f"bench --ranks: {min(ranks)}: expected 2 or more (one process is measured in every group)")
    if args.report:  # no measuring: the model refitted and the report rewritten from a saved JSON
        import json

        from ..bench.scaling import fit_and_predict

        refuse_to_replace([md, png], args.force)
        try:
            result = json.loads(Path(args.report).read_text(encoding="utf-8"))
            result["model"] = fit_and_predict(result)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"bench --parallel --report {args.report}: not a bench --parallel JSON ({exc})") from None
        return _write_parallel(result, md, png, result.get("command", "localstdp bench --parallel"))
    refuse_to_replace([out, md, png], args.force)
    result = run_parallel_bench(spec, ranks)
    words = ["localstdp", "bench", "--parallel", *(["--quick"] if args.quick else []), "--ranks", *map(str, ranks)]
    words += ["--nets", *args.nets] if args.nets else []
    words += ["--batch-sizes", *map(str, args.batch_sizes)] if args.batch_sizes else []
    words += ["--repeats", str(args.repeats)] if args.repeats is not None else []
    result["command"] = " ".join(shlex.quote(w) for w in words)
    write_json(result, out)
    print(f"-> {out}")
    return _write_parallel(result, md, png, result["command"])


def _write_parallel(result: dict, md: str, png: str, command: str) -> int:
    from ..bench.parallel_report import plot, render_markdown

    text = render_markdown(result, command)
    try:
        Path(md).parent.mkdir(parents=True, exist_ok=True)
        Path(md).write_text(text, encoding="utf-8")
        plot(result, png)
    except OSError as exc:
        raise OutputError(f"cannot write {md} / {png}: {exc.strerror or exc}") from None
    print(text)
    print(f"-> {md}, {png}")
    return 0


def cmd_reproduce(args) -> int:
    from ..bench import write_json
    from ..bench.reproduce import profile_run, render_markdown, run_reproduce

    out = f"{DEFAULT_DIR}/reproduce.json" if args.out == f"{DEFAULT_DIR}/bench.json" else args.out
    md = f"{DEFAULT_DIR}/reproduce.md" if args.md == f"{DEFAULT_DIR}/BENCHMARKS.md" else args.md
    if args.seeds < 1:
        raise ConfigError(f"bench --seeds: {args.seeds}: expected 1 or more")
    refuse_to_replace([out, md], args.force)
    if args.from_dir:
        result = profile_run(args.from_dir) | {"reproduce": f"the finished run in {args.from_dir}"}
        words = ["localstdp", "bench", "--reproduce", "--from", args.from_dir]
    else:
        run_dir = Path(args.run_dir)
        if run_dir.exists() and _tracked(run_dir.absolute()):
            raise ConfigError(f"bench --run-dir {run_dir}: tracked by git; the run would replace it")
        result = run_reproduce(run_dir, args.seeds)
        words = ["localstdp", "bench", "--reproduce"] + (["--seeds", str(args.seeds)] if args.seeds != 3 else [])
    result["command"] = " ".join(shlex.quote(w) for w in words)
    write_json(result, out)
    text = render_markdown(result, result["command"])
    try:
        Path(md).parent.mkdir(parents=True, exist_ok=True)
        Path(md).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write {md}: {exc.strerror or exc}") from None
    print(text)
    print(f"-> {out}, {md}")
    return 0


def cmd_bench(args) -> int:
    from ..bench import TARGETS, run_bench, write_json, write_report

    if args.parallel:
        return cmd_parallel(args)
    if args.reproduce:
        return cmd_reproduce(args)
    if args.attacks is not None:
        return cmd_attacks(args)
    if args.report:
        plot = args.plot or str(Path(args.md).with_name(Path(args.report).stem + "_width.png"))
        refuse_to_replace([args.md, plot], args.force)
        for out in (args.md, plot):
            try:
                Path(out).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create the directory of {out}: {exc.strerror or exc}") from None
        words = ["localstdp", "bench", "--report", args.report, "--md", args.md, "--plot", plot]
        words += ["--notes", args.notes] if args.notes else []
        words += ["--attacks-report", args.attacks_report] if args.attacks_report else []
        words += ["--reproduce-report", args.reproduce_report] if args.reproduce_report else []
        md, png = write_report(args.report, args.md, plot, args.notes, " ".join(shlex.quote(w) for w in words),
                               args.attacks_report, args.reproduce_report)
        print(f"wrote {md} and {png}")
        return 0
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
    configs = None
    if args.configs is not None:
        from ..bench import QUICK_CONFIGS, ConfigSpec

        configs = dataclasses.replace(QUICK_CONFIGS if args.quick else ConfigSpec(), only=tuple(args.configs) or None)
    refuse_to_replace([args.out], args.force)
    result = run_bench(quick=args.quick, device=args.device, threads=threads, configs=configs, rules=args.rules,
                       **overrides)
    words = ["localstdp", "bench", *(["--quick"] if args.quick else []), "--out", args.out]
    words += [] if args.device == "auto" else ["--device", args.device]
    words += ["--threads", args.threads] if args.threads else []
    words += ["--configs", *args.configs] if args.configs is not None else []
    words += ["--rules", *args.rules] if args.rules else []
    words += [w for k, v in overrides.items() for w in (f"--{k.replace('_', '-')}", str(v))]
    result["command"] = " ".join(shlex.quote(w) for w in words)
    write_json(result, args.out)
    for key, (op, target) in TARGETS.items():
        print(f"{key:26s} {result[key]:7.3f}  (target {op} {target}: {'met' if result['targets_met'][key] else 'NOT met'})")
    for name, r in result.get("configs", {}).items():
        if "skipped" in r:
            print(f"config {name:20s} skipped ({r['skipped']})")
        else:
            print(f"config {name:20s} speed-up {r['speedup']:6.3f}  local {r['local_s']:8.3f} s/epoch  backprop "
                  f"{r['backprop_s']:8.3f} s/epoch  (target >= 1.25 at every thread count: "
                  f"{'met' if result['configs_target_met'].get(name) else 'NOT met'})")
    for dev, res in result["devices"].items():
        if "skipped" in res:
            print(f"{dev}: skipped ({res['skipped']})")
        elif "rules" in res:
            r = res["rules"]
            print(f"{dev}: rules, speed-up over backprop: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in r["speedup_vs_backprop"].items()))
    print(f"-> {args.out}")
    return 0
