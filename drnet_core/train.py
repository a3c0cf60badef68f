"""Training: cross-entropy plus an expected-cost term, on the same sparse routing used at inference.

    python -m drnet_core train --preset fashion --epochs 20 --output assets/drnet_fashion.pt
    torchrun --nproc_per_node=2 -m drnet_core train ...   # DistributedDataParallel

Loss = CE(label-smoothed) + cost_weight * expected_cost_fraction, where the expected cost is the
branch multiply-adds expected under the Gumbel-Softmax weights divided by the worst case (costliest
branch everywhere), so it lies in [0, 1] and pushes every RouterNet toward cheap branches when they
suffice. The threshold ramps from 0 (dense) to `train_threshold` over the warm-up, and branches below
it are skipped in training exactly as at inference; tau anneals geometrically.

A resume file (`<output>.resume.pt`) is written after every epoch; rerunning the same command
continues from it. After the last epoch the default (tau, threshold) is chosen on the held-out part
of the training split, the test split is evaluated once for reporting, and the checkpoint is written.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, TensorDataset
from tqdm.auto import tqdm

from .checkpoint import save_checkpoint
from .config import ModelConfig, TrainConfig
from .data import FASHION_CLASSES, CIFAR10_CLASSES, ImageSet, augment, load_split, to_model_input
from .evaluate import choose_default_setting, run_routed, summarize, sweep
from .model import DRNet

log = logging.getLogger(__name__)

SWEEP_TAUS = (0.25, 0.5, 1.0, 2.0)
SWEEP_THRESHOLDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def tau_at(config: TrainConfig, progress: float) -> float:
    return config.tau_start * (config.tau_end / config.tau_start) ** min(max(progress, 0.0), 1.0)


def threshold_at(config: TrainConfig, epoch_float: float) -> float:
    if config.threshold_warmup_epochs <= 0:
        return config.train_threshold
    return config.train_threshold * min(1.0, epoch_float / config.threshold_warmup_epochs)


def split_train_val(images: ImageSet, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return order[val_size:], order[:val_size]


class DistributedContext:
    """Rank/world from torchrun's environment; single process when it is absent."""

    def __init__(self, device: torch.device | None = None):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device is None:
            device = torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        self.device = device
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        if self.world_size == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def train(model_config: ModelConfig, train_config: TrainConfig, output: str | os.PathLike, *,
          dataset: str = "fashion-mnist", data_dir: str | None = None, device: torch.device | None = None,
          progress: bool = True, select_defaults: bool = True, evaluate_test: bool = True) -> dict:
    """Train (or resume) and write the final checkpoint to `output`. Returns its metadata."""
    ctx = DistributedContext(device)
    output = Path(output)
    resume_path = output.with_name(output.name + ".resume.pt")
    torch.manual_seed(train_config.seed + ctx.rank)

    full_train = load_split(dataset, "train", data_dir)
    if train_config.limit:
        full_train = full_train.subset(train_config.limit)
    train_idx, val_idx = split_train_val(full_train, train_config.val_size, train_config.seed)
    inputs = to_model_input(full_train.images, dataset)
    train_set = TensorDataset(inputs[train_idx], full_train.labels[train_idx])
    sampler = (DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                  seed=train_config.seed, drop_last=True)
               if ctx.world_size > 1 else RandomSampler(train_set, generator=torch.Generator().manual_seed(train_config.seed)))
    loader = DataLoader(train_set, batch_size=train_config.batch_size, sampler=sampler, drop_last=True)

    model = DRNet(model_config).to(ctx.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=train_config.lr, momentum=train_config.momentum,
                                nesterov=True, weight_decay=train_config.weight_decay)
    steps_per_epoch = len(loader)
    total_steps = max(1, train_config.epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    start_epoch, history = 0, []
    if resume_path.is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        if state["model_config"] != model_config.to_dict() or state["train_config"] != train_config.to_dict():
            raise ValueError(f"{resume_path} belongs to a run with a different config; delete it to start afresh.")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history = state["epoch"], state["history"]
        torch.set_rng_state(state["rng"])
        if ctx.is_main:
            log.info("resumed from %s at epoch %d", resume_path, start_epoch)

    # Skipped branches get no gradient in a step, hence find_unused_parameters.
    wrapped = (DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None,
                                       find_unused_parameters=True) if ctx.world_size > 1 else model)
    augment_rng = torch.Generator().manual_seed(train_config.seed * 1000 + ctx.rank)
    for epoch in range(start_epoch, train_config.epochs):
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        augment_rng.manual_seed(train_config.seed * 1000 + ctx.rank * 100003 + epoch)
        model.train()
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
                batch = augment(batch.cpu(), augment_rng).to(ctx.device) if ctx.device.type != "cpu" else augment(batch, augment_rng)
            logits, trace = wrapped(batch, tau=tau, threshold=threshold)
            cost = model.expected_cost_fraction(trace).mean()
            loss = F.cross_entropy(logits, labels, label_smoothing=train_config.label_smoothing) + train_config.cost_weight * cost
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            n = len(labels)
            sums[0] += float(loss) * n
            sums[1] += float((logits.argmax(1) == labels).sum())
            sums[2] += n
            sums[3] += float(cost) * n
            if step % 20 == 0:
                bar.set_postfix(loss=f"{sums[0] / sums[2]:.3f}", acc=f"{sums[1] / sums[2]:.3f}",
                                cost=f"{sums[3] / sums[2]:.3f}", tau=f"{tau:.2f}", thr=f"{threshold:.2f}")
        loss_sum, correct, count, cost_sum = ctx.all_reduce_sum(sums)
        record = {"epoch": epoch + 1, "train_loss": loss_sum / count, "train_accuracy": correct / count,
                  "expected_cost_fraction": cost_sum / count, "seconds": time.perf_counter() - started,
                  "images_per_second": count / (time.perf_counter() - started)}
        if ctx.is_main:
            model.eval()
            val_inputs, val_labels = inputs[val_idx], full_train.labels[val_idx]
            val = run_routed(model, val_inputs, val_labels, tau=train_config.tau_end, threshold=train_config.train_threshold)
            record.update(val_accuracy=float(val.correct.float().mean()), val_mean_mflops=float(val.mflops.mean()))
            history.append(record)
            log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})
            torch.save({"model_config": model_config.to_dict(), "train_config": train_config.to_dict(),
                        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "history": history,
                        "rng": torch.get_rng_state()}, resume_path.with_name(resume_path.name + ".tmp"))
            os.replace(resume_path.with_name(resume_path.name + ".tmp"), resume_path)
        ctx.barrier()

    meta = {}
    if ctx.is_main:
        meta = finalize(model, model_config, train_config, output, history, full_train, inputs, val_idx,
                        dataset=dataset, data_dir=data_dir, select_defaults=select_defaults,
                        evaluate_test=evaluate_test, progress=progress)
    ctx.barrier()
    return meta


