"""Temporal smoothing of keypoints: the One Euro filter.

Casiez, Roussel, Vogel, "1 Euro Filter: A Simple Speed-based Low-pass Filter for
Noisy Input in Interactive Systems", CHI 2012. A first-order low-pass filter whose
cutoff rises with the speed of the signal: at rest it smooths hard (little
jitter), in fast motion it follows closely (little lag).

Here positions are divided by a per-face ``scale`` (kpcore's tracker passes the
face's crop size) before the speed is taken, so ``beta`` means the same for a
small face as for a large one.

:class:`FaceFilter` is what the tracker uses: a face's points split into its
motion (a similarity pose: centre, size, in-plane angle, fitted to all points at
once) and its shape in its own frame, each with its own One Euro filter. A head
that moves carries every point along, so one filter on the points must choose
between lag in motion and shimmer at rest; the pose, fitted to 68 points, is far
less noisy than any one point and can follow closely, while the shape, which
does not change when the head moves, can be smoothed hard without lag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroParams:
    """Parameters of :class:`OneEuroFilter`.

    Attributes:
        min_cutoff: Cutoff frequency in Hz at rest. Lower: less jitter, more lag
            when the face starts to move.
        beta: How fast the cutoff rises with speed (per unit of ``scale`` per
            second). Higher: less lag in fast motion, more jitter.
        d_cutoff: Cutoff in Hz of the low-pass filter on the speed itself.
    """

    # Defaults: the motion filter of kpcore track's FaceFilter, measured by scripts/tune_smoothing.py
    # (bench's moving clip and a still one, face68-300w MobileNetV2): moving-clip jitter 0.219% of the
    # eye distance (unsmoothed 0.383%) at NME 2.820% (2.816%); still-clip jitter 0.060% (0.301%).
    min_cutoff: float = 2.0
    beta: float = 300.0  # speed in crop widths per second: a face moving 1/10 of its crop per second gets 32 Hz
    d_cutoff: float = 1.0

    def validate(self) -> None:
        if self.min_cutoff <= 0 or self.d_cutoff <= 0 or self.beta < 0:
            raise ValueError(f"One Euro parameters need min_cutoff > 0, d_cutoff > 0 and beta >= 0; got {self}")


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter over an array of any shape (e.g. ``(K, 2)`` points), element-wise.

    Example::

        f = OneEuroFilter(OneEuroParams(min_cutoff=1.0, beta=1.0))
        smooth = [f(points, t=i / fps, scale=face_size) for i, points in enumerate(frames)]
    """

    def __init__(self, params: OneEuroParams | None = None) -> None:
        self.params = params or OneEuroParams()
        self.params.validate()
        self.reset()

    def reset(self) -> None:
        """Forget the past (the next call returns its input unchanged)."""
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        """The filtered value of ``x`` observed at time ``t`` seconds.

        Args:
            x: The new observation.
            t: Its time in seconds (must increase; equal times return the last output).
            scale: Size that ``beta``'s speed is measured in (pixels per unit).
        """
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        if dt <= 0:
            return self._x.copy()
        p = self.params
        dx = (x - self._x) / dt / max(scale, 1e-9)
        self._dx = self._dx + _alpha(p.d_cutoff, dt) * (dx - self._dx)
        cutoff = p.min_cutoff + p.beta * np.abs(self._dx)
        self._x = self._x + _alpha(cutoff, dt) * (x - self._x)
        self._t = t
        return self._x.copy()


SHAPE_PARAMS = OneEuroParams(min_cutoff=0.5, beta=10.0)
"""Default filter of a face's shape in its own frame (:class:`FaceFilter`): slow at rest, following
an expression (a mouth opening) through ``beta``."""


class FaceFilter:
    """One Euro filtering of a face's ``(K, 2)`` points, its motion and its shape apart.

    Each frame, the similarity (centre, scale, in-plane rotation) that maps the
    first frame's centred points onto the new ones is fitted by least squares; the
    pose ``(cx, cy, s*R*cos a, s*R*sin a)`` (R: the first shape's RMS radius, so all
    four are pixels) is filtered with ``pose``, the points mapped back into the
    first frame's pose (the shape) with ``shape``, and the smoothed shape is put
    back with the smoothed pose.

    Args:
        pose: The motion's filter (default :class:`OneEuroParams`'s defaults).
        shape: The shape's filter (default :data:`SHAPE_PARAMS`).
    """

    def __init__(self, pose: OneEuroParams | None = None, shape: OneEuroParams | None = None) -> None:
        self.pose = OneEuroFilter(pose)
        self.shape = OneEuroFilter(shape or SHAPE_PARAMS)
        self.reset()

    def reset(self) -> None:
        """Forget the past (the next call returns its input unchanged)."""
        self.pose.reset()
        self.shape.reset()
        self._ref: np.ndarray | None = None
        self._radius = 0.0

    def __call__(self, points: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        """The filtered ``(K, 2)`` points observed at ``t`` seconds (see :meth:`OneEuroFilter.__call__`)."""
        x = np.asarray(points, dtype=np.float64)
        centre = x.mean(0)
        z = (x[:, 0] - centre[0]) + 1j * (x[:, 1] - centre[1])
        if self._ref is None:
            radius = float(np.sqrt(np.mean(np.abs(z) ** 2)))
            if radius < 1e-6:  # all points in one place: no pose to fit
                return x.copy()
            self._ref, self._radius = z, radius
        ref = self._ref
        similarity = complex(np.vdot(ref, z) / np.vdot(ref, ref))  # least squares: z ~ similarity * ref
        if abs(similarity) < 1e-9:
            return x.copy()
        shape = z / similarity
        pose = self.pose(np.array([centre[0], centre[1], similarity.real * self._radius,
                                   similarity.imag * self._radius]), t, scale)
        smooth = self.shape(np.stack([shape.real, shape.imag], -1), t, scale)
        out = (smooth[:, 0] + 1j * smooth[:, 1]) * complex(pose[2], pose[3]) / self._radius
        return np.stack([out.real + pose[0], out.imag + pose[1]], -1)
