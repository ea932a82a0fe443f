"""Safe image loading: every odd or hostile input is generated here with Pillow."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kpcore.data.imageio import (
    DEFAULT_MAX_SIDE,
    DEFAULT_MIN_SIDE,
    SUPPORTED_FORMATS,
    load_image,
    load_image_with_info,
)
from kpcore.errors import BadImageError
from tests.hostile_images import png_claiming as _png_claiming
from tests.hostile_images import two_colour as _two_colour

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


# ------------------------------------------------------------------ sources

def test_every_source_kind_gives_the_same_rgb_array(tmp_path):
    img = _two_colour()
    path = _save(img, tmp_path / "a.png")
    data = path.read_bytes()
    expected = np.asarray(img)
    with path.open("rb") as file:
        sources = [path, str(path), data, bytearray(data), memoryview(data), io.BytesIO(data),
                   file, img, expected]
        for source in sources:
            out = load_image(source)
            assert out.dtype == np.uint8 and out.shape == (48, 64, 3), type(source)
            np.testing.assert_array_equal(out, expected, err_msg=str(type(source)))


def test_result_is_a_copy():
    array = np.asarray(_two_colour()).copy()
    out = load_image(array)
    out[:] = 0
    assert array.max() == 255


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("TIFF", "tif"),
                                     ("GIF", "gif"), ("WEBP", "webp"), ("PPM", "ppm")])
def test_supported_formats_decode(tmp_path, fmt, ext):
    assert fmt in SUPPORTED_FORMATS
    path = _save(_two_colour(), tmp_path / f"a.{ext}", format=fmt)
    out, info = load_image_with_info(path)
    assert out.shape == (48, 64, 3) and info.format == fmt and info.size == (64, 48)
    assert out[24, 5, 0] > 200 and out[24, 5, 2] < 60  # left is red
    assert out[24, 58, 2] > 200 and out[24, 58, 0] < 60  # right is blue


# ------------------------------------------------------------------ hostile input

def test_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n" * 10)
    with pytest.raises(BadImageError, match="not an image.*Supported: JPEG"):
        load_image(path)


def test_not_an_image_says_how_it_begins_in_words():
    # text as text (no Python b'...' literal), binary as hex bytes
    with pytest.raises(BadImageError, match="looks like text: 'this is not a picture th...'"):
        load_image(("this is not a picture\n" * 10).encode())
    with pytest.raises(BadImageError, match="starts with the bytes 00 01 02 03 04 05 06 07"):
        load_image(bytes(range(64)))


def test_bad_image_error_is_a_value_error():
    assert issubclass(BadImageError, ValueError)


@pytest.mark.parametrize("source", [b"", io.BytesIO(b"")])
def test_zero_bytes(source):
    with pytest.raises(BadImageError, match="empty"):
        load_image(source)


def test_already_read_file_object_says_to_seek():
    stream = io.BytesIO(b"\x89PNG....")
    stream.read()
    with pytest.raises(BadImageError, match="seek"):
        load_image(stream)


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(BadImageError, match="empty.*0 bytes"):
        load_image(tmp_path / "empty.png")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(fmt):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buf, format=fmt)
    data = buf.getvalue()
    with pytest.raises(BadImageError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])



def _pillow_rgb(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("mode, subsampling", [("RGB", 0), ("RGB", 2), ("L", 0)])
def test_plain_jpeg_fast_decode_equals_pillow(mode, subsampling, monkeypatch):
    """Plain JPEGs are decoded by OpenCV (faster); the pixels must be Pillow's, bit for bit."""
    import cv2

    rng = np.random.default_rng(1)
    smooth = cv2.GaussianBlur(rng.integers(0, 255, (301, 257, 3), dtype=np.uint8), (9, 9), 3)
    img = Image.fromarray(smooth).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85, **({"subsampling": subsampling} if mode == "RGB" else {}))
    data = buf.getvalue()
    calls = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: calls.append(1) or real(*a))
    out, info = load_image_with_info(data)
    assert calls, "a plain JPEG should take the OpenCV path"
    np.testing.assert_array_equal(out, _pillow_rgb(data))
    assert info.size == info.out_size == (257, 301) and info.format == "JPEG" and info.mode == mode
    # bytes after the end marker: Pillow's path (the fast one needs the marker last), same pixels
    np.testing.assert_array_equal(load_image(data + b"trailing"), out)


