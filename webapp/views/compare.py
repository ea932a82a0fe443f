"""Model comparison page: two or more models on the same faces.

Sources are grouped by (task / dataset, split) and aligned on image id, so every
number on the page is over the images all chosen models have. Reads only saved
results (``eval/<split>/per_image.csv``, runs' ``val_predictions.csv``, references
such as ``records/dlib/eval/``); the dataset is needed only for the original images.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from webapp import common, figures, records

MAX_DEFAULT_MODELS = 4
DEFAULT_THRESHOLD_PCT = 0.5  # NME percentage points a face must move by to count as improved / worsened
NO_PAIR_HINT = (
    "No two models were evaluated on the same images yet. Evaluate another checkpoint on the same "
    "split (`python -m kpcore evaluate checkpoints/<name> --split test`), or save a reference's "
    "results as `records/<name>/eval/<split>/per_image.csv` (docs/FORMATS.md)."
)


def choose_group(groups: dict[tuple, list[records.EvalSource]]) -> tuple:
    """A select box over the comparable groups (two or more sources), the flagship's first."""
    keys = [k for k, v in groups.items() if len(v) >= 2]
    labels = [f"{records.group_label(k)} ({len(groups[k])} models)" for k in keys]
    label = st.selectbox("Test set (task · split)", labels, key="compare_group",
                         help="Models are compared on the images they all have")
    return keys[labels.index(label)]


def show_table(aligned: pd.DataFrame, norm_name: str) -> None:
    table = records.tail_table(aligned)
    pct_cols = [c for c in table.columns if c.endswith("(%)")]
    st.dataframe(table, hide_index=True, key="compare_table", width="stretch", column_config={
        "model": st.column_config.TextColumn("model", width="large"),
        **{c: st.column_config.NumberColumn(c, format="%.2f") for c in pct_cols},
        **{c: st.column_config.NumberColumn(c, format="%.3f") for c in table.columns if c.startswith("AUC")},
    })
    st.caption(f"NME in % of the {norm_name}; P90 / P95 / P99: the error that 90 / 95 / 99% of the "
               f"faces stay under. Failure: NME above {100 * records.FAILURE_NME:g}%; AUC of the cumulative "
               f"error curve up to it.")


def clicked_face(event, aligned: pd.DataFrame) -> str | None:
    """The image id of a clicked dot of :func:`figures.nme_scatter`, or None."""
    try:
        points = event.selection.points
    except AttributeError:
        return None
    for p in points or []:
        data = p.get("customdata")
        if isinstance(data, (list, tuple)):
            data = data[0] if data else None
        if data is not None and str(data) in aligned.index:
            return str(data)
        idx = p.get("point_index")
        if p.get("curve_number") == 2 and idx is not None and idx < len(aligned):
            return str(aligned.index[idx])
    return None


def show_face(sources: dict[str, records.EvalSource], labels: list[str], image_id: str) -> None:
    """The face under each model, side by side."""
    cols = st.columns(len(labels))
    for col, label in zip(cols, labels, strict=True):
        src = sources[label]
        row = records.row_of(src, image_id)
        if row is None:
            col.caption(f"{label}: no row for {image_id}")
            continue
        pred = records.parse_points(src.per_image["pred"].iloc[row])
        true = records.parse_points(src.per_image["true"].iloc[row])
        shown = common.image_for(src, image_id, pred, true)
        nme = records.pct(float(src.per_image["nme"].iloc[row]))
        col.image(shown.image, width="stretch", caption=f"{label} · NME {nme} · {shown.origin}")
    st.caption(common.LEGEND)


def show_pair(sources: dict[str, records.EvalSource], aligned: pd.DataFrame, norm_name: str) -> None:
    labels = list(aligned.columns)
    st.subheader("Face by face")
    c1, c2, c3 = st.columns([2, 2, 1])
    b = c1.selectbox("Model B (y axis)", labels, index=0, key="compare_b")
    a = c2.selectbox("Model A (x axis)", [x for x in labels if x != b], key="compare_a")
    threshold = c3.number_input("threshold (NME %)", 0.0, 100.0, DEFAULT_THRESHOLD_PCT, 0.1, key="compare_thr",
                                help="A face counts as improved / worsened when B's NME differs from A's "
                                     "by more than this many percentage points") / 100
    counts = records.improved_worsened(aligned[a].to_numpy(), aligned[b].to_numpy(), threshold)
    m1, m2, m3 = st.columns(3)
    m1.metric("B better than A", counts["improved"], help=f"NME lower by more than {100 * threshold:g} points")
    m2.metric("B worse than A", counts["worsened"], help=f"NME higher by more than {100 * threshold:g} points")
    m3.metric("within the threshold", counts["same"])
    left, right = st.columns([3, 2])
    with left:
        event = st.plotly_chart(figures.nme_scatter(aligned, a, b, threshold), key="compare_scatter",
                                on_select="rerun", selection_mode="points")
        st.caption(f"NME in % of the {norm_name}. Green: B better, red: B worse (beyond the threshold band); "
                   "grey: within it.")
    diff = (aligned[b] - aligned[a]).sort_values(key=np.abs, ascending=False)
    options = list(diff.index)
    # A new pair of models opens on its largest change, not on the face the last pair showed.
    common.reset_on_new_group("compare_pair", (a, b), {"compare_face": options[0]})
    clicked = clicked_face(event, aligned)
    if clicked is not None and clicked != st.session_state.get("compare_last_click"):
        st.session_state["compare_last_click"] = clicked
        st.session_state["compare_face"] = clicked  # before the select box below is drawn
    with right:
        if st.session_state.get("compare_face") not in options:
            st.session_state.pop("compare_face", None)  # another test set was chosen
        face = st.selectbox("Face (largest change first; or click a dot)", options, key="compare_face",
                            format_func=lambda i: f"{i} · B−A {100 * diff[i]:+.2f} pts")
        show_face(sources, [a, b], face)


def main() -> None:
    st.title("Model comparison")
    sources = common.eval_sources()
    groups = records.comparable_groups(sources)
    if not any(len(v) >= 2 for v in groups.values()):
        st.info(NO_PAIR_HINT)
        return
    key = choose_group(groups)
    members = groups[key]
    by_label = {s.label: s for s in members}
    labels = list(by_label)
    common.reset_on_new_group("compare", key, {"compare_models": labels[:MAX_DEFAULT_MODELS]})
    chosen = st.multiselect("Models", labels, key="compare_models")
    if len(chosen) < 2:
        st.caption("Choose two or more models.")
        return
    aligned = records.aligned_nme([by_label[c] for c in chosen])
    norm_name = by_label[chosen[0]].norm_name
    sizes = ", ".join(f"{c}: {len(by_label[c].per_image)}" for c in chosen)
    st.caption(f"{len(aligned)} images in common ({sizes}).")
    if len(aligned) == 0:
        st.warning("These models share no image ids; they were evaluated on different images.")
        return
    show_table(aligned, norm_name)
    curves = {c: records.ced_table(aligned[c].to_numpy()) for c in chosen}
    st.plotly_chart(figures.ced_figure(curves, norm_name), key="compare_ced")
    show_pair(by_label, aligned, norm_name)


main()
