"""Benchmarks: what routed inference saves in wall-clock time, measured on the machine it runs on.

`python -m drnet_core bench [--json]` runs `run_bench` once on a checkpoint (the shipped one by
default) and reports, in one dict:

  * latency of dense (threshold 0) and routed (the checkpoint's default tau and threshold) inference
    at batch 1 and batch 256 (warm-up first, dense and routed timed in alternation, medians of the
    repeats, `torch.inference_mode`), with the FLOPs ratio (dense / routed mean), speedup (median of
    the paired dense / routed ratios) and efficiency = speedup / FLOPs ratio: 1.0 means
    routed time shrinks exactly as multiply-adds do (DRNet, Cai et al., arXiv 1905.04849, counts
    cost in multiply-adds; this asks whether that count is a real saving);
  * the RouterNets' share of routed multiply-adds and of routed wall time;
  * where the routed time goes (`time_model`): each branch type timed alone per cell, the always-on
    part timed with every branch forced off, and the speedup those times predict for the executed
    branches. That splits the efficiency into what the model's choice of branches allows (pooling and
    identity cost time but no multiply-adds) and what the sparse executor makes of it;
  * a cold evaluation (the first `run_routed` after loading, as a slider move in the app triggers
    it) and the warm throughput of the same full evaluation, in images/s;
  * training throughput of the checkpoint's architecture: forward, backward and SGD step on
    augmented training images at the post-warm-up training threshold.

Timings are never asserted in tests: they depend on the machine and its load.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch

from drnet_core.training.config import TrainConfig
from drnet_core.net.cost import TimeTable, forced_off, measure_branch_ms, median_seconds, synchronize
from drnet_core.data.datasets import augment, dataset_of, load_evaluation_set, load_split, to_model_input
from drnet_core.defaults import BATCH_SIZE
from drnet_core.analysis.evaluate import default_setting, run_routed
from drnet_core.net.model import DRNet, RoutingTrace
from drnet_core.training.phases import enter_training_mode, optimizer_for, phase_named
from drnet_core.net.router import recalibrate
from drnet_core.runtime import huge_pages_asked, system_huge_pages


BIG_BATCHES = 4  # distinct batches timed at the big batch size: each routes its own way


def machine_info(device: torch.device) -> dict:
    return {
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine()),
        "torch_version": str(torch.__version__),
        "python_version": platform.python_version(),
        # Whether torch was asked to back large tensors with huge pages (drnet_core.runtime), and the kernel's mode.
        "huge_pages": {"torch_allocator": huge_pages_asked(), "system": system_huge_pages()},
    }


def paired_seconds(first: Callable[[], object], second: Callable[[], object], *, warmup: int, repeats: int,
                   device: torch.device) -> tuple[float, float, float]:
    """Median wall times of `first()` and `second()` timed in alternation, and the median of their ratios.

    On a shared or throttled machine the speed drifts over seconds; timing the two back to back,
    repeat after repeat, lets a slow spell hit both sides of each ratio instead of one side only.
    """
    for _ in range(warmup):
        first()
        second()
    synchronize(device)
    first_times, second_times = [], []
    for _ in range(repeats):
        for fn, times in ((first, first_times), (second, second_times)):
            start = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(first_times, second_times)]
    return statistics.median(first_times), statistics.median(second_times), statistics.median(ratios)


def whole_batches(inputs: torch.Tensor, batch: int, device: torch.device) -> list[torch.Tensor]:
    """`inputs` cut into full batches of `batch` on `device`; a remainder is dropped, so every timing sees one size."""
    return [inputs[i:i + batch].to(device) for i in range(0, len(inputs) - batch + 1, batch)]


@torch.inference_mode()
def latency(model: DRNet, inputs: torch.Tensor, *, tau: float, threshold: float, batch: int,
            warmup: int, repeats: int, routed_overrides: list[torch.Tensor] | None = None) -> dict:
    """Dense vs routed wall time for `batch`-sized forwards over `inputs` (a multiple of batch).

    routed_overrides: branch overrides for the routed forwards only (what-if experiments); dense
    always runs every branch.
    """
    device = model.device
    batches = whole_batches(inputs, batch, device)

    def run(at: float, overrides=None) -> Callable[[], None]:
        return lambda: [model(b, tau=tau, threshold=at, branch_overrides=overrides) for b in batches]

    dense, routed, speedup = paired_seconds(run(0.0), run(threshold, routed_overrides), warmup=warmup,
                                            repeats=repeats, device=device)
    dense, routed = dense / len(batches), routed / len(batches)
    routed_mflops = torch.cat([model.mflops_per_instance(
        model(b, tau=tau, threshold=threshold, branch_overrides=routed_overrides)[1]).cpu() for b in batches])
    flops_ratio = model.dense_mflops() / float(routed_mflops.mean())
    return {"batch": batch, "forwards": len(batches), "dense_ms": 1e3 * dense, "routed_ms": 1e3 * routed,
            "dense_mflops": model.dense_mflops(), "routed_mean_mflops": float(routed_mflops.mean()),
            "flops_ratio": flops_ratio, "speedup": speedup, "efficiency": speedup / flops_ratio}


@torch.inference_mode()
def routed_with_cell_inputs(model: DRNet, batch: torch.Tensor, *, tau: float,
                            threshold: float) -> tuple[RoutingTrace, list[torch.Tensor]]:
    """A routed forward of `batch` (on the model's device): its trace, and the input each cell received,
    so that a router can be timed alone on what it really sees."""
    cell_inputs: list[torch.Tensor] = []
    hooks = [cell.register_forward_pre_hook(lambda _cell, args: cell_inputs.append(args[0])) for cell in model.cells]
    try:
        _, trace = model(batch, tau=tau, threshold=threshold)
    finally:
        for hook in hooks:
            hook.remove()
    return trace, cell_inputs


@torch.inference_mode()
def router_share(model: DRNet, inputs: torch.Tensor, *, tau: float, threshold: float,
                 warmup: int, repeats: int) -> dict:
    """The RouterNets' multiply-adds and wall time (router, recalibration, threshold) over a routed forward."""
    device = model.device
    batch = inputs.to(device)
    trace, cell_inputs = routed_with_cell_inputs(model, batch, tau=tau, threshold=threshold)

    def routers() -> None:
        for cell, x in zip(model.cells, cell_inputs):
            _ = recalibrate(cell.router(x), tau, training=False) >= threshold

    router_time, routed_time, time_share = paired_seconds(
        routers, lambda: model(batch, tau=tau, threshold=threshold), warmup=warmup, repeats=repeats, device=device)
    router_mflops = sum(cell.router_macs for cell in model.cells) / 1e6
    routed_mflops = float(model.mflops_per_instance(trace).mean())
    return {"batch": len(batch), "router_mflops": router_mflops, "routed_mean_mflops": routed_mflops,
            "flops_share": router_mflops / routed_mflops, "router_ms": 1e3 * router_time,
            "routed_ms": 1e3 * routed_time, "time_share": time_share}


@torch.inference_mode()
def time_model(model: DRNet, inputs: torch.Tensor, *, tau: float, threshold: float, batch: int,
               warmup: int, repeats: int, routed_overrides: list[torch.Tensor] | None = None) -> dict:
    """The time a forward would take if every executed branch cost what it costs alone, dense vs routed.

    Multiply-adds leave out branches that cost time but no multiply-adds (pooling, identity and the
    weighted add every branch ends in), so the FLOPs ratio promises more than any executor can give.
    Here each branch type is timed alone per cell at `batch` (`cost.measure_branch_ms`), and the
    always-on part (stem, reductions, routers, head, the executor's bookkeeping) by a forward with
    every branch forced off. Predicted time = always-on + sum over branches of (fraction of instances
    that executed it) x (its time). `time_ratio`, predicted dense / predicted routed, is the speedup
    the executed branches allow; `executor_efficiency`, measured speedup / time_ratio, is what the
    sparse executor makes of it. Every round times all the parts, and medians are taken per part, so
    a slow spell of the machine hits the prediction and the measurement alike. `routed_overrides` as
    in `latency`.
    """
    batches = whole_batches(inputs, batch, model.device)
    everything_off = forced_off(model)
    forwards = {
        "dense": lambda: [model(b, tau=tau, threshold=0.0) for b in batches],
        "routed": lambda: [model(b, tau=tau, threshold=threshold, branch_overrides=routed_overrides) for b in batches],
        "always_on": lambda: [model(b, tau=tau, threshold=threshold, branch_overrides=everything_off) for b in batches],
    }
    forward_ms: dict[str, list[float]] = {name: [] for name in forwards}
    tables: list[list[torch.Tensor]] = []
    for round_index in range(warmup + repeats):
        for name, forward in forwards.items():
            start = time.perf_counter()
            forward()
            synchronize(model.device)
            if round_index >= warmup:
                forward_ms[name].append(1e3 * (time.perf_counter() - start) / len(batches))
        table = [measure_branch_ms(cell, batch_size=batch, repeats=1, warmup=0) for cell in model.cells]
        if round_index >= warmup:
            tables.append(table)
    dense_ms, routed_ms, always_on_ms = (statistics.median(forward_ms[name]) for name in forwards)
    branch_ms = [torch.stack([table[index] for table in tables]).median(dim=0).values
                 for index in range(len(model.cells))]
    # The audit's per-image estimate, summed over a batch: one arithmetic for both.
    size = len(batches[0])
    per_image = TimeTable(always_on_ms / size, torch.cat([ms.flatten() for ms in branch_ms]).cpu() / size, size,
                          model.device.type)
    executed = torch.cat([model(b, tau=tau, threshold=threshold, branch_overrides=routed_overrides)[1].path_masks().cpu()
                          for b in batches])
    predicted_routed = size * float(per_image.ms_per_instance(executed).mean())
    predicted_dense = size * float(per_image.ms_per_instance(torch.ones_like(executed[:1])))
    zero_mac = torch.cat([(cell.branch_macs == 0).flatten() for cell in model.cells]).cpu()
    zero_mac_ms = size * float((executed[:, zero_mac].to(torch.float64) @ per_image.branch_ms[zero_mac]).mean())
    time_ratio = predicted_dense / predicted_routed
    return {"batch": size, "forwards": len(batches),
            "branch_ms": {f"cell_{index}": dict(zip(cell.branch_names, ms[0].tolist()))
                          for index, (cell, ms) in enumerate(zip(model.cells, branch_ms))},
            "always_on_ms": always_on_ms,
            "predicted_dense_ms": predicted_dense, "predicted_routed_ms": predicted_routed,
            "measured_dense_ms": dense_ms, "measured_routed_ms": routed_ms,
            "time_ratio": time_ratio, "executor_efficiency": dense_ms / routed_ms / time_ratio,
            "zero_mac_branch_share": zero_mac_ms / predicted_routed,
            "always_on_share": always_on_ms / predicted_routed}


def evaluation_speed(model: DRNet, inputs: torch.Tensor, labels: torch.Tensor, *, tau: float, threshold: float,
                     repeats: int, batch_size: int) -> dict:
    """Cold: the first `run_routed` since loading (call this first). Warm: the median of `repeats` more."""
    device = model.device

    def evaluate() -> None:
        run_routed(model, inputs, labels, tau=tau, threshold=threshold, batch_size=batch_size)

    start = time.perf_counter()
    evaluate()
    synchronize(device)
    cold = time.perf_counter() - start
    warm = median_seconds(evaluate, warmup=0, repeats=repeats, device=device)
    return {"images": len(inputs), "batch_size": batch_size, "cold_seconds": cold, "warm_seconds": warm,
            "cold_images_per_second": len(inputs) / cold, "warm_images_per_second": len(inputs) / warm}


def training_speed(model_config, train_config: TrainConfig, images: torch.Tensor, labels: torch.Tensor, *,
                   device: torch.device, steps: int, warmup: int = 2) -> dict:
    """Images/s of training steps (augment, the training phase's step, SGD) of a fresh model.

    The step is `drnet_core.training.train`'s own (`phases.PHASES`), at the post-warm-up training threshold,
    the slow part of an epoch.
    """
    torch.manual_seed(train_config.seed)
    model = DRNet(model_config).to(device)
    enter_training_mode(model, train_config.phase)
    optimizer = optimizer_for(model, train_config)
    generator = torch.Generator().manual_seed(train_config.seed)
    training_step = phase_named(train_config.phase).step
    batch_size = train_config.batch_size
    tau = (train_config.tau_start * train_config.tau_end) ** 0.5

    def step(index: int) -> None:
        start = (index * batch_size) % max(1, len(images) - batch_size + 1)
        batch = augment(images[start:start + batch_size], generator).to(device)
        target = labels[start:start + batch_size].to(device)
        optimizer.zero_grad(set_to_none=True)
        training_step(model, model, batch, target, tau=tau, threshold=train_config.train_threshold,
                      config=train_config, generator=generator)
        optimizer.step()

    counter = iter(range(10 ** 9))
    seconds = median_seconds(lambda: step(next(counter)), warmup=warmup, repeats=steps, device=device)
    return {"batch_size": batch_size, "steps": steps, "threshold": train_config.train_threshold,
            "step_ms": 1e3 * seconds, "images_per_second": min(batch_size, len(images)) / seconds}


def run_bench(model: DRNet, meta: dict, *, data_dir: str | None = None, eval_images: int | None = None,
              single_images: int = 100, big_batch: int = BATCH_SIZE, warmup: int = 2, repeats: int = 5,
              train_steps: int = 5, eval_batch_size: int = BATCH_SIZE,
              train_config: TrainConfig | None = None, tau: float | None = None,
              threshold: float | None = None) -> dict:
    """Every figure of the benchmark, in one dict. `model` in eval mode; `meta` its checkpoint metadata.

    Routed means the checkpoint's default setting unless `tau` / `threshold` name another.
    """
    device = model.device
    default_tau, default_threshold = default_setting(meta)
    tau = float(default_tau if tau is None else tau)
    threshold = float(default_threshold if threshold is None else threshold)
    dataset = dataset_of(meta)
    test = load_evaluation_set(dataset, data_dir)
    test = test.subset(eval_images)
    inputs = to_model_input(test.images, dataset)
    # Cold first: nothing has run through the model yet in this process.
    evaluation = evaluation_speed(model, inputs, test.labels, tau=tau, threshold=threshold, repeats=max(1, repeats // 2),
                                  batch_size=eval_batch_size)
    big = min(big_batch, len(inputs))
    result = {
        "machine": machine_info(device),
        "settings": {"tau": tau, "threshold": threshold, "dataset": test.name, "warmup": warmup, "repeats": repeats,
                     "single_images": min(single_images, len(inputs)), "big_batch": big,
                     "big_batches": max(1, min(BIG_BATCHES, len(inputs) // big))},
        "latency": {
            "batch_1": latency(model, inputs[:single_images], tau=tau, threshold=threshold, batch=1,
                               warmup=warmup, repeats=repeats),
            # Several distinct batches: each routes differently, so sub-batch sizes vary as in real use.
            f"batch_{big_batch}": latency(model, inputs[:big * BIG_BATCHES], tau=tau, threshold=threshold,
                                          batch=big, warmup=warmup, repeats=repeats),
        },
        "router": {
            "batch_1": router_share(model, inputs[:1], tau=tau, threshold=threshold, warmup=warmup * 10,
                                    repeats=repeats * 20),
            f"batch_{big_batch}": router_share(model, inputs[:big], tau=tau, threshold=threshold, warmup=warmup,
                                               repeats=repeats),
        },
        "evaluation": evaluation,
    }
    result["time_model"] = time_model(model, inputs[:big * BIG_BATCHES], tau=tau, threshold=threshold, batch=big,
                                      warmup=warmup, repeats=repeats)
    train_config = train_config or TrainConfig(**{k: v for k, v in (meta.get("train_config") or {}).items()
                                                  if k in TrainConfig.__dataclass_fields__})
    train_set = load_split(dataset, "train", data_dir)
    train_images = to_model_input(train_set.images[: train_config.batch_size * (train_steps + 2)], dataset)
    result["training"] = training_speed(model.config, train_config, train_images,
                                        train_set.labels[: len(train_images)], device=device, steps=train_steps)
    training = result["training"]
    training["epoch_images"] = max(0, min(train_config.limit or len(train_set), len(train_set)) - train_config.val_size)
    training["estimated_epoch_seconds"] = training["epoch_images"] / training["images_per_second"]
    history = meta.get("history") or []
    if history:
        # As measured while the checkpoint trained (whatever else the machine was doing then).
        training["recorded_epoch_seconds"] = [round(float(h["seconds"]), 1) for h in history]
    return result


def format_table(result: dict) -> str:
    """A short human-readable table of `run_bench`'s result."""
    machine, settings = result["machine"], result["settings"]
    lines = [f"{machine['device']} ({machine['device_name']}), {machine['cpu_cores']} cores, "
             f"{machine['torch_threads']} torch threads, torch {machine['torch_version']}",
             f"routed = tau {settings['tau']:g}, threshold {settings['threshold']:g}; dense = threshold 0; "
             f"{settings['dataset']}",
             "",
             f"{'batch':>6} {'dense ms':>10} {'routed ms':>10} {'speedup':>8} {'FLOPs ratio':>12} {'efficiency':>10}"]
    for row in result["latency"].values():
        lines.append(f"{row['batch']:>6} {row['dense_ms']:>10.3f} {row['routed_ms']:>10.3f} {row['speedup']:>8.2f} "
                     f"{row['flops_ratio']:>12.2f} {row['efficiency']:>10.2f}")
    lines.append("")
    for row in result["router"].values():
        lines.append(f"routers at batch {row['batch']}: {100 * row['flops_share']:.2f}% of routed FLOPs, "
                     f"{100 * row['time_share']:.1f}% of routed wall time")
    timed = result["time_model"]
    lines.append(f"time model at batch {timed['batch']}: each executed branch at its cost alone predicts dense "
                 f"{timed['predicted_dense_ms']:.1f} ms, routed {timed['predicted_routed_ms']:.1f} ms "
                 f"(measured {timed['measured_dense_ms']:.1f}, {timed['measured_routed_ms']:.1f})")
    lines.append(f"  so the executed branches allow a speedup of {timed['time_ratio']:.2f}; executor efficiency "
                 f"{timed['executor_efficiency']:.2f}; of predicted routed time, branches without multiply-adds "
                 f"{100 * timed['zero_mac_branch_share']:.0f}%, always-on part {100 * timed['always_on_share']:.0f}%")
    ev = result["evaluation"]
    lines.append(f"evaluation of {ev['images']:,} images: cold {ev['cold_seconds']:.2f} s "
                 f"({ev['cold_images_per_second']:,.0f} images/s), warm {ev['warm_seconds']:.2f} s "
                 f"({ev['warm_images_per_second']:,.0f} images/s)")
    tr = result["training"]
    lines.append(f"training: {tr['images_per_second']:,.0f} images/s at batch {tr['batch_size']} "
                 f"(~{tr['estimated_epoch_seconds'] / 60:.1f} min per epoch of {tr['epoch_images']:,} images)")
    return "\n".join(lines)