def test_rotated_jpeg_is_not_fast_decoded(tmp_path, monkeypatch):
    import cv2

    img = Image.fromarray(np.zeros((40, 60, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(img, tmp_path / "r.jpg", exif=exif)
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("EXIF-rotated JPEG went to OpenCV"))
    assert load_image(path).shape == (60, 40, 3)


def test_one_pixel_is_too_small_and_says_the_minimum():
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    with pytest.raises(BadImageError, match=f"1x1 pixels.*at least {DEFAULT_MIN_SIDE}x{DEFAULT_MIN_SIDE}"):
        load_image(buf.getvalue())
    assert load_image(buf.getvalue(), min_side=1).shape == (1, 1, 3)


def test_decompression_bomb_caught_by_pillow():
    data = _png_claiming(50_000, 50_000)  # 2.5 gigapixels claimed in ~100 bytes
    assert len(data) < 200
    with pytest.raises(BadImageError, match="decompression bomb"):
        load_image(data)


def test_decompression_bomb_caught_by_our_limit():
    data = _png_claiming(11_000, 10_000)  # 110 MP: under Pillow's hard limit, over ours
    with _no_warnings():
        with pytest.raises(BadImageError, match="110 megapixels.*max_pixels"):
            load_image(data)
    with pytest.raises(BadImageError, match="megapixels"):
        load_image(_png_claiming(2000, 1000), max_pixels=1_000_000)


class _no_warnings:
    """Pillow's DecompressionBombWarning must not leak out: we raise our own error."""

    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings(record=True)
        self.record = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        assert not [w for w in self.record if issubclass(w.category, Image.DecompressionBombWarning)]
        return False


def test_huge_photo_is_downscaled_not_refused(tmp_path):
    path = _save(_two_colour(4200, 2800), tmp_path / "big.jpg", quality=90)
    out, info = load_image_with_info(path)
    assert info.size == (4200, 2800)
    assert out.shape == (round(2800 * DEFAULT_MAX_SIDE / 4200), DEFAULT_MAX_SIDE, 3)
    assert info.out_size == (DEFAULT_MAX_SIDE, out.shape[0])
    assert info.scale == pytest.approx(DEFAULT_MAX_SIDE / 4200)
    assert out[10, 10, 0] > 200 and out[10, -10, 2] > 200
    assert load_image(path, max_side=None).shape == (2800, 4200, 3)
    assert load_image(np.zeros((3000, 100, 3), np.uint8), max_side=1000).shape == (1000, 33, 3)


@pytest.mark.parametrize("magic,name", [(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "HEIC"),
                                        (b"%PDF-1.4\n%\xe2\xe3", "PDF"),
                                        (b"<svg xmlns='http://www.w3.org/2000/svg'>", "SVG")])
def test_unsupported_formats_are_named(magic, name):
    with pytest.raises(BadImageError, match=f"{name}.*Convert it to JPEG or PNG"):
        load_image(magic + b"\0" * 100)


def test_eps_is_never_handed_to_ghostscript(tmp_path):
    path = _save(Image.new("RGB", (64, 64)), tmp_path / "a.eps", format="EPS")
    with pytest.raises(BadImageError, match="PostScript"):
        load_image(path)


def test_paths_that_are_not_images(tmp_path):
    with pytest.raises(BadImageError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(BadImageError, match="not a file"):
        load_image(tmp_path)
    with pytest.raises(BadImageError, match="URL"):
        load_image("https://example.com/face.jpg")
    with pytest.raises(BadImageError, match="text mode"):
        load_image(io.StringIO("abc"))
    with pytest.raises(BadImageError, match="cannot load an image from a int"):
        load_image(42)


@pytest.mark.parametrize("array,match", [(np.zeros((40, 40, 2), np.uint8), "expected"),
                                         (np.full((40, 40, 3), np.nan), "NaN"),
                                         (np.zeros((40, 40, 3), np.complex64), "dtype")])
def test_bad_arrays(array, match):
    with pytest.raises(BadImageError, match=match):
        load_image(array)


# ------------------------------------------------------------------ odd but valid encodings

def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    out = load_image(_save(Image.fromarray(gray, "L"), tmp_path / "g.png"))
    assert out.shape == (48, 64, 3)
    np.testing.assert_array_equal(out[..., 0], gray)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    np.testing.assert_array_equal(load_image(gray), out)
    assert load_image(_save(Image.fromarray(gray).convert("1"), tmp_path / "b.png")).shape == (48, 64, 3)


def test_16_bit_is_scaled_not_clipped(tmp_path):
    values = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (48, 1))
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    out, info = load_image_with_info(_save(img, tmp_path / "deep.png"))
    assert info.mode.startswith("I")
    np.testing.assert_allclose(out[0, :, 0], values[0] / 257, atol=1)
    np.testing.assert_allclose(load_image(values)[0, :, 1], values[0] / 257, atol=1)


def test_32_bit_int_and_float_images(tmp_path):
    ints = np.tile(np.arange(64, dtype=np.int32) * 1000, (48, 1))  # 0..63000: stretched
    out = load_image(_save(Image.fromarray(ints, "I"), tmp_path / "i.tif"))
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 255
    floats = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (48, 1))  # 0..1: times 255
    out = load_image(_save(Image.fromarray(floats, "F"), tmp_path / "f.tif"))
    np.testing.assert_allclose(out[0, :, 0], floats[0] * 255, atol=1)
    np.testing.assert_allclose(load_image(floats)[0, :, 0], floats[0] * 255, atol=1)


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (64, 48), (0, 255, 255, 0))  # pure red in CMYK
    out, info = load_image_with_info(_save(cmyk, tmp_path / "c.jpg", quality=95))
    assert info.mode == "CMYK"
    r, g, b = out[24, 32].astype(int)
    assert r > 230 and g < 30 and b < 30


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[:, :32] = (255, 0, 0, 255)  # opaque red
    rgba[:, 32:] = (0, 0, 0, 0)  # fully transparent black -> white
    rgba[:10, 32:] = (0, 0, 255, 128)  # half-transparent blue over white
    out = load_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "t.png"))
    assert tuple(out[20, 10]) == RED
    assert tuple(out[20, 50]) == (255, 255, 255)
    np.testing.assert_allclose(out[5, 50], (127, 127, 255), atol=2)
    np.testing.assert_array_equal(load_image(rgba), out)
    la = Image.fromarray(rgba, "RGBA").convert("LA")
    assert tuple(load_image(_save(la, tmp_path / "la.png"))[20, 50]) == (255, 255, 255)


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (64, 48), 0)
    img.putpalette([0, 255, 0] + [0, 0, 0] * 255)
    img.paste(1, (0, 0, 32, 48))  # colour 1 (black) is the transparent one
    out = load_image(_save(img, tmp_path / "p.gif", transparency=1))
    assert tuple(out[10, 10]) == (255, 255, 255)
    assert tuple(out[10, 50]) == GREEN
    opaque = load_image(_save(img, tmp_path / "p.png"))  # no transparency: palette colours
    assert tuple(opaque[10, 10]) == (0, 0, 0)


