"""Small from-scratch CNN regressors: ``nosenet`` and ``facenet``.

Both are stacks of ``conv -> [BN] -> ReLU -> [2x2 max-pool]`` blocks followed
by two fully connected layers that output ``2K`` numbers, reshaped to
``(B, K, 2)`` normalised coordinates.

Input size: the flatten size of the first fully connected layer is computed at
init from ``input_size=(W, H)`` (default: the model's default input size), so
at that size the network is exactly the classic "conv stack + flatten + FC".
An ``nn.AdaptiveAvgPool2d`` to that same feature grid sits before the flatten:
it is the identity at ``input_size`` and lets any other input size run
(resampling the feature grid), so a model built for 80x60 still accepts 96x72.
Train and predict at ``input_size`` for best results.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kpcore.errors import ConfigError
from kpcore.models.registry import register_model

#: Std of the last linear layer's weights: a small start puts every initial
#: prediction near the image centre (0, 0) and keeps early losses bounded.
HEAD_INIT_STD = 1e-3


def _pooled(size: int, n_pools: int) -> int:
    for _ in range(n_pools):
        size //= 2  # MaxPool2d(2) floors
    return size


class ConvRegressor(nn.Module):
    """Conv stack + two fully connected layers regressing ``(B, K, 2)`` coordinates.

    Args:
        num_keypoints: K.
        in_channels: Input image channels.
        channels: Output channels of each conv layer (its length is the depth).
        kernel_size: Kernel of every conv layer (odd; padding keeps the size).
        pool: Per layer, whether a 2x2 max-pool follows it (default: all).
        hidden: Width of the hidden fully connected layer.
        input_size: ``(W, H)`` the flatten size is computed for (see module doc).
        batch_norm: Add BatchNorm2d after each conv.
        dropout: Dropout probability before each fully connected layer.
    """

    def __init__(
        self,
        num_keypoints: int,
        in_channels: int,
        channels: Sequence[int],
        kernel_size: int,
        hidden: int,
        input_size: tuple[int, int],
        pool: Sequence[bool] | None = None,
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1:
            raise ConfigError(
                f"channels must be a non-empty list of positive widths, got {channels}"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(
                f"kernel_size must be a positive odd number (3, 5, 7, ...), got {kernel_size}"
            )
        pool = [True] * len(channels) if pool is None else [bool(p) for p in pool]
        if len(pool) != len(channels):
            raise ConfigError(
                f"pool has {len(pool)} entries but channels has {len(channels)}; give one per layer"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        width, height = (int(v) for v in input_size)
        n_pools = sum(pool)
        grid = (_pooled(height, n_pools), _pooled(width, n_pools))  # (rows, cols)
        if min(grid) < 1:
            raise ConfigError(
                f"input_size {input_size} is too small for {n_pools} 2x2 poolings; "
                f"use at least {2**n_pools} pixels per side or fewer layers"
            )
        self.num_keypoints = num_keypoints
        self.in_channels = in_channels
        self.input_size = (width, height)

        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out, do_pool in zip(channels, pool, strict=True):
            layers.append(
                nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=not batch_norm)
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            if do_pool:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c_in * grid[0] * grid[1], hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, 2 * num_keypoints),
        )
        last = self.head[-1]
        nn.init.normal_(last.weight, std=HEAD_INIT_STD)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``(B, K, 2)`` normalised ``(x, y)`` coordinates."""
        y = self.head(self.pool(self.features(x)))
        return y.view(x.shape[0], self.num_keypoints, 2)


@register_model(
    description="3 conv + 2 FC layers, the classic nose-tip net (80x60 gray, 1 point)",
    default_input_size=(80, 60),
)
def nosenet(
    *,
    num_keypoints: int,
    in_channels: int,
    kernel_size: int = 5,
    channels: Sequence[int] = (16, 32, 32),
    hidden: int = 128,
    input_size: tuple[int, int] = (80, 60),
    batch_norm: bool = False,
    dropout: float = 0.0,
) -> ConvRegressor:
    """Three ``conv -> ReLU -> max-pool`` blocks and two FC layers.

    ``kernel_size`` (e.g. 5 vs 7), ``channels`` and ``hidden`` are the knobs
    the assignment asks to compare.
    """
    if len(channels) != 3:
        raise ConfigError(
            f"nosenet has 3 conv layers; channels must have 3 entries, got {tuple(channels)}"
        )
    return ConvRegressor(
        num_keypoints,
        in_channels,
        channels,
        kernel_size,
        hidden,
        input_size,
        batch_norm=batch_norm,
        dropout=dropout,
    )


@register_model(
    description="6 conv (BN) + 2 FC layers for whole-face points (e.g. 58 IMM), 224x168",
    default_input_size=(224, 168),
)
def facenet(
    *,
    num_keypoints: int,
    in_channels: int,
    kernel_size: int = 3,
    channels: Sequence[int] = (16, 32, 64, 96, 128, 128),
    pool: Sequence[bool] = (True, True, True, True, True, False),
    hidden: int = 256,
    input_size: tuple[int, int] = (224, 168),
    batch_norm: bool = True,
    dropout: float = 0.0,
) -> ConvRegressor:
    """Six conv blocks (five poolings: stride 32) and two FC layers."""
    return ConvRegressor(
        num_keypoints,
        in_channels,
        channels,
        kernel_size,
        hidden,
        input_size,
        pool=pool,
        batch_norm=batch_norm,
        dropout=dropout,
    )
