"""Where a run starts from other checkpoints: a parent's weights (`--init-from`, a fine-tune or a
branch-type ablation of a finished network) and a teacher's outputs (`--teacher`, distillation).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from drnet_core.analysis.evaluate import default_setting
from drnet_core.net.checkpoint import load_checkpoint, sha256_of, total_epochs
from drnet_core.net.model import DRNet
from drnet_core.training.config import TrainConfig


def warm_start(model: torch.nn.Module, model_config, path: str) -> dict:
    """Load a finished checkpoint's weights into `model`; returns what the new checkpoint records of it.

    The checkpoint is loaded the safe way (`load_checkpoint`) and must hold the same architecture, or
    the same one with a subset of its branch types (`train --branches`: a branch-type ablation that
    starts from the full network). A fine-tuned model is the parent's network trained further, never
    a silent reshape.
    """
    parent, meta = load_checkpoint(path)
    if replace(parent.config, branches=model_config.branches) != model_config:
        raise ValueError(f"{path} holds a different architecture ({parent.config}); "
                         f"--init-from needs a checkpoint of the preset being trained ({model_config})")
    missing = sorted(set(model_config.branches) - set(parent.config.branches))
    if missing:
        raise ValueError(f"{path} has no {', '.join(missing)} branches to start from (it has "
                         f"{', '.join(parent.config.branches)}); --branches may only drop branch types")
    model.load_state_dict(branch_subset_state(parent, model_config.branches))
    return {"path": str(path), "sha256": sha256_of(path), "epochs": meta.get("epochs"),
            "total_epochs": total_epochs(meta),
            "train_config": meta.get("train_config"), "history": meta.get("history", []),
            "test_default": meta.get("test_default"), "branches": list(parent.config.branches)}


def branch_subset_state(parent: DRNet, branches: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """`parent`'s state dict for the same network holding only `branches`, in that order.

    Branch modules are renumbered, and each router's logits layer keeps the rows of the kept
    branches: a softmax over fewer logits, each the parent's.
    """
    kept = [parent.config.branches.index(name) for name in branches]
    logits_layer = f"router.mlp.{len(parent.cells[0].router.mlp) - 1}."
    state = {}
    for key, value in parent.state_dict().items():
        parts = key.split(".")
        if parts[0] == "cells" and parts[2] == "branches":  # cells.<cell>.branches.<connection>.<branch>.<...>
            if int(parts[4]) not in kept:
                continue
            parts[4] = str(kept.index(int(parts[4])))
        elif parts[0] == "cells" and key.startswith(f"cells.{parts[1]}.{logits_layer}"):
            cell = parent.cells[int(parts[1])]
            per_branch = value.view(len(cell.connections), len(cell.branch_names), *value.shape[1:])
            value = per_branch[:, kept].reshape(-1, *value.shape[1:])
        state[".".join(parts)] = value
    return state


@dataclass
class Teacher:
    """A finished DRNet whose dense path (threshold 0, at its default tau) a run distils from."""
    model: DRNet
    tau: float

    @torch.no_grad()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        logits, _ = self.model(batch, tau=self.tau, threshold=0.0)
        return torch.softmax(logits, dim=1)


def load_teacher(config: TrainConfig, device: torch.device) -> Teacher | None:
    if config.teacher is None:
        return None
    model, meta = load_checkpoint(config.teacher, device=device, fold_batch_norms=True)
    return Teacher(model, default_setting(meta)[0])
