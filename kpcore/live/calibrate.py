"""Make detector boxes match the crops a model was trained on.

300-W boxes came from a HOG detector (or the landmark extent); IMM models saw
the whole 640x480 frame. Our RetinaFace boxes sit elsewhere on the face, so a
model fed raw detector boxes sees a shifted, rescaled face. We learn, on the
training split, the median map from a detector box to the model's training
*region* (the crop that fills the input)::

    region centre = det centre + (dx * det_w, dy * det_h);  region size = (sw * det_w, sh * det_h)

and store it as ``detector_box_map`` in the checkpoint's ``config.json``, with
``points_box_map``, the same from the extent of the points to the region, which
the optional second pass of ``Predictor.predict(refine=True)`` uses to re-crop
around a first prediction.
:meth:`kpcore.live.predict.Predictor.predict` applies it; ``kpcore evaluate
--boxes detector`` measures what it costs against the dataset's own boxes.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..console import progress_enabled
from ..data import geometry as geo
from ..data.datasets import Sample, load_split
from ..data.inputs import InputSpec, decode_rgb

MIN_IOU = 0.3  # a detection must overlap the reference face this much to be "the same face"


def iou(a, b) -> float:
    """Intersection over union of two (left, top, width, height) boxes."""
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    ix = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    iy = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = ix * iy
    return inter / (aw * ah + bw * bh - inter) if inter > 0 else 0.0


def reference_box(sample: Sample) -> tuple[float, float, float, float]:
    """The face the dataset means: its box, or the landmarks' extent."""
    return sample.box if sample.box is not None else geo.points_box(sample.points)


def match_detection(detector, image: np.ndarray, sample: Sample):
    """The detection that is the sample's face (best IoU with its reference box), or None."""
    ref = reference_box(sample)
    faces = detector.detect(image)
    if not faces:
        return None
    best = max(faces, key=lambda f: iou(f.box, ref))
    # the landmark extent is smaller than a face box: accept a detection that holds its centre
    cx, cy = ref[0] + ref[2] / 2, ref[1] + ref[3] / 2
    left, top, w, h = best.box
    if iou(best.box, ref) >= MIN_IOU or (left <= cx <= left + w and top <= cy <= top + h):
        return best
    return None


def box_to_region(det_box, box_map: dict) -> tuple[float, float, float, float]:
    """Apply a fitted map to a detector box."""
    left, top, w, h = det_box
    cx = left + w / 2 + box_map["dx"] * w
    cy = top + h / 2 + box_map["dy"] * h
    rw, rh = box_map["sw"] * w, box_map["sh"] * h
    return cx - rw / 2, cy - rh / 2, rw, rh


def region_to_face_box(region, spec: InputSpec) -> tuple[float, float, float, float]:
    """The face box whose training crop (:meth:`InputSpec.crop_box`) is ``region`` (box mode)."""
    return geo.enlarge_box(region, 1.0 / spec.enlarge, square=False, aspect=spec.width / spec.height)


def fit_box_map(samples: list[Sample], spec: InputSpec, detector=None, progress: bool | None = None) -> dict:
    """Median map from detector boxes to training regions over ``samples``."""
    from .detect import get_detector

    detector = detector or get_detector()
    progress = progress_enabled() if progress is None else progress
    rows = []
    missed = 0
    for s in tqdm(samples, desc="detecting faces", disable=not progress, leave=False):
        image = decode_rgb(s.image_path)
        face = match_detection(detector, image, s)
        if face is None:
            missed += 1
            continue
        rows.append(_offsets(face.box, spec.crop_box(s.box, s.image_size)))
    if not rows:
        raise ValueError("the detector found none of the training faces; cannot fit a box map")
    return {**_median_map(rows), "n": len(rows), "missed": missed}


def fit_fast_box_map(samples: list[Sample], fast=None, slow=None, progress: bool | None = None) -> dict:
    """Median map from BlazeFace's boxes to RetinaFace's on the faces both find (the cascade's
    ``to_retinaface`` map, :class:`kpcore.live.detect.CascadeDetector`)."""
    from .detect import BlazeFaceDetector, FaceDetector

    fast = fast or BlazeFaceDetector()
    slow = slow or FaceDetector()
    progress = progress_enabled() if progress is None else progress
    rows = []
    for s in tqdm(samples, desc="detecting faces twice", disable=not progress, leave=False):
        image = decode_rgb(s.image_path)
        a, b = match_detection(fast, image, s), match_detection(slow, image, s)
        if a is not None and b is not None:
            rows.append(_offsets(a.box, b.box))
    if not rows:
        raise ValueError("no training face was found by both detectors; cannot fit the box map")
    return {**_median_map(rows), "n": len(rows)}


def fit_points_map(samples: list[Sample], spec: InputSpec) -> dict:
    """Median map from the points' extent to the training region (for a second, re-cropped pass)."""
    rows = [_offsets(geo.points_box(s.points), spec.crop_box(s.box, s.image_size)) for s in samples]
    return {**_median_map(rows), "n": len(rows)}


def _offsets(box, region) -> tuple[float, float, float, float]:
    left, top, w, h = box
    rl, rt, rw, rh = region
    return (rl + rw / 2 - (left + w / 2)) / w, (rt + rh / 2 - (top + h / 2)) / h, rw / w, rh / h


def _median_map(rows) -> dict:
    dx, dy, sw, sh = np.median(np.array(rows), axis=0)
    return {"dx": float(dx), "dy": float(dy), "sw": float(sw), "sh": float(sh)}


def calibrate_checkpoint(folder: str | Path, data_root=None, max_samples: int = 400, progress: bool | None = None) -> dict:
    """Fit the map on (up to ``max_samples`` of) the model's training split; write it to ``config.json``."""
    from ..models.checkpoint import CONFIG_FILE, read_config

    folder = Path(folder)
    cfg = read_config(folder)
    spec = InputSpec.from_dict(cfg["input"])
    samples = load_split(cfg["task"], "train", data_root)
    if len(samples) > max_samples:  # an even spread over the split, deterministic
        samples = [samples[i] for i in np.linspace(0, len(samples) - 1, max_samples).round().astype(int)]
    box_map = fit_box_map(samples, spec, progress=progress)
    box_map["fit_on"] = f"{cfg['task']} train ({box_map['n']} faces)"
    cfg["detector_box_map"] = box_map
    cfg["points_box_map"] = fit_points_map(load_split(cfg["task"], "train", data_root), spec)
    (folder / CONFIG_FILE).write_text(json.dumps(cfg, indent=2))
    return box_map


def with_detector_boxes(samples: list[Sample], spec: InputSpec, box_map: dict, detector=None,
                        progress: bool | None = None) -> tuple[list[Sample], int]:
    """Samples whose boxes are replaced by mapped detector boxes; faces not found keep their own box.

    Returns the samples and how many faces the detector missed.
    """
    from .detect import get_detector

    if spec.crop_mode != "box":
        raise ValueError("detector boxes apply to box-crop models (300-W); whole-image models read the frame")
    detector = detector or get_detector()
    progress = progress_enabled() if progress is None else progress
    out, missed = [], 0
    for s in tqdm(samples, desc="detecting faces", disable=not progress, leave=False):
        face = match_detection(detector, decode_rgb(s.image_path), s)
        if face is None:
            missed += 1
            out.append(s)
            continue
        out.append(replace(s, box=region_to_face_box(box_to_region(face.box, box_map), spec)))
    return out, missed
