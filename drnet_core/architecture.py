"""An immutable description of a network's routing space: what the figures and reports draw from.

`DRNet.architecture()` writes one from the live network; everything that only needs the shape of the
routing space (which connections each cell has, which branches each connection offers, what each
branch costs, its colour) reads this instead, so drawing never touches an `nn.Module`.

Batch-level routing vectors (`RoutingTrace.path_masks`, `branch_weights`, selection frequencies) are
flattened cell by cell, connection by connection, branch by branch; `split_per_cell` undoes that. One
input's routing (`drnet_core.inspection.Inspection`) is kept per cell from the start and flattens in the
same order.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CellPlan:
    """One cell: node 0 is its input, nodes 1..`nodes` the intermediate nodes it routes between."""

    nodes: int
    connections: tuple[tuple[int, int], ...]  # (source node, target node)
    branch_names: tuple[str, ...]  # offered on every connection, in the router's logit order
    branch_mflops: tuple[tuple[float, ...], ...]  # (connection, branch) multiply-adds in millions

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.connections), len(self.branch_names)


@dataclass(frozen=True)
class Architecture:
    cells: tuple[CellPlan, ...]
    branch_colors: tuple[tuple[str, str], ...]  # (branch name, colour) from the branch registry

    def color(self, branch_name: str) -> str:
        return dict(self.branch_colors)[branch_name]

    def palette(self, branch_names) -> dict[str, str]:
        """Branch name -> colour, in the order given (a connection's, for its figures)."""
        return {name: self.color(name) for name in branch_names}

    def routing_shape(self) -> list[tuple[int, int]]:
        return [cell.shape for cell in self.cells]

    @property
    def total_branches(self) -> int:
        return sum(connections * branches for connections, branches in self.routing_shape())

    def branch_positions(self) -> list[tuple[int, int, int, str]]:
        """(cell, source node, target node, branch name) of every branch, cells counted from 1, in
        flattening order."""
        return [(index, source, target, name) for index, cell in enumerate(self.cells, start=1)
                for source, target in cell.connections for name in cell.branch_names]

    def branch_labels(self) -> list[str]:
        """One readable label per flattened branch position, for menus, hover text and tables."""
        return [f"cell {cell} · n{source}→n{target} · {name}" for cell, source, target, name in self.branch_positions()]

    def branch_keys(self) -> list[str]:
        """`cell{k}:n{i}-n{j}:{branch}` per flattened position: column keys of exported files (no spaces)."""
        return [f"cell{cell}:n{source}-n{target}:{name}" for cell, source, target, name in self.branch_positions()]

    def split_per_cell(self, flat):
        """Per cell, (..., connections, branches) views of a routing vector flattened along its last
        axis. Tensors and numpy arrays alike."""
        if flat.shape[-1] != self.total_branches:
            raise ValueError(f"routing vector has {flat.shape[-1]} entries, the model has {self.total_branches} "
                             "branches")
        chunks, start = [], 0
        for connections, branches in self.routing_shape():
            size = connections * branches
            chunks.append(flat[..., start:start + size].reshape(*flat.shape[:-1], connections, branches))
            start += size
        return chunks
