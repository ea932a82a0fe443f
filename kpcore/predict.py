"""``Predictor``: a trained checkpoint as a function from images to keypoints.

    from kpcore import Predictor
    p = Predictor.from_pretrained("checkpoints/face68-300w")    # or a Hub repo id "user/repo"
    pts = p.predict_crop("face.jpg", box=(left, top, width, height))   # (K, 2) image pixels
    faces = p.predict("group.jpg")                                     # detect faces, then points

Every prediction is made on the crop the model was trained on (the same
:class:`~kpcore.data.loader.InputSpec` and crop matrix) and mapped back to
original-image pixels with the inverse of that matrix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import geometry as geo
from .data.loader import InputSpec, region_input
from .facts import FACTS, DatasetFacts

DEFAULT_BATCH = 32


@dataclass
class FacePrediction:
    """One detected face.

    Attributes:
        box: Detector box (left, top, width, height) in the photo's pixels.
        score: Detector score in [0, 1] (0 when the whole image was used).
        points: ``(K, 2)`` points in the photo's pixels.
        crop_box: The region that filled the model input.
        confidence: How far the model trusts this face's points, in [0, 1]
            (see :func:`confidence_from_uncertainty`); None if not computed.
        point_confidence: ``(K,)`` the same per point, or None.
        pose: Head pose ``{"yaw", "pitch", "roll"}`` in degrees, or None.
        extra: Anything else (free-form).
    """

    box: tuple[float, float, float, float]
    score: float
    points: np.ndarray
    crop_box: tuple[float, float, float, float] | None = None
    confidence: float | None = None
    point_confidence: np.ndarray | None = None
    pose: dict | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["points"] = np.round(np.asarray(self.points, float), 2).tolist()
        d["box"] = [round(float(v), 2) for v in self.box]
        d["crop_box"] = None if self.crop_box is None else [round(float(v), 2) for v in self.crop_box]
        d["confidence"] = None if self.confidence is None else round(float(self.confidence), 4)
        d["point_confidence"] = None if self.point_confidence is None else \
            np.round(np.asarray(self.point_confidence, float), 3).tolist()
        d["pose"] = None if self.pose is None else {k: round(float(v), 2) for k, v in self.pose.items()}
        return d


def flip_average(model: torch.nn.Module, x: torch.Tensor, perm: np.ndarray) -> torch.Tensor:
    """Test-time flip: average the prediction on ``x`` and the un-flipped one on its mirror.

    In normalised coordinates a mirror is ``u_x -> -u_x`` (exact for the
    ``x -> W - 1 - x`` pixel flip); left/right ids are swapped back with ``perm``.
    """
    out = model(x)
    mirrored = model(torch.flip(x, dims=[-1]))
    mirrored = mirrored[:, torch.as_tensor(perm, device=x.device)]
    mirrored = torch.stack([-mirrored[..., 0], mirrored[..., 1]], dim=-1)
    return (out + mirrored) / 2


class Predictor:
    """A loaded checkpoint with its input recipe.

    Attributes:
        model: The network, in eval mode.
        config: The checkpoint's ``config.json``.
        spec: How images become inputs.
        facts: The keypoint layout (points, skeleton, flip pairs).
        flip_test: Average with the mirrored prediction (slower, usually more accurate).
    """

    def __init__(self, model: torch.nn.Module, config: dict, folder: Path | None = None,
                 flip_test: bool = False, threads: int | None = None, backend: str | None = None) -> None:
        self.model = model.eval()
        self.config = config
        self.folder = folder
        self.spec = InputSpec.from_dict(config["input"])
        self.facts: DatasetFacts = FACTS[config["layout"]]
        self.flip_test = flip_test
        self.threads = threads
        # "auto": the folder's model.onnx in onnxruntime when it is current (kpcore.onnx_runtime)
        self.backend = backend
        self._onnx = None
        self._detector = None

    @classmethod
    def from_pretrained(cls, folder_or_repo_id: str | Path, flip_test: bool = False,
                        threads: int | None = None, backend: str | None = None) -> Predictor:
        """Load a checkpoint folder, a name under ``checkpoints/``, or a Hub repo id.

        ``backend``: ``"auto"`` (default, or ``$KPCORE_BACKEND``) runs the folder's
        ``model.onnx`` in onnxruntime when it was exported from these weights,
        ``"torch"`` always PyTorch, ``"onnx"`` requires the ONNX file.
        """
        from .checkpoint import load_checkpoint
        from .hub import resolve_model_dir

        folder = resolve_model_dir(folder_or_repo_id)
        model, config = load_checkpoint(folder)
        return cls(model, config, folder, flip_test=flip_test, threads=threads, backend=backend)

    @property
    def onnx_model(self):
        """The onnxruntime model that runs the network, or None when PyTorch does (loaded once)."""
        if self._onnx is None:
            from .onnx_runtime import load_for_checkpoint

            self._onnx = load_for_checkpoint(self.folder, self.backend, self.threads) or False
        return self._onnx or None

    def run_model(self, batch: torch.Tensor) -> torch.Tensor:
        """One plain forward pass: ``(B, K, 2)`` normalised coordinates (no flip-test)."""
        if self.onnx_model is not None:
            return torch.from_numpy(self.onnx_model(batch.numpy()))
        if self.threads:
            torch.set_num_threads(self.threads)
        return self.model(batch)

    @property
    def name(self) -> str:
        return self.folder.name if self.folder else self.config["model"]["name"]

    # ------------------------------------------------------------ low level
    @torch.no_grad()
    def forward_normalized(self, batch: torch.Tensor) -> torch.Tensor:
        """Model output ``(B, K, 2)`` in [-1, 1] for a normalised input batch."""
        if self.flip_test:
            return flip_average(self.run_model, batch, self.facts.flip_permutation)
        return self.run_model(batch)

    def region_for(self, box: Sequence[float] | None, image_size: tuple[int, int]) -> tuple[float, ...]:
        """The image region that fills the input for a face box (as in training)."""
        return self.spec.crop_box(box, image_size)

    def load_image(self, image) -> np.ndarray:
        """Any accepted image form -> RGB uint8, EXIF orientation applied (clear errors on bad input)."""
        from .imageio import load_image

        return load_image(image)

    # -------------------------------------------------------------- crops
    def predict_crop(self, image, box: Sequence[float] | None = None) -> np.ndarray:
        """Points ``(K, 2)`` in image pixels for the face in ``box`` = (left, top, width, height).

        ``image`` is a path, PIL image, bytes or RGB array. ``box=None`` uses the
        whole image (what IMM-style models expect).
        """
        return self.predict_crops(self.load_image(image), [box])[0]

    def predict_crops(self, images, boxes: Sequence[Sequence[float] | None],
                      batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Batched form: ``(N, K, 2)`` for N boxes on one image (an array) or on N images (a list)."""
        if isinstance(images, np.ndarray) or not isinstance(images, (list, tuple)):
            images = [images] * len(boxes)
        if len(images) != len(boxes):
            raise ValueError(f"got {len(images)} images for {len(boxes)} boxes; pass one box per image")
        arrays = [img if isinstance(img, np.ndarray) else self.load_image(img) for img in images]
        regions = [self.region_for(b, (a.shape[1], a.shape[0])) for a, b in zip(arrays, boxes, strict=True)]
        return self.predict_regions(arrays, regions, batch_size)

    def predict_regions(self, images: Sequence[np.ndarray], regions: Sequence[Sequence[float]],
                        batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """``(N, K, 2)`` points for exact input regions (left, top, width, height) of RGB arrays."""
        out = []
        for start in range(0, len(regions), batch_size):
            xs, ms = [], []
            for arr, region in zip(images[start:start + batch_size], regions[start:start + batch_size],
                                   strict=True):
                x, m, _ = region_input(arr, region, self.spec)
                xs.append(x)
                ms.append(m)
            coords = self.forward_normalized(torch.stack(xs)).float().numpy()
            out += [geo.uncrop(c, m, self.spec.size) for c, m in zip(coords, ms, strict=True)]
        return np.stack(out).astype(np.float32) if out else np.zeros((0, self.facts.num_points, 2), np.float32)

    # --------------------------------------------------------------- photos
    def detector(self):
        if self._detector is None:
            from .detect import get_detector

            self._detector = get_detector()
        return self._detector

    def detector_region(self, det_box: Sequence[float], image_size: tuple[int, int]) -> tuple[float, ...]:
        """The input region for a detector box.

        Uses the checkpoint's ``detector_box_map`` (fitted by ``kpcore calibrate``,
        :mod:`kpcore.calibrate`); without one, the detector box is treated as
        the training face box.
        """
        from .calibrate import box_to_region

        box_map = self.config.get("detector_box_map")
        if box_map is None:
            return self.region_for(det_box, image_size)
        return box_to_region(det_box, box_map)

    def predict(self, image, min_score: float | None = None, whole_image_if_no_face: bool = False,
                refine: bool = False) -> list[FacePrediction]:
        """Find every face in a photo and predict its points.

        Args:
            image: Path, bytes, PIL image or RGB array (EXIF orientation is applied).
            min_score: Detector score threshold (default: the detector's).
            whole_image_if_no_face: Use the whole image when no face is found.
            refine: A second pass, re-cropped around the first prediction
                (needs ``points_box_map`` from ``kpcore calibrate``).

        Raises:
            NoFaceFoundError: no face was found (and ``whole_image_if_no_face`` is False).
        """
        from .errors import NoFaceFoundError
        from .imageio import load_image_with_info

        arr, info = load_image_with_info(image)  # huge photos come back shrunk
        dets = self.detector().detect(arr, min_score)
        h, w = arr.shape[:2]
        if not dets:
            if not whole_image_if_no_face:
                raise NoFaceFoundError(
                    f"no face found in the {w}x{h} image; try a photo where the face is larger and frontal, "
                    f"or run on the whole image (whole_image_if_no_face=True)")
            boxes = [(0.0, 0.0, float(w), float(h))]
            scores = [0.0]
        else:
            boxes = [tuple(float(v) for v in d.box) for d in dets]
            scores = [float(d.score) for d in dets]
        if not dets:
            crop_boxes = [self.region_for(None, (w, h))]
        else:
            crop_boxes = [self.detector_region(b, (w, h)) for b in boxes]
        pts = self.predict_regions([arr] * len(crop_boxes), crop_boxes)
        if refine and "points_box_map" in self.config:
            from .calibrate import box_to_region

            crop_boxes = [box_to_region(geo.points_box(p), self.config["points_box_map"]) for p in pts]
            pts = self.predict_regions([arr] * len(crop_boxes), crop_boxes)
        faces = [FacePrediction(box=b, score=s, points=p, crop_box=cb) for b, s, p, cb in
                 zip(boxes, scores, pts, crop_boxes, strict=True)]
        return [_to_source_pixels(f, info.out_size, info.size) for f in faces]


def _to_source_pixels(face: FacePrediction, shown: tuple[int, int], source: tuple[int, int]) -> FacePrediction:
    """A face found on a shrunk copy, in the pixels of the image as given (boxes are edges, points centres)."""
    if shown == source:
        return face
    to_source = geo.invert(geo.crop_matrix((0, 0, *source), shown))
    sx, sy = source[0] / shown[0], source[1] / shown[1]

    def scale(box):
        return None if box is None else (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)

    return dataclasses.replace(face, box=scale(face.box), crop_box=scale(face.crop_box),
                               points=geo.apply(to_source, face.points).astype(np.float32))
