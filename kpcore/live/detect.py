"""Face detection with RetinaFace-MobileNetV2 in onnxruntime (CPU, offline).

The model ships in ``checkpoints/face-detector/`` (converted once from the
``retinaface`` 1.1.1 wheel by ``scripts/convert_retinaface.py``; see its README).
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
from dataclasses import dataclass
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
"""Order of :attr:`Face.landmarks`; left/right are the subject's (see :mod:`kpcore.data.facts`)."""
_SCORE_COLUMN = 15
_NUM_COLUMNS = 16


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    Attributes:
        box: ``(left, top, width, height)`` in pixels of the input image, edge
            coordinates, clipped to the image.
        score: Face probability in ``[0, 1]``.
        landmarks: ``(5, 2)`` float32 points (x, y), pixel centres, in the order of
            :data:`LANDMARK_NAMES`; not clipped (a landmark may lie outside the image).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return self.box[2] * self.box[3]

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """The box as ``(left, top, right, bottom)`` edge coordinates (PIL's crop box)."""
        left, top, width, height = self.box
        return left, top, left + width, top + height


def _load_config(folder: Path) -> dict:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"face detector not found: {config_path} is missing. Restore checkpoints/face-detector/ "
            f"from the repository, rebuild it with scripts/convert_retinaface.py, or point "
            f"${DETECTOR_ENV} at a folder holding config.json and the .onnx file."
        )
    config = json.loads(config_path.read_text())
    model_path = folder / config.get("file", "")
    if not model_path.is_file():
        raise CheckpointError(f"{config_path} names the model file {config.get('file')!r}, "
                              f"which is not in {folder}; restore it from the repository.")
    return config


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
                    import onnxruntime as ort

                    options = ort.SessionOptions()
                    if self.threads is not None:
                        options.intra_op_num_threads = self.threads
                    options.inter_op_num_threads = 1
                    options.log_severity_level = 3  # errors only
                    self._session = ort.InferenceSession(
                        str(self.model_dir / self.config["file"]), options,
                        providers=["CPUExecutionProvider"])
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
                 coarse_side: int | None = DEFAULT_COARSE_SIDE) -> FaceDetector:
    """A shared :class:`FaceDetector` (one per argument combination), created on first use."""
    return FaceDetector(threads=threads, max_side=max_side, coarse_side=coarse_side)
