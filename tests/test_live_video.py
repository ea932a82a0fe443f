"""The demo's Webcam and Video tabs (webapp/live_video.py), at handler level.

* Video: the page's event never raises. No video, a text file, a photo, a file
  outside the uploads or an encoder failure after a good run: every output is
  cleared, the message is in words and names no server path, and nothing is
  printed to the server log (``gr.Error(print_exception=False)``, one log line at most).
* Webcam: frames come back as inline JPEGs (no WebP, no file per frame), with the
  tracker's points drawn; the stream event skips Gradio's postprocessing for that.
* scripts/webcam_fps.py: its frame bar code reads back in both orientations, and its
  summary counts drawn frames and delays as documented.

The frame rate in headless Chromium is measured by ``scripts/webcam_fps.py browser``
(minutes, a real browser), not here.
"""

from __future__ import annotations

import base64
import io
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_security import NoFacePredictor, file_payload

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
# gr.Warning outside a served event is a Python warning: expected here
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:gradio.helpers")


def make_video(path: Path, frames: int = 12) -> Path:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=64x48:rate=30", "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt",
                    "yuv420p", str(path)], check=True, timeout=120)
    return path


@pytest.fixture
def video_tab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """webapp.live_video with its upload folder in ``tmp_path/uploads`` and a predictor that finds no face."""
    from webapp import demo_files, live_video

    (tmp_path / "uploads").mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    monkeypatch.setattr(demo_files, "output_root", lambda: tmp_path / "outputs")
    monkeypatch.setattr(live_video, "_predictor", NoFacePredictor)
    return live_video


def upload(tmp_path: Path, name: str, data: bytes | None = None, source: Path | None = None) -> dict:
    path = tmp_path / "uploads" / name
    path.write_bytes(source.read_bytes() if source else data)
    return file_payload(str(path), name)


def assert_cleared_with(outputs: tuple, words: str, tmp_path: Path) -> None:
    """Every output empty but the error box, which says ``words`` and names no server path."""
    error, video, csv_file, summary = outputs
    assert video is None and csv_file is None and summary == ""
    assert "Could not track this video." in error and words in error
    assert str(tmp_path) not in error and "/tmp" not in error and "uploads" not in error


# ------------------------------------------------------------------- video
def test_a_good_video_fills_every_output_and_clears_the_error_box(video_tab, tmp_path: Path) -> None:
    clip = upload(tmp_path, "clip.mp4", source=make_video(tmp_path / "clip.mp4"))
    error, video, csv_file, summary = video_tab.track_upload_ui(clip)
    assert error == "" and Path(video).is_file() and summary.startswith("12 frames, 0 face(s)")
    assert Path(csv_file).read_text().splitlines()[0] == "frame,face,point,x,y"


@pytest.mark.parametrize("case", ["no video", "empty payload", "text named .mp4", "text file", "photo", "outside"])
def test_a_bad_input_after_a_good_run_clears_everything_and_says_why(video_tab, tmp_path: Path, case: str,
                                                                    capsys, caplog) -> None:
    good = video_tab.track_upload_ui(upload(tmp_path, "clip.mp4", source=make_video(tmp_path / "clip.mp4")))
    assert good[1] is not None  # a good run first: its results must not stay
    text = "\n".join(f"line {i}: not a video at all, only words" for i in range(40)).encode()
    photo = io.BytesIO()
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(photo, "JPEG")
    outside = tmp_path / "elsewhere.mp4"
    outside.write_bytes(b"\0" * 64)
    payload, words = {
        "no video": (None, "Upload a video first"),
        "empty payload": ({}, "Upload a video first"),
        "text named .mp4": (upload(tmp_path, "notes.mp4", text), "not a video"),
        "text file": (upload(tmp_path, "notes.txt", text), "This file is text, not a video"),
        "photo": (upload(tmp_path, "face.jpg", photo.getvalue()), "photo (JPEG), not a video; the Keypoints tab"),
        "outside": (file_payload(str(outside), "elsewhere.mp4"), "is not a file uploaded to this demo"),
    }[case]
    caplog.set_level(logging.INFO)
    capsys.readouterr()
    assert_cleared_with(video_tab.track_upload_ui(payload), words, tmp_path)
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err and "Traceback" not in caplog.text


