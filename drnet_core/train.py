"""Training: one loop for every phase of the recipe, on the same sparse routing used at inference.

    python -m drnet_core train --preset fashion-wide --output runs/wide.pt
    python -m drnet_core train ... --phase supernet --init-from runs/wide.pt --output runs/supernet.pt
    python -m drnet_core train ... --phase routers --init-from runs/supernet.pt --target-mflops 5.5 --output P
    torchrun --nproc_per_node=2 -m drnet_core train ...   # DistributedDataParallel

What a step minimises is the phase's (`drnet_core.objectives`): the joint DRNet loss, the sandwich rule
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
(`drnet_core.distributed`, same numbers as one process). Only rank 0 logs, shows progress and writes
the resume file and the checkpoint; it reads the resume file and sends its state to the others, so
on several machines only rank 0's machine needs the output folder. One process runs exactly the
single-process code path.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, TensorDataset
from tqdm.auto import tqdm

from .config import ModelConfig, TrainConfig
from .cost import measure_branch_ms
from .data import DatasetError, ImageSet, augment, load_split, to_model_input
from .distributed import DistributedContext, run_routed_sharded, state_fingerprint
from .held_out import finalize, split_train_val
from .model import DRNet
from .monitor import DEFAULT_ROUTING_EVERY, TrainingMonitor
from .phases import enter_training_mode, optimizer_for, phase_named

log = logging.getLogger(__name__)


def tau_at(config: TrainConfig, progress: float) -> float:
    return config.tau_start * (config.tau_end / config.tau_start) ** min(max(progress, 0.0), 1.0)


def threshold_at(config: TrainConfig, epoch_float: float) -> float:
    if config.threshold_warmup_epochs <= 0:
        return config.train_threshold
    return config.train_threshold * min(1.0, epoch_float / config.threshold_warmup_epochs)


def train(model_config: ModelConfig, train_config: TrainConfig, output: str | os.PathLike, *,
          dataset: str = "fashion-mnist", data_dir: str | None = None, device: torch.device | None = None,
          progress: bool = True, select_defaults: bool = True, evaluate_test: bool = True,
          model: torch.nn.Module | None = None, log_dir: str | os.PathLike | None = None,
          log_every: int = DEFAULT_ROUTING_EVERY) -> dict:
    """Train (or resume) and write the final checkpoint to `output`. Returns its metadata.

    `model`: train this network instead of `DRNet(model_config)` (the static baselines of
    `drnet_core.baselines`, which share DRNet's forward signature); `model_config` then is its config.
    `log_dir`: write TensorBoard scalars there (`drnet_core.monitor`), the routing ones every `log_every` steps.
    """
    ctx = DistributedContext(device)
    ctx.quiet_other_ranks()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    resume_path = output.with_name(output.name + ".resume.pt")
    torch.manual_seed(train_config.seed + ctx.rank)

    full_train = load_split(dataset, "train", data_dir)
    if train_config.limit:
        full_train = full_train.subset(train_config.limit)
    check_input_fits(full_train, model_config)
    train_idx, val_idx = split_train_val(full_train, train_config.val_size, train_config.seed)
    inputs = to_model_input(full_train.images, dataset)
    train_set = TensorDataset(inputs[train_idx], full_train.labels[train_idx])
    sampler = (DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                  seed=train_config.seed, drop_last=True)
               if ctx.world_size > 1 else RandomSampler(train_set, generator=torch.Generator().manual_seed(train_config.seed)))
    loader = DataLoader(train_set, batch_size=train_config.batch_size, sampler=sampler, drop_last=True)

    model = (DRNet(model_config) if model is None else model).to(ctx.device)
    parent = warm_start(model, model_config, train_config.init_from) if train_config.init_from else None
    optimizer = optimizer_for(model, train_config)
    steps_per_epoch = len(loader)
    total_steps = max(1, train_config.epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    start_epoch, history = 0, []
    state = read_resume_state(resume_path, model_config, train_config, ctx)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history = state["epoch"], state["history"]
        restore_rng(state, ctx, train_config.seed)
        if ctx.is_main:
            log.info("resumed from %s at epoch %d", resume_path, start_epoch)
    branch_ms = branch_time_table(model, state, ctx) if train_config.cost_measure == "time" else None
    branch_costs = None if branch_ms is None else [torch.tensor(t, dtype=torch.float64, device=ctx.device)
                                                    for t in branch_ms]

    # Skipped branches get no gradient in a step, hence find_unused_parameters.
    wrapped = (DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None,
                                       find_unused_parameters=True) if ctx.world_size > 1 else model)
    augment_rng = torch.Generator().manual_seed(train_config.seed * 1000 + ctx.rank)
    path_rng = torch.Generator()
    monitor = TrainingMonitor(log_dir if ctx.is_main else None, model, log_every)  # TensorBoard scalars
    training_step = phase_named(train_config.phase).step
    for epoch in range(start_epoch, train_config.epochs):
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        augment_rng.manual_seed(train_config.seed * 1000 + ctx.rank * 100003 + epoch)
        path_rng.manual_seed(train_config.seed * 1000 + ctx.rank * 100003 + epoch + 1)
        enter_training_mode(model, train_config.phase)
        sums = [0.0, 0.0, 0.0, 0.0]  # loss, correct, count, cost fraction
        started = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{train_config.epochs}", disable=not (progress and ctx.is_main))
        for step, (batch, labels) in enumerate(bar):
            epoch_float = epoch + step / steps_per_epoch
            tau = tau_at(train_config, epoch_float / max(train_config.epochs, 1))
            threshold = threshold_at(train_config, epoch_float)
            batch = batch.to(ctx.device, non_blocking=True)
            labels = labels.to(ctx.device, non_blocking=True)
            if train_config.augment:
                batch = augment(batch.cpu(), augment_rng, erase_probability=train_config.random_erasing).to(ctx.device)
            optimizer.zero_grad(set_to_none=True)
            result = training_step(wrapped, model, batch, labels, tau=tau, threshold=threshold, config=train_config,
                                   branch_costs=branch_costs, generator=path_rng)
            optimizer.step()
            scheduler.step()
            n = len(labels)
            sums[0] += result.loss * n
            sums[1] += float((result.logits.argmax(1) == labels).sum())
            sums[2] += n
            sums[3] += result.cost_fraction * n
            monitor.record_step(epoch * steps_per_epoch + step, result.trace, loss=result.loss,
                                expected_cost=result.cost_fraction, tau=tau, threshold=threshold,
                                lr=optimizer.param_groups[0]["lr"])
            if step % 20 == 0:
                bar.set_postfix(loss=f"{sums[0] / sums[2]:.3f}", acc=f"{sums[1] / sums[2]:.3f}",
                                cost=f"{sums[3] / sums[2]:.3f}", tau=f"{tau:.2f}", thr=f"{threshold:.2f}")
        loss_sum, correct, count, cost_sum = ctx.all_reduce_sum(sums)
        record = {"epoch": epoch + 1, "train_loss": loss_sum / count, "train_accuracy": correct / count,
                  "expected_cost_fraction": cost_sum / count, "seconds": time.perf_counter() - started,
                  "images_per_second": count / (time.perf_counter() - started)}
        # Every rank now holds rank 0's parameters and batch-norm statistics, so the sharded
        # validation below evaluates one model, the one rank 0 saves.
        ctx.broadcast_buffers(model)
        model.eval()
        val_inputs, val_labels = inputs[val_idx], full_train.labels[val_idx]
        val = run_routed_sharded(model, val_inputs, val_labels, tau=train_config.tau_end,
                                 threshold=train_config.train_threshold, ctx=ctx)
        record.update(val_accuracy=float(val.correct.float().mean()), val_mean_mflops=float(val.mflops.mean()))
        history.append(record)
        monitor.record_epoch(epoch + 1, record, tau=tau_at(train_config, (epoch + 1) / max(train_config.epochs, 1)),
                             lr=optimizer.param_groups[0]["lr"])
        rng_states = rng_states_per_rank(ctx)
        if ctx.is_main:
            log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})
            torch.save({"model_config": model_config.to_dict(), "train_config": train_config.to_dict(),
                        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "history": history,
                        "branch_ms": branch_ms, "rng": torch.get_rng_state(), **rng_states}, resume_path.with_name(resume_path.name + ".tmp"))
            os.replace(resume_path.with_name(resume_path.name + ".tmp"), resume_path)
        ctx.barrier()

    monitor.close()
    replicas = replica_report(model, ctx)
    meta = finalize(model, model_config, train_config, output, history, full_train, inputs, val_idx,
                    dataset=dataset, data_dir=data_dir, select_defaults=select_defaults,
                    evaluate_test=evaluate_test, progress=progress, ctx=ctx, replicas=replicas, parent=parent,
                    branch_ms=branch_ms)
    ctx.barrier()
    ctx.close()
    return meta if ctx.is_main else {}


def branch_time_table(model: torch.nn.Module, state: dict | None, ctx: DistributedContext) -> list:
    """Per cell, the (connections, branches) milliseconds the "time" cost charges, as nested lists.

    A resumed run keeps the table it started with (the machine's speed drifts; the objective must
    not). Rank 0 measures and sends its table to the others, so every replica optimises the same loss.
    """
    table = (state or {}).get("branch_ms")
    if table is None and ctx.is_main and isinstance(model, DRNet):
        table = [measure_branch_ms(cell).tolist() for cell in model.cells]
        log.info("branch milliseconds at batch 256, per cell (%s): %s", ", ".join(model.config.branches),
                 [[round(ms, 3) for ms in cell_table[0]] for cell_table in table])
    if ctx.distributed:
        table = ctx.broadcast_object(table)
    if table is None:
        raise ValueError('cost_measure="time" needs a routed network (a DRNet) to time')
    return table


def warm_start(model: torch.nn.Module, model_config, path: str) -> dict:
    """Load a finished checkpoint's weights into `model`; returns what the new checkpoint records of it.

    The checkpoint is loaded the safe way (`load_checkpoint`) and must hold the same architecture, or
    the same one with a subset of its branch types (`train --branches`: a branch-type ablation that
    starts from the full network). A fine-tuned model is the parent's network trained further, never
    a silent reshape.
    """
    from .checkpoint import load_checkpoint, sha256_of

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
            "total_epochs": meta.get("total_epochs", meta.get("epochs")),
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


def check_input_fits(images: ImageSet, model_config) -> None:
    """A clear message instead of a shape error deep in the first convolution."""
    config = model_config if isinstance(model_config, ModelConfig) else getattr(model_config, "model_config", None)
    if not isinstance(config, ModelConfig) or not len(images):
        return
    shape = tuple(images.images.shape[1:])
    channels = 1 if len(shape) == 2 else shape[2]
    size = shape[:2]
    if channels != config.in_channels or size != (config.image_size, config.image_size):
        hint = "--preset cifar10-mobile" if images.dataset == "cifar10" else "--preset fashion"
        raise DatasetError(f"{images.name} holds {size[0]}x{size[1]} images with {channels} channel(s), but the model "
                           f"expects {config.image_size}x{config.image_size} with {config.in_channels}; "
                           f"train {images.dataset} with a matching preset ({hint}).")


def read_resume_state(resume_path: Path, model_config, train_config: TrainConfig,
                      ctx: DistributedContext) -> dict | None:
    """The resume file's contents, or None to start afresh.

    With several processes rank 0 reads it and sends it to the others, so the file need only exist
    where rank 0 runs and every replica resumes from the same state.
    """
    state, problem = None, None
    if ctx.is_main and resume_path.is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        # from_dict fills fields added since the file was written with their defaults.
        saved_train = TrainConfig.from_dict(state["train_config"]).to_dict()
        if state["model_config"] != model_config.to_dict() or saved_train != train_config.to_dict():
            state, problem = None, f"{resume_path} belongs to a run with a different config; delete it to start afresh."
    if ctx.distributed:
        state, problem = ctx.broadcast_object((state, problem))
    if problem:
        raise ValueError(problem)
    return state


def rng_states_per_rank(ctx: DistributedContext) -> dict:
    """Every rank's RNG state for the resume file (several processes only).

    Each rank draws its own Gumbel noise; resuming all of them from rank 0's state would make
    the ranks draw identical noise. One process keeps the file as it always was ("rng" alone).
    """
    if not ctx.distributed:
        return {}
    mine = {"cpu": torch.get_rng_state()}
    if ctx.device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(ctx.device)
    return {"rng_per_rank": ctx.all_gather_object(mine)}


def restore_rng(state: dict, ctx: DistributedContext, seed: int) -> None:
    per_rank = state.get("rng_per_rank")
    if per_rank is not None and len(per_rank) == ctx.world_size:
        mine = per_rank[ctx.rank]
        torch.set_rng_state(mine["cpu"])
        if "cuda" in mine and ctx.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"], ctx.device)
        return
    torch.set_rng_state(state["rng"])
    if ctx.rank:  # a file from another number of processes: give the other ranks their own noise
        torch.manual_seed(seed + ctx.rank + 1_000_003 * int(state["epoch"]))


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
