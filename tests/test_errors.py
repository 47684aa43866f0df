"""Every bad input a user can give gets ONE clear line on stderr, the right exit status and no
traceback (issue 6). One table, one row per case: the files a row writes, the argv it runs,
the exit status and a piece of the message it must print; an optional ``prepare`` step (an earlier
run, a monkeypatch) and ``check`` step (what must be left on disk afterwards).

Exit statuses: 2 for usage and configuration errors, 1 for runtime errors (data, output,
checkpoints, divergence). Rows run in-process through ``localstdp.cli.main`` (fast); the
process-level behaviour (``python -m localstdp``, signals) is covered in tests/test_resume.py.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from localstdp.checkpoint import load_checkpoint, save_checkpoint
from localstdp.cli import main
from localstdp.errors import ConfigError

# A tiny, fast run: IRIS versicolor vs virginica, one hidden layer of 4, two epochs.
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


def toml(extra: str = "", base: str = BASE) -> str:
    """BASE with ``extra`` lines merged into its tables (a later key in a table overrides nothing:
    rows only add keys BASE lacks, or pass their own ``base``)."""
    return base + "\n" + extra


def idx_bytes(arr: np.ndarray, magic_type: int = 0x08) -> bytes:
    return bytes([0, 0, magic_type, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def idx_files(train_labels=(0, 1, 2) * 6, test_labels=(0, 1, 2) * 3) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    tr, te = np.array(train_labels), np.array(test_labels)
    return {
        "idx/train-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (len(tr), 3, 3))),
        "idx/train-labels-idx1-ubyte": idx_bytes(tr),
        "idx/t10k-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (len(te), 3, 3))),
        "idx/t10k-labels-idx1-ubyte": idx_bytes(te),
    }


IDX_CFG = '[data]\nname = "idx"\npath = "{tmp}/idx"\n[model]\nhidden = [4]\n[train]\nepochs = 1\n'
CSV_CFG = '[data]\nname = "csv"\npath = "{tmp}/d.csv"\nlabel = "label"\n[model]\nhidden = [4]\n[train]\nepochs = 1\n'
GOOD_CSV = "a,b,label\n" + "".join(f"{i},{i % 3},{'xy'[i % 2]}\n" for i in range(20))


def train_argv(*extra: str, cfg: str = "c.toml", out: str = "run") -> list[str]:
    return ["train", "--config", "{tmp}/" + cfg, "--out", "{tmp}/" + out, "--no-progress", *extra]


def finished_run(tmp: Path, rule: str = "local", cfg: str = BASE, out: str = "run") -> Path:
    """A finished run directory (trained in-process, two epochs) for the checkpoint rows."""
    (tmp / "good.toml").write_text(cfg)
    code = main(["train", "--config", str(tmp / "good.toml"), "--out", str(tmp / out), "--rule", rule, "--no-progress"])
    assert code == 0
    return tmp / out


def retensor(path: Path, change: Callable[[dict, dict], None]) -> None:
    """Rewrite a checkpoint through the library's own writer after ``change(tensors, meta)``."""
    tensors, meta = load_checkpoint(path)
    change(tensors, meta)
    save_checkpoint(path, tensors, meta)


def disk_full(monkeypatch, only: str = "") -> None:
    """Writes of the atomic writer to files whose name contains ``only`` fail as on a full disk,
    after the temporary file was created (so the test also sees that it is removed)."""
    import localstdp.checkpoint as ckpt

    real_fdopen, real_mkstemp, names = ckpt.os.fdopen, ckpt.tempfile.mkstemp, {}

    def mkstemp(*a, **kw):
        fd, name = real_mkstemp(*a, **kw)
        names[fd] = name
        return fd, name

    def fdopen(fd, mode):
        fh = real_fdopen(fd, mode)
        return Full(fh) if fd in names and only in Path(names.pop(fd)).name else fh

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def fileno(self):
            return self.fh.fileno()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(ckpt.os, "fdopen", fdopen)


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir())}


