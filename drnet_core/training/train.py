"""Training: one loop for every phase of the recipe, on the same sparse routing used at inference.

    python -m drnet_core train --preset fashion-wide --output runs/wide.pt
    python -m drnet_core train ... --phase supernet --init-from runs/wide.pt --output runs/supernet.pt
    python -m drnet_core train ... --phase routers --init-from runs/supernet.pt --target-mflops 5.5 --output P
    torchrun --nproc_per_node=2 -m drnet_core train ...   # DistributedDataParallel

What a step minimises is the phase's (`drnet_core.training.objectives`): the joint DRNet loss, the sandwich rule
for the supernet, or the routers alone against a budget. The threshold ramps from 0 (dense) to
`train_threshold` over the warm-up, and branches below it are skipped in training exactly as at
inference; tau anneals geometrically.

A resume file (`<output>.resume.pt`) is written after every epoch; rerunning the same command
continues from it. After the last epoch the default (tau, threshold) is chosen on the held-out part
of the training split, the test split is evaluated once for reporting, and the checkpoint is written.

Under torchrun every process trains a DistributedDataParallel replica on its DistributedSampler
share of each epoch (reshuffled per epoch; `batch_size` is per process, so the global batch is
N times larger); gradients are averaged across processes, epoch metrics summed over all of them,
and validation, the default-setting sweep and the test evaluation are sharded across the ranks
(`drnet_core.analysis.distributed`, same numbers as one process). Only rank 0 logs, shows progress and writes
the resume file and the checkpoint; it reads the resume file and sends its state to the others, so
on several machines only rank 0's machine needs the output folder. One process runs exactly the
single-process code path.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, TensorDataset
from tqdm.auto import tqdm

from drnet_core.net.config import ModelConfig
from drnet_core.training.config import TrainConfig
from drnet_core.net.cost import measure_branch_ms
from drnet_core.data.datasets import DEFAULT_DATASET, DatasetError, ImageSet, augment, dataset_named, load_split, to_model_input
from drnet_core.defaults import BATCH_SIZE
from drnet_core.analysis.distributed import DistributedContext, run_routed_sharded, state_fingerprint
from drnet_core.data.held_out import split_train_val
from drnet_core.training.finalize import finalize
from drnet_core.net.model import DRNet
from drnet_core.training.monitor import DEFAULT_ROUTING_EVERY, TrainingMonitor
from drnet_core.training.objectives import StepResult
from drnet_core.training.phases import enter_training_mode, optimizer_for, phase_named
from drnet_core.training.warm_start import Teacher, load_teacher, warm_start
from drnet_core.training.resume import read_resume_state, restore_rng, resume_path_for, rng_states_per_rank, write_resume_state

log = logging.getLogger(__name__)


def tau_at(config: TrainConfig, progress: float) -> float:
    return config.tau_start * (config.tau_end / config.tau_start) ** min(max(progress, 0.0), 1.0)


def threshold_at(config: TrainConfig, epoch_float: float) -> float:
    if config.threshold_warmup_epochs <= 0:
        return config.train_threshold
    return config.train_threshold * min(1.0, epoch_float / config.threshold_warmup_epochs)


def global_rng_seed(seed: int, rank: int) -> int:
    """Seed of the global RNG, which draws the initial weights and the training Gumbel noise: one per
    process, so the replicas draw different noise (DistributedDataParallel starts every replica from
    rank 0's weights, so the initial weights are the same anyway)."""
    return seed + rank


def epoch_augment_seed(seed: int, rank: int, epoch: int) -> int:
    """Seed of one process's augmentation in one epoch. Reseeded every epoch, so that a resumed run draws
    the same shifts, flips and erasures as one that never stopped; the prime 100003, far above any epoch
    count, keeps the processes' seeds apart."""
    return seed * 1000 + rank * 100003 + epoch


def epoch_order_seed(seed: int, epoch: int) -> int:
    """Seed of one epoch's data order (one process; torchrun's sampler has its own `set_epoch`): reseeded
    every epoch, so that a resumed run visits the images in the order one that never stopped would; the
    prime 10000019 sets these seeds far apart from the augmentation and path seeds."""
    return 10_000_019 * (seed + 1) + epoch


def epoch_path_seed(seed: int, rank: int, epoch: int) -> int:
    """Seed of one process's random supernet paths in one epoch, reseeded for the same reason: one above
    the same epoch's augmentation seed, so that paths and augmentation do not draw the same numbers."""
    return epoch_augment_seed(seed, rank, epoch) + 1


def train(model_config: ModelConfig, train_config: TrainConfig, output: str | os.PathLike, *,
          dataset: str = DEFAULT_DATASET, data_dir: str | None = None, device: torch.device | None = None,
          progress: bool = True, select_defaults: bool = True, evaluate_test: bool = True,
          model: torch.nn.Module | None = None, log_dir: str | os.PathLike | None = None,
          log_every: int = DEFAULT_ROUTING_EVERY) -> dict:
    """Train (or resume) and write the final checkpoint to `output`. Returns its metadata.

    `model`: train this network instead of `DRNet(model_config)` (the static baselines of
    `drnet_core.net.baselines`, which share DRNet's forward signature); `model_config` then is its config.
    `log_dir`: write TensorBoard scalars there (`drnet_core.training.monitor`), the routing ones every `log_every` steps.
    """
    ctx = DistributedContext(device)
    ctx.quiet_other_ranks()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    resume_path = resume_path_for(output)
    torch.manual_seed(global_rng_seed(train_config.seed, ctx.rank))
    data = training_data(dataset, data_dir, model_config, train_config, ctx)
    model = (DRNet(model_config) if model is None else model).to(ctx.device)
    parent = warm_start(model, model_config, train_config.init_from) if train_config.init_from else None
    optimizer = optimizer_for(model, train_config)
    scheduler = cosine_schedule(optimizer, train_config.epochs * len(data.loader))
    start_epoch, history = 0, []
    state = read_resume_state(resume_path, model_config, train_config, ctx)
    if state is not None:
        start_epoch, history = continue_from(state, model, optimizer, scheduler, ctx, train_config.seed)
        if ctx.is_main:
            log.info("resumed from %s at epoch %d", resume_path, start_epoch)
    branch_ms = branch_time_table(model, state, ctx) if train_config.cost_measure == "time" else None
    loop = EpochLoop(model=model, wrapped=replicated(model, ctx), optimizer=optimizer, scheduler=scheduler,
                     loader=data.loader, config=train_config, ctx=ctx, teacher=load_teacher(train_config, ctx.device),
                     monitor=TrainingMonitor(log_dir if ctx.is_main else None, model, log_every),  # TensorBoard
                     branch_costs=branch_cost_tensors(branch_ms, ctx.device), show_progress=progress and ctx.is_main)
    for epoch in range(start_epoch, train_config.epochs):
        record = loop.train_epoch(epoch)
        record.update(validation_figures(model, data, train_config, ctx))
        history.append(record)
        loop.monitor.record_epoch(epoch + 1, record, lr=optimizer.param_groups[0]["lr"],
                                  tau=tau_at(train_config, (epoch + 1) / max(train_config.epochs, 1)))
        rng_states = rng_states_per_rank(ctx)
        if ctx.is_main:
            log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})
            write_resume_state(resume_path, model_config=model_config, train_config=train_config, model=model,
                               optimizer=optimizer, scheduler=scheduler, epoch=epoch + 1, history=history,
                               branch_ms=branch_ms, rng_states=rng_states)
        ctx.barrier()
    loop.monitor.close()
    meta = finalize(model, model_config, train_config, output, history, data.full_train, data.inputs, data.val_idx,
                    dataset=dataset, data_dir=data_dir, select_defaults=select_defaults,
                    evaluate_test=evaluate_test, progress=progress, ctx=ctx, replicas=replica_report(model, ctx),
                    parent=parent, branch_ms=branch_ms)
    ctx.barrier()
    ctx.close()
    return meta if ctx.is_main else {}


