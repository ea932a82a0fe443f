"""The demo's Webcam and Video tabs (webapp/live_video.py), at handler level.

* Video: the page's event never raises. No video, a text file, a photo, a file
  outside the uploads or an encoder failure after a good run: every output is
  cleared, the message is in words and names no server path, and nothing is
  printed to the server log (``gr.Error(print_exception=False)``, one log line at most).
"""

from __future__ import annotations

import io
import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_security import NoFacePredictor, file_payload

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
