"""From samples to model inputs: the face crop, the decode cache, the torch Dataset.

One crop matrix ``M`` (original pixels -> input pixels, :mod:`kpcore.data.geometry`)
is computed per sample and draw; the image is warped by it and the points are
moved by it, so every prediction maps back to the original image exactly with
``inv(M)``.

Images are decoded once and kept in memory at a little more than the input
resolution (:data:`CACHE_OVERSAMPLE`), with a margin around the crop for the
jitter and rotation of augmentation. A training epoch then costs one small
warp per sample instead of a JPEG decode and a large resize.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..errors import ConfigError
from . import geometry as geo
from .datasets import PseudoLabels, Sample
from .facts import DatasetFacts
from .inputs import (  # noqa: F401  (re-exported: the names were defined here before)
    GRAY_MEAN,
    GRAY_STD,
    RGB_MEAN,
    RGB_STD,
    InputSpec,
    crop_input,
    decode_rgb,
    region_array,
    to_color,
)
from .transforms import AugmentConfig, apply_augmentation, build_augmentation

CACHE_OVERSAMPLE = 1.5  # cached crop resolution relative to the input resolution
CACHE_MARGIN = 1.3  # cached area relative to the crop area (room for jitter/rotation)
def make_input(image: np.ndarray, box: Sequence[float] | None, spec: InputSpec
               ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """One RGB image as the model sees it: ``(tensor (C, H, W), crop matrix, uint8 crop (H, W, C))``.

    The crop is the training crop (:meth:`InputSpec.crop_box`), without augmentation.
    """
    h, w = image.shape[:2]
    return region_input(image, spec.crop_box(box, (w, h)), spec)


def region_input(image: np.ndarray, region: Sequence[float], spec: InputSpec
                 ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """:func:`make_input` for an exact image ``region`` (left, top, width, height) that fills the input."""
    x, m, crop = region_array(image, region, spec)
    return torch.from_numpy(x), m, crop


@dataclass
class _Cached:
    image: np.ndarray  # (h, w, C) uint8, the cached region
    to_cache: np.ndarray  # 3x3: original pixels -> cache pixels


class KeypointDataset(Dataset):
    """Samples as model inputs, with optional augmentation.

    Each item is a dict: ``image`` (C, H, W) float32, ``target`` (K, 2) in
    [-1, 1], ``points`` (K, 2) input pixels, ``matrix`` (3, 3) float64
    original -> input pixels (the inverse maps predictions back; for an
    augmented item it is only the crop part), ``norm`` the normalising distance
    in original pixels, ``index``.
    """

    def __init__(self, samples: Sequence[Sample], facts: DatasetFacts, spec: InputSpec,
                 augment: AugmentConfig | None = None, cache: bool = True, progress: bool = True,
                 seed: int = 0) -> None:
        spec.validate()
        self.samples = list(samples)
        self.facts = facts
        self.spec = spec
        self.augment_cfg = augment if augment is not None and augment.enabled else None
        self.pipeline = build_augmentation(augment, facts, spec.color == "rgb") if self.augment_cfg else None
        self.seed = seed
        self._cache: list[_Cached] | None = None
        if cache:
            self._cache = self._build_cache(progress)

    # -- cache ---------------------------------------------------------------
    def _cache_one(self, s: Sample) -> _Cached:
        box = self.spec.crop_box(s.box, s.image_size)
        if self.spec.crop_mode == "box":
            box = geo.enlarge_box(box, CACHE_MARGIN, square=False, aspect=self.spec.width / self.spec.height)
            margin = CACHE_MARGIN
        else:
            margin = 1.0
        size = (math.ceil(self.spec.width * margin * CACHE_OVERSAMPLE),
                math.ceil(self.spec.height * margin * CACHE_OVERSAMPLE))
        m = geo.crop_matrix(box, size)
        img = to_color(decode_rgb(s.image_path), self.spec.color)
        cached = geo.warp(img, m, size)
        if cached.ndim == 2:
            cached = cached[..., None]
        return _Cached(cached, m)

    def _build_cache(self, progress: bool) -> list[_Cached]:
        # OpenCV releases the GIL while decoding and warping, so threads help.
        with ThreadPoolExecutor(max_workers=4) as pool:
            it = pool.map(self._cache_one, self.samples)
            return list(tqdm(it, total=len(self.samples), desc="decoding images", disable=not progress,
                             leave=False))

    def source(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The decoded image and matrix (original -> that image) to crop from."""
        if self._cache is not None:
            c = self._cache[index]
            return c.image, c.to_cache
        s = self.samples[index]
        return to_color(decode_rgb(s.image_path), self.spec.color), np.eye(3)

    # -- items ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def crop_matrix(self, index: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Original -> input matrix of sample ``index``, with box jitter if ``rng`` is given."""
        s = self.samples[index]
        box = self.spec.crop_box(s.box, s.image_size)
        if rng is not None and self.augment_cfg is not None and self.spec.crop_mode == "box":
            j = self.augment_cfg.box_jitter
            left, top, w, h = box
            dx, dy = rng.uniform(-j, j, size=2) * (w, h)
            f = 1 + rng.uniform(-j, j)
            box = geo.enlarge_box((left + dx, top + dy, w, h), f, square=False)
        return geo.crop_matrix(box, self.spec.size)

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        rng = None
        if self.pipeline is not None:
            rng = np.random.default_rng([self.seed, index, torch.randint(0, 2**31 - 1, ()).item()])
        m = self.crop_matrix(index, rng)
        src, to_src = self.source(index)
        image = crop_input(src, m @ geo.invert(to_src), self.spec)
        points = geo.apply(m, s.points).astype(np.float32)
        img_t, points = apply_augmentation(self.pipeline, image, points)
        target = geo.normalize_points(points, self.spec.size).astype(np.float32)
        return {
            "image": self.spec.to_tensor(img_t),
            "target": torch.from_numpy(target),
            "points": torch.from_numpy(np.asarray(points, dtype=np.float32)),
            "matrix": torch.from_numpy(m),
            "norm": torch.tensor(s.norm_distance, dtype=torch.float32),
            "index": index,
        }

    def with_points(self, points: Sequence[np.ndarray], facts: DatasetFacts) -> KeypointDataset:
        """The same faces (and the same decoded cache) labelled with other ``points`` in layout ``facts``.

        Used to carry extra points (e.g. pseudo-labels) through the very same crop and
        augmentation as a sample's own points: stack them into one layout first.
        """
        if len(points) != len(self.samples):
            raise ValueError(f"got points for {len(points)} faces; this dataset has {len(self.samples)}")
        out = copy.copy(self)
        out.samples = [replace(s, points=np.asarray(p, np.float32)) for s, p in zip(self.samples, points,
                                                                                   strict=True)]
        out.facts = facts
        if self.augment_cfg is not None:
            out.pipeline = build_augmentation(self.augment_cfg, facts, self.spec.color == "rgb")
        return out

    def draw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """One (augmented, if enabled) input as a displayable RGB uint8 image and its input-pixel points."""
        item = self[index]
        mean = torch.tensor(self.spec.mean).view(-1, 1, 1)
        std = torch.tensor(self.spec.std).view(-1, 1, 1)
        img = ((item["image"] * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
        if img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        return img, item["points"].numpy()


def stack_facts(first: DatasetFacts, second: DatasetFacts) -> DatasetFacts:
    """One layout of ``first``'s points followed by ``second``'s (ids shifted by ``first.num_points``),
    so that both sets go through one augmentation together; flip pairs stay within each set and
    the normalising points are ``first``'s."""
    k = first.num_points
    return DatasetFacts(
        name=f"{first.name}+{second.name}", title=f"{first.title} + {second.title}",
        num_points=k + second.num_points,
        groups={first.name: list(range(k)), second.name: list(range(k, k + second.num_points))},
        flip_pairs=[*first.flip_pairs, *((a + k, b + k) for a, b in second.flip_pairs)],
        norm_points=first.norm_points, norm_name=first.norm_name,
        edges=[*first.edges, *((a + k, b + k) for a, b in second.edges)],
    )


class MixedDataset(Dataset):
    """A fully labelled dataset (repeated ``main_repeat`` times) plus partly labelled faces.

    Items carry the main layout's ``target`` and a ``mask`` (1 for main faces, 0 for
    the others), and ``aux_target`` / ``aux_mask`` in the auxiliary layout (the
    other way round), so one batch can hold both; ``aux_matrix`` ``(K_aux, K)``
    maps the model's K points to the auxiliary ones (``kpcore.data.facts.five_point_matrix``).
    ``index`` is the position in this dataset.

    With ``pseudo`` (machine-made main-layout labels for the auxiliary faces,
    :func:`kpcore.data.datasets.load_pseudo_labels`), an auxiliary face's ``target``
    is its pseudo-label, moved by the same crop and augmentation as its true points,
    and its ``mask`` is ``pseudo_weight`` times the face's own weight (0 where it has
    none); its true points stay the ``aux_target``. The main faces' labels are untouched.
    """

    def __init__(self, main: KeypointDataset, aux: KeypointDataset, aux_matrix: np.ndarray,
                 main_repeat: int = 1, aux_offset: np.ndarray | None = None,
                 pseudo: PseudoLabels | None = None, pseudo_weight: float = 1.0) -> None:
        if main.spec.size != aux.spec.size:
            raise ConfigError("the main and the auxiliary dataset must share one input spec")
        self.main, self.aux, self.main_repeat = main, aux, int(main_repeat)
        # (K_aux, 2) convention offsets in units of the aux norm distance, in the face frame
        self.aux_offset = None if aux_offset is None else np.asarray(aux_offset, dtype=np.float64)
        self.aux_matrix = torch.as_tensor(aux_matrix, dtype=torch.float32)
        self.k, self.k_aux = main.facts.num_points, aux.facts.num_points
        self.pseudo_mask = None
        if pseudo is not None:
            if pseudo.points.shape[:2] != (len(aux), self.k):
                raise ConfigError(f"pseudo-labels {pseudo.path}: shape {pseudo.points.shape[:2]} does not match "
                                  f"the {len(aux)} auxiliary faces x {self.k} points")
            if pseudo_weight < 0:
                raise ConfigError(f"pseudo_weight = {pseudo_weight!r} must be >= 0")
            # the aux points first (their norm points stay ids 0 and 1), the pseudo-labels after
            stacked = [np.concatenate([s.points, p]) for s, p in zip(aux.samples, pseudo.points, strict=True)]
            self.aux = aux.with_points(stacked, stack_facts(aux.facts, main.facts))
            self.pseudo_mask = torch.as_tensor(pseudo.weight * pseudo_weight, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.main) * self.main_repeat + len(self.aux)

    def __getitem__(self, index: int) -> dict:
        n_main = len(self.main) * self.main_repeat
        if index < n_main:
            item = self.main[index % len(self.main)]
            item["mask"] = torch.ones(self.k)
            item["aux_target"] = torch.zeros(self.k_aux, 2)
            item["aux_mask"] = torch.zeros(self.k_aux)
        else:
            i = index - n_main
            item = self.aux[i]
            points, target = item["points"][:self.k_aux], item["target"][:self.k_aux]
            if self.aux_offset is not None:
                target = torch.from_numpy(self._to_main_convention(points.numpy()))
            item["aux_target"], item["aux_mask"] = target, torch.ones(self.k_aux)
            if self.pseudo_mask is None:
                item["target"], item["points"] = torch.zeros(self.k, 2), torch.zeros(self.k, 2)
                item["mask"] = torch.zeros(self.k)
            else:
                item["target"], item["points"] = item["target"][self.k_aux:], item["points"][self.k_aux:]
                item["mask"] = self.pseudo_mask[i].expand(self.k).clone()
        item["index"] = index
        return item

    def _to_main_convention(self, points: np.ndarray) -> np.ndarray:
        """Aux points (input pixels) moved by the measured offsets, as normalised coordinates."""
        a, b = self.aux.facts.norm_points  # the aux layout's own ids (first in a stacked layout)
        ex = points[b] - points[a]
        dist = float(np.linalg.norm(ex)) or 1.0
        ex = ex / dist
        ey = np.array([-ex[1], ex[0]])
        # a flipped face keeps the layout's point order, so the frame's x axis still runs a -> b
        moved = points + dist * (self.aux_offset[:, :1] * ex + self.aux_offset[:, 1:] * ey)
        return geo.normalize_points(moved, self.aux.spec.size).astype(np.float32)
