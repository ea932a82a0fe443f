"""``kpcore bench``'s photo section: kpcore's split beside dlib and MediaPipe (run in its own interpreter)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from kpcore.evaluation import bench

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("KPCORE_DATA") or REPO.parent / "shared" / "data")


def _fake_python(tmp_path: Path, body: str) -> Path:
    """An executable standing in for MediaPipe's interpreter (called as ``python script photos.npy rounds``)."""
    exe = tmp_path / "python"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def test_mediapipe_is_skipped_without_its_interpreter(monkeypatch):
    monkeypatch.delenv(bench.MEDIAPIPE_ENV, raising=False)
    assert bench.mediapipe_photo_times(np.zeros((1, 8, 8, 3), np.uint8), 1) is None


def test_mediapipe_interpreter_gets_the_photos_and_its_json_is_read(monkeypatch, tmp_path):
    # the fake interpreter checks it was handed the timing script and a saved (N, H, W, 3) array
    exe = _fake_python(tmp_path, 'case "$1" in *mediapipe_timing.py) ;; *) exit 3;; esac\n'
                                 '[ -s "$2" ] || exit 4\n'
                                 'echo \'{"ms": [4.0, 6.0, 5.0, 7.0], "faces": [1, 1], "mediapipe": "0.10.21"}\'')
    monkeypatch.setenv(bench.MEDIAPIPE_ENV, str(exe))
    result = bench.mediapipe_photo_times(np.zeros((2, 8, 8, 3), np.uint8), 2)
    assert result == {"ms": [4.0, 6.0, 5.0, 7.0], "faces": [1, 1], "mediapipe": "0.10.21"}


def test_a_broken_mediapipe_interpreter_is_named(monkeypatch, tmp_path):
    exe = _fake_python(tmp_path, "echo 'No module named mediapipe' >&2; exit 1")
    monkeypatch.setenv(bench.MEDIAPIPE_ENV, str(exe))
    with pytest.raises(RuntimeError, match=f"{bench.MEDIAPIPE_ENV}.*No module named mediapipe"):
        bench.mediapipe_photo_times(np.zeros((1, 8, 8, 3), np.uint8), 1)


def test_spread_is_the_range_of_round_medians():
    assert bench._spread([[1.0, 2.0, 9.0], [3.0, 4.0, 5.0]]) == [2.0, 4.0]


@pytest.mark.data
def test_photo_rows_split_kpcore_and_compare_with_mediapipe(monkeypatch, tmp_path):
    if not (DATA_ROOT / "ibug_300W_subset").is_dir() and not any(DATA_ROOT.glob("ibug_300W*")):
        pytest.skip(f"300-W data not found under {DATA_ROOT}")
    ms = [10.0, 10.0]  # MediaPipe's stand-in: 10 ms a photo, 2 photos, 1 round
    exe = _fake_python(tmp_path, f"echo '{json.dumps({'ms': ms, 'faces': [1, 1], 'mediapipe': 'fake'})}'")
    monkeypatch.setenv(bench.MEDIAPIPE_ENV, str(exe))
    rows = bench.photo_split(REPO / "checkpoints" / "face68-300w", DATA_ROOT, threads=1, repeats=1, photos=2)
    by_model = {r["model"]: r for r in rows}
    kp = by_model["face68-300w"]
    assert kp["photo"] == "640x480" and kp["photos"] == 2 and kp["faces_found"] == 2
    for part in ("detect_ms", "points_ms", "confidence_ms", "pose_ms"):
        assert kp[part] >= 0
    assert kp["detect_ms"] + kp["points_ms"] > 0
    assert by_model["mediapipe"]["ms_per_photo"] == 10.0 and "KPCORE_MEDIAPIPE_PYTHON" in by_model["mediapipe"]["note"]
    assert kp["vs_mediapipe"] == pytest.approx(kp["ms_per_photo"] / 10.0, abs=0.01)
    assert kp["photos_per_s"] == pytest.approx(1000 / kp["ms_per_photo"], abs=0.1)
