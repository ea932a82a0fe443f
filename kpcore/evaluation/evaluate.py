"""``python -m kpcore evaluate MODEL``: the field's metrics on a split, saved for the dashboard.

Writes ``--out DIR``, or else ``<model>/eval/<split>/`` (docs/FORMATS.md):
``summary.json``, ``per_image.csv`` (with a ``confidence`` column for kpcore
models and a ``pose`` column on MTFL), ``ced.csv`` and overlay thumbnails of the
12 worst and 12 best images, so the dashboard can show them without the dataset.
``MODEL`` may also be ``dlib`` (its 68-point predictor on the same boxes, saved
under ``records/dlib/``), and ``--dataset mtfl`` measures a 68-point model on
MTFL's five points, per head pose.

The records of what ships (a model under ``checkpoints/`` or in the package, ``records/``)
and of a model in the Hugging Face cache are never replaced unless asked
(``overwrite``): the results then go to ``runs/eval/<model>/<split>/`` instead
(:func:`records_dir`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.stats import spearmanr
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..console import progress_enabled
from ..data import geometry as geo
from ..data.datasets import get_task, load_split
from ..data.loader import KeypointDataset, decode_rgb
from ..errors import DatasetNotFoundError
from ..live.predict import Predictor
from ..live.render import draw_keypoints
from ..models.checkpoint import atomic_write_text
from ..paths import CHECKPOINTS_DIR, RECORDS_DIR, RUNS_DIR
from .metrics import FAILURE_THRESHOLD, ced, failure_rate, px_error, summarize

N_THUMBS = 12
THUMB_SIDE = 256
BATCH = 32


def predict_dataset(predictor: Predictor, ds: KeypointDataset, batch_size: int = BATCH,
                    with_confidence: bool = False):
    """``(N, K, 2)`` predictions in original-image pixels for every sample of ``ds``
    (``ds.facts`` is the model's layout); with ``with_confidence``, ``(pred, confidence (N,))``."""
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    out = np.zeros((len(ds), ds.facts.num_points, 2), np.float32)
    conf = np.zeros(len(ds), np.float32)
    for batch in tqdm(loader, desc="predicting", disable=not progress_enabled(), leave=False):
        if with_confidence:
            coords, face, _ = predictor.forward_with_confidence(batch["image"])
            conf[batch["index"].numpy()] = face
        else:
            coords = predictor.forward_normalized(batch["image"])
        for i, c, m in zip(batch["index"].tolist(), coords.float().numpy(), batch["matrix"].numpy(), strict=True):
            out[i] = geo.uncrop(c, m, ds.spec.size)
    return (out, conf) if with_confidence else out


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


#: Failure threshold on MTFL's five points (NME over the eye-centre distance), as in
#: the MTFL/AFLW literature (TCDCN, Zhang et al. 2014).
MTFL_FAILURE_THRESHOLD = 0.10
#: Pseudo model names that evaluate a reference method instead of a checkpoint.
REFERENCES = ("dlib",)
REFERENCE_RECORDS = RECORDS_DIR


def is_shipped(folder: str | Path) -> bool:
    """Whether ``folder`` lies under what ships with kpcore (``checkpoints/``, ``records/``, the
    package) or in the Hugging Face cache: records there are not replaced without ``overwrite``."""
    from huggingface_hub import constants

    from .. import __file__ as package_init

    folder = Path(folder).resolve()
    roots = (CHECKPOINTS_DIR, RECORDS_DIR, Path(package_init).parent, Path(constants.HF_HUB_CACHE))
    return any(folder.is_relative_to(Path(root).resolve()) for root in roots)


def records_dir(model: str | Path, folder: Path | None, name: str, overwrite: bool = False) -> Path | None:
    """Where the results of ``name`` (a split) go when no ``out`` is given: ``<folder>/eval/<name>``,
    or ``runs/eval/<model>/<name>`` for a shipped or downloaded ``folder`` unless ``overwrite``."""
    if folder is None:
        return None
    if overwrite or not is_shipped(folder):
        return Path(folder) / "eval" / name
    from huggingface_hub import constants

    downloaded = Path(folder).resolve().is_relative_to(Path(constants.HF_HUB_CACHE).resolve())
    label = str(model).replace("/", "--") if downloaded else Path(folder).name  # a snapshot's name is a hash
    return RUNS_DIR / "eval" / label / name


def _reference(name: str):
    if name == "dlib":
        from .reference import DlibLandmarks

        return DlibLandmarks()
    raise ValueError(f"unknown reference {name!r}; known: {list(REFERENCES)}")


def _predict(predictor, samples, facts, spec, want_confidence: bool):
    """``(pred (N, K, 2), confidence (N,) or None)`` in original pixels."""
    if spec is None:  # a reference method (e.g. dlib): its own crops from the boxes
        images = [decode_rgb(s.image_path) for s in tqdm(samples, desc="reading images",
                                                           disable=not progress_enabled(), leave=False)]
        return np.asarray(predictor.predict_crops(images, [s.box for s in samples]), np.float32), None
    ds = KeypointDataset(samples, facts, spec, None, cache=True, progress=progress_enabled())
    return predict_dataset(predictor, ds, with_confidence=want_confidence)


def _pose_summary(per_nme: np.ndarray, poses: list[int], threshold: float) -> list[dict]:
    from ..data.facts import MTFL_FACTS

    names = MTFL_FACTS.extra["pose_names"]
    rows = []
    poses_arr = np.asarray(poses)
    for code, pose_name in names.items():
        sel = poses_arr == code
        if sel.any():
            rows.append({"pose": int(code), "name": pose_name, "n": int(sel.sum()),
                         "nme": float(per_nme[sel].mean()), "failure_rate": failure_rate(per_nme[sel], threshold)})
    return rows


def evaluate_model(model: str | Path, data_root=None, split: str | None = None, labels=None,
                   json_out: str | Path | None = None, flip_test: bool = False, save: bool = True,
                   predictor: Predictor | None = None, boxes: str = "dataset", dataset: str | None = None,
                   out: str | Path | None = None, overwrite: bool = False) -> dict:
    """Evaluate a checkpoint folder / Hub repo id (or ``"dlib"``) on a split.

    Args:
        model: Checkpoint folder, a name under ``checkpoints/``, a Hub repo id, or a
            reference method from :data:`REFERENCES` (``"dlib"``: its 68-point predictor
            on the same boxes; results saved under ``records/dlib/``).
        split: The split (default: ``test`` if the task has one, else ``val``).
        labels: Any XML of the 300-W form instead of the split.
        flip_test: Average with the prediction on the mirrored face.
        save: Write the result files (``out`` if given, else ``<model>/eval/<name>/``).
        boxes: ``dataset`` (the labels' boxes) or ``detector`` (calibrated detector boxes).
        dataset: Evaluate on another dataset's task: ``mtfl`` maps a 68-point model's
            points to MTFL's five (:func:`kpcore.data.facts.five_point_matrix`), normalises
            by the true eye-centre distance, counts failures at NME > 0.10 and adds the
            figures per head-pose class (``summary["by_pose"]``).
        out: Folder for the result files; nothing is then written into the model folder.
        overwrite: Replace the records of a shipped model (or of ``records/dlib``) when ``out`` is
            not given; without it they go to ``runs/eval/<model>/<split>/`` (:func:`records_dir`).

    Returns:
        The summary dict (``n, mean_px_error, nme, failure_rate, auc, mae, per_keypoint_*,
        per_image``; ``spearman_confidence`` where confidences exist; ``by_pose`` on MTFL;
        ``saved_to`` when files were written).
    """
    from ..data.facts import FACTS, five_point_matrix

    is_reference = predictor is None and str(model) in REFERENCES
    if is_reference:
        predictor, layout, own_task, spec, folder = _reference(str(model)), FACTS["ibug300w"], "ibug300w", None, \
            REFERENCE_RECORDS / str(model)
        if boxes != "dataset":
            raise ValueError(f"--boxes {boxes}: {model} is evaluated on the dataset's boxes only")
    else:
        predictor = predictor or Predictor.from_pretrained(model, flip_test=flip_test)
        layout, own_task, spec, folder = predictor.facts, predictor.config["task"], predictor.spec, \
            predictor.folder
    task = get_task(dataset or own_task)
    to_five = None
    if task.name != own_task:
        if task.layout != "mtfl":
            raise ValueError(f"--dataset {task.name}: a {own_task} model can be evaluated on its own task or on "
                             f"'mtfl' (five points mapped from the 68)")
        to_five = five_point_matrix(layout.name)
    if split is None:
        split = "test" if "test" in task.splits else "val"
    if labels is None and split not in task.splits:
        raise ValueError(f"--split {split}: the {task.name} task has splits {list(task.splits)}")
    samples = load_split(task.name, split, data_root, labels=labels)
    missed = 0
    if boxes == "detector":
        from ..live.calibrate import with_detector_boxes

        box_map = predictor.config.get("detector_box_map")
        if box_map is None:
            raise ValueError(f"{model}: no detector_box_map in config.json; run `python -m kpcore calibrate {model}`")
        samples, missed = with_detector_boxes(samples, spec, box_map, progress=progress_enabled())
    elif boxes != "dataset":
        raise ValueError(f"boxes = {boxes!r}: use 'dataset' (the labels' boxes) or 'detector'")
    pred_full, confidence = _predict(predictor, samples, layout, spec, want_confidence=not is_reference)
    pred = pred_full if to_five is None else np.einsum("ak,nkc->nac", to_five, pred_full).astype(np.float32)
    true = np.stack([s.points for s in samples])
    norm = np.array([s.norm_distance for s in samples])
    threshold = MTFL_FAILURE_THRESHOLD if task.layout == "mtfl" else FAILURE_THRESHOLD
    summary = summarize(pred, true, norm, threshold)
    per_px = px_error(pred, true)
    per_nme = per_px / norm
    columns = {"image": [s.image_id for s in samples], "nme": per_nme, "px_error": per_px}
    if confidence is not None:
        columns["confidence"] = confidence
        summary["spearman_confidence"] = float(spearmanr(confidence, per_nme).statistic)
    if task.layout == "mtfl":
        columns["pose"] = [s.attributes["pose"] for s in samples]
        summary["by_pose"] = _pose_summary(per_nme, columns["pose"], threshold)
    columns["pred"] = [json.dumps(np.round(p, 2).tolist()) for p in pred]
    columns["true"] = [json.dumps(np.round(s.points, 2).tolist()) for s in samples]
    frame = pd.DataFrame(columns)
    name = split_name(task, split, labels) + ("-detector" if boxes == "detector" else "")
    if task.name != own_task:
        name = f"{task.name}-{name}"
    if not is_reference:
        summary["backend"] = predictor.backend_name
    summary.update({"model": str(model), "task": task.name, "split": name, "flip_test": flip_test,
                    "boxes": boxes, "detector_missed": missed, "failure_threshold": threshold,
                    "layout": task.facts.name, "norm": task.facts.norm_name})
    summary["per_image"] = [{"image": r.image, "nme": float(r.nme), "px_error": float(r.px_error)}
                            for r in frame.itertuples()]
    target = Path(out) if out is not None else records_dir(model, folder, name, overwrite)
    if save and target is not None:
        into_model = folder is not None and target == Path(folder) / "eval" / name
        _save(target, predictor if not is_reference else None, summary, frame, samples, pred, task.facts,
              refresh_card=into_model and not is_reference)
        summary["saved_to"] = str(target)
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(summary, indent=2))
    return summary


