"""The sparse inference executor: a routed cell that computes only its selected branches, in eval mode.

It computes what the reference executor (`Cell.forward_reference`, which training uses) computes, to
float rounding (tests hold the two equal), with less work around each branch:
  * branch counts reach the host once per cell, and every instance list comes from one `nonzero`;
  * each node stays a weighted sum of tensors until a branch reads it (`WeightedSum`), so an
    identity the whole batch runs costs one weight per instance, not a pass over the activations;
  * without autograd, sums are formed in place, in buffers only this executor holds.
A branch that some instances selected runs on just those rows (`gather_rows`), and its weighted
output is added back at them (`scatter_add_rows`); a branch no instance selected never runs.
"""
from __future__ import annotations

import torch
from torch import nn

# Every activation is channels_last. Gathering and scattering instance rows on the NHWC view keeps
# both sides in that layout, where the NCHW view would need a second pass to get back to it.


def nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def gather_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x[rows], channels_last, in one pass."""
    return nhwc(x).index_select(0, rows).permute(0, 3, 1, 2)


def scatter_add_rows(out: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """out[rows] += values; in place unless autograd records (it may have saved `out`)."""
    if torch.is_grad_enabled():
        return nhwc(out).index_add(0, rows, nhwc(values.to(out.dtype))).permute(0, 3, 1, 2)
    nhwc(out).index_add_(0, rows, nhwc(values.to(out.dtype)))
    return out


def per_instance(weights: torch.Tensor) -> torch.Tensor:
    return weights.view(-1, 1, 1, 1)


def same_buffer(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


class WeightedSum:
    """A node: a per-instance weighted sum of tensors, added up once, when it is read.

    terms: (tensor, weights or None for 1) that other nodes may hold too, so never written to;
    own: the weighted sum of this node's whole-batch branch outputs, a buffer only this node writes;
    scattered: (instance rows, weighted output) of branches a sub-batch ran.
    `like` is any tensor of the node's shape.
    """

    def __init__(self, like: torch.Tensor, terms=()):
        self.like = like
        self.terms: list[tuple[torch.Tensor, torch.Tensor | None]] = list(terms)
        self.own: torch.Tensor | None = None
        self.scattered: list[tuple[torch.Tensor, torch.Tensor]] = []

    def add_term(self, tensor: torch.Tensor, weights: torch.Tensor | None) -> None:
        for index, (held, held_weights) in enumerate(self.terms):
            if held is tensor:  # the same tensor reached this node twice: one term, summed weights
                one = torch.ones(len(tensor), dtype=tensor.dtype, device=tensor.device)
                self.terms[index] = (held, (one if held_weights is None else held_weights)
                                     + (one if weights is None else weights))
                return
        self.terms.append((tensor, weights))

    def add_output(self, output: torch.Tensor, weights: torch.Tensor, branch_input: torch.Tensor) -> None:
        """A whole-batch branch output, summed into `own` at once."""
        if same_buffer(output, branch_input):
            self.add_term(output, weights)  # a branch that returns its input: never write to it
            return
        scale = per_instance(weights)
        if torch.is_grad_enabled():  # autograd may have saved `output` for the backward pass
            self.own = output * scale if self.own is None else torch.addcmul(self.own, output, scale)
        else:
            self.own = output.mul_(scale) if self.own is None else self.own.addcmul_(output, scale)

    def add_rows(self, rows: torch.Tensor, output: torch.Tensor, weights: torch.Tensor) -> None:
        """A sub-batch branch output (a fresh tensor) for the instances `rows`."""
        scale = per_instance(weights)
        self.scattered.append((rows, output * scale if torch.is_grad_enabled() else output.mul_(scale)))

    def shared_terms(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """`terms`, with `own` handed over as one of them: once another node holds it, it is read-only."""
        if self.own is not None:
            self.terms.append((self.own, None))
            self.own = None
        return self.terms

    def add_scaled(self, source: "WeightedSum", weights: torch.Tensor) -> None:
        """self += source * weights: an identity branch the whole batch runs."""
        for tensor, held_weights in source.shared_terms():
            self.add_term(tensor, weights if held_weights is None else held_weights * weights)
        for rows, output in source.scattered:
            self.scattered.append((rows, output * per_instance(weights.index_select(0, rows))))

    def absorb(self, node: "WeightedSum") -> None:
        """self += node, for the cell output: `node` is not read again, so its own buffer becomes ours."""
        if self.own is None:
            self.own, node.own = node.own, None
        for tensor, weights in node.shared_terms():
            self.add_term(tensor, weights)
        self.scattered += node.scattered

    def rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The node's value for the instances `rows`, channels_last, as a fresh tensor."""
        if len(self.terms) == 1 and self.own is None and not self.scattered:
            (tensor, weights), = self.terms
            gathered = gather_rows(tensor, rows)
            if weights is None:
                return gathered
            scale = per_instance(weights.index_select(0, rows))
            return gathered * scale if torch.is_grad_enabled() else gathered.mul_(scale)
        return gather_rows(self.total(), rows)

    def total(self) -> torch.Tensor:
        """The node's value. It is kept, so a node read twice is summed once."""
        if len(self.terms) == 1 and self.terms[0][1] is None and self.own is None and not self.scattered:
            return self.terms[0][0]
        grad = torch.is_grad_enabled()
        pending = list(self.terms)
        # The first step writes `own` or a fresh buffer, never a term.
        if self.own is not None:
            out = self.own
        elif not pending:
            out = torch.zeros_like(self.like)
        else:
            first, weights = pending.pop(0)
            if weights is not None:
                out = first * per_instance(weights)
            elif pending:  # first + second in one pass
                second, weights = pending.pop(0)
                out = first + second if weights is None else torch.addcmul(first, second, per_instance(weights))
            else:
                out = first.clone()
        for tensor, weights in pending:
            if weights is None:
                out = out + tensor if grad else out.add_(tensor)
            else:
                scale = per_instance(weights)
                out = torch.addcmul(out, tensor, scale) if grad else out.addcmul_(tensor, scale)
        for rows, output in self.scattered:
            out = scatter_add_rows(out, rows, output)
        self.terms, self.own, self.scattered = [(out, None)], None, []
        return out


