"""Head pose (yaw, pitch, roll in degrees) from 68 facial keypoints.

    from kpcore.live.pose import estimate_pose
    pose = estimate_pose(points68, image_size=(width, height))   # {"yaw": .., "pitch": .., "roll": ..}

The 2-D points are matched to a generic 3-D face (:data:`FACE_MODEL_68`) with
OpenCV's ``solvePnP`` (the global SQPnP solver, polished by Levenberg-Marquardt on
the reprojection error; a multi-start local search where SQPnP fails), under a pinhole camera whose focal length is the image's
longer side and whose centre is the image centre. The rotation is taken
*relative to the line of sight* (the ray from the camera to the face) and then
split into three angles: a face looking straight into the lens is frontal
wherever it sits in a group photo (relative to the optical axis instead, the
astronaut portrait, whose face is near the top, came out 34 degrees pitched). The 17 jaw-line points are left out of the fit: on a turned
face the annotated jaw line is the silhouette, which slides over the face
instead of staying on fixed 3-D points, and pulls the yaw towards frontal.

**The 3-D face.** :data:`FACE_MODEL_68` is the mean 3-D shape of the 300-W
(iBUG) 68-point layout recovered from 2-D annotations alone by rank-3
factorisation with the metric upgrade of Tomasi & Kanade ("Shape and motion
from image streams under orthography: a factorization method", IJCV 9(2),
1992): the train and test shapes of ``ibug300w`` and their mirror images,
centred and scaled, give a (2F x 68) matrix whose best rank-3 approximation is
motion x shape; the orthonormality of each face's two rows fixes the shape up
to a rotation, which is chosen to match the mean 2-D shape, and the result is
made left-right symmetric. Its depth is then halved: the factorisation puts
the nose tip 0.70 eye-corner widths in front of the outer eye corners, twice
the human proportion (about a third, as in the usual six-point solvePnP head
models); non-rigid variation inflates it. ``scripts/fit_face_model_3d.py``
recomputes it.
Units are the distance between the outer eye corners (points 36 and 45); the
axes are those of a frontal face in the image: x to the image's right, y
down, z away from the camera (the nose tip has the smallest z).

**Sign convention** (angles in degrees, all 0 for a frontal, upright face):

* ``yaw > 0``: the face turns towards the image's right, i.e. the subject
  turns to their own left (nose points right in the picture);
* ``pitch > 0``: the face tilts up (chin raised, nose points up in the picture);
* ``roll > 0``: the face is rotated clockwise as seen in the picture (the
  subject's left eye, on the image's right, is lower than the right eye).

The rotation from the face to the line of sight is ``Rz(roll) @ Ry(-yaw) @ Rx(-pitch)``
(standard right-handed rotation matrices in the camera's x-right, y-down,
z-forward axes; :func:`rotation_matrix`). Measured against MTFL's pose classes in
``scripts/check_pose_mtfl.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

NUM_POINTS = 68
FOCAL_PER_SIDE = 1.0
"""Focal length in units of the image's longer side (about a 53 degree field of view)."""

FACE_MODEL_68 = np.array([
    (-0.820, -0.116,  0.433),
    (-0.812,  0.098,  0.407),
    (-0.789,  0.310,  0.391),
    (-0.745,  0.517,  0.374),
    (-0.660,  0.710,  0.328),
    (-0.529,  0.877,  0.255),
    (-0.369,  1.015,  0.164),
    (-0.195,  1.125,  0.072),
    ( 0.000,  1.158,  0.040),
    ( 0.195,  1.125,  0.072),
    ( 0.369,  1.015,  0.164),
    ( 0.529,  0.877,  0.255),
    ( 0.660,  0.710,  0.328),
    ( 0.745,  0.517,  0.374),
    ( 0.789,  0.310,  0.391),
    ( 0.812,  0.098,  0.407),
    ( 0.820, -0.116,  0.433),
    (-0.666, -0.270,  0.078),
    (-0.568, -0.364, -0.008),
    (-0.425, -0.396, -0.080),
    (-0.276, -0.378, -0.137),
    (-0.135, -0.329, -0.176),
    ( 0.135, -0.329, -0.176),
    ( 0.276, -0.378, -0.137),
    ( 0.425, -0.396, -0.080),
    ( 0.568, -0.364, -0.008),
    ( 0.666, -0.270,  0.078),
    ( 0.000, -0.154, -0.173),
    ( 0.000, -0.016, -0.222),
    ( 0.000,  0.118, -0.278),
    ( 0.000,  0.258, -0.332),
    (-0.167,  0.357, -0.169),
    (-0.087,  0.385, -0.196),
    ( 0.000,  0.409, -0.212),
    ( 0.087,  0.385, -0.196),
    ( 0.167,  0.357, -0.169),
    (-0.500, -0.129,  0.017),
    (-0.410, -0.179, -0.023),
    (-0.303, -0.178, -0.036),
    (-0.209, -0.109, -0.034),
    (-0.309, -0.092, -0.034),
    (-0.416, -0.094, -0.020),
    ( 0.209, -0.109, -0.034),
    ( 0.303, -0.178, -0.036),
    ( 0.410, -0.179, -0.023),
    ( 0.500, -0.129,  0.017),
    ( 0.416, -0.094, -0.020),
    ( 0.309, -0.092, -0.034),
    (-0.318,  0.611,  0.012),
    (-0.201,  0.565, -0.103),
    (-0.081,  0.540, -0.166),
    ( 0.000,  0.559, -0.173),
    ( 0.081,  0.540, -0.166),
    ( 0.201,  0.565, -0.103),
    ( 0.318,  0.611,  0.012),
    ( 0.204,  0.725, -0.066),
    ( 0.088,  0.775, -0.120),
    ( 0.000,  0.784, -0.128),
    (-0.088,  0.775, -0.120),
    (-0.204,  0.725, -0.066),
    (-0.269,  0.617, -0.004),
    (-0.082,  0.606, -0.149),
    ( 0.000,  0.615, -0.157),
    ( 0.082,  0.606, -0.149),
    ( 0.269,  0.617, -0.004),
    ( 0.083,  0.672, -0.126),
    ( 0.000,  0.682, -0.134),
    (-0.083,  0.672, -0.126),
], dtype=np.float64)
"""Generic 3-D positions of the 300-W 68 points (see the module docstring); (68, 3)."""

