"""Keypoints on video: detect a face once, then follow it with crops from its own points.

    from kpcore.live.track import track
    for frame in track("clip.mp4"):                    # a generator over frames
        for face in frame.faces:
            face.id, face.points                        # stable id, (K, 2) smoothed points

    python -m kpcore track clip.mp4 --csv points.csv --video annotated.mp4

Per frame, each tracked face is cropped from the region its points gave on the
previous frame (the checkpoint's ``points_box_map``, fitted by ``kpcore
calibrate``), all faces in one batch. The face detector runs only when there is
no face yet, when a face is lost (its new points no longer fit the crop they
came from), and every ``detect_every`` frames to pick up new faces (and to drop
tracks that no detection confirms). Points are smoothed over time by
:class:`kpcore.live.smoothing.FaceFilter`: One Euro filters on the face's motion
(``params``) and on its shape in its own frame (``shape_params``).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..data import geometry as geo
from ..errors import BadVideoError
from .smoothing import FaceFilter, OneEuroParams

DEFAULT_MODEL = "face68-300w"
DETECT_EVERY = 30
"""Frames between detector runs that look for new faces (0: only when no face is tracked)."""
LOST_SHIFT = 0.35
"""A face is lost when its new points' region centre moved by more than this fraction of the crop."""
LOST_SCALE = (0.6, 1.6)
"""... or when that region's size changed by a factor outside this range in one frame."""
DRIFT_SCALE = (0.5, 2.0)
"""... or when it grew or shrank by a factor outside this range since the detector last saw the face
(a track on something that is not a face tends to shrink a little every frame); the detector then
looks again on that frame, and a face it finds there keeps its id."""
MATCH_IOU = 0.3
"""A detection belongs to a track when the boxes overlap at least this much (IoU)."""
CSV_COLUMNS = ("frame", "face", "point", "x", "y")
DEFAULT_FPS = 30.0


@dataclass
class TrackedFace:
    """One face on one frame.

    Attributes:
        id: Stable id (0, 1, ... in order of first appearance).
        points: ``(K, 2)`` points in frame pixels (smoothed when smoothing is on).
        raw_points: The model's points before smoothing.
        region: The crop ``(left, top, width, height)`` the points came from.
        detected: True when this frame's crop came from the detector.
    """

    id: int
    points: np.ndarray
    raw_points: np.ndarray
    region: tuple[float, float, float, float]
    detected: bool = False


@dataclass
class FrameResult:
    """What :func:`track` yields per frame.

    Attributes:
        index: 0-based frame index.
        time: Seconds from the start of the video.
        faces: The tracked faces.
        detector_ran: Whether the face detector ran on this frame.
        frame: The frame, RGB uint8 ``(H, W, 3)``.
    """

    index: int
    time: float
    faces: list[TrackedFace]
    detector_ran: bool
    frame: np.ndarray = field(repr=False)


@dataclass
class _Track:
    id: int
    region: tuple[float, float, float, float]
    points: np.ndarray | None = None
    smooth: FaceFilter | None = None
    anchor: float = 0.0  # crop width when the detector last saw this face

    def __post_init__(self) -> None:
        self.anchor = self.anchor or self.region[2]


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    iw = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    ih = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


