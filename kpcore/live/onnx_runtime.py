"""The CPU inference path: a checkpoint's network as ONNX, loaded and run by onnxruntime.

A checkpoint folder may hold ``model.onnx`` (float32) and ``model.int8.onnx``
beside ``model.safetensors``; :class:`~kpcore.live.predict.Predictor` then runs
the network here, unless ``backend="torch"`` is asked for (or
``$KPCORE_BACKEND=torch``). ``Predictor.model`` stays the PyTorch module for code
that needs heatmaps. Writing those files (export, int8 quantisation and its
measurement) is the model stage's work: :mod:`kpcore.models.onnx_export`
(``python -m kpcore export-onnx``). Nothing here imports PyTorch or ``onnx``.

An ONNX file records the SHA-256 of the weights it was made from; when the
checkpoint's weights change (a re-export, new training), the stale file is
ignored with a warning and PyTorch is used until ``export-onnx`` is run again.
A folder without ``model.safetensors`` (the default model packaged in the
wheel) is an inference-only checkpoint: its ONNX files are the model.

``auto`` runs ``model.int8.onnx`` only when its recorded validation NME is within
:data:`INT8_MAX_NME_DELTA` of float32 (0.1 NME points), else ``model.onnx``; an
int8 file that cannot be loaded (damaged, truncated) falls back to the float32
file with a warning. ``backend="int8"`` forces int8, ``backend="onnx"`` float32.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from ..extras import missing_extra_error
from ..models.checkpoint import WEIGHTS_FILE

ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
BACKEND_ENV = "KPCORE_BACKEND"
"""``auto`` (onnxruntime when ``model.onnx`` is there and current; its accepted int8 form when there is one),
``torch``, ``onnx`` (float32) or ``int8``."""
BACKENDS = ("auto", "torch", "onnx", "int8")
INPUT_NAME = "image"
OUTPUT_NAME = "coords"
WEIGHTS_KEY = "kpcore_weights_sha256"
PRECISION_KEY = "kpcore_precision"
INT8_MAX_NME_DELTA = 0.001
"""The int8 model runs by default only if its validation NME is at most this much above float32's."""
INT8_NME_KEY, FLOAT_NME_KEY, INT8_SPLIT_KEY = "kpcore_int8_val_nme", "kpcore_float_val_nme", "kpcore_int8_split"
"""Where :func:`kpcore.models.onnx_export.measure_int8` records its figures in the int8 file's metadata."""


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


def int8_accepted(metadata: dict) -> bool:
    """True when an int8 file's recorded validation NME is within :data:`INT8_MAX_NME_DELTA` of float32's."""
    try:
        return float(metadata[INT8_NME_KEY]) - float(metadata[FLOAT_NME_KEY]) <= INT8_MAX_NME_DELTA
    except (KeyError, ValueError):
        return False


def no_spinning(options, threads: int | None) -> None:
    """Let a session's pool threads sleep between operators instead of spinning (when it has a pool:
    ``threads`` None or above 1).

    A spinning pool burns its cores while waiting: on this 2-core machine under load (load average
    ~10) the landmark model at 2 threads took 10-14 CPU ms a call (a face and its mirror) with spinning
    against 5-6 without, and as much wall time or less; a batch worker at 1 thread has no pool.
    """
    if threads is None or threads > 1:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")


