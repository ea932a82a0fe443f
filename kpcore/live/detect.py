"""Face detection in onnxruntime (CPU, offline): BlazeFace first, RetinaFace where it is needed.

Two models ship, both converted once to ONNX by scripts kept in ``scripts/``:

* **BlazeFace short-range** (``checkpoints/face-detector-blazeface/``, from the
  mediapipe 0.10.21 wheel, Apache-2.0, ``scripts/convert_blazeface.py``): a
  128x128 network, about 1 ms a photo on one thread, for faces at least about
  a fifth of the photo's longer side (a portrait, a webcam frame).
* **RetinaFace-MobileNetV2** (``checkpoints/face-detector/``, from the
  ``retinaface`` 1.1.1 wheel, MIT, ``scripts/convert_retinaface.py``): 17-30 ms
  for 640x480, finds faces down to about 16 px (group photos, crowds).

:func:`get_detector` returns a :class:`CascadeDetector`: BlazeFace's faces are
kept when every one is large enough and sure enough for BlazeFace to be
trusted there (:data:`FAST_MIN_FACE_FRACTION`, :data:`FAST_SURE_SCORE`);
otherwise (no face, or a small or doubtful one, where smaller faces may have
been missed) the photo goes to RetinaFace. BlazeFace's boxes are mapped onto
RetinaFace's box convention (a median map stored in BlazeFace's config.json),
so the two models' faces are interchangeable downstream (one
``detector_box_map`` in a landmark checkpoint serves both).

Nothing is downloaded at run time, and onnxruntime is imported only when the
first image is detected.

Coordinates follow :mod:`kpcore.data.geometry`: a :class:`Face` box is
``(left, top, width, height)`` in *edge* coordinates (pixel ``i`` spans
``[i, i + 1)``, so ``image[int(top):int(top + height), int(left):int(left + width)]``
crops it), while landmarks are points in the :mod:`kpcore.data.facts` convention
(0-based pixel centres).

Example::

    from kpcore.live.detect import get_detector
    from kpcore.data.imageio import load_image

    faces = get_detector().detect(load_image("photo.jpg"))
"""

from __future__ import annotations

import functools
import json
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from kpcore.errors import BadImageError, CheckpointError, NoFaceFoundError
from kpcore.paths import CHECKPOINTS_DIR

DETECTOR_ENV = "KPCORE_FACE_DETECTOR"
"""Environment variable naming a face-detector folder to use instead of the shipped one."""
DEFAULT_DETECTOR_DIR = CHECKPOINTS_DIR / "face-detector"
DEFAULT_MAX_SIDE = 640
"""Images whose longer side exceeds this are shrunk before detection (boxes are mapped back).

RetinaFace's smallest anchors are 16 px, so at 640 px faces down to about 1/40 of
the longer side are still found; a 640x480 input takes ~27 ms on 2 CPU threads
against ~113 ms for 1280x960.
"""
DEFAULT_COARSE_SIDE = 320
"""Longer side of the first, cheap detection pass (1/4 of the pixels of 640).

At 320 px the smallest anchor (16 px) is 1/20 of the longer side: a 1280x960
photo's faces down to ~64 px wide are found at a quarter of the cost. The
``max_side`` pass runs only when the first finds no face, or finds a face so small
(under :data:`COARSE_CONFIRM` times the smallest findable) that smaller ones may
have been missed.
"""
COARSE_CONFIRM = 2.0
LANDMARK_NAMES = ("right_eye", "left_eye", "nose_tip", "right_mouth_corner", "left_mouth_corner")
"""Order of RetinaFace's :attr:`Face.landmarks`; left/right are the subject's (see :mod:`kpcore.data.facts`)."""
BLAZEFACE_LANDMARK_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear_tragion",
                            "left_ear_tragion")
