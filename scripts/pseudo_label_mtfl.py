"""68-point pseudo-labels for MTFL's faces from teachers checked against the five true points.

    KPCORE_DATA=/path/to/data python scripts/pseudo_label_mtfl.py --out /work/pseudo/mtfl68 [--no-dlib]

Teachers (issue #18):

* the shipped 68-point model (``--model``, default ``checkpoints/face68-300w``) in
  PyTorch with test-time augmentation: the face crop at :data:`TTA_VARIANTS`
  (small shifts and scales of the crop, each also mirrored with left/right swapped),
  mapped back to the photo and averaged;
* dlib's 68-point predictor on the same boxes (optional: ``pip install dlib-bin``
  and Debian's ``libdlib-data``; ``--no-dlib`` leaves it out). dlib is a tool of
  this script only, never a dependency of kpcore.

Each teacher's 68 points are mapped to MTFL's five as the project's MTFL
evaluation does (eye centres = means of 36-41 and 42-47, nose 30, mouth corners
48 and 54; :func:`kpcore.data.facts.five_point_matrix`) and compared with the
face's five TRUE points: the agreement is that NME, over the true eye-centre
distance. The fused label averages the teachers with weights ``1 / agreement**2``;
dlib takes part only where its own agreement is under the keep threshold (it
loses turned heads). A face is kept when the fused label's agreement is under
``--keep`` (default :data:`KEEP_NME`); its training weight falls linearly from
1 at agreement 0 to :data:`MIN_WEIGHT` at the threshold.

``--check-300w`` first runs the same teachers and fusion on 300-W's validation
faces, where all 68 true points are known, and prints each one's 68-point NME:
what a pseudo-label is worth, measured.

Writes (never into the repository; labels are data, not code):

* ``OUT/labels.parquet``: one row per MTFL face (train and val splits; training
  reads only the train split's rows): ``image_id``, ``split``, ``pose`` (1-5),
  ``kept``, ``weight`` (0 where not kept), ``agree_model``, ``agree_dlib``,
  ``agree_fused`` (5-point NME, fraction of the eye-centre distance; NaN where a
  teacher did not run), ``points`` (136 floats: x0, y0, ..., x67, y67, original
  image pixels, 0-based) and ``teachers``.
* ``OUT/summary.json``: the settings, the kept share per pose class and split,
  the agreement quantiles, and the 300-W check if it ran.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from kpcore.data import geometry as geo
from kpcore.data.datasets import Sample, load_mtfl, load_split
from kpcore.data.facts import MTFL_FACTS, W300_FACTS, five_point_matrix
from kpcore.data.inputs import crop_input
from kpcore.data.loader import KeypointDataset

#: Test-time crops: (shift x, shift y as a fraction of the input size, scale of the crop).
TTA_VARIANTS = ((0.0, 0.0, 1.0), (0.03, 0.03, 1.0), (-0.03, -0.03, 1.0), (0.0, 0.0, 0.94), (0.0, 0.0, 1.06))
#: Keep a face when its fused label's five mapped points are within this NME of the truth.
KEEP_NME = 0.06
#: Training weight of a kept face at the threshold (1.0 at perfect agreement).
MIN_WEIGHT = 0.3
BATCH = 32  # faces per forward pass (each gives len(TTA_VARIANTS) x 2 crops)
EPS = 1e-3  # agreement floor in the fusion weights (0.1% of the eye distance)


def variant_matrix(spec_size: tuple[int, int], dx: float, dy: float, scale: float) -> np.ndarray:
    """3x3 input -> input map of one TTA crop: zoom by ``scale`` about the centre, then shift.

    ``scale > 1`` shows the face larger (a tighter crop); the shift is a fraction of the input size.
    """
    w, h = spec_size
    cx, cy = (w - 1) / 2, (h - 1) / 2
    return np.array([[scale, 0, cx - scale * cx + dx * w],
                     [0, scale, cy - scale * cy + dy * h],
                     [0, 0, 1]], dtype=np.float64)


def model_teacher(model_dir: str, samples: list[Sample], facts, variants=TTA_VARIANTS,
                  backend: str = "onnx") -> np.ndarray:
    """``(N, 68, 2)`` original-image points from the model, averaged over the TTA crops and their mirrors."""
    from tqdm.auto import tqdm

    from kpcore.live.predict import Predictor

    # float32 ONNX (exported from the same weights): ~180 crops/s here, PyTorch float32 ~15-40
    predictor = Predictor.from_pretrained(model_dir, flip_test=True, backend=backend)
    spec = predictor.spec
    ds = KeypointDataset(samples, facts, spec, None, cache=True, progress=True)  # facts: the samples' layout
    warps = [variant_matrix(spec.size, *v) for v in variants]
    out = np.zeros((len(samples), predictor.facts.num_points, 2), np.float64)
    for start in tqdm(range(0, len(samples), BATCH), desc="model teacher", leave=False):
        idx = range(start, min(start + BATCH, len(samples)))
        arrays, mats = [], []
        for i in idx:
            src, to_src = ds.source(i)
            base = ds.crop_matrix(i)
            for v in warps:
                m = v @ base
                arrays.append(spec.to_array(crop_input(src, m @ geo.invert(to_src), spec)))
                mats.append(m)
        coords = np.asarray(predictor.forward_normalized(np.stack(arrays)), np.float64)
        pts = np.stack([geo.uncrop(c, m, spec.size) for c, m in zip(coords, mats, strict=True)])
        out[start:start + len(idx)] = pts.reshape(len(idx), len(warps), -1, 2).mean(axis=1)
    return out


def dlib_teacher(samples: list[Sample]) -> np.ndarray:
    """``(N, 68, 2)`` points from dlib's predictor on the samples' boxes."""
    from tqdm.auto import tqdm

    from kpcore.data.inputs import decode_rgb
    from kpcore.evaluation.reference import DlibLandmarks

    dlib = DlibLandmarks()
    out = np.zeros((len(samples), 68, 2), np.float64)
    for i, s in enumerate(tqdm(samples, desc="dlib teacher", leave=False)):
        out[i] = dlib.predict_crops(decode_rgb(s.image_path), [s.box])[0]
    return out


def agreement(pred68: np.ndarray, true5: np.ndarray) -> np.ndarray:
    """NME ``(N,)`` of the five points mapped from ``pred68`` against ``true5``, over the true eye-centre distance."""
    mapped = np.einsum("ak,nkc->nac", five_point_matrix("ibug300w"), pred68)
    a, b = MTFL_FACTS.norm_points
    norm = np.linalg.norm(true5[:, a] - true5[:, b], axis=-1)
    return np.linalg.norm(mapped - true5, axis=-1).mean(axis=-1) / norm


def fuse(preds: list[np.ndarray], agrees: list[np.ndarray], keep: float) -> tuple[np.ndarray, np.ndarray]:
    """Average the teachers per face with weights ``1 / agreement**2``.

    A teacher whose own agreement is over ``keep`` is left out of that face, except the
    first (the model), which always takes part. Returns ``(points (N, 68, 2), weights (N, T))``.
    """
    w = np.stack([1.0 / np.maximum(a, EPS) ** 2 for a in agrees], axis=1)  # (N, T)
    w[:, 1:] *= np.stack([a < keep for a in agrees[1:]], axis=1)
    w /= w.sum(axis=1, keepdims=True)
    return np.einsum("nt,ntkc->nkc", w, np.stack(preds, axis=1)), w


def face_weight(agree: np.ndarray, keep: float) -> np.ndarray:
    """Training weight: 1 at agreement 0 down to :data:`MIN_WEIGHT` at ``keep``, 0 beyond."""
    w = 1.0 - (1.0 - MIN_WEIGHT) * np.clip(agree / keep, 0.0, 1.0)
    return np.where(agree < keep, w, 0.0)


def nme68(pred: np.ndarray, samples: list[Sample]) -> np.ndarray:
    """Per-face 68-point NME over each sample's own normalising distance (300-W: outer eye corners)."""
    truth = np.stack([s.points for s in samples])
    norm = np.array([s.norm_distance for s in samples])
    return np.linalg.norm(pred - truth, axis=-1).mean(axis=-1) / norm


