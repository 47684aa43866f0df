"""`localstdp bench --parallel`: the scaling model's formulas against hand computations, the report's
speed-ups against the numbers it is given, and one real (tiny) group of 2 ranks running every arm."""

from __future__ import annotations

import math

import pytest

from localstdp.bench import scaling
from localstdp.bench.parallel import ParallelSpec, run_parallel_bench
from localstdp.bench.parallel_report import render_markdown, summarise


def test_fit_link_recovers_latency_and_bandwidth():
    alpha, beta = 80e-6, 2.5e9
    pts = [{"bytes": b, "s": alpha + b / beta} for b in (1024, 16384, 1 << 20, 1 << 22)]
    link = scaling.fit_link(pts)
    assert link["alpha_s"] == pytest.approx(alpha, rel=1e-9)
    assert link["beta_Bps"] == pytest.approx(beta, rel=1e-9)
    assert scaling.fit_link([])["beta_Bps"] == math.inf


def test_allreduce_is_a_ring():
    link = {"alpha_s": 1e-4, "beta_Bps": 1e9}
    assert scaling.allreduce_s(link, 4e6, 1) == 0.0
    # 2 (N - 1) latencies and 2 (N - 1) / N of the buffer over the link
    assert scaling.allreduce_s(link, 4e6, 4) == pytest.approx(6 * 1e-4 + 1.5 * 4e6 / 1e9)


def _profile():
    return {
        "unit_costs": [1.0, 3.0, 3.0, 1.0],
        "local_unit_s": [0.001, 0.003, 0.003, 0.001],
        "unit_in_bytes": [4 * 784, 4 * 100, 4 * 100, 4 * 100],
        "split": [[0, 2], [2, 4]],
        "split_2n": [[0, 1], [1, 2], [2, 3], [3, 4]],
        "backprop_unit_s": {"32": [0.002, 0.006, 0.006, 0.002], "16": [0.0011, 0.0031, 0.0031, 0.0011]},
        "backprop_opt_s": 0.0008,
        "backprop_step_s": {"32": 0.017, "16": 0.009},
        "local_step_s": {"32": 0.008, "16": 0.0045},
        "local_forward_s": {"32": 0.004, "16": 0.0022},
        "activity_bytes": 4 * 400,
        "params_bytes": 4e6,
    }


def test_local_pipeline_is_its_slowest_stage_plus_its_messages():
    prof, b = _profile(), 32
    link = {"alpha_s": 1e-4, "beta_Bps": 1e9}
    head = 1e-4 + 8 * (b + 1) / 1e9
    act = 1e-4 + 400 * b / 1e9
    # both stages compute 4 ms; each pays one head and one activity message (out or in)
    assert scaling.local_pipeline_s(prof, [(0, 2), (2, 4)], link, b) == pytest.approx(0.004 + head + act)
    # over a network the send overlaps compute
    assert scaling.local_pipeline_s(prof, [(0, 2), (2, 4)], link, b, overlap=True) == pytest.approx(0.004)


def test_gpipe_bubble_and_zero_bubble_ideal():
    prof, b, m = _profile(), 32, 2
    link = {"alpha_s": 0.0, "beta_Bps": math.inf}
    t = 0.0011 + 0.0031  # each stage's forward + backward at micro-batch 16
    opt = 0.0008 * 4 / 8  # the slowest stage holds half the cost
    assert scaling.backprop_schedule_s(prof, [(0, 2), (2, 4)], lambda s: s, link, b, m, v=1) == \
        pytest.approx((m + 1) * t + opt)
    assert scaling.backprop_schedule_s(prof, [(0, 2), (2, 4)], lambda s: s, link, b, m, v=1, ideal=True) == \
        pytest.approx(m * t + opt)
    # V schedule: rank 0 holds stages 0 and 3, rank 1 stages 1 and 2; bubble (ranks - 1) / 2
    v = scaling.backprop_schedule_s(prof, [(0, 1), (1, 2), (2, 3), (3, 4)], lambda s: s if s < 2 else 3 - s,
                                    link, b, m, v=2)
    assert v == pytest.approx((m + 0.5) * (0.0031 + 0.0031) + 0.0008 * 3 / 8)
    assert scaling.backprop_schedule_s(prof, [(0, 2), (2, 4)], lambda s: s, link, b, 8, v=1) is None  # not profiled


