"""Detector boxes mapped onto the crops a model was trained on."""

import numpy as np
import pytest

from kpcore.data import load_split
from kpcore.data.loader import InputSpec
from kpcore.live import calibrate as C

from .conftest import needs_300w


def test_iou_by_hand():
    assert C.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert C.iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert C.iou((0, 0, 1, 1), (5, 5, 1, 1)) == 0.0


def test_map_and_region_round_trip():
    spec = InputSpec(128, 128, enlarge=1.3)
    box_map = {"dx": 0.1, "dy": -0.05, "sw": 1.4, "sh": 1.2}
    region = C.box_to_region((100, 50, 80, 100), box_map)
    assert region[2:] == pytest.approx((112, 120))
    assert region[0] + region[2] / 2 == pytest.approx(140 + 8)
    # the face box whose training crop is that region gives the region back (square input)
    square = C.box_to_region((100, 50, 100, 100), {"dx": 0, "dy": 0, "sw": 1.3, "sh": 1.3})
    face = C.region_to_face_box(square, spec)
    np.testing.assert_allclose(spec.crop_box(face, (640, 480)), square)


@needs_300w
def test_fitted_map_puts_detector_crops_on_the_training_crops(data_root):
    spec = InputSpec(128, 128, enlarge=1.3)
    train = load_split("ibug300w", "train", data_root)[:24]
    box_map = C.fit_box_map(train, spec, progress=False)
    assert box_map["n"] >= 20 and 0.8 < box_map["sw"] < 2.5 and 0.8 < box_map["sh"] < 2.5
    test = load_split("ibug300w", "test", data_root)[:16]
    mapped, missed = C.with_detector_boxes(test, spec, box_map, progress=False)
    assert missed == 0
    overlaps = [C.iou(spec.crop_box(m.box, m.image_size), spec.crop_box(s.box, s.image_size))
                for m, s in zip(mapped, test, strict=True)]
    assert np.median(overlaps) > 0.75, overlaps


@needs_300w
def test_fast_box_map_puts_blazeface_boxes_on_retinaface_boxes(data_root):
    from kpcore.data.inputs import decode_rgb
    from kpcore.live.detect import BlazeFaceDetector, FaceDetector, map_box

    train = load_split("ibug300w", "train", data_root)[:16]
    fast, slow = BlazeFaceDetector(), FaceDetector(threads=1)
    box_map = C.fit_fast_box_map(train, fast, slow, progress=False)
    assert box_map["n"] >= 14
    # BlazeFace's boxes are about square and sit higher (brows to chin): the map stretches them down
    assert 1.0 < box_map["sh"] < 1.6 and 0.7 < box_map["sw"] < 1.2
    test = load_split("ibug300w", "test", data_root)[:8]
    overlaps = []
    for s in test:
        image = decode_rgb(s.image_path)
        a, b = C.match_detection(fast, image, s), C.match_detection(slow, image, s)
        overlaps.append(C.iou(map_box(a.box, box_map, (image.shape[1], image.shape[0])), b.box))
    assert np.median(overlaps) > 0.8, overlaps
