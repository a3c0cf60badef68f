"""Per-image routing table of a checkpoint at one setting (`drnet trace`), for pandas and notebooks.

One row per image of the evaluated set, from the same routed evaluation that `evaluate` summarises
(`evaluate.run_routed`), so the table's accuracy and mean MFLOPs are `evaluate --json`'s:

- `index` (position in the split), `true_class` / `true`, `predicted_class` / `predicted` (class index
  and name), `confidence` (probability of the predicted class), `correct`, `mflops` (executed
  multiply-adds, millions), `active_params`;
- `path_id`: the executed path's rank by frequency in this table (0 = the most common path), as in the
  app's cost-audit CSV; `path_pattern`: the same path as a "0x..." hex string, the same in every table
  of the same architecture (the `ran:` columns below in order, 1 bit each, packed big-endian, padded
  with zeros to whole bytes);
- one pair of columns per connection x branch, `weight:cell{k}:n{i}-n{j}:{branch}` (the recalibrated
  branch weight) and `ran:cell{k}:n{i}-n{j}:{branch}` (whether the branch was computed), cells
  numbered from 1 as in the app.

The run's metadata (checkpoint and its sha256, setting, split and dataset, torch version, the
summary's accuracy and mean MFLOPs) goes into a JSON sidecar, `<output>.json`; a Parquet file also
carries it in its own metadata, as `pandas.read_parquet(path).attrs["drnet_trace"]`.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from drnet_core import __version__
from drnet_core.analysis.audit import instance_table
from drnet_core.analysis.evaluate import RoutedRun
from drnet_core.net.model import DRNet

FORMATS = (".parquet", ".csv")
METADATA_KEY = "drnet_trace"


class TraceOutputError(ValueError):
    """The output path cannot hold a trace; the message says what can."""


def path_patterns(path_masks: torch.Tensor) -> np.ndarray:
    """(N,) "0x..." hex strings: each row of an (N, T) bool mask packed into bits, first branch highest."""
    packed = np.packbits(path_masks.numpy().astype(np.uint8), axis=1)
    return np.array(["0x" + row.tobytes().hex() for row in packed], dtype=object)


def trace_table(run: RoutedRun, model: DRNet, class_names: tuple[str, ...], indices=None) -> pd.DataFrame:
    """One row per instance of `run` (columns: see the module docstring)."""
    table = instance_table(run, class_names, indices)
    table.insert(1, "true_class", run.labels.numpy().astype(int))
    table.insert(3, "predicted_class", run.predictions.numpy().astype(int))
    table["path_pattern"] = path_patterns(run.path_masks)
    keys = model.architecture().branch_keys()
    weights = pd.DataFrame(run.branch_weights.numpy().astype(np.float32), columns=[f"weight:{k}" for k in keys])
    ran = pd.DataFrame(run.path_masks.numpy().astype(bool), columns=[f"ran:{k}" for k in keys])
    return pd.concat([table, weights, ran], axis=1)


def trace_metadata(run: RoutedRun, summary: dict, *, checkpoint: str, checkpoint_sha256: str, split: str,
                   batch_size: int) -> dict:
    """What produced a trace table: enough to rerun it and to know it is the same model."""
    return {
        "checkpoint": checkpoint,
        "checkpoint_sha256": checkpoint_sha256,
        "tau": run.tau,
        "threshold": run.threshold,
        "noise_seed": run.noise_seed,
        "split": split,
        "dataset": summary["dataset"],
        "n": summary["n"],
        "batch_size": batch_size,
        "accuracy": summary["accuracy"],
        "mean_mflops": summary["mean_mflops"],
        "dense_mflops": summary["dense_mflops"],
        "torch_version": torch.__version__,
        "drnet_explorer_version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def sidecar_path(output: str | Path) -> Path:
    return Path(f"{output}.json")


def check_output(output: str | Path) -> Path:
    """`output` as a Path, or a TraceOutputError when its suffix names no format or its folder is missing."""
    output = Path(output)
    if output.suffix.lower() not in FORMATS:
        raise TraceOutputError(f"--output must end in {' or '.join(FORMATS)} (the file's format), got {output.name!r}")
    if not output.parent.is_dir():
        raise TraceOutputError(f"--output's folder {output.parent} does not exist")
    return output


def write_trace(table: pd.DataFrame, metadata: dict, output: str | Path) -> Path:
    """Write the table as Parquet or CSV (by suffix) and the metadata beside it; returns the sidecar path."""
    output = check_output(output)
    if output.suffix.lower() == ".parquet":
        table = table.copy()
        table.attrs[METADATA_KEY] = metadata
        table.to_parquet(output, index=False)
    else:
        table.to_csv(output, index=False)
    sidecar = sidecar_path(output)
    sidecar.write_text(json.dumps(metadata, indent=1) + "\n")
    return sidecar


def read_trace(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """(table, metadata) of a file `write_trace` wrote."""
    path = Path(path)
    table = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    return table, json.loads(sidecar_path(path).read_text())