_LEFT_EYE_CORNER, _RIGHT_EYE_CORNER = 36, 45  # the outer corners; the model's unit length
START_YAWS = (0.0, -35.0, 35.0, -70.0, 70.0)
"""Where SQPnP fails, ``solvePnP`` starts from each of these yaws (degrees); the pose with the smallest
reprojection error wins."""
PNP_POINTS = np.arange(17, NUM_POINTS)
"""Points fitted by ``solvePnP``: brows, nose, eyes and mouth (the jaw line is a silhouette)."""
_PNP_MODEL = np.ascontiguousarray(FACE_MODEL_68[PNP_POINTS])


def _axis_rotation(axis: int, degrees: float) -> np.ndarray:
    """The rotation by ``degrees`` about coordinate axis ``axis`` (0: x, 1: y, 2: z)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r if axis != 1 else r.T  # about y the sine terms swap sides (right-handed axes)


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The face-to-camera rotation for angles in degrees (the module's convention): intrinsic
    z-y-x Euler angles ``(roll, -yaw, -pitch)``, ``Rz @ Ry @ Rx`` (numpy only, no SciPy)."""
    return _axis_rotation(2, roll) @ _axis_rotation(1, -yaw) @ _axis_rotation(0, -pitch)


def angles_from_rotation(matrix: np.ndarray) -> dict[str, float]:
    """``{"yaw", "pitch", "roll"}`` in degrees from a face-to-camera rotation matrix (the inverse of
    :func:`rotation_matrix`; at yaw +-90 degrees, where roll and pitch mix, pitch is taken as 0)."""
    r = np.asarray(matrix, float)
    neg_yaw = math.degrees(math.asin(float(np.clip(-r[2, 0], -1.0, 1.0))))
    if abs(r[2, 0]) < 1 - 1e-9:
        roll = math.degrees(math.atan2(r[1, 0], r[0, 0]))
        neg_pitch = math.degrees(math.atan2(r[2, 1], r[2, 2]))
    else:  # gimbal lock: only roll - pitch (or roll + pitch) is defined
        roll, neg_pitch = math.degrees(math.atan2(-r[0, 1], r[1, 1])), 0.0
    return {"yaw": float(-neg_yaw), "pitch": float(-neg_pitch), "roll": float(roll)}


def line_of_sight(translation: np.ndarray) -> np.ndarray:
    """The smallest rotation taking the optical axis (0, 0, 1) onto the ray towards ``translation``."""
    ray = np.asarray(translation, dtype=np.float64) / np.linalg.norm(translation)
    axis = np.array([-ray[1], ray[0], 0.0])  # (0, 0, 1) x ray, without np.cross's overhead
    sin, cos = float(np.linalg.norm(axis)), float(ray[2])
    if sin < 1e-12:
        return np.eye(3)
    return cv2.Rodrigues(axis / sin * math.atan2(sin, cos))[0]


def camera_matrix(image_size: tuple[int, int]) -> np.ndarray:
    """Pinhole intrinsics for an image ``(width, height)``: focal = longer side, centre = image centre."""
    w, h = image_size
    f = FOCAL_PER_SIDE * max(w, h)
    return np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])


