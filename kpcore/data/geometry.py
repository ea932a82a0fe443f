"""Boxes, crop matrices and the one warp that maps an image and its points together.

Conventions (see :mod:`kpcore.data.facts`): points are 0-based pixel centres; a box
is ``(left, top, width, height)`` in *edge* coordinates, i.e. it covers the
continuous range ``[left, left + width)``; pixel ``i`` spans ``[i - 0.5, i + 0.5)``
in centre coordinates, so a box edge at ``e`` sits at centre coordinate
``e - 0.5``.

A crop is a 3x3 affine matrix ``M`` taking original-image pixel centres to
model-input pixel centres. The image is warped with exactly that matrix
(:func:`warp`, OpenCV's ``warpAffine``, which also works on pixel centres),
and points with :func:`apply`. Uncropping is ``apply(inv(M), points)``, exact
to float precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

Box = tuple[float, float, float, float]


def as_box(box: Sequence[float]) -> Box:
    """Validate and convert a ``(left, top, width, height)`` box."""
    if len(box) != 4:
        raise ValueError(f"a box is (left, top, width, height); got {box!r}")
    left, top, width, height = (float(v) for v in box)
    if not (width > 0 and height > 0) or not np.all(np.isfinite([left, top, width, height])):
        raise ValueError(f"a box needs a positive finite width and height; got {box!r}")
    return left, top, width, height


def enlarge_box(box: Sequence[float], factor: float = 1.0, square: bool = True,
                aspect: float | None = None) -> Box:
    """Scale a box about its centre.

    Args:
        box: ``(left, top, width, height)``.
        factor: Scale of the side(s); 300-W boxes are tight, 1.2-1.5 is usual.
        square: Make the box square using the longer side (before scaling).
        aspect: Instead of square, force width / height to this ratio, growing
            the shorter side (used so a crop fills a non-square input without
            distortion).
    """
    left, top, width, height = as_box(box)
    cx, cy = left + width / 2, top + height / 2
    if aspect is not None:
        if width / height < aspect:
            width = height * aspect
        else:
            height = width / aspect
    elif square:
        width = height = max(width, height)
    width, height = width * factor, height * factor
    return cx - width / 2, cy - height / 2, width, height


def points_box(points: np.ndarray) -> Box:
    """The tight box around points (edge coordinates: centres +- half a pixel)."""
    pts = np.asarray(points, dtype=np.float64)
    x0, y0 = pts.min(axis=0) - 0.5
    x1, y1 = pts.max(axis=0) + 0.5
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def crop_matrix(box: Sequence[float], out_size: tuple[int, int]) -> np.ndarray:
    """Matrix taking original pixel centres to the centres of a ``box`` resized to ``out_size``.

    Args:
        box: ``(left, top, width, height)`` in the original image (edges).
        out_size: ``(width, height)`` of the output in pixels.
    """
    left, top, width, height = as_box(box)
    out_w, out_h = out_size
    sx, sy = out_w / width, out_h / height
    # x_out + 0.5 = (x + 0.5 - left) * sx
    return np.array(
        [[sx, 0.0, (0.5 - left) * sx - 0.5],
         [0.0, sy, (0.5 - top) * sy - 0.5],
         [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )


def rotation_matrix(center: tuple[float, float], degrees: float, scale: float = 1.0,
                    shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Rotate (counter-clockwise on screen, y down) by ``degrees`` about ``center``, scale, then shift."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a) * scale, np.sin(a) * scale
    cx, cy = center
    # On screen with y pointing down, a counter-clockwise turn is [[c, s], [-s, c]].
    rot = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    to_origin = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    back = np.array([[1.0, 0.0, cx + shift[0]], [0.0, 1.0, cy + shift[1]], [0.0, 0.0, 1.0]])
    return back @ rot @ to_origin


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3x3 (or 2x3) affine matrix to ``(..., 2)`` points."""
    m = np.asarray(matrix, dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64)
    out = pts @ m[:2, :2].T + m[:2, 2]
    return out


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 3x3 affine matrix."""
    return np.linalg.inv(np.asarray(matrix, dtype=np.float64))


def warp(image: np.ndarray, matrix: np.ndarray, out_size: tuple[int, int],
         border_value: float | tuple[float, ...] = 0, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Warp an ``(H, W[, C])`` image by ``matrix`` into an image of ``out_size = (width, height)``.

    Downscaling by more than 2x first shrinks the image by area averaging over
    ``k x k`` pixel blocks (folded into the matrix) so thin structures do not
    alias; ``k`` is the integer that leaves the final warp a scale in ``[0.5, 1)``.
    Only the part of the image the output sees is shrunk, and ``k`` is an integer
    because OpenCV's area resize is about ten times faster for integer factors: a
    face crop from a photo costs ~0.1 ms instead of ~1 ms.
    """
    m = np.asarray(matrix, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))
    src = image
    if scale < 0.5 and min(image.shape[:2]) > 4:
        src, m = _area_shrink(image, m, out_size, math.ceil(0.5 / scale - 1e-9))
    return cv2.warpAffine(src, m[:2], out_size, flags=interpolation,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)