def check_300w(model_dir: str, use_dlib: bool, keep: float) -> dict:
    """The teachers and the fusion on 300-W val, where the 68 true points are known."""
    samples = load_split("ibug300w", "val")
    truth = np.stack([s.points for s in samples]).astype(np.float64)
    true5 = np.einsum("ak,nkc->nac", five_point_matrix("ibug300w"), truth)
    preds = [model_teacher(model_dir, samples, W300_FACTS)]
    names = ["model_tta"]
    if use_dlib:
        preds.append(dlib_teacher(samples))
        names.append("dlib")
    agrees = [agreement(p, true5) for p in preds]
    fused, _ = fuse(preds, agrees, keep)
    agree_f = agreement(fused, true5)
    kept = agree_f < keep
    out = {"faces": len(samples), "nme68_mean": {}}
    for name, p in [*zip(names, preds, strict=True), ("fused", fused)]:
        out["nme68_mean"][name] = float(nme68(p, samples).mean())
    out["fused_kept_share"] = float(kept.mean())
    out["fused_nme68_kept"] = float(nme68(fused, samples)[kept].mean())
    return out


def summarise(pose: np.ndarray, split: np.ndarray, kept: np.ndarray, agree: np.ndarray) -> dict:
    names = MTFL_FACTS.extra["pose_names"]
    per_pose = {}
    for code, name in names.items():
        row = {}
        for sp in ("train", "val", "all"):
            sel = (pose == code) & ((split == sp) if sp != "all" else True)
            row[sp] = {"faces": int(sel.sum()), "kept": int(kept[sel].sum()),
                       "share": float(kept[sel].mean()) if sel.any() else None}
        row["median_agreement"] = float(np.median(agree[pose == code]))
        per_pose[name] = row
    return per_pose


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for labels.parquet and summary.json (outside the repo)")
    ap.add_argument("--model", default="checkpoints/face68-300w", help="the model teacher (checkpoint folder)")
    ap.add_argument("--no-dlib", action="store_true", help="leave dlib's predictor out")
    ap.add_argument("--keep", type=float, default=KEEP_NME, help="agreement threshold (fraction of eye distance)")
    ap.add_argument("--check-300w", action="store_true", help="first measure the teachers on 300-W val")
    ap.add_argument("--limit", type=int, default=0, help="only the first N MTFL faces (a quick try)")
    args = ap.parse_args(argv)

    import pyarrow as pa
    import pyarrow.parquet as pq

    from kpcore.evaluation.reference import DlibLandmarks

    if not 0 < args.keep < 1:
        raise SystemExit(f"--keep {args.keep} must be a fraction of the eye distance in (0, 1), e.g. 0.06")
    use_dlib = not args.no_dlib
    if use_dlib and not DlibLandmarks.available():
        raise SystemExit("dlib or its predictor file is missing: `pip install dlib-bin`, "
                         "`apt-get install libdlib-data`, or pass --no-dlib")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    summary: dict = {"model": args.model, "teachers": ["model_tta"] + (["dlib"] if use_dlib else []),
                     "tta_variants": [list(v) for v in TTA_VARIANTS], "keep_nme": args.keep,
                     "min_weight": MIN_WEIGHT, "agreement": "NME of the 5 points mapped from the 68 "
                     "(five_point_matrix) vs MTFL's true 5, over the true eye-centre distance"}
    if args.check_300w:
        summary["check_300w_val"] = check_300w(args.model, use_dlib, args.keep)
        print(json.dumps(summary["check_300w_val"], indent=1), flush=True)

    samples = load_mtfl("train") + load_mtfl("val")
    split = np.array(["train"] * len(load_mtfl("train")) + ["val"] * len(load_mtfl("val")))
    if args.limit:
        samples, split = samples[:args.limit], split[:args.limit]
    true5 = np.stack([s.points for s in samples]).astype(np.float64)
    pose = np.array([int(s.attributes["pose"]) for s in samples])
    preds = [model_teacher(args.model, samples, MTFL_FACTS)]
    t_model = time.time() - t0
    if use_dlib:
        preds.append(dlib_teacher(samples))
    agrees = [agreement(p, true5) for p in preds]
    fused, _ = fuse(preds, agrees, args.keep)
    agree_f = agreement(fused, true5)
    kept = agree_f < args.keep
    weight = face_weight(agree_f, args.keep)

    nan = np.full(len(samples), np.nan)
    table = pa.table({
        "image_id": [s.image_id for s in samples],
        "split": split.tolist(),
        "pose": pose.astype(np.int8),
        "kept": kept,
        "weight": weight.astype(np.float32),
        "agree_model": agrees[0].astype(np.float32),
        "agree_dlib": (agrees[1] if use_dlib else nan).astype(np.float32),
        "agree_fused": agree_f.astype(np.float32),
        "points": pa.array(list(fused.reshape(len(samples), -1).astype(np.float32)),
                           type=pa.list_(pa.float32(), 136)),
        "teachers": ["+".join(summary["teachers"])] * len(samples),
    })
    pq.write_table(table, out_dir / "labels.parquet")
    quant = [0.5, 0.9, 0.95, 0.99]
    summary.update({
        "faces": len(samples),
        "kept": int(kept.sum()), "kept_share": float(kept.mean()),
        "kept_share_train": float(kept[split == "train"].mean()),
        "agreement_quantiles": {name: dict(zip(map(str, quant), np.quantile(a, quant).round(4).tolist(),
                                               strict=True))
                                for name, a in zip([*summary["teachers"], "fused"], [*agrees, agree_f],
                                                   strict=True)},
        "per_pose": summarise(pose, split, kept, agree_f),
        "seconds": {"model_teacher": round(t_model, 1), "total": round(time.time() - t0, 1)},
    })
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: summary[k] for k in ("faces", "kept", "kept_share", "agreement_quantiles", "per_pose",
                                              "seconds")}, indent=1))


if __name__ == "__main__":
    main()