class Tracker:
    """Follows faces from frame to frame; call :meth:`update` once per frame.

    Args:
        predictor: A :class:`~kpcore.live.predict.Predictor` of a box-cropped model.
        smooth: Smooth the points over time (:class:`~kpcore.live.smoothing.FaceFilter`).
        params: The One Euro parameters of the face's motion (its similarity pose).
        shape_params: Those of its shape in its own frame (default
            :data:`kpcore.live.smoothing.SHAPE_PARAMS`).
        detect_every: Frames between detector runs that look for new faces;
            0 runs it only when no face is tracked.
        max_faces: Track at most this many faces (the largest detections).
        min_score: Detector score threshold (default: the detector's).
    """

    def __init__(self, predictor, smooth: bool = True, params: OneEuroParams | None = None,
                 detect_every: int = DETECT_EVERY, max_faces: int | None = None,
                 min_score: float | None = None, shape_params: OneEuroParams | None = None) -> None:
        if predictor.spec.crop_mode != "box":
            raise ValueError(f"tracking needs a model that crops face boxes; {predictor.name} uses the whole "
                             f"image (crop_mode={predictor.spec.crop_mode!r})")
        if detect_every < 0:
            raise ValueError(f"detect_every must be >= 0 frames; got {detect_every}")
        self.predictor = predictor
        self.smooth = smooth
        self.params = params or OneEuroParams()
        self.params.validate()
        self.shape_params = shape_params
        self.detect_every = detect_every
        self.max_faces = max_faces
        self.min_score = min_score
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._frames = 0
        self._since_detect = 0

    def reset(self) -> None:
        """Forget all faces (the next frame runs the detector)."""
        self._tracks = []
        self._since_detect = 0

    def region_from_points(self, points: np.ndarray) -> tuple[float, float, float, float]:
        """The square crop for a face whose points are ``points`` (as the model was trained)."""
        box = geo.points_box(points)
        box_map = self.predictor.config.get("points_box_map")
        if box_map is not None:
            from .calibrate import box_to_region

            left, top, w, h = box_to_region(box, box_map)
        else:  # no fitted map: the training crop of the points' box
            left, top, w, h = self.predictor.region_for(box, (1, 1))
        side = float(np.sqrt(w * h))
        cx, cy = left + w / 2, top + h / 2
        aspect = self.predictor.spec.width / self.predictor.spec.height
        return cx - side * aspect / 2, cy - side / 2, side * aspect, side

    def _detect(self, frame: np.ndarray) -> list[tuple[float, float, float, float]]:
        faces = self.predictor.detector().detect(frame, self.min_score)
        faces = sorted(faces, key=lambda f: -f.area)[: self.max_faces]
        return [self.predictor.detector_region(f.box, (frame.shape[1], frame.shape[0])) for f in faces]

    def _lost(self, old: Sequence[float], new: Sequence[float]) -> bool:
        shift = np.hypot(new[0] + new[2] / 2 - old[0] - old[2] / 2, new[1] + new[3] / 2 - old[1] - old[3] / 2)
        scale = new[2] / old[2]
        return bool(shift > LOST_SHIFT * old[2] or not LOST_SCALE[0] <= scale <= LOST_SCALE[1])

    def update(self, frame: np.ndarray, t: float | None = None) -> tuple[list[TrackedFace], bool]:
        """Points of every tracked face on ``frame`` (RGB uint8) seen at ``t`` seconds.

        Returns:
            ``(faces, detector_ran)``.
        """
        t = self._frames / DEFAULT_FPS if t is None else t
        self._frames += 1
        detector_ran = False
        fresh: set[int] = set()
        if not self._tracks or (self.detect_every and self._since_detect >= self.detect_every):
            detector_ran = True
            fresh = self._merge_detections(self._detect(frame), drop_unconfirmed=True)
        results = self._predict(frame, t, self._tracks, fresh)
        lost = [tr for tr, f in zip(self._tracks, results, strict=True) if f is None]
        out = [f for f in results if f is not None]
        if lost:
            self._tracks = [tr for tr, f in zip(self._tracks, results, strict=True) if f is not None]
            if not detector_ran:  # look again on this frame; a face found where one was lost keeps its id
                detector_ran = True
                fresh = self._merge_detections(self._detect(frame), drop_unconfirmed=False, revive=lost)
                new = [tr for tr in self._tracks if tr.id in fresh]
                again = self._predict(frame, t, new, fresh)
                dropped = {tr.id for tr, f in zip(new, again, strict=True) if f is None}
                self._tracks = [tr for tr in self._tracks if tr.id not in dropped]
                out += [f for f in again if f is not None]
        self._since_detect = 0 if detector_ran else self._since_detect + 1
        return sorted(out, key=lambda f: f.id), detector_ran

    def _merge_detections(self, regions: list[tuple[float, ...]], drop_unconfirmed: bool,
                          revive: Sequence[_Track] = ()) -> set[int]:
        """Match detections to tracks by overlap; unmatched detections start tracks.

        With ``drop_unconfirmed``, tracks that no detection confirms are dropped
        (they may have drifted onto the background). A detection that overlaps a
        track in ``revive`` (lost on this frame) takes that track's id. Returns the
        ids whose crop now comes from the detector.
        """
        kept: list[_Track] = []
        used: set[int] = set()
        for tr in self._tracks:
            best = max(((_iou(tr.region, r), i) for i, r in enumerate(regions) if i not in used),
                       default=(0.0, -1))
            if best[0] >= MATCH_IOU:
                used.add(best[1])
                tr.anchor = float(regions[best[1]][2])
                kept.append(tr)  # keep following it from its own points (a steadier crop)
            elif not drop_unconfirmed:
                kept.append(tr)
        fresh: set[int] = set()
        for i, r in enumerate(regions):
            if i in used or (self.max_faces is not None and len(kept) >= self.max_faces):
                continue
            region = tuple(float(v) for v in r)
            old = max(revive, key=lambda tr: _iou(tr.region, region), default=None)
            if old is not None and _iou(old.region, region) >= MATCH_IOU and old.id not in fresh:
                tr = _Track(old.id, region)
            else:
                tr = _Track(self._next_id, region)
                self._next_id += 1
            kept.append(tr)
            fresh.add(tr.id)
        self._tracks = kept
        return fresh

    def _predict(self, frame: np.ndarray, t: float, tracks: list[_Track],
                 detected_ids: set[int]) -> list[TrackedFace | None]:
        if not tracks:
            return []
        regions = [tr.region for tr in tracks]
        pts = self.predictor.predict_regions([frame] * len(tracks), regions)
        out: list[TrackedFace | None] = []
        for tr, region, p in zip(tracks, regions, pts, strict=True):
            new_region = self.region_from_points(p)
            drift = new_region[2] / tr.anchor
            if not np.isfinite(p).all() or self._lost(region, new_region) or \
                    not DRIFT_SCALE[0] <= drift <= DRIFT_SCALE[1]:
                out.append(None)
                continue
            if self.smooth:
                if tr.smooth is None:
                    tr.smooth = FaceFilter(self.params, self.shape_params)
                shown = tr.smooth(p, t, scale=region[2]).astype(np.float32)
            else:
                shown = p
            tr.points = shown
            # the next crop follows the shown (smoothed) points: a steadier input gives steadier output
            tr.region = self.region_from_points(shown)
            out.append(TrackedFace(tr.id, shown, p, region, tr.id in detected_ids))
        return out


