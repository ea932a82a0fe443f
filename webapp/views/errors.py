"""Per-image errors page: a filterable table, the chosen image, error distributions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from kpcore.evaluation import metrics
from webapp import common, figures, records

NO_EVAL_HINT = (
    "No per-image predictions yet. Training writes `runs/<run>/val_predictions.csv`; "
    "`kpcore evaluate` writes `<checkpoint>/eval/<split>/per_image.csv` (see docs/FORMATS.md)."
)


FAILURE_PCT = f"{100 * records.FAILURE_NME:g}%"


def choose_source(sources: list[records.EvalSource], key: str) -> records.EvalSource:
    """A select box of the sources; the flagship model comes first (``records.list_eval_sources``)."""
    labels = [s.label for s in sources]
    label = st.selectbox("Model and split", labels, key=key,
                         help=f"The flagship `{records.FLAGSHIP}` first")
    return sources[labels.index(label)]


def show_summary(src: records.EvalSource, auc: float, fr: float) -> None:
    df = src.per_image
    cols = st.columns(5)
    cols[0].metric("images", f"{len(df)}")
    cols[1].metric("mean NME", records.pct(df["nme"].mean()), help=f"NME in % of the {src.norm_name}")
    cols[2].metric("mean error", f"{df['px_error'].mean():.2f} px")
    cols[3].metric(f"AUC @ {FAILURE_PCT}", f"{auc:.3f}")
    cols[4].metric(f"failure rate (NME > {FAILURE_PCT})", f"{fr:.1%}")
    st.caption(f"NME = mean point error / {src.norm_name}, in %.")


def filtered_table(df: pd.DataFrame) -> pd.DataFrame:
    """The table after the user's filters, worst first; ``row`` is the position in ``df``."""
    c1, c2, c3 = st.columns([2, 3, 2])
    text = c1.text_input("Image name contains", key="errors_filter_text")
    lo, hi = float(df["nme"].min()), float(df["nme"].max())
    if hi > lo:
        pct = c2.slider("NME range (%)", 100 * lo, 100 * hi, (100 * lo, 100 * hi), format="%.2f%%",
                        key="errors_filter_nme")
        nme_range = (pct[0] / 100 - 1e-12, pct[1] / 100 + 1e-12)
    else:
        nme_range = (lo, hi)
    failures_only = c3.checkbox("Failures only", key="errors_filter_fail",
                                help=f"NME above {FAILURE_PCT}")
    view = df[["image", "nme", "px_error"]].copy()
    view.insert(0, "row", np.arange(len(df)))
    view["nme_pct"] = 100 * view["nme"]
    keep = view["nme"].between(*nme_range)
    if text:
        keep &= view["image"].astype(str).str.contains(text, case=False, regex=False)
    if failures_only:
        keep &= view["nme"] > records.FAILURE_NME
    return view[keep].sort_values("nme", ascending=False).reset_index(drop=True)


def show_image(src: records.EvalSource, row: int, pred: np.ndarray, true: np.ndarray) -> None:
    image_id = str(src.per_image["image"].iloc[row])
    have_image = records.dataset_image_path(src.task, image_id) is not None
    has_thumb = records.thumb_for(src.thumbs, image_id) is not None
    # A saved thumbnail has its points burnt in: the toggles can only redraw dataset images or
    # the blank canvas, so they are switched off (and say why) over a thumbnail.
    fixed = not have_image and has_thumb
    why = "The saved thumbnail already has its points drawn; set KPCORE_DATA to redraw." if fixed else None
    c1, c2 = st.columns(2)
    lines = c1.toggle("Error lines", value=True, key="errors_lines", disabled=fixed, help=why)
    ids = c2.toggle("Point ids", value=False, key="errors_ids", disabled=fixed, help=why)
    shown = common.image_for(src, image_id, pred[row], true[row], error_lines=lines, show_ids=ids)
    nme = float(src.per_image["nme"].iloc[row])
    st.image(shown.image, caption=f"{shown.caption} · NME {records.pct(nme)}", width="stretch")
    st.caption(common.LEGEND)
    if not have_image:
        st.caption(common.data_hint())
    errs = metrics.point_errors(pred[row][None], true[row][None])[0]
    if len(errs) > 1:
        st.plotly_chart(figures.point_error_bars(errs, common.facts_or_none(src.layout)),
                        key="errors_point_bars")


def show_distributions(src: records.EvalSource, sources: list[records.EvalSource],
                       pred: np.ndarray, true: np.ndarray) -> None:
    nme = src.per_image["nme"].to_numpy()
    hist, ced, kp = st.tabs(["Error histogram", "Cumulative error", "Per keypoint"])
    with hist:
        st.plotly_chart(figures.nme_histogram(nme, records.FAILURE_NME, src.norm_name), key="errors_hist")
    with ced:
        others = [s.label for s in sources if s.label != src.label]
        compare = st.multiselect("Compare with", others, key="errors_compare")
        curves = {}
        for s in [src] + [s for s in sources if s.label in compare]:
            curves[s.label] = records.ced_table(s.per_image["nme"].to_numpy())
        st.plotly_chart(figures.ced_figure(curves, src.norm_name), key="errors_ced")
    with kp:
        if pred.shape[1] == 1:
            st.caption("One keypoint: its errors are the per-image errors above.")
            return
        layout = common.facts_or_none(src.layout)
        unit = st.radio("Unit", ["px", "NME"], horizontal=True, key="errors_kp_unit",
                        help=f"NME: % of the {src.norm_name}")
        errs = metrics.point_errors(pred, true)
        if unit == "NME":
            errs = 100 * errs / records.norm_distances(src)[:, None]
            unit = "% NME"
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
            # The errors first and narrow, the long image id last: the numbers one sorts and reads
            # stay in view in a third of the page, with no sideways scrolling.
            column_order=["nme_pct", "px_error", "image"], height=420, width="stretch",
            column_config={"image": st.column_config.TextColumn("image", width="large"),
                           "nme_pct": st.column_config.NumberColumn("NME (%)", format="%.2f%%", width="small"),
                           "px_error": st.column_config.NumberColumn("error (px)", format="%.2f",
                                                                     width="small")},
        )
    with image_col:
        rows = [r for r in event.selection.rows if r < len(view)]
        if len(view) == 0:
            st.caption("No image matches the filters.")
        else:
            show_image(src, int(view["row"].iloc[rows[0] if rows else 0]), pred, true)
    show_distributions(src, sources, pred, true)


main()
