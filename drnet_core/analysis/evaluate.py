"""Routed evaluation: run a checkpoint over a set at one (tau, threshold) and summarise it.

`run_routed` returns per-instance results (prediction, confidence, executed MFLOPs, active parameters,
selected-branch pattern); `summarize` turns them into the numbers the CLI, the app and the docs report;
`sweep` evaluates a grid of settings for the accuracy/FLOPs trade-off curve.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from drnet_core.compute_gate import current_priority, process_gate
from drnet_core.defaults import BATCH_SIZE
from drnet_core.net.model import DRNet

# The grid of settings a sweep evaluates by default: the training run's held-out sweep, which chooses
# the default setting, the CLI's `sweep` and the app's trade-off curve.
SWEEP_TAUS = (0.25, 0.5, 1.0, 2.0)
SWEEP_THRESHOLDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)

# A checkpoint records the setting its training chose on held-out images; one that records none (a
# run stopped early, a file from elsewhere) runs dense, the one setting that needs no choosing.
FALLBACK_TAU, FALLBACK_THRESHOLD = 1.0, 0.0


def default_setting(meta: dict) -> tuple[float, float]:
    """(tau, threshold) a checkpoint is evaluated, benchmarked and shown at unless told otherwise."""
    return float(meta.get("default_tau", FALLBACK_TAU)), float(meta.get("default_threshold", FALLBACK_THRESHOLD))


@dataclass
class RoutedRun:
    labels: torch.Tensor          # (N,)
    predictions: torch.Tensor     # (N,)
    probabilities: torch.Tensor   # (N, classes)
    mflops: torch.Tensor          # (N,) executed multiply-adds, millions
    active_params: torch.Tensor   # (N,)
    path_masks: torch.Tensor      # (N, total branches) bool
    branch_weights: torch.Tensor  # (N, total branches)
    tau: float
    threshold: float
    noise_seed: int | None

    @property
    def correct(self) -> torch.Tensor:
        return self.predictions == self.labels

    def path_ids(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(unique patterns (P, T), id of each instance's pattern (N,)), ids ordered by frequency."""
        patterns, inverse, counts = torch.unique(self.path_masks, dim=0, return_inverse=True, return_counts=True)
        order = torch.argsort(counts, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order))
        return patterns[order], rank[inverse]


def batch_workers(device: torch.device, batches: int) -> int:
    """How many batches to evaluate at once: two on a CPU with at least two torch threads, else one.

    A routed batch is a chain of small operators, each too small to split well over two cores, so on
    a CPU two batches at a time, one thread each, keep both cores busier.
    """
    if device.type != "cpu" or batches < 2 or torch.get_num_threads() < 2:
        return 1
    return 2


