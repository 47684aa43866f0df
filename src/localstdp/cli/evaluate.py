"""``localstdp evaluate``: reload a finished run's model (model.safetensors) and report its accuracy.

Registered in :data:`localstdp.cli.SUBCOMMANDS`. Prints the accuracy on every split with the number
of examples in each, then, for one split (``--split``, default test), the accuracy of each class and
the confusion matrix; ``--plot FILE`` also draws the matrix (PNG), ``--json`` prints it all as JSON.
Accuracies are plain fractions computed as in metrics.json (correct / examples), so they match it.
"""

from __future__ import annotations

import json
from pathlib import Path

SPLITS = ("test", "val", "train")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="reload a run's model and print its accuracy, per class and as a confusion matrix")
    p.add_argument("--run", required=True, help="run directory written by `localstdp train`")
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="the split of the per-class accuracy and confusion matrix (default test)")
    p.add_argument("--plot", metavar="FILE", help="also draw the confusion matrix into this PNG file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_evaluate)


def confusion(model, x, y, n_classes: int) -> list[list[int]]:
    """counts[t][p]: examples of class t the model predicts as p."""
    import torch

    if len(y) == 0:
        return [[0] * n_classes for _ in range(n_classes)]
    pred = model.predict(x)
    flat = torch.bincount(y * n_classes + pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).tolist()


def _accuracy(matrix: list[list[int]]) -> float | None:
    n = sum(map(sum, matrix))
    return sum(matrix[k][k] for k in range(len(matrix))) / n if n else None


def evaluate_run(run: str | Path, split: str = "test") -> dict:
    """The evaluation record of a finished run (what ``--json`` prints)."""
    from ..data import load_dataset
    from ..errors import ConfigError, LocalSTDPError
    from ..train import load_run

    cfg, model, method = load_run(run)
    ds = load_dataset(cfg.data)
    if ds.n_features != model.widths[0] or ds.n_classes != model.widths[-1]:
        raise LocalSTDPError(f"{run}: the model's shape {model.widths} does not fit the data set")
    parts = {"train": (ds.x_train, ds.y_train), "val": (ds.x_val, ds.y_val), "test": (ds.x_test, ds.y_test)}
    if split == "val" and not ds.has_val:
        raise ConfigError(f"--split val: {run} has no validation split (data.val_fraction = 0)")
    matrices = {name: confusion(model, x, y, ds.n_classes) for name, (x, y) in parts.items()}
    m = matrices[split]
    per_class = [{"class": k, "label": ds.class_labels[k], "n": sum(m[k]),
                  "accuracy": m[k][k] / sum(m[k]) if sum(m[k]) else None} for k in range(ds.n_classes)]
    return {
        "method": method,
        "run": str(run),
        "split": split,
        "n_examples": {name: len(y) for name, (_, y) in parts.items()},
        "train_accuracy": _accuracy(matrices["train"]),
        "val_accuracy": _accuracy(matrices["val"]),
        "test_accuracy": _accuracy(matrices["test"]),
        "accuracy": _accuracy(m),
        "classes": list(ds.class_labels),
        "per_class": per_class,
        "confusion_matrix": m,
    }


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def render_text(res: dict) -> str:
    n = res["n_examples"]
    lines = [f"{res['method']}: train accuracy {_fmt(res['train_accuracy'])}, val accuracy {_fmt(res['val_accuracy'])}, "
             f"test accuracy {_fmt(res['test_accuracy'])} (examples: train {n['train']}, val {n['val']}, "
             f"test {n['test']})",
             f"{res['split']} split, {n[res['split']]} examples, accuracy {_fmt(res['accuracy'])}; per class:"]
    labels = [str(c) for c in res["classes"]]
    w = max(5, *(len(s) for s in labels))
    lines.append(f"  {'class':>{w}}  {'examples':>8}  accuracy")
    for row in res["per_class"]:
        lines.append(f"  {str(row['label']):>{w}}  {row['n']:>8}  {_fmt(row['accuracy'])}")
    m = res["confusion_matrix"]
    cw = max(5, *(len(s) for s in labels), *(len(str(v)) for r in m for v in r))
    rw = max(len("true\\pred"), w)
    lines.append("confusion matrix (rows: true class, columns: predicted class):")
    lines.append(f"  {'true' + chr(92) + 'pred':>{rw}}  " + " ".join(f"{s:>{cw}}" for s in labels))
    for label, r in zip(labels, m):
        lines.append(f"  {label:>{rw}}  " + " ".join(f"{v:>{cw}}" for v in r))
    return "\n".join(lines)


def plot_confusion(res: dict, path: str | Path) -> Path:
    """The confusion matrix as a PNG (matplotlib's Agg canvas, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..errors import OutputError

    m, labels = res["confusion_matrix"], [str(c) for c in res["classes"]]
    k = len(labels)
    fig = Figure(figsize=(1.2 + 0.45 * k, 1.0 + 0.45 * k))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(k), labels, rotation=90 if k > 6 else 0)
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{res['method']}, {res['split']} split: accuracy {_fmt(res['accuracy'])}")
    top = max(max(r) for r in m) if k else 0
    for t in range(k):
        for p in range(k):
            ax.text(p, t, str(m[t][p]), ha="center", va="center", fontsize=8,
                    color="white" if top and m[t][p] > top / 2 else "black")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=120)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def cmd_evaluate(args) -> int:
    import sys

    res = evaluate_run(args.run, args.split)
    if args.plot:
        written = plot_confusion(res, args.plot)
        print(f"wrote {written}", file=sys.stderr)
    print(json.dumps(res, indent=2) if args.json else render_text(res))
    return 0
