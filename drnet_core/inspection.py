"""One input's routing through a DRNet, as frozen data: what the single-image views and figures draw from.

`explorer.inspect_input` makes an `Inspection` once, from the model's per-cell routing trace; the figures
read its `architecture` and `cells` and never see the network. Every array is a read-only copy, so a view
or figure that changes one raises instead of silently changing what the next caller (or Streamlit's cache)
sees. A pickled copy comes back read-only as well: pickling goes through the constructor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from drnet_core.architecture import Architecture

RoutingQuantity = Literal["weights", "executed", "router_logits"]


def read_only(values, dtype) -> np.ndarray:
    """A private copy that raises on writes: a caller's array is never frozen under its feet."""
    array = np.array(values, dtype=dtype)
    array.setflags(write=False)
    return array


# eq=False on both: arrays have no single truth value, so field-wise equality would raise; identity it is.
@dataclass(frozen=True, eq=False)
class CellRouting:
    """One cell's routing of one input, each array (connections, branches) in the router's branch order."""

    weights: np.ndarray        # recalibrated weights, softmax((logits + noise) / tau)
    executed: np.ndarray       # bool, the branches that ran
    router_logits: np.ndarray  # the router's logits before noise and temperature

    def __post_init__(self):
        object.__setattr__(self, "weights", read_only(self.weights, np.float32))
        object.__setattr__(self, "executed", read_only(self.executed, bool))
        object.__setattr__(self, "router_logits", read_only(self.router_logits, np.float32))
        shapes = {self.weights.shape, self.executed.shape, self.router_logits.shape}
        if len(shapes) != 1 or self.weights.ndim != 2:
            raise ValueError("weights, executed and router_logits must share one (connections, branches) shape, "
                             f"got {self.weights.shape}, {self.executed.shape} and {self.router_logits.shape}")

    # Through the constructor: numpy unpickles arrays writeable, and st.cache_data unpickles on every hit.
    def __reduce__(self):
        return CellRouting, (self.weights, self.executed, self.router_logits)

    @property
    def shape(self) -> tuple[int, int]:
        return self.weights.shape


@dataclass(frozen=True, eq=False)
class Inspection:
    """One input under one setting (tau, threshold, noise, forced branches): prediction, routing and cost."""

    architecture: Architecture
    cells: tuple[CellRouting, ...]  # one per cell of `architecture`, in its order
    probabilities: np.ndarray       # (classes,)
    prediction: int
    mflops: float                   # executed multiply-adds, millions
    active_params: float
    dense_mflops: float             # every branch run

    def __post_init__(self):
        object.__setattr__(self, "cells", tuple(self.cells))
        object.__setattr__(self, "probabilities", read_only(self.probabilities, np.float32))
        shapes = [cell.shape for cell in self.cells]
        if shapes != self.architecture.routing_shape():
            raise ValueError(f"per-cell routing of shapes {shapes} does not fit the architecture's "
                             f"{self.architecture.routing_shape()}")

    def __reduce__(self):
        return Inspection, (self.architecture, self.cells, self.probabilities, self.prediction, self.mflops,
                            self.active_params, self.dense_mflops)

    @property
    def confidence(self) -> float:
        return float(self.probabilities[self.prediction])

    @property
    def fraction_of_dense(self) -> float:
        return self.mflops / self.dense_mflops

    @property
    def branches_run(self) -> int:
        return int(sum(cell.executed.sum() for cell in self.cells))

    def flat(self, quantity: RoutingQuantity) -> np.ndarray:
        """One routing quantity over all branches, in the architecture's flattening order (cell, connection,
        branch): the positions `Architecture.branch_labels` names and `explorer.branch_overrides` takes."""
        if quantity not in ("weights", "executed", "router_logits"):
            raise ValueError(f"quantity must be weights, executed or router_logits, got {quantity!r}")
        return np.concatenate([getattr(cell, quantity).ravel() for cell in self.cells])