def test_an_error_is_one_message_in_the_box_and_no_toast(video_tab) -> None:
    """Gradio 6 groups toasts and quick errors piled up ('Warning (6)'): the red box alone says it."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs = video_tab.track_upload_ui(None)
    assert "Upload a video first" in outputs[0]
    assert not [w for w in caught if "gradio" in (w.filename or "")], [str(w.message) for w in caught]


def test_the_api_raises_the_same_message_without_a_traceback(video_tab, tmp_path: Path) -> None:
    import gradio as gr

    with pytest.raises(gr.Error, match="this file is text, not a video") as error:
        video_tab.track_upload(upload(tmp_path, "notes.txt", b"plain words, no frames\n" * 30))
    assert error.value.print_exception is False  # Gradio prints no traceback for it


def test_an_encoder_failure_says_so_in_words_with_one_log_line(video_tab, tmp_path: Path, monkeypatch,
                                                               caplog) -> None:
    from kpcore.live import track

    class BrokenWriter(track.VideoWriter):
        def close(self) -> None:
            super().close()
            raise RuntimeError(f"ffmpeg failed writing {self.path} (exit 1)")

    monkeypatch.setattr(track, "VideoWriter", BrokenWriter)
    clip = upload(tmp_path, "clip.mp4", source=make_video(tmp_path / "clip.mp4"))
    with caplog.at_level(logging.WARNING, logger="webapp.live_video"):
        outputs = video_tab.track_upload_ui(clip)
    assert_cleared_with(outputs, "The server could not decode or re-encode this video", tmp_path)
    assert [r.exc_info for r in caplog.records] == [None]  # one line, no traceback
    assert "ffmpeg failed writing" in caplog.text


def test_the_page_event_and_the_api_are_wired_apart() -> None:
    """The button runs the event that never raises; ``track_video`` (the API) still raises AppError."""
    from webapp.live import build_demo
    from webapp.live_video import track_upload, track_upload_ui, video_cleared

    demo = build_demo()
    fns = {fn.fn: fn for fn in demo.fns.values()}
    page, api, change = fns[track_upload_ui], fns[track_upload], fns[video_cleared]
    assert page.api_visibility == "private" and len(page.outputs) == 4 and not page.preprocess
    assert api.api_name == "track_video" and [o._id for o in api.outputs] == [o._id for o in page.outputs[1:]]
    assert [o._id for o in change.outputs] == [o._id for o in page.outputs]


# ------------------------------------------------------------------ webcam
def data_url(rgb: np.ndarray) -> dict:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=92)
    return {"url": "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()}


def decode(value: dict) -> np.ndarray:
    assert value["url"].startswith("data:image/jpeg;base64,") and "path" not in value
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(value["url"].partition(",")[2]))))


def test_webcam_frames_come_back_as_inline_jpegs_with_the_points_drawn() -> None:
    """The real default model on a real face: one session, points drawn, the frame rate label."""
    from webapp import live_video

    photo = np.asarray(Image.open(REPO / "webapp" / "examples" / "astronaut.jpg").convert("RGB").resize((320, 320)))
    session, shown = None, []
    for _ in range(3):
        value, session = live_video.webcam_frame(data_url(photo), session)
        shown.append(decode(value))
    first = session
    _, session = live_video.webcam_frame(data_url(photo), session)
    faces, detector_ran = session.tracker.update(photo, 1.0)
    assert session is first and [f.id for f in faces] == [0] and not detector_ran  # one tracker per stream
    assert shown[-1].shape == photo.shape
    changed = np.abs(shown[-1].astype(int) - photo.astype(int)).max(axis=2) > 80
    assert changed[20:280].sum() > 200  # points and skeleton drawn on the face, not only JPEG noise
    assert changed[300:].sum() > 50  # the label along the bottom edge


def test_the_stream_skips_gradios_postprocessing_and_follows_a_30_fps_camera() -> None:
    """Gradio's Image postprocessing would encode WebP (~37 ms a 640x480 frame) and write a file per frame."""
    from webapp.live import build_demo
    from webapp.live_video import STREAM_EVERY, webcam_frame

    stream = next(fn for fn in build_demo().fns.values() if fn.fn is webcam_frame)
    assert not stream.postprocess and not stream.preprocess and stream.stream_every == STREAM_EVERY
    assert STREAM_EVERY <= 1 / 25 or "KPCORE_WEBCAM_STREAM_EVERY" in __import__("os").environ


# --------------------------------------------------------- the fps script
def test_the_fps_scripts_bar_code_reads_back_either_way_round() -> None:
    import webcam_fps

    for index in (0, 1, 299, 512, 1023):
        strip = webcam_fps.bar_code(index)
        assert webcam_fps.read_bar_code(strip) == index == webcam_fps.read_bar_code(strip[:, ::-1])
    assert webcam_fps.read_bar_code(np.full((8, 640, 3), 200, np.uint8)) is None  # no markers: not a bar code


