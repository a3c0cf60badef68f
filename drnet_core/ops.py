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


class SeparableChain(nn.Sequential):
    """Units of (ReLU or Identity, depthwise convolution, pointwise convolution, batch norm), in order.

    A Sequential, so the parameter names stay those of every checkpoint. `forward` applies the
    operators directly rather than through the modules: at batch 1 a module call costs about as much
    as the small operator inside it, and dense and routed forwards alike make several per branch
    (docs/PERFORMANCE.md, "Operators applied directly"). Every intermediate is rebound in this one
    frame, so, as in `nn.Sequential.forward`, each is freed once the next operator has run; a helper
    called per unit would keep its caller's reference to the unit's input alive meanwhile, and that
    one extra activation made dense batches of 256 5-8% slower. A batch norm folded into the
    pointwise convolution (drnet_core.folding) is skipped.

    overwrite_input: the first ReLU may rectify the input in place, for a caller that never reads it
    again (`model.Reduction`).
    """

    def forward(self, x: torch.Tensor, *, overwrite_input: bool = False) -> torch.Tensor:
        layers = list(self)
        for start in range(0, len(layers), 4):
            rectify, depthwise, pointwise, norm = layers[start:start + 4]
            if isinstance(rectify, nn.ReLU):
                x = torch.relu_(x) if overwrite_input and start == 0 else torch.relu(x)
            x = F.conv2d(x, depthwise.weight, None, depthwise.stride, depthwise.padding, depthwise.dilation,
                         depthwise.groups)
            x = F.conv2d(x, pointwise.weight, pointwise.bias)
            if not isinstance(norm, FoldedBatchNorm):
                x = norm(x)
        return x


class SepConv(SeparableChain):
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


class DilConv(SeparableChain):
    """Dilated depthwise-separable convolution: a 5x5 receptive field at 3x3 cost."""

    def __init__(self, channels: int, kernel_size: int, dilation: int):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(channels, channels, kernel_size, padding=padding, dilation=dilation, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )


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
