"""Face-detector recall on the 330 300-W helen/testset photos: found/330 for the default cascade.

    KPCORE_DATA=../shared/data python scripts/detection_recall.py [--threads 2] [--fit-box-map]

A face counts as found when a detection matches its labelled box the way
``kpcore calibrate`` matches them (:func:`kpcore.live.calibrate.match_detection`:
IoU >= its threshold, or a detection that holds the labelled face's centre).
Three detectors on the same photos: the default :class:`CascadeDetector`
(BlazeFace first, RetinaFace where BlazeFace cannot be trusted; the script says
on how many photos BlazeFace alone answered), BlazeFace alone, and RetinaFace's
two-pass detector alone; every missed face is listed.

``--fit-box-map`` first re-fits the cascade's ``to_retinaface`` box map
(:func:`kpcore.live.calibrate.fit_fast_box_map`, 400 faces spread over 300-W
train) and writes it into ``checkpoints/face-detector-blazeface/config.json``;
re-run ``kpcore calibrate`` on the landmark checkpoints afterwards. The lead's
``kpcore bench --sections speed`` records the cascade's count in
benchmarks/bench.json.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from kpcore.data.datasets import load_split
from kpcore.data.loader import decode_rgb
from kpcore.live.calibrate import fit_fast_box_map, match_detection
from kpcore.live.detect import BlazeFaceDetector, CascadeDetector, FaceDetector

SUBSET = "helen/testset"
EXPECTED = 330
FIT_SAMPLES = 400


def fit_box_map(data_root, threads: int) -> None:
    samples = load_split("ibug300w", "train", data_root)
    samples = [samples[i] for i in np.linspace(0, len(samples) - 1, FIT_SAMPLES).round().astype(int)]
    fast = BlazeFaceDetector()
    box_map = fit_fast_box_map(samples, fast, FaceDetector(threads=threads))
    box_map = {k: round(v, 5) if isinstance(v, float) else v for k, v in box_map.items()}
    box_map["fit_on"] = (f"ibug300w train ({FIT_SAMPLES} faces spread over the split, found by both), median, "
                         "scripts/detection_recall.py --fit-box-map")
    path = fast.model_dir / "config.json"
    config = json.loads(path.read_text())
    config["to_retinaface"] = box_map
    path.write_text(json.dumps(config, indent=2) + "\n")
    print(f"written to {path}: to_retinaface = {box_map}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", help="folder holding ibug_300W_large_face_landmark_dataset/ (default $KPCORE_DATA)")
    ap.add_argument("--threads", type=int, default=2, help="RetinaFace's onnxruntime threads (default 2)")
    ap.add_argument("--fit-box-map", action="store_true", help="re-fit BlazeFace's box map to RetinaFace's first")
    args = ap.parse_args()
    if args.fit_box_map:
        fit_box_map(args.data_root, args.threads)

    samples = [s for s in load_split("ibug300w", "test", args.data_root) if s.image_id.startswith(SUBSET)]
    retina = FaceDetector(threads=args.threads)
    cascade = CascadeDetector(slow=retina)
    detectors = {"cascade (default: BlazeFace, RetinaFace where needed)": cascade,
                 "BlazeFace short-range alone": cascade.fast,
                 "RetinaFace two-pass alone": retina}
    found = {name: 0 for name in detectors}
    missed: dict[str, list[str]] = {name: [] for name in detectors}
    seconds = {name: 0.0 for name in detectors}
    fast_only = 0
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
                fast_only += det is cascade and hit.detector == "blazeface"
    print(f"{SUBSET}: {len(samples)} labelled faces" + ("" if len(samples) == EXPECTED else
                                                       f" (expected {EXPECTED}: is the data complete?)"))
    for name in detectors:
        print(f"{name}: found {found[name]}/{len(samples)}, {1000 * seconds[name] / len(samples):.1f} ms per "
              f"photo (mean, photo sizes as they are)")
        for image_id in missed[name]:
            print(f"  missed: {image_id}")
    print(f"BlazeFace alone answered for the cascade on {fast_only}/{len(samples)} photos")
    return 0 if found[next(iter(detectors))] == len(samples) else 1


if __name__ == "__main__":
    raise SystemExit(main())
