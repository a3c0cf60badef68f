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

In eval mode `Cell.forward` takes a faster route to the same result (`Cell.forward_sparse`): the
reachability rule is applied to the whole cell's selection up front, branch counts reach the host
once per cell instead of once per branch, every instance list comes from one `nonzero` per cell,
each node stays an unevaluated weighted sum until a branch reads it (`PendingSum`: an identity run
by the whole batch then costs per-instance weights, not a pass over the activations), and sums are
formed in place (`addcmul_`, `index_add_`). It computes exactly the branches the reference executor
computes; `Cell.reference_executor = True` switches back to the reference
(tests compare the two; see docs/PERFORMANCE.md for what each step is worth). A single instance takes
`Cell.forward_single`, where the same rules run on Python booleans read from one host copy.

On CUDA, every new sub-batch size costs a convolution plan the first time it is seen (cuDNN builds
one per shape), far more than the convolution itself. There the eval executor runs each sub-batch at
a padded size from a short list (`padded_size`), filling it with copies of its own rows and dropping
their outputs, and training runs every selected branch on the whole batch, masked. On the CPU neither
is done: there extra rows cost real time. docs/PERFORMANCE.md, "On a GPU", has the figures.
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


# Every activation is channels_last (depthwise kernels are ~20x faster that way), i.e. NHWC in memory.
# Gathering and scattering instance rows on the NHWC view keeps both sides contiguous: index_select
# on the NCHW view returns a contiguous-NCHW tensor that needs a second pass back to channels_last,
# and index_add on it takes a strided path. Same values either way; for 140 of 256 instances at
# 32x14x14 on the 2-core machine, gather 0.72-1.07 -> 0.10-0.12 ms and scatter 1.15-1.24 -> 0.11 ms
# (`python scripts/inference_experiments.py gather-scatter`).

def nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def gather_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x[rows], channels_last, in one pass."""
    return nhwc(x).index_select(0, rows).permute(0, 3, 1, 2)


def padded_size(count: int) -> int:
    """The sub-batch size `count` instances run at when padded: a power of two up to 32, then a multiple
    of 32. Batches of up to 256 then meet at most 13 sizes, at no more than twice the rows."""
    if count <= 32:
        return 1 << (count - 1).bit_length()
    return -(-count // 32) * 32


def pad_rows(rows: torch.Tensor, batch: int) -> torch.Tensor:
    """`rows` followed by copies of its last entry, up to `padded_size(len(rows))` or, if smaller, the
    size of the whole `batch` (a size the executor meets anyway)."""
    missing = min(padded_size(len(rows)), batch) - len(rows)
    return rows if missing == 0 else torch.cat([rows, rows[-1:].expand(missing)])


def run_connection(
    branches: nn.ModuleList, x: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor, *, training: bool = False
) -> torch.Tensor | None:
    """sum_b weights[:, b] * branch_b(x), computing branch b only where mask[:, b] holds.

    x: (B, C, H, W); weights, mask: (B, num_branches). Returns None when nothing ran at all.

    In training only, a branch that most of the batch selected (on CUDA: any selected branch) runs on
    the whole batch and is masked afterwards: the gather/scatter and its backward cost more than the
    few rows they would save, and on CUDA a new sub-batch size costs more than the whole batch.
    Evaluation never does this, so an unselected branch is never computed for an instance there.
    """
    out = None
    whole_batch_from = 1 if x.is_cuda else len(mask) // 2
    for branch_index, branch in enumerate(branches):
        selected = mask[:, branch_index]
        count = int(selected.sum())
        if count == 0:
            continue
        if count == len(selected) or (training and count >= whole_batch_from):
            scale = weights[:, branch_index] * selected.to(weights.dtype)
            out_b = branch(x) * scale.view(-1, 1, 1, 1)
            out = out_b if out is None else out + out_b
            continue
        rows = selected.nonzero().squeeze(1)
        out_rows = branch(gather_rows(x, rows)) * weights.index_select(0, rows)[:, branch_index].view(-1, 1, 1, 1)
        if out is None:
            out = torch.zeros_like(x)
        out = nhwc(out).index_add(0, rows, nhwc(out_rows.to(out.dtype))).permute(0, 3, 1, 2)
    return out


# The eval executors write only buffers they created (and the cell input, when the caller gives it
# away), so without autograd they scale and sum in place instead of allocating and filling a fresh
# buffer per product and per sum (6.4 MB for a batch of 256 at 32x14x14). With autograd on
# (attributions run the eval executor) a tensor may be saved for the backward pass, so they compute
# out of place there. `accumulate` and `sum_into_nodes` serve one instance (`Cell.forward_single`);
# the nodes of a batch are `PendingSum`s.

def accumulate(node: torch.Tensor | None, out: torch.Tensor, scale: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """node + out * scale, reusing `out` as the node when it is a fresh tensor (not the branch input)."""
    if node is not None:
        return node.addcmul_(out, scale)
    aliases_input = out.untyped_storage().data_ptr() == source.untyped_storage().data_ptr()  # identity
    return out * scale if aliases_input or torch.is_grad_enabled() else out.mul_(scale)


def sum_into_nodes(x: torch.Tensor, nodes: list[torch.Tensor | None]) -> torch.Tensor:
    """x + node_1 + node_2 + ... (empty nodes skipped), summed into the first node's buffer."""
    out = x
    for node in nodes:
        if node is not None:
            if torch.is_grad_enabled():
                out = out + node
            else:
                out = node.add_(x) if out is x else out.add_(node)
    return out


