"""The Dynamic Routing Network (DRNet; Cai, Shu, Wang, Ooi, arXiv 1905.04849).

stem (full resolution) -> for each stage: stride-2 reduction, routed cells -> ReLU, global pool,
linear classifier. Every forward returns the logits and a `RoutingTrace`: which branches each
instance executed, with their weights, from which executed multiply-adds and parameters are
counted per instance (`mflops_per_instance`, `active_params_per_instance`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from drnet_core.architecture import Architecture, CellPlan
from drnet_core.net.cell import EXECUTORS, Cell
from drnet_core.net.config import ModelConfig
from drnet_core.net.cost import module_macs, module_params
from drnet_core.net.folding import FoldableNetwork
from drnet_core.net.ops import branch_color
from drnet_core.net.router import sample_gumbel


@dataclass
class RoutingTrace:
    """Per cell, tensors of shape (B, connections, branches)."""

    logits: list[torch.Tensor]
    weights: list[torch.Tensor]
    executed: list[torch.Tensor]  # bool: the branch really ran for that instance

    def path_masks(self) -> torch.Tensor:
        """(B, total branches) bool: every instance's selected-branch pattern, flattened."""
        return torch.cat([mask.flatten(1) for mask in self.executed], dim=1)

    def branch_weights(self) -> torch.Tensor:
        return torch.cat([weights.flatten(1) for weights in self.weights], dim=1)


class ConvNormRelu(nn.Sequential):
    """3x3 convolution, batch norm, ReLU: the stem (and each layer of the plain-CNN baseline)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Reduction(nn.Sequential):
    """ReLU, stride-2 depthwise 3x3, pointwise 1x1, batch norm: the always-on step into each stage.

    After the stem's ReLU a second one would change nothing; an Identity stands in its place there.
    """

    def __init__(self, in_channels: int, out_channels: int, input_rectified: bool = False):
        super().__init__(
            nn.Identity() if input_rectified else nn.ReLU(inplace=False),
            nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )


class ClassifierHead(nn.Sequential):
    """ReLU, global average pool, linear classifier."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__(nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def checkpoint_filter_fn(state: dict) -> dict:
    """A state dict in the current layout, from one saved by any version (as timm's filter functions do).

    A cell's branch modules were `cells.<cell>.edges.<connection>...` (in a static baseline
    `cells.<stage>.<cell>.edges...`) before `edges` became `branches`.
    """
    return {re.sub(r"^(cells(?:\.\d+)+)\.edges\.", r"\1.branches.", key): value for key, value in state.items()}


