"""``python -m kpcore evaluate MODEL --perturb blur,noise,...``: NME under image perturbations.

Each face of the split is first cut out with context (its box enlarged
:data:`CONTEXT` times, resized to :data:`PATCH` px square; whole-image tasks keep
the whole image), the perturbation is applied to that patch at a few strengths,
and the model predicts from the *unchanged* face box, as it would from a
detector's box. Geometric perturbations (``rotate``, ``scale``) move the true
points with the image through one matrix (:mod:`kpcore.data.geometry`), so the error
is measured against where the points really are. NME is scale-free, so it is
computed in patch pixels with the normalising distance scaled to match.

Writes ``<model>/eval/<split>/robustness.csv`` (or ``<out>/robustness.csv``) with
columns ``perturbation, strength, unit, nme, failure_rate, auc, n``; the clean
result is each curve's identity strength (blur 0, brightness 1, ...).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..console import progress_enabled
from ..data import geometry as geo
from ..models.checkpoint import atomic_write_text
from .metrics import auc, failure_rate, px_error

CONTEXT = 2.0  # patch side / face box side: room for rotation and zoom-out without black borders
PATCH = 256  # patch side in pixels (the 300-W model's input is 128 px for 1.3 box sides)
OCCLUDER_GRAY = 128
ROBUSTNESS_FILE = "robustness.csv"

Face = tuple[np.ndarray, np.ndarray, tuple[float, float, float, float] | None]
"""A perturbed face: RGB uint8 image, ``(K, 2)`` true points, face box (or None: whole image)."""


@dataclass(frozen=True)
class Perturbation:
    """One kind of perturbation and the strengths it is measured at.

    Attributes:
        apply: ``(image, points, box, face_side, strength, rng) -> (image, matrix)``; ``matrix`` is
            the 3x3 affine the image was warped by (identity for photometric changes).
        strengths: The strengths evaluated by default.
        identity: The strength that leaves the image unchanged (the clean point of the curve).
        unit: What a strength means, for axis titles.
    """

    apply: Callable[..., tuple[np.ndarray, np.ndarray]]
    strengths: tuple[float, ...]
    identity: float
    unit: str


def _centre(box, image: np.ndarray, points: np.ndarray) -> tuple[float, float]:
    if box is not None:
        return box[0] + box[2] / 2, box[1] + box[3] / 2
    b = geo.points_box(points)
    return b[0] + b[2] / 2, b[1] + b[3] / 2


def _warp_same(image: np.ndarray, m: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return geo.warp(image, m, (w, h), border_value=(0, 0, 0))


def blur(image, points, box, face_side, strength, rng):
    """Gaussian blur, sigma = ``strength`` % of the face side."""
    sigma = strength / 100 * face_side
    return cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0 else image, np.eye(3)


def noise(image, points, box, face_side, strength, rng):
    """Additive Gaussian noise of standard deviation ``strength`` grey levels (of 255)."""
    out = image.astype(np.float32) + rng.normal(0.0, strength, image.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8), np.eye(3)


def brightness(image, points, box, face_side, strength, rng):
    """All pixel values times ``strength`` (0.5 = half as bright), clipped."""
    return np.clip(image.astype(np.float32) * strength, 0, 255).astype(np.uint8), np.eye(3)


def scale(image, points, box, face_side, strength, rng):
    """The face zoomed by ``strength`` about the box centre; the box stays (a box too small / large)."""
    m = geo.rotation_matrix(_centre(box, image, points), 0.0, scale=strength)
    return _warp_same(image, m), m


def rotate(image, points, box, face_side, strength, rng):
    """The face turned ``strength`` degrees (counter-clockwise) about the box centre; the box stays."""
    m = geo.rotation_matrix(_centre(box, image, points), strength)
    return _warp_same(image, m), m


def occlude(image, points, box, face_side, strength, rng):
    """A grey square of side ``strength`` x the face side at a random place over the face."""
    side = strength * face_side
    cx, cy = _centre(box, image, points)
    half = face_side / 2
    x0 = cx - half + rng.uniform(0, max(face_side - side, 0))
    y0 = cy - half + rng.uniform(0, max(face_side - side, 0))
    out = image.copy()
    h, w = image.shape[:2]
    xa, ya = int(np.clip(round(x0), 0, w)), int(np.clip(round(y0), 0, h))
    xb, yb = int(np.clip(round(x0 + side), 0, w)), int(np.clip(round(y0 + side), 0, h))
    out[ya:yb, xa:xb] = OCCLUDER_GRAY
    return out, np.eye(3)


PERTURBATIONS: dict[str, Perturbation] = {
    "blur": Perturbation(blur, (1.0, 2.0, 4.0), 0.0, "σ, % of face side"),
    "noise": Perturbation(noise, (10.0, 25.0, 50.0), 0.0, "σ, grey levels of 255"),
    "brightness": Perturbation(brightness, (0.4, 0.7, 1.6), 1.0, "factor"),
    "scale": Perturbation(scale, (0.8, 0.9, 1.15, 1.3), 1.0, "zoom factor, box fixed"),
    "rotate": Perturbation(rotate, (15.0, 30.0, 45.0, 60.0), 0.0, "degrees"),
    "occlude": Perturbation(occlude, (0.2, 0.35, 0.5), 0.0, "square side / face side"),
}


def parse_perturb(text: str) -> list[str]:
    """``"blur,noise"`` -> ``["blur", "noise"]``; ``"all"`` -> every perturbation."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(PERTURBATIONS)
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown or not names:
        raise ValueError(f"--perturb {text!r}: unknown {unknown or 'empty'}; "
                         f"choose from {', '.join(PERTURBATIONS)} (comma-separated) or 'all'")
    return names


