"""Branch registry: every candidate transformation a routed connection can hold.

As in DARTS's `OPS` table, each entry maps a branch name to everything a branch type needs: a
factory with one signature, `build(channels) -> nn.Module`, producing a module that keeps the
channel count and spatial size, and the colour every routing figure draws it in. Adding a branch
type is one entry here (README, "Add a branch type"): its cost (multiply-adds and parameters) is read
off the module it builds by `drnet_core.net.cost`, and `config.DEFAULT_BRANCHES` is this table's order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn


class SepConv(nn.Sequential):
    """Depthwise-separable convolution applied twice (ReLU-dw-pw-BN, x2), as in DARTS."""

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


class DilConv(nn.Sequential):
    """Dilated depthwise-separable convolution: a 5x5 receptive field at 3x3 cost."""

    def __init__(self, channels: int, kernel_size: int, dilation: int):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(channels, channels, kernel_size, padding=padding, dilation=dilation, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )


@dataclass(frozen=True)
class BranchType:
    build: Callable[[int], nn.Module]  # channels -> a module of the same channels and spatial size
    color: str  # in every routing figure and its legend, so a key read once holds everywhere


OPS: dict[str, BranchType] = {
    "sep_conv_3x3": BranchType(lambda channels: SepConv(channels, 3), "#1f77b4"),
    "sep_conv_5x5": BranchType(lambda channels: SepConv(channels, 5), "#9467bd"),
    "dil_conv_3x3": BranchType(lambda channels: DilConv(channels, 3, dilation=2), "#17becf"),
    "avg_pool_3x3": BranchType(lambda channels: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
                               "#2ca02c"),
    # Stride-1 max pooling is only fast in channels_last; the network keeps that layout throughout.
    "max_pool_3x3": BranchType(lambda channels: nn.MaxPool2d(3, stride=1, padding=1), "#bcbd22"),
    "identity": BranchType(lambda channels: nn.Identity(), "#ff7f0e"),
}


def build_branch(name: str, channels: int) -> nn.Module:
    if name not in OPS:
        raise ValueError(f"unknown branch {name!r}; registered branches: {sorted(OPS)}")
    return OPS[name].build(channels)


def branch_color(name: str) -> str:
    return OPS[name].color