@dataclass
class Row:
    id: str
    argv: list[str]
    code: int
    message: str  # must appear in the one-line message ({tmp} is substituted)
    files: dict[str, str | bytes] | None = None
    prepare: Callable | None = None  # prepare(tmp, monkeypatch) -> anything passed to check
    check: Callable | None = None  # check(tmp, prepared)


def _nan_after_two_epochs(tmp, monkeypatch):
    """Divergence in epoch 3 of a 4-epoch run: the weights turn NaN after the 2nd epoch's last step."""
    from localstdp.rules.local import LocalRule

    real_step, calls = LocalRule.step, []

    def step(self, x, y):
        loss = real_step(self, x, y)
        calls.append(1)
        if len(calls) > 2 * 6:  # IRIS pair: 59 training examples (after the validation split), batches of 10 -> 6 per epoch
            with torch.no_grad():
                self.model.layers[0].weight[0, 0] = float("nan")
        return loss

    monkeypatch.setattr(LocalRule, "step", step)


def _last_good_kept(tmp, _):
    run = tmp / "run"
    tensors, meta = load_checkpoint(run / "checkpoint.safetensors")
    assert meta["epoch"] == 2 and meta["step"] == 0
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model."))
    assert not (run / "metrics.json").exists() and not (run / "model.safetensors").exists()


def _no_results(tmp, _):
    assert not (tmp / "run" / "metrics.json").exists()
    assert not (tmp / "run" / "model.safetensors").exists()
    assert not list((tmp / "run").glob(".*.tmp"))


def _disk_full_after_run(tmp, monkeypatch):
    run = finished_run(tmp)
    before = snapshot(run)
    disk_full(monkeypatch)
    return before


def _previous_files_intact(tmp, before):
    run = tmp / "run"
    assert snapshot(run) == before  # same names (no temp file left) and same bytes


def _checkpoint_disk_full_after_run(tmp, monkeypatch):
    run = finished_run(tmp)
    before = snapshot(run)
    disk_full(monkeypatch, only="checkpoint")
    return before


def _checkpoint_intact(tmp, before):
    after = snapshot(tmp / "run")
    assert sorted(after) == sorted(before)  # no temporary file left behind
    assert "epochs = 3" in after["config.toml"].decode()  # config.toml could still be written
    for name in ("checkpoint.safetensors", "model.safetensors", "metrics.json"):
        assert after[name] == before[name]
    assert load_checkpoint(tmp / "run" / "checkpoint.safetensors")[1]["epoch"] == 2


def _shape_mismatch(tmp, monkeypatch):
    run = finished_run(tmp)
    # the checkpoint keeps its metadata (the config says hidden = [4]) but holds a wider layer
    retensor(run / "checkpoint.safetensors", lambda t, m: t.update({
        "model.layers.0.weight": torch.zeros(8, 4), "model.layers.0.bias": torch.zeros(8)}))
    retensor(run / "model.safetensors", lambda t, m: t.update({"model.layers.1.weight": torch.zeros(2, 5)}))


def _nan_in_checkpoint(tmp, monkeypatch):
    run = finished_run(tmp)
    retensor(run / "model.safetensors", lambda t, m: t["model.layers.1.bias"].fill_(float("nan")))


def _pickled_model(tmp, monkeypatch):
    run = finished_run(tmp)
    torch.save({"model.layers.0.weight": torch.zeros(4, 4)}, run / "model.safetensors")


def _plain_pickle(tmp, monkeypatch):
    run = finished_run(tmp)
    (run / "model.safetensors").write_bytes(pickle.dumps({"x": 1}, protocol=0))


