"""Plotly figures for the dashboard (pure functions of tables; no Streamlit)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

if TYPE_CHECKING:
    from kpcore.data.facts import DatasetFacts
    from webapp.records import Run

PALETTE = qualitative.Plotly + qualitative.D3
MARGIN = {"l": 10, "r": 10, "t": 40, "b": 10}


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


MIN_TICKS = 3  # labelled ticks a log axis should show at the least
LOG_MANTISSAS = ((1,), (1, 2, 5), (1, 2, 3, 5), (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9))  # coarse to fine
LOW_TICK_GAP = 1.3  # least ratio between the lowest value's own tick and the next one up


def log_ticks(values: np.ndarray) -> list[float]:
    """Tick values for a log axis over ``values``: the coarsest of 1 / 1-2-5 / 1-2-3-5 / 1..9 per
    decade that puts :data:`MIN_TICKS` or more inside the data range; for a range too narrow for
    any (e.g. 2.27-2.39), evenly spaced round numbers. Empty when no value is positive."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) == 0:
        return []
    lo, hi = float(v.min()), float(v.max())
    decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
    for mantissas in LOG_MANTISSAS:
        ticks = [float(f"{m * 10.0**d:.6g}") for d in decades for m in mantissas if lo <= m * 10.0**d <= hi]
        if len(ticks) >= MIN_TICKS:
            # The lowest value (a run's best) gets its own label, rounded up to two digits, when the
            # next tick is far enough above it not to collide.
            step = 10.0 ** (np.floor(np.log10(lo)) - 1)
            floor_tick = float(f"{np.ceil(lo / step) * step:.6g}")
            if floor_tick <= hi and ticks[0] / floor_tick >= LOW_TICK_GAP:
                ticks.insert(0, floor_tick)
            return ticks
    if hi == lo:
        return [float(f"{lo:.3g}")]
    raw = (hi - lo) / MIN_TICKS
    base = 10.0 ** np.floor(np.log10(raw))
    step = max(m * base for m in (1, 2, 2.5, 5) if m * base <= raw)
    first = np.ceil(lo / step) * step
    return [float(f"{t:.6g}") for t in np.arange(first, hi + step / 1e6, step)]


def training_curves(runs: list[Run]) -> go.Figure:
    """Training loss, validation loss and validation NME (%) per epoch, each on its own axis.

    The two losses get separate panels because they are not always the same function:
    heatmap runs train on the integral loss but report an L1 on normalised coordinates
    for validation, so one axis would show a gap that is only a change of units.
    """
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.07,
                        subplot_titles=("Training loss (each run's objective)", "Validation loss",
                                        "Validation NME (%)"))
    for i, run in enumerate(runs):
        m = run.metrics
        if m is None or "epoch" not in m:
            continue
        c = color(i)
        for col, panel, fmt in (("train_loss", 1, ".4g"), ("val_loss", 2, ".4g")):
            if col in m:
                fig.add_trace(go.Scatter(
                    x=m["epoch"], y=m[col], name=run.name, legendgroup=run.name, showlegend=panel == 1,
                    line={"color": c},
                    hovertemplate=f"{run.name}<br>{col} %{{y:{fmt}}} · epoch %{{x}}<extra></extra>",
                ), row=1, col=panel)
        if "val_nme" in m:
            fig.add_trace(go.Scatter(
                x=m["epoch"], y=100 * m["val_nme"], name=run.name, legendgroup=run.name, showlegend=False,
                line={"color": c},
                hovertemplate=f"{run.name}<br>val NME %{{y:.2f}}% · epoch %{{x}}<extra></extra>",
            ), row=1, col=3)
    fig.update_xaxes(title_text="epoch")
    # Log axes (runs of one task can differ 100x in loss), each labelled at 1-2-5 steps picked from
    # the values drawn so every panel has several ticks and every label reads on its own ("5%",
    # not a "5" that means 5% under "10%" and 50% above it).
    for panel, col, scale, suffix in ((1, "train_loss", 1, ""), (2, "val_loss", 1, ""), (3, "val_nme", 100, "%")):
        values = [scale * r.metrics[col] for r in runs if r.metrics is not None and col in r.metrics]
        ticks = log_ticks(pd.concat(values).to_numpy(dtype=float)) if values else []
        fig.update_yaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}{suffix}" for t in ticks], row=1, col=panel)
    fig.update_layout(height=400, margin=MARGIN, legend={"orientation": "h", "y": -0.22})
    return fig


