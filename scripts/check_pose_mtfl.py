"""Head pose (kpcore.live.pose) against the pose classes of MTFL's validation faces.

    KPCORE_DATA=/path/to/data python scripts/check_pose_mtfl.py [--model checkpoints/face68-300w]

MTFL labels each face with one of five pose classes: 1 left profile, 2 left,
3 frontal, 4 right, 5 right profile. The 68 points are predicted with the
dataset's own face box (``Predictor.predict_crops``, no detector) and turned
into a pose with :func:`kpcore.live.pose.estimate_pose`. Printed figures, and the
bars of issue #11:

* Spearman correlation of the class (1..5) with the yaw, its sign chosen by the
  data (which way MTFL's "left" points, also printed): >= 0.85. With 775 of
  1016 faces in class 3 the ties cap this per-face figure at 0.744 (a yaw
  that orders the classes perfectly), so two more are printed: that ceiling,
  and the Spearman over class-balanced draws (10 faces of each class);
* turned faces (classes 1, 2, 4, 5) whose yaw has the class's side: >= 97%;
* median |yaw| of frontal faces (class 3): <= 15 degrees;
* median |yaw| of profiles (classes 1 and 5): >= 40 degrees.

Measured (2026-12-02, all 1016 MTFL val faces, a pose for every one; the
default ``checkpoints/face68-300w`` (MobileNetV2, 300-W + MTFL) first, the
ResNet18 heatmap model (now ``face68-300w-resnet18``) in brackets):

=========================  ==================  ==========================
figure                     value               bar
=========================  ==================  ==========================
Spearman (per face)        0.7225 (0.7155)     >= 0.85: not met (ceiling 0.7441)
Spearman (class-balanced)  0.958 (0.9475)      >= 0.85
side of turned faces       100.0% (100.0%)     >= 97%
frontal median abs(yaw)    7.6 deg (7.8)       <= 15
profile median abs(yaw)    40.4 deg (37.9)     >= 40
=========================  ==================  ==========================

Default model (fine-tuned, commit 2abec44), median yaw per class 1..5: -40.7, -29.0, +0.2,
+25.1, +40.4.
ResNet18 model: -38.3, -27.5, +0.2, +25.7, +37.7 degrees, so MTFL's
"left" is the image's left (the face turned towards the picture's left edge, the
subject's own right; kpcore yaw < 0). The ResNet18 model's profiles fell short
because, trained on 300-W's near-frontal faces only, it pulls a profile's points
towards a frontal shape (the yaw is only as turned as the points are); the
default model, which also saw MTFL's turned faces, clears 40 degrees. The
per-face Spearman cannot reach 0.85 on this split: 775 of the 1016 faces share
the frontal class, so even a perfect ordering scores 0.744.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kpcore.live.pose import estimate_pose  # noqa: E402

MIN_SPEARMAN = 0.85
MIN_SIDE = 0.97
MAX_FRONTAL_MEDIAN = 15.0
MIN_PROFILE_MEDIAN = 40.0
FRONTAL, LEFT_CLASSES, RIGHT_CLASSES, PROFILES = 3, (1, 2), (4, 5), (1, 5)

BALANCED_PER_CLASS = 10  # the smallest class (left profile) has 10 faces
BALANCED_DRAWS = 1000


def measure(model: str, data_root: str | None = None, limit: int | None = None) -> dict:
    """Predict, estimate pose and compute the figures; returns them as a dict."""
    from scipy.stats import spearmanr

    from kpcore import Predictor
    from kpcore.data.datasets import load_split
    from kpcore.data.imageio import load_image

    samples = load_split("mtfl", "val", data_root)[:limit]
    predictor = Predictor.from_pretrained(model)
    start = time.perf_counter()
    images = [load_image(s.image_path, max_side=None) for s in samples]
    points = predictor.predict_crops(images, [s.box for s in samples])
    classes = np.array([int(s.attributes["pose"]) for s in samples])
    poses = [estimate_pose(p, (im.shape[1], im.shape[0])) for p, im in zip(points, images, strict=True)]
    ok = np.array([p is not None for p in poses])
    yaw = np.array([p["yaw"] if p else np.nan for p in poses])
    seconds = time.perf_counter() - start

    left, right = np.isin(classes, LEFT_CLASSES) & ok, np.isin(classes, RIGHT_CLASSES) & ok
    # Which way is MTFL's "left"? The sign of the left classes' median yaw says (kpcore: yaw > 0 = the
    # face turns towards the image's right, the subject's own left).
    left_sign = float(np.sign(np.median(yaw[left]))) or 1.0
    turned = left | right
    side_ok = (np.sign(yaw[left]) == left_sign).sum() + (np.sign(yaw[right]) == -left_sign).sum()
    # Order the classes by the yaw they should have: class 1 most to the "left" side.
    rho = spearmanr(-left_sign * classes[ok], yaw[ok]).statistic
    # 76% of the faces share class 3, and ties cap a per-face Spearman well below 1: even a yaw that
    # orders the classes perfectly gets only this much.
    rng = np.random.default_rng(0)
    perfect = classes[ok] + rng.uniform(0, 0.5, ok.sum())
    ceiling = spearmanr(classes[ok], perfect).statistic
    # The same correlation with every class equally represented (BALANCED_PER_CLASS faces each, redrawn).
    per_class = [np.where((classes == c) & ok)[0] for c in range(1, 6)]
    n = min(BALANCED_PER_CLASS, *(len(i) for i in per_class))
    balanced = [spearmanr(-left_sign * classes[sel], yaw[sel]).statistic for sel in
                (np.concatenate([rng.choice(i, n, replace=False) for i in per_class]) for _ in range(BALANCED_DRAWS))]
    return {
        "faces": int(len(samples)), "pose_found": int(ok.sum()),
        "per_class": {c: int((classes == c).sum()) for c in range(1, 6)},
        "median_yaw_per_class": {c: round(float(np.median(yaw[(classes == c) & ok])), 1)
                                 for c in range(1, 6) if ((classes == c) & ok).any()},
        "mtfl_left_is": "subject's own left (kpcore yaw > 0)" if left_sign > 0 else
                        "image left (the subject's right; kpcore yaw < 0)",
        "spearman": round(float(rho), 4),
        "spearman_ceiling": round(float(ceiling), 4),
        "spearman_balanced": round(float(np.mean(balanced)), 4),
        "side_correct": round(float(side_ok / max(1, turned.sum())), 4),
        "frontal_median_abs_yaw": round(float(np.median(np.abs(yaw[(classes == FRONTAL) & ok]))), 2),
        "profile_median_abs_yaw": round(float(np.median(np.abs(yaw[np.isin(classes, PROFILES) & ok]))), 2),
        "seconds": round(seconds, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="checkpoints/face68-300w")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--limit", type=int, default=None, help="only the first N faces (a quick look)")
    args = parser.parse_args()
    r = measure(args.model, args.data_root, args.limit)
    for key, value in r.items():
        print(f"{key:24s} {value}")
    checks = [("spearman", r["spearman"] >= MIN_SPEARMAN, f">= {MIN_SPEARMAN}"),
              ("spearman_balanced", r["spearman_balanced"] >= MIN_SPEARMAN, f">= {MIN_SPEARMAN}"),
              ("side_correct", r["side_correct"] >= MIN_SIDE, f">= {MIN_SIDE}"),
              ("frontal_median_abs_yaw", r["frontal_median_abs_yaw"] <= MAX_FRONTAL_MEDIAN,
               f"<= {MAX_FRONTAL_MEDIAN}"),
              ("profile_median_abs_yaw", r["profile_median_abs_yaw"] >= MIN_PROFILE_MEDIAN,
               f">= {MIN_PROFILE_MEDIAN}")]
    for name, passed, bar in checks:
        print(f"{'PASS' if passed else 'FAIL'} {name} {r[name]} (needs {bar})")
    return 0 if all(p for _, p, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
