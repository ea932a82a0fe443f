"""Drawing keypoints, skeletons and image grids.

Everything here returns a new RGB ``uint8`` numpy array ``(H, W, 3)`` and never
changes its inputs. Points follow the kpcore convention (``kpcore/data/facts.py``):
``(x, y)`` pixels, 0-based, pixel centres, so a point at ``(x, y)`` lands on the
pixel ``image[round(y), round(x)]``.

Colours: predicted points are red, true points green (the same as the eval
thumbnails described in ``docs/FORMATS.md``).

Overlays are drawn with PIL on a transparent layer ``SUPERSAMPLE`` times larger
than the image and box-filtered down, which anti-aliases the discs and lines
without resampling the photo itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from kpcore.data.facts import DatasetFacts

RGB = tuple[int, int, int]

PRED_COLOR: RGB = (230, 20, 20)
"""Predicted points."""
TRUE_COLOR: RGB = (20, 200, 60)
"""True (annotated) points."""
PRED_EDGE_COLOR: RGB = (255, 130, 130)
TRUE_EDGE_COLOR: RGB = (140, 235, 160)
ERROR_LINE_COLOR: RGB = (255, 210, 0)
BOX_COLOR: RGB = (40, 140, 255)
OUTLINE_COLOR: RGB = (0, 0, 0)

# Point radius as a fraction of the longer image side, with bounds in pixels:
# 1/160 gives 1.5 px on a 224 crop and 4 px on a 640 photo.
RADIUS_FRACTION = 1 / 160
MIN_RADIUS_PX = 1.5
MAX_RADIUS_PX = 12.0
# Largest overlay (in pixels of the supersampled layer side) we are willing to allocate.
MAX_LAYER_SIDE = 4096
SUPERSAMPLE = 4


def to_rgb_uint8(image: np.ndarray | Image.Image) -> np.ndarray:
    """Return ``image`` as a fresh RGB ``uint8`` array ``(H, W, 3)``.

    Accepts PIL images, gray ``(H, W)`` or ``(H, W, 1)``, RGB and RGBA arrays,
    ``uint8`` or floats in ``[0, 1]``.
    """
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(
            f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {arr.shape}"
        )
    arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and float(np.nanmax(arr, initial=0.0)) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(arr).copy()


def default_radius(height: int, width: int) -> float:
    """Point radius in pixels for an image of this size."""
    return float(np.clip(max(height, width) * RADIUS_FRACTION, MIN_RADIUS_PX, MAX_RADIUS_PX))


def _as_points(points: np.ndarray | Sequence | None, name: str) -> np.ndarray | None:
    if points is None:
        return None
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (K, 2) as (x, y) pixels; got {arr.shape}")
    return arr


def _visible(p: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(p)))


def draw_keypoints(
    image: np.ndarray | Image.Image,
    points: np.ndarray | Sequence | None,
    layout: DatasetFacts | None = None,
    true_points: np.ndarray | Sequence | None = None,
    *,
    radius: float | None = None,
    line_width: float | None = None,
    skeleton: bool = True,
    error_lines: bool = False,
    show_ids: bool = False,
    pred_color: RGB = PRED_COLOR,
    true_color: RGB = TRUE_COLOR,
) -> np.ndarray:
    """Draw predicted (red) and true (green) points on a copy of ``image``.

    Args:
        image: The picture, any form :func:`to_rgb_uint8` accepts.
        points: Predicted points ``(K, 2)`` in image pixels, or None. Rows with
            NaN are skipped (missing points).
        layout: Keypoint layout whose ``edges`` give the skeleton; None draws points only.
        true_points: Ground-truth points ``(K, 2)``, drawn green under the predictions.
        radius: Disc radius in pixels; default scales with the image (:func:`default_radius`).
        line_width: Skeleton line width in pixels; default ``radius / 2``.
        skeleton: Join points along ``layout.edges``.
        error_lines: Join each predicted point to its true point (yellow).
        show_ids: Write each point's id beside it (useful to check a layout).
        pred_color, true_color: Fill colours.

    Returns:
        RGB ``uint8`` array with the same height and width as ``image``.
    """
    base = to_rgb_uint8(image)
    pred = _as_points(points, "points")
    true = _as_points(true_points, "true_points")
    h, w = base.shape[:2]
    if (pred is None or len(pred) == 0) and (true is None or len(true) == 0):
        return base
    r = default_radius(h, w) if radius is None else float(radius)
    lw = max(1.0, r / 2) if line_width is None else float(line_width)
    edges = list(layout.edges) if (layout is not None and skeleton) else []

    s = max(1, min(SUPERSAMPLE, MAX_LAYER_SIDE // max(h, w, 1)))
    layer = Image.new("RGBA", (w * s, h * s), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)

    def sub(p: np.ndarray) -> tuple[float, float]:
        # Pixel centre i of the image covers subpixels i*s .. i*s+s-1 of the layer.
        return (float(p[0]) * s + (s - 1) / 2, float(p[1]) * s + (s - 1) / 2)

    def lines(pts: np.ndarray, color: RGB) -> None:
        for a, b in edges:
            if a < len(pts) and b < len(pts) and _visible(pts[a]) and _visible(pts[b]):
                draw.line([sub(pts[a]), sub(pts[b])], fill=(*color, 255), width=max(1, round(lw * s)))

    def discs(pts: np.ndarray, color: RGB) -> None:
        rs = r * s
        outline = max(1, round(s * 0.6)) if r >= 2.5 else 0
        for p in pts:
            if not _visible(p):
                continue
            cx, cy = sub(p)
            box = [cx - rs, cy - rs, cx + rs, cy + rs]
            if outline:
                draw.ellipse(box, fill=(*color, 255), outline=(*OUTLINE_COLOR, 200), width=outline)
            else:
                draw.ellipse(box, fill=(*color, 255))

    if true is not None:
        lines(true, TRUE_EDGE_COLOR)
    if pred is not None:
        lines(pred, PRED_EDGE_COLOR)
    if error_lines and pred is not None and true is not None:
        for p, t in zip(pred, true, strict=False):
            if _visible(p) and _visible(t):
                draw.line([sub(p), sub(t)], fill=(*ERROR_LINE_COLOR, 255), width=max(1, round(lw * s)))
    if true is not None:
        discs(true, true_color)
    if pred is not None:
        discs(pred, pred_color)
    if show_ids:
        ids_from = pred if pred is not None else true
        font = ImageFont.load_default(size=max(8, round(2.5 * r * s)))
        for i, p in enumerate(ids_from):
            if _visible(p):
                cx, cy = sub(p)
                draw.text((cx + 1.5 * r * s, cy - 1.5 * r * s), str(i), fill=(255, 255, 255, 255),
                          font=font, stroke_width=max(1, s), stroke_fill=(0, 0, 0, 255))

    return _composite(base, layer, s)


def _composite(base: np.ndarray, layer: Image.Image, s: int) -> np.ndarray:
    """The overlay ``layer``, drawn ``s`` times supersampled, shrunk and laid over ``base`` (RGB uint8)."""
    if s > 1:
        # Average in premultiplied alpha so edges do not pick up dark fringes.
        layer = layer.convert("RGBa").reduce(s).convert("RGBA")
    out = Image.fromarray(base).convert("RGBA")
    out.alpha_composite(layer)
    return np.asarray(out.convert("RGB"), dtype=np.uint8).copy()


def draw_boxes(
    image: np.ndarray | Image.Image,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[str] | None = None,
    *,
    color: RGB = BOX_COLOR,
    line_width: float | None = None,
) -> np.ndarray:
    """Draw face boxes ``(left, top, width, height)`` (edge coordinates) on a copy of ``image``."""
    base = Image.fromarray(to_rgb_uint8(image))
    h, w = base.height, base.width
    lw = max(1, round(default_radius(h, w) / 2)) if line_width is None else max(1, round(line_width))
    draw = ImageDraw.Draw(base)
    font = ImageFont.load_default(size=max(12, round(max(h, w) / 32)))
    for i, box in enumerate(boxes):
        left, top, bw, bh = (float(v) for v in box)
        # Edge coordinate e is pixel-centre coordinate e - 0.5 (kpcore.data.geometry).
        x0, y0, x1, y1 = left - 0.5, top - 0.5, left + bw - 0.5, top + bh - 0.5
        draw.rectangle([round(x0), round(y0), round(x1), round(y1)], outline=color, width=lw)
        if labels is not None and i < len(labels) and labels[i]:
            draw.text((round(x0), round(y0) - lw), labels[i], fill=color, font=font, anchor="lb",
                      stroke_width=1, stroke_fill=(0, 0, 0))
    return np.asarray(base, dtype=np.uint8).copy()


def image_grid(
    images: Sequence[np.ndarray | Image.Image],
    ncols: int,
    *,
    pad: int = 2,
    pad_value: int = 255,
) -> np.ndarray:
    """Tile images row by row into one RGB ``uint8`` array.

    Images of different sizes sit at the top-left of equal cells as large as
    the largest image. The result has shape
    ``(rows * (cell_h + pad) + pad, ncols * (cell_w + pad) + pad, 3)`` where
    ``rows = ceil(len(images) / ncols)``.
    """
    if ncols < 1:
        raise ValueError(f"ncols must be at least 1; got {ncols}")
    if len(images) == 0:
        raise ValueError("image_grid needs at least one image; got an empty list")
    tiles = [to_rgb_uint8(im) for im in images]
    ncols = min(ncols, len(tiles))
    rows = math.ceil(len(tiles) / ncols)
    ch = max(t.shape[0] for t in tiles)
    cw = max(t.shape[1] for t in tiles)
    grid = np.full((rows * (ch + pad) + pad, ncols * (cw + pad) + pad, 3), pad_value, dtype=np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        y, x = pad + r * (ch + pad), pad + c * (cw + pad)
        grid[y : y + t.shape[0], x : x + t.shape[1]] = t
    return grid


def maps_grid(
    maps: np.ndarray,
    ncols: int,
    *,
    cell: int = 48,
    symmetric: bool = False,
    pad: int = 2,
) -> np.ndarray:
    """Show a stack of 2-D arrays (conv filters, feature maps) as a grid.

    Args:
        maps: Array ``(N, h, w)`` (one gray tile each) or ``(N, 3, h, w)`` (RGB tiles).
        ncols: Tiles per row.
        cell: Side of each tile in pixels; small maps are enlarged with nearest
            neighbour so a 3x3 filter stays nine visible squares.
        symmetric: Scale each tile by its largest absolute value so 0 is mid
            gray (for filter weights); otherwise stretch min..max to 0..255.
        pad: Gap between tiles in pixels.
    """
    arr = np.asarray(maps, dtype=np.float64)
    if arr.ndim == 4 and arr.shape[1] == 3:
        arr = arr.transpose(0, 2, 3, 1)
    elif arr.ndim != 3:
        raise ValueError(f"maps must be (N, h, w) or (N, 3, h, w); got {arr.shape}")
    tiles = []
    for m in arr:
        m = np.nan_to_num(m)
        if symmetric:
            scale = float(np.abs(m).max()) or 1.0
            u = 0.5 + 0.5 * m / scale
        else:
            lo, hi = float(m.min()), float(m.max())
            u = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
        tile = Image.fromarray((np.clip(u, 0, 1) * 255).round().astype(np.uint8))
        k = max(1, cell // max(tile.size))
        tile = tile.resize((tile.width * k, tile.height * k), Image.Resampling.NEAREST)
        if max(tile.size) > cell:
            tile.thumbnail((cell, cell), Image.Resampling.BILINEAR)
        tiles.append(tile)
    return image_grid(tiles, ncols, pad=pad, pad_value=255)


def points_canvas(
    *point_sets: np.ndarray | Sequence | None,
    size: int = 320,
    margin: float = 0.12,
    color: RGB = (250, 250, 250),
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """A blank canvas that fits the given point sets, for when no image is at hand.

    Returns the canvas and each point set moved and scaled into it (None stays None).
    """
    arrays = [_as_points(p, "points") for p in point_sets]
    finite = [a[np.all(np.isfinite(a), axis=1)] for a in arrays if a is not None]
    finite = [a for a in finite if len(a)]
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    canvas[:] = color
    if not finite:
        return canvas, arrays
    allp = np.concatenate(finite)
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    span = float(max(hi[0] - lo[0], hi[1] - lo[1], 1e-6))
    scale = (size - 1) * (1 - 2 * margin) / span
    centre = (lo + hi) / 2
    moved = [None if a is None else (a - centre) * scale + (size - 1) / 2 for a in arrays]
    return canvas, moved


def augmentation_grid(
    draw_fn: Callable[[], tuple[np.ndarray | Image.Image, np.ndarray]],
    n: int,
    layout: DatasetFacts | None = None,
    *,
    ncols: int = 4,
    tile: int = 192,
    radius: float | None = None,
) -> np.ndarray:
    """Call ``draw_fn()`` ``n`` times and show each ``(image, points)`` with its (true, green) points.

    ``draw_fn`` is typically "load one sample and apply the random training
    transforms"; each call should give a fresh random draw. Tiles are resized
    to fit ``tile x tile`` (points scaled with them) before drawing so the
    markers have the same size in every tile.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1; got {n}")
    tiles = []
    for _ in range(n):
        image, points = draw_fn()
        rgb = to_rgb_uint8(image)
        pts = _as_points(points, "points")
        h, w = rgb.shape[:2]
        k = tile / max(h, w)
        nw, nh = max(1, round(w * k)), max(1, round(h * k))
        small = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BILINEAR))
        # Map pixel centres: x' = (x + 0.5) * nw / w - 0.5.
        scaled = None if pts is None else (pts + 0.5) * np.array([nw / w, nh / h]) - 0.5
        tiles.append(draw_keypoints(small, None, layout, true_points=scaled, radius=radius))
    return image_grid(tiles, ncols)


