"""MTFL: the label parser, boxes from five points, the 68 -> 5 mapping, mixed training, evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kpcore.data.datasets import five_point_box, load_split
from kpcore.data.facts import FACTS, MTFL_FACTS, five_point_matrix
from kpcore.data.formats import parse_mtfl
from kpcore.errors import AnnotationError

from .conftest import DATA_ROOT, has_dataset
from .fixtures import make_tiny_300w, make_tiny_mtfl, mean_68_shape


def test_parser_reads_the_released_layout(tmp_path):
    f = tmp_path / "training.txt"
    f.write_text(" lfw_5590\\A_0001.jpg 1 2 3 4 5 6 7 8 9 10 1 2 2 3\n\n"
                 "net_7876\\b.jpg 10.5 20 30 40 50 60 70 80 90 100 2 1 1 5\n")
    faces = parse_mtfl(f)
    assert [x.image_rel for x in faces] == ["lfw_5590/A_0001.jpg", "net_7876/b.jpg"]
    np.testing.assert_allclose(faces[0].points, [[1, 6], [2, 7], [3, 8], [4, 9], [5, 10]])
    assert faces[1].attributes == {"gender": 2, "smile": 1, "glasses": 1, "pose": 5}


@pytest.mark.parametrize("line, words", [
    ("lfw_5590\\a.jpg 1 2 3 4 5 6 7 8 9 10 1 2 2", "expected 15 fields"),
    ("lfw_5590\\a.jpg 1 2 3 4 5 6 7 8 9 x 1 2 2 3", "non-numeric"),
    ("lfw_5590\\a.jpg 1 2 3 4 5 6 7 8 9 10 1 2 2 7", "pose = 7"),
])
def test_parser_errors_name_the_line_and_problem(tmp_path, line, words):
    f = tmp_path / "training.txt"
    f.write_text("lfw_5590\\ok.jpg 1 2 3 4 5 6 7 8 9 10 1 2 2 3\n" + line + "\n")
    with pytest.raises(AnnotationError, match=words) as e:
        parse_mtfl(f)
    assert "training.txt:2" in str(e.value)


def test_five_point_matrix_makes_eye_centres_nose_and_mouth_corners():
    pts = mean_68_shape()
    five = five_point_matrix("ibug300w") @ pts
    np.testing.assert_allclose(five[0], pts[36:42].mean(0), atol=1e-6)
    np.testing.assert_allclose(five[1], pts[42:48].mean(0), atol=1e-6)
    np.testing.assert_allclose(five[2:], pts[[30, 48, 54]], atol=1e-6)
    with pytest.raises(KeyError, match="known"):
        five_point_matrix("imm")


def test_flip_pairs_of_mtfl_swap_eyes_and_mouth_corners():
    assert MTFL_FACTS.flip_permutation.tolist() == [1, 0, 2, 4, 3]


def test_five_point_box_scales_and_moves_with_the_face():
    five = five_point_matrix("ibug300w") @ (mean_68_shape() * 100)
    left, top, w, h = five_point_box(five)
    l2, t2, w2, h2 = five_point_box(five * 2 + 10)
    assert w == pytest.approx(h) and w2 == pytest.approx(2 * w)
    assert l2 == pytest.approx(2 * left + 10) and t2 == pytest.approx(2 * top + 10)
    centre = five.mean(0)
    assert left < centre[0] < left + w and top < centre[1] < top + h


def test_tiny_mtfl_splits_by_name_hash_and_keeps_pose(tmp_path):
    make_tiny_mtfl(tmp_path, n=60)
    train, val = load_split("mtfl", "train", tmp_path), load_split("mtfl", "val", tmp_path)
    assert len(train) + len(val) == 60 and not {s.image_id for s in train} & {s.image_id for s in val}
    assert all(s.attributes["pose"] in range(1, 6) for s in train + val)
    with pytest.raises(ValueError, match="splits"):
        load_split("mtfl", "test", tmp_path)


@pytest.mark.skipif(not has_dataset("mtfl"), reason="MTFL not under KPCORE_DATA")
def test_real_mtfl_has_about_ten_percent_validation_with_every_pose():
    train, val = load_split("mtfl", "train", DATA_ROOT), load_split("mtfl", "val", DATA_ROOT)
    assert len(train) + len(val) == 10000
    assert 0.08 < len(val) / 10000 < 0.12
    assert {s.attributes["pose"] for s in val} == {1, 2, 3, 4, 5}
    assert all(s.image_path.exists() for s in val[:20])


def test_mixed_batch_loss_uses_the_mapped_points_for_partly_labelled_faces(tmp_path):
    from kpcore.data.loader import InputSpec, KeypointDataset, MixedDataset
    from kpcore.training.config import TrainConfig
    from kpcore.training.losses import create_loss, pixel_scale
    from kpcore.training.train import _compute_loss, build_model

    make_tiny_300w(tmp_path)
    make_tiny_mtfl(tmp_path)
    spec = InputSpec(width=32, height=32, color="rgb")
    main = KeypointDataset(load_split("ibug300w", "train", tmp_path), FACTS["ibug300w"], spec, None,
                           progress=False)
    aux = KeypointDataset(load_split("mtfl", "train", tmp_path), MTFL_FACTS, spec, None, progress=False)
    mixed = MixedDataset(main, aux, five_point_matrix("ibug300w"), main_repeat=2)
    assert len(mixed) == 2 * len(main) + len(aux)
    first, last = mixed[0], mixed[len(mixed) - 1]
    assert first["mask"].sum() == 68 and first["aux_mask"].sum() == 0
    assert last["mask"].sum() == 0 and last["aux_mask"].sum() == 5
    # the aux target of an unaugmented face is its own five points (no offsets given)
    torch.testing.assert_close(last["aux_target"], aux[len(aux) - 1]["target"])

    cfg = TrainConfig.from_dict({"task": "ibug300w", "input": {"width": 32, "height": 32, "color": "rgb"},
                                 "model": {"name": "mobilenetv2_heatmap"}, "loss": {"name": "integral"}})
    model = build_model(cfg, 68).eval()
    loss_fn = create_loss("integral", scale=pixel_scale(spec.size))
    l1 = create_loss("l1", scale=pixel_scale(spec.size))
    matrix = mixed.aux_matrix
    batch = torch.utils.data.default_collate([mixed[len(mixed) - 1], mixed[len(mixed) - 2]])

    class Wrapped(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.forward_heatmaps(x)

    with torch.no_grad():
        value = _compute_loss(Wrapped(model), loss_fn, batch, (l1, matrix, 2.0))
        coords = model(batch["image"])
        expected = 2.0 * l1(torch.einsum("ak,bkc->bac", matrix, coords), batch["aux_target"])
    # only partly labelled faces in this batch: the main loss has nothing to count
    torch.testing.assert_close(value, expected)


def test_training_with_mtfl_mixed_in_runs_and_says_so(tmp_path):
    from kpcore.training.config import TrainConfig
    from kpcore.training.train import train

    make_tiny_300w(tmp_path)
    make_tiny_mtfl(tmp_path)
    cfg = TrainConfig.from_dict({
        "name": "mix", "task": "ibug300w", "input": {"width": 32, "height": 32, "color": "rgb"},
        "model": {"name": "mobilenetv2_heatmap", "kwargs": {"head_channels": 16}},
        "loss": {"name": "integral"}, "aux": {"task": "mtfl", "weight": 1.0, "main_repeat": 2},
        "optim": {"batch_size": 8, "epochs": 1}, "num_workers": 0, "mixed_precision": "no",
        "data_root": str(tmp_path)})
    run = train(cfg, tmp_path / "run")
    log = (run / "train.log").read_text()
    n_main = len(load_split("ibug300w", "train", tmp_path))
    n_aux = len(load_split("mtfl", "train", tmp_path))
    assert f"({n_main} x2 + {n_aux} mtfl)" in log
    assert (run / "best" / "model.safetensors").exists()


def test_aux_config_errors_name_the_field():
    from kpcore.errors import ConfigError
    from kpcore.training.config import TrainConfig

    for aux, words in (({"task": "nope"}, "aux.task"), ({"task": "imm_face"}, "only MTFL"),
                       ({"task": "mtfl", "main_repeat": 0}, "aux.main_repeat")):
        with pytest.raises(ConfigError, match=words):
            TrainConfig.from_dict({"task": "ibug300w", "aux": aux}).validate()
    with pytest.raises(ConfigError, match="aux.task"):
        TrainConfig.from_dict({"task": "imm_face", "aux": {"task": "mtfl"}}).validate()


def test_evaluate_on_mtfl_reports_per_pose_and_writes_only_to_out(tmp_path):
    from kpcore.data.loader import InputSpec
    from kpcore.evaluation.evaluate import evaluate_model
    from kpcore.models import create_model
    from kpcore.models.checkpoint import build_config, save_checkpoint

    make_tiny_mtfl(tmp_path, n=60)
    model = create_model("mobilenetv2_heatmap", 68, 3, head_channels=16)
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, model, build_config(
        model, task="ibug300w", layout="ibug300w", flip_pairs=FACTS["ibug300w"].flip_pairs,
        input_spec=InputSpec(width=32, height=32, color="rgb").to_dict(),
        metrics={}))
    before = sorted(p.name for p in folder.rglob("*"))
    out = tmp_path / "out"
    summary = evaluate_model(folder, data_root=tmp_path, dataset="mtfl", out=out)
    assert sorted(p.name for p in folder.rglob("*")) == before  # nothing written into the model folder
    assert summary["split"] == "mtfl-val" and summary["failure_threshold"] == 0.10
    n_val = len(load_split("mtfl", "val", tmp_path))
    assert summary["n"] == n_val == sum(r["n"] for r in summary["by_pose"])
    saved = json.loads((out / "summary.json").read_text())
    assert saved["by_pose"] == summary["by_pose"]
    import pandas as pd

    frame = pd.read_csv(out / "per_image.csv")
    assert {"confidence", "pose", "nme"} <= set(frame.columns)
    assert frame["confidence"].between(0, 1).all()


def test_bench_mtfl_section_has_the_model_and_its_pose_classes(tmp_path, monkeypatch):
    """``kpcore bench --sections mtfl``: one row per method (dlib's only where installed) with the
    overall and per-pose failure rates of the evaluation it ran."""
    from kpcore.data.loader import InputSpec
    from kpcore.evaluation import bench, reference
    from kpcore.models import create_model
    from kpcore.models.checkpoint import build_config, save_checkpoint

    make_tiny_mtfl(tmp_path, n=60)
    model = create_model("mobilenetv2_heatmap", 68, 3, head_channels=16)
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, model, build_config(
        model, task="ibug300w", layout="ibug300w", flip_pairs=FACTS["ibug300w"].flip_pairs,
        input_spec=InputSpec(width=32, height=32, color="rgb").to_dict(), metrics={}))
    monkeypatch.setattr(reference.DlibLandmarks, "available", staticmethod(lambda path=None: False))
    rows = bench.mtfl_rows(folder, data_root=tmp_path)
    assert [r["model"] for r in rows] == ["ckpt"]
    row = rows[0]
    n_val = len(load_split("mtfl", "val", tmp_path))
    assert row["section"] == "mtfl" and row["n"] == n_val
    per_pose = {k[len("n_"):]: v for k, v in row.items() if k.startswith("n_")}
    assert sum(per_pose.values()) == n_val
    assert all(0 <= row[f"failure_rate_{k}"] <= 1 for k in per_pose)
    assert bench.mtfl_rows(folder, data_root=tmp_path / "nowhere") == []  # no MTFL: the section is skipped