@dataclass
class TrainingData:
    full_train: ImageSet     # the training split (its first `limit` images, if limited)
    inputs: torch.Tensor     # all of it as model input, (N, C, H, W)
    train_idx: torch.Tensor  # the images trained on
    val_idx: torch.Tensor    # the images held out to validate and to choose the default setting
    loader: DataLoader       # batches of the trained-on images, in this process's order


def training_data(dataset: str, data_dir: str | None, model_config, config: TrainConfig,
                  ctx: DistributedContext) -> TrainingData:
    full_train = load_split(dataset, "train", data_dir)
    if config.limit:
        full_train = full_train.subset(config.limit)
    check_input_fits(full_train, model_config)
    train_idx, val_idx = split_train_val(full_train, config.val_size, config.seed)
    inputs = to_model_input(full_train.images, dataset)
    train_set = TensorDataset(inputs[train_idx], full_train.labels[train_idx])
    # The data order depends on the seed and the epoch alone (`epoch_order_seed`; under torchrun, set_epoch).
    sampler = (DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                  seed=config.seed, drop_last=True)
               if ctx.world_size > 1 else RandomSampler(train_set, generator=torch.Generator().manual_seed(config.seed)))
    loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, drop_last=True)
    return TrainingData(full_train, inputs, train_idx, val_idx, loader)