def test_the_fps_summary_counts_new_frames_and_their_delay() -> None:
    """A camera at 30 fps, every third frame shown 100 ms after it appeared (twice: a repeat is not a new frame)."""
    import webcam_fps

    frame_ms = 1000 / webcam_fps.FPS
    cam = [(i * frame_ms, i % 300) for i in range(600)]
    shown = [(i * frame_ms + 100 + extra, i % 300) for i in range(0, 600, 3) for extra in (0, 5)]
    summary = webcam_fps.summarise(cam, shown, [], start=100, seconds=18)  # frames 0, 3, ..., 537 shown
    assert summary["drawn_fps"] == 10.0 and summary["image_loads_per_s"] == 20.0
    assert summary["delay_ms_median"] == summary["delay_ms_max"] == 100 and abs(summary["camera_fps"] - 30) < 0.2


# ------------------------------------------------------------------ webcam in the browser
def test_the_webcam_tab_tracks_in_the_browser_with_the_server_stream_behind_a_switch() -> None:
    """By default the tab shows the in-browser tracker's page; "on the server" removes it (its camera and
    models stop) and shows Gradio's stream, which stays as it was."""
    from webapp import live_video
    from webapp.live import build_demo

    demo = build_demo()
    page = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "kp-webcam-browser")
    mode = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "kp-webcam-mode")
    assert live_video.WEBCAM_MODE == "browser" or "KPCORE_WEBCAM" in __import__("os").environ
    assert f'src="{live_video.WEBCAM_PAGE}"' in page.value and 'allow="camera"' in page.value
    assert mode.value == live_video.WEBCAM_MODES[live_video.WEBCAM_MODE]
    html, browser_view, server_view = live_video.switch_webcam_mode(live_video.WEBCAM_MODES["server"])
    assert html == "" and browser_view["visible"] is False and server_view["visible"] is True
    html, browser_view, server_view = live_video.switch_webcam_mode(live_video.WEBCAM_MODES["browser"])
    assert "<iframe" in html and browser_view["visible"] is True and server_view["visible"] is False
    switch = next(fn for fn in demo.fns.values() if fn.fn is live_video.switch_webcam_mode)
    assert not switch.queue  # no worker needed to flip a view


def test_the_app_serves_the_webcam_page_its_runtime_and_only_its_models() -> None:
    """app.py serves webapp/static/ before the dashboard's "/" mount, with the types module scripts and
    WebAssembly need under nosniff, and of checkpoints/ only the four files the page loads."""
    import re

    from fastapi.testclient import TestClient

    import app as served_app

    client = TestClient(served_app.app)
    page = client.get("/static-kpcore/webcam/index.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["x-content-type-options"] == "nosniff" and "frame-ancestors" in page.headers[
        "content-security-policy"]
    script = (REPO / "webapp" / "static" / "webcam" / "webcam.mjs").read_text()
    imports = re.findall(r"from '(\.[^']+)'", script)
    assert "../ort/ort.wasm.min.mjs" in imports and "./tracker.mjs" in imports
    for path in ["webcam/webcam.mjs", "webcam/tracker.mjs", "ort/ort.wasm.min.mjs", "ort/ort-wasm-simd-threaded.mjs"]:
        r = client.get(f"/static-kpcore/{path}")
        assert r.status_code == 200 and "javascript" in r.headers["content-type"], path
    wasm = client.get("/static-kpcore/ort/ort-wasm-simd-threaded.wasm")
    assert wasm.headers["content-type"] == "application/wasm" and wasm.content[:4] == b"\0asm"
    assert (REPO / "webapp" / "static" / "ort" / "LICENSE").read_text().startswith("MIT License")
    for name in served_app.WEBCAM_MODEL_FILES:
        r = client.get(f"/static-kpcore/models/{name}")
        assert r.status_code == 200 and r.content == (REPO / "checkpoints" / name).read_bytes(), name
    for name in ["face68-300w/model.safetensors", "face-detector/config.json", "face68-300w/..%2F..%2Fapp.py"]:
        assert client.get(f"/static-kpcore/models/{name}").status_code == 404, name
    assert client.get("/static-kpcore/webcam/..%2F..%2F..%2Fapp.py").status_code == 404  # StaticFiles stays inside
