"""FFHQ-style aligned crops (kpcore/live/align.py): the recipe's geometry on a labelled 300-W face,
and ``kpcore align`` end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kpcore.cli import main as cli_main
from kpcore.live.align import align_face, ffhq_quad
from kpcore.live.batch import read_table

from .conftest import REPO, needs_300w

SIZE = 256
EYE_TOLERANCE_PX = 0.1
"""Eye centres land within this many crop pixels (measured: at most 0.01 px on this face) of the recipe's positions."""
BLOB_SIGMA = 3.0
CENTROID_RADIUS = 12
"""Crop pixels around the expected position where a blob's centroid is measured (the blob: ~2 px sigma)."""


def recipe_position(point: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
    """Where the recipe puts ``point`` in a ``size`` crop, from its geometry written out once more.

    The crop spans the square of half-side ``s = max(2 |e2e|, 1.8 |e2m|)`` centred on
    ``eye_avg + 0.1 e2m``, its x axis along ``e2e - rot90(e2m)`` and its y axis that turned
    by +90 degrees (image y down); the square's edges are the crop's edges.
    """
    eye_l, eye_r = points[36:42].mean(0), points[42:48].mean(0)
    e2e = eye_r - eye_l
    e2m = (points[48] + points[54]) / 2 - (eye_l + eye_r) / 2
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])  # (a, b) -> (-b, a)
    ax = e2e - rot @ e2m
    ax /= np.linalg.norm(ax)
    ay = rot @ ax
    half = max(2 * np.linalg.norm(e2e), 1.8 * np.linalg.norm(e2m))
    d = point - ((eye_l + eye_r) / 2 + 0.1 * e2m)
    return size * (0.5 + np.array([d @ ax, d @ ay]) / (2 * half)) - 0.5


@pytest.fixture(scope="module")
def frontal():
    """The most frontal face of 300-W's helen test set (head pose from its true points)."""
    from kpcore.data.datasets import load_300w
    from kpcore.data.imageio import load_image
    from kpcore.live.pose import estimate_pose

    samples = [s for s in load_300w("test") if s.image_id.startswith("helen/testset")]
    best, best_angle = None, np.inf
    for s in samples[:60]:
        size = Image.open(s.image_path).size
        pose = estimate_pose(s.points, size)
        angle = abs(pose["yaw"]) + abs(pose["pitch"]) if pose else np.inf
        if angle < best_angle:
            best, best_angle = s, angle
    assert best_angle < 10, best_angle
    return load_image(best.image_path, max_side=None), np.asarray(best.points, np.float64)


def _blobs(shape: tuple[int, int], centres: list[np.ndarray]) -> np.ndarray:
    """A black RGB image with a Gaussian blob on each centre (sub-pixel exact)."""
    y, x = np.mgrid[:shape[0], :shape[1]]
    g = sum(np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * BLOB_SIGMA ** 2)) for cx, cy in centres)
    return np.repeat(np.uint8(np.clip(np.rint(255 * g), 0, 255))[..., None], 3, axis=2)


def _centroid(gray: np.ndarray, near: np.ndarray, radius: int = CENTROID_RADIUS) -> np.ndarray:
    """The intensity centroid within ``radius`` pixels of ``near`` (a reflection in the padding lies further)."""
    y, x = np.mgrid[:gray.shape[0], :gray.shape[1]]
    w = gray.astype(np.float64) * ((x - near[0]) ** 2 + (y - near[1]) ** 2 <= radius ** 2)
    return np.array([(w * x).sum(), (w * y).sum()]) / w.sum()


@needs_300w
@pytest.mark.parametrize("case", ["as is", "4x larger photo (shrunk first)", "face at the edge (padded)"])
def test_eye_centres_land_at_the_recipes_positions(frontal, case: str) -> None:
    image, points = frontal
    if case.startswith("4x"):
        image = np.asarray(Image.fromarray(image).resize((image.shape[1] * 4, image.shape[0] * 4)))
        points = (points + 0.5) * 4 - 0.5
    elif case.startswith("face at"):
        eye_gap = points[42:48, 0].mean() - points[36:42, 0].mean()
        left = int(points[36:42, 0].mean() - 0.6 * eye_gap)  # the square (2 gaps each side) runs over the edge
        image, points = image[:, left:], points - [left, 0]
        assert ffhq_quad(points)[:, 0].min() < -0.5 * eye_gap
    eyes = [points[36:42].mean(0), points[42:48].mean(0)]
    crop, matrix = align_face(_blobs(image.shape[:2], eyes), points, SIZE)
    assert crop.shape == (SIZE, SIZE, 3) and crop.dtype == np.uint8
    for eye in eyes:
        expected = recipe_position(eye, points, SIZE)
        found = _centroid(crop[..., 0], expected)
        assert np.abs(found - expected).max() < EYE_TOLERANCE_PX, (case, found, expected)
        np.testing.assert_allclose(matrix[:, :2] @ eye + matrix[:, 2], expected, atol=1e-9)


