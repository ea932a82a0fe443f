"""Readers for the label formats: IMM ``.asf``, 300-W ``.pts`` and the 300-W XML.

Every reader returns points as float32 ``(K, 2)`` arrays in 0-based pixel
coordinates and raises :class:`~kpcore.errors.AnnotationError` naming the file
and the problem when a file is malformed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AnnotationError


@dataclass(frozen=True)
class AsfShape:
    """One parsed ``.asf`` file."""

    points_rel: np.ndarray  # (K, 2) fractions of width and height
    paths: np.ndarray  # (K,) path number of each point
    connects: np.ndarray  # (K, 2) "connects from", "connects to"
    host_image: str | None

    def to_pixels(self, width: int, height: int) -> np.ndarray:
        """Fractions -> 0-based pixel coordinates for an image of ``width x height``.

        The AAM-API that wrote these files stores ``x_pixel / width``, so the
        pixel position is ``x_rel * width`` (what the course code does too).
        """
        scale = np.array([width, height], dtype=np.float64)
        return (self.points_rel * scale).astype(np.float32)


def parse_asf(path: str | Path, expected_points: int | None = 58) -> AsfShape:
    """Parse an IMM AAM shape file (``.asf``).

    Data lines are ``<path#> <type> <x rel.> <y rel.> <point#> <from> <to>``;
    comment lines start with ``#``. The first non-comment line is the point count.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read the .asf file ({e})") from e
    lines = [ln.strip() for ln in text.splitlines()]
    content = [(i + 1, ln) for i, ln in enumerate(lines) if ln and not ln.startswith("#")]
    if not content:
        raise AnnotationError(f"{path}: empty .asf file; expected a point count and {expected_points} point lines")
    lineno, first = content[0]
    try:
        count = int(first)
    except ValueError:
        raise AnnotationError(f"{path}:{lineno}: expected the number of points, got {first!r}") from None
    if expected_points is not None and count != expected_points:
        raise AnnotationError(f"{path}:{lineno}: file declares {count} points; IMM shapes have {expected_points}")
    rows = content[1:1 + count]
    if len(rows) < count:
        raise AnnotationError(f"{path}: declares {count} points but has only {len(rows)} point lines (truncated?)")
    rel = np.zeros((count, 2), dtype=np.float64)
    paths = np.zeros(count, dtype=np.int64)
    connects = np.zeros((count, 2), dtype=np.int64)
    for i, (ln_no, ln) in enumerate(rows):
        parts = ln.split()
        # Some files of the official release carry three extra trailing fields
        # (e.g. 14-5f.asf: "... 0 1 0.00 0.00 0.00"); the first seven are the shape.
        if len(parts) == 1 and not parts[0][0].isdigit() or parts[0].lower().endswith((".jpg", ".png", ".bmp")):
            raise AnnotationError(f"{path}: declares {count} points but has only {i} point lines")
        if len(parts) < 7:
            raise AnnotationError(
                f"{path}:{ln_no}: expected 7 fields '<path#> <type> <x rel.> <y rel.> <point#> <from> <to>', "
                f"got {len(parts)}: {ln!r}")
        try:
            p, _t, x, y, n, a, b = int(parts[0]), int(parts[1]), float(parts[2]), float(parts[3]), \
                int(parts[4]), int(parts[5]), int(parts[6])  # noqa: E501
        except ValueError:
            raise AnnotationError(f"{path}:{ln_no}: non-numeric field in {ln!r}") from None
        if n != i:
            raise AnnotationError(f"{path}:{ln_no}: point# {n} out of order; expected {i}")
        if not (np.isfinite(x) and np.isfinite(y)) or not (-0.5 <= x <= 1.5 and -0.5 <= y <= 1.5):
            raise AnnotationError(f"{path}:{ln_no}: relative coordinates ({x}, {y}) are not fractions of the image size")
        rel[i] = (x, y)
        paths[i] = p
        connects[i] = (a, b)
    rest = content[1 + count:]
    host = rest[-1][1] if rest else None
    return AsfShape(points_rel=rel, paths=paths, connects=connects, host_image=host)


def read_pts(path: str | Path, expected_points: int | None = 68) -> np.ndarray:
    """Read a 300-W ``.pts`` file (1-based pixels) as 0-based ``(K, 2)`` float32 points."""
    path = Path(path)
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="latin-1").splitlines() if ln.strip()]
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read the .pts file ({e})") from e
    header: dict[str, str] = {}
    i = 0
    while i < len(lines) and lines[i] != "{":
        key, _, value = lines[i].partition(":")
        if not _:
            raise AnnotationError(f"{path}: expected 'version: 1', 'n_points: N' and '{{' before the points; got {lines[i]!r}")
        header[key.strip()] = value.strip()
        i += 1
    if i == len(lines):
        raise AnnotationError(f"{path}: no '{{' line: not a .pts file")
    try:
        n = int(header.get("n_points", ""))
    except ValueError:
        raise AnnotationError(f"{path}: missing or bad 'n_points:' header ({header.get('n_points')!r})") from None
    if expected_points is not None and n != expected_points:
        raise AnnotationError(f"{path}: n_points is {n}; expected {expected_points}")
    body = lines[i + 1:]
    if "}" not in body:
        raise AnnotationError(f"{path}: no closing '}}' (truncated file?)")
    rows = body[:body.index("}")]
    if len(rows) != n:
        raise AnnotationError(f"{path}: n_points is {n} but {len(rows)} point lines follow")
    try:
        pts = np.array([[float(v) for v in r.split()] for r in rows], dtype=np.float64)
    except ValueError:
        raise AnnotationError(f"{path}: a point line is not two numbers") from None
    if pts.shape != (n, 2) or not np.all(np.isfinite(pts)):
        raise AnnotationError(f"{path}: each point line must hold two finite numbers 'x y'")
    return (pts - 1.0).astype(np.float32)