# ------------------------------------------------------------------ faces in photos
LOW_CONFIDENCE = 0.5
"""Faces and points whose confidence is below this are marked as not to be trusted."""
LOW_COLOR: RGB = (255, 170, 0)
"""Boxes and labels of low-confidence faces; hollow markers of low-confidence points."""
AXIS_COLORS: tuple[RGB, RGB, RGB] = ((235, 60, 60), (40, 200, 80), (40, 120, 255))
"""Head-pose axes: the face's x (to its left ear, image right when frontal), y (down) and z (out of the face)."""
FACE_RADIUS_FRACTION = 1 / 90
"""Marker radius as a fraction of the face box's longer side: markers scale with each face, not the photo."""
FACE_MIN_RADIUS_PX = 1.0
FACE_MAX_RADIUS_PX = 40.0
LABEL_FRACTION = 1 / 8
"""Label text height as a fraction of the face box's side, with the bounds below; at most
``LABEL_IMAGE_FRACTION`` of the image's longer side (a face filling an enlarged small photo got a
label as wide as the photo)."""
MIN_LABEL_PX, MAX_LABEL_PX = 11, 72
LABEL_IMAGE_FRACTION = 1 / 24
AXIS_LENGTH = 0.45
"""Pose axes' length as a fraction of the face box's side."""
CROP_FRAMING = 1.35
"""A face crop in the gallery is its box enlarged this much (square)."""


