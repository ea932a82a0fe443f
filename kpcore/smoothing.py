"""Temporal smoothing of keypoints: the One Euro filter.

Casiez, Roussel, Vogel, "1 Euro Filter: A Simple Speed-based Low-pass Filter for
Noisy Input in Interactive Systems", CHI 2012. A first-order low-pass filter whose
cutoff rises with the speed of the signal: at rest it smooths hard (little
jitter), in fast motion it follows closely (little lag).

Here positions are divided by a per-face ``scale`` (kpcore's tracker passes the
face's crop size) before the speed is taken, so ``beta`` means the same for a
small face as for a large one.
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

    min_cutoff: float = 1.0
    beta: float = 30.0  # speed is in crop widths per second: a face crossing its width in 1 s gets ~31 Hz
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
