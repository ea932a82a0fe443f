"""Face morphing (kpcore.live.morph) on tiny synthetic images, and the demo's "Face morph" tab with a stub detector."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from kpcore.errors import NoFaceFoundError
from kpcore.live import morph as M

W, H = 96, 72  # non-square on purpose: catches (x, y) / (rows, cols) mix-ups


def smooth_image(seed: int, size: tuple[int, int] = (W, H)) -> np.ndarray:
    """Random but smooth RGB image (bilinear sampling of it is close to exact)."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def grid_points(seed: int, jitter: float = 4.0) -> np.ndarray:
    """A jittered 4x3 grid inside the frame; jitter well below the spacing, so no triangle folds."""
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.linspace(20, W - 21, 4), np.linspace(16, H - 17, 3))
    return np.stack([xs.ravel(), ys.ravel()], axis=1) + rng.uniform(-jitter, jitter, (12, 2))


def draw_blobs(points: np.ndarray, size: tuple[int, int] = (W, H), sigma: float = 1.2) -> np.ndarray:
    """Dark image with a bright Gaussian blob centred on each point (sub-pixel)."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    value = np.zeros((h, w))
    for x, y in points:
        value += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    gray = np.round(np.clip(value, 0, 1) * 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def blob_centre(image: np.ndarray, near: np.ndarray, radius: int = 5) -> np.ndarray:
    """Intensity-weighted centroid of the blob within ``radius`` px of ``near``."""
    x0, y0 = np.round(near).astype(int)
    patch = image[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1, 0].astype(np.float64)
    ys, xs = np.mgrid[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1]
    return np.array([(xs * patch).sum(), (ys * patch).sum()]) / patch.sum()


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


# ------------------------------------------------------------------ geometry
def test_morph_points_is_linear() -> None:
    a, b = grid_points(1), grid_points(2)
    np.testing.assert_allclose(M.morph_points(a, b, 0.0), a)
    np.testing.assert_allclose(M.morph_points(a, b, 1.0), b)
    np.testing.assert_allclose(M.morph_points(a, b, 0.5), (a + b) / 2)
    np.testing.assert_allclose(M.morph_points(a, b, 0.25), 0.75 * a + 0.25 * b)
    with pytest.raises(ValueError, match="points_b has 3 points but the other shape has 12"):
        M.morph_points(a, b[:3], 0.5)
    with pytest.raises(ValueError, match=r"t must be in \[0, 1\]"):
        M.morph_points(a, b, 1.5)


def test_boundary_points_sit_on_the_frame_edges() -> None:
    full = M.add_boundary_points(np.array([[-10.0, 5.0], [40.0, 200.0]]), (W, H))
    assert full.shape == (2 + 8, 2)
    np.testing.assert_allclose(full[:2], [[-0.5, 5.0], [40.0, H - 0.5]])  # clipped onto the frame
    corners = full[2:]
    assert corners[:, 0].min() == -0.5 and corners[:, 0].max() == W - 0.5
    assert corners[:, 1].min() == -0.5 and corners[:, 1].max() == H - 0.5


def test_triangulation_covers_the_whole_frame() -> None:
    full = M.add_boundary_points((grid_points(3) + grid_points(4)) / 2, (W, H))
    triangles = M.triangulate(full)
    assert triangles.dtype.kind == "i" and triangles.shape[1] == 3
    assert M.triangle_areas(full, triangles).sum() == pytest.approx(W * H)
    labels = M._label_map(full, triangles, (W, H))  # every pixel centre lies in a triangle
    assert labels.min() >= 0


def test_match_size_maps_points_with_the_image() -> None:
    big = draw_blobs(np.array([[50.3, 20.7]]), size=(200, 150))
    image, points = M.match_size(big, np.array([[50.3, 20.7]]), (W, H))
    assert image.shape == (H, W, 3)
    np.testing.assert_allclose(blob_centre(image, points[0], radius=3), points[0], atol=0.3)
    # frame edges map to frame edges: x' + 0.5 = (x + 0.5) * W / 200
    _, edges = M.match_size(big, np.array([[-0.5, -0.5], [199.5, 149.5]]), (W, H))
    np.testing.assert_allclose(edges, [[-0.5, -0.5], [W - 0.5, H - 0.5]])


def test_warp_to_same_shape_is_the_identity() -> None:
    image = smooth_image(5)
    full = M.add_boundary_points(grid_points(6), (W, H))
    out = M.warp_to_shape(image, full, full, M.triangulate(full))
    assert max_diff(out, image) <= 1


# -------------------------------------------------------------------- morphs
def test_morph_ends_are_the_two_images_and_frames_keep_size_and_dtype() -> None:
    a, b = smooth_image(7), smooth_image(8)
    pa, pb = grid_points(9), grid_points(10)
    assert max_diff(M.morph(a, pa, b, pb, 0.0), a) <= 1
    assert max_diff(M.morph(a, pa, b, pb, 1.0), b) <= 1
    frames = M.morph_sequence(a, pa, b, pb, 5)
    assert len(frames) == 5 and all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in frames)
    assert max_diff(frames[0], a) <= 1 and max_diff(frames[-1], b) <= 1
    # warp and dissolve apart: the shape of B in the colours of A
    only_shape = M.morph(a, pa, b, pb, 0.5, warp_frac=1.0, dissolve_frac=0.0)
    assert only_shape.shape == a.shape
    with pytest.raises(ValueError, match="n_frames must be an integer >= 2"):
        M.morph_sequence(a, pa, b, pb, 1)


def test_morph_resizes_b_to_a() -> None:
    a, pa, pb = smooth_image(11), grid_points(12), grid_points(13)
    b = cv2.resize(smooth_image(14), (2 * W, 2 * H))
    frame = M.morph(a, pa, b, (pb + 0.5) * 2 - 0.5, 0.5)  # B's points in B's doubled pixels
    assert frame.shape == a.shape and frame.dtype == np.uint8
    with pytest.raises(ValueError, match=r"RGB uint8 array of shape \(H, W, 3\)"):
        M.morph(a[..., 0], pa, b, pb, 0.5)


@pytest.mark.parametrize("t", [0.5, 0.3])
def test_blobs_at_keypoints_land_on_the_in_between_points(t: float) -> None:
    pa, pb = grid_points(15, jitter=6), grid_points(16, jitter=6)
    ids = [0, 5, 11]  # a corner, a middle and the opposite corner of the grid
    a, b = draw_blobs(pa[ids]), draw_blobs(pb[ids])
    frame = M.morph(a, pa, b, pb, t)
    target = M.morph_points(pa, pb, t)
    for i in ids:
        assert np.linalg.norm(blob_centre(frame, target[i]) - target[i]) < 1.0


def test_mean_face_of_identical_images_is_the_image() -> None:
    image, points = smooth_image(17), grid_points(18)
    mean, mean_points = M.mean_face([image, image, image], [points, points, points])
    assert max_diff(mean, image) <= 1
    np.testing.assert_allclose(mean_points, points)


def test_mean_face_puts_blobs_at_the_mean_shape() -> None:
    shapes = [grid_points(s, jitter=6) for s in (19, 20, 21)]
    images = [draw_blobs(p[[5]]) for p in shapes]
    mean, mean_points = M.mean_face(images, shapes)
    np.testing.assert_allclose(mean_points, np.mean(shapes, axis=0))
    assert np.linalg.norm(blob_centre(mean, mean_points[5]) - mean_points[5]) < 1.0


# --------------------------------------------------------------------- files
def test_gif_has_every_frame(tmp_path: Path) -> None:
    import imageio.v3 as iio

    frames = [smooth_image(s) for s in range(4)]
    path = M.save_gif(M.boomerang(frames), tmp_path / "m.gif", fps=10)
    read = iio.imread(path, index=None)
    assert read.shape == (6, H, W, 3)  # A B C D C B
    with pytest.raises(ValueError, match="all frames must have one size"):
        M.save_gif([frames[0], frames[0][:10]], tmp_path / "bad.gif")


def test_mp4_has_every_frame(tmp_path: Path) -> None:
    frames = [smooth_image(s, size=(64, 48)) for s in range(5)]
    try:
        path = M.save_mp4(frames, tmp_path / "m.mp4", fps=10)
    except RuntimeError as e:
        pytest.skip(str(e))
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert count == 5


def test_mp4_is_h264_that_browsers_play(tmp_path: Path) -> None:
    if M.mp4_codec() != "h264":
        pytest.skip("no FFmpeg with libx264 here (pip install imageio-ffmpeg)")
    frames = [smooth_image(s, size=(65, 47)) for s in range(4)]  # odd sides: padded to even for yuv420p
    data = M.save_mp4(frames, tmp_path / "m.mp4", fps=10).read_bytes()
    assert b"avc1" in data  # the H.264 sample entry
    assert data.index(b"moov") < data.index(b"mdat")  # faststart: playable while it downloads


def test_gif_is_shrunk_and_light(tmp_path: Path) -> None:
    from PIL import Image

    frames = [smooth_image(s, size=(512, 512)) for s in range(6)]
    path = M.save_gif(frames, tmp_path / "m.gif", fps=10)
    assert max(Image.open(path).size) == M.GIF_MAX_SIDE
    dithered = M.save_gif(frames, tmp_path / "d.gif", fps=10, max_side=None, dither=True)
    assert path.stat().st_size < dithered.stat().st_size / 2


# -------------------------------------------------------------------- photos
def face_ring(cx: float, cy: float, r: float, k: int = 68) -> np.ndarray:
    """A stand-in for 68 face points: two concentric rings (not all cocircular)."""
    outer = np.linspace(0, 2 * np.pi, k - 20, endpoint=False)
    inner = np.linspace(0, 2 * np.pi, 20, endpoint=False) + 0.1
    return np.concatenate([np.stack([cx + r * np.cos(outer), cy + r * np.sin(outer)], 1),
                           np.stack([cx + 0.5 * r * np.cos(inner), cy + 0.4 * r * np.sin(inner)], 1)])


@dataclass
class StubFace:
    """What kpcore.live.predict.FacePrediction offers the morpher (without importing torch)."""

    box: tuple[float, float, float, float]
    points: np.ndarray


class StubPredictor:
    """Two faces per photo, one small and one large, at fixed fractions of the photo."""

    def __init__(self, faces: bool = True) -> None:
        self.faces = faces

    def predict(self, image: np.ndarray) -> list:
        if not self.faces:
            return []
        h, w = image.shape[:2]
        small = face_ring(0.2 * w, 0.2 * h, 0.08 * min(w, h))
        large = face_ring(0.6 * w, 0.55 * h, 0.25 * min(w, h))
        side = min(w, h)
        return [StubFace((0.12 * w, 0.12 * h, 0.16 * side, 0.16 * side), small),
                StubFace((0.35 * w, 0.3 * h, 0.5 * side, 0.5 * side), large)]


def test_align_face_keeps_points_exact_even_past_the_border() -> None:
    points = np.array([[30.4, 20.6], [180.2, 110.3], [100.0, 60.0]])  # near the top-left corner
    photo = draw_blobs(points, size=(240, 160), sigma=2.0)
    face = M.align_face(photo, points, size=128)
    assert face.image.shape == (128, 128, 3) and face.image.dtype == np.uint8
    left, top, width, height = face.crop_box
    assert width == height and left < 0 and top < 0  # the crop reaches past the photo
    for p in face.points:
        np.testing.assert_allclose(blob_centre(face.image, p, radius=3), p, atol=0.3)


def test_face_morpher_uses_the_largest_face() -> None:
    morpher = M.FaceMorpher(StubPredictor(), size=128)
    face = morpher.align(smooth_image(22, size=(200, 160)))
    # the large ring has radius 0.25 * 160 = 40 px: crop side 1.6 * (80 + 1) px; the small one's would be 42 px
    assert face.crop_box[2] == pytest.approx(M.DEFAULT_FRAMING * 81, abs=0.1)
    frames = morpher.sequence(smooth_image(22, size=(200, 160)), smooth_image(23, size=(150, 150)), 3)
    assert [f.shape for f in frames] == [(128, 128, 3)] * 3
    with pytest.raises(NoFaceFoundError, match="no face found"):
        M.FaceMorpher(StubPredictor(faces=False)).align(smooth_image(24))


# ------------------------------------------------------------- the demo tab
@pytest.fixture
def morph_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """webapp.live with a stand-in `face68-300w` folder and a stub detector, no model."""
    from webapp import live

    monkeypatch.setattr("webapp.checkpoints.CHECKPOINTS_DIR", tmp_path / "repo")  # no real checkpoints
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # the photos below count as uploads
    monkeypatch.setenv(live.CHECKPOINTS_ENV, str(tmp_path / "checkpoints"))
    stub = StubPredictor()
    monkeypatch.setattr(live, "predict_faces", lambda folder, image: stub.predict(image))
    return live, tmp_path / "checkpoints" / live.MORPH_MODEL


def test_morph_tab_says_when_the_model_is_missing(morph_demo) -> None:
    import gradio as gr

    live, _ = morph_demo
    assert "not available yet" in live.morph_availability()
    with pytest.raises(gr.Error, match="needs the checkpoint `face68-300w`"):
        live.run_morph(smooth_image(25), smooth_image(26))


def test_morph_tab_makes_midway_gif_and_mean_face(morph_demo, tmp_path: Path) -> None:
    import gradio as gr
    import imageio.v3 as iio

    live, folder = morph_demo
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"layout": "ibug300w"}))
    assert live.morph_availability() == ""

    midway, shown, gif, mp4, summary = live.run_morph(smooth_image(27), smooth_image(28, (120, 90)), 3)
    assert midway.shape == (M.DEFAULT_SIZE, M.DEFAULT_SIZE, 3) and midway.dtype == np.uint8
    assert shown == gif and iio.imread(gif, index=None).shape[0] == 4  # A, mid, B, mid (loop back)
    assert mp4 is None or Path(mp4).is_file()
    assert "3 frames of 512x512" in summary

    with pytest.raises(gr.Error, match="Upload two photos"):
        live.run_morph(smooth_image(27), None)
    with pytest.raises(gr.Error, match="Photo B: .*at least 32x32"):  # kpcore's BadImageError
        live.run_morph(smooth_image(27), np.zeros((8, 8, 3), np.uint8))

    paths = []
    for seed in (29, 30):
        paths.append(str(tmp_path / f"{seed}.png"))
        iio.imwrite(paths[-1], smooth_image(seed))
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    mean, text = live.run_mean_face([*paths, str(bad)])
    assert mean.shape == (M.DEFAULT_SIZE, M.DEFAULT_SIZE, 3)
    assert "Mean of 2 faces" in text and "notes.png" in text
    with pytest.raises(gr.Error, match="at least 2 photos"):
        live.run_mean_face(paths[:1])


def test_build_demo_keeps_predict_and_adds_the_morph_apis() -> None:
    from webapp import live

    config = live.build_demo().get_config_file()
    names = [d.get("api_name") for d in config["dependencies"]]
    assert names.count("predict") == 1 and "morph" in names and "mean_face" in names
    labels = {c.get("props", {}).get("label") for c in config["components"] if c.get("type") == "tabitem"}
    assert {"Keypoints", "Face morph"} <= labels
