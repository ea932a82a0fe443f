"""Pseudo-labels for partly labelled faces: the file reader, the mixed dataset, a training run."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from kpcore.data.datasets import load_pseudo_labels, load_split
from kpcore.data.facts import FACTS, MTFL_FACTS, five_point_matrix
from kpcore.errors import AnnotationError, ConfigError, DatasetNotFoundError

from .fixtures import make_tiny_300w, make_tiny_mtfl, mean_68_shape


def _true_68(five: np.ndarray) -> np.ndarray:
    """The tiny MTFL faces are ``mean_68_shape() * side + (left, top)``: recover them from their five points."""
    m5 = five_point_matrix("ibug300w") @ mean_68_shape()
    a = np.zeros((10, 3))
    a[0::2, 0], a[0::2, 1] = m5[:, 0], 1
    a[1::2, 0], a[1::2, 2] = m5[:, 1], 1
    side, left, top = np.linalg.lstsq(a, np.asarray(five, np.float64).reshape(-1), rcond=None)[0]
    return mean_68_shape() * side + (left, top)


def _write_labels(path, samples, weights, points=None, drop=()):
    rows = {
        "image_id": [s.image_id for s in samples] + ["not/a/face.jpg"],
        "weight": [float(w) for w in weights] + [1.0],
        "points": [(_true_68(s.points) if points is None else points).reshape(-1).astype(np.float32).tolist()
                   for s in samples] + [[0.0] * 136],
    }
    pq.write_table(pa.table({k: v for k, v in rows.items() if k not in drop}), path)
    return path


def test_pseudo_labels_match_faces_by_id_and_leave_the_others_unweighted(tmp_path):
    make_tiny_mtfl(tmp_path)
    samples = load_split("mtfl", "train", tmp_path)
    weights = [0.0 if i % 3 == 0 else 0.5 + 0.01 * i for i in range(len(samples) // 2)]
    path = _write_labels(tmp_path / "labels.parquet", samples[:len(weights)], weights)
    labels = load_pseudo_labels(path, samples, 68)
    assert labels.points.shape == (len(samples), 68, 2)
    np.testing.assert_allclose(labels.weight[:len(weights)], weights, rtol=1e-6)
    assert not labels.weight[len(weights):].any()  # no row: no label
    assert labels.labelled == sum(w > 0 for w in weights)
    np.testing.assert_allclose(labels.points[1], _true_68(samples[1].points), atol=1e-3)
    # a face without a label holds a finite point inside it, never NaN or the origin
    np.testing.assert_allclose(labels.points[-1], np.broadcast_to(samples[-1].points.mean(0), (68, 2)), atol=1e-4)


def test_pseudo_label_file_errors_name_the_problem(tmp_path):
    make_tiny_mtfl(tmp_path)
    samples = load_split("mtfl", "train", tmp_path)
    ones = [1.0] * len(samples)
    with pytest.raises(DatasetNotFoundError, match="pseudo_label_mtfl.py"):
        load_pseudo_labels(tmp_path / "missing.parquet", samples, 68)
    with pytest.raises(AnnotationError, match=r"\['weight'\] are missing"):
        load_pseudo_labels(_write_labels(tmp_path / "a.parquet", samples, ones, drop=("weight",)), samples, 68)
    with pytest.raises(AnnotationError, match="has 68 points; this task needs 5"):
        load_pseudo_labels(_write_labels(tmp_path / "b.parquet", samples, ones), samples, 5)
    with pytest.raises(AnnotationError, match="none of its"):
        load_pseudo_labels(_write_labels(tmp_path / "c.parquet", samples, [0.0] * len(samples)), samples, 68)
    bad = np.full((68, 2), np.nan)
    with pytest.raises(AnnotationError, match="non-finite"):
        load_pseudo_labels(_write_labels(tmp_path / "d.parquet", samples, ones, points=bad), samples, 68)


def test_mixed_faces_carry_pseudo_labels_through_the_same_augmentation_and_flip(tmp_path):
    from kpcore.data.loader import InputSpec, KeypointDataset, MixedDataset
    from kpcore.data.transforms import AugmentConfig

    make_tiny_300w(tmp_path)
    make_tiny_mtfl(tmp_path)
    spec = InputSpec(width=32, height=32, color="rgb")
    # strong rotation and a certain flip, so a label moved differently from the true points shows
    augment = AugmentConfig(rotate_deg=30, shift=0.05, scale_min=0.9, scale_max=1.1, box_jitter=0.05, flip=1.0)
    main = KeypointDataset(load_split("ibug300w", "train", tmp_path), FACTS["ibug300w"], spec, augment,
                           progress=False)
    aux_samples = load_split("mtfl", "train", tmp_path)
    aux = KeypointDataset(aux_samples, MTFL_FACTS, spec, augment, progress=False, seed=1)
    weights = [0.0] + [0.8] * (len(aux_samples) - 1)
    labels = load_pseudo_labels(_write_labels(tmp_path / "l.parquet", aux_samples, weights), aux_samples, 68)
    mixed = MixedDataset(main, aux, five_point_matrix("ibug300w"), 2, None, labels, pseudo_weight=0.5)
    plain = MixedDataset(main, aux, five_point_matrix("ibug300w"), 2)
    assert len(mixed) == len(plain) == 2 * len(main) + len(aux)
    n_main = 2 * len(main)

    torch.manual_seed(0)
    item = mixed[n_main + 1]
    assert item["target"].shape == (68, 2) and item["aux_target"].shape == (5, 2)
    torch.testing.assert_close(item["mask"], torch.full((68,), 0.4))
    assert item["aux_mask"].sum() == 5  # the true five points keep their own loss
    # the pseudo-label was made from the same face as its five points, so after one shared
    # rotation, shift and flip (with both layouts' left/right swaps) they still map onto them
    mapped = torch.from_numpy(five_point_matrix("ibug300w")) @ item["target"]
    torch.testing.assert_close(mapped, item["aux_target"], atol=2e-3, rtol=0)
    assert item["image"].shape == (3, 32, 32)

    unlabelled = mixed[n_main]
    assert unlabelled["mask"].sum() == 0 and torch.isfinite(unlabelled["target"]).all()
    # the truly labelled faces are the same with or without pseudo-labels
    torch.manual_seed(3)
    a = mixed[1]
    torch.manual_seed(3)
    b = plain[1]
    torch.testing.assert_close(a["target"], b["target"])
    assert a["mask"].sum() == 68


def test_training_with_pseudo_labels_runs_and_config_names_a_missing_file(tmp_path):
    from kpcore.training.config import TrainConfig
    from kpcore.training.train import train

    make_tiny_300w(tmp_path)
    make_tiny_mtfl(tmp_path)
    aux_samples = load_split("mtfl", "train", tmp_path)
    path = _write_labels(tmp_path / "labels.parquet", aux_samples, [1.0] * len(aux_samples))
    job = {"name": "pseudo", "task": "ibug300w", "input": {"width": 32, "height": 32, "color": "rgb"},
           "model": {"name": "mobilenetv2_heatmap", "kwargs": {"head_channels": 16}},
           "loss": {"name": "integral"},
           "aux": {"task": "mtfl", "main_repeat": 2, "pseudo_labels": str(path), "pseudo_weight": 0.5},
           "optim": {"batch_size": 8, "epochs": 1}, "num_workers": 0, "mixed_precision": "no",
           "data_root": str(tmp_path)}
    run = train(TrainConfig.from_dict(job), tmp_path / "run")
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and np.isfinite(float(rows[1].split(",")[1]))  # one epoch, a finite train loss
    assert "pseudo_labels: " + str(path) in (run / "config.yaml").read_text()

    job["aux"]["pseudo_labels"] = str(tmp_path / "missing.parquet")
    with pytest.raises(ConfigError, match="aux.pseudo_labels"):
        TrainConfig.from_dict(job).validate()
    job["aux"] = {"pseudo_labels": str(path)}
    with pytest.raises(ConfigError, match="with aux.task set"):
        TrainConfig.from_dict(job).validate()