def nme_histogram(nme: np.ndarray, failure_nme: float, norm_name: str = "") -> go.Figure:
    """Histogram of per-image NME (%) with the failure threshold marked."""
    fig = go.Figure(go.Histogram(x=100 * np.asarray(nme), nbinsx=min(60, max(10, len(nme) // 3)),
                                 marker_color=color(0),
                                 hovertemplate="NME %{x}%<br>%{y} images<extra></extra>"))
    fig.add_vline(x=100 * failure_nme, line_dash="dot", line_color="crimson",
                  annotation_text=f"failure > {100 * failure_nme:g}%")
    fig.update_layout(height=320, margin=MARGIN, xaxis_title=nme_axis(norm_name), yaxis_title="images",
                      title="Per-image error")
    return fig


def nme_axis(norm_name: str = "", short: bool = False) -> str:
    """Axis title for NME in %, naming what it is normalised by; ``short`` leaves out the
    parenthesis of the name (which points), for vertical axes that a long title would overrun."""
    if short:
        norm_name = norm_name.split(" (")[0]
    return f"NME (% of {norm_name})" if norm_name else "NME (%)"


def ced_figure(curves: dict[str, tuple[pd.DataFrame, float, float]], norm_name: str = "") -> go.Figure:
    """Cumulative error curves: ``{label: (curve with nme/fraction, auc, failure_rate)}``; NME in %."""
    fig = go.Figure()
    for i, (label, (curve, auc, fr)) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(
            x=100 * curve["nme"], y=curve["fraction"], mode="lines", line={"color": color(i)},
            name=f"{label} · AUC {auc:.3f} · FR {fr:.1%}",
            hovertemplate="NME ≤ %{x:.2f}%: %{y:.1%}<extra></extra>",
        ))
    fig.update_layout(height=340, margin=MARGIN, xaxis_title=nme_axis(norm_name), yaxis_title="share of images",
                      yaxis_range=[0, 1.02], title="Cumulative error distribution",
                      legend={"orientation": "h", "y": -0.3})
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


def nme_scatter(aligned: pd.DataFrame, a: str, b: str, threshold: float) -> go.Figure:
    """Per-image NME (%) of model A (x) against model B (y) on the same images, the diagonal
    drawn and the band of +-``threshold`` shaded; green = B better, red = B worse. The axis titles
    name only the models (the chart sits in a narrow column); the page's caption names what NME
    is divided by."""
    x, y = 100 * aligned[a].to_numpy(), 100 * aligned[b].to_numpy()
    d = y - x
    t = 100 * threshold
    colours = np.where(d < -t, "#1a9850", np.where(d > t, "#d73027", "#999999"))
    top = float(max(x.max(), y.max())) * 1.05 if len(x) else 1.0
    fig = go.Figure()
    # mode="lines": a fill trace of four points would otherwise get a marker at each corner.
    fig.add_trace(go.Scatter(x=[0, top, top, 0], y=[t, top + t, top - t, -t], mode="lines", fill="toself",
                             fillcolor="rgba(150,150,150,0.12)", line={"width": 0}, hoverinfo="skip",
                             showlegend=False))
    fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", line={"color": "#444", "dash": "dash"},
                             name="same error", hoverinfo="skip"))
    fig.add_trace(go.Scatter(
        x=x, y=y, mode="markers", name="faces", showlegend=False,
        marker={"color": colours, "size": 7, "opacity": 0.8, "line": {"width": 0.5, "color": "#333"}},
        customdata=np.asarray(aligned.index, dtype=object),
        hovertemplate="%{customdata}<br>A %{x:.2f}% · B %{y:.2f}%<extra></extra>",
    ))
    fig.update_layout(height=480, margin=MARGIN, title="Per-image NME: click a dot to see both overlays",
                      xaxis_title=f"A: {a} · NME (%)", yaxis_title=f"B: {b} · NME (%)",
                      xaxis_range=[0, top], yaxis_range=[0, top], clickmode="event+select")
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def grouped_bars(table: pd.DataFrame, x: str, title: str, x_title: str, norm_name: str = "",
                 count: str | None = "images") -> go.Figure:
    """Bars of ``nme_pct`` per ``x`` value, one colour per ``model``; hover shows the image count."""
    fig = go.Figure()
    for i, (model, rows) in enumerate(table.groupby("model", sort=False)):
        custom = rows[count].to_numpy() if count and count in rows else np.full(len(rows), np.nan)
        fig.add_trace(go.Bar(x=rows[x].astype(str), y=rows["nme_pct"], name=str(model), marker_color=color(i),
                             customdata=custom,
                             hovertemplate="%{x}: %{y:.2f}%" + (" · %{customdata} images" if count else "")
                             + "<extra>" + str(model) + "</extra>"))
    fig.update_layout(height=360, margin=MARGIN, barmode="group", title=title, xaxis_title=x_title,
                      yaxis_title=nme_axis(norm_name, short=True), legend={"orientation": "h", "y": -0.25})
    return fig


