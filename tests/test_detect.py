"""Face detector: exact box mapping, NMS, input checks, and detection on real faces.

Tests marked ``data`` read helen/testset under ``$KPCORE_DATA`` (default
``../shared/data`` next to the repository) and are skipped when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kpcore.errors import BadImageError, NoFaceFoundError
from kpcore.live.detect import (
    BLAZEFACE_LANDMARK_NAMES,
    LANDMARK_NAMES,
    BlazeFaceDetector,
    CascadeDetector,
    Face,
    FaceDetector,
    get_detector,
    letterbox,
    map_box,
    nms,
    ssd_anchors,
    weighted_nms,
)

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("KPCORE_DATA") or REPO.parent / "shared" / "data")
HELEN_TEST = DATA_ROOT / "ibug_300W_subset" / "helen" / "testset"
SAMPLE_IMAGES = ["296814969_3.jpg", "2968560214_1.jpg", "3006823882_1.jpg", "3166944042_1.jpg"]
BOX_GROWTH = 1.3  # RetinaFace boxes stop above the chin; grown 1.3x they hold every point


def _read_pts(path: Path) -> np.ndarray:
    """68 points of a 300-W .pts file, converted from 1-based to 0-based pixels."""
    body = path.read_text().split("{")[1].split("}")[0]
    return np.array(body.split(), dtype=np.float64).reshape(-1, 2) - 1.0


def _sample(name: str) -> tuple[np.ndarray, np.ndarray]:
    if not HELEN_TEST.is_dir():
        pytest.skip(f"300-W data not found at {HELEN_TEST}; set KPCORE_DATA to the shared data folder")
    path = HELEN_TEST / name
    return np.asarray(Image.open(path).convert("RGB")), _read_pts(path.with_suffix(".pts"))


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(threads=2)


class _FakeSession:
    """Stands in for onnxruntime and returns fixed rows; records the input shape."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows.astype(np.float32)
        self.input_shape: tuple[int, ...] | None = None

    def run(self, outputs, feeds):
        (x,) = feeds.values()
        self.input_shape = x.shape
        return [self.rows]


def _row(x1, y1, x2, y2, score=0.9, landmark=(0.5, 0.5)) -> list[float]:
    return [x1, y1, x2, y2, *landmark * 5, 1.0, score]


# ------------------------------------------------------------------ no model needed

@pytest.mark.parametrize("width,height,max_side", [(1280, 960, 640), (1300, 900, 640), (333, 250, None),
                                                   (2000, 100, 640)])
def test_boxes_map_back_exactly(width, height, max_side):
    det = FaceDetector(max_side=max_side, coarse_side=None)  # one pass at max_side (the two-pass path: below)
    fake = det._session = _FakeSession(np.array([_row(0.25, 0.25, 0.5, 0.5, landmark=(0.125, 0.25))]))
    (face,) = det.detect(np.zeros((height, width, 3), np.uint8))
    _, ph, pw, _ = fake.input_shape
    assert ph % 32 == 0 and pw % 32 == 0
    small_w = width if max_side is None else round(width * max_side / max(width, height))
    small_h = height if max_side is None else round(height * max_side / max(width, height))
    assert pw == -(-small_w // 32) * 32 and ph == -(-small_h // 32) * 32
    sx, sy = pw * width / small_w, ph * height / small_h  # fraction of padded input -> original edges
    expected = (0.25 * sx, 0.25 * sy, min(0.5 * sx, width) - 0.25 * sx, min(0.5 * sy, height) - 0.25 * sy)
    np.testing.assert_allclose(face.box, expected, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(face.landmarks[0], [0.125 * sx - 0.5, 0.25 * sy - 0.5], atol=1e-3)


def test_boxes_are_clipped_and_padding_only_boxes_dropped():
    det = FaceDetector(max_side=None)
    det._session = _FakeSession(np.array([_row(-0.1, -0.1, 0.5, 0.5, 0.95), _row(0.9, 0.9, 1.0, 1.0, 0.9)]))
    faces = det.detect(np.zeros((40, 40, 3), np.uint8))  # padded to 64x64: the 2nd box is in padding
    assert len(faces) == 1
    assert faces[0].box == pytest.approx((0.0, 0.0, 32.0, 32.0))


def test_score_threshold_and_nms():
    rows = np.array([_row(0.1, 0.1, 0.5, 0.5, 0.9), _row(0.11, 0.1, 0.51, 0.5, 0.8),  # same face
                     _row(0.6, 0.6, 0.9, 0.9, 0.7), _row(0.0, 0.6, 0.2, 0.9, 0.3)])
    det = FaceDetector(max_side=None)
    det._session = _FakeSession(rows)
    image = np.zeros((320, 320, 3), np.uint8)
    assert [round(f.score, 3) for f in det.detect(image)] == [0.9, 0.7]
    assert [round(f.score, 3) for f in det.detect(image, score_threshold=0.2)] == [0.9, 0.7, 0.3]
    assert det.detect(image, score_threshold=0.95) == []
    assert det.detect_one(image, pick="score").score == pytest.approx(0.9)


def test_nms_keeps_disjoint_and_drops_overlapping():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], dtype=np.float64)
    scores = np.array([0.5, 0.9, 0.7])
    assert nms(boxes, scores, 0.4).tolist() == [1, 2]
    assert nms(boxes, scores, 0.95).tolist() == [1, 2, 0]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.4).tolist() == []