def estimate_pose(points68: np.ndarray | Sequence, image_size: tuple[int, int]) -> dict[str, float] | None:
    """Head pose from 68 points ``(x, y)`` in the pixels of an image of ``image_size = (width, height)``.

    Returns ``{"yaw", "pitch", "roll"}`` in degrees (signs in the module
    docstring), or None when the points cannot give a pose (NaN points, all
    points on one spot, or ``solvePnP`` failing).

    Raises:
        ValueError: ``points68`` is not ``(68, 2)``.
    """
    pts = np.asarray(points68, dtype=np.float64)
    if pts.shape != (NUM_POINTS, 2):
        raise ValueError(f"estimate_pose needs the 68 points of the 300-W layout as (68, 2); got {pts.shape}")
    if not np.isfinite(pts).all():
        return None
    spread = float((pts.max(axis=0) - pts.min(axis=0)).max())
    if spread < 1e-6:
        return None
    k = camera_matrix(image_size)
    model, image_points = _PNP_MODEL, pts[PNP_POINTS]
    best = _sqpnp(model, image_points, k)
    if best is None:  # SQPnP failed (degenerate points): the multi-start local search
        # from a frontal face at the distance that gives the observed eye-corner gap
        gap = float(np.linalg.norm(pts[_LEFT_EYE_CORNER] - pts[_RIGHT_EYE_CORNER]))
        gap = max(gap, spread / 3, 1e-3)
        z = k[0, 0] / gap
        centre = pts.mean(axis=0)
        t0 = np.array([(centre[0] - k[0, 2]) * z / k[0, 0], (centre[1] - k[1, 2]) * z / k[1, 1], z])
        best = _multi_start(model, image_points, k, t0)
    if best is None:
        return None
    _, rvec, tvec = best
    matrix, _ = cv2.Rodrigues(rvec)
    angles = angles_from_rotation(line_of_sight(tvec.ravel()).T @ matrix)
    return angles if all(math.isfinite(v) for v in angles.values()) else None


def _reprojection_error(model, image_points, k, rvec, tvec) -> float | None:
    if not np.all(np.isfinite(rvec)) or not np.all(np.isfinite(tvec)) or float(tvec[2, 0]) <= 0:
        return None
    projected, _ = cv2.projectPoints(model, rvec, tvec, k, None)
    return float(np.square(projected.reshape(-1, 2) - image_points).sum())


def _sqpnp(model, image_points, k):
    """``(error, rvec, tvec)`` from OpenCV's SQPnP (a global solver, one call) polished by one
    Levenberg-Marquardt run, or None when it fails.

    On 300 random poses (yaw +-80, pitch and roll +-30 degrees, 1.5 px noise) it gave the
    multi-start search's angles within 3e-5 degrees, in 0.17 ms against 1.1 ms.
    """
    try:
        ok, rvec, tvec = cv2.solvePnP(model, image_points, k, None, flags=cv2.SOLVEPNP_SQPNP)
        if not ok:
            return None
        ok, rvec, tvec = cv2.solvePnP(model, image_points, k, None, rvec, tvec, useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
    except cv2.error:
        return None
    error = _reprojection_error(model, image_points, k, rvec, tvec) if ok else None
    return None if error is None else (error, rvec, tvec)


def _multi_start(model, image_points, k, t0):
    """The best ``(error, rvec, tvec)`` of Levenberg-Marquardt runs from each of :data:`START_YAWS`."""
    best = None
    for start_yaw in START_YAWS:  # Levenberg-Marquardt is local: a turned face needs a turned start
        rvec0, _ = cv2.Rodrigues(line_of_sight(t0) @ rotation_matrix(start_yaw, 0.0, 0.0))
        try:
            ok, rvec, tvec = cv2.solvePnP(model, image_points, k, None, rvec0.copy(), t0.reshape(3, 1).copy(),
                                          useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        except cv2.error:
            continue
        error = _reprojection_error(model, image_points, k, rvec, tvec) if ok else None
        if error is not None and (best is None or error < best[0]):
            best = (error, rvec, tvec)
    return best


def project(yaw: float, pitch: float, roll: float, image_size: tuple[int, int], centre: tuple[float, float],
            scale: float) -> np.ndarray:
    """The model's 68 points seen at this pose, eye-corner gap ``scale`` px, nose region at ``centre``.

    The inverse of :func:`estimate_pose` under its camera (for tests and drawings).
    """
    k = camera_matrix(image_size)
    z = k[0, 0] / scale
    t = np.array([(centre[0] - k[0, 2]) * z / k[0, 0], (centre[1] - k[1, 2]) * z / k[1, 1], z])
    rvec, _ = cv2.Rodrigues(line_of_sight(t) @ rotation_matrix(yaw, pitch, roll))
    pts, _ = cv2.projectPoints(FACE_MODEL_68, rvec, t, k, None)
    return pts.reshape(-1, 2)


def axes_points(pose: dict[str, float], origin: tuple[float, float], length: float) -> np.ndarray:
    """End points ``(3, 2)`` of the face's x (right), y (down) and z (out of the face) axes, drawn from ``origin``.

    An orthographic sketch for overlays: the axis tips are the rotated unit
    vectors times ``length`` pixels; the z axis points from the face towards
    the viewer, so it follows the nose.
    """
    r = rotation_matrix(pose["yaw"], pose["pitch"], pose["roll"])
    axes = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, -1.0]])  # -z: out of the face
    tips = (r @ axes.T).T[:, :2] * length
    return np.asarray(origin, dtype=np.float64) + tips
