"""``Predictor``: a trained checkpoint as a function from images to keypoints.

    from kpcore import Predictor
    p = Predictor.from_pretrained("checkpoints/face68-300w")    # or a Hub repo id "user/repo"
    pts = p.predict_crop("face.jpg", box=(left, top, width, height))   # (K, 2) image pixels
    faces = p.predict("group.jpg")                                     # detect faces, then points

Every prediction is made on the crop the model was trained on (the same
:class:`~kpcore.data.inputs.InputSpec` and crop matrix) and mapped back to
original-image pixels with the inverse of that matrix.

With an ONNX file in the checkpoint (:mod:`kpcore.live.onnx_runtime`) nothing here
imports PyTorch: the network runs in onnxruntime, and the PyTorch module
(``Predictor.model``) is built only when something asks for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data import geometry as geo
from ..data.facts import FACTS, DatasetFacts
from ..data.inputs import InputSpec, region_array

if TYPE_CHECKING:
    import torch

DEFAULT_BATCH = 32
DEFAULT_MODEL = "face68-300w"
"""What ``Predictor()`` loads: the default 68-point model (packaged in the wheel, so it works offline)."""


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


#: Confidence of a face whose mirror-image prediction disagrees with it by this much
#: (RMS over points, as a fraction of the predicted inter-ocular distance) is 1/e;
#: the value is the field's failure threshold (NME 0.08), so the scale reads like NME.
CONFIDENCE_SCALE = 0.08


def unflip(mirrored, perm: np.ndarray):
    """A prediction made on the mirrored input, brought back to the original's frame and ids.

    In normalised coordinates a mirror is ``u_x -> -u_x`` (exact for the
    ``x -> W - 1 - x`` pixel flip); left/right ids are swapped back with ``perm``.
    Takes and returns a ``(B, K, 2)`` torch tensor or numpy array.
    """
    if isinstance(mirrored, np.ndarray):
        return mirrored[:, perm] * np.array([-1, 1], mirrored.dtype)
    import torch

    mirrored = mirrored[:, torch.as_tensor(perm, device=mirrored.device)]
    return torch.stack([-mirrored[..., 0], mirrored[..., 1]], dim=-1)


def mirror(batch):
    """The ``(B, C, H, W)`` batch (torch or numpy) flipped left to right."""
    if isinstance(batch, np.ndarray):
        return np.ascontiguousarray(batch[..., ::-1])
    return batch.flip(-1)


def _float32(t):
    return t.astype(np.float32, copy=False) if isinstance(t, np.ndarray) else t.float()


def _numpy(t) -> np.ndarray:
    return t if isinstance(t, np.ndarray) else t.numpy()


def flip_average(model, x, perm: np.ndarray):
    """Test-time flip: average the prediction on ``x`` and the un-flipped one on its mirror."""
    return (model(x) + unflip(model(mirror(x)), perm)) / 2


def confidence_from_flip(pred: np.ndarray, mirrored: np.ndarray, input_size: tuple[int, int],
                         facts: DatasetFacts) -> tuple[np.ndarray, np.ndarray]:
    """Per-face and per-point confidence in [0, 1] from flip disagreement.

    A model that has really found a point finds it again in the mirror image; where
    it guesses, the two answers part. The disagreement ``d_k`` of each point is
    measured in input pixels and divided by the predicted inter-ocular distance (the
    layout's ``norm_points``; for a one-point layout, a quarter of the input width),
    so it reads like NME. Point confidence is ``exp(-d_k / CONFIDENCE_SCALE)``; face
    confidence is ``exp(-rms_k(d_k) / CONFIDENCE_SCALE)``. On helen/testset the
    face value's Spearman correlation with the per-face NME was -0.56 for the
    ResNet18 heatmap model (the heatmap's own peak probability: -0.07).

    Args:
        pred, mirrored: ``(B, K, 2)`` normalised coordinates from the input and from
            its mirror (already un-flipped, see :func:`unflip`).
        input_size: ``(W, H)`` of the model input.
        facts: The layout (for ``norm_points``).
    """
    half = np.array(input_size, dtype=np.float64) / 2
    p, m = pred * half, mirrored * half
    d = np.linalg.norm(p - m, axis=-1)
    a, b = facts.norm_points
    if a != b:
        iod = np.linalg.norm((p[:, a] + m[:, a]) / 2 - (p[:, b] + m[:, b]) / 2, axis=-1)
    else:
        iod = np.full(len(p), input_size[0] / 4)
    rel = d / np.maximum(iod, 1e-6)[:, None]
    face = np.exp(-np.sqrt((rel ** 2).mean(axis=1)) / CONFIDENCE_SCALE)
    return face.astype(np.float32), np.exp(-rel / CONFIDENCE_SCALE).astype(np.float32)


class Predictor:
    """A loaded checkpoint with its input recipe.

    Attributes:
        model: The network, in eval mode.
        config: The checkpoint's ``config.json``.
        spec: How images become inputs.
        facts: The keypoint layout (points, skeleton, flip pairs).
        flip_test: Average with the mirrored prediction (slower, usually more accurate).
    """

    def __init__(self, model: torch.nn.Module | None = None, config: dict | None = None, folder: Path | None = None,
                 flip_test: bool = False, threads: int | None = None, backend: str | None = None) -> None:
        if model is None and folder is None and config is None:  # Predictor(): the default model
            from ..models.hub import resolve_model_dir

            folder = resolve_model_dir(DEFAULT_MODEL)
        if (model is None and folder is None) or (config is None and folder is None):
            raise ValueError("Predictor needs a model and its config, or the checkpoint folder to build it from")
        if config is None:
            from ..models.checkpoint import read_config

            config = read_config(folder)
        self._model = model.eval() if model is not None else None
        self.config = config
        self.folder = folder
        self.spec = InputSpec.from_dict(config["input"])
        self.facts: DatasetFacts = FACTS[config["layout"]]
        self.flip_test = flip_test
        self.threads = threads
        # "auto": the folder's model.onnx in onnxruntime when it is current (kpcore.live.onnx_runtime)
        self.backend = backend
        self._onnx = None
        self._detector = None

    @classmethod
    def from_pretrained(cls, folder_or_repo_id: str | Path = DEFAULT_MODEL, flip_test: bool = False,
                        threads: int | None = None, backend: str | None = None) -> Predictor:
        """Load a checkpoint folder, a name under ``checkpoints/``, or a Hub repo id.

        ``backend``: ``"auto"`` (default, or ``$KPCORE_BACKEND``) runs the folder's
        ``model.onnx`` in onnxruntime when it was exported from these weights (its
        int8 form ``model.int8.onnx`` when that measured within 0.1 NME points of it),
        ``"torch"`` always PyTorch, ``"onnx"`` requires the float32 ONNX file,
        ``"int8"`` the int8 one (:mod:`kpcore.live.onnx_runtime`).
        """
        from ..models.hub import resolve_model_dir

        # a folder, a name ($KPCORE_CHECKPOINTS, checkpoints/, the model packaged in the wheel) or a Hub id;
        # a folder needs config.json and ONNX files or model.safetensors (kpcore.live.onnx_runtime says which runs)
        return cls.from_folder(resolve_model_dir(folder_or_repo_id), flip_test=flip_test, threads=threads,
                               backend=backend)

    @classmethod
    def from_folder(cls, folder: str | Path, flip_test: bool = False, threads: int | None = None,
                    backend: str | None = None) -> Predictor:
        """:meth:`from_pretrained` for a folder already resolved and checked (by
        :func:`kpcore.models.hub.resolve_model_dir`): a batch worker loads its model this way,
        without importing the Hub client (a quarter of a second of each worker's start)."""
        from ..models.checkpoint import read_config

        folder = Path(folder)
        config = read_config(folder)
        pred = cls(None, config, folder, flip_test=flip_test, threads=threads, backend=backend)
        if pred.onnx_model is None:
            _ = pred.model  # PyTorch runs it: build it now, so that a bad checkpoint fails here
        return pred

    @property
    def model(self) -> torch.nn.Module:
        """The PyTorch network, in eval mode (built from the checkpoint on first use)."""
        if self._model is None:
            from ..models.checkpoint import load_checkpoint

            self._model = load_checkpoint(self.folder)[0].eval()
        return self._model

    @property
    def onnx_model(self):
        """The onnxruntime model that runs the network, or None when PyTorch does (loaded once)."""
        if self._onnx is None:
            from .onnx_runtime import load_for_checkpoint

            self._onnx = load_for_checkpoint(self.folder, self.backend, self.threads) or False
        return self._onnx or None

    @property
    def backend_name(self) -> str:
        """What runs the network: ``"pytorch"``, ``"onnxruntime"`` or ``"onnxruntime int8"``."""
        return self.onnx_model.label if self.onnx_model is not None else "pytorch"

    @property
    def name(self) -> str:
        return self.folder.name if self.folder else self.config["model"]["name"]

    # ------------------------------------------------------------ low level
    def run_model(self, batch):
        """One plain forward pass: ``(B, K, 2)`` normalised coordinates (no flip-test).

        ``batch`` is a normalised ``(B, C, H, W)`` float32 torch tensor (the result is
        a tensor) or numpy array (the result is a float32 array). With onnxruntime a
        numpy batch never touches PyTorch: its thread pool would compete with
        onnxruntime's for the same cores.
        """
        if isinstance(batch, np.ndarray) and self.onnx_model is not None:
            return self.onnx_model(batch)
        import torch

        if isinstance(batch, np.ndarray):
            return self.run_model(torch.from_numpy(batch)).float().numpy()
        if self.onnx_model is not None:
            return torch.from_numpy(self.onnx_model(batch.numpy()))
        if self.threads:
            torch.set_num_threads(self.threads)
        with torch.no_grad():
            return self.model(batch)

    def forward_normalized(self, batch):
        """Model output ``(B, K, 2)`` in [-1, 1] for a normalised input batch (torch or numpy)."""
        if self.flip_test:
            return flip_average(self.run_model, batch, self.facts.flip_permutation)
        return self.run_model(batch)

    def forward_with_confidence(self, batch):
        """``(coords (B, K, 2), face confidence (B,), point confidence (B, K))``.

        Runs the model once on the batch stacked with its mirror image (the flip-test average is
        returned when ``flip_test`` is on, else the plain prediction) and turns their
        disagreement into confidences with :func:`confidence_from_flip`. ``coords``
        has the batch's type (torch tensor or numpy array).
        """
        n = len(batch)
        if isinstance(batch, np.ndarray):  # one call for both halves: one session run, one thread-pool wake-up
            both = _float32(self.run_model(np.concatenate([batch, mirror(batch)])))
        else:
            import torch

            both = _float32(self.run_model(torch.cat([batch, mirror(batch)])))
        out = both[:n]
        mirrored = unflip(both[n:], self.facts.flip_permutation)
        coords = (out + mirrored) / 2 if self.flip_test else out
        face, point = confidence_from_flip(_numpy(out), _numpy(mirrored), self.spec.size, self.facts)
        return coords, face, point

    def region_for(self, box: Sequence[float] | None, image_size: tuple[int, int]) -> tuple[float, ...]:
        """The image region that fills the input for a face box (as in training)."""
        return self.spec.crop_box(box, image_size)

    def load_image(self, image) -> np.ndarray:
        """Any accepted image form -> RGB uint8, EXIF orientation applied (clear errors on bad input)."""
        from ..data.imageio import load_image

        return load_image(image)

    # -------------------------------------------------------------- crops
    def predict_crop(self, image, box: Sequence[float] | None = None, with_confidence: bool = False):
        """Points ``(K, 2)`` in image pixels for the face in ``box`` = (left, top, width, height).

        ``image`` is a path, PIL image, bytes or RGB array. ``box=None`` uses the
        whole image (what IMM-style models expect). With ``with_confidence``, returns
        ``(points, confidence, point_confidence)`` (see :func:`confidence_from_flip`).
        """
        out = self.predict_crops(self.load_image(image), [box], with_confidence=with_confidence)
        return (out[0][0], float(out[1][0]), out[2][0]) if with_confidence else out[0]

    def predict_crops(self, images, boxes: Sequence[Sequence[float] | None],
                      batch_size: int = DEFAULT_BATCH, with_confidence: bool = False):
        """Batched form: ``(N, K, 2)`` for N boxes on one image (an array) or on N images (a list).

        With ``with_confidence``: ``(points (N, K, 2), confidence (N,), point_confidence (N, K))``.
        """
        if isinstance(images, np.ndarray) or not isinstance(images, (list, tuple)):
            images = [images] * len(boxes)
        if len(images) != len(boxes):
            raise ValueError(f"got {len(images)} images for {len(boxes)} boxes; pass one box per image")
        arrays = [img if isinstance(img, np.ndarray) else self.load_image(img) for img in images]
        regions = [self.region_for(b, (a.shape[1], a.shape[0])) for a, b in zip(arrays, boxes, strict=True)]
        return self.predict_regions(arrays, regions, batch_size, with_confidence=with_confidence)

    def predict_regions(self, images: Sequence[np.ndarray], regions: Sequence[Sequence[float]],
                        batch_size: int = DEFAULT_BATCH, with_confidence: bool = False):
        """``(N, K, 2)`` points for exact input regions (left, top, width, height) of RGB arrays
        (plus confidences, as in :meth:`predict_crops`, with ``with_confidence``)."""
        out, faces, points = [], [], []
        for start in range(0, len(regions), batch_size):
            xs, ms = [], []
            for arr, region in zip(images[start:start + batch_size], regions[start:start + batch_size],
                                   strict=True):
                x, m, _ = region_array(arr, region, self.spec)
                xs.append(x)
                ms.append(m)
            if with_confidence:
                coords, face, point = self.forward_with_confidence(np.stack(xs))
                faces.append(face)
                points.append(point)
            else:
                coords = self.forward_normalized(np.stack(xs))
            coords = np.asarray(coords, np.float32)
            out += [geo.uncrop(c, m, self.spec.size) for c, m in zip(coords, ms, strict=True)]
        k = self.facts.num_points
        pts = np.stack(out).astype(np.float32) if out else np.zeros((0, k, 2), np.float32)
        if not with_confidence:
            return pts
        if not out:
            return pts, np.zeros(0, np.float32), np.zeros((0, k), np.float32)
        return pts, np.concatenate(faces), np.concatenate(points)

    # --------------------------------------------------------------- photos
    def detector(self):
        if self._detector is None:
            from .detect import get_detector

            self._detector = get_detector()
        return self._detector

    def detector_region(self, det_box: Sequence[float], image_size: tuple[int, int]) -> tuple[float, ...]:
        """The input region for a detector box.

        Uses the checkpoint's ``detector_box_map`` (fitted by ``kpcore calibrate``,
        :mod:`kpcore.live.calibrate`); without one, the detector box is treated as
        the training face box.
        """
        from .calibrate import box_to_region

        box_map = self.config.get("detector_box_map")
        if box_map is None:
            return self.region_for(det_box, image_size)
        return box_to_region(det_box, box_map)

    def predict(self, image, min_score: float | None = None, whole_image_if_no_face: bool = False,
                refine: bool = False, confidence: bool = True) -> list[FacePrediction]:
        """Find every face in a photo and predict its points.

        Args:
            image: Path, bytes, PIL image or RGB array (EXIF orientation is applied).
            min_score: Detector score threshold (default: the detector's).
            whole_image_if_no_face: Use the whole image when no face is found.
            refine: A second pass, re-cropped around the first prediction
                (needs ``points_box_map`` from ``kpcore calibrate``).
            confidence: Fill ``confidence`` and ``point_confidence`` (one more model
                pass per face, on the mirror image).

        Raises:
            NoFaceFoundError: no face was found (and ``whole_image_if_no_face`` is False).
        """
        from ..data.imageio import load_image_with_info
        from ..errors import NoFaceFoundError

        arr, info = _ready_array(image)
        if arr is None:
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
        if refine and "points_box_map" in self.config:
            from .calibrate import box_to_region

            pts = self.predict_regions([arr] * len(crop_boxes), crop_boxes)
            crop_boxes = [box_to_region(geo.points_box(p), self.config["points_box_map"]) for p in pts]
        conf = point_conf = [None] * len(crop_boxes)
        if confidence:
            pts, conf, point_conf = self.predict_regions([arr] * len(crop_boxes), crop_boxes, with_confidence=True)
        else:
            pts = self.predict_regions([arr] * len(crop_boxes), crop_boxes)
        faces = [FacePrediction(box=b, score=s, points=p, crop_box=cb,
                                confidence=None if c is None else float(c), point_confidence=pc)
                 for b, s, p, cb, c, pc in zip(boxes, scores, pts, crop_boxes, conf, point_conf, strict=True)]
        if self.facts.num_points == 68 and pts.shape[1] == 68:  # head pose from the 300-W layout (kpcore.live.pose)
            from .pose import estimate_pose

            for f in faces:
                f.pose = estimate_pose(f.points, (w, h))
        return [_to_source_pixels(f, info.out_size, info.size) for f in faces]


def _ready_array(image):
    """``(image, info)`` for an RGB uint8 array that needs no conversion (size within
    :mod:`kpcore.data.imageio`'s limits, no shrinking), else ``(None, None)``.

    A webcam frame or a decoded photo then goes to the detector as it is: the general
    loader's round trip through PIL copies it twice (~0.5 ms for 640x480).
    """
    from ..data import imageio

    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3 and image.flags.c_contiguous):
        return None, None
    h, w = image.shape[:2]
    if min(h, w) < imageio.DEFAULT_MIN_SIDE or max(h, w) > imageio.DEFAULT_MAX_SIDE \
            or h * w > imageio.DEFAULT_MAX_PIXELS:
        return None, None  # the loader refuses or shrinks it, with its own messages
    return image, imageio.ImageInfo(size=(w, h), out_size=(w, h), format=None, mode="array:uint8")


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
