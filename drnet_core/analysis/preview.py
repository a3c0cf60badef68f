"""Numbers quickly, then exact: a fixed, class-stratified preview subset of an evaluation set, and the
threshold sweep over any set of routed-stem features, sharing work between thresholds.

A tau step changes every router weight, so the whole set must be routed again; the preview subset is
routed first (a tenth of the images answers in a tenth of the time) and its figures are labelled as a
preview until the full set's replace them. The same sweep that draws the trade-off curve runs its
thresholds from the nearest one already routed (`evaluate.rerun_at_threshold`), so only the images whose
path changes between two thresholds are routed again.
"""
from __future__ import annotations

import torch

from drnet_core.analysis.evaluate import RoutedRun, rerun_at_threshold, run_routed
from drnet_core.net.model import DRNet

PREVIEW_SIZE = 1000  # at most; a tenth of a smaller set


def preview_size(set_size: int) -> int:
    """How many images preview a set of `set_size`: a tenth, at most PREVIEW_SIZE; 0 when too small to bother."""
    return min(PREVIEW_SIZE, set_size // 10)


def stratified_positions(labels: torch.Tensor, size: int = PREVIEW_SIZE, seed: int = 0) -> torch.Tensor:
    """Sorted positions of a fixed subset of `size` images (all of them when the set is smaller) that holds
    every class in its share of the set, drawn with a seeded generator: the same subset on every call."""
    labels = torch.as_tensor(labels)
    if size >= len(labels):
        return torch.arange(len(labels))
    if size < 1:
        raise ValueError(f"a preview needs at least one image, got {size}")
    generator = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(labels, return_counts=True)
    quotas = torch.floor(counts.double() * size / len(labels)).long()
    # Largest remainders first, so that the quotas add up to `size` exactly.
    remainders = counts.double() * size / len(labels) - quotas
    for index in torch.argsort(remainders, descending=True, stable=True)[: size - int(quotas.sum())]:
        quotas[index] += 1
    chosen = []
    for cls, quota in zip(classes.tolist(), quotas.tolist()):
        members = (labels == cls).nonzero().squeeze(1)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:quota]])
    return torch.sort(torch.cat(chosen)).values


def threshold_sweep_runs(model: DRNet, features: torch.Tensor, labels: torch.Tensor, tau: float,
                         thresholds, *, noise_seed: int | None = None, from_prefix: bool = True,
                         start: RoutedRun | None = None) -> list[RoutedRun]:
    """One run per threshold (in the order given) at one tau, each routed from the nearest run so far.

    `start`: a run of the same features, tau and noise at some threshold, which saves routing the first
    threshold from scratch. `features`: routed-stem features (`evaluate.prefix_features`) when
    `from_prefix`, else model inputs.
    """
    done: list[RoutedRun] = [start] if start is not None else []
    runs = []
    for threshold in thresholds:
        if done:
            nearest = min(done, key=lambda run: abs(run.threshold - threshold))
            run = (nearest if nearest.threshold == threshold else
                   rerun_at_threshold(model, features, nearest, threshold, from_prefix=from_prefix))
        else:
            run = run_routed(model, features, labels, tau=tau, threshold=threshold, noise_seed=noise_seed,
                             from_prefix=from_prefix)
        done.append(run)
        runs.append(run)
    return runs