@pytest.mark.parametrize("bad", [np.zeros((50, 50), np.uint8), np.zeros((50, 50, 4), np.uint8),
                                 np.zeros((50, 50, 3), np.float32), "photo.jpg"])
def test_bad_input_names_the_fix(bad):
    with pytest.raises(BadImageError, match="load_image"):
        FaceDetector().detect(bad)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="threads"):
        FaceDetector(threads=0)
    with pytest.raises(ValueError, match="score_threshold"):
        FaceDetector(score_threshold=1.5)
    with pytest.raises(ValueError, match="max_side"):
        FaceDetector(max_side=8)


def test_missing_model_folder_says_how_to_fix(tmp_path):
    from kpcore.errors import CheckpointError

    with pytest.raises(CheckpointError, match="convert_retinaface"):
        FaceDetector(model_dir=tmp_path)


# ------------------------------------------------------------------ real model

def test_blank_and_tiny_images_have_no_face(detector):
    assert detector.detect(np.full((480, 640, 3), 128, np.uint8)) == []
    assert detector.detect(np.full((7, 5, 3), 200, np.uint8)) == []
    with pytest.raises(NoFaceFoundError, match="no face found"):
        detector.detect_one(np.full((480, 640, 3), 128, np.uint8))


def test_get_detector_is_shared():
    assert get_detector() is get_detector()
    assert isinstance(get_detector(), CascadeDetector)
    assert isinstance(get_detector().slow, FaceDetector) and isinstance(get_detector().fast, BlazeFaceDetector)


def test_ssd_anchors_match_mediapipe_counts_and_order():
    short = ssd_anchors(128, [[8, 2], [16, 6]])
    assert short.shape == (896, 2)
    np.testing.assert_allclose(short[0], short[1])  # two anchors per cell, same centre
    np.testing.assert_allclose(short[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[2], [1.5 / 16, 0.5 / 16])  # x runs fastest
    np.testing.assert_allclose(short[512], [0.5 / 8, 0.5 / 8])  # the stride-16 map starts after 16*16*2
    assert ssd_anchors(192, [[4, 1]]).shape == (2304, 2)


@pytest.mark.parametrize("shape", [(480, 640), (640, 480), (37, 301), (128, 128)])
def test_letterbox_maps_square_edges_back_to_image_edges(shape):
    image = np.full((*shape, 3), 200, np.uint8)
    square, (left, top, sx, sy) = letterbox(image, 128)
    assert square.shape == (128, 128, 3)
    # the image's own pixels are where the mapping says, black around them
    inside = square.max(axis=2) > 0
    ys, xs = np.nonzero(inside)
    assert xs.min() == left and ys.min() == top
    assert (xs.max() + 1 - left) * sx == pytest.approx(shape[1]) and (ys.max() + 1 - top) * sy == pytest.approx(shape[0])


def test_weighted_nms_averages_overlapping_boxes_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.6, 0.8])
    points = np.zeros((3, 6, 2))
    out = weighted_nms(boxes, scores, points, 0.3)
    assert [round(score, 2) for _, score, _ in out] == [0.9, 0.8]
    np.testing.assert_allclose(out[0][0], (boxes[0] * 0.9 + boxes[1] * 0.6) / 1.5)
    np.testing.assert_allclose(out[1][0], boxes[2])


def test_map_box_moves_scales_and_clips():
    box_map = {"dx": 0.1, "dy": -0.2, "sw": 2.0, "sh": 0.5}
    # centre (120 + 4, 240 - 16), size (80, 40)
    assert map_box((100, 200, 40, 80), box_map, (1000, 1000)) == pytest.approx((84, 204, 80, 40))
    assert map_box((10, 20, 40, 80), box_map, (1000, 1000)) == pytest.approx((0, 24, 74, 40))  # clipped left


@pytest.mark.data
@pytest.mark.parametrize("name", SAMPLE_IMAGES)
def test_blazeface_finds_the_annotated_face_and_its_landmarks(name):
    image, points = _sample(name)
    faces = BlazeFaceDetector().detect(image)
    assert faces and all(f.detector == "blazeface" and f.landmark_names == BLAZEFACE_LANDMARK_NAMES
                         and f.landmarks.shape == (6, 2) for f in faces)
    face = faces[0]
    reference = np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48:68].mean(0)])
    inter_ocular = np.linalg.norm(points[36] - points[45])
    errors = np.linalg.norm(face.landmarks[:4] - reference, axis=1) / inter_ocular
    assert errors.max() < 0.25, errors