@torch.inference_mode()
def prefix_features(model: DRNet, inputs: torch.Tensor, batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """`model.shared_prefix` of every input, on the CPU, batch by batch as `run_routed` would compute it.

    The same batches give the same numbers: a run from these features equals a run from the images.
    """
    return torch.cat([model.shared_prefix(inputs[start:start + batch_size].to(model.device)).cpu()
                      for start in range(0, len(inputs), batch_size)])


@torch.inference_mode()
def run_routed(model: DRNet, inputs: torch.Tensor, labels: torch.Tensor, *, tau: float, threshold: float,
               noise_seed: int | None = None, batch_size: int = BATCH_SIZE, progress: bool = False,
               branch_overrides: list[torch.Tensor] | None = None, from_prefix: bool = False) -> RoutedRun:
    """inputs: normalised (N, C, H, W) on any device, or with `from_prefix` their `prefix_features`;
    batches are moved to the model's device.

    With `noise_seed`, Gumbel noise for all N instances is drawn up front from that seed, so the
    result does not depend on the batch size or the device. `branch_overrides`: per cell,
    (connections, branches) for every instance or (N, connections, branches) for each one.
    """
    if model.training:
        raise ValueError("run_routed needs a model in eval mode")
    noise = model.sample_noise(len(inputs), noise_seed) if noise_seed is not None else None
    return _run_batches(model, inputs, labels, tau=tau, threshold=threshold, noise=noise, noise_seed=noise_seed,
                        batch_size=batch_size, progress=progress, branch_overrides=branch_overrides,
                        from_prefix=from_prefix)


def _run_batches(model: DRNet, inputs: torch.Tensor, labels: torch.Tensor, *, tau: float, threshold: float,
                 noise: list[torch.Tensor] | None, noise_seed: int | None, batch_size: int, progress: bool,
                 branch_overrides: list[torch.Tensor] | None, from_prefix: bool) -> RoutedRun:
    """`run_routed` with its noise already drawn: per cell, one row per input."""
    device = model.device
    starts = range(0, len(inputs), batch_size)
    # Each batch takes its cores from the process's gate: between batches, a session's slider step goes
    # before another session's sweep, and a short run before a long one (compute_gate). The priority is
    # the caller's, not the workers'.
    gate, priority = process_gate(), current_priority()

    def run_batch(start: int) -> tuple[torch.Tensor, ...]:
        batch = inputs[start:start + batch_size].to(device)
        batch_noise = None if noise is None else [n[start:start + batch_size] for n in noise]
        batch_overrides = None if branch_overrides is None else [
            o[start:start + batch_size].to(device) if o.dim() == 3 else o for o in branch_overrides]
        # Only a DRNet has a shared prefix; the static baselines evaluated here take images alone.
        prefixed = {"from_prefix": True} if from_prefix else {}
        batches_left = -(-(len(inputs) - start) // batch_size)
        with gate.slot(tokens=torch.get_num_threads(), priority=priority, work_left=batches_left):
            logits, trace = model(batch, tau=tau, threshold=threshold, gumbel_noise=batch_noise,
                                  branch_overrides=batch_overrides, **prefixed)
        return (torch.softmax(logits.float(), dim=1).cpu(), model.mflops_per_instance(trace).cpu(),
                model.active_params_per_instance(trace).cpu(), trace.path_masks().cpu(),
                trace.branch_weights().float().cpu())

    workers = batch_workers(device, len(starts))
    threads_each = max(1, torch.get_num_threads() // workers)

    def in_worker(start: int) -> tuple[torch.Tensor, ...]:
        # Thread count and inference mode are per thread: set both in the worker.
        torch.set_num_threads(threads_each)
        with torch.inference_mode():
            return run_batch(start)

    desc = f"evaluate tau={tau:g} threshold={threshold:g}"
    if workers == 1:
        results = [run_batch(start) for start in tqdm(starts, desc=desc, disable=not progress, leave=False)]
    else:
        with ThreadPoolExecutor(workers) as pool:
            results = list(tqdm(pool.map(in_worker, starts), total=len(starts), desc=desc, disable=not progress,
                                leave=False))
    probabilities, mflops, params, masks, weights = (torch.cat(column) for column in zip(*results))
    return RoutedRun(labels=labels.cpu(), predictions=probabilities.argmax(dim=1), probabilities=probabilities,
                     mflops=mflops, active_params=params, path_masks=masks, branch_weights=weights,
                     tau=tau, threshold=threshold, noise_seed=noise_seed)


def paths_that_change(base: RoutedRun, threshold: float) -> torch.Tensor:
    """(N,) bool: the instances of `base` (a run without branch overrides) whose path may differ at `threshold`.

    An instance's weights in a cell depend only on its input and the branches it ran in earlier cells. Where
    its recorded weights select, at the new threshold, exactly the branches it ran, cell after cell, it runs
    the same path through the same numbers; only the others need running again.
    """
    return ((base.branch_weights >= threshold) != base.path_masks).any(dim=1)


@torch.inference_mode()
def rerun_at_threshold(model: DRNet, inputs: torch.Tensor, base: RoutedRun, threshold: float, *,
                       batch_size: int = BATCH_SIZE, from_prefix: bool = False) -> RoutedRun:
    """`run_routed` at `base`'s tau and noise and another threshold, running only the instances whose path
    changes (`paths_that_change`): a small threshold step re-routes a few percent of a set. When most paths
    change, a full run.

    inputs: those `base` ran (or their `prefix_features`, with `from_prefix`); `base` ran without branch
    overrides. Paths, costs and predictions are those of a full run; probabilities agree to float rounding,
    as a branch's output for one instance can differ in the last bits with the sub-batch it runs in.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    changed = paths_that_change(base, threshold).nonzero().squeeze(1)
    if len(changed) > len(base.labels) // 2:  # gathering the rest would cost more than it saves
        return run_routed(model, inputs, base.labels, tau=base.tau, threshold=threshold, noise_seed=base.noise_seed,
                          batch_size=batch_size, from_prefix=from_prefix)
    fields = {name: getattr(base, name).clone() for name in
              ("predictions", "probabilities", "mflops", "active_params", "path_masks", "branch_weights")}
    if len(changed):
        noise = None
        if base.noise_seed is not None:
            noise = [rows[changed.to(rows.device)] for rows in model.sample_noise(len(base.labels), base.noise_seed)]
        rerun = _run_batches(model, inputs[changed], base.labels[changed], tau=base.tau, threshold=threshold,
                             noise=noise, noise_seed=base.noise_seed, batch_size=batch_size, progress=False,
                             branch_overrides=None, from_prefix=from_prefix)
        for name, values in fields.items():
            values[changed] = getattr(rerun, name)
    return RoutedRun(labels=base.labels, tau=base.tau, threshold=threshold, noise_seed=base.noise_seed, **fields)


def summarize(run: RoutedRun, model: DRNet, dataset: str, class_names: tuple[str, ...]) -> dict:
    mflops = run.mflops
    mean = float(mflops.mean())
    # Population CV; 0 for a single instance rather than NaN.
    cv = float(mflops.std(unbiased=False) / mean) if mean > 0 else 0.0
    per_class = {}
    for index, name in enumerate(class_names):
        members = run.labels == index
        if bool(members.any()):
            per_class[name] = {"n": int(members.sum()),
                               "accuracy": float(run.correct[members].float().mean()),
                               "mean_mflops": float(mflops[members].mean())}
    dense = model.dense_mflops()
    return {
        "dataset": dataset,
        "n": len(run.labels),
        "tau": run.tau,
        "threshold": run.threshold,
        "noise_seed": run.noise_seed,
        "accuracy": float(run.correct.float().mean()),
        "mean_mflops": mean,
        "dense_mflops": dense,
        "mflops_fraction_of_dense": mean / dense,
        "mean_active_params": float(run.active_params.mean()),
        "dense_params": model.dense_params(),
        "distinct_paths": int(torch.unique(run.path_masks, dim=0).shape[0]),
        "mflops_cv": cv,
        "per_class": per_class,
    }


SWEEP_COLUMNS = ("accuracy", "mean_mflops", "mflops_fraction_of_dense", "mean_active_params", "distinct_paths",
                 "mflops_cv")


def sweep_row(run: RoutedRun, model: DRNet) -> dict:
    """One trade-off row: the setting and the summary columns a sweep reports."""
    summary = summarize(run, model, "", ())
    return {"tau": run.tau, "threshold": run.threshold, **{key: summary[key] for key in SWEEP_COLUMNS}}


def sweep(model: DRNet, inputs: torch.Tensor, labels: torch.Tensor, taus, thresholds, *,
          progress: bool = False, batch_size: int = BATCH_SIZE) -> list[dict]:
    """One row per (tau, threshold): accuracy, mean/relative MFLOPs, active params, paths, CV."""
    grid = [(float(t), float(h)) for t in taus for h in thresholds]
    return [sweep_row(run_routed(model, inputs, labels, tau=tau, threshold=threshold, batch_size=batch_size), model)
            for tau, threshold in tqdm(grid, desc="sweep", disable=not progress)]


# What "instance-aware" means for the default setting (the acceptance bar of the core issue):
# enough distinct paths and enough spread in per-instance cost that routing is not one fixed path.
MIN_DISTINCT_PATHS = 20
MIN_MFLOPS_CV = 0.15
DEFAULT_SELECTION_RULE = (f"most accurate setting within 35% of dense FLOPs with at least {MIN_DISTINCT_PATHS} "
                          f"distinct paths and FLOPs CV >= {MIN_MFLOPS_CV} on the held-out validation images "
                          f"(without such a setting: the most accurate within 35%)")


def selection_rule(max_mflops: float | None = None) -> str:
    """`choose_default_setting`'s rule in words, for the checkpoint that records its choice."""
    if max_mflops is None:
        return DEFAULT_SELECTION_RULE
    return (f"most accurate setting of at most {max_mflops:g} mean MFLOPs with at least {MIN_DISTINCT_PATHS} "
            f"distinct paths and FLOPs CV >= {MIN_MFLOPS_CV} on the held-out validation images "
            f"(without such a setting: the most accurate of at most {max_mflops:g} MFLOPs)")


def choose_default_setting(rows: list[dict], budget_fraction: float = 0.35, max_mflops: float | None = None) -> dict:
    """The most accurate sweep row within budget whose routing is instance-aware.

    The budget is `max_mflops` mean MFLOPs when given, else `budget_fraction` of dense cost. Run on
    held-out training images only; ties go to the cheaper setting. When no affordable row routes
    instance-aware, the most accurate affordable row; when none is affordable, the cheapest.
    """
    affordable = [row for row in rows if (row["mean_mflops"] <= max_mflops if max_mflops is not None
                                          else row["mflops_fraction_of_dense"] <= budget_fraction)]
    if not affordable:
        return min(rows, key=lambda row: row["mean_mflops"])
    aware = [row for row in affordable
             if row["distinct_paths"] >= MIN_DISTINCT_PATHS and row["mflops_cv"] >= MIN_MFLOPS_CV]
    return max(aware or affordable, key=lambda row: (round(row["accuracy"], 4), -row["mean_mflops"]))
