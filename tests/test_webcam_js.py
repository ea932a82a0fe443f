"""The Webcam tab's JavaScript tracker (webapp/static/webcam/tracker.mjs) against kpcore's Python rules.

The browser runs its own copy of the tracking rules (kpcore/live/track.py), the
One Euro smoothing (kpcore/live/smoothing.py), the crop geometry and BlazeFace's
decoding (kpcore/live/detect.py). This test makes them one set of rules: it
exports fixtures computed here by kpcore's public functions (the shipped
checkpoint's maps, the real BlazeFace network on photos, the real
:class:`~kpcore.live.track.Tracker` driven by a scripted fake model) and runs
``node --test webapp/static/webcam/tracker.test.mjs`` on them, which checks that
the JavaScript gives the same outputs (points within 1e-3 px, same ids, same
detector runs). Needs Node.js >= 18 (``node``); skipped with a hint without it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
JS_TEST = REPO / "webapp" / "static" / "webcam" / "tracker.test.mjs"
LANDMARKS = REPO / "checkpoints" / "face68-300w"
EXAMPLES = REPO / "webapp" / "examples"
GARBAGE_SCALE = 0.05
"""The fake model's answer for a crop with no face in it: a tiny face at the crop's centre."""
PULL = 0.03
"""The fake model's points follow the crop's centre by this fraction of its offset from the face."""


# ------------------------------------------------------------------ the fake model, as tracker.test.mjs has it
def template(k: int = 68) -> np.ndarray:
    """A fixed face-like ``(k, 2)`` shape (an ellipse and an inner ring), centred, RMS radius ~0.5."""
    a = np.linspace(0, 2 * np.pi, k // 2, endpoint=False)
    outer = np.stack([0.6 * np.cos(a), 0.75 * np.sin(a) + 0.05 * np.cos(3 * a)], 1)
    inner = np.stack([0.25 * np.cos(a + 0.3), 0.2 * np.sin(a + 0.3) - 0.1], 1)
    return np.concatenate([outer, inner])


def fake_points(region, truth: list[dict], shape: np.ndarray) -> np.ndarray:
    """What the fake landmark model "sees" in ``region``: the nearest true face, pulled a little
    towards the crop's centre; a tiny face at the centre when no face is within half the crop."""
    rc = np.array([region[0] + region[2] / 2, region[1] + region[3] / 2])
    best, dist = None, np.inf
    for face in truth:
        d = float(np.hypot(face["cx"] - rc[0], face["cy"] - rc[1]))
        if d < dist:
            best, dist = face, d
    if best is None or dist > region[2] / 2:
        return rc + GARBAGE_SCALE * region[2] * shape
    centre = np.array([best["cx"], best["cy"]])
    return centre + PULL * (rc - centre) + best["s"] * shape


class FakePredictor:
    """Just what :class:`kpcore.live.track.Tracker` uses of a Predictor, with a scripted model and detector."""

    def __init__(self, config: dict) -> None:
        from kpcore.data.inputs import InputSpec

        self.config = config
        self.spec = InputSpec.from_dict(config["input"])
        self.name = "fake"
        self.shape = template(config["num_keypoints"])
        self.truth: list[dict] = []
        self.detections: list[tuple[float, float, float, float]] = []

    def region_for(self, box, image_size):
        return self.spec.crop_box(box, image_size)

    def detector_region(self, det_box, image_size):
        from kpcore.live.calibrate import box_to_region

        return box_to_region(det_box, self.config["detector_box_map"])

    def predict_regions(self, images, regions):
        return np.stack([fake_points(r, self.truth, self.shape) for r in regions])

    def detector(self):
        boxes = self.detections
        return SimpleNamespace(detect=lambda frame, min_score=None: [
            SimpleNamespace(box=b, area=b[2] * b[3], score=0.9) for b in boxes])


def script(frames: int = 125) -> list[dict]:
    """Frames of a scripted scene: face A drifts and pulses, jumps a little at 25 (lost, found again with its
    id) and far at 45 (a new id), vanishes at 80; face B appears at 50 (the detector misses it from 95 on,
    so the next scheduled detection drops it); the clock stalls once (equal times)."""
    out = []
    for i in range(frames):
        faces, seen = [], []
        if i < 80:
            jump = (60.0 if i >= 25 else 0.0) - (130.0 if i >= 45 else 0.0)  # lost: kept id, then a new id
            step = 53.0 if i >= 12 else 0.0  # a shift of ~0.32 crop: kept (LOST_SHIFT is 0.35)
            a = {"cx": 220 + 1.5 * i + jump, "cy": 240 + 10 * np.sin(i / 9) + step, "s": 80 + 6 * np.sin(i / 7)}
            faces.append(a)
            seen.append(True)
        if i >= 50:
            # at 100 it shrinks to 0.66 of its crop in one frame: kept (LOST_SCALE starts at 0.6)
            faces.append({"cx": 500 - 0.8 * (i - 50), "cy": 200.0, "s": 55.0 if i < 100 else 36.0})
            seen.append(i < 95)
        t = (i if i != 61 else 60) / 30 + 0.004 * np.sin(i)
        detections = [(f["cx"] - 0.65 * f["s"], f["cy"] - 0.9 * f["s"], 1.3 * f["s"], 1.75 * f["s"])
                      for f, ok in zip(faces, seen, strict=True) if ok]
        out.append({"t": float(t), "truth": [{k: float(v) for k, v in f.items()} for f in faces],
                    "detections": [[float(v) for v in b] for b in detections]})
    return out