class OnnxModel:
    """An onnxruntime CPU session with the model's calling convention: ``(B, C, H, W)`` -> ``(B, K, 2)``.

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op threads (``None``: onnxruntime's default, one per core).

    Raises:
        CheckpointError: onnxruntime cannot load the file (damaged, truncated, not ONNX).
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
        no_spinning(options, threads)
        self.threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime's load errors share no base class but Exception
            reason = (str(err).splitlines() or [type(err).__name__])[0]
            raise CheckpointError(f"{self.path} cannot be loaded by onnxruntime ({reason}): the file is "
                                  f"damaged or not an ONNX model; restore it or export it again") from err
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.int8 = self.metadata.get(PRECISION_KEY) == "int8"

    @property
    def label(self) -> str:
        """``"onnxruntime int8"`` or ``"onnxruntime"`` (float32), for tables and summaries."""
        return "onnxruntime int8" if self.int8 else "onnxruntime"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def load_for_checkpoint(folder: str | os.PathLike | None, backend: str | None = None,
                        threads: int | None = None) -> OnnxModel | None:
    """The ONNX model of a checkpoint folder, or None when PyTorch should run it.

    ``auto``: ``model.int8.onnx`` if it loads, is current and its recorded validation
    NME is within :data:`INT8_MAX_NME_DELTA` of float32's, else ``model.onnx`` if it
    loads and was made from the current weights (a stale or damaged file warns and
    is passed over). ``onnx``: the float32 file, ``int8``: the int8 file, whatever
    its accuracy; for both a missing, stale or damaged file is an error. ``torch``: None.

    Raises:
        CheckpointError: a forced file is unusable, or ``auto`` found nothing to run.
        MissingExtraError: ``auto`` falls back to PyTorch, which is not installed.
    """
    backend = resolve_backend(backend)
    if backend == "torch":
        return None
    folder = Path(folder) if folder is not None else None
    if backend in ("auto", "int8") and folder is not None:
        fallback = f"the float32 {ONNX_FILE}" if (folder / ONNX_FILE).is_file() else "PyTorch"
        int8 = _current(folder, ONNX_INT8_FILE, threads, required=backend == "int8", flag=" --int8",
                        fallback=fallback)
        if int8 is not None and (backend == "int8" or int8_accepted(int8.metadata)):
            return int8
    model = _current(folder, ONNX_FILE, threads, required=backend != "auto")
    if model is None and folder is not None:
        _check_pytorch_can_run(folder)
    return model


def _current(folder: Path | None, name: str, threads: int | None, required: bool,
             flag: str = "", fallback: str = "PyTorch") -> OnnxModel | None:
    """``folder/name`` as an :class:`OnnxModel` when it exists, loads, and was made from the folder's
    weights (a folder without weights is inference-only: its file is the model); else an error
    (``required``) or None (a stale or damaged file also warns)."""
    path = folder / name if folder is not None else None
    export = f"python -m kpcore export-onnx {folder or 'MODEL'}{flag}"
    if path is None or not path.is_file():
        if required and folder is not None and not (folder / WEIGHTS_FILE).is_file():
            have = sorted(p.name for p in folder.glob("*.onnx")) or "no ONNX file"
            raise CheckpointError(f"{path} does not exist, and {folder} is an inference-only checkpoint (no "
                                  f"{WEIGHTS_FILE} to export from; it has {have}): use backend 'auto', or a full "
                                  f"checkpoint folder (e.g. the repository's checkpoints/{folder.name}) and `{export}`")
        if required:
            raise CheckpointError(f"{path or 'this model (no folder)'} does not exist; run `{export}` first")
        return None
    try:
        model = OnnxModel(path, threads)
    except CheckpointError as err:
        if required:
            raise CheckpointError(f"{err}: `{export}` (needs PyTorch: pip install 'kpcore[train]')") from err
        warnings.warn(f"{err} (`{export}` writes it anew); using {fallback} meanwhile", stacklevel=3)
        return None
    if (folder / WEIGHTS_FILE).is_file() and model.metadata.get(WEIGHTS_KEY) != weights_digest(folder):
        msg = f"{path} was exported from other weights than {folder / WEIGHTS_FILE}; run `{export}` again"
        if required:
            raise CheckpointError(msg)
        warnings.warn(msg + f" (using {fallback} meanwhile)", stacklevel=3)
        return None
    return model


def _check_pytorch_can_run(folder: Path) -> None:
    """Raise unless PyTorch can build ``folder``'s network (``auto`` found no usable ONNX file)."""
    if not (folder / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{folder} has no model to run: no usable {ONNX_INT8_FILE} or {ONNX_FILE} and no "
                              f"{WEIGHTS_FILE}; restore the folder (for the model packaged with kpcore: "
                              f"reinstall kpcore)")
    if importlib.util.find_spec("torch") is None:
        raise missing_extra_error("torch", f"running {folder} without a usable {ONNX_FILE} "
                                  f"(or exporting one with `python -m kpcore export-onnx {folder}`)")
