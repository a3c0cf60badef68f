"""Batch audit of the images people bring: files, folders and zips in, one row per image out.

Inputs are gathered (`gather_paths` from disk, `gather_uploads` from uploaded files) into named bytes;
each goes through the upload intake (`images.image_from_bytes`: size, format, megapixel checks and the
Fashion-MNIST preprocessing); what is refused is reported by name with the reason and the rest are
audited. Labels come from an ImageFolder layout: an image whose folder is named after a class (compared
without case or punctuation, so `T-shirt_top` names "T-shirt/top") has that class as its true label.

`audit_inputs` routes the accepted images at one setting (`evaluate.run_routed`), builds the cost audit's
table for them (`audit.instance_table`) and adds each input's name, its routing path and the
unfamiliar-input flag and score (`ood_calibration`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from drnet_core.analysis.audit import instance_table
from drnet_core.net.cost import TimeTable
from drnet_core.analysis.evaluate import RoutedRun, run_routed
from drnet_core.analysis.explorer import path_key
from drnet_core.data.images import MAX_UPLOAD_BYTES, ImageRejected, image_from_bytes
from drnet_core.net.model import DRNet
from drnet_core.analysis.ood_calibration import Calibration
from drnet_core.data.zip_intake import ArchiveRejected, Skipped, is_zip, member_folder, read_zip

UNLABELLED = "(unlabelled)"
MAX_FOLDER_FILES = 20_000


@dataclass(frozen=True)
class NamedInput:
    name: str     # what the row is called: the path under the folder, the member's path in the archive
    source: str   # the PATH or upload it came from
    data: bytes
    folder: str   # the folder it sits in ("" at the top): its class in an ImageFolder layout


@dataclass
class Gathered:
    inputs: list[NamedInput] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def add_archive(self, data: bytes, source: str) -> None:
        try:
            members, skipped = read_zip(data, source)
        except ArchiveRejected as error:
            self.skipped.append(Skipped(source, str(error)))
            return
        self.inputs += [NamedInput(m.name, source, m.data, member_folder(m.name)) for m in members]
        self.skipped += skipped  # named by their path in the archive, as the audited members are

    def add_file(self, data: bytes, name: str, source: str, folder: str = "") -> None:
        if is_zip(data):
            self.add_archive(data, source if name == Path(source).name else f"{source}:{name}")
        else:
            self.inputs.append(NamedInput(name, source, data, folder))


def _read_limited(path: Path) -> bytes | None:
    """A file's bytes, or None when it is over the upload limit (checked before reading)."""
    return None if path.stat().st_size > MAX_UPLOAD_BYTES else path.read_bytes()


def gather_paths(paths: list[str | os.PathLike]) -> Gathered:
    """Image files, folders (walked; an image's folder names its class) and zips, from disk."""
    gathered = Gathered()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            _gather_folder(path, gathered)
        elif path.is_file():
            data = _read_limited(path)
            if data is None:
                gathered.skipped.append(Skipped(str(path), f"over the {MAX_UPLOAD_BYTES // 2**20} MB limit"))
            else:
                gathered.add_file(data, path.name, str(path))
        else:
            gathered.skipped.append(Skipped(str(path), "no such file or folder"))
    return gathered


def _gather_folder(root: Path, gathered: Gathered) -> None:
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    if len(files) > MAX_FOLDER_FILES:
        gathered.skipped.append(Skipped(str(root), f"holds {len(files):,} files; at most {MAX_FOLDER_FILES:,} "
                                                   "are read in one audit"))
        return
    for path in files:
        relative = path.relative_to(root).as_posix()
        data = _read_limited(path)
        if data is None:
            gathered.skipped.append(Skipped(relative, f"over the {MAX_UPLOAD_BYTES // 2**20} MB limit"))
            continue
        folder = path.parent.name if path.parent != root else ""
        if is_zip(data):
            gathered.add_archive(data, f"{root}/{relative}")
        else:
            gathered.inputs.append(NamedInput(relative, str(root), data, folder))


def gather_uploads(uploads) -> Gathered:
    """Uploaded files (objects with `.name` and `.getvalue()`, as Streamlit's), zips among them opened."""
    gathered = Gathered()
    for upload in uploads:
        gathered.add_file(bytes(upload.getvalue()), upload.name, upload.name)
    return gathered


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def label_of(folder: str, class_names: tuple[str, ...]) -> int:
    """The class an ImageFolder folder names (by name, or by its index), else -1."""
    keys = {_key(name): index for index, name in enumerate(class_names)}
    if _key(folder) in keys:
        return keys[_key(folder)]
    return int(folder) if folder.isdigit() and int(folder) < len(class_names) else -1


