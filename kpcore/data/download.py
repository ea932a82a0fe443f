"""Download and unpack the official dataset archives.

:func:`download_dataset` fetches an archive into ``<root>/.downloads/<file>.part``
(resuming with an HTTP ``Range`` request where the server allows it), checks it,
extracts it into a temporary folder and only then renames that folder into
``<root>/<folder>`` with a ``.kpcore-complete`` marker inside. A folder without the
marker was not made by a finished download.

Without a network it fails within seconds (DNS lookup and connection are both
bounded by :data:`CONNECT_TIMEOUT_S`) with a :class:`~kpcore.errors.DownloadError`
that says how to get the data by hand.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import logging
import shutil
import socket
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from kpcore.errors import DatasetNotFoundError, DownloadError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0  # DNS lookup, TCP connect, and any stall while reading
CHUNK_BYTES = 1 << 20
MAX_ATTEMPTS = 3  # a dropped or stalled transfer is resumed this many times in all
DOWNLOADS_DIR = ".downloads"
COMPLETE_MARKER = ".kpcore-complete"
USER_AGENT = "kpcore-dataset-download/0.1"
_IGNORED_TOP_LEVEL = {"__MACOSX", ".DS_Store"}


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset's official archive lives and what it unpacks to.

    Attributes:
        name: Key used by ``python -m kpcore download NAME``.
        title: Human-readable name for messages.
        urls: Official URL first, then mirrors; tried in order.
        file: Archive file name under ``<root>/.downloads/``.
        folder: Final folder under ``<root>``.
        size: Archive size in bytes, or None where unknown.
        sha256: Archive checksum, or None where unknown.
        expect: Glob patterns (relative to the final folder) that must each match after
            extraction, so that a wrong archive is not taken for the dataset.
    """

    name: str
    title: str
    urls: tuple[str, ...]
    file: str
    folder: str
    size: int | None
    sha256: str | None
    expect: tuple[str, ...]


# The one table of dataset sources. Sizes and checksums of the official archives are
# not published by their hosts and could not be fetched here (no network), so they are
# None: the download is then checked against the server's Content-Length, and the
# archive's own CRCs are verified while extracting every member. The archive's sha256 is
# written into the marker file so that copies can be compared.
SOURCES: dict[str, DatasetSource] = {
    "imm": DatasetSource(
        name="imm",
        title="IMM Face Database",
        urls=(
            "https://www2.imm.dtu.dk/~aam/datasets/imm_face_db.zip",
            # OpenIMAJ's mirror, as listed in its IMMFaceDatabase dataset class.
            "http://datasets.openimaj.org/imm_face_db.zip",
        ),
        file="imm_face_db.zip",
        folder="imm_face_db",
        size=None,  # unknown (a few MB: 240 JPEGs of 640x480 + .asf files)
        sha256=None,  # unknown
        expect=("**/*.asf", "**/*.jpg"),
    ),
    "ibug300w": DatasetSource(
        name="ibug300w",
        title="iBUG 300-W large face landmark dataset",
        urls=("http://dlib.net/files/data/ibug_300W_large_face_landmark_dataset.tar.gz",),
        file="ibug_300W_large_face_landmark_dataset.tar.gz",
        folder="ibug_300W_large_face_landmark_dataset",
        size=None,  # unknown exactly; about 1.7 GB
        sha256=None,  # unknown
        expect=("labels_ibug_300W_train.xml", "labels_ibug_300W_test.xml"),
    ),
    "mtfl": DatasetSource(
        name="mtfl",
        title="MTFL (Multi-Task Facial Landmark) dataset",
        urls=("http://mmlab.ie.cuhk.edu.hk/projects/TCDCN/data/MTFL.zip",),
        file="MTFL.zip",
        folder="mtfl",
        size=None,  # unknown exactly; about 150 MB
        sha256=None,  # unknown
        expect=("training.txt", "lfw_5590/*.jpg", "net_7876/*.jpg"),
    ),
}


def get_source(name: str) -> DatasetSource:
    """Look up a dataset's source by name."""
    try:
        return SOURCES[name]
    except KeyError:
        raise DatasetNotFoundError(f"unknown dataset {name!r}; known: {sorted(SOURCES)}") from None


# -- network helpers (also used by kpcore.models.hub) -------------------------------------------


def network_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the network failed", for the HTTP clients installed."""
    types: list[type[BaseException]] = [OSError, http.client.HTTPException]
    for module, attr in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        try:
            types.append(getattr(__import__(module), attr))
        except (ImportError, AttributeError):
            pass
    return tuple(types)


