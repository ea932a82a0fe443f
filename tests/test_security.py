"""The served demo against hostile requests and resource exhaustion (issue 20).

* Files: every event that takes a file (photo, morph, mean face, video, webcam)
  is sent paths outside Gradio's upload folder through the raw queue API
  (``POST /gradio/gradio_api/queue/join``, answers read from the SSE stream at
  ``/gradio/gradio_api/queue/data``), as an attacker would, not through
  ``gradio_client``. Each must answer with the refusal, leak neither the file
  nor a server path, and copy nothing into the upload folder.
* Memory: a 16-bit 10000x10000 PNG is loaded in a fresh process whose peak RSS
  (VmHWM) must stay under :data:`PEAK_LIMIT_MB`.
* Queue: a flood of joins gets "busy" answers in words; a real request is still answered.
* Video: frames x pixels are counted while reading; a truncated stream says it was cut short.
* Disk: the demo's own output folders and Gradio's copies go after their age / count.
* Headers: nosniff, a referrer policy and a frame policy that lets a Space embed the app.

The served tests (``slow``) start ``streamlit run app.py`` on a free 127.0.0.1
port with a tiny untrained 68-point checkpoint, their own upload folder
(``GRADIO_TEMP_DIR``) and temp folder (``TMPDIR``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tests.webapp_fixtures import make_bench, save_model, serve_app

REPO = Path(__file__).resolve().parents[1]
REFUSAL = "is not a file uploaded to this demo"
"""Part of :func:`webapp.demo_files.accepted_upload`'s answer to a path outside the uploads."""
FILE_TYPES = {"image", "file", "video"}
"""Gradio component types whose input is a file."""
SSE_TIMEOUT_S = 90
PEAK_LIMIT_MB = 1000
SECRET_TEXT = "kpcore-secret-7f3a: not for visitors"
FILES_MAX_AGE_S = 6
"""The served app's KPCORE_DEMO_FILES_MAX_AGE: Gradio deletes its copies after this many seconds."""
FILES_MAX_COUNT = 5
"""The served app's KPCORE_DEMO_FILES_MAX_COUNT: request folders kept at most."""


# ------------------------------------------------------------ served app
@dataclass
class Served:
    url: str
    uploads: Path  # GRADIO_TEMP_DIR of the server
    tmp: Path  # TMPDIR of the server (the demo's own outputs go to <tmp>/kpcore_live)
    secret_dir: Path  # files no request may read
    log: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("secure")
    checkpoints, uploads, tmp, secret = root / "checkpoints", root / "uploads", root / "tmp", root / "secret"
    for folder in (checkpoints, uploads, tmp, secret, root / "runs"):
        folder.mkdir()
    save_model(checkpoints / "face68-300w", "ibug300w", "ibug300w", 68)
    (secret / "notes.txt").write_text(SECRET_TEXT)
    Image.fromarray(np.full((120, 160, 3), 200, np.uint8)).save(secret / "private.png")
    env = {"KPCORE_RUNS": str(root / "runs"), "KPCORE_CHECKPOINTS": str(checkpoints),
           "KPCORE_BENCH": str(make_bench(root / "bench.json")), "KPCORE_DATA": str(root / "nodata"),
           "GRADIO_TEMP_DIR": str(uploads), "TMPDIR": str(tmp),
           "KPCORE_DEMO_FILES_MAX_AGE": str(FILES_MAX_AGE_S), "KPCORE_DEMO_FILES_MAX_COUNT": str(FILES_MAX_COUNT)}
    with serve_app(env, root / "server.log") as url:
        yield Served(url, uploads, tmp, secret, root / "server.log")


def gradio_config(base: str) -> dict:
    with urllib.request.urlopen(base + "/gradio/config", timeout=10) as r:
        return json.loads(r.read())


