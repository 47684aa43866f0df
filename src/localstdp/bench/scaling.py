"""A model of parallel training throughput, fitted to ``bench --parallel``'s own measurements.

Inputs (per net and batch b, measured on rank 0 alone with one thread): every unit's compute time
c_u (the local rule: the stage step, forward + local update; backprop: forward + backward at every
micro-batch size used, and the optimiser step), the bytes of every message, and the link (one-way
seconds of gloo messages of several sizes, fitted as alpha + bytes / beta).

  local pipeline, S stages:   T = max_s ( sum_{u in s} c_u + h_s )
      h_s: the stage's messages (in and out; a label head and the activity each) at alpha + bytes / beta
      each -- on one machine the copies cost the rank's own core. Over a network the sends overlap
      compute (isend, a window of micro-batches in flight), so T = max_s max(sum c_u, link_s).
  local data, activities gathered:  T = forward(b / N) + update(b) + (N - 1) alpha + (N - 1) / N * b A / beta
      (A: the bytes of every layer's input and output activity per example)
  local data / DDP, N ranks:  T = c_step(b / N) + 2 (N - 1) alpha + 2 (N - 1) / N * bytes_params / beta
      (a ring all-reduce of the whole update or gradient; DDP's bucket overlap is not credited).
  backprop GPipe / 1F1B, S stages, M micro-batches:  T = (M + S - 1) * max_s t_s(b / M) + opt
      t_s: the stage's forward + backward per micro-batch plus its two messages (activation forward,
      gradient backward); opt: the slowest stage's optimiser step.
  backprop interleaved / V zero-bubble, v = 2 stages per rank:  T = (M + (S_rank - 1) / v) * max_r t_r(b / M) + opt
      (the interleaved bubble; a zero-bubble schedule's ideal is M * max_r t_r).

Throughput = b / T; a prediction is compared with the measured median (relative error).
"""

from __future__ import annotations

import statistics

GBIT = 1e9 / 8  # bytes per second of 1 Gb/s


def measured_cases(group: dict) -> list[dict]:
    """The cases of a rank group that were measured (not skipped, e.g. a net with fewer layers than ranks)."""
    return [c for c in group["cases"] if "skipped" not in c]