@dataclass
class FaceMark:
    """One face to draw with :func:`draw_faces`.

    Attributes:
        points: ``(K, 2)`` points in image pixels (NaN rows are skipped).
        box: Face box ``(left, top, width, height)`` in edge coordinates, or None.
        label: Text over the box (e.g. ``"face 2 · 99%"``); empty for none.
        point_confidence: ``(K,)`` in [0, 1] or None; points below ``LOW_CONFIDENCE`` get hollow markers.
        low: The whole face is of low confidence: its box and label are drawn in :data:`LOW_COLOR`.
        pose: ``{"yaw", "pitch", "roll"}`` in degrees (:mod:`kpcore.live.pose`), drawn as axes; or None.
        axes_origin: Where the pose axes start (default: the centre of the points).
    """

    points: np.ndarray
    box: Sequence[float] | None = None
    label: str = ""
    point_confidence: np.ndarray | None = None
    low: bool = False
    pose: dict | None = None
    axes_origin: tuple[float, float] | None = None


def face_side(mark: FaceMark) -> float:
    """The face's size in pixels: its box's longer side, else its points' extent."""
    if mark.box is not None:
        return float(max(mark.box[2], mark.box[3]))
    pts = np.asarray(mark.points, float)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    return float(np.ptp(pts, axis=0).max()) if len(pts) > 1 else 32.0


