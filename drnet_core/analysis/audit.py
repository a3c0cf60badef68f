"""Cost audit: per-instance results of a routed evaluation as a table, ranked, filtered, exported.

Answers the auditor's questions: which inputs take the costliest paths, what each class costs on
average, and whether wrong answers cost more than right ones. Costs are executed multiply-adds in
millions ("FLOPs" as in the paper) and active parameters, both from `evaluate.run_routed`, and,
given a `cost.TimeTable` measured on the machine at hand, estimated milliseconds per input: pooling
costs time but no multiply-adds, so the two rankings differ.
"""
from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import torch

from drnet_core import __version__

from drnet_core.net.cost import TimeTable
from drnet_core.analysis.evaluate import RoutedRun

CSV_COLUMNS = ("index", "true", "predicted", "confidence", "correct", "mflops", "active_params", "path_id")
TIME_COLUMN = "est_ms"  # present when the table was built with a TimeTable
# Where every row came from, repeated on each row so that a CSV read on its own (or rows pasted into
# another sheet) still says which checkpoint, setting and data produced it.
PROVENANCE_COLUMNS = ("checkpoint_name", "checkpoint_sha256", "tau", "threshold", "noise_seed", "dataset", "filters",
                      "created_utc", "app_version", "timing_machine")
# A batch audit of people's own images adds what each row is and whether it looks unfamiliar.
INPUT_COLUMNS = ("input", "source")
UNFAMILIAR_COLUMNS = ("path", "ood", "ood_score")
COST_COLUMNS = ("mflops", TIME_COLUMN)


def instance_table(run: RoutedRun, class_names: tuple[str, ...], indices=None,
                   time_table: TimeTable | None = None) -> pd.DataFrame:
    """One row per instance. `index` is the position in the original split when `indices` is given
    (the shipped subset keeps them), else the position in the evaluated set. `path_id` 0 is the
    most frequent path of this run. With `time_table`, an `est_ms` column follows `mflops`."""
    n = len(run.labels)
    positions = np.arange(n) if indices is None else np.asarray(indices)[:n]
    _, path_ids = run.path_ids()
    names = np.asarray(class_names, dtype=object)
    predictions = run.predictions.numpy()
    columns = {
        "index": positions.astype(int),
        "true": names[run.labels.numpy()],
        "predicted": names[predictions],
        "confidence": run.probabilities.numpy()[np.arange(n), predictions].astype(float),
        "correct": run.correct.numpy().astype(bool),
        "mflops": run.mflops.numpy().astype(float),
    }
    if time_table is not None:
        columns[TIME_COLUMN] = time_table.ms_per_instance(run.path_masks).numpy()
    columns["active_params"] = run.active_params.numpy().astype(np.int64)
    columns["path_id"] = path_ids.numpy().astype(int)
    return pd.DataFrame(columns)


def costliest(table: pd.DataFrame, count: int = 20, by: str = "mflops") -> pd.DataFrame:
    """The `count` costliest rows by `by` ("mflops" or "est_ms"); ties broken by lower confidence
    (the less sure, the more suspect)."""
    if by not in COST_COLUMNS or by not in table:
        available = [column for column in COST_COLUMNS if column in table]
        raise ValueError(f"cannot rank by {by!r}: this table's cost columns are {available}")
    return table.sort_values([by, "confidence"], ascending=[False, True], kind="stable").head(count)


def filter_table(table: pd.DataFrame, *, classes=None, correctness: str = "all",
                 mflops_range: tuple[float, float] | None = None) -> pd.DataFrame:
    """classes: true-class names to keep (None/empty = all); correctness: 'all', 'correct', 'incorrect'."""
    if correctness not in ("all", "correct", "incorrect"):
        raise ValueError(f"correctness must be 'all', 'correct' or 'incorrect', got {correctness!r}")
    keep = np.ones(len(table), dtype=bool)
    if classes:
        keep &= table["true"].isin(list(classes)).to_numpy()
    if correctness != "all":
        # An unlabelled input (batch audits) is neither right nor wrong: it stays out of both.
        keep &= (table["correct"] == (correctness == "correct")).fillna(False).to_numpy(dtype=bool)
    if mflops_range is not None:
        low, high = mflops_range
        keep &= ((table["mflops"] >= low) & (table["mflops"] <= high)).to_numpy()
    return table[keep]


def cost_per_class(table: pd.DataFrame) -> pd.DataFrame:
    """Per true class: instances, accuracy, mean and max MFLOPs, mean active parameters (and mean
    est. ms, when present)."""
    grouped = table.groupby("true", sort=False)
    result = pd.DataFrame({
        "n": grouped.size(),
        "accuracy": grouped["correct"].mean(),
        "mean MFLOPs": grouped["mflops"].mean(),
        "max MFLOPs": grouped["mflops"].max(),
        "mean active params": grouped["active_params"].mean(),
    })
    if TIME_COLUMN in table:
        result["mean est. ms"] = grouped[TIME_COLUMN].mean()
    return result.sort_values("mean MFLOPs", ascending=False)


