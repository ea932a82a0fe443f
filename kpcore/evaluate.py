"""``python -m kpcore evaluate MODEL``: the field's metrics on a split, saved next to the model.

Writes ``<model>/eval/<split>/`` (docs/FORMATS.md): ``summary.json``,
``per_image.csv``, ``ced.csv`` and overlay thumbnails of the 12 worst and 12
best images, so the dashboard can show them without the dataset.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import geometry as geo
from .checkpoint import atomic_write_text
from .console import progress_enabled
from .data.datasets import get_task, load_split
from .data.loader import KeypointDataset, decode_rgb
from .metrics import ced, px_error, summarize
from .predict import Predictor
from .render import draw_keypoints

N_THUMBS = 12
THUMB_SIDE = 256
BATCH = 32


def predict_dataset(predictor: Predictor, ds: KeypointDataset, batch_size: int = BATCH) -> np.ndarray:
    """``(N, K, 2)`` predictions in original-image pixels for every sample of ``ds``."""
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    out = np.zeros((len(ds), ds.facts.num_points, 2), np.float32)
    for batch in tqdm(loader, desc="predicting", disable=not progress_enabled(), leave=False):
        coords = predictor.forward_normalized(batch["image"]).float().numpy()
        for i, c, m in zip(batch["index"].tolist(), coords, batch["matrix"].numpy(), strict=True):
            out[i] = geo.uncrop(c, m, ds.spec.size)
    return out


def _thumbnail(sample, pred: np.ndarray, layout) -> np.ndarray:
    """The face region with predicted (red) and true (green) points, about THUMB_SIDE px."""
    image = decode_rgb(sample.image_path)
    pts = np.concatenate([pred, sample.points])
    box = geo.enlarge_box(geo.points_box(pts), 1.25) if sample.box is not None else \
        (0.0, 0.0, float(image.shape[1]), float(image.shape[0]))
    scale = THUMB_SIDE / max(box[2], box[3])
    size = (max(1, round(box[2] * scale)), max(1, round(box[3] * scale)))
    m = geo.crop_matrix(box, size)
    crop = geo.warp(image, m, size, border_value=(0, 0, 0))
    return draw_keypoints(crop, geo.apply(m, pred), layout=layout, true_points=geo.apply(m, sample.points))


def evaluate_model(model: str | Path, data_root=None, split: str | None = None, labels=None,
                   json_out: str | Path | None = None, flip_test: bool = False, save: bool = True,
                   predictor: Predictor | None = None, boxes: str = "dataset") -> dict:
    """Evaluate a checkpoint folder / Hub repo id on a split (or any 300-W-form XML via ``labels``).

    Returns the summary dict (``n, mean_px_error, nme, failure_rate, auc, mae,
    per_keypoint_*, per_image``).
    """
    predictor = predictor or Predictor.from_pretrained(model, flip_test=flip_test)
    task = get_task(predictor.config["task"])
    if split is None:
        split = "test" if "test" in task.splits else "val"
    samples = load_split(task.name, split, data_root, labels=labels)
    missed = 0
    if boxes == "detector":
        from .calibrate import with_detector_boxes

        box_map = predictor.config.get("detector_box_map")
        if box_map is None:
            raise ValueError(f"{model}: no detector_box_map in config.json; run `python -m kpcore calibrate {model}`")
        samples, missed = with_detector_boxes(samples, predictor.spec, box_map, progress=progress_enabled())
    elif boxes != "dataset":
        raise ValueError(f"boxes = {boxes!r}: use 'dataset' (the labels' boxes) or 'detector'")
    ds = KeypointDataset(samples, predictor.facts, predictor.spec, None, cache=True, progress=progress_enabled())
    pred = predict_dataset(predictor, ds)
    true = np.stack([s.points for s in samples])
    norm = np.array([s.norm_distance for s in samples])
    summary = summarize(pred, true, norm)
    per_px = px_error(pred, true)
    per_nme = per_px / norm
    frame = pd.DataFrame({
        "image": [s.image_id for s in samples], "nme": per_nme, "px_error": per_px,
        "pred": [json.dumps(np.round(p, 2).tolist()) for p in pred],
        "true": [json.dumps(np.round(s.points, 2).tolist()) for s in samples],
    })
    name = (Path(labels).stem if labels else split) + ("-detector" if boxes == "detector" else "")
    summary.update({"model": str(model), "task": task.name, "split": name, "flip_test": flip_test,
                    "boxes": boxes, "detector_missed": missed,
                    "layout": predictor.facts.name, "norm": predictor.facts.norm_name})
    summary["per_image"] = [{"image": r.image, "nme": float(r.nme), "px_error": float(r.px_error)}
                            for r in frame.itertuples()]
    if save and predictor.folder is not None:
        _save(predictor, summary, frame, samples, pred, name)
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(summary, indent=2))
    return summary


def _save(predictor: Predictor, summary: dict, frame: pd.DataFrame, samples, pred, name: str) -> None:
    out = predictor.folder / "eval" / name
    thumbs = out / "thumbs"
    if thumbs.exists():
        shutil.rmtree(thumbs)
    thumbs.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.json", json.dumps({k: v for k, v in summary.items() if k != "per_image"},
                                                       indent=2))
    atomic_write_text(out / "per_image.csv", frame.to_csv(index=False))
    levels, frac = ced(frame["nme"].to_numpy())
    atomic_write_text(out / "ced.csv", pd.DataFrame({"nme": levels, "fraction": frac}).to_csv(index=False))
    if (predictor.folder / "README.md").exists():  # keep the model card's metrics current
        from .export import refresh_model_card

        refresh_model_card(predictor.folder)
    order = np.argsort(frame["nme"].to_numpy())
    picks = [("worst", i, idx) for i, idx in enumerate(order[::-1][:N_THUMBS])] + \
            [("best", i, idx) for i, idx in enumerate(order[:N_THUMBS])]
    for kind, rank, idx in picks:
        s = samples[idx]
        safe = s.image_id.replace("/", "_").replace("#", "_")
        img = _thumbnail(s, pred[idx], predictor.facts)
        Image.fromarray(img).save(thumbs / f"{kind}_{rank:02d}_{Path(safe).stem}.jpg", quality=90)
