"""Runs page: training curves overlaid, configs and final metrics side by side."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from webapp import common, figures, records

MAX_DEFAULT_RUNS = 4
PCT_COLUMNS = ("best val NME (%)", "last val NME (%)")


def shipped_runs(checkpoints: list[records.CheckpointInfo]) -> list[str]:
    """Names of the runs the shipped checkpoints came from (their config's ``records`` folder),
    the flagship's first."""
    shipped = sorted((c for c in checkpoints if c.config.get("records")),
                     key=lambda c: c.name != records.FLAGSHIP)
    return list(dict.fromkeys(Path(str(c.config["records"])).name for c in shipped))


def default_selection(runs: list[records.Run], checkpoints: list[records.CheckpointInfo]) -> list[str]:
    """The runs of the shipped models that share the flagship's task (curves of one task compare),
    the flagship's first; without any shipped run, the newest run and the others of its task.
    At most :data:`MAX_DEFAULT_RUNS`."""
    if not runs:
        return []
    by_name = {r.name: r for r in runs}
    pool = [by_name[n] for n in shipped_runs(checkpoints) if n in by_name] or runs
    task = pool[0].task
    return [r.name for r in pool if r.task == task][:MAX_DEFAULT_RUNS]


def _fmt(value) -> str:
    """Numbers to 4 significant digits for the side-by-side table (it mixes types per row)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def metrics_frame(runs: list[records.Run]) -> pd.DataFrame:
    """:meth:`records.Run.final_metrics` of each run, columns in :data:`records.RUN_COLUMNS` order."""
    table = pd.DataFrame([r.final_metrics() for r in runs])
    return table[[c for c in records.RUN_COLUMNS if c in table.columns]]


def norm_caption(runs: list[records.Run]) -> str:
    """Which distance each task's NME is divided by."""
    names = {}
    for r in runs:
        names.setdefault(r.task, records.norm_name_for(records.layout_for(r.best_config or r.config)))
    return "NME in % of: " + "; ".join(f"{task} — {n}" for task, n in names.items())


def show_overview(runs: list[records.Run]) -> None:
    table = metrics_frame(runs)
    st.dataframe(table, hide_index=True, key="runs_overview", column_config={
        c: st.column_config.NumberColumn(c, format="%.2f%%") for c in PCT_COLUMNS} | {
        "best val error (px)": st.column_config.NumberColumn(format="%.2f"),
        "run": st.column_config.TextColumn(width="medium"),
    })
    st.caption(norm_caption(runs))


def loss_caption(chosen: list[records.Run]) -> str | None:
    """Says which runs' validation loss is a different function from their training loss."""
    differs = [r for r in chosen if r.val_loss_differs]
    if not differs:
        return None
    names = ", ".join(f"`{r.name}` ({r.loss_name})" for r in differs)
    return (f"{names}: trained on a heatmap loss, validated with an L1 on normalised coordinates, "
            "so training and validation loss are on different scales (hence separate panels). "
            "Compare runs by validation NME.")


def show_comparison(chosen: list[records.Run]) -> None:
    st.plotly_chart(figures.training_curves(chosen), key="runs_curves")
    note = loss_caption(chosen)
    if note:
        st.caption(note)
    st.subheader("Final metrics")
    metrics = metrics_frame(chosen).set_index("run").T
    st.dataframe(metrics.map(_fmt), key="runs_metrics", width="stretch",
                 column_config={name: st.column_config.TextColumn(name, width="medium")
                                for name in metrics.columns})
    st.caption(norm_caption(chosen))
    st.subheader("Configs")
    only_diff = st.toggle("Only keys that differ", value=True, key="runs_only_diff",
                          disabled=len(chosen) < 2)
    table = records.config_table(chosen, only_differences=only_diff)
    if table.empty:
        st.caption("The chosen runs have the same config." if only_diff else "No config.yaml found.")
    else:
        st.dataframe(table, key="runs_configs", width="stretch")


def main() -> None:
    st.title("Runs")
    runs = common.runs()
    if not runs:
        st.info(common.NO_RUNS_HINT.format(roots=common.roots_text(records.runs_roots())))
        return
    names = [r.name for r in runs]
    chosen_names = st.multiselect("Runs to compare", names, default=default_selection(runs, common.checkpoints()),
                                  key="runs_selected",
                                  help="Opens with the shipped models' runs. Compare e.g. the nose task with "
                                       "lr 1e-3 vs 2e-3, or filter size 5 vs 7")
    by_name = {r.name: r for r in runs}
    chosen = [by_name[n] for n in chosen_names]  # in the order the user picked them
    if chosen:
        show_comparison(chosen)
    else:
        st.caption("Choose one or more runs above.")
    with st.expander(f"All runs ({len(runs)})", expanded=not chosen):
        show_overview(runs)


main()
