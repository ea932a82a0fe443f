"""Learned filters page: conv weights of a checkpoint as image grids, and feature maps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from kpcore.live.render import maps_grid, to_rgb_uint8
from webapp import common, records

MAX_FILTERS = 256  # filter tiles drawn at most (a ResNet stage has up to 512)
MAX_MAPS = 64  # feature maps drawn at most
GRID_COLS = 16
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def conv_layers(model) -> dict:
    """``{name: nn.Conv2d}`` in forward order."""
    import torch.nn as nn

    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def filter_tiles(weight: np.ndarray, channel: int | None) -> np.ndarray:
    """Tiles for a conv weight ``(out, in, kh, kw)``: RGB for 3 input channels, else one channel or the mean."""
    if channel is None:
        return weight if weight.shape[1] == 3 else weight.mean(axis=1)
    return weight[:, channel]


@dataclass
class ModelInput:
    """What goes into the network, and the crop shown beside its feature maps."""

    x: object  # (1, C, H, W) torch tensor
    crop: np.ndarray  # RGB uint8, the input region as the model sees it (before normalisation)
    origin: str


def prepare_input(image: np.ndarray, config: dict, model, origin: str) -> ModelInput:
    """The model input for a photo, cut as the checkpoint's training cut it.

    Box-crop models get the detected face (the largest one) through the checkpoint's
    detector-to-training-box map, as the live demo does; whole-image models get the
    whole image. Without a face the whole image is used, and ``origin`` says so.
    """
    from kpcore.data.loader import InputSpec, region_input
    from kpcore.live.predict import Predictor

    rgb = to_rgb_uint8(image)
    spec = InputSpec.from_dict(config["input"])
    h, w = rgb.shape[:2]
    region = spec.crop_box(None, (w, h))
    if spec.crop_mode == "box":
        predictor = Predictor(model, config)
        try:
            faces = predictor.detector().detect(rgb)
        except (ImportError, OSError, ValueError) as e:  # no detector in this checkout
            faces, origin = [], f"{origin} · face detector unavailable ({e}); whole image"
        if faces:
            face = max(faces, key=lambda f: f.box[2] * f.box[3])
            region = predictor.detector_region(face.box, (w, h))
            origin = f"{origin} · largest of {len(faces)} detected face(s), cropped as in training"
        elif "unavailable" not in origin:
            origin = f"{origin} · no face found: the whole image (feature maps of a non-face)"
    rgb_spec = InputSpec(spec.width, spec.height, color="rgb", crop_mode=spec.crop_mode, enlarge=spec.enlarge)
    _, _, crop = region_input(rgb, region, rgb_spec)
    x, _, _ = region_input(rgb, region, spec)
    return ModelInput(x[None], np.asarray(crop, dtype=np.uint8), origin)


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
    """The first validation image of the checkpoint's task (the whole photo; it is cropped later)."""
    if not task:
        return None
    try:
        samples = common.load_samples(task, "val")
    except (ImportError, KeyError, OSError, ValueError):  # no kpcore.data, unknown task, no dataset
        return None
    if not samples:
        return None
    return common.read_rgb(samples[0].image_path), f"{samples[0].image_id} ({task} val)"


def bundled_example() -> tuple[np.ndarray, str] | None:
    """The first photo shipped in ``webapp/examples/`` (the live demo's examples), if any."""
    photos = sorted(p for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in PHOTO_SUFFIXES) \
        if EXAMPLES_DIR.is_dir() else []
    return (common.read_rgb(photos[0]), f"example photo {photos[0].name}") if photos else None


def example_image(key: str, task: str | None) -> tuple[np.ndarray, str] | None:
    """An uploaded photo, else a dataset image of the model's task, else a shipped example photo,
    else None.

    Saved evaluation thumbnails are not used: their points are drawn on them, and the
    network would see the markers.
    """
    upload = st.file_uploader("Example image (optional)", type=["png", "jpg", "jpeg", "webp"], key=key)
    if upload is not None:
        from kpcore.data.imageio import load_image
        from kpcore.errors import BadImageError

        try:  # kpcore's loader: the same rules and messages as the live demo (EXIF, 16-bit, bombs, ...)
            return load_image(upload), upload.name
        except BadImageError as e:
            st.error(f"{e} Showing the default example instead.")
    return dataset_example(task) or bundled_example()


def show_filters(name: str, layer) -> None:
    weight = layer.weight.detach().float().cpu().numpy()
    out_c, in_c, kh, kw = weight.shape
    shown = min(out_c, MAX_FILTERS)
    st.caption(f"`{name}`: {out_c} filters of {in_c} x {kh} x {kw}"
               + (f" · showing all {out_c}" if shown == out_c else f" · showing the first {shown} of {out_c}"))
    channel = None
    if in_c != 3 and in_c > 1:
        mode = st.radio("Input channel", ["mean", "one"], horizontal=True, key="filters_in_mode")
        if mode == "one":
            channel = st.slider("channel", 0, in_c - 1, 0, key="filters_in_channel")
    tiles = filter_tiles(weight, channel)[:MAX_FILTERS]
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
    default = names.index(records.FLAGSHIP) if records.FLAGSHIP in names else 0
    name = st.selectbox("Model", names, index=default, key="filters_model")
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
    found = example_image("filters_upload", loaded.config.get("task"))
    if found is None:
        st.info("Upload a face photo to see this layer's feature maps. (No example photo in "
                "`webapp/examples/` and no dataset under the data root; the saved evaluation thumbnails "
                "have points drawn on them, so they are not used as input.)")
        return
    image, origin = found
    inp = prepare_input(image, loaded.config, loaded.model, origin)
    maps = feature_maps(loaded.model, layer, inp.x)
    n = min(len(maps), MAX_MAPS)
    c1, c2 = st.columns([1, 3])
    c1.image(inp.crop, caption=f"model input: {inp.origin}", width="stretch")
    c2.image(maps_grid(maps[:n], GRID_COLS // 2, cell=64), width="stretch",
             caption=f"`{layer_name}` output: {maps.shape[0]} maps of {maps.shape[1]} x {maps.shape[2]}"
                     + (f" · showing all {n}" if n == len(maps) else f" · showing the first {n} of {len(maps)}"))

main()
