"""Checkpoint folders: ``config.json`` + ``model.safetensors`` (see docs/FORMATS.md).

A checkpoint carries everything needed to rebuild its model: architecture name
and arguments, point count, input size/colour/normalisation/crop, flip pairs,
task, metrics. Writes are atomic: a folder is written beside its target and
swapped in, so a crash never leaves a half-written checkpoint in place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import CheckpointError

FORMAT = "kpcore-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

if TYPE_CHECKING:  # PyTorch is imported where weights are read or written: reading a config needs none
    import torch
    from torch import nn


def build_config(model: nn.Module, *, task: str, layout: str, flip_pairs, input_spec: dict,
                 metrics: dict | None = None, train_config: dict | None = None) -> dict[str, Any]:
    """The ``config.json`` content for ``model`` (built by ``create_model``)."""
    model_cfg = getattr(model, "kpcore_config", None)
    if model_cfg is None:
        raise CheckpointError("the model has no kpcore_config; build it with kpcore.models.create_model")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model_cfg,
        "num_keypoints": int(model_cfg["kwargs"]["num_keypoints"]),
        "task": task,
        "layout": layout,
        "flip_pairs": [list(map(int, p)) for p in flip_pairs],
        "input": {
            "width": input_spec["width"], "height": input_spec["height"], "color": input_spec["color"],
            "mean": list(input_spec["mean"]), "std": list(input_spec["std"]),
            "crop": {"mode": input_spec["crop_mode"], "enlarge": input_spec["enlarge"]},
        },
        "output": "normalized",
        "metrics": metrics or {},
        "train_config": train_config or {},
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kpcore_version": __version__,
    }


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_dir(target: Path):
    """A temporary folder beside ``target``; :func:`_swap_in` moves it into place.

    ``mkdtemp`` makes a private (0700) folder; give it the usual permissions.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o777 & ~_umask())
    return tmp


def _swap_in(tmp: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp files are private (0600)
    os.replace(tmp, path)


def state_dict_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors of the model's state, unwrapping DDP/compile wrappers."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    return {k: v.detach().cpu().contiguous() for k, v in inner.state_dict().items()}


def save_checkpoint(folder: str | Path, model: nn.Module, config: dict[str, Any],
                    half: bool = False, extra_files: dict[str, bytes | str] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (+ extra files) atomically to ``folder``.

    Args:
        half: Store floating-point weights as float16 (for shipped ResNet-size models).
        extra_files: More files to place in the folder (name -> content).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = _atomic_dir(folder)
    try:
        state = state_dict_of(model)
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps({**config, "weights_dtype": "float16" if half else "float32"},
                                                  indent=2))
        for name, content in (extra_files or {}).items():
            mode = "wb" if isinstance(content, bytes) else "w"
            with open(tmp / name, mode) as f:
                f.write(content)
        _swap_in(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_config(folder: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint's ``config.json``."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"{folder} is not a kpcore checkpoint: {CONFIG_FILE} is missing "
                              f"(expected {CONFIG_FILE} + {WEIGHTS_FILE}, see docs/FORMATS.md)")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if cfg.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format is {cfg.get('format')!r}, expected {FORMAT!r}")
    if cfg.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {cfg['format_version']} is newer than this kpcore "
                              f"understands ({FORMAT_VERSION}); upgrade kpcore")
    return cfg


def load_checkpoint(folder: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint folder; returns ``(model in eval mode, config)``."""
    from safetensors.torch import load_file

    from . import create_model

    folder = Path(folder)
    cfg = read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.exists():
        raise CheckpointError(f"{folder}: {WEIGHTS_FILE} is missing")
    kwargs = dict(cfg["model"]["kwargs"])
    model = create_model(cfg["model"]["name"], **kwargs)
    state = load_file(str(weights), device=map_location)
    ref = model.state_dict()
    state = {k: v.to(ref[k].dtype) if k in ref else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{weights} does not fit model {cfg['model']['name']!r} "
                              f"with {kwargs}: {str(e)[:400]}") from e
    model.eval()
    return model, cfg
