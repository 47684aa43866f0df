"""Our certified bounds against an independent verifier, and how much of the attacked/certified gap slope
optimisation closes (issue 33, item 4).

auto_LiRPA (Xu et al. 2020; the Verified-Intelligence/auto_LiRPA repository, 0.7.1; its PyPI release 0.3 needs
torch < 1.13, so it is run from a source checkout on PYTHONPATH with its pure-Python needs appdirs and graphviz)
bounds the same margins z_y - z_j over the same box [max(x - eps, 0), min(x + eps, 1)] by
  CROWN        the backward linear bounds our robustness/bounds.py implements (its own sigmoid relaxation);
  alpha-CROWN  CROWN with the relaxations' slopes optimised per neuron by gradient ascent on the bound
               (Xu et al. 2021), what our bounds do not do.
Per model (``--task``'s frontier points, or with ``--panel`` its panel methods) it prints the certified accuracy (every margin's lower bound > 0, and the clean prediction correct)
of ours, auto_LiRPA's CROWN and alpha-CROWN, and the attacked worst case of the committed run (its
per-example bits; the retrained model's clean predictions are checked equal to the run's first), on the
attacked test examples of the committed run (``--run``; default the nonlinear suite's ten-class run,
docs/nonlinear/ten/results.json, 1,000 examples; docs/reproduce/results.json for the paper tasks).
Soundness check: a certified example must survive every attack (certified <= attacked, example by example).

    PYTHONPATH=/path/to/auto_LiRPA:/path/to/appdirs+graphviz OMP_NUM_THREADS=1 .venv/bin/python \\
        research/verify_bounds.py --seeds 0 --json research/out/verify_bounds.jsonl
    ... research/verify_bounds.py --run docs/reproduce/results.json --task mnist-3v5 --panel \
        --points local backprop linear --seeds 0 1 2 --json research/out/verify_bounds.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from localstdp.data import load_dataset
from localstdp.evaluation.plan import task_config
from localstdp.evaluation.points import frontier_points, point_config, point_name
from localstdp.evaluation.settings import attack_indices, unpack
from localstdp.evaluation.units import train_method
from localstdp.robustness.bounds import margin_lower_bounds

RUN = Path(__file__).resolve().parents[1] / "docs" / "nonlinear" / "ten" / "results.json"
POINTS = ("local:weight_decay=0.001", "backprop:weight_decay=0.0001,lr=0.004", "linear:l2=0.001")


def lirpa_margins(model, x: torch.Tensor, y: torch.Tensor, eps: float, method: str) -> np.ndarray:
    """(n, K) lower bounds of z_y - z_j by auto_LiRPA (+inf at j == y)."""
    from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm

    k = model.widths[-1]
    net = torch.nn.Sequential(*[m for layer in model.layers[:-1] for m in (layer, torch.nn.Sigmoid())], model.layers[-1])
    bm = BoundedModule(net, torch.zeros(1, x.shape[1]), device="cpu", verbose=False)
    out = np.full((len(y), k), np.inf)
    for a in range(0, len(y), 250):
        xb, yb = x[a:a + 250], y[a:a + 250]
        others = torch.stack([torch.tensor([j for j in range(k) if j != c]) for c in yb.tolist()])  # (n, K-1)
        c = torch.zeros(len(yb), k - 1, k)
        c.scatter_(2, yb.view(-1, 1, 1).expand(-1, k - 1, 1), 1.0)
        c.scatter_(2, others.unsqueeze(2), -1.0)
        ptb = PerturbationLpNorm(norm=float("inf"), eps=eps, x_L=(xb - eps).clamp(0, 1), x_U=(xb + eps).clamp(0, 1))
        lb, _ = bm.compute_bounds(x=(BoundedTensor(xb, ptb),), C=c, method=method, bound_upper=False)
        rows = out[a:a + 250]
        rows[np.arange(len(yb))[:, None], others.numpy()] = lb.detach().numpy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.1])
    ap.add_argument("--points", nargs="+", default=list(POINTS), help="frontier points of the run (or, with "
                    "--panel, panel methods)")
    ap.add_argument("--run", type=Path, default=RUN, help="the committed results.json the attacked bits come from")
    ap.add_argument("--task", default="fashion-mnist-small")
    ap.add_argument("--panel", action="store_true", help="--points are panel methods (the run's panel rows)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = json.loads(args.run.read_text())
    cfg = task_config(args.task)
    ds = load_dataset(cfg.data)
    idx = attack_indices(len(ds.y_test), run["settings"].get("n_attack"))
    x, y = ds.x_test[idx], ds.y_test[idx]
    pts = {point_name(p): p for p in frontier_points(cfg, ("linear",))}
    for name in args.points:
        for seed in args.seeds:
            if args.panel:
                row = next(r for r in run["rows"] if r["task"] == args.task and r["method"] == name and r["seed"] == seed)
                t = train_method(cfg, name, ds, seed)
            else:
                p = pts[name]
                row = next(r for r in run["frontier_rows"] if r["point"] == name and r["seed"] == seed)
                t = train_method(point_config(cfg, p), p["method"], ds, seed)
            model = t.model.eval()
            with torch.no_grad():
                pred = model(x).argmax(1)
            clean = (pred == y).numpy()
            same = np.array_equal(clean, unpack(row["per_example"]["clean"], row["n_test"])[idx])
            rec = {"task": args.task, "point": name, "seed": seed, "same_model_as_run": bool(same), "clean": float(clean.mean())}
            for eps in args.eps:
                k = str(eps)
                attacked = unpack(row["per_example"]["worst"][k], row["n_attacked"])
                for label, fn in (("ours", lambda: margin_lower_bounds(model, x.numpy(), y.numpy(), eps)),
                                  ("lirpa_crown", lambda: lirpa_margins(model, x, y, eps, "CROWN")),
                                  ("lirpa_alpha_crown", lambda: lirpa_margins(model, x, y, eps, "alpha-CROWN"))):
                    t0 = time.perf_counter()
                    cert = clean & (fn().min(1) > 0)
                    rec[f"{label}@{k}"] = float(cert.mean())
                    rec[f"{label}@{k}_seconds"] = round(time.perf_counter() - t0, 1)
                    rec[f"{label}@{k}_unsound"] = int((cert & ~attacked).sum())  # certified but broken: must be 0
                rec[f"attacked@{k}"] = float(attacked.mean())
            print(json.dumps(rec), flush=True)
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
