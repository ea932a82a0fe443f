"""MobileNetV2 trunks with ImageNet weights from torchvision, and a light heatmap decoder.

The trunk is torchvision's ``mobilenet_v2``; its ImageNet weights come through
the ordinary torchvision weights API (``weights="IMAGENET1K_V1"``), which reads
``$TORCH_HOME/hub/checkpoints/`` and downloads there when the file is missing.
Its ``features`` are cut into four stages ending at strides 4, 8, 16 and 32
(24, 32, 96 and 320 channels; the final 1280-channel 1x1 conv, which only
serves the classifier, is dropped).

The decoder is the FPN of :class:`~kpcore.models.heatmap.TimmFPNHeatmap`
(:func:`~kpcore.models.heatmap.fpn_top_down`: 1x1 laterals, bilinear top-down
sum to stride 4) with depthwise-separable
refinement, so that at 128 px the head costs a fraction of the trunk.
"""

from __future__ import annotations

import torch
from torch import nn

from kpcore.errors import ConfigError, HubError
from kpcore.models.heatmap import HeatmapRegressor, _heatmap_head, fpn_top_down
from kpcore.models.registry import register_model

#: ``features`` slices of torchvision's MobileNetV2 ending at strides 4, 8, 16, 32.
MOBILENET_V2_STAGES = ((0, 4), (4, 7), (7, 14), (14, 18))
MOBILENET_V2_CHANNELS = (24, 32, 96, 320)
MOBILENET_V2_REDUCTIONS = (4, 8, 16, 32)


def load_torchvision_weights(builder, weights: str | None):
    """``builder(weights=weights)`` with an error that says where the file is looked for."""
    if weights in (None, "", "none", False):
        return builder(weights=None)
    try:
        return builder(weights=weights)
    except (ValueError, KeyError) as e:
        raise ConfigError(f"pretrained = {weights!r} is not a weights name of {builder.__name__} ({e}); "
                          f"use e.g. 'IMAGENET1K_V1' or 'none'") from None
    except OSError as e:  # URLError, connection refused, read-only cache ...
        import torch.hub

        where = torch.hub.get_dir()
        raise HubError(
            f"could not get the {weights} weights of torchvision's {builder.__name__} ({type(e).__name__}: {e}); "
            f"they are looked for in {where}/checkpoints/. Connect to the internet once, copy the file "
            f"there, or set TORCH_HOME to a folder that holds hub/checkpoints/<file>") from e


class MobileNetV2Trunk(nn.Module):
    """torchvision MobileNetV2 ``features`` as four stages; ``forward`` returns their outputs.

    With ``in_channels == 1`` the first convolution's RGB filters are summed, so a
    grayscale image gives what the pretrained net gives for that image in RGB.
    """

    def __init__(self, in_channels: int = 3, pretrained: str | None = None) -> None:
        super().__init__()
        from torchvision.models import mobilenet_v2

        net = load_torchvision_weights(mobilenet_v2, pretrained)
        features = net.features
        if in_channels != 3:
            conv = features[0][0]
            new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                            bias=False)
            with torch.no_grad():
                w = conv.weight.sum(dim=1, keepdim=True) if in_channels == 1 else \
                    conv.weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1)
                new.weight.copy_(w)
            features[0][0] = new
        self.stages = nn.ModuleList(features[a:b] for a, b in MOBILENET_V2_STAGES)
        self.channels = list(MOBILENET_V2_CHANNELS)
        self.reductions = list(MOBILENET_V2_REDUCTIONS)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


def _separable(c: int) -> nn.Sequential:
    """Depthwise 3x3 + pointwise 1x1, each with BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
        nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
    )


class MobileNetFPNHeatmap(HeatmapRegressor):
    """MobileNetV2 trunk + FPN to stride 4 + separable refinement + 1x1 heatmap logits."""

    def __init__(self, num_keypoints: int, in_channels: int, head_channels: int = 64,
                 refine_layers: int = 2, pretrained: str | None = None) -> None:
        super().__init__()
        if head_channels < 8 or refine_layers < 0:
            raise ConfigError(f"head_channels must be >= 8 and refine_layers >= 0; got {head_channels}, "
                              f"{refine_layers}")
        self.num_keypoints = num_keypoints
        self.in_channels = in_channels
        self.backbone = MobileNetV2Trunk(in_channels, pretrained)
        self.heatmap_stride = self.backbone.reductions[0]
        self.laterals = nn.ModuleList(nn.Conv2d(c, head_channels, 1) for c in self.backbone.channels)
        self.refine = nn.Sequential(*[_separable(head_channels) for _ in range(refine_layers)])
        self.head = _heatmap_head(head_channels, num_keypoints)

    def heatmap_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.refine(fpn_top_down(self.laterals, self.backbone(x))))


@register_model(
    description="torchvision MobileNetV2 (ImageNet weights via `pretrained`) + FPN, heatmaps at stride 4",
    default_input_size=(128, 128),
    kind="heatmap",
)
def mobilenetv2_heatmap(
    *,
    num_keypoints: int,
    in_channels: int,
    head_channels: int = 64,
    refine_layers: int = 2,
    pretrained: str | None = None,
) -> MobileNetFPNHeatmap:
    """``pretrained``: a torchvision weights name (``"IMAGENET1K_V1"``) or None for random weights."""
    return MobileNetFPNHeatmap(num_keypoints, in_channels, head_channels, refine_layers, pretrained)