@pytest.mark.data
def test_cascade_keeps_a_large_sure_face_from_blazeface_in_retinaface_boxes():
    image, points = _sample(SAMPLE_IMAGES[0])
    cascade = CascadeDetector()
    fast = cascade.fast.detect(image)
    assert cascade.trusts(fast, image.shape)
    faces = cascade.detect(image)
    assert [f.detector for f in faces] == ["blazeface"] * len(fast)
    retina = FaceDetector().detect_one(image)
    # the mapped box lands on RetinaFace's own box for the same face (a few % of its size)
    np.testing.assert_allclose(faces[0].box, retina.box, atol=0.12 * retina.box[2])


def test_cascade_sends_small_or_no_faces_to_retinaface():
    examples = REPO / "webapp" / "examples"
    group = np.asarray(Image.open(examples / "group.jpg").convert("RGB"))
    cascade = CascadeDetector()
    assert not cascade.trusts(cascade.fast.detect(group), group.shape)
    faces = cascade.detect(group)
    assert len(faces) == 6 and {f.detector for f in faces} == {"retinaface"}
    assert cascade.detect(np.zeros((200, 300, 3), np.uint8)) == []


@pytest.mark.data
@pytest.mark.parametrize("name", SAMPLE_IMAGES)
def test_finds_the_annotated_face(detector, name):
    image, points = _sample(name)
    height, width = image.shape[:2]
    faces = detector.detect(image)
    assert faces and all(isinstance(f, Face) for f in faces)
    for f in faces:
        left, top, w, h = f.box
        assert 0 <= left and 0 <= top and left + w <= width and top + h <= height and w > 0 and h > 0
        assert 0.0 <= f.score <= 1.0 and f.landmarks.shape == (len(LANDMARK_NAMES), 2)
    centre = points.mean(axis=0)
    hits = [f for f in faces if f.box[0] <= centre[0] <= f.box[0] + f.box[2]
            and f.box[1] <= centre[1] <= f.box[1] + f.box[3]]
    assert hits, f"no detection holds the landmarks' centre {centre} in {name}"
    face = max(hits, key=lambda f: f.score)
    left, top, w, h = face.box
    cx, cy = left + w / 2, top + h / 2
    gw, gh = w * BOX_GROWTH, h * BOX_GROWTH
    inside = ((np.abs(points[:, 0] - cx) <= gw / 2) & (np.abs(points[:, 1] - cy) <= gh / 2))
    assert inside.all(), f"{(~inside).sum()} landmarks outside the box grown {BOX_GROWTH}x"
    # the 5 landmarks land on the right parts of the face, in LANDMARK_NAMES order
    reference = np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])
    inter_ocular = np.linalg.norm(points[36] - points[45])
    errors = np.linalg.norm(face.landmarks - reference, axis=1) / inter_ocular
    assert errors.max() < 0.2, errors


@pytest.mark.data
def test_big_image_is_downscaled_and_boxes_map_back(detector):
    image, _ = _sample(SAMPLE_IMAGES[0])
    height, width = image.shape[:2]
    big = np.asarray(Image.fromarray(image).resize((3 * width, 3 * height), Image.Resampling.BICUBIC))
    assert max(big.shape) > detector.max_side
    small_face = detector.detect_one(image)
    big_face = detector.detect_one(big)
    tolerance = 0.06 * 3 * small_face.box[2]  # the detector sees a different scale: a few % apart
    np.testing.assert_allclose(big_face.box, np.array(small_face.box) * 3, atol=tolerance)
    np.testing.assert_allclose(big_face.landmarks, (small_face.landmarks + 0.5) * 3 - 0.5, atol=tolerance)


@pytest.mark.data
def test_thread_count_does_not_change_results():
    image, _ = _sample(SAMPLE_IMAGES[1])
    one = FaceDetector(threads=1).detect(image)
    two = FaceDetector(threads=2).detect(image)
    assert len(one) == len(two)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(a.box, b.box, atol=1e-3)


@pytest.mark.data
def test_sideways_photo_with_exif_orientation_is_found_upright(detector, tmp_path):
    from kpcore.data.imageio import load_image_with_info

    image, points = _sample(SAMPLE_IMAGES[2])
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view": store the pixels turned the other way
    path = tmp_path / "sideways.jpg"
    Image.fromarray(image).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    upright, info = load_image_with_info(path)
    assert info.size == (image.shape[1], image.shape[0]) and upright.shape == image.shape
    face = detector.detect_one(upright)
    centre = points.mean(axis=0)
    assert face.box[0] <= centre[0] <= face.box[0] + face.box[2]
    assert face.box[1] <= centre[1] <= face.box[1] + face.box[3]
    assert face.landmarks[0, 0] < face.landmarks[1, 0]  # subject's right eye on the image left
