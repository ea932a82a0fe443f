"""The Triage page's helpers without Streamlit: where batch tables are found, the photo or
frame behind a row, and the page's plotly figures. The computations are in
:mod:`kpcore.evaluation.triage`.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kpcore.evaluation.triage import METADATA_KEY, POSE_COLUMNS, SIDE, TABLE_SUFFIXES, Ranking
from kpcore.paths import RUNS_DIR
from webapp.figures import MARGIN, color, nme_axis

BATCH_ENV = "KPCORE_BATCH_DIR"
DEFAULT_BATCH_DIR = RUNS_DIR / "batch"  # runs/ is ignored by git: tables stay out of the repository
MAX_TABLES_LISTED = 200


# ------------------------------------------------------------------- tables
def batch_dir() -> Path:
    """The folder the page may open tables from: ``$KPCORE_BATCH_DIR``, else ``<repo>/runs/batch``."""
    env = os.environ.get(BATCH_ENV, "").strip()
    return Path(env).expanduser().resolve() if env else DEFAULT_BATCH_DIR.resolve()


def list_tables(root: Path) -> list[Path]:
    """Batch tables under ``root`` (any depth; links that lead out of it left out), newest first;
    at most :data:`MAX_TABLES_LISTED`."""
    root = root.resolve()
    if not root.is_dir():
        return []
    found = [p for p in root.rglob("*") if p.suffix.lower() in TABLE_SUFFIXES and p.is_file()
             and p.resolve().is_relative_to(root)]
    found.sort(key=lambda p: (-p.stat().st_mtime, str(p)))
    return found[:MAX_TABLES_LISTED]


def resolve_under(root: Path, text: str) -> Path:
    """``text`` (absolute, or relative to ``root``) as a table path inside ``root``.

    Raises:
        ValueError: the path leaves ``root`` (``..``, an absolute path elsewhere, a link out),
            is not a file, or is not a table.
    """
    root = root.resolve()
    path = (root / Path(text.strip()).expanduser()).resolve()  # an absolute text replaces root
    if not path.is_relative_to(root):
        raise ValueError(f"{text!r} is outside the batch folder {root}; the page opens tables only from there "
                         f"(set {BATCH_ENV} to another folder, or upload the table).")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(f"{text!r} is not a batch table; expected a file ending in {', '.join(TABLE_SUFFIXES)}.")
    if not path.is_file():
        raise ValueError(f"{text!r}: no such file under {root}.")
    return path


def table_csv(rows: pd.DataFrame) -> bytes:
    """Rows of a batch table as CSV, for download (without the face-size column the page adds)."""
    return rows.drop(columns=[SIDE], errors="ignore").to_csv(index=False).encode()


def table_parquet(rows: pd.DataFrame, meta: dict) -> bytes:
    """Rows of a batch table as Parquet with the table's ``kpcore`` metadata, for download
    (without the face-size column the page adds)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(rows.drop(columns=[SIDE], errors="ignore"), preserve_index=False)
    if meta:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: json.dumps(meta).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


# ------------------------------------------------------------------- images
def upload_roots() -> tuple[Path, ...]:
    """Where the photos of an *uploaded* table may be read: the batch folder and the data root
    (``$KPCORE_DATA``). An upload names any path it likes; the server shows only what it serves anyway."""
    data = os.environ.get("KPCORE_DATA") or "./data"
    return tuple(dict.fromkeys((batch_dir(), Path(data).expanduser().resolve())))


def is_under(source: str, roots: tuple[Path, ...] | None) -> bool:
    """Whether ``source`` lies inside one of ``roots`` (links followed); any path when ``roots`` is None."""
    if roots is None:
        return True
    path = Path(source).resolve()
    return any(path.is_relative_to(r) for r in roots)


def read_frame(source: str, frame: int | None,
               roots: tuple[Path, ...] | None = None) -> tuple[np.ndarray, tuple[int, int]] | None:
    """The photo (EXIF-oriented, as predict read it) or the video frame of a row, and the
    ``(width, height)`` its points are in; None when the file is not on this machine, not inside
    ``roots`` (when given), or unreadable."""
    path = Path(source)
    if not path.is_file() or not is_under(source, roots):
        return None
    if frame is None or pd.isna(frame):
        from kpcore.data.imageio import load_image_with_info
        from kpcore.errors import BadImageError

        try:
            image, info = load_image_with_info(path)
        except (BadImageError, OSError):
            return None
        return image, info.size
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(frame))
        ok, bgr = cap.read()
    finally:
        cap.release()
    if not ok:
        return None
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return rgb, (rgb.shape[1], rgb.shape[0])


