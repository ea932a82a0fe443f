"""kpcore.evaluation.robustness, which writes the robustness.csv the dashboard's Robustness page draws:
perturbations keep the points on the face, and the evaluation loop writes its table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kpcore.evaluation import robustness as rb
from tests.webapp_fixtures import make_imm_tree, save_model

BOX = (96.0, 96.0, 64.0, 64.0)


def centroid(img: np.ndarray) -> tuple[float, float]:
    """Brightness-weighted centre ``(x, y)`` of an image's red channel."""
    w = img[..., 0].astype(np.float64)
    ys, xs = np.mgrid[0:w.shape[0], 0:w.shape[1]]
    return float((xs * w).sum() / w.sum()), float((ys * w).sum() / w.sum())


def dot_image(x: int, y: int, size: int = 256) -> np.ndarray:
    img = np.zeros((size, size, 3), np.uint8)
    img[y - 1:y + 2, x - 1:x + 2] = 255
    return img


@pytest.mark.parametrize(("name", "strength"), [("rotate", 30.0), ("rotate", -45.0), ("scale", 1.3), ("scale", 0.8)])
def test_geometric_perturbations_move_the_points_with_the_image(name: str, strength: float) -> None:
    img = dot_image(150, 110)
    out, pts, k = rb.perturb(name, img, np.array([[150.0, 110.0]]), BOX, strength)
    x, y = centroid(out)
    assert np.hypot(x - pts[0, 0], y - pts[0, 1]) <= 0.5
    assert k == pytest.approx(strength if name == "scale" else 1.0)


@pytest.mark.parametrize("name", list(rb.PERTURBATIONS))
def test_the_identity_strength_changes_nothing(name: str) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    pts = rng.uniform(40, 90, (5, 2))
    out, moved, k = rb.perturb(name, img, pts, (32.0, 32.0, 64.0, 64.0), rb.PERTURBATIONS[name].identity)
    assert np.abs(out.astype(int) - img).max() <= 1 and np.allclose(moved, pts, atol=1e-6) and k == pytest.approx(1)


def test_photometric_perturbations_keep_the_points_and_change_the_pixels() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(60, 200, (128, 128, 3), dtype=np.uint8)
    pts = np.array([[64.0, 64.0]])
    for name in ("blur", "noise", "brightness", "occlude"):
        strength = rb.PERTURBATIONS[name].strengths[-1]
        out, moved, _ = rb.perturb(name, img, pts, (32.0, 32.0, 64.0, 64.0), strength, rng)
        assert np.array_equal(moved, pts) and out.shape == img.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - img).mean() > 1, name


def test_parse_perturb_names_the_bad_value_and_the_choices() -> None:
    assert rb.parse_perturb("blur, rotate") == ["blur", "rotate"]
    assert rb.parse_perturb("all") == list(rb.PERTURBATIONS)
    with pytest.raises(ValueError, match=r"unknown \['fog'\]; choose from blur, noise"):
        rb.parse_perturb("blur,fog")


def test_face_patch_keeps_points_and_box_consistent() -> None:
    img = dot_image(120, 130, size=400)
    patch, pts, box = rb.face_patch(img, np.array([[120.0, 130.0]]), (100.0, 100.0, 50.0, 60.0))
    x, y = centroid(patch)
    assert patch.shape == (rb.PATCH, rb.PATCH, 3) and np.hypot(x - pts[0, 0], y - pts[0, 1]) <= 0.5
    assert box[2] == pytest.approx(50 * rb.PATCH / (60 * rb.CONTEXT))


def test_evaluate_robustness_writes_the_table_the_dashboard_reads(tmp_path) -> None:
    data = tmp_path / "data"
    make_imm_tree(data)  # persons 33 and 34 are the validation split
    model = save_model(tmp_path / "tiny", "imm", "imm_face", 58)
    out = tmp_path / "out"
    table = rb.evaluate_robustness(model, ["blur", "rotate"], data_root=data, split="val", out=out,
                                   strengths={"blur": [2.0], "rotate": [20.0]})
    saved = pd.read_csv(out / rb.ROBUSTNESS_FILE)
    assert list(saved.columns) == ["perturbation", "strength", "unit", "nme", "failure_rate", "auc", "n"]
    assert list(zip(saved["perturbation"], saved["strength"], strict=True)) == \
        [("blur", 0.0), ("blur", 2.0), ("rotate", 0.0), ("rotate", 20.0)]
    assert (saved["n"] == 2).all() and np.isfinite(saved["nme"]).all()
    clean = saved[saved["strength"] == 0]["nme"]
    assert clean.iloc[0] == pytest.approx(clean.iloc[1])  # one clean result for every curve
    assert len(table) == 4
    with pytest.raises(ValueError, match="has splits"):
        rb.evaluate_robustness(model, ["blur"], data_root=data, split="test", out=out)
