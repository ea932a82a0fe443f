"""Model registry and factory.

Every architecture registers a *builder* under a name::

    @register_model("nosenet", description="...", default_input_size=(80, 60))
    def nosenet(num_keypoints: int, in_channels: int, **kw) -> nn.Module: ...

and is built with :func:`create_model`. Builders take ``num_keypoints`` and
``in_channels`` plus their own keyword arguments; the model they return has
attributes ``num_keypoints`` and ``in_channels`` and a ``forward(x)`` that maps
``(B, C, H, W)`` float images to ``(B, K, 2)`` normalised coordinates (see
``docs/FORMATS.md``). :func:`create_model` also stores the name and the
arguments on the model as ``model.kpcore_config`` (``{"name", "kwargs"}``),
which is exactly the ``"model"`` entry of a checkpoint's ``config.json``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from kpcore.errors import ConfigError

ModelKind = Literal["regression", "heatmap"]
MODEL_KINDS: tuple[str, ...] = ("regression", "heatmap")

#: Defaults used when a caller gives no value (300-W layout, grayscale input).
DEFAULT_NUM_KEYPOINTS = 68
DEFAULT_IN_CHANNELS = 1

Builder = Callable[..., nn.Module]

#: Options that only matter when a model is first built (where its starting
#: weights come from). They are left out of ``model.kpcore_config`` because a
#: checkpoint's own weights replace them and the file may not exist elsewhere.
INIT_ONLY_KWARGS: frozenset[str] = frozenset({"pretrained", "pretrained_file"})


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one architecture.

    Attributes:
        name: Registry key.
        description: One line for ``kpcore models``.
        default_input_size: ``(width, height)`` the model is designed for.
        kind: ``"regression"`` (coordinates straight from a head) or
            ``"heatmap"`` (per-keypoint heatmaps decoded by soft-argmax; the
            model also has ``forward_heatmaps`` and ``heatmap_stride``).
        builder: Function that builds the model.
    """

    name: str
    description: str
    default_input_size: tuple[int, int]
    kind: ModelKind
    builder: Builder

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (the builder left out)."""
        return {
            "name": self.name,
            "description": self.description,
            "default_input_size": list(self.default_input_size),
            "kind": self.kind,
        }


_REGISTRY: dict[str, ModelInfo] = {}
_BUILTIN = ("kpcore.models.cnn", "kpcore.models.heatmap", "kpcore.models.mobilenet", "kpcore.models.resnet")


def _load_builtin() -> None:
    """Import the architectures kpcore ships (each registers itself); ``kpcore.models`` is lazy."""
    import importlib

    for module in _BUILTIN:
        importlib.import_module(module)


def register_model(
    name: str | None = None,
    *,
    description: str,
    default_input_size: tuple[int, int],
    kind: ModelKind = "regression",
) -> Callable[[Builder], Builder]:
    """Decorator that registers a model builder under ``name`` (default: the function's name).

    Raises:
        ConfigError: ``name`` is already registered, or ``kind`` / ``default_input_size``
            is invalid.
    """

    def decorator(builder: Builder) -> Builder:
        key = name or builder.__name__
        if key in _REGISTRY:
            raise ConfigError(
                f"model {key!r} is already registered (by {_REGISTRY[key].builder.__module__}); "
                f"pick another name. Known: {list_models()}"
            )
        if kind not in MODEL_KINDS:
            raise ConfigError(f"model {key!r}: kind {kind!r} is not one of {MODEL_KINDS}")
        w, h = default_input_size
        if w <= 0 or h <= 0:
            raise ConfigError(
                f"model {key!r}: default_input_size {default_input_size} must be positive (width, height)"
            )
        _REGISTRY[key] = ModelInfo(key, description, (int(w), int(h)), kind, builder)
        return builder

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def _get(name: str) -> ModelInfo:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known: {list_models()}") from None


def model_info(name: str) -> dict[str, Any]:
    """``{"name", "description", "default_input_size": [W, H], "kind"}`` of a registered model.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    return _get(name).as_dict()


def _builder_kwargs(builder: Builder) -> list[str]:
    params = inspect.signature(builder).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def create_model(
    name: str,
    num_keypoints: int = DEFAULT_NUM_KEYPOINTS,
    in_channels: int = DEFAULT_IN_CHANNELS,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: Registry key, see :func:`list_models`.
        num_keypoints: Number of keypoints K the model predicts.
        in_channels: Channels of the input image (1 for grayscale, 3 for RGB).
        **kwargs: Architecture options (e.g. ``kernel_size=7`` for ``nosenet``);
            the error for an unknown option lists the accepted ones.

    Returns:
        An ``nn.Module`` mapping ``(B, in_channels, H, W)`` to ``(B, K, 2)``
        normalised coordinates, with ``model.kpcore_config`` set to
        ``{"name": name, "kwargs": {...}}`` (without :data:`INIT_ONLY_KWARGS`).

    Raises:
        ConfigError: unknown name, unknown option, or a bad value.
    """
    info = _get(name)
    if int(num_keypoints) < 1:
        raise ConfigError(f"num_keypoints must be >= 1, got {num_keypoints!r}")
    if int(in_channels) < 1:
        raise ConfigError(f"in_channels must be >= 1 (1 = gray, 3 = RGB), got {in_channels!r}")
    accepted = [
        k for k in _builder_kwargs(info.builder) if k not in ("num_keypoints", "in_channels")
    ]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"model {name!r} does not take {unknown}; it accepts {accepted}")
    model = info.builder(num_keypoints=int(num_keypoints), in_channels=int(in_channels), **kwargs)
    model.kpcore_config = {
        "name": name,
        "kwargs": {
            "num_keypoints": int(num_keypoints),
            "in_channels": int(in_channels),
            **{k: v for k, v in kwargs.items() if k not in INIT_ONLY_KWARGS},
        },
    }
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())


def describe_models(
    num_keypoints: int = DEFAULT_NUM_KEYPOINTS, in_channels: int = DEFAULT_IN_CHANNELS
) -> list[dict[str, Any]]:
    """One row per registered model, for ``kpcore models --json``.

    Each row has ``name``, ``params`` (parameter count of a default
    instantiation with ``num_keypoints`` and ``in_channels``),
    ``default_input_size`` ``[W, H]``, ``kind`` and ``description``. Models are
    built on the ``meta`` device where they can be (no memory for weights);
    nothing is downloaded.
    """
    rows = []
    for name in list_models():
        try:
            with torch.device("meta"):
                model = create_model(name, num_keypoints=num_keypoints, in_channels=in_channels)
        except (NotImplementedError, RuntimeError):  # a builder that cannot run on meta tensors
            model = create_model(name, num_keypoints=num_keypoints, in_channels=in_channels)
        info = model_info(name)
        rows.append(
            {
                "name": name,
                "params": count_parameters(model),
                "default_input_size": info["default_input_size"],
                "kind": info["kind"],
                "description": info["description"],
            }
        )
    return rows


def model_accepts(name: str, kwarg: str) -> bool:
    """Whether the builder of model ``name`` takes keyword ``kwarg`` (e.g. ``input_size``)."""
    return kwarg in _builder_kwargs(_get(name).builder)
