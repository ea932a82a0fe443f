"""Video tracking: One Euro smoothing, the tracker's detect/follow logic, and `kpcore track` end to end."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import numpy as np
import pytest

from kpcore.data.loader import InputSpec
from kpcore.detect import Face
from kpcore.facts import FACTS
from kpcore.smoothing import OneEuroFilter, OneEuroParams
from kpcore.track import CSV_COLUMNS, Tracker, VideoWriter, read_frames

from .conftest import REPO, needs_300w

K = 68


# ---------------------------------------------------------------- One Euro filter
def test_one_euro_passes_a_constant_and_calms_noise_at_rest():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(OneEuroParams(min_cutoff=1.0, beta=0.0))
    x = np.full((K, 2), 50.0)
    assert np.allclose(f(x, 0.0), x)
    noisy = [x + rng.normal(0, 1, x.shape) for _ in range(300)]
    out = np.stack([f(n, (i + 1) / 30) for i, n in enumerate(noisy)])
    raw_step = np.diff(np.stack(noisy), axis=0).std()
    smooth_step = np.diff(out[50:], axis=0).std()
    assert smooth_step < raw_step / 3
    assert abs(out[50:].mean() - 50) < 0.2


def test_one_euro_speed_term_cuts_the_lag():
    t = np.arange(60) / 30
    ramp = 100 * t  # 100 px/s, in units of a 100 px face: 1 width per second
    lag = {}
    for beta in (0.0, 30.0):
        f = OneEuroFilter(OneEuroParams(min_cutoff=1.0, beta=beta))
        out = np.array([f(np.array([v]), ti, scale=100.0)[0] for v, ti in zip(ramp, t, strict=True)])
        lag[beta] = ramp[-1] - out[-1]
    assert lag[30.0] < lag[0.0] / 4
    assert lag[30.0] < 1.5


def test_one_euro_rejects_bad_parameters_and_resets():
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroFilter(OneEuroParams(min_cutoff=0))
    f = OneEuroFilter()
    f(np.zeros(2), 0.0)
    f.reset()
    np.testing.assert_array_equal(f(np.ones(2), 1.0), np.ones(2))


# ---------------------------------------------------------------- tracker logic on a stub model
def _template() -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, K, endpoint=False)
    return np.stack([np.cos(a), np.sin(a)], -1) * 40


class _StubDetector:
    def __init__(self, world) -> None:
        self.world = world
        self.calls = 0

    def detect(self, image, min_score=None):
        self.calls += 1
        return [Face(box=(c[0] - 40, c[1] - 40, 80, 80), score=0.9) for c in self.world.centres]


class _StubPredictor:
    """A 'model' that finds the true face whose centre lies inside the crop, else returns junk."""

    name = "stub"
    facts = FACTS["ibug300w"]

    def __init__(self) -> None:
        self.centres: list[np.ndarray] = []
        self.spec = InputSpec(width=64, height=64, color="rgb")
        self.config = {"points_box_map": {"dx": 0.0, "dy": 0.0, "sw": 1.3, "sh": 1.3}}
        self._det = _StubDetector(self)
        self.batches: list[int] = []

    def detector(self):
        return self._det

    def detector_region(self, box, image_size):
        return self.spec.crop_box(box, image_size)

    def region_for(self, box, image_size):
        return self.spec.crop_box(box, image_size)

    def predict_regions(self, images, regions):
        self.batches.append(len(regions))
        out = []
        for left, top, w, h in regions:
            inside = [c for c in self.centres if left < c[0] < left + w and top < c[1] < top + h]
            out.append(_template() + inside[0] if inside else np.full((K, 2), 5.0) + [left, top])
        return np.stack(out).astype(np.float32)


def test_tracker_detects_once_then_follows_its_own_points():
    p = _StubPredictor()
    tracker = Tracker(p, smooth=False, detect_every=0)
    frame = np.zeros((240, 320, 3), np.uint8)
    for i in range(20):
        p.centres = [np.array([100.0 + 3 * i, 120.0])]
        faces, ran = tracker.update(frame, i / 30)
        assert [f.id for f in faces] == [0]
        assert ran == (i == 0)
        np.testing.assert_allclose(faces[0].points, _template() + p.centres[0], atol=1e-4)
    assert p._det.calls == 1


def test_lost_face_is_found_again_with_its_id_and_new_faces_get_new_ids():
    p = _StubPredictor()
    tracker = Tracker(p, smooth=True, detect_every=5)
    frame = np.zeros((240, 320, 3), np.uint8)
    p.centres = [np.array([80.0, 120.0])]
    tracker.update(frame, 0.0)
    p.centres = [np.array([125.0, 120.0])]  # a jump out of the crop: lost, re-detected on the same frame
    faces, ran = tracker.update(frame, 1 / 30)
    assert ran and [f.id for f in faces] == [0]
    np.testing.assert_allclose(faces[0].points, _template() + p.centres[0], atol=1e-4)  # filter restarted
    p.centres = [np.array([125.0, 120.0]), np.array([250.0, 120.0])]
    ids = []
    for i in range(2, 10):
        faces, _ = tracker.update(frame, i / 30)
        ids.append([f.id for f in faces])
    assert ids[0] == [0] and ids[-1] == [0, 1]  # the second face appears at the periodic detection
    assert max(p.batches) == 2  # both faces in one batch


def test_tracker_refuses_whole_image_models():
    p = _StubPredictor()
    p.spec = InputSpec(width=80, height=60, crop_mode="whole")
    with pytest.raises(ValueError, match="crops face boxes"):
        Tracker(p)


# ---------------------------------------------------------------- end to end
def _clip(tmp_path, n=12):
    from kpcore.bench import moving_clip
    from kpcore.data.datasets import load_300w
    from kpcore.imageio import load_image

    s = [x for x in load_300w("test") if x.image_id.startswith("helen/testset")][0]
    frames, truth = moving_clip(load_image(s.image_path), s.points, n_frames=n, size=(320, 240), face_width=110)
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, 30, (320, 240)) as w:
        for f in frames:
            w.write(f)
    return path, truth


@needs_300w
def test_kpcore_track_writes_the_csv_and_a_browser_video(tmp_path):
    if not (REPO / "checkpoints" / "face68-300w" / "model.safetensors").exists():
        pytest.skip("checkpoints/face68-300w is not here")
    clip, truth = _clip(tmp_path)
    frames, fps, count, size = read_frames(clip)
    assert size == (320, 240) and abs(fps - 30) < 0.01 and sum(1 for _ in frames) == len(truth)
    out_csv, out_mp4 = tmp_path / "pts.csv", tmp_path / "out.mp4"
    r = subprocess.run([sys.executable, "-m", "kpcore", "track", str(clip), "--csv", str(out_csv),
                        "--video", str(out_mp4)], cwd=REPO, capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "KPCORE_PROGRESS": "0"})
    assert r.returncode == 0, r.stderr
    assert "annotated video" in r.stdout
    with open(out_csv) as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    body = np.array(rows[1:], dtype=float)
    assert len(body) == len(truth) * K
    assert set(body[:, 0].astype(int)) == set(range(len(truth)))  # 0-based frame index
    assert set(body[:, 1].astype(int)) == {0}  # one face, one id
    pts = body[:, 3:5].reshape(len(truth), K, 2)
    eye = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=-1)
    nme = (np.linalg.norm(pts - truth, axis=-1).mean(-1) / eye).mean()
    assert nme < 0.08, nme
    if shutil.which("ffprobe"):
        codec = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                                "stream=codec_name", "-of", "csv=p=0", str(out_mp4)],
                               capture_output=True, text=True).stdout.strip()
        assert codec == "h264", codec


def test_track_api_reports_a_missing_video(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_frames(tmp_path / "none.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cannot open"):
        read_frames(bad)
