"""The CPU inference path: a checkpoint's network as ONNX, run by onnxruntime.

``python -m kpcore export-onnx checkpoints/face68-300w`` writes ``model.onnx``
beside ``model.safetensors`` (batch size is dynamic; the output is the model's
``(B, K, 2)`` normalised coordinates, soft-argmax included). From then on
:class:`~kpcore.live.predict.Predictor` runs the network in onnxruntime, unless
``backend="torch"`` is asked for (or ``$KPCORE_BACKEND=torch``).
``Predictor.model`` stays the PyTorch module for code that needs heatmaps.

The ONNX file records the SHA-256 of the weights it was made from; when the
checkpoint's weights change (a re-export, new training), the stale file is
ignored with a warning and PyTorch is used until ``export-onnx`` is run again.

Exporting needs the ``onnx`` package (``pip install onnx``); running needs only
onnxruntime, which kpcore already uses for face detection.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ..models.checkpoint import WEIGHTS_FILE, load_checkpoint

ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
BACKEND_ENV = "KPCORE_BACKEND"
"""``auto`` (onnxruntime when ``model.onnx`` is there and current), ``torch`` or ``onnx``."""
BACKENDS = ("auto", "torch", "onnx")
OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "coords"
WEIGHTS_KEY = "kpcore_weights_sha256"
PARITY_TOLERANCE = 1e-4
"""Largest accepted |ONNX - PyTorch| in normalised coordinates (1e-4 = 0.0064 px at 128 px)."""


def weights_digest(folder: str | os.PathLike) -> str:
    """SHA-256 of a checkpoint's ``model.safetensors``."""
    h = hashlib.sha256()
    with open(Path(folder) / WEIGHTS_FILE, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_backend(backend: str | None) -> str:
    """``backend``, else ``$KPCORE_BACKEND``, else ``auto``; an unknown name is an error."""
    name = backend or os.environ.get(BACKEND_ENV) or "auto"
    if name not in BACKENDS:
        raise ValueError(f"backend {name!r} is not one of {BACKENDS} (argument or ${BACKEND_ENV})")
    return name


def export_model_onnx(model: torch.nn.Module, input_shape: tuple[int, int, int], path: str | os.PathLike,
                      metadata: dict[str, str] | None = None, opset: int = OPSET) -> Path:
    """Write ``model`` (eval mode, float32) as ONNX with a dynamic batch axis.

    Args:
        model: A module from ``(B, C, H, W)`` float32 to ``(B, K, 2)``.
        input_shape: ``(C, H, W)``.
        path: Where to write (replaced atomically).
        metadata: Extra ``metadata_props`` (string key/values).
    """
    try:
        import onnx
    except ImportError as e:
        raise ImportError("exporting to ONNX needs the onnx package: pip install onnx "
                          "(running the exported model needs only onnxruntime)") from e
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
        proto = onnx.load(str(raw))
        for key, value in (metadata or {}).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, str(value)
        onnx.checker.check_model(proto)
        final = Path(tmp) / path.name
        onnx.save(proto, str(final))
        os.replace(final, path)
    return path


def export_onnx(folder_or_repo_id: str | os.PathLike, int8: bool = False, check: bool = True,
                calibration: np.ndarray | None = None) -> dict:
    """Export a checkpoint's network to ``<folder>/model.onnx`` and check it against PyTorch.

    Args:
        folder_or_repo_id: Checkpoint folder (or a name under ``checkpoints/``, or a Hub id).
        int8: Also write ``model.int8.onnx`` (static int8 quantisation, calibrated on
            ``calibration`` or on random inputs). It is never used automatically:
            compare its accuracy first (``kpcore bench`` does).
        check: Run both on random inputs and raise if they differ by more than
            :data:`PARITY_TOLERANCE`.
        calibration: ``(N, C, H, W)`` float32 normalised inputs for int8 calibration.

    Returns:
        ``{"path", "max_abs_diff", "int8_path"?}``.
    """
    from ..models.hub import resolve_model_dir

    folder = resolve_model_dir(folder_or_repo_id)
    model, config = load_checkpoint(folder)
    spec = config["input"]
    channels = 1 if spec.get("color", "gray") == "gray" else 3
    shape = (channels, int(spec["height"]), int(spec["width"]))
    path = export_model_onnx(model, shape, folder / ONNX_FILE,
                             metadata={WEIGHTS_KEY: weights_digest(folder), "kpcore_model": config["model"]["name"]})
    result: dict = {"path": str(path)}
    if check:
        result["max_abs_diff"] = parity(model, OnnxModel(path), shape)
        if result["max_abs_diff"] > PARITY_TOLERANCE:
            path.unlink()
            raise CheckpointError(f"the ONNX export of {folder} differs from PyTorch by {result['max_abs_diff']:.3g} "
                                  f"(> {PARITY_TOLERANCE}); removed it. The model may use an op the exporter "
                                  f"handles differently; keep using backend='torch'.")
    if int8:
        result["int8_path"] = str(quantize_int8(path, folder / ONNX_INT8_FILE, shape, calibration))
    return result


@torch.inference_mode()
def parity(model: torch.nn.Module, onnx_model: OnnxModel, shape: tuple[int, int, int], batch: int = 4,
           seed: int = 0) -> float:
    """Max |ONNX - PyTorch| over a random batch (normalised coordinates)."""
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))
    ref = model.float().eval()(x).float().numpy()
    return float(np.abs(onnx_model(x.numpy()) - ref).max())


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, shape: tuple[int, int, int],
                  calibration: np.ndarray | None = None, n_random: int = 16) -> Path:
    """Static int8 quantisation (QDQ, per-channel weights) of an exported model."""
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
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        os.replace(out, dst)
    return dst


class OnnxModel:
    """An onnxruntime CPU session with the model's calling convention: ``(B, C, H, W)`` -> ``(B, K, 2)``.

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op threads (``None``: onnxruntime's default, one per core).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None; got {threads}")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.threads = threads
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def load_for_checkpoint(folder: str | os.PathLike | None, backend: str | None = None,
                        threads: int | None = None) -> OnnxModel | None:
    """The ONNX model of a checkpoint folder, or None when PyTorch should run it.

    ``auto``: ``model.onnx`` if present and made from the current weights (a stale
    file warns and returns None). ``onnx``: the same, but a missing or stale file
    is an error. ``torch``: None.
    """
    backend = resolve_backend(backend)
    if backend == "torch":
        return None
    path = Path(folder) / ONNX_FILE if folder is not None else None
    if path is None or not path.is_file():
        if backend == "onnx":
            raise CheckpointError(f"backend='onnx' but {path or 'this model (no folder)'} does not exist; "
                                  f"run `python -m kpcore export-onnx {folder or 'MODEL'}` first")
        return None
    model = OnnxModel(path, threads)
    made_from = model.metadata.get(WEIGHTS_KEY)
    if made_from != weights_digest(folder):
        msg = (f"{path} was exported from other weights than {Path(folder) / WEIGHTS_FILE}; "
               f"run `python -m kpcore export-onnx {folder}` again")
        if backend == "onnx":
            raise CheckpointError(msg)
        warnings.warn(msg + " (using PyTorch meanwhile)", stacklevel=2)
        return None
    return model