def _resolve(host: str, port: int, timeout: float) -> str | None:
    """Resolve ``host`` within ``timeout`` seconds; a problem description or None.

    ``getaddrinfo`` has no timeout of its own and can hang for long without a network,
    so it runs in a daemon thread that is abandoned if it takes too long.
    """
    outcome: list[BaseException | None] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            outcome.append(None)
        except OSError as err:
            outcome.append(err)

    thread = threading.Thread(target=lookup, name=f"resolve-{host}", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"DNS lookup of {host!r} timed out after {timeout:.0f} s (no network?)"
    if outcome[0] is not None:
        return f"DNS lookup of {host!r} failed ({outcome[0]}; no network?)"
    return None


def check_reachable(url: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Whether a TCP connection to ``url``'s host (or its proxy) opens within ``timeout``.

    Returns None when it does, else a short description of the problem. Used before
    a transfer so that a missing network fails in seconds, not minutes.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_parts.hostname or host, proxy_parts.port or 8080
    problem = _resolve(host, port, timeout)
    if problem:
        return problem
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        return f"cannot connect to {host}:{port} ({err})"
    return None


# -- download ------------------------------------------------------------------------


class _TransferError(Exception):
    """One URL failed; the message is the reason (collected across mirrors)."""


def _manual_hint(source: DatasetSource) -> str:
    return (f"To get the data by hand: download {source.urls[0]} with a browser or "
            f"`curl -L -O`, then run `python -m kpcore download {source.name} --archive FILE` "
            f"(download_dataset({source.name!r}, root, archive=FILE)); or point --data-root / "
            f"KPCORE_DATA at an existing extracted copy.")


def _read_meta(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(start, total)`` from a ``Content-Range: bytes START-END/TOTAL`` header."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[len("bytes "):].partition("/")
    start = span.split("-")[0]
    return (int(start) if start.isdigit() else None, int(total) if total.isdigit() else None)


def _fetch_url(url: str, part: Path, source: DatasetSource, progress: bool) -> None:
    """Download ``url`` into ``part``, resuming what is there; raise :class:`_TransferError`."""
    meta_path = part.with_name(part.name + ".json")
    last_error: BaseException | None = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        meta = _read_meta(meta_path)
        have = part.stat().st_size if part.exists() and meta.get("url") == url else 0
        problem = check_reachable(url)
        if problem:
            raise _TransferError(problem)
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT,
                                                       "Accept-Encoding": "identity"})
        if have:
            request.add_header("Range", f"bytes={have}-")
            validator = meta.get("etag") or meta.get("last_modified")
            if validator:  # the server sends the whole file if it changed since
                request.add_header("If-Range", validator)
        try:
            with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT_S) as response:
                start, total = 0, response.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else None
                if response.status == 206:
                    start, total = _content_range(response.headers.get("Content-Range"))
                    if start != have:  # a confused server: start again from byte 0
                        part.unlink(missing_ok=True)
                        last_error = _TransferError(f"server resumed at byte {start}, not {have}")
                        continue
                meta = {"url": url, "etag": response.headers.get("ETag"),
                        "last_modified": response.headers.get("Last-Modified"), "total": total}
                meta_path.write_text(json.dumps(meta))
                with open(part, "ab" if start else "wb") as out, tqdm(
                        total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=source.file, disable=not progress) as bar:
                    while chunk := response.read(CHUNK_BYTES):
                        out.write(chunk)
                        bar.update(len(chunk))
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:  # nothing left to send: the .part may be complete
                _, total = _content_range(err.headers.get("Content-Range"))
                if total == have:
                    return
                part.unlink(missing_ok=True)
                last_error = err
                continue
            raise _TransferError(f"HTTP {err.code} {err.reason}") from err
        except urllib.error.URLError as err:  # connection problems (not HTTP statuses)
            raise _TransferError(f"{err.reason}") from err
        except (OSError, http.client.HTTPException) as err:  # dropped or stalled mid-way
            last_error = err
            log.warning("download of %s interrupted (%s); attempt %d of %d", url, err, attempt,
                        MAX_ATTEMPTS)
            time.sleep(min(attempt, 3))
            continue
        size = part.stat().st_size
        if total is not None and size != total:
            last_error = _TransferError(f"connection closed after {size} of {total} bytes")
            continue
        return
    raise _TransferError(f"transfer failed {MAX_ATTEMPTS} times; last error: {last_error}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _download(source: DatasetSource, urls: tuple[str, ...], downloads: Path,
              progress: bool) -> Path:
    """Fetch the archive into ``downloads`` (trying each URL in turn) and return its path."""
    target = downloads / source.file
    part = downloads / (source.file + ".part")
    failures = []
    for url in urls:
        try:
            _fetch_url(url, part, source, progress)
        except _TransferError as err:
            failures.append(f"  {url}: {err}")
            continue
        size = part.stat().st_size
        if source.size is not None and size != source.size:
            failures.append(f"  {url}: got {size} bytes, expected {source.size}")
            part.unlink()
            continue
        if source.sha256 is not None and _sha256(part) != source.sha256:
            failures.append(f"  {url}: sha256 mismatch (expected {source.sha256})")
            part.unlink()
            continue
        part.replace(target)
        part.with_name(part.name + ".json").unlink(missing_ok=True)
        return target
    raise DownloadError(f"could not download the {source.title} archive:\n" + "\n".join(failures)
                        + f"\n{_manual_hint(source)}")


# -- extraction ----------------------------------------------------------------------


