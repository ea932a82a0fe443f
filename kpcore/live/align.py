"""FFHQ-style aligned face crops from the 68 points.

    from kpcore.live.align import align_face
    crop, matrix = align_face(rgb, points68, size=1024)   # matrix: source pixel -> crop pixel (2x3)

    python -m kpcore align photos/ --out aligned/ --size 1024 --min-confidence 0.5

The crop is the oriented square of NVlabs/ffhq-dataset's
``recreate_aligned_images`` (``download_ffhq.py``), computed from the eyes and
the mouth corners of the 300-W 68-point layout (the layout of dlib's
predictor, which the FFHQ release used):

* ``eye_avg`` is the mid-point of the two eye centres (means of points 36-41
  and 42-47), ``mouth_avg`` that of the mouth corners (48 and 54);
  ``eye_to_eye`` and ``eye_to_mouth`` are the vectors between them;
* the crop's x axis is ``eye_to_eye`` minus ``eye_to_mouth`` turned by 90
  degrees, normalised and scaled to ``max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)``;
  its y axis is x turned by 90 degrees; the centre is
  ``eye_avg + 0.1 eye_to_mouth``; the square's corners are ``c -x -y``
  (top left), ``c -x +y``, ``c +x +y``, ``c +x -y``.

As in the recipe, a photo much larger than the crop is first shrunk by a whole
factor, and where the square runs over the photo's edge the photo is padded by
reflection, blurred and faded to its median colour towards the padding. The
square is then resampled with OpenCV (``cv2.warpAffine``, bilinear, at up to
4x the output size, then averaged down) instead of PIL's quad transform; the
geometry is the recipe's: the crop's edges are the square's edges, so a point
``p`` of the photo lands at ``((p - c + x + y) . x / (2 |x|^2)) * size - 0.5``
across (and the same with ``y`` down) in 0-based pixel centres.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from .batch import (
    BatchOptions,
    InputError,
    available_cores,
    expand_inputs,
    is_video,
    load_predictor,
    predict_sources,
    write_table,
)

DEFAULT_SIZE = 1024
DEFAULT_MIN_CONFIDENCE = 0.5
"""Faces below this keypoint confidence are not cropped (the same mark as the overlays' 'low')."""
MAX_SUPERSAMPLE = 4
"""The recipe warps to 4096 px and shrinks to 1024: at most this many samples per output pixel side."""
NUM_POINTS = 68
INDEX_NAME = "index"
PNG_LEVEL = 3
"""zlib level of the crops (lossless either way). Pillow's default, 6, took 201 ms for a 1024x1024
crop (694 KB); 3 takes 72 ms (791 KB): the save was 77% of ``kpcore align``'s time."""


def ffhq_quad(points68: np.ndarray) -> np.ndarray:
    """The recipe's oriented square: corners ``(4, 2)`` (top left, bottom left, bottom right, top right)
    in the points' pixels, from the eyes and mouth corners of 68 points."""
    lm = np.asarray(points68, dtype=np.float64)
    if lm.shape != (NUM_POINTS, 2):
        raise ValueError(f"FFHQ alignment needs the 68 points of the 300-W layout as (68, 2); got {lm.shape}")
    eye_left = lm[36:42].mean(axis=0)
    eye_right = lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def quad_matrix(quad: np.ndarray, size: int) -> np.ndarray:
    """The 2x3 affine map from photo pixel centres to crop pixel centres for a crop of ``quad``."""
    ex, ey = quad[3] - quad[0], quad[1] - quad[0]
    rows = np.stack([ex / (ex @ ex), ey / (ey @ ey)]) * size
    return np.hstack([rows, (-rows @ quad[0] - 0.5)[:, None]])


def align_face(image: np.ndarray, points68: np.ndarray, size: int = DEFAULT_SIZE,
               padding: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The FFHQ-style crop of one face.

    Args:
        image: ``(H, W, 3)`` RGB uint8 photo (full resolution for the best crops).
        points68: ``(68, 2)`` points in its pixels (0-based centres).
        size: Side of the square crop.
        padding: Reflect, blur and fade the photo where the square runs over its edge (as FFHQ);
            False fills with black.

    Returns:
        ``(crop (size, size, 3) uint8, matrix)``: ``matrix`` (2x3) maps photo pixels to crop pixels.
    """
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels; got {size}")
    quad = ffhq_quad(points68)
    matrix = quad_matrix(quad, size)
    img = np.asarray(image)
    qsize = float(np.hypot(*(quad[3] - quad[0])))

    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:  # a whole factor, averaged: the recipe's first step on big photos
        h, w = img.shape[:2]
        new = (int(np.rint(w / shrink)), int(np.rint(h / shrink)))
        img = cv2.resize(img, new, interpolation=cv2.INTER_AREA)
        scale = np.array([new[0] / w, new[1] / h])
        quad = (quad + 0.5) * scale - 0.5
        qsize /= shrink

    border = max(int(np.rint(qsize * 0.1)), 3)
    h, w = img.shape[:2]
    lo, hi = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0), min(hi[0] + border, w), min(hi[1] + border, h))
    if crop[2] <= crop[0] or crop[3] <= crop[1]:
        raise ValueError("the face's square lies outside the photo; are the points in this photo's pixels?")
    img = img[crop[1]:crop[3], crop[0]:crop[2]]
    quad = quad - crop[:2]

    h, w = img.shape[:2]
    lo, hi = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    pad = (max(-lo[0] + border, 0), max(-lo[1] + border, 0), max(hi[0] - w + border, 0), max(hi[1] - h + border, 0))
    if padding and max(pad) > border - 4:
        img, quad = _pad_like_ffhq(img, quad, pad, qsize)

    supersample = int(min(MAX_SUPERSAMPLE, max(1, math.ceil(qsize / size))))
    t = size * supersample
    # output pixel centre (u, v) of a t x t square -> photo centre quad[0] + (u + 0.5) / t * ex + (v + 0.5) / t * ey
    ex, ey = (quad[3] - quad[0]) / t, (quad[1] - quad[0]) / t
    inverse = np.array([[ex[0], ey[0], quad[0][0] + 0.5 * (ex[0] + ey[0])],
                        [ex[1], ey[1], quad[0][1] + 0.5 * (ex[1] + ey[1])]])
    out = cv2.warpAffine(img, inverse, (t, t), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REFLECT_101 if padding else cv2.BORDER_CONSTANT)
    if supersample > 1:  # whole blocks averaged: the recipe's antialiased shrink from 4096
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(out), matrix


def _pad_like_ffhq(img: np.ndarray, quad: np.ndarray, pad: tuple[int, int, int, int],
                   qsize: float) -> tuple[np.ndarray, np.ndarray]:
    """The recipe's padding: reflect, blur towards the padding, fade to the median colour."""
    pad = tuple(max(p, int(np.rint(qsize * 0.3))) for p in pad)
    left, top, right, bottom = pad
    f = np.pad(np.float32(img), ((top, bottom), (left, right), (0, 0)), "reflect")
    h, w = f.shape[:2]
    y, x = np.ogrid[:h, :w]
    mask = np.maximum(1.0 - np.minimum(np.float32(x) / left, np.float32(w - 1 - x) / right),
                      1.0 - np.minimum(np.float32(y) / top, np.float32(h - 1 - y) / bottom))[..., None]
    blur = qsize * 0.02
    f += (cv2.GaussianBlur(f, (0, 0), sigmaX=blur, borderType=cv2.BORDER_REFLECT_101) - f) * \
        np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    f += (np.median(f, axis=(0, 1)) - f) * np.clip(mask, 0.0, 1.0)
    return np.uint8(np.clip(np.rint(f), 0, 255)), quad + np.array([left, top], np.float64)


def align_inputs(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, model: str = "face68-300w",
                 size: int = DEFAULT_SIZE, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                 progress: bool = False, fmt: str = "parquet") -> dict:
    """Aligned crops of every face in photos, folders, globs or lists, with an index table.

    Faces come from :func:`kpcore.live.batch.predict_sources` (the batch table's rows);
    crops are written as ``out/00000.png, ...`` and ``out/index.<fmt>`` lists them:
    ``file, source, face, confidence, det_score, size`` and ``m00..m12``, the 2x3
    matrix from photo pixels to crop pixels. Faces below ``min_confidence`` are
    skipped and counted.

    Returns:
        Counts: ``inputs, crops, low_confidence`` (faces), ``no_face, unreadable, error``
        (inputs), ``out``, ``index``.
    """
    import pyarrow as pa
    from tqdm import tqdm

    from ..data.imageio import load_image

    if not 0.0 <= min_confidence <= 1.0:
        raise InputError(f"min_confidence must be in [0, 1]; got {min_confidence}")
    if size < 8:
        raise InputError(f"--size must be >= 8 pixels; got {size}")
    found = expand_inputs(inputs)
    videos = [s for s in found.sources if is_video(s)]
    if videos:
        raise InputError(f"align takes photos; {len(videos)} video(s) given ({Path(videos[0]).name}...): extract "
                         f"frames first, e.g. `ffmpeg -i clip.mp4 frames/%05d.png`")
    predictor = load_predictor(model, threads=None)
    if predictor.facts.num_points != NUM_POINTS:
        raise InputError(f"align needs a 68-point model (the FFHQ recipe uses the eyes and mouth of the 300-W "
                         f"layout); {predictor.name} has {predictor.facts.num_points} points")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    index: dict[str, list] = {k: [] for k in ("file", "source", "face", "confidence", "det_score", "size")}
    index.update({f"m{r}{c}": [] for r in range(2) for c in range(3)})
    counts = dict.fromkeys(("low_confidence", "no_face", "unreadable", "error"), 0)
    with _CropWriter() as writer:
        for source in tqdm(found.sources, unit="img", desc="align", disable=not progress):
            rows = predict_sources(predictor, [source], BatchOptions()).to_pylist()
            faces = [r for r in rows if r["status"] == "ok"]
            if not faces:
                counts[rows[0]["status"]] += 1
                continue
            keep = [r for r in faces if r["confidence"] is None or r["confidence"] >= min_confidence]
            counts["low_confidence"] += len(faces) - len(keep)
            if not keep:
                continue
            photo = load_image(source, max_side=None)  # full resolution: the points are in its pixels
            for r in keep:
                points = np.array([[r[f"x{k}"], r[f"y{k}"]] for k in range(NUM_POINTS)])
                crop, matrix = align_face(photo, points, size)
                name = f"{len(index['file']):05d}.png"
                writer.write(crop, folder / name)
                for key, value in (("file", name), ("source", source), ("face", r["face"]),
                                   ("confidence", r["confidence"]), ("det_score", r["det_score"]), ("size", size)):
                    index[key].append(value)
                for (i, j), v in np.ndenumerate(matrix):
                    index[f"m{i}{j}"].append(float(v))
    schema = pa.schema([("file", pa.string()), ("source", pa.string()), ("face", pa.int64()),
                        ("confidence", pa.float64()), ("det_score", pa.float64()), ("size", pa.int64()),
                        *((name, pa.float64()) for name in index if name.startswith("m"))])
    index_path = write_table(pa.Table.from_pydict(index, schema=schema), folder / f"{INDEX_NAME}.{fmt}")
    return {"inputs": len(found.sources), "crops": len(index["file"]), **counts, "out": str(folder),
            "index": str(index_path)}


def _save_png(crop: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(crop).save(path, compress_level=PNG_LEVEL)


class _CropWriter:
    """Crops saved by :func:`_save_png` on a thread per core (Pillow lets go of the GIL while it
    compresses), beside the next photo's prediction. At most 4 crops per thread wait, so memory
    stays flat; an error writing one (a full disk) is raised by a later :meth:`write` or on leaving
    the ``with`` block, before anything else is written."""

    def __init__(self) -> None:
        threads = max(1, available_cores())
        self._pool = ThreadPoolExecutor(threads)
        self._pending: deque = deque()
        self._limit = 4 * threads

    def write(self, crop: np.ndarray, path: Path) -> None:
        self._pending.append(self._pool.submit(_save_png, crop, path))
        while len(self._pending) > self._limit:
            self._pending.popleft().result()

    def __enter__(self) -> _CropWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            while exc_type is None and self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