"""Order of BlazeFace's :attr:`Face.landmarks` (the subject's right eye is on the image's left)."""
DEFAULT_FAST_DIR = CHECKPOINTS_DIR / "face-detector-blazeface"
FAST_MIN_FACE_FRACTION = 0.2
"""BlazeFace's faces are kept only when each box's shorter side is at least this fraction of the
photo's longer side; a smaller face says the photo may hold faces too small for BlazeFace's
128x128 input (its smallest anchor is ~19 px there, 15% of the side), and RetinaFace runs instead."""
FAST_SURE_SCORE = 0.75
"""BlazeFace's faces are kept only when each scores at least this; a doubtful one sends the
photo to RetinaFace."""
_SCORE_COLUMN = 15
_NUM_COLUMNS = 16


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    Attributes:
        box: ``(left, top, width, height)`` in pixels of the input image, edge
            coordinates, clipped to the image.
        score: Face probability in ``[0, 1]``.
        landmarks: ``(L, 2)`` float32 points (x, y), pixel centres, in the order of
            ``landmark_names``; not clipped (a landmark may lie outside the image).
        landmark_names: :data:`LANDMARK_NAMES` (RetinaFace) or
            :data:`BLAZEFACE_LANDMARK_NAMES` (BlazeFace).
        detector: Which model found the face: ``"retinaface"`` or ``"blazeface"``.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None
    landmark_names: tuple[str, ...] = LANDMARK_NAMES
    detector: str = "retinaface"

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return self.box[2] * self.box[3]

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """The box as ``(left, top, right, bottom)`` edge coordinates (PIL's crop box)."""
        left, top, width, height = self.box
        return left, top, left + width, top + height


def _load_config(folder: Path, script: str = "convert_retinaface.py", file_key: str | None = None) -> dict:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"face detector not found: {config_path} is missing. Restore {folder.name}/ under checkpoints/ "
            f"from the repository, rebuild it with scripts/{script}, or point "
            f"${DETECTOR_ENV} at a folder holding config.json and the .onnx file."
        )
    config = json.loads(config_path.read_text())
    files = [config.get("file", "")] if file_key is None else [v["file"] for v in config["variants"].values()]
    for name in files:
        if not (folder / name).is_file():
            raise CheckpointError(f"{config_path} names the model file {name!r}, which is not in {folder}; "
                                  f"restore it from the repository or rebuild it with scripts/{script}.")
    return config