def face_radius(side: float) -> float:
    """Marker radius in pixels for a face of this size."""
    return float(np.clip(side * FACE_RADIUS_FRACTION, FACE_MIN_RADIUS_PX, FACE_MAX_RADIUS_PX))


def _font(size: float) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(1, round(size)))


def _label_font(draw: ImageDraw.ImageDraw, text: str, size: float,
                max_width: float) -> tuple[ImageFont.ImageFont, tuple[float, float, float, float]]:
    """The font of ``size`` pixels for ``text``, made smaller until the text fits ``max_width``; and its bbox.

    A face filling a small photo gave a label wider than the photo, cut at its left edge ("ce 1 · 100%").
    """
    font = _font(size)
    bbox = draw.textbbox((0, 0), text, font=font)
    width = bbox[2] - bbox[0]
    if width > max_width > 0:
        font = _font(max(1.0, size * max_width / width))
        bbox = draw.textbbox((0, 0), text, font=font)
        while bbox[2] - bbox[0] > max_width and font.size > 1:  # glyph widths do not scale exactly
            font = _font(font.size - 1)
            bbox = draw.textbbox((0, 0), text, font=font)
    return font, bbox


def enlarge(image: np.ndarray | Image.Image, factor: int) -> np.ndarray:
    """``image`` made ``factor`` times larger by repeating each pixel (no smoothing), as RGB ``uint8``.

    Points move with ``x' = (x + 0.5) * factor - 0.5`` (pixel centres, see :func:`enlarged_points`).
    """
    base = to_rgb_uint8(image)
    factor = int(factor)
    if factor < 1:
        raise ValueError(f"factor must be a whole number >= 1; got {factor}")
    return base if factor == 1 else np.ascontiguousarray(base.repeat(factor, axis=0).repeat(factor, axis=1))