def join(base: str, fn_index: int, data: list, session: str | None = None,
         trigger_id: int | None = None) -> tuple[int, dict]:
    """``POST /gradio/gradio_api/queue/join``; returns (HTTP status, JSON answer)."""
    body = json.dumps({"data": data, "fn_index": fn_index, "session_hash": session or uuid.uuid4().hex,
                       "event_data": None, "trigger_id": trigger_id}).encode()
    request = urllib.request.Request(base + "/gradio/gradio_api/queue/join", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def answers(base: str, session: str) -> list[dict]:
    """The SSE messages of one session, up to its ``process_completed`` (or the stream's end)."""
    import httpx

    out = []
    with httpx.stream("GET", base + "/gradio/gradio_api/queue/data", params={"session_hash": session},
                      timeout=SSE_TIMEOUT_S) as r:
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            out.append(message)
            if message.get("msg") in ("process_completed", "close_stream"):
                break
    return out


def file_events(config: dict) -> list[tuple[dict, list[dict]]]:
    """Every event whose inputs include a file component, with its input components."""
    components = {c["id"]: c for c in config["components"]}
    out = []
    for dep in config["dependencies"]:
        inputs = [components[i] for i in dep["inputs"]]
        if any(c["type"] in FILE_TYPES for c in inputs):
            out.append((dep, inputs))
    return out


def hostile_inputs(inputs: list[dict], payload: dict) -> list:
    """The event's input values: ``payload`` for every file input (twice for multi-file ones), defaults else."""
    values = []
    for c in inputs:
        props = c.get("props", {})
        if c["type"] in FILE_TYPES:
            values.append([payload, payload] if props.get("file_count") == "multiple" else payload)
        elif c["type"] == "state":
            values.append(None)
        else:
            values.append(props.get("value"))
    return values


def file_payload(path: str, name: str | None = None) -> dict:
    return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def hostile_payloads(served: Served) -> dict[str, dict]:
    """Ways to name a file outside the uploads: absolute, ``..`` out of the upload folder, a symlink in it."""
    link_dir = served.uploads / "planted"
    link_dir.mkdir(exist_ok=True)
    link = link_dir / "face.png"
    if not link.is_symlink():
        link.symlink_to(served.secret_dir / "private.png")
    return {
        "etc-passwd": file_payload("/etc/passwd"),
        "secret-text": file_payload(str(served.secret_dir / "notes.txt"), "notes.txt"),
        "secret-image": file_payload(str(served.secret_dir / "private.png"), "face.png"),
        "dotdot": file_payload(f"{served.uploads}/../{served.secret_dir.name}/private.png", "face.png"),
        "symlink": file_payload(str(link), "face.png"),
    }


def _contents(folder: Path) -> set[bytes]:
    return {p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


@pytest.mark.slow
def test_raw_queue_requests_for_files_outside_the_uploads_are_refused_by_every_event(served: Served) -> None:
    config = gradio_config(served.url)
    events = file_events(config)
    names = {d.get("api_name") for d, _ in events}
    assert {"predict", "morph", "mean_face", "track_video"} <= names  # the API's endpoints
    assert len(events) >= 8  # and the page's private twins, the webcam stream
    secrets = [SECRET_TEXT, "root:x:0:0", "72 6f 6f 74"]  # the texts, or their first bytes in hex
    forbidden_paths = [str(served.secret_dir), str(served.uploads), str(served.tmp), "/etc/passwd"]
    secret_bytes = {Path("/etc/passwd").read_bytes(), *_contents(served.secret_dir)}
    failures = []
    for dep, inputs in events:
        for kind, payload in hostile_payloads(served).items():
            session = uuid.uuid4().hex
            status, answer = join(served.url, dep["id"], hostile_inputs(inputs, payload), session,
                                  dep["targets"][0][0] if dep["targets"] else None)
            # refused at the door (403, before Gradio copies anything), or by the handler (its answer)
            text = json.dumps(answer) if status == 403 else json.dumps(answers(served.url, session))
            where = f"event {dep['id']} ({dep.get('api_name') or 'private'}) with {kind}"
            if REFUSAL not in text:
                failures.append(f"{where}: no refusal in {text[:300]}")
            failures += [f"{where}: leaks {s!r}" for s in secrets if s in text]
            failures += [f"{where}: names {p}" for p in forbidden_paths if p in text]
    copied = secret_bytes & _contents(served.uploads)
    assert not failures, "\n".join(failures)
    assert not copied, f"{len(copied)} secret file(s) copied into the upload folder"


@pytest.mark.slow
@pytest.mark.parametrize("route", ["call/predict", "run/predict", "call/v2/predict"])
def test_the_rest_api_routes_refuse_files_outside_the_uploads(served: Served, route: str) -> None:
    import httpx

    body = json.dumps({"data": [file_payload("/etc/passwd"), "Face, 68 points (300-W)", True, False, False]})
    # no content type: FastAPI still reads the body as JSON
    r = httpx.post(f"{served.url}/gradio/gradio_api/{route}", content=body.encode(), timeout=30)
    assert r.status_code == 403 and REFUSAL in r.json()["detail"] and "passwd" not in r.text


def test_file_refusal_finds_file_references_at_any_depth(tmp_path: Path, monkeypatch) -> None:
    from webapp.serving import file_refusal

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    (tmp_path / "a.jpg").write_bytes(b"x")
    ok = {"data": [file_payload(str(tmp_path / "a.jpg")), [file_payload(str(tmp_path / "a.jpg"))], 3, None],
          "session_hash": "s"}
    assert file_refusal(ok) is None
    assert file_refusal({"data": [{"url": "data:image/png;base64,AAAA", "path": None}]}) is None
    for bad in ([{"video": file_payload("/etc/passwd")}], [[1, [file_payload("http://10.0.0.1/x")]]],
                [{"path": "/etc/passwd"}]):  # no meta: Gradio still treats it as a file
        assert REFUSAL in file_refusal({"data": bad, "session_hash": "s"})


@pytest.mark.slow
def test_a_real_upload_still_works_after_the_refusals(served: Served) -> None:
    from gradio_client import Client, handle_file

    photo = REPO / "webapp" / "examples" / "astronaut.jpg"
    client = Client(served.url + "/gradio/", verbose=False, download_files=str(served.tmp / "answers"))
    try:
        _, json_path, _, summary = client.predict(handle_file(str(photo)), api_name="/predict")
    finally:
        client.close()
    assert json.loads(Path(json_path).read_text())["image_size"] == list(Image.open(photo).size)


# ----------------------------------------------------------------- queue
def _upload(base: str, path: Path) -> str:
    """Upload one file the way the page does; returns its server path."""
    import httpx

    with open(path, "rb") as f:
        r = httpx.post(base + "/gradio/gradio_api/upload", files={"files": (path.name, f, "image/jpeg")},
                       timeout=30)
    r.raise_for_status()
    return r.json()[0]


def _close_stream(base: str, event_id: str) -> None:
    import httpx

    httpx.post(f"{base}/gradio/gradio_api/stream/{event_id}/close", timeout=30)


@pytest.mark.slow
def test_a_flood_of_joins_gets_busy_answers_in_words(served: Served) -> None:
    """Camera streams hold their worker until closed: a flood of them fills the queue whatever the CPU does."""
    from webapp.live_video import WEBCAM_CONCURRENCY
    from webapp.serving import PER_SESSION_LIMIT, QUEUE_MAX_SIZE

    config = gradio_config(served.url)
    camera = next(d for d in config["dependencies"] if d.get("api_name") == "webcam_frame")
    flood = [join(served.url, camera["id"], [None, None]) for _ in range(QUEUE_MAX_SIZE + 20)]  # a new tab each
    try:
        busy = [a["detail"] for s, a in flood if s == 503]
        accepted = sum(s == 200 for s, _ in flood)
        print(f"flood of {len(flood)} joins: {accepted} accepted, {len(busy)} answered busy: {busy[:1]}")
        assert accepted == QUEUE_MAX_SIZE + WEBCAM_CONCURRENCY  # the running streams and a full queue
        assert len(busy) == len(flood) - accepted
        assert all(m == f"The demo is busy: {QUEUE_MAX_SIZE} requests are waiting (at most {QUEUE_MAX_SIZE}). "
                        "Try again in a minute." for m in busy)
    finally:
        for status, answer in flood:
            if status == 200:
                _close_stream(served.url, answer["event_id"])

    predict = next(d for d in config["dependencies"] if d.get("api_name") == "predict")
    photo = file_payload(_upload(served.url, REPO / "webapp" / "examples" / "astronaut.jpg"), "astronaut.jpg")
    inputs = [photo, "Face, 68 points (300-W)", True, False, False]
    one_tab = uuid.uuid4().hex  # one session that never reads its answers
    deadline = time.time() + 60  # the closed streams leave the queue
    while join(served.url, predict["id"], inputs, one_tab)[0] == 503 and time.time() < deadline:
        time.sleep(0.5)
    statuses = [join(served.url, predict["id"], inputs, one_tab) for _ in range(PER_SESSION_LIMIT + 9)]
    assert [s for s, _ in statuses].count(200) == PER_SESSION_LIMIT - 1  # one went in above
    refused = [a["detail"] for s, a in statuses if s == 429]
    assert len(refused) == 10 and all("try again when they finish" in m for m in refused), refused[:2]


# ----------------------------------------------------------------- disk
@pytest.mark.slow
def test_old_uploads_and_outputs_are_removed(served: Served) -> None:
    from gradio_client import Client, handle_file

    # not an example photo itself: Gradio keeps its cached copies of the examples (same content, same file)
    photo = served.tmp / "visitor.png"
    Image.open(REPO / "webapp" / "examples" / "astronaut.jpg").save(photo)
    outputs = served.tmp / "kpcore_live"
    start = time.time()
    client = Client(served.url + "/gradio/", verbose=False, download_files=str(served.tmp / "answers"))
    try:
        for _ in range(FILES_MAX_COUNT + 3):
            client.predict(handle_file(str(photo)), api_name="/predict")
    finally:
        client.close()
    assert len(list(outputs.iterdir())) <= FILES_MAX_COUNT  # the count bound of the demo's own folders

    def new_files() -> list[Path]:
        return [p for p in served.uploads.rglob("*") if p.is_file() and not p.is_symlink()
                and p.stat().st_ctime >= start]

    assert new_files(), "the uploads and output copies should be in Gradio's folder first"
    deadline = time.time() + 4 * FILES_MAX_AGE_S + 10
    while new_files() and time.time() < deadline:
        time.sleep(1)
    assert not new_files(), f"Gradio kept {len(new_files())} files older than {FILES_MAX_AGE_S} s"


def test_clean_outputs_removes_by_age_then_by_count(tmp_path: Path) -> None:
    from webapp.demo_files import clean_outputs

    now = time.time()
    ages = [10, 20, 30, 40, 5000, 6000]  # seconds
    for i, age in enumerate(ages):
        folder = tmp_path / f"req{i}"
        folder.mkdir()
        (folder / "keypoints.json").write_text("{}")
        os.utime(folder, (now - age, now - age))
    assert clean_outputs(tmp_path, max_age_s=3600, max_folders=3, now=now) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["req0", "req1", "req2"]  # the 3 newest
    assert clean_outputs(tmp_path / "missing", now=now) == 0


def test_new_output_folder_keeps_the_count_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from webapp import demo_files

    monkeypatch.setattr(demo_files, "output_root", lambda: tmp_path)
    monkeypatch.setattr(demo_files, "MAX_FOLDERS", 4)
    for _ in range(10):
        demo_files.new_output_folder()
    assert len(list(tmp_path.iterdir())) == 4


# ----------------------------------------------------------------- files
def test_accepted_upload_takes_uploads_and_examples_only(tmp_path: Path, monkeypatch) -> None:
    from webapp.demo_files import EXAMPLES_DIR, RefusedFile, accepted_upload

    uploads, outside = tmp_path / "uploads", tmp_path / "outside"
    (uploads / "abc").mkdir(parents=True)
    outside.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    (uploads / "abc" / "face.jpg").write_bytes(b"x")
    (outside / "secret.jpg").write_bytes(b"y")
    (uploads / "abc" / "link.jpg").symlink_to(outside / "secret.jpg")

    upload = accepted_upload({"path": str(uploads / "abc" / "face.jpg"), "orig_name": "me.jpg"}, "photo")
    assert upload.name == "me.jpg" and upload.path == (uploads / "abc" / "face.jpg").resolve()
    example = next(EXAMPLES_DIR.glob("*.jpg"))
    assert accepted_upload(str(example)).path == example.resolve()
    assert accepted_upload(SimpleNamespace(path=str(example), orig_name=None)).name == example.name
    for payload in (str(outside / "secret.jpg"), {"path": f"{uploads}/abc/../../outside/secret.jpg"},
                    str(uploads / "abc" / "link.jpg"), "/etc/passwd", str(uploads)):
        with pytest.raises(RefusedFile, match=REFUSAL) as error:
            accepted_upload(payload, "photo")
        assert str(tmp_path) not in str(error.value) and "secret" not in str(error.value)
    with pytest.raises(RefusedFile, match="did not arrive"):
        accepted_upload({"path": None})
    with pytest.raises(RefusedFile, match="no longer on the server"):
        accepted_upload({"path": str(uploads / "abc" / "gone.jpg"), "orig_name": "gone.jpg"})


def test_load_photo_refuses_a_path_outside_the_uploads(tmp_path: Path, monkeypatch) -> None:
    import gradio as gr

    from webapp import live

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    with pytest.raises(gr.Error, match=REFUSAL) as error:
        live.load_photo({"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}})
    assert "passwd" not in error.value.message and "root:" not in error.value.message


# ----------------------------------------------------------------- queue, unit
def test_busy_message_names_the_limit_and_what_to_do() -> None:
    from webapp.serving import busy_message

    class FakeQueue:
        def __init__(self, waiting: int, pending: dict[str, set]) -> None:
            self.waiting, self.pending_event_ids_session = waiting, pending

        def __len__(self) -> int:
            return self.waiting

    assert busy_message(FakeQueue(3, {"a": {1, 2}}), "a", max_size=10, per_session=3) is None
    status, text = busy_message(FakeQueue(10, {}), "a", max_size=10, per_session=3)
    assert status == 503 and text == "The demo is busy: 10 requests are waiting (at most 10). Try again in a minute."
    status, text = busy_message(FakeQueue(0, {"a": {1, 2, 3}}), "a", max_size=10, per_session=3)
    assert status == 429 and "3 requests waiting or running (at most 3 per tab)" in text


# ----------------------------------------------------------------- headers
@pytest.mark.slow
@pytest.mark.parametrize("path", ["/", "/_stcore/health", "/gradio/", "/gradio/config"])
def test_security_headers_on_the_dashboard_and_the_demo(served: Served, path: str) -> None:
    with urllib.request.urlopen(served.url + path, timeout=10) as r:
        headers = r.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    policy = headers["Content-Security-Policy"]
    assert "frame-ancestors 'self' https://huggingface.co https://*.hf.space" in policy
    assert headers.get("X-Frame-Options") is None  # DENY would blank the app inside a Space


# ----------------------------------------------------------------- memory
PEAK_SCRIPT = """
import resource, sys
import numpy as np, cv2
side, path = int(sys.argv[1]), sys.argv[2]
row = (np.arange(side, dtype=np.uint32) * 65535 // (side - 1)).astype(np.uint16)
cv2.imwrite(path, np.ascontiguousarray(np.broadcast_to(row[None, :, None], (side, side, 3))),
            [cv2.IMWRITE_PNG_COMPRESSION, 9])
"""
LOAD_SCRIPT = """
import re, sys
from kpcore.data.imageio import load_image_with_info
image, info = load_image_with_info(sys.argv[1])
peak_kb = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
print(image.shape[1], image.shape[0], info.mode, peak_kb)
"""
"""VmHWM, the peak RSS of this process's own memory since exec. Not ``ru_maxrss``: Linux keeps that across
exec, so a child of a large pytest process reported the parent's ~1.9 GB (CI) instead of its own ~0.5 GB."""


@pytest.mark.slow
def test_a_16_bit_10000x10000_png_peaks_under_the_limit(tmp_path: Path) -> None:
    """The file is written in one process, loaded in another: VmHWM is the loader's peak alone."""
    path = tmp_path / "rgb48.png"
    subprocess.run([sys.executable, "-c", PEAK_SCRIPT, "10000", str(path)], check=True, timeout=300)
    assert path.stat().st_size < 2_000_000  # a small upload
    result = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(path)], capture_output=True, text=True,
                            timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    width, height, mode, peak_kb = result.stdout.split()
    print(f"16-bit 10000x10000 PNG ({path.stat().st_size / 1e6:.2f} MB): peak RSS {int(peak_kb) / 1024:.0f} MB")
    assert (int(width), int(height), mode) == (2048, 2048, "RGB;16")
    assert int(peak_kb) / 1024 < PEAK_LIMIT_MB


def test_sixteen_bit_conversion_matches_rounding_without_floats() -> None:
    from kpcore.data.imageio import _wide_to_uint8

    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expected = np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(_wide_to_uint8(values, "I;16"), expected)
    small = np.array([[0, 7, 255]], np.uint16)  # 8-bit values in a 16-bit file are kept
    np.testing.assert_array_equal(_wide_to_uint8(small, "I;16"), [[0, 7, 255]])


def test_deep_png_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    import cv2

    from kpcore.data.imageio import load_image

    bgra = np.zeros((40, 40, 4), np.uint16)
    bgra[:, :, 2] = 65535  # red
    bgra[:, :20, 3] = 65535  # left half opaque, right half transparent
    bgra[:, 20:, 3] = 0
    cv2.imwrite(str(tmp_path / "rgba64.png"), bgra)
    image = load_image(tmp_path / "rgba64.png")
    assert tuple(image[5, 5]) == (255, 0, 0) and tuple(image[5, 35]) == (255, 255, 255)


def test_a_large_deep_png_is_decoded_at_8_bits_within_one_level(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Above FULL_DEPTH_DECODE_BYTES Pillow's 8-bit decode is used: within one level of the full-depth result."""
    import cv2

    from kpcore.data import imageio
    from kpcore.errors import BadImageError

    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 65536, (64, 80, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "rgb48.png"), bgr)
    full, info = imageio.load_image_with_info(tmp_path / "rgb48.png")
    monkeypatch.setattr(imageio, "FULL_DEPTH_DECODE_BYTES", 64 * 80 * 6 - 1)
    light, light_info = imageio.load_image_with_info(tmp_path / "rgb48.png")
    assert light_info.mode == info.mode == "RGB;16" and light.shape == full.shape == (64, 80, 3)
    assert np.abs(light.astype(int) - full.astype(int)).max() <= 1
    assert not np.array_equal(light, full)  # the other path was really taken (high bytes, not rounding)

    cv2.imwrite(str(tmp_path / "eight_in_sixteen.png"), (bgr % 256).astype(np.uint16))
    with pytest.raises(BadImageError, match="top 8 bits are all zero.*Save it as an 8-bit PNG"):
        imageio.load_image(tmp_path / "eight_in_sixteen.png")


# ----------------------------------------------------------------- video
def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _make_video(path: Path, frames: int, *extra: str) -> Path:
    subprocess.run([_ffmpeg(), "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=30",
                    "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", *extra, str(path)],
                   check=True, timeout=120)
    return path


class NoFacePredictor:
    """Enough of a ``kpcore.Predictor`` for the tracker: its detector never finds a face."""

    name = "no-face"

    def __init__(self) -> None:
        from kpcore.data.facts import FACTS
        from kpcore.data.loader import InputSpec

        self.facts = FACTS["ibug300w"]
        self.spec = InputSpec(width=64, height=64, color="rgb")
        self.config: dict = {}

    def detector(self):
        return SimpleNamespace(detect=lambda image, min_score=None: [])


@pytest.fixture
def video_tab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from webapp import demo_files, live_video

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    monkeypatch.setattr(demo_files, "output_root", lambda: tmp_path / "outputs")
    monkeypatch.setattr(live_video, "_predictor", NoFacePredictor)
    return live_video


def test_video_reading_stops_at_the_frame_limit_whatever_the_container_says(video_tab, tmp_path: Path,
                                                                            monkeypatch) -> None:
    raw = _make_video(tmp_path / "clip.h264", 40, "-f", "h264")  # a raw stream: no frame count
    monkeypatch.setattr(video_tab, "MAX_VIDEO_FRAMES", 12)
    _, csv_path, text = video_tab.track_upload(file_payload(str(raw), "clip.h264"))
    assert text.startswith("**Cut short:** tracked the first 12 frames; the demo's limit of 12 frames")
    assert "12 frames, 0 face(s)" in text and Path(csv_path).read_text().startswith("frame,face,point,x,y")


def test_video_reading_counts_frames_times_pixels(video_tab, tmp_path: Path, monkeypatch) -> None:
    clip = _make_video(tmp_path / "clip.mp4", 30)
    monkeypatch.setattr(video_tab, "MAX_VIDEO_PIXELS", 64 * 48 * 7)
    _, _, text = video_tab.track_upload(file_payload(str(clip), "clip.mp4"))
    assert "tracked 7 of 30 frames; the demo's limit of 7 frames at 64x48" in text


def test_a_truncated_video_says_it_was_cut_short(video_tab, tmp_path: Path) -> None:
    clip = _make_video(tmp_path / "clip.mp4", 90, "-movflags", "+faststart", "-g", "10")
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    video, _, text = video_tab.track_upload(file_payload(str(cut), "cut.mp4"))
    assert text.startswith("**Cut short:** tracked ") and " of 90 frames; the rest of the file could not " \
        "be decoded" in text
    tracked = int(text.split("tracked ")[1].split(" of")[0])
    assert 0 < tracked < 90 and Path(video).is_file()
    whole, _, text = video_tab.track_upload(file_payload(str(clip), "clip.mp4"))
    assert "Cut short" not in text and text.startswith("90 frames")


def test_video_tab_refuses_files_outside_the_uploads(video_tab, tmp_path: Path, monkeypatch) -> None:
    import gradio as gr

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    clip = _make_video(tmp_path / "clip.mp4", 5)
    with pytest.raises(gr.Error, match=REFUSAL) as error:
        video_tab.track_upload(file_payload(str(clip), "clip.mp4"))
    assert str(tmp_path) not in error.value.message
    with pytest.raises(gr.Error, match=REFUSAL):
        video_tab.webcam_frame(file_payload("/etc/passwd"), None)
