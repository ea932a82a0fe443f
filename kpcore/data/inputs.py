"""How a face becomes a model input, in numpy and OpenCV only: the input spec, the crop, the
normalisation.

Inference (:class:`~kpcore.live.predict.Predictor` on onnxruntime) needs nothing
else, so it starts without importing PyTorch (~2.5 s) or torchvision (~5 s);
:mod:`kpcore.data.loader` builds the training dataset on top of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..errors import ConfigError
from . import geometry as geo

if TYPE_CHECKING:
    import torch

GRAY_MEAN, GRAY_STD = (0.5,), (0.25,)
RGB_MEAN, RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class InputSpec:
    """How a face becomes a model input.

    Attributes:
        width: Input width in pixels.
        height: Input height in pixels.
        color: ``"gray"`` (1 channel) or ``"rgb"`` (3 channels).
        crop_mode: ``"box"`` crops the face box (300-W); ``"whole"`` resizes
            the whole image (IMM).
        enlarge: Box enlargement factor for ``"box"`` (official 300-W boxes are
            tight; 1.2-1.5 is usual). The box is grown to the input's aspect ratio.
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.
    """

    width: int = 128
    height: int = 128
    color: str = "gray"
    crop_mode: str = "box"
    enlarge: float = 1.3
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.mean:
            self.mean = list(GRAY_MEAN if self.color == "gray" else RGB_MEAN)
        if not self.std:
            self.std = list(GRAY_STD if self.color == "gray" else RGB_STD)

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def validate(self) -> None:
        if not (8 <= self.width <= 2048 and 8 <= self.height <= 2048):
            raise ConfigError(f"input.width x input.height = {self.width}x{self.height}: each side must be 8..2048 px")
        if self.color not in ("gray", "rgb"):
            raise ConfigError(f"input.color = {self.color!r}: use 'gray' or 'rgb'")
        if self.crop_mode not in ("box", "whole"):
            raise ConfigError(f"input.crop_mode = {self.crop_mode!r}: use 'box' (crop the face box) or 'whole'")
        if not (0.5 <= self.enlarge <= 4):
            raise ConfigError(f"input.enlarge = {self.enlarge!r}: use a factor between 0.5 and 4 (1.2-1.5 is usual)")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ConfigError(f"input.mean/std need {self.channels} value(s) for color={self.color!r}")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"input.std = {self.std}: every value must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        crop = d.get("crop")  # tolerate the nested checkpoint form {"crop": {"mode", "enlarge"}}
        if isinstance(crop, dict):
            known.setdefault("crop_mode", crop.get("mode", "box"))
            known.setdefault("enlarge", crop.get("enlarge", 1.3))
        return cls(**known)

    def crop_box(self, box: Sequence[float] | None, image_size: tuple[int, int]) -> geo.Box:
        """The region of the original image that fills the input (edge coordinates)."""
        if self.crop_mode == "whole" or box is None:
            w, h = image_size
            return geo.enlarge_box((0, 0, w, h), 1.0, square=False, aspect=self.width / self.height)
        return geo.enlarge_box(box, self.enlarge, aspect=self.width / self.height)

    def to_tensor(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 ``(C, H, W)`` tensor -> normalised float32 tensor (:meth:`to_array`'s arithmetic)."""
        import torch

        return torch.from_numpy(self.to_array(image.permute(1, 2, 0).numpy()))

    def to_array(self, image: np.ndarray) -> np.ndarray:
        """uint8 ``(H, W, C)`` -> normalised float32 ``(C, H, W)`` numpy array: ``(x / 255 - mean) / std``,
        computed as ``x * scale + offset``, one channel plane at a time (a tenth of the time of the
        whole-array form, which made four passes and a transpose copy). In numpy, so that inference
        through onnxruntime needs no PyTorch."""
        scale = 1.0 / (255.0 * np.asarray(self.std, np.float64))
        offset = -np.asarray(self.mean, np.float64) / np.asarray(self.std, np.float64)
        out = np.empty((image.shape[2], *image.shape[:2]), np.float32)
        for c in range(image.shape[2]):
            np.multiply(image[..., c], np.float32(scale[c]), out=out[c], dtype=np.float32)
            out[c] += np.float32(offset[c])
        return out


def decode_rgb(path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        from ..errors import BadImageError

        raise BadImageError(f"{path}: cannot decode the image; the file is missing, truncated or not an image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def to_color(image: np.ndarray, color: str) -> np.ndarray:
    """RGB (H, W, 3) -> (H, W, C) in the wanted colour space (gray keeps a channel axis)."""
    if color == "gray":
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    return image


def crop_input(image: np.ndarray, matrix: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Warp an (H, W, C) image to the input size with ``matrix``; keeps a channel axis."""
    out = geo.warp(image, matrix, spec.size)
    return out[..., None] if out.ndim == 2 else out


def region_array(image: np.ndarray, region: Sequence[float], spec: InputSpec
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An exact image ``region`` (left, top, width, height) as the model's input:
    ``(float32 (C, H, W) numpy array, crop matrix, uint8 crop (H, W, C))``."""
    m = geo.crop_matrix(region, spec.size)
    crop = crop_input(to_color(image, spec.color), m, spec)
    return spec.to_array(crop), m, crop


