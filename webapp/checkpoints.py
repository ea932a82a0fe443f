"""Where the Gradio demo finds its checkpoints, and the one loaded predictor per checkpoint.

Shared by the photo tabs (:mod:`webapp.live`) and the webcam and video tabs
(:mod:`webapp.live_video`), so that neither imports the other. Checkpoints are
looked up by folder name in ``$KPCORE_CHECKPOINTS`` (``os.pathsep``-separated
folders) and then in ``<repo>/checkpoints``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from kpcore.paths import CHECKPOINTS_DIR

CHECKPOINTS_ENV = "KPCORE_CHECKPOINTS"
MAX_LOADED = 4
"""Predictors kept loaded at once (one per demo model)."""


def checkpoint_roots() -> list[Path]:
    """The folders searched for checkpoints, first match wins."""
    extra = [Path(p) for p in os.environ.get(CHECKPOINTS_ENV, "").split(os.pathsep) if p.strip()]
    return [*extra, CHECKPOINTS_DIR]


def find_checkpoint(name: str, roots: list[Path] | None = None) -> Path | None:
    """The first ``<root>/<name>/`` holding a ``config.json`` (roots: :func:`checkpoint_roots`), or None."""
    for root in checkpoint_roots() if roots is None else roots:
        if (root / name / "config.json").is_file():
            return root / name
    return None


@functools.lru_cache(maxsize=MAX_LOADED)
def predictor(folder: str):
    """``kpcore.Predictor.from_pretrained(folder)``, loaded once per folder and process."""
    from kpcore import Predictor

    return Predictor.from_pretrained(folder)
