"""kpcore.data.download against a small HTTP server on 127.0.0.1 serving fake archives; no internet."""

from __future__ import annotations

import io
import json
import socket
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kpcore.data.download import COMPLETE_MARKER, DOWNLOADS_DIR, SOURCES, download_dataset
from kpcore.errors import DatasetNotFoundError, DownloadError

FAIL_FAST_S = 5.0
IMM = SOURCES["imm"]
W300 = SOURCES["ibug300w"]


def imm_zip(names: tuple[str, ...] = ("01-1m.asf", "01-1m.jpg", "02-2f.asf", "02-2f.jpg")) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, name in enumerate(names):
            # Random-looking bytes so that the archive is not tiny after compression.
            zf.writestr(f"imm_face_db/{name}", bytes((i * 7919 + j * 31) % 251 for j in range(20_000)))
    return buf.getvalue()


def w300_tar_gz() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name in ("labels_ibug_300W_train.xml", "labels_ibug_300W_test.xml", "afw/1.pts"):
            data = f"<contents of {name}>".encode()
            info = tarfile.TarInfo(f"{W300.folder}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class FileServer:
    """Serves ``files`` (path -> bytes) on 127.0.0.1 with ETag and single ``Range`` support.

    ``range_support=False`` ignores Range; ``cut_first`` sends only that many bytes of
    the first response before closing the connection (a dropped transfer).
    """

    def __init__(self, files: dict[str, bytes], range_support: bool = True,
                 cut_first: int | None = None) -> None:
        self.files, self.range_support, self.cut_first = files, range_support, cut_first
        self.ranges: list[str | None] = []  # Range header of each GET
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                data = outer.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                wanted = self.headers.get("Range")
                outer.ranges.append(wanted)
                start = 0
                if wanted and outer.range_support:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"v1"')
                self.end_headers()
                if outer.cut_first is not None:
                    body, outer.cut_first = body[:outer.cut_first], None
                    self.close_connection = True
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/imm_face_db.zip"


def leftovers(root: Path) -> list[str]:
    downloads = root / DOWNLOADS_DIR
    return sorted(p.name for p in downloads.iterdir()) if downloads.is_dir() else []


def test_download_zip_extracts_and_marks_complete(tmp_path):
    with FileServer({"/imm.zip": imm_zip()}) as server:
        folder = download_dataset("imm", tmp_path, url=server.url + "/imm.zip", progress=False)
    assert folder == tmp_path / IMM.folder
    assert (folder / "01-1m.asf").is_file() and (folder / "02-2f.jpg").is_file()
    marker = json.loads((folder / COMPLETE_MARKER).read_text())
    assert marker["dataset"] == "imm" and len(marker["archive_sha256"]) == 64
    assert leftovers(tmp_path) == []  # no .part, no archive, no temporary folder
    # Complete: a second call needs no network (the server is gone).
    assert download_dataset("imm", tmp_path, url=closed_port_url(), progress=False) == folder


def test_download_tar_gz(tmp_path):
    with FileServer({"/300w.tar.gz": w300_tar_gz()}) as server:
        folder = download_dataset("ibug300w", tmp_path, url=server.url + "/300w.tar.gz",
                                  progress=False, keep_archive=True)
    assert (folder / "labels_ibug_300W_train.xml").read_text() == "<contents of labels_ibug_300W_train.xml>"
    assert (folder / "afw" / "1.pts").is_file() and (folder / COMPLETE_MARKER).is_file()
    assert leftovers(tmp_path) == [W300.file]


@pytest.mark.parametrize("range_support", [True, False])
def test_resume_partial_download(tmp_path, range_support):
    data = imm_zip()
    with FileServer({"/imm.zip": data}, range_support=range_support) as server:
        url = server.url + "/imm.zip"
        downloads = tmp_path / DOWNLOADS_DIR
        downloads.mkdir()
        half = len(data) // 2
        (downloads / f"{IMM.file}.part").write_bytes(data[:half])
        (downloads / f"{IMM.file}.part.json").write_text(json.dumps({"url": url, "etag": '"v1"'}))
        folder = download_dataset("imm", tmp_path, url=url, progress=False)
    assert server.ranges == [f"bytes={half}-"]
    assert (folder / "01-1m.asf").is_file() and leftovers(tmp_path) == []


def test_dropped_connection_is_resumed(tmp_path):
    data = imm_zip()
    with FileServer({"/imm.zip": data}, cut_first=len(data) // 3) as server:
        folder = download_dataset("imm", tmp_path, url=server.url + "/imm.zip", progress=False)
    assert server.ranges == [None, f"bytes={len(data) // 3}-"]
    assert (folder / COMPLETE_MARKER).is_file()


def test_corrupt_archive_leaves_no_dataset_folder(tmp_path):
    bad = bytearray(imm_zip())
    bad[100:4000] = bytes(3900)  # zeroes inside the first member: its CRC no longer matches
    with FileServer({"/imm.zip": bytes(bad)}) as server:
        with pytest.raises(DownloadError, match="corrupt"):
            download_dataset("imm", tmp_path, url=server.url + "/imm.zip", progress=False)
    assert not (tmp_path / IMM.folder).exists()
    assert leftovers(tmp_path) == []  # the bad archive is deleted, so a rerun downloads afresh


def test_truncated_local_archive(tmp_path):
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(w300_tar_gz()[:-40])
    with pytest.raises(DownloadError, match="corrupt or incomplete"):
        download_dataset("ibug300w", tmp_path / "data", archive=archive, progress=False)
    assert not (tmp_path / "data" / W300.folder).exists()
    assert leftovers(tmp_path / "data") == []
    assert archive.is_file()  # the user's own file is never deleted


def test_wrong_archive_is_rejected(tmp_path):
    archive = tmp_path / "other.zip"
    archive.write_bytes(imm_zip(("readme.txt",)))
    with pytest.raises(DownloadError, match="does not look like"):
        download_dataset("imm", tmp_path / "data", archive=archive, progress=False)
    assert not (tmp_path / "data" / IMM.folder).exists()


def test_unsafe_member_path_is_rejected(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.asf", b"x")
    archive = tmp_path / "evil.zip"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(DownloadError, match="unsafe"):
        download_dataset("imm", tmp_path / "data", archive=archive, progress=False)
    assert not (tmp_path / "evil.asf").exists()


def test_local_archive(tmp_path):
    archive = tmp_path / "imm_face_db.zip"
    archive.write_bytes(imm_zip())
    folder = download_dataset("imm", tmp_path / "data", archive=archive, progress=False)
    assert (folder / "01-1m.jpg").is_file()
    assert json.loads((folder / COMPLETE_MARKER).read_text())["source"] == str(archive)
    with pytest.raises(DatasetNotFoundError, match="missing.zip"):
        download_dataset("imm", tmp_path / "data2", archive=tmp_path / "missing.zip")


def test_unmarked_folder_needs_force(tmp_path):
    (tmp_path / IMM.folder).mkdir()
    (tmp_path / IMM.folder / "old.txt").write_text("half-copied")
    archive = tmp_path / "imm.zip"
    archive.write_bytes(imm_zip())
    with pytest.raises(DownloadError, match="force"):
        download_dataset("imm", tmp_path, archive=archive, progress=False)
    folder = download_dataset("imm", tmp_path, archive=archive, force=True, progress=False)
    assert not (folder / "old.txt").exists() and (folder / COMPLETE_MARKER).is_file()
    assert {p.name for p in tmp_path.iterdir()} == {DOWNLOADS_DIR, IMM.folder, "imm.zip"}


@pytest.mark.parametrize("url", [closed_port_url(), "http://kpcore-test.invalid/imm_face_db.zip"],
                         ids=["closed-port", "dns-failure"])
def test_no_network_fails_fast_with_instructions(tmp_path, url):
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download_dataset("imm", tmp_path, url=url, progress=False)
    assert time.monotonic() - start < FAIL_FAST_S
    message = str(info.value)
    assert url in message and "--archive" in message and "KPCORE_DATA" in message
    assert not (tmp_path / IMM.folder).exists()


def test_http_error_is_reported(tmp_path):
    with FileServer({}) as server:
        with pytest.raises(DownloadError, match="HTTP 404"):
            download_dataset("imm", tmp_path, url=server.url + "/nope.zip", progress=False)


def test_unknown_dataset():
    with pytest.raises(DatasetNotFoundError, match="known: \\['ibug300w', 'imm', 'mtfl'\\]"):
        download_dataset("celeba", "/nonexistent")
