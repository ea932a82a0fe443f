"""Per-image errors page: a filterable table, the chosen image, error distributions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from kpcore import metrics
from webapp import common, figures, records

NO_EVAL_HINT = (
    "No per-image predictions yet. Training writes `runs/<run>/val_predictions.csv`; "
    "`kpcore evaluate` writes `<checkpoint>/eval/<split>/per_image.csv` (see docs/FORMATS.md)."
)


def choose_source(sources: list[records.EvalSource], key: str) -> records.EvalSource:
    labels = [s.label for s in sources]
    label = st.selectbox("Model and split", labels, key=key)
    return sources[labels.index(label)]


def show_summary(src: records.EvalSource, auc: float, fr: float) -> None:
    df = src.per_image
    cols = st.columns(5)
    cols[0].metric("images", f"{len(df)}")
    cols[1].metric("mean NME", f"{df['nme'].mean():.4f}")
    cols[2].metric("mean error", f"{df['px_error'].mean():.2f} px")
    cols[3].metric(f"AUC @ {records.FAILURE_NME:g}", f"{auc:.3f}")
    cols[4].metric(f"failure rate (NME > {records.FAILURE_NME:g})", f"{fr:.1%}")


def filtered_table(df: pd.DataFrame) -> pd.DataFrame:
    """The table after the user's filters, worst first; ``row`` is the position in ``df``."""
    c1, c2, c3 = st.columns([2, 3, 2])
    text = c1.text_input("Image name contains", key="errors_filter_text")
    lo, hi = float(df["nme"].min()), float(df["nme"].max())
    if hi > lo:
        nme_range = c2.slider("NME range", lo, hi, (lo, hi), format="%.4f", key="errors_filter_nme")
    else:
        nme_range = (lo, hi)
    failures_only = c3.checkbox("Failures only", key="errors_filter_fail",
                                help=f"NME above {records.FAILURE_NME:g}")
    view = df[["image", "nme", "px_error"]].copy()
    view.insert(0, "row", np.arange(len(df)))
    keep = view["nme"].between(*nme_range)
    if text:
        keep &= view["image"].astype(str).str.contains(text, case=False, regex=False)
    if failures_only:
        keep &= view["nme"] > records.FAILURE_NME
    return view[keep].sort_values("nme", ascending=False).reset_index(drop=True)


def show_image(src: records.EvalSource, row: int, pred: np.ndarray, true: np.ndarray) -> None:
    image_id = str(src.per_image["image"].iloc[row])
    c1, c2 = st.columns(2)
    lines = c1.toggle("Error lines", value=True, key="errors_lines")
    ids = c2.toggle("Point ids", value=False, key="errors_ids")
    shown = common.image_for(src, image_id, pred[row], true[row], error_lines=lines, show_ids=ids)
    st.image(shown.image, caption=shown.caption, width="stretch")
    if shown.origin != "dataset":
        st.caption(common.DATA_HINT)
    errs = metrics.point_errors(pred[row][None], true[row][None])[0]
    if len(errs) > 1:
        st.plotly_chart(figures.point_error_bars(errs, common.facts_or_none(src.layout)),
                        key="errors_point_bars")


def show_distributions(src: records.EvalSource, sources: list[records.EvalSource],
                       pred: np.ndarray, true: np.ndarray) -> None:
    nme = src.per_image["nme"].to_numpy()
    hist, ced, kp = st.tabs(["Error histogram", "Cumulative error", "Per keypoint"])
    with hist:
        st.plotly_chart(figures.nme_histogram(nme, records.FAILURE_NME), key="errors_hist")
    with ced:
        others = [s.label for s in sources if s.label != src.label]
        compare = st.multiselect("Compare with", others, key="errors_compare")
        curves = {}
        for s in [src] + [s for s in sources if s.label in compare]:
            curves[s.label] = records.ced_table(s.per_image["nme"].to_numpy())
        st.plotly_chart(figures.ced_figure(curves), key="errors_ced")
    with kp:
        if pred.shape[1] == 1:
            st.caption("One keypoint: its errors are the per-image errors above.")
            return
        layout = common.facts_or_none(src.layout)
        unit = st.radio("Unit", ["px", "NME"], horizontal=True, key="errors_kp_unit")
        errs = metrics.point_errors(pred, true)
        if unit == "NME":
            # nme = px_error / norm distance, so each image's norm distance is px_error / nme.
            norm = (src.per_image["px_error"] / src.per_image["nme"]).to_numpy()[:, None]
            errs = errs / np.where(norm > 0, norm, np.nan)
        per_kp = np.nanmean(errs, axis=0)
        st.plotly_chart(figures.keypoint_errors_on_face(records.mean_shape(true), per_kp, layout, unit),
                        key="errors_kp_face")
        worst = np.argsort(per_kp)[::-1][:5]
        names = layout.group_of if layout is not None else [""] * len(per_kp)
        st.caption("Hardest points: " + ", ".join(
            f"{i} ({names[i]}, {per_kp[i]:.3g} {unit})" for i in worst))


def main() -> None:
    st.title("Per-image errors")
    sources = common.eval_sources()
    if not sources:
        st.info(NO_EVAL_HINT)
        st.caption(common.DATA_HINT)
        return
    src = choose_source(sources, "errors_source")
    pred, true = src.pred, src.true
    _, auc, fr = records.ced_table(src.per_image["nme"].to_numpy())
    show_summary(src, auc, fr)

    table_col, image_col = st.columns([3, 2])
    with table_col:
        view = filtered_table(src.per_image)
        st.caption(f"{len(view)} of {len(src.per_image)} images · click a row to see it · "
                   "click a header to sort")
        event = st.dataframe(
            view, key="errors_table", hide_index=True, on_select="rerun", selection_mode="single-row",
            selection_default={"selection": {"rows": [0]}} if len(view) else None,
            column_order=["image", "nme", "px_error"], height=420,
            column_config={"nme": st.column_config.NumberColumn("NME", format="%.4f"),
                           "px_error": st.column_config.NumberColumn("error (px)", format="%.2f")},
        )
    with image_col:
        rows = [r for r in event.selection.rows if r < len(view)]
        if len(view) == 0:
            st.caption("No image matches the filters.")
        else:
            show_image(src, int(view["row"].iloc[rows[0] if rows else 0]), pred, true)
    show_distributions(src, sources, pred, true)


main()