def split_name(task, split: str, labels) -> str:
    """The name results are saved under: the split, or the stem of a ``--labels`` XML that is
    not the split's own file (so evaluating the official test XML by path is still ``test``)."""
    if labels is None:
        return split
    from ..data.datasets import W300_TEST_XML, W300_TRAIN_XML, dataset_dir

    try:
        folder = dataset_dir(task.dataset)
        own = {"test": folder / W300_TEST_XML, "train": folder / W300_TRAIN_XML}
        for name, xml in own.items():
            if xml.exists() and Path(labels).resolve() == xml.resolve():
                return name
    except (KeyError, OSError, DatasetNotFoundError):
        pass
    return Path(labels).stem


def _save(out: Path, predictor, summary: dict, frame: pd.DataFrame, samples, pred, layout,
          refresh_card: bool) -> None:
    """Write summary.json, per_image.csv, ced.csv (and thumbnails when ``layout`` is given) into ``out``."""
    thumbs = out / "thumbs"
    if thumbs.exists():
        shutil.rmtree(thumbs)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.json", json.dumps({k: v for k, v in summary.items() if k != "per_image"},
                                                       indent=2))
    atomic_write_text(out / "per_image.csv", frame.to_csv(index=False))
    levels, frac = ced(frame["nme"].to_numpy(), summary.get("failure_threshold", FAILURE_THRESHOLD))
    atomic_write_text(out / "ced.csv", pd.DataFrame({"nme": levels, "fraction": frac}).to_csv(index=False))
    if refresh_card and predictor is not None and (predictor.folder / "README.md").exists():
        from ..models.export import refresh_model_card  # keep the model card's metrics current

        refresh_model_card(predictor.folder)
    if layout is None:
        return
    thumbs.mkdir(parents=True, exist_ok=True)
    order = np.argsort(frame["nme"].to_numpy())
    picks = [("worst", i, idx) for i, idx in enumerate(order[::-1][:N_THUMBS])] + \
            [("best", i, idx) for i, idx in enumerate(order[:N_THUMBS])]
    for kind, rank, idx in picks:
        s = samples[idx]
        safe = s.image_id.replace("/", "_").replace("#", "_")
        img = _thumbnail(s, pred[idx], layout)
        Image.fromarray(img).save(thumbs / f"{kind}_{rank:02d}_{Path(safe).stem}.jpg", quality=90)
