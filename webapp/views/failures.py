"""Failure cases page: the worst and the best images of an evaluation, with overlays."""

from __future__ import annotations

import streamlit as st

from webapp import common, records

N_SHOWN = 12
NCOLS = 4


def thumb_caption(src: records.EvalSource, t: records.Thumb) -> str:
    """``#rank · image id · NME x.xx%`` (the thumbnail's name if its row is not found)."""
    row = records.thumb_row(src, t.image_id)
    if row is None:
        return f"#{t.rank + 1} · {t.image_id}"
    df = src.per_image
    return f"#{t.rank + 1} · {df['image'].iloc[row]} · NME {records.pct(float(df['nme'].iloc[row]))}"


def show_thumbs(src: records.EvalSource, thumbs: list[records.Thumb], kind: str) -> None:
    chosen = [t for t in thumbs if t.kind == kind][:N_SHOWN]
    cols = st.columns(NCOLS)
    for i, t in enumerate(chosen):
        with cols[i % NCOLS]:
            st.image(common.read_rgb(t.path), width="stretch", caption=thumb_caption(src, t))


def show_rendered(src: records.EvalSource, worst: bool) -> None:
    """Draw the worst / best rows ourselves when no thumbnails were saved."""
    order = src.per_image["nme"].sort_values(ascending=not worst).index[:N_SHOWN]
    pred, true = src.pred, src.true
    cols = st.columns(NCOLS)
    for i, row in enumerate(order):
        image_id = str(src.per_image["image"].loc[row])
        pos = src.per_image.index.get_loc(row)
        shown = common.image_for(src, image_id, pred[pos], true[pos])
        with cols[i % NCOLS]:
            st.image(shown.image, width="stretch",
                     caption=f"#{i + 1} · {image_id} · NME {records.pct(src.per_image['nme'].loc[row])}")


def main() -> None:
    st.title("Failure cases")
    sources = common.eval_sources()
    if not sources:
        st.info("No evaluations yet: `kpcore evaluate` saves the worst and best images "
                "under `<checkpoint>/eval/<split>/thumbs/`.")
        return
    labels = [s.label for s in sources]  # the flagship first (records.list_eval_sources)
    label = st.selectbox("Model and split", labels, key="failures_source")
    src = sources[labels.index(label)]
    thumbs = records.list_thumbs(src.thumbs)
    st.caption(f"{common.LEGEND}  \nNME in % of the {src.norm_name}.")
    for kind, title in (("worst", "Worst images"), ("best", "Best images")):
        st.subheader(title)
        if any(t.kind == kind for t in thumbs):
            show_thumbs(src, thumbs, kind)
        else:
            show_rendered(src, worst=kind == "worst")


main()
