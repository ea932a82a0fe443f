"""Slices page: where the error is — by face region, head pose, face size and confidence.

Every slice reads saved per-image results; a column a table lacks (``pose``,
``confidence``) turns its slice off with a note instead of failing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from webapp import common, figures, records

MAX_DEFAULT_MODELS = 3
MIN_BIN_IMAGES = 3  # bins with fewer images are dropped from the pose / size charts


def choose(sources: list[records.EvalSource]) -> tuple[list[records.EvalSource], pd.DataFrame] | None:
    """Test set and models; returns the chosen sources and their per-image NME aligned on image id."""
    groups = records.comparable_groups(sources)
    keys = list(groups)
    labels = [f"{records.group_label(k)} ({len(groups[k])} model{'s' if len(groups[k]) > 1 else ''})"
              for k in keys]
    label = st.selectbox("Test set (task · split)", labels, key="slices_group")
    key = keys[labels.index(label)]
    by_label = {s.label: s for s in groups[key]}
    common.reset_on_new_group("slices", key, {"slices_models": list(by_label)[:MAX_DEFAULT_MODELS]})
    chosen = st.multiselect("Models", list(by_label), key="slices_models")
    if not chosen:
        st.caption("Choose one or more models.")
        return None
    srcs = [by_label[c] for c in chosen]
    aligned = records.aligned_nme(srcs)
    st.caption(f"{len(aligned)} images in common · NME in % of the {srcs[0].norm_name}.")
    return srcs, aligned


def show_regions(srcs: list[records.EvalSource]) -> None:
    tables = []
    for src in srcs:
        t = records.region_errors(src)
        if len(t):
            tables.append(t.assign(model=src.label))
    if not tables:
        st.caption("One-point layout: no face regions to split the error into.")
        return
    table = pd.concat(tables, ignore_index=True)
    st.plotly_chart(figures.grouped_bars(table, "region", "Error per face region (mean over its points)",
                                         "region", srcs[0].norm_name, count="points"), key="slices_regions")


def _subset(src: records.EvalSource, images: pd.Index) -> pd.DataFrame:
    df = src.per_image.drop_duplicates("image")
    df.index = df["image"].astype(str)
    return df.loc[images]


def _bars(values: dict[str, np.ndarray], bins: pd.Series, title: str, x_title: str, norm_name: str,
          key: str) -> None:
    table = records.sliced_nme(values, bins)
    table = table[table["images"] >= MIN_BIN_IMAGES]
    if table.empty:
        st.caption(f"No bin has {MIN_BIN_IMAGES} or more images.")
        return
    st.plotly_chart(figures.grouped_bars(table, "bin", title, x_title, norm_name), key=key)
    counts = table.drop_duplicates("bin")[["bin", "images"]]
    st.caption("Images per bin: " + ", ".join(f"{b} {n}" for b, n in counts.itertuples(index=False)))


def show_pose(srcs: list[records.EvalSource], aligned: pd.DataFrame) -> None:
    first = _subset(srcs[0], aligned.index)
    values = {c: aligned[c].to_numpy() for c in aligned.columns}
    norm_name = srcs[0].norm_name
    if "pose" in first.columns:
        _bars(values, first["pose"].astype(str).reset_index(drop=True), "Error by head pose (labelled classes)",
              "pose class", norm_name, "slices_pose_class")
    elif "yaw" in first.columns:
        _bars(values, records.yaw_bins(first["yaw"].to_numpy()), "Error by |yaw| (saved)", "|yaw|", norm_name,
              "slices_yaw")
    elif srcs[0].layout == "ibug300w":
        true = np.stack([records.parse_points(t) for t in first["true"]])
        yaw = records.estimate_yaw(true)
        if yaw is None:
            st.caption("Yaw slice skipped: `kpcore.live.pose` (head pose from 68 points) is not in this checkout.")
            return
        _bars(values, records.yaw_bins(yaw), "Error by |yaw| (estimated from the true points)", "|yaw|",
              norm_name, "slices_yaw")
        st.caption("Yaw from `kpcore.live.pose.estimate_pose` on each face's true 68 points (the image size is "
                   "not saved; each face is assumed centred in a frame 4x its extent).")
    else:
        st.caption("No pose for this test set: the table has no `pose` column (MTFL evaluations write one) "
                   "and yaw is estimated only for 68-point faces.")


def show_size(srcs: list[records.EvalSource], aligned: pd.DataFrame) -> None:
    src = srcs[0]
    first = _subset(src, aligned.index)
    nme = first["nme"].to_numpy(dtype=float)
    size = np.where(nme > 0, first["px_error"].to_numpy(dtype=float) / np.where(nme > 0, nme, 1), np.nan)
    values = {c: aligned[c].to_numpy() for c in aligned.columns}
    _bars(values, records.face_size_bins(size), "Error by face size (quartiles)",
          f"face size: {src.norm_name} in pixels", src.norm_name, "slices_size")


def show_confidence(srcs: list[records.EvalSource]) -> None:
    with_conf = [s for s in srcs if "confidence" in s.per_image.columns
                 and s.per_image["confidence"].notna().any()]
    if not with_conf:
        st.caption("No `confidence` column in these tables: evaluations that save the model's confidence "
                   "(kpcore evaluate) show error vs confidence here.")
        return
    points = {s.label: (s.per_image["confidence"].to_numpy(dtype=float), s.per_image["nme"].to_numpy(dtype=float))
              for s in with_conf}
    norm_name = with_conf[0].norm_name
    left, right = st.columns(2)
    left.plotly_chart(figures.confidence_scatter(points), key="slices_conf_scatter")
    curves = {m: records.flagging_curve(nme, conf) for m, (conf, nme) in points.items()}
    right.plotly_chart(figures.flagging_figure(curves), key="slices_flagging")
    st.caption(f"NME in % of the {norm_name}.")
    for model, (conf, nme) in points.items():
        ok = np.isfinite(conf) & np.isfinite(nme)
        if ok.sum() > 2:
            rho = pd.Series(conf[ok]).corr(pd.Series(nme[ok]), method="spearman")
            st.caption(f"{model}: Spearman correlation of confidence and NME {rho:+.2f} "
                       "(negative = less confident faces have larger errors).")


def main() -> None:
    st.title("Error slices")
    sources = common.eval_sources()
    if not sources:
        st.info("No per-image results yet: `kpcore evaluate MODEL` writes `<model>/eval/<split>/per_image.csv`.")
        return
    picked = choose(sources)
    if picked is None:
        return
    srcs, aligned = picked
    if len(aligned) == 0:
        st.warning("The chosen models share no image ids.")
        return
    regions, pose, size, conf = st.tabs(["Face region", "Head pose", "Face size", "Confidence"])
    with regions:
        show_regions(srcs)
    with pose:
        show_pose(srcs, aligned)
    with size:
        show_size(srcs, aligned)
    with conf:
        show_confidence(srcs)


main()
