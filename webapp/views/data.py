"""Data explorer page: samples with their true points, and the augmentation pipeline."""

from __future__ import annotations

import numpy as np
import streamlit as st
from PIL import Image

from kpcore.live.render import augmentation_grid, draw_keypoints, image_grid, to_rgb_uint8
from webapp import common, records

TILE = 320
FEW_POINTS = 5  # layouts with this many points or fewer get bigger markers
FEW_POINTS_RADIUS = 5.0
NCOLS = 4


def marker_radius(facts) -> float | None:
    """Bigger markers when there are only a few points (the nose tip), else the default."""
    return FEW_POINTS_RADIUS if facts.num_points <= FEW_POINTS else None


def show_samples(samples: list, facts, info) -> None:
    st.subheader("Samples and their true points")
    c1, c2, c3 = st.columns(3)
    n = c1.slider("How many", 1, 16, 8, key="data_n")
    start = c2.number_input("First sample", 0, max(0, len(samples) - 1), 0, key="data_start")
    ids = c3.toggle("Point ids", value=False, key="data_ids")
    tiles = []
    for i, s in enumerate(samples[int(start):int(start) + n], start=int(start)):
        image, points = common.crop_for_task(s, info)
        scale = TILE / max(image.shape[:2])
        big = np.asarray(Image.fromarray(image).resize(
            (round(image.shape[1] * scale), round(image.shape[0] * scale))))
        drawn = draw_keypoints(big, None, facts, true_points=(points + 0.5) * scale - 0.5,
                               show_ids=ids, radius=marker_radius(facts))
        tiles.append(common.labelled_tile(drawn, f"#{i} {s.image_id}", TILE))
    st.image(image_grid(tiles, NCOLS), width="stretch",
             caption="Green = true points, as the task's model input is cut (face box or whole image).")


def show_augmentation(samples: list, facts, info) -> None:
    import torch

    from kpcore.data.loader import InputSpec, KeypointDataset
    from kpcore.data.transforms import AugmentConfig

    st.subheader("Augmentation: one sample, several random draws")
    defaults = AugmentConfig()
    c1, c2, c3, c4, c5 = st.columns(5)
    index = c1.number_input("Sample", 0, len(samples) - 1, 0, key="aug_index")
    rotate = c2.slider("rotate (deg)", 0.0, 45.0, float(defaults.rotate_deg), key="aug_rotate")
    scale = c3.slider("scale range", 0.5, 1.5, (float(defaults.scale_min), float(defaults.scale_max)),
                      key="aug_scale")
    flip = c4.slider("flip probability", 0.0, 1.0, float(defaults.flip), key="aug_flip")
    bright = c5.slider("brightness", 0.0, 1.0, float(defaults.brightness), key="aug_bright")
    if st.button("New random draws", key="aug_redraw"):
        st.session_state["aug_seed"] = st.session_state.get("aug_seed", 0) + 1
    cfg = AugmentConfig(rotate_deg=rotate, scale_min=scale[0], scale_max=scale[1], flip=flip,
                        brightness=bright)
    try:
        cfg.validate()
    except ValueError as e:
        st.error(str(e))
        return
    # exactly what training does: crop (with box jitter), then the v2 pipeline
    width, height = info.input_size
    spec = InputSpec(width, height, color="rgb", crop_mode=info.crop_mode, enlarge=info.enlarge)
    ds = KeypointDataset([samples[int(index)]], facts, spec, cfg, cache=False, progress=False)
    torch.manual_seed(st.session_state.get("aug_seed", 0))

    def draw() -> tuple[np.ndarray, np.ndarray]:
        return ds.draw(0)

    st.image(augmentation_grid(draw, 8, facts, ncols=NCOLS, tile=TILE, radius=marker_radius(facts)),
             width="stretch",
             caption="Green = the moved true points. A flip also swaps left and right point ids.")


def show_saved_thumbs() -> None:
    """Saved evaluation thumbnails in one grid, each tile labelled with model, image and NME."""
    tiles = []
    for src in common.eval_sources():
        for t in records.list_thumbs(src.thumbs)[:4]:
            row = records.thumb_row(src, t.image_id)
            nme = "" if row is None else f" · {records.pct(float(src.per_image['nme'].iloc[row]))}"
            label = f"{src.model} · {t.kind} #{t.rank + 1}{nme} · {t.image_id}"
            tiles.append(common.labelled_tile(to_rgb_uint8(common.read_rgb(t.path)), label, TILE))
    if not tiles:
        return
    st.subheader("Saved evaluation thumbnails")
    st.image(image_grid(tiles[:12], NCOLS), width="stretch",
             caption="Each tile: model · worst/best rank · NME (% of the normalising distance) · image. "
                     "Red = predicted, green = true.")


def tasks_with_data(tasks: dict) -> list[str]:
    """The tasks whose dataset folder is under the data root."""
    from kpcore.data import dataset_dir

    found = []
    for name, info in tasks.items():
        try:
            dataset_dir(info.dataset)
        except (FileNotFoundError, KeyError):
            continue
        found.append(name)
    return found


def main() -> None:
    st.title("Data explorer")
    try:
        from kpcore.data import TASKS
        from kpcore.errors import DatasetNotFoundError
    except ImportError as e:
        st.warning(f"`kpcore.data` is not available yet ({e}).")
        show_saved_thumbs()
        return
    available = tasks_with_data(TASKS)
    if not available:  # no choice to offer: nothing under the data root
        st.info("Datasets not found under the data root, so there are no samples to explore; "
                "below are the saved evaluation thumbnails.")
        st.caption(common.data_hint())
        show_saved_thumbs()
        return
    c1, c2 = st.columns(2)
    task = c1.selectbox("Task", available, key="data_task",
                        help="Only tasks whose dataset is under the data root are listed")
    info = TASKS[task]
    split = c2.selectbox("Split", list(info.splits), key="data_split")
    try:
        samples = common.load_samples(task, split)
    except DatasetNotFoundError:
        st.info(f"The {info.dataset} dataset of task {task} is incomplete under the data root.")
        st.caption(common.data_hint())
        return
    if not samples:
        st.info(f"The {split} split of {task} is empty.")
        return
    missing = [t for t in TASKS if t not in available]
    st.caption(f"{len(samples)} samples · layout {info.facts.title}"
               + (f" · not under the data root: {', '.join(missing)}" if missing else ""))
    show_samples(samples, info.facts, info)
    show_augmentation(samples, info.facts, info)


main()