def confidence_scatter(points: dict[str, tuple[np.ndarray, np.ndarray]]) -> go.Figure:
    """Per-image NME (%) against the model's confidence: ``{model: (confidence, nme)}``. Drawn in
    half a page: the vertical title is kept short so it stays beside the plot, below the chart's
    title; the page's caption names what NME is divided by."""
    fig = go.Figure()
    for i, (model, (conf, nme)) in enumerate(points.items()):
        fig.add_trace(go.Scatter(x=conf, y=100 * np.asarray(nme), mode="markers", name=model,
                                 marker={"color": color(i), "size": 6, "opacity": 0.7},
                                 hovertemplate="confidence %{x:.3f}<br>NME %{y:.2f}%<extra>" + model
                                 + "</extra>"))
    fig.update_layout(height=380, margin=MARGIN, title="Error vs confidence",
                      xaxis_title="confidence (model's own, 0-1)", yaxis_title="NME (%)",
                      legend={"orientation": "h", "y": -0.25})
    return fig


def flagging_figure(curves: dict[str, pd.DataFrame]) -> go.Figure:
    """Mean NME (%) left after flagging the least confident X%, solid; the oracle, dotted (half a
    page wide, short vertical title, as :func:`confidence_scatter`)."""
    fig = go.Figure()
    for i, (model, c) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=c["flagged_pct"], y=c["nme_pct"], mode="lines+markers", name=model,
                                 line={"color": color(i)},
                                 hovertemplate="flag %{x:.0f}% → NME %{y:.2f}%<extra>" + model + "</extra>"))
        fig.add_trace(go.Scatter(x=c["flagged_pct"], y=c["oracle_pct"], mode="lines",
                                 name=f"{model} · oracle (flags the worst)",
                                 line={"color": color(i), "dash": "dot"}, hoverinfo="skip"))
    fig.update_layout(height=380, margin=MARGIN, title="Error left when the least confident faces are flagged",
                      xaxis_title="faces flagged (least confident first, %)",
                      yaxis_title="mean NME (%) of the rest",
                      legend={"orientation": "h", "y": -0.3})
    return fig


def robustness_figure(tables: dict[str, pd.DataFrame], perturbation: str, norm_name: str = "") -> go.Figure:
    """NME (%) against perturbation strength, one line per model (the clean point included)."""
    fig = go.Figure()
    unit = ""
    for i, (model, t) in enumerate(tables.items()):
        rows = t[t["perturbation"] == perturbation].sort_values("strength")
        if rows.empty:
            continue
        if "unit" in rows and rows["unit"].notna().any():
            unit = str(rows["unit"].dropna().iloc[0])
        fr = rows["failure_rate"].to_numpy() if "failure_rate" in rows else np.full(len(rows), np.nan)
        fig.add_trace(go.Scatter(x=rows["strength"], y=100 * rows["nme"], mode="lines+markers", name=model,
                                 line={"color": color(i)}, customdata=100 * fr,
                                 hovertemplate="strength %{x}<br>NME %{y:.2f}% · failures %{customdata:.1f}%"
                                 "<extra>" + model + "</extra>"))
    fig.update_layout(height=340, margin=MARGIN, title=perturbation,
                      xaxis_title=f"strength ({unit})" if unit else "strength",
                      yaxis_title=nme_axis(norm_name, short=True),
                      legend={"orientation": "h", "y": -0.3})
    return fig

