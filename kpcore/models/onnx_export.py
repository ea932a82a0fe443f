"""Model stage of the ONNX path: export a checkpoint's network, quantise it to int8, measure it.

``python -m kpcore export-onnx checkpoints/face68-300w`` writes ``model.onnx``
beside ``model.safetensors`` (batch size is dynamic; the output is the model's
``(B, K, 2)`` normalised coordinates, soft-argmax included) and checks it against
PyTorch. The runtime that loads and runs the file is
:mod:`kpcore.live.onnx_runtime`, which needs neither PyTorch nor this module.

The ONNX file records the SHA-256 of the weights it was made from, so the
runtime can ignore a stale file.

``export-onnx --int8`` also writes ``model.int8.onnx``: static int8 quantisation
calibrated on faces of the task's training split, with the decoding after the
last convolution (softmax and soft-argmax) kept in float32. Its validation NME
and the float model's are measured on the spot and written into the file; the
runtime's ``auto`` backend runs it only when it is within
:data:`~kpcore.live.onnx_runtime.INT8_MAX_NME_DELTA` of float32.

Everything here needs the training extra (PyTorch, and the ``onnx`` package to
write files): ``pip install 'kpcore[train]'``.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CheckpointError
from ..live.onnx_runtime import (
    FLOAT_NME_KEY,
    INPUT_NAME,
    INT8_NME_KEY,
    INT8_SPLIT_KEY,
    ONNX_FILE,
    ONNX_INT8_FILE,
    OUTPUT_NAME,
    PRECISION_KEY,
    WEIGHTS_KEY,
    OnnxModel,
    int8_accepted,
    weights_digest,
)
from .checkpoint import load_checkpoint

if TYPE_CHECKING:
    import torch

    from ..live.predict import Predictor

OPSET = 17
PARITY_TOLERANCE = 1e-4
"""Largest accepted |ONNX - PyTorch| in normalised coordinates (1e-4 = 0.0064 px at 128 px)."""
CALIBRATION_FACES = 96


def _onnx():
    """The ``onnx`` package, or an error that names the extra that brings it."""
    try:
        import onnx
    except ImportError as e:
        raise ImportError("exporting to ONNX needs the onnx package: pip install 'kpcore[train]' "
                          "(running the exported model needs only onnxruntime)") from e
    return onnx


def export_model_onnx(model: torch.nn.Module, input_shape: tuple[int, int, int], path: str | os.PathLike,
                      metadata: dict[str, str] | None = None, opset: int = OPSET) -> Path:
    """Write ``model`` (eval mode, float32) as ONNX with a dynamic batch axis.

    Args:
        model: A module from ``(B, C, H, W)`` float32 to ``(B, K, 2)``.
        input_shape: ``(C, H, W)``.
        path: Where to write (replaced atomically).
        metadata: Extra ``metadata_props`` (string key/values).
    """
    import torch

    onnx = _onnx()
    path = Path(path)
    model = model.float().eval()
    x = torch.zeros(1, *input_shape)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings():
            # the TorchScript exporter is the one that needs no onnxscript; it warns that it is legacy
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(raw), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        proto = set_metadata(onnx.load(str(raw)), metadata or {})
        onnx.checker.check_model(proto)
        final = Path(tmp) / path.name
        onnx.save(proto, str(final))
        os.replace(final, path)
    return path


def export_onnx(folder_or_repo_id: str | os.PathLike, int8: bool = False, check: bool = True,
                calibration: np.ndarray | None = None, data_root: str | os.PathLike | None = None) -> dict:
    """Export a checkpoint's network to ``<folder>/model.onnx`` and check it against PyTorch.

    Args:
        folder_or_repo_id: Checkpoint folder (or a name under ``checkpoints/``, or a Hub id).
        int8: Also write ``model.int8.onnx`` (:func:`quantize_int8`) and measure it
            (:func:`measure_int8`): with ``calibration`` given, only that (no data needed,
            nothing measured, never used by ``auto``); else calibrated on
            :data:`CALIBRATION_FACES` training faces of the task under ``data_root`` and
            measured on its validation split.
        check: Run both on random inputs and raise if they differ by more than
            :data:`PARITY_TOLERANCE`.
        calibration: ``(N, C, H, W)`` float32 normalised inputs for int8 calibration.
        data_root: Where the task's data is (default ``$KPCORE_DATA``).

    Returns:
        ``{"path", "max_abs_diff", "int8_path"?, "int8_val_nme"?, "float_val_nme"?, "int8_used"?}``.
    """
    from .hub import resolve_model_dir

    folder = resolve_model_dir(folder_or_repo_id)
    model, config = load_checkpoint(folder)
    shape = _input_shape(config)
    digest = weights_digest(folder)
    path = export_model_onnx(model, shape, folder / ONNX_FILE,
                             metadata={WEIGHTS_KEY: digest, "kpcore_model": config["model"]["name"]})
    result: dict = {"path": str(path)}
    if check:
        result["max_abs_diff"] = parity(model, OnnxModel(path), shape)
        if result["max_abs_diff"] > PARITY_TOLERANCE:
            path.unlink()
            raise CheckpointError(f"the ONNX export of {folder} differs from PyTorch by {result['max_abs_diff']:.3g} "
                                  f"(> {PARITY_TOLERANCE}); removed it. The model may use an op the exporter "
                                  f"handles differently; keep using backend='torch'.")
    if int8:
        measured = calibration is None
        if measured:
            calibration = calibration_inputs(folder, data_root)
        int8_path = quantize_int8(path, folder / ONNX_INT8_FILE, shape, calibration, metadata={WEIGHTS_KEY: digest})
        result["int8_path"] = str(int8_path)
        if measured:
            result.update(measure_int8(folder, data_root))
    return result


def _input_shape(config: dict) -> tuple[int, int, int]:
    spec = config["input"]
    channels = 1 if spec.get("color", "gray") == "gray" else 3
    return channels, int(spec["height"]), int(spec["width"])


def calibration_inputs(folder: str | os.PathLike, data_root=None, n: int = CALIBRATION_FACES,
                       seed: int = 0) -> np.ndarray:
    """``(n, C, H, W)`` model inputs: ``n`` faces drawn (fixed seed) from the task's training
    split, cropped as at inference (no augmentation)."""
    from ..data.datasets import load_split
    from ..data.imageio import load_image
    from ..data.inputs import InputSpec, region_array
    from .checkpoint import read_config

    config = read_config(folder)
    spec, task = InputSpec.from_dict(config["input"]), config["task"]
    try:
        samples = load_split(task, "train", data_root)
    except FileNotFoundError as e:
        raise CheckpointError(f"int8 calibration needs faces of the {task} training split, which are not under "
                              f"the data root ({e}); set KPCORE_DATA or --data-root to the folder that holds "
                              f"them") from None
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(samples), size=min(n, len(samples)), replace=False)
    out = []
    for i in picks:
        s = samples[int(i)]
        image = load_image(s.image_path)
        out.append(region_array(image, spec.crop_box(s.box, (image.shape[1], image.shape[0])), spec)[0])
    return np.stack(out).astype(np.float32)


def measure_int8(folder: str | os.PathLike, data_root=None) -> dict:
    """Validation NME of the float32 and the int8 ONNX model on the task's validation split;
    written into ``model.int8.onnx``'s metadata (which
    :func:`~kpcore.live.onnx_runtime.int8_accepted` reads).

    Returns ``{"int8_val_nme", "float_val_nme", "int8_used"}`` (``int8_used``: ``auto`` will run it)."""
    from ..evaluation.evaluate import evaluate_model
    from ..live.predict import Predictor

    onnx = _onnx()
    folder = Path(folder)
    nme = {}
    for backend in ("onnx", "int8"):
        pred: Predictor = Predictor.from_pretrained(folder, backend=backend)
        nme[backend] = evaluate_model(folder, data_root=data_root, split="val", save=False, predictor=pred)["nme"]
    path = folder / ONNX_INT8_FILE
    values = {INT8_NME_KEY: f"{nme['int8']:.6f}", FLOAT_NME_KEY: f"{nme['onnx']:.6f}", INT8_SPLIT_KEY: "val"}
    proto = set_metadata(onnx.load(str(path)), values)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        onnx.save(proto, str(Path(tmp) / path.name))
        os.replace(Path(tmp) / path.name, path)
    return {"int8_val_nme": nme["int8"], "float_val_nme": nme["onnx"], "int8_used": int8_accepted(values)}


def set_metadata(proto, values: dict):
    """``proto`` with its ``metadata_props`` set to ``values`` (string key/values), replacing keys it had."""
    kept = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    return proto


def parity(model: torch.nn.Module, onnx_model: OnnxModel, shape: tuple[int, int, int], batch: int = 4,
           seed: int = 0) -> float:
    """Max |ONNX - PyTorch| over a random batch (normalised coordinates)."""
    import torch

    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        ref = model.float().eval()(x).float().numpy()
    return float(np.abs(onnx_model(x.numpy()) - ref).max())


def float_tail(proto) -> list[str]:
    """Names of the nodes after the last convolution (the decoding: softmax, soft-argmax, pooling,
    a linear layer), which :func:`quantize_int8` keeps in float32: quantising a softmax to 256
    levels costs a heatmap model ~0.9 NME points, the convolutions only ~0.01."""
    nodes = list(proto.graph.node)
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if not convs:
        return []
    live = set(nodes[convs[-1]].output)
    tail = []
    for n in nodes[convs[-1] + 1:]:
        if live.intersection(n.input):
            tail.append(n.name)
            live.update(n.output)
    return tail


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, shape: tuple[int, int, int],
                  calibration: np.ndarray | None = None, n_random: int = 16,
                  metadata: dict[str, str] | None = None) -> Path:
    """Static int8 quantisation (QDQ, per-channel weights, min-max ranges) of an exported model;
    the decoding after the last convolution stays float32 (:func:`float_tail`).

    ``calibration``: ``(N, C, H, W)`` real inputs (:func:`calibration_inputs`); random ones
    give poor ranges and are for tests only.
    """
    onnx = _onnx()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    data = calibration if calibration is not None else \
        np.random.default_rng(0).standard_normal((n_random, *shape)).astype(np.float32)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(data[i:i + 1] for i in range(len(data)))

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x}

    dst = Path(dst)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        out = Path(tmp) / dst.name
        quantize_static(str(pre), str(out), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=float_tail(onnx.load(str(pre))))
        onnx.save(set_metadata(onnx.load(str(out)), {**(metadata or {}), PRECISION_KEY: "int8"}), str(out))
        os.replace(out, dst)
    return dst
