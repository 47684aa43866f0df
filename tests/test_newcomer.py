"""The rough edges of a newcomer's first afternoon (issue 12, items 3, 7-11 and 13): each test runs
in seconds (IRIS pair, one hidden layer of 4, one or two epochs) and fails without its fix."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from localstdp import resources
from localstdp.cli import build_parser, main
from localstdp.config import DataConfig, config_from_dict, load_config
from localstdp.data import load_dataset
from localstdp.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
BASE = """
[data]
name = "iris"
classes = [1, 2]
[model]
hidden = [4]
[train]
epochs = 2
batch_size = 16
"""
# 40 rows, two integer classes, header a,b,label
CSV = "a,b,label\n" + "".join(f"{i},{(i * 7) % 5},{i % 2}\n" for i in range(40))


@pytest.fixture(autouse=True)
def restore_signals():
    """cmd_train installs SIGINT/SIGTERM handlers; put pytest's back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def cli(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("localstdp: error: "), err
    return err


def trained(tmp: Path, capsys, cfg: str = BASE, out: str = "run") -> Path:
    (tmp / "c.toml").write_text(cfg)
    code, _, err = cli(["train", "--config", tmp / "c.toml", "--out", tmp / out, "--no-progress"], capsys)
    assert code == 0, err
    return tmp / out


# ---- item 7: data errors --------------------------------------------------------------------

def test_relative_csv_path_is_read_against_the_config_files_directory(tmp_path, monkeypatch, capsys):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "d.csv").write_text(CSV)
    (conf / "c.toml").write_text('[data]\nname = "csv"\npath = "d.csv"\nlabel = "label"\n[model]\nhidden = [4]\n'
                                 "[train]\nepochs = 1\n")
    monkeypatch.chdir(tmp_path)  # not the config's directory
    assert load_config("conf/c.toml").data.path == str(conf / "d.csv")
    assert config_from_dict({"data": {"name": "csv", "path": "d.csv"}}).data.path == "d.csv"  # a dict: as given
    code, out, err = cli(["train", "--config", "conf/c.toml", "--out", "run", "--no-progress"], capsys)
    assert code == 0 and err == "" and "test accuracy" in out
    assert f'path = "{conf / "d.csv"}"' in (tmp_path / "run" / "config.toml").read_text()  # evaluate works anywhere


def test_a_missing_csv_names_the_key_and_the_absolute_path(tmp_path, monkeypatch, capsys):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "c.toml").write_text('[data]\nname = "csv"\npath = "nope.csv"\n')
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["train", "--config", "conf/c.toml", "--out", "run", "--no-progress"], capsys)
    assert code == 1
    assert f"data.path: CSV file not found: {tmp_path / 'conf' / 'nope.csv'}" in one_line(err)


def test_the_implicit_label_column_is_named(tmp_path, caplog):
    p = tmp_path / "d.csv"
    p.write_text(CSV)
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(DataConfig(name="csv", path=str(p)))
    assert ds.n_classes == 2
    assert "data.label not set; using the last column, 'label', as the label (2 classes)" in caplog.text


