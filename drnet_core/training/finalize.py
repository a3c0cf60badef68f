"""What is decided on the images a training run holds out: the default setting.

A run holds `val_size` images of the training split out of training (`drnet_core.data.held_out`). After
the last epoch `finalize` sweeps the grid of settings on them, chooses the default
(`evaluate.choose_default_setting`: within the run's MFLOPs budget, or 35% of dense, and routing
instance-aware), evaluates the test split once for reporting and writes the checkpoint. The test split
never takes part in a choice. `reselect_default` applies the rule again to a finished checkpoint.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from drnet_core.net.checkpoint import load_checkpoint, save_checkpoint, total_epochs
from drnet_core.net.config import ModelConfig
from drnet_core.training.config import TrainConfig
from drnet_core.data.datasets import ImageSet, dataset_named, dataset_of, load_split, to_model_input
from drnet_core.data.held_out import training_split
from drnet_core.analysis.distributed import DistributedContext, run_routed_sharded, sweep_sharded
from drnet_core.analysis.evaluate import SWEEP_TAUS, SWEEP_THRESHOLDS, choose_default_setting, selection_rule, summarize
from drnet_core.net.model import DRNet

log = logging.getLogger(__name__)


def reselect_default(checkpoint: str | os.PathLike, output: str | os.PathLike, *, data_dir: str | None = None,
                     progress: bool = True) -> dict:
    """Choose a trained checkpoint's default setting again under the current rule, report, and write it.

    The held-out images are the same ones the run held out (its seed and `val_size`), so the choice
    still never sees the test split; the weights are untouched.
    """
    model, meta = load_checkpoint(checkpoint)
    train_config = TrainConfig.from_dict(meta.get("train_config") or {})
    dataset = dataset_of(meta)
    full_train, val_idx = training_split(meta, data_dir)
    return finalize(model, model.config, train_config, Path(output), meta.get("history", []), full_train,
                    to_model_input(full_train.images, dataset), val_idx, dataset=dataset, data_dir=data_dir,
                    select_defaults=True, evaluate_test=True, progress=progress, parent=meta.get("initialized_from"),
                    branch_ms=meta.get("branch_ms"))


def finalize(model: DRNet, model_config: ModelConfig, train_config: TrainConfig, output: Path, history: list,
             full_train: ImageSet, inputs: torch.Tensor, val_idx: torch.Tensor, *, dataset: str,
             data_dir: str | None, select_defaults: bool, evaluate_test: bool, progress: bool,
             ctx: DistributedContext | None = None, replicas: dict | None = None,
             parent: dict | None = None, branch_ms: list | None = None) -> dict:
    """Choose default routing on held-out training images, report test figures, write the checkpoint.

    With several processes every rank calls it (the evaluations are sharded); rank 0 writes.
    """
    is_main = ctx is None or ctx.is_main
    progress = progress and is_main
    model.eval()
    class_names = dataset_named(dataset).class_names
    val_inputs, val_labels = inputs[val_idx], full_train.labels[val_idx]
    default = {"tau": train_config.tau_end, "threshold": train_config.train_threshold}
    val_rows: list[dict] = []
    if select_defaults and len(val_idx):
        val_rows = sweep_sharded(model, val_inputs, val_labels, SWEEP_TAUS, SWEEP_THRESHOLDS, progress=progress,
                                 ctx=ctx)
        chosen = choose_default_setting(val_rows, max_mflops=train_config.target_mflops)
        default = {"tau": chosen["tau"], "threshold": chosen["threshold"]}
    meta = {
        "dataset": dataset,
        "class_names": list(class_names),
        "epochs": len(history),
        # Epochs since random initialisation: a warm-started run adds its parent's.
        "total_epochs": len(history) + (int(total_epochs(parent) or 0) if parent else 0),
        "seed": train_config.seed,
        "train_config": train_config.to_dict(),
        "train_images": len(full_train) - len(val_idx),
        "validation_images": len(val_idx),
        "default_tau": default["tau"],
        "default_threshold": default["threshold"],
        "default_selection": selection_rule(train_config.target_mflops),
        "history": history,
        "validation_sweep": val_rows,
    }
    if evaluate_test:
        test = load_split(dataset, "test", data_dir)
        test_inputs = to_model_input(test.images, dataset)
        for label, threshold in (("default", default["threshold"]), ("dense", 0.0)):
            run = run_routed_sharded(model, test_inputs, test.labels, tau=default["tau"], threshold=threshold,
                                     progress=progress, ctx=ctx)
            summary = summarize(run, model, test.name, class_names)
            summary.pop("per_class")
            meta[f"test_{label}"] = summary
    if replicas is not None:
        meta["distributed"] = replicas
    if parent is not None:
        meta["initialized_from"] = parent
    if branch_ms is not None:
        meta["branch_ms"] = branch_ms  # the table the cost term charged
    if is_main:
        save_checkpoint(output, model, meta)
        log.info("wrote %s", output)
    return meta
