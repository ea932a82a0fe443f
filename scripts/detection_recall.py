"""Face-detector recall on the 330 300-W helen/testset photos: found/330 for the two-pass default.

    KPCORE_DATA=../shared/data python scripts/detection_recall.py [--one-pass] [--threads 2]

A face counts as found when a detection matches its labelled box the way
``kpcore calibrate`` matches them (:func:`kpcore.live.calibrate.match_detection`:
IoU >= its threshold, or a detection that holds the labelled face's centre).
Besides the count, the script says on how many photos the cheap 320 px pass
was enough (the 640 px pass did not run) and lists every face missed. With
``--one-pass`` the 640 px single pass is measured on the same photos too,
for comparison. Nothing is written; the lead's ``kpcore bench --sections
speed`` records the same count in benchmarks/bench.json.
"""

from __future__ import annotations

import argparse
import time

from kpcore.data.datasets import load_split
from kpcore.data.loader import decode_rgb
from kpcore.live.calibrate import match_detection
from kpcore.live.detect import COARSE_CONFIRM, FaceDetector, _min_face_px

SUBSET = "helen/testset"
EXPECTED = 330


def coarse_was_enough(det: FaceDetector, image) -> bool:
    """Whether :meth:`FaceDetector.detect` stops after its 320 px pass on ``image`` (same rule)."""
    coarse = det.coarse_side
    if coarse is None or max(image.shape[:2]) <= coarse or (det.max_side is not None and coarse >= det.max_side):
        return False
    faces = det._detect_at(image, coarse, det.score_threshold)
    smallest = _min_face_px(image.shape[:2], coarse)
    return bool(faces) and min(min(f.box[2], f.box[3]) for f in faces) >= COARSE_CONFIRM * smallest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", help="folder holding ibug_300W_large_face_landmark_dataset/ (default $KPCORE_DATA)")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads (default 2)")
    ap.add_argument("--one-pass", action="store_true", help="also measure the single 640 px pass")
    args = ap.parse_args()

    samples = [s for s in load_split("ibug300w", "test", args.data_root) if s.image_id.startswith(SUBSET)]
    detectors = {"two-pass (320 px, then 640 px when needed)": FaceDetector(threads=args.threads)}
    if args.one_pass:
        detectors["one pass (640 px)"] = FaceDetector(threads=args.threads, coarse_side=None)
    found = {name: 0 for name in detectors}
    missed: dict[str, list[str]] = {name: [] for name in detectors}
    seconds = {name: 0.0 for name in detectors}
    coarse_only = 0
    two_pass = next(iter(detectors.values()))
    for s in samples:
        image = decode_rgb(s.image_path)
        for name, det in detectors.items():
            t0 = time.perf_counter()
            hit = match_detection(det, image, s)
            seconds[name] += time.perf_counter() - t0
            if hit is None:
                missed[name].append(s.image_id)
            else:
                found[name] += 1
        coarse_only += coarse_was_enough(two_pass, image)
    print(f"{SUBSET}: {len(samples)} labelled faces" + ("" if len(samples) == EXPECTED else
                                                       f" (expected {EXPECTED}: is the data complete?)"))
    for name in detectors:
        print(f"{name}: found {found[name]}/{len(samples)}, {1000 * seconds[name] / len(samples):.1f} ms per "
              f"photo (mean, photo sizes as they are)")
        for image_id in missed[name]:
            print(f"  missed: {image_id}")
    print(f"the 320 px pass alone was enough on {coarse_only}/{len(samples)} photos")
    return 0 if found[next(iter(detectors))] == len(samples) else 1


if __name__ == "__main__":
    raise SystemExit(main())
