"""A routed cell (DRNet, Cai et al., arXiv 1905.04849, Sec. 3): nodes, connections and their branches.

Node 0 is the cell input; intermediate node j sums the routed outputs of its connections from every
earlier node i < j. The cell returns its input plus every intermediate node, so a cell whose router
selects nothing degrades to the identity instead of erasing its input.

Per instance, the RouterNet weighs every branch of every connection, recalibration turns the logits
into weights (`router.recalibrate`), and selection decides what runs:
  * a branch is selected iff its weight >= threshold (threshold 0 selects every branch, which is
    exactly the dense soft-weighted network);
  * `branch_overrides` force single branches on or off before the next rule (counterfactuals);
  * connections leaving a node that received nothing run nothing (a branch on an all-zero input
    would only reproduce its batch-norm bias).

Two executors compute the same output, and neither ever computes an unselected branch. The
reference (`Cell.forward_reference`) runs each branch on the instances that selected it; training
uses it, so the network trains on the very sparsity it is evaluated with. Inference uses the sparse
executor (`drnet_core.net.sparse_inference`), which does the same with less work around each branch.
"""
from __future__ import annotations

import torch
from torch import nn

from drnet_core.net.cost import module_macs, module_params
from drnet_core.net.ops import build_branch
from drnet_core.net.router import RouterNet, recalibrate
from drnet_core.net.sparse_inference import gather_rows, run_cell, scatter_add_rows

EXECUTORS = ("sparse", "reference")


def cell_connections(nodes_per_cell: int) -> list[tuple[int, int]]:
    """(source, target) node pairs in execution order: all inputs of node 1, then node 2, ..."""
    return [(source, target) for target in range(1, nodes_per_cell + 1) for source in range(target)]


def select_branches(weights: torch.Tensor, threshold: float, overrides: torch.Tensor | None) -> torch.Tensor:
    """(B, connections, branches) bool: weight >= threshold, then overrides (+1 on, -1 off, 0 router)."""
    selected = weights >= threshold
    if overrides is not None:
        overrides = overrides.to(selected.device)
        selected = (selected | (overrides > 0)) & ~(overrides < 0)
    return selected


def forcing(mask: torch.Tensor) -> torch.Tensor:
    """Branch overrides that run exactly the branches `mask` (bool, any leading shape) holds."""
    return mask.to(torch.int8) * 2 - 1


def run_connection(branches: nn.ModuleList, x: torch.Tensor, weights: torch.Tensor, executed: torch.Tensor, *,
                   training: bool) -> torch.Tensor | None:
    """sum_b weights[:, b] * branch_b(x), computing branch b only where executed[:, b] holds.

    x: (B, C, H, W); weights, executed: (B, branches). None when no branch ran. In training only, a
    branch that most of the batch selected (on CUDA: any selected branch) runs on the whole batch and
    is masked afterwards: gathering, scattering and their backward cost more than the rows they save,
    and on CUDA a new sub-batch size costs more than the whole batch.
    """
    out = None
    whole_batch_from = 1 if x.is_cuda else len(executed) // 2
    for index, branch in enumerate(branches):
        selected = executed[:, index]
        count = int(selected.sum())
        if count == 0:
            continue
        if count == len(selected) or (training and count >= whole_batch_from):
            scale = weights[:, index] * selected.to(weights.dtype)
            out_b = branch(x) * scale.view(-1, 1, 1, 1)
            out = out_b if out is None else out + out_b
            continue
        rows = selected.nonzero().squeeze(1)
        out_rows = branch(gather_rows(x, rows)) * weights.index_select(0, rows)[:, index].view(-1, 1, 1, 1)
        out = scatter_add_rows(torch.zeros_like(x) if out is None else out, rows, out_rows)
    return out


class Cell(nn.Module):
    def __init__(self, channels: int, height: int, width: int, nodes_per_cell: int,
                 branch_names: tuple[str, ...], router_hidden: int):
        super().__init__()
        self.channels, self.height, self.width = channels, height, width
        self.nodes_per_cell = nodes_per_cell
        self.connections = cell_connections(nodes_per_cell)
        # incoming[target]: the connections that feed node `target` (index 0, the cell input, has none).
        self.incoming = [[index for index, (_, t) in enumerate(self.connections) if t == target]
                         for target in range(nodes_per_cell + 1)]
        self.branch_names = tuple(branch_names)
        self.router = RouterNet(channels, len(self.connections), len(branch_names), router_hidden)
        # branches[connection][branch]: every connection holds one module of each branch type.
        self.branches = nn.ModuleList(
            nn.ModuleList(build_branch(name, channels) for name in branch_names) for _ in self.connections
        )
        # Cost tables read off the modules just built: (connections, branches).
        macs = [[module_macs(b, height, width) for b in held] for held in self.branches]
        params = [[module_params(b) for b in held] for held in self.branches]
        self.register_buffer("branch_macs", torch.tensor(macs, dtype=torch.float64), persistent=False)
        self.register_buffer("branch_params", torch.tensor(params, dtype=torch.float64), persistent=False)
        self.router_macs = module_macs(self.router, height, width)
        self.router_params = module_params(self.router)

    def forward(self, x: torch.Tensor, tau: float, threshold: float, gumbel_noise: torch.Tensor | None = None,
                branch_overrides: torch.Tensor | None = None, *, executor: str = "sparse"):
        """Returns (output, logits, weights, executed); the last three are (B, connections, branches).

        branch_overrides: (connections, branches) or (B, connections, branches) ints, +1 force on,
        -1 force off, 0 router. executor: "sparse" or "reference" in eval mode; training always runs
        the reference.
        """
        logits = self.router(x)
        weights = recalibrate(logits, tau, training=self.training, gumbel_noise=gumbel_noise)
        executed = self.executed_mask(select_branches(weights, threshold, branch_overrides))
        if executor == "sparse" and not self.training:
            return run_cell(self, x, weights, executed), logits, weights, executed
        return self.forward_reference(x, weights, executed), logits, weights, executed

    def executed_mask(self, selected: torch.Tensor) -> torch.Tensor:
        """(B, connections, branches) selection -> what runs: connections out of an empty node run nothing."""
        executed = selected.clone()
        reached: list[torch.Tensor | None] = [None]  # node 0, the cell input, is always reached
        for target in range(1, self.nodes_per_cell + 1):
            node_reached = None
            for connection in self.incoming[target]:
                source_reached = reached[self.connections[connection][0]]
                if source_reached is not None:
                    executed[:, connection] &= source_reached.unsqueeze(1)
                ran = executed[:, connection].any(dim=1)
                node_reached = ran if node_reached is None else node_reached | ran
            reached.append(node_reached)
        return executed

    def forward_reference(self, x: torch.Tensor, weights: torch.Tensor, executed: torch.Tensor) -> torch.Tensor:
        """The reference executor: each connection's selected branches, node by node, summed."""
        nodes = [x]
        for target in range(1, self.nodes_per_cell + 1):
            node = None
            for connection in self.incoming[target]:
                source = nodes[self.connections[connection][0]]
                out = run_connection(self.branches[connection], source, weights[:, connection],
                                     executed[:, connection], training=self.training)
                if out is not None:
                    node = out if node is None else node + out
            nodes.append(torch.zeros_like(x) if node is None else node)
        out = nodes[0]
        for node in nodes[1:]:
            out = out + node
        return out
