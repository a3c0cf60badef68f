"""Temperature and threshold: how one routing setting compares with another over a set.

`flip_list` finds the instances whose prediction or path changes between two settings;
`per_class_table` lays out a summary's per-class accuracy and cost; `sweep_grid` is the
(tau, threshold) grid the trade-off curve is drawn from (evaluated by `evaluate.sweep`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from drnet_core.analysis.evaluate import RoutedRun


def flip_list(run_a: RoutedRun, run_b: RoutedRun, class_names: tuple[str, ...], indices=None) -> pd.DataFrame:
    """Instances whose prediction or selected-branch path differs between two runs of the same set.

    Columns: position (in the evaluated set), index (in the split), true, predicted A/B, MFLOPs A/B,
    branches that differ, and what changed. Prediction flips come first, then the largest path changes.
    """
    if len(run_a.labels) != len(run_b.labels) or not bool((run_a.labels == run_b.labels).all()):
        raise ValueError("the two runs must cover the same instances")
    prediction_changed = (run_a.predictions != run_b.predictions).numpy()
    branch_changes = (run_a.path_masks != run_b.path_masks).sum(dim=1).numpy()
    changed = np.flatnonzero(prediction_changed | (branch_changes > 0))
    names = np.asarray(class_names, dtype=object)
    positions = np.arange(len(run_a.labels)) if indices is None else np.asarray(indices)
    table = pd.DataFrame({
        "position": changed,
        "index": positions[changed].astype(int),
        "true": names[run_a.labels.numpy()[changed]],
        "predicted A": names[run_a.predictions.numpy()[changed]],
        "predicted B": names[run_b.predictions.numpy()[changed]],
        "MFLOPs A": run_a.mflops.numpy()[changed].astype(float),
        "MFLOPs B": run_b.mflops.numpy()[changed].astype(float),
        "branches changed": branch_changes[changed].astype(int),
        "prediction changed": prediction_changed[changed],
    })
    table["change"] = np.where(table["prediction changed"], "prediction and path", "path only")
    table.loc[table["prediction changed"] & (table["branches changed"] == 0), "change"] = "prediction only"
    return table.sort_values(["prediction changed", "branches changed"], ascending=[False, False],
                             kind="stable").reset_index(drop=True)


def per_class_table(summary: dict) -> pd.DataFrame:
    """A summary's per-class block (from `evaluate.summarize`) as a table."""
    rows = [{"class": name, "n": values["n"], "accuracy": values["accuracy"], "mean MFLOPs": values["mean_mflops"]}
            for name, values in summary["per_class"].items()]
    return pd.DataFrame(rows)


def sweep_grid(taus: int = 5, thresholds: int = 6) -> tuple[list[float], list[float]]:
    """A small grid over the ranges the sliders cover: tau log-spaced in [0.25, 4], threshold in [0, 0.5]."""
    tau_values = [round(float(t), 3) for t in np.geomspace(0.25, 4.0, taus)]
    threshold_values = [round(float(h), 3) for h in np.linspace(0.0, 0.5, thresholds)]
    return tau_values, threshold_values
