"""Hostile and unusual image files, built in memory with Pillow.

Shared by ``tests/test_imageio.py`` (the loader alone) and ``tests/test_hostile.py``
(the same files through the API, the CLI and the served UI). Builders return
``bytes`` so a test can write them under any file name, send them over HTTP or
pass them to :func:`kpcore.data.imageio.load_image` directly.

Two catalogues:

* :func:`bad_files`: files that must be refused, each with a regex its error
  message must match (what is wrong, and what to do);
* :func:`odd_encodings`: valid but unusual encodings of one photo (grayscale,
  16-bit, CMYK, RGBA, palette, animated, huge) that must still give points.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from kpcore.data.imageio import DEFAULT_MIN_SIDE

HUGE_SIZE = (6000, 4000)
"""A 24 MP photo: above ``DEFAULT_MAX_SIDE``, so it is shrunk while loading."""
BOMB_SIDE = 50_000
"""A PNG header claiming 50000x50000 = 2.5 gigapixels, in about 100 bytes."""
NOISE_FRAMES = 2
"""Frames after the first in the animated GIF: noise, so a loader that took them would find no face."""


def to_bytes(img: Image.Image, fmt: str, **kwargs) -> bytes:
    """``img`` encoded as ``fmt`` (Pillow's format name)."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def two_colour(width: int = 64, height: int = 48, left=(255, 0, 0), right=(0, 0, 255)) -> Image.Image:
    """Left half one colour, right half another: shows flips and rotations."""
    img = Image.new("RGB", (width, height), left)
    img.paste(Image.new("RGB", (width - width // 2, height), right), (width // 2, 0))
    return img


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` (the pixel data is a stub)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def png_rgb16(rgb16: np.ndarray) -> bytes:
    """A 48-bit (16 bits per channel) RGB PNG; Pillow cannot write these, so it is built by hand."""
    height, width, _ = rgb16.shape
    rows = rgb16.astype(">u2").reshape(height, width * 3).view(np.uint8)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)  # filter type 0 on every row
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw))
            + _png_chunk(b"IEND", b""))


def noise_image(width: int = 200, height: int = 200, seed: int = 0) -> Image.Image:
    """Random RGB pixels (they compress badly, so a truncated file misses most of them)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def truncated(data: bytes) -> bytes:
    """The first half of an encoded image, as an interrupted download leaves it."""
    return data[: len(data) // 2]


def not_an_image() -> bytes:
    """Plain text, as when a note is renamed ``.jpg``."""
    return b"this is not a picture\n" * 10


def heic_stub() -> bytes:
    """The start of an iPhone HEIC file (ISO-BMFF ``ftypheic``): Pillow has no reader for it."""
    return b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\0" * 100


def svg_document() -> bytes:
    """A small SVG drawing (vector, not pixels)."""
    return (b"<svg xmlns='http://www.w3.org/2000/svg' width='200' height='200'>"
            b"<circle cx='100' cy='100' r='80' fill='peru'/></svg>\n")


def landscape(width: int = 480, height: int = 320) -> Image.Image:
    """A synthetic landscape with no face: sky gradient, sun, two hills, a lake."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    sky = np.stack([90 + 80 * y / height, 150 + 60 * y / height, np.full_like(y, 235)], -1)
    img = sky.copy()
    sun = (x - width * 0.8) ** 2 + (y - height * 0.2) ** 2 < (height * 0.08) ** 2
    img[sun] = (255, 230, 120)
    hill1 = y > height * (0.55 + 0.12 * np.sin(x / width * 2 * np.pi))
    hill2 = y > height * (0.65 + 0.08 * np.cos(x / width * 3 * np.pi + 1))
    img[hill1] = (70, 130, 60)
    img[hill2] = (40, 100, 45)
    lake = y > height * 0.85
    img[lake] = np.stack([40 + 0 * x[lake], 90 + 20 * np.sin(x[lake] / 7), 160 + 0 * x[lake]], -1)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class BadFile:
    """A file that must be refused: its name as uploaded, its bytes, and the error it must give."""

    name: str
    data: bytes
    match: str  # regex searched in the error message


def bad_files() -> list[BadFile]:
    """Every hostile file of the issue, with the message kpcore gives for it."""
    min_side = f"at least {DEFAULT_MIN_SIDE}x{DEFAULT_MIN_SIDE}"
    return [
        BadFile("notes.jpg", not_an_image(), r"not an image in a supported format.*Supported: JPEG"),
        BadFile("empty.jpg", b"", r"empty \(0 bytes\)"),
        BadFile("truncated.jpg", truncated(to_bytes(noise_image(), "JPEG")),
                r"truncated or corrupt.*Re-download or re-export"),
        BadFile("pixel.png", to_bytes(Image.new("RGB", (1, 1), (200, 150, 120)), "PNG"),
                rf"1x1 pixels.*{min_side}.*Use a larger image"),
        BadFile("bomb.png", png_claiming(BOMB_SIDE, BOMB_SIDE), r"decompression bomb.*Use a smaller image"),
        BadFile("photo.heic", heic_stub(), r"HEIC.*Convert it to JPEG or PNG first \(supported: JPEG"),
        BadFile("drawing.svg", svg_document(), r"SVG.*Convert it to JPEG or PNG first \(supported: JPEG"),
    ]


def _face_mask(size: tuple[int, int]) -> Image.Image:
    """Opaque ellipse over the middle of the photo, transparent around it (a cut-out portrait)."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    inside = ((x - width / 2) / (0.42 * width)) ** 2 + ((y - height / 2) / (0.48 * height)) ** 2 <= 1
    return Image.fromarray(np.where(inside, 255, 0).astype(np.uint8), "L")


def odd_encodings(photo: Image.Image, huge: bool = True) -> dict[str, bytes]:
    """Valid but unusual encodings of ``photo`` (an RGB face photo), by file name.

    ``huge.jpg`` (:data:`HUGE_SIZE`, the photo stretched) takes about a second to
    encode; ``huge=False`` leaves it out.
    """
    photo = photo.convert("RGB")
    rgb = np.asarray(photo)
    gray = photo.convert("L")
    rgba = photo.convert("RGBA")
    rgba.putalpha(_face_mask(photo.size))
    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 255, rgb.shape, dtype=np.uint8)) for _ in range(NOISE_FRAMES)]
    files = {
        "gray.jpg": to_bytes(gray, "JPEG", quality=92),
        "gray16.png": to_bytes(Image.fromarray(np.asarray(gray).astype(np.uint16) * 257), "PNG"),
        "rgb48.png": png_rgb16(rgb.astype(np.uint16) * 257),
        "cmyk.jpg": to_bytes(photo.convert("CMYK"), "JPEG", quality=92),
        "rgba.png": to_bytes(rgba, "PNG"),
        "palette.png": to_bytes(photo.quantize(256), "PNG"),
        "animated.gif": to_bytes(photo, "GIF", save_all=True, append_images=noise, duration=200, loop=0),
    }
    if huge:
        big = photo.resize(HUGE_SIZE, Image.Resampling.BICUBIC)
        files["huge.jpg"] = to_bytes(big, "JPEG", quality=85)
    return files