def run_cell(cell: nn.Module, x: torch.Tensor, weights: torch.Tensor, executed: torch.Tensor) -> torch.Tensor:
    """The cell's output for input `x` (B, C, H, W), running branch b of connection c for the instances
    where executed[:, c, b] holds, weighted by weights[:, c, b]. `cell` is a `drnet_core.net.cell.Cell`."""
    batch, _, num_branches = executed.shape
    counts = executed.sum(dim=0).tolist()  # (connections, branches) ints: the cell's one host sync
    flat_counts = [count for row in counts for count in row]
    row_chunks = weight_chunks = None
    if any(0 < count < batch for count in flat_counts):
        # One nonzero for the whole cell: instance indices grouped by (connection, branch), in order.
        by_branch = executed.permute(1, 2, 0)
        row_chunks = by_branch.nonzero()[:, 2].split(flat_counts)
        weight_chunks = weights.permute(1, 2, 0)[by_branch].split(flat_counts)
    nodes = [WeightedSum(x, [(x, None)])]
    for target in range(1, cell.nodes_per_cell + 1):
        node = WeightedSum(x)
        for connection in cell.incoming[target]:
            source = nodes[cell.connections[connection][0]]
            for branch_index, count in enumerate(counts[connection]):
                if count == 0:
                    continue
                branch = cell.branches[connection][branch_index]
                if count == batch:
                    branch_weights = weights[:, connection, branch_index]
                    if isinstance(branch, nn.Identity):
                        node.add_scaled(source, branch_weights)
                    else:
                        branch_input = source.total()
                        node.add_output(branch(branch_input), branch_weights, branch_input)
                else:
                    chunk = connection * num_branches + branch_index
                    rows = row_chunks[chunk]
                    node.add_rows(rows, branch(source.rows(rows)), weight_chunks[chunk])
        nodes.append(node)
    out = WeightedSum(x, [(x, None)])
    for node in nodes[1:]:
        out.absorb(node)
    return out.total()
