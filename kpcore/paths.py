"""Where kpcore finds its folders: the repository beside the package, and the models packaged in it.

``checkpoints/`` (shipped models and the face detector), ``train_jobs/``,
``records/``, ``runs/`` and ``benchmarks/`` sit next to ``kpcore/`` in a source
checkout (or an editable install). Computed here once, so that a module moving
within the package never changes where it looks.

A wheel (``pip install kpcore``) has no repository around it. It carries the
default 68-point model (config and int8 ONNX) and the face detector under
``kpcore/_models/`` instead, copied there from ``checkpoints/`` when the wheel is
built (``setup.py``), so that the first prediction works offline. A checkpoint
name is looked up in :func:`checkpoint_roots`, first match wins:
``$KPCORE_CHECKPOINTS``, the repository's ``checkpoints/``, the packaged models
(then the Hub, by :func:`kpcore.models.hub.resolve_model_dir`).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
PACKAGED_MODELS_DIR = PACKAGE_DIR / "_models"
"""The models a wheel carries (absent in a source checkout: ``checkpoints/`` is used there)."""
PACKAGED_MODELS = ("face68-300w", "face-detector")
"""The ``checkpoints/`` folders the wheel carries (which of their files: ``setup.py``)."""
CHECKPOINTS_ENV = "KPCORE_CHECKPOINTS"
"""Folders (``os.pathsep``-separated) searched for checkpoints by name before the shipped ones."""
CONFIG_FILE = "config.json"
IN_SOURCE_TREE = (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "checkpoints").is_dir()
"""True in a source checkout or editable install; False for a wheel in site-packages."""
REPO_CHECKPOINTS_DIR = REPO_ROOT / "checkpoints"
CHECKPOINTS_DIR = REPO_CHECKPOINTS_DIR if IN_SOURCE_TREE else PACKAGED_MODELS_DIR
"""The shipped checkpoints: the repository's ``checkpoints/``, or the packaged models of a wheel."""
TRAIN_JOBS_DIR = REPO_ROOT / "train_jobs"
RECORDS_DIR = REPO_ROOT / "records"
RUNS_DIR = REPO_ROOT / "runs"
BENCH_FILE = REPO_ROOT / "benchmarks" / "bench.json"


def checkpoint_roots() -> list[Path]:
    """Folders holding checkpoint folders, in lookup order: ``$KPCORE_CHECKPOINTS`` (read now),
    the repository's ``checkpoints/`` (source checkout only), the packaged models."""
    env = [Path(p).expanduser() for p in os.environ.get(CHECKPOINTS_ENV, "").split(os.pathsep) if p.strip()]
    roots = [*env, *([REPO_CHECKPOINTS_DIR] if IN_SOURCE_TREE else []), PACKAGED_MODELS_DIR]
    return [r for r in dict.fromkeys(roots) if r.is_dir()]


def find_checkpoint(name: str) -> Path | None:
    """The first ``<root>/<name>/`` of :func:`checkpoint_roots` holding a ``config.json``, or None."""
    if not name or Path(name).name != name:  # a bare folder name only, never a path
        return None
    for root in checkpoint_roots():
        if (root / name / CONFIG_FILE).is_file():
            return root / name
    return None


def known_checkpoints() -> list[str]:
    """Names :func:`find_checkpoint` resolves, sorted."""
    return sorted({p.name for root in checkpoint_roots() for p in root.iterdir() if (p / CONFIG_FILE).is_file()})
