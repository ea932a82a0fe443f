"""Triage page: a batch prediction table (``kpcore predict INPUT... --out TABLE``) as a user cleaning a
collection needs it: what was found, the confidence and pose of the faces, the least confident faces
drawn (the likely failures, found without labels), filters, and a download of the rows kept. Where the
photos carry labels (a 300-W ``.pts`` beside them), how well confidence ranked the real failures.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from kpcore.data.facts import W300_FACTS
from kpcore.evaluation import triage as tr
from kpcore.evaluation.metrics import FAILURE_THRESHOLD
from kpcore.live.render import LOW_CONFIDENCE, FaceMark, draw_keypoints, face_crop, points_canvas
from webapp import triage

FOLDER, UPLOAD = "batch folder", "upload"
NO_TABLES_HINT = (
    "No batch tables in `{root}`. Write one with `kpcore predict PHOTOS_OR_FOLDERS... --out {root}/NAME.parquet` "
    "(or `.csv`, `.jsonl`), set `{env}` to the folder that holds your tables, or upload a table."
)
CROP_SIDE = 256
NCOLS = 4
DEFAULT_SHOWN = 12
MAX_SHOWN = 48
MAX_AUTO_LABELS = 5000  # images; above this, looking for label files beside each photo waits for a click
SHOWN_COLUMNS = ["source", "frame", "face", "confidence", "det_score", "yaw", "pitch", "roll", tr.SIDE]


# ------------------------------------------------------------------ loading
# Tables are cached as resources, shared and not copied on each rerun (st.cache_data would unpickle a
# 100 MB copy every time a slider moves); nothing on this page changes them.
@st.cache_resource(show_spinner="Reading the table…", max_entries=4)
def _table_at(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    return tr.read_table(path)


@st.cache_resource(show_spinner="Reading the table…", max_entries=2)
def _table_uploaded(digest: str, name: str, _data: bytes) -> pd.DataFrame:
    return tr.read_table(_data, name=name)


@st.cache_data(show_spinner="Looking for labels beside the photos…", max_entries=4)
def _labels(token: str, roots: tuple[str, ...] | None, _df: pd.DataFrame) -> tr.LabelMatch:
    folders = None if roots is None else tuple(Path(r) for r in roots)
    allowed = [triage.is_under(s, folders) for s in _df["source"].astype(str)]
    match = tr.match_labels(_df[allowed])
    match.nme = match.nme.reindex(_df.index)
    return match


@dataclass
class Opened:
    """A table the user picked."""

    df: pd.DataFrame
    name: str
    token: str  # changes when the table does (cache key)
    roots: tuple[Path, ...] | None  # where its photos and labels may be read (None: anywhere)


def choose_table() -> Opened | None:
    """The table the user picked, or None (with a message)."""
    root = triage.batch_dir()
    mode = st.radio("Open a table from", [FOLDER, UPLOAD], horizontal=True, key="triage_mode")
    try:
        if mode == UPLOAD:
            upload = st.file_uploader("Batch table", type=[s.lstrip(".") for s in tr.TABLE_SUFFIXES],
                                      key="triage_upload")
            if upload is None:
                st.info("Upload a table written by `kpcore predict ... --out TABLE` (.parquet, .csv or .jsonl).")
                return None
            data = upload.getvalue()
            digest = hashlib.sha1(data).hexdigest()
            roots = triage.upload_roots()
            st.caption("An uploaded table's photos and labels are read only inside "
                       + ", ".join(f"`{r}`" for r in roots) + "; elsewhere its points are drawn on a blank canvas.")
            return Opened(_table_uploaded(digest, upload.name, data), upload.name, f"upload:{digest}", roots)
        tables = triage.list_tables(root)
        names = [str(p.relative_to(root)) for p in tables]
        c1, c2 = st.columns(2)
        typed = c2.text_input("…or a path inside that folder", key="triage_path",
                              help="absolute, or relative to the batch folder; paths outside it are refused. "
                                   "Clear it to pick from the list again.")
        picked = c1.selectbox(f"Tables in `{root}`", names, key="triage_table", disabled=bool(typed.strip()),
                              placeholder="no tables here", help=f"the folder is set by ${triage.BATCH_ENV}")
        if not typed.strip() and picked is None:
            st.info(NO_TABLES_HINT.format(root=root, env=triage.BATCH_ENV))
            return None
        path = triage.resolve_under(root, typed if typed.strip() else picked)
        stat = path.stat()
        return Opened(_table_at(str(path), stat.st_mtime_ns, stat.st_size), str(path.relative_to(root)),
                      f"{path}:{stat.st_mtime_ns}:{stat.st_size}", None)
    except ValueError as e:  # TriageTableError, or a path refused by resolve_under
        st.error(str(e))
        return None


# ---------------------------------------------------------------- sections
def show_counts(df: pd.DataFrame) -> None:
    n = tr.counts(df)
    cols = st.columns(5)
    cols[0].metric("images", f"{n['images']:,}", help=f"photos and video frames, from {n['inputs']:,} file(s)")
    cols[1].metric("faces", f"{n['faces']:,}", help=f"{n['low_confidence']:,} of them marked low_confidence (below "
                   "the run's --min-confidence)" if n["low_confidence"] else None)
    cols[2].metric("no face", f"{n['no_face']:,}", help="images read, where the detector found no face")
    cols[3].metric("unreadable", f"{n['unreadable']:,}", help="files that are not images or videos, or are broken")
    cols[4].metric("errors", f"{n['error']:,}", help="anything else that went wrong on a file")
    meta = df.attrs.get("kpcore") or {}
    if meta:
        st.caption(" · ".join(f"{k}: `{v}`" for k, v in meta.items()))
    why = tr.reasons(df)
    if not why.empty:
        with st.expander(f"Images without a face: {len(why)} reason(s)", icon=":material/help:"):
            st.dataframe(why, hide_index=True, width="stretch", key="triage_reasons",
                         column_config={"reason": st.column_config.TextColumn(width="large"),
                                        "example": st.column_config.TextColumn("example file", width="medium")})


def face_filter(faces: pd.DataFrame) -> tr.FaceFilter:
    """Sliders for confidence, pose and face size; a slider left at its full range filters nothing."""
    def slider(label: str, column: str, col, lo: float, hi: float, step: float, fmt: str) -> tr.Range:
        values = faces[column].astype(float)
        lo = min(lo, float(np.floor(values.min()))) if values.notna().any() else lo
        hi = max(hi, float(np.ceil(values.max()))) if values.notna().any() else hi
        chosen = col.slider(label, lo, hi, (lo, hi), step=step, format=fmt, key=f"triage_{column}")
        return None if chosen == (lo, hi) else (float(chosen[0]), float(chosen[1]))

    c = st.columns(5)
    return tr.FaceFilter(
        confidence=slider("confidence", "confidence", c[0], 0.0, 1.0, 0.01, "%.2f"),
        yaw=slider("yaw (°)", "yaw", c[1], 0.0, 0.0, 1.0, "%.0f"),
        pitch=slider("pitch (°)", "pitch", c[2], 0.0, 0.0, 1.0, "%.0f"),
        roll=slider("roll (°)", "roll", c[3], 0.0, 0.0, 1.0, "%.0f"),
        side=slider("face size (box side, px)", tr.SIDE, c[4], 0.0, 0.0, 1.0, "%.0f"),
    )


def face_tile(row: pd.Series, k_points: int, roots: tuple[Path, ...] | None) -> tuple[np.ndarray, bool]:
    """A close-up of one face with its points (low-confidence points hollow); points alone on a
    blank canvas when its photo cannot be read here. Returns the tile and whether it is the photo."""
    pts = tr.points(row.to_frame().T)[0]
    box = (float(row["box_x"]), float(row["box_y"]), float(row["box_w"]), float(row["box_h"]))
    pc = tr.point_confidence(row.to_frame().T)
    layout = W300_FACTS if k_points == W300_FACTS.num_points else None
    found = triage.read_frame(str(row["source"]), row["frame"], roots)
    if found is None:
        canvas, (moved,) = points_canvas(pts, size=CROP_SIDE)
        return draw_keypoints(canvas, moved, layout), False
    image, size = found
    shown_pts, shown_box = triage.to_shown(pts, box, size, (image.shape[1], image.shape[0]))
    mark = FaceMark(points=shown_pts, box=shown_box, point_confidence=None if pc is None else pc[0],
                    low=float(row["confidence"]) < LOW_CONFIDENCE)
    return face_crop(image, mark, layout, size=CROP_SIDE), True


def show_lowest(faces: pd.DataFrame, nme: pd.Series | None, roots: tuple[Path, ...] | None) -> None:
    st.subheader("Least confident faces")
    c1, c2 = st.columns([3, 1])
    n = c1.slider("faces shown", 4, MAX_SHOWN, DEFAULT_SHOWN, step=4, key="triage_shown")
    has_video = faces["frame"].notna().any()
    one_per_track = has_video and c2.checkbox("one frame per video face", value=True, key="triage_per_track",
                                              help="only the least confident frame of each tracked face")
    lowest = tr.lowest_confidence(faces, n, one_per_track=one_per_track)
    k = tr.num_points(faces)
    cols = st.columns(NCOLS)
    missing = 0
    for i, (index, row) in enumerate(lowest.iterrows()):
        tile, on_disk = face_tile(row, k, roots)
        missing += not on_disk
        caption = f"#{i + 1} · {Path(str(row['source'])).name}"
        caption += "" if pd.isna(row["frame"]) else f" · frame {int(row['frame'])}"
        caption += f" · face {int(row['face'])} · conf {float(row['confidence']):.2f}"
        if nme is not None and pd.notna(nme.get(index)):
            caption += f" · NME {100 * nme[index]:.1f}%"
        with cols[i % NCOLS]:
            st.image(tile, width="stretch", caption=caption)
    st.caption(":red[**●**] predicted point · :orange[**○**] point of low confidence (< "
               f"{LOW_CONFIDENCE:g}) · :orange[**▭**] face of low confidence · :blue[**▭**] detector box"
               + (f"  \n{missing} of these faces come from a photo or video not readable here: their points "
                  "are drawn on a blank canvas."
                  if missing else ""))


def show_ranking(df: pd.DataFrame, match: tr.LabelMatch) -> None:
    st.subheader("How well confidence ranks the real failures")
    c1, _ = st.columns([1, 3])
    threshold = c1.number_input("failure: NME above (%)", 1.0, 50.0, 100 * FAILURE_THRESHOLD, step=0.5,
                                key="triage_failure") / 100
    conf = df["confidence"].astype(float)
    rank = tr.failures_in_lowest(match.nme, conf, tr.LOWEST_FRACTION, threshold)
    pct = f"{100 * tr.LOWEST_FRACTION:g}%"
    cols = st.columns(4)
    cols[0].metric("labelled faces", f"{match.matched:,}",
                   help=f"{match.labelled:,} photo(s) with a {tr.LABEL_SUFFIX} file; {len(match.missed)} of them "
                        "have no detected face over the labelled one")
    cols[1].metric("mean NME", f"{100 * match.nme.mean():.2f}%" if match.matched else "–")
    cols[2].metric(f"failures (NME > {100 * threshold:g}%)", f"{rank.failures:,}")
    cols[3].metric(f"failures in lowest {pct}",
                   "–" if not rank.failures else f"{rank.share:.0%} ({rank.found} of {rank.failures})",
                   help=f"share of the failures among the {rank.inspected} least confident of {rank.faces} labelled "
                        f"faces; random order finds {pct} of the failures, the best possible order {rank.best:.0%}")
    st.caption(f"NME: mean point distance over the {W300_FACTS.norm_name}, against the {tr.LABEL_SUFFIX} file "
               f"beside each photo; each label is matched to the detected face whose box overlaps its points' "
               f"box most (IoU ≥ {tr.MIN_MATCH_IOU:g}). Over all labelled faces of the table, not only the "
               "filtered ones.")
    if match.missed:
        with st.expander(f"{len(match.missed)} labelled face(s) not detected"):
            st.dataframe(pd.DataFrame({"source": match.missed}), hide_index=True, key="triage_missed")
    if match.bad:
        st.warning(f"{len(match.bad)} label file(s) could not be read, e.g. {match.bad[0]}")
    if rank.failures == 0:
        st.info(f"No labelled face has NME above {100 * threshold:g}%: nothing to rank. Lower the threshold "
                "to see how confidence orders the worst faces.")
        labelled = match.nme.notna()
        st.plotly_chart(triage.nme_confidence_figure(conf[labelled], match.nme[labelled], threshold,
                                                     W300_FACTS.norm_name), key="triage_fig_nme_conf")
        return
    curve = tr.ranking_curve(match.nme, conf, threshold)
    labelled = match.nme.notna()
    c1, c2 = st.columns(2)
    with c1:
        st.plotly_chart(triage.ranking_figure(curve, rank, tr.LOWEST_FRACTION), key="triage_fig_ranking")
    with c2:
        st.plotly_chart(triage.nme_confidence_figure(conf[labelled], match.nme[labelled], threshold,
                                                     W300_FACTS.norm_name), key="triage_fig_nme_conf")


def common_folder(sources: pd.Series) -> str:
    """The folder all absolute ``sources`` share ("" if they share none but the root)."""
    unique = list(dict.fromkeys(sources.astype(str)))
    paths = [p for p in unique if os.path.isabs(p)]
    if not paths or len(paths) != len(unique):
        return ""
    folder = os.path.dirname(paths[0]) if len(paths) == 1 else os.path.commonpath(paths)
    return "" if folder in ("", os.sep) else folder


def show_download(df: pd.DataFrame, kept: pd.DataFrame, nme: pd.Series | None, name: str) -> None:
    st.subheader("Rows kept by the filters")
    rest = df[df["status"].isin(tr.NO_FACE_STATUSES)]
    with_rest = st.checkbox(f"also the {len(rest):,} row(s) without a face (no face, unreadable, error)",
                            key="triage_with_rest", disabled=rest.empty)
    rows = pd.concat([kept, rest]) if with_rest else kept
    shown = [c for c in SHOWN_COLUMNS if c in rows.columns and not (c == "frame" and rows[c].isna().all())]
    view = rows[shown + ["status"]].copy()
    folder = common_folder(view["source"])
    if folder:
        view["source"] = [str(Path(v).relative_to(folder)) for v in view["source"]]
        st.caption(f"Paths relative to `{folder}` (the download keeps them whole).")
    if nme is not None:
        view.insert(view.columns.get_loc("confidence") + 1, "NME (%)", 100 * nme.reindex(view.index))
    st.dataframe(view.sort_values("confidence", na_position="first"), hide_index=True, width="stretch",
                 key="triage_rows", height=260,
                 column_config={"confidence": st.column_config.NumberColumn(format="%.3f"),
                                "det_score": st.column_config.NumberColumn(format="%.3f"),
                                **{c: st.column_config.NumberColumn(format="%.1f")
                                   for c in ("yaw", "pitch", "roll", tr.SIDE, "NME (%)")}})
    stem = Path(name).stem + "-filtered"
    c1, c2, _ = st.columns([1, 1, 3])
    # Encoded on click: CSV of 50,000 rows of 68 points takes ~30 s, too long for every rerun. No rerun
    # on click ("ignore"): a rerun dropped the deferred file before the browser fetched it.
    c1.download_button(f"CSV ({len(rows):,} rows)", partial(triage.table_csv, rows), f"{stem}.csv", "text/csv",
                       key="triage_csv", icon=":material/download:", on_click="ignore")
    c2.download_button(f"Parquet ({len(rows):,} rows)", partial(triage.table_parquet, rows, df.attrs.get("kpcore") or {}),
                       f"{stem}.parquet", "application/octet-stream", key="triage_parquet", icon=":material/download:",
                       on_click="ignore")


def main() -> None:
    st.title("Batch triage")
    chosen = choose_table()
    if chosen is None:
        return
    df, name = chosen.df, chosen.name
    show_counts(df)
    faces = tr.faces(df)
    if faces.empty:
        st.info("No faces in this table: every row is an image without a face or a file that could not be read.")
        return

    n_images = tr.counts(df)["images"]
    match = None
    if st.checkbox(f"Compare with labels beside the photos ({tr.LABEL_SUFFIX} files)",
                   value=n_images <= MAX_AUTO_LABELS, key="triage_labels"):
        match = _labels(chosen.token, None if chosen.roots is None else tuple(map(str, chosen.roots)), df)
    nme = match.nme if match is not None and match.matched else None

    st.subheader("Filters")
    kept = faces[face_filter(faces).mask(faces)]
    st.caption(f"{len(kept):,} of {len(faces):,} faces kept; the charts, the faces shown and the download "
               "follow the filters.")
    if kept.empty:
        st.warning("No face is inside every range: widen a filter.")
        return
    c1, c2 = st.columns(2)
    per_image = tr.faces_per_image(df)
    c1.plotly_chart(triage.faces_per_image_figure(per_image), key="triage_fig_per_image")
    c2.plotly_chart(triage.confidence_figure(kept["confidence"], LOW_CONFIDENCE), key="triage_fig_confidence")
    c1, c2 = st.columns([2, 1])
    c1.plotly_chart(triage.pose_figure(kept), key="triage_fig_pose")
    c2.plotly_chart(triage.side_figure(kept[tr.SIDE]), key="triage_fig_side")

    show_lowest(kept, nme, chosen.roots)
    if match is not None:
        if match.matched:
            show_ranking(df, match)
        else:
            st.caption(f"No label files ({tr.LABEL_SUFFIX}) found beside the photos, so the page cannot say which "
                       "faces really failed; the least confident faces above are the ones to look at first.")
    show_download(df, kept, nme, name)


main()
