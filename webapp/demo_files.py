"""The files the Gradio demo reads and writes: only uploads come in, and old outputs go.

**In.** Gradio refuses a request whose file path lies outside its upload
folder only for a launched app: mounted with ``gr.mount_gradio_app`` (app.py)
that check is skipped, and an event with ``preprocess=False`` hands the raw
payload to its handler anyway. So every handler that takes a file (photo,
morph, mean face, video, webcam) passes it through :func:`accepted_upload`
first: the real path (symlinks and ``..`` resolved) must lie inside Gradio's
upload folder (``$GRADIO_TEMP_DIR``, else ``<tmp>/gradio``) or the shipped
``webapp/examples/``. Refusals never name a server path.

**Out.** The demo writes its own files (JSON, CSV, GIF, MP4, annotated videos)
in one folder per request under ``<tmp>/kpcore_live/``; :func:`new_output_folder`
first removes folders older than :data:`MAX_AGE_S` and the oldest beyond
:data:`MAX_FOLDERS`. Gradio's copies of uploads and outputs follow the same age
through ``gr.Blocks(delete_cache=GRADIO_DELETE_CACHE)``. Both bounds can be
set with ``KPCORE_DEMO_FILES_MAX_AGE`` (seconds) and ``KPCORE_DEMO_FILES_MAX_COUNT``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
OUTPUT_FOLDER_NAME = "kpcore_live"
MAX_AGE_S = int(os.environ.get("KPCORE_DEMO_FILES_MAX_AGE", "3600"))
"""Seconds a request's files are kept (long enough to download them; a Space runs for weeks)."""
MAX_FOLDERS = int(os.environ.get("KPCORE_DEMO_FILES_MAX_COUNT", "200"))
"""At most this many request folders under the output root; the oldest go first."""
GRADIO_DELETE_CACHE = (max(1, min(MAX_AGE_S, 600)), MAX_AGE_S)
"""``(every, age)`` seconds for Gradio's own cleanup of uploads and output copies."""


class RefusedFile(ValueError):
    """A request named a file that is not an upload to this demo; the message names no server path."""


@dataclass(frozen=True)
class Upload:
    """A file a request may read: its real path, and the name to show (never a server path)."""

    path: Path
    name: str


def upload_folder() -> Path:
    """Gradio's upload folder, as Gradio computes it (``$GRADIO_TEMP_DIR`` or ``<tmp>/gradio``)."""
    from gradio.utils import get_upload_folder

    return Path(os.path.realpath(get_upload_folder()))


def allowed_roots() -> list[Path]:
    """Folders whose files a request may name: Gradio's uploads and the shipped example photos."""
    return [upload_folder(), Path(os.path.realpath(EXAMPLES_DIR))]


def payload_path(payload: Any) -> tuple[str | None, str | None]:
    """``(path, name as uploaded)`` of a Gradio file payload: a ``FileData`` dict or object, or a path."""
    if isinstance(payload, dict):
        path, name = payload.get("path"), payload.get("orig_name")
    elif isinstance(payload, (str, os.PathLike)):
        path, name = payload, None
    else:  # gradio's FileData, or a tempfile-like object of older Gradio versions (.name)
        path = getattr(payload, "path", None) or getattr(payload, "name", None)
        name = getattr(payload, "orig_name", None)
    if path is not None and not isinstance(path, (str, os.PathLike)):
        path = None
    return (os.fspath(path) if path else None), (str(name) if name else None)


def accepted_upload(payload: Any, what: str = "file") -> Upload:
    """The file a request names, if it is an upload to this demo (or a shipped example); else :class:`RefusedFile`.

    ``what`` names the input in messages ("photo", "video"). The shown name is
    the name the user uploaded, else the file's own name (only for accepted files).
    """
    path, name = payload_path(payload)
    if not path:
        raise RefusedFile(f"The {what} did not arrive (no file in the request); upload it again.")
    real = Path(os.path.realpath(path))
    if not any(real.is_relative_to(root) for root in allowed_roots()) or (real.exists() and not real.is_file()):
        raise RefusedFile(f"The {what} in this request is not a file uploaded to this demo; "
                          "upload it through the page (or click an example).")
    if not real.is_file():
        raise RefusedFile(f"The {what} {name or 'you sent'} is no longer on the server "
                          "(uploads are kept for a while only); upload it again.")
    return Upload(real, name or real.name)


# ------------------------------------------------------------------ outputs
def output_root() -> Path:
    return Path(tempfile.gettempdir()) / OUTPUT_FOLDER_NAME


def new_output_folder() -> Path:
    """A fresh folder for one request's files, after :func:`clean_outputs` has made room."""
    root = output_root()
    clean_outputs(root, max_folders=MAX_FOLDERS - 1)  # room for this one
    folder = root / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return folder


def clean_outputs(root: Path | None = None, max_age_s: float = MAX_AGE_S, max_folders: int = MAX_FOLDERS,
                  now: float | None = None) -> int:
    """Remove request folders under ``root`` older than ``max_age_s``, then the oldest beyond ``max_folders``.

    Returns how many were removed. A folder another request removes at the same time is skipped.
    """
    root = output_root() if root is None else root
    now = time.time() if now is None else now
    try:
        folders = [(entry.stat().st_mtime, Path(entry.path)) for entry in os.scandir(root)
                   if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return 0
    folders.sort(reverse=True)  # newest first
    doomed = [path for i, (mtime, path) in enumerate(folders) if now - mtime > max_age_s or i >= max_folders]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return len(doomed)
