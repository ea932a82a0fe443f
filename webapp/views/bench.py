"""Benchmarks page: benchmarks/bench.json (written by ``python -m kpcore bench``), like compared with like.

The file holds rows of several sections (``section``; rows without one are
``model`` rows from older files): ``model`` (accuracy, latency, training per
shipped model), ``speed`` (ms per face of PyTorch, onnxruntime and dlib in one
run), ``photo`` (a 1280x960 photo split into detection / landmarks / drawing),
``detection`` (faces found on helen/testset), ``video`` (``kpcore track``
frames/s, jitter and NME on a clip with known motion) and ``mtfl`` (the default
model and dlib on MTFL's validation faces, failure rate per head pose).
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from kpcore.data.facts import MTFL_FACTS
from webapp import records

MODEL_COLUMNS = ["model", "task", "split", "n", "NME (%)", "mean_px_error", "failure rate (%)", "auc",
                 "latency_ms_b1", "timed", "threads", "throughput_b32", "params", "file_mb", "train_images_per_s",
                 "loader_images_per_s", "architecture", "input", "machine", "torch", "measured"]
# Where each other section's table starts: the columns one reads it for, then the rest, then
# the measuring context (MEASURED_COLUMNS) last.
FIRST_COLUMNS = {
    "photo": ["method", "ms_per_photo", "photos_per_s", "vs_mediapipe", "vs_dlib", "detect_ms", "points_ms",
              "confidence_ms", "pose_ms", "ms_spread", "faces_found", "photos"],
    "detection": ["photos", "found", "n", "blazeface_only", "group_found", "tiny_found", "tiny_found_retinaface",
                  "tiny_smallest_px"],
    "video": ["method", "loop_fps", "command_fps", "jitter (%)", "NME (%)", "missed", "backend", "threads", "clip"],
}
MEASURED_COLUMNS = ["model", "machine", "torch", "measured"]
MISSING = "—"  # st.dataframe's placeholder for a cell a row has no value for (its default reads "None")
NETWORK_PATH = "network alone, PyTorch float32"
WHOLE_CALL_PATH = "whole per-face call"
MARGIN = {"l": 10, "r": 10, "t": 40, "b": 10}
LABEL_PAD = 0.2  # of the x span added on each side of a scatter, so point labels stay inside


def section(bench: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows of one section (rows without ``section`` are model rows)."""
    sec = bench["section"].fillna("model") if "section" in bench else pd.Series("model", index=bench.index)
    return bench[sec == name].dropna(axis=1, how="all")


def machine_caption(rows: pd.DataFrame) -> str:
    """Where and when the rows were measured, e.g. ``x86_64 ..., 2 CPUs; torch 2.14; 2026-...``."""
    parts = []
    for col, label in (("machine", ""), ("torch", "torch "), ("measured", "measured ")):
        if col in rows:
            values = sorted({str(v) for v in rows[col].dropna()})
            if values:
                parts.append(label + ", ".join(values))
    return "; ".join(parts) or "machine not recorded"


def is_dlib(models: pd.DataFrame) -> pd.Series:
    """Rows of dlib's predictor (a reference, timed as its whole per-face call)."""
    arch = models["architecture"].astype(str) if "architecture" in models else pd.Series("", index=models.index)
    return models["model"].astype(str).str.startswith("dlib") | arch.str.contains("dlib")


def label_positions(xs: list[float]) -> list[str]:
    """Text positions that keep point labels inside the chart: the leftmost point's label to its
    right, the rightmost's to its left, the others centred above their point."""
    if len(xs) < 2:
        return ["top center"] * len(xs)
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = ["top center"] * len(xs)
    out[order[0]], out[order[-1]] = "top right", "top left"
    return out


