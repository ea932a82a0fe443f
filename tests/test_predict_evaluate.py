"""Predictor, evaluation and export on tiny data: exact mapping back, saved records."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from kpcore.data import geometry as geo
from kpcore.data.facts import W300_FACTS
from kpcore.live.predict import Predictor, flip_average

from .fixtures import make_tiny_imm
from .test_train import JOB, run_cli


class ConstantModel(torch.nn.Module):
    """Predicts the same normalised coordinates for every input."""

    def __init__(self, coords: torch.Tensor) -> None:
        super().__init__()
        self.coords = coords

    def forward(self, x):
        return self.coords.expand(x.shape[0], -1, -1)


def config_for(k=68, width=64, height=64, mode="box", enlarge=1.3, layout="ibug300w"):
    return {"model": {"name": "const", "kwargs": {}}, "task": "ibug300w", "layout": layout,
            "input": {"width": width, "height": height, "color": "gray", "mean": [0.5], "std": [0.25],
                      "crop": {"mode": mode, "enlarge": enlarge}}}


def test_predict_crop_maps_the_crop_centre_back_to_the_box_centre():
    model = ConstantModel(torch.zeros(1, 68, 2))  # (0, 0) = the centre of the input
    p = Predictor(model, config_for())
    image = np.zeros((300, 400, 3), np.uint8)
    box = (100.0, 50.0, 80.0, 120.0)
    pts = p.predict_crop(image, box)
    centre = (box[0] + box[2] / 2 - 0.5, box[1] + box[3] / 2 - 0.5)  # edge box -> pixel-centre coordinates
    np.testing.assert_allclose(pts, np.tile(centre, (68, 1)), atol=1e-4)


def test_predict_crop_corner_outputs_land_on_the_enlarged_box_corners():
    coords = torch.tensor([[[-1.0, -1.0], [1.0, 1.0]]])
    p = Predictor(ConstantModel(coords), config_for(k=2, enlarge=1.5))
    box = (10.0, 20.0, 60.0, 60.0)
    pts = p.predict_crop(np.zeros((200, 200, 3), np.uint8), box)
    big = geo.enlarge_box(box, 1.5, aspect=1.0)
    np.testing.assert_allclose(pts[0], [big[0] - 0.5, big[1] - 0.5], atol=1e-4)
    np.testing.assert_allclose(pts[1], [big[0] + big[2] - 0.5, big[1] + big[3] - 0.5], atol=1e-4)


def test_batched_equals_single_and_accepts_paths(tmp_path):
    torch.manual_seed(0)
    from kpcore.models import create_model

    model = create_model("nosenet", num_keypoints=68, in_channels=1, input_size=(64, 64), channels=(4, 4, 4),
                         hidden=8)
    p = Predictor(model, config_for())
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    boxes = [(10, 10, 50, 60), (40, 30, 70, 70), (0, 0, 160, 120)]
    batched = p.predict_crops(img, boxes)
    singles = np.stack([p.predict_crop(tmp_path / "x.png", b) for b in boxes])
    assert batched.shape == (3, 68, 2)
    np.testing.assert_allclose(batched, singles, atol=1e-4)



def test_numpy_input_path_gives_the_torch_path_s_numbers():
    """predict_crops builds its batch in numpy (no PyTorch between onnxruntime calls); the
    training loader builds it in torch. Both must be the same input, and the same outputs."""
    from kpcore.data.loader import InputSpec, region_array, region_input
    from kpcore.models import create_model

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    for color, mean, std in (("rgb", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), ("gray", [0.5], [0.25])):
        spec = InputSpec(width=32, height=24, color=color, mean=mean, std=std)
        crop = rng.integers(0, 256, (24, 32, spec.channels), dtype=np.uint8)
        torch_way = spec.to_tensor(torch.from_numpy(crop).permute(2, 0, 1)).numpy()
        assert np.array_equal(spec.to_array(crop), torch_way)
        # the normalisation itself, (x / 255 - mean) / std per channel, in float64 as the reference
        ref = (crop.transpose(2, 0, 1) / 255.0 - np.reshape(mean, (-1, 1, 1))) / np.reshape(std, (-1, 1, 1))
        assert spec.to_array(crop).shape == ref.shape
        np.testing.assert_allclose(spec.to_array(crop), ref, rtol=0, atol=2e-6)
        a, ma, _ = region_array(img, (10.5, 5.0, 60.0, 45.0), spec)
        t, mt, _ = region_input(img, (10.5, 5.0, 60.0, 45.0), spec)
        assert a.dtype == np.float32 and np.array_equal(a, t.numpy()) and np.array_equal(ma, mt)
    torch.manual_seed(0)
    model = create_model("nosenet", num_keypoints=68, in_channels=1, input_size=(64, 64), channels=(4, 4, 4),
                         hidden=8)
    p = Predictor(model, config_for())
    batch = torch.randn(3, 1, 64, 64)
    for flip_test in (False, True):
        p.flip_test = flip_test
        np.testing.assert_allclose(p.forward_normalized(batch.numpy()), p.forward_normalized(batch).numpy(),
                                   atol=1e-6)
        c_np, f_np, pt_np = p.forward_with_confidence(batch.numpy())
        c_t, f_t, pt_t = p.forward_with_confidence(batch)
        assert isinstance(c_np, np.ndarray) and isinstance(c_t, torch.Tensor)
        np.testing.assert_allclose(c_np, c_t.numpy(), atol=1e-6)
        np.testing.assert_allclose(f_np, f_t, atol=1e-6)
        np.testing.assert_allclose(pt_np, pt_t, atol=1e-6)

def test_flip_average_of_a_symmetric_prediction_is_unchanged():
    # a model whose output mirrors exactly under a flip (point pairs placed symmetrically)
    rng = np.random.default_rng(1)
    u = rng.uniform(-0.8, 0.8, (68, 2))
    perm = W300_FACTS.flip_permutation
    for a, b in W300_FACTS.flip_pairs:  # each point's partner is its mirror image
        u[b] = (-u[a, 0], u[a, 1])
    u[perm == np.arange(68), 0] = 0  # midline points sit on x = 0
    coords = torch.tensor(u, dtype=torch.float32)[None]
    out = flip_average(ConstantModel(coords), torch.zeros(2, 1, 8, 8), perm)
    torch.testing.assert_close(out, coords.expand(2, -1, -1))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(data root, run folder) of a 1-epoch nosenet run on a tiny synthetic IMM."""
    tmp = tmp_path_factory.mktemp("tiny")
    data = tmp / "data"
    make_tiny_imm(data)
    job = tmp / "tiny.yaml"
    job.write_text(yaml.safe_dump(JOB))
    run = tmp / "tiny_run"
    run_cli("train", str(job), "--data-root", str(data), "--out", str(run), "--epochs", "1")
    return data, run


