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

MODEL_COLUMNS = ["model", "task", "split", "n", "nme", "mean_px_error", "latency_ms_b1", "threads",
                 "throughput_b32", "params", "file_mb", "train_images_per_s", "loader_images_per_s",
                 "machine", "torch", "measured"]
MARGIN = {"l": 10, "r": 10, "t": 40, "b": 10}


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


def accuracy_latency_per_task(models: pd.DataFrame) -> list[tuple[str, go.Figure]]:
    """One chart per task (NME of different tasks is not comparable): NME against batch-1 latency."""
    out = []
    if not {"task", "nme", "latency_ms_b1"} <= set(models.columns):
        return out
    for task, rows in models.dropna(subset=["nme", "latency_ms_b1"]).groupby("task", sort=False):
        fig = go.Figure(go.Scatter(x=rows["latency_ms_b1"], y=rows["nme"] * 100, mode="markers+text",
                                   text=rows["model"], textposition="top center", marker={"size": 12},
                                   hovertemplate="%{text}<br>NME %{y:.2f}%<br>%{x:.2f} ms<extra></extra>"))
        fig.update_layout(height=320, margin=MARGIN, title=f"{task}: accuracy vs latency (lower left is better)",
                          xaxis_title="ms per image, batch 1", yaxis_title="NME (%)")
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
    """A photo end to end, stacked: detection, landmarks, drawing."""
    fig = go.Figure()
    for col, name in (("detect_ms", "detection"), ("landmarks_ms", "landmarks"), ("draw_ms", "drawing")):
        if col in photo:
            fig.add_trace(go.Bar(y=photo["model"], x=photo[col], name=name, orientation="h"))
    fig.update_layout(barmode="stack", height=200, margin=MARGIN, xaxis_title="ms",
                      title=f"{photo['photo'].iloc[0] if 'photo' in photo else ''} photo end to end")
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
    """The model rows, every column kept, parameters with thousands separators."""
    order = [c for c in MODEL_COLUMNS if c in models] + [c for c in models if c not in MODEL_COLUMNS
                                                         and c != "section"]
    table = models[order].copy()
    if "params" in table:
        table["params"] = table["params"].map(lambda v: f"{int(v):,}" if pd.notna(v) else "")
    return table


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
                   "means something only beside dlib's in the same run: this machine is shared.")
    if not photo.empty:
        st.subheader("A photo end to end")
        st.plotly_chart(photo_figure(photo), key="bench_photo")
        st.dataframe(photo, hide_index=True, key="bench_photo_table")
    if not detection.empty:
        st.dataframe(detection, hide_index=True, key="bench_detection")
    if not video.empty:
        st.subheader("Video: `kpcore track`")
        st.dataframe(video, hide_index=True, key="bench_video", column_config={
            "nme": st.column_config.NumberColumn("NME", format="%.4f"),
            "jitter": st.column_config.NumberColumn("jitter (eye distance)", format="%.4f")})
        st.caption("Jitter: RMS frame-to-frame change of the error, over the eye distance, on a real photo moved "
                   "along a smooth path with sensor noise.")
    mtfl = section(bench, "mtfl")
    if not mtfl.empty:
        st.subheader("Turned heads: MTFL val against dlib")
        st.plotly_chart(mtfl_figure(mtfl), key="bench_mtfl")
        st.caption("Five points mapped from the 68 (eye centres, nose tip, mouth corners), NME over the true "
                   "eye-centre distance; a failure is NME above 10%. Boxes from the five points, the same for "
                   "both methods.")
    if not models.empty:
        st.subheader("Shipped models")
        st.dataframe(model_table(models), hide_index=True, key="bench_table", column_config={
            "nme": st.column_config.NumberColumn("NME", format="%.4f"),
            "latency_ms_b1": st.column_config.NumberColumn("latency b1 (ms)", format="%.2f"),
            "throughput_b32": st.column_config.NumberColumn("images/s b32", format="%.0f"),
            "file_mb": st.column_config.NumberColumn("file (MB)", format="%.1f"),
        })
        st.caption(f"Measured on {machine_caption(models)}.")
        for task, fig in accuracy_latency_per_task(models):
            st.plotly_chart(fig, key=f"bench_chart_{task}")
        fig = throughput_figure(models)
        if fig is not None:
            st.plotly_chart(fig, key="bench_throughput")
    st.caption(f"Read from `{path}`.")


main()