def enlarged_points(points: np.ndarray | Sequence | None, factor: int) -> np.ndarray | None:
    """Points ``(K, 2)`` in the pixels of an image :func:`enlarge` d by ``factor``."""
    pts = _as_points(points, "points")
    return None if pts is None else (pts + 0.5) * factor - 0.5


def display_factor(height: int, width: int, min_side: int) -> int:
    """The whole-number enlargement that brings the image's longer side to at least ``min_side`` (1 if it is)."""
    return max(1, math.ceil(min_side / max(height, width, 1)))


def draw_faces(
    image: np.ndarray | Image.Image,
    faces: Sequence[FaceMark],
    layout: DatasetFacts | None = None,
    *,
    show_ids: bool = False,
    pred_color: RGB = PRED_COLOR,
    box_color: RGB = BOX_COLOR,
) -> np.ndarray:
    """Draw every face's points, skeleton, box, label and pose axes, each sized from its own face.

    Marker radius and line widths follow the face box (:func:`face_radius`),
    so a small face in a group photo and a close-up both show 68 distinct
    points. Points with a confidence below :data:`LOW_CONFIDENCE` are hollow
    rings; a low-confidence face's box and label are orange. Labels sit above
    the box; at the image's top edge below it (image viewers put their buttons
    along the top), else inside it; they never leave the image.
    Everything is drawn on one supersampled layer (see the module docstring).
    """
    base = to_rgb_uint8(image)
    h, w = base.shape[:2]
    s = max(1, min(SUPERSAMPLE, MAX_LAYER_SIDE // max(h, w, 1)))
    layer = Image.new("RGBA", (w * s, h * s), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    edges = list(layout.edges) if layout is not None else []

    def sub(p) -> tuple[float, float]:
        return (float(p[0]) * s + (s - 1) / 2, float(p[1]) * s + (s - 1) / 2)

    labels = []
    for mark in faces:
        pts = _as_points(mark.points, "points")
        side = face_side(mark)
        r = face_radius(side)
        lw = max(1, round(max(1.0, r / 2) * s))
        conf = None if mark.point_confidence is None else np.asarray(mark.point_confidence, float).ravel()
        if mark.box is not None:
            left, top, bw, bh = (float(v) for v in mark.box)
            color = LOW_COLOR if mark.low else box_color
            draw.rectangle([sub((left - 0.5, top - 0.5)), sub((left + bw - 0.5, top + bh - 0.5))],
                           outline=(*color, 255), width=max(1, round(max(1.0, r * 0.6) * s)))
        if pts is not None:
            for a, b in edges:
                if a < len(pts) and b < len(pts) and _visible(pts[a]) and _visible(pts[b]):
                    draw.line([sub(pts[a]), sub(pts[b])], fill=(*PRED_EDGE_COLOR, 220), width=lw)
            rs = r * s
            for j, p in enumerate(pts):
                if not _visible(p):
                    continue
                cx, cy = sub(p)
                box = [cx - rs, cy - rs, cx + rs, cy + rs]
                if conf is not None and j < len(conf) and conf[j] < LOW_CONFIDENCE:
                    draw.ellipse(box, fill=None, outline=(*LOW_COLOR, 255), width=max(1, round(rs * 0.45)))
                else:
                    outline = max(1, round(s * 0.6)) if r >= 2.5 else 0
                    draw.ellipse(box, fill=(*pred_color, 255), outline=(*OUTLINE_COLOR, 200) if outline else None,
                                 width=outline)
            if show_ids:
                font = _font(max(8, 2.5 * r * s))
                for j, p in enumerate(pts):
                    if _visible(p):
                        cx, cy = sub(p)
                        draw.text((cx + 1.5 * r * s, cy - 1.5 * r * s), str(j), fill=(255, 255, 255, 255),
                                  font=font, stroke_width=max(1, s), stroke_fill=(0, 0, 0, 255))
        if mark.pose is not None and pts is not None:
            from .pose import axes_points

            finite = pts[np.all(np.isfinite(pts), axis=1)]
            origin = mark.axes_origin or (tuple(finite.mean(axis=0)) if len(finite) else None)
            if origin is not None:
                tips = axes_points(mark.pose, origin, AXIS_LENGTH * side)
                for tip, color in zip(tips, AXIS_COLORS, strict=True):
                    draw.line([sub(origin), sub(tip)], fill=(*color, 255), width=max(1, round(r * 0.8 * s)))
                    draw.ellipse([sub(tip)[0] - r * s, sub(tip)[1] - r * s, sub(tip)[0] + r * s,
                                  sub(tip)[1] + r * s], fill=(*color, 255))
        if mark.label and mark.box is not None:
            labels.append((mark, side))

    for mark, side in labels:  # last, so no face's points cover another face's label
        left, top, bw, bh = (float(v) for v in mark.box)
        pad = 2 * s
        size = min(np.clip(side * LABEL_FRACTION, MIN_LABEL_PX, MAX_LABEL_PX),
                   max(MIN_LABEL_PX, max(h, w) * LABEL_IMAGE_FRACTION))
        font, (x0, y0, x1, y1) = _label_font(draw, mark.label, size * s, w * s - 2 * pad)
        tw, th = x1 - x0, y1 - y0
        bx = min(max(0, sub((left - 0.5, 0))[0]), w * s - tw - 2 * pad)
        by = sub((0, top - 0.5))[1] - th - 2 * pad
        if by < 0:  # no room above the box: below it (a viewer's buttons sit along the top edge) ...
            by = sub((0, top + bh - 0.5))[1]
            if by + th + 2 * pad > h * s:  # ... or, with no room there either, inside it at its top
                by = max(0, sub((0, top - 0.5))[1])
        by = min(by, h * s - th - 2 * pad)
        color = LOW_COLOR if mark.low else BOX_COLOR
        draw.rectangle([bx, by, bx + tw + 2 * pad, by + th + 2 * pad], fill=(*color, 230))
        draw.text((bx + pad - x0, by + pad - y0), mark.label, fill=(255, 255, 255, 255), font=font)

    return _composite(base, layer, s)


def face_crop(
    image: np.ndarray | Image.Image,
    mark: FaceMark,
    layout: DatasetFacts | None = None,
    *,
    size: int = 256,
    framing: float = CROP_FRAMING,
) -> np.ndarray:
    """A square ``size`` x ``size`` close-up of one face with its points drawn at that resolution.

    The crop (the box enlarged by ``framing``; the points' extent when there
    is no box) is resized first and the overlay drawn after, so markers stay
    crisp however small the face is in the photo. Parts outside the photo are gray.
    """
    base = to_rgb_uint8(image)
    if mark.box is not None:
        left, top, bw, bh = (float(v) for v in mark.box)
        cx, cy, side = left + bw / 2, top + bh / 2, max(bw, bh) * framing
    else:
        pts = np.asarray(mark.points, float)
        pts = pts[np.all(np.isfinite(pts), axis=1)]
        lo, hi = (pts.min(0), pts.max(0)) if len(pts) else (np.zeros(2), np.array(base.shape[1::-1], float))
        cx, cy = (lo + hi) / 2 + 0.5
        side = float(max(hi - lo).max()) * framing + 1
    side = max(side, 2.0)
    k = size / side
    left, top = cx - side / 2, cy - side / 2
    # Edge coordinates: crop pixel u covers [left + u / k, left + (u + 1) / k).
    pil = Image.fromarray(base)
    crop = pil.transform((size, size), Image.Transform.EXTENT, (left, top, left + side, top + side),
                         Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))
    pts = None if mark.points is None else (np.asarray(mark.points, float) + 0.5 - [left, top]) * k - 0.5
    box = None if mark.box is None else ((mark.box[0] - left) * k, (mark.box[1] - top) * k,
                                         mark.box[2] * k, mark.box[3] * k)
    origin = None if mark.axes_origin is None else tuple((np.asarray(mark.axes_origin) + 0.5 - [left, top]) * k - 0.5)
    moved = FaceMark(points=pts, box=box, label="", point_confidence=mark.point_confidence, low=mark.low,
                     pose=mark.pose, axes_origin=origin)
    return draw_faces(np.asarray(crop), [moved], layout)
