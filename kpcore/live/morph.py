"""Face morphing from keypoints: a triangle mesh, piecewise-affine warps and a cross-dissolve.

    from kpcore import Predictor
    from kpcore.live.morph import FaceMorpher, save_gif

    morpher = FaceMorpher(Predictor.from_pretrained("checkpoints/face68-300w"))
    frames = morpher.sequence("a.jpg", "b.jpg", n_frames=12)   # detect, crop, morph
    save_gif(frames, "morph.gif", fps=12)

How one frame at time ``t`` is made (the classic mesh morph):

1. both images are brought to one size with their points mapped exactly
   (:func:`match_size`);
2. eight boundary points (the four corners and four edge midpoints of the frame,
   in edge coordinates) are appended to each shape, so the mesh covers every pixel
   (:func:`add_boundary_points`);
3. the *mean* of the two shapes is triangulated once (Delaunay,
   :func:`triangulate`) and the same triangles, by point id, are used for every
   shape, so the mesh does not change from frame to frame;
4. the in-between shape is ``(1 - w) A + w B`` (:func:`morph_points`) and each
   image is warped onto it piecewise-affinely (:func:`warp_to_shape`);
5. the two warped images are cross-dissolved: ``(1 - d) A' + d B'``.

Warping: every output pixel gets the id of the triangle it lies in (the
destination triangles are rasterised into a label image with
``cv2.fillConvexPoly``), that triangle's affine map destination -> source is
evaluated per pixel, and one ``cv2.remap`` samples the image. Shared triangle
edges are filled by both neighbours and the two affine maps agree there, so
there are no seams and no holes. Measured at 512x512 with the 68 + 8 points
of a 300-W face (142 triangles) on a 2-core box that was also training a model:
one warp takes ~6 ms, against ~17 ms for ``warpAffine``-ing each triangle's
bounding rectangle and pasting it through a mask (which also needs care at shared
edges) and ~1.4 s for scikit-image's ``PiecewiseAffineTransform``. A whole
in-between frame (two warps and the dissolve) takes ~12 ms, 12 frames ~0.13 s.

Images are RGB ``uint8`` ``(H, W, 3)`` arrays and points ``(K, 2)`` float
``(x, y)`` pixels, 0-based pixel centres (:mod:`kpcore.data.facts`).
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from ..data import geometry as geo

DEFAULT_SIZE = 512
"""Side in pixels of the square face crops :class:`FaceMorpher` morphs."""
DEFAULT_FRAMING = 1.6
"""The crop's side is the keypoints' (square) box side times this."""
FRAMING_LIFT = 0.1
"""The crop's centre sits this fraction of the keypoints' box side above the box centre.

68-point layouts stop at the brows; lifting the crop keeps the forehead in view
instead of an equal band of neck.
"""
_FILL_BLUR = 1 / 16  # box-blur width, as a fraction of the crop side, of the fill outside a photo
DEFAULT_FRAMES = 12
DEFAULT_FPS = 12
MIN_FRAMES = 2
GIF_COLORS = 256
_PALETTE_REDUCE = 4  # the GIF palette is computed on frames shrunk this many times (speed)
_DEGENERATE_AREA = 1e-6  # px^2: a destination triangle this thin covers no pixel centre of its own
_SUBPIXEL_BITS = 4  # fillConvexPoly's fixed-point fraction bits (1/16 px)


# --------------------------------------------------------------------------- checks
def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"{name} must be an RGB uint8 array of shape (H, W, 3); got {arr.dtype} {arr.shape}. "
                         "Load photos with kpcore.data.imageio.load_image.")
    return arr


def _check_points(points: np.ndarray, name: str, num: int | None = None) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise ValueError(f"{name} must have shape (K, 2) with K >= 1; got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError(f"{name} holds NaN or infinite coordinates")
    if num is not None and len(pts) != num:
        raise ValueError(f"{name} has {len(pts)} points but the other shape has {num}; "
                         "morph faces from the same keypoint layout")
    return pts


def _check_t(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; got {value}")
    return value


# --------------------------------------------------------------------------- shapes
def boundary_points(size: tuple[int, int]) -> np.ndarray:
    """The 4 corners and 4 edge midpoints of a ``size = (width, height)`` frame, ``(8, 2)``.

    They lie on the frame's outer *edges* (``-0.5`` and ``W - 0.5`` in pixel-centre
    coordinates), so a mesh through them covers every pixel centre and its
    triangles' areas add up to exactly ``W * H``.
    """
    w, h = size
    x0, y0, x1, y1 = -0.5, -0.5, w - 0.5, h - 0.5
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array([[x0, y0], [xm, y0], [x1, y0], [x1, ym],
                     [x1, y1], [xm, y1], [x0, y1], [x0, ym]], dtype=np.float64)


def add_boundary_points(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``points`` clipped to the frame, followed by its :func:`boundary_points`: ``(K + 8, 2)``.

    Points predicted outside the frame (a jaw cut by the border) are clipped onto
    it, so the mesh stays inside the frame and still covers all of it.
    """
    w, h = size
    pts = np.asarray(points, dtype=np.float64)
    clipped = np.stack([np.clip(pts[:, 0], -0.5, w - 0.5), np.clip(pts[:, 1], -0.5, h - 0.5)], axis=1)
    return np.concatenate([clipped, boundary_points(size)])


