"""Robustness page: NME against perturbation strength (blur, noise, ...), one line per model.

Reads ``<model>/eval/<split>/robustness.csv`` written by
``python -m kpcore evaluate MODEL --perturb blur,noise,...`` (kpcore/evaluation/robustness.py).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from webapp import common, figures, records

NO_ROBUSTNESS_HINT = (
    "No robustness results yet. Write them with "
    "`python -m kpcore evaluate checkpoints/face68-300w --perturb blur,noise,brightness,scale,rotate,occlude` "
    "(saved as `<model>/eval/<split>/robustness.csv`)."
)
NCOLS = 2


def main() -> None:
    st.title("Robustness")
    tables: dict[tuple, dict[str, pd.DataFrame]] = {}
    norm: dict[tuple, str] = {}
    for src in common.eval_sources():
        try:
            table = records.robustness_table(src)
        except ValueError as e:
            st.warning(str(e))
            continue
        if table is not None:
            tables.setdefault(src.key, {})[src.label] = table
            norm.setdefault(src.key, src.norm_name)
    if not tables:
        st.info(NO_ROBUSTNESS_HINT)
        return
    keys = list(tables)
    labels = [f"{records.group_label(k)} ({len(tables[k])} model{'s' if len(tables[k]) > 1 else ''})" for k in keys]
    key = keys[labels.index(st.selectbox("Test set (task · split)", labels, key="robust_group"))]
    common.reset_on_new_group("robust", key, {"robust_models": list(tables[key])})  # all its models
    chosen = st.multiselect("Models", list(tables[key]), key="robust_models")
    if not chosen:
        st.caption("Choose one or more models.")
        return
    shown = {m: tables[key][m] for m in chosen}
    perturbations = list(dict.fromkeys(p for t in shown.values() for p in t["perturbation"] if p != "none"))
    st.caption(f"NME in % of the {norm[key]}; the clean point (no perturbation) is part of each curve. "
               "Rotation and scale move the true points with the image; the face box stays where it was, "
               "as a detector's box would.")
    cols = st.columns(NCOLS)
    for i, p in enumerate(perturbations):
        with cols[i % NCOLS]:
            st.plotly_chart(figures.robustness_figure(shown, p, norm[key]), key=f"robust_{p}")
    with st.expander("Table"):
        table = pd.concat([t.assign(model=m) for m, t in shown.items()], ignore_index=True)
        table["NME (%)"] = 100 * table["nme"]
        if "failure_rate" in table:
            table["failure rate (%)"] = 100 * table["failure_rate"]
        cols_order = [c for c in ("model", "perturbation", "strength", "unit", "NME (%)", "failure rate (%)", "n")
                      if c in table.columns]
        st.dataframe(table[cols_order], hide_index=True, key="robust_table", width="stretch",
                     column_config={"NME (%)": st.column_config.NumberColumn(format="%.2f"),
                                    "failure rate (%)": st.column_config.NumberColumn(format="%.1f")})


main()
