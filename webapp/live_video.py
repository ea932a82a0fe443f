"""The demo's "Webcam" and "Video" tabs: kpcore's tracker (:mod:`kpcore.live.track`) on a camera or a file.

Webcam, "in this browser" (the default, :data:`WEBCAM_MODE`): an iframe of
``webapp/static/webcam/`` (served by app.py), where the page reads the camera,
runs kpcore's tracking rules in JavaScript (``tracker.mjs``, held to the Python
rules by tests/test_webcam_js.py) with BlazeFace and the 68-point model in
onnxruntime-web, and draws the points on a canvas; no frame reaches the server.
"On the server" (the fallback): Gradio streams camera frames (``gr.Image(sources=["webcam"],
streaming=True)`` and ``.stream(..., stream_every=..., time_limit=...)``); each
browser session has its own :class:`kpcore.live.track.Tracker` in a ``gr.State``, so
the detector runs only when a face is new or lost and the points are smoothed
from frame to frame. Video: an uploaded file goes through the same tracker
(:func:`kpcore.live.track.track`) frame by frame, within limits counted while
reading (:class:`BoundedVideo`), and comes back annotated (H.264) with the
points as CSV.

Both events take Gradio's raw payload (``preprocess=False``) and read only files
inside Gradio's upload folder (:mod:`webapp.demo_files`).

:func:`add_video_tabs` is called inside ``build_demo()``'s Blocks (webapp/live.py).
"""

from __future__ import annotations

import base64
import csv
import html
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from webapp.checkpoints import find_checkpoint, predictor
from webapp.demo_files import RefusedFile, accepted_upload, new_output_folder

logger = logging.getLogger(__name__)

VIDEO_MODEL = "face68-300w"
STREAM_EVERY = float(os.environ.get("KPCORE_WEBCAM_STREAM_EVERY", 1 / 30))
"""Seconds between webcam frames the browser sends (Gradio's ``stream_every``): a 30 fps camera's rate.
The server answers the newest frame when it is free; older ones are dropped, never queued."""
WEBCAM_SIZE = (640, 480)
"""The camera resolution asked for: Gradio asks for 1920x1440, so a 1080p webcam sent ~7x the pixels per
frame (encoded in the browser, sent as base64 JSON, decoded here) for points a 640x480 frame gives as well."""
WEBCAM_OPTIONS = gr.WebcamOptions(constraints={"video": {"width": {"ideal": WEBCAM_SIZE[0]},
                                                         "height": {"ideal": WEBCAM_SIZE[1]}}})
STREAM_TIME_LIMIT = 120
"""Seconds of webcam processing per stream, so that one visitor cannot hold the queue."""
WEBCAM_CONCURRENCY = 4
"""Camera streams served at once; more wait in the queue."""
FPS_WINDOW = 20
MAX_VIDEO_SECONDS = 120
"""Longest video the demo takes, by its own frame rate (`kpcore track` has no limit)."""
MAX_VIDEO_FRAMES = 3600
"""Frames read at most, whatever the container says: 120 s at 30 frames/s."""
MAX_VIDEO_PIXELS = MAX_VIDEO_FRAMES * 1280 * 720
"""Frames x pixels read at most: 120 s of 720p at 30 frames/s, or 13 s of 4K (~2 min of work on 2 cores)."""
MAX_FRAME_PIXELS = 4096 * 2160
"""Frames larger than 4K (DCI) are refused: one decoded frame is already 27 MB."""
SHOWN_JPEG_QUALITY = 85
"""JPEG quality of the frames sent back with their points (the browser sends its frames at ~0.92)."""
MAX_WEBCAM_FRAME_BYTES = 8_000_000
"""An inline (base64) webcam frame larger than this is refused; a 1080p JPEG is ~0.5 MB."""
SHORT_TOLERANCE = 0.01
"""A video read to its end with fewer frames than its container declares, by more than this
fraction (and 2 frames), was cut short (a corrupt or truncated stream)."""


def _predictor():
    folder = find_checkpoint(VIDEO_MODEL)
    if folder is None:
        raise gr.Error(f"the {VIDEO_MODEL} checkpoint is not installed (checkpoints/{VIDEO_MODEL}/); "
                       f"restore it from the repository")
    return predictor(str(folder))


def _user_error(message: str) -> gr.Error:
    return gr.Error(message, print_exception=False)


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


