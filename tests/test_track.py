"""Video tracking: One Euro smoothing, the tracker's detect/follow logic, and `kpcore track` end to end."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import numpy as np
import pytest

from kpcore.data.facts import FACTS
from kpcore.data.loader import InputSpec
from kpcore.live.detect import Face
from kpcore.live.smoothing import FaceFilter, OneEuroFilter, OneEuroParams
from kpcore.live.track import CSV_COLUMNS, Tracker, VideoWriter, read_frames, track_video

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


def _similarity_residual(points: np.ndarray, shape: np.ndarray) -> float:
    """Largest distance of ``points`` from the best similarity image of ``shape``."""
    z = points[:, 0] - points[:, 0].mean() + 1j * (points[:, 1] - points[:, 1].mean())
    r = shape[:, 0] - shape[:, 0].mean() + 1j * (shape[:, 1] - shape[:, 1].mean())
    return float(np.abs(z - np.vdot(r, z) / np.vdot(r, r) * r).max())


def test_face_filter_moves_the_shape_rigidly_and_calms_it_at_rest():
    shape = _template() * [1.0, 0.7]
    shape[:, 1] += 5.0 * np.sin(3 * np.linspace(0, 2 * np.pi, K, endpoint=False))  # no symmetry to confuse the fit
    f = FaceFilter()
    np.testing.assert_allclose(f(shape + 100, 0.0, scale=100), shape + 100)  # the first frame as it is
    for i in range(1, 40):  # turning, growing and moving 3 px per frame, no noise
        a, s = 0.01 * i, 1 + 0.005 * i
        moved = s * shape @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]) + [100 + 3 * i, 100]
        out = f(moved, i / 30, scale=100)
        assert _similarity_residual(out, shape) < 1e-6  # the shape is never distorted by the motion
    assert np.abs(out - moved).max() < 3.0  # and follows within a frame's motion
    rng = np.random.default_rng(0)
    f.reset()
    noisy = [shape + rng.normal(0, 1, shape.shape) for _ in range(90)]
    out = np.stack([f(n, i / 30, scale=100) for i, n in enumerate(noisy)])
    assert np.diff(out[30:], axis=0).std() < np.diff(np.stack(noisy), axis=0).std() / 3


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


class _NoisyStub(_StubPredictor):
    """The stub with Gaussian noise on every point, as a real model's per-frame error."""

    def __init__(self, sigma: float, seed: int = 0) -> None:
        super().__init__()
        self.rng = np.random.default_rng(seed)
        self.sigma = sigma

    def predict_regions(self, images, regions):
        pts = super().predict_regions(images, regions)
        return (pts + self.rng.normal(0, self.sigma, pts.shape)).astype(np.float32)


def test_smoothing_in_the_tracker_calms_a_still_face_and_follows_a_moving_one():
    frame = np.zeros((240, 320, 3), np.uint8)
    shown = {}
    for smooth in (False, True):
        p = _NoisyStub(sigma=0.5)
        tracker = Tracker(p, smooth=smooth, params=OneEuroParams(min_cutoff=1.0, beta=30.0), detect_every=0)
        out = []
        for i in range(60):
            p.centres = [np.array([100.0 + (2.0 * (i - 30) if i >= 30 else 0.0), 120.0])]  # still, then 60 px/s
            out.append(tracker.update(frame, i / 30)[0][0].points - p.centres[0])
        shown[smooth] = np.stack(out) - _template()  # error per frame
    still_raw, still_smooth = (np.diff(shown[s][5:30], axis=0).std() for s in (False, True))
    assert still_smooth < still_raw / 2  # at rest: much less shimmer
    lag = np.abs(shown[True][45:, :, 0].mean(-1)).max()
    assert lag < 1.0  # in motion (2 px per frame): the points stay within a pixel of the face


def test_track_video_writes_rows_per_face_and_a_browser_video(tmp_path):
    """The writing side of ``kpcore track`` on a tiny synthetic video, with the stub model."""
    clip = tmp_path / "tiny.mp4"
    rng = np.random.default_rng(0)
    with VideoWriter(clip, 30, (320, 240)) as w:
        for _ in range(6):
            w.write(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
    p = _StubPredictor()
    p.centres = [np.array([100.0, 120.0]), np.array([220.0, 120.0])]
    out_csv, out_mp4 = tmp_path / "pts.csv", tmp_path / "out.mp4"
    summary = track_video(clip, out_csv, out_mp4, p, smooth=False)
    assert summary["frames"] == 6 and summary["faces"] == 2 and summary["detector_runs"] == 1
    with open(out_csv) as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    body = np.array(rows[1:], dtype=float)
    assert len(body) == 6 * 2 * K
    assert sorted(set(body[:, 0].astype(int))) == list(range(6)) and set(body[:, 1].astype(int)) == {0, 1}
    first = body[(body[:, 0] == 0) & (body[:, 1] == 0)][:, 3:5]
    np.testing.assert_allclose(first, _template() + p.centres[0], atol=0.01)  # written with 2 decimals
    frames, fps, _, size = read_frames(out_mp4)
    assert size == (320, 240) and abs(fps - 30) < 0.01 and sum(1 for _ in frames) == 6
    if shutil.which("ffmpeg"):
        assert summary["codec"].startswith("H.264")


def test_a_track_that_keeps_shrinking_is_checked_by_the_detector_and_dropped():
    p = _StubPredictor()
    p.centres = [np.array([160.0, 120.0])]
    calls = []

    def shrinking(images, regions):  # points 8% smaller on every frame: not a face the model holds
        calls.append(1)
        return np.stack([_template() * 0.92 ** len(calls) + p.centres[0]]).astype(np.float32)

    tracker = Tracker(p, smooth=False, detect_every=0)
    frame = np.zeros((240, 320, 3), np.uint8)
    assert [f.id for f in tracker.update(frame, 0.0)[0]] == [0]
    p.predict_regions = shrinking
    p._det.detect = lambda image, min_score=None: []  # nothing there any more
    counts = [len(tracker.update(frame, i / 30)[0]) for i in range(1, 12)]
    assert counts[0] == 1 and counts[-1] == 0  # kept while it shrinks a little, dropped before 1/2


def test_tracker_refuses_whole_image_models():
    p = _StubPredictor()
    p.spec = InputSpec(width=80, height=60, crop_mode="whole")
    with pytest.raises(ValueError, match="crops face boxes"):
        Tracker(p)


# ---------------------------------------------------------------- end to end
def _clip(tmp_path, n=12):
    from kpcore.data.datasets import load_300w
    from kpcore.data.imageio import load_image
    from kpcore.evaluation.bench import moving_clip

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
    assert set(body[:, 0].astype(int)) == set(range(len(truth)))  # 0-based frame index
    # the clip's border is the photo mirrored (moving_clip), which can hold a half face the detector
    # takes for a face: the photo's face is the largest, id 0, and must keep that id on every frame
    main = body[body[:, 1] == 0]
    assert len(main) == len(truth) * K
    assert (main[:, 2].reshape(len(truth), K) == np.arange(K)).all()
    pts = main[:, 3:5].reshape(len(truth), K, 2)
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
