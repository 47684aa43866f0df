"""Download files once, verify their checksums, and keep them in a cache directory, through pooch.

Used for the MNIST-format IDX files: ``fetch_idx(url)`` fetches the four standard files
(train/t10k images/labels, ``.gz``) from a base URL into a cache directory and returns that
directory, ready for :func:`localstdp.data.idx.load_idx_dir`.

pooch does the work: a registry of file name -> digest (:data:`REGISTRIES` holds the published
MNIST and Fashion-MNIST digests), downloads to a temporary file in the cache directory, moved into
place only when its MD5 (32 hex digits) or SHA-256 (64 hex digits) digest matches, and a cached
file whose digest no longer matches is fetched again. What this module adds: ``file://`` URLs, the
cache directory's default, and one :class:`~localstdp.errors.DataError` line naming the URL and
what went wrong (HTTP status, truncated body, digest mismatch, unreachable host); nothing is left
at the destination after a failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import ArgumentTypeError, DataError
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


def registry(checksums: list[str] | tuple[str, ...]) -> dict[str, str]:
    """pooch's registry of the four gzipped IDX files: file name -> ``"md5:<digest>"`` (or sha256)."""
    return {stem + ".gz": f"{digest_kind(c)}:{c.lower()}" for stem, c in zip(FILES.values(), checksums)}


REGISTRIES = {name: registry(sums) for name, sums in KNOWN_CHECKSUMS.items()}


def _copy_file_url(url: str, output_file: str, pooch) -> None:
    """pooch downloader for ``file://`` URLs (pooch itself speaks http(s), ftp, sftp and doi)."""
    with urllib.request.urlopen(url) as src, open(output_file, "wb") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)


def _downloader(url: str, timeout: float):
    if urllib.parse.urlsplit(url).scheme == "file":
        return _copy_file_url
    import pooch

    return pooch.HTTPDownloader(progressbar=False, timeout=timeout, chunk_size=_CHUNK)


def _chain(exc: BaseException):
    """``exc`` and every exception behind it (causes, contexts, exceptions passed as arguments)."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, *(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))]


def _reason(exc: BaseException) -> str:
    """What went wrong, in the words the socket or urllib3 used: "truncated download (...)", or
    "download failed ([Errno 111] Connection refused)" rather than requests' whole retry story."""
    chain = list(_chain(exc))
    for e in chain:
        if type(e).__name__ == "IncompleteRead":
            partial = e.partial if isinstance(e.partial, int) else len(e.partial)
            return f"truncated download ({partial} bytes received, {e.expected} missing)"
    system = [e for e in chain if isinstance(e, OSError) and e.strerror]
    reason = f"[Errno {system[-1].errno}] {system[-1].strerror}" if system else getattr(exc, "reason", None) or exc
    return f"download failed ({reason})"


@contextlib.contextmanager
def _download_errors(url: str, checksum: str):
    """pooch's and requests' exceptions as one DataError line; pooch's own log lines kept quiet."""
    import pooch
    import requests

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)  # pooch logs each download at INFO to stderr; ours does, under -v
    kind = digest_kind(checksum)
    try:
        yield
    except requests.HTTPError as exc:
        raise DataError(f"{url}: HTTP {exc.response.status_code} {exc.response.reason}") from None
    except ValueError as exc:  # pooch: "... does not match the known hash: expected X but got Y. ..."
        if "known hash" not in str(exc):
            raise DataError(f"{url}: download failed ({exc})") from None
        got = re.search(r"but got (\w+)", str(exc))
        raise DataError(f"{url}: {kind} checksum mismatch (got {got.group(1) if got else '?'}, expected "
                        f"{checksum.lower()}); the file was deleted") from None
    except (requests.RequestException, OSError) as exc:
        raise DataError(f"{url}: {_reason(exc)}") from None
    finally:
        logger.setLevel(level)


def _warn_if_stale(dest: Path, known_hash: str) -> None:
    import pooch

    kind, digest = known_hash.split(":")
    if dest.is_file() and pooch.file_hash(str(dest), alg=kind) != digest:
        log.warning("%s: cached file has the wrong %s digest; downloading it again", dest, kind)


def download_file(url: str, dest: str | Path, checksum: str, *, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` unless a file with the right ``checksum`` is already there.

    Raises DataError for an unreachable URL, an HTTP error, a truncated body or a digest mismatch;
    nothing is left at ``dest`` after a failure.
    """
    import pooch

    from .. import checks

    checks.instance("url", url, str, "a URL (str)")
    checks.path("dest", dest)
    checks.instance("checksum", checksum, str, "a hex digest (str)")
    checks.number("timeout", timeout, 0, lo_open=True)
    known = f"{digest_kind(checksum)}:{checksum.lower()}"
    dest = Path(dest)
    _warn_if_stale(dest, known)
    with _download_errors(url, checksum):
        pooch.retrieve(url, known, fname=dest.name, path=dest.parent, downloader=_downloader(url, timeout))
    log.info("%s: %s", url, dest)
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
    defaults to ``default_cache_dir() / "idx" / cache_subdir(url)``. One pooch per call: its
    base URL is ``url``, its registry the four files' digests.
    """
    from .. import checks

    if cache_dir is not None:
        checks.path("cache_dir", cache_dir)
    if checksums is not None and (not isinstance(checksums, (list, tuple))
                                  or not all(isinstance(c, str) for c in checksums)):
        checks.fail("checksums", "a list of four hex digests (str)", checks.got(checksums), ArgumentTypeError)
    checks.number("timeout", timeout, 0, lo_open=True)
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        raise DataError(f"data.url = {url!r}: expected an http(s):// or file:// URL")
    sums = tuple(checksums) if checksums is not None else known_checksums(url)
    if len(sums) != len(FILES):
        raise DataError(f"expected {len(FILES)} checksums (train images, train labels, test images, test labels), "
                        f"got {len(sums)}")
    import pooch

    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "idx" / cache_subdir(url)
    base = url if url.endswith("/") else url + "/"
    files = pooch.create(path=directory, base_url=base, registry=registry(sums))
    for name, known in files.registry.items():
        _warn_if_stale(directory / name, known)
        with _download_errors(urllib.parse.urljoin(base, name), known.split(":")[1]):
            files.fetch(name, downloader=_downloader(base, timeout))
    return directory
