"""Streamlit helpers shared by the dashboard pages: cached loaders and messages.

Pages draw; :mod:`webapp.records` reads files; :mod:`kpcore` computes. Models
are loaded once per process under ``st.cache_resource``; tables under
``st.cache_data`` keyed by the files' modification times, so a run that is
still training shows new epochs on the next rerun.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from kpcore.data.facts import FACTS, DatasetFacts
from kpcore.live.render import draw_keypoints, points_canvas
from webapp import records

DATA_HINT = (
    "Original images not found under the data root (`{root}`), so saved thumbnails are shown. "
    "To see the originals, get the dataset (`python -m kpcore download imm`, "
    "`python -m kpcore download ibug300w`) and start the dashboard with `KPCORE_DATA` set to "
    "the folder that holds `imm_face_db/` and `ibug_300W_large_face_landmark_dataset/`."
)
# Overlay colours of kpcore.live.render (PRED_COLOR red, TRUE_COLOR green, ERROR_LINE_COLOR yellow).
LEGEND = ":red[**●** predicted] · :green[**●** true] · :orange[**—** error line (predicted to true)]"
NO_RUNS_HINT = (
    "No runs found in {roots}. Train one (see `train_jobs/`), or set `KPCORE_RUNS` to a folder "
    "of run folders."
)
NO_CHECKPOINT_HINT = (
    "No checkpoint folders (with `config.json`) in {roots} or in any run's `best/`. "
    "Set `KPCORE_CHECKPOINTS` to a folder of checkpoints, or train a model."
)


def _stamp(paths: list[Path]) -> tuple:
    """A cache key that changes when any file under ``paths`` changes."""
    out = []
    for root in paths:
        if root.is_dir():
            for p in root.rglob("*"):
                if p.suffix in (".csv", ".json", ".yaml", ".yml") and p.is_file():
                    out.append((str(p), p.stat().st_mtime_ns))
    return tuple(sorted(out))


def _roots_key() -> tuple:
    return (os.environ.get(records.RUNS_ENV, ""), os.environ.get(records.CHECKPOINTS_ENV, ""),
            _stamp(records.runs_roots() + records.checkpoint_roots()))


@st.cache_data(show_spinner=False, max_entries=8)
def _runs(key: tuple) -> list[records.Run]:
    return records.list_runs()


@st.cache_data(show_spinner=False, max_entries=8)
def _eval_sources(key: tuple) -> list[records.EvalSource]:
    return records.list_eval_sources()


@st.cache_data(show_spinner=False, max_entries=8)
def _checkpoints(key: tuple) -> list[records.CheckpointInfo]:
    return records.list_checkpoints()


def runs() -> list[records.Run]:
    """All run folders (cached until a file changes)."""
    return _runs(_roots_key())


def eval_sources() -> list[records.EvalSource]:
    """All per-image tables (cached until a file changes)."""
    return _eval_sources(_roots_key())


def checkpoints() -> list[records.CheckpointInfo]:
    """All checkpoint folders (cached until a file changes)."""
    return _checkpoints(_roots_key())


def data_hint() -> str:
    """:data:`DATA_HINT` with the data root this process reads."""
    return DATA_HINT.format(root=os.environ.get("KPCORE_DATA") or "./data")


def nme_pct(value: float) -> str:
    return records.pct(value)


def roots_text(paths: list[Path]) -> str:
    return ", ".join(f"`{p}`" for p in paths)


def facts_or_none(layout: str | None) -> DatasetFacts | None:
    return FACTS.get(layout) if layout else None


# ------------------------------------------------------------------- models
@dataclass
class LoadedModel:
    model: Any  # torch.nn.Module
    config: dict


@st.cache_resource(show_spinner="Loading checkpoint…", max_entries=4)
def load_model(folder: str) -> LoadedModel:
    """``kpcore.models.checkpoint.load_checkpoint`` once per folder and process."""
    from kpcore.models.checkpoint import load_checkpoint

    model, config = load_checkpoint(folder)
    model.eval()
    return LoadedModel(model, config)


def checkpoint_loader_missing() -> str | None:
    """Why checkpoints cannot be loaded in this checkout, or None if they can."""
    try:
        from kpcore.models.checkpoint import load_checkpoint  # noqa: F401
    except ImportError as e:
        return f"`kpcore.models.checkpoint` is not available yet ({e}); learned filters need it."
    return None


# --------------------------------------------------------------------- data
@st.cache_data(show_spinner="Reading labels…", max_entries=8)
def _load_samples(task: str, split: str, data_root: str) -> list:
    from kpcore.data import load_split

    return load_split(task, split, data_root or None)


def load_samples(task: str, split: str) -> list:
    """``kpcore.data.load_split`` under the data root of ``$KPCORE_DATA`` (cached per root)."""
    return _load_samples(task, split, os.environ.get("KPCORE_DATA", ""))


def crop_for_task(sample, info) -> tuple[np.ndarray, np.ndarray]:
    """A sample as its task's model sees it before augmentation: the face box or the whole
    image, warped to the task's input size (in colour, for display), with its points moved along."""
    from kpcore.data.geometry import apply
    from kpcore.data.loader import InputSpec, make_input

    width, height = info.input_size
    spec = InputSpec(width, height, color="rgb", crop_mode=info.crop_mode, enlarge=info.enlarge)
    _, m, crop = make_input(read_rgb(sample.image_path), sample.box, spec)
    return crop, apply(m, sample.points)


