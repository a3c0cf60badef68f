"""What one training step minimises, per phase (`TrainConfig.phase`; docs/MODEL.md has the recipe).

  joint     CE + cost_weight * expected cost fraction + balance_weight * branch-usage imbalance, on the
            sparse routing the network is evaluated with (the original DRNet objective).
  supernet  the sandwich rule with in-place distillation (Yu & Huang, "Universally Slimmable Networks",
            2019; BigNAS; DS-Net, Li et al. 2021): the dense path learns from the labels, then the
            cheapest path and `random_paths` random paths learn to match the dense path's prediction.
            Every path a router may later pick is then a good network in its own right.
  routers   only the RouterNets learn, with branches and batch norms frozen: CE on the routed network,
            a two-sided budget term (mean executed MFLOPs / target - 1)^2 (DS-Net, ConvNet-AIG), gate
            supervision (DS-Net: an instance the cheapest path gets wrong should take a costly path, one
            it gets right a cheap one) and the balance term against a connection that sends everything
            one way.

Each step function runs its forwards and backwards (several paths means several backward passes,
which frees each path's graph before the next is built) and returns a `StepResult`; the caller steps
the optimizer that `phases.optimizer_for` built. `drnet_core.training.phases` registers each step function
with what its phase trains.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from drnet_core.net.cell import forcing

if TYPE_CHECKING:  # for annotations only: a TrainConfig checks its phase against the registry of these steps
    from drnet_core.training.config import TrainConfig
    from drnet_core.net.model import DRNet, RoutingTrace


@dataclass
class StepResult:
    loss: float
    logits: torch.Tensor  # (B, classes) of the path the step reports: routed (joint, routers) or dense
    trace: RoutingTrace
    cost_fraction: float  # batch mean of the expected cost fraction


def cheapest_path(model: DRNet) -> list[torch.Tensor]:
    """Per cell, (connections, branches) overrides that run only each connection's cheapest branch.

    Cheapest in multiply-adds; where several cost none (pooling, identity), identity, which does no work at all.
    """
    paths = []
    for cell in model.cells:
        cheapest = torch.zeros(cell.branch_macs.shape, dtype=torch.bool, device=model.device)
        for connection, macs in enumerate(cell.branch_macs.tolist()):
            branch = min(range(len(macs)), key=lambda b: (macs[b], cell.branch_names[b] != "identity"))
            cheapest[connection, branch] = True
        paths.append(forcing(cheapest))
    return paths


def random_path(model: DRNet, batch: int, keep: float, generator: torch.Generator) -> list[torch.Tensor]:
    """Per cell, (B, connections, branches) overrides: every branch of every connection runs with
    probability `keep`, independently per instance."""
    paths = []
    for connections, branches in model.routing_shape():
        kept = torch.rand((batch, connections, branches), generator=generator) < keep
        paths.append(forcing(kept).to(model.device))
    return paths


def executed_mflops_straight_through(model: DRNet, trace: RoutingTrace) -> torch.Tensor:
    """(B,) MFLOPs actually executed, with the gradient of their expectation under the branch weights.

    Thresholding has no gradient; the straight-through estimator lets the budget term see the real
    executed cost and still move the weights that decide it.
    """
    expected = model.expected_branch_cost(trace) / 1e6
    executed = model.mflops_per_instance(trace).to(expected.dtype)
    return executed + expected - expected.detach()


def label_loss(logits: torch.Tensor, labels: torch.Tensor, config: TrainConfig,
               teacher_probs: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy with label smoothing, plus distillation from an external teacher when there is one."""
    loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
    if teacher_probs is not None:
        loss = loss + config.teacher_weight * F.kl_div(F.log_softmax(logits, dim=1), teacher_probs, reduction="batchmean")
    return loss


def joint_step(wrapped, model, batch, labels, *, tau, threshold, config: TrainConfig, branch_costs=None,
               generator=None, teacher_probs=None) -> StepResult:
    logits, trace = wrapped(batch, tau=tau, threshold=threshold)
    cost = model.expected_cost_fraction(trace, branch_costs).mean()
    loss = (label_loss(logits, labels, config, teacher_probs)
            + config.cost_weight * cost + config.balance_weight * model.branch_usage_imbalance(trace))
    loss.backward()
    return StepResult(loss.item(), logits.detach(), trace, float(cost.detach()))


def supernet_step(wrapped, model, batch, labels, *, tau, threshold, config: TrainConfig, branch_costs=None,
                  generator=None, teacher_probs=None) -> StepResult:
    # Gradients of all paths add up, but a DistributedDataParallel model must average them only once.
    later_sync = wrapped.no_sync if hasattr(wrapped, "no_sync") else contextlib.nullcontext
    sub_paths = [cheapest_path(model)] + [random_path(model, len(batch), config.random_path_keep, generator)
                                          for _ in range(config.random_paths)]
    with later_sync():
        logits, trace = wrapped(batch, tau=tau, threshold=0.0)
        full_loss = label_loss(logits, labels, config, teacher_probs)
        full_loss.backward()
    dense_probs = F.softmax(logits.detach(), dim=1)
    total = full_loss.item()
    for index, overrides in enumerate(sub_paths):
        last = index == len(sub_paths) - 1
        with contextlib.nullcontext() if last else later_sync():
            sub_logits, _ = wrapped(batch, tau=tau, threshold=0.0, branch_overrides=overrides)
            distill = F.kl_div(F.log_softmax(sub_logits, dim=1), dense_probs, reduction="batchmean")
            distill.backward()
        total += distill.item()
    cost = float(model.expected_cost_fraction(trace, branch_costs).mean().detach())
    return StepResult(total, logits.detach(), trace, cost)


def router_step(wrapped, model, batch, labels, *, tau, threshold, config: TrainConfig, branch_costs=None,
                generator=None, teacher_probs=None) -> StepResult:
    logits, trace = wrapped(batch, tau=tau, threshold=threshold)
    mflops = executed_mflops_straight_through(model, trace)
    budget = (mflops.mean() / config.target_mflops - 1).square()
    cost_fraction = model.expected_cost_fraction(trace, branch_costs)
    loss = (label_loss(logits, labels, config, teacher_probs)
            + config.budget_weight * budget + config.balance_weight * model.branch_usage_imbalance(trace))
    if config.gate_weight:
        with torch.no_grad():
            cheap_logits, _ = model(batch, tau=tau, threshold=0.0, branch_overrides=cheapest_path(model))
            hard = (cheap_logits.argmax(dim=1) != labels).to(cost_fraction.dtype)
        gate = F.binary_cross_entropy(cost_fraction.clamp(1e-4, 1 - 1e-4), hard)
        loss = loss + config.gate_weight * gate
    loss.backward()
    return StepResult(loss.item(), logits.detach(), trace, float(cost_fraction.mean().detach()))

