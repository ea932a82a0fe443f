"""Console output shared by the commands: whether to draw progress bars."""

from __future__ import annotations

import os

PROGRESS_ENV = "KPCORE_PROGRESS"


def progress_enabled() -> bool:
    """Progress bars on unless ``KPCORE_PROGRESS=0`` (tests, logs to files)."""
    return os.environ.get(PROGRESS_ENV, "1") != "0"
