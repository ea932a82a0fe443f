"""Grid search of ``kpcore track``'s smoothing (One Euro min_cutoff, beta of the face's motion): jitter and NME.

    KPCORE_DATA=../shared/data python scripts/tune_smoothing.py [--model face68-300w] [--threads 2]
        [--min-cutoffs 2,4,8,15] [--betas 30,100,300] [--d-cutoff 1.0] [--frames 150] [--still-frames 60]
        [--shape-min-cutoff 0.5 --shape-beta 10]

The tracker smooths with :class:`kpcore.live.smoothing.FaceFilter`: one One Euro
filter on the face's similarity pose (the grid's ``min_cutoff`` and ``beta``),
one on its shape in its own frame (``--shape-*``, fixed over the grid).

Two clips of the same helen/testset photo, both 640x480 with per-frame sensor
noise (:func:`kpcore.evaluation.bench.moving_clip`):

* **moving**: exactly the clip of ``kpcore bench --sections video`` (the face
  moves along a smooth path, turning and scaling): the issue's jitter and NME
  figures are measured on it;
* **still**: the face held at the moving clip's first pose, only the noise
  changes: what a filter is for (a face at rest should not shimmer).

Every setting runs the whole tracker (:func:`kpcore.live.track.track`, crops
following the smoothed points), so the filter's effect on the next crop is
included. Jitter and NME are :func:`kpcore.evaluation.bench.video_metrics` (in % of the
eye distance). The pick: among settings whose moving-clip NME is within
``--nme-slack`` (relative) of unsmoothed tracking and whose moving-clip jitter
is not above it, the lowest mean of moving and still jitter. The best setting
for the moving clip alone is printed as well. Nothing is written.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kpcore.data.datasets import load_split
from kpcore.data.imageio import load_image
from kpcore.evaluation.bench import CLIP_FPS, CLIP_NOISE, CLIP_SIZE, moving_clip, video_metrics
from kpcore.live.predict import Predictor
from kpcore.live.smoothing import SHAPE_PARAMS, OneEuroParams
from kpcore.live.track import DEFAULT_MODEL, track

DEFAULT_MIN_CUTOFFS = (2.0, 4.0, 8.0, 15.0)
DEFAULT_BETAS = (30.0, 100.0, 300.0)
NME_SLACK = 0.02
"""Accepted relative rise of the moving clip's NME over unsmoothed tracking (lag costs accuracy)."""
FACE_WIDTH = 200.0
"""Face width in the clips (moving_clip's default)."""


def still_clip(image: np.ndarray, points: np.ndarray, n_frames: int, size: tuple[int, int] = CLIP_SIZE,
               face_width: float = FACE_WIDTH, noise: float = CLIP_NOISE,
               seed: int = 1) -> tuple[list[np.ndarray], np.ndarray]:
    """The moving clip's first pose held still; every frame gets new Gaussian noise."""
    frames, truth = moving_clip(image, points, n_frames=1, size=size, face_width=face_width, noise=0.0)
    clean = frames[0].astype(np.float32)
    rng = np.random.default_rng(seed)
    out = [np.clip(clean + rng.normal(0, noise, clean.shape).astype(np.float32) + 0.5, 0, 255).astype(np.uint8)
           for _ in range(n_frames)]
    return out, np.repeat(truth, n_frames, axis=0)


