"""The benchmark at minimal sizes: keys, sane values, report; the measuring machinery on a case with a
known answer; no speed targets (those are checked by the benchmark command, never by a timed test)."""

from __future__ import annotations

import json

import pytest
import torch

from localstdp.bench import BenchSpec, method_flops, peak_step_memory, run_bench, write_json, write_report
from localstdp.cli import main

TINY = BenchSpec(hidden=(24, 24), batch=8, epoch_batches=2, repeats=2, warmup=1, time_bins=3, scale_widths=(8, 16),
                 scale_batches=(4, 8), scale_steps=1, scale_repeats=1, bins_sweep=(2, 3), bins_steps=1)


def test_flop_counts_by_hand():
    w = [784, 1024, 1024, 10]
    gemm = [2 * 256 * 784 * 1024, 2 * 256 * 1024 * 1024, 2 * 256 * 1024 * 10]
    assert method_flops("rate", w, 256) == 2 * sum(gemm)
    assert method_flops("backprop", w, 256) == 2 * sum(gemm) + gemm[1] + gemm[2]
    assert method_flops("timing", w, 256, time_bins=4) == 5 * sum(gemm)
    assert method_flops("backprop", w, 1) / method_flops("rate", w, 1) == pytest.approx(1.2843, abs=1e-4)


def test_peak_memory_sees_a_temporary():
    assert peak_step_memory(lambda: torch.ones(1000, 1000).sum(), torch.device("cpu")) >= 4_000_000


def test_interleaved_ratio_has_the_known_answer():
    """The measuring machinery itself, on arms with a known cost ratio (not a speed target): one arm
    does the same work twice (two sleeps of 4 ms), the other once; the paired median ratio must be
    about 2, and its inverse about 0.5 — a swapped numerator/denominator or a wrong pairing fails."""
    import time

    from localstdp.bench import interleaved, paired_ratio

    once = lambda i: time.sleep(0.004)
    twice = lambda i: (time.sleep(0.004), time.sleep(0.004))
    t = interleaved({"once": once, "twice": twice}, units=3, repeats=5, warmup=1, device=torch.device("cpu"))
    assert [len(v) for v in t.values()] == [5, 5]
    assert 1.7 < paired_ratio(t["twice"], t["once"]) < 2.3
    assert 0.43 < paired_ratio(t["once"], t["twice"]) < 0.59


def test_run_bench_tiny(tmp_path):
    res = run_bench(device="cpu", spec=TINY)
    for key in ("rate_vs_backprop_speedup", "timing_vs_rate_cost", "gemm_efficiency"):
        assert res[key] > 0 and res[key] < 1e4
        assert isinstance(res["targets_met"][key], bool)
    cpu = res["devices"]["cpu"]
    h = cpu["headline"]
    assert h["widths"] == [784, 24, 24, 10] and h["epoch_examples"] == 16
    assert all(len(v) == 2 and min(v) > 0 for v in h["epoch_seconds"].values())
    assert set(h["peak_step_memory_bytes"]) == {"rate", "backprop", "timing"}
    assert h["parameter_bytes"] == 4 * (784 * 24 + 24 + 24 * 24 + 24 + 24 * 10 + 10)
    assert [r["time_bins"] for r in cpu["time_bins_sweep"]] == [2, 3]
    for r in cpu["time_bins_sweep"]:
        assert 0 < r["rel_error"] < r["kernel_error_bound"] * 1.5
    assert [r["width"] for r in cpu["scaling"]["width"]] == [8, 16]
    assert [r["batch"] for r in cpu["scaling"]["batch"]] == [4, 8]
    assert "cuda" not in res["devices"]

    path = tmp_path / "b.json"
    write_json(res, path)
    assert json.loads(path.read_text())["gemm_efficiency"] == res["gemm_efficiency"]
    md, png = write_report(path, tmp_path / "BENCH.md")
    text = md.read_text()
    assert "rate_vs_backprop_speedup" in text and f"{res['gemm_efficiency']:.3f}" in text
    assert png.stat().st_size > 1000


def test_cuda_absent_is_skipped_or_measured():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    res = run_bench(device="auto", spec=TINY, threads=[1])
    assert res["devices"]["cuda"] == {"skipped": "no CUDA device is available"}
    assert res["devices"]["cpu"]["machine"]["threads"] == 1
    assert res["gemm_efficiency"] == res["devices"]["cpu"]["headline"]["gemm_efficiency"]
    assert main(["bench", "--device", "cuda", "--out", "unused.json"]) == 1


def test_cli_errors(tmp_path, capsys):
    assert main(["bench", "--repeats", "0", "--out", str(tmp_path / "b.json")]) == 2
    assert main(["bench", "--report", str(tmp_path / "missing.json")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "Traceback" not in err


def test_headline_measures_the_default_time_bins():
    from localstdp.rules import RuleParams

    assert BenchSpec().time_bins == RuleParams().time_bins == 32


def test_configs_and_rules_tiny(tmp_path):
    """--configs finds every shipped config (MLP and CNN alike); --rules times the peer rules."""
    from pathlib import Path

    import localstdp
    from localstdp.bench.configs import ConfigSpec, shipped_configs

    shipped = {p.stem for p in (Path(localstdp.__file__).parent / "configs").glob("*.toml")}
    assert set(shipped_configs()) == shipped and {"iris", "mnist-10", "fashion-mnist"} <= shipped
    spec = ConfigSpec(batches=2, repeats=2, warmup_batches=1, only=("iris", "digits"))
    res = run_bench(device="cpu", spec=TINY, threads=[1], configs=spec, rules=["fa", "ff"])
    assert set(res["configs"]) == {"iris", "digits"}
    for name, r in res["configs"].items():
        full = res["devices"]["cpu"]["configs"][name]
        assert r["speedup"] == full["speedup"] > 0 and set(r["peak_mib"]) == {"local", "backprop"}
        assert r["local_s"] == pytest.approx(full["epoch_s"]["local"]) and r["backprop_s"] > 0
        assert set(full["epoch_s"]) == {"local", "backprop", "backprop-sgd"}  # no centre, no receptive field
        assert full["measured_batches"] == 2 and [len(v) for v in full["seconds"].values()] == [2, 2, 2]
        assert isinstance(res["configs_target_met"][name], bool)
    rules = res["devices"]["cpu"]["rules"]
    assert list(rules["epoch_s"]) == ["local", "backprop", "fa", "ff"]
    assert rules["speedup_vs_backprop"]["backprop"] == 1.0 and rules["cost_vs_local"]["local"] == 1.0
    path = tmp_path / "b.json"
    write_json(res, path)
    md, _ = write_report(path, tmp_path / "BENCH.md")
    text = md.read_text()
    assert "## Shipped configs" in text and "### digits" in text and "## The peer local rules" in text


def test_configs_arms_follow_the_config():
    from localstdp.bench.configs import CONFIG_DIR, arms_for
    from localstdp.config import load_config

    assert arms_for(load_config(CONFIG_DIR / "mnist-10.toml")) == ["local", "backprop", "backprop-sgd", "local-fused"]
    assert arms_for(load_config(CONFIG_DIR / "mnist-3v5.toml")) == ["local", "backprop", "backprop-sgd"]


def test_configs_cli_errors(tmp_path, capsys):
    assert main(["bench", "--quick", "--configs", "no-such-config", "--out", str(tmp_path / "b.json")]) == 2
    assert main(["bench", "--quick", "--rules", "no-such-rule", "--out", str(tmp_path / "b.json")]) == 2
    assert "no-such" in capsys.readouterr().err