def trace(config: dict, frames: list[dict], **options) -> list[dict]:
    from kpcore.live.track import Tracker

    fake = FakePredictor(config)
    tracker = Tracker(fake, **options)
    out = []
    for f in frames:
        fake.truth, fake.detections = f["truth"], [tuple(b) for b in f["detections"]]
        faces, ran = tracker.update(np.zeros((480, 640, 3), np.uint8), f["t"])
        out.append({"detectorRan": bool(ran), "faces": [
            {"id": x.id, "points": np.asarray(x.points, np.float64).tolist(),
             "region": [float(v) for v in x.region], "detected": bool(x.detected)} for x in faces]})
    return out


# ------------------------------------------------------------------ fixtures
def fixtures() -> dict:
    from kpcore.data import geometry as geo
    from kpcore.live.calibrate import box_to_region
    from kpcore.live.detect import BlazeFaceDetector, letterbox, map_box, weighted_nms
    from kpcore.live.smoothing import FaceFilter
    from kpcore.live.track import Tracker

    rng = np.random.default_rng(17)
    config = json.loads((LANDMARKS / "config.json").read_text())
    size = (config["input"]["width"], config["input"]["height"])
    shape = template(config["num_keypoints"])
    no_map = {k: v for k, v in config.items() if k not in ("points_box_map", "detector_box_map")}

    geometry = []
    for _ in range(12):
        points = rng.uniform(50, 400, 2) + rng.uniform(20, 150) * shape + rng.normal(0, 2, shape.shape)
        box = (*rng.uniform(-30, 500, 2), *rng.uniform(20, 300, 2))
        region = (*rng.uniform(-50, 500, 2), *rng.uniform(40, 400, 2))
        coords = rng.uniform(-1.1, 1.1, (len(shape), 2))
        geometry.append({
            "points": points.tolist(), "box": [float(v) for v in box], "region": [float(v) for v in region],
            "coords": coords.ravel().tolist(),
            "region_from_points": list(Tracker(FakePredictor(config)).region_from_points(points)),
            "region_from_points_no_map": list(Tracker(FakePredictor(no_map)).region_from_points(points)),
            "detector_region": list(box_to_region(box, config["detector_box_map"])),
            "decoded": geo.uncrop(coords, geo.crop_matrix(region, size), size).tolist()})

    detector = BlazeFaceDetector()
    from kpcore.data.imageio import load_image

    photos = sorted(p for p in EXAMPLES.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:3]
    images = [load_image(p) for p in photos] + [np.full((480, 640, 3), 90, np.uint8)]  # the last: no face
    variant = detector.config["variants"][detector.variant]
    blaze = []
    for image in images:
        h, w = image.shape[:2]
        square, (left, top, sx, sy) = letterbox(image, detector.input_size)
        rows, logits = detector.run(square)
        faces = detector.detect(image)
        to_retina = detector.config["to_retinaface"]
        blaze.append({
            "width": w, "height": h, "rows": rows.astype(np.float64).ravel().tolist(),
            "logits": logits.astype(np.float64).tolist(), "letterbox": [left, top, sx, sy],
            "faces": [{"box": list(f.box), "score": f.score} for f in faces],
            "mapped": [list(map_box(f.box, to_retina, (w, h))) for f in faces]})
    assert sum(len(b["faces"]) for b in blaze) >= 1, "BlazeFace found no face on the example photos"
    boxes = rng.uniform(0, 100, (30, 2))
    boxes = np.concatenate([boxes, boxes + rng.uniform(10, 40, (30, 2))], 1)
    scores = rng.uniform(0.5, 1.0, 30)
    nms = [{"box": b.tolist(), "score": s} for b, s, _ in weighted_nms(boxes, scores, np.zeros((30, 1, 2)), 0.3)]

    smooth_in, times = [], []
    base = 200 + 60 * shape
    for i in range(40):
        times.append(i / 30 if i != 20 else 19 / 30)  # one repeated time: the last output again
        angle = 0.01 * i
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        smooth_in.append((base @ rot.T + [3 * i, np.sin(i)] + rng.normal(0, 1.5, base.shape)).tolist())
    face_filter = FaceFilter()
    smooth_out = [face_filter(np.array(p), t, scale=150.0).tolist() for p, t in zip(smooth_in, times, strict=True)]

    frames = script()
    return {
        "model": {"config": config},
        "anchors": {"size": detector.input_size, "layers": variant["anchors"],
                    "expected": detector.anchors.astype(np.float64).ravel().tolist()},
        "letterbox": [{"size": [w, h], "expected": list(letterbox(np.zeros((h, w, 3), np.uint8), 128)[1])}
                      for w, h in ((640, 480), (480, 640), (1280, 720), (333, 500), (128, 128))],
        "geometry": geometry,
        "blazeface": {"input_size": detector.input_size, "threshold": detector.score_threshold,
                      "nms_iou": detector.nms_iou, "to_retinaface": detector.config["to_retinaface"],
                      "cases": blaze},
        "weighted_nms": {"boxes": boxes.tolist(), "scores": scores.tolist(), "iou": 0.3, "expected": nms},
        "smoothing": {"points": smooth_in, "times": times, "scale": 150.0, "expected": smooth_out},
        "tracker": {
            "shape": shape.tolist(), "garbage_scale": GARBAGE_SCALE, "pull": PULL, "frames": frames,
            "runs": [{"options": {"detectEvery": 30}, "expected": trace(config, frames)},
                     {"options": {"detectEvery": 7, "smooth": False, "maxFaces": 1},
                      "expected": trace(config, frames, detect_every=7, smooth=False, max_faces=1)}]},
    }