def _session(path: Path, threads: int | None):
    """An onnxruntime CPU session (imported here, so that building a detector stays free)."""
    import onnxruntime as ort

    from .onnx_runtime import no_spinning

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    no_spinning(options, threads)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    Args:
        boxes: ``(N, 4)`` as ``(x1, y1, x2, y2)``.
        scores: ``(N,)``.
        iou_threshold: A box is dropped when its IoU with a kept, higher-scoring box
            is above this.

    Returns:
        Indices of the kept boxes, highest score first.
    """
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        iw = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        ih = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


class FaceDetector:
    """RetinaFace-MobileNetV2 face detector (onnxruntime, CPU).

    The ONNX session is created on the first call to :meth:`detect`, so building a
    detector is free. :meth:`detect` is thread-safe.

    Args:
        model_dir: Folder holding ``config.json`` and the ``.onnx`` file; default
            ``$KPCORE_FACE_DETECTOR`` or the shipped ``checkpoints/face-detector``.
        threads: onnxruntime intra-op threads; ``None`` lets onnxruntime choose
            (one per physical core).
        max_side: Longer side, in pixels, above which images are shrunk before
            detection; ``None`` never shrinks (slower on big photos; finds smaller faces).
        score_threshold: Minimum face probability (default from ``config.json``, 0.5).
        nms_iou: IoU above which overlapping detections are merged (default 0.4).
        coarse_side: Longer side of a first, cheaper pass (see :data:`DEFAULT_COARSE_SIDE`);
            ``None`` runs only the ``max_side`` pass.
    """

    def __init__(self, model_dir: str | os.PathLike | None = None, threads: int | None = None,
                 max_side: int | None = DEFAULT_MAX_SIDE, score_threshold: float | None = None,
                 nms_iou: float | None = None, coarse_side: int | None = DEFAULT_COARSE_SIDE) -> None:
        if model_dir is None:
            model_dir = os.environ.get(DETECTOR_ENV) or DEFAULT_DETECTOR_DIR
        self.model_dir = Path(model_dir)
        self.config = _load_config(self.model_dir)
        defaults = self.config.get("defaults", {})
        self.threads = threads
        self.max_side = max_side
        self.coarse_side = coarse_side
        if coarse_side is not None and coarse_side < 32:
            raise ValueError(f"coarse_side must be >= 32 (or None for one pass); got {coarse_side}")
        self.score_threshold = float(defaults.get("score_threshold", 0.5) if score_threshold is None
                                     else score_threshold)
        self.nms_iou = float(defaults.get("nms_iou", 0.4) if nms_iou is None else nms_iou)
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None; got {threads}")
        if max_side is not None and max_side < 32:
            raise ValueError(f"max_side must be >= 32 (or None for no limit); got {max_side}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1]; got {self.score_threshold}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1]; got {self.nms_iou}")
        self._pad = int(self.config["input"]["pad_multiple"])
        self._session = None
        self._lock = threading.Lock()

    def _get_session(self):
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = _session(self.model_dir / self.config["file"], self.threads)
        return self._session

    def warmup(self) -> None:
        """Create the session and run it once (the first run allocates memory)."""
        self.detect(np.zeros((self._pad, self._pad, 3), np.uint8))

    def detect(self, image: np.ndarray, score_threshold: float | None = None) -> list[Face]:
        """Find faces in an image.

        Args:
            image: ``(H, W, 3)`` RGB uint8 array, any size (use
                :func:`kpcore.data.imageio.load_image` to get one from a file).
            score_threshold: Overrides the detector's threshold for this call.

        Returns:
            Faces sorted by score, highest first; empty when there is none.
        """
        _check_image(image)
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        longest = max(image.shape[:2])
        coarse = self.coarse_side
        if coarse is not None and longest > coarse and (self.max_side is None or coarse < self.max_side):
            faces = self._detect_at(image, coarse, threshold)
            smallest = _min_face_px(image.shape[:2], coarse)
            if faces and min(min(f.box[2], f.box[3]) for f in faces) >= COARSE_CONFIRM * smallest:
                return faces
        return self._detect_at(image, self.max_side, threshold)

    def _detect_at(self, image: np.ndarray, max_side: int | None, threshold: float) -> list[Face]:
        """One pass with the image shrunk to ``max_side`` (None: as it is)."""
        height, width = image.shape[:2]
        small = image
        if max_side is not None and max(height, width) > max_side:
            factor = max_side / max(height, width)
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            # Both resizers map the edges of the image onto the edges of the output, so
            # edge coordinates scale back by exactly width / new_width (and likewise y).
            if factor < 0.5:  # area averaging: no aliasing, and faster than PIL's bilinear
                small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            else:
                small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        h, w = small.shape[:2]
        ph, pw = -(-h // self._pad) * self._pad, -(-w // self._pad) * self._pad
        x = np.zeros((1, ph, pw, 3), np.float32)  # zero padding at the bottom/right, as trained
        x[0, :h, :w] = small
        cfg = self.config
        rows = self._get_session().run([cfg["output"]["name"]], {cfg["input"]["name"]: x})[0]
        assert rows.ndim == 2 and rows.shape[1] == _NUM_COLUMNS, rows.shape

        rows = rows[rows[:, _SCORE_COLUMN] >= threshold]
        if not len(rows):
            return []
        # fractions of the padded input -> edge coordinates of the original image
        sx, sy = pw * width / w, ph * height / h
        boxes = rows[:, 0:4].astype(np.float64) * [sx, sy, sx, sy]
        keep = nms(boxes, rows[:, _SCORE_COLUMN], self.nms_iou)
        faces = []
        for i in keep:
            x1, y1, x2, y2 = boxes[i]
            x1, x2 = np.clip([x1, x2], 0, width)
            y1, y2 = np.clip([y1, y2], 0, height)
            if x2 <= x1 or y2 <= y1:
                continue  # entirely in the padding
            landmarks = (rows[i, 4:14].reshape(5, 2).astype(np.float64) * [sx, sy] - 0.5)
            faces.append(Face(box=(float(x1), float(y1), float(x2 - x1), float(y2 - y1)),
                              score=float(rows[i, _SCORE_COLUMN]),
                              landmarks=landmarks.astype(np.float32)))
        return faces

    def detect_one(self, image: np.ndarray, pick: Literal["largest", "score"] = "largest",
                   score_threshold: float | None = None) -> Face:
        """The main face: the largest box (default) or the most confident one.

        Raises:
            NoFaceFoundError: No face above the score threshold.
        """
        faces = self.detect(image, score_threshold=score_threshold)
        if not faces:
            threshold = self.score_threshold if score_threshold is None else score_threshold
            raise NoFaceFoundError(
                f"no face found in the {image.shape[1]}x{image.shape[0]} image (score threshold "
                f"{threshold}). Use a photo where the face is visible and at least ~"
                f"{_min_face_px(image.shape[:2], self.max_side)} px wide, or pass a lower "
                f"score_threshold.")
        if pick == "largest":
            return max(faces, key=lambda f: f.area)
        if pick == "score":
            return faces[0]
        raise ValueError(f"pick must be 'largest' or 'score'; got {pick!r}")


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The image shrunk to fit a ``size`` x ``size`` square, centred, black around (MediaPipe's
    ``keep_aspect_ratio`` input).

    Returns:
        ``(square, (left, top, sx, sy))``: the uint8 square, and where the image sits in it:
        an edge coordinate ``u`` of the square is ``(u - left) * sx`` in the image.
    """
    height, width = image.shape[:2]
    factor = size / max(height, width)
    new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
    # area averaging when shrinking a lot (no aliasing); both map edges onto edges
    method = cv2.INTER_AREA if factor < 0.5 else cv2.INTER_LINEAR
    small = cv2.resize(image, (new_w, new_h), interpolation=method) if (new_w, new_h) != (width, height) else image
    square = np.zeros((size, size, 3), np.uint8)
    left, top = (size - new_w) // 2, (size - new_h) // 2
    square[top:top + new_h, left:left + new_w] = small
    return square, (float(left), float(top), width / new_w, height / new_h)


