"""The ONNX path: export and int8 (kpcore.models.onnx_export), parity with PyTorch, and the runtime's
backend choice, staleness and damaged files (kpcore.live.onnx_runtime)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="exporting needs the onnx package (pip install onnx)")

from kpcore.errors import CheckpointError  # noqa: E402
from kpcore.live.onnx_runtime import (  # noqa: E402
    INT8_MAX_NME_DELTA,
    ONNX_FILE,
    ONNX_INT8_FILE,
    WEIGHTS_KEY,
    OnnxModel,
    int8_accepted,
    weights_digest,
)
from kpcore.live.predict import Predictor  # noqa: E402
from kpcore.models import create_model  # noqa: E402
from kpcore.models.checkpoint import build_config, save_checkpoint  # noqa: E402
from kpcore.models.onnx_export import (  # noqa: E402
    PARITY_TOLERANCE,
    export_model_onnx,
    export_onnx,
    float_tail,
    parity,
    set_metadata,
)

from .conftest import REPO, needs_300w  # noqa: E402

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


# ------------------------------------------------------------------------------------------- int8
def _record_val_nme(path, int8_nme: float, float_nme: float) -> None:
    """Write the measured-accuracy metadata into an int8 file (what measure_int8 does after evaluating)."""
    import onnx

    # the keys as docs/FORMATS.md names them
    values = {"kpcore_int8_val_nme": int8_nme, "kpcore_float_val_nme": float_nme}
    onnx.save(set_metadata(onnx.load(str(path)), values), str(path))


def test_int8_keeps_the_decoding_after_the_last_conv_in_float(tmp_path):
    import onnx

    folder = _tiny_checkpoint(tmp_path / "m")
    export_onnx(folder)
    proto = onnx.load(str(folder / ONNX_FILE))
    tail = float_tail(proto)
    ops = {n.name: n.op_type for n in proto.graph.node}
    assert {"Softmax", "MatMul"} <= {ops[name] for name in tail}
    assert "Conv" not in {ops[name] for name in tail}
    # nothing of the tail is quantised in the int8 file; the convolutions are
    export_onnx(folder, int8=True, calibration=np.zeros((4, 3, TINY, TINY), np.float32))
    q = onnx.load(str(folder / ONNX_INT8_FILE))
    quantised_inputs = {i for n in q.graph.node if n.op_type == "DequantizeLinear" for i in n.output}
    consumers = {n.op_type for n in q.graph.node if quantised_inputs.intersection(n.input)}
    assert "Conv" in consumers and not consumers & {"Softmax", "MatMul"}


def test_int8_runs_by_default_only_when_measured_close_to_float(tmp_path):
    folder = _tiny_checkpoint(tmp_path / "m")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    result = export_onnx(folder, int8=True, calibration=rng.standard_normal((8, 3, TINY, TINY)).astype(np.float32))
    assert "int8_val_nme" not in result  # calibrated on given inputs: nothing measured
    int8 = OnnxModel(folder / ONNX_INT8_FILE)
    assert int8.int8 and int8.label == "onnxruntime int8" and int8.metadata[WEIGHTS_KEY] == weights_digest(folder)
    assert Predictor.from_pretrained(folder).backend_name == "onnxruntime"  # unmeasured: float32
    forced = Predictor.from_pretrained(folder, backend="int8")
    assert forced.backend_name == "onnxruntime int8"
    assert forced.predict_crops(image, [(40, 30, 50, 60)]).shape == (1, 68, 2)
    _record_val_nme(folder / ONNX_INT8_FILE, 0.0500, 0.0500 - INT8_MAX_NME_DELTA - 1e-4)
    assert Predictor.from_pretrained(folder).backend_name == "onnxruntime"  # measured, too far off
    export_onnx(folder, int8=True, calibration=rng.standard_normal((8, 3, TINY, TINY)).astype(np.float32))
    _record_val_nme(folder / ONNX_INT8_FILE, 0.0500, 0.0495)
    assert Predictor.from_pretrained(folder).backend_name == "onnxruntime int8"
    assert Predictor.from_pretrained(folder, backend="onnx").backend_name == "onnxruntime"
    assert Predictor.from_pretrained(folder, backend="torch").backend_name == "pytorch"


def test_int8_accepted_reads_the_recorded_figures():
    assert int8_accepted({"kpcore_int8_val_nme": "0.0370", "kpcore_float_val_nme": "0.0368"})
    assert not int8_accepted({"kpcore_int8_val_nme": "0.0380", "kpcore_float_val_nme": "0.0368"})
    assert not int8_accepted({"kpcore_int8_val_nme": "0.0370"})
    assert not int8_accepted({})


def test_stale_int8_file_falls_back_to_float_with_a_warning(tmp_path):
    a = _tiny_checkpoint(tmp_path / "a", seed=0)
    b = _tiny_checkpoint(tmp_path / "b", seed=1)
    export_onnx(a, int8=True, calibration=np.zeros((4, 3, TINY, TINY), np.float32))
    _record_val_nme(a / ONNX_INT8_FILE, 0.05, 0.05)
    export_onnx(b)
    shutil.copy(a / ONNX_INT8_FILE, b / ONNX_INT8_FILE)
    with pytest.warns(UserWarning, match="export-onnx .* --int8"):
        assert Predictor.from_pretrained(b).backend_name == "onnxruntime"
    with pytest.raises(CheckpointError, match="--int8"):
        _ = Predictor.from_pretrained(b, backend="int8").onnx_model


def _int8_checkpoint(folder):
    """A tiny checkpoint with model.onnx and an accepted (recorded as accurate) model.int8.onnx."""
    folder = _tiny_checkpoint(folder)
    export_onnx(folder, int8=True, calibration=np.zeros((4, 3, TINY, TINY), np.float32))
    _record_val_nme(folder / ONNX_INT8_FILE, 0.05, 0.05)
    assert Predictor.from_pretrained(folder).backend_name == "onnxruntime int8"
    return folder


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_int8_file_falls_back_to_float_with_a_warning(tmp_path, damage):
    folder = _int8_checkpoint(tmp_path / "m")
    path = folder / ONNX_INT8_FILE
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 3], "garbage": b"not an onnx model", "empty": b""}[damage])
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    with pytest.warns(UserWarning, match=r"model\.int8\.onnx cannot be loaded by onnxruntime.*float32 model\.onnx"):
        auto = Predictor.from_pretrained(folder)
    assert auto.backend_name == "onnxruntime"
    ref = Predictor.from_pretrained(folder, backend="onnx").predict_crops(image, [(40, 30, 50, 60)])
    np.testing.assert_array_equal(auto.predict_crops(image, [(40, 30, 50, 60)]), ref)
    with pytest.raises(CheckpointError, match=r"cannot be loaded.*export-onnx .* --int8"):
        _ = Predictor.from_pretrained(folder, backend="int8").onnx_model


def test_damaged_float_file_is_an_error_when_forced_and_pytorch_runs_it_in_auto(tmp_path):
    folder = _tiny_checkpoint(tmp_path / "m")
    export_onnx(folder)
    (folder / ONNX_FILE).write_bytes(b"\x08\x07broken")
    with pytest.raises(CheckpointError, match="cannot be loaded by onnxruntime"):
        _ = Predictor.from_pretrained(folder, backend="onnx").onnx_model
    with pytest.warns(UserWarning, match="cannot be loaded"):
        assert Predictor.from_pretrained(folder).backend_name == "pytorch"


def test_folder_without_weights_is_an_inference_only_checkpoint(tmp_path):
    """The packaged default model: config.json + model.int8.onnx, no model.safetensors."""
    full = _int8_checkpoint(tmp_path / "full")
    image = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    ref = Predictor.from_pretrained(full).predict_crops(image, [(40, 30, 50, 60)])
    lean = tmp_path / "lean"
    lean.mkdir()
    for name in ("config.json", ONNX_INT8_FILE):
        shutil.copy(full / name, lean / name)
    pred = Predictor.from_pretrained(lean)
    assert pred.backend_name == "onnxruntime int8"
    np.testing.assert_array_equal(pred.predict_crops(image, [(40, 30, 50, 60)]), ref)
    with pytest.raises(CheckpointError, match=r"inference-only checkpoint .*model\.int8\.onnx.*backend 'auto'"):
        _ = Predictor.from_pretrained(lean, backend="onnx").onnx_model  # no weights to export float32 from
    (lean / ONNX_INT8_FILE).write_bytes(b"")  # nothing left to run it: one clear error
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="has no model to run"):
        Predictor.from_pretrained(lean)


def test_pytorch_fallback_without_pytorch_names_the_extra(tmp_path, monkeypatch):
    import importlib.util

    from kpcore.extras import MissingExtraError

    folder = _tiny_checkpoint(tmp_path / "m")  # weights only: PyTorch would run it
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"needs PyTorch.*pip install 'kpcore\[train\]'"):
        Predictor.from_pretrained(folder)


def test_int8_without_calibration_faces_says_where_to_put_them(tmp_path):
    folder = _tiny_checkpoint(tmp_path / "m")
    with pytest.raises(CheckpointError, match="KPCORE_DATA"):
        export_onnx(folder, int8=True, data_root=tmp_path / "no-data")


@needs_300w
def test_int8_export_measures_both_models_on_validation(tmp_path, data_root):
    folder = _tiny_checkpoint(tmp_path / "m")
    result = export_onnx(folder, int8=True, data_root=data_root)
    meta = OnnxModel(folder / ONNX_INT8_FILE).metadata
    assert meta["kpcore_int8_split"] == "val"
    assert float(meta["kpcore_int8_val_nme"]) == pytest.approx(result["int8_val_nme"], abs=1e-6)
    assert float(meta["kpcore_float_val_nme"]) == pytest.approx(result["float_val_nme"], abs=1e-6)
    assert result["int8_used"] == int8_accepted(meta)


def test_shipped_68_point_model_runs_int8_within_its_bound():
    """The default model ships an int8 file made from its weights, measured within 0.1 NME points."""
    folder = REPO / "checkpoints" / "face68-300w"
    if not (folder / ONNX_INT8_FILE).exists():
        pytest.skip("checkpoints/face68-300w has no int8 file")
    meta = OnnxModel(folder / ONNX_INT8_FILE).metadata
    assert meta[WEIGHTS_KEY] == weights_digest(folder)
    delta = float(meta["kpcore_int8_val_nme"]) - float(meta["kpcore_float_val_nme"])
    assert delta <= INT8_MAX_NME_DELTA
    assert Predictor.from_pretrained(folder).backend_name == "onnxruntime int8"


INFERENCE_CORE = ["kpcore", "kpcore.cli", "kpcore.paths", "kpcore.extras", "kpcore.data.inputs",
                  "kpcore.data.imageio", "kpcore.data.geometry", "kpcore.data.facts", "kpcore.models.checkpoint",
                  "kpcore.models.hub", "kpcore.live.onnx_runtime", "kpcore.live.predict", "kpcore.live.detect",
                  "kpcore.live.calibrate", "kpcore.live.pose", "kpcore.live.render", "kpcore.live.smoothing",
                  "kpcore.live.track", "kpcore.live.morph"]
"""What ``pip install kpcore`` (no extras) runs, besides kpcore.live.batch and kpcore.live.align."""
HEAVY_OR_LATER_STAGES = ("torch", "torchvision", "timm", "accelerate", "safetensors", "onnx", "pandas", "scipy",
                         "kpcore.training", "kpcore.evaluation", "kpcore.models.onnx_export", "kpcore.data.loader",
                         "kpcore.data.transforms")


def test_inference_core_imports_no_pytorch_nor_the_training_or_evaluation_stages(tmp_path):
    """A fresh interpreter imports the inference core and predicts on a photo with the shipped model;
    nothing of PyTorch, of the training/evaluation stages or of the export stage gets imported."""
    import subprocess
    import sys

    folder = REPO / "checkpoints" / "face68-300w"
    if not (folder / ONNX_INT8_FILE).exists():
        pytest.skip("checkpoints/face68-300w has no int8 file")
    modules = INFERENCE_CORE + ["kpcore.live.batch", "kpcore.live.align"]
    photo = REPO / "webapp" / "examples" / "astronaut.jpg"
    code = f"""
