"""The main job's profile (issue 32): phase timing is exclusive under nesting, every unit of a real
(tiny) reproduce run records its phases, and ``bench --reproduce --from`` sums them by kind of unit."""

from __future__ import annotations

import json

import pytest

from localstdp.bench.reproduce import profile_run, render_markdown, unit_kind
from localstdp.cli import main
from localstdp.errors import LocalSTDPError
from localstdp.evaluation import phases


def test_nested_phases_are_timed_exclusively_under_their_path(monkeypatch):
    clock = iter([0.0, 1.0, 3.0, 4.0, 6.0, 10.0, 20.0, 21.0])
    monkeypatch.setattr(phases.time, "perf_counter", lambda: next(clock))
    phases.take()
    with phases.phase("a"):  # 0 .. 10: 10 s, of which the two b's took 4 s
        with phases.phase("b"):  # 1 .. 3
            pass
        with phases.phase("b"):  # 4 .. 6
            pass
    assert phases.take() == {"a/b": 4.0, "a": 6.0}
    with phases.phase("c"):  # 20 .. 21
        pass
    assert phases.take() == {"c": 1.0} and phases.take() == {}
    assert phases.add({"a": 1.0}, {"a": 0.5, "b": 2.0}) == {"a": 1.5, "b": 2.0}
    assert phases.add({"a": 1.0}, None) == {"a": 1.0}


def _write(path, name, rec):
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{name}.json").write_text(json.dumps(rec))


def test_profile_sums_by_kind_phase_and_task(tmp_path):
    u = tmp_path / "units"
    _write(u / "t1", "panel-seed0", {"unit": "t1/panel-seed0", "rows": [{"method": "local"}],
                                     "phase_seconds": {"train": 2.0, "attack": 3.0, "transfer": 1.0}})
    _write(u / "t1", "frontier-local:eta=0.1-seed0", {"unit": "t1/frontier-local:eta=0.1-seed0",
                                                      "rows": [{"method": "local"}],
                                                      "phase_seconds": {"train": 1.0, "val_attack": 0.5}})
    _write(u / "t2", "frontier-backprop:weight_decay=0.1-seed1", {"unit": "t2/frontier-backprop:weight_decay=0.1-seed1",
                                                                 "rows": [{"method": "backprop"}],
                                                                 "phase_seconds": {"train": 4.0}})
    _write(u / "t2", "frontier-old-seed0", {"unit": "t2/frontier-old-seed0", "rows": [{"method": "backprop"}]})
    prof = profile_run(tmp_path)
    assert prof["units"] == 4 and prof["units_without_phases"] == 1
    assert prof["kinds"]["panel"] == {"units": 1, "phases": {"train": 2.0, "attack": 3.0, "transfer": 1.0}, "seconds": 6.0}
    assert prof["kinds"]["frontier local"]["seconds"] == 1.5 and prof["kinds"]["frontier backprop"]["units"] == 1
    assert prof["phases"] == {"train": 7.0, "attack": 3.0, "transfer": 1.0, "val_attack": 0.5}
    assert prof["tasks"] == {"t1": 7.5, "t2": 4.0} and prof["phase_seconds"] == 11.5
    md = render_markdown(prof, "localstdp bench --reproduce --from X")
    assert "| panel | 1 | 2 | 3 |" in md and "| all | 4 |" in md and "1 unit records carry no phase times" in md
    assert unit_kind("t/panel-seed2", {}) == "panel"
    with pytest.raises(LocalSTDPError, match="no unit records"):
        profile_run(tmp_path / "nothing")


def test_bench_reproduce_from_a_finished_run_writes_json_and_markdown(tmp_path, capsys):
    run = tmp_path / "run"
    _write(run / "units" / "t1", "panel-seed0", {"unit": "t1/panel-seed0", "phase_seconds": {"train": 2.0}})
    out, md = tmp_path / "p.json", tmp_path / "p.md"
    assert main(["bench", "--reproduce", "--from", str(run), "--out", str(out), "--md", str(md)]) == 0
    assert json.loads(out.read_text())["kinds"]["panel"]["seconds"] == 2.0
    assert "## `make reproduce`: where the main job's time goes" in md.read_text()
    assert main(["bench", "--reproduce", "--from", str(tmp_path / "none"), "--out", str(out), "--md", str(md)]) != 0
    assert "no unit records" in capsys.readouterr().err


def test_the_profile_becomes_a_section_of_the_benchmarks_report(tmp_path):
    from pathlib import Path

    run = tmp_path / "run"
    _write(run / "units" / "t1", "panel-seed0", {"unit": "t1/panel-seed0", "phase_seconds": {"train": 2.0}})
    prof = tmp_path / "p.json"
    assert main(["bench", "--reproduce", "--from", str(run), "--out", str(prof), "--md", str(tmp_path / "p.md")]) == 0
    notes = tmp_path / "notes.md"
    notes.write_text("## Reading these numbers\n")
    bench_json = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.json"
    md = tmp_path / "B.md"
    assert main(["bench", "--report", str(bench_json), "--md", str(md), "--plot", str(tmp_path / "w.png"),
                 "--notes", str(notes), "--reproduce-report", str(prof)]) == 0
    text = md.read_text()
    assert text.index("## `make reproduce`: where the main job's time goes") < text.index("## Reading these numbers")
    assert "--reproduce-report" in text.splitlines()[2]
    assert main(["bench", "--report", str(bench_json), "--md", str(md), "--plot", str(tmp_path / "w.png"),
                 "--reproduce-report", str(notes)]) != 0  # not a profile JSON