@dataclass(frozen=True)
class XmlFace:
    """One face of a 300-W XML file."""

    image: Path  # absolute path, resolved relative to the XML
    image_rel: str  # as written in the XML
    box: tuple[float, float, float, float]  # left, top, width, height
    points: np.ndarray  # (K, 2) float32, 0-based pixels


def parse_300w_xml(path: str | Path, expected_points: int = 68) -> list[XmlFace]:
    """Parse an XML label file in the form of the official ``labels_ibug_300W_*.xml``.

    Each ``<image file=...>`` holds ``<box top left width height>`` elements, each
    with ``expected_points`` ``<part name x y>`` children (0-based pixels).
    Images are resolved relative to the XML's folder. An image with several
    boxes gives several faces.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise AnnotationError(f"{path}: no such XML file") from None
    except ET.ParseError as e:
        raise AnnotationError(f"{path}: not well-formed XML ({e})") from e
    images = root.find("images")
    if images is None:
        raise AnnotationError(f"{path}: no <images> element; expected the 300-W XML form "
                              "<dataset><images><image file=...><box ...><part .../>")
    faces: list[XmlFace] = []
    for img in images.iter("image"):
        rel = img.get("file")
        if not rel:
            raise AnnotationError(f"{path}: an <image> element has no file= attribute")
        for box in img.iter("box"):
            try:
                top, left = float(box.get("top")), float(box.get("left"))
                width, height = float(box.get("width")), float(box.get("height"))
            except (TypeError, ValueError):
                raise AnnotationError(f"{path}: <box> of {rel!r} needs numeric top, left, width, height") from None
            pts = np.full((expected_points, 2), np.nan, dtype=np.float64)
            for part in box.iter("part"):
                try:
                    idx = int(part.get("name"))
                    pts[idx] = float(part.get("x")), float(part.get("y"))
                except (TypeError, ValueError, IndexError):
                    raise AnnotationError(
                        f"{path}: bad <part> in {rel!r}: name={part.get('name')!r} x={part.get('x')!r} "
                        f"y={part.get('y')!r}; expected name 00..{expected_points - 1:02d} and numeric x, y") from None
            missing = np.flatnonzero(np.isnan(pts[:, 0]))
            if len(missing):
                raise AnnotationError(f"{path}: face in {rel!r} lacks parts {missing.tolist()[:10]}; "
                                      f"expected {expected_points} parts")
            faces.append(XmlFace(image=(path.parent / rel).resolve(), image_rel=rel,
                                 box=(left, top, width, height), points=pts.astype(np.float32)))
    return faces


# ------------------------------------------------------------------------- MTFL
MTFL_ATTRIBUTES = ("gender", "smile", "glasses", "pose")
#: Accepted values of each attribute column (README of the MTFL release).
MTFL_ATTRIBUTE_VALUES = {"gender": (1, 2), "smile": (1, 2), "glasses": (1, 2), "pose": (1, 2, 3, 4, 5)}


@dataclass(frozen=True)
class MtflFace:
    """One line of an MTFL label file.

    Attributes:
        image_rel: Image path relative to the dataset folder, with ``/`` separators.
        points: ``(5, 2)`` float32 0-based pixels: the eye on the image's left, the other
            eye, the nose tip, the mouth corner on the image's left, the other one.
        attributes: ``gender`` (1 male, 2 female), ``smile`` / ``glasses`` (1 yes, 2 no),
            ``pose`` (1 left profile, 2 left, 3 frontal, 4 right, 5 right profile).
    """

    image_rel: str
    points: np.ndarray
    attributes: dict[str, int]


def parse_mtfl(path: str | Path) -> list[MtflFace]:
    """Parse MTFL's ``training.txt`` / ``testing.txt`` as released.

    Lines look like `` lfw_5590\\NAME.jpg x1 .. x5 y1 .. y5 gender smile glasses pose``:
    a Windows (backslash) path, sometimes after a leading space, then 10 coordinates
    and 4 attribute codes. Blank lines are skipped.

    Raises:
        AnnotationError: a line with the wrong number of fields, a non-numeric field or
            an attribute code outside the documented values (file and line named).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read the MTFL label file ({e})") from e
    faces = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 15:
            raise AnnotationError(
                f"{path}:{lineno}: expected 15 fields (image path, x1..x5, y1..y5, gender, smile, "
                f"glasses, pose), got {len(parts)}: {line.strip()!r}")
        try:
            coords = np.array([float(v) for v in parts[1:11]], dtype=np.float32)
            codes = [int(v) for v in parts[11:15]]
        except ValueError:
            raise AnnotationError(f"{path}:{lineno}: non-numeric coordinate or attribute in {line.strip()!r}") from None
        if not np.isfinite(coords).all():
            raise AnnotationError(f"{path}:{lineno}: coordinates must be finite numbers")
        attrs = dict(zip(MTFL_ATTRIBUTES, codes, strict=True))
        for key, value in attrs.items():
            if value not in MTFL_ATTRIBUTE_VALUES[key]:
                raise AnnotationError(f"{path}:{lineno}: {key} = {value} is not one of {MTFL_ATTRIBUTE_VALUES[key]}")
        points = np.stack([coords[:5], coords[5:]], axis=1)
        faces.append(MtflFace(parts[0].replace("\\", "/"), points, attrs))
    if not faces:
        raise AnnotationError(f"{path}: no faces; an MTFL label file has one face per line")
    return faces