# ------------------------------------------------------------------- images
ZOOM_MARGIN = 1.6  # crop side / points' extent when zooming to a face
MIN_ZOOM_FRACTION = 0.4  # of the shorter image side: a single point (nose tip) keeps its face


@dataclass
class ShownImage:
    """An image to show for one per-image row, and where it came from."""

    image: np.ndarray
    origin: str  # "dataset", "thumbnail" or "canvas"
    caption: str


@st.cache_data(show_spinner=False, max_entries=64)
def _read_rgb(path: str, mtime: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_rgb(path: Path) -> np.ndarray:
    return _read_rgb(str(path), path.stat().st_mtime_ns)


LABEL_BAND = 22  # px of the caption band above a labelled tile


def labelled_tile(image: np.ndarray, text: str, width: int = 320) -> np.ndarray:
    """``image`` resized to ``width`` with ``text`` written in a white band above it, so tiles
    of one grid image keep their own captions."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    scale = width / im.width
    im = im.resize((width, max(1, round(im.height * scale))))
    out = Image.new("RGB", (width, im.height + LABEL_BAND), (255, 255, 255))
    out.paste(im, (0, LABEL_BAND))
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(out)
    while len(text) > 4 and draw.textlength(text, font=font) > width - 6:
        text = text[:-2]
    draw.text((3, 4), text, fill=(20, 20, 20), font=font)
    return np.asarray(out)


def zoom_to_points(image: np.ndarray, *point_sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``image`` to the points' box enlarged ``ZOOM_MARGIN`` times (whole image if that is
    smaller); returns the crop and the ``(x, y)`` offset to subtract from points."""
    pts = np.concatenate([p[np.all(np.isfinite(p), axis=1)] for p in point_sets])
    h, w = image.shape[:2]
    if len(pts) == 0:
        return image, np.zeros(2)
    centre = (pts.min(axis=0) + pts.max(axis=0)) / 2
    side = max(float(np.ptp(pts, axis=0).max()) * ZOOM_MARGIN, MIN_ZOOM_FRACTION * min(h, w))
    x0, y0 = (int(max(0, np.floor(c - side / 2))) for c in centre)
    x1, y1 = int(min(w, np.ceil(centre[0] + side / 2))), int(min(h, np.ceil(centre[1] + side / 2)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return image, np.zeros(2)
    return image[y0:y1, x0:x1], np.array([x0, y0], dtype=np.float64)


def image_for(source: records.EvalSource, image_id: str, pred: np.ndarray, true: np.ndarray,
              *, error_lines: bool = True, show_ids: bool = False) -> ShownImage:
    """The dataset image with overlays, else the saved thumbnail, else points on a blank canvas."""
    layout = facts_or_none(source.layout)
    path = records.dataset_image_path(source.task, image_id)
    if path is not None:
        image, offset = zoom_to_points(read_rgb(path), pred, true)
        img = draw_keypoints(image, pred - offset, layout, true_points=true - offset,
                             error_lines=error_lines, show_ids=show_ids)
        return ShownImage(img, "dataset", f"{image_id} · red = predicted, green = true")
    thumb = records.thumb_for(source.thumbs, image_id)
    if thumb is not None:
        return ShownImage(read_rgb(thumb), "thumbnail",
                          f"{image_id} · saved thumbnail (dataset not found under the data root)")
    canvas, (p, t) = points_canvas(pred, true, size=360)
    img = draw_keypoints(canvas, p, layout, true_points=t, error_lines=error_lines, show_ids=show_ids)
    return ShownImage(img, "canvas", f"{image_id} · points only (no image found): red = predicted, green = true")


# ------------------------------------------------------------------ widgets
def reset_on_new_group(page: str, group: tuple, defaults: dict[str, Any]) -> None:
    """Put ``defaults`` (widget key -> value) into the session when the page's chosen test set
    ``group`` differs from the one it showed last, so a model list opens with the new set's
    models: a multiselect keeps its old picks otherwise, and picks that are not options of the
    new set leave it empty. Also when a widget's value is gone: Streamlit drops the state of a
    page's widgets when another page runs, while this page's marker stays."""
    shown = f"{page}_group_shown"
    if st.session_state.get(shown) != group or any(k not in st.session_state for k in defaults):
        st.session_state.update(defaults)
        st.session_state[shown] = group