def ssd_anchors(input_size: int, layers: list[list[int]]) -> np.ndarray:
    """``(N, 2)`` anchor centres (x, y) as fractions of the input, in the network's output order.

    ``layers`` holds ``[stride, anchors per cell]`` per feature map: MediaPipe's
    ``SsdAnchorsCalculator`` with ``fixed_anchor_size`` gives every anchor the
    cell centre and unit size, and merges layers of one stride into one map
    (short range: strides 8, 16, 16, 16 -> ``[[8, 2], [16, 6]]``, 896 anchors;
    full range: stride 4 -> ``[[4, 1]]``, 2304 anchors).
    """
    out = []
    for stride, per_cell in layers:
        cells = -(-input_size // stride)
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray,
                 iou_threshold: float) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """MediaPipe's ``WEIGHTED`` non-maximum suppression: each kept face is the score-weighted
    mean of the boxes and points that overlap the best remaining one by more than ``iou_threshold``.

    Args:
        boxes: ``(N, 4)`` as ``(x1, y1, x2, y2)``.
        scores: ``(N,)``.
        points: ``(N, L, 2)`` landmarks.

    Returns:
        ``(box, score, points)`` per face, best first (the score is the best one's).
    """
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    out = []
    while order.size:
        i = order[0]
        iw = np.clip(np.minimum(boxes[i, 2], boxes[order, 2]) - np.maximum(boxes[i, 0], boxes[order, 0]), 0, None)
        ih = np.clip(np.minimum(boxes[i, 3], boxes[order, 3]) - np.maximum(boxes[i, 1], boxes[order, 1]), 0, None)
        inter = iw * ih
        union = areas[i] + areas[order] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        group = order[iou > iou_threshold]
        group = group if group.size else order[:1]
        weights = scores[group] / scores[group].sum()
        out.append(((boxes[group] * weights[:, None]).sum(0), float(scores[i]),
                    (points[group] * weights[:, None, None]).sum(0)))
        order = order[iou <= iou_threshold]
        order = order[order != i]
    return out


