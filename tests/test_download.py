"""Download, checksum verification and caching (pooch underneath), against a local http.server on
127.0.0.1 and file:// URLs: offline, nothing here leaves the machine."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import logging
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from localstdp.config import DataConfig
from localstdp.data import load_dataset
from localstdp.data.download import (
    KNOWN_CHECKSUMS,
    REGISTRIES,
    cache_subdir,
    digest_kind,
    download_file,
    fetch_idx,
    known_checksums,
)
from localstdp.data.idx import FILES
from localstdp.errors import ConfigError, DataError


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the test directory; paths under /truncated/ promise more bytes than they send."""

    hits: list[str] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        type(self).hits.append(self.path)
        if self.path.startswith("/truncated/"):
            body = (Path(self.directory) / self.path.removeprefix("/truncated/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    handler = type("H", (_Handler,), {"hits": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}", handler.hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def _idx_bytes(arr: np.ndarray) -> bytes:
    code = 0x08
    return bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def _write_idx_set(root: Path, n_train=30, n_test=10, side=4, seed=0) -> list[str]:
    """Four gzipped IDX files with 3 classes; returns their MD5 digests in FILES order."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, side, side)),
        "train_labels": np.arange(n_train) % 3,
        "test_images": rng.integers(0, 256, (n_test, side, side)),
        "test_labels": np.arange(n_test) % 3,
    }
    sums = []
    for key, stem in FILES.items():
        data = gzip.compress(_idx_bytes(np.asarray(arrays[key])), mtime=0)
        (root / (stem + ".gz")).write_bytes(data)
        sums.append(hashlib.md5(data).hexdigest())
    return sums


def test_download_verifies_and_caches(server, tmp_path):
    root, base, hits = server
    payload = bytes(range(256)) * 40
    (root / "blob.bin").write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "cache" / "blob.bin"
    assert download_file(f"{base}/blob.bin", dest, sha) == dest
    assert dest.read_bytes() == payload
    assert len(hits) == 1
    download_file(f"{base}/blob.bin", dest, sha)  # cached: no second request
    assert len(hits) == 1
    dest.write_bytes(b"corrupted")  # a damaged cache entry is fetched again
    download_file(f"{base}/blob.bin", dest, sha)
    assert dest.read_bytes() == payload and len(hits) == 2


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    root, base, _ = server
    (root / "blob.bin").write_bytes(b"hello world")
    dest = tmp_path / "cache" / "blob.bin"
    wrong = hashlib.md5(b"something else").hexdigest()
    with pytest.raises(DataError, match="md5 checksum mismatch"):
        download_file(f"{base}/blob.bin", dest, wrong)
    assert not dest.exists() and not dest.with_name("blob.bin.part").exists()


def test_truncated_download_is_an_error(server, tmp_path):
    root, base, _ = server
    payload = b"x" * 5000
    (root / "blob.bin").write_bytes(payload)
    dest = tmp_path / "cache" / "blob.bin"
    with pytest.raises(DataError, match="truncated download"):
        download_file(f"{base}/truncated/blob.bin", dest, hashlib.md5(payload).hexdigest())
    assert not dest.exists() and not dest.with_name("blob.bin.part").exists()


def test_http_error_and_bad_digest(server, tmp_path):
    _, base, _ = server
    with pytest.raises(DataError, match="HTTP 404"):
        download_file(f"{base}/missing.bin", tmp_path / "m.bin", "0" * 32)
    with pytest.raises(DataError, match="hex digits"):
        download_file(f"{base}/missing.bin", tmp_path / "m.bin", "abc")
    assert digest_kind("a" * 32) == "md5" and digest_kind("a" * 64) == "sha256"


def test_fetch_idx_and_load_dataset_from_url(server, tmp_path):
    root, base, hits = server
    sums = _write_idx_set(root)
    cache = tmp_path / "idxcache"
    cfg = DataConfig(name="idx", url=base + "/", path=str(cache), checksums=sums, val_fraction=0)
    ds = load_dataset(cfg)
    assert ds.x_train.shape == (30, 16) and ds.x_test.shape == (10, 16) and ds.n_classes == 3
    assert ds.y_train.tolist() == (np.arange(30) % 3).tolist()
    assert float(ds.x_train.max()) <= 1.0 and float(ds.x_train.min()) >= 0.0
    assert sorted(p.name for p in cache.iterdir()) == sorted(s + ".gz" for s in FILES.values())
    n = len(hits)
    load_dataset(cfg)  # everything cached
    assert len(hits) == n
    bad = list(sums)
    bad[1] = "f" * 32
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch_idx(base, tmp_path / "other", bad)


def test_known_checksums_and_config_checks():
    assert known_checksums("https://example.org/fashion-mnist/")[0] == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    assert known_checksums("https://example.org/mnist/")[0] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    with pytest.raises(DataError, match="no known checksums"):
        known_checksums("http://127.0.0.1:1/data/")
    assert cache_subdir("https://host.example:8080/a b/c/") == "host.example_8080_a_b_c"
    with pytest.raises(ConfigError, match="only for data.name = 'idx'"):
        DataConfig(name="mnist", url="http://x/")
    with pytest.raises(ConfigError, match="4 digests"):
        DataConfig(name="idx", url="http://x/", checksums=["a" * 32])
    assert DataConfig(name="idx", url="http://x/mnist/").path is None


def test_registries_hold_the_published_digests():
    for name, sums in KNOWN_CHECKSUMS.items():
        assert list(REGISTRIES[name]) == [stem + ".gz" for stem in FILES.values()]
        assert list(REGISTRIES[name].values()) == [f"md5:{d}" for d in sums]
    assert REGISTRIES["mnist"]["train-images-idx3-ubyte.gz"] == "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873"


def test_download_is_quiet_and_a_stale_cache_entry_is_named(server, tmp_path, capfd, caplog):
    root, base, hits = server
    (root / "blob.bin").write_bytes(b"payload")
    dest = tmp_path / "cache" / "blob.bin"
    md5 = hashlib.md5(b"payload").hexdigest()
    download_file(f"{base}/blob.bin", dest, md5)
    assert capfd.readouterr().err == ""  # pooch's own INFO lines stay off stderr
    dest.write_bytes(b"stale")
    with caplog.at_level(logging.WARNING, logger="localstdp.data.download"):
        download_file(f"{base}/blob.bin", dest, md5)
    assert "cached file has the wrong md5 digest; downloading it again" in caplog.text
    assert dest.read_bytes() == b"payload" and len(hits) == 2
    assert sorted(p.name for p in dest.parent.iterdir()) == ["blob.bin"]  # no temporary file left


def test_unreachable_host_is_one_line(tmp_path):
    with socket.socket() as s:  # a port on 127.0.0.1 that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match=rf"^http://127.0.0.1:{port}/x: download failed \(\[Errno \d+\] ") as info:
        download_file(f"http://127.0.0.1:{port}/x", tmp_path / "x", "0" * 32)
    assert "\n" not in str(info.value) and "Max retries" not in str(info.value)
    assert not (tmp_path / "x").exists()


def test_fetch_idx_from_a_file_url(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    sums = _write_idx_set(src)
    cache = tmp_path / "cache"
    assert fetch_idx(src.as_uri(), cache, sums) == cache
    assert [(cache / (s + ".gz")).read_bytes() for s in FILES.values()] == [
        (src / (s + ".gz")).read_bytes() for s in FILES.values()]
    stamp = [(cache / (s + ".gz")).stat().st_mtime_ns for s in FILES.values()]
    (src / "train-images-idx3-ubyte.gz").unlink()  # cached: the source is not read again
    fetch_idx(src.as_uri(), cache, sums)
    assert [(cache / (s + ".gz")).stat().st_mtime_ns for s in FILES.values()] == stamp
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: download failed \(\[Errno 2\] "):
        fetch_idx(src.as_uri(), tmp_path / "other", sums)
