"""Static baselines for the accuracy-per-FLOP comparison (DRNet, Cai et al., arXiv 1905.04849, Sec. 4).

The paper's claim is that a routed network beats static networks of similar cost. Two static
networks are built here and trained by `drnet_core.training.train.train` exactly as the DRNet is (same
optimizer, schedule, augmentation, epochs, data split):

  * `StaticCellNet`: the DRNet's own stem, reductions, cells and head, but every connection holds
    one fixed branch from the `OPS` registry (by default the branch a trained router executes most
    often on that connection, `most_picked_branches`) with weight 1, and no router;
  * `PlainCNN`: stem plus two 3x3 convolutions per stage (the first strided), widths scaled so
    its multiply-adds land near a target, normally the DRNet's mean routed cost.

Both share DRNet's forward signature and cost interface (`mflops_per_instance`,
`active_params_per_instance`, `expected_cost_fraction`, `branch_usage_imbalance`, `dense_mflops`,
`dense_params`), returning a
`RoutingTrace` of one always-executed branch per connection, so the training loop, `run_routed` and
`summarize` handle them unchanged. Their checkpoints use the DRNet file format with a baseline
config (it names its `kind`); `load_baseline` reads them.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from drnet_core.net import folding
from drnet_core.net.cell import cell_connections
from drnet_core.net.checkpoint import CheckpointError, read_verified_checkpoint
from drnet_core.net.config import ModelConfig, known_keys_only
from drnet_core.net.cost import module_macs, module_params
from drnet_core.defaults import BATCH_SIZE
from drnet_core.net.model import ClassifierHead, ConvNormRelu, DRNet, Reduction, RoutingTrace, checkpoint_filter_fn
from drnet_core.net.ops import build_branch

BASELINE_KINDS = ("static-cells", "plain-cnn")


@dataclass(frozen=True)
class BaselineConfig:
    kind: str
    # The DRNet architecture a static-cell network copies (stem, stages, cells, nodes).
    base: dict = field(default_factory=lambda: ModelConfig().to_dict())
    # static-cells: one branch name per connection, cell after cell (cells x connections names).
    branches: tuple[str, ...] = ()
    # plain-cnn: stem width, then one width per stage.
    widths: tuple[int, ...] = ()

    def __post_init__(self):
        if self.kind not in BASELINE_KINDS:
            raise ValueError(f"unknown baseline kind {self.kind!r}; choose one of {list(BASELINE_KINDS)}")

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.base)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["branches"], values["widths"] = list(self.branches), list(self.widths)
        return values

    @classmethod
    def from_dict(cls, raw: dict) -> "BaselineConfig":
        values = known_keys_only(cls, raw, "baseline config")
        values["branches"] = tuple(values.get("branches", ()))
        values["widths"] = tuple(int(w) for w in values.get("widths", ()))
        return cls(**values)


class StaticBaseline(folding.FoldableNetwork):
    """Shared cost interface: a static network executes the same path for every instance."""

    config: BaselineConfig
    path_shape: list[tuple[int, int]]  # per "cell": (connections, 1), for a DRNet-shaped trace

    def _finish(self) -> None:
        self.to(memory_format=torch.channels_last)
        self.macs = module_macs_of(self)
        self.params = module_params(self)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, *, tau: float | None = None, threshold: float | None = None,
                gumbel_noise=None, branch_overrides=None) -> tuple[torch.Tensor, RoutingTrace]:
        """DRNet's signature; tau, threshold, noise and overrides do not apply to a static network."""
        logits = self.features(x.contiguous(memory_format=torch.channels_last))
        batch = x.shape[0]
        trace = RoutingTrace([], [], [])
        for connections, branches in self.path_shape:
            trace.logits.append(torch.zeros(batch, connections, branches, device=x.device))
            trace.weights.append(torch.ones(batch, connections, branches, device=x.device))
            trace.executed.append(torch.ones(batch, connections, branches, dtype=torch.bool, device=x.device))
        return logits, trace

    def mflops_per_instance(self, trace: RoutingTrace) -> torch.Tensor:
        return torch.full((trace.executed[0].shape[0],), self.macs / 1e6, dtype=torch.float64)

    def active_params_per_instance(self, trace: RoutingTrace) -> torch.Tensor:
        return torch.full((trace.executed[0].shape[0],), float(self.params), dtype=torch.float64)

    def expected_cost_fraction(self, trace: RoutingTrace, branch_costs=None) -> torch.Tensor:
        # The cost is fixed, so the training loss's cost term is a constant zero.
        return torch.zeros(trace.executed[0].shape[0], device=trace.executed[0].device)

    def branch_usage_imbalance(self, trace: RoutingTrace) -> torch.Tensor:
        # One branch per connection: there is no usage to balance, so the balance term is zero too.
        return torch.zeros((), device=trace.executed[0].device)

    def dense_mflops(self) -> float:
        return self.macs / 1e6

    def dense_params(self) -> int:
        return self.params