def cost_by_correctness(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and median MFLOPs (and mean est. ms, when present) of right and wrong answers: do wrong
    answers cost more?"""
    rows = []
    for outcome, correct in (("correct", True), ("incorrect", False)):
        part = table[(table["correct"] == correct).fillna(False).to_numpy(dtype=bool)]
        if not len(part):  # a filter on answers leaves one group; an empty row would read as a measurement
            continue
        row = {"outcome": outcome, "n": len(part), "mean MFLOPs": float(part["mflops"].mean()),
               "median MFLOPs": float(part["mflops"].median())}
        if TIME_COLUMN in table:
            row["mean est. ms"] = float(part[TIME_COLUMN].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def ms_per_mflop(table: pd.DataFrame) -> pd.Series:
    """Estimated milliseconds per executed MFLOP of each row (needs `est_ms`): how far time follows
    multiply-adds. Never divides by zero: every input runs the always-on part's multiply-adds."""
    return table[TIME_COLUMN] / table["mflops"]


def machine_description(device: str | torch.device = "cpu") -> str:
    """The machine behind a timing: processor (or GPU), cores and torch threads, operating system."""
    device = torch.device(device)
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = _cpu_model() or platform.processor() or platform.machine()
        where = f"{where}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return f"{device.type}: {where}; {platform.system()} {platform.release()}; torch {torch.__version__}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def describe_filters(classes=None, correctness: str = "all", mflops_range: tuple[float, float] | None = None,
                     extra: str = "") -> str:
    """The filters behind a table, in words: 'none' when it holds every row."""
    parts = []
    if classes:
        parts.append("true class in " + "|".join(classes))
    if correctness != "all":
        parts.append(f"answers {correctness}")
    if mflops_range is not None:
        parts.append(f"MFLOPs {mflops_range[0]:.4f}-{mflops_range[1]:.4f}")
    if extra:
        parts.append(extra)
    return "; ".join(parts) or "none"


@dataclass(frozen=True)
class Setting:
    """The routing setting of rows that did not come from one `RoutedRun` (a batch audit's command line)."""

    tau: float
    threshold: float
    noise_seed: int | None = None


def provenance(checkpoint_sha256: str, run: RoutedRun | Setting, dataset: str, *, checkpoint_name: str = "",
               filters: str = "none", timing_machine: str = "") -> dict:
    """The `PROVENANCE_COLUMNS` of a run: checkpoint (name and sha256), setting, noise seed (empty without
    noise), evaluation set, filters applied, when (UTC) and by which version, and the machine behind
    `est_ms` (empty when the table has no timings)."""
    return {"checkpoint_name": checkpoint_name, "checkpoint_sha256": checkpoint_sha256, "tau": run.tau,
            "threshold": run.threshold, "noise_seed": "" if run.noise_seed is None else run.noise_seed,
            "dataset": dataset, "filters": filters,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "app_version": __version__, "timing_machine": timing_machine}


def csv_file_name(checkpoint_name: str, tau: float, threshold: float, what: str = "audit") -> str:
    """A download's name saying what it holds: drnet_<what>_<checkpoint>_tau<tau>_threshold<threshold>.csv."""
    slug = re.sub(r"[^a-z0-9]+", "-", re.sub(r"\.pt$", "", checkpoint_name.lower())).strip("-") or "checkpoint"
    return f"drnet_{what}_{slug}_tau{tau:g}_threshold{threshold:g}.csv"


def to_csv(table: pd.DataFrame, origin: dict | None = None) -> bytes:
    """The per-instance CSV an auditor downloads: `CSV_COLUMNS`, plus `est_ms` after `mflops` when present,
    a batch audit's `INPUT_COLUMNS` first and `UNFAMILIAR_COLUMNS` after them when present, then, given `origin` (see `provenance`), the `PROVENANCE_COLUMNS` on every row."""
    columns = list(CSV_COLUMNS)
    if TIME_COLUMN in table:
        columns.insert(columns.index("mflops") + 1, TIME_COLUMN)
    columns = ([c for c in INPUT_COLUMNS if c in table] + columns
               + [c for c in UNFAMILIAR_COLUMNS if c in table])
    out = table.loc[:, columns]
    if origin is not None:
        missing = [column for column in PROVENANCE_COLUMNS if column not in origin]
        if missing:
            raise ValueError(f"provenance lacks {missing}")
        out = out.assign(**{column: origin[column] for column in PROVENANCE_COLUMNS})
    return out.to_csv(index=False, float_format="%.6g").encode("utf-8")