def cosine_schedule(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate falls from its peak to 0 along half a cosine over `steps` steps."""
    total = max(1, steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))


def continue_from(state: dict, model, optimizer, scheduler, ctx: DistributedContext, seed: int) -> tuple[int, list]:
    """Load a resume file's state; returns (the epoch to start at, the history so far)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng(state, ctx, seed)
    return state["epoch"], state["history"]


def replicated(model: torch.nn.Module, ctx: DistributedContext) -> torch.nn.Module:
    """The model every step runs: under torchrun, wrapped to average gradients across the processes."""
    if ctx.world_size == 1:
        return model
    # Skipped branches get no gradient in a step, hence find_unused_parameters.
    return DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None,
                                   find_unused_parameters=True)


def branch_cost_tensors(branch_ms: list | None, device: torch.device) -> list[torch.Tensor] | None:
    """The "time" cost table as per-cell tensors (None under "macs": the model's own multiply-adds)."""
    return None if branch_ms is None else [torch.tensor(t, dtype=torch.float64, device=device) for t in branch_ms]


@dataclass
class EpochSums:
    """An epoch's running sums over its steps (per-image means times the batch size), per process."""
    loss: float = 0.0
    correct: float = 0.0
    images: float = 0.0
    cost_fraction: float = 0.0

    def add(self, result: StepResult, labels: torch.Tensor) -> None:
        batch = len(labels)
        self.loss += result.loss * batch
        self.correct += float((result.logits.argmax(1) == labels).sum())
        self.images += batch
        self.cost_fraction += result.cost_fraction * batch

    def summed_over_processes(self, ctx: DistributedContext) -> "EpochSums":
        return EpochSums(*ctx.all_reduce_sum([self.loss, self.correct, self.images, self.cost_fraction]))

    def means(self) -> dict:
        return {"train_loss": self.loss / self.images, "train_accuracy": self.correct / self.images,
                "expected_cost_fraction": self.cost_fraction / self.images}


@dataclass
class EpochLoop:
    """What every epoch of a run uses: the network, the optimisation, the batches and the log."""
    model: torch.nn.Module
    wrapped: torch.nn.Module  # the model, or its DistributedDataParallel wrapper under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: DataLoader
    config: TrainConfig
    ctx: DistributedContext
    monitor: TrainingMonitor
    branch_costs: list[torch.Tensor] | None
    show_progress: bool
    teacher: Teacher | None = None
    augment_rng: torch.Generator = field(default_factory=torch.Generator)
    path_rng: torch.Generator = field(default_factory=torch.Generator)

    def train_epoch(self, epoch: int) -> dict:
        """One pass over this process's batches; returns the epoch's record, summed over every process."""
        config, steps = self.config, len(self.loader)
        if isinstance(self.loader.sampler, DistributedSampler):
            self.loader.sampler.set_epoch(epoch)
        else:
            self.loader.sampler.generator.manual_seed(epoch_order_seed(config.seed, epoch))
        self.augment_rng.manual_seed(epoch_augment_seed(config.seed, self.ctx.rank, epoch))
        self.path_rng.manual_seed(epoch_path_seed(config.seed, self.ctx.rank, epoch))
        enter_training_mode(self.model, config.phase)
        sums, started = EpochSums(), time.perf_counter()
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not self.show_progress)
        for step, (batch, labels) in enumerate(bar):
            epoch_float = epoch + step / steps
            tau, threshold = tau_at(config, epoch_float / max(config.epochs, 1)), threshold_at(config, epoch_float)
            labels = labels.to(self.ctx.device, non_blocking=True)
            result = self.train_step(batch, labels, tau, threshold)
            sums.add(result, labels)
            self.monitor.record_step(epoch * steps + step, result.trace, loss=result.loss,
                                     expected_cost=result.cost_fraction, tau=tau, threshold=threshold,
                                     lr=self.optimizer.param_groups[0]["lr"])
            if step % 20 == 0:
                means = sums.means()
                bar.set_postfix(loss=f"{means['train_loss']:.3f}", acc=f"{means['train_accuracy']:.3f}",
                                cost=f"{means['expected_cost_fraction']:.3f}", tau=f"{tau:.2f}", thr=f"{threshold:.2f}")
        totals = sums.summed_over_processes(self.ctx)
        seconds = time.perf_counter() - started
        return {"epoch": epoch + 1, **totals.means(), "seconds": seconds, "images_per_second": totals.images / seconds}

    def train_step(self, batch: torch.Tensor, labels: torch.Tensor, tau: float, threshold: float) -> StepResult:
        """Augment one batch, run the phase's step on it and step the optimizer and the schedule."""
        config, device = self.config, self.ctx.device
        batch = batch.to(device, non_blocking=True)
        if config.augment:
            batch = augment(batch.cpu(), self.augment_rng, erase_probability=config.random_erasing).to(device)
        teacher_probs = None if self.teacher is None else self.teacher.probabilities(batch)
        self.optimizer.zero_grad(set_to_none=True)
        result = phase_named(config.phase).step(self.wrapped, self.model, batch, labels, tau=tau, threshold=threshold,
                                                config=config, branch_costs=self.branch_costs,
                                                generator=self.path_rng, teacher_probs=teacher_probs)
        self.optimizer.step()
        self.scheduler.step()
        return result