def test_the_scripted_scene_takes_every_branch_of_the_tracking_rules() -> None:
    """The fixture's scene is worth replaying: a face lost and found again with its id, one found far away
    (a new id), a new face picked up by the scheduled detection, a face gone, a face the detector drops."""
    config = json.loads((LANDMARKS / "config.json").read_text())
    run = trace(config, script())
    ids = [[f["id"] for f in r["faces"]] for r in run]
    ran = [r["detectorRan"] for r in run]
    assert ids[0] == [0] and ran[0] and not ran[1] and ids[24] == [0]
    assert not ran[12] and not ran[100], "the steps just under the lost thresholds must be followed"
    assert ran[25] and ids[25] == [0], "the small jump: lost, found again on the same frame, same id"
    assert ran[45] and ids[45] == [1], "the far jump: a new id"
    assert [1, 2] in ids, "face B was never picked up"
    assert ran[80] and ids[80] == [2], "face A vanished: its track must go"
    assert ids[-1] == [], "face B, missed by the detector from frame 95, was not dropped"


def test_the_javascript_tracker_gives_the_python_tracker_s_outputs(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not found: install Node.js >= 18 (e.g. apt-get install nodejs) to check the webcam's "
                    "JavaScript tracker against kpcore's Python tracker")
    path = tmp_path / "tracker_fixtures.json"
    path.write_text(json.dumps(fixtures()))
    result = subprocess.run([node, "--test", str(JS_TEST)], capture_output=True, text=True, timeout=120,
                            env={"PATH": str(Path(node).parent), "KPCORE_TRACKER_FIXTURES": str(path)})
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-4000:]
    assert "# skipped 0" in report and "# fail 0" in report, report[-2000:]


@pytest.mark.slow
def test_the_page_tracks_a_face_from_a_fake_camera_in_headless_chromium(tmp_path: Path) -> None:
    """The whole path as served: app.py, the Webcam tab's iframe, the camera, onnxruntime-web, points drawn.
    Not a speed test (this machine is shared): scripts/webcam_fps.py browser-tracker measures the rate.
    Every request takes 400 ms more, as on a slow link: the Start button must wait for the page's script
    (a click before it loaded did nothing; CI once timed out so, and this test fails so on that page)."""
    import sys

    pytest.importorskip("playwright")
    if not Path("/usr/bin/chromium").is_file():
        pytest.skip("no /usr/bin/chromium: install Debian's chromium to run the browser test")
    sys.path.insert(0, str(REPO / "scripts"))
    import webcam_fps

    clip = tmp_path / "face.y4m"
    webcam_fps.write_y4m(clip, webcam_fps.clip_frames(webcam_fps.default_photo(), seconds=2))
    proc, url = webcam_fps.serve(tmp_path / "server.log")
    try:
        result = webcam_fps.measure_tracker_page(url, clip, seconds=3, screenshot=tmp_path / "tab.png",
                                                 latency_ms=400)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert result["drawn_fps"] >= 3, result  # frames drawn, one after the other
    assert result["frames_with_a_face"] >= 0.9 and result["detector_frames"] >= 1, result
    assert result["delay_ms_median"] is not None and result["landmarks_ms_median"] > 0, result