class BlazeFaceDetector:
    """MediaPipe's BlazeFace (short- or full-range) in onnxruntime, decoded in numpy.

    The photo is letterboxed to the model's square input (:func:`letterbox`), the
    896 (short) or 2304 (full) anchor rows are decoded as MediaPipe's
    ``TensorsToDetectionsCalculator`` does (offsets in input pixels from the
    anchor centre, sigmoid scores) and merged by :func:`weighted_nms`. Boxes are
    BlazeFace's own (brows to chin, about square); :class:`CascadeDetector` maps
    them onto RetinaFace's. :meth:`detect` is thread-safe.

    Args:
        model_dir: Folder holding ``config.json`` and the ``.onnx`` files (default the shipped
            ``checkpoints/face-detector-blazeface``).
        variant: ``"short"`` or ``"full"`` (default from ``config.json``).
        threads: onnxruntime intra-op threads (default 1: a 1 ms network gains nothing from two).
        score_threshold, nms_iou: Override ``config.json``'s defaults (0.5, 0.3, MediaPipe's).
    """

    def __init__(self, model_dir: str | os.PathLike | None = None, variant: str | None = None,
                 threads: int | None = 1, score_threshold: float | None = None,
                 nms_iou: float | None = None) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else DEFAULT_FAST_DIR
        self.config = _load_config(self.model_dir, "convert_blazeface.py", file_key="variants")
        self.variant = variant or self.config["default_variant"]
        if self.variant not in self.config["variants"]:
            raise ValueError(f"unknown BlazeFace variant {self.variant!r}; known: {sorted(self.config['variants'])}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None; got {threads}")
        spec = self.config["variants"][self.variant]
        self.input_size = int(spec["input_size"])
        self.anchors = ssd_anchors(self.input_size, spec["anchors"])
        defaults = self.config["defaults"]
        self.score_threshold = float(defaults["score_threshold"] if score_threshold is None else score_threshold)
        self.nms_iou = float(defaults["nms_iou"] if nms_iou is None else nms_iou)
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1]; got {self.score_threshold}")
        self.threads = threads
        self._file = self.model_dir / spec["file"]
        self._session = None
        self._lock = threading.Lock()

    def _get_session(self):
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = _session(self._file, self.threads)
        return self._session

    def warmup(self) -> None:
        """Create the session and run it once."""
        self.detect(np.zeros((self.input_size, self.input_size, 3), np.uint8))

    def run(self, square: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network on a letterboxed uint8 square: ``(rows (N, 16), logits (N,))``."""
        x = square[None].astype(np.float32)
        rows, logits = self._get_session().run(None, {"image": x})
        return rows[0], logits[0, :, 0]

    def detect(self, image: np.ndarray, score_threshold: float | None = None) -> list[Face]:
        """Faces in an ``(H, W, 3)`` RGB uint8 image, best first, in BlazeFace's own boxes."""
        _check_image(image)
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        height, width = image.shape[:2]
        square, (left, top, sx, sy) = letterbox(image, self.input_size)
        rows, logits = self.run(square)
        # sigmoid(logit) >= threshold without computing 896 exponentials
        cut = np.inf if threshold >= 1 else (-np.inf if threshold <= 0 else np.log(threshold / (1 - threshold)))
        keep = np.flatnonzero(logits >= cut)
        if not keep.size:
            return []
        size = float(self.input_size)
        rows, anchors = rows[keep].astype(np.float64), self.anchors[keep]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep].astype(np.float64), -100, 100)))
        centre = rows[:, 0:2] / size + anchors
        half = rows[:, 2:4] / size / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1) * size  # edges of the square
        points = (rows[:, 4:].reshape(len(rows), -1, 2) / size + anchors[:, None]) * size
        to_image = np.array([sx, sy])
        offset = np.array([left, top])
        faces = []
        for box, score, pts in weighted_nms(boxes, scores, points, self.nms_iou):
            x1, y1 = (box[:2] - offset) * to_image
            x2, y2 = (box[2:] - offset) * to_image
            x1, x2 = _clip(x1, width), _clip(x2, width)
            y1, y2 = _clip(y1, height), _clip(y2, height)
            if x2 <= x1 or y2 <= y1:
                continue
            faces.append(Face(box=(float(x1), float(y1), float(x2 - x1), float(y2 - y1)), score=score,
                              landmarks=((pts - offset) * to_image - 0.5).astype(np.float32),
                              landmark_names=BLAZEFACE_LANDMARK_NAMES, detector="blazeface"))
        return faces


def _clip(value: float, upper: float) -> float:
    """``value`` clipped to ``[0, upper]`` (``np.clip``'s result for a scalar, without its overhead)."""
    return float(min(max(float(value), 0.0), float(upper)))


