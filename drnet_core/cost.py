"""Cost accounting: multiply-adds and parameters, counted from the modules themselves.

Following the paper, "FLOPs" here means multiply-adds (MACs) of convolutions and linear layers;
`torch.utils.flop_counter.FlopCounterMode` counts 2 per multiply-add, so its total is exactly twice
ours (tests check this on routed single-instance forwards). Pooling, identity, activations, batch
norm and additions are not counted, as torch's counter does not count them either.
"""
from __future__ import annotations

import math

from torch import nn


def _conv_out(size: int, conv: nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d, axis: int) -> int:
    def pick(value):
        return value[axis] if isinstance(value, tuple) else value

    kernel, stride, padding = pick(conv.kernel_size), pick(conv.stride), pick(conv.padding)
    dilation = pick(getattr(conv, "dilation", 1))
    return math.floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1


def module_macs(module: nn.Module, height: int, width: int) -> int:
    """Multiply-adds of one instance through `module`, a chain whose layers run in definition order.

    Spatial size is tracked through strided convolutions and pooling, so stems, reductions,
    branches, routers and heads are all counted by this one function.
    """
    macs = 0
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            out_h, out_w = _conv_out(height, layer, 0), _conv_out(width, layer, 1)
            kernel_h, kernel_w = layer.kernel_size
            macs += out_h * out_w * layer.out_channels * (layer.in_channels // layer.groups) * kernel_h * kernel_w
            height, width = out_h, out_w
        elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
            height, width = _conv_out(height, layer, 0), _conv_out(width, layer, 1)
        elif isinstance(layer, (nn.AdaptiveAvgPool2d, nn.Flatten)):
            height = width = 1
        elif isinstance(layer, nn.Linear):
            macs += layer.in_features * layer.out_features
    return macs


def module_params(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())