# ------------------------------------------------------------------ video i/o
def read_frames(video: str | os.PathLike) -> tuple[Iterator[np.ndarray], float, int, tuple[int, int]]:
    """``(RGB frames, fps, frame count (0 if unknown), (width, height))`` of any video OpenCV reads.

    The first frame is decoded here, so that a file that is not a video, or one whose frames
    cannot be decoded (truncated, damaged), fails now rather than as a video of 0 frames.

    Raises:
        FileNotFoundError: No such file.
        BadVideoError: Not a video OpenCV reads, or no frame of it decodes.
    """
    path = Path(video)
    if not path.is_file():
        what = "is a folder, not a video file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"video {path} {what}; check the path")
    convert = f"convert it, e.g. `ffmpeg -i {path.name} -c:v libx264 out.mp4`"
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise BadVideoError(f"OpenCV cannot open {path} as a video (not a video, or damaged); {convert}")
    ok, first = cap.read()
    if not ok:
        cap.release()
        raise BadVideoError(f"OpenCV cannot decode any frame of {path} (truncated, damaged, or not a video); "
                            f"check the file, or {convert}")
    fps = cap.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
    fps = fps if 1 <= fps <= 1000 else DEFAULT_FPS
    count = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def frames() -> Iterator[np.ndarray]:
        try:
            yield cv2.cvtColor(first, cv2.COLOR_BGR2RGB)
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()

    return frames(), float(fps), count, size


