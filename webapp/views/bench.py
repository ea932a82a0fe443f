"""Benchmarks page: benchmarks/bench.json as a table and an accuracy-vs-latency chart."""

from __future__ import annotations

import streamlit as st

from webapp import figures, records

COLUMNS = ["model", "task", "split", "n", "nme", "mean_px_error", "latency_ms_b1", "threads",
           "throughput_b32", "params", "file_mb", "train_images_per_s", "loader_images_per_s"]


def main() -> None:
    st.title("Benchmarks")
    path = records.bench_path()
    bench = records.load_bench(path)
    if bench is None or bench.empty:
        st.info(f"No benchmark table at `{path}` yet. The benchmark command writes it "
                "(format in docs/FORMATS.md); set `KPCORE_BENCH` to read another file.")
        return
    order = [c for c in COLUMNS if c in bench] + [c for c in bench if c not in COLUMNS]
    st.dataframe(bench[order], hide_index=True, key="bench_table", column_config={
        "nme": st.column_config.NumberColumn("NME", format="%.4f"),
        "latency_ms_b1": st.column_config.NumberColumn("latency b1 (ms)", format="%.2f"),
        "throughput_b32": st.column_config.NumberColumn("images/s b32", format="%.0f"),
        "params": st.column_config.NumberColumn("params", format="%d"),
        "file_mb": st.column_config.NumberColumn("file (MB)", format="%.1f"),
    })
    if {"nme", "latency_ms_b1", "model"} <= set(bench.columns):
        st.plotly_chart(figures.accuracy_vs_latency(bench), key="bench_chart")
    st.caption(f"Read from `{path}`.")


main()