@needs_300w
def test_a_level_face_puts_the_eyes_an_eighth_of_the_crop_from_its_centre(frontal) -> None:
    """The recipe's canonical layout, for eyes level and the mouth straight below: eyes at x = 3/8 and
    5/8 of the side (when the eye distance sets the scale) and at y = 1/2 - 0.05 |e2m| / s."""
    _, points = frontal
    eye_l, eye_r = points[36:42].mean(0), points[42:48].mean(0)
    level = np.array([[0.0, 0.0], [100.0, 0.0]])
    # the labelled face turned and scaled so its eyes are level 100 px apart, the mouth straight below
    src = np.stack([eye_l, eye_r])
    a, b = (src[1] - src[0]) / np.linalg.norm(src[1] - src[0]), level[1] - level[0]
    rot = np.array([[a[0], a[1]], [-a[1], a[0]]]) * (np.linalg.norm(b) / np.linalg.norm(src[1] - src[0]))
    pts = (points - eye_l) @ rot.T + [300, 300]
    mouth = (pts[48] + pts[54]) / 2
    pts[48:68, 0] += (pts[36:48, 0].mean() - mouth[0])  # mouth centred under the eyes
    quad = ffhq_quad(pts)
    e2m = np.linalg.norm((pts[48] + pts[54]) / 2 - pts[36:48].mean(0))
    half = max(200.0, 1.8 * e2m)
    assert half == 200.0, "this face's scale is set by its eyes"
    for eye, u in ((pts[36:42].mean(0), 3 / 8), (pts[42:48].mean(0), 5 / 8)):
        rel = (eye - quad[0]) / np.linalg.norm(quad[3] - quad[0])
        np.testing.assert_allclose(rel, [u, 0.5 - 0.05 * e2m / half], atol=1e-9)


def test_align_refuses_points_that_are_not_68() -> None:
    with pytest.raises(ValueError, match="68 points"):
        ffhq_quad(np.zeros((5, 2)))


def test_kpcore_align_writes_crops_and_an_index_and_counts_what_it_skipped(tmp_path: Path, capsys) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut.jpg", "cameraman.jpg"):
        shutil.copy(REPO / "webapp" / "examples" / name, photos / name)
    (photos / "notes.png").write_text("not a photo")
    out = tmp_path / "aligned"
    assert cli_main(["align", str(photos), "--out", str(out), "--size", "128", "--min-confidence", "0.5"]) == 0
    text = capsys.readouterr().out
    index = read_table(out / "index.parquet").to_pandas()
    assert len(index) >= 1 and text.startswith(f"{len(index)} aligned 128x128 crops from 3 inputs")
    assert "1 unreadable" in text
    assert (index["confidence"] >= 0.5).all()
    for name in index["file"]:
        assert Image.open(out / name).size == (128, 128)
    skipped = int(text.split("skipped: ")[1].split(" faces")[0])
    faces = read_table_faces(photos)
    assert skipped == sum(c < 0.5 for c in faces) and len(index) == sum(c >= 0.5 for c in faces)


def read_table_faces(photos: Path) -> list[float]:
    """The confidences of every face the batch engine finds in ``photos``."""
    from kpcore.live.batch import load_predictor, predict_sources

    table = predict_sources(load_predictor("face68-300w", None), sorted(str(p) for p in photos.iterdir()))
    return [c for c, s in zip(table.column("confidence").to_pylist(), table.column("status").to_pylist(),
                              strict=True) if s == "ok"]


def test_a_crop_that_cannot_be_written_stops_align_with_the_error(tmp_path: Path, monkeypatch) -> None:
    """Crops are saved on a thread pool: a failed save (a full disk) must still end the run, not vanish."""
    import kpcore.live.align as align

    def full_disk(crop, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(align, "_save_png", full_disk)
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(REPO / "webapp" / "examples" / "astronaut.jpg", photos / "astronaut.jpg")
    with pytest.raises(OSError, match="No space left"):
        align.align_inputs([photos], tmp_path / "aligned", size=64, min_confidence=0.0)
    assert not (tmp_path / "aligned" / "index.parquet").exists()  # no index naming crops that are not there