def per_instance(scale: torch.Tensor) -> torch.Tensor:
    return scale.view(-1, 1, 1, 1)


class PendingSum:
    """A node of the batched eval executor: a weighted sum of tensors, added up only when it is read.

    An identity branch costs no multiply-adds, yet scaling its input and adding it to a node costs
    passes over the activations, and a cell that routes most of a batch through identity spends
    much of its time on them. Here a whole-batch identity only multiplies per-instance weights (one
    number per instance), and the sum is formed once, when a branch reads the whole node or when the
    cell output is built. A node holds:
      * `terms`: (tensor, per-instance weights or None for 1) for tensors other nodes may hold too
        (the cell input, another node), so they are never written to;
      * `own`: the weighted sum of this node's whole-batch branch outputs, a buffer only it writes;
      * `scattered`: (instance rows, their weighted branch output) for sub-batch branches.
    `like` is any tensor of the node's shape.
    """

    def __init__(self, like: torch.Tensor, terms=()):
        self.like = like
        self.terms: list[tuple[torch.Tensor, torch.Tensor | None]] = list(terms)
        self.own: torch.Tensor | None = None
        self.scattered: list[tuple[torch.Tensor, torch.Tensor]] = []

    def is_empty(self) -> bool:
        return not self.terms and self.own is None and not self.scattered

    def add_term(self, tensor: torch.Tensor, weights: torch.Tensor | None) -> None:
        for index, (held, held_weights) in enumerate(self.terms):
            if held is tensor:  # the same tensor reached this node twice: one term, summed weights
                one = torch.ones(len(tensor), dtype=tensor.dtype, device=tensor.device)
                self.terms[index] = (held, (one if held_weights is None else held_weights)
                                     + (one if weights is None else weights))
                return
        self.terms.append((tensor, weights))

    def add_output(self, output: torch.Tensor, weights: torch.Tensor, branch_input: torch.Tensor) -> None:
        """A whole-batch branch output, summed into `own` at once (one buffer, however many branches)."""
        if output.untyped_storage().data_ptr() == branch_input.untyped_storage().data_ptr():
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

    def add_scaled(self, source: "PendingSum", weights: torch.Tensor) -> None:
        """self += source * weights: an identity branch the whole batch runs."""
        for tensor, held_weights in source.shared_terms():
            self.add_term(tensor, weights if held_weights is None else held_weights * weights)
        for rows, output in source.scattered:
            self.scattered.append((rows, output * per_instance(weights.index_select(0, rows))))

    def absorb(self, node: "PendingSum") -> None:
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

    def total(self, writable: torch.Tensor | None = None) -> torch.Tensor:
        """The node's value. It is kept, so a node read twice is summed once.

        writable: a term's tensor that nothing reads after this sum; without autograd the sum may be
        formed in it instead of in a fresh buffer.
        """
        if len(self.terms) == 1 and self.terms[0][1] is None and self.own is None and not self.scattered:
            return self.terms[0][0]
        grad = torch.is_grad_enabled()
        pending = list(self.terms)
        # Only a term nothing else here shares a buffer with (a branch may return a view of its input).
        buffer = None if writable is None or grad else writable.untyped_storage().data_ptr()
        sharing = [] if buffer is None else [index for index, (tensor, _) in enumerate(pending)
                                             if tensor.untyped_storage().data_ptr() == buffer]
        # The first step writes `own`, the writable term or a fresh buffer, never another term.
        if self.own is not None:
            out = self.own
        elif not pending:
            out = torch.zeros_like(self.like)
        elif len(sharing) == 1 and pending[sharing[0]][0] is writable:
            out, weights = pending.pop(sharing[0])
            if weights is not None:
                out.mul_(per_instance(weights))
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
            if grad:
                out = nhwc(out).index_add(0, rows, nhwc(output)).permute(0, 3, 1, 2)
            else:
                nhwc(out).index_add_(0, rows, nhwc(output))
        self.terms, self.own, self.scattered = [(out, None)], None, []
        return out


