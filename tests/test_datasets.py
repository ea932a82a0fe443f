"""Datasets on the real shared data, and the errors when data is missing."""

import json
import subprocess
import sys

import numpy as np
import pytest

from kpcore.data import dataset_dir, load_split
from kpcore.data.facts import IMM_FACTS, W300_FACTS
from kpcore.errors import DatasetNotFoundError

from .conftest import REPO, needs_300w, needs_imm


@needs_imm
def test_imm_counts_and_split_by_person(data_root):
    train = load_split("imm_face", "train", data_root)
    val = load_split("imm_face", "val", data_root)
    assert (len(train), len(val)) == (192, 48)
    assert {int(s.image_id[:2]) for s in train} == set(range(1, 33))
    assert {int(s.image_id[:2]) for s in val} == set(range(33, 41))
    s = train[0]
    assert s.points.shape == (58, 2) and s.image_size == (640, 480)
    assert (s.points >= 0).all() and (s.points[:, 0] < 640).all() and (s.points[:, 1] < 480).all()


@needs_imm
def test_imm_nose_is_point_52_and_layout_is_mirror_consistent(data_root):
    face = load_split("imm_face", "train", data_root)
    nose = load_split("imm_nose", "train", data_root)
    np.testing.assert_array_equal(nose[0].points[0], face[0].points[52])
    # on frontal faces (view 1), each flip pair sits on opposite sides of the nose tip
    for s in face:
        if not s.image_id.endswith("-1m") and not s.image_id.endswith("-1f"):
            continue
        mid = s.points[52, 0]
        for a, b in IMM_FACTS.flip_pairs:
            assert (s.points[a, 0] - mid) * (s.points[b, 0] - mid) <= 4.0, (s.image_id, a, b)
        # the subject's left eye (13-20) is on the image's right
        assert s.points[13:21, 0].mean() > s.points[21:29, 0].mean()


@needs_300w
def test_300w_counts(data_root):
    train = load_split("ibug300w", "train", data_root)
    val = load_split("ibug300w", "val", data_root)
    test = load_split("ibug300w", "test", data_root)
    assert len(train) + len(val) == 1207 and len(test) == 330
    assert 0.05 < len(val) / 1207 < 0.15
    assert not {s.image_id for s in train} & {s.image_id for s in val}
    assert all(s.image_id.startswith("helen/testset/") for s in test)


@needs_300w
def test_300w_layout_matches_real_faces(data_root):
    test = load_split("ibug300w", "test", data_root)
    # subject's right outer eye corner (36) is on the image's left on nearly every face
    left_of = np.mean([s.points[36, 0] < s.points[45, 0] for s in test])
    assert left_of > 0.97
    a, b = W300_FACTS.norm_points
    s = test[0]
    assert s.norm_distance == pytest.approx(float(np.linalg.norm(s.points[a] - s.points[b])))
    # XML boxes overlap the face
    left, top, w, h = s.box
    c = s.points.mean(axis=0)
    assert left < c[0] < left + w and top < c[1] < top + h


@needs_300w
def test_300w_points_come_from_pts_when_present(data_root):
    s = load_split("ibug300w", "test", data_root)[0]
    from kpcore.data import read_pts

    np.testing.assert_allclose(s.points, read_pts(s.image_path.with_suffix(".pts")))


def test_missing_dataset_names_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        dataset_dir("imm", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "imm_face_db") in msg and "python -m kpcore download imm" in msg


def test_data_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KPCORE_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path)):
        load_split("ibug300w", "train")


@needs_imm
@needs_300w
def test_cli_datasets_json(data_root):
    out = subprocess.run([sys.executable, "-m", "kpcore", "datasets", "--data-root", str(data_root), "--json"],
                         capture_output=True, text=True, cwd=REPO, check=True).stdout
    got = json.loads(out)
    assert got["imm"]["train"] == 192 and got["imm"]["val"] == 48
    assert got["ibug300w"]["train"] + got["ibug300w"]["val"] == 1207 and got["ibug300w"]["test"] == 330
