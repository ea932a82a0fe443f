"""Heatmap models decoded by soft-argmax (integral regression), and heatmap geometry.

A heatmap model predicts one logit map per keypoint on a grid ``heatmap_stride``
times coarser than the input; a softmax over each map gives a probability
distribution whose expected position is the keypoint (Sun et al., "Integral
Human Pose Regression", 2018; Nibali et al., DSNT, 2018). The decoding is
differentiable, so these models train with ordinary coordinate losses and can
add a heatmap term (see :mod:`kpcore.training.losses`).

Grid convention (the same ``align_corners=False`` convention as the model
outputs, ``docs/FORMATS.md``): on a map ``w`` cells wide, cell ``i`` covers
the normalised interval ``[2i/w - 1, 2(i+1)/w - 1]`` and its centre sits at
``u = (2i + 1)/w - 1``. When the input width is ``W = stride * w``, that is
input pixel ``x = i * stride + (stride - 1) / 2``, the centre of the cell's
pixel block. A cell-unit coordinate ``c`` (0 = centre of the first cell) and
a normalised one are related by ``u = (2c + 1)/w - 1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kpcore.errors import ConfigError
from kpcore.models.registry import register_model
from kpcore.models.resnet import create_timm_backbone

#: Std of the 1x1 conv that outputs heatmap logits: near-zero logits give
#: near-uniform maps, so a fresh model predicts the centre and has no NaN.
HEATMAP_INIT_STD = 1e-3


# --------------------------------------------------------------------- geometry
def cell_centers(
    n: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Normalised centres ``(2i + 1)/n - 1`` of ``n`` cells, shape ``(n,)``."""
    return (2 * torch.arange(n, device=device, dtype=dtype) + 1) / n - 1