def validation_figures(model: torch.nn.Module, data: TrainingData, config: TrainConfig,
                       ctx: DistributedContext) -> dict:
    """Accuracy and mean executed MFLOPs on the held-out images, at the end-of-training setting."""
    # Every rank now holds rank 0's parameters and batch-norm statistics, so the sharded
    # validation below evaluates one model, the one rank 0 saves.
    ctx.broadcast_buffers(model)
    model.eval()
    val = run_routed_sharded(model, data.inputs[data.val_idx], data.full_train.labels[data.val_idx],
                             tau=config.tau_end, threshold=config.train_threshold, ctx=ctx)
    return {"val_accuracy": float(val.correct.float().mean()), "val_mean_mflops": float(val.mflops.mean())}


def branch_time_table(model: torch.nn.Module, state: dict | None, ctx: DistributedContext) -> list:
    """Per cell, the (connections, branches) milliseconds the "time" cost charges, as nested lists.

    A resumed run keeps the table it started with (the machine's speed drifts; the objective must
    not). Rank 0 measures and sends its table to the others, so every replica optimises the same loss.
    """
    table = (state or {}).get("branch_ms")
    if table is None and ctx.is_main and isinstance(model, DRNet):
        table = [measure_branch_ms(cell).tolist() for cell in model.cells]
        log.info("branch milliseconds at batch %d, per cell (%s): %s", BATCH_SIZE, ", ".join(model.config.branches),
                 [[round(ms, 3) for ms in cell_table[0]] for cell_table in table])
    if ctx.distributed:
        table = ctx.broadcast_object(table)
    if table is None:
        raise ValueError('cost_measure="time" needs a routed network (a DRNet) to time')
    return table


def check_input_fits(images: ImageSet, model_config) -> None:
    """A clear message instead of a shape error deep in the first convolution."""
    config = model_config if isinstance(model_config, ModelConfig) else getattr(model_config, "model_config", None)
    if not isinstance(config, ModelConfig) or not len(images):
        return
    shape = tuple(images.images.shape[1:])
    channels = 1 if len(shape) == 2 else shape[2]
    size = shape[:2]
    if channels != config.in_channels or size != (config.image_size, config.image_size):
        raise DatasetError(f"{images.name} holds {size[0]}x{size[1]} images with {channels} channel(s), but the model "
                           f"expects {config.image_size}x{config.image_size} with {config.in_channels}; "
                           f"train {images.dataset} with a matching preset "
                           f"(--preset {dataset_named(images.dataset).preset}).")


def replica_report(model: torch.nn.Module, ctx: DistributedContext) -> dict | None:
    """With several processes: world size, backend, and whether every replica ended bit-identical."""
    if not ctx.distributed:
        return None
    ctx.broadcast_buffers(model)
    fingerprints = ctx.all_gather_object(state_fingerprint(model))
    in_sync = len(set(fingerprints)) == 1
    if not in_sync and ctx.is_main:
        log.error("the %d replicas ended with different weights; the checkpoint holds rank 0's", ctx.world_size)
    return {"world_size": ctx.world_size, "backend": ctx.backend, "replicas_in_sync": in_sync,
            "replica_sha256": fingerprints}