def camera_frame(frame: Any) -> np.ndarray | None:
    """A webcam frame as RGB uint8: an array, an inline ``data:`` image, or an uploaded file.

    The stream's event takes Gradio's raw payload (``preprocess=False``), so a
    file path is accepted only inside the upload folder
    (:func:`webapp.demo_files.accepted_upload`) and every frame is decoded by
    kpcore's loader (size limits, no server path in messages).
    """
    from kpcore.data.imageio import load_image

    if frame is None or isinstance(frame, np.ndarray):
        return frame
    url = frame.get("url") if isinstance(frame, dict) else getattr(frame, "url", None)
    try:
        if isinstance(url, str) and url.startswith("data:"):
            encoded = url.partition(",")[2]
            if len(encoded) > MAX_WEBCAM_FRAME_BYTES * 4 // 3:
                raise _user_error(f"a camera frame over {MAX_WEBCAM_FRAME_BYTES / 1e6:.0f} MB was refused; "
                                  "lower the camera's resolution")
            return load_image(base64.b64decode(encoded, validate=False))
        return load_image(accepted_upload(frame, "camera frame").path)
    except (RefusedFile, ValueError) as e:  # kpcore's BadImageError is a ValueError
        raise _user_error(str(e)) from None


def inline_jpeg(rgb: np.ndarray, quality: int = SHOWN_JPEG_QUALITY) -> dict[str, Any]:
    """An RGB frame as the Image component's value, inline: ``{"url": "data:image/jpeg;base64,..."}``.

    The stream's event skips Gradio's postprocessing (``postprocess=False``),
    which would encode WebP (~37 ms for 640x480 on this 2-core CPU, JPEG ~2 ms),
    write a file per frame to the cache and make the browser fetch it.
    """
    import cv2

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode a camera frame as JPEG")
    return {"url": "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii"),
            "orig_name": "keypoints.jpg", "mime_type": "image/jpeg"}


def webcam_frame(frame: Any, session: WebcamSession | None) -> tuple[Any, Any]:
    """The stream handler: points drawn on the camera frame, with the frame rate, as an inline JPEG."""
    frame = camera_frame(frame)
    if frame is None:
        return None, session
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    frame = np.ascontiguousarray(frame[..., :3], dtype=np.uint8)
    if session is None:
        session = WebcamSession()
    return inline_jpeg(session.step(frame)), session


WEBCAM_MODES = {"browser": "in this browser", "server": "on the server"}
WEBCAM_MODE = os.environ.get("KPCORE_WEBCAM", "browser")
"""Where the Webcam tab tracks at first: ``browser`` (webapp/static/webcam/: onnxruntime-web in the page; in
headless Chromium on 2 shared cores it drew 25+ frames/s where the server stream drew 6-9) or ``server``
(the Gradio stream to :func:`webcam_frame`). The tab's radio switches between them."""
if WEBCAM_MODE not in WEBCAM_MODES:
    raise ValueError(f"KPCORE_WEBCAM must be one of {sorted(WEBCAM_MODES)}; got {WEBCAM_MODE!r}")
WEBCAM_PAGE = "/static-kpcore/webcam/index.html"
"""The in-browser tracker's page, served by app.py from webapp/static/."""


def webcam_page(show: bool) -> str:
    """The Webcam tab's in-browser tracker (an iframe of :data:`WEBCAM_PAGE`), or nothing when hidden."""
    if not show:
        return ""
    return (f'<iframe src="{WEBCAM_PAGE}" allow="camera" title="kpcore webcam tracker (in this browser)" '
            'style="width:100%;max-width:660px;height:560px;border:0"></iframe>')


def switch_webcam_mode(label: str) -> tuple:
    """The radio's event: the in-browser page (added or removed) and which view shows."""
    in_browser = label == WEBCAM_MODES["browser"]
    return webcam_page(in_browser), gr.update(visible=in_browser), gr.update(visible=not in_browser)


def reset_session(_: Any = None) -> None:
    """A new stream (or a cleared camera) starts a new tracker."""
    return None