def module_macs_of(network: "StaticBaseline") -> int:
    """Multiply-adds of one instance, summed part by part at each part's input resolution."""
    return sum(module_macs(part, height, width) for part, height, width in network.costed_parts())


class StaticCell(nn.Module):
    """A DRNet cell with one fixed branch per connection: node j = sum_i branch_ij(node_i)."""

    def __init__(self, channels: int, nodes_per_cell: int, branch_names: tuple[str, ...]):
        super().__init__()
        self.connections = cell_connections(nodes_per_cell)
        if len(branch_names) != len(self.connections):
            raise ValueError(f"a cell with {nodes_per_cell} nodes has {len(self.connections)} connections, "
                             f"got {len(branch_names)} branch names")
        self.nodes_per_cell = nodes_per_cell
        self.branch_names = tuple(branch_names)
        self.branches = nn.ModuleList(build_branch(name, channels) for name in branch_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for target in range(1, self.nodes_per_cell + 1):
            node = None
            for connection_index, (source, connection_target) in enumerate(self.connections):
                if connection_target == target:
                    out = self.branches[connection_index](nodes[source])
                    node = out if node is None else node + out
            nodes.append(node)
        out = x
        for node in nodes[1:]:
            out = out + node
        return out


class StaticCellNet(StaticBaseline):
    def __init__(self, config: BaselineConfig):
        super().__init__()
        self.config = config
        base = config.model_config
        per_cell = len(cell_connections(base.nodes_per_cell))
        total_cells = len(base.stage_channels) * base.cells_per_stage
        if len(config.branches) != per_cell * total_cells:
            raise ValueError(f"static-cells needs {per_cell * total_cells} branch names "
                             f"({total_cells} cells x {per_cell} connections), got {len(config.branches)}")
        self.stem = ConvNormRelu(base.in_channels, base.stem_channels)
        self.reductions, self.cells, self.sizes = nn.ModuleList(), nn.ModuleList(), []
        in_channels, size, cell_index = base.stem_channels, base.image_size, 0
        for stage, channels in enumerate(base.stage_channels):
            self.reductions.append(Reduction(in_channels, channels, input_rectified=stage == 0))
            self.sizes.append(size)
            size = (size + 1) // 2
            stage_cells = nn.ModuleList()
            for _ in range(base.cells_per_stage):
                names = config.branches[cell_index * per_cell:(cell_index + 1) * per_cell]
                stage_cells.append(StaticCell(channels, base.nodes_per_cell, names))
                cell_index += 1
            self.cells.append(stage_cells)
            in_channels = channels
        self.head = ClassifierHead(in_channels, base.num_classes)
        self.path_shape = [(per_cell, 1)] * total_cells
        self._finish()

    def costed_parts(self):
        base = self.config.model_config
        yield self.stem, base.image_size, base.image_size
        for reduce, stage_cells, size in zip(self.reductions, self.cells, self.sizes):
            yield reduce, size, size
            out = (size + 1) // 2
            for cell in stage_cells:
                yield cell, out, out
        final = (self.sizes[-1] + 1) // 2
        yield self.head, final, final

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for reduce, stage_cells in zip(self.reductions, self.cells):
            x = reduce(x)
            for cell in stage_cells:
                x = cell(x)
        return self.head(x)


class PlainCNN(StaticBaseline):
    """conv3x3 stem, then per stage a strided and a plain conv3x3 (BN, ReLU each), GAP, linear."""

    def __init__(self, config: BaselineConfig):
        super().__init__()
        self.config = config
        base = config.model_config
        if len(config.widths) != len(base.stage_channels) + 1:
            raise ValueError(f"plain-cnn needs {len(base.stage_channels) + 1} widths (stem + one per stage), "
                             f"got {len(config.widths)}")
        self.stem = ConvNormRelu(base.in_channels, config.widths[0], 1)
        self.stages = nn.ModuleList(
            nn.Sequential(ConvNormRelu(c_in, c_out, 2), ConvNormRelu(c_out, c_out, 1))
            for c_in, c_out in zip(config.widths[:-1], config.widths[1:]))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(config.widths[-1], base.num_classes))
        self.path_shape = [(1, 1)] * len(self.stages)
        self._finish()

    def costed_parts(self):
        size = self.config.model_config.image_size
        yield self.stem, size, size
        for stage in self.stages:
            yield stage, size, size  # module_macs tracks the stride inside the stage
            size = (size + 1) // 2
        yield self.head, size, size

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


