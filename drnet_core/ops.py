"""Branch registry: every candidate transformation a routed connection can hold.

As in DARTS's `OPS` table, each entry maps a branch name to a factory with one signature,
`factory(channels) -> nn.Module`, producing a module that keeps the channel count and spatial size.
Adding a branch type is one entry here: its cost (multiply-adds and parameters) is read off the
module it builds by `drnet_core.cost`, so there is no second table to keep in step.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .folding import FoldedBatchNorm


def separable(x: torch.Tensor, depthwise: nn.Conv2d, pointwise: nn.Conv2d, norm: nn.Module) -> torch.Tensor:
    """Depthwise convolution, pointwise convolution, batch norm: the unit of every convolution branch.

    The operators are applied directly rather than through the modules: at batch 1 a module call
    costs about as much as the small operator inside it, and dense and routed forwards alike make
    several per branch (docs/PERFORMANCE.md, "Operators applied directly"). A batch norm folded
    into `pointwise` (drnet_core.folding) is skipped.
    """
    x = F.conv2d(x, depthwise.weight, None, depthwise.stride, depthwise.padding, depthwise.dilation,
                 depthwise.groups)
    x = F.conv2d(x, pointwise.weight, pointwise.bias)
    return x if isinstance(norm, FoldedBatchNorm) else norm(x)


class SepConv(nn.Sequential):
    """Depthwise-separable convolution applied twice (ReLU-dw-pw-BN, x2), as in DARTS.

    A Sequential, so the parameter names stay those of every checkpoint; `forward` applies the
    operators through `separable`.
    """

    def __init__(self, channels: int, kernel_size: int):
        padding = kernel_size // 2
        layers: list[nn.Module] = []
        for _ in range(2):
            layers += [
                nn.ReLU(inplace=False),
                nn.Conv2d(channels, channels, kernel_size, padding=padding, groups=channels, bias=False),
                nn.Conv2d(channels, channels, 1, bias=False),
                nn.BatchNorm2d(channels),
            ]
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        for start in (0, 4):  # each half: ReLU, depthwise, pointwise, batch norm
            _, depthwise, pointwise, norm = layers[start:start + 4]
            x = separable(torch.relu(x), depthwise, pointwise, norm)
        return x


class DilConv(nn.Sequential):
    """Dilated depthwise-separable convolution: a 5x5 receptive field at 3x3 cost (applied as SepConv's)."""

    def __init__(self, channels: int, kernel_size: int, dilation: int):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(channels, channels, kernel_size, padding=padding, dilation=dilation, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, depthwise, pointwise, norm = self
        return separable(torch.relu(x), depthwise, pointwise, norm)


OPS: dict[str, Callable[[int], nn.Module]] = {
    "sep_conv_3x3": lambda channels: SepConv(channels, 3),
    "sep_conv_5x5": lambda channels: SepConv(channels, 5),
    "dil_conv_3x3": lambda channels: DilConv(channels, 3, dilation=2),
    "avg_pool_3x3": lambda channels: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
    # Stride-1 max pooling is only fast in channels_last; the network keeps that layout throughout.
    "max_pool_3x3": lambda channels: nn.MaxPool2d(3, stride=1, padding=1),
    "identity": lambda channels: nn.Identity(),
}


def build_branch(name: str, channels: int) -> nn.Module:
    if name not in OPS:
        raise ValueError(f"unknown branch {name!r}; registered branches: {sorted(OPS)}")
    return OPS[name](channels)
