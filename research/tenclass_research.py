"""Research harness for issue 7: ten-class variants of the local rule, side by side with backprop.

Runs in-process on one data set, several seeds, prints one JSON line per run (to stdout: this is
a script, not library code). Usage:

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python research/tenclass_research.py \
        --config configs/mnist-10.toml --variant base --seeds 0 1 2 [--set rule.key=value ...]

``--set section.key=value`` overrides any config key (value parsed as TOML); ``--method backprop``
trains the baseline on the same architecture and epoch budget.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
import tomllib

import torch

from localstdp.config import config_from_dict, load_config
from localstdp.data import load_dataset
from localstdp.train import train


def override(cfg, sets):
    d = cfg.to_dict()
    for s in sets:
        key, _, val = s.partition("=")
        sec, _, k = key.partition(".")
        try:
            value = tomllib.loads(f"v = {val}")["v"]
        except tomllib.TOMLDecodeError:
            value = val  # a bare string
        d.setdefault(sec, {})[k] = value
    return config_from_dict(d)


def add_common_args(ap: argparse.ArgumentParser, config: str | None = None) -> None:
    """The options every ten-class research script takes (config, method, seeds, --set, --subset)."""
    ap.add_argument("--config", required=config is None, default=config)
    ap.add_argument("--method", default="local")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0] if config is None else [0, 1, 2])
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--subset", type=int, default=0, help="keep the first N training examples (quick screening)")
    ap.add_argument("--history", action="store_true", help="also print test accuracy after every epoch")


def load(args):
    """(config with the --set overrides, dataset cut to --subset); one thread, as the runs were measured."""
    torch.set_num_threads(1)
    cfg = override(load_config(args.config), args.set)
    ds = load_dataset(cfg.data)
    if args.subset:
        ds = dataclasses.replace(ds, x_train=ds.x_train[: args.subset], y_train=ds.y_train[: args.subset])
    return cfg, ds


def run_seeds(args, cfg, ds, tag: dict) -> list[float]:
    """Train ``args.method`` once per seed; print one JSON line per run (``tag`` first) and a mean/std line."""
    accs = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        m = train(cfg.with_overrides(seed=seed), args.method, dataset=ds)
        accs.append(m["test_accuracy"])
        best = max(h["test_accuracy"] for h in m["history"])
        print(json.dumps({**tag, "method": args.method, "seed": seed, "sets": args.set,
                          "test": round(m["test_accuracy"], 4), "train": round(m["train_accuracy"], 4),
                          "best_epoch_test": round(best, 4), "s": round(time.perf_counter() - t0, 1)}), flush=True)
        if args.history:
            print(json.dumps({"seed": seed, "test_by_epoch": [round(h["test_accuracy"], 4) for h in m["history"]],
                              "train_by_epoch": [round(h["train_accuracy"], 4) for h in m["history"]]}), flush=True)
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(json.dumps({**tag, "method": args.method, "sets": args.set, "n": len(accs),
                      "mean": round(statistics.mean(accs), 4), "std": round(sd, 4)}), flush=True)
    return accs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    add_common_args(ap)
    ap.add_argument("--variant", default="")
    args = ap.parse_args(argv)
    cfg, ds = load(args)
    run_seeds(args, cfg, ds, {"variant": args.variant})
    return 0


if __name__ == "__main__":
    sys.exit(main())
