"""TensorBoard scalars of a training run: what each step's routing trace and each epoch's metrics show.

`train --log-dir D` writes event files through `torch.utils.tensorboard` (`tensorboard --logdir D`):

- every epoch (x axis: epoch): `epoch/train_loss`, `epoch/train_accuracy`, `epoch/expected_cost_fraction`,
  `epoch/train_mflops` (executed multiply-adds per training image), `epoch/val_accuracy`, `epoch/val_mflops`,
  `epoch/tau`, `epoch/lr`;
- every N steps (x axis: optimizer step), over the N steps' batches: `step/loss`, `step/expected_cost_fraction`,
  `step/executed_mflops`, `schedule/tau`, `schedule/threshold`, `schedule/lr`, and per routed cell k
  (numbered from 1, as in the app) `routing/cell{k}/usage/{branch}` (the fraction of instance-connection
  pairs that ran that branch type), `routing/cell{k}/distinct_patterns` (distinct executed patterns of the
  cell) and `routing/cell{k}/path_entropy_bits` (entropy of those patterns' frequencies); the same two for
  the whole network's path under `routing/network/`.

A router collapsing to one path shows while it happens: its distinct patterns fall towards 1 and its path
entropy towards 0 bits, and one branch's usage climbs to 1. Under torchrun only rank 0 writes, from its
own share of each step's batch.
"""
from __future__ import annotations

import math
import os
from collections import Counter

import torch

from drnet_core.net.model import DRNet, RoutingTrace
from drnet_core.analysis.payoff import pattern_entropy_bits

DEFAULT_ROUTING_EVERY = 50  # steps between routing scalars: at batch 128, 6,400 instances to count patterns over

EPOCH_TAGS = {"train_loss": "epoch/train_loss", "train_accuracy": "epoch/train_accuracy",
              "expected_cost_fraction": "epoch/expected_cost_fraction", "val_accuracy": "epoch/val_accuracy",
              "val_mean_mflops": "epoch/val_mflops"}


def routing_scalars(executed: list[torch.Tensor], branch_names: list[tuple[str, ...]]) -> dict[str, float]:
    """Routing scalars of a window of instances; executed: per cell, (N, connections, branches) bool."""
    scalars = {}
    for cell_index, (mask, names) in enumerate(zip(executed, branch_names), start=1):
        usage = mask.double().mean(dim=(0, 1))  # (branches,) over instances and connections
        for name, fraction in zip(names, usage.tolist()):
            scalars[f"routing/cell{cell_index}/usage/{name}"] = fraction
        distinct, entropy = pattern_entropy_bits(mask.flatten(1))
        scalars[f"routing/cell{cell_index}/distinct_patterns"] = distinct
        scalars[f"routing/cell{cell_index}/path_entropy_bits"] = entropy
    distinct, entropy = pattern_entropy_bits(torch.cat([mask.flatten(1) for mask in executed], dim=1))
    scalars["routing/network/distinct_paths"] = distinct
    scalars["routing/network/path_entropy_bits"] = entropy
    return scalars


class TrainingMonitor:
    """Collects a training run's steps and epochs and writes them as TensorBoard scalars.

    With `log_dir=None` (no --log-dir, or a rank other than 0) every call does nothing, so the
    training loop calls it unconditionally.
    """

    def __init__(self, log_dir: str | os.PathLike | None, model: torch.nn.Module,
                 routing_every: int = DEFAULT_ROUTING_EVERY):
        if routing_every < 1:
            raise ValueError(f"routing scalars need a window of at least 1 step, got {routing_every}")
        self.routing_every = routing_every
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(log_dir))
        # Routing scalars need branch names; a static baseline routes nothing and gets the rest.
        self.branch_names = ([tuple(cell.branch_names) for cell in model.cells] if isinstance(model, DRNet) else None)
        self.model = model
        self._window: list[list[torch.Tensor]] = []
        self._step_sums = Counter()
        self._epoch_mflops = [0.0, 0]

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def record_step(self, step: int, trace: RoutingTrace, *, loss: float, expected_cost: float, tau: float,
                    threshold: float, lr: float) -> None:
        """One optimizer step (global `step`, counted from 0). Writes when a window of steps is complete."""
        if not self.enabled:
            return
        executed = [mask.detach().cpu() for mask in trace.executed]
        batch = executed[0].shape[0] if executed else 0
        mflops = float(self.model.mflops_per_instance(trace).sum()) if batch else 0.0
        self._epoch_mflops[0] += mflops
        self._epoch_mflops[1] += batch
        self._step_sums.update(loss=loss * batch, cost=expected_cost * batch, mflops=mflops, instances=batch)
        if self.branch_names is not None:
            self._window.append(executed)
        if (step + 1) % self.routing_every:
            return
        scalar_step = step + 1  # steps done
        instances = max(self._step_sums["instances"], 1)
        scalars = {"step/loss": self._step_sums["loss"] / instances,
                   "step/expected_cost_fraction": self._step_sums["cost"] / instances,
                   "step/executed_mflops": self._step_sums["mflops"] / instances,
                   "schedule/tau": tau, "schedule/threshold": threshold, "schedule/lr": lr}
        if self._window:
            per_cell = [torch.cat(cell_masks) for cell_masks in zip(*self._window)]
            scalars.update(routing_scalars(per_cell, self.branch_names))
        self._write(scalars, scalar_step)
        self._window, self._step_sums = [], Counter()
        self.writer.flush()  # so that TensorBoard shows a collapse while the run is still going

    def record_epoch(self, epoch: int, record: dict, *, tau: float, lr: float) -> None:
        """One finished epoch (counted from 1): the metrics the training log prints, tau and lr."""
        if not self.enabled:
            return
        scalars = {tag: record[key] for key, tag in EPOCH_TAGS.items() if key in record}
        if self._epoch_mflops[1]:
            scalars["epoch/train_mflops"] = self._epoch_mflops[0] / self._epoch_mflops[1]
        scalars.update({"epoch/tau": tau, "epoch/lr": lr})
        self._write(scalars, epoch)
        self._epoch_mflops = [0.0, 0]
        self.writer.flush()

    def close(self) -> None:
        if self.enabled:
            self.writer.close()

    def _write(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            if math.isfinite(value):
                self.writer.add_scalar(tag, value, step)
