"""Learned filters page: conv weights of a checkpoint as image grids, and feature maps."""

from __future__ import annotations

import numpy as np
import streamlit as st
from PIL import Image

from kpcore.render import maps_grid, to_rgb_uint8
from webapp import common, records

MAX_TILES = 64
GRID_COLS = 16


def conv_layers(model) -> dict:
    """``{name: nn.Conv2d}`` in forward order."""
    import torch.nn as nn

    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def filter_tiles(weight: np.ndarray, channel: int | None) -> np.ndarray:
    """Tiles for a conv weight ``(out, in, kh, kw)``: RGB for 3 input channels, else one channel or the mean."""
    if channel is None:
        return weight if weight.shape[1] == 3 else weight.mean(axis=1)
    return weight[:, channel]


def prepare_input(image: np.ndarray, config: dict):
    """The model input ``(1, C, H, W)`` for a whole image, made as the checkpoint's training made it."""
    from kpcore.data.loader import InputSpec, make_input

    x, _, _ = make_input(to_rgb_uint8(image), None, InputSpec.from_dict(config["input"]))
    return x[None]


def feature_maps(model, layer, x) -> np.ndarray:
    """Output ``(C, h, w)`` of ``layer`` for input ``x``."""
    import torch

    out = {}
    handle = layer.register_forward_hook(lambda _m, _i, o: out.setdefault("y", o.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return out["y"][0].float().cpu().numpy()


def dataset_example(task: str | None) -> tuple[np.ndarray, str] | None:
    """The first validation sample of the checkpoint's task, cropped as the model sees it."""
    if not task:
        return None
    try:
        from kpcore.data import get_task

        info = get_task(task)
        samples = common.load_samples(task, "val")
    except (ImportError, KeyError, OSError, ValueError):  # no kpcore.data, unknown task, no dataset
        return None
    if not samples:
        return None
    image, _ = common.crop_for_task(samples[0], info)
    return image, f"{samples[0].image_id} ({task} val)"


def example_image(key: str, task: str | None) -> tuple[np.ndarray, str]:
    """An uploaded photo, else a dataset sample, else a saved thumbnail, else a plain gradient."""
    upload = st.file_uploader("Example image (optional)", type=["png", "jpg", "jpeg", "webp"], key=key)
    if upload is not None:
        return np.asarray(Image.open(upload).convert("RGB")), upload.name
    found = dataset_example(task)
    if found is not None:
        return found
    for src in common.eval_sources():
        thumbs = records.list_thumbs(src.thumbs)
        if thumbs:
            return common.read_rgb(thumbs[-1].path), f"saved thumbnail {thumbs[-1].path.name}"
    y, x = np.mgrid[0:128, 0:128]
    return ((x + y) * 255 / 254).astype(np.uint8), "a plain gradient (no image found; upload one)"


def show_filters(name: str, layer) -> None:
    weight = layer.weight.detach().float().cpu().numpy()
    out_c, in_c, kh, kw = weight.shape
    st.caption(f"`{name}`: {out_c} filters of {in_c} x {kh} x {kw}")
    channel = None
    if in_c != 3 and in_c > 1:
        mode = st.radio("Input channel", ["mean", "one"], horizontal=True, key="filters_in_mode")
        if mode == "one":
            channel = st.slider("channel", 0, in_c - 1, 0, key="filters_in_channel")
    tiles = filter_tiles(weight, channel)[:MAX_TILES]
    st.image(maps_grid(tiles, GRID_COLS, cell=40, symmetric=True), width="stretch",
             caption="gray = 0, white = positive, black = negative" if tiles.ndim == 3 else "RGB filters")


def main() -> None:
    st.title("Learned filters")
    missing = common.checkpoint_loader_missing()
    if missing:
        st.warning(missing)
        return
    cks = common.checkpoints()
    if not cks:
        st.info(common.NO_CHECKPOINT_HINT.format(roots=common.roots_text(records.checkpoint_roots())))
        return
    names = [c.name for c in cks]
    name = st.selectbox("Model", names, key="filters_model")
    ck = cks[names.index(name)]
    try:
        loaded = common.load_model(str(ck.path))
    except (ValueError, OSError, KeyError) as e:
        st.error(f"Could not load {ck.path}: {e}")
        return
    layers = conv_layers(loaded.model)
    if not layers:
        st.info(f"{name} has no Conv2d layers to show.")
        return
    layer_name = st.selectbox("Layer", list(layers), key="filters_layer")
    layer = layers[layer_name]
    show_filters(layer_name, layer)

    st.subheader("Feature maps")
    image, origin = example_image("filters_upload", loaded.config.get("task"))
    x = prepare_input(image, loaded.config)
    maps = feature_maps(loaded.model, layer, x)
    c1, c2 = st.columns([1, 3])
    c1.image(to_rgb_uint8(image), caption=f"input: {origin}", width="stretch")
    c2.image(maps_grid(maps[:MAX_TILES], GRID_COLS // 2, cell=64), width="stretch",
             caption=f"`{layer_name}` output: {maps.shape[0]} maps of {maps.shape[1]} x {maps.shape[2]}")


main()
