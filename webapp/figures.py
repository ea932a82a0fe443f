"""Plotly figures for the dashboard (pure functions of tables; no Streamlit)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

if TYPE_CHECKING:
    from kpcore.facts import DatasetFacts
    from webapp.records import Run

PALETTE = qualitative.Plotly + qualitative.D3
MARGIN = {"l": 10, "r": 10, "t": 40, "b": 10}


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def training_curves(runs: list[Run]) -> go.Figure:
    """Train (dashed) and val (solid) loss, and val NME, per epoch; one colour per run."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Validation NME"),
                        horizontal_spacing=0.08)
    for i, run in enumerate(runs):
        m = run.metrics
        if m is None or "epoch" not in m:
            continue
        c = color(i)
        for col, dash, show in (("train_loss", "dash", False), ("val_loss", "solid", True)):
            if col in m:
                fig.add_trace(go.Scatter(
                    x=m["epoch"], y=m[col], name=run.name, legendgroup=run.name, showlegend=show,
                    line={"color": c, "dash": dash},
                    hovertemplate=f"{run.name}<br>{col} %{{y:.4g}} · epoch %{{x}}<extra></extra>",
                ), row=1, col=1)
        if "val_nme" in m:
            fig.add_trace(go.Scatter(
                x=m["epoch"], y=m["val_nme"], name=run.name, legendgroup=run.name, showlegend=False,
                line={"color": c}, hovertemplate=f"{run.name}<br>val NME %{{y:.4f}} · epoch %{{x}}<extra></extra>",
            ), row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    # Runs of one task can differ 100x in loss: log scale, labels at powers of ten only.
    fig.update_yaxes(type="log", dtick=1, exponentformat="power", minor={"showgrid": True},
                     row=1, col=1)
    fig.update_layout(height=400, margin=MARGIN,
                      legend={"orientation": "h", "y": -0.22, "title": {"text": "loss: dashed = train, solid = val · "}})
    return fig


def nme_histogram(nme: np.ndarray, failure_nme: float) -> go.Figure:
    """Histogram of per-image NME with the failure threshold marked."""
    fig = go.Figure(go.Histogram(x=nme, nbinsx=min(60, max(10, len(nme) // 3)),
                                 marker_color=color(0), hovertemplate="NME %{x}<br>%{y} images<extra></extra>"))
    fig.add_vline(x=failure_nme, line_dash="dot", line_color="crimson",
                  annotation_text=f"failure > {failure_nme:g}")
    fig.update_layout(height=320, margin=MARGIN, xaxis_title="NME", yaxis_title="images",
                      title="Per-image error")
    return fig


def ced_figure(curves: dict[str, tuple[pd.DataFrame, float, float]]) -> go.Figure:
    """Cumulative error curves: ``{label: (curve with nme/fraction, auc, failure_rate)}``."""
    fig = go.Figure()
    for i, (label, (curve, auc, fr)) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(
            x=curve["nme"], y=curve["fraction"], mode="lines", line={"color": color(i)},
            name=f"{label} · AUC {auc:.3f} · FR {fr:.1%}",
            hovertemplate="NME ≤ %{x:.3f}: %{y:.1%}<extra></extra>",
        ))
    fig.update_layout(height=320, margin=MARGIN, xaxis_title="NME", yaxis_title="share of images",
                      yaxis_range=[0, 1.02], title="Cumulative error distribution",
                      legend={"orientation": "h", "y": -0.25})
    return fig


def keypoint_errors_on_face(shape: np.ndarray, errors: np.ndarray, layout: DatasetFacts | None,
                            unit: str = "px") -> go.Figure:
    """The mean face shape, each point coloured and sized by its mean error."""
    shape = np.asarray(shape)
    errors = np.asarray(errors, dtype=np.float64)
    fig = go.Figure()
    if layout is not None:
        xs: list[float | None] = []
        ys: list[float | None] = []
        for a, b in layout.edges:
            xs += [shape[a, 0], shape[b, 0], None]
            ys += [shape[a, 1], shape[b, 1], None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "#bbbbbb", "width": 1},
                                 hoverinfo="skip", showlegend=False))
    groups = layout.group_of if layout is not None else [""] * len(shape)
    span = float(errors.max() - errors.min()) or 1.0
    sizes = 8 + 22 * (errors - errors.min()) / span
    fig.add_trace(go.Scatter(
        x=shape[:, 0], y=shape[:, 1], mode="markers", showlegend=False,
        marker={"size": sizes, "color": errors, "colorscale": "YlOrRd", "showscale": True,
                "colorbar": {"title": f"mean error ({unit})"}, "line": {"color": "#444", "width": 0.5}},
        customdata=np.stack([np.arange(len(shape)), errors], axis=1),
        text=groups,
        hovertemplate="point %{customdata[0]} (%{text})<br>mean error %{customdata[1]:.2f} " + unit + "<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", scaleratio=1, visible=False)
    fig.update_xaxes(visible=False)
    fig.update_layout(height=420, margin=MARGIN, title="Error per keypoint (mean shape; bigger = harder)",
                      plot_bgcolor="white")
    return fig


def point_error_bars(errors: np.ndarray, layout: DatasetFacts | None) -> go.Figure:
    """Each point's error on one image."""
    groups = layout.group_of if layout is not None else [""] * len(errors)
    fig = go.Figure(go.Bar(x=np.arange(len(errors)), y=errors, marker_color=color(1), text=groups,
                           hovertemplate="point %{x} (%{text})<br>%{y:.2f} px<extra></extra>"))
    fig.update_layout(height=220, margin=MARGIN, xaxis_title="point id", yaxis_title="error (px)",
                      title="Error of each point on this image")
    return fig


def accuracy_vs_latency(bench: pd.DataFrame) -> go.Figure:
    """One marker per model: NME against single-image latency; marker size ~ parameters."""
    fig = go.Figure()
    tasks = list(dict.fromkeys(bench.get("task", pd.Series(["?"] * len(bench))).fillna("?")))
    params = bench["params"].astype(float) if "params" in bench else pd.Series(np.ones(len(bench)))
    pmax = float(params.max()) or 1.0
    for i, task in enumerate(tasks):
        rows = bench[bench["task"].fillna("?") == task] if "task" in bench else bench
        size = 10 + 30 * np.sqrt(params.loc[rows.index] / pmax)
        fig.add_trace(go.Scatter(
            x=rows["latency_ms_b1"], y=rows["nme"], mode="markers+text", name=str(task),
            text=rows["model"], textposition="top center",
            marker={"size": size, "color": color(i), "opacity": 0.8},
            customdata=np.stack([params.loc[rows.index], rows.get("mean_px_error", rows["nme"] * np.nan)], axis=1),
            hovertemplate="%{text}<br>NME %{y:.4f}<br>%{x:.2f} ms / image<br>%{customdata[0]:,.0f} params<extra></extra>",
        ))
    fig.update_layout(height=420, margin=MARGIN, xaxis_title="latency, batch 1 (ms)", yaxis_title="NME",
                      title="Accuracy vs latency (lower left is better; size = parameters)")
    return fig