@pytest.mark.parametrize("ext", ["gif", "png", "webp"])
def test_animated_image_gives_the_first_frame(tmp_path, ext):
    frames = [Image.new("RGB", (64, 48), c) for c in (RED, GREEN, BLUE)]
    path = tmp_path / f"anim.{ext}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    out, info = load_image_with_info(path)
    assert info.frames == 3
    np.testing.assert_allclose(out[24, 32], RED, atol=3)


@pytest.mark.parametrize("orientation,top_colour,size", [(1, None, (64, 48)), (3, None, (64, 48)),
                                                         (6, RED, (48, 64)), (8, BLUE, (48, 64))])
def test_exif_orientation_is_applied(tmp_path, orientation, top_colour, size):
    img = _two_colour()  # stored: red left, blue right
    exif = Image.Exif()
    exif[0x0112] = orientation
    out, info = load_image_with_info(_save(img, tmp_path / "o.png", exif=exif))
    assert info.size == size and info.out_size == size and info.exif_orientation == orientation
    assert out.shape == (size[1], size[0], 3)
    if orientation == 1:
        assert tuple(out[24, 5]) == RED
    if orientation == 3:  # rotated 180: red is now on the right
        assert tuple(out[24, 5]) == BLUE
    if top_colour is not None:  # 6: rotate 90 clockwise to view, left -> top; 8: the other way
        assert tuple(out[5, 24]) == top_colour


def test_exif_size_is_reported_before_downscaling(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(_two_colour(3000, 1000), tmp_path / "tall.jpg", exif=exif)
    out, info = load_image_with_info(path, max_side=1500)
    assert info.size == (1000, 3000)
    assert out.shape == (1500, 500, 3)


def test_16_bit_holding_8_bit_values_is_read_as_8_bit(tmp_path):
    values = np.tile(np.arange(64, dtype=np.uint16) * 4, (48, 1))  # 0..252: 8-bit values in a 16-bit file
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    out = load_image(_save(img, tmp_path / "gray16_8.png"))
    np.testing.assert_array_equal(out[0, :, 0], values[0])
    np.testing.assert_array_equal(load_image(values)[0, :, 2], values[0])


def test_48_bit_png_is_read_at_full_depth(tmp_path):
    from tests.hostile_images import png_rgb16

    rgb = np.zeros((48, 64, 3), np.uint16)
    rgb[..., 0] = np.arange(64) * 4  # 8-bit values: must not come out black
    rgb[..., 2] = 200
    (tmp_path / "rgb48_8.png").write_bytes(png_rgb16(rgb))
    out = load_image(tmp_path / "rgb48_8.png")
    np.testing.assert_array_equal(out[0, :, 0], rgb[0, :, 0])
    assert (out[..., 2] == 200).all() and (out[..., 1] == 0).all()
    full = rgb * 257
    full[..., 0] = np.arange(64) * 1000
    (tmp_path / "rgb48.png").write_bytes(png_rgb16(full))
    np.testing.assert_allclose(load_image(tmp_path / "rgb48.png")[0, :, 0], np.arange(64) * 1000 / 257, atol=1)


def test_empty_upload_message_says_upload_again_not_seek():
    with pytest.raises(BadImageError, match=r"empty \(0 bytes\).*Upload or save the file again") as error:
        load_image(io.BytesIO(b""))
    assert "seek" not in str(error.value)
