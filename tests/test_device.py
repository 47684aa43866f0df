"""`train --device`: cpu by default, auto picks CUDA only where there is one, cuda is refused in one
line without a GPU, and a CPU run is the same whichever way it was asked for."""

from __future__ import annotations

import pytest
import torch

from localstdp.cli import main
from localstdp.config import config_from_dict
from localstdp.errors import LocalSTDPError
from localstdp.resources import resolve_device
from localstdp.train import train

CFG = {"data": {"name": "iris", "classes": [1, 2]}, "model": {"hidden": [4]}, "train": {"epochs": 2, "batch_size": 16}}


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(LocalSTDPError, match="expected one of cpu, cuda, auto"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    (tmp_path / "c.toml").write_text('[data]\nname = "iris"\nclasses = [1, 2]\n[train]\nepochs = 1\n')
    code = main(["train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "run"), "--device", "cuda",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "no CUDA GPU" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto means cuda here")
@pytest.mark.parametrize("method", ["local", "backprop"])
def test_auto_on_a_cpu_machine_equals_the_default(method):
    cfg = config_from_dict(CFG)
    a, b = train(cfg, method), train(cfg, method, device="auto")
    assert a["test_accuracy"] == b["test_accuracy"]
    assert all(torch.equal(u, v) for u, v in zip(a["model"].state_dict().values(), b["model"].state_dict().values()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", ["local", "backprop"])
def test_cuda_run_matches_the_cpu_run_and_returns_a_cpu_model(method, tmp_path):
    cfg = config_from_dict(CFG)
    gpu, cpu = train(cfg, method, tmp_path / method, device="cuda"), train(cfg, method)
    assert next(gpu["model"].parameters()).device.type == "cpu"
    for u, v in zip(gpu["model"].state_dict().values(), cpu["model"].state_dict().values()):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)  # the same steps, another device's rounding