def latency_points(rows: pd.DataFrame, speed: pd.DataFrame) -> list[dict]:
    """The points of one task's accuracy-vs-time chart, each ``{x, nme_pct, label, path}``.

    Two paths, never mixed on one marker: the model rows time the network alone in PyTorch
    float32 (``latency_ms_b1``); the speed section times the whole per-face call (crop, network,
    map back) of the path the library takes by default and of dlib, in one run. A model with a
    default speed row is drawn at both; dlib's own model row is its whole call too, and is used
    only when the speed section has no dlib row.
    """
    dlib = is_dlib(rows)
    points = [{"x": float(r["latency_ms_b1"]), "nme_pct": 100 * float(r["nme"]), "label": str(r["model"]),
               "path": NETWORK_PATH} for _, r in rows[~dlib].iterrows()]
    default = speed[speed["default"].fillna(False).astype(bool)] if "default" in speed else speed.iloc[:0]
    for _, s in default.iterrows():
        match = rows[~dlib & (rows["model"] == s["model"])]
        if len(match):
            points.append({"x": float(s["ms_per_face"]), "nme_pct": 100 * float(match["nme"].iloc[0]),
                           "label": f"{s['model']} (default path)", "path": WHOLE_CALL_PATH})
    speed_dlib = speed[speed["model"].astype(str).str.startswith("dlib")] if len(speed) else speed
    for _, r in rows[dlib].iterrows():
        x = float(speed_dlib["ms_per_face"].iloc[0]) if len(speed_dlib) else float(r["latency_ms_b1"])
        points.append({"x": x, "nme_pct": 100 * float(r["nme"]), "label": str(r["model"]), "path": WHOLE_CALL_PATH})
    return points


def accuracy_latency_per_task(models: pd.DataFrame, speed: pd.DataFrame | None = None) -> list[tuple[str, go.Figure]]:
    """One chart per task (NME of different tasks is not comparable): NME (%) against ms per face,
    circles for the network alone in PyTorch, diamonds for the whole per-face call (:func:`latency_points`)."""
    out = []
    if not {"task", "nme", "latency_ms_b1"} <= set(models.columns):
        return out
    speed = speed if speed is not None else pd.DataFrame(columns=["model", "ms_per_face"])
    for task, rows in models.dropna(subset=["nme", "latency_ms_b1"]).groupby("task", sort=False):
        points = latency_points(rows, speed)
        positions = label_positions([p["x"] for p in points])
        fig = go.Figure()
        for path, symbol in ((NETWORK_PATH, "circle"), (WHOLE_CALL_PATH, "diamond")):
            idx = [i for i, p in enumerate(points) if p["path"] == path]
            if idx:
                fig.add_trace(go.Scatter(
                    x=[points[i]["x"] for i in idx], y=[points[i]["nme_pct"] for i in idx], mode="markers+text",
                    name=path, text=[points[i]["label"] for i in idx], textposition=[positions[i] for i in idx],
                    marker={"size": 12, "symbol": symbol}, cliponaxis=False,
                    hovertemplate="%{text}<br>NME %{y:.2f}%<br>%{x:.2f} ms per face<extra>" + path + "</extra>"))
        xs = [p["x"] for p in points]
        ys = [p["nme_pct"] for p in points]
        span = (max(xs) - min(xs)) or max(xs) or 1.0
        yspan = (max(ys) - min(ys)) or 1.0
        fig.update_layout(height=340, margin=MARGIN, title=f"{task}: accuracy vs time per face (lower left is better)",
                          xaxis_title="ms per face, batch 1", yaxis_title="NME (%)",
                          xaxis_range=[max(0.0, min(xs) - LABEL_PAD * span), max(xs) + LABEL_PAD * span],
                          yaxis_range=[min(ys) - 0.25 * yspan, max(ys) + 0.35 * yspan],
                          showlegend=True, legend={"orientation": "h", "y": -0.3})
        out.append((str(task), fig))
    return out


