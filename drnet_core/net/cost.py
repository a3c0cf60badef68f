"""Cost accounting: multiply-adds and parameters, counted from the modules themselves.

Following the paper, "FLOPs" here means multiply-adds (MACs) of convolutions and linear layers;
`torch.utils.flop_counter.FlopCounterMode` counts 2 per multiply-add, so its total is exactly twice
ours (tests check this on routed single-instance forwards). Pooling, identity, activations, batch
norm and additions are not counted, as torch's counter does not count them either.

Multiply-adds are what the paper reports, but they are not time: pooling is free in them and is not
free on a CPU. `measure_branch_ms` times every branch type of every cell on the machine it runs on,
the latency lookup table of hardware-aware architecture search (FBNet, Wu et al. 2019), so that
training can charge the routers for time instead (`TrainConfig.cost_measure = "time"`), and
`measure_time_table` adds the always-on part, so that a cost audit can rank inputs by time as well.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from drnet_core.defaults import BATCH_SIZE


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


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], *, warmup: int, repeats: int, device: torch.device) -> float:
    """Median wall time of `fn()` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.inference_mode()
def measure_branch_ms(cell: nn.Module, batch_size: int = BATCH_SIZE, repeats: int = 15, warmup: int = 3) -> torch.Tensor:
    """(connections, branches) milliseconds one executed branch costs the eval executor at `batch_size`.

    Each branch is timed as the sparse executor runs it: the branch on a channels_last batch of the
    cell's shape, then its weighted output added into a node (`addcmul_`). An identity run by the
    whole batch only scales its source's per-instance weights (`sparse_inference.WeightedSum`), so
    that product is what it costs. Every connection of a cell holds the same branch types at the same shape, so
    each type is timed once (on the first connection) and the row repeated: identical operations get
    identical costs. Median of `repeats`, after every branch has run `warmup` times: the first calls of
    a process pay for thread start-up, allocation and kernel selection, several times a branch's cost.
    """
    device = cell.branch_macs.device
    x = torch.randn(batch_size, cell.channels, cell.height, cell.width, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    node, scale = torch.zeros_like(x), torch.rand(batch_size, 1, 1, 1, device=device)

    def executed(branch: nn.Module) -> Callable[[], object]:
        if isinstance(branch, nn.Identity):
            return lambda: scale * scale
        return lambda: node.addcmul_(branch(x), scale)

    was_training = cell.training
    cell.eval()
    for _ in range(warmup):
        for branch in cell.branches[0]:
            executed(branch)()
    row = [1000 * median_seconds(executed(branch), warmup=0, repeats=repeats, device=device)
           for branch in cell.branches[0]]
    cell.train(was_training)
    return torch.tensor([row] * len(cell.branches), dtype=torch.float64, device=device)


def forced_off(model: nn.Module) -> list[torch.Tensor]:
    """Branch overrides (one per cell) that switch every branch off: a forward then runs only the
    always-on part, i.e. the stem, the reductions, the routers, the head and the executor's checks."""
    return [torch.full(cell.branch_macs.shape, -1, dtype=torch.long) for cell in model.cells]


@dataclass(frozen=True)
class TimeTable:
    """What one image costs in wall milliseconds when served in batches of `batch` on `device`.

    `always_on_ms` is the always-on part's share per image; `branch_ms[k]` what branch k adds for an
    image that runs it, in `RoutingTrace.path_masks` order. Measured on the machine at hand, so it
    drifts with the machine; multiply-adds stay the reproducible figure.
    """

    always_on_ms: float
    branch_ms: torch.Tensor  # (total branches,) float64, on the CPU
    batch: int
    device: str

    def ms_per_instance(self, path_masks: torch.Tensor) -> torch.Tensor:
        """(N,) estimated milliseconds per image: the always-on share plus every branch it executed.

        Summed over a batch this is the predicted routed time of `bench`'s time model; like it, it
        leaves out the executor's gathers and scatters, which cannot be pinned on single images.
        """
        return self.always_on_ms + path_masks.to(torch.float64).cpu() @ self.branch_ms


@torch.inference_mode()
def measure_time_table(model: nn.Module, inputs: torch.Tensor, *, tau: float, repeats: int = 5,
                       warmup: int = 2) -> TimeTable:
    """Time the always-on part on `inputs` (one batch) and every branch at that batch size."""
    batch, device = len(inputs), model.device
    inputs, switched_off = inputs.to(device), forced_off(model)
    was_training = model.training
    model.eval()
    always_on_ms = 1000 * median_seconds(lambda: model(inputs, tau=tau, threshold=1.0, branch_overrides=switched_off),
                                         warmup=warmup, repeats=repeats, device=device)
    branch_ms = torch.cat([measure_branch_ms(cell, batch_size=batch, repeats=repeats, warmup=warmup).flatten()
                           for cell in model.cells])
    model.train(was_training)
    return TimeTable(always_on_ms / batch, branch_ms.cpu() / batch, batch, device.type)