def to_shown(points: np.ndarray, box: tuple[float, ...], size: tuple[int, int],
             shown: tuple[int, int]) -> tuple[np.ndarray, tuple[float, ...]]:
    """Points (pixel centres) and a box (edges) in ``size`` pixels, moved to an image of ``shown`` pixels."""
    sx, sy = shown[0] / size[0], shown[1] / size[1]
    pts = (np.asarray(points, np.float64) + 0.5) * [sx, sy] - 0.5
    return pts, (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


# ------------------------------------------------------------------ figures
def faces_per_image_figure(per_image: pd.Series) -> go.Figure:
    """Bars: how many photos/frames have 0, 1, 2, ... faces."""
    bars = per_image.value_counts().sort_index()
    fig = go.Figure(go.Bar(x=bars.index.astype(int), y=bars.to_numpy(), marker_color=color(0),
                           hovertemplate="%{y} images with %{x} face(s)<extra></extra>"))
    fig.update_layout(height=300, margin=MARGIN, title="Faces per image", xaxis_title="faces found",
                      yaxis_title="images", xaxis={"dtick": 1}, bargap=0.2)
    return fig


def confidence_figure(confidence: np.ndarray, low: float) -> go.Figure:
    """Histogram of per-face confidence with the demo's low-confidence line."""
    fig = go.Figure(go.Histogram(x=np.asarray(confidence), xbins={"start": 0, "end": 1.0001, "size": 0.02},
                                 marker_color=color(0), hovertemplate="confidence %{x}<br>%{y} faces<extra></extra>"))
    fig.add_vline(x=low, line_dash="dot", line_color="darkorange", annotation_text=f"low < {low:g}",
                  annotation_position="top left")
    fig.update_layout(height=300, margin=MARGIN, title="Confidence", xaxis_title="confidence (0-1)",
                      yaxis_title="faces", xaxis_range=[0, 1.0])
    return fig


def pose_figure(faces: pd.DataFrame) -> go.Figure:
    """Histograms of yaw, pitch and roll in degrees, side by side."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=[f"{c} (°)" for c in POSE_COLUMNS], horizontal_spacing=0.06)
    for i, c in enumerate(POSE_COLUMNS):
        fig.add_trace(go.Histogram(x=faces[c], nbinsx=36, marker_color=color(i + 1), showlegend=False,
                                   hovertemplate=f"{c} %{{x}}°<br>%{{y}} faces<extra></extra>"), row=1, col=i + 1)
    fig.update_yaxes(title_text="faces", row=1, col=1)
    fig.update_layout(height=300, margin=MARGIN, title="Head pose", bargap=0.05)
    return fig


def side_figure(side: np.ndarray) -> go.Figure:
    """Histogram of face size (the box's longer side in pixels)."""
    fig = go.Figure(go.Histogram(x=np.asarray(side), nbinsx=40, marker_color=color(4),
                                 hovertemplate="%{x} px<br>%{y} faces<extra></extra>"))
    fig.update_layout(height=300, margin=MARGIN, title="Face size", xaxis_title="box side (px)", yaxis_title="faces")
    return fig


def ranking_figure(curve: pd.DataFrame, ranking: Ranking, fraction: float) -> go.Figure:
    """Share of failures found against share of faces inspected: by confidence, random, best possible."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=100 * curve["inspected"], y=100 * curve["best"], mode="lines", name="best possible "
                             "(worst faces first)", line={"color": "#999999", "dash": "dot"}, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=100 * curve["inspected"], y=100 * curve["random"], mode="lines",
                             name="random order", line={"color": "#999999", "dash": "dash"}, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=100 * curve["inspected"], y=100 * curve["found"], mode="lines",
                             name="least confident first", line={"color": color(0), "width": 3},
                             hovertemplate="inspect %{x:.1f}% → %{y:.1f}% of failures<extra></extra>"))
    fig.add_vline(x=100 * fraction, line_dash="dot", line_color="crimson",
                  annotation_text=f"lowest {100 * fraction:g}%: {ranking.found} of {ranking.failures} failures",
                  annotation_position="bottom right")
    fig.update_layout(height=380, margin=MARGIN, title="Failures found, inspecting the least confident faces first",
                      xaxis_title="faces inspected (%)", yaxis_title="failures found (%)",
                      xaxis_range=[0, 100], yaxis_range=[0, 102], legend={"orientation": "h", "y": -0.25})
    return fig


def nme_confidence_figure(confidence: np.ndarray, nmes: np.ndarray, threshold: float, norm_name: str) -> go.Figure:
    """Per-face NME (%) against confidence, the failure threshold marked."""
    nmes = np.asarray(nmes, np.float64)
    fail = nmes > threshold
    fig = go.Figure()
    for mask, name, c in ((~fail, "NME ≤ threshold", color(0)), (fail, "failure", "crimson")):
        fig.add_trace(go.Scatter(x=np.asarray(confidence)[mask], y=100 * nmes[mask], mode="markers", name=name,
                                 marker={"color": c, "size": 6, "opacity": 0.7},
                                 hovertemplate="confidence %{x:.3f}<br>NME %{y:.2f}%<extra></extra>"))
    fig.add_hline(y=100 * threshold, line_dash="dot", line_color="crimson")
    fig.update_layout(height=380, margin=MARGIN, title="Error vs confidence (labelled faces)",
                      xaxis_title="confidence (0-1)", yaxis_title=nme_axis(norm_name, short=True),
                      yaxis_type="log", legend={"orientation": "h", "y": -0.25})
    return fig
