"""ResNet-18 regressors: torchvision's (``resnet18``) and timm's (``timm_resnet18``).

Both replace the classifier with a ``2K`` linear head whose output is reshaped
to ``(B, K, 2)`` normalised coordinates, and take ``in_channels`` input
channels. Only ``timm_resnet18`` can start from pretrained weights: from the
Hugging Face Hub (``pretrained=True``, needs the network) or from a local file
(``pretrained_file=PATH``, a ``.safetensors``/``.pth`` state dict of a timm
``resnet18``, e.g. 3-channel ImageNet weights; timm sums the first conv over
its RGB channels when ``in_channels=1`` and drops the 1000-class classifier).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from kpcore.errors import ConfigError, HubError
from kpcore.models.registry import register_model

#: Std of the regression head's weights: initial predictions start near the centre.
HEAD_INIT_STD = 1e-3


def _init_head(linear: nn.Linear) -> None:
    nn.init.normal_(linear.weight, std=HEAD_INIT_STD)
    nn.init.zeros_(linear.bias)


def create_timm_backbone(
    arch: str,
    *,
    in_channels: int,
    pretrained: bool = False,
    pretrained_file: str | os.PathLike | None = None,
    **timm_kwargs: Any,
) -> nn.Module:
    """``timm.create_model(arch, in_chans=in_channels, ...)`` with kpcore's pretrained rules.

    Args:
        arch: timm architecture name (e.g. ``"resnet18"``).
        in_channels: Input channels; pretrained RGB weights are adapted by timm.
        pretrained: Download timm's default weights from the Hub.
        pretrained_file: Load weights from this local file instead (implies pretrained).
        **timm_kwargs: Passed to ``timm.create_model`` (``num_classes``, ``features_only``, ...).

    Raises:
        ConfigError: ``pretrained_file`` does not exist.
        HubError: ``pretrained=True`` and the weights cannot be downloaded.
    """
    import timm  # imported here so that `import kpcore.models` stays light

    if pretrained_file is not None:
        path = os.fspath(pretrained_file)
        if not os.path.isfile(path):
            raise ConfigError(
                f"pretrained_file {path!r} does not exist; give a .safetensors or .pth state dict "
                f"of a timm {arch!r} (e.g. saved with safetensors.torch.save_file(model.state_dict(), ...))"
            )
        return timm.create_model(
            arch,
            pretrained=True,
            in_chans=in_channels,
            pretrained_cfg_overlay={"file": path},
            **timm_kwargs,
        )
    if not pretrained:
        return timm.create_model(arch, pretrained=False, in_chans=in_channels, **timm_kwargs)
    try:
        return timm.create_model(arch, pretrained=True, in_chans=in_channels, **timm_kwargs)
    except Exception as e:  # hub / network errors come in many types
        raise HubError(
            f"could not get pretrained timm {arch!r} weights ({type(e).__name__}: {e}); "
            f"check the network (HF_HUB_OFFLINE?), pass pretrained_file=PATH to a local copy, "
            f"or use pretrained=False"
        ) from e


class TorchvisionResNetRegressor(nn.Module):
    """torchvision ResNet-18 (``weights=None``) with an ``in_channels`` stem and a ``2K`` head."""

    def __init__(self, num_keypoints: int, in_channels: int) -> None:
        super().__init__()
        from torchvision.models import resnet18 as tv_resnet18

        self.num_keypoints = num_keypoints
        self.in_channels = in_channels
        net = tv_resnet18(weights=None)
        old = net.conv1
        net.conv1 = nn.Conv2d(
            in_channels,
            old.out_channels,
            kernel_size=old.kernel_size,
            stride=old.stride,
            padding=old.padding,
            bias=False,
        )
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.fc = nn.Linear(net.fc.in_features, 2 * num_keypoints)
        _init_head(net.fc)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``(B, K, 2)`` normalised ``(x, y)`` coordinates."""
        return self.net(x).view(x.shape[0], self.num_keypoints, 2)


class TimmRegressor(nn.Module):
    """A timm classifier whose ``num_classes = 2K`` logits are read as ``(K, 2)`` coordinates."""

    def __init__(self, net: nn.Module, num_keypoints: int, in_channels: int) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.in_channels = in_channels
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``(B, K, 2)`` normalised ``(x, y)`` coordinates."""
        return self.net(x).view(x.shape[0], self.num_keypoints, 2)


@register_model(
    description="torchvision ResNet-18 (random init), in_channels stem, 2K linear head",
    default_input_size=(224, 224),
)
def resnet18(*, num_keypoints: int, in_channels: int) -> TorchvisionResNetRegressor:
    """torchvision ``resnet18(weights=None)``; no pretrained option (see ``timm_resnet18``)."""
    return TorchvisionResNetRegressor(num_keypoints, in_channels)


@register_model(
    description="timm ResNet-18, 2K linear head; pretrained=True (Hub) or pretrained_file=PATH",
    default_input_size=(224, 224),
)
def timm_resnet18(
    *,
    num_keypoints: int,
    in_channels: int,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    drop_rate: float = 0.0,
) -> TimmRegressor:
    """timm ``resnet18`` with ``num_classes=2K``.

    The pretrained classifier (1000 classes) is discarded and the new head is
    re-initialised small, so a fresh model predicts points near the centre.
    """
    net = create_timm_backbone(
        "resnet18",
        in_channels=in_channels,
        pretrained=pretrained,
        pretrained_file=pretrained_file,
        num_classes=2 * num_keypoints,
        drop_rate=drop_rate,
    )
    _init_head(net.get_classifier())
    return TimmRegressor(net, num_keypoints, in_channels)