@dataclass
class PreparedSet:
    names: list[str]
    sources: list[str]
    inputs: torch.Tensor   # (N, 1, 28, 28) normalised
    pixels: torch.Tensor   # (N, 28, 28) uint8, what the model sees
    labels: torch.Tensor   # (N,) class index, -1 where unknown
    skipped: list[Skipped]


def prepare_set(gathered: Gathered, class_names: tuple[str, ...]) -> PreparedSet:
    """Every gathered input through the upload intake; refusals join the skipped list by name."""
    names, sources, inputs, pixels, labels = [], [], [], [], []
    skipped = list(gathered.skipped)
    for item in gathered.inputs:
        try:
            prepared = image_from_bytes(item.data, item.name)
        except ImageRejected as error:
            skipped.append(Skipped(item.name, str(error)))
            continue
        names.append(item.name)
        sources.append(item.source)
        inputs.append(prepared.model_input)
        pixels.append(prepared.pixels)
        labels.append(label_of(item.folder, class_names))
    empty = not inputs
    return PreparedSet(names, sources, torch.zeros(0, 1, 28, 28) if empty else torch.cat(inputs),
                       torch.zeros(0, 28, 28, dtype=torch.uint8) if empty else torch.stack(pixels),
                       torch.tensor(labels, dtype=torch.int64), skipped)


def audit_table(run: RoutedRun, prepared: PreparedSet, class_names: tuple[str, ...], *,
                ood_scores: np.ndarray | None, calibration: Calibration | None,
                time_table: TimeTable | None = None) -> pd.DataFrame:
    """The cost audit's table (`audit.instance_table`) for a prepared set, with `input`, `source`, `path`,
    `ood` and `ood_score`. Unknown labels read `UNLABELLED` and have no `correct` (NA)."""
    known = run.labels >= 0
    named = RoutedRun(**{**run.__dict__, "labels": torch.where(known, run.labels, run.predictions)})
    table = instance_table(named, class_names, time_table=time_table)
    table["true"] = np.where(known.numpy(), table["true"], UNLABELLED)
    table["correct"] = pd.array(np.where(known.numpy(), table["correct"], None), dtype="boolean")
    table.insert(1, "input", prepared.names)
    table.insert(2, "source", prepared.sources)
    table["path"] = [path_key(mask) for mask in run.path_masks.numpy()]
    if ood_scores is None or calibration is None:
        table["ood"] = pd.array([None] * len(table), dtype="boolean")
        table["ood_score"] = np.full(len(table), np.nan)
    else:
        table["ood"] = calibration.flags(ood_scores)
        table["ood_score"] = np.asarray(ood_scores, dtype=float)
    return table


def audit_inputs(model: DRNet, prepared: PreparedSet, class_names: tuple[str, ...], *, tau: float, threshold: float,
                 calibration: Calibration | None, time_table: TimeTable | None = None) -> pd.DataFrame:
    """Route a prepared set at (tau, threshold) and score it; one row per accepted input."""
    run = run_routed(model, prepared.inputs, prepared.labels, tau=tau, threshold=threshold)
    scores = calibration.scores(model, prepared.inputs) if calibration is not None else None
    return audit_table(run, prepared, class_names, ood_scores=scores, calibration=calibration, time_table=time_table)


def familiarity_cost(table: pd.DataFrame) -> pd.DataFrame:
    """Inputs, mean and max MFLOPs and mean confidence of familiar and unfamiliar inputs: what junk costs."""
    rows = []
    for name, flag in (("familiar", False), ("unfamiliar", True)):
        part = table[(table["ood"] == flag).fillna(False).to_numpy(dtype=bool)]
        if len(part):
            rows.append({"inputs": name, "n": len(part), "mean MFLOPs": float(part["mflops"].mean()),
                         "max MFLOPs": float(part["mflops"].max()), "mean confidence": float(part["confidence"].mean())})
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame, skipped: list[Skipped]) -> dict:
    """What a batch audit found, for `--json` and the page's headline."""
    labelled = table["correct"].dropna()
    cost = familiarity_cost(table)
    return {"n": len(table), "skipped": [{"name": s.name, "reason": s.reason} for s in skipped],
            "labelled": int(len(labelled)), "accuracy": float(labelled.mean()) if len(labelled) else None,
            "mean_mflops": float(table["mflops"].mean()) if len(table) else None,
            "flagged_unfamiliar": int(table["ood"].fillna(False).sum()),
            "cost_by_familiarity": cost.to_dict(orient="records")}
