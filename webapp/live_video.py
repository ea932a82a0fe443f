"""The demo's "Webcam" and "Video" tabs: kpcore's tracker (:mod:`kpcore.live.track`) on a camera or a file.

Webcam: Gradio streams camera frames (``gr.Image(sources=["webcam"],
streaming=True)`` and ``.stream(..., stream_every=..., time_limit=...)``); each
browser session has its own :class:`kpcore.live.track.Tracker` in a ``gr.State``, so
the detector runs only when a face is new or lost and the points are smoothed
from frame to frame. Video: an uploaded file goes through ``kpcore track``'s
library call and comes back annotated (H.264) with the points as CSV.

:func:`add_video_tabs` is called inside ``build_demo()``'s Blocks (webapp/live.py).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

VIDEO_MODEL = "face68-300w"
STREAM_EVERY = 0.1
"""Seconds between webcam frames sent to the server (the browser's capture rate)."""
STREAM_TIME_LIMIT = 120
"""Seconds of webcam processing per stream, so that one visitor cannot hold the queue."""
FPS_WINDOW = 20
MAX_VIDEO_SECONDS = 120


def _predictor():
    from webapp import live

    folder = live.checkpoint_folder(VIDEO_MODEL)
    if folder is None:
        raise gr.Error(f"the {VIDEO_MODEL} checkpoint is not installed (checkpoints/{VIDEO_MODEL}/); "
                       f"restore it from the repository")
    return live._predictor(str(folder))


class WebcamSession:
    """One browser session's tracker and frame clock."""

    def __init__(self) -> None:
        from kpcore.live.track import Tracker

        self.predictor = _predictor()
        self.tracker = Tracker(self.predictor)
        self.start = time.perf_counter()
        self.stamps: list[float] = []

    def step(self, frame: np.ndarray) -> np.ndarray:
        from kpcore.live.track import draw_faces

        now = time.perf_counter()
        t0 = now
        faces, _ = self.tracker.update(frame, now - self.start)
        ms = (time.perf_counter() - t0) * 1000
        self.stamps = (self.stamps + [now])[-FPS_WINDOW:]
        fps = (len(self.stamps) - 1) / (self.stamps[-1] - self.stamps[0]) if len(self.stamps) > 1 else 0.0
        label = f"{fps:.1f} fps received, {ms:.0f} ms per frame, {len(faces)} face(s)"
        return draw_faces(frame, faces, self.predictor.facts, label)


def webcam_frame(frame: np.ndarray | None, session: WebcamSession | None) -> tuple[Any, Any]:
    """The stream handler: points drawn on the camera frame, with the frame rate."""
    if frame is None:
        return None, session
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    frame = np.ascontiguousarray(frame[..., :3], dtype=np.uint8)
    if session is None:
        session = WebcamSession()
    return session.step(frame), session


def reset_session(_: Any = None) -> None:
    """A new stream (or a cleared camera) starts a new tracker."""
    return None


def track_upload(video: str | None) -> tuple[str, str, str]:
    """An uploaded video -> (annotated H.264 video, CSV of frame,face,point,x,y, summary)."""
    from kpcore.live.track import read_frames, track_video

    if not video:
        raise gr.Error("upload a video first (any format OpenCV reads: mp4, webm, mov, avi, mkv)")
    try:
        _, fps, count, _ = read_frames(video)
    except (FileNotFoundError, ValueError) as e:
        raise gr.Error(str(e)) from None
    if count and count / fps > MAX_VIDEO_SECONDS:
        raise gr.Error(f"the video is {count / fps:.0f} s long; the demo takes up to {MAX_VIDEO_SECONDS} s "
                       f"(use `python -m kpcore track` for longer ones)")
    out = Path(tempfile.mkdtemp(prefix="kpcore-video-"))
    name = Path(video).stem[:40] or "video"
    summary = track_video(video, out / f"{name}_points.csv", out / f"{name}_keypoints.mp4", _predictor())
    text = (f"{summary['frames']} frames, {summary['faces']} face(s), detector on {summary['detector_runs']} "
            f"frame(s), {summary['fps']} frames/s on this server; video written as {summary['codec']}. "
            f"CSV columns: `frame,face,point,x,y` (0-based frame index, stable face ids).")
    return summary["video"], summary["csv"], text


def add_video_tabs() -> None:
    """The "Webcam" and "Video" tabs; call inside a ``gr.Blocks`` context."""
    with gr.Tab("Webcam", id="webcam"):
        gr.Markdown("Allow the camera, then press the record button: every face is tracked and its points are "
                    "drawn on each frame with the frame rate. Frames go to this server every "
                    f"{STREAM_EVERY:g} s for up to {STREAM_TIME_LIMIT} s per stream.")
        session = gr.State(None)
        with gr.Row():
            camera = gr.Image(label="Camera", sources=["webcam"], streaming=True, type="numpy",
                              elem_id="kp-camera", height=360)
            shown = gr.Image(label="Tracked keypoints", type="numpy", interactive=False, elem_id="kp-camera-out",
                             height=360)
        camera.stream(webcam_frame, inputs=[camera, session], outputs=[shown, session],
                      stream_every=STREAM_EVERY, time_limit=STREAM_TIME_LIMIT, concurrency_limit=4,
                      api_visibility="private")
        camera.clear(reset_session, outputs=session, api_visibility="private")
    with gr.Tab("Video", id="video"):
        gr.Markdown("Upload a video: every frame gets its points (detection when a face is new or lost, "
                    "smoothed over time). You get the annotated video and the points as CSV.")
        with gr.Row():
            with gr.Column():
                upload = gr.Video(label="Video", sources=["upload"], elem_id="kp-video-in")
                go = gr.Button("Track keypoints", variant="primary", elem_id="kp-video-run")
            with gr.Column():
                annotated = gr.Video(label="Annotated", interactive=False, elem_id="kp-video-out")
                points = gr.File(label="Points (CSV)", elem_id="kp-video-csv")
                info = gr.Markdown(elem_id="kp-video-info")
        go.click(track_upload, inputs=upload, outputs=[annotated, points, info], api_name="track_video")
