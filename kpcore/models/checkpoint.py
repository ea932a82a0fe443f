"""Checkpoint folders: ``config.json`` + ``model.safetensors`` (see docs/FORMATS.md).

A checkpoint carries everything needed to rebuild its model: architecture name
and arguments, point count, input size/colour/normalisation/crop, flip pairs,
task, metrics. Writes are atomic: a folder is written beside its target
(``.NAME.tmp-PID-*``) and swapped in (the old folder is renamed ``.NAME.old-PID``
first, then removed), so a crash never leaves a half-written checkpoint in place.
A crash between the two renames leaves no ``NAME`` but an intact ``.NAME.old-PID``:
:func:`recover_interrupted_save` puts it back, and removes the leftovers of
writers that are no longer running.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

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


def _atomic_dir(target: Path) -> Path:
    """A temporary folder beside ``target``; :func:`_swap_in` moves it into place.

    Its name carries this process's id, so that a later writer can tell a leftover
    of a dead process from a folder being written. ``mkdtemp`` makes a private
    (0700) folder; give it the usual permissions.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    tmp.chmod(0o777 & ~_umask())
    return tmp


def _swap_in(tmp: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    # a kill here leaves no target, but an intact old: recover_interrupted_save() puts it back
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _writer_pid(leftover: Path) -> int | None:
    """The process id in a ``.NAME.tmp-PID-*`` / ``.NAME.old-PID`` name (None for older names)."""
    match = re.search(r"\.(?:tmp|old)-(\d+)(?:-|$)", leftover.name)
    return int(match.group(1)) if match else None


def _is_running(pid: int | None) -> bool:
    if pid is None:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _is_complete(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def recover_interrupted_save(target: str | Path) -> Path | None:
    """Repair what a killed :func:`save_checkpoint` may have left beside ``target``.

    If ``target`` is missing but an intact ``.NAME.old-PID`` copy of a writer that is no
    longer running exists (a kill between the two renames of the swap), the newest such
    copy is renamed back to ``target``. Then the ``.NAME.tmp-*`` and ``.NAME.old-*``
    folders of writers that are no longer running are removed.

    Returns:
        The copy that was put back (its old path), or None.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return None
    prefix = f".{target.name}."
    leftovers = [p for p in target.parent.iterdir() if p.is_dir() and p.name.startswith(prefix)
                 and p.name[len(prefix):].startswith(("tmp-", "old-"))
                 and not _is_running(_writer_pid(p))]
    restored = None
    if not target.exists():
        olds = [p for p in leftovers if p.name[len(prefix):].startswith("old-") and _is_complete(p)]
        if olds:
            restored = max(olds, key=lambda p: p.stat().st_mtime)
            os.replace(restored, target)
            leftovers.remove(restored)
            log.warning("put back %s from %s, left by a save that was interrupted", target, restored.name)
    for p in leftovers:
        shutil.rmtree(p, ignore_errors=True)
    return restored


def _write_failure(folder: Path, err: BaseException) -> str:
    """One sentence for a checkpoint that could not be written: why, what is left, what to do."""
    text = str(err)
    full = getattr(err, "errno", None) == errno.ENOSPC or any(
        s in text for s in ("No space left", "StorageFull", "os error 28", "code: 28"))
    kept = ("the previous checkpoint there is unchanged" if _is_complete(folder)
            else "no checkpoint was written there")
    if full:
        try:
            free = f" ({shutil.disk_usage(folder.parent).free / 2**20:.0f} MiB free now)"
        except OSError:
            free = ""
        return (f"cannot write the checkpoint {folder}: the disk is full{free}; {kept}. "
                f"Free some space on that disk (or choose a folder on another one) and run again")
    return f"cannot write the checkpoint {folder}: {text}; {kept}. Fix the cause and run again"


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file via a temporary file and a rename; on failure ``path`` is unchanged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp files are private (0600)
        os.replace(tmp, path)
    except BaseException:  # e.g. a full disk: leave no stray temporary file
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
    from safetensors import SafetensorError
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
    except (OSError, SafetensorError) as err:  # a full disk, a read-only folder: one clear error
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(_write_failure(folder, err)) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    recover_interrupted_save(folder)  # leftovers of earlier writers that were killed
    return folder


def _fix_hint(folder: Path) -> str:
    return (f"the checkpoint in {folder} is damaged or was edited by hand: export it again "
            f"(`kpcore export RUN --to {folder}`), pull it again from the Hub, or restore the folder from a copy")


def _check_fields(cfg: dict[str, Any], path: Path) -> None:
    """The fields every reader of a checkpoint relies on, with the types it expects."""
    from ..data.facts import FACTS
    from ..data.inputs import InputSpec

    def bad(field: str, value: Any, expected: str) -> CheckpointError:
        return CheckpointError(f"{path}: {field} = {value!r} is invalid ({expected}); {_fix_hint(path.parent)}")

    model = cfg.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise bad("model", model, "expected {\"name\": <registered model>, \"kwargs\": {...}}")
    if not isinstance(model.get("kwargs", {}), dict):
        raise bad("model.kwargs", model.get("kwargs"), "expected an object of the model's arguments")
    k = cfg.get("num_keypoints")
    if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
        raise bad("num_keypoints", k, "expected a positive integer")
    if model.get("kwargs", {}).get("num_keypoints", k) != k:
        raise bad("model.kwargs.num_keypoints", model["kwargs"]["num_keypoints"], f"num_keypoints is {k}")
    if cfg.get("layout") not in FACTS:
        raise bad("layout", cfg.get("layout"), f"expected one of {sorted(FACTS)}")
    pairs = cfg.get("flip_pairs", [])
    if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(i, int) and 0 <= i < k for i in p) for p in pairs):
        raise bad("flip_pairs", pairs, f"expected a list of [i, j] point pairs with 0 <= i, j < {k}")
    inp = cfg.get("input")
    if not isinstance(inp, dict):
        raise bad("input", inp, "expected an object with width, height, color, mean, std, crop")
    try:
        InputSpec.from_dict(inp).validate()
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: input {inp!r} is invalid ({e}); {_fix_hint(path.parent)}") from e


def read_config(folder: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint's ``config.json`` (its format and the fields readers rely on)."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"{folder} is not a kpcore checkpoint: {CONFIG_FILE} is missing "
                              f"(expected {CONFIG_FILE} + {WEIGHTS_FILE}, see docs/FORMATS.md)")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); {_fix_hint(folder)}") from e
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(cfg).__name__}; {_fix_hint(folder)}")
    if cfg.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format is {cfg.get('format')!r}, expected {FORMAT!r}")
    version = cfg.get("format_version", 0)
    if not isinstance(version, int):
        raise CheckpointError(f"{path}: format_version = {version!r} is not an integer; {_fix_hint(folder)}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {cfg['format_version']} is newer than this kpcore "
                              f"understands ({FORMAT_VERSION}); upgrade kpcore")
    _check_fields(cfg, path)
    return cfg


def load_weights(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a ``model.safetensors``; a truncated or damaged file raises :class:`CheckpointError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: {path.name} is missing; {_fix_hint(path.parent)}")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} cannot be read: it is truncated or damaged ({path.stat().st_size:,} "
                              f"bytes; {str(e)[:200]}); {_fix_hint(path.parent)}") from e


def load_checkpoint(folder: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint folder; returns ``(model in eval mode, config)``."""
    from . import create_model

    folder = Path(folder)
    cfg = read_config(folder)
    weights = folder / WEIGHTS_FILE
    state = load_weights(weights, device=map_location)
    kwargs = dict(cfg["model"].get("kwargs", {}))
    try:
        model = create_model(cfg["model"]["name"], **kwargs)
    except (KeyError, TypeError, ValueError) as e:  # an unknown name or argument in config.json
        raise CheckpointError(f"{folder / CONFIG_FILE}: model {cfg['model']['name']!r} with {kwargs} cannot be "
                              f"built ({e}); {_fix_hint(folder)}") from e
    ref = model.state_dict()
    state = {k: v.to(ref[k].dtype) if k in ref else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{weights} does not fit model {cfg['model']['name']!r} "
                              f"with {kwargs}: {str(e)[:400]}") from e
    model.eval()
    return model, cfg
