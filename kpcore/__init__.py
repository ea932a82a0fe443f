"""kpcore: facial keypoint detection with neural networks.

Nothing heavy is imported here; ``Predictor``, ``create_model`` and
``list_models`` are resolved on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Predictor": ("kpcore.live.predict", "Predictor"),
    "create_model": ("kpcore.models", "create_model"),
    "list_models": ("kpcore.models", "list_models"),
    "load_split": ("kpcore.data", "load_split"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'kpcore' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