def test_evaluate_and_export_write_records(tiny_run, tmp_path):
    data, run = tiny_run
    out = tmp_path / "summary.json"
    run_cli("evaluate", str(run / "best"), "--data-root", str(data), "--json", str(out))
    summary = json.loads(out.read_text())
    assert {"n", "mean_px_error", "nme", "failure_rate", "auc", "mae", "per_image"} <= set(summary)
    assert summary["n"] == 8 and len(summary["per_image"]) == 8
    assert {"image", "nme", "px_error"} <= set(summary["per_image"][0])
    # the evaluation reproduces the trainer's validation error on the same split
    val = pd.read_csv(run / "metrics.csv")["val_px_error"].iloc[-1]
    assert summary["mean_px_error"] == pytest.approx(val, rel=1e-4)
    ev = run / "best" / "eval" / "val"
    assert (ev / "per_image.csv").exists() and (ev / "ced.csv").exists()
    assert len(list((ev / "thumbs").glob("worst_*.jpg"))) == 8 and len(list((ev / "thumbs").glob("best_*.jpg"))) == 8

    from kpcore.models.export import export_checkpoint, export_records

    rec = export_records(run, tmp_path / "records")
    assert (rec / "metrics.csv").exists() and (rec / "config.yaml").exists()
    dest = export_checkpoint(run, tmp_path / "ckpt", half=True, records=rec)
    cfg = json.loads((dest / "config.json").read_text())
    assert cfg["weights_dtype"] == "float16" and (dest / "README.md").exists()
    p16 = Predictor.from_pretrained(dest)
    p32 = Predictor.from_pretrained(run / "best")
    img = np.asarray(Image.open(next((data / "imm_face_db").glob("33-*.jpg"))).convert("RGB"))
    np.testing.assert_allclose(p16.predict_crop(img), p32.predict_crop(img), atol=0.1)


def test_unknown_model_folder_is_a_clear_error(tmp_path):
    from kpcore.errors import KpcoreError

    with pytest.raises(KpcoreError, match="checkpoint"):
        Predictor.from_pretrained(tmp_path / "nope")


class StubDetector:
    def __init__(self, boxes):
        self.boxes = boxes

    def detect(self, image, score_threshold=None):
        from kpcore.live.detect import Face

        return [Face(box=b, score=0.99) for b in self.boxes]