def track(video: str | os.PathLike | Iterable[np.ndarray], predictor=None, *, smooth: bool = True,
          params: OneEuroParams | None = None, detect_every: int = DETECT_EVERY, fps: float | None = None,
          max_faces: int | None = None, progress: bool = False,
          shape_params: OneEuroParams | None = None) -> Iterator[FrameResult]:
    """Track faces through a video file (or any iterable of RGB frames); yields one result per frame.

    Args:
        video: A path OpenCV can read, or RGB uint8 frames.
        predictor: A :class:`~kpcore.live.predict.Predictor` (default: ``checkpoints/face68-300w``).
        smooth: Smooth the points (``params``, ``shape_params``: see :class:`Tracker`).
        detect_every: See :class:`Tracker`.
        fps: Frame rate for the filter's clock (default: the file's, else 30).
        max_faces: At most this many faces.
        progress: Show a progress bar.
    """
    from tqdm import tqdm

    if predictor is None:
        from .predict import Predictor

        predictor = Predictor.from_pretrained(DEFAULT_MODEL)
    count = 0
    if isinstance(video, (str, os.PathLike)):
        frames, file_fps, count, _ = read_frames(video)
        fps = fps or file_fps
    else:
        frames = iter(video)
    fps = fps or DEFAULT_FPS
    tracker = Tracker(predictor, smooth=smooth, params=params, detect_every=detect_every, max_faces=max_faces,
                      shape_params=shape_params)
    bar = tqdm(total=count or None, unit="frame", desc="tracking", disable=not progress)
    try:
        for i, frame in enumerate(frames):
            faces, ran = tracker.update(frame, i / fps)
            bar.update(1)
            yield FrameResult(i, i / fps, faces, ran, frame)
    finally:
        bar.close()


