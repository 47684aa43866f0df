"""Errors at the library's edges, property-tested (issue 34, item 2).

Every public entry point is called with random shapes, dtypes, devices, label ranges and NaN
positions, each case either valid or broken in a known way. A valid call must give the documented
result (finite losses and weights, results of the documented shape); a broken one must raise one of
``localstdp.errors`` (never an IndexError / RuntimeError from inside torch) and, for a learner, leave
the model and the learner's state as they were. Hypothesis runs derandomized (a fixed sequence of
examples), with tiny models and few examples, so the file takes seconds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn

from localstdp import LocalLearner, certified_accuracy, load_run
from localstdp.config import ExperimentConfig
from localstdp.errors import ArgumentError, ArgumentTypeError, LocalSTDPError
from localstdp.model import MLP
from localstdp.robustness import AttackSettings, attack_suite
from localstdp.rules import LEARNERS, BackpropParams, PeerParams, RuleParams

FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(FAST, max_examples=25)

RULES = ("local", "fa", "dfa", "drtp", "pepita", "ff")
X_DTYPES = (torch.float32, torch.float32, torch.float32, torch.float64, torch.float16, torch.int64)
Y_DTYPES = (torch.int64, torch.int64, torch.int32, torch.uint8, torch.float32, torch.bool)
NON_FINITE = (float("nan"), float("inf"), float("-inf"))


def net(n_in: int, hidden: int, n_classes: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Sigmoid(), nn.Linear(hidden, n_classes))


BATCH_FAULTS = ("x on another device", "x of another dtype", "an empty batch", "one label per example",
                "labels not integers", "a label out of range", "non-finite inputs", "a wrong number of features")


@st.composite
def batches(draw, n_in: int, n_classes: int):
    """(x, y, why): a batch for a model of ``n_in`` inputs and ``n_classes`` outputs, valid (``why`` None)
    or with the one fault ``why`` names, of random size, dtypes and values."""
    why = draw(st.sampled_from((None,) * 5 + BATCH_FAULTS))
    n = 0 if why == "an empty batch" else draw(st.integers(1, 6))
    n_y = n + (draw(st.sampled_from((-1, 1))) if why == "one label per example" and n > 1 else
               1 if why == "one label per example" else 0)
    features = n_in + (draw(st.sampled_from((-1, 1, 3))) if why == "a wrong number of features" else 0)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.rand(n, features, generator=gen) * draw(st.sampled_from((1.0, 1.0, 100.0, -3.0)))
    if why == "non-finite inputs":
        for _ in range(draw(st.integers(1, 3))):
            x[draw(st.integers(0, n - 1)), draw(st.integers(0, features - 1))] = draw(st.sampled_from(NON_FINITE))
    labels = draw(st.lists(st.integers(0, n_classes - 1), min_size=n_y, max_size=n_y))
    if why == "a label out of range":
        labels[draw(st.integers(0, n_y - 1))] = draw(st.sampled_from((-1, -7, n_classes, n_classes + 5, 2**40)))
    y_dtype = draw(st.sampled_from((torch.float32, torch.float64, torch.bool) if why == "labels not integers" else
                                   (torch.int64, torch.int64, torch.int32, torch.int16, torch.uint8)))
    y = torch.tensor(labels, dtype=torch.int64).to(y_dtype)
    if why == "a label out of range" and bool(((y >= 0) & (y < n_classes)).all()):  # wrapped round in a small dtype
        y = torch.tensor(labels, dtype=torch.int64)
    if why == "x of another dtype":
        x_dtype = draw(st.sampled_from((torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.uint8)))
        x = x.to(x_dtype) if x_dtype.is_floating_point else x.abs().mul(10).to(x_dtype)
    if why == "x on another device":
        x = x.to("meta")
    return x, y, why


def params_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def unchanged(before: list[torch.Tensor], model: nn.Module) -> bool:
    return all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def refused(call, before, model, why):
    """Run ``call``: (the error, None) for a refusal, which must be ours, leave the model unchanged and
    happen only for a broken batch; (None, the result) for a valid batch."""
    try:
        out = call()
    except LocalSTDPError as exc:
        assert why is not None, f"refused a valid batch: {exc}"
        assert isinstance(exc, ValueError)
        assert unchanged(before, model), f"the model changed although the batch was refused ({exc})"
        assert str(exc).split(":")[0] in ("x", "y"), f"the message does not name x or y: {exc}"
        return exc, None
    assert why is None, f"accepted a batch with {why}: {out!r}"
    return None, out


# ---------------------------------------------------------------------------------------------
# LocalLearner: every rule


@FAST
@given(data=st.data(), rule=st.sampled_from(RULES), n_in=st.integers(4, 7), hidden=st.integers(2, 4),
       n_classes=st.integers(2, 3))
def test_local_learner_step_refuses_bad_batches_and_learns_from_good_ones(data, rule, n_in, hidden, n_classes):
    model = net(n_in, hidden, n_classes)
    learner = LocalLearner(model, rule=rule, n_classes=n_classes)
    x, y, why = data.draw(batches(n_in, n_classes))
    event(why or "valid")
    before = params_of(model)
    steps = learner.steps
    exc, out = refused(lambda: learner.step(x, y), before, model, why)
    if exc is not None:
        assert learner.steps == steps
        return
    assert learner.steps == steps + 1 and math.isfinite(out)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


@FAST
@given(data=st.data(), rule=st.sampled_from(RULES), n_classes=st.integers(2, 3))
def test_step_result_is_a_finite_loss_with_the_logits(data, rule, n_classes):
    model = net(5, 3, n_classes)
    learner = LocalLearner(model, rule=rule, n_classes=n_classes)
    x, y, why = data.draw(batches(5, n_classes))
    try:
        out = learner.step(x, y)
    except LocalSTDPError:
        assert why is not None
        return
    assert why is None and math.isfinite(out) and out.loss == float(out)
    if rule != "ff":  # ff's prediction is not the model's output (docs/peers.md): no logits
        assert out.logits.shape == (len(x), n_classes) and bool(torch.isfinite(out.logits).all())


@FEW
@given(data=st.data(), reduction=st.sampled_from(("mean", "sum", "none", None)))
def test_updates_refuses_bad_batches_and_changes_nothing(data, reduction):
    model = net(5, 3, 3)
    learner = LocalLearner(model, n_classes=3)
    x, y, why = data.draw(batches(5, 3))
    why = why or (None if reduction in ("mean", "sum") else "reduction")
    before = params_of(model)
    try:
        ups = learner.updates(x, y, reduction)
    except LocalSTDPError as exc:
        assert why is not None, f"refused valid arguments: {exc}"
        assert str(exc).split(":")[0] in ("x", "y", "reduction")
        return
    assert why is None
    assert unchanged(before, model)
    assert [tuple(dW.shape) for dW, _ in ups] == [(3, 5), (3, 3)]
    assert all(bool(torch.isfinite(dW).all() and torch.isfinite(db).all()) for dW, db in ups)


@FAST
@given(rule=st.sampled_from(RULES),
       n_classes=st.sampled_from((3, 3, 3, 2, 1, 0, -1, 3.0, True, "3")),
       lr=st.sampled_from((1e-3, 0.5, 0.0, -1.0, float("nan"), float("inf"), "0.1", None)),
       seed=st.sampled_from((0, 7, -1, 2**32, 1.5, None)),
       example=st.sampled_from(("ok", None, "float64", "list", "meta")))
def test_local_learner_constructor_checks_its_arguments(rule, n_classes, lr, seed, example):
    model = net(5, 4, 3)
    ex = {"ok": torch.rand(2, 5), None: None, "float64": torch.rand(2, 5, dtype=torch.float64),
          "list": [[0.0] * 5], "meta": torch.rand(2, 5, device="meta")}[example]
    valid = (n_classes == 3 and type(n_classes) is int and isinstance(lr, float) and 0 < lr < math.inf
             and type(seed) is int and 0 <= seed < 2**32 and example in ("ok", None))
    try:
        learner = LocalLearner(model, rule=rule, n_classes=n_classes, lr=lr, seed=seed, example=ex)
    except LocalSTDPError as exc:
        assert not valid, f"refused valid arguments: {exc}"
        assert isinstance(exc, ValueError)
        return
    assert valid, "accepted invalid constructor arguments"
    assert learner.resolved == (example == "ok")


def corrupt(state: dict, draw) -> tuple[dict, str | None, bool]:
    """A copy of ``state`` with one random fault, what the fault is (None: a valid state) and whether the
    state is still the saved one."""
    state = {k: v.clone() for k, v in state.items()}
    key = draw(st.sampled_from(sorted(state)))
    fault = draw(st.sampled_from(("none", "drop", "nan", "shape", "dtype", "order", "steps", "lr", "not a tensor")))
    v = state[key]
    if fault == "drop" and (key in ("walker.order", "steps", "lr", "peer.rng") or key.startswith(("rule.association",
                                                                                                    "peer.fixed"))):
        del state[key]
    elif fault == "nan" and v.is_floating_point() and v.numel():
        v.view(-1)[draw(st.integers(0, v.numel() - 1))] = float("nan")
        if key.startswith("rule.association"):  # NaN means "untaught" in an association map: a valid state
            return state, None, False
    elif fault == "shape" and v.ndim and v.numel() > 1:
        state[key] = v.reshape(-1)[:-1]
    elif fault == "order":
        state["walker.order"] = torch.tensor(draw(st.sampled_from(([0, 0], [1, 2], [0], [-1, 0], [0, 1, 2]))))
    elif fault == "steps":
        state["steps"] = torch.tensor(draw(st.sampled_from((-1, 2.5))))
    elif fault == "lr":
        state["lr"] = torch.tensor(draw(st.sampled_from((0.0, -0.1, float("nan"), float("inf")))),
                                   dtype=torch.float64)
    elif fault == "not a tensor" and key in ("walker.order", "steps", "lr"):
        state[key] = v.tolist()
    elif fault == "dtype" and v.is_floating_point() and key.startswith(("peer.fixed", "rule.pre_mean")):
        state[key] = v.to(torch.int64)
    else:
        return state, None, True
    return state, f"{fault} {key}", False


@FAST
@given(data=st.data(), rule=st.sampled_from(RULES), resolved=st.booleans())
def test_load_state_dict_takes_a_saved_state_and_refuses_a_damaged_one(data, rule, resolved):
    options = {"center": 0.9} if rule == "local" else {}
    a = LocalLearner(net(5, 4, 3), rule=rule, n_classes=3, **options)
    x, y = torch.rand(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    a.step(x, y)
    a.step(x, y)
    state, why, same = corrupt(a.state_dict(), data.draw)
    event(why.split()[0] if why else "valid")
    model = net(5, 4, 3)
    model.load_state_dict(a.model.state_dict())
    b = LocalLearner(model, rule=rule, n_classes=3, **options)
    if resolved:
        b.resolve(x)
    before_steps = b.steps
    try:
        b.load_state_dict(state)
    except LocalSTDPError as exc:
        assert why is not None, f"refused a saved state: {exc}"
        assert str(exc).startswith("state"), exc
        assert b.steps == before_steps
        return
    assert why is None, f"accepted a state with {why}"
    assert b.steps == a.steps
    if not same:
        return
    # the restored learner takes the next step exactly as the saved one
    a.step(x, y)
    b.step(x, y)
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))


@FEW
@given(state=st.sampled_from((None, [], {"walker.order": [0, 1]}, "state", 3)))
def test_load_state_dict_refuses_what_is_not_a_state(state):
    learner = LocalLearner(net(5, 4, 3), n_classes=3)
    with pytest.raises(LocalSTDPError, match="^state"):
        learner.load_state_dict(state)


# ---------------------------------------------------------------------------------------------
# the learners of LEARNERS on the package MLP


@FAST
@given(data=st.data(), name=st.sampled_from(sorted(LEARNERS)))
def test_package_learners_refuse_bad_batches(data, name):
    torch.manual_seed(0)
    hidden = [] if name == "linear" else [4]
    model = MLP(6, hidden, 3)
    params = {"local": RuleParams(), "backprop": BackpropParams(), "backprop-mse": BackpropParams(),
              "linear": BackpropParams(), "random-features": BackpropParams()}.get(name, PeerParams())
    learner = LEARNERS[name](model, params, 3, 0)
    x, y, why = data.draw(batches(6, 3))
    event(why or "valid")
    before = params_of(model)
    refused(lambda: learner.step(x, y), before, model, why)


# ---------------------------------------------------------------------------------------------
# attacks and bounds

TINY = AttackSettings(eps=(0.1,), pgd_steps=1, pgd_restarts=1, square_queries=1, search_queries=1, autoattack=False)


ATTACK_FAULTS = ("no examples", "one label per example", "features", "nan", "above", "below", "float labels",
                 "bool x", "a label out of range")


@st.composite
def attack_data(draw, n_in: int, n_classes: int):
    """(x, y, why) as numpy arrays for the attacks and bounds: inputs in [0, 1], valid (``why`` None) or
    with the one fault ``why`` names."""
    why = draw(st.sampled_from((None,) * 4 + ATTACK_FAULTS))
    n = 0 if why == "no examples" else draw(st.integers(1, 5))
    n_y = n + (1 if why == "one label per example" else 0)
    features = n_in + (draw(st.sampled_from((-1, 1))) if why == "features" else 0)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.random((n, features))
    if why == "nan":
        x[draw(st.integers(0, n - 1)), draw(st.integers(0, features - 1))] = draw(st.sampled_from(NON_FINITE))
    elif why == "above":
        x[draw(st.integers(0, n - 1)), -1] = 1.5
    elif why == "below":
        x[-1, 0] = -0.1
    elif why == "bool x":
        x = x > 0.5
    y = np.array(draw(st.lists(st.integers(0, n_classes - 1), min_size=n_y, max_size=n_y)), dtype=np.int64)
    if why == "a label out of range":
        y[draw(st.integers(0, n_y - 1))] = draw(st.sampled_from((-1, n_classes)))
    elif why == "float labels":
        y = y.astype(np.float32)
    return x, y, why


@FEW
@given(data=st.data(), n_classes_arg=st.sampled_from((3,) * 8 + (2, 4, 1)),
       shape=st.sampled_from(("flat",) * 5 + ("image", "image", "row", "empty")), seed=st.sampled_from((0,) * 6 + (5, -1, 2**40)))
def test_attack_suite_refuses_bad_arguments_and_attacks_good_ones(data, n_classes_arg, shape, seed):
    torch.manual_seed(0)
    model = MLP(4, [3], 3)
    x, y, why = data.draw(attack_data(4, 3))
    input_shape = {"flat": (4,), "image": (1, 2, 2), "row": (1, 1, 4), "empty": ()}[shape]  # images: Square attack
    why = why or ("n_classes" if n_classes_arg != 3 else "input_shape" if shape == "empty" else
                  "seed" if seed < 0 or seed >= 2**32 else None)
    event(why or "valid")
    try:
        res = attack_suite(model, x, y, input_shape, n_classes_arg, TINY, seed=seed)
    except LocalSTDPError as exc:
        assert why is not None, f"refused valid arguments: {exc}"
        assert isinstance(exc, ValueError)
        return
    assert why is None, f"accepted arguments with {why}"
    assert res.clean.shape == (len(x),)
    assert all(v.shape == (len(x),) and v.dtype == bool for per in res.correct.values() for v in per.values())


@FAST
@given(data=st.data(), eps=st.sampled_from((0.0, 0.1, 0.3, 2.0, -0.1, float("nan"), float("inf"), "0.1", None)),
       method=st.sampled_from(("crown", "ibp", "deeppoly", None)), batch_size=st.sampled_from((256, 2, 0, 1.5)))
def test_certified_accuracy_is_a_share_or_refuses(data, eps, method, batch_size):
    torch.manual_seed(0)
    model = MLP(4, [3], 3)
    x, y, why = data.draw(attack_data(4, 3))
    if why == "no examples":
        why = None  # documented: NaN for no examples
    ok = isinstance(eps, float) and 0 <= eps < math.inf and method in ("crown", "ibp") and batch_size in (256, 2)
    try:
        acc = certified_accuracy(model, x, y, eps, method, batch_size)
    except LocalSTDPError as exc:
        assert why is not None or not ok, f"refused valid arguments: {exc}"
        assert isinstance(exc, ValueError)
        return
    assert why is None and ok, f"accepted arguments with {why or (eps, method, batch_size)}"
    if len(x) == 0:
        assert math.isnan(acc)
        return
    clean = float((model(torch.as_tensor(x, dtype=torch.float32)).argmax(1).numpy() == y).mean())
    assert 0 <= acc <= clean


@FEW
@given(eps=st.lists(st.sampled_from((0.05, 0.1, 0.3, 1.0, 1.5, -0.1, float("nan"), 0.1, True)), max_size=3),
       steps=st.sampled_from((1, 40, 0, -3, 2.5, True)), tol=st.sampled_from((0.01, 0.0, 1.0, float("nan"), -0.1)))
def test_attack_settings_check_their_values(eps, steps, tol):
    good_eps = (eps and all(type(e) is float and 0 <= e <= 1 for e in eps) and eps == sorted(set(eps)))
    valid = good_eps and type(steps) is int and steps >= 1 and 0 <= tol < 1
    try:
        s = AttackSettings(eps=tuple(eps), pgd_steps=steps, tol=tol)
    except LocalSTDPError as exc:
        assert not valid, f"refused valid settings: {exc}"
        assert isinstance(exc, ValueError)
        return
    assert valid and s.eps == tuple(eps)


# ---------------------------------------------------------------------------------------------
# loading: run directories, data


@FEW
@given(blob=st.binary(max_size=64), name=st.sampled_from(("model.safetensors", "checkpoint.safetensors")))
def test_load_run_refuses_damaged_run_directories(tmp_path_factory, blob, name):
    run = tmp_path_factory.mktemp("run")
    (run / name).write_bytes(blob)
    with pytest.raises(LocalSTDPError):
        load_run(run)
    with pytest.raises(LocalSTDPError):
        load_run(run / "missing")


def test_load_run_names_a_run_dir_of_the_wrong_type():
    with pytest.raises(ArgumentTypeError, match="run_dir"):
        load_run(3)


@FEW
@given(cells=st.lists(st.lists(st.sampled_from(("0", "1", "2", "0.5", "-3", "nan", "inf", "a", "", "1e400", "x,y")),
                               min_size=1, max_size=4), min_size=0, max_size=6),
       label=st.sampled_from((None, 0, -1, 3, "a", 1.5, True)))
def test_read_csv_gives_finite_arrays_or_a_data_error(tmp_path_factory, cells, label):
    from localstdp.data.csvfile import read_csv

    path = tmp_path_factory.mktemp("csv") / "d.csv"
    path.write_text("\n".join(",".join(row) for row in cells) + "\n")
    try:
        x, y = read_csv(path, label)
    except LocalSTDPError:
        return
    assert not isinstance(label, (bool, float))
    assert len(x) == len(y) > 0 and np.isfinite(x).all()


@FEW
@given(blob=st.binary(max_size=40))
def test_read_idx_gives_an_array_or_a_data_error(tmp_path_factory, blob):
    from localstdp.data.idx import read_idx

    path = tmp_path_factory.mktemp("idx") / "f-idx1-ubyte"
    path.write_bytes(blob)
    try:
        arr = read_idx(path)
    except LocalSTDPError:
        return
    assert isinstance(arr, np.ndarray)


@pytest.mark.parametrize("cfg", [None, {"name": "iris"}, "iris", ExperimentConfig()])
def test_load_dataset_names_a_config_of_the_wrong_type(cfg):
    from localstdp.data import load_dataset

    with pytest.raises(ArgumentTypeError, match="^cfg: expected a DataConfig") as info:
        load_dataset(cfg)
    if isinstance(cfg, ExperimentConfig):
        assert "cfg.data" in str(info.value)


# ---------------------------------------------------------------------------------------------
# run_grid and parallel.launch: refused before any work starts


@FEW
@given(tasks=st.sampled_from((["nope"], {"iris-1v2": "cfg"}, {"iris-1v2": None}, [3])),
       settings_=st.sampled_from(("good", None, {"seeds": 1})))
def test_run_grid_refuses_bad_tasks_and_settings_before_any_work(tasks, settings_):
    from localstdp import GridSettings, run_grid

    s = GridSettings(seeds=1, frontier_seeds=0, methods=("local",)) if settings_ == "good" else settings_
    with pytest.raises(LocalSTDPError):
        run_grid(tasks, s)


def test_check_grid_args_names_each_argument():
    from localstdp import GridSettings
    from localstdp.evaluation.plan import check_grid_args

    s = GridSettings(seeds=1, frontier_seeds=0, methods=("local",))
    check_grid_args(["iris-1v2"], s, jobs=2)
    for kwargs, name in ((dict(tasks="iris-1v2"), "tasks"), (dict(jobs=0), "jobs"), (dict(jobs="2"), "jobs"),
                         (dict(jobs=1.5), "jobs"), (dict(datasets={"iris-1v2": 3}), "datasets"),
                         (dict(out=3), "out"), (dict(resume="yes"), "resume"), (dict(settings=None), "settings")):
        args = dict(tasks=["iris-1v2"], settings=s) | kwargs
        with pytest.raises(ArgumentError, match=f"^{name}"):
            check_grid_args(**args)


def test_run_grid_names_jobs_and_a_single_task_name():
    from localstdp import GridSettings, run_grid

    s = GridSettings(seeds=1, frontier_seeds=0, methods=("local",))
    with pytest.raises(ArgumentError, match="^tasks"):
        run_grid("iris-1v2", s)
    with pytest.raises(ArgumentError, match="^jobs"):
        run_grid(["iris-1v2"], s, jobs="2")


@FAST
@given(nproc=st.sampled_from((2, 0, -1, 1.5, "2")), method=st.sampled_from(("local", "nope", None)),
       timeout=st.sampled_from((60.0, 0.0, -1.0, float("nan"))), threads=st.sampled_from((None, 1, 0, 1.5)),
       cfg=st.sampled_from(("good", None, "mnist-3v5")), out=st.sampled_from((None, 3)))
def test_launch_refuses_bad_arguments_before_starting_a_worker(nproc, method, timeout, threads, cfg, out):
    from localstdp import parallel

    valid = (nproc == 2 and method == "local" and timeout == 60.0 and threads in (None, 1) and cfg == "good"
             and out is None)
    if valid:
        return  # a valid call would start workers (tests/test_parallel.py runs those)
    config = ExperimentConfig() if cfg == "good" else cfg
    with pytest.raises(LocalSTDPError):
        parallel.launch(nproc, config, method, out, timeout=timeout, threads=threads)


def test_the_errors_are_value_and_type_errors():
    assert issubclass(ArgumentError, ValueError) and issubclass(ArgumentTypeError, ValueError)
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentError, LocalSTDPError)
    assert Path(__file__).name == "test_edges_property.py"