def speed_figure(speed: pd.DataFrame) -> go.Figure:
    """ms per face of each path, measured in one run on the same faces; dlib's bar for reference, the
    path ``Predictor`` takes by default marked, and a dashed line at 1.5x dlib (the speed bar of #10)."""
    rows = speed.sort_values("ms_per_face")
    default = rows["default"].fillna(False).astype(bool) if "default" in rows else \
        pd.Series(False, index=rows.index)
    labels = [(f"{m} · {b}" if m != b else str(m)) + (" (default)" if d else "")
              for m, b, d in zip(rows["model"], rows["backend"], default, strict=True)]
    ratio = rows["vs_dlib"] if "vs_dlib" in rows else pd.Series([None] * len(rows), index=rows.index)
    text = [f"{v:.2f} ms" + (f" ({r:.2f}x dlib)" if pd.notna(r) and str(m) != "dlib" else "")
            for v, r, m in zip(rows["ms_per_face"], ratio, rows["model"], strict=True)]
    colors = ["#2ca02c" if str(m).startswith("dlib") else "#ff7f0e" if d else "#1f77b4"
              for m, d in zip(rows["model"], default, strict=True)]
    fig = go.Figure(go.Bar(x=rows["ms_per_face"], y=labels, orientation="h", text=text, marker_color=colors))
    dlib = rows.loc[rows["model"].astype(str) == "dlib", "ms_per_face"]
    if not dlib.empty:
        fig.add_vline(x=1.5 * float(dlib.iloc[0]), line_dash="dash", line_color="#555",
                      annotation_text="1.5x dlib", annotation_position="top")
    fig.update_layout(height=100 + 40 * len(rows), margin=MARGIN, xaxis_title="ms per face, batch 1",
                      title="Landmarks per face vs dlib, same run, same faces and boxes")
    return fig


def photo_figure(photo: pd.DataFrame) -> go.Figure:
    """ms per photo for each method; kpcore's bar split into detect / points / confidence / pose."""
    fig = go.Figure()
    parts = (("detect_ms", "detect"), ("points_ms", "points"), ("confidence_ms", "confidence"), ("pose_ms", "pose"))
    split = photo[photo[[c for c, _ in parts if c in photo]].notna().any(axis=1)] if "detect_ms" in photo else photo[:0]
    for col, name in parts:
        if col in split:
            fig.add_trace(go.Bar(y=split["method"], x=split[col], name=name, orientation="h"))
    rest = photo.drop(split.index)
    if not rest.empty:
        fig.add_trace(go.Bar(y=rest["method"], x=rest["ms_per_photo"], name="whole call", orientation="h"))
    if not split.empty:
        fig.add_trace(go.Scatter(y=split["method"], x=split["ms_per_photo"], mode="markers", name="whole Predictor.predict",
                                 marker={"symbol": "line-ns-open", "size": 18, "color": "black"}))
    fig.update_layout(barmode="stack", height=260, margin=MARGIN, xaxis_title="ms per photo",
                      title=f"{photo['photo'].iloc[0] if 'photo' in photo else ''} photo, one face")
    return fig


def throughput_figure(models: pd.DataFrame) -> go.Figure | None:
    """Training against data-loader throughput per model (is the loader the bottleneck?)."""
    if not {"train_images_per_s", "loader_images_per_s"} <= set(models.columns):
        return None
    rows = models.dropna(subset=["train_images_per_s"])
    fig = go.Figure([go.Bar(x=rows["model"], y=rows["train_images_per_s"], name="training step"),
                     go.Bar(x=rows["model"], y=rows["loader_images_per_s"], name="data loader, 1 process")])
    fig.update_layout(barmode="group", height=300, margin=MARGIN, yaxis_title="images / s",
                      title="Training vs data-loader throughput")
    return fig


def model_table(models: pd.DataFrame) -> pd.DataFrame:
    """The model rows, every column kept: NME and failure rate in %, parameters with thousands
    separators, and ``timed`` saying which path ``latency_ms_b1`` times (:func:`latency_points`)."""
    table = models.copy()
    for col, pct in (("nme", "NME (%)"), ("failure_rate", "failure rate (%)")):
        if col in table:
            table[pct] = 100 * table.pop(col)
    if "latency_ms_b1" in table:
        table["timed"] = is_dlib(table).map({True: "whole call (dlib)", False: "network, PyTorch"})
    order = [c for c in MODEL_COLUMNS if c in table] + [c for c in table if c not in MODEL_COLUMNS
                                                        and c != "section"]
    table = table[order]
    if "params" in table:
        table["params"] = table["params"].map(lambda v: f"{int(v):,}" if pd.notna(v) else MISSING)
    return table