# ------------------------------------------------------------------ drawing and writing
def draw_faces(frame: np.ndarray, faces: Sequence[TrackedFace], layout=None, label: str | None = None,
               copy: bool = True) -> np.ndarray:
    """Points (and the layout's skeleton) of every face, with an optional text label (bottom left), on ``frame``.

    Works on RGB or BGR alike (the colours are symmetric in R and B except the label).
    """
    out = frame.copy() if copy else frame
    h, w = out.shape[:2]
    for f in faces:
        size = max(f.region[2], 1.0)
        radius = max(1, round(size / 110))
        pts = np.round(f.points * 4).astype(np.int32)  # 2 fractional bits for anti-aliased drawing
        if layout is not None:
            for a, b in layout.edges:
                cv2.line(out, tuple(pts[a]), tuple(pts[b]), (0, 200, 255), 1, cv2.LINE_AA, shift=2)
        for p in pts:
            cv2.circle(out, tuple(p), radius * 4, (255, 40, 40), -1, cv2.LINE_AA, shift=2)
        x0, y0 = np.clip(f.points.min(0), 0, [w - 1, h - 1]).astype(int)
        cv2.putText(out, f"#{f.id}", (int(x0), max(12, int(y0) - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 0), 1, cv2.LINE_AA)
    if label:  # bottom left: players and Gradio's image label cover the top left corner
        at = (8, h - 10)
        cv2.putText(out, label, at, cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, label, at, cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class VideoWriter:
    """Writes RGB frames to a video browsers play.

    H.264 (yuv420p, ``+faststart``) through the ``ffmpeg`` program when it has
    libx264; else OpenCV's ``avc1``; else OpenCV's MPEG-4 Part 2 (``mp4v``), which
    most browsers do not play. :attr:`codec` says which was written.
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = size
        self._proc = None
        self._cv = None
        w, h = size
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg and w % 2 == 0 and h % 2 == 0 and _has_libx264(ffmpeg):
            self._proc = subprocess.Popen(
                [ffmpeg, "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                 "-r", f"{fps:.6g}", "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                 "-movflags", "+faststart", str(self.path)], stdin=subprocess.PIPE)
            self.codec = "H.264 (ffmpeg libx264)"
            return
        for fourcc, name in (("avc1", "H.264 (OpenCV avc1)"), ("mp4v", "MPEG-4 Part 2 (OpenCV mp4v; most "
                                                                          "browsers cannot play it)")):
            cv = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
            if cv.isOpened():
                self._cv, self.codec = cv, name
                return
        raise RuntimeError(f"cannot write {self.path}: no H.264 or MPEG-4 encoder in ffmpeg or OpenCV; install "
                           f"ffmpeg (apt-get install ffmpeg)")

    def write(self, rgb: np.ndarray) -> None:
        if self._proc is not None:
            self._proc.stdin.write(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
        else:
            self._cv.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._proc is not None:
            self._proc.stdin.close()
            if self._proc.wait() != 0:
                raise RuntimeError(f"ffmpeg failed writing {self.path} (exit {self._proc.returncode})")
            self._proc = None
        if self._cv is not None:
            self._cv.release()
            self._cv = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _has_libx264(ffmpeg: str) -> bool:
    try:
        out = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return "libx264" in out.stdout


def track_video(video: str | os.PathLike, csv_out: str | os.PathLike, video_out: str | os.PathLike | None = None,
                predictor=None, *, smooth: bool = True, params: OneEuroParams | None = None,
                detect_every: int = DETECT_EVERY, progress: bool = False, show_fps: bool = True) -> dict:
    """Track a video file; write ``frame,face,point,x,y`` rows to ``csv_out`` and optionally an annotated video.

    Returns:
        ``{"frames", "faces", "detector_runs", "seconds", "fps", "csv", "video"?, "codec"?}``
        (``fps`` = frames per second of this call's tracking loop, writing included).
    """
    if predictor is None:
        from .predict import Predictor

        predictor = Predictor.from_pretrained(DEFAULT_MODEL)
    _, file_fps, _, size = read_frames(video)
    csv_out = Path(csv_out)
    csv_out.parent.mkdir(parents=True, exist_ok=True)
    writer = VideoWriter(video_out, file_fps, size) if video_out else None
    ids: set[int] = set()
    n = runs = 0
    t0 = time.perf_counter()
    recent: list[float] = []
    try:
        with open(csv_out, "w", newline="") as f:
            rows = csv.writer(f)
            rows.writerow(CSV_COLUMNS)
            for r in track(video, predictor, smooth=smooth, params=params, detect_every=detect_every,
                           progress=progress):
                n += 1
                runs += r.detector_ran
                for face in r.faces:
                    ids.add(face.id)
                    rows.writerows((r.index, face.id, k, f"{x:.2f}", f"{y:.2f}")
                                   for k, (x, y) in enumerate(face.points.tolist()))
                if writer is not None:
                    recent = (recent + [time.perf_counter()])[-30:]
                    rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
                    # the processing rate over the last 30 frames, not the video's own frame rate
                    label = f"tracked at {rate:.0f} frames/s" if show_fps and rate else None
                    writer.write(draw_faces(r.frame, r.faces, predictor.facts, label, copy=False))
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - t0
    out = {"frames": n, "faces": len(ids), "detector_runs": runs, "seconds": round(seconds, 3),
           "fps": round(n / seconds, 1) if seconds > 0 else None, "csv": str(csv_out)}
    if writer is not None:
        out.update(video=str(video_out), codec=writer.codec)
    return out