# -------------------------------------------------------------------- video
@dataclass
class BoundedVideo:
    """A video file read frame by frame, stopping at the demo's limits (:func:`open_video`).

    The container's frame count and rate are only hints (a raw ``.h264`` stream
    declares 0 frames): the frames and pixels actually decoded are counted, and
    reading stops at :data:`MAX_VIDEO_FRAMES` frames or :data:`MAX_VIDEO_PIXELS`
    frames x pixels. After reading, :attr:`stopped` says why it ended early, if it did.
    """

    path: Path
    fps: float
    declared: int  # frames the container declares (0: unknown)
    size: tuple[int, int]  # (width, height) the container declares
    read: int = 0
    stopped: str | None = None  # None: read to its end

    def frames(self) -> Iterator[np.ndarray]:
        import cv2

        width, height = self.size
        frame_limit = min(MAX_VIDEO_FRAMES, MAX_VIDEO_PIXELS // max(1, width * height))
        cap = cv2.VideoCapture(str(self.path))
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                if bgr.shape[1] != width or bgr.shape[0] != height:
                    self.stopped = (f"frame {self.read + 1} is {bgr.shape[1]}x{bgr.shape[0]}, not the "
                                    f"{width}x{height} the file declares")
                    break
                if self.read >= frame_limit:
                    self.stopped = (f"the demo's limit of {frame_limit} frames at {width}x{height} "
                                    f"({MAX_VIDEO_PIXELS / 1e9:.1f} gigapixels in all) was reached")
                    break
                self.read += 1
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()
        short = self.declared - max(2, round(self.declared * SHORT_TOLERANCE))
        if self.stopped is None and self.declared and self.read < short:
            self.stopped = "the rest of the file could not be decoded (truncated or corrupt)"

    def note(self) -> str:
        """What to tell the user about a video that was not read to its end ("" when it was)."""
        if self.stopped is None:
            return ""
        of = f"{self.read} of {self.declared}" if self.declared else f"the first {self.read}"
        return f"**Cut short:** tracked {of} frames; {self.stopped}."


def open_video(path: Path) -> BoundedVideo:
    """Open an uploaded video and check what its container declares against the demo's limits.

    Raises:
        gr.Error: not a video OpenCV can read, frames above :data:`MAX_FRAME_PIXELS`, or a
            declared length over :data:`MAX_VIDEO_SECONDS`.
    """
    import cv2

    from kpcore.live.track import DEFAULT_FPS

    still = _still_image(path)
    if still:
        raise _user_error(f"this file is a photo ({still}), not a video; the Keypoints tab takes photos")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise _user_error(NOT_A_VIDEO)
        if _fourcc(cap.get(cv2.CAP_PROP_FOURCC)) in TEXT_CODECS:  # FFmpeg shows a text file as a video of text
            raise _user_error("this file is text, not a video; upload a video (mp4, webm, mov, avi, mkv)")
        fps = cap.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
        fps = fps if 1 <= fps <= 1000 else DEFAULT_FPS
        declared = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        cap.release()
    if size[0] * size[1] > MAX_FRAME_PIXELS or min(size) < 1:
        raise _user_error(f"the video's frames are {size[0]}x{size[1]}; the demo takes up to 4096x2160 "
                          "(use `python -m kpcore track` for larger ones)")
    if declared / fps > MAX_VIDEO_SECONDS:
        raise _user_error(f"the video is {declared / fps:.0f} s long; the demo takes up to {MAX_VIDEO_SECONDS} s "
                          f"(use `python -m kpcore track` for longer ones)")
    return BoundedVideo(path, float(fps), declared, size)


NOT_A_VIDEO = ("this file is not a video OpenCV can read; convert it to MP4 (H.264), e.g. "
               "`ffmpeg -i in.mov -c:v libx264 out.mp4`")
TEXT_CODECS = {"ansi", "tty"}
"""FFmpeg codecs that draw a text file as frames: such a "video" is refused."""


def _fourcc(value: float) -> str:
    code = int(value)
    return bytes((code >> 8 * i) & 0xFF for i in range(4)).decode("latin-1").strip().lower()


def _still_image(path: Path) -> str | None:
    """The format of a one-frame image file (JPEG, PNG, ...; not an animated GIF), else None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:  # reads the header only
            return image.format if getattr(image, "n_frames", 1) == 1 else None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def _video_payload(video: Any) -> Any:
    """The file of a ``gr.Video`` payload (Gradio 4 wrapped it as ``{"video": FileData, ...}``)."""
    if isinstance(video, dict) and "path" not in video and isinstance(video.get("video"), dict):
        return video["video"]
    return video


def track_upload(video: Any) -> tuple[str, str, str]:
    """An uploaded video -> (annotated H.264 video, CSV of frame,face,point,x,y, summary).

    ``video`` is Gradio's raw payload (``preprocess=False``): only a file in the
    upload folder is read (:func:`webapp.demo_files.accepted_upload`), frame by
    frame within the demo's limits (:class:`BoundedVideo`); a video that ends
    early says so in the summary.
    """
    import cv2

    if not video:
        raise _user_error(NO_VIDEO)
    try:
        upload = accepted_upload(_video_payload(video), "video")
    except RefusedFile as e:
        raise _user_error(str(e)) from None
    source = open_video(upload.path)
    model = _predictor()
    out = new_output_folder()
    name = Path(upload.name).stem[:40] or "video"
    csv_path, video_path = out / f"{name}_points.csv", out / f"{name}_keypoints.mp4"
    ids: set[int] = set()
    start = time.perf_counter()
    try:
        codec, runs = _write_tracked(source, model, csv_path, video_path, ids)
    except (RuntimeError, OSError, cv2.error) as e:  # ffmpeg or OpenCV failed: the server's fault, not the file's
        logger.warning("video tab: could not track %s: %s: %s", upload.name, type(e).__name__, e)
        raise _user_error("the server could not decode or re-encode this video; try another file, or convert "
                          "it with `ffmpeg -i in.mp4 -c:v libx264 out.mp4`") from None
    if source.read == 0:
        raise _user_error("no frame of this video could be decoded; re-encode it, e.g. "
                          "`ffmpeg -i in.mp4 -c:v libx264 out.mp4`")
    seconds = time.perf_counter() - start
    text = (f"{source.read} frames, {len(ids)} face(s), detector on {runs} frame(s), "
            f"{source.read / seconds:.1f} frames/s on this server; video written as {codec}. "
            f"CSV columns: `frame,face,point,x,y` (0-based frame index, stable face ids).")
    if source.note():
        text = source.note() + "\n\n" + text
    return str(video_path), str(csv_path), text


def _write_tracked(source: BoundedVideo, model, csv_path: Path, video_path: Path, ids: set[int]) -> tuple[str, int]:
    """Track ``source`` into the CSV and the annotated video (face ids into ``ids``).

    Returns the video's codec and the number of frames the detector ran on.
    """
    from kpcore.live.track import CSV_COLUMNS, VideoWriter, draw_faces, track

    runs = 0
    recent: list[float] = []
    writer = VideoWriter(video_path, source.fps, source.size)
    try:
        with open(csv_path, "w", newline="") as f:
            rows = csv.writer(f)
            rows.writerow(CSV_COLUMNS)
            for r in track(source.frames(), model, fps=source.fps):
                runs += r.detector_ran
                for face in r.faces:
                    ids.add(face.id)
                    rows.writerows((r.index, face.id, k, f"{x:.2f}", f"{y:.2f}")
                                   for k, (x, y) in enumerate(face.points.tolist()))
                recent = (recent + [time.perf_counter()])[-FPS_WINDOW:]
                rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
                # the processing rate, not the video's own frame rate
                label = f"tracked at {rate:.0f} frames/s" if rate else None
                writer.write(draw_faces(r.frame, r.faces, model.facts, label, copy=False))
    finally:
        try:
            writer.close()
        except RuntimeError:
            if source.read:  # ffmpeg fails on zero frames: that case has its own message
                raise
    return writer.codec, runs


NO_VIDEO = "upload a video first (any format OpenCV reads: mp4, webm, mov, avi, mkv), then press Track keypoints"
VIDEO_QUEUE = {"concurrency_id": "video", "concurrency_limit": 1}
"""The page's event and the ``track_video`` API share one worker: a video takes up to ~2 min on 2 cores."""


def video_error_box(message: str) -> str:
    """The red box above the Video tab's results, kept until the next run or upload."""
    return (f"<div class='kp-error' role='alert' style='border:2px solid #d92626;background:#fdecec;"
            f"color:#7a0b0b;padding:10px 14px;border-radius:8px;font-size:15px'><b>Could not track this "
            f"video.</b> {html.escape(message[:1].upper() + message[1:])}</div>")


def video_cleared(message: str = "") -> tuple:
    """Every output of the Video tab emptied (error box, video, CSV, summary); the box says ``message``, if any."""
    return (video_error_box(message) if message else "", None, None, "")


def track_upload_ui(video: Any) -> tuple:
    """The page's event: :func:`track_upload`, but it never raises, so no earlier run's results stay on screen.

    An error (no video, not a video, a file outside the uploads, ...): every
    output cleared, the message in words in the red box (no server path), replaced by
    the next result; no toast (Gradio 6 groups toasts and quick errors piled up, as on
    the Keypoints tab); nothing in the server log.
    """
    try:
        video_path, csv_path, text = track_upload(video)
    except gr.Error as e:
        return video_cleared(e.message)
    return "", video_path, csv_path, text


def add_video_tabs() -> None:
    """The "Webcam" and "Video" tabs; call inside a ``gr.Blocks`` context."""
    with gr.Tab("Webcam", id="webcam"):
        in_browser = WEBCAM_MODE == "browser"
        mode = gr.Radio(list(WEBCAM_MODES.values()), value=WEBCAM_MODES[WEBCAM_MODE], label="Run the tracker",
                        elem_id="kp-webcam-mode")
        with gr.Column(visible=in_browser) as browser_view:
            gr.Markdown("Press **Start camera** and allow the camera: the face detector and the 68-point model "
                        "run in this browser (onnxruntime-web), so no frame leaves your computer; the points are "
                        "drawn on each frame with the frames drawn per second and the delay from a frame's "
                        "capture to its points. Slow computer or an old browser: choose *on the server*.")
            page = gr.HTML(webcam_page(in_browser), elem_id="kp-webcam-browser")
        with gr.Column(visible=not in_browser) as server_view:
            gr.Markdown("Allow the camera, then press the record button: every face is tracked and its points "
                        "are drawn on each frame with the frame rate. Frames go to this server up to "
                        f"{1 / STREAM_EVERY:.0f} times a second (the newest one when the server is busy), "
                        f"for up to {STREAM_TIME_LIMIT} s per stream.")
            session = gr.State(None)
            with gr.Row():
                camera = gr.Image(label="Camera", sources=["webcam"], streaming=True, type="numpy",
                                  elem_id="kp-camera", height=360, webcam_options=WEBCAM_OPTIONS)
                shown = gr.Image(label="Tracked keypoints", type="numpy", interactive=False,
                                 elem_id="kp-camera-out", height=360)
        # preprocess=False: frames are decoded by camera_frame (kpcore's loader, uploads only)
        camera.stream(webcam_frame, inputs=[camera, session], outputs=[shown, session],
                      stream_every=STREAM_EVERY, time_limit=STREAM_TIME_LIMIT, concurrency_limit=WEBCAM_CONCURRENCY,
                      concurrency_id="webcam", api_visibility="private", preprocess=False, postprocess=False)
        camera.clear(reset_session, outputs=session, api_visibility="private")
        # the page is removed when hidden, so that its camera and models stop
        mode.change(switch_webcam_mode, inputs=mode, outputs=[page, browser_view, server_view], queue=False,
                    api_visibility="private")
    with gr.Tab("Video", id="video"):
        gr.Markdown("Upload a video: every frame gets its points (detection when a face is new or lost, "
                    "smoothed over time). You get the annotated video and the points as CSV.")
        with gr.Row():
            with gr.Column():
                upload = gr.Video(label="Video", sources=["upload"], elem_id="kp-video-in")
                go = gr.Button("Track keypoints", variant="primary", elem_id="kp-video-run")
            with gr.Column():
                error = gr.HTML(elem_id="kp-video-error")
                annotated = gr.Video(label="Annotated", interactive=False, elem_id="kp-video-out")
                points = gr.File(label="Points (CSV)", elem_id="kp-video-csv")
                info = gr.Markdown(elem_id="kp-video-info")
                # The API's trigger, never shown
                api = gr.Button(visible=False, elem_id="kp-video-api")
        outputs = [error, annotated, points, info]
        # preprocess=False: Gradio would copy whatever file the request names into its cache first.
        # The page's event never raises (an error cleared nothing and left "Error" badges on every output).
        go.click(track_upload_ui, inputs=upload, outputs=outputs, preprocess=False, api_visibility="private",
                 **VIDEO_QUEUE)
        # A new or removed video: the last one's results go (no server work beyond the event).
        upload.change(video_cleared, outputs=outputs, api_visibility="private", queue=False)
        # The API: raises AppError with the message.
        api.click(track_upload, inputs=upload, outputs=[annotated, points, info], api_name="track_video",
                  preprocess=False, **VIDEO_QUEUE)