def finalize(model: DRNet, model_config: ModelConfig, train_config: TrainConfig, output: Path, history: list,
             full_train: ImageSet, inputs: torch.Tensor, val_idx: torch.Tensor, *, dataset: str,
             data_dir: str | None, select_defaults: bool, evaluate_test: bool, progress: bool) -> dict:
    """Choose default routing on held-out training images, report test figures, write the checkpoint."""
    model.eval()
    class_names = FASHION_CLASSES if dataset == "fashion-mnist" else CIFAR10_CLASSES
    val_inputs, val_labels = inputs[val_idx], full_train.labels[val_idx]
    default = {"tau": train_config.tau_end, "threshold": train_config.train_threshold}
    val_rows: list[dict] = []
    if select_defaults and len(val_idx):
        val_rows = sweep(model, val_inputs, val_labels, SWEEP_TAUS, SWEEP_THRESHOLDS, progress=progress)
        chosen = choose_default_setting(val_rows)
        default = {"tau": chosen["tau"], "threshold": chosen["threshold"]}
    meta = {
        "dataset": dataset,
        "class_names": list(class_names),
        "epochs": len(history),
        "seed": train_config.seed,
        "train_config": train_config.to_dict(),
        "train_images": len(full_train) - len(val_idx),
        "validation_images": len(val_idx),
        "default_tau": default["tau"],
        "default_threshold": default["threshold"],
        "default_selection": "most accurate setting within 35% of dense FLOPs on the held-out validation images",
        "history": history,
        "validation_sweep": val_rows,
    }
    if evaluate_test:
        test = load_split(dataset, "test", data_dir)
        test_inputs = to_model_input(test.images, dataset)
        for label, threshold in (("default", default["threshold"]), ("dense", 0.0)):
            run = run_routed(model, test_inputs, test.labels, tau=default["tau"], threshold=threshold, progress=progress)
            summary = summarize(run, model, test.name, class_names)
            summary.pop("per_class")
            meta[f"test_{label}"] = summary
    save_checkpoint(output, model, meta)
    log.info("wrote %s", output)
    return meta


def config_summary(model_config: ModelConfig, train_config: TrainConfig) -> dict:
    return {"model": asdict(model_config), "train": asdict(train_config)}
