"""Reference landmark predictors to compare kpcore's models against.

:class:`DlibLandmarks` wraps dlib's 68-point shape predictor (Kazemi & Sullivan's
ensemble of regression trees, trained on iBUG 300-W). dlib is an optional tool,
never a dependency of kpcore: it is imported only when a :class:`DlibLandmarks`
is built. Install it with ``pip install dlib-bin`` and the predictor file with
Debian's ``libdlib-data`` (or point ``$KPCORE_DLIB_PREDICTOR`` at a
``shape_predictor_68_face_landmarks.dat``).

    from kpcore.evaluation.reference import DlibLandmarks
    if DlibLandmarks.available():
        pts = DlibLandmarks().predict_crops(rgb, [(left, top, width, height)])   # (1, 68, 2)

Boxes are ``(left, top, width, height)`` as in the 300-W XML; dlib's predictor
was trained on such (HOG-detector) boxes. Points come back in kpcore's
convention, which is the 300-W XML's and therefore dlib's own: 0-based pixel
centres. dlib's Python API returns integer points, so its output is rounded to
whole pixels (up to 0.5 px per coordinate).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import KpcoreError

PREDICTOR_ENV = "KPCORE_DLIB_PREDICTOR"
"""Environment variable naming dlib's ``shape_predictor_68_face_landmarks.dat``."""
DEFAULT_PREDICTOR = Path("/usr/share/dlib/shape_predictor_68_face_landmarks.dat")
"""Where Debian's ``libdlib-data`` installs the predictor."""
DLIB_POINTS = 68

_INSTALL_HINT = ("install dlib with `pip install dlib-bin` (or `pip install dlib`, which compiles) and the "
                 "predictor file with Debian's `apt-get install libdlib-data`, or set "
                 f"${PREDICTOR_ENV} to a shape_predictor_68_face_landmarks.dat")


class DlibUnavailableError(KpcoreError, ImportError):
    """dlib is not installed; the message says how to install it."""


class DlibPredictorMissingError(KpcoreError, FileNotFoundError):
    """dlib's predictor file is missing; the message says where to get it."""


def predictor_path(path: str | os.PathLike | None = None) -> Path:
    """The predictor file: ``path``, else ``$KPCORE_DLIB_PREDICTOR``, else Debian's location."""
    if path is not None:
        return Path(path)
    env = os.environ.get(PREDICTOR_ENV)
    return Path(env) if env else DEFAULT_PREDICTOR


class DlibLandmarks:
    """dlib's 68-point shape predictor on given face boxes.

    Args:
        path: The ``.dat`` predictor file (default :func:`predictor_path`).

    Raises:
        DlibUnavailableError: dlib is not installed (an ImportError; the message says how to install it).
        DlibPredictorMissingError: The predictor file is missing (a FileNotFoundError; the message says
            where to get it).
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        try:
            import dlib
        except ImportError as e:
            raise DlibUnavailableError(f"dlib is not installed, so its predictor cannot run; {_INSTALL_HINT}") \
                from e
        self.path = predictor_path(path)
        if not self.path.is_file():
            raise DlibPredictorMissingError(f"dlib's predictor file {self.path} does not exist; {_INSTALL_HINT}")
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(self.path))

    @staticmethod
    def available(path: str | os.PathLike | None = None) -> bool:
        """True when dlib imports and the predictor file exists."""
        try:
            import dlib  # noqa: F401
        except ImportError:
            return False
        return predictor_path(path).is_file()

    def predict_crops(self, images: np.ndarray | Sequence[np.ndarray],
                      boxes: Sequence[Sequence[float]]) -> np.ndarray:
        """Points ``(N, 68, 2)`` float32 for N face boxes.

        Args:
            images: One ``(H, W, 3)`` RGB uint8 array for all boxes, or a list of
                N arrays (one per box).
            boxes: ``(left, top, width, height)`` per face, as in the 300-W XML.
        """
        if isinstance(images, np.ndarray):
            images = [images] * len(boxes)
        if len(images) != len(boxes):
            raise ValueError(f"got {len(images)} images for {len(boxes)} boxes; pass one box per image "
                             f"or one image for all boxes")
        out = np.zeros((len(boxes), DLIB_POINTS, 2), np.float32)
        prepared: dict[int, np.ndarray] = {}  # one contiguous copy per distinct image
        for i, (img, box) in enumerate(zip(images, boxes, strict=True)):
            key = id(img)
            if key not in prepared:
                prepared[key] = _check_rgb(img)
            left, top, width, height = (float(v) for v in box)
            if width <= 0 or height <= 0:
                raise ValueError(f"box {i} {tuple(box)} has no area; boxes are (left, top, width, height)")
            # 300-W's XML boxes came from dlib's detector, whose rectangles are inclusive:
            # right = left + width - 1 (dlib.rectangle.width() is right - left + 1).
            rect = self._dlib.rectangle(round(left), round(top), round(left + width) - 1,
                                        round(top + height) - 1)
            shape = self._predictor(prepared[key], rect)
            out[i] = [(p.x, p.y) for p in shape.parts()]
        return out


def _check_rgb(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"shape {image.shape} dtype {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"DlibLandmarks takes (H, W, 3) RGB uint8 arrays; got {desc}. "
                         f"Load files with kpcore.data.imageio.load_image().")
    return np.ascontiguousarray(image)