def run(clip: list[np.ndarray], truth: np.ndarray, pred: Predictor, params: OneEuroParams | None,
        shape: OneEuroParams | None = None) -> dict:
    """Track ``clip`` (``params=None``: no smoothing); NME and jitter in % of the eye distance."""
    pts = [r.faces[0].points if r.faces else np.full((pred.facts.num_points, 2), np.nan)
           for r in track(clip, pred, smooth=params is not None, params=params, shape_params=shape,
                          fps=CLIP_FPS)]
    m = video_metrics(np.stack(pts), truth, pred.facts.norm_points)
    return {"nme": 100 * m["nme"], "jitter": 100 * m["jitter"], "missed": m["missed"]}


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint folder or name (default {DEFAULT_MODEL})")
    ap.add_argument("--data-root", help="folder holding ibug_300W_large_face_landmark_dataset/ (default $KPCORE_DATA)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for the model (default 2)")
    ap.add_argument("--min-cutoffs", type=_floats, default=DEFAULT_MIN_CUTOFFS, help="comma-separated, Hz")
    ap.add_argument("--betas", type=_floats, default=DEFAULT_BETAS, help="comma-separated")
    ap.add_argument("--d-cutoff", type=float, default=OneEuroParams.d_cutoff, help="speed cutoff, Hz")
    ap.add_argument("--shape-min-cutoff", type=float, default=SHAPE_PARAMS.min_cutoff, help="the shape's, Hz")
    ap.add_argument("--shape-beta", type=float, default=SHAPE_PARAMS.beta, help="the shape's beta")
    ap.add_argument("--frames", type=int, default=150, help="frames of the moving clip (bench: 150)")
    ap.add_argument("--still-frames", type=int, help="frames of the still clip (default: --frames)")
    ap.add_argument("--nme-slack", type=float, default=NME_SLACK, help="see the module docstring")
    args = ap.parse_args()

    sample = [s for s in load_split("ibug300w", "test", args.data_root) if s.image_id.startswith("helen/testset")][0]
    image = load_image(sample.image_path)
    clips = {"moving": moving_clip(image, sample.points, n_frames=args.frames),
             "still": still_clip(image, sample.points, n_frames=args.still_frames or args.frames)}
    pred = Predictor.from_pretrained(args.model, threads=args.threads)
    backend = "onnxruntime" if pred.onnx_model is not None else "pytorch"
    print(f"model {pred.name} ({pred.config['model']['name']}, {backend}), photo {sample.image_id}, "
          f"{args.frames} moving and {args.still_frames or args.frames} still frames at {CLIP_FPS:g} fps, "
          f"d_cutoff {args.d_cutoff:g} Hz; "
          f"shape filter min_cutoff {args.shape_min_cutoff:g} Hz, beta {args.shape_beta:g}; "
          f"NME and jitter in % of the eye distance", flush=True)
    t0 = time.perf_counter()
    raw = {name: run(*clip, pred, None) for name, clip in clips.items()}
    print(f"{'min_cutoff':>10} {'beta':>6}  {'moving NME':>10} {'moving jitter':>13}  {'still NME':>9} "
          f"{'still jitter':>12}  missed")
    print(f"{'no smoothing':>17}  {raw['moving']['nme']:10.3f} {raw['moving']['jitter']:13.3f}  "
          f"{raw['still']['nme']:9.3f} {raw['still']['jitter']:12.3f}  "
          f"{raw['moving']['missed'] + raw['still']['missed']}", flush=True)
    rows = []
    for mc in args.min_cutoffs:
        for beta in args.betas:
            params = OneEuroParams(min_cutoff=mc, beta=beta, d_cutoff=args.d_cutoff)
            shape = OneEuroParams(min_cutoff=args.shape_min_cutoff, beta=args.shape_beta, d_cutoff=args.d_cutoff)
            res = {name: run(*clip, pred, params, shape) for name, clip in clips.items()}
            rows.append((mc, beta, res))
            print(f"{mc:10g} {beta:6g}  {res['moving']['nme']:10.3f} {res['moving']['jitter']:13.3f}  "
                  f"{res['still']['nme']:9.3f} {res['still']['jitter']:12.3f}  "
                  f"{res['moving']['missed'] + res['still']['missed']}", flush=True)
    print(f"({len(rows) + 1} settings x 2 clips in {time.perf_counter() - t0:.0f} s)")

    def label(row) -> str:
        mc, beta, res = row
        return (f"min_cutoff={mc:g} beta={beta:g}: moving NME {res['moving']['nme']:.3f}% jitter "
                f"{res['moving']['jitter']:.3f}%, still jitter {res['still']['jitter']:.3f}%")

    clean = [r for r in rows if r[2]["moving"]["missed"] == 0 and r[2]["still"]["missed"] == 0]
    best_moving = min(clean, key=lambda r: r[2]["moving"]["jitter"], default=None)
    allowed = [r for r in clean if r[2]["moving"]["nme"] <= raw["moving"]["nme"] * (1 + args.nme_slack)
               and r[2]["moving"]["jitter"] <= raw["moving"]["jitter"]]
    pick = min(allowed, key=lambda r: r[2]["moving"]["jitter"] + r[2]["still"]["jitter"], default=None)
    if best_moving:
        print("lowest moving-clip jitter:", label(best_moving))
    if pick:
        print(f"pick (moving NME within {100 * args.nme_slack:g}% of unsmoothed, moving jitter not above it; "
              f"lowest mean of moving and still jitter):", label(pick))
    else:
        print("pick: none; no setting keeps NME and jitter of the moving clip at or below unsmoothed tracking")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