def normalized_to_cells(coords: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Normalised ``(..., 2)`` coordinates -> cell units on a ``size=(w, h)`` grid."""
    wh = coords.new_tensor(size)
    return ((coords + 1) * wh - 1) / 2


def cells_to_normalized(cells: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Cell-unit ``(..., 2)`` coordinates on a ``size=(w, h)`` grid -> normalised."""
    wh = cells.new_tensor(size)
    return (2 * cells + 1) / wh - 1


def cell_grid(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """``(h * w, 2)`` normalised ``(x, y)`` centres of an ``h x w`` grid's cells, row by row."""
    ys, xs = torch.meshgrid(cell_centers(h, device), cell_centers(w, device), indexing="ij")
    return torch.stack((xs.reshape(-1), ys.reshape(-1)), dim=-1)


def soft_argmax(logits: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Expected position of ``softmax(beta * logits)`` over each map.

    One matrix product of the ``(B, K, h * w)`` probabilities with the cells'
    centres (:func:`cell_grid`). The map size enters as Python ints, so an ONNX
    export holds the grid as a constant and no shape arithmetic.

    Args:
        logits: ``(B, K, h, w)`` heatmap logits.
        beta: Inverse temperature; larger is closer to a hard argmax.

    Returns:
        ``(B, K, 2)`` normalised ``(x, y)`` in ``(-1 + 1/w, 1 - 1/w)`` (cell centres).
    """
    k, h, w = (int(n) for n in logits.shape[1:])
    prob = torch.softmax(beta * logits.reshape(-1, k, h * w).float(), dim=-1)
    return prob @ cell_grid(h, w, logits.device)


def render_gaussian_heatmaps(
    coords: torch.Tensor, size: tuple[int, int], sigma: float
) -> torch.Tensor:
    """Gaussians (peak 1) centred on normalised coordinates, one map per point.

    Args:
        coords: ``(B, K, 2)`` normalised ``(x, y)``.
        size: ``(w, h)`` of the heatmap grid.
        sigma: Standard deviation in heatmap cells.

    Returns:
        ``(B, K, h, w)`` maps with values in ``[0, 1]``. A point off the grid
        gives a map that is (close to) all zeros.
    """
    if sigma <= 0:
        raise ConfigError(f"sigma must be > 0 heatmap cells, got {sigma}")
    w, h = size
    cells = normalized_to_cells(coords.float(), (w, h))
    xs = torch.arange(w, device=coords.device, dtype=torch.float32)
    ys = torch.arange(h, device=coords.device, dtype=torch.float32)
    gx = torch.exp(-((xs - cells[..., 0:1]) ** 2) / (2 * sigma**2))  # (B, K, w)
    gy = torch.exp(-((ys - cells[..., 1:2]) ** 2) / (2 * sigma**2))  # (B, K, h)
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)


# ----------------------------------------------------------------------- models
class HeatmapRegressor(nn.Module):
    """Base class: subclasses implement :meth:`heatmap_logits`; decoding is shared.

    Attributes:
        num_keypoints: K.
        in_channels: Input image channels.
        heatmap_stride: Input pixels per heatmap cell.
    """

    num_keypoints: int
    in_channels: int
    heatmap_stride: int

    def heatmap_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``(B, K, H / stride, W / stride)`` logits."""
        raise NotImplementedError

    def forward_heatmaps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(coords (B, K, 2), heatmap_logits (B, K, h, w))``; coords are soft-argmax decoded."""
        logits = self.heatmap_logits(x)
        return soft_argmax(logits), logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``(B, K, 2)`` normalised ``(x, y)`` coordinates."""
        return self.forward_heatmaps(x)[0]


def _conv_bn_relu(c_in: int, c_out: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _heatmap_head(c_in: int, num_keypoints: int) -> nn.Conv2d:
    head = nn.Conv2d(c_in, num_keypoints, 1)
    nn.init.normal_(head.weight, std=HEATMAP_INIT_STD)
    nn.init.zeros_(head.bias)
    return head


def _upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    # Bilinear to the reference's exact size, so odd input sizes work too.
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


def fpn_top_down(laterals: nn.ModuleList, feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """FPN top-down pathway: each level's 1x1 lateral, the coarser sum upsampled onto it, down to
    the finest level (the first of ``feats``)."""
    p = laterals[-1](feats[-1])
    for lateral, f in zip(reversed(laterals[:-1]), reversed(feats[:-1]), strict=True):
        p = _upsample_to(p, f) + lateral(f)
    return p


class TimmFPNHeatmap(HeatmapRegressor):
    """timm ``features_only`` backbone + a light FPN-style decoder to stride 4.

    Every backbone level (strides 4, 8, 16, 32) gets a 1x1 lateral conv to
    ``head_channels``; the coarsest is upsampled (bilinear) and added level by
    level down to stride 4, refined by two 3x3 conv-BN-ReLU layers, and a 1x1
    conv gives one logit map per keypoint.
    """

    def __init__(
        self, backbone: nn.Module, num_keypoints: int, in_channels: int, head_channels: int
    ) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.in_channels = in_channels
        self.backbone = backbone
        chans = backbone.feature_info.channels()
        self.heatmap_stride = int(backbone.feature_info.reduction()[0])
        self.laterals = nn.ModuleList(nn.Conv2d(c, head_channels, 1) for c in chans)
        self.refine = nn.Sequential(
            _conv_bn_relu(head_channels, head_channels), _conv_bn_relu(head_channels, head_channels)
        )
        self.head = _heatmap_head(head_channels, num_keypoints)

    def heatmap_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.refine(fpn_top_down(self.laterals, self.backbone(x))))


class UNetHeatmap(HeatmapRegressor):
    """A small UNet: double-conv encoder (2x2 max-pool between levels), bilinear-up decoder
    with skip connections back to ``heatmap_stride``, 1x1 conv to one logit map per keypoint.
    """

    def __init__(
        self, num_keypoints: int, in_channels: int, channels: Sequence[int], heatmap_stride: int
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        n_levels = len(channels)
        if n_levels < 2 or min(channels) < 1:
            raise ConfigError(
                f"channels must list >= 2 positive widths (one per level), got {channels}"
            )
        allowed = [2**i for i in range(n_levels - 1)]
        if heatmap_stride not in allowed:
            raise ConfigError(
                f"heatmap_stride {heatmap_stride} must be one of {allowed} for {n_levels} levels"
            )
        self.num_keypoints = num_keypoints
        self.in_channels = in_channels
        self.heatmap_stride = heatmap_stride
        self.encoders = nn.ModuleList()
        c_in = in_channels
        for c in channels:
            self.encoders.append(nn.Sequential(_conv_bn_relu(c_in, c), _conv_bn_relu(c, c)))
            c_in = c
        # Decode from the deepest level up to level log2(stride).
        stop = heatmap_stride.bit_length() - 1
        self.decoders = nn.ModuleList()
        for level in range(n_levels - 2, stop - 1, -1):
            c_skip = channels[level]
            self.decoders.append(
                nn.Sequential(_conv_bn_relu(c_in + c_skip, c_skip), _conv_bn_relu(c_skip, c_skip))
            )
            c_in = c_skip
        self.head = _heatmap_head(c_in, num_keypoints)

    def heatmap_logits(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        y = skips[-1]
        for dec, skip in zip(self.decoders, reversed(skips[:-1]), strict=False):
            y = dec(torch.cat((_upsample_to(y, skip), skip), dim=1))
        return self.head(y)


@register_model(
    description="timm ResNet-18 features + FPN decoder, heatmaps at stride 4, soft-argmax",
    default_input_size=(256, 256),
    kind="heatmap",
)
def resnet18_heatmap(
    *,
    num_keypoints: int,
    in_channels: int,
    head_channels: int = 64,
    pretrained: bool = False,
    pretrained_file: str | None = None,
) -> TimmFPNHeatmap:
    """Integral-regression ResNet-18; ``pretrained``/``pretrained_file`` as for ``timm_resnet18``."""
    backbone = create_timm_backbone(
        "resnet18",
        in_channels=in_channels,
        pretrained=pretrained,
        pretrained_file=pretrained_file,
        features_only=True,
        out_indices=(1, 2, 3, 4),
    )
    return TimmFPNHeatmap(backbone, num_keypoints, in_channels, head_channels)


@register_model(
    description="small UNet from scratch, heatmaps at stride 2, soft-argmax (128x128)",
    default_input_size=(128, 128),
    kind="heatmap",
)
def unet_heatmap(
    *,
    num_keypoints: int,
    in_channels: int,
    channels: Sequence[int] = (16, 32, 64, 96, 128),
    heatmap_stride: int = 2,
) -> UNetHeatmap:
    """UNet with ``len(channels)`` levels (the deepest at stride ``2**(len-1)``)."""
    return UNetHeatmap(num_keypoints, in_channels, channels, heatmap_stride)