def section_table(rows: pd.DataFrame, name: str) -> pd.DataFrame:
    """A section's rows for display: NME and jitter (fractions of the eye distance) in %, the
    columns of :data:`FIRST_COLUMNS` first, the measuring context last, no ``section`` column."""
    table = rows.drop(columns=["section"], errors="ignore").copy()
    for col, pct in (("nme", "NME (%)"), ("jitter", "jitter (%)")):
        if col in table:
            table[pct] = 100 * table.pop(col)
    first = [c for c in FIRST_COLUMNS.get(name, []) if c in table]
    last = [c for c in MEASURED_COLUMNS if c in table and c not in first]
    return table[first + [c for c in table if c not in first and c not in last] + last]


#: MTFL's pose classes in the order they turn (kpcore's dataset facts), each with the column
#: suffix ``kpcore.evaluation.bench.mtfl_rows`` writes for it (spaces as underscores).
MTFL_POSES = tuple((name, name.replace(" ", "_")) for name in MTFL_FACTS.extra["pose_names"].values())


def mtfl_figure(mtfl: pd.DataFrame) -> go.Figure:
    """Failure rate (NME > 10%) per head-pose class, one bar group per class, one colour per method."""
    fig = go.Figure()
    poses = [(label, key) for label, key in MTFL_POSES if f"failure_rate_{key}" in mtfl]
    for _, row in mtfl.iterrows():
        labels = [f"{label} ({int(row[f'n_{key}'])})" if pd.notna(row.get(f"n_{key}")) else label
                  for label, key in poses]
        values = [100 * row[f"failure_rate_{key}"] for _, key in poses]
        fig.add_bar(x=labels, y=values, name=f"{row['model']} · NME {100 * row['nme']:.2f}%",
                    text=[f"{v:.1f}%" for v in values], textposition="outside")
    fig.update_layout(barmode="group", height=320, margin=MARGIN, yaxis_title="failure rate (%), NME > 10%",
                      xaxis_title="head pose (faces)", title="MTFL val: failures by head pose, same faces and boxes",
                      legend={"orientation": "h", "y": -0.3})
    return fig


def default_path_note(speed: pd.DataFrame) -> str:
    """Names the library's default path and its whole-call time from the speed section, or ""."""
    if "default" not in speed:
        return ""
    rows = speed[speed["default"].fillna(False).astype(bool)]
    if rows.empty:
        return ""
    row = rows.iloc[0]
    return (f" The whole per-face call on the path the library takes by default ({row['model']} · "
            f"{row.get('backend', '?')}) is {row['ms_per_face']:.2f} ms: the speed chart above, and the "
            "diamond in the chart below.")


MODEL_TABLE_CONFIG = {
    "NME (%)": st.column_config.NumberColumn(format="%.2f%%"),
    "mean_px_error": st.column_config.NumberColumn("mean error (px)", format="%.2f"),
    "failure rate (%)": st.column_config.NumberColumn(format="%.1f%%"),
    "auc": st.column_config.NumberColumn("AUC", format="%.3f"),
    "latency_ms_b1": st.column_config.NumberColumn(
        "latency b1 (ms)", format="%.2f",
        help="See 'timed': our models' network alone in PyTorch float32 (one image, no crop); "
             "dlib's whole per-face call"),
    "timed": st.column_config.TextColumn("timed", help="What latency b1 measures for this row"),
    "throughput_b32": st.column_config.NumberColumn("images/s b32", format="%.0f",
                                                    help="Network alone, PyTorch, batch 32"),
    "file_mb": st.column_config.NumberColumn("file (MB)", format="%.1f"),
    "train_images_per_s": st.column_config.NumberColumn("train images/s", format="%.1f"),
    "loader_images_per_s": st.column_config.NumberColumn("loader images/s", format="%.1f"),
}
PHOTO_TABLE_CONFIG = {
    "ms_per_photo": st.column_config.NumberColumn(
        "ms per photo", help="kpcore: the whole Predictor.predict call (detection, points, confidence, pose)"),
    "photos_per_s": st.column_config.NumberColumn("photos/s", format="%.0f"),
    "vs_mediapipe": st.column_config.NumberColumn("x MediaPipe", format="%.2fx"),
    "vs_dlib": st.column_config.NumberColumn("x dlib", format="%.2fx"),
    "detect_ms": st.column_config.NumberColumn("detect (ms)"),
    "points_ms": st.column_config.NumberColumn("points (ms)"),
    "confidence_ms": st.column_config.NumberColumn("confidence (ms)", help="What the mirrored pass adds"),
    "pose_ms": st.column_config.NumberColumn("pose (ms)"),
    "ms_spread": st.column_config.ListColumn("spread (round medians, ms)"),
}
VIDEO_TABLE_CONFIG = {
    "loop_fps": st.column_config.NumberColumn("frames/s (loop)", format="%.0f"),
    "command_fps": st.column_config.NumberColumn("frames/s (command)", format="%.0f"),
    "jitter (%)": st.column_config.NumberColumn("jitter (% of eye distance)", format="%.2f%%"),
    "NME (%)": st.column_config.NumberColumn(format="%.2f%%"),
}