def build_baseline(config: BaselineConfig) -> StaticBaseline:
    return StaticCellNet(config) if config.kind == "static-cells" else PlainCNN(config)


# ---- choosing a baseline -------------------------------------------------------------------------

@torch.inference_mode()
def most_picked_branches(model: DRNet, inputs: torch.Tensor, *, tau: float, threshold: float,
                         batch_size: int = BATCH_SIZE) -> tuple[str, ...]:
    """Per connection, the branch the router executed for the most instances (ties: registry order)."""
    counts = [torch.zeros(c, b, dtype=torch.long) for c, b in model.routing_shape()]
    for start in range(0, len(inputs), batch_size):
        _, trace = model(inputs[start:start + batch_size].to(model.device), tau=tau, threshold=threshold)
        for total, executed in zip(counts, trace.executed):
            total += executed.sum(dim=0).cpu()
    names = []
    for total, cell in zip(counts, model.cells):
        names += [cell.branch_names[int(row.argmax())] for row in total]
    return tuple(names)


def plain_cnn_widths(target_mflops: float, base: ModelConfig | None = None) -> tuple[int, ...]:
    """Widths k * (1, 2, 4, 8) (stem, stages) with the integer k whose cost is closest to the target."""
    base = base or ModelConfig()
    ratios = [1] + [2 ** (i + 1) for i in range(len(base.stage_channels))]
    best, best_gap = None, float("inf")
    for k in range(1, 129):
        widths = tuple(k * r for r in ratios)
        cost = PlainCNN(BaselineConfig("plain-cnn", base=base.to_dict(), widths=widths)).dense_mflops()
        if abs(cost - target_mflops) < best_gap:
            best, best_gap = widths, abs(cost - target_mflops)
        if cost > target_mflops:
            break
    return best


def load_baseline(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                  fold_batch_norms: bool = False) -> tuple[StaticBaseline, dict]:
    """(baseline in eval mode, metadata) from a checkpoint written by `python -m drnet_core baseline`.

    Like `load_checkpoint`, it refuses a file that no longer matches the sha256 recorded beside it,
    and folds the batch norms for inference on request.
    """
    payload = read_verified_checkpoint(path, str(path), kind="baseline checkpoint")
    try:
        config = BaselineConfig.from_dict(payload["config"])
        model = build_baseline(config)
        model.load_state_dict(checkpoint_filter_fn(payload["state_dict"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: not a baseline checkpoint: {str(error).splitlines()[0]}") from None
    model = model.to(device).eval()
    return (folding.fold_batch_norms(model) if fold_batch_norms else model), dict(payload.get("meta") or {})