def test_predict_maps_detector_boxes_and_refines_around_the_first_pass():
    from kpcore.errors import NoFaceFoundError

    coords = torch.tensor([[[-0.5, -0.5], [0.5, 0.5]]])  # two points at a quarter and three quarters
    cfg = config_for(k=2)
    cfg["detector_box_map"] = {"dx": 0.0, "dy": 0.0, "sw": 2.0, "sh": 2.0}
    cfg["points_box_map"] = {"dx": 0.0, "dy": 0.0, "sw": 1.0, "sh": 1.0}
    p = Predictor(ConstantModel(coords), cfg)
    p._detector = StubDetector([(100.0, 100.0, 50.0, 50.0), (10.0, 10.0, 20.0, 20.0)])
    image = np.zeros((300, 300, 3), np.uint8)
    # the stub's two points do not form the layout's 68, so no flip-based confidence here
    faces = p.predict(image, confidence=False)
    assert len(faces) == 2 and faces[0].score == pytest.approx(0.99)
    # region = the detector box doubled about its centre (125, 125): (75, 75, 100, 100)
    np.testing.assert_allclose(faces[0].crop_box, (75, 75, 100, 100))
    np.testing.assert_allclose(faces[0].points, [[99.5, 99.5], [149.5, 149.5]], atol=1e-4)
    # second pass: region = the extent of the first points (pixel edges), same map -> points move inwards
    refined = p.predict(image, refine=True, confidence=False)[0]
    box = geo.points_box(faces[0].points)
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    expect = [[cx - box[2] / 4 - 0.5, cy - box[3] / 4 - 0.5], [cx + box[2] / 4 - 0.5, cy + box[3] / 4 - 0.5]]
    np.testing.assert_allclose(refined.points, expect, atol=1e-4)
    p._detector = StubDetector([])
    with pytest.raises(NoFaceFoundError, match="no face found"):
        p.predict(image)
    whole = p.predict(image, whole_image_if_no_face=True, confidence=False)
    assert len(whole) == 1 and whole[0].score == 0.0


def test_bench_writes_its_json_for_a_checkpoint(tiny_run, tmp_path):
    from kpcore.evaluation.bench import run_bench

    data, run = tiny_run
    out = tmp_path / "bench.json"
    rows = run_bench(json_out=out, data_root=data, quick=True, threads=1, models=[run / "best"])
    saved = json.loads(out.read_text())
    assert len(rows) == len(saved) == 1
    row = saved[0]
    for key in ("model", "split", "n", "nme", "mean_px_error", "latency_ms_b1", "threads", "throughput_b32",
                "params", "file_mb", "train_images_per_s", "loader_images_per_s"):
        assert key in row, key
    assert row["n"] == 8 and row["threads"] == 1 and row["latency_ms_b1"] > 0


def test_atomic_writes_are_not_private(tmp_path):
    import os
    import stat

    from kpcore.models import create_model
    from kpcore.models.checkpoint import atomic_write_text, save_checkpoint

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.csv", "x\n")
        save_checkpoint(tmp_path / "ck", create_model("nosenet", num_keypoints=1, in_channels=1), {"format": "x"})
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.csv").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "ck").stat().st_mode) == 0o755


def test_confidence_is_one_when_the_mirror_agrees_and_falls_as_it_parts():
    from kpcore.live.predict import CONFIDENCE_SCALE, confidence_from_flip

    rng = np.random.default_rng(2)
    pred = rng.uniform(-0.6, 0.6, (3, 68, 2))
    face, point = confidence_from_flip(pred, pred.copy(), (128, 128), W300_FACTS)
    np.testing.assert_allclose(face, 1.0)
    np.testing.assert_allclose(point, 1.0)
    moved = pred.copy()
    moved[1, 10] += 0.2  # one point of face 1 parts from its mirror prediction
    moved[2] += rng.normal(0, 0.1, (68, 2))  # every point of face 2 does
    face, point = confidence_from_flip(pred, moved, (128, 128), W300_FACTS)
    assert face[0] == pytest.approx(1.0) and face[2] < face[1] < 1.0
    assert point[1, 10] < 0.5 and np.all(point[1, np.arange(68) != 10] == pytest.approx(1.0))
    # the scale: a disagreement of CONFIDENCE_SCALE inter-ocular distances at every point -> 1/e
    iod = np.linalg.norm((pred[0, 36] - pred[0, 45]) * 64)
    shifted = pred[:1] + np.array([CONFIDENCE_SCALE * iod / 64, 0.0])
    face, _ = confidence_from_flip(pred[:1], shifted, (128, 128), W300_FACTS)
    assert face[0] == pytest.approx(np.exp(-1), rel=0.02)


def test_predict_fills_confidence_and_predict_crops_returns_it_on_request():
    torch.manual_seed(0)
    from kpcore.models import create_model

    model = create_model("nosenet", num_keypoints=68, in_channels=1, input_size=(64, 64), channels=(4, 4, 4),
                         hidden=8)
    p = Predictor(model, config_for())
    img = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    pts, conf, point_conf = p.predict_crops(img, [(10, 10, 50, 60), (40, 30, 70, 70)], with_confidence=True)
    assert pts.shape == (2, 68, 2) and conf.shape == (2,) and point_conf.shape == (2, 68)
    assert np.all((conf >= 0) & (conf <= 1)) and np.all((point_conf >= 0) & (point_conf <= 1))
    np.testing.assert_allclose(pts, p.predict_crops(img, [(10, 10, 50, 60), (40, 30, 70, 70)]), atol=1e-5)
    p._detector = StubDetector([(40.0, 30.0, 70.0, 70.0)])
    face = p.predict(img)[0]
    assert 0 <= face.confidence <= 1 and face.point_confidence.shape == (68,)
    d = face.to_dict()
    assert isinstance(d["confidence"], float) and len(d["point_confidence"]) == 68
