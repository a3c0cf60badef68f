"""A routed cell: nodes, connections holding branch sets, and the sparse executor.

Node 0 is the cell input; intermediate node j sums the routed outputs of its connections from
every earlier node i < j. The cell returns its input plus every intermediate node, so a cell whose
router selects nothing degrades to the identity instead of erasing its input.

Selection rules, applied per instance:
  * a branch runs iff its recalibrated weight >= threshold (threshold 0 runs every branch, which is
    exactly the dense soft-weighted network);
  * a connection with no selected branch contributes nothing;
  * a node that receives nothing is empty, and connections leaving an empty node are skipped
    (running a branch on an all-zero input would only reproduce its batch-norm bias);
  * `branch_overrides` can force single branches on or off before these rules (counterfactuals).

Unselected branches are never computed: each branch runs once on the sub-batch of instances that
selected it, and its weighted output is scattered back with `index_add`. The same executor serves
training (Gumbel weights, training threshold) and inference, so the network trains on the very
sparsity it is evaluated with; when every instance selects a branch it runs on the whole batch.
"""
from __future__ import annotations

import torch
from torch import nn

from .cost import module_macs, module_params
from .ops import build_branch
from .router import RouterNet, recalibrate


def cell_connections(nodes_per_cell: int) -> list[tuple[int, int]]:
    """(source, target) node pairs in execution order: all inputs of node 1, then node 2, ..."""
    return [(source, target) for target in range(1, nodes_per_cell + 1) for source in range(target)]


def run_connection(
    branches: nn.ModuleList, x: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor, *, training: bool = False
) -> torch.Tensor | None:
    """sum_b weights[:, b] * branch_b(x), computing branch b only where mask[:, b] holds.

    x: (B, C, H, W); weights, mask: (B, num_branches). Returns None when nothing ran at all.

    In training only, a branch that most of the batch selected runs on the whole batch and is masked
    afterwards: the gather/scatter and its backward cost more than the few rows they would save.
    Evaluation never does this, so an unselected branch is never computed for an instance there.
    """
    out = None
    for branch_index, branch in enumerate(branches):
        selected = mask[:, branch_index]
        count = int(selected.sum())
        if count == 0:
            continue
        if count == len(selected) or (training and count >= len(selected) // 2):
            scale = weights[:, branch_index] * selected.to(weights.dtype)
            out_b = branch(x) * scale.view(-1, 1, 1, 1)
            out = out_b if out is None else out + out_b
            continue
        rows = selected.nonzero().squeeze(1)
        # index_select drops channels_last; restore it so the depthwise kernels stay fast.
        x_rows = x.index_select(0, rows).contiguous(memory_format=torch.channels_last)
        out_rows = branch(x_rows) * weights.index_select(0, rows)[:, branch_index].view(-1, 1, 1, 1)
        if out is None:
            out = torch.zeros_like(x)
        out = out.index_add(0, rows, out_rows.to(out.dtype))
    return out


class Cell(nn.Module):
    def __init__(self, channels: int, height: int, width: int, nodes_per_cell: int,
                 branch_names: tuple[str, ...], router_hidden: int):
        super().__init__()
        self.channels, self.height, self.width = channels, height, width
        self.nodes_per_cell = nodes_per_cell
        self.connections = cell_connections(nodes_per_cell)
        self.branch_names = tuple(branch_names)
        self.router = RouterNet(channels, len(self.connections), len(branch_names), router_hidden)
        self.edges = nn.ModuleList(
            nn.ModuleList(build_branch(name, channels) for name in branch_names) for _ in self.connections
        )
        # Cost tables read off the modules just built: (connections, branches).
        macs = [[module_macs(b, height, width) for b in edge] for edge in self.edges]
        params = [[module_params(b) for b in edge] for edge in self.edges]
        self.register_buffer("branch_macs", torch.tensor(macs, dtype=torch.float64), persistent=False)
        self.register_buffer("branch_params", torch.tensor(params, dtype=torch.float64), persistent=False)
        self.router_macs = module_macs(self.router, height, width)
        self.router_params = module_params(self.router)

    def forward(self, x: torch.Tensor, tau: float, threshold: float,
                gumbel_noise: torch.Tensor | None = None,
                branch_overrides: torch.Tensor | None = None):
        """Returns (output, logits, weights, executed mask); the last three are (B, connections, branches).

        branch_overrides: optional (connections, branches) int tensor, +1 force on, -1 force off, 0 router.
        """
        logits = self.router(x)
        weights = recalibrate(logits, tau, training=self.training, gumbel_noise=gumbel_noise)
        selected = weights >= threshold
        if branch_overrides is not None:
            overrides = branch_overrides.to(selected.device)
            selected = (selected | (overrides > 0)) & ~(overrides < 0)

        batch = x.shape[0]
        nodes = [x]
        node_reached = [torch.ones(batch, dtype=torch.bool, device=x.device)]
        executed = torch.zeros_like(selected)
        for target in range(1, self.nodes_per_cell + 1):
            incoming = [e for e, (_, t) in enumerate(self.connections) if t == target]
            node, reached = None, torch.zeros(batch, dtype=torch.bool, device=x.device)
            for edge_index in incoming:
                source = self.connections[edge_index][0]
                mask = selected[:, edge_index] & node_reached[source].unsqueeze(1)
                executed[:, edge_index] = mask
                contribution = run_connection(self.edges[edge_index], nodes[source], weights[:, edge_index], mask,
                                              training=self.training)
                if contribution is not None:
                    node = contribution if node is None else node + contribution
                reached |= mask.any(dim=1)
            nodes.append(node if node is not None else torch.zeros_like(x))
            node_reached.append(reached)
        out = nodes[0]
        for node in nodes[1:]:
            out = out + node
        return out, logits, weights, executed
