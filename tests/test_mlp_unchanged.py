"""Every shipped MLP config trains to the same weights as before the local rule became a user of the
per-layer machinery it shares with LocalLearner (issue 13).

The numbers below were recorded at commit 0c260f1 (before the change) by this very function: test
accuracy, validation accuracy and the sha256 of the final state_dict after ``train(cfg, "local")`` with
the epochs given, one thread. Accuracies are compared everywhere; the weight hash only on a
platform it was recorded on (another CPU's BLAS may round differently). The machine-independent
check is tests/test_learner.py, which runs today's learners next to the frozen pre-change rule.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch

from localstdp.config import load_config
from localstdp.data import load_dataset
from localstdp.train import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECORDED = {  # name: (epochs, training-set limit, test accuracy, validation accuracy)
    "iris": (10, None, 0.5, 0.5238095238095238),
    "mnist-0v1": (3, None, 1.0, 1.0),
    "mnist-3v5": (5, None, 0.9166666666666666, 0.9238095238095239),
    "mnist-4v9": (5, None, 0.9566666666666667, 0.9523809523809523),
    "digits": (5, None, 0.7796296296296297, 0.783068783068783),
    "mnist-10": (2, None, 0.8773333333333333, 0.8857142857142857),
    "fashion-mnist": (2, 2000, 0.749, 0.754),
}
# sha256 of the weights, per platform: (torch version, CPU capability, whether the CPU has AMX tiles).
# The first set was recorded at 0c260f1 on an AVX512 machine; a 2026-12 machine of the same kind with
# AMX ("Intel(R) Xeon(R) Processor", amx_tile) rounds differently: every hash differs there while the
# accuracies agree, and its hashes were recorded on that machine from the same code (the package move
# left them unchanged). That the first machine lacked AMX is an assumption: its flags were not kept.
HASHES = {
    ("2.13.0+cpu", "AVX512", False): {
        "iris": "794a7c01beef75100236b8e1da829b3472008d85013072b1083e7a789206afd2",
        "mnist-0v1": "081eb23076c0ccbaf5680ef52c96a320882e086ec16e595ccf32e03c64279fa2",
        "mnist-3v5": "7b830d32508e4d2c384509f94a5d75690cdcbb050f5061b83b770e7dd5f4ce05",
        "mnist-4v9": "07194259324b4643434aeaaebd4951c3043580336184896e7e984a08395084f7",
        "digits": "776de193d3bc6ed1bae4a86e9c481109623b77099abd988eac19da3545e9f871",
        "mnist-10": "4a5474fc22e20c08623d30499a114d209cb2265b5c50725632aeed2cf81793dd",
        "fashion-mnist": "d07518209c35b2a6ffe01a427b2f06f14d72ac212f39f7b335537ae9a93493c5",
    },
    ("2.13.0+cpu", "AVX512", True): {
        "iris": "bb9bc94085051e088f34f0ff5b2900e478794a6b1bd3caec0c115af485c1292b",
        "mnist-0v1": "9ec1ac8631adbed7f0e9ac57a0c97478738f2f996de71b3dab0aeade7564372a",
        "mnist-3v5": "3eb161284c92621f85a865c1a6969bb1bdda66971d1402b876bd493cfd21786a",
        "mnist-4v9": "f4fb3d43809f77b9f6ba1c134c8eb9779ee5d4afbf8569dbfc5ffd40d0715c0d",
        "digits": "42fa793e5670c99003ad9e708b98a4c6dd75f94f36b337fa43bced7bd60999ff",
        "mnist-10": "d6aa34aa87dacabf4dfee9eb76e98f5501dc550055574f19703e8db516344a7a",
    },
}


def platform() -> tuple[str, str, bool]:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return torch.__version__, torch.backends.cpu.get_cpu_capability(), "amx_tile" in flags


def fingerprint(name: str, epochs: int, limit: int | None) -> tuple[float, float, str]:
    cfg = load_config(CONFIGS / f"{name}.toml").with_overrides(epochs=epochs)
    if name == "fashion-mnist":  # recorded with eta 0.5; the config's eta has since been re-chosen on validation
        cfg = cfg.with_overrides(lr=0.5)
    if name == "mnist-4v9":  # recorded with eta 0.05; re-chosen (0.1) by tune's fixed tie rule since
        cfg = cfg.with_overrides(lr=0.05)
    ds = load_dataset(cfg.data)
    if limit:  # the first examples of every split
        ds = dataclasses.replace(ds, x_train=ds.x_train[:limit], y_train=ds.y_train[:limit],
                                 x_val=ds.x_val[: limit // 4], y_val=ds.y_val[: limit // 4],
                                 x_test=ds.x_test[: limit // 2], y_test=ds.y_test[: limit // 2])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        m = train(cfg, "local", dataset=ds)
    finally:
        torch.set_num_threads(threads)
    h = hashlib.sha256()
    for key, value in m["model"].state_dict().items():
        h.update(key.encode())
        h.update(value.detach().contiguous().numpy().tobytes())
    return m["test_accuracy"], m["val_accuracy"], h.hexdigest()


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "fashion-mnist" else n for n in RECORDED])
def test_shipped_mlp_configs_train_as_before(name):
    epochs, limit, test_acc, val_acc = RECORDED[name]
    if name == "fashion-mnist" and not Path(load_config(CONFIGS / f"{name}.toml").data.path).is_dir():
        pytest.skip("the Fashion-MNIST IDX files are not installed")
    got = fingerprint(name, epochs, limit)
    assert got[:2] == (test_acc, val_acc)
    digest = HASHES.get(platform(), {}).get(name)
    if digest is not None:
        assert got[2] == digest
