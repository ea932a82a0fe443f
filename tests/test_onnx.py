"""The ONNX/onnxruntime inference path: export, parity with PyTorch, backend choice, staleness."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="exporting needs the onnx package (pip install onnx)")

from kpcore.errors import CheckpointError  # noqa: E402
from kpcore.live.onnx_runtime import (  # noqa: E402
    ONNX_FILE,
    PARITY_TOLERANCE,
    OnnxModel,
    export_model_onnx,
    export_onnx,
    parity,
)
from kpcore.live.predict import Predictor  # noqa: E402
from kpcore.models import create_model  # noqa: E402
from kpcore.models.checkpoint import build_config, save_checkpoint  # noqa: E402

from .conftest import REPO  # noqa: E402

TINY = 64  # input side of the tiny heatmap models


def _tiny_checkpoint(folder, name: str = "mobilenetv2_heatmap", color: str = "rgb", seed: int = 0):
    torch.manual_seed(seed)
    channels = 3 if color == "rgb" else 1
    kwargs = {"head_channels": 16} if name == "mobilenetv2_heatmap" else {}
    model = create_model(name, num_keypoints=68, in_channels=channels, **kwargs)
    spec = {"width": TINY, "height": TINY, "color": color, "mean": [0.5] * channels, "std": [0.25] * channels,
            "crop_mode": "box", "enlarge": 1.3}
    config = build_config(model, task="ibug300w", layout="ibug300w", flip_pairs=[], input_spec=spec)
    return save_checkpoint(folder, model, config)


@pytest.mark.parametrize("name,color", [("mobilenetv2_heatmap", "rgb"), ("unet_heatmap", "gray")])
def test_export_matches_pytorch_for_any_batch(tmp_path, name, color):
    folder = _tiny_checkpoint(tmp_path / name, name, color)
    result = export_onnx(folder)
    assert result["max_abs_diff"] <= PARITY_TOLERANCE
    onnx_model = OnnxModel(folder / ONNX_FILE, threads=1)
    channels = 3 if color == "rgb" else 1
    pred = Predictor.from_pretrained(folder, backend="torch")
    for batch in (1, 3):  # the batch axis is dynamic
        assert parity(pred.model, onnx_model, (channels, TINY, TINY), batch=batch, seed=batch) <= PARITY_TOLERANCE


def test_predictor_uses_onnx_when_exported_and_points_agree(tmp_path):
    folder = _tiny_checkpoint(tmp_path / "m")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    boxes = [(40, 30, 50, 60), (90, 20, 40, 40)]
    before = Predictor.from_pretrained(folder)
    assert before.onnx_model is None  # nothing exported yet: PyTorch
    ref = before.predict_crops(image, boxes)
    export_onnx(folder)
    auto = Predictor.from_pretrained(folder, threads=1)
    assert auto.onnx_model is not None
    got = auto.predict_crops(image, boxes)
    # normalised tolerance times half the crop size in image pixels (crops are <= 78 px wide)
    assert np.abs(got - ref).max() <= PARITY_TOLERANCE * 78
    assert Predictor.from_pretrained(folder, backend="torch").onnx_model is None
    flip = Predictor.from_pretrained(folder, flip_test=True)
    flip_ref = Predictor.from_pretrained(folder, flip_test=True, backend="torch")
    np.testing.assert_allclose(flip.predict_crops(image, boxes), flip_ref.predict_crops(image, boxes), atol=0.01)


def test_env_variable_opts_out(tmp_path, monkeypatch):
    folder = _tiny_checkpoint(tmp_path / "m")
    export_onnx(folder)
    monkeypatch.setenv("KPCORE_BACKEND", "torch")
    assert Predictor.from_pretrained(folder).onnx_model is None
    monkeypatch.setenv("KPCORE_BACKEND", "tensorrt")
    with pytest.raises(ValueError, match="KPCORE_BACKEND"):
        _ = Predictor.from_pretrained(folder).onnx_model


def test_stale_onnx_file_is_ignored_with_a_warning(tmp_path):
    a = _tiny_checkpoint(tmp_path / "a", seed=0)
    b = _tiny_checkpoint(tmp_path / "b", seed=1)
    export_onnx(a)
    shutil.copy(a / ONNX_FILE, b / ONNX_FILE)  # b's weights are not the ones a's ONNX was made from
    with pytest.warns(UserWarning, match="export-onnx"):
        assert Predictor.from_pretrained(b).onnx_model is None
    with pytest.raises(CheckpointError, match="export-onnx"):
        _ = Predictor.from_pretrained(b, backend="onnx").onnx_model


def test_backend_onnx_without_file_names_the_command(tmp_path):
    folder = _tiny_checkpoint(tmp_path / "m")
    with pytest.raises(CheckpointError, match="kpcore export-onnx"):
        _ = Predictor.from_pretrained(folder, backend="onnx").onnx_model


def test_shipped_68_point_model_parity(tmp_path):
    """The shipped checkpoint, exported to a copy of its folder (the repo is never written)."""
    src = REPO / "checkpoints" / "face68-300w"
    if not (src / "model.safetensors").exists():
        pytest.skip("checkpoints/face68-300w is not here")
    folder = tmp_path / "face68"
    shutil.copytree(src, folder, ignore=shutil.ignore_patterns("eval", "*.onnx"))
    result = export_onnx(folder)
    assert result["max_abs_diff"] <= PARITY_TOLERANCE, result


def test_export_of_a_plain_module_writes_metadata(tmp_path):
    model = create_model("nosenet", num_keypoints=2, in_channels=1, input_size=(80, 60))
    path = export_model_onnx(model, (1, 60, 80), tmp_path / "n.onnx", metadata={"k": "v"})
    m = OnnxModel(path)
    assert m.metadata["k"] == "v"
    assert m(np.zeros((2, 1, 60, 80), np.float32)).shape == (2, 2, 2)