def _area_shrink(image: np.ndarray, m: np.ndarray, out_size: tuple[int, int], k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``image`` that the warp by ``m`` into ``out_size`` reads, shrunk ``k`` times by
    area averaging, and the matrix from the shrunk image to the output."""
    h, w = image.shape[:2]
    width, height = out_size
    corners = invert(m) @ np.array([[0, width, width, 0], [0, 0, height, height], [1, 1, 1, 1]], np.float64)
    pad = 2 * k + 2  # the bilinear footprint of the output border, in source pixels
    x0, x1 = (int(np.clip(v, 0, w)) for v in (np.floor(corners[0].min() - pad), np.ceil(corners[0].max() + pad)))
    y0, y1 = (int(np.clip(v, 0, h)) for v in (np.floor(corners[1].min() - pad), np.ceil(corners[1].max() + pad)))
    if x1 <= x0 or y1 <= y0:  # the output lies outside the image: all border, nothing to shrink
        return image, m
    x0, x1 = _whole_blocks(x0, x1, w, k)
    y0, y1 = _whole_blocks(y0, y1, h, k)
    sub = image[y0:y1, x0:x1]
    sw, sh = math.ceil((x1 - x0) / k) * k, math.ceil((y1 - y0) / k) * k
    if (sw, sh) != (x1 - x0, y1 - y0):  # the image is narrower than whole blocks: repeat its edge
        sub = cv2.copyMakeBorder(sub, 0, sh - (y1 - y0), 0, sw - (x1 - x0), cv2.BORDER_REPLICATE)
    small = cv2.resize(sub, (sw // k, sh // k), interpolation=cv2.INTER_AREA)
    if small.ndim == 2 and image.ndim == 3:
        small = small[..., None]
    shift = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], np.float64)
    return small, m @ shift @ invert(crop_matrix((0, 0, sw, sh), (sw // k, sh // k)))


def _whole_blocks(lo: int, hi: int, size: int, k: int) -> tuple[int, int]:
    """``[lo, hi)`` grown to a multiple of ``k`` inside ``[0, size)`` where it fits (else left as is)."""
    n = math.ceil((hi - lo) / k) * k
    if lo + n <= size:
        return lo, lo + n
    return max(0, hi - n), hi


def normalize_points(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Input pixels -> ``[-1, 1]`` coordinates (align_corners=False), ``size = (width, height)``."""
    w, h = size
    pts = np.asarray(points, dtype=np.float64)
    return np.stack([(2 * pts[..., 0] + 1) / w - 1, (2 * pts[..., 1] + 1) / h - 1], axis=-1)


def denormalize_points(coords: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[-1, 1]`` coordinates -> input pixels; the inverse of :func:`normalize_points`."""
    w, h = size
    c = np.asarray(coords, dtype=np.float64)
    return np.stack([((c[..., 0] + 1) * w - 1) / 2, ((c[..., 1] + 1) * h - 1) / 2], axis=-1)


def uncrop(coords: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Model output in ``[-1, 1]`` for an input of ``size`` cut by ``matrix`` -> original-image pixels."""
    return apply(invert(matrix), denormalize_points(coords, size))
