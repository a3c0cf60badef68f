"""The training images a run holds out: a seeded split of the training set, the same on every rerun.

The run chooses its default setting on them (`drnet_core.training.finalize`), never on the test split;
the app and the out-of-distribution calibration find them again from a checkpoint's recorded run.
"""
from __future__ import annotations

import torch

from drnet_core.data.datasets import DatasetError, ImageSet, dataset_of, load_split
from drnet_core.defaults import SEED, VAL_SIZE


def split_train_val(images: ImageSet, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return order[val_size:], order[:val_size]


def training_split(meta: dict, data_dir: str | None = None) -> tuple[ImageSet, torch.Tensor]:
    """The training images a checkpoint's run saw, and the indices of those it held out (never trained on)."""
    run = meta.get("train_config") or {}
    full_train = load_split(dataset_of(meta), "train", data_dir)
    if run.get("limit"):
        full_train = full_train.subset(run["limit"])
    return full_train, split_train_val(full_train, run.get("val_size", VAL_SIZE), run.get("seed", SEED))[1]


def held_out_set(meta: dict, data_dir: str | None = None) -> ImageSet:
    """The images a checkpoint's run held out of training: where settings are chosen without the test split."""
    if not meta.get("train_config"):
        raise DatasetError("this checkpoint records no training run, so which images it held out is unknown; "
                           "use the test split")
    full_train, val_idx = training_split(meta, data_dir)
    if not len(val_idx):
        raise DatasetError("this checkpoint's run held out no training images (val_size 0); use the test split")
    indices = full_train.indices[val_idx] if full_train.indices is not None else val_idx
    return ImageSet(full_train.images[val_idx], full_train.labels[val_idx],
                    f"{len(val_idx):,} training images held out of training", full_train.dataset, indices)
