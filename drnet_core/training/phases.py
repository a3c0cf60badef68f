"""Training phase registry: every objective `train --phase` offers, as one entry each.

As `ops.OPS` does for branch types, an entry holds everything a phase needs: its step function
(`drnet_core.training.objectives`: what one batch minimises), which parameters it trains, how batch norms
behave while it trains, and the check a `TrainConfig` must pass to run it. `TrainConfig.phase` and
`train --phase` accept exactly these names, so adding a phase is one entry here plus its step
function (docs: "Add a training phase"; tests/test_phase_registry.py proves it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from drnet_core.training.objectives import StepResult, joint_step, router_step, supernet_step

if TYPE_CHECKING:
    from drnet_core.training.config import TrainConfig

# (wrapped, model, batch, labels, *, tau, threshold, config, branch_costs, generator, teacher_probs) -> StepResult:
# runs the forwards and backwards of one batch; the training loop steps the optimizer.
StepFunction = Callable[..., StepResult]

# How a phase's batch norms behave while it trains:
#   "batch"    normalise with each batch's statistics and update the running ones (nn.Module.train());
#   "running"  keep normalising with the running statistics, unchanged.
BATCH_NORM_MODES = ("batch", "running")


def every_parameter(name: str) -> bool:
    return True


def router_parameters_only(name: str) -> bool:
    return ".router." in name


def no_requirement(config: "TrainConfig") -> None:
    return None


def needs_a_budget(config: "TrainConfig") -> None:
    if not (config.target_mflops or 0) > 0:
        raise ValueError(f"the {config.phase} phase needs a target_mflops > 0 for its budget term")


@dataclass(frozen=True)
class Phase:
    step: StepFunction
    trains: Callable[[str], bool]  # parameter name (as model.named_parameters() gives it) -> trained?
    batch_norms: str  # one of BATCH_NORM_MODES
    check: Callable[["TrainConfig"], None]  # raises ValueError for a config this phase cannot run
    summary: str  # one line for `train --help`

    def __post_init__(self):
        if self.batch_norms not in BATCH_NORM_MODES:
            raise ValueError(f"batch_norms must be one of {BATCH_NORM_MODES}, got {self.batch_norms!r}")


PHASES: dict[str, Phase] = {
    "joint": Phase(joint_step, every_parameter, "batch", no_requirement,
                   "every weight, against cross-entropy plus the cost and balance terms"),
    # Every path a router may later pick becomes a good network in its own right.
    "supernet": Phase(supernet_step, every_parameter, "batch", no_requirement,
                      "every weight, by the sandwich rule: the dense path learns from the labels, the cheapest "
                      "and --random-paths random paths from the dense path"),
    # The branches are frozen, and routing changes which instances reach each batch norm: batch
    # statistics would drift away from the ones the frozen branches were trained with.
    "routers": Phase(router_step, router_parameters_only, "running", needs_a_budget,
                     "only the RouterNets, against cross-entropy, a --target-mflops budget and gate supervision"),
}


def phase_named(name: str) -> Phase:
    if name not in PHASES:
        raise ValueError(f"phase must be one of {tuple(PHASES)}, got {name!r}")
    return PHASES[name]


def trainable_parameters(model: nn.Module, phase: str) -> list[nn.Parameter]:
    """The parameters `phase` trains; the others stop requiring gradients."""
    trains = phase_named(phase).trains
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(trains(name))
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


def optimizer_for(model: nn.Module, config: "TrainConfig") -> torch.optim.Optimizer:
    """SGD with Nesterov momentum over the parameters `config.phase` trains."""
    return torch.optim.SGD(trainable_parameters(model, config.phase), lr=config.lr, momentum=config.momentum,
                           nesterov=True, weight_decay=config.weight_decay)


def enter_training_mode(model: nn.Module, phase: str) -> None:
    """model.train(), with the batch norms in the phase's mode."""
    model.train()
    if phase_named(phase).batch_norms == "running":
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