def perturb(name: str, image: np.ndarray, points: np.ndarray, box, strength: float,
            rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Apply perturbation ``name`` at ``strength`` to an RGB uint8 face.

    Returns the new image, the true points moved with it, and the factor by which
    lengths changed (to scale the normalising distance).
    """
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; choose from {', '.join(PERTURBATIONS)}")
    rng = rng or np.random.default_rng(0)
    face_side = max(box[2], box[3]) if box is not None else max(geo.points_box(points)[2:])
    out, m = PERTURBATIONS[name].apply(image, points, box, float(face_side), float(strength), rng)
    return out, geo.apply(m, points), float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))


def face_patch(image: np.ndarray, points: np.ndarray, box) -> Face:
    """The face with context: box enlarged :data:`CONTEXT` times, :data:`PATCH` px square
    (whole-image tasks: the image itself), with points and box in patch pixels."""
    if box is None:
        return image, np.asarray(points, np.float64), None
    region = geo.enlarge_box(box, CONTEXT, square=True)
    m = geo.crop_matrix(region, (PATCH, PATCH))
    patch = geo.warp(image, m, (PATCH, PATCH), border_value=(0, 0, 0))
    s = PATCH / region[2]
    patch_box = ((box[0] - region[0]) * s, (box[1] - region[1]) * s, box[2] * s, box[3] * s)
    return patch, geo.apply(m, points), patch_box


def evaluate_robustness(model: str | Path, perturbations: Sequence[str] | None = None, data_root=None,
                        split: str | None = None, out: str | Path | None = None, limit: int | None = None,
                        seed: int = 0, save: bool = True, predictor=None,
                        strengths: dict[str, Sequence[float]] | None = None) -> pd.DataFrame:
    """NME of ``model`` on its task's split under each perturbation and strength.

    Args:
        model: Checkpoint folder or Hub repo id.
        perturbations: Names from :data:`PERTURBATIONS` (default: all).
        split: Default: ``test`` if the task has one, else ``val``.
        out: Folder for ``robustness.csv`` (default ``<model>/eval/<split>/``).
        limit: Use only the first ``limit`` faces (for a quick look).
        seed: Seeds the noise and occluder placement (the same for every model).
        strengths: Per-perturbation strengths instead of the defaults.

    Returns:
        The table that was saved (one row per perturbation and strength, clean rows included).
    """
    from ..data.datasets import get_task, load_split
    from ..data.loader import decode_rgb
    from ..live.predict import Predictor

    predictor = predictor or Predictor.from_pretrained(model)
    task = get_task(predictor.config["task"])
    if split is None:
        split = "test" if "test" in task.splits else "val"
    if split not in task.splits:
        raise ValueError(f"task {task.name!r} has splits {list(task.splits)}; got --split {split!r}")
    names = list(perturbations) if perturbations else list(PERTURBATIONS)
    for n in names:
        if n not in PERTURBATIONS:
            raise ValueError(f"unknown perturbation {n!r}; choose from {', '.join(PERTURBATIONS)}")
    samples = load_split(task.name, split, data_root)[: limit or None]
    if not samples:
        raise ValueError(f"the {split} split of {task.name} is empty under the data root")
    faces, norms = [], []
    for s in tqdm(samples, desc="reading faces", disable=not progress_enabled(), leave=False):
        patch, pts, box = face_patch(decode_rgb(s.image_path), s.points, s.box)
        faces.append((patch, pts, box))
        norms.append(s.norm_distance * (PATCH / geo.enlarge_box(s.box, CONTEXT)[2] if s.box is not None else 1.0))
    norms = np.asarray(norms, np.float64)

    def run(name: str | None, strength: float) -> dict:
        images, trues, scales = [], [], []
        for i, (img, pts, box) in enumerate(faces):
            if name is None:
                images.append(img)
                trues.append(pts)
                scales.append(1.0)
            else:
                rng = np.random.default_rng([seed, i, int(round(strength * 1000))])
                im, p, k = perturb(name, img, pts, box, strength, rng)
                images.append(im)
                trues.append(p)
                scales.append(k)
        pred = predictor.predict_crops(images, [f[2] for f in faces])
        nme = px_error(pred, np.stack(trues)) / (norms * np.asarray(scales))
        return {"nme": float(nme.mean()), "failure_rate": failure_rate(nme), "auc": auc(nme), "n": len(nme)}

    started = time.monotonic()
    clean = run(None, 0.0)
    rows = []
    for name in tqdm(names, desc="perturbations", disable=not progress_enabled(), leave=False):
        p = PERTURBATIONS[name]
        rows.append({"perturbation": name, "strength": p.identity, "unit": p.unit, **clean})
        for strength in (strengths or {}).get(name, p.strengths):
            rows.append({"perturbation": name, "strength": float(strength), "unit": p.unit,
                         **run(name, float(strength))})
    table = pd.DataFrame(rows, columns=["perturbation", "strength", "unit", "nme", "failure_rate", "auc", "n"])
    table.attrs["seconds"] = time.monotonic() - started
    if save:
        folder = Path(out) if out else (predictor.folder / "eval" / split if predictor.folder else None)
        if folder is None:
            raise ValueError("the model has no folder to save next to; pass out=DIR")
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / ROBUSTNESS_FILE, table.to_csv(index=False, float_format="%.6g"))
        table.attrs["saved_to"] = str(folder / ROBUSTNESS_FILE)
    return table


def format_robustness(table: pd.DataFrame) -> str:
    """The table as the command line prints it: NME in %, one line per perturbation."""
    lines = []
    for name, rows in table.groupby("perturbation", sort=False):
        cells = ", ".join(f"{s:g}: {100 * v:.2f}%" for s, v in zip(rows["strength"], rows["nme"], strict=True))
        lines.append(f"  {name:>10} ({rows['unit'].iloc[0]}): {cells}")
    if "saved_to" in table.attrs:
        lines.append(f"  wrote {table.attrs['saved_to']}")
    return "\n".join(lines)
