"""Runs page: training curves overlaid, configs and final metrics side by side."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from webapp import common, figures, records

MAX_DEFAULT_RUNS = 4


def default_selection(runs: list[records.Run]) -> list[str]:
    """The newest run and the other runs of its task (the usual comparison), at most four."""
    if not runs:
        return []
    task = runs[0].task
    same = [r.name for r in runs if r.task == task]
    return same[:MAX_DEFAULT_RUNS]


def _fmt(value) -> str:
    """Numbers to 4 significant digits for the side-by-side table (it mixes types per row)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def show_overview(runs: list[records.Run]) -> None:
    table = pd.DataFrame([r.final_metrics() for r in runs])
    st.dataframe(table, hide_index=True, key="runs_overview", column_config={
        "best_val_nme": st.column_config.NumberColumn("best val NME", format="%.4f"),
        "best_val_px_error": st.column_config.NumberColumn("best val px", format="%.2f"),
    })


def show_comparison(chosen: list[records.Run]) -> None:
    st.plotly_chart(figures.training_curves(chosen), key="runs_curves")
    left, right = st.columns([1, 1])
    with left:
        st.subheader("Final metrics")
        metrics = pd.DataFrame([r.final_metrics() for r in chosen]).set_index("run").T
        st.dataframe(metrics.map(_fmt), key="runs_metrics")
    with right:
        st.subheader("Configs")
        only_diff = st.toggle("Only keys that differ", value=True, key="runs_only_diff",
                              disabled=len(chosen) < 2)
        table = records.config_table(chosen, only_differences=only_diff)
        if table.empty:
            st.caption("The chosen runs have the same config." if only_diff else "No config.yaml found.")
        else:
            st.dataframe(table, key="runs_configs")


def main() -> None:
    st.title("Runs")
    runs = common.runs()
    if not runs:
        st.info(common.NO_RUNS_HINT.format(roots=common.roots_text(records.runs_roots())))
        return
    names = [r.name for r in runs]
    chosen_names = st.multiselect("Runs to compare", names, default=default_selection(runs),
                                  key="runs_selected",
                                  help="e.g. the nose task with lr 1e-3 vs 2e-3, or filter size 5 vs 7")
    by_name = {r.name: r for r in runs}
    chosen = [by_name[n] for n in chosen_names]  # in the order the user picked them
    if chosen:
        show_comparison(chosen)
    else:
        st.caption("Choose one or more runs above.")
    with st.expander(f"All runs ({len(runs)})", expanded=not chosen):
        show_overview(runs)


main()
