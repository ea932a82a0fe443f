"""Keypoint models: a registry, a factory, and the architectures kpcore ships.

>>> from kpcore.models import create_model, list_models
>>> model = create_model("nosenet", num_keypoints=1, in_channels=1)
>>> model(torch.zeros(2, 1, 60, 80)).shape   # (B, K, 2), normalised coordinates
torch.Size([2, 1, 2])

Every model maps ``(B, C, H, W)`` float images to ``(B, K, 2)`` normalised
coordinates ``u`` (``align_corners=False``: ``x_pixel = ((u + 1) * W - 1) / 2``)
and has attributes ``num_keypoints`` and ``in_channels``. Heatmap models
(``model_info(name)["kind"] == "heatmap"``) also have ``forward_heatmaps(x)``
returning ``(coords, heatmap_logits)`` and ``heatmap_stride``.
Regression heads are linear (not clamped), so a prediction may fall slightly
outside ``[-1, 1]``; heatmap models stay inside by construction.

Nothing is imported here until a name is used: reading a checkpoint's config
(:mod:`kpcore.models.checkpoint`) or its model card (:mod:`kpcore.models.hub`) does
not load PyTorch; the registry imports the architectures on first lookup.
"""

from __future__ import annotations

_LAZY = {
    **dict.fromkeys(("HeatmapRegressor", "cell_centers", "cell_grid", "cells_to_normalized", "normalized_to_cells",
                     "render_gaussian_heatmaps", "soft_argmax"), "kpcore.models.heatmap"),
    **dict.fromkeys(("INIT_ONLY_KWARGS", "ModelInfo", "count_parameters", "create_model", "describe_models",
                     "list_models", "model_accepts", "model_info", "register_model"), "kpcore.models.registry"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kpcore.models' has no attribute {name!r}")


__all__ = sorted(_LAZY)