def main() -> None:
    st.title("Benchmarks")
    path = records.bench_path()
    bench = records.load_bench(path)
    if bench is None or bench.empty:
        st.info(f"No benchmark table at `{path}` yet. `python -m kpcore bench` writes it "
                "(format in docs/FORMATS.md); set `KPCORE_BENCH` to read another file.")
        return
    speed, photo, video = section(bench, "speed"), section(bench, "photo"), section(bench, "video")
    detection, models = section(bench, "detection"), section(bench, "model")
    if not speed.empty:
        st.subheader("CPU speed against dlib")
        st.plotly_chart(speed_figure(speed), key="bench_speed")
        st.caption(f"Measured on {machine_caption(speed)}. Each time is the whole per-face call (crop, "
                   "normalise, network, map back); orange is the path the library takes by default. A time "
                   "means something only beside dlib's in the same run: this machine is shared. (The "
                   "Shipped models table below times the network alone in PyTorch, a different path.)")
    if not photo.empty:
        st.subheader("A photo end to end, beside dlib and MediaPipe Face Mesh")
        st.plotly_chart(photo_figure(photo), key="bench_photo")
        st.dataframe(section_table(photo, "photo"), hide_index=True, key="bench_photo_table", placeholder=MISSING,
                     column_config=PHOTO_TABLE_CONFIG)
    if not detection.empty:
        st.dataframe(section_table(detection, "detection"), hide_index=True, key="bench_detection",
                     placeholder=MISSING)
    if not video.empty:
        st.subheader("Video: `kpcore track`")
        st.dataframe(section_table(video, "video"), hide_index=True, key="bench_video", placeholder=MISSING,
                     column_config=VIDEO_TABLE_CONFIG)
        st.caption("Jitter: RMS frame-to-frame change of the error, in % of the eye distance, on a real photo "
                   "moved along a smooth path with sensor noise. NME in % of the eye distance.")
    mtfl = section(bench, "mtfl")
    if not mtfl.empty:
        st.subheader("Turned heads: MTFL val against dlib")
        st.plotly_chart(mtfl_figure(mtfl), key="bench_mtfl")
        st.caption("Five points mapped from the 68 (eye centres, nose tip, mouth corners), NME over the true "
                   "eye-centre distance; a failure is NME above 10%. Boxes from the five points, the same for "
                   "both methods.")
    if not models.empty:
        st.subheader("Shipped models")
        st.dataframe(model_table(models), hide_index=True, key="bench_table", placeholder=MISSING,
                     column_config=MODEL_TABLE_CONFIG)
        st.caption(f"Measured on {machine_caption(models)}. latency b1 times our models' network alone in "
                   "PyTorch float32 (one image, batch 1, no crop): it compares architectures. dlib's row is its "
                   "whole per-face call." + default_path_note(speed))
        for task, fig in accuracy_latency_per_task(models, speed):
            st.plotly_chart(fig, key=f"bench_chart_{task}")
        st.caption(f"Circles: {NETWORK_PATH} (the table's latency b1). Diamonds: {WHOLE_CALL_PATH} (crop, "
                   "network, map back) of the default path and of dlib, from the speed chart's run. NME on the "
                   "task's test set, in % of its normalising distance.")
        fig = throughput_figure(models)
        if fig is not None:
            st.plotly_chart(fig, key="bench_throughput")
    st.caption(f"Read from `{path}`.")


main()