@pytest.mark.parametrize("label, message", [
    (None, "data.label (not set, so the last column, 'f3'): column 'f3' holds 40 distinct float values; "
           "name the label column with data.label"),
    ("f3", "data.label = 'f3': column 'f3' holds 40 distinct float values; a label column holds classes"),
    ("id", "data.label = 'id': column 'id' holds 40 distinct values in 40 rows, too many for class labels"),
])
def test_a_float_or_many_valued_label_column_is_refused(tmp_path, label, message):
    p = tmp_path / "d.csv"
    p.write_text("id,f1,f2,f3\n" + "".join(f"{i},{i % 3},{i % 2},{i * 0.37:.2f}\n" for i in range(40)))
    with pytest.raises(DataError) as exc:
        load_dataset(DataConfig(name="csv", path=str(p), label=label))
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_csv_messages_give_the_1_based_line_in_the_file(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,label\n\n1,2,0\n\n3,abc,1\n")  # blank lines count
    with pytest.raises(DataError, match=r"d\.csv: line 5: non-numeric feature value 'abc' \(column 'b'\)"):
        load_dataset(DataConfig(name="csv", path=str(p), label="label"))
    p.write_text('a,b,label\n1,2,"x\ny"\n3,4\n')  # a quoted field spanning two lines
    with pytest.raises(DataError, match=r"d\.csv: line 4: 2 columns, expected 3 \(as on line 1\)"):
        load_dataset(DataConfig(name="csv", path=str(p), label="label"))


def test_the_fashion_mnist_config_without_the_data_says_how_to_get_it(tmp_path, capsys):
    missing = tmp_path / "fashion-mnist"
    code, _, err = cli(["train", "--config", ROOT / "configs" / "fashion-mnist.toml", "--out", tmp_path / "run",
                        "--set", f'data.path="{missing}"', "--no-progress"], capsys)
    assert code == 1
    line = one_line(err)
    assert f"data.path: IDX directory not found: {missing}" in line
    assert "apt-get install dataset-fashion-mnist" in line and "data.url" in line


# ---- item 8: --resume without a checkpoint -----------------------------------------------------

def test_resume_without_a_checkpoint_warns_and_trains(tmp_path, capsys):
    (tmp_path / "c.toml").write_text(BASE)
    code, out, err = cli(["train", "--config", tmp_path / "c.toml", "--out", tmp_path / "run", "--resume",
                          "--no-progress"], capsys)
    assert code == 0 and "test accuracy" in out
    assert err == f"localstdp: warning: no checkpoint in {tmp_path / 'run'}: starting from scratch\n"
    assert (tmp_path / "run" / "metrics.json").exists()


# ---- item 9: --nproc 0 and usage errors under torchrun ------------------------------------------

@pytest.mark.parametrize("n", ["0", "-2"])
def test_nproc_below_one_is_a_usage_error(n, tmp_path, capsys):
    (tmp_path / "c.toml").write_text(BASE)
    code, _, err = cli(["train", "--config", tmp_path / "c.toml", "--out", tmp_path / "run", "--nproc", n], capsys)
    assert code == 2
    assert f"argument --nproc: must be >= 1, got {n}" in one_line(err)
    assert not (tmp_path / "run").exists()


def _torchrun_env(monkeypatch, rank: int, world: int = 3) -> None:
    for k, v in {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": world, "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": "29999"}.items():
        monkeypatch.setenv(k, str(v))


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_a_usage_error_under_torchrun_is_printed_by_rank_0_alone(rank, tmp_path, monkeypatch, capsys):
    (tmp_path / "c.toml").write_text(BASE)  # hidden = [4]: two layers, three ranks
    _torchrun_env(monkeypatch, rank)
    code, _, err = cli(["train", "--config", tmp_path / "c.toml", "--out", tmp_path / "run", "--parallel", "pipeline",
                        "--no-progress"], capsys)
    assert code == 2
    if rank == 0:
        assert "--parallel pipeline with 3 processes needs at least 3 layers" in one_line(err)
    else:
        assert err == ""
    code, _, err = cli(["train", "--config", tmp_path / "c.toml"], capsys)  # argparse: --out missing
    assert code == 2 and (err == "" if rank else "required: --out" in one_line(err))


# ---- item 10: evaluate ---------------------------------------------------------------------------

def test_evaluate_reports_per_class_accuracy_and_a_confusion_matrix(tmp_path, capsys):
    run = trained(tmp_path, capsys)
    metrics = json.loads((run / "metrics.json").read_text())
    code, out, _ = cli(["evaluate", "--run", run, "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    # the same numbers as metrics.json, to the last digit (not a float32 mean)
    for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
        assert res[key] == metrics[key]
    assert res["n_examples"] == {"train": metrics["n_train"], "val": metrics["n_val"], "test": metrics["n_test"]}
    assert res["split"] == "test" and res["accuracy"] == res["test_accuracy"] and res["classes"] == [1, 2]
    m = res["confusion_matrix"]
    assert sum(map(sum, m)) == metrics["n_test"] and (m[0][0] + m[1][1]) / metrics["n_test"] == res["accuracy"]
    assert [c["n"] for c in res["per_class"]] == [sum(r) for r in m]
    assert [c["accuracy"] for c in res["per_class"]] == [m[k][k] / sum(m[k]) for k in range(2)]

    code, out, err = cli(["evaluate", "--run", run, "--split", "val", "--plot", tmp_path / "cm" / "val.png"], capsys)
    assert code == 0 and f"wrote {tmp_path / 'cm' / 'val.png'}" in err
    assert (tmp_path / "cm" / "val.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"val split, {metrics['n_val']} examples" in out and "confusion matrix (rows: true class" in out
    assert f"(examples: train {metrics['n_train']}, val {metrics['n_val']}, test {metrics['n_test']})" in out


def test_evaluate_names_model_safetensors_a_model_and_refuses_a_missing_split(tmp_path, capsys):
    run = trained(tmp_path, capsys, BASE.replace("classes = [1, 2]", "classes = [1, 2]\nval_fraction = 0"))
    code, _, err = cli(["evaluate", "--run", run, "--split", "val"], capsys)
    assert code == 2 and "--split val" in one_line(err) and "data.val_fraction = 0" in err
    (run / "model.safetensors").write_bytes(b"")
    code, _, err = cli(["evaluate", "--run", run], capsys)
    assert code == 1 and "checkpoint" not in one_line(err) and "expected a safetensors model file" in err


# ---- item 11: one prefix, --debug keeps the exit status ---------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["evaluate"], "the following arguments are required: --run (see `localstdp evaluate --help`)"),
    (["train", "--config", "c.toml", "--out", "r", "--rule", "bp"], "argument --rule: invalid choice: 'bp'"),
    (["bench", "--repeats", "x"], "argument --repeats: invalid int value: 'x'"),
])
def test_argparse_errors_inside_a_subcommand_have_the_one_prefix(argv, message, capsys):
    code, _, err = cli(argv, capsys)
    assert code == 2 and message in one_line(err)


def test_debug_keeps_the_exit_status_of_a_runtime_error(tmp_path, capsys):
    code, _, err = cli(["--debug", "evaluate", "--run", tmp_path / "nothing"], capsys)
    assert code == 1 and "Traceback" in err
    assert err.rstrip().splitlines()[-1] == f"localstdp: error: run directory not found: {tmp_path / 'nothing'}"


# ---- item 13: memory ---------------------------------------------------------------------------

@pytest.mark.parametrize("change, key", [
    (("hidden = [4]", "hidden = [100000, 100000]"), "model.hidden = [100000, 100000]"),
    (("batch_size = 16", "batch_size = 100000000"), "train.batch_size = 100000000"),
])
def test_a_network_or_batch_that_cannot_fit_is_one_line_before_allocating(change, key, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(resources, "available_bytes", lambda: 2**30)  # 1 GiB free
    (tmp_path / "c.toml").write_text(BASE.replace(*change))
    code, _, err = cli(["train", "--config", tmp_path / "c.toml", "--out", tmp_path / "run", "--no-progress"], capsys)
    assert code == 1
    line = one_line(err)
    assert f"not enough memory: {key}" in line and "GiB" in line and "but 1.0 GiB is available" in line
    assert not (tmp_path / "run" / "config.toml").exists()  # stopped before the run started


def test_the_estimate_counts_weights_and_the_largest_batch():
    weights, activity = resources.estimate_bytes(784, [1000], 10, 32, 60000)
    assert weights == 4 * 4 * (784 * 1000 + 1000 + 1000 * 10 + 10)
    assert activity == 4096 * (784 + 1000 + 10) * 4 * 3  # evaluation forwards 4096 examples at a time
    assert resources.available_bytes() is None or resources.available_bytes() > 0


def test_the_cnn_estimate_counts_conv_layers_their_patches_and_the_evaluation_chunk():
    """A CNN's estimate from its layers (built on the meta device), against a hand count: 8x8 digits, one conv
    of 4 channels 3x3 padding 1 pooled by 2, dense 16, 10 classes."""
    from localstdp.config import config_from_dict

    cfg = config_from_dict({"data": {"name": "digits"}, "model": {
        "kind": "cnn", "conv": [{"channels": 4, "kernel": 3, "padding": 1, "pool": 2}], "hidden": [16]},
        "train": {"batch_size": 8}})
    weights, activity = resources.estimate_cnn_bytes(cfg.model, 64, 10, 8, 1000)
    params = (4 * 1 * 3 * 3 + 4) + (4 * 4 * 4 * 16 + 16) + (16 * 10 + 10)
    assert weights == params * 4 * 4
    # outputs per example: input 64, image 64, conv 256, sigmoid 256, pool 64, flatten 64, 16, 16, 10
    sizes = [64, 64, 256, 256, 64, 64, 16, 16, 10]
    train = 8 * (sum(sizes) * 3 + 1 * 9 * 64)  # + the unfolded patches: C_in k k x 8 x 8 positions
    evaluate = 1000 * (256 + 256)  # no gradients: the largest two consecutive outputs, 1000 examples
    assert activity == max(train, evaluate) * 4


def test_a_cnn_that_cannot_fit_is_one_line_naming_its_conv_layers(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(resources, "available_bytes", lambda: 2**30)  # 1 GiB free
    (tmp_path / "c.toml").write_text('[data]\nname = "digits"\n[model]\nkind = "cnn"\n'
                                     'conv = [{channels = 100000, kernel = 3, padding = 1}]\nhidden = [8]\n'
                                     '[train]\nepochs = 1\n')
    code, _, err = cli(["train", "--config", tmp_path / "c.toml", "--out", tmp_path / "run", "--no-progress"], capsys)
    assert code == 1
    line = one_line(err)
    assert "not enough memory: model.conv" in line and "but 1.0 GiB is available" in line
    assert not (tmp_path / "run" / "config.toml").exists()


def test_an_allocator_failure_is_one_line(tmp_path, monkeypatch, capsys):
    import localstdp.train

    def oom(*a, **kw):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 80000000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(localstdp.train, "train", oom)
    (tmp_path / "c.toml").write_text(BASE)
    code, _, err = cli(["train", "--config", tmp_path / "c.toml", "--out", tmp_path / "run"], capsys)
    assert code == 1
    line = one_line(err)
    assert "out of memory: data. DefaultCPUAllocator: can't allocate memory" in line
    assert "reduce model.hidden or train.batch_size" in line

    monkeypatch.setattr(localstdp.train, "train", lambda *a, **kw: [][1])  # a bug stays a traceback
    with pytest.raises(IndexError):
        main(["train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "run")])


# ---- item 3: bench never replaces committed files by default -------------------------------------------

def test_bench_defaults_write_into_bench_out():
    args = build_parser().parse_args(["bench"])
    assert args.out == "bench-out/bench.json" and args.md == "bench-out/BENCHMARKS.md"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_bench_refuses_to_replace_a_tracked_file_without_force(tmp_path, monkeypatch, capsys):
    import localstdp.bench

    def no_run(**kw):
        raise AssertionError("measured although the output would be refused")

    monkeypatch.setattr(localstdp.bench, "run_bench", no_run)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    committed = tmp_path / "BENCHMARKS.md"
    committed.write_text("the committed analysis\n")
    (tmp_path / "bench.json").write_text("{}")
    subprocess.run(["git", "add", "BENCHMARKS.md", "bench.json"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)

    code, _, err = cli(["bench", "--quick", "--out", "bench.json"], capsys)
    assert code == 2 and "bench: bench.json is tracked by git; pass --force" in one_line(err)
    src = ROOT / "benchmarks" / "bench.json"
    code, _, err = cli(["bench", "--report", src, "--md", "BENCHMARKS.md"], capsys)
    assert code == 2 and "BENCHMARKS.md is tracked by git" in one_line(err)
    assert committed.read_text() == "the committed analysis\n"

    code, out, _ = cli(["bench", "--report", src], capsys)  # the default: a new, untracked directory
    assert code == 0 and (tmp_path / "bench-out" / "BENCHMARKS.md").exists()
    assert (tmp_path / "bench-out" / "bench_width.png").exists()
    code, out, _ = cli(["bench", "--report", src, "--md", "BENCHMARKS.md", "--force"], capsys)
    assert code == 0 and committed.read_text() != "the committed analysis\n"


def test_without_git_bench_refuses_any_existing_file(tmp_path, monkeypatch, capsys):
    import localstdp.cli.bench

    def no_git(*a, **kw):
        raise FileNotFoundError("git")

    monkeypatch.setattr(localstdp.cli.bench.subprocess, "run", no_git)
    (tmp_path / "old.json").write_text("{}")
    code, _, err = cli(["bench", "--out", tmp_path / "old.json"], capsys)
    assert code == 2 and "exists (git cannot tell whether it is committed); pass --force" in one_line(err)