class Cell(nn.Module):
    # True: evaluation uses the straightforward executor that training uses (the reference).
    reference_executor: bool = False
    # Whether the eval executor pads sub-batches to `padded_size`; None: on CUDA only.
    pad_sub_batches: bool | None = None

    def __init__(self, channels: int, height: int, width: int, nodes_per_cell: int,
                 branch_names: tuple[str, ...], router_hidden: int):
        super().__init__()
        self.channels, self.height, self.width = channels, height, width
        self.nodes_per_cell = nodes_per_cell
        self.connections = cell_connections(nodes_per_cell)
        # incoming[target]: indices of the connections that feed node `target` (index 0 unused).
        self.incoming = [[e for e, (_, t) in enumerate(self.connections) if t == target]
                         for target in range(nodes_per_cell + 1)]
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
                branch_overrides: torch.Tensor | None = None, *, overwrite_input: bool = False):
        """Returns (output, logits, weights, executed mask); the last three are (B, connections, branches).

        branch_overrides: optional (connections, branches) int tensor, +1 force on, -1 force off, 0 router.
        overwrite_input: `x` is the caller's to give away (it never reads it again), so the eval
        executor may form the output in its buffer; ignored while autograd records.
        """
        logits = self.router(x)
        weights = recalibrate(logits, tau, training=self.training, gumbel_noise=gumbel_noise)
        selected = weights >= threshold
        if branch_overrides is not None:
            overrides = branch_overrides.to(selected.device)
            selected = (selected | (overrides > 0)) & ~(overrides < 0)
        if not self.training and not self.reference_executor:
            out, executed = self.forward_sparse(x, weights, selected, overwrite_input=overwrite_input)
            return out, logits, weights, executed

        executed = self.executed_mask(selected)
        nodes = [x]
        for target in range(1, self.nodes_per_cell + 1):
            node = None
            for edge_index in self.incoming[target]:
                source = self.connections[edge_index][0]
                contribution = run_connection(self.edges[edge_index], nodes[source], weights[:, edge_index],
                                              executed[:, edge_index], training=self.training)
                if contribution is not None:
                    node = contribution if node is None else node + contribution
            nodes.append(node if node is not None else torch.zeros_like(x))
        out = nodes[0]
        for node in nodes[1:]:
            out = out + node
        return out, logits, weights, executed

    # ---- inference ---------------------------------------------------------------------------

    def executed_mask(self, selected: torch.Tensor) -> torch.Tensor:
        """(B, connections, branches) selection -> what runs: connections out of an empty node run nothing."""
        executed = selected.clone()
        reached: list[torch.Tensor | None] = [None]  # node 0, the cell input, is always reached
        for target in range(1, self.nodes_per_cell + 1):
            node_reached = None
            for edge_index in self.incoming[target]:
                source_reached = reached[self.connections[edge_index][0]]
                if source_reached is not None:
                    executed[:, edge_index] &= source_reached.unsqueeze(1)
                edge_ran = executed[:, edge_index].any(dim=1)
                node_reached = edge_ran if node_reached is None else node_reached | edge_ran
            reached.append(node_reached)
        return executed

    def forward_sparse(self, x: torch.Tensor, weights: torch.Tensor, selected: torch.Tensor, *,
                       overwrite_input: bool = False):
        """Eval-mode executor: the reference's result, with one host sync per cell. Returns (output, executed).

        overwrite_input: form the output in `x`'s buffer when it is a term of the sum. A cell that routes
        every instance through an identity then scales its input in place instead of filling a fresh
        buffer (docs/PERFORMANCE.md, "Activations overwritten in place").
        """
        if len(x) == 1:
            return self.forward_single(x, weights, selected)
        executed = self.executed_mask(selected)
        batch, _, num_branches = executed.shape
        counts = executed.sum(dim=0).tolist()  # (connections, branches) ints: the cell's only host sync
        flat_counts = [count for row in counts for count in row]
        row_chunks = weight_chunks = None
        if any(0 < count < batch for count in flat_counts):
            # One nonzero for the whole cell: instance indices grouped by (connection, branch), in order.
            by_branch = executed.permute(1, 2, 0)
            row_chunks = by_branch.nonzero()[:, 2].split(flat_counts)
            weight_chunks = weights.permute(1, 2, 0)[by_branch].split(flat_counts)
        pad = x.is_cuda if self.pad_sub_batches is None else self.pad_sub_batches
        nodes: list[PendingSum | None] = [PendingSum(x, [(x, None)])]
        for target in range(1, self.nodes_per_cell + 1):
            node = PendingSum(x)
            for edge_index in self.incoming[target]:
                source = nodes[self.connections[edge_index][0]]
                for branch_index, count in enumerate(counts[edge_index]):
                    if count == 0:
                        continue
                    branch = self.edges[edge_index][branch_index]
                    if count == batch:
                        branch_weights = weights[:, edge_index, branch_index]
                        if isinstance(branch, nn.Identity):
                            node.add_scaled(source, branch_weights)
                        else:
                            branch_input = source.total()
                            node.add_output(branch(branch_input), branch_weights, branch_input)
                        continue
                    chunk = edge_index * num_branches + branch_index
                    rows = row_chunks[chunk]
                    # A fresh tensor, even for identity; padding rows are copies of selected ones, dropped here.
                    output = branch(source.rows(pad_rows(rows, batch) if pad else rows))[:count]
                    node.add_rows(rows, output, weight_chunks[chunk])
            nodes.append(None if node.is_empty() else node)  # None: no instance reached this node
        reached = [node for node in nodes[1:] if node is not None]
        if not reached:
            return x, executed
        out = PendingSum(x, [(x, None)])
        for node in reached:
            out.absorb(node)
        return out.total(writable=x if overwrite_input else None), executed

    def forward_single(self, x: torch.Tensor, weights: torch.Tensor, selected: torch.Tensor):
        """`forward_sparse` for one instance, where bookkeeping tensors would cost more than the branches.

        The selection is read to the host once and the reachability rule runs on Python booleans, so
        a routed single image pays for its branches and little else (docs/PERFORMANCE.md, batch 1).
        """
        picked = selected.tolist()[0]  # (connections, branches) bools: the cell's only host sync
        ran = [[False] * len(row) for row in picked]
        scales = weights.reshape(-1).unbind()  # one view per (connection, branch), in one operator
        num_branches = len(self.branch_names)
        nodes: list[torch.Tensor | None] = [x]
        for target in range(1, self.nodes_per_cell + 1):
            node = None
            for edge_index in self.incoming[target]:
                source = nodes[self.connections[edge_index][0]]
                if source is None:  # connections out of an empty node run nothing
                    continue
                for branch_index, chosen in enumerate(picked[edge_index]):
                    if not chosen:
                        continue
                    ran[edge_index][branch_index] = True
                    scale = scales[edge_index * num_branches + branch_index]
                    branch = self.edges[edge_index][branch_index]
                    output = source if isinstance(branch, nn.Identity) else branch(source)  # as forward_sparse
                    node = accumulate(node, output, scale, source)
            nodes.append(node)
        # Usually every selected branch ran; then the selection is the executed mask, no new tensor needed.
        executed = selected if ran == picked else torch.tensor(ran, device=selected.device).unsqueeze(0)
        return sum_into_nodes(x, nodes[1:]), executed