def _truncated(name):
    def prepare(tmp, monkeypatch):
        run = finished_run(tmp)
        raw = (run / name).read_bytes()
        (run / name).write_bytes(raw[: len(raw) // 2])
    return prepare


def _foreign_safetensors(tmp, monkeypatch):
    from safetensors.torch import save_file

    run = finished_run(tmp)
    save_file({"w": torch.zeros(2)}, str(run / "model.safetensors"))


def _missing_model(tmp, monkeypatch):
    (finished_run(tmp) / "model.safetensors").unlink()


def _missing_model_and_checkpoint(tmp, monkeypatch):
    run = finished_run(tmp)
    (run / "model.safetensors").unlink()
    (run / "checkpoint.safetensors").unlink()


def _finished_backprop(tmp, monkeypatch):
    finished_run(tmp, rule="backprop")


def _finished_local(tmp, monkeypatch):
    finished_run(tmp)


ROWS = [
    # ---- configuration: exit 2 -------------------------------------------------------------
    Row("config-missing-file", train_argv(cfg="nope.toml"), 2, "config file not found: {tmp}/nope.toml"),
    Row("config-is-directory", train_argv(cfg="d"), 2, "config path is a directory", files={"d/x": ""}),
    Row("config-toml-syntax", train_argv(), 2, "invalid TOML", files={"c.toml": "[data\nname = 'iris'\n"}),
    Row("config-not-utf8", train_argv(), 2, "cannot read config", files={"c.toml": b"\xff\xfe[data]"}),
    Row("config-unknown-key", train_argv(), 2, "unknown key train.epoch (did you mean 'epochs'?)",
        files={"c.toml": BASE.replace("epochs = 2", "epoch = 2")}),
    Row("config-unknown-section", train_argv(), 2, "unknown section [trian] (did you mean 'train'?)",
        files={"c.toml": BASE.replace("[train]", "[trian]")}),
    Row("config-unknown-rule-key", train_argv(), 2, "unknown key rule.a_high (did you mean 'a_hi'?)",
        files={"c.toml": toml("[rule]\na_high = 0.9")}),
    Row("config-missing-data-name", train_argv(), 2, "data.name is required", files={"c.toml": "[train]\nepochs = 1\n"}),
    Row("config-wrong-type", train_argv(), 2, "train.epochs = '2': expected int",
        files={"c.toml": BASE.replace("epochs = 2", 'epochs = "2"')}),
    Row("config-wrong-type-list", train_argv(), 2, "model.hidden = 4: expected list[int]",
        files={"c.toml": BASE.replace("hidden = [4]", "hidden = 4")}),
    Row("config-negative-lr", train_argv(), 2, "train.lr = -0.5: expected a learning rate > 0",
        files={"c.toml": BASE.replace("epochs = 2", "epochs = 2\nlr = -0.5")}),
    Row("config-nan-lr", train_argv(), 2, "train.lr = nan", files={"c.toml": BASE.replace("epochs = 2", "epochs = 2\nlr = nan")}),
    Row("config-inf-backprop-lr", train_argv(), 2, "backprop.lr = inf: expected a finite learning rate > 0",
        files={"c.toml": toml("[backprop]\nlr = inf")}),
    Row("config-zero-epochs", train_argv(), 2, "train.epochs = 0: expected an integer >= 1",
        files={"c.toml": BASE.replace("epochs = 2", "epochs = 0")}),
    Row("config-zero-batch", train_argv(), 2, "train.batch_size = 0: expected an integer >= 1",
        files={"c.toml": BASE.replace("batch_size = 16", "batch_size = 0")}),
    Row("config-empty-layers", train_argv(), 2, "model.hidden is empty",
        files={"c.toml": BASE.replace("hidden = [4]", "hidden = []")}),
    Row("config-zero-width-layer", train_argv(), 2, "model.hidden = [4, 0]: every layer needs a width >= 1",
        files={"c.toml": BASE.replace("hidden = [4]", "hidden = [4, 0]")}),
    Row("config-rule-out-of-range", train_argv(), 2, "rule.a_lo = 0.95: expected a value in [0, a_hi)",
        files={"c.toml": toml("[rule]\na_lo = 0.95")}),
    Row("config-bad-fraction", train_argv(), 2, "data.test_fraction = 1.5",
        files={"c.toml": BASE.replace("classes = [1, 2]", "classes = [1, 2]\ntest_fraction = 1.5")}),
    # ---- data -------------------------------------------------------------------------------
    Row("data-unknown-dataset", train_argv(), 2, "data.name = 'cifar': expected one of",
        files={"c.toml": BASE.replace('name = "iris"', 'name = "cifar"')}),
    Row("data-path-required", train_argv(), 2, "data.path is required for data.name = 'csv'",
        files={"c.toml": BASE.replace('name = "iris"', 'name = "csv"')}),
    Row("data-label-does-not-exist", train_argv(), 1, "iris: data.classes [7] not among the labels (0, 1, 2)",
        files={"c.toml": BASE.replace("classes = [1, 2]", "classes = [1, 7]")}),
    Row("data-same-class-twice", train_argv(), 2, "data.classes = [1, 1]: a label is listed twice",
        files={"c.toml": BASE.replace("classes = [1, 2]", "classes = [1, 1]")}),
    Row("data-one-class-listed", train_argv(), 2, "data.classes = [1]: expected at least two labels",
        files={"c.toml": BASE.replace("classes = [1, 2]", "classes = [1]")}),
    Row("idx-ok-control", train_argv(), 0, "", files={"c.toml": IDX_CFG, **idx_files()}),
    Row("idx-truncated", train_argv(), 1, "{tmp}/idx/train-images-idx3-ubyte: truncated",
        files={"c.toml": IDX_CFG, **idx_files(),
               "idx/train-images-idx3-ubyte": idx_files()["idx/train-images-idx3-ubyte"][:-5]}),
    Row("idx-truncated-header", train_argv(), 1, "truncated IDX header",
        files={"c.toml": IDX_CFG, **idx_files(), "idx/t10k-labels-idx1-ubyte": b"\x00\x00\x08\x01\x00"}),
    Row("idx-wrong-magic", train_argv(), 1, "{tmp}/idx/t10k-labels-idx1-ubyte: not an IDX file (bad magic number",
        files={"c.toml": IDX_CFG, **idx_files(), "idx/t10k-labels-idx1-ubyte": b"PK\x03\x04" + bytes(20)}),
    Row("idx-gzip-corrupt", train_argv(), 1, "cannot read or decompress",
        files={"c.toml": IDX_CFG, **{k + (".gz" if "t10k-labels" in k else ""): v for k, v in idx_files().items()}}),
    Row("idx-missing-file", train_argv(), 1, "missing IDX file t10k-images-idx3-ubyte",
        files={"c.toml": IDX_CFG, **{k: v for k, v in idx_files().items() if "t10k-images" not in k}}),
    Row("idx-missing-directory", train_argv(), 1, "IDX directory not found: {tmp}/idx", files={"c.toml": IDX_CFG}),
    Row("idx-count-mismatch", train_argv(), 1, "train has 18 images but 9 labels",
        files={"c.toml": IDX_CFG, **idx_files(),
               "idx/train-labels-idx1-ubyte": idx_bytes(np.array((0, 1, 2) * 3))}),
    Row("idx-empty-after-filtering", train_argv(), 1, "(test): no examples left after keeping classes [0, 2]",
        files={"c.toml": IDX_CFG.replace('[model]', 'classes = [0, 2]\n[model]'),
               **idx_files(test_labels=(1,) * 6)}),
    Row("csv-ok-control", train_argv(), 0, "", files={"c.toml": CSV_CFG, "d.csv": GOOD_CSV}),
    Row("csv-missing-file", train_argv(), 1, "data.path: CSV file not found: {tmp}/d.csv", files={"c.toml": CSV_CFG}),
    Row("csv-text-feature", train_argv(), 1, "{tmp}/d.csv: line 3: non-numeric feature value 'abc'",
        files={"c.toml": CSV_CFG, "d.csv": GOOD_CSV.replace("1,1,y", "abc,1,y")}),
    Row("csv-nan", train_argv(), 1, "{tmp}/d.csv: line 3: non-finite feature value 'nan' (column 'a')",
        files={"c.toml": CSV_CFG, "d.csv": GOOD_CSV.replace("1,1,y", "nan,1,y")}),
    Row("csv-inf", train_argv(), 1, "{tmp}/d.csv: line 4: non-finite feature value '-inf' (column 'b')",
        files={"c.toml": CSV_CFG, "d.csv": GOOD_CSV.replace("2,2,x", "2,-inf,x")}),
    Row("csv-one-class", train_argv(), 1, "fewer than two classes with examples (labels kept: ['x']",
        files={"c.toml": CSV_CFG, "d.csv": GOOD_CSV.replace(",y\n", ",x\n")}),
    Row("csv-header-only", train_argv(), 1, "{tmp}/d.csv: no data rows", files={"c.toml": CSV_CFG, "d.csv": "a,b,label\n"}),
    Row("csv-empty", train_argv(), 1, "{tmp}/d.csv: empty CSV file", files={"c.toml": CSV_CFG, "d.csv": "\n\n"}),
    Row("csv-ragged", train_argv(), 1, "{tmp}/d.csv: line 4: 2 columns, expected 3",
        files={"c.toml": CSV_CFG, "d.csv": GOOD_CSV.replace("2,2,x\n", "2,x\n")}),
    Row("csv-no-label-column", train_argv(), 1, "data.label = 'kind': no column of that name",
        files={"c.toml": CSV_CFG.replace('label = "label"', 'label = "kind"'), "d.csv": GOOD_CSV}),
    Row("csv-class-filter-missing", train_argv(), 1, "data.classes ['z'] not among the labels (x, y)",
        files={"c.toml": CSV_CFG.replace('[model]', 'classes = ["x", "z"]\n[model]'), "d.csv": GOOD_CSV}),
    Row("csv-too-few-to-split", train_argv(), 1, "every class needs at least 2 examples",
        files={"c.toml": CSV_CFG, "d.csv": "a,label\n1,x\n2,y\n3,y\n"}),
    # ---- output -----------------------------------------------------------------------------
    # tests run as root, so chmod cannot make a directory unwritable: put the run under a FILE
    Row("output-under-a-file", train_argv(out="afile/run"), 1, "cannot create output directory {tmp}/afile/run",
        files={"c.toml": BASE, "afile": "not a directory"}),
    Row("output-disk-full", train_argv("--resume", "--epochs", "3"), 1,
        "cannot write {tmp}/run/config.toml: No space left on device (the previous file is kept)",
        files={"c.toml": BASE}, prepare=_disk_full_after_run, check=_previous_files_intact),
    Row("output-disk-full-checkpoint", train_argv("--resume", "--epochs", "3"), 1,
        "cannot write {tmp}/run/checkpoint.safetensors: No space left on device (the previous file is kept)",
        files={"c.toml": BASE}, prepare=_checkpoint_disk_full_after_run, check=_checkpoint_intact),
    # ---- divergence -------------------------------------------------------------------------
    Row("diverge-absurd-lr", train_argv(), 1, "training diverged",
        files={"c.toml": BASE.replace("epochs = 2", "epochs = 2\nlr = 1e39")}, check=_no_results),
    Row("diverge-backprop-overflow", train_argv("--rule", "backprop"), 1, "training diverged: numeric overflow",
        files={"c.toml": toml("[backprop]\nlr = 1e38")}, check=_no_results),
    Row("diverge-keeps-last-good-checkpoint", train_argv(), 1,
        "layers.0.weight became NaN/inf at epoch 3, batch 2; lower the learning rate (the last good checkpoint, "
        "{tmp}/run/checkpoint.safetensors (after epoch 2), is kept)",
        files={"c.toml": BASE.replace("epochs = 2", "epochs = 4").replace("batch_size = 16", "batch_size = 10")},
        prepare=_nan_after_two_epochs, check=_last_good_kept),
    # ---- checkpoints ------------------------------------------------------------------------
    Row("ckpt-run-dir-missing", ["evaluate", "--run", "{tmp}/nothing"], 1, "run directory not found: {tmp}/nothing"),
    Row("ckpt-missing-file", ["evaluate", "--run", "{tmp}/run"], 1, "model file not found: {tmp}/run/model.safetensors",
        prepare=_missing_model_and_checkpoint),
    Row("ckpt-unfinished-run", ["evaluate", "--run", "{tmp}/run"], 1,
        "{tmp}/run has no model.safetensors: the run has not finished (continue it with train --resume)",
        prepare=_missing_model),
    Row("ckpt-torch-save-pickle", ["evaluate", "--run", "{tmp}/run"], 1,
        "{tmp}/run/model.safetensors: looks like a pickle / torch.save file", prepare=_pickled_model),
    Row("ckpt-plain-pickle", ["evaluate", "--run", "{tmp}/run"], 1, "not a valid safetensors model file",
        prepare=_plain_pickle),
    Row("ckpt-truncated-model", ["evaluate", "--run", "{tmp}/run"], 1,
        "{tmp}/run/model.safetensors: not a valid safetensors model file (truncated or corrupt",
        prepare=_truncated("model.safetensors")),
    Row("ckpt-truncated-resume", train_argv("--resume"), 1,
        "{tmp}/run/checkpoint.safetensors: not a valid safetensors checkpoint (truncated or corrupt",
        files={"c.toml": BASE}, prepare=_truncated("checkpoint.safetensors")),
    Row("ckpt-empty-file", ["evaluate", "--run", "{tmp}/run"], 1, "model.safetensors: empty file",
        prepare=lambda tmp, mp: (finished_run(tmp) / "model.safetensors").write_bytes(b"")),
    Row("ckpt-foreign-safetensors", ["evaluate", "--run", "{tmp}/run"], 1, "not a localstdp model file",
        prepare=_foreign_safetensors),
    Row("ckpt-shape-mismatch-resume", train_argv("--resume", "--epochs", "3"), 1,
        "{tmp}/run/checkpoint.safetensors: layers.0.weight has shape (8, 4) but the config's model needs (4, 4)",
        files={"c.toml": BASE}, prepare=_shape_mismatch),
    Row("ckpt-shape-mismatch-evaluate", ["evaluate", "--run", "{tmp}/run"], 1,
        "layers.1.weight has shape (2, 5) but the config's model needs (2, 4)", prepare=_shape_mismatch),
    Row("ckpt-nan-weights", ["evaluate", "--run", "{tmp}/run"], 1, "layers.1.bias contains NaN or inf",
        prepare=_nan_in_checkpoint),
    Row("ckpt-other-config", train_argv("--resume"), 1,
        "written with a different config (model.hidden: checkpoint [4], config [6])",
        files={"c.toml": BASE.replace("hidden = [4]", "hidden = [6]")}, prepare=_finished_local),
    Row("ckpt-other-method", train_argv("--resume"), 1, "a 'backprop' checkpoint cannot resume a 'local' run",
        files={"c.toml": BASE}, prepare=_finished_backprop),
    Row("ckpt-fewer-epochs", train_argv("--resume", "--epochs", "1"), 1,
        "stands at epoch 2, batch 0, which does not fit train.epochs = 1", files={"c.toml": BASE},
        prepare=_finished_local),
    # ---- CLI arguments: exit 2 --------------------------------------------------------------
    Row("cli-no-command", [], 2, "localstdp: error: the following arguments are required: command"),
    Row("cli-unknown-command", ["trian"], 2, "invalid choice: 'trian'"),
    Row("cli-missing-out", ["train", "--config", "{tmp}/c.toml"], 2, "the following arguments are required: --out"),
    Row("cli-unknown-rule", train_argv("--rule", "bp"), 2, "argument --rule: invalid choice: 'bp'", files={"c.toml": BASE}),
    Row("cli-epochs-not-int", train_argv("--epochs", "two"), 2, "argument --epochs: invalid int value: 'two'",
        files={"c.toml": BASE}),
    Row("cli-epochs-zero", train_argv("--epochs", "0"), 2, "train.epochs = 0: expected an integer >= 1",
        files={"c.toml": BASE}),
    Row("cli-negative-seed", train_argv("--seed", "-3"), 2, "train.seed = -3: expected an integer >= 0",
        files={"c.toml": BASE}),
    Row("cli-unknown-option", train_argv("--epoch", "3", "--lr", "1"), 2, "unrecognized arguments",
        files={"c.toml": BASE}),
]


@pytest.fixture
def restore_signals():
    """cmd_train installs SIGINT/SIGTERM handlers; put pytest's back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_gives_one_clear_line(row: Row, tmp_path, capsys, monkeypatch, restore_signals):
    tmp = tmp_path
    for name, content in (row.files or {}).items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content.replace("{tmp}", str(tmp)))
    prepared = row.prepare(tmp, monkeypatch) if row.prepare else None
    capsys.readouterr()
    code, out, err = run_cli([a.replace("{tmp}", str(tmp)) for a in row.argv], capsys)
    assert code == row.code, err
    assert "Traceback" not in err and "Traceback" not in out
    if row.code == 0:  # control rows: the same fixture without the fault trains fine
        assert err == "" and "test accuracy" in out
        return
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert row.message.replace("{tmp}", str(tmp)) in err
    assert err.startswith("localstdp")
    if row.check:
        row.check(tmp, prepared)


def test_every_category_of_the_issue_has_rows():
    prefixes = {r.id.split("-")[0] for r in ROWS}
    assert {"config", "data", "idx", "csv", "output", "diverge", "ckpt", "cli"} <= prefixes


def test_debug_shows_the_traceback_and_keeps_the_exit_status(tmp_path, capsys, restore_signals):
    code = main(["--debug", "train", "--config", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == ConfigError.exit_code == 2
    assert "Traceback" in err and err.rstrip().endswith(f"localstdp: error: config file not found: {tmp_path}/nope.toml")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_stops_at_once_with_128_plus_signal(sig, tmp_path, capsys, monkeypatch, restore_signals):
    """The first signal asks for a checkpoint after the batch; a second one stops at once."""
    import localstdp.train

    def train(*args, should_stop, **kw):
        os.kill(os.getpid(), sig)
        assert should_stop() == sig  # the first signal is only recorded
        os.kill(os.getpid(), sig)  # the second raises inside the handler
        raise AssertionError("not reached")

    monkeypatch.setattr(localstdp.train, "train", train)
    (tmp_path / "c.toml").write_text(BASE)
    code, _, err = run_cli(["train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "r")], capsys)
    assert code == 128 + sig
    first, second = err.splitlines()
    assert first == f"localstdp: signal {int(sig)} received; finishing the batch and writing a checkpoint"
    assert second.startswith(f"localstdp: interrupted by signal {int(sig)} before a checkpoint could be written")
    assert "Traceback" not in err


def test_a_fresh_run_replaces_the_results_of_an_earlier_one(tmp_path, capsys, restore_signals):
    """Training again into a directory (no --resume) must not leave the old metrics beside a new,
    diverged run."""
    finished_run(tmp_path)
    (tmp_path / "c.toml").write_text(BASE.replace("epochs = 2", "epochs = 2\nlr = 1e39"))
    code, _, err = run_cli(["train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "run"),
                            "--no-progress"], capsys)
    assert code == 1 and "training diverged" in err and "no checkpoint was written" in err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.toml"]
    assert "1e+39" in (tmp_path / "run" / "config.toml").read_text()


def test_metrics_never_hold_nan_or_inf(tmp_path, capsys, restore_signals):
    run = finished_run(tmp_path)
    text = (run / "metrics.json").read_text()
    metrics = json.loads(text)
    assert "NaN" not in text and "Infinity" not in text
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and len(metrics["history"]) == 2


def test_files_are_written_with_the_umask_mode(tmp_path, capsys, restore_signals):
    """mkstemp creates 0600 files; the atomic writer gives what open() would (0666 & ~umask)."""
    umask = os.umask(0o022)
    os.umask(umask)
    run = finished_run(tmp_path)
    for p in run.iterdir():
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask
