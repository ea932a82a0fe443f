"""Failure cases page: the worst and the best images of an evaluation, with overlays."""

from __future__ import annotations

import streamlit as st

from webapp import common, records

N_SHOWN = 12
NCOLS = 4


def show_thumbs(thumbs: list[records.Thumb], kind: str) -> None:
    chosen = [t for t in thumbs if t.kind == kind][:N_SHOWN]
    cols = st.columns(NCOLS)
    for i, t in enumerate(chosen):
        with cols[i % NCOLS]:
            st.image(common.read_rgb(t.path), caption=f"#{t.rank + 1} · {t.image_id}", width="stretch")


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
                     caption=f"#{i + 1} · {image_id} · NME {src.per_image['nme'].loc[row]:.4f}")


def main() -> None:
    st.title("Failure cases")
    sources = common.eval_sources()
    if not sources:
        st.info("No evaluations yet: `kpcore evaluate` saves the worst and best images "
                "under `<checkpoint>/eval/<split>/thumbs/`.")
        return
    with_thumbs = [s for s in sources if records.list_thumbs(s.thumbs)]
    ordered = with_thumbs + [s for s in sources if s not in with_thumbs]
    labels = [s.label for s in ordered]
    label = st.selectbox("Model and split", labels, key="failures_source")
    src = ordered[labels.index(label)]
    thumbs = records.list_thumbs(src.thumbs)
    st.caption("Red = predicted, green = true.")
    for kind, title in (("worst", "Worst images"), ("best", "Best images")):
        st.subheader(title)
        if any(t.kind == kind for t in thumbs):
            show_thumbs(thumbs, kind)
        else:
            show_rendered(src, worst=kind == "worst")


main()
