"""Cached loaders of the audit's extra questions: people's own images, the unfamiliar-input warning's
calibration and the worst-case cost search. Computation is in drnet_core (batch_audit,
ood_calibration, sponge); this module decides what is cached and by what key."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import streamlit as st
import torch

from drnet_app import state
from drnet_core.analysis import batch_audit, sponge
from drnet_core.data.datasets import FASHION_CLASSES
from drnet_core.analysis.evaluate import default_setting
from drnet_core.analysis.ood_calibration import Calibration, calibration_or_none


@st.cache_resource(show_spinner="Calibrating the unfamiliar-input warning for this checkpoint…", max_entries=4)
def ood_calibration(path: str, sha256: str) -> tuple[Calibration | None, str]:
    """The checkpoint's stored calibration, one computed now from its training images, or (None, why not)."""
    model, meta = state.model_and_meta(path, sha256)
    return calibration_or_none(model, meta, sha256, path)


@dataclass(frozen=True)
class Upload:
    """An uploaded file's name and bytes: hashable content for the cache, the shape `gather_uploads` reads."""

    name: str
    data: bytes

    def getvalue(self) -> bytes:
        return self.data


def uploads_of(files) -> tuple[Upload, ...]:
    return tuple(Upload(f.name, bytes(f.getvalue())) for f in files)


def uploads_name(uploads: tuple[Upload, ...]) -> str:
    digest = hashlib.sha256(b"".join(hashlib.sha256(u.data).digest() for u in uploads)).hexdigest()[:12]
    names = ", ".join(u.name for u in uploads[:3]) + (f" and {len(uploads) - 3} more" if len(uploads) > 3 else "")
    return f"your upload ({names}; content {digest})"


@st.cache_data(show_spinner="Reading and routing your images…", max_entries=8)
def uploaded_audit(path: str, sha256: str, uploads: tuple[Upload, ...], tau: float, threshold: float):
    """(table, pixels (N, 28, 28), skipped inputs) of a batch audit of the uploaded files."""
    model, meta = state.model_and_meta(path, sha256)
    class_names = tuple(meta.get("class_names", FASHION_CLASSES))
    prepared = batch_audit.prepare_set(batch_audit.gather_uploads(uploads), class_names)
    if not prepared.names:
        return None, prepared.pixels, prepared.skipped
    calibration, _ = ood_calibration(path, sha256)
    times = state.time_table(path, sha256, state.current_settings().dataset_name)
    table = batch_audit.audit_inputs(model, prepared, class_names, tau=tau, threshold=threshold,
                                     calibration=calibration, time_table=times)
    return table, prepared.pixels, prepared.skipped


@st.cache_data(show_spinner="Searching for the costliest nearby images (about a second per image and budget)…",
               max_entries=16)
def sponge_sweep(path: str, sha256: str, limit: int, budgets: tuple[float, ...]) -> list[dict]:
    """`SpongeResult.summary()` per eps over the first `limit` evaluation images, at the checkpoint's default."""
    model, meta = state.model_and_meta(path, sha256)
    tau, threshold = default_setting(meta)
    images = state.evaluation_set()
    return [sponge.sponge_search(model, images.images[:limit], images.labels[:limit], eps, tau=tau,
                                 threshold=threshold).summary() for eps in budgets]


@st.cache_data(show_spinner="Searching for the costliest nearby image…", max_entries=32)
def sponge_one(path: str, sha256: str, image_key: str, _pixels: torch.Tensor, eps: float, tau: float,
               threshold: float) -> sponge.SpongeResult:
    """The worst-case search for one image (uint8 (28, 28)) at the given setting."""
    model, _ = state.model_and_meta(path, sha256)
    return sponge.sponge_search(model, _pixels.unsqueeze(0), torch.tensor([-1]), eps, tau=tau, threshold=threshold)


@st.cache_data(show_spinner="Scoring the evaluation set for unfamiliar inputs…", max_entries=8)
def evaluation_ood_scores(path: str, sha256: str, dataset_name: str, limit: int):
    """The unfamiliar-input score of the first `limit` evaluation images, or None without a calibration."""
    calibration, _ = ood_calibration(path, sha256)
    if calibration is None:
        return None
    model, _ = state.model_and_meta(path, sha256)
    return calibration.scores(model, state.evaluation_inputs(dataset_name)[:limit])


@st.cache_data(show_spinner=False, max_entries=256)
def image_ood_score(path: str, sha256: str, image_key: str, _model_input: torch.Tensor) -> float | None:
    """One prepared image's unfamiliar-input score, or None without a calibration."""
    calibration, _ = ood_calibration(path, sha256)
    if calibration is None:
        return None
    model, _ = state.model_and_meta(path, sha256)
    return float(calibration.scores(model, _model_input)[0])
