"""Head pose from 68 points (kpcore.live.pose): known poses of the 3-D face model are recovered."""

from __future__ import annotations

import numpy as np
import pytest

from kpcore.live.pose import FACE_MODEL_68, axes_points, estimate_pose, project, rotation_matrix

IMAGE = (640, 480)
TOLERANCE_DEG = 0.5
"""Noise-free projections must give their pose back this closely."""
NOISY_TOLERANCE_DEG = 6.0
"""With 1 px of noise on a face 100 px wide between the eye corners."""


@pytest.mark.parametrize("yaw, pitch, roll", [(0, 0, 0), (25, 0, 0), (-40, 10, 5), (10, -20, -15),
                                              (60, 5, 0), (-70, -10, 10), (0, 30, 0), (0, 0, -30)])
@pytest.mark.parametrize("centre", [(320, 240), (60, 50), (590, 430)])
def test_known_pose_of_projected_model_points_is_recovered(yaw, pitch, roll, centre) -> None:
    points = project(yaw, pitch, roll, IMAGE, centre, scale=90)
    pose = estimate_pose(points, IMAGE)
    assert pose is not None
    np.testing.assert_allclose([pose["yaw"], pose["pitch"], pose["roll"]], [yaw, pitch, roll],
                               atol=TOLERANCE_DEG)


def test_pose_survives_pixel_noise() -> None:
    rng = np.random.default_rng(0)
    for yaw, pitch, roll in [(0, 0, 0), (30, -10, 5), (-45, 10, -10)]:
        points = project(yaw, pitch, roll, IMAGE, (300, 220), scale=100) + rng.normal(0, 1.0, (68, 2))
        pose = estimate_pose(points, IMAGE)
        np.testing.assert_allclose([pose["yaw"], pose["pitch"], pose["roll"]], [yaw, pitch, roll],
                                   atol=NOISY_TOLERANCE_DEG)


def test_sign_convention_nose_goes_where_the_face_turns() -> None:
    frontal = project(0, 0, 0, IMAGE, (320, 240), 90)
    right = project(30, 0, 0, IMAGE, (320, 240), 90)  # yaw > 0: face turned to the image's right
    up = project(0, 20, 0, IMAGE, (320, 240), 90)  # pitch > 0: face up
    clockwise = project(0, 0, 20, IMAGE, (320, 240), 90)  # roll > 0: clockwise on screen (y down)
    nose, left_eye, right_eye = 30, 36, 45
    assert right[nose, 0] - right[27, 0] > frontal[nose, 0] - frontal[27, 0] + 5
    assert up[nose, 1] - up[27, 1] < frontal[nose, 1] - frontal[27, 1] - 5
    assert clockwise[right_eye, 1] > clockwise[left_eye, 1] + 5  # image-right eye lower


def test_mirrored_face_has_the_opposite_yaw_and_roll() -> None:
    from kpcore.data.facts import W300_FACTS

    points = project(35, 8, 12, IMAGE, (320, 240), 90)
    mirrored = np.stack([IMAGE[0] - 1 - points[:, 0], points[:, 1]], 1)[W300_FACTS.flip_permutation]
    a, b = estimate_pose(points, IMAGE), estimate_pose(mirrored, IMAGE)
    assert b["yaw"] == pytest.approx(-a["yaw"], abs=0.5) and b["roll"] == pytest.approx(-a["roll"], abs=0.5)
    assert b["pitch"] == pytest.approx(a["pitch"], abs=0.5)


def test_model_is_symmetric_and_in_eye_corner_units() -> None:
    from kpcore.data.facts import W300_FACTS

    mirrored = FACE_MODEL_68 * [-1, 1, 1]
    np.testing.assert_allclose(mirrored[W300_FACTS.flip_permutation], FACE_MODEL_68, atol=2e-3)
    assert np.linalg.norm(FACE_MODEL_68[36] - FACE_MODEL_68[45]) == pytest.approx(1.0, abs=0.01)
    assert FACE_MODEL_68[30, 2] < FACE_MODEL_68[[36, 45], 2].min()  # the nose tip is nearest the camera


def test_unusable_points_give_none_and_bad_shapes_raise() -> None:
    assert estimate_pose(np.full((68, 2), np.nan), IMAGE) is None
    assert estimate_pose(np.full((68, 2), 5.0), IMAGE) is None
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        estimate_pose(np.zeros((5, 2)), IMAGE)


def test_axes_follow_the_rotation() -> None:
    tips = axes_points({"yaw": 0, "pitch": 0, "roll": 0}, (100, 100), 50)
    np.testing.assert_allclose(tips, [[150, 100], [100, 150], [100, 100]], atol=1e-9)
    tips = axes_points({"yaw": 90, "pitch": 0, "roll": 0}, (100, 100), 50)
    assert tips[2, 0] == pytest.approx(150)  # turned to the image's right: the face's z axis points right
    np.testing.assert_allclose(rotation_matrix(0, 0, 90) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