import importlib, sys
for name in {modules!r}:
    importlib.import_module(name)
from kpcore import Predictor
faces = Predictor().predict({str(photo)!r})
assert faces and faces[0].points.shape == (68, 2) and faces[0].pose is not None
heavy = {HEAVY_OR_LATER_STAGES!r}
loaded = sorted(m for m in sys.modules if m in heavy or m.startswith(tuple(h + "." for h in heavy)))
print(len(faces), loaded[:8])
sys.exit(1 if loaded else 0)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]


@needs_300w
def test_inference_on_onnx_imports_no_pytorch(tmp_path, data_root):
    """Photo, crops and tracking on a checkpoint with ONNX files run without importing PyTorch (2.5 s)
    or torchvision (5 s): `kpcore track` and the demo start in well under a second."""
    import subprocess
    import sys

    from kpcore.data.datasets import load_split

    folder = REPO / "checkpoints" / "face68-300w"
    if not (folder / ONNX_FILE).exists():
        pytest.skip("checkpoints/face68-300w has no ONNX file")
    photo = next(s.image_path for s in load_split("ibug300w", "test", data_root)
                 if s.image_id.startswith("helen/testset"))
    code = f"""
import sys
from kpcore import Predictor
from kpcore.data.imageio import load_image
from kpcore.live.track import track
p = Predictor.from_pretrained({str(folder)!r})
frame = load_image({str(photo)!r})
assert p.predict_crops(frame, [(100, 60, 100, 100)]).shape == (1, 68, 2)
assert p.predict(frame)  # detection, detector-box map, points, confidence, pose
assert any(r.faces for r in track([frame, frame], p))
loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'timm')
                or m.startswith(('kpcore.training', 'kpcore.evaluation')))
print(p.backend_name, loaded[:5])
sys.exit(1 if loaded else 0)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert out.stdout.startswith("onnxruntime")


@needs_300w
def test_bench_speed_rows_time_the_default_path_beside_float_and_torch(data_root):
    from kpcore.evaluation.bench import landmark_speed
    from kpcore.evaluation.reference import DlibLandmarks

    folder = REPO / "checkpoints" / "face68-300w"
    if not (folder / ONNX_INT8_FILE).exists():
        pytest.skip("checkpoints/face68-300w has no int8 file")
    rows = {r["backend"]: r for r in landmark_speed(folder, data_root, faces=2, repeats=1)}
    expected = {"pytorch", "onnxruntime", "onnxruntime int8", "onnxruntime int8 1 thread"}
    assert expected <= set(rows)
    assert [b for b, r in rows.items() if r["default"]] == ["onnxruntime int8"]
    assert rows["onnxruntime int8 1 thread"]["threads"] == 1 and rows["onnxruntime int8"]["threads"] == 2
    assert all(r["calls"] == 2 and r["ms_per_face"] > 0 for r in rows.values())
    if DlibLandmarks.available():
        dlib = rows["dlib"]["ms_per_face"]
        assert rows["onnxruntime"]["vs_dlib"] == pytest.approx(rows["onnxruntime"]["ms_per_face"] / dlib, abs=0.01)


def test_sessions_with_a_thread_pool_do_not_spin():
    """A pool of 2+ threads (or onnxruntime's own choice) sleeps between operators; one thread has no pool."""
    import onnxruntime as ort

    from kpcore.live.onnx_runtime import no_spinning

    key = "session.intra_op.allow_spinning"
    for threads, expected in ((None, "0"), (2, "0"), (4, "0"), (1, "")):
        options = ort.SessionOptions()
        no_spinning(options, threads)
        try:
            value = options.get_session_config_entry(key)
        except Exception:  # noqa: BLE001 - onnxruntime raises when the key was never set
            value = ""
        assert value == expected, (threads, value)