def morph_points(points_a: np.ndarray, points_b: np.ndarray, t: float) -> np.ndarray:
    """The shape ``(1 - t) * a + t * b`` (linear, point by point)."""
    a = _check_points(points_a, "points_a")
    b = _check_points(points_b, "points_b", len(a))
    t = _check_t(t, "t")
    return (1.0 - t) * a + t * b


def triangulate(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles of ``points``: ``(M, 3)`` int point ids (vertex order unspecified).

    Pass the mean shape of the faces being morphed (with boundary points); the
    same ids then index every shape. Duplicate points are left out of the mesh.
    """
    from scipy.spatial import Delaunay

    pts = _check_points(points, "points")
    if len(pts) < 3:
        raise ValueError(f"need at least 3 points to triangulate; got {len(pts)}")
    try:
        return Delaunay(pts).simplices.astype(np.int64)
    except Exception as e:  # scipy raises QhullError (all points on one line, ...)
        raise ValueError(f"cannot triangulate the {len(pts)} points ({e}); are they all on one line?") from e


def triangle_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unsigned area of each triangle in square pixels."""
    p = np.asarray(points, dtype=np.float64)[np.asarray(triangles)]
    ab, ac = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    return 0.5 * np.abs(ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0])


# --------------------------------------------------------------------------- warping
def _label_map(dst_points: np.ndarray, triangles: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` int32: the id of the destination triangle each pixel centre lies in, or -1."""
    w, h = size
    labels = np.full((h, w), -1, dtype=np.int32)
    corners = np.round(dst_points[triangles] * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    for i in np.flatnonzero(triangle_areas(dst_points, triangles) > _DEGENERATE_AREA):
        cv2.fillConvexPoly(labels, corners[i], int(i), cv2.LINE_8, _SUBPIXEL_BITS)
    return labels


def _affines(src_points: np.ndarray, dst_points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """``(M + 1, 2, 3)``: per triangle, the affine map destination -> source; last = identity."""
    ones = np.ones((len(triangles), 3, 1))
    dst = np.concatenate([dst_points[triangles], ones], axis=2)  # (M, 3, 3) rows [x, y, 1]
    src = src_points[triangles]  # (M, 3, 2)
    # dst @ A.T = src; pinv keeps degenerate triangles (never rasterised) finite.
    maps = np.transpose(np.linalg.pinv(dst) @ src, (0, 2, 1))
    identity = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    return np.concatenate([maps, identity])


def _remap(image: np.ndarray, labels: np.ndarray, affines: np.ndarray) -> np.ndarray:
    h, w = labels.shape
    coeff = affines.astype(np.float32)[labels]  # label -1 picks the identity at the end
    xs = np.arange(w, dtype=np.float32)[None, :]
    ys = np.arange(h, dtype=np.float32)[:, None]
    map_x = coeff[..., 0, 0] * xs + coeff[..., 0, 1] * ys + coeff[..., 0, 2]
    map_y = coeff[..., 1, 0] * xs + coeff[..., 1, 1] * ys + coeff[..., 1, 2]
    # Reflection, not black, where a warp reaches past the border (clipped points).
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def warp_to_shape(image: np.ndarray, src_points: np.ndarray, dst_points: np.ndarray,
                  triangles: np.ndarray) -> np.ndarray:
    """Warp ``image`` so that ``src_points`` move onto ``dst_points``, triangle by triangle.

    Args:
        image: RGB uint8 ``(H, W, 3)``; the output has the same size.
        src_points: ``(N, 2)`` points in ``image``, usually with boundary points.
        dst_points: ``(N, 2)`` where they should land.
        triangles: ``(M, 3)`` ids into both point arrays (:func:`triangulate`).
    """
    image = _check_image(image, "image")
    src = _check_points(src_points, "src_points")
    dst = _check_points(dst_points, "dst_points", len(src))
    tri = np.asarray(triangles, dtype=np.int64)
    h, w = image.shape[:2]
    return _remap(image, _label_map(dst, tri, (w, h)), _affines(src, dst, tri))


def match_size(image: np.ndarray, points: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize ``image`` to ``size = (width, height)`` and map its ``points`` exactly.

    The aspect ratio follows ``size``; crop first (as :class:`FaceMorpher` does)
    when the two photos' framings differ.
    """
    image = _check_image(image, "image")
    pts = _check_points(points, "points")
    h, w = image.shape[:2]
    if (w, h) == tuple(size):
        return image, pts
    shrink = size[0] < w or size[1] < h
    resized = cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    # cv2.resize maps pixel centres exactly as crop_matrix does: x' + 0.5 = (x + 0.5) * W' / W.
    return resized, geo.apply(geo.crop_matrix((0, 0, w, h), size), pts)


# --------------------------------------------------------------------------- morphs
@dataclass
class _Pair:
    """Two images of one size with their points (boundary included) and the shared mesh."""

    image_a: np.ndarray
    image_b: np.ndarray
    points_a: np.ndarray
    points_b: np.ndarray
    triangles: np.ndarray

    @classmethod
    def make(cls, image_a: np.ndarray, points_a: np.ndarray, image_b: np.ndarray,
             points_b: np.ndarray) -> _Pair:
        image_a = _check_image(image_a, "image_a")
        pa = _check_points(points_a, "points_a")
        pb = _check_points(points_b, "points_b", len(pa))
        h, w = image_a.shape[:2]
        image_b, pb = match_size(_check_image(image_b, "image_b"), pb, (w, h))
        full_a, full_b = add_boundary_points(pa, (w, h)), add_boundary_points(pb, (w, h))
        return cls(image_a, image_b, full_a, full_b, triangulate((full_a + full_b) / 2))

    def frame(self, warp_frac: float, dissolve_frac: float) -> np.ndarray:
        shape = (1.0 - warp_frac) * self.points_a + warp_frac * self.points_b
        h, w = self.image_a.shape[:2]
        labels = _label_map(shape, self.triangles, (w, h))  # shared by both warps
        if dissolve_frac <= 0.0:
            return _remap(self.image_a, labels, _affines(self.points_a, shape, self.triangles))
        if dissolve_frac >= 1.0:
            return _remap(self.image_b, labels, _affines(self.points_b, shape, self.triangles))
        a = _remap(self.image_a, labels, _affines(self.points_a, shape, self.triangles))
        b = _remap(self.image_b, labels, _affines(self.points_b, shape, self.triangles))
        return cv2.addWeighted(a, 1.0 - dissolve_frac, b, dissolve_frac, 0.0)


def morph(image_a: np.ndarray, points_a: np.ndarray, image_b: np.ndarray, points_b: np.ndarray,
          t: float, warp_frac: float | None = None, dissolve_frac: float | None = None) -> np.ndarray:
    """One in-between face, the size of ``image_a``.

    Args:
        image_a, image_b: RGB uint8 images; B is resized to A's size (:func:`match_size`).
        points_a, points_b: ``(K, 2)`` corresponding points in each image.
        t: Where between A (0) and B (1).
        warp_frac: How far the *shape* goes towards B; defaults to ``t``.
        dissolve_frac: How much of B's *colour*; defaults to ``t``.
    """
    t = _check_t(t, "t")
    warp = _check_t(t if warp_frac is None else warp_frac, "warp_frac")
    dissolve = _check_t(t if dissolve_frac is None else dissolve_frac, "dissolve_frac")
    return _Pair.make(image_a, points_a, image_b, points_b).frame(warp, dissolve)


def morph_sequence(image_a: np.ndarray, points_a: np.ndarray, image_b: np.ndarray, points_b: np.ndarray,
                   n_frames: int = DEFAULT_FRAMES) -> list[np.ndarray]:
    """``n_frames`` faces from A (first frame) to B (last), evenly spaced in ``t``, one mesh for all."""
    if int(n_frames) != n_frames or n_frames < MIN_FRAMES:
        raise ValueError(f"n_frames must be an integer >= {MIN_FRAMES}; got {n_frames!r}")
    pair = _Pair.make(image_a, points_a, image_b, points_b)
    return [pair.frame(t, t) for t in np.linspace(0.0, 1.0, int(n_frames))]


def mean_face(images: Sequence[np.ndarray], points_list: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The average face: every image warped onto the mean shape, then averaged pixel by pixel.

    Images are first resized to the first one's size. Returns the image and the
    mean shape ``(K, 2)`` in its pixels.
    """
    if len(images) == 0 or len(images) != len(points_list):
        raise ValueError(f"need one (K, 2) point array per image and at least one image; "
                         f"got {len(images)} images and {len(points_list)} point arrays")
    first = _check_image(images[0], "images[0]")
    h, w = first.shape[:2]
    num = len(_check_points(points_list[0], "points_list[0]"))
    pairs = [match_size(_check_image(im, f"images[{i}]"), _check_points(p, f"points_list[{i}]", num), (w, h))
             for i, (im, p) in enumerate(zip(images, points_list, strict=True))]
    mean_points = np.mean([p for _, p in pairs], axis=0)
    target = add_boundary_points(mean_points, (w, h))
    triangles = triangulate(target)
    labels = _label_map(target, triangles, (w, h))
    total = np.zeros((h, w, 3), dtype=np.float64)
    for image, pts in pairs:
        total += _remap(image, labels, _affines(add_boundary_points(pts, (w, h)), target, triangles))
    return np.round(total / len(pairs)).astype(np.uint8), mean_points


# --------------------------------------------------------------------------- files
def _check_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    if len(frames) == 0:
        raise ValueError("no frames to write")
    out = [_check_image(f, f"frames[{i}]") for i, f in enumerate(frames)]
    if any(f.shape != out[0].shape for f in out):
        raise ValueError(f"all frames must have one size; got {sorted({f.shape for f in out})}")
    return out


def boomerang(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """A -> B -> A without repeating the ends, so a looping animation has no jump."""
    frames = list(frames)
    return frames + frames[-2:0:-1]


GIF_MAX_SIDE = 320
"""GIFs are written at most this many pixels on a side: 512x512 frames made a 3.8 MB GIF for 22 frames."""


def save_gif(frames: Sequence[np.ndarray], path: str | Path, fps: float = DEFAULT_FPS,
             max_side: int | None = GIF_MAX_SIDE, dither: bool = False) -> Path:
    """Write an endlessly looping GIF and return its path.

    Frames larger than ``max_side`` are shrunk (None keeps them). All frames
    share one 256-colour palette (median cut over the first, middle and last
    frames, shrunk), so colours do not flicker from frame to frame. Without
    ``dither`` the GIF is about half as large: dithering noise defeats the
    LZW compression, and a smooth morph needs no dithering at 256 colours.
    """
    from PIL import Image

    frames = _check_frames(frames)
    if fps <= 0:
        raise ValueError(f"fps must be positive; got {fps}")
    path = Path(path)
    pil = [Image.fromarray(f) for f in frames]
    if max_side is not None and max(pil[0].size) > max_side:
        k = max_side / max(pil[0].size)
        size = (max(1, round(pil[0].width * k)), max(1, round(pil[0].height * k)))
        pil = [im.resize(size, Image.Resampling.LANCZOS) for im in pil]
    factor = max(1, min(_PALETTE_REDUCE, *pil[0].size))
    keys = [pil[i].reduce(factor) for i in sorted({0, len(pil) // 2, len(pil) - 1})]
    w, h = keys[0].size
    mosaic = Image.new("RGB", (w * len(keys), h))
    for i, key in enumerate(keys):
        mosaic.paste(key, (i * w, 0))
    palette = mosaic.quantize(GIF_COLORS, method=Image.Quantize.MEDIANCUT)
    mode = Image.Dither.FLOYDSTEINBERG if dither else Image.Dither.NONE
    images = [im.quantize(palette=palette, dither=mode) for im in pil]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=round(1000 / fps), loop=0, optimize=False)
    return path


MP4_CODECS = ("avc1", "mp4v")
"""FourCCs OpenCV is asked for when no FFmpeg with libx264 is found (see :func:`save_mp4`)."""
H264_CRF = 23
"""libx264 quality (lower: better and larger); 23 is its default."""


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str | None:
    """An FFmpeg executable with the libx264 encoder: imageio-ffmpeg's bundled one, else one on PATH."""
    import shutil
    import subprocess

    candidates = []
    try:
        import imageio_ffmpeg

        candidates.append(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):  # not installed, or no binary for this platform
        pass
    candidates.append(shutil.which("ffmpeg"))
    for exe in filter(None, candidates):
        try:
            encoders = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True,
                                      timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        if "libx264" in encoders:
            return exe
    return None


@functools.lru_cache(maxsize=1)
def mp4_codec() -> str | None:
    """What :func:`save_mp4` writes here: ``"h264"`` (FFmpeg + libx264), else the first of
    :data:`MP4_CODECS` this OpenCV build can write (probed once), or None."""
    if ffmpeg_exe() is not None:
        return "h264"
    with tempfile.TemporaryDirectory() as folder:
        for codec in MP4_CODECS:
            writer = cv2.VideoWriter(str(Path(folder) / "probe.mp4"), cv2.VideoWriter_fourcc(*codec),
                                     float(DEFAULT_FPS), (64, 64))
            opened = writer.isOpened()
            writer.release()
            if opened:
                return codec
    return None


def save_mp4(frames: Sequence[np.ndarray], path: str | Path, fps: float = DEFAULT_FPS) -> Path:
    """Write an MP4 that browsers play (H.264, yuv420p, faststart) and return its path.

    Frames are piped to FFmpeg's libx264 (:func:`ffmpeg_exe`; the
    ``imageio-ffmpeg`` package ships one). Odd sizes are padded by one pixel
    (yuv420p needs even sides). Without such an FFmpeg, OpenCV's own encoder
    writes MPEG-4 Part 2, which players open but browsers do not.

    Raises:
        RuntimeError: No MP4 encoder at all, or FFmpeg failed.
    """
    import subprocess

    frames = _check_frames(frames)
    if fps <= 0:
        raise ValueError(f"fps must be positive; got {fps}")
    codec = mp4_codec()
    if codec is None:
        raise RuntimeError(f"no MP4 encoder here (no FFmpeg with libx264, and OpenCV has none of "
                           f"{list(MP4_CODECS)}); pip install imageio-ffmpeg, or write a GIF with save_gif")
    path = Path(path)
    h, w = frames[0].shape[:2]
    if codec == "h264":
        command = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
                   "-s", f"{w}x{h}", "-r", f"{float(fps)}", "-i", "-", "-an",
                   "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-preset", "veryfast",
                   "-crf", str(H264_CRF), "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path)]
        data = b"".join(np.ascontiguousarray(f).tobytes() for f in frames)
        result = subprocess.run(command, input=data, capture_output=True, timeout=300)
        if result.returncode != 0 or not path.is_file():
            raise RuntimeError(f"FFmpeg could not write {path.name!r}: "
                               f"{result.stderr.decode(errors='replace').strip()[-300:]}")
        return path
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), (w, h))
    if not writer.isOpened():
        writer.release()
        raise RuntimeError(f"cannot write {codec!r} MP4 to {str(path)!r}; check the folder exists and is writable")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


# --------------------------------------------------------------------------- photos
class FaceFinder(Protocol):
    """What :class:`FaceMorpher` needs from a :class:`kpcore.Predictor`."""

    def predict(self, image: np.ndarray) -> list[Any]:
        """Faces with ``.points`` (K, 2) in image pixels and ``.box`` (left, top, width, height)."""
        ...


@dataclass
class AlignedFace:
    """A face cropped to a square frame, with its points in that frame.

    Attributes:
        image: RGB uint8 ``(size, size, 3)``.
        points: ``(K, 2)`` points in ``image`` pixels.
        crop_box: ``(left, top, width, height)`` of the crop in the original photo.
        matrix: 3x3 affine taking original pixel centres to ``image``'s.
    """

    image: np.ndarray
    points: np.ndarray
    crop_box: tuple[float, float, float, float]
    matrix: np.ndarray


def face_crop_box(points: np.ndarray, framing: float = DEFAULT_FRAMING) -> tuple[float, float, float, float]:
    """Square crop around a face's keypoints: their box's longer side times ``framing``, lifted a little."""
    left, top, width, height = geo.enlarge_box(geo.points_box(points), framing, square=True)
    return left, top - FRAMING_LIFT * width / framing, width, height


def align_face(image: np.ndarray, points: np.ndarray, size: int = DEFAULT_SIZE,
               framing: float = DEFAULT_FRAMING) -> AlignedFace:
    """Crop ``image`` to :func:`face_crop_box` resized to ``size`` x ``size``; the points follow exactly.

    Parts of the crop outside the photo are filled with its border pixels,
    smeared outwards and blurred: black bands would sweep across a morph and
    darken a mean face, and a mirror image would add a second eye or ear.
    """
    image = _check_image(image, "image")
    pts = _check_points(points, "points")
    box = face_crop_box(pts, framing)
    m = geo.crop_matrix(box, (size, size))
    h, w = image.shape[:2]
    left, top, bw, bh = box
    pad = [max(0, int(np.ceil(v)) + 1) for v in (-top, top + bh - h, -left, left + bw - w)]
    if not any(pad):
        return AlignedFace(geo.warp(image, m, (size, size)), geo.apply(m, pts), box, m)
    padded = cv2.copyMakeBorder(image, *pad, cv2.BORDER_REPLICATE)
    shift = np.array([[1.0, 0.0, -pad[2]], [0.0, 1.0, -pad[0]], [0.0, 0.0, 1.0]])  # padded -> original
    crop = geo.warp(padded, m @ shift, (size, size))
    # Which crop pixel centres come from inside the photo (the crop is an axis-aligned scaling).
    back = geo.invert(m)
    xs = back[0, 0] * np.arange(size) + back[0, 2]
    ys = back[1, 1] * np.arange(size) + back[1, 2]
    inside = ((ys >= -0.5) & (ys <= h - 0.5))[:, None] & ((xs >= -0.5) & (xs <= w - 0.5))[None, :]
    k = max(3, round(size * _FILL_BLUR))
    blurred = cv2.blur(cv2.blur(crop, (k, k)), (k, k))  # two box passes ~ a Gaussian
    crop = np.where(inside[..., None], crop, blurred)
    return AlignedFace(crop, geo.apply(m, pts), box, m)


def _face_area(face: Any) -> float:
    box = getattr(face, "box", None)
    if box is None:
        box = geo.points_box(np.asarray(face.points))
    return float(box[2]) * float(box[3])


class FaceMorpher:
    """Morph faces found in photos: detect, crop both to one framing, then :func:`morph`.

    Args:
        predictor: A :class:`kpcore.Predictor` (or anything with its ``predict``).
        size: Side of the square crops and of the results.
        framing: Crop side relative to the keypoints' box (:func:`face_crop_box`).
    """

    def __init__(self, predictor: FaceFinder, size: int = DEFAULT_SIZE, framing: float = DEFAULT_FRAMING) -> None:
        if size < 32 or framing <= 0:
            raise ValueError(f"need size >= 32 and framing > 0; got size={size}, framing={framing}")
        self.predictor = predictor
        self.size = int(size)
        self.framing = float(framing)

    def align(self, photo: Any) -> AlignedFace:
        """The largest face in ``photo`` (path, bytes, PIL image or array), cropped.

        Raises:
            BadImageError: The photo cannot be read.
            NoFaceFoundError: No face in it.
        """
        from ..data.imageio import load_image
        from ..errors import NoFaceFoundError

        image = load_image(photo)
        faces = self.predictor.predict(image)
        if not faces:
            h, w = image.shape[:2]
            raise NoFaceFoundError(f"no face found in the {w}x{h} image; use a photo with a larger, frontal face")
        face = max(faces, key=_face_area)
        return align_face(image, np.asarray(face.points, dtype=np.float64), self.size, self.framing)

    def midway(self, photo_a: Any, photo_b: Any, t: float = 0.5) -> np.ndarray:
        """The in-between face at ``t`` (0.5: half way in shape and colour)."""
        a, b = self.align(photo_a), self.align(photo_b)
        return morph(a.image, a.points, b.image, b.points, t)

    def sequence(self, photo_a: Any, photo_b: Any, n_frames: int = DEFAULT_FRAMES) -> list[np.ndarray]:
        """``n_frames`` frames from the face in A to the face in B."""
        a, b = self.align(photo_a), self.align(photo_b)
        return morph_sequence(a.image, a.points, b.image, b.points, n_frames)

    def mean_face(self, photos: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """The average of the largest face in each photo, and its mean shape."""
        faces = [self.align(p) for p in photos]
        return mean_face([f.image for f in faces], [f.points for f in faces])