def fit_link(points: list[dict]) -> dict:
    """Least-squares alpha (s) and beta (bytes/s) of one-way times ``points`` [{"bytes", "s"}]."""
    if not points:
        return {"alpha_s": 0.0, "beta_Bps": float("inf")}
    xs = [p["bytes"] for p in points]
    ys = [p["s"] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    alpha = max(my - slope * mx, 0.0)
    return {"alpha_s": alpha, "beta_Bps": (1.0 / slope) if slope > 0 else float("inf")}


def msg_s(link: dict, nbytes: float) -> float:
    return link["alpha_s"] + nbytes / link["beta_Bps"]


def allreduce_s(link: dict, nbytes: float, n: int) -> float:
    if n <= 1:
        return 0.0
    return 2 * (n - 1) * link["alpha_s"] + 2 * (n - 1) / n * nbytes / link["beta_Bps"]


def _stage_sum(vals: list[float], stage: tuple[int, int]) -> float:
    return sum(vals[stage[0] : stage[1]])


def local_pipeline_s(prof: dict, split, link: dict, batch: int, overlap: bool = False) -> float:
    """Seconds per batch of the local pipeline with stages ``split``."""
    c = prof["local_unit_s"]
    in_bytes = prof["unit_in_bytes"]
    head = 8 * (batch + 1)
    worst = 0.0
    for s, st in enumerate(split):
        comp = _stage_sum(c, st)
        comm_in = msg_s(link, head) + msg_s(link, in_bytes[st[0]] * batch) if s > 0 else 0.0
        comm_out = msg_s(link, head) + msg_s(link, in_bytes[split[s + 1][0]] * batch) if s + 1 < len(split) else 0.0
        worst = max(worst, max(comp, comm_out) if overlap else comp + comm_in + comm_out)
    return worst


def coll_s(fit: dict, nbytes: float) -> float:
    """Seconds of a collective from its own fit (alpha + bytes / beta, measured on the group)."""
    return fit["alpha_s"] + nbytes / fit["beta_Bps"]


def data_parallel_s(step_s: float, params_bytes: float, costs: dict, n: int) -> float:
    """The shard's step, then the all-reduce of every layer's update or gradient (measured all_reduce)."""
    return step_s + coll_s(costs["all_reduce"], params_bytes)


def allgather_s(link: dict, nbytes: float, n: int) -> float:
    """Ring all-gather of ``nbytes`` in all (each rank contributes nbytes / n)."""
    if n <= 1:
        return 0.0
    return (n - 1) * link["alpha_s"] + (n - 1) / n * nbytes / link["beta_Bps"]


def activity_exchange_s(prof: dict, costs: dict, batch: int, n: int) -> float:
    """Local data parallel gathering activities: the shard's forward pass, the whole batch's update
    (the step's time less its forward), and the all-gather of the batch's activities (measured all_gather)."""
    fwd = prof["local_forward_s"]
    update = prof["local_step_s"][str(batch)] - fwd[str(batch)]
    return fwd[str(batch // n)] + update + coll_s(costs["all_gather"], prof["activity_bytes"] * batch)


def backprop_schedule_s(prof: dict, split, ranks_of, link: dict, batch: int, m: int, v: int, overlap: bool = False,
                        ideal: bool = False, overhead: float = 0.0) -> float | None:
    """Seconds per batch of a backprop pipeline schedule (see the module docstring)."""
    size = batch // m
    units = prof["backprop_unit_s"].get(str(size))
    if units is None:
        return None
    in_bytes = prof["unit_in_bytes"]
    per_rank: dict[int, float] = {}
    for s, st in enumerate(split):
        t = _stage_sum(units, st)
        edges = [in_bytes[st[0]] * size] if s > 0 else []
        edges += [in_bytes[split[s + 1][0]] * size] if s + 1 < len(split) else []
        comm = sum(2 * msg_s(link, e) for e in edges)  # activation one way, its gradient back
        r = ranks_of(s)
        per_rank[r] = per_rank.get(r, 0.0) + (max(t, comm) if overlap else t + comm)
    n_ranks = len(per_rank)
    t_max = max(per_rank.values())
    bubble = 0.0 if ideal else (n_ranks - 1) / v
    opt = prof["backprop_opt_s"] * max(_stage_sum(prof["unit_costs"], st) for st in split) / sum(prof["unit_costs"])
    return (m + bubble) * (t_max + overhead) + opt


def _arm_prediction(name: str, case: dict, costs: dict) -> float | None:
    """Predicted examples/s of a measured arm (None where the model has no term for it)."""
    prof, b, n = case["profile"], case["batch"], case["world"]
    link = costs["link"]
    words = name.split()
    if words[1].startswith("1x"):
        threads = int(words[1][2:])
        if threads != 1:
            return None  # intra-op threads: not modelled
        s = sum(prof["local_unit_s"]) if words[0] == "local" else prof["backprop_step_s"][str(b)]
        return b / s
    if words[0] == "local" and words[1].startswith("pipeline"):
        return b / local_pipeline_s(prof, [tuple(s) for s in prof["split"]], link, b)
    if words[:2] == ["local", "data-updates"]:
        return b / data_parallel_s(prof["local_step_s"][str(b // n)], prof["params_bytes"], costs, n)
    if words[:2] == ["local", "data-activities"]:
        return b / activity_exchange_s(prof, costs, b, n)
    if words[:2] == ["backprop", "ddp"]:
        return b / data_parallel_s(prof["backprop_step_s"][str(b // n)], prof["params_bytes"], costs, n)
    sched, m = words[1], int(words[3][1:])
    o = costs.get("overhead", {}).get(sched, 0.0)
    split = [tuple(s) for s in (prof["split"] if sched in ("gpipe", "1f1b") else prof["split_2n"])]
    if sched in ("gpipe", "1f1b"):
        t = backprop_schedule_s(prof, split, lambda s: s, link, b, m, v=1, overhead=o)
    elif sched == "zbv":
        t = backprop_schedule_s(prof, split, lambda s: s if s < n else 2 * n - 1 - s, link, b, m, v=2, overhead=o)
    else:
        t = backprop_schedule_s(prof, split, lambda s: s % n, link, b, m, v=2, overhead=o)
    return None if t is None else b / t


def fit_overheads(groups: list[dict], costs_of: dict) -> dict:
    """Per backprop schedule: the seconds per micro-batch step (the pipelining engine's own work per
    action: scheduling, shape checks, message setup) that best fits its measured arms (least squares
    of the log ratio, a grid of 0 to 20 ms), or 0 where nothing was measured."""
    import math

    out = {}
    for sched in ("gpipe", "1f1b", "interleaved-zb", "zbv"):
        arms = [(case, name, statistics.median(v), costs_of[str(grp["world"])]) for grp in groups
                for case in measured_cases(grp) for name, v in case["examples_per_s"].items()
                if name.split()[:2] == ["backprop", sched]]
        if not arms:
            continue
        best = (math.inf, 0.0)
        for k in range(401):
            o = k * 5e-5
            err = 0.0
            for case, name, meas, costs in arms:
                pred = _arm_prediction(name, case, costs | {"overhead": {sched: o}})
                if pred:
                    err += math.log(pred / meas) ** 2
            best = min(best, (err, o))
        out[sched] = best[1]
    return out


def net_collective_s(costs: dict, kind: str, link: dict, nbytes: float, n: int) -> float:
    """A collective over ``link`` for n machines: the ring's latency and bytes on the link, plus the
    CPU's own per-byte work (reduction, copies) measured on the 2-rank group beyond its link's bytes."""
    if n <= 1:
        return 0.0
    share = 1.0 if kind == "all_reduce" else 0.5  # bytes a rank moves per byte of buffer at 2 ranks
    cpu = max(1.0 / costs[kind]["beta_Bps"] - share / costs["link"]["beta_Bps"], 0.0) if costs.get(kind) else 0.0
    ring = allreduce_s(link, nbytes, n) if kind == "all_reduce" else allgather_s(link, nbytes, n)
    return ring + cpu * nbytes * 2 * (n - 1) / n


def predict_machines(case: dict, n: int, link: dict, costs: dict | None = None) -> dict:
    """Speed-up over one process (one core) of N machines of one core each, on a net of N equal
    layers like the measured even net's middle layers (one per stage) plus its output layer, over ``link``."""
    prof, b = case["profile"], case["batch"]
    costs = costs or {"link": link}
    o = costs.get("overhead", {}).get("1f1b", 0.0)
    if n > 1 and not any(int(k) <= b // n for k in prof["backprop_unit_s"]):
        return {}
    c_local = prof["local_unit_s"][1]
    c_out_local = prof["local_unit_s"][-1]
    units_bp = prof["backprop_unit_s"]
    width_bytes = prof["unit_in_bytes"][1]
    single_local = n * c_local + c_out_local
    out = {"ideal": float(n)}
    # local pipeline, one layer per stage (the output layer rides on the last); sends overlap compute
    link_s = msg_s(link, 8 * (b + 1)) + msg_s(link, width_bytes * b)
    t_pipe = max(c_local + c_out_local, link_s)
    out["local pipeline"] = single_local / t_pipe
    # data parallel: the step at b / n is (n c(b/n)) ~ scaled from the measured step times
    params = n * (width_bytes / 4) ** 2 * 4
    step_local_n = single_local / n  # compute divides evenly over the shards (optimistic for small shards)
    phi = prof["local_forward_s"][str(b)] / prof["local_step_s"][str(b)]  # the forward pass's share of a step
    act_bytes = b * (n * 2 * width_bytes + width_bytes + 4 * 10)  # every layer's input and output, per batch
    t_updates = step_local_n + net_collective_s(costs, "all_reduce", link, params, n)
    t_acts = phi * single_local / n + (1 - phi) * single_local + net_collective_s(costs, "all_gather", link, act_bytes, n)
    out["local data"] = single_local / min(t_updates, t_acts)
    c_bp1 = units_bp[str(b)][1]
    single_bp = n * c_bp1 + units_bp[str(b)][-1] + prof["backprop_opt_s"] * n / max(len(prof["local_unit_s"]) - 1, 1)
    out["backprop ddp"] = single_bp / (single_bp / n + net_collective_s(costs, "all_reduce", link, params, n))
    best, best_zb = None, None
    for key, units in units_bp.items():
        size = int(key)
        m = b // size
        if m < n:
            continue
        t = (units[1] + 2 * 2 * msg_s(link, width_bytes * size) + o) if n > 1 else units[1]
        opt = prof["backprop_opt_s"] / max(len(prof["local_unit_s"]) - 1, 1)
        best = max(best or 0.0, single_bp / ((m + n - 1) * t + opt))
        best_zb = max(best_zb or 0.0, single_bp / (m * t + opt))
    out["backprop 1f1b (best m)"] = best
    out["backprop zero-bubble ideal (best m)"] = best_zb
    # throughput of the local pipeline over backprop's zero-bubble ideal (examples/s over examples/s)
    out["local pipeline / backprop zero-bubble ideal"] = (
        None if not best_zb else (b / t_pipe) / (b * best_zb / single_bp))
    return out


def fit_and_predict(result: dict) -> dict:
    """The link of every measured group, each measured arm's prediction and error, and the
    predicted speed-ups for 1..8 machines over a 10 Gb/s, 50 us network."""
    out = {"links": {}, "collectives": {}, "arms": [], "machines": {}}
    costs_of = {}
    for grp in result["groups"]:
        w = str(grp["world"])
        out["links"][w] = link = fit_link(grp.get("link", []))
        coll = {k: fit_link(v) for k, v in grp.get("collectives", {}).items()}
        out["collectives"][w] = coll
        costs_of[w] = {"link": link, "all_reduce": coll.get("all_reduce", link), "all_gather": coll.get("all_gather", link)}
    out["overheads"] = fit_overheads(result["groups"], costs_of)
    for grp in result["groups"]:
        costs = costs_of[str(grp["world"])] | {"overhead": out["overheads"]}
        for case in measured_cases(grp):
            for name, vals in case["examples_per_s"].items():
                pred = _arm_prediction(name, case, costs)
                meas = statistics.median(vals)
                out["arms"].append({"net": case["net"], "batch": case["batch"], "world": case["world"], "arm": name,
                                    "measured": meas, "predicted": pred,
                                    "error": None if pred is None else pred / meas - 1})
    net_link = {"alpha_s": 50e-6, "beta_Bps": 10 * GBIT}
    out["network"] = {"alpha_s": 50e-6, "gbit_s": 10}
    for grp in result["groups"]:
        for case in measured_cases(grp):
            if case["net"] != "mlp-even":
                continue
            key = f"{case['net']} batch {case['batch']}"
            costs = costs_of[str(grp["world"])] | {"overhead": out["overheads"]}
            out["machines"][key] = {str(n): predict_machines(case, n, net_link, costs) for n in (1, 2, 4, 8)}
        break  # the 1-rank group's profile would do as well; the first group's is used
    errs = [abs(a["error"]) for a in out["arms"] if a["error"] is not None and not a["arm"].split()[1].startswith("1x")]
    out["max_abs_error_parallel_arms"] = max(errs) if errs else None
    return out