def _extract(archive: Path, into: Path, progress: bool) -> None:
    """Unpack a zip or tar(.gz) archive, reading (and so checking) every member."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in tqdm(zf.infolist(), desc="extracting", unit="file", disable=not progress):
                parts = Path(info.filename).parts
                if info.filename.startswith(("/", "\\")) or ".." in parts:
                    raise tarfile.TarError(f"unsafe member path {info.filename!r}")
                zf.extract(info, into)  # reads the member, so a bad CRC raises here
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for member in tqdm(tf, desc="extracting", unit="file", disable=not progress):
                if hasattr(tarfile, "data_filter"):
                    # "data" refuses absolute paths, links out of the folder, devices.
                    tf.extract(member, into, filter="data")
                elif member.name.startswith("/") or ".." in Path(member.name).parts:
                    raise tarfile.TarError(f"unsafe member path {member.name!r}")
                else:
                    tf.extract(member, into)
    else:
        raise tarfile.TarError("not a zip or tar archive")


def _content_root(folder: Path) -> Path:
    """The folder itself, or its only subfolder when the archive wraps everything in one."""
    entries = [p for p in folder.iterdir() if p.name not in _IGNORED_TOP_LEVEL]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder


def _install(archive: Path, source: DatasetSource, final: Path, origin: str,
             progress: bool) -> None:
    """Extract ``archive`` beside ``final`` and move it into place when complete."""
    # Same file system as `final`, so that the last step is a rename.
    workdir = final.parent / DOWNLOADS_DIR
    tmp = Path(tempfile.mkdtemp(prefix=f"{source.folder}.extracting-", dir=workdir))
    try:
        try:
            _extract(archive, tmp, progress)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error,
                gzip.BadGzipFile) as err:
            raise DownloadError(f"the {source.title} archive {archive} is corrupt or incomplete "
                                f"({type(err).__name__}: {err})") from err
        except OSError as err:
            raise DownloadError(f"could not extract {archive} into {tmp.parent} ({err}); "
                                "check the free disk space and permissions") from err
        content = _content_root(tmp)
        missing = [pattern for pattern in source.expect if not any(content.glob(pattern))]
        if missing:
            raise DownloadError(f"{archive} does not look like the {source.title} archive: "
                                f"nothing matches {missing} after extraction")
        marker = {"dataset": source.name, "source": origin, "archive_sha256": _sha256(archive),
                  "completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (content / COMPLETE_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        old = None
        if final.exists():  # only with force=True: swap, then delete the old copy
            old = final.with_name(f".{final.name}.old-{time.time_ns()}")
            final.rename(old)
        content.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_dataset(name: str, root: str | Path, force: bool = False, url: str | None = None,
                     progress: bool = True, archive: str | Path | None = None,
                     keep_archive: bool = False) -> Path:
    """Download, check and unpack a dataset; return its folder ``<root>/<folder>``.

    Args:
        name: ``"imm"`` or ``"ibug300w"`` (see :data:`SOURCES`).
        root: Data root; the dataset lands in ``root/<folder>``, partial downloads in
            ``root/.downloads/``.
        force: Download and unpack again even if a complete copy is there.
        url: Fetch from this URL instead of the official ones (tests, private mirrors).
        progress: Show tqdm progress bars.
        archive: Unpack this local archive instead of downloading.
        keep_archive: Keep the downloaded archive in ``root/.downloads/`` afterwards.

    Raises:
        DownloadError: No network, server error, corrupt archive; the message says how
            to get the data by hand.
        DatasetNotFoundError: Unknown ``name``, or ``archive`` does not exist.
    """
    source = get_source(name)
    root = Path(root).expanduser()
    final = root / source.folder
    if (final / COMPLETE_MARKER).is_file() and not force:
        return final
    if final.exists() and not force:
        raise DownloadError(f"{final} exists but has no {COMPLETE_MARKER} marker, so it is not "
                            "a finished kpcore download (a hand-made or partial copy?). Use it "
                            "as it is with --data-root / KPCORE_DATA, delete it, or pass "
                            "force=True (--force) to replace it.")
    downloads = root / DOWNLOADS_DIR
    try:
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"cannot create {downloads} ({err}); choose another root") from err

    if archive is not None:
        archive = Path(archive).expanduser()
        if not archive.is_file():
            raise DatasetNotFoundError(f"archive {str(archive)!r} not found; expected the "
                                       f"{source.title} archive {source.file}")
        try:
            _install(archive, source, final, str(archive.resolve()), progress)
        except DownloadError as err:
            raise DownloadError(f"{err}. Check that file. {_manual_hint(source)}") from err
        return final

    target = downloads / source.file
    if force:
        target.unlink(missing_ok=True)
    urls = (url,) if url else source.urls
    if not target.is_file():  # else: a checked archive left by an interrupted extraction
        target = _download(source, urls, downloads, progress)
    try:
        _install(target, source, final, urls[0], progress)
    except DownloadError as err:
        target.unlink(missing_ok=True)  # so that the next run downloads it afresh
        raise DownloadError(f"{err}. The downloaded archive was deleted; run again to "
                            f"download it afresh. {_manual_hint(source)}") from err
    if not keep_archive:
        target.unlink(missing_ok=True)
    return final