def map_box(box: tuple[float, float, float, float], box_map: dict,
            image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """A box moved and scaled by a median map ``{dx, dy, sw, sh}`` (offsets in box widths/heights),
    clipped to the image ``(width, height)``."""
    left, top, w, h = box
    cx, cy = left + w / 2 + box_map["dx"] * w, top + h / 2 + box_map["dy"] * h
    nw, nh = box_map["sw"] * w, box_map["sh"] * h
    x1, x2 = _clip(cx - nw / 2, image_size[0]), _clip(cx + nw / 2, image_size[0])
    y1, y2 = _clip(cy - nh / 2, image_size[1]), _clip(cy + nh / 2, image_size[1])
    return x1, y1, x2 - x1, y2 - y1


class CascadeDetector:
    """BlazeFace first, RetinaFace only where BlazeFace cannot be trusted.

    BlazeFace's faces are returned when there is at least one and every one is
    large (shorter side >= :data:`FAST_MIN_FACE_FRACTION` of the photo's longer
    side) and sure (score >= :data:`FAST_SURE_SCORE`); their boxes are mapped onto
    RetinaFace's convention with the ``to_retinaface`` map of BlazeFace's
    ``config.json`` (fitted on 300-W training faces by
    ``scripts/detection_recall.py --fit-box-map``). Otherwise RetinaFace's
    two-pass :meth:`FaceDetector.detect` answers. The trade: a small face beside a
    large, sure one is not looked for (a bystander far behind a portrait's subject).

    Args:
        fast: The BlazeFace detector (default: shipped short-range, 1 thread).
        slow: The RetinaFace detector (default: shipped, onnxruntime's thread choice).
        min_face_fraction, sure_score: The trust rule (defaults above).
    """

    def __init__(self, fast: BlazeFaceDetector | None = None, slow: FaceDetector | None = None,
                 min_face_fraction: float = FAST_MIN_FACE_FRACTION, sure_score: float = FAST_SURE_SCORE) -> None:
        self.fast = fast or BlazeFaceDetector()
        self.slow = slow or FaceDetector()
        self.min_face_fraction = float(min_face_fraction)
        self.sure_score = float(sure_score)
        self.box_map = self.fast.config.get("to_retinaface")
        if self.box_map is None:
            raise CheckpointError(f"{self.fast.model_dir / 'config.json'} has no 'to_retinaface' box map; "
                                  f"fit it with scripts/detection_recall.py --fit-box-map")

    @property
    def score_threshold(self) -> float:
        return self.slow.score_threshold

    @property
    def max_side(self) -> int | None:
        return self.slow.max_side

    def warmup(self) -> None:
        """Create both sessions and run them once."""
        self.fast.warmup()
        self.slow.warmup()

    def trusts(self, faces: list[Face], image_shape: tuple[int, ...]) -> bool:
        """Whether BlazeFace's ``faces`` on an image of ``image_shape`` are kept (the rule above)."""
        smallest = self.min_face_fraction * max(image_shape[:2])
        return bool(faces) and all(min(f.box[2], f.box[3]) >= smallest and f.score >= self.sure_score
                                   for f in faces)

    def detect(self, image: np.ndarray, score_threshold: float | None = None) -> list[Face]:
        """Faces sorted by score, highest first, in RetinaFace's box convention (see the class)."""
        faces = self.fast.detect(image, score_threshold)
        if not self.trusts(faces, image.shape):
            return self.slow.detect(image, score_threshold)
        size = (image.shape[1], image.shape[0])
        return [replace(f, box=map_box(f.box, self.box_map, size)) for f in faces]

    def detect_one(self, image: np.ndarray, pick: Literal["largest", "score"] = "largest",
                   score_threshold: float | None = None) -> Face:
        """The main face (see :meth:`FaceDetector.detect_one`)."""
        return FaceDetector.detect_one(self, image, pick, score_threshold)  # type: ignore[arg-type]


def _min_face_px(shape: tuple[int, int], max_side: int | None) -> int:
    """Smallest face width (original pixels) the smallest anchor (16 px) can match."""
    smallest_anchor = 16
    longest = max(shape)
    if max_side is None or longest <= max_side:
        return smallest_anchor
    return int(np.ceil(smallest_anchor * longest / max_side))


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise BadImageError(f"detect() takes an (H, W, 3) RGB uint8 numpy array; got "
                            f"{type(image).__name__}. Load files with kpcore.data.imageio.load_image().")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise BadImageError(f"detect() takes an (H, W, 3) RGB uint8 array; got shape {image.shape} "
                            f"dtype {image.dtype}. Convert it with kpcore.data.imageio.load_image(array).")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise BadImageError(f"the image is empty (shape {image.shape})")


@functools.cache
def get_detector(threads: int | None = None, max_side: int | None = DEFAULT_MAX_SIDE,
                 coarse_side: int | None = DEFAULT_COARSE_SIDE) -> CascadeDetector:
    """A shared :class:`CascadeDetector` (one per argument combination), created on first use.

    ``threads``, ``max_side`` and ``coarse_side`` configure its RetinaFace
    (:class:`FaceDetector`); BlazeFace runs on one thread.
    """
    return CascadeDetector(slow=FaceDetector(threads=threads, max_side=max_side, coarse_side=coarse_side))
