"""Keypoint-aware augmentation with ``torchvision.transforms.v2``.

Each augmentation computes one geometric transform and applies it to the image
and to its :class:`torchvision.tv_tensors.KeyPoints` together (v2 does this
for affine, rotation, crop and resize). Two things v2 does not know about
faces are added here:

* :class:`FaceHorizontalFlip` mirrors x (v2: ``x' = W - 1 - x``, the kpcore
  convention) **and** swaps left/right point ids using the layout's flip pairs,
  so the subject's left eye stays labelled "left eye".
* crop-box jitter is done when the face is cut out (:mod:`kpcore.data.loader`),
  as part of the single crop matrix, so it costs no extra warp.

Points that leave the image are **kept** at their true (outside) coordinates:
v2 does not clamp :class:`KeyPoints` and neither do we. A jaw point pushed out
of frame by a rotation is still a well-defined target, and clamping would teach
the model to put it on the border. The augmentation ranges are small enough
that the face stays in the frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import ConfigError
from .facts import DatasetFacts


@dataclass
class AugmentConfig:
    """Random augmentation applied to training samples.

    Attributes:
        enabled: Master switch; False gives the plain crop.
        rotate_deg: Rotation drawn from ``[-rotate_deg, rotate_deg]`` degrees.
        shift: Translation as a fraction of the input size, each axis.
        scale_min: Smallest zoom factor (1.0 = none).
        scale_max: Largest zoom factor.
        box_jitter: Face-box jitter (centre shift and size change) as a fraction
            of the box; only for tasks that crop a box.
        brightness: ColorJitter brightness strength.
        contrast: ColorJitter contrast strength.
        saturation: ColorJitter saturation strength (no effect on grayscale).
        hue: ColorJitter hue strength, at most 0.5 (no effect on grayscale).
        flip: Probability of a horizontal flip with left/right swap.
        noise: Probability of additive Gaussian sensor noise (``v2.GaussianNoise``).
        noise_sigma: Its largest standard deviation, as a fraction of the full
            intensity range (0.2 = 51 grey levels of 255); each noisy sample
            gets a quarter, a half or all of it.
    """

    enabled: bool = True
    rotate_deg: float = 15.0
    shift: float = 0.05
    scale_min: float = 0.9
    scale_max: float = 1.1
    box_jitter: float = 0.05
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.05
    flip: float = 0.5
    noise: float = 0.0
    noise_sigma: float = 0.2

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        checks = [
            ("rotate_deg", 0 <= self.rotate_deg <= 180, "between 0 and 180"),
            ("shift", 0 <= self.shift < 0.5, "in [0, 0.5)"),
            ("scale_min", 0 < self.scale_min <= self.scale_max, "positive and <= scale_max"),
            ("box_jitter", 0 <= self.box_jitter < 0.5, "in [0, 0.5)"),
            ("brightness", self.brightness >= 0, ">= 0"),
            ("contrast", self.contrast >= 0, ">= 0"),
            ("saturation", self.saturation >= 0, ">= 0"),
            ("hue", 0 <= self.hue <= 0.5, "in [0, 0.5]"),
            ("flip", 0 <= self.flip <= 1, "a probability in [0, 1]"),
            ("noise", 0 <= self.noise <= 1, "a probability in [0, 1]"),
            ("noise_sigma", 0 < self.noise_sigma <= 1, "in (0, 1], a fraction of the intensity range"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise ConfigError(f"augment.{name} = {getattr(self, name)!r} is invalid: it must be {want}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaceHorizontalFlip(v2.RandomHorizontalFlip):
    """Horizontal flip that also swaps left/right keypoint ids.

    Args:
        flip_permutation: ``perm`` with ``flipped = mirrored[perm]``
            (:attr:`kpcore.data.facts.DatasetFacts.flip_permutation`).
        p: Probability of flipping.
    """

    def __init__(self, flip_permutation: np.ndarray | list[int], p: float = 0.5) -> None:
        super().__init__(p=p)
        self.perm = torch.as_tensor(np.asarray(flip_permutation), dtype=torch.long)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = super().transform(inpt, params)
        if isinstance(out, tv_tensors.KeyPoints):
            out = tv_tensors.wrap(out[..., self.perm, :], like=out)
        return out


def flip_points(points: np.ndarray, width: int, facts: DatasetFacts) -> np.ndarray:
    """Mirror ``(K, 2)`` points in an image of ``width`` and swap left/right ids."""
    out = np.asarray(points, dtype=np.float64).copy()
    out[..., 0] = width - 1 - out[..., 0]
    return out[..., facts.flip_permutation, :]


def build_augmentation(cfg: AugmentConfig, facts: DatasetFacts, color: bool) -> v2.Compose | None:
    """The random pipeline for training, or None when augmentation is off.

    Applied to a ``tv_tensors.Image`` (uint8, C x H x W) and a
    ``tv_tensors.KeyPoints`` of the same canvas, after the face crop.
    """
    cfg.validate()
    if not cfg.enabled:
        return None
    steps: list[v2.Transform] = []
    if cfg.rotate_deg or cfg.shift or cfg.scale_min != 1 or cfg.scale_max != 1:
        steps.append(v2.RandomAffine(degrees=cfg.rotate_deg, translate=(cfg.shift, cfg.shift),
                                     scale=(cfg.scale_min, cfg.scale_max)))
    if cfg.brightness or cfg.contrast or (color and (cfg.saturation or cfg.hue)):
        steps.append(v2.ColorJitter(brightness=cfg.brightness, contrast=cfg.contrast,
                                    saturation=cfg.saturation if color else 0,
                                    hue=cfg.hue if color else 0))
    if cfg.noise > 0:  # GaussianNoise works on float images: to [0, 1] and back to uint8 around it
        sigmas = (cfg.noise_sigma / 4, cfg.noise_sigma / 2, cfg.noise_sigma)
        steps.append(v2.RandomApply([v2.ToDtype(torch.float32, scale=True),
                                     v2.RandomChoice([v2.GaussianNoise(sigma=s) for s in sigmas]),
                                     v2.ToDtype(torch.uint8, scale=True)], p=cfg.noise))
    if cfg.flip > 0:
        steps.append(FaceHorizontalFlip(facts.flip_permutation, p=cfg.flip))
    return v2.Compose(steps) if steps else None


def apply_augmentation(pipeline: v2.Compose | None, image: np.ndarray, points: np.ndarray
                       ) -> tuple[torch.Tensor, np.ndarray]:
    """Run ``pipeline`` on an ``(H, W, C)`` uint8 image and ``(K, 2)`` points.

    Returns the ``(C, H, W)`` uint8 tensor and the moved points.
    """
    img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
    if pipeline is None:
        return img.as_subclass(torch.Tensor), np.asarray(points, dtype=np.float32)
    kps = tv_tensors.KeyPoints(torch.as_tensor(points, dtype=torch.float32), canvas_size=tuple(img.shape[-2:]))
    img, kps = pipeline(img, kps)
    return img.as_subclass(torch.Tensor), kps.as_subclass(torch.Tensor).numpy()