class DRNet(FoldableNetwork):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        size = config.image_size
        self.stem = ConvNormRelu(config.in_channels, config.stem_channels)
        fixed_macs = module_macs(self.stem, size, size)
        self.reductions = nn.ModuleList()
        self.cells = nn.ModuleList()
        self.cell_stage: list[int] = []
        in_channels = config.stem_channels
        for stage, channels in enumerate(config.stage_channels):
            self.reductions.append(Reduction(in_channels, channels, input_rectified=stage == 0))
            fixed_macs += module_macs(self.reductions[-1], size, size)
            size = (size + 1) // 2
            for _ in range(config.cells_per_stage):
                self.cells.append(Cell(channels, size, size, config.nodes_per_cell, config.branches,
                                       config.router_hidden))
                self.cell_stage.append(stage)
            in_channels = channels
        self.head = ClassifierHead(in_channels, config.num_classes)
        fixed_macs += module_macs(self.head, size, size)
        # Stem, reductions and head always run; routers too (they decide what else runs).
        self.always_on_macs = fixed_macs + sum(cell.router_macs for cell in self.cells)
        self.always_on_params = (module_params(self.stem) + module_params(self.reductions) + module_params(self.head)
                                 + sum(cell.router_params for cell in self.cells))
        # Recorded now: folding batch norms for inference (drnet_core.net.folding) changes the modules.
        self.total_params = module_params(self)
        self.to(memory_format=torch.channels_last)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, x: torch.Tensor, *, tau: float, threshold: float,
                gumbel_noise: list[torch.Tensor] | None = None,
                branch_overrides: list[torch.Tensor] | None = None,
                executor: str = "sparse", from_prefix: bool = False) -> tuple[torch.Tensor, RoutingTrace]:
        """x: (B, in_channels, H, W) normalised images. Returns logits (B, classes) and the trace.

        gumbel_noise: per cell (B, connections, branches), see `sample_noise`; inference only.
        branch_overrides: per cell (connections, branches) or (B, connections, branches) ints:
        +1 force on, -1 force off, 0 router. executor: in eval mode, "sparse" (`drnet_core.net.sparse_inference`)
        or "reference" (the executor training uses; the two give the same result). from_prefix: x is
        already `shared_prefix(images)`.
        """
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
        x = x if from_prefix else self.shared_prefix(x)
        trace = RoutingTrace([], [], [])
        cells = iter(enumerate(self.cells))
        for stage, reduce in enumerate(self.reductions):
            if stage > 0:  # the first reduction is part of the shared prefix
                x = reduce(x)
            for _ in range(self.config.cells_per_stage):
                index, cell = next(cells)
                x, logits, weights, executed = cell(
                    x, tau, threshold,
                    gumbel_noise=None if gumbel_noise is None else gumbel_noise[index],
                    branch_overrides=None if branch_overrides is None else branch_overrides[index],
                    executor=executor,
                )
                trace.logits.append(logits)
                trace.weights.append(weights)
                trace.executed.append(executed)
        return self.head(x), trace

    def shared_prefix(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and first reduction: everything before the first router, the same at every setting.

        An evaluation that revisits one set at many settings computes it once (`evaluate.prefix_features`).
        """
        return self.reductions[0](self.stem(x.contiguous(memory_format=torch.channels_last)))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """`nn.Module.load_state_dict`, also for state dicts saved in an earlier layout (`checkpoint_filter_fn`)."""
        return super().load_state_dict(checkpoint_filter_fn(state_dict), strict=strict, assign=assign)

    # ---- routing-space helpers --------------------------------------------------------------

    def architecture(self) -> Architecture:
        """The routing space as plain, immutable data (`drnet_core.architecture`)."""
        cells = tuple(CellPlan(nodes=cell.nodes_per_cell, connections=tuple(cell.connections),
                               branch_names=tuple(cell.branch_names),
                               branch_mflops=tuple(tuple(float(m) / 1e6 for m in row) for row in cell.branch_macs.tolist()))
                      for cell in self.cells)
        names = dict.fromkeys(name for cell in cells for name in cell.branch_names)
        return Architecture(cells, tuple((name, branch_color(name)) for name in names))

    def routing_shape(self) -> list[tuple[int, int]]:
        return [(len(cell.connections), len(cell.branch_names)) for cell in self.cells]

    def split_per_cell(self, flat):
        return self.architecture().split_per_cell(flat)

    def sample_noise(self, batch: int, seed: int) -> list[torch.Tensor]:
        """Seeded Gumbel noise for `batch` instances, identical on every device."""
        total = sum(c * b for c, b in self.routing_shape())
        return [chunk.to(self.device) for chunk in self.split_per_cell(sample_gumbel((batch, total), seed))]

    # ---- cost ------------------------------------------------------------------------------

    def mflops_per_instance(self, trace: RoutingTrace) -> torch.Tensor:
        """(B,) executed multiply-adds in millions: always-on parts plus every branch that ran."""
        macs = sum((mask.double() * cell.branch_macs).sum(dim=(1, 2)) for mask, cell in zip(trace.executed, self.cells))
        return (macs + self.always_on_macs) / 1e6

    def active_params_per_instance(self, trace: RoutingTrace) -> torch.Tensor:
        params = sum((mask.double() * cell.branch_params).sum(dim=(1, 2)) for mask, cell in zip(trace.executed, self.cells))
        return params + self.always_on_params

    def expected_cost_fraction(self, trace: RoutingTrace,
                               branch_costs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """(B,) differentiable cost: expected branch cost under the weights over the worst case.

        branch_costs: per cell (connections, branches), e.g. `cost.measure_branch_ms`; default the
        branch multiply-adds. The worst case is the costliest branch on every connection, so the
        value lies in [0, 1] and the cost weight in the loss means the same thing for any architecture.
        """
        costs = branch_costs if branch_costs is not None else [cell.branch_macs for cell in self.cells]
        worst = sum(float(cost.max(dim=1).values.sum()) for cost in costs)
        return self.expected_branch_cost(trace, costs) / worst

    def expected_branch_cost(self, trace: RoutingTrace, branch_costs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """(B,) the branches' cost expected under the weights, sum of weight x cost; differentiable.

        branch_costs: per cell (connections, branches); default the branch multiply-adds.
        """
        costs = branch_costs if branch_costs is not None else [cell.branch_macs for cell in self.cells]
        return sum((w * cost.to(w.device, w.dtype)).sum(dim=(1, 2)) for w, cost in zip(trace.weights, costs))

    def branch_usage_imbalance(self, trace: RoutingTrace) -> torch.Tensor:
        """Scalar in [0, 1]: how unevenly a batch spreads its weight over each connection's branches.

        The batch-mean weight p of a connection's branches gives (n * sum(p^2) - 1) / (n - 1): 0 when
        usage is even, 1 when all instances put all weight on one branch (the importance loss of
        sparsely-gated mixtures of experts, Shazeer et al. 2017, scaled to [0, 1]).
        """
        terms = []
        for weights in trace.weights:
            usage = weights.mean(dim=0)  # (connections, branches)
            n = usage.shape[-1]
            terms.append((n * usage.square().sum(dim=-1) - 1) / max(n - 1, 1))
        return torch.cat(terms).mean()

    def dense_mflops(self) -> float:
        return (self.always_on_macs + sum(float(cell.branch_macs.sum()) for cell in self.cells)) / 1e6

    def dense_params(self) -> int:
        return self.total_params