def _result():
    eps = {"local 1x1": [100.0, 110.0, 90.0], "backprop 1x1": [80.0, 80.0, 80.0], "local 1x2": [150.0] * 3,
           "backprop 1x2": [120.0] * 3, "local pipeline 2x1": [180.0, 170.0, 190.0], "local data-updates 2x1": [60.0] * 3,
           "local data-activities 2x1": [120.0] * 3,
           "backprop ddp 2x1": [100.0] * 3, "backprop gpipe 2x1 m2": [90.0] * 3, "backprop gpipe 2x1 m4": [95.0] * 3,
           "backprop 1f1b 2x1 m2": [92.0] * 3}
    case = {"net": "mlp-x", "batch": 32, "world": 2, "profile": _profile(), "examples_per_s": eps}
    return {"groups": [{"world": 2, "link": [{"bytes": 1024, "s": 1e-4}, {"bytes": 1 << 20, "s": 5e-4}],
                        "collectives": {"all_gather": [{"bytes": 1e6, "s": 1e-3}, {"bytes": 2e6, "s": 1.5e-3}],
                                        "all_reduce": [{"bytes": 1e6, "s": 2e-3}, {"bytes": 2e6, "s": 3e-3}]},
                        "cases": [case]}],
            "spec": {"repeats": 3, "timed": 8, "warmup": 2}, "wall_s": 60.0, "cpus": 2, "torch": "x",
            "machine": {"cpu": "test"}, "load_average": {"start": [0.1], "end": [0.2]}, "nets": {"mlp-x": "test"}}


def test_summary_speedups_are_ratios_of_medians():
    res = _result()
    res["model"] = scaling.fit_and_predict(res)
    (row,) = summarise(res)
    assert row["pipeline_speedup"] == pytest.approx(180 / 100)
    assert row["split_bound"] == pytest.approx(0.008 / 0.004)
    assert row["pipeline_of_bound"] == pytest.approx(0.9)
    assert row["ddp_speedup"] == pytest.approx(100 / 80)
    assert row["local_data_speedup"] == pytest.approx(120 / 100)
    assert row["best_schedule"] == "gpipe" and row["schedules"]["gpipe"]["microbatches"] == 4
    assert row["pipeline_over_best_backprop_pipeline"] == pytest.approx(180 / 95)
    text = render_markdown(res, "localstdp bench --parallel")
    assert "| 2 | mlp-x | 32 | [0, 2) / [2, 4) | 1.80x | 0.90 (bound 2.00x) |" in text
    arms = {a["arm"]: a for a in res["model"]["arms"]}
    assert arms["local 1x1"]["predicted"] == pytest.approx(32 / 0.008)
    assert arms["local 1x2"]["predicted"] is None
    # data parallel from the group's own measured collectives (fitted: all_gather 0.5 ms + bytes / 2 GB/s)
    want = 0.0022 + (0.008 - 0.004) + 0.5e-3 + 32 * 1600 / 2e9
    assert arms["local data-activities 2x1"]["predicted"] == pytest.approx(32 / want)
    assert arms["local data-updates 2x1"]["predicted"] == pytest.approx(32 / (0.0045 + 1e-3 + 4e6 / 1e9))


@pytest.mark.slow
def test_a_real_group_runs_every_arm(tmp_path):
    tiny = {"tiny": {"kind": "mlp", "n_in": 16, "hidden": [12, 12, 12], "about": "16-12-12-12-10"}}
    spec = ParallelSpec(nets=("tiny",), batches=(8,), timed=2, warmup=1, repeats=2, microbatches=(2, 4),
                        net_defs=tiny, timeout=60)
    res = run_parallel_bench(spec, [2], progress=lambda s: None)
    (case,) = res["groups"][0]["cases"]
    arms = case["examples_per_s"]
    for name in ("local 1x1", "local 1x2", "backprop 1x1", "local pipeline 2x1", "local data-updates 2x1", "local data-activities 2x1",
                 "local pipeline-noprefetch 2x1",
                 "backprop ddp 2x1", "backprop gpipe 2x1 m2", "backprop 1f1b 2x1 m2", "backprop zbv 2x1 m2",
                 "backprop interleaved-zb 2x1 m2"):
        assert len(arms[name]) == 2 and min(arms[name]) > 0, name
    assert case["profile"]["split"] == [[0, 2], [2, 4]]
    assert res["model"]["links"]["2"]["alpha_s"] >= 0


@pytest.mark.slow
def test_three_ranks_skip_a_net_too_shallow_and_deepen_a_per_rank_one():
    nets = {"two-layers": {"kind": "mlp", "n_in": 16, "hidden": [12], "about": "16-12-10"},
            "per-rank": {"kind": "mlp", "n_in": 16, "hidden": [12], "per_rank": True, "about": "16-12 x N-10"}}
    spec = ParallelSpec(nets=("two-layers", "per-rank"), batches=(12,), timed=1, warmup=1, repeats=1,
                        microbatches=(3,), net_defs=nets, timeout=60)
    res = run_parallel_bench(spec, [3], progress=lambda s: None)
    skipped, measured = res["groups"][0]["cases"]
    assert skipped["net"] == "two-layers" and "needs at least 3 layers" in skipped["skipped"]
    assert measured["net"] == "per-rank" and len(measured["profile"]["unit_costs"]) == 4  # 3 hidden + output
    assert min(measured["examples_per_s"]["local pipeline 3x1"]) > 0
    (row,) = summarise(res)
    assert row["net"] == "per-rank" and row["ranks"] == 3
    assert "skipped on 3 ranks: `two-layers`" in render_markdown(res, "x")
