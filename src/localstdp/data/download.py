"""Download files once, verify their checksums, and keep them in a cache directory.

Used for the MNIST-format IDX files: ``fetch_idx(url)`` fetches the four standard files
(train/t10k images/labels, ``.gz``) from a base URL into a cache directory and returns that
directory, ready for :func:`localstdp.data.idx.load_idx_dir`.

Every file is verified against an MD5 (32 hex digits) or SHA-256 (64 hex digits) digest before it
is used: a download is written to ``NAME.part`` and renamed into place only when its length
matches the server's Content-Length and its digest matches; otherwise the partial file is deleted
and :class:`~localstdp.errors.DataError` names the URL and what went wrong. A cached file whose
digest no longer matches is fetched again.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import DataError
from .idx import FILES

log = logging.getLogger(__name__)

# The published files' MD5 digests (the same ones torchvision checks), in FILES order:
# train images, train labels, test images, test labels.
KNOWN_CHECKSUMS = {
    "mnist": (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "d53e105ee54ea40749a09fcbcd1e9432",
        "9fb629c4189551a2d022fa330f9573f3",
        "ec29112dd5afa0611ce80d1b7f02629c",
    ),
    "fashion-mnist": (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79",
        "bb300cfdad3c16e7a12a480ee83cd310",
    ),
}
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """``$LOCALSTDP_CACHE`` if set, else ``$XDG_CACHE_HOME/localstdp`` (``~/.cache/localstdp``)."""
    if os.environ.get("LOCALSTDP_CACHE"):
        return Path(os.environ["LOCALSTDP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "localstdp"


def digest_kind(checksum: str) -> str:
    """"md5" for 32 hex digits, "sha256" for 64; anything else raises DataError."""
    if not isinstance(checksum, str) or not _HEX.match(checksum) or len(checksum) not in (32, 64):
        raise DataError(f"checksum {checksum!r}: expected 32 (MD5) or 64 (SHA-256) hex digits")
    return "md5" if len(checksum) == 32 else "sha256"


def file_digest(path: str | Path, kind: str) -> str:
    h = hashlib.new(kind)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download_file(url: str, dest: str | Path, checksum: str, *, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` unless a file with the right ``checksum`` is already there.

    Raises DataError for an unreachable URL, an HTTP error, a truncated body or a digest mismatch;
    nothing is left at ``dest`` (nor ``dest.part``) after a failure.
    """
    kind = digest_kind(checksum)
    dest = Path(dest)
    if dest.is_file():
        if file_digest(dest, kind) == checksum.lower():
            log.info("cached: %s", dest)
            return dest
        log.warning("%s: cached file has the wrong %s digest; downloading it again", dest, kind)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    h = hashlib.new(kind)
    got = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as fh:
            expected = resp.headers.get("Content-Length")
            while chunk := resp.read(_CHUNK):
                fh.write(chunk)
                h.update(chunk)
                got += len(chunk)
        if expected is not None and got != int(expected):
            raise DataError(f"{url}: truncated download ({got} of {expected} bytes)")
        if h.hexdigest() != checksum.lower():
            raise DataError(f"{url}: {kind} checksum mismatch (got {h.hexdigest()}, expected {checksum.lower()}); "
                            "the file was deleted")
        os.replace(part, dest)
    except http.client.IncompleteRead as exc:
        part.unlink(missing_ok=True)
        raise DataError(f"{url}: truncated download ({got + len(exc.partial)} bytes received, "
                        f"{exc.expected} missing)") from None
    except urllib.error.HTTPError as exc:
        part.unlink(missing_ok=True)
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise DataError(f"{url}: download failed ({reason})") from None
    except DataError:
        part.unlink(missing_ok=True)
        raise
    log.info("downloaded %s (%d bytes)", dest, got)
    return dest


def known_checksums(url: str) -> tuple[str, ...]:
    """The published digests for a base URL that names Fashion-MNIST or MNIST, else DataError."""
    low = url.lower()
    if "fashion" in low:
        return KNOWN_CHECKSUMS["fashion-mnist"]
    if "mnist" in low:
        return KNOWN_CHECKSUMS["mnist"]
    raise DataError(f"{url}: no known checksums for this URL; list the four files' digests in data.checksums")


def cache_subdir(url: str) -> str:
    """A readable, filesystem-safe directory name for a base URL (host + path)."""
    parts = urllib.parse.urlsplit(url)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{parts.netloc}{parts.path}").strip("_.")
    return name or "default"


def fetch_idx(url: str, cache_dir: str | Path | None = None, checksums: list[str] | tuple[str, ...] | None = None,
              *, timeout: float = 60.0) -> Path:
    """Download the four gzipped IDX files under base ``url`` into a cache directory; return it.

    ``checksums`` lists the four digests in the order train images, train labels, test images,
    test labels (default: the published ones, chosen by :func:`known_checksums`). ``cache_dir``
    defaults to ``default_cache_dir() / "idx" / cache_subdir(url)``.
    """
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        raise DataError(f"data.url = {url!r}: expected an http(s):// or file:// URL")
    sums = tuple(checksums) if checksums is not None else known_checksums(url)
    if len(sums) != len(FILES):
        raise DataError(f"expected {len(FILES)} checksums (train images, train labels, test images, test labels), "
                        f"got {len(sums)}")
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "idx" / cache_subdir(url)
    base = url if url.endswith("/") else url + "/"
    for stem, checksum in zip(FILES.values(), sums):
        name = stem + ".gz"
        download_file(urllib.parse.urljoin(base, name), directory / name, checksum, timeout=timeout)
    return directory
