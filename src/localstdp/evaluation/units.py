"""The units of ``reproduce``: one seed of a task's panel, one frontier point and seed.

A panel unit trains every panel method of one seed (localstdp.evaluation.methods), attacks each model
(localstdp.robustness.suite) and certifies it (localstdp.robustness.bounds), transfers every other model's PGD
examples to it, takes the per-example worst case and the masking checks, and runs the matched-
accuracy comparisons (kept epoch weights, chosen on validation). It is made of one part per method
(:func:`panel_method`: train, attack, and the matched comparison with the local rule, whose part
comes first), each kept on disk as it finishes (:func:`save_part`), and an assembly
(:func:`assemble_panel`: transfer, worst case, checks) once every part is there, so a stopped run
loses at most the parts in progress. Every file a run keeps carries a SHA-256 digest of its content
(a part: of its tensors and of its model's; a unit record: of its JSON, :func:`unit_text`), so a file damaged
between runs is found on resume and run again, never trusted (:func:`part_fingerprint`, :func:`read_unit`). A
frontier unit trains one point of the robustness-accuracy frontier and attacks it at the frontier eps.
Per-example correctness is kept (hex-packed) so the statistics can resample test examples."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load_checkpoint, model_tensors, save_checkpoint
from ..config import ExperimentConfig
from ..data import Dataset
from ..errors import CheckpointError
from ..robustness.suite import (
    NOT_ATTACKS,
    SuiteResult,
    add_transfer,
    add_worst,
    attack_suite,
    correct,
    eps_key,
    masking_checks,
    worst_of,
)
from ..train import MODEL, load_run, train
from . import phases
from .diagnostics import model_diagnostics
from .methods import PANEL, closest_epoch, method_config, selected_epoch
from .points import point_config, point_fields, point_name
from .settings import GridSettings, attack_indices, pack, unpack

# ---------------------------------------------------------------------------------------------
# one model


@dataclass
class Trained:
    model: object
    metrics: dict
    epoch: int  # the reported epoch (1-based)
    states: list  # per-epoch weights of the full run
    cfg: ExperimentConfig  # the config it trained with (method settings, seed, budget)


def train_method(cfg: ExperimentConfig, method: str, ds: Dataset, seed: int, epochs: int | None = None,
                 say: Callable[[str], None] | None = None) -> Trained:
    """Train one panel method and load the weights of its reported epoch (the last, or the best
    validation epoch for early stopping); ``say`` gets "epoch e/E" as each epoch starts."""
    spec = PANEL[method]
    mcfg = method_config(cfg, method).with_overrides(seed=seed, epochs=epochs)
    total = mcfg.train.epochs

    def hook(epoch: int, step: int) -> None:
        if step == 1 and say is not None:
            say(f"epoch {epoch + 1}/{total}")

    with phases.phase("train"):
        m = train(mcfg, spec.learner, None, dataset=ds, keep_epochs=True, step_hook=hook)
    e = selected_epoch(m["history"], spec.early_stop)
    model = m.pop("model")
    states = m.pop("epoch_states")
    if e != len(m["history"]):
        model.load_state_dict(states[e - 1])
    return Trained(model, m, e, states, mcfg)


def model_file(method: str, t: Trained) -> tuple[dict, dict]:
    """(tensors, metadata) of a reported model, as `localstdp train` writes model.safetensors, so
    `localstdp evaluate --run OUT/units/<task>/<unit>/<method>` reads it back."""
    meta = {"kind": "model", "method": PANEL[method].learner, "widths": list(t.model.widths),
            "config": t.cfg.to_dict(), "epoch": t.epoch}
    return model_tensors(t.model), meta


def _attack(model, ds: Dataset, idx: np.ndarray, settings: GridSettings, eps: Sequence[float], seed: int,
            say: Callable[[str], None] | None = None, worst_only: bool = False) -> SuiteResult:
    """The attack suite at ``eps`` on the attacked examples, plus the certified accuracy (bounds computed for
    the attacks' survivors only: a sound bound certifies no example an attack broke); ``say`` gets a status
    line per eps. ``worst_only``: the worst case alone, survivors only (frontier points, matched comparisons)."""
    x, y = ds.x_test[idx].numpy(), ds.y_test[idx].numpy()
    with phases.phase("attack"):
        res = attack_suite(model, x, y, ds.input_shape, ds.n_classes,
                           dataclasses.replace(settings.attacks, eps=tuple(eps)), seed=seed, progress=say,
                           worst_only=worst_only)
    if settings.certify:
        from ..robustness.bounds import certified_correct, supports

        if supports(model):  # not for e.g. Forward-Forward's label scorer: no bound, no entry
            with phases.phase("certify"):
                alive = worst_of(res)
                res.correct["certified"] = {eps_key(e): certified_correct(model, x, y, e, among=alive[eps_key(e)])
                                            for e in eps}
    return res


def val_robust(model, ds: Dataset, settings: GridSettings, seed: int,
               say: Callable[[str], None] | None = None) -> dict | None:
    """The worst case ON THE VALIDATION SPLIT (worst-case-only suite at the frontier eps, on a fixed
    seeded subset of at most ``settings.val_attack`` validation examples), which the validation
    robustness selection (evaluation.selection) chooses settings by; None when off or no split."""
    if not settings.val_attack or not ds.has_val:
        return None
    idx = attack_indices(len(ds.y_val), settings.val_attack, seed=VAL_ATTACK_SEED)
    x, y = ds.x_val[idx].numpy(), ds.y_val[idx].numpy()
    with phases.phase("val_attack"):
        res = attack_suite(model, x, y, ds.input_shape, ds.n_classes,
                           dataclasses.replace(settings.attacks, eps=tuple(settings.frontier_eps)), seed=seed,
                           progress=say, worst_only=True)
    add_worst(res)
    return {"n": len(idx), "clean": float(res.clean.mean()), "worst": res.accuracy()["worst"]}


VAL_ATTACK_SEED = 20231124  # the validation subset's own draw (the test subset's is attack_indices' default)


def _per_example(res: SuiteResult) -> dict:
    return {a: {k: pack(v) for k, v in per.items()} for a, per in res.correct.items()}


def _history(metrics: dict) -> list[dict]:
    return [{k: h.get(k) for k in ("epoch", "loss", "train_accuracy", "val_accuracy", "test_accuracy")}
            for h in metrics["history"]]


def _row(task: str, method: str, seed: int, t: Trained, ds: Dataset, res: SuiteResult, n_attacked: int,
         diagnostics: dict | None = None, val: dict | None = None) -> dict:
    h = t.metrics["history"][t.epoch - 1]
    clean = correct(t.model, ds.x_test.numpy(), ds.y_test.numpy())
    return {
        "task": task, "method": method, "seed": seed,
        "epoch": t.epoch, "epochs": int(t.metrics["epochs"]),
        "clean_accuracy": float(clean.mean()), "val_accuracy": h["val_accuracy"],
        "train_accuracy": float(h["train_accuracy"]), "n_test": len(clean),
        "attacked_clean_accuracy": float(res.clean.mean()), "n_attacked": n_attacked,
        "robust_accuracy": res.accuracy(),
        "per_example": {"clean": pack(clean)} | _per_example(res),
        "zero_gradient_fraction": res.zero_gradient_fraction,
        "history": _history(t.metrics), "wall_seconds": float(t.metrics["wall_seconds"]),
    } | ({"diagnostics": diagnostics} if diagnostics is not None else {}) | (
        {"val_robust": val} if val is not None else {})


# ---------------------------------------------------------------------------------------------
# units: one seed of a task's panel; one frontier point and seed


@dataclass
class Part:
    """One panel method of one seed, trained and attacked, before transfer and the worst case; ``matched`` is its
    matched-accuracy record with the local rule (None for the local rule, or validation accuracies within match_tol)."""

    trained: Trained
    suite: SuiteResult
    matched: dict | None
    val: dict | None = None  # val_robust(): the worst case on the validation split, when asked for
    # model_diagnostics(), when asked for: computed with the part (in a worker), not when the unit is assembled
    diagnostics: dict | None = None
    phase_seconds: dict | None = None  # phases.take(): wall seconds of this part's work by kind (bench --reproduce)


def panel_method(task: str, cfg: ExperimentConfig, ds: Dataset, seed: int, method: str, settings: GridSettings,
                 local: Part | None = None, say: Callable[[str], None] = lambda s: None) -> Part:
    """Train one panel method of one seed and attack it; every method but the local rule also gets
    its matched comparison with ``local`` (the local rule's part of the same seed, with its kept
    epoch weights), so a part needs nothing but the local rule's to be complete."""
    if (method == "local") != (local is None):
        raise ValueError("the local rule's part comes first; every other method's needs it")
    phases.take()  # this part's phases only
    idx = attack_indices(len(ds.y_test), settings.n_attack)
    t = train_method(cfg, method, ds, seed, settings.epochs, lambda s: say(f"{task} seed {seed}: train {method}, {s}"))
    suite = _attack(t.model, ds, idx, settings, settings.attacks.eps, seed,
                    lambda s: say(f"{task} seed {seed}: attack {method}, {s}"))
    matched = None
    if local is not None:
        with phases.phase("matched"):
            matched = _matched(task, seed, "local", method, {"local": local.trained, method: t},
                               {"local": local.suite, method: suite}, ds, idx, settings, say)
    val = val_robust(t.model, ds, settings, seed, lambda s: say(f"{task} seed {seed}: validation attack {method}, {s}"))
    diagnostics = None
    if settings.diagnostics:
        say(f"{task} seed {seed}: diagnostics {method}")
        with phases.phase("diagnostics"):
            diagnostics = model_diagnostics(t.model, ds, len(idx), suite)
    return Part(t, suite, matched, val, diagnostics, phases.take())


def assemble_panel(task: str, ds: Dataset, seed: int, settings: GridSettings, parts: dict[str, Part]) -> dict:
    """The panel unit of one seed from its methods' parts: every model also attacked with every
    other model's PGD examples (transfer), the per-example worst case, the masking checks, the rows
    and the matched records, in ``settings.methods`` order."""
    idx = attack_indices(len(ds.y_test), settings.n_attack)
    y = ds.y_test[idx].numpy()
    suites = {m: dataclasses.replace(parts[m].suite, correct=dict(parts[m].suite.correct)) for m in settings.methods}
    phases.take()
    for target in settings.methods:  # transfer: survive the PGD examples of every other method's model
        others = [m for m in settings.methods if m != target]
        tparts = []
        with phases.phase("transfer"):
            for source in others:
                tmp = SuiteResult(clean=suites[target].clean)
                add_transfer(parts[target].trained.model, tmp, suites[source], y)
                tparts.append(tmp.correct["transfer"])
        if tparts:
            suites[target].correct["transfer"] = {k: np.logical_and.reduce([p[k] for p in tparts]) for k in tparts[0]}
    rows = []
    for method in settings.methods:
        add_worst(suites[method])
        checks = masking_checks(suites[method], ds.n_classes, settings.attacks)
        row = _row(task, method, seed, parts[method].trained, ds, suites[method], len(idx), parts[method].diagnostics,
                   parts[method].val)
        rows.append(row | {"checks": checks["checks"], "check_values": checks["values"]})
    matched = [parts[m].matched for m in settings.methods if m != "local" and parts[m].matched is not None]
    spent = phases.take()
    for m in settings.methods:
        spent = phases.add(spent, parts[m].phase_seconds)
    return {"rows": rows, "matched": matched, "phase_seconds": spent}


def panel_unit(task: str, cfg: ExperimentConfig, ds: Dataset, seed: int, settings: GridSettings,
               say: Callable[[str], None] = lambda s: None) -> dict:
    """Every panel method of one seed in memory (run_grid runs the same parts one by one, kept on
    disk): rows (with transfer, worst case, checks) and matched records."""
    parts: dict[str, Part] = {}
    parts["local"] = panel_method(task, cfg, ds, seed, "local", settings, None, say)
    for method in settings.methods:
        if method != "local":
            parts[method] = panel_method(task, cfg, ds, seed, method, settings, parts["local"], say)
    return assemble_panel(task, ds, seed, settings, parts)


PART = "part.safetensors"  # beside model.safetensors in OUT/units/<task>/panel-seed<s>/<method>/
DIGEST = "digest"  # a unit record's key holding the SHA-256 of the rest of the record (unit_text)


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors: every name, dtype, shape and byte, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _record_digest(rec: dict) -> str:
    body = {k: v for k, v in rec.items() if k != DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def unit_text(rec: dict) -> str:
    """The text of a unit file (``OUT/units/<task>/<unit>.json``): the record with its digest, one line."""
    return json.dumps(rec | {DIGEST: _record_digest(rec)}) + "\n"


def read_unit(path: Path) -> dict | None:
    """The record of a unit file written from :func:`unit_text`, or None when it is missing or damaged
    (unreadable, not UTF-8, not JSON, not an object, or its content does not match its digest): run it
    again. A record without a digest (an older version's) is returned as it is: its fingerprint decides."""
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors
        return None
    if not isinstance(rec, dict):
        return None
    if DIGEST in rec and rec[DIGEST] != _record_digest(rec):
        return None
    return rec


def save_part(path: Path, method: str, part: Part, fingerprint: str) -> None:
    """Write a part to ``path`` (a method's directory): its model.safetensors, then part.safetensors
    (the attack results, the PGD examples transfer needs, and for the local rule the kept epoch
    weights the matched comparisons need) with the metadata. part.safetensors is written last: a
    directory with it holds a whole part."""
    path.mkdir(parents=True, exist_ok=True)
    tensors, meta = model_file(method, part.trained)
    save_checkpoint(path / MODEL, tensors, meta)
    model_digest = tensors_digest(tensors)
    s = part.suite
    arrays = {"clean": s.clean}
    arrays |= {f"correct.{a}.{k}": v for a, per in s.correct.items() for k, v in per.items()}
    arrays |= {f"adversarial.{k}.{i}": v for k, advs in s.adversarial.items() for i, v in enumerate(advs)}
    arrays |= {f"apgd.{k}": v for k, v in s.autoattack_apgd.items()}
    out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    t = part.trained
    states = t.states[: t.epoch] if method == "local" else []  # the epochs _matched may take
    out |= {f"state.{e}.{k}": v for e, st in enumerate(states) for k, v in st.items()}
    # metrics, the matched record and the attacks' order as JSON text: the metadata's keys are
    # sorted when written, and results.json keeps the order they were made in
    meta = {"kind": "panel-part", "fingerprint": fingerprint, "method": method, "epoch": t.epoch,
            "metrics": json.dumps(t.metrics), "matched": json.dumps(part.matched), "val": json.dumps(part.val),
            "diagnostics": json.dumps(part.diagnostics), "phases": json.dumps(part.phase_seconds),
            "zero_gradient_fraction": s.zero_gradient_fraction,
            "correct": json.dumps([[a, list(per)] for a, per in s.correct.items()]),
            "adversarial": json.dumps([[k, len(v)] for k, v in s.adversarial.items()]),
            "apgd": list(s.autoattack_apgd), "states": len(states),
            "digest": tensors_digest(out), "model_digest": model_digest}
    save_checkpoint(path / PART, out, meta)


def part_fingerprint(path: Path) -> str | None:
    """The fingerprint of the part in ``path``, or None when there is none or it is damaged: its file or
    its model's missing, unreadable, or not matching the digests the part recorded (run it again)."""
    try:
        tensors, meta = load_checkpoint(path / PART, what="unit part")
        fingerprint = str(meta["fingerprint"])
        if "digest" in meta:  # (a part of an older version has none: its fingerprint decides)
            model, _ = load_checkpoint(path / MODEL, what="model file")
            if meta["digest"] != tensors_digest(tensors) or meta["model_digest"] != tensors_digest(model):
                return None
        return fingerprint
    except (CheckpointError, KeyError, TypeError, RuntimeError):
        return None


def load_part(path: Path) -> Part:
    """Read back a part written by :func:`save_part` (the model rebuilt from model.safetensors)."""
    tensors, meta = load_checkpoint(path / PART, what="unit part")
    cfg, model, _ = load_run(path)
    arr = {k: v.numpy() for k, v in tensors.items() if not k.startswith("state.")}
    suite = SuiteResult(
        clean=arr["clean"],
        correct={a: {k: arr[f"correct.{a}.{k}"] for k in keys} for a, keys in json.loads(meta["correct"])},
        adversarial={k: [arr[f"adversarial.{k}.{i}"] for i in range(n)] for k, n in json.loads(meta["adversarial"])},
        zero_gradient_fraction=float(meta["zero_gradient_fraction"]),
        autoattack_apgd={k: arr[f"apgd.{k}"] for k in meta["apgd"]})
    states = [{k[len(f"state.{e}."):]: v for k, v in tensors.items() if k.startswith(f"state.{e}.")}
              for e in range(int(meta["states"]))]
    return Part(Trained(model, json.loads(meta["metrics"]), int(meta["epoch"]), states, cfg), suite,
                json.loads(meta["matched"]), json.loads(meta.get("val", "null")),
                json.loads(meta.get("diagnostics", "null")), json.loads(meta.get("phases", "null")))


def _own_attacks(res: SuiteResult, keys: Sequence[str]) -> SuiteResult:
    """``res`` restricted to its own attacks (no transfer) at ``keys``, with its worst case."""
    own = {a: {k: v[k] for k in keys} for a, v in res.correct.items() if a not in ("transfer", "worst")}
    out = SuiteResult(clean=res.clean, correct=own)
    add_worst(out)
    return out


def _matched(task, seed, a, b, trained, suites, ds, idx, settings, say) -> dict | None:
    """Robustness at matched clean accuracy: the method with the higher VALIDATION accuracy, taken
    at the epoch of its full run whose validation accuracy is closest to the other's."""
    va = {m: trained[m].metrics["history"][trained[m].epoch - 1]["val_accuracy"] for m in (a, b)}
    if va[a] is None or va[b] is None or abs(va[a] - va[b]) <= settings.match_tol:
        return None
    hi, lo = (a, b) if va[a] > va[b] else (b, a)
    t = trained[hi]
    epoch = closest_epoch(t.metrics["history"][: t.epoch], va[lo])
    say(f"{task} seed {seed}: matched {hi} at epoch {epoch}")
    keys = [eps_key(e) for e in settings.matched_eps]
    t.model.load_state_dict(t.states[epoch - 1])
    s_hi = _attack(t.model, ds, idx, settings, settings.matched_eps, seed, worst_only=True)
    add_worst(s_hi)
    clean_hi = correct(t.model, ds.x_test.numpy(), ds.y_test.numpy())
    t.model.load_state_dict(t.states[t.epoch - 1])
    s_lo = _own_attacks(suites[lo], keys)
    clean_lo = correct(trained[lo].model, ds.x_test.numpy(), ds.y_test.numpy())
    return {"task": task, "seed": seed, "pair": [a, b], "stopped_method": hi, "stopped_epoch": epoch,
            "reference_method": lo, "val_accuracy": {hi: t.metrics["history"][epoch - 1]["val_accuracy"], lo: va[lo]},
            "clean_accuracy": {hi: float(clean_hi.mean()), lo: float(clean_lo.mean())},
            "robust_accuracy": {m: {a: v for a, v in r.accuracy().items() if a in NOT_ATTACKS}
                                for m, r in ((hi, s_hi), (lo, s_lo))},
            "per_example": {hi: {"worst": {k: pack(s_hi.correct["worst"][k]) for k in keys}},
                            lo: {"worst": {k: pack(s_lo.correct["worst"][k]) for k in keys}}}}


def frontier_unit(task: str, cfg: ExperimentConfig, ds: Dataset, point: dict, seed: int, settings: GridSettings,
                  say: Callable[[str], None] = lambda s: None) -> dict:
    """One frontier point and seed: clean accuracy and robust accuracy at frontier_eps (own attacks)."""
    phases.take()  # this unit's phases only
    idx = attack_indices(len(ds.y_test), settings.n_attack)
    epochs = None if point["knob"] == "train.epochs" else settings.epochs
    t = train_method(point_config(cfg, point), point["method"], ds, seed, epochs,
                     lambda s: say(f"{task} frontier {point_name(point)} seed {seed}: train, {s}"))
    res = _attack(t.model, ds, idx, settings, settings.frontier_eps, seed,
                  lambda s: say(f"{task} frontier {point_name(point)} seed {seed}: attack, {s}"), worst_only=True)
    add_worst(res)
    val = val_robust(t.model, ds, settings, seed,
                     lambda s: say(f"{task} frontier {point_name(point)} seed {seed}: validation attack, {s}"))
    row = _row(task, point["method"], seed, t, ds, res, len(idx), val=val)
    row.pop("history")
    return {"rows": [row | point_fields(point)], "phase_seconds": phases.take()}


def frontier_row_from_panel(row: dict, point: dict, frontier_eps: Sequence[float]) -> dict:
    """A frontier row from the panel row of the same model: the worst case of its own attacks at the
    frontier eps (no transfer), and the certified accuracy. The attack seeds depend on the eps' index,
    the same in both lists, and the worst-case-only suite gives every survivor the panel's attack, so
    this equals running the frontier unit (tests/test_experiments.py checks it)."""
    keys = [eps_key(e) for e in frontier_eps]
    n = row["n_attacked"]
    own = {a: {k: unpack(v[k], n) for k in keys} for a, v in row["per_example"].items()
           if a not in ("clean", "transfer", "worst")}
    res = SuiteResult(clean=np.zeros(n, bool), correct=own)
    add_worst(res)
    res.correct = {a: v for a, v in res.correct.items() if a in NOT_ATTACKS}
    out = {k: v for k, v in row.items() if k not in ("history", "checks", "check_values", "diagnostics")}
    out["robust_accuracy"] = res.accuracy()
    out["per_example"] = {"clean": row["per_example"]["clean"]} | _per_example(res)
    return out | point_fields(point)
